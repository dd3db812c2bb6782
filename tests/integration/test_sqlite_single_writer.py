"""One SQLite file, one writing process: a second `serve` (or `replay --store`) on the file a
running server uses is refused in one line before it touches anything (it resumed the first
one's running executions and ran them a second time); readers still read; a killed server's
lock goes with it; the files are the owner's alone. Real `remediator serve` processes."""

from __future__ import annotations

import json
import logging
import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from remediator.store.base import StoreUnavailable
from remediator.store.sqlite import SQLiteStore
from tests.conftest import write_rules
from tests.support.payloads import alert, notification
from tests.support.worker import WorkerProcess

RULES = """
playbooks:
  - name: slow-fix
    match: {alertname: SlowFix}
    target: {kind: deployment, namespace: demo, name: web}
    guards: {rate_limit: {max: 10, window: 1h}}
    steps:
      - name: settle
        action: wait
        params: {duration: 60s}
        timeout: 90s
      - name: fix
        action: http.request
        params: {url: "%(url)s", method: POST, json: {fp: "{{ alert.fingerprint }}"}}
"""


def refusal(store: str, pid: int = 0, holder: str = "") -> str:
    holder = holder or f"pid {pid} on host {socket.gethostname()}"
    return (f"remediator: cannot open the store {store}: in use by another remediator process "
            f"({holder}): SQLite holds one replica; stop that process, or use PostgreSQL for "
            "several")


def remediator(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "remediator.cli", *args], env=env,
                          capture_output=True, text=True, timeout=60)


def plain_lines(done: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in done.stderr.splitlines() if not line.startswith("{")]  # JSON logs


@pytest.fixture
def umask_022():
    """The usual umask, which the old store's files took (0644); inherited by the servers."""
    before = os.umask(0o022)
    yield
    os.umask(before)


def running(tmp_path: Path, rules: str, store: str | None = None
            ) -> tuple[WorkerProcess, dict]:
    """A live server in the middle of its execution's first step (a minute's wait)."""
    first = WorkerProcess(tmp_path, [rules], mode="live", store=store).start()
    try:
        assert first.post_alerts(notification(alert("SlowFix", fingerprint="s1")))[0] == 202
        deadline = time.monotonic() + 15
        while not [d for d in first.executions(outcome="running")
                   if [s["outcome"] for s in d["steps"]] == ["running"]]:
            assert time.monotonic() < deadline, first.logs()
            time.sleep(0.05)
        [execution] = first.executions(outcome="running")
    except BaseException:
        first.kill9()
        raise
    return first, execution


def test_a_second_writer_is_refused_and_a_killed_servers_lock_goes_with_it(
        tmp_path, webhook_receiver, umask_022):
    rules = str(write_rules(tmp_path / "rules", RULES % {"url": webhook_receiver.url}))
    first, execution = running(tmp_path, rules)
    try:
        # A second server on the same file, as started by hand or by `compose --scale`.
        second = WorkerProcess(tmp_path, [rules], mode="live", store=first.db)
        done = subprocess.run(second.args, env=second.env, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 2, done.stderr
        assert plain_lines(done) == [refusal(first.db, first.proc.pid)], done.stderr
        assert "resuming" not in done.stderr  # refused before its crash recovery
        replayed = tmp_path / "payload.json"
        replayed.write_text('{"version": "4", "status": "firing", "alerts": []}')
        done = remediator("replay", str(replayed), "--rules", rules, "--mode", "live",
                          "--store", first.db, env=second.env)
        assert done.returncode == 2, done.stderr
        assert plain_lines(done) == [refusal(first.db, first.proc.pid)], done.stderr

        # Readers open the file read-only beside the server, as before.
        history = remediator("history", "--store", first.db, env=second.env)
        assert history.returncode == 0 and execution["id"] in history.stdout, history.stderr
        show = remediator("show", execution["id"], "--store", first.db, env=second.env)
        assert show.returncode == 0 and "slow-fix" in show.stdout, show.stderr

        # The store holds notes, labels and log lines, as the notes' own 0600 files do.
        path = first.db.removeprefix("sqlite:///")
        modes = {suffix: stat.S_IMODE(os.stat(path + suffix).st_mode)
                 for suffix in ("", "-wal", "-shm", ".lock")}
        assert modes == dict.fromkeys(modes, 0o600), modes
        assert [d["outcome"] for d in first.executions()] == ["running"]
    finally:
        first.kill9()  # its lock goes with it: the next server starts at once
    assert webhook_receiver.deliveries == []  # nobody ran the step

    again = WorkerProcess(tmp_path, [rules], mode="live", store=first.db,
                          extra_env={"REMEDIATOR_GRACE_PERIOD": "1s"}).start()
    try:
        assert "resuming 1 alert(s)" in again.logs()
    finally:
        assert again.stop() == 0


def test_the_lock_is_the_files_whatever_name_it_is_opened_by(tmp_path, webhook_receiver):
    """A symlink to the file, one to its directory, a hard link: a second server (or live
    replay) given any of them is refused as on the path itself. Each took a lock file of its
    own beside its own spelling, started, re-queued the first one's running execution and
    ran it again: two POSTs for one alert."""
    rules = str(write_rules(tmp_path / "rules", RULES % {"url": webhook_receiver.url}))
    (tmp_path / "data").mkdir()
    (tmp_path / "links").mkdir()
    db = tmp_path / "data" / "remediator.db"
    first, execution = running(tmp_path, rules, store=f"sqlite:///{db}")
    try:
        (tmp_path / "links" / "file.db").symlink_to(db)
        (tmp_path / "dir").symlink_to(tmp_path / "data")
        os.link(db, tmp_path / "links" / "hard.db")
        named = refusal("{store}", first.proc.pid)
        hard = tmp_path / "links" / "hard.db"
        names = {tmp_path / "links" / "file.db": named, tmp_path / "dir" / "remediator.db": named,
                 # The holder wrote its name beside the other name, not found from this one.
                 hard: refusal("{store}", holder=f"pid unknown: {hard} has 2 hard links, and "
                                                 "SQLite needs one name per database")}
        payload = tmp_path / "payload.json"
        payload.write_text(json.dumps(notification(alert("SlowFix", fingerprint="s2"))))
        for name, expected in names.items():
            store = f"sqlite:///{name}"
            second = WorkerProcess(tmp_path, [rules], mode="live", store=store)
            done = subprocess.run(second.args, env=second.env, capture_output=True, text=True,
                                  timeout=60)
            assert done.returncode == 2, done.stderr
            assert plain_lines(done) == [expected.format(store=store)], done.stderr
            done = remediator("replay", str(payload), "--rules", rules, "--mode", "live",
                              "--store", store, env=second.env)
            assert done.returncode == 2, done.stderr
            assert plain_lines(done) == [expected.format(store=store)], done.stderr
        # Readers still read, by another name too.
        history = remediator("history", "--store", f"sqlite:///{tmp_path}/links/file.db",
                             env=second.env)
        assert history.returncode == 0 and execution["id"] in history.stdout, history.stderr
        assert [d["outcome"] for d in first.executions()] == ["running"]
    finally:
        first.kill9()
    assert webhook_receiver.deliveries == []  # nobody ran the step


def test_the_lock_is_the_open_writers(tmp_path, run):
    """In one process as across them (flock is per open file); readers and memory need none."""
    url = f"sqlite:///{tmp_path}/s.db"
    holder = SQLiteStore(url)
    run(holder.open())
    try:
        other = SQLiteStore(url)
        with pytest.raises(StoreUnavailable, match=rf"^in use by another remediator process "
                                                   rf"\(pid {os.getpid()} on host "):
            run(other.open())
        assert not other.is_open
        reader = SQLiteStore(url, read_only=True)
        run(reader.open())
        run(reader.close())
        memory = [SQLiteStore("sqlite://"), SQLiteStore("sqlite://")]
        for store in memory:
            run(store.open())
        for store in memory:
            run(store.close())
    finally:
        run(holder.close())
    run(other.open())  # closed, the file is free again
    run(other.close())


def test_an_existing_files_mode_is_left_alone_and_named(tmp_path, run, caplog):
    db = tmp_path / "old.db"
    db.touch()
    db.chmod(0o644)  # as the versions before created it
    store = SQLiteStore(f"sqlite:///{db}")
    with caplog.at_level(logging.WARNING, logger="remediator"):
        run(store.open())
    run(store.close())
    assert stat.S_IMODE(db.stat().st_mode) == 0o644
    assert f"store file {store.path} has mode 0644" in caplog.text
    assert stat.S_IMODE(Path(f"{db}.lock").stat().st_mode) == 0o600
