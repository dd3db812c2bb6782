"""What a playbook's templates may read, checked before any alert renders them: their root
names (each kind of template is rendered with its own), the steps they read (earlier ones
only), and the attributes of fixed-shape values (`target.nmae` is undefined at run time)."""

from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING, Any

from .. import templating
from ..templating import context as template_context
from .schema import did_you_mean
from .source import Finding, Path, Problem, Source

if TYPE_CHECKING:
    from jinja2 import Environment, nodes

@functools.cache
def parser() -> Environment:
    """Parsing only: what a template reads, whatever it renders with."""
    from jinja2 import Environment

    return Environment()


_STEP_REF = re.compile(r"\bsteps\s*(?:\.\s*([A-Za-z_]\w*)|\[\s*['\"]([^'\"]+)['\"]\s*\])")


def check_template(src: Source, at: Path, value: Any, allowed: frozenset[str],
                   earlier: list[str] | None = None,
                   names: tuple[str, list[str]] = ("steps", [])) -> list[Problem]:
    """`template_findings`, located in `src`."""
    return [src.problem(*found)
            for found in template_findings(at, value, allowed, earlier, names)]


def template_findings(at: Path, value: Any, allowed: frozenset[str],
                      earlier: list[str] | None = None,
                      names: tuple[str, list[str]] = ("steps", [])) -> list[Finding]:
    """Compile every template in `value`; allow only `allowed` roots and earlier steps.

    `names` is (section, its step names), to tell a later step from a missing one.
    """
    if isinstance(value, dict):
        return [p for k, v in value.items()
                for p in template_findings((*at, k), v, allowed, earlier, names)]
    if isinstance(value, list):
        return [p for i, v in enumerate(value)
                for p in template_findings((*at, i), v, allowed, earlier, names)]
    if not isinstance(value, str) or not templating.is_template(value):
        return []
    names_read, error = roots(value)
    if error:
        return [(at, "error", error)]
    problems: list[Finding] = [
        (at, "error", f"template uses unknown name {name!r}; allowed here: "
                      f"{', '.join(sorted(allowed))}{did_you_mean(name, sorted(allowed))}")
        for name in sorted(names_read - allowed)]
    if "steps" in names_read and "steps" in allowed:
        problems.extend((at, "error", message)
                        for message in _step_refs(value, earlier or [], *names))
    problems.extend((at, "error", message) for message in _unknown_attributes(value))
    return problems


def step_references(text: str) -> set[str]:
    """The step names a template or `when` expression reads (`steps.x`, `steps['x']`)."""
    return {found.group(1) or found.group(2) for found in _STEP_REF.finditer(text)}


def _step_refs(text: str, earlier: list[str], section: str, names: list[str]) -> list[str]:
    messages = []
    for found in _STEP_REF.finditer(text):
        ref = found.group(1) or found.group(2)
        if ref in earlier:
            continue
        if ref in names:
            messages.append(f"template refers to step {ref!r}, which does not run before this "
                            "one")
        else:
            messages.append(f"template refers to step {ref!r}, which is not in {section}"
                            f"{did_you_mean(ref, earlier)}")
    return messages


# What a template may read of each fixed-shape value besides its fields (docs/templates.md):
# the methods of its type the immutable sandbox allows (`alert.get('x')`, `target.split('/')`).
@functools.cache
def _methods() -> dict[str, frozenset[str]]:
    return {path: template_context.methods(template_context.Target("k/n") if path == "target"
                                           else {})
            for path in template_context.FIELDS}


@functools.lru_cache(maxsize=4096)
def _unknown_attributes(text: str) -> tuple[str, ...]:
    """`target.nmae`, `alert.foo`, `steps.x.outcom`: attributes no value of that name has,
    which would be undefined at run time. Open maps (labels, a step's result) are not checked."""
    from jinja2 import TemplateSyntaxError, nodes

    try:
        ast = parser().parse(text)
    except TemplateSyntaxError:
        return ()  # reported as a syntax error already
    local = {n.name for n in ast.find_all(nodes.Name) if n.ctx in ("store", "param")}
    messages = []
    called = {id(call.node) for call in ast.find_all(nodes.Call)}
    for node in ast.find_all(nodes.Getattr):
        # `labels.items` is the map's method (Jinja looks an attribute up before a key), not
        # the label `items`: a request went to `/<built-in method items of dict …>`.
        if id(node) not in called and hasattr(dict, node.attr) and \
                (where := _open_map(node.node, local)):
            messages.append(f"template reads {where}.{node.attr}, which is the map's method "
                            f"{node.attr!r}, not its key: write {where}['{node.attr}']")
    for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
        attr, owner = _attribute(node), node.node
        if isinstance(owner, nodes.Name) and owner.ctx == "load" and owner.name not in local:
            path = key = owner.name
        elif (isinstance(owner, (nodes.Getattr, nodes.Getitem)) and _attribute(owner)
              and isinstance(owner.node, nodes.Name) and owner.node.name == "steps"
              and "steps" not in local):
            path, key = f"steps.{_attribute(owner)}", "steps.<step>"
        else:
            continue
        fields = template_context.FIELDS.get(key)
        if attr is None or fields is None or attr in fields or attr in _methods()[key]:
            continue
        why = ("which templates may not call (they cannot change what they read)"
               if hasattr(dict, attr) else "which does not exist")
        messages.append(f"template reads {path}.{attr}, {why}: {path} has "
                        f"{', '.join(fields)}{did_you_mean(attr, list(fields))}")
    return tuple(dict.fromkeys(messages))


_OPEN_MAPS = {"labels": "labels", "annotations": "annotations"}


def _open_map(node: nodes.Node, local: set[str]) -> str | None:
    """The path of an open map `node` reads (labels, annotations, a group's label maps, a
    step's result), or None."""
    from jinja2 import nodes

    if isinstance(node, nodes.Name) and node.name not in local:
        return _OPEN_MAPS.get(node.name)
    if not isinstance(node, (nodes.Getattr, nodes.Getitem)):
        return None
    attr, owner = _attribute(node), node.node
    if isinstance(owner, nodes.Name) and owner.name == "group" and "group" not in local \
            and attr in ("groupLabels", "commonLabels", "commonAnnotations"):
        return f"group.{attr}"
    if attr == "result" and isinstance(owner, (nodes.Getattr, nodes.Getitem)) \
            and isinstance(owner.node, nodes.Name) and owner.node.name == "steps" \
            and "steps" not in local and _attribute(owner):
        return f"steps.{_attribute(owner)}.result"
    return None


def _attribute(node: nodes.Node) -> str | None:
    """The attribute `x.name` or `x['name']` reads (None for `x[0]`, `x[y]`)."""
    from jinja2 import nodes

    if isinstance(node, nodes.Getattr):
        return node.attr
    if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const) \
            and isinstance(node.arg.value, str):
        return node.arg.value
    return None


def roots(text: str) -> tuple[frozenset[str], str]:
    """(the root names `text` reads, "") or (none, why it does not compile)."""
    try:
        return templating.compile_check(text), ""
    except templating.TemplateError as exc:
        return frozenset(), str(exc)
