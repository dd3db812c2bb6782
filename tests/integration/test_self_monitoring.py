"""The gauges the self-monitoring rules (deploy/prometheus/remediator.rules.yml) alert on:
something left waiting for hours, measured from the store a real Service keeps."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

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


def _exposition(registry: CollectorRegistry) -> list[str]:
    """/metrics' lines less the `_created` values (each series' own creation time)."""
    return [re.sub(r"(_created(\{.*\})?) \S+$", r"\1", line)
            for line in generate_latest(registry).decode().splitlines()]


def test_intake_counts_are_exported_as_prometheus_clients_own_metrics_were():
    """Intake counts in plain numbers (IntakeCounts) and exports them at scrape time: the
    same series, HELP, types and values as the Counters and Histogram it replaced, for the
    same webhooks: cumulative buckets (a value on a bound counts in it), `_sum`, `_count`,
    `_created`, and a code outside the listed ones gets its series when first answered."""
    ours = Metrics()
    theirs = CollectorRegistry()
    received = Counter("remediator_alerts_received_total",
                       "Alerts received on the webhook, by status.", ["status"], registry=theirs)
    requests = Counter("remediator_webhook_requests_total",
                       "Webhook requests by HTTP status code.", ["code"], registry=theirs)
    ack = Histogram("remediator_webhook_ack_duration_seconds",
                    "Time from request to acknowledgement (alerts durably stored).",
                    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
                    registry=theirs)
    for status in ("firing", "resolved"):
        received.labels(status)
    for code in ("202", "400", "401", "403", "405", "413", "415", "499", "500", "503"):
        requests.labels(code)
    for status, n in (("firing", 3), ("resolved", 2), ("firing", 1)):
        ours.intake.by_status[status] += n
        received.labels(status).inc(n)
    for code in (202, 401, 202, 429, 413, 429):
        ours.intake.answered(code)
        requests.labels(str(code)).inc()
    for seconds in (0.0001, 0.0005, 0.0007, 0.01, 0.3, 1.0, 2.5, 0.004):
        ours.intake.acknowledged(seconds)
        ack.observe(seconds)
    names = ("remediator_alerts_received", "remediator_webhook_requests",
             "remediator_webhook_ack_duration_seconds")
    mine = [line for line in _exposition(ours.registry)
            if re.sub(r"^# (HELP|TYPE) ", "", line).startswith(names)]
    assert mine == _exposition(theirs)
    assert ours.registry.get_sample_value("remediator_webhook_ack_duration_seconds_bucket",
                                          {"le": "0.0005"}) == 2
    assert ours.registry.get_sample_value("remediator_webhook_requests_total",
                                          {"code": "429"}) == 2
