"""A third-party action (entry-point group `remediator.actions`) is treated exactly like a
built-in: validated and linted, in the schema, planned in dry-run, guarded, run live.

The plugin is tests/action_plugin, a real installed package (tests/run.sh installs it)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from remediator.actions.backends import Backends
from remediator.actions.base import ActionContext, ActionError, check_params
from remediator.actions.registry import ACTIONS, BUILTIN, PLUGIN_GROUP, load_plugins
from tests.conftest import new_store
from tests.kubeapi.rbac import Policy, step_documents
from tests.support.payloads import alert, notification

PLAYBOOK = """
playbooks:
  - name: ticket-on-crashloop
    match: {alertname: KubePodCrashLooping}
    target: {kind: deployment, namespace: "{{ labels.namespace }}", name: "{{ labels.deployment }}"}
    guards: {cooldown: 1h}
    steps:
      - name: ticket
        action: example.open_ticket
        params:
          tracker: %(tracker)s
          title: "{{ labels.deployment }} crash-looping in {{ labels.namespace }}"
          priority: p2
"""


def cli(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REMEDIATOR_")}
    return subprocess.run([sys.executable, "-m", "remediator.cli", *args], cwd=tmp, env=env,
                          capture_output=True, text=True, timeout=60)


def test_the_example_plugin_is_installed_and_registered():
    assert "example.open_ticket" in ACTIONS, (
        "the example plugin is not installed: run tests/run.sh, or "
        "pip install -e tests/action_plugin")
    assert "example.open_ticket" not in BUILTIN


def test_lint_and_schema_see_the_plugin_like_a_builtin(tmp_path):
    (tmp_path / "bad.yaml").write_text("""
playbooks:
  - name: unguarded
    match: {alertname: A}
    target: {kind: deployment, namespace: shop, name: web}
    steps:
      - name: ticket
        action: example.open_ticket
        params: {tracker: "{{ labels.url }}", titel: x}
""")
    done = cli(tmp_path, "lint", "bad.yaml")
    assert done.returncode == 1
    for expected in ("unknown parameter 'titel'", "did you mean 'title'",
                     "has a mutating step but neither guards.rate_limit nor guards.cooldown",
                     "tracker"):
        assert expected in done.stdout, done.stdout
    schema = json.loads(cli(tmp_path, "schema").stdout)
    step = schema["properties"]["playbooks"]["items"]["properties"]["steps"]["items"]
    assert "example.open_ticket" in step["properties"]["action"]["enum"]
    [rule] = [r for r in step["allOf"] if r["if"]["properties"]["action"]["const"]
              == "example.open_ticket"]
    assert rule["then"]["properties"]["params"]["properties"]["priority"]["enum"] == \
        ["p1", "p2", "p3", "p4"]


def test_dry_run_plans_it_live_runs_it_and_the_guards_hold(tmp_path, webhook_receiver):
    (tmp_path / "rules.yaml").write_text(PLAYBOOK % {"tracker": webhook_receiver.url + "/tickets"})
    payload = tmp_path / "payload.json"
    payload.write_text(json.dumps(notification(alert(
        "KubePodCrashLooping", namespace="shop", deployment="cart", fingerprint="c1"))))

    done = cli(tmp_path, "replay", str(payload), "--rules", "rules.yaml", "--format", "json")
    [planned] = json.loads(done.stdout)
    assert planned["outcome"] == "planned", planned
    assert planned["steps"][0]["detail"] == (
        f"would open a p2 ticket 'cart crash-looping in shop' at {webhook_receiver.url}/tickets")
    assert webhook_receiver.deliveries == []

    # The namespace scope and the kill switch hold for it as for any mutation.
    (tmp_path / "scoped.yaml").write_text("guards: {namespaces: {allow: [payments]}}\n")
    done = cli(tmp_path, "replay", str(payload), "--rules", "rules.yaml", "--format", "json",
               "--mode", "live", "--store", new_store(f"sqlite:///{tmp_path / 'scoped.db'}"),
               "--config", "scoped.yaml")
    [denied] = json.loads(done.stdout)
    assert denied["outcome"] == "blocked" and "scope_denied" in denied["reason"], denied
    assert webhook_receiver.deliveries == []

    done = cli(tmp_path, "replay", str(payload), "--rules", "rules.yaml", "--format", "json",
               "--mode", "live", "--store", new_store(f"sqlite:///{tmp_path / 'live.db'}"))
    [ran] = json.loads(done.stdout)
    assert ran["outcome"] == "succeeded", ran
    body = webhook_receiver.wait_for().body
    assert body == {"title": "cart crash-looping in shop", "priority": "p2",
                    "execution": ran["id"]}


ANNOTATE = """
playbooks:
  - name: note-on-crashloop
    match: {alertname: KubePodCrashLooping}
    target: {kind: deployment, namespace: shop, name: web}
    guards: {cooldown: 1h}
    steps:
      - name: note
        action: example.annotate
        params: {namespace: shop, name: web, note: "crash-looping: {{ labels.reason }}"}
"""


def test_a_plugins_declared_permission_is_listed_and_is_exactly_what_its_call_needs(
        tmp_path, run, kubeapi, kubeconfig):
    (tmp_path / "rules.yaml").write_text(ANNOTATE)
    done = cli(tmp_path, "lint", "--permissions", "--format", "json", "rules.yaml")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["rbac"] == [{"apiGroups": ["apps"], "resources": ["deployments"],
                                                "verbs": ["patch"], "resourceNames": ["web"]}]
    text = cli(tmp_path, "lint", "--permissions", "rules.yaml").stdout
    assert "# used by note-on-crashloop/note" in text and '"patch"' in text, text
    reference = cli(tmp_path, "schema", "--actions").stdout.split("## example.annotate", 1)[1]
    assert "*A plugin action, from `remediator_example_plugin`.*" in reference
    assert "- **Permissions**: RBAC `apps/deployments`: patch\n" in reference

    # The Kubernetes test server enforces RBAC: granted only what generate.py derives from the
    # declaration, the call succeeds on the named deployment and is refused on any other.
    action = ACTIONS["example.annotate"]
    kubeapi.rbac = Policy([])
    kubeapi.add_deployment("web", "shop")
    kubeapi.add_deployment("api", "shop")
    backends = Backends()
    ctx = ActionContext(backends=backends, log=logging.getLogger("t"), execution_id="e1")
    params, problems = check_params(action, {"namespace": "shop", "name": "web", "note": "n"},
                                    rendered=True)
    assert not problems
    kubeapi.grant(step_documents(action.name, params, "shop"))
    try:
        assert run(action.run(params, ctx)) == {"annotation": "example.com/remediation",
                                                "note": "n"}
        assert kubeapi.get("deployments", "shop", "web")["metadata"]["annotations"][
            "example.com/remediation"] == "n"
        with pytest.raises(ActionError, match="HTTP 403"):
            run(action.run(dict(params, name="api"), ctx))
    finally:
        run(backends.close())


def test_a_broken_plugin_is_reported_not_loaded():
    entries = [
        EntryPoint("example.absent", "remediator_no_such_module:Action", PLUGIN_GROUP),
        EntryPoint("example.not_action", "json:JSONDecoder", PLUGIN_GROUP),
        EntryPoint("log", "remediator_example_plugin:OpenTicket", PLUGIN_GROUP),
        EntryPoint("example.renamed", "remediator_example_plugin:OpenTicket", PLUGIN_GROUP),
        EntryPoint("example.open_ticket", "remediator_example_plugin:OpenTicket", PLUGIN_GROUP),
    ]
    actions, problems = load_plugins(BUILTIN, entries)
    assert set(actions) - set(BUILTIN) == {"example.open_ticket"}
    assert actions["log"] is BUILTIN["log"]
    assert [p.split(":")[0] for p in problems] == [
        "plugin 'example.absent' (remediator_no_such_module",
        "plugin 'example.not_action' (json",
        "plugin 'example.renamed' (remediator_example_plugin",
        "plugin 'log' (remediator_example_plugin"]
    assert "cannot load: ModuleNotFoundError" in problems[0]
    assert "not a subclass" in problems[1]
    assert "must be the entry point's" in problems[2] and "must be the entry point's" in problems[3]
