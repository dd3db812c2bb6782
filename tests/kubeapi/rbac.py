"""RBAC authorization as the apiserver's RBAC authorizer applies it, from Role/ClusterRole
and (Cluster)RoleBinding documents (deploy/kubernetes/rbac/*.yaml by default).

Only the non-admin identity is checked; the admin token (kubectl in tests) is system:masters.
Discovery (/api, /apis, /version) is open to every authenticated user, as in a cluster.
"""

from __future__ import annotations

import functools
import importlib.util
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

ADMIN = "kubernetes-admin"  # the admin token's user, in system:masters: RBAC does not apply
SHIPPED = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes" / "rbac"


def shipped_documents() -> list[dict[str, Any]]:
    """What the deploy grants the remediator's service account."""
    docs = []
    for path in sorted(SHIPPED.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def _subject(subject: dict[str, Any]) -> str:
    if subject.get("kind") == "ServiceAccount":
        return f"system:serviceaccount:{subject.get('namespace')}:{subject.get('name')}"
    return str(subject.get("name"))


def _matches(rule: dict[str, Any], verb: str, group: str, resource: str, name: str | None) -> bool:
    def has(key: str, value: str) -> bool:
        values = rule.get(key) or []
        return "*" in values or value in values

    names = rule.get("resourceNames") or []
    # A rule naming objects never covers list/watch/create of the collection.
    return (has("apiGroups", group) and has("resources", resource) and has("verbs", verb)
            and (not names or (name is not None and name in names)))


class Policy:
    def __init__(self, documents: Iterable[dict[str, Any]]) -> None:
        self.documents = list(documents)

    def rules_for(self, user: str, namespace: str | None) -> list[dict[str, Any]]:
        # Roles granted one after another under the same name add up (see `grant`).
        roles: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
        for d in self.documents:
            if d.get("kind") in ("Role", "ClusterRole"):
                ns = d["metadata"].get("namespace") if d["kind"] == "Role" else None
                roles[(d["kind"], ns, d["metadata"]["name"])] += d.get("rules") or []
        rules: list[dict[str, Any]] = []
        for d in self.documents:
            kind = d.get("kind")
            if kind not in ("RoleBinding", "ClusterRoleBinding"):
                continue
            if user not in {_subject(s) for s in d.get("subjects") or []}:
                continue
            bound_ns = d["metadata"].get("namespace") if kind == "RoleBinding" else None
            if kind == "RoleBinding" and bound_ns != namespace:
                continue
            ref = d["roleRef"]
            role_ns = bound_ns if ref["kind"] == "Role" else None
            rules += roles.get((ref["kind"], role_ns, ref["name"]), [])
        return rules

    def allows(self, user: str, verb: str, group: str, resource: str, namespace: str | None,
               name: str | None) -> bool:
        """`resource` is `plural` or `plural/subresource`."""
        return any(_matches(r, verb, group, resource, name)
                   for r in self.rules_for(user, namespace))


@functools.cache
def generator() -> ModuleType:
    """deploy/kubernetes/generate.py (a script, not a package module): what builds the
    shipped RBAC also builds the grants of a test's own steps."""
    spec = importlib.util.spec_from_file_location("deploy_generate", SHIPPED.parent / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def step_documents(action: str, params: dict[str, Any], namespace: str) -> list[dict[str, Any]]:
    """The Role(s) and binding(s) deploy/kubernetes/generate.py would emit for one step."""
    gen = generator()
    return [doc for ns, perms in gen.step_grants(action, params, namespace, []).items()
            for doc in gen.rbac_documents(ns, perms)]
