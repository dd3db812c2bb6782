"""PostgreSQL behind a network partition (connections hang, nothing is refused): what must
keep answering on time does, and what the partition held is free once it heals."""

from __future__ import annotations

import threading
import time
from urllib.parse import urlsplit

import asyncpg
import pytest

from remediator.config import Config
from remediator.engine import records
from tests.conftest import write_rules
from tests.support.payloads import alert, notification
from tests.support.tcp_proxy import TcpProxy
from tests.support.worker import TOKEN, InProcessWorker, http, loopback_guards

HOLD = """
playbooks:
  - name: hold
    match: {alertname: Hold}
    steps:
      - {name: hold, action: wait, params: {duration: 60s}}
  - name: note
    match: {alertname: Quick}
    steps:
      - {name: say, action: log, params: {message: quick}}
"""


def _pending(w: InProcessWorker) -> str:
    status, text = http("GET", f"{w.url}/metrics", timeout=60)
    assert status == 200
    [line] = [x for x in text.splitlines() if x.startswith("remediator_inbox_pending ")]
    return line.split()[1]



def _behind_proxy(tmp_path, postgres_url: str, rules_text: str
                  ) -> tuple[InProcessWorker, TcpProxy]:
    """A live worker whose store connections pass through a proxy the test can cut."""
    url = urlsplit(postgres_url)
    proxy = TcpProxy(url.port).start()
    rules = write_rules(tmp_path / "rules", rules_text)
    cfg = Config(rules=[str(rules)], store=url._replace(netloc=f"{url.username}@127.0.0.1:"
                                                              f"{proxy.port}").geturl(),
                 webhook_token=TOKEN, mode="live", escalation_dir=str(tmp_path / "notes"),
                 guards=loopback_guards(), grace_period=0.1)
    return InProcessWorker(cfg).start(), proxy

def test_a_scrape_answers_within_its_limit_while_postgres_hangs(tmp_path, postgres_url):
    """The pending gauge is counted when scraped, within a second. Its connection, cancelled
    in a hanging query, was handed back to the pool, which waited up to its 10 s timeout for
    the cancellation: the scrape took ~10 s, and a scrape a second held a connection each.
    Now a scrape answers in about its second with the last count, the loop answers meanwhile,
    scrapes through the partition hold no more connections, and once it heals alerts are
    processed and counted again."""
    w, proxy = _behind_proxy(tmp_path, postgres_url, HOLD)
    try:
        assert w.post_alerts(notification(alert("Hold", fingerprint="h1"),
                                          alert("Hold", fingerprint="h2")))[0] == 202
        deadline = time.monotonic() + 15
        while _pending(w) != "2.0":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        pool = w.service.store._pool
        runs = w.service.engine.inflight._runs

        async def in_use() -> int:
            return pool.get_size() - pool.get_idle_size()

        async def asleep() -> bool:
            return len(runs) == 2 and all(r.waiting for r in runs.values()) \
                and await in_use() == 0

        # Counted once both runs sleep in their wait, their writes done: counted as they
        # started (claimed, so pending, some 80 ms before), a write the partition then held
        # was one connection more than the baseline, which had seen it gone.
        while not w.call(asleep()):
            assert time.monotonic() < deadline
            time.sleep(0.005)
        before = w.call(in_use())
        proxy.partition()
        took, healthy = [], []
        for _ in range(14):  # a scrape a second, past the pool's 10 s
            started = time.monotonic()
            probe = threading.Thread(target=lambda: healthy.append(_timed_health(w)))
            probe.start()
            assert _pending(w) == "2.0"  # the last count, kept
            took.append(time.monotonic() - started)
            probe.join()
            time.sleep(max(0.0, 1.0 - took[-1]))
        held = w.call(in_use())
        proxy.heal()
        print(f"scrapes {min(took):.2f}-{max(took):.2f} s, /-/healthy up to "
              f"{max(healthy):.3f} s, connections in use {before} -> {held}")
        # About its second: 2.13 s seen on a loaded machine; the fault held it 10 s.
        assert max(took) < 5.0, took
        assert max(healthy) < 0.5, healthy  # the loop is free while the scrape waits
        # The dispatcher's claim hangs too, and the maintenance pass's section; each scrape
        # held one more, for 10 s.
        assert held <= before + 2, (before, held)
        assert w.post_alerts(notification(alert("Quick", fingerprint="q1")))[0] == 202
        assert w.wait_executions(1, timeout=30, playbook="note"), "not processed after healing"
        deadline = time.monotonic() + 15
        while _pending(w) != "2.0" or w.call(in_use()) > before + 1:
            assert time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        proxy.heal()
        w.stop()
        proxy.stop()


def _timed_health(w: InProcessWorker) -> float:
    time.sleep(0.3)  # while the scrape waits for its count
    started = time.monotonic()
    http("GET", f"{w.url}/-/healthy", timeout=30)
    return time.monotonic() - started


def test_a_count_its_scrape_cut_off_ends_in_the_database_too(tmp_path, postgres_url):
    """A count the scrape cut off closed its connection, but PostgreSQL went on running it:
    waiting for a lock here, each scrape a second left one more backend waiting (3 after 3
    scrapes), until the lock went or the server's connections ran out. The server now ends
    a statement whose connection is gone."""
    cfg = Config(rules=[str(write_rules(tmp_path / "rules", HOLD))], store=postgres_url,
                 webhook_token=TOKEN, escalation_dir=str(tmp_path / "notes"),
                 guards=loopback_guards(), grace_period=0.1)
    w = InProcessWorker(cfg).start()

    async def counting(db: asyncpg.Connection) -> int:
        await db.execute("SELECT pg_stat_clear_snapshot()")  # (else one per transaction)
        return await db.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE "
            "'%FROM inbox WHERE state = ''pending'' OR state = ''running''%'")

    async def lock() -> asyncpg.Connection:
        db = await asyncpg.connect(postgres_url)
        await db.execute("BEGIN; LOCK TABLE inbox IN ACCESS EXCLUSIVE MODE")
        return db

    try:
        assert _pending(w) == "0.0"
        holder = w.call(lock())
        try:
            for _ in range(3):  # each waits for the lock, cut off at its second
                time.sleep(1.0)
                started = time.monotonic()
                assert _pending(w) == "0.0"  # the last count, kept
                assert 0.9 < time.monotonic() - started < 5.0  # the lock held it to its second
            time.sleep(1.5)  # the server's check of the connection, a second apart
            left = w.call(counting(holder))
        finally:
            w.call(holder.close())
        assert left == 0, f"{left} cut-off counts still running in the database"
    finally:
        w.stop()


ADMITTED = """
playbooks:
  - name: admitted
    match: {alertname: Admitted}
    target: {kind: deployment, namespace: demo, name: web}
    guards: {rate_limit: {max: 1, window: 1h}}
    steps:
      - name: restart
        action: http.request
        params: {url: "%(url)s", method: POST, json: {fp: "{{ alert.fingerprint }}"}}
"""


@pytest.mark.parametrize("stale", [False, True], ids=["retried-soon", "retried-late"])
def test_a_change_admitted_whose_answer_was_lost_runs_once_on_the_retry(
        tmp_path, postgres_url, webhook_receiver, monkeypatch, stale):
    """The connection is cut after the admission's statement was sent, before its answer:
    PostgreSQL committed it (the intent is journaled, the rate limit's place taken), but the
    run saw the store fail, and its call was never sent. The alert's retry here knows that:
    it runs the change, once, without taking a second place in the rate limit (of 1), where
    it failed the run as interrupted ("verify its effect by hand") with nothing changed.
    Retried later than UNSENT_FRESH (a long outage), the limits it reserved would date the
    call from the admission, another alert's cooldown ending early: not run, a human looks."""
    if stale:
        monkeypatch.setattr(records, "UNSENT_FRESH", 0.0)
    w, proxy = _behind_proxy(tmp_path, postgres_url,
                             ADMITTED % {"url": webhook_receiver.url})
    try:
        # The admission's statement (the schema's migration is behind us), cut once its
        # values are sent, the claim it checks among them.
        proxy.cut_after(b"remediator_admit", b"a1:2026-11-21T10:00:00Z:firing")
        assert w.post_alerts(notification(alert("Admitted", fingerprint="a1")))[0] == 202
        assert proxy.cut.wait(30)
        [d] = w.wait_executions(1, timeout=30)
        if stale:
            assert (d["outcome"], d["reason"]) == (
                "failed", "step 'restart' was interrupted: verify its effect by hand"), d
            assert webhook_receiver.deliveries == []
            return
        assert d["outcome"] == "succeeded", d["reason"]
        assert [x.body for x in webhook_receiver.deliveries] == [{"fp": "a1"}]

        async def mutations() -> int:
            db = await asyncpg.connect(postgres_url)
            try:
                return await db.fetchval("SELECT count(*) FROM events WHERE kind='mutation'")
            finally:
                await db.close()
        assert w.call(mutations()) == 1
    finally:
        w.stop()
        proxy.stop()
