"""Alert rules for the five runbooks (deploy/prometheus/<system>.rules.yml): valid, unit-tested
both ways, and carrying the labels and annotations remediator's playbooks read."""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from remediator.playbooks.index import RuleSet
from remediator.playbooks.models import Escalation
from remediator.playbooks.validate import load_rules, rule_files
from remediator.templating.validators import VALIDATORS
from tests.deploy.conftest import DEPLOY, ROOT, require_tool, run

PROMETHEUS = DEPLOY / "prometheus"
DOC = ROOT / "docs" / "runbooks.md"
RUNBOOK_URL = "https://github.com/remediator/remediator/blob/main/docs/runbooks.md#"
SEVERITIES = {"warning", "critical", "emergency"}


@dataclass(frozen=True)
class System:
    name: str  # <name>.rules.yml, tests/<name>_test.yml
    anchor: str  # its section in docs/runbooks.md
    namespace: str  # Kubernetes systems: the namespace and deployment every alert names
    deployment: str
    alerts: frozenset[str]  # the runbook's conditions, by the alert name given to each
    recording: frozenset[str] = frozenset()
    bucket: str | None = None  # on every alert but those in `no_bucket`
    no_bucket: frozenset[str] = frozenset()
    compose_project: str | None = None  # docker-compose systems: the project every alert names

    @property
    def rules_file(self) -> Path:
        return PROMETHEUS / f"{self.name}.rules.yml"

    @property
    def test_file(self) -> Path:
        return PROMETHEUS / "tests" / f"{self.name}_test.yml"


SYSTEMS = [
    System("code-forge", "code-forge", "neural-hive-pipeline", "code-forge",
           frozenset({"CodeForgeS3UploadFailureHigh", "CodeForgeS3LatencyHigh",
                      "CodeForgeS3IntegrityFailure"}),
           recording=frozenset({"code_forge:s3_upload_failure_ratio:rate5m"}),
           bucket="code-forge-artifacts-prod"),
    System("deltacrown", "deltacrown", "deltacrown", "deltacrown",
           frozenset({"DeltaCrownCertS3ReadFallbackHigh", "DeltaCrownCertS3SaveFailureHigh",
                      "DeltaCrownCertS3DeleteFailureHigh", "DeltaCrownCertS3WriteSuccessLow",
                      "DeltaCrownCertBackfillMismatchHigh", "DeltaCrownCertLocalStorageLow"}),
           recording=frozenset({"deltacrown:cert_s3_read_fallback_ratio:rate10m"}),
           bucket="deltacrown-certificates",
           no_bucket=frozenset({"DeltaCrownCertLocalStorageLow"})),
    System("libervia", "libervia-gateway", "", "",
           frozenset({"API_DOWN", "HIGH_LATENCY", "ERROR_RATE_SPIKE", "AUTH_FAILURE_SPIKE",
                      "TENANT_CONFLICT_SPIKE", "RATE_LIMIT_ABUSE", "EVENTLOG_INTEGRITY_FAILURE",
                      "TENANT_SUSPENSION_CASCADE"}), compose_project="libervia"),
    System("hackathon", "hackathon-file-processor", "default", "hackathon-file-processor",
           frozenset({"HackathonFileProcessorDown", "HackathonFileProcessorHighErrorRate",
                      "HackathonFileProcessorHighCPU", "HackathonFileProcessorHighMemory"})),
    System("3dpot", "3dpot", "", "",
           frozenset({"ThreeDPotHigh5xxRate", "ThreeDPotHighLatency", "ThreeDPotRateLimitHitsHigh",
                      "ThreeDPotAuthFailuresHigh", "ThreeDPotMFAFailuresHigh",
                      "ThreeDPotPermissionDeniedHigh", "ThreeDPotDatabaseConnectionFailed",
                      "ThreeDPotRedisConnectionFailed", "ThreeDPotStorageFull", "ThreeDPotHighCPU"}),
           compose_project="3dpot"),
]

by_system = pytest.mark.parametrize("system", SYSTEMS, ids=[s.name for s in SYSTEMS])


@cache
def rules(path: Path) -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load(path.read_text())["groups"] for r in g["rules"]]


def alert_rules(system: System) -> list[dict[str, Any]]:
    return [r for r in rules(system.rules_file) if "alert" in r]


def alert_cases(system: System) -> list[dict[str, Any]]:
    tests = yaml.safe_load(system.test_file.read_text())["tests"]
    return [c for t in tests for c in t.get("alert_rule_test", [])]


def github_anchor(heading: str) -> str:
    """The fragment GitHub gives a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@cache
def doc_anchors() -> set[str]:
    return {github_anchor(m) for m in re.findall(r"^#{1,6} (.+)$", DOC.read_text(), re.M)}


@by_system
def test_rules_pass_promtool_check(system):
    result = run(require_tool("promtool"), "check", "rules", str(system.rules_file))
    assert result.returncode == 0, result.stdout + result.stderr


@by_system
def test_unit_tests_pass(system):
    result = run(require_tool("promtool"), "test", "rules", str(system.test_file))
    assert result.returncode == 0, result.stdout + result.stderr


@by_system
def test_the_runbook_conditions_have_their_alerts(system):
    defined = {r["alert"] for r in alert_rules(system)}
    assert defined == system.alerts
    recorded = {r["record"] for r in rules(system.rules_file) if "record" in r}
    assert system.recording <= recorded


@by_system
def test_every_alert_and_severity_is_tested_firing_and_quiet(system):
    tiers = defaultdict(set)
    for rule in alert_rules(system):
        tiers[rule["alert"]].add(rule["labels"]["severity"])
    cases = alert_cases(system)
    for name, severities in tiers.items():
        mine = [c for c in cases if c["alertname"] == name]
        for severity in severities:
            fired = [c for c in mine if any(a["exp_labels"].get("severity") == severity
                                            for a in c.get("exp_alerts") or [])]
            assert fired, f"{name} ({severity}): no test where it fires"
            assert len(fired) < len(mine), f"{name} ({severity}): no test where it stays quiet"
        for case in mine:
            for alert in case.get("exp_alerts") or []:
                assert {"summary", "description", "runbook_url"} <= set(alert.get("exp_annotations", {})), \
                    f"{name} at {case['eval_time']}: expected annotations not checked"


@by_system
def test_alerts_carry_severity_target_and_annotations(system):
    for rule in alert_rules(system):
        name, labels, annotations = rule["alert"], rule["labels"], rule["annotations"]
        assert labels["severity"] in SEVERITIES, name
        # What a playbook renders from these labels must pass the validator of its kind.
        if system.compose_project:
            assert labels["compose_project"] == system.compose_project, name
            assert not {"namespace", "deployment"} & set(labels), name
            if "compose_service" in labels:
                VALIDATORS["compose_name"](labels["compose_service"])
                VALIDATORS["docker_container"](labels["container"])
        else:
            assert labels["namespace"] == system.namespace, name
            assert labels["deployment"] == system.deployment, name
            VALIDATORS["namespace"](labels["namespace"])
            VALIDATORS["k8s_name"](labels["deployment"])
        for kind in ("service", "statefulset"):
            if kind in labels:
                VALIDATORS["k8s_name"](labels[kind])
        if system.bucket and name not in system.no_bucket:
            assert labels.get("bucket") == system.bucket, name
        if "bucket" in labels:
            VALIDATORS["s3_bucket"](labels["bucket"])
        assert {"summary", "description", "runbook_url"} <= set(annotations), name
        assert annotations["runbook_url"] == RUNBOOK_URL + system.anchor, name


@by_system
def test_runbook_urls_lead_to_a_section_of_docs_runbooks(system):
    assert system.anchor in doc_anchors()


@by_system
def test_docs_runbooks_names_every_alert_and_recording_rule(system):
    text = DOC.read_text()
    for rule in rules(system.rules_file):
        name = rule.get("alert") or rule["record"]
        assert f"`{name}`" in text, f"docs/runbooks.md does not mention {name}"


@cache
def playbooks() -> RuleSet:
    return load_rules(rule_files([str(ROOT / "rules")]))


# Alerts whose playbook's note starts lower and is raised to the alert's severity by what its
# steps confirm, and why: the runbook makes the page conditional.
CONFIRMED_BEFORE_PAGING = {
    # Scenario 3: "If mismatch rate remains >0.5% after re-upload -> Page SRE on-call"; the
    # nightly's keys are a warning note for whoever re-uploads them, the page waits for the
    # 10 % re-validation (or its failure to run).
    "DeltaCrownCertBackfillMismatchHigh",
}


@by_system
def test_a_playbook_escalates_at_the_severity_its_alert_fires_with(system):
    """Humans get the alert from Alertmanager and remediator's note about it: one severity.
    An alert with one tier is handled by a playbook whose note starts at that severity (its
    `raise` may go higher, on what its steps found), or, where the runbook pages only once
    confirmed (CONFIRMED_BEFORE_PAGING), starts lower and is raised to it; with several tiers
    the playbooks tell them apart by `severity` themselves."""
    tiers = defaultdict(list)
    for rule in alert_rules(system):
        tiers[rule["alert"]].append(rule)
    for name, (rule, *more) in tiers.items():
        if more:
            continue
        labels = {"alertname": name, **{k: v for k, v in rule["labels"].items()
                                        if "{{" not in v}}
        handlers = playbooks().match(labels, "firing")
        assert handlers, f"no playbook handles {name}"
        escalation = handlers[0].escalation or Escalation()
        severity = escalation.severity
        if name in CONFIRMED_BEFORE_PAGING:
            assert severity != rule["labels"]["severity"], f"{name}: no longer starts lower"
            severity = escalation.raise_to[0][0]
        assert severity == rule["labels"]["severity"], (
            f"{name} fires as {rule['labels']['severity']}, its playbook {handlers[0].name} "
            f"escalates as {severity}")


def test_deltacrown_commands_for_humans_name_its_namespace():
    """DeltaCrown's runbook gives `kubectl set env deployment/deltacrown` without `-n` and names
    no namespace; its playbooks act in `deltacrown` (docs/runbooks.md#deltacrown says why). A
    command a note hands to a human must say so, or it runs in whatever namespace their kubectl
    context has (Hackathon's is `default`, the namespace its runbook's Role names)."""
    for pb in playbooks().playbooks:
        if not pb.name.startswith("deltacrown-"):
            continue
        esc = pb.escalation or Escalation()
        for text in (esc.summary, *esc.next_steps):
            for command in re.findall(r"kubectl [^;\"]*", text):
                assert re.search(r"(^|\s)-n deltacrown(\s|$)", command), (pb.name, command)
