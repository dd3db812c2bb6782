"""Settings: embedded defaults < config file < `REMEDIATOR_<NAME>` environment < flags.

Secrets also come from `<name>_file` (like Alertmanager's credentials_file), so a
Kubernetes Secret can be mounted instead of put in the environment.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from . import redact
from .actions.base import parse_duration
from .auth import Operator, check_distinct, check_token, parse_operators
from .config_schema import GUARDS, NESTED, SECRETS, STRINGS, check_config_source, config_schema
from .event_loop import uvloop_missing
from .guards import GuardSettings
from .playbooks.schema import check_shape, did_you_mean
from .playbooks.source import Problem, Source, SourceError, load_source
from .store import url as store_url


class ConfigError(ValueError):
    """A setting that cannot be used; the message names it (and, from the file, where)."""

    def __init__(self, problems: str | list[Problem]):
        self.problems = [] if isinstance(problems, str) else problems
        if isinstance(problems, list):
            first = str(problems[0]).replace(": error: ", ": ", 1)
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            problems = first + more
        super().__init__(problems)


@dataclass
class Config:
    """The process configuration (README: Configuration): file, environment and flags."""

    listen: str = "127.0.0.1:9095"
    mode: str = "dry-run"
    store: str = "sqlite:///remediator.db"
    store_sync: str = "normal"  # "full": fsync every intake commit (survives power loss)
    store_password: str = ""  # PostgreSQL; else libpq's environment (PGPASSWORD, PGPASSFILE)
    store_lease: float = 30.0  # PostgreSQL: a dead replica's work is taken over after this
    rules: list[str] = field(default_factory=lambda: ["rules"])
    rules_cache: str = "auto"  # parsed rule files between start-ups (playbooks/parse_cache.py)
    webhook_token: str = ""
    basic_auth_username: str = ""
    basic_auth_password: str = ""
    allow_unauthenticated: bool = False
    operators: list[Operator] = field(default_factory=list)  # API users: viewer | operator
    # Alertmanager does not retry a 413: room for the receiver's max_alerts (1000, shipped in
    # deploy/alertmanager/alertmanager.yml) alerts of up to 16 KiB of JSON each.
    max_body_bytes: int = 16 << 20
    # A client connection that has not sent a whole request header this long after it opened
    # or after its last response is closed: the header deadline and the keep-alive idle limit
    # in one (aiohttp's keepalive_timeout, 3630 s by default, let half-sent headers hold a
    # file descriptor each for an hour). Alertmanager reconnects; a running request (a slow
    # body, the console's live stream) is never cut by it.
    idle_timeout: float = 30.0
    # A request body still arriving this long after its header is a 408 (a webhook's a 503,
    # which Alertmanager retries) and its connection closed: idle_timeout ends once the
    # header is in, and a body trickled a byte at a time held a handler and a connection for
    # as long as its sender liked. Ample for max_body_bytes over any network.
    body_timeout: float = 30.0
    # Connections open at once; past it a new one is answered 503 and closed (listener.py).
    # 0: half the file descriptor limit (the rest for the store, the actions); no cap of
    # its own (listener.connection_limit says why).
    max_connections: int = 0
    # uvloop (libuv, in C) wherever it is installed; `asyncio`: Python's own (event_loop.py).
    event_loop: str = "auto"
    workers: int = 4  # action calls at once; a step that sleeps between polls holds none
    backend_concurrency: int = 4  # calls at once to one backend (kubernetes, s3, ...)
    max_executions: int = 256  # executions in flight at once, most of them asleep
    grace_period: float = 30.0
    inbox_retention: float = 7 * 86400.0  # how long finished alerts are kept for dedupe
    history_retention: float = 90 * 86400.0  # executions, steps, guard events, approvals
    prometheus_url: str = "http://127.0.0.1:9090"
    alertmanager_url: str = "http://127.0.0.1:9093"
    external_url: str = ""
    # The browser console (/ui): a shared secret signs session cookies (set it when several
    # replicas serve one URL, else each process picks its own); Secure cookies behind HTTPS.
    console_session_secret: str = ""
    console_session_ttl: float = 12 * 3600.0
    console_cookie_secure: bool = False
    console_graph_timeout: float = 3.0  # a Prometheus query_range for a graph, at most
    escalation_dir: str = "escalations"
    escalation_sinks: dict[str, dict[str, Any]] = field(default_factory=dict)
    escalation_default_sinks: list[str] = field(default_factory=lambda: ["files"])
    guards: GuardSettings = field(default_factory=GuardSettings)
    log_level: str = "info"

    def sink_specs(self) -> dict[str, dict[str, Any]]:
        """Configured sinks plus the built-in `files` directory sink."""
        return {"files": {"type": "directory", "path": self.escalation_dir},
                **self.escalation_sinks}


_BOOLS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}
# Checked as they are given (JSON, one variable per guard), each refusal naming its variable.
_CHECKED_AS_GIVEN = ("guards", "operators", "escalation_sinks")
# Lists whose empty value leaves nothing to run: blank in the environment (a Helm value left
# blank, `VAR=` in an env file), they are unset, as _WIDENED_WHEN_EMPTY's are.
_UNSET_WHEN_BLANK = ("rules",)


def load_config(file: str | None = None, env: dict[str, str] | None = None, *,
                secrets: bool = True, **flags: Any) -> Config:
    """`secrets=False` (lint, playbook tests: CI, where no Secret is mounted) checks the
    settings without reading any secret file.

    The file is checked against the one config schema (config_schema.py) first: unknown
    keys, types, value sets, durations, each reported at its `file:line`."""
    env = dict(os.environ if env is None else env)
    raw: dict[str, Any] = {}
    source = Source(file or "", None)
    if file:
        source = read_config_source(file)
        problems = [p for p in check_config_source(source) if p.severity == "error"]
        if problems:
            raise ConfigError(problems)
        raw = _flatten(source.data or {})
    for name in _JSON_SETTINGS:
        if (value := env.get(f"REMEDIATOR_{name.upper()}")) is not None:
            raw[name] = _json_setting(name, value)
    if guards := _guards_from_env(env, raw.get("guards")):
        raw["guards"] = guards
    # Where each value not from the file came from: its refusals name the variable or flag.
    origins: dict[str, str] = {}
    for f in fields(Config):
        if f.name in ("guards", *_JSON_SETTINGS):
            continue
        for name in (f.name, f"{f.name}_file"):
            value = env.get(variable := f"REMEDIATOR_{name.upper()}")
            if value is None or (name in _UNSET_WHEN_BLANK and not value.strip()):
                continue
            raw[name] = value
            origins[name] = variable
    for key, value in flags.items():
        if value is not None:
            raw[key] = value
            origins[key] = f"--{key.replace('_', '-')}"
    cfg = Config()
    for name in SECRETS:
        if raw.get(f"{name}_file") and not secrets:
            raw.pop(f"{name}_file")
        elif raw.get(f"{name}_file"):
            try:
                raw[name] = Path(raw.pop(f"{name}_file")).read_text().strip()
            except OSError as exc:  # the path unquoted: a secret put where it belongs would be
                raise ConfigError(f"{name}_file: cannot read the file it names: "
                                  f"{exc.strerror}") from None
        else:
            raw.pop(f"{name}_file", None)
    guards = raw.pop("guards", None)
    try:
        cfg.operators = parse_operators(raw.pop("operators", None),
                                        _read_secret if secrets else None)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    for key, value in raw.items():
        if not hasattr(cfg, key) or key == "guards":
            raise ConfigError(f"unknown setting {key!r}")
        setattr(cfg, key, _coerce(origins.get(key, key), value, getattr(cfg, key)))
    if guards is not None:
        cfg.guards = _guard_settings(guards)
    for variable in _PAUSED:  # the kill switch, settable without editing any file
        paused = env.get(variable, "").strip().lower()
        if paused and paused not in _BOOLS:
            raise ConfigError(f"{variable}: {paused!r} is not a boolean (true or false)")
        if _BOOLS.get(paused):
            cfg.guards.paused = True  # either one: a kill switch is never undone by a name
    _check_effective(cfg, origins)
    _check_sinks(cfg, source)
    if cfg.event_loop == "uvloop" and (missing := uvloop_missing()):
        raise ConfigError(f"event_loop: uvloop cannot be imported ({missing}): install it, or "
                          "set auto (uvloop where it can be imported, else asyncio's own loop)")
    if cfg.idle_timeout <= 0:
        raise ConfigError("idle_timeout must be more than 0: else a connection that never "
                          "finishes its request header is kept open for ever")
    if cfg.body_timeout <= 0:
        raise ConfigError("body_timeout must be more than 0: a request body is read within it")
    if cfg.store_lease < 3:  # the PostgreSQL store's floor, refused there with a traceback
        raise ConfigError(f"store_lease must be at least 3s, got {cfg.store_lease:g}s")
    if cfg.history_retention < 86400:
        raise ConfigError("history_retention must be at least 1d: guard windows count the "
                          "events it prunes")
    if cfg.history_retention < cfg.inbox_retention:
        # A still-firing alert is re-sent with its old startsAt; once both its inbox row and its
        # execution are pruned, that re-send would look new and run the playbook again.
        raise ConfigError("history_retention must be at least inbox_retention: an execution "
                          "pruned before its alert's inbox row would let a re-sent alert run again")
    try:
        if cfg.webhook_token:
            check_token(cfg.webhook_token, "webhook_token")
        if cfg.basic_auth_username and (secrets or cfg.basic_auth_password):
            # The same credential as the token, sent another way: as guessable when short.
            check_token(cfg.basic_auth_password, "basic_auth.password")
        check_distinct(cfg.operators, cfg.webhook_token, cfg.basic_auth_username)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    redact.remember(cfg.webhook_token, cfg.basic_auth_password, cfg.console_session_secret,
                    cfg.store_password, *store_url.passwords(cfg.store),
                    *(u.token for u in cfg.operators))
    # Sent as Basic auth: a server's error page may quote back the header's base64.
    redact.remember_basic(cfg.basic_auth_username, cfg.basic_auth_password)
    for url in (cfg.prometheus_url, cfg.alertmanager_url):
        redact.remember_url(url)
    return cfg


def unknown_variables(env: dict[str, str]) -> list[str]:
    """A warning for each `REMEDIATOR_*` variable that looks like a setting misspelt
    (`REMEDIATOR_PAUSE`): ignored, it would leave a kill switch or a guard unset unseen.
    So is every unknown name under `REMEDIATOR_GUARDS`, the guards' alone: the section
    as JSON (`REMEDIATOR_GUARDS='{"paused": true}'`, as operators and sinks are given) is
    no setting, and paused nothing. Other names unlike any setting's are not flagged: a
    playbook's secret may come from one."""
    known = [f"REMEDIATOR_{f.name.upper()}" for f in fields(Config) if f.name != "guards"]
    known += [f"REMEDIATOR_{name.upper()}_FILE" for name in SECRETS]
    known += [*_GUARD_VARIABLES, *_PAUSED, *_CLIENT_VARIABLES]
    return [f"{name} is not a setting and is ignored{hint}" for name in sorted(env)
            if name.startswith("REMEDIATOR_") and name not in known
            and (hint := did_you_mean(name, known, cutoff=0.85) or _guards_hint(name))]


def _guards_hint(name: str) -> str:
    if name != "REMEDIATOR_GUARDS" and not name.startswith("REMEDIATOR_GUARDS_"):
        return ""
    return (" (the guards take one variable per setting, e.g. REMEDIATOR_GUARDS_PAUSED, "
            "REMEDIATOR_GUARDS_BUDGET_MAX)")


def read_config_source(file: str) -> Source:
    """The config file parsed with every key's position; ConfigError if unreadable."""
    try:
        return load_source(file, Path(file).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config {file}: "
                          f"{getattr(exc, 'strerror', None) or exc}") from None
    except SourceError as exc:
        raise ConfigError([exc.problem]) from None


def _check_effective(cfg: Config, origins: dict[str, str]) -> None:
    """Every setting, whichever source gave it, meets the file's schema (its types, value
    sets, minimums): `REMEDIATOR_WORKERS=0` started a server that never decided an alert.
    A refusal names the variable or flag that gave the value."""
    schema = config_schema()["properties"]
    for f in fields(Config):
        if f.name in _CHECKED_AS_GIVEN:
            continue
        for _, message in check_shape(getattr(cfg, f.name), schema[f.name], (f.name,)):
            # `REMEDIATOR_WORKERS: workers: must be >= 1`, as the guards' variables say it
            raise ConfigError(f"{origins[f.name]}: {message}" if f.name in origins else message)
    if why := store_url.problem(cfg.store):  # a file's was refused at its line already
        where = f"{origins['store']}: " if "store" in origins else ""
        raise ConfigError(f"{where}store: {why}")


def _check_sinks(cfg: Config, source: Source) -> None:
    """Every sink named is configured, and every sink can be built: a typo here would fail
    each escalation at run time, so it fails the start instead."""
    specs = cfg.sink_specs()
    for i, name in enumerate(cfg.escalation_default_sinks):
        if name not in specs:
            raise _at(source, ("escalation", "default_sinks", i),
                      f"escalation.default_sinks: sink {name!r} is not configured (configured: "
                      f"{', '.join(sorted(specs))}){did_you_mean(name, sorted(specs))}")
    for name, spec in cfg.escalation_sinks.items():
        if spec.get("type", "directory") != "directory" and not spec.get("url"):
            raise _at(source, ("escalation", "sinks", name),
                      f"escalation.sinks.{name}: url is required for type {spec['type']}")


def _at(source: Source, path: tuple[str | int, ...], message: str) -> ConfigError:
    """A ConfigError located in the file when the setting came from one."""
    in_file = source.data is not None and source.where(path) != (1, 1)
    return ConfigError([source.problem(path, "error", message)] if in_file else message)


def _read_secret(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        # The path unquoted: a token put where its file's path belongs would be.
        raise ValueError(f"cannot read its token_file: {exc.strerror}") from None


def _flatten(data: dict[str, Any]) -> dict[str, Any]:
    """`prometheus: {url: …}` onto `prometheus_url` (the schema has checked every key)."""
    out: dict[str, Any] = {}
    sections = {section for section, _ in NESTED}
    for key, value in data.items():
        if key in sections and isinstance(value, dict):
            out.update({NESTED[(key, sub)]: item for sub, item in value.items()})
        else:
            out[key] = value
    return out


def _coerce(where: str, value: Any, default: Any) -> Any:
    """A value in its setting's type; `where` (the variable or flag that gave it) named in a
    refusal. A file's value has its type already: the schema checked it."""
    expected = "a boolean (true or false)"
    try:
        if isinstance(default, bool):
            return value if isinstance(value, bool) else _BOOLS[str(value).strip().lower()]
        if isinstance(default, int):
            expected = "an integer"
            return value if isinstance(value, int) else int(str(value).strip(), 10)
        if isinstance(default, float):
            expected = "a duration (e.g. 30s, 5m, 1h30m)"
            return parse_duration(value)
        if isinstance(default, list) and isinstance(value, str):
            return _listed(value)
    except (KeyError, TypeError, ValueError):
        raise ConfigError(f"{where}: {value!r} is not {expected}") from None
    return value


# Structured settings take their file's shape as JSON in the environment (a Deployment's
# `env` carries them as one string); the guards' leaves take one variable each, below.
_JSON_SETTINGS = ("operators", "escalation_sinks")


def _json_setting(name: str, text: str) -> Any:
    """`REMEDIATOR_OPERATORS`, `REMEDIATOR_ESCALATION_SINKS`: JSON, checked by the file's
    schema, in place of the file's value (whose refusals quote no secret: `writeOnly`)."""
    variable = f"REMEDIATOR_{name.upper()}"
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{variable}: not JSON ({exc.msg} at character {exc.pos})") from None
    for _, message in check_shape(value, config_schema()["properties"][name], (name,)):
        raise ConfigError(f"{variable}: {message}")
    return value


def _guard_leaves(schema: dict[str, Any], path: tuple[str, ...] = ()
                  ) -> list[tuple[tuple[str, ...], dict[str, Any]]]:
    """Each setting under `guards` (its path) with its schema."""
    if schema.get("type") != "object":
        return [(path, schema)]
    return [leaf for key, sub in schema["properties"].items()
            for leaf in _guard_leaves(sub, (*path, key))]


# `guards.budget.max` is REMEDIATOR_GUARDS_BUDGET_MAX; the kill switch has its short name too.
_GUARD_VARIABLES = {f"REMEDIATOR_GUARDS_{'_'.join(leaf).upper()}": (leaf, schema)
                    for leaf, schema in _guard_leaves(GUARDS) if leaf != ("paused",)}
_PAUSED = ("REMEDIATOR_PAUSED", "REMEDIATOR_GUARDS_PAUSED")
# The lists whose empty value widens the scope (deny no namespace, allow any): empty in the
# environment (a Helm value left blank, `VAR=` in an env file), they are unset, never wider
# than the file or the default (kube-system and the other system namespaces denied). Denying
# none takes `deny: []` in the file, which `serve` and `lint --config` warn of. Every other
# list's empty value allows none, which only narrows.
_WIDENED_WHEN_EMPTY = (("namespaces", "deny"), ("namespaces", "allow"))
# Read by the CLI's clients (`approve`), not by the server.
_CLIENT_VARIABLES = ("REMEDIATOR_OPERATOR_TOKEN", "REMEDIATOR_OPERATOR_TOKEN_FILE")


def _guards_from_env(env: dict[str, str], guards: Any) -> dict[str, Any] | None:
    """The file's guards with each `REMEDIATOR_GUARDS_*` variable set put over its leaf
    (lists comma-separated, as `REMEDIATOR_RULES`; empty: none), checked by the schema."""
    merged: dict[str, Any] = json.loads(json.dumps(guards or {}))  # plain data: a deep copy
    given: dict[tuple[str, ...], str] = {}
    for variable, (leaf, schema) in _GUARD_VARIABLES.items():
        if (text := env.get(variable)) is None:
            continue
        value: Any = text.strip()
        if schema is STRINGS:
            value = _listed(text)
            if not value and leaf in _WIDENED_WHEN_EMPTY:
                continue  # unset: see _WIDENED_WHEN_EMPTY
        elif schema.get("type") == "integer":
            try:
                value = int(value)
            except ValueError:
                raise ConfigError(f"{variable}: {text!r} is not an integer") from None
        node = merged
        for key in leaf[:-1]:
            node = node.setdefault(key, {})
        node[leaf[-1]] = value
        given[leaf] = variable
    if not given:
        return None
    for path, message in check_shape(merged, GUARDS, ()):  # the file's values passed already
        variable = next(v for leaf, v in given.items() if tuple(path[:len(leaf)]) == leaf)
        raise ConfigError(f"{variable}: guards.{message}")
    return merged


def _listed(text: str) -> list[str]:
    """A list from the environment: comma-separated, blanks dropped (empty: none)."""
    return [v.strip() for v in text.split(",") if v.strip()]


def _guard_settings(data: dict[str, Any]) -> GuardSettings:
    s = GuardSettings()
    namespaces = data.get("namespaces", {})
    s.paused = data.get("paused", False)  # a boolean: the schema refused "false"
    s.namespaces_allow = list(namespaces.get("allow", s.namespaces_allow))
    s.namespaces_deny = list(namespaces.get("deny", s.namespaces_deny))
    s.buckets_allow = list(data.get("buckets", {}).get("allow", s.buckets_allow))
    s.compose_projects_allow = list(data.get("compose_projects", {}).get(
        "allow", s.compose_projects_allow))
    s.evidence_directories = list(data.get("evidence", {}).get(
        "directories", s.evidence_directories))
    s.http_allow = [str(h).lower() for h in data.get("http", {}).get("allow", s.http_allow)]
    budget = data.get("budget", {})
    s.budget_max = int(budget.get("max", s.budget_max))
    s.budget_window = parse_duration(budget.get("window", s.budget_window))
    s.approval_ttl = parse_duration(data.get("approval_ttl", s.approval_ttl))
    return s
