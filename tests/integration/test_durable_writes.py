"""A mutation's admission and the operator's state outlive a crash of the database, whatever
`store_sync` says: the admission's intent is what keeps a step from running again after it,
a claim what keeps another replica from running the alert beside it, and the pause is the
kill switch. Processing's other writes may commit asynchronously.

PostgreSQL crashes for real (its stopped WAL writer killed: the postmaster starts again from
the WAL on disk), so what did not wait for its flush is lost. SQLite's power cut cannot be
made here, so its test reads what the store tells SQLite: the commit carrying such a write
is fsynced (synchronous=FULL), a storm's are not.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time

from remediator.store import open_store
from remediator.store.base import PAUSE, Limit
from tests.support.postgres import PostgresCluster


def _decision(i: str) -> dict:
    return {"id": i, "created_at": "2026-01-01T00:00:01Z", "alertname": "A", "playbook": "pb",
            "outcome": "running", "fingerprint": "f1", "reason": "", "steps": [],
            "alert": {"status": "firing", "labels": {"alertname": "A"}, "annotations": {},
                      "startsAt": "2026-01-01T00:00:00Z", "endsAt": "", "fingerprint": "f1"}}


ALERT = ("k1", {"status": "firing", "labels": {"alertname": "A"}, "annotations": {},
                "startsAt": "2026-01-01T00:00:00Z", "endsAt": "", "fingerprint": "f1"},
         {"receiver": "r"})
INTENT = ("e1", 0, {"name": "restart", "outcome": "running"}, _decision("e1"))
RESERVE = ([Limit("rate", "deploy/x", 0.0, 1)], [("rate", "deploy/x", 100.0, {})])


def _until_up(cluster: PostgresCluster) -> None:
    """Wait for the postmaster's crash recovery (it restarts every process, and replays the
    WAL that was written, on a fresh shared memory)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            cluster.sql("SELECT 1")
            return
        except subprocess.CalledProcessError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_postgres_admission_and_pause_outlive_a_database_crash(run) -> None:
    cluster = PostgresCluster().init()
    try:
        # Nothing but the writers themselves may flush the WAL meanwhile (no checkpoint, no
        # autovacuum), and the WAL writer, which writes what commits asynchronously, is
        # stopped: a crash loses exactly the commits that did not wait for their flush.
        cluster.sql("ALTER SYSTEM SET autovacuum = off")
        cluster.sql("ALTER SYSTEM SET checkpoint_timeout = '1h'")
        cluster.sql("SELECT pg_reload_conf()")
        url = cluster.create_database()
        store = open_store(url, sync="normal")
        run(store.open())
        # Acknowledged: intake's commits always wait for the flush.
        run(store.enqueue([ALERT, ("k2", *ALERT[1:])]))
        walwriter = int(cluster.sql(
            "SELECT pid FROM pg_stat_activity WHERE backend_type = 'walwriter'"))

        def flushed() -> bool:
            """Whether all the WAL written so far is on disk (the WAL writer stopped, only a
            commit waiting for its flush moves it)."""
            return cluster.sql("SELECT pg_current_wal_flush_lsn() >= "
                               "pg_current_wal_insert_lsn()") == "t"

        async def act():
            assert [i.dedupe_key for i in await store.claim(1)] == ["k1"]
            assert flushed()
            assert await store.admit(*RESERVE, unless_paused=True, journal=INTENT) is None
            assert flushed()
            await store.put_state(PAUSE, {"paused": True, "by": "alice"})
            assert flushed()
            assert [i.dedupe_key for i in await store.claim(1)] == ["k2"]
            assert flushed()
            # Last, the step's result, journaled as processing's writes are: asynchronously,
            # so lost with the crash (no later flush carries it along).
            await store.save_step("e1", 0, {"name": "restart", "outcome": "succeeded"})
            assert not flushed()

        os.kill(walwriter, signal.SIGSTOP)
        run(act())
        # The database crashes: a server process killed, the postmaster kills the others and
        # starts again from the WAL on disk, as after an out-of-memory kill.
        os.kill(walwriter, signal.SIGKILL)
        with contextlib.suppress(Exception):
            run(store.close())
        _until_up(cluster)

        async def after():
            store = open_store(url, sync="normal")  # another replica, or this one restarted
            await store.open()
            try:
                # The claim holds: nobody runs the alert beside the replica that claimed it
                # before that one's lease has lapsed.
                assert await store.claim(10) == []
                got, pause = await store.get_execution_and_pause("e1")
                assert pause == {"paused": True, "by": "alice"}
                # The intent is there, the result lost with the crash (so the crash was
                # real): the step reads as interrupted, which is never run again blindly.
                assert got is not None and got["steps"] == [INTENT[2]]
                assert await store.count_events("rate", "deploy/x", 0.0) == 1
                # ... and its limit still counts it.
                assert await store.admit(*RESERVE) == 0
            finally:
                await store.close()

        run(after())
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

        def alert(n: int) -> tuple:
            return (f"k{n}", {"status": "firing", "labels": {"alertname": "A"}, "annotations": {},
                              "startsAt": "2026-01-01T00:00:00Z", "endsAt": "",
                              "fingerprint": f"f{n}"}, {"receiver": "r"})

        try:
            assert await commits_of(store.enqueue([alert(1)])) == ["NORMAL"]
            assert await commits_of(store.admit(*RESERVE, unless_paused=True,
                                                journal=INTENT)) == ["FULL"]
            assert await commits_of(store.put_state(PAUSE, {"paused": True})) == ["FULL"]
            # A note spooled for a sink that is down: a storm's worth would each wait.
            assert await commits_of(store.put_state("spool:e1:slack", {"id": "e1"},
                                                    durable=False)) == ["NORMAL"]
            assert await commits_of(store.save_step("e1", 0, {"name": "restart",
                                                              "outcome": "succeeded"})) == ["NORMAL"]
            assert await commits_of(store.enqueue([alert(2)])) == ["NORMAL"]
        finally:
            await store.close()

    run(scenario())
