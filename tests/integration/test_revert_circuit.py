"""A revert (`on_resolved`) is held back by an open circuit judged under its target's lock.

An open circuit means remediation of the target is not working: automation on it stops and
a human is told. A revert is a change like any other and an open circuit holds it back
(escalated: what the firing run changed stays in place, for the human who now has the
target). It read the circuit's state before taking the target lock only: a revert that then
waited for the target (another playbook's run changing it), or, on PostgreSQL, whose two
statements another replica's tripping firing fell between, changed a target whose circuit
had opened meanwhile. Real stores; mutations are counted by the recording runner of
test_guards.
"""

from __future__ import annotations

import asyncio
from typing import Any

from remediator.alerts import dedupe_key
from tests.integration.test_circuit_under_lock import _free, _intake
from tests.integration.test_guards import Harness, web
from tests.support.payloads import alert

TARGET = "prod/deployment/web"

# The read fallback of the architecture's example: switched on while the alert fires,
# switched back when it resolves; alerting again after one successful run is not working.
FALLBACK = """
playbooks:
  - name: read-fallback
    match: {alertname: ReadPrimaryDown}
    target: {kind: deployment, namespace: prod, name: web}
    guards: {rate_limit: {max: 10, window: 1h}, circuit_breaker: {max_refires: 1, window: 1h}}
    steps:
      - name: read_fallback
        action: http.request
        params: {url: "http://127.0.0.1:9/env/CERT_S3_READ_PRIMARY/false", method: POST}
    on_resolved:
      - name: read_primary
        action: http.request
        params: {url: "http://127.0.0.1:9/env/CERT_S3_READ_PRIMARY/true", method: POST}
"""


def _fallback(episode: int, status: str = "firing") -> dict:
    """Episode `episode` of the fallback's alert (each its own fingerprint)."""
    return alert("ReadPrimaryDown", status=status, fingerprint=f"read-{episode}",
                 starts_at=f"2026-01-05T10:{episode:02d}:00Z", namespace="prod")


async def _decide(h: Harness, fired: dict) -> dict:
    """Claim this alert on `h`'s replica and decide it there."""
    item = await h.service.store.claim_key(dedupe_key(fired["fingerprint"], fired["startsAt"],
                                                      fired["status"]))
    assert item is not None
    [decision] = await h.service.engine.process(item)
    return decision


async def _until(holds: Any, what: str) -> None:
    for _ in range(1000):
        if holds():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never {what}")


def _held_back(decision: dict[str, Any]) -> bool:
    return (decision["outcome"] == "blocked"
            and decision["reason"].startswith("circuit_open: circuit for read-fallback on "
                                              f"{TARGET} open since")
            and decision["reason"].endswith("what the firing run changed stays in place")
            and decision["escalation"] is not None)


def _harness(tmp_path) -> Harness:
    h = Harness(tmp_path, "{rate_limit: {max: 10, window: 1h}}")
    (tmp_path / "rules" / "fallback.yaml").write_text(FALLBACK)
    return h


def test_a_revert_that_waited_for_the_target_sees_the_circuit_opened_meanwhile(tmp_path, run):
    """The revert waits for the target, which another playbook (restart-web) is changing;
    meanwhile the fallback's next firing finds its one success and opens the circuit."""
    h = _harness(tmp_path)
    run(h.start())
    guards, runner = h.service.engine.guards, h.service.executor.runner
    opened = asyncio.Event()

    async def held(action: Any, params: dict, ctx: Any) -> dict:
        """restart-web's change lasts until the circuit has opened."""
        answer = await runner(action, params, ctx)
        if params["url"].endswith("/restart"):
            await opened.wait()
        return answer

    h.service.executor.runner = held

    async def scenario() -> tuple[dict, dict, dict]:
        await _intake(h, _fallback(0))
        assert (await _decide(h, _fallback(0)))["outcome"] == "succeeded"
        await _intake(h, web(0), _fallback(0, "resolved"), _fallback(1))
        other = asyncio.create_task(_decide(h, web(0)))
        # restart-web holds the target and is changing it
        await _until(lambda: len(h.calls) == 2, "changed by restart-web")
        revert = asyncio.create_task(_decide(h, _fallback(0, "resolved")))
        # The revert read the circuit (closed) and waits for the target.
        await _until(lambda: (TARGET, "read-fallback") in guards._waiting or revert.done(),
                     "waiting for the target")
        assert not revert.done(), revert.result()
        tripped = await _decide(h, _fallback(1))
        opened.set()  # restart-web is done: the revert takes the target
        return await other, await revert, tripped

    other, revert, tripped = run(scenario())
    assert tripped["outcome"] == "blocked" and tripped["reason"].startswith(
        "circuit_open: remediation is not working"), tripped
    assert other["outcome"] == "succeeded", other
    assert _held_back(revert), (revert["outcome"], revert["reason"])
    assert len(h.calls) == 2  # the fallback and restart-web: no revert
    assert run(_free(h, TARGET))
    run(h.service.stop())


def test_postgres_a_circuit_opened_between_a_reverts_read_and_its_lock_holds_it_back(
        tmp_path, run, postgres_url):
    """No wait at all: replica two's firing opens the circuit between replica one's circuit
    read and its lock, two statements on PostgreSQL."""
    replicas = []
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        h = _harness(tmp_path / name)
        h.cfg.store = postgres_url
        run(h.start())
        replicas.append(h)
    one, two = replicas
    store, read, tripped = one.service.store, one.service.store.get_state, []

    async def meanwhile(key: str) -> Any:
        answer = await read(key)
        if key.startswith("circuit:") and not tripped:  # the revert's read: replica two
            tripped.append(await _decide(two, _fallback(1)))  # trips it, then it goes on
        return answer

    store.get_state = meanwhile

    async def scenario() -> dict:
        await _intake(two, _fallback(0))
        assert (await _decide(two, _fallback(0)))["outcome"] == "succeeded"
        await _intake(two, _fallback(1))
        await _intake(one, _fallback(0, "resolved"))
        return await _decide(one, _fallback(0, "resolved"))

    revert = run(scenario())
    [opened] = tripped
    assert opened["outcome"] == "blocked" and opened["reason"].startswith(
        "circuit_open: remediation is not working"), opened
    assert _held_back(revert), (revert["outcome"], revert["reason"], one.calls)
    assert one.calls == [] and len(two.calls) == 1
    assert run(_free(one, TARGET)) and run(_free(two, TARGET))
    run(one.service.stop())
    run(two.service.stop())
