"""A run interrupted (kill -9) whose playbook the next process loads renamed, removed or
with a step renamed: the interrupted run is concluded (failed, escalated, its journal in its
note, no step left `running`), and no change it made or may have made is made again.

Real `remediator serve` processes on SQLite (one, restarted) and on PostgreSQL (a replica
killed, another taking its alert over), and a real HTTP receiver counting the POSTs.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.conftest import write_rules
from tests.integration.test_ha_postgres import CONFIG, _alert, _decisions, _notification
from tests.support.worker import WorkerProcess

# One change, a long wait (the kill lands in it), then a second change.
RULES = """
playbooks:
  - name: %(name)s
    match: {alertname: %(alertname)s}
    target: {kind: deployment, namespace: demo, name: "{{ labels.deployment }}"}
    guards: {cooldown: 30m, rate_limit: {max: 100, window: 1h}}
    steps:
      - name: %(first)s
        action: http.request
        params: {url: "%(url)s/restart", method: POST, json: {fp: "{{ alert.fingerprint }}"}}
      - name: settle
        action: wait
        params: {duration: 120s}
        timeout: 180s
      - name: scale
        action: http.request
        params: {url: "%(url)s/scale", method: POST, json: {fp: "{{ alert.fingerprint }}"}}
"""
V1 = {"name": "restart", "alertname": "Broken", "first": "restart"}
RENAMED = {**V1, "name": "restart-v2"}
REMOVED = {**V1, "name": "other", "alertname": "Other"}
STEP_RENAMED = {**V1, "first": "restart_v2"}


def _rules(tmp: Path, receiver, version: dict[str, str]) -> str:
    return str(write_rules(tmp, RULES % {**version, "url": f"http://127.0.0.1:{receiver.port}"}))


def _mid_wait(read) -> dict:
    """The run once its change is journaled and it sleeps in `settle`."""
    deadline = time.monotonic() + 30
    while True:
        runs = [d for d in read() if d["outcome"] == "running"
                and [s["outcome"] for s in d["steps"]] == ["succeeded", "running"]]
        if runs:
            return runs[0]
        assert time.monotonic() < deadline, read()
        time.sleep(0.1)


def _settled(read, count: int, timeout: float = 60) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        decisions = read()
        if len(decisions) >= count and all(d["outcome"] != "running" for d in decisions):
            return decisions
        assert time.monotonic() < deadline, decisions
        time.sleep(0.2)


def _check(decisions: list[dict], old: dict, receiver, tmp: Path, version: dict) -> None:
    """One POST in all; the old run failed with a note naming its change; nothing running."""
    assert [d.path for d in receiver.deliveries] == ["/restart"]
    [concluded] = [d for d in decisions if d["id"] == old["id"]]
    assert concluded["outcome"] == "failed"
    assert "interrupted and not resumed" in concluded["reason"]
    assert "it changed 'restart' (http.request) on demo/deployment/d-f1" in concluded["reason"]
    assert [(s["name"], s["outcome"]) for s in concluded["steps"]] == [
        ("restart", "succeeded"), ("settle", "failed")]
    note = (tmp / "escalations" / f"{old['id']}.md").read_text()
    assert "`restart` (http.request): **succeeded**" in note
    assert all(s["outcome"] != "running" for d in decisions for s in d["steps"])
    others = [d for d in decisions if d["id"] != old["id"]]
    if version is RENAMED:  # the renamed playbook's run would repeat the POST: blocked
        [new] = others
        assert (new["playbook"], new["outcome"]) == ("restart-v2", "blocked")
        assert new["reason"].startswith("interrupted_run: execution " + old["id"])
        assert (tmp / "escalations" / f"{new['id']}.md").exists()
    else:
        assert [d["outcome"] for d in others] == ["no_match"]


def _killed_mid_wait(tmp_path, webhook_receiver) -> tuple[WorkerProcess, dict]:
    """Version 1 on SQLite, its run of alert f1 SIGKILLed while it waits after its POST."""
    w = WorkerProcess(tmp_path, [_rules(tmp_path / "v1", webhook_receiver, V1)],
                      mode="live").start()
    try:
        assert w.post_alerts(_notification(_alert("f1", "Broken")))[0] == 202
        return w, _mid_wait(w.executions)
    finally:
        w.kill9()


@pytest.mark.parametrize("version", [RENAMED, REMOVED], ids=["renamed", "removed"])
def test_sqlite_restart_with_the_playbook_renamed_or_removed(tmp_path, webhook_receiver, version):
    w, old = _killed_mid_wait(tmp_path, webhook_receiver)
    w2 = WorkerProcess(tmp_path, [_rules(tmp_path / "v2", webhook_receiver, version)],
                       mode="live", store=w.db).start()
    try:
        decisions = _settled(w2.executions, 2)
        _check(decisions, old, webhook_receiver, tmp_path, version)
        assert not w2.executions(outcome="running")
    finally:
        assert w2.stop() == 0


@pytest.mark.parametrize("version", [RENAMED, REMOVED], ids=["renamed", "removed"])
def test_postgres_replica_killed_and_its_alert_taken_over_under_another_version(
        tmp_path, webhook_receiver, postgres_url, version):
    env = {"REMEDIATOR_STORE_LEASE": "3s"}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = WorkerProcess(tmp_path / "a", [_rules(tmp_path / "v1", webhook_receiver, V1)],
                      mode="live", store=postgres_url, config=CONFIG, extra_env=env)
    b = WorkerProcess(tmp_path / "b", [_rules(tmp_path / "v2", webhook_receiver, version)],
                      mode="live", store=postgres_url, config=CONFIG, extra_env=env)
    a.start()
    try:
        b.start()
        assert a.post_alerts(_notification(_alert("f1", "Broken")))[0] == 202
        old = _mid_wait(lambda: _decisions(postgres_url))
        a.kill9()  # B takes its alert over once its lease expires
        decisions = _settled(lambda: _decisions(postgres_url), 2)
        # The note of each is B's: B concluded them.
        _check(decisions, old, webhook_receiver, tmp_path / "b", version)
        assert "took over 1 alert" in b.logs()
    finally:
        a.stop()
        assert b.stop() == 0


def test_a_step_renamed_leaves_no_step_running_in_the_failed_decision(tmp_path,
                                                                      webhook_receiver):
    w, old = _killed_mid_wait(tmp_path, webhook_receiver)
    w2 = WorkerProcess(tmp_path, [_rules(tmp_path / "v2", webhook_receiver, STEP_RENAMED)],
                       mode="live", store=w.db).start()
    try:
        [decision] = _settled(w2.executions, 1)
        assert decision["id"] == old["id"] and decision["outcome"] == "failed"
        assert [(s["name"], s["outcome"]) for s in decision["steps"]] == [
            ("restart", "succeeded"), ("settle", "failed")]
        assert decision["reason"].startswith("the playbook changed since this execution")
        assert "it changed 'restart' (http.request)" in decision["reason"]
        assert [d.path for d in webhook_receiver.deliveries] == ["/restart"]
    finally:
        assert w2.stop() == 0
