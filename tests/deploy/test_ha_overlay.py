"""deploy/kubernetes/overlays/ha: the base as three replicas on PostgreSQL, rendered the way
its comment tells users to (a kustomization with the base and the component)."""

from __future__ import annotations

import os

import kubernetes_validate
import pytest

from tests.deploy.conftest import KUSTOMIZE_DIR, Objects, render_kustomize
from tests.deploy.test_kubernetes_manifests import K8S_VERSION

HA = KUSTOMIZE_DIR / "overlays" / "ha"


@pytest.fixture(scope="module")
def ha(tmp_path_factory) -> Objects:
    user = tmp_path_factory.mktemp("ha")
    (user / "kustomization.yaml").write_text(
        f"resources: [{os.path.relpath(KUSTOMIZE_DIR, user)}]\n"
        f"components: [{os.path.relpath(HA, user)}]\n")
    return Objects(render_kustomize(user))


def _pod(ha: Objects) -> dict:
    return ha.one("Deployment")["spec"]["template"]


def test_every_object_validates_against_the_kubernetes_schema(ha):
    for doc in ha.docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_three_replicas_rolled_one_at_a_time_on_different_nodes(ha):
    spec = ha.one("Deployment")["spec"]
    assert spec["replicas"] == 3
    assert spec["strategy"] == {"type": "RollingUpdate",
                                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    [term] = _pod(ha)["spec"]["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    labels = _pod(ha)["metadata"]["labels"]
    selector = term["podAffinityTerm"]["labelSelector"]["matchLabels"]
    assert selector and all(labels.get(k) == v for k, v in selector.items())


def test_the_budget_keeps_two_replicas_through_a_drain(ha):
    spec = ha.one("PodDisruptionBudget")["spec"]
    assert spec["minAvailable"] == 2 and "maxUnavailable" not in spec
    assert spec["minAvailable"] < ha.one("Deployment")["spec"]["replicas"]  # drains proceed


def test_state_lives_in_postgresql_reached_through_a_secret(ha):
    assert not ha.all("PersistentVolumeClaim")
    pod = _pod(ha)["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "persistentVolumeClaim" not in volumes["data"]
    [container] = pod["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["REMEDIATOR_STORE"]["valueFrom"]["secretKeyRef"] == {"name": "remediator-store",
                                                                    "key": "url"}
    assert "REMEDIATOR_STORE_PASSWORD" not in env  # a file, never the environment
    password = env["REMEDIATOR_STORE_PASSWORD_FILE"]["value"]
    [mount] = [m for m in container["volumeMounts"] if password.startswith(m["mountPath"] + "/")]
    assert volumes[mount["name"]]["secret"]["secretName"] == "remediator-store"
    assert not ha.all("Secret")  # created by the operator, never shipped
