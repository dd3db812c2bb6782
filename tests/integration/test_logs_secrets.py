"""What an application logs is filtered like exec output before anything records it.

A real `serve` runs playbooks that read the logs of a container of the test dockerd
(docker.logs: stdout and stderr) and of a pod of the Kubernetes API test server
(kubernetes.logs), where the application printed its password, a bearer token, a connection
URL and a JWT among the lines the runbooks grep for, then bundles them as evidence. No secret
may reach the log file, the API, the note, the store or the evidence bundle's files; a grep
still finds its line by what was printed (`password authentication failed`), `extract` never
yields a secret, and the ordinary lines the shipped playbooks' checks read stay as printed.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.kubeapi.rbac import Policy, step_documents
from tests.support.recorded import run_live

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZG1pbi00MjQyIn0.c2lnbmF0dXJlLTk5ODg"
SECRET_LINES = [
    "DB_PASS=hunter2hunter2",
    "2026-12-02T04:00:01Z INFO connecting user=app password=s3cr3t-pw-5151 db=app",
    "2026-12-02T04:00:02Z DEBUG GET /internal/x headers: Authorization: Bearer tok-value-6161",
    "2026-12-02T04:00:03Z ERROR connect failed postgresql://app:pg-pw-7171@db:5432/app: timeout",
    f"2026-12-02T04:00:04Z WARN session {JWT} rejected",
    '{"level":50,"msg":"login error","user":"x","password":"json-pw-8181"}',
    # a secret's name outside a line's start, lower case, a header, a Kubernetes env pair
    "2026-12-02T04:00:05Z INFO config loaded SIGNING_KEY: sign-key-2121 privateKey=priv-3232",
    "2026-12-02T04:00:06Z WARN retry invalid_token=inv-tok-4343 ExpiredToken:exp-tok-5454",
    "2026-12-02T04:00:07Z DEBUG response Set-Cookie: sid=cookie-6565; Path=/",
    '{"msg":"env","env":[{"name":"DB_PASSWORD","value":"env-pw-7676"}]}',
]
SECRET_VALUES = ("hunter2hunter2", "s3cr3t-pw-5151", "tok-value-6161", "pg-pw-7171",
                 "json-pw-8181", JWT, "c2lnbmF0dXJlLTk5ODg", "eyJzdWIiOiJhZG1pbi00MjQyIn0",
                 "sign-key-2121", "priv-3232", "inv-tok-4343", "exp-tok-5454", "cookie-6565",
                 "env-pw-7676")
# What the shipped playbooks grep for and their checks read (code-forge, libervia, hackathon):
# as printed, every character.
ORDINARY_LINES = [
    "ERROR s3 upload failed: ExpiredToken: The provided token has expired",
    "2026-11-21T10:00:02.311Z [error    ] s3_upload_failed error=An error occurred "
    "(ExpiredToken) when calling the PutObject operation: The provided token has expired.",
    "ERROR s3 upload failed: NoSuchBucket: The specified bucket does not exist",
    "ERROR S3ArtifactClient upload failed key=sboms/TICKET-100/artifact-0/sbom.cyclonedx.json: "
    "AccessDenied",
    '{"level":50,"code":"TENANT_CONFLICT","tenantId":"globex","msg":"tenant conflict"}',
    '{"msg":"auth failed","reason":"INVALID_TOKEN","ip":"203.0.113.9"}',
    "FATAL ERROR: Reached heap limit Allocation failed - JavaScript heap out of memory",
    "2026-11-21T10:00:02Z ERROR MongoDB write timeout after 30000ms",
]
FAILED_AUTH = 'FATAL: password authentication failed for user "app"'
GREP = ("(?i)s3|upload|error|expired|NoSuchBucket|AccessDenied|TENANT_CONFLICT|INVALID_TOKEN|heap"
        "|connecting")
EXTRACT = r"password=(\S+)"


def playbook(alertname: str, action: str, target: dict, where: dict, prefix: str,
             evidence: Path, extract: bool) -> str:
    """Three reads (all lines; a grep for the failed login; the runbooks' grep), the bundle,
    a log of everything, a check of the ordinary lines, and a check that fails: the run
    escalates (the note shows every step's result)."""
    def logs(name: str, **extra) -> dict:
        return {"name": name, "action": action, "params": {**where, "tail": 200, **extra}}

    ordinary = " and ".join(f"{prefix + line!r} in steps.ordinary.result.lines"
                            for line in ORDINARY_LINES)
    seen = (f"steps.auth.result.lines == [{prefix + FAILED_AUTH!r}] and {ordinary}"
            + (" and steps.ordinary.result.extracted == ['<redacted>']" if extract else ""))
    steps = [logs("all"), logs("auth", grep="password authentication failed"),
             logs("ordinary", grep=GREP, **({"extract": EXTRACT} if extract else {})),
             {"name": "evidence", "action": "evidence.bundle",
              "params": {"directory": str(evidence)}},
             {"name": "shown", "action": "log",  # every line read, in the log file too
              "params": {"message": "{{ steps.all.result }} {{ steps.ordinary.result }}"}},
             {"name": "seen", "action": "check", "on_failure": "continue",
              "params": {"that": "{{ " + seen + " }}"}},
             {"name": "escalate", "action": "check", "params": {"that": "{{ false }}"}}]
    return yaml.safe_dump({"playbooks": [{"name": f"{alertname.lower()}-logs",
                                          "match": {"alertname": alertname},
                                          "target": target, "guards": {"cooldown": "1m"},
                                          "steps": steps,
                                          "escalation": {"severity": "warning"}}]})


def run_and_search(tmp_path: Path, alertname: str, rules: str, config: dict,
                   evidence: Path) -> dict:
    config = {**config, "guards": {**config["guards"],
                                   "evidence": {"directories": [str(evidence)]}}}
    decision, outputs = run_live(tmp_path, rules, alertname, config)
    bundle = sorted(p for p in evidence.rglob("*") if p.is_file())
    outputs.update({f"bundle {p.name}": p.read_text() for p in bundle})
    steps = {s["name"]: s for s in decision["steps"]}
    assert [s["outcome"] for s in decision["steps"]] == ["succeeded"] * 6 + ["failed"], decision
    assert {"all.log", "all.json", "ordinary.log", "manifest.json"} <= {p.name for p in bundle}
    assert decision["outcome"] == "failed" and any(n.startswith("note ") for n in outputs)
    leaks = [(s, where) for s in SECRET_VALUES for where, text in outputs.items() if s in text]
    assert leaks == []
    return steps


def assert_masked(lines: list[str], prefix: str) -> None:
    """Each secret line is kept, with what shows it is there and none of its value."""
    for line in ("DB_PASS=<redacted>", "password=<redacted> db=app",
                 "Authorization: Bearer <redacted>", "postgresql://<redacted>@db:5432/app",
                 "WARN session <redacted> rejected", '"password":"<redacted>"}',
                 "SIGNING_KEY: <redacted> privateKey=<redacted>",
                 "invalid_token=<redacted> ExpiredToken:<redacted>", "Set-Cookie: <redacted>",
                 '{"name":"DB_PASSWORD","value":"<redacted>"}'):
        assert any(line in kept for kept in lines), (line, lines)
    assert prefix + FAILED_AUTH in lines


def test_docker_logs_never_record_a_secret(docker_env, tmp_path: Path):
    # printed by the application itself, on stdout and on stderr
    out = "\n".join([*SECRET_LINES[:3], *ORDINARY_LINES[:4]])
    err = "\n".join([*SECRET_LINES[3:], FAILED_AUTH, *ORDINARY_LINES[4:]])
    docker_env.service("libervia", "gateway", name="libervia-gateway",
                       env={"OUT": out, "ERR": err},
                       command='printf "%s\\n" "$OUT"; printf "%s\\n" "$ERR" >&2; '
                               "echo started; exec sleep 100000")
    docker_env.wait_logs("libervia-gateway", "started")
    evidence = tmp_path / "evidence"
    prefix = "[libervia-gateway] "
    rules = playbook("GatewayLogs", "docker.logs",
                     {"kind": "container", "name": "libervia-gateway"},
                     {"project": "libervia", "service": "gateway"}, prefix, evidence,
                     extract=False)
    steps = run_and_search(tmp_path, "GatewayLogs", rules,
                           {"guards": {"compose_projects": {"allow": ["libervia"]}}}, evidence)
    assert_masked(steps["all"]["result"]["lines"], prefix)
    assert steps["auth"]["result"]["matched"] == 1
    assert steps["seen"]["outcome"] == "succeeded", steps["seen"]


NS = "shop"


@pytest.fixture
def cart(kubeapi, kubeconfig):
    kubeapi.rbac = Policy(step_documents("kubernetes.logs", {"namespace": NS}, NS))
    kubeapi.add_deployment("cart", NS, replicas=1)
    (pod,) = [p["metadata"]["name"] for p in kubeapi.list("pods", NS)]
    kubeapi.set_logs(NS, pod, [*SECRET_LINES, FAILED_AUTH, *ORDINARY_LINES])
    return pod


def test_kubernetes_logs_never_record_a_secret_nor_extract_one(cart, tmp_path: Path):
    evidence = tmp_path / "evidence"
    prefix = f"[pod/{cart}/cart] "
    rules = playbook("CartLogs", "kubernetes.logs",
                     {"kind": "deployment", "namespace": NS, "name": "cart"},
                     {"namespace": NS, "selector": "app=cart"}, prefix, evidence, extract=True)
    steps = run_and_search(tmp_path, "CartLogs", rules,
                           {"guards": {"namespaces": {"allow": [NS]}}}, evidence)
    assert_masked(steps["all"]["result"]["lines"], prefix)
    # the grep found the secret's line by what was printed; extract read what was kept
    assert steps["ordinary"]["result"]["extracted"] == ["<redacted>"]
    assert steps["seen"]["outcome"] == "succeeded", steps["seen"]
