"""The gauges the self-monitoring rules (deploy/prometheus/remediator.rules.yml) alert on:
something left waiting for hours, measured from the store a real Service keeps."""

from __future__ import annotations

from datetime import UTC, datetime

from prometheus_client import generate_latest

from remediator.metrics import Metrics
from tests.integration.test_guards import START, Harness, web


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_waiting_approval_stuck_execution_and_pause_are_measured(tmp_path, run):
    h = run(Harness(tmp_path, "{cooldown: 1m, approval_ttl: 4h}", approval=True).start())
    service = h.service

    def gauges() -> list[float | None]:
        return [service.metrics.registry.get_sample_value(f"remediator_{name}") for name in (
            "paused", "paused_seconds", "oldest_running_execution_age_seconds",
            "oldest_pending_approval_age_seconds")]

    run(service.maintain())
    assert gauges() == [0, 0, 0, 0]

    [blocked] = run(h.fire(web(0)))  # asks for approval at START
    assert blocked["outcome"] == "blocked"
    stuck = {**blocked, "id": "stuck-run", "outcome": "running", "reason": "",
             "created_at": _iso(START - 3 * 3600)}
    run(service.store.save_execution(stuck))
    run(service.store.put_state("paused", {"paused": True, "by": "alice", "at": START + 600}))
    h.clock.now = START + 40 * 60
    run(service.maintain())
    assert gauges() == [1, 30 * 60, 3 * 3600 + 40 * 60, 40 * 60]

    run(service.approve(blocked["id"], by="alice", approve=False))
    run(service.store.put_state("paused", {"paused": False, "by": "alice", "at": START}))
    stuck["outcome"] = "failed"
    run(service.store.save_execution(stuck))
    run(service.maintain())
    assert gauges() == [0, 0, 0, 0]
    run(service.stop())


def test_webhook_rejections_exist_at_zero_so_the_first_one_counts():
    """`increase()` of a series that appears at 1 is 0: the first 401 or 413 of a fresh
    process would never alert."""
    text = generate_latest(Metrics().registry).decode()
    for code in ("401", "413", "400", "503"):
        assert f'remediator_webhook_requests_total{{code="{code}"}} 0.0' in text
