"""Regular expressions that run over untrusted input: RE2, as Alertmanager's Go regexp.

Python's `re` backtracks: `(\\w+\\.?)+:9100` against a 28-character hostile label took seconds,
doubling per character, and on the event loop that stalls every request. RE2 never backtracks
(time is linear in the input), refuses what cannot run in linear time (lookarounds,
backreferences), and shares Go's semantics: `\\d`, `\\w`, `\\s` are ASCII, `.` does not match a
newline, `$` is the end of the text. Every regex over alert labels or log lines compiles here
(matchers, `grep` in log actions), so lint, load and run time agree on what is valid.
"""

from __future__ import annotations

import functools

import re2

# A pattern is written by a playbook author, but may be rendered from a label: keep it small so
# that even RE2's linear time (pattern size x input size) stays short.
MAX_PATTERN = 4096

Regex = re2._Regexp


class RegexError(ValueError):
    """A pattern that RE2 (and so Alertmanager) refuses."""


def _options() -> re2.Options:
    options = re2.Options()
    options.log_errors = False  # the error is raised to the caller, not printed to stderr
    return options


_OPTIONS = _options()


def compile_regex(pattern: str, *, anchored: bool = False) -> Regex:
    """Compile `pattern` with RE2; `anchored` wraps it as Alertmanager does (`^(?:...)$`).

    Raises RegexError with RE2's reason for a pattern it refuses. The pattern must also be
    valid on its own, so that `a)|(b` cannot escape the anchors. Compiled once per pattern
    (a `logs` step's `grep` was compiled for every decision that planned it: 2 % of a
    storm's processing); a compiled RE2 regex is immutable. Only a short pattern is kept:
    a compiled one holds ~250 bytes per character of its text, and a pattern may be
    rendered from a label (`grep: "{{ labels.tenant_id | re_escape }}"`), so a thousand
    alerts with distinct 4 000-character labels kept ~1 GB alive in a cache of any length.
    """
    if not isinstance(pattern, str) or len(pattern) > CACHED_PATTERN:  # compiled, not kept
        return _compile.__wrapped__(pattern, anchored)
    return _compile(pattern, anchored)


# What the cache may hold: at most CACHED_ENTRIES patterns of at most CACHED_PATTERN
# characters each (~8 MB of compiled RE2 programs at worst).
CACHED_PATTERN, CACHED_ENTRIES = 128, 256


@functools.lru_cache(maxsize=CACHED_ENTRIES)
def _compile(pattern: str, anchored: bool) -> Regex:
    if len(pattern) > MAX_PATTERN:
        raise RegexError(f"regex longer than {MAX_PATTERN} characters")
    try:
        # Made directly: `re2.compile` keeps its last 128 patterns alive in a cache of its own.
        compiled = Regex(pattern, _OPTIONS)
        return Regex(f"^(?:{pattern})$", _OPTIONS) if anchored else compiled
    except re2.error as exc:
        reason = exc.args[0].decode("utf-8", "replace") if exc.args and isinstance(
            exc.args[0], bytes) else str(exc)
        raise RegexError(f"{pattern!r} is not a valid RE2 regex: {reason}") from None
    except (TypeError, UnicodeEncodeError) as exc:  # not a string, or not encodable as UTF-8
        raise RegexError(f"regex must be a UTF-8 string: {exc}") from None
