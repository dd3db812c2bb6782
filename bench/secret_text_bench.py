"""Secret filter benchmark: what masking 64 KiB of adversarial output costs.

secret_text.output() runs in an action's worker thread over everything an exec, a log or an
HTTP body printed; its cost must stay linear in the text whatever the text. Each input is
64 KiB built to make one part of the filter work hardest (a match per few bytes, a line per
few bytes, one line with thousands of matches, a token's shape among short lines). Prints the
best of `--rounds` runs, in ms. Usage: python bench/secret_text_bench.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from remediator.actions.secret_text import lines, output  # noqa: E402

SIZE = 64 * 1024


def _fill(unit: str) -> str:
    return (unit * (SIZE // len(unit) + 1))[:SIZE]


INPUTS = {
    "password=x, one line": _fill("password=x "),
    "password=x, a line each": _fill("password=x\n"),
    "DB_PASS=x, a line each": _fill("DB_PASS=x\n"),
    "AUTH_MODE=oidc, a line each": _fill("AUTH_MODE=oidc\n"),
    "PASSWORD_MIN_LENGTH=12, one line": _fill("PASSWORD_MIN_LENGTH=12 "),
    "PASS: TestFoo, a line each": _fill("PASS: TestFoo\n"),
    "--- PASS: T, one line": _fill("--- PASS: T "),
    "PASS: x after 60 spaces, a line each": _fill(" " * 60 + "PASS: x\n"),
    "token_ttl: 1, one line": _fill("token_ttl: 1 "),
    "40-hex sha, a line each": _fill("a94a8fe5ccb19ba61c4c0873d391e987982fbbd3\n"),
    "base64 key, a line each": _fill("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n"),
    "an alert's name, a line each": _fill("Neural5xxRatioHighCritical\n"),
    "random 24-char keys, a line each": _fill("lF3kQ9zXb2VnR7pTw0YhJ8sM\n"),
    "a token, then short lines": "ghp_" + "a1B2" * 9 + "\n" + _fill("x\n"),
    "32 000 words, one line": _fill("a "),
    "one 64 KiB word": "a" * SIZE,
    "a-a-a://, one line": _fill("a-") + "://u:p@h",
    "NUL-separated A=1": _fill("A=1\x00"),
    '"token": " unclosed': _fill('"token": "'),
    # the names an inline match is judged by (a setting's, a verdict's, a file's): long ones
    "env pairs named 200+ chars": _fill("- name: AUTH_MODE" + "X" * 200 + "\n  value: v\n"),
    "redis-cli <240 chars> -a x": _fill("redis-cli " + "a" * 240 + " -a x\n"),
    "XPASS<250>=v, a line each": _fill("XPASS" + "A" * 250 + "=v\n"),
    "test_auth.py::t test_auth.py:1:": _fill("test_auth.py::t test_auth.py:1: "),
}


def _best(call, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - started)
    return best * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    rounds = parser.parse_args().rounds
    for name, text in INPUTS.items():
        split = text.split("\n")
        print(f"{name:40} output {_best(lambda t=text: output(t), rounds):7.1f} ms"
              f"   lines {_best(lambda t=split: lines(t), rounds):7.1f} ms")


if __name__ == "__main__":
    main()
