"""The database's clock as replicas read it (postgres_clock.py), against a real PostgreSQL
whose `clock_timestamp()` is shadowed, for one test's database, by a function that can run
ahead, answer slowly once, or jump: what a skewed node, a loaded database or a failover to a
host with another clock look like from a replica."""

from __future__ import annotations

import datetime
import logging

import asyncpg

from tests.integration.test_guards import Harness, web
from tests.support.worker import loopback_guards

SHADOW = """
CREATE SCHEMA shadow;
CREATE TABLE shadow.clock (ahead interval NOT NULL DEFAULT '0', slow_once boolean NOT NULL
                           DEFAULT false);
INSERT INTO shadow.clock DEFAULT VALUES;
CREATE FUNCTION shadow.clock_timestamp() RETURNS timestamptz LANGUAGE plpgsql VOLATILE AS $$
DECLARE c shadow.clock;
BEGIN
  SELECT * INTO c FROM shadow.clock;
  IF c.slow_once THEN UPDATE shadow.clock SET slow_once = false; PERFORM pg_sleep(1.3); END IF;
  RETURN pg_catalog.clock_timestamp() + c.ahead;
END $$;
"""


async def _clock(url: str, ahead: float = 0.0, slow_once: bool = False) -> None:
    """The database's clock `ahead` seconds of the host's, its next reading slow if asked."""
    db = await asyncpg.connect(url)
    try:
        if not await db.fetchval("SELECT count(*) FROM pg_namespace WHERE nspname='shadow'"):
            await db.execute(SHADOW)
            name = await db.fetchval("SELECT current_database()")
            await db.execute(f'ALTER DATABASE "{name}" SET search_path = public, shadow, '
                             "pg_catalog")
        await db.execute("UPDATE shadow.clock SET ahead = $1, slow_once = $2",
                         datetime.timedelta(seconds=ahead), slow_once)
    finally:
        await db.close()


def _harness(tmp_path, url: str, **kwargs) -> Harness:
    h = Harness(tmp_path, "{cooldown: 30m}", **kwargs)
    h.cfg.store = url
    return h


def test_a_slow_first_reading_still_sets_the_clock_before_any_work(tmp_path, run, postgres_url):
    """The database's clock is 45 minutes ahead and its first reading at open is slow (1.3 s,
    past what a renewal's reading may take). Dropped, the replica started on its own clock,
    recorded its restart on it, and the next renewal's reading made that restart 45 minutes
    older: its own 30-minute cooldown let a second one through a minute later."""
    run(_clock(postgres_url, ahead=2700, slow_once=True))
    h = _harness(tmp_path, postgres_url)
    run(h.start())
    try:
        assert abs(h.service.store.clock_offset - 2700) < 5  # the best of the first readings
        assert run(h.fire(web(0), at=0))[0]["outcome"] == "succeeded"
        run(h.service.store.renew())  # the heartbeat's reading, 10 s later
        [second] = run(h.fire(web(1), at=60))
    finally:
        run(h.service.stop())
    assert len(h.calls) == 1 and second["outcome"] == "blocked", second["reason"]
    assert "cooldown" in second["reason"]


def test_a_step_of_the_databases_clock_is_said(tmp_path, run, postgres_url, caplog):
    """A failover to a host whose clock is 45 minutes ahead moves every replica's offset at
    its next renewal, and each says so: windows counted across the step are off by it."""
    run(_clock(postgres_url))
    h = _harness(tmp_path, postgres_url)
    run(h.start())
    try:
        run(_clock(postgres_url, ahead=2700))
        with caplog.at_level(logging.WARNING, logger="remediator.store"):
            run(h.service.store.renew())
        offset = h.service.store.clock_offset
    finally:
        run(h.service.stop())
    assert abs(offset - 2700) < 5
    assert "the database's clock moved +270" in caplog.text


def test_a_skewed_replica_paused_by_config_is_paused_since_its_start(tmp_path, run,
                                                                     postgres_url):
    """`remediator_paused_seconds` of a replica paused by its config, whose clock is 45
    minutes behind the database's: its start was read before the offset, so it said 45
    minutes (and RemediatorPausedForHours fired that much early)."""
    run(_clock(postgres_url, ahead=2700))
    h = _harness(tmp_path, postgres_url, settings=loopback_guards(paused=True))
    run(h.start())
    try:
        run(h.service.maintain())
        paused = h.service.metrics.paused_seconds._value.get()
    finally:
        run(h.service.stop())
    assert 0 <= paused < 60, paused
