"""The aiohttp app: webhook intake, the executions API, metrics, health, reload.

`POST /alerts` answers 202 only once the alerts are durably in the store; it never answers
5xx because a remediation failed (remediation happens later, off the request path), only
when the store cannot accept the alerts — which is exactly when Alertmanager should retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .. import console, redact, turns
from ..alerts import PayloadError, parse_notification
from ..auth import ANONYMOUS, NOT_BY_ADDRESS, PasswordChecksBusy, Principal, Users, named_by_address
from ..playbooks.validate import RulesError
from ..service import Resuming, Service
from ..store.base import OUTCOMES, StoreUnavailable
from . import content_coding

log = logging.getLogger("remediator.server")

SERVICE = web.AppKey("service", Service)
USERS = web.AppKey("users", Users)
PRINCIPAL = web.RequestKey("principal", Principal)  # who is calling (set by `guard`)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def build_app(service: Service) -> web.Application:
    # aiohttp enforces the body limit itself (413) before the handler reads anything, and
    # leaves a body's Content-Encoding to us (content_coding.py says why).
    cfg = service.config
    app = web.Application(client_max_size=cfg.max_body_bytes, middlewares=[guard],
                          handler_args={"auto_decompress": False})
    app[SERVICE] = service
    app[USERS] = Users(cfg.operators, cfg.webhook_token, cfg.basic_auth_username,
                       cfg.basic_auth_password, cfg.allow_unauthenticated)
    app.on_cleanup.append(_close_users)
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
    console.setup(app, service, app[USERS])
    return app


async def _close_users(app: web.Application) -> None:
    app[USERS].close()


def _error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers or None)


# Who may call what. Routes not listed need an operator: a new route is closed by default.
_OPEN = {"/metrics", "/-/healthy", "/-/ready"}  # Prometheus convention; nothing secret in them
_WEBHOOK = {"/alerts"}


def _needs(request: web.Request) -> str | None:
    resource = request.match_info.route.resource
    if resource is None or resource.canonical in _OPEN:
        return None  # unknown routes fall through to 404/405
    if resource.canonical in _WEBHOOK:
        return "webhook"
    if resource.canonical == "/" or resource.canonical.startswith(console.PREFIX):
        return None  # the console checks its session itself (console.py: `_who`)
    if request.method in ("GET", "HEAD") and resource.canonical.startswith("/api/v1/"):
        return "viewer"
    return "operator"


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every request's one middleware. 401 without valid credentials, 403 with credentials
    that lack the role; a store that cannot answer is a 503 on every endpoint (approve, API
    reads, console), never a 500: the work is not lost, the caller should retry; a body in
    a Content-Encoding the route does not take is a 415 naming those it does, one that
    cannot be read (its framing) a 400, one not all received within `body_timeout` a 408
    (a webhook's a 503, which Alertmanager retries; the connection closed). For
    /alerts also `remediator_webhook_requests_total{code}` for every answer, 401s included,
    and processing keeps to its share of the loop while one is in flight (turns.py).

    One coroutine: three middlewares were three more, each behind aiohttp's wrapper, that
    every webhook entered and left (`test_hot_path.py` counts them)."""
    webhook = request.path == "/alerts"
    started = time.perf_counter()
    # A body that came with its header (a webhook's, nearly always) needs no deadline.
    deadline = None if request.content.is_eof() else _body_deadline(request)
    with turns.intake() if webhook else _NOT_A_WEBHOOK:
        need = _needs(request)
        try:
            principal = None if need is None else \
                await request.app[USERS].authenticate(request.headers.get("Authorization", ""))
            response = _refusal(request, principal, need) or _cross_site(request, principal, webhook) \
                or _undecodable(request, webhook)
            if response is None:
                if principal is not None:
                    request[PRINCIPAL] = principal
                response = await handler(request)
        except web.HTTPException as exc:  # a console page's answer (a redirect, a refusal)
            exc.headers["Server"] = SERVER
            if console.serves(request.path):
                console.security_headers(request, exc.headers)
            _unread_not_awaited(request, exc)
            raise
        except StoreUnavailable as exc:
            log.error("store unavailable answering %s %s: %s", request.method, request.path, exc)
            response = _error(503, f"store unavailable, retry: {exc}")
        except PasswordChecksBusy as exc:  # a flood of guesses: refused, not queued
            response = _error(429, str(exc), **{"Retry-After": "1"})
        except web.RequestPayloadError as exc:
            # A body whose framing is broken (chunked transfer coding) raises as it is read,
            # in the webhook's or a console form's handler.
            reason = getattr(exc.__cause__, "message", "") or str(exc)  # not "400, message:"
            response = _error(400, f"cannot read the request body: {reason}")
        except ConnectionResetError:
            # The client closed the connection mid-body (aiohttp's "Connection lost"): there is
            # no one to answer, nothing wrong here; it was an ERROR with a traceback.
            log.debug("%s %s from %s: the client closed the connection before its body was "
                      "read", request.method, request.path, request.remote)
            response = _error(CLIENT_CLOSED, "the client closed the connection mid-request")
        except BodyTimeout as exc:
            log.warning("%s %s from %s: %s", request.method, request.path, request.remote, exc)
            # Alertmanager retries a 5xx only: a notification whose body came too slowly is
            # sent again, not dropped until its repeat_interval (hours); a form is a 408.
            response = (_error(503, f"{exc}; send it again, at once", **{"Retry-After": "1"})
                        if webhook else _error(408, f"{exc}; send it at once"))
            response.force_close()  # the rest of the body is not waited for
        finally:
            if deadline is not None:
                deadline.cancel()
    _unread_not_awaited(request, response)
    response.headers["Server"] = SERVER
    if not webhook and request.path.startswith("/api/"):
        response.headers["Cache-Control"] = "no-store"  # decisions hold alerts and notes
    elif not webhook and not response.prepared and console.serves(request.path):
        console.security_headers(request, response.headers)
    if webhook:
        counts = request.app[SERVICE].metrics.intake
        counts.answered(response.status)
        if response.status == 202:
            counts.acknowledged(time.perf_counter() - started)
    return response


_NOT_A_WEBHOOK = contextlib.nullcontext()
# What every answer says serves it: aiohttp's default named its version (and Python's).
SERVER = "remediator"
# What a request whose client closed the connection mid-body counts as (nginx's code for it):
# never sent, there is no one to send it to.
CLIENT_CLOSED = 499


class Unread(TimeoutError):
    """What the rest of a body refused before it was read raises: a TimeoutError, so aiohttp's
    lingering close gives up on it (as on its own timeout) and closes the connection."""


def _unread_not_awaited(request: web.Request, response: web.StreamResponse) -> None:
    """An answer given before its body has all arrived (a 401, 403, 413, 415, a redirect to the
    login form) closes the connection once sent: aiohttp would otherwise read what is left for
    up to 10 s (its lingering close), and a client without credentials sending it a byte at a
    time held a connection, and the loop's time, that long per request."""
    if request.content.is_eof() or response.status < 300:
        return
    response.force_close()
    request.content.set_exception(Unread("the request was answered before its body was read"))


class BodyTimeout(TimeoutError):
    """A request body not all received within `body_timeout` of its header, raised by the
    handler's read of it. A TimeoutError: aiohttp, reading what is left of it after the
    answer (its lingering close), takes it for its own timeout and closes the connection."""


def _body_deadline(request: web.Request) -> asyncio.TimerHandle:
    """Fail the reads of a body still arriving `body_timeout` from now (aiohttp has no
    deadline of its own for it). A body read by then is left alone: whatever its handler does
    next (an intake waiting on the store, an alert about to be acknowledged) is never cut."""
    seconds = request.app[SERVICE].config.body_timeout

    def expire() -> None:
        if not request.content.is_eof():
            request.content.set_exception(BodyTimeout(
                f"the request body was not received within {seconds:g}s of its header "
                "(body_timeout)"))

    return asyncio.get_running_loop().call_later(seconds, expire)


_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _cross_site(request: web.Request, principal: Principal | None,
                webhook: bool = False) -> web.Response | None:
    """The 403 of a change a browser sent from another site, with or without a credential:
    a Basic credential the browser has cached goes with a cross-site form's POST (pause,
    approve), and a login form posted from elsewhere signs the browser into an account of
    the attacker's choosing. A browser says where a request comes from (Sec-Fetch-Site;
    Origin, older ones); Alertmanager, curl and the CLI say neither.

    Without a credential (--allow-unauthenticated), also a request naming this server by a
    DNS name (rebinding), and a change whose Origin is not this host: on a laptop any page it
    opens may POST a form to 127.0.0.1 (nothing preflighted) and pause, reset or approve."""
    if principal is ANONYMOUS:
        browser = "Origin" in request.headers or "Sec-Fetch-Site" in request.headers
        # Alertmanager posts by a service's name (compose, Kubernetes) and says neither; a
        # 403 would drop its alerts, not retried. A browser's POST always carries its Origin.
        if not named_by_address(request.host) and (browser or not webhook):
            return _error(403, NOT_BY_ADDRESS)
    if request.method in _SAFE_METHODS:
        return None
    origin, fetch_site = request.headers.get("Origin"), request.headers.get("Sec-Fetch-Site")
    if fetch_site in ("cross-site", "same-site"):
        pass
    elif principal is ANONYMOUS or fetch_site is None:
        # Origin against Host: a browser that says no Sec-Fetch-Site; with a credential its
        # word is taken when it says same-origin (a proxy may rewrite Host: nginx's default).
        if origin is None or _netloc(origin) in _own_hosts(request):
            return None
    else:
        return None
    if principal is ANONYMOUS:
        return _error(403, "a change without credentials sent by a browser from another site "
                      f"({origin or 'Sec-Fetch-Site'}) is refused: present a credential")
    return _error(403, f"a change sent by a browser from another site ({origin or fetch_site}) "
                  "is refused: make it from the console's own pages")


def _own_hosts(request: web.Request) -> set[str]:
    """The hosts (and ports) a page of ours comes from: the request's, and `external_url`'s
    (what a proxy in front serves us as). Never "" (`Origin: null`, a sandboxed page)."""
    own = {request.host.lower(), _netloc(request.app[SERVICE].config.external_url or "")}
    return own - {""}


def _netloc(url: str) -> str:
    """`url`'s host and port, lowercased; "" for one that cannot be split (`http://[`)."""
    try:
        return urlsplit(url).netloc.lower()
    except ValueError:
        return ""


def _undecodable(request: web.Request, webhook: bool) -> web.Response | None:
    """The 415 of a body in a Content-Encoding this route does not take, before it is read."""
    header = request.headers.get("Content-Encoding")
    if header is None:  # nearly every request
        return None
    message = content_coding.refusal(content_coding.coding(header), content_coding.WEBHOOK
                                     if webhook else content_coding.OTHER)
    return None if message is None else _error(415, message)


def _refusal(request: web.Request, principal: Principal | None, need: str | None
             ) -> web.Response | None:
    """The 401 or 403 a caller who needs `need` gets, or None (`need` None: anyone)."""
    if need is None:
        return None
    if principal is None:
        return _error(401, "missing or invalid credentials (bearer token or basic auth)",
                      **{"WWW-Authenticate": 'Bearer realm="remediator"'})
    if not principal.may(need):
        if principal.role == "webhook":
            return _error(403, "the webhook credential may only POST /alerts")
        return _error(403, f"{principal.described()}; "
                      f"{request.method} {request.path} needs the {need} role")
    return None


def _json(data: object, status: int = 200) -> web.Response:
    """Decisions as the API serves them: redacted again, whatever an older version stored."""
    return web.json_response(redact.value(data), status=status)


def _actor(request: web.Request) -> str:
    """The authenticated caller's name: what approvals, pauses and resets record."""
    return request[PRINCIPAL].name


async def receive_alerts(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    if request.content_type != "application/json":
        return _error(415, f"content type must be application/json, got {request.content_type!r}")
    if not service.ready:
        return _error(503, "not ready: starting or shutting down")
    try:
        body = await request.read()
        if (header := request.headers.get("Content-Encoding")) is not None:  # (accepted)
            body = content_coding.decoded(body, content_coding.coding(header),
                                          service.config.max_body_bytes)
    except web.HTTPRequestEntityTooLarge:
        return _error(413, f"body exceeds {service.config.max_body_bytes} bytes")
    except content_coding.BodyError as exc:
        return _error(exc.status, f"cannot read the request body: {exc}")
    try:
        notification = parse_notification(body)
    except PayloadError as exc:
        return _error(400, str(exc))
    try:
        result = await service.intake(notification)
    except StoreUnavailable as exc:
        log.error("store cannot accept alerts: %s", exc)
        return _error(503, f"store cannot accept alerts now: {exc}")
    # Two integers: written directly (json_response's encoding was ~5 us of each webhook).
    return web.Response(text=f'{{"accepted": {result.accepted:d}, "duplicates": '
                        f'{result.duplicates:d}}}', status=202, content_type="application/json")


async def list_executions(request: web.Request) -> web.Response:
    q = request.query
    try:
        limit = int(q.get("limit", "100"))
    except ValueError:
        limit = 0
    if not 1 <= limit <= 1000:
        return _error(400, f"limit must be an integer from 1 to 1000, got {q['limit']!r}")
    if "outcome" in q and q["outcome"] not in OUTCOMES:
        return _error(400, f"outcome must be one of {', '.join(OUTCOMES)}; got "
                      f"{json.dumps(q['outcome'][:40])}")
    filters = {k: q[k] for k in ("outcome", "playbook", "alertname", "fingerprint") if k in q}
    items = await request.app[SERVICE].store.list_executions(limit, **filters)
    return _json({"executions": items})


async def get_execution(request: web.Request) -> web.Response:
    decision = await request.app[SERVICE].store.get_execution(request.match_info["id"])
    if decision is None:
        return _error(404, f"no execution {request.match_info['id']!r}")
    return _json(decision)


async def approve(request: web.Request) -> web.Response:
    approving = request.path.endswith("/approve")
    service, status = request.app[SERVICE], 200
    try:
        decision = await service.approve(request.match_info["id"], _actor(request),
                                         approve=approving, step=request.query.get("step") or None,
                                         answer_within=service.approval_answer_within)
    except KeyError as exc:
        return _error(404, f"no execution {exc}")
    except ValueError as exc:
        return _error(409, str(exc))
    except Resuming as running:  # decided; the run goes on: 202, as a webhook's work does
        decision, status = running.decision, 202
    log.warning("execution %s %s by %s", request.match_info["id"],
                "approved" if approving else "rejected", _actor(request),
                extra={"execution_id": request.match_info["id"]})
    return _json(decision, status)


async def pause(request: web.Request) -> web.Response:
    paused, service = request.path.endswith("/pause"), request.app[SERVICE]
    await service.pause(paused, _actor(request))
    if service.config.guards.paused:  # `{"paused": false}` here read as running, and was not
        return web.json_response({"paused": True, "paused_by_configuration": True, "detail": (
            "guards.paused (REMEDIATOR_PAUSED) keeps automation paused: this "
            f"{'pause' if paused else 'resume'} is recorded, and applies once the "
            "configuration no longer pauses")})
    return web.json_response({"paused": paused})


async def reset_circuit(request: web.Request) -> web.Response:
    target, playbook = request.query.get("target", ""), request.query.get("playbook", "")
    if not target:
        return _error(400, "target query parameter is required: the circuit's target as its "
                           "decisions name it (namespace/kind/name, or kind/name)")
    service = request.app[SERVICE]
    reset = await service.reset_circuits(target, playbook, _actor(request))
    if not reset:
        # A 200 with nothing reset read as success at 3 a.m.: say what is open instead.
        error, circuits = await none_reset(service, target, playbook)
        return web.json_response({"error": error, "open": circuits}, status=404)
    return web.json_response({"reset": reset})


async def none_reset(service: Service, target: str, playbook: str
                     ) -> tuple[str, list[dict[str, str]]]:
    """Why a reset closed nothing, and the circuits open now (the API's and the console's)."""
    circuits = [{"playbook": c["playbook"], "target": c["target"]}
                for c in await service.open_circuits()]
    named = ", ".join(f"{c['playbook']} on {c['target']}" for c in circuits) or "none"
    what = f"{playbook} on {target}" if playbook else target
    return f"no circuit of {what} to reset; open now: {named}", circuits


async def metrics(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    await service.count_pending()
    body = generate_latest(service.metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def healthy(request: web.Request) -> web.Response:
    return web.Response(text="Healthy.\n")


async def ready(request: web.Request) -> web.Response:
    """Whether this replica acknowledges alerts now: a Service sends Alertmanager to ready
    replicas only. Not while the store refuses intake's commit (a read-only database, a
    disk full, a lock held past its wait), when every webhook here would be a 503; `/-/healthy`
    stays 200 meanwhile (a restart would not give the store its writes back)."""
    service = request.app[SERVICE]
    if not service.ready:  # rules are loaded before ready is set
        return _not_ready("starting or shutting down")
    refused = await service.refusal()  # first: a probe that passes finds the store back
    if not service.store.is_open:
        return _not_ready("the store cannot be reached")
    if refused is not None:
        return _not_ready(f"the store refuses to acknowledge alerts (webhooks are answered "
                          f"503): {redact.text(refused)}")
    return web.Response(text="Ready.\n")


def _not_ready(reason: str) -> web.Response:
    return web.Response(text=f"Not ready: {reason}.\n", status=503)


async def reload(request: web.Request) -> web.Response:
    try:
        message = await request.app[SERVICE].reload()
    except RulesError as exc:
        return web.json_response({"error": "rules refused, previous set still serving",
                                  "problems": [str(p) for p in exc.problems]}, status=400)
    return web.json_response({"status": message})
