"""The peers the e2e stack plays itself: cluster Services, the systems' traffic, the worker."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from tests.support.exporter import Exporter
from tests.support.procs import LOCALHOST, python_env, serve_http, wait_process_ready


class ClusterServices:
    """The Services playbooks probe by cluster DNS name (`http://<svc>.<ns>.svc:<port>/...`).

    Those names don't resolve here, so this one server plays all of them as an HTTP forward
    proxy (the worker gets `HTTP_PROXY` pointing here, `NO_PROXY` for 127.0.0.1), and is also
    the Libervia gateway's scrape target. `healthy[host] = False` makes a Service answer 503
    everywhere: its health endpoints and, for the gateway, its scrape (`up == 0`).
    """

    LIBERVIA = "libervia-gateway:3000"  # compose: container names on the stack's network
    THREEDPOT = "3dpot-backend:8000"
    HEALTH = {LIBERVIA: ({"status": "ok"}, {"status": "error"}),
              THREEDPOT: ({"status": "healthy", "service": "3dpot-backend"},
                          {"status": "unhealthy", "service": "3dpot-backend"})}

    def __init__(self) -> None:
        self.healthy = dict.fromkeys(self.HEALTH, True)
        self.hits: list[tuple[str, str]] = []  # (host, path) of every proxied request
        services = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                host = url.netloc if url.scheme else services.LIBERVIA  # a scrape: the gateway
                if url.scheme:
                    services.hits.append((host, url.path))
                if host not in services.HEALTH:
                    return self._answer(502, f"unknown service {host}\n", "text/plain")
                ok = services.healthy[host]
                if url.path.startswith("/health"):
                    body = json.dumps(services.HEALTH[host][0 if ok else 1])
                    return self._answer(200 if ok else 503, body, "application/json")
                self._answer(200 if ok else 503, "libervia_gateway_info 1\n",
                             "text/plain; version=0.0.4")

            def _answer(self, status: int, body: str, ctype: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, *args: Any) -> None:
                pass

        # Bound (and so its port known) now; serving from the moment it is created.
        self._server, self.port = serve_http(Handler)

    @property
    def target(self) -> str:
        return f"{LOCALHOST}:{self.port}"

    @property
    def proxy_url(self) -> str:
        return f"http://{self.target}"

    def probed(self, host: str, path: str = "/health") -> bool:
        return (host, path) in self.hits

    def start(self) -> ClusterServices:
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


SeriesKey = tuple[str, tuple[tuple[str, str], ...]]


class Traffic:
    """Drives exporter counters at set rates per second from a background thread.

    `mix` starts a phase: each series at `share * R`, with R large enough that within a
    second the phase outweighs everything these series counted before, so ratios over the
    rules' 5m/10m windows follow the phase almost at once.
    """

    TICK = 0.2
    DOMINANCE = 50.0

    def __init__(self, exporter: Exporter) -> None:
        self.exporter = exporter
        self.rates: dict[SeriesKey, float] = {}
        self.totals: dict[SeriesKey, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="traffic", daemon=True)

    @staticmethod
    def key(name: str, labels: dict[str, str]) -> SeriesKey:
        return name, tuple(sorted(labels.items()))

    def declare(self, name: str, **labels: str) -> None:
        """Export the series at 0 now, so its first increase is seen by `rate()`."""
        with self._lock:
            self.totals.setdefault(self.key(name, labels), 0.0)
        self.exporter.set(name, self.totals[self.key(name, labels)], **labels)

    def rate(self, name: str, per_second: float, **labels: str) -> None:
        self.declare(name, **labels)
        with self._lock:
            self.rates[self.key(name, labels)] = per_second

    def mix(self, parts: Iterable[tuple[str, dict[str, str], float]], floor: float = 20.0) -> float:
        parts = list(parts)
        with self._lock:
            seen = sum(self.totals.get(self.key(n, lab), 0.0) for n, lab, _ in parts)
        total = max(floor, self.DOMINANCE * seen)
        for name, labels, share in parts:
            self.rate(name, share * total, **labels)
        return total

    def start(self) -> Traffic:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(self.TICK):
            now = time.monotonic()
            elapsed, last = now - last, now
            with self._lock:
                for key, per_second in self.rates.items():
                    if per_second:
                        self.totals[key] = self.totals.get(key, 0.0) + per_second * elapsed
                        self.exporter.set(key[0], self.totals[key], **dict(key[1]))


class Worker:
    """`remediator serve --mode live` as a process, on a fixed port across restarts."""

    def __init__(self, root: Path, port: int, settings: dict[str, Any], env: dict[str, str]):
        self.root, self.port, self.settings, self.env = root, port, settings, env
        self.url = f"http://{LOCALHOST}:{port}"
        self.generation = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = root / "remediator.log"

    def start(self, timeout: float = 20.0) -> Worker:
        self.generation += 1
        config = {**self.settings, "listen": f"{LOCALHOST}:{self.port}",
                  "store": f"sqlite:///{self.root / f'remediator-{self.generation}.db'}"}
        config_path = self.root / "remediator.yml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        argv = [sys.executable, "-m", "remediator.cli", "serve", "--config", str(config_path),
                "--mode", "live"]
        with open(self.log_path, "ab") as log:
            log.write(f"--- start #{self.generation}: {' '.join(argv)}\n".encode())
            self.proc = subprocess.Popen(argv, env=python_env(self.env), stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True, cwd=self.root)
        wait_process_ready(self.proc, f"{self.url}/-/ready", timeout, self.tail)
        return self

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def restart(self) -> Worker:
        """A fresh process with a fresh store (guard state, cooldowns and history forgotten)."""
        self.stop()
        return self.start()

    def tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "<no log>"
