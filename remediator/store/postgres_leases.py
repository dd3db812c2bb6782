"""What this replica holds under a lease in the PostgreSQL store, and whether it may still
write for it.

A claim is a lease that the store's heartbeat renews; a replica whose renewals fail for a
whole lease, or find an item taken over, *fences* itself: every execution it claimed so far
gets LeaseLost at its next write (its claim epoch, carried in a context variable, is an old
one), so it cannot journal an intent, hence cannot mutate, after another replica may have
taken its work over. What is not another replica's yet is left to expire and be claimed
again, from its journal.
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Iterable

from .base import LeaseLost

log = logging.getLogger("remediator.store")
# The claim epoch of the task that claimed work; its child tasks inherit it. A write from
# an older epoch belongs to work this replica no longer holds.
_claim_epoch: contextvars.ContextVar[int | None] = contextvars.ContextVar("claim_epoch",
                                                                         default=None)


class Leases:
    """The inbox items and target locks this replica renews, and its fence."""

    def __init__(self, lease: float) -> None:
        self.lease = lease
        self.held: set[int] = set()  # inbox items claimed here and not finished
        self.holders: set[str] = set()  # executions holding target locks here
        self.epoch = 0
        self.valid_until = 0.0  # monotonic time until which our leases certainly hold

    def claimed(self) -> None:
        """The current task's work is claimed under the current epoch (and so is what its
        child tasks write)."""
        _claim_epoch.set(self.epoch)

    def renewed(self, sent: float, held: Iterable[int], kept: set[int]) -> None:
        """A renewal sent at `sent` (monotonic) for `held` kept the leases of `kept`."""
        # Still held here but not renewed: another replica took it over while this process
        # could not renew (frozen, partitioned). Its executions here must stop.
        lost = (set(held) - kept) & self.held
        if lost:
            self.fence_all(f"{len(lost)} item(s) were taken over by another replica")
        self.valid_until = sent + self.lease

    def check(self) -> None:
        """Past our last renewal plus the lease, another replica may own our work: fence it."""
        if self.held and time.monotonic() > self.valid_until - 1.0:
            self.fence_all(f"the leases of {len(self.held)} item(s) may have expired")

    def fence_all(self, why: str) -> None:
        """Every execution claimed so far stops at its next write (LeaseLost); what is not
        another replica's yet is left to expire and be claimed again, from its journal."""
        log.error("%s: the executions this replica claimed stop here; the work resumes from "
                  "the journal wherever it is claimed next", why)
        self.held.clear()
        self.epoch += 1

    def fence(self) -> None:
        """Raise LeaseLost if the current task's work was claimed before the fence fell."""
        self.check()
        epoch = _claim_epoch.get()
        if epoch is not None and epoch != self.epoch:
            raise LeaseLost("this replica lost the lease on this work; another replica "
                            "resumes it")
