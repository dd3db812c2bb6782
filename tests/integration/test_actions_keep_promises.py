"""Actions do what their names promise (issue 10, item 11), against the real peers.

`kubernetes.scale` by delta never moves the other way; `rollout_undo` ignores a ReplicaSet
without a revision; `s3.sample_integrity` never passes a truncated or under-powered sample;
a step's deadline follows its action's own timeout; `replay --mode live` needs the real store;
in dry-run a label that looks like a placeholder is refused like any bad value.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from remediator.actions.backends import Backends
from remediator.actions.base import ActionContext, ActionError
from remediator.actions.registry import ACTIONS
from remediator.actions.s3_integrity import required_sample, upper_bound
from remediator.playbooks.models import build_step
from tests.kubeapi.rbac import step_documents
from tests.support.actions import params
from tests.support.payloads import alert, notification
from tests.support.worker import replay_cli

if TYPE_CHECKING:
    from tests.kubeapi import KubeAPIServer

NS = "neural-hive-pipeline"
BUCKET = "deltacrown-certificates"


@pytest.fixture
def ctx(run):
    backends = Backends()
    yield ActionContext(backends=backends, log=logging.getLogger("t"), execution_id="e1")
    run(backends.close())


def act(run, ctx: ActionContext, name: str, /, kube: KubeAPIServer | None = None,
        **raw: Any) -> dict[str, Any]:
    p = params(ACTIONS[name], **raw)
    if kube is not None:  # exactly the RBAC deploy/kubernetes/generate.py grants this step
        kube.grant(step_documents(name, p, p.get("namespace") or ""))
    return run(ACTIONS[name].run(p, ctx))


# --- kubernetes.scale ----------------------------------------------------------------------------

def test_a_delta_never_moves_replicas_the_other_way(run, kubeconfig, ctx,
                                                    kubeapi: KubeAPIServer) -> None:
    kubeapi.add_deployment("code-forge", NS, replicas=20)
    up = act(run, ctx, "kubernetes.scale", kube=kubeapi, namespace=NS, name="code-forge",
             delta=2, min=2, max=16)
    assert (up["previous"], up["applied"], up["changed"]) == (20, 20, False)  # not down to 16
    assert up["reason"] == "not scaled up: 20 replicas, at or above max 16"
    assert kubeapi.requests_matching("PATCH") == []

    kubeapi.patch("deployments", NS, "code-forge", {"spec": {"replicas": 1}})
    down = act(run, ctx, "kubernetes.scale", kube=kubeapi, namespace=NS, name="code-forge", delta=-1, min=3,
               max=16)
    assert (down["applied"], down["changed"]) == (1, False)  # not up to 3
    assert down["reason"] == "not scaled down: 1 replicas, at or below min 3"

    kubeapi.patch("deployments", NS, "code-forge", {"spec": {"replicas": 14}})
    capped = act(run, ctx, "kubernetes.scale", kube=kubeapi, namespace=NS, name="code-forge", delta=5, min=3,
                 max=16)
    assert (capped["requested"], capped["applied"], capped["clamped"]) == (19, 16, True)
    assert capped["reason"] == "kept within 3..16"
    assert kubeapi.get("deployments", NS, "code-forge")["spec"]["replicas"] == 16


# --- kubernetes.rollout_undo ---------------------------------------------------------------------

def test_a_replicaset_without_a_revision_is_not_history(run, kubeconfig, ctx,
                                                        kubeapi: KubeAPIServer) -> None:
    kubeapi.add_deployment("libervia", NS, env={"LOG_LEVEL": "info"})
    (owned,) = kubeapi.list("replicasets", NS)
    stray = copy.deepcopy(owned)  # same owner, another template, no revision annotation
    meta = stray["metadata"]
    meta["name"], meta["labels"]["pod-template-hash"] = "libervia-stray", "stray"
    for key in ("uid", "resourceVersion", "creationTimestamp"):
        meta.pop(key)
    meta["annotations"].pop("deployment.kubernetes.io/revision")
    stray["spec"]["replicas"] = 0
    for where in (stray["spec"]["selector"]["matchLabels"],
                  stray["spec"]["template"]["metadata"]["labels"]):
        where["pod-template-hash"] = "stray"
    stray["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "LOG_LEVEL",
                                                                  "value": "stray"}]
    kubeapi.add(stray)
    before = kubeapi.get("deployments", NS, "libervia")["spec"]["template"]
    with pytest.raises(ActionError, match="no rollout history found for deployment 'libervia'"):
        act(run, ctx, "kubernetes.rollout_undo", kube=kubeapi, namespace=NS, name="libervia")
    assert kubeapi.get("deployments", NS, "libervia")["spec"]["template"] == before
    assert kubeapi.requests_matching("PATCH") == []


# --- s3.sample_integrity -------------------------------------------------------------------------

@pytest.fixture
def certificates(s3_client) -> int:
    """40 certificates, one of them corrupted (a 2.5 % mismatch rate)."""
    s3_client.create_bucket(Bucket=BUCKET)
    for i in range(40):
        body = f"certificate {i}".encode()
        stored = hashlib.sha256(b"tampered" if i == 7 else body).hexdigest()
        s3_client.put_object(Bucket=BUCKET, Key=f"certificates/c{i:02}.pdf", Body=body,
                             Metadata={"checksum": stored})
    return 40


def test_sample_size_follows_the_threshold_and_confidence() -> None:
    assert required_sample(0.005, 0.95) == 598  # ln(0.05) / ln(0.995)
    assert required_sample(0.01, 0.99) == 459
    assert required_sample(0.05, 0.95) == 59
    # the zero-failure bound: no mismatch in 598 keys bounds the rate below 0.5 % at 95 %
    assert upper_bound(0, 598, 0.95) < 0.005 < upper_bound(0, 597, 0.95)
    assert upper_bound(1, 598, 0.95) > 0.005  # one mismatch needs a larger sample


def test_an_under_powered_or_truncated_sample_never_passes(run, s3_env, ctx, certificates) -> None:
    sample = ACTIONS["s3.sample_integrity"]
    # the shipped deltacrown gate: 0.5 % at 95 % needs 598 keys; 10 prove nothing
    weak = act(run, ctx, "s3.sample_integrity", bucket=BUCKET, prefix="certificates/",
               min_sample=10, max_sample=10, max_mismatch_rate=0.005, seed=1)
    assert weak["sampled"] == 10 and weak["pass"] is False
    assert "under-powered: 598 keys must be sampled" in weak["reason"]
    assert "598 keys sampled" in sample.describe(params(
        sample, bucket=BUCKET, max_mismatch_rate=0.005))

    cut = act(run, ctx, "s3.sample_integrity", bucket=BUCKET, prefix="certificates/",
              max_keys=20, max_mismatch_rate=0.5, seed=1)
    assert cut["truncated"] is True and cut["pass"] is False
    assert cut["reason"].startswith("the listing stopped at max_keys (20)")

    # few enough keys to check them all: the rate is exact, no sampling error
    census = act(run, ctx, "s3.sample_integrity", bucket=BUCKET, prefix="certificates/",
                 max_mismatch_rate=0.005)
    assert (census["sampled"], census["mismatches"], census["pass"]) == (40, 1, False)
    assert census["reason"] == "1 of all 40 keys mismatch"
    lenient = act(run, ctx, "s3.sample_integrity", bucket=BUCKET, prefix="certificates/",
                  max_mismatch_rate=0.05)
    assert lenient["pass"] is True and lenient["sampled"] == 40


# --- step deadlines ------------------------------------------------------------------------------

def test_a_step_deadline_follows_the_actions_own_timeout() -> None:
    step = build_step({"name": "verify", "action": "prometheus.wait_until",
                       "params": {"query": "up == 1", "timeout": "10m"}})
    assert step.timeout is None  # nothing set: derived from the action when it runs
    wait_until = ACTIONS["prometheus.wait_until"]
    assert wait_until.deadline(params(wait_until, query="up == 1", timeout="10m")) == 630
    assert ACTIONS["wait"].deadline(params(ACTIONS["wait"], duration="5m")) == 330
    assert ACTIONS["kubernetes.scale"].deadline({}) == 60  # no own timeout: the default
    assert build_step({"name": "s", "action": "wait", "params": {}, "timeout": "2m"}).timeout == 120


# --- replay --------------------------------------------------------------------------------------

RESTART = """
playbooks:
  - name: restart
    match: {alertname: CodeForgeDown}
    target: {kind: deployment, namespace: NS, name: "{{ labels.deployment }}"}
    guards: {cooldown: 15m}
    steps:
      - name: restart
        action: kubernetes.rollout_restart
        params: {namespace: NS, name: "{{ labels.deployment }}"}
""".replace("NS", NS)


def test_replay_live_without_the_store_is_refused(tmp_path: Path, kubeconfig,
                                                  kubeapi: KubeAPIServer) -> None:
    kubeapi.add_deployment("code-forge", NS)
    (tmp_path / "rules.yaml").write_text(RESTART)
    payload = tmp_path / "payload.json"
    payload.write_text(json.dumps(notification(alert("CodeForgeDown", deployment="code-forge"))))
    proc = subprocess.run(
        [sys.executable, "-m", "remediator.cli", "replay", str(payload), "--rules",
         str(tmp_path / "rules.yaml"), "--mode", "live"],
        capture_output=True, text=True, timeout=60, env=dict(os.environ), check=False)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip() == (
        "remediator replay: --mode live needs --store (the store serve uses), so its pause, "
        "cooldowns, rate limits, circuits and budget apply")
    assert kubeapi.requests_matching("PATCH") == []


@pytest.mark.parametrize("label", ["\u27e8steps.restart.result\u27e9", "code\u27e8forge"])
def test_a_label_that_looks_like_a_placeholder_is_refused_in_dry_run(tmp_path: Path,
                                                                     label: str) -> None:
    decision = replay_cli(tmp_path, RESTART, notification(alert("CodeForgeDown",
                                                                deployment=label)))
    assert decision["outcome"] == "failed", decision
    assert "invalid target" in decision["reason"]
    # past the target too: a step's own parameter from a label is refused, not "planned"
    rules = RESTART.replace('name: "{{ labels.deployment }}"}\n    guards',
                            'name: code-forge}\n    guards')
    decision = replay_cli(tmp_path, rules, notification(alert("CodeForgeDown", deployment=label)))
    (step,) = decision["steps"]
    assert (step["outcome"], decision["outcome"]) == ("failed", "failed"), decision
    assert step["detail"].startswith("refused: parameter 'name': must be a DNS-1123 subdomain")


SCALE_ON_RESULT = """
playbooks:
  - name: scale
    match: {alertname: CodeForgeDown}
    target: {kind: deployment, namespace: NS, name: code-forge}
    guards: {cooldown: 15m}
    steps:
      - name: dep
        action: kubernetes.get
        params: {resource: deployments, namespace: NS, name: code-forge}
      - name: scale
        action: kubernetes.scale
        params:
          namespace: "{{ labels.namespace }}"
          name: code-forge
          replicas: "{{ steps.dep.result.get('spec', {}).get('replicas', 1) + 1 }}"
          min: 1
          max: 10
""".replace("NS", NS)


@pytest.mark.parametrize("label", ["../kube-system", "\u27e8steps.dep.result\u27e9"])
def test_a_parameter_computed_on_a_result_hides_no_bad_label_in_dry_run(tmp_path: Path,
                                                                        label: str) -> None:
    """One parameter computes on an earlier result (a plan only has its placeholder), another
    comes from a label: that label is still checked, and refused as the live run would, not
    planned behind the parameter that cannot be known yet."""
    decision = replay_cli(tmp_path, SCALE_ON_RESULT,
                          notification(alert("CodeForgeDown", namespace=label)))
    step = decision["steps"][-1]
    assert (step["outcome"], decision["outcome"]) == ("failed", "failed"), decision
    assert step["detail"].startswith("refused: parameter 'namespace'"), step["detail"]
    # A good label: the step is planned, as one whose parameter is a placeholder is.
    decision = replay_cli(tmp_path, SCALE_ON_RESULT,
                          notification(alert("CodeForgeDown", namespace=NS)))
    step = decision["steps"][-1]
    assert (step["outcome"], decision["outcome"]) == ("planned", "planned"), decision
    # The replica count it will compute stands as its template says it.
    assert step["detail"] == (
        f"would scale deployment {NS}/code-forge to \u27e8steps.dep.result.get('spec', {{}})"
        ".get('replicas', 1) + 1\u27e9 replicas (kept within 1..10)"), step
    assert step["params"]["namespace"] == NS
