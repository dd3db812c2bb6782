"""The aiohttp app: webhook intake, the executions API, metrics, health, reload.

`POST /alerts` answers 202 only once the alerts are durably in the store; it never answers
5xx because a remediation failed (remediation happens later, off the request path), only
when the store cannot accept the alerts — which is exactly when Alertmanager should retry.
"""

from __future__ import annotations

import base64
import hmac
import logging
import time

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .alerts import PayloadError, parse_notification
from .playbooks.validate import RulesError
from .service import Service
from .store.base import StoreUnavailable

log = logging.getLogger("remediator.server")

SERVICE = web.AppKey("service", Service)


def build_app(service: Service) -> web.Application:
    # aiohttp enforces the body limit itself (413) before the handler reads anything.
    app = web.Application(client_max_size=service.config.max_body_bytes)
    app[SERVICE] = service
    app.router.add_post("/alerts", receive_alerts)
    app.router.add_get("/api/v1/executions", list_executions)
    app.router.add_get("/api/v1/executions/{id}", get_execution)
    app.router.add_post("/api/v1/executions/{id}/approve", approve)
    app.router.add_post("/api/v1/executions/{id}/reject", approve)
    app.router.add_post("/api/v1/pause", pause)
    app.router.add_post("/api/v1/resume", pause)
    app.router.add_post("/api/v1/circuits/reset", reset_circuit)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/-/healthy", healthy)
    app.router.add_get("/-/ready", ready)
    app.router.add_post("/-/reload", reload)
    return app


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def authorized(request: web.Request) -> bool:
    """Bearer token or basic auth, compared in constant time, as Alertmanager sends them."""
    cfg = request.app[SERVICE].config
    if cfg.allow_unauthenticated:
        return True
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and cfg.webhook_token:
        return hmac.compare_digest(value.strip().encode(), cfg.webhook_token.encode())
    if scheme.lower() == "basic" and cfg.basic_auth_username:
        try:
            user, _, password = base64.b64decode(value).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        return hmac.compare_digest(user.encode(), cfg.basic_auth_username.encode()) & \
            hmac.compare_digest(password.encode(), cfg.basic_auth_password.encode())
    return False


def _caller(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("basic "):
        try:
            return base64.b64decode(header[6:]).decode().partition(":")[0]
        except (ValueError, UnicodeDecodeError):
            pass
    return request.headers.get("X-Remediator-User") or request.remote or "api"


async def receive_alerts(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    started = time.perf_counter()
    response = await _receive(request, service)
    service.metrics.webhook_requests.labels(str(response.status)).inc()
    if response.status == 202:
        service.metrics.ack_seconds.observe(time.perf_counter() - started)
    return response


async def _receive(request: web.Request, service: Service) -> web.Response:
    if not authorized(request):
        return _error(401, "missing or invalid credentials (bearer token or basic auth)")
    if request.content_type != "application/json":
        return _error(415, f"content type must be application/json, got {request.content_type!r}")
    if not service.ready:
        return _error(503, "not ready: starting or shutting down")
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return _error(413, f"body exceeds {service.config.max_body_bytes} bytes")
    try:
        notification = parse_notification(body)
    except PayloadError as exc:
        return _error(400, str(exc))
    try:
        result = await service.intake(notification)
    except StoreUnavailable as exc:
        log.error("store cannot accept alerts: %s", exc)
        return _error(503, f"store cannot accept alerts now: {exc}")
    return web.json_response({"accepted": result.accepted, "duplicates": result.duplicates},
                             status=202)


async def list_executions(request: web.Request) -> web.Response:
    q = request.query
    try:
        limit = min(int(q.get("limit", "100")), 1000)
    except ValueError:
        return _error(400, "limit must be an integer")
    filters = {k: q[k] for k in ("outcome", "playbook", "alertname", "fingerprint") if k in q}
    items = await request.app[SERVICE].store.list_executions(limit, **filters)
    return web.json_response({"executions": items})


async def get_execution(request: web.Request) -> web.Response:
    decision = await request.app[SERVICE].store.get_execution(request.match_info["id"])
    if decision is None:
        return _error(404, f"no execution {request.match_info['id']!r}")
    return web.json_response(decision)


async def approve(request: web.Request) -> web.Response:
    if not authorized(request):
        return _error(401, "missing or invalid credentials")
    approving = request.path.endswith("/approve")
    try:
        decision = await request.app[SERVICE].approve(request.match_info["id"], _caller(request),
                                                      approve=approving,
                                                      step=request.query.get("step") or None)
    except KeyError as exc:
        return _error(404, f"no execution {exc}")
    except ValueError as exc:
        return _error(409, str(exc))
    return web.json_response(decision)


async def pause(request: web.Request) -> web.Response:
    if not authorized(request):
        return _error(401, "missing or invalid credentials")
    paused = request.path.endswith("/pause")
    store = request.app[SERVICE].store
    await store.put_state("paused", {"paused": paused, "by": _caller(request), "at": time.time()})
    log.warning("automation %s by %s", "PAUSED" if paused else "resumed", _caller(request))
    return web.json_response({"paused": paused})


async def reset_circuit(request: web.Request) -> web.Response:
    if not authorized(request):
        return _error(401, "missing or invalid credentials")
    target = request.query.get("target", "")
    if not target:
        return _error(400, "target query parameter is required (namespace/kind/name)")
    playbook = request.query.get("playbook", "")
    store = request.app[SERVICE].store
    circuits = [key for key in await store.list_state("circuit:")
                if key.endswith(f":{target}") and (not playbook or key == f"circuit:{playbook}:{target}")]
    for key in circuits:
        await store.put_state(key, None)
    log.warning("circuits %s reset by %s", circuits, _caller(request))
    return web.json_response({"reset": [key.split(":", 1)[1] for key in circuits]})


async def metrics(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    body = generate_latest(service.metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def healthy(request: web.Request) -> web.Response:
    return web.Response(text="Healthy.\n")


async def ready(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    if service.ready and service.store.is_open:  # rules are loaded before ready is set
        return web.Response(text="Ready.\n")
    return web.Response(text="Not ready.\n", status=503)


async def reload(request: web.Request) -> web.Response:
    if not authorized(request):
        return _error(401, "missing or invalid credentials")
    try:
        message = request.app[SERVICE].reload()
    except RulesError as exc:
        return web.json_response({"error": "rules refused, previous set still serving",
                                  "problems": [str(p) for p in exc.problems]}, status=400)
    return web.json_response({"status": message})
