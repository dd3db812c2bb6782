"""YAML loading that remembers where every node came from, and the Problem type.

Lint must point at `file:line:col` of the offending node, so documents are composed into
nodes and converted by hand, recording each path's position on the way. Composing is done
by libyaml when PyYAML has it (ten times faster than the pure-Python parser, which is what
keeps `lint` of a thousand files under two seconds); the conversion is ours either way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

Path = tuple[str | int, ...]
Finding = tuple[Path, str, str]  # a problem not yet located in its file: path, severity, message

# libyaml's composer keeps the marks we need; fall back to the Python one without it.
_BASE: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_RESOLVED: dict[str, str] = {}  # plain scalar text -> its implicit tag


class _Loader(_BASE):  # type: ignore[misc,valid-type]
    """Resolving a plain scalar's implicit type (int, bool, null...) runs PyYAML's regexes in
    Python for every scalar, even under libyaml; the tag depends on the text alone, and
    playbooks repeat the same keys and values, so it is looked up once per text."""

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        if kind is not yaml.ScalarNode or not implicit[0]:
            return super().resolve(kind, value, implicit)
        tag = _RESOLVED.get(value)
        if tag is None:
            tag = super().resolve(kind, value, implicit)
            if len(value) <= 64 and len(_RESOLVED) < 65536:  # bounded: reloads, odd files
                _RESOLVED[value] = tag
        return tag


_LOADER: Any = _Loader
# Alias expansion can turn a small file into a huge tree ("billion laughs"); a playbook
# file never needs anywhere near this many nodes.
MAX_NODES = 200_000
# Nor this deep (no YAML in this repository nests past 13); an alias inside its own node nests
# forever, and each level is a few frames of the converter's recursion.
MAX_DEPTH = 64


@dataclass(frozen=True, order=True)
class Problem:
    """A finding located at `file:line:col` (errors refuse the rule set)."""

    file: str
    line: int
    col: int
    severity: str  # "error" | "warning" | "info"
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: {self.severity}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "col": self.col,
                "severity": self.severity, "message": self.message}


def packed_positions(positions: dict[str, int]) -> str:
    """`Source.positions` as one string, which costs the parse cache one object per file."""
    return "".join(f"\n{key}\t{at}" for key, at in positions.items()) + "\n"


def position_key(path: Path) -> str:
    """A path as the key of `Source.positions`: a string, so that positions are plain JSON
    (playbooks/parse_cache.py) and cost no tuple per node. (A key holding these separators
    could share a path with another; that would only misplace a problem's line.)"""
    return "".join(f"\x1e{p}" if isinstance(p, int) else f"\x1f{p}" for p in path)


@dataclass
class Source:
    """One parsed YAML file: its data and the (line, col) of every path in it.

    A mapping entry's position is its key's (`rate_limit:`), not its value's: that is the
    line a reader looks for, and for block values the value starts a line later.
    """

    file: str
    data: Any
    # position_key -> line << 32 | col; or, from the parse cache, the same as one string
    # ("\n" key "\t" position, ...), searched only when a problem is located.
    positions: dict[str, int] | str = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)  # found while loading (duplicate keys)

    def has(self, path: Path) -> bool:
        return self._position(position_key(path)) is not None

    def where(self, path: Path) -> tuple[int, int]:
        # Fall back to the nearest ancestor that has a position.
        while True:
            found = self._position(position_key(path))
            if found is not None:
                return found >> 32, found & 0xFFFFFFFF
            if not path:
                return 1, 1
            path = path[:-1]

    def _position(self, key: str) -> int | None:
        if isinstance(self.positions, dict):
            return self.positions.get(key)
        at = self.positions.find(f"\n{key}\t")
        if at < 0:
            return None
        start = at + len(key) + 2
        return int(self.positions[start:self.positions.find("\n", start)])

    def problem(self, path: Path, severity: str, message: str) -> Problem:
        line, col = self.where(path)
        return Problem(self.file, line, col, severity, message)


class SourceError(ValueError):
    def __init__(self, problem: Problem):
        super().__init__(str(problem))
        self.problem = problem


def load_source(file: str, text: str) -> Source:
    """Parse YAML text; raise SourceError with the location of a syntax error."""
    try:
        node = yaml.compose(text, Loader=_LOADER)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        context = ""
        if exc.context and exc.context_mark:  # where the unfinished construct began
            context = (f" ({exc.context} started at line {exc.context_mark.line + 1}, "
                       f"column {exc.context_mark.column + 1})")
        raise SourceError(Problem(file, line, col, "error",
                                  f"YAML syntax: {exc.problem}{context}")) from None
    except yaml.YAMLError as exc:
        raise SourceError(Problem(file, 1, 1, "error", f"YAML: {exc}")) from None
    source = Source(file=file, data=None)
    if node is not None:
        source.data = _Converter(source, merges="<<" in text).convert(node, (), "", node)
    return source


class _Converter:
    def __init__(self, source: Source, merges: bool):
        self.source = source
        self.merges = merges  # only a file that mentions `<<` can have merge keys
        self.count = 0
        self.merged: dict[int, int] = {}

    def convert(self, node: yaml.Node, path: Path, key: str, at: yaml.Node) -> Any:
        """Build plain data from `node` at `path` (`key`: its position_key), recording `at`
        (the key, for mapping values)."""
        self.count += 1
        if self.count > MAX_NODES:
            raise SourceError(self._problem(node, f"more than {MAX_NODES} YAML nodes "
                                                  "(alias expansion?)"))
        if len(path) > MAX_DEPTH:  # before Python's recursion limit, however deep the YAML
            raise SourceError(self._problem(node, f"nested deeper than {MAX_DEPTH} levels "
                                                  "(an alias inside itself?)"))
        self.source.positions[key] = (at.start_mark.line + 1) << 32 | (at.start_mark.column + 1)
        if isinstance(node, yaml.MappingNode):
            result: dict[str, Any] = {}
            merged = self._flatten(node)  # merged entries come first; own keys override them
            seen: set[str] = set()
            for index, (key_node, value_node) in enumerate(node.value):
                name = str(self._scalar(key_node))
                if index >= merged and name in seen:
                    first = self.source.where((*path, name))
                    self.source.problems.append(self._problem(
                        key_node, f"duplicate key {name!r} (first at line {first[0]}); "
                                  "YAML keeps only the last one"))
                if index >= merged:
                    seen.add(name)
                result[name] = self.convert(value_node, (*path, name), f"{key}\x1f{name}",
                                            key_node)
            return result
        if isinstance(node, yaml.SequenceNode):
            return [self.convert(item, (*path, i), f"{key}\x1e{i}", item)
                    for i, item in enumerate(node.value)]
        return self._scalar(node)

    def _flatten(self, node: yaml.MappingNode) -> int:
        """Apply `<<: *defaults` merge keys as safe_load does; return how many were merged."""
        if not self.merges:
            return 0
        if id(node) not in self.merged:  # an aliased mapping is flattened once
            own = sum(1 for k, _ in node.value if k.tag != _MERGE)
            try:
                _SCALARS.flatten_mapping(node)
            except yaml.MarkedYAMLError as exc:
                raise SourceError(self._problem(node, f"YAML merge: {exc.problem}")) from None
            self.merged[id(node)] = len(node.value) - own
        return self.merged[id(node)]

    def _scalar(self, node: yaml.Node) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            raise SourceError(self._problem(node, "a mapping key must be a plain value"))
        if node.tag == _STR:
            return node.value
        constructor = _CONSTRUCTORS.get(node.tag)
        if constructor is None:
            raise SourceError(self._problem(node, f"unsupported YAML tag {node.tag!r}"))
        # Calling the constructor directly (not construct_object) keeps nothing cached
        # between files, so repeated reloads do not grow memory.
        return constructor(_SCALARS, node)

    def _problem(self, node: yaml.Node, message: str) -> Problem:
        mark = node.start_mark
        return Problem(self.source.file, mark.line + 1, mark.column + 1, "error", message)


_MERGE = "tag:yaml.org,2002:merge"
_STR = "tag:yaml.org,2002:str"
# Scalar constructors resolve YAML's implicit types (ints, bools, nulls) like safe_load.
_SCALARS = yaml.SafeLoader("")
_CONSTRUCTORS = {tag: fn for tag, fn in yaml.SafeLoader.yaml_constructors.items()
                 if tag and tag.startswith("tag:yaml.org,2002:")
                 and tag.rsplit(":", 1)[1] not in ("map", "seq", "omap", "pairs", "set")}
