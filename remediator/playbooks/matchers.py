"""Label matchers in Alertmanager syntax: `name="value"`, `name!="v"`, `name=~"re"`, `name!~"re"`.

Regexes are RE2 and fully anchored, as in Alertmanager, so `env=~"prod"` matches neither
`preprod` nor `prod\n`, and no label value can make matching slow (untrusted_regex.py).
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass

from ..untrusted_regex import RegexError, compile_regex

_MATCHER = re.compile(r"\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*(.*?)\s*", re.S)


class MatcherError(ValueError):
    """A matcher string that Alertmanager would refuse too."""


@dataclass(frozen=True)
class Matcher:
    """One label matcher (`name="value"`, `!=`, `=~`, `!~`); its regex compiled once."""

    name: str
    op: str
    value: str

    def __post_init__(self) -> None:
        if self.op in ("=~", "!~"):
            try:
                object.__setattr__(self, "_regex", compile_regex(self.value, anchored=True))
            except RegexError as exc:
                raise MatcherError(f"invalid regex in {self}: {exc}") from None

    def matches(self, labels: dict[str, str]) -> bool:
        # A missing label matches as the empty string, like Alertmanager.
        actual = labels.get(self.name, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        hit = self._regex.search(actual) is not None  # type: ignore[attr-defined]
        return hit if self.op == "=~" else not hit

    @property
    def is_equality(self) -> bool:
        return self.op == "="

    @functools.cached_property
    def text(self) -> str:
        """As Alertmanager writes it; kept, as a `no_match`'s reason shows it per decision."""
        return f"{self.name}{self.op}{json.dumps(self.value)}"

    def __str__(self) -> str:
        return self.text


@functools.lru_cache(maxsize=4096)
def parse_matcher(text: str) -> Matcher:
    """Parse one matcher; values may be double-quoted (with JSON escapes) or bare.

    Cached (a Matcher is immutable): validation and the built playbook parse the same text,
    and rule sets repeat matchers; an error is raised again each time, never cached."""
    found = _MATCHER.fullmatch(text)
    if not found:
        raise MatcherError(f'bad matcher {text!r}: expected name="value" with =, !=, =~ or !~')
    name, op, raw = found.groups()
    if raw.startswith('"'):
        if len(raw) < 2 or not raw.endswith('"'):
            raise MatcherError(f"bad matcher {text!r}: unterminated quoted value")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            raise MatcherError(f"bad matcher {text!r}: invalid escape in quoted value") from None
    else:
        if any(c in raw for c in '"{},'):
            raise MatcherError(f"bad matcher {text!r}: quote a value that contains {{}},\"")
        value = raw
    return Matcher(name=name, op=op, value=value)
