"""Server-side defaulting and validation for the kinds the remediator touches.

A real apiserver defaults fields on every write (strategy, imagePullPolicy,
updateStrategy...) and kubectl relies on some of them -- ``rollout status``
on a StatefulSet refuses to run unless ``spec.updateStrategy.type`` is
``RollingUpdate``. Validation covers the mistakes a remediation playbook can
actually make (negative replicas, empty env names, duplicate containers) so
those produce the same 422 Invalid a cluster would.
"""

from __future__ import annotations

import re
from typing import Any

from .selectors import selector_from_object

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"}


def _default_container(c: dict[str, Any]) -> None:
    image = c.get("image") or ""
    tag = image.rsplit("/", 1)[-1]
    latest = "@" not in tag and (":" not in tag or tag.endswith(":latest"))
    c.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
    c.setdefault("terminationMessagePath", "/dev/termination-log")
    c.setdefault("terminationMessagePolicy", "File")
    c.setdefault("resources", {})
    for port in c.get("ports") or []:
        port.setdefault("protocol", "TCP")


def default_pod_spec(spec: dict[str, Any]) -> None:
    """Fill the PodSpec defaults the apiserver adds (idempotent)."""
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        _default_container(c)


def apply_defaults(obj: dict[str, Any]) -> None:
    """Mutate ``obj`` in place with apiserver defaults for its kind."""
    kind = obj.get("kind")
    spec = obj.get("spec")
    if kind in _WORKLOADS and isinstance(spec, dict):
        if kind != "DaemonSet":
            spec.setdefault("replicas", 1)
        if kind != "ReplicaSet":
            spec.setdefault("revisionHistoryLimit", 10)
        tmpl = spec.get("template")
        if isinstance(tmpl, dict):
            # Go's ObjectMeta always serializes a zero creationTimestamp as null
            tmpl.setdefault("metadata", {}).setdefault("creationTimestamp", None)
        if isinstance(tmpl, dict) and isinstance(tmpl.get("spec"), dict):
            default_pod_spec(tmpl["spec"])
    if kind == "Deployment" and isinstance(spec, dict):
        spec.setdefault("strategy", {"type": "RollingUpdate", "rollingUpdate": {
            "maxUnavailable": "25%", "maxSurge": "25%"}})
        spec.setdefault("progressDeadlineSeconds", 600)
    elif kind == "StatefulSet" and isinstance(spec, dict):
        spec.setdefault("podManagementPolicy", "OrderedReady")
        spec.setdefault("updateStrategy", {"type": "RollingUpdate",
                                           "rollingUpdate": {"partition": 0}})
        spec.setdefault("persistentVolumeClaimRetentionPolicy",
                        {"whenDeleted": "Retain", "whenScaled": "Retain"})
    elif kind == "DaemonSet" and isinstance(spec, dict):
        spec.setdefault("updateStrategy", {"type": "RollingUpdate", "rollingUpdate": {
            "maxUnavailable": 1, "maxSurge": 0}})
    elif kind == "Pod" and isinstance(spec, dict):
        default_pod_spec(spec)
        obj.setdefault("status", {"phase": "Pending", "qosClass": "BestEffort"})
    elif kind == "Namespace":
        obj.setdefault("spec", {"finalizers": ["kubernetes"]})
        obj.setdefault("status", {"phase": "Active"})
        labels = obj["metadata"].setdefault("labels", {})
        labels["kubernetes.io/metadata.name"] = obj["metadata"]["name"]
    elif kind == "Service" and isinstance(spec, dict):
        spec.setdefault("type", "ClusterIP")
        for port in spec.get("ports") or []:
            port.setdefault("protocol", "TCP")
            port.setdefault("targetPort", port.get("port"))


def _validate_containers(prefix: str, containers: Any) -> list[tuple[str, str]]:
    if not containers:
        return [(f"{prefix}.containers", "Required value")]
    errors: list[tuple[str, str]] = []
    seen: set[str] = set()
    for i, c in enumerate(containers):
        path = f"{prefix}.containers[{i}]"
        name = c.get("name") or ""
        if not name:
            errors.append((f"{path}.name", "Required value"))
        elif not _DNS_LABEL.match(name):
            errors.append((f"{path}.name", f'Invalid value: "{name}": a lowercase RFC 1123 '
                                            "label must consist of lower case alphanumeric "
                                            "characters or '-'"))
        elif name in seen:
            errors.append((f"{path}.name", f'Duplicate value: "{name}"'))
        seen.add(name)
        if not c.get("image"):
            errors.append((f"{path}.image", "Required value"))
        for j, env in enumerate(c.get("env") or []):
            env_name = env.get("name") or ""
            if not _ENV_NAME.match(env_name):
                errors.append((f"{path}.env[{j}].name", f'Invalid value: "{env_name}": a valid '
                                                          "environment variable name must "
                                                          "consist of alphabetic characters, "
                                                          "digits, '_', '-', or '.'"))
    return errors


def validate(obj: dict[str, Any]) -> list[tuple[str, str]]:
    """Return ``(field, message)`` causes; empty when the object is valid."""
    errors: list[tuple[str, str]] = []
    meta = obj.get("metadata") or {}
    name = meta.get("name") or ""
    if not name:
        errors.append(("metadata.name", "Required value: name or generateName is required"))
    elif len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
        errors.append(("metadata.name", f'Invalid value: "{name}": a lowercase RFC 1123 '
                                        "subdomain must consist of lower case alphanumeric "
                                        "characters, '-' or '.'"))
    kind, spec = obj.get("kind"), obj.get("spec") or {}
    if kind in _WORKLOADS:
        replicas = spec.get("replicas", 1)
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            errors.append(("spec.replicas", f"Invalid value: {replicas}: must be greater "
                                            "than or equal to 0"))
        selector = spec.get("selector") or {}
        labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        if not (selector.get("matchLabels") or selector.get("matchExpressions")):
            errors.append(("spec.selector", "Required value"))
        elif not selector_from_object(selector)(labels):
            errors.append(("spec.template.metadata.labels", "Invalid value: "
                           f"{labels!r}: `selector` does not match template `labels`"))
        tspec = (spec.get("template") or {}).get("spec") or {}
        errors += _validate_containers("spec.template.spec", tspec.get("containers"))
    elif kind == "Pod":
        errors += _validate_containers("spec", spec.get("containers"))
    return errors
