"""Nothing on the event loop waits on a SQLite lock, and the CLI only ever reads the store."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

from remediator.store.sqlite import PROCESSING_PER_COMMIT, SQLiteStore, _Checkpointer
from tests.conftest import write_rules
from tests.integration.test_cli import cli
from tests.support.payloads import alert, notification
from tests.support.worker import OPERATOR, WorkerProcess, http

RULES = """
playbooks:
  - name: log-only
    match: {alertname: Anything}
    steps:
      - {name: note, action: log, params: {message: seen}}
"""

# Another real process takes the write lock and keeps it until told (a line on stdin).
HOLDER = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
db.execute("BEGIN IMMEDIATE")
print("held", flush=True)
sys.stdin.readline()
db.execute("COMMIT")
"""


def hold_write_lock(path: str) -> subprocess.Popen[str]:
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, path], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline() == "held\n"
    return holder


def test_healthy_answers_while_another_process_holds_the_write_lock(tmp_path):
    w = WorkerProcess(tmp_path, [str(write_rules(tmp_path / "rules", RULES))]).start()
    holder = None
    try:
        holder = hold_write_lock(w.db.removeprefix("sqlite:///"))
        posted: list[tuple[int, object]] = []
        post = threading.Thread(target=lambda: posted.append(
            w.post_alerts(notification(alert("Anything", fingerprint="lock")))))
        post.start()
        time.sleep(1.0)  # the webhook's write is now waiting for the lock
        started = time.monotonic()
        status, _ = http("GET", f"{w.url}/-/healthy", timeout=30)
        latency = time.monotonic() - started
        print(f"/-/healthy answered in {latency * 1000:.1f} ms with the write lock held")
        # Still held, and the webhook still waiting for it: healthy did not wait for SQLite.
        assert status == 200 and holder.poll() is None and post.is_alive()
        holder.communicate("release\n", timeout=10)
        post.join(30)
        assert posted and posted[0][0] == 202  # acknowledged once the lock was free
    finally:
        if holder is not None and holder.poll() is None:
            holder.kill()
        assert w.stop() == 0


def test_a_locked_store_is_tried_again_from_a_timer_whatever_is_queued(run, tmp_path):
    """With more processing writes queued than one commit takes, a refused BEGIN still waits
    for its backoff timer (before, the commit scheduled for the rest ran in the next
    iteration and retried at once: the loop spun on the lock, ~700 attempts during one 30 ms
    TRUNCATE checkpoint of the storm bench)."""
    async def scenario():
        store = SQLiteStore(f"sqlite:///{tmp_path}/s.db")
        await store.open()
        statements: list[str] = []
        store._db.set_trace_callback(statements.append)  # type: ignore[union-attr]
        holder = sqlite3.connect(f"{tmp_path}/s.db", isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            writes = asyncio.gather(*(store.record_event("k", f"k{i}", i)
                                      for i in range(3 * PROCESSING_PER_COMMIT)))
            await asyncio.sleep(0.3)  # 2 ms doubling to 50 ms: about 10 attempts
            attempts = statements.count("BEGIN IMMEDIATE")
            holder.execute("COMMIT")
            await writes
            assert await store._scalar("SELECT count(*) FROM events") == 3 * PROCESSING_PER_COMMIT
        finally:
            holder.close()
            await store.close()
        assert 2 <= attempts <= 15, attempts
    run(scenario())


def test_a_write_waiting_for_its_commit_when_the_store_closes_is_refused(run, tmp_path):
    """A processing write waits for more to join its commit while chunks of processing are
    queued (`Turns.when_idle`); the store closing meanwhile (shutdown, an API request still
    in flight) refuses it (StoreUnavailable: a 503, retried), never leaves its caller
    waiting for ever."""
    from remediator import turns
    from remediator.store.base import StoreUnavailable

    async def scenario():
        store = SQLiteStore(f"sqlite:///{tmp_path}/s.db")
        await store.open()
        queued = [asyncio.create_task(turns.take()) for _ in range(3)]
        await asyncio.sleep(0)
        write = asyncio.create_task(store.record_event("k", "k", 1.0))
        await asyncio.sleep(0)
        assert store._pending and turns.turns().ready()  # waiting for more to join it
        await store.close()
        try:
            await asyncio.wait_for(write, 10)
        except StoreUnavailable:
            pass
        else:
            raise AssertionError("a write after close was committed")
        await asyncio.gather(*queued)
    run(scenario())


def test_a_commit_refused_by_the_checkpointer_is_tried_again_as_soon_as_it_lets_go(run, tmp_path):
    """The checkpointer's RESTART holds the write lock for a few ms; the loop's commit it
    refused waited for its backoff timer (up to 50 ms more), now for the lock's release."""
    async def scenario():
        store = SQLiteStore(f"sqlite:///{tmp_path}/s.db")
        await store.open()
        statements: list[str] = []
        store._db.set_trace_callback(statements.append)  # type: ignore[union-attr]
        store._retry_delay = 3600.0  # a retry from the timer would come in an hour
        holder = sqlite3.connect(f"{tmp_path}/s.db", isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # as the checkpointer's RESTART does
        try:
            write = asyncio.ensure_future(store.record_event("k", "k", 1.0))
            while "BEGIN IMMEDIATE" not in statements:
                await asyncio.sleep(0)
            holder.execute("COMMIT")
            await asyncio.to_thread(store._released)  # what the checkpointer calls
            await asyncio.wait_for(write, 60)
            assert await store._scalar("SELECT count(*) FROM events") == 1
        finally:
            holder.close()
            await store.close()
        assert statements.count("BEGIN IMMEDIATE") == 2  # refused once, then done
    run(scenario())


def test_a_wal_written_past_its_limit_starts_over_and_is_truncated_only_once_idle(tmp_path):
    """Past its limit, a WAL still written to is RESTARTed (the writer starts over; the file
    keeps its size) rather than TRUNCATEd (which held the write lock 65-230 ms in a storm);
    once nothing is written for an interval, it is truncated. Each checkpoint that held the
    write lock tells the store when it lets go."""
    path, limit = str(tmp_path / "w.db"), 2 << 20
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA wal_autocheckpoint=0")
    db.execute("CREATE TABLE t (x BLOB)")
    released: list[int] = []
    checkpointer = _Checkpointer(path, interval=0.5, limit=limit,
                                 released=lambda: released.append(1))
    samples: list[tuple[float, int]] = []  # (when, the WAL's size) after each commit
    try:
        deadline = time.monotonic() + 120
        while checkpointer.restarts < 3 and time.monotonic() < deadline:
            db.execute("INSERT INTO t VALUES (randomblob(500))")  # a commit each
            samples.append((time.monotonic(), os.path.getsize(path + "-wal")))
            time.sleep(0.001)
        assert checkpointer.restarts >= 3
        # Never truncated while written to: the file shrinks only across a pause of the
        # writer of a whole interval (two passes saw the same frames), which a loaded
        # machine makes of a 1 ms sleep now and then; written to, it only grows.
        assert all(now >= size or at - before >= 0.5 for (before, size), (at, now)
                   in itertools.pairwise(samples)), samples
        assert max(size for _, size in samples) < 4 * limit  # yet bounded: the writer started over
        while not checkpointer.truncates and time.monotonic() < deadline:
            time.sleep(0.01)
        assert os.path.getsize(path + "-wal") == 0  # idle: the space given back
    finally:
        checkpointer.stop()
        db.close()
    assert len(released) == checkpointer.restarts + checkpointer.truncates + 1  # + stop's


def test_a_store_that_stays_locked_is_a_503_for_control_calls_never_a_500(tmp_path):
    w = WorkerProcess(tmp_path, [str(write_rules(tmp_path / "rules", RULES))]).start()
    holder = None
    try:
        holder = hold_write_lock(w.db.removeprefix("sqlite:///"))
        # pause writes to the store; the lock outlives the store's 5 s of retries
        status, body = http("POST", f"{w.url}/api/v1/pause", headers=OPERATOR, timeout=60)
        assert status == 503 and "store unavailable" in body["error"], (status, body)
        holder.communicate("release\n", timeout=10)
        status, _ = http("POST", f"{w.url}/api/v1/pause", headers=OPERATOR, timeout=60)
        assert status == 200  # the same call succeeds once the store answers again
    finally:
        if holder is not None and holder.poll() is None:
            holder.kill()
        assert w.stop() == 0


WRITER = """
import os, sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("PRAGMA journal_mode=WAL")
db.execute("PRAGMA wal_autocheckpoint=0")
from remediator.store.sqlite import _SCHEMA
db.executescript(_SCHEMA)
db.execute("INSERT INTO executions VALUES ('e1', '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z',"
           " 'A', 'p', 'succeeded', 'f', '{\\"id\\": \\"e1\\", \\"outcome\\": \\"succeeded\\"}')")
os.kill(os.getpid(), 9)  # a crash leaves the WAL as it is
"""


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_history_and_show_only_read_the_store(tmp_path):
    missing = tmp_path / "missing.db"
    refused = cli("history", "--store", f"sqlite:///{missing}")
    assert refused.returncode != 0 and "cannot open the store" in refused.stderr
    assert not missing.exists()  # a typo does not create an empty store

    db = tmp_path / "r.db"
    subprocess.run([sys.executable, "-c", WRITER, str(db)], check=False, timeout=30)
    wal = Path(f"{db}-wal")
    before = (_digest(db), _digest(wal))
    assert wal.stat().st_size > 0
    history = cli("history", "--format", "json", "--store", f"sqlite:///{db}")
    assert history.returncode == 0 and "e1" in history.stdout, history.stderr
    assert cli("show", "e1", "--format", "json", "--store", f"sqlite:///{db}").returncode == 0
    # Nothing checkpointed nor written: the WAL and the database file are as the crash left them.
    assert (_digest(db), _digest(wal)) == before
