"""A step's parameters checked, and a dry run's plan of it, made once where they depend on
no alert (or only on the values its templates read) and copied for every alert after.

Render and check were a tenth of a storm's processing, and a plan's description and
redaction as much again: most steps are literal, and a templated one reads a few values that
repeat across a storm. A plan also stands for results only known at run time: a parameter
that computes on an earlier step's result is its placeholder (`templating.Pending`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .. import redact, templating
from ..actions.base import check_params, has_template, render_params
from ..actions.registry import ACTIONS, BUILTIN
from ..guards import Guards
from ..playbooks.models import Step
from ..templating import memo as template_memo
from .executor import StepRecord

# Steps whose checked parameters or plans are kept: every loaded one, bounded across reloads.
_LITERAL_MAX = 4096
# A `{{ expression }}` in a plan's text, shown as the placeholder it stands for.
_EXPRESSION = re.compile(r"\{\{-?\s*(.*?)\s*-?\}\}")


@dataclass
class Plans:
    """What is kept per step (by id(step), the step itself beside it: a reload makes new
    ones, whose addresses may be an old one's)."""

    # The checked parameters of steps written without a template (the step, its params and
    # problems): they depend on no alert (`checked`).
    _literal: dict[int, tuple[Step, dict[str, Any], list[tuple[str, str]]]] = field(
        default_factory=dict, repr=False)
    # The planned record of each literal step that a dry run only describes (the step, the
    # secrets redaction knew, the record): it depends on no alert (`planned`).
    _plans: dict[int, tuple[Step, object, dict[str, Any]]] = field(
        default_factory=dict, repr=False)
    # What a dry run's plan of a step with templates (or a `when`) reads (the step, a name
    # for its texts, the texts), None for one without: `key`.
    _plan_texts: dict[int, tuple[Step, str | None, tuple[tuple[str, bool], ...]]] = field(
        default_factory=dict, repr=False)
    # Steps whose texts were compiled, each in a chunk of its own (`compile_ahead`).
    compiled: set[int] = field(default_factory=set, repr=False)

    async def compile_ahead(self, step: Step) -> None:
        """A step's templates and `when` compiled before its first plan or run, each in a
        processing chunk of its own (templating.compile_ahead): its first plan compiled
        them together. Once per step: `compiled` (a step at an address an old one had is
        compiled within its first plan, as before)."""
        action = ACTIONS.get(step.action)
        urls = [v for k, v in step.params.items() if isinstance(v, str) and action is not None
                and k in action.params and action.params[k].kind == "url"]
        await templating.compile_ahead([t for t in _templates(step.params) if t not in urls],
                                       (step.when,) if step.when else (), urls)
        if len(self.compiled) >= _LITERAL_MAX:  # old versions' steps, after reloads
            self.compiled.clear()
        self.compiled.add(id(step))

    def checked(self, action: Any, step: Step, ctx: dict[str, Any]
                ) -> tuple[dict[str, Any], list[tuple[str, str]], dict[str, Any]]:
        """(params, problems, rendered): a step's parameters rendered and validated. A step
        whose parameters hold no template renders the same whatever the alert, so it is
        checked once per playbook version (per Step: a reload makes new ones) and copied
        out. Every templated value is still rendered and checked for each alert, and
        every plugin's step: its checks are not ours to call pure (as the validator says)."""
        cached = self._literal.get(id(step))
        if cached is not None and cached[0] is step:
            return copied(cached[1]), list(cached[2]), step.params
        rendered = render_params(action, step.params, ctx)
        params, problems = check_params(action, rendered, rendered=True)
        if step.action in BUILTIN and not has_template(step.params):  # a plugin's checks
            if len(self._literal) >= _LITERAL_MAX:  # old versions' steps, after reloads
                self._literal.clear()
            self._literal[id(step)] = (step, params, problems)
            params, problems = copied(params), list(problems)
        return params, problems, rendered

    def planned(self, step: Step, labels: Mapping[str, str]) -> dict[str, Any] | None:
        """A dry run's record of a step that only describes what it would do, the same for
        every alert (`keep`), copied; None if it must be planned for this alert. The
        alert's own check still runs (a silence must pin its labels), and a secret
        remembered since it was kept makes it planned (and redacted) again."""
        kept = self._plans.get(id(step))
        if kept is None or kept[0] is not step or kept[1] is not redact.known():
            return None
        record = kept[2]
        if for_alert(ACTIONS[step.action], record["params"], labels):
            return None  # refused for this alert: planned as such, with its reason
        return {**record, "params": copied(record["params"]), "result": {}}

    def key(self, step: Step, ctx: dict[str, Any]
            ) -> tuple[tuple[Any, ...], tuple[bool, Any] | None] | None:
        """(key, kept) of a dry run's plan of a built-in's step with templates or a `when`
        (templating.lookup_together): what it renders, checks, describes and redacts is a
        function of the values its texts read, as a kept render is (a built-in's checks are
        pure: `checked`), so a storm's plans of it are made once per distinct value (each
        was rendered, checked, described and redacted again for every alert). None if it
        cannot be kept (a plugin's step, texts that read what cannot be keyed)."""
        known = self._plan_texts.get(id(step))
        if known is None or known[0] is not step:
            texts = tuple(dict.fromkeys(_templates(step.params)))
            texts = (((step.when, True),) if step.when else ()) + tuple((t, False) for t in texts)
            name = repr(("plan", step.name, step.action, step.when, step.params)) \
                if texts and step.action in BUILTIN else None
            if len(self._plan_texts) >= _LITERAL_MAX:  # old versions' steps, after reloads
                self._plan_texts.clear()
            known = self._plan_texts[id(step)] = (step, name, texts)
        if known[1] is None:
            return None
        key, kept = templating.lookup_together(known[1], known[2], (), ctx)
        return None if key is None else (key, kept)

    def keep(self, step: Step, record: StepRecord, journaled: dict[str, Any]) -> None:
        """Keep a planned step's record for every alert when nothing in it depends on the
        alert: a built-in's literal step (checked once already, `checked`) without a `when`,
        that changes nothing and writes nowhere (no guard to ask), planned without a problem.
        Its record (described and redacted for each alert before) is then copied."""
        kept = self._literal.get(id(step))
        if (kept is None or kept[0] is not step or kept[2] or step.when
                or record.outcome != "planned" or record.mutating or record.detail
                != ACTIONS[step.action].describe(record.params)
                or ACTIONS[step.action].scope(record.params)):
            return
        if len(self._plans) >= _LITERAL_MAX:  # old versions' steps, after reloads
            self._plans.clear()
        self._plans[id(step)] = (step, redact.known(), {**journaled,
                                                         "params": copied(journaled["params"])})


def replanned(step: Step, kept: tuple[bool, Any] | None, labels: Mapping[str, str],
              guards: Guards) -> dict[str, Any] | None:
    """A kept plan of this step (`Plans.key`), copied, or None if it must be planned for
    this alert: none kept, a secret remembered since, refused by the alert's own check
    or by the scope guard (planned as such, with the reason)."""
    if kept is None:
        return None
    record, checked, scoped, made = kept[1]
    if made.known is not redact.known():
        return None
    if checked and for_alert(ACTIONS[step.action], checked, labels):
        return None
    if scoped and guards.scope(step, checked or {}) is not None:
        return None
    return {**record, "params": copied(record["params"]), "result": {}}


def remember(key: tuple[Any, ...], journaled: dict[str, Any],
             judged: tuple[dict[str, Any] | None, bool]) -> None:
    """Keep a plan under the values its texts read (`Plans.key`), with what must still be
    judged for each alert (`replanned`). A big one is not kept: template_memo.put."""
    template_memo.put(key, True, ({**journaled, "params": copied(journaled["params"])},
                                  *judged, _Redaction(redact.known())))


def would_run(steps: tuple[Step, ...], ctx: dict[str, Any]) -> list[str]:
    """What each step would do, rendered where its parameters are already known."""
    plan = []
    for step in steps:
        action = ACTIONS[step.action]
        when = f"if {step.when}: " if step.when else ""
        try:
            params, problems = check_params(action, render_params(action, step.params, ctx),
                                            rendered=True)
            what = action.describe(params) if params and not problems else ""
        except templating.TemplateError:
            what = ""
        plan.append(f"`{step.name}`: {when}{what or step.action + ' (parameters known at run time)'}"
                    + (" (after approval)" if step.approval else ""))
    return plan


def only_at_run_time(exc: templating.TemplateError) -> bool:
    """Raised by a placeholder for an earlier result (`templating.Pending`), nothing else: its
    whole message, so a label value quoted in another error cannot pass for one."""
    text = str(exc)
    return text.startswith(templating.PENDING) and text.endswith(templating.ONLY_AT_RUN_TIME)


def checked_planned(action: Any, raw: dict[str, Any], ctx: dict[str, Any]
                    ) -> tuple[dict[str, Any], list[tuple[str, str]], dict[str, Any]]:
    """(params, problems, rendered) of a plan's parameters, each rendered alone: one that
    computes on an earlier result (`only_at_run_time`, and its template reads `steps`) is
    the placeholder it raised about; any other error is raised."""
    rendered: dict[str, Any] = {}
    for name, value in raw.items():
        try:
            rendered.update(render_params(action, {name: value}, ctx))
        except templating.TemplateError as exc:
            if not (only_at_run_time(exc) and reads_results(value)):
                raise
            rendered[name] = str(exc).removesuffix(templating.ONLY_AT_RUN_TIME)
    params, problems = check_params(action, rendered, rendered=True)
    return params, problems, rendered


def described(action: Any, raw: dict[str, Any], shown: dict[str, Any]) -> str:
    """A plan's words for a step: the action's own, each value that waits for an earlier
    result standing as its template says it (`⟨steps.dep.result.replicas + 1⟩`, and so
    in a text: `HTTP ⟨steps.bucket.result.status⟩ on the bucket`, not Jinja's braces a 3 a.m.
    reader must parse), not as the placeholder the first result it read raised; one that
    branches (`{% if %}`) stays that placeholder: its Jinja source says less than the action's
    words.
    An action that cannot describe such values is said to take them from earlier results."""
    shown = dict(shown)
    for name, value in shown.items():
        text = raw.get(name)
        if (isinstance(value, str) and templating.only_placeholder(value)
                and isinstance(text, str) and "{%" not in text):
            shown[name] = _EXPRESSION.sub(lambda m: f"\u27e8{m[1]}\u27e9", " ".join(text.split()))
    try:
        return action.describe(shown)
    except Exception:  # a description computing on a value a placeholder stands for
        return f"{action.name} with parameters from earlier results"


def waits(raw: dict[str, Any], rendered: dict[str, Any], name: str | None) -> bool:
    """Does parameter `name` (None or "": the step's parameters together) hold the
    placeholder of an earlier result its template reads?"""
    return (reads_results(raw.get(name) if name else raw)
            and templating.PENDING in repr(rendered.get(name, rendered) if name else rendered))


def judged_alone(action: Any, raw: dict[str, Any], rendered: dict[str, Any],
                 problems: list[tuple[str, str]]) -> bool:
    """Can a plan judge the alert's check now: it names the parameters it reads
    (`alert_params`), and each of them is rendered, valid and no placeholder?"""
    reads = action.alert_params
    return (reads is not None and not any(n in reads for n, _ in problems)
            and not any(waits(raw, rendered, n) for n in reads))


def for_alert(action: Any, params: dict[str, Any], labels: Mapping[str, str]) -> list[str]:
    """The action's check for this alert, given only the parameters it says it reads (so a
    plan may run it while another parameter waits for an earlier result)."""
    reads = action.alert_params
    given = params if reads is None else {n: params[n] for n in reads if n in params}
    return action.check_for_alert(given, labels)


def reads_results(value: Any) -> bool:
    """Does a template in `value` read `steps` (results only known at run time)?"""
    if isinstance(value, dict):
        return any(reads_results(v) for v in value.values())
    if isinstance(value, list):
        return any(reads_results(v) for v in value)
    if not isinstance(value, str) or not templating.is_template(value):
        return False
    try:
        return "steps" in templating.compile_check(value)
    except templating.TemplateError:
        return False


def copied(params: dict[str, Any]) -> dict[str, Any]:
    """Checked parameters sharing no list or mapping with `params`: an action may change
    what it is given, and the kept ones are handed to every decision, never checked again."""
    out = params.copy()  # most values are strings: copied by the dict's own copy, not a call
    for k, v in params.items():
        if isinstance(v, _CONTAINERS):
            out[k] = _copy(v)
    return out


_CONTAINERS = (list, dict)  # a constant: `list | dict` made a union object at every value


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    return [_copy(v) for v in value] if isinstance(value, list) else value


class _Redaction:
    """What redaction knew when a plan was kept (`redact.known()`), compared by identity;
    held, not a value the memo sizes (a tuple of the secrets themselves)."""

    __slots__ = ("known",)

    def __init__(self, known: object) -> None:
        self.known = known


def _templates(value: Any) -> list[str]:
    """The templates in a step's parameters (inside lists and mappings too)."""
    if isinstance(value, str):
        return [value] if templating.is_template(value) else []
    if isinstance(value, Mapping):
        value = list(value.values())
    return [t for v in value for t in _templates(v)] if isinstance(value, list | tuple) else []
