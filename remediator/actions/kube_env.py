"""`kubectl set env` redone: the strategic merge patch that yields the same pod template.

kubectl edits every selected container -- init containers included -- with `updateEnv`
(existing variables keep their place and are replaced whole, new ones are appended in the
order given, removed ones dropped) and sends the two-way merge patch between the old and new
object. The patch built here produces that same stored state: list items merged by `name`,
`"valueFrom": null` when a literal replaces a reference, `{"$patch": "delete"}` to unset.
Pure functions over the pod template (a dict), no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

_CONTAINER_LISTS = ("containers", "initContainers")


def env_value(value: Any) -> str:
    """The string an env var holds; YAML `false`/`3` arrive as bool/int, kubectl sees text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise TypeError(f"must be a string, number or boolean, got {type(value).__name__}")


@dataclass(frozen=True)
class EnvPlan:
    """What setting environment variables would change, and what they were before."""

    patch: dict[str, Any] | None  # None: every selected container already has these values
    previous: dict[str, dict[str, Any]]  # container -> {NAME: value before, None if unset}
    changed: list[str]  # containers whose env the patch changes


def env_plan(pod_spec: dict[str, Any], container: str | None, env: dict[str, str],
             unset: list[str]) -> EnvPlan:
    """The patch setting `env` and removing `unset` in `container` (or every container).

    Raises LookupError when a named container is not in the template: kubectl only warns,
    but a playbook naming a container that is not there has a mistake worth failing on.
    """
    targets = [(field, c) for field in _CONTAINER_LISTS for c in pod_spec.get(field) or []
               if container is None or c["name"] == container]
    if container is not None and not targets:
        names = [c["name"] for f in _CONTAINER_LISTS for c in pod_spec.get(f) or []]
        raise LookupError(f"no container named {container!r} (containers: {', '.join(names)})")
    previous: dict[str, dict[str, Any]] = {}
    lists: dict[str, list[dict[str, Any]]] = {}
    for field, spec in targets:
        current = {e["name"]: e for e in spec.get("env") or []}
        previous[spec["name"]] = {n: _shown(current.get(n)) for n in [*env, *unset]}
        items = [_set_item(n, v, current.get(n)) for n, v in env.items()
                 if not _holds(current.get(n), v)]
        items += [{"name": n, "$patch": "delete"} for n in unset if n in current]
        if items:
            lists.setdefault(field, []).append({"name": spec["name"], "env": items})
    patch = {"spec": {"template": {"spec": lists}}} if lists else None
    return EnvPlan(patch, previous, [c["name"] for items in lists.values() for c in items])


def _holds(entry: dict[str, Any] | None, value: str) -> bool:
    return entry is not None and "valueFrom" not in entry and entry.get("value", "") == value


def _set_item(name: str, value: str, old: dict[str, Any] | None) -> dict[str, Any]:
    item: dict[str, Any] = {"name": name}
    if value:
        item["value"] = value
    elif old is not None and "value" in old:
        item["value"] = None  # the apiserver omits empty strings; kubectl sends null
    if old is not None and "valueFrom" in old:
        item["valueFrom"] = None
    return item


def _shown(entry: dict[str, Any] | None) -> Any:
    """How a previous value is recorded: text, None (absent) or {"valueFrom": {...}}."""
    if entry is None:
        return None
    if "valueFrom" in entry:
        return {"valueFrom": entry["valueFrom"]}
    return entry.get("value", "")
