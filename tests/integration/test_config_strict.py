"""The config file is checked as strictly as playbooks: a typo is refused, located, at start.

And an escalation that breaks never leaves its decision `running` (a real serve process)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from http.server import BaseHTTPRequestHandler

import jsonschema
import pytest
import yaml

from remediator.alerts import parse_notification
from remediator.config import Config, ConfigError, load_config
from remediator.guards import SYSTEM_NAMESPACES
from remediator.service import Service
from tests.conftest import NO_MATCH_RULES, write_rules
from tests.support.payloads import alert, notification
from tests.support.procs import http_request, serve_http
from tests.support.worker import WorkerProcess


def serve(config: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REMEDIATOR_")}
    return subprocess.run([sys.executable, "-m", "remediator.cli", "serve", "--config", config,
                           "--allow-unauthenticated", *args], env=env, capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize("text, message", [
    ("escalation:\n  default_sinks: [files, oncal]\n",
     "2:26: escalation.default_sinks: sink 'oncal' is not configured (configured: files)"),
    ("escalation:\n  sinks:\n    oncall: {type: slack, url: 'http://127.0.0.1:1/x'}\n"
     "  default_sinks: [files, oncal]\n",
     "sink 'oncal' is not configured (configured: files, oncall) (did you mean 'oncall'?)"),
    ("guards:\n  namespaces:\n    alow: [shop]\n",
     "3:5: guards.namespaces: unknown key 'alow' (did you mean 'allow'?)"),
    ("guards:\n  paused: \"false\"\n",
     "2:3: guards.paused: expected boolean, got string (write false, unquoted)"),
    ("guards: {namespace: {allow: [shop]}}\n",
     "1:10: guards: unknown key 'namespace' (did you mean 'namespaces'?)"),
    ("guards:\n  budgets: {max: 3}\n", "2:3: guards: unknown key 'budgets' (did you mean 'budget'?)"),
    ("store_sync: ful\n", "1:1: store_sync: 'ful' is not one of normal, full (did you mean 'full'?)"),
    ("log_level: verbose\n", "log_level: 'verbose' is not one of debug, info, warning, error"),
    ("event_loop: uvlop\n",
     "1:1: event_loop: 'uvlop' is not one of auto, uvloop, asyncio (did you mean 'uvloop'?)"),
    ("store: mysql://db\n", "store: the value given: not a store URL: use sqlite:///path.db"),
    # what the pattern let through, and the driver refused with a traceback (store/url.py)
    ("mode: dry-run\nstore: postgresql://rem@127.0.0.1:notaport/rem\n",
     "2:1: store: its port is not a number"),
    ("store: postgresql://rem@[::1:5432/rem\n", "1:1: store: an IPv6 host is written in brackets"),
    ("store: sqlite://remediator.db\n", "1:1: store: a SQLite URL names no host"),
    ("grace_period: 30 s\n", "grace_period: '30 s': not a duration: use e.g. 1h, 30m, 1h30m"),
    ("workers: four\n", "workers: expected integer, got string"),
    ("allow_unauthenticated: \"true\"\n", "expected boolean, got string (write true, unquoted)"),
    ("escalation:\n  sinks:\n    pager: {type: pagerduty}\n",
     "3:13: escalation.sinks.pager.type: 'pagerduty' is not one of directory, webhook"),
    ("escalation:\n  sinks:\n    pager: {type: webhook}\n",
     "escalation.sinks.pager: url is required for type webhook"),
    ("prometheus:\n  ulr: http://x:9090\n", "2:3: prometheus: unknown key 'ulr' (did you mean 'url'?)"),
    ("modes: live\n", "1:1: file: unknown key 'modes' (did you mean 'mode'?)"),
    ("operators:\n  - {name: alice, role: admin, token_file: /x}\n",
     "operators[0].role: 'admin' is not one of viewer, operator"),
])
def test_a_config_typo_is_refused_at_start_with_its_line(tmp_path, text, message):
    config = tmp_path / "config.yaml"
    config.write_text(text)
    done = serve(str(config))
    assert done.returncode == 2, done
    assert f"remediator: configuration error: {config}:" in done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr, done.stderr
    lint = subprocess.run([sys.executable, "-m", "remediator.cli", "lint", "--config",
                           str(config), str(write_rules(tmp_path / "rules", NO_MATCH_RULES))],
                          capture_output=True, text=True, timeout=60)
    assert lint.returncode == 1 and message in lint.stdout.replace(" error:", ""), lint


# A value that may hold a secret, malformed: a bcrypt hash (derived from a password), a URL
# (user:password@ in a store's, a token in a Slack hook's path). Each refusal names the
# setting and says what is wrong, never quoting the value: it reaches logs and CI output.
HIDDEN = "XYZZY0hidden0XYZZY"
SECRET_ISH = [
    ("operators", [{"name": "alice", "role": "viewer", "password_hash": f"$2b$12${HIDDEN}"}],
     "operators[0].password_hash: the value given: must be a bcrypt hash"),
    ("store", f"postgress://app:{HIDDEN}@db:5432/remediator",
     "store: the value given: not a store URL"),
    ("store", f"postgresql://app:{HIDDEN}@db:99999/remediator",
     "store: its port is out of range (1 to 65535)"),
    # no `@`: the password is where a parser reads the port
    ("store", f"postgresql://app:{HIDDEN}/remediator", "store: its port is not a number"),
    ("escalation_sinks", {"s": {"type": "slack", "url": f"hooks.slack.com/T0/B0/{HIDDEN}"}},
     "escalation_sinks.s.url: the value given: not an http(s) URL"),
    ("prometheus_url", f"ops:{HIDDEN}@prometheus:9090",
     "prometheus_url: the value given: not an http(s) URL"),
]


@pytest.mark.parametrize("name, value, message", SECRET_ISH,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(SECRET_ISH)])
def test_a_refusal_never_quotes_a_secret_ish_value(tmp_path, name, value, message):
    """From the environment, and from the file (`serve`, `lint --config`)."""
    variable = f"REMEDIATOR_{name.upper()}"
    with pytest.raises(ConfigError) as refused:
        load_config(env={variable: value if isinstance(value, str) else json.dumps(value)},
                    secrets=False)
    assert message in str(refused.value) and HIDDEN not in str(refused.value), refused.value
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({name: value}))
    done = serve(str(config))
    assert done.returncode == 2 and message in done.stderr, done.stderr
    lint = subprocess.run([sys.executable, "-m", "remediator.cli", "lint", "--config",
                           str(config), str(write_rules(tmp_path / "rules", NO_MATCH_RULES))],
                          capture_output=True, text=True, timeout=60)
    assert lint.returncode == 1 and message in lint.stdout.replace(" error:", ""), lint
    assert HIDDEN not in done.stderr + lint.stdout + lint.stderr


def test_booleans_from_the_environment_are_booleans_too():
    assert load_config(env={"REMEDIATOR_PAUSED": "false"}).guards.paused is False
    assert load_config(env={"REMEDIATOR_PAUSED": "TRUE"}).guards.paused is True
    with pytest.raises(ConfigError, match="REMEDIATOR_PAUSED: 'flase' is not a boolean"):
        load_config(env={"REMEDIATOR_PAUSED": "flase"})
    with pytest.raises(ConfigError, match="REMEDIATOR_ALLOW_UNAUTHENTICATED: 'maybe' is not a boolean"):
        load_config(env={"REMEDIATOR_ALLOW_UNAUTHENTICATED": "maybe"})
    with pytest.raises(ConfigError, match="listen: '9095': not HOST:PORT"):
        load_config(env={}, listen="9095")
    # uvloop bound :99999 as :34463 (the port mod 65536) and said it listened on 99999
    for port in ("99999", "65536", "00"):
        with pytest.raises(ConfigError, match="port up to 65535"):
            load_config(env={}, listen=f"127.0.0.1:{port}")
    assert load_config(env={}, listen="127.0.0.1:65535").listen == "127.0.0.1:65535"
    # refused by the PostgreSQL store only as it opened: a traceback, exit 1
    with pytest.raises(ConfigError, match="store_lease must be at least 3s, got 2s"):
        load_config(env={"REMEDIATOR_STORE_LEASE": "2s"})
    with pytest.raises(ConfigError, match="sink 'oncal' is not configured"):
        load_config(env={"REMEDIATOR_ESCALATION_DEFAULT_SINKS": "files,oncal"})


def test_structured_settings_have_environment_variables_too(tmp_path):
    """DESIGN.md: every setting has a REMEDIATOR_<NAME> variable. The guards' leaves one each
    over the file's (lists comma-separated), operators and sinks as JSON in place of it."""
    config = tmp_path / "config.yaml"
    config.write_text("guards:\n  namespaces: {allow: [from-file], deny: [kube-system]}\n"
                      "  budget: {max: 9}\n")
    token = tmp_path / "alice.token"
    token.write_text("a" * 32)
    cfg = load_config(str(config), env={
        "REMEDIATOR_GUARDS_NAMESPACES_ALLOW": "shop, web,",
        "REMEDIATOR_GUARDS_BUDGET_WINDOW": "2h",
        "REMEDIATOR_GUARDS_HTTP_ALLOW": "Hooks.Example:8443",
        "REMEDIATOR_GUARDS_APPROVAL_TTL": "15m",
        "REMEDIATOR_OPERATORS": json.dumps([{"name": "alice", "role": "operator",
                                             "token_file": str(token)}]),
        "REMEDIATOR_ESCALATION_SINKS": '{"pager": {"type": "webhook", "url": "http://127.0.0.1:1/n"}}',
        "REMEDIATOR_ESCALATION_DEFAULT_SINKS": "pager"})
    g = cfg.guards
    assert (g.namespaces_allow, g.namespaces_deny) == (["shop", "web"], ["kube-system"])
    assert (g.budget_max, g.budget_window, g.approval_ttl) == (9, 7200.0, 900.0)
    assert g.http_allow == ["hooks.example:8443"]
    assert [(u.name, u.role, u.token) for u in cfg.operators] == [("alice", "operator", "a" * 32)]
    assert cfg.sink_specs()["pager"]["url"] == "http://127.0.0.1:1/n"
    # An empty list is "none", as in the file: here no bucket may be written.
    assert load_config(env={"REMEDIATOR_GUARDS_BUCKETS_ALLOW": ""}).guards.buckets_allow == []


@pytest.mark.parametrize("env, message", [
    ({"REMEDIATOR_GUARDS_BUDGET_MAX": "-1"},
     "REMEDIATOR_GUARDS_BUDGET_MAX: guards.budget.max: must be >= 0"),
    ({"REMEDIATOR_GUARDS_BUDGET_MAX": "ten"}, "REMEDIATOR_GUARDS_BUDGET_MAX: 'ten' is not an integer"),
    ({"REMEDIATOR_GUARDS_APPROVAL_TTL": "1 h"},
     "REMEDIATOR_GUARDS_APPROVAL_TTL: guards.approval_ttl: '1 h': not a duration"),
    ({"REMEDIATOR_OPERATORS": '[{"name": "alice", "role": "admin", "token_file": "/x"}]'},
     "REMEDIATOR_OPERATORS: operators[0].role: 'admin' is not one of viewer, operator"),
    ({"REMEDIATOR_OPERATORS": "alice:operator"},
     "REMEDIATOR_OPERATORS: not JSON (Expecting value at character 0)"),
    # A Slack URL is a secret: the refusal says what is wrong without quoting it.
    ({"REMEDIATOR_ESCALATION_SINKS": '{"s": {"type": "slack", "url": "hooks.slack/T0/B0/XYZZY"}}'},
     "REMEDIATOR_ESCALATION_SINKS: escalation_sinks.s.url: the value given: not an http(s) URL"),
])
def test_a_structured_variable_is_refused_naming_it(env, message):
    with pytest.raises(ConfigError) as refused:
        load_config(env=env, secrets=False)
    assert message in str(refused.value) and "XYZZY" not in str(refused.value)


def test_the_kill_switch_by_either_name_and_a_misspelt_variable_is_flagged(tmp_path):
    """REMEDIATOR_GUARDS_PAUSED is what the naming rule gives guards.paused: it pauses as
    REMEDIATOR_PAUSED does. A variable one typo from a setting is ignored, so it is warned
    of: a misspelt kill switch must not be silent. So is the guards' section as JSON, as
    operators and sinks are given: no setting, it paused nothing, silently. A name unlike
    any is a playbook's."""
    rules = write_rules(tmp_path / "rules", "playbooks:\n  - name: note\n"
                        "    match: {alertname: Paused}\n    steps:\n"
                        "      - {name: say, action: log, params: {message: hi}}\n")
    w = WorkerProcess(tmp_path, [str(rules)], mode="live", extra_env={
        "REMEDIATOR_GUARDS_PAUSED": "true", "REMEDIATOR_PAUSE": "true",
        "REMEDIATOR_SLACK_TOKEN": "not-a-setting", "REMEDIATOR_GUARDS": '{"paused": true}'}
                     ).start()
    try:
        assert w.post_alerts(notification(alert("Paused", fingerprint="p1")))[0] == 202
        [decision] = w.decided()
        assert decision["outcome"] == "blocked" and decision["reason"].startswith("paused"), \
            decision
        logs = w.logs()
        assert "REMEDIATOR_PAUSE is not a setting and is ignored (did you mean " \
            "'REMEDIATOR_PAUSED'?)" in logs
        assert "REMEDIATOR_SLACK_TOKEN" not in logs
        assert "REMEDIATOR_GUARDS is not a setting and is ignored (the guards take one " \
            "variable per setting, e.g. REMEDIATOR_GUARDS_PAUSED" in logs, logs
    finally:
        w.stop()


# An answer nested deeper than Python's recursion limit allows to copy: a probed service
# (untrusted) can send it, and the note about the failed step must still be written.
DEEP = ("[" * 600 + "]" * 600).encode()

ESCALATING = """
playbooks:
  - name: probe
    match: {alertname: ProbeDeep}
    steps:
      - name: probe
        action: http.request
        params: {url: "http://127.0.0.1:%(port)d/deep", expect_status: [200]}
    escalation: {always: true, severity: warning}
"""


def test_no_error_inside_escalation_leaves_a_decision_running(tmp_path):
    class Deep(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(DEEP)))
            self.end_headers()
            self.wfile.write(DEEP)

        def log_message(self, *args: object) -> None:
            pass

    server, port = serve_http(Deep)
    rules = write_rules(tmp_path / "rules", ESCALATING % {"port": port})
    w = WorkerProcess(tmp_path, [str(rules)], mode="live").start()
    try:
        assert w.post_alerts(notification(alert("ProbeDeep", fingerprint="d1")))[0] == 202
        [decision] = w.decided()
        assert decision["outcome"] in ("failed", "escalated"), decision
        assert decision["escalation"], decision
        # Counted, so the self-monitoring alerts on failed executions can fire.
        metrics = http_request("GET", f"{w.url}/metrics")[1].decode()
        assert f'remediator_executions_total{{outcome="{decision["outcome"]}",playbook="probe"}} 1.0' \
            in metrics, metrics
    finally:
        w.stop()
        server.shutdown()


def test_a_sink_missing_at_run_time_fails_the_delivery_not_the_decision(tmp_path):
    """load_config refuses an unknown default sink; built without it, the escalation still
    finishes its decision (it stayed `running` forever on a KeyError)."""
    rules = write_rules(tmp_path / "rules", ESCALATING % {"port": 9})
    cfg = Config(rules=[str(rules)], store="sqlite://", mode="live",
                 escalation_dir=str(tmp_path / "notes"), escalation_default_sinks=["oncal", "files"])
    service = Service(cfg)

    async def go() -> dict:
        await service.start(dispatch=False)
        try:
            await service.intake(parse_notification(json.dumps(notification(
                alert("ProbeDeep", fingerprint="m1"))).encode()))
            [decision] = await service.drain()
            return await service.store.get_execution(decision["id"])
        finally:
            await service.stop()

    stored = asyncio.run(go())
    assert stored["outcome"] == "failed", stored
    deliveries = stored["escalation"]["deliveries"]
    assert deliveries["oncal"].startswith("undeliverable: KeyError")
    assert deliveries["files"].startswith("delivered")


def test_schema_config_is_a_json_schema_that_accepts_the_shipped_configs():
    """`remediator schema --config` is what editors and CI validators read: the shipped
    configs pass it (with a real JSON Schema validator) and a typo does not."""
    done = subprocess.run([sys.executable, "-m", "remediator.cli", "schema", "--config"],
                          capture_output=True, text=True, timeout=60, check=True)
    schema = json.loads(done.stdout)
    jsonschema.Draft7Validator.check_schema(schema)
    for shipped in ("deploy/kubernetes/config.yaml", "deploy/compose/config.yaml"):
        with open(shipped, encoding="utf-8") as f:
            jsonschema.validate(yaml.safe_load(f), schema)
    with pytest.raises(jsonschema.ValidationError, match="alow"):
        jsonschema.validate({"guards": {"namespaces": {"alow": ["shop"]}}}, schema)
    # Every setting the process has is in the file's schema (a new one cannot be missed).
    assert {f for f in Config.__dataclass_fields__} - {"escalation_dir", "escalation_sinks",
                                                       "escalation_default_sinks"} \
        <= set(schema["properties"])


def test_an_empty_namespace_variable_is_unset_never_a_wider_scope(tmp_path):
    """An empty REMEDIATOR_GUARDS_NAMESPACES_DENY (a Helm value left blank, `VAR=` in an env
    file) made the deny list empty: kube-system and the other system namespaces lost their
    protection, silently. An empty ..._ALLOW dropped the file's allow list: every namespace.
    For these two lists, empty would widen the scope, so an empty variable is unset (the
    file's value, else the default); denying none takes `deny: []` in the file, which lint
    and serve warn of. Other lists stay "empty: none", which narrows."""
    for blank in ("", " ", ", ,"):
        g = load_config(env={"REMEDIATOR_GUARDS_NAMESPACES_DENY": blank,
                             "REMEDIATOR_GUARDS_NAMESPACES_ALLOW": blank}).guards
        assert (g.namespaces_allow, g.namespaces_deny) == ([], list(SYSTEM_NAMESPACES)), blank
    config = tmp_path / "config.yaml"
    config.write_text("guards:\n  namespaces: {allow: [shop], deny: [kube-system, payments]}\n")
    g = load_config(str(config), env={"REMEDIATOR_GUARDS_NAMESPACES_DENY": "",
                                      "REMEDIATOR_GUARDS_NAMESPACES_ALLOW": ""}).guards
    assert (g.namespaces_allow, g.namespaces_deny) == (["shop"], ["kube-system", "payments"])
    # A value still replaces the file's; the file may deny none on purpose (warned of).
    assert load_config(str(config), env={"REMEDIATOR_GUARDS_NAMESPACES_DENY": "web"}
                       ).guards.namespaces_deny == ["web"]
    config.write_text("guards:\n  namespaces: {deny: []}\n")
    assert load_config(str(config)).guards.namespaces_deny == []


def test_serve_warns_when_a_system_namespace_may_be_changed(tmp_path):
    """`deny: []` (or a deny list without them and no allow list) lets mutations reach
    kube-system: allowed, since it is written down, but `serve` says so at start, as lint
    does, not only a CI job that may not run `lint --config`."""
    rules = str(write_rules(tmp_path / "rules", NO_MATCH_RULES))
    worker = WorkerProcess(tmp_path, [rules], config={"guards": {"namespaces": {"deny": []}}})
    try:
        worker.start()
    finally:
        worker.stop()
    logs = worker.logs()
    for ns in SYSTEM_NAMESPACES:
        assert f"system namespace '{ns}'" in logs, logs
    quiet = WorkerProcess(tmp_path, [rules])
    try:
        quiet.start()
    finally:
        quiet.stop()
    assert "system namespace" not in quiet.logs()
