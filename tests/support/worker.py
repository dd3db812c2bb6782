"""Run remediator for tests: in-process on a real port, or as a real `remediator serve` process.

The in-process worker runs the real aiohttp app and Service on their own event loop in a
thread, so plain synchronous tests talk to it over real HTTP.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from remediator.auth import Operator
from remediator.config import Config
from remediator.event_loop import loop_factory
from remediator.guards import GuardSettings
from remediator.server import build_app
from remediator.service import Service
from tests.support.procs import python_env, wait_process_ready

TOKEN = "test-token-0123456789"  # the webhook's: may only POST /alerts
# Where the tests' HTTP doubles (deploy APIs, receivers) listen: the one host a mutating
# http.request may reach in tests (guards.http.allow; empty would allow none).
HTTP_ALLOW = ["127.0.0.1"]
OPERATOR_TOKEN = "operator-token-alice-0123456789"  # alice, role operator
VIEWER_TOKEN = "viewer-token-victor-0123456789"  # victor, role viewer
OPERATOR = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
VIEWER = {"Authorization": f"Bearer {VIEWER_TOKEN}"}
OPERATORS = [Operator("alice", "operator", token=OPERATOR_TOKEN),
             Operator("victor", "viewer", token=VIEWER_TOKEN)]


def operators_config(directory: Path) -> list[dict[str, str]]:
    """The same users as `OPERATORS`, as a config file's `operators:` with token files."""
    entries = []
    for user in OPERATORS:
        path = directory / f"token-{user.name}"
        path.write_text(user.token + "\n")
        entries.append({"name": user.name, "role": user.role, "token_file": str(path)})
    return entries


def loopback_guards(**settings: Any) -> GuardSettings:
    """Guard settings for tests: as given, with mutating HTTP allowed to the loopback doubles."""
    return GuardSettings(**{"http_allow": HTTP_ALLOW, **settings})


def http(
    method: str,
    url: str,
    body: bytes | dict | list | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10,
) -> tuple[int, Any]:
    """One HTTP call; returns (status, parsed JSON or text)."""
    data = json.dumps(body).encode() if isinstance(body, dict | list) else body
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode("utf-8", "replace")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class InProcessWorker:
    """The real Service + app on 127.0.0.1:<free port>, driven from synchronous tests."""

    def __init__(self, config: Config, **service_kwargs: Any):
        self.config = config
        self.loop = loop_factory(config.event_loop)()  # the loop serve runs on
        self.service = Service(config, **service_kwargs)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    def start(self) -> InProcessWorker:
        self._thread.start()
        self.call(self._start())
        return self

    async def _start(self) -> None:
        await self.service.start()
        self._runner = web.AppRunner(build_app(self.service), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    def call(self, coro: Coroutine[Any, Any, Any], timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        async def _stop() -> None:
            await self.service.stop()
            if self._runner:
                await self._runner.cleanup()

        self.call(_stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    def post_alerts(self, payload: Any, token: str | None = TOKEN, **headers: str) -> tuple[int, Any]:
        hdrs = {"Authorization": f"Bearer {token}"} if token else {}
        hdrs.update(headers)
        return http("POST", f"{self.url}/alerts", payload, hdrs)

    def wait_idle(self, timeout: float = 60) -> None:
        """Until every acknowledged alert has been processed."""
        deadline = time.monotonic() + timeout
        while self.call(self.service.store.pending_count()) and time.monotonic() < deadline:
            time.sleep(0.05)

    def wait_executions(self, count: int, timeout: float = 15, **filters: Any) -> list[dict]:
        """Poll until `count` final decisions exist (processing is asynchronous)."""
        deadline = time.monotonic() + timeout
        while True:
            found = [d for d in self.call(self.service.store.list_executions(1000, **filters))
                     if d["outcome"] != "running"]
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.05)


class WorkerProcess:
    """`remediator serve` as a real process (for signals, kill -9 and e2e tests)."""

    def __init__(
        self,
        tmp: Path,
        rules: list[str],
        mode: str = "dry-run",
        extra_env: dict[str, str] | None = None,
        store: str | None = None,
        config: dict[str, Any] | None = None,
    ):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db = store or f"sqlite:///{tmp / 'remediator.db'}"
        self.log_path = tmp / f"worker-{self.port}.log"
        self.args = [
            sys.executable,
            "-m",
            "remediator.cli",
            "serve",
            "--listen",
            f"127.0.0.1:{self.port}",
            "--store",
            self.db,
            "--mode",
            mode,
        ]
        for r in rules:
            self.args += ["--rules", r]
        config_file = tmp / f"worker-{self.port}.yaml"
        config = dict(config or {})
        config["guards"] = {"http": {"allow": HTTP_ALLOW}, **config.get("guards", {})}
        config_file.write_text(yaml.safe_dump({"operators": operators_config(tmp), **config}))
        self.args += ["--config", str(config_file)]
        self.env = python_env({
            **os.environ,
            "REMEDIATOR_WEBHOOK_TOKEN": TOKEN,
            "REMEDIATOR_ESCALATION_DIR": str(tmp / "escalations"),
            **(extra_env or {}),
        })
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20, until: str = "/-/ready") -> WorkerProcess:
        """Started, once `until` answers 200 (`/-/healthy`: a replica that cannot be ready)."""
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(self.args, env=self.env, stdout=log, stderr=log)
        wait_process_ready(self.proc, f"{self.url}{until}", timeout, self.logs)
        return self

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def post_alerts(self, payload: Any) -> tuple[int, Any]:
        return http("POST", f"{self.url}/alerts", payload, {"Authorization": f"Bearer {TOKEN}"})

    def executions(self, **query: str) -> list[dict]:
        qs = "&".join(f"{k}={v}" for k, v in {"limit": "1000", **query}.items())
        return http("GET", f"{self.url}/api/v1/executions?{qs}", headers=VIEWER)[1]["executions"]

    def decided(self, timeout: float = 20) -> list[dict]:
        """The executions recorded final, once there is one."""
        deadline = time.monotonic() + timeout
        while not (done := [e for e in self.executions() if e["outcome"] != "running"]):
            assert time.monotonic() < deadline, (self.executions(), self.logs())
            time.sleep(0.1)
        return done

    def decision(self, payload: Any, fingerprint: str, timeout: float = 20) -> dict:
        """Post `payload` (202 expected) and wait for its alert `fingerprint`'s final decision."""
        assert self.post_alerts(payload)[0] == 202
        deadline = time.monotonic() + timeout
        while not (done := [d for d in self.executions() if d["fingerprint"] == fingerprint
                            and d["outcome"] != "running"]):
            assert time.monotonic() < deadline, self.logs()
            time.sleep(0.1)
        return done[0]

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 30) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)


def replay_cli(tmp: Path, rules: str, payload: dict[str, Any], *args: str) -> dict[str, Any]:
    """`remediator replay --format json` as a user runs it; the single decision it prints."""
    (tmp / "rules.yaml").write_text(textwrap.dedent(rules))
    (tmp / "payload.json").write_text(json.dumps(payload))
    proc = subprocess.run(
        [sys.executable, "-m", "remediator.cli", "replay", str(tmp / "payload.json"), "--rules",
         str(tmp / "rules.yaml"), "--format", "json", *args],
        capture_output=True, text=True, timeout=60, env=dict(os.environ), check=False)
    assert proc.returncode == 0, proc.stderr
    [decision] = json.loads(proc.stdout)
    return decision
