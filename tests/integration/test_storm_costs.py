"""What a storm costs per alert, counted (never timed): the info log stays one line per
decision, a duplicate or a retry costs no decision and no line, and a decision's stored
bytes stay a few hundred per routine decision."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import sqlite3
from datetime import UTC, datetime

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


def test_a_routine_decision_takes_under_1kb_of_postgresql_files(postgres_url):
    """The floor where it is paid: the relation files (heap, TOAST, every index, the dead
    versions the claim and the finish leave) grow by less than 1 KB per routine decision.
    Thousands of decisions, so pages round off to a few bytes each, after a warm-up that
    fills the first pages; autovacuum off (a storm shorter than its nap time never sees
    it), so nothing depends on when it runs. Measured ~925 B; the previous layout (an
    index per outcome, one of done items, decisions compressed at zlib's level 1) ~1 040."""
    asyncio.run(_physical_bytes_per_decision(postgres_url))


async def _physical_bytes_per_decision(url: str) -> None:
    store = PostgresStore(url)
    await store.open()
    try:
        tables = [r["relname"] for r in await store._pool.fetch(
            "SELECT relname FROM pg_class WHERE relkind = 'r' AND relnamespace = "
            "'public'::regnamespace")]
        for table in tables:
            await store._pool.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = off, "
                                      "toast.autovacuum_enabled = off)")
        size = ("SELECT sum(pg_total_relation_size(oid)) FROM pg_class WHERE relkind = 'r' "
                "AND relnamespace = 'public'::regnamespace")
        rng = random.Random(17)
        await _decide(store, rng, 500)
        before = await store._pool.fetchval(size)
        await _decide(store, rng, 3000)
        per_decision = (await store._pool.fetchval(size) - before) / 3000
        assert per_decision < 1000, per_decision
    finally:
        await store.close()


async def _decide(store: PostgresStore, rng: random.Random, count: int) -> None:
    """`count` alerts acknowledged, claimed, decided (planned, with a note; blocked;
    no_match) and finished in the decision's write, as the engine does, in batches as a
    storm brings them."""
    for _ in range(count // 100):
        batch = []
        for i in range(100):
            fp = f"{rng.getrandbits(64):016x}"  # Alertmanager's: 16 hex digits
            a = alert(("WebDown", "WebDown", "WebSlow", "Unrelated")[i % 4], fingerprint=fp,
                      deployment=f"web{i % 3}", namespace="prod", severity="critical")
            group = {k: v for k, v in notification(a).items() if k != "alerts"}
            batch.append((f"{fp}:{a['startsAt']}:firing", a, group))
        assert (await store.enqueue(batch)).accepted == 100
        for item in await store.claim(100):
            await store.save_execution(_routine_decision(item.alert, item.group, rng),
                                       finishes=item.id)


def _routine_decision(a: dict, group: dict, rng: random.Random) -> dict:
    """A decision shaped as the engine's (see test above): ids, times and the alert vary."""
    name, deployment = a["labels"]["alertname"], a["labels"]["deployment"]
    execution_id = f"{rng.getrandbits(80):020x}"
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    decision = {"id": execution_id, "created_at": now, "fingerprint": a["fingerprint"],
                "alertname": name, "status": "firing", "playbook": None, "mode": "dry-run",
                "outcome": "no_match", "reason": "no playbook matches this alert",
                "target": None, "steps": [], "escalation": None}
    if name != "Unrelated":
        step = {"name": "restart", "action": "http.request",
                "params": {"url": "http://127.0.0.1:9/restart", "method": "POST"},
                "outcome": "planned", "detail": f"POST http://127.0.0.1:9/restart ({deployment})",
                "guard": "", "mutating": True, "uncertain": False, "result": {}, "attempts": 0,
                "started_at": "", "duration_seconds": 0.0}
        note = (f"# [CRITICAL] {name}: {deployment} is down \u2014 planned\n\n- **Owner:** "
                f"team-web\n- **Playbook:** `restart-web` (dry-run)\n- **Execution:** "
                f"`{execution_id}`\n\n## Alert\n\n- **Status:** firing, started "
                f"{a['startsAt']}\n- **Labels:** " + ", ".join(
                    f"`{k}={v}`" for k, v in sorted(a["labels"].items())) +
                "\n\n## Timeline\n\n1. `restart` (http.request): **planned**\n\n## Next steps"
                "\n\n- check the rollout\n- roll back the last deploy\n")
        decision.update(playbook="restart-web", target=f"deployment/prod/{deployment}",
                        outcome="planned", reason="", steps=[step],
                        escalation={"severity": "critical", "team": "team-web",
                                    "title": f"[CRITICAL] {name}", "deliveries": {},
                                    "note": note})
        if name == "WebSlow":
            decision.update(outcome="blocked", reason="time_window: outside the allowed "
                            "windows", steps=[], blocked_step=None, escalation=None)
    decision.update(alert=a, group=group, finished_at=now)
    return decision


def test_a_commit_writes_its_few_changed_pages_in_small_pages_to_sqlites_wal(run, tmp_path):
    """A commit appends every page it changed to SQLite's WAL, whole (and the checkpointer
    copies each again): an alert's dedupe key and a decision's id are random, so each lands
    on its own leaf of a large index, a few hundred bytes changed per page. Pages of 2 KiB
    halve those bytes (and their checksums, copies and checkpoint) against SQLite's default
    of 4 KiB. Counted over a store of thousands of rows: the WAL's bytes per commit of one
    alert, and of one decision's record."""
    from remediator.store.sqlite import SQLiteStore

    def decision(i: int) -> dict:
        labels = {"alertname": "WebDown", "deployment": f"web{i}", "namespace": "prod"}
        return {"id": f"{random.getrandbits(80):020x}", "created_at": "2026-11-21T10:00:00Z",
                "fingerprint": f"{random.getrandbits(64):016x}", "alertname": "WebDown",
                "status": "firing", "playbook": "restart-web", "mode": "dry-run",
                "outcome": "planned", "reason": "", "target": f"deployment/prod/web{i}",
                "steps": [], "escalation": None,
                "alert": {"status": "firing", "labels": labels, "annotations": {},
                          "startsAt": "2026-11-21T10:00:00Z", "endsAt": "", "generatorURL": "",
                          "fingerprint": ""}}

    def item(i: int) -> tuple:
        d = decision(i)
        return (f"{d['fingerprint']}:{d['alert']['startsAt']}:firing", d["alert"], {})

    async def main() -> tuple[float, float]:
        store = SQLiteStore(f"sqlite:///{tmp_path}/w.db")
        await store.open()
        try:
            for _ in range(10):  # thousands of rows: indexes of many leaves
                await store.enqueue([item(i) for i in range(500)])
                await asyncio.gather(*(store.save_execution(decision(i)) for i in range(500)))
            # The WAL emptied (the checkpointer's last pass truncates it): frames from 0.
            await asyncio.to_thread(store._checkpointer.stop)
            store._checkpointer = None
            wal = tmp_path / "w.db-wal"
            at = wal.stat().st_size
            n = 50
            for i in range(n):
                await store.enqueue([item(i)])
            alert_bytes = (wal.stat().st_size - at) / n
            at = wal.stat().st_size
            for i in range(n):
                await store.save_execution(decision(i))
            return alert_bytes, (wal.stat().st_size - at) / n
        finally:
            await store.close()

    alert_bytes, decision_bytes = run(main())
    # ~8 KiB an alert (4 KiB pages: ~13.5 KiB, three pages and their frames' headers); a
    # decision's record ~10.5 KiB, a fourth page since the live stream reads by commit order
    # (`executions_seq`: its newest leaf, shared by a storm's group commit), 4 KiB pages ~18
    assert alert_bytes < 10 << 10, alert_bytes
    assert decision_bytes < 12 << 10, decision_bytes
