"""A failure's note goes out once, however often its decision must be tried again.

An alert whose decision cannot be recorded (the store refuses the write) is processed again
with backoff (1 s doubling to 60 s) until it is. Each attempt decided the same failure again
and sent its note again: a webhook, Slack or paging receiver got one per attempt, once a
minute for as long as the store refused. The receiver here is a real HTTP server counting
what it is sent; the store is the real SQLite store, refusing writes through a trigger (as
in test_unexpected_errors). The note must still never be lost: one that could be neither
delivered nor spooled is tried again, and goes out once it can.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from typing import Any

import pytest

from remediator.alerts import parse_notification
from remediator.guards import PENDING
from remediator.service import Undecided
from tests.integration.test_guards import Harness, web
from tests.integration.test_unexpected_errors import (
    FINAL,
    _accepting,
    _damaged,
    _held_back,
    _processing,
    _refusing,
)
from tests.support.payloads import notification
from tests.support.webhook import WebhookReceiver

SPOOL_REFUSED = ("CREATE TRIGGER refuse_spool BEFORE INSERT ON state WHEN NEW.key LIKE "
                 "'spool:%' BEGIN SELECT RAISE(ABORT, 'injected: spool refused'); END")


async def _hooked(tmp_path, receiver: WebhookReceiver, guards: str = "{cooldown: 1m}",
                  store: str = "", **harness: Any) -> Harness:
    """The guards harness, its notes also posted to `receiver` (a webhook sink); on `store`
    (a URL) rather than its SQLite file, if given."""
    h = Harness(tmp_path, guards, **harness)
    h.cfg.store = store or h.cfg.store
    h.cfg.escalation_sinks = {"hook": {"type": "webhook", "url": receiver.url}}
    h.cfg.escalation_default_sinks = ["files", "hook"]
    await h.start()
    h.service.engine.escalator.retry_wait = 0
    return h


async def _retried(h: Harness, task: asyncio.Task, times: int) -> None:
    """Until the alert was processed again `times` times, still undecided."""
    await _more(h, task, times - h.service.metrics.inbox_retries._value.get())


async def _more(h: Harness, task: asyncio.Task, times: int = 2) -> None:
    """Until the alert was processed again `times` times more than so far, still undecided
    (the simulated clock's backoff takes no time: attempts may have run on since the last
    look, none of them after what the test changed since)."""
    times += h.service.metrics.inbox_retries._value.get()
    for _ in range(500):
        if h.service.metrics.inbox_retries._value.get() >= times:
            break
        await asyncio.sleep(0.01)
    assert h.service.metrics.inbox_retries._value.get() >= times and not task.done()


def _accepted(receiver: WebhookReceiver) -> list[Any]:
    return [d.body for d in receiver.deliveries]


def test_a_bug_whose_failure_cannot_be_recorded_pages_once(tmp_path, run, webhook_receiver):
    """The alert-level internal error (a damaged inbox row) and its record refused: the
    note went out at every attempt."""

    async def scenario() -> dict:
        h = await _hooked(tmp_path, webhook_receiver)
        await h.service.store.enqueue([_damaged(0)])
        db = _refusing(h)
        [item] = await h.service.store.claim(1)
        task = asyncio.create_task(h.service._process(item))
        await _retried(h, task, 4)
        assert len(webhook_receiver.deliveries) == 1, [d.body["reason"] for d in
                                                       webhook_receiver.deliveries]
        _accepting(db)
        [failed] = await asyncio.wait_for(task, 10)
        await h.service.stop()
        return failed

    failed = run(scenario())
    assert failed["outcome"] == "failed" and "KeyError" in failed["reason"]
    [note] = _accepted(webhook_receiver)
    assert note["id"] == failed["id"] and "KeyError" in note["reason"]
    assert failed["escalation"]["deliveries"]["hook"].startswith("delivered")


def test_a_change_whose_success_cannot_be_recorded_is_not_failed_as_interrupted(
        tmp_path, run, webhook_receiver):
    """The change ran and every final record is refused: processed again, each attempt
    knows the change succeeded (its result kept while unwritten), so none takes it for an
    interrupted change (`uncertain`, a note to verify it by hand, as before): once the store
    takes the record, the run succeeded, the change made once, nobody paged."""

    async def scenario() -> tuple[Harness, dict]:
        h = await _hooked(tmp_path, webhook_receiver)
        db = _refusing(h, FINAL)
        await h.service.intake(parse_notification(json.dumps(notification(web(0))).encode()))
        [item] = await h.service.store.claim(1)
        task = asyncio.create_task(h.service._process(item))
        await _retried(h, task, 5)
        _accepting(db)
        [decision] = await asyncio.wait_for(task, 10)
        await h.service.stop()
        return h, decision

    h, decision = run(scenario())
    assert decision["outcome"] == "succeeded", decision["reason"]
    assert [s["outcome"] for s in decision["steps"]] == ["succeeded"]
    assert len(h.calls) == 1 and webhook_receiver.deliveries == []


def test_a_note_neither_delivered_nor_spooled_still_goes_out_once(tmp_path, run):
    """The receiver is down and the store refuses the spool too: nothing holds the note, so
    each attempt tries it again (never remembered as sent); once the spool takes it, the
    attempts after leave it there, and it reaches the receiver once it is back, once."""
    receiver = WebhookReceiver(status=503)

    async def scenario() -> dict:
        h = await _hooked(tmp_path, receiver)
        db = _refusing(h, FINAL)
        db.execute(SPOOL_REFUSED)
        await h.service.store.enqueue([_damaged(0)])
        [item] = await h.service.store.claim(1)
        task = asyncio.create_task(h.service._process(item))
        await _retried(h, task, 2)
        tried = len(receiver.deliveries)
        assert tried >= 2 * 3  # three tries per attempt: none of them held the note
        db.execute("DROP TRIGGER refuse_spool")  # the spool takes it now: kept there
        await _more(h, task)
        spooled = await h.service.store.list_state("spool:")
        assert list(spooled) == [f"spool:{spooled[next(iter(spooled))]['id']}:hook"]
        tried = len(receiver.deliveries)
        await _more(h, task)
        assert len(receiver.deliveries) == tried  # the spool holds it: not sent again
        _accepting(db)
        [failed] = await asyncio.wait_for(task, 10)
        assert failed["escalation"]["deliveries"]["hook"] == "spooled"
        receiver.status = 200
        assert await h.service.engine.escalator.redeliver() == 0
        assert await h.service.engine.escalator.redeliver() == 0
        assert len(receiver.deliveries) == tried + 1  # once back, once
        await h.service.stop()
        return failed

    try:
        failed = run(scenario())
    finally:
        receiver.stop()
    last = receiver.deliveries[-1]
    assert last.body["id"] == failed["id"] and "KeyError" in last.body["reason"]


def test_a_note_spooled_before_a_restart_reaches_the_receiver_once(tmp_path, run):
    """The receiver is down, so the note is spooled; the decision's record is refused, and
    the process stops before it is written. Restarted, the alert is decided again: its note
    went to the receiver at once, and the spool's redelivery sent the one spooled before
    too (two pages for one execution). The spooled note is replaced, and sent once."""
    receiver = WebhookReceiver(status=503)

    async def scenario() -> tuple[dict, dict]:
        h = await _hooked(tmp_path, receiver, always=True)
        db = _refusing(h, FINAL)
        with pytest.raises(Undecided):  # an offline drain gives up: its item stays claimed
            await h.fire(web(0))
        spooled = await h.service.store.list_state("spool:")
        _accepting(db)
        receiver.status = 200
        tried = len(receiver.deliveries)
        await h.restart()
        h.service.engine.escalator.retry_wait = 0
        [done] = await h.service.drain()
        for _ in range(2):
            await h.service.maintain()
        left = await h.service.store.list_state("spool:")
        await h.service.stop()
        return dict(done, spooled=spooled, left=left), {"after": len(receiver.deliveries) - tried}

    try:
        done, count = run(scenario())
    finally:
        receiver.stop()
    assert [key.rsplit(":", 1)[1] for key in done["spooled"]] == ["hook"]
    assert done["outcome"] == "escalated" and done["left"] == {}
    assert count == {"after": 1}, count
    assert receiver.deliveries[-1].body["id"] == done["id"]


def test_an_approval_asked_after_another_block_whose_record_was_refused_is_paged(
        tmp_path, run, webhook_receiver):
    """Paused, the run is blocked (a note) and that record refused; resumed meanwhile, the
    attempt after is blocked at its step's approval: the same outcome, `blocked`, but news
    (the request a human must act on). Remembered by outcome alone, it was never sent: the
    approval expired unasked."""

    async def scenario() -> dict:
        h = await _hooked(tmp_path, webhook_receiver, approval=True)
        db = _refusing(h, "NEW.outcome = 'blocked'")
        await h.service.pause(True, "ops")
        await h.service.intake(parse_notification(json.dumps(notification(web(0))).encode()))
        [item] = await h.service.store.claim(1)
        task = asyncio.create_task(h.service._process(item))
        await _retried(h, task, 2)
        assert [d.body["reason"].split(":")[0] for d in webhook_receiver.deliveries] == [
            "paused"]
        await h.service.pause(False, "ops")
        await _more(h, task)
        _accepting(db)
        [decision] = await asyncio.wait_for(task, 10)
        await h.service.stop()
        return decision

    decision = run(scenario())
    assert decision["reason"].startswith("approval_pending"), decision["reason"]
    assert [d.body["reason"].split(":")[0] for d in webhook_receiver.deliveries] == [
        "paused", "approval_pending"]


def test_an_expired_approval_whose_record_was_refused_is_finished_by_a_later_pass(
        tmp_path, run, webhook_receiver):
    """The approval expired (decided in its section) and the execution's final record
    (`escalated`) was refused. The pass after found the approval decided already and skipped
    it: the execution stayed `blocked` on an approval nobody can give, with no final record.
    A later pass finishes it, once, without paging again."""

    async def scenario() -> tuple[Harness, dict]:
        h = await _hooked(tmp_path, webhook_receiver, approval=True)
        service = h.service
        [pending] = await h.fire(web(0))
        assert pending["reason"].startswith("approval_pending"), pending
        h.clock.now += service.config.guards.approval_ttl + 1
        db = _refusing(h, FINAL)
        for _ in range(2):  # the second pass tries again, and does not page again
            # the store refused the expiry's record
            with pytest.raises(Exception, match="injected"):
                await service.maintain()
        _accepting(db)
        await service.maintain()
        await service.maintain()  # finished already: nothing more
        done = await service.store.get_execution(pending["id"])
        await service.stop()
        return h, done

    h, done = run(scenario())
    assert done["outcome"] == "escalated", (done["outcome"], done["reason"])
    assert "was not approved before it expired" in done["reason"]
    assert h.calls == []
    assert [d.body["outcome"] for d in webhook_receiver.deliveries] == ["blocked", "escalated"]


def test_an_expired_approval_left_indexed_until_its_record_is_written_is_not_approved(
        tmp_path, run, webhook_receiver):
    """The approval expired (its pending entry kept until the execution's record is written)
    and that record was refused. An operator then approves it on a replica whose clock is
    2 s behind (its TTL not passed there): the approval was decided `expired` already, so it
    is refused as expired, nothing is resumed, and the next pass finishes the execution."""

    async def scenario() -> tuple[Harness, dict, str]:
        h = await _hooked(tmp_path, webhook_receiver, approval=True)
        service = h.service
        [pending] = await h.fire(web(0))
        expires_at = h.clock.now + service.config.guards.approval_ttl
        h.clock.now = expires_at + 1
        db = _refusing(h, FINAL)
        with pytest.raises(Exception, match="injected"):  # the store refused the expiry's record
            await service.maintain()
        _accepting(db)
        h.clock.now = expires_at - 1  # the approving replica's clock
        refused = await _refusal(service.approve(pending["id"], by="alice"))
        h.clock.now = expires_at + 11
        await service.maintain()
        done = await service.store.get_execution(pending["id"])
        await service.stop()
        return h, done, refused

    h, done, refused = run(scenario())
    assert "expired" in refused, refused
    assert done["outcome"] == "escalated", (done["outcome"], done["reason"])
    assert "was not approved before it expired" in done["reason"]
    assert h.calls == []
    assert [d.body["outcome"] for d in webhook_receiver.deliveries] == ["blocked", "escalated"]


@pytest.mark.parametrize(("store", "refused"), [("sqlite", False), ("sqlite", True),
                                                ("postgresql", True)])
def test_an_approval_withdrawn_by_the_resolution_finishes_its_execution_once(
        tmp_path, run, webhook_receiver, request, store, refused):
    """The alert resolved while its step waited for approval: the resolution withdrew the
    approval, and the firing execution stayed `blocked approval_pending` for good (shown as
    waiting, though nothing can approve or expire it). It is recorded as a run the
    resolution stopped before its step (`resolved`, the step cancelled), once, and nobody is
    paged again: also when the store refused that record (the resolution's retry writes
    it; on PostgreSQL a statement's refusal, not taken for the resolution's own failure)."""
    cluster = request.getfixturevalue("postgres_cluster") if store == "postgresql" else None
    url = request.getfixturevalue("postgres_url") if cluster else None

    async def scenario() -> tuple[Harness, dict, dict]:
        h = await _hooked(tmp_path, webhook_receiver, approval=True, store=url or "")
        service = h.service
        [pending] = await h.fire(web(0))
        assert pending["reason"].startswith("approval_pending"), pending
        resolved = web(0, status="resolved")
        if refused:
            db = _refusing(h, f"NEW.id = '{pending['id']}' AND {FINAL}", cluster)
            delays, retry = _held_back(service)
            task = await _processing(h, delays, 1, resolved)
            stored = await service.store.get_execution(pending["id"])
            assert stored["reason"].startswith("approval_pending"), stored["reason"]
            _accepting(db)
            retry.set()
            await asyncio.wait_for(task, 10)
        else:
            await h.fire(resolved)
        h.clock.now += service.config.guards.approval_ttl + 1
        await service.maintain()  # nothing left pending to expire
        done = await service.store.get_execution(pending["id"])
        journal = await service.store.completed_steps(pending["id"])
        await service.stop()
        return h, done, journal

    h, done, journal = run(scenario())
    assert (done["outcome"], done["reason"]) == (
        "resolved", "the alert resolved before step 'restart'; it was not run (its approval "
        "was withdrawn)"), (done["outcome"], done["reason"])
    assert [s["outcome"] for s in done["steps"]] == ["cancelled"]
    assert journal[0]["outcome"] == "cancelled" and "withdrawn" in journal[0]["detail"]
    assert h.calls == []
    assert [d.body["outcome"] for d in webhook_receiver.deliveries] == ["blocked"]


def test_a_decided_approval_whose_pending_entry_was_left_is_unindexed_by_expiry(
        tmp_path, run, webhook_receiver):
    """The approval was decided (approved, and the step ran), and the store refused the
    removal of its pending entry, the decision's second write. Expiry finds the entry past
    its TTL, decided otherwise: the decider does not come back to remove it, so it is
    removed there. Left, the oldest-approval gauge grew forever (its self-monitoring alert
    firing for an approval nobody waits for) and resolutions took the approvals section."""

    async def scenario() -> tuple[Harness, dict, dict, float]:
        h = await _hooked(tmp_path, webhook_receiver, approval=True)
        service = h.service
        [pending] = await h.fire(web(0))
        await _decided_leaving_its_entry(h, pending["id"], approve=True)
        h.clock.now += service.config.guards.approval_ttl + 1
        await service.maintain()
        left = await service.store.list_state(PENDING)
        done = await service.store.get_execution(pending["id"])
        gauge = service.metrics.oldest_approval._value.get()
        await service.stop()
        return h, done, left, gauge

    h, done, left, gauge = run(scenario())
    assert done["outcome"] == "succeeded" and h.calls == [done["id"]], done
    assert left == {} and gauge == 0, (left, gauge)


def test_an_approval_decided_whose_pending_entry_was_left_is_not_approved_again(
        tmp_path, run, webhook_receiver):
    """Hostile: the approval was rejected and the store refused the removal of its pending
    entry (the decision's second write); the rejection's resume recorded the execution
    denied, final. A reload then removed the playbook, and an operator approves the step:
    the entry is still there, but the approval was decided. Accepted, decide_approval found
    nothing pending, the resume took the removed-playbook branch and wrote over the final
    record 'failed: the approved step did not run', a second page for a step nobody
    approved. It is refused as decided, as an expired one is (50cbc03); nothing changes."""

    async def scenario() -> tuple[Harness, dict, str]:
        h = await _hooked(tmp_path, webhook_receiver, approval=True)
        service = h.service
        [pending] = await h.fire(web(0))
        await _decided_leaving_its_entry(h, pending["id"], approve=False)
        denied = await service.store.get_execution(pending["id"])
        assert "approval_denied" in denied["reason"], denied
        assert await service.store.list_state(PENDING)  # left behind
        rules = tmp_path / "rules" / "web.yaml"
        rules.write_text(rules.read_text().replace("name: restart-web", "name: restart-web-v2"))
        await service.reload()
        refused = await _refusal(service.approve(pending["id"], by="bob"))
        done = await service.store.get_execution(pending["id"])
        await service.stop()
        return h, dict(done, before=denied), refused

    h, done, refused = run(scenario())
    assert "rejected" in refused, refused
    assert done["outcome"] == done["before"]["outcome"], (done["outcome"], done["reason"])
    assert done["reason"] == done["before"]["reason"], done["reason"]
    assert h.calls == []
    assert len(webhook_receiver.deliveries) == 2, [d.body["reason"] for d in
                                                   webhook_receiver.deliveries]


def test_a_resolution_withdraws_its_own_episodes_approval_not_a_later_ones(
        tmp_path, run, webhook_receiver):
    """Hostile: episode 0 asked an approval and resolved; its resolution was processed
    after episode 1 (the same fingerprint, firing again) asked its own. The resolution
    withdrew every approval pending for the fingerprint: episode 1's too, still firing,
    which then could be neither approved nor expired (nothing pending), and its
    resolution's `_withdrawn` only reads its own episode. It withdraws its episode's only."""

    async def scenario() -> tuple[Harness, dict, dict]:
        h = await _hooked(tmp_path, webhook_receiver, approval=True)
        service = h.service
        [first] = await h.fire(web(0))
        [second] = await h.fire(web(1), at=60)
        await h.fire(dict(web(0), status="resolved", endsAt="2026-01-05T10:00:30Z"), at=90)
        withdrawn = await service.store.get_execution(first["id"])
        try:
            approved = await service.approve(second["id"], by="alice")
        except ValueError as exc:
            approved = {"outcome": "refused", "reason": str(exc)}
        await service.stop()
        return h, withdrawn, approved

    h, withdrawn, approved = run(scenario())
    assert withdrawn["outcome"] == "resolved", (withdrawn["outcome"], withdrawn["reason"])
    assert approved["outcome"] == "succeeded", (approved["outcome"], approved["reason"])
    assert len(h.calls) == 1


async def _refusal(approval: Any) -> str:
    """What `approve` refused with (ValueError), or "" if it accepted."""
    try:
        await approval
    except ValueError as exc:
        return str(exc)
    return ""


async def _decided_leaving_its_entry(h: Harness, execution_id: str, approve: bool) -> None:
    """The approval decided and its run resumed, its pending entry left behind, as a version
    before d8102d7 left it when the store refused the entry's removal (a second write then;
    the decision and the removal are one write now, so the entry is put back by hand)."""
    db = sqlite3.connect(h.cfg.store.removeprefix("sqlite:///"), isolation_level=None)
    left = db.execute("SELECT key, value FROM state WHERE key LIKE 'approval-pending:%'"
                      ).fetchall()
    assert left, "no pending entry to leave"
    await h.service.approve(execution_id, by="alice", approve=approve)
    for _ in range(500):
        if not h.service._running:
            break
        await asyncio.sleep(0.01)
    db.executemany("INSERT INTO state (key, value) VALUES (?, ?)", left)
    db.close()
