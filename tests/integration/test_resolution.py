"""A resolution cancels what its alert's execution still waits for, records it as resolved,
never runs the firing steps, and runs the playbook's `on_resolved` steps when the firing run
changed something, under the same guards as any change. A firing run never changes anything
once its resolution is in."""

import time

from tests.integration.test_guards import Harness, web
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
    # Nothing was changed, so there is nothing to revert.
    assert decisions["resolved"]["reason"] == ("the firing run changed nothing, so on_resolved "
                                               "has nothing to revert")
    assert webhook_receiver.deliveries == []


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


GUARDED_REVERT = """
playbooks:
  - name: debug-logging
    match: {alertname: WebDown}
    target: {kind: deployment, namespace: prod, name: web}
    guards: {cooldown: 30m, time_windows: [{start: "08:00", end: "18:00"}]}%(when)s
    steps:
      - name: enable_debug
        action: http.request
        params: {url: "http://127.0.0.1:9/debug", method: POST}
    on_resolved:
      - name: back_to_info
        action: http.request
        params: {url: "http://127.0.0.1:9/info", method: POST}
    escalation: {severity: warning}
"""


def _harness(tmp_path, run, when: str = "") -> Harness:
    h = Harness(tmp_path, "{}")
    (tmp_path / "rules" / "web.yaml").write_text(GUARDED_REVERT % {"when": when})
    return run(h.start())


def _urls(h: Harness) -> list[str]:
    return [params["url"].rsplit("/", 1)[1] for params in h.params]


def test_a_revert_passes_the_run_guards_and_only_follows_a_change(tmp_path, run):
    h = _harness(tmp_path, run)
    h.params = []
    runner = h._runner

    async def recording(action, params, ctx):
        h.params.append(params)
        return await runner(action, params, ctx)
    h.service.executor.runner = recording
    # Blocked by the time window (19:00Z): nothing changed, so its resolution reverts nothing.
    [blocked] = run(h.fire(web(0), at=9 * 3600))
    assert blocked["outcome"] == "blocked" and blocked["reason"].startswith("time_window:")
    [nothing] = run(h.fire(web(0, status="resolved"), at=9 * 3600 + 60))
    assert nothing["outcome"] == "resolved" and "changed nothing" in nothing["reason"]
    assert _urls(h) == []
    # A change at 10:00; its revert asked while paused is blocked, and a human is told.
    [changed] = run(h.fire(web(60), at=3600))
    assert changed["outcome"] == "succeeded" and _urls(h) == ["debug"]
    run(h.service.store.put_state("paused", {"paused": True, "by": "alice"}))
    [paused] = run(h.fire(web(60, status="resolved"), at=3600 + 60))
    assert paused["outcome"] == "blocked" and paused["reason"].startswith("paused:")
    assert paused["reason"].endswith("what the firing run changed stays in place")
    assert paused["escalation"] is not None and _urls(h) == ["debug"]
    # Unpaused, the next episode's revert runs.
    run(h.service.store.put_state("paused", {"paused": False}))
    run(h.fire(web(120), at=2 * 3600))
    [reverted] = run(h.fire(web(120, status="resolved"), at=2 * 3600 + 60))
    assert reverted["outcome"] == "resolved" and _urls(h) == ["debug", "debug", "info"]
    run(h.service.stop())


def test_on_resolved_when_always_runs_after_a_blocked_firing_run(tmp_path, run):
    h = _harness(tmp_path, run, when="\n    on_resolved_when: always")
    [blocked] = run(h.fire(web(0), at=9 * 3600 - 1))  # 18:59:59Z: outside the window
    assert blocked["outcome"] == "blocked"
    # The revert itself is inside no window either: the same guard holds it.
    [held] = run(h.fire(web(0, status="resolved"), at=9 * 3600))
    assert held["outcome"] == "blocked" and held["reason"].startswith("time_window:")
    run(h.fire(web(1), at=1))  # 10:01Z: inside
    assert run(h.fire(web(1, status="resolved"), at=120))[0]["outcome"] == "resolved"
    assert len(h.calls) == 2  # the change and its revert
    run(h.service.stop())


def test_a_backlog_never_changes_what_already_recovered(tmp_path, run):
    """Firing and resolved acknowledged together (a backlog drained after an outage): the
    firing run stops before its change and records why."""
    h = run(Harness(tmp_path, "{cooldown: 1m}").start())
    both = [web(0), web(0, status="resolved")]
    decisions = {d["status"]: d for d in run(h.fire(*both))}
    firing = decisions["firing"]
    assert firing["outcome"] == "resolved"
    assert firing["reason"] == "the alert resolved before step 'restart'; it was not run"
    assert [s["outcome"] for s in firing["steps"]] == ["cancelled"]
    assert h.calls == []
    run(h.service.stop())


REVERT_PER_DEPLOYMENT = """
playbooks:
  - name: debug-logging
    match: {alertname: Debug}
    target: {kind: deployment, namespace: prod, name: "{{ labels.deployment }}"}
    guards: {rate_limit: {max: 10, window: 1h}}
    steps:
      - name: enable_debug
        action: http.request
        params: {url: "http://127.0.0.1:9/debug/{{ labels.deployment }}", method: POST}
    on_resolved:
      - name: back_to_info
        action: http.request
        params: {url: "http://127.0.0.1:9/info/{{ labels.deployment }}", method: POST}
"""


def test_a_revert_is_decided_by_the_firing_run_on_its_own_target(tmp_path, run):
    """Whether a resolution reverts is read from the firing run of its episode (found by
    fingerprint and startsAt, which the sender gives): a resolution whose target is not
    the one that run changed (another deployment under that fingerprint, or a target
    template a reload changed) reverts nothing there, and says what stays changed."""
    h = Harness(tmp_path, "{cooldown: 1m}")
    (tmp_path / "rules" / "debug.yaml").write_text(REVERT_PER_DEPLOYMENT)
    run(h.start())
    firing = alert("Debug", fingerprint="f1", deployment="web")
    assert run(h.fire(firing))[0]["outcome"] == "succeeded"
    assert len(h.calls) == 1
    [d] = run(h.fire(dict(firing, status="resolved", labels={**firing["labels"],
                                                             "deployment": "api"})))
    assert len(h.calls) == 1, d  # api was never put in debug: nothing to take it out of
    assert d["outcome"] == "escalated", d["reason"]
    assert d["reason"] == ("the firing run changed prod/deployment/web, not this alert's "
                           "target prod/deployment/api: on_resolved was not run; what it "
                           "changed stays in place")
    assert d["escalation"] is not None
    # The same episode's own resolution reverts what its firing run changed.
    firing = alert("Debug", fingerprint="f2", deployment="db")
    assert run(h.fire(firing))[0]["outcome"] == "succeeded"
    [d] = run(h.fire(dict(firing, status="resolved")))
    assert d["outcome"] == "resolved" and len(h.calls) == 3
    run(h.service.stop())
