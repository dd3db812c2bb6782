"""The uniform action interface.

An action is a room of its own: it declares its parameters, whether it mutates the world,
the permissions it needs, how it describes itself in dry-run, which of its errors are worth
retrying, and how it runs. The loader, lint, `schema`, the guards and deploy/ RBAC all read
these declarations; nothing else needs to know an action's internals.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import json
import logging
import math
import re
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .. import templating
from ..templating import validators


class ActionError(Exception):
    """An action failed in a way worth reporting as the step's detail.

    `result` keeps what was observed (a status, a checksum) so the record shows it.
    `unapplied` says the failed call changed nothing for sure: it failed before any write
    was sent (a check, a read), or the server refused the write outright (a 4xx). Unset, the
    error may have come after a write landed (an unexpected answer to it), so `maybe_applied`
    counts it as a change in an unknown state; the raising code knows, nothing else does.
    """

    def __init__(self, message: str, result: dict[str, Any] | None = None, *,
                 unapplied: bool = False):
        super().__init__(message)
        self.result = result or {}
        self.unapplied = unapplied


class TransientError(ActionError):
    """A failure that may succeed on retry (429, 5xx, timeouts, resets). `retry_after`: the
    seconds the server asked to wait before trying again (`Retry-After`), if it said."""

    def __init__(self, message: str, result: dict[str, Any] | None = None, *,
                 unapplied: bool = False, retry_after: float | None = None):
        super().__init__(message, result, unapplied=unapplied)
        self.retry_after = retry_after


def retry_after(value: str | None) -> float | None:
    """Seconds from a `Retry-After` header (delay-seconds or an HTTP date); None without one.
    A 429 carrying it was refused before processing (RFC 6585), so even a change may retry."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - time.time())


class ParamError(ValueError):
    """Parameters that do not fit the action's declaration."""


@dataclass(frozen=True)
class Param:
    """One parameter of an action: its type, and the checks the validator applies to it."""

    type: str  # string | integer | number | boolean | duration | list | mapping | any
    required: bool = False
    default: Any = None
    # a validators.VALIDATORS name (strings, list items) or ENTRY_VALIDATORS one (a mapping's
    # entries: an HTTP header's name and value)
    kind: str | None = None
    choices: tuple[Any, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    description: str = ""
    # Written in the playbook as is: a template is refused at load (lint, serve), so nothing
    # an alert carries can reach it (a command's argv).
    literal: bool = False
    # A regular expression: an alert's value templated into it must go through `re_escape`
    # (lint warns otherwise), or a label such as `.*` matches every line.
    regex: bool = False


@dataclass(frozen=True)
class Permission:
    """Kubernetes RBAC (group, resource, verb), an IAM action (`s3:GetObject`) or a Docker
    Engine API endpoint (method, path: `POST /containers/{id}/restart`)."""

    kind: str  # "rbac" | "iam" | "docker"
    verb: str
    resource: str = ""
    group: str = ""
    # The one object the call touches (RBAC resourceNames), as the step wrote it: "" when
    # the call is on a collection, a template when only run time knows (a wide grant).
    name: str = ""

    def __str__(self) -> str:
        if self.kind == "iam":
            return self.verb
        if self.kind == "docker":
            return f"{self.verb} {self.resource}"
        group = self.group or "core"
        named = f" ({self.name})" if self.name else ""
        return f"{group}/{self.resource}:{self.verb}{named}"


def rbac(group: str, resource: str, *verbs: str) -> tuple[Permission, ...]:
    return tuple(Permission("rbac", v, resource, group) for v in verbs)


def iam(*actions: str) -> tuple[Permission, ...]:
    return tuple(Permission("iam", a) for a in actions)


@dataclass
class ActionContext:
    """What a running action may use: shared backends, a logger, and the execution's facts."""

    backends: Any
    log: logging.Logger
    execution_id: str = ""
    fingerprint: str = ""
    results: Mapping[str, Any] = field(default_factory=dict)
    # How an action waits between polls: the executor's version gives its call slot back.
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    step: str = ""  # the step's name: what it writes is kept apart from its siblings'


# A step's overall deadline, unless the step sets `timeout:`: this, or the action's own
# timeout (a wait, a poll, a request) plus a margin for its last call, whichever is longer.
DEFAULT_DEADLINE = 60.0
DEADLINE_MARGIN = 30.0


class Action:
    name: ClassVar[str]
    summary: ClassVar[str] = ""
    mutating: ClassVar[bool] = False
    # Safe to repeat after a crash left it unfinished (same params, same end state).
    idempotent: ClassVar[bool] = False
    # Touches no backend and no clock (`check`, `log`): `remediator test` runs it for real.
    local: ClassVar[bool] = False
    params: ClassVar[dict[str, Param]] = {}
    # (low, high) parameter pairs that must be ordered; checked wherever both are literal,
    # so lint catches `min: 10, max: 2` even when another parameter is a template.
    ordered: ClassVar[tuple[tuple[str, str], ...]] = ()
    permissions: ClassVar[tuple[Permission, ...]] = ()
    # The parameters `check_for_alert` reads (it is given only those): a dry run judges it
    # while another parameter waits for an earlier step's result. None: it may read any, so a
    # plan leaves it to the run whenever some parameter waits.
    alert_params: ClassVar[tuple[str, ...] | None] = None

    def mutates(self, params: dict[str, Any]) -> bool:
        """Whether this call changes the world; guards and dry-run act on this."""
        return self.mutating

    def permissions_for(self, params: dict[str, Any]) -> tuple[Permission, ...]:
        """What one step needs. `permissions` is everything the action may need; an action
        narrows it by the step's literal parameters (its kind, its resource), so deploy/
        RBAC grants what the shipped playbooks use and nothing more."""
        return self.permissions

    def scope(self, params: dict[str, Any]) -> list[tuple[str, str]]:
        """Where this call writes, for the scope guard: (kind, name) pairs such as
        ("bucket", b), ("http_host", h), ("compose_project", p), ("evidence_directory", d);
        each kind has its allow list in guards (empty: nothing of that kind is written).
        Namespaces are checked for every mutation, from the step or its target."""
        return []

    def touches(self, params: dict[str, Any]) -> dict[str, Any]:
        """The object a mutating call changes, as far as the step names it: any of `kind`,
        `namespace`, `name` (values as written, templates included). Lint compares it with
        the step's target (the step's own, else the playbook's), so locks, cooldowns and
        rate limits key on the object actually touched. Empty: not one named object."""
        return {}

    def repeatable(self, params: dict[str, Any]) -> bool:
        """May this call run again after a crash interrupted it? Reads always may."""
        return self.idempotent or not self.mutates(params)

    def own_timeout(self, params: dict[str, Any]) -> float | None:
        """How long one call may take by its own parameters (its `timeout` duration); None
        when it has none, or it is still a template."""
        value = params.get("timeout")
        spec = self.params.get("timeout")
        if spec is None or spec.type != "duration" or isinstance(value, bool):
            return None
        return float(value) if isinstance(value, int | float) else None

    def deadline(self, params: dict[str, Any]) -> float:
        """The step's deadline when the playbook sets none: never shorter than the action's
        own timeout, so a `wait_until` of 10m is not cut off at a default 60 s."""
        own = self.own_timeout(params)
        return DEFAULT_DEADLINE if own is None else max(DEFAULT_DEADLINE, own + DEADLINE_MARGIN)

    def check(self, params: dict[str, Any]) -> list[str]:
        """Cross-parameter rules beyond the per-parameter declaration (e.g. min <= max)."""
        return []

    def check_for_alert(self, params: dict[str, Any], labels: Mapping[str, str]) -> list[str]:
        """Rules that depend on the alert being remediated (a silence covers that alert
        only); checked on the rendered step, before any guard or call. Given only
        `alert_params`, when the action names them."""
        return []

    def advise(self, params: dict[str, Any]) -> list[tuple[str, str]]:
        """Lint warnings on a step's parameters as written: (parameter, message)."""
        return []

    def describe(self, params: dict[str, Any]) -> str:
        """What this step would do, precise enough for a human to review in dry-run."""
        shown = ", ".join(f"{k}={v!r}" for k, v in params.items())
        return f"would run {self.name}({shown})"

    def is_transient(self, exc: BaseException) -> bool:
        return isinstance(exc, TransientError | asyncio.TimeoutError | ConnectionError)

    def may_retry(self, params: dict[str, Any], exc: BaseException) -> bool:
        """Another attempt is safe and worth it: a transient error, and either the call may
        be repeated or the error proves the request changed nothing."""
        return self.is_transient(exc) and (self.repeatable(params) or not maybe_applied(exc))

    async def run(self, params: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
        raise NotImplementedError


# --- did a failed call reach the server? The one place that tells ---------------------------

# Failures to open a connection, per client library: the request was never sent. Looked up
# by name, so classifying an error never imports a client the process does not use.
_NOT_SENT = {
    "aiohttp.client_exceptions": ("ClientConnectorError", "ConnectionTimeoutError"),
    "urllib3.exceptions": ("NewConnectionError", "ConnectTimeoutError"),
    "botocore.exceptions": ("EndpointConnectionError", "ConnectTimeoutError"),
}


def never_sent(exc: BaseException) -> bool:
    """Does the error (or what caused it) prove the request never left this process?

    Only a connection that was never established proves it (refused, unresolvable, or a
    connect timeout), or a request the client refused to write (`_refused_by_aiohttp`).
    A read timeout, a reset or a 5xx may come after the server acted.
    """
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, ConnectionRefusedError) or _refused_by_aiohttp(current):
            return True
        for module, names in _NOT_SENT.items():
            mod = sys.modules.get(module)
            if mod is not None and isinstance(current, tuple(getattr(mod, n) for n in names
                                                             if hasattr(mod, n))):
                return True
        # What wrapped what: `raise ... from`, an implicit chain (requests), urllib3's
        # MaxRetryError.reason, requests' ConnectionError(MaxRetryError(...)).
        implicit = None if current.__suppress_context__ else current.__context__
        pending.extend(e for e in (current.__cause__, implicit, getattr(current, "reason", None),
                                   *current.args) if isinstance(e, BaseException))
    return False


def _refused_by_aiohttp(exc: BaseException) -> bool:
    """aiohttp refused to write the request: a URL it cannot send (not one a redirect named:
    the first request went out), or a header it cannot serialise (a control character, a
    value not a string), raised in `write_headers`, which serialises and buffers only: the
    bytes go out with the body, after it. A step's checks refuse both first; this keeps a
    case they miss from being recorded as a change that may have landed."""
    errors = sys.modules.get("aiohttp.client_exceptions")
    if errors is None:
        return False
    if isinstance(exc, errors.InvalidURL):
        redirect = getattr(errors, "RedirectClientError", None)  # without it, cannot tell
        return redirect is not None and not isinstance(exc, redirect)
    return isinstance(exc, ValueError | TypeError) and any(
        frame.f_code.co_name == "write_headers"
        and frame.f_globals.get("__name__") == "aiohttp.http_writer"
        for frame, _ in traceback.walk_tb(exc.__traceback__))


def maybe_applied(exc: BaseException) -> bool:
    """Could the failed call have changed something? Yes unless it provably did not: the
    error says so (`ActionError.unapplied`: a read, a check before the write, a refusal), or
    the request was never sent. An error about the answer to a write (an unexpected status
    or body) comes after the server may have acted on it."""
    if isinstance(exc, ActionError) and exc.unapplied:
        return False
    return not never_sent(exc)


# --- parameter validation: the one place parameters are checked -------------------------

# A remote answer becomes part of a step record, which is journaled, templated and encoded
# recursively: one nested hundreds of levels deep would exhaust the interpreter's stack there
# (after the call, leaving the step `running`). Every action parses a remote answer here.
MAX_JSON_DEPTH = 64
MAX_JSON_BYTES = 8 * 1024 * 1024


class UnsafeJSON(ValueError):
    """Parsed JSON too deep or too large to keep in a step record (a ValueError, so a caller
    that treats unparsable text as "not JSON" still can; most say why instead)."""


def parse_json(raw: str | bytes) -> Any:
    """`json.loads`, refusing (UnsafeJSON) a document over MAX_JSON_BYTES or nested deeper than
    MAX_JSON_DEPTH; a document that is not JSON is a plain ValueError, as from json.loads."""
    if len(raw) > MAX_JSON_BYTES:
        raise UnsafeJSON(f"JSON of {len(raw)} bytes is over the {MAX_JSON_BYTES}-byte limit")
    try:
        value = json.loads(raw)
    except RecursionError:  # deeper than the parser's own stack allows
        raise UnsafeJSON(f"JSON is nested deeper than {MAX_JSON_DEPTH} levels") from None
    # level by level, without recursion of its own (the recursion is what is being bounded)
    level, depth = [value] if isinstance(value, dict | list) else [], 0
    while level:
        depth += 1
        if depth > MAX_JSON_DEPTH:
            raise UnsafeJSON(f"JSON is nested deeper than {MAX_JSON_DEPTH} levels")
        level = [child for node in level for child in (node.values() if isinstance(node, dict)
                                                       else node) if isinstance(child, dict | list)]
    return value


_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)")  # ASCII digits only
_UNIT = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: Any) -> float:
    """Seconds from a Prometheus-style duration (`90s`, `5m`, `1h30m`) or a number."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _finite(float(value), "duration")
    text = str(value).strip()
    # A playbook's few durations are read by every decision's guards: parsed once each. A
    # label's (a rendered parameter) may be anything: only short texts are kept.
    seconds = _kept_duration(text) if len(text) <= 32 else _duration(text)
    if seconds is None:
        raise ValueError(f"invalid duration {value!r} (use e.g. 30s, 5m, 1h30m)")
    return _finite(seconds, "duration")


def _duration(text: str) -> float | None:
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(n) * _UNIT[u] for n, u in parts)


_kept_duration = functools.lru_cache(maxsize=1024)(_duration)


def render_params(action: Action, raw: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    """Render a step's parameters; values interpolated into a URL are percent-encoded."""
    return {name: templating.render_url(value, context)
            if isinstance(value, str) and name in action.params and action.params[name].kind == "url"
            else templating.render_value(value, context) for name, value in raw.items()}


def check_params(action: Action, raw: dict[str, Any], *, rendered: bool) -> tuple[dict, list]:
    """Validate and coerce `raw` against the action's declaration.

    With rendered=False (lint, load time) values that are still templates are accepted as
    they are; with rendered=True (just before running) every value must be final.
    Returns (params with defaults applied, list of (param name, message)).
    """
    problems: list[tuple[str, str]] = []
    out: dict[str, Any] = {}
    for name in raw:
        if name not in action.params:
            problems.append((name, f"unknown parameter {name!r} for {action.name}"))
    for name, spec in action.params.items():
        if name not in raw or raw[name] is None:
            if spec.required:
                problems.append((name, f"missing required parameter {name!r}"))
            elif spec.default is not None:
                out[name] = spec.default
            continue
        try:
            out[name] = _coerce(spec, raw[name], rendered)
        except (ValueError, TypeError) as exc:
            problems.append((name, f"parameter {name!r}: {exc}"))
    for name, spec in action.params.items():
        value = raw.get(name)
        if spec.kind == "url" and isinstance(value, str) and templating.templated_authority(value) \
                and not raw.get("allow_hosts"):
            problems.append((name, f"parameter {name!r}: a template may fill only a URL's path and "
                                   "query; list the hosts it may reach in allow_hosts"))
    for low, high in action.ordered:
        a, b = out.get(low), out.get(high)
        if _is_number(a) and _is_number(b) and a > b:
            problems.append((low, f"{low} ({a}) must not exceed {high} ({b})"))
    if not problems and rendered:
        problems.extend(("", msg) for msg in action.check(out))
    return out, problems


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _coerce(spec: Param, value: Any, rendered: bool) -> Any:
    if spec.literal and has_template(value):
        raise ValueError("must be written literally in the playbook; a template is refused "
                         "here, so alert data can never build it")
    if isinstance(value, str) and templating.is_template(value) and not rendered:
        templating.compile_check(value)
        return value
    t = spec.type
    if t == "string":
        value = _expect(value, str, t)
        if spec.kind:
            validators.validate(spec.kind, value)
    elif t == "integer":
        value = int(_numeric(value, t, integral=True))
    elif t == "number":
        value = float(_numeric(value, t))
    elif t == "boolean":
        value = _boolean(value)
    elif t == "duration":
        value = parse_duration(value)
    elif t == "list":
        value = _expect(value, list, t)
        if spec.kind:
            for item in value:
                if not (isinstance(item, str) and templating.is_template(item) and not rendered):
                    validators.validate(spec.kind, _expect(item, str, "string"))
    elif t == "mapping":
        value = _expect(value, dict, t)
        if spec.kind:  # each entry (an HTTP header); a template's value once it is rendered
            for key, item in value.items():
                unrendered = isinstance(item, str) and templating.is_template(item) and not rendered
                validators.validate_entry(spec.kind, key, "" if unrendered else item)
    if spec.choices and value not in spec.choices:
        raise ValueError(f"must be one of {', '.join(map(str, spec.choices))}, got {value!r}")
    if spec.minimum is not None and isinstance(value, int | float) and value < spec.minimum:
        raise ValueError(f"must be >= {spec.minimum}, got {value}")
    if spec.maximum is not None and isinstance(value, int | float) and value > spec.maximum:
        raise ValueError(f"must be <= {spec.maximum:.15g}, got {value}")
    return value


def has_template(value: Any) -> bool:
    """Whether a parameter value (or anything inside it) is still a template."""
    if isinstance(value, str):
        return templating.is_template(value)
    if isinstance(value, list | tuple):
        return any(has_template(v) for v in value)
    if isinstance(value, dict):
        return any(has_template(v) for v in value.values())
    return False


def _expect(value: Any, typ: type, name: str) -> Any:
    if not isinstance(value, typ):
        raise TypeError(f"must be a {name}, got {type(value).__name__}")
    return value


def _numeric(value: Any, name: str, integral: bool = False) -> float:
    a = "an" if integral else "a"  # name is "integer" or "number"
    if isinstance(value, bool):
        raise TypeError(f"must be {a} {name}, got a boolean")
    if isinstance(value, str):  # rendered templates are strings
        value = value.strip()
        try:
            value = int(value) if integral else float(value)
        except ValueError:
            raise ValueError(f"must be {a} {name}, got {value!r}") from None
    if not isinstance(value, int | float):
        raise TypeError(f"must be {a} {name}, got {type(value).__name__}")
    if isinstance(value, float):
        _finite(value, name)
    if integral and value != int(value):
        raise TypeError(f"must be {a} {name}, got {type(value).__name__}")
    return value


def _finite(value: float, name: str) -> float:
    # NaN passes every `minimum` (all its comparisons are false) and infinity every maximum
    # a check forgets; neither is a meaningful count, rate or time. A label can spell both
    # ("nan", "inf", 400 digits).
    if not math.isfinite(value):
        raise ValueError(f"must be a finite {name}, got {value!r}")
    return value


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise TypeError(f"must be a boolean, got {value!r}")
