"""`docker.exec`: a fixed command in a container, like `docker exec ctr argv` (never a shell
unless the playbook writes `sh -c`).

The command core (literal argv, read-only probes, bounded output, the result shape) is
command.py's, shared with kubernetes.exec; this module picks the container and speaks the
Engine's exec endpoints: create, start (one hijacked stream, stdout and stderr multiplexed in
frames), inspect for the exit code. Creating the exec may be retried (nothing ran yet); once
it is started nothing is retried, since a repeat could run the command twice. The Engine has no
call that stops an exec: at the timeout the step stops reading and reports it, and the process
runs on in the container, as after `docker exec` is interrupted.
"""

from __future__ import annotations

import asyncio
import select
import struct
import time
from typing import Any

from .base import ActionContext, ActionError
from .command import COMMAND_PARAMS, Capture, CommandAction, command_result
from .docker_client import (
    CONTAINER,
    DISCOVER,
    PROJECT,
    SERVICE,
    DockerAction,
    call,
    client,
    engine,
    name_of,
    ref,
    selection_problems,
)
from .docker_client import (
    select as select_containers,
)

STDOUT, STDERR = 1, 2
_HEADER = struct.Struct(">BxxxL")  # the Engine's stream frame: stream id, 3 zero bytes, size


class Exec(CommandAction, DockerAction):
    name = "docker.exec"
    summary = ("Run a command written in the playbook in a container (docker exec); a mutation "
               "unless it is a documented read-only probe.")
    params = {
        "project": PROJECT, "service": SERVICE,
        "container": CONTAINER,
        **COMMAND_PARAMS,
    }
    permissions = (*DISCOVER, engine("POST", "/containers/{id}/exec"),
                   engine("POST", "/exec/{id}/start"), engine("GET", "/exec/{id}/json"))

    def check(self, params: dict[str, Any]) -> list[str]:
        # A change names its project: the scope guard admits it, the container must carry it.
        return selection_problems(params, one=True, need_project=self.mutates(params)) \
            + super().check(params)

    def describe(self, params: dict[str, Any]) -> str:
        where = ref(params) if params.get("container") else \
            f"the first running container of {ref(params)}"
        return self.describe_command(params, where)

    async def run(self, params: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
        infos, _ = await select_containers(ctx.backends, params)
        running = [i for i in infos if (i.get("State") or {}).get("Running")]
        if not running:
            states = ", ".join(f"{name_of(i)} {(i.get('State') or {}).get('Status')}"
                               for i in infos) or "none exists"
            raise ActionError(f"no running container of {ref(params)} to exec in ({states})",
                              {"matched": len(infos)}, unapplied=True)
        target = running[0]
        # Creating runs nothing yet: its errors are classified (and retried) like any call.
        created = await call(ctx.backends, f"exec in container {name_of(target)}", "exec_create",
                             target["Id"], list(params["command"]), stdout=True, stderr=True,
                             tty=False)
        out, err = Capture(params["max_output"]), Capture(params["max_output"])
        exit_code, timed_out = await asyncio.to_thread(
            _stream, ctx.backends, created["Id"], name_of(target), params["timeout"], out, err)
        # in a thread: masking secrets in the output costs up to ~2 us a byte (secret_text.py)
        result = await asyncio.to_thread(command_result, params, exit_code, out, err,
                                         timed_out=timed_out)
        return {**result, "container": name_of(target)}


def _stream(backends: Any, exec_id: str, container: str, timeout: float, out: Capture,
            err: Capture) -> tuple[int | None, bool]:
    """(exit code, timed out): start the exec and demultiplex its stream, in a worker thread
    (where the client is fetched too: building it asks the Engine its version)."""
    what = f"exec in container {container}"
    deadline = time.monotonic() + timeout
    try:
        api = client(backends).api
        sock = api.exec_start(exec_id, socket=True)
    except Exception as exc:  # it may have started: report, never retry
        raise ActionError(f"{what}: starting failed, the command may have run: "
                          f"{type(exc).__name__}: {exc}") from exc
    raw = getattr(sock, "_sock", sock)  # the socket under the response's SocketIO
    buffer = b""
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None, True
            pending = getattr(raw, "pending", lambda: 0)()  # TLS: bytes already decrypted
            if not pending and not select.select([raw], [], [], min(remaining, 1.0))[0]:
                continue
            chunk = raw.recv(65536)
            if not chunk:
                break
            buffer += chunk
            while len(buffer) >= _HEADER.size:
                stream, size = _HEADER.unpack_from(buffer)
                if len(buffer) < _HEADER.size + size:
                    break
                data = buffer[_HEADER.size:_HEADER.size + size]
                buffer = buffer[_HEADER.size + size:]
                (err if stream == STDERR else out).add(data)
    except OSError as exc:
        raise ActionError(f"{what}: the stream broke: {type(exc).__name__}: {exc}") from exc
    finally:
        sock.close()
    for _ in range(50):  # the stream ends as the process exits; the Engine records it just after
        try:
            state = api.exec_inspect(exec_id)
        except Exception as exc:  # the command ran: never a reason to run it again
            raise ActionError(f"{what}: its exit code could not be read: "
                              f"{type(exc).__name__}: {exc}", {"exit_code": None}) from exc
        if not state.get("Running"):
            return state.get("ExitCode"), False
        time.sleep(0.1)
    raise ActionError(f"{what}: the stream ended but the command still runs", {"exit_code": None})
