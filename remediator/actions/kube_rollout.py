"""Rollout logic kubectl keeps client-side, redone here so remediator reaches the same verdicts.

`rollout_state` is kubectl's status viewers (kubectl/pkg/polymorphichelpers/rollout_status.go):
when a Deployment, StatefulSet or DaemonSet counts as rolled out. `undo_plan` is kubectl's
DeploymentRollbacker (rollback.go): which ReplicaSet holds the previous revision and the JSON
patch that restores its template. Pure functions over API objects (dicts), no I/O.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
REVISION = "deployment.kubernetes.io/revision"
HASH_LABEL = "pod-template-hash"
# Deployment annotations a rollback keeps from the deployment, never copies from the RS.
_SKIP_ANNOTATIONS = frozenset({
    "kubectl.kubernetes.io/last-applied-configuration", REVISION,
    "deployment.kubernetes.io/revision-history", "deployment.kubernetes.io/desired-replicas",
    "deployment.kubernetes.io/max-replicas", "deprecated.deployment.rollback.to",
})


@dataclass(frozen=True)
class RolloutState:
    """A rollout's progress, as `kubectl rollout status` reports it."""

    done: bool
    message: str
    counts: dict[str, int]
    failed: bool = False  # waiting cannot help: progress deadline exceeded, OnDelete strategy


def rollout_state(kind: str, obj: dict[str, Any]) -> RolloutState:
    """kubectl's verdict on one observation of the object."""
    meta, spec, status = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
    name, generation = meta["name"], meta.get("generation", 0)
    observed = status.get("observedGeneration", 0)
    if kind == "daemonset":
        counts = {"desired": status.get("desiredNumberScheduled", 0),
                  "current": status.get("currentNumberScheduled", 0),
                  "updated": status.get("updatedNumberScheduled", 0),
                  "ready": status.get("numberReady", 0),
                  "available": status.get("numberAvailable", 0)}
    else:
        counts = {"desired": spec.get("replicas", 1), "current": status.get("replicas", 0),
                  "updated": status.get("updatedReplicas", 0),
                  "ready": status.get("readyReplicas", 0),
                  "available": status.get("availableReplicas", 0)}
    counts.update(generation=generation, observed_generation=observed)

    def state(done: bool, message: str, failed: bool = False) -> RolloutState:
        return RolloutState(done, message, counts, failed)

    if kind == "deployment":
        return _deployment(name, generation, observed, status, counts, state)
    strategy = (spec.get("updateStrategy") or {}).get("type") or "RollingUpdate"
    if strategy != "RollingUpdate":
        return state(False, "rollout status is only available for RollingUpdate strategy type",
                     failed=True)
    if kind == "daemonset":
        if generation > observed:
            return state(False, "Waiting for daemon set spec update to be observed...")
        if counts["updated"] < counts["desired"]:
            return state(False, f'Waiting for daemon set "{name}" rollout to finish: '
                         f"{counts['updated']} out of {counts['desired']} new pods have been "
                         "updated...")
        if counts["available"] < counts["desired"]:
            return state(False, f'Waiting for daemon set "{name}" rollout to finish: '
                         f"{counts['available']} of {counts['desired']} updated pods are "
                         "available...")
        return state(True, f'daemon set "{name}" successfully rolled out')
    # statefulset
    if observed == 0 or generation > observed:
        return state(False, "Waiting for statefulset spec update to be observed...")
    if counts["ready"] < counts["desired"]:
        return state(False, f"Waiting for {counts['desired'] - counts['ready']} pods to be "
                     "ready...")
    partition = ((spec.get("updateStrategy") or {}).get("rollingUpdate") or {}).get("partition")
    if partition:
        if counts["updated"] < counts["desired"] - partition:
            return state(False, "Waiting for partitioned roll out to finish: "
                         f"{counts['updated']} out of {counts['desired'] - partition} new pods "
                         "have been updated...")
        return state(True, f"partitioned roll out complete: {counts['updated']} new pods have "
                     "been updated...")
    if status.get("updateRevision") != status.get("currentRevision"):
        return state(False, f"waiting for statefulset rolling update to complete "
                     f"{counts['updated']} pods at revision {status.get('updateRevision')}...")
    return state(True, f"statefulset rolling update complete {counts['current']} pods at "
                 f"revision {status.get('currentRevision')}...")


def _deployment(name: str, generation: int, observed: int, status: dict[str, Any],
                counts: dict[str, int], state: Any) -> RolloutState:
    if generation > observed:
        return state(False, "Waiting for deployment spec update to be observed...")
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            return state(False, f'deployment "{name}" exceeded its progress deadline', True)
    if counts["updated"] < counts["desired"]:
        return state(False, f'Waiting for deployment "{name}" rollout to finish: '
                     f"{counts['updated']} out of {counts['desired']} new replicas have been "
                     "updated...")
    if counts["current"] > counts["updated"]:
        return state(False, f'Waiting for deployment "{name}" rollout to finish: '
                     f"{counts['current'] - counts['updated']} old replicas are pending "
                     "termination...")
    if counts["available"] < counts["updated"]:
        return state(False, f'Waiting for deployment "{name}" rollout to finish: '
                     f"{counts['available']} of {counts['updated']} updated replicas are "
                     "available...")
    return state(True, f'deployment "{name}" successfully rolled out')


# --- rollout undo ------------------------------------------------------------------------------


class UndoRefused(Exception):
    """kubectl would refuse this rollback too (paused, no history, unknown revision)."""


@dataclass(frozen=True)
class UndoPlan:
    """The revision a rollback leaves and the one it returns to, with its patch."""

    from_revision: int
    to_revision: int
    patch: list[dict[str, Any]] | None  # None: the template already matches (kubectl skips)


def revision(obj: dict[str, Any]) -> int:
    try:
        return int((obj["metadata"].get("annotations") or {}).get(REVISION, "0"))
    except ValueError:
        return 0


def _has_revision(obj: dict[str, Any]) -> bool:
    return str((obj["metadata"].get("annotations") or {}).get(REVISION, "")).isdigit()


def owned_by(obj: dict[str, Any], owner: dict[str, Any]) -> bool:
    uid = owner["metadata"]["uid"]
    return any(r.get("uid") == uid and r.get("controller")
               for r in obj["metadata"].get("ownerReferences") or [])


def undo_plan(deployment: dict[str, Any], replicasets: list[dict[str, Any]],
              to_revision: int | None = None) -> UndoPlan:
    """What `kubectl rollout undo [--to-revision=N]` sends, plus a resourceVersion
    precondition so a rollout that lands in between makes the PATCH conflict (409) rather
    than be silently undone to a template computed from stale history."""
    name = deployment["metadata"]["name"]
    if (deployment.get("spec") or {}).get("paused"):
        raise UndoRefused(f"you cannot rollback a paused deployment; resume it first with "
                          f"kubectl rollout resume deployment/{name} and try again")
    # A ReplicaSet without a (numeric) revision annotation is no revision at all: kubectl
    # leaves it out of the history rather than calling it revision 0.
    history = {revision(rs): rs for rs in replicasets
               if owned_by(rs, deployment) and _has_revision(rs)}
    if to_revision:
        if to_revision not in history:
            raise UndoRefused(f"unable to find specified revision {to_revision} in history")
        target = to_revision
    else:
        if len(history) < 2:
            raise UndoRefused(f"no rollout history found for deployment {name!r}")
        target = sorted(history)[-2]
    template = copy.deepcopy(history[target]["spec"]["template"])
    current = revision(deployment)
    if _without_hash(template) == _without_hash(deployment["spec"]["template"]):
        return UndoPlan(current, target, None)
    (template.get("metadata") or {}).get("labels", {}).pop(HASH_LABEL, None)
    annotations = {k: v for k, v in (deployment["metadata"].get("annotations") or {}).items()
                   if k in _SKIP_ANNOTATIONS}
    annotations.update({k: v for k, v in
                        (history[target]["metadata"].get("annotations") or {}).items()
                        if k not in _SKIP_ANNOTATIONS})
    patch = [
        {"op": "replace", "path": "/metadata/resourceVersion",
         "value": deployment["metadata"]["resourceVersion"]},
        {"op": "replace", "path": "/spec/template", "value": template},
        # `add` replaces an existing member too, and also works when there is none yet
        {"op": "add", "path": "/metadata/annotations", "value": annotations},
    ]
    return UndoPlan(current, target, patch)


def _without_hash(template: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(template)
    labels = (out.get("metadata") or {}).get("labels")
    if labels:
        labels.pop(HASH_LABEL, None)
    return out
