"""Processing takes turns: one chunk of it per event-loop iteration, so intake never waits
behind more than one; and while a webhook is being answered, at most a share of the loop's
time.

Everything runs on one event loop, and a webhook's 202 needs a few iterations of it (read,
commit, answer), each of which runs every callback ready in it. A decision is ~1 ms of CPU,
cut into chunks at its store calls; a commit used to resume a handful of executions at once
and the dispatcher to start a handful more, so an acknowledgement waited behind all of their
chunks in each of its iterations (p99 25 ms in a storm). Now processing code takes a turn
(`await take()`) after each of its store calls and before it starts an alert, and one turn
is granted per iteration: an iteration carries intake's work and at most one chunk of
processing's, whatever the backlog. Intake never takes a turn; nor does the write that
finishes an alert (only its decision's log line follows: that is `charge`d instead).

One chunk per iteration still gave processing most of the loop in a storm: an intake
iteration is ~0.1 ms, a chunk up to a millisecond, so webhooks were answered at 0.2x a bare
handler's rate, and each waited behind several chunks. So each chunk is timed (from its
task's resumption in `take` to a callback scheduled right after its step, which grants the
next turn: nothing runs between them), and while a
webhook is in flight (`intake()`) the next turn waits until the rest of the loop's work has
had its share of the CPU: processing's is at most `SHARE` of it (a 1 ms chunk is followed by
3 ms for intake), unless the loop idles meanwhile. Processing still moves in a storm (it is
never starved) and, once no webhook is in flight, takes a turn per iteration again: what the
storm deferred is decided right after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

# Processing's share of the loop's time while webhooks are in flight.
SHARE = 0.25
# A chunk that has run this long (CPU) takes a turn where it could go on (`held`): a webhook
# arriving meanwhile waits for all of it. A dry run's plan, note and record in one chunk made
# a storm's 99th percentile chunk ~30 % longer (drain_bench: 555-680 against 440 us); cut
# here, it is as long as with a turn before every record (380-420 us), at 1.9 turns per
# decision against 2.5.
SLICE = 0.0002
# A dry run's plan and note continue their chunk, but not past this (CPU): a playbook's first
# alerts ran steps and notes of 1-10 ms each in one chunk (its texts compiled, its actions'
# modules imported; templating.compile_ahead takes the compiling apart). Past SLICE instead,
# a routine plan's chunk took a turn before its note too (drain_bench, three alternated pairs
# at load average 3: 427-512 us of CPU per decision against 397-448).
LONG = 0.001
# How long after an answer intake still counts as busy: a storm's connections send their next
# request at once, but between answers none is in flight (turns taken there went unpaced).
RECENT = 0.002


class Turns:
    """A FIFO of processing chunks, released one per loop iteration, and paced to `SHARE`
    of the loop's time while intake is busy."""

    def __init__(self, loop: asyncio.AbstractEventLoop,
                 clock: Callable[[], float] = time.perf_counter,
                 cpu: Callable[[], float] = time.thread_time) -> None:
        self._loop = loop
        self._clock, self._cpu = clock, cpu  # wall time; the loop's thread's CPU time
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._scheduled = False
        self._chunk = (0.0, 0.0, 0.0)  # the last chunk: its length, when it ended (both clocks)
        self._open = False  # a chunk is running: from its task's resumption to `_after`
        self._timer: asyncio.TimerHandle | None = None  # a turn deferred for intake
        self._charged = 0.0  # processing's work outside its chunks since the last one ended
        self.intake = 0  # webhooks being answered now
        self.answered_at = 0.0  # when the last one was answered (wall clock)
        self.granted = 0  # turns granted so far (tests count them)
        self.deferred = 0  # turns put off for intake (tests count them)
        self._webhook = _IntakeBusy(self)
        self._idle: list[Callable[[], None]] = []  # called once none is `ready()`
        # bound once: a bound method made for each call_soon of every turn
        self._grant_cb, self._after_cb = self._grant, self._after

    async def take(self) -> None:
        future = self._loop.create_future()
        self._waiting.append(future)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._grant_cb)
        try:
            await future
        finally:
            if not future.cancelled():  # granted: the chunk starts now, its task resumed
                # (a call each for this, `_end` and `_busy` were a fifth of a turn's Python)
                self._chunk = (0.0, self._clock(), self._cpu())
                self._open = True

    def held(self, limit: float | None = None) -> bool:
        """The code running now is still in the chunk its turn began (its task has not
        yielded to the loop since `take` returned: `_after` ends the chunk right after that
        task's step, and nothing else runs between them), and it has run for less than
        `limit` (`SLICE`) of CPU: a turn taken now would only split work that nothing waited
        between."""
        return self._open and self._cpu() - self._chunk[2] < (SLICE if limit is None else limit)

    def ready(self) -> bool:
        """Chunks are queued and granted in the coming iterations (not held back for intake)."""
        return bool(self._waiting) and self._timer is None

    def when_idle(self, callback: Callable[[], None]) -> None:
        """Call `callback` once, when no chunk is `ready()` any more (none queued, or turns
        held back for intake): the store's processing writes wait for more until then."""
        self._idle.append(callback)

    def charge(self, seconds: float) -> None:
        """Processing's work done outside its chunks (its statements in a group commit):
        it counts toward processing's share, not intake's."""
        self._charged += seconds

    def quiet(self, seconds: float) -> bool:
        """No webhook in flight, nor answered for `seconds`."""
        return not self.intake and self._clock() - self.answered_at >= seconds

    def intake_busy(self) -> contextlib.AbstractContextManager[None]:
        return self._webhook

    def _answered(self) -> None:
        self.intake -= 1
        self.answered_at = self._clock()
        if not self.intake and self._timer is not None:  # look again now, not at the timer
            self._timer.cancel()
            self._timer = None
            self._loop.call_soon(self._grant_cb)

    def _grant(self) -> None:
        self._timer = None
        # intake busy: a webhook in flight, or one answered within RECENT
        if (self.intake or self._clock() - self.answered_at < RECENT) and \
                self._intake_time() > 0:  # ask again once intake had its time, or the loop idled
            self.deferred += 1
            # 1 ms whatever the wait: asyncio's epoll waits at least that; uvloop rounds a
            # shorter delay to 0 and the loop spun re-arming it (75 % of a core, a 0.1 ms
            # chunk beside a webhook in flight). A webhook's I/O wakes the loop sooner.
            self._timer = self._loop.call_later(0.001, self._grant_cb)
            self._idled()
            return
        # The waiter resumes in the next iteration, and `_after` runs right after its step:
        # the chunk is timed from its resumption (in `take`) to there, where the next turn
        # is granted, for the iteration after (one callback per turn, besides the wakeup).
        while self._waiting:
            future = self._waiting.popleft()
            if not future.done():  # a waiter cancelled meanwhile (shutdown) gives its turn on
                future.set_result(None)
                self._loop.call_soon(self._after_cb)
                self.granted += 1
                return
        self._scheduled = False
        if self._idle:
            self._idled()

    def _after(self) -> None:
        cpu = self._cpu()  # the chunk ends
        self._chunk = (cpu - self._chunk[2], self._clock(), cpu)
        self._charged = 0.0
        self._open = False
        if self._waiting:
            self._grant()
        else:
            self._scheduled = False
            if self._idle:
                self._idled()

    def _idled(self) -> None:
        if self._idle:
            callbacks, self._idle = self._idle, []
            for callback in callbacks:
                callback()

    def _intake_time(self) -> float:
        """How much more of the loop's CPU the other work (intake) is due before the next
        chunk; 0 if it had that, or if the loop idled as long as the chunk took (webhooks
        waiting for a PostgreSQL commit leave it idle: holding processing back then only
        lost its time, a third of its decisions per second)."""
        took, wall, cpu = self._chunk
        busy, idle = self._cpu() - cpu, self._clock() - wall
        idle -= busy
        took, busy = took + self._charged, busy - self._charged
        return 0.0 if idle >= took else max(0.0, took * (1 - SHARE) / SHARE - busy)



_turns: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Turns] = weakref.WeakKeyDictionary()


_last: Turns | None = None  # the last one looked up (a weak mapping's lookup, per take, cost)


class _IntakeBusy:
    """A webhook in flight, as a context manager: a class, where a generator's was ~1 us of
    every webhook."""

    __slots__ = ("_turns",)

    def __init__(self, turns: Turns) -> None:
        self._turns = turns

    def __enter__(self) -> None:
        self._turns.intake += 1

    def __exit__(self, *exc_info: object) -> None:
        self._turns._answered()


def turns() -> Turns:
    """The running loop's turns (one queue per loop: tests run many loops)."""
    global _last
    loop = asyncio.get_running_loop()
    last = _last  # read once: another thread's loop may rebind it meanwhile
    if last is not None and last._loop is loop:
        return last
    found = _turns.get(loop)
    if found is None:
        found = _turns[loop] = Turns(loop)
    _last = found
    return found


def take() -> Coroutine[Any, Any, None]:
    """Wait for processing's turn (`await take()`); call it before each chunk of processing
    work. Turns.take's own coroutine: one frame less to create and resume at every turn."""
    return turns().take()


def held(limit: float | None = None) -> bool:
    """The running loop's `Turns.held`."""
    return turns().held(limit)


def intake() -> contextlib.AbstractContextManager[None]:
    """Mark a webhook in flight (from its handler's start to its answer): processing's turns
    keep to their share of the loop meanwhile."""
    return turns().intake_busy()
