"""`pods/exec` for real: the channel.k8s.io WebSocket protocol over a local process.

The pod model: a command runs as a real process on this machine, in a per-pod, per-container
directory (seeded once from the files a test registered for the container's image, e.g. a
`scripts/` tree), with the container's literal env (`env[].value`), and only programs from a
whitelist (python, and the
scripts in tests/kubeapi/programs, e.g. `aws`): `exec: "x": executable file not
found in $PATH` otherwise, as a container runtime says.

Protocol (what kubectl >= 1.30 and the python client speak): the client upgrades a GET (or
POST) on .../pods/<pod>/exec?command=..&container=..&stdout=true&stderr=true to a WebSocket
with subprotocol v5.channel.k8s.io (or v4). Every binary message starts with a channel byte:
1 stdout, 2 stderr, 3 the final `Status` (Success, or Failure with reason NonZeroExitCode and
the code in details.causes[ExitCode]); v5 adds 255 <channel> to close a stream. Then the server
closes the connection normally.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from . import errors
from .pods import is_ready

if TYPE_CHECKING:
    from .rest import Target
    from .server import KubeAPIServer

PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
STDOUT, STDERR, ERROR, CLOSE = 1, 2, 3, 255
PROGRAMS = Path(__file__).parent / "programs"
MAX_SECONDS = 300  # a process nobody waits for any more is killed after this


def _status(message: str, reason: str = "", code: int = 0, exit_code: int | None = None) -> dict:
    if exit_code is None and not reason:
        return {"metadata": {}, "status": "Success"}
    status: dict[str, Any] = {"metadata": {}, "status": "Failure", "message": message,
                              "reason": reason}
    if exit_code is not None:
        status["details"] = {"causes": [{"reason": "ExitCode", "message": str(exit_code)}]}
    if code:
        status["code"] = code
    return status


class PodExec:
    """The exec side of the pod model: programs, per-pod directories, the exec journal."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="kubeapi-pods-"))
        # argv[0] -> what really runs; nothing else can (no shell, no absolute paths)
        self.programs: dict[str, list[str]] = {"python": [sys.executable],
                                               "python3": [sys.executable]}
        self.programs.update({p.stem: [sys.executable, str(p)] for p in PROGRAMS.glob("*.py")})
        self.images: dict[str, Path] = {}
        # (namespace, pod, container, argv) of every command started, for assertions
        self.started: list[tuple[str, str, str, list[str]]] = []
        self._processes: set[asyncio.subprocess.Process] = set()

    def reset(self) -> None:
        self.started.clear()
        self.images.clear()
        for child in self.root.iterdir():
            shutil.rmtree(child, ignore_errors=True)

    def close(self) -> None:
        for proc in list(self._processes):
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        shutil.rmtree(self.root, ignore_errors=True)

    def workdir(self, namespace: str, pod: str, container: str, image: str = "") -> Path:
        """The container's working directory, seeded from its image's files on first use."""
        path = self.root / namespace / pod / container
        if not path.exists():
            source = self.images.get(image)
            if source is not None:
                shutil.copytree(source, path)
            else:
                path.mkdir(parents=True)
        return path

    async def handle(self, server: KubeAPIServer, request: web.Request,
                     target: Target) -> web.StreamResponse:
        query = request.query
        argv = query.getall("command", [])
        with server.store.lock:
            pod = server.store.require(target.res, target.namespace, target.name or "")
        spec, name, ns = pod["spec"], pod["metadata"]["name"], pod["metadata"]["namespace"]
        containers = {c["name"]: c for c in spec.get("containers") or []}
        container = query.get("container") or (next(iter(containers)) if len(containers) == 1
                                                else "")
        if not container:
            raise errors.ApiError(400, f"a container name must be specified for pod {name}, "
                                       f"choose one of: [{' '.join(containers)}]", "BadRequest")
        if container not in containers:
            raise errors.ApiError(400, f"container {container} is not valid for pod {name}",
                                  "BadRequest")
        if (pod.get("status") or {}).get("phase") != "Running" or not is_ready(pod):
            raise errors.ApiError(400, f"unable to upgrade connection: container {container} "
                                       f"not found in pod {name}", "BadRequest")
        if not argv:
            raise errors.ApiError(400, "you must specify at least 1 command", "BadRequest")
        if request.headers.get("Upgrade", "").lower() != "websocket":
            raise errors.ApiError(400, "Upgrade request required (this server speaks "
                                       f"{', '.join(PROTOCOLS)}, not SPDY)", "BadRequest")
        ws = web.WebSocketResponse(protocols=PROTOCOLS, autoping=True)
        await ws.prepare(request)
        if ws.ws_protocol not in PROTOCOLS:  # only the legacy base64/v1 protocols offered
            await ws.close()
            return ws
        self.started.append((ns, name, container, list(argv)))
        spec_c = containers[container]
        status = await self._run(ws, argv, ns, name, container, spec_c, query)
        with contextlib.suppress(ConnectionError):
            await ws.send_bytes(bytes([ERROR]) + json.dumps(status).encode())
        await ws.close()
        return ws

    async def _run(self, ws: web.WebSocketResponse, argv: list[str], ns: str, pod: str,
                   container: str, spec: dict[str, Any], query: Any) -> dict[str, Any]:
        program = self.programs.get(argv[0])
        if program is None:
            return _status(f"Internal error occurred: error executing command in container: "
                           f"exec: \"{argv[0]}\": executable file not found in $PATH",
                           "InternalError", 500)
        cwd = self.workdir(ns, pod, container, spec.get("image", ""))
        env = {"PATH": os.path.dirname(sys.executable), "HOME": str(cwd), "LANG": "C.UTF-8", "HOSTNAME": pod,
               **{e["name"]: e.get("value", "") for e in spec.get("env") or []
                  if "valueFrom" not in e}}
        wanted = {STDOUT: query.get("stdout", "true") in ("1", "true", "True"),
                  STDERR: query.get("stderr", "true") in ("1", "true", "True")}
        proc = await asyncio.create_subprocess_exec(
            *program, *argv[1:], cwd=cwd, env=env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        self._processes.add(proc)

        async def pump(stream: asyncio.StreamReader, channel: int) -> None:
            while chunk := await stream.read(32768):
                if wanted[channel]:
                    await ws.send_bytes(bytes([channel]) + chunk)

        async def watch_client() -> None:
            async for msg in ws:  # v5 CLOSE signals and anything else: nothing to feed
                if msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
                    break

        pumps = asyncio.gather(pump(proc.stdout, STDOUT), pump(proc.stderr, STDERR))
        client = asyncio.ensure_future(watch_client())
        try:
            done, _ = await asyncio.wait({pumps, client}, timeout=MAX_SECONDS,
                                         return_when=asyncio.FIRST_COMPLETED)
            if pumps not in done:  # the client went away, or nobody waits any more
                proc.kill()
                pumps.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                    await pumps
                await proc.wait()
                return _status("the client closed the stream", "InternalError", 500)
            code = await proc.wait()
        except (ConnectionError, asyncio.CancelledError):
            proc.kill()
            await proc.wait()
            raise
        finally:
            client.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await client
            self._processes.discard(proc)
        if code == 0:
            return _status("")
        return _status(f"command terminated with non-zero exit code: error executing command "
                       f"{argv}, exit code {code}", "NonZeroExitCode", exit_code=code)
