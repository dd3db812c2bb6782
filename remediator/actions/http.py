"""`http.request`: probe an endpoint and check its status and JSON fields. What the answer
said is recorded (body excerpt, parsed JSON) through secret_text.py's filter."""

from __future__ import annotations

import asyncio
import os
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from .. import redact
from ..templating import is_template, validators
from . import secret_text
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

_SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
_BODY_EXCERPT = 2048
# A header with one of these names, written literally in a playbook, is a credential in git.
_CREDENTIAL_HEADER = re.compile(r"(?i)authorization|cookie|.*(token|secret|api-?key|password).*")


class HttpRequest(Action):
    name = "http.request"
    summary = "Send an HTTP request; fail unless the status and JSON fields are as expected."
    params = {
        "url": Param("string", required=True, kind="url"),
        "method": Param("string", default="GET",
                        choices=("GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE")),
        "expect_status": Param("list", default=[200], description="acceptable status codes"),
        "expect_json": Param("mapping", description="dotted JSON path -> expected value"),
        "headers": Param("mapping", kind="http_header",
                         description="header name: value; a value without control characters "
                         "(a line break in an alert's text refuses the step)"),
        "headers_from": Param("mapping", literal=True,
                              description="secret headers read at call time, never stored: "
                              "{Authorization: {file: PATH | env: NAME, prefix: 'Bearer '}}"),
        "json": Param("any", description="request body, sent as JSON"),
        "allow_hosts": Param("list", literal=True,
                             description="the hosts (host or host:port) a URL whose host is "
                             "templated may reach; without it only the path and query may be"),
        "timeout": Param("duration", default=10.0, minimum=0.1),
    }

    def mutates(self, params: dict[str, Any]) -> bool:
        return params.get("method", "GET") not in _SAFE_METHODS

    def scope(self, params: dict[str, Any]) -> list[tuple[str, str]]:
        """A mutating request names its host:port, which guards.http.allow must list."""
        if not self.mutates(params):
            return []
        parts = urlsplit(params["url"])
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return [("http_host", f"{(parts.hostname or '').lower()}:{port}")]

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
        problems = [f"expect_status must hold HTTP status codes, got {bad}"] if bad else []
        for name, ref in (params.get("headers_from") or {}).items():
            where = f"headers_from.{name}"
            if not validators.HEADER_NAME.fullmatch(str(name)):
                problems.append(f"{where}: not a valid header name")
            if not isinstance(ref, dict) or len({"file", "env"} & set(ref)) != 1 \
                    or set(ref) - {"file", "env", "prefix"}:
                problems.append(f"{where}: must be {{file: PATH}} or {{env: NAME}}, "
                                "optionally with prefix")
            elif not all(isinstance(v, str) and v for v in ref.values() if v != ref.get("prefix")):
                problems.append(f"{where}: file or env must be a non-empty string")
            if name.lower() in {h.lower() for h in params.get("headers") or {}}:
                problems.append(f"{where}: also set in headers; set it in one place")
        return problems + _host_problems(params["url"], params.get("allow_hosts"))

    def advise(self, params: dict[str, Any]) -> list[tuple[str, str]]:
        return [("headers", f"header {name!r} looks like a credential written in the playbook; "
                            f"read it at call time instead: headers_from: {{{name}: {{file: PATH}}}}")
                for name, value in (params.get("headers") or {}).items()
                if _CREDENTIAL_HEADER.fullmatch(str(name)) and not is_template(str(value))]

    def is_transient(self, exc: BaseException) -> bool:
        return isinstance(exc, TransientError | asyncio.TimeoutError | aiohttp.ClientConnectionError)

    async def run(self, params: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
        started = time.monotonic()
        timeout = aiohttp.ClientTimeout(total=params["timeout"])
        headers = {**(params.get("headers") or {}), **_secret_headers(params.get("headers_from"))}
        async with ctx.backends.http().request(
            params["method"], params["url"], headers=headers or None,
            json=params.get("json"), timeout=timeout, allow_redirects=False,
        ) as resp:
            raw = await resp.content.read(_BODY_EXCERPT * 64)
        result: dict[str, Any] = {
            "status": resp.status,
            "elapsed_seconds": round(time.monotonic() - started, 4),
        }
        # From here on the server has answered: only a refusal (4xx) proves it did nothing;
        # any other unexpected answer may follow a change it made.
        refused = 400 <= resp.status < 500
        answer: Any = None
        try:
            answer = parse_json(raw)
        except UnsafeJSON as exc:  # kept out of the record; the body excerpt stays
            result.update(body=await asyncio.to_thread(_excerpt, raw), json=None)
            raise ActionError(f"{params['method']} {params['url']}: reply refused: {exc}",
                              result, unapplied=refused) from None
        except ValueError:
            pass
        # What is recorded has the answer's credentials withheld (an admin API's `token`, a
        # text's `password=`); checks compare what the server said. Off the loop: 128 KiB.
        result.update(await asyncio.to_thread(_recorded, raw, answer))
        if resp.status not in params["expect_status"]:
            message = (f"{params['method']} {params['url']} returned {resp.status}, "
                       f"expected {params['expect_status']}")
            if resp.status == 429 or resp.status >= 500:  # a 429 was refused: never applied
                raise TransientError(message, result, unapplied=refused,
                                     retry_after=retry_after(resp.headers.get("Retry-After")))
            raise ActionError(message, result, unapplied=refused)
        for path, expected in (params.get("expect_json") or {}).items():
            if _dig(answer, path) != expected:
                raise ActionError(f"{params['url']}: JSON {path} is "
                                  f"{_dig(result['json'], path)!r}, expected {expected!r}",
                                  result, unapplied=refused)
        return result


def _excerpt(raw: bytes) -> str:
    """The body's start, its credentials masked as in exec output (a JSON string cut at the
    end too; a line that is one opaque key-like string, as a token endpoint answers)."""
    return secret_text.output(raw[:_BODY_EXCERPT].decode("utf-8", "replace"))


def _recorded(raw: bytes, answer: Any) -> dict[str, Any]:
    return {"body": _excerpt(raw), "json": secret_text.json_value(answer)}


def _secret_headers(spec: dict[str, dict[str, str]] | None) -> dict[str, str]:
    """Read `headers_from` now, for this call only: the values are never stored or shown."""
    out: dict[str, str] = {}
    for name, ref in (spec or {}).items():
        if "file" in ref:
            try:
                secret = Path(ref["file"]).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ActionError(f"headers_from {name}: cannot read {ref['file']}: "
                                  f"{exc.strerror}", unapplied=True) from None
        else:
            secret = os.environ.get(ref["env"], "").strip()
        if not secret:
            raise ActionError(f"headers_from {name}: {ref.get('file') or ref['env']} is empty "
                              "or not set", unapplied=True)
        redact.remember(secret)
        value = ref.get("prefix", "") + secret
        try:  # checked as it is read: the failure names the header, and nothing was sent
            validators.header_value(value)
        except ValueError as exc:  # the message shows a character, never the secret
            raise ActionError(f"headers_from {name}: {ref.get('file') or ref['env']} "
                              f"{exc}", unapplied=True) from None
        out[name] = value
    return out


def _host_problems(url: str, allowed: list[Any] | None) -> list[str]:
    """A URL whose host a template chose must name one of the listed hosts."""
    if not allowed:
        return []
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if host in allowed or (parts.port and f"{host}:{parts.port}" in allowed):
        return []
    return [f"{url!r}: host {host!r} is not in allow_hosts ({', '.join(map(str, allowed))})"]


def _dig(data: Any, path: str) -> Any:
    for part in path.split("."):
        if isinstance(data, dict):
            data = data.get(part)
        elif isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        else:
            return None
    return data
