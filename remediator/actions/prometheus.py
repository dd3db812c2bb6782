"""Prometheus actions: `prometheus.query` and `prometheus.wait_until` (how a fix is verified)."""

from __future__ import annotations

import time
from typing import Any

import aiohttp

from .base import Action, ActionContext, ActionError, Param, TransientError, UnsafeJSON, parse_json

_MAX_SERIES = 50


async def instant_query(backends: Any, promql: str) -> dict[str, Any]:
    """Run an instant query; return {"value": first sample or None, "series": [...]}."""
    url = backends.prometheus_url.rstrip("/") + "/api/v1/query"
    try:
        async with backends.http().post(url, data={"query": promql}) as resp:
            status, raw = resp.status, await resp.read()
    except (TimeoutError, aiohttp.ClientConnectionError) as exc:
        raise TransientError(f"Prometheus at {url} unreachable: {exc}") from None
    try:
        body = parse_json(raw)
        if not isinstance(body, dict):
            raise ValueError("not an object")
    except UnsafeJSON as exc:
        raise ActionError(f"Prometheus at {url} answered {status}, refused: {exc}") from None
    except ValueError:  # a proxy's HTML error page, a truncated answer
        # Filtered: a page may quote the request's own header ("Authorization was Basic ...").
        excerpt = _filtered(raw[:120].decode("utf-8", "replace").strip())
        raise TransientError(f"Prometheus at {url} answered {status} without JSON (a proxy in "
                             f"between?): {excerpt!r}") from None
    if status == 429 or status >= 500:
        raise TransientError(f"Prometheus answered {status}: "
                             f"{_filtered(str(body.get('error', '')))}")
    if body.get("status") == "error" or "errorType" in body or "error" in body:
        raise ActionError(f"query {promql!r} failed: {body.get('errorType')}: "
                          f"{_filtered(str(body.get('error')))}")
    try:
        if body.get("status") != "success":
            raise TypeError
        data = body["data"]
        if data["resultType"] in ("scalar", "string"):
            return {"value": _number(data["result"][1]), "series": []}
        series = [{"labels": s["metric"], "value": _number(s["value"][1])}
                  for s in data["result"][:_MAX_SERIES]]
    except (KeyError, TypeError, IndexError, AttributeError):
        # Something else answered (a URL that is not Prometheus's, an API gateway): said
        # with what it sent, bounded and filtered as an error page is.
        excerpt = _filtered(raw[:120].decode("utf-8", "replace").strip())
        raise ActionError(f"Prometheus at {url} answered {status} with JSON that is not a "
                          f"query's answer (is prometheus_url Prometheus?): {excerpt!r}") from None
    return {"value": series[0]["value"] if series else None, "series": series,
            "count": len(data["result"])}


def _filtered(text: str) -> str:
    """An error's text as the secret filter leaves it (a page may quote the request's own
    header). Imported here, on an error: serve imports this module before it is ready."""
    from . import secret_text
    return secret_text.output(text)


def _number(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


class PrometheusQuery(Action):
    name = "prometheus.query"
    summary = "Instant PromQL query; `value` is the first sample (None when empty)."
    params = {"query": Param("string", required=True, kind="promql")}

    def describe(self, params: dict[str, Any]) -> str:
        return f"query Prometheus: {params['query']}"

    async def run(self, params: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
        return await instant_query(ctx.backends, params["query"])


class PrometheusWaitUntil(Action):
    name = "prometheus.wait_until"
    summary = "Poll a PromQL condition until it returns a sample (true) or time runs out."
    params = {
        "query": Param("string", required=True, kind="promql",
                       description="a filtering expression, e.g. ratio < 0.05; true = non-empty"),
        "timeout": Param("duration", default=300.0, minimum=1),
        "interval": Param("duration", default=15.0, minimum=0.1),
    }

    def describe(self, params: dict[str, Any]) -> str:
        return (f"wait up to {params['timeout']:g}s until Prometheus returns a result for: "
                f"{params['query']}")

    async def run(self, params: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
        deadline = time.monotonic() + params["timeout"]
        polls, last = 0, {}
        while True:
            polls += 1
            try:
                last = await instant_query(ctx.backends, params["query"])
                if last["series"] or (last["value"] not in (None, 0.0) and not last["series"]
                                      and "count" not in last):
                    return {**last, "polls": polls, "met": True}
            except TransientError as exc:
                last = {"error": str(exc)}
            if time.monotonic() + params["interval"] > deadline:
                raise ActionError(f"condition not met within {params['timeout']:g}s "
                                  f"({polls} polls): {params['query']}",
                                  {**last, "polls": polls, "met": False})
            await ctx.sleep(params["interval"])
