"""In-memory object storage with apiserver write semantics.

Owns everything etcd + the generic registry do for a real cluster:
resourceVersion (one global counter, like etcd's revision), uid,
creationTimestamp, generation bumps on spec changes, optimistic concurrency
(409 on a stale resourceVersion), status-subresource isolation, no-op update
elision, cascading deletion via ownerReferences, and a watch event log.

All methods take the store lock so tests (main thread) and the server (its
own event-loop thread) can both mutate it.
"""

from __future__ import annotations

import copy
import datetime as dt
import random
import threading
import uuid
from dataclasses import dataclass
from typing import Any

from . import errors
from .resources import BY_KIND, BY_PLURAL, Resource
from .schema import apply_defaults, validate

Key = tuple[str, str, str]  # (plural, namespace or "", name)
_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # k8s rand.String alphabet
_GENERATION_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"}


def _go_selector(selector: Any) -> str:
    """How the apiserver prints a LabelSelector in a 422 (Go's %#v)."""
    selector = selector if isinstance(selector, dict) else {}
    labels = ", ".join(f'"{k}":"{v}"' for k, v in (selector.get("matchLabels") or {}).items())
    return (f"v1.LabelSelector{{MatchLabels:map[string]string{{{labels}}}, "
            "MatchExpressions:[]v1.LabelSelectorRequirement(nil)}")


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class WatchEvent:
    rv: int
    plural: str
    namespace: str
    type: str  # ADDED / MODIFIED / DELETED
    obj: dict[str, Any]


class Store:
    """Objects keyed by (plural, namespace, name); see module docstring."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.objects: dict[Key, dict[str, Any]] = {}
            self.rv = 100
            self.events: list[WatchEvent] = []
            self.compacted = self.rv  # watches from an older resourceVersion get 410 Gone
            self.rand = random.Random(1234)  # deterministic generated names per test

    # ------------------------------------------------------------------ helpers

    def suffix(self, n: int = 5) -> str:
        with self.lock:
            return "".join(self.rand.choice(_SUFFIX_ALPHABET) for _ in range(n))

    def _record(self, res: Resource, etype: str, obj: dict[str, Any]) -> None:
        ns = obj["metadata"].get("namespace", "")
        self.events.append(WatchEvent(self.rv, res.plural, ns, etype, copy.deepcopy(obj)))
        if len(self.events) > 20000:
            self.compacted = self.events[4999].rv
            del self.events[:5000]

    def _bump(self, obj: dict[str, Any]) -> None:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)

    @staticmethod
    def resource_for(obj: dict[str, Any]) -> Resource:
        res = BY_KIND.get(obj.get("kind", ""))
        if res is None:
            raise errors.ApiError(400, f"no kind {obj.get('kind')!r} is registered")
        return res

    # ------------------------------------------------------------------ reads

    def get(self, plural: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        """The stored object (not a copy -- callers holding the lock may mutate it)."""
        with self.lock:
            return self.objects.get((plural, namespace or "", name))

    def list(self, plural: str, namespace: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            return [o for (p, ns, _), o in sorted(self.objects.items(), key=lambda kv: kv[0])
                    if p == plural and (namespace is None or ns == namespace)]

    def require(self, res: Resource, namespace: str | None, name: str) -> dict[str, Any]:
        obj = self.get(res.plural, namespace, name)
        if obj is None:
            raise errors.not_found(res, name)
        return obj

    # ------------------------------------------------------------------ writes

    def _check(self, res: Resource, obj: dict[str, Any]) -> None:
        apply_defaults(obj)
        causes = validate(obj)
        if causes:
            raise errors.invalid(res, obj["kind"], obj["metadata"].get("name", ""), causes)

    def create(self, obj: dict[str, Any], namespace: str | None = None, *,
               dry_run: bool = False, require_namespace: bool = True) -> dict[str, Any]:
        """POST semantics; returns the stored object (a live reference)."""
        with self.lock:
            obj = copy.deepcopy(obj)
            res = self.resource_for(obj)
            obj["apiVersion"] = res.api_version
            meta = obj.setdefault("metadata", {})
            if res.namespaced:
                ns = namespace or meta.get("namespace") or "default"
                if meta.get("namespace") and meta["namespace"] != ns:
                    raise errors.ApiError(400, "the namespace of the provided object does not "
                                          "match the namespace sent on the request")
                meta["namespace"] = ns
                if require_namespace and self.get("namespaces", None, ns) is None:
                    raise errors.not_found(BY_PLURAL["namespaces"], ns)
            else:
                meta.pop("namespace", None)
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + self.suffix()
            self._check(res, obj)
            key = (res.plural, meta.get("namespace", ""), meta["name"])
            if key in self.objects:
                raise errors.already_exists(res, meta["name"])
            meta["uid"] = str(uuid.UUID(int=self.rand.getrandbits(128), version=4))
            meta["creationTimestamp"] = now()
            for stale in ("deletionTimestamp", "selfLink", "managedFields", "resourceVersion"):
                meta.pop(stale, None)
            if obj["kind"] in _GENERATION_KINDS:
                meta["generation"] = 1
            if dry_run:
                return obj
            self._bump(obj)
            self.objects[key] = obj
            self._record(res, "ADDED", obj)
            return obj

    def update(self, obj: dict[str, Any], namespace: str | None, name: str, *,
               subresource: str | None = None, dry_run: bool = False,
               check_rv: bool = True) -> dict[str, Any]:
        """PUT semantics (also the tail of PATCH); returns the stored object."""
        with self.lock:
            res = self.resource_for(obj)
            old = self.require(res, namespace, name)
            new = copy.deepcopy(obj)
            meta = new.setdefault("metadata", {})
            if meta.get("name", name) != name:
                raise errors.ApiError(400, f"the name of the object ({meta['name']}) does not "
                                      f"match the name on the URL ({name})")
            rv = meta.get("resourceVersion")
            if check_rv and rv and rv != old["metadata"]["resourceVersion"]:
                raise errors.conflict(res, name)
            new["apiVersion"], new["kind"] = old["apiVersion"], old["kind"]
            for keep in ("name", "namespace", "uid", "creationTimestamp", "generation",
                         "resourceVersion", "deletionTimestamp"):
                if keep in old["metadata"]:
                    meta[keep] = old["metadata"][keep]
                else:
                    meta.pop(keep, None)
            if subresource == "status":
                new = {**copy.deepcopy(old), "status": new.get("status", {})}
            elif res.has_status:
                if "status" in old:
                    new["status"] = copy.deepcopy(old["status"])
                else:
                    new.pop("status", None)
            self._check(res, new)
            if (res.group == "apps" and subresource is None
                    and (new.get("spec") or {}).get("selector")
                    != (old.get("spec") or {}).get("selector")):
                raise errors.invalid(res, old["kind"], name, [(
                    "spec.selector", f"Invalid value: {_go_selector(new['spec'].get('selector'))}"
                    ": field is immutable")])
            if new == old:
                return old  # the apiserver elides no-op writes: no new resourceVersion
            if "generation" in meta and new.get("spec") != old.get("spec"):
                new["metadata"]["generation"] = old["metadata"]["generation"] + 1
            if dry_run:
                return new
            self._bump(new)
            self.objects[(res.plural, old["metadata"].get("namespace", ""), name)] = new
            self._record(res, "MODIFIED", new)
            return new

    def delete(self, res: Resource, namespace: str | None, name: str, *,
               preconditions: dict[str, Any] | None = None, dry_run: bool = False,
               propagation: str = "Background") -> dict[str, Any]:
        """DELETE semantics; dependents are garbage-collected unless orphaned."""
        with self.lock:
            old = self.require(res, namespace, name)
            pre = preconditions or {}
            if pre.get("uid") and pre["uid"] != old["metadata"]["uid"]:
                raise errors.ApiError(409, f"Precondition failed: UID in precondition: "
                                      f"{pre['uid']}, UID in object meta: "
                                      f"{old['metadata']['uid']}", "Conflict")
            rv = pre.get("resourceVersion")
            if rv and rv != old["metadata"]["resourceVersion"]:
                raise errors.conflict(res, name)
            if dry_run:
                return old
            del self.objects[(res.plural, namespace or "", name)]
            self._bump(old)
            self._record(res, "DELETED", old)
            uid = old["metadata"]["uid"]
            for (plural, ns, dep_name), dep in list(self.objects.items()):
                owned = [r for r in dep["metadata"].get("ownerReferences") or []
                         if r.get("uid") == uid]
                if not owned or (plural, ns, dep_name) not in self.objects:
                    continue
                if propagation == "Orphan":
                    dep["metadata"]["ownerReferences"] = [
                        r for r in dep["metadata"]["ownerReferences"] if r.get("uid") != uid]
                    self._bump(dep)
                    self._record(BY_PLURAL[plural], "MODIFIED", dep)
                else:
                    self.delete(BY_PLURAL[plural], ns, dep_name)
            if res.plural == "namespaces":
                for (plural, ns, dep_name) in list(self.objects):
                    if ns == name and (plural, ns, dep_name) in self.objects:
                        self.delete(BY_PLURAL[plural], ns, dep_name)
            return old

    def touch(self, obj: dict[str, Any]) -> None:
        """Record an in-place mutation made by the controller simulation."""
        with self.lock:
            self._bump(obj)
            self._record(self.resource_for(obj), "MODIFIED", obj)
