"""Log lines kept as evidence, bounded and filtered with RE2: one rule for every backend's
`logs` action. A line is kept with its secrets masked (secret_text.py, the filter exec output
and docker.inspect's environment go through): an application that logs its `DB_PASS=…`, a
connection URL or a bearer token would otherwise put it in the step result, the note, the
journal and the API. `keep` costs up to ~2 us a byte kept: run it in a worker thread."""

from __future__ import annotations

from collections import deque
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
    """(kept lines, lines matched, truncated) from (prefix, text) pairs: of the lines that
    match `grep` (all when None) the NEWEST are kept, as `<prefix> <line>`, up to `max_lines`
    lines and `max_bytes` bytes; `matched` counts them all. In an incident the recent lines are
    the evidence: an application that logs every upload pushes the ExpiredToken of the last
    minutes past any first N. Each text (a container's, a pod's) gives its last line in
    turn, so every one's last words are there; each keeps its order. `grep` reads the line
    as printed (a grep for `password authentication failed` finds its line); what is kept is
    masked, and what `extract` reads of it then."""
    pattern = compile_regex(grep) if grep else None  # RE2: linear time over hostile lines
    prefixes: list[str] = []
    tails: list[list[str]] = []
    matched = 0
    for prefix, text in texts:
        last: deque[str] = deque(maxlen=max_lines)  # an older line cannot be kept anyway
        for line in text.splitlines():
            if pattern is None or pattern.search(line):
                matched += 1
                last.append(line)
        prefixes.append(prefix)
        tails.append(list(last))
    # bounded as printed first: only what can be kept is masked (the filter's work), then
    # again as masked (`<redacted>` is longer than a short password)
    picked = _newest(prefixes, tails, max_lines, max_bytes)
    # a text at a time: a key's BEGIN ends at its text's end, an END starts at its start
    masked = [secret_text.lines(lines) for lines in picked]
    kept = _newest(prefixes, masked, max_lines, max_bytes)
    lines = [f"{prefix} {line}" for prefix, text in zip(prefixes, kept, strict=True)
             for line in text]
    return lines, matched, len(lines) < matched


def _newest(prefixes: list[str], texts: list[list[str]], max_lines: int,
            max_bytes: int) -> list[list[str]]:
    """Each text's newest lines that fit, a line from each text in turn from its end; a text
    whose next line does not fit gives no older one (no gap in what is shown)."""
    chosen: list[list[str]] = [[] for _ in texts]
    left = [len(text) for text in texts]
    turn = [i for i, n in enumerate(left) if n]
    count = size = 0
    while turn and count < max_lines:
        for i in list(turn):
            if count >= max_lines:
                break
            left[i] -= 1
            line = texts[i][left[i]]
            cost = len(prefixes[i].encode()) + 1 + len(line.encode())
            if size + cost > max_bytes:
                turn.remove(i)
                continue
            chosen[i].append(line)
            size += cost
            count += 1
            if not left[i]:
                turn.remove(i)
    return [text[::-1] for text in chosen]
