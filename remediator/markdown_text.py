"""Untrusted values as Markdown text: what an alert's sender, a scraped target or a backend
chose (labels, annotations' interpolated values, a step's result or error) never becomes
markup in an escalation note. `[click me](https://evil.example)` stays text, not a link;
`![x](https://tracker/img)` no image a reader's client fetches; `# HEADING` no heading.

The note is CommonMark: a backslash before ASCII punctuation shows the character itself, so
escaped text reads the same in every renderer (the console's markdown-it, a ticket system,
GitHub); receivers that show the raw Markdown (Slack's mrkdwn, a title) get `unescape`d
text. A value shown as code goes in a code span that it cannot close (`code`).
"""

from __future__ import annotations

import functools
import heapq
import itertools
import re
from collections.abc import Iterable
from typing import Any

# What opens or closes inline markup anywhere in a line: links and images `[ ]`, autolinks
# and HTML `< >`, code spans, `*` emphasis, table cells, the escape itself. `_` only where
# it can open or close emphasis (not inside a word: `pg_up` stays as it is), `&` only where
# it starts an entity (`&lt;` would show `<`; `a=1&b=2` stays), `~` only doubled
# (strikethrough, a fence). Line breaks become spaces: a value never starts a block. What
# needs no escape gets none: a backslash shows as itself in a code span an operator copies.
_SPECIAL = "\\`*[]<>|"
_TABLE = {ord(c): "\\" + c for c in _SPECIAL} | {ord("\n"): " ", ord("\r"): " "}
_ENTITY = re.compile(r"&(?=#[0-9]{1,7};|#[xX][0-9a-fA-F]{1,6};|[A-Za-z][A-Za-z0-9]{0,31};)")
_TILDES = re.compile(r"~(?=~)|(?<=~)~")
# At a value's start (the start of a list item in a note's next steps), what opens a block:
# a heading (`#` to `######` then a space or the end), a list item (`-`, `+`, `1.`, `1)`
# likewise), a setext underline or a thematic break (a value of `=` or `-` alone). Not
# `#tag`, `-flag`, `10.20.30.40:9100` or `1.25.3`: CommonMark makes no block of those.
_BLOCK = re.compile(r"(#{1,6}|[-+]|[0-9]{1,9}[.)])(?=[ \t]|$)|[-=][-= \t]*$")
_ESCAPED = re.compile(r"\\([!-/:-@\[-`{-~])")  # a CommonMark backslash escape


def text(value: Any) -> str:
    """`value` as Markdown text that renders as exactly its characters (line breaks as spaces)."""
    value = str(value)
    # A storm's notes repeat the same labels and steps' words: those are kept (a long text,
    # a step's error naming a value, is not: kept, it would be held whole).
    return _kept(value) if len(value) <= 512 else _text(value)


def _text(value: str) -> str:
    escaped = value.translate(_TABLE)
    if "_" in escaped:
        escaped = _underscores(escaped)
    if "&" in escaped:
        escaped = _ENTITY.sub(r"\\&", escaped)
    if "~~" in escaped:
        escaped = _TILDES.sub(r"\\~", escaped)
    rest = escaped.lstrip(" \t")  # a block's marker may follow a few spaces
    head = escaped[:len(escaped) - len(rest)]
    block = _BLOCK.match(rest)
    if block is None:
        return escaped
    # before the marker's last character: `1\.`, `\#`, `\-`
    at = block.end(1) - 1 if block.group(1) else 0
    return f"{head}{rest[:at]}\\{rest[at:]}"


_kept = functools.lru_cache(maxsize=4096)(_text)


def _underscores(value: str) -> str:
    """`_` escaped unless it is inside a word (a letter or digit on either side)."""
    parts = value.split("_")
    out = [parts[0]]
    for before, after in itertools.pairwise(parts):
        inside = before[-1:].isalnum() and after[:1].isalnum()
        out += ["_" if inside else "\\_", after]
    return "".join(out)


def forms(secret: str) -> set[str]:
    """How `secret` may appear in a note besides itself (escaped as a whole value or within
    text, or on one line in a code span): redaction knows them all."""
    one_line = secret.replace("\r", " ").replace("\n", " ")
    return {text(secret), secret.translate(_TABLE), one_line} - {secret}


def code(value: Any) -> str:
    """`value` in a code span it cannot close: a run of backticks longer than any in it
    (padded when it starts or ends with one), line breaks as spaces."""
    value = str(value).replace("\r", " ").replace("\n", " ")
    fence = "`"
    while fence in value:  # most values hold no backtick: one search
        fence += "`"
    # padded where CommonMark would strip what it starts or ends with: a backtick would
    # join the fence, and a space on each side is taken off
    pad = " " if "`" in (value[:1], value[-1:]) or (
        value[:1] == value[-1:] == " " and value.strip()) else ""
    return f"{fence}{pad}{value}{pad}{fence}"


def within(prose: str, values: Iterable[str]) -> str:
    """Author-written Markdown (a rule's annotation) with each of `values` (the alert's label
    values, which its template may have interpolated) escaped where it occurs: the author's
    links and emphasis stay, a label's never become markup. The longest value first where
    several start together; a value `text` leaves as it is needs nothing, nor does a single
    character (no markup is one character, and it would unmake the author's)."""
    escaped = {v: e for v in values if len(v) > 1 and (e := text(v)) != v}
    if not escaped or not prose:
        return prose
    # Each value's next occurrence, searched again only once passed: a value's searches
    # cover the text about once (a search of every value after each match was quadratic).
    nexts = [(i, -len(v), v) for v in escaped if (i := prose.find(v)) >= 0]
    heapq.heapify(nexts)
    out, at = [], 0
    while nexts:
        i, size, value = heapq.heappop(nexts)
        if i < at:  # overlapped by the match before: its next occurrence from here
            if (i := prose.find(value, at)) >= 0:
                heapq.heappush(nexts, (i, size, value))
            continue
        out += [prose[at:i], escaped[value]]
        at = i - size
        if (i := prose.find(value, at)) >= 0:
            heapq.heappush(nexts, (i, size, value))
    out.append(prose[at:])
    return "".join(out)


def unescape(markdown: str) -> str:
    """Markdown's backslash escapes removed (`\\[` -> `[`) outside code: for text shown as it
    is written (a note's title; Slack, whose mrkdwn has no escapes and no `[text](url)`
    links; a page). A code span's or a fenced block's backslashes are their text (`a\\.b`
    in a label shown as code, `"C:\\\\data"` in evidence), kept as they are."""
    # Without a backslash there is no escape to remove; without a backtick, no code. Every
    # note's title comes here: `_CODE`'s scan of it cost more than the rest of `_title`.
    if "\\" not in markdown:
        return markdown
    if "`" not in markdown:
        return _ESCAPED.sub(r"\1", markdown)
    out, at = [], 0
    for code in _CODE.finditer(markdown):
        out += [_ESCAPED.sub(r"\1", markdown[at:code.start()]), code.group()]
        at = code.end()
    out.append(_ESCAPED.sub(r"\1", markdown[at:]))
    return "".join(out)


# A fenced block (as a note's evidence is: ``` alone on its lines), or a code span: a run of
# backticks not escaped, then what it holds, then a run as long (`code` makes them); a span
# is looked for only so far (backticks a backend wrote are escaped, in a fence or a span).
_CODE = re.compile(r"^```[^\n]*\n.*?^```[ \t]*$|(?<![`\\])(`+)(?!`).{1,4000}?(?<!`)\1(?!`)",
                   re.M | re.S)
