"""A readable reference of the actions, generated from their declarations (`remediator schema
--actions`; docs/actions.md is its built-in part, checked for drift in CI).

What an action does to the world is read from the same methods the guards call (`mutates`,
`repeatable`, `scope`), evaluated over its parameters' variations (each choice, each boolean,
each optional parameter set or not), so "changes things: only when `method` is POST, …" is
what the engine will do, not what someone remembered to write.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

from ..guards import GuardSettings, allow_list
from .base import Action, Param
from .registry import BUILTIN

HEADER = """\
# Actions

Every action a playbook step can name, generated from the actions' own declarations by
`remediator schema --actions builtin` (do not edit: CI fails when this file and the code
disagree). `remediator schema --actions` also lists installed [plugins](plugins.md).

- **Changes things**: a step that does is a mutation: in dry-run it is only described; live it
  passes the mutation guards (pause, namespace scope, approval, rate limit, cooldown, global
  budget), is journaled before the call, and needs `guards.rate_limit` or `guards.cooldown` in
  its playbook (lint).
- **After an interruption**: whether a crash or an uncertain error (a timeout after the call
  was sent) may be followed by the same call again. If not, the step fails as "may or may not
  have taken effect" and escalates instead.
- **Writes to**: places checked against their allow list besides the namespace
  (README, Safety model).
- **Permissions**: everything the action may call; `remediator lint --permissions` narrows
  it to what your steps use (RBAC `resourceNames` where a step names its object).
- Every parameter may be a template (`"{{ labels.namespace }}"`), rendered and validated
  before any call, except those marked *literal*.
"""


def reference(actions: dict[str, Action], title: bool = True) -> str:
    """Markdown: an index, then one section per action, in name order."""
    names = sorted(actions)
    lines = [HEADER] if title else []
    lines.append(" · ".join(f"[`{n}`](#{_anchor(n)})" for n in names) + "\n")
    for name in names:
        lines.append(_section(actions[name]))
    return "\n".join(lines).rstrip() + "\n"


def _section(action: Action) -> str:
    out = [f"## {action.name}", ""]
    if action.summary:
        out += [action.summary, ""]
    if action.name not in BUILTIN:
        out += [f"*A plugin action, from `{type(action).__module__}`.*", ""]
    changes = _varies(action, action.mutates)
    out.append(f"- **Changes things**: {changes}")
    if changes != "no":
        out.append(f"- **After an interruption**: "
                   f"{_varies(action, action.repeatable, 'repeated', 'not repeated')}")
    writes = sorted({kind for params in _variations(action)
                     for kind, _ in _safe(lambda p=params: action.scope(p), [])})
    if writes:
        out.append("- **Writes to**: " + ", ".join(
            f"{allow_list(GuardSettings(), k)[2]} (`{allow_list(GuardSettings(), k)[1]}`)"
            for k in writes))
    perms = _permissions(action)
    if perms:
        out.append(f"- **Permissions**: {perms}")
    if action.local:
        out.append("- Needs no backend: `remediator test` runs it for real.")
    out.append("")
    if action.params:
        out += ["| parameter | type | required | default | description |", "|---|---|---|---|---|"]
        out += [_param_row(n, p) for n, p in action.params.items()]
        out.append("")
    return "\n".join(out)


def _param_row(name: str, p: Param) -> str:
    kind = p.type + (f" ({p.kind})" if p.kind else "")
    notes = [p.description] if p.description else []
    if p.choices:
        notes.append("one of " + ", ".join(f"`{c}`" for c in p.choices))
    if p.minimum is not None:
        notes.append(f"at least {p.minimum:g}{'s' if p.type == 'duration' else ''}")
    if p.maximum is not None:
        notes.append(f"at most {p.maximum:.15g}{'s' if p.type == 'duration' else ''}")
    if p.literal:
        notes.append("*literal*: written in the playbook, a template is refused")
    if p.regex:
        notes.append("a regular expression (RE2); put alert values through `re_escape`")
    if p.kind == "promql":  # lint refuses any other splice of an alert's value
        notes.append("PromQL; put alert values in double quotes through `promql_str`, "
                     "elsewhere through `promql_name`, `promql_duration`, `int` or `float`")
    default = "" if p.default is None else f"`{_show(p)}`"
    cell = "; ".join(notes).replace("|", "\\|").replace("\n", " ")
    return f"| `{name}` | {kind} | {'yes' if p.required else ''} | {default} | {cell} |"


def _show(p: Param) -> str:
    if p.type == "duration" and isinstance(p.default, int | float):
        return f"{p.default:g}s"
    if isinstance(p.default, str):
        return p.default
    return json.dumps(p.default)


def _permissions(action: Action) -> str:
    rbac: dict[str, list[str]] = {}
    others = []
    for perm in action.permissions:
        if perm.kind == "rbac":
            rbac.setdefault(f"{perm.group or 'core'}/{perm.resource}", []).append(perm.verb)
        else:
            others.append(f"{'IAM' if perm.kind == 'iam' else 'Docker'} `{perm}`")
    return "; ".join([*(f"RBAC `{res}`: {', '.join(verbs)}" for res, verbs in rbac.items()),
                      *others])


# --- what the engine decides per step, over the parameters' variations ----------------------

def _variations(action: Action) -> Iterator[dict[str, Any]]:
    """Defaults (placeholders for what is required), then each choice, each boolean, and each
    optional parameter without a default given, one parameter at a time."""
    base = {n: p.default if p.default is not None else _placeholder(n, p)
            for n, p in action.params.items() if p.default is not None or p.required}
    yield base
    for name, p in action.params.items():
        values = list(p.choices) or ([True, False] if p.type == "boolean" else [])
        if not values and not p.required and p.default is None:
            values = [_placeholder(name, p)]
        for value in values:
            yield {**base, name: value}


def _placeholder(name: str, p: Param) -> Any:
    return {"integer": 1, "number": 1.0, "boolean": False, "duration": 60.0, "list": [f"<{name}>"],
            "mapping": {}}.get(p.type, f"http://host.example/{name}" if p.kind == "url"
                                        else f"<{name}>")


def _varies(action: Action, fn: Callable[[dict[str, Any]], bool], yes: str = "yes",
            no: str = "no") -> str:
    """`yes` or `no` for the defaults, and which parameter values turn it round."""
    base, *rest = list(_variations(action))
    first = bool(_safe(lambda: fn(base), False))
    flips: dict[str, list[str]] = {}
    for params in rest:
        if bool(_safe(lambda p=params: fn(p), first)) != first:
            name = next(k for k in params if base.get(k, _UNSET) != params[k])
            flips.setdefault(name, []).append(_value(action.params[name], params[name]))
    said = yes if first else no
    if not flips:
        return said
    return f"{said}; {no if first else yes} when " + "; ".join(
        f"`{name}` is {' or '.join(values)}" for name, values in flips.items())


def _value(p: Param, value: Any) -> str:
    if p.choices or p.type == "boolean":
        return f"`{json.dumps(value) if isinstance(value, bool) else value}`"
    return "given"


_UNSET = object()


def _safe(fn: Callable[[], Any], fallback: Any) -> Any:
    try:
        return fn()
    except Exception:  # an action's method may expect values a placeholder does not give
        return fallback


def _anchor(name: str) -> str:
    """GitHub's anchor for a `## name` heading: lowercase, punctuation but `-` and `_` dropped."""
    return "".join(c for c in name.lower() if c.isalnum() or c in "-_")
