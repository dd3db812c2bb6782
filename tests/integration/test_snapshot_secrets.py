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
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.kubeapi.rbac import Policy, step_documents
from tests.support.procs import serve_http
from tests.support.recorded import run_live

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
    decision, outputs = run_live(tmp_path, rules, alertname, config, labels)
    assert decision["outcome"] == "failed" and any(n.startswith("note ") for n in outputs)
    leaks = [(s, where) for s in secrets for where, text in outputs.items() if s in text]
    assert leaks == []
    return {s["name"]: s for s in decision["steps"]}


# --- kubernetes.get ------------------------------------------------------------------------

NS = "shop"
ENV = {"DB_PASS": "hunter2hunter2", "DATABASE_URL": "postgresql://app:pg-pw-7171@db:5432/app",
       "SMTP_URL": "smtp://mailer:smtp-pw-4141@mail:587", "LOG_LEVEL": "DEBUG",
       "CERT_S3_READ_PRIMARY": "false", "AUTH_MODE": "oidc", "PASSWORD_MIN_LENGTH": "12"}
# Helm's checksum of the config the pods run with: hex is no secret's shape
CHECKSUM = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
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
        "example.com/admin-token": "ann-tok-9191", "example.com/owner": "shop-team",
        "checksum/config": CHECKSUM})
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
    assert annotations["checksum/config"] == CHECKSUM
    applied = json.loads(annotations["kubectl.kubernetes.io/last-applied-configuration"])
    (container,) = applied["spec"]["template"]["spec"]["containers"]
    assert container == {k: shown[k] for k in CONTAINER}  # the same rules
    assert steps["config"]["result"]["object"]["data"] == {
        "LOG_LEVEL": "info", "DB_PASSWORD": R,
        "application.properties": f"server.port=8080\nspring.datasource.password={R}\n"}


# --- http.request --------------------------------------------------------------------------

ADMIN = {"status": "ok", "version": "2.4.1", "token_count": 2,
         "api_key": "json-key-1212", "session": {"token": "json-tok-1313", "user": "ops"},
         "users": [{"name": "alice", "password": "json-pw-1414"}]}
TEXT = ("status=ok\nuser=ops\npassword=text-pw-1515\nAuthorization: Bearer text-tok-1616\n"
        "Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MEFCQ0RFRg\n")  # a key issued, alone on its line
CUT = "cut-tok-1717" + "z" * 64  # the body excerpt (2 KiB) ends inside this token
LONG = json.dumps({"status": "ok", "padding": "p" * 1990, "token": CUT})
assert LONG.index(CUT) + len("cut-tok-1717") < 2048 < LONG.index(CUT) + len(CUT)
HTTP_SECRETS = ("json-key-1212", "json-tok-1313", "json-pw-1414", "text-pw-1515",
                "text-tok-1616", "cut-tok-1717", "Zm9vYmFyYmF6cXV4")


@pytest.fixture
def admin_api():
    bodies = {"/admin": ("application/json", json.dumps(ADMIN)), "/debug": ("text/plain", TEXT),
              "/long": ("application/json", LONG)}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            kind, body = bodies[self.path]
            raw = body.encode()
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, *args: Any) -> None:
            pass

    server, port = serve_http(Handler)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()


def test_http_request_never_records_a_secret_the_answer_holds(admin_api: str, tmp_path: Path):
    def probe(step: str, path: str, **extra) -> dict:
        return {"name": step, "action": "http.request",
                "params": {"url": admin_api + path, "timeout": "5s", **extra}}

    seen = ("steps.admin.result.json.status == 'ok' and steps.admin.result.json.token_count == 2"
            " and steps.admin.result.json.users[0].name == 'alice'"
            " and steps.admin.result.json.session.user == 'ops'"
            " and 'status=ok' in steps.debug.result.body.splitlines()"
            " and steps.long.result.json.status == 'ok'")
    steps = run_and_search(tmp_path, "AdminProbe", [
        probe("admin", "/admin", expect_json={"status": "ok", "version": "2.4.1"}),
        probe("debug", "/debug"), probe("long", "/long", expect_json={"status": "ok"}),
        # the check compares what the server said; its message shows what is recorded
        {**probe("wrong", "/admin", expect_json={"session.token": "guess"}),
         "on_failure": "continue"},
        {"name": "seen", "action": "check", "on_failure": "continue",
         "params": {"that": "{{ " + seen + " }}"}}], {"guards": {}}, HTTP_SECRETS)
    assert [s["outcome"] for s in steps.values()] == [
        "succeeded", "succeeded", "succeeded", "failed", "succeeded", "succeeded", "failed"]
    assert steps["seen"]["outcome"] == "succeeded", steps["seen"]
    assert "JSON session.token is '<redacted>', expected 'guess'" in steps["wrong"]["detail"]
    admin = steps["admin"]["result"]
    assert admin["json"] == {**ADMIN, "api_key": R, "session": {"token": R, "user": "ops"},
                             "users": [{"name": "alice", "password": R}]}
    assert json.loads(admin["body"]) == admin["json"]
    assert steps["debug"]["result"]["body"] == (
        f"status=ok\nuser=ops\npassword={R}\nAuthorization: Bearer {R}\n{R}\n")
    assert steps["long"]["result"]["body"].endswith(f'"token": "{R}"')
