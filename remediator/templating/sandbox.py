"""The Jinja2 sandbox templates run in: immutable, and bounded in what one expression may build.

Templates render on the event loop over label values of up to 8 KiB. The stock sandbox stops
attribute escapes, but `'%300000000d' % 1` built a 300 MB string in 4.4 s, `s * 10**9` or a
chain of `replace` can do the same, and `labels.clear()` changed the decision a note was
written from. Here containers are read-only (ImmutableSandboxedEnvironment), and every
operation that can make a value much larger than its inputs (`*`, `+`, `**`, `%`-formatting,
`str.format`, padding, `replace`, `indent`) checks the size of its result *before* building
it, failing fast with a SecurityError that says which limit was hit.
"""

from __future__ import annotations

import operator
import re
import string
import sys
from collections.abc import Callable, Sized
from typing import Any, NoReturn

from jinja2 import TemplateSyntaxError, filters
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

MAX_SIZE = 1 << 20  # characters of a string (or items of a list) built inside a template
MAX_WIDTH = 10_000  # a format width or precision, a padding width
MAX_RANGE = 10_000  # items of range()
MAX_POWER_BITS = 1 << 16  # bits of an integer `**` result

# A %-conversion: its width and precision (either may be `*`, taken from the arguments).
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d*))?")


def _refuse(message: str) -> SecurityError:
    return SecurityError(f"{message} (limits: {MAX_SIZE} characters, width {MAX_WIDTH})")


def _check_size(size: int, what: str) -> None:
    if size > MAX_SIZE:
        raise _refuse(f"{what} would build {size} items")


def _check_width(width: Any, what: str) -> None:
    if not isinstance(width, int) or width > MAX_WIDTH:
        raise _refuse(f"{what} width {width!r} is not an integer up to {MAX_WIDTH}")


def check_percent_format(fmt: str) -> None:
    """Refuse `%`-formatting whose widths or precisions are `*` or above MAX_WIDTH."""
    for width, precision in _PERCENT_SPEC.findall(fmt):
        for number in (width, precision):
            if number == "*" or (number and int(number) > MAX_WIDTH):
                raise _refuse(f"format {fmt[:40]!r}: width or precision {number} refused")


def check_brace_format(fmt: str) -> None:
    """The same for `str.format`: every number in a format spec; no nested `{}` in a spec."""
    try:
        fields = list(string.Formatter().parse(fmt))
    except ValueError as exc:
        raise _refuse(f"format {fmt[:40]!r}: {exc}") from None
    for _, _, spec, _ in fields:
        if spec and ("{" in spec or any(int(n) > MAX_WIDTH for n in re.findall(r"\d+", spec))):
            raise _refuse(f"format {fmt[:40]!r}: spec {spec[:40]!r} refused")


def _times(left: Any, right: Any) -> Any:
    for seq, count in ((left, right), (right, left)):
        if isinstance(seq, str | list | tuple) and isinstance(count, int):
            _check_size(len(seq) * max(count, 0), "multiplication")
    if isinstance(left, int) and isinstance(right, int) and \
            left.bit_length() + right.bit_length() > MAX_POWER_BITS:
        raise _refuse(f"a product of more than {MAX_POWER_BITS} bits")
    return operator.mul(left, right)


def _plus(left: Any, right: Any) -> Any:
    if isinstance(left, Sized) and isinstance(right, Sized):
        _check_size(len(left) + len(right), "concatenation")
    return operator.add(left, right)


def _power(left: Any, right: Any) -> Any:
    if isinstance(left, int) and isinstance(right, int) and right * left.bit_length() > \
            MAX_POWER_BITS:
        raise _refuse(f"{left} ** {right} would exceed {MAX_POWER_BITS} bits")
    return operator.pow(left, right)


def _modulo(left: Any, right: Any) -> Any:
    if isinstance(left, str):
        check_percent_format(left)
    return operator.mod(left, right)


def _replaced_size(s: str, old: str, new: str, count: int | None = None) -> int:
    hits = s.count(old) if old else len(s) + 1
    if count is not None and count >= 0:
        hits = min(hits, count)
    return len(s) + hits * (len(new) - len(old))


def _bounded_str_method(value: str, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        if name in ("center", "ljust", "rjust", "zfill") and args:
            _check_width(args[0], name)
        elif name == "expandtabs":
            tab = args[0] if args else kwargs.get("tabsize", 8)
            _check_width(tab, name)
            _check_size(len(value) + value.count("\t") * max(tab, 0), name)
        elif name == "replace" and len(args) >= 2:
            _check_size(_replaced_size(value, str(args[0]), str(args[1]), *args[2:3]), name)
        elif name in ("format", "format_map"):
            check_brace_format(value)
        return method(*args, **kwargs)

    return call


_STR_METHODS = ("center", "ljust", "rjust", "zfill", "expandtabs", "replace", "format",
                "format_map")


def _filter_replace(eval_ctx: Any, s: Any, old: Any, new: Any, count: int | None = None) -> str:
    _check_size(_replaced_size(str(s), str(old), str(new), count), "replace")
    return filters.do_replace(eval_ctx, s, old, new, count)


_filter_replace.jinja_pass_arg = filters.do_replace.jinja_pass_arg  # type: ignore[attr-defined]


def _filter_center(value: Any, width: int = 80) -> str:
    _check_width(width, "center")
    return filters.do_center(value, width)


def _filter_indent(s: Any, width: int | str = 4, first: bool = False, blank: bool = False) -> str:
    if not isinstance(width, str):
        _check_width(width, "indent")
    pad = len(width) if isinstance(width, str) else width
    _check_size(len(str(s)) + (str(s).count("\n") + 1) * pad, "indent")
    return filters.do_indent(s, width, first, blank)


def _filter_format(value: Any, *args: Any, **kwargs: Any) -> str:
    check_percent_format(str(value))
    return filters.do_format(value, *args, **kwargs)


def _range(*args: int) -> range:
    numbers = range(*args)
    if len(numbers) > MAX_RANGE:
        raise _refuse(f"range of {len(numbers)} items exceeds {MAX_RANGE}")
    return numbers


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """ImmutableSandboxedEnvironment whose value-growing operations check sizes first."""

    intercepted_binops = frozenset({"*", "+", "**", "%"})
    max_size = MAX_SIZE  # what a whole render may output (templating._bounded_render)

    def __init__(self, **options: Any):
        super().__init__(**options)
        self.binop_table.update({"*": _times, "+": _plus, "**": _power, "%": _modulo})
        self.filters.update(replace=_filter_replace, center=_filter_center, indent=_filter_indent,
                            format=_filter_format)
        self.globals["range"] = _range

    def from_string(self, source: Any, globals: Any = None, template_class: Any = None) -> Any:
        template = super().from_string(source, globals, template_class)
        # Jinja chains a template's globals over the environment's and merges the chain on
        # every render, in Python (twice: the context's variables, its global names); these
        # are set once, above, so one merged copy is the same and renders twice as fast.
        template.globals = dict(template.globals)
        return template

    def handle_exception(self, source: str | None = None) -> NoReturn:
        """An error raised while rendering keeps its own traceback. Jinja rewrites it to
        point into the template, compiling a fake frame for each of the template's frames
        (~100 us an error; a dry run's plan and notes meet errors routinely: a condition
        on a result not known yet), and nothing shows it: callers keep the message
        (templating.TemplateError). A syntax error is still translated (its source)."""
        error = sys.exc_info()[1]
        if error is None or isinstance(error, TemplateSyntaxError):
            super().handle_exception(source)
        raise error

    def getattr(self, obj: Any, attribute: str) -> Any:
        return self._bounded(obj, attribute, super().getattr(obj, attribute))

    def getitem(self, obj: Any, argument: Any) -> Any:
        return self._bounded(obj, argument, super().getitem(obj, argument))

    @staticmethod
    def _bounded(obj: Any, name: Any, value: Any) -> Any:
        if isinstance(obj, str) and name in _STR_METHODS and callable(value):
            return _bounded_str_method(obj, name, value)
        return value
