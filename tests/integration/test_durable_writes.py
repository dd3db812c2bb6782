"""A mutation's admission and the operator's state outlive a crash of the database, whatever
`store_sync` says: the admission's intent is what keeps a step from running again after it,
and the pause is the kill switch. A claim may be lost with the crash (claims commit
asynchronously, as processing's other writes): then only the replica holding the alert in
the database may act on it. Processing's other writes may commit asynchronously.

PostgreSQL crashes for real (its stopped WAL writer killed: the postmaster starts again from
the WAL on disk), so what did not wait for its flush is lost. SQLite's power cut cannot be
made here, so its test reads what the store tells SQLite: the commit carrying such a write
is fsynced (synchronous=FULL), a storm's are not.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time

import pytest

from remediator.alerts import dedupe_key, parse_notification
from remediator.store import open_store
from remediator.store.base import LOCKED, PAUSE, LeaseLost, Limit, StoreUnavailable
from tests.integration.test_guards import Harness, web
from tests.support.payloads import notification
from tests.support.postgres import PostgresCluster


def _alert(n: int) -> dict:
    return {"status": "firing", "labels": {"alertname": "A"}, "annotations": {},
            "startsAt": "2026-01-01T00:00:00Z", "endsAt": "", "fingerprint": f"f{n}"}


def _item(n: int) -> tuple:
    """An inbox row: dedupe key k<n>, the alert, its group."""
    return (f"k{n}", _alert(n), {"receiver": "r"})


def _decision(i: str) -> dict:
    return {"id": i, "created_at": "2026-01-01T00:00:01Z", "alertname": "A", "playbook": "pb",
            "outcome": "running", "fingerprint": "f1", "reason": "", "steps": [],
            "alert": _alert(1)}


INTENT = ("e1", 0, {"name": "restart", "outcome": "running"}, _decision("e1"))
RESERVE = ([Limit("rate", "deploy/x", 0.0, 1)], [("rate", "deploy/x", 100.0, {})])
INTENT_K2 = ("e2", 0, {"name": "restart", "outcome": "running"}, _decision("e2"))
RESERVE_K2 = ([Limit("rate", "deploy/y", 0.0, 1)], [("rate", "deploy/y", 100.0, {})])
CHANGE = ([Limit("budget", "*", 0.0, 100)], [("budget", "*", 1.0, {})])


def _until_up(cluster: PostgresCluster, killed: int) -> None:
    """Wait for the postmaster's crash recovery (it restarts every process, and replays the
    WAL that was written, on a fresh shared memory), after the WAL writer `killed`: until a
    new one runs, the postmaster may not have noticed the kill yet, and a statement that
    runs meanwhile is lost with the crash."""
    deadline = time.monotonic() + 60
    while True:
        try:
            if _walwriter(cluster) != killed:
                return
        except (subprocess.CalledProcessError, ValueError):  # restarting; not started yet
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("PostgreSQL did not recover from its crash within 60 s")
        time.sleep(0.1)


def _crashable() -> PostgresCluster:
    """A cluster where nothing but the writers themselves flushes the WAL (no checkpoint,
    no autovacuum) once its WAL writer, which writes what commits asynchronously, is
    stopped (`_walwriter`): a crash then loses exactly the commits that did not wait for
    their flush."""
    cluster = PostgresCluster().init()
    cluster.sql("ALTER SYSTEM SET autovacuum = off")
    cluster.sql("ALTER SYSTEM SET checkpoint_timeout = '1h'")
    cluster.sql("SELECT pg_reload_conf()")
    return cluster


def _walwriter(cluster: PostgresCluster) -> int:
    return int(cluster.sql("SELECT pid FROM pg_stat_activity WHERE backend_type = 'walwriter'"))


def _flushed(cluster: PostgresCluster) -> bool:
    """Whether all the WAL written so far is on disk (the WAL writer stopped, only a commit
    waiting for its flush moves it)."""
    return cluster.sql("SELECT pg_current_wal_flush_lsn() >= pg_current_wal_insert_lsn()") == "t"


@contextlib.asynccontextmanager
async def _other_replica(url: str, crashed, **kwargs):
    """A second replica, opened after the crash; on the way out, closed with the crashed
    one (whose connections the crash closed: its close may fail)."""
    other = open_store(url, sync="normal", **kwargs)
    await other.open()
    try:
        yield other
    finally:
        await other.close()
        with contextlib.suppress(Exception):
            await crashed.close()


async def _admit_once_reconnected(store, *args, **kwargs):
    """`store.admit`, once the pool has replaced the connections the crash closed."""
    for _ in range(100):
        try:
            return await store.admit(*args, **kwargs)
        except LeaseLost:
            raise
        except StoreUnavailable:
            await asyncio.sleep(0.1)
    raise AssertionError("the store never answered again")


def test_postgres_admission_and_pause_outlive_a_database_crash_and_a_lost_claim_never_acts(
        run) -> None:
    cluster = _crashable()
    try:
        url = cluster.create_database()
        replica = open_store(url, sync="normal")
        run(replica.open())
        # Acknowledged: intake's commits always wait for the flush.
        run(replica.enqueue([_item(1), _item(2)]))
        walwriter = _walwriter(cluster)

        def flushed() -> bool:
            return _flushed(cluster)

        async def act():
            assert [i.dedupe_key for i in await replica.claim(1)] == ["k1"]
            assert not flushed()  # a claim commits asynchronously (one per few decisions) ...
            assert await replica.admit(*RESERVE, unless_paused=True, journal=INTENT,
                                       held="k1") is None
            assert flushed()  # ... until its run's first admission, which takes it along
            await replica.put_state(PAUSE, {"paused": True, "by": "alice"})
            assert flushed()
            assert [i.dedupe_key for i in await replica.claim(1)] == ["k2"]
            # Refused (its limit reached: a live storm past its budget refuses each of its
            # changes), an admission writes nothing, its lock's row included: nothing to flush.
            assert await replica.acquire_lock("deploy/x", "e1") is None
            assert await replica.admit(*RESERVE, journal=INTENT, held="k1",
                                       lock=("deploy/x", "e1")) == 0
            # Last, the step's result, journaled as processing's writes are: asynchronously,
            # so lost with the crash, as is the claim on k2.
            await replica.save_step("e1", 0, {"name": "restart", "outcome": "succeeded"})
            assert not flushed()

        os.kill(walwriter, signal.SIGSTOP)
        run(act())
        # The database crashes: a server process killed, the postmaster kills the others and
        # starts again from the WAL on disk, as after an out-of-memory kill. The replica
        # goes on: from here its leases look valid.
        os.kill(walwriter, signal.SIGKILL)
        _until_up(cluster, walwriter)

        async def after():
            async with _other_replica(url, replica) as other:
                # The claim on k1 held (its admission flushed it); k2's was lost, so another
                # replica claims it while the first still runs it ...
                assert [i.dedupe_key for i in await other.claim(10)] == ["k2"]
                # ... but only the holder in the database may act on it.
                with pytest.raises(LeaseLost, match="claim on k2"):
                    await _admit_once_reconnected(replica, *RESERVE_K2, journal=INTENT_K2,
                                                  held="k2")
                assert await other.admit(*RESERVE_K2, journal=INTENT_K2, held="k2") is None
                assert await other.count_events("rate", "deploy/y", 0.0) == 1
                got, pause = await other.get_execution_and_pause("e1")
                assert pause == {"paused": True, "by": "alice"}
                # The intent is there, the result lost with the crash (so the crash was
                # real): the step reads as interrupted, which is never run again blindly.
                assert got is not None and got["steps"] == [INTENT[2]]
                assert await other.count_events("rate", "deploy/x", 0.0) == 1
                # ... and its limit still counts it.
                assert await other.admit(*RESERVE) == 0

        run(after())
    finally:
        cluster.destroy()


def test_postgres_a_renewed_lease_outlives_a_database_crash(run) -> None:
    """A replica counts on its claims from its last renewal on: it fences itself only once
    that renewal's lease is about to lapse. A renewal lost with a database crash left the
    database with the lease before it, and another replica took the alert over while this
    one, not fenced, still ran it (its reads, its notes; an admission now checks the claim)."""
    cluster = _crashable()
    lease = 16.0  # margins of seconds for the crash recovery and the second replica's start
    try:
        url = cluster.create_database()
        database = url.rsplit("/", 1)[1].split("?")[0]

        def lease_until() -> float:
            """The item's lease end, in the database's own clock (which decides a takeover;
            the test's monotonic clock is not the same clock)."""
            return float(cluster.sql("SELECT extract(epoch FROM lease_until) FROM inbox",
                                     database))

        def database_now() -> float:
            return float(cluster.sql("SELECT extract(epoch FROM now())"))

        async def scenario():
            one = open_store(url, sync="normal", lease=lease)
            await one.open()
            # Its renewals are made here, at known times (those after the crash would fail
            # while the database recovers, and a long recovery lasts past its lease).
            one._heartbeat.cancel()  # type: ignore[attr-defined]
            await one.enqueue([_item(1)])
            walwriter = _walwriter(cluster)
            os.kill(walwriter, signal.SIGSTOP)
            assert [i.dedupe_key for i in await one.claim(1)] == ["k1"]
            claimed = lease_until()
            await asyncio.sleep(lease / 2)
            await one.renew()
            renewed = lease_until()
            assert renewed > claimed + lease / 4
            assert _flushed(cluster)
            os.kill(walwriter, signal.SIGKILL)
            _until_up(cluster, walwriter)
            assert lease_until() == renewed, "the renewal was lost with the crash"
            # Past the claim's own lease, before `one` fences itself (a second before the
            # renewed lease ends): `one` still runs the alert.
            while database_now() < claimed + 0.5:
                await asyncio.sleep(0.1)
            async with _other_replica(url, one, lease=lease) as two:
                taken = await two.claim(1)
                assert database_now() < renewed - 1, "recovery too slow to tell"
                assert taken == []

        run(scenario())
    finally:
        cluster.destroy()


def test_postgres_a_target_lock_lost_with_a_database_crash_is_not_admitted_twice(run) -> None:
    """A target lock's commit does not wait for the flush (taken by every decision of a dry
    -run storm too), so a crash may lose it before its holder's first admission, which is
    what flushes it. The holder does not notice (it may be waiting for a precondition's
    delay or a call slot); another execution then took the target and both changes were
    admitted at once. The admission takes the lock again for its holder, in the same
    durable write, or refuses."""
    cluster = _crashable()
    try:
        url = cluster.create_database()

        async def scenario():
            one = open_store(url, sync="normal")
            await one.open()
            walwriter = _walwriter(cluster)
            os.kill(walwriter, signal.SIGSTOP)
            assert await one.acquire_lock("ns/deployment/web", "e1") is None
            assert not _flushed(cluster)
            os.kill(walwriter, signal.SIGKILL)
            _until_up(cluster, walwriter)
            async with _other_replica(url, one) as two:
                # Another replica's run of another playbook finds the target free.
                assert await two.acquire_lock("ns/deployment/web", "e2") is None
                assert await two.admit(*CHANGE, lock=("ns/deployment/web", "e2")) is None
                assert await _admit_once_reconnected(
                    one, *CHANGE, lock=("ns/deployment/web", "e1")) == LOCKED
                # Its lock was lost before anything of it was: it takes it again.
                await two.release_locks("e2")
                assert await one.admit(*CHANGE, lock=("ns/deployment/web", "e1")) is None
                assert await two.acquire_lock("ns/deployment/web", "e3") == "e1"

        run(scenario())
    finally:
        cluster.destroy()


def test_a_change_whose_target_lock_was_lost_does_not_run_and_escalates(run, tmp_path) -> None:
    """Through the service: between the lock and the change's admission the database lost
    the lock and another run took the target (made here by hand, as the crash above makes
    it): the change does not run, and a human hears of it."""
    cluster = PostgresCluster().init()
    try:
        h = Harness(tmp_path, "{cooldown: 1m}")
        h.cfg.store = cluster.create_database()
        run(h.start())
        store = h.service.store  # type: ignore[union-attr]
        admit = store.admit

        async def after_the_crash(*args, **kwargs):
            database = h.cfg.store.rsplit("/", 1)[1]
            cluster.sql("UPDATE locks SET holder = 'another-run'", database=database)
            return await admit(*args, **kwargs)

        store.admit = after_the_crash
        decisions = run(h.fire(web(0)))
        assert [(d["outcome"], d["reason"].split(":")[0]) for d in decisions] == [
            ("blocked", "locked")]
        assert "lock was lost" in decisions[0]["reason"]
        assert h.calls == []
        assert len(h.note_files()) == 1
        run(h.service.stop())
    finally:
        cluster.destroy()


def test_sqlite_fsyncs_the_commits_of_an_admission_and_the_operators_state_only(run, tmp_path) -> None:
    async def scenario():
        store = open_store(f"sqlite:///{tmp_path}/s.db", sync="normal")
        await store.open()
        statements: list[str] = []
        store._db.set_trace_callback(statements.append)  # type: ignore[union-attr]
        setting = ["NORMAL"]  # the connection's, as the store opened it

        async def commits_of(write) -> list[str]:
            """The synchronous setting each commit of `write` ran under."""
            statements.clear()
            await write
            seen = []
            for s in statements:
                if s.startswith("PRAGMA synchronous="):
                    setting[0] = s.split("=")[1]
                elif s == "COMMIT":
                    seen.append(setting[0])
            return seen

        try:
            assert await commits_of(store.enqueue([_item(1)])) == ["NORMAL"]
            assert await commits_of(store.admit(*RESERVE, unless_paused=True,
                                                journal=INTENT)) == ["FULL"]
            # Refused (the limit reached), it writes nothing: after a refusal, admissions go
            # in whatever commit comes, as a storm's writes (a live storm past its budget
            # refuses each of its changes), and one that admits after all is run again in
            # a commit that is fsynced.
            limit = RESERVE[0][0]
            assert await commits_of(store.admit(*RESERVE)) == ["FULL"]
            assert await commits_of(store.admit(*RESERVE)) == ["NORMAL"]
            assert await commits_of(store.admit(*RESERVE)) == ["NORMAL"]
            assert await commits_of(store.admit(
                [Limit(limit.kind, limit.key, limit.since, 2)], RESERVE[1])) == ["NORMAL", "FULL"]
            assert await store.count_events("rate", "deploy/x", 0.0) == 2
            assert await commits_of(store.put_state(PAUSE, {"paused": True})) == ["FULL"]
            # A note spooled for a sink that is down: a storm's worth would each wait.
            assert await commits_of(store.put_state("spool:e1:slack", {"id": "e1"},
                                                    durable=False)) == ["NORMAL"]
            assert await commits_of(store.save_step("e1", 0, {"name": "restart",
                                                              "outcome": "succeeded"})) == ["NORMAL"]
            assert await commits_of(store.enqueue([_item(2)])) == ["NORMAL"]
        finally:
            await store.close()

    run(scenario())


@pytest.mark.parametrize("note", [False, True], ids=["final-write", "before-its-note"])
def test_postgres_a_success_the_circuit_counts_outlives_a_database_crash(run, tmp_path,
                                                                         note) -> None:
    """The circuit lets a run change its target on the successes it counts. A success was
    committed asynchronously with the final decision (or before its note), so a database
    crash right after lost it: the next firing, acknowledged before the crash, found the
    circuit below `max_refires` and changed the target once more than it allows (its lock,
    whose release was lost too, expires with its lease). The success's write is durable."""
    cluster = _crashable()
    try:
        h = Harness(tmp_path, "{rate_limit: {max: 10, window: 1h}, "
                              "circuit_breaker: {max_refires: 1, window: 1h}}", always=note)
        h.cfg.store = cluster.create_database()
        h.cfg.store_lease = 3.0
        run(h.start())
        service, store = h.service, h.service.store
        walwriter = _walwriter(cluster)

        async def remediate() -> dict:
            for n in (0, 5):  # both firings acknowledged: intake waits for the flush
                await service.intake(parse_notification(json.dumps(notification(web(n))).encode()))
            os.kill(walwriter, signal.SIGSTOP)
            [item] = await store.claim(1)
            [first] = await service.engine.process(item)
            return first

        first = run(remediate())
        assert first["outcome"] in ("succeeded", "escalated") and h.calls == [first["id"]]
        os.kill(walwriter, signal.SIGKILL)  # the database crashes
        _until_up(cluster, walwriter)

        async def fire_again() -> list[dict]:
            await asyncio.sleep(h.cfg.store_lease + 1)  # what was lost of the lock expired
            for _ in range(100):  # once the pool replaced the connections the crash closed
                try:
                    item = await store.claim_key(dedupe_key("web", web(5)["startsAt"], "firing"))
                    break
                except StoreUnavailable:
                    await asyncio.sleep(0.1)
            assert item is not None
            return await service._process(item)

        [again] = run(fire_again())
        assert (again["outcome"], again["reason"].split(":")[0]) == ("blocked", "circuit_open"), \
            again
        assert h.calls == [first["id"]]
        with contextlib.suppress(Exception):
            run(service.stop())
    finally:
        cluster.destroy()


def test_sqlite_fsyncs_the_commit_of_a_circuits_success_only(run, tmp_path) -> None:
    """SQLite's power cut cannot be made here: the commit carrying a success is fsynced
    (synchronous=FULL), with the final record or before a note, and a routine one is not."""
    for always in (False, True):
        (tmp_path / str(always)).mkdir()
        h = Harness(tmp_path / str(always), "{rate_limit: {max: 10, window: 1h}, "
                    "circuit_breaker: {max_refires: 5, window: 1h}}",
                    always=always)
        run(h.start())
        statements: list[str] = []
        h.service.store._db.set_trace_callback(statements.append)  # type: ignore[attr-defined]
        setting, full = ["NORMAL"], []
        [done] = run(h.fire(web(0)))
        for s in statements:
            if s.startswith("PRAGMA synchronous="):
                setting[0] = s.split("=")[1]
            elif s.startswith("INSERT INTO events") and "'success'" in s:
                full.append(setting[0])
        assert done["outcome"] in ("succeeded", "escalated") and full == ["FULL"], statements
        run(h.service.stop())
