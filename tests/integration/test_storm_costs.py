"""What a storm costs per alert, counted (never timed): the info log stays one line per
decision, a duplicate or a retry costs no decision and no line, and a decision's stored
bytes stay a few hundred per routine decision."""

from __future__ import annotations

import json
import logging
import sqlite3

import pytest

from remediator.config import Config
from remediator.store.postgres import PostgresStore
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
  - name: restart-slow-web
    match: {alertname: WebSlow}
    target: {kind: deployment, namespace: prod, name: "{{ labels.deployment }}"}
    guards: {rate_limit: {max: 2, window: 1h},
             time_windows: [{days: [], start: "00:00", end: "23:59"}]}  # never: blocked
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
        # planned, blocked (outside its time window), no_match and resolved decisions, then every
        # notification again: Alertmanager retrying, duplicates all
        batches = [notification(*(alert(name, deployment=f"web{i % 3}", fingerprint=f"{name}{i}")
                                  for i in range(10)))
                   for name in ("WebDown", "Unrelated")]
        batches.append(notification(*(alert("WebDown", status="resolved", deployment=f"web{i % 3}",
                                            fingerprint=f"WebDown{i}") for i in range(5))))
        batches.append(notification(*(alert("WebSlow", deployment=f"web{i}", fingerprint=f"s{i}")
                                      for i in range(5))))
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
        assert len(decisions) == 30 == len(again)  # the retries decided nothing
        per_decision = [r for r in lines if r.getMessage().startswith("decision ")]
        assert len(per_decision) == len(decisions)
        assert all("\n" not in r.getMessage() for r in per_decision)
        assert lines == per_decision, [r.getMessage() for r in lines if r not in per_decision]
        assert len(caplog.records) == before  # duplicates: not a line
    finally:
        w.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/w.db"
    return request.getfixturevalue("postgres_url")


def test_routine_decisions_cost_a_few_hundred_bytes_and_read_back_whole(tmp_path, store_url):
    """Planned (dry-run, with a rendered note), blocked and unmatched decisions: what the
    store keeps of each (body, steps, its inbox item, shared references) is counted, on both
    stores."""
    rules = write_rules(tmp_path / "rules", RULES)
    cfg = Config(rules=[str(rules)], store=store_url, webhook_token=TOKEN,
                 escalation_dir=str(tmp_path / "notes"), guards=loopback_guards())
    w = InProcessWorker(cfg).start()
    try:
        for name, count in (("WebDown", 40), ("Unrelated", 40), ("WebSlow", 4)):
            body = notification(*(alert(name, deployment=f"web{i % 3}", fingerprint=f"{name}{i}")
                                  for i in range(count)))
            assert w.post_alerts(body)[0] == 202
        w.wait_idle()
        decisions = w.call(w.service.store.list_executions(1000))
        stored = w.call(_stored_bytes(w.service.store))
        again = {d["id"]: d for d in w.call(w.service.store.list_executions(1000))}
    finally:
        w.stop()
    assert len(decisions) == 84
    assert {d["outcome"] for d in decisions} == {"planned", "blocked", "no_match"}
    assert sum(bool((d.get("escalation") or {}).get("note")) for d in decisions) >= 2
    assert all(again[d["id"]] == d for d in decisions)  # read back whole, steps included
    as_json = sum(len(json.dumps(d)) for d in decisions)
    # ~880 bytes each as JSON; stored with its inbox item ~190 (the references included,
    # shared by only 80 decisions here), where each body compressed alone and the item as
    # JSON kept ~750.
    assert stored / len(decisions) < 250, (stored / len(decisions), as_json / len(decisions))
    assert stored < as_json / 4


async def _stored_bytes(store) -> int:
    """Decision bodies, step records, inbox items and the references they share, as stored."""
    if isinstance(store, PostgresStore):
        return await store._pool.fetchval(
            "SELECT (SELECT coalesce(sum(octet_length(packed)), 0) FROM executions) + "
            "(SELECT coalesce(sum(coalesce(octet_length(packed), octet_length(body))), 0) "
            "FROM steps) + (SELECT coalesce(sum(octet_length(data)), 0) FROM refs) + "
            "(SELECT sum(coalesce(octet_length(packed), 0) + coalesce(octet_length(alert), 0) + "
            "coalesce(octet_length(grp), 0)) FROM inbox)")
    db = sqlite3.connect(store.path)
    try:
        return db.execute("SELECT (SELECT sum(length(body)) FROM executions) + (SELECT "
                          "coalesce(sum(length(body)), 0) FROM steps) + (SELECT sum(length(data)) "
                          "FROM refs) + (SELECT sum(length(alert) + length(grp)) FROM inbox)"
                          ).fetchone()[0]
    finally:
        db.close()
