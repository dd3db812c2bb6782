"""The engine's pipeline for one alert: match → target → execution guards → steps → outcome.

Every step is journaled before the next one starts, so after a crash an execution resumes
where it stopped and never repeats a completed step. One step's run is `steps.py`'s; what is
written when, `records.py`'s; a dry run's plans, `plans.py`'s; approvals after the block,
`approvals.py`'s.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from .. import templating, turns
from ..actions.backends import Backends
from ..actions.registry import ACTIONS
from ..alerts import Alert, Group, dry_run_only
from ..escalation import Escalator
from ..guards import Block, GuardContext, Guards
from ..metrics import Metrics
from ..playbooks.index import RuleSet
from ..playbooks.models import FIRING_WAIT, Playbook, Step
from ..store.base import InboxItem, Store, StoreUnavailable
from ..templating import context as template_context
from . import approvals, plans, records
from .executor import Executor
from .inflight import InFlight
from .plans import Plans
from .records import Records, Unrecorded, after_cancel, after_failure, changes, made_change, resumable
from .steps import Steps, render_target, step_targets

log = logging.getLogger("remediator.engine")
# A dry run's planned steps taken in one turn at most (every shipped playbook's fit in one).
PLAN_CHUNK = 16


@dataclass
class Engine:
    """Decides what each alert does: match, guards, steps, escalation."""

    rules: RuleSet
    store: Store
    guards: Guards
    mode: str = "dry-run"
    backends: Backends = field(default_factory=Backends)
    executor: Executor = field(default_factory=Executor)
    escalator: Escalator | None = None
    metrics: Metrics | None = None
    clock: Callable[[], float] = time.time
    inflight: InFlight = field(default_factory=InFlight)
    # The executions' writes and what each has not written yet (made from the fields
    # above, which are not replaced after: only `rules` is, at a reload, read at each note).
    records: Records = field(init=False, repr=False)
    # Checked parameters and dry-run plans kept per step across alerts.
    plans: Plans = field(default_factory=Plans, init=False, repr=False)
    # One step's run (made from the same fields).
    steps: Steps = field(init=False, repr=False)
    # Alerts whose last processing was cut off (by a restart: `Service._recover`; by an
    # outage here): processed next, they look for a run of theirs left `running` under a
    # playbook this version no longer matches (`_stale`). So does an item a replica took
    # over (`InboxItem.interrupted`); a first processing reads nothing more.
    recheck: set[str] = field(default_factory=set, init=False, repr=False)

    def __post_init__(self) -> None:
        self.records = Records(store=self.store, guards=self.guards,
                               playbook=lambda name: self.rules.get(name),
                               escalator=self.escalator, metrics=self.metrics)
        self.steps = Steps(guards=self.guards, records=self.records, plans=self.plans,
                           inflight=self.inflight, executor=self.executor,
                           backends=self.backends, metrics=self.metrics)

    async def process(self, item: InboxItem) -> list[dict[str, Any]]:
        """All decisions for one acknowledged alert; the item is done once they are final
        (its last decision's final record marks it done, in the same write)."""
        token = records.finishing.set(None)
        try:
            try:
                decisions = await self._process(item)
            except (StoreUnavailable, Unrecorded):
                self.recheck.add(item.dedupe_key)  # a reload may rename its run's playbook
                raise  # nothing can be recorded now: the inbox item is retried, not finished
            except Exception as exc:
                # A bug outside any execution (reading the stored alert, matching, recording
                # a decision without a playbook): the acknowledged alert still ends with a
                # decision that says so, and a note. Its alert-level id, that of `no_match`.
                failed = records.execution_id(item.dedupe_key, "")
                records.finishing.set((failed, item.id))
                decision = self._decision(failed, records.readable(item.alert), None,
                                          dry_run=dry_run_only(item.group))
                decisions = [await self.records.internal_error(decision, exc)]
            if records.finishing.get() is not None:  # its last execution was final already
                await self.store.finish(item.id)
            self.recheck.discard(item.dedupe_key)
            return decisions
        finally:
            records.finishing.reset(token)

    async def _process(self, item: InboxItem) -> list[dict[str, Any]]:
        alert = Alert.from_dict(item.alert)
        group = Group.from_dict(item.group)
        # A dry-run replay's alert left unfinished (the replay killed, or given up) is
        # decided dry-run here too, whatever this worker's mode: never acted on.
        dry_run = dry_run_only(item.group)
        if dry_run and self.mode == "live":
            log.info("alert %s is a dry-run replay's, left undecided by it: decided dry-run",
                     item.dedupe_key)
        playbooks = self.rules.match(alert.labels, alert.status)
        ids = [records.execution_id(item.dedupe_key, pb.name) for pb in playbooks] or [
            records.execution_id(item.dedupe_key, "")]
        stale = await self._stale(item.dedupe_key, alert.fingerprint, ids) \
            if item.interrupted or item.dedupe_key in self.recheck else []
        # Runs left `running` are concluded last, the last one finishing the item: the runs
        # they may block are recorded first, so a crash between finds them again.
        records.finishing.set((stale[-1]["id"] if stale and playbooks else ids[-1], item.id))
        if playbooks:
            decided = [await self.execute(pb, alert, group, item.dedupe_key, execution_id,
                                          dry_run=dry_run, interrupted=stale)
                       for pb, execution_id in zip(playbooks, ids, strict=True)]
            return decided + [await self._abandon(run, alert) for run in stale]
        for run in stale:  # nothing runs instead: concluded first, the item with `no_match`
            await self._abandon(run, alert)
        decision = self._decision(ids[-1], alert, None, dry_run=dry_run)
        decision.update(outcome="no_match",
                        reason=self.rules.no_match_reason(alert.labels, alert.status))
        return [await self.records.finish(decision)]

    async def _stale(self, key: str, fingerprint: str, ids: list[str]) -> list[dict[str, Any]]:
        """This alert's runs recorded `running` (interrupted) that none of the playbooks it
        matches now would resume: a reload renamed, removed or changed the matchers of
        theirs. Their id is of the alert and their playbook's name, so no current match finds
        them; left alone, they stayed `running` for ever, and a renamed playbook ran again
        from its first step, repeating a change the interrupted run had made."""
        found = await self.store.list_executions(100, outcome="running", fingerprint=fingerprint)
        return [run for run in reversed(found) if run["playbook"] and run["id"] not in ids
                and run["id"] == records.execution_id(key, run["playbook"])]

    async def _abandon(self, run: dict[str, Any], alert: Alert) -> dict[str, Any]:
        """Conclude a stale run (`_stale`): failed, escalated with its journal."""
        name = run["playbook"]
        why = (f"its playbook {name!r} no longer matches this alert" if self.rules.get(name)
               else f"its playbook {name!r} is no longer loaded (a reload renamed or removed "
               "it)")
        while not self.inflight.start(run["id"], f"{alert.fingerprint}:{alert.starts_at}"):
            await self.inflight.wait(run["id"])  # resumed here meanwhile: let it stop first
        try:
            existing = await self.store.get_execution(run["id"])
            if existing is None or existing["outcome"] != "running":
                return existing or run  # concluded meanwhile
            log.warning("execution %s was interrupted and is not resumed: %s", run["id"], why,
                        extra={"execution_id": run["id"], "playbook": name})
            return await self.records.interrupted(existing, why)
        finally:
            try:
                await self.records.ended(run["id"], alert.dedupe_key)  # its target locks, if any
            finally:
                self.inflight.finish(run["id"])

    async def execute(self, pb: Playbook, alert: Alert, group: Group, dedupe_key: str,
                      execution_id: str | None = None, dry_run: bool = False,
                      interrupted: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """Run (or resume) one playbook for one alert; return its decision (`execution_id`:
        its id, when the caller computed it already; `dry_run`: whatever the engine's mode;
        `interrupted`: the alert's stale runs, `_stale`)."""
        execution_id = execution_id or records.execution_id(dedupe_key, pb.name)
        while not self.inflight.start(execution_id, f"{alert.fingerprint}:{alert.starts_at}"):
            # Already running here (an approval resumed it while its alert was queued again):
            # wait for it rather than report it done, so its inbox item stays unfinished, and
            # a crash meanwhile resumes it from the journal after restart.
            log.info("execution %s is already running; waiting for it", execution_id,
                     extra={"execution_id": execution_id})
            await self.inflight.wait(execution_id)
        # Read once it runs nowhere else (this process holds it, the claim holds it across
        # replicas): what it says stays true, so no record means no journal to read either.
        try:
            existing, pause = await self.store.get_execution_and_pause(execution_id)
        except BaseException:
            self.inflight.finish(execution_id)
            raise
        if existing and not resumable(existing):
            self.inflight.finish(execution_id)
            return existing  # finished (possibly before a restart): never run twice
        try:
            return await self._execute(pb, alert, group, execution_id, existing, pause,
                                       claimed=dedupe_key, dry_run=dry_run,
                                       interrupted=interrupted if existing is None else None)
        except (StoreUnavailable, Unrecorded):
            raise  # nothing can be recorded now: the inbox item is retried, not finished
        except Exception as exc:  # a bug must not leave an execution running, unrecorded
            try:
                return await self.records.internal_error(
                    self._decision(execution_id, alert, pb, existing, dry_run), exc)
            except StoreUnavailable:
                raise
            except Exception as refused:
                # Its record refused otherwise than by an outage: on PostgreSQL a statement
                # the server refused (a constraint, a trigger, a bug in one) is not
                # StoreUnavailable. Taken for a bug outside any execution, it was recorded as
                # the alert's own failure, its item finished, and this execution stayed
                # `running` until a restart. It goes to the alert's retries as an outage
                # does (`Service._process`: backoff of 1 s doubling to 60 s, the claim kept,
                # resumed from the journal, its note sent once): the simplest bounded path
                # that ends in this execution's own final record. Releasing the claim instead
                # had the dispatcher take it again at once (a tight loop), or on SQLite
                # nothing before a restart.
                raise Unrecorded(f"the failure of execution {execution_id} could not be "
                                 f"recorded: {type(refused).__name__}: {refused}") from refused
        finally:
            try:
                await self.records.ended(execution_id, dedupe_key)
            finally:  # stopped whatever ending it met: its retry must not wait for itself
                self.inflight.finish(execution_id)

    async def let_go(self, key: str) -> None:
        """The alert `key` is no longer processed here: see `Records.let_go`."""
        await self.records.let_go(key)

    async def _execute(self, pb: Playbook, alert: Alert, group: Group, execution_id: str,
                       existing: dict[str, Any] | None,
                       pause: dict[str, Any] | None = None, claimed: str | None = None,
                       dry_run: bool = False, interrupted: list[dict[str, Any]] | None = None
                       ) -> dict[str, Any]:
        decision = self._decision(execution_id, alert, pb, existing, dry_run)
        decision["group"] = group_dict = group.to_dict()
        ctx = template_context.build(decision["alert"], group_dict, pb)  # which copies them
        gc = GuardContext(playbook=pb, alert=alert, execution_id=execution_id, mode=decision["mode"],
                          claimed=claimed, resumed=existing is not None,
                          changed=(existing or {}).get("outcome") == "running"
                          and made_change(existing))
        try:
            gc.target = render_target(pb.target, ctx)
        except (templating.TemplateError, ValueError) as exc:
            decision.update(outcome="failed", reason=f"invalid target: {exc}")
            return await self.records.finish(decision, escalate=True)
        decision["target"] = gc.target
        ctx["target"] = gc.target
        steps = pb.steps_for(alert.status)
        gc.step_targets = step_targets(steps, ctx)
        if block := _repeats(interrupted, gc.target, steps, gc.step_targets):
            decision["would_run"] = plans.would_run(steps, ctx)
            return await self.records.blocked(decision, block, gc)
        if gc.changed:
            journaled = {r["name"] for r in (existing or {}).get("steps") or []}
            gc.to_change = any(s.name not in journaled and ACTIONS[s.action].mutates(s.params)
                               for s in steps)
        resolving = alert.status == "resolved" and pb.status == "firing"
        block, reverts = None, False
        if resolving:
            # Cut the firing run's waits short, and let it stop before reverting anything.
            await self.inflight.resolve(gc.episode, execution_id, timeout=FIRING_WAIT)
            await approvals.firing_stopped(self.store, alert, timeout=FIRING_WAIT)
            await self.guards.on_resolved(gc)
            await approvals.withdrawn(self.records, self.inflight, pb, alert, self.clock())
            reverts = any(ACTIONS[s.action].mutates(s.params) for s in steps)
            if reverts and gc.mode == "live":
                changed = await approvals.changed(self.store, pb, alert)
                if pb.on_resolved_when != "always":
                    if changed is None:
                        decision.update(outcome="resolved", reason="the firing run changed "
                                        "nothing, so on_resolved has nothing to revert")
                        return await self.records.finish(decision)
                    if changed != (gc.target or ""):
                        # The episode is the sender's fingerprint and startsAt: another object
                        # under them (or a target a reload changed) was never changed by it.
                        decision.update(outcome="escalated", reason=(
                            f"the firing run changed {changed or 'no target'}, not this "
                            f"alert's target {gc.target or '(none)'}: on_resolved was not run; "
                            "what it changed stays in place"))
                        return await self.records.finish(decision, escalate=True)
                # It undoes its own episode's change of this target: not held back by the
                # cooldown of others' changes since (`Guards._restores`).
                gc.reverts = gc.target if changed == (gc.target or "") else None
            elif reverts:  # a dry run plans it as live runs it after its firing run's change
                gc.reverts = gc.target
            if steps:  # a revert is a change like any other: the same guards hold
                block = await self.guards.before_execution(gc, resolving=True)
        else:
            gc.pause = (pause,)  # read with the execution, just now: nothing waited since
            block = await self.guards.before_execution(gc)
        if block and resolving and reverts:  # the change it would revert stays: tell a human
            block = replace(block, detail=f"{block.detail}; what the firing run changed stays "
                            "in place", escalate=True)
        elif block and resolving:  # only notes or evidence after recovery: nobody to page
            block = replace(block, escalate=False)
        if block:
            if block.escalate:  # the human who takes over sees what automation would do
                decision["would_run"] = plans.would_run(steps, ctx)
            return await self.records.blocked(decision, block, gc)
        decision["outcome"] = "running"  # visible in the API from its first journal entry
        if gc.mode == "live":  # a dry run calls and waits for nothing: one record, the last
            # Recorded with the run's first journal entry (no record, no journal), in its write.
            self.records.unrecorded.add(execution_id)
        outcome = await self._run_steps(decision, steps, ctx, gc, resumed=existing is not None)
        if outcome is None:  # stopped at a guard or an approval; recorded already
            return decision
        return await self.records.conclude(decision, outcome, gc, resolving)

    async def resume(self, decision: dict[str, Any], approved: bool = True) -> dict[str, Any]:
        """Run a stored execution again (after an approval is decided: `approved` or not); its
        journal skips done steps."""
        pb = self.rules.get(decision["playbook"] or "")
        try:
            alert = Alert.from_dict(decision["alert"])
            group = Group.from_dict(decision.get("group") or {})
        except Exception as exc:  # a bug (a record it cannot read): said, never left blocked
            return await self.records.internal_error(dict(decision), exc)
        if pb is None:  # a reload removed it: nothing more can run, and a human must know
            return await self.records.finish(
                await approvals.unloaded(self.store, decision, approved), escalate=True)
        return await self.execute(pb, alert, group, alert.dedupe_key)

    async def expire_approvals(self) -> int:
        """Approvals left pending past their TTL expire (`approvals.expire`)."""
        return await approvals.expire(self.records, self.inflight, self.clock())

    async def _run_steps(self, decision: dict[str, Any], steps: tuple[Step, ...],
                         ctx: dict[str, Any], gc: GuardContext, resumed: bool) -> str | None:
        # A live run's first journal entry carries its record: none recorded, nothing journaled.
        journal = await self.store.completed_steps(decision["id"]) if resumed else {}
        if unsaved := self.records.unsaved.get(decision["id"]):  # its last attempt's, unwritten
            journal[unsaved[0]] = unsaved[1]
        step_records: list[dict[str, Any]] = []
        decision["steps"] = step_records
        for index, step in enumerate(steps):
            done = journal.get(index)
            if done and (done["name"], done["action"]) != (step.name, step.action):
                changed = (f"the playbook changed since this execution started (step "
                           f"{index + 1} was {done['name']!r}, now {step.name!r})")
                # Its journal as it stands, the step it was in failed: none left `running`.
                await self.records.fail_running_steps(decision, f"interrupted while running, "
                                                      f"and not resumed: {changed}")
                decision["reason"] = (f"{changed}; not resumed against different steps: "
                                      f"{changes(decision)}")
                return "failed"
            # Its admission's answer was lost (an outage) before its call, in this process:
            # the intent may be journaled, but the call was never sent.
            unsent = done is not None and self.records.unsent_step(decision["id"]) == index
            if done and done["outcome"] == "running" and not unsent and not ACTIONS[
                    step.action].repeatable(done["params"]):
                # A crash interrupted this mutation: it may or may not have happened.
                done.update(outcome="failed", uncertain=True,
                            detail="interrupted while running (a restart, or its result could "
                            "not be recorded); it may or may not have taken effect, so it is "
                            "not repeated")
                step_records.append(done)
                await self.records.journal(decision, index, done)
                decision["reason"] = f"step {step.name!r} was interrupted: verify its effect by hand"
                return "failed"
            if done and done["outcome"] not in ("blocked", "running"):
                step_records.append(done)
                ctx["steps"][step.name] = template_context.step_view(done)
                # A failure journaled before the run's final record (an interrupted change,
                # failed as such, then the store refused or a crash cut off that record):
                # decided again as it was then, never continued past as if it had succeeded.
                if done["outcome"] == "failed" and (stop := after_failure(decision, step, done)):
                    return stop
                if done["outcome"] == "cancelled":  # so is a change the resolution cancelled
                    return after_cancel(decision, step.name, done, step_records,
                                        gc.playbook.resolution_verifies)
                continue
            if unsaved := self.records.unsaved.get(decision["id"]):  # before the next step
                await self.records.journal(decision, *unsaved)
                del self.records.unsaved[decision["id"]]  # kept until written (`ended`)
            if gc.mode != "dry-run" or not len(step_records) % PLAN_CHUNK \
                    or not turns.held(turns.LONG):
                # A step is a chunk of its own; a plan's steps (nothing called, nothing written
                # between, tens of us each) are one, up to PLAN_CHUNK of them: a turn costs
                # the loop ~8 us, and a plan of any length in one chunk stalled intake for it.
                # Nor past `turns.LONG`: a playbook's first plans made chunks of 3-27 ms in a
                # storm's first seconds, most of its slowest 1 % of acknowledgements.
                await turns.take()
            if id(step) not in self.plans.compiled:
                await self.plans.compile_ahead(step)
            journaled = self.plans.planned(step, gc.alert.labels) if gc.mode == "dry-run" else None
            key = self.plans.key(step, ctx) if gc.mode == "dry-run" and journaled is None \
                and done is None else None
            if key is not None and journaled is None:
                journaled = plans.replanned(step, key[1], gc.alert.labels, self.guards)
            if journaled is not None:
                step_records.append(journaled)
                ctx["steps"][step.name] = template_context.step_view(journaled)
                continue
            # Resumed after its approval (the approver saw these parameters), or repeated
            # after a restart interrupted it: a reload since may have changed the step under
            # its name and action.
            asked = done if done and ((done["outcome"] == "running" and done.get("mutating"))
                                      or done.get("guard") == "approval_pending") else None
            keep: list[tuple[dict[str, Any] | None, bool]] | None = [] if key else None
            record = await self.steps.run(step, ctx, gc, journal=(decision, index), asked=asked,
                                          keep=keep, admitted=unsent)
            journaled = record.to_dict()  # redacted once: recorded, shown and templated
            if gc.mode == "dry-run":
                self.plans.keep(step, record, journaled)
            if key is not None and keep:
                plans.remember(key[0], journaled, keep[0])
            step_records.append(journaled)
            if gc.mode != "dry-run":  # a plan runs nothing: it is stored with its decision
                # Journaled with what follows: the next step's start, or the final record
                # (before the note, if one goes out: `Records.finish`).
                self.records.unsaved[decision["id"]] = (index, journaled)
            ctx["steps"][step.name] = template_context.step_view(journaled)
            if record.outcome == "blocked":
                await self.records.blocked(decision, Block(record.guard, record.detail), gc,
                                           step=step.name)
                return None
            if record.outcome == "cancelled":
                return after_cancel(decision, step.name, journaled, step_records,
                                    gc.playbook.resolution_verifies)
            if record.outcome == "failed" and (stop := after_failure(decision, step, journaled)):
                return stop
        return records.after_steps(decision, step_records)

    def _mode(self, pb: Playbook | None, dry_run: bool = False) -> str:
        return "dry-run" if dry_run or self.mode != "live" or (pb and pb.dry_run) else "live"

    def _decision(self, execution_id: str, alert: Alert, pb: Playbook | None,
                  existing: dict[str, Any] | None = None, dry_run: bool = False
                  ) -> dict[str, Any]:
        return {
            "id": execution_id,
            "created_at": (existing or {}).get("created_at") or self.store.now_iso(),
            "fingerprint": alert.fingerprint,
            "alertname": alert.alertname,
            "status": alert.status,
            "playbook": pb.name if pb else None,
            "mode": self._mode(pb, dry_run),
            "outcome": "planned",
            "reason": "",
            "target": None,
            "steps": [],
            "escalation": None,
            "alert": alert.to_dict(),
        }


def _repeats(interrupted: list[dict[str, Any]] | None, target: str | None,
             steps: tuple[Step, ...], step_targets: tuple[str, ...]) -> Block | None:
    """A new run's block when a stale run of its alert (`Engine._stale`: interrupted, its
    playbook renamed or changed since) changed or may have changed its target, and it would
    change something too: it may repeat that change (a second POST, a second restart), and
    nobody can know whether the first took effect. A human looks; nothing is run."""
    if not interrupted or not any(ACTIONS[s.action].mutates(s.params) for s in steps):
        return None  # notes and evidence repeat nothing
    targets = (target, *step_targets)  # none of them: another object, changed by nobody
    for run in interrupted:
        if made_change(run) and (target is None or run.get("target") in (None, *targets)):
            return Block("interrupted_run", (
                f"execution {run['id']} of playbook {run['playbook']!r} on this alert was "
                f"interrupted, and {changes(run)}; its playbook is no longer loaded as it "
                "was, so it is not resumed, and this run is not started: it could repeat "
                "that change. Check its effect, then act by hand"))
    return None

