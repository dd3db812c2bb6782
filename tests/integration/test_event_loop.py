"""The loop `serve` runs on: uvloop by default, Python's own when asked or where uvloop cannot
be imported, and the same decisions either way (real processes: signals, the store's threads,
the listener's accept batches all on the loop under test)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest

from tests.conftest import DEMO_RULES, write_rules
from tests.support.payloads import alert, notification
from tests.support.procs import python_env
from tests.support.worker import TOKEN, WorkerProcess, http


def _loop_of(w: WorkerProcess) -> str:
    metrics = http("GET", f"{w.url}/metrics")[1]
    found = re.search(r'remediator_build_info\{[^}]*event_loop="(\w+)"', metrics)
    assert found, metrics
    return found.group(1)


@pytest.mark.parametrize(("env", "expected"), [({}, "uvloop"),
                                                ({"REMEDIATOR_EVENT_LOOP": "asyncio"}, "asyncio")])
def test_serve_decides_the_same_on_either_loop_and_stops_on_sigterm(tmp_path, env, expected):
    rules = write_rules(tmp_path / "rules", DEMO_RULES)
    w = WorkerProcess(tmp_path, [str(rules)], extra_env=env).start()
    try:
        assert _loop_of(w) == expected
        deadline = time.monotonic() + 10  # log lines are written off the loop, in batches
        while f"(event loop: {expected})" not in w.logs():
            assert time.monotonic() < deadline, w.logs()
            time.sleep(0.05)
        status, body = w.post_alerts(notification(
            alert("DemoDown", namespace="demo", deployment="web", fingerprint="e1"),
            alert("Unrelated", fingerprint="e2")))
        assert (status, body["accepted"]) == (202, 2)
        deadline = time.monotonic() + 20
        while len(decided := [e for e in w.executions() if e["outcome"] != "running"]) < 2:
            assert time.monotonic() < deadline, (decided, w.logs())
            time.sleep(0.05)
        assert sorted((e["alertname"], e["outcome"], e["playbook"]) for e in decided) == [
            ("DemoDown", "planned", "demo-restart"), ("Unrelated", "no_match", None)]
    finally:
        assert w.stop() == 0  # SIGTERM through the loop's signal handler: a clean stop


def test_uvloop_asked_for_where_it_cannot_be_imported_is_refused_and_auto_falls_back(tmp_path):
    # A uvloop that fails to import, as on a platform it has no build for.
    shadow = tmp_path / "shadow" / "uvloop"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('no uvloop build for this platform')\n")
    rules = write_rules(tmp_path / "rules", DEMO_RULES)
    env = python_env({**{k: v for k, v in os.environ.items() if not k.startswith("REMEDIATOR_")},
                      "PYTHONPATH": str(tmp_path / "shadow"), "REMEDIATOR_WEBHOOK_TOKEN": TOKEN,
                      "REMEDIATOR_EVENT_LOOP": "uvloop"})
    refused = subprocess.run([sys.executable, "-m", "remediator.cli", "serve", "--rules",
                              str(rules), "--store", f"sqlite:///{tmp_path}/r.db"],
                             env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2, refused.stderr
    assert "event_loop: uvloop cannot be imported (no uvloop build for this platform)" \
        in refused.stderr

    w = WorkerProcess(tmp_path, [str(rules)], extra_env={
        "PYTHONPATH": str(tmp_path / "shadow"), "REMEDIATOR_EVENT_LOOP": "auto"}).start()
    try:
        assert _loop_of(w) == "asyncio"
    finally:
        assert w.stop() == 0
