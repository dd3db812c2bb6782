"""The Store contract, against both backends: the embedded SQLite file and a real PostgreSQL.

Then what only a shared store must do, with several store instances (replicas) on one
PostgreSQL database: one acceptance per dedupe key, disjoint claims, leases that a dead
replica's work is taken over after, locks and critical sections across replicas.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
import zlib
from datetime import datetime, timedelta

import asyncpg
import pytest

from remediator import event_loop
from remediator.metrics import Metrics
from remediator.store import open_store, packing, sqlite
from remediator.store.base import (
    PAUSE,
    PAUSED,
    RESOLVED,
    Enqueued,
    LeaseLost,
    Limit,
    StoreUnavailable,
)
from remediator.store.postgres import PostgresStore, _section
from remediator.store.postgres_schema import MIGRATIONS
from remediator.store.url import redact


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/contract.db"
    return request.getfixturevalue("postgres_url")


def _alert(n: int, status: str = "firing") -> dict:
    return {"status": status, "labels": {"alertname": "A", "n": str(n)}, "annotations": {},
            "startsAt": "2026-01-01T00:00:00Z", "endsAt": "", "fingerprint": f"f{n}"}


def _rows(*numbers: int) -> list:
    return [(f"k{n}", _alert(n), {"receiver": "r"}) for n in numbers]


def _decision(i: str, outcome: str = "succeeded", playbook: str = "pb") -> dict:
    return {"id": i, "created_at": f"2026-01-01T00:00:0{i[-1]}Z", "alertname": "A",
            "playbook": playbook, "outcome": outcome, "fingerprint": "f1", "reason": "",
            "alert": _alert(1), "steps": []}


async def _opened(url: str, lease: float = 30.0):
    store = open_store(url, lease=lease)
    await store.open()
    return store


def test_each_alert_reads_back_its_own_notifications_group(run, store_url):
    """A notification's group is encoded once for its alerts (`packing.item_texts`, by the
    group's identity): never attached to another notification's alerts, whether they come
    one after another (each group freed, its address soon another's) or join one commit."""
    def rows(i: int) -> list:
        group = {"receiver": "r", "groupKey": f"g{i}", "commonLabels": {"n": str(i)}}
        return [(f"k{i}.{j}", _alert(i * 10 + j), group) for j in range(2)]

    async def scenario():
        store = await _opened(store_url)
        for i in range(40):
            await store.enqueue(rows(i))
        await asyncio.gather(*(store.enqueue(rows(i)) for i in range(40, 80)))
        claimed = await store.claim(200)
        assert len(claimed) == 160
        for item in claimed:
            i = item.dedupe_key[1:].split(".")[0]
            assert item.group["groupKey"] == f"g{i}", (item.dedupe_key, item.group)
            assert item.alert["labels"]["n"] == str(int(item.dedupe_key[1:].replace(".", "")))
        await store.close()

    run(scenario())


def test_inbox_dedupes_claims_finishes_and_resumes_after_a_restart(run, store_url):
    async def scenario():
        store = await _opened(store_url)
        assert await store.enqueue(_rows(1, 2, 3)) == Enqueued(3, 0)
        assert await store.enqueue(_rows(2, 3, 4)) == Enqueued(1, 2)  # a retry, an HA peer
        assert await store.pending_count() == 4
        first = await store.claim(2)
        assert [i.dedupe_key for i in first] == ["k1", "k2"]
        assert first[0].alert == _alert(1) and first[0].group == {"receiver": "r"}
        rest = await store.claim(10)
        assert [i.dedupe_key for i in rest] == ["k3", "k4"]
        assert await store.claim(10) == []  # running items are not handed out twice
        assert await store.held("k1") and not await store.held("k9")
        await store.finish(first[0].id)
        assert not await store.held("k1")  # finished: its run stopped
        await store.close()  # k2, k3, k4 were running: the process stopped
        store = await _opened(store_url)
        await store.release_running()
        again = await store.claim(10)
        assert [i.dedupe_key for i in again] == ["k2", "k3", "k4"]
        for item in again:
            await store.finish(item.id)
        await store.requeue("k1")  # an approval queues a finished alert again
        assert [i.dedupe_key for i in await store.claim(10)] == ["k1"]
        assert await store.enqueue(_rows(1)) == Enqueued(0, 1)  # still a duplicate after finishing
        # A firing run asks whether its resolution was acknowledged, processed or not.
        assert await store.received("k4") and not await store.received("k9")
        await store.close()

    run(scenario())


def test_an_item_received_again_is_kept_by_the_prune(run, store_url):
    """`refresh_inbox`: an item sent again (a still-firing alert's resend) is received again,
    so the retention's prune keeps it, and its resends stay duplicates; one received since
    `before` is left as it is."""
    async def scenario():
        store = await _opened(store_url)
        await store.enqueue(_rows(1, 2))
        for item in await store.claim(10):
            await store.finish(item.id)
        await store.close()  # the lazily marked `done` written
        store = await _opened(store_url)
        later, latest = "2999-01-01T00:00:00.000000Z", "2999-01-02T00:00:00.000000Z"
        assert await store.refresh_inbox(["k1", "k9"], later, latest) == 1
        assert await store.refresh_inbox(["k1"], later, latest) == 0  # received since
        assert await store.prune_inbox(later) == 1  # k2 only
        # Its reference outlives the history's prune: k1 was received after the cutoff,
        # with a reference made before it (the prune deleted it, k1 then unreadable).
        await store.prune_history(time.time() + packing.WINDOW + 3600)
        await store.close()
        store = await _opened(store_url)
        await store.requeue("k1")
        assert [(i.dedupe_key, i.alert) for i in await store.claim(10)] == [("k1", _alert(1))]
        assert await store.enqueue(_rows(1, 2)) == Enqueued(1, 1)
        await store.close()

    run(scenario())


def test_items_enqueued_claimed_are_the_new_ones_and_no_one_elses_to_claim(run, store_url):
    """`replay`'s intake: its new alerts come back claimed, a key already received is a
    duplicate (not handed back), and no worker's claim takes the claimed ones."""
    async def scenario():
        store = await _opened(store_url)
        assert await store.enqueue(_rows(1)) == Enqueued(1, 0)  # serve's, pending
        result = await store.enqueue_claimed(_rows(1, 2, 3))
        assert (result.accepted, result.duplicates) == (2, 1)
        assert [(i.dedupe_key, i.alert, i.group) for i in result.claimed] == [
            ("k2", _alert(2), {"receiver": "r"}), ("k3", _alert(3), {"receiver": "r"})]
        assert await store.held("k2") and not await store.held("k1")
        assert [i.dedupe_key for i in await store.claim(10)] == ["k1"]  # only serve's
        for item in result.claimed:
            await store.finish(item.id)
        assert await store.settled("k2") and await store.enqueue(_rows(2)) == Enqueued(0, 1)
        await store.close()

    run(scenario())


def test_an_item_that_cannot_be_read_is_finished_not_claimed_before_the_rest_for_ever(
        run, store_url, caplog, request):
    """A stored alert that no longer decodes (corrupt bytes, a reference gone) came first in
    every claim and failed it: nothing acknowledged after it was ever processed."""
    async def scenario():
        store = await _opened(store_url)
        await store.enqueue(_rows(1, 2, 3))
        garbage = "UPDATE inbox SET alert = 'x', grp = 'x', %s WHERE dedupe_key = 'k2'"
        if store_url.startswith("sqlite"):
            with sqlite3.connect(sqlite.path_from_url(store_url)) as db:
                db.execute(garbage % "ref = ref")  # packed into `alert` against its ref
        else:
            cluster = request.getfixturevalue("postgres_cluster")
            cluster.sql(garbage % "packed = '\\x00ff'::bytea", store_url.rsplit("/", 1)[1])
        items = await store.claim(10)
        assert [i.dedupe_key for i in items] == ["k1", "k3"]
        assert await store.claim(10) == []  # k2 is finished, not claimable again
        assert not await store.held("k2")
        assert "k2 (inbox item" in caplog.text and "cannot be read" in caplog.text
        for item in items:
            await store.finish(item.id)
        assert await store.pending_count() == 0
        await store.close()

    run(scenario())


def test_executions_steps_events_and_state(run, store_url):
    async def scenario():
        store = await _opened(store_url)
        await store.save_execution(_decision("e1", "running"))
        await store.save_step("e1", 0, {"name": "s", "outcome": "running"})
        await store.save_step("e1", 0, {"name": "s", "outcome": "succeeded"})
        await store.save_step("e1", 1, {"name": "t", "outcome": "failed"})
        await store.save_execution(_decision("e1", "failed"))
        await store.save_execution(_decision("e2", "succeeded", playbook="other"))
        got = await store.get_execution("e1")
        assert got["outcome"] == "failed"
        assert [s["outcome"] for s in got["steps"]] == ["succeeded", "failed"]
        assert await store.get_execution("nope") is None
        assert (await store.completed_steps("e1"))[1]["name"] == "t"
        assert [d["id"] for d in await store.list_executions(10)] == ["e2", "e1"]
        assert [d["id"] for d in await store.list_executions(10, outcome="failed")] == ["e1"]
        assert [d["id"] for d in await store.list_executions(10, playbook="other")] == ["e2"]
        assert [d["id"] for d in await store.list_executions(1)] == ["e2"]

        await store.record_event("mutation", "pb:t", 100.0, {"step": "s"})
        await store.record_event("mutation", "pb:t", 200.0)
        await store.record_event("mutation", "pb:u", 300.0)
        assert await store.events_since("mutation", "pb:t", 150.0) == [(200.0, {})]
        # a rate-limit key rendered from labels: any string intake accepts, any length
        for key in ("a\x00b", "é" * 8192 + "x", "é" * 8192 + "y"):
            await store.record_event("mutation", key, 400.0)
            assert await store.count_events("mutation", key, 0.0) == 1
        await store.put_state("approval:e1", {"status": "pending"})
        await store.put_state("approval:e2", {"status": "approved"})
        await store.put_state("approvalx", {"status": "other"})
        assert await store.get_state("approval:e1") == {"status": "pending"}
        assert list(await store.list_state("approval:")) == ["approval:e1", "approval:e2"]
        await store.put_state("approval:e1", None)
        assert await store.get_state("approval:e1") is None
        # Removed only while it holds the value read: one written since (another replica's) stays
        note = {"id": "e2", "reason": "é \ud7ff", "n": 1.5, "labels": {"z": "1", "a": "2"}}
        await store.put_state("spool:e2:hook", {**note, "n": 2})
        await store.drop_state("spool:e2:hook", note, durable=False)
        assert await store.get_state("spool:e2:hook") == {**note, "n": 2}
        await store.drop_state("spool:e2:hook", await store.get_state("spool:e2:hook"))
        assert await store.get_state("spool:e2:hook") is None
        await store.close()

    run(scenario())


def test_states_written_together_and_swapped_only_from_what_was_read(run, store_url):
    """An approval's decision and its pending entry go in one write (`put_states`); a
    circuit opens only over the state its judgement read (`swap_state`)."""
    async def scenario():
        store = await _opened(store_url)
        await store.put_state("approval-pending:e1:s", {"expires_at": 1.0})
        await store.put_states({"approval:e1:s": {"status": "approved"},
                                "approval-pending:e1:s": None, "gone": None})
        assert await store.list_state("approval") == {"approval:e1:s": {"status": "approved"}}
        await store.enqueue(_rows(1))
        item = await store.claim_key("k1")
        await store.put_states({"approval:e1:s": {"status": "rejected"}}, claim=item)
        assert await store.get_state("approval:e1:s") == {"status": "rejected"}
        opened = {"opened_at": 1.0, "until": 2.5, "reset_at": 0.5}
        assert await store.swap_state("circuit:pb:t", None, opened)
        assert not await store.swap_state("circuit:pb:t", None, {"until": 9.0})
        reset = {"reset_at": 2.0, "until": 2.0}
        assert await store.swap_state("circuit:pb:t", opened, reset)
        assert not await store.swap_state("circuit:pb:t", opened, {"until": 9.0})
        assert await store.get_state("circuit:pb:t") == reset
        await store.close()

    run(scenario())


def test_states_written_with_a_claim_taken_over_are_not_written(run, postgres_url):
    """A replica whose claim another took over (its lease lapsed while it was frozen) writes
    nothing with it, though its own renewals have not told it yet."""
    async def scenario():
        store = await _opened(postgres_url)
        await store.enqueue(_rows(1))
        item = await store.claim_key("k1")
        db = await asyncpg.connect(postgres_url)
        try:
            await db.execute("UPDATE inbox SET owner='another' WHERE id=$1", item.id)
        finally:
            await db.close()
        with pytest.raises(LeaseLost):
            await store.put_states({"approval:e1:s": {"status": "approved"}}, claim=item)
        assert await store.get_state("approval:e1:s") is None
        await store.close()

    run(scenario())


def test_states_written_with_a_claim_since_lapsed_and_taken_again_are_not_written(
        run, postgres_url):
    """A's claim lapsed (frozen past its lease), B took the item over and finished it (the
    run blocked again, its approval still pending), and A claimed it again (another of its
    tasks): the owner is A again, but not by the claim A's late approval relied on. Checked
    by the owner alone, that approval was written over a run another claim had just left
    blocked on it: escalated as approved but never resumed. Each claim is its own token."""
    async def scenario():
        a, b = await _opened(postgres_url), await _opened(postgres_url)
        db = await asyncpg.connect(postgres_url)
        try:
            await a.enqueue(_rows(1))
            first = await a.claim_key("k1")
            await db.execute("UPDATE inbox SET lease_until = now() - interval '1 second' "
                             "WHERE id=$1", first.id)  # A frozen past its lease
            taken = await b.claim(8)
            assert [i.id for i in taken] == [first.id] and taken[0].interrupted
            await b.finish(first.id)
            again = await a.claim_key("k1")
            assert again is not None and again.id == first.id
            with pytest.raises(LeaseLost):
                await a.put_states({"approval:e1:s": {"status": "approved"}}, claim=first)
            assert await a.get_state("approval:e1:s") is None
            await a.put_states({"approval:e1:s": {"status": "approved"}}, claim=again)
            assert await a.get_state("approval:e1:s") == {"status": "approved"}
        finally:
            await db.close()
            await a.close()
            await b.close()

    run(scenario())


def test_decisions_compressed_against_a_reference_read_back_whole_and_pruned(run, store_url):
    """Decisions of one kind share a reference stored once; a reference goes when its
    rows are pruned, and stays while an execution kept past the cutoff uses it."""
    note = "# [WARNING] A: summary\n\n## Next steps\n\n1. look at the dashboards\n" * 8

    def decision(i: str, outcome: str) -> dict:
        return {**_decision(i, outcome), "mode": "dry-run", "escalation": {"note": note + i},
                "steps": [{"name": "s", "outcome": "planned", "detail": f"plan {i}"}]}

    async def scenario():
        store = await _opened(store_url)
        saved = [decision(f"p{n}", "planned") for n in range(20)] + [decision("r1", "running")]
        for d in saved:
            await store.save_execution(d)
        for d in saved:  # a dry-run's steps are stored with it, none journaled
            assert await store.get_execution(d["id"]) == d
            assert await store.completed_steps(d["id"]) == {}
        raw = [len(packing.body_text(d)) for d in saved]
        stored = await _column_sum(store, "executions")
        assert stored < sum(raw) / 5, (stored, sum(raw))  # each body far under its JSON
        assert await _count(store, "refs") == 2  # one per kind (planned, running)
        # Long after: the planned ones are pruned with their reference; the running one and
        # the reference it uses are kept, and it still reads back.
        # Inbox items of one alertname share theirs, and claims read them back whole.
        assert await store.enqueue(_rows(*range(30))) == Enqueued(30, 0)
        assert await _count(store, "refs") == 3
        await store.close()
        later = await _opened(store_url)  # a restart: nothing cached
        claimed = {i.dedupe_key: (i.alert, i.group) for i in await later.claim(40)}
        assert claimed == {f"k{n}": (_alert(n), {"receiver": "r"}) for n in range(30)}
        await later.close()
        store = await _opened(store_url)  # (a SQLite file has one writer at a time)
        # Long after: the planned ones are pruned with their reference; the running one, the
        # unfinished items and the references they use are kept, and still read back.
        assert await store.prune_history(time.time() + packing.WINDOW + 60) == 20
        assert await _count(store, "refs") == 2
        assert await store.get_execution("r1") == saved[-1]
        await store.release_running()
        assert len(await store.claim(40)) == 30
        await store.close()

    run(scenario())


def test_a_decision_zlib_packed_by_the_version_before_reads_back_beside_zstd_ones(
        run, store_url):
    """Decisions were zlib streams against their reference (the reference as preset
    dictionary) before they were Zstandard frames against it: a record the version before
    wrote reads back, listed and alone, after a restart (nothing cached), beside new ones,
    and is rewritten as a frame when its execution is recorded again."""
    note = "# [WARNING] A: summary\n\n## Next steps\n\n1. look at the dashboards\n" * 16

    def decision(i: str) -> dict:
        return {**_decision(i, "planned"), "mode": "dry-run", "escalation": {"note": note + i},
                "steps": [{"name": "s", "outcome": "planned", "detail": f"plan {i}"}]}

    old, new = decision("o1"), decision("n2")
    ref = packing.body_text(decision("r0"))
    text = packing.body_text(old)
    # the version before packed a decision as it still packs an inbox item (a long one:
    # level 3, a 32 KiB window, the reference as preset dictionary)
    blob = packing.pack_ref(text, ref)
    assert len(text) + len(ref) > 2048 and zlib.decompressobj(zdict=ref).decompress(blob) == text

    async def scenario():
        store = await _opened(store_url)
        await store.save_execution(new)
        if isinstance(store, PostgresStore):
            await store._pool.execute("INSERT INTO refs (id, created, data) VALUES (7, $1, $2)",
                                      time.time(), ref)
            await store._pool.execute(
                "INSERT INTO executions (id, created_at, updated_at, alertname, playbook, "
                "outcome, fingerprint, packed, ref) VALUES ('o1', $1, $1, 'A', 'pb', "
                "'planned', 'f1', $2, 7)", old["created_at"], blob)
            stored = await store._pool.fetchval("SELECT packed FROM executions WHERE id='n2'")
        else:
            with store._db:
                store._db.execute("INSERT INTO refs (id, created, data) VALUES (7, ?, ?)",
                                  (time.time(), ref))
                store._db.execute(
                    "INSERT INTO executions (id, created_at, updated_at, alertname, playbook, "
                    "outcome, fingerprint, body, ref) VALUES ('o1', ?, ?, 'A', 'pb', "
                    "'planned', 'f1', ?, 7)", (old["created_at"], old["created_at"], blob))
            stored = store._db.execute("SELECT body FROM executions WHERE id='n2'").fetchone()[0]
        assert stored[:4] == b"\x28\xb5\x2f\xfd"  # a Zstandard frame
        await store.close()
        store = await _opened(store_url)  # a restart: no reference known, none digested
        assert await store.get_execution("o1") == old
        assert await store.get_execution("n2") == new
        assert await store.list_executions(10) == [new, old]
        again = {**old, "reason": "recorded again"}
        await store.save_execution(again)
        assert await store.get_execution("o1") == again
        await store.close()

    run(scenario())


async def _column_sum(store, table: str) -> int:
    if isinstance(store, PostgresStore):
        return await store._pool.fetchval(f"SELECT sum(octet_length(packed)) FROM {table}")
    return store._db.execute(f"SELECT sum(length(body)) FROM {table}").fetchone()[0]


async def _count(store, table: str) -> int:
    if isinstance(store, PostgresStore):
        return await store._pool.fetchval(f"SELECT count(*) FROM {table}")
    return store._db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def test_a_store_of_the_previous_schema_opens_migrated_and_reads_its_rows(run, store_url):
    """Rows written before compression (JSON text, and on SQLite zlib bodies without a
    reference) read back; the schema is migrated once; new rows are written packed."""
    old = {**_decision("e1", "failed"), "steps": [{"name": "s", "outcome": "failed"}]}
    body = {k: v for k, v in old.items() if k != "steps"}

    async def scenario():
        if store_url.startswith("sqlite"):
            path = sqlite.path_from_url(store_url)
            with sqlite3.connect(path) as db:  # version 0: the schema without `ref`
                db.executescript(sqlite._SCHEMA)
                db.execute("INSERT INTO executions VALUES ('e1', ?, ?, 'A', 'pb', 'failed', "
                           "'f1', ?)", (old["created_at"], old["created_at"],
                                        zlib.compress(json.dumps(body).encode())))
                db.execute("INSERT INTO steps VALUES ('e1', 0, ?)", (json.dumps(old["steps"][0]),))
                db.execute("INSERT INTO inbox (dedupe_key, alert, grp, received_at) VALUES "
                           "('k1', ?, ?, '2026-01-01T00:00:00Z')",
                           (json.dumps(_alert(1)), json.dumps({"receiver": "r"})))
            reader = open_store(store_url, read_only=True)  # the CLI, before any server ran
            await reader.open()
            assert await reader.get_execution("e1") == old
            await reader.close()
        else:
            import asyncpg
            db = await asyncpg.connect(store_url)
            await db.execute(MIGRATIONS[0])
            await db.execute("CREATE TABLE remediator_schema (version INTEGER NOT NULL);"
                             "INSERT INTO remediator_schema VALUES (1)")
            await db.execute("INSERT INTO executions VALUES ('e1', $1, $1, 'A', 'pb', 'failed', "
                             "'f1', $2)", old["created_at"], json.dumps(body))
            await db.execute("INSERT INTO steps VALUES ('e1', 0, $1)", json.dumps(old["steps"][0]))
            await db.execute("INSERT INTO inbox (dedupe_key, alert, grp, received_at) VALUES "
                             "('k1', $1, $2, '2026-01-01T00:00:00Z')", json.dumps(_alert(1)),
                             json.dumps({"receiver": "r"}))
            await db.close()
            reader = open_store(store_url, read_only=True)
            await reader.open()
            assert await reader.get_execution("e1") == old
            await reader.close()
        store = await _opened(store_url)  # migrates
        assert await store.get_execution("e1") == old
        assert await store.completed_steps("e1") == {0: old["steps"][0]}
        assert await store.enqueue(_rows(1, 2)) == Enqueued(1, 1)  # k1: acknowledged before
        items = await store.claim(10)
        assert [(i.dedupe_key, i.alert, i.group) for i in items] == [
            ("k1", _alert(1), {"receiver": "r"}), ("k2", _alert(2), {"receiver": "r"})]
        await store.save_execution(_decision("e2", "failed"))
        assert (await store.get_execution("e2"))["outcome"] == "failed"
        assert [d["id"] for d in await store.list_executions(10)] == ["e2", "e1"]
        await store.close()
        store = await _opened(store_url)  # a second start finds nothing to migrate
        assert await store.get_execution("e1") == old
        await store.close()

    run(scenario())


def test_sqlite_decisions_are_indexed_only_as_a_query_needs_and_a_version_1_file_migrates(
        run, tmp_path):
    """A decision's record updates the creation index, the index of its commit order (the
    console's live stream reads it, version 7) and, while `running`, a partial one (version 1
    also indexed every outcome). A file of version 1 reads as it is (the CLI, before a server
    opened it), then migrates; each query still searches an index."""
    url = f"sqlite:///{tmp_path}/v1.db"
    with sqlite3.connect(sqlite.path_from_url(url)) as db:  # as version 1 left it
        db.executescript(sqlite._SCHEMA + "CREATE INDEX executions_outcome ON executions("
                         "outcome, created_at); CREATE INDEX executions_updated ON executions("
                         "updated_at);" + sqlite.MIGRATIONS[0] + "; PRAGMA user_version=1;")
        for i, outcome in (("e1", "failed"), ("e2", "running"), ("e3", "planned")):
            d = _decision(i, outcome)
            db.execute("INSERT INTO executions VALUES (?, ?, ?, 'A', 'pb', ?, 'f1', ?, NULL)",
                       (i, d["created_at"], d["created_at"], outcome, json.dumps(d)))

    def plans(store, sql: str, *args: object) -> list[str]:
        return [r[3] for r in store._db.execute("EXPLAIN QUERY PLAN " + sql, args)]

    async def scenario():
        reader = open_store(url, read_only=True)
        await reader.open()
        assert [d["id"] for d in await reader.list_executions(10, outcome="running")] == ["e2"]
        await reader.close()
        store = await _opened(url)
        assert {name for (name,) in store._db.execute(
            "SELECT name FROM sqlite_master WHERE type='index' AND tbl_name='executions'")} == {
            "sqlite_autoindex_executions_1", "executions_created", "executions_running",
            "executions_awaiting", "executions_seq"}
        assert [d["id"] for d in await store.list_executions(10, outcome="running")] == ["e2"]
        assert [d["id"] for d in await store.list_executions(10, outcome="failed")] == ["e1"]
        assert [d["id"] for d in await store.list_executions(10)] == ["e3", "e2", "e1"]
        assert plans(store, "SELECT id FROM executions WHERE outcome='running' ORDER BY "
                     "created_at DESC")[0] == "SCAN executions USING INDEX executions_running"
        assert plans(store, "SELECT id, awaiting FROM executions WHERE awaiting IS NOT NULL"
                     ) == ["SCAN executions USING INDEX executions_awaiting"]
        # Pruning searches either time's index (a row is written after its creation).
        assert plans(store, "SELECT id FROM executions WHERE created_at < ?1 AND updated_at < ?1",
                     "x")[0] in ("SEARCH executions USING INDEX executions_created (created_at<?)",
                                 "SEARCH executions USING INDEX executions_updated (updated_at<?)")
        assert plans(store, "SELECT id, updated_at FROM executions WHERE seq > ? AND seq <= ? "
                     "ORDER BY seq DESC LIMIT ?", 1, 2, 5)[0] == \
            "SEARCH executions USING INDEX executions_seq (seq>? AND seq<?)"
        assert await store.prune_history(time.time()) == 2  # the final ones
        assert [d["id"] for d in await store.list_executions(10)] == ["e2"]
        await store.close()

    run(scenario())


def test_locks_and_critical_sections(run, store_url):
    async def scenario():
        store = await _opened(store_url)
        assert await store.acquire_lock("ns/deployment/web", "e1") is None
        assert await store.acquire_lock("ns/deployment/web", "e1") is None  # re-entrant
        assert await store.acquire_lock("ns/deployment/web", "e2") == "e1"
        await store.release_locks("e1")
        assert await store.acquire_lock("ns/deployment/web", "e2") is None
        inside, most = 0, 0

        async def section():
            nonlocal inside, most
            async with store.critical("admission"):
                inside += 1
                most = max(most, inside)
                await asyncio.sleep(0.01)
                inside -= 1

        await asyncio.gather(*(section() for _ in range(5)))
        assert most == 1
        await store.close()

    run(scenario())


def _admit(store, target: str, execution: str, at: float = 100.0):
    """A mutation of `target` within a budget of 2 and a cooldown on the target that the
    execution's own earlier changes do not count toward."""
    return store.admit([Limit("budget", "*", 0.0, 2),
                        Limit("target", target, 50.0, 1, unless={"execution": execution})],
                       [("budget", "*", at, {}), ("target", target, at, {"execution": execution})])


def test_admission_checks_and_records_atomically(run, store_url):
    async def scenario():
        store = await _opened(store_url)
        # Ten executions at once on one target: exactly one passes the cooldown.
        got = await asyncio.gather(*(_admit(store, "ns/d/web", f"e{i}") for i in range(10)))
        assert sorted(got, key=str) == [1] * 9 + [None]
        assert await store.count_events("target", "ns/d/web", 0.0) == 1
        winner = f"e{got.index(None)}"
        assert await _admit(store, "ns/d/web", winner) is None  # its own change: no cooldown
        assert await _admit(store, "ns/d/api", "e1") == 0  # the budget of 2 is spent
        assert await store.count_events("budget", "*", 0.0) == 2  # a refusal records nothing
        assert await store.count_events("target", "ns/d/api", 0.0) == 0
        assert await store.admit([Limit("budget", "*", 100.5, 1)], []) is None  # window
        # the window's edge: an event at `since` counts; `max` is the first refused count
        assert await store.admit([Limit("budget", "*", 100.0, 2)], []) == 0
        assert await store.admit([Limit("budget", "*", 100.0, 3)], []) is None
        await store.close()

    run(scenario())


def test_a_limit_counts_its_window_exactly_wherever_it_starts_in_a_minute(run, store_url):
    """Every event of the window and none before it, whichever write recorded it (an
    admission, a recorded event, a final decision's), wherever `since` falls in a minute;
    after old events are pruned, windows that start after the cutoff are still exact."""
    times = [59.0, 60.0, 61.5, 119.999, 120.0, 150.0, 179.0, 3600.0, 3661.0]

    async def check(store, sinces, kept) -> None:
        for since in sinces:
            n = sum(t >= since for t in kept)
            assert await store.admit([Limit("budget", "*", since, n)], []) == 0, since
            assert await store.admit([Limit("budget", "*", since, n + 1)], []) is None, since

    async def scenario():
        store = await _opened(store_url)
        assert await store.admit([], [("budget", "*", t, {}) for t in times[:3]]) is None
        for t in times[3:6]:
            await store.record_event("budget", "*", t, {})
        await store.save_execution(_decision("e1"), [("budget", "*", t, {}) for t in times[6:]])
        await check(store, [0.0, 59.0, 59.5, 60.0, 61.5, 61.6, 119.999, 120.0, 120.5, 179.0,
                            179.5, 3600.0, 3600.5, 3661.0, 3661.5], times)
        await store.prune_history(120.5)
        await check(store, [120.5, 150.0, 179.0, 3599.0, 3661.0], [t for t in times if t >= 120.5])
        await store.close()

    run(scenario())


def test_the_last_checks_before_a_change_are_made_in_its_own_write(run, store_url):
    """A mutation's admission refuses, reserving and journaling nothing, once the alert's
    resolution was acknowledged (checked first) or automation is paused, or a limit is
    reached; admitted, its intent is journaled in the same write."""
    async def scenario():
        store = await _opened(store_url)
        await store.enqueue([*_rows(1), ("k1-resolved", _alert(1, "resolved"), {})])
        reserve = ([Limit("budget", "*", 0.0, 10)], [("budget", "*", 100.0, {})])
        assert await store.admit(*reserve, unless_paused=True, unless_received="k9") is None
        await store.put_state(PAUSE, {"paused": True, "by": "alice"})
        intent = ("e1", 0, {"name": "s", "outcome": "running"}, None)
        assert await store.admit(*reserve, unless_paused=True, unless_received="k1-resolved",
                                 journal=intent) == RESOLVED
        assert await store.admit(*reserve, unless_paused=True, unless_received="k9",
                                 journal=intent) == PAUSED
        assert await store.count_events("budget", "*", 0.0) == 1  # refusals reserved nothing
        assert await store.completed_steps("e1") == {}  # nor journaled anything
        await store.save_step("e1", 0, {"name": "s", "outcome": "succeeded"})  # a result
        await store.put_state(PAUSE, {"paused": False, "by": "alice"})
        assert await store.admit([Limit("budget", "*", 0.0, 1)], reserve[1], unless_paused=True,
                                 journal=("e1", 1, {"name": "t", "outcome": "running"},
                                          None)) == 0
        assert sorted(await store.completed_steps("e1")) == [0]
        assert await store.admit(*reserve, unless_paused=True,
                                 journal=("e1", 1, {"name": "t", "outcome": "running"},
                                          None)) is None
        assert sorted(await store.completed_steps("e1")) == [0, 1]
        assert await store.count_events("budget", "*", 0.0) == 2
        await store.close()

    run(scenario())


def test_a_run_reads_its_record_with_the_pause_and_writes_it_with_its_journal(run, store_url):
    """What a live run's hot path writes together: its `running` record with its first
    journal entry (a change's intent: only if admitted, so neither while paused: no record,
    no journal), its last step's result with its final record; and what it reads together:
    its record (and journal) with the kill switch."""
    async def scenario():
        store = await _opened(store_url)
        assert await store.get_execution_and_pause("e1") == (None, None)
        await store.put_state(PAUSE, {"paused": True, "by": "alice"})
        intent = ("e1", 0, {"name": "s", "outcome": "running"}, _decision("e1", "running"))
        reserve = ([Limit("budget", "*", 0.0, 10)], [("budget", "*", 100.0, {})])
        assert await store.admit(*reserve, unless_paused=True, journal=intent) == PAUSED
        assert await store.get_execution_and_pause("e1") == (
            None, {"paused": True, "by": "alice"})
        assert await store.completed_steps("e1") == {}
        await store.put_state(PAUSE, {"paused": False})
        assert await store.admit(*reserve, unless_paused=True, journal=intent) is None
        got, pause = await store.get_execution_and_pause("e1")
        assert pause == {"paused": False}
        assert got["outcome"] == "running" and got["steps"] == [{"name": "s",
                                                                 "outcome": "running"}]
        result = {"name": "s", "outcome": "succeeded", "detail": "x" * 600}  # compressed
        await store.save_execution(_decision("e1"), steps={0: result, 1: {"name": "t"}})
        assert await store.get_execution_and_pause("e1") == (
            {**_decision("e1"), "steps": [result, {"name": "t"}]}, {"paused": False})
        await store.save_step("e2", 0, {"name": "u"}, execution=_decision("e2", "running"))
        assert (await store.get_execution("e2"))["steps"] == [{"name": "u"}]
        await store.close()

    run(scenario())


def test_a_state_and_a_count_of_events_are_read_together(run, store_url):
    """What a circuit breaker reads, in one statement: its state and its successes since
    the window's start, the same as `get_state` and `count_events` each answer."""
    async def scenario():
        store = await _opened(store_url)
        long = "k" * 2000  # a key PostgreSQL maps before it searches (an alert chose it)
        for at in (10.0, 20.0, 30.0):
            await store.record_event("success", "pb:t", at)
            await store.record_event("success", long, at)
        await store.record_event("target", "pb:t", 40.0)  # another kind
        await store.record_event("success", "pb:u", 40.0)  # another key
        await store.put_state("circuit:pb:t", {"until": 99.0})
        assert await store.state_and_count("circuit:pb:t", "success", "pb:t", 15.0) == (
            {"until": 99.0}, 2)
        assert await store.state_and_count("circuit:pb:t", "success", "pb:t", 10.0) == (
            {"until": 99.0}, await store.count_events("success", "pb:t", 10.0)) == (
            {"until": 99.0}, 3)
        assert await store.state_and_count("circuit:none", "success", long, 20.0) == (None, 2)
        assert await store.state_and_count("circuit:none", "success", "none", 0.0) == (None, 0)
        await store.close()

    run(scenario())


def test_a_final_decision_finishes_its_inbox_item_in_the_same_write(run, store_url):
    """The final record, its events (a circuit's success) and the inbox item done: written
    together, so a decision is recorded if and only if its alert is done."""
    async def scenario():
        store = await _opened(store_url)
        await store.enqueue(_rows(1, 2))
        first, _ = await store.claim(2)
        await store.save_execution(_decision("e1", "running"))
        assert await store.held("k1")
        await store.save_execution(_decision("e1"), [("success", "pb:t", 100.0, {})],
                                   finishes=first.id)
        assert (await store.get_execution("e1"))["outcome"] == "succeeded"
        assert await store.events_since("success", "pb:t", 0.0) == [(100.0, {})]
        assert not await store.held("k1") and await store.held("k2")
        assert await store.pending_count() == 1
        await store.close()  # k2 was running: the process stopped; k1 is done
        store = await _opened(store_url)
        await store.release_running()
        assert [i.dedupe_key for i in await store.claim(10)] == ["k2"]
        await store.close()

    run(scenario())


def test_a_sqlite_commit_rolled_back_marks_none_of_its_items_done(run, tmp_path):
    """The items a commit's writes finish are marked done by one statement at its end, in
    the same transaction: rolled back (disk full, an I/O error), neither the final record nor
    the item done is kept, and the decision written again finishes it."""
    async def scenario():
        store = await _opened(f"sqlite:///{tmp_path}/s.db")
        await store.enqueue(_rows(1, 2))
        first, second = await store.claim(2)
        final = store.save_execution(_decision("e1"), finishes=first.id)
        # SQLite ends the transaction under the batch's feet, as after an I/O error
        results = await asyncio.gather(final, store._write(lambda db: db.execute("ROLLBACK")),
                                       return_exceptions=True)
        assert all(isinstance(r, StoreUnavailable) for r in results), results
        await store.record_event("k", "k", 1.0)  # the next commit marks nothing left over
        assert await store.held("k1") and await store.get_execution("e1") is None
        await store.save_execution(_decision("e1"), finishes=first.id)
        await store.save_execution(_decision("e2"), finishes=second.id)
        assert not await store.held("k1") and not await store.held("k2")
        assert await store.pending_count() == 0
        await store.close()

    run(scenario())


def test_items_finished_before_a_sqlite_commit_that_fails_are_marked_by_the_next(run, tmp_path):
    """Items finished without a write of their own (`finish`) are marked done in the next
    commit; that commit failing at its COMMIT (here a deferred constraint, as a full disk or
    an I/O error would) leaves them to the commit after it, not `running` until a restart
    (held: a resolution waits 600 s for its firing run; the pending gauge counts them)."""
    async def scenario():
        store = await _opened(f"sqlite:///{tmp_path}/s.db")
        db = store._db
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
        db.execute("CREATE TABLE child (p INTEGER REFERENCES parent(id) "
                   "DEFERRABLE INITIALLY DEFERRED)")
        await store.enqueue(_rows(1))
        item, = await store.claim(1)
        await store.finish(item.id)
        assert not await store.held("k1")
        with pytest.raises(StoreUnavailable):  # the statement passes; its COMMIT fails
            await store._write(lambda db: db.execute("INSERT INTO child VALUES (7)"))
        await store.record_event("k", "k", 1.0)
        assert db.execute("SELECT state FROM inbox WHERE id=?", (item.id,)).fetchone() == (
            "done",)
        assert not await store.held("k1") and await store.pending_count() == 0
        await store.close()

    run(scenario())


def test_prune_forgets_only_finished_items(run, store_url):
    async def scenario():
        store = await _opened(store_url)
        await store.enqueue(_rows(1, 2))
        items = await store.claim(1)
        await store.finish(items[0].id)
        await store.close()  # SQLite marks finished items lazily, at its next write or close
        store = await _opened(store_url)
        assert await store.prune_inbox("9999-01-01T00:00:00Z") == 1
        assert await store.enqueue(_rows(1, 2)) == Enqueued(1, 1)  # k1 forgotten, k2 still pending
        await store.close()

    run(scenario())


# --- PostgreSQL: several replicas on one database ------------------------------------------


def test_replicas_migrate_once_and_accept_each_alert_once(run, postgres_url):
    async def scenario():
        replicas = [PostgresStore(postgres_url) for _ in range(3)]
        await asyncio.gather(*(r.open() for r in replicas))  # concurrent first start
        # Every alert delivered to every replica at once, in overlapping batches.
        batches = [_rows(*range(i, i + 50)) for i in range(0, 200, 25)]
        results = await asyncio.gather(*(r.enqueue(b) for b in batches for r in replicas))
        assert sum(r.accepted for r in results) == 225
        assert sum(r.duplicates for r in results) == 3 * 8 * 50 - 225
        claims = await asyncio.gather(*(r.claim(100) for r in replicas for _ in range(3)))
        keys = [item.dedupe_key for batch in claims for item in batch]
        assert len(keys) == len(set(keys)) == 225  # disjoint: SKIP LOCKED, never twice
        versions = await replicas[0]._pool.fetchval("SELECT count(*) FROM remediator_schema")
        assert versions == len(MIGRATIONS)  # each migration once
        for r in replicas:
            await r.close()

    run(scenario())


def test_a_dead_replicas_claims_and_locks_are_taken_over_after_its_lease(run, postgres_url):
    async def scenario():
        alive = PostgresStore(postgres_url, lease=3)
        dying = PostgresStore(postgres_url, lease=3)
        metrics = Metrics()
        alive.instrument(metrics)
        await alive.open()
        await dying.open()
        await alive.enqueue(_rows(1, 2))
        held = [await dying.claim_key("k2")]
        assert await dying.acquire_lock("ns/deployment/web", "e1") is None
        # While the holder renews, nobody else gets its work or its lock.
        await asyncio.sleep(4)
        assert await alive.claim_key("k2") is None
        assert await alive.acquire_lock("ns/deployment/web", "e2") == "e1"
        assert await alive.held(held[0].dedupe_key)
        dying._heartbeat.cancel()  # the process dies: nothing renews its leases any more
        await asyncio.sleep(3.5)
        assert not await alive.held(held[0].dedupe_key)  # a dead replica holds nothing
        # Its work is taken over first, before work still pending (which waits its turn).
        taken = await alive.claim(1)
        assert [i.id for i in taken] == [held[0].id]
        assert metrics.lease_takeovers._value.get() == 1
        assert [i.dedupe_key for i in await alive.claim(10)] == ["k1"]
        assert await alive.acquire_lock("ns/deployment/web", "e2") is None
        await alive.close()

    run(scenario())


def test_critical_sections_exclude_across_replicas(run, postgres_url):
    async def scenario():
        a, b = PostgresStore(postgres_url), PostgresStore(postgres_url)
        await a.open()
        await b.open()
        order: list[str] = []

        async def hold(store, name):
            async with store.critical("admission"):
                order.append(f"{name} in")
                await asyncio.sleep(0.3)
                order.append(f"{name} out")

        await asyncio.gather(hold(a, "a"), hold(b, "b"))
        assert order in (["a in", "a out", "b in", "b out"], ["b in", "b out", "a in", "a out"])
        await a.close()
        await b.close()

    run(scenario())


def test_a_frozen_holder_loses_its_section_and_cannot_write_in_it(run, postgres_url):
    """A section's session ends once idle for a lease: a holder frozen (its loop stopped,
    as by SIGSTOP) kept its session advisory lock for as long as it stayed frozen, and
    every other replica's maintenance and approvals waited. A live holder's heartbeat keeps
    its section however long it waits on something else; a woken one writes nothing more in
    the section it lost."""

    async def scenario():
        a, b = await _opened(postgres_url, lease=3.0), await _opened(postgres_url, lease=3.0)
        taken: list[str] = []

        async def take_over() -> None:
            async with b.critical("maintenance"):
                taken.append("b")
                await b.put_state("by-b", {"v": 1})

        try:
            async with a.critical("maintenance"):
                await asyncio.sleep(5)  # alive past its lease: the heartbeat keeps it
                await a.put_state("by-a", {"v": 1})
                # a statement slower than the lease: its session was busy, not idle, all along
                await a._call("slow", lambda db: db.execute("SELECT pg_sleep(2.5)"))
                await a.put_state("after-slow", {"v": 1})
                time.sleep(5)  # frozen past its lease: nothing runs, not even the heartbeat
                await asyncio.create_task(take_over())
                with pytest.raises(StoreUnavailable):
                    await a.put_state("zombie", {"v": 1})
            assert taken == ["b"]
            assert await b.get_state("by-a") == {"v": 1} and await b.get_state("by-b")
            assert await b.get_state("after-slow") == {"v": 1}
            assert await b.get_state("zombie") is None
            async with a.critical("maintenance"):  # and a takes sections again afterwards
                await a.put_state("again", {"v": 1})
            assert await b.get_state("again") == {"v": 1}
        finally:
            await a.close()
            await b.close()

    run(scenario())


def test_admission_limits_hold_across_replicas(run, postgres_url):
    async def scenario():
        replicas = [PostgresStore(postgres_url) for _ in range(3)]
        for r in replicas:
            await r.open()
        # 30 admissions on 30 targets from three replicas at once: the shared budget of 3
        # admits exactly 3, and the cooldowns of unrelated targets never interfere.
        got = await asyncio.gather(*(replicas[i % 3].admit(
            [Limit("budget", "*", 0.0, 3), Limit("target", f"t{i}", 0.0, 1)],
            [("budget", "*", 1.0, {}), ("target", f"t{i}", 1.0, {})]) for i in range(30)))
        assert got.count(None) == 3 and got.count(0) == 27
        assert await replicas[0].count_events("budget", "*", 0.0) == 3
        for r in replicas:
            await r.close()

    run(scenario())


async def _statistic(db, query: str) -> int:
    """A cumulative statistic, including what this connection ran so far (flushed first)."""
    await db.execute("SELECT pg_stat_force_next_flush()")
    await db.execute("SELECT pg_stat_clear_snapshot()")
    return await db.fetchval(query)


def test_a_limit_without_unless_reads_only_its_first_minute_of_events(run, postgres_url):
    """A budget of thousands an hour is counted per minute: an admission reads the events of
    its window's first minute, not every event of the window (each admission read them all,
    every replica's admissions waiting meanwhile on the budget's lock)."""

    async def read(db) -> int:  # index entries read from `events` so far
        return await _statistic(db, "SELECT idx_tup_read FROM pg_stat_user_indexes "
                                    "WHERE indexrelname = 'events_key'")

    async def scenario():
        store = await _opened(postgres_url)
        budget = Limit("budget", "*", 1000.0, 1_000_000)
        for i in range(50):
            assert await store.admit([budget], [("budget", "*", 2000.0 + j, {})
                                                for j in range(20 * i, 20 * i + 20)]) is None
        db = await asyncpg.connect(postgres_url)  # the admission's statement, on a connection
        before = await read(db)                   # whose statistics are flushed here
        assert await db.fetchval(
            "SELECT remediator_admit($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL, NULL)",
            ["budget"], ["*"], [1000.0], [1_000_000], [None], ["budget"], ["*"], [5000.0],
            ["{}"]) is None
        assert await read(db) - before < 10
        assert await store.admit([Limit("budget", "*", 1000.0, 1001)], []) == 0  # all counted
        assert await store.admit([Limit("budget", "*", 1000.0, 1002)], []) is None
        await db.close()
        await store.close()

    run(scenario())


def test_the_pending_gauge_reads_the_items_to_do_not_the_whole_inbox(run, postgres_url):
    """`pending_count` (each replica's gauge, when scraped) counts pending and running items
    from their partial indexes: done items stay in the inbox for the retention period, and a
    sequential scan of all of them every second grew with every storm. Nor does a claim, and
    no index lists both pending and running items: each claim and done mark wrote an entry
    into `inbox_todo` (migration 10 drops it)."""

    async def seq_scans(db) -> int:  # sequential scans of `inbox` so far
        return await _statistic(db, "SELECT seq_scan FROM pg_stat_user_tables "
                                    "WHERE relname = 'inbox'")

    async def scenario():
        store = await _opened(postgres_url)
        await store.enqueue(_rows(1, 2, 3))
        assert len(await store.claim(1)) == 1
        db = await asyncpg.connect(postgres_url)
        await db.execute("INSERT INTO inbox (dedupe_key, alert, grp, received_at, state) "
                         "SELECT 'done' || g, '{}', '{}', '2026-01-01T00:00:00Z', 'done' "
                         "FROM generate_series(1, 20000) g")
        await db.execute("ANALYZE inbox")
        await db.close()
        async with store.critical("gauge"):  # the store's statements run on its connection
            section = _section.get().db  # its lock's connection
            before = await seq_scans(section)
            assert await store.pending_count() == 3  # one running, two pending
            assert await seq_scans(section) == before
            assert [i.id for i in await store.claim(10)] == [2, 3]
            assert await seq_scans(section) == before
            indexes = {r["indexname"] for r in await section.fetch(
                "SELECT indexname FROM pg_indexes WHERE tablename = 'inbox'")}
            assert "inbox_todo" not in indexes and {"inbox_pending", "inbox_leased"} <= indexes
        await store.close()

    run(scenario())


def test_a_claim_planned_on_a_small_inbox_reads_no_more_of_it_once_it_grew(run, postgres_url):
    """A connection plans a claim once and keeps the plan: planned while the inbox was small
    (a new database: each of a benchmark's), the update joined to the rows it locked by id
    read the whole inbox on every claim as it grew, until the next ANALYZE. They are
    updated where they were locked instead, whatever the statistics."""

    async def read(db) -> tuple[int, int]:  # `inbox` rows read by sequential scans, claimed
        return await _statistic(db, "SELECT seq_tup_read FROM pg_stat_user_tables "
                                    "WHERE relname = 'inbox'"), await db.fetchval(
            "SELECT count(*) FROM inbox WHERE state = 'running'")

    async def scenario():
        store = await _opened(postgres_url)
        await store.enqueue(_rows(*range(1, 11)))
        async with store.critical("claims"):  # the store's statements run on its connection
            section = _section.get().db  # its lock's connection
            for _ in range(8):  # custom plans first, then the one kept (plan_cache_mode auto)
                assert len(await store.claim(1)) == 1
            db = await asyncpg.connect(postgres_url)
            await db.execute("INSERT INTO inbox (dedupe_key, alert, grp, received_at, state) "
                             "SELECT 'done' || g, '{}', '{}', '2026-01-01T00:00:00Z', 'done' "
                             "FROM generate_series(1, 20000) g")  # a storm's, not analyzed yet
            await db.close()
            before, claimed = await read(section)
            assert [i.dedupe_key for i in await store.claim(2)] == ["k8", "k9"]  # (by id)
            after, now_claimed = await read(section)
            assert now_claimed == claimed + 2 == 10
            assert after - before < 100, after - before
        await store.close()

    run(scenario())


def test_a_claim_reads_no_inbox_sequentially_once_an_analyze_saw_a_backlog(run, postgres_url):
    """A storm's backlog, analyzed (autovacuum does, as the inbox grows): the claim's kept
    (generic) plan cannot know how few rows `LIMIT $2 - ...` locks and assumed a tenth of
    the pending ones; joining those to the inbox by ctid, it hashed the whole inbox, read
    sequentially, on every claim (most of PostgreSQL's CPU in a 20 000-alert storm). The
    locked rows are found by a TID scan of their array instead."""

    async def read(db) -> int:  # `inbox` rows read by sequential scans so far
        return await _statistic(db, "SELECT seq_tup_read FROM pg_stat_user_tables "
                                    "WHERE relname = 'inbox'")

    async def scenario():
        db = await asyncpg.connect(postgres_url)
        # The plan a connection keeps, from its first claim (`auto` keeps it after five).
        await db.execute(f"ALTER DATABASE {postgres_url.rsplit('/', 1)[1]} "
                         "SET plan_cache_mode = force_generic_plan")
        store = await _opened(postgres_url)
        await store.enqueue(_rows(*range(1, 11)))
        await db.execute("INSERT INTO inbox (dedupe_key, alert, grp, received_at) "
                         "SELECT 'later' || g, '{}', '{}', '2026-01-01T00:00:00Z' "
                         "FROM generate_series(1, 20000) g")  # pending, after k1..k10
        await db.execute("ANALYZE inbox")
        await db.close()
        async with store.critical("claims"):  # the store's statements run on its connection
            section = _section.get().db  # its lock's connection
            before = await read(section)
            assert [i.dedupe_key for i in await store.claim(3)] == ["k1", "k10", "k2"]
            assert [i.dedupe_key for i in await store.claim(2)] == ["k3", "k4"]
            assert await read(section) - before < 100, await read(section) - before
        await store.close()

    run(scenario())


def test_a_new_databases_read_of_an_execution_stays_on_its_key_as_the_table_grows(
        run, postgres_url):
    """A new database's first reads of an execution are planned while `executions` is
    empty, and a connection keeps the plan. Analyzed empty by a migration, the kept plan
    read the whole table at every decision's read as a storm filled it (9 819 sequential
    scans and 85 M rows read in one 20 000-alert storm, decisions/s down a third) until
    autovacuum analyzed it again. Never analyzed empty, it is read by its key."""

    async def read(db) -> int:  # `executions` rows read by sequential scans so far
        return await _statistic(db, "SELECT seq_tup_read FROM pg_stat_user_tables "
                                    "WHERE relname = 'executions'")

    async def scenario():
        store = await _opened(postgres_url)
        await store.save_execution(_decision("e1"))
        async with store.critical("reads"):  # the store's statements run on its connection
            section = _section.get().db  # its lock's connection
            for _ in range(8):  # custom plans first, then the one kept (plan_cache_mode auto)
                assert (await store.get_execution_and_pause("e1"))[0]["id"] == "e1"
                assert (await store.get_execution("e1"))["id"] == "e1"
            db = await asyncpg.connect(postgres_url)
            await db.execute("INSERT INTO executions (id, created_at, updated_at, alertname, "
                             "outcome, fingerprint, body) SELECT 'x' || g, '2026-01-01', "
                             "'2026-01-01', 'A', 'planned', 'f', '{}' "
                             "FROM generate_series(1, 20000) g")  # a storm's, not analyzed yet
            await db.close()
            before = await read(section)
            assert (await store.get_execution_and_pause("e1"))[0]["id"] == "e1"
            assert (await store.get_execution("e1"))["id"] == "e1"
            assert await read(section) - before < 100, await read(section) - before
        await store.close()

    run(scenario())


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize("busy", [False, True], ids=["idle", "after-a-webhook"])
def test_unreachable_database_is_unavailable_not_an_error(postgres_cluster, postgres_url, loop,
                                                          busy):
    """On uvloop the intake connection read the server's goodbye before its close, and the
    next webhook's commit failed with asyncpg's InternalClientError, which the flush did not
    catch: that webhook waited for ever."""
    from remediator.store.base import StoreUnavailable

    async def scenario():
        store = PostgresStore(postgres_url)
        await store.open()
        assert store.is_open
        if busy:
            assert await store.enqueue(_rows(0)) == Enqueued(1, 0)
        postgres_cluster.stop()
        try:
            with pytest.raises(StoreUnavailable):
                async with asyncio.timeout(20):  # a TimeoutError: it waited without end
                    await store.enqueue(_rows(1))
            assert not store.is_open  # readiness turns false
        finally:
            postgres_cluster.start()
        assert await store.enqueue(_rows(1)) == Enqueued(1, 0)  # the pool reconnects
        assert store.is_open
        await store.close()

    event_loop.run(scenario(), loop)


def test_urls_never_show_a_password():
    assert redact("postgresql://u:s3cret@db:5432/r") == "postgresql://u:<redacted>@db:5432/r"
    with pytest.raises(ValueError) as err:
        PostgresStore("mysql://u:s3cret@db/r")
    assert "s3cret" not in str(err.value)


def test_a_claimed_batch_not_handed_to_processing_is_not_held_forever(
        run, postgres_url, postgres_cluster):
    """The claim took the rows, then reading their references failed: no item reached
    processing, yet the heartbeat renewed their leases for as long as the replica lived."""
    async def scenario():
        first = await _opened(postgres_url)
        await first.enqueue(_rows(1))
        other = await _opened(postgres_url, lease=3.0)  # knows no reference yet
        database = postgres_url.rsplit("/", 1)[1]
        postgres_cluster.sql("ALTER TABLE refs RENAME TO refs_away", database)
        try:
            with pytest.raises(asyncpg.UndefinedTableError):
                await other.claim(10)
        finally:
            postgres_cluster.sql("ALTER TABLE refs_away RENAME TO refs", database)
        deadline = time.monotonic() + 30  # many of `other`'s renewals (every lease / 3)
        while not (items := await first.claim(10)):
            assert time.monotonic() < deadline, "the batch is still leased"
            await asyncio.sleep(0.2)
        assert [i.dedupe_key for i in items] == ["k1"]
        await first.close()
        await other.close()

    run(scenario())


def test_a_claim_fenced_while_it_runs_is_processed_not_held_forever(run, postgres_url):
    """A renewal that came too late fences what was claimed before (`Leases.fence_all`); items
    whose claim was under way meanwhile are this replica's (owner, fresh lease) and must be
    processed: held but fenced, their leases were renewed for ever and nobody ran them."""
    async def scenario():
        store = await _opened(postgres_url)
        await store.enqueue(_rows(1))
        asyncio.get_running_loop().call_soon(store._leases.fence_all, "a renewal came too late")
        [item] = await store.claim(10)  # the fence lands while the claim is in flight
        await store.save_execution(_decision("e1"), finishes=item.id)  # not LeaseLost
        assert await store.pending_count() == 0
        await store.close()

    run(scenario())


def test_sqlite_inbox_ids_keep_no_sequence_and_follow_the_migrated_ones(run, tmp_path):
    """Inbox ids without AUTOINCREMENT (its sqlite_sequence row was updated at every insert:
    a fifth of intake's statements' time): a migrated store keeps its items, their ids and
    states; new ids come after them, claims keep their order, and an acknowledged key is
    still a duplicate."""
    url = f"sqlite:///{tmp_path}/s.db"
    path = sqlite.path_from_url(url)
    with sqlite3.connect(path) as db:  # version 1: the inbox with AUTOINCREMENT
        db.executescript(sqlite._SCHEMA)
        db.executescript(sqlite.MIGRATIONS[0])
        db.execute("PRAGMA user_version=1")
        for i, state in ((7, "done"), (9, "pending")):
            db.execute("INSERT INTO inbox (id, dedupe_key, alert, grp, received_at, state) "
                       "VALUES (?, ?, ?, ?, '2026-01-01T00:00:00Z', ?)",
                       (i, f"k{i}", json.dumps(_alert(i)), json.dumps({"receiver": "r"}), state))

    async def scenario():
        store = await _opened(url)  # migrates
        assert await store.enqueue(_rows(9, 10, 11)) == Enqueued(2, 1)  # k9: acknowledged before
        items = await store.claim(10)
        assert [(i.id, i.dedupe_key) for i in items] == [(9, "k9"), (10, "k10"), (11, "k11")]
        db = store._db
        assert db.execute("SELECT id, state FROM inbox WHERE dedupe_key='k7'").fetchone() == (
            7, "done")
        assert db.execute("SELECT count(*) FROM sqlite_sequence WHERE name='inbox'").fetchone() == (0,)
        assert "AUTOINCREMENT" not in db.execute(
            "SELECT sql FROM sqlite_master WHERE name='inbox'").fetchone()[0]
        await store.close()

    run(scenario())


def test_a_store_closed_while_intake_reconnects_leaves_no_connection_open(run, postgres_url,
                                                                          monkeypatch):
    """Intake's held connection, lost, is opened again by the next commit; a store closed
    meanwhile terminates the new one and the commit fails as unavailable (503)."""
    async def scenario():
        store = open_store(postgres_url)
        await store.open()
        store._drop_intake()  # as after an outage: the next commit reconnects
        connecting, proceed, opened = asyncio.Event(), asyncio.Event(), []
        connect = asyncpg.connect

        async def slow_connect(*args, **kwargs):  # the real connection, handed over late
            connecting.set()
            await proceed.wait()
            opened.append(await connect(*args, **kwargs))
            return opened[-1]

        monkeypatch.setattr(asyncpg, "connect", slow_connect)
        commit = asyncio.ensure_future(store.enqueue([("k1", {"n": 1}, {})]))
        await connecting.wait()
        await store.close()
        proceed.set()
        with pytest.raises(StoreUnavailable):
            await commit
        assert opened and opened[0].is_closed()
        assert store._intake_db is None
    run(scenario())


def test_a_postgres_webhook_is_packed_while_the_commit_before_it_is_on_its_way(
        run, postgres_url, monkeypatch):
    """A webhook's rows are packed (compressed against their reference) when it arrives, as
    it waits for the commit in flight, not by the next commit once that one came back: a
    batch was sent that much later (every alert of it packed at once, the acknowledgements
    waiting)."""
    async def scenario():
        store = open_store(postgres_url)
        await store.open()
        packed: list[bytes] = []
        pack_item = packing.Refs.pack_item
        monkeypatch.setattr(packing.Refs, "pack_item", lambda self, text, ref: packed.append(
            text) or pack_item(self, text, ref))
        blocker = await asyncpg.connect(postgres_url)
        try:
            # Another transaction holds the dedupe key k1 uncommitted: a commit of it waits
            # (the unique index), as a slow flush would hold it.
            tx = blocker.transaction()
            await tx.start()
            await blocker.execute("INSERT INTO inbox (dedupe_key, alert, grp, received_at) "
                                  "VALUES ('k1', '{}', '{}', '')")
            first = asyncio.ensure_future(store.enqueue([("k1", {"n": 1}, {})]))
            await asyncio.sleep(0.05)
            second = asyncio.ensure_future(store.enqueue([("k2", {"n": 2}, {}),
                                                          ("k3", {"n": 3}, {})]))
            await asyncio.sleep(0.05)
            assert not first.done() and not second.done()
            assert len(packed) == 3  # the waiting webhook's two alerts too
            await tx.rollback()
            assert await asyncio.wait_for(first, 30) == Enqueued(1, 0)
            assert await asyncio.wait_for(second, 30) == Enqueued(2, 0)
            assert len(packed) == 3  # and not again by its commit
            rows = await blocker.fetch("SELECT dedupe_key, packed, ref FROM inbox ORDER BY 1")
            assert [r["dedupe_key"] for r in rows] == ["k1", "k2", "k3"]
            assert all(r["packed"] is not None and r["ref"] is not None for r in rows)
            items = await store.claim(10)
            assert [(i.dedupe_key, i.alert) for i in items] == [
                ("k1", {"n": 1}), ("k2", {"n": 2}), ("k3", {"n": 3})]
        finally:
            await blocker.close()
            await store.close()
    run(scenario())


def test_decisions_of_a_populated_version_10_database_are_listed_newest_first_by_8_bytes(
        run, postgres_url):
    """Migration 11 indexes creation times as integers (8 bytes, where the text took 28) on
    a database that already holds decisions: listed in the order of their text, before and
    after, by that index (not a sort of the whole table) and by the text among the times
    remediator never writes."""
    times = ["2025-12-31T23:59:59.999999Z", "2026-01-01T00:00:00.000000Z",
             "2026-01-01T00:00:00.000001Z", "2026-01-31T23:00:00.5Z", "2026-02-01T00:00:00Z",
             "2026-02-01T00:00:01.000000Z", "2026-10-09T08:07:06.543210Z",
             "2026-10-10T00:00:00.000000Z", "2027-01-01T00:00:00Z", "not a time"]

    def decision(n: int) -> dict:
        return {**_decision(f"e{n:02d}"), "created_at": times[n % len(times)]}

    async def scenario():
        db = await asyncpg.connect(postgres_url)
        await db.execute("CREATE TABLE remediator_schema (version INTEGER NOT NULL)")
        for number, sql in enumerate(MIGRATIONS[:10], 1):
            await db.execute(sql)
            await db.execute("INSERT INTO remediator_schema VALUES ($1)", number)
        # This code's records name a column of migration 12 (which adds it if not there)
        await db.execute("ALTER TABLE executions ADD COLUMN awaiting TEXT")
        await db.close()
        old = PostgresStore(postgres_url)  # the previous version, its schema and its list
        later = MIGRATIONS[10:]
        del MIGRATIONS[10:]
        try:
            await old.open()
            for n in range(0, 20, 2):
                await old.save_execution(decision(n))
            before = [d["id"] for d in await old.list_executions(100)]
            await old.close()
        finally:
            MIGRATIONS.extend(later)
        store = await _opened(postgres_url)  # migrates the populated database
        for n in range(1, 20, 2):
            await store.save_execution(decision(n))
        listed = [d["id"] for d in await store.list_executions(100)]
        expected = [f"e{n:02d}" for n in sorted(
            range(20), key=lambda n: (times[n % len(times)] == "not a time",
                                      times[n % len(times)], f"e{n:02d}"), reverse=True)]
        assert listed == expected  # others (none is written) first, as no integer
        assert [i for i in listed if int(i[1:]) % 2 == 0] == [
            i for i in expected if i in before]
        db = await asyncpg.connect(postgres_url)
        await db.execute("SET enable_seqscan = off")  # a table of 20 rows: as if it held more
        plan = "\n".join(r[0] for r in await db.fetch(
            "EXPLAIN SELECT id FROM executions e ORDER BY remediator_instant(e.created_at) DESC, "
            "e.created_at DESC, e.id DESC LIMIT 5"))
        assert "Index Scan Backward using executions_newest" in plan, plan
        assert await db.fetchval("SELECT count(*) FROM pg_indexes WHERE indexname = "
                                 "'executions_created'") == 0
        await db.close()
        await store.close()

    run(scenario())


def test_decisions_committed_since_a_position_are_listed_whatever_their_age(run, store_url):
    """The console's live stream reads what was committed since its last read: an old
    decision whose record changed is listed (the latest committed first, each with its
    time), one committed before is not, a read holds at most its limit, and a position that
    is not one of the store's (a browser's text, another store's, one past the store's) lists
    nothing known (None)."""
    async def scenario():
        store = await _opened(store_url)
        for i in "1234":
            await store.save_execution(_decision(f"e{i}", "blocked" if i == "1" else "planned"))
        assert (await store.changes(None, 10))[0] == []
        _, since = await store.changes(None, 10)
        assert (await store.changes(since, 10))[0] == []
        await store.save_execution(_decision("e1", "failed"))  # the oldest, decided now
        await store.save_execution(_decision("e5", "planned"))
        listed, at = await store.changes(since, 10)
        assert [(d["id"], d["outcome"]) for d in listed] == [("e5", "planned"), ("e1", "failed")]
        assert all(d["updated_at"] for d in listed)
        assert (await store.changes(at, 10))[0] == []  # read once
        assert [d["id"] for d in (await store.changes(since, 1))[0]] == ["e5"]
        for bad in ("", "x", "1:0:", "12:", "3:4:5,x", str(10 ** 12), f"{10 ** 12}:{10 ** 12}:",
                    "1" * 30, "1:2:" + ",".join(["1"] * 20000)):
            assert (await store.changes(bad, 10))[0] is None, bad
        if store_url.startswith("postgresql"):  # by its index, not a read of the table
            db = await asyncpg.connect(store_url)
            await db.execute("SET enable_seqscan = off")
            plan = "\n".join(r[0] for r in await db.fetch(
                "EXPLAIN SELECT id FROM executions WHERE txid >= '5'::xid8 ORDER BY txid DESC "
                "LIMIT 51"))
            await db.close()
            assert "executions_txid" in plan, plan
        await store.close()

    run(scenario())


def test_a_record_committed_long_after_its_stamp_is_read_once_committed(run, postgres_url):
    """The live stream read decisions by `updated_at`, reaching 10 s back: a record stamped
    and then held in its transaction for longer (a row lock here; a long transaction, a slow
    commit in a storm) was committed behind every read that could see it, and the console
    kept its old outcome with no word. Positions are in commit order: the next read has it,
    however late."""
    async def scenario():
        store = await _opened(postgres_url)
        await store.save_execution(_decision("e1", "blocked"))
        _, at = await store.changes(None, 10)
        holder = await asyncpg.connect(postgres_url)
        held = holder.transaction()
        await held.start()
        await holder.execute("SELECT 1 FROM executions WHERE id = 'e1' FOR UPDATE")
        stamped = store.now_iso()
        late = asyncio.create_task(store.save_execution(_decision("e1", "failed")))
        watch = await asyncpg.connect(postgres_url)
        while not await watch.fetchval(  # the write is stamped, and waits on the row
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'"):
            await asyncio.sleep(0.05)
        # Reads go on, a second apart, until the store's clock is 15 s past the stamp: past
        # any look-back from a read's time (the stream's was 10 s).
        while store.now_iso() < earlier_by(stamped, -15):
            listed, at = await store.changes(at, 10)
            assert listed == []  # not committed yet
            await asyncio.sleep(1)
        await held.rollback()
        await late
        listed, at = await store.changes(at, 10)
        assert [(d["id"], d["outcome"]) for d in listed] == [("e1", "failed")]
        assert listed[0]["updated_at"] < earlier_by(store.now_iso(), 10)  # stamped long before
        for db in (holder, watch):
            await db.close()
        await store.close()

    run(scenario())


def earlier_by(at: str, seconds: float) -> str:
    """A time as the stores stamp it, `seconds` before (after, negative)."""
    then = datetime.strptime(at, "%Y-%m-%dT%H:%M:%S.%fZ") - timedelta(seconds=seconds)
    return then.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
