"""A critical section of the PostgreSQL store: a session advisory lock with a lease.

A session advisory lock lives as long as its session, and a replica frozen (SIGSTOP, a VM
paused) or cut off keeps its session while the kernel answers the server's keepalives: every
other replica's maintenance stopped, and approvals answered 503, for as long as it stayed
frozen. The section's session is therefore told to end itself once idle for a lease
(`idle_session_timeout`, `idle_in_transaction_session_timeout`): the server ends a frozen or
cut-off holder's session, and its lock with it, within a lease of its last statement, as a
worker's claims expire. A live holder's heartbeat (a `SELECT 1` every third of the lease,
between its own statements) keeps the session busy enough, however long the section waits
on something else (a sink's answer).

The fence is the session itself: every statement inside the section runs on the lock's
connection (`run`), so a holder woken after its session was ended cannot write there any
more (its statement fails, the section ends in StoreUnavailable), and a statement that did
run ran while the lock was held. A holder also stops sending statements once a lease (less a
second) passed since its last one's answer (`valid_until`): the server may have ended the
session by then.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg

from .base import StoreUnavailable

log = logging.getLogger("remediator.store")
T = TypeVar("T")
# Before a lease has passed: the server ends the session at a lease of idleness counted from
# its last statement's end, this process from that statement's answer, less this margin.
_MARGIN = 1.0
_unbounded_said = False  # a server that cannot end idle sessions (before PostgreSQL 14): said once


class Section:
    """The connection holding a critical section's lock, its statements one at a time."""

    def __init__(self, db: asyncpg.Connection, name: str, lease: float) -> None:
        self.db = db
        self.name = name
        self.lease = lease
        self.valid_until = float("inf")  # until the lock is taken: a statement may wait for it
        self.released = False  # a task made inside the section and run later uses the pool
        self._busy = asyncio.Lock()  # one statement at a time: the heartbeat's or the section's
        self._beat: asyncio.Task[None] | None = None

    async def acquire(self, wait: float) -> None:
        """Bound the session's idleness, then take the lock (waiting up to `wait` seconds:
        a frozen holder's session ends within a lease)."""
        idle = f"{max(1, int(self.lease * 1000))}"
        # One round trip: the session's bounds are set by the statement that takes the lock
        # (a webhook's or an approval's section waits for no extra statement).
        try:
            await self.db.execute(
                "SELECT set_config('idle_session_timeout', $2, false), "
                "set_config('idle_in_transaction_session_timeout', $2, false), "
                "pg_advisory_lock(hashtext($1))", self.name, idle, timeout=wait)
        except asyncpg.UndefinedObjectError as exc:  # PostgreSQL 13: the heartbeat's fence only
            global _unbounded_said
            if not _unbounded_said:
                _unbounded_said = True
                log.warning("PostgreSQL cannot end a frozen replica's session (%s): a replica "
                            "frozen inside a critical section holds it until its connection "
                            "ends; PostgreSQL 14 or later ends it within a lease", exc)
            await self.db.execute(
                "SELECT set_config('idle_in_transaction_session_timeout', $2, false), "
                "pg_advisory_lock(hashtext($1))", self.name, idle, timeout=wait)
        self.valid_until = time.monotonic() - _MARGIN + self.lease
        self._beat = asyncio.get_running_loop().create_task(self._heartbeat(),
                                                            name=f"section-{self.name}")

    async def run(self, fn: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """A statement inside the section, on its lock's connection; refused once the lock
        may have been lost (StoreUnavailable)."""
        async with self._busy:
            if time.monotonic() > self.valid_until:
                raise StoreUnavailable(
                    f"critical section {self.name!r} lapsed (no statement of it answered for "
                    f"a lease of {self.lease:g}s: the database or this process stalled; the "
                    "server may have ended its session): not written")
            result = await fn(self.db)
            # The server counts a lease of idleness from the statement's end, just before its
            # answer came back: a slow statement held the section all along (its session was
            # busy, not idle), a second's margin for the answer's way back.
            self.valid_until = max(self.valid_until, time.monotonic() - _MARGIN + self.lease)
            return result

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.lease / 3)
            try:
                await self.run(lambda db: db.execute("SELECT 1"))
            except Exception as exc:  # the section's own next statement meets it too
                log.debug("critical section %r heartbeat stopped: %s", self.name, exc)
                return

    async def release(self, errors: tuple[type[BaseException], ...]) -> None:
        """Stop the heartbeat and give the lock back. An unlock that fails (`errors`) is
        not the section's failure: what it wrote, it wrote holding the lock, and a session
        that is gone (ended by the server, cut off) took the lock with it; one still open
        is reset, or discarded, when the pool takes it back."""
        if self._beat is not None:
            self._beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._beat
        self.released = True
        try:
            async with self._busy:
                await self.db.execute("SELECT pg_advisory_unlock(hashtext($1))", self.name)
        except errors as exc:
            log.debug("critical section %r: unlock failed (%s); the session's end or reset "
                      "releases it", self.name, exc)

