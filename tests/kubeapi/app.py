"""The aiohttp application: request journal, auth, fault injection, discovery, watch.

Only this module is async. Resource semantics live in ``rest.py``; this layer
adds what sits in front of them in a real apiserver (authn, authz, discovery)
plus the test hooks (journal, faults).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import traceback
from typing import TYPE_CHECKING, Any

import yaml
from aiohttp import web

from . import errors, resources
from .faults import RecordedRequest
from .rbac import ADMIN
from .rest import Target, handle, k8s_verb, parse_path, truthy
from .selectors import SelectorError, parse_field_selector, parse_label_selector
from .table import to_table, wants_table

if TYPE_CHECKING:
    from .server import KubeAPIServer

_PUBLIC = {"/version", "/healthz", "/livez", "/readyz"}


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=json.dumps(body), content_type="application/json",
                        headers=headers)


def _error(exc: errors.ApiError, headers: dict[str, str] | None = None) -> web.Response:
    return _json(exc.code, exc.status(), headers)


def _decode(raw: bytes, content_type: str) -> Any:
    """Decode a request body; JSON and YAML only (no protobuf/CBOR, see ``_BINARY``)."""
    if not raw:
        return None
    if any(b in content_type for b in _BINARY):
        return raw
    text = raw.decode("utf-8", errors="replace")
    try:
        if "yaml" in content_type:
            return yaml.safe_load(text)
        return json.loads(text)
    except ValueError:
        return text


# Typed client-go clientsets (e.g. `kubectl create deployment`) send protobuf bodies.
# Decoding them needs the generated k8s .proto schemas, so they get 415 here.
_BINARY = ("protobuf", "cbor")


class App:
    """Builds the aiohttp application around a :class:`KubeAPIServer`'s state."""

    def __init__(self, server: KubeAPIServer) -> None:
        self.server = server

    def build(self) -> web.Application:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.dispatch)
        return app

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        srv = self.server
        raw = await request.read()
        ctype = request.headers.get("Content-Type", "")
        query = dict(request.query)
        body = _decode(raw, ctype)
        srv.requests.append(RecordedRequest(request.method, request.path, ctype, body, query))
        user = srv.user_for(request.headers.get("Authorization"))
        if user is None and srv.require_token and request.path not in _PUBLIC:
            return _error(errors.ApiError(401, "Unauthorized"))
        fault = srv.faults.take_http(request.method, request.path)
        if fault is not None and fault.applied:
            response = await self._serve_checked(request, query, body, ctype, user)
            await self._sleep(fault.delay)
            return response if fault.status is None else self._fault_response(fault)
        if fault is not None:
            if fault.delay:
                await self._sleep(fault.delay)
            if fault.status is not None:
                return self._fault_response(fault)
        return await self._serve_checked(request, query, body, ctype, user)

    async def _serve_checked(self, request: web.Request, query: dict[str, str], body: Any,
                             ctype: str, user: str | None) -> web.StreamResponse:
        if isinstance(body, bytes):
            return _error(errors.ApiError(
                415, f"the body of the request was in an unknown format - accepted media types "
                f"include: application/json, application/yaml (this test server cannot decode "
                f"{ctype})", "UnsupportedMediaType"))
        try:
            return await self._serve(request, query, body, ctype, user)
        except errors.ApiError as exc:
            return _error(exc)
        except SelectorError as exc:
            return _error(errors.ApiError(400, str(exc)))
        except Exception as exc:  # surface server bugs as InternalError, like the apiserver
            traceback.print_exc()
            return _error(errors.ApiError(500, f"Internal error occurred: {exc!r}"))

    async def _sleep(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while loop.time() < end and not self.server.stopping:
            await asyncio.sleep(min(0.05, end - loop.time()))

    @staticmethod
    def _fault_response(fault: Any) -> web.Response:
        headers = dict(fault.headers)
        if fault.body is not None:
            text = fault.body if isinstance(fault.body, str) else json.dumps(fault.body)
            return web.Response(status=fault.status, text=text, headers=headers,
                                content_type="application/json")
        return _error(errors.generic(fault.status, fault.message, fault.reason), headers)

    async def _serve(self, request: web.Request, query: dict[str, str], body: Any,
                     ctype: str, user: str | None) -> web.StreamResponse:
        path = request.path.rstrip("/") or "/"
        discovery = self._discovery(path, request)
        if discovery is not None:
            return discovery
        target = parse_path(path)
        if target is None:
            return web.Response(status=404, text="404 page not found\n")
        verb = k8s_verb(request.method, target, query)
        resource = f"{target.res.plural}/{target.sub}" if target.sub else target.res.plural
        denied = self.server.faults.take_rbac(verb, resource, target.namespace, target.name)
        if denied is None and user not in (ADMIN, None):
            allowed = self.server.rbac.allows(user, verb, target.res.group, resource,
                                              target.namespace, target.name)
            denied = None if allowed else verb
        if denied is not None:
            return _error(errors.forbidden(target.res, target.name or "", verb,
                                           target.namespace, target.sub,
                                           user or "system:anonymous"))
        if verb == "watch":
            return await self._watch(request, target, query)
        if target.sub == "exec":
            return await self.server.execs.handle(self.server, request, target)
        warnings: list[str] = []
        with self.server.store.lock:
            status, result = handle(self.server, request.method, target, query, body, ctype,
                                    warnings)
            if isinstance(result, str):
                return web.Response(status=status, text=result, content_type="text/plain")
            if (request.method == "GET" and target.sub is None
                    and wants_table(request.headers.get("Accept", ""))):
                objects = result.get("items", [result])
                result = to_table(target.res.plural, objects, str(self.server.store.rv))
            return _json(status, result, {"Warning": ", ".join(warnings)} if warnings else None)

    def _discovery(self, path: str, request: web.Request) -> web.Response | None:
        if path == "/version":
            return _json(200, resources.SERVER_VERSION)
        if path in ("/healthz", "/livez", "/readyz"):
            return web.Response(text="ok")
        if path == "/api":
            return _json(200, resources.api_versions(request.host))
        if path == "/apis":
            return _json(200, resources.api_group_list())
        if path == "/openapi/v3":
            return _json(200, resources.openapi_v3_paths())
        if path.startswith("/openapi/v3/"):
            doc = resources.openapi_v3(path.removeprefix("/openapi/v3/"))
            return _json(200, doc) if doc else web.Response(status=404, text="404 page not found\n")
        parts = path.strip("/").split("/")
        if parts[0] == "api" and len(parts) == 2:
            doc = resources.resource_list("", parts[1])
        elif parts[0] == "apis" and len(parts) == 2:
            doc = resources.api_group(parts[1])
        elif parts[0] == "apis" and len(parts) == 3:
            doc = resources.resource_list(parts[1], parts[2])
        else:
            return None
        if doc is None:
            return web.Response(status=404, text="404 page not found\n")
        return _json(200, doc)

    # ------------------------------------------------------------------ watch

    async def _watch(self, request: web.Request, target: Target,
                     query: dict[str, str]) -> web.StreamResponse:
        """Stream watch events as newline-delimited JSON until timeout or disconnect."""
        store, res = self.server.store, target.res
        labels = parse_label_selector(query.get("labelSelector"))
        fields = parse_field_selector(query.get("fieldSelector"), res.field_labels)

        def wanted(plural: str, ns: str, obj: dict[str, Any]) -> bool:
            return (plural == res.plural and (target.namespace in (None, ns))
                    and (target.name in (None, obj["metadata"]["name"]))
                    and labels(obj["metadata"].get("labels") or {}) and fields(obj))

        rv = query.get("resourceVersion") or ""
        initial_events = truthy(query.get("sendInitialEvents"))
        with store.lock:
            cursor = store.rv
            if rv not in ("", "0"):
                cursor = int(rv)
                if cursor < store.compacted:
                    return await self._gone(request, rv)
            initial = []
            if rv in ("", "0") or initial_events:
                initial = [json.dumps({"type": "ADDED", "object": o})
                           for o in store.list(res.plural, target.namespace)
                           if wanted(res.plural, target.namespace or "", o)]
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + float(query.get("timeoutSeconds") or 1800)
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            for line in initial:
                await resp.write(line.encode() + b"\n")
            if initial_events:
                bookmark = {"kind": res.kind, "apiVersion": res.api_version, "metadata": {
                    "resourceVersion": str(cursor),
                    "annotations": {"k8s.io/initial-events-end": "true"}}}
                await resp.write(json.dumps({"type": "BOOKMARK", "object": bookmark}).encode()
                                 + b"\n")
            while loop.time() < deadline and not self.server.stopping:
                if request.transport is None or request.transport.is_closing():
                    break
                with store.lock:
                    start = bisect.bisect_right(store.events, cursor, key=lambda e: e.rv)
                    batch = [(e.rv, json.dumps({"type": e.type, "object": e.obj}))
                             for e in store.events[start:] if wanted(e.plural, e.namespace, e.obj)]
                    cursor = max(cursor, store.rv)
                for _, line in batch:
                    await resp.write(line.encode() + b"\n")
                await asyncio.sleep(0.02)
        return resp

    async def _gone(self, request: web.Request, rv: str) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        status = errors.ApiError(410, f"too old resource version: {rv}", "Expired").status()
        await resp.write(json.dumps({"type": "ERROR", "object": status}).encode() + b"\n")
        return resp
