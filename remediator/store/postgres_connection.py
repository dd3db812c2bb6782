"""The PostgreSQL store's pooled connection: reset on release only when it holds session
state, and told to end the statements of a client that went away."""

from __future__ import annotations

import logging

import asyncpg

log = logging.getLogger("remediator.store")


class Connection(asyncpg.Connection):
    """A pooled connection that knows whether it holds session state. asyncpg's default
    reset on release (advisory unlock all, CLOSE ALL, UNLISTEN, RESET ALL) is a round trip
    per statement run from the pool: a fifth of a storm's processing. Only a critical
    section's connection holds session state (its advisory lock, should the unlock have
    failed); other statements run in single statements or transactions, which asyncpg
    still rolls back if left open."""

    _session_state = False

    def holds_session_state(self) -> None:
        self._session_state = True

    async def check_client(self) -> None:
        """The server ends a statement whose connection was closed under it (cut off, as
        postgres.py's `_count_pending` does; a replica killed) within a second, rather than
        running it on, waiting for a lock or counting, a backend each, until its connections
        ran out. Set after connecting, not as a startup parameter: a server that cannot watch
        its clients (PostgreSQL 13, 14 beyond Linux, Windows) refuses the setting, and would
        refuse the connection with it."""
        try:
            await self.execute("SET client_connection_check_interval = 1000")
        except asyncpg.PostgresError as exc:
            log.debug("PostgreSQL cannot end the statements of closed connections: %s", exc)

    async def reset_if_needed(self) -> None:
        if self._session_state:
            self._session_state = False
            await self.execute(self.get_reset_query())
            await self.check_client()  # (RESET ALL undid it)
