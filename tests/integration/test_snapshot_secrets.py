"""What kubernetes.get snapshots and http.request answers is filtered like exec output before
anything records it.

A real `serve` snapshots a deployment of the Kubernetes API test server whose pod template
holds literal credentials (env values, a DATABASE_URL, `--password x` in args, a token in a
shell command, kubectl's last-applied annotation repeating it all), its pods and a ConfigMap
with a password, and asks a templated `kubernetes.get` for secrets; and it probes a real local
HTTP server answering an admin API's JSON (`api_key`, `token`, `password`, a token cut by the
body excerpt's end) and a text body with `password=`. No secret may reach the log file, the
API, the note or the store; what the shipped playbooks' checks read (env entries such as
deltacrown's CERT_S3_READ_PRIMARY, replicas, `expect_json: {status: ok}`) stays as it was.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.kubeapi.rbac import Policy, step_documents
from tests.support.payloads import alert, notification
from tests.support.recorded import everything, final_decision
from tests.support.worker import WorkerProcess

R = "<redacted>"


def run_and_search(tmp_path: Path, alertname: str, steps: list[dict], config: dict,
                   secrets: tuple[str, ...], labels: dict | None = None) -> dict:
    """Run `steps`, a log of every result and a failing check (the run escalates: the note
    shows each step's result); no secret anywhere serve recorded."""
    steps = [*steps, {"name": "shown", "action": "log",
                      "params": {"message": " ".join("{{ steps." + s["name"] + ".result }}"
                                                     for s in steps)}},
             {"name": "escalate", "action": "check", "params": {"that": "{{ false }}"}}]
    rules = yaml.safe_dump({"playbooks": [{"name": f"{alertname.lower()}-evidence",
                                           "match": {"alertname": alertname},
                                           "guards": {"cooldown": "1m"}, "steps": steps,
                                           "escalation": {"severity": "warning"}}]})
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    (rules_dir / "rules.yaml").write_text(rules)
    notes = tmp_path / "notes"
    w = WorkerProcess(tmp_path, [str(rules_dir)], mode="live", config=config,
                      extra_env={"REMEDIATOR_ESCALATION_DIR": str(notes)}).start()
    try:
        sent = alert(alertname, fingerprint="x1", **(labels or {}))
        assert w.post_alerts(notification(sent))[0] == 202
        decision = final_decision(w, alertname)
        outputs = everything(w, decision, notes, tmp_path / "remediator.db")
    finally:
        assert w.stop() == 0
    assert decision["outcome"] == "failed" and any(n.startswith("note ") for n in outputs)
    leaks = [(s, where) for s in secrets for where, text in outputs.items() if s in text]
    assert leaks == []
    return {s["name"]: s for s in decision["steps"]}


# --- kubernetes.get ------------------------------------------------------------------------

NS = "shop"
ENV = {"DB_PASS": "hunter2hunter2", "DATABASE_URL": "postgresql://app:pg-pw-7171@db:5432/app",
       "SMTP_URL": "smtp://mailer:smtp-pw-4141@mail:587", "LOG_LEVEL": "DEBUG",
       "CERT_S3_READ_PRIMARY": "false"}
CONTAINER = {"name": "cart", "image": "registry.example.com/cart:1.0", "env": [
    {"name": k, "value": v} for k, v in ENV.items()],
    "args": ["--port=8080", "--password", "arg-pw-5151", "--api-key=arg-key-6161"],
    "command": ["sh", "-c", "exec cart --token tok-cmd-8181 \"$@\"", "--"]}
CONFIG = {"LOG_LEVEL": "info", "DB_PASSWORD": "cm-pw-2121",
          "application.properties": "server.port=8080\nspring.datasource.password=cm-pp-3131\n"}
KUBE_SECRETS = ("hunter2hunter2", "pg-pw-7171", "smtp-pw-4141", "arg-pw-5151", "arg-key-6161",
                "tok-cmd-8181", "ann-tok-9191", "cm-pw-2121", "cm-pp-3131")
# what the playbooks' checks compare, as deltacrown's on_resolved steps do
ENV_SHOWN = ("{'name': 'LOG_LEVEL', 'value': 'DEBUG'} in ENV"
             " and {'name': 'CERT_S3_READ_PRIMARY', 'value': 'false'} in ENV"
             " and {'name': 'DB_PASS', 'value': '<redacted>'} in ENV"
             " and {'name': 'SMTP_URL', 'value': 'smtp://<redacted>@mail:587'} in ENV")


@pytest.fixture
def cart(kubeapi, kubeconfig):
    manifest = {"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "cart", "namespace": NS},
                "spec": {"replicas": 1, "template": {"spec": {"containers": [CONTAINER]}}}}
    kubeapi.add_deployment("cart", NS, replicas=1, containers=[CONTAINER], annotations={
        "kubectl.kubernetes.io/last-applied-configuration": json.dumps(manifest),
        "example.com/admin-token": "ann-tok-9191", "example.com/owner": "shop-team"})
    kubeapi.add({"apiVersion": "v1", "kind": "ConfigMap",
                 "metadata": {"name": "cart-config", "namespace": NS}, "data": CONFIG})
    documents = [doc for resource in ("deployments", "pods", "configmaps")
                 for doc in step_documents("kubernetes.get",
                                           {"resource": resource, "namespace": NS}, NS)]
    kubeapi.rbac = Policy(documents)
    return kubeapi


def test_kubernetes_get_never_records_a_secret_of_a_pod_template_or_a_configmap(
        cart, tmp_path: Path):
    containers = "steps.{}.result.{}.spec.template.spec.containers[0]"
    deployment = containers.format("deployment", "object")
    seen = " and ".join([
        ENV_SHOWN.replace("ENV", deployment + ".env"),
        ENV_SHOWN.replace("ENV", "steps.pods.result['items'][0].spec.containers[0].env"),
        f"steps.deployment.result.object.spec.replicas == 1 and '--port=8080' in {deployment}"
        ".args", "steps.config.result.object.data.LOG_LEVEL == 'info'",
        "steps.deployment.result.object.metadata.annotations['example.com/owner'] == "
        "'shop-team'"])

    def get(step: str, resource: str, **extra) -> dict:
        return {"name": step, "action": "kubernetes.get",
                "params": {"resource": resource, "namespace": NS, **extra}}

    steps = run_and_search(tmp_path, "CartSnapshot", [
        get("deployment", "deployments", name="cart"), get("pods", "pods", selector="app=cart"),
        get("config", "configmaps", name="cart-config"),
        # a label naming what to read: refused at run time, never asked of the apiserver
        {**get("sneaky", "{{ labels.kind }}", name="cart-db"), "on_failure": "continue"},
        {"name": "seen", "action": "check", "on_failure": "continue",
         "params": {"that": "{{ " + seen + " }}"}}],
        {"guards": {"namespaces": {"allow": [NS]}}}, KUBE_SECRETS, labels={"kind": "secrets"})
    assert [s["outcome"] for s in steps.values()] == [
        "succeeded", "succeeded", "succeeded", "failed", "succeeded", "succeeded", "failed"]
    assert "kubernetes.get never reads secrets" in steps["sneaky"]["detail"]
    assert cart.requests_matching(path_regex="secrets") == []
    assert steps["seen"]["outcome"] == "succeeded", steps["seen"]

    obj = steps["deployment"]["result"]["object"]
    shown = obj["spec"]["template"]["spec"]["containers"][0]
    assert shown["args"] == ["--port=8080", "--password", R, f"--api-key={R}"]
    assert shown["command"] == ["sh", "-c", f'exec cart --token {R} "$@"', "--"]
    assert {e["name"]: e["value"] for e in shown["env"]} == {
        **ENV, "DB_PASS": R, "DATABASE_URL": R, "SMTP_URL": f"smtp://{R}@mail:587"}
    annotations = obj["metadata"]["annotations"]
    assert annotations["example.com/admin-token"] == R
    applied = json.loads(annotations["kubectl.kubernetes.io/last-applied-configuration"])
    (container,) = applied["spec"]["template"]["spec"]["containers"]
    assert container == {k: shown[k] for k in CONTAINER}  # the same rules
    assert steps["config"]["result"]["object"]["data"] == {
        "LOG_LEVEL": "info", "DB_PASSWORD": R,
        "application.properties": f"server.port=8080\nspring.datasource.password={R}\n"}

