"""The Store interface: everything that must survive a restart goes through it.

The engine and the server only see this interface, so a shared backend for several
replicas can be added later without touching them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


class StoreUnavailable(RuntimeError):
    """The store cannot accept writes now; intake answers 503 so Alertmanager retries."""


@dataclass(frozen=True)
class InboxItem:
    """One acknowledged alert waiting to be processed, with its notification's context."""

    id: int
    dedupe_key: str
    alert: dict[str, Any]
    group: dict[str, Any]
    received_at: str


@dataclass(frozen=True)
class Enqueued:
    accepted: int
    duplicates: int


class Store(Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...

    # inbox: durable intake and crash recovery
    async def enqueue(self, items: list[tuple[str, dict[str, Any], dict[str, Any]]]) -> Enqueued:
        """Store (dedupe_key, alert, group) rows atomically; count keys already seen."""
        ...

    async def claim(self, limit: int) -> list[InboxItem]:
        """Take pending items for processing (marks them running)."""
        ...

    async def finish(self, item_id: int) -> None: ...
    async def requeue(self, dedupe_key: str) -> None: ...
    async def release_running(self) -> int:
        """After a restart: items that were running when the process died go back to pending."""
        ...

    async def pending_count(self) -> int: ...

    async def prune_inbox(self, before_iso: str) -> int:
        """Forget finished inbox items (and so their dedupe keys) received before then."""
        ...

    async def prune_history(self, before: float) -> int:
        """Forget what is older than `before` (epoch seconds): executions that are final
        and were last updated before then (never one still `running` or with an approval
        pending), with their steps and approval states, and guard events. Return how many
        executions went."""
        ...

    # executions: the audit trail, shaped as the contract's decision JSON
    async def save_execution(self, decision: dict[str, Any]) -> None: ...
    async def get_execution(self, execution_id: str) -> dict[str, Any] | None: ...
    async def list_executions(self, limit: int = 100, **filters: Any) -> list[dict[str, Any]]: ...
    async def save_step(self, execution_id: str, index: int, step: dict[str, Any]) -> None: ...
    async def completed_steps(self, execution_id: str) -> dict[int, dict[str, Any]]: ...

    # guard state: events (timestamps per key) and key/value state
    async def record_event(self, kind: str, key: str, at: float, data: dict | None = None) -> None:
        ...

    async def events_since(self, kind: str, key: str, since: float) -> list[tuple[float, dict]]:
        ...

    async def get_state(self, key: str) -> dict[str, Any] | None: ...
    async def put_state(self, key: str, value: dict[str, Any] | None) -> None: ...
    async def list_state(self, prefix: str) -> dict[str, dict[str, Any]]: ...
