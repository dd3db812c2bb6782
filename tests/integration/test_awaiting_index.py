"""The maintenance pass reads the runs waiting on an approval by their index, never by a scan
of every decision kept (`Store.awaiting_approval`, every 10 s): also on a store upgraded with
its history, where the column is new and the planner knows nothing of it yet.

PostgreSQL guesses that `awaiting IS NOT NULL` holds for 99.5 % of the rows while the column
has no statistics (until autovacuum analyzes the table again, after a tenth of it changed:
days, on a large one), and so read the whole table at every pass. Real stores: SQLite, and
the suite's PostgreSQL; the plans asked of each with the statement the store runs.
"""

from __future__ import annotations

import json
import sqlite3

from remediator.store import open_store, postgres, sqlite

ROWS = 20_000
WHEN = "2026-01-01T00:00:00.000000Z"


async def _opened(url: str) -> None:
    store = open_store(url)
    await store.open()
    await store.close()


def test_postgresql_reads_the_runs_awaiting_by_their_index_after_an_upgrade(
        run, postgres_cluster, postgres_url):
    database = postgres_url.rsplit("/", 1)[1]
    run(_opened(postgres_url))
    # The store as the version before left it, with its history, analyzed (autovacuum does)
    postgres_cluster.sql(
        "DROP INDEX executions_awaiting; ALTER TABLE executions DROP COLUMN awaiting; "
        "DELETE FROM remediator_schema WHERE version >= 12; INSERT INTO executions (id, "
        "created_at, updated_at, alertname, playbook, outcome, fingerprint, body) SELECT "
        f"'e' || g, '{WHEN}', '{WHEN}', 'A', 'pb', 'success', 'f', '{{}}' FROM "
        f"generate_series(1, {ROWS}) g; ANALYZE executions", database)
    run(_opened(postgres_url))  # upgraded
    plan = postgres_cluster.sql("EXPLAIN (FORMAT JSON) " + postgres.AWAITING, database)
    assert json.loads(plan) and "Seq Scan" not in plan and "executions_awaiting" in plan, plan


def test_sqlite_reads_the_runs_awaiting_by_their_index(tmp_path, run):
    url = f"sqlite:///{tmp_path}/s.db"
    run(_opened(url))
    with sqlite3.connect(tmp_path / "s.db") as db:
        db.executemany("INSERT INTO executions (id, created_at, updated_at, alertname, "
                       "playbook, outcome, fingerprint, body) VALUES (?, ?, ?, 'A', 'pb', "
                       "'success', 'f', '{}')", [(f"e{i}", WHEN, WHEN) for i in range(ROWS)])
        for analyzed in (False, True):  # (the store never analyzes; a DBA's shell may)
            if analyzed:
                db.execute("ANALYZE")
            plan = " ".join(row[-1] for row in db.execute(
                "EXPLAIN QUERY PLAN " + sqlite.AWAITING))
            assert "executions_awaiting" in plan, (analyzed, plan)
