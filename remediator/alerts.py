"""Alertmanager webhook (version 4) model: parse, validate, and derive the dedupe key.

Everything in a payload is untrusted. Parsing is strict about shape (a wrong type is a
400 with the JSON path that is wrong) and lenient about unknown fields, as Alertmanager
may add fields in later versions.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any, TypeVar

import orjson

# Alertmanager sends the Go zero time for an unset endsAt.
_ZERO_TIMES = ("0001-01-01T00:00:00Z", "0001-01-01T00:00:00.000Z")
MAX_ALERTS = 10_000
MAX_LABEL_VALUE = 8192
# The fingerprint is an identifier (Alertmanager's is 16 hex digits) and becomes the inbox's
# unique key: PostgreSQL can index at most ~2700 bytes of it and no text there holds a NUL.
MAX_FINGERPRINT = 512
_SURROGATE = re.compile("[\ud800-\udfff]")
# Where a JSON text may hold one: a regular expression scans a storm's body in a fifth of the
# time two `in` tests took (~0.35 against 1.6 us).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD]")


_T = TypeVar("_T")


def built(cls: type[_T], **values: Any) -> _T:
    """An instance of the frozen dataclass `cls` holding `values` (every field of it), made
    without its `__init__`: a frozen class's sets each field through `object.__setattr__`
    (2.8 us a Step, against 0.5 here: a third of building 2 000 playbooks at start-up; an
    Alert and a Group read back for every decision, ~1.4 % of a storm's Python bytecodes). Only for
    classes without `__post_init__`; their builders name every field (tests hold them to it)."""
    obj = object.__new__(cls)
    obj.__dict__.update(values)
    return obj


class PayloadError(ValueError):
    """The webhook body is not a valid Alertmanager v4 notification."""


@dataclass(frozen=True)
class Alert:
    """One alert of a notification, as validated (`parse_notification`): untrusted values."""

    status: str
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: str
    ends_at: str | None
    generator_url: str
    fingerprint: str

    @property
    def alertname(self) -> str:
        return self.labels.get("alertname", "")

    @property
    def dedupe_key(self) -> str:
        return dedupe_key(self.fingerprint, self.starts_at, self.status)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Alert:
        """The inverse of to_dict (stored alerts, already validated)."""
        return built(cls, status=data["status"], labels=data["labels"],
                     annotations=data["annotations"], starts_at=data["startsAt"],
                     ends_at=data.get("endsAt"), generator_url=data.get("generatorURL", ""),
                     fingerprint=data["fingerprint"])

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "labels": self.labels,
            "annotations": self.annotations,
            "startsAt": self.starts_at,
            "endsAt": self.ends_at,
            "generatorURL": self.generator_url,
            "fingerprint": self.fingerprint,
        }


@dataclass(frozen=True)
class Group:
    """The notification-level context shared by the alerts of one webhook call."""

    receiver: str = ""
    status: str = ""
    group_key: str = ""
    group_labels: dict[str, str] = field(default_factory=dict)
    common_labels: dict[str, str] = field(default_factory=dict)
    common_annotations: dict[str, str] = field(default_factory=dict)
    external_url: str = ""
    truncated_alerts: int = 0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Group:
        """What `to_dict` wrote (a field it lacks, from an older record, takes its default)."""
        return built(cls, receiver=data.get("receiver", ""), status=data.get("status", ""),
                     group_key=data.get("groupKey", ""), group_labels=data.get("groupLabels", {}),
                     common_labels=data.get("commonLabels", {}),
                     common_annotations=data.get("commonAnnotations", {}),
                     external_url=data.get("externalURL", ""),
                     truncated_alerts=data.get("truncatedAlerts", 0))

    def to_dict(self) -> dict[str, Any]:
        return {
            "receiver": self.receiver,
            "status": self.status,
            "groupKey": self.group_key,
            "groupLabels": self.group_labels,
            "commonLabels": self.common_labels,
            "commonAnnotations": self.common_annotations,
            "externalURL": self.external_url,
            "truncatedAlerts": self.truncated_alerts,
        }


# The key an inbox item's group holds (True) when the item must be decided dry-run by whoever
# takes it up, whatever that worker's mode: a dry-run replay's alerts, stored in serve's store,
# which a replay killed or giving up leaves there unfinished. Internal: validation builds a
# group from Alertmanager's fields only (`notification_from_dict`), so no payload sets or
# clears it; `Group` drops it, so no template, note or record holds it.
DRY_RUN = "remediator.dryRun"


def dry_run_only(group: Any) -> bool:
    """Whether an inbox item's stored group says it is decided dry-run only (`DRY_RUN`)."""
    return isinstance(group, dict) and group.get(DRY_RUN) is True


def dedupe_key(fingerprint: str, starts_at: str, status: str) -> str:
    """Same alert, same episode, same status: Alertmanager retries and HA peers collapse."""
    return f"{fingerprint}:{starts_at}:{status}"


@dataclass(frozen=True)
class Notification:
    """A validated notification in the form the inbox stores: its group's fields and each
    alert's as `Group.to_dict` and `Alert.to_dict` write them, built once by validation
    (intake made an Alert of each, then its dict again: ~2 us of every webhook). The
    objects are made when asked for (replay, tests)."""

    group_data: dict[str, Any]
    items: list[dict[str, Any]]

    @cached_property
    def group(self) -> Group:
        return Group.from_dict(self.group_data)

    @cached_property
    def alerts(self) -> list[Alert]:
        return [Alert.from_dict(d) for d in self.items]


def label_fingerprint(labels: dict[str, str]) -> str:
    """A stable fingerprint from labels, for senders that omit Alertmanager's own."""
    canonical = json.dumps(sorted(labels.items()), separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def parse_notification(body: bytes) -> Notification:
    """Parse and validate a webhook body; raise PayloadError saying what is wrong and where."""
    try:
        # orjson: a third of json's time on a storm's body. It refuses some of what json
        # reads (a lone surrogate escape, NaN, 1e400) and says less about what is wrong:
        # json reads again whatever orjson refuses, so those bodies and every 400's message
        # are as before. What both read is the same, but for an integer past 64 bits (a
        # float: every integer field refuses both) and nesting 1000 to 1024 deep (json's
        # recursion limit), which only an unknown field, ignored, can hold.
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = _json_loads(body)
    # Valid UTF-8 holds no surrogate: only a JSON escape (\ud800-\udfff, either case) makes
    # one, so a body without such an escape skips looking in every string (~40 % of a parse).
    return notification_from_dict(data, surrogates=_SURROGATE_ESCAPE.search(body) is not None)


def _json_loads(body: bytes) -> Any:
    try:
        return json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise PayloadError(f"body is not valid UTF-8 (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise PayloadError(f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise PayloadError("invalid JSON: nested too deeply") from None
    except ValueError as exc:  # an integer beyond Python's digit limit for int()
        raise PayloadError(f"invalid JSON: {str(exc).split(':')[0]}") from None


def notification_from_dict(data: Any, surrogates: bool = True) -> Notification:
    """Validate a decoded payload; `surrogates=False` when none of its strings can hold a
    lone surrogate (parse_notification knows from the JSON text)."""
    text = _text if surrogates else _as_is
    if not isinstance(data, dict):
        raise PayloadError("payload must be a JSON object")
    version = data.get("version")
    if version != "4":
        raise PayloadError(f'unsupported webhook version {_shown(version)}: expected "4"')
    raw_alerts = data.get("alerts")
    if not isinstance(raw_alerts, list):
        raise PayloadError("$.alerts: required, must be a list")
    if len(raw_alerts) > MAX_ALERTS:
        raise PayloadError(f"$.alerts: {len(raw_alerts)} alerts exceed the limit of {MAX_ALERTS}")
    truncated = data.get("truncatedAlerts", 0)
    if not isinstance(truncated, int) or isinstance(truncated, bool) or not 0 <= truncated < 2**31:
        raise PayloadError("$.truncatedAlerts: must be an integer from 0 to 2^31-1")
    group = {  # as Group.to_dict writes it
        "receiver": _str(data, "receiver", "$", text),
        "status": _str(data, "status", "$", text),
        "groupKey": _str(data, "groupKey", "$", text),
        "groupLabels": _labels(data, "groupLabels", "$", text),
        "commonLabels": _labels(data, "commonLabels", "$", text),
        "commonAnnotations": _labels(data, "commonAnnotations", "$", text),
        "externalURL": _str(data, "externalURL", "$", text),
        "truncatedAlerts": truncated,
    }
    alerts = [_alert(a, f"$.alerts[{i}]", text) for i, a in enumerate(raw_alerts)]
    return Notification(group, alerts)


Text = Callable[[str, str], str]


def _shown(value: Any, limit: int = 40) -> str:
    """A sender's value echoed in an error as the JSON it sent (`null`, `true`, `4`,
    `"weird"`: Python's None, True and 'weird' are no JSON), ASCII, cut at `limit`."""
    if isinstance(value, str) and len(value) > limit:
        return json.dumps(value[:limit]) + "…"
    if isinstance(value, dict | list):  # its shape, not its content (of any size)
        return "an object" if isinstance(value, dict) else "a list"
    shown = json.dumps(value)
    return shown if len(shown) <= limit else shown[:limit] + "…"


def _alert(raw: Any, path: str, text: Text) -> dict[str, Any]:
    """An alert validated, as Alert.to_dict writes it (what the inbox stores)."""
    if not isinstance(raw, dict):
        raise PayloadError(f"{path}: must be an object")
    status = raw.get("status")
    if status not in ("firing", "resolved"):
        raise PayloadError(f'{path}.status: must be "firing" or "resolved", got {_shown(status)}')
    labels = _labels(raw, "labels", path, text)
    if not labels.get("alertname"):
        raise PayloadError(f"{path}.labels.alertname: required")
    starts_at = _timestamp(raw, "startsAt", path, text)
    if not starts_at:
        # The episode is in the dedupe key: without it, this alert firing again after its
        # resolution was taken for a duplicate of its first episode, and never remediated.
        raise PayloadError(f"{path}.startsAt: required (Alertmanager always sends it; it "
                           "tells one episode of an alert from the next)")
    fingerprint = _str(raw, "fingerprint", path, text) or label_fingerprint(labels)
    if len(fingerprint) > MAX_FINGERPRINT or "\x00" in fingerprint:
        raise PayloadError(f"{path}.fingerprint: must be at most {MAX_FINGERPRINT} characters "
                           "without NUL")
    return {
        "status": status,
        "labels": labels,
        "annotations": _labels(raw, "annotations", path, text),
        "startsAt": starts_at,
        "endsAt": _timestamp(raw, "endsAt", path, text),
        "generatorURL": _str(raw, "generatorURL", path, text),
        "fingerprint": fingerprint,
    }


def _str(obj: dict[str, Any], key: str, path: str, text: Text) -> str:
    value = obj.get(key, "")
    if isinstance(value, str):
        # The path only when it is needed: building it for every string was a tenth of a parse.
        return value if text is _as_is else text(value, f"{path}.{key}")
    if value is None:
        return ""
    raise PayloadError(f"{path}.{key}: must be a string")


def _text(value: str, path: str) -> str:
    # JSON's \ud800 escape decodes to a lone surrogate: not a character, so no file, UTF-8
    # body or log line can hold it. Refused here, every sink can write every accepted string.
    if _SURROGATE.search(value):
        raise PayloadError(f"{path}: contains a lone UTF-16 surrogate (\\ud800-\\udfff), "
                           "which is not valid Unicode")
    return value


def _as_is(value: str, path: str) -> str:
    return value


def _labels(obj: dict[str, Any], key: str, path: str, text: Text) -> dict[str, str]:
    value = obj.get(key) or {}
    if not isinstance(value, dict):
        raise PayloadError(f"{path}.{key}: must be an object of strings")
    for name, item in value.items():
        if text is _as_is and isinstance(item, str) and len(item) <= MAX_LABEL_VALUE \
                and len(name) <= MAX_LABEL_VALUE:
            continue  # valid: no path to build
        if len(name) > MAX_LABEL_VALUE:  # a name is shown wherever its value is: notes too
            raise PayloadError(f"{path}.{key}: a name longer than {MAX_LABEL_VALUE} characters "
                               f"({_shown(name)})")
        where = f"{path}.{key}.{text(name, f'{path}.{key} (a name)')}"
        if not isinstance(item, str):
            raise PayloadError(f"{where}: must be a string")
        if len(item) > MAX_LABEL_VALUE:
            raise PayloadError(f"{where}: longer than {MAX_LABEL_VALUE} characters")
        text(item, where)
    return value


def _timestamp(obj: dict[str, Any], key: str, path: str, text: Text) -> str | None:
    value = _str(obj, key, path, text)
    if not value or value in _ZERO_TIMES:
        return None
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise PayloadError(f"{path}.{key}: not an RFC 3339 timestamp: {_shown(value)}") from None
    return value


def utcnow_iso(offset: float = 0.0) -> str:
    """Now, as `rfc3339` writes it (from the clock's nanoseconds: no float to round), on a
    clock `offset` seconds from this process's (a store's: `Store.now_iso`)."""
    whole, ns = divmod(time.time_ns() + int(offset * 1e9), 1_000_000_000)
    return f"{_second_text(whole)}.{ns // 1000:06d}Z"


def rfc3339(seconds: float) -> str:
    """A time (seconds since the epoch) as RFC 3339 UTC to the microsecond, with a Z."""
    whole = int(seconds)
    return f"{_second_text(whole)}.{min(round((seconds - whole) * 1e6), 999999):06d}Z"


_second: tuple[int, str] = (-1, "")  # the last second formatted, and its text


def _second_text(whole: int) -> str:
    """A second's text, made once per second: a decision writes three timestamps and a log
    line, and a datetime made and formatted for each was ~1.5 us (this, with the rest, 0.5)."""
    global _second
    known = _second
    if known[0] != whole:
        known = _second = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
    return known[1]
