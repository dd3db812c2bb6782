"""A real Docker Engine for the tests: one private dockerd per test session.

dockerd runs on a socket in a temporary directory with its own data and exec roots, without a
bridge or iptables rules, so the machine's network is never changed; containers run with
`--network none`. The image is imported offline from a root filesystem of Debian's static
busybox (no registry pull). It carries fake `redis-cli`, `pg_isready` and `psql` that answer
what a file inside the container says, so probes in the tests are real execs whose answer the
test controls. Nothing ever talks to a container's IP address.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

IMAGE = "remediator-test/busybox:1"
BUSYBOX = "/bin/busybox"

# Each probe answers from /state/<name> when it exists (its exit code is the file's first
# line when that is a number), else like a healthy server.
_PROBE = """#!/bin/sh
f=/state/{name}
if [ -f "$f" ]; then
  code=$(head -n1 "$f"); tail -n +2 "$f"
  case "$code" in ''|*[!0-9]*) exit 1;; *) exit "$code";; esac
fi
{default}
"""
PROBES = {
    "redis-cli": 'case "$1" in ping|PING) echo PONG;; INFO|info) printf "# Memory\\r\\n'
                 'used_memory:1048576\\r\\nmaxmemory:0\\r\\n";; *) echo OK;; esac',
    "pg_isready": 'echo "/var/run/postgresql:5432 - accepting connections"',
    "psql": 'echo " ?column? "; echo "----------"; echo "        1"; echo "(1 row)"',
    "health-json": 'echo \'{"status": "ok", "uptime": 12}\'',
}


def _rootfs_tar() -> bytes:
    """A root filesystem: busybox, a symlink per applet, the fake probes, /state."""
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        def add(name: str, data: bytes | None = None, mode: int = 0o755,
                link: str | None = None, kind: bytes = tarfile.REGTYPE) -> None:
            info = tarfile.TarInfo(name)
            info.mode, info.type = mode, kind
            if link:
                info.type, info.linkname = tarfile.SYMTYPE, link
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)

        for d in ("bin", "tmp", "state", "data", "etc", "proc", "sys", "dev", "usr",
                  "usr/local", "usr/local/bin"):
            add(d, mode=0o1777 if d == "tmp" else 0o755, kind=tarfile.DIRTYPE)
        add("bin/busybox", Path(BUSYBOX).read_bytes())
        for applet in applets:
            if applet != "busybox":
                add(f"bin/{applet}", link="busybox")
        for name, default in PROBES.items():
            add(f"usr/local/bin/{name}", _PROBE.format(name=name, default=default).encode())
        add("etc/passwd", b"root:x:0:0:root:/:/bin/sh\n", mode=0o644)
    return buf.getvalue()


@dataclass
class DockerEngine:
    """The session's dockerd: its DOCKER_HOST, an SDK client for setting up scenes."""

    host: str
    root: Path
    process: subprocess.Popen
    log: Path

    def __post_init__(self) -> None:
        import docker

        self.client = docker.DockerClient(base_url=self.host, version="auto", timeout=60)
        self.api = self.client.api

    def env(self) -> dict[str, str]:
        return {"DOCKER_HOST": self.host}

    def service(self, project: str, service: str, *, name: str | None = None,
                command: str = "echo started; exec sleep 100000", number: int = 1,
                health: str | None = None, oneoff: bool = False,
                state: dict[str, str] | None = None, start: bool = True,
                env: dict[str, str] | None = None, memory: str | None = None) -> Any:
        """A container as docker compose makes it: its labels, its name, a healthcheck
        (`--health-cmd`) where asked; `state` pre-fills /state files (the probes' answers);
        `memory` its limit (`--memory`, swap included: past it the kernel's OOM killer)."""
        name = name or f"{project}-{service}-{number}"
        labels = {"com.docker.compose.project": project, "com.docker.compose.service": service,
                  "com.docker.compose.container-number": str(number),
                  "com.docker.compose.oneoff": "True" if oneoff else "False"}
        setup = "".join(f"printf '%s' '{v}' > /state/{k}; " for k, v in (state or {}).items())
        kwargs: dict[str, Any] = {}
        if memory:
            kwargs.update(mem_limit=memory, memswap_limit=memory)
        if health:
            kwargs["healthcheck"] = {"test": ["CMD-SHELL", health], "interval": 300_000_000,
                                     "timeout": 2_000_000_000, "retries": 1,
                                     "start_period": 0}
        container = self.client.containers.create(
            IMAGE, ["sh", "-c", setup + command], name=name, labels=labels,
            network_mode="none", environment=env or {}, **kwargs)
        if start:
            container.start()
        return container

    def set_state(self, container: str, name: str, content: str) -> None:
        """Change a probe's answer inside a running container."""
        c = self.client.containers.get(container)
        result = c.exec_run(["sh", "-c", f"printf '%s' \"$1\" > /state/{name}", "-", content])
        assert result.exit_code == 0, result.output

    def crash(self, container: str) -> None:
        """The container's main process SIGKILLed from the host, as the kernel's OOM killer or
        a `kill -9` on the host ends it: the Engine sends no signal and logs only its `die`
        (137). Inside the container PID 1 cannot be sent SIGKILL; `docker kill` is the Engine's
        own, deliberate."""
        pid = self.api.inspect_container(container)["State"]["Pid"]
        assert pid > 0, f"{container} is not running"
        os.kill(pid, signal.SIGKILL)
        self.wait_for(container, lambda s: s["Status"] == "exited")

    def wait_for(self, container: str, predicate, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            info = self.api.inspect_container(container)
            if predicate(info["State"]):
                return info
            if time.monotonic() > deadline:
                raise AssertionError(f"{container}: state never matched: {info['State']}")
            time.sleep(0.1)

    def wait_logs(self, container: str, text: str, timeout: float = 30.0, times: int = 1) -> None:
        deadline = time.monotonic() + timeout
        while self.api.logs(container).count(text.encode()) < times:
            if time.monotonic() > deadline:
                raise AssertionError(f"{container}: {text!r} never logged")
            time.sleep(0.1)

    def remove_all(self) -> None:
        for c in self.client.containers.list(all=True):
            c.remove(force=True)

    def stop(self) -> None:
        try:
            self.remove_all()
            self.client.close()
        finally:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            subprocess.run(["umount", "-R", str(self.root / "data")], capture_output=True)
            shutil.rmtree(self.root, ignore_errors=True)


def start_dockerd() -> DockerEngine:
    dockerd = shutil.which("dockerd")
    if dockerd is None:
        raise RuntimeError("dockerd is not installed (Debian package docker.io; tests/run.sh "
                           "installs it)")
    # A short root: the daemon's unix sockets live under it and sun_path holds 108 bytes.
    root = Path(tempfile.mkdtemp(prefix="rd", dir="/tmp"))
    log = root / "dockerd.log"
    sock = root / "d.sock"
    cmd = [dockerd, "--host", f"unix://{sock}", "--data-root", str(root / "data"),
           "--exec-root", str(root / "x"), "--pidfile", str(root / "pid"),
           "--bridge=none", "--iptables=false", "--ip6tables=false"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    deadline = time.monotonic() + 60
    while not sock.exists() or _ping(sock) is False:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            tail = log.read_text(errors="replace")[-3000:]
            shutil.rmtree(root, ignore_errors=True)
            raise RuntimeError(f"dockerd did not start:\n{tail}")
        time.sleep(0.1)
    engine = DockerEngine(f"unix://{sock}", root, proc, log)
    try:
        engine.api.import_image_from_data(_rootfs_tar(), repository=IMAGE.split(":")[0],
                                          tag=IMAGE.split(":")[1])
    except Exception:
        engine.stop()
        raise
    return engine


def _ping(sock: Path) -> bool:
    import socket

    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(2)
            s.connect(str(sock))
            s.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
            return b"200 OK" in s.recv(256)
    except OSError:
        return False


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[DockerEngine]:
    engine = start_dockerd()
    yield engine
    engine.stop()


@pytest.fixture
def docker_env(docker_engine: DockerEngine, monkeypatch) -> Iterator[DockerEngine]:
    """DOCKER_HOST pointing at the session's dockerd; every container removed afterwards."""
    for var in ("DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH", "DOCKER_CONTEXT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("DOCKER_HOST", docker_engine.host)
    yield docker_engine
    docker_engine.remove_all()
