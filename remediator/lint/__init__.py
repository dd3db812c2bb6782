"""`remediator lint`: the serve-time validator, run offline, with CI-friendly output.

Playbook problems come from `playbooks.validate` and nowhere else, so a rule set that lints
clean is a rule set `serve` accepts. What lint adds is what only CI can know: the process
config it will run with (`--config`), the Prometheus rules that fire the alerts
(`--alert-rules`), and the permissions the playbooks need (`--permissions`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path as FsPath
from typing import Any

from .. import templating
from ..actions.base import Permission, check_params
from ..actions.registry import ACTIONS
from ..config import Config, ConfigError, load_config, read_config_source
from ..config_schema import check_config_source
from ..guards import (
    GuardSettings,
    allow_list,
    namespace_denied,
    system_namespaces_open,
    write_denied,
)
from ..playbooks.models import Playbook, Step
from ..playbooks.source import Problem, Source, SourceError, load_source
from ..playbooks.validate import Validation, is_test_file, validate_paths
from .promql import check_promql

SEVERITIES = ("error", "warning", "info")
# Annotations that say "a human has a procedure for this alert", i.e. a playbook candidate.
RUNBOOK_ANNOTATIONS = ("runbook_url", "remediation")
_NOT_RULES = "not a Prometheus rule file: expected `groups:`"


def cmd_lint(args: argparse.Namespace) -> int:
    if args.config and not FsPath(args.config).exists():
        return _usage(f"no such file: {args.config}")
    problems: list[Problem] = []
    cfg: Config | None = None
    if args.config:
        cfg, problems = check_config(args.config)
    if cfg is None:
        cfg = load_config(None, secrets=False)  # what `serve` without --config runs with
    paths = args.paths or cfg.rules
    missing = [p for p in [*paths, *args.alert_rules] if not FsPath(p).exists()]
    if missing:
        return _usage(f"no such file or directory: {', '.join(missing)}")
    result = validate_paths(paths, set(cfg.sink_specs()))
    problems += result.problems
    if args.config and not any(p.file == args.config and p.severity == "error" for p in problems):
        problems += check_scope(result, cfg.guards, args.config)
    if args.alert_rules:
        problems += check_alert_rules(result, args.alert_rules, args.external_alert)
    notes: list[str] = []
    problems += check_promql(result, notes)
    for note in notes if args.verbose else ():
        print(f"remediator lint: {note}", file=sys.stderr)
    problems.sort()
    if args.permissions:
        print(json.dumps(required_permissions(result.playbooks), indent=2)
              if args.format == "json" else permissions_yaml(result.playbooks))
        print_problems(problems, "text", out=sys.stderr)
    else:
        print_problems(problems, args.format)
    failing = {"error", "warning"} if args.strict else {"error"}
    return 1 if any(p.severity in failing for p in problems) else 0


def _usage(message: str) -> int:
    print(f"remediator lint: {message}", file=sys.stderr)
    return 2


# --- output --------------------------------------------------------------------------------

def print_problems(problems: list[Problem], fmt: str, out: Any = None) -> None:
    out = out or sys.stdout
    if fmt == "json":
        print(json.dumps([p.to_dict() for p in problems], indent=2), file=out)
        return
    for p in problems:
        print(github_annotation(p) if fmt == "github" else p, file=out)
    if fmt == "text":
        counts = {s: sum(p.severity == s for p in problems) for s in SEVERITIES}
        print(", ".join(f"{n} {s}(s)" for s, n in counts.items()), file=sys.stderr)


def github_annotation(p: Problem) -> str:
    """A GitHub Actions workflow command, escaped as the runner expects."""
    level = {"error": "error", "warning": "warning"}.get(p.severity, "notice")

    def prop(v: Any) -> str:
        return data(str(v)).replace(":", "%3A").replace(",", "%2C")

    def data(v: str) -> str:
        return v.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")

    return (f"::{level} file={prop(p.file)},line={p.line},col={p.col},"
            f"title={prop('remediator lint')}::{data(p.message)}")


# --- the process config ---------------------------------------------------------------------

def check_config(file: str) -> tuple[Config | None, list[Problem]]:
    """Load the config as serve would; warn where its namespace scope reaches system namespaces."""
    try:
        cfg = load_config(file, secrets=False)  # CI has the config, not the mounted Secrets
    except ConfigError as exc:
        return None, exc.problems or [Problem(file, 1, 1, "error", f"config: {exc}")]
    source = read_config_source(file)  # load_config has just read it
    problems = [p for p in check_config_source(source) if p.severity != "error"]
    allow = cfg.guards.namespaces_allow
    for ns in system_namespaces_open(cfg.guards):
        if ns in allow:
            problems.append(source.problem(
                ("guards", "namespaces", "allow", allow.index(ns)), "warning",
                f"guards.namespaces.allow lets remediator change system namespace {ns!r}"))
        else:
            problems.append(source.problem(
                ("guards", "namespaces", "deny"), "warning",
                f"system namespace {ns!r} is not in guards.namespaces.deny and there is no "
                "allow list: remediator may change it"))
    return cfg, problems


def check_scope(result: Validation, settings: GuardSettings, config: str) -> list[Problem]:
    """What the config's scope guard would refuse at run time (`scope_denied`), said now: the
    namespace of each mutating step (its own parameter, else its target's) and every place a
    step writes (`Action.scope`: buckets, compose projects, HTTP hosts, evidence directories),
    wherever the playbook names it literally. The rules are the guard's own functions.

    Against an allow list that is empty (the config allows no change of that kind at all) it
    is only info: one config often runs part of the rules (deploy/kubernetes leaves the
    compose playbooks to deploy/compose)."""
    problems: list[Problem] = []
    for pb in result.playbooks:
        for section in ("steps", "on_resolved"):
            for j, step in enumerate(getattr(pb, section)):
                for kind, name in _written(pb, step):
                    block = namespace_denied(settings, name) if kind == "namespace" else \
                        write_denied(settings, kind, name)
                    if block is None:
                        continue
                    off = kind != "namespace" and not allow_list(settings, kind)[0]
                    message = (f"step {step.name!r} would be refused at run time with {config} "
                               f"(scope_denied): {block.detail}")
                    if off:
                        message += (f"; this config allows no {allow_list(settings, kind)[2]} at "
                                    "all: lint this playbook with the config that runs it")
                    problems.append(result.problem_at(pb, (section, j, "action"),
                                                      "info" if off else "error", message))
    return problems


def _written(pb: Playbook, step: Step) -> list[tuple[str, str]]:
    """(kind, name) of every place the step acts in that the playbook names literally: the
    namespace of a mutation, and `Action.scope`."""
    action = ACTIONS[step.action]
    params, bad = check_params(action, step.params, rendered=False)
    if bad:
        return []  # the validator has said why
    places: list[tuple[str, str]] = []
    with contextlib.suppress(Exception):  # an action's declaration must not take lint down
        if action.mutates(params):
            target = step.target or pb.target
            places.append(("namespace", params.get("namespace")
                           or (target.namespace if target else "")))
        places += action.scope(params)
    places = [(kind, _pinned(pb, name)) for kind, name in places if isinstance(name, str)]
    return [(kind, name) for kind, name in places if name
            and "{{" not in name and "{%" not in name]  # a template: only run time knows


_LABEL = re.compile(r"\{\{\s*labels\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def _pinned(pb: Playbook, value: str) -> str:
    """`{{ labels.namespace }}` in a playbook matching only `namespace="shop"` is `shop`."""
    if (label := _LABEL.fullmatch(value.strip())) is not None:
        for m in pb.matchers:
            if m.name == label[1] and m.is_equality:
                return m.value
    return value


# --- Prometheus alert rules ------------------------------------------------------------------

def check_alert_rules(result: Validation, paths: Iterable[str],
                      external: Iterable[str] = ()) -> list[Problem]:
    """Playbooks for alerts no rule defines (warning); runbook alerts no playbook handles (info).

    `external`: alerts defined by rules lint is not given (kube-prometheus-stack's)."""
    problems: list[Problem] = []
    defined: dict[str, tuple[Source, tuple[Any, ...], dict[str, Any]]] = {}
    for file, explicit in _yaml_files(paths):
        try:
            source = load_source(file, FsPath(file).read_text(encoding="utf-8"))
        except SourceError as exc:
            problems.append(exc.problem)
            continue
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(Problem(file, 1, 1, "error", f"cannot read: {exc}"))
            continue
        rules, problem = _alert_rules(source)
        if problem and (explicit or problem.message != _NOT_RULES):
            problems.append(problem)  # a directory may hold other Prometheus files: skip them
        for path, rule in rules:
            defined.setdefault(rule["alert"], (source, path, rule))
    handled: set[str] = set()
    elsewhere = set(external)
    for pb in result.playbooks:
        handled.update(pb.alertnames)
        for i, name in enumerate(pb.alertnames):
            if name not in defined and name not in elsewhere:
                where = ("match", "alertname", i) if _is_list_match(result, pb) else \
                    ("match", "alertname")
                problems.append(result.problem_at(pb, where, "warning", (
                    f"no alerting rule defines alert {name!r} (defined by rules not linted "
                    f"here, e.g. kube-prometheus-stack's? pass --external-alert {name})")))
    for name, (source, path, rule) in sorted(defined.items()):
        annotations = rule.get("annotations") or {}
        marks = [a for a in RUNBOOK_ANNOTATIONS if a in annotations]
        if marks and name not in handled:
            problems.append(source.problem((*path, "alert"), "info",
                                           f"alert {name!r} has a {marks[0]} annotation but no "
                                           "playbook handles it"))
    return problems


def _alert_rules(source: Source) -> tuple[list[tuple[tuple[Any, ...], dict]], Problem | None]:
    """(path, rule) of every alerting rule; a PrometheusRule resource works as well."""
    data = source.data
    root: tuple[Any, ...] = ()
    if isinstance(data, dict) and isinstance(data.get("spec"), dict):
        data, root = data["spec"], ("spec",)
    if isinstance(data, dict) and "tests" in data and "groups" not in data:
        return [], None  # a promtool test file
    groups = data.get("groups") if isinstance(data, dict) else None
    if not isinstance(groups, list):
        return [], source.problem(root, "error", _NOT_RULES)
    found = []
    for g, group in enumerate(groups):
        rules = group.get("rules") if isinstance(group, dict) else None
        if not isinstance(rules, list):
            return found, source.problem((*root, "groups", g), "error",
                                         "rule group without a `rules:` list")
        found.extend(((*root, "groups", g, "rules", r), rule) for r, rule in enumerate(rules)
                     if isinstance(rule, dict) and isinstance(rule.get("alert"), str))
    return found, None


def _is_list_match(result: Validation, pb: Playbook) -> bool:
    source, at = result.origins[pb.order]
    return source.has((*at, "match", "alertname", 0))


def _yaml_files(paths: Iterable[str]) -> list[tuple[str, bool]]:
    """(file, named explicitly) for every YAML file; promtool's `*_test.yml` are left out."""
    files: list[tuple[str, bool]] = []
    for p in paths:
        path = FsPath(p)
        if path.is_dir():
            files.extend((str(f), False) for f in sorted(path.rglob("*"))
                         if f.suffix in (".yaml", ".yml") and f.is_file() and not is_test_file(f))
        else:
            files.append((str(path), True))
    return files


# --- permissions -------------------------------------------------------------------------------

def required_permissions(playbooks: Iterable[Playbook]) -> dict[str, Any]:
    """The union of the actions' declared permissions over every step of `playbooks`.

    The shape is stable, deploy/ checks its RBAC against it:
    `{"rbac": [{"apiGroups": [...], "resources": [...], "verbs": [...],
    "resourceNames": [...]}], "iam": [...], "wide": [...]}`: `resourceNames` where every step
    names its object literally; `wide` lists the grants that cover every object because a
    step's name is a template (e.g. `apps/deployments:patch ({{ labels.deployment }})`).
    """
    uses = list(_uses(playbooks))
    rbac = [perm for _, perm in uses if perm.kind == "rbac"]
    wide = sorted({f"{perm} used by {step}" for step, perm in uses
                   if perm.kind == "rbac" and templating.is_template(perm.name)})
    docker = {str(p) for _, p in uses if p.kind == "docker"}
    return {"rbac": rbac_rules(rbac), "iam": sorted({p.verb for _, p in uses if p.kind == "iam"}),
            "docker": sorted(docker, key=lambda e: (e.split(" ", 1)[1], e)), "wide": wide}


def rbac_rules(perms: Iterable[Permission]) -> list[dict[str, Any]]:
    """Role rules granting `perms`: one rule per API group, verb set and resourceNames.

    A call on a literally named object is granted with resourceNames; a call on a
    collection, or on a name only known at run time (a template), covers every object and
    makes named grants of the same (resource, verb) redundant."""
    perms = list(perms)
    wide = {(p.group, p.resource, p.verb) for p in perms
            if not p.name or templating.is_template(p.name)}
    names: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    for p in perms:
        if (p.group, p.resource, p.verb) not in wide:
            names[(p.group, p.resource, p.verb)].add(p.name)
    verbs: dict[tuple[str, str, tuple[str, ...]], set[str]] = defaultdict(set)
    for group, resource, verb in wide:
        verbs[(group, resource, ())].add(verb)
    for (group, resource, verb), named in names.items():
        verbs[(group, resource, tuple(sorted(named)))].add(verb)
    merged: dict[tuple[str, tuple[str, ...], tuple[str, ...]], list[str]] = defaultdict(list)
    for (group, resource, named), vs in sorted(verbs.items()):
        merged[(group, tuple(sorted(vs)), named)].append(resource)
    rules = []
    for (group, vs, named), resources in sorted(merged.items()):
        rule: dict[str, Any] = {"apiGroups": [group], "resources": resources, "verbs": list(vs)}
        if named:
            rule["resourceNames"] = list(named)
        rules.append(rule)
    return rules


def permissions_yaml(playbooks: list[Playbook]) -> str:
    """The permissions as YAML for review: `rbac:` items paste under a Role's `rules:`."""
    who: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    for step, perm in _uses(playbooks):
        key = perm.resource if perm.kind == "rbac" else perm.verb if perm.kind == "iam" else str(perm)
        who[(perm.kind, perm.group, key)].add(step)
    perms = required_permissions(playbooks)
    lines = ["# Kubernetes RBAC rules, IAM actions and Docker Engine API endpoints the playbooks "
             "need (remediator lint --permissions)", "rbac:" if perms["rbac"] else "rbac: []"]
    for rule in perms["rbac"]:
        users = {s for r in rule["resources"] for s in who[("rbac", rule["apiGroups"][0], r)]}
        lines += [f"  # used by {_short(sorted(users))}",
                  f"  - apiGroups: {json.dumps(rule['apiGroups'])}",
                  f"    resources: {json.dumps(rule['resources'])}",
                  f"    verbs: {json.dumps(rule['verbs'])}"]
        if "resourceNames" in rule:
            lines.append(f"    resourceNames: {json.dumps(rule['resourceNames'])}")
    lines.append("iam:" if perms["iam"] else "iam: []")
    lines += [f"  - {action}  # used by {_short(sorted(who[('iam', '', action)]))}"
              for action in perms["iam"]]
    # Engine API endpoints: what a socket proxy in front of the Docker socket must allow
    lines.append("docker:" if perms["docker"] else "docker: []")
    lines += [f"  - {json.dumps(endpoint)}  # used by "
              f"{_short(sorted(who[('docker', '', endpoint)]))}" for endpoint in perms["docker"]]
    lines += ["# grants that cover every object of their resource because a step's name is a",
              "# template (only run time knows it); name the object literally to grant it alone",
              "wide:" if perms["wide"] else "wide: []"]
    lines += [f"  - {json.dumps(w)}" for w in perms["wide"]]
    return "\n".join(lines)


def _uses(playbooks: Iterable[Playbook]) -> Iterable[tuple[str, Permission]]:
    """("playbook/step", permission) for every permission every step declares."""
    for pb in playbooks:
        for step in (*pb.steps, *pb.on_resolved):
            for perm in ACTIONS[step.action].permissions_for(step.params):
                yield f"{pb.name}/{step.name}", perm


def _short(names: list[str], limit: int = 4) -> str:
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more
