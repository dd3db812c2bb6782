"""Guards: what stops automation from hurting. Each check has a name and says its numbers.

Execution-level guards run once before any step (pause, time window, circuit breaker, lock,
precondition); mutation-level guards run before every mutating step (pause, scope, approval,
rate limit, cooldown, global budget). Counters, circuit/approval state and target locks live
in the store, so they survive restarts and hold across replicas; a target lock lasts only
while its process lives (in memory on SQLite, a lease on PostgreSQL), because a lock that
outlived a crashed process would block its target forever.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from . import templating
from .actions.base import parse_duration
from .actions.registry import ACTIONS, BUILTIN
from .alerts import Alert
from .playbooks.models import Playbook, Step
from .store.base import (
    LOCKED,
    PAUSE,
    PAUSED,
    RESOLVED,
    Entry,
    Event,
    InboxItem,
    Limit,
    Store,
)

log = logging.getLogger("remediator.guards")

SYSTEM_NAMESPACES = ("kube-system", "kube-public", "kube-node-lease")
# An approval that will never come: the guard that says so, and why.
_DECIDED = {"rejected": ("approval_denied", "approval rejected{by}"),
            "expired": ("approval_expired", "approval expired before anyone approved"),
            "resolved": ("approval_withdrawn", "the alert resolved before anyone approved"),
            # given, but its run was stranded, and the maintenance pass finished it instead
            # (`engine.approvals.finish_stranded`): it expired unused
            "lapsed": ("approval_expired", "approved{by}, but never acted on: its run was "
                                           "not resumed, and the maintenance pass finished "
                                           "it without it")}
# Approval state per step, `<prefix><execution_id>:<step>`; the pending ones are also indexed
# under their own prefix, so expiry and withdrawal never read the history.
APPROVAL, PENDING = "approval:", "approval-pending:"
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# How long a run waits for another playbook's run to finish changing its target, before it
# escalates instead (the holder's own steps are bounded by their deadlines).
LOCK_WAIT = 600.0


class UnmadeKey(Exception):
    """A rate limit's `key` template that the alert cannot make (a label it lacks, or empty)."""


@dataclass(frozen=True)
class Block:
    """Why a guard refused a run (or a step), and whether that escalates."""

    guard: str
    detail: str
    escalate: bool = True

    def __str__(self) -> str:
        return f"{self.guard}: {self.detail}"


# Not a guard: the alert resolved before its mutation could start, so it is not run.
RESOLVED_BLOCK = Block("resolved", "not run: the alert's resolution had already been received",
                       escalate=False)


@dataclass
class GuardContext:
    """One run's view for its guards: the playbook, the alert and the target."""

    playbook: Playbook
    alert: Alert
    execution_id: str
    mode: str
    target: str | None = None
    # the dedupe key of the inbox item the run holds: an admission checks the claim is still
    # this process's in the store (`Store.admit`)
    claimed: str | None = None
    # (the PAUSE state,) as read with the execution's record: the run-level pause check
    # uses it once instead of reading it again (nothing waited in between)
    pause: tuple[dict[str, Any] | None] | None = None
    # The objects this alert's steps with a `target:` of their own change (rendered for
    # it): an alert is coalesced into a run only if that run changes the same ones.
    step_targets: tuple[str, ...] = ()
    # Processed again (after a crash, an approval, a record the store refused): its journal is
    # read, and a success it recorded before its note may be counted already (`_counted`).
    resumed: bool = False
    # Interrupted after it changed something (journaled): its run-level guards decided
    # whether to start acting, and it did; judged again, a pause or a precondition the change
    # made false stopped it as if it had not run (`before_execution`). (A run resumed by an
    # approval is judged again: it has not acted since, and its change may have fixed the
    # problem.)
    changed: bool = False
    # ... and a mutating step of it is not journaled yet: that change is judged by the
    # pause, the time window and an open circuit before it is made (`before_execution`).
    to_change: bool = False
    # A resolution's `on_resolved` undoing what its own episode's firing run changed on this
    # target (the engine read that run's journal: `approvals.changed`; a dry run assumes it,
    # as live runs it only then): the target it restores. The cooldown does not hold it back
    # (`_cooldown`), whoever changed the target since; it is still a change of the target.
    reverts: str | None = None

    @property
    def remedy(self) -> tuple[str, ...]:
        """What the run changes, besides its target: one remedy, one run at a time."""
        return (self.playbook.name, *self.step_targets)

    @property
    def circuit(self) -> str:
        """A circuit is one playbook on one target: another playbook's repeated successes
        on the same object say nothing about whether this one works."""
        return f"{self.playbook.name}:{self.target}"

    @property
    def episode(self) -> str:
        """The alert episode: the same for its firing and its resolution."""
        return f"{self.alert.fingerprint}:{self.alert.starts_at}"

    @property
    def namespace(self) -> str:
        parts = (self.target or "").split("/")
        return parts[0] if len(parts) == 3 else ""


@dataclass
class GuardSettings:
    """Process-wide guard settings (config `guards:`); playbooks add their own."""

    paused: bool = False
    namespaces_allow: list[str] = field(default_factory=list)  # empty: all but denied
    namespaces_deny: list[str] = field(default_factory=lambda: list(SYSTEM_NAMESPACES))
    buckets_allow: list[str] = field(default_factory=list)  # empty: no S3 mutation allowed
    compose_projects_allow: list[str] = field(default_factory=list)  # empty: no Docker change
    http_allow: list[str] = field(default_factory=list)  # hosts (host or host:port) for a
    # mutating http.request (empty: none; reads go anywhere the URL validator lets them)
    # Roots under which evidence.bundle may write a directory (empty: none).
    evidence_directories: list[str] = field(
        default_factory=lambda: ["/var/lib/remediator/evidence"])
    budget_max: int = 30  # mutating actions across all playbooks ...
    budget_window: float = 3600.0  # ... per this many seconds
    approval_ttl: float = 3600.0


# Answers a precondition: (promql or None, alert, check it is still firing) -> (holds, why);
# holds is None when it could not be checked.
PreconditionCheck = Callable[[str | None, Alert, bool], Awaitable[tuple[bool | None, str]]]


class Guards:
    def __init__(self, store: Store, settings: GuardSettings | None = None,
                 clock: Callable[[], float] = time.time,
                 precondition: PreconditionCheck | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep):
        self.store = store
        self.settings = settings or GuardSettings()
        self.clock = clock
        self.sleep = sleep  # with `clock`, what `remediator test` replaces by a fake clock
        self.precondition = precondition
        # The remedy (`GuardContext.remedy`) of each run holding a target lock in this
        # process: another alert of the same one is coalesced into it; any other waits.
        self._locked_by: dict[str, tuple[str, ...]] = {}
        # (target, playbook) -> its one waiter's execution and remedy
        self._waiting: dict[tuple[str, str], tuple[str, tuple[str, ...]]] = {}

    # --- execution level ---------------------------------------------------------------

    async def before_execution(self, gc: GuardContext, resolving: bool = False) -> Block | None:
        """The run-level guards; a resolution's revert passes them all but the precondition
        (which asks whether the alert still fires: it no longer does, by definition)."""
        checks = (self._paused, self._time_window, self._circuit, self._lock,
                  self._circuit_held, self._precondition)
        if resolving:  # nor does a revert trip the circuit: only a new firing counts
            checks = (self._paused, self._time_window, self._circuit_open, self._lock,
                      self._circuit_open_held)
        if gc.changed:
            # Interrupted after its change (a final record refused, a crash): these guards
            # let it start, and it acted. Judged again, a pause or a window closed since
            # recorded 'blocked: nothing runs', its target let go and its success never
            # counted. It only takes its target again; a change still to make is admitted
            # under the pause (`admit`), as any is. One still to make is judged by the
            # window and an open circuit too: processed again after an outage or a restart,
            # maybe hours on, it was made outside its window, or with its circuit open.
            checks = (self._paused, self._time_window, self._circuit_open, self._lock,
                      self._circuit_open_held) if gc.to_change else (self._lock,)
        for check in checks:
            block = await check(gc)
            if block is not None:
                if gc.changed:  # stopped halfway: a human must know
                    return replace(block, escalate=True, detail=(
                        f"{block.detail}; stopped after its first changes, which stay in "
                        "place; its later changes did not run"))
                return block
        return None

    async def after_execution(self, gc: GuardContext, outcome: str,
                              note: bool = False) -> list[Event]:
        """Release the target; return the events to record with the final decision (a
        success, which the circuit counts): in the same write, so a crash never counts one
        twice (before it, when a note is delivered first: Records.finish). That write is
        durable, as an admission is: the circuit lets the next run change the target on
        this count, and a success lost with a database crash (the final write committing
        asynchronously, like the rest of the journal) let one run more than `max_refires`
        through. Only live successes with a target, the rare writes, wait for the flush.
        With a success the target stays held until it is recorded (the engine releases
        it then): let go first, another firing decided meanwhile found the circuit one
        short and the target free, and ran once more than `max_refires` allows.
        A run with a `note` processed again (after a crash, or a final record the store
        refused) may have counted its success already, before its note: counted at each
        attempt, it opened the circuit on a remediation made once."""
        if outcome == "succeeded" and gc.mode == "live" and gc.target and not (
                note and gc.resumed and await self._counted(gc)):
            return [("success", gc.circuit, self.clock(), {"execution": gc.execution_id})]
        await self.release(gc)
        return []

    async def _counted(self, gc: GuardContext, since: float | None = None) -> bool:
        """Is this run's success among those its circuit counts already (since `since`:
        by default the window's start)?"""
        cfg = gc.playbook.guards.get("circuit_breaker")
        if not cfg:
            return False  # no circuit counts it
        if since is None:
            since = self.clock() - parse_duration(cfg["window"])
        return any(data.get("execution") == gc.execution_id for _, data in
                   await self.store.events_since("success", gc.circuit, since))

    async def on_resolved(self, gc: GuardContext) -> None:
        """A resolution withdraws approvals still pending for this alert's executions, in the
        section approve decides in: an approval is approved or withdrawn, never both.
        With none pending for it, the section is not taken: only a decision (in it)
        removes a pending approval, and none created after this read was withdrawn before
        either (a section's lock, read and unlock were three round trips on PostgreSQL)."""
        if not any(_withdrawn_by(p, gc) for p in (await self.store.list_state(PENDING)).values()):
            return
        async with self.store.critical("approvals"):
            for key, pending in (await self.store.list_state(PENDING)).items():
                # Its pending entry stays, marked, until the execution's record is final: the
                # resolution finishes it (`engine.approvals.withdrawn`), else maintenance (a
                # resolution that gave up, or stopped before that record). Removed with the
                # decision, nothing came back for it: `blocked approval_pending` for ever.
                # (Decided `resolved` already: an earlier attempt stopped before marking it.)
                if not _withdrawn_by(pending, gc):
                    continue
                name, now = key[len(PENDING):], self.clock()
                state = await decide_approval(self.store, name, "resolved", now, unindex=False) \
                    or await self.store.get_state(APPROVAL + name) or {}
                if state.get("status") == "resolved":
                    await self.store.put_state(key, dict(pending, withdrawn_at=now))

    async def _paused(self, gc: GuardContext) -> Block | None:
        known, gc.pause = gc.pause, None
        state = known[0] if known is not None else await self.store.get_state(PAUSE)
        if self.settings.paused or (state and state.get("paused")):
            # The configuration's pause is nobody's: the last operator named may have resumed.
            who = " by configuration (guards.paused or REMEDIATOR_PAUSED)" \
                if self.settings.paused else f" by {state['by']}" if state and state.get("by") \
                else ""
            # Paused automation must not silence humans: the note says so and what would run.
            return Block("paused", f"automation is paused{who}; alerts are recorded, "
                                   "nothing runs")
        return None

    async def paused_since_admission(self, gc: GuardContext) -> Block:
        """The block when the store found automation paused at a mutation's last moment."""
        return await self._paused(gc) or Block("paused", "automation was paused before this "
                                                         "change could start; it did not run")

    async def _time_window(self, gc: GuardContext) -> Block | None:
        windows = gc.playbook.guards.get("time_windows")
        if not windows:
            return None
        now = datetime.fromtimestamp(self.clock(), UTC)
        hhmm, day = now.strftime("%H:%M"), _DAYS[now.weekday()]
        for w in windows:
            if day in w.get("days", _DAYS) and w["start"] <= hhmm < w["end"]:
                return None
        return Block("time_window", f"{hhmm}Z {day} is outside the playbook's allowed windows "
                                    f"({_windows_text(windows)}); escalating instead")

    async def _circuit_open(self, gc: GuardContext) -> Block | None:
        cfg = gc.playbook.guards.get("circuit_breaker")
        if not cfg or not gc.target:
            return None
        return self._open(gc, await self.store.get_state(f"circuit:{gc.circuit}"), self.clock())

    @staticmethod
    def _open(gc: GuardContext, state: dict[str, Any] | None, now: float) -> Block | None:
        if state and circuit_open(state, now):
            return Block("circuit_open", f"circuit for {gc.playbook.name} on {gc.target} open "
                                         f"since {_iso(state['opened_at'])} until "
                                         f"{_iso(state['until'])}; reset with POST "
                                         f"/api/v1/circuits/reset?target={gc.target}",
                         escalate=False)
        return None

    async def _circuit(self, gc: GuardContext, again: bool = True) -> Block | None:
        cfg = gc.playbook.guards.get("circuit_breaker")
        if not cfg or not gc.target:
            return None
        now = self.clock()
        key = f"circuit:{gc.circuit}"
        window = parse_duration(cfg["window"])
        # The state and the successes in one read (two before, a tenth of a storm's reads).
        since = now - window
        state, successes = await self.store.state_and_count(key, "success", gc.circuit, since)
        if block := self._open(gc, state, now):
            return block
        reset = (state or {}).get("reset_at", 0)
        if successes and reset > since:  # an operator reset it since: count from there on
            since = reset  # (a read more, only while a reset is in the window)
            successes = await self.store.count_events("success", gc.circuit, since)
        if successes >= cfg["max_refires"] and gc.resumed and await self._counted(gc, since):
            successes -= 1  # its own, recorded before its note: not a remediation that failed
        if successes >= cfg["max_refires"]:
            until = now + parse_duration(cfg.get("open_for", cfg["window"]))
            # The reset's time stays: once this opening expires, what preceded it still
            # does not count. Opened over the state read above, or not at all: written
            # whatever was there, it overwrote an operator's reset made since (of an opening
            # that had expired), and the circuit opened again on the successes counted
            # before it, the reset answered "closed". Judged again on what is there now.
            opened = {**({"reset_at": reset} if reset else {}), "opened_at": now,
                      "until": until}
            if not await self.store.swap_state(key, state, opened):
                if again:
                    return await self._circuit(gc, again=False)
                return Block("circuit_open", f"the circuit for {gc.playbook.name} on "
                                             f"{gc.target} changed twice while it was judged "
                                             "(resets or openings by other replicas); not run")
            return Block("circuit_open", f"remediation is not working: {gc.target} alerted again "
                                         f"after {successes} successful remediations in the "
                                         f"last {_human(window)} (max {cfg['max_refires']}); "
                                         f"automation stopped until {_iso(until)}")
        return None

    async def _circuit_held(self, gc: GuardContext) -> Block | None:
        """The circuit judged again once a live run holds its target: read before the lock
        only, it missed a success recorded while this run waited for the target, or between
        the two statements (a run on another replica), and the target was changed once more
        than `max_refires` allows. Every success is recorded before its target is let go
        (`after_execution`), so under the lock the count is whole. Still read first as well:
        an open circuit blocks without waiting for the target, and a dry run (which changes
        nothing, and holds the lock only to coalesce) reads it once."""
        return await self._held(gc, self._circuit)  # opened meanwhile, or tripped now (once)

    async def _circuit_open_held(self, gc: GuardContext) -> Block | None:
        """A revert's circuit read again once it holds its target, as a firing's is: an open
        circuit holds a revert back (escalated: the change stays, for the human who has the
        target since remediation of it is not working). Read before the lock only, a circuit
        opened while the revert waited for the target (another playbook changing it), or
        between the two statements (a firing on another replica tripping it), let the revert
        change the target under that human. Its state only: a revert never trips it."""
        return await self._held(gc, self._circuit_open)

    async def _held(self, gc: GuardContext, judge: Callable[[GuardContext],
                                                            Awaitable[Block | None]]
                    ) -> Block | None:
        """`judge` the circuit of a live run that holds its target; blocked, it lets the
        target go."""
        if gc.mode != "live" or gc.execution_id not in self._locked_by \
                or not gc.playbook.guards.get("circuit_breaker"):
            return None
        if block := await judge(gc):
            await self.release(gc)  # blocked: it holds nothing
        return block

    async def _lock(self, gc: GuardContext, wait: bool = True) -> Block | None:
        # Only changes are serialised: evidence gathering never waits for, nor is coalesced
        # into, another execution on the same target.
        if not gc.target or gc.playbook.guards.get("lock") is False or not _mutates(gc.playbook):
            return None
        # Real time, even under `remediator test`'s fake clock: the wait is for another run
        # in this world to finish, not a span of the simulated one.
        since, pause, queue = time.monotonic(), 0.05, (gc.target, gc.playbook.name)
        try:
            while (holder := await self.store.acquire_lock(gc.target, gc.execution_id)):
                if not wait or self._locked_by.get(holder) == gc.remedy:
                    return Block("locked", f"coalesced into running execution {holder} for "
                                           f"{gc.target}", escalate=False)
                # Another playbook, or its steps changing other objects than this alert's
                # (or a replica's run we cannot tell apart), is changing the target: a
                # different remedy, so this alert is not dropped into it but waits.
                if gc.mode != "live":
                    return None  # nothing changes in a dry run: plan what would run after it
                # One waiter per playbook and target: a storm of its alerts cannot fill every
                # execution slot with waits. An alert of the waiter's remedy joins it; one
                # whose steps change other objects does not run, and a human is told.
                waiter = self._waiting.setdefault(queue, (gc.execution_id, gc.remedy))
                if waiter[0] != gc.execution_id:
                    if waiter[1] == gc.remedy:
                        return Block("locked", f"coalesced into execution {waiter[0]} waiting "
                                               f"for {gc.target}", escalate=False)
                    return Block("locked", f"{gc.target} is being changed by execution "
                                           f"{holder}, and execution {waiter[0]} of this "
                                           "playbook waits for it to change other objects than "
                                           f"this alert's ({', '.join(gc.step_targets)}); this "
                                           "one did not run", escalate=True)
                if time.monotonic() - since >= LOCK_WAIT:
                    return Block("locked", f"{gc.target} is still being changed by execution "
                                           f"{holder} after {LOCK_WAIT:g}s; this playbook did "
                                           "not run", escalate=True)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 2.0)
        finally:
            if self._waiting.get(queue, ("",))[0] == gc.execution_id:
                del self._waiting[queue]
        self._locked_by[gc.execution_id] = gc.remedy
        return None

    async def _precondition(self, gc: GuardContext) -> Block | None:
        cfg = gc.playbook.guards.get("precondition")
        if not cfg or gc.mode != "live" or self.precondition is None:
            return None
        if cfg.get("delay"):
            await self.sleep(parse_duration(cfg["delay"]))
        promql = cfg.get("promql")
        if promql:
            try:
                promql = templating.render(promql, {"labels": gc.alert.labels,
                                                    "annotations": gc.alert.annotations})
            except templating.TemplateError as exc:
                # The alert's values (one `promql_duration` refuses, a label it lacks): not
                # a bug, and nothing is known, so nothing runs and a human hears of it. Raised,
                # it was recorded as an internal error, with a traceback in the log.
                await self.release(gc)
                return Block("precondition_unknown", f"precondition not checked: its query "
                             f"cannot be made from this alert ({exc}); no query was sent, "
                             "nothing was done", escalate=True)
        holds, why = await self.precondition(promql, gc.alert, bool(cfg.get("alert_firing")))
        if not holds:
            await self.release(gc)
            # Known false: the problem went away, nobody needs paging. Unknown (Prometheus or
            # Alertmanager unreachable): nothing was done, and a human must hear of it; its
            # own name, so a dashboard tells a blind check from a problem gone away.
            if holds is None:
                return Block("precondition_unknown", why, escalate=True)
            return Block("precondition_false", why, escalate=False)
        return None

    async def release(self, gc: GuardContext) -> None:
        """Give up the target lock: the execution stopped (finished, or blocked)."""
        await self.release_all(gc.execution_id)

    async def release_all(self, execution_id: str) -> None:
        """Let go of the execution's target locks. A release the store refuses (down, or a
        statement it rejects) is logged, not raised: raised, it turned a restart that succeeded
        into a decision `failed` by an internal error, and in a run's `finally` it escaped
        before the run was marked stopped (its retry would wait for itself for ever). The
        lock is held only until it expires: a lock row is forgotten before its delete, so no
        lease renews it (on SQLite locks are in memory: a release cannot fail)."""
        self._locked_by.pop(execution_id, None)
        try:
            await self.store.release_locks(execution_id)
        except Exception:
            log.exception("cannot release the target locks of %s; they expire with their "
                          "lease", execution_id, extra={"execution_id": execution_id})

    # --- mutation level ----------------------------------------------------------------

    async def before_mutation(self, gc: GuardContext, step: Step,
                              params: dict[str, Any]) -> Block | None:
        """The checks before a mutation, or why not (a firing alert's resolution already
        received: RESOLVED_BLOCK). Live, the mutation is then admitted by `admit`, in the
        write that journals its intent; in a dry run the counted limits are checked here.
        A step with its own target (`gc.target` is then that object) also takes its lock."""
        if not await self._folded(gc, step, params):
            if gc.alert.status == "firing" and await self.store.received(_resolution(gc)):
                return RESOLVED_BLOCK
            if step.target is not None and (block := await self._lock(gc, wait=False)):
                return replace(block, escalate=True)  # stopped halfway: a human must know
            for check in (self._paused_mutation, self._scope, self._approval):
                if (block := await check(gc, step, params)) is not None:
                    return block
        if gc.mode != "live":
            return await self._limits(gc, step, params)
        return None

    async def _limits(self, gc: GuardContext, step: Step, params: dict) -> Block | None:
        """The counted limits' checks, read only: which one refuses the step now, if any."""
        for check in (self._rate_limit, self._cooldown, self._budget):
            if (block := await check(gc, step, params)) is not None:
                return block
        return None

    async def admit(self, gc: GuardContext, step: Step, params: dict[str, Any],
                    intent: Entry, reserved: bool = False) -> Block | None:
        """Admit a live mutation in the write that journals its `intent`, once its call
        slot is held, or say why not: the pause, then the counted limits (rate limit,
        cooldown, budget) are checked and the mutation reserved in them by one atomic
        `Store.admit`, so executions running at the same time, on any replica, can never
        both take the last place of a limit, admissions on unrelated targets never wait for
        each other, and a pause thrown anywhere before the call stops it. `reserved`: its
        intent is journaled already, by an admission whose answer was lost before its call
        (`Records.unsent`): the pause, resolution and lock are read again, nothing reserved
        twice."""
        # The same write reads the firing alert's resolution, whatever the step: one
        # acknowledged while the change waited for its slot stops it (`before_mutation`
        # read it before that wait, and only for a step it did not fold into this write).
        resolution = _resolution(gc) if gc.alert.status == "firing" else None
        if self._restores(gc) and (block := await self._cooldown(gc, step, params)):
            return block  # read, not reserved: the target's lock this revert holds keeps it
        if reserved and (block := await self._cooldown(gc, step, params)):
            return block  # another run changed the target while this one's answer was lost
        # The target lock this change runs under, taken again by the admission's durable
        # write: lost with a database crash, another run may have taken the target since.
        lock = (gc.target, gc.execution_id) if gc.target and gc.execution_id in self._locked_by \
            else None
        for _ in range(3):  # an attempt counts even if it fails: it touched the target
            try:
                limits, events = ([], []) if reserved else self._reservation(gc, step)
            except UnmadeKey as exc:
                return Block("rate_limited", f"the rate limit cannot be checked: {exc}")
            admitted = await self.store.admit(limits, events, unless_paused=True,
                                              unless_received=resolution, journal=intent,
                                              held=gc.claimed, lock=lock)
            if admitted == RESOLVED:
                return RESOLVED_BLOCK
            if admitted == PAUSED:
                return await self.paused_since_admission(gc)
            if admitted == LOCKED:
                return Block("locked", f"{gc.target} is being changed by another execution: "
                                       "this one's lock was lost with the store (a database "
                                       "crash) before this change; it did not run",
                             escalate=True)
            if admitted is None:
                return None
            # Refused: the checks say which limit, with its numbers.
            if (block := await self._limits(gc, step, params)) is not None:
                return block
        # A limit was reached and freed again three times in a row (its window moving on).
        return Block("rate_limited", "a limit was reached at admission and free again when "
                                     "checked, three times in a row; not admitted")

    async def _folded(self, gc: GuardContext, step: Step, params: dict[str, Any]) -> bool:
        """Live, with no lock to take or approval to ask and nothing configured against it:
        the admission reads the resolution and the pause itself."""
        return (gc.mode == "live" and step.target is None and not step.approval
                and not self.settings.paused and await self._scope(gc, step, params) is None)

    def _reservation(self, gc: GuardContext, step: Step) -> tuple[list[Limit], list[Event]]:
        """What `admit` reserves, and the limits the reservation must respect: the
        same numbers `_rate_limit`, `_cooldown` and `_budget` check."""
        now, pb, s = self.clock(), gc.playbook, self.settings
        limits = [Limit("budget", "*", now - s.budget_window, s.budget_max)]
        events: list[Event] = [("mutation", self._rate_key(gc), now, {"step": step.name}),
                               ("budget", "*", now, {})]
        if cfg := pb.guards.get("rate_limit"):
            limits.append(Limit("mutation", self._rate_key(gc), now - parse_duration(cfg["window"]),
                                cfg["max"]))
        if gc.target:
            if (cooldown := pb.guards.get("cooldown")) and not self._restores(gc):
                limits.append(Limit("target", gc.target, now - parse_duration(cooldown), 1,
                                    unless={"execution": gc.execution_id, "episode": gc.episode}))
            events.append(("target", gc.target, now, {"step": step.name,
                                                      "execution": gc.execution_id,
                                                      "episode": gc.episode,
                                                      "playbook": pb.name}))
        return limits, events

    async def _paused_mutation(self, gc: GuardContext, step: Step, params: dict) -> Block | None:
        return await self._paused(gc)

    async def _scope(self, gc: GuardContext, step: Step, params: dict) -> Block | None:
        return namespace_denied(self.settings, params.get("namespace") or gc.namespace) or \
            self.scope(step, params)

    def scope(self, step: Step, params: dict[str, Any]) -> Block | None:
        """Every place the step writes (`Action.scope`) is in its kind's allow list. Also
        run for a step that writes without mutating what is remediated (evidence)."""
        for kind, name in ACTIONS[step.action].scope(params):
            if block := write_denied(self.settings, kind, name):
                return block
        return None

    def read_scope(self, step: Step, params: dict[str, Any]) -> Block | None:
        """A step that changes nothing, whose namespace a template chose, is held to the
        namespace allow and deny lists as a change is: a label `namespace=kube-system` made
        a `kubernetes.get`, `logs` or `exec` read kube-system into the note. A namespace the
        playbook names literally is its author's choice, read wherever it is."""
        namespace = step.params.get("namespace")
        if not isinstance(namespace, str) or not templating.is_template(namespace):
            return None
        return namespace_denied(self.settings, str(params.get("namespace") or ""))

    async def _approval(self, gc: GuardContext, step: Step, params: dict) -> Block | None:
        """One approval admits one step: each gated step waits for its own, with its own TTL."""
        if not step.approval or gc.mode != "live":
            return None  # dry-run plans through it ("after approval"): nothing would run
        name = f"{gc.execution_id}:{step.name}"
        state = await self.store.get_state(APPROVAL + name)
        if state and state["status"] == "approved":
            return None
        if state and state["status"] in _DECIDED:
            # Decided, and final: the execution is never resumed again.
            guard, what = _DECIDED[state["status"]]
            return Block(guard, f"step {step.name!r}: " + what.format(
                by=f" by {state['by']}" if state.get("by") else ""))
        if state is None:
            now = self.clock()
            ttl = parse_duration(gc.playbook.guards.get("approval_ttl", self.settings.approval_ttl))
            state = {"status": "pending", "step": step.name, "requested_at": now,
                     "expires_at": now + ttl}
            await self.store.put_state(APPROVAL + name, state)
            # What expiry and withdrawal scan: only approvals still pending, never history.
            await self.store.put_state(PENDING + name, {"expires_at": now + ttl,
                                                        "requested_at": now,
                                                        "fingerprint": gc.alert.fingerprint,
                                                        "episode": gc.episode})
        # A limit refusing the step now is said with the request: approved before it clears,
        # the step is refused at admission, and the human paged for nothing.
        limit = await self._limits(gc, step, params)
        return Block("approval_pending", f"step {step.name!r} needs approval (expires "
                                         f"{_iso(state['expires_at'])}): remediator approve "
                                         f"{gc.execution_id} --step {step.name}" + (
                                             f"; approved now, it would be refused: {limit}"
                                             if limit else ""))

    async def _rate_limit(self, gc: GuardContext, step: Step, params: dict) -> Block | None:
        cfg = gc.playbook.guards.get("rate_limit")
        if not cfg:
            return None
        window = parse_duration(cfg["window"])
        now = self.clock()
        try:
            key = self._rate_key(gc)
        except UnmadeKey as exc:  # no limit to count against: not admitted (fails closed)
            return Block("rate_limited", f"the rate limit cannot be checked: {exc}")
        events = await self.store.events_since("mutation", key, now - window)
        if len(events) >= cfg["max"]:
            next_at = events[len(events) - cfg["max"]][0] + window
            return Block("rate_limited", f"{len(events)} of max {cfg['max']} mutations of "
                                         f"{key} in the last {_human(window)}; "
                                         f"next allowed at {_iso(next_at)}")
        return None

    async def _cooldown(self, gc: GuardContext, step: Step, params: dict) -> Block | None:
        cooldown = gc.playbook.guards.get("cooldown")
        if not cooldown or not gc.target:
            return None
        seconds = parse_duration(cooldown)
        now = self.clock()
        events = await self.store.events_since("target", gc.target, now - seconds)
        # One alert episode is one remediation: its own earlier steps, and the revert its
        # resolution runs (`on_resolved`), are not a second mutation to cool down from.
        others = [(at, data) for at, data in events if data.get("execution") != gc.execution_id
                  and data.get("episode") != gc.episode]
        if self._restores(gc):
            # Another episode of this playbook that changed the target since (or was admitted
            # to: it found our change already made) relies on the state the revert would undo:
            # DEBUG turned off under a second pod's alert still firing. Another playbook's
            # change (or a record before events named their playbook: counted) does not.
            others = [(at, data) for at, data in others
                      if data.get("playbook", gc.playbook.name) == gc.playbook.name]
            if others:
                return Block("cooldown", f"{gc.target} was changed at {_iso(others[-1][0])} "
                             f"by another alert of playbook {gc.playbook.name!r}, which may "
                             "rely on the change this revert would undo; cooldown "
                             f"{_human(seconds)} ends at {_iso(others[-1][0] + seconds)}")
            return None
        if others:
            return Block("cooldown", f"{gc.target} was last changed at {_iso(others[-1][0])}; "
                         f"cooldown {_human(seconds)} ends at {_iso(others[-1][0] + seconds)}")
        return None

    @staticmethod
    def _restores(gc: GuardContext) -> bool:
        """A revert of this episode's own change of `gc.target` (a step of it with a
        `target:` of its own changes another object, which its firing run may never have
        changed): the cooldown keeps a target from being changed again too soon, and a revert
        puts back the state before our change. Held back by another playbook's change of the
        target (DeltaCrown's read flag flip after LOG_LEVEL=DEBUG), it left our change in
        place for a human. It still reserves its `target` event, so the next firing episode
        is cooled down by it: each revert follows a change the cooldown admitted, one per
        episode, so a flapping alert toggles the target no faster than before. Another
        episode of the same playbook's change since still holds it (`_cooldown`), checked
        under the target's lock the revert holds. The rate limit, the budget, the lock, the
        circuit, scope, pause and approvals still hold it."""
        return gc.reverts is not None and gc.reverts == gc.target

    async def _budget(self, gc: GuardContext, step: Step, params: dict) -> Block | None:
        s = self.settings
        now = self.clock()
        spent = await self.store.count_events("budget", "*", now - s.budget_window)
        if spent >= s.budget_max:
            return Block("rate_limited", f"global budget spent: {spent} of max "
                                         f"{s.budget_max} mutating actions in the last "
                                         f"{_human(s.budget_window)}")
        return None

    def _rate_key(self, gc: GuardContext) -> str:
        """The events a rate limit counts: this playbook's on this target, or those its
        `key` template groups. A key is `key=` and its text, which no default key can be (a
        playbook's name has no `=`): a label valued `other-playbook:its/target` spent that
        playbook's limit. Raises `UnmadeKey` when the alert cannot make it."""
        template = gc.playbook.guards.get("rate_limit", {}).get("key")
        if not template:
            return f"{gc.playbook.name}:{gc.target or '-'}"
        try:
            key = templating.render(template, {"labels": gc.alert.labels, "target": gc.target})
        except templating.TemplateError as exc:
            raise UnmadeKey(f"its key {template!r} cannot be made from this alert: {exc}") \
                from None
        if not key.strip():  # every such alert would share one limit: none is this one's
            raise UnmadeKey(f"its key {template!r} is empty for this alert")
        return f"key={key}"


# The scope rules, shared by the guard (run time) and lint (`--config`, literal names only).

def system_namespaces_open(s: GuardSettings) -> list[str]:
    """The system namespaces the scope guard lets a mutation change (an allow list naming
    one, or a deny list without it and no allow list): `serve` and `lint --config` warn."""
    return [ns for ns in SYSTEM_NAMESPACES if namespace_denied(s, ns) is None]


def namespace_denied(s: GuardSettings, namespace: str) -> Block | None:
    """Why a mutation in `namespace` is out of scope, or None ("" names no namespace)."""
    if namespace:
        if namespace in s.namespaces_deny and namespace not in s.namespaces_allow:
            return Block("scope_denied", f"namespace {namespace!r} is denied")
        if s.namespaces_allow and namespace not in s.namespaces_allow:
            return Block("scope_denied", f"namespace {namespace!r} is not in the allow list "
                                         f"({', '.join(s.namespaces_allow)})")
    return None


def write_denied(s: GuardSettings, kind: str, name: str) -> Block | None:
    """Why a write to `name`, one of `Action.scope`'s (kind, name), is out of scope."""
    allowed, setting, what = allow_list(s, kind)
    if not any(name == a or (kind == "evidence_directory" and _under(name, a))
               or (kind == "http_host" and name.rsplit(":", 1)[0] == a.lower())
               for a in allowed if name):
        return Block("scope_denied", f"{kind.replace('_', ' ')} {name!r} is not in the "
                                     f"{what} allow list ({setting}: "
                                     f"{', '.join(allowed) or 'empty'})")
    return None


def circuit_open(state: dict[str, Any], now: float) -> bool:
    """Is a circuit with this state open at `now`? A reset's state ends where it was reset
    (`until` = `reset_at`, a later opening's `until` after it): closed, whatever this
    replica's clock says. Judged by time alone, a replica whose clock was a few milliseconds
    behind the resetting one's (their offsets to the database differ by up to half a round
    trip) found the circuit still open until that instant, and listed it open."""
    return state.get("reset_at", -1) < state.get("until", 0) and now < state["until"]


def allow_list(s: GuardSettings, kind: str) -> tuple[list[str], str, str]:
    """(allow list, its setting, what it allows) for a kind of `Action.scope`."""
    return {"bucket": (s.buckets_allow, "guards.buckets.allow", "S3 write"),
            "compose_project": (s.compose_projects_allow, "guards.compose_projects.allow",
                                "Docker mutation"),
            "evidence_directory": (s.evidence_directories, "guards.evidence.directories",
                                   "evidence directory (roots)"),
            "http_host": (s.http_allow, "guards.http.allow", "HTTP mutation"),
            }.get(kind, ([], f"guards.{kind}", kind))


async def decide_approval(store: Store, name: str, status: str, at: float,
                          by: str = "", unindex: bool = True, claim: InboxItem | None = None
                          ) -> dict[str, Any] | None:
    """Decide the pending approval `execution_id:step` once; None if it was not pending.
    Without `unindex`, its pending index entry is left for the caller to remove. With
    `claim` (the run's inbox item, claimed for its resume), written only while the item
    still holds that claim (`Store.put_states`). The decision and its index go in one write: as
    two, a decider frozen in the first (its claim lapsed, and the replica that took the
    alert over found the approval still pending) committed `approved` with the second
    fenced, and nobody resumed the run nor could approve it again."""
    state = await store.get_state(APPROVAL + name)
    if not state or state["status"] != "pending":
        return None
    state.update(status=status, decided_at=at, **({"by": by} if by else {}))
    await store.put_states({APPROVAL + name: state, **({PENDING + name: None} if unindex else {})},
                           claim=claim)
    return state


def _withdrawn_by(pending: dict[str, Any], gc: GuardContext) -> bool:
    """A pending approval the resolution `gc` withdraws: its own episode's. Matched by the
    fingerprint alone, a late resolution of an earlier episode withdrew a later one's, still
    firing: neither approvable nor expiring (nothing pending), its record left waiting.
    (An entry written before episodes were kept in it is matched by its fingerprint.)"""
    return "withdrawn_at" not in pending and pending.get("fingerprint") == gc.alert.fingerprint \
        and pending.get("episode", gc.episode) == gc.episode


def _resolution(gc: GuardContext) -> str:
    """The dedupe key of a firing alert's resolution."""
    return replace(gc.alert, status="resolved").dedupe_key


def _under(path: str, root: str) -> bool:
    """`path` is `root` or inside it, compared lexically (`..` is refused before this)."""
    path, root = os.path.normpath(path), os.path.normpath(root)
    return os.path.isabs(path) and (path == root or path.startswith(root.rstrip("/") + "/"))


def _mutates(pb: Playbook) -> bool:
    """Whether a playbook may change anything (it takes the target lock): asked by each of
    its decisions, answered once per version of it (per Playbook: a reload makes new ones)
    when only built-in actions answer (a plugin's `mutates` is not ours to call pure)."""
    kept = _MUTATES.get(id(pb))
    if kept is not None and kept[0] is pb:
        return kept[1]
    steps = (*pb.steps, *pb.on_resolved)
    mutates = any(ACTIONS[s.action].mutates(s.params) for s in steps)
    if all(s.action in BUILTIN for s in steps):
        if len(_MUTATES) >= 4096:  # old versions, after reloads
            _MUTATES.clear()
        _MUTATES[id(pb)] = (pb, mutates)
    return mutates


_MUTATES: dict[int, tuple[Playbook, bool]] = {}


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _human(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def _windows_text(windows: list[dict[str, Any]]) -> str:
    return "; ".join(f"{','.join(w.get('days', ['daily']))} {w['start']}-{w['end']}Z"
                     for w in windows)
