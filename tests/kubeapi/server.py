"""``KubeAPIServer``: the test-facing handle on the fake apiserver.

The aiohttp app runs in a background thread with its own event loop, so the
same server works for sync tests (subprocess kubectl, the sync python client)
and asyncio tests alike. Everything a test needs -- seeding, reading state back,
fault injection, the request journal, rollout control -- is a plain method here.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import datetime as dt
import re
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from . import tls
from .app import App
from .controller import Controller
from .execs import PodExec
from .faults import Fault, FaultTable, RecordedRequest
from .patch import merge_patch
from .pods import NODE, pod_status
from .rbac import ADMIN, Policy, shipped_documents
from .resources import BY_PLURAL, RESOURCES, Resource
from .selectors import parse_label_selector
from .store import Store

LogLine = tuple[dt.datetime, str]


def resolve(name: str) -> Resource:
    """Accept a plural, kind, singular or short name: ``deployments``/``Deployment``/``deploy``."""
    for res in RESOURCES:
        if name in (res.plural, res.kind, res.singular, *res.short_names):
            return res
    raise KeyError(f"unknown resource {name!r}")


ADMIN_TOKEN = "kubeapi-admin-token"


class KubeAPIServer:
    """A Kubernetes API test server on ``https://127.0.0.1:<ephemeral port>``.

    Like a real apiserver it requires a bearer token on every resource request and
    authorizes the remediator's service account with RBAC (``rbac``: the documents in
    deploy/kubernetes/rbac/ unless a test sets others); the admin token (kubectl in tests)
    is system:masters.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0,
                 token: str = "kubeapi-test-token") -> None:
        self.host, self.port = host, port
        self.token = token  # the service account's bearer token, written into kubeconfigs
        self.require_token = True
        self.user = "system:serviceaccount:remediator:remediator"  # the token's identity
        self.rbac = Policy(shipped_documents())
        self.store = Store()
        self.faults = FaultTable()
        self.controller = Controller(self.store, self._schedule)
        self.requests: list[RecordedRequest] = []
        self.logs: dict[tuple[str, str, str | None, bool], list[LogLine]] = {}
        self.execs = PodExec()  # pods/exec runs real local processes (see execs.py)
        self.stopping = False
        self._epoch = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._seed()

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    def user_for(self, authorization: str | None) -> str | None:
        """The authenticated user for an Authorization header, None if unauthenticated."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer":  # the scheme is case-insensitive (in-cluster: "bearer")
            return None
        return {self.token: self.user, ADMIN_TOKEN: ADMIN}.get(token.strip())

    def grant(self, documents: Iterable[dict[str, Any]]) -> None:
        """Add RBAC documents (Role/ClusterRole and their bindings) to the policy."""
        self.rbac = Policy([*self.rbac.documents, *documents])

    def start(self) -> KubeAPIServer:
        """Start serving in a daemon thread; returns self once the port is bound."""
        ready = threading.Event()
        failure: list[BaseException] = []
        self._loop = asyncio.new_event_loop()

        async def startup() -> None:
            self._runner = web.AppRunner(App(self).build(), access_log=None,
                                         shutdown_timeout=1.0)
            await self._runner.setup()
            site = web.TCPSite(self._runner, self.host, self.port,
                               ssl_context=tls.server_context())
            await site.start()
            self.port = self._runner.addresses[0][1]

        def run() -> None:
            assert self._loop is not None
            asyncio.set_event_loop(self._loop)
            try:
                self._loop.run_until_complete(startup())
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                return
            ready.set()
            self._loop.run_forever()

        self.stopping = False
        self._thread = threading.Thread(target=run, name="kubeapi-server", daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure:
            raise failure[0]
        return self

    def stop(self) -> None:
        """Stop serving: open watches end, the port is released."""
        if self._loop is None or self._runner is None:
            return
        self.stopping = True
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread:
            self._thread.join(10)
        self._loop.close()
        self._loop = self._runner = self._thread = None
        self.execs.close()

    def __enter__(self) -> KubeAPIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset(self) -> None:
        """Forget all objects, logs, faults, requests and rollout settings (between tests)."""
        with self.store.lock:
            self._epoch += 1
            self.store.reset()
            self.controller.reset()
            self.faults.clear()
            self.requests.clear()
            self.logs.clear()
            self.execs.reset()
            self.require_token = True
            self.rbac = Policy(shipped_documents())
            self._seed()

    def _seed(self) -> None:
        for ns in ("default", "kube-system", "kube-public"):
            self.add_namespace(ns)

    def _schedule(self, fn: Callable[[], None], delay: float) -> None:
        """Run ``fn`` after ``delay`` seconds unless the server was reset meanwhile."""
        epoch = self._epoch

        def fire() -> None:
            with self.store.lock:
                if epoch == self._epoch:
                    fn()

        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._loop.call_later, delay, fire)
        else:
            threading.Timer(delay, fire).start()

    def write_kubeconfig(self, path: str | Path, namespace: str = "default",
                         admin: bool = False) -> Path:
        """Write a kubeconfig for this server to ``path``: the service account's token (or
        the admin's), the server's CA, the context namespace."""
        path = Path(path)
        user: dict[str, Any] = {"token": ADMIN_TOKEN if admin else self.token}
        ca = base64.b64encode(tls.certificate()[0].read_bytes()).decode()
        config = {
            "apiVersion": "v1", "kind": "Config", "preferences": {},
            "clusters": [{"name": "kubeapi-test", "cluster": {
                "server": self.url, "certificate-authority-data": ca}}],
            "users": [{"name": "kubeapi-test", "user": user}],
            "contexts": [{"name": "kubeapi-test", "context": {
                "cluster": "kubeapi-test", "user": "kubeapi-test", "namespace": namespace}}],
            "current-context": "kubeapi-test",
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    # ------------------------------------------------------------------ seeding

    def add(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create any supported object (namespace auto-created); controllers run at once."""
        with self.store.lock:
            ns = (obj.get("metadata") or {}).get("namespace") or "default"
            res = self.store.resource_for(obj)
            if res.namespaced and self.store.get("namespaces", None, ns) is None:
                self.add_namespace(ns)
            stored = self.store.create(obj, ns if res.namespaced else None,
                                       require_namespace=False)
            self.controller.reconcile(ns)
            return copy.deepcopy(self.store.get(res.plural, stored["metadata"].get("namespace"),
                                                stored["metadata"]["name"]))

    def add_namespace(self, name: str) -> dict[str, Any]:
        return self.add({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})

    def _workload(self, kind: str, name: str, namespace: str, replicas: int, image: str,
                  containers: Iterable[str | dict[str, Any]] | None,
                  labels: dict[str, str] | None, env: dict[str, str] | None,
                  annotations: dict[str, str] | None) -> dict[str, Any]:
        labels = labels or {"app": name}
        specs = []
        for c in containers or [name]:
            spec = {"name": c, "image": image} if isinstance(c, str) else copy.deepcopy(c)
            if env and "env" not in spec:
                spec["env"] = [{"name": k, "value": v} for k, v in env.items()]
            specs.append(spec)
        spec: dict[str, Any] = {"selector": {"matchLabels": dict(labels)}, "template": {
            "metadata": {"labels": dict(labels)}, "spec": {"containers": specs}}}
        if kind != "DaemonSet":
            spec["replicas"] = replicas
        if kind == "StatefulSet":
            spec["serviceName"] = name
        meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": dict(labels)}
        if annotations:
            meta["annotations"] = dict(annotations)
        return self.add({"apiVersion": "apps/v1", "kind": kind, "metadata": meta, "spec": spec})

    def add_deployment(self, name: str, namespace: str = "default", *, replicas: int = 1,
                       image: str = "registry.example.com/app:1.0",
                       containers: Iterable[str | dict[str, Any]] | None = None,
                       labels: dict[str, str] | None = None, env: dict[str, str] | None = None,
                       annotations: dict[str, str] | None = None) -> dict[str, Any]:
        """A Deployment with its ReplicaSet (revision 1) and ``replicas`` ready pods.

        ``containers`` may be names (all using ``image``) or full container dicts;
        default is one container named like the deployment. ``labels`` default to
        ``{"app": name}`` and are used for selector, template and metadata.
        """
        return self._workload("Deployment", name, namespace, replicas, image, containers,
                              labels, env, annotations)

    def add_statefulset(self, name: str, namespace: str = "default", *, replicas: int = 1,
                        image: str = "registry.example.com/app:1.0",
                        containers: Iterable[str | dict[str, Any]] | None = None,
                        labels: dict[str, str] | None = None,
                        env: dict[str, str] | None = None,
                        annotations: dict[str, str] | None = None) -> dict[str, Any]:
        """A StatefulSet with pods ``<name>-0..N-1``."""
        return self._workload("StatefulSet", name, namespace, replicas, image, containers,
                              labels, env, annotations)

    def add_daemonset(self, name: str, namespace: str = "default", *,
                      image: str = "registry.example.com/app:1.0",
                      containers: Iterable[str | dict[str, Any]] | None = None,
                      labels: dict[str, str] | None = None, env: dict[str, str] | None = None,
                      annotations: dict[str, str] | None = None) -> dict[str, Any]:
        """A DaemonSet with one pod per simulated node (``controller.nodes``, default 1)."""
        return self._workload("DaemonSet", name, namespace, 0, image, containers,
                              labels, env, annotations)

    def add_pod(self, name: str, namespace: str = "default", *,
                labels: dict[str, str] | None = None,
                containers: Iterable[str | dict[str, Any]] | None = None,
                image: str = "registry.example.com/app:1.0", ready: bool = True,
                restarts: int = 0, waiting_reason: str | None = None) -> dict[str, Any]:
        """A bare pod (no owner) in the given state."""
        specs = [{"name": c, "image": image} if isinstance(c, str) else copy.deepcopy(c)
                 for c in containers or [name]]
        spec = {"containers": specs, "nodeName": NODE, "serviceAccountName": "default"}
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": namespace,
                            "labels": dict(labels or {"app": name})},
               "spec": spec, "status": pod_status(spec, ready=ready, restarts=restarts,
                                                  waiting_reason=waiting_reason)}
        return self.add(pod)

    def set_pod_state(self, namespace: str, name: str, *, ready: bool = True,
                      restarts: int = 0, waiting_reason: str | None = None,
                      phase: str | None = None, terminating: bool = False) -> dict[str, Any]:
        """Rewrite a pod's status, e.g. ``waiting_reason="CrashLoopBackOff", restarts=7``.
        ``terminating``: deleted, within its grace period (``deletionTimestamp`` set), still
        reporting Ready as the kubelet's last status did, as an old pod does while a rollout
        replaces it.

        Owning workloads' status (readyReplicas...) is recomputed from it.
        """
        with self.store.lock:
            pod = self.store.require(BY_PLURAL["pods"], namespace, name)
            self.controller.forget(pod["metadata"]["uid"])
            pod["status"] = pod_status(pod["spec"], ready=ready, restarts=restarts,
                                       waiting_reason=waiting_reason, phase=phase,
                                       pod_ip=(pod.get("status") or {}).get("podIP", ""))
            if terminating:
                pod["metadata"]["deletionTimestamp"] = dt.datetime.now(dt.UTC).strftime(
                    "%Y-%m-%dT%H:%M:%SZ")
            self.store.touch(pod)
            self.controller.reconcile(namespace)
            return copy.deepcopy(pod)

    def set_logs(self, namespace: str, pod: str, lines: Iterable[str | tuple[float, str]] | str,
                 container: str | None = None, *, previous: bool = False) -> None:
        """Set what ``GET .../pods/<pod>/log`` returns.

        ``lines`` is text, a list of lines, or ``(seconds_ago, line)`` tuples (for
        ``sinceSeconds``). ``container=None`` serves any container of the pod;
        ``previous=True`` sets the ``?previous=true`` (last terminated) logs.
        """
        if isinstance(lines, str):
            lines = lines.splitlines()
        items = list(lines)
        now = dt.datetime.now(dt.UTC)
        out: list[LogLine] = []
        for i, line in enumerate(items):
            if isinstance(line, tuple):
                out.append((now - dt.timedelta(seconds=line[0]), line[1]))
            else:
                out.append((now - dt.timedelta(milliseconds=len(items) - i), line))
        self.logs[(namespace, pod, container, previous)] = out

    def add_image_files(self, image: str, files: dict[str, str | bytes] | Path) -> None:
        """What exec finds in the working directory of containers running ``image``: a
        directory to copy, or {relative path: content}. Set it before the first exec."""
        if isinstance(files, Path):
            self.execs.images[image] = files
            return
        root = self.execs.root / ".images" / image.replace("/", "_").replace(":", "_")
        for rel, content in files.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content)
        self.execs.images[image] = root

    def logs_for(self, namespace: str, pod: str, container: str,
                 previous: bool = False) -> list[LogLine]:
        for key in ((namespace, pod, container, previous), (namespace, pod, None, previous)):
            if key in self.logs:
                return list(self.logs[key])
        return []

    # ------------------------------------------------------------------ reading / mutating

    def get(self, resource: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        """A copy of the stored object, or None. ``resource``: plural/kind/short name."""
        res = resolve(resource)
        obj = self.store.get(res.plural, namespace if res.namespaced else None, name)
        return copy.deepcopy(obj) if obj is not None else None

    def list(self, resource: str, namespace: str | None = None,
             label_selector: str | None = None) -> list[dict[str, Any]]:
        """Copies of stored objects, optionally filtered by a label selector string."""
        res, match = resolve(resource), parse_label_selector(label_selector)
        with self.store.lock:
            return [copy.deepcopy(o) for o in self.store.list(res.plural, namespace)
                    if match(o["metadata"].get("labels") or {})]

    def patch(self, resource: str, namespace: str | None, name: str,
              merge: dict[str, Any]) -> dict[str, Any]:
        """JSON-merge-patch an object out of band (bumps resourceVersion, runs controllers)."""
        res = resolve(resource)
        with self.store.lock:
            current = self.store.require(res, namespace, name)
            status = merge.get("status") if res.has_status else None
            updated = self.store.update(merge_patch(current, merge), namespace, name)
            if status is not None:
                updated = self.store.update(merge_patch(updated, {"status": status}), namespace,
                                            name, subresource="status")
            self.controller.reconcile(namespace or "")
            return copy.deepcopy(updated)

    def delete(self, resource: str, namespace: str | None, name: str) -> None:
        with self.store.lock:
            self.store.delete(resolve(resource), namespace, name)
            self.controller.reconcile(namespace or "")

    def hold_rollout(self, resource: str, namespace: str, name: str, *,
                     fail: bool = False) -> None:
        """New pods of this workload stay unready; ``fail`` adds ProgressDeadlineExceeded."""
        self.controller.hold(resolve(resource).plural, namespace, name, fail=fail)

    def release_rollout(self, resource: str, namespace: str, name: str) -> None:
        self.controller.release(resolve(resource).plural, namespace, name)

    # ------------------------------------------------------------------ faults / journal

    def inject(self, method: str | None = None, path_regex: str = ".*", *,
               status: int | None = 500, times: int | None = 1, delay: float = 0.0,
               message: str | None = None, reason: str | None = None, body: Any = None,
               headers: dict[str, str] | None = None, applied: bool = False) -> Fault:
        """Answer the next ``times`` matching requests with ``status`` (a proper Status
        body unless ``body`` is given), after sleeping ``delay`` seconds.
        ``status=None`` only delays. ``path_regex`` is searched in the URL path.
        ``applied=True`` performs the request first, then delays and answers: a write that
        lands but is answered late (past a client's read timeout) or with an error."""
        return self.faults.add(Fault(method=method, path_regex=path_regex, status=status,
                                     times=times, delay=delay, applied=applied,
                                     message=message, reason=reason,
                                     body=body, headers=dict(headers or {})))

    def forbid(self, verb: str, resource: str, namespace: str | None = None,
               name: str | None = None, *, times: int | None = None) -> Fault:
        """RBAC denial: 403 Forbidden for a k8s ``verb`` (get/list/watch/create/update/
        patch/delete or ``*``) on ``resource`` (plural, ``plural/subresource`` or ``*``)."""
        return self.faults.add(Fault(verb=verb, resource=resource, namespace=namespace,
                                     name=name, times=times, status=403))

    def clear_faults(self) -> None:
        self.faults.clear()

    def requests_matching(self, method: str | None = None,
                          path_regex: str | None = None) -> list[RecordedRequest]:
        """Journal entries filtered by HTTP method and a regex searched in the path."""
        return [r for r in list(self.requests)
                if (method is None or r.method == method.upper())
                and (path_regex is None or re.search(path_regex, r.path))]

    def clear_requests(self) -> None:
        self.requests.clear()
