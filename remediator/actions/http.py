"""`http.request`: probe an endpoint and check its status and JSON fields."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp

from .base import Action, ActionContext, ActionError, Param, TransientError

_SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
_BODY_EXCERPT = 2048


class HttpRequest(Action):
    name = "http.request"
    summary = "Send an HTTP request; fail unless the status and JSON fields are as expected."
    params = {
        "url": Param("string", required=True, kind="url"),
        "method": Param("string", default="GET",
                        choices=("GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE")),
        "expect_status": Param("list", default=[200], description="acceptable status codes"),
        "expect_json": Param("mapping", description="dotted JSON path -> expected value"),
        "headers": Param("mapping"),
        "json": Param("any", description="request body, sent as JSON"),
        "timeout": Param("duration", default=10.0, minimum=0.1),
    }

    def mutates(self, params: dict[str, Any]) -> bool:
        return params.get("method", "GET") not in _SAFE_METHODS

    def repeatable(self, params: dict[str, Any]) -> bool:
        # PUT and DELETE are idempotent in HTTP (RFC 9110 9.2.2); POST and PATCH are not.
        return params.get("method", "GET") not in ("POST", "PATCH")

    def describe(self, params: dict[str, Any]) -> str:
        expect = f"expect status in {params['expect_status']}"
        if params.get("expect_json"):
            expect += " and " + ", ".join(f"{k} == {v!r}" for k, v in params["expect_json"].items())
        verb = "would send" if self.mutates(params) else "probe"
        return f"{verb} {params['method']} {params['url']}, {expect}"

    def check(self, params: dict[str, Any]) -> list[str]:
        bad = [s for s in params["expect_status"] if not isinstance(s, int) or not 100 <= s <= 599]
        return [f"expect_status must hold HTTP status codes, got {bad}"] if bad else []

    def is_transient(self, exc: BaseException) -> bool:
        return isinstance(exc, TransientError | asyncio.TimeoutError | aiohttp.ClientConnectionError)

    async def run(self, params: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
        started = time.monotonic()
        timeout = aiohttp.ClientTimeout(total=params["timeout"])
        async with ctx.backends.http().request(
            params["method"], params["url"], headers=params.get("headers"),
            json=params.get("json"), timeout=timeout, allow_redirects=False,
        ) as resp:
            raw = await resp.content.read(_BODY_EXCERPT * 64)
        result: dict[str, Any] = {
            "status": resp.status,
            "elapsed_seconds": round(time.monotonic() - started, 4),
            "body": raw[:_BODY_EXCERPT].decode("utf-8", "replace"),
        }
        try:
            result["json"] = json.loads(raw)
        except ValueError:
            result["json"] = None
        if resp.status not in params["expect_status"]:
            error = TransientError if resp.status == 429 or resp.status >= 500 else ActionError
            raise error(f"{params['method']} {params['url']} returned {resp.status}, "
                        f"expected {params['expect_status']}", result)
        for path, expected in (params.get("expect_json") or {}).items():
            actual = _dig(result["json"], path)
            if actual != expected:
                raise ActionError(f"{params['url']}: JSON {path} is {actual!r}, "
                                  f"expected {expected!r}", result)
        return result


def _dig(data: Any, path: str) -> Any:
    for part in path.split("."):
        if isinstance(data, dict):
            data = data.get(part)
        elif isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        else:
            return None
    return data
