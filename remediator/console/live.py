"""What changed in the store for the console's live streams, read once a tick for all of them.

Each open stream read the latest 50 decisions from the store every second on its own: N
viewers were N readers of the same rows. One poll runs while any stream is open and hands
every stream the same read; each stream still compares it with what it has sent, and checks
its own session at every tick.

A stream starts from a cursor: the newest decision the page drew (or, on the browser's
reconnection, its `Last-Event-ID`: the newest the stream had sent), in the store's order
(`created_at`, then `id`). Its first read (the latest 50 by creation) sends what is newer, so
a decision recorded between the page's drawing and the stream's start is not lost, and the
rest of that read as well: the browser drew those before the cursor with the outcomes they
had then (a run that finished, an approval decided, while the page loaded or the stream was
down), or lacks one stored after one newer in that order (a live run's first record rides
with its first step's write). The list draws again only a row whose outcome differs.

Each tick then reads the decisions whose record was written since the last read (by the
store's `updated_at`, `Store.list_updated`), however old they are: the latest 50 by creation
never held an older one's change (an approval answered, a run ending long after it began),
which the list showed as it was until a reload. The read reaches back `OVERLAP` seconds past
the last one: a record is stamped before its commit (a group commit, a pool's wait), so one
stamped before a read may land after it; what a stream already sent as it is, it does not
send again.

A read holds 50: when more than that changed since what the stream last read, at its start
or between two ticks (a storm), the rest is never sent, and the stream says so (`gap`: the
list asks for a reload) rather than leave a list that looks whole (`Stream`).
"""

from __future__ import annotations

import asyncio
import contextvars
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ..store.base import Store

LATEST = 50  # decisions read at the stream's start, and at each tick
# How far back past the last read a tick's read reaches (seconds): longer than a record
# waits between its stamp and its commit (a write waits 5 s for a SQLite lock, at most).
OVERLAP = 10.0
Key = tuple[str, str]
BEFORE: Key = ("", "")  # before every decision: the cursor of a page that drew none
# A cursor is untrusted (a query string, a header): its time as `utcnow_iso` writes
# `created_at`, and an id of the characters executions' ids are made of.
_CURSOR = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?Z)?/([\w.:-]{0,128})",
                     re.ASCII)


def key(decision: dict[str, Any]) -> Key:
    """Where a decision sits in the store's order, newest last."""
    return str(decision.get("created_at") or ""), str(decision["id"])


def cursor(at: Key) -> str:
    """A key as a cursor; empty for one a stored record made unfit for an event's id line."""
    text = f"{at[0]}/{at[1]}"
    return text if _CURSOR.fullmatch(text) else ""


def parse(text: str) -> Key | None:
    """The key a cursor names, or None when it is not one."""
    found = _CURSOR.fullmatch(text)
    return (found.group(1) or "", found.group(2)) if found else None


def _beyond(latest: list[dict[str, Any]], mark: Key) -> bool:
    """Whether more decisions came after `mark` than the read `latest` (newest first) holds:
    it is full and even its oldest is newer, so what lies between was never read. A read that
    holds the mark, or is not full (all there is), holds every one after it. A read of exactly
    LATEST new ones says so too: it cannot tell them from more."""
    return len(latest) >= LATEST and key(latest[-1]) > mark


@dataclass(frozen=True)
class Tick:
    """One read of what changed: `changed`, the decisions written at or after `since`, the
    latest written first, each with its `updated_at` (at most LATEST); `read_at`, the store's
    time just before the read (what was committed by then is in it, or the read is full)."""

    changed: list[dict[str, Any]]
    since: str
    read_at: str


def earlier(at: str, seconds: float) -> str:
    """A time as `utcnow_iso` writes it (the stores' stamps), `seconds` before."""
    then = datetime.strptime(at, "%Y-%m-%dT%H:%M:%S.%fZ") - timedelta(seconds=seconds)
    return then.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Stream:
    """What one stream's browser has, and what it is sent at its start (`read`) and at each
    tick (`changes`).

    It starts from the first read and the cursor (None: from now, nothing sent). Each read
    gives the decisions it holds that are new or changed, oldest first, each with its event's
    id (the newest the browser then has), and whether more came than it holds (the browser is
    told to reload). What it remembers is the last read: a stream open for days holds no
    more than a read (it kept every id it ever sent: an open tab's memory grew with each
    decision)."""

    def __init__(self, latest: list[dict[str, Any]], after: Key | None, started: str):
        # The browser has the page up to its cursor, else everything read now.
        self.mark = after if after is not None else key(latest[0]) if latest else BEFORE
        # id -> outcome, compared with the next read: those the browser has as they are now.
        # From a cursor, none is known to be: the first read sends all it holds.
        self.seen = {} if after is not None else {d["id"]: d.get("outcome") for d in latest}
        # The store's time up to which every change was read (the start read's, then each
        # tick's `read_at`).
        self.read_to = started

    def read(self, latest: list[dict[str, Any]]
             ) -> tuple[list[tuple[str, dict[str, Any]]], bool]:
        """The start's read (the latest by creation, newest first): past a read's worth after
        the cursor, the rest was never read."""
        gap = _beyond(latest, self.mark)  # from the cursor, before it moves
        return self._send(latest), gap

    def changes(self, tick: Tick) -> tuple[list[tuple[str, dict[str, Any]]], bool]:
        """A tick's read: a gap when changes since this stream's last read may lie outside it
        (the read is full and even its earliest is later; or it began after that, for a
        stream that missed reads)."""
        changed = tick.changed
        gap = tick.since > self.read_to or (
            len(changed) >= LATEST and str(changed[-1].get("updated_at", "")) > self.read_to)
        self.read_to = max(self.read_to, tick.read_at)
        return self._send(sorted(changed, key=key, reverse=True)), gap

    def _send(self, read: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
        """Those of `read` (newest first by creation) the browser lacks as they are, oldest
        first; `read` is what is remembered."""
        sent = []
        for d in reversed(read):
            if d["id"] not in self.seen or self.seen[d["id"]] != d.get("outcome"):
                self.mark = max(self.mark, key(d))
                sent.append((cursor(self.mark), d))
        self.seen = {d["id"]: d.get("outcome") for d in read}
        return sent


class Feed:
    def __init__(self, store: Store, interval: float = 1.0):
        self.store, self.interval = store, interval
        self._streams = 0
        self._next: asyncio.Future[Tick] | None = None
        self._poll: asyncio.Task[None] | None = None

    async def ticks(self) -> AsyncIterator[Tick]:
        """What changed, at each tick for as long as it is iterated; a store error at a tick
        is raised to every stream, as its own read raised it."""
        self._streams += 1
        try:
            while True:
                if self._next is None:
                    self._next = asyncio.get_running_loop().create_future()
                if self._poll is None:  # in a context of its own, not the first stream's
                    self._poll = asyncio.create_task(self._run(), name="console-feed",
                                                     context=contextvars.Context())
                # Shielded: a stream that ends (its browser gone) cancels its own wait, not
                # the tick every other stream waits for.
                yield await asyncio.shield(self._next)
        finally:
            self._streams -= 1

    async def _run(self) -> None:
        # From before the streams' own start reads (they are made before they wait on it).
        read_to = self.store.now_iso()
        try:
            while self._streams:
                await asyncio.sleep(self.interval)
                tick, self._next = self._next, None
                if tick is None:  # nobody waited for this one
                    continue
                read_at, since = self.store.now_iso(), earlier(read_to, OVERLAP)
                try:
                    changed = await self.store.list_updated(since, LATEST)
                except Exception as exc:
                    tick.set_exception(exc)
                    tick.exception()  # retrieved: a stream gone meanwhile may never read it
                else:
                    tick.set_result(Tick(changed, since, read_at))
                    read_to = read_at
        finally:
            self._poll = None

    async def close(self) -> None:
        if self._poll is not None:
            self._poll.cancel()
