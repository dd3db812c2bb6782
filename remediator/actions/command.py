"""Fixed commands: the core `kubernetes.exec` and `docker.exec` share.

A command is an argv list written literally in the playbook (`Param(literal=True)`: lint and
serve refuse a template there), so nothing an alert carries can choose a program, an argument
or a shell. Nothing is run through a shell unless the playbook itself writes `sh -c ...`.

Every command counts as a mutation (guards, approval, dry-run, no repeat after a crash)
unless the step says `read_only: true`, and that is accepted only for the probes in `PROBES`:
commands known to change nothing, matched word by word with fixed options. The list is
documented in docs/runbooks.md; extending it is a code review, not a playbook edit.

Output is bounded (`max_output` bytes per stream, the rest counted and dropped) and the result
has one shape for every backend: {exit_code, stdout, stderr, truncated, json}, with secrets
masked (secret_text.py: `NAME=value` lines as in `env`, inline credentials, token shapes)
before anything records it; `parse: json` reads what was printed, then masks the same way.
A command that writes its report to a file (`report_option`, kubernetes.exec) gets a fresh
path under /tmp, and the file, read back, is in `report` (and `json`) instead of stdout.
"""

from __future__ import annotations

import re
import shlex
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .base import Action, ActionError, Param, UnsafeJSON, parse_json
from .secret_text import json_value, output

MAX_WORDS = 64
MAX_WORD = 4096
MAX_OUTPUT = 1 << 20

COMMAND_PARAMS: dict[str, Param] = {
    "command": Param("list", required=True, literal=True,
                     description="argv, written literally (no templates, no shell)"),
    "read_only": Param("boolean", default=False,
                       description="a documented probe that changes nothing (else: a mutation)"),
    "timeout": Param("duration", default=60.0, minimum=1,
                     description="the command's deadline; it is stopped after it"),
    # At most 1 MiB: each stream is held in memory, masked (up to ~2 us a byte) and recorded
    # in the result, the journal and the note; a log of more is evidence.bundle's job.
    "max_output": Param("integer", default=65536, minimum=1, maximum=MAX_OUTPUT,
                        description="bytes kept of stdout and of stderr, each"),
    "parse": Param("string", choices=("json",), description="json: parse stdout into `json`"),
    "ok_exit_codes": Param("list", default=[0],
                           description="exit codes that count as success (default [0])"),
}

# A command that writes its report to a file is told where with this option and a path of the
# action's choosing: one per call, under /tmp, no label in it, read back then deleted.
REPORT_PARAM = Param(
    "string", literal=True,
    description="the option the command takes a report file with (e.g. --output): a fresh "
                "path under /tmp is added with it, the file is read back from the same container "
                "once the command ended (cat), kept in `report` (parsed instead of stdout with "
                "parse: json) and deleted")


def report_path() -> str:
    """A path no other call uses (a run's two steps, two runs at once, an earlier crash)."""
    return f"/tmp/remediator-report-{uuid.uuid4().hex}.json"


# --- the probes `read_only: true` accepts -------------------------------------------------------

_HOST = r"[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?"
_PORT = r"\d{1,5}"
_WORD = r"[A-Za-z0-9_][-A-Za-z0-9_.]*"
_RATE = r"0?\.\d*[1-9]\d*|1(\.0*)?"  # 0 < rate <= 1
_PATH = r"/[-A-Za-z0-9_./]*"
_REGION = r"[a-z]{2}(-[a-z]+)+-\d"
_BUCKET = r"[a-z0-9][-a-z0-9.]{1,61}[a-z0-9]"  # S3's bucket naming rules


@dataclass(frozen=True)
class Probe:
    """A read-only command shape: leading words, options (value regex, None for a flag),
    required options, then operands (regexes, the last `optional` of them may be left out)."""

    usage: str
    program: tuple[str, ...]
    options: Mapping[str, str | None] = field(default_factory=dict)
    required: frozenset[str] = frozenset()
    operands: tuple[str, ...] = ()
    optional: int = 0
    # a program that writes a report file somewhere of its own unless given this option: a
    # probe only with the step's report_option set to it (the file then goes under /tmp)
    report_option: str = ""

    def matches(self, argv: Sequence[str]) -> bool:
        n = len(self.program)
        if len(argv) < n or not all(re.fullmatch(p, a) for p, a in zip(self.program, argv,
                                                                         strict=False)):
            return False
        seen: set[str] = set()
        operands: list[str] = []
        words = list(argv[n:])
        while words:
            word = words.pop(0)
            name, eq, inline = word.partition("=") if word.startswith("--") else (word, "", "")
            if name in self.options and not operands:
                pattern = self.options[name]
                if pattern is None:
                    if eq:
                        return False
                else:
                    if not eq:
                        if not words:
                            return False
                        inline = words.pop(0)
                    if not re.fullmatch(pattern, inline):
                        return False
                seen.add(name)
            elif word.startswith("-"):
                return False  # an option not on the list (or after an operand)
            else:
                operands.append(word)
        if not self.required <= seen:
            return False
        if not len(self.operands) - self.optional <= len(operands) <= len(self.operands):
            return False
        return all(re.fullmatch(p, o) for p, o in zip(self.operands, operands, strict=False))


_REDIS = {"-h": _HOST, "-p": _PORT, "-n": r"\d{1,2}"}
_PG = {"-h": _HOST, "-p": _PORT, "-d": _WORD, "-U": _WORD}

PROBES: tuple[Probe, ...] = (
    Probe("redis-cli [-h HOST] [-p PORT] [-n DB] PING", ("redis-cli",), _REDIS,
          operands=(r"(?i)ping",)),
    Probe("redis-cli [-h HOST] [-p PORT] [-n DB] INFO [SECTION]", ("redis-cli",), _REDIS,
          operands=(r"(?i)info", r"[A-Za-z]+"), optional=1),
    Probe("pg_isready [-h HOST] [-p PORT] [-d DB] [-U USER] [-t SECONDS] [-q]", ("pg_isready",),
          {**_PG, "-t": r"\d{1,4}", "-q": None}),
    Probe("psql [-h HOST] [-p PORT] [-d DB] [-U USER] [-X] [-A] [-t] [-q] -c 'SELECT 1'",
          ("psql",), {**_PG, "-X": None, "-A": None, "-t": None, "-q": None,
                      "-c": r"(?i)\s*select\s+1\s*;?\s*"}, required=frozenset({"-c"})),
    Probe("aws sts get-caller-identity [--output json|text] [--region REGION]",
          ("aws", "sts", "get-caller-identity"),
          {"--output": r"json|text", "--region": _REGION, "--no-cli-pager": None}),
    Probe("aws s3api head-bucket --bucket BUCKET [--output json|text] [--region REGION]",
          ("aws", "s3api", "head-bucket"),
          {"--bucket": _BUCKET, "--output": r"json|text", "--region": _REGION,
           "--no-cli-pager": None}, required=frozenset({"--bucket"})),
    # DeltaCrown's validator reads S3 and the local copy, prints progress text and writes its
    # JSON report to --output (default artifacts/backfill_report.json, the nightly report a
    # human reads): a probe only when remediator names a file of its own (report_option).
    Probe("python|python3 scripts/s3_backfill_validator.py --sample-rate RATE "
          "(report_option: --output)",
          (r"python3?", r"scripts/s3_backfill_validator\.py"), {"--sample-rate": _RATE},
          required=frozenset({"--sample-rate"}), report_option="--output"),
    Probe("df [-h] [-P] [-k] PATH", ("df",), {"-h": None, "-P": None, "-k": None},
          operands=(_PATH,)),
    # A validator's JSON report under the working directory's artifacts/ (DeltaCrown's nightly
    # artifacts/backfill_report.json, which its runbook reads with jq): one such file only.
    Probe("cat artifacts/NAME.json", ("cat",),
          operands=(r"artifacts/[A-Za-z0-9_][-A-Za-z0-9_.]*\.json",)),
)


def probe_for(argv: Sequence[str]) -> Probe | None:
    return next((p for p in PROBES if p.matches(argv)), None)


# --- the shared parameter rules, description and result ----------------------------------------


def check_command(params: dict[str, Any]) -> list[str]:
    argv = params.get("command")
    if not isinstance(argv, list) or not argv:
        return ["command must be a non-empty list of words (argv)"]
    problems = []
    if len(argv) > MAX_WORDS:
        problems.append(f"command has {len(argv)} words, more than {MAX_WORDS}")
    for i, word in enumerate(argv):
        if not isinstance(word, str):
            problems.append(f"command[{i}] must be a string, got {type(word).__name__}")
        elif "\x00" in word or len(word) > MAX_WORD:
            problems.append(f"command[{i}] contains NUL or is longer than {MAX_WORD} characters")
    option = params.get("report_option")
    if option is not None and not re.fullmatch(r"--?[A-Za-z][-A-Za-z0-9]*", str(option)):
        problems.append(f"report_option must be an option name such as --output, not {option!r}")
    probe = probe_for(argv) if not problems and params.get("read_only") else None
    if not problems and params.get("read_only") and probe is None:
        problems.append(f"read_only: true is accepted only for the documented read-only probes "
                        f"(docs/runbooks.md#read-only-probes), and {shlex.join(argv)!r} is not "
                        "one: without read_only it runs as a mutation")
    elif probe is not None and probe.report_option != (params.get("report_option") or ""):
        problems.append(
            f"read_only: true is accepted for {shlex.join(argv)!r} only with report_option: "
            f"{probe.report_option} (without it the program writes its report to a file of its "
            "own, e.g. one a human reads)" if probe.report_option else
            f"{shlex.join(argv)!r} writes no report file: report_option does not apply")
    codes = params.get("ok_exit_codes") or [0]
    if not all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in codes):
        problems.append("ok_exit_codes must be integers 0..255")
    return problems


class CommandAction(Action):
    """What every fixed-command action shares; a backend adds where the command runs."""

    def mutates(self, params: dict[str, Any]) -> bool:
        return not params.get("read_only")

    def check(self, params: dict[str, Any]) -> list[str]:
        return check_command(params)

    def describe_command(self, params: dict[str, Any], where: str) -> str:
        kind = "read-only probe" if params.get("read_only") else "command"
        report = (f", its report written to a file of its own under /tmp "
                  f"({params['report_option']} PATH), then read back and deleted"
                  if params.get("report_option") else "")
        return (f"would run the {kind} {shlex.join(params['command'])!r} in {where} "
                f"(timeout {params['timeout']:g}s){report}")


class Capture:
    """One stream's output up to `limit` bytes; what comes after is counted, not kept."""

    def __init__(self, limit: int):
        self.limit = limit
        self.data = bytearray()
        self.dropped = 0

    def add(self, chunk: bytes) -> None:
        room = max(self.limit - len(self.data), 0)
        self.data += chunk[:room]
        self.dropped += max(len(chunk) - room, 0)

    @property
    def truncated(self) -> bool:
        return self.dropped > 0

    def raw(self) -> str:
        """What the command printed: parsed (`parse: json`), never recorded."""
        return self.data.decode("utf-8", "replace")

    def text(self) -> str:
        """The output fit to record in a result, an error, a note or a log line: secrets
        masked by the one filter docker.inspect's environment goes through too."""
        return output(self.raw())


def command_result(params: dict[str, Any], exit_code: int | None, out: Capture, err: Capture,
                   *, timed_out: bool = False, report: Capture | None = None) -> dict[str, Any]:
    """The uniform result; an ActionError (carrying it) on a timeout, an exit code not in
    ok_exit_codes, or output that `parse: json` cannot parse (the report file's when the
    command wrote one, else stdout)."""
    shown = shlex.join(params["command"])
    result: dict[str, Any] = {"exit_code": exit_code, "stdout": out.text(), "stderr": err.text(),
                              "truncated": out.truncated or err.truncated, "json": None}
    source, parsed = ("stdout", out) if report is None else ("the report file", report)
    if report is not None:
        result["report"] = report.text()
        result["truncated"] = result["truncated"] or report.truncated
    if timed_out:
        raise ActionError(f"{shown!r} did not finish within {params['timeout']:g}s "
                          "and was stopped", {**result, "timed_out": True})
    parse_error = ""
    if params.get("parse") == "json":
        if parsed.truncated:
            parse_error = f"{source} is longer than max_output ({parsed.limit} bytes)"
        else:
            try:
                result["json"] = json_value(parse_json(parsed.raw()))
            except UnsafeJSON as exc:
                parse_error = f"{source} refused: {exc}"
            except ValueError as exc:
                parse_error = f"{source} is not JSON ({exc})"
    if exit_code not in (params.get("ok_exit_codes") or [0]):
        last = (result["stderr"].strip().splitlines() or [""])[-1][:300]
        raise ActionError(f"{shown!r} exited with code {exit_code}" + (f": {last}" if last else ""),
                          result)
    if parse_error:
        raise ActionError(f"{shown!r}: {parse_error}", result)
    return result
