"""The database's clock, as a replica reads it.

Cooldowns, rate limits, circuit breakers and approvals' deadlines compare events that several
replicas recorded, so every replica counts them on the database's clock: a replica whose own
clock ran 45 minutes behind recorded its restart "45 minutes ago", and another replica's
30-minute cooldown let the next one through. A replica reads the clock once at open (the best
of a few readings, before any work is claimed) and then in each lease renewal's own round
trip, and corrects its wall clock by the difference (`offset`). Records are stamped on the
corrected clock too (`now_iso`): a decision that a replica 45 minutes behind made sorted 45
minutes down every replica's history, and the console's live stream never sent it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import asyncpg

from ..alerts import utcnow_iso

log = logging.getLogger("remediator.store")

# The database's clock, as a statement's last column: `SELECT {NOW}` or appended to a query.
NOW = "extract(epoch FROM clock_timestamp())::float8"
# A reading is off by at most half its round trip: a renewal's slower than this (a loop busy
# in a storm) keeps the offset read before.
ROUND_TRIP = 1.0
# An offset past this, or a change of it this large between readings, is logged: guards are
# corrected for it, but a node's (or the database's) clock is wrong or was stepped.
LOGGED = 2.0
_FIRST_READINGS = 3


class DatabaseClock:
    """This replica's offset to the database's clock (0 until read, or if it cannot be)."""

    def __init__(self) -> None:
        self.offset = 0.0
        self.readable = True  # False: the database refuses clock_timestamp() to this role
        self._read = False
        self._metrics: Any = None

    def now(self) -> float:
        return time.time() + self.offset

    def now_iso(self) -> str:
        return utcnow_iso(self.offset)

    def instrument(self, metrics: Any) -> None:
        self._metrics = metrics

    async def first(self, db: asyncpg.Connection,
                    transient: Callable[[asyncpg.PostgresError], bool]) -> None:
        """The reading that work starts from: the best of a few, kept however slow (a later
        jump of the offset would make this replica's own recent changes look older). A
        database that refuses the function leaves the replica on its own clock, said once."""
        try:
            readings = [await read(db, f"SELECT {NOW}") for _ in range(_FIRST_READINGS)]
        except asyncpg.PostgresError as exc:
            if transient(exc):
                raise
            log.warning("cannot read the database's clock (%s): guards count on this node's "
                        "own clock", exc)
            self.readable = False
            return
        self.update(min(readings, key=lambda r: r[2]), first=True)

    def update(self, reading: tuple[float, float, float], first: bool = False) -> None:
        """Take a reading (`read`): (this process's wall clock, the database's, the round
        trip)."""
        local, server, trip = reading
        if trip > ROUND_TRIP and not first:
            return
        offset = server - local
        if self._read and abs(offset - self.offset) > LOGGED:
            log.warning("the database's clock moved %+.1fs against this node's since the last "
                        "reading (a clock stepped, or a failover)", offset - self.offset)
        elif abs(offset) > LOGGED and (not self._read or abs(self.offset) <= LOGGED):
            log.warning("this node's clock is %+.1fs from the database's: guards count on the "
                        "database's; synchronise the node's clock (NTP)", -offset)
        self.offset, self._read = offset, True
        if self._metrics is not None:
            self._metrics.store_clock_offset.set(offset)


async def read(db: asyncpg.Connection, query: str, *args: Any) -> tuple[float, float, float]:
    """Run `query`, whose answer is the database's clock (`NOW`), and read this process's
    around it: the wall clock at the round trip's middle (the round trip timed on the
    monotonic clock: a wall clock stepped meanwhile does not shorten it), the database's,
    the round trip."""
    wall, sent = time.time(), time.monotonic()
    server = await db.fetchval(query, *args)
    trip = time.monotonic() - sent
    return wall + trip / 2, float(server), trip
