"""Processing takes turns: one chunk of it per event-loop iteration, so intake never waits
behind more than one.

Everything runs on one event loop, and a webhook's 202 needs a few iterations of it (read,
commit, answer), each of which runs every callback ready in it. A decision is ~1 ms of CPU,
cut into chunks at its store calls; a commit used to resume a handful of executions at once
and the dispatcher to start a handful more, so an acknowledgement waited behind all of their
chunks in each of its iterations (p99 25 ms in a storm). Now processing code takes a turn
(`await take()`) after each of its store calls and before it starts an alert, and one turn
is granted per iteration: an iteration carries intake's work and at most one chunk of
processing's, whatever the backlog. Processing still moves on every iteration (a storm
never starves it); when intake is idle, the extra iterations cost microseconds a chunk.
Intake never takes a turn.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import deque


class Turns:
    """A FIFO of processing chunks, released one per loop iteration."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._scheduled = False
        self.granted = 0  # turns granted so far (tests count them)

    async def take(self) -> None:
        future = self._loop.create_future()
        self._waiting.append(future)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._grant)
        await future

    def _grant(self) -> None:
        # The waiter resumes in the next iteration, when this runs again for the one after.
        while self._waiting:
            future = self._waiting.popleft()
            if not future.done():  # a waiter cancelled meanwhile (shutdown) gives its turn on
                future.set_result(None)
                self.granted += 1
                break
        self._scheduled = bool(self._waiting)
        if self._scheduled:
            self._loop.call_soon(self._grant)


_turns: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Turns] = weakref.WeakKeyDictionary()


def turns() -> Turns:
    """The running loop's turns (one queue per loop: tests run many loops)."""
    loop = asyncio.get_running_loop()
    found = _turns.get(loop)
    if found is None:
        found = _turns[loop] = Turns(loop)
    return found


async def take() -> None:
    """Wait for processing's turn; call it before each chunk of processing work."""
    await turns().take()
