"""The latest decisions for the console's live streams, read once a tick for all of them.

Each open stream read the latest 50 decisions from the store every second on its own: N
viewers were N readers of the same rows. One poll runs while any stream is open and hands
every stream the same list; each stream still compares it with what it has sent, and
checks its own session at every tick.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator
from typing import Any

from ..store.base import Store

LATEST = 50  # decisions read at each tick


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
