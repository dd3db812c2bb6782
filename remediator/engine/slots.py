"""Concurrency: a call holds a slot; an execution that sleeps holds none.

An execution spends most of its life waiting (for a rollout, a metric, a fix to take effect).
Bounding executions let a few such waits queue everything behind them, including a note that
must page a human now. So what is bounded is concurrent calls: `workers` in all, and
`backend_concurrency` per backend (kubernetes, s3, prometheus, ...). An action that waits
between polls sleeps through `ActionContext.sleep`, which gives its slots back meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class Slots:
    def __init__(self, calls: int, per_backend: int):
        self._all = asyncio.Semaphore(calls)
        self._per_backend = per_backend
        self._backends: dict[str, asyncio.Semaphore] = {}

    @contextlib.asynccontextmanager
    async def hold(self, action: str) -> AsyncIterator[Slot]:
        """Hold a slot of the action's backend and a global one for the duration of a call."""
        backend = action.split(".", 1)[0] if "." in action else "core"
        slot = Slot(self._all, self._backends.setdefault(
            backend, asyncio.Semaphore(self._per_backend)))
        await slot.acquire()
        try:
            yield slot
        finally:
            slot.release()


class Slot:
    def __init__(self, everything: asyncio.Semaphore, backend: asyncio.Semaphore):
        self._all, self._backend = everything, backend
        self._held = False

    async def acquire(self) -> None:
        # The backend's first: waiting for a busy backend never blocks the other backends.
        await self._backend.acquire()
        try:
            await self._all.acquire()
        except BaseException:
            self._backend.release()
            raise
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._all.release()
            self._backend.release()

    async def sleep(self, seconds: float) -> None:
        """Sleep between polls without holding a slot another alert needs."""
        self.release()
        try:
            await asyncio.sleep(seconds)
        finally:
            await self.acquire()
