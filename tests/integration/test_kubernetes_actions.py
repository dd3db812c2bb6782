"""Kubernetes actions against a real protocol peer: the Kubernetes API test server (tests/kubeapi).

Nothing in the official client is patched: requests go over HTTP and errors are real Status
responses. Each mutating action is proven faithful both ways: real kubectl acts on one object,
remediator on its twin (same name, another namespace), and the stored objects must end up the
same. Actions are driven the way the engine drives them: params through `check_params`, then
`run` or the Executor.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import os
import re
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from remediator.actions.backends import Backends
from remediator.actions.base import ActionContext, ActionError
from remediator.actions.kube_client import client
from remediator.actions.registry import ACTIONS
from remediator.engine.executor import Executor, StepRecord
from tests.conftest import new_store
from tests.kubeapi.rbac import Policy, generator, step_documents
from tests.kubeapi.tls import certificate
from tests.support.actions import params, problems
from tests.support.loop_probe import LoopProbe
from tests.support.payloads import alert, notification
from tests.support.worker import replay_cli

if TYPE_CHECKING:
    from tests.kubeapi import KubeAPIServer
    from tests.kubeapi.fixtures import Kubectl

KUBECTL_NS = "kubectl-side"  # where kubectl acts
NS = "neural-hive-pipeline"  # where remediator acts, on a twin of the same name
REVISION = "deployment.kubernetes.io/revision"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
PLURALS = {"deployment": "deployments", "statefulset": "statefulsets", "daemonset": "daemonsets"}


_server: list[KubeAPIServer] = []  # the server of the running test, for `act`'s grants


@pytest.fixture(autouse=True)
def least_privilege(request: pytest.FixtureRequest):
    """remediator's service account starts with no permission at all; each step run through
    `act`/`execute` is granted exactly the RBAC deploy/kubernetes/generate.py emits for it
    (its action's declared permissions), so an undeclared call fails with 403."""
    if "kubeapi" not in request.fixturenames:
        yield
        return
    kube = request.getfixturevalue("kubeapi")
    kube.rbac = Policy([])
    _server.append(kube)
    yield
    _server.remove(kube)


def grant(action: Any, p: dict[str, Any]) -> None:
    if _server:
        _server[-1].grant(step_documents(action.name, p, p.get("namespace") or ""))


@pytest.fixture
def ctx(kubeconfig: Path, run):
    """A fresh Backends per test: the cached client reads KUBECONFIG when it is built."""
    backends = Backends()
    yield ActionContext(backends=backends, log=logging.getLogger("t"), execution_id="e1")
    run(backends.close())


def act(run, action_name: str, ctx: ActionContext, /, **raw: Any) -> dict[str, Any]:
    action = ACTIONS[action_name]
    p = params(action, **raw)
    grant(action, p)
    return run(action.run(p, ctx))


def execute(run, action_name: str, ctx: ActionContext, /, attempts: int = 3,
            step_timeout: float = 10, **raw: Any) -> StepRecord:
    """Through the Executor: retries on transient errors only, inside the step's deadline."""
    action = ACTIONS[action_name]
    p = params(action, **raw)
    grant(action, p)
    record = StepRecord(name="step", action=action_name, params=p, outcome="planned")
    return run(Executor(retry_wait=0.01).run(action, p, ctx, record, timeout=step_timeout,
                                             attempts=attempts))


def state(kube: KubeAPIServer, plural: str, namespace: str, name: str) -> dict[str, Any]:
    """What must match between kubectl's object and remediator's twin: spec (restart time
    blanked), generation, annotations, labels and the status counters."""
    obj = copy.deepcopy(kube.get(plural, namespace, name))
    assert obj is not None, f"{plural} {namespace}/{name} missing"
    annotations = obj["spec"]["template"].get("metadata", {}).get("annotations", {})
    if RESTARTED_AT in annotations:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", annotations[RESTARTED_AT])
        annotations[RESTARTED_AT] = "<RFC 3339 now>"
    return {"spec": obj["spec"], "generation": obj["metadata"]["generation"],
            "annotations": obj["metadata"].get("annotations"),
            "labels": obj["metadata"].get("labels"),
            "status": {k: v for k, v in obj.get("status", {}).items() if isinstance(v, int)}}


def twins(kube: KubeAPIServer, kind: str, name: str, **kwargs: Any) -> None:
    add = {"deployment": kube.add_deployment, "statefulset": kube.add_statefulset,
           "daemonset": kube.add_daemonset}[kind]
    for ns in (KUBECTL_NS, NS):
        add(name, ns, **kwargs)


def same(kube: KubeAPIServer, plural: str, name: str) -> dict[str, Any]:
    ours = state(kube, plural, NS, name)
    assert ours == state(kube, plural, KUBECTL_NS, name)
    return ours


def env_of(kube: KubeAPIServer, namespace: str, name: str, container: str) -> list[dict]:
    spec = kube.get("deployments", namespace, name)["spec"]["template"]["spec"]
    return next(c for c in spec["containers"] if c["name"] == container).get("env", [])


# --- rollout restart -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["deployment", "statefulset", "daemonset"])
def test_rollout_restart_matches_kubectl(run, ctx, kubeapi: KubeAPIServer, kubectl: Kubectl,
                                         kind: str) -> None:
    kwargs = {} if kind == "daemonset" else {"replicas": 2}
    twins(kubeapi, kind, "code-forge", **kwargs)
    old_pods = {p["metadata"]["uid"] for p in kubeapi.list("pods", NS)}

    kubectl("rollout", "restart", f"{kind}/code-forge", "-n", KUBECTL_NS, check=True)
    result = act(run, "kubernetes.rollout_restart", ctx, kind=kind, namespace=NS,
                 name="code-forge")

    ours = same(kubeapi, PLURALS[kind], "code-forge")
    assert set(ours["spec"]["template"]["metadata"]["annotations"]) == {RESTARTED_AT}
    assert ours["generation"] == result["generation"] == 2
    assert result["restarted_at"] == kubeapi.get(PLURALS[kind], NS, "code-forge")["spec"][
        "template"]["metadata"]["annotations"][RESTARTED_AT]
    assert not old_pods & {p["metadata"]["uid"] for p in kubeapi.list("pods", NS)}
    (patch,) = kubeapi.requests_matching("PATCH", f"/namespaces/{NS}/")
    assert patch.content_type == "application/strategic-merge-patch+json"
    assert patch.query.get("fieldManager") == "remediator"
    if kind == "deployment":
        assert ours["annotations"][REVISION] == "2"


def test_rollout_restart_refuses_a_paused_deployment(run, ctx, kubeapi: KubeAPIServer,
                                                     kubectl: Kubectl) -> None:
    twins(kubeapi, "deployment", "code-forge")
    for ns in (KUBECTL_NS, NS):
        kubeapi.patch("deployments", ns, "code-forge", {"spec": {"paused": True}})
    denied = kubectl("rollout", "restart", "deployment/code-forge", "-n", KUBECTL_NS)
    assert "can't restart paused deployment" in denied.stderr
    with pytest.raises(ActionError, match=r"can't restart paused deployment"):
        act(run, "kubernetes.rollout_restart", ctx, namespace=NS, name="code-forge")
    assert kubeapi.requests_matching("PATCH") == []


# --- rollout status ------------------------------------------------------------------------------


def test_rollout_status_waits_for_a_held_rollout(run, ctx, kubeapi: KubeAPIServer) -> None:
    kubeapi.add_deployment("code-forge", NS, replicas=2)
    kubeapi.hold_rollout("deployments", NS, "code-forge")
    act(run, "kubernetes.rollout_restart", ctx, namespace=NS, name="code-forge")
    threading.Timer(0.6, kubeapi.release_rollout, ("deployments", NS, "code-forge")).start()

    started = time.monotonic()
    result = act(run, "kubernetes.rollout_status", ctx, namespace=NS, name="code-forge",
                 timeout="10s", interval="0.1s")
    assert 0.5 < time.monotonic() - started < 5
    assert result["done"] and result["polls"] > 2
    assert result["message"] == 'deployment "code-forge" successfully rolled out'
    assert {k: result[k] for k in ("desired", "current", "updated", "ready", "available")} == {
        "desired": 2, "current": 2, "updated": 2, "ready": 2, "available": 2}
    assert result["generation"] == result["observed_generation"] == 2


def test_rollout_status_fails_fast_on_progress_deadline_and_times_out_on_a_stuck_one(
        run, ctx, kubeapi: KubeAPIServer) -> None:
    kubeapi.add_deployment("code-forge", NS, replicas=2)
    kubeapi.hold_rollout("deployments", NS, "code-forge", fail=True)
    act(run, "kubernetes.rollout_restart", ctx, namespace=NS, name="code-forge")
    started = time.monotonic()
    failed = execute(run, "kubernetes.rollout_status", ctx, namespace=NS, name="code-forge",
                     timeout="30s", interval="0.1s")
    assert failed.outcome == "failed" and failed.attempts == 1
    assert failed.detail == ("deployment neural-hive-pipeline/code-forge: deployment "
                             '"code-forge" exceeded its progress deadline')
    assert failed.result["current"] == 4 and failed.result["ready"] == 2
    assert time.monotonic() - started < 15  # did not wait for the 30 s timeout

    kubeapi.hold_rollout("deployments", NS, "code-forge", fail=False)
    stuck = execute(run, "kubernetes.rollout_status", ctx, namespace=NS, name="code-forge",
                    timeout="1s", interval="0.2s")
    assert stuck.outcome == "failed" and stuck.attempts == 1
    assert stuck.detail.startswith("rollout of deployment neural-hive-pipeline/code-forge not "
                                   "complete after 1s: Waiting for deployment")
    assert stuck.result["done"] is False


@pytest.mark.parametrize("kind", ["statefulset", "daemonset"])
def test_rollout_status_of_statefulsets_and_daemonsets(run, ctx, kubeapi: KubeAPIServer,
                                                       kind: str) -> None:
    twins(kubeapi, kind, "gateway")
    kubeapi.controller.delay = 0.5  # observedGeneration lags the restart for a while
    act(run, "kubernetes.rollout_restart", ctx, kind=kind, namespace=NS, name="gateway")
    result = act(run, "kubernetes.rollout_status", ctx, kind=kind, namespace=NS,
                 name="gateway", timeout="10s", interval="0.1s")
    assert result["done"] and result["polls"] > 1 and result["observed_generation"] == 2


# --- scale ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["deployment", "statefulset"])
def test_scale_matches_kubectl_and_clamps_into_bounds(run, ctx, kubeapi: KubeAPIServer,
                                                      kubectl: Kubectl, kind: str) -> None:
    twins(kubeapi, kind, "deltacrown", replicas=2)
    plural = PLURALS[kind]

    kubectl("scale", f"{kind}/deltacrown", "--replicas=4", "-n", KUBECTL_NS, check=True)
    relative = act(run, "kubernetes.scale", ctx, kind=kind, namespace=NS, name="deltacrown",
                   delta="+2", min=1, max=6)
    assert relative == {"kind": kind, "namespace": NS, "name": "deltacrown", "previous": 2,
                        "requested": 4, "applied": 4, "clamped": False, "changed": True}
    assert same(kubeapi, plural, "deltacrown")["spec"]["replicas"] == 4
    assert len(kubeapi.list("pods", NS)) == 4
    (patch,) = kubeapi.requests_matching("PATCH", f"/namespaces/{NS}/{plural}/deltacrown/scale$")
    assert patch.content_type == "application/merge-patch+json"
    assert patch.body["spec"] == {"replicas": 4}

    kubectl("scale", f"{kind}/deltacrown", "--replicas=6", "-n", KUBECTL_NS, check=True)
    clamped = act(run, "kubernetes.scale", ctx, kind=kind, namespace=NS, name="deltacrown",
                  replicas=50, min=1, max=6)
    assert (clamped["requested"], clamped["applied"], clamped["clamped"]) == (50, 6, True)
    assert same(kubeapi, plural, "deltacrown")["status"]["readyReplicas"] == 6

    again = act(run, "kubernetes.scale", ctx, kind=kind, namespace=NS, name="deltacrown",
                replicas=6, min=1, max=6)
    assert again["changed"] is False
    assert len(kubeapi.requests_matching("PATCH", f"/namespaces/{NS}/")) == 2  # no-op: no PATCH

    down = act(run, "kubernetes.scale", ctx, kind=kind, namespace=NS, name="deltacrown",
               delta=-10, min=1, max=6)
    assert (down["requested"], down["applied"]) == (-4, 1)


def test_scale_declarations() -> None:
    scale = ACTIONS["kubernetes.scale"]
    assert scale.repeatable(params(scale, namespace=NS, name="x", replicas=3, min=1, max=5))
    assert not scale.repeatable(params(scale, namespace=NS, name="x", delta=1, min=1, max=5))
    assert "missing required parameter 'max'" in problems("kubernetes.scale", namespace=NS,
                                                          name="x", replicas=3, min=1)
    assert problems("kubernetes.scale", namespace=NS, name="x", replicas=3, delta=1, min=1,
                    max=5) == ["give exactly one of replicas (absolute) or delta (relative)"]
    assert problems("kubernetes.scale", namespace=NS, name="x", replicas=3, min=5,
                    max=2) == ["min (5) must not exceed max (2)"]
    assert scale.describe(params(scale, namespace=NS, name="x", delta=2, min=1, max=8)) == (
        "would scale deployment neural-hive-pipeline/x by +2 replicas (kept within 1..8)")


def test_scale_rereads_once_on_conflict(run, ctx, kubeapi: KubeAPIServer) -> None:
    kubeapi.add_deployment("deltacrown", NS, replicas=2)
    kubeapi.inject("PATCH", r"/deployments/deltacrown/scale$", status=409, times=1,
                   reason="Conflict", message="the object has been modified")
    record = execute(run, "kubernetes.scale", ctx, namespace=NS, name="deltacrown", delta=1,
                     min=1, max=5)
    assert record.outcome == "succeeded" and record.attempts == 1
    assert kubeapi.get("deployments", NS, "deltacrown")["spec"]["replicas"] == 3
    assert len(kubeapi.requests_matching("GET", "/deltacrown/scale$")) == 2

    kubeapi.inject("PATCH", r"/deployments/deltacrown/scale$", status=409, times=2,
                   reason="Conflict", message="the object has been modified")
    record = execute(run, "kubernetes.scale", ctx, namespace=NS, name="deltacrown", delta=1,
                     min=1, max=5)
    assert record.outcome == "failed" and record.attempts == 1  # 409 is never retried
    assert "Conflict (HTTP 409): the object has been modified" in record.detail
    assert kubeapi.get("deployments", NS, "deltacrown")["spec"]["replicas"] == 3


def test_a_change_landing_mid_scale_is_reread_not_overwritten(run, ctx,
                                                              kubeapi: KubeAPIServer) -> None:
    """The scale PATCH carries the resourceVersion its delta was computed from: a change
    landing in between makes the apiserver answer 409, and the action starts over from it."""
    kubeapi.add_deployment("deltacrown", NS, replicas=2)
    # The first PATCH is held at the server; the change lands once it has arrived (not after
    # a timer that would race the client's start-up), before the server answers it.
    kubeapi.inject("PATCH", r"/deployments/deltacrown/scale$", status=None, delay=3)

    async def change_while_the_patch_is_held(scale: Any) -> Any:
        task = asyncio.ensure_future(scale)
        while not kubeapi.requests_matching("PATCH", "/deltacrown/scale$") and not task.done():
            await asyncio.sleep(0.01)
        kubeapi.patch("deployments", NS, "deltacrown", {"spec": {"replicas": 5}})
        return await task
    result = act(lambda scale: run(change_while_the_patch_is_held(scale)), "kubernetes.scale",
                 ctx, namespace=NS, name="deltacrown", delta=1, min=1, max=9)
    assert (result["previous"], result["applied"]) == (5, 6)
    assert kubeapi.get("deployments", NS, "deltacrown")["spec"]["replicas"] == 6
    first, second = kubeapi.requests_matching("PATCH", "/scale$")
    assert first.body["spec"] == {"replicas": 3} and second.body["spec"] == {"replicas": 6}


# --- set env -------------------------------------------------------------------------------------


def test_set_env_matches_kubectl_and_records_previous_values(
        run, ctx, kubeapi: KubeAPIServer, kubectl: Kubectl) -> None:
    pod_name = {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
    containers = [{"name": "app", "image": "app:1", "env": [
                      {"name": "CERT_S3_READ_PRIMARY", "value": "true"},
                      {"name": "LOG_LEVEL", "value": "info"}]},
                  {"name": "sidecar", "image": "side:1", "env": [pod_name]}]
    twins(kubeapi, "deployment", "deltacrown", containers=containers)

    kubectl("set", "env", "deployment/deltacrown", "CERT_S3_READ_PRIMARY=false",
            "CERT_S3_DUAL_WRITE=true", "EMPTY=", "-n", KUBECTL_NS, check=True)
    result = act(run, "kubernetes.set_env", ctx, namespace=NS, name="deltacrown",
                 env={"CERT_S3_READ_PRIMARY": False, "CERT_S3_DUAL_WRITE": "true", "EMPTY": ""})
    same(kubeapi, "deployments", "deltacrown")
    assert env_of(kubeapi, NS, "deltacrown", "app") == [
        {"name": "CERT_S3_READ_PRIMARY", "value": "false"}, {"name": "LOG_LEVEL", "value": "info"},
        {"name": "CERT_S3_DUAL_WRITE", "value": "true"}, {"name": "EMPTY"}]
    assert result == {"changed": True, "containers": ["app", "sidecar"], "generation": 2,
                      "previous": {
                          "app": {"CERT_S3_READ_PRIMARY": "true", "CERT_S3_DUAL_WRITE": None,
                                  "EMPTY": None},
                          "sidecar": {"CERT_S3_READ_PRIMARY": None, "CERT_S3_DUAL_WRITE": None,
                                      "EMPTY": None}}}

    # one container: a literal replaces a valueFrom reference, and a removal
    kubectl("set", "env", "deployment/deltacrown", "-c", "sidecar", "POD_NAME=fixed", "EMPTY-",
            "-n", KUBECTL_NS, check=True)
    result = act(run, "kubernetes.set_env", ctx, namespace=NS, name="deltacrown",
                 container="sidecar", env={"POD_NAME": "fixed"}, unset=["EMPTY"])
    same(kubeapi, "deployments", "deltacrown")
    assert env_of(kubeapi, NS, "deltacrown", "sidecar") == [
        {"name": "POD_NAME", "value": "fixed"}, {"name": "CERT_S3_READ_PRIMARY", "value": "false"},
        {"name": "CERT_S3_DUAL_WRITE", "value": "true"}]
    assert result["previous"] == {"sidecar": {"POD_NAME": {"valueFrom": pod_name["valueFrom"]},
                                              "EMPTY": ""}}
    removal = kubeapi.requests_matching("PATCH", f"/namespaces/{NS}/")[-1].body
    assert {"name": "EMPTY", "$patch": "delete"} in (
        removal["spec"]["template"]["spec"]["containers"][0]["env"])

    # already at the desired values: no PATCH at all
    patches = len(kubeapi.requests_matching("PATCH"))
    again = act(run, "kubernetes.set_env", ctx, namespace=NS, name="deltacrown",
                container="sidecar", env={"POD_NAME": "fixed"}, unset=["EMPTY"])
    assert again == {"changed": False, "containers": [],
                     "previous": {"sidecar": {"POD_NAME": "fixed", "EMPTY": None}}}
    assert len(kubeapi.requests_matching("PATCH")) == patches
    assert kubeapi.get("deployments", NS, "deltacrown")["metadata"]["generation"] == 3


def test_set_env_declarations_and_a_missing_container(run, ctx, kubeapi: KubeAPIServer) -> None:
    set_env = ACTIONS["kubernetes.set_env"]
    assert set_env.idempotent and set_env.mutating
    assert set_env.describe(params(set_env, namespace=NS, name="code-forge", container="app",
                                   env={"CERT_S3_READ_PRIMARY": False})) == (
        "would patch deployment neural-hive-pipeline/code-forge: set env "
        "CERT_S3_READ_PRIMARY=false in container app")
    assert problems("kubernetes.set_env", namespace=NS, name="x") == [
        "give env (to set) and/or unset (to remove)"]
    assert problems("kubernetes.set_env", namespace=NS, name="x", env={"BAD NAME": "1"}) == [
        "env 'BAD NAME': must be a C identifier-like env var name"]
    assert problems("kubernetes.set_env", namespace=NS, name="x", env={"A": {"b": 1}}) == [
        "env 'A': must be a string, number or boolean, got dict"]
    assert problems("kubernetes.set_env", namespace=NS, name="x", env={"A": "1"},
                    unset=["A"]) == ["both set and unset: A"]

    kubeapi.add_deployment("code-forge", NS, containers=["app"])
    with pytest.raises(ActionError, match=r"no container named 'worker' \(containers: app\)"):
        act(run, "kubernetes.set_env", ctx, namespace=NS, name="code-forge", container="worker",
            env={"A": "1"})
    assert kubeapi.requests_matching("PATCH") == []


# --- rollout undo --------------------------------------------------------------------------------


def test_rollout_undo_matches_kubectl(run, ctx, kubeapi: KubeAPIServer, kubectl: Kubectl) -> None:
    twins(kubeapi, "deployment", "deltacrown", replicas=2, env={"LOG_LEVEL": "info"})
    original = kubeapi.get("deployments", NS, "deltacrown")["spec"]["template"]
    for ns in (KUBECTL_NS, NS):
        kubectl("set", "env", "deployment/deltacrown", "LOG_LEVEL=debug", "-n", ns, check=True)

    kubectl("rollout", "undo", "deployment/deltacrown", "-n", KUBECTL_NS, check=True)
    result = act(run, "kubernetes.rollout_undo", ctx, namespace=NS, name="deltacrown")
    assert result == {"namespace": NS, "name": "deltacrown", "from_revision": 2,
                      "to_revision": 1, "changed": True}
    ours = same(kubeapi, "deployments", "deltacrown")
    assert kubeapi.get("deployments", NS, "deltacrown")["spec"]["template"] == original
    assert ours["annotations"][REVISION] == "3"
    undo = kubeapi.requests_matching("PATCH", f"/namespaces/{NS}/")[-1]
    assert undo.content_type == "application/json-patch+json"

    # back again, by revision number; then a no-op like kubectl's "skipped rollback"
    kubectl("rollout", "undo", "deployment/deltacrown", "--to-revision=2", "-n", KUBECTL_NS,
            check=True)
    act(run, "kubernetes.rollout_undo", ctx, namespace=NS, name="deltacrown", to_revision=2)
    assert same(kubeapi, "deployments", "deltacrown")["annotations"][REVISION] == "4"
    patches = len(kubeapi.requests_matching("PATCH"))
    skipped = act(run, "kubernetes.rollout_undo", ctx, namespace=NS, name="deltacrown",
                  to_revision=4)
    assert skipped["changed"] is False and "already matches revision 4" in skipped["detail"]
    assert len(kubeapi.requests_matching("PATCH")) == patches


def test_rollout_undo_refusals_and_conflict(run, ctx, kubeapi: KubeAPIServer,
                                            kubectl: Kubectl) -> None:
    kubeapi.add_deployment("fresh", NS)
    record = execute(run, "kubernetes.rollout_undo", ctx, namespace=NS, name="fresh")
    assert record.outcome == "failed" and record.attempts == 1
    assert "no rollout history found for deployment 'fresh'" in record.detail
    with pytest.raises(ActionError, match="unable to find specified revision 7 in history"):
        act(run, "kubernetes.rollout_undo", ctx, namespace=NS, name="fresh", to_revision=7)

    kubeapi.add_deployment("deltacrown", NS, env={"LOG_LEVEL": "info"})
    kubectl("set", "env", "deployment/deltacrown", "LOG_LEVEL=debug", "-n", NS, check=True)
    kubeapi.inject("PATCH", r"/deployments/deltacrown$", status=409, times=1, reason="Conflict",
                   message="the object has been modified")
    record = execute(run, "kubernetes.rollout_undo", ctx, namespace=NS, name="deltacrown")
    assert record.outcome == "succeeded" and record.attempts == 1
    assert len(kubeapi.requests_matching("PATCH", r"/deployments/deltacrown$")) == 3  # + kubectl
    assert env_of(kubeapi, NS, "deltacrown", "deltacrown") == [{"name": "LOG_LEVEL",
                                                                "value": "info"}]


# --- delete pods ---------------------------------------------------------------------------------


def test_delete_pods_matches_kubectl_and_refuses_more_than_max(
        run, ctx, kubeapi: KubeAPIServer, kubectl: Kubectl) -> None:
    twins(kubeapi, "deployment", "code-forge", replicas=3)
    theirs = kubeapi.list("pods", KUBECTL_NS)[0]["metadata"]["name"]
    kubectl("delete", "pod", theirs, "-n", KUBECTL_NS, check=True)
    victim = kubeapi.list("pods", NS)[0]["metadata"]["name"]
    result = act(run, "kubernetes.delete_pods", ctx, namespace=NS, names=[victim], max=1)
    assert result == {"matched": 1, "deleted": [victim], "gone": []}
    assert kubeapi.get("pods", NS, victim) is None
    assert len(kubeapi.list("pods", NS)) == len(kubeapi.list("pods", KUBECTL_NS)) == 3
    kubectl_delete, our_delete = kubeapi.requests_matching("DELETE")
    assert our_delete.body["propagationPolicy"] == kubectl_delete.body["propagationPolicy"]

    kubeapi.clear_requests()
    record = execute(run, "kubernetes.delete_pods", ctx, namespace=NS,
                     selector="app=code-forge", max=2)
    assert record.outcome == "failed" and record.attempts == 1
    assert record.detail == ("3 pods in neural-hive-pipeline match 'app=code-forge', more than "
                             "max 2: deleted none")
    assert record.result == {"matched": 3, "max": 2}
    assert kubeapi.requests_matching("DELETE") == []

    before = {p["metadata"]["name"] for p in kubeapi.list("pods", NS)}
    result = act(run, "kubernetes.delete_pods", ctx, namespace=NS, selector="app=code-forge",
                 max=3)
    assert sorted(result["deleted"]) == sorted(before) and result["matched"] == 3
    after = {p["metadata"]["name"] for p in kubeapi.list("pods", NS)}
    assert len(after) == 3 and not before & after  # replaced by the ReplicaSet
    assert all(r.body["preconditions"]["uid"] for r in kubeapi.requests_matching("DELETE"))

    again = act(run, "kubernetes.delete_pods", ctx, namespace=NS, names=[victim], max=1)
    assert again == {"matched": 1, "deleted": [], "gone": [victim]}


def test_delete_pods_refuses_empty_and_wildcard_selectors() -> None:
    assert problems("kubernetes.delete_pods", namespace=NS, selector="", max=1) == [
        "parameter 'selector': must be a non-empty label selector"]
    assert problems("kubernetes.delete_pods", namespace=NS, selector="*", max=1) == [
        "parameter 'selector': invalid selector term '*'"]
    assert problems("kubernetes.delete_pods", namespace=NS, max=1) == [
        "give exactly one of names or selector"]
    assert "missing required parameter 'max'" in problems("kubernetes.delete_pods",
                                                          namespace=NS, selector="app=x")
    assert problems("kubernetes.delete_pods", namespace=NS, names=["a", "b"], max=1) == [
        "2 names given, more than max 1"]


# --- logs ----------------------------------------------------------------------------------------


def test_logs_grep_across_three_pods_like_kubectl_then_truncated(
        run, ctx, kubeapi: KubeAPIServer, kubectl: Kubectl) -> None:
    kubeapi.add_deployment("code-forge", NS, replicas=3)
    pods = sorted(p["metadata"]["name"] for p in kubeapi.list("pods", NS))
    noise = ["GET /health 200", "cache warm", "S3 upload failed: ExpiredToken",
             "retrying Upload part 2", "ERROR sbom write", "done"]
    for pod in pods:
        kubeapi.set_logs(NS, pod, [f"{pod} {line}" for line in noise * 10])

    out = kubectl("logs", "-l", "app=code-forge", "--tail=500", "-n", NS, check=True).stdout
    grep = subprocess.run(["grep", "-i", r"s3\|upload\|error"], input=out, capture_output=True,
                          text=True, check=True).stdout.splitlines()
    result = act(run, "kubernetes.logs", ctx, namespace=NS, selector="app=code-forge", tail=500,
                 grep="(?i)s3|upload|error", max_lines=1000)
    assert result["pods"] == 3 and result["truncated"] is False
    assert result["matched"] == len(grep) == 3 * 30
    assert sorted(re.sub(r"^\[pod/[^]]+\] ", "", line) for line in result["lines"]) == sorted(grep)
    assert result["lines"][0] == f"[pod/{pods[0]}/code-forge] {pods[0]} S3 upload failed: " \
                                 "ExpiredToken"
    assert all(r.query["tailLines"] == "500"
               for r in kubeapi.requests_matching("GET", f"/namespaces/{NS}/pods/.*/log$"))

    cut = act(run, "kubernetes.logs", ctx, namespace=NS, selector="app=code-forge", tail=500,
              grep="(?i)s3|upload|error", max_lines=5)
    assert (cut["pods"], cut["matched"], len(cut["lines"]), cut["truncated"]) == (3, 90, 5, True)
    small = act(run, "kubernetes.logs", ctx, namespace=NS, selector="app=code-forge",
                max_bytes=200)
    assert small["truncated"] and sum(len(line.encode()) for line in small["lines"]) <= 200
    few = act(run, "kubernetes.logs", ctx, namespace=NS, selector="app=code-forge", tail=1,
              max_pods=2)
    assert (few["pods"], few["pods_matched"], few["truncated"]) == (2, 3, True)


def test_logs_keep_the_newest_lines_of_a_busy_tail_and_count_them_all(
        run, ctx, kubeapi: KubeAPIServer) -> None:
    # Code Forge (structlog) logs every upload's start and end: after 200 good uploads the
    # credentials expire. The evidence is the newest lines, whatever came before
    kubeapi.add_deployment("code-forge", NS, replicas=2)
    pods = sorted(p["metadata"]["name"] for p in kubeapi.list("pods", NS))

    def upload(i: int, end: str) -> list[str]:
        key = f"sboms/T-{i}/a-{i}/sbom.cyclonedx.json"
        return [f"2026-12-02T07:{i % 60:02d}:00.000Z [info     ] s3_upload_started              "
                f"artifact_type=sbom local_path=/tmp/s{i}.json remote_key={key} size_bytes=2048",
                f"2026-12-02T07:{i % 60:02d}:00.400Z {end} artifact_type=sbom "
                f"duration_seconds=0.4 remote_key={key} s3_uri=s3://code-forge-artifacts-prod/{key}"]
    expired = ("[error    ] s3_upload_failed error='An error occurred (ExpiredToken) when calling "
               "the PutObject operation: The provided token has expired.' error_type=ClientError")
    lines = [x for i in range(200) for x in upload(i, "[info     ] s3_upload_completed")] + \
            [x for i in range(20) for x in upload(200 + i, expired)]
    assert len("\n".join(lines)) > 65536  # more than max_bytes: a read cut there loses the end
    for pod in pods:
        kubeapi.set_logs(NS, pod, lines)
    grep = "(?i)s3|upload|error|expired|NoSuchBucket|AccessDenied"
    result = act(run, "kubernetes.logs", ctx, namespace=NS, selector="app=code-forge", tail=500,
                 grep=grep, max_lines=100)
    assert (result["matched"], len(result["lines"]), result["truncated"]) == (880, 100, True)
    for pod in pods:  # each pod's newest 50, oldest first, its last line the newest
        mine = [line for line in result["lines"] if line.startswith(f"[pod/{pod}/")]
        assert len(mine) == 50 and "ExpiredToken" in mine[-1] and "T-219" in mine[-1]
    # the count of every ExpiredToken line in the tail, however few lines are kept
    count = act(run, "kubernetes.logs", ctx, namespace=NS, selector="app=code-forge", tail=500,
                grep="ExpiredToken", max_lines=5)
    assert (count["matched"], len(count["lines"])) == (40, 5)


def test_logs_of_one_pod_since_and_container(run, ctx, kubeapi: KubeAPIServer) -> None:
    kubeapi.add_pod("multi", NS, containers=["app", "sidecar"])
    kubeapi.set_logs(NS, "multi", [(600, "old"), (5, "recent")], container="sidecar")
    result = act(run, "kubernetes.logs", ctx, namespace=NS, pod="multi", container="sidecar",
                 since="60s")
    assert result["lines"] == ["[pod/multi/sidecar] recent"] and result["matched"] == 1
    (req,) = kubeapi.requests_matching("GET", "/pods/multi/log$")
    assert req.query["sinceSeconds"] == "60" and req.query["container"] == "sidecar"
    assert problems("kubernetes.logs", namespace=NS, pod="multi", grep="(") == [
        "grep: '(' is not a valid RE2 regex: missing ): ("]
    # RE2, as for matchers: what cannot run in linear time is refused
    assert problems("kubernetes.logs", namespace=NS, pod="multi", grep=r"(a+)\1") == [
        r"grep: '(a+)\\1' is not a valid RE2 regex: invalid escape sequence: \1"]
    # a plan tells the previous (crashed) container's lines from the running one's
    logs = ACTIONS["kubernetes.logs"]
    assert logs.describe(params(logs, namespace=NS, pod="multi", previous=True, tail=50)) == (
        f"read the last 50 log lines of the previous (terminated) container of pod {NS}/multi")


def test_logs_extract_the_keys_failing_lines_name(run, ctx, kubeapi: KubeAPIServer) -> None:
    kubeapi.add_pod("cf", NS)
    kubeapi.set_logs(NS, "cf", ["INFO ok key=sboms/T-0/a.json",
                                "ERROR integrity check failed key=sboms/T-1/b.json: mismatch",
                                "ERROR integrity check failed key=sboms/T-2/c.json: mismatch",
                                "ERROR integrity check failed key=sboms/T-1/b.json: mismatch"])
    result = act(run, "kubernetes.logs", ctx, namespace=NS, pod="cf", grep="(?i)integrity",
                 extract=r"key=(sboms/[A-Za-z0-9._/-]+)")
    # only kept (grep-matching) lines, each value once, first seen first
    assert result["extracted"] == ["sboms/T-1/b.json", "sboms/T-2/c.json"]
    assert problems("kubernetes.logs", namespace=NS, pod="cf", extract="key=sboms") == [
        "extract: needs exactly one capture group, has 0"]


def test_an_apiserver_reply_nested_too_deep_is_refused_like_every_remote_answer(
        run, ctx, kubeapi: KubeAPIServer) -> None:
    # A reply becomes a step record, journaled and templated recursively: the one bounded
    # parser refuses it (the same 64 levels as any other backend), and says why
    kubeapi.add_deployment("code-forge", NS)
    deep = '{"kind": "Deployment", "a": ' + "[" * 100 + "]" * 100 + "}"
    kubeapi.inject("GET", r"/deployments/code-forge$", status=200, body=deep)
    record = execute(run, "kubernetes.get", ctx, resource="deploy", namespace=NS,
                     name="code-forge")
    assert (record.outcome, record.attempts) == ("failed", 1), record
    assert record.detail == (f"get deployments in {NS} code-forge: reply refused: JSON is "
                             "nested deeper than 64 levels")
    assert record.result == {"error": "reply"}



# --- get -----------------------------------------------------------------------------------------


def test_get_snapshots_without_managed_fields_and_refuses_secrets(
        run, ctx, kubeapi: KubeAPIServer) -> None:
    kubeapi.add_deployment("code-forge", NS, replicas=3)
    kubeapi.patch("deployments", NS, "code-forge", {"metadata": {"managedFields": [
        {"manager": "kubectl", "operation": "Update"}]}})
    one = act(run, "kubernetes.get", ctx, resource="deploy", namespace=NS, name="code-forge")
    assert one["resource"] == "deployments"
    assert one["object"]["spec"]["replicas"] == 3 and "managedFields" not in one["object"][
        "metadata"]

    pods = act(run, "kubernetes.get", ctx, resource="pods", namespace=NS,
               selector="app=code-forge", limit=2)
    assert (pods["count"], pods["truncated"]) == (2, True)
    ns = act(run, "kubernetes.get", ctx, resource="namespaces", name=NS)
    assert ns["object"]["metadata"]["name"] == NS

    requests = len(kubeapi.requests)
    for resource in ("secrets", "Secret"):
        assert problems("kubernetes.get", resource=resource, namespace=NS, name="x") == [
            "kubernetes.get never reads secrets: a snapshot lands in the audit store and "
            "escalation notes"]
    with pytest.raises(ActionError, match="refuses to read 'secrets'"):
        run(ACTIONS["kubernetes.get"].run({"resource": "secrets", "namespace": NS}, ctx))
    assert len(kubeapi.requests) == requests
    assert problems("kubernetes.get", resource="pods") == ["namespace is required for pods"]


# --- errors: classification and the executor's retries --------------------------------------------


def test_forbidden_and_not_found_fail_at_once(run, ctx, kubeapi: KubeAPIServer) -> None:
    kubeapi.add_deployment("code-forge", NS)
    rule = kubeapi.forbid("patch", "deployments", NS)
    record = execute(run, "kubernetes.rollout_restart", ctx, namespace=NS, name="code-forge")
    assert record.outcome == "failed" and record.attempts == 1 and rule.hits == 1
    assert record.detail.startswith("patch deployment neural-hive-pipeline/code-forge: "
                                    "Forbidden (HTTP 403): ")
    assert 'cannot patch resource "deployments" in API group "apps"' in record.detail
    assert record.result == {"error": "Forbidden", "status": 403}

    record = execute(run, "kubernetes.rollout_restart", ctx, namespace=NS, name="missing")
    assert record.outcome == "failed" and record.attempts == 1
    assert record.detail == ("get deployment neural-hive-pipeline/missing: NotFound (HTTP 404): "
                             'deployments.apps "missing" not found')


@pytest.mark.parametrize("status", [500, 429, 503])
def test_server_errors_are_retried_until_success(run, ctx, kubeapi: KubeAPIServer,
                                                 status: int) -> None:
    kubeapi.add_deployment("code-forge", NS)
    fault = kubeapi.inject("PATCH", r"/deployments/code-forge$", status=status, times=2)
    record = execute(run, "kubernetes.set_env", ctx, namespace=NS, name="code-forge",
                     env={"LOG_LEVEL": "debug"})  # repeatable: the same env twice is one change
    assert record.outcome == "succeeded" and record.attempts == 3 and fault.hits == 2
    assert len(kubeapi.requests_matching("PATCH", "/code-forge$")) == 3
    assert kubeapi.get("deployments", NS, "code-forge")["metadata"]["generation"] == 2
    # a restart must not run twice: a server error may come after it happened; a 429 was
    # refused before the apiserver processed it, so the restart is retried
    kubeapi.inject("PATCH", r"/deployments/code-forge$", status=status, times=2)
    record = execute(run, "kubernetes.rollout_restart", ctx, namespace=NS, name="code-forge")
    expected = ("succeeded", 3, False) if status == 429 else ("failed", 1, True)
    assert (record.outcome, record.attempts, record.uncertain) == expected


def test_a_slow_apiserver_hits_the_step_timeout(run, ctx, kubeapi: KubeAPIServer) -> None:
    kubeapi.add_deployment("code-forge", NS)
    kubeapi.inject("GET", r"/deployments/code-forge$", status=None, delay=1.0)
    record = execute(run, "kubernetes.rollout_restart", ctx, step_timeout=0.3, namespace=NS,
                     name="code-forge")
    # cut off mid-call, the step cannot tell a read from its write: a human checks
    assert record.outcome == "failed" and record.uncertain
    assert record.detail.startswith("timed out after 0.3s (1 attempt(s)); it may or may not")
    assert kubeapi.requests_matching("PATCH") == []


def test_read_timeouts_are_not_retried_by_urllib3_but_by_the_executor(
        run, kubeconfig: Path, kubeapi: KubeAPIServer) -> None:
    backends = Backends(http_timeout=0.3)
    ctx = ActionContext(backends=backends, log=logging.getLogger("t"), execution_id="e1")
    try:
        kubeapi.add_deployment("code-forge", NS)
        kubeapi.inject("GET", r"/deployments/code-forge$", status=None, delay=1.0)
        with pytest.raises(ActionError, match="ReadTimeoutError") as err:
            act(run, "kubernetes.get", ctx, resource="deployments", namespace=NS,
                name="code-forge")
        assert ACTIONS["kubernetes.get"].is_transient(err.value)
        assert len(kubeapi.requests_matching("GET", "/code-forge$")) == 1  # urllib3: no retry
        assert client(backends).api.configuration.retries == 0

        kubeapi.inject("GET", r"/deployments/code-forge$", status=None, delay=1.0)
        record = execute(run, "kubernetes.get", ctx, resource="deployments", namespace=NS,
                         name="code-forge")
        assert record.outcome == "succeeded" and record.attempts == 2
    finally:
        run(backends.close())


def test_an_unreachable_apiserver_is_transient(run, tmp_path: Path, kubeapi: KubeAPIServer,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    path = kubeapi.write_kubeconfig(tmp_path / "dead")
    path.write_text(path.read_text().replace(kubeapi.url, f"http://127.0.0.1:{port}"))
    monkeypatch.setenv("KUBECONFIG", str(path))
    backends = Backends()
    ctx = ActionContext(backends=backends, log=logging.getLogger("t"), execution_id="e1")
    try:
        record = execute(run, "kubernetes.rollout_status", ctx, attempts=2, namespace=NS,
                         name="code-forge", timeout="1s", interval="0.1s")
        # rollout_status rides out blips until its own timeout, then reports the last one
        assert record.outcome == "failed" and "NewConnectionError" in record.detail
        record = execute(run, "kubernetes.rollout_restart", ctx, attempts=2, namespace=NS,
                         name="code-forge")
        assert record.outcome == "failed" and record.attempts == 2
        assert "NewConnectionError" in record.detail and record.result["status"] is None
    finally:
        run(backends.close())


def test_no_kubeconfig_is_a_clear_failure(run, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "absent"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    backends = Backends()
    ctx = ActionContext(backends=backends, log=logging.getLogger("t"), execution_id="e1")
    record = execute(run, "kubernetes.get", ctx, resource="pods", namespace=NS)
    assert record.outcome == "failed" and record.attempts == 1
    assert record.detail.startswith("no Kubernetes configuration (in-cluster or KUBECONFIG)")
    run(backends.close())


def test_in_cluster_configuration(run, tmp_path: Path, kubeapi: KubeAPIServer,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """In a pod: no KUBECONFIG, KUBERNETES_SERVICE_HOST/PORT, the service account's token and
    CA mounted as files. Only the mount's directory is moved (tests cannot write /var/run)."""
    from kubernetes.config import incluster_config

    mount = tmp_path / "serviceaccount"
    mount.mkdir()
    (mount / "token").write_text(kubeapi.token)
    (mount / "ca.crt").write_bytes(certificate()[0].read_bytes())
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(mount / "token"))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(mount / "ca.crt"))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", kubeapi.host)
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(kubeapi.port))
    kubeapi.add_deployment("code-forge", NS)

    def restart() -> StepRecord:
        backends = Backends()
        ctx = ActionContext(backends=backends, log=logging.getLogger("t"), execution_id="e1")
        try:
            return execute(run, "kubernetes.rollout_restart", ctx, kind="deployment",
                           namespace=NS, name="code-forge")
        finally:
            run(backends.close())

    record = restart()  # over TLS, verified with the mounted CA, as the service account
    assert record.outcome == "succeeded", record.detail
    assert kubeapi.get("deployments", NS, "code-forge")["metadata"]["generation"] == 2

    (mount / "token").write_text("a-revoked-token")
    denied = restart()
    assert (denied.outcome, denied.attempts) == ("failed", 1)  # 401 is not transient
    assert "HTTP 401" in denied.detail
    (mount / "ca.crt").write_text("")  # an unusable mount is a clear configuration error
    broken = restart()
    assert broken.outcome == "failed" and "no Kubernetes configuration" in broken.detail


def test_the_client_leaves_the_global_configuration_alone(run, ctx, kubeapi: KubeAPIServer) -> None:
    from kubernetes import client as k8s

    before = k8s.Configuration._default  # what load_kube_config() would replace
    act(run, "kubernetes.get", ctx, resource="namespaces", name="default")
    assert k8s.Configuration._default is before
    assert client(ctx.backends).api.configuration.host == kubeapi.url


# --- through the engine: `remediator replay` ------------------------------------------------------

RULES = """
playbooks:
  - name: code-forge-restart
    description: restart code-forge when its S3 uploads fail
    match: {alertname: CodeForgeS3UploadFailureHigh}
    target: {kind: deployment, namespace: "{{ labels.namespace }}", name: code-forge}
    guards: {cooldown: 10m}
    steps:
      - name: restart
        action: kubernetes.rollout_restart
        params: {kind: deployment, namespace: "{{ labels.namespace }}", name: code-forge}
"""


def replay(tmp_path: Path, *args: str) -> dict[str, Any]:
    return replay_cli(tmp_path, RULES, notification(alert("CodeForgeS3UploadFailureHigh",
                                                           namespace=NS)), *args)


def test_replay_dry_run_then_live(tmp_path: Path, kubeapi: KubeAPIServer,
                                  kubeconfig: Path) -> None:
    assert os.environ["KUBECONFIG"] == str(kubeconfig)
    kubeapi.add_deployment("code-forge", NS, replicas=2)
    (tmp_path / "rules.yaml").write_text(RULES)
    gen = generator()  # what the deploy would grant these rules, the namespace allowed
    kubeapi.grant(doc for ns, perms in gen.required_grants([str(tmp_path / "rules.yaml")],
                                                            [NS]).items()
                  for doc in gen.rbac_documents(ns, perms))

    planned = replay(tmp_path)
    assert planned["outcome"] == "planned"
    assert planned["steps"][0]["detail"] == (
        "would restart deployment neural-hive-pipeline/code-forge: set its pod template "
        "annotation kubectl.kubernetes.io/restartedAt to now (kubectl rollout restart)")
    assert kubeapi.requests_matching("PATCH") == []

    live = replay(tmp_path, "--mode", "live", "--store", new_store(f"sqlite:///{tmp_path / 'r.db'}"))
    (step,) = live["steps"]
    assert live["outcome"] == "succeeded" and step["outcome"] == "succeeded", live
    assert step["mutating"] is True and step["attempts"] == 1
    assert step["detail"].startswith("restart deployment neural-hive-pipeline/code-forge")
    dep = kubeapi.get("deployments", NS, "code-forge")
    assert dep["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT] == step["result"][
        "restarted_at"]
    assert len(kubeapi.requests_matching("PATCH", "/deployments/code-forge$")) == 1



def test_building_the_client_never_blocks_the_event_loop(run, tmp_path: Path,
                                                         kubeapi: KubeAPIServer,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading the kubeconfig runs its credential plugin (EKS, GKE: `aws eks get-token`...,
    seconds) and imports the client: off the loop, which keeps acknowledging webhooks."""
    import yaml

    probe = LoopProbe(tmp_path, {"apiVersion": "client.authentication.k8s.io/v1beta1",
                                 "kind": "ExecCredential", "status": {"token": kubeapi.token}})
    path = kubeapi.write_kubeconfig(tmp_path / "exec-kubeconfig")
    config = yaml.safe_load(path.read_text())
    config["users"][0]["user"] = {"exec": {
        "apiVersion": "client.authentication.k8s.io/v1beta1", "command": probe.argv[0],
        "args": probe.argv[1:]}}
    path.write_text(yaml.safe_dump(config))
    monkeypatch.setenv("KUBECONFIG", str(path))
    kubeapi.add_namespace(NS)
    backends = Backends()
    ctx = ActionContext(backends=backends, log=logging.getLogger("t"), execution_id="e1")
    action = ACTIONS["kubernetes.get"]
    p = params(action, resource="pods", namespace=NS)
    grant(action, p)
    record = StepRecord(name="step", action=action.name, params=p, outcome="planned")
    try:
        run(probe.run(Executor().run(action, p, ctx, record, timeout=60, attempts=1)))
    finally:
        run(backends.close())
    assert record.outcome == "succeeded", record.detail
