"""Settings: embedded defaults < config file < `REMEDIATOR_<NAME>` environment < flags.

Secrets also come from `<name>_file` (like Alertmanager's credentials_file), so a
Kubernetes Secret can be mounted instead of put in the environment.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from . import redact
from .actions.base import parse_duration
from .auth import Operator, check_distinct, parse_operators
from .guards import GuardSettings


class ConfigError(ValueError):
    """A setting that cannot be used; the message names it."""


@dataclass
class Config:
    listen: str = "127.0.0.1:9095"
    mode: str = "dry-run"
    store: str = "sqlite:///remediator.db"
    store_sync: str = "normal"  # "full": fsync every intake commit (survives power loss)
    store_password: str = ""  # PostgreSQL; else libpq's environment (PGPASSWORD, PGPASSFILE)
    store_lease: float = 30.0  # PostgreSQL: a dead replica's work is taken over after this
    rules: list[str] = field(default_factory=lambda: ["rules"])
    webhook_token: str = ""
    basic_auth_username: str = ""
    basic_auth_password: str = ""
    allow_unauthenticated: bool = False
    operators: list[Operator] = field(default_factory=list)  # API users: viewer | operator
    # Alertmanager does not retry a 413: room for the receiver's max_alerts (1000, shipped in
    # deploy/alertmanager/alertmanager.yml) alerts of up to 16 KiB of JSON each.
    max_body_bytes: int = 16 << 20
    workers: int = 4  # action calls at once; a step that sleeps between polls holds none
    backend_concurrency: int = 4  # calls at once to one backend (kubernetes, s3, ...)
    max_executions: int = 256  # executions in flight at once, most of them asleep
    grace_period: float = 30.0
    inbox_retention: float = 7 * 86400.0  # how long finished alerts are kept for dedupe
    history_retention: float = 90 * 86400.0  # executions, steps, guard events, approvals
    prometheus_url: str = "http://127.0.0.1:9090"
    alertmanager_url: str = "http://127.0.0.1:9093"
    external_url: str = ""
    escalation_dir: str = "escalations"
    escalation_sinks: dict[str, dict[str, Any]] = field(default_factory=dict)
    escalation_default_sinks: list[str] = field(default_factory=lambda: ["files"])
    guards: GuardSettings = field(default_factory=GuardSettings)
    log_level: str = "info"

    def sink_specs(self) -> dict[str, dict[str, Any]]:
        """Configured sinks plus the built-in `files` directory sink."""
        return {"files": {"type": "directory", "path": self.escalation_dir},
                **self.escalation_sinks}


_SECRETS = ("webhook_token", "basic_auth_password", "store_password")
# Nested config-file keys flattened onto Config fields.
_NESTED = {("prometheus", "url"): "prometheus_url", ("alertmanager", "url"): "alertmanager_url",
           ("escalation", "dir"): "escalation_dir", ("escalation", "sinks"): "escalation_sinks",
           ("escalation", "default_sinks"): "escalation_default_sinks",
           ("basic_auth", "username"): "basic_auth_username",
           ("basic_auth", "password"): "basic_auth_password",
           ("basic_auth", "password_file"): "basic_auth_password_file"}


def load_config(file: str | None = None, env: dict[str, str] | None = None, *,
                secrets: bool = True, **flags: Any) -> Config:
    """`secrets=False` (lint, playbook tests: CI, where no Secret is mounted) checks the
    settings without reading any secret file."""
    env = dict(os.environ if env is None else env)
    raw: dict[str, Any] = {}
    if file:
        try:
            data = yaml.safe_load(Path(file).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read config {file}: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config {file}: must be a mapping")
        raw = _flatten(data)
    for f in fields(Config):
        if f.name in ("guards", "escalation_sinks", "operators"):
            continue  # structured: config file only
        for name in (f.name, f"{f.name}_file"):
            value = env.get(f"REMEDIATOR_{name.upper()}")
            if value is not None:
                raw[name] = value
    raw.update({k: v for k, v in flags.items() if v is not None})
    cfg = Config()
    for name in _SECRETS:
        if raw.get(f"{name}_file") and not secrets:
            raw.pop(f"{name}_file")
        elif raw.get(f"{name}_file"):
            try:
                raw[name] = Path(raw.pop(f"{name}_file")).read_text().strip()
            except OSError as exc:
                raise ConfigError(f"{name}_file: {exc}") from None
    guards = raw.pop("guards", None)
    try:
        cfg.operators = parse_operators(raw.pop("operators", None),
                                        _read_secret if secrets else None)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    for key, value in raw.items():
        if not hasattr(cfg, key) or key == "guards":
            raise ConfigError(f"unknown setting {key!r}")
        setattr(cfg, key, _coerce(key, value, getattr(cfg, key)))
    if guards is not None:
        if not isinstance(guards, dict):
            raise ConfigError("guards: must be a mapping")
        cfg.guards = _guard_settings(guards)
    if str(env.get("REMEDIATOR_PAUSED", "")).lower() in ("1", "true", "yes"):
        cfg.guards.paused = True  # the kill switch, settable without editing any file
    if cfg.history_retention < 86400:
        raise ConfigError("history_retention must be at least 1d: guard windows count the "
                          "events it prunes")
    try:
        check_distinct(cfg.operators, cfg.webhook_token, cfg.basic_auth_username)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    redact.remember(cfg.webhook_token, cfg.basic_auth_password, *(u.token for u in cfg.operators))
    if cfg.mode not in ("dry-run", "live"):
        raise ConfigError(f"mode must be dry-run or live, got {cfg.mode!r}")
    return cfg


def _read_secret(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None


def _flatten(data: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and key in {k for k, _ in _NESTED}:
            for sub, item in value.items():
                if (key, sub) not in _NESTED:
                    raise ConfigError(f"unknown setting {key}.{sub}")
                out[_NESTED[(key, sub)]] = item
        else:
            out[key] = value
    return out


def _coerce(key: str, value: Any, default: Any) -> Any:
    try:
        if isinstance(default, bool):
            return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return parse_duration(value)
        if isinstance(default, list) and isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"setting {key}: {exc}") from None
    return value


def _guard_settings(data: dict[str, Any]) -> GuardSettings:
    s = GuardSettings()
    namespaces = data.get("namespaces", {})
    s.paused = bool(data.get("paused", False))
    s.namespaces_allow = list(namespaces.get("allow", s.namespaces_allow))
    s.namespaces_deny = list(namespaces.get("deny", s.namespaces_deny))
    s.buckets_allow = list(data.get("buckets", {}).get("allow", s.buckets_allow))
    s.compose_projects_allow = list(data.get("compose_projects", {}).get(
        "allow", s.compose_projects_allow))
    s.evidence_directories = list(data.get("evidence", {}).get(
        "directories", s.evidence_directories))
    budget = data.get("budget", {})
    s.budget_max = int(budget.get("max", s.budget_max))
    s.budget_window = parse_duration(budget.get("window", s.budget_window))
    s.approval_ttl = parse_duration(data.get("approval_ttl", s.approval_ttl))
    return s
