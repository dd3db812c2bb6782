"""One step of a run: its condition, its parameters rendered and checked, its guards, then
its plan (a dry run) or its call. What is journaled around the call is `records.py`'s; the
loop over a run's steps, and what each outcome means for the run, `pipeline.py`'s."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from .. import redact, templating
from ..actions.backends import Backends
from ..actions.base import ActionContext
from ..actions.registry import ACTIONS
from ..guards import RESOLVED_BLOCK, GuardContext, Guards
from ..metrics import Metrics
from ..playbooks.models import Step, Target
from ..templating import context as template_context
from ..templating import validators
from . import plans
from .executor import Executor, Refused, StepRecord
from .inflight import InFlight
from .plans import Plans
from .records import Records

log = logging.getLogger("remediator.engine")


@dataclass
class Steps:
    """Runs one step for an engine (its parts, shared with it)."""

    guards: Guards
    records: Records
    plans: Plans
    inflight: InFlight
    executor: Executor
    backends: Backends
    metrics: Metrics | None
    # The service is stopping (`Service.stop`): no change is started, its run stops before
    # its admission and resumes from there after the restart. A step under way finishes.
    stopping: bool = False

    async def run(self, step: Step, ctx: dict[str, Any], gc: GuardContext,
                  journal: tuple[dict[str, Any], int], asked: dict[str, Any] | None = None,
                  keep: list[tuple[dict[str, Any] | None, bool]] | None = None,
                  admitted: bool = False) -> StepRecord:
        """One step's record. `asked`: its journaled record, when it is resumed after its
        approval or repeated after a restart interrupted it (run only as it was then).
        `keep`: a dry run's plan that is a function of what its templates read gets what
        must still be judged for each alert (`plans.replanned`): the checked parameters the
        alert's own check is asked about (None: not asked), and whether the scope guard is.
        `admitted`: its change was admitted, its call never sent (`Records.unsent`)."""
        action = ACTIONS[step.action]
        record = StepRecord(name=step.name, action=step.action, params={}, outcome="planned")
        planning = gc.mode == "dry-run"
        condition = ""  # in dry-run, a `when` that depends on results not known yet
        try:
            if step.when and not templating.evaluate(step.when, ctx):
                record.outcome, record.detail = "skipped", f"condition false: {step.when}"
                if keep is not None:
                    keep.append((None, False))
                return record
        except templating.TemplateError as exc:
            if not (planning and plans.only_at_run_time(exc)
                    and plans.reads_results("{{ " + step.when + " }}")):
                record.outcome, record.detail = "failed", str(exc)
                return record
            condition = f"if {' '.join(step.when.split())} (decided at run time): "
        try:
            try:
                params, problems, rendered = self.plans.checked(action, step, ctx)
            except templating.TemplateError as exc:
                if not (planning and plans.only_at_run_time(exc)):
                    raise
                # A parameter that computes on an earlier result (a `check` calling
                # `steps.logs.result.get(...)`) cannot render in a plan: it stands as its
                # placeholder, as one rendered whole does, and every other parameter is
                # still rendered and checked (a bad label is refused, never planned).
                params, problems, rendered = plans.checked_planned(action, step.params, ctx)
        except templating.TemplateError as exc:
            record.outcome, record.detail = "failed", str(exc)
            return record
        known: list[str] = []  # what the alert's check refuses, whatever earlier results are
        alone: bool | None = bool(params) and planning and plans.judged_alone(
            action, step.params, rendered, problems)
        if alone:
            # A plan judges the alert's check on the parameters it reads when none of them
            # waits for an earlier result: a silence whose matchers leave a label out is
            # refused, as the run refuses it, though its comment reads a result.
            known = plans.for_alert(action, params, gc.alert.labels)
        elif params and not problems:
            problems = [(None, m) for m in plans.for_alert(action, params, gc.alert.labels)]
            alone = None  # judged with every parameter: what it found decides the plan
        record.params = params or rendered
        if problems or known:
            # Only a template that reads an earlier step's result can hold a placeholder;
            # a label that merely looks like one is refused like any other bad value.
            refused = [m for n, m in problems
                       if not (planning and plans.waits(step.params, rendered, n))] + known
            if not refused:
                record.detail = condition + plans.described(
                    action, step.params, {**rendered, **params})
                if keep is not None and alone is not None:
                    # (not when the alert's check found what the placeholders excuse: it may
                    # find nothing for another alert, which is then planned otherwise)
                    keep.append((plans.copied(params) if alone else None, False))
                return record
            # A hostile or broken label value stops here, before any call is made.
            record.outcome = "failed"
            record.detail = "refused: " + "; ".join(refused)
            return record
        changed = asked is not None and redact.value(params) != redact.value(asked["params"])
        if changed and asked["outcome"] == "running":  # as it was, it may have taken effect
            record.outcome, record.params = "failed", asked["params"]
            record.mutating = record.uncertain = True
            record.detail = ("interrupted while running; the playbook now gives "
                             "it other parameters (it was reloaded), so it is not repeated: it "
                             "may or may not have taken effect as it was")
            return record
        record.mutating = action.mutates(params)
        # The alert's resolution is in (being processed here; acknowledged and queued, as when
        # a backlog is drained after an outage, the admission says): the problem went away.
        if record.mutating and gc.alert.status == "firing" and self.inflight.resolved(gc.episode):
            record.outcome, record.detail = "cancelled", RESOLVED_BLOCK.detail
            return record
        if record.mutating and step.target is not None:
            # The step changes its own object: its lock, cooldown and rate limit are that
            # object's, not the playbook target's.
            try:
                gc = replace(gc, target=render_target(step.target, ctx))
            except (templating.TemplateError, ValueError) as exc:
                record.outcome, record.detail = "failed", f"refused: invalid step target: {exc}"
                return record
        scoped = not record.mutating and bool(action.scope(params))
        # A read in a namespace a label chose is held to the namespace lists (guards.read_scope).
        read_block = None if record.mutating else self.guards.read_scope(step, params)
        if record.mutating or scoped or read_block:  # evidence writes, not mutating
            block = (await self.guards.before_mutation(gc, step, params) if record.mutating
                     else read_block or self.guards.scope(step, params))
            if block is RESOLVED_BLOCK:
                record.outcome, record.detail = "cancelled", block.detail
                return record
            if block is not None:
                record.outcome, record.guard, record.detail = "blocked", block.guard, block.detail
                return record
        if changed:  # approved, as the approver saw it then
            record.outcome = "failed"
            record.detail = ("refused: its parameters changed since its approval was asked (the "
                             "playbook was reloaded); it was not run: what was approved is not "
                             "what would run")
            return record
        if planning:
            approval = " (after approval)" if step.approval and record.mutating else ""
            record.detail = condition + plans.described(action, step.params, params) + approval
            if keep is not None and not record.mutating:
                keep.append((plans.copied(params), scoped))
            return record
        record.outcome = "running"  # the intent, journaled once a call slot is held
        journaled = False

        async def intent() -> None:
            nonlocal journaled
            if not journaled:
                if record.mutating and self.stopping:  # the run resumes here after restart
                    log.info("step %r not started: shutting down", step.name,
                             extra={"execution_id": gc.execution_id})
                    raise asyncio.CancelledError
                # A change is admitted in the very write that journals its intent, once its
                # call slot is held: a pause thrown on any replica until then stops it here.
                try:
                    block = await self.records.journal(
                        *journal, record.to_dict(), reserved=admitted,
                        admit=(gc, step, params) if record.mutating else None)
                except Exception:  # committed or not, its call is not sent: the alert's
                    # retry here may run it, not take it for a change interrupted mid-call
                    self.records.mark_unsent(gc.execution_id, journal[1])
                    raise
                if block is not None:
                    raise Refused(block, cancelled=block is RESOLVED_BLOCK)
                journaled = True
                self.records.unsent.pop(gc.execution_id, None)
            # Before each attempt, the run must still be this process's: its lease may have
            # lapsed while the admission was answered or a retry waited (the process frozen,
            # cut off), and the replica that took it over resumes it from this intent.
            self.records.store.fence()

        actx = ActionContext(backends=self.backends, log=log, execution_id=gc.execution_id,
                             step=step.name,
                             fingerprint=gc.alert.fingerprint, results=ctx["steps"])
        if record.mutating or gc.alert.status == "resolved" or not gc.playbook.resolution_verifies:
            # A change in flight is never interrupted; nor is the resolution's own work; nor
            # a wait of a playbook whose alert may clear before its fix is seen to complete
            # (`resolution_verifies: false`): the wait decides, not the resolution.
            await self.executor.run(action, params, actx, record, step.timeout, step.retries,
                                    intent)
        else:
            await self._cancellable(gc, action, params, actx, record, step, intent)
        if self.metrics:
            self.metrics.child(self.metrics.step_seconds, step.action, record.outcome).observe(
                record.duration_seconds)
        return record

    async def _cancellable(self, gc: GuardContext, action: Any, params: dict[str, Any],
                           actx: ActionContext, record: StepRecord, step: Step,
                           intent: Callable[[], Awaitable[None]]) -> None:
        """A read-only step (a wait, a poll) that the alert's resolution may cut short."""
        if not self.inflight.resolved(gc.episode):
            task = asyncio.current_task()
            try:
                with self.inflight.waiting(gc.execution_id):
                    await self.executor.run(action, params, actx, record, step.timeout,
                                            step.retries, intent)
                return
            except asyncio.CancelledError:
                if not self.inflight.resolved(gc.episode):
                    raise  # shutdown, not a resolution
                if task is not None:
                    task.uncancel()
        record.outcome, record.detail = "cancelled", "the alert resolved while this step waited"


def render_target(target: Target | None, ctx: dict[str, Any]) -> str | None:
    """`namespace/kind/name` with each part validated, or None without a target."""
    if target is None:
        return None
    kind = templating.render(target.kind, ctx)
    name = templating.render(target.name, ctx)
    namespace = templating.render(target.namespace, ctx) if target.namespace else ""
    validators.validate("namespace", kind.lower())
    validators.validate("k8s_name" if kind.lower() != "bucket" else "s3_bucket", name)
    if namespace:
        validators.validate("namespace", namespace)
    return template_context.make_target(kind.lower(), namespace, name)


def step_targets(steps: tuple[Step, ...], ctx: dict[str, Any]) -> tuple[str, ...]:
    """The objects the steps with a `target:` of their own change, for this alert (each is
    rendered again when its step runs); one that cannot be rendered, as why."""
    found = []
    for step in steps:
        if step.target is not None:
            try:
                found.append(render_target(step.target, ctx) or "")
            except (templating.TemplateError, ValueError) as exc:
                found.append(f"invalid: {exc}")
    return tuple(found)
