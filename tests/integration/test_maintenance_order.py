"""A maintenance pass expires approvals before it redelivers spooled notes, and a sink that
swallows connections without answering (a black hole) costs a pass one timeout, not one
per spooled note: twelve notes spooled for it kept a 20 s approval pending for 134 s."""

from __future__ import annotations

import asyncio
import json
import socket
import textwrap
import threading

from remediator.alerts import parse_notification
from remediator.config import Config
from remediator.service import Service
from tests.support.payloads import alert, notification
from tests.support.worker import loopback_guards

RULES = """
playbooks:
  - name: note
    match: {alertname: Note}
    escalation: {always: true, severity: critical}
    steps:
      - name: look
        action: log
        params: {message: "hello"}
  - name: gated
    match: {alertname: Gated}
    target: {kind: deployment, namespace: demo, name: web}
    guards: {approval_ttl: 1m, rate_limit: {max: 10, window: 1h}}
    escalation: {sinks: [files]}
    steps:
      - name: restart
        action: http.request
        approval: required
        params: {url: "http://127.0.0.1:9/restart", method: POST}
"""


class BlackHole:
    """Accepts connections and never answers; counts them."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/hook"
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self.accepted.append(self.sock.accept()[0])
            except OSError:
                return

    def close(self) -> None:
        self.sock.close()
        for conn in self.accepted:
            conn.close()


def test_a_black_holed_sink_does_not_hold_back_an_approvals_expiry(tmp_path):
    hole = BlackHole()
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "r.yaml").write_text(textwrap.dedent(RULES))
    now = [1_800_000_000.0]
    cfg = Config(rules=[str(rules)], store=f"sqlite:///{tmp_path}/r.db", mode="live",
                 escalation_dir=str(tmp_path / "notes"), guards=loopback_guards(),
                 escalation_sinks={"hook": {"type": "webhook", "url": hole.url},
                                   "files": {"type": "directory", "path": str(tmp_path / "f")}},
                 escalation_default_sinks=["hook"])
    service = Service(cfg, clock=lambda: now[0])
    service.backends.http_timeout = 1.0  # each note waits this long for the black hole

    async def go() -> tuple[dict, int, int]:
        await service.start(dispatch=False)
        assert service.engine is not None and service.engine.escalator is not None
        service.engine.escalator.attempts, service.engine.escalator.retry_wait = 1, 0
        try:
            await service.intake(parse_notification(json.dumps(notification(
                *(alert("Note", fingerprint=f"n{i}", pod=f"p{i}") for i in range(12)))).encode()))
            await service.drain()
            spooled = len(await service.store.list_state("spool:"))
            await service.intake(parse_notification(json.dumps(notification(
                alert("Gated", fingerprint="g1"))).encode()))
            [blocked] = await service.drain()
            assert "approval_pending" in blocked["reason"], blocked["reason"]
            now[0] += 120  # past its TTL
            before = len(hole.accepted)
            await service.maintain()
            tried = len(hole.accepted) - before
            return await service.store.get_execution(blocked["id"]), spooled, tried
        finally:
            await service.stop()

    try:
        gated, spooled, tried = asyncio.new_event_loop().run_until_complete(go())
    finally:
        hole.close()
    assert spooled == 12
    assert gated is not None and gated["outcome"] == "escalated", gated
    assert "expired" in gated["reason"]
    assert tried == 1  # one attempt at the dead sink this pass, not one per spooled note


def test_two_dead_sinks_do_not_starve_a_sink_that_recovered(tmp_path):
    """Two black-holed sinks' timeouts spent each pass's redelivery budget before a third
    sink, recovered, was reached: pass after pass its note stayed spooled. Sinks that failed
    in the last pass are now tried after the others."""
    dead = [BlackHole(), BlackHole()]
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "r.yaml").write_text(textwrap.dedent(RULES))
    blocker = tmp_path / "notes-z"
    blocker.write_text("a file where the sink's directory should be")
    cfg = Config(rules=[str(rules)], store=f"sqlite:///{tmp_path}/r.db", mode="live",
                 escalation_dir=str(tmp_path / "notes"), guards=loopback_guards(),
                 escalation_sinks={"a1": {"type": "webhook", "url": dead[0].url},
                                   "a2": {"type": "webhook", "url": dead[1].url},
                                   "z": {"type": "directory", "path": str(blocker)}},
                 escalation_default_sinks=["a1", "a2", "z"])
    service = Service(cfg)
    service.backends.http_timeout = 1.0
    service.redelivery_budget = 1.5  # as 15 s against two 10 s timeouts, scaled down

    async def go() -> list[list[str]]:
        await service.start(dispatch=False)
        service.engine.escalator.attempts, service.engine.escalator.retry_wait = 1, 0
        try:
            await service.intake(parse_notification(json.dumps(notification(
                alert("Note", fingerprint="n1"))).encode()))
            await service.drain()
            left = [sorted(k.rsplit(":", 1)[1] for k in await service.store.list_state("spool:"))]
            blocker.unlink()  # z recovers; a1 and a2 stay dead
            for _ in range(2):
                await service.maintain()
                left.append(sorted(k.rsplit(":", 1)[1]
                                   for k in await service.store.list_state("spool:")))
            return left
        finally:
            await service.stop()
    try:
        left = asyncio.new_event_loop().run_until_complete(go())
    finally:
        for hole in dead:
            hole.close()
    assert left[0] == ["a1", "a2", "z"]  # all three spooled
    assert left[-1] == ["a1", "a2"], left  # z's note went out within two passes
