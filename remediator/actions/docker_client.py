"""What every Docker action shares: the client, one call path, error classification, and the
compose-aware choice of containers.

The `docker` SDK's low-level APIClient is used (see the README's dependency list for why): it
blocks, so every call runs in a worker thread and the event loop keeps taking webhooks. It is
configured like the docker CLI, from DOCKER_HOST, DOCKER_TLS_VERIFY and DOCKER_CERT_PATH, and
the API version is negotiated with the Engine on first use. Retries are the executor's, on
`is_transient` only.

A compose service is the containers labelled with its project and service, as `docker compose`
selects them; one-off containers (`docker compose run`) are never part of it.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from typing import Any

from .. import redact
from .base import Action, ActionError, Param, Permission, TransientError

PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
ONEOFF_LABEL = "com.docker.compose.oneoff"
NUMBER_LABEL = "com.docker.compose.container-number"

_TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})


class DockerClient:
    """A low-level APIClient built from the environment, as the docker CLI reads it."""

    def __init__(self, timeout: float) -> None:
        # Imported here, on first use: a process whose playbooks never touch Docker does not
        # pay for the SDK (nor for requests' pools).
        import docker

        try:
            kwargs = docker.utils.kwargs_from_env()
            # "auto": one GET /version; Engines since v29 refuse API versions below 1.44 and
            # Debian's 20.10 speaks at most 1.41, so no fixed version fits every host.
            self.api = docker.APIClient(version="auto", timeout=timeout, **kwargs)
        except docker.errors.TLSParameterError as exc:
            raise ActionError(f"Docker Engine: {_tls_problem()}", {"error": "connect"}) from exc
        except docker.errors.DockerException as exc:
            cause = exc.__cause__ or exc.__context__
            error = TransientError if cause is not None and is_transient(cause) else ActionError
            why = _unreachable(exc) if error is TransientError else f"Docker Engine: {exc}"
            raise error(why, {"error": "connect"}) from exc

    def close(self) -> None:
        self.api.close()


def client(backends: Any) -> DockerClient:
    """The process's Docker client; not cached while the Engine cannot be reached."""
    return backends.cached("docker", lambda: DockerClient(backends.http_timeout))


def is_transient(exc: BaseException) -> bool:
    """Worth another attempt: the Engine unreachable, timing out or answering 5xx. Never 4xx
    (missing, conflict, denied by a socket proxy): those fail the same way every time."""
    if isinstance(exc, TransientError):
        return True
    if isinstance(exc, ActionError):
        return False
    errors = sys.modules.get("docker.errors")
    if errors is not None and isinstance(exc, errors.APIError):
        return exc.status_code in _TRANSIENT_STATUS
    rex = sys.modules.get("requests.exceptions")
    if rex is not None and isinstance(exc, rex.ConnectionError | rex.Timeout):
        return True
    return isinstance(exc, ConnectionError | TimeoutError)


def _engine() -> str:
    """Where the Engine is looked for, and which variable said so."""
    host = os.environ.get("DOCKER_HOST")
    if host:
        return f"{redact.text(host)} (DOCKER_HOST)"
    return "unix:///var/run/docker.sock (the default: DOCKER_HOST is unset)"


_OS_ERRORS = {FileNotFoundError: "no such socket", PermissionError: "permission denied (is the "
              "process's user allowed on the socket: the docker group?)",
              ConnectionRefusedError: "connection refused"}


def _unreachable(exc: BaseException) -> str:
    """The Engine unreachable, said with where it was looked for and the OS's reason (the
    SDK's message, `('Connection aborted.', FileNotFoundError(2, ...))`, named neither)."""
    seen, todo = 0, [exc]
    while todo and seen < 16:  # the OS error is an argument of an argument of a cause
        current, seen = todo.pop(), seen + 1
        for kind, said in _OS_ERRORS.items():
            if isinstance(current, kind):
                return f"Docker Engine at {_engine()} unreachable: {said}"
        todo += [a for a in getattr(current, "args", ()) if isinstance(a, BaseException)]
        todo += [c for c in (current.__cause__, current.__context__) if c is not None]
    return f"Docker Engine at {_engine()} unreachable: {type(exc).__name__}: {exc}"


def _tls_problem() -> str:
    """What is missing for TLS, as the docker CLI reads it (DOCKER_TLS_VERIFY, DOCKER_CERT_PATH)."""
    path = os.environ.get("DOCKER_CERT_PATH") or ""
    where = f"DOCKER_CERT_PATH={path}" if path else \
        f"{os.path.join(os.path.expanduser('~'), '.docker')} (DOCKER_CERT_PATH is unset)"
    folder = path or os.path.join(os.path.expanduser("~"), ".docker")
    missing = [f for f in ("ca.pem", "cert.pem", "key.pem")
               if not os.path.isfile(os.path.join(folder, f))]
    return (f"TLS is on (DOCKER_TLS_VERIFY or DOCKER_CERT_PATH is set) but {where} lacks "
            f"{', '.join(missing) or 'a readable certificate'}: put ca.pem, cert.pem and key.pem "
            "there, or unset DOCKER_TLS_VERIFY")


async def call(backends: Any, what: str, method: str, *args: Any, **kwargs: Any) -> Any:
    """Run one APIClient method in a thread. `what` names the operation for the step's detail;
    Engine and connection errors become TransientError or ActionError with the status."""

    def blocking() -> Any:
        api = client(backends).api
        result = getattr(api, method)(*args, **kwargs)
        if method not in _STREAMS:
            return result
        # read whole here, off the event loop; the SDK reads /events without a timeout, so a
        # connection that stalls is closed at the client's own
        timer = threading.Timer(api.timeout, result.close)
        timer.start()
        try:
            return list(result)
        finally:
            timer.cancel()

    try:
        return await asyncio.to_thread(blocking)
    except ActionError:
        raise
    except Exception as exc:
        raise error_of(what, exc, read=method in _READS) from exc


# Calls that change nothing (creating an exec runs nothing yet): a failed one is retried even
# inside a step that must not run twice.
_READS = frozenset({"containers", "inspect_container", "logs", "stats", "get_archive",
                    "exec_create", "exec_inspect", "version", "events"})
# Streams that end by themselves (events with `until`), returned as a list.
_STREAMS = frozenset({"events"})


def error_of(what: str, exc: BaseException, read: bool = False) -> ActionError:
    errors = sys.modules.get("docker.errors")
    if errors is not None and isinstance(exc, errors.APIError):
        status = exc.status_code
        message = exc.explanation or str(exc)
        if isinstance(message, bytes):
            message = message.decode("utf-8", "replace")
        error = TransientError if is_transient(exc) else ActionError
        # the Engine refuses a request (4xx) before doing anything
        return error(f"{what}: {message} (HTTP {status})", {"error": "api", "status": status},
                     unapplied=read or (status is not None and 400 <= status < 500))
    if is_transient(exc):
        return TransientError(f"{what}: {_unreachable(exc)}",
                              {"error": type(exc).__name__, "status": None}, unapplied=read)
    return ActionError(f"{what}: {type(exc).__name__}: {exc}", {"error": type(exc).__name__},
                       unapplied=read)


# --- shared declarations and selection -------------------------------------------------------

PROJECT = Param("string", kind="compose_name", description="compose project (docker compose -p)")
PROJECT_REQUIRED = Param("string", required=True, kind="compose_name",
                         description="compose project; the scope guard admits changes by it")
SERVICE = Param("string", kind="compose_name", description="compose service: all its containers")
CONTAINER = Param("string", kind="docker_container", description="one container by name")


def engine(method: str, path: str) -> Permission:
    """An Engine API endpoint, as a socket proxy allows it (`GET /containers/{id}/json`)."""
    return Permission("docker", method, path)


# Every Docker action asks the Engine its version once (the client negotiates it) and finds its
# containers by listing or inspecting them.
DISCOVER = (engine("GET", "/version"), engine("GET", "/containers/json"),
            engine("GET", "/containers/{id}/json"))


def ref(params: dict[str, Any]) -> str:
    """How steps and messages name what they act on."""
    if params.get("container"):
        return f"container {params['container']}"
    if params.get("service"):
        return f"service {params['service']} of compose project {params['project']}"
    return f"compose project {params['project']}"


def selection_problems(params: dict[str, Any], *, need_project: bool = False,
                       one: bool = False) -> list[str]:
    problems = []
    if not params.get("container") and not params.get("project"):
        problems.append("give container, or project (with service)")
    if params.get("container") and params.get("service"):
        problems.append("give container or service, not both")
    if need_project and not params.get("project"):
        problems.append("project is required: the scope guard admits changes by compose project "
                        "(guards.compose_projects.allow), and the container must carry it")
    if one and not params.get("container") and not params.get("service"):
        problems.append("give container or service")
    return problems


class DockerAction(Action):
    def is_transient(self, exc: BaseException) -> bool:
        return is_transient(exc)

    def scope(self, params: dict[str, Any]) -> list[tuple[str, str]]:
        # The Docker socket is root on the host: every change names its compose project
        # (the action checks it against the container's label), and only listed ones pass.
        return [("compose_project", params.get("project") or "")] if self.mutates(params) else []

    def touches(self, params: dict[str, Any]) -> dict[str, Any]:
        # One container by name is one object (`target: {kind: container, name: ...}`); a
        # compose service's containers are named by the Engine at run time, so not compared.
        container = params.get("container")
        return {"kind": "container", "name": container} if container else {}


async def select(backends: Any, params: dict[str, Any], limit: int | None = None
                 ) -> tuple[list[dict[str, Any]], int]:
    """(inspected containers, how many matched): one container by name (checked to belong to
    the project and service given), or a compose service or project's containers, stopped
    ones included, one-off containers excluded, in compose's order."""
    project, service, name = params.get("project"), params.get("service"), params.get("container")
    if name:
        info = await inspect(backends, name)
        labels = info["Config"].get("Labels") or {}
        for label, want in ((PROJECT_LABEL, project), (SERVICE_LABEL, service)):
            if want and labels.get(label) != want:
                raise ActionError(f"container {name} is not part of {label.split('.')[-1]} "
                                  f"{want!r} (its label: {labels.get(label)!r}): not touched",
                                  {"container": name, label: labels.get(label)}, unapplied=True)
        return [info], 1
    filters = [f"{PROJECT_LABEL}={project}"] + ([f"{SERVICE_LABEL}={service}"] if service else [])
    listed = await call(backends, f"list containers of {ref(params)}", "containers", all=True,
                        filters={"label": filters})
    listed = [c for c in listed if (c.get("Labels") or {}).get(ONEOFF_LABEL) != "True"]
    listed.sort(key=lambda c: ((c.get("Labels") or {}).get(SERVICE_LABEL, ""),
                               _number(c), c["Names"][0] if c.get("Names") else c["Id"]))
    chosen = listed[:limit] if limit else listed
    infos = []
    for c in chosen:
        try:
            infos.append(await inspect(backends, c["Id"]))
        except ActionError as exc:
            if exc.result.get("status") != 404:  # removed since the list: not there any more
                raise
    return infos, len(listed)


async def inspect(backends: Any, container: str) -> dict[str, Any]:
    return await call(backends, f"inspect container {container}", "inspect_container", container)


def _number(summary: dict[str, Any]) -> int:
    try:
        return int((summary.get("Labels") or {}).get(NUMBER_LABEL, 0))
    except ValueError:
        return 0


def name_of(info: dict[str, Any]) -> str:
    return info.get("Name", "").lstrip("/") or info["Id"][:12]


def state_of(info: dict[str, Any]) -> dict[str, Any]:
    """What `docker inspect` says on-call looks at: state, health, exit code, OOM, restarts."""
    state = info.get("State") or {}
    labels = (info.get("Config") or {}).get("Labels") or {}
    health = state.get("Health") or {}
    last = (health.get("Log") or [{}])[-1]
    out = {
        "name": name_of(info), "id": info["Id"][:12],
        "project": labels.get(PROJECT_LABEL), "service": labels.get(SERVICE_LABEL),
        "image": (info.get("Config") or {}).get("Image"),
        "status": state.get("Status"), "running": bool(state.get("Running")),
        "restarting": bool(state.get("Restarting")),
        "health": health.get("Status"),  # None: the container has no healthcheck
        "exit_code": state.get("ExitCode"), "oom_killed": bool(state.get("OOMKilled")),
        "error": state.get("Error") or None,
        "restart_count": info.get("RestartCount", 0),
        "started_at": state.get("StartedAt"), "finished_at": state.get("FinishedAt"),
    }
    if health:
        out["failing_streak"] = health.get("FailingStreak", 0)
        out["health_output"] = (last.get("Output") or "").strip()[-500:]
    return out


def ready(state: dict[str, Any]) -> bool:
    """Running, and healthy where a healthcheck exists: compose's `service_healthy`."""
    return state["running"] and not state["restarting"] and state["health"] in (None, "healthy")
