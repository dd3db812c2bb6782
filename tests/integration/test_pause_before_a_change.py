"""The kill switch stops a change that passed its guards before it was thrown, on either store.

A mutation passes the checks before it, then waits for a call slot; meanwhile another replica
(on SQLite: an operator through this one) pauses automation. The change must not start: it is
admitted (the pause checked, its rate-limit and budget places reserved) in the very write
that journals its intent, once the slot is held.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from remediator.config import Config
from remediator.engine.slots import Slots
from remediator.store import open_store
from remediator.store.base import PAUSE
from tests.conftest import write_rules
from tests.integration.test_hot_path import LIVE_RULES
from tests.support.payloads import alert, notification
from tests.support.procs import LOCALHOST, serve_http
from tests.support.worker import TOKEN, InProcessWorker, loopback_guards


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/pause.db"
    return request.getfixturevalue("postgres_url")


def _until(condition: Any, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _held_sink() -> tuple[Any, int, list[str], threading.Event]:
    """A receiver whose calls are answered once `release` is set: the first change holds
    the only call slot until then."""
    calls: list[str] = []
    release = threading.Event()

    class Sink(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            calls.append(self.path)
            release.wait(30)
            self.send_response(202)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server, port = serve_http(Sink)
    return server, port, calls, release


class _Watched(Slots):
    """The real slots, telling which calls asked for one (a change waits in `hold`)."""

    def __init__(self, calls: int, per_backend: int):
        super().__init__(calls, per_backend)
        self.asked: list[str] = []

    @contextlib.asynccontextmanager
    async def hold(self, action: str):  # type: ignore[override]
        self.asked.append(action)
        async with super().hold(action) as slot:
            yield slot


def test_a_pause_while_a_change_waits_for_its_call_slot_stops_it_before_it_starts(
        tmp_path, store_url):
    server, port, calls, release = _held_sink()
    rules = write_rules(tmp_path / "rules", LIVE_RULES % f"http://{LOCALHOST}:{port}/restart")
    cfg = Config(rules=[str(rules)], store=store_url, webhook_token=TOKEN, mode="live",
                 workers=1, escalation_dir=str(tmp_path / "notes"), guards=loopback_guards())
    w = InProcessWorker(cfg).start()
    store = w.service.store
    slots = w.service.executor.slots = _Watched(1, cfg.backend_concurrency)
    other = None
    try:
        assert w.post_alerts(notification(alert("WebDown", deployment="a",
                                                fingerprint="a")))[0] == 202
        _until(lambda: calls, "the first change to start")
        assert w.post_alerts(notification(alert("WebDown", deployment="b",
                                                fingerprint="b")))[0] == 202
        # The second change passed its guards and waits for the call slot.
        _until(lambda: len(slots.asked) == 2, "the second change to wait for the call slot")
        if store_url.startswith("postgresql"):  # another replica throws the switch
            other = open_store(store_url)
            asyncio.run(_pause(other))
        else:
            w.call(w.service.pause(True, "alice"))
        release.set()
        decisions = {d["target"]: d for d in w.wait_executions(2)}
        reserved = w.call(store.count_events("mutation", "restart:prod/deployment/b", 0))
    finally:
        release.set()
        w.stop()
        server.shutdown()
    assert len(calls) == 1  # only the change started before the pause
    assert decisions["prod/deployment/a"]["outcome"] == "succeeded"
    paused = decisions["prod/deployment/b"]
    assert paused["outcome"] == "blocked"
    assert paused["reason"].startswith("paused: automation is paused by alice")
    [step] = paused["steps"]
    assert step["outcome"] == "blocked" and step["guard"] == "paused" and step["attempts"] == 0
    assert reserved == 0  # refused in its admission: no place of a limit taken


async def _pause(store: Any) -> None:
    await store.open()
    try:
        await store.put_state(PAUSE, {"paused": True, "by": "alice", "at": time.time()})
    finally:
        await store.close()


STEP_TARGET_RULES = """
playbooks:
  - name: restart
    match: {alertname: WebDown}
    target: {kind: namespace, name: prod}
    guards: {rate_limit: {max: 1000, window: 1h}, lock: false}
    steps:
      - name: restart
        action: http.request
        target: {kind: deployment, namespace: prod, name: "{{ labels.deployment }}"}
        params: {url: "%s", method: POST, expect_status: [202]}
"""


def test_a_resolution_while_a_change_of_its_own_target_waits_for_its_slot_stops_it(
        tmp_path, store_url):
    """As a pause: a change whose step names its own target (it takes that object's lock, so
    its admission is not the one-statement kind) waits for the call slot when its alert's
    resolution is acknowledged. Once the slot is free its admission must find the
    resolution, as it does for a step without a target: the problem went away, so nothing
    is changed after the alert resolved."""
    server, port, calls, release = _held_sink()
    rules = write_rules(tmp_path / "rules",
                        STEP_TARGET_RULES % f"http://{LOCALHOST}:{port}/restart")
    cfg = Config(rules=[str(rules)], store=store_url, webhook_token=TOKEN, mode="live",
                 workers=1, escalation_dir=str(tmp_path / "notes"), guards=loopback_guards())
    w = InProcessWorker(cfg).start()
    slots = w.service.executor.slots = _Watched(1, cfg.backend_concurrency)
    try:
        assert w.post_alerts(notification(alert("WebDown", deployment="a",
                                                fingerprint="a")))[0] == 202
        _until(lambda: calls, "the first change to start")
        firing = alert("WebDown", deployment="b", fingerprint="b")
        assert w.post_alerts(notification(firing))[0] == 202
        _until(lambda: len(slots.asked) == 2, "the second change to wait for the call slot")
        resolved = {**firing, "status": "resolved", "endsAt": "2026-11-21T11:00:00Z"}
        assert w.post_alerts({**notification(resolved), "status": "resolved"})[0] == 202
        release.set()
        _until(lambda: any(d["alert"]["status"] == "firing" and d["fingerprint"] == "b"
                           for d in w.wait_executions(2, timeout=0)), "b's firing decision")
        decisions = {(d["fingerprint"], d["alert"]["status"]): d
                     for d in w.wait_executions(2, timeout=0)}
    finally:
        release.set()
        w.stop()
        server.shutdown()
    assert calls == ["/restart"]  # only the change that started before the resolution
    stopped = decisions[("b", "firing")]
    assert stopped["outcome"] == "resolved", stopped["reason"]
    assert [s["outcome"] for s in stopped["steps"]] == ["cancelled"]
