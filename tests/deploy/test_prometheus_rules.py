"""Self-monitoring alerts (deploy/prometheus): valid, unit-tested both ways, on real metrics."""

from __future__ import annotations

import copy
import re

import yaml

from tests.deploy.conftest import DEPLOY, exported_metrics, metrics_in, require_tool, run

PROMETHEUS = DEPLOY / "prometheus"
RULES = PROMETHEUS / "remediator.rules.yml"
UNIT_TESTS = PROMETHEUS / "tests" / "remediator_test.yml"
SCRAPE_CONFIG = PROMETHEUS / "scrape-config.yml"
# What the issue asks remediator to watch in itself, and the alert that does it.
REQUIRED = {
    "down": "RemediatorDown",
    "webhook errors": "RemediatorWebhookErrors",
    "executions failing": "RemediatorExecutionsFailing",
    "escalations piling up": "RemediatorEscalationsUndelivered",
    "circuits open": "RemediatorCircuitOpen",
    "inbox backlog": "RemediatorInboxBacklog",
}


def alert_rules() -> list[dict]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [r for g in groups for r in g["rules"] if "alert" in r]


def test_rules_pass_promtool_check():
    result = run(require_tool("promtool"), "check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_unit_tests_pass():
    result = run(require_tool("promtool"), "test", "rules", str(UNIT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_tested_firing_and_not_firing():
    cases = [c for t in yaml.safe_load(UNIT_TESTS.read_text())["tests"]
             for c in t.get("alert_rule_test", [])]
    for rule in alert_rules():
        name = rule["alert"]
        mine = [c for c in cases if c["alertname"] == name]
        assert any(c.get("exp_alerts") for c in mine), f"{name}: no test where it fires"
        assert any(not c.get("exp_alerts") for c in mine), f"{name}: no test where it stays quiet"


def test_the_required_alerts_exist():
    names = {r["alert"] for r in alert_rules()}
    assert set(REQUIRED.values()) <= names


def test_alerts_read_only_metrics_remediator_exports():
    known = exported_metrics()
    for rule in alert_rules():
        used = metrics_in(rule["expr"])
        assert used, f"{rule['alert']}: no metric found in {rule['expr']!r}"
        assert used <= known, f"{rule['alert']}: unknown metrics {sorted(used - known)}"
        assert rule["labels"]["severity"] in ("info", "warning", "critical")
        assert {"summary", "description"} <= set(rule["annotations"])
    up = [r for r in alert_rules() if "up" in metrics_in(r["expr"])]
    assert all('job="remediator"' in r["expr"] for r in up)


def test_scrape_config_is_valid_and_names_the_job_the_alerts_use(tmp_path):
    promtool = require_tool("promtool")
    config = yaml.safe_load(SCRAPE_CONFIG.read_text())
    assert [j["job_name"] for j in config["scrape_configs"]] == ["remediator"]
    assert config["rule_files"] == [RULES.name]
    result = run(promtool, "check", "config", str(SCRAPE_CONFIG))
    if "field kubernetes_sd_configs not found" in result.stderr + result.stdout:
        # Debian's promtool is built without Kubernetes discovery; check everything else.
        config = copy.deepcopy(config)
        job = config["scrape_configs"][0]
        job["static_configs"] = [{"targets": ["remediator.remediator.svc:9095"]}]
        del job["kubernetes_sd_configs"]
        static = tmp_path / SCRAPE_CONFIG.name
        static.write_text(yaml.safe_dump(config))
        (tmp_path / RULES.name).write_text(RULES.read_text())
        result = run(promtool, "check", "config", str(static))
        config = yaml.safe_load(SCRAPE_CONFIG.read_text())
    assert result.returncode == 0, result.stdout + result.stderr
    service = yaml.safe_load((DEPLOY / "kubernetes" / "service.yaml").read_text())
    job = config["scrape_configs"][0]
    relabel = job["relabel_configs"][0]
    for port in service["spec"]["ports"]:
        assert re.fullmatch(relabel["regex"], f"{service['metadata']['name']};{port['name']}")
    assert job["kubernetes_sd_configs"][0]["namespaces"]["names"] == [service["metadata"]["namespace"]]
