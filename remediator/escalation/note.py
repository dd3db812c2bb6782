"""The escalation note: one Markdown page that hands a human everything they need."""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Iterator, Mapping
from typing import Any

from .. import graphs, markdown_text, templating
from ..markdown_text import code, text
from ..playbooks.models import Escalation, Playbook
from ..playbooks.template_checks import step_references
from ..templating import context as template_context
from ..templating import memo as template_memo

_EVIDENCE_CHARS = 1500
_SEVERITY_WITHIN = {"info": None, "warning": 1800, "critical": 900, "emergency": 300}


def severity_of(decision: dict[str, Any],
                pb: Playbook | None) -> tuple[str, float | None, str]:
    """(severity, respond within, team): the playbook's, raised by the first `raise` rule
    whose condition holds on the steps' results (a confirmed checksum mismatch is an
    emergency; a missing bucket is the platform team's)."""
    return _severity(decision, pb, _Context(decision, pb))[:3]  # type: ignore[return-value]


class _Context(Mapping[str, Any]):
    """What a note's templates see: copies, never the decision being recorded. One context
    serves all of a note's templates and its severity (the sandbox is immutable: none can
    change it), each of its roots made at its first read: most notes render nothing but
    literal text and have no `raise` rule, and a render kept for the values it reads
    (templating's memo) reads only those. Only what it holds is copied: the alert's maps
    of strings and the group's, and a step's result (any shape) deeply, when it has one (a
    deep copy of the whole decision, parameters and plan included, was a tenth of a storm's
    processing CPU, and was made twice per note)."""

    __slots__ = ("_decision", "_pb", "_roots")

    def __init__(self, decision: dict[str, Any], pb: Playbook | None) -> None:
        self._decision, self._pb = decision, pb
        self._roots: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        if name in self._roots:
            return self._roots[name]
        decision = self._decision
        if name == "steps":
            value = {s["name"]: template_context.step_view(
                {**s, "result": copy.deepcopy(s["result"]) if s.get("result") else {}},
                pending=False) for s in decision.get("steps") or []}
        else:
            group = {k: dict(v) if isinstance(v, dict) else v
                     for k, v in (decision.get("group") or {}).items()} if name == "group" else {}
            value = template_context.ROOT_MAKERS[name](decision["alert"], group, self._pb,
                                                        decision.get("target"))
        self._roots[name] = value
        return value

    def __contains__(self, name: object) -> bool:  # Mapping's made the root to tell
        return name in template_context.ROOT_MAKERS

    def __iter__(self) -> Iterator[str]:
        return iter(template_context.ROOT_MAKERS)

    def __len__(self) -> int:
        return len(template_context.ROOT_MAKERS)


def _severity(decision: dict[str, Any], pb: Playbook | None,
              ctx: _Context) -> tuple[str, float | None, str, list[str]]:
    """severity_of, and the `raise` conditions that could not be evaluated. A condition on a
    step that did not succeed does not hold; any other failure (a type error, a result of
    another shape) is an error the note reports, and the rule is applied: an emergency is
    never downgraded because its condition broke."""
    esc = pb.escalation if pb else None
    severity = esc.severity if esc else "warning"
    within = esc.respond_within if esc else None
    team = esc.team if esc else ""
    errors: list[str] = []
    steps = {s["name"]: s for s in decision.get("steps") or []} if esc and esc.raise_to else {}
    for j, (raised, when, raised_within, raised_team) in enumerate(esc.raise_to if esc else ()):
        # A failure about a step that did not succeed is not reported: its message (most of
        # a failing condition's cost, and a dry run's conditions all fail) is not made.
        unsettled = any(steps.get(name, {}).get("outcome") != "succeeded"
                        for name in _step_references(when))
        try:
            holds = templating.evaluate(when, ctx, explain=not unsettled)
        except templating.TemplateError as exc:
            if unsettled:
                continue
            errors.append(f"escalation.raise[{j}].when {code(when)} could not be evaluated, "
                          f"so it was applied ({raised}): {text(exc)}")
            holds = True
        if holds:
            severity, within, team = raised, raised_within, raised_team or team
            break
    return severity, within or _SEVERITY_WITHIN[severity], team, errors


@functools.lru_cache(maxsize=1024)  # a playbook's conditions: a few texts
def _step_references(when: str) -> frozenset[str]:
    return frozenset(step_references(when))


class _Shape:
    """What a note's templates are, once per version of a playbook's escalation (per
    Escalation object: a reload makes new ones): the texts its severity and its renders
    read, a name for all of them, and the outcome of each step its `raise` rules are about
    (whether a failing condition is reported depends on it)."""

    __slots__ = ("also", "compiled", "esc", "name", "texts")

    def __init__(self, esc: Escalation) -> None:
        self.esc = esc
        self.compiled = False  # its texts compiled (`compile_ahead`)
        self.name = repr(("note", esc.severity, esc.respond_within, esc.team, esc.raise_to,
                          esc.summary, esc.owner, esc.next_steps))
        self.texts = tuple((when, True) for _, when, _, _ in esc.raise_to) + tuple(
            (text, False) for text in (esc.summary, esc.owner, *esc.next_steps)
            if templating.is_template(text))
        self.also = tuple(dict.fromkeys(
            ("steps", ((False, name), (False, "outcome")))
            for _, when, _, _ in esc.raise_to for name in sorted(_step_references(when))))


_SHAPES: dict[int, _Shape] = {}


def _shape(esc: Escalation) -> _Shape:
    shape = _SHAPES.get(id(esc))
    if shape is None or shape.esc is not esc:
        if len(_SHAPES) >= 1024:  # old versions, after reloads
            _SHAPES.clear()
        shape = _SHAPES[id(esc)] = _Shape(esc)
    return shape


async def compile_ahead(pb: Playbook | None) -> None:
    """A playbook's note templates and conditions compiled before its first note, each in a
    processing chunk of its own (templating.compile_ahead): its first note compiled them
    together, 1-9 ms in one chunk."""
    if pb is None or pb.escalation is None:
        return
    shape = _shape(pb.escalation)
    if not shape.compiled:
        await templating.compile_ahead((), [t for t, when in shape.texts if when],
                                       notes=[t for t, when in shape.texts if not when])
        shape.compiled = True


def _made(decision: dict[str, Any], pb: Playbook | None, ctx: _Context
          ) -> tuple[str, float | None, str, tuple[str, ...], str | None, str | None,
                     tuple[str, ...]]:
    """(severity, respond within, team, playbook errors, summary, owner, next steps): what
    a note makes of its playbook's templates (summary and owner None if it has none). Kept
    together for the values all of them read (templating.lookup_together): each render and
    condition looked its own key up over the same few values (`labels.severity`), most of a
    storm's notes' CPU; never with errors, whose messages may describe the context."""
    esc = pb.escalation if pb else None
    shape, key = None, None
    if esc is not None:
        shape = _shape(esc)
        key, kept = templating.lookup_together(shape.name, shape.texts, shape.also, ctx)
        if kept is not None:
            return kept[1]  # type: ignore[no-any-return]
    severity, within, team, errors = _severity(decision, pb, ctx)
    made = (severity, within, team, tuple(errors),
            _render(esc.summary, ctx) if esc and esc.summary else None,
            _render(esc.owner, ctx) if esc and esc.owner else None,
            tuple(_render(step, ctx) for step in esc.next_steps) if esc else ())
    if shape is not None and key is not None and not errors:
        template_memo.put(key, True, made)
    return made


def _render(template: str, ctx: _Context) -> str:
    """Render a playbook's note template, its Markdown kept and every value it interpolates
    escaped (a label is text, never a link, image or heading); a broken one is shown raw,
    never lost (so why it broke is not asked: its failure is kept like a result, see
    templating.render)."""
    if not templating.is_template(template):
        return template
    try:
        return templating.render_markdown(template, ctx)
    except templating.TemplateError:
        return template


def render_note(decision: dict[str, Any], pb: Playbook | None, approve_url: str = "",
                graph_problem: str = "") -> str:
    return note_for(decision, pb, approve_url, graph_problem)[3]


def note_for(decision: dict[str, Any], pb: Playbook | None, approve_url: str = "",
             graph_problem: str = "") -> tuple[str, float | None, str, str]:
    """(severity, respond within, team, the note's Markdown), from one template context."""
    alert = decision["alert"]
    labels, annotations = alert["labels"], alert["annotations"]
    severity, within, team, errors, summary, owner, next_steps = _made(
        decision, pb, _Context(decision, pb))

    shown: dict[str, str] = {}

    def annotation(name: str) -> str:
        # the rule author's Markdown; the label values its template interpolated are text
        if name not in shown:
            shown[name] = markdown_text.within(annotations.get(name) or "", labels.values())
        return shown[name]

    if summary is None:
        summary = annotation("summary")
    title = " — ".join(t for t in (summary, outcome_phrase(decision)) if t)
    # Lines appended as they apply: a list with a None for each line left out, filtered at
    # the end, walked every line of every note again (~1.6 % of a storm's Python bytecodes).
    lines = [
        f"# [{severity.upper()}] {text(decision['alertname'])}: {title}",
        "",
        f"- **Respond within:** {_minutes(within)}" if within else "- **Respond within:** n/a",
        f"- **Outcome:** `{decision['outcome']}` — "
        f"{text(decision.get('reason') or '') or 'see timeline'}",
    ]
    if owner is not None:
        lines.append(f"- **Owner:** {owner}")
    if team:
        lines.append(f"- **Team:** `{team}`")
    lines.append(f"- **Playbook:** `{decision.get('playbook')}` ({decision.get('mode')})")
    if decision.get("target"):
        lines.append(f"- **Target:** {code(decision['target'])}")
    lines += [f"- **Execution:** `{decision['id']}`", "", "## Alert", "",
              f"- **Status:** {text(alert['status'])}, started {text(alert['startsAt'])}"]
    if annotations.get("summary"):
        lines.append(f"- **Summary:** {annotation('summary')}")
    if annotations.get("description"):
        lines.append(f"- **Description:** {annotation('description')}")
    if alert.get("generatorURL"):
        lines.append(f"- **Source:** {_link(alert['generatorURL'])}")
    lines += [
        f"- **Runbook:** {pb.runbook if pb and pb.runbook else annotation('runbook_url')}",
        "- **Labels:** " + _labels(labels),
        "",
        "## Timeline",
        "",
    ]
    if errors:  # said before the timeline: the severity above rests on them
        at = lines.index("## Timeline")
        lines[at:at] = ["## Playbook errors", "", *(f"- {e}" for e in errors), ""]
    steps = decision.get("steps") or []
    if not steps:
        lines.append("No step ran.")
    for s in steps:
        took = f" in {s['duration_seconds']:.2f}s" if s.get("duration_seconds") else ""
        tries = f", {s['attempts']} attempts" if s.get("attempts", 0) > 1 else ""
        lines.append(f"1. `{s['name']}` ({s['action']}): **{s['outcome']}**{took}{tries} — "
                     f"{text(_one_line(s.get('detail', '')))}")
    evidence = [(s["name"], s["result"]) for s in steps if s.get("result")]
    if decision.get("would_run"):
        lines += ["", "## What would have run", ""]
        lines += [f"1. {_planned(what)}" for what in decision["would_run"]]
    if evidence:
        lines += ["", "## Evidence", ""]
        for name, result in evidence:
            lines += [f"### {name}", "", "```", _excerpt(result), "```", ""]
    lines += ["", "## Graph", "", _graph(decision, approve_url, graph_problem)]
    lines += ["", "## Why this needs a human", "", _why(decision)]
    if next_steps:
        lines += ["", "## Next steps", ""]
        lines += [f"{i}. {step}" for i, step in enumerate(next_steps, 1)]
    if decision["outcome"] == "blocked" and decision["reason"].startswith("approval_pending"):
        step = decision.get("blocked_step") or ""
        gated = next((s for s in (*pb.steps, *pb.on_resolved) if s.name == step), None) \
            if pb else None
        lines += ["", f"## Approve or reject step `{step}`", ""]
        if gated and gated.description:
            lines.append(f"- **What it does:** {gated.description}")
        lines += [f"- `remediator approve {decision['id']} --step {step}` (or `--reject`)",
                  f"- `POST {approve_url}/api/v1/executions/{decision['id']}/approve?step={step}`"
                  " or `/reject?step=…` with an operator's token",
                  "- One approval admits this step only; a later gated step asks again."]
    return severity, within, team, "\n".join(lines) + "\n"


def _graph(decision: dict[str, Any], external_url: str, problem: str) -> str:
    """A link to the alert's graph, or plainly why there is none."""
    expr = graphs.alert_expr(decision["alert"].get("generatorURL", ""))
    if not expr:
        return "No graph: the alert carries no expression (its generatorURL has no `g0.expr`)."
    shown = code(_one_line(expr))  # the sender's expression: code it cannot close
    if problem:
        return f"No graph now: {text(problem)}. The expression was {shown}."
    if not external_url:
        return (f"The console shows {shown} at `/ui/executions/{decision['id']}` "
                "(set `external_url` to link it here).")
    url = graphs.graph_url(external_url, decision["id"])
    return f"[Graph of {shown}]({url}) — the hour before the alert until now."


def outcome_phrase(decision: dict[str, Any]) -> str:
    """What happened, for the title: the playbook's summary describes the alert, this says
    which guard stopped it, which step failed, or which change was made before escalating."""
    outcome = decision["outcome"]
    steps = decision.get("steps") or []
    changed = [s["name"] for s in steps if s.get("mutating") and s["outcome"] == "succeeded"]
    after = f" after {', '.join(changed)}" if changed else ""
    failed = [s["name"] for s in steps if s["outcome"] == "failed"]
    # A change whose call failed or was cut short after it may have been sent (`uncertain`)
    # is never "nothing was changed": the title is what the on-call reads first.
    maybe = [s["name"] for s in steps if s.get("mutating") and s.get("uncertain")]
    unsure = (f", {' and '.join(maybe)} may or may not have taken effect: check by hand"
              if maybe else "")
    nothing = unsure or ", nothing was changed"
    if outcome == "blocked":
        guard = (decision.get("reason") or "").split(":", 1)[0] or "a guard"
        if guard == "approval_pending":
            return f"waiting for approval of step {decision.get('blocked_step')!r}{after}{unsure}"
        return f"blocked by {guard}{after}" + (unsure if changed else nothing)
    if outcome == "failed":
        where = f"failed at step {failed[-1]!r}" if failed else "failed before any step ran"
        return where + (after + unsure if changed else nothing)
    if outcome == "escalated":
        if failed:
            return f"escalated{after}: step {failed[-1]!r} failed" + (
                unsure if changed else nothing)
        if changed or maybe:
            return f"escalated{after}{unsure}"
        return "escalated with evidence, nothing was changed"
    if outcome in ("succeeded", "resolved"):
        return f"{outcome}{after}"
    return outcome


def _planned(what: str) -> str:
    """A step of `would_run` (`name`: what it would do): its name as the code it is written
    as (plans.would_run), what it would do, with the values rendered into it, as text."""
    name, sep, rest = what.partition("`: ")
    if what.startswith("`") and sep and "`" not in name[1:]:
        return f"{name}`: {text(_one_line(rest))}"
    return text(_one_line(what))


def _link(url: str) -> str:
    """The sender's URL (generatorURL): an autolink, whose text is its destination, with
    what would end one percent-encoded (no URL holds them); anything but http(s) as code."""
    if not url.lower().startswith(("http://", "https://")):
        return code(url)
    return f"<{url.translate(_UNSAFE_IN_LINK)}>"


# what ends an autolink or is no URL's: percent-encoded
_UNSAFE_IN_LINK = {c: f"%{c:02X}" for c in (*range(33), *map(ord, '<>`\\"'), 0x7F)}


def _why(decision: dict[str, Any]) -> str:
    outcome, reason = decision["outcome"], text(decision.get("reason") or "")
    if outcome == "blocked":
        return f"A guard stopped automation: {reason}."
    if outcome == "failed":
        return f"Remediation failed: {reason}."
    if reason:
        return f"The playbook escalates: {reason}."
    return "The playbook escalates this alert to a human by design (it is not safe to automate)."


def _excerpt(result: Any) -> str:
    text = json.dumps(result, indent=2, default=str, ensure_ascii=False)
    return text if len(text) <= _EVIDENCE_CHARS else text[:_EVIDENCE_CHARS] + "\n… (truncated)"


def _one_line(text: Any) -> str:
    # A storm's steps say the same few things in every note: those are kept. A long text (a
    # detail naming a label's value, the sender's generatorURL) is not: kept, 4096 of them
    # held whole (up to a webhook body each) for a line of 300 characters.
    text = str(text)
    return _kept_line(text) if len(text) <= 512 else _line(text)


def _line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= 300 else text[:300] + "…"


_kept_line = functools.lru_cache(maxsize=4096)(_line)


def _labels(labels: Mapping[str, str]) -> str:
    """The alert's labels, each as code, in order: a storm's alerts repeat a few sets of
    them, each line made once (a code span per label was most of a note's markup calls)."""
    items = tuple(sorted(labels.items()))
    line = _LABELS.get(items)
    if line is None:
        line = ", ".join(code(f"{k}={v}") for k, v in items)
        if len(line) <= 1024:  # a long one (a label's value of kilobytes) is not held
            if len(_LABELS) >= 1024:
                _LABELS.clear()
            _LABELS[items] = line
    return line


_LABELS: dict[tuple[tuple[str, str], ...], str] = {}


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"
