"""Kubernetes actions: what on-call does by hand with kubectl, made declarable and guarded.

Each mutating action reproduces the object state its kubectl counterpart leaves behind (the
same patch, or one the apiserver stores identically), so runbooks and playbooks stay
interchangeable: `rollout restart`, `rollout status`, `rollout undo`, `scale`, `set env`,
`delete pods`, `logs | grep`, `get`. Where kubectl races (read, compute, write), the write
carries the resourceVersion it was computed from and a conflict is re-read once. The client,
error classification and shared declarations live in kube_client.py; kubectl's client-side
rollout and env logic in kube_rollout.py and kube_env.py; pod reads and deletes in
kube_pods.py.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import time
from dataclasses import dataclass
from typing import Any

from ..templating import validators
from .base import ActionContext, ActionError, Param, Permission, rbac
from .kube_client import (
    FIELD_MANAGER,
    JSON_PATCH,
    MERGE,
    NAME,
    NAMESPACE,
    PLURAL,
    STEM,
    WORKLOADS,
    KubeAction,
    call,
    named,
    patch_workload,
    read_workload,
    ref,
    reread_on_conflict,
    workload_kind,
)
from .kube_env import env_plan, env_value
from .kube_pods import DeletePods, Logs
from .kube_rollout import RESTARTED_AT, UndoRefused, rollout_state, undo_plan
from .kube_snapshot import evidence

__all__ = ["DeletePods", "Get", "Logs", "RolloutRestart", "RolloutStatus", "RolloutUndo", "Scale",
           "SetEnv"]


def _workload_rbac(*verbs: str) -> tuple[Permission, ...]:
    return tuple(p for kind in WORKLOADS for p in rbac("apps", PLURAL[kind], *verbs))


class RolloutRestart(KubeAction):
    name = "kubernetes.rollout_restart"
    summary = "Restart a workload's pods the way `kubectl rollout restart` does."
    mutating = True  # not idempotent: a repeat restarts the pods again
    params = {"kind": workload_kind(*WORKLOADS), "namespace": NAMESPACE, "name": NAME}
    permissions = _workload_rbac("get", "patch")

    def describe(self, params: dict[str, Any]) -> str:
        return (f"would restart {ref(params)}: set its pod template annotation "
                f"{RESTARTED_AT} to now (kubectl rollout restart)")

    async def run(self, params: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
        kind, ns, name = params["kind"], params["namespace"], params["name"]
        obj = await read_workload(ctx.backends, kind, ns, name)
        if kind == "deployment" and (obj.get("spec") or {}).get("paused"):
            raise ActionError(f"{ref(params)}: can't restart paused deployment "
                              "(run rollout resume first)", {"paused": True}, unapplied=True)
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")  # RFC 3339, like kubectl
        patch = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: now}}}}}
        patched = await patch_workload(ctx.backends, kind, ns, name, patch)
        return {"kind": kind, "namespace": ns, "name": name, "restarted_at": now,
                "generation": patched["metadata"].get("generation")}


class RolloutStatus(KubeAction):
    name = "kubernetes.rollout_status"
    summary = "Wait until a rollout completes, with kubectl's criteria; fail on a stuck one."
    params = {
        "kind": workload_kind(*WORKLOADS), "namespace": NAMESPACE, "name": NAME,
        "timeout": Param("duration", default=300.0, minimum=1),
        "interval": Param("duration", default=2.0, minimum=0.1, description="between polls"),
    }
    permissions = _workload_rbac("get")

    def describe(self, params: dict[str, Any]) -> str:
        return f"wait up to {params['timeout']:g}s for the rollout of {ref(params)} to complete"

    async def run(self, params: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
        kind, ns, name = params["kind"], params["namespace"], params["name"]
        deadline = time.monotonic() + params["timeout"]
        polls, last, result = 0, "", {}
        while True:
            polls += 1
            try:
                obj = await read_workload(ctx.backends, kind, ns, name)
            except ActionError as exc:
                if not self.is_transient(exc):
                    raise
                last = str(exc)  # a blip while waiting is not the rollout's failure
            else:
                state = rollout_state(kind, obj)
                last, result = state.message, {**state.counts, "message": state.message}
                if state.failed:
                    raise ActionError(f"{ref(params)}: {last}",
                                      {**result, "polls": polls, "done": False})
                if state.done:
                    return {**result, "polls": polls, "done": True}
            if time.monotonic() + params["interval"] > deadline:
                raise ActionError(f"rollout of {ref(params)} not complete after "
                                  f"{params['timeout']:g}s: {last}",
                                  {**result, "polls": polls, "done": False})
            await ctx.sleep(params["interval"])


class RolloutUndo(KubeAction):
    name = "kubernetes.rollout_undo"
    summary = "Roll a Deployment back to its previous (or a given) revision, like kubectl."
    mutating = True
    params = {"namespace": NAMESPACE, "name": NAME,
              "to_revision": Param("integer", minimum=1,
                                   description="default: the revision before the current one")}
    permissions = (*rbac("apps", "deployments", "get", "patch"),
                   *rbac("apps", "replicasets", "list"))

    def repeatable(self, params: dict[str, Any]) -> bool:
        # to a fixed revision a repeat finds the template restored and skips; "previous"
        # would flip back to the template just undone
        return bool(params.get("to_revision"))

    def describe(self, params: dict[str, Any]) -> str:
        to = f"revision {params['to_revision']}" if params.get("to_revision") else \
            "its previous revision"
        return (f"would roll back deployment {params['namespace']}/{params['name']} to {to}: "
                "restore that ReplicaSet's pod template (kubectl rollout undo)")

    async def run(self, params: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
        ns, name = params["namespace"], params["name"]

        async def attempt() -> dict[str, Any]:
            dep = await read_workload(ctx.backends, "deployment", ns, name)
            selector = _selector_string(dep["spec"].get("selector") or {})
            listed = await call(ctx.backends, f"list replicasets in {ns}", "apps",
                                "list_namespaced_replica_set", ns, label_selector=selector)
            try:
                plan = undo_plan(dep, listed["items"], params.get("to_revision"))
            except UndoRefused as exc:
                raise ActionError(f"deployment {ns}/{name}: {exc}", unapplied=True) from None
            result = {"namespace": ns, "name": name, "from_revision": plan.from_revision,
                      "to_revision": plan.to_revision, "changed": plan.patch is not None}
            if plan.patch is None:
                return {**result, "detail": "skipped rollback: current template already "
                        f"matches revision {plan.to_revision}"}
            await patch_workload(ctx.backends, "deployment", ns, name, plan.patch, JSON_PATCH)
            return result

        return await reread_on_conflict(attempt)


def _selector_string(selector: dict[str, Any]) -> str:
    """A LabelSelector object as the query string kubectl sends (`app=x,tier in (a,b)`)."""
    terms = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], ",".join(expr.get("values") or [])
        terms.append({"In": f"{key} in ({values})", "NotIn": f"{key} notin ({values})",
                      "Exists": key, "DoesNotExist": f"!{key}"}[op])
    return ",".join(terms)


class Scale(KubeAction):
    name = "kubernetes.scale"
    summary = "Set or change a workload's replicas through the scale subresource, within bounds."
    mutating = True
    params = {
        "kind": workload_kind("deployment", "statefulset"), "namespace": NAMESPACE, "name": NAME,
        "replicas": Param("integer", minimum=0, description="absolute count (or use delta)"),
        "delta": Param("integer", description="relative change, e.g. 2 or -1 (or use replicas)"),
        "min": Param("integer", required=True, minimum=0, description="never scale below"),
        "max": Param("integer", required=True, minimum=0, description="never scale above"),
    }
    ordered = (("min", "max"),)
    permissions = tuple(p for kind in ("deployment", "statefulset")
                        for p in rbac("apps", f"{PLURAL[kind]}/scale", "get", "patch"))

    def repeatable(self, params: dict[str, Any]) -> bool:
        return params.get("replicas") is not None  # a repeated delta would add up

    def check(self, params: dict[str, Any]) -> list[str]:
        problems = []
        if (params.get("replicas") is None) == (params.get("delta") is None):
            problems.append("give exactly one of replicas (absolute) or delta (relative)")
        if params.get("delta") == 0:
            problems.append("delta 0 changes nothing")
        return problems

    def describe(self, params: dict[str, Any]) -> str:
        if params.get("replicas") is not None:
            change = f"to {params['replicas']} replicas"
        else:
            change = f"by {params['delta']:+d} replicas"
        return f"would scale {ref(params)} {change} (kept within {params['min']}..{params['max']})"

    async def run(self, params: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
        kind, ns, name = params["kind"], params["namespace"], params["name"]
        stem, what = STEM[kind], f"{kind} {ns}/{name}"

        async def attempt() -> dict[str, Any]:
            scale = await call(ctx.backends, f"get {what} scale", "apps",
                               f"read_namespaced_{stem}_scale", name, ns)
            current = scale["spec"].get("replicas", 0)
            applied, requested, reason = _scale_plan(current, params)
            result = {"kind": kind, "namespace": ns, "name": name, "previous": current,
                      "requested": requested, "applied": applied, "clamped": applied != requested,
                      "changed": applied != current}
            if reason:
                result["reason"] = reason
            if result["changed"]:
                body = {"metadata": {"resourceVersion": scale["metadata"]["resourceVersion"]},
                        "spec": {"replicas": applied}}
                await call(ctx.backends, f"scale {what}", "apps", f"patch_namespaced_{stem}_scale",
                           name, ns, body, _content_type=MERGE, field_manager=FIELD_MANAGER)
            return result

        return await reread_on_conflict(attempt)


def _scale_plan(current: int, params: dict[str, Any]) -> tuple[int, int, str]:
    """(replicas to set, replicas asked for, why they differ). An absolute count is clamped
    into min..max. A delta only ever moves the way it points, and never past a bound: from
    outside the bounds, or already at the bound it points to, it changes nothing."""
    low, high = params["min"], params["max"]
    if params.get("replicas") is not None:
        requested = params["replicas"]
        applied = min(max(requested, low), high)
        return applied, requested, "" if applied == requested else f"kept within {low}..{high}"
    delta = params["delta"]
    requested = current + delta
    if delta > 0 and current >= high:
        return current, requested, f"not scaled up: {current} replicas, at or above max {high}"
    if delta < 0 and current <= low:
        return current, requested, f"not scaled down: {current} replicas, at or below min {low}"
    applied = min(requested, high) if delta > 0 else max(requested, low)
    return applied, requested, "" if applied == requested else f"kept within {low}..{high}"


class SetEnv(KubeAction):
    name = "kubernetes.set_env"
    summary = "Set or unset env vars in a workload's containers, like `kubectl set env`."
    mutating = True
    idempotent = True
    params = {
        "kind": workload_kind(*WORKLOADS), "namespace": NAMESPACE, "name": NAME,
        "container": Param("string", kind="container", description="default: every container"),
        "env": Param("mapping", description="NAME: value to set"),
        "unset": Param("list", kind="env_name", description="names to remove"),
    }
    permissions = _workload_rbac("get", "patch")

    def check(self, params: dict[str, Any]) -> list[str]:
        env, unset = params.get("env") or {}, params.get("unset") or []
        problems = [] if env or unset else ["give env (to set) and/or unset (to remove)"]
        for key, value in env.items():
            try:
                validators.validate("env_name", key)
                env_value(value)
            except (ValueError, TypeError) as exc:
                problems.append(f"env {key!r}: {exc}")
        both = sorted(set(env) & set(unset))
        if both:
            problems.append(f"both set and unset: {', '.join(both)}")
        return problems

    def describe(self, params: dict[str, Any]) -> str:
        env, unset = params.get("env") or {}, params.get("unset") or []
        changes = []
        if env:
            changes.append("set env " + ", ".join(f"{k}={env_value(v)}" for k, v in env.items()))
        if unset:
            changes.append("unset env " + ", ".join(unset))
        where = f"container {params['container']}" if params.get("container") \
            else "all containers"
        return f"would patch {ref(params)}: {' and '.join(changes)} in {where}"

    async def run(self, params: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
        kind, ns, name = params["kind"], params["namespace"], params["name"]
        env = {k: env_value(v) for k, v in (params.get("env") or {}).items()}

        async def attempt() -> dict[str, Any]:
            obj = await read_workload(ctx.backends, kind, ns, name)
            try:
                plan = env_plan(obj["spec"]["template"]["spec"], params.get("container"), env,
                                params.get("unset") or [])
            except LookupError as exc:
                raise ActionError(f"{ref(params)}: {exc}", unapplied=True) from None
            result = {"previous": plan.previous, "changed": plan.patch is not None,
                      "containers": plan.changed}
            if plan.patch is not None:
                # `previous` is true only of this read: its resourceVersion rides along
                plan.patch["metadata"] = {"resourceVersion": obj["metadata"]["resourceVersion"]}
                patched = await patch_workload(ctx.backends, kind, ns, name, plan.patch)
                result["generation"] = patched["metadata"].get("generation")
            return result

        return await reread_on_conflict(attempt)


# --- kubernetes.get --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Readable:
    """A kind `kubernetes.get` may read: its client API, method stem and RBAC group."""

    api: str  # kube_client API key
    stem: str  # method-name stem: read_namespaced_<stem>, list_namespaced_<stem>
    group: str  # RBAC API group
    namespaced: bool = True
    aliases: tuple[str, ...] = ()


# What may be snapshotted as evidence. Secrets are not here, on purpose: a snapshot lands in the
# audit store, escalation notes and chat.
READABLE: dict[str, _Readable] = {
    "deployments": _Readable("apps", "deployment", "apps", aliases=("deployment", "deploy")),
    "statefulsets": _Readable("apps", "stateful_set", "apps", aliases=("statefulset", "sts")),
    "daemonsets": _Readable("apps", "daemon_set", "apps", aliases=("daemonset", "ds")),
    "replicasets": _Readable("apps", "replica_set", "apps", aliases=("replicaset", "rs")),
    "pods": _Readable("core", "pod", "", aliases=("pod", "po")),
    # IRSA evidence (the role-arn annotation); a ServiceAccount names its token Secrets at most
    "serviceaccounts": _Readable("core", "service_account", "", aliases=("serviceaccount", "sa")),
    "services": _Readable("core", "service", "", aliases=("service", "svc")),
    "configmaps": _Readable("core", "config_map", "", aliases=("configmap", "cm")),
    "events": _Readable("core", "event", "", aliases=("event", "ev")),
    "namespaces": _Readable("core", "namespace", "", namespaced=False,
                            aliases=("namespace", "ns")),
    "horizontalpodautoscalers": _Readable("autoscaling", "horizontal_pod_autoscaler",
                                          "autoscaling", aliases=("horizontalpodautoscaler", "hpa")),
}
_ALIASES = {alias: plural for plural, r in READABLE.items() for alias in (plural, *r.aliases)}
_FIELD_SELECTOR = re.compile(r"[A-Za-z0-9.]+ *(==?|!=) *[-A-Za-z0-9_.:/]*"  # fullmatch
                             r"(,[A-Za-z0-9.]+ *(==?|!=) *[-A-Za-z0-9_.:/]*)*")


class Get(KubeAction):
    name = "kubernetes.get"
    summary = ("Snapshot objects as evidence (never Secrets); managedFields stripped, "
               "credentials in env, args, annotations and ConfigMaps withheld.")
    params = {
        "resource": Param("string", required=True,
                          description=f"one of {', '.join(READABLE)} (or a short name)"),
        "namespace": Param("string", kind="namespace", description="all but namespaces"),
        "name": Param("string", kind="k8s_name", description="one object (else a list)"),
        "selector": Param("string", kind="label_selector"),
        "field_selector": Param("string", description="e.g. involvedObject.name=code-forge"),
        "limit": Param("integer", default=20, minimum=1, description="objects in a list"),
    }
    permissions = tuple(p for plural, r in READABLE.items()
                        for p in rbac(r.group, plural, "get", "list"))

    def permissions_for(self, params: dict[str, Any]) -> tuple[Permission, ...]:
        plural = _ALIASES.get(str(params.get("resource", "")).lower())
        if plural is None:  # templated: whatever it may name
            return self.permissions
        return named(rbac(READABLE[plural].group, plural, "get", "list"), params, {plural})

    def check(self, params: dict[str, Any]) -> list[str]:
        resource = params["resource"].lower()
        if resource in ("secrets", "secret"):
            return ["kubernetes.get never reads secrets: a snapshot lands in the audit store "
                    "and escalation notes"]
        if resource not in _ALIASES:
            return [f"unknown resource {params['resource']!r}, use one of {', '.join(READABLE)}"]
        plural, problems = _ALIASES[resource], []
        if READABLE[plural].namespaced and not params.get("namespace"):
            problems.append(f"namespace is required for {plural}")
        if not READABLE[plural].namespaced and params.get("namespace"):
            problems.append(f"{plural} are cluster-scoped: drop namespace")
        if params.get("name") and (params.get("selector") or params.get("field_selector")):
            problems.append("give name or selectors, not both")
        if params.get("field_selector") and not _FIELD_SELECTOR.fullmatch(params["field_selector"]):
            problems.append(f"invalid field selector {params['field_selector']!r}")
        return problems

    def describe(self, params: dict[str, Any]) -> str:
        plural = _ALIASES.get(params["resource"].lower(), params["resource"])
        where = f" in {params['namespace']}" if params.get("namespace") else ""
        if params.get("name"):
            return f"read {plural} {params['name']}{where}"
        filters = [s for s in (params.get("selector"), params.get("field_selector")) if s]
        matching = f" matching {', '.join(filters)}" if filters else ""
        return f"list {plural}{where}{matching} (at most {params['limit']})"

    async def run(self, params: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
        plural = _ALIASES.get(params["resource"].lower())
        if plural is None:  # check() already refused it; never even ask for secrets
            raise ActionError(f"kubernetes.get refuses to read {params['resource']!r}")
        spec = READABLE[plural]
        scope, where = ("", []), plural
        if spec.namespaced:
            scope, where = ("namespaced_", [params["namespace"]]), f"{plural} in {params['namespace']}"
        if params.get("name"):
            obj = await call(ctx.backends, f"get {where} {params['name']}", spec.api,
                             f"read_{scope[0]}{spec.stem}", params["name"], *scope[1])
            # the filter reads every string: off the event loop, as exec output's is
            return {"resource": plural, "object": await asyncio.to_thread(evidence, obj, plural)}
        filters = {k: params[p] for k, p in (("label_selector", "selector"),
                                             ("field_selector", "field_selector")) if params.get(p)}
        listed = await call(ctx.backends, f"list {where}", spec.api,
                            f"list_{scope[0]}{spec.stem}", *scope[1], limit=params["limit"],
                            **filters)
        items = await asyncio.to_thread(lambda: [evidence(o, plural) for o in listed["items"]])
        return {"resource": plural, "items": items, "count": len(items),
                "truncated": bool(listed["metadata"].get("continue"))}
