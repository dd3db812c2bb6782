"""Waiting never starves urgent work: executions asleep in a verification hold no worker, so
a playbook that pages a human gets its note out while dozens of them wait. A real
`remediator serve` with `workers: 4`, polling a real Prometheus."""

from __future__ import annotations

import time

import pytest

from tests.conftest import write_rules
from tests.support.payloads import alert, notification
from tests.support.prometheus import prometheus_config
from tests.support.worker import WorkerProcess

RULES = """
playbooks:
  - name: verify
    match: {alertname: Verify}
    steps:
      - name: verify
        action: prometheus.wait_until
        params: {query: "vector(0) > 1", timeout: 10m, interval: 1s}
        timeout: 11m
  - name: page
    match: {alertname: Page}
    steps:
      - name: evidence
        action: prometheus.query
        params: {query: "vector(1)"}
    escalation: {severity: critical, always: true, sinks: [hook]}
"""


@pytest.mark.parametrize("waiting", [8, 64])
def test_a_paging_note_goes_out_while_executions_wait(tmp_path, waiting, prometheus_factory,
                                                       webhook_receiver):
    prom = prometheus_factory(prometheus_config())
    rules = write_rules(tmp_path / "rules", RULES)
    config = {"escalation": {"sinks": {"hook": {"type": "webhook", "url": webhook_receiver.url}}}}
    env = {"REMEDIATOR_WORKERS": "4", "REMEDIATOR_PROMETHEUS_URL": prom.url,
           "REMEDIATOR_GRACE_PERIOD": "1s"}
    w = WorkerProcess(tmp_path, [str(rules)], mode="live", extra_env=env, config=config).start()
    try:
        verifications = [alert("Verify", fingerprint=f"v{i}") for i in range(waiting)]
        assert w.post_alerts(notification(*verifications))[0] == 202
        deadline = time.monotonic() + 60
        while len(w.executions(outcome="running")) < waiting:
            assert time.monotonic() < deadline, w.logs()
            time.sleep(0.1)
        started = time.monotonic()
        assert w.post_alerts(notification(alert("Page", fingerprint="page")))[0] == 202
        note = webhook_receiver.wait_for(lambda d: d.body.get("alertname") == "Page", timeout=60)
        took = time.monotonic() - started
        assert note.body["severity"] == "critical"
        # Delivered before the waits ended: every verification is still polling.
        assert len(w.executions(outcome="running", alertname="Verify")) == waiting
        print(f"\npaging note delivered {took:.2f}s after its alert, "
              f"with {waiting} executions waiting on verification (workers: 4)")
    finally:
        w.stop()
