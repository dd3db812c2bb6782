"""What an execution writes, and when: its journal, its final record and its note.

A live run's records are written late, each with the next write (its `running` record with its
first journal entry, a step's result with the next step's start or the final record), so
what is still unwritten is kept here, per execution, until a write carries it.
"""

from __future__ import annotations

import contextvars
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .. import logs, redact, turns
from ..alerts import Alert, dedupe_key
from ..escalation import Escalator
from ..guards import Block, GuardContext, Guards
from ..metrics import Metrics
from ..playbooks.models import Playbook, Step
from ..store.base import Event, Store, StoreUnavailable
from ..store.packing import awaiting

log = logging.getLogger("remediator.engine")
UNSENT_FRESH = 60.0  # seconds: see Records.unsent_step
# (execution id, inbox item id) of the alert this task processes: that execution's final
# record also marks the item done, in one write; None once it has (`Engine.process`).
finishing: contextvars.ContextVar[tuple[str, int] | None] = contextvars.ContextVar(
    "finishing", default=None)


class Unrecorded(Exception):
    """An execution's failure could not be recorded (not by an outage): its alert is
    processed again, with backoff, as after an outage."""


@dataclass
class Records:
    """The writes of every execution in this process, and what each has not written yet."""

    store: Store
    guards: Guards
    # The loaded playbook of a name (a reload replaces the rule set: read at each note).
    playbook: Callable[[str], Playbook | None]
    escalator: Escalator | None = None
    metrics: Metrics | None = None
    # Live runs whose `running` record is still to be written (with their first journal
    # entry), and the step result of each to be journaled with what follows (id -> entry).
    unrecorded: set[str] = field(default_factory=set)
    unsaved: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)
    # Live runs whose success (which the circuit counts) is not written yet, by the dedupe
    # key of their alert: each keeps its target until it is, across the retries of a write
    # the store refused (`Engine.execute`, `let_go`).
    uncounted: dict[str, str] = field(default_factory=dict)
    # Live runs whose attempt ended before a write it owed was made, by their alert's dedupe
    # key, until its retry here writes it or the alert is let go (`let_go`): their step result
    # in `unsaved`, and the step whose change's admission was not answered (`unsent`: its
    # call never sent, though the admission and its intent may have been committed). Dropped,
    # the retry found that step `running` in the journal and took a change it knew done, or
    # never sent, for one that may have happened: the run stopped halfway, "verify by hand".
    kept: dict[str, str] = field(default_factory=dict)
    unsent: dict[str, tuple[int, float]] = field(default_factory=dict)
    # The approvals (`execution:step`) the last maintenance pass here found pending: one gone
    # since was decided, and its run is read once (`approvals.expire`).
    pending_seen: set[str] = field(default_factory=set)

    def mark_unsent(self, execution_id: str, index: int) -> None:
        """Step `index`'s admission was not answered: its call is not sent."""
        self.unsent[execution_id] = (index, time.monotonic())

    def unsent_step(self, execution_id: str) -> int | None:
        """The step whose admission was not answered, if that was at most UNSENT_FRESH ago:
        its limits were reserved as of the admission (cooldown, rate limit, budget), so a
        call made later would be counted as made then, another alert's cooldown on the
        target ending before it should. Later, the step is taken as interrupted (uncertain,
        a human looks), as before the answer's loss was remembered."""
        entry = self.unsent.get(execution_id)
        if entry is None or time.monotonic() - entry[1] > UNSENT_FRESH:
            return None
        return entry[0]

    async def let_go(self, key: str) -> None:
        """The alert `key` is no longer processed here (decided, given up, taken over by
        another replica): the targets its runs kept for a success still unwritten are let
        go. Let go when the write was refused, another alert on the target found it free
        before the retry and changed it again, uncounted by the circuit."""
        for execution_id in [e for e, k in self.kept.items() if k == key]:
            del self.kept[execution_id]
            self.unsaved.pop(execution_id, None)
            self.unsent.pop(execution_id, None)
        for execution_id in [e for e, k in self.uncounted.items() if k == key]:
            del self.uncounted[execution_id]
            try:
                await self.guards.release_all(execution_id)
            except Exception:  # the process is leaving it: a lease it no longer renews expires
                log.exception("cannot release the target of %s", execution_id,
                              extra={"execution_id": execution_id})

    async def ended(self, execution_id: str, key: str) -> None:
        """An execution's attempt for the alert `key` is over, recorded or not: what it left
        unwritten is kept for the alert's retry here (`kept`), and its targets let go unless
        a success still to be written keeps them."""
        if execution_id in self.unsaved or execution_id in self.unsent:
            self.kept[execution_id] = key
        self.unrecorded.discard(execution_id)
        if execution_id not in self.uncounted:
            await self.guards.release_all(execution_id)

    async def conclude(self, decision: dict[str, Any], outcome: str, gc: GuardContext,
                       resolving: bool = False) -> dict[str, Any]:
        """The final record of a run whose steps ended `outcome`: its note if one is due,
        its success counted by the circuit."""
        pb = gc.playbook
        wants_note = outcome in ("failed", "escalated") or (
            pb.escalation is not None and pb.escalation.always and not resolving)
        # The guards judge the steps (a circuit counts successful remediations), not the
        # label the decision gets (`escalated` when the playbook always escalates).
        events = await self.guards.after_execution(gc, "resolved" if resolving else outcome,
                                                   note=wants_note)
        if outcome == "succeeded":
            if resolving:
                outcome = "resolved"
            elif gc.mode == "dry-run":
                outcome = "planned"
            elif wants_note:
                outcome = "escalated"
        decision["outcome"] = outcome
        return await self.finish(decision, escalate=wants_note, events=events)

    async def blocked(self, decision: dict[str, Any], block: Block, gc: GuardContext,
                      step: str | None = None) -> dict[str, Any]:
        decision.update(outcome="blocked", reason=str(block), blocked_step=step)
        if block.guard == "approval_pending":
            # What its playbook said when it blocked: a resolution may withdraw the approval
            # after a reload changed or removed the playbook (`approvals.verifies`).
            decision["resolution_verifies"] = gc.playbook.resolution_verifies
        await self.guards.release(gc)  # a blocked execution holds nothing (an approval resumes it)
        if self.metrics:
            self.metrics.child(self.metrics.guard_blocks, block.guard).inc()
        return await self.finish(decision, escalate=block.escalate)

    async def internal_error(self, decision: dict[str, Any], exc: Exception) -> dict[str, Any]:
        """The one record of a bug met while deciding (in an execution or around it): the
        decision `failed`, naming the error (redacted with the reason: `finish`), the step it
        interrupted failed too, and a note: an acknowledged alert never ends unannounced."""
        log.error("execution %s failed unexpectedly", decision["id"], exc_info=exc,
                  extra={"execution_id": decision["id"]})
        decision.update(outcome="failed", reason=f"internal error: {type(exc).__name__}: "
                        f"{exc}; nothing further was done")
        for name in await self.fail_running_steps(decision, redact.text(
                f"internal error while running or recording it: {type(exc).__name__}: {exc}")):
            decision["reason"] = f"step {name!r} failed: {decision['reason']}"
        return await self.finish(decision, escalate=True)

    async def interrupted(self, decision: dict[str, Any], why: str) -> dict[str, Any]:
        """The final record of a run a restart (or a replica's end) interrupted and that is
        not resumed (`why`): `failed`, its journal in it, what it changed or may have changed
        named, the step it was in failed (uncertain if a change), and a note."""
        decision.update(outcome="failed", reason="")
        await self.fail_running_steps(decision, "interrupted while running (a restart, or its "
                                      f"result could not be recorded), and not resumed: {why}")
        decision["reason"] = f"interrupted and not resumed: {why}; {changes(decision)}"
        return await self.finish(decision, escalate=True)

    async def fail_running_steps(self, decision: dict[str, Any], detail: str) -> list[str]:
        """The run's journaled steps as its decision's, none left `running` in its final
        record: the one that was running failed (uncertain if it was a change, which may
        have taken effect), with `detail`. Returns the names of those it failed."""
        journal = await self.store.completed_steps(decision["id"])
        if unsaved := self.unsaved.get(decision["id"]):  # journaled with the final record
            journal[unsaved[0]] = unsaved[1]
        decision["steps"] = [journal[i] for i in sorted(journal)]
        failed = []
        for index, step in sorted(journal.items()):
            if step["outcome"] != "running":
                continue
            step.update(outcome="failed", uncertain=bool(step.get("mutating")), detail=detail)
            if step["uncertain"]:
                step["detail"] += "; it may or may not have taken effect: check by hand"
            await self.store.save_step(decision["id"], index, step)
            failed.append(step["name"])
        return failed

    async def finish(self, decision: dict[str, Any], escalate: bool = False,
                     events: list[Event] | None = None) -> dict[str, Any]:
        decision["finished_at"] = self.store.now_iso()
        decision["reason"] = redact.text(decision.get("reason") or "")
        if events:  # its target is kept until the success is written, whatever is refused
            alert = decision["alert"]
            self.uncounted[decision["id"]] = dedupe_key(alert["fingerprint"],
                                                        alert["startsAt"], alert["status"])
        if escalate and self.escalator is not None:  # without a playbook: the default sinks
            # A success the circuit counts is recorded before the note goes out, and the
            # target held until then (`Guards.after_execution`), then let go: a slow sink
            # must neither hold it nor let the playbook run on it again uncounted.
            for kind, key, at, data in events or ():  # durably, as the guards ask
                await self.store.record_event(kind, key, at, data, durable=True)
            if events:  # counted: the target is let go before the note (a slow sink)
                del self.uncounted[decision["id"]]
                await self.guards.release_all(decision["id"])
            events = None
            if unsaved := self.unsaved.get(decision["id"]):  # so is the journal
                await self.journal(decision, *unsaved)
                del self.unsaved[decision["id"]]  # written: kept until then, if refused
            # Rendering the note is a chunk of its own, recording the decision (encoding it)
            # another; but a dry run's note continues its plan's chunk (nothing was called or
            # written since) unless that ran for `turns.LONG` (a playbook's first plan), and
            # so does its record unless something waited since or the chunk ran for
            # `turns.SLICE` already (a turn is a loop iteration, a wakeup and a resumption of
            # the whole await chain). The plan's turn stays: the target lock is held across
            # it, where another alert of the playbook is coalesced. A playbook's first note
            # compiles its templates first, a chunk each.
            dry = decision["mode"] == "dry-run"
            pb = self.playbook(decision["playbook"] or "")
            await self.escalator.compile_ahead(pb)
            if not (dry and turns.held(turns.LONG)):
                await turns.take()
            try:
                decision["escalation"] = await self.escalator.escalate(
                    decision, pb, deliver=decision["mode"] == "live")
            except StoreUnavailable:
                raise  # nothing can be recorded now: the inbox item is retried
            except Exception as exc:  # a broken note must not leave the decision `running`
                log.exception("escalation of %s failed", decision["id"],
                              extra={"execution_id": decision["id"]})
                decision["escalation"] = {"severity": "warning", "deliveries": {},
                                          "error": redact.text(f"{type(exc).__name__}: {exc}"),
                                          "note": ""}
            if not (dry and turns.held()):
                await turns.take()
        item = finishing.get()
        finishes = item[1] if item is not None and item[0] == decision["id"] else None
        unsaved = self.unsaved.get(decision["id"])
        await self.store.save_execution(decision, events, finishes=finishes,
                                        steps=dict([unsaved]) if unsaved else None,
                                        durable=bool(events))
        resumed = time.perf_counter()
        self.uncounted.pop(decision["id"], None)
        self.unsaved.pop(decision["id"], None)
        self.unsent.pop(decision["id"], None)
        self.kept.pop(decision["id"], None)
        self.unrecorded.discard(decision["id"])
        if self.escalator is not None:  # recorded: a later note of its execution is news
            self.escalator.recorded(decision["id"])
        if finishes is not None:
            finishing.set(None)
        if self.metrics:
            self.metrics.child(self.metrics.executions, decision.get("playbook") or "",
                               decision["outcome"]).inc()
        logs.info(log, f"decision {decision['outcome']}: {decision['reason']}"
                  if decision.get("reason") else f"decision {decision['outcome']}",
                  {"execution_id": decision["id"], "fingerprint": decision["fingerprint"],
                   "playbook": decision.get("playbook"), "outcome": decision["outcome"]})
        if finishes is not None:  # no turn since its write (it finished the item): this
            # tail is still processing's time, not intake's, for processing's share
            turns.turns().charge(time.perf_counter() - resumed)
        return decision

    async def journal(self, decision: dict[str, Any], index: int, record: dict[str, Any],
                      admit: tuple[GuardContext, Step, dict[str, Any]] | None = None,
                      reserved: bool = False) -> Block | None:
        """Journal a step record; a live run's first carries its `running` record (still
        running even when journaled just before its note: a crash then resumes the run).
        With `admit` (a change's intent), only if the change is admitted in that write
        (`reserved`: as `Guards.admit`); else the block that says why not, and nothing is
        written."""
        first = dict(decision, outcome="running") if decision["id"] in self.unrecorded else None
        entry = (decision["id"], index, record, first)
        if admit is not None:
            if block := await self.guards.admit(*admit, entry, reserved=reserved):
                return block
        else:
            await self.store.save_step(*entry)
        self.unrecorded.discard(decision["id"])
        return None


def after_failure(decision: dict[str, Any], step: Step, record: dict[str, Any]) -> str | None:
    """A failed step's outcome for its run (None: the run continues, `on_failure:
    continue`), its reason recorded."""
    decision["reason"] = f"step {step.name!r} failed: {record.get('detail') or ''}"
    if record.get("uncertain"):  # a change in an unknown state: a human must look
        return "failed"
    if step.on_failure == "continue":
        return None
    return "escalated" if step.on_failure == "escalate" else "failed"


def after_steps(decision: dict[str, Any], records: list[dict[str, Any]]) -> str:
    """The outcome of a run whose every step ran (`on_failure: continue` past failures):
    `succeeded`, unless what it was for did not happen: a change failed (continue lets the
    steps after it run, it does not make the change happen), or no step succeeded (every
    piece of evidence missing). Then `escalated`, its reason said: a human must know."""
    failed = [r for r in records if r["outcome"] == "failed"]
    if not failed:
        return "succeeded"
    change = next((r for r in failed if r.get("mutating")), None)
    if change is not None:
        why = f"change {change['name']!r} failed and the run went on (on_failure: continue)"
    elif any(r["outcome"] in ("succeeded", "planned") for r in records):
        return "succeeded"  # best-effort evidence, some of it gathered: the reason names a gap
    else:
        why = "no step succeeded (each failed under on_failure: continue)"
    decision["reason"] = f"{why}; {decision.get('reason') or ''}".rstrip("; ")
    return "escalated"


def after_cancel(decision: dict[str, Any], step: str, record: dict[str, Any],
                 records: list[dict[str, Any]], verifies: bool = True,
                 why: str = "resolution_verifies: false") -> str:
    """The run's outcome once the alert's resolution cancelled a step (its reason recorded):
    it stops there, whether it just happened or is read back from the journal. `verifies`:
    the playbook's `resolution_verifies`; false, a change is left unverified, escalated,
    `why` said."""
    changed = [r for r in records if r.get("mutating") and r["outcome"] == "succeeded"]
    when = "before" if record.get("mutating") else "while"
    what = "; it was not run" if record.get("mutating") else " waited"
    if changed and not verifies:  # the alert may clear before the fix completes: a human looks
        decision["reason"] = (f"the alert resolved {when} step {step!r}{what}, after "
                              f"{changed[-1]['name']!r} changed something: not taken as its "
                              f"verification ({why}); the steps that would "
                              "have seen the change complete did not run")
        return "escalated"
    if changed:  # the fix was applied and the alert cleared: that is the verification
        decision["reason"] = f"verified by the alert's resolution {when} step {step!r}{what}"
        return "succeeded"
    decision["reason"] = f"the alert resolved {when} step {step!r}{what}"
    return "resolved"


def readable(data: Any) -> Alert:
    """A stored alert as far as it can be read, for the record of an error reading it: every
    field a decision shows, of the type it is shown as (an older or damaged row may lack
    one)."""
    data = data if isinstance(data, dict) else {}

    def strings(value: Any) -> dict[str, str]:
        return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}

    ends_at = data.get("endsAt")
    return Alert(status=str(data.get("status") or "firing"), labels=strings(data.get("labels")),
                 annotations=strings(data.get("annotations")),
                 starts_at=str(data.get("startsAt") or ""),
                 ends_at=None if ends_at is None else str(ends_at),
                 generator_url=str(data.get("generatorURL") or ""),
                 fingerprint=str(data.get("fingerprint") or ""))


def made_change(run: dict[str, Any] | None) -> bool:
    """Did this run make a change (a mutation that succeeded, or one interrupted or failed
    `uncertain` that may have)?"""
    return any(s.get("mutating") and (s["outcome"] in ("succeeded", "running")
                                      or s.get("uncertain"))
               for s in (run or {}).get("steps") or [])


def changes(run: dict[str, Any]) -> str:
    """What a run changed or may have changed, from its journal: what a human checks."""
    done = [f"{s['name']!r} ({s['action']})" for s in run.get("steps") or []
            if s.get("mutating") and s["outcome"] == "succeeded"]
    maybe = [f"{s['name']!r} ({s['action']})" for s in run.get("steps") or []
             if s.get("mutating") and s["outcome"] != "succeeded"
             and (s["outcome"] == "running" or s.get("uncertain"))]
    said = ([f"it changed {', '.join(done)}"] if done else []) + (
        [f"may have changed {', '.join(maybe)}"] if maybe else [])
    on = f" on {run['target']}" if run.get("target") else ""
    return " and ".join(said) + on if said else "it changed nothing"


def resumable(decision: dict[str, Any]) -> bool:
    """Interrupted (`running`), or waiting for an approval that may have come: everything
    else is final, including every other block."""
    return decision["outcome"] == "running" or awaiting(decision) is not None


def execution_id(dedupe_key: str, playbook: str) -> str:
    """Deterministic, so a restart finds the execution (and its journal) it interrupted."""
    return hashlib.sha256(f"{dedupe_key}\x00{playbook}".encode()).hexdigest()[:20]
