"""The embedded store: one SQLite file in WAL mode, one connection, on the event loop.

Statements are small, indexed and, in WAL mode with synchronous=NORMAL, never wait for an
fsync, so they run directly on the event loop: measured against a dedicated store thread,
this removed the thread handoffs and GIL convoy that tripled acknowledgement latency.
Intake uses group commit: all webhook calls parsed in one loop iteration share one
transaction. A WAL commit survives a crash of the process (kill -9); `sync: full` also
fsyncs each intake commit so it survives a power cut, at a measured cost in throughput.

Nothing on the loop waits on a lock: the loop's connection has busy_timeout=0, so a write
lock held by another connection (the checkpointer's TRUNCATE, a backup tool, another
process) makes `BEGIN IMMEDIATE` fail at once, and the transaction is retried from a timer
with backoff while the loop keeps serving. Callers wait on their future, not on SQLite.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from .. import turns
from ..alerts import utcnow_iso
from . import packing
from .base import (
    INTAKE_PROBE,
    PAUSE,
    PAUSED,
    RESOLVED,
    Enqueued,
    Entry,
    Event,
    InboxItem,
    Limit,
    LocalCoordination,
    StoreUnavailable,
)
from .sqlite_files import WriterLock

log = logging.getLogger("remediator.store")

T = TypeVar("T")
Rows = list[tuple[str, dict[str, Any], dict[str, Any]]]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS inbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    dedupe_key TEXT NOT NULL UNIQUE,
    alert TEXT NOT NULL,
    grp TEXT NOT NULL,
    received_at TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending'
);
CREATE INDEX IF NOT EXISTS inbox_state ON inbox(state, id);
CREATE TABLE IF NOT EXISTS executions (
    id TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    alertname TEXT NOT NULL,
    playbook TEXT,
    outcome TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS executions_created ON executions(created_at);
CREATE TABLE IF NOT EXISTS steps (
    execution_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (execution_id, idx)
);
CREATE TABLE IF NOT EXISTS events (kind TEXT NOT NULL, key TEXT NOT NULL, at REAL NOT NULL,
                                   data TEXT NOT NULL DEFAULT '{}');
CREATE INDEX IF NOT EXISTS events_key ON events(kind, key, at);
CREATE INDEX IF NOT EXISTS events_at ON events(at);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
# Each entry migrates the schema above from `PRAGMA user_version` i to i+1, as MIGRATIONS
# does on PostgreSQL; never edit a released entry, append one.
MIGRATIONS: list[str | Callable[[sqlite3.Connection], None]] = [
    # 1: decisions and inbox items compressed against shared references (packing.py)
    """
    ALTER TABLE executions ADD COLUMN ref INTEGER;
    ALTER TABLE inbox ADD COLUMN ref INTEGER;
    CREATE TABLE refs (id INTEGER PRIMARY KEY, created REAL NOT NULL, data BLOB NOT NULL);
    """,
    # 2: a decision's record updates the indexes a statement needs (as PostgreSQL's 5):
    # by outcome only where `running` (the age gauge, a restart's resume; other outcome
    # filters read history backwards), and none by `updated_at` (pruning reads the creation
    # index: a row is updated after its creation). Two index entries less a decision: ~7 us
    # of its CPU, and two pages less in its commit.
    """
    DROP INDEX IF EXISTS executions_outcome;
    DROP INDEX IF EXISTS executions_updated;
    CREATE INDEX executions_running ON executions(created_at) WHERE outcome = 'running';
    """,
    # 3: inbox ids without AUTOINCREMENT, which updated sqlite_sequence at every insert (a
    # fifth of intake's statements' time, and a page more in each commit). A new id is still
    # above every id in the table, so claims keep their order; an id is used again only
    # once its row and every row after it were pruned, and pruning deletes only done items.
    """
    CREATE TABLE inbox_ids (
        id INTEGER PRIMARY KEY,
        dedupe_key TEXT NOT NULL UNIQUE,
        alert TEXT NOT NULL,
        grp TEXT NOT NULL,
        received_at TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending',
        ref INTEGER
    );
    INSERT INTO inbox_ids SELECT id, dedupe_key, alert, grp, received_at, state, ref FROM inbox;
    DROP TABLE inbox;
    ALTER TABLE inbox_ids RENAME TO inbox;
    CREATE INDEX inbox_state ON inbox(state, id);
    """,
    # 4: executions blocked on an approval, indexed by their own record (`_awaiting`)
    lambda db: _awaiting(db),
    # 5: decisions packed as Zstandard frames against their reference (packing.Refs.pack),
    # which a version before cannot read: it refuses the store (the version is newer than
    # it supports) rather than open it and fail on each record it reads. Nothing to change.
    "",
    # 6: decisions by the time their record was last written, which the console's live
    # stream reads each second (`list_updated`): the newest 50 by creation missed an older
    # one's change (an approval answered, a long run ending). Migration 2 dropped this
    # index when nothing read it; a write appends its entry at the index's end (times
    # grow), so a commit's decisions share the index's last page. (IF NOT EXISTS: a file
    # whose version was set back migrates again.)
    """
    CREATE INDEX IF NOT EXISTS executions_updated ON executions(updated_at);
    """,
    # 7: decisions by the order their records were committed (`seq`, one more than the
    # highest, given inside the write's transaction: writes to the file take its lock one
    # at a time, so a later commit has a higher one), which the console's live stream reads
    # instead of `updated_at` (`changes`): a record is stamped as its write is queued, and
    # one that waited (a group commit, a lock another process held, a retry) was stamped
    # before a read it missed. The index by `updated_at` goes: nothing reads it.
    """
    ALTER TABLE executions ADD COLUMN seq INTEGER;
    CREATE INDEX IF NOT EXISTS executions_seq ON executions(seq);
    DROP INDEX IF EXISTS executions_updated;
    """,
]


def path_from_url(url: str) -> str:
    """As in SQLAlchemy: `sqlite:////abs/path.db` (four slashes) is absolute,
    `sqlite:///rel/path.db` relative to the working directory, `sqlite://` in memory."""
    if not url.startswith("sqlite://"):
        raise ValueError(f"unsupported store URL {url!r}: expected sqlite:///path or sqlite://")
    rest = url[len("sqlite://"):]
    if rest in ("", "/", "/:memory:"):
        return ":memory:"
    # `sqlite:////abs` is `/abs`, not `//abs` (the same file to POSIX, shown doubled)
    return rest[1:] if rest.startswith("/") else rest


def _absolute_hint(path: str) -> str:
    """`sqlite:///tmp/x.db` is the relative `tmp/x.db`: when the absolute one was plainly
    meant (its directory exists), say how to write it."""
    directory = os.path.dirname(path)
    if not os.path.isabs(path) and directory and os.path.isdir("/" + directory):
        return f"; for the absolute path write sqlite:////{path} (four slashes)"
    return ""


Write = Callable[[sqlite3.Connection], Any]
# What a pending write is, beside its function and its caller's future (bit flags).
PRIORITY = 1  # intake, the operator's state: joins the next commit, takes no turn after it
DURABLE = 2  # fsynced with its commit (synchronous=FULL), whatever `store_sync` says
# What a write returns to be run again, in the next commit and fsynced (`SQLiteStore.admit`:
# a refusal writes nothing, so it goes in any commit; an admission must outlive a power cut).
AGAIN_FSYNCED = object()

# How long a write waits, off the loop, for another connection's write lock before its
# callers get StoreUnavailable (intake then answers 503 and Alertmanager retries).
LOCK_WAIT = 5.0
# The runs waiting on an approval (`awaiting_approval`): few, read by their partial index.
AWAITING = "SELECT id, awaiting FROM executions WHERE awaiting IS NOT NULL"
_RETRY_FIRST, _RETRY_MAX = 0.002, 0.05
# Writes other than priority ones (intake, state) that one commit takes (`_take_batch`).
# 8 rather than 4: half the commits per decision in drain_bench (0.14, was 0.28; 6.1 write
# calls and 6.7 KB written per decision, were 7.9 and 8.5), its CPU per decision lower in
# each of five alternated pairs; a webhook's rows still commit at once (`_wait_for_more`).
PROCESSING_PER_COMMIT = 8


def _busy(exc: sqlite3.Error) -> bool:
    """SQLITE_BUSY (5) and SQLITE_LOCKED (6), extended codes included."""
    return getattr(exc, "sqlite_errorcode", 0) & 0xFF in (5, 6)


class _Checkpointer:
    """Copies the WAL into the database file off the event loop, once a second, holding the
    write lock (which stalls every commit, acknowledgements' too) as briefly as it can.

    PASSIVE checkpoints never block the writer, and the writer starts the WAL over once a
    pass copied all of it; but in a storm frames are committed while a pass runs, no pass
    ever completes and the WAL would grow without bound. Past `limit` bytes, passes run back
    to back until few frames are left, and a RESTART copies those under the write lock and
    makes the writer start over: the file stops growing. A TRUNCATE held the lock for the
    same copy plus shrinking a file of `limit` bytes (65-230 ms of the loop's commits refused
    in the storm bench, every few seconds); it now runs only once no frame was written for a
    whole interval (it gives the file's space back, and no commit waits for it then). The
    loop's commits refused meanwhile are retried as soon as the lock is let go (`released`).

    Each pass also checks that `path` is still the file the store opened: deleted or
    replaced under it (a cleanup job, a volume re-provisioned), every commit went on into
    the unlinked file, acknowledged, and was gone at the next restart with the history,
    cooldowns and pause. Then `gone` says why, and the store refuses writes (a 503).
    """

    CATCH_UP_PASSES, FEW_FRAMES = 8, 64

    def __init__(self, path: str, interval: float = 1.0, limit: int = 64 << 20,
                 released: Callable[[], None] = lambda: None):
        self._stop = threading.Event()
        self.restarts = self.truncates = 0  # checkpoints that held the write lock (tests)
        self._released = released
        self.gone: str | None = None
        opened = os.stat(path)
        self._file = (opened.st_dev, opened.st_ino)
        self._thread = threading.Thread(target=self._run, args=(path, interval, limit),
                                        name="sqlite-checkpoint", daemon=True)
        self._thread.start()

    def _run(self, path: str, interval: float, limit: int) -> None:
        db = sqlite3.connect(path, isolation_level=None)
        db.execute("PRAGMA busy_timeout=1000")
        most = limit // (db.execute("PRAGMA page_size").fetchall()[0][0] + 24)  # WAL frames
        wal, written = path + "-wal", -1  # the WAL's frames at the last pass
        try:
            while not self._stop.wait(interval):
                if self.gone is None and (gone := self._moved(path)):
                    log.error("store file %s %s: writes are refused until remediator is "
                              "restarted on its volume", path, gone)
                    self.gone = f"the store's file {path} {gone}; restart remediator"
                with contextlib.suppress(sqlite3.Error, OSError):
                    _, frames, copied = self._checkpoint(db, "PASSIVE")
                    idle, written = frames == copied == written, frames
                    if idle and os.path.getsize(wal) > limit:
                        self._checkpoint(db, "TRUNCATE")
                        self.truncates += 1
                    elif frames > most:  # past the limit, and still written to
                        for _ in range(self.CATCH_UP_PASSES):
                            now = self._checkpoint(db, "PASSIVE")[1]
                            if now - frames < self.FEW_FRAMES:
                                break
                            frames = now
                        self._checkpoint(db, "RESTART")
                        self.restarts += 1
        finally:
            with contextlib.suppress(sqlite3.Error):
                self._checkpoint(db, "TRUNCATE")
            db.close()

    def _moved(self, path: str) -> str | None:
        """Why `path` is no longer the file the store opened, if it is not."""
        try:
            now = os.stat(path)
        except FileNotFoundError:
            return "was deleted"
        except OSError:  # unreadable for a moment: said when it is definite
            return None
        return None if (now.st_dev, now.st_ino) == self._file else "was replaced"

    def _checkpoint(self, db: sqlite3.Connection, mode: str) -> tuple[int, int, int]:
        try:
            return db.execute(f"PRAGMA wal_checkpoint({mode})").fetchall()[0]
        finally:
            if mode != "PASSIVE":
                self._released()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


class SQLiteStore(LocalCoordination):
    clock_offset = 0.0  # one process (or one host's processes) on one file: its own clock
    def __init__(self, url: str = "sqlite://", sync: str = "normal", read_only: bool = False):
        super().__init__()
        self.path = path_from_url(url)
        # read_only (the CLI's history/show): mode=ro, no schema, no checkpointer, and a
        # missing file is an error rather than a new empty store.
        self.read_only = read_only
        if sync.lower() not in ("normal", "full"):
            raise ValueError(f"store sync must be normal or full, got {sync!r}")
        self.intake_sync = sync.upper()
        self._db: sqlite3.Connection | None = None
        self._pending: list[tuple[Write, asyncio.Future[Any], int]] = []
        self._flush_scheduled = False
        self._hooked: turns.Turns | None = None  # to call `_turns_idle` once none is ready
        self._finished: list[int] = []
        self._finishing: list[int] = []  # items the writes of the open transaction finished
        self._full = False  # the connection's current synchronous=FULL setting
        self._refusing = False  # the last admission was refused (`admit`)
        self._checkpointer: _Checkpointer | None = None
        self._lock: WriterLock | None = None  # held while open for writing, on a file
        self._retry_at: float | None = None  # first BUSY of the batch waiting to commit
        self._retry_delay = _RETRY_FIRST
        self._retry_timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._refs = packing.Refs()
        self._version = len(MIGRATIONS)  # an older file opened read-only reads as it is

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        """A read. WAL readers do not wait for writers, but a reader can still meet BUSY
        briefly (WAL recovery, a TRUNCATE checkpoint resetting the log): retry from the loop."""
        delay, deadline = _RETRY_FIRST, time.monotonic() + LOCK_WAIT
        while True:
            try:
                return fn(*args)
            except sqlite3.OperationalError as exc:  # disk full, I/O error, locked
                if not _busy(exc) or time.monotonic() > deadline:
                    raise StoreUnavailable(str(exc)) from exc
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RETRY_MAX)

    async def _write(self, fn: Write, priority: bool = False, turn: bool = True,
                     durable: bool = False) -> Any:
        """Run `fn(db)` in the transaction this loop iteration commits; return after COMMIT.

        Group commit: every write issued in the same loop iteration (webhook requests,
        journal entries, guard events) shares one transaction, yet no caller continues
        before its write is committed, so a step's intent is on disk before the step runs.
        `priority` writes (intake, the operator's state: pause is the kill switch) join the
        next commit ahead of queued processing writes and take no turn after it; any other
        caller then waits for processing's turn (turns.py), unless `turn` is False (the write
        that finishes an inbox item: what follows it is the decision's log line). A
        `durable` write's commit is fsynced before its caller continues.
        """
        if self._db is None:
            raise StoreUnavailable("store is not open")
        if self._checkpointer is not None and self._checkpointer.gone:
            raise StoreUnavailable(self._checkpointer.gone)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append((fn, future, PRIORITY * priority | DURABLE * durable))
        self._schedule(loop)
        result = await future
        if turn and not priority:
            await turns.take()
        return result

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self._flush_scheduled:
            if self._retry_at is None and self._wait_for_more():
                self._wait_idle()
                return
            self._flush_scheduled = True
            loop.call_soon(self._flush)

    def _wait_idle(self) -> None:
        """Processing's writes wait for more to join them: the next write looks again, and
        so do the turns once no chunk is ready (`Turns.when_idle`); a flush looked again at
        every loop iteration (a callback, and a look at the writes, per iteration)."""
        current = turns.turns()
        if self._hooked is not current:  # (another loop's, in tests, never calls it)
            self._hooked = current
            current.when_idle(self._turns_idle)

    def _turns_idle(self) -> None:
        self._hooked = None
        if self._pending and self._db is not None:
            self._schedule(asyncio.get_running_loop())

    def _wait_for_more(self) -> bool:
        """Whether processing's writes wait for more to join their commit: a commit's own
        cost (~30 us per decision: BEGIN, COMMIT, the WAL frames of the pages it touched) is
        shared by the writes it carries. They wait while processing has other chunks queued
        to run now (which write next), up to PROCESSING_PER_COMMIT; a priority write (intake,
        before its 202; the operator's state), no other chunk ready, or turns held back for
        intake commit them at once. Each caller still resumes only after its COMMIT."""
        others = 0
        for _, _, flags in self._pending:
            if flags & PRIORITY:
                return False
            others += 1
        return others < PROCESSING_PER_COMMIT and turns.turns().ready()

    def _flush(self) -> None:
        self._flush_scheduled, self._retry_timer = False, None
        if self._retry_at is None and self._wait_for_more():
            self._wait_idle()  # chunks were queued meanwhile: looked at again
            return
        batch = self._take_batch()
        results: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        try:
            db = self._conn()
            # A WAL commit survives a process crash; fsynced, a power cut too: a commit
            # carrying a durable write (a mutation's admission, the operator's state) is,
            # and with sync=full one carrying intake's rows (before their 202). Writes read
            # `_full` while they run (`AGAIN_FSYNCED`).
            full = any(flags & DURABLE or (flags & PRIORITY and self.intake_sync == "FULL")
                       for _, _, flags in batch)
            if full != self._full:
                db.execute(f"PRAGMA synchronous={'FULL' if full else 'NORMAL'}")
                self._full = full
            try:
                db.execute("BEGIN IMMEDIATE")  # busy_timeout=0: fails at once when locked
            except sqlite3.OperationalError as exc:
                if _busy(exc) and self._retry_later(batch):
                    return
                raise
            self._retry_at, self._retry_delay = None, _RETRY_FIRST
            began, intake, again = time.perf_counter(), 0.0, []
            self._finishing = []
            try:
                for fn, future, flags in batch:
                    priority = flags & PRIORITY
                    at = time.perf_counter() if priority else 0.0
                    # A failing statement is rolled back alone; the others still commit.
                    try:
                        value = fn(db)
                    except Exception as exc:  # its caller gets the error; nobody waits forever
                        results.append((future, None, StoreUnavailable(f"store write failed: {exc}")))
                    else:
                        if value is AGAIN_FSYNCED:
                            again.append((fn, future, flags | DURABLE))
                        else:
                            results.append((future, value, None))
                    if not db.in_transaction:  # disk full, I/O error: SQLite rolled back all
                        raise sqlite3.OperationalError("transaction rolled back")
                    if priority:
                        intake += time.perf_counter() - at
                self._mark_done(db)
                db.execute("COMMIT")
                self._finished = []  # marked: kept until then, for the next commit to mark
                self._pending = again + self._pending
                if not all(flags & PRIORITY for _, _, flags in batch):
                    # All of a commit that carries processing's writes but intake's own
                    # statements is processing's time (its share of the loop: turns.py).
                    turns.turns().charge(time.perf_counter() - began - intake)
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        except (sqlite3.Error, StoreUnavailable) as exc:
            results = [(f, None, StoreUnavailable(f"store commit failed: {exc}")) for _, f, _ in batch]
        if self._pending:  # what this commit left for the next
            self._schedule(asyncio.get_running_loop())
        for future, value, error in results:
            if future.done():
                continue
            if error is None:
                future.set_result(value)
            else:
                future.set_exception(error)

    def _take_batch(self) -> list[tuple[Write, asyncio.Future[Any], int]]:
        """Every priority write (intake, state), and at most PROCESSING_PER_COMMIT others (in
        order); the rest wait for the next commit, scheduled once this one is done (a retry
        waits for its timer: scheduled at once, it spun on a busy lock). A commit resumes its
        callers in the next loop iteration: resuming hundreds of executions at once made a webhook's few loop
        iterations wait behind all their work (p99 ack 70-200 ms in a storm). Bounded, an
        acknowledgement waits behind a few; processing still moves on every iteration."""
        pending, batch, rest = self._pending, [], []
        others = 0
        for write in pending:
            if write[2] & PRIORITY or others < PROCESSING_PER_COMMIT:
                batch.append(write)
                others += not write[2] & PRIORITY
            else:
                rest.append(write)
        self._pending = rest
        return batch

    def _retry_later(self, batch: list[tuple[Write, asyncio.Future[Any], int]]) -> bool:
        """Another connection holds the write lock: put the batch back (ahead of writes
        issued meanwhile, which join it) and try again from a timer, with backoff, until
        LOCK_WAIT has passed since the first refusal. False when the wait is over."""
        now = time.monotonic()
        if self._retry_at is None:
            self._retry_at = now
        if now - self._retry_at > LOCK_WAIT:
            self._retry_at, self._retry_delay = None, _RETRY_FIRST
            return False
        self._pending = batch + self._pending
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._retry_timer = asyncio.get_running_loop().call_later(self._retry_delay,
                                                                      self._flush)
            self._retry_delay = min(self._retry_delay * 2, _RETRY_MAX)
        return True

    def _released(self) -> None:
        """The checkpointer let the write lock go (from its thread): a commit it refused is
        tried again now, not at the end of its backoff (up to 50 ms later)."""
        with contextlib.suppress(RuntimeError):  # the loop is closed: nothing waits
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self._retry_now)

    def _retry_now(self) -> None:
        if self._retry_timer is not None:
            self._retry_timer.cancel()
            self._retry_timer = None
            self._flush()

    async def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        # Opening may wait for a lock (WAL recovery, creating the schema): off the loop.
        await asyncio.to_thread(self._open)

    def _open(self) -> None:
        if self.read_only:
            if self.path == ":memory:" or not os.path.exists(self.path):
                raise StoreUnavailable(f"no store at {self.path!r}: it does not exist (pass "
                                       "--store, or the --config serve runs with)"
                                       + _absolute_hint(self.path))
            # mode=ro: no write, no schema, no checkpoint; the WAL is still read, so what the
            # server committed is seen. The server's process owns the -wal and -shm files.
            uri = Path(self.path).resolve().as_uri() + "?mode=ro"
            db = sqlite3.connect(uri, uri=True,
                                 check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA busy_timeout=5000")  # a CLI may wait; it has no loop to stall
            self._version = db.execute("PRAGMA user_version").fetchone()[0]
            if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' "
                          "AND name = 'executions'").fetchone() is None:
                db.close()  # an empty file, another program's database: a traceback later
                raise StoreUnavailable(f"{self.path!r} is not a remediator store (it has no "
                                       "decisions table): pass the --store serve uses")
            self._db = db
            return
        directory = os.path.dirname(self.path) or "."
        if self.path != ":memory:" and not os.path.isdir(directory):
            raise StoreUnavailable(f"directory {directory!r} does not exist (remediator creates "
                                   "the database file, not its directory)"
                                   + _absolute_hint(self.path))
        if self.path != ":memory:":
            # One writer per file, before anything is read or written (schema, migrations,
            # and the caller's crash recovery next): sqlite_files.py says why. The lock's
            # descriptor of the file outlives SQLite's (`close` releases it last).
            self._lock = WriterLock(self.path)
            self._lock.acquire()
        try:
            self._open_writer()
        except BaseException:
            self._release_lock()
            raise

    def _open_writer(self) -> None:
        # The file exists now, 0600 if new (`WriterLock.acquire` created it).
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA busy_timeout=5000")  # in a thread: waiting here stalls nothing
        # A new file's pages are 2 KiB (an existing file keeps its own): a commit writes each
        # page it changed to the WAL whole, and an alert or decision changes a few hundred
        # bytes on each of a few pages far apart (random keys), so half SQLite's default page
        # halves those bytes; drain_bench, alternated, measured ~10 % less CPU per decision
        # (intake's gain did not hold in calmer runs; 1 KiB pages: no better for decisions).
        db.execute("PRAGMA page_size=2048")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        # No checkpoint inside a commit on the event loop: copying the WAL into the database
        # file (and its fsync) stalled acknowledgements. A background thread does it.
        db.execute("PRAGMA wal_autocheckpoint=0")
        db.executescript(_SCHEMA)
        _migrate(db)
        # From here on the connection is used on the loop: never wait inside SQLite.
        db.execute("PRAGMA busy_timeout=0")
        self._db = db
        if self.path != ":memory:":
            self._checkpointer = _Checkpointer(self.path, released=self._released)

    @property
    def is_open(self) -> bool:
        return self._db is not None

    def now_iso(self) -> str:
        return utcnow_iso()

    async def close(self) -> None:
        if self._db is not None:
            if self._finished and not self.read_only:
                with contextlib.suppress(StoreUnavailable):
                    await self._write(lambda db: None)  # marks finished items done
            db, self._db = self._db, None
            db.close()
            # Writes still waiting for more to join their commit (`_wait_idle`) are refused
            # now: the turns' idle call finds no connection, and would leave them waiting.
            pending, self._pending = self._pending, []
            for _, future, _ in pending:
                if not future.done():
                    future.set_exception(StoreUnavailable("store is closed"))
        if self._checkpointer is not None:
            # Its last TRUNCATE checkpoint may wait for a lock: not on the loop.
            await asyncio.to_thread(self._checkpointer.stop)
            self._checkpointer = None
        self._release_lock()  # last: the checkpointer's TRUNCATE still writes the file

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    # --- inbox ---------------------------------------------------------------------------

    async def enqueue(self, items: Rows) -> Enqueued:
        return await self._enqueue(items, self._insert, priority=True)

    async def enqueue_claimed(self, items: Rows) -> Enqueued:
        return await self._enqueue(items, self._insert_claimed, priority=False)

    async def probe_intake(self) -> None:
        # A priority write, as intake's: it joins the next commit, waits as long for a lock.
        row = (INTAKE_PROBE, json.dumps({"at": utcnow_iso()}))
        await self._write(lambda db: db.execute(
            "INSERT OR REPLACE INTO state (key, value) VALUES (?, ?)", row), priority=True)

    async def _enqueue(self, items: Rows, insert: Callable[..., Enqueued],
                       priority: bool) -> Enqueued:
        rows, refs = [], {}
        for (key, alert, _), text in zip(items, packing.item_texts(items), strict=True):
            ref = self._refs.for_alert(alert, text)
            rows.append((key, self._refs.pack_item(text, ref), ref.id))
            if not ref.stored:
                refs[ref.id] = ref
        result = await self._write(lambda db: insert(db, rows, list(refs.values())),
                                   priority=priority)
        for ref in refs.values():
            ref.stored = True
        return result

    @staticmethod
    def _insert_refs(db: sqlite3.Connection, refs: list[packing.Ref]) -> None:
        if refs:
            db.executemany("INSERT OR IGNORE INTO refs (id, created, data) VALUES (?, ?, ?)",
                           [(r.id, r.created, r.data) for r in refs])

    def _insert(self, db: sqlite3.Connection, rows: list[tuple[str, bytes, int]],
                refs: list[packing.Ref]) -> Enqueued:
        now = utcnow_iso()
        self._insert_refs(db, refs)
        cur = db.executemany(
            "INSERT OR IGNORE INTO inbox (dedupe_key, alert, grp, received_at, ref) "
            "VALUES (?, ?, '', ?, ?)", [(key, blob, now, ref) for key, blob, ref in rows])
        accepted = max(cur.rowcount, 0)
        return Enqueued(accepted=accepted, duplicates=len(rows) - accepted)

    def _insert_claimed(self, db: sqlite3.Connection, rows: list[tuple[str, bytes, int]],
                        refs: list[packing.Ref]) -> Enqueued:
        """A statement per row (a replay's few): which were new is what its RETURNING says."""
        now = utcnow_iso()
        self._insert_refs(db, refs)
        claimed = [r for key, blob, ref in rows for r in db.execute(
            "INSERT OR IGNORE INTO inbox (dedupe_key, alert, grp, received_at, ref, state) "
            "VALUES (?, ?, '', ?, ?, 'running') RETURNING id, dedupe_key, alert, grp, "
            "received_at, ref", (key, blob, now, ref)).fetchall()]
        return Enqueued(len(claimed), len(rows) - len(claimed), tuple(self._items(db, claimed)))

    def _items(self, db: sqlite3.Connection, rows: list[tuple]) -> list[InboxItem]:
        """Claimed rows (id, key, alert, group, received_at, ref) as items, in order."""
        refs, missing = self._refs.known(r[5] for r in rows)
        if missing:
            for ref_id, data in db.execute(
                    f"SELECT id, data FROM refs WHERE id IN ({','.join('?' * len(missing))})",
                    missing):
                refs[ref_id] = data
                self._refs.remember(ref_id, data)
        items, unreadable = packing.unpack_items(
            (r[0], r[1], r[2], r[3], r[4], refs.get(r[5])) for r in rows)
        self._finished.extend(unreadable)  # marked done in the next write
        return items

    def _mark_done(self, db: sqlite3.Connection) -> None:
        """The items finished by this transaction's writes (a decision's final record), and
        those finished since the last one (`finish`), are marked done by one statement at
        its end: one call into SQLite per commit rather than one per decision. An item a
        crash leaves unmarked is processed again, and finds its execution already final
        (execution ids are deterministic), so nothing runs twice. Those finished since the
        last are forgotten once this one commits (a COMMIT that fails leaves them to the next)."""
        done = self._finishing + self._finished if self._finished else self._finishing
        if done:
            db.executemany("UPDATE inbox SET state='done' WHERE id=?", [(i,) for i in done])

    async def claim(self, limit: int) -> list[InboxItem]:
        return await self._write(lambda db: self._items(db, db.execute(
            "UPDATE inbox SET state='running' WHERE id IN (SELECT id FROM inbox WHERE "
            "state='pending' ORDER BY id LIMIT ?) RETURNING id, dedupe_key, alert, grp, "
            "received_at, ref", (limit,)).fetchall()))

    async def requeue(self, dedupe_key: str) -> None:
        """Queue an acknowledged alert again (its approved execution has work to do)."""
        await self._exec("UPDATE inbox SET state='pending' WHERE dedupe_key=?", (dedupe_key,))

    async def claim_key(self, dedupe_key: str) -> InboxItem | None:
        items = await self._write(lambda db: self._items(db, db.execute(
            "UPDATE inbox SET state='running' WHERE dedupe_key=? AND state != 'running' "
            "RETURNING id, dedupe_key, alert, grp, received_at, ref", (dedupe_key,)).fetchall()))
        return items[0] if items else None

    async def finish(self, item_id: int) -> None:
        self._finished.append(item_id)

    async def release_running(self) -> int:
        return await self._write(lambda db: db.execute(
            "UPDATE inbox SET state='pending' WHERE state='running'").rowcount)

    async def pending_count(self) -> int:
        # `IN`, not `!= 'done'`: a search of the index, not a scan of every retained item
        return await self._scalar("SELECT count(*) FROM inbox WHERE state IN ('pending', "
                                  "'running')") - len(
            self._finished)

    async def received(self, dedupe_key: str) -> bool:
        return await self._run(self._one, "SELECT 1 FROM inbox WHERE dedupe_key=?",
                               (dedupe_key,)) is not None

    async def held(self, dedupe_key: str) -> bool:
        row = await self._run(self._one, "SELECT id FROM inbox WHERE dedupe_key=? AND "
                                         "state='running'", (dedupe_key,))
        return row is not None and row[0] not in self._finished

    async def settled(self, dedupe_key: str) -> bool:
        row = await self._run(self._one, "SELECT id, state FROM inbox WHERE dedupe_key=?",
                              (dedupe_key,))
        return row is None or row[1] == "done" or row[0] in self._finished

    async def prune_inbox(self, before_iso: str) -> int:
        """Forget finished items (and so their dedupe keys) received before `before_iso`."""
        return await self._write(lambda db: db.execute(
            "DELETE FROM inbox WHERE state='done' AND received_at < ?", (before_iso,)).rowcount)

    async def refresh_inbox(self, keys: list[str], before_iso: str, now_iso: str) -> int:
        now = datetime.fromisoformat(now_iso).timestamp()

        def refresh(db: sqlite3.Connection) -> int:
            done = db.execute(
                "UPDATE inbox SET received_at=?1 WHERE received_at < ?2 AND dedupe_key IN ("
                "SELECT value FROM json_each(?3))", (now_iso, before_iso, json.dumps(keys)))
            if done.rowcount:  # their references are as new as they are (packing.py)
                db.execute("UPDATE refs SET created=?1 WHERE created < ?1 AND id IN (SELECT ref "
                           "FROM inbox WHERE dedupe_key IN (SELECT value FROM json_each(?2)))",
                           (now, json.dumps(keys)))
            return done.rowcount
        return await self._write(refresh)

    async def prune_history(self, before: float) -> int:
        cutoff = datetime.fromtimestamp(before, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return await self._write(lambda db: self._prune(db, cutoff, before))

    @staticmethod
    def _prune(db: sqlite3.Connection, cutoff: str, before: float) -> int:
        # ';' sorts right after ':', so each range is exactly one execution's keys. The
        # record written last is kept: its `seq` would be given again, under a position a
        # live stream already read past (`changes`).
        # `created_at < ?` as well: an execution is updated after its creation, and
        # executions are indexed by creation only.
        ids = [(i,) for (i,) in db.execute(
            "SELECT id FROM executions WHERE created_at < ?1 AND updated_at < ?1 AND outcome "
            "!= 'running' AND (seq IS NULL OR seq < (SELECT max(seq) FROM executions)) AND "
            "NOT EXISTS "
            "(SELECT 1 FROM state WHERE key >= 'approval-pending:' || id || ':' AND key < "
            "'approval-pending:' || id || ';')", (cutoff,))]
        db.executemany("DELETE FROM steps WHERE execution_id=?", ids)
        db.executemany("DELETE FROM state WHERE key >= 'approval:' || ? || ':' AND "
                       "key < 'approval:' || ? || ';'", [(i, i) for (i,) in ids])
        db.executemany("DELETE FROM executions WHERE id=?", ids)
        db.execute("DELETE FROM events WHERE at < ?", (before,))
        # What still uses an old reference was kept past the cutoff (packing.py).
        db.execute("DELETE FROM refs WHERE created < ?1 AND id NOT IN (SELECT ref FROM "
                   "executions WHERE created_at < ?2 AND updated_at < ?2 AND ref IS NOT NULL) "
                   "AND id NOT IN (SELECT ref FROM inbox WHERE received_at < ?2 AND ref IS NOT "
                   "NULL)", (before - packing.WINDOW, cutoff))
        return len(ids)

    # --- executions ----------------------------------------------------------------------

    async def save_execution(self, decision: dict[str, Any], events: list[Event] | None = None,
                             finishes: int | None = None,
                             steps: dict[int, dict[str, Any]] | None = None,
                             durable: bool = False) -> None:
        record, ref = self._record(decision)
        bodies = [(decision["id"], i, packing.pack(s, default=str)) for i, s in (steps or {}).items()]

        def write(db: sqlite3.Connection) -> None:
            record(db)
            if bodies:  # an executemany of no rows is still a statement to prepare and reset
                db.executemany("INSERT OR REPLACE INTO steps (execution_id, idx, body) VALUES "
                               "(?, ?, ?)", bodies)
            _insert_events(db, events or [])
            if finishes is not None:  # marked done at the end of this transaction
                self._finishing.append(finishes)

        await self._write(write, turn=finishes is None, durable=durable)
        ref.stored = True

    def _record(self, decision: dict[str, Any]) -> tuple[Write, packing.Ref]:
        """The write of a decision's record (with its reference, until that is stored)."""
        text = packing.body_text(decision)
        ref = self._refs.for_body(decision, text)
        row = (decision["id"], decision["created_at"], utcnow_iso(), decision["alertname"],
               decision.get("playbook"), decision["outcome"], decision["fingerprint"],
               self._refs.pack(text, ref), ref.id, packing.awaiting(decision))

        def write(db: sqlite3.Connection) -> None:
            if not ref.stored:
                db.execute("INSERT OR IGNORE INTO refs (id, created, data) VALUES (?, ?, ?)",
                           (ref.id, ref.created, ref.data))
            db.execute(
                "INSERT INTO executions (id, created_at, updated_at, alertname, playbook, "
                "outcome, fingerprint, body, ref, awaiting, seq) VALUES (?, ?, ?, ?, ?, ?, ?, "
                "?, ?, ?, (SELECT coalesce(max(seq), 0) + 1 FROM executions)) ON CONFLICT(id) "
                "DO UPDATE SET updated_at=excluded.updated_at, outcome=excluded.outcome, "
                "body=excluded.body, ref=excluded.ref, awaiting=excluded.awaiting, "
                "seq=excluded.seq", row)

        return write, ref

    async def get_execution(self, execution_id: str) -> dict[str, Any] | None:
        return await self._run(self._get_execution, execution_id)

    async def awaiting_approval(self) -> list[tuple[str, str]]:
        return await self._run(lambda: self._conn().execute(
            AWAITING).fetchall())

    async def index_awaiting(self, execution_id: str, step: str) -> bool:
        return await self._write(lambda db: db.execute(
            "UPDATE executions SET awaiting=?, seq=(SELECT coalesce(max(seq), 0) + 1 FROM "
            "executions) WHERE id=? AND awaiting IS NULL AND outcome='blocked'",
            (step, execution_id)).rowcount) == 1  # a change the live stream sends (`seq`)

    async def get_execution_and_pause(self, execution_id: str
                                      ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        return await self._run(self._execution_and_pause, execution_id)

    def _execution_and_pause(self, execution_id: str
                             ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """One statement, one row whether the execution exists or not: what every decision
        reads first."""
        if self._version < 1:
            return self._get_execution(execution_id), self._state(PAUSE)
        body, ref, pause = self._conn().execute(
            "SELECT e.body, r.data, s.value FROM (SELECT ? AS id) q LEFT JOIN executions e ON "
            "e.id = q.id LEFT JOIN refs r ON r.id = e.ref LEFT JOIN state s ON s.key = ?",
            (execution_id, PAUSE)).fetchall()[0]
        return (None if body is None else self._decision(execution_id, body, ref),
                None if pause is None else json.loads(pause))

    def _get_execution(self, execution_id: str) -> dict[str, Any] | None:
        row = self._one("SELECT e.body, r.data FROM executions e LEFT JOIN refs r ON r.id = e.ref "
                        "WHERE e.id=?" if self._version >= 1 else
                        "SELECT body, NULL FROM executions WHERE id=?", (execution_id,))
        return None if row is None else self._decision(execution_id, *row)

    def _decision(self, execution_id: str, body: str | bytes, ref: bytes | None
                  ) -> dict[str, Any]:
        decision = packing.unpack(body, ref)
        steps = decision.pop("steps", None)  # a dry-run's, stored with it
        decision["steps"] = list(self._steps(execution_id).values()) if steps is None else steps
        return decision

    async def list_executions(self, limit: int = 100, **filters: Any) -> list[dict[str, Any]]:
        return await self._run(self._list, limit, filters)

    def _list(self, limit: int, filters: dict[str, Any]) -> list[dict[str, Any]]:
        where, args = [], []
        for column in ("outcome", "playbook", "alertname", "fingerprint"):
            if column == "outcome" and filters.get(column) == "running":
                where.append("outcome='running'")  # a literal: the partial index's condition
            elif filters.get(column):
                where.append(f"{column}=?")
                args.append(filters[column])
        sql = "SELECT id FROM executions" + (" WHERE " + " AND ".join(where) if where else "")
        ids = self._conn().execute(sql + " ORDER BY created_at DESC, id DESC LIMIT ?",
                                   (*args, limit)).fetchall()
        return [d for (i,) in ids if (d := self._get_execution(i)) is not None]

    async def changes(self, since: str | None, limit: int
                      ) -> tuple[list[dict[str, Any]] | None, str]:
        return await self._run(self._changes, since, limit)

    def _changes(self, since: str | None, limit: int
                 ) -> tuple[list[dict[str, Any]] | None, str]:
        # A position is the highest `seq` read (migration 7): committed in that order, a
        # record with a higher one is committed after the read. The highest is read first,
        # so what commits between the two statements waits for the next read.
        (top,) = self._one("SELECT coalesce(max(seq), 0) FROM executions") or (0,)
        if since is None:
            return [], str(top)
        if not since.isascii() or not since.isdigit() or len(since) > 18 or int(since) > top:
            return None, str(top)  # not a position, or past the store's (a file restored)
        rows = self._conn().execute(
            "SELECT id, updated_at FROM executions WHERE seq > ? AND seq <= ? "
            "ORDER BY seq DESC LIMIT ?", (int(since), top, limit)).fetchall()
        return [{**d, "updated_at": at} for i, at in rows
                if (d := self._get_execution(i)) is not None], str(top)

    async def save_step(self, execution_id: str, index: int, step: dict[str, Any],
                        execution: dict[str, Any] | None = None) -> None:
        write, stored = self._entry((execution_id, index, step, execution))
        await self._write(write)
        stored()

    def _entry(self, entry: Entry) -> tuple[Write, Callable[[], None]]:
        """The write of a journal entry, and what to call once it is committed."""
        execution_id, index, step, execution = entry
        body = packing.pack(step, default=str)
        record, ref = self._record(execution) if execution is not None else (None, None)

        def write(db: sqlite3.Connection) -> None:
            if record is not None:
                record(db)
            db.execute("INSERT OR REPLACE INTO steps (execution_id, idx, body) VALUES (?, ?, ?)",
                       (execution_id, index, body))

        def stored() -> None:
            if ref is not None:
                ref.stored = True

        return write, stored

    async def completed_steps(self, execution_id: str) -> dict[int, dict[str, Any]]:
        return await self._run(self._steps, execution_id)

    def _steps(self, execution_id: str) -> dict[int, dict[str, Any]]:
        rows = self._conn().execute(
            "SELECT idx, body FROM steps WHERE execution_id=? ORDER BY idx", (execution_id,))
        return {idx: packing.unpack(body) for idx, body in rows}

    # --- guard state ---------------------------------------------------------------------

    async def record_event(self, kind: str, key: str, at: float, data: dict | None = None,
                           durable: bool = False) -> None:
        row = (kind, key, at, json.dumps(data or {}))
        await self._write(lambda db: db.execute("INSERT INTO events (kind, key, at, data) "
                                                "VALUES (?, ?, ?, ?)", row), durable=durable)

    async def events_since(self, kind: str, key: str, since: float) -> list[tuple[float, dict]]:
        rows = await self._run(lambda: self._conn().execute(
            "SELECT at, data FROM events WHERE kind=? AND key=? AND at>=? ORDER BY at",
            (kind, key, since)).fetchall())
        return [(at, json.loads(data)) for at, data in rows]

    async def count_events(self, kind: str, key: str, since: float) -> int:
        return await self._scalar("SELECT count(*) FROM events WHERE kind=? AND key=? AND at>=?",
                                  (kind, key, since))

    async def admit(self, limits: list[Limit], events: list[Event], unless_paused: bool = False,
                    unless_received: str | None = None, journal: Entry | None = None,
                    held: str | None = None, lock: tuple[str, str] | None = None
                    ) -> int | str | None:
        # One write callback: checked and recorded in the one connection's transaction,
        # which nothing else writes to meanwhile. `held`, `lock`: this process is the only
        # one to claim and lock (and a crash ends its runs), so its claims and locks are its
        # own (`LocalCoordination`).
        entry, stored = self._entry(journal) if journal is not None else (None, None)

        def write(db: sqlite3.Connection) -> object:
            # Admitted only in a commit that is fsynced. A refusal writes nothing, so any
            # commit will do: after one, the next admission is asked in whatever commit comes
            # (a live storm past its budget refuses each of its changes: fsynced up front,
            # each made its commit wait for the disk, on the loop) and, if it admits after
            # all, is run again in one that is fsynced.
            got = _admit(db, limits, events, unless_paused, unless_received, record=self._full)
            if got is None and not self._full:
                return AGAIN_FSYNCED
            if got is None and entry is not None:
                entry(db)
            return got

        admitted = await self._write(write, durable=not self._refusing)
        self._refusing = admitted is not None
        if admitted is None and stored is not None:
            stored()
        return admitted

    async def get_state(self, key: str) -> dict[str, Any] | None:
        return await self._run(self._state, key)

    def _state(self, key: str) -> dict[str, Any] | None:
        row = self._one("SELECT value FROM state WHERE key=?", (key,))
        return json.loads(row[0]) if row else None

    async def state_and_count(self, key: str, kind: str, event_key: str, since: float
                              ) -> tuple[dict[str, Any] | None, int]:
        value, count = (await self._run(self._one, "SELECT (SELECT value FROM state WHERE "
                                        "key=?), (SELECT count(*) FROM events WHERE kind=? AND "
                                        "key=? AND at>=?)", (key, kind, event_key, since)))
        return (None if value is None else json.loads(value)), count

    async def put_state(self, key: str, value: dict[str, Any] | None, durable: bool = True
                        ) -> None:
        # The operator's writes (pause, approvals, sessions) never queue behind a storm's,
        # and, like an admission, outlive a power cut once answered (`Store.put_state`).
        if value is None:
            sql, args = "DELETE FROM state WHERE key=?", (key,)
        else:
            sql, args = "INSERT OR REPLACE INTO state (key, value) VALUES (?, ?)", (key, json.dumps(value))
        await self._write(lambda db: db.execute(sql, args), priority=True, durable=durable)

    async def drop_state(self, key: str, value: dict[str, Any], durable: bool = True) -> None:
        # As put_state wrote it: the same encoding of the same value is the same text.
        await self._write(lambda db: db.execute("DELETE FROM state WHERE key=? AND value=?", (
            key, json.dumps(value))), priority=True, durable=durable)

    async def put_states(self, values: dict[str, dict[str, Any] | None],
                         claim: InboxItem | None = None) -> None:
        # One write, one transaction. A claim here is this process's until it finishes the
        # item (one process owns the file, and a claim never lapses): nothing takes it over
        # meanwhile, nor claims it again, so the claim needs no check and no token.
        puts = [(key, json.dumps(value)) for key, value in values.items() if value is not None]
        drops = [(key,) for key, value in values.items() if value is None]

        def write(db: sqlite3.Connection) -> None:
            # All or none within the commit it shares: a failing write is undone alone there.
            db.execute("SAVEPOINT put_states")
            try:
                db.executemany("INSERT OR REPLACE INTO state (key, value) VALUES (?, ?)", puts)
                db.executemany("DELETE FROM state WHERE key=?", drops)
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK TO put_states")
                raise
            finally:
                if db.in_transaction:
                    db.execute("RELEASE put_states")

        await self._write(write, priority=True, durable=True)

    async def swap_state(self, key: str, old: dict[str, Any] | None, new: dict[str, Any]
                         ) -> bool:
        # As put_state wrote it: the same encoding of the same value is the same text.
        sql, args = ("INSERT OR IGNORE INTO state (key, value) VALUES (?, ?)",
                     (key, json.dumps(new))) if old is None else (
            "UPDATE state SET value=? WHERE key=? AND value=?",
            (json.dumps(new), key, json.dumps(old)))
        return await self._write(lambda db: db.execute(sql, args).rowcount, priority=True,
                                 durable=True) == 1

    async def list_state(self, prefix: str) -> dict[str, dict[str, Any]]:
        rows = await self._run(lambda: self._conn().execute(
            "SELECT key, value FROM state WHERE key >= ? AND key < ? ORDER BY key",
            (prefix, prefix + "\uffff")).fetchall())
        return {k: json.loads(v) for k, v in rows}

    # --- helpers -------------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreUnavailable("store is not open")
        return self._db

    async def _exec(self, sql: str, args: tuple = ()) -> None:
        await self._write(lambda db: db.execute(sql, args))

    async def _scalar(self, sql: str, args: tuple = ()) -> int:
        return (await self._run(self._one, sql, args))[0]

    def _one(self, sql: str, args: tuple = ()) -> tuple | None:
        """The first row, with the statement run to its end. A half-read cursor (fetchone)
        keeps a read snapshot open, and a snapshot held on the WAL stops every checkpoint
        from resetting it: the WAL then grows without bound."""
        rows = self._conn().execute(sql, args).fetchall()
        return rows[0] if rows else None


def _migrate(db: sqlite3.Connection) -> None:
    """Bring the schema to this version's, one step per transaction (a second process
    opening the file meanwhile waits, then finds it done)."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > len(MIGRATIONS):
        raise StoreUnavailable(f"the store's schema (version {version}) is newer than this "
                               f"remediator supports ({len(MIGRATIONS)}); upgrade remediator")
    for number, sql in enumerate(MIGRATIONS[version:], version + 1):
        db.execute("BEGIN IMMEDIATE")
        try:
            if db.execute("PRAGMA user_version").fetchone()[0] < number:
                if callable(sql):  # a step that reads what it migrates
                    sql(db)
                else:
                    for statement in filter(str.strip, sql.split(";")):
                        db.execute(statement)
                db.execute(f"PRAGMA user_version={number}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise


def _awaiting(db: sqlite3.Connection) -> None:
    """Migration 4: the column and partial index of executions blocked on an approval
    (`packing.awaiting`), filled in once from the records already there: only a blocked
    one with an approval state can be one, so few bodies are read, once."""
    db.execute("ALTER TABLE executions ADD COLUMN awaiting TEXT")
    db.execute("CREATE INDEX executions_awaiting ON executions(id) WHERE awaiting IS NOT NULL")
    rows = db.execute(
        "SELECT e.id, e.body, r.data FROM executions e LEFT JOIN refs r ON r.id = e.ref "
        "WHERE e.outcome = 'blocked' AND EXISTS (SELECT 1 FROM state WHERE key >= "
        "'approval:' || e.id || ':' AND key < 'approval:' || e.id || ';')").fetchall()
    db.executemany("UPDATE executions SET awaiting=? WHERE id=?", packing.awaiting_rows(
        (execution_id, lambda b=body, r=ref: packing.unpack(b, r))
        for execution_id, body, ref in rows))


def _admit(db: sqlite3.Connection, limits: list[Limit], events: list[Event],
           unless_paused: bool = False, unless_received: str | None = None,
           record: bool = True) -> int | str | None:
    """As `Store.admit`; with `record` False, only whether it would admit (None)."""
    if unless_received is not None and db.execute(
            "SELECT 1 FROM inbox WHERE dedupe_key=?", (unless_received,)).fetchall():
        return RESOLVED
    if unless_paused and _paused(db):
        return PAUSED
    for index, limit in enumerate(limits):
        if limit.unless:
            rows = db.execute("SELECT data FROM events WHERE kind=? AND key=? AND at>=?",
                              (limit.kind, limit.key, limit.since)).fetchall()
            unless = limit.unless.items()
            counted = sum(not any(json.loads(data).get(k) == v for k, v in unless)
                          for data, in rows)
        else:  # counted in the index (events_key), no row read into Python: a budget with
            # a high max has every mutation of its window to count
            counted = db.execute("SELECT count(*) FROM (SELECT 1 FROM events WHERE kind=? AND "
                                 "key=? AND at>=? LIMIT ?)", (limit.kind, limit.key,
                                                              limit.since, limit.max)).fetchall()[0][0]
        if counted >= limit.max:
            return index
    if record:
        _insert_events(db, events)
    return None


def _insert_events(db: sqlite3.Connection, events: list[Event]) -> None:
    if events:  # most decisions record none
        db.executemany("INSERT INTO events (kind, key, at, data) VALUES (?, ?, ?, ?)",
                       [(kind, key, at, json.dumps(data)) for kind, key, at, data in events])


def _paused(db: sqlite3.Connection) -> bool:
    """The kill switch as the guards read it (`Guards._paused`), inside a write."""
    rows = db.execute("SELECT value FROM state WHERE key=?", (PAUSE,)).fetchall()
    return bool(rows and json.loads(rows[0][0]).get("paused"))
