"""What a storm costs per alert, counted (never timed): the info log stays one line per
decision, a duplicate or a retry costs no decision and no line, and a decision's stored
bytes are compressed where it pays."""

from __future__ import annotations

import json
import logging
import sqlite3

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
    escalation: {severity: critical, always: true, owner: team-web,
                 next_steps: [check the rollout, roll back the last deploy]}
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


def test_decisions_are_stored_compressed_and_read_back_whole(tmp_path):
    rules = write_rules(tmp_path / "rules", RULES)
    db = tmp_path / "w.db"
    cfg = Config(rules=[str(rules)], store=f"sqlite:///{db}", webhook_token=TOKEN,
                 escalation_dir=str(tmp_path / "notes"), guards=loopback_guards())
    w = InProcessWorker(cfg).start()
    try:
        body = notification(*(alert("WebDown", deployment=f"web{i % 3}", fingerprint=f"f{i}")
                              for i in range(20)))
        assert w.post_alerts(body)[0] == 202
        w.wait_idle()
        decisions = w.call(w.service.store.list_executions(100))
    finally:
        w.stop()
    assert len(decisions) == 20
    assert any((d.get("escalation") or {}).get("note", "").startswith("# ") for d in decisions)
    as_json = sum(len(json.dumps({k: v for k, v in d.items() if k != "steps"})) for d in decisions)
    steps_json = sum(len(json.dumps(s)) for d in decisions for s in d["steps"])
    with sqlite3.connect(db) as conn:
        stored = conn.execute("SELECT sum(length(body)) FROM executions").fetchone()[0]
        stored_steps = conn.execute("SELECT sum(length(body)) FROM steps").fetchone()[0]
    assert stored < 0.6 * as_json, (stored, as_json)
    assert stored_steps < 0.8 * steps_json, (stored_steps, steps_json)
