"""Pod construction and status shapes, as kubelet would report them.

Workload status (readyReplicas, availableReplicas...) is derived from these
pod statuses, so a test that marks a pod as crash-looping gets the same
deployment status a real cluster would show.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

from .store import now

NODE = "kubeapi-node-1"


def _normalize(value: Any) -> Any:
    """Drop nulls and empty lists: Go's typed encoding (kubectl rollout undo sends the
    template through it) omits them, and the hash must not change because of that."""
    if isinstance(value, dict):
        out = {k: _normalize(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v is not None and v != []}
    if isinstance(value, list):
        return [_normalize(v) for v in value]
    return value


def template_hash(template: dict[str, Any], n: int = 10) -> str:
    """Stable short hash of a pod template, in the k8s ``SafeEncodeString`` alphabet."""
    tmpl = _normalize(copy.deepcopy(template))
    labels = (tmpl.get("metadata") or {}).get("labels") or {}
    labels.pop("pod-template-hash", None)
    labels.pop("controller-revision-hash", None)
    digest = hashlib.sha256(json.dumps(tmpl, sort_keys=True).encode()).digest()
    alphabet = "bcdfghjklmnpqrstvwxz2456789"
    return "".join(alphabet[b % len(alphabet)] for b in digest[:n])


def pod_status(spec: dict[str, Any], *, ready: bool = True, restarts: int = 0,
               waiting_reason: str | None = None, phase: str | None = None,
               pod_ip: str = "10.244.0.10") -> dict[str, Any]:
    """A kubelet-style PodStatus.

    ``waiting_reason`` (e.g. ``"CrashLoopBackOff"``, ``"ImagePullBackOff"``) puts every
    container in a waiting state and makes the pod unready.
    """
    ts = now()
    ready = ready and waiting_reason is None
    containers = []
    for i, c in enumerate(spec.get("containers") or []):
        if ready:
            state: dict[str, Any] = {"running": {"startedAt": ts}}
        elif waiting_reason:
            state = {"waiting": {"reason": waiting_reason,
                                 "message": f"back-off restarting failed container {c['name']}"
                                 if waiting_reason == "CrashLoopBackOff" else waiting_reason}}
        else:
            state = {"waiting": {"reason": "ContainerCreating"}}
        status: dict[str, Any] = {
            "name": c["name"], "image": c.get("image", ""),
            "imageID": f"{c.get('image', '')}@sha256:{'0' * 63}{i}",
            "ready": ready, "started": ready, "restartCount": restarts, "state": state,
        }
        if ready or restarts:
            status["containerID"] = f"containerd://{hashlib.sha1(c['name'].encode()).hexdigest()}"
        if restarts:
            status["lastState"] = {"terminated": {"exitCode": 1, "reason": "Error",
                                                  "startedAt": ts, "finishedAt": ts}}
        containers.append(status)
    flag = "True" if ready else "False"
    started = ready or restarts > 0 or waiting_reason is not None
    conditions = [
        {"type": "PodReadyToStartContainers", "status": "True" if started else "False"},
        {"type": "Initialized", "status": "True"},
        {"type": "Ready", "status": flag},
        {"type": "ContainersReady", "status": flag},
        {"type": "PodScheduled", "status": "True"},
    ]
    for cond in conditions:
        cond["lastProbeTime"] = None
        cond["lastTransitionTime"] = ts
        if cond["status"] == "False" and cond["type"] in ("Ready", "ContainersReady"):
            cond["reason"] = "ContainersNotReady"
    return {
        "phase": phase or ("Running" if started else "Pending"),
        "conditions": conditions, "hostIP": "10.0.0.1", "hostIPs": [{"ip": "10.0.0.1"}],
        "podIP": pod_ip, "podIPs": [{"ip": pod_ip}], "startTime": ts,
        "containerStatuses": containers, "qosClass": "BestEffort",
    }


def is_ready(pod: dict[str, Any]) -> bool:
    conds = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)


def owner_ref(owner: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": owner["apiVersion"], "kind": owner["kind"],
            "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"],
            "controller": True, "blockOwnerDeletion": True}


def controlled_by(obj: dict[str, Any], owner: dict[str, Any]) -> bool:
    return any(r.get("controller") and r.get("uid") == owner["metadata"]["uid"]
               for r in obj["metadata"].get("ownerReferences") or [])


def new_pod(owner: dict[str, Any], name: str, template: dict[str, Any], *,
            ready: bool, ip_index: int) -> dict[str, Any]:
    """A pod stamped out of ``template`` for ``owner`` (not yet stored)."""
    tmeta = template.get("metadata") or {}
    spec = copy.deepcopy(template.get("spec") or {})
    spec.setdefault("nodeName", NODE)
    spec.setdefault("serviceAccountName", spec.get("serviceAccountName", "default"))
    meta: dict[str, Any] = {"name": name, "namespace": owner["metadata"]["namespace"],
                            "labels": copy.deepcopy(tmeta.get("labels") or {}),
                            "ownerReferences": [owner_ref(owner)]}
    if tmeta.get("annotations"):
        meta["annotations"] = copy.deepcopy(tmeta["annotations"])
    if owner["kind"] == "ReplicaSet":
        meta["generateName"] = owner["metadata"]["name"] + "-"
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec,
            "status": pod_status(spec, ready=ready,
                                 pod_ip=f"10.244.{ip_index // 250}.{ip_index % 250 + 2}")}
