"""`cat` in the test pod model: coreutils' `cat [--] FILE...`, as kubernetes.exec reads back a
report file. Paths are opened as given (a test's /tmp is the host's); a missing file prints
`cat: FILE: No such file or directory` on stderr and exits 1, as coreutils does."""

import sys


def main(argv: list[str]) -> int:
    code = 0
    for path in argv[1:] if argv[:1] == ["--"] else argv:
        try:
            with open(path, "rb") as f:
                sys.stdout.buffer.write(f.read())
        except FileNotFoundError:
            print(f"cat: {path}: No such file or directory", file=sys.stderr)
            code = 1
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
