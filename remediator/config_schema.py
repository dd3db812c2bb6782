"""The config file schema: one definition for `serve`, `lint --config`, `test` and
`remediator schema --config`, checked by the playbooks' walker (playbooks/schema.py) so a
typo in the config is located (`file:line`, "did you mean") exactly like one in a rule.

Plain settings are derived from the `Config` dataclass (a new field is covered, typed, the
moment it exists); structured ones and value sets are declared below.
"""

from __future__ import annotations

import typing
from dataclasses import MISSING, Field, fields
from typing import Any

from .event_loop import CHOICES
from .playbooks.schema import DURATION, check_shape
from .playbooks.source import Problem, Source
from .store import url as store_url

# Settings with a value set or a shape beyond their Python type. `writeOnly` marks a value
# that may hold a secret (a password in a URL, a token in a Slack hook's path, a bcrypt
# hash): a refusal of it never quotes it (the walker's `_unshown`), since refusals reach logs.
STORE_URL = {"type": "string", "writeOnly": True,
             "pattern": r"^(sqlite://.*|postgres(ql)?://.+)$",
             "errorMessage": f"not a store URL: {store_url.USAGE}"}
# A port is 0 (any free one) to 65535: uvloop bound 99999 as 34463 (mod 65536) without a word.
_PORT = r"(0|[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
LISTEN = {"type": "string", "pattern": r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]*):" + _PORT + "$",
          "errorMessage": "not HOST:PORT with a port up to 65535: use e.g. 127.0.0.1:9095, "
                          "or 0.0.0.0:9095 for every interface"}
URL = {"type": "string", "writeOnly": True, "pattern": r"^https?://.+",
       "errorMessage": "not an http(s) URL: use e.g. http://127.0.0.1:9090"}
# Where remediator is reached (notes link to it): empty, or an absolute http(s) URL.
EXTERNAL_URL = {"type": "string", "pattern": r"^(https?://[^/?#\s]+(/\S*)?)?$",
                "errorMessage": "not an absolute http(s) URL: use e.g. "
                                "https://remediator.example.com"}
# A setting's duration: never negative (a file's -5 was taken as it stood).
SETTING_DURATION = {**DURATION, "minimum": 0}
STRINGS = {"type": "array", "items": {"type": "string"}}
_ALLOW = {"type": "object", "additionalProperties": False, "properties": {"allow": STRINGS}}

SINK = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "type": {"enum": ["directory", "webhook", "slack", "alertmanager"],
                 "description": "directory (default): Markdown files; webhook: JSON POST; "
                                "slack: incoming webhook; alertmanager: a RemediationEscalation "
                                "alert routed by team/severity"},
        "path": {"type": "string", "description": "directory sinks: where notes are written"},
        "url": URL,
        "headers": {"type": "object",
                    "additionalProperties": {"type": "string", "writeOnly": True}},
    },
}

GUARDS = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "paused": {"type": "boolean", "description": "the kill switch: nothing mutates"},
        "namespaces": {"type": "object", "additionalProperties": False,
                       "properties": {"allow": STRINGS, "deny": STRINGS}},
        "buckets": _ALLOW,
        "compose_projects": _ALLOW,
        "http": _ALLOW,
        "evidence": {"type": "object", "additionalProperties": False,
                     "properties": {"directories": STRINGS}},
        "budget": {"type": "object", "additionalProperties": False,
                   "properties": {"max": {"type": "integer", "minimum": 0}, "window": SETTING_DURATION}},
        "approval_ttl": SETTING_DURATION,
    },
}

OPERATOR = {
    "type": "object", "required": ["name", "role"], "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$",
                 "errorMessage": "must be 1-64 of A-Z a-z 0-9 . _ @ - (no ':' nor spaces)"},
        "role": {"enum": ["viewer", "operator"]},
        "token_file": {"type": "string", "description": "a file holding the bearer token"},
        "password_hash": {"type": "string", "writeOnly": True,
                          "pattern": r"^\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}$",
                          "errorMessage": "must be a bcrypt hash ($2b$…, e.g. from "
                                          "`htpasswd -nbBC 12 '' PASSWORD`)"},
    },
    "oneOf": [{"required": ["token_file"]}, {"required": ["password_hash"]}],
    "oneOfMessage": "give exactly one of token_file, password_hash",
}

# Config fields that live under a section of the file (`prometheus: {url: …}`); the flat
# name (`prometheus_url:`) is accepted too, as the environment variable spells it.
NESTED = {("prometheus", "url"): "prometheus_url", ("alertmanager", "url"): "alertmanager_url",
          ("escalation", "dir"): "escalation_dir", ("escalation", "sinks"): "escalation_sinks",
          ("escalation", "default_sinks"): "escalation_default_sinks",
          ("basic_auth", "username"): "basic_auth_username",
          ("basic_auth", "password"): "basic_auth_password",
          ("basic_auth", "password_file"): "basic_auth_password_file",
          ("console", "session_secret_file"): "console_session_secret_file",
          ("console", "session_ttl"): "console_session_ttl",
          ("console", "cookie_secure"): "console_cookie_secure",
          ("console", "graph_timeout"): "console_graph_timeout"}
SECRETS = ("webhook_token", "basic_auth_password", "store_password", "console_session_secret")

_DECLARED: dict[str, dict[str, Any]] = {
    "mode": {"enum": ["dry-run", "live"]},
    "store": STORE_URL,
    "store_sync": {"enum": ["normal", "full"],
                   "description": "full: fsync every intake commit (survives a power cut)"},
    "event_loop": {"enum": list(CHOICES),
                   "description": "auto: uvloop where installed, else asyncio's own loop"},
    "log_level": {"enum": ["debug", "info", "warning", "error"]},
    "listen": LISTEN,
    "prometheus_url": URL,
    "alertmanager_url": URL,
    "external_url": EXTERNAL_URL,
    "escalation_sinks": {"type": "object", "additionalProperties": SINK},
    "guards": GUARDS,
    "operators": {"type": "array", "items": OPERATOR},
    "history_retention": {**SETTING_DURATION, "description": "at least 1d"},
    "max_connections": {"type": "integer", "minimum": 0,
                        "description": "0: half the file descriptor limit"},
}


def _field_schema(name: str, annotation: Any, default: Any) -> dict[str, Any]:
    """A setting's schema, with its default (the dataclass's: defined there only)."""
    if name in _DECLARED:
        schema = dict(_DECLARED[name])
    elif annotation in (bool, "bool"):
        schema = {"type": "boolean"}
    elif annotation in (int, "int"):
        schema = {"type": "integer", "minimum": 1}
    elif annotation in (float, "float"):
        schema = dict(SETTING_DURATION)  # every float setting is a duration (seconds or 1h)
    elif str(annotation).startswith("list"):
        schema = STRINGS
    else:
        schema = {"type": "string"}
    if default is not MISSING and isinstance(default, str | int | float | bool | list) and \
            default != "" and name != "guards":
        schema = {**schema, "default": default}
    return schema


def _default(f: Field[Any]) -> Any:
    return f.default_factory() if f.default_factory is not MISSING else f.default


def _with_defaults(schema: dict[str, Any], settings: Any, path: tuple[str, ...] = ()
                   ) -> dict[str, Any]:
    """The guards' schema with each leaf's default, read from `GuardSettings` (whose field
    for `budget.max` is `budget_max`)."""
    if schema.get("type") == "object":
        return {**schema, "properties": {key: _with_defaults(sub, settings, (*path, key))
                                         for key, sub in schema["properties"].items()}}
    return {**schema, "default": getattr(settings, "_".join(path))}


def config_schema() -> dict[str, Any]:
    """The JSON Schema of the config file (`remediator schema --config`)."""
    from .config import Config  # config.py imports this module
    from .guards import GuardSettings

    hints = typing.get_type_hints(Config)
    flat = {f.name: _field_schema(f.name, hints.get(f.name, f.type), _default(f))
            for f in fields(Config)}
    flat["guards"] = _with_defaults(GUARDS, GuardSettings())
    for name in SECRETS:
        flat[name] = {**flat[name], "writeOnly": True}
        flat[f"{name}_file"] = {"type": "string",
                                "description": f"a file holding {name} (e.g. a mounted Secret)"}
    sections: dict[str, dict[str, Any]] = {}
    for (section, key), name in NESTED.items():
        sections.setdefault(section, {"type": "object", "additionalProperties": False,
                                      "properties": {}})["properties"][key] = flat[name]
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "remediator config file",
        "type": "object", "additionalProperties": False,
        "properties": {**flat, **sections},
    }


def check_config_source(source: Source) -> list[Problem]:
    """Shape problems (and duplicate keys) of a parsed config file, each at its line."""
    problems = [p for p in source.problems]
    if source.data is None:
        return problems
    shape = check_shape(source.data, config_schema(), ())
    problems += [source.problem(path, "error", message) for path, message in shape]
    store = source.data.get("store") if isinstance(source.data, dict) else None
    refused = not isinstance(store, str) or any(tuple(path[:1]) == ("store",) for path, _ in shape)
    if not refused and (why := store_url.problem(store)):  # what its pattern cannot say
        problems.append(source.problem(("store",), "error", f"store: {why}"))
    return problems
