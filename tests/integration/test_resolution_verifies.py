"""`resolution_verifies: false` (rules/hackathon.yaml's service-down playbook): the alert's
resolution while the restart's rollout is waited for is not the restart's verification.

`up == 0` clears once every target Prometheus scrapes now answers, which a rollout reaches
before it completes. The shipped playbook runs in a real `Service` (live) against the
Kubernetes API test server, with a real Prometheus for its queries; the resolution arrives
while `rollout` waits, and the rollout then gets stuck or completes: the run's own steps
decide, where the resolution used to end the run `succeeded`, "verified by the alert's
resolution", whatever the rollout did next.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.support.payloads import alert, notification
from tests.support.prometheus import prometheus_config

if TYPE_CHECKING:
    from tests.kubeapi import KubeAPIServer
    from tests.support.worker import InProcessWorker

RULES = Path(__file__).resolve().parents[2] / "rules" / "hackathon.yaml"
NS, NAME = "default", "hackathon-file-processor"
LABELS = {"severity": "critical", "namespace": NS, "deployment": NAME, "job": NAME}


@pytest.fixture
def down(tmp_path, kubeconfig, kubeapi: KubeAPIServer, exporter, prometheus_factory,
         worker_factory) -> InProcessWorker:
    """The deployment with one of its 4 pods not ready, its new pods held unready (a rollout
    that does not complete until the test says), and the service-down alert firing, its run
    waiting in `rollout` after the restart."""
    kubeapi.add_deployment(NAME, NS, replicas=4)
    pod = kubeapi.list("pods", NS)[0]["metadata"]["name"]
    kubeapi.set_pod_state(NS, pod, ready=False)
    kubeapi.hold_rollout("deployments", NS, NAME)
    prom = prometheus_factory(prometheus_config([exporter.target], job_name=NAME))
    prom.wait_for_targets()
    w = worker_factory(RULES.read_text(), mode="live", prometheus_url=prom.url)
    assert w.post_alerts(notification(alert("HackathonFileProcessorDown", fingerprint="hfp",
                                            **LABELS)))[0] == 202
    waiting_in(w, "rollout")
    assert len(kubeapi.requests_matching("PATCH", f"/namespaces/{NS}/deployments/{NAME}$")) == 1
    return w


def waiting_in(w: InProcessWorker, step: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        for run in w.call(w.service.store.list_executions(10, outcome="running")):
            run = w.call(w.service.store.get_execution(run["id"]))
            if any(s["name"] == step and s["outcome"] == "running" for s in run["steps"]):
                return run
        assert time.monotonic() < deadline, f"no run waiting in {step!r}"
        time.sleep(0.05)


def resolve_mid_rollout(w: InProcessWorker) -> str:
    """The alert's resolution, posted and taken in by the engine (what cut the wait short)
    while the run still waits in `rollout`; the firing run's id."""
    run = waiting_in(w, "rollout")
    assert w.post_alerts(notification(alert("HackathonFileProcessorDown", status="resolved",
                                            fingerprint="hfp", **LABELS)))[0] == 202
    inflight = w.service.engine.inflight

    async def seen() -> bool:
        episode = inflight.episode(run["id"])
        return episode is None or inflight.resolved(episode)  # None: the run has stopped

    deadline = time.monotonic() + 30
    while not w.call(seen()):
        assert time.monotonic() < deadline, "the resolution was never processed"
        time.sleep(0.02)
    return run["id"]


def final(w: InProcessWorker, execution_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while (d := w.call(w.service.store.get_execution(execution_id)))["outcome"] == "running":
        assert time.monotonic() < deadline, d
        time.sleep(0.05)
    return d


def test_a_rollout_stuck_after_the_alert_resolved_escalates(down, kubeapi, tmp_path):
    run_id = resolve_mid_rollout(down)
    kubeapi.hold_rollout("deployments", NS, NAME, fail=True)  # ProgressDeadlineExceeded
    decision = final(down, run_id)
    steps = {s["name"]: s for s in decision["steps"]}
    assert decision["outcome"] == "escalated", decision["reason"]
    assert decision["reason"] == (f'step \'rollout\' failed: deployment {NS}/{NAME}: deployment '
                                  f'"{NAME}" exceeded its progress deadline')
    assert (steps["restart"]["outcome"], steps["rollout"]["outcome"]) == ("succeeded", "failed")
    assert "verify" not in steps
    note = (tmp_path / "escalations" / f"{run_id}.md").read_text()
    assert "exceeded its progress deadline" in note
    [resolved] = [d for d in down.wait_executions(2) if d["status"] == "resolved"]
    assert (resolved["outcome"], resolved["steps"]) == ("resolved", [])


def test_a_rollout_that_completes_after_the_alert_resolved_is_verified_by_its_steps(
        down, kubeapi, tmp_path):
    run_id = resolve_mid_rollout(down)
    kubeapi.release_rollout("deployments", NS, NAME)
    decision = final(down, run_id)
    steps = {s["name"]: s for s in decision["steps"]}
    assert decision["outcome"] == "succeeded", decision["reason"]
    assert steps["rollout"]["outcome"] == "succeeded" and steps["rollout"]["result"]["done"]
    assert steps["verify"]["outcome"] == "succeeded" and steps["verify"]["result"]["met"]
    assert not (tmp_path / "escalations" / f"{run_id}.md").exists()
    assert kubeapi.get("deployments", NS, NAME)["status"]["readyReplicas"] == 4
