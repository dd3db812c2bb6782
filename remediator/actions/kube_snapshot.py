"""What `kubernetes.get` records of an object: the object as the apiserver answered, minus
managedFields, through secret_text.py's filter (the one for what a container holds or prints)
before a step result, a note, the journal or the API shows it.

A pod template is where credentials sit in plain text: an env entry's literal `value`
(DB_PASS, a DATABASE_URL with its password) is judged like docker.inspect's environment
(withheld when its name or value looks secret, else its inline credentials masked, and
`{name, value}` kept: playbooks compare them); `args`/`command` are read like
/proc/<pid>/cmdline (`--password x` as two words too); a ConfigMap's data like env entries
(a file's lines like exec output), its binaryData never; the last-applied-configuration
annotation, which repeats the whole spec, through the same rules. Every other string is
filtered like parsed JSON output: one under a credential's key (`password`, `token`) is
withheld, inline credentials and known token shapes in any are masked.
"""

from __future__ import annotations

import json
from typing import Any

from .. import redact
from .secret_text import credential, looks_secret, masked, output, secret_variable

_LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def evidence(obj: dict[str, Any], plural: str) -> dict[str, Any]:
    """`obj` fit to record (`plural`: its kind; a list's items do not name it)."""
    (obj.get("metadata") or {}).pop("managedFields", None)  # bookkeeping: triples the size
    shown = _walk(obj)
    if plural == "configmaps":
        data = obj.get("data")
        if isinstance(data, dict):
            shown["data"] = {k: _variable(k, v) if isinstance(v, str) else _walk(v)
                             for k, v in data.items()}
        if isinstance(obj.get("binaryData"), dict):
            shown["binaryData"] = dict.fromkeys(obj["binaryData"], redact.REDACTED)
    return shown


def _walk(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _field(str(k), v) for k, v in value.items()}
    if isinstance(value, list):
        return [_walk(v) for v in value]
    if isinstance(value, str):
        return output(value, lone_keys=False)
    return value


def _field(key: str, value: Any) -> Any:
    if isinstance(value, str):
        return redact.REDACTED if credential(key, value) else output(value, lone_keys=False)
    if key == "env" and isinstance(value, list):
        return [_env(item) for item in value]
    if key in ("args", "command") and isinstance(value, list) \
            and all(isinstance(v, str) for v in value):
        return _argv(value)
    if key == "annotations" and isinstance(value, dict):
        return {k: _annotation(str(k), v) for k, v in value.items()}
    return _walk(value)


def _env(item: Any) -> Any:
    """`{name, value}` kept, the value judged as an environment variable's."""
    if not isinstance(item, dict) or not isinstance(item.get("value"), str):
        return _walk(item)
    name = str(item.get("name", ""))
    return {**_walk(item), "value": _variable(name, item["value"])}


def _variable(name: str, value: str) -> str:
    if secret_variable(name, value):
        return redact.REDACTED
    return output(value) if "\n" in value else masked(value)  # a file: line by line


def _argv(words: list[str]) -> list[str]:
    """A command line read as /proc/<pid>/cmdline has it: an option's value is the next word."""
    shown = output("\x00".join(words)).split("\x00")
    return shown if len(shown) == len(words) else [output(w).replace("\x00", " ") for w in words]


def _annotation(key: str, value: Any) -> Any:
    if not isinstance(value, str):
        return _walk(value)
    if key == _LAST_APPLIED:  # the whole spec again, env included: the same rules
        try:
            applied = json.loads(value)
        except ValueError:
            return redact.REDACTED
        if not isinstance(applied, dict):
            return redact.REDACTED
        kind = str(applied.get("kind", "")).lower()
        return json.dumps(evidence(applied, "configmaps" if kind == "configmap" else kind),
                          separators=(",", ":"))
    # its name after the prefix (`example.com/admin-token`)
    if credential(key.rsplit("/", 1)[-1], value) or looks_secret(value):
        return redact.REDACTED
    return output(value, lone_keys=False)
