"""An execution blocked on an approval, after it: resumed once decided, expired past its TTL,
withdrawn when its alert resolves; and what a resolution reads of its firing run first.

A blocked run holds nothing (no target, no call slot): its record and the approval's state
in the store are all there is, so each path here reads them again and finishes the run with
one final record, whichever of them comes first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

from ..alerts import Alert
from ..guards import APPROVAL, PENDING, GuardContext, decide_approval
from ..playbooks.models import Playbook
from ..store.base import Store, StoreUnavailable
from ..store.packing import awaiting
from .inflight import InFlight
from .records import Records, Unrecorded, after_cancel, execution_id, made_change, resumable

log = logging.getLogger("remediator.engine")


async def unloaded(store: Store, decision: dict[str, Any], approved: bool) -> dict[str, Any]:
    """The final record (escalated) of a run whose approval was decided after a reload
    removed its playbook: nothing more can run, and a human must know."""
    gone = f"playbook {decision['playbook']!r} is no longer loaded (a reload removed it)"
    step = decision.get("blocked_step")
    journal = await store.completed_steps(decision["id"]) if approved else {}
    if any(r["name"] == step and r["outcome"] != "blocked" for r in journal.values()):
        # Resumed before (its record refused, retried since: Service._retry) and the
        # approved step started then: said not to have run, a human would redo it.
        return _started_unloaded(decision, journal, gone, step)
    return dict(decision, **(
        {"outcome": "failed", "reason": f"{gone}: the approved step {step!r} did not run"}
        if approved else {"reason": f"approval_denied: step {step!r}: approval rejected; "
                                    f"{gone}"}))


def _started_unloaded(decision: dict[str, Any], journal: dict[int, dict[str, Any]], gone: str,
                      step: str) -> dict[str, Any]:
    """An approved execution whose playbook a reload removed after its resume had started the
    step: its journaled steps, one left `running` failed as uncertain (as after a restart)."""
    steps = [dict(journal[i]) for i in sorted(journal)]
    for record in steps:
        if record["outcome"] == "running":
            record.update(outcome="failed", uncertain=bool(record.get("mutating")),
                          detail="interrupted while running; it may or may not have taken "
                          "effect, so it is not repeated")
    return dict(decision, steps=steps, outcome="failed",
                reason=f"{gone}: the approved step {step!r} had been started (its steps say "
                "how far the run got) and nothing more runs; one interrupted may or may not "
                "have taken effect: verify by hand")


# How long after a resolution withdrew an approval the maintenance pass finishes its run
# (`expire`): the resolution does it at once (`withdrawn`), the pass only after one that
# gave up or stopped, not in turn with its retries (backoff up to 60 s). Which writes it is
# decided by a claim (`_holding`), not by this: replicas' clocks may disagree by more.
WITHDRAWN_GRACE = 300.0


async def expire(records: Records, inflight: InFlight, now: float) -> int:
    """Approvals left pending past their TTL expire, and the execution escalates; runs
    whose approval a resolution withdrew and left unfinished are finished. Only the
    pending index is read, never the approval history."""
    store = records.store
    expired = 0
    listed = await store.list_state(PENDING)
    seen = {key[len(PENDING):] for key in listed}
    for key, pending in listed.items():
        name = key[len(PENDING):]
        if "withdrawn_at" in pending:
            if now >= pending["withdrawn_at"] + WITHDRAWN_GRACE:
                await finish_withdrawn(records, inflight, name, pending)
            continue
        if now < pending["expires_at"]:
            continue
        # In the section `Service.approve` decides in: at the TTL, one of them wins. The
        # pending entry stays until the execution's final record is written: removed with
        # the decision, a record the store refused was never tried again (the next pass
        # found nothing pending), and the execution stayed `blocked` on an approval nobody
        # can give. An entry whose approval expired already is this pass's to finish (no
        # approval is accepted past its TTL); its note went out once (`Escalator`).
        async with store.critical("approvals"):
            state = await decide_approval(store, name, "expired", now, unindex=False) \
                or await store.get_state(APPROVAL + name)
        if state is not None and state["status"] == "resolved":
            # Withdrawn, and its resolution stopped before marking the entry (`on_resolved`).
            await finish_withdrawn(records, inflight, name, pending)
            continue
        if state is None or state["status"] != "expired":
            # Decided otherwise, in this section, whose decider removes the entry right
            # after: still here, that removal was refused (or cut off), and nobody
            # comes back for it (the oldest-approval gauge grew forever).
            await store.put_state(key, None)
            continue
        decision = await store.get_execution(name.split(":", 1)[0])
        if decision is not None and resumable(decision):
            decision.update(outcome="escalated", reason=f"approval_pending: step "
                            f"{state['step']!r} was not approved before it expired; it "
                            "did not run")
            await records.finish(decision, escalate=True)
            expired += 1
        await store.put_state(key, None)
    waiting = [f"{run_id}:{step}" for run_id, step in await store.awaiting_approval()]
    # Decided since the last pass here: a run still waiting on one may be unindexed.
    waiting += [name for name in sorted(records.pending_seen - seen - set(waiting))
                if await _unindexed(store, name)]
    for name in waiting:
        if PENDING + name in listed:
            continue
        try:
            expired += await finish_stranded(records, inflight, name, now)
        except StoreUnavailable:
            raise  # the pass is tried again, whole
        except Exception:  # one record that cannot be read or finished holds back no other
            log.exception("cannot finish execution %s, left waiting on an approval",
                          name.split(":", 1)[0])
    records.pending_seen = seen  # (a pass cut short compares its next one with the last)
    return expired


async def _unindexed(store: Store, name: str) -> bool:
    """Whether the run of the approval `name`, decided since the last pass, still waits on
    it with no `awaiting` entry, now indexed: written by a replica of the version before
    the index (a rolling upgrade under way), and left there, its entry gone (that version's
    expiry removed it as it decided, then its record was refused), nothing else finds it.
    One read per approval decided, none of history; indexed, it is finished like any
    other stranded run, by whichever replica's pass, after a restart too."""
    run_id, step = name.split(":", 1)
    try:
        run = await store.get_execution(run_id)
        return run is not None and awaiting(run) == step and \
            await store.index_awaiting(run_id, step)
    except StoreUnavailable:
        raise
    except Exception:  # a record that cannot be read: nothing could finish it either
        log.exception("cannot read execution %s, whose approval was decided", run_id)
        return False


async def finish_stranded(records: Records, inflight: InFlight, name: str, now: float) -> int:
    """The run recorded `blocked approval_pending` on `name` (`execution:step`) with no
    pending entry, finished as an expired approval's is (escalated, its note once): nothing
    else ever would (expiry and withdrawal read only the entries, an approval needs one),
    and its alert was neither remediated nor paged. Older code left such runs (it removed
    the entry as it decided, then the record was refused), and so does any path that loses
    the entry. Left alone while its alert is still to be processed (a resume, a retry, a
    claim a dead replica left): that run records itself."""
    run_id, step = name.split(":", 1)
    run = await records.store.get_execution(run_id)
    if run is None or not resumable(run) or run.get("blocked_step") != step:
        return 0  # (a record of the version before: indexed as its replica left it)
    async with _holding(records.store, inflight, run) as held:
        # Maintenance runs on one replica at a time (`Service.maintain`), and a final record
        # leaves the index: one note.
        return await _finish_stranded(records, name, now) if held else 0


@contextlib.asynccontextmanager
async def _holding(store: Store, inflight: InFlight, run: dict[str, Any]
                   ) -> AsyncIterator[bool]:
    """Whether this holds the blocked `run` as its own run would, to finish it: its place in
    this process (`inflight`) and its firing alert claimed, as an approval's resume claims
    it, on every replica at once. Not while that alert is still to be processed anywhere
    (a resume, a retry, a claim a dead replica left): that run records itself. Held, no
    dispatcher resumes the run meanwhile (a redelivery, acknowledged again once its item
    was pruned, would), nor does another path that finishes it, whatever its clock says;
    a crash leaves the item to be processed again, and the run, resumed, meets what
    decided it."""
    alert = Alert.from_dict(run["alert"])
    if not inflight.start(run["id"], f"{alert.fingerprint}:{alert.starts_at}"):
        yield False
        return
    try:
        if not await store.settled(alert.dedupe_key):
            yield False
            return
        await store.enqueue([(alert.dedupe_key, alert.to_dict(), run.get("group") or {})])
        item = await store.claim_key(alert.dedupe_key)
        if item is None:
            yield False
            return
        try:
            yield True
        finally:  # done (it was, or it was pruned): what the run needs is recorded or not
            await store.finish(item.id)
    finally:
        inflight.finish(run["id"])


async def _finish_stranded(records: Records, name: str, now: float) -> int:
    store = records.store
    run_id, step = name.split(":", 1)
    run = await store.get_execution(run_id)  # claimed: what it says stays true now
    if run is None or not resumable(run) or run.get("blocked_step") != step:
        return 0
    async with store.critical("approvals"):  # where approvals are given and decided
        if await store.get_state(PENDING + name) is not None:
            return 0  # asked since the index was read: expiry's to decide
        lost = await decide_approval(store, name, "expired", now)  # none can be given now
        state = await store.get_state(APPROVAL + name) or {}
        if state.get("status") == "approved":
            # Given, never acted on, and not to be now: said in its state before the record.
            # A crash between this pass's claim and its record left the alert to be
            # processed again, and its run, resumed, acted on the approval after all, late,
            # the run this pass had decided to escalate. Resumed now, it meets this.
            await store.put_state(APPROVAL + name, dict(state, status="lapsed", lapsed_at=now))
    run.update(outcome="escalated", reason=f"approval_pending: step {step!r} "
               f"{_stranded(state, lost is not None)}; it did not run (the run was left "
               "waiting on it, and finished by the maintenance pass)")
    await records.finish(run, escalate=True)
    return 1


def _stranded(state: dict[str, Any], lost: bool) -> str:
    """What became of a stranded run's approval, in its final reason."""
    by = f" by {state['by']}" if state.get("by") else ""
    if lost or not state:
        return "could no longer be approved (its pending approval was lost)"
    never = f"was approved{by}, but the run was never resumed"
    return {"approved": never, "lapsed": never,
            "rejected": f"was rejected{by}",
            "resolved": "was withdrawn: the alert resolved before anyone approved",
            }.get(state["status"], "was not approved before it expired")


async def withdrawn(records: Records, inflight: InFlight, pb: Playbook, alert: Alert,
                    now: float) -> None:
    """This episode's firing run, blocked on an approval its resolution withdrew
    (`Guards.on_resolved`), finished now (`finish_withdrawn`). Read at each attempt of the
    resolution: a record the store refused is finished by its retry, until the
    maintenance pass takes over (`WITHDRAWN_GRACE`)."""
    if not any(s.approval for s in pb.steps):
        return
    run_id = execution_id(replace(alert, status="firing").dedupe_key, pb.name)
    for key, pending in (await records.store.list_state(f"{PENDING}{run_id}:")).items():
        if "withdrawn_at" in pending and now < pending["withdrawn_at"] + WITHDRAWN_GRACE:
            await finish_withdrawn(records, inflight, key[len(PENDING):], pending)


async def finish_withdrawn(records: Records, inflight: InFlight, name: str,
                           pending: dict[str, Any]) -> None:
    """The run blocked on the approval `name` (`execution:step`) that its alert's resolution
    withdrew, finished as a run the resolution stopped before that step is (`after_cancel`):
    left `blocked approval_pending`, nothing else finishes it (no approval can be given,
    and expiry only decides approvals still pending). Written holding the run as its own
    run would (`_holding`): a run of it in progress (a retry of the firing alert) meets the
    resolution before the step and records itself, and the resolution and a maintenance
    pass on another replica (whose clock may put the grace behind it) do not both write
    it; written side by side, the last writer won and both paged. The approval's pending
    entry goes once the record is final: until then the resolution's retries, or the
    maintenance pass, come back for it."""
    store = records.store
    run_id, step = name.split(":", 1)
    run = await store.get_execution(run_id)
    if run is None:
        await _never_recorded(store, name, pending)
        return
    async with _holding(store, inflight, run) as held:
        if not held:
            return
        run = await store.get_execution(run_id)  # held: what it says stays true now
        if run is not None and run["outcome"] == "running":
            return  # interrupted: resumed from its journal, it meets the resolution
        if run is not None and resumable(run) and run.get("blocked_step") == step:
            await _finish_withdrawn(records, run, step)
        await store.put_state(PENDING + name, None)


async def _never_recorded(store: Store, name: str, pending: dict[str, Any]) -> None:
    """A withdrawn approval whose run has no record. While its firing alert is still to be
    processed, that run comes and meets the resolution. Once nothing will process it (its
    blocked record was refused, then a reload removed its playbook: the retry matched
    nothing), the entry goes, with a warning: kept, it was read at every pass for ever.
    Nothing is recorded: nothing ran (a run's first journal entry carries its record), the
    alert resolved, and its approval says withdrawn to whoever comes to approve it; a
    decision made up now would have no playbook to describe it nor rules to page by."""
    episode = pending.get("episode")  # (an entry older than episodes: past its grace)
    if episode is not None and not await store.settled(f"{episode}:firing"):
        return
    log.warning("approval %s was withdrawn (its alert resolved), and its run was never "
                "recorded nor will be (its playbook no longer matches the alert); nothing "
                "ran: its pending entry is dropped", name)
    await store.put_state(PENDING + name, None)


async def _finish_withdrawn(records: Records, run: dict[str, Any], step: str) -> None:
    # The gated step, blocked; or cancelled already: a note is sent after the journal is
    # written (`Records.finish`), so a record refused after it left the step journaled.
    at = [i for i, s in enumerate(run["steps"]) if s["name"] == step]
    if not at or run["steps"][at[-1]]["outcome"] not in ("blocked", "cancelled"):
        return
    record = dict(run["steps"][at[-1]], outcome="cancelled", detail=(
        "approval withdrawn: the alert resolved before anyone approved; it was not run"))
    run["steps"][at[-1]] = record
    records.unsaved[run["id"]] = (at[-1], record)  # journaled with the final record
    pb = records.playbook(run["playbook"] or "")
    try:
        outcome = after_cancel(run, step, record, run["steps"], *verifies(run, pb))
        run["reason"] += " (its approval was withdrawn)"
        if pb is None:  # a reload removed it: recorded all the same, nothing to count
            await records.finish(dict(run, outcome=outcome), escalate=outcome == "escalated")
        else:
            await records.conclude(run, outcome, GuardContext(
                playbook=pb, alert=Alert.from_dict(run["alert"]), execution_id=run["id"],
                mode=run["mode"], target=run.get("target"), resumed=True))
    except StoreUnavailable:
        raise
    except Exception as refused:  # (PostgreSQL: a statement's) not the resolution's own
        # failure: recorded as that, this run stayed blocked. Retried as an outage is.
        raise Unrecorded(f"the record of execution {run['id']}, its approval withdrawn, "
                         f"could not be written: {type(refused).__name__}: {refused}"
                         ) from refused
    finally:  # (blocked, it holds no target: nothing to keep for a refused success)
        records.unsaved.pop(run["id"], None)
        records.uncounted.pop(run["id"], None)


def verifies(run: dict[str, Any], pb: Playbook | None) -> tuple[bool, str]:
    """Whether the resolution verifies a change of `run`, blocked on an approval it withdrew,
    and why not: as its playbook said when it blocked (`Records.blocked`), and as the one
    loaded says, if any. Not when either says not: a reload that removed the playbook left
    the live set nothing to say, and taken as verifying, the run of a playbook that said
    `resolution_verifies: false` was recorded `succeeded`, verified, with no note. A record
    written before the flag was (an older version's) with its playbook gone: not verified."""
    said = run.get("resolution_verifies")
    if said is False or (pb is not None and not pb.resolution_verifies):
        return False, "resolution_verifies: false"
    if pb is None and said is not True:
        return False, (f"its playbook {run['playbook']!r} is no longer loaded, and its record "
                       "does not say whether a resolution verifies its change")
    return True, ""


async def firing_stopped(store: Store, alert: Alert, timeout: float) -> None:
    """Until the episode's firing alert is no longer processed anywhere: a firing run on
    another replica may have passed its last resolution check and not yet journaled the
    change it is about to make. The store knows (its inbox item is held under a live
    claim), so what the run changed is journaled before `changed` reads it."""
    firing = replace(alert, status="firing").dedupe_key
    deadline = time.monotonic() + timeout
    while await store.held(firing):
        if time.monotonic() > deadline:
            log.warning("the firing run of %s is still in progress after %gs; deciding "
                        "its revert without waiting longer", firing, timeout)
            return
        await asyncio.sleep(0.2)


async def changed(store: Store, pb: Playbook, alert: Alert) -> str | None:
    """The target of this episode's firing run if it made a change (a mutation that
    succeeded, or one interrupted or failed `uncertain` that may have), else None. A
    mutation whose result says it changed nothing (`changed: false`: kubernetes.set_env of
    the value already set) is none: on_resolved undoes only what remediator changed, and a
    LOG_LEVEL=DEBUG a human set before the alert fired is theirs, not ours to revert."""
    firing = replace(alert, status="firing").dedupe_key
    run = await store.get_execution(execution_id(firing, pb.name))
    if run and made_change(run):
        run = dict(run, steps=[s for s in run.get("steps") or [] if not _unchanged(s)])
    return (run or {}).get("target") or "" if made_change(run) else None


def _unchanged(step: dict[str, Any]) -> bool:
    """A mutation that succeeded and says it changed nothing."""
    return step["outcome"] == "succeeded" and not step.get("uncertain") \
        and isinstance(step.get("result"), dict) and step["result"].get("changed") is False
