"""The SQLite store's files: one writing process per database, and none readable by others.

SQLite's own locks keep one transaction from corrupting another, not two servers from
working on the same inbox: each would resume the other's running executions at start
(`release_running`) and run them again, and target locks live in each process's memory. So
a process that opens the file for writing first holds an exclusive `flock` on the database
file itself for as long as it has the store open; a second writer is refused at once. The
lock is the file's, not its name's: a second server given a symlink, a hard link or another
mount of the directory took a lock file of its own beside its spelling of the path, started,
and ran the first one's running execution again. The kernel drops the lock with the
process (kill -9 included), so a restart never waits for a stale one.

flock and the POSIX locks (`fcntl`) SQLite takes on the same file are independent on Linux,
but closing any descriptor of the file drops all of a process's POSIX locks, SQLite's
included: the lock's descriptor is opened before SQLite opens the file and closed after
SQLite's connections are. flock works on local filesystems and block volumes (a Kubernetes
ReadWriteOnce PVC); on NFS it is only as good as the mount's lock service (and SQLite's WAL
needs one host anyway).

Who holds it is written to `<db>.lock` beside the file's resolved path, itself flocked while
its text is true, for the message of the next one refused; a process that opened the file
by another name (a hard link, a bind mount of the file alone) is refused all the same,
without a name to give.

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
import time

from .base import StoreUnavailable

log = logging.getLogger("remediator")


class WriterLock:
    """The one writer's lock on a database file, held from `acquire` to `release`."""

    def __init__(self, db_path: str):
        self.db_path = db_path
        self.path = os.path.realpath(db_path) + ".lock"  # the holder's name
        self._db: int | None = None  # the locked descriptor of the database file
        self._name: int | None = None  # the holder's name's, locked while it is true

    def acquire(self) -> None:
        """Create the file if need be and lock it, or raise StoreUnavailable saying who
        holds it; never waits."""
        # os.open's descriptors are not inherited by child processes (PEP 446): a command an
        # action started cannot keep the lock past its server's death.
        fd = _open_database(self.db_path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            links = os.fstat(fd).st_nlink
            # No SQLite connection of this process's has the file open, so this close drops
            # no lock of SQLite's (but a second store on it in one process, as tests open).
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise StoreUnavailable(
                    f"in use by another remediator process ({self._holder(links)}): SQLite "
                    "holds one replica; stop that process, or use PostgreSQL for "
                    "several") from None
            # ENOLCK (NFS without a lock service): the one-writer rule cannot be kept.
            raise StoreUnavailable(f"cannot lock {self.db_path!r} ({exc.strerror}): the "
                                   "SQLite store needs a filesystem with file locks (a local "
                                   "volume)") from None
        self._db = fd
        _warn_if_readable(fd, self.db_path)
        try:
            name = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            self.release()
            raise StoreUnavailable(f"cannot create the lock file {self.path!r}: "
                                   f"{exc.strerror}") from None
        if not _lock_name(name):
            os.close(name)  # held by a process on a file since replaced at this path
            return
        # Who holds it, for the next one refused (a container's pid alone is often 1).
        os.ftruncate(name, 0)
        os.pwrite(name, f"pid {os.getpid()} on host {socket.gethostname()}\n".encode(), 0)
        self._name = name

    def release(self) -> None:
        """After SQLite's connections to the file are closed (the module says why). The
        lock file stays: unlinked, a process that had just opened it would lock a file the
        next one no longer sees."""
        if self._name is not None:
            name, self._name = self._name, None
            with contextlib.suppress(OSError):
                os.ftruncate(name, 0)
            os.close(name)
        if self._db is not None:
            fd, self._db = self._db, None
            os.close(fd)

    def _holder(self, links: int) -> str:
        """The name the holder wrote, if it still holds it."""
        with contextlib.suppress(OSError):
            fd = os.open(self.path, os.O_RDONLY)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                except BlockingIOError:  # held: its text is the holder's
                    text = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
                    if text:
                        return text
            finally:
                os.close(fd)
        # It has the lock and has not written its name yet, or opened the file by another.
        if links > 1:
            return (f"pid unknown: {self.db_path} has {links} hard links, and SQLite needs "
                    "one name per database")
        return "pid unknown"


def _lock_name(fd: int) -> bool:
    """A process refused a moment ago may be reading the name (`_holder`): wait for it, a
    little; a process holding it longer works on a file since replaced at this path."""
    for _ in range(20):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            time.sleep(0.01)
    return False


def _open_database(path: str) -> int:
    """The database file, created empty and 0600 if new (SQLite reads an empty file as an
    empty database, and would create it with the umask's mode)."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise StoreUnavailable(f"cannot open or create the database file {path!r}: "
                               f"{exc.strerror}") from None


def _warn_if_readable(fd: int, path: str) -> None:
    mode = stat.S_IMODE(os.fstat(fd).st_mode)
    if mode & 0o077:
        log.warning("store file %s has mode %04o: it holds escalation notes, labels and "
                    "log lines; chmod 600 it (and its -wal, -shm) unless others must "
                    "read it", path, mode)
