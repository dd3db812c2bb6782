"""A broken `escalation.raise.when` is never skipped silently (issue 10, item 10).

A condition on a step that did not succeed does not hold (the rule is about a result that does
not exist); any other failure to evaluate is a playbook error: the note says so, and the rule
is applied, so an emergency is never downgraded because its condition broke.
"""

from __future__ import annotations

from typing import Any

from remediator.escalation.note import render_note, severity_of
from remediator.playbooks.models import build_playbook

PLAYBOOK = {
    "name": "integrity", "match": {"alertname": "Integrity"},
    "steps": [{"name": "verify", "action": "log", "params": {"message": "x"}}],
    "escalation": {"severity": "warning", "raise": [
        {"severity": "emergency", "respond_within": "5m",
         "when": "steps.verify.result.mismatches > 0"}]},
}


def decision(verify: dict[str, Any]) -> dict[str, Any]:
    return {"id": "e1", "alertname": "Integrity", "playbook": "integrity", "mode": "live",
            "outcome": "escalated", "reason": "", "target": None, "steps": [verify],
            "alert": {"labels": {"alertname": "Integrity"}, "annotations": {},
                      "status": "firing", "startsAt": "2026-01-01T00:00:00Z",
                      "generatorURL": ""}}


def step(outcome: str, result: dict[str, Any]) -> dict[str, Any]:
    return {"name": "verify", "action": "log", "outcome": outcome, "result": result,
            "detail": "", "attempts": 1, "duration_seconds": 0.1}


def test_a_condition_that_cannot_be_evaluated_is_reported_and_applied() -> None:
    pb = build_playbook(PLAYBOOK, "rules.yaml", 0)
    broken = decision(step("succeeded", {"mismatches": "three"}))  # a str, compared with 0
    assert severity_of(broken, pb)[:2] == ("emergency", 300)
    note = render_note(broken, pb)
    assert note.startswith("# [EMERGENCY] Integrity")
    assert "## Playbook errors" in note
    assert ("escalation.raise[0].when `steps.verify.result.mismatches > 0` could not be "
            "evaluated, so it was applied (emergency)") in note


def test_a_condition_on_a_step_that_did_not_succeed_does_not_hold() -> None:
    pb = build_playbook(PLAYBOOK, "rules.yaml", 0)
    skipped = decision(step("skipped", {}))
    assert severity_of(skipped, pb)[0] == "warning"
    assert "Playbook errors" not in render_note(skipped, pb)
    clean = decision(step("succeeded", {"mismatches": 0}))
    assert severity_of(clean, pb)[0] == "warning"
    assert severity_of(decision(step("succeeded", {"mismatches": 2})), pb)[0] == "emergency"


def test_a_note_builds_its_context_only_for_what_reads_it_and_explains_only_reported_failures(
        monkeypatch) -> None:
    """Counted: a note whose texts are literal and which has no `raise` rule builds no
    template context; one with a rule builds what the rule reads (its steps), once; and a
    condition that fails about a step that did not succeed (every condition of a dry run's
    note) is not explained: its message was half of its cost and was thrown away."""
    from remediator import templating
    from remediator.templating import context as template_context

    built: list[str] = []
    explained: list[object] = []
    for name, make in template_context.ROOT_MAKERS.items():
        monkeypatch.setitem(template_context.ROOT_MAKERS, name,
                            lambda *a, _n=name, _m=make: built.append(_n) or _m(*a))
    real_view, real_explained = template_context.step_view, templating._explained
    monkeypatch.setattr(template_context, "step_view",
                        lambda *a, **k: built.append("steps") or real_view(*a, **k))
    monkeypatch.setattr(templating, "_explained",
                        lambda *a, **k: explained.append(a) or real_explained(*a, **k))
    literal = build_playbook({**PLAYBOOK, "escalation": {
        "severity": "warning", "owner": "team a", "next_steps": ["look"]}}, "rules.yaml", 0)
    note = render_note(decision(step("planned", {})), literal)
    assert "- **Owner:** team a" in note and "1. look" in note
    assert built == []
    pb = build_playbook(PLAYBOOK, "rules.yaml", 0)
    assert severity_of(decision(step("planned", {})), pb)[0] == "warning"
    assert built == ["steps"] and explained == []
    broken = decision(step("succeeded", {"mismatches": "three"}))
    assert "could not be evaluated" in render_note(broken, pb)  # reported: explained
    assert len(explained) == 1
    assert "could not be evaluated" in render_note(broken, pb)  # and again: never kept
    assert len(explained) == 2
