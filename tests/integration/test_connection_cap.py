"""A cap on the connections `serve` keeps open at once (`max_connections`), against a real
process. Connections opened faster than they time out filled the process's file descriptor
table: the store, the actions and the escalations could then open nothing. Past the cap a
new connection is answered 503 (Retry-After: Alertmanager retries it) and closed; a
connection already open, a request under way, is never cut by it."""

from __future__ import annotations

import http.client
import json
import re
import resource
import socket
import subprocess
import time

import pytest
import requests

from remediator.config import ConfigError, load_config
from tests.conftest import DEMO_RULES, write_rules
from tests.support.payloads import alert, notification
from tests.support.worker import TOKEN, WorkerProcess

HEALTHY = b"GET /-/healthy HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def _held(port: int) -> socket.socket:
    """A connection the server has taken up (it answered a request on it), kept open."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(HEALTHY)
    answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 200 "), answer
    return sock


def _answer(port: int) -> bytes:
    """What a new connection asking /-/healthy is answered, up to the server's close."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(HEALTHY)
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
            if data.startswith(b"HTTP/1.1 200 "):
                return data  # served: a keep-alive connection stays open
        return data


def _post(am: http.client.HTTPConnection, fingerprint: str) -> int:
    am.request("POST", "/alerts", json.dumps(notification(alert(
        "DemoDown", namespace="demo", deployment="web", fingerprint=fingerprint))),
               {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    response = am.getresponse()
    response.read()
    return response.status


def test_connections_past_the_cap_get_a_503_and_open_ones_keep_working(tmp_path):
    rules = write_rules(tmp_path / "rules", DEMO_RULES)
    w = WorkerProcess(tmp_path, [str(rules)], extra_env={"REMEDIATOR_MAX_CONNECTIONS": "16"})
    w.start()
    held: list[socket.socket] = []
    try:
        am = http.client.HTTPConnection("127.0.0.1", w.port, timeout=10)  # Alertmanager's
        assert _post(am, "a0") == 202
        held = [_held(w.port) for _ in range(15)]  # 16 open with Alertmanager's

        answer = _answer(w.port)
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503 "), answer
        assert b"\r\nRetry-After: 1\r\n" in head and b"\r\nConnection: close\r\n" in head
        assert "max_connections (16)" in json.loads(body)["error"], body

        # Alertmanager's keep-alive connection, open before, is served as ever.
        assert _post(am, "a1") == 202
        # Connections closed make room for new ones.
        for sock in held[:4]:
            sock.close()
        deadline = time.monotonic() + 10
        while not (answer := _answer(w.port)).startswith(b"HTTP/1.1 200 "):
            assert time.monotonic() < deadline, answer
            time.sleep(0.1)
        metrics = requests.get(f"{w.url}/metrics", timeout=10).text
        refused = [float(line.split()[1]) for line in metrics.splitlines()
                   if line.startswith("remediator_connections_refused_total ")]
        assert refused and refused[0] >= 1, metrics[-2000:]
        assert "max_connections (16) reached" in w.logs()
        assert {e["fingerprint"] for e in w.decided()} <= {"a0", "a1"}
        am.close()
    finally:
        for sock in held:
            sock.close()
        w.stop()


def test_a_burst_of_connections_is_served_no_further_than_the_cap(tmp_path):
    # asyncio accepts a whole batch before aiohttp takes up any of it: counted only by what
    # aiohttp holds, a burst was served past the cap by the batch.
    rules = write_rules(tmp_path / "rules", DEMO_RULES)
    w = WorkerProcess(tmp_path, [str(rules)], extra_env={"REMEDIATOR_MAX_CONNECTIONS": "16"})
    w.start()
    socks = [socket.socket() for _ in range(100)]
    try:
        for sock in socks:
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", w.port))
        for sock in socks:  # all connecting before the first request goes
            sock.settimeout(10)
            sock.sendall(HEALTHY)
        served = refused = 0
        for sock in socks:
            try:
                answer = sock.recv(4096)
            except ConnectionResetError:
                answer = b""
            served += answer.startswith(b"HTTP/1.1 200 ")
            refused += not answer.startswith(b"HTTP/1.1 200 ")
        assert served == 16 and refused == 84, (served, refused)
    finally:
        for sock in socks:
            sock.close()
        w.stop()


def test_the_default_cap_is_half_the_file_descriptor_limit(tmp_path):
    rules = write_rules(tmp_path / "rules", DEMO_RULES)
    w = WorkerProcess(tmp_path, [str(rules)])
    w.args = ["prlimit", "--nofile=128:128", "--", *w.args]
    w.start()
    held: list[socket.socket] = []
    try:
        held = [_held(w.port) for _ in range(64)]
        assert _answer(w.port).startswith(b"HTTP/1.1 503 "), w.logs()
        # Room made, an alert is taken and decided.
        for sock in held[:2]:
            sock.close()
        deadline = time.monotonic() + 10
        while (status := w.post_alerts(notification(alert(
                "DemoDown", namespace="demo", deployment="web")))[0]) != 202:
            assert time.monotonic() < deadline, status
            time.sleep(0.1)
        assert w.decided()[0]["playbook"] == "demo-restart"
    finally:
        for sock in held:
            sock.close()
        w.stop()


def test_a_high_descriptor_limit_is_not_cut_to_a_few_thousand_connections():
    """Past the cap `/-/healthy` is a 503 and a kubelet restarts the pod: a ceiling of 4096
    let a flood of that many idle connections do what before took the whole limit (a
    container's is often 1 048 576)."""
    from remediator.server.listener import connection_limit

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 10_000:
        pytest.fail(f"this machine's hard descriptor limit is {hard}: the test needs 10 000")
    resource.setrlimit(resource.RLIMIT_NOFILE, (10_000, hard))
    try:
        assert connection_limit(0) == 5_000
        assert connection_limit(300) == 300
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_negative_cap_is_refused_and_zero_is_the_default():
    with pytest.raises(ConfigError, match="REMEDIATOR_MAX_CONNECTIONS: max_connections: must be >= 0"):
        load_config(env={"REMEDIATOR_MAX_CONNECTIONS": "-1"})
    assert load_config(env={}).max_connections == 0
    assert load_config(env={"REMEDIATOR_MAX_CONNECTIONS": "300"}).max_connections == 300


def test_serve_listens_on_an_ipv6_address_and_names_the_port_it_bound(tmp_path):
    """`[::1]:0`: the brackets were passed to the resolver ("Name or service not known"),
    and port 0 was logged as 0, not as the port the kernel picked."""
    w = WorkerProcess(tmp_path, [str(write_rules(tmp_path / "rules", DEMO_RULES))])
    w.args[w.args.index("--listen") + 1] = "[::1]:0"
    with w.log_path.open("ab") as log:
        w.proc = subprocess.Popen(w.args, env=w.env, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 30
        while not (bound := re.search(r"listening on \[::1\]:(\d+) ", w.logs())):
            assert time.monotonic() < deadline and w.proc.poll() is None, w.logs()
            time.sleep(0.05)
        port = int(bound.group(1))
        assert port != 0
        assert requests.get(f"http://[::1]:{port}/-/healthy", timeout=10).status_code == 200
    finally:
        assert w.stop() == 0
