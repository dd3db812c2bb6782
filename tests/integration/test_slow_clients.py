"""Clients that hold connections without finishing a request, against a real `serve` process.

aiohttp keeps a connection that never completes its request header for its keepalive_timeout,
3630 s by default: a few hundred half-sent headers held the process's file descriptors for an
hour. `idle_timeout` bounds it; a running request (a slow body, the live stream) is not cut.
"""

from __future__ import annotations

import http.client
import json
import select
import socket
import time

import pytest
import requests

from remediator.config import ConfigError, load_config
from tests.conftest import write_rules
from tests.support.payloads import alert, notification
from tests.support.worker import OPERATOR_TOKEN, TOKEN, WorkerProcess

IDLE = 2.0  # seconds: REMEDIATOR_IDLE_TIMEOUT of the process under test
PARTIAL = b"POST /alerts HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: app"


def _closed_within(socks: list[socket.socket], limit: float, trickle: socket.socket) -> int:
    """How many of `socks` the server closed (EOF or reset) within `limit` seconds; `trickle`
    sends one more header line every 0.5 s meanwhile, which must not earn it more time."""
    open_ = set(socks)
    deadline = time.monotonic() + limit
    line = 0
    while open_ and time.monotonic() < deadline:
        readable, _, _ = select.select(list(open_), [], [], 0.5)
        for sock in readable:
            try:
                data = sock.recv(4096)
            except ConnectionResetError:
                data = b""
            if not data:
                open_.discard(sock)
        if trickle in open_:
            line += 1
            try:
                trickle.sendall(f"X-Slow-{line}: x\r\n".encode())
            except OSError:
                open_.discard(trickle)
    return len(socks) - len(open_)


def test_half_sent_headers_are_closed_and_running_requests_are_not(tmp_path):
    rules = write_rules(tmp_path / "rules", "playbooks: []\n")
    w = WorkerProcess(tmp_path, [str(rules)], extra_env={"REMEDIATOR_IDLE_TIMEOUT": f"{IDLE:g}s"})
    w.start()
    socks: list[socket.socket] = []
    try:
        for _ in range(100):
            sock = socket.create_connection(("127.0.0.1", w.port), timeout=5)
            sock.sendall(PARTIAL)
            socks.append(sock)
        # All closed by the deadline (with slack for a loaded machine); main kept them an hour.
        assert _closed_within(socks, IDLE + 8, trickle=socks[0]) == len(socks), w.logs()

        # Alertmanager's keep-alive connection: webhooks less than IDLE apart share it.
        am = http.client.HTTPConnection("127.0.0.1", w.port, timeout=10)
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
        for i in range(3):
            am.request("POST", "/alerts", json.dumps(notification(alert("A", fingerprint=f"f{i}"))),
                       headers)
            response = am.getresponse()
            assert response.status == 202, response.read()
            response.read()
            if i == 0:
                first = am.sock
            assert am.sock is first  # the same connection, not a new one
            time.sleep(IDLE / 2)

        # A body sent slowly, over more than IDLE: the request is running, it is not cut.
        body = json.dumps(notification(alert("A", fingerprint="slow"))).encode()
        with socket.create_connection(("127.0.0.1", w.port), timeout=15) as slow:
            slow.sendall(b"POST /alerts HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
                         b"Content-Type: application/json\r\nConnection: close\r\n"
                         b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n")
            for k in range(5):
                slow.sendall(body[k * len(body) // 5:(k + 1) * len(body) // 5])
                time.sleep(IDLE / 2)
            assert slow.recv(4096).startswith(b"HTTP/1.1 202"), w.logs()

        # The console's live stream outlives IDLE by far: a tick a second, none missing.
        session = requests.Session()
        r = session.post(f"{w.url}/ui/login", data={"name": "alice", "password": OPERATOR_TOKEN,
                                                     "next": "/ui/"})
        assert r.status_code == 200, r.text[-300:]
        with session.get(f"{w.url}/ui/events", stream=True, timeout=10) as stream:
            lines = stream.iter_lines()
            ticks = []
            for line in lines:
                if line == b": keep-alive":
                    ticks.append(line)
                    if len(ticks) == 3 * int(IDLE):
                        break
            assert len(ticks) == 3 * int(IDLE)
        # Meanwhile Alertmanager's connection sat idle past IDLE: the server closed it.
        assert select.select([am.sock], [], [], 5)[0] and am.sock.recv(1) == b""
        am.close()
    finally:
        for sock in socks:
            sock.close()
        w.stop()


def test_an_idle_timeout_of_zero_is_refused():
    # aiohttp reads 0 as "no timeout": a half-sent header would be kept open for ever.
    with pytest.raises(ConfigError, match="idle_timeout must be more than 0"):
        load_config(env={"REMEDIATOR_IDLE_TIMEOUT": "0s"})
    assert load_config(env={"REMEDIATOR_IDLE_TIMEOUT": "75s"}).idle_timeout == 75.0
    assert load_config(env={}).idle_timeout == 30.0
