"""Validators for rendered values: what a template renders from untrusted alert data, when
it names a Kubernetes object, an S3 key, an env var, a container, a path or a URL, must be
one of that kind (`validate(kind, value)`, or an action parameter's `kind`), so a label can
never name `../kube-system/x` or `a,b`."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

# Matched with fullmatch: `$` would accept a trailing newline (`kube-system\n`), and every
# pattern is linear (no nested or adjacent ambiguous repeats) because it runs on label values.
_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_ENV_NAME = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_COMPOSE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")  # compose's project/service names
_CONTAINER_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{1,127}")  # the Engine's rule
_PATH_SEGMENT = re.compile(r"[A-Za-z0-9_@%+=:,.-]+")
_SELECTOR_TERM = re.compile(  # one stripped term: key, key=value, key!=value, key in (a,b), !key
    r"!?[A-Za-z0-9][-A-Za-z0-9_./]*( *(==?|!=) *[-A-Za-z0-9_.]*|[ \t]+(in|notin)[ \t]+\([-A-Za-z0-9_., ]*\))?"
)
_MAX_SELECTOR = 4096
# RFC 9110 5.1, 5.5: a field name is a token; a value holds no control character but the tab
# (C1 controls too: aiohttp writes text as UTF-8, and a reader decoding Latin-1 sees them).
HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")
_HEADER_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")


def _dns1123_label(v: str) -> None:
    if len(v) > 63 or not _DNS1123_LABEL.fullmatch(v):
        raise ValueError("must be a DNS-1123 label (lowercase alphanumerics and '-', max 63)")


def _dns1123_subdomain(v: str) -> None:
    if len(v) > 253 or not _DNS1123_SUBDOMAIN.fullmatch(v):
        raise ValueError("must be a DNS-1123 subdomain (lowercase alphanumerics, '-', '.')")


def _env_name(v: str) -> None:
    if len(v) > 256 or not _ENV_NAME.fullmatch(v):
        raise ValueError("must be a C identifier-like env var name")


def _s3_key(v: str) -> None:
    if not v or len(v.encode()) > 1024:
        raise ValueError("must be 1..1024 bytes")
    if v.startswith("/") or any(part in ("..", ".") for part in v.split("/")):
        raise ValueError("must be relative, without '.' or '..' segments")
    if any(ord(c) < 32 for c in v):
        raise ValueError("must not contain control characters")


def _s3_prefix(v: str) -> None:
    if v:
        _s3_key(v)


def _s3_bucket(v: str) -> None:
    if not _BUCKET.fullmatch(v) or ".." in v:
        raise ValueError("must be a valid S3 bucket name")


def _label_selector(v: str) -> None:
    if len(v) > _MAX_SELECTOR:
        raise ValueError(f"must be a label selector of at most {_MAX_SELECTOR} characters")
    terms = _split_selector(v)
    if not terms or any(not t.strip() for t in terms):
        raise ValueError("must be a non-empty label selector")
    for term in terms:
        if not _SELECTOR_TERM.fullmatch(term.strip(" \t")):
            raise ValueError(f"invalid selector term {term.strip()!r}")


def _split_selector(v: str) -> list[str]:
    """Split on commas outside parentheses (`app in (a,b),tier=web`)."""
    terms, depth, current = [], 0, ""
    for ch in v:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            terms.append(current)
            current = ""
        else:
            current += ch
    terms.append(current)
    return terms if v.strip() else []


def _compose_name(v: str) -> None:
    if not _COMPOSE_NAME.fullmatch(v):
        raise ValueError("must be a compose project or service name (lowercase alphanumerics, "
                         "'-' and '_')")


def _docker_container(v: str) -> None:
    if not _CONTAINER_NAME.fullmatch(v):
        raise ValueError("must be a container name ([a-zA-Z0-9][a-zA-Z0-9_.-]*)")


URL_MAX = 8192  # characters: what servers' request lines take (aiohttp's own limit, 8190)


def _container_path(v: str) -> None:
    """An absolute, normalised path: a label may name a file, never climb out of a directory."""
    parts = v.split("/")
    if not v.startswith("/") or len(v) > 4096 or any(
            p in (".", "..") or (p and not _PATH_SEGMENT.fullmatch(p)) for p in parts[1:]):
        raise ValueError("must be an absolute path without '.' or '..' segments, of "
                         "letters, digits and _@%+=:,.-")


def _url(v: str) -> None:
    if len(v) > URL_MAX:  # said as it is: "without spaces" sent a reader hunting for one
        raise ValueError(f"must be an http(s) URL of at most {URL_MAX} characters, "
                         f"not {len(v)}")
    if any(c.isspace() or not c.isprintable() for c in v):
        raise ValueError("must be an http(s) URL without spaces or control characters")
    parts = urlsplit(v)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http(s) URL with a host")
    try:
        parts.port  # noqa: B018 - raises on a port that is not a number in range
    except ValueError as exc:
        raise ValueError(f"must be an http(s) URL: {exc}") from None


def _promql(v: str) -> None:
    if not v.strip() or len(v) > 65536:
        raise ValueError("must be a PromQL expression of at most 65536 characters")


def header_value(v: str) -> None:
    """A header's value: a line break there would start a header (or a body) of the alert's
    choosing. aiohttp refuses it too, but only while sending, too late to say which header."""
    bad = _HEADER_CONTROL.search(v)
    if bad:
        raise ValueError(f"holds a control character ({bad.group()!r}): a line break, NUL, DEL "
                         "or another control character cannot be sent in a header")


def _http_header(name: Any, value: Any) -> None:
    if not isinstance(name, str) or not HEADER_NAME.fullmatch(name):
        raise ValueError(f"header {name!r}: not a valid header name (letters, digits and "
                         "!#$%&'*+.^_`|~-)")
    if not isinstance(value, str):
        raise ValueError(f"header {name!r}: the value must be a string, got "
                         f"{type(value).__name__} (quote it)")
    try:
        header_value(value)
    except ValueError as exc:
        raise ValueError(f"header {name!r}: the value {exc}") from None


VALIDATORS: dict[str, Callable[[str], None]] = {
    "promql": _promql,
    "k8s_name": _dns1123_subdomain,
    "namespace": _dns1123_label,
    "container": _dns1123_label,
    "env_name": _env_name,
    "s3_key": _s3_key,
    "s3_prefix": _s3_prefix,
    "s3_bucket": _s3_bucket,
    "label_selector": _label_selector,
    "url": _url,
    "compose_name": _compose_name,
    "docker_container": _docker_container,
    "container_path": _container_path,
}


# Mappings checked entry by entry: (key, value).
ENTRY_VALIDATORS: dict[str, Callable[[Any, Any], None]] = {"http_header": _http_header}


def validate(kind: str, value: str) -> None:
    """Raise ValueError if `value` is not a valid `kind`."""
    VALIDATORS[kind](value)


def validate_entry(kind: str, key: Any, value: Any) -> None:
    """Raise ValueError if a mapping's entry is not a valid `kind` (an HTTP header)."""
    ENTRY_VALIDATORS[kind](key, value)
