"""The SQLite store's files: one writing process per database, and none readable by others.

SQLite's own locks keep one transaction from corrupting another, not two servers from
working on the same inbox: each would resume the other's running executions at start
(`release_running`) and run them again, and target locks live in each process's memory. So
a process that opens the file for writing first holds an exclusive `flock` on `<db>.lock`
for as long as it has the store open; a second writer is refused at once. The kernel drops
the lock with the process (kill -9 included), so a restart never waits for a stale one.
The lock is on a file of its own: POSIX locks (`fcntl`/`lockf`), which SQLite takes on
the database, are per process, and closing any descriptor of the file drops all of them,
SQLite's included. flock works on local filesystems and block volumes (a Kubernetes
ReadWriteOnce PVC); on NFS it is only as good as the mount's lock service.

The database holds escalation notes, labels and log lines, as the notes' own files (0600)
do: a new one is created 0600 (SQLite gives its -wal and -shm the database's mode), and so
is the lock file. An existing file keeps its mode, with a warning if others may read it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import socket
import stat

from .base import StoreUnavailable

log = logging.getLogger("remediator")


class WriterLock:
    """The one writer's lock on a database file, held from `acquire` to `release`."""

    def __init__(self, db_path: str):
        self.path = db_path + ".lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise StoreUnavailable saying who holds it; never waits."""
        # os.open's descriptors are not inherited by child processes (PEP 446): a command an
        # action started cannot keep the lock past its server's death.
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StoreUnavailable(f"cannot create the lock file {self.path!r}: "
                                   f"{exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _holder(fd)
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise StoreUnavailable(
                    f"in use by another remediator process ({holder}): SQLite holds one "
                    "replica; stop that process, or use PostgreSQL for several") from None
            # ENOLCK (NFS without a lock service): the one-writer rule cannot be kept.
            raise StoreUnavailable(f"cannot lock {self.path!r} ({exc.strerror}): the SQLite "
                                   "store needs a filesystem with file locks (a local "
                                   "volume)") from None
        # Who holds it, for the next one refused (a container's pid alone is often 1).
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on host {socket.gethostname()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        # The file stays: unlinked, a process that had just opened it would lock a file
        # the next one no longer sees.
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)


def _holder(fd: int) -> str:
    with contextlib.suppress(OSError):
        text = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
        if text:
            return text
    return "pid unknown"  # it has the lock, and has not written its name yet


def create_private(path: str) -> None:
    """A new database file is created empty, 0600, before SQLite opens it (SQLite reads an
    empty file as an empty database, and would create it with the umask's mode)."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        return
    except FileExistsError:
        pass
    with contextlib.suppress(OSError):
        mode = stat.S_IMODE(os.stat(path).st_mode)
        if mode & 0o077:
            log.warning("store file %s has mode %04o: it holds escalation notes, labels and "
                        "log lines; chmod 600 it (and its -wal, -shm) unless others must "
                        "read it", path, mode)
