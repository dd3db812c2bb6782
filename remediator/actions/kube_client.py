"""What every Kubernetes action shares: the client, one call path, error classification.

The official client blocks, so every call runs in a worker thread (`asyncio.to_thread`) and
the event loop keeps taking webhooks. urllib3's own retries are off: the executor retries, on
`is_transient` only and inside the step's deadline, so every backend follows one policy and the
record counts the real attempts. Responses are read raw (`_preload_content=False`) and decoded
as JSON: actions see exactly what the apiserver stored (the models drop unknown fields, and
kubernetes 36.x garbles pod logs as "b'...'"), in the same camelCase as kubectl's output.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from .base import (
    Action,
    ActionError,
    Param,
    Permission,
    TransientError,
    parse_json,
    retry_after,
)

T = TypeVar("T")

CONNECT_TIMEOUT = 5.0

FIELD_MANAGER = "remediator"  # who changed it, in the object's managedFields
STRATEGIC = "application/strategic-merge-patch+json"
MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"

_TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})
_APIS = {"core": "CoreV1Api", "apps": "AppsV1Api", "autoscaling": "AutoscalingV2Api"}

if TYPE_CHECKING:
    from kubernetes.client.exceptions import ApiException


class KubeClient:
    """An ApiClient built from its own Configuration, never the process-global default."""

    def __init__(self) -> None:
        # Imported here, on first use: the client's models cost ~55 MB, which a process
        # whose playbooks never touch Kubernetes should not pay.
        from kubernetes import client as k8s
        from kubernetes import config as k8s_config
        from kubernetes.config.config_exception import ConfigException

        cfg = k8s.Configuration()
        kubeconfig = os.environ.get("KUBECONFIG")
        try:
            # An explicit KUBECONFIG wins over the pod's service account, as in kubectl: a
            # test run or an operator's shell inside a pod must never act on that cluster.
            if not kubeconfig and os.environ.get("KUBERNETES_SERVICE_HOST"):
                k8s_config.load_incluster_config(client_configuration=cfg)
            else:
                # The path is passed explicitly: the library reads $KUBECONFIG at import time.
                k8s_config.load_kube_config(config_file=kubeconfig or "~/.kube/config",
                                            client_configuration=cfg, persist_config=False)
        except (ConfigException, OSError) as exc:
            raise ActionError(f"no Kubernetes configuration (in-cluster or KUBECONFIG): {exc}",
                              {"error": "config"}, unapplied=True) from exc
        cfg.retries = 0  # the executor is the one place retries happen
        self.configuration = cfg
        self.api = k8s.ApiClient(cfg)
        self.apis = {name: getattr(k8s, cls) for name, cls in _APIS.items()}

    def close(self) -> None:
        self.api.close()
        self.api.rest_client.pool_manager.clear()


def client(backends: Any) -> KubeClient:
    """The process's Kubernetes client (thread-safe: worker threads share its pool)."""
    return backends.cached("kubernetes", KubeClient)


def is_transient(exc: BaseException) -> bool:
    """Worth another attempt: throttling, 5xx, timeouts, resets. Never 4xx (denied, missing,
    conflict, invalid): those fail the same way on every attempt."""
    if isinstance(exc, TransientError):
        return True
    if isinstance(exc, ActionError):
        return False
    # An exception can only be one of these if its module was imported: no need to load it.
    kube = sys.modules.get("kubernetes.client.exceptions")
    if kube is not None and isinstance(exc, kube.ApiException):
        return exc.status in _TRANSIENT_STATUS
    u3 = sys.modules.get("urllib3.exceptions")
    if u3 is not None:
        if isinstance(exc, u3.MaxRetryError):
            return exc.reason is not None and is_transient(exc.reason)
        # Network failures that say nothing about the request. Not SSL or proxy errors:
        # those are configuration and fail the same way every time.
        if isinstance(exc, u3.ProtocolError | u3.TimeoutError | u3.NewConnectionError):
            return True
    return isinstance(exc, ConnectionError | TimeoutError)


def status_of(exc: ActionError) -> int | None:
    """The HTTP status behind a failed call (None for network errors)."""
    return exc.result.get("status")


async def call(backends: Any, what: str, api: str, method: str, *args: Any,
               text: bool = False, **kwargs: Any) -> Any:
    """Run one API call in a thread; the decoded JSON body (or text, for logs).

    `what` names the operation and object for the step's detail (`patch deployment ns/x`).
    ApiExceptions and connection errors become TransientError or ActionError carrying the
    apiserver's Status message.
    """
    # Built in a thread: loading the kubeconfig runs its credential plugin (`aws eks
    # get-token`...) and imports the client, seconds the event loop must not wait.
    kube = await asyncio.to_thread(client, backends)
    fn = getattr(kube.apis[api](kube.api), method)
    import urllib3  # loaded with the client above
    from kubernetes.client.exceptions import ApiException
    # The read timeout is the one every HTTP backend uses; the step's own deadline is longer.
    timeout = (CONNECT_TIMEOUT, backends.http_timeout)

    def blocking() -> bytes:
        resp = fn(*args, _preload_content=False, _request_timeout=timeout, **kwargs)
        try:
            return resp.data
        finally:
            resp.release_conn()

    read = method.startswith(("read_", "list_"))  # a failed read changed nothing
    try:
        data = await asyncio.to_thread(blocking)
    except ApiException as exc:
        raise _api_error(what, exc, read) from exc
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        cause = exc.reason if isinstance(exc, urllib3.exceptions.MaxRetryError) else exc
        message = f"{what}: {type(cause).__name__}: {cause}"
        result = {"error": type(cause).__name__, "status": None}
        if is_transient(exc):
            raise TransientError(message, result, unapplied=read) from exc
        raise ActionError(message, result, unapplied=read) from exc
    if text:
        return data.decode("utf-8", "replace")
    try:
        return parse_json(data)
    except ValueError as exc:  # after a write was answered: it may have been applied
        raise ActionError(f"{what}: reply refused: {exc}", {"error": "reply"},
                          unapplied=read) from None


def _api_error(what: str, exc: ApiException, read: bool) -> ActionError:
    body = exc.body.decode("utf-8", "replace") if isinstance(exc.body, bytes) else exc.body or ""
    status = json_status(body)
    reason = status.get("reason") or exc.reason or ""
    text = f"{what}: {reason} (HTTP {exc.status}): {status.get('message') or body[:500]}"
    result = {"error": reason, "status": exc.status}
    if is_transient(exc):
        # A 429 (API priority and fairness, or a webhook's throttle) is refused before the
        # request is processed: even a change may retry, after the delay it asks for.
        headers = exc.headers or {}
        return TransientError(text.rstrip(": "), result, unapplied=read or exc.status == 429,
                              retry_after=retry_after(headers.get("Retry-After")))
    # the apiserver refuses a request (4xx) before changing anything
    refused = exc.status is not None and 400 <= exc.status < 500
    return ActionError(text.rstrip(": "), result, unapplied=read or refused)


def json_status(body: Any) -> dict[str, Any]:
    """The apiserver's Status object from an error body ({} when it is not one)."""
    try:
        doc = parse_json(body) if body else {}
    except (ValueError, TypeError):
        return {}
    return doc if isinstance(doc, dict) else {}


class KubeAction(Action):
    """What every Kubernetes action shares: the error classification above, and RBAC
    narrowed to the workload kind a step names."""

    def is_transient(self, exc: BaseException) -> bool:
        return is_transient(exc)

    def permissions_for(self, params: dict[str, Any]) -> tuple[Permission, ...]:
        spec = self.params.get("kind")
        kind = params.get("kind", spec.default if spec else None)
        perms = self.permissions
        if isinstance(kind, str) and kind in PLURAL:  # else templated or absent: all kinds
            others = {PLURAL[k] for k in WORKLOADS if k != kind}
            perms = tuple(p for p in perms if p.resource.split("/")[0] not in others)
        return named(perms, params, {PLURAL[k] for k in WORKLOADS})

    def touches(self, params: dict[str, Any]) -> dict[str, Any]:
        # A workload action names its object (kind, namespace, name); one on pods (by
        # name or selector) names only their namespace.
        out = {"namespace": params.get("namespace")}
        if "kind" in self.params and "name" in self.params:
            out.update(kind=params.get("kind", self.params["kind"].default),
                       name=params.get("name"))
        return {k: v for k, v in out.items() if v is not None}


_NAMED_VERBS = frozenset({"get", "patch", "update", "delete"})


def named(perms: tuple[Permission, ...], params: dict[str, Any],
          resources: set[str]) -> tuple[Permission, ...]:
    """Narrow the calls on the step's one object (`params.name`: a workload, its /scale) to
    that name, so RBAC can grant them with resourceNames; lists stay collection-wide."""
    name = params.get("name")
    if not isinstance(name, str) or not name:
        return perms
    return tuple(dataclasses.replace(p, name=name)
                 if p.verb in _NAMED_VERBS and p.resource.split("/")[0] in resources else p
                 for p in perms)


# --- shared declarations, so every action validates the same way ------------------------------

NAMESPACE = Param("string", required=True, kind="namespace")
NAME = Param("string", required=True, kind="k8s_name")
WORKLOADS = ("deployment", "statefulset", "daemonset")
# kind -> the method-name stem in AppsV1Api (read_namespaced_<stem>, patch_namespaced_<stem>)
STEM = {"deployment": "deployment", "statefulset": "stateful_set", "daemonset": "daemon_set"}
PLURAL = {"deployment": "deployments", "statefulset": "statefulsets", "daemonset": "daemonsets"}


def workload_kind(*kinds: str, default: str = "deployment") -> Param:
    return Param("string", default=default, choices=kinds, description="the workload's kind")


def ref(params: dict[str, Any]) -> str:
    """`deployment ns/name`, as steps and messages name their object."""
    return f"{params.get('kind', 'deployment')} {params['namespace']}/{params['name']}"


async def read_workload(backends: Any, kind: str, namespace: str, name: str) -> dict[str, Any]:
    return await call(backends, f"get {kind} {namespace}/{name}", "apps",
                      f"read_namespaced_{STEM[kind]}", name, namespace)


async def patch_workload(backends: Any, kind: str, namespace: str, name: str, body: Any,
                         content_type: str = STRATEGIC) -> dict[str, Any]:
    return await call(backends, f"patch {kind} {namespace}/{name}", "apps",
                      f"patch_namespaced_{STEM[kind]}", name, namespace, body,
                      _content_type=content_type, field_manager=FIELD_MANAGER)


async def reread_on_conflict(attempt: Callable[[], Awaitable[T]]) -> T:
    """Run a read-compute-write once more from a fresh read if the write conflicted (409).

    Writes computed from a read carry its resourceVersion, so a change that lands in between
    makes them fail instead of overwriting it; one fresh attempt settles the usual race.
    """
    try:
        return await attempt()
    except ActionError as exc:
        if status_of(exc) != 409:
            raise
    return await attempt()
