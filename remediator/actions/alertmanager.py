"""Alertmanager v2 actions: `alertmanager.silence` and `alertmanager.alert_status`."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp

from ..alerts import Alert
from .base import (
    Action,
    ActionContext,
    ActionError,
    Param,
    TransientError,
    UnsafeJSON,
    parse_json,
    retry_after,
)

MAX_SILENCE = 86400.0  # a silence remediator sets ends within a day: then a human decides


async def _call(backends: Any, method: str, path: str, **kwargs: Any) -> Any:
    url = backends.alertmanager_url.rstrip("/") + path
    read = method == "GET"  # a failed read changed nothing
    try:
        async with backends.http().request(method, url, **kwargs) as resp:
            text = await resp.text()
            if resp.status == 429 or resp.status >= 500:
                raise TransientError(f"Alertmanager {method} {path}: {resp.status} {text[:200]}",
                                     unapplied=read or resp.status == 429,  # 429: refused
                                     retry_after=retry_after(resp.headers.get("Retry-After")))
            if resp.status >= 300:  # a 4xx refused it; anything else may follow a change
                raise ActionError(f"Alertmanager {method} {path}: {resp.status} {text[:200]}",
                                  unapplied=read or 400 <= resp.status < 500)
            try:
                return parse_json(text) if text else None
            except UnsafeJSON as exc:
                raise ActionError(f"Alertmanager {method} {path}: answer refused: {exc}",
                                  unapplied=read) from None
    except (TimeoutError, aiohttp.ClientConnectionError) as exc:
        # chained: whether the request was ever sent is read from the cause
        raise TransientError(f"Alertmanager {method} {path} at {url} failed: "
                             f"{type(exc).__name__}: {exc}", unapplied=read) from exc


def _matcher(name: str, value: Any) -> str:
    """`name="value"` for Alertmanager's `filter`, the value escaped as its matcher parser
    reads it: a label value holding a quote or a backslash is matched as itself, not refused
    with a 400 (which failed the step whatever the alert's state)."""
    escaped = str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'{name}="{escaped}"'


async def alert_firing(backends: Any, alert: Alert) -> bool:
    """Is this alert (by fingerprint, else by labels) still active at Alertmanager?"""
    filters = [("filter", _matcher("alertname", alert.alertname)), ("active", "true"),
               ("silenced", "true"), ("inhibited", "true")]
    active = await _call(backends, "GET", "/api/v2/alerts", params=filters) or []
    return any(a.get("fingerprint") == alert.fingerprint or a.get("labels") == alert.labels
               for a in active)


class AlertStatus(Action):
    name = "alertmanager.alert_status"
    summary = "Whether this step's alert is still firing at Alertmanager."
    params = {"alertname": Param("string", required=True),
              "matchers": Param("mapping", description="label equality filters")}

    def describe(self, params: dict[str, Any]) -> str:
        return f"ask Alertmanager whether {params['alertname']} is still firing"

    async def run(self, params: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
        filters = [("filter", _matcher("alertname", params["alertname"])), ("active", "true")]
        filters += [("filter", _matcher(k, v)) for k, v in (params.get("matchers") or {}).items()]
        active = await _call(ctx.backends, "GET", "/api/v2/alerts", params=filters) or []
        return {"firing": bool(active), "count": len(active)}


class Silence(Action):
    name = "alertmanager.silence"
    summary = "Create a silence (or expire one by id) through the Alertmanager v2 API."
    mutating = True
    params = {
        "matchers": Param("mapping", description="label -> exact value; required to create"),
        "duration": Param("duration", default=3600.0, minimum=60, description="at most 24h"),
        "comment": Param("string", default="silenced by remediator"),
        "expire_id": Param("string", description="expire this silence instead of creating one"),
    }

    alert_params = ("matchers", "expire_id")

    def repeatable(self, params: dict[str, Any]) -> bool:
        return bool(params.get("expire_id"))  # expiring twice is harmless; creating is not

    def check(self, params: dict[str, Any]) -> list[str]:
        if not params.get("expire_id") and not params.get("matchers"):
            return ["either matchers (to create) or expire_id (to expire) is required"]
        if not params.get("expire_id") and params["duration"] > MAX_SILENCE:
            return [f"duration {params['duration']:g}s is longer than a silence may last "
                    f"({MAX_SILENCE:g}s); a problem that outlasts it needs a human"]
        return []

    def check_for_alert(self, params: dict[str, Any], labels: Mapping[str, str]) -> list[str]:
        """A silence covers the alert being remediated and nothing wider: its matchers hold
        every label of that alert, with the alert's values (more labels only narrow it)."""
        if params.get("expire_id"):
            return []
        matchers = {k: str(v) for k, v in (params.get("matchers") or {}).items()}
        wider = sorted(k for k, v in labels.items() if matchers.get(k) != v)
        if wider:
            return [f"the silence must match the alert's own labels; it does not pin "
                    f"{', '.join(wider)} to the alert's values, so it could hide other alerts"]
        return []

    def describe(self, params: dict[str, Any]) -> str:
        if params.get("expire_id"):
            return f"would expire Alertmanager silence {params['expire_id']}"
        shown = ",".join(f'{k}="{v}"' for k, v in params["matchers"].items())
        return f"would silence {{{shown}}} for {params['duration']:g}s: {params['comment']}"

    async def run(self, params: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
        if params.get("expire_id"):
            await _call(ctx.backends, "DELETE", f"/api/v2/silence/{params['expire_id']}")
            return {"expired": params["expire_id"]}
        now = datetime.fromtimestamp(ctx.backends.clock(), UTC)  # not this node's own clock
        body = {
            "matchers": [{"name": k, "value": str(v), "isRegex": False, "isEqual": True}
                         for k, v in params["matchers"].items()],
            "startsAt": now.isoformat(),
            "endsAt": (now + timedelta(seconds=params["duration"])).isoformat(),
            "createdBy": "remediator", "comment": f"{params['comment']} (execution "
                                                 f"{ctx.execution_id})",
        }
        answer = await _call(ctx.backends, "POST", "/api/v2/silences", json=body)
        return {"silence_id": answer["silenceID"], "ends_at": body["endsAt"]}
