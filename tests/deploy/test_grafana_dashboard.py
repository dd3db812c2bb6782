"""The Grafana dashboard: valid JSON, valid PromQL, only metrics remediator exports."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import DEPLOY, exported_metrics, metrics_in, require_tool, run

DASHBOARD = DEPLOY / "grafana" / "remediator-dashboard.json"
# The list, and a metric (or selector) that shows each.
TOPICS = {
    "decisions": "remediator_executions_total",
    "actions": "remediator_step_duration_seconds_count",
    "guard blocks": "remediator_guard_blocks_total",
    "escalations": 'outcome="escalated"',
    "latency": "remediator_webhook_ack_duration_seconds_bucket",
}


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for p in panels:
        yield p
        yield from all_panels(p.get("panels", []))


def exprs(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, expr) for every panel target and annotation query."""
    found = [(p["title"], t["expr"]) for p in all_panels(dashboard["panels"])
             for t in p.get("targets", []) if "expr" in t]
    found += [(f"annotation {a['name']}", a["expr"]) for a in dashboard["annotations"]["list"]
              if "expr" in a]
    return found


def as_prometheus(expr: str) -> str:
    """Grafana variables replaced by values Prometheus accepts."""
    return expr.replace("$__rate_interval", "5m").replace("$__range", "1h").replace("$job", ".+")


def test_dashboard_identity_and_layout(dashboard):
    assert dashboard["uid"] == "remediator" and dashboard["title"]
    ids = [p["id"] for p in all_panels(dashboard["panels"])]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in all_panels(dashboard["panels"]):
        g = p["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24, p["title"]


def test_every_query_uses_the_datasource_and_job_variables(dashboard):
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for p in all_panels(dashboard["panels"]):
        if p["type"] == "row":
            continue
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        assert p["targets"], f"{p['title']}: no query"
    for where, expr in exprs(dashboard):
        assert 'job=~"$job"' in expr, f"{where}: not filtered by $job: {expr}"


def test_every_expression_reads_only_exported_metrics(dashboard):
    known = exported_metrics()
    for where, expr in exprs(dashboard):
        used = metrics_in(expr)
        assert used, f"{where}: no metric in {expr!r}"
        assert used <= known, f"{where}: unknown metrics {sorted(used - known)}"
    job_query = next(v for v in dashboard["templating"]["list"] if v["name"] == "job")
    assert metrics_in(re.sub(r"label_values\((\w+),.*\)", r"\1", job_query["definition"])) <= known


def test_every_expression_is_valid_promql(dashboard, tmp_path):
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": as_prometheus(expr)}
        for i, (_, expr) in enumerate(exprs(dashboard))]}]}
    file = tmp_path / "dashboard.rules.yml"
    file.write_text(yaml.safe_dump(rules))
    result = run(require_tool("promtool"), "check", "rules", str(file))
    assert result.returncode == 0, result.stdout + result.stderr


def test_shows_decisions_actions_guard_blocks_escalations_and_latency(dashboard):
    text = "\n".join(expr for _, expr in exprs(dashboard))
    for topic, needle in TOPICS.items():
        assert needle in text, f"no panel for {topic}"
    assert "histogram_quantile" in text
