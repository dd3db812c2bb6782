"""Sandboxed templates over untrusted alert data, and validators for what they render.

Alert labels come from whoever can push to Alertmanager. Templates are rendered in an immutable,
size-bounded Jinja2 sandbox (sandbox.py) with StrictUndefined (a typo is an error, not an
empty string), their output is bounded, and a
rendered value that names a Kubernetes object, an S3 key or an env var must pass the
validator of its kind, so `deployment: "{{ labels.deployment }}"` can never become
`../kube-system/x` or `a,b` (validators.py). Label values are data: their own `{{ }}` is
never re-rendered.
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from .. import markdown_text, turns
from . import memo as template_memo

if TYPE_CHECKING:
    from jinja2 import nodes

    from .sandbox import BoundedSandbox

# The only names a template may use; lint rejects anything else.
ROOTS = frozenset({"labels", "annotations", "alert", "group", "steps", "playbook", "target"})


class TemplateError(ValueError):
    """A template that does not compile, uses an unknown name, or renders an invalid value."""


# Marks a value that only exists at run time (an earlier step's result, in dry-run).
PENDING = "\u27e8"
# What follows the placeholder in the error it raises when a value must be known (the engine
# tells a plan's placeholders from other failures by it: kept renders replay errors as text).
ONLY_AT_RUN_TIME = " is only known at run time"


def only_placeholder(text: str) -> bool:
    """Whether a text rendered in a plan is one placeholder and nothing else: what a template
    branching on an earlier result (`{% if steps.x.outcome ... %}`) stands as."""
    text = text.strip()
    return text.startswith(PENDING) and text.endswith("\u27e9") and text.count(PENDING) == 1


# What Jinja's sandbox reads of a callable before it calls it: a placeholder answers with
# itself, which refuses to be true or false, so the call stops there as one on a result.
_CALL_PROBES = frozenset({"unsafe_callable", "alters_data"})


class Pending:
    """Stands for a result not known in dry-run: renders as its path, refuses comparisons."""

    def __init__(self, path: str):
        self._path = path

    def __getattr__(self, name: str) -> Pending:
        if name in _CALL_PROBES:  # the sandbox asking before a call (`.get('status')`)
            return Pending(f"{self._path}(…)")
        return Pending(f"{self._path}.{name}")

    def __getitem__(self, key: Any) -> Pending:
        return Pending(f"{self._path}[{key!r}]")

    def __str__(self) -> str:
        return f"{PENDING}{self._path}\u27e9"

    def _unknown(self, *_: Any) -> bool:
        raise TemplateError(f"{self}{ONLY_AT_RUN_TIME}")

    __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = __bool__ = _unknown  # type: ignore
    __hash__ = None  # type: ignore[assignment]


template_memo.FROZEN[Pending] = lambda pending: pending._path  # all a placeholder holds


def _percent_encode(value: Any) -> str:
    """Every `{{ }}` in a URL is data: '/', '?', '#', '@', ':' are encoded, so a label cannot
    leave its path segment or query value (`../admin`, `x?y=1`, `@evil.example`), nor be
    empty: `DELETE /users/{{ labels.user }}` with an empty label is `DELETE /users/`, the
    collection, and `?user=` often matches every user."""
    if isinstance(value, Pending):
        return str(value)
    encoded = quote(str(value), safe="")
    if encoded in ("", ".", ".."):  # a segment gone, or a dot segment climbing the path
        raise TemplateError(f"{encoded!r} cannot be a value in a URL")
    return encoded


# Roots whose values come from the alert's sender, and the filters that make them safe in PromQL
# (promql.py), by where the `{{ }}` stands: in a string (its quote), in a `#` comment, or ""
# outside both. `promql_str` escapes for double quotes only; the others refuse any value
# that is not one number, name or duration, which then holds no quote, space or newline.
UNTRUSTED_ROOTS = frozenset({"labels", "annotations", "group", "alert"})
# And what others answered or labels made: an earlier step's result (log lines, a query's
# series labels, an HTTP body) and the target (named by labels: `a-b` outside a string is
# a subtraction). None of them may reach a query unchecked either.
_PROMQL_TAINTED = UNTRUSTED_ROOTS | {"steps", "target"}
_PROMQL_CHECKED = frozenset({"promql_name", "promql_duration", "int", "float"})
_PROMQL_SAFE = {'"': _PROMQL_CHECKED | {"promql_str"}}
# The literal start of a URL template must reach past its authority (scheme, host, port).
_LITERAL_AUTHORITY = re.compile(r"https?://[^/?#\s{}]+[/?#]", re.ASCII)


_REGEX_META = re.compile(r"([\\.+*?()|\[\]{}^$])")


def re_escape(value: Any) -> str:
    """`grep: "{{ labels.tenant | re_escape }}"`: an alert's value matched literally (its RE2
    metacharacters backslashed; `acme-corp` stays readable)."""
    return _REGEX_META.sub(r"\\\1", str(value))


@functools.cache
def _sandboxes() -> tuple[BoundedSandbox, BoundedSandbox, BoundedSandbox]:
    """The sandbox templates render in, the one URLs render in, and the one an escalation
    note's templates render in (every `{{ }}` escaped as Markdown text: a label's value is
    text in the note, the template's own Markdown stays markup). Made (and Jinja2
    imported: ~30 ms, a twentieth of `serve`'s start-up) when a template is first compiled:
    a start whose rule files are all in the parse cache compiles none before its first
    alert, which pays it once."""
    from jinja2 import StrictUndefined

    from .sandbox import BoundedSandbox

    env = BoundedSandbox(undefined=StrictUndefined, autoescape=False,
                         keep_trailing_newline=False)
    url_env = BoundedSandbox(undefined=StrictUndefined, autoescape=False,
                             keep_trailing_newline=False, finalize=_percent_encode)
    note_env = BoundedSandbox(undefined=StrictUndefined, autoescape=False,
                              keep_trailing_newline=False, finalize=markdown_text.text)
    from .promql import promql_duration, promql_name, promql_str

    for sandbox in (env, url_env, note_env):  # the same filters everywhere (lint checks them)
        sandbox.filters.update(promql_str=promql_str, promql_name=promql_name,
                               promql_duration=promql_duration, re_escape=re_escape)
    return env, url_env, note_env


def is_template(text: str) -> bool:
    return "{{" in text or "{%" in text


# What lint and load learn from a template's text (its names, its PromQL splices) is computed
# once per text: a rule set repeats the same few templates in every playbook, and parsing
# them was most of loading 1 000 files. Bounded (reloads bring new texts); playbook text only.
_CACHE = 4096


def compile_check(text: str) -> frozenset[str]:
    """Compile a template; return the root names it reads. Raises TemplateError."""
    roots, error = _analyse(text)
    if error:
        raise TemplateError(error)
    return roots


@functools.lru_cache(maxsize=_CACHE)
def _analyse(text: str) -> tuple[frozenset[str], str]:
    """(root names, "") or (empty, the error), for compile_check."""
    from jinja2 import TemplateSyntaxError, nodes

    env = _sandboxes()[0]
    try:
        ast = env.parse(text)
    except TemplateSyntaxError as exc:
        return frozenset(), f"template syntax error: {exc.message}"
    # Jinja defers an unknown filter or test inside {% if %} to run time: find them all now.
    unknown = sorted({f"filter {n.name!r}" for n in ast.find_all(nodes.Filter)
                      if n.name not in env.filters}
                     | {f"test {n.name!r}" for n in ast.find_all(nodes.Test)
                        if n.name not in env.tests})
    if unknown:
        return frozenset(), f"template uses unknown {', '.join(unknown)}"
    assigned = {n.name for n in ast.find_all(nodes.Name) if n.ctx in ("store", "param")}
    return frozenset({n.name for n in ast.find_all(nodes.Name) if n.ctx == "load"} - assigned), ""


def unescaped_promql(text: str) -> list[str]:
    """What to say of each `{{ }}` in a PromQL template that splices an alert's value
    unescaped, or unchecked for where it stands (all errors: the rule set is refused)."""
    return list(_unescaped_promql(text))


# Why a splice is refused, by where it stands (_quote_state), and what to write instead.
_FIX = ('write it as "{{ ... | promql_str }}" inside double quotes, or outside a string '
        "through a filter that checks it: | promql_name (a metric or label name), "
        "| promql_duration (a duration such as 5m), | int or | float (a number)")
_WHERE = {
    '"': ("inside a string", "a label such as `\"} or vector(1)` can rewrite the query"),
    "'": ("inside a single-quoted string", "promql_str does not escape `'`, so a label such "
          "as `'} or vector(1)` can rewrite the query"),
    "`": ("inside a backtick string", "nothing can be escaped there (promql_str's escapes "
          "stay literal), so a label such as `` `} or vector(1)`` can rewrite the query"),
    "#": ("in a comment", "a line break in a label ends the comment and what follows is "
          "query"),
    "": ("outside a string", "a label such as `x) or vector(1) or (y` can rewrite the "
         "query (a metric name, a range, a number: nothing escapes it there)"),
}


@functools.lru_cache(maxsize=_CACHE)
def _unescaped_promql(text: str) -> tuple[str, ...]:
    from jinja2 import TemplateSyntaxError

    untrusted = _tainted(text)
    problems: list[str] = []
    state, splice = "", None  # where the output stands; the `{{ }}` being read (raw tokens)
    try:
        # Jinja's own lexer: a `}}` or `%}` inside a template's string literal ends nothing
        # (a regex took `{% if x == "%}" %}` to end at its string, and its `"` to open one).
        for _, token, value in _sandboxes()[0].lexer.tokeniter(text, None):
            if token == "data":  # the template's own text, a {% raw %} block's included
                state = _quote_state(value, state)
            elif token == "variable_begin":
                splice = [value]
            elif splice is not None:
                splice.append(value)
                if token == "variable_end":
                    if problem := _splice_problem("".join(splice), state, untrusted):
                        problems.append(problem)
                    splice = None
    except TemplateSyntaxError:
        return ()  # reported as a template error elsewhere
    return tuple(problems)


def _splice_problem(splice: str, state: str, untrusted: set[str]) -> str | None:
    """What to say of one `{{ }}` standing at `state` (_quote_state), or None if it is safe."""
    from jinja2 import TemplateSyntaxError, nodes

    try:
        expr = _sandboxes()[0].parse(splice).body[0].nodes[0]  # type: ignore[attr-defined]
    except (TemplateSyntaxError, AttributeError, IndexError):
        return None  # reported as a template error elsewhere
    reads = {n.name for n in expr.find_all(nodes.Name)} | (
        {expr.name} if isinstance(expr, nodes.Name) else set())
    # The last filter decides, if its own arguments read nothing of the alert's:
    # `labels.n | int(labels.m)` is `labels.m` whenever `labels.n` is not a number.
    safe = isinstance(expr, nodes.Filter) and \
        expr.name in _PROMQL_SAFE.get(state, _PROMQL_CHECKED) and not any(
            _names(arg) & untrusted for arg in (*expr.args, *(k.value for k in expr.kwargs),
                                                expr.dyn_args, expr.dyn_kwargs) if arg)
    if not reads & untrusted or safe:
        return None
    where, why = _WHERE[state]
    return (f"{splice.strip()} splices an alert's value into PromQL {where} unescaped: {why}; "
            f"{_FIX}")


def _tainted(text: str) -> set[str]:
    """_PROMQL_TAINTED, and every name the template binds from them (`{% set %}`, a `set`
    block, `{% for %}`, `{% with %}`, transitively): `{% set ns = labels.namespace %}` and
    then `{{ ns }}` splices the label all the same."""
    from jinja2 import TemplateSyntaxError, nodes

    tainted = set(_PROMQL_TAINTED)
    try:
        tree = _sandboxes()[0].parse(text)
    except TemplateSyntaxError:
        return tainted  # reported as a template error elsewhere
    bindings: list[tuple[set[str], set[str]]] = []  # (names bound, names read)
    for node in tree.find_all((nodes.Assign, nodes.AssignBlock, nodes.For, nodes.With)):
        if isinstance(node, nodes.With):
            bindings.extend((_names(t), _names(v)) for t, v in zip(node.targets, node.values,
                                                                   strict=False))
        else:
            read = node.iter if isinstance(node, nodes.For) else \
                nodes.Output(node.body) if isinstance(node, nodes.AssignBlock) else node.node
            bindings.append((_names(node.target), _names(read)))
    grown = True
    while grown:
        grown = False
        for bound, read in bindings:
            if read & tainted and not bound <= tainted:
                tainted |= bound
                grown = True
    return tainted


def _names(node: nodes.Node) -> set[str]:
    """The variable names in an expression or assignment target (`ns.x` binds `ns`)."""
    from jinja2 import nodes

    found = {n.name for n in node.find_all((nodes.Name, nodes.NSRef))}
    return found | ({node.name} if isinstance(node, nodes.Name | nodes.NSRef) else set())


def _quote_state(literal: str, state: str) -> str:
    """Where the end of `literal` stands in PromQL: in a string (its quote character), in a
    `#` comment ("#", to the end of its line), or "" outside both. A backslash escapes in
    '...' and "..." only: a backtick string is raw."""
    escaped = False
    for ch in literal:
        if state == "#":
            state = "" if ch == "\n" else state
        elif state and escaped:
            escaped = False
        elif state and ch == "\\" and state != "`":
            escaped = True
        elif ch == state:
            state = ""
        elif not state and ch in "\"'`#":
            state = ch
    return state


def templated_authority(text: str) -> bool:
    """Could a template choose this URL's scheme, host or port? (Only its path and query may
    be templated, unless the step lists the hosts it may reach.)"""
    starts = [i for i in (text.find("{{"), text.find("{%")) if i >= 0]
    return bool(starts) and not _LITERAL_AUTHORITY.match(text[:min(starts)])


def render_url(text: str, context: dict[str, Any]) -> str:
    """Render a URL template: every interpolated value is percent-encoded."""
    return render(text, context, _sandboxes()[1])


def render_markdown(text: str, context: dict[str, Any]) -> str:
    """Render a note's template (Markdown): every interpolated value escaped as text; a
    failure not explained (the note shows the template instead)."""
    return render(text, context, _sandboxes()[2], explain=False)


def render(text: str, context: dict[str, Any], env: BoundedSandbox | None = None,
           explain: bool = True) -> str:
    """Render one string template in the sandbox. Unless `explain`, a failure's TemplateError
    does not say why (for a caller that shows the text instead: a note's template)."""
    if not is_template(text):
        return text
    env = env or _sandboxes()[0]
    # Kept (memo.py): results and the template's own errors (a result only known at
    # run time), never an error that describes the context (an undefined label lists the
    # alert's labels), unless it is not explained: that a render fails is a function of the
    # values it read, as what it renders is (a note's template reading a label its alert
    # lacks failed in Jinja, and was explained, at every note).
    entry, kept = template_memo.lookup(env, text, "render" if explain else "render, unexplained",
                                       context, ROOTS)
    if kept is not None:
        return _replayed(kept)
    try:
        rendered = _bounded_render(env, text, context)
    except TemplateError as exc:  # the template's own (a result only known at run time)
        if entry is not None:
            template_memo.put(entry, False, str(exc))
        raise
    except Exception as exc:  # a template must never crash the pipeline
        raise _render_failure(exc, text, context, explain, entry) from None
    if entry is not None:
        template_memo.put(entry, True, rendered)
    return rendered


def _render_failure(exc: Exception, text: str, context: dict[str, Any], explain: bool,
                    entry: tuple[Any, ...] | None) -> TemplateError:
    """What `render` raises for an exception of Jinja's (kept, unless it describes the
    context), or any other."""
    from jinja2 import TemplateSyntaxError, UndefinedError
    from jinja2.sandbox import SecurityError

    if not isinstance(exc, UndefinedError | SecurityError | TemplateSyntaxError):
        return TemplateError(f"template {text!r} failed: {type(exc).__name__}: {exc}")
    if not explain:
        if entry is not None:
            template_memo.put(entry, False, _failed(text))
        return TemplateError(_failed(text))
    if isinstance(exc, UndefinedError):
        return TemplateError(f"undefined in template {text!r}: {_undefined(exc, text, context)}")
    if isinstance(exc, SecurityError):
        return TemplateError(f"template {text!r} refused by the sandbox: {exc}")
    return TemplateError(f"template syntax error in {text!r}: {exc.message}")


def lookup_together(name: str, texts: tuple[tuple[str, bool], ...],
                    also: tuple[tuple[str, tuple], ...], context: Mapping[str, Any]
                    ) -> tuple[tuple[Any, ...] | None, tuple[bool, Any] | None]:
    """(key, kept) of what several texts (templates, or bare expressions: (text, True))
    make together over `context`, for a caller whose result is a function of the values
    they read and the chains `also`, and of nothing else `name` does not stand for (a
    note: template_memo.lookup_all). Keep a result with `template_memo.put(key, True, it)`."""
    return template_memo.lookup_all(_sandboxes()[0], name, texts, also, context, ROOTS)


def _failed(text: str) -> str:
    return f"template {text!r} failed"


def _replayed(kept: tuple[bool, Any]) -> Any:
    if kept[0]:
        return kept[1]
    raise TemplateError(kept[1])


_MISSING = re.compile(r"has no attribute '([A-Za-z_][A-Za-z0-9_]*)'")


def _undefined(exc: Exception, text: str, context: dict[str, Any]) -> str:
    """Jinja's "'dict object' has no attribute 'pod'", said as what is missing: the alert's
    label, and the labels it does have (their names only)."""
    found = _MISSING.search(getattr(exc, "message", None) or "")
    labels = context.get("labels")
    if found and isinstance(labels, dict) and found.group(1) not in labels:
        name = re.escape(found.group(1))
        if re.search(rf"labels\s*(\.\s*{name}\b|\[\s*['\"]{name}['\"])", text):
            return (f"alert has no label {found.group(1)!r} "
                    f"(labels: {', '.join(sorted(labels)) or 'none'})")
    return str(getattr(exc, "message", None))


# Compiled once per text: Jinja's `from_string` and `compile_expression` compile on every call
# (no cache), and compiling was a third of a storm's processing. The texts are the playbooks'
# (labels are data, never compiled), so the set is small; the bound covers reloads.
_COMPILED_MAX = 4096


@functools.lru_cache(maxsize=_COMPILED_MAX)
def _template(env: BoundedSandbox, text: str) -> Any:
    _compiled(env, text)
    return env.from_string(text)


@functools.lru_cache(maxsize=_COMPILED_MAX)
def _expression(expression: str) -> Any:
    _compiled(None, expression)
    return _sandboxes()[0].compile_expression(expression, undefined_to_none=False)


# What has been compiled (environment, or None for a condition; text): asked by `compile_ahead`
# only, so a cache hit costs nothing more. Cleared past its bound: a text evicted from the
# caches above meanwhile is only compiled within a longer chunk, as before.
_COMPILED: set[tuple[Any, str]] = set()


def _compiled(env: BoundedSandbox | None, text: str) -> None:
    if len(_COMPILED) >= 2 * _COMPILED_MAX:
        _COMPILED.clear()
    _COMPILED.add((env, text))


async def compile_ahead(texts: Iterable[str], conditions: Iterable[str] = (),
                        urls: Iterable[str] = (), notes: Iterable[str] = ()) -> None:
    """Compile the templates (and `when` conditions, templates rendered into URLs, and a
    note's templates) not compiled yet, and parse them for what they read (memo.py),
    each in a processing chunk of its own once the chunk has run for `turns.SLICE`:
    compiling is 1-5 ms a text,
    parsing 0.3-1, and a playbook's first plan or note did all of it for all of its texts
    in one chunk (up to 27 ms in a storm's first seconds, while every webhook in flight
    waited). A text that does not compile is left for its render to report, as it does."""
    env, url_env, note_env = _sandboxes()
    done = False
    for kind, items in ((env, texts), (None, conditions), (url_env, urls), (note_env, notes)):
        for text in items:
            if (kind, text) in _COMPILED or (kind is not None and not is_template(text)):
                continue
            for step in (_compile_step, _read_step):
                if not turns.held():
                    await turns.take()
                with contextlib.suppress(Exception):
                    step(kind, text)
            done = True
    if done and not turns.held():  # what follows (the first plan or note) is a chunk too
        await turns.take()


def _compile_step(env: BoundedSandbox | None, text: str) -> None:
    if env is None:
        _expression(text)
    else:
        _template(env, text)


def _read_step(env: BoundedSandbox | None, text: str) -> None:
    # Read as a plan's or a note's key reads it (`lookup_together`: the first sandbox)
    template_memo.read_ahead(_sandboxes()[0], text, env is None, ROOTS)


def _bounded_render(env: BoundedSandbox, text: str, context: dict[str, Any]) -> str:
    """Render, stopping as soon as the output passes its size limit (a loop cannot fill memory)."""
    parts, size, limit = [], 0, env.max_size
    for part in _template(env, text).generate(context):
        size += len(part)
        if size > limit:
            raise TemplateError(f"template {text[:80]!r} renders more than {limit} characters")
        parts.append(part)
    return "".join(parts)


def render_value(value: Any, context: dict[str, Any]) -> Any:
    """Render templates inside strings, lists and mappings, keeping other types as they are."""
    if isinstance(value, str):
        return render(value, context)
    if isinstance(value, list):
        return [render_value(v, context) for v in value]
    if isinstance(value, dict):
        return {k: render_value(v, context) for k, v in value.items()}
    return value


def evaluate(expression: str, context: dict[str, Any], explain: bool = True) -> bool:
    """Evaluate a `when:` condition (a bare Jinja expression) to a boolean. Unless `explain`,
    a failure's TemplateError does not say why (for a caller that will not show it: saying
    why was half of a failing condition's cost)."""
    entry, kept = template_memo.lookup(_sandboxes()[0], expression,
                                       "when" if explain else "when, unexplained", context, ROOTS)
    if kept is not None:
        return _replayed(kept)
    try:
        holds = bool(_expression(expression)(**context))
    except TemplateError as exc:
        if entry is not None:
            template_memo.put(entry, False, str(exc))
        raise
    except Exception as exc:
        if not explain:
            if entry is not None:
                template_memo.put(entry, False, f"condition {expression!r} failed")
            raise TemplateError(f"condition {expression!r} failed") from None
        raise _explained(exc, expression, context) from None
    if entry is not None:
        template_memo.put(entry, True, holds)
    return holds


def _explained(exc: Exception, expression: str, context: dict[str, Any]) -> TemplateError:
    from jinja2 import TemplateSyntaxError, UndefinedError

    if isinstance(exc, UndefinedError):
        return TemplateError(f"undefined in condition {expression!r}: "
                             f"{_undefined(exc, expression, context)}")
    if isinstance(exc, TemplateSyntaxError):
        return TemplateError(f"condition syntax error in {expression!r}: {exc.message}")
    return TemplateError(f"condition {expression!r} failed: {type(exc).__name__}: {exc}")
