"""Log lines kept as evidence, bounded and filtered with RE2: one rule for every backend's
`logs` action. A line is kept with its secrets masked (secret_text.py, the filter exec output
and docker.inspect's environment go through): an application that logs its `DB_PASS=…`, a
connection URL or a bearer token would otherwise put it in the step result, the note, the
journal and the API. `keep` costs up to ~2 us a byte kept: run it in a worker thread."""

from __future__ import annotations

from collections.abc import Iterable

from ..untrusted_regex import RegexError, compile_regex
from . import secret_text


def grep_problems(pattern: str | None) -> list[str]:
    if not pattern:
        return []
    try:
        compile_regex(pattern)
    except RegexError as exc:
        return [f"grep: {exc}"]
    return []


def extract_problems(pattern: str | None) -> list[str]:
    if not pattern:
        return []
    try:
        groups = compile_regex(pattern).groups
    except RegexError as exc:
        return [f"extract: {exc}"]
    return [] if groups == 1 else [f"extract: needs exactly one capture group, has {groups}"]


def extract(lines: Iterable[str], pattern: str, limit: int = 20) -> list[str]:
    """The distinct values of `pattern`'s capture group in `lines`, first seen first (e.g. the
    object keys failing lines name); at most `limit`. Values come from logs: untrusted, so an
    action that uses one validates it like a label (an S3 key, a pod name)."""
    regex, found = compile_regex(pattern), {}
    for line in lines:
        match = regex.search(line)
        if match and match.group(1):
            found.setdefault(match.group(1), None)
            if len(found) >= limit:
                break
    return list(found)


def keep(texts: Iterable[tuple[str, str]], grep: str | None, max_lines: int,
         max_bytes: int) -> tuple[list[str], int, bool]:
    """(kept lines, lines matched, truncated) from (prefix, text) pairs: each line that
    matches `grep` (all when None) is kept as `<prefix> <line>` until `max_lines` lines or
    `max_bytes` bytes are kept; the rest is only counted. `grep` reads the line as printed (a
    grep for `password authentication failed` finds its line); what is kept is masked, and
    what `extract` reads of it then."""
    pattern = compile_regex(grep) if grep else None  # RE2: linear time over hostile lines
    chosen: list[tuple[str, list[str]]] = []
    matched = size = count = 0
    truncated = False
    for prefix, text in texts:
        picked: list[str] = []
        for line in text.splitlines():
            if pattern and not pattern.search(line):
                continue
            matched += 1
            # bounded as printed first: only what can be kept is masked (the filter's work)
            cost = len(prefix.encode()) + 1 + len(line.encode())
            if count >= max_lines or size + cost > max_bytes:
                truncated = True
                continue
            picked.append(line)
            size += cost
            count += 1
        chosen.append((prefix, picked))
    lines: list[str] = []
    size = 0
    for prefix, picked in chosen:  # a pair at a time: a key's BEGIN ends at its text's end
        for line in secret_text.lines(picked):
            shown = f"{prefix} {line}"
            cost = len(shown.encode())
            if size + cost > max_bytes:  # `<redacted>` is longer than a short password
                truncated = True
                continue
            lines.append(shown)
            size += cost
    return lines, matched, truncated
