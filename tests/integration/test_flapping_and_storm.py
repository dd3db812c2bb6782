"""No runaway automation, through the real HTTP intake and dispatcher on a simulated clock:
a flapping alert and an alert storm never exceed the configured limits."""

from __future__ import annotations

from remediator.config import Config
from remediator.engine.executor import Executor
from remediator.playtest import FakeClock
from tests.conftest import write_rules
from tests.integration.test_guards import START
from tests.support.payloads import alert, notification
from tests.support.worker import TOKEN, InProcessWorker, loopback_guards

RULES = """
playbooks:
  - name: restart-web
    match: {alertname: WebDown}
    target: {kind: deployment, namespace: prod, name: "{{ labels.deployment }}"}
    guards:
      rate_limit: {max: %(per_target)d, window: 1h}
      circuit_breaker: {max_refires: 3, window: 1h}
    steps:
      - name: restart
        action: http.request
        params: {url: "http://127.0.0.1:9/restart", method: POST}
    escalation: {severity: critical}
"""


def _worker(tmp_path, per_target: int, budget: int = 30) -> tuple[InProcessWorker, list, FakeClock]:
    calls: list[str] = []

    async def runner(action, params, ctx):
        calls.append(ctx.execution_id)
        return {"status": 202}

    rules = write_rules(tmp_path / "rules", RULES % {"per_target": per_target})
    cfg = Config(rules=[str(rules)], store=f"sqlite:///{tmp_path}/w.db", mode="live",
                 webhook_token=TOKEN, escalation_dir=str(tmp_path / "notes"), workers=8,
                 guards=loopback_guards(budget_max=budget))
    clock = FakeClock(START)
    worker = InProcessWorker(cfg, clock=clock, executor=Executor(runner=runner, retry_wait=0))
    return worker.start(), calls, clock


def test_flapping_alert_acts_at_most_the_limit_then_opens_the_circuit_once(tmp_path):
    w, calls, clock = _worker(tmp_path, per_target=5)
    try:
        for minute in range(10):  # fires again every minute, a new episode each time
            clock.now = START + minute * 60
            episode = alert("WebDown", deployment="web", fingerprint="web",
                            starts_at=f"2026-01-05T10:{minute:02d}:00Z")
            assert w.post_alerts(notification(episode))[0] == 202
            w.wait_idle()
        decisions = sorted(w.wait_executions(10), key=lambda d: d["alert"]["startsAt"])
        assert [d["outcome"] for d in decisions] == ["succeeded"] * 3 + ["blocked"] * 7
        assert len(calls) == 3
        reasons = [d["reason"].split(":")[0] for d in decisions[3:]]
        assert reasons == ["circuit_open"] * 7
        notes = list((tmp_path / "notes").glob("*.md"))
        assert len(notes) == 1 and "remediation is not working" in notes[0].read_text()
    finally:
        w.stop()


def test_alert_storm_stays_within_limits_and_records_every_alert(tmp_path):
    w, calls, _ = _worker(tmp_path, per_target=2, budget=30)
    try:
        alerts = [alert("WebDown", deployment=f"svc{i % 20}", fingerprint=f"f{i}",
                        starts_at=f"2026-01-05T10:00:{i % 60:02d}Z", replica=str(i))
                  for i in range(1000)]
        for batch in range(0, 1000, 50):
            status, body = w.post_alerts(notification(*alerts[batch:batch + 50]))
            assert (status, body["accepted"]) == (202, 50)
        w.wait_idle()
        decisions = w.call(w.service.store.list_executions(5000))
        assert len(decisions) == 1000  # every alert recorded
        assert len(calls) == 30  # 20 targets x 2 would be 40: the global budget caps at 30
        per_target: dict[str, int] = {}
        for d in decisions:
            if d["outcome"] == "succeeded":
                per_target[d["target"]] = per_target.get(d["target"], 0) + 1
        assert max(per_target.values()) <= 2
        blocked = {d["reason"].split(":")[0] for d in decisions if d["outcome"] == "blocked"}
        assert blocked <= {"rate_limited", "locked", "circuit_open"} and "rate_limited" in blocked
    finally:
        w.stop()
