"""deploy/alertmanager: valid for amtool, routes playbook alerts to remediator *and* humans."""

from __future__ import annotations

from urllib.parse import urlsplit

import yaml

from remediator.config import Config
from remediator.playbooks.validate import load_rules
from tests.deploy.conftest import DEPLOY, ROOT, require_tool, run

CONFIG = DEPLOY / "alertmanager" / "alertmanager.yml"
HUMANS = "oncall"
ALERT_BUDGET = 16 << 10  # JSON bytes per alert the README and max_body_bytes promise room for


def config() -> dict:
    return yaml.safe_load(CONFIG.read_text())


def receivers_for(**labels: str) -> list[str]:
    amtool = require_tool("amtool")
    result = run(amtool, "config", "routes", "test", f"--config.file={CONFIG}",
                 *(f"{k}={v}" for k, v in labels.items()))
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().split(",")


def remediator_receiver() -> dict:
    found = [r for r in config()["receivers"] if r["name"] == "remediator"]
    assert len(found) == 1
    return found[0]


def test_amtool_accepts_the_config():
    result = run(require_tool("amtool"), "check-config", str(CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr


def test_webhook_reaches_the_service_with_resolved_alerts_untruncated():
    hooks = remediator_receiver()["webhook_configs"]
    assert len(hooks) == 1
    hook = hooks[0]
    service = yaml.safe_load((DEPLOY / "kubernetes" / "service.yaml").read_text())
    url = urlsplit(hook["url"])
    meta = service["metadata"]
    assert url.hostname in (f"{meta['name']}.{meta['namespace']}.svc",
                            f"{meta['name']}.{meta['namespace']}.svc.cluster.local")
    assert url.port in [p["port"] for p in service["spec"]["ports"]]
    assert url.path == "/alerts"
    assert hook["send_resolved"] is True
    # A notification is never refused whole (413, not retried by Alertmanager): max_alerts
    # alerts of the per-alert budget fit the default body limit.
    assert hook["max_alerts"] > 0
    assert hook["max_alerts"] * ALERT_BUDGET <= Config().max_body_bytes


def test_bearer_token_comes_from_a_file():
    auth = remediator_receiver()["webhook_configs"][0]["http_config"]["authorization"]
    assert auth.get("type", "Bearer") == "Bearer"
    assert auth["credentials_file"].startswith("/")
    assert "credentials" not in auth, "no inline token in the config"


def test_remediator_route_continues_and_groups_sensibly():
    routes = [r for r in config()["route"]["routes"] if r["receiver"].startswith("remediator")]
    # the systems' namespaces, the Hackathon's in `default`, and the compose systems'
    assert [r["receiver"] for r in routes] == ["remediator", "remediator", "remediator-compose"]
    for route in routes:
        assert route["continue"] is True
        assert "..." not in route["group_by"] and "alertname" in route["group_by"]
        assert route["group_wait"] in ("0s", "5s", "10s", "15s", "30s")


def test_shipped_playbook_alerts_reach_remediator_and_humans():
    """Each playbook's alerts, with the labels its matchers require, are routed to both."""
    playbooks = load_rules([str(ROOT / "rules")]).playbooks
    assert playbooks
    for pb in playbooks:
        labels = {m.name: m.value for m in pb.matchers if m.op == "="}
        for name in pb.alertnames:
            got = receivers_for(**{**labels, "alertname": name, "severity": "critical"})
            # the cluster's remediator, or the one next to the compose stack (deploy/compose)
            which = "remediator-compose" if "compose_project" in labels else "remediator"
            assert which in got, f"{pb.name} ({name}, {labels}): no route to {which}"
            assert HUMANS in got, f"{pb.name} ({name}): humans are no longer notified"


def test_other_alerts_reach_humans_only():
    assert receivers_for(alertname="KubePodCrashLooping", namespace="default") == [HUMANS]
    assert receivers_for(alertname="KubePodCrashLooping", namespace="default",
                         deployment="hackathon-file-processor") == ["remediator", HUMANS]


def test_remediator_alerts_about_itself_go_to_humans_only():
    groups = yaml.safe_load((DEPLOY / "prometheus" / "remediator.rules.yml").read_text())["groups"]
    for rule in (r for g in groups for r in g["rules"] if "alert" in r):
        labels = {"alertname": rule["alert"], "job": "remediator", **rule.get("labels", {})}
        assert receivers_for(**labels) == [HUMANS], rule["alert"]


def test_escalations_route_by_team_to_the_runbooks_contacts_and_never_to_remediator():
    """Every team a shipped playbook escalates to (escalation.team, raise[].team) has a
    receiver of that name; a note without a team goes to the on-call receiver."""
    teams = set()
    for pb in load_rules([str(ROOT / "rules")]).playbooks:
        if pb.escalation:
            teams |= {pb.escalation.team} | {r[3] for r in pb.escalation.raise_to}
    teams.discard("")
    assert {"sre-oncall", "platform-eng", "code-forge-team", "platform-team",
            "hackathon-oncall", "libervia-sre", "libervia-dev", "libervia-security",
            "3dpot-devops", "3dpot-backend", "3dpot-security"} <= teams
    for team in sorted(teams):
        for severity in ("warning", "critical"):
            got = receivers_for(alertname="RemediationEscalation", team=team, severity=severity,
                                namespace="deltacrown", respond_within="15m")
            assert got == [team], (team, got)
    assert receivers_for(alertname="RemediationEscalation", severity="critical") == [HUMANS]
