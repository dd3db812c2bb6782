"""A resolution's `on_resolved` revert of its own firing run's change is not held back by the
cooldown of another playbook's change of the same target (DeltaCrown: the outage playbook's
read flag flip between partial-degradation's LOG_LEVEL=DEBUG and its revert left DEBUG on).
It is still a change: the next firing episode is cooled down by it, a flapping alert toggles
the target no faster than the cooldown allows, and the rate limit, budget and pause hold it.

A real Service (live, the Kubernetes actions' own client) against the Kubernetes API test
server, on a simulated clock: the deployment's env is what the test reads.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from remediator.alerts import parse_notification
from remediator.config import Config
from remediator.engine.executor import Executor
from remediator.playtest import FakeClock
from remediator.service import Service
from tests.e2e.seed import env_of
from tests.support.payloads import alert, notification
from tests.support.worker import loopback_guards

START = 1_767_607_200.0  # 2026-01-05T10:00:00Z
NS, APP = "deltacrown", "deltacrown"

RULES = """
playbooks:
  - name: debug-logging
    match: {alertname: SaveFailures}
    target: {kind: deployment, namespace: deltacrown, name: deltacrown}
    guards: {cooldown: 30m, rate_limit: {max: 4, window: 1h}}
    steps:
      - {name: debug, action: kubernetes.set_env,
         params: {namespace: deltacrown, name: deltacrown, env: {LOG_LEVEL: DEBUG}}}
    on_resolved:
      - {name: info, action: kubernetes.set_env,
         params: {namespace: deltacrown, name: deltacrown, env: {LOG_LEVEL: INFO}}}
    escalation: {severity: warning}
  - name: read-fallback
    match: {alertname: ReadFallback}
    target: {kind: deployment, namespace: deltacrown, name: deltacrown}
    guards: {rate_limit: {max: 20, window: 1h}}
    steps:
      - {name: local, action: kubernetes.set_env,
         params: {namespace: deltacrown, name: deltacrown, env: {READ_PRIMARY: "false"}}}
    on_resolved:
      - {name: s3, action: kubernetes.set_env,
         params: {namespace: deltacrown, name: deltacrown, env: {READ_PRIMARY: "true"}}}
    escalation: {severity: critical}
"""


class World:
    """The deployment in the Kubernetes API test server, and a live Service on a fake clock."""

    def __init__(self, tmp: Path, kubeapi: Any, rules_text: str = RULES,
                 level: str = "INFO", **guards: Any):
        kubeapi.add_namespace(NS)
        kubeapi.add_deployment(APP, NS, replicas=1, env={"LOG_LEVEL": level,
                                                         "READ_PRIMARY": "true"})
        self.kubeapi = kubeapi
        rules = tmp / "rules"
        rules.mkdir(parents=True)
        (rules / "deltacrown.yaml").write_text(textwrap.dedent(rules_text))
        self.clock = FakeClock(START)
        self.service = Service(
            Config(rules=[str(rules)], store=f"sqlite:///{tmp}/store.db", mode="live",
                   escalation_dir=str(tmp / "notes"), guards=loopback_guards(**guards)),
            clock=self.clock, sleep=self.clock.sleep, executor=Executor(retry_wait=0))
        # LOG_LEVEL as it changes: (seconds since START, value)
        self.levels: list[tuple[float, str]] = [(-1.0, self.env()["LOG_LEVEL"])]

    async def send(self, name: str, n: int, at: float, status: str = "firing") -> dict:
        """Episode `n` of alert `name` (its own startsAt), `at` seconds after START."""
        self.clock.now = START + at
        payload = alert(name, fingerprint=name, status=status, namespace=NS,
                        starts_at=f"2026-01-05T{10 + n // 60:02d}:{n % 60:02d}:00Z")
        await self.service.intake(parse_notification(json.dumps(notification(payload)).encode()))
        [decision] = await self.service.drain()
        level = self.env()["LOG_LEVEL"]
        if not self.levels or self.levels[-1][1] != level:
            self.levels.append((at, level))
        return decision

    def env(self) -> dict[str, str]:
        return env_of(self.kubeapi, NS, APP)


def test_the_revert_is_not_held_back_by_another_playbooks_change_after_it(
        tmp_path, kubeconfig, kubeapi, run):
    """LOG_LEVEL=DEBUG, then the outage's read flag flip 5 min later, then the degradation
    resolves: the revert runs (it was `blocked: cooldown`, DEBUG left on), and still counts
    as a change: the next episode 10 min on is cooled down by it."""
    w = World(tmp_path, kubeapi)
    run(w.service.start(dispatch=False))
    assert run(w.send("SaveFailures", 0, at=0))["outcome"] == "succeeded"
    assert run(w.send("ReadFallback", 5, at=300))["outcome"] == "succeeded"
    assert w.env() == {"LOG_LEVEL": "DEBUG", "READ_PRIMARY": "false"}
    reverted = run(w.send("SaveFailures", 0, at=1200, status="resolved"))
    assert reverted["outcome"] == "resolved", reverted["reason"]
    assert [(s["name"], s["outcome"]) for s in reverted["steps"]] == [("info", "succeeded")]
    assert w.env() == {"LOG_LEVEL": "INFO", "READ_PRIMARY": "false"}  # reads stay local
    again = run(w.send("SaveFailures", 30, at=1800))
    assert again["outcome"] == "blocked", again["reason"]
    assert again["reason"] == ("cooldown: deltacrown/deployment/deltacrown was last changed at "
                               "2026-01-05T10:20:00Z; cooldown 30m ends at 2026-01-05T10:50:00Z")
    assert w.env()["LOG_LEVEL"] == "INFO"
    run(w.service.stop())


def test_the_revert_is_not_held_back_by_a_flip_back_before_it(tmp_path, kubeconfig, kubeapi, run):
    """The outage first, DEBUG 35 min on (outside the cooldown), the outage's resolution flips
    reads back at 40 min, the degradation resolves at 50: the flip back no longer holds the
    revert back."""
    w = World(tmp_path, kubeapi)
    run(w.service.start(dispatch=False))
    assert run(w.send("ReadFallback", 0, at=0))["outcome"] == "succeeded"
    assert run(w.send("SaveFailures", 35, at=35 * 60))["outcome"] == "succeeded"
    assert run(w.send("ReadFallback", 0, at=40 * 60, status="resolved"))["outcome"] == "resolved"
    assert w.env() == {"LOG_LEVEL": "DEBUG", "READ_PRIMARY": "true"}
    reverted = run(w.send("SaveFailures", 35, at=50 * 60, status="resolved"))
    assert reverted["outcome"] == "resolved", reverted["reason"]
    assert w.env() == {"LOG_LEVEL": "INFO", "READ_PRIMARY": "true"}
    run(w.service.stop())


@pytest.mark.parametrize("when", ["changed", "always"])
def test_a_dry_run_plans_the_revert_as_a_live_run_makes_it(tmp_path, kubeconfig, kubeapi, run,
                                                           when):
    """debug-logging in dry-run (the outage playbook live): its resolution's plan is the
    revert, not `blocked: cooldown` by the live read flag flip, since live it is not (after
    its firing run's change, `on_resolved_when: always` too)."""
    dry = RULES.replace("  - name: debug-logging\n", "  - name: debug-logging\n    dry_run: true\n"
                        f"    on_resolved_when: {when}\n")
    w = World(tmp_path, kubeapi, rules_text=dry)
    run(w.service.start(dispatch=False))
    assert run(w.send("SaveFailures", 0, at=0))["outcome"] == "planned"
    assert run(w.send("ReadFallback", 5, at=300))["outcome"] == "succeeded"
    planned = run(w.send("SaveFailures", 0, at=1200, status="resolved"))
    assert planned["outcome"] == "resolved", planned["reason"]
    assert [(s["name"], s["outcome"]) for s in planned["steps"]] == [("info", "planned")]
    assert w.env() == {"LOG_LEVEL": "INFO", "READ_PRIMARY": "false"}  # nothing ran
    run(w.service.stop())


def test_a_debug_a_human_set_before_the_alert_is_not_reverted(tmp_path, kubeconfig, kubeapi,
                                                              run):
    """A human turned DEBUG on to investigate; the alert's firing run sets DEBUG, already set
    (`changed: false`, no rollout): it changed nothing, so its resolution reverts nothing (it
    turned the human's DEBUG off, with a rolling restart)."""
    w = World(tmp_path, kubeapi, level="DEBUG")  # as `kubectl set env` left it
    run(w.service.start(dispatch=False))
    fired = run(w.send("SaveFailures", 0, at=0))
    assert fired["outcome"] == "succeeded" and fired["steps"][0]["result"]["changed"] is False
    left = run(w.send("SaveFailures", 0, at=600, status="resolved"))
    assert (left["outcome"], left["steps"]) == ("resolved", [])
    assert left["reason"] == "the firing run changed nothing, so on_resolved has nothing to revert"
    assert w.env()["LOG_LEVEL"] == "DEBUG"
    run(w.service.stop())


def test_the_revert_still_obeys_the_global_budget(tmp_path, kubeconfig, kubeapi, run):
    """Only the cooldown lets it through: with the global budget spent (DEBUG, the flip and
    the flip back), the revert is refused by the budget, and a human is told DEBUG stays."""
    w = World(tmp_path, kubeapi, budget_max=3)
    run(w.service.start(dispatch=False))
    run(w.send("SaveFailures", 0, at=0))
    run(w.send("ReadFallback", 1, at=60))
    run(w.send("ReadFallback", 1, at=120, status="resolved"))
    held = run(w.send("SaveFailures", 0, at=180, status="resolved"))
    assert held["outcome"] == "blocked", held
    assert held["reason"].startswith("rate_limited: global budget spent: 3 of max 3"), \
        held["reason"]
    assert held["escalation"] is not None and w.env()["LOG_LEVEL"] == "DEBUG"
    run(w.service.stop())


def test_a_flapping_alert_toggles_no_faster_than_its_cooldown_and_never_leaves_debug_on(
        tmp_path, kubeconfig, kubeapi, run):
    """The save-failure alert fires and resolves every minute for two hours (a new episode
    every two minutes). Each time DEBUG goes on the outage flaps before the degradation
    resolves (its flip and flip back: what held the revert back), and every 40 minutes it
    flaps on its own too. DEBUG goes on only 30 min or more after any earlier change of the
    deployment (the reverts and the flips count), is reverted by its own episode's resolution
    the minute after, never left on; LOG_LEVEL changes no more often than the same alert
    flapping alone makes it change."""
    w = World(tmp_path / "flips", kubeapi)
    run(w.service.start(dispatch=False))
    changes: list[float] = []  # every change of the deployment, the flips included

    def outage(n: int, at: float) -> None:
        run(w.send("ReadFallback", 2 * n, at=at))
        run(w.send("ReadFallback", 2 * n, at=at + 10, status="resolved"))
        changes.extend([at, at + 10])
        assert w.env()["READ_PRIMARY"] == "true"

    for n in range(60):
        at = n * 120.0
        fired = run(w.send("SaveFailures", 2 * n, at=at))
        if fired["outcome"] == "succeeded":
            assert all(at - c >= 1800 for c in changes), (at, changes)
            changes.append(at)
            outage(n, at + 20)
        else:
            assert fired["outcome"] == "blocked", fired  # by the cooldown, or the rate limit
            assert fired["reason"].startswith(("cooldown:", "rate_limited:")), fired["reason"]
        resolved = run(w.send("SaveFailures", 2 * n, at=at + 60, status="resolved"))
        assert w.env()["LOG_LEVEL"] == "INFO", (n, resolved["outcome"], resolved["reason"])
        if fired["outcome"] == "succeeded":
            changes.append(at + 60)
        if n % 20 == 10:
            outage(n, at + 80)
    debug_on = [at for at, level in w.levels if level == "DEBUG"]
    assert debug_on and len(w.levels) == 1 + 2 * len(debug_on)  # INFO, then DEBUG/INFO pairs
    run(w.service.stop())
    # The same alert flapping alone, on a fresh store and deployment.
    kubeapi.reset()
    alone = World(tmp_path / "alone", kubeapi)
    run(alone.service.start(dispatch=False))
    for n in range(60):
        run(alone.send("SaveFailures", 2 * n, at=n * 120.0))
        run(alone.send("SaveFailures", 2 * n, at=n * 120.0 + 60, status="resolved"))
    assert len(w.levels) <= len(alone.levels) == 1 + 2 * 4  # one DEBUG per 32 min, 2 hours
    run(alone.service.stop())
