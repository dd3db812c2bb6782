"""The shared store: PostgreSQL, for several replicas acting as one.

Driver: asyncpg (native asyncio, its own pool, binary protocol, no libpq to install).
What several replicas need, and where it lives here:

- one execution per alert: the inbox dedupe key is UNIQUE, so of two replicas that receive
  the same alert only the first commit inserts it; the other counts a duplicate;
- claims with leases: a replica claims inbox items with `FOR UPDATE SKIP LOCKED` and a
  lease (`store_lease`) that a heartbeat renews while the item is worked on; an item whose
  lease expired (its replica died) is claimed again by another replica, which resumes the
  execution from its journal;
- fencing: a replica that could not renew its leases in time stops writing for the work it
  claimed (its in-flight executions get StoreUnavailable), because another may have taken
  it over; nothing it held is journaled or mutated after that;
- target locks are rows with a lease, renewed by the same heartbeat; guard admission is
  one statement taking a transaction advisory lock per limited key, so limits hold across
  replicas and unrelated targets never wait; critical sections (maintenance, approvals)
  are session advisory locks whose sessions end a lease after their holder froze
  (postgres_sections.py).
The schema is versioned and migrated at open under an advisory lock, so replicas that
start together migrate once (postgres_schema.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, TypeVar

import asyncpg

from .. import redact as secrets
from .. import turns
from ..logs import Recurring
from . import packing
from .base import (
    LOCKED,
    PAUSE,
    PAUSED,
    RESOLVED,
    Enqueued,
    Entry,
    Event,
    InboxItem,
    LeaseLost,
    Limit,
    StoreUnavailable,
)
from .postgres_clock import NOW, DatabaseClock
from .postgres_clock import read as clock_reading
from .postgres_connection import Connection
from .postgres_leases import Leases
from .postgres_schema import MIGRATION_LOCK, MIGRATIONS, migrate
from .postgres_sections import Section
from .url import redact

log = logging.getLogger("remediator.store")
T = TypeVar("T")
Rows = list[tuple[str, dict[str, Any], dict[str, Any]]]
_Packed = tuple[str, bytes, packing.Ref]  # an inbox row as stored: key, packed item, reference

# The current task's critical section: statements inside the section run on its lock's
# connection (one per section, nothing waits for the pool meanwhile; the lock's fence).
_section: contextvars.ContextVar[Section | None] = contextvars.ContextVar("section",
                                                                          default=None)
# InternalClientError: a connection whose server said goodbye (its FATAL read, the socket
# not yet closed) refuses the next statement with "another operation is in progress".
_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError,
           TimeoutError)
# Joined to a statement, makes its commit wait for the WAL flush on a pool whose connections
# commit asynchronously (read at commit time; local: reset with the transaction). One round
# trip, as before: a mutation's admission (its intent, sent next, must outlive a database
# crash, or the step would run again after it) and the operator's state (the pause). Claims
# stay asynchronous (one per few decisions in a storm, each a flush intake would wait
# behind): an admission checks its run still holds its claim (`held`), and its flush takes
# the claim's record along.
_SYNC = "(SELECT set_config('synchronous_commit', {}, true)) AS sync"
_DURABLY = _SYNC.format("'on'")
# The runs waiting on an approval (`awaiting_approval`): few, read by their partial index.
AWAITING = "SELECT id, awaiting FROM executions WHERE awaiting IS NOT NULL"
# An admission's target lock (name $14, holder $15), read where `{claim}` holds: its holder's,
# or taken again if it is free. Taking one does not wait for the flush (`acquire_lock`: a
# dry-run storm takes one per decision), so a database crash may lose it before its holder's
# first admission. Nothing is written while it is held (a row locked or updated would make a
# refused admission's commit wait for a flush too: a live storm past its budget refuses each
# of its changes).
_LOCK_HELD = ("lk AS (SELECT holder FROM locks WHERE name = $14), "
              "l AS (INSERT INTO locks (name, holder, owner, lease_until) SELECT $14, $15, $16, "
              "now() + make_interval(secs => $17) WHERE NOT EXISTS (SELECT 1 FROM lk) AND "
              "({claim}) ON CONFLICT (name) DO NOTHING RETURNING holder)")


# Several state keys written ($3, $4) and removed ($5) in one statement, durably, if the inbox
# item $1 (none: NULL) still holds this replica's ($2) claim $6 (its count of claims, migration
# 16: the same replica may have claimed it again, by another task, after its lease lapsed and
# another replica finished it, and that claim's run read what this one decides undecided):
# its row is locked first, so a replica taking the claim over waits for this commit (its
# claim skips a locked row) and reads what it wrote. One statement, not a transaction: a
# section's holder frozen between two of them left the first committed and the rest undone
# (postgres_sections.py).
_PUT_STATES = (
    "WITH c AS (SELECT 1 FROM inbox WHERE id = $1 AND owner = $2 AND state = 'running' "
    "AND claims = $6 FOR UPDATE), "
    "ok AS (SELECT $1::bigint IS NULL OR EXISTS (SELECT 1 FROM c) AS ok), "
    "p AS (INSERT INTO state (key, value) SELECT k, v FROM unnest($3::text[], $4::text[]) "
    "AS t(k, v) WHERE (SELECT ok FROM ok) ON CONFLICT (key) DO UPDATE SET value = "
    "excluded.value), d AS (DELETE FROM state WHERE key = ANY($5::text[]) AND "
    "(SELECT ok FROM ok)) "
    f"SELECT ok FROM ok, {_DURABLY}")


# A batch of inbox rows with the references they are packed against (new ones go in with
# their first users), skipping keys already received; %s: the claim's columns, their values,
# and what is returned.
_INSERT = ("WITH new_refs AS (INSERT INTO refs (id, created, data) SELECT * FROM "
           "unnest($5::bigint[], $6::double precision[], $7::bytea[]) ON CONFLICT DO NOTHING) "
           "INSERT INTO inbox (dedupe_key, packed, ref, received_at%s) "
           "SELECT k, p, r, $4%s FROM unnest($1::text[], $2::bytea[], $3::bigint[]) "
           "AS t(k, p, r) ON CONFLICT (dedupe_key) DO NOTHING RETURNING %s")


async def _insert_rows(db: asyncpg.Connection, sql: str, *args: Any) -> list[asyncpg.Record]:
    """Keys are sorted, so two writers lock rows in one order; a deadlock with a reference's
    insert is still possible, and tried again."""
    for attempt in range(3):
        try:
            return await db.fetch(sql, *args)
        except asyncpg.DeadlockDetectedError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


class PostgresStore:
    def __init__(self, url: str, lease: float = 30.0, password: str | None = None,
                 read_only: bool = False, sync: str = "normal"):
        if not url.startswith(("postgresql://", "postgres://")):
            raise ValueError(f"unsupported store URL {redact(url)!r}: expected postgresql://...")
        if lease < 3:
            raise ValueError(f"store_lease must be at least 3s, got {lease:g}s")
        self.url = url
        self.lease = lease
        if sync.lower() not in ("normal", "full"):
            raise ValueError(f"store sync must be normal or full, got {sync!r}")
        # As SQLite's `normal`: intake commits wait for the WAL flush (an acknowledged alert
        # survives a database crash), and so do admissions and the operator's state
        # (`_DURABLY`); the journal's results and the decisions do not, so they survive a
        # replica's crash, not the database server's. `full`: everything waits.
        self._sync_commit = "on" if sync.lower() == "full" else "off"
        self.read_only = read_only  # the CLI: no migration, no claims, no heartbeat
        self._password = password or None  # else libpq's environment (PGPASSWORD, PGPASSFILE)
        self.replica = uuid.uuid4().hex[:12]  # this process; owner of its claims and locks
        self._pool: asyncpg.Pool | None = None
        # Intake's own connection: a webhook's commit never queues for the pool behind
        # processing's statements (hundreds of executions in a storm share `_pool`). Held,
        # not pooled: the pool's acquire (under a timeout) and its release (shielded, in a
        # task of its own) were loop iterations more before every acknowledgement, and each
        # iteration may carry a chunk of processing.
        self._intake_db: asyncpg.Connection | None = None
        # The heartbeat's too: queued behind hundreds of busy executions, renewals came late
        # on a loaded machine, replicas fenced themselves and their work churned between them.
        self._lease_pool: asyncpg.Pool | None = None
        self._healthy = False
        self._leases = Leases(lease)  # what this replica renews, and its fence
        self._heartbeat: asyncio.Task[None] | None = None
        self._intake: list[tuple[list[_Packed], asyncio.Future[Enqueued]]] = []
        self._flushing = False
        self._local: dict[str, asyncio.Lock] = {}
        self._metrics: Any = None
        self._version = len(MIGRATIONS)  # an older schema opened read-only reads as it is
        self._clock = DatabaseClock()
        # References' ages on the clock their users' `updated_at` is stamped on, which
        # pruning reads (packing.py says why it must).
        self._refs = packing.Refs(clock=self._clock.now)

    # --- lifecycle -----------------------------------------------------------------------

    def instrument(self, metrics: Any) -> None:
        self._metrics = metrics
        self._clock.instrument(metrics)

    @property
    def clock_offset(self) -> float:
        """The database's clock minus this process's (postgres_clock.py)."""
        return self._clock.offset

    def now_iso(self) -> str:
        return self._clock.now_iso()

    @property
    def is_open(self) -> bool:
        """Open and reachable: readiness is false while the database cannot be reached."""
        return self._pool is not None and self._healthy

    async def open(self) -> None:
        try:
            self._pool = await self._create_pool(10)
            if not self.read_only:
                await self._intake_connection()
                # Its renewals wait for the WAL flush: a replica counts on its leases from
                # each renewal on (`Leases.valid_until`), so one lost with a database crash let
                # another replica take its work over while it still ran it. A flush per
                # renewal (every third of the lease), none while nothing is held.
                self._lease_pool = await self._create_pool(1, sync="on")
            async with self._pool.acquire() as db, db.transaction():
                if self.read_only:
                    await db.execute("SET TRANSACTION READ ONLY")
                else:
                    await db.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
                self._version = await migrate(db, self.read_only)
            if not self.read_only:
                async with self._pool.acquire() as db:
                    await self._clock.first(db, _transient)
        except _ERRORS as exc:
            for pool in (self._pool, self._lease_pool):
                if pool is not None:
                    await pool.close()
            self._pool = self._lease_pool = None
            self._drop_intake()
            # The reason alone: whoever opens the store names it (the CLI: "cannot open the
            # store URL: reason"), and the driver's messages quote no password.
            raise StoreUnavailable(secrets.text(str(exc)) or type(exc).__name__) from exc
        self._healthy = True
        self._leases.valid_until = time.monotonic() + self.lease
        if not self.read_only:
            self._heartbeat = asyncio.create_task(self._renew_loop(), name="store-leases")

    async def _create_pool(self, size: int, sync: str | None = None) -> asyncpg.Pool:
        return await asyncpg.create_pool(
            self.url, password=self._password, min_size=1, max_size=size, timeout=10,
            command_timeout=30, connection_class=Connection, init=Connection.check_client,
            reset=Connection.reset_if_needed,
            server_settings={"application_name": "remediator",
                             "synchronous_commit": sync or self._sync_commit})

    async def _intake_connection(self) -> asyncpg.Connection:
        """Intake's connection, connected again if it was lost (or dropped after an error)."""
        if self._intake_db is None or self._intake_db.is_closed():
            self._intake_db = None
            # Its commits acknowledge alerts: durable (WAL flushed) before the 202.
            db = await asyncpg.connect(
                self.url, password=self._password, timeout=10, command_timeout=30,
                server_settings={"application_name": "remediator", "synchronous_commit": "on"})
            if self._pool is None:  # closed while connecting: nobody else would close it
                db.terminate()
                raise StoreUnavailable("store is not open")
            self._intake_db = db
        return self._intake_db

    def _drop_intake(self) -> None:
        """After an outage or a timeout the connection may be broken or still cancelling
        its statement: the next commit opens another."""
        db, self._intake_db = self._intake_db, None
        if db is not None:
            db.terminate()

    async def close(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
            self._heartbeat = None
        if self._pool is None:
            return
        # Hand back what we still hold, so another replica resumes it now, not at expiry.
        with contextlib.suppress(*_ERRORS):
            if self.read_only:
                raise OSError("nothing to hand back")
            await self._pool.execute(
                "UPDATE inbox SET state='pending', owner=NULL, lease_until=NULL "
                "WHERE owner=$1 AND state='running'", self.replica)
            await self._pool.execute("DELETE FROM locks WHERE owner=$1", self.replica)
        pools = (self._pool, self._lease_pool)
        self._pool = self._lease_pool = None
        if self._intake_db is not None:
            with contextlib.suppress(*_ERRORS):
                await asyncio.wait_for(self._intake_db.close(), 10)
        self._drop_intake()
        self._leases.held.clear()
        self._healthy = False
        for pool in pools:
            with contextlib.suppress(*_ERRORS):
                if pool is not None:
                    await asyncio.wait_for(pool.close(), 10)

    # --- leases ------------------------------------------------------------------------

    async def _renew_loop(self) -> None:
        failing = Recurring(log, "cannot renew store leases")
        while True:
            await asyncio.sleep(self.lease / 3)
            try:
                await self.renew()
            except Exception as exc:
                # A statement refused otherwise than by an outage (a database read-only for
                # a moment) ended the heartbeat for good: every run here was then fenced at
                # its next write, and taken over again by this replica, for ever.
                failing.failed(exc)
                self._leases.check()
            else:
                failing.succeeded()

    async def renew(self) -> None:
        """Extend the leases of everything held here; notice what was taken over."""
        sent = time.monotonic()
        try:
            held = sorted(self._leases.held)
            kept = await self._call("lease", lambda db: db.fetch(
                "UPDATE inbox SET lease_until = now() + make_interval(secs => $3) "
                "WHERE id = ANY($1::bigint[]) AND owner=$2 AND state='running' RETURNING id",
                held, self.replica, self.lease), fenced=False, pool=self._lease_pool)
            # The database's clock is read in the same round trip (a statement of its own
            # delayed the next renewal when it was slow, and this one is timed anyway).
            renew_locks = ("UPDATE locks SET lease_until = now() + make_interval(secs => $3) "
                           "WHERE owner=$1 AND holder = ANY($2::text[])")
            args = (self.replica, sorted(self._leases.holders), self.lease)
            reading = None
            if self._clock.readable:
                reading = await self._call("lease", lambda db: clock_reading(
                    db, f"WITH renewed AS ({renew_locks}) SELECT {NOW}", *args),
                    fenced=False, pool=self._lease_pool)
            else:
                await self._call("lease", lambda db: db.execute(renew_locks, *args),
                                 fenced=False, pool=self._lease_pool)
        except StoreUnavailable as exc:
            log.error("cannot renew store leases: %s", exc)
            self._leases.check()
            return
        self._leases.renewed(sent, held, {r["id"] for r in kept})
        if reading is not None:
            self._clock.update(reading)

    def fence(self) -> None:
        """LeaseLost if the current task's claim may have lapsed (`Leases.fence`)."""
        self._leases.fence()

    # --- plumbing ----------------------------------------------------------------------

    async def _call(self, op: str, fn: Callable[[asyncpg.Connection], Awaitable[T]],
                    fenced: bool = True, pool: asyncpg.Pool | None = None,
                    intake: bool = False, turn: bool = True) -> T:
        """One statement, or a function of a connection. A fenced call (processing's, and
        the API's reads) then waits for processing's turn (turns.py) while intake is busy,
        as after a SQLite write: its caller's work up to its next call ran unpaced in whatever loop iteration
        the answer came in, webhooks waiting in it (the storm's p99 on PostgreSQL). Not
        intake, the heartbeat, a claim (its items are registered for renewal once it
        returns), the operator's state (the pause is the kill switch), nor a critical
        section's statements (its lock would be held meanwhile)."""
        pool = pool or self._pool
        if pool is None:
            raise StoreUnavailable("store is not open")
        if fenced:
            self._leases.fence()
        started = time.perf_counter()
        try:
            section = _section.get()
            if section is not None and section.released:  # a task made in a section, late
                section = None
            if intake:
                result = await fn(await self._intake_connection())
            elif section is not None:  # inside a critical section: its connection, no pool wait
                result = await section.run(fn)
            else:
                async with pool.acquire(timeout=10) as db:
                    result = await fn(db)
        except _ERRORS as exc:
            if isinstance(exc, asyncpg.PostgresError) and not _transient(exc):
                raise  # a bug in a statement, not an outage
            if intake:
                self._drop_intake()
            self._healthy = False
            raise StoreUnavailable(f"store unavailable: {type(exc).__name__}: {exc}") from exc
        self._healthy = True
        if self._metrics is not None:
            self._metrics.store_seconds.labels(op).observe(time.perf_counter() - started)
        if fenced and turn and section is None and not turns.turns().quiet(turns.RECENT):
            await turns.take()
        return result

    async def _exec(self, op: str, sql: str, *args: Any, turn: bool = True) -> None:
        await self._call(op, lambda db: db.execute(sql, *args), turn=turn)

    @contextlib.asynccontextmanager
    async def critical(self, name: str) -> AsyncIterator[None]:
        """One holder at a time across every replica: a session advisory lock whose session
        the server ends a lease after its holder froze (postgres_sections.py)."""
        local = self._local.setdefault(name, asyncio.Lock())
        async with local:
            if self._pool is None:
                raise StoreUnavailable("store is not open")
            try:
                db = await self._pool.acquire(timeout=10)
            except _ERRORS as exc:
                raise StoreUnavailable(f"store unavailable: {exc}") from exc
            db.holds_session_state()  # reset (advisory locks released) when handed back
            section = Section(db, name, self.lease)
            try:
                # A frozen holder's session ends within a lease of its last statement.
                await section.acquire(wait=self.lease + 10)
                token = _section.set(section)
                try:
                    yield
                finally:
                    _section.reset(token)
                    await section.release(_ERRORS)
            except _ERRORS as exc:
                raise StoreUnavailable(f"store unavailable: {exc}") from exc
            finally:
                # A broken connection is discarded by the pool, which also drops the lock.
                with contextlib.suppress(*_ERRORS):
                    await self._pool.release(db)

    # --- inbox ---------------------------------------------------------------------------

    async def enqueue(self, items: Rows) -> Enqueued:
        """Group commit: requests arriving while a commit runs share the next one; each
        caller resumes only after its rows are committed."""
        future: asyncio.Future[Enqueued] = asyncio.get_running_loop().create_future()
        # Packed now, while the commit before it is on its way: packed by the commit that
        # takes it (~25 us an alert, a batch at once), it was sent that much later.
        self._intake.append((self._pack(items), future))
        if not self._flushing:
            self._flushing = True
            # A context of its own: not a caller's critical-section connection or claim.
            asyncio.get_running_loop().create_task(self._flush_intake(),
                                                   context=contextvars.Context())
        return await future

    async def _flush_intake(self) -> None:
        try:
            while self._intake:
                batch, self._intake = self._intake, []
                try:
                    inserted = await self._insert([row for rows, _ in batch for row in rows])
                except Exception as exc:  # whatever failed, each webhook is answered (a 503)
                    if not isinstance(exc, StoreUnavailable | asyncpg.PostgresError):
                        log.exception("intake commit failed")  # unforeseen: never a silent hang
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(StoreUnavailable(str(exc)))
                    continue
                for rows, future in batch:
                    accepted = 0
                    for key, _, _ in rows:
                        if key in inserted:
                            inserted.discard(key)
                            accepted += 1
                    if not future.done():
                        future.set_result(Enqueued(accepted, len(rows) - accepted))
        finally:
            self._flushing = False

    def _pack(self, rows: Rows) -> list[_Packed]:
        """Each row as stored: its key, the alert and group packed against their reference,
        and that reference."""
        packed = []
        for (key, alert, _), text in zip(rows, packing.item_texts(rows), strict=True):
            ref = self._refs.for_alert(alert, text)
            packed.append((key, self._refs.pack_item(text, ref), ref))
        return packed

    async def probe_intake(self) -> None:
        await self.enqueue([])  # intake's statement, of no rows (`_insert`)

    async def _insert(self, rows: list[_Packed]) -> set[str]:
        # Even of no rows (`probe_intake`): the database refuses it as it would refuse alerts.
        now = self.now_iso()
        # Sorted keys: two replicas inserting overlapping batches lock rows in one order.
        rows = sorted(rows, key=lambda r: r[0])
        keys, packed, ids = [r[0] for r in rows], [r[1] for r in rows], [r[2].id for r in rows]
        new = list({r[2].id: r[2] for r in rows if not r[2].stored}.values())

        async def insert(db: asyncpg.Connection) -> list[asyncpg.Record]:
            # One statement, committed on its own (one round trip, not four): new references
            # go in with their first users; the intake connection's commits are durable.
            return await _insert_rows(db, _INSERT % ("", "", "dedupe_key"), keys, packed, ids,
                                      now, [r.id for r in new], [r.created for r in new],
                                      [r.data for r in new])

        inserted = {r["dedupe_key"] for r in await self._call("intake", insert, fenced=False,
                                                              intake=True)}
        for ref in new:
            ref.stored = True
        return inserted

    async def enqueue_claimed(self, items: Rows) -> Enqueued:
        """Stored claimed by this replica under a lease, renewed as any claim's: no replica
        takes them while this process lives (a replay's payload; the intake's group commit
        is for webhooks)."""
        rows = sorted({r[0]: r for r in self._pack(items)}.values(), key=lambda r: r[0])
        new = list({r[2].id: r[2] for r in rows if not r[2].stored}.values())
        self._leases.claimed()
        found = await self._call("claim", lambda db: _insert_rows(
            db, _INSERT % (", state, owner, lease_until",
                           ", 'running', $8, now() + make_interval(secs => $9)",
                           "id, dedupe_key, alert, grp, packed, ref, received_at, claims"),
            [r[0] for r in rows], [r[1] for r in rows], [r[2].id for r in rows], self.now_iso(),
            [r.id for r in new], [r.created for r in new], [r.data for r in new],
            self.replica, self.lease), turn=False)
        for ref in new:
            ref.stored = True
        return Enqueued(len(found), len(items) - len(found), tuple(await self._hold(found)))

    async def _items(self, rows: list[asyncpg.Record]) -> list[InboxItem]:
        """Claimed rows as items, in order, once the references they are packed against are
        known here; rows that cannot be read are finished (packing.unpack_items)."""
        refs, missing = self._refs.known(r["ref"] for r in rows)
        if missing:
            for r in await self._call("read", lambda db: db.fetch(
                    "SELECT id, data FROM refs WHERE id = ANY($1::bigint[])", missing)):
                refs[r["id"]] = r["data"]
                self._refs.remember(r["id"], r["data"])
        items, unreadable = packing.unpack_items(
            (r["id"], r["dedupe_key"], r["packed"] if r["ref"] is not None else r["alert"],
             r["grp"], r["received_at"], refs.get(r["ref"])) for r in rows)
        for item_id in unreadable:
            await self.finish(item_id)
        claims = {r["id"]: r["claims"] for r in rows}  # which claim each is (`put_states`)
        return [replace(item, claim=claims[item.id]) for item in items]

    async def claim(self, limit: int) -> list[InboxItem]:
        """Items whose lease expired (their replica died) first, then pending items."""
        self._leases.claimed()
        if limit <= 0:
            return []
        # The rows locked are updated where they are (their ctid), whatever the statistics:
        # joined by id, the plan prepared while the inbox was small (a new database) read
        # all of it on every claim as it grew, until the next ANALYZE. And found by a TID
        # scan of the locked rows' array, not by the join alone: a generic plan cannot know
        # how many rows `LIMIT $2 - ...` locks (a tenth of the pending ones, it assumes), so
        # once an ANALYZE saw a storm's backlog it hashed the whole inbox, read sequentially,
        # to join those few (5-8 ms of PostgreSQL's CPU per claim at 20 000 items, most of
        # its CPU in a storm; the acknowledgements' backends waited for a CPU behind it). A
        # row another transaction changed after this statement began is locked but not
        # updated (its version is newer than the statement's snapshot): claimed next time.
        rows = await self._call("claim", lambda db: db.fetch(
            "WITH t AS (SELECT ctid AS tid, state FROM inbox WHERE state = 'running' "
            "AND lease_until < now() ORDER BY lease_until LIMIT $2 FOR UPDATE SKIP LOCKED), "
            "p AS (SELECT ctid AS tid, state FROM inbox WHERE state = 'pending' ORDER BY id "
            "LIMIT $2 - (SELECT count(*) FROM t) FOR UPDATE SKIP LOCKED), "
            "c AS (SELECT * FROM t UNION ALL SELECT * FROM p) "
            "UPDATE inbox i SET state='running', owner=$1, claims = i.claims + 1, "
            "lease_until = now() + make_interval(secs => $3) FROM c "
            "WHERE i.ctid = ANY (ARRAY(SELECT tid FROM c)) AND i.ctid = c.tid "
            "RETURNING i.id, i.dedupe_key, i.alert, i.grp, i.packed, i.ref, i.received_at, "
            "i.claims, c.state AS was",
            self.replica, limit, self.lease), turn=False)
        taken = {r["id"] for r in rows if r["was"] == "running"}
        if taken:
            log.warning("took over %d alert(s) whose replica's lease expired", len(taken))
            if self._metrics is not None:
                self._metrics.lease_takeovers.inc(len(taken))
        return [replace(i, interrupted=True) if i.id in taken else i
                for i in await self._hold(rows)]

    async def _hold(self, rows: list[asyncpg.Record]) -> list[InboxItem]:
        """Rows just claimed here, as items in order, their leases renewed from now on."""
        # Fenced while the claim ran (a late renewal): these rows are ours all the same (owner,
        # fresh lease). Held under the old epoch, their first write raised LeaseLost while the
        # renewals kept their leases for ever: claimed under the current one, they run.
        self._leases.claimed()
        rows = sorted(rows, key=lambda r: r["id"])
        self._leases.held.update(r["id"] for r in rows)
        try:
            return await self._items(rows)
        except BaseException:
            # Not handed to processing (the store failed reading their references): renewed
            # for ever they were held for ever; lapsed, a replica (this one too) claims them.
            self._leases.held.difference_update(r["id"] for r in rows)
            raise

    async def finish(self, item_id: int) -> None:
        self._leases.held.discard(item_id)
        await self._exec("claim", "UPDATE inbox SET state='done', owner=NULL, lease_until=NULL "
                                  "WHERE id=$1 AND (owner=$2 OR owner IS NULL)", item_id, self.replica)

    async def requeue(self, dedupe_key: str) -> None:
        """Never from under a live replica: its lease says it is working on it."""
        await self._exec("claim", "UPDATE inbox SET state='pending', owner=NULL, lease_until=NULL "
                                  "WHERE dedupe_key=$1 AND NOT (state='running' AND "
                                  "lease_until >= now())", dedupe_key)

    async def claim_key(self, dedupe_key: str) -> InboxItem | None:
        row = await self._call("claim", lambda db: db.fetchrow(
            "UPDATE inbox SET state='running', owner=$2, claims = claims + 1, "
            "lease_until = now() + make_interval(secs => $3) WHERE dedupe_key=$1 "
            "AND NOT (state='running' AND lease_until >= now()) "
            "RETURNING id, dedupe_key, alert, grp, packed, ref, received_at, claims", dedupe_key,
            self.replica, self.lease), turn=False)
        if row is None:
            return None
        self._leases.claimed()  # the resume that follows is fenced like a claim
        self._leases.held.add(row["id"])
        return (await self._items([row]))[0]

    async def release_running(self) -> int:
        """Nothing to release at start: a new process holds no claims, and the claims of a
        dead one are taken over once their lease expires. Reports how many that is."""
        return await self._call("read", lambda db: db.fetchval(
            "SELECT count(*) FROM inbox WHERE state='running' AND lease_until < now()"))

    async def pending_count(self) -> int:
        # OR, not IN: each arm is read from its partial index (migration 8); `IN` matches
        # neither, and scanned every done item still retained, every second. No turn after
        # it: the gauge's scrape gives it a second, which processing's turn in a storm could
        # outlast, leaving the gauge stale just when the backlog it shows matters.
        return await self._call("read", _count_pending, turn=False)

    async def received(self, dedupe_key: str) -> bool:
        return await self._call("read", lambda db: db.fetchval(
            "SELECT EXISTS (SELECT 1 FROM inbox WHERE dedupe_key=$1)", dedupe_key))

    async def held(self, dedupe_key: str) -> bool:
        """Claimed under a lease still running: a replica that died holds nothing."""
        return await self._call("read", lambda db: db.fetchval(
            "SELECT EXISTS (SELECT 1 FROM inbox WHERE dedupe_key=$1 AND state='running' "
            "AND lease_until >= now())", dedupe_key))

    async def settled(self, dedupe_key: str) -> bool:
        return await self._call("read", lambda db: db.fetchval(
            "SELECT NOT EXISTS (SELECT 1 FROM inbox WHERE dedupe_key=$1 AND state <> 'done')",
            dedupe_key))

    async def prune_inbox(self, before_iso: str) -> int:
        status = await self._call("prune", lambda db: db.execute(
            "DELETE FROM inbox WHERE state='done' AND received_at < $1", before_iso))
        return int(status.split()[-1])

    async def refresh_inbox(self, keys: list[str], before_iso: str, now_iso: str) -> int:
        # Their references are made as new as they are: the prune keeps a reference only
        # for rows received before its cutoff (packing.py), which a refreshed row is not.
        return await self._call("prune", lambda db: db.fetchval(
            "WITH done AS (UPDATE inbox SET received_at=$1 WHERE received_at < $2 AND "
            "dedupe_key = ANY($3::text[]) RETURNING ref), refs AS (UPDATE refs SET created=$4 "
            "WHERE created < $4 AND id IN (SELECT ref FROM done)) SELECT count(*) FROM done",
            now_iso, before_iso, keys, datetime.fromisoformat(now_iso).timestamp()))

    async def prune_history(self, before: float) -> int:
        """As on SQLite: final executions last updated before `before` (none `running`, none
        with an approval pending), their steps and approval states, and old guard events."""
        cutoff = datetime.fromtimestamp(before, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

        async def prune(db: asyncpg.Connection) -> int:
            async with db.transaction():
                ids = [r["id"] for r in await db.fetch(
                    "DELETE FROM executions e WHERE updated_at < $1 AND outcome <> 'running' "
                    "AND NOT EXISTS (SELECT 1 FROM state WHERE "
                    "starts_with(key, 'approval-pending:' || e.id || ':')) RETURNING id", cutoff)]
                await db.execute("DELETE FROM steps WHERE execution_id = ANY($1::text[])", ids)
                await db.execute("DELETE FROM state WHERE starts_with(key, 'approval:') AND "
                                 "split_part(key, ':', 2) = ANY($1::text[])", ids)
                await db.execute("DELETE FROM events WHERE at < $1", before)
                # Minutes wholly before the cutoff (a window that starts after it is exact).
                await db.execute("DELETE FROM event_counts WHERE minute < floor($1 / 60)::bigint",
                                 before)
                # What still uses an old reference was kept past the cutoff (packing.py).
                await db.execute("DELETE FROM refs WHERE created < $1 AND id NOT IN (SELECT ref "
                                 "FROM executions WHERE updated_at < $2 AND ref IS NOT NULL) AND "
                                 "id NOT IN (SELECT ref FROM inbox WHERE received_at < $2 AND "
                                 "ref IS NOT NULL)", before - packing.WINDOW, cutoff)
                return len(ids)

        return await self._call("prune", prune)

    # --- executions ----------------------------------------------------------------------

    async def save_execution(self, decision: dict[str, Any], events: list[Event] | None = None,
                             finishes: int | None = None,
                             steps: dict[int, dict[str, Any]] | None = None,
                             durable: bool = False) -> None:
        """One statement: what goes with the decision in data-modifying CTEs (`durable`:
        its commit waits for the flush, `_DURABLY`)."""
        args: list[Any] = []
        record, with_, ref = self._record(decision, args, f" FROM {_DURABLY}" if durable else "")
        if events:
            args += [[e[0] for e in events], [_searched(e[1]) for e in events],
                     [e[2] for e in events], [json.dumps(e[3]) for e in events]]
            n = len(args)
            with_.append(f"ev AS (INSERT INTO events (kind, key, at, data) SELECT * FROM "
                         f"unnest(${n - 3}::text[], ${n - 2}::text[], "
                         f"${n - 1}::double precision[], ${n}::text[]))")
        if steps:
            stored = [_stored(step) for step in steps.values()]
            args += [list(steps), [b for b, _ in stored], [p for _, p in stored]]
            n = len(args)
            with_.append(f"st AS (INSERT INTO steps (execution_id, idx, body, packed) SELECT $1, * "
                         f"FROM unnest(${n - 2}::integer[], ${n - 1}::text[], ${n}::bytea[]) "
                         f"{_STEP_UPSERT})")
        if finishes is not None:
            args += [finishes, self.replica]
            with_.append(f"done AS (UPDATE inbox SET state='done', owner=NULL, lease_until=NULL "
                         f"WHERE id=${len(args) - 1} AND (owner=${len(args)} OR owner IS NULL))")
        await self._exec("journal", ("WITH " + ", ".join(with_) + " " if with_ else "") + record,
                         *args, turn=finishes is None)
        ref.stored = True
        if finishes is not None:
            self._leases.held.discard(finishes)

    def _record(self, decision: dict[str, Any], args: list[Any],
                where: str = "") -> tuple[str, list[str], packing.Ref]:
        """A decision's record: its INSERT (values appended to `args`, written only `where`
        holds) and the CTE that inserts its reference with it until that is committed."""
        text = packing.body_text(decision)
        ref = self._refs.for_body(decision, text)
        n = len(args)
        args += [decision["id"], decision["created_at"], self.now_iso(),
                 _searched(decision["alertname"]), decision.get("playbook"),
                 decision["outcome"], _searched(decision["fingerprint"]),
                 self._refs.pack(text, ref), ref.id, packing.awaiting(decision)]
        with_ = []
        if not ref.stored:  # until committed, a reference goes in with its first users
            args += [ref.created, ref.data]
            with_.append(f"r AS (INSERT INTO refs (id, created, data) VALUES (${n + 9}::bigint, "
                         f"${n + 11}::double precision, ${n + 12}::bytea) ON CONFLICT DO NOTHING)")
        values = ", ".join(f"${n + i}::{t}" for i, t in enumerate(
            ("text",) * 7 + ("bytea", "bigint", "text"), 1))
        return ("INSERT INTO executions (id, created_at, updated_at, alertname, playbook, "
                f"outcome, fingerprint, packed, ref, awaiting) SELECT {values}{where} "
                "ON CONFLICT (id) DO UPDATE SET updated_at=excluded.updated_at, "
                "outcome=excluded.outcome, body=NULL, packed=excluded.packed, ref=excluded.ref, "
                "awaiting=excluded.awaiting", with_, ref)

    async def get_execution(self, execution_id: str) -> dict[str, Any] | None:
        if "\x00" in execution_id:  # a caller's text (a URL's id): no PostgreSQL text holds
            return None  # one, and no execution's id (hex) does; the statement refused it
        found = await self._decisions("id = $1", [execution_id], 1)
        return found[0] if found else None

    async def awaiting_approval(self) -> list[tuple[str, str]]:
        rows = await self._call("read", lambda db: db.fetch(
            AWAITING))
        return [(row["id"], row["awaiting"]) for row in rows]

    async def index_awaiting(self, execution_id: str, step: str) -> bool:
        return await self._call("journal", lambda db: db.fetchval(
            "UPDATE executions SET awaiting=$2 WHERE id=$1 AND awaiting IS NULL AND "
            "outcome='blocked' RETURNING true", execution_id, step)) is not None

    async def list_executions(self, limit: int = 100, **filters: Any) -> list[dict[str, Any]]:
        where, args = [], []
        for column in ("outcome", "playbook", "alertname", "fingerprint"):
            if column == "outcome" and filters.get(column) == "running":
                # A literal: a prepared statement's generic plan can then use the partial
                # index of running executions (the age gauge asks every few seconds).
                where.append("outcome = 'running'")
            elif filters.get(column):
                args.append(_searched(filters[column]))
                where.append(f"{column} = ${len(args)}")
        return await self._decisions(" AND ".join(where) or "TRUE", args, limit)

    async def changes(self, since: str | None, limit: int
                      ) -> tuple[list[dict[str, Any]] | None, str]:
        # A position is the read's snapshot (`xmin:xmax:xip`, pg_current_snapshot: the
        # statement's own); each row carries the transaction that last wrote it (`txid`,
        # migration 15). What this snapshot shows and the last one did not is exactly what
        # was written by a transaction in flight then (`xip`) or begun since (`>= xmax`):
        # every xid below xmax and not in xip had ended by then. So a record committed
        # however late after its stamp is read once it commits, by no look-back window: a
        # window (updated_at, 10 s back) missed one whose transaction outlasted it, and one
        # back to the oldest transaction in flight (pg_snapshot_xmin) reads the whole storm
        # again each tick while any transaction of the cluster stays open. Two index ranges,
        # each at most `limit` (a transaction of the snapshot writes one record or a few).
        if since is None:
            return [], await self._call("read", lambda db: db.fetchval(
                "SELECT pg_current_snapshot()::text"))
        position = _snapshot(since)
        xmax, xip = position or ("0", [])
        rows = await self._call("read", lambda db: db.fetch(
            f"SELECT s.at, s.xmax >= $1::text::xid8 AS known, {self._columns()}, e.updated_at FROM "
            "(SELECT pg_current_snapshot()::text AS at, "
            "pg_snapshot_xmax(pg_current_snapshot()) AS xmax) s LEFT JOIN executions e ON "
            "$4 AND e.id IN ((SELECT id FROM executions WHERE txid >= $1::text::xid8 ORDER BY txid "
            "DESC LIMIT $3) UNION ALL (SELECT id FROM executions WHERE txid = ANY($2::text[]::xid8[]) "
            "LIMIT $3)) ORDER BY e.txid DESC, e.id DESC LIMIT $3",
            xmax, xip, limit, position is not None))
        at = rows[0]["at"]
        if position is None or not rows[0]["known"]:  # not a position, or one of a future
            return None, at  # (a database restored from a backup): what changed is unknown
        return [{**_decision(row), "updated_at": row["updated_at"]} for row in rows
                if row["id"] is not None], at

    def _columns(self) -> str:
        """A decision's columns (`e`: executions), its journal included."""
        steps = "(SELECT array_agg(s.{} ORDER BY s.idx) FROM steps s WHERE s.execution_id = e.id)"
        packed = (f"e.packed, (SELECT data FROM refs WHERE id = e.ref) AS ref, "
                  f"{steps.format('packed')} AS psteps" if self._version >= 2 else
                  "NULL AS packed, NULL AS ref, NULL AS psteps")
        return f"e.id, e.body, {packed}, {steps.format('body')} AS steps"

    async def _decisions(self, where: str, args: list[Any], limit: int) -> list[dict[str, Any]]:
        # Newest first: by the index of creation times (migration 11), ties by the text.
        newest = "remediator_instant(e.created_at) DESC, " if self._version >= 11 else ""
        rows = await self._call("read", lambda db: db.fetch(
            f"SELECT {self._columns()} FROM executions e WHERE {where} "
            f"ORDER BY {newest}e.created_at DESC, e.id DESC LIMIT ${len(args) + 1}", *args,
            limit))
        return [_decision(row) for row in rows]

    async def get_execution_and_pause(self, execution_id: str
                                      ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """One statement: the pause's row and the execution's, each there or not."""
        row = await self._call("read", lambda db: db.fetchrow(
            f"SELECT p.value AS pause, {self._columns()} FROM (SELECT 1) AS one "
            "LEFT JOIN state p ON p.key = $2 LEFT JOIN executions e ON e.id = $1",
            execution_id, PAUSE))
        return (_decision(row) if row["id"] is not None else None,
                json.loads(row["pause"]) if row["pause"] is not None else None)

    async def save_step(self, execution_id: str, index: int, step: dict[str, Any],
                        execution: dict[str, Any] | None = None) -> None:
        """One statement: with `execution`, its record in a data-modifying CTE."""
        args: list[Any] = []
        ctes, insert, ref = self._entry((execution_id, index, step, execution), args)
        await self._exec("journal", ("WITH " + ", ".join(ctes) + " " if ctes else "") + insert,
                         *args)
        if ref is not None:
            ref.stored = True

    def _entry(self, entry: Entry, args: list[Any], where: str = ""
               ) -> tuple[list[str], str, packing.Ref | None]:
        """A journal entry's statement: the CTEs its execution's record needs and the INSERT
        of its step (values appended to `args`; both written only `where` holds)."""
        execution_id, index, step, execution = entry
        n = len(args)
        args += [execution_id, index, *_stored(step)]
        ctes, ref = [], None
        if execution is not None:
            record, ctes, ref = self._record(execution, args, where)
            ctes.append(f"x AS ({record})")
        return ctes, ("INSERT INTO steps (execution_id, idx, body, packed) SELECT "
                      f"${n + 1}::text, ${n + 2}::integer, ${n + 3}::text, ${n + 4}::bytea"
                      f"{where} {_STEP_UPSERT}"), ref

    async def completed_steps(self, execution_id: str) -> dict[int, dict[str, Any]]:
        rows = await self._call("read", lambda db: db.fetch(
            "SELECT idx, body, packed FROM steps WHERE execution_id=$1 ORDER BY idx",
            execution_id))
        return {r["idx"]: _step(r["body"], r["packed"]) for r in rows}

    # --- guard state ---------------------------------------------------------------------

    async def record_event(self, kind: str, key: str, at: float, data: dict | None = None,
                           durable: bool = False) -> None:
        sync = f" FROM {_DURABLY}" if durable else ""
        await self._exec("journal", "INSERT INTO events (kind, key, at, data) SELECT $1::text, "
                         f"$2::text, $3::double precision, $4::text{sync}", kind, _searched(key),
                         at, json.dumps(data or {}))

    async def events_since(self, kind: str, key: str, since: float) -> list[tuple[float, dict]]:
        rows = await self._call("read", lambda db: db.fetch(
            "SELECT at, data FROM events WHERE kind=$1 AND key=$2 AND at>=$3 ORDER BY at",
            kind, _searched(key), since))
        return [(r["at"], json.loads(r["data"])) for r in rows]

    async def count_events(self, kind: str, key: str, since: float) -> int:
        return await self._call("read", lambda db: db.fetchval(
            "SELECT count(*) FROM events WHERE kind=$1 AND key=$2 AND at>=$3", kind,
            _searched(key), since))

    async def admit(self, limits: list[Limit], events: list[Event], unless_paused: bool = False,
                    unless_received: str | None = None, journal: Entry | None = None,
                    held: str | None = None, lock: tuple[str, str] | None = None
                    ) -> int | str | None:
        """One statement (`remediator_admit`): its locks are held only while it runs. A
        journal entry goes in with it, in data-modifying CTEs written only if it admitted.
        First, the claim on `held` must be this replica's, in the database: the claim was
        committed asynchronously, and a database crash may have lost it (and another replica
        claimed the alert since) while this one's lease looks valid from here. Then the
        target lock, taken again if it was lost, or LOCKED (`_LOCK_HELD`)."""
        args = [[x.kind for x in limits], [_searched(x.key) for x in limits],
                [x.since for x in limits], [x.max for x in limits],
                [json.dumps(x.unless) if x.unless else None for x in limits],
                [e[0] for e in events], [_searched(e[1]) for e in events],
                [e[2] for e in events], [json.dumps(e[3]) for e in events],
                PAUSE if unless_paused else None, unless_received, held, self.replica]
        claim = ("$12::text IS NULL OR EXISTS (SELECT 1 FROM inbox WHERE dedupe_key=$12 AND "
                 "state='running' AND owner=$13)")
        call, ctes = "remediator_admit($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)", []
        if lock is not None:
            args += [*lock, self.replica, self.lease]
            ctes = [_LOCK_HELD.format(claim=claim)]
            call = ("CASE WHEN EXISTS (SELECT 1 FROM lk WHERE holder = $15 UNION ALL "
                    f"SELECT 1 FROM l) THEN {call} ELSE -4 END")
        admit = f"SELECT CASE WHEN {claim} THEN {call} ELSE -3 END AS got FROM {_DURABLY}"
        ref = None
        if journal is not None:
            entry, insert, ref = self._entry(journal, args, " WHERE (SELECT got FROM a) IS NULL")
            admit = ("WITH " + ", ".join([*ctes, f"a AS MATERIALIZED ({admit})", *entry,
                                          f"j AS ({insert})"]) + " SELECT got FROM a")
        elif ctes:
            admit = f"WITH {ctes[0]} {admit}"
        got = await self._call("admission", lambda db: db.fetchval(admit, *args))
        if got == -3:
            raise LeaseLost(f"the claim on {held} is no longer this replica's (lost with a "
                            "database crash, or taken over); whoever holds it runs it")
        if ref is not None:
            ref.stored = True
        return {-1: PAUSED, -2: RESOLVED, -4: LOCKED}.get(got, got)

    async def get_state(self, key: str) -> dict[str, Any] | None:
        value = await self._call("read", lambda db: db.fetchval(
            "SELECT value FROM state WHERE key=$1", key))
        return json.loads(value) if value is not None else None

    async def state_and_count(self, key: str, kind: str, event_key: str, since: float
                              ) -> tuple[dict[str, Any] | None, int]:
        row = await self._call("read", lambda db: db.fetchrow(
            "SELECT (SELECT value FROM state WHERE key=$1) AS value, (SELECT count(*) FROM "
            "events WHERE kind=$2 AND key=$3 AND at>=$4) AS n", key, kind, _searched(event_key),
            since))
        return (None if row["value"] is None else json.loads(row["value"])), row["n"]

    async def put_state(self, key: str, value: dict[str, Any] | None, durable: bool = True
                        ) -> None:
        sync = "on" if durable else self._sync_commit  # `_DURABLY`, or as the pool commits
        if value is None:
            await self._exec("journal", f"DELETE FROM state USING {_SYNC.format('$2')} "
                                        "WHERE key=$1", key, sync, turn=False)
        else:
            await self._exec("journal", "INSERT INTO state (key, value) SELECT $1, $2 FROM "
                                        f"{_SYNC.format('$3')} ON CONFLICT (key) DO UPDATE SET "
                                        "value=excluded.value", key, json.dumps(value), sync,
                             turn=False)

    async def drop_state(self, key: str, value: dict[str, Any], durable: bool = True) -> None:
        # As put_state wrote it: the same encoding of the same value is the same text.
        await self._exec("journal", f"DELETE FROM state USING {_SYNC.format('$3')} WHERE "
                                    "key=$1 AND value=$2", key, json.dumps(value),
                         "on" if durable else self._sync_commit, turn=False)

    async def put_states(self, values: dict[str, dict[str, Any] | None],
                         claim: InboxItem | None = None) -> None:
        puts = {key: json.dumps(value) for key, value in values.items() if value is not None}
        held = await self._call("journal", lambda db: db.fetchval(
            _PUT_STATES, None if claim is None else claim.id, self.replica, list(puts),
            list(puts.values()), [key for key, value in values.items() if value is None],
            None if claim is None else claim.claim), turn=False)
        if not held:
            raise LeaseLost(f"the claim on inbox item {claim and claim.id} is no longer this "
                            "one (its lease lapsed and another replica took it over): "
                            "not written")

    async def swap_state(self, key: str, old: dict[str, Any] | None, new: dict[str, Any]
                         ) -> bool:
        # As put_state wrote it: the same encoding of the same value is the same text.
        sql = (f"INSERT INTO state (key, value) SELECT $1, $2 FROM {_DURABLY} ON CONFLICT "
               "(key) DO NOTHING RETURNING 1" if old is None else
               f"UPDATE state SET value=$2 FROM {_DURABLY} WHERE key=$1 AND value=$3 RETURNING 1")
        args = (key, json.dumps(new)) + (() if old is None else (json.dumps(old),))
        return await self._call("journal", lambda db: db.fetchval(sql, *args),
                                turn=False) is not None

    async def list_state(self, prefix: str) -> dict[str, dict[str, Any]]:
        rows = await self._call("read", lambda db: db.fetch(
            "SELECT key, value FROM state WHERE starts_with(key, $1) ORDER BY key", prefix))
        return {r["key"]: json.loads(r["value"]) for r in rows}

    # --- target locks: rows with a lease, renewed by the heartbeat ---------------------------

    async def acquire_lock(self, name: str, holder: str) -> str | None:
        """Take `name` for `holder`; None if taken (or already held), else who holds it."""
        # Taken by the INSERT alone; if not, the holder is read by the same statement (a
        # round trip less for each alert coalesced into a run). That read sees the rows
        # committed before the statement began: a holder that took the lock since is
        # asked for again, as is a lock let go meanwhile (tried once more).
        row = await self._call("lock", lambda db: db.fetchrow(
            "WITH ins AS (INSERT INTO locks AS l (name, holder, owner, lease_until) "
            "VALUES ($1, $2, $3, now() + make_interval(secs => $4)) ON CONFLICT (name) DO UPDATE "
            "SET holder=excluded.holder, owner=excluded.owner, lease_until=excluded.lease_until "
            "WHERE l.lease_until < now() OR l.holder = excluded.holder RETURNING holder) "
            "SELECT (SELECT holder FROM ins) AS taken, "
            "(SELECT holder FROM locks WHERE name=$1) AS current",
            name, holder, self.replica, self.lease))
        if row["taken"] is not None:
            self._leases.holders.add(holder)
            return None
        current = row["current"] or await self._call("lock", lambda db: db.fetchval(
            "SELECT holder FROM locks WHERE name=$1", name))
        return current or await self.acquire_lock(name, holder)

    async def release_locks(self, holder: str) -> None:
        if holder not in self._leases.holders:
            return  # took no lock here (re-taking one keeps the same holder, and so it here)
        # Forgotten first: if the delete fails, the row is no longer renewed and expires.
        self._leases.holders.discard(holder)
        # Only while it is this replica's: a holder is an execution's id, the same on the
        # replica that took the run over (its lease lapsed here: frozen, cut off), whose
        # lock this run's late release deleted while it still changed the target.
        await self._call("lock", lambda db: db.execute(
            "DELETE FROM locks WHERE holder=$1 AND owner=$2", holder, self.replica), fenced=False)


# A snapshot as pg_current_snapshot's text gives it (xids: 64-bit, below 2^63 as xid8 reads).
_SNAPSHOT = re.compile(r"(\d{1,18}):(\d{1,18}):((?:\d{1,18},){0,9999}\d{1,18})?", re.ASCII)


def _snapshot(text: str) -> tuple[str, list[str]] | None:
    """A position's xmax and in-flight xids (as text, xid8's input), or None for text that
    is not one (a browser's cursor is untrusted)."""
    found = _SNAPSHOT.fullmatch(text)
    if found is None or int(found.group(1)) > int(found.group(2)):
        return None
    return found.group(2), found.group(3).split(",") if found.group(3) else []


def _decision(row: asyncpg.Record) -> dict[str, Any]:
    """A decision as read (`PostgresStore._columns`), its journaled steps in it."""
    decision = packing.unpack(row["packed"], row["ref"]) if row["packed"] else json.loads(
        row["body"])
    steps = decision.pop("steps", None)  # a dry-run's, stored with it
    if steps is None:
        bodies = row["steps"] or []
        steps = [_step(b, p) for b, p in zip(bodies, row["psteps"] or [None] * len(bodies),
                                             strict=True)]
    decision["steps"] = steps
    return decision


_STEP_UPSERT = ("ON CONFLICT (execution_id, idx) DO UPDATE SET body=excluded.body, "
                "packed=excluded.packed")


def _stored(step: dict[str, Any]) -> tuple[str | None, bytes | None]:
    """A step record as (body, packed): JSON text if short, else compressed."""
    stored = packing.pack(step, default=str)
    return (stored, None) if isinstance(stored, str) else (None, stored)


def _step(body: str | None, packed: bytes | None) -> dict[str, Any]:
    """A step record: JSON text (short, or written before compression) or compressed."""
    return packing.unpack(packed if packed is not None else body or "")


def _searched(text: str) -> str:
    """A column only searched, never read back (the JSON body holds the value itself), for
    text an alert chose (an alertname, a rate-limit key from labels): PostgreSQL text holds no
    NUL, and an index entry at most ~2700 bytes, so such values are mapped, the same way when
    written and when searched for."""
    text = text.replace("\x00", "\ufffd")
    if len(text.encode()) > 1024:
        return text[:200] + "\u2026sha256:" + hashlib.sha256(text.encode()).hexdigest()
    return text


def _transient(exc: asyncpg.PostgresError) -> bool:
    """Outages and overload (connection, resources, shutdown), and a login refused (28: a
    password rotated under a running replica), not a wrong statement."""
    state = getattr(exc, "sqlstate", "") or ""
    return state[:2] in ("08", "28", "53", "57", "58", "40") or isinstance(
        exc, asyncpg.exceptions.InterfaceError)


async def _count_pending(db: asyncpg.Connection) -> int:
    try:
        return await db.fetchval(
            "SELECT count(*) FROM inbox WHERE state = 'pending' OR state = 'running'")
    except asyncio.CancelledError:
        # Cut off by the scrape's second (a database that hangs, as behind a partition): the
        # connection is closed, not handed back, for the pool waits on a cancelled query's
        # cancellation up to its 10 s timeout before it takes it back (the scrape took 11 s,
        # and a scrape a second held a connection each meanwhile). Closing it also ends the
        # cancel request asyncpg sends on a connection of its own.
        db.terminate()
        raise
