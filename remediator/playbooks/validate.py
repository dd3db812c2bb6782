"""The one validator: `serve` at start-up and on reload, `lint` in CI, `test` and `replay`.

Because every entry point goes through `load_rules`, CI and production cannot disagree
about whether a rule set is valid.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any

from .. import templating
from ..actions.base import check_params
from ..actions.registry import ACTIONS, get_action
from .index import RuleSet
from .matchers import MatcherError, parse_matcher
from .models import Playbook, build_playbook
from .schema import FILE, check_shape, did_you_mean
from .source import Path, Problem, Source, SourceError, load_source

_STEP_REF = re.compile(r"\bsteps\s*(?:\.\s*([A-Za-z_]\w*)|\[\s*['\"]([^'\"]+)['\"]\s*\])")
TEST_FILE_SUFFIXES = ("_test.yaml", "_test.yml")


class RulesError(ValueError):
    """A rule set with errors; it is refused whole and the previous one keeps serving."""

    def __init__(self, problems: list[Problem]):
        errors = [p for p in problems if p.severity == "error"]
        super().__init__(f"{len(errors)} error(s) in rules: " + "; ".join(map(str, errors[:5])))
        self.problems = problems


@dataclass
class Validation:
    playbooks: list[Playbook] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    where: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not any(p.severity == "error" for p in self.problems)


def rule_files(paths: Iterable[str]) -> list[str]:
    """Playbook files under the given files/directories, sorted, test files excluded."""
    found: list[str] = []
    for p in paths:
        path = FsPath(p)
        if path.is_dir():
            found.extend(
                str(f) for f in sorted(path.rglob("*"))
                if f.suffix in (".yaml", ".yml") and not f.name.endswith(TEST_FILE_SUFFIXES)
            )
        else:
            found.append(str(path))
    return found


def validate_paths(paths: Iterable[str], known_sinks: set[str] | None = None) -> Validation:
    result = Validation()
    for file in rule_files(paths):
        try:
            text = FsPath(file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            result.problems.append(Problem(file, 1, 1, "error", f"cannot read: {exc}"))
            continue
        validate_text(file, text, result, known_sinks)
    _check_across(result)
    result.problems.sort()
    return result


def load_rules(paths: Iterable[str], known_sinks: set[str] | None = None) -> RuleSet:
    """Validate and index; raise RulesError if anything is an error."""
    result = validate_paths(paths, known_sinks)
    if not result.ok:
        raise RulesError(result.problems)
    return RuleSet(result.playbooks, warnings=result.problems)


def validate_text(file: str, text: str, into: Validation, known_sinks: set[str] | None) -> None:
    try:
        source = load_source(file, text)
    except SourceError as exc:
        into.problems.append(exc.problem)
        return
    shape = check_shape(source.data, FILE, ())
    into.problems.extend(source.problem(path, "error", msg) for path, msg in shape)
    if shape:
        return
    for i, data in enumerate(source.data["playbooks"]):
        problems = _check_playbook(source, ("playbooks", i), data, known_sinks)
        into.problems.extend(problems)
        if not any(p.severity == "error" for p in problems):
            pb = build_playbook(data, file, order=len(into.playbooks))
            into.playbooks.append(pb)
            into.where[(file, pb.name)] = source.where(("playbooks", i))


def _check_playbook(src: Source, at: Path, data: dict[str, Any],
                    known_sinks: set[str] | None) -> list[Problem]:
    problems: list[Problem] = []
    for j, text in enumerate(data["match"].get("matchers", [])):
        try:
            parse_matcher(text)
        except MatcherError as exc:
            problems.append(src.problem((*at, "match", "matchers", j), "error", str(exc)))
    for key, value in (data.get("target") or {}).items():
        problems.extend(_check_template(src, (*at, "target", key), value, set()))
    mutating_steps = []
    for section in ("steps", "on_resolved"):
        seen: set[str] = set()
        for j, step in enumerate(data.get(section, [])):
            where = (*at, section, j)
            if step["name"] in seen:
                problems.append(src.problem((*where, "name"), "error",
                                            f"duplicate step name {step['name']!r}"))
            problems.extend(_check_step(src, where, step, seen))
            seen.add(step["name"])
            action = get_action(step["action"])
            if action is not None and action.mutates(step.get("params", {})):
                mutating_steps.append(where)
    guards = data.get("guards", {})
    if mutating_steps and not (guards.get("rate_limit") or guards.get("cooldown")):
        problems.append(src.problem(mutating_steps[0], "error",
                                    f"playbook {data['name']!r} has a mutating step but neither "
                                    "guards.rate_limit nor guards.cooldown"))
    if mutating_steps and "target" not in data:
        problems.append(src.problem(at, "error", f"playbook {data['name']!r} mutates but names no "
                                                  "target (locks and limits key on it)"))
    if "promql" in guards.get("precondition", {}):
        problems.extend(_check_template(src, (*at, "guards", "precondition", "promql"),
                                        guards["precondition"]["promql"], set()))
    esc = data.get("escalation") or {}
    for key in ("summary", "owner"):
        if key in esc:
            problems.extend(_check_template(src, (*at, "escalation", key), esc[key], None))
    for j, sink in enumerate(esc.get("sinks", [])):
        if known_sinks is not None and sink not in known_sinks:
            problems.append(src.problem((*at, "escalation", "sinks", j), "error",
                                        f"escalation sink {sink!r} is not configured"))
    return problems


def _check_step(src: Source, at: Path, step: dict[str, Any], earlier: set[str]) -> list[Problem]:
    action = get_action(step["action"])
    if action is None:
        return [src.problem((*at, "action"), "error",
                            f"unknown action {step['action']!r}"
                            f"{did_you_mean(step['action'], list(ACTIONS))}")]
    problems: list[Problem] = []
    raw = step.get("params", {})
    for key, value in raw.items():
        problems.extend(_check_template(src, (*at, "params", key), value, earlier))
    if problems:
        return problems
    try:
        _, param_problems = check_params(action, raw, rendered=False)
    except templating.TemplateError as exc:  # pragma: no cover - caught per value above
        return [src.problem((*at, "params"), "error", str(exc))]
    for name, message in param_problems:
        path = (*at, "params", name) if name in raw else (*at, "params")
        hint = did_you_mean(name, list(action.params)) if "unknown" in message else ""
        problems.append(src.problem(path, "error", message + hint))
    if "when" in step:
        problems.extend(_check_template(src, (*at, "when"), "{{ " + step["when"] + " }}", earlier))
    return problems


def _check_template(src: Source, at: Path, value: Any, earlier: set[str] | None) -> list[Problem]:
    """Compile every template in `value`; allow only known roots and earlier steps' results."""
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _check_template(src, (*at, k), v, earlier)]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _check_template(src, (*at, i), v, earlier)]
    if not isinstance(value, str) or not templating.is_template(value):
        return []
    try:
        roots = templating.compile_check(value)
    except templating.TemplateError as exc:
        return [src.problem(at, "error", str(exc))]
    allowed = templating.ROOTS if earlier is not None else templating.ROOTS - {"steps"}
    problems = [src.problem(at, "error", f"template uses unknown name {name!r}; allowed: "
                                         f"{', '.join(sorted(allowed))}")
                for name in sorted(roots - allowed)]
    for found in _STEP_REF.finditer(value):
        ref = found.group(1) or found.group(2)
        if earlier is not None and ref not in earlier:
            problems.append(src.problem(at, "error",
                                        f"template refers to step {ref!r}, which does not run "
                                        "before this one"))
    return problems


def _check_across(result: Validation) -> None:
    """Duplicate names and shadowed playbooks: problems only visible across the whole set."""
    seen: dict[str, Playbook] = {}
    for pb in result.playbooks:
        line, col = result.where.get((pb.file, pb.name), (1, 1))
        if pb.name in seen:
            first = seen[pb.name]
            result.problems.append(Problem(pb.file, line, col, "error",
                                           f"duplicate playbook name {pb.name!r} (first in "
                                           f"{first.file})"))
        seen.setdefault(pb.name, pb)
        for earlier in result.playbooks[: pb.order]:
            if _shadows(earlier, pb):
                result.problems.append(Problem(
                    pb.file, line, col, "error",
                    f"playbook {pb.name!r} can never match: {earlier.name!r} ({earlier.file}) "
                    "matches the same alerts first and has no `continue: true`"))
                break


def _shadows(first: Playbook, later: Playbook) -> bool:
    if first.continue_ or not set(later.alertnames) <= set(first.alertnames):
        return False
    if first.status not in ("any", later.status):
        return False
    # `first` matches at least everything `later` does if its matchers are a subset.
    return set(map(str, first.matchers)) <= set(map(str, later.matchers))
