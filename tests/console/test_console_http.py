"""The console over real HTTP (no browser): sessions on the one user store, roles, CSRF,
escaping, security headers, and a console that stays up when Prometheus is down."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import json
import re
import time
from concurrent.futures import ThreadPoolExecutor

import asyncpg
import bcrypt
import pytest
import requests

from remediator.auth import Operator
from remediator.console import CSP, DECIDED_SHOWN
from remediator.console.live import LATEST
from remediator.guards import APPROVAL
from tests.conftest import APPROVAL_RULES
from tests.integration.test_store_contract import earlier_by
from tests.support.payloads import alert, notification
from tests.support.worker import OPERATOR_TOKEN, TOKEN, VIEWER_TOKEN

HOSTILE = "<script>alert(1)</script>"


def login(url: str, name: str, secret: str) -> requests.Session:
    s = requests.Session()
    r = s.post(f"{url}/ui/login", data={"name": name, "password": secret, "next": "/ui/"})
    assert r.status_code == 200 and r.url == f"{url}/ui/", (r.status_code, r.text[-300:])
    return s


def csrf(page: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page).group(1)


def test_login_uses_the_configured_users_and_sets_a_strict_cookie(worker_factory):
    hashed = bcrypt.hashpw(b"correct horse", bcrypt.gensalt(rounds=4)).decode()
    w = worker_factory(operators=[Operator("olga", "operator", password_hash=hashed),
                                  Operator("victor", "viewer", token=VIEWER_TOKEN)],
                       console_cookie_secure=True)
    anonymous = requests.get(f"{w.url}/ui/", allow_redirects=False)
    assert anonymous.status_code == 303 and anonymous.headers["Location"].startswith("/ui/login")
    for name, secret in (("olga", "wrong"), ("nobody", "correct horse"), ("victor", OPERATOR_TOKEN),
                         ("alertmanager", TOKEN), ("olga", VIEWER_TOKEN)):
        r = requests.post(f"{w.url}/ui/login", data={"name": name, "password": secret},
                          allow_redirects=False)
        assert r.status_code == 401 and "remediator_session" not in r.headers.get("Set-Cookie", "")
    r = requests.post(f"{w.url}/ui/login", data={"name": "olga", "password": "correct horse",
                                                 "next": "//evil.example/x"}, allow_redirects=False)
    assert r.status_code == 303 and r.headers["Location"] == "/ui/"  # no open redirect
    cookie = r.headers["Set-Cookie"]
    for attribute in ("HttpOnly", "SameSite=Strict", "Secure", "Path=/ui"):
        assert attribute in cookie, cookie
    value = r.cookies["remediator_session"]
    page = requests.get(f"{w.url}/ui/control", cookies={"remediator_session": value}).text
    assert "olga <small" in page and "Pause automation" in page
    # A forged or altered cookie is nobody.
    value = value.replace("olga", "victor")
    forged = requests.get(f"{w.url}/ui/", cookies={"remediator_session": value}, allow_redirects=False)
    assert forged.status_code == 303


def test_a_session_ends_with_the_token_or_password_it_was_opened_with(worker_factory):
    """A restart with alice's token and olga's password rotated (the session secret kept):
    their old cookies are refused; victor's, whose token is the same, still passes."""
    old, new = (bcrypt.hashpw(p, bcrypt.gensalt(rounds=4)).decode() for p in (b"old pw", b"new pw"))
    secret = "s" * 32
    before = worker_factory(console_session_secret=secret, operators=[
        Operator("alice", "operator", token=OPERATOR_TOKEN),
        Operator("olga", "operator", password_hash=old),
        Operator("victor", "viewer", token=VIEWER_TOKEN)])
    cookies = {name: login(before.url, name, secret).cookies["remediator_session"]
               for name, secret in (("alice", OPERATOR_TOKEN), ("olga", "old pw"),
                                    ("victor", VIEWER_TOKEN))}
    after = worker_factory(console_session_secret=secret, operators=[
        Operator("alice", "operator", token="rotated-token-alice-0123456789"),
        Operator("olga", "operator", password_hash=new),
        Operator("victor", "viewer", token=VIEWER_TOKEN)])
    for name, cookie in cookies.items():
        r = requests.get(f"{after.url}/ui/control", cookies={"remediator_session": cookie},
                         allow_redirects=False)
        if name == "victor":
            assert r.status_code == 200 and "victor <small" in r.text
        else:
            assert r.status_code == 303 and r.headers["Location"].startswith("/ui/login"), name
    # The cookie carries a keyed hash of the credential, not the credential nor its digest.
    assert OPERATOR_TOKEN not in cookies["alice"]
    assert hashlib.sha256(OPERATOR_TOKEN.encode()).hexdigest()[:16] not in cookies["alice"]


def test_viewer_sees_operator_acts_with_csrf_and_is_recorded(worker_factory):
    w = worker_factory(APPROVAL_RULES % {"url": "http://127.0.0.1:9/"}, mode="live")
    w.post_alerts(notification(alert("WebDown", fingerprint="w1")))
    [pending] = w.wait_executions(1)
    first = pending["id"]
    viewer, operator = login(w.url, "victor", VIEWER_TOKEN), login(w.url, "alice", OPERATOR_TOKEN)
    page = viewer.get(f"{w.url}/ui/approvals").text
    assert page.count('class="card attention approval"') == 1 and "Approve…" not in page
    assert "http.request" in page  # what will run
    vtoken = csrf(viewer.get(f"{w.url}/ui/").text)
    r = viewer.post(f"{w.url}/ui/executions/{first}/reject", data={"csrf": vtoken, "step": "restart"})
    assert r.status_code == 403 and "victor is a viewer" in r.text
    assert viewer.get(f"{w.url}/ui/executions/{first}/approve?step=restart").status_code == 403
    confirm = operator.get(f"{w.url}/ui/executions/{first}/reject?step=restart")
    assert confirm.status_code == 200 and "Reject as alice" in confirm.text
    # No token, another session's token, or a cross-site form: refused, nothing decided.
    for data in ({"step": "restart"}, {"step": "restart", "csrf": vtoken}):
        assert operator.post(f"{w.url}/ui/executions/{first}/reject", data=data).status_code == 403
    assert w.call(w.service.store.get_state(f"approval:{first}:restart"))["status"] == "pending"
    r = operator.post(f"{w.url}/ui/executions/{first}/reject",
                      data={"step": "restart", "csrf": csrf(confirm.text)})
    assert r.status_code == 200 and r.url.endswith(f"/ui/executions/{first}")
    state = w.call(w.service.store.get_state(f"approval:{first}:restart"))
    assert (state["status"], state["by"]) == ("rejected", "alice")
    # Deciding twice is a clear 409, not a 500.
    again = operator.post(f"{w.url}/ui/executions/{first}/reject",
                          data={"step": "restart", "csrf": csrf(confirm.text)})
    assert again.status_code == 409 and "no pending approval" in again.text
    # Pause and resume through the same Service method the API uses.
    token = csrf(operator.get(f"{w.url}/ui/control").text)
    assert viewer.post(f"{w.url}/ui/control/pause", data={"csrf": vtoken}).status_code == 403
    page = operator.post(f"{w.url}/ui/control/pause", data={"csrf": token}).text
    assert "Paused</strong> by alice" in page
    assert w.call(w.service.store.get_state("paused"))["by"] == "alice"
    page = operator.post(f"{w.url}/ui/control/resume", data={"csrf": token}).text
    assert "Running</strong>" in page and not w.call(w.service.store.get_state("paused"))["paused"]
    assert "rejected" in operator.get(f"{w.url}/ui/approvals").text
    # Logging out ends the session, even for someone who kept the cookie.
    kept = dict(operator.cookies)
    operator.post(f"{w.url}/ui/logout", data={"csrf": token})
    assert requests.get(f"{w.url}/ui/", cookies=kept, allow_redirects=False).status_code == 303


def test_hostile_labels_are_text_and_pages_carry_a_strict_policy(worker_factory):
    # Nothing listens on port 9: Prometheus is down.
    w = worker_factory(APPROVAL_RULES % {"url": "http://127.0.0.1:9/"}, mode="live",
                       prometheus_url="http://127.0.0.1:9")
    hostile = alert("WebDown", fingerprint="h")
    hostile["labels"].update(evil=HOSTILE, template="{{ 7*7 }}")
    hostile["annotations"]["description"] = '<img src=x onerror="alert(2)"> [x](javascript:alert(3))'
    w.post_alerts(notification(hostile))
    [decision] = w.wait_executions(1)
    s = login(w.url, "victor", VIEWER_TOKEN)
    r = s.get(f"{w.url}/ui/executions/{decision['id']}")
    assert r.status_code == 200
    page = r.text
    assert HOSTILE not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "{{ 7*7 }}" in page and ">49<" not in page
    assert "<img src=x" not in page and 'href="javascript:' not in page
    assert "onerror=" not in page.replace("onerror=&#34;", "").replace("onerror=&quot;", "")
    assert "Escalation note" in page  # the note, rendered from Markdown
    policy = r.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy and r.headers["X-Frame-Options"] == "DENY"
    assert "<script>" not in page.replace('<script src="/ui/static/console.js', "")
    assert "LIVE" in page
    # Prometheus is down: the graph says so, the page did not fail, the note says so.
    svg = s.get(f"{w.url}/ui/executions/{decision['id']}/graph.svg")
    assert svg.status_code == 200 and svg.headers["Content-Type"].startswith("image/svg+xml")
    assert "Prometheus did not answer" in svg.text
    assert "No graph now: Prometheus did not answer" in decision["escalation"]["note"]
    js = s.get(f"{w.url}/ui/static/console.js")
    assert js.status_code == 200 and "textContent" in js.text and "innerHTML" not in js.text


def test_the_live_stream_ends_with_its_session_logged_out_on_another_replica(
        worker_factory, postgres_url):
    secret = "console-secret-the-replicas-share-0123456789"
    a, b = (worker_factory(store=postgres_url, console_session_secret=secret) for _ in range(2))
    session = login(a.url, "alice", OPERATOR_TOKEN)
    stream = session.get(f"{b.url}/ui/events", stream=True, timeout=30)  # the other replica
    assert stream.status_code == 200
    lines = stream.iter_lines()
    assert _until_tick(lines) == []  # it runs
    session.post(f"{a.url}/ui/logout", data={"csrf": csrf(session.get(f"{a.url}/ui/").text)})
    # The stream ends at its next tick (one more may have been under way); it used to run on.
    # Ticks are counted, not seconds.
    rest = list(itertools.islice(lines, 10))
    assert rest.count(b": keep-alive") <= 1, rest
    assert session.get(f"{b.url}/ui/", allow_redirects=False).status_code == 303


def test_a_cookie_token_or_form_it_cannot_read_is_a_refusal_never_a_500(worker_factory):
    # hmac.compare_digest refuses a str with a character outside ASCII (TypeError), and
    # aiohttp's form parser raises ValueError on a multipart body without its boundary: each
    # was a 500 with a traceback, to anyone, logged in or not.
    w = worker_factory()
    for cookie in ("olga|é", "alice|1|9999999999|n|é", "é"):
        r = requests.get(f"{w.url}/ui/", headers={"Cookie": f"remediator_session={cookie}"},
                         allow_redirects=False)
        assert r.status_code == 303 and r.headers["Location"].startswith("/ui/login"), r.text
    r = requests.post(f"{w.url}/ui/logout", data={"csrf": "é"},
                      headers={"Cookie": "remediator_session=a|b"}, allow_redirects=False)
    assert r.status_code == 303 and r.headers["Location"] == "/ui/login"
    broken = {"Content-Type": "multipart/form-data; boundary=x"}
    r = requests.post(f"{w.url}/ui/login", data=b"\xff\xfe", headers=broken)
    assert r.status_code == 400 and "cannot read the form" in r.text, r.text[-300:]
    operator = login(w.url, "alice", OPERATOR_TOKEN)
    token = csrf(operator.get(f"{w.url}/ui/control").text)
    r = operator.post(f"{w.url}/ui/control/pause", data=b"--x\r\nnot a part", headers=broken)
    assert r.status_code == 400 and "cannot read the form" in r.text, r.text[-300:]
    r = operator.post(f"{w.url}/ui/control/pause", data={"csrf": token[:-1] + "é"})
    assert r.status_code == 403 and "CSRF token does not match" in r.text
    assert w.call(w.service.store.get_state("paused")) is None


def test_a_name_no_user_has_costs_a_password_check_and_is_never_logged(worker_factory, caplog):
    # Refused at once, a name no user has was answered ~0.2 s before a known name's bcrypt
    # check: the time said which names to guess passwords for. And the refusal's log line
    # quoted it: a password typed into the name field ended up in the log.
    hashed = bcrypt.hashpw(b"correct horse", bcrypt.gensalt(rounds=12)).decode()
    w = worker_factory(operators=[Operator("olga", "operator", password_hash=hashed)])
    secret = "correct horse battery"  # typed into the wrong field
    r = requests.post(f"{w.url}/ui/login", data={"name": secret, "password": "x"})
    assert r.status_code == 401
    refused = [rec.getMessage() for rec in caplog.records if "login refused" in rec.getMessage()]
    assert refused == ["console login refused for a name no user has"], refused
    requests.post(f"{w.url}/ui/login", data={"name": "olga", "password": "x"})
    assert "console login refused for 'olga'" in caplog.text  # a user's name is said
    # Each unknown name takes a bcrypt check as a known one does: a burst of them meets the
    # bound on checks in flight (a 429), where every one was a 401 at once.
    with ThreadPoolExecutor(24) as pool:
        statuses = list(pool.map(lambda i: requests.post(
            f"{w.url}/ui/login", data={"name": f"nobody{i}", "password": "x"},
            allow_redirects=False).status_code, range(24)))
    assert set(statuses) == {401, 429} and statuses.count(401) >= 2, statuses
    assert secret not in caplog.text


def test_the_approvals_page_reads_only_the_executions_it_shows(worker_factory):
    # Every approval is kept with its decision (90 days by default), and the page read each
    # one's execution at every load, to show the pending ones and the newest decided.
    w = worker_factory(APPROVAL_RULES % {"url": "http://127.0.0.1:9/"}, mode="live")
    w.post_alerts(notification(alert("WebDown", fingerprint="w1")))
    [pending] = w.wait_executions(1)
    store = w.service.store
    for i in range(200):
        w.call(store.put_state(f"{APPROVAL}old{i}:restart",
                               {"status": "approved", "decided_at": 1000.0 + i, "by": "olga"}))
    viewer = login(w.url, "victor", VIEWER_TOKEN)
    real, reads = store.get_execution, []

    async def counted(execution_id: str) -> dict | None:
        reads.append(execution_id)
        return await real(execution_id)

    store.get_execution = counted
    try:
        page = viewer.get(f"{w.url}/ui/approvals").text
    finally:
        del store.get_execution
    assert page.count('class="card attention approval"') == 1 and pending["id"] in page
    old = [r for r in reads if r.startswith("old")]
    assert sorted(old) == sorted(f"old{i}" for i in range(200 - DECIDED_SHOWN, 200)), old


def test_a_token_login_and_the_webhooks_own_user_take_no_password_check(worker_factory):
    # An unknown name costs a bcrypt check (above). A user signing in with a token, and
    # Alertmanager retrying with a wrong basic password, must not: the first would wait
    # ~0.2 s and meet the bound on checks in flight; the second would take every check's
    # place while it retries, and lock people out.
    slow = bcrypt.hashpw(b"correct horse", bcrypt.gensalt(rounds=14)).decode()  # ~1 s a check
    w = worker_factory(operators=[Operator("olga", "operator", password_hash=slow),
                                  Operator("victor", "viewer", token=VIEWER_TOKEN)],
                       basic_auth_username="am", basic_auth_password="am-password-0123456789")
    with ThreadPoolExecutor(12) as pool:
        flood = [pool.submit(requests.post, f"{w.url}/ui/login",
                             data={"name": f"nobody{i}", "password": "x"}, allow_redirects=False)
                 for i in range(8)]  # every check's place taken, for seconds
        time.sleep(0.5)
        assert any(not f.done() for f in flood)
        token = requests.post(f"{w.url}/ui/login", data={"name": "victor", "password": VIEWER_TOKEN},
                              allow_redirects=False)
        assert token.status_code == 303, token.status_code  # not 429: no check was needed
        wrong = base64.b64encode(b"am:wrong-password").decode()
        statuses = [requests.get(f"{w.url}/api/v1/executions",
                                 headers={"Authorization": f"Basic {wrong}"}).status_code
                    for _ in range(3)]
        assert statuses == [401] * 3, statuses  # not 429: the webhook's user is not checked
        assert {f.result().status_code for f in flood} <= {401, 429}


def test_open_live_streams_share_one_read_of_the_latest_decisions(worker_factory):
    # Each stream read the latest 50 decisions from the store every second on its own: N
    # viewers were N readers. Reads are counted (the store's own method, wrapped), not timed.
    w = worker_factory()
    store = w.service.store
    reads = [0]
    read = store.changes

    async def counted(since, limit: int):
        reads[0] += 1
        return await read(since, limit)

    store.changes = counted
    session = login(w.url, "alice", OPERATOR_TOKEN)
    streams = [session.get(f"{w.url}/ui/events", stream=True, timeout=30) for _ in range(5)]
    try:
        lines = [s.iter_lines() for s in streams]
        for stream in lines:
            assert _until_tick(stream) == []
        before = reads[0]
        ticks = 4  # of the first stream, while all five run
        assert list(itertools.islice(lines[0], 2 * ticks)) == [b"", b": keep-alive"] * ticks
        # A read a tick for all five (one more under way); each on its own: five a tick.
        assert reads[0] - before <= ticks + 2, reads[0] - before
        w.post_alerts(notification(alert("DemoDown", fingerprint="web", namespace="demo",
                                            deployment="web")))
        for stream in lines:  # every stream sees the new decision, and keeps ticking
            seen = list(itertools.takewhile(lambda line: b"demo-restart" not in line, stream))
            assert seen.count(b": keep-alive") < 20, seen
            assert b": keep-alive" in list(itertools.islice(stream, 7))  # (and its `at`)
    finally:
        for s in streams:
            s.close()


def test_a_live_stream_ends_cleanly_when_the_store_goes_away(worker_factory):
    """Once the event stream had begun, a store error's 503 JSON was written inside it
    (`{"error": "store unavailable…"}` as stream text); now the stream just ends, and the
    browser's reconnection is answered 503 until the store is back."""
    w = worker_factory()
    session = login(w.url, "alice", OPERATOR_TOKEN)
    with session.get(f"{w.url}/ui/events", stream=True, timeout=30) as stream:
        lines = stream.iter_lines()
        assert _until_tick(lines) == []
        w.call(w.service.store.close())
        rest = list(lines)  # until the server ends the stream
    assert rest and all(line in (b"", b": keep-alive") for line in rest), rest
    again = session.get(f"{w.url}/ui/events", stream=True, timeout=30)
    assert again.status_code == 503 and "store" in again.json()["error"]


def _until_tick(lines, at: list[str] | None = None) -> list[dict[str, str]]:
    """The events a stream sends before its first tick's keep-alive, each as its fields;
    the `at` events (the stream's position once a read is sent) only as their ids in `at`."""
    events, fields = [], {}
    for line in lines:
        if line == b": keep-alive":
            return events
        if not line:  # an event's end (or a keep-alive's, which holds none)
            if fields.get("event") == "at":
                if at is not None:
                    at.append(fields["id"])
            elif fields:
                events.append(fields)
            fields = {}
        else:
            name, _, value = line.decode().partition(": ")
            fields[name] = value
    raise AssertionError(f"the stream ended before a tick: {events}")


def test_the_live_stream_sends_what_was_recorded_after_the_page_was_drawn(worker_factory):
    """The list is drawn, then the browser opens the stream: a decision recorded in between
    was in the stream's first read, taken for one the browser had, and never appeared until
    a reload. The page carries a cursor; the stream sends what is newer, once, with the
    drawn ones of its first read as they are now."""
    w = worker_factory()
    session = login(w.url, "alice", OPERATOR_TOKEN)
    w.post_alerts(notification(alert("DemoDown", fingerprint="web", namespace="demo",
                                            deployment="web")))
    [drawn] = w.wait_executions(1)
    page = session.get(f"{w.url}/ui/").text
    after = re.search(r'data-after="([^"]+)"', page).group(1)
    assert after.partition("@")[0] == f"{drawn['created_at']}/{drawn['id']}"
    w.post_alerts(notification(alert("DemoDown", fingerprint="api", namespace="demo",
                                            deployment="api")))
    gap = w.wait_executions(2)[0]  # recorded after the page, before its stream
    with session.get(f"{w.url}/ui/events", params={"after": after}, stream=True,
                     timeout=30) as stream:
        first = _until_tick(stream.iter_lines())
    assert [json.loads(e["data"])["id"] for e in first] == [drawn["id"], gap["id"]], first
    # Each event's id is the newest the browser then has: the drawn one leaves the cursor
    # (and the store's position, the page's until a read is all sent).
    assert [e["id"] for e in first] == [after, f"{gap['created_at']}/{gap['id']}@" +
                                        after.partition("@")[2]], first
    assert {e["event"] for e in first} == {"decision"}

    # Reconnecting, the browser sends the last event's id: only what is newer comes, and the
    # header wins over the page's older cursor in the URL (which EventSource keeps).
    w.post_alerts(notification(alert("DemoDown", fingerprint="db", namespace="demo",
                                            deployment="db")))
    newest = w.wait_executions(3)[0]
    with session.get(f"{w.url}/ui/events", params={"after": after}, stream=True, timeout=30,
                     headers={"Last-Event-ID": first[-1]["id"]}) as stream:
        again = _until_tick(stream.iter_lines())
    assert [json.loads(e["data"])["id"] for e in again] == \
        [drawn["id"], gap["id"], newest["id"]], again
    assert again[-1]["id"].partition("@")[0] == f"{newest['created_at']}/{newest['id']}"
    # No cursor (a client of before): the stream starts from now, as it did.
    with session.get(f"{w.url}/ui/events", stream=True, timeout=30) as stream:
        assert _until_tick(stream.iter_lines()) == []


def test_a_live_stream_cursor_is_checked(worker_factory):
    """The cursor comes from the URL and a header: a bad one in the URL is a 400 saying what
    it should be, a bad header is ignored (the URL's cursor holds); never a 5xx."""
    w = worker_factory()
    session = login(w.url, "alice", OPERATOR_TOKEN)
    for bad in ("", "yesterday", "2026-12-01T00:00:00Z", "2026-12-01T00:00:00Z/<x>",
                "2026-13-01 00:00:00/ab", "2026-12-01T00:00:00Z/" + "a" * 200, "é/é", "/\x00"):
        with session.get(f"{w.url}/ui/events", params={"after": bad}, stream=True,
                         timeout=30) as r:
            assert r.status_code == 400 and "after: not a cursor" in r.text, (bad, r.status_code)
    w.post_alerts(notification(alert("DemoDown", fingerprint="web", namespace="demo",
                                            deployment="web")))
    [made] = w.wait_executions(1)
    for header in ("garbage", "2026-12-01T00:00:00Z/a b", "2026-12-01T00:00:00Z/é", "/" * 300):
        with session.get(f"{w.url}/ui/events", params={"after": "/"}, stream=True, timeout=30,
                         headers={"Last-Event-ID": header}) as stream:
            assert stream.status_code == 200, header
            sent = _until_tick(stream.iter_lines())
        assert [json.loads(e["data"])["id"] for e in sent] == [made["id"]], (header, sent)


def test_a_live_stream_says_when_more_were_missed_than_it_sends(worker_factory):
    """Past one read's worth after the cursor, the stream sends the newest it read and says
    the rest is missing (the list asks for a reload), rather than read the whole history."""
    w = worker_factory()
    session = login(w.url, "alice", OPERATOR_TOKEN)
    page = session.get(f"{w.url}/ui/").text
    after = re.search(r'data-after="([^"]*)"', page).group(1)
    assert after.partition("@")[0] == "/"  # nothing drawn: everything recorded since is newer
    w.post_alerts(notification(*(alert("DemoDown", fingerprint=f"f{i}", namespace="demo",
                                       deployment=f"d{i}") for i in range(LATEST + 1))))
    w.wait_executions(LATEST + 1, timeout=60)
    with session.get(f"{w.url}/ui/events", params={"after": after}, stream=True,
                     timeout=30) as stream:
        sent = _until_tick(stream.iter_lines())
    # (The first tick's read from the page's position says it again.)
    assert [e["event"] for e in sent][:LATEST + 1] == ["decision"] * LATEST + ["gap"], sent
    assert {e["event"] for e in sent[LATEST + 1:]} <= {"gap"}, sent


def _next_sent(lines) -> list[dict[str, str]]:
    """The events of the stream's next tick that sends any."""
    for _ in range(60):
        if sent := _until_tick(lines):
            return sent
    raise AssertionError("no tick sent anything")


def _storm(w, count: int, name: str = "NoMatch") -> list[dict]:
    """One webhook of `count` alerts no playbook matches: as many decisions, newest first."""
    before = len(w.wait_executions(0))
    w.post_alerts(notification(*(alert(f"{name}{i}", fingerprint=f"{name}{i}")
                                 for i in range(count))))
    return w.wait_executions(before + count, timeout=60)[:count]


def test_a_live_stream_says_when_a_storm_outran_a_tick(worker_factory, held_ticks):
    """More than one read's worth (50) recorded between two ticks: the stream sent the newest
    50 and nothing else, so the list showed 50 of 300 and never asked for a reload. The
    stream's shared read is held while the webhook's 300 are recorded, as a storm outruns it."""
    w = worker_factory()
    session = login(w.url, "alice", OPERATOR_TOKEN)
    w.post_alerts(notification(alert("DemoDown", fingerprint="web", namespace="demo",
                                     deployment="web")))
    w.wait_executions(1)
    after = re.search(r'data-after="([^"]+)"', session.get(f"{w.url}/ui/").text).group(1)
    with session.get(f"{w.url}/ui/events", params={"after": after}, stream=True,
                     timeout=60) as stream:
        lines = stream.iter_lines()
        assert [e["id"] for e in _until_tick(lines)] == [after]  # the drawn one, as it is now
        let_go = held_ticks(w)
        storm = _storm(w, 300)
        let_go()
        sent = _next_sent(lines)
        assert [e["event"] for e in sent] == ["decision"] * LATEST + ["gap"], sent
        assert [json.loads(e["data"])["id"] for e in sent[:-1]] == \
            [d["id"] for d in storm[:LATEST][::-1]]
        # The stream goes on from the newest it sent: the next decision comes alone.
        [newest] = _storm(w, 1, "After")
        sent = _next_sent(lines)
    assert [(e["event"], json.loads(e["data"])["id"]) for e in sent] == \
        [("decision", newest["id"])], sent


def test_a_live_stream_sends_a_whole_read_without_a_gap(worker_factory, held_ticks):
    """A tick's read of 50 that holds the newest decision the browser had, and 49 new ones:
    each is sent, and no gap (the read proves nothing lies between)."""
    w = worker_factory()
    session = login(w.url, "alice", OPERATOR_TOKEN)
    w.post_alerts(notification(alert("DemoDown", fingerprint="web", namespace="demo",
                                     deployment="web")))
    w.wait_executions(1)
    with session.get(f"{w.url}/ui/events", stream=True, timeout=60) as stream:
        lines = stream.iter_lines()
        assert _until_tick(lines) == []
        let_go = held_ticks(w)
        storm = _storm(w, LATEST - 1)
        let_go()
        sent = _next_sent(lines)
    assert [e["event"] for e in sent] == ["decision"] * (LATEST - 1), sent
    assert [json.loads(e["data"])["id"] for e in sent] == [d["id"] for d in storm[::-1]]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_live_stream_sends_the_change_of_a_decision_older_than_its_reads(
        worker_factory, backend, request):
    """Each tick read the newest 50 decisions: a decision older than those that changed (here
    an approval answered, its step run: blocked, then failed) was never sent, and the list
    showed it blocked until a reload. Ticks read what was written since the last, on both
    stores."""
    settings = {"store": request.getfixturevalue("postgres_url")} if backend != "sqlite" else {}
    w = worker_factory(APPROVAL_RULES % {"url": "http://127.0.0.1:9/"}, mode="live", **settings)
    w.post_alerts(notification(alert("WebDown", fingerprint="w1")))
    [pending] = w.wait_executions(1)
    assert pending["outcome"] == "blocked"
    _storm(w, LATEST)  # 50 newer: the blocked one is past a read of the newest
    session = login(w.url, "victor", VIEWER_TOKEN)
    with session.get(f"{w.url}/ui/events", stream=True, timeout=60) as stream:
        lines = stream.iter_lines()
        assert _until_tick(lines) == []  # from now: the browser has drawn all of them
        decided = w.call(w.service.approve(pending["id"], by="alice"))
        assert decided["outcome"] not in ("blocked", "running"), decided
        sent: list[dict] = []
        while not any(e["outcome"] == decided["outcome"] for e in sent):
            sent += [json.loads(e["data"]) for e in _next_sent(lines)]
    # Only the changed one (as it ran, then as it ended; or as the browser drew it, once).
    assert {e["id"] for e in sent} == {pending["id"]}, sent


def test_a_live_stream_sends_an_outcome_that_changed_before_it_started(worker_factory):
    """The page drew a decision blocked on its approval; it was approved (its step ran, and
    failed) before the stream started (the page loading, or the stream down and reconnecting):
    the stream's first read took its new outcome for the one the browser had, and the list
    showed it blocked until a reload. The first read sends what it holds as it is now."""
    w = worker_factory(APPROVAL_RULES % {"url": "http://127.0.0.1:9/"}, mode="live")
    w.post_alerts(notification(alert("WebDown", fingerprint="w1")))
    [pending] = w.wait_executions(1)
    operator = login(w.url, "alice", OPERATOR_TOKEN)
    page = operator.get(f"{w.url}/ui/").text
    after = re.search(r'data-after="([^"]+)"', page).group(1)
    assert f'data-id="{pending["id"]}" data-outcome="{pending["outcome"]}"' in page
    confirm = operator.get(f"{w.url}/ui/executions/{pending['id']}/approve?step=restart").text
    operator.post(f"{w.url}/ui/executions/{pending['id']}/approve",
                  data={"step": "restart", "csrf": csrf(confirm)})
    for _ in range(300):
        [now] = w.wait_executions(1)
        if now["outcome"] != pending["outcome"]:
            break
        time.sleep(0.05)
    assert now["outcome"] != pending["outcome"], now
    with operator.get(f"{w.url}/ui/events", params={"after": after}, stream=True,
                      timeout=30) as stream:
        sent = _until_tick(stream.iter_lines())
    assert [(json.loads(e["data"])["id"], json.loads(e["data"])["outcome"]) for e in sent] == \
        [(pending["id"], now["outcome"])], sent


def test_a_live_stream_sends_a_record_committed_long_after_its_stamp(worker_factory,
                                                                     postgres_url):
    """The stream read decisions by `updated_at`, reaching 10 s back: a record stamped, then
    held in its transaction for longer (a row lock here; a long transaction, a slow commit
    in a storm), was committed behind every read that could see it, and the list kept the
    old outcome with no word. The stream reads in commit order: it sends it once committed."""
    w = worker_factory(store=postgres_url)
    w.post_alerts(notification(alert("DemoDown", fingerprint="web", namespace="demo",
                                     deployment="web")))
    [model] = w.wait_executions(1)
    store = w.service.store
    holder, watch = (w.call(asyncpg.connect(postgres_url)) for _ in range(2))
    session = login(w.url, "alice", OPERATOR_TOKEN)
    with session.get(f"{w.url}/ui/events", stream=True, timeout=60) as stream:
        lines = stream.iter_lines()
        assert _until_tick(lines) == []
        w.call(holder.execute("BEGIN"))
        w.call(holder.execute("SELECT 1 FROM executions WHERE id = $1 FOR UPDATE", model["id"]))
        stamped = store.now_iso()
        late = asyncio.run_coroutine_threadsafe(
            store.save_execution({**model, "outcome": "failed"}), w.loop)
        while not w.call(watch.fetchval(  # stamped, the write waits on the row
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'")):
            time.sleep(0.05)
        # Ticks go on until the store's clock is 15 s past the stamp: past any look-back.
        while store.now_iso() < earlier_by(stamped, -15):
            assert _until_tick(lines) == []  # not committed yet
        w.call(holder.execute("ROLLBACK"))
        late.result(timeout=30)
        sent = _next_sent(lines)
    assert [(json.loads(e["data"])["id"], json.loads(e["data"])["outcome"]) for e in sent] == \
        [(model["id"], "failed")], sent
    for db in (holder, watch):
        w.call(db.close())


def test_a_poll_sends_what_changed_since_its_cursor_and_ends(worker_factory):
    """A list past the browser's streams polls (`once=1`): each answer sends the changes
    since its cursor, however old the decision, then its position (`at`), and ends."""
    w = worker_factory(APPROVAL_RULES % {"url": "http://127.0.0.1:9/"}, mode="live")
    w.post_alerts(notification(alert("WebDown", fingerprint="w1")))
    [pending] = w.wait_executions(1)
    _storm(w, LATEST)  # newer: the blocked one is past the newest 50
    operator = login(w.url, "alice", OPERATOR_TOKEN)
    after = re.search(r'data-after="([^"]+)"', operator.get(f"{w.url}/ui/").text).group(1)
    nothing = operator.get(f"{w.url}/ui/events", params={"once": "1", "after": after})
    assert nothing.status_code == 200 and "event: decision" not in nothing.text, nothing.text
    decided = w.call(w.service.approve(pending["id"], by="alice"))["outcome"]
    polled = operator.get(f"{w.url}/ui/events", params={"once": "1", "after": after})
    at: list[str] = []  # (the answer ends: as if a tick followed)
    sent = _until_tick(iter([*polled.text.encode().split(b"\n"), b": keep-alive"]), at)
    assert [(json.loads(e["data"])["id"], json.loads(e["data"])["outcome"]) for e in sent
            if e["event"] == "decision"][-1:] == [(pending["id"], decided)], sent
    assert at and at[-1].partition("@")[2] != after.partition("@")[2]
    again = operator.get(f"{w.url}/ui/events", params={"once": "1", "after": at[-1]})
    assert "event: decision" not in again.text, again.text  # read once


SECURITY = {"Content-Security-Policy": CSP, "X-Frame-Options": "DENY",
            "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin"}


def test_console_answers_carry_the_security_headers_and_the_webhook_none(worker_factory):
    """Every console answer (a page, a redirect, a refused login, a viewer's refused act, a
    static file, a poll of the live stream) carries the security headers, `no-store` but on
    static files; the webhook's 202, the API and /metrics none of them (set by the server's
    middleware for console paths, not a signal every response paid for)."""
    w = worker_factory()
    viewer = login(w.url, "victor", VIEWER_TOKEN)
    answers = {
        "page": viewer.get(f"{w.url}/ui/"),
        "home redirect": requests.get(f"{w.url}/", allow_redirects=False),
        "login redirect": requests.get(f"{w.url}/ui/", allow_redirects=False),
        "refused login": requests.post(f"{w.url}/ui/login", data={"name": "victor",
                                                                "password": "wrong"}),
        "viewer's refused act": viewer.post(f"{w.url}/ui/control/pause",
                                            data={"csrf": csrf(viewer.get(f"{w.url}/ui/").text)}),
        "no such page": viewer.get(f"{w.url}/ui/nothing-here"),
        "poll": viewer.get(f"{w.url}/ui/events?once=1"),
        "static": requests.get(f"{w.url}/ui/static/console.js"),
    }
    statuses = {name: r.status_code for name, r in answers.items()}
    assert statuses == {"page": 200, "home redirect": 302, "login redirect": 303,
                        "refused login": 401, "viewer's refused act": 403, "no such page": 404,
                        "poll": 200, "static": 200}
    for name, r in answers.items():
        cache = None if name == "static" else "no-store"
        assert {k: r.headers.get(k) for k in [*SECURITY, "Cache-Control"]} == \
            {**SECURITY, "Cache-Control": cache}, name
    webhook = requests.post(f"{w.url}/alerts", json=notification(alert("WebDown")),
                            headers={"Authorization": f"Bearer {TOKEN}"})
    api = requests.get(f"{w.url}/api/v1/executions",
                       headers={"Authorization": f"Bearer {VIEWER_TOKEN}"})
    metrics = requests.get(f"{w.url}/metrics")
    assert (webhook.status_code, api.status_code, metrics.status_code) == (202, 200, 200)
    for r in (webhook, api, metrics):
        assert not set(SECURITY) & set(r.headers), r.url
    assert "Cache-Control" not in webhook.headers and "Cache-Control" not in metrics.headers
    assert api.headers["Cache-Control"] == "no-store"
