"""Proof that the Kubernetes API test server (tests/kubeapi) is faithful.

Every test drives the server with a real client -- /usr/bin/kubectl (v1.32) or the
official ``kubernetes`` python client -- and then asserts on the server's stored
state, so a regression in the server (or a client expectation it stops meeting)
fails here before it silently weakens the remediator's own tests.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from kubernetes import client, config, watch

from tests.kubeapi.tls import certificate

if TYPE_CHECKING:
    from tests.kubeapi import KubeAPIServer
    from tests.kubeapi.fixtures import Kubectl

NS = "neural-hive-pipeline"
REVISION = "deployment.kubernetes.io/revision"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"


def _owned(kube: KubeAPIServer, plural: str, namespace: str, owner: dict) -> list[dict]:
    uid = owner["metadata"]["uid"]
    return [o for o in kube.list(plural, namespace)
            if any(r["uid"] == uid for r in o["metadata"].get("ownerReferences", []))]


def _env(obj: dict, container: str) -> dict[str, str]:
    spec = next(c for c in obj["spec"]["template"]["spec"]["containers"]
                if c["name"] == container)
    return {e["name"]: e.get("value") for e in spec.get("env", [])}


# ----------------------------------------------------------------------------- kubectl


def test_rollout_restart_creates_new_replicaset_and_status_completes(
        kubeapi: KubeAPIServer, kubectl: Kubectl) -> None:
    kubeapi.add_deployment("code-forge", NS, replicas=2)
    old_pods = {p["metadata"]["name"] for p in kubeapi.list("pods", NS)}

    out = kubectl("rollout", "restart", "deployment/code-forge", "-n", NS, check=True)
    assert "deployment.apps/code-forge restarted" in out.stdout

    dep = kubeapi.get("deployments", NS, "code-forge")
    assert RESTARTED_AT in dep["spec"]["template"]["metadata"]["annotations"]
    assert dep["metadata"]["generation"] == 2
    assert dep["status"]["observedGeneration"] == 2
    assert dep["metadata"]["annotations"][REVISION] == "2"
    patch = kubeapi.requests_matching("PATCH", r"/deployments/code-forge$")
    assert [r.content_type for r in patch] == ["application/strategic-merge-patch+json"]

    rsets = _owned(kubeapi, "replicasets", NS, dep)
    assert sorted(rs["metadata"]["annotations"][REVISION] for rs in rsets) == ["1", "2"]
    new_rs = next(rs for rs in rsets if rs["metadata"]["annotations"][REVISION] == "2")
    assert new_rs["spec"]["replicas"] == 2
    assert RESTARTED_AT in new_rs["spec"]["template"]["metadata"]["annotations"]
    pods = _owned(kubeapi, "pods", NS, new_rs)
    assert len(pods) == 2 and not old_pods & {p["metadata"]["name"] for p in pods}
    assert len(kubeapi.list("pods", NS)) == 2  # old ReplicaSet scaled down to 0

    status = kubectl("rollout", "status", "deployment/code-forge", "-n", NS, "--timeout=10s")
    assert status.returncode == 0, status.stderr
    assert 'deployment "code-forge" successfully rolled out' in status.stdout


def test_rollout_status_watches_until_the_controller_catches_up(
        kubeapi: KubeAPIServer, kubectl: Kubectl) -> None:
    kubeapi.add_deployment("code-forge", NS, replicas=1)
    kubeapi.controller.delay = 0.6
    kubectl("rollout", "restart", "deployment/code-forge", "-n", NS, check=True)
    dep = kubeapi.get("deployments", NS, "code-forge")
    assert dep["status"]["observedGeneration"] < dep["metadata"]["generation"]

    started = time.monotonic()
    status = kubectl("rollout", "status", "deployment/code-forge", "-n", NS, "--timeout=10s")
    assert status.returncode == 0, status.stderr
    assert "successfully rolled out" in status.stdout
    assert kubeapi.requests_matching("GET", r"/deployments$")[-1].query.get("watch") == "true"
    assert time.monotonic() - started < 5
    assert kubeapi.get("deployments", NS, "code-forge")["status"]["observedGeneration"] == 2


def test_rollout_status_reports_progress_deadline_exceeded(
        kubeapi: KubeAPIServer, kubectl: Kubectl) -> None:
    kubeapi.add_deployment("code-forge", NS, replicas=2)
    kubeapi.hold_rollout("deployments", NS, "code-forge", fail=True)
    kubectl("rollout", "restart", "deployment/code-forge", "-n", NS, check=True)

    status = kubectl("rollout", "status", "deployment/code-forge", "-n", NS, "--timeout=5s")
    assert status.returncode != 0
    assert 'deployment "code-forge" exceeded its progress deadline' in status.stderr
    dep = kubeapi.get("deployments", NS, "code-forge")
    assert dep["status"]["updatedReplicas"] == 2 and dep["status"]["readyReplicas"] == 2
    assert dep["status"]["replicas"] == 4  # old pods still serving, new ones unready


@pytest.mark.parametrize(("kind", "plural"), [("deployment", "deployments"),
                                              ("statefulset", "statefulsets")])
def test_scale_uses_the_scale_subresource(kubeapi: KubeAPIServer, kubectl: Kubectl,
                                          kind: str, plural: str) -> None:
    add = kubeapi.add_deployment if kind == "deployment" else kubeapi.add_statefulset
    add("x", NS, replicas=2)

    out = kubectl("scale", f"{kind}/x", "--replicas=5", "-n", NS, check=True)
    assert f"{kind}.apps/x scaled" in out.stdout
    obj = kubeapi.get(plural, NS, "x")
    assert obj["spec"]["replicas"] == 5
    assert obj["status"]["readyReplicas"] == 5
    assert len(kubeapi.list("pods", NS, "app=x")) == 5
    (req,) = kubeapi.requests_matching("PATCH", f"/{plural}/x/scale$")
    assert req.content_type == "application/merge-patch+json"
    assert req.body == {"spec": {"replicas": 5}}
    if kind == "statefulset":
        names = sorted(p["metadata"]["name"] for p in kubeapi.list("pods", NS))
        assert names == [f"x-{i}" for i in range(5)]


def test_set_env_adds_removes_and_targets_one_container(
        kubeapi: KubeAPIServer, kubectl: Kubectl) -> None:
    kubeapi.add_deployment("deltacrown", NS, containers=["web", "worker"],
                           env={"LOG_LEVEL": "debug"})

    kubectl("set", "env", "deployment/deltacrown", "CERT_S3_READ_PRIMARY=false", "-n", NS,
            check=True)
    dep = kubeapi.get("deployments", NS, "deltacrown")
    for name in ("web", "worker"):
        assert _env(dep, name) == {"LOG_LEVEL": "debug", "CERT_S3_READ_PRIMARY": "false"}

    kubectl("set", "env", "deployment/deltacrown", "LOG_LEVEL-", "-n", NS, check=True)
    dep = kubeapi.get("deployments", NS, "deltacrown")
    for name in ("web", "worker"):
        assert _env(dep, name) == {"CERT_S3_READ_PRIMARY": "false"}
    removal = kubeapi.requests_matching("PATCH")[-1].body
    assert {"$patch": "delete", "name": "LOG_LEVEL"} in (
        removal["spec"]["template"]["spec"]["containers"][0]["env"])

    kubectl("set", "env", "deployment/deltacrown", "-c", "worker", "LOG_LEVEL=trace",
            "-n", NS, check=True)
    dep = kubeapi.get("deployments", NS, "deltacrown")
    assert _env(dep, "web") == {"CERT_S3_READ_PRIMARY": "false"}
    assert _env(dep, "worker") == {"CERT_S3_READ_PRIMARY": "false", "LOG_LEVEL": "trace"}
    assert [c["name"] for c in dep["spec"]["template"]["spec"]["containers"]] == ["web",
                                                                                 "worker"]
    assert dep["metadata"]["generation"] == 4


def test_get_pods_with_equality_and_set_based_selectors(
        kubeapi: KubeAPIServer, kubectl: Kubectl) -> None:
    kubeapi.add_deployment("code-forge", NS, replicas=2)
    kubeapi.add_deployment("deltacrown", NS, replicas=1)
    kubeapi.add_pod("debug-shell", NS, labels={"role": "debug"})

    def names(selector: str) -> list[str]:
        out = kubectl("get", "pods", "-n", NS, "-l", selector, "-o", "json", check=True)
        doc = json.loads(out.stdout)
        assert doc["kind"] == "List"
        return sorted(item["metadata"]["name"] for item in doc["items"])

    forge = sorted(p["metadata"]["name"] for p in kubeapi.list("pods", NS, "app=code-forge"))
    assert len(forge) == 2 and all(n.startswith("code-forge-") for n in forge)
    assert names("app=code-forge") == forge
    assert len(names("app in (code-forge,deltacrown)")) == 3
    assert names("!app") == ["debug-shell"]
    assert names("app,app notin (code-forge)")[0].startswith("deltacrown-")

    table = kubectl("get", "deployments", "-n", NS, check=True).stdout
    assert table.split("\n")[0].split() == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert "code-forge   2/2" in table


def test_logs_by_selector_tail_since_and_container(kubeapi: KubeAPIServer,
                                                   kubectl: Kubectl) -> None:
    kubeapi.add_deployment("code-forge", NS, replicas=2)
    pods = sorted(p["metadata"]["name"] for p in kubeapi.list("pods", NS))
    for pod in pods:
        kubeapi.set_logs(NS, pod, [f"{pod} line {i}" for i in range(20)])

    out = kubectl("logs", "-l", "app=code-forge", "--tail=5", "-n", NS, check=True).stdout
    lines = out.splitlines()
    assert sorted(lines) == sorted(f"{pod} line {i}" for pod in pods for i in range(15, 20))

    kubeapi.add_pod("multi", NS, containers=["app", "sidecar"])
    kubeapi.set_logs(NS, "multi", [(600, "old"), (5, "recent")], container="sidecar")
    kubeapi.set_logs(NS, "multi", ["app output"], container="app")
    out = kubectl("logs", "multi", "-c", "sidecar", "--since=60s", "-n", NS, check=True)
    assert out.stdout == "recent\n"
    (req,) = kubeapi.requests_matching("GET", "/pods/multi/log$")
    assert req.query == {"container": "sidecar", "sinceSeconds": "60"}


def test_delete_pod_is_replaced_by_its_replicaset(kubeapi: KubeAPIServer,
                                                  kubectl: Kubectl) -> None:
    kubeapi.add_deployment("code-forge", NS, replicas=2)
    victim = kubeapi.list("pods", NS)[0]["metadata"]["name"]

    out = kubectl("delete", "pod", victim, "-n", NS, check=True)
    assert f'pod "{victim}" deleted' in out.stdout
    assert kubeapi.get("pods", NS, victim) is None
    remaining = kubeapi.list("pods", NS, "app=code-forge")
    assert len(remaining) == 2 and victim not in {p["metadata"]["name"] for p in remaining}
    assert kubeapi.requests_matching("DELETE")[0].body["propagationPolicy"] == "Background"


def test_rollout_undo_restores_previous_template(kubeapi: KubeAPIServer,
                                                 kubectl: Kubectl) -> None:
    kubeapi.add_deployment("deltacrown", NS, replicas=1, env={"LOG_LEVEL": "info"})
    original = kubeapi.get("deployments", NS, "deltacrown")["spec"]["template"]
    kubectl("set", "env", "deployment/deltacrown", "LOG_LEVEL=debug", "-n", NS, check=True)

    out = kubectl("rollout", "undo", "deployment/deltacrown", "-n", NS, check=True)
    assert "deployment.apps/deltacrown rolled back" in out.stdout
    dep = kubeapi.get("deployments", NS, "deltacrown")
    assert dep["spec"]["template"] == original
    assert dep["metadata"]["annotations"][REVISION] == "3"
    (undo,) = kubeapi.requests_matching("PATCH")[-1:]
    assert undo.content_type == "application/json-patch+json"
    rsets = _owned(kubeapi, "replicasets", NS, dep)
    # the revision-1 ReplicaSet is reused (now revision 3), not duplicated
    assert sorted(rs["metadata"]["annotations"][REVISION] for rs in rsets) == ["2", "3"]
    assert kubectl("rollout", "status", "deployment/deltacrown", "-n", NS).returncode == 0


def test_not_found_and_forbidden_errors(kubeapi: KubeAPIServer, kubectl: Kubectl) -> None:
    # kubectl 1.32 re-checks the namespace after a 404 and reports that instead
    no_ns = kubectl("get", "deployment", "missing", "-n", NS)
    assert no_ns.returncode != 0
    assert f'Error from server (NotFound): namespaces "{NS}" not found' in no_ns.stderr
    kubeapi.add_namespace(NS)
    missing = kubectl("get", "deployment", "missing", "-n", NS)
    assert missing.returncode != 0
    assert 'Error from server (NotFound): deployments.apps "missing" not found' in (
        missing.stderr)

    kubeapi.add_deployment("code-forge", NS)
    kubeapi.forbid("get", "pods/log")
    logs = kubectl("logs", "deployment/code-forge", "-n", NS)
    assert logs.returncode != 0
    assert "Error from server (Forbidden)" in logs.stderr
    assert 'cannot get resource "pods/log" in API group ""' in logs.stderr

    rule = kubeapi.forbid("patch", "deployments", NS)
    denied = kubectl("rollout", "restart", "deployment/code-forge", "-n", NS)
    assert denied.returncode != 0
    assert 'deployments.apps "code-forge" is forbidden' in denied.stderr
    assert 'cannot patch resource "deployments" in API group "apps"' in denied.stderr
    assert rule.hits == 1
    assert kubeapi.get("deployments", NS, "code-forge")["metadata"]["generation"] == 1


def test_a_token_is_required_and_the_service_account_has_only_its_rbac(
        kubeapi: KubeAPIServer, kubectl: Kubectl, kubeconfig: Path) -> None:
    """kubectl as the remediator's service account (kubeconfig), against the RBAC in
    deploy/kubernetes/rbac/: what a Role grants works, anything else is 403, no token 401."""
    kubeapi.add_deployment("code-forge", NS)
    kubeapi.add_deployment("other", NS)

    def as_remediator(*args: str, token: str | None = None) -> subprocess.CompletedProcess:
        auth = ["--token", token] if token is not None else []
        return kubectl("--kubeconfig", str(kubeconfig), *auth, *args)

    # No credentials at all (kubectl would prompt for a username before asking the server).
    tls = ssl.create_default_context(cafile=str(certificate()[0]))
    with pytest.raises(urllib.error.HTTPError) as anonymous:
        urllib.request.urlopen(f"{kubeapi.url}/apis/apps/v1/namespaces/{NS}/deployments",
                               context=tls, timeout=10)
    assert anonymous.value.code == 401
    wrong = as_remediator("get", "deployments", "-n", NS, token="not-the-token")
    assert wrong.returncode != 0 and "You must be logged in to the server" in wrong.stderr

    pods = as_remediator("get", "pods", "-n", NS, "-o", "name")
    assert pods.returncode == 0 and len(pods.stdout.split()) == 2, pods.stderr
    named = as_remediator("get", "deployment", "code-forge", "-n", NS, "-o", "name")
    assert named.stdout.strip() == "deployment.apps/code-forge", named.stderr
    listed = as_remediator("get", "deployments", "-n", NS)  # the Role names its objects
    assert listed.returncode != 0 and 'cannot list resource "deployments"' in listed.stderr
    restarted = as_remediator("rollout", "restart", "deployment/code-forge", "-n", NS)
    assert restarted.returncode == 0, restarted.stderr
    # The Role names code-forge (resourceNames): another deployment is not patchable...
    other = as_remediator("rollout", "restart", "deployment/other", "-n", NS)
    assert other.returncode != 0 and 'deployments.apps "other" is forbidden' in other.stderr
    # ...nor is anything in a namespace the playbooks never act in.
    kubeapi.add_deployment("code-forge", "default")
    elsewhere = as_remediator("get", "deployment", "code-forge", "-n", "default")
    assert elsewhere.returncode != 0 and "(Forbidden)" in elsewhere.stderr
    assert kubeapi.get("deployments", NS, "other")["metadata"]["generation"] == 1


def test_injected_server_error_fails_once_then_recovers(kubeapi: KubeAPIServer,
                                                        kubectl: Kubectl) -> None:
    kubeapi.add_deployment("code-forge", NS, replicas=1)
    fault = kubeapi.inject("PATCH", r"/deployments/code-forge/scale$", status=500, times=1)

    failed = kubectl("scale", "deployment/code-forge", "--replicas=3", "-n", NS)
    assert failed.returncode != 0 and "InternalError" in failed.stderr
    assert kubeapi.get("deployments", NS, "code-forge")["spec"]["replicas"] == 1
    kubectl("scale", "deployment/code-forge", "--replicas=3", "-n", NS, check=True)
    assert kubeapi.get("deployments", NS, "code-forge")["spec"]["replicas"] == 3
    assert fault.hits == 1
    assert len(kubeapi.requests_matching("PATCH", "/scale$")) == 2


# ----------------------------------------------------------------------------- python client


def test_python_client_read_patch_scale_and_logs(kubeapi: KubeAPIServer,
                                                 tmp_path: Path) -> None:
    kubeapi.add_deployment("code-forge", NS, replicas=2, env={"A": "1"})
    config.load_kube_config(config_file=str(kubeapi.write_kubeconfig(tmp_path / "admin",
                                                                      admin=True)))
    apps, core = client.AppsV1Api(), client.CoreV1Api()

    dep = apps.read_namespaced_deployment("code-forge", NS)
    assert dep.status.ready_replicas == 2 and dep.metadata.generation == 1
    patched = apps.patch_namespaced_deployment("code-forge", NS, {"spec": {"template": {
        "spec": {"containers": [{"name": "code-forge", "env": [{"name": "B", "value": "2"}]}]}}}})
    assert [(e.name, e.value) for e in patched.spec.template.spec.containers[0].env] == [
        ("A", "1"), ("B", "2")]
    assert kubeapi.requests[-1].content_type == "application/strategic-merge-patch+json"
    assert _env(kubeapi.get("deployments", NS, "code-forge"), "code-forge") == {"A": "1",
                                                                                "B": "2"}

    scale = apps.patch_namespaced_deployment_scale("code-forge", NS, {"spec": {"replicas": 3}})
    assert scale.spec.replicas == 3 and scale.status.selector == "app=code-forge"
    pods = core.list_namespaced_pod(NS, label_selector="app=code-forge").items
    assert len(pods) == 3

    kubeapi.set_logs(NS, pods[0].metadata.name, [f"l{i}" for i in range(10)])
    # kubernetes 36.x returns str(bytes) from read_namespaced_pod_log (upstream issue
    # kubernetes-client/python#2596); reading the raw response avoids it.
    resp = core.read_namespaced_pod_log(pods[0].metadata.name, NS, tail_lines=3,
                                        _preload_content=False)
    assert resp.data.decode() == "l7\nl8\nl9\n"

    with pytest.raises(client.ApiException) as err:
        apps.read_namespaced_deployment("missing", NS)
    body = json.loads(err.value.body)
    assert (err.value.status, body["reason"]) == (404, "NotFound")
    assert body["details"] == {"name": "missing", "group": "apps", "kind": "deployments"}


def test_python_client_conflict_exists_invalid_and_retain_keys(kubeapi: KubeAPIServer,
                                                        kube_api_client: object) -> None:
    kubeapi.add_deployment("code-forge", NS, replicas=1)
    apps = client.AppsV1Api(kube_api_client)
    stale = apps.read_namespaced_deployment("code-forge", NS)
    apps.patch_namespaced_deployment_scale("code-forge", NS, {"spec": {"replicas": 2}})

    stale.spec.replicas = 4
    with pytest.raises(client.ApiException) as err:
        apps.replace_namespaced_deployment("code-forge", NS, stale)
    assert err.value.status == 409 and json.loads(err.value.body)["reason"] == "Conflict"

    duplicate = kubeapi.get("deployments", NS, "code-forge")
    with pytest.raises(client.ApiException) as err:
        apps.create_namespaced_deployment(NS, duplicate)  # still carries resourceVersion
    assert err.value.status == 500 and "should not be set" in json.loads(err.value.body)[
        "message"]
    del duplicate["metadata"]["resourceVersion"]
    with pytest.raises(client.ApiException) as err:
        apps.create_namespaced_deployment(NS, duplicate)
    assert err.value.status == 409 and json.loads(err.value.body)["reason"] == "AlreadyExists"

    with pytest.raises(client.ApiException) as err:
        apps.patch_namespaced_deployment("code-forge", NS, {"spec": {"replicas": -1}})
    assert err.value.status == 422 and json.loads(err.value.body)["reason"] == "Invalid"
    assert kubeapi.get("deployments", NS, "code-forge")["spec"]["replicas"] == 2

    # What `kubectl apply` sends when switching strategy to Recreate: $retainKeys drops
    # the rollingUpdate block, which a plain merge would keep (and the apiserver reject).
    apps.patch_namespaced_deployment("code-forge", NS, {"spec": {"strategy": {
        "$retainKeys": ["type"], "type": "Recreate"}}})
    assert kubeapi.get("deployments", NS, "code-forge")["spec"]["strategy"] == {
        "type": "Recreate"}


def test_python_client_watch_and_timeout_fault(kubeapi: KubeAPIServer,
                                               kube_api_client: object) -> None:
    kubeapi.add_deployment("code-forge", NS, replicas=1)
    apps = client.AppsV1Api(kube_api_client)
    rv = apps.list_namespaced_deployment(NS).metadata.resource_version

    threading.Timer(0.2, lambda: kubeapi.patch("deployments", NS, "code-forge",
                                               {"spec": {"replicas": 2}})).start()
    seen = []
    for event in watch.Watch().stream(apps.list_namespaced_deployment, NS,
                                      resource_version=rv, timeout_seconds=3):
        seen.append((event["type"], event["object"].spec.replicas))
        if event["object"].status.ready_replicas == 2:
            break
    assert seen[0] == ("MODIFIED", 2) and seen[-1] == ("MODIFIED", 2)

    # One slow response: urllib3 (inside the client) silently retries the read timeout.
    kubeapi.clear_requests()
    slow = kubeapi.inject("GET", r"/deployments/code-forge$", status=None, delay=1.0)
    dep = apps.read_namespaced_deployment("code-forge", NS, _request_timeout=0.2)
    assert dep.spec.replicas == 2 and slow.hits == 1
    assert len(kubeapi.requests_matching("GET", "/deployments/code-forge$")) == 2
    # Always slow: the timeout surfaces once urllib3's retries are exhausted.
    kubeapi.inject("GET", r"/deployments/code-forge$", status=None, delay=1.0, times=None)
    with pytest.raises(Exception, match=r"(?i)read timed out"):
        apps.read_namespaced_deployment("code-forge", NS, _request_timeout=0.1)


def test_unknown_fields_wrong_types_and_an_immutable_selector_are_refused(
        kubeapi: KubeAPIServer, kubectl: Kubectl, tmp_path: Path) -> None:
    """What a real apiserver refuses, refused the same way, proven with kubectl."""
    kubeapi.add_deployment("code-forge", NS)

    def patch(doc: dict) -> subprocess.CompletedProcess:
        return kubectl("patch", "deployment/code-forge", "-n", NS, "--type", "merge",
                       "-p", json.dumps(doc))

    # kubectl patch sends no fieldValidation: the default, Warn, drops the field and says so
    warned = patch({"spec": {"replicaz": 3}})
    assert warned.returncode == 0
    assert 'Warning: unknown field "spec.replicaz"' in warned.stderr
    assert "replicaz" not in kubeapi.get("deployments", NS, "code-forge")["spec"]

    number = patch({"metadata": {"annotations": {"owner": 7}}})
    assert number.returncode != 0
    assert "cannot unmarshal number into Go struct field" in number.stderr
    assert "of type string" in number.stderr
    assert "owner" not in (kubeapi.get("deployments", NS, "code-forge")["metadata"]
                           .get("annotations") or {})

    manifest = kubeapi.get("deployments", NS, "code-forge")
    for key in ("uid", "resourceVersion", "creationTimestamp", "generation"):
        manifest["metadata"].pop(key)
    manifest["metadata"]["name"] = "typo"
    manifest.pop("status")
    manifest["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    (tmp_path / "typo.json").write_text(json.dumps(manifest))
    created = kubectl("create", "-f", str(tmp_path / "typo.json"))  # --validate=strict
    assert kubeapi.requests[-1].query.get("fieldValidation") == "Strict"
    assert created.returncode != 0 and (
        'Deployment in version "v1" cannot be handled as a Deployment: strict decoding error: '
        'unknown field "spec.template.spec.containers[0].imagePullPolicyy"' in created.stderr)
    assert kubeapi.get("deployments", NS, "typo") is None

    moved = patch({"spec": {"selector": {"matchLabels": {"app": "other"}},
                            "template": {"metadata": {"labels": {"app": "other"}}}}})
    assert moved.returncode != 0
    assert 'The Deployment "code-forge" is invalid: spec.selector: Invalid value' in moved.stderr
    assert "field is immutable" in moved.stderr
    assert kubeapi.get("deployments", NS, "code-forge")["spec"]["selector"] == {
        "matchLabels": {"app": "code-forge"}}
