"""An acknowledged alert never ends without a decision and a note, whatever goes wrong.

A bug outside any execution (reading the stored alert, matching) is recorded `failed` with
the error named and escalated, as one inside an execution is; when not even that can be
recorded, the alert is processed again with backoff, never finished unannounced. The same
holds for an approval's resume.

The faults are real ones, met by the real code paths on the real store: an inbox row that
lacks a field the reader expects (written by another version, or damaged: `Alert.from_dict`
trusts what intake validated), a playbook a reload removed, and a store that refuses writes
to `executions` (a SQLite trigger raising, as a failed write or a newer schema's constraint
would: the store reports it as it reports any failed write).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sqlite3
import subprocess
import sys
import textwrap
import time
from typing import Any

import pytest

from remediator.alerts import dedupe_key, parse_notification
from remediator.engine import execution_id
from remediator.service import Resuming
from tests.conftest import write_rules
from tests.integration.test_guards import Harness, restart_then_approved_scale, web
from tests.support.payloads import notification

SECRET = "hunter2-do-not-leak"


def _damaged(n: int, **labels: str) -> tuple[str, dict, dict]:
    """An inbox row whose alert lacks `annotations`: `Alert.from_dict` raises KeyError."""
    row = web(n, **labels)
    del row["annotations"]
    return f"damaged-{n}", row, {"receiver": "r"}


# A decision's final record (not its `running` record, nor a block's).
FINAL = "NEW.outcome NOT IN ('running', 'blocked')"


def _refusing(h: Harness, when: str = "", postgres: Any = None) -> Any:
    """Make the store refuse every write of a decision record (those `when`, a condition on
    NEW, says), from another connection to the same file (undone by `_accepting`). On
    PostgreSQL (`postgres`: its cluster) the refusal is a statement error, as a constraint's
    or a trigger's is, not an outage."""
    if postgres is not None:
        database = h.cfg.store.rsplit("/", 1)[1]
        postgres.sql("CREATE OR REPLACE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
                     "$$ BEGIN RAISE EXCEPTION 'injected: writes refused'; END $$; CREATE "
                     "TRIGGER refuse BEFORE INSERT ON executions FOR EACH ROW "
                     f"{when and f'WHEN ({when}) '}EXECUTE FUNCTION refuse()", database)
        return lambda: postgres.sql("DROP TRIGGER refuse ON executions", database)
    db = sqlite3.connect(h.cfg.store.removeprefix("sqlite:///"), isolation_level=None)
    db.execute(f"CREATE TRIGGER refuse BEFORE INSERT ON executions {when and 'WHEN ' + when} "
               "BEGIN SELECT RAISE(ABORT, 'injected: writes refused'); END")
    return db


async def _processed_until_accepted(h: Harness, db: Any, retries: int) -> dict:
    """web(0) acknowledged and processed while its records are refused, until it was tried
    again `retries` times; then the store accepts them again: its decision."""
    service = h.service
    await service.intake(parse_notification(json.dumps(notification(web(0))).encode()))
    [item] = await service.store.claim(1)
    task = asyncio.create_task(service._process(item))
    for _ in range(200):
        if task.done() or service.metrics.inbox_retries._value.get() >= retries:
            break
        await asyncio.sleep(0.01)
    _accepting(db)
    [decision] = await asyncio.wait_for(task, 10)
    return decision


def _held_back(service: Any, attempts: int = 1) -> tuple[list[float], asyncio.Event]:
    """The alert's retries back off as asked (the delays recorded), from the `attempts`th on
    until the event is set: the test decides what happens meanwhile."""
    delays: list[float] = []
    retry = asyncio.Event()

    async def backoff(delay: float) -> None:
        delays.append(delay)
        if len(delays) >= attempts:
            await retry.wait()
    service.sleep = backoff
    return delays, retry


async def _processing(h: Harness, delays: list[float], attempts: int,
                      alert: dict | None = None) -> asyncio.Task:
    """`alert` (web(0)) acknowledged and processed until `attempts` attempts failed
    (`_held_back`)."""
    await h.service.intake(parse_notification(json.dumps(notification(alert or web(0))
                                                         ).encode()))
    [item] = await h.service.store.claim(1)
    task = asyncio.create_task(h.service._process(item))
    for _ in range(500):
        if len(delays) >= attempts:
            break
        await asyncio.sleep(0.01)
    assert len(delays) == attempts and not task.done(), delays
    return task


def _started_refusing_web0(h: Harness, store: str, run: Any, request: Any) -> tuple[str, Any]:
    """`h` started on `store` (the suite's PostgreSQL for "postgresql"), the store refusing
    web(0)'s final records: that execution's id, and the refusal (`_accepting` ends it)."""
    cluster = None
    if store == "postgresql":
        h.cfg.store = request.getfixturevalue("postgres_url")
        cluster = request.getfixturevalue("postgres_cluster")
    run(h.start())
    execution = execution_id(dedupe_key("web", web(0)["startsAt"], "firing"), "restart-web")
    return execution, _refusing(h, f"NEW.id = '{execution}' AND {FINAL}", cluster)


async def _recorded(h: Harness, execution_id: str) -> dict:
    """The execution once its record is final and no alert is processed any more."""
    for _ in range(500):
        done = await h.service.store.get_execution(execution_id)
        if done["outcome"] not in ("blocked", "running") and not h.service._running:
            return done
        await asyncio.sleep(0.01)
    raise AssertionError("the execution was never recorded")


def _accepting(db: Any) -> None:
    if not isinstance(db, sqlite3.Connection):
        return db()  # PostgreSQL's (`_refusing`)
    db.execute("DROP TRIGGER refuse")
    db.close()


def test_a_bug_reading_an_acknowledged_alert_is_recorded_failed_and_escalated(tmp_path, run):
    h = run(Harness(tmp_path, "{cooldown: 1m}").start())
    store = h.service.store
    # A label carrying a credential: the note shows the labels, redacted as every output.
    run(store.enqueue([_damaged(0, runbook=f"https://ops:{SECRET}@wiki.example/web")]))
    [failed] = run(h.service.drain())
    assert failed["outcome"] == "failed", failed
    assert failed["reason"].startswith("internal error: KeyError: 'annotations'"), failed
    assert failed["playbook"] is None and h.calls == []
    # The note went out (the default sinks: no playbook was matched), and says why.
    [note] = h.note_files()
    assert "internal error: KeyError" in note.read_text()
    assert failed["escalation"]["deliveries"] == {"files": f"delivered: {note}"}
    stored = run(store.get_execution(failed["id"]))
    assert stored["outcome"] == "failed"
    shown = note.read_text() + stored["escalation"]["note"] + stored["reason"]
    assert SECRET not in shown and "wiki.example" in shown
    # The item is done: drained again, nothing is decided twice.
    assert run(store.pending_count()) == 0 and run(h.service.drain()) == []
    # A healthy alert is still served.
    assert run(h.fire(web(1)))[0]["outcome"] == "succeeded"
    run(h.service.stop())


def test_a_bug_whose_failure_cannot_be_recorded_is_retried_never_dropped(tmp_path, run):
    """Not even the failure could be recorded: the item is not finished, but processed
    again with backoff until it is (here once the store takes writes again)."""
    h = run(Harness(tmp_path, "{cooldown: 1m}").start())
    service, store = h.service, h.service.store
    run(store.enqueue([_damaged(0)]))
    db = _refusing(h)

    async def scenario() -> list[dict]:
        [item] = await store.claim(1)
        task = asyncio.create_task(service._process(item))
        before = h.clock.now
        for _ in range(200):  # the first attempts fail, each retried after a backoff
            if service.metrics.inbox_retries._value.get() >= 3:
                break
            await asyncio.sleep(0.01)
        assert h.clock.now - before >= 1 + 2  # backing off (1 s doubling), not spinning
        assert not task.done() and await store.pending_count() == 1  # not finished
        assert await store.get_execution(execution_id(item.dedupe_key, "")) is None
        _accepting(db)
        return await asyncio.wait_for(task, 10)

    [failed] = run(scenario())
    assert failed["outcome"] == "failed" and "KeyError" in failed["reason"]
    assert run(store.get_execution(failed["id"]))["outcome"] == "failed"
    assert run(h.service.drain()) == []  # finished with its record, once
    run(h.service.stop())


def test_an_approval_of_a_playbook_a_reload_removed_fails_with_a_note(tmp_path, run):
    """Approving a step whose playbook is gone: nothing runs, the execution is final
    (`failed`, not left blocked on an approval nobody can give again) and a human hears."""
    h = run(Harness(tmp_path, "{cooldown: 1m}", approval=True).start())
    [pending] = run(h.fire(web(0)))
    assert pending["outcome"] == "blocked", pending
    rules = tmp_path / "rules" / "web.yaml"
    rules.write_text(rules.read_text().replace("name: restart-web", "name: restart-web-v2"))
    run(h.service.reload())
    notes = len(h.note_files())
    resumed = run(h.service.approve(pending["id"], by="alice"))
    assert resumed["outcome"] == "failed", resumed
    assert "'restart-web' is no longer loaded" in resumed["reason"]
    assert "'restart' did not run" in resumed["reason"]
    assert h.calls == [] and resumed["escalation"] is not None
    assert len(h.note_files()) == notes  # the same note (one per execution), told again
    assert "no longer loaded" in h.note_files()[0].read_text()
    assert run(h.service.store.get_execution(pending["id"]))["outcome"] == "failed"
    assert run(h.service.drain()) == []  # its item is done
    run(h.service.stop())


@pytest.mark.parametrize("approve", [True, False])
def test_a_decided_approval_of_a_removed_playbook_whose_record_was_refused_is_recorded(
        tmp_path, run, approve):
    """Hostile: the playbook was removed by a reload, the approval decided, and the store
    refused the execution's record. The claimed alert went to the dispatcher's retries,
    which match it against the rules loaded now: the removed playbook is never matched, so
    the execution stayed `blocked` on a decided approval, with no final record. The retries
    resume that execution, as the approval did."""
    h = run(Harness(tmp_path, "{cooldown: 1m}", approval=True).start())
    [pending] = run(h.fire(web(0)))
    rules = tmp_path / "rules" / "web.yaml"
    rules.write_text(rules.read_text().replace("name: restart-web", "name: restart-web-v2"))
    run(h.service.reload())
    db = _refusing(h, f"NEW.id = '{pending['id']}'")

    async def scenario() -> dict:
        try:
            await h.service.approve(pending["id"], by="alice", approve=approve)
        except Exception as exc:  # the store refused (the API answers 503)
            assert "writes refused" in str(exc)
        else:
            raise AssertionError("the refused record did not say so")
        _accepting(db)
        for _ in range(500):
            done = await h.service.store.get_execution(pending["id"])
            if not done["reason"].startswith("approval_pending") and not h.service._running:
                return done
            await asyncio.sleep(0.01)
        raise AssertionError("the decided approval's execution was never recorded")

    done = run(scenario())
    assert done["outcome"] == ("failed" if approve else "blocked"), done
    assert "no longer loaded" in done["reason"] and done["escalation"] is not None
    assert h.calls == []
    run(h.service.stop())


def test_an_approved_step_that_ran_before_a_reload_removed_its_playbook_is_not_said_unrun(
        tmp_path, run):
    """Hostile: the approved step ran, the store refused the execution's final record, and
    a reload removed the playbook before the retry. The retry resumes the execution without
    its playbook: it must not record that the approved step did not run (a human would do
    it again by hand): this process knows it ran (its result kept while unwritten)."""
    h = run(Harness(tmp_path, "{cooldown: 1m}", approval=True).start())
    [pending] = run(h.fire(web(0)))
    db = _refusing(h, FINAL)

    async def scenario() -> dict:
        delays, retry = _held_back(h.service)
        with pytest.raises(Exception, match="injected"):  # the store refused the final record
            await h.service.approve(pending["id"], by="alice")
        for _ in range(500):
            if delays:
                break
            await asyncio.sleep(0.01)
        assert delays and h.calls == [pending["id"]]  # it ran, then the retry waits
        rules = tmp_path / "rules" / "web.yaml"
        rules.write_text(rules.read_text().replace("name: restart-web", "name: restart-web-v2"))
        await h.service.reload()
        _accepting(db)
        retry.set()
        return await _recorded(h, pending["id"])

    done = run(scenario())
    assert h.calls == [pending["id"]]
    assert done["outcome"] == "failed", done
    assert "did not run" not in done["reason"], done["reason"]
    assert done["steps"][-1]["outcome"] == "succeeded", done["steps"]
    run(h.service.stop())


def test_a_rejection_of_a_playbook_a_reload_removed_stays_a_rejection(tmp_path, run):
    h = run(Harness(tmp_path, "{cooldown: 1m}", approval=True).start())
    [pending] = run(h.fire(web(0)))
    rules = tmp_path / "rules" / "web.yaml"
    rules.write_text(rules.read_text().replace("name: restart-web", "name: restart-web-v2"))
    run(h.service.reload())
    rejected = run(h.service.approve(pending["id"], by="alice", approve=False))
    assert rejected["outcome"] == "blocked", rejected
    assert rejected["reason"].startswith("approval_denied: step 'restart': approval rejected")
    assert h.calls == []
    run(h.service.stop())


def test_an_approved_resume_the_store_refused_is_taken_over_not_left_claimed(tmp_path, run):
    """The store refused the resume's writes: the operator hears (the error), and the
    claimed alert is processed again with backoff, so the approved step runs once the
    store takes writes, without a restart (a claim left behind waited for one)."""
    h = run(Harness(tmp_path, "{cooldown: 1m}", approval=True).start())
    [pending] = run(h.fire(web(0)))
    db = _refusing(h)

    async def scenario() -> dict:
        try:
            await h.service.approve(pending["id"], by="alice")
        except Exception as exc:  # the store refused (the API answers 503)
            assert "writes refused" in str(exc)
        else:
            raise AssertionError("the refused resume did not say so")
        assert h.calls == []
        _accepting(db)
        for _ in range(500):
            done = await h.service.store.get_execution(pending["id"])
            if done["outcome"] != "blocked" and not h.service._running:
                return done
            await asyncio.sleep(0.01)
        raise AssertionError("the approved resume was never taken up again")

    resumed = run(scenario())
    assert resumed["outcome"] == "succeeded", resumed
    assert h.calls == [pending["id"]]  # once
    assert run(h.service.drain()) == []
    run(h.service.stop())


def test_a_change_whose_record_the_store_refused_is_never_made_again(tmp_path, run):
    """Hostile: the approved restart ran, then the store refused its final record. The
    retries that take the claimed alert over must not restart it again: the change was
    made (its result, unwritten, is kept for them), so the run succeeded, recorded once the
    store takes writes again; it is not failed as interrupted ("verify by hand")."""
    h = run(Harness(tmp_path, "{cooldown: 1m}", approval=True).start())
    [pending] = run(h.fire(web(0)))
    db = _refusing(h, FINAL)

    async def scenario() -> dict:
        with pytest.raises(Exception, match="injected"):  # the store refused its final record
            await h.service.approve(pending["id"], by="alice")
        assert h.calls == [pending["id"]]
        await asyncio.sleep(0.05)  # the retries run meanwhile, and fail
        assert h.service.metrics.inbox_retries._value.get() >= 1
        _accepting(db)
        return await _recorded(h, pending["id"])

    after = run(scenario())
    assert after["outcome"] == "succeeded", after["reason"]
    assert h.calls == [pending["id"]]  # made once, never again
    run(h.service.stop())


def test_a_change_whose_records_are_refused_again_and_again_succeeds_once(tmp_path, run):
    """Hostile: the change ran and its record was refused, and so were those of the retries.
    Each retry knows the change succeeded (its result kept while unwritten): none fails it
    as interrupted, none runs it again, and the success is counted once, once recorded.
    (Before, the first retry failed it `uncertain`; a later one must then read that failure
    from its journal, never continue past it: after a restart, still so.)"""
    h = run(Harness(tmp_path, "{cooldown: 1m, circuit_breaker: {max_refires: 3, window: 1h}}"
                    ).start())
    db = _refusing(h, FINAL)
    service = h.service

    async def scenario() -> dict:
        await service.intake(parse_notification(json.dumps(notification(web(0))).encode()))
        [item] = await service.store.claim(1)
        task = asyncio.create_task(service._process(item))
        for _ in range(200):  # the change is made; its record, then its failure's, refused
            if service.metrics.inbox_retries._value.get() >= 3:
                break
            await asyncio.sleep(0.01)
        assert h.calls and not task.done()
        _accepting(db)
        [decision] = await asyncio.wait_for(task, 10)
        return decision

    decision = run(scenario())
    assert decision["outcome"] == "succeeded", (decision["reason"], decision["steps"])
    assert decision["escalation"] is None and len(h.calls) == 1
    assert run(service.store.count_events("success", "restart-web:prod/deployment/web", 0)) == 1
    run(service.stop())


def test_an_offline_replay_whose_decision_cannot_be_recorded_gives_up_and_says_so(tmp_path):
    """`serve` retries such an alert forever (above); `remediator replay` has nobody to watch
    the retries: it hung, backing off up to a minute at a time, forever. It now gives up
    after a few attempts, names the alert and the error, exits non-zero and prints no
    decision for it. A dry run's own alert is nobody else's: it is marked finished, not left
    for the next serve (which would decide it dry-run: test_replay_shared_store.py)."""
    rules = write_rules(tmp_path / "rules", """
        playbooks:
          - name: note
            match: {alertname: WebDown}
            steps:
              - {name: say, action: log, params: {message: "{{ labels.deployment }} is down"}}
        """)
    store = tmp_path / "replay.db"

    def replay(*alerts: dict) -> subprocess.CompletedProcess[str]:
        payload = tmp_path / "payload.json"
        payload.write_text(json.dumps(notification(*alerts)))
        env = {k: v for k, v in os.environ.items() if not k.startswith("REMEDIATOR_")}
        return subprocess.run([sys.executable, "-m", "remediator.cli", "replay", "--rules",
                               str(rules), "--store", f"sqlite:///{store}", str(payload)],
                              env=env, capture_output=True, text=True, timeout=60)

    first = replay(web(0))
    assert first.returncode == 0 and "→ PLANNED" in first.stdout, first.stderr
    db = sqlite3.connect(store, isolation_level=None)
    db.execute("CREATE TRIGGER refuse BEFORE INSERT ON executions "
               "BEGIN SELECT RAISE(ABORT, 'injected: writes refused'); END")
    started = time.monotonic()
    refused = replay(web(5))
    assert refused.returncode == 2, (refused.stdout, refused.stderr)
    assert time.monotonic() - started < 30  # a few attempts (1 s, then 2 s apart), not forever
    # A dry run's alerts carry identities of their own (`replay-<nonce>-<fingerprint>`).
    said = re.search(r"remediator: alert (replay-[0-9a-f]{8}-(\S+)) not decided after 3 "
                     r"attempts: store write failed: injected: writes refused", refused.stderr)
    assert said and said[2] == dedupe_key("web", web(5)["startsAt"], "firing"), refused.stderr
    key = said[1]
    assert "1 alert(s) of this dry run left undecided, marked finished in the store unless it " \
           "refused that too: any it kept is decided dry-run" in refused.stderr
    assert "PLANNED" not in refused.stdout and "Traceback" not in refused.stderr
    # No record; its item finished, left to no serve.
    assert db.execute("SELECT count(*) FROM executions").fetchone() == (1,)
    assert db.execute("SELECT state FROM inbox WHERE dedupe_key=?", (key,)).fetchone() == ("done",)
    db.execute("DROP TRIGGER refuse")
    db.close()
    # The store takes writes again: the payload replayed is decided (a dry run's own alert,
    # not a duplicate of the one given up).
    again = replay(web(5))
    assert again.returncode == 0 and again.stdout.count("→ PLANNED") == 1, again.stderr
    assert "already received" not in again.stdout


def test_a_change_cancelled_by_the_resolution_stays_cancelled_when_its_record_is_retried(
        tmp_path, run):
    """Hostile: the firing run's change was cancelled (its resolution was acknowledged
    first) and journaled before the note (the playbook always escalates); then its final
    record was refused (or a crash cut it off). Processed again, the run read the cancelled
    step from its journal as one done and went on: nothing ran, yet it was recorded as a
    remediation (escalated after `succeeded`) and the circuit counted a success."""
    h = run(Harness(tmp_path, "{cooldown: 1m, circuit_breaker: {max_refires: 3, window: 1h}}",
                    always=True).start())
    service = h.service
    firing, resolved = web(0), dict(web(0), status="resolved")
    execution = execution_id(dedupe_key("web", firing["startsAt"], "firing"), "restart-web")
    db = _refusing(h, f"NEW.id = '{execution}' AND {FINAL}")

    async def scenario() -> dict:
        for one in (firing, resolved):  # the resolution acknowledged before the run's change
            await service.intake(parse_notification(json.dumps(notification(one)).encode()))
        [item, _] = sorted(await service.store.claim(2), key=lambda i: i.id)
        task = asyncio.create_task(service._process(item))
        for _ in range(200):  # the change is cancelled; its run's record refused
            if service.metrics.inbox_retries._value.get() >= 1:
                break
            await asyncio.sleep(0.01)
        assert not task.done()
        _accepting(db)
        [decision] = await asyncio.wait_for(task, 10)
        return decision

    decision = run(scenario())
    assert h.calls == []
    assert decision["outcome"] == "resolved", (decision["outcome"], decision["reason"])
    assert [s["outcome"] for s in decision["steps"]] == ["cancelled"]
    assert decision["reason"] == "the alert resolved before step 'restart'; it was not run"
    assert run(service.store.count_events("success", "restart-web:prod/deployment/web", 0)) == 0
    run(service.stop())


def test_a_success_recorded_before_its_note_is_counted_once_however_often_its_run_is_retried(
        tmp_path, run):
    """Hostile: a run that escalates always records its success (for the circuit) on its
    own, before the note, then its final record. That record refused (or cut off by a
    crash), the run was processed again from its journal, succeeded again and counted its
    success again, at every attempt: the circuit opened on a remediation made once
    ("remediation is not working"), automation stopped on the target."""
    h = run(Harness(tmp_path, "{cooldown: 1m, circuit_breaker: {max_refires: 2, window: 1h}}",
                    always=True).start())
    service = h.service
    db = _refusing(h, FINAL)

    decision = run(_processed_until_accepted(h, db, 3))
    assert decision["outcome"] == "escalated", (decision["outcome"], decision["reason"])
    assert len(h.calls) == 1
    assert run(service.store.count_events("success", "restart-web:prod/deployment/web", 0)) == 1
    # The next firing is judged on one success, not on the attempts: it runs.
    [again] = run(h.fire(web(5), at=600))
    assert again["outcome"] == "escalated", (again["outcome"], again["reason"])
    run(service.stop())


def test_a_run_processed_again_is_not_stopped_by_its_own_success(tmp_path, run):
    """Hostile: the same refused final record with `max_refires: 1`. Processed again, the
    run was judged by its circuit, which counted the success the run itself had recorded
    before its note: blocked circuit_open, 'remediation is not working' after 1
    successful remediation, automation stopped on the target, for a change made once and
    no firing since. The next firing is the one its circuit stops."""
    h = run(Harness(tmp_path, "{cooldown: 1m, circuit_breaker: {max_refires: 1, window: 1h}}",
                    always=True).start())
    service = h.service
    db = _refusing(h, FINAL)

    decision = run(_processed_until_accepted(h, db, 2))
    assert decision["outcome"] == "escalated", (decision["outcome"], decision["reason"])
    assert len(h.calls) == 1 and run(service.store.get_state(
        "circuit:restart-web:prod/deployment/web")) is None
    [again] = run(h.fire(web(5), at=600))
    assert (again["outcome"], again["reason"].split(":")[0]) == ("blocked", "circuit_open")
    assert len(h.calls) == 1
    run(service.stop())



@pytest.mark.parametrize("always", [False, True])
def test_a_run_processed_again_after_its_change_is_not_stopped_by_its_precondition(
        tmp_path, run, always):
    """Hostile: the restart ran, the problem went away, and the run's final record was
    refused, or cut off by a crash while it verified. Processed again, the run asked its
    precondition again, which no longer held (the restart fixed it): blocked
    precondition_false, quietly, no note, recorded as if nothing had run. Its result is
    known to the retry (journaled before a note, or kept while unwritten): the run
    succeeded, and its circuit must count it, or one restart more than max_refires goes
    through."""
    h = run(Harness(tmp_path, "{cooldown: 1m, precondition: {alert_firing: true}, "
                              "circuit_breaker: {max_refires: 1, window: 1h}}",
                    always=always).start())
    service = h.service

    async def firing_until_restarted(promql, alert, check_firing):
        return (False, "WebDown is no longer firing at Alertmanager") if h.calls else (True, "")
    service.engine.guards.precondition = firing_until_restarted
    db = _refusing(h, FINAL)

    decision = run(_processed_until_accepted(h, db, 2))
    assert len(h.calls) == 1, decision["outcome"]
    assert (decision["outcome"], decision["escalation"] is not None) == (
        ("escalated", True) if always else ("succeeded", False)), decision["reason"]
    assert run(service.store.count_events("success", "restart-web:prod/deployment/web", 0)) == 1
    service.engine.guards.precondition = None  # firing again: its circuit stops it
    [again] = run(h.fire(web(5), at=600))
    assert (again["outcome"], again["reason"].split(":")[0]) == ("blocked", "circuit_open")
    assert len(h.calls) == 1
    run(service.stop())


def test_a_run_resumed_by_its_approval_after_a_change_asks_its_precondition_again(
        tmp_path, run):
    """Not an interrupted run: the first change ran, the second waited for its approval, and
    the first may have fixed the problem meanwhile. Approved, the run asks its precondition
    again (as before), and a problem gone away stops it before the second change."""
    h = Harness(tmp_path, "{}")
    (tmp_path / "rules" / "web.yaml").write_text(restart_then_approved_scale(
        "{cooldown: 1m, precondition: {alert_firing: true}}"))
    run(h.start())

    async def firing_until_restarted(promql, alert, check_firing):
        return (False, "WebDown is no longer firing at Alertmanager") if h.calls else (True, "")
    h.service.engine.guards.precondition = firing_until_restarted
    [pending] = run(h.fire(web(0)))
    assert (pending["outcome"], pending["blocked_step"]) == ("blocked", "scale"), pending
    resumed = run(h.service.approve(pending["id"], by="alice"))
    assert resumed["reason"].startswith("precondition_false"), resumed["reason"]
    assert len(h.calls) == 1
    run(h.service.stop())


@pytest.mark.parametrize(("store", "meanwhile", "always"), [
    ("sqlite", "paused", False), ("sqlite", "paused", True), ("sqlite", "time_window", False),
    ("postgresql", "paused", False)])
def test_a_run_processed_again_after_its_change_is_not_judged_again_by_run_level_guards(
        tmp_path, run, request, store, meanwhile, always):
    """Hostile: the restart ran and the run's final record was refused; before the retry an
    operator paused automation (or the playbook's time window closed). The retry judged the
    run again by its run-level guards: recorded 'blocked: paused ... nothing runs' for a
    restart that was made, its target let go, its success never counted (the circuit one
    short). It is recorded as it ran (succeeded, counted once); the next firing is what
    they stop."""
    windows = "time_windows: [{start: '09:00', end: '10:30'}], " if meanwhile == "time_window" \
        else ""
    h = Harness(tmp_path, f"{{{windows}cooldown: 1m, circuit_breaker: {{max_refires: 3, "
                          "window: 1h}}", always=always)
    _, db = _started_refusing_web0(h, store, run, request)
    service = h.service
    delays, retry = _held_back(service)

    async def scenario() -> dict:
        task = await _processing(h, delays, 1)  # restarted; its record refused
        assert h.calls
        if meanwhile == "paused":
            await service.pause(True, "ops")
        else:
            h.clock.now += 3600  # 11:00, past the window
        _accepting(db)
        retry.set()
        [decision] = await asyncio.wait_for(task, 10)
        return decision

    decision = run(scenario())
    # The restart's result is journaled before the refused record when a note goes out
    # first, or with the internal error's record (PostgreSQL refuses by a statement), else
    # kept, unwritten, for the retry: it succeeded either way.
    assert (decision["outcome"], "interrupted" in decision["reason"]) == (
        "escalated" if always else "succeeded", False), (decision["outcome"], decision["reason"])
    assert len(h.calls) == 1 and (decision["escalation"] is not None) == always
    counted = run(service.store.count_events("success", "restart-web:prod/deployment/web", 0))
    assert counted == 1
    [again] = run(h.fire(web(5), at=3600 + 600))
    assert again["reason"].startswith(meanwhile), again["reason"]
    assert len(h.calls) == 1
    run(service.stop())


def test_a_run_resumed_by_its_approval_is_judged_by_its_run_level_guards(tmp_path, run):
    """Not a run that acted: approved while automation is paused, it is blocked by the pause
    and nothing runs (only a run whose journal shows a change is spared them)."""
    h = run(Harness(tmp_path, "{cooldown: 1m}", approval=True).start())
    [pending] = run(h.fire(web(0)))
    run(h.service.pause(True, "ops"))
    resumed = run(h.service.approve(pending["id"], by="alice"))
    assert (resumed["outcome"], resumed["reason"].split(":")[0]) == ("blocked", "paused"), \
        resumed["reason"]
    assert h.calls == []
    run(h.service.stop())


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_an_approval_whose_decision_the_store_refused_half_way_is_not_left_claimed(
        tmp_path, run, request, store):
    """Hostile: the store refused the removal of the approval's pending index. The alert's
    item, claimed for the resume, stayed claimed: on SQLite nothing takes a claimed item up
    before a restart, so approving again answered 'being processed right now', until a
    restart, hours later perhaps. The decision and the index's removal are one write
    (d8102d7): refused, nothing is recorded, the run stays blocked and its item is let go, so
    the operator's next approval goes through and runs the step once."""
    h = Harness(tmp_path, "{cooldown: 1m}", approval=True)
    if store == "postgresql":
        h.cfg.store = request.getfixturevalue("postgres_url")
    run(h.start())
    [pending] = run(h.fire(web(0)))
    assert pending["outcome"] == "blocked", pending
    if store == "postgresql":
        request.getfixturevalue("postgres_cluster").sql(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE "
            "EXCEPTION 'injected'; END $$; CREATE TRIGGER refuse BEFORE DELETE ON state FOR "
            "EACH ROW WHEN (OLD.key LIKE 'approval-pending:%') EXECUTE FUNCTION refuse()",
            h.cfg.store.rsplit("/", 1)[1])
    else:
        sqlite3.connect(h.cfg.store.removeprefix("sqlite:///"), isolation_level=None).execute(
            "CREATE TRIGGER refuse BEFORE DELETE ON state WHEN OLD.key LIKE "
            "'approval-pending:%' BEGIN SELECT RAISE(ABORT, 'injected'); END")

    async def scenario() -> dict:
        with pytest.raises(Exception, match="injected"):  # the store refused (the API answers 503)
            await h.service.approve(pending["id"], by="alice")
        assert (await h.service.store.get_execution(pending["id"]))["outcome"] == "blocked"
        assert h.calls == []  # nothing was recorded, so nothing ran
        if store == "postgresql":
            request.getfixturevalue("postgres_cluster").sql(
                "DROP TRIGGER refuse ON state", h.cfg.store.rsplit("/", 1)[1])
        else:
            sqlite3.connect(h.cfg.store.removeprefix("sqlite:///"),
                            isolation_level=None).execute("DROP TRIGGER refuse")
        await h.service.approve(pending["id"], by="alice")  # not 'being processed right now'
        for _ in range(500):
            done = await h.service.store.get_execution(pending["id"])
            if done["outcome"] != "blocked" and not h.service._running:
                return done
            await asyncio.sleep(0.01)
        raise AssertionError("the approved step never ran")

    resumed = run(scenario())
    assert resumed["outcome"] == "succeeded", resumed
    assert h.calls == [pending["id"]]  # once
    run(h.service.stop())


@pytest.mark.parametrize(("store", "always"), [("sqlite", False), ("sqlite", True),
                                               ("postgresql", False)])
def test_the_target_stays_locked_until_a_refused_success_is_recorded(
        tmp_path, run, request, store, always):
    """Hostile: the restart ran and the write that carries its success was refused (the final
    record; with a note, the success recorded before it). The run let its target go, and
    until its retry (a backoff of 1 s doubling to 60 s) another alert on the same target
    found it free and restarted it again, uncounted by the circuit: two remedies at once on
    one object. The lock is held until the run's record is written (on PostgreSQL a lock
    row, its lease renewed meanwhile)."""
    h = Harness(tmp_path, "{rate_limit: {max: 5, window: 1h}}", always=always)
    execution, db = _started_refusing_web0(h, store, run, request)
    service = h.service
    if always:  # the success is recorded on its own, before the note: refuse that
        db.execute("CREATE TRIGGER refuse_success BEFORE INSERT ON events WHEN NEW.kind = "
                   f"'success' AND NEW.data LIKE '%{execution}%' BEGIN SELECT "
                   "RAISE(ABORT, 'injected'); END")
    delays, retry = _held_back(service)

    async def scenario() -> tuple[list[dict], dict]:
        task = await _processing(h, delays, 1)  # restarted; its record refused
        assert h.calls
        # Another episode on the same target, while the first run waits for its retry.
        second = await asyncio.wait_for(h.fire(web(1), at=60), 10)
        if always:
            db.execute("DROP TRIGGER refuse_success")
        _accepting(db)
        retry.set()
        [first] = await asyncio.wait_for(task, 10)
        return second, first

    [second], first = run(scenario())
    assert len(h.calls) == 1, (second["outcome"], second["reason"])
    assert second["outcome"] == "blocked" and second["reason"].startswith(
        "locked: coalesced into running execution"), second["reason"]
    assert first["id"] in second["reason"]
    assert first["outcome"] != "blocked", (first["outcome"], first["reason"])
    # Recorded: the target is free again.
    [third] = run(h.fire(web(2), at=120))
    assert third["outcome"] in ("succeeded", "escalated"), third["reason"]
    assert len(h.calls) == 2
    run(service.stop())


def test_an_executions_failure_refused_by_a_statement_is_retried_not_left_running(
        tmp_path, run, postgres_cluster, postgres_url):
    """Hostile, on PostgreSQL: the restart ran and its final record was refused by a
    statement error (a constraint, a trigger, a bug in one: not an outage), so the run
    recorded an internal error, refused the same way. That error was taken for a bug
    outside any execution: the alert's own failure was recorded and its item finished, and
    the execution stayed `running` until a restart. It is processed again with backoff, as
    after an outage, until the execution's own final record is written."""
    h = Harness(tmp_path, "{cooldown: 1m}")
    h.cfg.store = postgres_url
    run(h.start())
    service = h.service
    key = dedupe_key("web", web(0)["startsAt"], "firing")
    execution = execution_id(key, "restart-web")
    db = _refusing(h, f"NEW.id = '{execution}' AND {FINAL}", postgres_cluster)
    delays, retry = _held_back(service, 3)

    async def scenario() -> dict:
        task = await _processing(h, delays, 3)
        assert (await service.store.get_execution(execution))["outcome"] == "running"
        _accepting(db)
        retry.set()
        [decision] = await asyncio.wait_for(task, 10)
        return decision

    decision = run(scenario())
    assert decision["id"] == execution, (decision["playbook"], decision["reason"])
    assert delays == [1, 2, 4]  # backing off, not spinning
    # The restart's result was journaled before the internal error's note: what it was.
    assert decision["outcome"] == "succeeded", (decision["outcome"], decision["reason"])
    assert run(service.store.get_execution(execution))["outcome"] == "succeeded"
    assert run(service.store.get_execution(execution_id(key, ""))) is None
    assert len(h.calls) == 1  # the restart, once
    assert run(service.store.count_events("success", "restart-web:prod/deployment/web", 0)) == 1
    assert run(service.drain()) == []  # its item is done
    run(service.stop())


def test_a_run_processed_again_before_a_change_still_to_make_is_judged_by_its_window(
        tmp_path, run):
    """Hostile: a two-step run made its first change (journaled succeeded); the second
    change's admission, then the run's failure record, were refused by the store. Retried
    an hour later, past the playbook's time window: its journal shows a change, so only the
    target lock judged it (5c5ed25), and the second change was made outside the window. A
    change still to make is judged by the run-level guards: it does not run."""
    h = Harness(tmp_path, "{time_windows: [{start: '09:00', end: '10:30'}], cooldown: 1m}")
    rules = tmp_path / "rules" / "web.yaml"
    rules.write_text(rules.read_text().replace("    escalation:", textwrap.indent(
        "  - name: scale\n    action: http.request\n"
        "    params: {url: \"http://127.0.0.1:9/scale\", method: POST}\n", "    ")
        + "    escalation:"))
    run(h.start())
    service = h.service
    db = sqlite3.connect(h.cfg.store.removeprefix("sqlite:///"), isolation_level=None)
    db.execute("CREATE TRIGGER refuse_scale BEFORE INSERT ON events WHEN NEW.kind = 'mutation' "
               "AND NEW.data LIKE '%scale%' BEGIN SELECT RAISE(ABORT, 'injected'); END")
    refused = _refusing(h, FINAL)
    delays, retry = _held_back(service)

    async def scenario() -> dict:
        task = await _processing(h, delays, 1)  # restarted; the scale's admission refused
        assert len(h.calls) == 1
        h.clock.now += 3600  # 11:00, past the window
        db.execute("DROP TRIGGER refuse_scale")
        _accepting(refused)
        retry.set()
        [decision] = await asyncio.wait_for(task, 10)
        return decision

    decision = run(scenario())
    db.close()
    assert len(h.calls) == 1, (decision["outcome"], decision["reason"], decision["steps"])
    assert decision["outcome"] == "blocked" and "time_window" in decision["reason"], decision
    assert "stopped after its first changes" in decision["reason"], decision["reason"]
    assert decision["escalation"] is not None
    stored = run(service.store.get_execution(decision["id"]))
    assert [s["outcome"] for s in stored["steps"]] == ["succeeded"], stored["steps"]
    run(service.stop())


def test_a_lock_release_the_store_refuses_leaves_neither_the_run_in_flight_nor_the_target_held(
        tmp_path, run, postgres_cluster, postgres_url):
    """Hostile, on PostgreSQL (SQLite's locks are in the process's memory: nothing to
    refuse): the restart ran and was recorded, then the store refused the release of its
    target lock (a trigger, as a constraint or a bug in one would). The refusal escaped the
    run's `finally` before it was marked stopped, so the alert's retry waited for itself for
    ever (its dispatcher slot with it, and every resume or resolution of that run). The
    refusal is logged; the lock, no longer renewed, expires with its lease."""
    h = Harness(tmp_path, "{cooldown: 1m}")
    h.cfg.store, h.cfg.store_lease = postgres_url, 3.0
    run(h.start())
    postgres_cluster.sql(
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE "
        "EXCEPTION 'injected: release refused'; END $$; CREATE TRIGGER refuse BEFORE DELETE "
        "ON locks FOR EACH ROW EXECUTE FUNCTION refuse()", postgres_url.rsplit("/", 1)[1])

    [first] = run(asyncio.wait_for(h.fire(web(0)), 30))
    assert first["outcome"] == "succeeded", (first["outcome"], first["reason"])
    assert run(h.service.store.get_execution(first["id"]))["outcome"] == "succeeded"
    assert h.calls == [first["id"]]

    async def later() -> list[dict]:
        await asyncio.sleep(h.cfg.store_lease + 1)  # the lock left behind expired
        return await asyncio.wait_for(h.fire(web(5), at=300), 30)

    [second] = run(later())  # a later episode, past the cooldown: the target is free again
    assert second["outcome"] == "succeeded", (second["outcome"], second["reason"])
    assert h.calls == [first["id"], second["id"]]
    run(h.service.stop())


def test_an_approval_answered_as_the_service_stops_says_the_run_resumes(tmp_path, run):
    """Stopping began between the approval's check of it and its run's change: the change is
    not started (`Steps.stopping`), and the run's task ends cancelled. Its result was read
    as the answer's, so CancelledError went up through the HTTP handler and the approver's
    connection was dropped with no answer. It is a 202 (`Resuming`): decided, and the run
    resumes from its journal at restart (test_crash_recovery's SIGTERM tests)."""
    h = Harness(tmp_path, "{cooldown: 1m}", approval=True)
    run(h.start())
    [pending] = run(h.fire(web(0)))
    assert pending["outcome"] == "blocked", pending

    async def scenario() -> None:
        h.service.engine.steps.stopping = True  # what `Service.stop` sets first
        with pytest.raises(Resuming):
            await h.service.approve(pending["id"], by="alice", answer_within=5)

    run(scenario())
    assert h.calls == []  # not started while stopping
    run(h.service.stop())
