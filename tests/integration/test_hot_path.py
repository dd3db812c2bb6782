"""The storm's hot path, counted (never timed): intake has priority over processing in the
store's group commit, the dispatcher starts a bounded number of executions at once, and a
playbook's templates are compiled once, not per decision."""

from __future__ import annotations

import asyncio
import re

from remediator import templating
from remediator.config import Config
from remediator.service import Service
from remediator.store import open_store
from remediator.store.sqlite import PROCESSING_PER_COMMIT, SQLiteStore
from tests.conftest import write_rules
from tests.support.payloads import alert, notification
from tests.support.worker import TOKEN, InProcessWorker, loopback_guards

RULES = """
playbooks:
  - name: restart-web
    match: {alertname: WebDown}
    target: {kind: deployment, namespace: prod, name: "{{ labels.deployment }}"}
    guards: {rate_limit: {max: 100, window: 1h}}
    steps:
      - name: look
        action: log
        params: {message: "{{ labels.deployment }} is down"}
        when: "labels.deployment != 'none'"
      - name: restart
        action: http.request
        params: {url: "http://127.0.0.1:9/restart/{{ labels.deployment }}", method: POST}
    escalation: {severity: critical, always: true, owner: "team {{ labels.team }}",
                 summary: "{{ labels.deployment }} down",
                 next_steps: ["check {{ labels.deployment }}", roll back the last deploy]}
"""


def _transactions(statements: list[str]) -> list[list[str]]:
    """The statements of each committed transaction, in order."""
    out, current = [], None
    for sql in statements:
        if sql == "BEGIN IMMEDIATE":
            current = []
        elif sql == "COMMIT":
            out.append(current)
            current = None
        elif current is not None:
            current.append(sql)
    return out


def test_intake_joins_the_next_commit_ahead_of_queued_processing_writes(run, tmp_path):
    """A commit takes every webhook's rows and a bounded share of processing's writes; the
    rest follow in the next commits. (Before, one commit took them all and resumed every
    waiting execution at once: a webhook's 202 waited behind all of their work.)"""
    async def scenario():
        store = SQLiteStore(f"sqlite:///{tmp_path}/s.db")
        await store.open()
        statements: list[str] = []
        store._db.set_trace_callback(statements.append)  # type: ignore[union-attr]
        try:
            processing = [store.put_state(f"k{i}", {"i": i}) for i in range(3 * PROCESSING_PER_COMMIT)]
            intake = [store.enqueue([(f"a{i}", {"n": i}, {})]) for i in range(3)]
            tasks = [asyncio.ensure_future(c) for c in [*processing, *intake]]
            await asyncio.gather(*tasks)
            assert len(await store.list_state("k")) == 3 * PROCESSING_PER_COMMIT  # all committed
        finally:
            await store.close()
        commits = _transactions(statements)
        first = commits[0]
        assert sum(s.startswith("INSERT OR IGNORE INTO inbox") for s in first) == 3
        assert sum(s.startswith("INSERT OR REPLACE INTO state") for s in first) == \
            PROCESSING_PER_COMMIT
        assert len(commits) >= 3
    run(scenario())


def test_the_dispatcher_claims_a_bounded_batch_and_templates_compile_once(tmp_path):
    rules = write_rules(tmp_path / "rules", RULES)
    cfg = Config(rules=[str(rules)], store=f"sqlite:///{tmp_path}/w.db", webhook_token=TOKEN,
                 escalation_dir=str(tmp_path / "notes"), guards=loopback_guards())
    w = InProcessWorker(cfg).start()
    statements: list[str] = []
    try:
        w.call(_trace(w.service, statements))

        def storm(tag: str) -> None:
            body = notification(*(alert("WebDown", deployment=f"web{i}", team="a",
                                        fingerprint=f"{tag}{i}") for i in range(30)))
            assert w.post_alerts(body)[0] == 202
            w.wait_idle()

        storm("first")
        compiled = templating._template.cache_info().misses + \
            templating._expression.cache_info().misses
        used = templating._template.cache_info().hits + templating._expression.cache_info().hits
        storm("again")
        decisions = w.call(w.service.store.list_executions(1000))
        assert len(decisions) == 60
        assert {d["outcome"] for d in decisions} == {"planned"}
        assert any("team a" in (d.get("escalation") or {}).get("note", "") for d in decisions)
        # 30 more decisions rendered the same templates again, and compiled none of them
        assert templating._template.cache_info().hits + \
            templating._expression.cache_info().hits >= used + 30 * 4
        assert templating._template.cache_info().misses + \
            templating._expression.cache_info().misses == compiled
    finally:
        w.stop()
    claims = [int(m.group(1)) for s in statements
              if (m := re.search(r"state='pending' ORDER BY id LIMIT (\d+)", s))]
    assert claims and max(claims) <= Service.claim_batch, claims
    assert len(claims) >= 60 // Service.claim_batch
    # a dry run's decision is written once (no `running` record first: nothing is called)
    assert sum(s.startswith("INSERT INTO executions") for s in statements) == 60


async def _trace(service: Service, statements: list[str]) -> None:
    service.store._db.set_trace_callback(statements.append)  # type: ignore[attr-defined]


def test_postgres_hands_a_connection_back_without_a_reset_unless_it_held_a_section(run,
                                                                                 postgres_url):
    """asyncpg resets every connection it takes back (advisory unlock all, CLOSE ALL,
    UNLISTEN, RESET ALL): a second round trip for each statement. Only a critical section's
    connection, which held a session advisory lock, needs it; and intake has a connection
    of its own, so a webhook's commit never queues behind processing for the pool."""
    async def scenario():
        store = open_store(postgres_url)
        await store.open()
        try:
            queries: list[str] = []
            async with store._pool.acquire() as db:  # the pool's one connection so far
                # (the lease heartbeat's renewals may run on it too: not counted)
                db.add_query_logger(lambda q: "lease_until" in q.query or queries.append(q.query))
            for i in range(5):
                await store.get_state(f"k{i}")
            assert len(queries) == 5, queries
            async with store.critical("x"):
                await store.get_state("inside")
            await store.get_state("after")
            assert sum("pg_advisory_unlock_all" in q for q in queries) == 1, queries
            assert len(queries) == 5 + 4 + 1  # lock, read, unlock, reset; one read after
            intake: list[str] = []
            async with store._intake_pool.acquire() as db:
                db.add_query_logger(lambda q: intake.append(q.query))
            await store.enqueue([("a1", {"n": 1}, {})])
            assert any(q.startswith("INSERT INTO inbox") for q in intake), intake
            assert not any(q.startswith("INSERT INTO inbox") for q in queries)
        finally:
            await store.close()
    run(scenario())
