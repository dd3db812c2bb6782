"""Server-side printing (``meta.k8s.io/v1`` Table) for ``kubectl get`` without ``-o``.

kubectl asks for a Table and falls back to NAME/AGE when it gets a plain list;
the columns below make human output look like a real cluster's for the kinds
people eyeball while debugging a remediation (pods, workloads).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

_NAME = {"name": "Name", "type": "string", "format": "name", "priority": 0,
         "description": "Name must be unique within a namespace."}
_AGE = {"name": "Age", "type": "string", "format": "", "priority": 0,
        "description": "CreationTimestamp is a timestamp representing the server time "
                       "when this object was created."}


def _col(name: str, kind: str = "string") -> dict[str, Any]:
    return {"name": name, "type": kind, "format": "", "priority": 0, "description": name}


def _pod_cells(pod: dict[str, Any]) -> list[Any]:
    status = pod.get("status") or {}
    statuses = status.get("containerStatuses") or []
    ready = sum(1 for c in statuses if c.get("ready"))
    total = len((pod.get("spec") or {}).get("containers") or [])
    reason = status.get("phase", "Unknown")
    for c in statuses:
        waiting = (c.get("state") or {}).get("waiting")
        if waiting and waiting.get("reason"):
            reason = waiting["reason"]
    restarts = sum(c.get("restartCount", 0) for c in statuses)
    return [f"{ready}/{total}", reason, restarts]


def _deployment_cells(obj: dict[str, Any]) -> list[Any]:
    status = obj.get("status") or {}
    return [f"{status.get('readyReplicas', 0)}/{obj['spec'].get('replicas', 1)}",
            status.get("updatedReplicas", 0), status.get("availableReplicas", 0)]


def _statefulset_cells(obj: dict[str, Any]) -> list[Any]:
    status = obj.get("status") or {}
    return [f"{status.get('readyReplicas', 0)}/{obj['spec'].get('replicas', 1)}"]


def _replicaset_cells(obj: dict[str, Any]) -> list[Any]:
    status = obj.get("status") or {}
    return [obj["spec"].get("replicas", 1), status.get("replicas", 0),
            status.get("readyReplicas", 0)]


_COLUMNS: dict[str, tuple[list[dict[str, Any]], Callable[[dict[str, Any]], list[Any]]]] = {
    "pods": ([_col("Ready"), _col("Status"), _col("Restarts", "string")], _pod_cells),
    "deployments": ([_col("Ready"), _col("Up-to-date", "integer"),
                     _col("Available", "integer")], _deployment_cells),
    "statefulsets": ([_col("Ready")], _statefulset_cells),
    "replicasets": ([_col("Desired", "integer"), _col("Current", "integer"),
                     _col("Ready", "integer")], _replicaset_cells),
}


def _age(timestamp: str | None) -> str:
    """``duration.HumanDuration`` as the apiserver prints the AGE column."""
    if not timestamp:
        return "<unknown>"
    created = dt.datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    secs = max(0, int((dt.datetime.now(dt.UTC) - created).total_seconds()))
    mins, hours, days = secs // 60, secs // 3600, secs // 86400
    if secs < 120:
        return f"{secs}s"
    if mins < 10:
        return f"{mins}m{secs % 60}s" if secs % 60 else f"{mins}m"
    if hours < 3:
        return f"{mins}m"
    if hours < 8:
        return f"{hours}h{mins % 60}m" if mins % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    return f"{days}d"


def wants_table(accept: str) -> bool:
    return "as=Table" in accept


def to_table(plural: str, objects: list[dict[str, Any]], resource_version: str) -> dict:
    """Render objects (full dicts, with or without kind/apiVersion) as a Table."""
    extra, cells = _COLUMNS.get(plural, ([], lambda _o: []))
    rows = []
    for obj in objects:
        meta = obj["metadata"]
        rows.append({"cells": [meta["name"], *cells(obj), _age(meta.get("creationTimestamp"))],
                     "object": {"kind": "PartialObjectMetadata",
                                "apiVersion": "meta.k8s.io/v1", "metadata": meta}})
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1",
            "metadata": {"resourceVersion": resource_version},
            "columnDefinitions": [_NAME, *extra, _AGE], "rows": rows}
