"""YAML loading that remembers where every node came from, and the Problem type.

Lint must point at `file:line:col` of the offending node, so documents are composed into
nodes and converted by hand, recording each path's position on the way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

Path = tuple[str | int, ...]


@dataclass(frozen=True, order=True)
class Problem:
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


@dataclass
class Source:
    """One parsed YAML file: its data and the (line, col) of every path in it."""

    file: str
    data: Any
    positions: dict[Path, tuple[int, int]] = field(default_factory=dict)

    def where(self, path: Path) -> tuple[int, int]:
        # Fall back to the nearest ancestor that has a position.
        while path not in self.positions and path:
            path = path[:-1]
        return self.positions.get(path, (1, 1))

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
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise SourceError(Problem(file, line, col, "error", f"YAML syntax: {exc.problem}")) from None
    except yaml.YAMLError as exc:
        raise SourceError(Problem(file, 1, 1, "error", f"YAML: {exc}")) from None
    source = Source(file=file, data=None)
    if node is not None:
        source.data = _convert(node, (), source.positions)
    return source


def _convert(node: yaml.Node, path: Path, positions: dict[Path, tuple[int, int]]) -> Any:
    positions[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = str(_scalars.construct_object(key_node))
            result[key] = _convert(value_node, (*path, key), positions)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_convert(item, (*path, i), positions) for i, item in enumerate(node.value)]
    return _scalars.construct_object(node)


# One constructor for scalars: it resolves YAML's implicit types (ints, bools, nulls).
_scalars = yaml.SafeLoader("")
