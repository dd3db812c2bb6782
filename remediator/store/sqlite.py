"""The embedded store: one SQLite file in WAL mode, owned by one thread.

All statements run on a single dedicated thread, so the event loop never blocks on disk and
SQLite never sees concurrent writers. Intake uses group commit: webhook calls that arrive
while a commit is in flight are written together in the next transaction, so one fsync
acknowledges many requests and the 202 still means "on disk".
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from ..alerts import utcnow_iso
from .base import Enqueued, InboxItem, StoreUnavailable

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
CREATE INDEX IF NOT EXISTS executions_outcome ON executions(outcome, created_at);
CREATE TABLE IF NOT EXISTS steps (
    execution_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (execution_id, idx)
);
CREATE TABLE IF NOT EXISTS events (kind TEXT NOT NULL, key TEXT NOT NULL, at REAL NOT NULL,
                                   data TEXT NOT NULL DEFAULT '{}');
CREATE INDEX IF NOT EXISTS events_key ON events(kind, key, at);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def path_from_url(url: str) -> str:
    """`sqlite:///abs/path.db` → `/abs/path.db`, `sqlite:///rel.db` → `rel.db`, `sqlite://` → memory."""
    if not url.startswith("sqlite://"):
        raise ValueError(f"unsupported store URL {url!r}: expected sqlite:///path or sqlite://")
    rest = url[len("sqlite://"):]
    if rest in ("", "/", "/:memory:"):
        return ":memory:"
    return rest[1:] if rest.startswith("/") and not rest.startswith("//") else rest


class SQLiteStore:
    def __init__(self, url: str = "sqlite://", intake_sync: str = "FULL"):
        self.path = path_from_url(url)
        self.intake_sync = intake_sync
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        self._db: sqlite3.Connection | None = None
        self._pending: list[tuple[Rows, asyncio.Future[Enqueued]]] = []
        self._flushing = False
        self._flusher: asyncio.Task[None] | None = None

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)
        except sqlite3.OperationalError as exc:  # disk full, I/O error, locked
            raise StoreUnavailable(str(exc)) from exc

    async def open(self) -> None:
        await self._run(self._open)

    def _open(self) -> None:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=5000")
        db.executescript(_SCHEMA)
        self._db = db

    @property
    def is_open(self) -> bool:
        return self._db is not None

    async def close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            await self._run(db.close)

    # --- inbox ---------------------------------------------------------------------------

    async def enqueue(self, items: Rows) -> Enqueued:
        if self._db is None:
            raise StoreUnavailable("store is not open")
        future: asyncio.Future[Enqueued] = asyncio.get_running_loop().create_future()
        self._pending.append((items, future))
        if not self._flushing:
            self._flushing = True
            self._flusher = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    counts = await self._run(self._insert, [rows for rows, _ in batch])
                except sqlite3.Error as exc:
                    for _, future in batch:
                        future.set_exception(StoreUnavailable(f"store write failed: {exc}"))
                    continue
                for (_, future), count in zip(batch, counts, strict=True):
                    future.set_result(count)
        finally:
            self._flushing = False

    def _insert(self, requests: list[Rows]) -> list[Enqueued]:
        db = self._conn()
        now = utcnow_iso()
        counts = []
        # The 202 promises "on disk": intake commits fsync the WAL (FULL), which also
        # persists every earlier NORMAL commit. Journal writes elsewhere use NORMAL: in WAL
        # mode that survives a process crash (kill -9), and costs no fsync per step.
        db.execute(f"PRAGMA synchronous={self.intake_sync}")
        db.execute("BEGIN IMMEDIATE")
        try:
            for rows in requests:
                accepted = 0
                for key, alert, group in rows:
                    cur = db.execute(
                        "INSERT OR IGNORE INTO inbox (dedupe_key, alert, grp, received_at) "
                        "VALUES (?, ?, ?, ?)",
                        (key, json.dumps(alert), json.dumps(group), now),
                    )
                    accepted += cur.rowcount
                counts.append(Enqueued(accepted=accepted, duplicates=len(rows) - accepted))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        finally:
            db.execute("PRAGMA synchronous=NORMAL")
        return counts

    async def claim(self, limit: int) -> list[InboxItem]:
        return await self._run(self._claim, limit)

    def _claim(self, limit: int) -> list[InboxItem]:
        db = self._conn()
        rows = db.execute(
            "UPDATE inbox SET state='running' WHERE id IN (SELECT id FROM inbox WHERE "
            "state='pending' ORDER BY id LIMIT ?) RETURNING id, dedupe_key, alert, grp, received_at",
            (limit,),
        ).fetchall()
        rows.sort()
        return [InboxItem(r[0], r[1], json.loads(r[2]), json.loads(r[3]), r[4]) for r in rows]

    async def finish(self, item_id: int) -> None:
        await self._exec("UPDATE inbox SET state='done' WHERE id=?", (item_id,))

    async def release_running(self) -> int:
        return await self._run(
            lambda: self._conn().execute(
                "UPDATE inbox SET state='pending' WHERE state='running'").rowcount)

    async def pending_count(self) -> int:
        return await self._scalar("SELECT count(*) FROM inbox WHERE state != 'done'")

    async def prune_inbox(self, before_iso: str) -> int:
        """Forget finished items (and so their dedupe keys) received before `before_iso`."""
        return await self._run(lambda: self._conn().execute(
            "DELETE FROM inbox WHERE state='done' AND received_at < ?", (before_iso,)).rowcount)

    # --- executions ----------------------------------------------------------------------

    async def save_execution(self, decision: dict[str, Any]) -> None:
        body = {k: v for k, v in decision.items() if k != "steps"}
        await self._exec(
            "INSERT INTO executions (id, created_at, updated_at, alertname, playbook, outcome, "
            "fingerprint, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
            "updated_at=excluded.updated_at, outcome=excluded.outcome, body=excluded.body",
            (decision["id"], decision["created_at"], utcnow_iso(), decision["alertname"],
             decision.get("playbook"), decision["outcome"], decision["fingerprint"],
             json.dumps(body)),
        )

    async def get_execution(self, execution_id: str) -> dict[str, Any] | None:
        return await self._run(self._get_execution, execution_id)

    def _get_execution(self, execution_id: str) -> dict[str, Any] | None:
        row = self._conn().execute("SELECT body FROM executions WHERE id=?",
                                   (execution_id,)).fetchone()
        if row is None:
            return None
        decision = json.loads(row[0])
        decision["steps"] = list(self._steps(execution_id).values())
        return decision

    async def list_executions(self, limit: int = 100, **filters: Any) -> list[dict[str, Any]]:
        return await self._run(self._list, limit, filters)

    def _list(self, limit: int, filters: dict[str, Any]) -> list[dict[str, Any]]:
        where, args = [], []
        for column in ("outcome", "playbook", "alertname", "fingerprint"):
            if filters.get(column):
                where.append(f"{column}=?")
                args.append(filters[column])
        sql = "SELECT id FROM executions" + (" WHERE " + " AND ".join(where) if where else "")
        ids = self._conn().execute(sql + " ORDER BY created_at DESC, id DESC LIMIT ?",
                                   (*args, limit)).fetchall()
        return [d for (i,) in ids if (d := self._get_execution(i)) is not None]

    async def save_step(self, execution_id: str, index: int, step: dict[str, Any]) -> None:
        await self._exec("INSERT OR REPLACE INTO steps (execution_id, idx, body) VALUES (?, ?, ?)",
                         (execution_id, index, json.dumps(step, default=str)))

    async def completed_steps(self, execution_id: str) -> dict[int, dict[str, Any]]:
        return await self._run(self._steps, execution_id)

    def _steps(self, execution_id: str) -> dict[int, dict[str, Any]]:
        rows = self._conn().execute(
            "SELECT idx, body FROM steps WHERE execution_id=? ORDER BY idx", (execution_id,))
        return {idx: json.loads(body) for idx, body in rows}

    # --- guard state ---------------------------------------------------------------------

    async def record_event(self, kind: str, key: str, at: float, data: dict | None = None) -> None:
        await self._exec("INSERT INTO events (kind, key, at, data) VALUES (?, ?, ?, ?)",
                         (kind, key, at, json.dumps(data or {})))

    async def events_since(self, kind: str, key: str, since: float) -> list[tuple[float, dict]]:
        rows = await self._run(lambda: self._conn().execute(
            "SELECT at, data FROM events WHERE kind=? AND key=? AND at>=? ORDER BY at",
            (kind, key, since)).fetchall())
        return [(at, json.loads(data)) for at, data in rows]

    async def get_state(self, key: str) -> dict[str, Any] | None:
        row = await self._run(lambda: self._conn().execute(
            "SELECT value FROM state WHERE key=?", (key,)).fetchone())
        return json.loads(row[0]) if row else None

    async def put_state(self, key: str, value: dict[str, Any] | None) -> None:
        if value is None:
            await self._exec("DELETE FROM state WHERE key=?", (key,))
        else:
            await self._exec("INSERT OR REPLACE INTO state (key, value) VALUES (?, ?)",
                             (key, json.dumps(value)))

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
        await self._run(lambda: self._conn().execute(sql, args))

    async def _scalar(self, sql: str, args: tuple = ()) -> int:
        return await self._run(lambda: self._conn().execute(sql, args).fetchone()[0])


def open_store(url: str) -> SQLiteStore:
    """The store for a URL; the one place a new backend is plugged in."""
    return SQLiteStore(url)
