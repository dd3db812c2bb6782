"""What a template rendered, kept for the exact values it read (templating.render, evaluate).

A storm's alerts share most of what a playbook's templates read (`labels.namespace`, a step's
outcome): rendering the same template over the same values again, and building a note's
context to do it, was most of a note's CPU, and a condition on a result not known yet (a dry
run's) raised and caught an error in Jinja each time. A template is a pure function of what
it reads when it reads the context only through names (Jinja has no other way in), calls
nothing impure (`random`, `lipsum`), tests no identity (`sameas`) and imports nothing. Each
name it reads is followed down its constant attributes and items (`labels.namespace`,
`steps.logs.result`) through plain dicts, where the sandbox finds a dict's keys, and the value
found is the key: typed, in order, and whole (below a dict's method such as `result.get`, a
string, a list or a placeholder, what the template finds is a function of that value). So a
render is shared only by contexts that give the template exactly the same values: one alert's
labels never reach another's output unless its own would have rendered the same. Anything
else (a value of another type, a big one, an unknown name) is rendered as before, and so is
an error that describes the context (an undefined label lists the alert's labels). Outputs
are kept before redaction: every output path redacts what it is given, after this. (An
object's address, which `{{ labels.items }}` would show, is not a value: a kept render shows
the first one's.)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jinja2 import nodes

# The names a template may read, besides its context's roots: pure functions (Jinja's
# `lipsum` is random, and is not one of them).
_PURE_GLOBALS = frozenset({"range", "dict", "namespace", "cycler", "joiner"})
# Texts naming these are never kept: `random` (a filter), `lipsum` (a global), `sameas` (a
# test of identity: equal values need not be the same object); a test or filter may also be
# named by a string (`select('sameas', x)`), so the text is searched, not the tree.
_IMPURE = ("random", "lipsum", "sameas")
# Filters that take a filter or test by name (the position of that argument): named by an
# expression (`'same' ~ 'as'`, `labels.f`), it may be one of _IMPURE where the text shows none.
_BY_NAME = {"map": 0, "select": 0, "reject": 0, "selectattr": 1, "rejectattr": 1}
_ENTRIES = 2048  # renders kept; all forgotten at once when full (reloads, unique values)
_KEY_LEAVES = 64  # values in a key, and bytes of its strings: past them a context is
_KEY_CHARS = 2048  # not worth keeping (a result's log lines): rendered as before
_OUTPUT_CHARS = 4096  # (bytes, as _size counts them: what 2048 entries hold stays ~13 MiB)

# How values of other types than the JSON ones are keyed (registered by their modules:
# `Pending` by its path, `Target` by its text); any other type is not kept.
FROZEN: dict[type, Callable[[Any], Any]] = {}

_kept: dict[tuple[Any, ...], tuple[bool, Any]] = {}
# Per text: [its chains (or False), renders looked up, of them found kept].
_plans: dict[tuple[Any, str, str], list[Any]] = {}
_PLANS = 4096
_TRIAL, _REST = 64, 1024  # looked up before judging how often a text's renders are shared,
# and then not kept for as many renders when under a quarter were
_UNDEFINED = ("undefined",)


class _Unkeyable(Exception):
    pass


def lookup(env: Any, text: str, kind: str, context: Mapping[str, Any], roots: frozenset[str]
           ) -> tuple[tuple[Any, ...] | None, tuple[bool, Any] | None]:
    """(what a render (a kind "render…") or a condition (a bare expression, as
    `compile_expression` parses it: any other kind) is kept under, or None if it may not be;
    what was kept under it, or None). A text whose renders are rarely shared (a label that
    differs in every alert: keying and keeping cost a third of such a render) is rendered
    as before for a while, then tried again."""
    plan = _plans.get((env, text, kind))
    if plan is None:
        plan = _plan((env, text, kind), _chains(env, text, not kind.startswith("render"), roots))
    return _lookup(plan, (kind, env, text), context)


def lookup_all(env: Any, name: str, texts: tuple[tuple[str, bool], ...],
               also: tuple[tuple[str, tuple], ...], context: Mapping[str, Any],
               roots: frozenset[str]) -> tuple[tuple[Any, ...] | None, tuple[bool, Any] | None]:
    """`lookup` for what several texts make together (a note's severity and its templates,
    each of which built a key of its own over the same few values): kept under what any of
    them reads (`texts`: (text, is it a bare expression)), and the chains `also`. `name`
    stands for all of it (the caller's: it decides the texts and what is made of them)."""
    plan = _plans.get((env, name, "all"))
    if plan is None:
        found: dict[tuple[str, tuple], None] = dict.fromkeys(also)
        for text, expression in texts:
            chains = _chains(env, text, expression, roots)
            if chains is False:
                break
            found.update(dict.fromkeys(chains))  # type: ignore[arg-type]
        else:
            chains = tuple(found)
        plan = _plan((env, name, "all"), chains)
    return _lookup(plan, ("all", env, name), context)


def _plan(key: tuple[Any, str, str], chains: tuple[tuple[str, tuple], ...] | bool) -> list[Any]:
    if len(_plans) >= _PLANS:  # old texts, after reloads
        _plans.clear()
    plan = _plans[key] = [chains, 0, 0]
    return plan


def _lookup(plan: list[Any], head: tuple[Any, ...], context: Mapping[str, Any]
            ) -> tuple[tuple[Any, ...] | None, tuple[bool, Any] | None]:
    chains, tried, shared = plan
    if chains is False:
        return None, None
    plan[1] = tried + 1
    if tried >= _TRIAL and shared * 4 < tried:
        if tried < _TRIAL + _REST:
            return None, None
        plan[1] = plan[2] = 0
    budget = [_KEY_LEAVES, _KEY_CHARS]
    try:
        entry = (*head, *[_read(root, path, context, budget) for root, path in chains])
    except _Unkeyable:
        return None, None
    kept = get(entry)
    if kept is not None:
        plan[2] += 1
    return entry, kept


_read_by_text: dict[tuple[Any, str, bool, frozenset[str]], tuple[tuple[str, tuple], ...] | bool] = {}


def read_ahead(env: Any, text: str, expression: bool, roots: frozenset[str]) -> None:
    """Parse a text for what it reads now, before its first lookup (templating's
    `compile_ahead`: a chunk of its own)."""
    _chains(env, text, expression, roots)


def _chains(env: Any, text: str, expression: bool, roots: frozenset[str]
            ) -> tuple[tuple[str, tuple], ...] | bool:
    """`_reads`, parsed once per text: the same text is read by its own renders (explained
    or not) and by what several texts make together (a note, a step's plan), and each parse
    was a Jinja parse (a step's plan parsed every text of every step again at its first
    alert: ~0.3 G instructions of a drain's first 2 000 alerts)."""
    key = (env, text, expression, roots)
    found = _read_by_text.get(key)
    if found is None:
        if len(_read_by_text) >= _PLANS:  # old texts, after reloads
            _read_by_text.clear()
        found = _read_by_text[key] = _reads(env, text, expression, roots)
    return found


def _reads(env: Any, text: str, expression: bool, roots: frozenset[str]
           ) -> tuple[tuple[str, tuple], ...] | bool:
    """The chains of constant attributes and items a template reads from its context
    (`("labels", ((False, "namespace"),))`), or False if what it renders may not be kept."""
    from jinja2 import TemplateError, nodes  # imported already: `env` is Jinja's
    from jinja2.parser import Parser

    if any(word in text for word in _IMPURE):
        return False
    try:
        if expression:
            parser = Parser(env, text, state="variable")
            tree = nodes.Template([nodes.Output([parser.parse_expression()])])
            if not parser.stream.eos:
                return False
            tree.set_environment(env)
        else:
            tree = env.parse(text)
    except TemplateError:
        return False  # rendered as before, which says why
    # Every name it reads is a root, a pure global or one it binds itself (read before it is
    # bound, such a name is undefined: a context holds only the roots).
    names = [(n.name, n.ctx) for n in tree.find_all(nodes.Name)]
    bound = {name for name, ctx in names if ctx != "load"}
    if not {name for name, _ in names} <= roots | _PURE_GLOBALS | bound or any(True for _ in tree.find_all(
            (nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport))):
        return False
    for f in tree.find_all(nodes.Filter):
        at = _BY_NAME.get(f.name)
        if at is not None and (f.dyn_args is not None or (
                len(f.args) > at and not isinstance(f.args[at], nodes.Const))):
            return False
    found: dict[tuple[str, tuple], None] = {}

    def visit(node: nodes.Node) -> None:
        chain = _chain(node)
        if chain is not None:  # read through its root, whatever binds that name
            if chain[0] in roots:
                found[chain] = None
            return
        for child in node.iter_child_nodes():
            visit(child)

    visit(tree)
    return tuple(found)


def _chain(node: nodes.Node) -> tuple[str, tuple] | None:
    """`labels.a['b']` as ("labels", ((False, "a"), (True, "b"))); None if not such a chain."""
    from jinja2 import nodes

    path = []
    while True:
        if isinstance(node, nodes.Getattr):
            path.append((False, node.attr))
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const) \
                and type(node.arg.value) in (str, int):
            path.append((True, node.arg.value))
        elif isinstance(node, nodes.Name) and node.ctx == "load":
            return node.name, tuple(reversed(path))
        else:
            return None
        node = node.node


def _read(root: str, path: tuple, context: Mapping[str, Any], budget: list[int]) -> Any:
    """The value a chain reads, frozen, and how far down it was followed. Only plain dicts
    are followed (as the sandbox's getattr and getitem find their keys); any other value is
    kept whole, since what the template finds below it is a function of it: a string's or a
    list's items and methods, a placeholder's path, a dict's methods (`result.get`)."""
    if root not in context:
        return _UNDEFINED
    value = context[root]
    for depth, (item, name) in enumerate(path):
        if type(value) is not dict or (not item and _attribute(name)):
            return depth, _frozen(value, budget)
        if name not in value:  # undefined, unless an item's name is an attribute of it
            return depth, _frozen(value, budget) if item and _attribute(name) else _UNDEFINED
        value = value[name]
    return len(path), _frozen(value, budget)


_DICT_ATTRIBUTES = frozenset(dir(dict))


def _attribute(name: Any) -> bool:
    """Might the sandbox find this as an attribute of a dict (`items`; `_x` it refuses)?"""
    return isinstance(name, str) and (name in _DICT_ATTRIBUTES or name.startswith("_"))


def _frozen(value: Any, budget: list[int]) -> Any:
    kind = type(value)
    budget[0] -= 1
    if budget[0] < 0:
        raise _Unkeyable
    if kind is str:
        budget[1] -= _size(value)
        if budget[1] < 0:
            raise _Unkeyable
        return value  # the only bare value: every other is tagged with its type
    if kind is int or kind is bool or value is None:
        return kind, value
    if kind is float:
        return kind, repr(value)  # 0.0 and -0.0 are equal, and render apart
    if kind is dict:
        return kind, tuple((_frozen(k, budget), _frozen(v, budget)) for k, v in value.items())
    if kind is list or kind is tuple:
        return kind, tuple(_frozen(v, budget) for v in value)
    freeze = FROZEN.get(kind)
    if freeze is None:
        raise _Unkeyable
    return kind, _frozen(freeze(value), budget)


def get(entry: tuple[Any, ...]) -> tuple[bool, Any] | None:
    """(True, what it rendered) or (False, the TemplateError's message), if kept."""
    return _kept.get(entry)


def _size(text: str) -> int:
    """A string's size in bytes, at most: a character takes 4 in a string that holds one
    outside Latin-1's range (an alert's sender can fill a label with emoji)."""
    return len(text) if text.isascii() else 4 * len(text)


def put(entry: tuple[Any, ...], ok: bool, value: Any) -> None:
    """Keep what a render made (a string, or a tuple of them and of tuples of them: what
    several texts made together, `lookup_all`; a step's plan holds mappings and lists of
    them), unless it is big."""
    if _output_size(value) > _OUTPUT_CHARS:
        return
    if len(_kept) >= _ENTRIES:
        _kept.clear()
    _kept[entry] = (ok, value)


def _output_size(value: Any) -> int:
    if isinstance(value, str):
        return _size(value)
    if isinstance(value, dict):
        value = (*value, *value.values())
    return sum(_output_size(v) for v in value) if isinstance(value, tuple | list) else 0


def clear() -> None:
    _kept.clear()
    _read_by_text.clear()
