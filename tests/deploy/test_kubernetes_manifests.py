"""The Kustomize base in deploy/kubernetes: schema-valid, locked down, and granting exactly
the Kubernetes permissions the shipped playbooks need — no more, no less."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

import kubernetes_validate
import pytest

from remediator import templating
from remediator.actions.base import Action, Param, rbac
from remediator.actions.registry import ACTIONS
from remediator.config import load_config
from remediator.playbooks.validate import load_rules, rule_files
from remediator.store.sqlite import path_from_url
from tests.deploy.conftest import KUSTOMIZE_DIR, ROOT, Objects, load_generator, render_kustomize, run
from tests.support.payloads import alert, notification

K8S_VERSION = "1.32"  # schemas bundled with kubernetes-validate; the version docs/deploy.md names
CLUSTER_SCOPED = {"nodes", "namespaces", "persistentvolumes", "storageclasses",
                  "customresourcedefinitions", "clusterroles", "clusterrolebindings"}
SERVICE_ACCOUNT = {"kind": "ServiceAccount", "name": "remediator", "namespace": "remediator"}

Grant = tuple[str, str, str, str]  # (namespace or "" for cluster-wide, apiGroup, resource, verb)


# --- helpers ---------------------------------------------------------------------------------

def pod_spec(objects: Objects) -> dict[str, Any]:
    return objects.one("Deployment")["spec"]["template"]["spec"]


def container(objects: Objects) -> dict[str, Any]:
    containers = pod_spec(objects)["containers"]
    assert len(containers) == 1
    return containers[0]


def mount_of(objects: Objects, volume: str) -> str:
    mounts = [m for m in container(objects)["volumeMounts"] if m["name"] == volume]
    assert len(mounts) == 1, f"volume {volume} is not mounted exactly once"
    return mounts[0]["mountPath"]


def volume(objects: Objects, name: str) -> dict[str, Any]:
    return next(v for v in pod_spec(objects)["volumes"] if v["name"] == name)


def arg(objects: Objects, flag: str) -> str:
    values = [a.split("=", 1)[1] for a in container(objects)["args"] if a.startswith(flag + "=")]
    assert len(values) == 1, f"expected one {flag}=... in the container args"
    return values[0]


def deployed_config(objects: Objects, tmp_path: Path, token: str = "t0ken-0123456789abcdef"):
    """The config the pod runs with: the ConfigMap file, plus the Deployment's environment."""
    config_file = tmp_path / "config.yaml"
    config_file.write_text(objects.configmap("remediator-config")["data"]["config.yaml"])
    token_file = tmp_path / "webhook-token"
    token_file.write_text(token + "\n")
    env = {e["name"]: e["value"] for e in container(objects).get("env", []) if "value" in e}
    env["REMEDIATOR_WEBHOOK_TOKEN_FILE"] = str(token_file)  # the same variable, a local path
    return load_config(str(config_file), env=env)


def pod_matches(selector: dict[str, str], objects: Objects) -> bool:
    labels = objects.one("Deployment")["spec"]["template"]["metadata"]["labels"]
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def needed_grants(rule_paths: Iterable[str], allow: list[str]) -> set[Grant]:
    """What the playbooks' steps need, from each action's declared permissions.

    A step acts in params.namespace, else its playbook's target.namespace (the scope guard's
    rule); a templated namespace may be any namespace the config allows.
    """
    needed: set[Grant] = set()
    for pb in load_rules(rule_paths).playbooks:
        for step in (*pb.steps, *pb.on_resolved):
            namespace = step.params.get("namespace") or (pb.target.namespace if pb.target else "")
            fixed = isinstance(namespace, str) and namespace and not templating.is_template(namespace)
            for perm in ACTIONS[step.action].permissions_for(step.params):
                if perm.kind != "rbac":
                    continue
                if perm.resource.split("/")[0] in CLUSTER_SCOPED:
                    spaces = [""]
                else:
                    spaces = [namespace] if fixed else list(allow)
                    assert spaces, f"{pb.name}/{step.name}: no namespace to grant {perm} in"
                needed.update((ns, perm.group, perm.resource, perm.verb) for ns in spaces)
    return needed


def granted(docs: list[dict[str, Any]]) -> set[Grant]:
    """What the Roles/ClusterRoles bound to remediator's ServiceAccount allow."""
    roles = {(d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"]): d
             for d in docs if d["kind"] in ("Role", "ClusterRole")}
    out: set[Grant] = set()
    for b in docs:
        if b["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        if SERVICE_ACCOUNT not in b.get("subjects", []):
            continue
        ref = b["roleRef"]
        binding_ns = b["metadata"].get("namespace", "")
        role_ns = "" if ref["kind"] == "ClusterRole" else binding_ns
        role = roles.get((ref["kind"], role_ns, ref["name"]))
        assert role is not None, f"{b['kind']} {b['metadata']['name']} refers to a missing {ref}"
        grant_ns = binding_ns if b["kind"] == "RoleBinding" else ""
        for rule in role.get("rules", []):
            for group in rule.get("apiGroups", []):
                for resource in rule.get("resources", []):
                    for verb in rule.get("verbs", []):
                        out.add((grant_ns, group, resource, verb))
    return out


def describe(grants: set[Grant]) -> str:
    return "\n".join(f"  {ns or '<cluster>'}: {g or 'core'}/{r}:{v}" for ns, g, r, v in sorted(grants))


# --- schema and shape --------------------------------------------------------------------------

def test_every_object_validates_against_the_kubernetes_schema(rendered):
    for doc in rendered:
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(map(str, exc.path))
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {path}: {exc.message}")


def test_the_base_has_every_piece(objects):
    for kind in ("Namespace", "ServiceAccount", "Deployment", "Service", "PersistentVolumeClaim",
                 "PodDisruptionBudget", "NetworkPolicy"):
        objects.one(kind)
    objects.configmap("remediator-config")
    objects.configmap("remediator-rules")
    assert not objects.all("Secret"), "the webhook token Secret is created by the operator, not shipped"
    for doc in objects.docs:
        if doc["kind"] not in ("Namespace", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"):
            assert doc["metadata"].get("namespace") == "remediator", doc["metadata"]["name"]


# --- the pod's security and lifecycle ----------------------------------------------------------

def test_pod_runs_non_root_read_only_without_privileges(objects):
    spec = pod_spec(objects)
    pod = spec["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert pod["runAsUser"] != 0 and pod["runAsGroup"] != 0
    assert pod["seccompProfile"]["type"] == "RuntimeDefault"
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        assert not spec.get(key), key
    assert not [v for v in spec["volumes"] if "hostPath" in v]
    for c in spec["containers"] + spec.get("initContainers", []):
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True, c["name"]
        assert sc["allowPrivilegeEscalation"] is False, c["name"]
        assert sc.get("privileged", False) is False, c["name"]
        assert sc["capabilities"]["drop"] == ["ALL"], c["name"]
        assert not sc["capabilities"].get("add"), c["name"]
        assert sc.get("runAsUser", pod["runAsUser"]) != 0, c["name"]


def test_namespace_enforces_the_restricted_pod_security_standard(objects):
    labels = objects.one("Namespace")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_every_container_has_requests_and_limits(objects):
    for c in pod_spec(objects)["containers"]:
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(c["resources"][kind]), f"{c['name']} {kind}"


def test_writable_paths_are_volumes(objects, tmp_path):
    """Read-only root: /tmp is an emptyDir, the store and notes live on the claim."""
    assert "emptyDir" in volume(objects, "tmp")
    assert mount_of(objects, "tmp") == "/tmp"
    cfg = deployed_config(objects, tmp_path)
    data = mount_of(objects, "data")
    db = path_from_url(cfg.store)  # sqlite:////abs → /abs
    assert db.startswith(data + "/"), f"{cfg.store} is not on the volume mounted at {data}"
    assert cfg.escalation_dir.startswith(data + "/"), cfg.escalation_dir


def test_probes_use_health_and_readiness_endpoints(objects):
    c = container(objects)
    port_names = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert c["livenessProbe"]["httpGet"]["path"] == "/-/healthy"
    assert c["readinessProbe"]["httpGet"]["path"] == "/-/ready"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert c[probe]["httpGet"]["port"] in port_names, probe


def test_container_listens_where_the_probes_and_service_look(objects, tmp_path):
    cfg = deployed_config(objects, tmp_path)
    host, _, port = cfg.listen.rpartition(":")
    assert host in ("0.0.0.0", "", "::"), "must listen on the pod IP, not loopback"
    c = container(objects)
    assert {p["name"]: p["containerPort"] for p in c["ports"]}["http"] == int(port)
    service = objects.one("Service")
    assert pod_matches(service["spec"]["selector"], objects)
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]


def test_termination_outlasts_the_step_grace_period(objects, tmp_path):
    cfg = deployed_config(objects, tmp_path)
    spec = pod_spec(objects)
    pre_stop = 0.0
    hook = container(objects).get("lifecycle", {}).get("preStop", {})
    if "exec" in hook:
        pre_stop = float(hook["exec"]["command"][-1])
    elif "sleep" in hook:
        pre_stop = float(hook["sleep"]["seconds"])
    # SIGTERM comes after preStop; then steps get grace_period; then the store closes.
    assert spec["terminationGracePeriodSeconds"] >= pre_stop + cfg.grace_period + 10


def test_single_replica_on_a_volume_with_recreate(objects):
    dep = objects.one("Deployment")
    assert dep["spec"]["replicas"] == 1
    assert dep["spec"]["strategy"]["type"] == "Recreate"
    claim = volume(objects, "data")["persistentVolumeClaim"]["claimName"]
    pvc = objects.one("PersistentVolumeClaim")
    assert pvc["metadata"]["name"] == claim
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]


def test_pdb_covers_the_pod_without_blocking_drains(objects):
    spec = objects.one("PodDisruptionBudget")["spec"]
    assert pod_matches(spec["selector"]["matchLabels"], objects)
    replicas = objects.one("Deployment")["spec"]["replicas"]
    if "minAvailable" in spec:
        assert spec["minAvailable"] < replicas, "a singleton that may never be evicted blocks drains"
    else:
        assert spec["maxUnavailable"] >= 1


def test_network_policy_admits_only_alertmanager_and_prometheus(objects):
    spec = objects.one("NetworkPolicy")["spec"]
    assert pod_matches(spec["podSelector"]["matchLabels"], objects)
    assert "Ingress" in spec["policyTypes"]
    assert len(spec["ingress"]) >= 1
    sources = set()
    for rule in spec["ingress"]:
        assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
        for peer in rule["from"]:
            assert set(peer) == {"namespaceSelector", "podSelector"}, f"too broad a peer: {peer}"
            assert peer["namespaceSelector"]["matchLabels"], peer
            sources.add(peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"])
    assert sources == {"alertmanager", "prometheus"}


def test_network_policy_egress_reaches_only_what_the_config_names(objects, tmp_path):
    spec = objects.one("NetworkPolicy")["spec"]
    assert "Egress" in spec["policyTypes"], "egress left open reaches the metadata endpoint"
    allowed: set[tuple[str, int]] = set()
    for rule in spec["egress"]:
        assert rule.get("ports"), f"an egress rule without ports opens every port: {rule}"
        for peer in rule["to"]:
            if "ipBlock" in peer:  # the wide rule: HTTPS only, never the metadata endpoint
                assert peer["ipBlock"]["except"] == ["169.254.169.254/32"]
                assert {p["port"] for p in rule["ports"]} <= {80, 443, 6443}
                where = "*"
            else:
                where = peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
            allowed |= {(where, p["port"]) for p in rule["ports"]}
    assert {("kube-system", 53), ("*", 443)} <= allowed  # DNS, the Kubernetes API and S3
    cfg = deployed_config(objects, tmp_path)
    for url in (cfg.prometheus_url, cfg.alertmanager_url):
        host, port = url.split("//")[1].split(":")
        assert (host.split(".")[1], int(port)) in allowed, url


# --- configuration and secrets -----------------------------------------------------------------

def test_config_loads_and_starts_in_dry_run(objects, tmp_path):
    cfg = deployed_config(objects, tmp_path, token="s3cret-0123456789abcdef")
    assert cfg.mode == "dry-run"
    assert cfg.webhook_token == "s3cret-0123456789abcdef", "the token must come from the mounted Secret file"
    assert cfg.prometheus_url.startswith("http") and cfg.alertmanager_url.startswith("http")
    assert cfg.guards.namespaces_allow, "an empty allow list lets playbooks act in any namespace"
    assert "remediator" in cfg.guards.namespaces_deny


def test_container_args_point_at_the_mounted_config_and_rules(objects, tmp_path):
    c = container(objects)
    config_mount = next(m for m in c["volumeMounts"] if m["name"] == "config")
    assert arg(objects, "--config") == config_mount["mountPath"]
    assert config_mount["subPath"] in objects.configmap("remediator-config")["data"]
    assert arg(objects, "--rules") == mount_of(objects, "rules")
    assert deployed_config(objects, tmp_path).rules == [mount_of(objects, "rules")]
    assert volume(objects, "rules")["configMap"]["name"] == \
        objects.configmap("remediator-rules")["metadata"]["name"]


def test_webhook_token_is_a_mounted_secret_file(objects):
    c = container(objects)
    env = {e["name"]: e for e in c.get("env", [])}
    assert "REMEDIATOR_WEBHOOK_TOKEN" not in env, "the token must not be in the environment"
    assert not [e for e in c.get("env", []) if "valueFrom" in e], "no secretKeyRef in env"
    path = Path(env["REMEDIATOR_WEBHOOK_TOKEN_FILE"]["value"])
    secret = volume(objects, "webhook-token")["secret"]
    assert Path(mount_of(objects, "webhook-token")) == path.parent
    assert [i["path"] for i in secret["items"]] == [path.name]
    assert secret["defaultMode"] & 0o007 == 0, "not world-readable"


def test_rules_configmap_carries_exactly_the_shipped_playbooks(objects):
    rules_dir = ROOT / "rules"
    gen = load_generator()
    expected = {gen.configmap_key(rules_dir, f): f.read_text()
                for f in gen.kubernetes_rule_files(rules_dir)}
    # the compose systems run next to their stack (deploy/compose), not in the cluster
    assert {"libervia.yaml", "3dpot.yaml"}.isdisjoint(expected) and len(expected) == 3
    assert objects.configmap("remediator-rules").get("data", {}) == expected, (
        "deploy/kubernetes/rules is stale: run `python deploy/kubernetes/generate.py`")


def test_generated_files_are_current():
    result = run(sys.executable, str(KUSTOMIZE_DIR / "generate.py"), "--check")
    assert result.returncode == 0, result.stderr


def test_rules_load_once_from_a_configmap_volume(tmp_path):
    """The kubelet mounts a ConfigMap as `..<timestamp>/` + `..data` link + per-key links;
    the loader must see each playbook once (else: duplicate playbook names, serve refuses)."""
    stamp = tmp_path / "rules" / "..2024_01_01_00_00_00.000000001"
    stamp.mkdir(parents=True)
    (stamp / "demo.yaml").write_text(textwrap.dedent("""\
        playbooks:
          - name: demo
            match: {alertname: Demo}
            steps: [{name: note, action: log, params: {message: hi}}]
        """))
    os.symlink(stamp.name, tmp_path / "rules" / "..data")
    os.symlink("..data/demo.yaml", tmp_path / "rules" / "demo.yaml")
    mount = str(tmp_path / "rules")
    assert rule_files([mount]) == [f"{mount}/demo.yaml"]
    assert [pb.name for pb in load_rules([mount]).playbooks] == ["demo"]


def test_image_is_pinned_to_the_package_version(objects):
    from remediator import __version__

    image = container(objects)["image"]
    name, _, tag = image.rpartition(":")
    assert name and "/" in name, f"{image}: a registry path and a tag"
    assert tag == __version__, f"{image}: tag should be the release {__version__}"


def test_the_container_command_serves_with_the_deployed_config(objects, tmp_path):
    """Run the pod's own command line on this machine, every mount re-rooted under tmp_path:
    it starts, is ready, accepts an authenticated webhook, and stops cleanly on SIGTERM
    within the pod's termination grace period."""
    root = tmp_path / "pod"
    mounts = {m["mountPath"]: m for m in container(objects)["volumeMounts"]}

    def local(path: str) -> Path:
        return root / path.lstrip("/")

    port = _free_port()
    config_text = objects.configmap("remediator-config")["data"]["config.yaml"]
    config_text = config_text.replace("/var/lib/remediator", str(local("/var/lib/remediator")))
    config_text = re.sub(r"(?m)^listen: .*$", f"listen: 127.0.0.1:{port}", config_text)
    for path, mount in mounts.items():
        if mount["name"] == "config":
            local(path).parent.mkdir(parents=True, exist_ok=True)
            local(path).write_text(config_text)
        elif mount["name"] == "rules":
            local(path).mkdir(parents=True)
            for key, text in objects.configmap("remediator-rules").get("data", {}).items():
                (local(path) / key).write_text(text)
        else:
            local(path).mkdir(parents=True, exist_ok=True)
    env = {e["name"]: e["value"] for e in container(objects)["env"]}
    token_file = local(env["REMEDIATOR_WEBHOOK_TOKEN_FILE"])
    token_file.write_text("deploy-test-token\n")
    env = {**os.environ, **{k: str(local(v)) if v.startswith("/") else v for k, v in env.items()}}
    args = [a.split("=", 1)[0] + "=" + str(local(a.split("=", 1)[1])) for a in container(objects)["args"]]
    proc = subprocess.Popen([sys.executable, "-m", "remediator.cli", "serve", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_for(f"{base}{container(objects)['readinessProbe']['httpGet']['path']}", proc)
        assert _get(f"{base}{container(objects)['livenessProbe']['httpGet']['path']}") == 200
        body = json.dumps(notification(alert("DeployTestAlert", namespace="neural-hive-pipeline")))
        assert _post(f"{base}/alerts", body, "deploy-test-token") == 202
        assert _post(f"{base}/alerts", body, "wrong-token") == 401
        assert _get(f"{base}/metrics") == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            output, _ = proc.communicate(timeout=pod_spec(objects)["terminationGracePeriodSeconds"])
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail("remediator outlived the pod's termination grace period")
    assert proc.returncode == 0, output
    assert local("/var/lib/remediator/remediator.db").exists(), "the store is on the data volume"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _post(url: str, body: str, token: str) -> int:
    request = urllib.request.Request(url, data=body.encode(), method="POST", headers={
        "Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _wait_for(url: str, proc: subprocess.Popen, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"remediator exited {proc.returncode}:\n{proc.stdout.read()}")
        try:
            if _get(url) == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    pytest.fail(f"{url} not ready after {timeout}s")


# --- RBAC: least privilege, derived from the playbooks -----------------------------------------

def test_rbac_has_no_wildcards_no_secrets_no_escalation(objects):
    for role in objects.all("Role") + objects.all("ClusterRole"):
        for rule in role.get("rules", []):
            where = f"{role['kind']} {role['metadata'].get('namespace', '')}/{role['metadata']['name']}"
            for key in ("apiGroups", "resources", "verbs"):
                assert "*" not in rule.get(key, []), f"{where}: wildcard in {key}"
            assert not any(r.split("/")[0] == "secrets" for r in rule["resources"]), where
            assert not rule.get("nonResourceURLs"), where
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"]), where
    for binding in objects.all("RoleBinding") + objects.all("ClusterRoleBinding"):
        assert binding["subjects"] == [SERVICE_ACCOUNT], binding["metadata"]
        assert binding["roleRef"]["name"].startswith("remediator")


def test_exec_is_granted_only_in_the_namespaces_whose_playbooks_exec(objects):
    """pods/exec create: DeltaCrown's validator and Code Forge's sts probe; nowhere else."""
    execs = {role["metadata"].get("namespace", "") for role in objects.all("Role")
             + objects.all("ClusterRole") for rule in role.get("rules", [])
             if "pods/exec" in rule["resources"]}
    assert execs == {"deltacrown", "neural-hive-pipeline"}
    for role in objects.all("Role"):
        for rule in role.get("rules", []):
            if "pods/exec" in rule["resources"]:
                assert rule["verbs"] == ["create"], role["metadata"]


def test_rbac_grants_exactly_what_the_playbooks_need(objects, tmp_path):
    cfg = deployed_config(objects, tmp_path)
    needed = needed_grants([str(ROOT / "rules")], cfg.guards.namespaces_allow)
    have = granted(objects.docs)
    missing, unused = needed - have, have - needed
    assert not missing, f"playbooks need permissions the manifests do not grant:\n{describe(missing)}"
    assert not unused, f"manifests grant permissions no playbook needs:\n{describe(unused)}"
    assert not objects.all("ClusterRole") or any(ns == "" for ns, *_ in needed), \
        "a ClusterRole without a cluster-scoped need"


def test_rbac_roles_are_namespaced_in_allowed_namespaces(objects, tmp_path):
    cfg = deployed_config(objects, tmp_path)
    for role in objects.all("Role") + objects.all("RoleBinding"):
        ns = role["metadata"]["namespace"]
        assert ns in cfg.guards.namespaces_allow, f"{role['kind']} in {ns}, not an allowed namespace"
        assert ns not in cfg.guards.namespaces_deny


def test_rbac_matches_remediator_lint_permissions(objects):
    """The CLI view (`remediator lint --permissions`) agrees with the manifests, as a union."""
    result = run(sys.executable, "-m", "remediator.cli", "lint", "--permissions", "--format", "json",
                 "rules")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    from_cli = {(g, r, v) for rule in report["rbac"] for g in rule["apiGroups"]
                for r in rule["resources"] for v in rule["verbs"]}
    from_manifests = {(g, r, v) for _, g, r, v in granted(objects.docs)}
    assert from_cli == from_manifests


def test_shipped_rules_lint_clean_with_the_deployed_config():
    """The sinks and namespace scope serve will run with accept the shipped playbooks."""
    result = run(sys.executable, "-m", "remediator.cli", "lint", "--config",
                 str(KUSTOMIZE_DIR / "config.yaml"), "--strict", "rules")
    assert result.returncode == 0, result.stdout + result.stderr


# --- the RBAC check itself notices drift (with an action the real registry lacks) ----------

class _FakeRestart(Action):
    name = "fake.rollout_restart"
    mutating = True
    params: ClassVar[dict[str, Param]] = {"namespace": Param("string"),
                                          "name": Param("string", required=True)}
    permissions = (*rbac("apps", "deployments", "get", "patch"), *rbac("", "nodes", "list"))


FAKE_RULES = """\
playbooks:
  - name: restart-fixed
    match: {alertname: Fixed}
    target: {kind: deployment, namespace: shop, name: web}
    guards: {cooldown: 10m}
    steps: [{name: restart, action: fake.rollout_restart, params: {name: web}}]
  - name: restart-templated
    match: {alertname: Templated}
    target: {kind: deployment, namespace: "{{ labels.namespace }}", name: "{{ labels.deployment }}"}
    guards: {cooldown: 10m}
    steps: [{name: restart, action: fake.rollout_restart, params: {name: "{{ labels.deployment }}"}}]
"""


@pytest.fixture
def fake_project(tmp_path, monkeypatch):
    """A copy of the Kustomize base whose rules use an RBAC-declaring fake action."""
    monkeypatch.setitem(ACTIONS, _FakeRestart.name, _FakeRestart())
    root = tmp_path / "project"
    (root / "rules").mkdir(parents=True)
    (root / "rules" / "fake.yaml").write_text(FAKE_RULES)
    here = root / "deploy" / "kubernetes"
    here.parent.mkdir()
    subprocess.run(["cp", "-r", str(KUSTOMIZE_DIR), str(here.parent)], check=True)
    config = here / "config.yaml"
    systems = "".join(f"      - {ns}\n" for ns in
                      ("neural-hive-pipeline", "deltacrown", "default"))
    config.write_text(config.read_text().replace(systems,
                                                 "      - shop\n      - blog\n"))
    gen = load_generator()
    gen.write(gen.render(root, here), here)
    return root, here


def test_generator_grants_per_namespace_and_the_check_catches_drift(fake_project):
    root, here = fake_project
    docs = render_kustomize(here)
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    allow = load_config(str(here / "config.yaml"), env={}).guards.namespaces_allow
    needed = needed_grants([str(root / "rules")], allow)
    assert needed == {
        ("shop", "apps", "deployments", "get"), ("shop", "apps", "deployments", "patch"),
        ("blog", "apps", "deployments", "get"), ("blog", "apps", "deployments", "patch"),
        ("", "", "nodes", "list"),
    }
    assert granted(docs) == needed

    # A grant nothing needs is noticed ...
    role = here / "rbac" / "blog.yaml"
    role.write_text(role.read_text().replace("- patch\n", "- patch\n  - delete\n", 1))
    assert granted(render_kustomize(here)) - needed == {("blog", "apps", "deployments", "delete")}
    # ... and so is a permission a playbook needs that is no longer granted.
    role.write_text(role.read_text().replace("  - patch\n", "", 1))
    assert needed - granted(render_kustomize(here)) == {("blog", "apps", "deployments", "patch")}
    gen = load_generator()
    assert gen.stale(gen.render(root, here), here), "--check must report the hand edit"


def test_generator_refuses_a_templated_namespace_without_an_allow_list(fake_project):
    root, here = fake_project
    config = here / "config.yaml"
    config.write_text(config.read_text().replace("      - shop\n      - blog\n", "      []\n")
                      .replace("allow:\n      []", "allow: []"))
    gen = load_generator()
    with pytest.raises(gen.GenerateError, match="not fixed"):
        gen.render(root, here)
