"""Hostile review of templating/memo.py: a kept render must be exactly what rendering again gives,
for templates that read their context in every way Jinja allows, over contexts an alert's
sender controls."""

from __future__ import annotations

import itertools
import re
from typing import Any

import pytest

from remediator import templating
from remediator.templating import context as template_context
from remediator.templating import memo as template_memo

TEMPLATES = [
    "{% for k, v in labels.items() %}{{ k }}={{ v }};{% endfor %}",
    "{{ labels | dictsort }}",
    "{{ labels[labels.k] | default('-') }}",
    "{{ labels[annotations.k] | default('-') }}",
    "{% set ns = namespace(a=labels) %}{{ ns.a.x | default('-') }}",
    "{% set ns = namespace(n=0) %}{% for k in labels %}{% set ns.n = ns.n + 1 %}{% endfor %}{{ ns.n }}",
    "{{ range(labels.n | default(0) | int) | list }}",
    "{% for x in labels %}{{ loop.index }}{{ x }}{% endfor %}",
    "{% macro m(a) %}{{ a.x | default('-') }}{% endmacro %}{{ m(labels) }}",
    "{% macro m() %}{{ varargs }}{% endmacro %}{{ m(labels.k | default('-')) }}",
    "{% macro m(labels) %}{{ labels.x | default('-') }}{% endmacro %}{{ m(annotations) }}",
    "{{ labels.x is defined }}",
    "{{ steps.a.result.n | default('u') }}",
    "{{ steps.a.result | tojson }}",
    "{{ steps.a.result.n == 1 }}",
    "{{ steps.a.result.get('n') }}",
    "{{ steps.a.result['items'] | default('-') }}",
    "{{ labels | attr('x') }}",
    "{{ labels.values() | map('upper') | list }}",
    "{{ labels.keys() | list | sort }}",
    "{{ (labels.keys() - ['x']) | sort }}",
    "{% set labels = annotations %}{{ labels.x | default('-') }}",
    "{% if labels.x == '1' %}{% set y = 1 %}{% endif %}{{ y | default('no') }}",
    "{{ [labels][0].x | default('-') }}",
    "{{ (annotations, labels) | last }}",
    "{{ target.name if target else '-' }} {{ target }}",
    "{{ cycler(labels.x | default('a'), 'b').next() }}",
    "{{ joiner(labels.x | default(','))() }}",
    "{{ dict(labels) }}",
    "{{ labels.x | default(0) | int }}",
    "{{ group.commonLabels }}",
    "{% with z = labels %}{{ z.x | default('-') }}{% endwith %}",
    "{% filter upper %}{{ labels.x | default('-') }}{% endfilter %}",
    "{{ steps.a.result.n | string }}",
    "{{ steps.a.result[labels.k] | default('-') }}",
    "{{ steps.b.result | default('none') }}",
    "{{ labels.get(labels.k) }}",
    "{{ labels | select(annotations.t) | list }}",
    "{{ steps.a.result.n is number }} {{ steps.a.result.n is sameas true }}",
    "{{ steps.a.result.n | float }} {{ steps.a.result.n | round }}",
    "{{ steps.a.result.n ~ '' }}",
    "{{ steps.a.result.m.x | default('-') }}",
    "{{ steps.a.result.m | dictsort }}",
    "{{ steps.a.outcome }} {{ steps.a.detail }}",
    "{{ alert.fingerprint }}{{ alert.get('status') }}",
    "{{ labels.x }}",
    "{{ labels.x | default(labels.y) }}",
    "{{ labels['x'] }}",
    "{{ steps.a.result.n > 0 }}",
    "{% if steps.a.result %}yes{% endif %}",
]
CONDITIONS = [
    "labels.x == '1'", "labels[labels.k] is defined", "steps.a.result.n == 1",
    "steps.a.result.n is sameas 1", "steps.a.result.n > 0", "'x' in labels",
    "labels | length > 1", "steps.a.result.m.x == 1", "labels.get(annotations.k) == '1'",
]

NAN = float("nan")
_ADDRESS = re.compile(r"at 0x[0-9a-f]+")  # an object's address: documented as not a value


def contexts() -> list[dict[str, Any]]:
    label_sets = [{"x": "1", "k": "x"}, {"k": "x", "x": "1"}, {"x": "1", "k": "y", "y": "s3cr"},
                  {"x": "2", "k": "x"}, {}, {"x": "1", "items": "i", "k": "items"},
                  {"x": "1", "k": "get", "n": "3"}, {"k": "k"}]
    annotation_sets = [{"k": "x", "t": "string", "x": "a"}, {"k": "y", "t": "defined"}, {}]
    results: list[Any] = [{"n": 1}, {"n": True}, {"n": 1.0}, {"n": -0.0}, {"n": 0.0},
                          {"n": NAN}, {"n": "1"}, {"n": None}, {"m": {"x": 1, "y": 2}},
                          {"m": {"y": 2, "x": 1}}, {"m": {"x": 1.0}}, {}, None, {"n": [1, 2]},
                          {"n": (1, 2)}, {"items": 5}, {"x": 1, "n": 1}]
    out = []
    for labels, notes, result in itertools.product(label_sets, annotation_sets, results):
        ctx = template_context.build(
            {"labels": labels, "annotations": notes, "status": "firing",
             "fingerprint": "f"}, {"commonLabels": dict(labels)}, None,
            "ns/deployment/web" if labels.get("x") == "1" else None)
        ctx["steps"] = {"a": template_context.step_view({"name": "a", "outcome": "planned"})
                        if result is None else {"outcome": "succeeded", "result": result,
                                                "detail": ""}}
        out.append(ctx)
    return out


def outcome(call: Any) -> tuple[str, str]:
    try:
        return "ok", _ADDRESS.sub("at 0x", repr(call()))
    except templating.TemplateError as exc:
        return "error", _ADDRESS.sub("at 0x", str(exc))


def run(ctxs: list[dict[str, Any]]) -> list[tuple[str, str]]:
    out = []
    for c in ctxs:
        for t in TEMPLATES:
            out.append(outcome(lambda t=t, c=c: templating.render(t, c)))
        for e in CONDITIONS:
            out.append(outcome(lambda e=e, c=c: templating.evaluate(e, c)))
            out.append(outcome(lambda e=e, c=c: templating.evaluate(e, c, explain=False)))
    return out


def test_kept_renders_equal_fresh_renders_for_hostile_templates(memo_off: Any) -> None:
    ctxs = contexts()
    memo_off(True)
    fresh = run(ctxs)
    memo_off(False)
    for order in (ctxs, ctxs[::-1]):
        template_memo.clear()
        kept = run(order)
        if order is not ctxs:
            kept = [x for chunk in reversed([kept[i:i + len(kept) // len(ctxs)]
                                            for i in range(0, len(kept), len(kept) // len(ctxs))])
                    for x in chunk]
        diffs = [(i, f, k) for i, (f, k) in enumerate(zip(fresh, kept, strict=True)) if f != k]
        assert not diffs, diffs[:5]


def test_a_test_or_filter_named_by_an_expression_is_not_kept(memo_off: Any) -> None:
    """`_IMPURE` is looked for in the text, but `select`, `map`... take the test or filter
    name as a value: `'same' ~ 'as'` (or `labels.t`) names `sameas`, whose answer is not a
    function of the values the key holds (equal values need not be the same object)."""
    memo_off(False)
    text = "{{ [steps.a.result.n] | select('same' ~ 'as', steps.a.result.m) | list }}"
    value = "".join(["v"] * 20)

    def ctx(n: str, m: str) -> dict[str, Any]:
        c = template_context.build({"labels": {}, "annotations": {}}, None, None)
        c["steps"] = {"a": {"outcome": "succeeded", "result": {"n": n, "m": m}, "detail": ""}}
        return c

    same = ctx(value, value)  # one object
    equal = ctx(value, "".join(["v"] * 20))  # an equal one, not the same
    assert templating.render(text, same) == "['" + value + "']"
    # rendering again gives []: the kept render says otherwise
    assert templating.render(text, equal) == "[]"


def test_a_filter_named_by_a_label_renders_as_it_would_again(memo_off: Any) -> None:
    """`map(labels.f)` with `f: random` (the sender's choice): each render draws again."""
    memo_off(False)
    ctx = template_context.build({"labels": {"f": "random", "x": "abcdefgh,ijklmnop,qrstuvwx"},
                                  "annotations": {}}, None, None)
    text = "{{ labels.x.split(',') | map(labels.f) | join }}"
    assert len({templating.render(text, ctx) for _ in range(30)}) > 1  # 8**3 draws each


@pytest.mark.parametrize("chars", [2000, 480])  # past the key's limit in bytes, and within it
def test_kept_renders_hold_a_bounded_size_of_alert_data(memo_off: Any, chars: int) -> None:
    """Unique label values (a storm, or a sender filling `pod` with 4-byte characters): what
    the memo holds is bounded in entries (2048) and characters (2048 of a key, 4096 of an
    output), not in bytes: 4-byte characters make each entry 24 KiB, ~48 MiB in all, half
    the RSS floor (< 100 MB), held until the memo is full."""
    import gc
    import tracemalloc

    memo_off(False)
    text = "{{ labels.pod }} restarted: {{ labels.pod }}"
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        # every third alert repeats one small value: a third of the renders are shared, so
        # the text stays keyed (rarely shared texts are not, for a while)
        for i in range(3000):  # 2000 unique: fewer than the entries kept, none forgotten yet
            pod = "web-0" if i % 3 == 2 else f"{i:04d}" + "\U0001F600" * chars
            templating.render(text, template_context.build(
                {"labels": {"pod": pod}, "annotations": {}}, None, None))
        gc.collect()
        held = max(0, tracemalloc.get_traced_memory()[0] - base)
    finally:
        tracemalloc.stop()
    assert held < 16 << 20, f"memo holds {held / 2**20:.1f} MiB of alert data"
