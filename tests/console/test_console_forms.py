"""The console's forms and pages over real HTTP (no browser): an unauthenticated console's
forms work and take no other instance's cookie, a deep link survives the login, a circuit
reset that closes nothing says so, a decided step offers no button, and a path the console
does not have is a console page."""

from __future__ import annotations

import re

import requests

from tests.conftest import APPROVAL_RULES
from tests.console.test_console_http import csrf, login
from tests.support.payloads import alert, notification
from tests.support.worker import OPERATOR_TOKEN

GATED = APPROVAL_RULES % {"url": "http://127.0.0.1:9/"}
SECRET = "one-secret-file-for-two-instances-0123456789"


def test_unauthenticated_console_forms_work_and_take_no_other_instances_cookie(worker_factory):
    """Forms were bound to the session cookie, which an unauthenticated console has none of:
    Pause and Approve were shown and always refused 403, beside a Log out for `anonymous`.
    And they were bound to whatever `remediator_session` the browser held: cookies ignore
    ports, so another instance's session on the same host made its tokens pass here."""
    mine = worker_factory(GATED, mode="live", allow_unauthenticated=True, operators=[],
                          console_session_secret=SECRET)
    other = worker_factory(console_session_secret=SECRET)  # logged in, on another port
    mine.post_alerts(notification(alert("WebDown", fingerprint="w1")), token=None)
    [blocked] = mine.wait_executions(1)
    browser = requests.Session()
    page = browser.get(f"{mine.url}/ui/control")
    assert page.status_code == 200 and "Pause automation" in page.text
    assert "Log out" not in page.text and "/ui/logout" not in page.text
    paused = browser.post(f"{mine.url}/ui/control/pause", data={"csrf": csrf(page.text)})
    assert paused.status_code == 200 and "Paused</strong> by anonymous" in paused.text
    assert mine.call(mine.service.store.get_state("paused"))["by"] == "anonymous"
    # A decision, through its confirmation page, as the console's buttons lead.
    confirm = browser.get(f"{mine.url}/ui/executions/{blocked['id']}/reject?step=restart")
    decided = browser.post(f"{mine.url}/ui/executions/{blocked['id']}/reject",
                           data={"step": "restart", "csrf": csrf(confirm.text)})
    assert decided.status_code == 200, decided.text[-300:]
    state = mine.call(mine.service.store.get_state(f"approval:{blocked['id']}:restart"))
    assert (state["status"], state["by"]) == ("rejected", "anonymous")

    # The same browser logs in to the other instance: its session cookie now goes to both.
    theirs = browser.post(f"{other.url}/ui/login",
                          data={"name": "alice", "password": OPERATOR_TOKEN, "next": "/ui/control"})
    assert theirs.url == f"{other.url}/ui/control" and "Log out" in theirs.text
    assert "remediator_session" in browser.cookies
    foreign = csrf(theirs.text)  # the other instance's token for that cookie
    refused = browser.post(f"{mine.url}/ui/control/resume", data={"csrf": foreign})
    assert refused.status_code == 403 and "CSRF" in refused.text
    assert mine.call(mine.service.store.get_state("paused"))["paused"]
    # A forms cookie this instance did not sign (planted by a page of another port: same
    # site) is replaced, and a token made for it is refused.
    name = next(c.name for c in browser.cookies if c.name.startswith("remediator_forms_"))
    planted = requests.Session()
    planted.cookies.set(name, "planted|not-signed", domain="127.0.0.1", path="/ui")
    page = planted.get(f"{mine.url}/ui/control")
    assert planted.cookies.get(name, path="/ui") != "planted|not-signed"
    assert planted.post(f"{mine.url}/ui/control/resume",
                        data={"csrf": csrf(page.text)}).status_code == 200


def test_login_keeps_every_parameter_of_a_deep_link(worker_factory):
    w = worker_factory()
    browser = requests.Session()
    deep = "/ui/?outcome=planned&playbook=demo-restart&since=24h"
    form = browser.get(f"{w.url}{deep}")
    assert "/ui/login" in form.url
    target = re.search(r'name="next" value="([^"]+)"', form.text).group(1)
    assert target.replace("&amp;", "&") == deep
    r = browser.post(f"{w.url}/ui/login",
                     data={"name": "alice", "password": OPERATOR_TOKEN, "next": deep})
    assert r.url == f"{w.url}{deep}"


def test_console_says_what_it_cannot_do(worker_factory):
    w = worker_factory(GATED, mode="live")
    w.post_alerts(notification(alert("WebDown", fingerprint="w1")))
    [blocked] = w.wait_executions(1)
    operator = login(w.url, "alice", OPERATOR_TOKEN)
    token = csrf(operator.get(f"{w.url}/ui/control").text)
    # A reset that closes nothing (closed already, by another operator) redirected to
    # Control as if it had worked.
    r = operator.post(f"{w.url}/ui/control/reset",
                      data={"csrf": token, "target": blocked["target"], "playbook": "restart-web"})
    assert r.status_code == 404, (r.status_code, r.url)
    assert f"no circuit of restart-web on {blocked['target']} to reset; open now: none" in r.text
    assert 'class="top"' in r.text  # the console's page
    # A decided step's confirmation offers no button to decide it again.
    url = f"{w.url}/ui/executions/{blocked['id']}/approve?step=restart"
    assert "Approve as alice" in operator.get(url).text
    operator.post(url.split("?")[0], data={"csrf": token, "step": "restart"})
    page = operator.get(url).text
    assert "has no pending approval" in page and "Approve as alice" not in page
    assert 'id="confirm"' not in page
    # A path the console does not have: a console page, its policy and all; and an icon.
    for path in ("/ui/nowhere", "/ui/executions/x/y/z"):
        missing = operator.get(f"{w.url}{path}")
        assert missing.status_code == 404 and 'class="top"' in missing.text, path
        assert "has no page" in missing.text
        assert "script-src 'self'" in missing.headers["Content-Security-Policy"]
    assert "<script" not in operator.get(f"{w.url}/ui/%3Cscript%3E").text.replace(
        '<script src="/ui/static/console.js', "")
    icon = operator.get(f"{w.url}/ui/static/favicon.svg")
    assert icon.status_code == 200 and icon.headers["Content-Type"] == "image/svg+xml"
    assert 'rel="icon" href="/ui/static/favicon.svg"' in page
