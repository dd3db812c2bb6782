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
