"""A circuit reset lets the next alert be remediated: counting restarts from the reset.

The reset deleted the circuit's state, but the circuit counts the successes in its window,
and those were still there: the very next firing opened it again from the same successes,
for a whole new `open_for`, with a new note. Real `serve` (in-process) on both stores, the
reset over its API, the remediation a real POST to a receiver on 127.0.0.1.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.test_guards import Harness, web
from tests.support.payloads import alert, notification
from tests.support.worker import OPERATOR, http

RULES = """
playbooks:
  - name: restart-web
    match: {alertname: WebDown}
    target: {kind: deployment, namespace: prod, name: web}
    guards: {rate_limit: {max: 100, window: 1h}, circuit_breaker: {max_refires: 2, window: 1h}}
    steps:
      - name: restart
        action: http.request
        params: {url: "%s", method: POST, json: {restart: web}}
"""


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_after_a_reset_the_next_alert_is_remediated(worker_factory, webhook_receiver, request,
                                                    store, caplog):
    settings = {"store": request.getfixturevalue("postgres_url")} if store == "postgres" else {}
    w = worker_factory(RULES % webhook_receiver.url, mode="live", **settings)
    decided: list[dict] = []

    def fire() -> dict:
        """A new episode of the alert (one at a time: one target), and its decision."""
        episode = len(decided)
        w.post_alerts(notification(alert("WebDown", fingerprint=f"web-{episode}",
                                         starts_at=f"2026-11-21T10:{episode:02d}:00Z")))
        found = w.wait_executions(episode + 1)
        assert len(found) == episode + 1, found
        [decision] = [d for d in found if d["fingerprint"] == f"web-{episode}"]
        decided.append(decision)
        return decision

    def outcomes(decisions: list[dict]) -> list[str]:
        return [d["outcome"] + (" " + d["reason"].split(":")[0] if d["outcome"] == "blocked"
                                else "") for d in decisions]

    for _ in range(4):
        fire()
    assert outcomes(decided) == ["succeeded", "succeeded", "blocked circuit_open",
                                 "blocked circuit_open"]
    status, body = http("POST", f"{w.url}/api/v1/circuits/reset?target=prod/deployment/web",
                        b"", OPERATOR)
    assert (status, body) == (200, {"reset": ["restart-web:prod/deployment/web"]})
    resets = [r.getMessage() for r in caplog.records if "reset by" in r.getMessage()]
    assert resets == ["circuit reset by alice: restart-web:prod/deployment/web"], resets
    assert w.call(w.service.open_circuits()) == []
    # A replica of the previous version (a rolling update, a rollback) reads `until` and
    # `opened_at` of every circuit state: a reset's keeps both, ended at the reset.
    state = w.call(w.service.store.get_state("circuit:restart-web:prod/deployment/web"))
    assert state["until"] == state["reset_at"] and "opened_at" in state, state
    # Counting restarts at the reset: two more successes, then the circuit opens again.
    for _ in range(3):
        fire()
    assert outcomes(decided[4:]) == ["succeeded", "succeeded", "blocked circuit_open"]
    assert decided[-1]["reason"].startswith("circuit_open: remediation is not working: "
                                            "prod/deployment/web alerted again after 2 "
                                            "successful remediations"), decided[-1]["reason"]
    assert len(webhook_receiver.deliveries) == 4
    # Reset twice: the second closes nothing, and says so.
    assert http("POST", f"{w.url}/api/v1/circuits/reset?target=prod/deployment/web",
                b"", OPERATOR)[0] == 200
    status, body = http("POST", f"{w.url}/api/v1/circuits/reset?target=prod/deployment/web",
                        b"", OPERATOR)
    assert (status, body["open"]) == (404, []), body
    assert len([r for r in caplog.records if "reset by" in r.getMessage()]) == 2  # not this one
    assert fire()["outcome"] == "succeeded"


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_a_reset_between_an_openings_read_and_its_write_is_kept(tmp_path, run, request, store):
    """The circuit's opening expired (`open_for` 5m, its successes still in the 1h window)
    and the alert fired again: that firing read the state (closed) and counted the
    successes (enough to open it), and before it wrote the opening an operator reset the
    circuit (on another replica; on SQLite, on the same loop between the two statements).
    The opening was written over the reset: open again for a whole `open_for`, on
    successes from before the reset, after the reset had answered that it closed it. The
    opening is written only over the state it read; judged again, counting from the reset,
    the firing runs. Real stores (PostgreSQL: two replicas on one database), a simulated
    clock, the reset through the service the API calls."""
    guards = ("{rate_limit: {max: 10, window: 1h}, "
              "circuit_breaker: {max_refires: 1, window: 1h, open_for: 5m}}")
    replicas = []
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        h = Harness(tmp_path / name, guards)
        if store == "postgres":
            h.cfg.store = request.getfixturevalue("postgres_url")
        replicas.append(run(h.start()))
    one, two = replicas if store == "postgres" else (replicas[0], replicas[0])
    target = "prod/deployment/web"
    [first] = run(one.fire(web(0), at=0))
    [tripped] = run(one.fire(web(1), at=60))
    assert (first["outcome"], tripped["reason"].split(":")[0]) == ("succeeded", "circuit_open")
    store_, read, reset = one.service.store, one.service.store.state_and_count, []

    async def then_reset(*args: Any) -> Any:
        answer = await read(*args)
        if not reset:  # the firing's first read: the operator resets, then it goes on,
            # on a replica whose clock is ahead (the reset's `until` is then after this
            # firing's `now`: still the reset's, the circuit closed)
            two.clock.now = one.clock.now + 2
            reset.append(await two.service.reset_circuits(target, "", "alice"))
        return answer

    store_.state_and_count = then_reset
    [late] = run(one.fire(web(2), at=400))  # the opening ended at 360
    assert reset == [["restart-web:" + target]]
    assert late["outcome"] == "succeeded", (late["outcome"], late["reason"])
    assert one.calls == [first["id"], late["id"]]
    assert run(one.service.open_circuits()) == []
    state = run(one.service.store.get_state(f"circuit:restart-web:{target}"))
    assert state["reset_by"] == "alice", state
    for h in replicas:
        run(h.service.stop())
