"""A circuit breaker is judged under its target's lock: `max_refires` successful runs of a
playbook on a target in the window, never one more, whichever run gets the target first.

The circuit's count was read before the target lock was taken. A firing that read it
(no success yet) and then waited for the lock while another run of the playbook held the
target (a run on another replica, or one changing other objects through a step's own
`target:`), or whose two statements another replica's whole run fell between, took the
lock once that run's success was recorded and changed the target once more than the
circuit allows. Real stores (SQLite in process, PostgreSQL with two replicas on one
database); mutations are counted by the recording runner of test_guards.
"""

from __future__ import annotations

import asyncio
import json
import textwrap
from typing import Any

from remediator.alerts import dedupe_key, parse_notification
from tests.integration.test_guards import Harness, web
from tests.support.payloads import alert, notification

CIRCUIT = "{rate_limit: {max: 10, window: 1h}, circuit_breaker: {max_refires: 1, window: 1h}}"

# A playbook on one target (the proxy) whose step restarts the deployment its alert names:
# alerts about two deployments are two remedies, so the second waits for the first's lock
# instead of being coalesced into it; both count on the proxy's circuit.
PROXY = """
playbooks:
  - name: proxy-web
    match: {alertname: ProxyDown}
    target: {kind: deployment, namespace: prod, name: proxy}
    guards: {rate_limit: {max: 10, window: 1h}, circuit_breaker: {max_refires: 1, window: 1h}}
    steps:
      - name: restart_backend
        action: http.request
        target: {kind: deployment, namespace: prod, name: "{{ labels.deployment }}"}
        params: {url: "http://127.0.0.1:9/restart", method: POST}
"""


def _tripped(decision: dict[str, Any]) -> bool:
    return decision["outcome"] == "blocked" and decision["reason"].startswith(
        "circuit_open: remediation is not working")


def test_a_firing_that_waited_for_the_target_sees_the_success_it_waited_for(tmp_path, run):
    h = Harness(tmp_path, "{cooldown: 1m}", slow=0.3)
    (tmp_path / "rules" / "proxy.yaml").write_text(textwrap.dedent(PROXY))
    run(h.start())
    decisions = run(h.fire(*(alert("ProxyDown", namespace="prod", deployment=name,
                                   fingerprint=name) for name in ("web", "api"))))
    first, second = sorted(decisions, key=lambda d: d["outcome"] != "succeeded")
    assert first["outcome"] == "succeeded" and h.calls == [first["id"]], decisions
    # It waited for the first run, read the circuit again once it held the target: tripped.
    assert _tripped(second) and "after 1 successful remediations" in second["reason"], (
        second["outcome"], second["reason"])
    assert second["escalation"] is not None  # tripped: a human is told, once
    notes = [p.read_text() for p in h.note_files()]
    assert sum("remediation is not working" in n for n in notes) == 1
    # The target was let go: the circuit, not a lock left behind, blocks the next firing.
    [again] = run(h.fire(alert("ProxyDown", namespace="prod", deployment="db",
                               fingerprint="db"), at=60))
    assert again["reason"].startswith("circuit_open: circuit for proxy-web on "
                                      "prod/deployment/proxy open since"), again
    assert run(_free(h, "prod/deployment/proxy"))
    assert h.calls == [first["id"]]
    run(h.service.stop())


async def _free(h: Harness, target: str) -> bool:
    """Whether no execution holds `target` (nor, in this process, anything at all)."""
    taken = await h.service.store.acquire_lock(target, "probe") is None
    await h.service.store.release_locks("probe")
    return taken and not h.service.engine.guards._locked_by


async def _intake(h: Harness, *alerts: dict) -> None:
    await h.service.intake(parse_notification(json.dumps(notification(*alerts)).encode()))


async def _process(h: Harness, fired: dict) -> dict:
    """Claim this alert on `h`'s replica and decide it there."""
    item = await h.service.store.claim_key(dedupe_key("web", fired["startsAt"], "firing"))
    assert item is not None
    [decision] = await h.service.engine.process(item)
    return decision


def _replicas(tmp_path, url: str, slow: float = 0.0) -> tuple[Harness, Harness]:
    replicas = []
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        h = Harness(tmp_path / name, CIRCUIT, slow=slow)
        h.cfg.store = url
        replicas.append(h)
    return replicas[0], replicas[1]


def test_postgres_a_firing_waiting_for_another_replicas_run_sees_its_success(
        tmp_path, run, postgres_url):
    """Replica one's firing waits for the target held by replica two's run (it cannot tell
    that run's remedy from its own): once that run's success is recorded and the target
    let go, the circuit it read before waiting was one short."""
    one, two = _replicas(tmp_path, postgres_url, slow=1.0)
    run(one.start())
    run(two.start())

    async def scenario() -> tuple[dict, dict]:
        await _intake(two, web(0))
        await _intake(one, web(5))
        running = asyncio.create_task(_process(two, web(0)))
        while not two.calls:  # replica two's run holds the target and is changing it
            await asyncio.sleep(0.01)
        waiting = asyncio.create_task(_process(one, web(5)))  # reads the circuit, waits
        return await running, await waiting

    ran, waited = run(scenario())
    assert ran["outcome"] == "succeeded", ran
    assert _tripped(waited), (waited["outcome"], waited["reason"], one.calls)
    assert two.calls == [ran["id"]] and one.calls == []
    assert run(_free(one, "prod/deployment/web")) and run(_free(two, "prod/deployment/web"))
    run(one.service.stop())
    run(two.service.stop())


def test_postgres_a_run_between_a_firings_circuit_read_and_its_lock_is_seen(
        tmp_path, run, postgres_url):
    """No wait at all: another replica's whole run (lock, change, success, release) falls
    between the firing's circuit read and its lock, two statements on PostgreSQL."""
    one, two = _replicas(tmp_path, postgres_url)
    run(one.start())
    run(two.start())
    store, read, seen = one.service.store, one.service.store.state_and_count, []

    async def meanwhile(*args: Any) -> Any:
        answer = await read(*args)
        if not seen:  # replica one's first circuit read: replica two runs, then it goes on
            seen.append(await _process(two, web(0)))
        return answer

    store.state_and_count = meanwhile

    async def scenario() -> dict:
        await _intake(two, web(0))
        await _intake(one, web(5))
        return await _process(one, web(5))

    late = run(scenario())
    [ran] = seen
    assert ran["outcome"] == "succeeded" and two.calls == [ran["id"]], (ran, late)
    assert _tripped(late), (late["outcome"], late["reason"], one.calls)
    assert one.calls == []
    assert run(_free(one, "prod/deployment/web")) and run(_free(two, "prod/deployment/web"))
    run(one.service.stop())
    run(two.service.stop())
