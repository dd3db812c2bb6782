"""Fault injection rules and the request journal.

Remediation code must survive a flaky apiserver (5xx, 429, slow responses,
RBAC denials). Tests describe faults declaratively and then assert on the
request journal, e.g. "the PATCH was retried exactly 3 times".
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import Any, NamedTuple


class RecordedRequest(NamedTuple):
    """One request as received. ``path`` excludes the query string (see ``query``);
    ``body`` is the decoded JSON document when the body was JSON, else the raw text
    (``None`` when empty)."""

    method: str
    path: str
    content_type: str
    body: Any
    query: dict[str, str]


@dataclass
class Fault:
    """A response override for matching requests.

    ``times=None`` means forever. ``status=None`` with a ``delay`` only slows the
    request down and then serves it normally (use it to trigger client timeouts).
    ``hits`` counts how many requests the fault has applied to.
    """

    method: str | None = None
    path_regex: str = ".*"
    status: int | None = 500
    times: int | None = 1
    delay: float = 0.0
    applied: bool = False
    message: str | None = None
    reason: str | None = None
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    # RBAC-style rule (used by forbid()): k8s verb and resource[/subresource]
    verb: str | None = None
    resource: str | None = None
    namespace: str | None = None
    name: str | None = None
    hits: int = 0

    def matches_http(self, method: str, path: str) -> bool:
        if self.verb is not None:
            return False
        if self.method and self.method.upper() != method.upper():
            return False
        return re.search(self.path_regex, path) is not None

    def matches_rbac(self, verb: str, resource: str, namespace: str | None,
                     name: str | None) -> bool:
        if self.verb is None:
            return False
        return (self.verb in ("*", verb) and self.resource in ("*", resource)
                and self.namespace in (None, namespace) and self.name in (None, name))

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.hits >= self.times


class FaultTable:
    """Thread-safe ordered list of faults; the first live match wins."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.faults: list[Fault] = []

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self.faults.clear()

    def take_http(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if not fault.exhausted and fault.matches_http(method, path):
                    fault.hits += 1
                    return fault
        return None

    def take_rbac(self, verb: str, resource: str, namespace: str | None,
                  name: str | None) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if not fault.exhausted and fault.matches_rbac(verb, resource, namespace, name):
                    fault.hits += 1
                    return fault
        return None
