"""The PostgreSQL store's schema: its versioned migrations and the step that applies them.

The schema is versioned in `remediator_schema` and migrated at open (`PostgresStore.open`),
one entry per version, under an advisory lock, so replicas that start together migrate once.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

import asyncpg

from . import packing
from .base import StoreUnavailable

log = logging.getLogger("remediator.store")
MIGRATION_LOCK = 0x72656D6564  # advisory lock key held while migrating ("remed")
# Each entry migrates from version i to i+1; never edit a released entry, append one.
MIGRATIONS: list[str | Callable[[asyncpg.Connection], Awaitable[None]]] = [
    """
    CREATE TABLE inbox (
        id BIGSERIAL PRIMARY KEY,
        dedupe_key TEXT NOT NULL UNIQUE,
        alert TEXT NOT NULL,
        grp TEXT NOT NULL,
        received_at TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending',
        owner TEXT,
        lease_until TIMESTAMPTZ
    );
    CREATE INDEX inbox_todo ON inbox (id) WHERE state IN ('pending', 'running');
    CREATE INDEX inbox_done ON inbox (received_at) WHERE state = 'done';
    CREATE TABLE executions (
        id TEXT PRIMARY KEY,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        alertname TEXT NOT NULL,
        playbook TEXT,
        outcome TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        body TEXT NOT NULL
    );
    CREATE INDEX executions_created ON executions (created_at);
    CREATE INDEX executions_outcome ON executions (outcome, created_at);
    CREATE TABLE steps (
        execution_id TEXT NOT NULL,
        idx INTEGER NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (execution_id, idx)
    );
    CREATE TABLE events (kind TEXT NOT NULL, key TEXT NOT NULL, at DOUBLE PRECISION NOT NULL,
                         data TEXT NOT NULL DEFAULT '{}');
    CREATE INDEX events_key ON events (kind, key, at);
    CREATE TABLE state (key TEXT COLLATE "C" PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE locks (name TEXT PRIMARY KEY, holder TEXT NOT NULL, owner TEXT NOT NULL,
                        lease_until TIMESTAMPTZ NOT NULL);
    """,
    # 2: compressed (packing.py): decisions and inbox items against shared references,
    # step records alone past 256 bytes; rows written before keep their JSON text
    """
    ALTER TABLE inbox ADD COLUMN packed BYTEA, ADD COLUMN ref BIGINT,
        ALTER COLUMN alert DROP NOT NULL, ALTER COLUMN grp DROP NOT NULL;
    ALTER TABLE executions ADD COLUMN ref BIGINT, ADD COLUMN packed BYTEA,
        ALTER COLUMN body DROP NOT NULL;
    ALTER TABLE steps ADD COLUMN packed BYTEA, ALTER COLUMN body DROP NOT NULL;
    CREATE TABLE refs (id BIGINT PRIMARY KEY, created DOUBLE PRECISION NOT NULL,
                       data BYTEA NOT NULL);
    """,
    # 3: guard admission in one round trip (Store.admit). A transaction-scoped advisory lock
    # per limited (kind, key), taken in one order, so admissions on unrelated targets never
    # wait for each other; each statement after the locks takes a new snapshot, so it sees
    # what the previous holder committed. Returns the 0-based index of the limit reached.
    """
    CREATE FUNCTION remediator_admit(l_kind TEXT[], l_key TEXT[], l_since DOUBLE PRECISION[],
                                     l_max INTEGER[], l_unless TEXT[], e_kind TEXT[],
                                     e_key TEXT[], e_at DOUBLE PRECISION[], e_data TEXT[])
    RETURNS INTEGER LANGUAGE plpgsql AS $$
    DECLARE
        lock_key INTEGER;
        counted INTEGER;
    BEGIN
        FOR lock_key IN SELECT DISTINCT hashtext(k || chr(31) || y)
                        FROM unnest(l_kind, l_key) AS t(k, y) ORDER BY 1 LOOP
            PERFORM pg_advisory_xact_lock(1919771762, lock_key);
        END LOOP;
        FOR i IN 1 .. coalesce(array_length(l_kind, 1), 0) LOOP
            SELECT count(*) INTO counted FROM (
                SELECT 1 FROM events e WHERE e.kind = l_kind[i] AND e.key = l_key[i]
                AND e.at >= l_since[i] AND NOT EXISTS (
                    SELECT 1 FROM jsonb_each_text(coalesce(l_unless[i], '{}')::jsonb) u
                    WHERE e.data::jsonb ->> u.key = u.value)
                LIMIT l_max[i]) c;
            IF counted >= l_max[i] THEN
                RETURN i - 1;
            END IF;
        END LOOP;
        INSERT INTO events (kind, key, at, data) SELECT * FROM unnest(e_kind, e_key, e_at, e_data);
        RETURN NULL;
    END $$;
    """,
    # 4: what a mutation's admission must also know, read in the same statement: the alert's
    # resolution was acknowledged (-2), automation is paused (-1). An overload: replicas of the
    # previous version, still running during a rolling update, keep calling the one above.
    """
    CREATE FUNCTION remediator_admit(l_kind TEXT[], l_key TEXT[], l_since DOUBLE PRECISION[],
                                     l_max INTEGER[], l_unless TEXT[], e_kind TEXT[],
                                     e_key TEXT[], e_at DOUBLE PRECISION[], e_data TEXT[],
                                     pause_key TEXT, resolution TEXT)
    RETURNS INTEGER LANGUAGE plpgsql AS $$
    BEGIN
        IF resolution IS NOT NULL AND EXISTS (SELECT 1 FROM inbox WHERE dedupe_key = resolution)
        THEN
            RETURN -2;
        END IF;
        IF pause_key IS NOT NULL AND EXISTS (SELECT 1 FROM state WHERE key = pause_key
                                             AND (value::jsonb ->> 'paused') = 'true') THEN
            RETURN -1;
        END IF;
        RETURN remediator_admit(l_kind, l_key, l_since, l_max, l_unless, e_kind, e_key, e_at,
                                e_data);
    END $$;
    """,
    # 5: smaller indexes, measured on the storm bench (bytes per decision): decisions were
    # indexed by outcome for one query that needs it, the age gauge's `running` (100 -> 0:
    # the entries of five outcomes, each inserted in ascending order in the middle of the
    # index, left its pages half full); done inbox items by time for the retention prune, a
    # range a block range index finds as well (17 -> 0).
    """
    DROP INDEX executions_outcome;
    CREATE INDEX executions_running ON executions (created_at) WHERE outcome = 'running';
    DROP INDEX inbox_done;
    CREATE INDEX inbox_received ON inbox USING brin (received_at);
    """,
    # 6: a limit without `unless` (the budget, rate limits) is counted in the index alone:
    # the per-row `unless` test called a set-returning function for every event of the
    # window, while the limit's lock was held (a budget with a high max serialized every
    # replica's admissions behind a count of the whole hour). Same arguments, same answers.
    """
    CREATE OR REPLACE FUNCTION remediator_admit(l_kind TEXT[], l_key TEXT[],
                                                l_since DOUBLE PRECISION[], l_max INTEGER[],
                                                l_unless TEXT[], e_kind TEXT[], e_key TEXT[],
                                                e_at DOUBLE PRECISION[], e_data TEXT[])
    RETURNS INTEGER LANGUAGE plpgsql AS $$
    DECLARE
        lock_key INTEGER;
        counted INTEGER;
    BEGIN
        FOR lock_key IN SELECT DISTINCT hashtext(k || chr(31) || y)
                        FROM unnest(l_kind, l_key) AS t(k, y) ORDER BY 1 LOOP
            PERFORM pg_advisory_xact_lock(1919771762, lock_key);
        END LOOP;
        FOR i IN 1 .. coalesce(array_length(l_kind, 1), 0) LOOP
            IF l_unless[i] IS NULL THEN
                SELECT count(*) INTO counted FROM (
                    SELECT 1 FROM events e WHERE e.kind = l_kind[i] AND e.key = l_key[i]
                    AND e.at >= l_since[i] LIMIT l_max[i]) c;
            ELSE
                SELECT count(*) INTO counted FROM (
                    SELECT 1 FROM events e WHERE e.kind = l_kind[i] AND e.key = l_key[i]
                    AND e.at >= l_since[i] AND NOT EXISTS (
                        SELECT 1 FROM jsonb_each_text(l_unless[i]::jsonb) u
                        WHERE e.data::jsonb ->> u.key = u.value)
                    LIMIT l_max[i]) c;
            END IF;
            IF counted >= l_max[i] THEN
                RETURN i - 1;
            END IF;
        END LOOP;
        INSERT INTO events (kind, key, at, data) SELECT * FROM unnest(e_kind, e_key, e_at, e_data);
        RETURN NULL;
    END $$;
    """,
    # 7: a limit without `unless` is counted per minute: `event_counts` holds how many events
    # of (kind, key) each minute has, kept by a trigger on every insert (whichever statement
    # and version inserts); a count adds the minutes after the window's first and counts that
    # first minute's events from `since` in `events`. Exact, the same answers, but a count no
    # longer reads every event of the window while the limit's lock is held (a budget of
    # thousands an hour read thousands of index entries per admission: two thirds of
    # PostgreSQL's CPU per decision, and every replica's admissions waited behind it).
    # The table is locked while the trigger is created and the counts filled in, so no event
    # of a replica still running the previous version is missed or counted twice.
    """
    LOCK TABLE events IN SHARE ROW EXCLUSIVE MODE;
    CREATE TABLE event_counts (kind TEXT NOT NULL, key TEXT NOT NULL, minute BIGINT NOT NULL,
                               n INTEGER NOT NULL, PRIMARY KEY (kind, key, minute))
        WITH (fillfactor = 50);
    CREATE FUNCTION remediator_count_events() RETURNS TRIGGER LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO event_counts AS c (kind, key, minute, n)
        SELECT kind, key, floor(at / 60)::bigint, count(*) FROM inserted GROUP BY 1, 2, 3
        ORDER BY 1, 2, 3
        ON CONFLICT (kind, key, minute) DO UPDATE SET n = c.n + excluded.n;
        RETURN NULL;
    END $$;
    CREATE TRIGGER events_counted AFTER INSERT ON events REFERENCING NEW TABLE AS inserted
        FOR EACH STATEMENT EXECUTE FUNCTION remediator_count_events();
    INSERT INTO event_counts (kind, key, minute, n)
    SELECT kind, key, floor(at / 60)::bigint, count(*) FROM events GROUP BY 1, 2, 3;
    CREATE OR REPLACE FUNCTION remediator_admit(l_kind TEXT[], l_key TEXT[],
                                                l_since DOUBLE PRECISION[], l_max INTEGER[],
                                                l_unless TEXT[], e_kind TEXT[], e_key TEXT[],
                                                e_at DOUBLE PRECISION[], e_data TEXT[])
    RETURNS INTEGER LANGUAGE plpgsql AS $$
    DECLARE
        lock_key INTEGER;
        counted INTEGER;
        first BIGINT;
    BEGIN
        FOR lock_key IN SELECT DISTINCT hashtext(k || chr(31) || y)
                        FROM unnest(l_kind, l_key) AS t(k, y) ORDER BY 1 LOOP
            PERFORM pg_advisory_xact_lock(1919771762, lock_key);
        END LOOP;
        FOR i IN 1 .. coalesce(array_length(l_kind, 1), 0) LOOP
            IF l_unless[i] IS NULL THEN
                -- the window's first minute: its events from `since` on (the same minute
                -- expression as the trigger's: an event is in the sum or here, never both)
                first := floor(l_since[i] / 60)::bigint;
                SELECT count(*) INTO counted FROM events e WHERE e.kind = l_kind[i]
                    AND e.key = l_key[i] AND e.at >= l_since[i]
                    AND e.at < ((first + 2) * 60)::double precision
                    AND floor(e.at / 60)::bigint <= first;
                counted := counted + coalesce((SELECT sum(c.n) FROM event_counts c
                    WHERE c.kind = l_kind[i] AND c.key = l_key[i] AND c.minute > first), 0);
            ELSE
                SELECT count(*) INTO counted FROM (
                    SELECT 1 FROM events e WHERE e.kind = l_kind[i] AND e.key = l_key[i]
                    AND e.at >= l_since[i] AND NOT EXISTS (
                        SELECT 1 FROM jsonb_each_text(l_unless[i]::jsonb) u
                        WHERE e.data::jsonb ->> u.key = u.value)
                    LIMIT l_max[i]) c;
            END IF;
            IF counted >= l_max[i] THEN
                RETURN i - 1;
            END IF;
        END LOOP;
        INSERT INTO events (kind, key, at, data) SELECT * FROM unnest(e_kind, e_key, e_at, e_data);
        RETURN NULL;
    END $$;
    """,
    # 8: a claim finds pending items and expired leases each in an index of its own: walking
    # the items to do in id order, it read every item still running (each replica's claimed
    # work, leases valid) from the table to skip it, on every claim. `inbox_todo` stays: the
    # replicas of the previous version a rolling update still runs claim from it (without it,
    # each of their claims read every done item the inbox retains); a later migration drops it.
    """
    CREATE INDEX inbox_pending ON inbox (id) WHERE state = 'pending';
    CREATE INDEX inbox_leased ON inbox (lease_until) WHERE state = 'running';
    """,
    # 9: `event_counts` counts only the kinds the admission reads from it, those of a limit
    # without `unless` (the budget, rate limits' `mutation`; any other kind it counts in
    # `events`), by a row trigger whose condition the server tests before calling it: the
    # statement trigger ran for every insert into `events` (the final write's circuit
    # `success` too), built a table of its rows and upserted a count per kind, nobody reading
    # those of `success` and `target` (left behind, they age out with the prune). Locked as
    # migration 7 was, so no insert is counted by both triggers or by neither; replicas of
    # the previous version insert through the same trigger and call the same function.
    """
    LOCK TABLE events IN SHARE ROW EXCLUSIVE MODE;
    DROP TRIGGER events_counted ON events;
    DROP FUNCTION remediator_count_events();
    CREATE FUNCTION remediator_count_event() RETURNS TRIGGER LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO event_counts AS c (kind, key, minute, n)
        VALUES (NEW.kind, NEW.key, floor(NEW.at / 60)::bigint, 1)
        ON CONFLICT (kind, key, minute) DO UPDATE SET n = c.n + 1;
        RETURN NULL;
    END $$;
    CREATE TRIGGER events_counted AFTER INSERT ON events FOR EACH ROW
        WHEN (NEW.kind IN ('budget', 'mutation')) EXECUTE FUNCTION remediator_count_event();
    CREATE OR REPLACE FUNCTION remediator_admit(l_kind TEXT[], l_key TEXT[],
                                                l_since DOUBLE PRECISION[], l_max INTEGER[],
                                                l_unless TEXT[], e_kind TEXT[], e_key TEXT[],
                                                e_at DOUBLE PRECISION[], e_data TEXT[])
    RETURNS INTEGER LANGUAGE plpgsql AS $$
    DECLARE
        lock_key INTEGER;
        counted INTEGER;
        first BIGINT;
    BEGIN
        FOR lock_key IN SELECT DISTINCT hashtext(k || chr(31) || y)
                        FROM unnest(l_kind, l_key) AS t(k, y) ORDER BY 1 LOOP
            PERFORM pg_advisory_xact_lock(1919771762, lock_key);
        END LOOP;
        FOR i IN 1 .. coalesce(array_length(l_kind, 1), 0) LOOP
            IF l_unless[i] IS NULL AND l_kind[i] IN ('budget', 'mutation') THEN
                -- the window's first minute: its events from `since` on (the same minute
                -- expression as the trigger's: an event is in the sum or here, never both)
                first := floor(l_since[i] / 60)::bigint;
                SELECT count(*) INTO counted FROM events e WHERE e.kind = l_kind[i]
                    AND e.key = l_key[i] AND e.at >= l_since[i]
                    AND e.at < ((first + 2) * 60)::double precision
                    AND floor(e.at / 60)::bigint <= first;
                counted := counted + coalesce((SELECT sum(c.n) FROM event_counts c
                    WHERE c.kind = l_kind[i] AND c.key = l_key[i] AND c.minute > first), 0);
            ELSE
                SELECT count(*) INTO counted FROM (
                    SELECT 1 FROM events e WHERE e.kind = l_kind[i] AND e.key = l_key[i]
                    AND e.at >= l_since[i] AND NOT EXISTS (
                        SELECT 1 FROM jsonb_each_text(coalesce(l_unless[i], '{}')::jsonb) u
                        WHERE e.data::jsonb ->> u.key = u.value)
                    LIMIT l_max[i]) c;
            END IF;
            IF counted >= l_max[i] THEN
                RETURN i - 1;
            END IF;
        END LOOP;
        INSERT INTO events (kind, key, at, data) SELECT * FROM unnest(e_kind, e_key, e_at, e_data);
        RETURN NULL;
    END $$;
    """,
    # 10: `inbox_todo` goes, as migration 8 said: the version before this one claims from
    # `inbox_pending` and `inbox_leased` too. Every claim and every done mark wrote an entry
    # into it (a state change is never a HOT update): 24 bytes per decision of a storm, and
    # two index insertions. A replica older than migration 8 left running through a rolling
    # update that skips releases claims correctly still, by reading the inbox.
    """
    DROP INDEX inbox_todo;
    """,
    # 11: smaller indexes, measured on the storm bench (bytes per decision). Decisions are
    # listed newest first by an index of their creation times as integers (microseconds on
    # a calendar of 31-day months: in the order of the text for the times remediator writes,
    # with or without a fraction), 8 bytes where the text took 28 (70 -> 25 bytes per
    # decision); text of another form (remediator writes none) maps to no integer, listed
    # first. Its leaf pages split at 80 % full, not 90: a decision is indexed when it ends,
    # not when it began, so entries arrive a little out of order, and the page a split left
    # 90 % full took them until it split again in halves (text: 62 % full on average). The
    # indexes of pending and leased items get entries in id and lease order: their pages are
    # left full (23 -> 21). A replica of the previous version still running during a rolling
    # update lists decisions in the same order by sorting them (its list of running ones
    # still reads `executions_running`).
    """
    CREATE FUNCTION remediator_instant(t TEXT) RETURNS BIGINT LANGUAGE sql IMMUTABLE STRICT
        PARALLEL SAFE AS $$
        SELECT CASE WHEN t ~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}([.][0-9]{1,6})?Z$'
        THEN (((((substr(t, 1, 4)::bigint * 12 + substr(t, 6, 2)::bigint) * 31
                 + substr(t, 9, 2)::bigint) * 24 + substr(t, 12, 2)::bigint) * 60
                 + substr(t, 15, 2)::bigint) * 60 + substr(t, 18, 2)::bigint) * 1000000
             + rpad(coalesce(substring(t from '[.]([0-9]+)Z$'), ''), 6, '0')::bigint END $$;
    CREATE INDEX executions_newest ON executions (remediator_instant(created_at))
        WITH (fillfactor = 80);
    DROP INDEX executions_created;
    ALTER INDEX inbox_pending SET (fillfactor = 100);
    ALTER INDEX inbox_leased SET (fillfactor = 100);
    """,
    # 12: executions blocked on an approval, indexed by their own record (`_awaiting`)
    lambda db: _awaiting(db),
    # 13: decisions packed as Zstandard frames against their reference (packing.Refs.pack),
    # which a version before cannot read: it refuses to start on the database (its schema is
    # newer than it supports) rather than fail on each record it reads. A replica of that
    # version still running during a rolling update reads inbox items as before (still
    # zlib); a decision it cannot read leaves that alert unfinished, retried (the item is
    # taken over once the replica is gone), and its API lists fail until it is replaced.
    """
    COMMENT ON COLUMN executions.packed IS 'a Zstandard frame against refs.data, or (before
    version 13) zlib with refs.data as preset dictionary';
    """,
    # 14: decisions by the time their record was last written (as integers, as migration
    # 11's creation times), which the console's live stream reads each second
    # (`list_updated`): the newest 50 by creation missed an older one's change (an approval
    # answered, a long run ending). Entries arrive in time order, at the index's end: its
    # pages are left full. A replica of the version before, during a rolling update, writes
    # `updated_at` as before and the index takes its rows as any. (IF NOT EXISTS: a
    # database whose version was set back migrates again.)
    """
    CREATE INDEX IF NOT EXISTS executions_updated ON executions (remediator_instant(updated_at))
        WITH (fillfactor = 100);
    """,
    # 15: decisions by the transaction that last wrote them (`txid`, set by a trigger on
    # every write, an old replica's during a rolling update too), which the console's live
    # stream reads instead of `updated_at` (`changes`): a record is stamped before its
    # commit, and one committed late (a long transaction, a slow commit in a storm) was
    # stamped before a read it missed. The index by `updated_at` goes: nothing reads it (an
    # old replica's console still running reads the table for its ticks until replaced).
    # (IF NOT EXISTS, DROP first: a database whose version was set back migrates again.)
    """
    ALTER TABLE executions ADD COLUMN IF NOT EXISTS txid xid8;
    CREATE OR REPLACE FUNCTION remediator_txid() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN NEW.txid := pg_current_xact_id(); RETURN NEW; END $$;
    DROP TRIGGER IF EXISTS executions_txid ON executions;
    CREATE TRIGGER executions_txid BEFORE INSERT OR UPDATE ON executions
        FOR EACH ROW EXECUTE FUNCTION remediator_txid();
    CREATE INDEX IF NOT EXISTS executions_txid ON executions (txid) WITH (fillfactor = 100);
    DROP INDEX IF EXISTS executions_updated;
    """,
    # 16: each inbox item counts its claims, and a claim is known by that count (a token):
    # an approval's decision is written only while the item holds the claim its decider
    # took (`_PUT_STATES`), not merely one of its replica's. A replica's claim lapsed (it
    # was frozen), another finished the item, the same replica claimed it again by another
    # task and that run left the approval's run blocked on it, still pending: then the
    # late decision, checked by its owner alone, went in (approved, never resumed). A
    # constant default adds the column without rewriting the table. A replica of the
    # version before, still running during a rolling update, claims without counting:
    # harmless, since only a replica's own claims make an item its own again, and every
    # claim of this version counts (it checks its decisions by owner, as before).
    """
    ALTER TABLE inbox ADD COLUMN IF NOT EXISTS claims BIGINT NOT NULL DEFAULT 0;
    """,
]


# Executions from which migration 12 analyzes the table (`_awaiting`).
ANALYZED_FROM = 10_000


async def _awaiting(db: asyncpg.Connection) -> None:
    """Migration 12: the column and partial index of executions blocked on an approval
    (`packing.awaiting`; NULL, nothing to index, for every other decision), filled in once
    from the records already there: only a blocked one with an approval state can be one,
    so few bodies are read, once. (A replica of the version before, still running during a
    rolling update, writes NULL there: a run it leaves waiting with no pending entry is
    indexed by the first pass to find that entry gone, `engine.approvals._unindexed`.)"""
    await db.execute("ALTER TABLE executions ADD COLUMN IF NOT EXISTS awaiting TEXT; CREATE "
                     "INDEX executions_awaiting ON executions (id) WHERE awaiting IS NOT NULL")
    rows = await db.fetch(
        "SELECT e.id, e.body, e.packed, r.data AS ref FROM executions e LEFT JOIN refs r ON "
        "r.id = e.ref WHERE e.outcome = 'blocked' AND EXISTS (SELECT 1 FROM state WHERE key "
        ">= 'approval:' || e.id || ':' AND key < 'approval:' || e.id || ';')")
    await db.executemany("UPDATE executions SET awaiting = $1 WHERE id = $2",
                         packing.awaiting_rows((row["id"], lambda r=row: packing.unpack(
                             r["packed"], r["ref"]) if r["packed"] is not None
                             else json.loads(r["body"])) for row in rows))
    # Without statistics on the new column the planner takes `awaiting IS NOT NULL` to hold
    # for 99.5 % of the rows, and the maintenance pass read the whole table every 10 s
    # (`AWAITING`) until autovacuum analyzed it again, after a tenth of it changed: days,
    # on a large table. Known to be all but empty, the partial index is read. Not a small
    # table, whose whole read costs little: analyzed (nearly) empty, as a new database's
    # is, each connection's kept plan of a decision's read scanned it whole, every time,
    # as a storm filled it, until autovacuum analyzed it again (never analyzed, the
    # planner assumes a table of some size and reads it by its key).
    if await db.fetchval("SELECT count(*) FROM (SELECT FROM executions LIMIT $1) AS e",
                         ANALYZED_FROM) >= ANALYZED_FROM:
        await db.execute("ANALYZE executions (awaiting)")


async def migrate(db: asyncpg.Connection, read_only: bool) -> int:
    """The schema's version after bringing it to this code's (read-only: as it is), inside
    the caller's transaction, under `MIGRATION_LOCK`: replicas starting together migrate once."""
    exists = await db.fetchval("SELECT to_regclass('remediator_schema') IS NOT NULL")
    if not exists and read_only:
        raise StoreUnavailable("no remediator schema in this database (no server has run on it)")
    if not exists:
        await db.execute("CREATE TABLE remediator_schema (version INTEGER NOT NULL)")
    version = await db.fetchval("SELECT coalesce(max(version), 0) FROM remediator_schema")
    if read_only:
        return version
    if version > len(MIGRATIONS):
        raise StoreUnavailable(f"the database schema (version {version}) is newer than this "
                               f"remediator supports ({len(MIGRATIONS)}); upgrade remediator")
    for number, sql in enumerate(MIGRATIONS[version:], version + 1):
        await (sql(db) if callable(sql) else db.execute(sql))  # a callable reads what it migrates
        await db.execute("INSERT INTO remediator_schema (version) VALUES ($1)", number)
        log.info("store schema migrated to version %d", number)
    return len(MIGRATIONS)
