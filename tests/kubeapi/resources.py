"""Resource registry and discovery documents for the test API server.

kubectl resolves every command through discovery (group/version -> resource,
kind, verbs, subresources), so the documents here must look like a real
apiserver's. The scale client in particular finds the ``autoscaling/v1``
``Scale`` kind through the ``deployments/scale`` subresource entry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SERVER_VERSION = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.4",
    "gitCommit": "59526cd4867447956156ae3a602fcbac10a2c335",
    "gitTreeState": "clean",
    "buildDate": "2025-04-22T16:02:27Z",
    "goVersion": "go1.23.6",
    "compiler": "gc",
    "platform": "linux/amd64",
}

_RW = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


@dataclass(frozen=True)
class Resource:
    """One REST resource (e.g. ``deployments`` in ``apps/v1``)."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    short_names: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    categories: tuple[str, ...] = ("all",)
    # Field selectors the real apiserver accepts besides metadata.name/namespace.
    field_labels: tuple[str, ...] = ()
    verbs: tuple[str, ...] = field(default=tuple(_RW))

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def qualified(self) -> str:
        """Name used in Status messages, e.g. ``deployments.apps``."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources


_POD_FIELDS = (
    "spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName",
    "spec.hostNetwork", "status.phase", "status.podIP", "status.nominatedNodeName",
)
_EVENT_FIELDS = (
    "involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
    "involvedObject.uid", "involvedObject.apiVersion", "involvedObject.resourceVersion",
    "involvedObject.fieldPath", "reason", "reportingComponent", "source", "type",
)

RESOURCES: tuple[Resource, ...] = (
    Resource("", "v1", "pods", "Pod", short_names=("po",), subresources=("log", "status", "exec"),
             field_labels=_POD_FIELDS),
    Resource("", "v1", "namespaces", "Namespace", namespaced=False, short_names=("ns",),
             subresources=("status",), categories=(), field_labels=("status.phase",),
             verbs=("create", "delete", "get", "list", "patch", "update", "watch")),
    Resource("", "v1", "events", "Event", short_names=("ev",), categories=(),
             field_labels=_EVENT_FIELDS),
    Resource("", "v1", "serviceaccounts", "ServiceAccount", short_names=("sa",), categories=()),
    Resource("", "v1", "configmaps", "ConfigMap", short_names=("cm",), categories=()),
    Resource("", "v1", "services", "Service", short_names=("svc",), subresources=("status",)),
    Resource("apps", "v1", "deployments", "Deployment", short_names=("deploy",),
             subresources=("scale", "status")),
    Resource("apps", "v1", "statefulsets", "StatefulSet", short_names=("sts",),
             subresources=("scale", "status")),
    Resource("apps", "v1", "daemonsets", "DaemonSet", short_names=("ds",),
             subresources=("status",)),
    Resource("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler",
             short_names=("hpa",), subresources=("status",)),
    Resource("apps", "v1", "replicasets", "ReplicaSet", short_names=("rs",),
             subresources=("scale", "status"), field_labels=("status.replicas",)),
)

BY_PLURAL: dict[str, Resource] = {r.plural: r for r in RESOURCES}
BY_KIND: dict[str, Resource] = {r.kind: r for r in RESOURCES}


def lookup(group: str, version: str, plural: str) -> Resource | None:
    """Find a resource by its URL coordinates."""
    res = BY_PLURAL.get(plural)
    if res and res.group == group and res.version == version:
        return res
    return None


def group_versions() -> dict[str, list[str]]:
    """Map of API group name -> served versions (the core group is ``""``)."""
    out: dict[str, list[str]] = {}
    for r in RESOURCES:
        versions = out.setdefault(r.group, [])
        if r.version not in versions:
            versions.append(r.version)
    return out


def _api_resource(r: Resource) -> list[dict[str, Any]]:
    main: dict[str, Any] = {
        "name": r.plural, "singularName": r.singular, "namespaced": r.namespaced,
        "kind": r.kind, "verbs": list(r.verbs),
    }
    if r.short_names:
        main["shortNames"] = list(r.short_names)
    if r.categories:
        main["categories"] = list(r.categories)
    subs = []
    for sub in r.subresources:
        entry: dict[str, Any] = {"name": f"{r.plural}/{sub}", "singularName": "",
                                 "namespaced": r.namespaced, "kind": r.kind,
                                 "verbs": ["get", "patch", "update"]}
        if sub == "scale":
            entry.update(group="autoscaling", version="v1", kind="Scale")
        elif sub == "log":
            entry["verbs"] = ["get"]
        elif sub == "exec":
            entry.update(kind="PodExecOptions", verbs=["create", "get"])
        subs.append(entry)
    return [main, *subs]


def resource_list(group: str, version: str) -> dict[str, Any] | None:
    """The legacy ``APIResourceList`` served at /api/v1 and /apis/<group>/<version>."""
    items = [r for r in RESOURCES if r.group == group and r.version == version]
    if not items:
        return None
    return {
        "kind": "APIResourceList", "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": [entry for r in items for entry in _api_resource(r)],
    }


def api_group(name: str) -> dict[str, Any] | None:
    versions = group_versions().get(name)
    if not name or versions is None:
        return None
    gvs = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"kind": "APIGroup", "apiVersion": "v1", "name": name, "versions": gvs,
            "preferredVersion": gvs[0]}


def api_group_list() -> dict[str, Any]:
    groups = [api_group(g) for g in group_versions() if g]
    return {"kind": "APIGroupList", "apiVersion": "v1",
            "groups": [{k: v for k, v in g.items() if k not in ("kind", "apiVersion")}
                       for g in groups if g]}


def api_versions(server_address: str) -> dict[str, Any]:
    return {"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0",
                                            "serverAddress": server_address}]}


def openapi_v3_paths() -> dict[str, Any]:
    """`/openapi/v3`: where each group-version's document is (kubectl reads it to learn that
    the server validates fields itself, then sends `fieldValidation=Strict`)."""
    paths = {}
    for r in RESOURCES:
        gv = f"apis/{r.group}/{r.version}" if r.group else f"api/{r.version}"
        paths[gv] = {"serverRelativeURL": f"/openapi/v3/{gv}?hash=kubeapi-test"}
    return {"paths": paths}


def openapi_v3(gv: str) -> dict[str, Any] | None:
    """A group-version's OpenAPI v3 document, reduced to what kubectl's field-validation
    check reads: each kind's PATCH operation, its GVK and its `fieldValidation` parameter."""
    found = [r for r in RESOURCES
             if (f"apis/{r.group}/{r.version}" if r.group else f"api/{r.version}") == gv]
    if not found:
        return None
    paths = {}
    for r in found:
        ns = "/namespaces/{namespace}" if r.namespaced else ""
        paths[f"/{gv}{ns}/{r.plural}/{{name}}"] = {"patch": {
            "x-kubernetes-group-version-kind": {"group": r.group, "version": r.version,
                                                "kind": r.kind},
            "parameters": [{"name": "fieldValidation", "in": "query",
                            "schema": {"type": "string", "uniqueItems": True}}],
            "responses": {"200": {"description": "OK"}}}}
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.32.4"},
            "paths": paths, "components": {}}
