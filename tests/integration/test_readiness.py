"""`/-/ready` says whether this replica acknowledges alerts now: a Kubernetes Service routes
Alertmanager to ready replicas only. A store that refuses intake's writes kept it 200 while
every webhook was a 503 (the log said so once a minute), so Alertmanager's retries kept
landing on a replica that refused them all. Readiness now follows intake's own commit, and
comes back once it works; `/-/healthy` (liveness) stays 200 throughout: a restart gives the
store no writes back.
"""

from __future__ import annotations

import os
import threading
import time

from tests.conftest import new_store, write_rules
from tests.integration.test_ha_postgres import _alert, _notification, _rules
from tests.integration.test_store_locks import RULES, hold_write_lock
from tests.support.payloads import alert, notification
from tests.support.worker import WorkerProcess, http

REFUSES = "Not ready: the store refuses to acknowledge alerts (webhooks are answered 503): "


def _ready_until(w: WorkerProcess, status: int, timeout: float = 60) -> str:
    """The readiness body once it answers `status` (each answer comes within its probe's
    wait: the loop of a replica whose store refuses is never blocked by it)."""
    deadline = time.monotonic() + timeout
    while True:
        code, body = http("GET", f"{w.url}/-/ready", timeout=5)
        if code == status:
            return body
        assert time.monotonic() < deadline, (code, body, w.logs())
        time.sleep(0.2)


def test_sqlite_unready_while_another_process_holds_the_write_lock(tmp_path):
    """A backup tool or `sqlite3` in a shell holds the write lock for longer than a commit
    waits for it (5 s): intake refuses every webhook, so the replica is unready, then ready
    once the lock is let go."""
    w = WorkerProcess(tmp_path, [str(write_rules(tmp_path / "rules", RULES))]).start()
    holder = None
    try:
        assert _ready_until(w, 200) == "Ready.\n"
        holder = hold_write_lock(w.db.removeprefix("sqlite:///"))
        posted: list[int] = []
        post = threading.Thread(target=lambda: posted.append(
            w.post_alerts(notification(alert("Anything", fingerprint="held")))[0]))
        post.start()
        body = _ready_until(w, 503)
        assert body.startswith(REFUSES) and "database is locked" in body, body
        assert http("GET", f"{w.url}/-/healthy")[0] == 200  # alive: no restart for it
        post.join(30)
        assert posted == [503]  # what readiness says is what the webhook was answered
        holder.communicate("release\n", timeout=10)
        assert _ready_until(w, 200) == "Ready.\n"
        assert w.post_alerts(notification(alert("Anything", fingerprint="held")))[0] == 202
    finally:
        if holder is not None and holder.poll() is None:
            holder.kill()
        assert w.stop() == 0


def test_sqlite_unready_once_its_files_are_deleted_under_it(tmp_path):
    """The store's files deleted under a running serve (a cleanup job, a volume
    re-provisioned): its commits went on into the unlinked file, every webhook a 202, all of
    it gone at the next restart with the history, cooldowns and pause. Now the store
    notices, says so in the log, and refuses: webhooks and readiness 503."""
    w = WorkerProcess(tmp_path, [str(write_rules(tmp_path / "rules", RULES))]).start()
    try:
        assert _ready_until(w, 200) == "Ready.\n"
        db = w.db.removeprefix("sqlite:///")
        for suffix in ("", "-wal", "-shm"):
            os.unlink(db + suffix)
        body = _ready_until(w, 503)
        assert body.startswith(REFUSES) and "was deleted" in body, body
        assert w.post_alerts(notification(alert("Anything", fingerprint="lost")))[0] == 503
        assert f"store file {db} was deleted" in w.logs()
    finally:
        assert w.stop() == 0


def test_postgres_unready_while_the_database_is_read_only(tmp_path, postgres_cluster,
                                                          postgres_url):
    """A database gone read-only (a failover's old primary, a provider's storage-full
    switch: `default_transaction_read_only`): every webhook was a 503 and `/-/ready` 200.
    Unready with the database's reason, then ready again once it takes writes."""
    database = postgres_url.rsplit("/", 1)[1]
    w = WorkerProcess(tmp_path, [str(write_rules(tmp_path / "rules", _rules("http://127.0.0.1:9/")))],
                      store=new_store(postgres_url), extra_env={"REMEDIATOR_STORE_LEASE": "3s"})
    w.start()

    def read_only(on: bool) -> None:
        # A setting of the database is read by the sessions that start after it: its
        # sessions are ended, as a failover ends them, and the replica connects again.
        postgres_cluster.sql(f"ALTER DATABASE {database} " + (
            "SET default_transaction_read_only = on" if on else
            "RESET default_transaction_read_only"))
        postgres_cluster.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                             f"datname = '{database}'")

    try:
        assert _ready_until(w, 200) == "Ready.\n"
        read_only(True)
        body = _ready_until(w, 503)
        while not body.startswith(REFUSES):  # first unreachable, as its sessions end
            body = _ready_until(w, 503)
        assert "cannot execute INSERT in a read-only transaction" in body, body
        assert w.post_alerts(_notification(_alert("ro1")))[0] == 503
        assert http("GET", f"{w.url}/-/healthy")[0] == 200
        read_only(False)
        assert _ready_until(w, 200) == "Ready.\n"
        assert w.post_alerts(_notification(_alert("ro1")))[0] == 202
        assert [d["outcome"] for d in w.decided()] == ["planned"]
    finally:
        w.stop()
