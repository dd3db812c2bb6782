"""`remediator history`'s table: every value whole and under its heading."""

from __future__ import annotations

from remediator.report import ALERT_WIDTH, decision_text, history_text


def test_history_columns_fit_what_they_hold():
    decisions = [
        {"id": "7892fd1b9ca60883adf8", "created_at": "2026-12-01T11:15:24.410965Z",
         "outcome": "escalated", "alertname": "ThreeDPotDatabaseConnectionFailed",
         "playbook": "3dpot-db-connection"},
        {"id": "02400205045bc1f2d8f3", "created_at": "2026-12-01T11:15:25.000001Z",
         "outcome": "no_match", "alertname": "X" * 200, "playbook": None},
    ]
    head, first, second = history_text(decisions).splitlines()
    for column in ("CREATED", "OUTCOME", "ALERT", "PLAYBOOK"):
        start = head.index(column)
        assert first[start - 2:start] == "  " and first[start] != " ", (column, head, first)
    assert "2026-12-01T11:15:24.410965Z" in first and "ThreeDPotDatabaseConnectionFailed" in first
    assert first.endswith("3dpot-db-connection") and second.endswith("  -")
    assert "X" * ALERT_WIDTH + "  " in second and "X" * (ALERT_WIDTH + 1) not in second


def test_a_multi_line_step_detail_stays_indented_under_its_step():
    d = {"alertname": "API_DOWN", "status": "firing", "alert": {"labels": {}}, "id": "e1",
         "playbook": "libervia-api-down", "mode": "dry-run", "outcome": "planned",
         "steps": [{"name": "container_up", "action": "check", "outcome": "planned",
                    "detail": "if not (a\nor b) (decided at run time): check a condition"},
                   {"name": "restart", "action": "docker.restart", "outcome": "planned"}]}
    lines = decision_text(d).splitlines()
    at = lines.index("  · 1. container_up — check: planned")
    assert lines[at + 1:at + 4] == [
        "       if not (a", "       or b) (decided at run time): check a condition",
        "  · 2. restart — docker.restart: planned"]
