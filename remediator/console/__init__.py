"""The operator console under /ui: server-rendered pages over the same Service the API uses.

Reading works with JavaScript off; `console.js` only adds live updates (server-sent events)
and a confirmation dialog. Who may do what comes from the one user store (`auth.Users`): a
login form issues a signed session cookie (session.py); viewers read, operators act, and
every form carries the session's CSRF token. Every value shown passes through `redact` and
Jinja's autoescaping; notes are rendered from Markdown with raw HTML disabled.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import re
import urllib.parse
from collections import Counter
from datetime import UTC, datetime
from http.cookies import SimpleCookie
from importlib import resources
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from multidict import CIMultiDict

from .. import graphs, redact
from ..auth import (
    ANONYMOUS,
    NOT_BY_ADDRESS,
    PasswordChecksBusy,
    Principal,
    Users,
    named_by_address,
)
from ..guards import APPROVAL, PENDING
from ..playbooks.validate import RulesError
from ..service import Resuming, Service
from ..store.base import OUTCOMES, PAUSE, StoreUnavailable
from . import live
from .session import COOKIE, Sessions

if TYPE_CHECKING:
    import jinja2
    from markupsafe import Markup

log = logging.getLogger("remediator.console")

SESSIONS = web.AppKey("console_sessions", Sessions)
FEED = web.AppKey("console_feed", live.Feed)
ALERT_RULES = web.AppKey("console_alert_rules", graphs.AlertRules)
# Unauthenticated (--allow-unauthenticated): the value of this instance's forms cookie the
# request's forms are bound to, and one issued with this answer (set as it is prepared).
FORMS = web.RequestKey("console_forms", str)
NEW_FORMS = web.RequestKey("console_new_forms", str)
PREFIX = "/ui"
SINCE = {"1h": 3600, "24h": 86400, "7d": 7 * 86400}
LIST_LIMIT = 1000
DECIDED_SHOWN = 50  # decided approvals on the approvals page, newest first
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")



async def _close_feed(app: web.Application) -> None:
    await app[FEED].close()


@functools.cache
def _markdown() -> Any:
    """CommonMark with raw HTML off: a note quotes alert text, which must stay text.
    markdown-it also refuses javascript:/vbscript:/data: links. Imported on the first note
    shown, not at start-up."""
    from markdown_it import MarkdownIt
    return MarkdownIt("commonmark", {"html": False})


def _when(value: Any) -> str:
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return str(value or "").replace("T", " ").split(".")[0].rstrip("Z") + (" UTC" if value else "")


# Where a long name may wrap: between a lower-case letter or digit and a capital
# (ShopErrors|High), after a slash (namespace/|deployment/|name) and after an underscore
# (API_|DOWN: UPPER_SNAKE alert names broke mid-word). A hyphen is a break already.
_BREAKS = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[/_])")


def _breakable(value: Any) -> Markup:
    """A name, escaped, with `<wbr>` where it may wrap (console.js `breakable` for live rows):
    alert names and targets have no spaces, and broke anywhere or widened the list."""
    from markupsafe import Markup, escape

    return Markup("<wbr>").join(escape(part) for part in _BREAKS.split(str(value)))


@functools.cache
def _pages() -> jinja2.Environment:
    """The pages' templates, loaded when the first page is drawn (Jinja2 is not imported
    before `serve` is ready: templating._sandboxes)."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("remediator.console", "templates"),
                             autoescape=True)  # a missing optional field shows empty
    env.filters["when"] = _when
    env.filters["breakable"] = _breakable
    env.filters["pretty"] = lambda v: json.dumps(v, indent=2, sort_keys=True, default=str)
    return env


def setup(app: web.Application, service: Service, users: Users) -> None:
    cfg = service.config
    app[SESSIONS] = Sessions(users, service.store, cfg.console_session_secret,
                             cfg.console_session_ttl, cfg.console_cookie_secure,
                             clock=service.clock)
    app[FEED] = live.Feed(service.store)
    app[ALERT_RULES] = graphs.AlertRules()
    app.on_cleanup.append(_close_feed)
    r = app.router
    r.add_get("/", home)
    r.add_get(PREFIX, home)
    r.add_get(f"{PREFIX}/login", login_form)
    r.add_post(f"{PREFIX}/login", login)
    r.add_post(f"{PREFIX}/logout", logout)
    r.add_get(f"{PREFIX}/", decisions)
    r.add_get(f"{PREFIX}/events", events)
    r.add_get(f"{PREFIX}/executions/{{id}}", decision_page)
    r.add_get(f"{PREFIX}/executions/{{id}}/graph.svg", graph_svg)
    r.add_get(f"{PREFIX}/executions/{{id}}/{{verb:approve|reject}}", confirm)
    r.add_post(f"{PREFIX}/executions/{{id}}/{{verb:approve|reject}}", decide)
    r.add_get(f"{PREFIX}/approvals", approvals)
    r.add_get(f"{PREFIX}/control", control)
    r.add_post(f"{PREFIX}/control/{{verb:pause|resume|reload|reset}}", control_action)
    r.add_static(f"{PREFIX}/static", str(resources.files(__package__) / "static"),
                 append_version=True)
    r.add_route("*", f"{PREFIX}/{{tail:.*}}", not_found)  # last: what no route above serves


def serves(path: str) -> bool:
    """Whether `path` is the console's: its answers carry `security_headers`."""
    return path == "/" or path.startswith(PREFIX)


def security_headers(request: web.Request, headers: CIMultiDict[str]) -> None:
    """A console answer's headers, set by the server's middleware on what a handler returns
    or raises (and by `events` before its stream starts). Not an `on_response_prepare`
    signal: that ran for every response, each webhook's 202 too (~7 k instructions)."""
    headers["Content-Security-Policy"] = CSP
    headers["X-Frame-Options"] = "DENY"
    headers["X-Content-Type-Options"] = "nosniff"
    headers["Referrer-Policy"] = "same-origin"
    if not request.path.startswith(f"{PREFIX}/static"):
        headers["Cache-Control"] = "no-store"
    if NEW_FORMS in request:  # a header: the response's own cookies are written as it starts
        sessions = request.app[SESSIONS]
        cookie = SimpleCookie({sessions.anonymous_cookie: request[NEW_FORMS]})
        morsel = cookie[sessions.anonymous_cookie]
        morsel.update({"path": PREFIX, "httponly": True, "samesite": "Strict",
                       "secure": sessions.secure})
        headers.add("Set-Cookie", morsel.OutputString())


# --- who is asking ---------------------------------------------------------------------

def _service(request: web.Request) -> Service:
    from ..server import SERVICE  # the app's key; server imports this module

    return request.app[SERVICE]


async def _principal(request: web.Request) -> Principal | None:
    """The session's user (or a bearer/basic credential: a graph fetched by a script), as
    of now: None once the session is logged out or expired, or its user is gone."""
    sessions = request.app[SESSIONS]
    principal = await sessions.principal(request.cookies.get(COOKIE, ""))
    if principal is None and request.headers.get("Authorization"):
        found = await sessions.users.authenticate(request.headers["Authorization"])
        principal = found if found and found.role in ("viewer", "operator") else None
    if principal is None and sessions.users.allow_unauthenticated:
        if not named_by_address(request.host):
            raise _page_error(request, 403, NOT_BY_ADDRESS, None)
        principal = ANONYMOUS
        _bind_forms(request)
    return principal


def _bind_forms(request: web.Request) -> None:
    """Unauthenticated, forms are bound to a cookie of this instance's own (no session
    cookie to bind them to: every Pause and Approve was refused 403), issued once. A session
    cookie that is not ours (another instance of this host: cookies ignore ports) is not
    what they are bound to: a token made from it passed."""
    sessions = request.app[SESSIONS]
    value = request.cookies.get(sessions.anonymous_cookie, "")
    if not sessions.anonymous_valid(value):
        value = request[NEW_FORMS] = sessions.issue_anonymous()
    request[FORMS] = value


def _bound(request: web.Request) -> str:
    """The cookie this request's CSRF token is made from: its session's, or unauthenticated
    the forms cookie (`_bind_forms`)."""
    return request.get(FORMS) or request.cookies.get(COOKIE, "")


async def _who(request: web.Request, need: str = "viewer") -> Principal:
    """`_principal`; a browser without one goes to the login form, a viewer acting gets 403."""
    principal = await _principal(request)
    if principal is None:
        # Encoded: a deep link's own query (`?outcome=failed&playbook=x`) is `next`'s value
        # whole, where all but its first parameter were lost at login.
        raise web.HTTPSeeOther(f"{PREFIX}/login?" + urllib.parse.urlencode(
            {"next": request.path_qs}) if request.method == "GET" else f"{PREFIX}/login")
    if not principal.may(need):
        raise _page_error(request, 403, f"{principal.described()}; this needs "
                          f"the {need} role", principal)
    return principal


# A console form holds a CSRF token, a step or circuit name, a login's name, password and
# `next` (a path of at most aiohttp's 8190-byte request line, encoded): a few KiB. Read up to
# `max_body_bytes` (16 MiB: a webhook's), anyone could make the login form read 16 MiB.
FORM_MAX_BYTES = 16 << 10
_TOO_LARGE = f"a form is at most {FORM_MAX_BYTES} bytes"


async def _form(request: web.Request, principal: Principal | None) -> web.MultiDictProxy:
    """The POSTed form; one aiohttp cannot parse (a multipart body without its boundary, a
    part's broken header) is a 400 saying so, where its exception was a 500; one over
    FORM_MAX_BYTES a 413, refused by its Content-Length before a byte of it is read; one
    without a Content-Length (chunked) a 411: a browser always sends one, and aiohttp's
    parser costs a Python call per chunk. Six clients posting login forms in 1-byte chunks
    held the webhook's acknowledgement (p50) at 1.8 s read up to 16 KiB, 1.05 s refused at
    once (what came with the header is parsed all the same), 7.4 s read up to 16 MiB."""
    if request.content_length is None and request.body_exists:
        raise _page_error(request, 411, "a form needs its Content-Length (it was sent in "
                          "chunks)", principal)
    if (request.content_length or 0) > FORM_MAX_BYTES:
        raise _page_error(request, 413, _TOO_LARGE, principal)
    try:
        # A clone shares the body: the limit it reads to is the form's, not the app's.
        return await request.clone(client_max_size=FORM_MAX_BYTES).post()
    except web.HTTPRequestEntityTooLarge:
        raise _page_error(request, 413, _TOO_LARGE, principal) from None
    except (ValueError, HttpProcessingError) as exc:
        reason = getattr(exc, "message", "") or str(exc)  # not "400, message:"
        raise _page_error(request, 400, f"cannot read the form: {reason}", principal) from None


async def _operator_post(request: web.Request) -> tuple[Principal, web.MultiDictProxy]:
    principal = await _who(request, "operator")
    form = await _form(request, principal)
    if not request.app[SESSIONS].check_csrf(_bound(request), str(form.get("csrf", ""))):
        raise _page_error(request, 403, "the form's CSRF token does not match your session; "
                          "reload the page and try again", principal)
    return principal, form


async def _state(service: Service) -> dict[str, Any]:
    """What every page's header says of the automation: paused (and by whom), approvals
    waiting for a human, circuits open. An operator on the decisions list did not see that
    automation was paused (only Control said so), nor that a step waited for them."""
    pause = redact.value(await service.store.get_state(PAUSE) or {})
    pending = await service.store.list_state(PENDING)
    circuits = redact.value(await service.open_circuits())
    return {"pause": pause, "paused": pause if pause.get("paused") else None,
            "paused_by_config": service.config.guards.paused,
            "approvals": sum(1 for p in pending.values() if "withdrawn_at" not in p),
            "open_circuits": circuits, "circuits": len(circuits)}


def _page(request: web.Request, template: str, principal: Principal | None, status: int = 200,
          **context: Any) -> web.Response:
    service = _service(request)
    cookie = _bound(request)
    body = _pages().get_template(template).render(
        me=principal, mode=service.config.mode, prefix=PREFIX, path=request.path,
        csrf=request.app[SESSIONS].csrf(cookie) if cookie else "",
        can_act=bool(principal and principal.may("operator")), **context)
    return web.Response(text=body, status=status, content_type="text/html", charset="utf-8")


def _page_error(request: web.Request, status: int, message: str,
                principal: Principal | None) -> web.HTTPException:
    error = {403: web.HTTPForbidden, 404: web.HTTPNotFound, 409: web.HTTPConflict,
             400: web.HTTPBadRequest, 411: web.HTTPLengthRequired,
             413: functools.partial(web.HTTPRequestEntityTooLarge, FORM_MAX_BYTES)}[status]
    page = _page(request, "error.html", principal, status=status, status_code=status,
                 message=redact.text(message))
    return error(text=page.text, content_type="text/html")


async def home(request: web.Request) -> web.Response:
    raise web.HTTPFound(f"{PREFIX}/")


async def not_found(request: web.Request) -> web.Response:
    """A console page, not aiohttp's bare text, for a path the console does not have; the
    header's links lead on for whoever is logged in."""
    principal = await _principal(request)
    raise _page_error(request, 404, f"the console has no page {request.path!r}", principal)


# --- login -------------------------------------------------------------------------------

def _safe_next(target: str) -> str:
    """Only a path of this console: never another site (an open redirect)."""
    return target if target.startswith(f"{PREFIX}/") and not target.startswith("//") \
        and "\\" not in target else f"{PREFIX}/"


async def login_form(request: web.Request) -> web.Response:
    return _page(request, "login.html", None, next=_safe_next(request.query.get("next", "")),
                 error="")


async def login(request: web.Request) -> web.Response:
    form = await _form(request, None)
    name, secret = str(form.get("name", "")), str(form.get("password", ""))
    sessions = request.app[SESSIONS]
    principal = await sessions.users.login(name, secret) if name and secret else None
    target = _safe_next(str(form.get("next", "")))
    if principal is None:
        # A name no user has is not quoted: it may be a password typed in the wrong field.
        who = repr(name[:64]) if sessions.users.lookup(name) else "a name no user has"
        log.warning("console login refused for %s", who)
        return _page(request, "login.html", None, status=401, next=target,
                     error="Unknown user or wrong password/token.")
    response = web.HTTPSeeOther(target)
    response.set_cookie(COOKIE, sessions.issue(principal), max_age=int(sessions.ttl),
                        path=PREFIX, httponly=True, samesite="Strict", secure=sessions.secure)
    log.info("console login: %s (%s)", principal.name, principal.role)
    raise response


async def logout(request: web.Request) -> web.Response:
    sessions = request.app[SESSIONS]
    cookie = request.cookies.get(COOKIE, "")
    form = await _form(request, None)
    if sessions.check_csrf(cookie, str(form.get("csrf", ""))):
        await sessions.revoke(cookie)
    response = web.HTTPSeeOther(f"{PREFIX}/login")
    response.del_cookie(COOKIE, path=PREFIX)
    raise response


# --- decisions -----------------------------------------------------------------------------

def _row(d: dict[str, Any]) -> dict[str, Any]:
    """What the list shows of a decision (and what the live stream sends)."""
    labels = (d.get("alert") or {}).get("labels") or {}
    return redact.value({"id": d["id"], "created_at": d.get("created_at", ""),
                         "alertname": d.get("alertname", ""), "playbook": d.get("playbook") or "",
                         "outcome": d.get("outcome", ""), "reason": (d.get("reason") or "")[:160],
                         "mode": d.get("mode", ""), "target": d.get("target") or "",
                         "namespace": labels.get("namespace", "")})


async def decisions(request: web.Request) -> web.Response:
    principal = await _who(request)
    q = request.query
    filters = {k: q[k] for k in ("outcome", "playbook", "alertname") if q.get(k)}
    since = q.get("since", "")
    # The store's position before the list's read: the live stream goes on from it.
    position = (await live.read(_service(request).store, None)).at if not filters else ""
    items = await _service(request).store.list_executions(LIST_LIMIT, **filters)
    if since in SINCE:
        # On the store's clock, as `created_at` is stamped.
        cutoff = datetime.fromtimestamp(_service(request).clock() - SINCE[since],
                                        UTC).isoformat()
        items = [d for d in items if str(d.get("created_at", "")) >= cutoff[:19]]
    counts = Counter(d.get("outcome", "") for d in items)
    service = _service(request)
    return _page(request, "decisions.html", principal, rows=[_row(d) for d in items],
                 state=await _state(service),
                 counts=sorted(counts.items()), outcomes=OUTCOMES, filters=filters, since=since,
                 playbooks=sorted(pb.name for pb in service.rules.playbooks), limit=LIST_LIMIT,
                 after=live.cursor(live.key(items[0]) if items else live.BEFORE, position))


def _after(request: web.Request) -> tuple[live.Key, str | None] | None:
    """Where the stream starts: the browser's `Last-Event-ID` on a reconnection (the newest
    decision it was sent, and the store's position up to which it has every change), else
    the page's `?after=` (the newest it drew, the position it drew them at; a tab shown
    again: its last event's), else now. The header is the browser's own echo: one that is
    not a cursor is ignored."""
    if (at := live.parse(request.headers.get("Last-Event-ID", ""))) is not None:
        return at
    if "after" not in request.query:
        return None
    if (at := live.parse(request.query["after"])) is None:
        raise web.HTTPBadRequest(text="after: not a cursor of this console (a decision's "
                                 "created_at and id, as the decisions page gives it)")
    return at


async def _send(response: web.StreamResponse, sent: list[tuple[str, dict[str, Any]]],
                gap: bool) -> None:
    """Decisions as events, each with its id: the newest decision the browser then has (and
    the position), what it sends back as `Last-Event-ID` when it reconnects; then whether
    more were missed than were sent (the list asks for a reload)."""
    for at, d in sent:
        await response.write(f"id: {at}\nevent: decision\n"
                             f"data: {json.dumps(_row(d))}\n\n".encode())
    if gap:
        await response.write(b"event: gap\ndata: {}\n\n")


async def _at(response: web.StreamResponse, stream: live.Stream, last: str) -> str:
    """The stream's cursor once a read is all sent, as an `at` event's id when it moved: a
    stream opened again goes on from it (the list keeps it, the browser echoes it)."""
    if (now := stream.cursor()) and now != last:
        await response.write(f"id: {now}\nevent: at\ndata: {{}}\n\n".encode())
    return now or last


async def events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: each decision created or changed, as JSON, newest state; first
    those recorded after the cursor (`_after`), then each tick's changes (`live.py`). With
    `once=1`, a poll: what changed since the cursor, then the answer ends (a list beyond
    the browser's streams, console.js)."""
    await _who(request)
    after, position = _after(request) or (None, None)
    once = request.query.get("once") == "1"
    store = _service(request).store
    # Read before the answer starts: a store down now is the middleware's 503. The position
    # first: what is committed after it, the ticks read (this stream's first, from it).
    # A poll from a position reads what changed since, and not the newest 50 as well.
    latest = [] if once and position else None
    position = position or (await live.read(store, None)).at
    latest = await store.list_executions(live.LATEST) if latest is None else latest
    stream = live.Stream(latest, after, position)
    polled = await live.read(store, position) if once else None
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-store"})
    security_headers(request, response.headers)  # started here, before the middleware's turn
    await response.prepare(request)
    try:
        await _send(response, *stream.read(latest))  # those after the cursor
        if polled is not None:
            await _send(response, *await stream.changes(polled, store))
            await _at(response, stream, "")
            return response
        last = ""
        # One read a tick for every stream; closed as the stream ends, however it ends.
        async with contextlib.aclosing(request.app[FEED].ticks()) as ticks:
            async for tick in ticks:
                # Checked before every tick: a stream ends with its session (logged out on any
                # replica, expired, its user removed or demoted), as the next page load would.
                principal = await _principal(request)
                if principal is None or not principal.may("viewer"):
                    break
                await _send(response, *await stream.changes(tick, store))
                last = await _at(response, stream, last)
                await response.write(b": keep-alive\n\n")
    except ConnectionResetError:
        pass  # the browser went away (a disconnect while sleeping cancels this handler)
    except PasswordChecksBusy:
        pass  # its Basic credential could not be checked again now: the stream ends
    except StoreUnavailable as exc:
        # The answer has begun: a 503's JSON written after it landed inside the event stream.
        # It just ends; the browser reconnects and is answered 503 until the store is back.
        log.warning("live stream ended: %s", exc)
    return response


async def decision_page(request: web.Request) -> web.Response:
    principal = await _who(request)
    service = _service(request)
    decision = await service.store.get_execution(request.match_info["id"])
    if decision is None:
        raise _page_error(request, 404, f"no execution {request.match_info['id']!r}", principal)
    decision = redact.value(decision)
    pending = await _pending_steps(service, decision["id"])
    escalation = decision.get("escalation") or {}
    note_html = _markdown().render(escalation["note"]) if escalation.get("note") else ""
    alert = decision.get("alert") or {}
    expr = graphs.alert_expr(alert.get("generatorURL", ""))
    return _page(request, "decision.html", principal, d=decision, alert=alert,
                 state=await _state(service), guide=_guide(service, decision),
                 does={step: _guide(service, decision, step)["does"] for step in pending},
                 labels=sorted((alert.get("labels") or {}).items()),
                 annotations=sorted((alert.get("annotations") or {}).items()),
                 steps=decision.get("steps") or [], note_html=note_html, pending=pending,
                 deliveries=sorted((escalation.get("deliveries") or {}).items()),
                 has_alert_graph=bool(expr), verify=graphs.verify_query(decision))


def _guide(service: Service, decision: dict[str, Any], step: str = "") -> dict[str, str]:
    """Where the engineer deciding reads up, from the rules loaded now: the runbook (the
    playbook's, else the alert's runbook_url, as the escalation note gives it), what the
    playbook is for, and what a gated step does (its description, written for whoever
    approves it: the note showed it, the console did not). A runbook is a link only when it
    is http(s)."""
    pb = service.rules.get(decision.get("playbook") or "")
    annotations = (decision.get("alert") or {}).get("annotations") or {}
    runbook = pb.runbook if pb and pb.runbook else str(annotations.get("runbook_url") or "")
    gated = next((s for s in (*pb.steps, *pb.on_resolved) if s.name == step), None) \
        if pb and step else None
    return redact.value({"runbook": runbook if runbook.startswith(("https://", "http://")) else "",
                         "purpose": pb.description if pb else "",
                         "does": gated.description if gated else ""})


async def graph_svg(request: web.Request) -> web.Response:
    """`?q=alert` (default): the alert's own expression; `?q=verify`: the playbook's check."""
    principal = await _who(request)
    service = _service(request)
    decision = await service.store.get_execution(request.match_info["id"])
    if decision is None:
        raise _page_error(request, 404, f"no execution {request.match_info['id']!r}", principal)
    g = await build_graph(service, request.app[ALERT_RULES], decision,
                          request.query.get("q", "alert"))
    return web.Response(text=graphs.render(g), content_type="image/svg+xml",
                        headers={"Cache-Control": "no-store"})


async def build_graph(service: Service, rules: graphs.AlertRules, decision: dict[str, Any],
                      which: str) -> graphs.Graph:
    """The playbook's verify query (its author's), or the alert's expression (its sender's:
    queried only when it is what Prometheus's alerting rule of the alert's name evaluates)."""
    http, url = service.backends.http(), service.config.prometheus_url
    timeout = service.config.console_graph_timeout
    if which == "verify":
        expr, title = graphs.verify_query(decision), "Verification query"
        problem = "" if expr else "the playbook has no prometheus.wait_until step to verify with"
    else:
        expr = graphs.alert_expr((decision.get("alert") or {}).get("generatorURL", ""))
        title = f"{decision.get('alertname', '')}: the alert's expression"
        problem = await rules.why_not(http, url, timeout, decision.get("alertname", ""), expr) \
            if expr else "the alert carries no expression (its generatorURL has no g0.expr)"
    series_expr, threshold = graphs.split_threshold(expr)
    start, end = graphs.window(decision)
    g = graphs.Graph(title=title, expr=series_expr, threshold=threshold, start=start, end=end,
                     markers=graphs.markers(decision), problem=problem)
    return await graphs.fetch(http, url, g, timeout)


# --- approvals -----------------------------------------------------------------------------

async def _pending_steps(service: Service, execution_id: str) -> dict[str, dict[str, Any]]:
    """Steps an operator may still approve (one withdrawn keeps its entry until its run is
    finished: `engine.approvals.finish_withdrawn`)."""
    return {key.rsplit(":", 1)[1]: value for key, value in
            (await service.store.list_state(f"{PENDING}{execution_id}:")).items()
            if "withdrawn_at" not in value}


def _what_runs(decision: dict[str, Any], step: str) -> dict[str, Any]:
    """The gated step as it was rendered for this alert (its journaled, blocked record)."""
    for record in decision.get("steps") or []:
        if record.get("name") == step:
            return redact.value({"action": record.get("action"), "params": record.get("params"),
                                 "detail": record.get("detail", "")})
    return {}


async def approvals(request: web.Request) -> web.Response:
    principal = await _who(request)
    service = _service(request)
    store = service.store
    states = (await store.list_state(APPROVAL)).items()
    # Ordered and cut on the states alone: only the executions shown are read (every approval
    # kept, 90 days of them, was read at each load).
    pending = sorted(((k, s) for k, s in states if s.get("status") == "pending"),
                     key=lambda ks: ks[1].get("expires_at", 0))
    decided = sorted(((k, s) for k, s in states if s.get("status") != "pending"),
                     key=lambda ks: -ks[1].get("decided_at", 0))[:DECIDED_SHOWN]
    return _page(request, "approvals.html", principal,
                 pending=await _approvals(service, pending), state=await _state(service),
                 decided=await _approvals(service, decided), now=service.clock())


async def _approvals(service: Service, states: list[tuple[str, dict[str, Any]]]
                     ) -> list[dict[str, Any]]:
    """The approvals page's rows: each approval with its execution (one no longer kept is
    left out)."""
    items = []
    for key, state in states:
        execution_id, _, step = key[len(APPROVAL):].rpartition(":")
        decision = await service.store.get_execution(execution_id)
        if decision is not None:
            items.append({"id": execution_id, "step": step, "state": redact.value(state),
                          "decision": _row(decision), "runs": _what_runs(decision, step),
                          "target": redact.value(decision.get("target") or ""),
                          "guide": _guide(service, decision, step)})
    return items


async def confirm(request: web.Request) -> web.Response:
    """The confirmation page (works without JavaScript): what will run, then one button."""
    principal = await _who(request, "operator")
    service = _service(request)
    decision = await service.store.get_execution(request.match_info["id"])
    step = request.query.get("step", "")
    if decision is None:
        raise _page_error(request, 404, f"no execution {request.match_info['id']!r}", principal)
    return _page(request, "confirm.html", principal, d=_row(decision), step=step,
                 state=await _state(service), guide=_guide(service, decision, step),
                 verb=request.match_info["verb"], runs=_what_runs(decision, step),
                 pending=(await _pending_steps(service, decision["id"])).get(step))


async def decide(request: web.Request) -> web.Response:
    principal, form = await _operator_post(request)
    approving = request.match_info["verb"] == "approve"
    execution_id = request.match_info["id"]
    service = _service(request)
    try:
        await service.approve(execution_id, principal.name, approve=approving,
                              step=str(form.get("step", "")) or None,
                              answer_within=service.approval_answer_within)
    except Resuming:  # decided; the execution's page shows the run going on
        pass
    except KeyError:
        raise _page_error(request, 404, f"no execution {execution_id!r}", principal) from None
    except ValueError as exc:
        raise _page_error(request, 409, str(exc), principal) from None
    log.warning("execution %s %s by %s (console)", execution_id,
                "approved" if approving else "rejected", principal.name,
                extra={"execution_id": execution_id})
    raise web.HTTPSeeOther(f"{PREFIX}/executions/{execution_id}")


# --- control -------------------------------------------------------------------------------

async def control(request: web.Request) -> web.Response:
    principal = await _who(request)
    service = _service(request)
    state = await _state(service)  # the header's reads are the page's too
    return _page(request, "control.html", principal, circuits=state["open_circuits"],
                 state=state, paused=state["pause"], paused_by_config=state["paused_by_config"],
                 rules=sorted(pb.name for pb in service.rules.playbooks),
                 last_reload=redact.value(service.last_reload))


async def control_action(request: web.Request) -> web.Response:
    principal, form = await _operator_post(request)
    service, verb = _service(request), request.match_info["verb"]
    if verb in ("pause", "resume"):
        await service.pause(verb == "pause", principal.name)
    elif verb == "reset":
        target = str(form.get("target", ""))
        if not target:
            raise _page_error(request, 400, "target is required (namespace/kind/name)", principal)
        playbook = str(form.get("playbook", ""))
        if not await service.reset_circuits(target, playbook, principal.name):
            # It redirected to Control as if done (the API answers 404): say what is open.
            from ..server import none_reset

            error, _ = await none_reset(service, target, playbook)
            raise _page_error(request, 404, error, principal)
    else:
        with contextlib.suppress(RulesError):  # recorded in service.last_reload, shown
            await service.reload()
    raise web.HTTPSeeOther(f"{PREFIX}/control")
