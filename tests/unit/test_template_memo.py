"""A render kept for the values it read (template_memo) is exactly what rendering again would
give: for every way a template reads its context, over contexts that differ in what it reads
(a value, its type, a key's order, a missing key, a placeholder) or only in what it does not;
and it is kept only when that is provable."""

from __future__ import annotations

from typing import Any

import pytest

from remediator import templating
from remediator.templating import context as template_context
from remediator.templating import memo as template_memo

TEMPLATES = [
    "{{ labels.x }}",
    "{{ labels['x'] }}",
    "{{ labels.get('x', 'none') }}",
    "{{ 'x' in labels }}",
    "{{ labels | tojson }}",
    "{{ labels }}",
    "{% for k, v in labels.items() %}{{ k }}={{ v }};{% endfor %}",
    "{{ labels.x | default('?') }}",
    "{% if labels.x is defined %}[{{ labels.x }}]{% endif %}",
    "{% set ns = labels %}{{ ns.x }}{% set labels = {'x': 'shadow'} %}{{ labels.x }}",
    "{{ labels.x ~ annotations.summary }}",
    "{{ labels.pod }}",  # undefined: its error lists the labels there are
    "{{ steps.a.result.n }}",
    "{{ steps.a.result.n == 1 }}",
    "{{ steps.a.result.n + 1 }}",
    "{{ steps.a.result }}",
    "{{ steps.a.result.get('n') }}",
    "{{ steps.a.outcome }}",
    "{{ steps.b is defined }}",
    "{{ target }} {{ target.name if target else '' }}",
    "{{ alert.status }} {{ playbook.name }}",
    "{{ group.commonLabels.x | default('-') }}",
    "{{ labels.x | int * 3 }}",
]
CONDITIONS = ["labels.x == '1'", "steps.a.result.n > 0", "steps.a.outcome == 'failed'",
              "labels.pod is defined and labels.pod.startswith('a')", "'x' in labels"]


def contexts() -> list[dict[str, Any]]:
    results: list[Any] = [1, True, 1.0, -0.0, 0.0, "1", None, [1], {"n": 1}, {"n": "1"}]
    out = []
    for labels in ({"x": "1", "y": "a"}, {"x": "1", "y": "b"}, {"y": "a", "x": "1"},
                   {"x": "2"}, {}, {"x": "{{ labels.y }}"}, {"pod": "a1", "x": "1"}):
        for result in (*({"n": r} for r in results), {}, None):
            ctx = template_context.build(
                {"labels": labels, "annotations": {"summary": "s"}, "status": "firing"},
                {"commonLabels": dict(labels)}, None, "ns/deployment/web" if labels else None)
            ctx["steps"] = {"a": template_context.step_view(
                {"name": "a", "outcome": "planned"}) if result is None else
                {"outcome": "succeeded", "result": result, "detail": ""}}
            out.append(ctx)
    return out


def outcome(call: Any) -> tuple[str, Any]:
    try:
        return "ok", call()
    except templating.TemplateError as exc:
        return "error", str(exc)


def test_a_kept_render_is_what_rendering_again_gives(memo_off: Any) -> None:
    ctxs = contexts()
    calls = [(t, c) for t in TEMPLATES for c in ctxs]

    def run(order: list[tuple[str, dict[str, Any]]]) -> dict[tuple[str, int], Any]:
        return {(t, id(c)): (outcome(lambda t=t, c=c: templating.render(t, c)),
                             outcome(lambda t=t, c=c: templating.render(t, c, explain=False)))
                for t, c in order} | {
            (e, id(c)): (outcome(lambda e=e, c=c: templating.evaluate(e, c)),
                          outcome(lambda e=e, c=c: templating.evaluate(e, c, explain=False)))
            for e in CONDITIONS for c in ctxs}

    memo_off(True)
    expected = run(calls)
    memo_off(False)
    assert run(calls) == expected
    assert run(calls[::-1]) == expected  # another context's render first
    assert template_memo._kept  # and it was kept


def _rendered(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The texts rendered in Jinja from now on, each time; nothing kept before."""
    template_memo.clear()
    template_memo._plans.clear()
    rendered: list[str] = []
    real = templating._bounded_render
    monkeypatch.setattr(templating, "_bounded_render",
                        lambda env, text, ctx: rendered.append(text) or real(env, text, ctx))
    return rendered


def test_only_different_values_render_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """Counted: a template renders once per distinct value it reads, whatever else differs;
    an impure one, a big value or an error that describes the context renders every time;
    the same error not explained (a note's template, shown raw when it fails) is kept."""
    rendered = _rendered(monkeypatch)

    def render(text: str, **labels: str) -> str:
        return templating.render(text, template_context.build(
            {"labels": labels, "annotations": {}}, None, None))

    text = "{{ labels.namespace }}/{{ labels.deployment }}"
    for pod in ("a", "b", "c"):
        assert render(text, namespace="prod", deployment="web", pod=pod) == "prod/web"
    assert render(text, namespace="prod", deployment="api") == "prod/api"
    assert rendered == [text, text]
    rendered.clear()
    for text, labels in (("{{ [1, 2, 3] | random }}", {}), ("{{ labels.x }}", {"x": "v" * 3000}),
                         ("{{ labels.pod }}", {"x": "1"})):
        for _ in range(2):
            outcome(lambda text=text, labels=labels: render(text, **labels))
    assert len(rendered) == 6
    rendered.clear()
    for labels in ({"x": "1"}, {"x": "2"}, {"y": "3"}):  # none has the pod it reads
        with pytest.raises(templating.TemplateError,
                           match=r"^template '\{\{ labels\.pod \}\}' failed$"):
            templating.render("{{ labels.pod }}", template_context.build(
                {"labels": labels, "annotations": {}}, None, None), explain=False)
    assert rendered == ["{{ labels.pod }}"]


def test_a_template_that_may_not_be_kept_is_known_by_what_it_reads() -> None:
    env, roots = templating._sandboxes()[0], templating.ROOTS
    assert template_memo._reads(env, "{{ labels.a.b }} {{ labels['c'] }} {{ steps.x.result.get('y') }}",
                                False, roots) == (
        ("labels", ((False, "a"), (False, "b"))), ("labels", ((True, "c"),)),
        ("steps", ((False, "x"), (False, "result"), (False, "get"))))
    for text in ("{{ lipsum() }}", "{{ labels | select('sameas', 1) | list }}",
                 "{{ unknown_name }}", "{% include 'x' %}", "{{ x | nosuchfilter }}"):
        assert template_memo._reads(env, text, False, roots) is False, text
    assert template_memo._reads(env, "labels.x == '1' }}{{ 1", True, roots) is False


def test_a_text_whose_renders_are_rarely_shared_is_rendered_as_before_for_a_while(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Counted: a label that differs in every alert makes every render a new one; after a
    trial such a text is not keyed (a third of its cost) for a while, then tried again."""
    template_memo.clear()
    template_memo._plans.clear()
    kept: list[object] = []
    real_put = template_memo.put
    monkeypatch.setattr(template_memo, "put",
                        lambda entry, ok, value: kept.append(entry) or real_put(entry, ok, value))
    trial, rest = template_memo._TRIAL, template_memo._REST
    for i in range(trial + rest + 10):
        ctx = template_context.build({"labels": {"pod": f"p{i}"}, "annotations": {}}, None, None)
        assert templating.render("{{ labels.pod }} is new", ctx) == f"p{i} is new"
    assert len(kept) == trial + 10


def test_a_note_template_failing_on_a_missing_label_renders_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Counted: a note's template that reads a label its alerts lack is shown raw; that it
    fails is kept like a result (a storm's notes rendered it and explained why, each time),
    and a label's value still reaches only notes whose alert has it."""
    from remediator.escalation.note import render_note
    from remediator.playbooks.models import build_playbook
    rendered = _rendered(monkeypatch)
    pb = build_playbook({"name": "p", "match": {"alertname": "A"},
                         "steps": [{"name": "s", "action": "log", "params": {"message": "x"}}],
                         "escalation": {"severity": "warning",
                                        "owner": "on-call {{ labels.pod }}"}}, "rules.yaml", 0)

    def note(n: int, **labels: str) -> str:
        return render_note({"id": f"e{n}", "alertname": "A", "playbook": "p", "mode": "dry-run",
                            "outcome": "planned", "reason": "", "target": None, "steps": [],
                            "alert": {"labels": {"alertname": "A", **labels}, "annotations": {},
                                      "status": "firing", "startsAt": "2026-01-01T00:00:00Z",
                                      "generatorURL": ""}}, pb)

    for n in range(20):
        assert "- **Owner:** on-call {{ labels.pod }}\n" in note(n, node=f"n{n}")
    assert rendered == ["on-call {{ labels.pod }}"]
    assert "- **Owner:** on-call web-1\n" in note(99, pod="web-1")


def test_a_notes_templates_are_looked_up_together(monkeypatch: pytest.MonkeyPatch) -> None:
    """Counted: a note's `raise` conditions, summary, owner and next steps are kept together
    for the values they read (one key for the note, where each of them built its own over
    the same `labels.severity`), and a kept note is exactly the note rendered afresh: over
    alerts that differ in what they read, and decisions whose step the `raise` rule is about
    succeeded or not (a failure to evaluate it is reported only then, and never kept)."""
    from remediator.escalation.note import render_note
    from remediator.playbooks.models import build_playbook
    pb = build_playbook({
        "name": "p", "match": {"alertname": "A"},
        "steps": [{"name": "s", "action": "log", "params": {"message": "x"}}],
        "escalation": {
            "severity": "warning", "summary": "{{ labels.severity }} latency",
            "owner": "{{ 'SRE' if labels.severity == 'critical' else 'ops' }}",
            "next_steps": ["look", "page {{ 'SRE' if labels.severity == 'critical' else 'nobody' }}"],
            "raise": [{"severity": "critical", "when": "labels.severity == 'critical'"},
                      {"severity": "emergency", "when": "steps.s.result.n > 0"}]}},
        "rules.yaml", 0)

    def note(n: int, severity: str, outcome: str, result: Any) -> str:
        return render_note({
            "id": f"e{n}", "alertname": "A", "playbook": "p", "mode": "dry-run",
            "outcome": "planned", "reason": "", "target": None,
            "steps": [{"name": "s", "action": "log", "outcome": outcome, "result": result,
                       "detail": "logs x"}],
            "alert": {"labels": {"alertname": "A", "severity": severity},
                      "annotations": {}, "status": "firing",
                      "startsAt": "2026-01-01T00:00:00Z", "generatorURL": ""}}, pb)

    cases = [(n, severity, outcome, result) for n, (severity, outcome, result) in enumerate(
        (s, o, r) for s in ("critical", "warning") for o, r in (
            ("planned", {}), ("succeeded", {"n": 0}), ("succeeded", {"n": "three"}),
            ("failed", {"n": "three"})))]
    fresh = []
    for case in cases:
        template_memo.clear()
        fresh.append(note(*case))
    looked: list[object] = []
    real = template_memo._lookup
    monkeypatch.setattr(template_memo, "_lookup",
                        lambda *args: looked.append(args[1]) or real(*args))
    rendered = _rendered(monkeypatch)
    for _ in range(3):
        assert [note(*case) for case in cases] == fresh
    assert ["could not be evaluated" in text for text in fresh] == [False] * 6 + [True, False]
    assert "- **Owner:** SRE\n" in fresh[0] and "1. look\n2. page nobody\n" in fresh[4]
    rendered.clear()
    looked.clear()
    for n in range(10, 20):  # kept: one lookup per note, nothing rendered
        assert note(n, "critical", "succeeded", {"n": 0}) == fresh[1].replace("e1", f"e{n}")
    assert len(looked) == 10 and rendered == []
