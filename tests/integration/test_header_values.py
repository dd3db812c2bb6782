"""An alert's text rendered into an HTTP header is checked like any other rendered value.

A summary or description spanning lines is ordinary; rendered into a header it cannot be
sent (a line break there is header injection: aiohttp refuses it before a byte is written).
The step is refused at its check, before admission, as a URL with an empty or `..` segment
is: nothing was sent, so nothing is uncertain and `on_resolved` has nothing to revert (it
was recorded as a change that may have landed, and its resolution sent the revert of a
scale-up that never happened). Real `serve` (in-process) and a real receiver on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
from http.server import BaseHTTPRequestHandler

import aiohttp
import pytest

from remediator.actions.base import maybe_applied, never_sent
from tests.support.payloads import alert, notification
from tests.support.procs import LOCALHOST, serve_http
from tests.support.webhook import WebhookReceiver

SCALE = """
playbooks:
  - name: hdr2
    match: {alertname: Hdr2}
    target: {kind: deployment, namespace: demo, name: hdr2}
    guards: {rate_limit: {max: 1000, window: 1h}}
    steps:
      - name: scale_up
        action: http.request
        params: {url: "%(base)s/scale_up", method: POST,
                 headers: {X-Reason: "{{ annotations.summary }}"}, json: {delta: 2}}
    on_resolved:
      - name: scale_back
        action: http.request
        params: {url: "%(base)s/scale_back", method: POST, json: {delta: -2}}
"""

# Each a character RFC 9110 forbids in a field value (CR, LF, NUL, DEL, another control).
HOSTILE = {"lf": "pods crash-looping\nsee runbook", "cr": "a\rX-Admin: yes", "nul": "a\x00b",
           "del": "a\x7fb", "esc": "a\x1b[31mb"}


def _base(receiver: WebhookReceiver) -> str:
    return receiver.url.removesuffix("/alerts")


def _fired(fingerprint: str, summary: str, status: str = "firing") -> dict:
    return alert("Hdr2", status=status, fingerprint=fingerprint, namespace="demo",
                 annotations={"summary": summary})


def test_a_line_break_in_a_header_value_refuses_the_step_and_reverts_nothing(
        worker_factory, webhook_receiver):
    w = worker_factory(SCALE % {"base": _base(webhook_receiver)}, mode="live")
    for done, (fingerprint, summary) in enumerate(HOSTILE.items()):  # one at a time: one
        assert w.post_alerts(notification(_fired(fingerprint, summary)))[0] == 202  # target
        w.wait_executions(done + 1)
    decisions = {d["fingerprint"]: d for d in w.wait_executions(len(HOSTILE))}
    assert set(decisions) == set(HOSTILE)
    for fingerprint, decision in decisions.items():
        assert decision["outcome"] == "failed", (fingerprint, decision["reason"])
        assert "header 'X-Reason'" in decision["reason"], decision["reason"]
        assert "control character" in decision["reason"], decision["reason"]
        [step] = decision["steps"]
        assert (step["outcome"], step["uncertain"]) == ("failed", False), step
        assert "may or may not have taken effect" not in step["detail"]
    # resolved: the firing run changed nothing, so nothing is scaled back
    for done, (fingerprint, summary) in enumerate(HOSTILE.items()):
        w.post_alerts(notification(_fired(fingerprint, summary, "resolved")))
        w.wait_executions(len(HOSTILE) + done + 1)
    resolved = [d for d in w.wait_executions(2 * len(HOSTILE)) if d["status"] == "resolved"]
    assert len(resolved) == len(HOSTILE)
    assert {d["reason"] for d in resolved} == {
        "the firing run changed nothing, so on_resolved has nothing to revert"}
    assert webhook_receiver.deliveries == []
    # A tab and text beyond ASCII are allowed in a field value: sent as they are.
    w.post_alerts(notification(_fired("ok", "pods\tcrash-looping: é")))
    [ok] = [d for d in w.wait_executions(len(HOSTILE) + 1 + len(HOSTILE))
            if d["fingerprint"] == "ok"]
    assert ok["outcome"] == "succeeded", ok["reason"]
    [sent] = webhook_receiver.deliveries
    assert (sent.path, sent.body) == ("/scale_up", {"delta": 2})


def test_a_dry_run_plans_the_same_step_as_refused(worker_factory, webhook_receiver):
    w = worker_factory(SCALE % {"base": _base(webhook_receiver)})  # dry-run, the default
    w.post_alerts(notification(_fired("lf", HOSTILE["lf"])))
    [decision] = w.wait_executions(1)
    assert decision["outcome"] == "failed" and "header 'X-Reason'" in decision["reason"]
    assert webhook_receiver.deliveries == []


FROM_FILE = """
playbooks:
  - name: hdr-secret
    match: {alertname: HdrSecret}
    target: {kind: deployment, namespace: demo, name: hdr2}
    guards: {rate_limit: {max: 1000, window: 1h}}
    steps:
      - name: scale_up
        action: http.request
        params: {url: "%(base)s/scale_up", method: POST, json: {delta: 2},
                 headers_from: {Authorization: {file: "%(token)s", prefix: "Bearer "}}}
"""


def test_a_secret_header_read_with_a_line_break_is_refused_unsent(
        worker_factory, webhook_receiver, tmp_path):
    """A token file of two lines (a copy and paste): read at call time, after admission, so
    refused then, as unsent, naming the file and never the secret."""
    token = tmp_path / "token"
    token.write_text("s3cr3t-first\ns3cr3t-second\n")
    w = worker_factory(FROM_FILE % {"base": _base(webhook_receiver), "token": token},
                       mode="live")
    w.post_alerts(notification(alert("HdrSecret", fingerprint="t", namespace="demo")))
    [decision] = w.wait_executions(1)
    [step] = decision["steps"]
    assert (decision["outcome"], step["uncertain"]) == ("failed", False), decision["reason"]
    assert f"headers_from Authorization: {token} holds a control character" in step["detail"]
    assert "s3cr3t" not in str(decision)
    assert webhook_receiver.deliveries == []


def test_a_header_aiohttp_refuses_to_write_was_never_sent(run, webhook_receiver):
    """Defence in depth: whatever a check misses, aiohttp's own refusal to serialise a header
    (before any byte is written) proves the request never left, so it is not uncertain."""
    async def post(headers: dict) -> BaseException:
        async with aiohttp.ClientSession() as session:
            try:
                async with session.post(webhook_receiver.url, headers=headers, json={}):
                    pass
            except Exception as exc:  # the error is what is examined
                return exc
        raise AssertionError("sent")

    for headers in ({"X-Reason": "a\nb"}, {"X-Reason\r\nX-Admin": "yes"}, {"X-Count": 3}):
        exc = run(post(headers))
        assert never_sent(exc) and not maybe_applied(exc), (headers, exc)
    assert webhook_receiver.deliveries == []


@pytest.mark.parametrize("url", ["http://[::1/x", "http://127.0.0.1:99999/x"])
def test_a_url_aiohttp_refuses_was_never_sent(run, url):
    async def post() -> BaseException:
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.InvalidURL) as refused:
                await asyncio.wait_for(session.post(url), 5)
        return refused.value

    exc = run(post())
    assert never_sent(exc) and not maybe_applied(exc)


def test_a_redirect_to_a_url_aiohttp_refuses_may_have_been_applied(run):
    """The first request went out (and was answered): only its redirect was refused."""
    posts: list[str] = []

    class Redirecting(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            posts.append(self.path)
            self.send_response(307)
            self.send_header("Location", "http://[::1/elsewhere")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server, port = serve_http(Redirecting)

    async def post() -> BaseException:
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.InvalidURL) as refused:
                await asyncio.wait_for(session.post(f"http://{LOCALHOST}:{port}/scale_up"), 5)
        return refused.value

    try:
        exc = run(post())
    finally:
        server.shutdown()
        server.server_close()
    assert posts == ["/scale_up"]
    assert not never_sent(exc) and maybe_applied(exc)
