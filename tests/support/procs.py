"""Shared plumbing for running real external programs in integration tests.

Every component helper (Alertmanager, Prometheus, moto) needs the same things: a free
port on 127.0.0.1, a child process whose output goes to a file we can show when it
breaks, a readiness poll with a hard deadline, and a shutdown that cannot leak
processes.  Keeping them here means one place to fix flakiness.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

LOCALHOST = "127.0.0.1"

# Every process we start, so an interpreter exit (e.g. Ctrl-C past the finalizers)
# still kills them instead of leaving daemons bound to ports.
_LIVE: weakref.WeakSet[ManagedProcess] = weakref.WeakSet()


class ProcessError(RuntimeError):
    """A managed process failed to start or become ready; message carries its log tail."""


def free_port(host: str = LOCALHOST) -> int:
    """Return a currently unused TCP port chosen by the kernel.

    There is a small race between closing this socket and the child binding it;
    `start_on_free_port` retries on "address already in use" to cover it.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def http_request(
    method: str,
    url: str,
    body: Any = None,
    *,
    timeout: float = 5.0,
    headers: Mapping[str, str] | None = None,
) -> tuple[int, bytes]:
    """Do one HTTP request and return (status, body) without raising on 4xx/5xx.

    Uses only the stdlib so helpers work from sync tests and from worker threads.
    `body` that is not bytes/str is sent as JSON.
    """
    data: bytes | None
    hdrs = dict(headers or {})
    if body is None or isinstance(body, bytes):
        data = body
    elif isinstance(body, str):
        data = body.encode()
    else:
        data = json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def http_json(method: str, url: str, body: Any = None, *, timeout: float = 5.0) -> Any:
    """Like `http_request` but require a 2xx and decode the JSON answer (None if empty)."""
    status, raw = http_request(method, url, body, timeout=timeout)
    if not 200 <= status < 300:
        raise RuntimeError(f"{method} {url} -> HTTP {status}: {raw[:500]!r}")
    return json.loads(raw) if raw.strip() else None


class ManagedProcess:
    """A child process with its stdout+stderr captured to `log_path`.

    The log file (not a pipe) means a chatty child can never block on a full pipe,
    and the file survives the test for post-mortem reading.
    """

    def __init__(
        self,
        argv: Sequence[str],
        log_path: Path,
        *,
        name: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.argv = [str(a) for a in argv]
        self.log_path = Path(log_path)
        self.name = name or Path(self.argv[0]).name
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ManagedProcess:
        """Spawn the child in its own session (so terminal signals do not hit it)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )
        _LIVE.add(self)
        return self

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, lines: int = 40) -> str:
        """Last `lines` lines of the captured output, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "<no log>"
        return "\n".join(text.splitlines()[-lines:])

    def fail(self, why: str) -> ProcessError:
        """Build an error that says what went wrong and what the process printed."""
        rc = self.proc.poll() if self.proc else None
        return ProcessError(
            f"{self.name} (pid {self.pid}, exit {rc}): {why}\n"
            f"--- last lines of {self.log_path} ---\n{self.tail()}"
        )

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, wait up to `timeout`, then SIGKILL. Safe to call repeatedly."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait(timeout=timeout)
        _LIVE.discard(self)


def wait_http_ready(
    url: str,
    timeout: float,
    proc: ManagedProcess | None = None,
    ok: Callable[[int], bool] = lambda status: status == 200,
) -> None:
    """Poll `url` until `ok(status)` or `timeout` seconds pass.

    Fails fast (with the log tail) if `proc` exits, instead of waiting out the deadline.
    """
    deadline = time.monotonic() + timeout
    last = "no response yet"
    while True:
        if proc is not None and not proc.alive():
            raise proc.fail(f"exited before {url} was ready")
        try:
            status, body = http_request("GET", url, timeout=1.0)
            if ok(status):
                return
            last = f"HTTP {status}: {body[:200]!r}"
        except (OSError, urllib.error.URLError) as exc:
            last = repr(exc)
        if time.monotonic() > deadline:
            why = f"not ready after {timeout}s at {url} (last: {last})"
            raise proc.fail(why) if proc else ProcessError(why)
        time.sleep(0.05)


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user and system) the process has used, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_wait(pid: int, threads: bool = True) -> float:
    """Seconds the process's threads (`threads=False`: its main thread) have waited,
    runnable, for a CPU (schedstat's run delay): time other jobs on the machine took."""
    paths = Path(f"/proc/{pid}/task").glob("*/schedstat") if threads else [
        Path(f"/proc/{pid}/schedstat")]
    waited = 0
    for stat in paths:
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            waited += int(stat.read_text().split()[1])
    return waited / 1e9


def python_env(env: Mapping[str, str]) -> dict[str, str]:
    """`env` for a Python child that may reuse compiled bytecode: with
    PYTHONDONTWRITEBYTECODE set (as on some CI runners), every `remediator serve` compiled
    the package's sources again, half its start-up's CPU (0.8 s against 0.4); they are
    compiled once per user into a cache outside the source tree instead."""
    if not env.get("PYTHONDONTWRITEBYTECODE") or env.get("PYTHONPYCACHEPREFIX"):
        return dict(env)
    return {**{k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"},
            "PYTHONPYCACHEPREFIX": str(Path(tempfile.gettempdir())
                                       / f"remediator-tests-pycache-{os.getuid()}")}


def wait_process_ready(proc: subprocess.Popen[bytes], url: str, timeout: float,
                       logs: Callable[[], str], name: str = "remediator") -> None:
    """Poll `url` until it answers 200, while `proc` lives. `timeout` is the process's own
    time, what it spent running or waiting for I/O, not for a CPU: on a loaded machine three
    replicas starting together waited for a CPU most of 20 s (each needs ~0.4 s of CPU),
    and a wall-clock deadline failed them for the machine's load, not their code. A hang
    waits for no CPU, so it still fails after `timeout`; ten times that in all, whatever."""
    started = time.monotonic()
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited {proc.returncode}:\n{logs()}")
        with contextlib.suppress(OSError):
            if http_request("GET", url, timeout=1.0)[0] == 200:
                return
        wall, waited = time.monotonic() - started, cpu_wait(proc.pid, threads=False)
        if wall - waited > timeout or wall > 10 * timeout:
            raise RuntimeError(f"{name} not ready after {wall:.0f}s ({waited:.0f}s of them "
                               f"waiting for a CPU, {cpu_seconds(proc.pid):.1f}s of CPU "
                               f"used):\n{logs()}")
        time.sleep(0.1)


def start_on_free_port(
    argv_for_port: Callable[[int], Sequence[str]],
    ready_path: str,
    log_path: Path,
    *,
    name: str,
    timeout: float = 20.0,
    attempts: int = 3,
    env: Mapping[str, str] | None = None,
    ok: Callable[[int], bool] = lambda status: status == 200,
) -> tuple[ManagedProcess, int]:
    """Start a server on a fresh port and wait for `ready_path`; retry on port races."""
    for attempt in range(1, attempts + 1):
        port = free_port()
        proc = ManagedProcess(argv_for_port(port), log_path, name=name, env=env).start()
        try:
            wait_http_ready(f"http://{LOCALHOST}:{port}{ready_path}", timeout, proc, ok)
            return proc, port
        except ProcessError:
            proc.stop()
            if attempt < attempts and "address already in use" in proc.tail().lower():
                continue
            raise
    raise AssertionError("unreachable")


def stop_all(items: Sequence[Any]) -> None:
    """Call `.stop()` on every item even if some raise, then re-raise the first error.

    Used by fixture finalizers so one stuck process cannot leak the others.
    """
    errors: list[BaseException] = []
    for item in reversed(list(items)):
        try:
            item.stop()
        except BaseException as exc:
            errors.append(exc)
    if errors:
        raise errors[0]


@atexit.register
def _kill_leftovers() -> None:
    for proc in list(_LIVE):
        with contextlib.suppress(Exception):
            proc.stop(timeout=2.0)


class LocalServer:
    """A real server process of ours on 127.0.0.1: its working directory, its URL, stop().

    A directory we made ourselves is deleted on stop(); a caller's is kept (for its logs).
    """

    name = "server"

    def __init__(self, workdir: Path | None = None) -> None:
        self._owns_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix=f"{self.name}-"))
        self.proc: ManagedProcess | None = None
        self.port: int | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError(f"{self.name} not started")
        return f"http://{LOCALHOST}:{self.port}"

    def _launch(self, argv: Callable[[int], list[str]], ready_path: str, timeout: float,
                **kwargs: Any) -> None:
        self.proc, self.port = start_on_free_port(argv, ready_path,
                                                  self.workdir / f"{self.name}.log",
                                                  name=self.name, timeout=timeout, **kwargs)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


class _DoubleServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hung up (a scrape or a probe timing out on a loaded machine) is not the
        # double's error: no traceback for it, every other one still printed.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def answering(status: int, content_type: str, body: bytes) -> type[BaseHTTPRequestHandler]:
    """A double's handler that reads each POST's body and answers it with this, always."""

    class Canned(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    return Canned


def serve_http(handler: type[BaseHTTPRequestHandler]) -> tuple[ThreadingHTTPServer, int]:
    """A threaded HTTP server for a test double on 127.0.0.1:<free port>, serving already."""
    server = _DoubleServer((LOCALHOST, 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, int(server.server_address[1])


@contextlib.contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[int]:
    """`serve_http` for the block's length: its port, the server shut down after."""
    server, port = serve_http(handler)
    try:
        yield port
    finally:
        server.shutdown()
        server.server_close()
