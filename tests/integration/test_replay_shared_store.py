"""`replay --store` beside `serve`: the replay decides its own payload's alerts and nothing
else. It never claims serve's pending alerts, never resumes nor takes over an execution a
stopped serve left interrupted (whatever the replay's mode), and an alert serve already
received is a duplicate, as at the webhook. What a dry-run replay leaves unfinished (killed)
is decided dry-run by whoever takes it up. Real `serve` processes, a real HTTP receiver, real
SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from remediator.alerts import DRY_RUN
from tests.conftest import write_rules
from tests.support.payloads import alert, notification
from tests.support.postgres import refused
from tests.support.worker import WorkerProcess

RULES = """
playbooks:
  - name: slow
    match: {alertname: Slow}
    target: {kind: deployment, namespace: demo, name: "{{ labels.x }}"}
    guards: {rate_limit: {max: 100, window: 1h}}
    steps:
      - name: pause
        action: wait
        params: {duration: "{{ labels.seconds }}s"}
        timeout: 60s
      - name: act
        action: http.request
        params: {url: "%(base)s/slowact/{{ labels.x }}", method: POST}
"""


def _slow(x: str, seconds: int) -> dict:
    return alert("Slow", x=x, seconds=str(seconds), fingerprint=f"fp-{x}")


def _replay_args(w: WorkerProcess, tmp: Path, payload: dict, mode: str) -> list[str]:
    """`remediator replay` of `payload` on serve's store, with serve's config and rules."""
    path = tmp / "payload.json"
    path.write_text(json.dumps(payload))
    config = w.args[w.args.index("--config") + 1]
    rules = w.args[w.args.index("--rules") + 1]
    return [sys.executable, "-m", "remediator.cli", "replay", str(path), "--mode", mode,
            "--store", w.db, "--config", config, "--rules", rules, "--format", "json"]


def _replay(w: WorkerProcess, tmp: Path, payload: dict, mode: str) -> list[dict]:
    done = subprocess.run(_replay_args(w, tmp, payload, mode), env=w.env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _in_wait(w: WorkerProcess, x: str, timeout: float = 20) -> None:
    """Until serve's execution for `x` sits in its wait step (journaled `running`)."""
    deadline = time.monotonic() + timeout
    while not [d for d in w.executions(outcome="running")
               if d["alert"]["labels"]["x"] == x and d["steps"]
               and d["steps"][0]["outcome"] == "running"]:
        assert time.monotonic() < deadline, w.logs()
        time.sleep(0.05)


def _outcomes(w: WorkerProcess, count: int, timeout: float = 60) -> dict[str, str]:
    """x -> outcome, once `count` executions are final."""
    deadline = time.monotonic() + timeout
    while True:
        done = {d["alert"]["labels"]["x"]: d["outcome"] for d in w.executions()
                if d["outcome"] != "running"}
        if len(done) >= count:
            return done
        assert time.monotonic() < deadline, (done, w.logs())
        time.sleep(0.1)


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'remediator.db'}"
    return request.getfixturevalue("postgres_url")


@contextlib.contextmanager
def _decisions_refused(request: pytest.FixtureRequest, url: str) -> Iterator[None]:
    """The store refuses every decision's record (a trigger), then no more."""
    message = "injected: decisions refused"
    if url.startswith("postgresql://"):
        with refused(request.getfixturevalue("postgres_cluster"), url,
                     "BEFORE INSERT ON executions FOR EACH ROW", message):
            yield
        return
    db = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
    db.execute(f"CREATE TRIGGER refuse BEFORE INSERT ON executions BEGIN SELECT "
               f"RAISE(ABORT, '{message}'); END")
    try:
        yield
    finally:
        db.execute("DROP TRIGGER refuse")
        db.close()


def test_a_dry_run_replay_killed_mid_decision_is_never_acted_on_by_a_live_serve(
        request, tmp_path, webhook_receiver, store_url):
    """A dry-run replay into serve's store, killed -9 while it retries the record of its
    decision (the store refused it): its alert stayed claimed in the inbox, and the next live
    serve (SQLite: after its recovery made it pending; PostgreSQL: a replica, once the lease
    lapsed) decided it live and acted on what the operator asked as a dry run. The item
    carries its dry-run mode: decided dry-run, planned, nothing sent to the target."""
    base = webhook_receiver.url.removesuffix("/alerts")
    rules = write_rules(tmp_path / "rules", RULES % {"base": base})
    env = {"REMEDIATOR_STORE_LEASE": "3s"}  # PostgreSQL: the replay's lease lapses soon
    w = WorkerProcess(tmp_path, [str(rules)], mode="live", store=store_url, extra_env=env)
    assert w.start().stop() == 0  # the store, as serve made it (SQLite: one writer at a time)
    stderr = tmp_path / "replay.err"
    with _decisions_refused(request, store_url), open(stderr, "w") as err:
        replay = subprocess.Popen(_replay_args(w, tmp_path, notification(_slow("r", 1)),
                                               "dry-run"),
                                  env=w.env, stdout=subprocess.DEVNULL, stderr=err)
        try:  # its decision made and refused: it backs off to try again
            deadline = time.monotonic() + 60
            while "retrying in" not in stderr.read_text():
                assert replay.poll() is None and time.monotonic() < deadline, stderr.read_text()
                time.sleep(0.05)
        finally:
            replay.kill()
            replay.wait(10)
    assert "injected: decisions refused" in stderr.read_text()

    w2 = WorkerProcess(tmp_path, [str(rules)], mode="live", store=store_url,
                       extra_env=env).start()
    try:
        [decided] = w2.decided(timeout=60)
    finally:
        assert w2.stop() == 0
    assert decided["fingerprint"].startswith("replay-"), decided  # the replay's own alert
    assert (decided["mode"], decided["outcome"]) == ("dry-run", "planned"), decided
    assert [s["outcome"] for s in decided["steps"]] == ["planned", "planned"], decided
    assert webhook_receiver.deliveries == []


def test_a_webhook_cannot_make_a_live_serve_take_its_alert_for_a_dry_run(
        tmp_path, webhook_receiver):
    """The dry-run mark is the replay's, in the stored group alone: a payload naming it (a
    top-level key, an alert's key, a label, an annotation) is accepted as any other, and
    its alert is acted on by a live serve."""
    base = webhook_receiver.url.removesuffix("/alerts")
    rules = write_rules(tmp_path / "rules", RULES % {"base": base})
    w = WorkerProcess(tmp_path, [str(rules)], mode="live").start()
    try:
        hostile = alert("Slow", x="h", seconds="0", fingerprint="fp-h",
                        annotations={DRY_RUN: "true"}, **{DRY_RUN: "true"})
        payload = notification({**hostile, DRY_RUN: True})
        payload[DRY_RUN] = True
        assert w.post_alerts(payload)[0] == 202
        [decided] = w.decided()
        webhook_receiver.wait_for(lambda d: d.path == "/slowact/h")
    finally:
        assert w.stop() == 0
    assert (decided["mode"], decided["outcome"]) == ("live", "succeeded"), decided


def test_a_dry_run_replay_leaves_a_stopped_serves_interrupted_live_run_to_serve(
        tmp_path, webhook_receiver, store_url):
    """serve killed -9 in a live run's wait; a dry-run replay of another payload against its
    store decided that run itself (recorded `planned`: the restarted serve never acted, and
    Alertmanager's re-send was a duplicate). Now it is left for the live serve to finish."""
    base = webhook_receiver.url.removesuffix("/alerts")
    rules = write_rules(tmp_path / "rules", RULES % {"base": base})
    env = {"REMEDIATOR_STORE_LEASE": "3s"}  # PostgreSQL: the dead serve's lease lapses soon
    w = WorkerProcess(tmp_path, [str(rules)], mode="live", store=store_url,
                      extra_env=env).start()
    assert w.post_alerts(notification(_slow("a", 3)))[0] == 202
    _in_wait(w, "a")
    w.kill9()
    time.sleep(4)  # past the lease: a replica may now take it over; a replay may not

    replayed = _replay(w, tmp_path, notification(_slow("b", 1)), "dry-run")
    assert [(d["alert"]["labels"]["x"], d["outcome"]) for d in replayed] == [("b", "planned")]
    # recorded under an identity of its own: serve's copy of `b` is not its duplicate
    assert replayed[0]["fingerprint"].startswith("replay-")

    w2 = WorkerProcess(tmp_path, [str(rules)], mode="live", store=store_url,
                       extra_env=env).start()
    try:
        assert _outcomes(w2, 2) == {"a": "succeeded", "b": "planned"}
        assert [d.path for d in webhook_receiver.deliveries] == ["/slowact/a"]
        # Alertmanager's own copy of `b`, sent after the dry run: decided live, once.
        status, answer = w2.post_alerts(notification(_slow("b", 1)))
        assert (status, answer) == (202, {"accepted": 1, "duplicates": 0})
        webhook_receiver.wait_for(lambda d: d.path == "/slowact/b")
        assert sorted(d.path for d in webhook_receiver.deliveries) == ["/slowact/a", "/slowact/b"]
    finally:
        assert w2.stop() == 0


def test_a_live_replay_beside_a_serve_on_postgres_decides_only_its_own_alerts(
        tmp_path, webhook_receiver, postgres_url):
    """Two processes on one PostgreSQL store: while serve runs `a` (in its wait, its one
    execution slot taken) and `queued` waits in the inbox, a live replay of `b` and of `a`
    again decides `b` alone: `a` is a duplicate (serve's), `queued` stays serve's. It used to
    claim every pending alert of the store (and, past a lease, every interrupted run)."""
    base = webhook_receiver.url.removesuffix("/alerts")
    rules = write_rules(tmp_path / "rules", RULES % {"base": base})
    w = WorkerProcess(tmp_path, [str(rules)], mode="live", store=postgres_url,
                      extra_env={"REMEDIATOR_MAX_EXECUTIONS": "1"}).start()
    try:
        assert w.post_alerts(notification(_slow("a", 8)))[0] == 202
        _in_wait(w, "a")
        assert w.post_alerts(notification(_slow("queued", 1)))[0] == 202

        replayed = _replay(w, tmp_path, notification(_slow("b", 1), _slow("a", 8)), "live")
        assert [(d["alertname"], d.get("alert", {}).get("labels", {}).get("x"), d["outcome"])
                for d in replayed] == [("Slow", "b", "succeeded"), ("-", None, "duplicate")]
        assert replayed[-1]["count"] == 1

        assert _outcomes(w, 3) == {"a": "succeeded", "queued": "succeeded", "b": "succeeded"}
        assert sorted(d.path for d in webhook_receiver.deliveries) == [
            "/slowact/a", "/slowact/b", "/slowact/queued"]  # each once
    finally:
        assert w.stop() == 0
