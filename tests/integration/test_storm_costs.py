"""What a storm costs per alert, counted (never timed): the info log stays one line per
decision, and a duplicate or a retry costs no decision and no line."""

from __future__ import annotations

import logging

from remediator.config import Config
from tests.conftest import write_rules
from tests.support.payloads import alert, notification
from tests.support.worker import TOKEN, InProcessWorker, loopback_guards

RULES = """
playbooks:
  - name: restart-web
    match: {alertname: WebDown}
    target: {kind: deployment, namespace: prod, name: "{{ labels.deployment }}"}
    guards: {rate_limit: {max: 2, window: 1h}}
    steps:
      - name: restart
        action: http.request
        params: {url: "http://127.0.0.1:9/restart", method: POST}
"""


def test_one_info_line_per_decision_and_none_for_duplicates(tmp_path, caplog):
    rules = write_rules(tmp_path / "rules", RULES)
    cfg = Config(rules=[str(rules)], store=f"sqlite:///{tmp_path}/w.db", webhook_token=TOKEN,
                 escalation_dir=str(tmp_path / "notes"), guards=loopback_guards())
    w = InProcessWorker(cfg).start()
    try:
        # planned, rate-limited (blocked), no_match and resolved decisions, then every
        # notification again: Alertmanager retrying, duplicates all
        batches = [notification(*(alert(name, deployment=f"web{i % 3}", fingerprint=f"{name}{i}")
                                  for i in range(10)))
                   for name in ("WebDown", "Unrelated")]
        batches.append(notification(*(alert("WebDown", status="resolved", deployment=f"web{i % 3}",
                                            fingerprint=f"WebDown{i}") for i in range(5))))
        with caplog.at_level(logging.INFO, logger="remediator"):
            for body in batches:
                assert w.post_alerts(body)[0] == 202
            w.wait_idle()
            decisions = w.call(w.service.store.list_executions(1000))
            before = len(caplog.records)
            for body in batches:
                assert w.post_alerts(body)[0] == 202
            w.wait_idle()
            again = w.call(w.service.store.list_executions(1000))
        lines = [r for r in caplog.records if r.name.startswith("remediator")
                 and r.levelno >= logging.INFO]
        outcomes = {d["outcome"] for d in decisions}
        assert {"planned", "blocked", "no_match"} <= outcomes, outcomes
        assert len(decisions) == 25 == len(again)  # the retries decided nothing
        per_decision = [r for r in lines if r.getMessage().startswith("decision ")]
        assert len(per_decision) == len(decisions)
        assert all("\n" not in r.getMessage() for r in per_decision)
        assert lines == per_decision, [r.getMessage() for r in lines if r not in per_decision]
        assert len(caplog.records) == before  # duplicates: not a line
    finally:
        w.stop()
