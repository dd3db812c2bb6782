"""Graphs of what remediator saw: Prometheus `query_range`, drawn as SVG by a small renderer.

Our own renderer rather than a plotting library: a line chart with a threshold and a few
markers is ~100 lines, needs no native dependency (matplotlib pulls numpy, freetype...), and
its output is plain SVG text we escape ourselves. Fetching is bounded by a timeout and never
raises: a graph that cannot be had says why, in the picture itself.
"""

from __future__ import annotations

import asyncio
import functools
import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html import escape  # xml.sax.saxutils.escape, quotes too: xml.sax cost ~1.5 ms at start-up
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp

from .untrusted_regex import Regex, compile_regex

WIDTH, HEIGHT = 720, 240
_LEFT, _RIGHT, _TOP, _BOTTOM = 64, 16, 28, 34
_MAX_SERIES = 8
_MAX_POINTS = 11_000  # Prometheus refuses a range query with more points a series
_RULES_FRESH, _RULES_RETRY = 60.0, 10.0  # seconds between reads of the rules (after a failure)
_UNANSWERED = (aiohttp.ClientError, TimeoutError, ValueError, OSError)
_COLOURS = ("#2563eb", "#d97706", "#059669", "#7c3aed", "#db2777", "#0891b2", "#65a30d", "#475569")
# `<expr> <op> <number>` at the top level: the left side is graphed, the number is the threshold.
# The expression is the alert sender's (its generatorURL): RE2, linear in it. Python's `re`
# tried every run of spaces at every space before a `+` that compares nothing, the text's
# length squared on the event loop (16 000 spaces: 3 s; a webhook may carry millions).
_COMPARISON = (r"(?s)(?P<expr>.+?)\s*(?P<op>>=|<=|==|!=|>|<)\s*(?:bool\s+)?"
               r"(?P<value>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*")


@dataclass
class Graph:
    """A chart to draw: the query's series, its threshold and remediator's markers."""

    title: str
    expr: str = ""
    threshold: float | None = None
    series: list[tuple[str, list[tuple[float, float]]]] = field(default_factory=list)
    markers: list[tuple[float, str]] = field(default_factory=list)  # (time, what remediator did)
    start: float = 0.0
    end: float = 0.0
    problem: str = ""  # why there is no graph, said plainly


def alert_expr(generator_url: str) -> str:
    """The alert rule's expression, from its Prometheus `generatorURL` (`g0.expr`)."""
    # A storm's alerts come from a few rules: each URL parsed once. Only a rule's usual size
    # is kept: the sender's URL may be most of a webhook body, 256 of them held whole.
    url = generator_url or ""
    return _kept_expr(url) if len(url) <= 4096 else _expr(url)


def _expr(generator_url: str) -> str:
    try:
        return parse_qs(urlsplit(generator_url).query).get("g0.expr", [""])[0].strip()
    except ValueError:
        return ""


_kept_expr = functools.lru_cache(maxsize=256)(_expr)


def split_threshold(expr: str) -> tuple[str, float | None]:
    """`rate(x[5m]) > 0.1` -> (`rate(x[5m])`, 0.1); anything else is graphed as it is."""
    m = _comparison().match(expr.strip())
    if m and _balanced(m["expr"]):
        return m["expr"].strip(), float(m["value"])
    return expr.strip(), None


@functools.cache
def _comparison() -> Regex:
    return compile_regex(_COMPARISON, anchored=True)  # too long for compile_regex's own cache


def _balanced(expr: str) -> bool:
    depth = 0
    for char in expr:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0:
            return False
    return depth == 0


def verify_query(decision: dict[str, Any]) -> str:
    """The playbook's verification: the query of its `prometheus.wait_until` step."""
    for step in decision.get("steps") or []:
        if step.get("action") == "prometheus.wait_until" and (step.get("params") or {}).get("query"):
            return str(step["params"]["query"])
    return ""


def markers(decision: dict[str, Any]) -> list[tuple[float, str]]:
    """When remediator acted: each step that ran, at its start."""
    out = []
    for step in decision.get("steps") or []:
        at = _epoch(step.get("started_at") or "")
        if at is not None and step.get("outcome") not in ("skipped", "planned"):
            out.append((at, f"{step.get('name')}: {step.get('outcome')}"))
    return out


def _epoch(iso: str) -> float | None:
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class AlertRules:
    """The alerting rules the configured Prometheus evaluates: the only alert expressions a
    graph queries.

    An alert's expression is its sender's (generatorURL's `g0.expr`): graphed as it came,
    whoever can post a webhook would have remediator run any PromQL against Prometheus, as
    costly or as revealing as they like, each time an operator opens the page. Prometheus
    writes `g0.expr` as it formats the rule's query, the very text `/api/v1/rules` reports,
    and names the alert after its rule, so an alert Prometheus sent matches exactly.
    Read at most once a minute (10 s after a failure, keeping the last list read), by one
    coroutine at a time, bounded by the graph's timeout; never raises."""

    def __init__(self) -> None:
        self._rules: dict[str, frozenset[str]] | None = None  # rule name -> its queries
        self._problem = "Prometheus's alerting rules were not read yet"
        self._next = 0.0  # monotonic: when they may be read again
        self._lock = asyncio.Lock()

    async def why_not(self, session: aiohttp.ClientSession, prometheus_url: str,
                      timeout: float, alertname: str, expr: str) -> str:
        """"" when `expr` is what Prometheus's alerting rule `alertname` evaluates; else why
        the alert's expression is not graphed, said plainly."""
        if time.monotonic() >= self._next:
            async with self._lock:
                if time.monotonic() >= self._next:
                    rules, self._problem = await _alert_rules(session, prometheus_url, timeout)
                    self._rules = rules if rules is not None else self._rules
                    self._next = time.monotonic() + (
                        _RULES_FRESH if rules is not None else _RULES_RETRY)
        if self._rules is None:
            return self._problem
        if alertname not in self._rules:
            return "not drawn: Prometheus has no alerting rule named as this alert"
        if expr not in self._rules[alertname]:
            return "not drawn: the Prometheus alerting rule of this name evaluates another expression"
        return ""


async def _alert_rules(session: aiohttp.ClientSession, prometheus_url: str,
                       timeout: float) -> tuple[dict[str, frozenset[str]] | None, str]:
    """Prometheus's alerting rules (name -> queries), or None and why not."""
    url = prometheus_url.rstrip("/") + "/api/v1/rules"
    try:
        async with session.get(url, params={"type": "alert"},
                               timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            body = await resp.json(content_type=None)
        rules: dict[str, set[str]] = {}
        for group in body["data"]["groups"]:
            for rule in group["rules"]:
                if rule.get("type") == "alerting":
                    rules.setdefault(str(rule["name"]), set()).add(str(rule["query"]).strip())
    except _UNANSWERED as exc:
        return None, f"Prometheus did not answer ({type(exc).__name__}) with its rules; no graph now"
    except (KeyError, TypeError, AttributeError):
        return None, f"Prometheus answered {resp.status} without its alerting rules; no graph now"
    return {name: frozenset(queries) for name, queries in rules.items()}, ""


async def fetch(session: aiohttp.ClientSession, prometheus_url: str, graph: Graph,
                timeout: float, step: float = 0.0) -> Graph:
    """Fill `graph.series` from `query_range` over [start, end]; on any failure, `problem`.
    `step` defaults to ~240 points over the window (at least 15 s apart). A graph that
    already has a problem is not queried."""
    if not graph.expr or graph.problem:
        return graph
    span = graph.end - graph.start
    # Whole milliseconds, as Prometheus counts them, and never more points than it allows.
    step = math.ceil(max(step or max(15.0, span / 240), span / _MAX_POINTS) * 1000) / 1000
    # Evaluate at `end` and back from it, so the newest value is always drawn.
    graph.start = graph.end - min(math.ceil(span / step), _MAX_POINTS) * step
    url = prometheus_url.rstrip("/") + "/api/v1/query_range"
    # `timeout`: Prometheus stops evaluating when remediator stops waiting.
    data = {"query": graph.expr, "start": f"{graph.start:.3f}", "end": f"{graph.end:.3f}",
            "step": f"{step:.3f}", "timeout": f"{timeout:g}"}
    try:
        async with session.post(url, data=data,
                                timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            body = await resp.json(content_type=None)
    except _UNANSWERED as exc:
        graph.problem = f"Prometheus did not answer ({type(exc).__name__}); no graph now"
        return graph
    if not isinstance(body, dict) or body.get("status") != "success":
        error = body.get("error", "") if isinstance(body, dict) else ""
        graph.problem = f"Prometheus refused the query: {str(error)[:200]}"
        return graph
    result = body["data"].get("result", []) if body["data"].get("resultType") == "matrix" else []
    for s in result[:_MAX_SERIES]:
        points = [(float(t), v) for t, raw in s.get("values", [])
                  if math.isfinite(v := _float(raw))]
        name = ", ".join(f"{k}={v}" for k, v in sorted(s.get("metric", {}).items())) or graph.expr
        graph.series.append((name, points))
    if not any(points for _, points in graph.series):
        graph.problem = "no samples in this window"
    return graph


async def probe(session: aiohttp.ClientSession, prometheus_url: str, timeout: float) -> str:
    """Why no graph can be drawn now ("" when Prometheus answers a query): what a note says."""
    url = prometheus_url.rstrip("/") + "/api/v1/query"
    try:
        async with session.post(url, data={"query": "1"},
                                timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            body = await resp.json(content_type=None)
    except _UNANSWERED as exc:
        return f"Prometheus did not answer ({type(exc).__name__})"
    if not isinstance(body, dict) or body.get("status") != "success":
        return f"Prometheus answered {resp.status} without a result"
    return ""


def graph_url(external_url: str, execution_id: str, which: str = "alert") -> str:
    """The stable address of a decision's graph (the console serves it)."""
    return f"{external_url.rstrip('/')}/ui/executions/{execution_id}/graph.svg?q={which}"


def _float(raw: Any) -> float:
    try:
        return float(raw)
    except (TypeError, ValueError):
        return math.nan


def render(graph: Graph) -> str:
    """The graph as a standalone SVG document (every text escaped)."""
    w, h = WIDTH - _LEFT - _RIGHT, HEIGHT - _TOP - _BOTTOM
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
           f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="system-ui,sans-serif" font-size="11" '
           f'role="img" aria-label="{escape(graph.title)}">',
           f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>',
           f'<text x="{_LEFT}" y="17" font-size="13" fill="#1f2937">{escape(graph.title)}</text>']
    values = [v for _, pts in graph.series for _, v in pts]
    if graph.problem or not values:
        out.append(f'<text class="problem" x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle" '
                   f'fill="#92400e">{escape(graph.problem or "no data")}</text>')
        out.append(f'<text x="{_LEFT}" y="{HEIGHT - 10}" fill="#6b7280">'
                   f'{escape(_short(graph.expr or "no expression"))}</text></svg>')
        return "\n".join(out)
    if graph.threshold is not None:
        values.append(graph.threshold)
    ticks = _ticks(min(values), max(values))
    low, high = ticks[0], ticks[-1]
    span = max(graph.end - graph.start, 1.0)

    def x(t: float) -> float:
        return _LEFT + (t - graph.start) / span * w

    def y(v: float) -> float:
        return _TOP + (high - v) / (high - low) * h

    out.append(f'<rect x="{_LEFT}" y="{_TOP}" width="{w}" height="{h}" fill="#f9fafb" '
               f'stroke="#e5e7eb"/>')
    for v in ticks:  # value grid and labels
        out.append(f'<line x1="{_LEFT}" x2="{_LEFT + w}" y1="{y(v):.1f}" y2="{y(v):.1f}" '
                   f'stroke="#e5e7eb"/><text x="{_LEFT - 6}" y="{y(v) + 4:.1f}" '
                   f'text-anchor="end" fill="#6b7280">{_num(v)}</text>')
    for i in range(5):  # time labels
        t = graph.start + span * i / 4
        out.append(f'<text x="{x(t):.1f}" y="{_TOP + h + 16}" text-anchor="middle" '
                   f'fill="#6b7280">{datetime.fromtimestamp(t, UTC):%H:%M}</text>')
    for i, (name, pts) in enumerate(graph.series):
        if not pts:
            continue
        colour = _COLOURS[i % len(_COLOURS)]
        path = " ".join(f"{'M' if j == 0 else 'L'}{x(t):.1f},{y(v):.1f}"
                        for j, (t, v) in enumerate(pts))
        out.append(f'<path class="series" d="{path}" fill="none" stroke="{colour}" '
                   f'stroke-width="1.6"><title>{escape(name)}</title></path>')
    if graph.threshold is not None:
        ty = y(graph.threshold)
        out.append(f'<line class="threshold" x1="{_LEFT}" x2="{_LEFT + w}" y1="{ty:.1f}" '
                   f'y2="{ty:.1f}" stroke="#dc2626" stroke-dasharray="6 4" '
                   f'data-value="{graph.threshold:g}"/><text x="{_LEFT + w - 4}" '
                   f'y="{ty - 4:.1f}" text-anchor="end" fill="#dc2626">threshold '
                   f'{_num(graph.threshold)}</text>')
    for at, what in graph.markers:
        if graph.start <= at <= graph.end:
            out.append(f'<line class="marker" x1="{x(at):.1f}" x2="{x(at):.1f}" y1="{_TOP}" '
                       f'y2="{_TOP + h}" stroke="#7c3aed" stroke-width="1.2">'
                       f'<title>{escape(what)}</title></line>'
                       f'<circle cx="{x(at):.1f}" cy="{_TOP + 3}" r="3" fill="#7c3aed"/>')
    out.append(f'<text x="{_LEFT}" y="{HEIGHT - 4}" fill="#6b7280">'
               f'{escape(_short(graph.expr))}</text></svg>')
    return "\n".join(out)


def _num(v: float) -> str:
    return f"{v:.3g}" if abs(v) >= 1e-9 else "0"


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round grid values (1, 2 or 5 times a power of ten apart) spanning [low, high]."""
    if high - low < 1e-12:
        low, high = low - 1, high + 1
    raw = (high - low) / (count - 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(low / step) * step
    return [first + i * step for i in range(math.ceil((high - first) / step - 1e-9) + 1)]


def _short(text: str, limit: int = 110) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def window(decision: dict[str, Any], now: float | None = None) -> tuple[float, float]:
    """From an hour before the alert started to now (at most a day after it)."""
    now = time.time() if now is None else now
    started = _epoch((decision.get("alert") or {}).get("startsAt") or "") or now
    start = min(started, now) - 3600
    return start, min(now, start + 86400 + 3600)
