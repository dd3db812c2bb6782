"""The one validator: `serve` at start-up and on reload, `lint` in CI, `test` and `replay`.

Because every entry point goes through `validate_paths` (and `load_rules`, which refuses a
rule set with errors), CI and production cannot disagree about whether a rule set is valid.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any

from .. import collector, templating
from ..actions.base import Action, check_params, has_template, parse_duration
from ..actions.registry import ACTIONS, BUILTIN, PLUGIN_PROBLEMS, get_action
from ..guards import LOCK_WAIT
from .index import RuleSet
from .matchers import MatcherError, parse_matcher
from .models import FIRING_WAIT, Later, Playbook, build_playbook
from .overlap import check_across
from .parse_cache import ParseCache
from .schema import FILE, compile_shape, did_you_mean
from .source import Finding, Path, Problem, Source, SourceError, load_source
from .template_checks import check_template, parser, roots, template_findings

TEST_FILE_SUFFIXES = ("_test.yaml", "_test.yml")

# What each kind of template is rendered with (engine/, guards.py); anything else in it
# would be an undefined name at run time, when it is too late to find out.
STEP_ROOTS = templating.ROOTS
TARGET_ROOTS = templating.ROOTS - {"target", "steps"}  # rendered before any step runs
PROMQL_ROOTS = frozenset({"labels", "annotations"})
RATE_KEY_ROOTS = frozenset({"labels", "target"})
ALERT_ROOTS = frozenset({"labels", "annotations", "group", "alert"})  # whoever sends the alert
_FILE_SHAPE = compile_shape(FILE)


class RulesError(ValueError):
    """A rule set with errors; it is refused whole and the previous one keeps serving."""

    def __init__(self, problems: list[Problem]):
        errors = [p for p in problems if p.severity == "error"]
        super().__init__(f"{len(errors)} error(s) in rules: " + "; ".join(map(str, errors[:5])))
        self.problems = problems


class NoPlaybooks(RulesError):
    """Rules that hold no playbook: a server answering every alert `no_match` looks healthy
    (ready, 202s) while it does nothing, so `serve` and `replay` refuse to start (exit 2, as
    for a missing directory) and a reload to an empty set keeps the current one."""

    def __init__(self, paths: Iterable[str]):
        where = ", ".join(map(repr, paths)) or "no path"
        super().__init__([Problem(next(iter(paths), "<rules>"), 1, 1, "error",
                                  f"no playbooks: {where} holds none (a .yaml file with a "
                                  "`playbooks:` list; *_test.yaml files are tests); pass "
                                  "--rules PATH")])
        self.args = (self.problems[0].message,)


@dataclass
class Validation:
    """What validating a rule set found, and the playbooks that have no error."""

    playbooks: list[Playbook] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    # Where each accepted playbook was defined (by its `order`), for later, cross-file checks.
    origins: dict[int, tuple[Source, Path]] = field(default_factory=dict)
    # What each distinct step was found to have (`_check_step`), for this rule set only.
    checked_steps: dict[str, list[Finding]] = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        return not any(p.severity == "error" for p in self.problems)

    def problem_at(self, pb: Playbook, sub: Path, severity: str, message: str) -> Problem:
        """A problem located at `sub` (e.g. ("match", "alertname")) inside playbook `pb`."""
        source, at = self.origins[pb.order]
        return source.problem((*at, *sub), severity, message)


def rule_files(paths: Iterable[str]) -> list[str]:
    """Playbook files under the given files/directories, sorted; `*_test.yaml` never count."""
    found: list[str] = []
    for p in paths:
        path = FsPath(p)
        if path.is_dir():
            top = str(path)  # as pathlib spells it (`./rules/` is `rules`; `.` is no prefix)
            found.extend(os.path.join(top, *parts) if top != "." else os.path.join(*parts)
                         for parts in sorted(_yaml_below(top)))
        elif not is_test_file(path):
            found.append(str(path))
    return found


def _yaml_below(top: str, rel: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """The path, as parts relative to `top`, of each playbook file below it (in any order).

    Hidden entries are skipped: a Kubernetes ConfigMap volume holds every file a second time
    under `..<timestamp>/` (behind the `..data` link). Like `Path.rglob`, linked directories
    are not entered and linked files count; an unreadable directory is skipped, as os.walk
    does (os.scandir: an entry's type comes with its name, so only a link costs a stat, a
    thousand files in a seventh of os.walk's time)."""
    try:
        with os.scandir(os.path.join(top, *rel)) as listing:
            entries = list(listing)
    except OSError:
        return
    for entry in entries:
        name = entry.name
        try:
            if name.startswith("."):
                continue
            if entry.is_dir(follow_symlinks=False):
                yield from _yaml_below(top, (*rel, name))
            elif name.endswith((".yaml", ".yml")) and not name.endswith(TEST_FILE_SUFFIXES) \
                    and entry.is_file():
                yield (*rel, name)
        except OSError:  # gone, or a link we may not follow: as os.path.isfile says
            continue


def is_test_file(path: str | FsPath) -> bool:
    return FsPath(path).name.endswith(TEST_FILE_SUFFIXES)


def read_text(file: str) -> str:
    """The file's text as `open(file, encoding="utf-8").read()` gives it (strict UTF-8,
    universal newlines), at less than half its cost: a text file object (a buffered reader
    and a decoder with its newline state) was 13-20 us of each file's ~60 at start-up."""
    with open(file, "rb", buffering=0) as f:
        text = f.read().decode("utf-8")
    return text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text


def validate_paths(paths: Iterable[str], known_sinks: set[str] | None = None,
                   cache: ParseCache | None = None) -> Validation:
    """Every problem in the rule set at `paths`, and the playbooks that have no error.

    `known_sinks`: the configured escalation sinks; None skips that check. `cache`: where
    files parsed before are found (parsing only: every file is validated).
    """
    result = Validation()
    # A broken plugin refuses the rule set: running without an action someone installed
    # would fail every playbook that uses it, later and less clearly.
    result.problems.extend(Problem("<plugins>", 1, 1, "error", message)
                           for message in PLUGIN_PROBLEMS)
    if cache is not None:
        cache.context = validation_context(known_sinks)
    with collector.paused():
        for file in rule_files(paths):
            try:
                text = read_text(file)
            except (OSError, UnicodeDecodeError) as exc:
                result.problems.append(Problem(file, 1, 1, "error", f"cannot read: {exc}"))
                continue
            validate_text(file, text, result, known_sinks, cache)
    if cache is not None:
        cache.save()
    check_across(result)
    result.problems.sort()
    return result


def validation_context(known_sinks: set[str] | None) -> str | None:
    """What validating a file depends on besides its text, as a digest: the configured
    sinks, the installed actions' names (the file schema lists them), and the code that
    validates, this whole package's (each module's path and content: a reproducible build
    gives every release's modules one mtime, ~1.5 ms for the package) and the libraries' it
    asks (Jinja parses templates, RE2 compiles regexes: each module's path, size and
    modification time, and version), read once, when the process first validates (the code
    it runs). None if that code cannot be read."""
    code, libraries = _code_stamp(), _library_stamp()
    if code is None or libraries is None:
        return None
    return hashlib.sha256(repr((
        code, libraries, sorted(known_sinks) if known_sinks is not None else None,
        sorted(ACTIONS),
    )).encode()).hexdigest()


_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@functools.cache
def _code_stamp(top: str = _PACKAGE) -> str | None:
    stamp = []
    try:
        for directory, dirs, files in os.walk(top, onerror=_raise):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for name in sorted(files):
                if name.endswith(".py"):
                    with open(os.path.join(directory, name), "rb") as f:
                        code = f.read()
                    stamp.append(f"{os.path.relpath(directory, top)}/{name}:"
                                 f"{hashlib.sha256(code).hexdigest()}")
    except OSError:
        return None
    return hashlib.sha256("\n".join(stamp).encode()).hexdigest()


@functools.cache
def _library_stamp() -> str | None:
    import re2

    # Jinja2's module is found, not imported: a start whose files are all kept validated
    # renders no template before its first alert (templating._sandboxes). Its version is
    # in the text of that module, which a new install writes anew (size, modification time).
    jinja2 = importlib.util.find_spec("jinja2")
    stamp = []
    try:
        for path, version in ((jinja2 and jinja2.origin, ""),
                              (re2.__file__, getattr(re2, "__version__", "")),
                              (getattr(sys.modules.get("re2._re2"), "__file__", None), "")):
            st = os.stat(path) if path else None
            stamp.append((version, path or "", st and st.st_size, st and st.st_mtime_ns))
    except OSError:
        return None
    return repr(stamp)


def _raise(exc: OSError) -> None:
    raise exc


def load_rules(paths: Iterable[str], known_sinks: set[str] | None = None,
               cache: ParseCache | None = None) -> RuleSet:
    """Validate and index; raise RulesError if anything is an error, NoPlaybooks if none."""
    paths = list(paths)
    with collector.paused():
        result = validate_paths(paths, known_sinks, cache)
        # The parsed sources are garbage now; freed before the collector resumes, its
        # catching up walks the rule set only, not a million objects already dead.
        result.origins.clear()
        result.checked_steps.clear()
    if not result.ok:
        raise RulesError(result.problems)
    if not result.playbooks:
        raise NoPlaybooks(list(paths))
    return RuleSet(result.playbooks, warnings=result.problems)


def validate_text(file: str, text: str, into: Validation, known_sinks: set[str] | None,
                  cache: ParseCache | None = None) -> None:
    """Validate one file into `into`. With a cache whose `context` is set, what validating
    the same text under the same context found before is taken from it instead."""
    try:
        source, key = cache.load(file, text) if cache is not None else \
            (load_source(file, text), "")
    except SourceError as exc:
        into.problems.append(exc.problem)
        return
    known = cache.validated(key, source) if cache is not None else None
    if known is not None:
        into.problems.extend(Problem(file, *p) for p in known[0])
        for i in known[1]:
            _accept(source, i, into, cache.later(key, i))  # type: ignore[union-attr]
        return
    if cache is not None:
        cache.unpack(key, source)
    start = len(into.problems)
    accepted = _validate_source(source, into, known_sinks)
    found = into.problems[start:]
    if cache is not None and _own_checks_only(source.data) and \
            all(p.file == file for p in found):
        # In order: a rule set's problems are sorted once it is read, which then finds
        # each file's already in order (the bench's 2 000 warnings: 2.5 -> 0.7 ms).
        cache.keep(key, ([(p.line, p.col, p.severity, p.message) for p in sorted(found)],
                         accepted))


def _validate_source(source: Source, into: Validation, known_sinks: set[str] | None) -> list[int]:
    """Add the file's problems to `into`, and its playbooks that have none; their indexes."""
    into.problems.extend(source.problems)
    shape = _FILE_SHAPE(source.data, ())
    into.problems.extend(source.problem(path, "error", msg) for path, msg in shape)
    if shape:
        return []
    accepted = []
    for i, data in enumerate(source.data["playbooks"]):
        problems = _check_playbook(source, ("playbooks", i), data, known_sinks, into)
        into.problems.extend(problems)
        if not any(p.severity == "error" for p in problems):
            _accept(source, i, into)
            accepted.append(i)
    return accepted


def _accept(source: Source, i: int, into: Validation,
            later: Callable[[], Later] | None = None) -> None:
    pb = build_playbook(source.data["playbooks"][i], source.file, order=len(into.playbooks),
                        later=later)
    into.playbooks.append(pb)
    into.origins[pb.order] = (source, ("playbooks", i))


def _own_checks_only(data: Any) -> bool:
    """Is what validating this file finds ours to keep? Not when a step is a plugin's (its
    checks are not ours to call pure: checked at every load, as `_check_step` does)."""
    if not isinstance(data, dict) or not isinstance(data.get("playbooks"), list):
        return True  # refused by the file's shape, which is ours
    playbooks = data["playbooks"]
    return all(isinstance(pb, dict) for pb in playbooks) and \
        all(isinstance(step, dict) and isinstance(step.get("action"), str)
            and step["action"] in BUILTIN
            for pb in playbooks
            for section in ("steps", "on_resolved") if isinstance(pb.get(section), list)
            for step in pb[section])


def _check_playbook(src: Source, at: Path, data: dict[str, Any],
                    known_sinks: set[str] | None, into: Validation) -> list[Problem]:
    problems: list[Problem] = []
    for j, text in enumerate(data["match"].get("matchers", [])):
        try:
            parse_matcher(text)
        except MatcherError as exc:
            problems.append(src.problem((*at, "match", "matchers", j), "error", str(exc)))
    for key, value in (data.get("target") or {}).items():
        problems.extend(check_template(src, (*at, "target", key), value, TARGET_ROOTS))
    mutating: list[Path] = []
    for section in ("steps", "on_resolved"):
        steps = data.get(section, [])
        names = [s["name"] for s in steps]
        for j, step in enumerate(steps):
            where = (*at, section, j)
            if step["name"] in names[:j]:
                problems.append(src.problem((*where, "name"), "error",
                                            f"duplicate step name {step['name']!r}"))
            problems.extend(_check_step(src, where, step, names[:j], (section, names), into))
            for key, value in (step.get("target") or {}).items():
                problems.extend(check_template(src, (*where, "target", key), value,
                                                TARGET_ROOTS))
            action = get_action(step["action"])
            if action is not None and action.mutates(step.get("params") or {}):
                mutating.append(where)
                problems.extend(_check_touched(src, where, step, action, data.get("target")))
            elif action is not None and step.get("approval") == "required":
                problems.append(src.problem((*where, "approval"), "warning",
                                            f"approval is only asked before a mutation; "
                                            f"{step['action']} does not mutate, so it never is"))
    problems.extend(_check_guards(src, at, data, mutating))
    if "target" not in data:  # `target` is None: `{{ target.name }}` fails, `{{ target }}` is "None"
        problems.extend(src.problem(where, "error", f"template reads target, but playbook "
                                    f"{data['name']!r} has no `target:`; add one")
                        for where, text in _templates(data, at) if "target" in roots(text)[0])
    gated = [w for w in mutating if _step_at(data, w).get("approval") == "required"]
    if len(gated) > 1:  # each approval admits one step: the approver must know which
        problems.extend(src.problem((*w, "approval"), "warning", (
            f"{len(gated)} steps of {data['name']!r} need approval, one approval each; give "
            f"step {_step_at(data, w)['name']!r} a `description` saying what approving it "
            "admits")) for w in gated if not _step_at(data, w).get("description"))
    if "on_resolved_when" in data and not data.get("on_resolved"):
        problems.append(src.problem((*at, "on_resolved_when"), "warning",
                                    "on_resolved_when without on_resolved steps does nothing"))
    elif data.get("on_resolved_when") == "always":
        problems.append(src.problem((*at, "on_resolved_when"), "warning",
                                    "on_resolved runs on every resolution, even when the firing "
                                    "run was blocked and changed nothing: it may revert a change "
                                    "that was never made"))
    problems.extend(_check_resolution_verifies(src, at, data, mutating))
    esc = data.get("escalation") or {}
    # A note is written after the steps: it may read any step's result.
    all_steps = [s["name"] for s in (*data.get("steps", []), *data.get("on_resolved", []))]
    for key in ("summary", "owner"):
        if key in esc:
            problems.extend(check_template(src, (*at, "escalation", key), esc[key],
                                            templating.ROOTS, all_steps))
    for j, text in enumerate(esc.get("next_steps", [])):
        problems.extend(check_template(src, (*at, "escalation", "next_steps", j), text,
                                        templating.ROOTS, all_steps))
    for j, rule in enumerate(esc.get("raise", [])):
        problems.extend(check_template(src, (*at, "escalation", "raise", j, "when"),
                                        "{{ " + rule["when"] + " }}", templating.ROOTS, all_steps))
    for j, sink in enumerate(esc.get("sinks", [])):
        if known_sinks is not None and sink not in known_sinks:
            problems.append(src.problem((*at, "escalation", "sinks", j), "error",
                                        f"escalation sink {sink!r} is not configured "
                                        f"(configured: {', '.join(sorted(known_sinks)) or 'none'})"
                                        f"{did_you_mean(sink, sorted(known_sinks))}"))
    return problems


def _templates(value: Any, at: Path) -> Iterable[tuple[Path, str]]:
    """Every template in a playbook's data, a bare `when` expression as `{{ when }}`."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "when" and isinstance(item, str):
                yield (*at, key), "{{ " + item + " }}"
            else:
                yield from _templates(item, (*at, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _templates(item, (*at, i))
    elif isinstance(value, str) and templating.is_template(value):
        yield at, value


def _step_at(data: dict[str, Any], where: Path) -> dict[str, Any]:
    """The step at `where` (…, section, index) inside one playbook's data."""
    return data[where[-2]][where[-1]]


def _check_resolution_verifies(src: Source, at: Path, data: dict[str, Any],
                               mutating: list[Path]) -> list[Problem]:
    """`resolution_verifies` only matters to a firing run that changes something: the
    resolution is taken as the verification of a change, never of evidence alone."""
    if "resolution_verifies" not in data:
        return []
    where = (*at, "resolution_verifies")
    if data["match"].get("status") == "resolved":
        return [src.problem(where, "warning", "resolution_verifies does nothing on a playbook "
                            "that matches only resolutions: there is no firing run to verify")]
    changes = [w[-1] for w in mutating if w[len(at)] == "steps"]
    if data["resolution_verifies"] is False and not changes:
        return [src.problem(where, "warning", "resolution_verifies: false does nothing here: no "
                            "step changes anything, and a resolution only verifies a change")]
    if data["resolution_verifies"] is False and data.get("on_resolved"):
        return _check_resolution_waits(src, at, data, changes[0])
    return []


def _check_resolution_waits(src: Source, at: Path, data: dict[str, Any],
                            first: int) -> list[Problem]:
    """Under `resolution_verifies: false` the firing run's waits run on through its alert's
    resolution, whose `on_resolved` waits for the run: `FIRING_WAIT` for it to stop, then,
    unless `guards.lock: false`, for its target lock (`LOCK_WAIT` on another replica; in
    the run's own process `FIRING_WAIT` again, then coalesced into it). Steps after the
    run's first change that may take longer leave on_resolved blocked `locked`, never run
    (a revert escalated); without the lock it runs while the run still waits, before the
    run's steps have verified the change. A step's deadline covers its retries and backoff."""
    locked = (data.get("guards") or {}).get("lock") is not False
    held = FIRING_WAIT + (min(FIRING_WAIT, LOCK_WAIT) if locked else 0.0)
    spent: list[str] = []
    total = 0.0
    for j, step in enumerate(data["steps"][first:], first):
        action = get_action(step["action"])
        if action is None:
            return []  # an error of its own
        if "timeout" in step:
            deadline = parse_duration(step["timeout"])
        else:
            try:
                params, problems = check_params(action, step.get("params") or {},
                                                rendered=False)
                deadline = action.deadline(params)
            except Exception:  # a broken declaration: said by the step's own checks
                return []
            if problems:
                return []  # errors of their own
        total += deadline
        spent.append(f"{step['name']} {deadline:g}s")
        if total > held:
            waits = ("for the run and its target lock: its on_resolved is then blocked "
                     "(locked) and never runs (a revert is escalated)" if locked else
                     "for the run to stop: its on_resolved then runs while the run still "
                     "waits, before its steps have verified the change")
            return [src.problem((*at, "steps", j, "timeout" if "timeout" in step else "name"),
                                "warning", (
                f"resolution_verifies: false: step {step['name']!r} may end {total:g}s after "
                f"step {data['steps'][first]['name']!r} starts the run's first change "
                f"({', '.join(spent)}), past the {held:g}s its alert's resolution waits "
                f"{waits}; keep these steps' timeouts within {held:g}s in all"))]
    return []


def _check_guards(src: Source, at: Path, data: dict[str, Any], mutating: list[Path]) -> list[Problem]:
    """Safety: whatever changes the world is limited, and keyed on a named target."""
    problems: list[Problem] = []
    guards = data.get("guards") or {}
    if mutating and not (guards.get("rate_limit") or guards.get("cooldown")):
        problems.append(src.problem(mutating[0], "error",
                                    f"playbook {data['name']!r} has a mutating step but neither "
                                    "guards.rate_limit nor guards.cooldown"))
    if mutating and "target" not in data:
        problems.append(src.problem(at, "error", f"playbook {data['name']!r} mutates but names no "
                                                  "target (locks and limits key on it)"))
    for j, window in enumerate(guards.get("time_windows", [])):
        if window["start"] >= window["end"]:
            problems.append(src.problem((*at, "guards", "time_windows", j), "error",
                                        f"time window {window['start']}-{window['end']} never "
                                        "opens: start must be before end (split one that spans "
                                        "midnight in two)"))
    if "promql" in guards.get("precondition", {}):
        where, promql = (*at, "guards", "precondition", "promql"), guards["precondition"]["promql"]
        problems.extend(check_template(src, where, promql, PROMQL_ROOTS)
                        or _check_promql(src, where, promql))
    if "key" in guards.get("rate_limit", {}):
        problems.extend(check_template(src, (*at, "guards", "rate_limit", "key"),
                                        guards["rate_limit"]["key"], RATE_KEY_ROOTS))
    return problems


def _check_touched(src: Source, at: Path, step: dict[str, Any], action: Action,
                   playbook_target: dict[str, Any] | None) -> list[Problem]:
    """A mutation of another object than the target would lock, cool down and rate-limit
    the wrong one: compare what the step names (literal, or the same template) with its
    target, the step's own or else the playbook's."""
    target = step.get("target") or playbook_target
    if not target:
        return []  # no target at all is reported once, for the playbook
    raw = step.get("params") or {}
    try:
        touched = action.touches(raw)
    except Exception:  # an action's declaration must not take the validator down
        return []
    wanted = {"kind": target["kind"], "namespace": target.get("namespace", ""),
              "name": target["name"]}
    differ = []
    for part, have in wanted.items():
        value = touched.get(part)
        if not isinstance(value, str) or not isinstance(have, str):
            continue
        if templating.is_template(value) or templating.is_template(have):
            continue  # the same template is the same object; different ones: run time knows
        if (value.lower() != have.lower()) if part == "kind" else value != have:
            differ.append(f"{part} {value!r} (target: {have!r})")
    if not differ:
        return []
    own = "its own target" if step.get("target") else "the playbook's target"
    return [src.problem((*at, "action"), "error", (
        f"step {step['name']!r} changes another object than {own}: "
        f"{', '.join(differ)}; give the step a `target:` naming what it changes, so locks, "
        "cooldowns and rate limits key on it"))]


def _check_step(src: Source, at: Path, step: dict[str, Any], earlier: list[str],
                names: tuple[str, list[str]], into: Validation) -> list[Problem]:
    """A step's problems. A thousand files repeat the same few steps: a built-in action's
    step is checked once per distinct content (and the step names it may refer to), its
    findings placed in each file; a plugin's is checked every time (its checks are not ours
    to call pure)."""
    if step["action"] not in BUILTIN:
        return [src.problem((*at, *sub), severity, message)
                for sub, severity, message in _step_findings(step, earlier, names)]
    key = repr((step, earlier, names))
    found = into.checked_steps.get(key)
    if found is None:
        found = into.checked_steps[key] = _step_findings(step, earlier, names)
    return [src.problem((*at, *sub), severity, message) for sub, severity, message in found]


def _step_findings(step: dict[str, Any], earlier: list[str],
                   names: tuple[str, list[str]]) -> list[Finding]:
    """A step's problems, at paths relative to the step."""
    problems: list[Finding] = []
    if "when" in step:
        problems.extend((sub, severity, "when: " + message)
                        for sub, severity, message in template_findings(
                            ("when",), "{{ " + step["when"] + " }}", STEP_ROOTS, earlier, names))
    action = get_action(step["action"])
    if action is None:
        return [*problems, (("action",), "error", f"unknown action {step['action']!r}"
                                                  f"{did_you_mean(step['action'], list(ACTIONS))}")]
    raw = step.get("params") or {}
    for key, spec in action.params.items():
        if spec.kind == "promql" and key in raw:
            problems.extend(_promql_findings(("params", key), raw[key]))
    broken: set[str] = set()  # parameters whose template is already reported
    for key, value in raw.items():
        found = template_findings(("params", key), value, STEP_ROOTS, earlier, names)
        if found:
            broken.add(key)
            problems.extend(found)
    try:
        params, param_problems = check_params(action, raw, rendered=False)
    except Exception as exc:  # a broken declaration must not take the validator down
        params, param_problems = {}, [("", f"parameters could not be checked: {exc!r}")]
    for name, message in param_problems:
        if name in broken:
            continue
        path = ("params", name) if name in raw else ("params",)
        hint = did_you_mean(name, list(action.params)) if "unknown" in message else ""
        prefix = "" if action.name in message else f"{action.name}: "
        problems.append((path, "error", prefix + message + hint))
    if not param_problems:
        problems.extend((("params", name), "warning", f"{action.name}: {message}")
                        for name, message in action.advise(params))
    problems.extend((("params", name), "warning", (
        f"{action.name}: {name} {raw[name]!r} puts an alert's value into a regular expression, "
        "where a label such as `.*` matches every line; add `| re_escape` to match it literally"))
        for name, spec in action.params.items()
        if spec.regex and name not in broken and _unescaped_regex(raw.get(name)))
    if not param_problems and not has_template(params):
        # Cross-parameter rules (min <= max, one of two) can be decided now: say so now.
        problems.extend((("params",), "error", f"{action.name}: {message}")
                        for message in _cross_check(action, params))
    own = action.own_timeout(params) if not param_problems else None
    if own is not None and "timeout" in step and parse_duration(step["timeout"]) < own:
        problems.append((("timeout",), "error", (
            f"step timeout {parse_duration(step['timeout']):g}s cuts {action.name} off before "
            f"its own {own:g}s; drop `timeout:` (the deadline is then derived: "
            f"{action.deadline(params):g}s) or make it longer")))
    return problems


def _check_promql(src: Source, at: Path, text: Any) -> list[Problem]:
    return [src.problem(*found) for found in _promql_findings(at, text)]


def _promql_findings(at: Path, text: Any) -> list[Finding]:
    """An alert's value spliced into PromQL unescaped can rewrite the query (`"} or
    vector(1)`, `x) or vector(1) or (y`): an error wherever it stands, so the rule set is
    refused. Outside a string this was a warning, which serve loaded all the same; there
    `promql_name`, `promql_duration`, `int` and `float` now check it. A list (a plugin's
    parameter of promql items) is checked item by item."""
    if isinstance(text, list):
        return [found for i, item in enumerate(text) for found in _promql_findings((*at, i), item)]
    if not isinstance(text, str) or not templating.is_template(text):
        return []
    return [(at, "error", message) for message in templating.unescaped_promql(text)]


def _unescaped_regex(text: Any) -> bool:
    """Does a regex template read the alert in a `{{ }}` whose last filter is not re_escape?"""
    if not isinstance(text, str) or not templating.is_template(text):
        return False
    from jinja2 import TemplateSyntaxError, nodes

    try:
        ast = parser().parse(text)
    except TemplateSyntaxError:
        return False  # reported as a syntax error already
    return any({n.name for n in expr.find_all(nodes.Name)} & ALERT_ROOTS
               for output in ast.find_all(nodes.Output) for expr in output.nodes
               if not (isinstance(expr, nodes.Filter) and expr.name == "re_escape"))


def _cross_check(action: Action, params: dict[str, Any]) -> list[str]:
    try:
        return action.check(params)
    except Exception as exc:  # an action's check must not take the validator down
        return [f"parameters could not be checked: {type(exc).__name__}: {exc}"]


