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

Each tick then reads the decisions whose record was committed since the last read, however
old they are (`Store.changes`, from the position the last read reached): the latest 50 by
creation never held an older one's change (an approval answered, a run ending long after it
began). Positions are in commit order, not the records' stamps: a read by `updated_at`,
reaching 10 s back, missed a record committed later than that after its stamp (a long
transaction, a slow commit in a storm) and the list kept its old outcome with no word.

A stream keeps the position up to which its browser has every change, and sends it (each
event's id, and an `at` event after each tick): a stream opened again (a tab shown again, a
reconnection) goes on from it, and its first tick reads what changed since on its own, as a
stream that joins between two ticks or missed one does. A read holds 50: when more than that
changed (a storm between two ticks; a tab hidden through one), the rest is never sent, and
the stream says so (`gap`: the list asks for a reload, and one shown again reloads itself)
rather than leave a list that looks whole (`Stream`).
"""

from __future__ import annotations

import asyncio
import contextvars
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from ..store.base import Store

LATEST = 50  # decisions read at the stream's start, and at each tick
Key = tuple[str, str]
BEFORE: Key = ("", "")  # before every decision: the cursor of a page that drew none
# A cursor is untrusted (a query string, a header): its time as `utcnow_iso` writes
# `created_at`, an id of the characters executions' ids are made of, and after `@` the
# store's position (digits, `:` and `,`: the store checks it, `Store.changes`).
_CURSOR = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?Z)?/([\w.:-]{0,128})"
                     r"(?:@([\d:,]{1,200000}))?", re.ASCII)


def key(decision: dict[str, Any]) -> Key:
    """Where a decision sits in the store's order, newest last."""
    return str(decision.get("created_at") or ""), str(decision["id"])


def cursor(at: Key, position: str = "") -> str:
    """A key (and the store's position) as a cursor; empty for one a stored record made unfit
    for an event's id line."""
    text = f"{at[0]}/{at[1]}" + (f"@{position}" if position else "")
    return text if _CURSOR.fullmatch(text) else ""


def parse(text: str) -> tuple[Key, str | None] | None:
    """The key and the position (None: none given) a cursor names, or None when it is not
    one."""
    found = _CURSOR.fullmatch(text)
    return ((found.group(1) or "", found.group(2)), found.group(3)) if found else None


def _beyond(latest: list[dict[str, Any]], mark: Key) -> bool:
    """Whether more decisions came after `mark` than the read `latest` (newest first) holds:
    it is full and even its oldest is newer, so what lies between was never read. A read that
    holds the mark, or is not full (all there is), holds every one after it. A read of exactly
    LATEST new ones says so too: it cannot tell them from more."""
    return len(latest) >= LATEST and key(latest[-1]) > mark


@dataclass(frozen=True)
class Tick:
    """One read of what changed: `changed`, the decisions committed after position `since`
    (at most LATEST + 1: more than a read sends; None: unknown, `since` is no position of the
    store's), up to position `at`."""

    changed: list[dict[str, Any]] | None
    since: str
    at: str


async def read(store: Store, since: str | None) -> Tick:
    """What changed since `since` (None: nothing read, the position now)."""
    changed, at = await store.changes(since, LATEST + 1)
    return Tick(changed, since or at, at)


class Stream:
    """What one stream's browser has, and what it is sent at its start (`read`) and at each
    tick (`changes`).

    It starts from the first read and the cursor (None: from now, nothing sent), and from
    the position up to which the browser has every change (the cursor's, else the store's
    now). Each read gives the decisions it holds that are new or changed, oldest first, each
    with its event's id (the newest the browser then has, and the position before the read:
    the browser may not have all of it yet), and whether more came than it holds (the
    browser is told to reload). What it remembers is the last read: a stream open for days
    holds no more than a read (it kept every id it ever sent: an open tab's memory grew with
    each decision)."""

    def __init__(self, latest: list[dict[str, Any]], after: Key | None, at: str):
        # The browser has the page up to its cursor, else everything read now.
        self.mark = after if after is not None else key(latest[0]) if latest else BEFORE
        # id -> outcome, compared with the next read: those the browser has as they are now.
        # From a cursor, none is known to be: the first read sends all it holds.
        self.seen = {} if after is not None else {d["id"]: d.get("outcome") for d in latest}
        self.at = at  # the position up to which the browser has every change

    def read(self, latest: list[dict[str, Any]]
             ) -> tuple[list[tuple[str, dict[str, Any]]], bool]:
        """The start's read (the latest by creation, newest first): past a read's worth after
        the cursor, the rest was never read."""
        gap = _beyond(latest, self.mark)  # from the cursor, before it moves
        return self._send(latest), gap

    async def changes(self, tick: Tick, store: Store
                      ) -> tuple[list[tuple[str, dict[str, Any]]], bool]:
        """A tick's read, or this stream's own from its position when the tick's began
        elsewhere (it joined between two ticks, missed one, or opened again from its
        browser's): it reaches past the tick's end, which the next tick starts from (what
        it reads twice is sent once). A gap when more changed than a read holds, or what
        changed is unknown."""
        if tick.since != self.at:
            tick = Tick((await read(store, self.at)).changed, self.at, tick.at)
        changed = tick.changed
        gap = changed is None or len(changed) > LATEST
        changed = sorted((changed or [])[:LATEST], key=key, reverse=True)
        self.at = tick.at
        return self._send(changed, tick.since), gap

    def cursor(self) -> str:
        """The event id of what the browser has now: the newest decision and the position."""
        return cursor(self.mark, self.at)

    def _send(self, read: list[dict[str, Any]], before: str | None = None
              ) -> list[tuple[str, dict[str, Any]]]:
        """Those of `read` (newest first by creation) the browser lacks as they are, oldest
        first; `read` is what is remembered. Their ids carry the position `before` the read
        (the stream's, by default)."""
        sent = []
        for d in reversed(read):
            if d["id"] not in self.seen or self.seen[d["id"]] != d.get("outcome"):
                self.mark = max(self.mark, key(d))
                sent.append((cursor(self.mark, before or self.at), d))
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
        at: str | None = None  # read at the first tick: the streams read from their own
        try:
            while self._streams:
                await asyncio.sleep(self.interval)
                tick, self._next = self._next, None
                if tick is None:  # nobody waited for this one
                    continue
                try:
                    read_ = await read(self.store, at)
                except Exception as exc:
                    tick.set_exception(exc)
                    tick.exception()  # retrieved: a stream gone meanwhile may never read it
                else:
                    tick.set_result(read_)
                    at = read_.at
        finally:
            self._poll = None

    async def close(self) -> None:
        if self._poll is not None:
            self._poll.cancel()
