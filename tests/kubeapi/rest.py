"""Synchronous REST semantics for resource URLs (everything except watch/discovery).

Each function returns ``(http_status, body)`` where body is a JSON-able dict or,
for pod logs, a ``str``. They run under the store lock, called from the aiohttp
layer in ``app.py``.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import errors
from .decoding import decode
from .patch import PatchError, apply_patch
from .resources import Resource, lookup
from .selectors import parse_field_selector, parse_label_selector, selector_to_string

if TYPE_CHECKING:
    from .server import KubeAPIServer


@dataclass(frozen=True)
class Target:
    """A parsed resource URL."""

    res: Resource
    namespace: str | None
    name: str | None
    sub: str | None


def parse_path(path: str) -> Target | None:
    """Parse ``/api/v1/...`` and ``/apis/<g>/<v>/...`` resource URLs; None if not one."""
    parts = [p for p in path.split("/") if p]
    if parts[:2] == ["api", "v1"]:
        group, version, rest = "", "v1", parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    if len(rest) >= 3 and rest[0] == "namespaces" and lookup(group, version, rest[2]):
        ns, rest = rest[1], rest[2:]
    else:
        ns = None
    if not rest or len(rest) > 3:
        return None
    res = lookup(group, version, rest[0])
    if res is None or (ns is None and res.namespaced and len(rest) > 1):
        return None
    name = rest[1] if len(rest) > 1 else None
    sub = rest[2] if len(rest) > 2 else None
    if sub is not None and sub not in res.subresources:
        return None
    return Target(res, ns, name, sub)


def truthy(value: str | None) -> bool:
    """Go's strconv.ParseBool, which the apiserver uses (the python client sends ``True``)."""
    return value in ("1", "t", "T", "true", "TRUE", "True")


def k8s_verb(method: str, target: Target, query: dict[str, str]) -> str:
    if target.sub == "exec":  # a WebSocket exec is a GET, authorized as create (1.30+)
        return "create"
    if method == "GET":
        if truthy(query.get("watch")):
            return "watch"
        return "get" if target.name else "list"
    if method == "DELETE":
        return "delete" if target.name else "deletecollection"
    return {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method, method.lower())


def _strip(obj: dict[str, Any]) -> dict[str, Any]:
    item = copy.deepcopy(obj)
    item.pop("kind", None)
    item.pop("apiVersion", None)
    return item


def select(server: KubeAPIServer, target: Target, query: dict[str, str]) -> list[dict]:
    """Objects matching the URL scope and label/field selectors."""
    labels = parse_label_selector(query.get("labelSelector"))
    fields = parse_field_selector(query.get("fieldSelector"), target.res.field_labels)
    return [o for o in server.store.list(target.res.plural, target.namespace)
            if labels(o["metadata"].get("labels") or {}) and fields(o)]


def list_objects(server: KubeAPIServer, target: Target, query: dict[str, str]) -> dict:
    items = select(server, target, query)
    offset = int(base64.b64decode(query["continue"]).decode()) if query.get("continue") else 0
    limit = int(query.get("limit") or 0)
    meta: dict[str, Any] = {"resourceVersion": str(server.store.rv)}
    page = items[offset:offset + limit] if limit else items[offset:]
    if limit and offset + limit < len(items):
        meta["continue"] = base64.b64encode(str(offset + limit).encode()).decode()
        meta["remainingItemCount"] = len(items) - offset - limit
    return {"kind": f"{target.res.kind}List", "apiVersion": target.res.api_version,
            "metadata": meta, "items": [_strip(o) for o in page]}


def _scale(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj["metadata"]
    return {"kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion",
                                              "creationTimestamp") if k in meta},
            "spec": {"replicas": obj["spec"].get("replicas", 1)},
            "status": {"replicas": (obj.get("status") or {}).get("replicas", 0),
                       "selector": selector_to_string(obj["spec"].get("selector"))}}


def _write_scale(server: KubeAPIServer, target: Target, obj: dict, scale: dict,
                 dry_run: bool) -> dict:
    replicas = (scale.get("spec") or {}).get("replicas")
    if not isinstance(replicas, int) or replicas < 0:
        raise errors.invalid(target.res, "Scale", target.name or "", [
            ("spec.replicas", f"Invalid value: {replicas}: must be greater than or equal to 0")])
    new = copy.deepcopy(obj)
    new["spec"]["replicas"] = replicas
    new["metadata"]["resourceVersion"] = (scale.get("metadata") or {}).get("resourceVersion")
    return _scale(server.store.update(new, target.namespace, target.name or "",
                                      dry_run=dry_run))


def _since(ts: dt.datetime, query: dict[str, str]) -> bool:
    if not query.get("sinceSeconds"):
        return True
    cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=int(query["sinceSeconds"]))
    return ts >= cutoff


def pod_log(server: KubeAPIServer, target: Target, query: dict[str, str]) -> str:
    pod = server.store.require(target.res, target.namespace, target.name or "")
    names = [c["name"] for c in pod["spec"].get("containers") or []]
    init = [c["name"] for c in pod["spec"].get("initContainers") or []]
    container = query.get("container")
    if not container:
        if len(names) != 1:
            raise errors.ApiError(400, f"a container name must be specified for pod "
                                  f"{target.name}, choose one of: [{' '.join(names)}]")
        container = names[0]
    if container not in names + init:
        raise errors.ApiError(400, f"container {container} is not valid for pod {target.name}")
    for st in (pod.get("status") or {}).get("containerStatuses") or []:
        waiting = (st.get("state") or {}).get("waiting") or {}
        if st["name"] == container and waiting.get("reason") in ("ContainerCreating",
                                                                 "PodInitializing"):
            raise errors.ApiError(400, f'container "{container}" in pod "{target.name}" is '
                                  f"waiting to start: {waiting['reason']}")
    previous = truthy(query.get("previous"))
    lines = server.logs_for(target.namespace or "", target.name or "", container, previous)
    restarts = sum(st.get("restartCount", 0) for st in
                   (pod.get("status") or {}).get("containerStatuses") or []
                   if st["name"] == container)
    if previous and not lines and not restarts:
        raise errors.ApiError(400, f'previous terminated container "{container}" in pod '
                              f'"{target.name}" not found')
    lines = [(ts, text) for ts, text in lines if _since(ts, query)]
    if query.get("tailLines"):
        tail = int(query["tailLines"])
        lines = lines[-tail:] if tail > 0 else []
    stamp = truthy(query.get("timestamps"))
    out = "".join(f"{ts.strftime('%Y-%m-%dT%H:%M:%S.%fZ') + ' ' if stamp else ''}{text}\n"
                  for ts, text in lines)
    if query.get("limitBytes"):
        out = out[: int(query["limitBytes"])]
    return out


def _delete_status(res: Resource, obj: dict[str, Any]) -> dict[str, Any]:
    details: dict[str, Any] = {"name": obj["metadata"]["name"], "kind": res.plural,
                               "uid": obj["metadata"]["uid"]}
    if res.group:
        details["group"] = res.group
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
            "details": details}


def _body_object(body: Any, res: Resource | None = None) -> dict[str, Any]:
    """Validate a POST/PUT body; like the apiserver, a missing kind/apiVersion defaults
    to the endpoint's (the python client omits them when models leave them unset)."""
    if not isinstance(body, dict):
        raise errors.ApiError(400, "the body of the request was in an unknown format - "
                              "accepted media types include: application/json, "
                              "application/yaml")
    if res is None:
        return body
    obj = copy.deepcopy(body)
    if obj.setdefault("kind", res.kind) != res.kind or obj.setdefault(
            "apiVersion", res.api_version) != res.api_version:
        raise errors.ApiError(400, f"the API version in the data ({obj.get('apiVersion')}) "
                              f"does not match the expected API version ({res.api_version})")
    return obj


def handle(server: KubeAPIServer, method: str, target: Target, query: dict[str, str],
           body: Any, content_type: str, warnings: list[str] | None = None) -> tuple[int, Any]:
    """Serve one non-watch resource request; `warnings` collects Warning header values."""
    store, res, ns, name = server.store, target.res, target.namespace, target.name
    warnings = [] if warnings is None else warnings

    def decoded(obj: dict[str, Any], verb: str) -> dict[str, Any]:
        warnings.extend(decode(obj, query.get("fieldValidation"), res.kind, res.api_version,
                               verb))
        return obj

    dry_run = query.get("dryRun") == "All"
    if res.namespaced and ns is None and method != "GET":
        raise errors.ApiError(405, "the server does not allow this method on the requested "
                              "resource", "MethodNotAllowed")
    if name is None:
        if method == "GET":
            return 200, list_objects(server, target, query)
        if method == "POST":
            obj = decoded(_body_object(body, res), "create")
            if (obj.get("metadata") or {}).get("resourceVersion"):
                # etcd3 storage refuses this before checking existence -> a 500
                raise errors.ApiError(500, "resourceVersion should not be set on objects to "
                                      "be created")
            if res.has_status:
                obj.pop("status", None)
            created = store.create(obj, ns, dry_run=dry_run)
            server.controller.changed(ns or "")
            return 201, created
        if method == "DELETE":
            items = select(server, target, query)
            for obj in items:
                store.delete(res, ns, obj["metadata"]["name"], dry_run=dry_run)
            server.controller.changed(ns or "")
            return 200, {"kind": f"{res.kind}List", "apiVersion": res.api_version,
                         "metadata": {"resourceVersion": str(store.rv)},
                         "items": [_strip(o) for o in items]}
        raise errors.ApiError(405, "method not allowed", "MethodNotAllowed")

    current = store.require(res, ns, name)
    if target.sub == "log":
        if method != "GET":
            raise errors.ApiError(405, "method not allowed", "MethodNotAllowed")
        return 200, pod_log(server, target, query)
    if target.sub == "scale":
        if method == "GET":
            return 200, _scale(current)
        if method == "PUT":
            result = _write_scale(server, target, current, _body_object(body), dry_run)
        elif method == "PATCH":
            try:
                patched = apply_patch(content_type, _scale(current), body)
            except PatchError as exc:
                raise errors.ApiError(exc.code, str(exc)) from exc
            result = _write_scale(server, target, current, patched, dry_run)
        else:
            raise errors.ApiError(405, "method not allowed", "MethodNotAllowed")
        server.controller.changed(ns or "")
        return 200, result
    if method == "GET":
        return 200, current
    if method == "DELETE":
        opts = body if isinstance(body, dict) else {}
        propagation = query.get("propagationPolicy") or opts.get("propagationPolicy")
        old = store.delete(res, ns, name, preconditions=opts.get("preconditions"),
                           dry_run=dry_run or opts.get("dryRun") == ["All"],
                           propagation=propagation or "Background")
        server.controller.changed(ns or "")
        return 200, (old if res.plural in ("pods", "services", "namespaces")
                     else _delete_status(res, old))
    if method == "PUT":
        obj = _body_object(body, res)
        if target.sub is None:
            decoded(obj, "update")
        result = store.update(obj, ns, name, subresource=target.sub, dry_run=dry_run)
    elif method == "PATCH":
        try:
            patched = apply_patch(content_type, copy.deepcopy(current), body)
        except PatchError as exc:
            raise errors.ApiError(exc.code, str(exc)) from exc
        if target.sub is None:
            decoded(patched, "patch")
        result = store.update(patched, ns, name, subresource=target.sub, dry_run=dry_run)
    else:
        raise errors.ApiError(405, "method not allowed", "MethodNotAllowed")
    server.controller.changed(ns or "")
    return 200, result

