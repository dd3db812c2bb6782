"""Executions running in this process, and the alert episodes that resolved meanwhile.

Two rules live here. One execution never runs twice at once (two approvals, or an
approval and the dispatcher, may both try to resume it). And an alert's resolution cuts
short what its firing run still waits for: the wait in progress is cancelled at once, a
later one is never started, and the run's own `on_resolved` steps wait for the firing run
to stop first, so a revert can never be overtaken by the change it reverts.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field


@dataclass
class _Run:
    """An execution running in this process: its alert episode, set when it stops, and the
    wait its episode's resolution cancels."""

    episode: str
    done: asyncio.Event = field(default_factory=asyncio.Event)
    waiting: asyncio.Task[object] | None = None


class InFlight:
    def __init__(self) -> None:
        self._runs: dict[str, _Run] = {}
        self._resolved: set[str] = set()  # episodes; bounded by the runs that saw them
        self._episodes: dict[str, int] = {}  # runs per episode: `finish` without a scan

    def start(self, execution_id: str, episode: str) -> bool:
        """Claim an execution; False if it is already running in this process."""
        if execution_id in self._runs:
            return False
        self._runs[execution_id] = _Run(episode)
        self._episodes[episode] = self._episodes.get(episode, 0) + 1
        return True

    async def wait(self, execution_id: str) -> None:
        """Until the execution running in this process (if any) has stopped."""
        run = self._runs.get(execution_id)
        if run is not None:
            await run.done.wait()

    def finish(self, execution_id: str) -> None:
        run = self._runs.pop(execution_id, None)
        if run is not None:
            run.done.set()
            left = self._episodes.pop(run.episode) - 1
            if left:
                self._episodes[run.episode] = left
            else:
                self._resolved.discard(run.episode)

    def resolved(self, episode: str) -> bool:
        return episode in self._resolved

    def episode(self, execution_id: str) -> str | None:
        """The alert episode of an execution running in this process."""
        run = self._runs.get(execution_id)
        return run.episode if run is not None else None

    def cut_short(self, episode: str, resolver: str = "") -> list[_Run]:
        """The episode resolved: the wait in progress of each of its runs (but `resolver`'s)
        is cancelled now, a later one never starts; those runs. (`remediator test` calls it
        alone, for a resolution that arrives while a step waits.)"""
        self._resolved.add(episode)
        others = [r for eid, r in self._runs.items() if r.episode == episode and eid != resolver]
        for run in others:
            if run.waiting is not None:
                run.waiting.cancel()
        return others

    async def resolve(self, episode: str, resolver: str, timeout: float) -> None:
        """The episode resolved: cancel its waits, then wait (bounded) for its other runs."""
        if others := self.cut_short(episode, resolver):
            await asyncio.wait([asyncio.ensure_future(r.done.wait()) for r in others],
                               timeout=timeout)

    @contextlib.contextmanager
    def waiting(self, execution_id: str) -> Iterator[None]:
        """Mark the current task as cancellable by its episode's resolution."""
        run = self._runs.get(execution_id)
        if run is not None:
            run.waiting = asyncio.current_task()
        try:
            yield
        finally:
            if run is not None:
                run.waiting = None
