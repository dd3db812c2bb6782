"""`remediator lint`: the corpus of broken playbooks (tests/lint/), config, alert rules,
permissions, output formats and exit codes."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from remediator.actions.base import Action, Param, iam, rbac
from remediator.actions.registry import ACTIONS
from remediator.cli import main
from remediator.lint import github_annotation, required_permissions
from remediator.playbooks.source import Problem
from remediator.playbooks.validate import validate_paths

CORPUS = Path(__file__).parent.parent / "lint"
CORPUS_SINKS = {"files", "slack"}


class DeletePods(Action):
    """Stand-in for kubernetes.delete_pods: a required `max` and a label selector."""

    name = "test.delete_pods"
    mutating = True
    params = {"namespace": Param("string", required=True, kind="namespace"),
              "selector": Param("string", required=True, kind="label_selector"),
              "max": Param("integer", required=True, minimum=1)}
    permissions = rbac("", "pods", "list", "delete")


class Scale(Action):
    """Stand-in for kubernetes.scale: bounds are required and must be ordered."""

    name = "test.scale"
    mutating = True
    params = {"namespace": Param("string", required=True, kind="namespace"),
              "name": Param("string", required=True, kind="k8s_name"),
              "replicas": Param("integer", required=True, minimum=0),
              "min": Param("integer", required=True, minimum=0),
              "max": Param("integer", required=True, minimum=1)}
    permissions = (*rbac("apps", "deployments", "get"),
                   *rbac("apps", "deployments/scale", "get", "patch"))

    def check(self, params: dict[str, Any]) -> list[str]:
        if params["min"] > params["max"]:
            return [f"min ({params['min']}) must not exceed max ({params['max']})"]
        return []


class S3Get(Action):
    name = "test.s3_get"
    params = {"key": Param("string", required=True, kind="s3_key")}
    permissions = (*iam("s3:GetObject", "s3:ListBucket"), *rbac("apps", "deployments", "get"))


TEST_ACTIONS = {a.name: a for a in (DeletePods(), Scale(), S3Get())}


@pytest.fixture(autouse=True)
def test_actions(monkeypatch):
    for name, action in TEST_ACTIONS.items():
        monkeypatch.setitem(ACTIONS, name, action)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())
    return path


# --- the corpus: one broken file per check, exact location and message ------------------------

def _expected(path: Path) -> list[str]:
    return [m.group(1) for m in re.finditer(r"^# expect: (.*)$", path.read_text(), re.M)]


@pytest.mark.parametrize("path", sorted(CORPUS.glob("*.yaml")), ids=lambda p: p.stem)
def test_corpus(path: Path, monkeypatch):
    expected = _expected(path)
    assert expected, f"{path.name} states no `# expect:` line"
    monkeypatch.chdir(CORPUS.parent.parent)  # messages name files as `tests/lint/…`
    file = f"tests/lint/{path.name}"
    problems = validate_paths([file], CORPUS_SINKS).problems
    assert all(p.file == file for p in problems)
    got = [f"{p.line}:{p.col}: {p.severity}: {p.message}" for p in problems]
    if path.stem == "yaml_syntax" and not getattr(yaml, "__with_libyaml__", False):
        # The pure-Python parser words syntax errors its own way; the location still holds.
        got, expected = [g.split(": YAML syntax:")[0] for g in got], \
            [e.split(": YAML syntax:")[0] for e in expected]
    assert got == expected


def test_corpus_covers_every_check():
    names = {p.stem for p in CORPUS.glob("*.yaml")}
    assert {"yaml_syntax", "unknown_key", "wrong_type", "unknown_action", "unknown_param",
            "param_value", "template_syntax", "template_names", "template_attributes", "step_refs",
            "matchers", "duplicate_name", "shadowed", "mutating_unguarded", "delete_pods_no_max",
            "scale_no_bounds", "selectors", "sinks", "unknown_filters", "scale_bounds_templated",
            "regex_from_label", "approvals_wording", "on_resolved_always", "step_timeout"} <= names


def test_valid_playbooks_have_no_problems():
    assert validate_paths([str(CORPUS.parent / "playtest" / "rules")], {"files", "pager"}).problems \
        == []


def test_serve_refuses_what_lint_reports(monkeypatch):
    from remediator.playbooks.validate import RulesError, load_rules

    monkeypatch.chdir(CORPUS.parent.parent)
    with pytest.raises(RulesError) as refused:
        load_rules(["tests/lint/sinks.yaml"], CORPUS_SINKS)
    assert refused.value.problems == validate_paths(["tests/lint/sinks.yaml"], CORPUS_SINKS).problems


# --- across files ------------------------------------------------------------------------------

def test_duplicates_and_shadowing_across_files(tmp_path):
    write(tmp_path / "rules", "a.yaml", """
        playbooks:
          - name: restart
            match: {alertname: [A, B]}
    """)
    write(tmp_path / "rules", "b.yaml", """
        playbooks:
          - name: other
            match: {alertname: A, matchers: ['env="prod"']}
          - name: restart
            match: {alertname: C}
    """)
    problems = validate_paths([str(tmp_path / "rules")]).problems
    b = str(tmp_path / "rules" / "b.yaml")
    assert [str(p) for p in problems] == [
        f"{b}:3:5: error: playbook 'other' can never match: 'restart' ({tmp_path}/rules/a.yaml:2) "
        "matches the same alerts first and has no `continue: true`",
        f"{b}:4:5: error: duplicate playbook name 'restart' (first at {tmp_path}/rules/a.yaml:2)",
    ]


def test_test_files_are_not_rules(tmp_path):
    write(tmp_path, "web_test.yaml", "tests: []\n")
    assert validate_paths([str(tmp_path)]).problems == []
    assert validate_paths([str(tmp_path / "web_test.yaml")]).problems == []


# --- the process config: sinks and namespace scope ------------------------------------------------

PAGING = """
    playbooks:
      - name: page
        match: {alertname: A}
        escalation: {sinks: [pager]}
"""


def test_config_sinks_and_scope(tmp_path, capsys):
    rules = write(tmp_path, "rules/page.yaml", PAGING)
    config = write(tmp_path, "config.yaml", """
        escalation:
          sinks:
            pager: {type: webhook, url: "https://pager.example/hook"}
        guards:
          namespaces:
            allow: [shop, kube-system]
    """)
    assert main(["lint", str(rules)]) == 1
    assert "escalation sink 'pager' is not configured (configured: files)" in capsys.readouterr().out
    assert main(["lint", "--config", str(config), str(rules)]) == 0
    assert capsys.readouterr().out == (
        f"{config}:6:19: warning: guards.namespaces.allow lets remediator change system "
        "namespace 'kube-system'\n")
    assert main(["lint", "--strict", "--config", str(config), str(rules)]) == 1


SCOPED = """
    playbooks:
      - name: restart-shop
        match: {alertname: A}
        target: {kind: deployment, namespace: shop, name: web}
        guards: {cooldown: 10m}
        steps:
          - {name: restart, action: kubernetes.rollout_restart, params: {namespace: shop, name: web}}
      - name: restart-anywhere
        match: {alertname: B}
        target: {kind: deployment, namespace: "{{ labels.namespace }}", name: web}
        guards: {cooldown: 10m}
        steps:
          - name: restart
            action: kubernetes.rollout_restart
            params: {namespace: "{{ labels.namespace }}", name: web}
      - name: restore
        match: {alertname: C}
        target: {kind: bucket, name: other-bucket}
        guards: {cooldown: 10m}
        steps:
          - {name: restore, action: s3.restore_version, params: {bucket: other-bucket, key: a}}
        on_resolved:
          - {name: bounce, action: docker.restart, params: {project: shop, service: web}}
"""


def test_config_scope_refusals_are_lint_errors_where_the_playbook_names_the_place(tmp_path, capsys):
    """What replay would block as scope_denied (with the guard's own words) is a lint error at
    the step, wherever its namespace or bucket is literal or a label the matchers pin to one
    value; another template only run time knows.
    A kind of change the config switches off entirely (an empty allow list) is info."""
    rules = write(tmp_path, "rules.yaml", SCOPED)
    config = write(tmp_path, "config.yaml", """
        guards:
          namespaces: {allow: [payments]}
          buckets: {allow: [artifacts]}
    """)
    assert main(["lint", str(rules)]) == 0  # no config: nothing to compare with
    capsys.readouterr()
    assert main(["lint", "--config", str(config), str(rules)]) == 1
    refused = f"would be refused at run time with {config} (scope_denied)"
    assert capsys.readouterr().out.splitlines() == [
        f"{rules}:7:25: error: step 'restart' {refused}: namespace 'shop' is not in the allow "
        "list (payments)",
        f"{rules}:21:25: error: step 'restore' {refused}: bucket 'other-bucket' is not in the S3 "
        "write allow list (guards.buckets.allow: artifacts)",
        f"{rules}:23:24: info: step 'bounce' {refused}: compose project 'shop' is not in the "
        "Docker mutation allow list (guards.compose_projects.allow: empty); this config allows "
        "no Docker mutation at all: lint this playbook with the config that runs it"]
    # A template of a label the playbook's matchers pin to one value names that value.
    pinned = write(tmp_path, "pinned.yaml", """
        playbooks:
          - name: restart-pinned
            match: {alertname: D, matchers: ['namespace="shop"']}
            target: {kind: deployment, namespace: "{{ labels.namespace }}", name: web}
            guards: {cooldown: 10m}
            steps:
              - name: restart
                action: kubernetes.rollout_restart
                params: {namespace: "{{ labels.namespace }}", name: web}
    """)
    assert main(["lint", "--config", str(config), str(pinned)]) == 1
    assert capsys.readouterr().out.splitlines() == [
        f"{pinned}:8:9: error: step 'restart' {refused}: namespace 'shop' is not in the allow "
        "list (payments)"]
    allowed = write(tmp_path, "allowed.yaml", """
        guards:
          namespaces: {allow: [shop]}
          buckets: {allow: [other-bucket]}
          compose_projects: {allow: [shop]}
    """)
    assert main(["lint", "--strict", "--config", str(allowed), str(rules)]) == 0


def test_config_deny_list_without_system_namespaces(tmp_path):
    from remediator.lint import check_config

    config = write(tmp_path, "config.yaml", """
        guards:
          namespaces:
            deny: [kube-system]
    """)
    _, problems = check_config(str(config))
    assert [str(p) for p in problems] == [
        f"{config}:3:5: warning: system namespace '{ns}' is not in guards.namespaces.deny and "
        "there is no allow list: remediator may change it" for ns in ("kube-public", "kube-node-lease")]
    default = write(tmp_path, "default.yaml", "mode: dry-run\n")
    assert check_config(str(default))[1] == []
    broken = write(tmp_path, "broken.yaml", "mode: yolo\n")
    assert [str(p) for p in check_config(str(broken))[1]] == [
        f"{broken}:1:1: error: mode: 'yolo' is not one of dry-run, live"]


def test_config_rules_are_the_default_paths(tmp_path, capsys, monkeypatch):
    write(tmp_path, "elsewhere/page.yaml", PAGING)
    config = write(tmp_path, "config.yaml", f"rules: ['{tmp_path}/elsewhere']\n")
    monkeypatch.chdir(tmp_path)
    assert main(["lint", "--config", str(config)]) == 1
    assert "elsewhere/page.yaml:4:26: error: escalation sink" in capsys.readouterr().out


# --- Prometheus alert rules ------------------------------------------------------------------------

ALERT_RULES = """
    groups:
      - name: shop
        rules:
          - record: job:up:sum
            expr: sum(up) by (job)
          - alert: PodCrashLooping
            expr: rate(kube_pod_container_status_restarts_total[5m]) > 0
            annotations:
              runbook_url: https://runbooks.example/crashloop
          - alert: DiskFull
            expr: disk_free_ratio < 0.05
            annotations: {remediation: "free space under /var"}
          - alert: Watchdog
            expr: vector(1)
"""


def test_alert_rules_cross_check(tmp_path, capsys):
    rules = write(tmp_path, "rules/pb.yaml", """
        playbooks:
          - name: crashloop
            match: {alertname: PodCrashLooping}
          - name: typo
            match: {alertname: [DiskFul, Watchdog]}
    """)
    alerts = write(tmp_path, "prometheus/alerts.yaml", ALERT_RULES)
    write(tmp_path, "prometheus/alerts_test.yaml", "tests: []\n")  # promtool tests: skipped
    write(tmp_path, "prometheus/scrape.yaml", "scrape_configs: []\n")  # not rules: skipped in a dir
    assert main(["lint", str(rules), "--alert-rules", str(tmp_path / "prometheus")]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"{alerts}:10:9: info: alert 'DiskFull' has a remediation annotation but no playbook "
        "handles it",
        f"{rules}:5:25: warning: no alerting rule defines alert 'DiskFul' (defined by rules "
        "not linted here, e.g. kube-prometheus-stack's? pass --external-alert DiskFul)",
    ]
    assert main(["lint", "--strict", str(rules), "--alert-rules", str(alerts)]) == 1
    # An alert another rule set defines (kube-prometheus-stack's) is named, and --strict passes.
    capsys.readouterr()
    assert main(["lint", "--strict", str(rules), "--alert-rules", str(alerts),
                 "--external-alert", "DiskFul", "--external-alert", "KubePodCrashLooping"]) == 0
    assert "warning" not in capsys.readouterr().out


def test_alert_rules_prometheus_rule_resource_and_errors(tmp_path):
    from remediator.lint import check_alert_rules

    resource = write(tmp_path, "rule.yaml", "apiVersion: monitoring.coreos.com/v1\n"
                     "kind: PrometheusRule\nspec:\n" + textwrap.indent(textwrap.dedent(ALERT_RULES), "  "))
    broken = write(tmp_path, "broken.yaml", "groups:\n  - name: x\n")
    not_rules = write(tmp_path, "other.yaml", "scrape_configs: []\n")
    result = validate_paths([str(CORPUS.parent / "playtest" / "rules")])
    problems = check_alert_rules(result, [str(resource), str(broken), str(not_rules)])
    assert [(p.file, p.line, p.col, p.severity, p.message) for p in problems if p.severity != "warning"] \
        == [
            (str(broken), 2, 5, "error", "rule group without a `rules:` list"),
            (str(not_rules), 1, 1, "error", "not a Prometheus rule file: expected `groups:`"),
            (str(resource), 14, 11, "info", "alert 'DiskFull' has a remediation annotation but no "
                                           "playbook handles it")]


# --- permissions ---------------------------------------------------------------------------------------

PERMISSION_RULES = """
    playbooks:
      - name: delete
        match: {alertname: A}
        target: {kind: deployment, namespace: shop, name: web}
        guards: {cooldown: 10m}
        steps:
          - {name: pods, action: test.delete_pods, params: {namespace: shop, selector: app=web, max: 1}}
          - {name: log, action: log, params: {message: done}}
        on_resolved:
          - {name: fetch, action: test.s3_get, params: {key: a/b}}
      - name: scale
        match: {alertname: B}
        target: {kind: deployment, namespace: shop, name: web}
        guards: {cooldown: 10m}
        steps:
          - {name: up, action: test.scale, params: {namespace: shop, name: web, replicas: 3, min: 1, max: 5}}
          - {name: bounce, action: docker.restart, params: {project: shop, service: web}}
"""


def test_permissions_json_shape(tmp_path, capsys):
    rules = write(tmp_path, "rules.yaml", PERMISSION_RULES)
    assert main(["lint", "--permissions", "--format", "json", str(rules)]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "rbac": [
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["delete", "list"]},
            {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]},
            {"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["get", "patch"]},
        ],
        "iam": ["s3:GetObject", "s3:ListBucket"],
        "docker": ["GET /containers/json", "GET /containers/{id}/json",
                   "POST /containers/{id}/restart", "GET /version"],
        "wide": [],
    }


def test_permissions_yaml_is_the_same_data_with_reasons(tmp_path, capsys):
    rules = write(tmp_path, "rules.yaml", PERMISSION_RULES)
    assert main(["lint", "--permissions", str(rules)]) == 0
    text = capsys.readouterr().out
    assert "# used by delete/fetch, scale/up\n  - apiGroups: [\"apps\"]" in text
    assert "  - s3:GetObject  # used by delete/fetch" in text
    assert '  - "POST /containers/{id}/restart"  # used by scale/bounce' in text
    result = validate_paths([str(rules)])
    assert yaml.safe_load(text) == required_permissions(result.playbooks)


def test_no_permissions_for_read_only_rules():
    result = validate_paths([str(CORPUS.parent / "playtest" / "rules")])
    assert required_permissions(result.playbooks) == {"rbac": [], "iam": [], "docker": [],
                                                      "wide": []}


WIDE_RULES = """
playbooks:
  - name: restart
    match: {alertname: A}
    target: {kind: deployment, namespace: shop, name: web}
    guards: {cooldown: 10m}
    steps:
      - {name: web, action: kubernetes.rollout_restart, params: {namespace: shop, name: web}}
  - name: restart-any
    match: {alertname: B}
    target: {kind: deployment, namespace: shop, name: "{{ labels.deployment }}"}
    guards: {cooldown: 10m}
    steps:
      - {name: any, action: kubernetes.rollout_restart,
         params: {namespace: shop, name: "{{ labels.deployment }}"}}
"""


def test_permissions_grant_literal_names_only_and_say_which_are_wide(tmp_path, capsys):
    literal = write(tmp_path, "literal.yaml", WIDE_RULES.split("  - name: restart-any")[0])
    assert main(["lint", "--permissions", "--format", "json", str(literal)]) == 0
    assert json.loads(capsys.readouterr().out)["rbac"] == [
        {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "patch"],
         "resourceNames": ["web"]}]
    both = write(tmp_path, "both.yaml", WIDE_RULES)
    assert main(["lint", "--permissions", str(both)]) == 0
    out = yaml.safe_load(capsys.readouterr().out)
    assert out["rbac"] == [{"apiGroups": ["apps"], "resources": ["deployments"],
                            "verbs": ["get", "patch"]}]  # a templated name: every deployment
    assert out["wide"] == ["apps/deployments:get ({{ labels.deployment }}) used by restart-any/any",
                           "apps/deployments:patch ({{ labels.deployment }}) used by "
                           "restart-any/any"]


# --- output formats and exit codes ---------------------------------------------------------------------

def test_exit_codes_and_formats(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(CORPUS.parent.parent)
    assert main(["lint", "--config", "tests/playtest/config.yaml", "tests/playtest/rules"]) == 0
    assert capsys.readouterr().out == ""
    assert main(["lint", "tests/lint/unknown_action.yaml", "--format", "json"]) == 1
    assert json.loads(capsys.readouterr().out) == [{
        "file": "tests/lint/unknown_action.yaml", "line": 7, "col": 9, "severity": "error",
        "message": "unknown action 'prometheus.querry' (did you mean 'prometheus.query'?)"}]
    assert main(["lint", "tests/lint/matchers.yaml", "--format", "github"]) == 1
    assert capsys.readouterr().out.splitlines()[0] == (
        "::error file=tests/lint/matchers.yaml,line=9,col=11,title=remediator lint::"
        "bad matcher 'namespace=shop\"': quote a value that contains {},\"")
    assert main(["lint", "no/such/dir"]) == 2
    assert "no such file or directory: no/such/dir" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        main(["lint", "--format", "xml"])
    assert usage.value.code == 2


def test_default_path_is_rules(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "rules/a.yaml", "playbooks:\n  - {name: a, match: {alertname: A}, bogus: 1}\n")
    assert main(["lint"]) == 1
    assert capsys.readouterr().out.startswith("rules/a.yaml:2:38: error: playbooks[0]: unknown key")


def test_github_annotation_escaping():
    p = Problem("dir,x/a:b.yaml", 3, 4, "info", "50% done\nnext line")
    assert github_annotation(p) == ("::notice file=dir%2Cx/a%3Ab.yaml,line=3,col=4,"
                                    "title=remediator lint::50%25 done%0Anext line")
