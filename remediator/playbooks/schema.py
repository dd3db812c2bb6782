"""The playbook file schema: one definition for validation, lint and `remediator schema`.

It is plain JSON Schema (the subset `check_shape` walks), so editors can use the printed
schema directly; action parameter schemas are added from the actions' own declarations.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any

from ..actions.base import Param
from ..actions.registry import ACTIONS
from .source import Path

DURATION = {"type": ["string", "number"], "pattern": r"^(\d+(\.\d+)?(ms|s|m|h|d))+$",
            "errorMessage": "not a duration: use e.g. 1h, 30m, 1h30m (or seconds as a number)"}
NAME = {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9_.]*[a-z0-9])?$", "maxLength": 128,
        "errorMessage": "not a name: use lowercase letters, digits, - _ . (e.g. restart-web)"}
STEP_NAME = {"type": "string", "pattern": r"^[a-z_][a-z0-9_]*$", "maxLength": 64,
             "errorMessage": "not a step name: use lowercase letters, digits and _ "
                             "(e.g. restart_web)"}

TARGET: dict[str, Any] = {
    "type": "object", "required": ["kind", "name"], "additionalProperties": False,
    "properties": {"kind": {"type": "string"}, "namespace": {"type": "string"},
                   "name": {"type": "string"}},
}

STEP: dict[str, Any] = {
    "type": "object",
    "required": ["name", "action"],
    "additionalProperties": False,
    "properties": {
        "name": STEP_NAME,
        "action": {"type": "string"},
        "params": {"type": "object"},
        "when": {"type": "string", "description": "Jinja expression; the step runs if true"},
        "timeout": DURATION,
        "retries": {"type": "integer", "minimum": 1, "maximum": 10},
        "on_failure": {"type": "string", "enum": ["abort", "continue", "escalate"]},
        "approval": {"type": "string", "enum": ["required", "none"]},
        "description": {"type": "string",
                        "description": "what the step does, shown to whoever approves it"},
        "target": dict(TARGET, description="the object this step changes, when it is not the "
                                           "playbook's target (its locks and limits key on it)"),
    },
}

GUARDS: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "rate_limit": {
            "type": "object", "required": ["max", "window"], "additionalProperties": False,
            "properties": {"max": {"type": "integer", "minimum": 1}, "window": DURATION,
                           "key": {"type": "string"}},
        },
        "cooldown": DURATION,
        "lock": {"type": "boolean"},
        "circuit_breaker": {
            "type": "object", "required": ["max_refires", "window"], "additionalProperties": False,
            "properties": {"max_refires": {"type": "integer", "minimum": 1}, "window": DURATION,
                           "open_for": DURATION},
        },
        "precondition": {
            "type": "object", "additionalProperties": False,
            "properties": {"promql": {"type": "string"}, "alert_firing": {"type": "boolean"},
                           "delay": DURATION},
        },
        "time_windows": {
            "type": "array",
            "items": {
                "type": "object", "required": ["start", "end"], "additionalProperties": False,
                "properties": {
                    "days": {"type": "array", "items": {
                        "enum": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]}},
                    "start": {"type": "string", "pattern": r"^([01]\d|2[0-3]):[0-5]\d$"},
                    "end": {"type": "string", "pattern": r"^([01]\d|2[0-4]):[0-5]\d$"},
                },
            },
        },
        "approval_ttl": DURATION,
    },
}

ESCALATION: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "severity": {"type": "string", "enum": ["info", "warning", "critical", "emergency"]},
        "respond_within": DURATION,
        "owner": {"type": "string"},
        "team": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
                 "maxLength": 63,
                 "description": "the owning team, a routable label (Alertmanager sink `team`): "
                                "its contact, e.g. sre-oncall for #sre-oncall"},
        "summary": {"type": "string"},
        "always": {"type": "boolean", "description": "escalate even when every step succeeded"},
        "next_steps": {"type": "array", "items": {"type": "string"}},
        "sinks": {"type": "array", "items": {"type": "string"}},
        "raise": {
            "type": "array",
            "description": "a higher severity when a condition on the steps' results holds",
            "items": {
                "type": "object", "required": ["severity", "when"], "additionalProperties": False,
                "properties": {
                    "severity": {"type": "string", "enum": ["warning", "critical", "emergency"]},
                    "when": {"type": "string"},
                    "respond_within": DURATION,
                    "team": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
                             "description": "route to this team instead"},
                },
            },
        },
    },
}

PLAYBOOK: dict[str, Any] = {
    "type": "object",
    "required": ["name", "match"],
    "additionalProperties": False,
    "properties": {
        "name": NAME,
        "description": {"type": "string"},
        "runbook": {"type": "string"},
        "match": {
            "type": "object", "required": ["alertname"], "additionalProperties": False,
            "properties": {
                "alertname": {"type": ["string", "array"], "minItems": 1,
                              "items": {"type": "string"}},
                "matchers": {"type": "array", "items": {"type": "string"},
                             "description": 'Alertmanager matchers: name="v", !=, =~, !~'},
                "status": {"type": "string", "enum": ["firing", "resolved", "any"]},
            },
        },
        "continue": {"type": "boolean"},
        "dry_run": {"type": "boolean"},
        "target": TARGET,
        "guards": GUARDS,
        "steps": {"type": "array", "items": STEP},
        "on_resolved": {"type": "array", "items": STEP},
        "on_resolved_when": {
            "type": "string", "enum": ["changed", "always"],
            "description": "changed (default): on_resolved, if it mutates, runs only when the "
                           "firing run changed something; always: also after a run that "
                           "changed nothing"},
        "resolution_verifies": {
            "type": "boolean",
            "description": "true (default): the alert's resolution while the firing run "
                           "waits, after a change, ends the run as verified; false: its "
                           "waits run on and decide (an alert that can clear before the fix "
                           "is seen to complete, such as mid-rollout)"},
        "escalation": ESCALATION,
    },
}

FILE: dict[str, Any] = {
    "type": "object",
    "required": ["playbooks"],
    "additionalProperties": False,
    "properties": {"playbooks": {"type": "array", "items": PLAYBOOK}},
}


# --- playbook test files (`remediator test`, remediator/playtest.py) ---------------------
# Checked by the same walker, so a typo in a test (`outcom:`) is located like one in a rule.

_OUTCOMES = ["no_match", "duplicate", "planned", "succeeded", "failed", "blocked", "escalated",
             "resolved"]
_OBJ = {"type": "object"}
_STEP_EXPECT = {"type": "object", "additionalProperties": False, "properties": {
    "name": {"type": "string"}, "action": {"type": "string"}, "params": _OBJ, "result": _OBJ,
    "outcome": {"enum": ["planned", "succeeded", "failed", "skipped", "blocked", "cancelled"]},
    "detail": {"type": "string"}, "guard": {"type": "string"}, "mutating": {"type": "boolean"},
    "attempts": {"type": "integer"}}}
_EXPECT = {"type": "object", "additionalProperties": False, "properties": {
    "alertname": {"type": "string"}, "status": {"enum": ["firing", "resolved"]},
    "playbook": {"type": ["string", "null"]}, "outcome": {"enum": _OUTCOMES},
    "reason": {"type": "string"}, "guard": {"type": "string"}, "target": {"type": ["string", "null"]},
    "mode": {"enum": ["live", "dry-run"]}, "steps": {"type": "array", "items": _STEP_EXPECT},
    "escalation": {"type": ["boolean", "object"], "additionalProperties": False, "properties": {
        "severity": {"type": "string"}, "respond_within_seconds": {"type": ["number", "null"]},
        "team": {"type": "string"},
        "title": {"type": "string"}, "note": {"type": "string"},
        "sinks": {"type": "array", "items": {"type": "string"}}}}}}
_STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}
_ALERT = {"type": "object", "required": ["labels"], "additionalProperties": False, "properties": {
    "at": DURATION, "labels": _STRINGS, "annotations": _STRINGS,
    "status": {"enum": ["firing", "resolved"]}, "starts_at": DURATION,
    "repeat": {"type": "integer", "minimum": 1}, "every": DURATION,
    "expect": {"type": "array", "items": _EXPECT}}}
_TEST = {"type": "object", "required": ["name", "alerts"], "additionalProperties": False,
         "properties": {
             "name": {"type": "string"}, "start": {"type": "string"},
             "mode": {"enum": ["live", "dry-run"]},
             "results": {"type": "object", "additionalProperties": {
                 "type": ["object", "array"], "items": _OBJ}},
             "precondition": {"type": ["boolean", "array"], "items": {"type": "boolean"}},
             "alerts": {"type": "array", "minItems": 1, "items": _ALERT}}}
TEST_FILE: dict[str, Any] = {
    "type": "object", "required": ["tests"], "additionalProperties": False, "properties": {
        "rule_files": {"type": "array", "minItems": 1, "items": {"type": "string"}},
        "config": {"type": ["object", "string"]},
        "tests": {"type": "array", "minItems": 1, "items": _TEST}}}


def json_schema() -> dict[str, Any]:
    """The full JSON Schema, with each action's parameters attached to its `action` value."""
    step = dict(STEP, properties=dict(STEP["properties"],
                                      action={"type": "string", "enum": sorted(ACTIONS)}))
    step["allOf"] = [
        {"if": {"properties": {"action": {"const": name}}, "required": ["action"]},
         "then": {"properties": {"params": _params_schema(action.params)},
                  **({"description": action.summary} if action.summary else {})}}
        for name, action in sorted(ACTIONS.items())
    ]
    playbook = dict(PLAYBOOK, properties=dict(
        PLAYBOOK["properties"],
        steps={"type": "array", "items": step}, on_resolved={"type": "array", "items": step}))
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",  # what editors support best
        "title": "remediator playbook file",
        **FILE,
        "properties": {"playbooks": {"type": "array", "items": playbook}},
    }


# A parameter may always be a template string, rendered (and checked) at run time.
_PARAM_TYPES = {"string": "string", "integer": ["integer", "string"], "number": ["number", "string"],
                "boolean": ["boolean", "string"], "duration": DURATION["type"],
                "list": ["array", "string"], "mapping": ["object", "string"]}


def _params_schema(params: dict[str, Param]) -> dict[str, Any]:
    props: dict[str, Any] = {}
    for name, spec in params.items():
        prop: dict[str, Any] = {"description": spec.description} if spec.description else {}
        if spec.type in _PARAM_TYPES:
            prop["type"] = _PARAM_TYPES[spec.type]
        if spec.choices:
            prop["enum"] = list(spec.choices)
        if spec.minimum is not None and spec.type in ("integer", "number"):
            prop["minimum"] = spec.minimum
        if spec.maximum is not None and spec.type in ("integer", "number"):
            prop["maximum"] = spec.maximum
        if spec.default is not None:
            prop["default"] = spec.default
        props[name] = prop
    required = [n for n, s in params.items() if s.required]
    return {"type": "object", "additionalProperties": False, "properties": props,
            **({"required": required} if required else {})}


# --- the shape walker ------------------------------------------------------------------

_TYPES = {"object": dict, "array": list, "string": str, "integer": int, "number": (int, float),
          "null": type(None),
          "boolean": bool}

Problems = list[tuple[Path, str]]
_Check = Callable[[Any, Path, Problems], None]
# A node's check, and the classes of value it is known to accept without being called: a
# node with nothing to check but its type (most leaves) costs its parent a set lookup.
_Node = tuple[_Check, frozenset[type]]
_KEYWORDS = frozenset({"enum", "pattern", "maxLength", "minimum", "maximum", "properties",
                       "required", "additionalProperties", "oneOf", "minItems", "items"})


def check_shape(value: Any, schema: dict[str, Any], path: Path) -> Problems:
    """Check `value` against the schema subset above; return (path, message) problems."""
    return compile_shape(schema)(value, path)


def compile_shape(schema: dict[str, Any]) -> Callable[[Any, Path], Problems]:
    """`check_shape` for one schema, its keywords read once: the validator checks every file
    with the same schema, and reading each keyword of each node again for each value was a
    third of a start-up's validation."""
    check, _ = _compile(schema, {})

    def checker(value: Any, path: Path) -> Problems:
        problems: Problems = []
        check(value, path, problems)
        return problems
    return checker


def _compile(schema: dict[str, Any], done: dict[int, _Node]) -> _Node:
    """One node's check, appending its problems (in the walker's order) to `out`. `done`
    holds the nodes compiled so far: a node used twice (STEP) is compiled once."""
    if id(schema) in done:
        return done[id(schema)]
    types = schema.get("type")
    names = None if types is None else types if isinstance(types, list) else [types]
    accepted = None if names is None else tuple(
        t for name in names for t in (_TYPES[name] if isinstance(_TYPES[name], tuple)
                                      else (_TYPES[name],)))
    # The exact classes (not subclasses: bool is an int) a node without keywords accepts.
    fine = frozenset(accepted or ()) if not _KEYWORDS & schema.keys() else frozenset()
    bools = names is not None and "boolean" in names  # bool is an int: only if named
    enum = schema.get("enum")
    # `writeOnly` (JSON Schema's mark of a value never read back: a password, a hash of one, a
    # URL that may carry either): a problem with it names where it is, never quotes it.
    shown: Callable[[Any], str] = _unshown if schema.get("writeOnly") else repr
    pattern = _pattern(schema["pattern"]) if "pattern" in schema else None
    max_length = schema.get("maxLength")
    minimum, maximum = schema.get("minimum"), schema.get("maximum")
    props = {key: _compile(sub, done) for key, sub in schema.get("properties", {}).items()}
    required = tuple(schema.get("required", ()))
    extra = schema.get("additionalProperties")
    closed = extra is False
    extra_check, extra_fine = _compile(extra, done) if isinstance(extra, dict) else (None, ())
    alternatives = [compile_shape(alt) for alt in schema.get("oneOf", ())]
    min_items = schema.get("minItems", 0)
    items, items_fine = _compile(schema["items"], done) if "items" in schema else (None, ())

    # One body per kind of value, each usable alone: a node of one type without `enum` (most
    # of them) is checked by its body directly, not by the general check's chain of tests.
    def check_text(value: Any, path: Path, out: Problems) -> None:
        if not isinstance(value, str):
            out.append(_wrong_type(value, names or [], path))
            return
        # The whole value, in ASCII: `$` accepts a trailing newline, and `\d` Unicode digits.
        if pattern is not None and not pattern.fullmatch(value):
            # `errorMessage` (the ajv-errors keyword) says what to write instead of the regex.
            out.append((path, f"{_where(path)}: {shown(value)}: " + schema.get(
                "errorMessage", f"does not match {schema['pattern']}")))
        if max_length is not None and len(value) > max_length:
            out.append((path, f"{_where(path)}: {len(value)} characters, at most "
                              f"{max_length}"))

    def check_object(value: Any, path: Path, out: Problems, start: int | None = None) -> None:
        if not isinstance(value, dict):
            out.append(_wrong_type(value, names or [], path))
            return
        start = len(out) if start is None else start
        for key in required:
            if key not in value:
                out.append((path, f"{_where(path)}: missing required key {key!r}"))
        for key, item in value.items():
            sub = props.get(key)
            if sub is not None:
                if item.__class__ not in sub[1]:
                    sub[0](item, (*path, key), out)
            elif closed:
                out.append(((*path, key), f"{_where(path)}: unknown key {key!r}"
                                          f"{did_you_mean(key, list(props))}"))
            elif extra_check is not None and item.__class__ not in extra_fine:
                extra_check(item, (*path, key), out)
        if alternatives and len(out) == start and \
                sum(not alt(value, path) for alt in alternatives) != 1:
            message = schema.get("oneOfMessage", "matches none or several of its "
                                                 "alternatives")
            out.append((path, f"{_where(path)}: {message}"))

    def check_array(value: Any, path: Path, out: Problems) -> None:
        if not isinstance(value, list):
            out.append(_wrong_type(value, names or [], path))
            return
        if len(value) < min_items:
            out.append((path, f"{_where(path)}: must not be empty"))
        if items is not None:
            for i, item in enumerate(value):
                if item.__class__ not in items_fine:
                    items(item, (*path, i), out)

    def check(value: Any, path: Path, out: Problems) -> None:
        if accepted is not None and not (isinstance(value, accepted) and
                                         (bools or not isinstance(value, bool))):
            out.append(_wrong_type(value, names or [], path))
            return
        start = len(out)
        if enum is not None and value not in enum:
            hint = did_you_mean(str(value), [str(e) for e in enum])
            out.append((path, f"{_where(path)}: {shown(value)} is not one of "
                              f"{', '.join(map(str, enum))}{hint}"))
        if isinstance(value, str):
            check_text(value, path, out)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            if minimum is not None and value < minimum:
                out.append((path, f"{_where(path)}: must be >= {minimum}"))
            if maximum is not None and value > maximum:
                out.append((path, f"{_where(path)}: must be <= {maximum}"))
        elif isinstance(value, dict):
            check_object(value, path, out, start)
        elif isinstance(value, list):
            check_array(value, path, out)

    if enum is None and names in (["string"], ["object"], ["array"]):
        check = {"string": check_text, "object": check_object, "array": check_array}[names[0]]
    done[id(schema)] = check, fine
    return check, fine


def _unshown(value: Any) -> str:
    return "the value given"


def _wrong_type(value: Any, names: list[str], path: Path) -> tuple[Path, str]:
    hint = " (quote it)" if "string" in names and _kind(value) in ("integer", "number",
                                                                  "boolean") else ""
    if "boolean" in names and str(value).lower() in ("true", "false"):
        hint = f" (write {str(value).lower()}, unquoted)"
    return (path, f"{_where(path)}: expected {' or '.join(names)}, got {_kind(value)}{hint}")


@functools.lru_cache(maxsize=256)
def _pattern(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.ASCII)


def _kind(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer",
            float: "number", type(None): "null"}.get(type(value), type(value).__name__)


def _where(path: Path) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".") or "file"


def did_you_mean(word: str, options: list[str], cutoff: float = 0.6) -> str:
    import difflib  # only for a mistake: not imported by every start-up

    close = difflib.get_close_matches(word, options, n=1, cutoff=cutoff)
    return f" (did you mean {close[0]!r}?)" if close else ""
