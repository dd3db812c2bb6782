"""`kubernetes.exec`: a fixed command in a pod's container, like `kubectl exec pod -- argv`.

The command core (literal argv, probes, bounded output, the result shape) is command.py's;
this module picks the pod and container and speaks the exec WebSocket (channel.k8s.io v5/v4)
through the official client. Once the command has started nothing is retried: a repeat could
run it twice. Only a failure to open the stream (5xx, 429, a refused connection) is transient.
With `report_option` the command writes its report to a fresh file under /tmp, which two more
execs in the same container read back (`cat`) and delete (`rm -f`).
"""

from __future__ import annotations

import asyncio
import shlex
import time
from dataclasses import replace
from typing import Any

from .base import ActionContext, ActionError, Param, Permission, TransientError, rbac
from .command import COMMAND_PARAMS, REPORT_PARAM, Capture, CommandAction, command_result, report_path
from .kube_client import NAMESPACE, KubeAction, call, client, json_status
from .kube_pods import SELECTOR, default_container, pod_ready

STDOUT, STDERR, ERROR = 1, 2, 3
_TRANSIENT = {429, 500, 502, 503, 504}


class Exec(CommandAction, KubeAction):
    name = "kubernetes.exec"
    summary = ("Run a command written in the playbook in a pod's container (kubectl exec); "
               "a mutation unless it is a documented read-only probe.")
    params = {
        "namespace": NAMESPACE,
        "pod": Param("string", kind="k8s_name", description="one pod (or use selector)"),
        "selector": replace(SELECTOR, description="the first ready pod matching it, by name, "
                                                  "not one terminating"),
        "container": Param("string", kind="container",
                           description="default: the pod's default container, else its first"),
        **COMMAND_PARAMS,
        "report_option": REPORT_PARAM,
    }
    permissions = (*rbac("", "pods", "get", "list"), *rbac("", "pods/exec", "create"))

    def permissions_for(self, params: dict[str, Any]) -> tuple[Permission, ...]:
        verb = "get" if params.get("pod") and not params.get("selector") else "list"
        return (*rbac("", "pods", verb), *rbac("", "pods/exec", "create"))

    def check(self, params: dict[str, Any]) -> list[str]:
        given = [n for n in ("pod", "selector") if params.get(n)]
        where = [] if len(given) == 1 else ["give exactly one of pod or selector"]
        return where + super().check(params)

    def describe(self, params: dict[str, Any]) -> str:
        ns = params["namespace"]
        where = f"pod {ns}/{params['pod']}" if params.get("pod") else \
            f"the first ready pod in {ns} matching {params['selector']}"
        if params.get("container"):
            where += f" (container {params['container']})"
        return self.describe_command(params, where)

    async def run(self, params: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
        ns = params["namespace"]
        pod = await self._pod(ctx, params)
        name = pod["metadata"]["name"]
        container = params.get("container") or default_container(pod)
        if container not in [c["name"] for c in pod["spec"].get("containers") or []]:
            raise ActionError(f"pod {ns}/{name} has no container {container!r}", unapplied=True)
        kube = client(ctx.backends)
        argv, path = list(params["command"]), None
        if params.get("report_option"):
            path = report_path()
            argv += [params["report_option"], path]
        out, err = Capture(params["max_output"]), Capture(params["max_output"])
        where = (kube.configuration, ns, name, container)
        exit_code, timed_out = await asyncio.to_thread(
            _stream, *where, argv, params["timeout"], out, err)
        report = None
        if path is not None:
            try:
                if not timed_out and exit_code in (params.get("ok_exit_codes") or [0]):
                    report = await _read_report(where, path, params, exit_code, out, err)
            finally:  # nothing left behind in the pod, even when the command failed
                await _remove(where, path, ctx)
        # in a thread: masking secrets in the output costs up to ~2 us a byte (secret_text.py)
        result = await asyncio.to_thread(command_result, params, exit_code, out, err,
                                         timed_out=timed_out, report=report)
        return {**result, "pod": name, "container": container}

    async def _pod(self, ctx: ActionContext, params: dict[str, Any]) -> dict[str, Any]:
        ns = params["namespace"]
        if params.get("pod"):
            pod = await call(ctx.backends, f"get pod {ns}/{params['pod']}", "core",
                             "read_namespaced_pod", params["pod"], ns)
            if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                raise ActionError(f"pod {ns}/{params['pod']} has completed: cannot exec into it",
                                  unapplied=True)
            return pod
        listed = await call(ctx.backends, f"list pods in {ns} matching {params['selector']}",
                            "core", "list_namespaced_pod", ns, label_selector=params["selector"])
        # Not a terminating pod, though it may still report Ready: right after a rollout
        # the old ones linger in their grace period, and a command run there (a validator
        # after a flag flip) ran against the old configuration, or was killed mid-way.
        ready = sorted((p for p in listed["items"]
                        if pod_ready(p) and not p["metadata"].get("deletionTimestamp")),
                       key=lambda p: p["metadata"]["name"])
        if not ready:
            raise ActionError(f"no ready pod in {ns} matches {params['selector']!r} "
                              f"({len(listed['items'])} pod(s) match, none ready and not "
                              "terminating)", {"matched": len(listed["items"])}, unapplied=True)
        return ready[0]


async def _read_report(where: tuple[Any, str, str, str], path: str, params: dict[str, Any],
                       exit_code: int | None, out: Capture, err: Capture) -> Capture:
    """The report file the command wrote, read from the container it ran in."""
    report, cat_err = Capture(params["max_output"]), Capture(4096)
    code, timed_out = await asyncio.to_thread(_stream, *where, ["cat", "--", path], 60.0,
                                              report, cat_err)
    if code != 0 or timed_out:
        # in a thread, as command_result: masking two streams of max_output bytes stalled the
        # event loop up to ~1 s (every other run, the webhook, the API)
        raise await asyncio.to_thread(_no_report, params, path, exit_code, out, err,
                                      code, timed_out, cat_err)
    return report


def _no_report(params: dict[str, Any], path: str, exit_code: int | None, out: Capture,
               err: Capture, cat_code: int | None, timed_out: bool,
               cat_err: Capture) -> ActionError:
    """The error for a report `cat` could not read."""
    reason = "timed out" if timed_out else \
        f"exit code {cat_code}: {cat_err.text().strip()[:300]}"
    return ActionError(
        f"{shlex.join(params['command'])!r} (exit code {exit_code}) left no report to read "
        f"at {path} (cat {reason})",
        {"exit_code": exit_code, "stdout": out.text(), "stderr": err.text(),
         "truncated": out.truncated or err.truncated, "json": None, "report": None})


async def _remove(where: tuple[Any, str, str, str], path: str, ctx: ActionContext) -> None:
    try:
        code, _ = await asyncio.to_thread(_stream, *where, ["rm", "-f", "--", path], 30.0,
                                          Capture(1024), Capture(1024))
    except ActionError as exc:  # the result stands; a stray file in /tmp is only untidy
        ctx.log.warning("could not delete the report file %s: %s", path, exc)
        return
    if code != 0:
        ctx.log.warning("could not delete the report file %s: rm exited with %s", path, code)


def _stream(configuration: Any, ns: str, pod: str, container: str, argv: list[str],
            timeout: float, out: Capture, err: Capture) -> tuple[int | None, bool]:
    """(exit code, timed out): run the command over the exec WebSocket, in a worker thread."""
    from kubernetes.stream.ws_client import WSClient, get_websocket_url
    from websocket import WebSocketBadStatusException, WebSocketException

    what = f"exec in pod {ns}/{pod}"
    url = get_websocket_url(
        f"{configuration.host}/api/v1/namespaces/{ns}/pods/{pod}/exec",
        [("command", argv), ("container", container), ("stdin", "false"),
         ("stdout", "true"), ("stderr", "true"), ("tty", "false")])
    headers = {s["key"].lower(): s["value"] for s in configuration.auth_settings().values()
               if s["in"] == "header" and s["value"]}
    try:  # capture_all=False: the client would otherwise keep all output in memory
        ws = WSClient(configuration, url, headers, capture_all=False, binary=True)
    except WebSocketBadStatusException as exc:  # refused before anything ran
        message = json_status(exc.resp_body).get("message") or str(exc).split(" -+-+- ")[0]
        text, result = f"{what}: {message} (HTTP {exc.status_code})", \
            {"error": "handshake", "status": exc.status_code}
        if exc.status_code in _TRANSIENT:  # nothing ran: even a mutating command may retry
            raise TransientError(text, result, unapplied=True) from None
        raise ActionError(text, result, unapplied=True) from None
    except (OSError, WebSocketException) as exc:  # no stream, so no command either
        raise TransientError(f"{what}: {type(exc).__name__}: {exc}",
                             {"error": type(exc).__name__, "status": None},
                             unapplied=True) from exc
    deadline = time.monotonic() + timeout
    status_text = b""
    try:
        while True:
            for channel, sink in ((STDOUT, out), (STDERR, err)):
                data = ws.read_channel(channel)
                if data:
                    sink.add(data)
            status_text += ws.read_channel(ERROR) or b""
            if not ws.is_open():
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None, True
            ws.update(timeout=min(remaining, 1.0))
    except Exception as exc:  # the command may have run: report, never retry
        raise ActionError(f"{what}: the stream broke: {type(exc).__name__}: {exc}") from exc
    finally:
        ws.close()
    return _exit_code(what, status_text), False


def _exit_code(what: str, status_text: bytes) -> int:
    """The exit code from the final Status on the error channel."""
    if not status_text:
        raise ActionError(f"{what}: the stream closed before the command reported its exit "
                          "status", {"exit_code": None})
    status = json_status(status_text)
    if not status:
        raise ActionError(f"{what}: {status_text[:300].decode('utf-8', 'replace')}")
    if status.get("status") == "Success":
        return 0
    for cause in (status.get("details") or {}).get("causes") or []:
        if cause.get("reason") == "ExitCode":
            return int(cause.get("message", "1"))
    raise ActionError(f"{what}: {status.get('message') or status}", {"exit_code": None})
