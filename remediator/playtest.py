"""`remediator test`: playbook unit tests in YAML, in the spirit of `promtool test rules`.

A test feeds alerts, at offsets on a fake clock, through the real pipeline (Service →
inbox → Engine → guards → Executor → escalation) with the process in live mode and every
action answered by a canned result instead of a backend, then compares the decisions with
what the test expects. Nothing here re-implements a stage: if a test passes, `serve` given
the same alerts at the same times takes the same decisions.

    rule_files: [web.yaml]                 # relative to this file (default: web.yaml for web_test.yaml)
    config: {guards: {budget: {max: 5}}}   # process settings, as in the config file
    tests:
      - name: a crash loop is restarted once, then the cooldown holds
        results: {restart: {restarted: true}}      # step (or action) name -> canned result
        alerts:
          - labels: {alertname: PodCrashLooping, namespace: shop, deployment: web}
            expect:
              - {playbook: web-restart, outcome: succeeded,
                 steps: [{name: restart, outcome: succeeded, params: {name: web}}]}
          - at: 5m
            labels: {alertname: PodCrashLooping, namespace: shop, deployment: web}
            expect: [{outcome: blocked, guard: cooldown, escalation: true}]
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import difflib
import sys
import tempfile
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path as FsPath
from typing import Any

import yaml

from . import event_loop
from .actions.base import Action, ActionContext, ActionError, TransientError, parse_duration
from .alerts import PayloadError, notification_from_dict
from .config import ConfigError, load_config
from .engine.executor import Executor, StepRecord
from .engine.inflight import InFlight
from .logs import setup_logging
from .playbooks.schema import TEST_FILE, check_shape, did_you_mean
from .playbooks.source import Problem, Source, SourceError, load_source
from .playbooks.validate import RulesError, is_test_file, validate_paths
from .service import Service, Undecided

DEFAULT_START = "2026-01-05T10:00:00Z"  # a Monday, 10:00 UTC: inside typical time windows
CONTAINS = frozenset({"reason", "detail", "title", "note"})  # expected text is a substring
_ABSENT = "<absent>"


@dataclass
class CaseResult:
    """One test case's outcome: its failures, and the decisions it saw."""

    name: str
    failures: list[str] = field(default_factory=list)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    shown: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


class FakeClock:
    """The time guards see; it moves only when a test alert (or a guard's sleep) says so."""

    def __init__(self, start: float):
        self.start = self.now = start

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:  # a precondition `delay` passes instantly
        self.now += max(0.0, seconds)
        await asyncio.sleep(0)


_CURRENT_STEP: contextvars.ContextVar[str] = contextvars.ContextVar("playtest_step", default="")


class CannedExecutor(Executor):
    """The real executor (retries, timeouts, records), with the action call answered from
    the test's `results:` by step name, then action name; `{}` when none is given, except
    for local actions (`check`, `log`), which run for real."""

    def __init__(self, results: dict[str, Any]):
        super().__init__(runner=self._answer, retry_wait=0)
        self.results = {k: v if isinstance(v, list) else [v] for k, v in results.items()}
        self.calls: dict[str, int] = defaultdict(int)
        self.inflight: InFlight | None = None  # the engine's, for `alert_resolves`

    async def run(self, action: Action, params: dict[str, Any], ctx: ActionContext,
                  record: StepRecord, timeout: float | None, attempts: int,
                  intent: Callable[[], Awaitable[None]] | None = None) -> StepRecord:
        token = _CURRENT_STEP.set(record.name)
        try:
            return await super().run(action, params, ctx, record, timeout, attempts, intent)
        finally:
            _CURRENT_STEP.reset(token)

    async def _answer(self, action: Action, params: dict[str, Any], ctx: ActionContext) -> dict:
        key = next((k for k in (_CURRENT_STEP.get(), action.name) if k in self.results), None)
        if key is None:
            # A local action (a `check` on earlier results) is part of the playbook's logic,
            # not a backend: it runs for real. Anything else answers `{}`.
            return await action.run(params, ctx) if action.local else {}
        answers = self.results[key]
        answer = answers[min(self.calls[key], len(answers) - 1)]  # the last one repeats
        self.calls[key] += 1
        if answer.get("alert_resolves") and self.inflight is not None:
            # The alert's resolution arrives while this call waits: cut short as `serve`'s
            # resolution cuts it (`InFlight.cut_short`), unless the run does not let it.
            episode = self.inflight.episode(ctx.execution_id)
            if episode is not None:
                self.inflight.cut_short(episode)
                await asyncio.sleep(0)  # where a cancelled wait stops
            answer = {k: v for k, v in answer.items() if k != "alert_resolves"}
        if "fail" in answer:
            if answer.get("transient"):
                # `sent: false`: the connection was refused, so even a change is retried
                raise TransientError(str(answer["fail"]), answer.get("result"),
                                     unapplied=answer.get("sent") is False)
            # a refusal, unless `sent: true` says the change reached the server (an
            # unexpected answer to it): then it may have taken effect
            raise ActionError(str(answer["fail"]), answer.get("result"),
                              unapplied=answer.get("sent") is not True)
        return dict(answer)


class PlaytestError(ValueError):
    """A test file that cannot be run; `problems` say where."""

    def __init__(self, problems: list[Problem]):
        super().__init__("; ".join(map(str, problems)))
        self.problems = problems


# --- running -----------------------------------------------------------------------------------

def load_test_file(file: str) -> tuple[Source, list[str]]:
    """Parse and shape-check a test file; return it and its rule files (resolved)."""
    try:
        source = load_source(file, FsPath(file).read_text(encoding="utf-8"))
    except SourceError as exc:
        raise PlaytestError([exc.problem]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PlaytestError([Problem(file, 1, 1, "error", f"cannot read: {exc}")]) from None
    problems = [*source.problems, *(source.problem(p, "error", m)
                                    for p, m in check_shape(source.data, TEST_FILE, ()))]
    if problems:
        raise PlaytestError(problems)
    base = FsPath(file).parent
    default = [FsPath(file).name.rsplit("_test.", 1)[0] + ".yaml"]
    names = source.data.get("rule_files", default)
    rules = [str(base / n) for n in names]
    missing = [i for i, r in enumerate(rules) if not FsPath(r).exists()]
    if missing:
        raise PlaytestError([source.problem(("rule_files", i), "error",
                                            f"rule file {names[i]} not found") for i in missing])
    return source, rules


def run_file(file: str) -> list[CaseResult]:
    """Run every test in one file; raise PlaytestError if the file itself is unusable."""
    source, rules = load_test_file(file)
    found = validate_paths(rules)  # the one validator; Service.start refuses the same errors
    if not found.ok:
        raise PlaytestError([p for p in found.problems if p.severity == "error"])
    sinks = {s for pb in found.playbooks for s in (pb.escalation.sinks if pb.escalation else ())}
    _check_results(source, found.playbooks)
    return [event_loop.run(_run_case(source, i, rules, sinks))  # serve's loop
            for i in range(len(source.data["tests"]))]


def _check_results(source: Source, playbooks: list[Any]) -> None:
    """A canned result for a step (or action) the rule files do not have would never be
    used: the test would pass while checking nothing. Refuse it, where it is written."""
    steps = sorted({s.name for pb in playbooks for s in (*pb.steps, *pb.on_resolved)})
    actions = {s.action for pb in playbooks for s in (*pb.steps, *pb.on_resolved)}
    problems = [source.problem(("tests", i, "results", key), "error",
                               f"results: no step or action {key!r} in the rule files"
                               f"{did_you_mean(key, steps + sorted(actions))}")
                for i, case in enumerate(source.data["tests"])
                for key in case.get("results") or {} if key not in steps and key not in actions]
    if problems:
        raise PlaytestError(problems)


async def _run_case(source: Source, index: int, rules: list[str], sinks: set[str]) -> CaseResult:
    case = source.data["tests"][index]
    result = CaseResult(case["name"])
    with tempfile.TemporaryDirectory(prefix="remediator-test-") as tmp:
        service, clock = _service(source, index, rules, sinks, FsPath(tmp))
        await service.start(dispatch=False)
        assert service.engine is not None and service.engine.guards is not None
        service.engine.guards.precondition = _canned_precondition(case.get("precondition", True))
        if isinstance(service.engine.executor, CannedExecutor):
            service.engine.executor.inflight = service.engine.inflight
        episodes: dict[str, str] = {}
        scheduled = 0.0
        try:
            for i, item in enumerate(case["alerts"]):
                at = ("tests", index, "alerts", i)
                for n in range(item.get("repeat", 1)):
                    when = parse_duration(item.get("at", 0)) + n * parse_duration(
                        item.get("every", 0))
                    if when < scheduled:
                        raise PlaytestError([source.problem(
                            (*at, "at"), "error", "alerts must be listed in time order")])
                    # A guard's delay may have moved the clock past `at`: time never runs back.
                    scheduled, clock.now = when, max(clock.now, clock.start + when)
                    decisions = await _send(service, item, clock, episodes, source, at)
                    result.decisions += decisions
                    label = f"alert {i + 1}" + (f" (repeat {n + 1})" if n else "") + \
                        f" at {_offset(when)}: {_alert_text(item)}"
                    result.shown.append(label + "\n" + _dump([_summary(d) for d in decisions]))
                    if "expect" in item:
                        diff = compare(item["expect"], decisions)
                        if diff:
                            result.failures.append(label + "\n" + diff)
        finally:
            await service.stop()
    return result


def _service(source: Source, index: int, rules: list[str], sinks: set[str],
             tmp: FsPath) -> tuple[Service, FakeClock]:
    """A Service as `serve` builds it: sqlite in memory, live, sinks writing into `tmp`."""
    case = source.data["tests"][index]
    settings = source.data.get("config") or {}
    if isinstance(settings, str):  # a config file, relative to the test file
        config_file = FsPath(source.file).parent / settings
    else:
        config_file = tmp / "config.yaml"
        config_file.write_text(yaml.safe_dump(settings), encoding="utf-8")
    try:
        cfg = load_config(str(config_file), env={}, secrets=False)  # hermetic: no REMEDIATOR_* leaks in
    except ConfigError as exc:
        raise PlaytestError([source.problem(("config",), "error", f"config: {exc}")]) from None
    cfg.rules, cfg.store = rules, "sqlite://"
    cfg.mode = case.get("mode", "live")
    cfg.escalation_dir = str(tmp / "escalations" / "files")
    # Every sink becomes a directory in tmp: a test never pages anyone.
    names = sinks | set(cfg.escalation_sinks)
    cfg.escalation_sinks = {n: {"type": "directory", "path": str(tmp / "escalations" / n)}
                            for n in names if n != "files"}
    try:
        start = datetime.fromisoformat(case.get("start", DEFAULT_START).replace("Z", "+00:00"))
    except ValueError:
        raise PlaytestError([source.problem(("tests", index, "start"), "error",
                                            "start: not an RFC 3339 time")]) from None
    clock = FakeClock(start.timestamp())
    # A precondition `delay` sleeps on the fake clock: instant, yet the clock moves.
    return Service(cfg, clock=clock, sleep=clock.sleep,
                   executor=CannedExecutor(case.get("results") or {})), clock


def _canned_precondition(answers: bool | list[bool]) -> Any:
    queue = list(answers) if isinstance(answers, list) else [answers]
    calls = [0]

    async def check(promql: str | None, alert: Any, check_firing: bool) -> tuple[bool, str]:
        holds = queue[min(calls[0], len(queue) - 1)] if queue else True
        calls[0] += 1
        return holds, "" if holds else f"precondition no longer holds (canned): {promql or ''}"

    return check


async def _send(service: Service, item: dict[str, Any], clock: FakeClock,
                episodes: dict[str, str], source: Source, at: tuple[Any, ...]) -> list[dict]:
    """One webhook notification with one alert, as Alertmanager would send it now."""
    status = item.get("status", "firing")
    labels = item["labels"]
    key = repr(sorted(labels.items()))
    if "starts_at" in item:
        starts = _iso(clock.start + parse_duration(item["starts_at"]))
    elif status == "resolved" and key in episodes:
        starts = episodes[key]  # the resolution of the episode that fired
    else:
        starts = _iso(clock.now)
    if status == "firing":
        episodes[key] = starts
    alert = {"status": status, "labels": labels, "annotations": item.get("annotations") or {},
             "startsAt": starts, "endsAt": _iso(clock.now) if status == "resolved" else "",
             "generatorURL": "", "fingerprint": ""}
    payload = {"version": "4", "status": status, "receiver": "remediator",
               "groupKey": f'{{}}:{{alertname="{labels.get("alertname", "")}"}}',
               "groupLabels": {"alertname": labels.get("alertname", "")}, "commonLabels": labels,
               "commonAnnotations": alert["annotations"], "externalURL": "", "alerts": [alert]}
    try:
        notification = notification_from_dict(payload)
    except PayloadError as exc:
        raise PlaytestError([source.problem(at, "error", f"alert: {exc}")]) from None
    accepted = await service.intake(notification)
    try:
        decisions = await service.drain()
    except Undecided as exc:  # not even its failure could be recorded: the test cannot go on
        raise PlaytestError([source.problem(at, "error", f"{exc}")]) from None
    return decisions + [{"alertname": labels.get("alertname"), "status": status,
                         "playbook": None, "outcome": "duplicate", "reason": "already received",
                         "steps": [], "escalation": None}] * accepted.duplicates


# --- comparing ---------------------------------------------------------------------------------

def compare(expected: list[dict[str, Any]], decisions: list[dict[str, Any]]) -> str:
    """'' if every expected decision matches (only the keys it states), else a diff."""
    actual = [_project(e, _view(d)) for e, d in zip(expected, decisions, strict=False)]
    actual += [_summary(d) for d in decisions[len(expected):]]
    if actual == expected:
        return ""
    want, got = _dump(expected).splitlines(), _dump(actual).splitlines()
    head = [] if len(expected) == len(decisions) else [
        f"expected {len(expected)} decision(s), got {len(decisions)}"]
    diff = difflib.unified_diff(want, got, "expected", "actual", lineterm="", n=100)
    return "\n".join([*head, *diff])


def _view(decision: dict[str, Any]) -> dict[str, Any]:
    """The decision as tests address it: `guard` named, escalation `sinks` listed."""
    view = dict(decision)
    if decision.get("outcome") == "blocked":
        view["guard"] = (decision.get("reason") or "").split(":", 1)[0]
    esc = decision.get("escalation")
    if esc:
        view["escalation"] = {**esc, "sinks": sorted(esc.get("deliveries") or {})}
    return view


def _project(expected: Any, actual: Any, key: str = "") -> Any:
    """`actual` cut to the shape of `expected`; where it matches, exactly `expected`."""
    if key == "escalation" and isinstance(expected, bool):
        return actual is not None and actual is not False
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return _ABSENT if actual is None else actual
        return {k: _project(v, actual.get(k, _ABSENT), k) for k, v in expected.items()}
    if key == "steps" and isinstance(expected, list) and isinstance(actual, list):
        cut = [_project(e, a) for e, a in zip(expected, actual, strict=False)]
        return cut + [{"name": a.get("name"), "outcome": a.get("outcome")}
                      for a in actual[len(expected):]]
    if key in CONTAINS and isinstance(expected, str) and isinstance(actual, str) \
            and expected in actual:
        return expected
    return actual


def _summary(decision: dict[str, Any]) -> dict[str, Any]:
    """What `--show` prints of a decision: enough to write the `expect:` of a test from."""
    view = _view(decision)
    out = {k: view[k] for k in ("playbook", "outcome", "guard", "reason") if view.get(k)}
    out["steps"] = [{k: s[k] for k in ("name", "action", "params", "outcome", "detail") if s.get(k)}
                    for s in decision.get("steps") or []]
    out["escalation"] = bool(decision.get("escalation"))
    return out


# --- command line ---------------------------------------------------------------------------------

def cmd_test(args: argparse.Namespace) -> int:
    setup_logging("error", json_format=False)
    files = find_test_files(args.files)
    if not files:
        print(f"remediator test: no test files in {', '.join(args.files)}", file=sys.stderr)
        return 1
    failed = total = 0
    for file in files:
        print(file)
        try:
            results = run_file(file)
        except (PlaytestError, RulesError) as exc:
            failed += 1
            print("  ERROR  " + "\n         ".join(map(str, exc.problems)))
            continue
        for r in results:
            total += 1
            failed += not r.ok
            print(f"  {'ok   ' if r.ok else 'FAIL '}  {r.name}  ({len(r.decisions)} decision(s))")
            for text in (r.shown if args.show else []):
                print(_indent(text, 9))
            for failure in r.failures:
                print(_indent(failure, 9))
    print(f"{total} test(s), {failed} failed", file=sys.stderr)
    return 1 if failed else 0


def find_test_files(paths: Iterable[str]) -> list[str]:
    files: list[str] = []
    for p in paths:
        path = FsPath(p)
        files.extend(sorted(str(f) for f in path.rglob("*") if is_test_file(f))
                     if path.is_dir() else [p])
    return files


class _Dumper(yaml.SafeDumper):
    """Decisions as YAML: a str subclass (a decision's `target` is a `Target`) is its text;
    the safe dumper knows only `str` itself, and refused to print the diff."""


_Dumper.add_multi_representer(str, yaml.representer.SafeRepresenter.represent_str)


def _dump(value: Any) -> str:
    return yaml.dump(value, Dumper=_Dumper, sort_keys=False, allow_unicode=True,
                     width=100).rstrip()


def _indent(text: str, n: int) -> str:
    return "\n".join(" " * n + line for line in text.splitlines())


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _offset(seconds: float) -> str:
    return f"{seconds / 60:g}m" if seconds % 60 == 0 and seconds else f"{seconds:g}s"


def _alert_text(item: dict[str, Any]) -> str:
    labels = item["labels"]
    shown = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if k != "alertname")
    return f"{labels.get('alertname', '?')}{{{shown}}} ({item.get('status', 'firing')})"
