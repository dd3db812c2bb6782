"""Clients that hold connections without finishing a request, against a real `serve` process.

aiohttp keeps a connection that never completes its request header for its keepalive_timeout,
3630 s by default: a few hundred half-sent headers held the process's file descriptors for an
hour. `idle_timeout` bounds it; a running request (a slow body, the live stream) is not cut.
A body must arrive whole within `body_timeout` of its header, else its answer is a 408 (a
webhook's a 503 with Retry-After: Alertmanager retries a 5xx only).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import select
import socket
import time

import pytest
import requests

from remediator.config import ConfigError, load_config
from tests.conftest import NO_MATCH_RULES, write_rules
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
    rules = write_rules(tmp_path / "rules", NO_MATCH_RULES)
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


BODY = 2.0  # seconds: REMEDIATOR_BODY_TIMEOUT of the process under test


def _trickle(port: int, head: bytes, body: bytes, limit: float) -> tuple[bytes, bool]:
    """Send `head`, then `body` a byte every 0.25 s for at most `limit` seconds, reading
    meanwhile: (what the server answered, whether it closed the connection)."""
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(head)
        deadline = time.monotonic() + limit
        sent = 0
        while time.monotonic() < deadline:
            if select.select([sock], [], [], 0.25)[0]:
                try:
                    data = sock.recv(65536)
                except ConnectionResetError:
                    data = b""
                if not data:
                    return answer, True
                answer += data
            elif sent < len(body) and not answer:
                with contextlib.suppress(OSError):
                    sock.sendall(body[sent:sent + 1])
                sent += 1
    return answer, False


def test_a_body_trickled_past_its_deadline_is_refused_and_its_connection_closed(tmp_path):
    # The header arrives at once; the body a byte at a time: the handler and the connection
    # were held for as long as the sender liked (idle_timeout only covers the header).
    rules = write_rules(tmp_path / "rules", NO_MATCH_RULES)
    w = WorkerProcess(tmp_path, [str(rules)], extra_env={"REMEDIATOR_BODY_TIMEOUT": f"{BODY:g}s"})
    w.start()
    try:
        body = json.dumps(notification(alert("A", fingerprint="trickled"))).encode()
        head = (b"POST /alerts HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
                + TOKEN.encode() + b"\r\nContent-Type: application/json\r\n"
                b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n")
        answer, closed = _trickle(w.port, head, body, BODY + 10)
        # A 503 Alertmanager retries: a 408 dropped the notification until its repeat_interval.
        assert answer.startswith(b"HTTP/1.1 503 "), (answer, w.logs())
        assert b"\r\nRetry-After: 1\r\n" in answer, answer
        message = json.loads(answer.partition(b"\r\n\r\n")[2])["error"]
        assert "body" in message and f"{BODY:g}" in message, message
        assert closed, answer  # not left lingering for the rest of the body

        # A console form (the login, no session needed) is read under the same deadline.
        form = b"name=alice&password=" + OPERATOR_TOKEN.encode() + b"&next=/ui/"
        head = (b"POST /ui/login HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/x-www-form-urlencoded\r\n"
                b"Content-Length: " + str(len(form)).encode() + b"\r\n\r\n")
        answer, closed = _trickle(w.port, head, form, BODY + 10)
        assert answer.startswith(b"HTTP/1.1 408 "), (answer, w.logs())
        assert closed

        # Alertmanager sending at its normal speed is not touched; nothing was accepted from
        # the cut body, and nothing failed inside.
        status, result = w.post_alerts(notification(alert("A", fingerprint="whole")))
        assert (status, result) == (202, {"accepted": 1, "duplicates": 0})
        metrics = requests.get(f"{w.url}/metrics", timeout=10).text
        assert 'remediator_webhook_requests_total{code="503"} 1.0' in metrics
        assert "Traceback" not in w.logs() and "Unhandled" not in w.logs(), w.logs()
    finally:
        w.stop()


def test_a_body_timeout_of_zero_is_refused():
    with pytest.raises(ConfigError, match="body_timeout must be more than 0"):
        load_config(env={"REMEDIATOR_BODY_TIMEOUT": "0s"})
    assert load_config(env={"REMEDIATOR_BODY_TIMEOUT": "2m"}).body_timeout == 120.0
    assert load_config(env={}).body_timeout == 30.0


def _answer_then_closed(sock: socket.socket, limit: float = 5.0) -> bytes:
    """The answer to a request whose body is still being sent, once the server closed the
    connection; it must close well within aiohttp's 10 s lingering close (it read on)."""
    sock.settimeout(limit)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass  # closed with our unread bytes in its buffer: a reset, the answer received
    except TimeoutError:
        raise AssertionError(f"still open {limit}s after answering: {received[:200]!r}") from None
    return received


def test_a_body_refused_before_it_is_read_is_not_read(tmp_path):
    """Without credentials a body sent a byte at a time held the connection (and the loop)
    for 10 s after the 401; the console's login form read up to 16 MiB."""
    rules = write_rules(tmp_path / "rules", NO_MATCH_RULES)
    w = WorkerProcess(tmp_path, [str(rules)])
    w.start()
    try:
        for path, ctype in (("/alerts", "application/json"), ("/api/v1/pause", "text/plain")):
            with socket.create_connection(("127.0.0.1", w.port), timeout=10) as sock:
                sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {ctype}"
                             "\r\nContent-Length: 1048576\r\n\r\n{".encode())
                answer = _answer_then_closed(sock)
            assert answer.startswith(b"HTTP/1.1 401"), (path, answer[:200])

        # A login form of 16 MiB by its Content-Length: refused before any of it is read.
        with socket.create_connection(("127.0.0.1", w.port), timeout=10) as sock:
            sock.sendall(b"POST /ui/login HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         b"Content-Type: application/x-www-form-urlencoded\r\n"
                         b"Content-Length: 16777216\r\n\r\nname=a&password=")
            answer = _answer_then_closed(sock)
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert b"a form is at most 16384 bytes" in answer

        # Chunked (a browser never sends a form so): refused before it is read, where each
        # 1-byte chunk of it cost the loop a call.
        with socket.create_connection(("127.0.0.1", w.port), timeout=10) as sock:
            sock.sendall(b"POST /ui/login HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         b"Content-Type: application/x-www-form-urlencoded\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n" + b"1\r\nx\r\n" * 100)
            answer = _answer_then_closed(sock)
        assert answer.startswith(b"HTTP/1.1 411") and b"needs its Content-Length" in answer
        # A real login still passes.
        r = requests.post(f"{w.url}/ui/login", timeout=10, data={
            "name": "alice", "password": OPERATOR_TOKEN, "next": "/ui/"})
        assert r.status_code == 200 and "remediator_session" in r.history[0].cookies, r.text[-300:]
    finally:
        w.stop()


def test_a_client_gone_mid_body_is_counted_and_no_error(tmp_path):
    """A client that closed its connection mid-body left an ERROR with a traceback
    (ConnectionResetError through the handler), and the webhook counter missed it."""
    rules = write_rules(tmp_path / "rules", NO_MATCH_RULES)
    w = WorkerProcess(tmp_path, [str(rules)])
    w.start()
    try:
        for path, headers in (("/alerts", f"Authorization: Bearer {TOKEN}\r\n"
                                          "Content-Type: application/json\r\n"),
                              ("/ui/login", "Content-Type: application/x-www-form-urlencoded\r\n")):
            with socket.create_connection(("127.0.0.1", w.port), timeout=10) as sock:
                sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}"
                             "Content-Length: 1000\r\n\r\nname=".encode())
                time.sleep(0.5)  # the handler is reading the body
        deadline = time.monotonic() + 10
        while 'remediator_webhook_requests_total{code="499"} 1.0' not in (
                metrics := requests.get(f"{w.url}/metrics", timeout=5).text):
            assert time.monotonic() < deadline, [m for m in metrics.splitlines()
                                                 if "webhook_requests" in m]
            time.sleep(0.1)
    finally:
        w.stop()
    logs = w.log_path.read_text()
    assert "Traceback" not in logs and '"level":"error"' not in logs, logs[-3000:]
