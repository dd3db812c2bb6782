"""The filters that put an alert's value into PromQL without letting it rewrite the query.

Inside a double-quoted string `promql_str` escapes the value. Outside a string (a metric
name, a label name in `by (...)`, a range `[...]`, after `offset`) nothing can escape it:
`promql_name` and `promql_duration` check that the value is one such token and nothing
else, and fail the render otherwise, so a label `x) or vector(1) or (y` stops the decision
before any query is sent. A value one of them passes holds no quote, backslash, space or
newline, so it is as safe inside any string or comment.
"""

from __future__ import annotations

import json
import re
from typing import Any

from . import TemplateError

# Prometheus' own: a metric name ([a-zA-Z_:][a-zA-Z0-9_:]*; a label name is the same
# without ':', which a selector then refuses on its own) and a duration as its
# model.ParseDuration reads it, units largest first, each at most once.
_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_DURATION = re.compile(r"(?:\d+y)?(?:\d+w)?(?:\d+d)?(?:\d+h)?(?:\d+m)?(?:\d+s)?(?:\d+ms)?", re.ASCII)
_MS = {"y": 365 * 86_400_000, "w": 7 * 86_400_000, "d": 86_400_000, "h": 3_600_000,
       "m": 60_000, "s": 1_000, "ms": 1}
_MAX_MS = 2**63 - 1  # a longer duration overflows Prometheus' int64 and is refused there
# Words PromQL's lexer reads as a keyword or a number wherever a name stands, case
# insensitively: `{{ metric | promql_name }}` with a label `Inf` is the number +Inf, which
# a precondition or `prometheus.wait_until` takes as true; `or`, `sum` break the query.
KEYWORDS = frozenset({
    "and", "or", "unless", "atan2", "sum", "avg", "count", "min", "max", "group", "stddev",
    "stdvar", "topk", "bottomk", "count_values", "quantile", "limitk", "limit_ratio",
    "offset", "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
    "start", "end", "inf", "nan"})


def promql_str(value: Any) -> str:
    """The value escaped for a double-quoted PromQL string: `job="{{ labels.job | promql_str }}"`.

    Without it a label such as `x"} or vector(1) or up{job="` rewrites the query. Only in
    double quotes: `'` is not escaped, and a backtick string has no escapes at all."""
    return json.dumps(str(value), ensure_ascii=False)[1:-1]  # Go's escapes: \" \\ \n \uXXXX


def promql_name(value: Any) -> str:
    """`{{ labels.metric | promql_name }}{job="a"}`, `sum by ({{ labels.by | promql_name }})`:
    the value if it is a metric or label name, else the render fails."""
    text = _text(value)
    if text is None:
        return str(value)
    if not _NAME.fullmatch(text):
        raise TemplateError(f"promql_name: {_shown(text)} is not a metric or label name "
                            "([a-zA-Z_:][a-zA-Z0-9_:]*); it is not put into the query")
    if text.lower() in KEYWORDS:
        raise TemplateError(f"promql_name: {_shown(text)} is a PromQL keyword or number, not "
                            "a name, where a name stands; it is not put into the query")
    return text


def promql_duration(value: Any) -> str:
    """`rate(x[{{ labels.window | promql_duration }}])`: the value if it is a Prometheus
    duration (`5m`, `1h30m`, `90s`, `1d`; units y w d h m s ms, largest first, each once),
    else the render fails."""
    text = _text(value)
    if text is None:
        return str(value)
    if not text or not _DURATION.fullmatch(text) or _milliseconds(text) > _MAX_MS:
        raise TemplateError(f"promql_duration: {_shown(text)} is not a Prometheus duration "
                            "(such as 5m, 1h30m, 90s: units y w d h m s ms, largest first); "
                            "it is not put into the query")
    return text


def _text(value: Any) -> str | None:
    """The value as text, or None for a placeholder (a result only known at run time:
    it renders as itself in a plan, as with every filter)."""
    from . import Pending

    return None if isinstance(value, Pending) else str(value)


def _milliseconds(text: str) -> int:
    return sum(int(n) * _MS[unit] for n, unit in re.findall(r"([0-9]+)(ms|[ywdhms])", text))


def _shown(text: str) -> str:
    """The refused value, bounded (it is the alert sender's, and goes into the record)."""
    return repr(text if len(text) <= 64 else text[:64] + "…")
