"""The three PATCH flavours the apiserver accepts.

* RFC 7386 JSON merge patch (``application/merge-patch+json``)
* RFC 6902 JSON patch (``application/json-patch+json``) -- kubectl rollout undo
* Kubernetes strategic merge patch (``application/strategic-merge-patch+json``) --
  kubectl rollout restart, set env, the python client's default for dict bodies.

Strategic merge only knows the list merge keys that matter for workloads
(containers/env/volumes/ports/...) rather than the full OpenAPI patch metadata,
but it does implement the directives kubectl's two-way merge emits:
``$patch`` (delete/replace/merge), ``$retainKeys``, ``$setElementOrder/<list>``
and ``$deleteFromPrimitiveList/<list>``.
"""

from __future__ import annotations

import copy
from typing import Any


class PatchError(ValueError):
    """A patch the apiserver would reject; ``code`` is the HTTP status to answer with."""

    def __init__(self, message: str, code: int = 422) -> None:
        super().__init__(message)
        self.code = code


# field name -> merge key (patchStrategy=merge, patchMergeKey=...) in the k8s API types.
MERGE_KEYS: dict[str, str] = {
    "containers": "name", "initContainers": "name", "ephemeralContainers": "name",
    "env": "name", "volumes": "name", "volumeMounts": "mountPath",
    "volumeDevices": "devicePath", "imagePullSecrets": "name", "hostAliases": "ip",
    "ownerReferences": "uid", "conditions": "type", "resourceClaims": "name",
    "topologySpreadConstraints": "topologyKey", "ports": "containerPort",
}
# Primitive lists with patchStrategy=merge: patched lists are unioned, not replaced.
MERGED_PRIMITIVE_LISTS = {"finalizers"}


def merge_patch(target: Any, patch: Any) -> Any:
    """Apply an RFC 7386 JSON merge patch (lists are replaced wholesale)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# ---------------------------------------------------------------- JSON patch (RFC 6902)


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _walk(doc: Any, parts: list[str]) -> Any:
    for part in parts:
        if isinstance(doc, dict) and part in doc:
            doc = doc[part]
        elif isinstance(doc, list) and part.isdigit() and int(part) < len(doc):
            doc = doc[int(part)]
        else:
            raise PatchError(f"path /{'/'.join(parts)} does not exist", 422)
    return doc


def _index(container: list, part: str, allow_end: bool) -> int:
    if part == "-" and allow_end:
        return len(container)
    if not part.isdigit() or int(part) > len(container) - (0 if allow_end else 1):
        raise PatchError(f"invalid array index {part!r}")
    return int(part)


def _add(doc: Any, parts: list[str], value: Any) -> Any:
    if not parts:
        return value
    parent = _walk(doc, parts[:-1])
    if isinstance(parent, dict):
        parent[parts[-1]] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, parts[-1], True), value)
    else:
        raise PatchError(f"cannot add to non-container at {parts}")
    return doc


def _remove(doc: Any, parts: list[str]) -> Any:
    if not parts:
        raise PatchError("cannot remove the document root")
    parent = _walk(doc, parts[:-1])
    if isinstance(parent, dict):
        if parts[-1] not in parent:
            raise PatchError(f"unable to remove nonexistent key: {parts[-1]}")
        return parent.pop(parts[-1])
    if isinstance(parent, list):
        return parent.pop(_index(parent, parts[-1], False))
    raise PatchError(f"cannot remove from non-container at {parts}")


def json_patch(target: Any, ops: Any) -> Any:
    """Apply an RFC 6902 JSON patch."""
    if not isinstance(ops, list):
        raise PatchError("json: cannot unmarshal object into Go value of type jsonpatch.Patch",
                         400)
    doc = copy.deepcopy(target)
    for op in ops:
        kind, parts = op.get("op"), _pointer(op.get("path", ""))
        if kind == "add":
            doc = _add(doc, parts, copy.deepcopy(op.get("value")))
        elif kind == "remove":
            _remove(doc, parts)
        elif kind == "replace":
            _walk(doc, parts)  # must exist
            if parts:
                _remove(doc, parts)
            doc = _add(doc, parts, copy.deepcopy(op.get("value")))
        elif kind in ("move", "copy"):
            src = _pointer(op.get("from", ""))
            value = _remove(doc, src) if kind == "move" else copy.deepcopy(_walk(doc, src))
            doc = _add(doc, parts, value)
        elif kind == "test":
            if _walk(doc, parts) != op.get("value"):
                raise PatchError(f"testing value /{'/'.join(parts)} failed")
        else:
            raise PatchError(f"Unexpected kind: {kind}")
    return doc


# ---------------------------------------------------------------- strategic merge patch


def _merge_key(field: str, items: list) -> str | None:
    key = MERGE_KEYS.get(field)
    if field == "ports" and any(isinstance(i, dict) and "containerPort" not in i for i in items):
        key = "port"  # Service ports merge on "port"
    return key


def _merge_list(field: str, original: Any, patch: list, order: list | None) -> list:
    original = original if isinstance(original, list) else []
    if field in MERGED_PRIMITIVE_LISTS:
        out = list(original)
        out.extend(v for v in patch if v not in out)
        return out
    key = _merge_key(field, original + patch)
    if key is None or not all(isinstance(i, dict) for i in patch):
        return copy.deepcopy([i for i in patch if not _is_directive(i)])
    if any(isinstance(i, dict) and i.get("$patch") == "replace" for i in patch):
        return copy.deepcopy([i for i in patch if not _is_directive(i)])
    out = copy.deepcopy(original)
    for item in patch:
        if item.get("$patch") == "delete":
            out = [o for o in out if o.get(key) != item.get(key)]
            continue
        idx = next((n for n, o in enumerate(out) if o.get(key) == item.get(key)), None)
        if idx is None:
            out.append(strategic_merge({}, item))
        else:
            out[idx] = strategic_merge(out[idx], item)
    if order:
        rank = {o.get(key): n for n, o in enumerate(order) if isinstance(o, dict)}
        listed = sorted((o for o in out if o.get(key) in rank), key=lambda o: rank[o.get(key)])
        out = listed + [o for o in out if o.get(key) not in rank]
    return out


def _is_directive(item: Any) -> bool:
    return isinstance(item, dict) and set(item) == {"$patch"}


def strategic_merge(original: Any, patch: Any) -> Any:
    """Apply a Kubernetes strategic merge patch to ``original``."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    base = copy.deepcopy(original) if isinstance(original, dict) else {}
    patch = dict(patch)
    directive = patch.pop("$patch", None)
    if directive == "delete":
        return None
    if directive == "replace":
        return strategic_merge({}, patch)
    if directive not in (None, "merge"):
        raise PatchError(f"Unknown patch type: {directive}", 400)
    retain = patch.pop("$retainKeys", None)
    orders: dict[str, list] = {}
    for key in [k for k in patch if k.startswith("$setElementOrder/")]:
        orders[key.split("/", 1)[1]] = patch.pop(key)
    for key in [k for k in patch if k.startswith("$deleteFromPrimitiveList/")]:
        field, drop = key.split("/", 1)[1], patch.pop(key)
        if isinstance(base.get(field), list):
            base[field] = [v for v in base[field] if v not in drop]
    for key, value in patch.items():
        if value is None:
            base.pop(key, None)
        elif isinstance(value, dict):
            merged = strategic_merge(base.get(key), value)
            if merged is None:
                base.pop(key, None)
            else:
                base[key] = merged
        elif isinstance(value, list):
            base[key] = _merge_list(key, base.get(key), value, orders.get(key))
        else:
            base[key] = copy.deepcopy(value)
    for field, order in orders.items():
        if field not in patch and isinstance(base.get(field), list):
            base[field] = _merge_list(field, base[field], [], order)
    if retain is not None:
        base = {k: v for k, v in base.items() if k in retain}
    return base


def apply_patch(content_type: str, target: dict[str, Any], patch: Any) -> dict[str, Any]:
    """Dispatch on the request Content-Type like the apiserver's PATCH handler."""
    ctype = content_type.split(";")[0].strip().lower()
    if ctype == "application/json-patch+json":
        result = json_patch(target, patch)
    elif ctype == "application/merge-patch+json":
        if not isinstance(patch, dict):
            raise PatchError("merge patch must be a JSON object", 400)
        result = merge_patch(target, patch)
    elif ctype == "application/strategic-merge-patch+json":
        if not isinstance(patch, dict):
            raise PatchError("strategic merge patch must be a JSON object", 400)
        result = strategic_merge(target, patch)
    else:
        raise PatchError(f"the server does not support patch content type {ctype!r}", 415)
    if not isinstance(result, dict):
        raise PatchError("patch produced a non-object document", 422)
    return result
