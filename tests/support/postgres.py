"""A real PostgreSQL cluster for the tests: `initdb` in a temporary directory, `pg_ctl` on a
free loopback port, one per test session; each test gets a database of its own.

The server refuses to run as root, so as root (CI) it runs as the `postgres` user that
Debian's package creates, in a directory chowned to it.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.procs import LOCALHOST, free_port


def _bindir() -> Path:
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        found = Path(subprocess.check_output(["pg_config", "--bindir"], text=True).strip())
        if (found / "initdb").exists():
            return found
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not candidates:
        raise RuntimeError("PostgreSQL server binaries not found (apt-get install postgresql)")
    return Path(candidates[-1]).parent


class PostgresCluster:
    """One throwaway cluster: trust authentication, loopback only, socket in its directory."""

    def __init__(self) -> None:
        self.bindir = _bindir()
        self.dir = Path(tempfile.mkdtemp(prefix="pg-"))
        self.data = self.dir / "data"
        self.port = 0
        self._as_root = os.geteuid() == 0
        if self._as_root:
            os.chmod(self.dir, 0o755)
            shutil.chown(self.dir, "postgres", "postgres")

    def _run(self, *argv: str) -> None:
        cmd = [str(a) for a in argv]
        if self._as_root:
            cmd = ["su", "postgres", "-s", "/bin/sh", "-c", " ".join(_quote(c) for c in cmd)]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)

    def init(self) -> PostgresCluster:
        self._run(self.bindir / "initdb", "-D", self.data, "-A", "trust", "-U", "postgres",
                  "--no-sync", "-E", "UTF8")
        return self.start()

    def start(self) -> PostgresCluster:
        self.port = self.port or free_port()
        self._run(self.bindir / "pg_ctl", "-D", self.data, "-l", self.dir / "server.log", "-w",
                  "-t", "60", "start", "-o",
                  f"-p {self.port} -k {self.dir} -c listen_addresses={LOCALHOST} "
                  "-c max_connections=200 -c fsync=on")
        return self

    def stop(self, mode: str = "fast") -> None:
        with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
            self._run(self.bindir / "pg_ctl", "-D", self.data, "-m", mode, "-w", "stop")

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@{LOCALHOST}:{self.port}/{database}"

    def create_database(self) -> str:
        """A fresh, empty database; returns its URL."""
        name = "t_" + uuid.uuid4().hex[:12]
        self.sql(f"CREATE DATABASE {name}")
        return self.url(name)

    def password_role(self, role: str, password: str) -> str:
        """A role that must log in with its password over loopback (scram-sha-256 in
        pg_hba.conf, for that role only: the others keep trust), owning a new database whose
        URL (without the password) is returned."""
        self.sql(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        database = "p_" + uuid.uuid4().hex[:12]
        self.sql(f"CREATE DATABASE {database} OWNER {role}")
        hba = self.data / "pg_hba.conf"
        hba.write_text(f"host all {role} {LOCALHOST}/32 scram-sha-256\n" + hba.read_text())
        self.sql("SELECT pg_reload_conf()")
        return f"postgresql://{role}@{LOCALHOST}:{self.port}/{database}"

    def sql(self, statement: str, database: str = "postgres") -> str:
        out = subprocess.run([str(self.bindir / "psql"), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1",
                              "-h", LOCALHOST, "-p", str(self.port), "-U", "postgres",
                              "-d", database, "-c", statement],
                             check=True, capture_output=True, text=True, timeout=60)
        return out.stdout.strip()


@contextlib.contextmanager
def refused(cluster: PostgresCluster, url: str, when: str, message: str,
            sqlstate: str = "raise_exception") -> Iterator[None]:
    """The database refuses statements (a trigger `when` raising `message`), then no more."""
    database = url.rsplit("/", 1)[1]
    cluster.sql("CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE "
                f"EXCEPTION '{message}' USING ERRCODE = '{sqlstate}'; END $$; CREATE TRIGGER "
                f"refuse {when} EXECUTE FUNCTION refuse()", database)
    try:
        yield
    finally:
        cluster.sql("DROP FUNCTION refuse() CASCADE", database)


def _quote(arg: str) -> str:
    return "'" + arg.replace("'", "'\\''") + "'"


@pytest.fixture(scope="session")
def postgres_cluster():
    cluster = PostgresCluster().init()
    yield cluster
    cluster.destroy()


@pytest.fixture
def postgres_url(postgres_cluster) -> str:
    """The URL of a new database in the session's cluster, for one test."""
    return postgres_cluster.create_database()
