"""Log lines kept as evidence, bounded and filtered with RE2: one rule for every backend's
`logs` action."""

from __future__ import annotations

from collections.abc import Iterable

from ..untrusted_regex import RegexError, compile_regex


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
    `max_bytes` bytes are kept; the rest is only counted."""
    pattern = compile_regex(grep) if grep else None  # RE2: linear time over hostile lines
    lines: list[str] = []
    matched = size = 0
    truncated = False
    for prefix, text in texts:
        for line in text.splitlines():
            if pattern and not pattern.search(line):
                continue
            matched += 1
            shown = f"{prefix} {line}"
            cost = len(shown.encode())
            if len(lines) >= max_lines or size + cost > max_bytes:
                truncated = True
                continue
            lines.append(shown)
            size += cost
    return lines, matched, truncated
