"""What a playbook template can read: one builder for step parameters, `when`, targets and
escalation notes, and the attributes lint knows (docs/templates.md documents them; a test
checks the three agree).

`labels`, `annotations`, `group.*Labels`/`group.commonAnnotations` and a step's `result` are
open maps (whatever the alert or the action carries); everything else has fixed attributes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .. import templating
from ..alerts import Group
from . import memo as template_memo

ALERT_FIELDS = ("fingerprint", "status", "startsAt", "endsAt", "generatorURL")
GROUP_FIELDS = tuple(Group().to_dict())
# A group's fields and their defaults, made once (a Group made per context was half its cost).
_GROUP_DEFAULTS = tuple(Group().to_dict().items())
PLAYBOOK_FIELDS = ("name", "runbook")
STEP_FIELDS = ("outcome", "result", "detail")


class Target(str):
    """`{{ target }}` renders `namespace/kind/name` (`kind/name` without a namespace), as it
    always has; `target.kind`, `target.namespace` ("" without one) and `target.name` are its
    parts. A str, so it stays immutable, compares, filters and is stored as before; its parts
    are read from the string (no state besides it). No part can hold a '/': each is validated
    (DNS-1123, bucket name) before a Target is made."""

    __slots__ = ()

    @property
    def kind(self) -> str:
        return self.split("/")[-2]

    @property
    def namespace(self) -> str:
        parts = self.split("/")
        return parts[0] if len(parts) == 3 else ""

    @property
    def name(self) -> str:
        return self.split("/")[-1]


template_memo.FROZEN[Target] = str  # its parts are read from its text


def make_target(kind: str, namespace: str, name: str) -> Target:
    """The target of validated parts (no template can reach a constructor)."""
    return Target(f"{namespace}/{kind}/{name}" if namespace else f"{kind}/{name}")


TARGET_FIELDS = tuple(n for n, v in vars(Target).items() if isinstance(v, property))
# The attributes of each root with a fixed shape (lint refuses any other); `steps.<name>` too.
FIELDS: dict[str, tuple[str, ...]] = {"alert": ALERT_FIELDS, "group": GROUP_FIELDS,
                                      "playbook": PLAYBOOK_FIELDS, "target": TARGET_FIELDS,
                                      "steps.<step>": STEP_FIELDS}


def methods(value: Any) -> frozenset[str]:
    """Methods a template may also call on a value of this type (`alert.get('x')`,
    `target.split('/')`): public, and not refused by the immutable sandbox (`pop`, `update`)."""
    from jinja2.sandbox import modifies_known_mutable

    return frozenset(a for a in dir(type(value)) if not a.startswith("_")
                     and not modifies_known_mutable(value, a))


def build(alert: Mapping[str, Any], group: Mapping[str, Any] | None, playbook: Any,
          target: str | None = None) -> dict[str, Any]:
    """The context of every template: `alert` in Alert.to_dict()'s shape, `playbook` a
    Playbook (or None). `steps` starts empty; the engine adds each step's `step_view`.
    The roots `ROOT_MAKERS` makes, made here without a call each (every decision builds
    one: seven calls and a comprehension over them were ~2.7 % of a storm's Python bytecodes)."""
    return {"labels": dict(alert["labels"]), "annotations": dict(alert["annotations"]),
            "alert": _alert(alert), "group": _group(group or {}), "playbook": _playbook(playbook),
            "target": Target(target) if target else None, "steps": {}}


def _alert(alert: Mapping[str, Any]) -> dict[str, Any]:
    return {k: alert.get(k, "") for k in ALERT_FIELDS}


def _group(group: Mapping[str, Any]) -> dict[str, Any]:
    if tuple(group) == GROUP_FIELDS:  # a Group's to_dict (every decision's): each field
        return dict(group)
    return {k: group[k] if k in group else dict(default) if isinstance(default, dict)
            else default for k, default in _GROUP_DEFAULTS}


def _playbook(playbook: Any) -> dict[str, Any]:
    return {"name": getattr(playbook, "name", None), "runbook": getattr(playbook, "runbook", "")}


# How each of the context's roots is made (`build` makes them all; a note only those its
# templates read: escalation/note.py).
ROOT_MAKERS: dict[str, Callable[[Mapping[str, Any], Mapping[str, Any], Any, str | None], Any]] = {
    "labels": lambda alert, group, playbook, target: dict(alert["labels"]),
    "annotations": lambda alert, group, playbook, target: dict(alert["annotations"]),
    "alert": lambda alert, group, playbook, target: _alert(alert),
    "group": lambda alert, group, playbook, target: _group(group),
    "playbook": lambda alert, group, playbook, target: _playbook(playbook),
    "target": lambda alert, group, playbook, target: Target(target) if target else None,
    "steps": lambda alert, group, playbook, target: {},
}


_PLANNED: dict[str, dict[str, Any]] = {}


def step_view(record: Mapping[str, Any], pending: bool = True) -> dict[str, Any]:
    """What later templates see of a step: its outcome, result and detail; a step only
    planned (dry-run) shows placeholders unless `pending` is False (notes show `planned`)."""
    if pending and record["outcome"] == "planned":
        # The same placeholders for every plan of a step of this name: made once (three
        # objects per step per decision), and shared, as nothing writes them (the sandbox
        # is immutable; a plan calls no action).
        view = _PLANNED.get(record["name"])
        if view is None:
            if len(_PLANNED) >= 4096:  # steps of old versions, after reloads
                _PLANNED.clear()
            view = _PLANNED[record["name"]] = {
                k: templating.Pending(f"steps.{record['name']}.{k}") for k in STEP_FIELDS}
        return view
    return {"outcome": record["outcome"], "result": record.get("result") or {},
            "detail": record.get("detail", "")}
