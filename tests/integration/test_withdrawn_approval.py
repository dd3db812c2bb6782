"""An approval the alert's resolution withdrew: its blocked run is finished once, by one
writer, however the resolution ends.

The resolution withdraws the pending approval, then records the firing run (blocked on it)
as a run it stopped before that step. That record was written without holding the run: a
run of the same execution in progress meanwhile (a retry of the firing alert) wrote its own
final record over it, paging again. And only the resolution's own attempts wrote it: one
that gave up (an offline replay) left the run `blocked approval_pending` for ever, nothing
approvable nor expiring. Real stores (SQLite, and the suite's PostgreSQL), notes counted at
a real HTTP receiver; a run is paused at a store read, never timed.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from remediator.alerts import dedupe_key
from remediator.engine import execution_id
from remediator.engine.approvals import WITHDRAWN_GRACE
from remediator.guards import APPROVAL, PENDING
from remediator.service import Undecided
from tests.integration.test_guards import restart_then_approved_scale, web
from tests.integration.test_note_once import _hooked
from tests.integration.test_unexpected_errors import FINAL, _accepting, _refusing

FIRING = dedupe_key("web", web(0)["startsAt"], "firing")


def _store(request: Any, store: str) -> tuple[str, Any]:
    """The store URL ("" for the harness's SQLite file) and the PostgreSQL cluster, if any."""
    if store != "postgresql":
        return "", None
    return request.getfixturevalue("postgres_url"), request.getfixturevalue("postgres_cluster")


class _Pause:
    """Pauses the `nth` caller of the store's method `name` for execution `execution_id`
    (after the read): `reached` says it is there, `go` lets it on."""

    def __init__(self, store: Any, name: str, execution_id: str, nth: int = 1):
        self.reached, self.go = asyncio.Event(), asyncio.Event()
        real = getattr(store, name)
        calls = [0]

        async def paused(key: str, *args: Any) -> Any:
            got = await real(key, *args)
            calls[0] += key == execution_id
            if key == execution_id and calls[0] == nth:
                self.reached.set()
                await self.go.wait()
            return got
        setattr(store, name, paused)


async def replicas(tmp_path: Any, webhook_receiver: Any, url: str) -> tuple[Any, Any]:
    """Two replicas on one PostgreSQL (each with its own files): the restart gated on an
    approval, every decision paging the receiver."""
    hooked = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        hooked.append(await _hooked(tmp_path / name, webhook_receiver, approval=True,
                                    store=url, always=True))
    return hooked[0], hooked[1]


async def _until(event: asyncio.Event) -> None:
    await asyncio.wait_for(event.wait(), 10)


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_a_withdrawal_does_not_write_over_a_run_of_its_execution_in_progress(
        tmp_path, run, webhook_receiver, request, store):
    """The resolution, about to finish the withdrawn run, is paused; a retry of the firing
    alert starts a run of that execution (it holds it, and has read it blocked) and is
    paused too. The resolution goes on: it must leave the run to the one in progress, which
    meets the resolution before the gated step and records itself. Writing it anyway, both
    recorded it and (the playbook always escalates) paged twice for it."""
    url, _ = _store(request, store)

    async def scenario() -> tuple[Any, dict, dict]:
        h = await _hooked(tmp_path, webhook_receiver, approval=True, store=url, always=True)
        service = h.service
        [pending] = await h.fire(web(0))
        resolution_read = _Pause(service.store, "get_execution", pending["id"])
        resolving = asyncio.create_task(h.fire(web(0, status="resolved")))
        await _until(resolution_read.reached)  # withdrawn; the run not yet finished
        firing_read = _Pause(service.store, "get_execution_and_pause", pending["id"])
        firing = await service.store.claim_key(FIRING)
        retry = asyncio.create_task(service._process(firing))
        await _until(firing_read.reached)
        resolution_read.go.set()
        [resolved] = await asyncio.wait_for(resolving, 10)
        firing_read.go.set()
        await asyncio.wait_for(retry, 10)
        h.clock.now += WITHDRAWN_GRACE + 1
        await service.maintain()  # the entry of a run recorded final goes; nothing is written
        done = await service.store.get_execution(pending["id"])
        left = await service.store.list_state(PENDING)
        await service.stop()
        return h, dict(done, left=left), resolved

    h, done, resolved = run(scenario())
    assert resolved["outcome"] == "resolved", resolved
    assert (done["outcome"], done["reason"]) == (
        "resolved", "the alert resolved before step 'restart'; it was not run"), done["reason"]
    assert [s["outcome"] for s in done["steps"]] == ["cancelled"]
    assert done["left"] == {} and h.calls == []
    outcomes = [d.body["outcome"] for d in webhook_receiver.deliveries]
    assert outcomes == ["blocked", "resolved"], outcomes


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_a_withdrawn_run_the_resolution_gave_up_on_is_finished_once_by_maintenance(
        tmp_path, run, webhook_receiver, request, store):
    """An offline drain (replay) whose resolution withdrew the approval and could not write
    the run's record gives up. The maintenance pass finishes it once the resolution had its
    time (`WITHDRAWN_GRACE`), once, with one note (the playbook always escalates); later
    passes, and the resolution processed again, write nothing more."""
    url, cluster = _store(request, store)

    async def scenario() -> tuple[Any, list[dict], dict]:
        h = await _hooked(tmp_path, webhook_receiver, approval=True, store=url, always=True)
        service = h.service
        [pending] = await h.fire(web(0))
        db = _refusing(h, f"NEW.id = '{pending['id']}' AND {FINAL}", cluster)
        try:
            await h.fire(web(0, status="resolved"))
        except Undecided:
            gave_up = True
        else:
            gave_up = False  # (the record of a run read back, its step cancelled already)
        _accepting(db)
        withdrawn = await service.store.get_state(f"{APPROVAL}{pending['id']}:restart")
        assert withdrawn["status"] == "resolved", withdrawn
        seen = []
        for passed in (WITHDRAWN_GRACE - 1, WITHDRAWN_GRACE + 1, WITHDRAWN_GRACE + 60):
            h.clock.now = withdrawn["decided_at"] + passed
            await service.maintain()
            seen.append(await service.store.get_execution(pending["id"]))
            assert service.metrics.oldest_approval._value.get() == 0  # nobody's to approve
        left = await service.store.list_state(PENDING)
        if store == "sqlite":  # restarted, the resolution is decided again (its claim freed)
            await h.restart()
            await h.service.drain()
            seen.append(await h.service.store.get_execution(pending["id"]))
        await h.service.stop()
        return h, seen, dict(left=left, gave_up=gave_up)

    h, seen, end = run(scenario())
    assert seen[0]["reason"].startswith("approval_pending"), seen[0]["reason"]
    for done in seen[1:]:
        assert (done["outcome"], done["reason"]) == (
            "resolved", "the alert resolved before step 'restart'; it was not run (its "
            "approval was withdrawn)"), (done["outcome"], done["reason"])
        assert done["finished_at"] == seen[1]["finished_at"]  # written once
    assert end == {"left": {}, "gave_up": True} and h.calls == []
    outcomes = [d.body["outcome"] for d in webhook_receiver.deliveries]
    assert outcomes == ["blocked", "resolved"], outcomes


def test_a_withdrawal_leaves_a_run_in_progress_on_another_replica_to_it(
        tmp_path, run, webhook_receiver, postgres_url):
    """As above, the run in progress on another replica (PostgreSQL): this process's in-flight
    registry does not know it, only the store does (its claim of the firing alert,
    `Store.held`). The resolution must leave the run to it; writing it anyway, both recorded
    it and both paged."""
    async def scenario() -> tuple[Any, Any, dict, dict]:
        a, b = await replicas(tmp_path, webhook_receiver, postgres_url)
        [pending] = await a.fire(web(0))
        resolution_read = _Pause(a.service.store, "get_execution", pending["id"])
        resolving = asyncio.create_task(a.fire(web(0, status="resolved")))
        await _until(resolution_read.reached)  # withdrawn; the run not yet finished
        firing_read = _Pause(b.service.store, "get_execution_and_pause", pending["id"])
        firing = await b.service.store.claim_key(FIRING)
        retry = asyncio.create_task(b.service._process(firing))
        await _until(firing_read.reached)
        resolution_read.go.set()
        [resolved] = await asyncio.wait_for(resolving, 10)
        firing_read.go.set()
        await asyncio.wait_for(retry, 10)
        a.clock.now += WITHDRAWN_GRACE + 1
        await a.service.maintain()  # the entry of a run recorded final goes; nothing is written
        done = await a.service.store.get_execution(pending["id"])
        left = await a.service.store.list_state(PENDING)
        await a.service.stop()
        await b.service.stop()
        return a, b, dict(done, left=left), resolved

    a, b, done, resolved = run(scenario())
    assert resolved["outcome"] == "resolved", resolved
    assert done["left"] == {} and a.calls == b.calls == []
    assert (done["outcome"], done["reason"]) == (  # the run's own record, not the withdrawal's
        "resolved", "the alert resolved before step 'restart'; it was not run"), done["reason"]
    assert [s["outcome"] for s in done["steps"]] == ["cancelled"]
    outcomes = [d.body["outcome"] for d in webhook_receiver.deliveries]
    assert outcomes == ["blocked", "resolved"], outcomes


def test_a_withdrawn_run_is_finished_once_whatever_the_replicas_clocks_say(
        tmp_path, run, webhook_receiver, postgres_url):
    """The resolution on replica A has read the withdrawn run, to finish it, when the
    maintenance pass of replica B, whose clock is past the grace already (clocks disagree),
    comes to the same entry. One of them writes it, the other leaves it: a claim of the
    firing alert decides, not the grace. Told apart by the clocks alone, both wrote the
    run's record and both paged."""
    async def scenario() -> tuple[dict, list[str]]:
        a, b = await replicas(tmp_path, webhook_receiver, postgres_url)
        [pending] = await a.fire(web(0))
        held_read = _Pause(a.service.store, "get_execution", pending["id"], nth=2)
        resolving = asyncio.create_task(a.fire(web(0, status="resolved")))
        await _until(held_read.reached)  # read again, about to write the run's record
        b.clock.now = a.clock.now + WITHDRAWN_GRACE + 1
        await b.service.maintain()
        held_read.go.set()
        [resolved] = await asyncio.wait_for(resolving, 10)
        await b.service.maintain()
        done = await a.service.store.get_execution(pending["id"])
        left = await a.service.store.list_state(PENDING)
        await a.service.stop()
        await b.service.stop()
        assert resolved["outcome"] == "resolved" and left == {}, (resolved, left)
        return done, [d.body["outcome"] for d in webhook_receiver.deliveries]

    done, outcomes = run(scenario())
    assert (done["outcome"], done["reason"]) == (
        "resolved", "the alert resolved before step 'restart'; it was not run (its approval "
        "was withdrawn)"), done["reason"]
    assert outcomes == ["blocked", "resolved"], outcomes


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_a_withdrawn_approval_whose_run_was_never_recorded_ends(
        tmp_path, run, webhook_receiver, request, store, caplog):
    """The run's blocked record was refused, then a reload removed its playbook: the retry
    matched nothing, and the withdrawn entry was read at every pass for ever. While its
    firing alert is still to be processed the entry waits for that run; once nothing will
    process it, the pass drops it with a warning (nothing ran, nothing is recorded)."""
    caplog.set_level("WARNING")  # whatever level an earlier test's CLI run left the root at
    url, _ = _store(request, store)
    run_id = execution_id(FIRING, "restart-web")
    name = f"{run_id}:restart"

    async def scenario() -> tuple[Any, list[dict]]:
        h = await _hooked(tmp_path, webhook_receiver, approval=True, store=url, always=True)
        store_ = h.service.store
        now = h.clock.now
        await store_.put_state(APPROVAL + name, {"status": "resolved", "step": "restart",
                                                 "requested_at": now, "expires_at": now + 3600,
                                                 "decided_at": now})
        await store_.put_state(PENDING + name, {
            "expires_at": now + 3600, "requested_at": now, "fingerprint": "web",
            "episode": f"web:{web(0)['startsAt']}", "withdrawn_at": now})
        await store_.enqueue([(FIRING, {"fingerprint": "web"}, {})])  # its retry, to come
        h.clock.now += WITHDRAWN_GRACE + 1
        seen = []
        await h.service.maintain()
        seen.append(await store_.list_state(PENDING))
        item = await store_.claim_key(FIRING)
        await store_.finish(item.id)  # processed: nothing matched it
        await h.service.maintain()
        seen.append(await store_.list_state(PENDING))
        seen.append(await store_.get_execution(run_id))
        await h.service.stop()
        return h, seen

    h, seen = run(scenario())
    assert list(seen[0]) == [PENDING + name] and seen[1] == {} and seen[2] is None
    assert webhook_receiver.deliveries == [] and h.calls == []
    [warning] = [r for r in caplog.records if "never recorded" in r.getMessage()]
    assert name in warning.getMessage()


VERIFIES_FALSE = restart_then_approved_scale("{cooldown: 1m}").replace(
    "\n    guards:", "\n    resolution_verifies: false\n    guards:")
LOG_ONLY = """
playbooks:
  - name: log-api
    match: {alertname: ApiDown}
    steps:
      - {name: note, action: log, params: {message: api down}}
"""
UNVERIFIED = ("the alert resolved before step 'scale'; it was not run, after 'restart' changed "
              "something: not taken as its verification ({}); the steps that would have seen "
              "the change complete did not run (its approval was withdrawn)")
GONE = ("its playbook 'restart-web' is no longer loaded, and its record does not say whether "
        "a resolution verifies its change")
VERIFIED = ("verified by the alert's resolution before step 'scale'; it was not run (its "
            "approval was withdrawn)")


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
@pytest.mark.parametrize(("blocked", "reloaded", "outcome", "reason"), [
    (VERIFIES_FALSE, LOG_ONLY, "escalated", UNVERIFIED.format("resolution_verifies: false")),
    (VERIFIES_FALSE, restart_then_approved_scale("{cooldown: 1m}"), "escalated",
     UNVERIFIED.format("resolution_verifies: false")),
    (restart_then_approved_scale("{cooldown: 1m}"), LOG_ONLY, "succeeded", VERIFIED),
    (None, LOG_ONLY, "escalated", UNVERIFIED.format(GONE)),
], ids=["false-removed", "false-reloaded-true", "true-removed", "older-record-removed"])
def test_a_withdrawn_run_after_a_reload_is_verified_as_its_playbook_said_when_it_blocked(
        tmp_path, run, webhook_receiver, request, store, blocked, reloaded, outcome, reason):
    """The restart ran and the scale waits for its approval when the alert resolves. The
    resolution withdraws the approval and cannot write the run's record (it gives up); a
    reload removes the playbook, or makes it say the resolution verifies; the maintenance pass
    finishes the run. Read from the live set, a removed playbook was taken as verifying
    (`succeeded`, "verified by the alert's resolution", no note), under a playbook that said
    `resolution_verifies: false` when the run blocked. That run is escalated, with its note,
    once. A record of the version before, which does not say (None: written without the
    flag), whose playbook is gone, is not taken as verified either."""
    url, cluster = _store(request, store)
    rules = tmp_path / "rules" / "web.yaml"

    async def scenario() -> tuple[Any, list[dict], Any]:
        h = await _hooked(tmp_path, webhook_receiver, store=url)
        service = h.service
        rules.write_text(blocked or restart_then_approved_scale("{cooldown: 1m}"))
        await service.reload()
        [pending] = await h.fire(web(0))
        assert (pending["outcome"], pending["blocked_step"]) == ("blocked", "scale"), pending
        if blocked is None:  # as the version before recorded it
            older = await service.store.get_execution(pending["id"])
            del older["resolution_verifies"]
            await service.store.save_execution(older)
        db = _refusing(h, f"NEW.id = '{pending['id']}' AND {FINAL}", cluster)
        with pytest.raises(Undecided):
            await h.fire(web(0, status="resolved"))
        _accepting(db)
        rules.write_text(reloaded)
        await service.reload()
        withdrawn = await service.store.get_state(f"{APPROVAL}{pending['id']}:scale")
        seen = []
        for passed in (WITHDRAWN_GRACE + 1, WITHDRAWN_GRACE + 60):
            h.clock.now = withdrawn["decided_at"] + passed
            await service.maintain()
            seen.append(await service.store.get_execution(pending["id"]))
        left = await service.store.list_state(PENDING)
        await service.stop()
        return h, seen, left

    h, seen, left = run(scenario())
    for done in seen:
        assert (done["outcome"], done["reason"]) == (outcome, reason), done["reason"]
        assert done["finished_at"] == seen[0]["finished_at"]  # written once
    assert [s["outcome"] for s in seen[0]["steps"]] == ["succeeded", "cancelled"]
    assert left == {} and len(h.calls) == 1  # the restart; the scale never ran
    notes = [d.body for d in webhook_receiver.deliveries if d.body["outcome"] == "escalated"]
    assert len(notes) == (outcome == "escalated"), [
        d.body["outcome"] for d in webhook_receiver.deliveries]
    assert all(reason in json.dumps(note) for note in notes)
