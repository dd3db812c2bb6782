"""The live storm's peers: the end-to-end stack (tests/e2e/harness.py), without its worker.

`remediator serve --mode live` with the shipped rules/ acts on what the e2e tests run, started
by the same modules: the project's Kubernetes API test server seeded with the five systems'
workloads (pods/exec runs real processes), moto S3 over HTTP behind its fault proxy, a
private dockerd with Libervia's and 3dPot's compose containers, Prometheus with the project's
alert and recording rules, Alertmanager with its routes (escalations reach it), the cluster
Services' doubles. Everything listens on 127.0.0.1; no container has a network.

The systems are healthy: every series the rules and playbooks query flows, at no failure, so
ratios are defined and fine. The storm is alerts the systems no longer justify (a flapping
rule, a re-sent backlog): playbooks gather their evidence for real, their checks and
preconditions refuse to change what is fine, and guards coalesce or block the rest.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml
from debian import ensure

from tests.e2e import seed
from tests.e2e.harness import DEPLOY, TEST_TIMINGS, Stack
from tests.support.docker import start_dockerd

PACKAGES = {"prometheus": "prometheus", "prometheus-alertmanager": "prometheus-alertmanager",
            "amtool": "prometheus-alertmanager", "dockerd": "docker.io",
            "/bin/busybox": "busybox-static"}


def healthy(stack: Stack) -> None:
    """Every system's traffic flowing without failures (0/0 would leave ratios undefined and a
    verify step such as `prometheus.wait_until ... < 0.05` waiting out its timeout)."""
    t = stack.traffic
    t.mix([(seed.UPLOADS, seed.UPLOAD_OK, 1.0), (seed.UPLOADS, seed.UPLOAD_FAILED, 0.0)])
    t.mix([(seed.INTEGRITY, {"status": "success"}, 1.0)])
    t.mix((seed.LATENCY, {"le": le, "operation": "upload"}, 1.0) for le in seed.LATENCY_BUCKETS)
    t.mix([(seed.CERT_READS, {}, 1.0), (seed.CERT_FALLBACKS, {}, 0.0)])
    t.mix([(seed.CERT_SAVES, {}, 1.0), (seed.CERT_SAVE_FAILS, {}, 0.0)])
    t.mix([(seed.HTTP_3DPOT, seed.HTTP_3DPOT_OK, 1.0), (seed.HTTP_3DPOT, seed.HTTP_3DPOT_5XX, 0.0)])
    for pod in stack.cpu_pods:  # 0.1 of a 0.5-core request: 20 %
        stack.traffic.rate(seed.CPU, 0.1, **seed.cpu_labels(pod))


def project_timings(stack: Stack) -> None:
    """Alertmanager back on deploy/alertmanager's own group_wait, group_interval and
    repeat_interval (the stack's receivers kept). The e2e timings (1-2 s) exist so that tests
    need not wait; in a storm they make it re-send every escalation group, thousands of
    alerts, every second to the humans' recorder, which keeps each delivery: load and memory
    that no deployment sees and that the measured server would compete with."""
    ours = yaml.safe_load((DEPLOY / "alertmanager" / "alertmanager.yml").read_text())
    config = yaml.safe_load(stack.am_config)

    def restore(route: dict[str, Any], project: dict[str, Any]) -> None:
        for key in TEST_TIMINGS:
            if key in project:
                route[key] = project[key]
            else:
                route.pop(key, None)
        for child, theirs in zip(route.get("routes") or [], project.get("routes") or [],
                                 strict=True):
            restore(child, theirs)

    restore(config["route"], ours["route"])
    stack.alertmanager.reload(yaml.safe_dump(config, sort_keys=False))


def production_config(path: Path, prometheus: str, alertmanager: str, escalation_dir: Path,
                      **changes: Any) -> Path:
    """deploy/kubernetes/config.yaml with its peers at these URLs (the Alertmanager escalation
    sink too) and notes in `escalation_dir`; listen, store, rules and log level come from the
    bench's command line; `changes` replace top-level keys."""
    cfg = yaml.safe_load((DEPLOY / "kubernetes" / "config.yaml").read_text())
    for key in ("listen", "store", "rules", "log_level"):
        cfg.pop(key, None)
    cfg["prometheus"] = {"url": prometheus}
    cfg["alertmanager"] = {"url": alertmanager}
    cfg["escalation"]["dir"] = str(escalation_dir)
    for sink in cfg["escalation"].get("sinks", {}).values():
        if "url" in sink:
            sink["url"] = alertmanager
    cfg.update(changes)
    path.write_text(yaml.safe_dump(cfg))
    return path


def live_config(stack: Stack, path: Path) -> Path:
    """The production config pointed at the stack, live. One process runs both deployments'
    playbooks, as the e2e worker does, so deploy/compose/config.yaml's compose projects are
    allowed too; every other guard (namespaces, the one bucket, 20 mutations an hour) is the
    shipped one."""
    guards = yaml.safe_load((DEPLOY / "kubernetes" / "config.yaml").read_text())["guards"]
    compose = yaml.safe_load((DEPLOY / "compose" / "config.yaml").read_text())["guards"]
    guards["compose_projects"] = compose["compose_projects"]
    return production_config(path, stack.prometheus.url, stack.alertmanager.url,
                             stack.escalation_dir, mode="live", guards=guards)


class LivePeers:
    """One private dockerd for the whole run; a fresh stack per storm (`fresh`), so every
    storm meets the same seeded world."""

    def __init__(self, root: Path) -> None:
        ensure(PACKAGES)
        self.root = root
        self.engine = start_dockerd()
        self.stack: Stack | None = None
        self.started = 0

    def fresh(self) -> tuple[Stack, float]:
        """A new stack, its worker stopped (the bench runs its own server); seconds taken."""
        t0 = time.perf_counter()
        self.stop_stack()
        self.engine.remove_all()
        self.started += 1
        self.stack = Stack(self.root / f"stack{self.started}", self.engine).start()
        self.stack.worker.stop()
        project_timings(self.stack)
        healthy(self.stack)
        return self.stack, time.perf_counter() - t0

    def env(self) -> dict[str, Any]:
        assert self.stack is not None
        return self.stack.worker_env()

    def stop_stack(self) -> None:
        if self.stack is not None:
            self.stack.stop()
            self.stack = None

    def stop(self) -> None:
        try:
            self.stop_stack()
        finally:
            self.engine.stop()
