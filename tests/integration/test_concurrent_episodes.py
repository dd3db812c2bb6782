"""An alert's firing, its resolution and their duplicates arriving together, processed at
the same time (on PostgreSQL, claimed in one batch and run over several pooled
connections): every acknowledged alert gets exactly one decision of its own, a duplicate
none, and a change is made at most once and reverted at most once, in that order.

This is what a storm's decision count rests on: it equals the alerts acknowledged (inbox
items), never fewer (two decisions merged, or one lost) nor more (a duplicate decided)."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter, defaultdict

import pytest

from remediator.alerts import notification_from_dict
from tests.support.payloads import alert, notification
from tests.support.worker import loopback_guards

RULES = """
playbooks:
  - name: debug-logging
    match: {alertname: CertS3Degraded}
    target: {kind: deployment, namespace: demo, name: "{{ labels.deployment }}"}
    guards: {rate_limit: {max: 10, window: 1h}}
    steps:
      - name: enable_debug
        action: http.request
        params: {url: "%(url)s", method: POST, json: {fp: "{{ alert.fingerprint }}", to: DEBUG},
                 timeout: 60s}
    on_resolved:
      - name: back_to_info
        action: http.request
        params: {url: "%(url)s", method: POST, json: {fp: "{{ alert.fingerprint }}", to: INFO}}
"""
EPISODES = 24


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/episodes.db"
    return request.getfixturevalue("postgres_url")


def _episode(i: int, status: str) -> dict:
    return alert("CertS3Degraded", status=status, fingerprint=f"ep{i:03d}", deployment=f"d{i}")


def _intake(w, payloads: list[dict]) -> list:
    """Every payload handed to intake in one loop iteration: they share commits, and the
    dispatcher claims them (and so runs them) side by side."""
    async def together() -> list:
        return await asyncio.gather(*(w.service.intake(notification_from_dict(p))
                                      for p in payloads))
    return w.call(together())


def _settled(w, count: int) -> list[dict]:
    w.wait_idle(timeout=120)
    decisions = w.wait_executions(count, timeout=120)
    assert w.call(w.service.store.pending_count()) == 0
    return decisions


def _one_decision_each(w, decisions: list[dict]) -> dict[tuple[str, str], dict]:
    keys = Counter((d["fingerprint"], d["status"]) for d in decisions)
    assert set(keys.values()) == {1}, [k for k, n in keys.items() if n > 1]
    assert len(keys) == 2 * EPISODES
    counted = sum(s.value for m in w.service.metrics.executions.collect() for s in m.samples
                  if s.name.endswith("_total"))
    assert counted == 2 * EPISODES  # the storm bench's count: none lost, none twice
    return {(d["fingerprint"], d["status"]): d for d in decisions}


def _calls(receiver) -> dict[str, list[str]]:
    per_episode: dict[str, list[str]] = defaultdict(list)
    for d in receiver.deliveries:
        per_episode[d.body["fp"]].append(d.body["to"])
    return per_episode


def test_firing_and_resolution_acknowledged_together_are_two_decisions_and_no_change(
        worker_factory, webhook_receiver, store):
    """A backlog drained after an outage: each episode's firing and resolution in one
    notification, delivered twice (Alertmanager retrying, or an HA pair)."""
    w = worker_factory(RULES % {"url": webhook_receiver.url}, mode="live", store=store,
                       guards=loopback_guards(budget_max=10_000))
    payloads = [notification(_episode(i, "firing"), _episode(i, "resolved"))
                for i in range(EPISODES)]
    acked = _intake(w, payloads + payloads)
    assert sum(r.accepted for r in acked) == 2 * EPISODES
    assert sum(r.duplicates for r in acked) == 2 * EPISODES
    decisions = _one_decision_each(w, _settled(w, 2 * EPISODES))
    for i in range(EPISODES):
        firing, resolved = decisions[f"ep{i:03d}", "firing"], decisions[f"ep{i:03d}", "resolved"]
        assert firing["outcome"] == "resolved", firing["reason"]
        assert resolved["outcome"] == "resolved", resolved["reason"]
        assert "changed nothing" in resolved["reason"]
    assert webhook_receiver.deliveries == []  # nothing changed after its resolution was in


def test_a_resolution_arriving_during_the_change_reverts_it_once_after_it(
        worker_factory, webhook_receiver, store):
    """Some changes in flight (the receiver holds them) when the resolutions and their
    duplicates are acknowledged: each is reverted once, after it was answered, though call
    slots are free (the changes held would otherwise time out, fail uncertain, and be
    reverted as such: correctly, but not this test's case); every other episode is decided
    meanwhile, a change either made and reverted or never made."""
    held = {f"ep{i:03d}" for i in range(4)}
    release = threading.Event()
    webhook_receiver.on_post = lambda d: (d.body["to"] == "DEBUG" and d.body["fp"] in held
                                          and release.wait(60))
    w = worker_factory(RULES % {"url": webhook_receiver.url}, mode="live", store=store,
                       workers=16, backend_concurrency=16, guards=loopback_guards(budget_max=10_000))
    _intake(w, [notification(_episode(i, "firing")) for i in range(EPISODES)])
    for fp in held:
        webhook_receiver.wait_for(lambda d, fp=fp: d.body == {"fp": fp, "to": "DEBUG"})
    resolutions = [notification(_episode(i, "resolved")) for i in range(EPISODES)]
    _intake(w, resolutions + resolutions + [notification(_episode(0, "firing"))])
    w.wait_executions(2 * EPISODES - 2 * len(held), timeout=120)  # all but the held ones
    assert not any(d.body["to"] == "INFO" and d.body["fp"] in held
                   for d in webhook_receiver.deliveries)  # their reverts wait
    release.set()
    decisions = _one_decision_each(w, _settled(w, 2 * EPISODES))
    calls = _calls(webhook_receiver)
    assert all(calls[fp] == ["DEBUG", "INFO"] for fp in held), calls
    for i in range(EPISODES):
        fp = f"ep{i:03d}"
        assert calls.get(fp, []) in ([], ["DEBUG", "INFO"]), (fp, calls[fp])
        changed = bool(calls.get(fp))
        assert decisions[fp, "firing"]["outcome"] == ("succeeded" if changed else "resolved")
        assert decisions[fp, "resolved"]["outcome"] == "resolved"
