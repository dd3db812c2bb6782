"""The Store interface: everything that must survive a restart goes through it.

The engine and the server only see this interface; what differs between one replica on a
file (sqlite.py) and several on one database (postgres.py) stays behind it: claims with
leases, target locks and critical sections across replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

# The state row SQLite's readiness probe writes (`Store.probe_intake`): its time.
INTAKE_PROBE = "intake-probe"
# Every outcome a decision can have: what `list_executions(outcome=…)` may be asked (the API's
# and `history`'s filter, the console's), so a typo is refused, never an empty answer.
OUTCOMES = ("running", "planned", "succeeded", "failed", "blocked", "escalated", "resolved",
            "no_match", "duplicate")


class StoreUnavailable(RuntimeError):
    """The store cannot accept writes now; intake answers 503 so Alertmanager retries."""


class LeaseLost(StoreUnavailable):
    """This process no longer holds the work it claimed (its lease may have expired while
    it could not reach a shared store): another replica resumes it, so it must stop."""


@dataclass(frozen=True)
class InboxItem:
    """One acknowledged alert waiting to be processed, with its notification's context."""

    id: int
    dedupe_key: str
    alert: dict[str, Any]
    group: dict[str, Any]
    received_at: str
    # Claimed from a replica whose lease expired while it held it: its processing was cut
    # off, so a run it left `running` is looked for (`Engine._stale`).
    interrupted: bool = False
    # Which claim of the item this is (PostgreSQL: its count of claims when claimed here):
    # a write relying on the claim is made only while the item holds this one, not merely
    # one of this replica's (`put_states`). SQLite: 0, one process owns every claim.
    claim: int = 0


@dataclass(frozen=True)
class Limit:
    """At most `max - 1` events (kind, key) since `since` may exist for an admission to pass;
    events whose data matches any item of `unless` (an execution's own) do not count."""

    kind: str
    key: str
    since: float
    max: int
    unless: dict[str, str] | None = None


# An event to record: (kind, key, at, data).
Event = tuple[str, str, float, dict[str, Any]]
# A journal entry: (execution id, step index, step record, the execution's record to write
# with it or None: a live run's first entry carries its `running` record).
Entry = tuple[str, int, dict[str, Any], dict[str, Any] | None]
# The kill switch's state key: its value's `paused` says whether automation is paused.
PAUSE = "paused"
# Why `Store.admit` refused before counting any limit.
PAUSED, RESOLVED, LOCKED = "paused", "resolved", "locked"


@dataclass(frozen=True)
class Enqueued:
    """What an intake did with a notification's alerts."""

    accepted: int
    duplicates: int
    # `enqueue_claimed`'s: the accepted alerts, claimed by this process as they were stored.
    claimed: tuple[InboxItem, ...] = ()


class Store(Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...

    @property
    def is_open(self) -> bool:
        """Open and able to serve now (readiness)."""
        ...

    # Seconds to add to this process's wall clock to read the store's: guards' windows
    # compare events that several replicas recorded, so they all count on one clock.
    clock_offset: float

    def now_iso(self) -> str:
        """Now on the store's clock, as every record is stamped (`created_at`, `updated_at`,
        a step's `started_at`, an item's `received_at`): on several replicas the newest
        decision sorts newest (lists, the console's cursor) and retention counts on the
        clock that pruning reads, however far a replica's own clock is off."""
        ...

    # inbox: durable intake and crash recovery
    async def enqueue(self, items: list[tuple[str, dict[str, Any], dict[str, Any]]]) -> Enqueued:
        """Store (dedupe_key, alert, group) rows atomically; count keys already seen."""
        ...

    async def probe_intake(self) -> None:
        """A commit through intake's own path (its connection, its group commit): raises
        StoreUnavailable when a webhook's alerts would be refused now (readiness,
        `Service.refusal`). SQLite writes a row (`INTAKE_PROBE` in the state): an empty
        commit writes nothing to the disk, and passed on a full one. PostgreSQL runs intake's
        statement with no rows, which a read-only database (or a revoked grant, a trigger)
        refuses as it refuses alerts."""
        ...

    async def enqueue_claimed(self, items: list[tuple[str, dict[str, Any], dict[str, Any]]]
                              ) -> Enqueued:
        """As `enqueue`, but the new items are stored already claimed by this process
        (`Enqueued.claimed`), never pending: `replay` decides its own payload and nothing
        else, and a `serve` sharing the store never takes it meanwhile."""
        ...

    async def claim(self, limit: int) -> list[InboxItem]:
        """Take pending items for processing (marks them running)."""
        ...

    async def finish(self, item_id: int) -> None: ...
    async def requeue(self, dedupe_key: str) -> None:
        """Queue an acknowledged alert again, unless a live worker holds it now."""
        ...

    async def claim_key(self, dedupe_key: str) -> InboxItem | None:
        """Claim one acknowledged alert for processing here (an approval's resume); None
        while another worker holds it."""
        ...

    async def release_running(self) -> int:
        """After a restart: items that were running when the process died go back to pending."""
        ...

    async def pending_count(self) -> int: ...

    async def received(self, dedupe_key: str) -> bool:
        """Whether an alert with this dedupe key was acknowledged (processed or not): a
        firing run asks it of its own resolution before each change."""
        ...

    async def held(self, dedupe_key: str) -> bool:
        """Whether a live worker, in this process or another replica, is processing this
        acknowledged alert now (a resolution waits for its firing run to stop)."""
        ...

    async def settled(self, dedupe_key: str) -> bool:
        """Whether no worker will process this acknowledged alert again: its inbox item is
        done, or pruned. Pending, or claimed (live or not: an expired claim is taken over),
        it will be, and that run records its execution itself."""
        ...

    async def prune_inbox(self, before_iso: str) -> int:
        """Forget finished inbox items (and so their dedupe keys) received before then."""
        ...

    async def refresh_inbox(self, keys: list[str], before_iso: str, now_iso: str) -> int:
        """The items of `keys` received before `before_iso` are received `now_iso` (sent
        again, as duplicates: an alert still firing is not pruned as if gone). Returns how
        many were."""
        ...

    async def prune_history(self, before: float) -> int:
        """Forget what is older than `before` (epoch seconds): executions that are final
        and were last updated before then (never one still `running` or with an approval
        pending), with their steps and approval states, and guard events. Return how many
        executions went."""
        ...

    # executions: the audit trail, shaped as the contract's decision JSON
    async def awaiting_approval(self) -> list[tuple[str, str]]:
        """Executions recorded `blocked approval_pending`, as (id, blocked step): read from
        an index their record's own write keeps (`packing.awaiting`), never history."""
        ...

    async def index_awaiting(self, execution_id: str, step: str) -> bool:
        """Index the record of `execution_id` as waiting on `step`'s approval if it is still
        blocked and indexed as nothing (a replica of the version before the index wrote it);
        whether it was. A record written since, final, is left alone."""
        ...

    async def save_execution(self, decision: dict[str, Any], events: list[Event] | None = None,
                             finishes: int | None = None,
                             steps: dict[int, dict[str, Any]] | None = None,
                             durable: bool = False) -> None:
        """Record the decision, with `events`, its journal entries `steps` (index -> record,
        as `save_step`), and mark inbox item `finishes` done (as `finish`), in one atomic
        write: a final decision and its item's completion are recorded together or not at
        all. That write takes no turn after it (turns.py): only the decision's log line and
        its task's end follow it. `durable`: outlives a crash of the database once it
        returns, as an admission (a circuit breaker's success: what a later run is allowed
        on)."""
        ...

    async def get_execution(self, execution_id: str) -> dict[str, Any] | None: ...
    async def get_execution_and_pause(self, execution_id: str
                                      ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """`get_execution` and `get_state(PAUSE)`, read together: what a run reads first."""
        ...

    async def list_executions(self, limit: int = 100, **filters: Any) -> list[dict[str, Any]]: ...

    async def changes(self, since: str | None, limit: int
                      ) -> tuple[list[dict[str, Any]] | None, str]:
        """The decisions whose record was committed after position `since` (one this method
        returned), however old the decision, at most `limit`, each with its `updated_at`;
        and the position this read reached (the console's live stream). A position is in
        commit order, not a stamp's: a record stamped before a read and committed after it
        is in the next read. `since` None: the position now, nothing read. None for the
        decisions: `since` is no position of this store (untrusted text, another store's,
        one past it: a database restored from a backup), so what changed is unknown."""
        ...

    async def save_step(self, execution_id: str, index: int, step: dict[str, Any],
                        execution: dict[str, Any] | None = None) -> None:
        """Journal a step record, with `execution`'s record (as `save_execution`: a run's
        first entry carries its `running` record) in the same write."""
        ...

    async def completed_steps(self, execution_id: str) -> dict[int, dict[str, Any]]: ...

    # guard state: events (timestamps per key) and key/value state
    async def record_event(self, kind: str, key: str, at: float, data: dict | None = None,
                           durable: bool = False) -> None:
        """`durable`: as `save_execution`'s."""

    async def events_since(self, kind: str, key: str, since: float) -> list[tuple[float, dict]]:
        ...

    async def count_events(self, kind: str, key: str, since: float) -> int:
        """How many events `events_since` would return, without reading them all."""
        ...

    async def admit(self, limits: list[Limit], events: list[Event], unless_paused: bool = False,
                    unless_received: str | None = None, journal: Entry | None = None,
                    held: str | None = None, lock: tuple[str, str] | None = None
                    ) -> int | str | None:
        """Record `events`, and journal `journal` (a change's intent: as `save_step`), if
        every limit holds, atomically across every process sharing the store (two
        admissions can never both take a limit's last place); else record nothing and
        return the index of the first limit reached. Before the limits, in the same write:
        RESOLVED if an alert with the dedupe key `unless_received` was acknowledged, then
        PAUSED if `unless_paused` and automation is paused (`PAUSE`).

        Durable once it returns, whatever `store_sync` says (fsynced; on PostgreSQL its
        commit waits for the WAL flush): the mutation it admits is sent next, and an intent
        lost with a power cut or a database crash would let the step run again after it.
        `held`: the dedupe key of the inbox item the run holds; on a shared store LeaseLost
        unless this process's claim on it is in the database (a run never acts beside
        another replica's on the same alert). Then LOCKED if the target lock `lock` (name,
        holder) is another holder's: a lock's own commit does not wait for the flush (every
        decision of a dry-run storm takes one), so a database crash may lose it before its
        holder's first admission, which takes it again."""
        ...

    async def get_state(self, key: str) -> dict[str, Any] | None: ...

    async def state_and_count(self, key: str, kind: str, event_key: str, since: float
                              ) -> tuple[dict[str, Any] | None, int]:
        """`get_state(key)` and `count_events(kind, event_key, since)`, in one statement
        (a circuit breaker's state and its successes: one read per decision, not two)."""
        ...

    async def put_state(self, key: str, value: dict[str, Any] | None, durable: bool = True
                        ) -> None:
        """The pause, approvals, open circuits, sessions: durable once it returns, as
        `admit` (rare writes, each answered to an operator or acted on). Not the note spool
        (`durable=False`): a storm's notes to a sink that is down would each wait for a
        flush, and a note lost with a power cut still has its decision."""
        ...
    async def drop_state(self, key: str, value: dict[str, Any], durable: bool = True) -> None:
        """Remove `key` if it still holds `value`, in one statement: a value put there since
        it was read (another replica's) stays. `durable` as `put_state`'s."""
        ...

    async def put_states(self, values: dict[str, dict[str, Any] | None],
                         claim: InboxItem | None = None) -> None:
        """Several keys written (None: removed) in one transaction, durable as `put_state`:
        all of them or none (an approval's decision and its pending entry). With `claim`, an
        inbox item this process claimed: only while that claim is still the item's, checked
        and held in that transaction (LeaseLost, nothing written, if it is not), so whoever
        claims the item next reads what was written. A claim on PostgreSQL lapses while its
        replica is frozen: written after another replica had taken the alert over and found
        the approval still pending, the decision was acted on by nobody. The claim itself,
        not its replica: one taken over, finished, then claimed here again by another task
        is this replica's, and the run that claim read still pending was left blocked."""
        ...

    async def swap_state(self, key: str, old: dict[str, Any] | None, new: dict[str, Any]
                         ) -> bool:
        """Put `new` at `key` if it still holds `old` (None: nothing), in one statement,
        durable as `put_state`; False, nothing written, if it holds something else now
        (an operator's circuit reset since `old` was read)."""
        ...

    async def list_state(self, prefix: str) -> dict[str, dict[str, Any]]: ...

    # coordination: what several replicas share (one process on an embedded store)
    async def acquire_lock(self, name: str, holder: str) -> str | None:
        """Take lock `name` for `holder` (kept while the holder's process lives); None when
        taken or already held by `holder`, else the other holder."""
        ...

    async def release_locks(self, holder: str) -> None: ...

    def critical(self, name: str) -> contextlib.AbstractAsyncContextManager[None]:
        """A section one caller at a time runs, across every process sharing the store."""
        ...

    def instrument(self, metrics: Any) -> None:
        """Report store latency and lease takeovers to these metrics."""
        ...

    def fence(self) -> None:
        """Raise LeaseLost if the work the current task claimed may be another process's
        now (its lease lapsed since its last renewal here): a call about to be made for it
        is not made. Work claimed from a store one process owns stays its own."""
        ...


class LocalCoordination:
    """Coordination for a store only one process uses: locks and sections in memory.

    A lock that outlived its process would block its target forever, so process-local
    is what a single replica wants.
    """

    def __init__(self) -> None:
        self._locks: dict[str, str] = {}
        # Each holder's locks: an execution releases its own without reading every lock held
        # (each of its two or three releases scanned all of them: up to `max_executions`).
        self._held: dict[str, set[str]] = {}
        self._sections: dict[str, asyncio.Lock] = {}

    async def acquire_lock(self, name: str, holder: str) -> str | None:
        current = self._locks.setdefault(name, holder)
        if current != holder:
            return current
        self._held.setdefault(holder, set()).add(name)
        return None

    async def release_locks(self, holder: str) -> None:
        for name in self._held.pop(holder, ()):
            del self._locks[name]

    @contextlib.asynccontextmanager
    async def critical(self, name: str) -> AsyncIterator[None]:
        async with self._sections.setdefault(name, asyncio.Lock()):
            yield

    def fence(self) -> None:
        """Nothing to check: no other process takes this one's work over."""

    def instrument(self, metrics: Any) -> None:
        """Nothing beyond the existing metrics: no leases, and latency is the ack's."""
