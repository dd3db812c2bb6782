"""A run left `blocked approval_pending` with no pending-approval entry is finished once.

Expiry and withdrawal read only the pending entries, and an approval needs one: a run whose
entry was lost (older code removed it as it decided the approval, then the run's record was
refused) stayed blocked for ever, its alert neither remediated nor paged. The maintenance
pass finds such runs by an index their own record keeps, and finishes them as an expired
approval's run is: escalated, one note. Real stores (SQLite, and the suite's PostgreSQL),
notes counted at a real HTTP receiver.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from typing import Any

import pytest

from remediator.guards import APPROVAL, PENDING, decide_approval
from remediator.store.postgres import PostgresStore
from tests.conftest import write_rules
from tests.integration.test_guards import web
from tests.integration.test_note_once import _hooked
from tests.integration.test_withdrawn_approval import FIRING, _store, replicas
from tests.support.payloads import alert, notification
from tests.support.worker import WorkerProcess

STRANDED = "approval_pending: step 'restart' was not approved before it expired; it did not run"


# A blocked record whose body cannot be read, with an approval state: the migration that
# indexes the runs waiting on one leaves it out (logged) rather than fail, and not open.
DAMAGED = ("INSERT INTO executions (id, created_at, updated_at, alertname, playbook, outcome, "
           "fingerprint, {body}) VALUES ('damaged', 'x', 'x', 'A', 'pb', 'blocked', 'f', {bad}); "
           "INSERT INTO state (key, value) VALUES ('approval:damaged:s', '{{}}');")


async def _passed_twice(h: Any, execution_id: str) -> tuple[Any, list[dict], list]:
    """Two maintenance passes: the run as each left it, and what still awaits after them."""
    seen = []
    for _ in range(2):
        await h.service.maintain()
        seen.append(await h.service.store.get_execution(execution_id))
    left = await h.service.store.awaiting_approval()
    await h.service.stop()
    return h, seen, left


def _finished_once(h: Any, seen: list[dict], left: list, receiver: Any) -> None:
    """Escalated as stranded by the first pass, written once, nothing run, one note."""
    for done in seen:
        assert (done["outcome"], done["reason"]) == ("escalated", STRANDED + (
            " (the run was left waiting on it, and finished by the maintenance pass)")), done
        assert done["finished_at"] == seen[0]["finished_at"]  # written once
    assert left == [] and h.calls == []
    outcomes = [d.body["outcome"] for d in receiver.deliveries]
    assert outcomes == ["blocked", "escalated"], outcomes


def _downgrade(h: Any, cluster: Any) -> None:
    """The store as the version before left it: no index of runs waiting on an approval."""
    if cluster is None:
        with sqlite3.connect(h.cfg.store.removeprefix("sqlite:///")) as db:
            db.executescript("DROP INDEX executions_awaiting; ALTER TABLE executions DROP "
                             "COLUMN awaiting; DROP INDEX executions_seq; ALTER TABLE "
                             "executions DROP COLUMN seq; PRAGMA user_version=3; "
                             + DAMAGED.format(
                                 body="body", bad="x'789c00'"))
        return
    cluster.sql("DROP INDEX executions_awaiting; ALTER TABLE executions DROP COLUMN awaiting; "
                "DELETE FROM remediator_schema WHERE version >= 12; " + DAMAGED.format(
                    body="packed", bad="'\\x789c00'::bytea"), h.cfg.store.rsplit("/", 1)[1])


@pytest.mark.parametrize("upgraded", [False, True], ids=["lost", "older-code"])
@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_a_run_whose_expired_approval_lost_its_entry_is_finished_once(
        tmp_path, run, webhook_receiver, request, store, upgraded, caplog):
    """The approval expired and its entry went, its run's record left blocked (older code,
    or a store that upgraded from it: the migration indexes the runs already waiting). The
    next maintenance pass finishes it, escalated, with one note; later passes write nothing."""
    url, cluster = _store(request, store)

    async def scenario() -> tuple[Any, list[dict], list]:
        h = await _hooked(tmp_path, webhook_receiver, approval=True, store=url, always=True)
        [pending] = await h.fire(web(0))
        name = f"{pending['id']}:restart"
        h.clock.now += 7200  # past the TTL: older code decided, then its record was refused
        await decide_approval(h.service.store, name, "expired", h.clock.now)
        if upgraded:
            await h.service.stop()
            _downgrade(h, cluster)
            await h.start()
        return await _passed_twice(h, pending["id"])

    _finished_once(*run(scenario()), webhook_receiver)
    unread = [r.getMessage() for r in caplog.records if "cannot be read to index" in
              r.getMessage()]
    assert unread == (["execution damaged cannot be read to index it (error: Error -5 while "
                       "decompressing data: incomplete or truncated stream)"] if upgraded
                      else []), unread


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_a_stranded_run_still_to_be_processed_is_left_to_that_run(
        tmp_path, run, webhook_receiver, request, store):
    """Its entry lost while the approval was still pending: while its alert is claimed (a
    resume, a retry, a claim a dead replica left), the pass leaves the run to whoever
    processes it; once nothing will, it finishes the run, the approval decided (nobody can
    give it any more: approving needs the entry)."""
    url, _ = _store(request, store)

    async def scenario() -> tuple[Any, dict, dict, dict]:
        h = await _hooked(tmp_path, webhook_receiver, approval=True, store=url, always=True)
        service = h.service
        [pending] = await h.fire(web(0))
        name = f"{pending['id']}:restart"
        await service.store.put_state(PENDING + name, None)  # lost; the approval pending
        item = await service.store.claim_key(FIRING)
        await service.maintain()
        held = await service.store.get_execution(pending["id"])
        await service.store.finish(item.id)
        await service.maintain()
        done = await service.store.get_execution(pending["id"])
        state = await service.store.get_state(APPROVAL + name)
        await service.stop()
        return h, held, done, state

    h, held, done, state = run(scenario())
    assert held["outcome"] == "blocked" and held["reason"].startswith("approval_pending")
    assert (done["outcome"], done["reason"]) == ("escalated", (
        "approval_pending: step 'restart' could no longer be approved (its pending approval "
        "was lost); it did not run (the run was left waiting on it, and finished by the "
        "maintenance pass)")), done
    assert state["status"] == "expired" and h.calls == []
    outcomes = [d.body["outcome"] for d in webhook_receiver.deliveries]
    assert outcomes == ["blocked", "escalated"], outcomes


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_an_approved_run_never_resumed_is_finished_and_its_approval_lapses(
        tmp_path, run, webhook_receiver, request, store):
    """Approved, its resume never ran (its item done, its pending entry gone): the pass
    finishes the run, escalated, and the approval lapses, so that nothing acts on it after
    (`test_a_crash_while_the_pass_finishes_...` below: a crash before the record)."""
    url, _ = _store(request, store)

    async def scenario() -> tuple[Any, dict, dict]:
        h = await _hooked(tmp_path, webhook_receiver, approval=True, store=url, always=True)
        [pending] = await h.fire(web(0))
        name = f"{pending['id']}:restart"
        await decide_approval(h.service.store, name, "approved", h.clock.now, by="alice")
        await h.service.maintain()
        done = await h.service.store.get_execution(pending["id"])
        state = await h.service.store.get_state(APPROVAL + name)
        await h.service.stop()
        return h, done, state

    h, done, state = run(scenario())
    assert (done["outcome"], done["reason"]) == ("escalated", (
        "approval_pending: step 'restart' was approved by alice, but the run was never "
        "resumed; it did not run (the run was left waiting on it, and finished by the "
        "maintenance pass)")), done
    assert (state["status"], state["by"]) == ("lapsed", "alice") and h.calls == []
    outcomes = [d.body["outcome"] for d in webhook_receiver.deliveries]
    assert outcomes == ["blocked", "escalated"], outcomes


def _unindexed(h: Any, cluster: Any, execution_id: str) -> None:
    """The record as a replica of the version before the index writes it: no `awaiting`."""
    sql = f"UPDATE executions SET awaiting = NULL WHERE id = '{execution_id}'"
    if cluster is None:
        with sqlite3.connect(h.cfg.store.removeprefix("sqlite:///")) as db:
            db.execute(sql)
    else:
        cluster.sql(sql, h.cfg.store.rsplit("/", 1)[1])


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_a_run_an_old_replica_strands_in_a_rolling_upgrade_is_finished_once(
        tmp_path, run, webhook_receiver, request, store):
    """A replica of the version before the index (still running, a rolling upgrade under
    way) blocked the run, unindexed, and its expiry removed the pending entry as it decided,
    then its record was refused: nothing indexed the run, nothing finished it. A pass that
    listed the entry and finds it gone reads its run (one read per approval decided), and
    indexes a run still waiting on it; the index's own path finishes it, once."""
    url, cluster = _store(request, store)

    async def scenario() -> tuple[Any, list[dict], list]:
        h = await _hooked(tmp_path, webhook_receiver, approval=True, store=url, always=True)
        [pending] = await h.fire(web(0))
        name = f"{pending['id']}:restart"
        _unindexed(h, cluster, pending["id"])
        await h.service.maintain()  # lists the entry
        h.clock.now += 7200  # the old replica's expiry: decided, unindexed, record refused
        await decide_approval(h.service.store, name, "expired", h.clock.now)
        return await _passed_twice(h, pending["id"])

    _finished_once(*run(scenario()), webhook_receiver)


def test_two_replicas_passing_at_once_finish_a_stranded_run_once(
        tmp_path, run, webhook_receiver, postgres_url):
    """Two replicas' maintenance passes at the same moment (PostgreSQL): one finishes the
    run, the other finds it final (passes take turns, `Service.maintain`); one note."""

    async def scenario() -> tuple[list[dict], int]:
        a, b = await replicas(tmp_path, webhook_receiver, postgres_url)
        [pending] = await a.fire(web(0))
        for h in (a, b):
            h.clock.now += 7200
        await decide_approval(a.service.store, f"{pending['id']}:restart", "expired",
                              a.clock.now)
        await asyncio.gather(a.service.maintain(), b.service.maintain())
        seen = [await h.service.store.get_execution(pending["id"]) for h in (a, b)]
        await a.service.stop()
        await b.service.stop()
        return seen, len(a.calls) + len(b.calls)

    seen, calls = run(scenario())
    assert seen[0] == seen[1] and seen[0]["reason"].startswith(STRANDED), seen[0]["reason"]
    assert calls == 0
    outcomes = [d.body["outcome"] for d in webhook_receiver.deliveries]
    assert outcomes == ["blocked", "escalated"], outcomes


GATED = """
playbooks:
  - name: gated
    match: {alertname: Gated}
    target: {kind: deployment, namespace: demo, name: web}
    guards: {rate_limit: {max: 10, window: 1h}}
    steps:
      - name: restart
        action: http.request
        approval: required
        params: {url: "%s", method: POST, json: {fp: "{{ alert.fingerprint }}"}}
"""
# The maintenance pass's final record of a stranded run, held in the database (a trigger
# that sleeps) while the process is killed: a crash between its claim and its record.
STALL = ("CREATE FUNCTION stall() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN PERFORM "
         "pg_sleep(600); RETURN NEW; END $$; CREATE TRIGGER stall BEFORE INSERT OR UPDATE ON "
         "executions FOR EACH ROW WHEN (NEW.outcome = 'escalated') EXECUTE FUNCTION stall()")
STALLED = "FROM pg_stat_activity WHERE wait_event = 'PgSleep' AND datname = current_database()"


def test_a_crash_while_the_pass_finishes_an_approved_stranded_run_never_acts_later(
        tmp_path, webhook_receiver, postgres_cluster, postgres_url):
    """An approval given whose run was never resumed (its pending entry gone, its item
    done): the maintenance pass finishes the run, escalated, saying the approval was not
    acted on. kill -9 after the pass claimed the alert and before its record: the claim
    is taken over and the run resumed, and the step ran after all, hours late, on an
    approval the pass had decided not to honour. Now the pass says so in the approval's
    state first (in the section approvals are decided in): resumed, the run meets it and
    does not act."""
    database = postgres_url.rsplit("/", 1)[1]
    rules = [str(write_rules(tmp_path / "rules", GATED % webhook_receiver.url))]
    env = {"REMEDIATOR_STORE_LEASE": "3s"}
    a = WorkerProcess(tmp_path, rules, mode="live", store=postgres_url, extra_env=env).start()
    try:
        assert a.post_alerts(notification(alert("Gated", fingerprint="g1")))[0] == 202
        [blocked] = a.decided()
        assert blocked["reason"].startswith("approval_pending"), blocked
        postgres_cluster.sql(STALL, database)

        async def strand() -> None:  # approved, and its resume never ran
            store = PostgresStore(postgres_url)
            await store.open()
            try:
                await decide_approval(store, f"{blocked['id']}:restart", "approved",
                                      time.time(), by="alice")
            finally:
                await store.close()

        asyncio.run(strand())
        deadline = time.monotonic() + 30  # the next pass, within its 10 s
        while postgres_cluster.sql(f"SELECT count(*) {STALLED}", database) != "1":
            assert time.monotonic() < deadline, a.logs()
            time.sleep(0.1)
        a.kill9()
    finally:
        a.stop()
        postgres_cluster.sql(f"SELECT pg_terminate_backend(pid) {STALLED}", database)
        postgres_cluster.sql("DROP FUNCTION stall() CASCADE", database)
    b = WorkerProcess(tmp_path, rules, mode="live", store=postgres_url, extra_env=env).start()
    try:
        deadline = time.monotonic() + 30
        while (done := _decision(postgres_url, blocked["id"]))["outcome"] == "running" \
                or done["reason"].startswith("approval_pending"):  # (running: before its note)
            assert time.monotonic() < deadline, b.logs()
            time.sleep(0.2)
    finally:
        assert b.stop() == 0
    assert webhook_receiver.deliveries == [], done
    assert (done["outcome"], done["reason"]) == ("blocked", (
        "approval_expired: step 'restart': approved by alice, but never acted on: its run "
        "was not resumed, and the maintenance pass finished it without it")), done


def _decision(url: str, execution_id: str) -> dict[str, Any]:
    async def read() -> dict[str, Any]:
        store = PostgresStore(url, read_only=True)
        await store.open()
        try:
            return await store.get_execution(execution_id)
        finally:
            await store.close()

    return asyncio.run(read())
