"""Running one step: retries on transient errors only, a per-step deadline, a record.

A call that must not run twice (`Action.repeatable` is false) is retried only when its error
proves the request changed nothing (`actions.base.maybe_applied`); otherwise the step fails as
`uncertain`: it may or may not have taken effect, and the record says what to check. So does
any change whose final failure may have come after it landed (an unexpected answer to it).

The executor never decides what happens next; it returns a StepRecord and the engine reads
its outcome. Runners are swappable so `remediator test` can feed canned results through the
very same path.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from .. import redact
from ..actions.base import Action, ActionContext, ActionError, maybe_applied
from ..alerts import utcnow_iso
from .slots import Slots

if TYPE_CHECKING:
    from ..guards import Block

# A runner performs the action call; the default calls the real backend.
Runner = Callable[[Action, dict[str, Any], ActionContext], Awaitable[dict[str, Any]]]


class Refused(Exception):
    """The intent was refused at the last moment: the call is not made. The step is
    `blocked` by the guard's `block`, or `cancelled` (the alert resolved: no guard)."""

    def __init__(self, block: Block, cancelled: bool = False):
        super().__init__(str(block))
        self.block = block
        self.cancelled = cancelled


async def live_runner(action: Action, params: dict[str, Any], ctx: ActionContext) -> dict:
    return await action.run(params, ctx)


@dataclass
class StepRecord:
    """What one step did (or would have done): recorded in the decision."""

    name: str
    action: str
    params: dict[str, Any]
    outcome: str  # succeeded | failed | planned | skipped | blocked | cancelled | running
    detail: str = ""
    guard: str = ""  # the guard that blocked it
    mutating: bool = False
    uncertain: bool = False  # failed mid-change: it may or may not have taken effect
    result: dict[str, Any] = field(default_factory=dict)
    attempts: int = 0
    started_at: str = ""
    duration_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """What is journaled, shown and templated: secrets (headers, URL credentials) redacted.
        The redaction copies every container already (`dataclasses.asdict` deep-copied each
        value first, every leaf string included, for a copy thrown away). What the engine
        itself sets (the action's registered name, outcome, guard, time, counts) holds none."""
        return {"name": redact.text(self.name), "action": self.action,
                "params": redact.value(self.params), "outcome": self.outcome,
                "detail": redact.text(self.detail), "guard": self.guard,
                "mutating": self.mutating, "uncertain": self.uncertain,
                "result": redact.value(self.result), "attempts": self.attempts,
                "started_at": self.started_at, "duration_seconds": self.duration_seconds}


@dataclass
class Executor:
    """Runs a step's action: deadlines, retries and the bounded call slots."""

    runner: Runner = live_runner
    retry_wait: float = 0.5  # first backoff; doubles up to retry_wait_max
    retry_wait_max: float = 10.0
    slots: Slots | None = None  # bounds concurrent calls; None: unbounded (tests, replay)
    # Steps' starts are stamped on the store's clock, as the rest of their records
    # (`Store.now_iso`: the service sets it).
    now_iso: Callable[[], str] = utcnow_iso

    async def run(self, action: Action, params: dict[str, Any], ctx: ActionContext,
                  record: StepRecord, timeout: float | None, attempts: int,
                  intent: Callable[[], Awaitable[None]] | None = None) -> StepRecord:
        """Run with retries inside one overall deadline (`timeout`, else the action's own
        `deadline`); fill `record` and return it. `intent` (the journal entry saying the call
        is under way) is awaited when a call slot is held, right before each attempt (the
        first journals it; each may find the run no longer this process's, and raise): a
        step still queued for a slot when the process dies never started, so it is simply
        run after a restart instead of being reported as interrupted."""
        timeout = action.deadline(params) if timeout is None else timeout
        record.started_at = self.now_iso()
        started = time.monotonic()
        calling = False  # the deadline can strike inside a call or in a backoff sleep
        failure: BaseException | None = None
        # What made the intent fail (the store, a guard), not the call, which was never made:
        # raised to the caller, never a step failed `uncertain` (a store outage: the alert is
        # processed again; a broken guard: an internal error).
        unjournaled: BaseException | None = None

        async def ready() -> None:
            nonlocal calling, unjournaled
            if intent is not None:
                try:
                    await intent()
                except Refused:
                    raise
                except Exception as exc:
                    unjournaled = exc
                    raise
            calling = True  # stays set if the deadline cancels the call
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout) as deadline:
                while True:
                    record.attempts += 1
                    try:
                        record.result = await self._call(action, params, ctx, ready)
                        break
                    except Exception as exc:
                        failure, calling = exc, False
                        # Retried only while it may be, never sooner than the server asked
                        # (Retry-After); an ask reaching past the deadline fails now rather
                        # than sleep into it.
                        asked = getattr(exc, "retry_after", None)
                        if (isinstance(exc, Refused) or exc is unjournaled
                                or not action.may_retry(params, exc)
                                or record.attempts >= attempts
                                or (asked is not None
                                    and loop.time() + asked >= deadline.when())):
                            raise
                    await _at_least(max(self._backoff(record.attempts), asked or 0.0))
                calling = False
            record.outcome = "succeeded"
            record.detail = action.describe(params).replace("would ", "", 1)
        except Refused as exc:  # at the first attempt, before its call: nothing happened
            record.outcome = "cancelled" if exc.cancelled else "blocked"
            record.guard = "" if exc.cancelled else exc.block.guard
            record.detail = exc.block.detail
            record.attempts, failure = 0, None
        except TimeoutError as exc:
            record.outcome = "failed"
            if deadline.expired():
                record.detail = f"timed out after {timeout:g}s ({record.attempts} attempt(s))"
                failure = exc if calling else failure
            else:  # the action's own timeout, surfaced as a bare TimeoutError
                record.detail = f"TimeoutError: {exc}".rstrip(": ")
        except ActionError as exc:
            record.outcome = "failed"
            record.detail = str(exc)
            if getattr(exc, "retry_after", None) is not None:
                record.detail += f" (the server asked to retry after {exc.retry_after:g}s)"
            record.result = exc.result or record.result
        except Exception as exc:  # an action bug must become a failed step, not a crash
            if exc is unjournaled:
                raise
            record.outcome = "failed"
            record.detail = f"{type(exc).__name__}: {exc}"
        # A change whose last attempt may have landed is in an unknown state, repeatable or
        # not (an idempotent write answered unexpectedly may still have been applied): the run
        # escalates and its `on_resolved` revert stays eligible.
        if (record.outcome == "failed" and failure is not None and action.mutates(params)
                and maybe_applied(failure)):
            record.uncertain = True
            retried = "" if action.repeatable(params) else ", so it was not retried"
            record.detail += (f"; it may or may not have taken effect{retried}: "
                              "check by hand whether this happened: "
                              + action.describe(params).replace("would ", "", 1))
        record.duration_seconds = round(time.monotonic() - started, 4)
        return record

    def _backoff(self, attempts: int) -> float:
        """The wait after `attempts` failed attempts: retry_wait, doubling, at most retry_wait_max."""
        return min(self.retry_wait * 2 ** (attempts - 1), self.retry_wait_max)

    async def _call(self, action: Action, params: dict[str, Any], ctx: ActionContext,
                    ready: Callable[[], Awaitable[None]]) -> dict:
        if self.slots is None:
            await ready()
            return await self.runner(action, params, ctx) or {}
        async with self.slots.hold(action.name) as slot:
            await ready()
            return await self.runner(action, params, replace(ctx, sleep=slot.sleep)) or {}


async def _at_least(seconds: float) -> None:
    """Sleep `seconds` or a little more, never less: uvloop's timers run on a millisecond
    clock read at the start of a loop iteration, and a Retry-After of 1 s was honoured in
    0.999 s (a retry sooner than the server asked)."""
    until = time.monotonic() + seconds
    while (left := until - time.monotonic()) > 0:
        await asyncio.sleep(left)
