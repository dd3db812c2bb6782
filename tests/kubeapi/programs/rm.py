"""`rm` in the test pod model: only `rm -f [--] FILE...` (kubernetes.exec deleting the report
file it had a command write); a missing file is no error with -f, as coreutils says."""

import contextlib
import os
import sys


def main(argv: list[str]) -> int:
    if argv[:1] != ["-f"]:
        print("rm: this test pod model only knows rm -f", file=sys.stderr)
        return 1
    paths = argv[2:] if argv[1:2] == ["--"] else argv[1:]
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
