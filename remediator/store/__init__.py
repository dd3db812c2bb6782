"""Stores: `sqlite:///path.db` (embedded, one replica) or `postgresql://...` (several)."""

from __future__ import annotations

from .base import Store


def open_store(url: str, sync: str = "normal", lease: float = 30.0, password: str = "",
               read_only: bool = False) -> Store:
    """The store for a URL; the one place a backend is chosen. `read_only` is for readers
    beside running servers (the CLI): they never write, create nor migrate anything."""
    if url.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresStore  # the driver is only imported when used

        return PostgresStore(url, lease=lease, password=password, read_only=read_only,
                             sync=sync)
    from .sqlite import SQLiteStore

    return SQLiteStore(url, sync, read_only)
