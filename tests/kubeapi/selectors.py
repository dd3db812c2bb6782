"""Label and field selector matching with apiserver semantics.

Remediation code selects pods with set-based selectors (``app in (a,b)``,
``!canary``), so the parser follows the k8s grammar rather than only ``k=v``.
Unsupported field labels are rejected the way the apiserver does, so code
relying on a field selector the real cluster refuses fails here too.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Matcher = Callable[[dict[str, str]], bool]


class SelectorError(ValueError):
    """Raised for a selector the apiserver would reject with 400 BadRequest."""


_REQ = re.compile(
    r"""^\s*(?P<neg>!)?\s*(?P<key>[A-Za-z0-9_.\-/]+)\s*
        (?:(?P<op>==|!=|=|>|<|\s+in\s+|\s+notin\s+)\s*(?P<val>\(.*\)|[A-Za-z0-9_.\-]*))?\s*$""",
    re.VERBOSE,
)


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside ``(...)`` value sets."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p for p in parts if p.strip()]


def _requirement(text: str) -> Matcher:
    m = _REQ.match(text)
    if not m:
        raise SelectorError(f"unable to parse requirement: {text!r}")
    key, op, val = m["key"], (m["op"] or "").strip(), m["val"]
    if m["neg"]:
        if op:
            raise SelectorError(f"unable to parse requirement: {text!r}")
        return lambda labels: key not in labels
    if not op:
        return lambda labels: key in labels
    if op in ("in", "notin"):
        if not (val and val.startswith("(")):
            raise SelectorError(f"expected '(' in requirement {text!r}")
        values = {v.strip() for v in val[1:-1].split(",")}
        if op == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    if op in ("=", "=="):
        return lambda labels: labels.get(key) == val
    if op == "!=":
        return lambda labels: labels.get(key) != val
    try:
        bound = int(val or "")
    except ValueError as exc:
        raise SelectorError(f"invalid integer value in {text!r}") from exc

    def compare(labels: dict[str, str]) -> bool:
        try:
            have = int(labels[key])
        except (KeyError, ValueError):
            return False
        return have > bound if op == ">" else have < bound

    return compare


def parse_label_selector(text: str | None) -> Matcher:
    """Compile a ``labelSelector`` query string into a predicate over labels."""
    reqs = [_requirement(p) for p in _split_top_level(text or "")]
    return lambda labels: all(r(labels or {}) for r in reqs)


def selector_from_object(sel: dict[str, Any] | None) -> Matcher:
    """Compile a ``metav1.LabelSelector`` (matchLabels / matchExpressions).

    An empty or missing selector matches nothing for workloads in k8s, but for
    our controller simulation an empty selector never occurs (validation rejects it).
    """
    return parse_label_selector(selector_to_string(sel))


def selector_to_string(sel: dict[str, Any] | None) -> str:
    """Render a LabelSelector object as the string form (used by Scale.status.selector)."""
    sel = sel or {}
    parts = [f"{k}={v}" for k, v in sorted((sel.get("matchLabels") or {}).items())]
    for expr in sel.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In":
            parts.append(f"{key} in ({','.join(sorted(values))})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({','.join(sorted(values))})")
        elif op == "Exists":
            parts.append(key)
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts)


def _field_value(obj: dict[str, Any], path: str) -> str:
    cur: Any = obj
    for part in path.split("."):
        cur = cur.get(part) if isinstance(cur, dict) else None
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return "" if cur is None else str(cur)


def parse_field_selector(text: str | None, allowed: tuple[str, ...]) -> Callable[[dict], bool]:
    """Compile a ``fieldSelector``; only ``allowed`` labels plus metadata.name/namespace."""
    allowed_all = {"metadata.name", "metadata.namespace", *allowed}
    checks: list[Callable[[dict], bool]] = []
    for part in _split_top_level(text or ""):
        m = re.match(r"^\s*([A-Za-z0-9_.]+)\s*(==|!=|=)\s*(.*?)\s*$", part)
        if not m:
            raise SelectorError(f"invalid selector: '{part}'; can't understand '{part}'")
        label, op, value = m.groups()
        if label not in allowed_all:
            raise SelectorError(f'field label not supported: {label}')
        if op == "!=":
            checks.append(lambda o, lb=label, v=value: _field_value(o, lb) != v)
        else:
            checks.append(lambda o, lb=label, v=value: _field_value(o, lb) == v)
    return lambda obj: all(c(obj) for c in checks)
