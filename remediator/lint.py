"""`remediator lint`: the serve-time validator, run offline, with CI-friendly output."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .playbooks.source import Problem
from .playbooks.validate import validate_paths


def add_lint_parser(sub: Any) -> None:
    p = sub.add_parser("lint", help="validate playbooks (the same validator serve uses)")
    p.add_argument("paths", nargs="*", default=["rules"], metavar="PATH")
    p.add_argument("--format", choices=("text", "json", "github"), default="text")
    p.add_argument("--strict", action="store_true", help="warnings fail too")
    p.set_defaults(func=cmd_lint)


def cmd_lint(args: argparse.Namespace) -> int:
    result = validate_paths(args.paths)
    print_problems(result.problems, args.format)
    failing = {"error", "warning"} if args.strict else {"error"}
    return 1 if any(p.severity in failing for p in result.problems) else 0


def print_problems(problems: list[Problem], fmt: str) -> None:
    if fmt == "json":
        print(json.dumps([p.to_dict() for p in problems], indent=2))
        return
    for p in problems:
        if fmt == "github":
            level = {"error": "error", "warning": "warning"}.get(p.severity, "notice")
            print(f"::{level} file={p.file},line={p.line},col={p.col}::{p.message}")
        else:
            print(p)
    if fmt == "text":
        errors = sum(p.severity == "error" for p in problems)
        print(f"{errors} error(s), {len(problems) - errors} other problem(s)", file=sys.stderr)
