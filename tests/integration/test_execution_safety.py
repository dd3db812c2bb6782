"""An execution never runs twice, never wedges its target, and never stops unrecorded:
approvals racing each other or a crash, an error mid-run, a playbook changed under a pending
execution, a note sink that hangs."""

from __future__ import annotations

import asyncio
import socket
import textwrap

import pytest

from remediator.service import Resuming
from remediator.store.base import StoreUnavailable
from tests.integration.test_guards import Harness, restart_then_approved_scale, web
from tests.support.payloads import alert
from tests.support.worker import loopback_guards


def test_two_approvals_at_once_run_the_mutation_once(tmp_path, run):
    h = run(Harness(tmp_path, "{cooldown: 1m}", approval=True, slow=0.2).start())
    [pending] = run(h.fire(web(0)))

    async def both():
        return await asyncio.gather(h.service.approve(pending["id"], by="a"),
                                    h.service.approve(pending["id"], by="b"),
                                    return_exceptions=True)
    first, second = run(both())
    assert first["outcome"] == "succeeded"
    assert isinstance(second, ValueError) and "no pending approval (step 'restart' approved)" in str(second)
    assert h.calls == [pending["id"]]
    run(h.service.stop())


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_an_approval_at_its_expiry_is_approved_or_expired_never_both(tmp_path, run, store,
                                                                     request):
    h = Harness(tmp_path, "{cooldown: 1m}", approval=True, slow=0.2)
    if store == "postgresql":
        h.cfg.store = request.getfixturevalue("postgres_url")
    run(h.start())
    [pending] = run(h.fire(web(0)))
    h.clock.now += 3600  # the approval's TTL: an operator approves as maintenance expires it

    async def both():
        return await asyncio.gather(h.service.approve(pending["id"], by="alice"),
                                    h.service.maintain(), return_exceptions=True)
    approved, _ = run(both())
    state = run(h.service.store.get_state(f"approval:{pending['id']}:restart"))
    final = run(h.service.store.get_execution(pending["id"]))
    # Exactly one decided it: approved and run once, or expired, escalated and never run
    if isinstance(approved, ValueError):
        assert "expired" in str(approved) and state["status"] == "expired"
        assert (final["outcome"], h.calls) == ("escalated", [])
    else:
        assert approved["outcome"] == "succeeded" and state["status"] == "approved", state
        assert (final["outcome"], h.calls) == ("succeeded", [pending["id"]])
    run(h.service.stop())


def test_a_resolution_withdraws_a_pending_approval_only_between_approvals(tmp_path, run):
    h = run(Harness(tmp_path, "{cooldown: 1m}", approval=True).start())
    [pending] = run(h.fire(web(0)))
    key = f"approval:{pending['id']}:restart"

    async def resolve_while_an_approval_is_decided():
        async with h.service.store.critical("approvals"):  # as approve() holds it
            resolving = asyncio.ensure_future(h.fire(web(0, status="resolved")))
            await asyncio.sleep(0.5)
            during = (await h.service.store.get_state(key))["status"]
        await resolving
        return during, (await h.service.store.get_state(key))["status"]
    # The withdrawal waited for the section: it cannot decide under an approve deciding too.
    assert run(resolve_while_an_approval_is_decided()) == ("pending", "resolved")
    with pytest.raises(ValueError, match="resolved"):
        run(h.service.approve(pending["id"], by="alice"))
    assert h.calls == []
    run(h.service.stop())


def test_an_approved_resume_cut_off_by_a_crash_finishes_after_restart(tmp_path, run):
    h = run(Harness(tmp_path, "{cooldown: 1m}", approval=True, slow=5).start())
    [pending] = run(h.fire(web(0)))

    async def approve_then_crash():
        task = asyncio.ensure_future(h.service.approve(pending["id"], by="a"))
        await asyncio.sleep(0.3)  # inside the (slow) mutation
        task.cancel()
    run(approve_then_crash())
    run(h.restart())
    h.slow = 0
    [after] = [d for d in run(h.service.drain()) if d["id"] == pending["id"]]
    # It is not left `running`: the interrupted restart may or may not have happened, so it
    # is not repeated, and a human is told.
    assert after["outcome"] == "failed" and "interrupted" in after["reason"]
    assert after["escalation"] is not None and h.calls == [pending["id"]]
    run(h.service.stop())


def test_a_rate_limit_key_the_alert_cannot_make_blocks_escalates_and_frees_the_target(
        tmp_path, run):
    # Without the label the key needs (it was an internal error and a traceback), or with
    # it empty (every such alert shared one limit): no limit to count against, so the
    # mutation is not admitted, and a human is told.
    h = run(Harness(tmp_path, "{rate_limit: {max: 5, window: 1h, key: '{{ labels.team }}'}}").start())
    [missing] = run(h.fire(web(0)))
    [empty] = run(h.fire(web(1, team=" "), at=60))
    for blocked in (missing, empty):
        assert blocked["outcome"] == "blocked", blocked
        assert blocked["reason"].startswith("rate_limited: the rate limit cannot be checked: "
                                            "its key '{{ labels.team }}' ")
        assert blocked["escalation"] is not None
    assert h.calls == []
    [fine] = run(h.fire(web(2, team="web"), at=120))
    assert fine["outcome"] == "succeeded"  # the target was not left locked
    run(h.service.stop())


def test_a_label_cannot_spend_another_playbooks_rate_limit(tmp_path, run):
    """A templated key shared the default keys' names (`playbook:target`): an alert of one
    playbook whose label spelled another's key used up that playbook's limit."""
    h = run(Harness(tmp_path, "{rate_limit: {max: 1, window: 1h}}").start())
    (tmp_path / "rules" / "grouped.yaml").write_text(textwrap.dedent("""
        playbooks:
          - name: by-cluster
            match: {alertname: ClusterDown}
            target: {kind: deployment, namespace: prod, name: api}
            guards: {rate_limit: {max: 5, window: 1h, key: "{{ labels.cluster }}"}}
            steps:
              - {name: restart, action: http.request,
                 params: {url: "http://127.0.0.1:9/restart", method: POST}}
        """))
    run(h.service.reload())
    steered = [alert("ClusterDown", fingerprint=f"c{n}", cluster="restart-web:prod/deployment/web",
                     starts_at=f"2026-01-05T10:0{n}:00Z") for n in range(2)]
    for n, one in enumerate(steered):
        assert [d["outcome"] for d in run(h.fire(one, at=60 * n))] == ["succeeded"]
    [own] = run(h.fire(web(0), at=300))
    assert own["outcome"] == "succeeded", own["reason"]  # its own limit, untouched
    assert len(h.calls) == 3
    run(h.service.stop())


def test_a_playbook_changed_under_a_pending_approval_is_not_resumed(tmp_path, run):
    h = run(Harness(tmp_path, "{cooldown: 1m}", approval=True).start())
    [pending] = run(h.fire(web(0)))
    rules = tmp_path / "rules" / "web.yaml"
    rules.write_text(rules.read_text().replace("- name: restart\n", "- name: bounce\n"))
    run(h.service.reload())
    resumed = run(h.service.approve(pending["id"], by="a"))
    assert resumed["outcome"] == "failed"
    assert "the playbook changed since this execution started" in resumed["reason"]
    assert h.calls == []
    run(h.service.stop())


def test_an_approval_does_not_admit_a_step_a_reload_changed_since_it_was_asked(tmp_path, run):
    """The approver saw the step as it was planned (its parameters, in the note and the
    console); a reload that keeps its name and action but changes what it does (another
    URL, another deployment) must not run the new version under that approval."""
    h = run(Harness(tmp_path, "{cooldown: 1m}", approval=True).start())
    [pending] = run(h.fire(web(0)))
    assert pending["steps"][0]["params"]["url"] == "http://127.0.0.1:9/restart"
    rules = tmp_path / "rules" / "web.yaml"
    rules.write_text(rules.read_text().replace("9/restart", "9/restart-everything"))
    run(h.service.reload())
    resumed = run(h.service.approve(pending["id"], by="a"))
    assert h.calls == []
    assert resumed["outcome"] == "failed", resumed["reason"]
    assert "changed since its approval was asked" in resumed["reason"]
    assert resumed["escalation"] is not None
    # An unchanged step runs under its approval, after a reload too.
    [pending] = run(h.fire(web(1), at=120))
    run(h.service.reload())
    assert run(h.service.approve(pending["id"], by="a"))["outcome"] == "succeeded"
    assert h.calls == [pending["id"]]
    # A rejection is a rejection, changed step or not.
    [pending] = run(h.fire(web(2), at=240))
    rules.write_text(rules.read_text().replace("9/restart-everything", "9/restart"))
    run(h.service.reload())
    rejected = run(h.service.approve(pending["id"], by="a", approve=False))
    assert (rejected["outcome"], rejected["reason"]) == (
        "blocked", "approval_denied: step 'restart': approval rejected by a")
    assert len(h.calls) == 1
    run(h.service.stop())


def test_the_circuit_counts_successes_of_playbooks_that_always_escalate(tmp_path, run):
    h = run(Harness(tmp_path, "{cooldown: 1m, circuit_breaker: {max_refires: 2, window: 1h}}",
                    always=True).start())
    outcomes = [run(h.fire(web(n), at=n * 120))[0]["outcome"] for n in range(3)]
    assert outcomes == ["escalated", "escalated", "blocked"]
    assert len(h.calls) == 2
    run(h.service.stop())


def test_dry_run_plans_through_an_approval(tmp_path, run):
    h = Harness(tmp_path, "{cooldown: 1m}", approval=True)
    h.cfg.mode = "dry-run"
    run(h.start())
    [planned] = run(h.fire(web(0)))
    assert planned["outcome"] == "planned"
    assert planned["steps"][0]["detail"].endswith("(after approval)")
    run(h.service.stop())


def test_a_note_sink_that_hangs_spools_the_note_and_the_run_is_recorded(tmp_path, run):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts connections, never answers
    url = f"http://127.0.0.1:{silent.getsockname()[1]}/hook"
    h = Harness(tmp_path, "{cooldown: 1m}", settings=loopback_guards(), always=True)
    h.cfg.escalation_sinks = {"hook": {"type": "webhook", "url": url}}
    h.cfg.escalation_default_sinks = ["hook"]
    run(h.start())
    h.service.backends.http_timeout = 0.3
    h.service.engine.escalator.retry_wait = 0
    try:
        [decision] = run(h.fire(web(0)))
        assert decision["outcome"] == "escalated"
        assert decision["escalation"]["deliveries"] == {"hook": "spooled"}
        assert run(h.service.store.get_execution(decision["id"]))["outcome"] == "escalated"
        run(h.service.maintain())  # redelivery times out again: kept, and maintenance goes on
        assert len(run(h.service.store.list_state("spool:"))) == 1
    finally:
        run(h.service.stop())
        silent.close()


TWO_GATES = """
playbooks:
  - name: restart-web
    match: {alertname: WebDown}
    target: {kind: deployment, namespace: prod, name: web}
    guards: {cooldown: 1m, approval_ttl: 30m}
    steps:
      - name: drain
        action: http.request
        approval: required
        params: {url: "http://127.0.0.1:9/drain", method: POST}
      - name: restart
        action: http.request
        approval: required
        params: {url: "http://127.0.0.1:9/restart", method: POST}
"""


def test_one_approval_admits_one_gated_step(tmp_path, run):
    h = Harness(tmp_path, "{}")
    (tmp_path / "rules" / "web.yaml").write_text(TWO_GATES)
    run(h.start())
    [pending] = run(h.fire(web(0)))
    assert pending["blocked_step"] == "drain" and h.calls == []
    with pytest.raises(ValueError, match="step 'restart' has no pending approval"):
        run(h.service.approve(pending["id"], by="alice", step="restart"))
    h.clock.now += 20 * 60
    first = run(h.service.approve(pending["id"], by="alice"))  # the pending one: drain
    # The second gated step waits for its own approval, with its own TTL.
    assert first["outcome"] == "blocked" and first["blocked_step"] == "restart"
    assert first["reason"].startswith("approval_pending: step 'restart' needs approval")
    assert len(h.calls) == 1
    h.clock.now += 25 * 60  # 45 min after the first request, 25 after the second
    assert run(h.service.engine.expire_approvals()) == 0
    done = run(h.service.approve(pending["id"], by="bob", step="restart"))
    assert done["outcome"] == "succeeded" and len(h.calls) == 2
    approvals = run(h.service.store.list_state(f"approval:{pending['id']}:"))
    assert {k.rsplit(":", 1)[1]: (v["status"], v["by"]) for k, v in approvals.items()} == {
        "drain": ("approved", "alice"), "restart": ("approved", "bob")}
    run(h.service.stop())


IDEMPOTENT = """
playbooks:
  - name: config-web
    match: {alertname: ConfigDrift}
    target: {kind: deployment, namespace: prod, name: web}
    guards: {cooldown: 1m}
    steps:
      - name: put_config
        action: http.request
        params: {url: "http://127.0.0.1:9/config/web", method: PUT}
"""


def test_an_interrupted_change_is_not_repeated_as_another_after_a_reload(tmp_path, run):
    """A restart repeats an interrupted idempotent change (PUT) to be sure it took effect:
    the same change. Rules changed meanwhile to put elsewhere leave the first object in an
    unknown state: the run fails, uncertain, and escalates instead of changing another."""
    h = Harness(tmp_path, "{cooldown: 1m}")
    rules = tmp_path / "rules" / "config.yaml"
    rules.write_text(IDEMPOTENT)
    run(h.start())
    stuck = asyncio.Event()

    async def hangs(action, params, ctx):
        h.calls.append(params["url"])
        await stuck.wait()  # the process dies in this call
    h.service.executor.runner = hangs
    firing = web(0, fingerprint="drift")
    firing["labels"]["alertname"] = "ConfigDrift"

    async def crash():
        task = asyncio.ensure_future(h.fire(firing))
        while not h.calls:
            await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    run(crash())
    assert h.calls == ["http://127.0.0.1:9/config/web"]
    run(h.service.stop())
    rules.write_text(IDEMPOTENT.replace("config/web", "config/api"))
    h.calls.clear()
    run(h.start())
    [d] = run(h.service.drain())
    assert h.calls == [], d["steps"]
    assert d["outcome"] == "failed"
    assert d["steps"][0]["uncertain"] is True
    assert "http://127.0.0.1:9/config/web" in d["steps"][0]["params"]["url"]
    run(h.service.stop())


def test_a_withdrawn_approval_after_a_change_is_verified_by_the_resolution_and_counted(
        tmp_path, run):
    """The restart ran, the scale waited for its approval, and the alert resolved: the
    withdrawn approval's execution is recorded as a firing run the resolution stopped after
    a change is (succeeded, verified by the resolution), its success counted once by the
    circuit, not left `blocked approval_pending`."""
    h = Harness(tmp_path, "{}")
    (tmp_path / "rules" / "web.yaml").write_text(restart_then_approved_scale(
        "{cooldown: 1m, circuit_breaker: {max_refires: 3, window: 1h}}"))
    run(h.start())
    [pending] = run(h.fire(web(0)))
    assert (pending["outcome"], pending["blocked_step"]) == ("blocked", "scale"), pending
    run(h.fire(web(0, status="resolved")))
    run(h.fire(web(0, status="resolved")))  # a repeat: deduplicated, nothing decided again
    done = run(h.service.store.get_execution(pending["id"]))
    assert (done["outcome"], done["reason"]) == (
        "succeeded", "verified by the alert's resolution before step 'scale'; it was not run "
        "(its approval was withdrawn)"), (done["outcome"], done["reason"])
    assert [s["outcome"] for s in done["steps"]] == ["succeeded", "cancelled"]
    assert h.calls == [pending["id"]]
    store = h.service.store
    assert run(store.count_events("success", "restart-web:prod/deployment/web", 0)) == 1
    assert run(store.list_state("approval-pending:")) == {}
    run(h.service.stop())


def test_a_withdrawn_approval_after_a_change_is_not_verified_when_resolution_verifies_is_false(
        tmp_path, run):
    """The same withdrawn approval under `resolution_verifies: false`: the resolution is not
    the restart's verification, and the scale that was to follow never ran. Escalated with a
    note saying so, its success not counted by the circuit, not left `blocked`."""
    h = Harness(tmp_path, "{}")
    rules = restart_then_approved_scale("{cooldown: 1m, circuit_breaker: {max_refires: 3, "
                                        "window: 1h}}")
    (tmp_path / "rules" / "web.yaml").write_text(rules.replace(
        "\n    guards:", "\n    resolution_verifies: false\n    guards:"))
    run(h.start())
    [pending] = run(h.fire(web(0)))
    assert (pending["outcome"], pending["blocked_step"]) == ("blocked", "scale"), pending
    run(h.fire(web(0, status="resolved")))
    done = run(h.service.store.get_execution(pending["id"]))
    assert (done["outcome"], done["reason"]) == (
        "escalated", "the alert resolved before step 'scale'; it was not run, after 'restart' "
        "changed something: not taken as its verification (resolution_verifies: false); the "
        "steps that would have seen the change complete did not run (its approval was "
        "withdrawn)"), (done["outcome"], done["reason"])
    assert [s["outcome"] for s in done["steps"]] == ["succeeded", "cancelled"]
    [note] = h.note_files()
    assert "not taken as its verification" in note.read_text()
    store = h.service.store
    assert run(store.count_events("success", "restart-web:prod/deployment/web", 0)) == 0
    assert run(store.list_state("approval-pending:")) == {}
    run(h.service.stop())


def test_an_approval_while_stopping_is_refused_not_run_as_the_store_closes(tmp_path, run):
    """SIGTERM, then an approval on a kept-alive connection during the grace period: it was
    accepted, and its resumed run went on past the grace period's snapshot while the store
    and backends closed under it. Refused now (a 503 at every endpoint); nothing runs."""
    h = run(Harness(tmp_path, "{cooldown: 1m}", approval=True, slow=1.0).start())
    [first] = run(h.fire(web(0)))
    [second] = run(h.fire(web(0, deployment="api")))

    async def approve_while_stopping():
        with pytest.raises(Resuming):  # its run holds stop() in the grace period
            await h.service.approve(first["id"], by="a", answer_within=0)
        stopping = asyncio.create_task(h.service.stop())
        await asyncio.sleep(0.1)
        with pytest.raises(StoreUnavailable, match="shutting down"):
            await h.service.approve(second["id"], by="a", answer_within=0)
        await stopping

    run(approve_while_stopping())
    assert h.calls == [first["id"]]  # the first ran to its end within the grace period
