"""A resolution cancels what its alert's execution still waits for, records it as resolved,
never runs the firing steps, and runs the playbook's `on_resolved` steps."""

import time

from tests.support.payloads import alert, notification

RULES = """
playbooks:
  - name: debug-logging
    match: {alertname: CertS3Degraded}
    target: {kind: deployment, namespace: deltacrown, name: deltacrown}
    guards: {cooldown: 1m}
    steps:
      - name: settle
        action: wait
        params: {duration: 60s}
        timeout: 90s
      - name: enable_debug
        action: http.request
        params: {url: "%(url)s", method: POST, json: {LOG_LEVEL: DEBUG}}
    on_resolved:
      - name: back_to_info
        action: http.request
        params: {url: "%(url)s", method: POST, json: {LOG_LEVEL: INFO}}
"""


def test_resolution_cancels_the_wait_and_runs_on_resolved(worker_factory, webhook_receiver):
    w = worker_factory(RULES % {"url": webhook_receiver.url}, mode="live")
    firing = alert("CertS3Degraded", fingerprint="c1", namespace="deltacrown")
    assert w.post_alerts(notification(firing))[0] == 202
    deadline = time.monotonic() + 10
    while not w.call(w.service.store.list_executions(10, outcome="running")):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    started = time.monotonic()
    resolved = alert("CertS3Degraded", status="resolved", fingerprint="c1", namespace="deltacrown")
    assert w.post_alerts(notification(resolved))[0] == 202
    decisions = {d["status"]: d for d in w.wait_executions(2)}
    assert time.monotonic() - started < 5  # did not sit out the 60 s wait
    cut_short = decisions["firing"]
    assert cut_short["outcome"] == "resolved"
    assert cut_short["reason"] == "the alert resolved while step 'settle' waited"
    assert [s["outcome"] for s in cut_short["steps"]] == ["cancelled"]  # enable_debug never ran
    assert decisions["resolved"]["outcome"] == "resolved"
    assert [d.body for d in webhook_receiver.deliveries] == [{"LOG_LEVEL": "INFO"}]


REVERT = """
playbooks:
  - name: debug-logging
    match: {alertname: CertS3Degraded}
    target: {kind: deployment, namespace: deltacrown, name: deltacrown}
    guards: {cooldown: 30m, rate_limit: {max: 10, window: 1h}}
    steps:
      - name: enable_debug
        action: http.request
        params: {url: "%(url)s", method: POST, json: {LOG_LEVEL: DEBUG}}
    on_resolved:
      - name: back_to_info
        action: http.request
        params: {url: "%(url)s", method: POST, json: {LOG_LEVEL: INFO}}
"""


def test_the_revert_of_an_episode_is_not_blocked_by_its_own_cooldown(worker_factory, webhook_receiver):
    w = worker_factory(REVERT % {"url": webhook_receiver.url}, mode="live")
    w.post_alerts(notification(alert("CertS3Degraded", fingerprint="c2")))
    assert w.wait_executions(1)[0]["outcome"] == "succeeded"
    w.post_alerts(notification(alert("CertS3Degraded", status="resolved", fingerprint="c2")))
    assert {d["outcome"] for d in w.wait_executions(2)} == {"succeeded", "resolved"}
    # A new episode inside the cooldown is a repeat, and is blocked.
    w.post_alerts(notification(alert("CertS3Degraded", fingerprint="c2", starts_at="2026-11-21T10:05:00Z")))
    third = [d for d in w.wait_executions(3) if d["alert"]["startsAt"].startswith("2026-11-21T10:05")]
    assert third[0]["outcome"] == "blocked" and third[0]["reason"].startswith("cooldown:")
    assert [d.body for d in webhook_receiver.deliveries] == [{"LOG_LEVEL": "DEBUG"}, {"LOG_LEVEL": "INFO"}]
