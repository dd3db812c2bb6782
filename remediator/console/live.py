"""The latest decisions for the console's live streams, read once a tick for all of them.

Each open stream read the latest 50 decisions from the store every second on its own: N
viewers were N readers of the same rows. One poll runs while any stream is open and hands
every stream the same list; each stream still compares it with what it has sent, and
checks its own session at every tick.

A stream starts from a cursor: the newest decision the page drew (or, on the browser's
reconnection, its `Last-Event-ID`: the newest the stream had sent), in the store's order
(`created_at`, then `id`). Its first read sends what is newer, so a decision recorded between
the page's drawing and the stream's start is not lost; the rest of that read is what the
browser has, compared with at the next ticks. Not replayed: a decision stored after one newer
in that order (a live run's first record rides with its first step's write) and a drawn one
whose outcome changed, both in the gap; the list says to reload after a reconnection.
"""

from __future__ import annotations

import asyncio
import contextvars
import re
from collections.abc import AsyncIterator
from typing import Any

from ..store.base import Store

LATEST = 50  # decisions read at each tick
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


def catch_up(latest: list[dict[str, Any]], after: Key | None
             ) -> tuple[list[dict[str, Any]], dict[str, Any], bool]:
    """Of the latest decisions (newest first): those after the cursor, oldest first (to send
    now); what the browser has (id -> outcome, as the ticks compare); and whether more were
    missed than one read holds (the browser is told to reload). No cursor: nothing is sent,
    the stream starts from now."""
    missed = [d for d in latest if after is not None and key(d) > after]
    seen = {d["id"]: d.get("outcome") for d in latest}
    return missed[::-1], seen, len(missed) >= LATEST


class Feed:
    def __init__(self, store: Store, interval: float = 1.0):
        self.store, self.interval = store, interval
        self._streams = 0
        self._next: asyncio.Future[list[dict[str, Any]]] | None = None
        self._poll: asyncio.Task[None] | None = None

    async def ticks(self) -> AsyncIterator[list[dict[str, Any]]]:
        """The latest decisions, newest first, at each tick for as long as it is iterated; a
        store error at a tick is raised to every stream, as its own read raised it."""
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
        try:
            while self._streams:
                await asyncio.sleep(self.interval)
                tick, self._next = self._next, None
                if tick is None:  # nobody waited for this one
                    continue
                try:
                    tick.set_result(await self.store.list_executions(LATEST))
                except Exception as exc:
                    tick.set_exception(exc)
                    tick.exception()  # retrieved: a stream gone meanwhile may never read it
        finally:
            self._poll = None

    async def close(self) -> None:
        if self._poll is not None:
            self._poll.cancel()
