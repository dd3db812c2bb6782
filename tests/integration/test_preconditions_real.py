"""Preconditions asked of the real peers (issue 10): a real Prometheus whose query says the
target is healthy, and a real Alertmanager where the alert has already cleared, each stop a
live `remediator serve` from restarting a deployment on the Kubernetes API test server.

Each case also shows the other answer letting the restart through, so the test fails if the
check is inverted or always true: the only difference between the two runs is the peer's answer.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.conftest import write_rules
from tests.kubeapi.rbac import step_documents
from tests.support.alertmanager import make_alert, webhook_config
from tests.support.payloads import alert, notification
from tests.support.procs import free_port
from tests.support.prometheus import prometheus_config
from tests.support.worker import WorkerProcess, http

if TYPE_CHECKING:
    from tests.kubeapi import KubeAPIServer

NS = "neural-hive-pipeline"
RESTART = {"kind": "deployment", "namespace": NS, "name": "code-forge"}

RULES = """
playbooks:
  - name: restart-code-forge
    match: {alertname: CodeForgeErrors}
    target: {kind: deployment, namespace: %(ns)s, name: code-forge}
    guards:
      cooldown: 1s
      precondition: %(precondition)s
    steps:
      - name: restart
        action: kubernetes.rollout_restart
        params: {kind: deployment, namespace: %(ns)s, name: code-forge}
"""


def serve(tmp_path: Path, kubeapi: KubeAPIServer, precondition: str,
          **urls: str) -> WorkerProcess:
    kubeapi.add_deployment("code-forge", NS)
    kubeapi.grant(step_documents("kubernetes.rollout_restart", RESTART, NS))
    rules = write_rules(tmp_path / "rules", RULES % {"ns": NS, "precondition": precondition})
    config = {peer: {"url": url} for peer, url in urls.items()}
    return WorkerProcess(tmp_path, [str(rules)], mode="live", config=config).start()


def decide(w: WorkerProcess, labels: dict[str, str], fingerprint: str) -> dict[str, Any]:
    others = {k: v for k, v in labels.items() if k != "alertname"}
    return w.decision(notification(alert(labels["alertname"], fingerprint=fingerprint, **others)),
                      fingerprint)


def restarts(kubeapi: KubeAPIServer) -> int:
    return len(kubeapi.requests_matching("PATCH", f"/namespaces/{NS}/deployments/code-forge$"))


def test_prometheus_saying_healthy_blocks_the_restart(tmp_path, kubeconfig, kubeapi, exporter,
                                                      prometheus_factory) -> None:
    exporter.set("code_forge_upload_errors", 0, deployment="code-forge")
    prom = prometheus_factory(prometheus_config([exporter.target]))
    prom.wait_for_targets()
    w = serve(tmp_path, kubeapi,
              "{promql: 'code_forge_upload_errors{deployment=\"code-forge\"} > 0'}",
              prometheus=prom.url)
    try:
        labels = {"alertname": "CodeForgeErrors", "deployment": "code-forge"}
        healthy = decide(w, labels, "healthy")
        assert healthy["outcome"] == "blocked", healthy
        assert healthy["reason"].startswith("precondition_false: precondition no longer holds")
        assert restarts(kubeapi) == 0

        exporter.set("code_forge_upload_errors", 7, deployment="code-forge")  # failing again
        prom.wait_for('code_forge_upload_errors{deployment="code-forge"} > 0')
        failing = decide(w, labels, "failing")
        assert failing["outcome"] == "succeeded", failing
        assert restarts(kubeapi) == 1
    finally:
        w.stop()


def test_alertmanager_saying_cleared_blocks_the_restart(tmp_path, kubeconfig, kubeapi,
                                                        alertmanager_factory,
                                                        webhook_receiver) -> None:
    am = alertmanager_factory(webhook_config(webhook_receiver.url))
    cleared = {"alertname": "CodeForgeErrors", "deployment": "code-forge", "pod": "a"}
    am.post_alerts([make_alert(cleared, resolved=True)])
    w = serve(tmp_path, kubeapi, "{alert_firing: true}", alertmanager=am.url)
    try:
        late = decide(w, cleared, "cleared")
        assert late["outcome"] == "blocked", late
        assert late["reason"] == ("precondition_false: CodeForgeErrors is no longer firing at "
                                  "Alertmanager")
        assert restarts(kubeapi) == 0

        firing = {**cleared, "pod": "b"}
        am.post_alerts([make_alert(firing)])
        assert am.alerts(pod="b")
        still = decide(w, firing, "firing")
        assert still["outcome"] == "succeeded", still
        assert restarts(kubeapi) == 1
    finally:
        w.stop()


def test_a_prometheus_that_does_not_answer_is_an_unknown_precondition(
        tmp_path, kubeconfig, kubeapi) -> None:
    """Prometheus down: the check is blind, not false. Its own reason code (in the decision,
    the API's filter, the guard-block metric), escalated with a note, and nothing restarted."""
    w = serve(tmp_path, kubeapi, "{promql: 'code_forge_upload_errors > 0'}",
              prometheus=f"http://127.0.0.1:{free_port()}")
    try:
        blind = decide(w, {"alertname": "CodeForgeErrors", "deployment": "code-forge"}, "blind")
        assert blind["outcome"] == "blocked", blind
        assert blind["reason"].startswith(
            "precondition_unknown: precondition could not be checked, so nothing was done: "), blind
        assert blind["escalation"] is not None, blind
        assert restarts(kubeapi) == 0
        metrics = http("GET", f"{w.url}/metrics")[1]
        assert 'remediator_guard_blocks_total{guard="precondition_unknown"} 1.0' in metrics
    finally:
        w.stop()
