"""A tiny simulation of kube-controller-manager for workloads.

Without it, ``kubectl rollout status`` would wait forever and ``rollout undo``
would find no history. It implements just enough of the real controllers:

* Deployment -> one ReplicaSet per distinct pod template (``pod-template-hash``
  label, ``deployment.kubernetes.io/revision`` annotation, controller ownerRef),
  old ReplicaSets scaled to 0, returning to an old template re-uses its RS with a
  new revision number -- exactly what ``rollout undo`` relies on.
* ReplicaSet / StatefulSet / DaemonSet -> pods, recreated when deleted.
* Status for all of them derived from pod readiness.

``delay`` defers reconciliation after API writes (so clients observe
``observedGeneration < generation`` for a while); ``hold()`` makes new pods of
a workload never become ready, optionally with ProgressDeadlineExceeded.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from .pods import controlled_by, is_ready, new_pod, owner_ref, pod_status, template_hash
from .resources import BY_PLURAL
from .store import Store, now

REVISION = "deployment.kubernetes.io/revision"
Schedule = Callable[[Callable[[], None], float], None]


def _revision(obj: dict[str, Any]) -> int:
    try:
        return int((obj["metadata"].get("annotations") or {}).get(REVISION, "0"))
    except ValueError:
        return 0


def _compact(status: dict[str, Any], keep: tuple[str, ...] = ()) -> dict[str, Any]:
    """Drop zero-valued counters like the Go ``omitempty`` tags do."""
    return {k: v for k, v in status.items() if v not in (0, None) or k in keep}


class Controller:
    """Reconciles workloads in a namespace; see the module docstring."""

    def __init__(self, store: Store, schedule: Schedule) -> None:
        self.store = store
        self.schedule = schedule
        self.reset()

    def reset(self) -> None:
        self.delay = 0.0
        self.nodes = 1  # DaemonSet pods per DaemonSet
        self.held: dict[tuple[str, str, str], bool] = {}
        self._unready: set[str] = set()  # uids of pods this controller keeps unready

    # ------------------------------------------------------------------ public

    def hold(self, plural: str, namespace: str, name: str, *, fail: bool = False) -> None:
        """Keep new pods of this workload unready; ``fail`` also marks the deployment
        ``ProgressDeadlineExceeded`` so ``kubectl rollout status`` errors out."""
        self.held[(plural, namespace, name)] = fail
        self.reconcile(namespace)

    def release(self, plural: str, namespace: str, name: str) -> None:
        self.held.pop((plural, namespace, name), None)
        self.reconcile(namespace)

    def forget(self, pod_uid: str) -> None:
        """Stop managing a pod's readiness (a test set its state explicitly)."""
        self._unready.discard(pod_uid)

    def changed(self, namespace: str) -> None:
        """Called after an API write: reconcile now or after ``delay`` seconds."""
        if self.delay > 0:
            self.schedule(lambda: self.reconcile(namespace), self.delay)
        else:
            self.reconcile(namespace)

    def reconcile(self, namespace: str) -> None:
        with self.store.lock:
            if not namespace:
                return
            for dep in self.store.list("deployments", namespace):
                self._deployment(dep)
            for rs in self.store.list("replicasets", namespace):
                self._replicaset(rs)
            for sts in self.store.list("statefulsets", namespace):
                self._ordered(sts)
            for ds in self.store.list("daemonsets", namespace):
                self._daemonset(ds)

    # ------------------------------------------------------------------ helpers

    def _set(self, obj: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
        """Set a nested field and bump resourceVersion only if it changed."""
        cur = obj
        for part in path[:-1]:
            cur = cur.setdefault(part, {})
        if cur.get(path[-1]) != value:
            cur[path[-1]] = copy.deepcopy(value)
            self.store.touch(obj)

    def _pods(self, owner: dict[str, Any]) -> list[dict[str, Any]]:
        return [p for p in self.store.list("pods", owner["metadata"]["namespace"])
                if controlled_by(p, owner)]

    def _is_held(self, obj: dict[str, Any]) -> bool:
        plural = BY_PLURAL_BY_KIND[obj["kind"]]
        return (plural, obj["metadata"]["namespace"], obj["metadata"]["name"]) in self.held

    def _make_pod(self, owner: dict[str, Any], name: str, template: dict[str, Any],
                  ready: bool) -> None:
        pod = new_pod(owner, name, template, ready=ready,
                      ip_index=len(self.store.list("pods")))
        stored = self.store.create(pod, require_namespace=False)
        if not ready:
            self._unready.add(stored["metadata"]["uid"])

    def _make_ready(self, pods: list[dict[str, Any]]) -> None:
        for pod in pods:
            if pod["metadata"]["uid"] in self._unready:
                self._unready.discard(pod["metadata"]["uid"])
                self._set(pod, ("status",), pod_status(pod["spec"],
                                                       pod_ip=pod["status"].get("podIP", "")))

    def _conditions(self, obj: dict[str, Any], wanted: list[dict[str, Any]]) -> list[dict]:
        """Keep transition times stable for conditions whose status/reason didn't change."""
        old = {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}
        ts = now()
        out = []
        for cond in wanted:
            prev = old.get(cond["type"])
            same = prev and (prev["status"], prev.get("reason")) == (cond["status"],
                                                                     cond["reason"])
            out.append(prev if same else {**cond, "lastUpdateTime": ts, "lastTransitionTime": ts})
        return out

    # ------------------------------------------------------------------ deployments

    def _deployment(self, dep: dict[str, Any]) -> None:
        ns, spec = dep["metadata"]["namespace"], dep["spec"]
        template = copy.deepcopy(spec["template"])
        h = template_hash(template)
        owned = [rs for rs in self.store.list("replicasets", ns) if controlled_by(rs, dep)]
        latest = max((_revision(rs) for rs in owned), default=0)
        new_rs = next((rs for rs in owned
                       if rs["metadata"].get("labels", {}).get("pod-template-hash") == h), None)
        if new_rs is None:
            template.setdefault("metadata", {}).setdefault("labels", {})["pod-template-hash"] = h
            selector = copy.deepcopy(spec["selector"])
            selector.setdefault("matchLabels", {})["pod-template-hash"] = h
            annotations = {k: v for k, v in (dep["metadata"].get("annotations") or {}).items()
                           if not k.startswith("deployment.kubernetes.io/")
                           and k != "kubectl.kubernetes.io/last-applied-configuration"}
            annotations.update({REVISION: str(latest + 1),
                                "deployment.kubernetes.io/desired-replicas": str(spec["replicas"]),
                                "deployment.kubernetes.io/max-replicas": str(spec["replicas"])})
            new_rs = self.store.create({
                "apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": {"name": f"{dep['metadata']['name']}-{h}", "namespace": ns,
                             "labels": template["metadata"]["labels"],
                             "annotations": annotations,
                             "ownerReferences": [owner_ref(dep)]},
                "spec": {"replicas": 0, "selector": selector, "template": template},
            }, require_namespace=False)
            owned.append(new_rs)
        elif _revision(new_rs) < latest:
            self._set(new_rs, ("metadata", "annotations", REVISION), str(latest + 1))
        self._set(dep, ("metadata", "annotations", REVISION), str(_revision(new_rs)))
        held = self._is_held(dep)
        for rs in owned:
            # old pods keep serving while a held rollout is stuck
            old_want = rs["spec"]["replicas"] if held else 0
            want = spec["replicas"] if rs is new_rs else old_want
            self._set(rs, ("spec", "replicas"), want)
            self._replicaset(rs)
        self._prune_history(dep, owned, new_rs)
        self._deployment_status(dep, owned, new_rs)

    def _prune_history(self, dep: dict, owned: list[dict], new_rs: dict) -> None:
        limit = dep["spec"].get("revisionHistoryLimit", 10)
        old = sorted((rs for rs in owned if rs is not new_rs and not rs["spec"]["replicas"]),
                     key=_revision)
        for rs in old[: max(0, len(old) - limit)]:
            self.store.delete(BY_PLURAL["replicasets"], rs["metadata"]["namespace"],
                              rs["metadata"]["name"])

    def _deployment_status(self, dep: dict, owned: list[dict], new_rs: dict) -> None:
        pods = [p for rs in owned for p in self._pods(rs)]
        new_pods = self._pods(new_rs)
        ready = sum(is_ready(p) for p in pods)
        replicas = dep["spec"]["replicas"]
        failed = self.held.get(("deployments", dep["metadata"]["namespace"],
                                dep["metadata"]["name"]), False)
        complete = (len(pods) == len(new_pods) == replicas
                    and all(is_ready(p) for p in new_pods))
        rs_name = new_rs["metadata"]["name"]
        available = ready >= replicas
        if failed:
            progressing = {"type": "Progressing", "status": "False",
                           "reason": "ProgressDeadlineExceeded",
                           "message": f'ReplicaSet "{rs_name}" has timed out progressing.'}
        elif complete:
            progressing = {"type": "Progressing", "status": "True",
                           "reason": "NewReplicaSetAvailable",
                           "message": f'ReplicaSet "{rs_name}" has successfully progressed.'}
        else:
            progressing = {"type": "Progressing", "status": "True",
                           "reason": "ReplicaSetUpdated",
                           "message": f'ReplicaSet "{rs_name}" is progressing.'}
        conditions = self._conditions(dep, [
            {"type": "Available", "status": "True" if available else "False",
             "reason": "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
             "message": "Deployment has minimum availability." if available
             else "Deployment does not have minimum availability."},
            progressing])
        status = _compact({
            "observedGeneration": dep["metadata"]["generation"], "replicas": len(pods),
            "updatedReplicas": len(new_pods), "readyReplicas": ready,
            "availableReplicas": ready, "unavailableReplicas": max(0, replicas - ready),
        })
        status["conditions"] = conditions
        self._set(dep, ("status",), status)

    # ------------------------------------------------------------------ replica sets

    def _replicaset(self, rs: dict[str, Any]) -> None:
        pods = self._pods(rs)
        want = rs["spec"].get("replicas", 1)
        owner = next((r for r in rs["metadata"].get("ownerReferences") or []
                      if r.get("controller")), None)
        held = bool(owner) and ("deployments", rs["metadata"]["namespace"],
                                owner["name"]) in self.held
        for pod in pods[want:]:
            self.store.delete(BY_PLURAL["pods"], pod["metadata"]["namespace"],
                              pod["metadata"]["name"])
        for _ in range(want - len(pods)):
            name = f"{rs['metadata']['name']}-{self.store.suffix()}"
            self._make_pod(rs, name, rs["spec"]["template"], ready=not held)
        if not held:
            self._make_ready(self._pods(rs))
        pods = self._pods(rs)
        ready = sum(is_ready(p) for p in pods)
        status = _compact({"replicas": len(pods), "fullyLabeledReplicas": len(pods),
                           "readyReplicas": ready, "availableReplicas": ready,
                           "observedGeneration": rs["metadata"]["generation"]},
                          keep=("replicas",))
        self._set(rs, ("status",), status)

    # ------------------------------------------------------------------ sts / ds

    def _roll(self, owner: dict, pods: list[dict], revision: str, label: str) -> list[dict]:
        """Recreate pods whose revision label is stale (unless the workload is held)."""
        if self._is_held(owner):
            return pods
        out = []
        for pod in pods:
            if pod["metadata"].get("labels", {}).get(label) != revision:
                ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
                self.store.delete(BY_PLURAL["pods"], ns, name)
                self._make_pod(owner, name, self._template(owner, revision, label, name),
                               ready=True)
                pod = self.store.get("pods", ns, name)
            out.append(pod)
        self._make_ready(out)
        return out

    @staticmethod
    def _template(owner: dict, revision: str, label: str, pod_name: str) -> dict:
        template = copy.deepcopy(owner["spec"]["template"])
        labels = template.setdefault("metadata", {}).setdefault("labels", {})
        labels[label] = revision
        if owner["kind"] == "StatefulSet":
            labels["statefulset.kubernetes.io/pod-name"] = pod_name
        return template

    def _ordered(self, sts: dict[str, Any]) -> None:
        name, ns = sts["metadata"]["name"], sts["metadata"]["namespace"]
        revision = f"{name}-{template_hash(sts['spec']['template'])}"
        want = sts["spec"].get("replicas", 1)
        pods = {p["metadata"]["name"]: p for p in self._pods(sts)}
        for pod_name, _ in list(pods.items()):
            if int(pod_name.rsplit("-", 1)[1]) >= want:
                self.store.delete(BY_PLURAL["pods"], ns, pod_name)
                del pods[pod_name]
        for i in range(want):
            pod_name = f"{name}-{i}"
            if pod_name not in pods:
                self._make_pod(sts, pod_name, self._template(sts, revision,
                               "controller-revision-hash", pod_name),
                               ready=not self._is_held(sts))
        pods_list = self._roll(sts, self._pods(sts), revision, "controller-revision-hash")
        updated = [p for p in pods_list
                   if p["metadata"]["labels"].get("controller-revision-hash") == revision]
        current = (sts.get("status") or {}).get("currentRevision") or revision
        if len(updated) == len(pods_list) == want:
            current = revision
        ready = sum(is_ready(p) for p in pods_list)
        status = _compact({
            "observedGeneration": sts["metadata"]["generation"], "replicas": len(pods_list),
            "readyReplicas": ready, "currentReplicas": len(pods_list) - len(updated)
            if current != revision else len(updated),
            "updatedReplicas": len(updated), "availableReplicas": ready,
            "currentRevision": current, "updateRevision": revision, "collisionCount": 0,
        }, keep=("replicas", "collisionCount"))
        self._set(sts, ("status",), status)

    def _daemonset(self, ds: dict[str, Any]) -> None:
        revision = template_hash(ds["spec"]["template"])
        pods = self._pods(ds)
        for pod in pods[self.nodes:]:
            self.store.delete(BY_PLURAL["pods"], pod["metadata"]["namespace"],
                              pod["metadata"]["name"])
        for _ in range(self.nodes - len(pods)):
            pod_name = f"{ds['metadata']['name']}-{self.store.suffix()}"
            self._make_pod(ds, pod_name, self._template(ds, revision,
                           "controller-revision-hash", pod_name), ready=not self._is_held(ds))
        pods = self._roll(ds, self._pods(ds), revision, "controller-revision-hash")
        updated = sum(p["metadata"]["labels"].get("controller-revision-hash") == revision
                      for p in pods)
        ready = sum(is_ready(p) for p in pods)
        status = {"currentNumberScheduled": len(pods), "numberMisscheduled": 0,
                  "desiredNumberScheduled": self.nodes, "numberReady": ready,
                  "observedGeneration": ds["metadata"]["generation"],
                  **_compact({"updatedNumberScheduled": updated, "numberAvailable": ready,
                              "numberUnavailable": self.nodes - ready})}
        self._set(ds, ("status",), status)


BY_PLURAL_BY_KIND = {r.kind: r.plural for r in BY_PLURAL.values()}
