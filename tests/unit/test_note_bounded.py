"""What an escalation note keeps between notes is bounded, whatever an alert carries: its
sender chooses the generatorURL (the graph's expression, up to a whole webhook body) and what
its labels put in a step's detail."""

from __future__ import annotations

import gc
import tracemalloc
from urllib.parse import quote, urlsplit

from remediator.escalation.note import render_note


def _decision(n: int, chars: int) -> dict:
    expr = f"up{{job=\"{n}\"}} == " + "1" * chars
    return {
        "id": f"e{n}", "alertname": "A", "playbook": None, "mode": "dry-run",
        "outcome": "failed", "reason": "it failed", "target": None,
        "steps": [{"name": "s", "action": "log", "outcome": "failed",
                   "detail": f"pod {n} " + "x" * chars}],
        "alert": {"labels": {"alertname": "A"}, "annotations": {}, "status": "firing",
                  "startsAt": "2026-01-01T00:00:00Z",
                  "generatorURL": "http://prometheus/graph?g0.expr=" + quote(expr)}}


def test_notes_of_alerts_with_long_texts_keep_none_of_them() -> None:
    """200 notes, each with a 64 KiB expression and step detail of its own: the note's lines
    are made of their first 300 characters; none of the 25 MiB is held once they are made."""
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for n in range(200):
            note = render_note(_decision(n, 64 << 10), None)
            assert f"pod {n} xxx" in note and "… (truncated)" not in note
        # the standard library keeps its last 128 URLs split (not ours to bound)
        getattr(urlsplit, "cache_clear", lambda: None)()
        gc.collect()
        held = max(0, tracemalloc.get_traced_memory()[0] - base)
    finally:
        tracemalloc.stop()
    assert held < 4 << 20, f"notes hold {held / 2**20:.1f} MiB of alert data"


def test_a_notes_labels_line_is_each_label_as_code_and_long_ones_are_not_held() -> None:
    """The labels line is kept per set of labels (a storm repeats a few): the same line as
    each label made code, in order, whether kept or not; a set with a value of kilobytes is
    made again each time, never held."""
    from remediator.escalation.note import _labels
    from remediator.markdown_text import code

    sets = [{"alertname": "A", "job": "x`y", "pod": f"p{n % 3}", "z": "a b "} for n in range(9)]
    for labels in sets + sets:
        assert _labels(labels) == ", ".join(code(f"{k}={v}") for k, v in sorted(labels.items()))
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for n in range(200):
            note = render_note({**_decision(n, 10), "alert": {
                **_decision(n, 10)["alert"], "labels": {"alertname": "A", "v": f"{n}" * (64 << 10)}}},
                None)
            assert f"`v={n}{n}{n}" in note
        gc.collect()
        held = max(0, tracemalloc.get_traced_memory()[0] - base)
    finally:
        tracemalloc.stop()
    assert held < 4 << 20, f"notes hold {held / 2**20:.1f} MiB of labels"
