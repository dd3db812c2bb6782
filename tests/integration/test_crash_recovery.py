"""kill -9: acknowledged alerts are executed after restart, exactly once, and journaled steps
are not repeated. Uses the real `remediator serve` process and a real HTTP peer."""

import contextlib
import json
import re
import sqlite3
import threading
import time

from remediator.alerts import parse_notification
from remediator.config import Config
from remediator.engine.executor import Executor
from remediator.playtest import FakeClock
from remediator.service import Service
from tests.conftest import write_rules
from tests.support.payloads import alert, notification
from tests.support.webhook import WebhookReceiver
from tests.support.worker import OPERATOR, WorkerProcess, http, loopback_guards

RULES = """
playbooks:
  - name: crash-test
    match: {alertname: CrashTest}
    target: {kind: deployment, namespace: demo, name: "{{ labels.deployment }}"}
    guards: {rate_limit: {max: 100, window: 1h}}
    steps:
      - name: first
        action: http.request
        params: {url: "%(url)s", method: POST, json: {fp: "{{ alert.fingerprint }}", step: 1}}
      - name: pause
        action: wait
        params: {duration: 2s}
      - name: second
        action: http.request
        params: {url: "%(url)s", method: POST, json: {fp: "{{ alert.fingerprint }}", step: 2}}
"""


def _calls(receiver) -> list[tuple[str, int]]:
    return sorted((d.body["fp"], d.body["step"]) for d in receiver.deliveries)


def test_kill_9_loses_nothing_and_repeats_nothing(tmp_path, webhook_receiver):
    rules = write_rules(tmp_path / "rules", RULES % {"url": webhook_receiver.url})
    # Five executions in flight at most: the five queued alerts stay queued (acknowledged,
    # not started) until the kill, however fast the first steps are admitted.
    env = {"REMEDIATOR_WORKERS": "16", "REMEDIATOR_MAX_EXECUTIONS": "5"}
    w = WorkerProcess(tmp_path, [str(rules)], mode="live", extra_env=env).start()
    running = [alert("CrashTest", deployment=f"run{i}", fingerprint=f"run{i}") for i in range(5)]
    assert w.post_alerts(notification(*running))[0] == 202
    # Kill while every execution sits in its `wait` step: step 1 is journaled, step 2 is not.
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        waiting = [d for d in w.executions(outcome="running")
                   if [s["outcome"] for s in d["steps"]] == ["succeeded", "running"]]
        if len(waiting) == 5:
            break
        time.sleep(0.05)
    assert len(waiting) == 5
    queued = [alert("CrashTest", deployment=f"new{i}", fingerprint=f"new{i}") for i in range(5)]
    assert w.post_alerts(notification(*queued))[0] == 202  # acknowledged ...
    w.kill9()  # ... and killed right after
    assert all(step == 1 for _, step in _calls(webhook_receiver))

    w2 = WorkerProcess(tmp_path, [str(rules)], mode="live", extra_env=env, store=w.db).start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            done = [d for d in w2.executions() if d["outcome"] == "succeeded"]
            if len(done) == 10:
                break
            time.sleep(0.2)
        assert len(done) == 10, w2.logs()
        expected = sorted((a["fingerprint"], s) for a in running + queued for s in (1, 2))
        assert _calls(webhook_receiver) == expected  # every alert once, no step twice
        assert "resuming" in w2.logs()
    finally:
        assert w2.stop() == 0


SLOW = """
playbooks:
  - name: slow
    match: {alertname: Slow}
    steps:
      - name: pause
        action: wait
        params: {duration: "{{ labels.seconds }}s"}
        timeout: 60s
"""


def test_sigterm_lets_running_steps_finish_within_the_grace_period(tmp_path):
    rules = write_rules(tmp_path / "rules", SLOW)
    env = {"REMEDIATOR_GRACE_PERIOD": "3s"}
    w = WorkerProcess(tmp_path, [str(rules)], mode="live", extra_env=env).start()
    w.post_alerts(notification(alert("Slow", seconds="1", fingerprint="quick"),
                               alert("Slow", seconds="30", fingerprint="long")))
    deadline = time.monotonic() + 10
    while len(w.executions(outcome="running")) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    started = time.monotonic()
    assert w.stop() == 0
    assert time.monotonic() - started < 10  # the grace period, not the 30 s step
    assert "still running after the 3s grace period" in w.logs()

    w2 = WorkerProcess(tmp_path, [str(rules)], mode="live", extra_env=env, store=w.db).start()
    try:
        done = {d["fingerprint"]: d["outcome"] for d in w2.executions()}
        assert done["quick"] == "succeeded"  # finished during the grace period
        assert done["long"] == "running"  # cut off: resumed after the restart, not lost
        assert "resuming 1 alert(s)" in w2.logs()
    finally:
        w2.stop(timeout=5)


def test_pruned_inbox_items_never_run_twice(tmp_path, run):
    """Finished alerts leave the inbox after the retention; a redelivery then is enqueued
    again but finds its execution final and runs nothing."""
    calls: list[str] = []

    async def runner(action, params, ctx):
        calls.append(ctx.execution_id)
        return {}

    rules = write_rules(tmp_path / "rules", RULES % {"url": "http://127.0.0.1:9/x"})
    cfg = Config(rules=[str(rules)], store=f"sqlite:///{tmp_path}/p.db", mode="live",
                 escalation_dir=str(tmp_path / "notes"), inbox_retention=3600,
                 guards=loopback_guards())
    clock = FakeClock(time.time())  # the inbox records real receive times
    service = Service(cfg, clock=clock, executor=Executor(runner=runner, retry_wait=0),
                      sleep=clock.sleep)
    payload = notification(alert("CrashTest", deployment="web", fingerprint="p1",
                                 starts_at="2026-01-05T09:00:00Z"))

    async def scenario() -> None:
        await service.start(dispatch=False)
        n = parse_notification(json.dumps(payload).encode())
        assert (await service.intake(n)).accepted == 1
        await service.drain()
        await service.store.close()  # flushes the lazily marked `done`
        await service.store.open()
        assert (await service.intake(n)).duplicates == 1
        clock.now += 2 * 3600  # past the one-hour retention
        await service.maintain()
        assert (await service.intake(n)).accepted == 1  # forgotten: enqueued again ...
        assert [d["outcome"] for d in await service.drain()] == ["succeeded"]  # ... but final
        await service.stop()

    run(scenario())
    assert len(calls) == 3 and len(set(calls)) == 1  # one execution, its three steps once each


APPROVED = """
playbooks:
  - name: approved-restart
    match: {alertname: NeedsHuman}
    target: {kind: deployment, namespace: demo, name: web}
    guards: {cooldown: 1m}
    steps:
      - name: restart
        action: http.request
        approval: required
        params: {url: "%(url)s", method: POST, json: {fp: "{{ alert.fingerprint }}", step: 1}}
      - name: verify
        action: wait
        params: {duration: 6s}
"""


def test_kill_9_during_an_approved_resume_resumes_it_after_restart(tmp_path, webhook_receiver):
    """The approval claims the alert's inbox item for its resume: nothing marks it done
    while the approved resume still runs, or a kill -9 would leave the execution `running`
    forever."""
    rules = write_rules(tmp_path / "rules", APPROVED % {"url": webhook_receiver.url})
    w = WorkerProcess(tmp_path, [str(rules)], mode="live").start()
    assert w.post_alerts(notification(alert("NeedsHuman", fingerprint="h1")))[0] == 202
    deadline = time.monotonic() + 15
    while not (blocked := w.executions(outcome="blocked")):
        assert time.monotonic() < deadline, w.logs()
        time.sleep(0.05)
    url = f"{w.url}/api/v1/executions/{blocked[0]['id']}/approve"
    # The API answers when the resume ends; this test kills the process before that.
    def approve() -> None:
        with contextlib.suppress(OSError):  # the connection dies with the process
            http("POST", url, b"", OPERATOR, timeout=60)
    threading.Thread(target=approve, daemon=True).start()
    deadline = time.monotonic() + 15
    while not (running := w.executions(outcome="running")) or [
            s["outcome"] for s in running[0]["steps"]] != ["succeeded", "running"]:
        assert time.monotonic() < deadline, w.logs()
        time.sleep(0.05)
    # Any later write commits what the dispatcher decided about the re-queued alert.
    assert w.post_alerts(notification(alert("Unrelated", fingerprint="u1")))[0] == 202
    while len(w.executions()) < 2:
        time.sleep(0.05)
    w.kill9()

    w2 = WorkerProcess(tmp_path, [str(rules)], mode="live", store=w.db).start()
    try:
        deadline = time.monotonic() + 30
        while (d := w2.executions(fingerprint="h1")[0])["outcome"] == "running":
            assert time.monotonic() < deadline, w2.logs()
            time.sleep(0.2)
        # Resumed from its journal: the approved restart is not repeated, the verification
        # (read-only) runs again to its end.
        assert d["outcome"] == "succeeded", d["reason"]
        assert [s["outcome"] for s in d["steps"]] == ["succeeded", "succeeded"]
        assert _calls(webhook_receiver) == [("h1", 1)]
        assert w2.executions(outcome="running") == []
    finally:
        assert w2.stop() == 0


WAITS = """
playbooks:
  - name: waits
    match: {alertname: Waits}
    target: {kind: deployment, namespace: demo, name: web}
    guards: {rate_limit: {max: 100, window: 1h}}
    steps:
      - name: pause
        action: wait
        params: {duration: 2s}
      - name: notify
        action: http.request
        params: {url: "%(url)s", method: POST, json: {fp: "{{ alert.fingerprint }}", step: 2}}
"""


def test_a_store_locked_mid_run_is_retried_not_stranded(tmp_path, webhook_receiver):
    """Another process holds SQLite's write lock past the store's patience while a step
    runs: recording fails, and the alert is processed again with backoff, not left
    `running` until someone restarts remediator."""
    rules = write_rules(tmp_path / "rules", WAITS % {"url": webhook_receiver.url})
    w = WorkerProcess(tmp_path, [str(rules)], mode="live").start()
    try:
        assert w.post_alerts(notification(alert("Waits", fingerprint="s1")))[0] == 202
        deadline = time.monotonic() + 15
        while not w.executions(outcome="running"):
            assert time.monotonic() < deadline, w.logs()
            time.sleep(0.05)
        locker = sqlite3.connect(w.db.removeprefix("sqlite:///"), isolation_level=None)
        locker.execute("BEGIN IMMEDIATE")  # a backup tool, say: every write now waits
        deadline = time.monotonic() + 30
        while "store unavailable while processing" not in w.logs():
            assert time.monotonic() < deadline, w.logs()
            time.sleep(0.1)
        locker.execute("COMMIT")
        locker.close()
        deadline = time.monotonic() + 30
        while (d := w.executions(fingerprint="s1")[0])["outcome"] == "running":
            assert time.monotonic() < deadline, w.logs()
            time.sleep(0.1)
        assert d["outcome"] == "succeeded", d["reason"]
        assert _calls(webhook_receiver) == [("s1", 2)]
        metrics = http("GET", f"{w.url}/metrics")[1]
        assert re.search(r"^remediator_inbox_retries_total [1-9]", metrics, re.M), metrics
    finally:
        assert w.stop() == 0


NEEDS_HUMAN = """
playbooks:
  - name: always-escalates
    match: {alertname: NeedsHuman}
    steps:
      - name: note
        action: log
        params: {message: "a human decides"}
    escalation: {severity: critical, always: true, sinks: [hook]}
"""


def test_a_crash_between_delivery_and_record_repeats_the_note_under_the_same_key(
        tmp_path, webhook_receiver):
    """kill -9 while the sink holds the note, before remediator records the delivery: after the
    restart the note goes out again, and the receiver can tell it is the same one."""
    rules = write_rules(tmp_path / "rules", NEEDS_HUMAN)
    config = {"escalation": {"sinks": {"hook": {"type": "webhook", "url": webhook_receiver.url}}}}
    w = WorkerProcess(tmp_path, [str(rules)], mode="live", config=config).start()

    def crash_once(delivery) -> None:
        webhook_receiver.on_post = None
        w.kill9()  # the note has arrived; its answer and its record never will

    webhook_receiver.on_post = crash_once
    assert w.post_alerts(notification(alert("NeedsHuman", fingerprint="h1")))[0] == 202
    webhook_receiver.wait_for(timeout=20)
    assert w.proc is not None and w.proc.wait(10) == -9

    w2 = WorkerProcess(tmp_path, [str(rules)], mode="live", store=w.db, config=config).start()
    try:
        deadline = time.monotonic() + 30
        while not (done := w2.executions(outcome="escalated")):
            assert time.monotonic() < deadline, w2.logs()
            time.sleep(0.1)
        [decision] = done
        assert decision["escalation"]["deliveries"]["hook"].startswith("delivered")
    finally:
        assert w2.stop() == 0
    first, again = webhook_receiver.deliveries
    for delivery in (first, again):
        assert delivery.headers["Idempotency-Key"] == decision["id"]
        assert delivery.body["idempotency_key"] == decision["id"] == delivery.body["id"]


def test_a_change_whose_result_the_store_refused_is_not_taken_for_an_interrupted_one(
        tmp_path, webhook_receiver):
    """The store refuses the write of a change's success (locked by another process past
    its patience): the alert's retry, in the same process, knows the change succeeded and
    goes on with the next step, instead of finding it `running` in the journal and failing
    the run as interrupted ("verify its effect by hand") with the fix half applied."""
    rules = write_rules(tmp_path / "rules", RULES % {"url": webhook_receiver.url})
    w = WorkerProcess(tmp_path, [str(rules)], mode="live").start()
    locker = sqlite3.connect(w.db.removeprefix("sqlite:///"), isolation_level=None,
                             check_same_thread=False)

    def lock_before_answering(delivery) -> None:  # the change landed; its record cannot
        if delivery.body["step"] == 1:
            locker.execute("BEGIN IMMEDIATE")
    webhook_receiver.on_post = lock_before_answering
    try:
        assert w.post_alerts(notification(alert("CrashTest", deployment="web",
                                                fingerprint="r1")))[0] == 202
        deadline = time.monotonic() + 30
        while "store unavailable while processing" not in w.logs():
            assert time.monotonic() < deadline, w.logs()
            time.sleep(0.1)
        locker.execute("COMMIT")
        deadline = time.monotonic() + 30
        while (d := w.executions(fingerprint="r1")[0])["outcome"] == "running":
            assert time.monotonic() < deadline, w.logs()
            time.sleep(0.1)
        assert d["outcome"] == "succeeded", d["reason"]
        assert [(s["name"], s["outcome"]) for s in d["steps"]] == [
            ("first", "succeeded"), ("pause", "succeeded"), ("second", "succeeded")]
        assert _calls(webhook_receiver) == [("r1", 1), ("r1", 2)]  # each once
    finally:
        locker.close()
        assert w.stop() == 0


SETTLES = """
playbooks:
  - name: settles
    match: {alertname: Settles}
    target: {kind: deployment, namespace: demo, name: web}
    guards: {rate_limit: {max: 10, window: 1h}}
    steps:
      - name: settle
        action: wait
        params: {duration: 2s}
      - name: restart
        action: http.request
        params: {url: "%(url)s", method: POST, json: {fp: "{{ alert.fingerprint }}", step: 1}}
"""


def test_sigterm_starts_no_change_and_the_run_resumes_with_it_after_restart(
        tmp_path, webhook_receiver):
    """SIGTERM while a run waits before its change: the wait finishes, but the change is not
    started by a process that is stopping (the grace period could cut it off mid-call, and
    it would then be "interrupted: verify by hand"). After the restart the run resumes
    there, and the change is made once."""
    rules = write_rules(tmp_path / "rules", SETTLES % {"url": webhook_receiver.url})
    env = {"REMEDIATOR_GRACE_PERIOD": "20s"}
    w = WorkerProcess(tmp_path, [str(rules)], mode="live", extra_env=env).start()
    assert w.post_alerts(notification(alert("Settles", fingerprint="t1")))[0] == 202
    deadline = time.monotonic() + 10
    while not w.executions(outcome="running"):
        assert time.monotonic() < deadline, w.logs()
        time.sleep(0.05)
    assert w.stop() == 0
    assert webhook_receiver.deliveries == []  # not started while stopping
    assert "still running after" not in w.logs()  # it stopped at once, not at the grace's end

    w2 = WorkerProcess(tmp_path, [str(rules)], mode="live", extra_env=env, store=w.db).start()
    try:
        deadline = time.monotonic() + 30
        while (d := w2.executions(fingerprint="t1")[0])["outcome"] == "running":
            assert time.monotonic() < deadline, w2.logs()
            time.sleep(0.1)
        assert d["outcome"] == "succeeded", d["reason"]
        assert _calls(webhook_receiver) == [("t1", 1)]
    finally:
        assert w2.stop() == 0


RESENT = """
playbooks:
  - name: resent
    match: {alertname: Resent}
    target: {kind: deployment, namespace: demo, name: web}
    guards: {cooldown: 30m}
    steps:
      - name: restart
        action: http.request
        params: {url: "%(url)s", method: POST, json: {fp: "{{ alert.fingerprint }}", step: 1}}
"""


def test_an_alert_still_resent_past_the_retention_is_not_run_again(tmp_path, webhook_receiver):
    """Alertmanager re-sends a still-firing alert every `repeat_interval`: each resend is a
    duplicate, which never refreshed its item's receive time, so past the inbox retention
    the item was pruned like one long gone (its execution and cooldown with the history's),
    and the next resend ran the playbook again on the same episode. A resend now marks its
    item received again (after an hour), and the prune keeps it."""
    rules = write_rules(tmp_path / "rules", RESENT % {"url": webhook_receiver.url})
    cfg = {"history_retention": "1d", "inbox_retention": "1d"}
    payload = notification(alert("Resent", fingerprint="fr", starts_at="2026-11-30T10:00:00Z"))
    w = WorkerProcess(tmp_path, [str(rules)], mode="live", config=cfg).start()
    db = sqlite3.connect(w.db.removeprefix("sqlite:///"), isolation_level=None)
    try:
        assert w.post_alerts(payload)[0] == 202
        assert [e["outcome"] for e in w.decided()] == ["succeeded"]
        # 25 hours pass, the alert still firing: its rows are as old as they would be then.
        old, old_ts = "2026-12-01T06:00:00.000000Z", time.time() - 25 * 3600
        db.execute("UPDATE inbox SET received_at=?", (old,))
        db.execute("UPDATE executions SET created_at=?, updated_at=?", (old, old))
        db.execute("UPDATE events SET at=?", (old_ts,))
        assert w.post_alerts(payload)[1] == {"accepted": 0, "duplicates": 1}  # re-sent
        # (a later decision: the store's newest is never pruned)
        assert w.post_alerts(notification(alert("Unmatched", fingerprint="other")))[0] == 202
        deadline = time.monotonic() + 30
        while not w.executions(fingerprint="other"):
            assert time.monotonic() < deadline, w.logs()
            time.sleep(0.1)
        deadline = time.monotonic() + 30  # the next maintenance pass (every 10 s)
        while db.execute("SELECT received_at FROM inbox WHERE dedupe_key LIKE 'fr:%'"
                         ).fetchall() == [(old,)]:
            assert time.monotonic() < deadline, w.logs()
            time.sleep(0.2)
    finally:
        db.close()
        assert w.stop() == 0
    w2 = WorkerProcess(tmp_path, [str(rules)], mode="live", config=cfg, store=w.db).start()
    try:
        deadline = time.monotonic() + 30  # a start's first maintenance pass prunes
        while "pruned 1 execution(s)" not in w2.logs():
            assert time.monotonic() < deadline, w2.logs()
            time.sleep(0.1)
        assert w2.post_alerts(payload)[1] == {"accepted": 0, "duplicates": 1}  # not forgotten
        assert len(webhook_receiver.deliveries) == 1
    finally:
        assert w2.stop() == 0


UNCERTAIN_THEN_NEXT = """
playbooks:
  - name: uncertain
    match: {alertname: Uncertain}
    target: {kind: deployment, namespace: demo, name: web}
    guards: {rate_limit: {max: 10, window: 1h}}
    escalation: {severity: critical, sinks: [hook]}
    steps:
      - name: first
        action: http.request
        on_failure: continue
        params: {url: "%(url)s", method: POST, json: {fp: "{{ alert.fingerprint }}", step: 1}}
      - name: second
        action: http.request
        params: {url: "%(url)s", method: POST, json: {fp: "{{ alert.fingerprint }}", step: 2}}
"""


def test_a_change_failed_uncertain_is_not_continued_past_after_a_restart(
        tmp_path, webhook_receiver):
    """The first change is answered 500 (it may have applied: uncertain), so its run fails
    and escalates though the step says `on_failure: continue`. Its failure is journaled
    before the note; kill -9 while the sink holds the note, before the final record: the
    restarted worker finds the run `running` with that failure in its journal. It decides
    it again as it was (failed, escalated), never continuing to the second change nor
    sending the first again."""
    changes = WebhookReceiver(status=500)
    rules = write_rules(tmp_path / "rules", UNCERTAIN_THEN_NEXT % {"url": changes.url})
    config = {"escalation": {"sinks": {"hook": {"type": "webhook", "url": webhook_receiver.url}}}}
    w = WorkerProcess(tmp_path, [str(rules)], mode="live", config=config).start()

    def crash_once(delivery) -> None:
        webhook_receiver.on_post = None
        w.kill9()  # the uncertain failure is journaled, the run's record is not

    webhook_receiver.on_post = crash_once
    try:
        assert w.post_alerts(notification(alert("Uncertain", fingerprint="u1")))[0] == 202
        webhook_receiver.wait_for(timeout=20)
        assert w.proc is not None and w.proc.wait(10) == -9
        with sqlite3.connect(w.db.removeprefix("sqlite:///")) as db:  # what the crash left
            assert db.execute("SELECT outcome FROM executions").fetchall() == [("running",)]
        w2 = WorkerProcess(tmp_path, [str(rules)], mode="live", store=w.db,
                           config=config).start()
        try:
            deadline = time.monotonic() + 30
            while not (done := w2.executions(outcome="failed")):
                assert time.monotonic() < deadline, w2.logs()
                time.sleep(0.1)
        finally:
            assert w2.stop() == 0
    finally:
        changes.stop()
    [decision] = done
    assert [(s["name"], s["outcome"], s.get("uncertain")) for s in decision["steps"]] == [
        ("first", "failed", True)], decision["steps"]
    assert "step 'first' failed" in decision["reason"], decision["reason"]
    assert decision["escalation"]["deliveries"]["hook"].startswith("delivered")
    assert [d.body["step"] for d in changes.deliveries] == [1]  # sent once, never the second
    assert len(webhook_receiver.deliveries) == 2  # the note, again after the restart
