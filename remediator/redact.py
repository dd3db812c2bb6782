"""The one place secrets are taken out of what remediator writes: logs, decisions, notes, API.

Two mechanisms, because a secret reaches an output two ways:

- by shape: request headers (`headers` mappings), `user:pass@` in any URL, credential-looking
  query parameters (`?token=…`), wherever they sit in a value;
- by value: secrets remediator knows (sink URLs and headers, its own tokens, headers read
  from `headers_from` at call time) are `remember`ed, and any text that still carries one,
  such as an error message quoting a Slack URL, has it replaced.

Every output path calls in here: the log formatter, step records and decisions before they
are stored, notes, sinks describing themselves, and the API's JSON.
"""

from __future__ import annotations

import base64
import re
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

from . import markdown_text
from .untrusted_regex import compile_regex

REDACTED = "<redacted>"
# Headers whose values say nothing secret; every other header value is redacted.
_HARMLESS_HEADERS = frozenset({"accept", "accept-encoding", "accept-language", "cache-control",
                               "content-type", "user-agent", "x-request-id"})
# RE2 (linear): with `a-a-a-…` before a `://x@`, Python's regex tried each word as a scheme's
# start and read on to the run's end every time, its length squared (8 KiB of a label: ~0.2 s
# on the event loop, for each label an answer, a note or a log line showed).
# No word boundary before the scheme: after a digit or `_` (`1a://u:p@h`, `x_https://…`) there
# is none, and the credentials were left in; cutting a word's tail too costs nothing here.
# Up to the authority's last `@`, as a URL parser splits it: a password may hold a raw `@`
# (`postgresql://u:p@ss@db` kept `ss@` shown at the first).
_USERINFO = compile_regex(r"(?i)([a-z][a-z0-9+.-]*://)[^/?#\s]+@")
_USERINFO_AFTER = re.compile(r"://[^/?#@\s]+@")  # what _USERINFO needs after a scheme
_SECRET_QUERY = re.compile(
    r"(?i)([?&](?:access_token|api_key|apikey|key|token|secret|password|passwd|signature|sig|"
    r"x-amz-signature|x-amz-credential|x-amz-security-token)=)[^&#\s]*")
_MIN_SECRET = 8  # shorter values would blank out ordinary words

_known: set[str] = set()
# The pattern of every known secret, and the secrets themselves while they are few: a text
# that holds none of them (nearly every one) is told by a substring search each, in C,
# without the pattern's scan (15 us over a note's Markdown, against 1). Set together.
_pattern: tuple[re.Pattern[str], tuple[str, ...]] | None = None
_FEW = 16
_lock = threading.Lock()


def known() -> object:
    """What output redaction knows now: a new value whenever a secret is remembered, so
    what was redacted before can be told from what must be redacted again."""
    return _pattern


def remember(*secrets: str | None) -> None:
    """Values that must never appear in any output (a sink URL, a token, a header)."""
    global _pattern
    new = {s.strip() for s in secrets if s and len(s.strip()) >= _MIN_SECRET}
    # and as an escalation note's Markdown shows them (escaped as text, on one line)
    new = (new | {form for s in new for form in markdown_text.forms(s)}) - _known
    if not new:
        return
    with _lock:
        _known.update(new)
        # Longest first, so a URL is replaced whole before a token inside it.
        ordered = sorted(_known, key=len, reverse=True)
        _pattern = (re.compile("|".join(re.escape(s) for s in ordered)),
                    tuple(ordered) if len(ordered) <= _FEW else ())


def remember_basic(user: str | None, password: str | None) -> None:
    """A user and password sent as HTTP Basic auth: the password, and the header's
    base64 of `user:password`, which a server's error page may quote back ("Authorization
    was Basic ..."), unpadded so it is found however it is padded or cut."""
    if password:
        remember(password, base64.b64encode(f"{user or ''}:{password}".encode()).decode()
                 .rstrip("="))


def remember_url(value: str | None) -> None:
    """The user info of a configured URL (`http://user:pass@prometheus:9090`), as Basic."""
    try:
        parts = urlsplit(value or "")
        user, password = parts.username, parts.password
    except ValueError:
        return
    remember_basic(unquote(user or ""), unquote(password) if password else None)


def text(value: str) -> str:
    """`value` with known secrets, URL user info and credential query values replaced."""
    # Each pattern runs only where it can match: most strings are short, and none but a URL
    # with user info has `://` followed by it (the user-info pattern, which tries a scheme
    # at every word, alone took 70 us to scan a note's Markdown; this search, 2), nor a
    # credential query value anywhere but after a `?` or `&`.
    known_now = _pattern
    if known_now is not None and len(value) >= _MIN_SECRET:
        pattern, few = known_now
        if not few or any(secret in value for secret in few):
            value = pattern.sub(REDACTED, value)
    if "://" in value and _USERINFO_AFTER.search(value):
        value = _USERINFO.sub(rf"\1{REDACTED}@", value)
    if "=" in value and _secret_query(value):
        value = _SECRET_QUERY.sub(rf"\1{REDACTED}", value)
    return value


def _secret_query(value: str) -> bool:
    """Whether `_SECRET_QUERY` matches anywhere: tried only at each `?` and `&` (a scan of a
    note's Markdown by the pattern took 15 us; a note has a few of them, or none)."""
    for separator in "?&":
        at = value.find(separator)
        while at >= 0:
            if _SECRET_QUERY.match(value, at):
                return True
            at = value.find(separator, at + 1)
    return False


def url(value: str, *, whole: bool = False) -> str:
    """A URL fit to show. `whole=True` for URLs that are themselves the credential (Slack and
    webhook sinks): only the scheme and host remain."""
    if not whole:
        return text(value)
    try:
        parts = urlsplit(value)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return REDACTED
    return f"{parts.scheme}://{host}{port}/{REDACTED}" if host else REDACTED


def headers(value: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v if str(k).lower() in _HARMLESS_HEADERS else REDACTED for k, v in value.items()}


def value(data: Any) -> Any:
    """A copy of `data` (decisions, step records, API answers) with every secret redacted."""
    kind = type(data)  # the JSON types first, by identity: every step record comes here
    if kind is str:
        return text(data)
    if kind in _LEAVES:
        return data
    if kind is dict or isinstance(data, Mapping):
        return _mapping(data)
    if isinstance(data, str):
        return text(data)
    if isinstance(data, list | tuple):
        return [value(v) for v in data]
    return data


def _mapping(data: Mapping[Any, Any]) -> dict[Any, Any]:
    # A mapping's leaves are handled here, without a call each, and only a container's key
    # is compared with `headers` (a str() and lower() of every key were half of the work).
    out = {}
    for k, v in data.items():
        kind = type(v)
        if kind is str:
            out[k] = text(v)
        elif kind in _LEAVES:
            out[k] = v
        elif (kind is dict or isinstance(v, Mapping)) and str(k).lower() == "headers":
            out[k] = headers(v)
        else:
            out[k] = value(v)
    return out


_LEAVES = frozenset({int, float, bool, type(None)})
