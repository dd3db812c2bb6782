"""The storm's hot path, counted (never timed): intake has priority over processing in the
store's group commit and on the event loop (processing takes turns: one chunk per loop
iteration), the dispatcher starts a bounded number of
executions at once, and a playbook's templates are compiled once, not per decision."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import copy
import gc
import inspect
import json
import logging
import re
import subprocess
import sys
import time
import types
from collections.abc import Iterator

import aiohttp
import pytest
import zstandard
from aiohttp import web

from remediator import (
    alerts,
    collector,
    engine,
    escalation,
    event_loop,
    redact,
    templating,
    turns,
)
from remediator.actions.backends import Backends
from remediator.actions.base import ActionContext, check_params
from remediator.actions.registry import ACTIONS
from remediator.config import Config
from remediator.engine import pipeline, plans, records
from remediator.engine.steps import Steps
from remediator.service import Service
from remediator.store import open_store, packing
from remediator.store.sqlite import PROCESSING_PER_COMMIT, SQLiteStore
from remediator.templating import context as template_context
from remediator.templating import memo as template_memo
from tests.conftest import write_rules
from tests.support.payloads import alert, notification
from tests.support.worker import TOKEN, InProcessWorker, free_port, http, loopback_guards

# The engine's modules that take turns: what it steps through (`pipeline`), what it writes.
ENGINE_TURNS = (pipeline, records)

RULES = """
playbooks:
  - name: restart-web
    match: {alertname: WebDown}
    target: {kind: deployment, namespace: prod, name: "{{ labels.deployment }}"}
    guards: {rate_limit: {max: 100, window: 1h}}
    steps:
      - name: look
        action: log
        params: {message: "{{ labels.deployment }} is down"}
        when: "labels.deployment != 'none'"
      - name: restart
        action: http.request
        params: {url: "http://127.0.0.1:9/restart/{{ labels.deployment }}", method: POST}
    escalation: {severity: critical, always: true, owner: "team {{ labels.team }}",
                 summary: "{{ labels.deployment }} down",
                 next_steps: ["check {{ labels.deployment }}", roll back the last deploy]}
"""

# One dry-run playbook of one literal step: the least a decision does.
LOOK = """
  - name: look-at-web
    match: {alertname: WebDown}
    steps:
      - {name: look, action: log, params: {message: "{{ labels.deployment }} is down"}}
"""


def _transactions(statements: list[str]) -> list[list[str]]:
    """The statements of each committed transaction, in order."""
    out, current = [], None
    for sql in statements:
        if sql == "BEGIN IMMEDIATE":
            current = []
        elif sql == "COMMIT":
            out.append(current)
            current = None
        elif current is not None:
            current.append(sql)
    return out


def test_intake_joins_the_next_commit_ahead_of_queued_processing_writes(run, tmp_path):
    """A commit takes every webhook's rows, the operator's state (pause, the kill switch)
    and a bounded share of processing's writes; the rest follow in the next commits.
    (Before, one commit took them all and resumed every waiting execution at once: a
    webhook's 202 waited behind all of their work; and a pause queued behind a storm's.)"""
    async def scenario():
        store = SQLiteStore(f"sqlite:///{tmp_path}/s.db")
        await store.open()
        statements: list[str] = []
        store._db.set_trace_callback(statements.append)  # type: ignore[union-attr]
        try:
            processing = [store.record_event("k", f"k{i}", i) for i in range(3 * PROCESSING_PER_COMMIT)]
            intake = [store.enqueue([(f"a{i}", {"n": i}, {})]) for i in range(3)]
            pause = store.put_state("paused", {"paused": True})
            tasks = [asyncio.ensure_future(c) for c in [*processing, *intake, pause]]
            await asyncio.gather(*tasks)
            assert await store._scalar("SELECT count(*) FROM events") == 3 * PROCESSING_PER_COMMIT
        finally:
            await store.close()
        commits = _transactions(statements)
        first = commits[0]
        assert sum(s.startswith("INSERT OR IGNORE INTO inbox") for s in first) == 3
        assert sum(s.startswith("INSERT INTO events") for s in first) == PROCESSING_PER_COMMIT
        assert sum(s.startswith("INSERT OR REPLACE INTO state") for s in first) == 1
        assert len(commits) >= 3
    run(scenario())


def test_processing_writes_share_a_commit_while_other_chunks_are_queued(run, tmp_path):
    """A commit's own cost (BEGIN, COMMIT, the WAL frames of its pages: ~30 us per decision)
    is shared: processing's writes wait for more to join them while other chunks of
    processing are queued, up to PROCESSING_PER_COMMIT a commit. (Before, one chunk ran per
    loop iteration and each of its writes was committed alone in the next.) Each caller
    still resumes only after its COMMIT; once no chunk is queued, the rest commit at once."""
    async def scenario():
        store = SQLiteStore(f"sqlite:///{tmp_path}/s.db")
        await store.open()
        statements: list[str] = []
        store._db.set_trace_callback(statements.append)  # type: ignore[union-attr]
        committed: list[int] = []

        async def execution(n: int) -> None:
            for i in range(3):
                await turns.take()
                await store.record_event("k", f"{n}.{i}", i)
                committed.append(len(_transactions(statements)))  # after its COMMIT

        try:
            await asyncio.gather(*(execution(n) for n in range(8)))
            assert await store._scalar("SELECT count(*) FROM events") == 24
        finally:
            await store.close()
        commits = [c for c in _transactions(statements) if c]
        writes = [len(c) for c in commits]
        assert sum(writes) == 24 and max(writes) <= PROCESSING_PER_COMMIT
        assert len(commits) <= 24 // PROCESSING_PER_COMMIT + 2, writes
        # every write was committed before its caller went on: the k-th resumed caller saw
        # at least as many commits as it takes to hold k writes
        assert all(seen * PROCESSING_PER_COMMIT >= k + 1 for k, seen in enumerate(committed))
    run(scenario())


def test_counting_the_pending_alerts_searches_the_index(run, tmp_path):
    """The gauge (counted when scraped) counts the unfinished items in the state index;
    `state != 'done'` scanned every retained item (~10 ms at 20 000)."""
    async def scenario():
        store = SQLiteStore(f"sqlite:///{tmp_path}/s.db")
        await store.open()
        statements: list[str] = []
        try:
            await store.enqueue([(f"a{i}", {"n": i}, {}) for i in range(3)])
            await store.finish((await store.claim(1))[0].id)
            store._db.set_trace_callback(statements.append)  # type: ignore[union-attr]
            assert await store.pending_count() == 2
            store._db.set_trace_callback(None)  # type: ignore[union-attr]
            plans = [row[3] for sql in statements for row in store._db.execute(  # type: ignore[union-attr]
                "EXPLAIN QUERY PLAN " + sql)]
        finally:
            await store.close()
        assert plans and all(p.startswith("SEARCH") for p in plans), plans
    run(scenario())


def test_the_dispatcher_claims_a_bounded_batch_and_templates_compile_once(tmp_path):
    rules = write_rules(tmp_path / "rules", RULES)
    cfg = Config(rules=[str(rules)], store=f"sqlite:///{tmp_path}/w.db", webhook_token=TOKEN,
                 escalation_dir=str(tmp_path / "notes"), guards=loopback_guards())
    w = InProcessWorker(cfg).start()
    statements: list[str] = []
    try:
        w.call(_trace(w.service, statements))

        def storm(tag: str) -> None:
            body = notification(*(alert("WebDown", deployment=f"web{i}", team="a",
                                        fingerprint=f"{tag}{i}") for i in range(30)))
            assert w.post_alerts(body)[0] == 202
            w.wait_idle()

        storm("first")
        compiled = templating._template.cache_info().misses + \
            templating._expression.cache_info().misses
        used = templating._template.cache_info().hits + templating._expression.cache_info().hits
        kept: list[object] = []
        real_get = template_memo.get
        template_memo.get = lambda entry: (lambda found: (found and kept.append(entry)) or found)(
            real_get(entry))
        try:
            storm("again")
        finally:
            template_memo.get = real_get
        decisions = w.call(w.service.store.list_executions(1000))
        assert len(decisions) == 60
        assert {d["outcome"] for d in decisions} == {"planned"}
        assert any("team a" in (d.get("escalation") or {}).get("note", "") for d in decisions)
        # 30 more decisions rendered the same templates again (over the same values: what
        # they rendered the first time, kept), and compiled none of them
        assert templating._template.cache_info().hits + \
            templating._expression.cache_info().hits + len(kept) >= used + 30 * 4
        assert templating._template.cache_info().misses + \
            templating._expression.cache_info().misses == compiled
    finally:
        w.stop()
    claims = [int(m.group(1)) for s in statements
              if (m := re.search(r"state='pending' ORDER BY id LIMIT (\d+)", s))]
    assert claims and max(claims) <= Service.claim_batch, claims
    assert len(claims) >= 60 // Service.claim_batch
    # Once a claim found the inbox drained, an execution ending does not look again (a
    # claim per decision, that found nothing): each storm's batches and about one more.
    assert len(claims) <= 2 * (30 // Service.claim_batch + 2), claims
    # a dry run's decision is written once (no `running` record first: nothing is called)
    assert sum(s.startswith("INSERT INTO executions") for s in statements) == 60


def test_the_pending_gauge_is_counted_when_scraped_at_most_once_a_second(tmp_path):
    """Counted by the dispatcher every second, the gauge read the inbox through a storm and
    held up the next claim, for a figure scraped every 15 s or so; scraped in a loop, it
    still counts once a second at most."""
    rules = write_rules(tmp_path / "rules", """
playbooks:
  - name: hold
    match: {alertname: Hold}
    steps:
      - {name: hold, action: wait, params: {duration: 60s}}
""")
    cfg = Config(rules=[str(rules)], store=f"sqlite:///{tmp_path}/w.db", webhook_token=TOKEN,
                 mode="live", escalation_dir=str(tmp_path / "notes"), guards=loopback_guards(),
                 grace_period=0.1)
    w = InProcessWorker(cfg).start()
    statements: list[str] = []
    try:
        assert w.post_alerts(notification(alert("Hold", fingerprint="h1"),
                                          alert("Hold", fingerprint="h2")))[0] == 202
        deadline = time.monotonic() + 15
        while len(w.call(w.service.store.list_executions(10, outcome="running"))) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        w.call(_trace(w.service, statements))
        time.sleep(2.5)  # the dispatcher waits for work a second at a time, and looks again

        def counts() -> int:
            return sum("count(*) FROM inbox" in s for s in statements)

        assert counts() == 0
        scrapes = [http("GET", f"{w.url}/metrics")[1] for _ in range(3)]
        assert all("\nremediator_inbox_pending 2.0\n" in text for text in scrapes)
        assert counts() == 1
    finally:
        w.stop()


def test_processing_writes_fill_their_commits_in_a_backlog(tmp_path):
    """A backlog's decisions share their commits (a commit's own cost, ~30 us, is paid per
    commit): the dispatcher claims enough items at once (`Service.claim_batch`) for other
    chunks to be queued while a decision's record waits to commit, so its commit carries
    up to `PROCESSING_PER_COMMIT` writes. With a turn or two less per decision (none after
    its final write, a dry run's note in its plan's chunk), claiming 4 at a time left too
    few queued: a backlog's commits carried two writes each (50 for 96 decisions, 34 before
    with more turns; 30-38 now)."""
    rules = write_rules(tmp_path / "rules", "playbooks:\n" + LOOK)
    cfg = Config(rules=[str(rules)], store=f"sqlite:///{tmp_path}/w.db", webhook_token=TOKEN,
                 escalation_dir=str(tmp_path / "notes"), guards=loopback_guards())
    w = InProcessWorker(cfg).start()
    statements: list[str] = []
    n = 96
    try:
        w.call(_trace(w.service, statements))
        body = notification(*(alert("WebDown", deployment=f"web{i}", fingerprint=f"w{i}")
                              for i in range(n)))
        assert w.post_alerts(body)[0] == 202
        w.wait_idle()
        w.call(_trace(w.service, []))
    finally:
        w.stop()
    commits = _transactions(statements)
    records = sum(s.startswith("INSERT INTO executions") for c in commits for s in c)
    assert records == n
    processing = [c for c in commits if not any("INTO inbox" in s for s in c)]
    assert len(processing) <= 0.42 * n, (len(processing), n)


def test_a_backlogs_decisions_take_a_counted_number_of_loop_callbacks_and_tasks(tmp_path):
    """The event loop's own work per decision of a backlog, counted: the callbacks it
    schedules (each a handle to make and run: a turn's wakeup and its end, a commit's
    wakeups, a flush looked at again, a task's start and its end) and the tasks made. A
    routine dry-run decision takes ~7 callbacks (its two turns' wakeups and ends, its
    commit's wakeup, its task's start, its share of a flush; 13.2 before, then 10) and one
    task (its alert's)."""
    from remediator.alerts import parse_notification

    rules = write_rules(tmp_path / "rules", "playbooks:\n" + LOOK)
    cfg = Config(rules=[str(rules)], store=f"sqlite:///{tmp_path}/w.db", webhook_token=TOKEN,
                 escalation_dir=str(tmp_path / "notes"), guards=loopback_guards())
    w = InProcessWorker(cfg).start()
    n = 96
    body = json.dumps(notification(*(alert("WebDown", deployment=f"web{i}", fingerprint=f"w{i}")
                                     for i in range(n)))).encode()

    async def backlog() -> tuple[int, int]:
        loop = asyncio.get_running_loop()
        callbacks, tasks = 0, 0
        call_soon, create_task = loop.call_soon, loop.create_task

        def counted(callback, *args, **kwargs):  # type: ignore[no-untyped-def]
            nonlocal callbacks
            callbacks += 1
            return call_soon(callback, *args, **kwargs)

        def task(*args, **kwargs):  # type: ignore[no-untyped-def]
            nonlocal tasks
            tasks += 1
            return create_task(*args, **kwargs)

        loop.call_soon, loop.create_task = counted, task  # type: ignore[method-assign]
        try:
            await w.service.intake(parse_notification(body))
            while await w.service.store.pending_count():
                await asyncio.sleep(0.01)
        finally:
            del loop.call_soon, loop.create_task
        return callbacks, tasks

    try:
        callbacks, tasks = w.call(backlog())
        outcomes = collections.Counter(
            d["outcome"] for d in w.call(w.service.store.list_executions(1000)))
    finally:
        w.stop()
    assert outcomes == {"planned": n}
    assert tasks <= 1.1 * n, tasks
    # 13.2 before, then 10 (a done callback per task; a flush looked at again in every
    # iteration while processing's writes waited for more)
    assert callbacks <= 7.5 * n, callbacks / n


class _CountingConnection:
    """The store's SQLite connection, counting the calls made into SQLite by statement (an
    executemany of no rows is a call too: its statement is looked up and reset)."""

    def __init__(self, db: object) -> None:
        self._db, self.calls = db, collections.Counter[str]()

    def __getattr__(self, name: str) -> object:
        return getattr(self._db, name)

    def execute(self, sql: str, *args: object) -> object:
        self.calls[" ".join(sql.split())[:40]] += 1
        return self._db.execute(sql, *args)  # type: ignore[attr-defined]

    def executemany(self, sql: str, *args: object) -> object:
        self.calls[" ".join(sql.split())[:40]] += 1
        return self._db.executemany(sql, *args)  # type: ignore[attr-defined]


def test_a_routine_decision_takes_a_counted_number_of_sqlite_calls(tmp_path):
    """Besides the claims and commits a batch shares, a planned dry-run decision reads its
    execution and the pause in one statement and writes its record: 2 calls into SQLite, its
    inbox item marked done by the one statement that marks every item its commit finished
    (3 before, 6 before that: the pause was read on its own, and steps and events were
    written by executemany calls of no rows); a no_match writes its record: 1 (2, 4)."""
    rules = write_rules(tmp_path / "rules", """
playbooks:
  - name: look-at-web
    match: {alertname: WebDown}
    steps:
      - {name: look, action: log, params: {message: "{{ labels.deployment }} is down"}}
    escalation: {severity: warning, always: true, summary: "{{ labels.deployment }} down"}
""")
    cfg = Config(rules=[str(rules)], store=f"sqlite:///{tmp_path}/w.db", webhook_token=TOKEN,
                 escalation_dir=str(tmp_path / "notes"), guards=loopback_guards())
    w = InProcessWorker(cfg).start()
    try:
        async def count() -> _CountingConnection:
            # Maintenance off first: on a loaded machine its first pass (prunes, gauges) ran
            # inside the counted window. Its statements are not a decision's.
            [maintenance] = [t for t in asyncio.all_tasks() if t.get_name() == "maintenance"]
            maintenance.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await maintenance
            store = w.service.store
            store._db = _CountingConnection(store._db)  # type: ignore[attr-defined]
            return store._db  # type: ignore[attr-defined]

        db = w.call(count())
        body = notification(*(alert("WebDown", deployment=f"web{i}", team="a",
                                    fingerprint=f"w{i}") for i in range(20)),
                            *(alert("Unknown", fingerprint=f"u{i}") for i in range(10)))
        assert w.post_alerts(body)[0] == 202
        w.wait_idle()
        outcomes = collections.Counter(
            d["outcome"] for d in w.call(w.service.store.list_executions(1000)))
        assert outcomes == {"planned": 20, "no_match": 10}
    finally:
        w.stop()
    calls = {sql: n for sql, n in db.calls.items() if not sql.startswith((
        "BEGIN", "COMMIT", "UPDATE inbox SET state='running'", "SELECT count(*) FROM inbox",
        "INSERT OR IGNORE INTO refs", "INSERT OR IGNORE INTO inbox", "SELECT id FROM executions",
        "SELECT e.body, r.data FROM"))}  # (those: intake, claims, the gauge, listing)
    done = calls.pop("UPDATE inbox SET state='done' WHERE id=?")
    assert calls == {"SELECT e.body, r.data, s.value FROM (SEL": 20,
                     "INSERT INTO executions (id, created_at, ": 30}, calls
    assert done <= db.calls["COMMIT"] and done < 30, done  # one per commit, at most


def test_a_decisions_final_write_takes_no_turn_after_it(tmp_path, monkeypatch):
    """A processing write is followed by processing's turn, but the one that finishes an
    inbox item (the alert's last decision, with its item's done mark) is followed only by
    the decision's log line and its task's end: it takes none (a turn is ~7 us of the loop,
    and an iteration of it, per decision). The store's turns taken in alerts' tasks
    counted: one after an alert's first decision when a second playbook's follows it, none
    after the others. What follows a final write is charged to processing's share of the
    loop (turns.py), as a chunk's time is."""
    from remediator.store import sqlite

    rules = write_rules(tmp_path / "rules", """
playbooks:
  - name: look-again
    match: {alertname: WebDown, matchers: [team="twice"]}
    continue: true
    steps:
      - {name: look, action: log, params: {message: "{{ labels.deployment }} still down"}}
""" + LOOK)
    cfg = Config(rules=[str(rules)], store=f"sqlite:///{tmp_path}/w.db", webhook_token=TOKEN,
                 escalation_dir=str(tmp_path / "notes"), guards=loopback_guards())
    taken: list[str] = []

    async def take() -> None:
        taken.append(asyncio.current_task().get_coro().__name__)  # type: ignore[union-attr]
        await turns.take()

    monkeypatch.setattr(sqlite, "turns", types.SimpleNamespace(take=take, turns=turns.turns))
    charged: list[float] = []  # the engine's: what follows a final write, no turn between
    for module in ENGINE_TURNS:
        monkeypatch.setattr(module, "turns", types.SimpleNamespace(
            take=turns.take, held=turns.held, LONG=turns.LONG,
            turns=lambda: types.SimpleNamespace(charge=charged.append)))
    w = InProcessWorker(cfg).start()
    try:
        body = notification(*(alert("WebDown", deployment=f"web{i}", fingerprint=f"w{i}")
                              for i in range(8)),
                            *(alert("Unknown", fingerprint=f"u{i}") for i in range(4)),
                            *(alert("WebDown", deployment=f"two{i}", team="twice",
                                    fingerprint=f"t{i}") for i in range(3)))
        assert w.post_alerts(body)[0] == 202
        w.wait_idle()
        outcomes = collections.Counter(
            d["outcome"] for d in w.call(w.service.store.list_executions(1000)))
    finally:
        w.stop()
    assert outcomes == {"planned": 8 + 2 * 3, "no_match": 4}
    assert "_dispatch_loop" in taken  # its claims are followed by a turn
    assert taken.count("_process") == 3, taken  # 18 before
    # ...but what follows it (its log line) counts toward processing's share all the same
    assert len(charged) == 8 + 4 + 3 and all(seconds > 0 for seconds in charged)


def test_a_notifications_alerts_share_one_encoding_of_its_group(monkeypatch):
    """Intake packs each alert with its notification's group; the group is encoded once per
    notification, not once per alert (half of packing's time), and the stored text reads
    back as `[alert, group]`."""
    group, other = {"receiver": "r", "commonLabels": {"a": "b"}}, {"receiver": "s"}
    rows = [(f"k{i}", {"labels": {"alertname": "X", "n": str(i)}}, group) for i in range(3)]
    rows.append(("k9", {"labels": {"alertname": "Y"}}, other))
    encoded: list[object] = []
    _count(monkeypatch, packing, "dumps", encoded)
    texts = packing.item_texts(rows)
    monkeypatch.undo()
    assert [json.loads(text) for text in texts] == [[alert, g] for _, alert, g in rows]
    encoded = [value for (value,) in encoded]  # type: ignore[misc]
    assert sum(value is group for value in encoded) == 1
    assert sum(value is other for value in encoded) == 1


def test_a_webhook_is_decoded_once_and_each_alert_encoded_once(run, tmp_path, monkeypatch):
    """A webhook's way to the inbox, counted: its body decoded once, validation building the
    stored form directly (no Alert or Group made, then turned back into dicts: ~2 us of each
    webhook), the group encoded once and each alert once; what is stored reads back as the
    objects the payload describes."""
    rules = write_rules(tmp_path / "rules", RULES)
    cfg = Config(rules=[str(rules)], store=f"sqlite:///{tmp_path}/w.db", webhook_token=TOKEN,
                 escalation_dir=str(tmp_path / "notes"), guards=loopback_guards())
    body = json.dumps(notification(alert("WebDown", deployment="a", fingerprint="f1"),
                                   alert("WebDown", deployment="b", fingerprint="f2",
                                         status="resolved"))).encode()

    async def scenario() -> list:
        service = Service(cfg)
        await service.start(dispatch=False)
        try:
            counted: dict[str, list[object]] = {k: [] for k in ("loads", "dumps", "made")}
            _count(monkeypatch, alerts.orjson, "loads", counted["loads"])
            _count(monkeypatch, packing, "dumps", counted["dumps"])
            for cls in (alerts.Alert, alerts.Group):
                _count(monkeypatch, cls, "__init__", counted["made"])
            result = await service.intake(alerts.parse_notification(body))
            monkeypatch.undo()
            assert (result.accepted, result.duplicates) == (2, 0)
            assert {k: len(v) for k, v in counted.items()} == {"loads": 1, "dumps": 3, "made": 0}
            return await service.store.claim(10)
        finally:
            await service.stop()

    items = run(scenario())
    parsed = alerts.parse_notification(body)
    assert [i.dedupe_key for i in items] == [a.dedupe_key for a in parsed.alerts]
    assert [alerts.Alert.from_dict(i.alert) for i in items] == parsed.alerts
    assert all(i.group == parsed.group.to_dict() for i in items)


def test_a_dry_run_decision_with_a_note_is_encoded_once_and_copied_only_where_needed(
        tmp_path, monkeypatch):
    """What a routine dry-run decision with an escalation note costs, counted: its note's
    templates and its severity share one context, built from copies of what it holds and no
    deep copy of the decision (two were made per note, of the plan and parameters too: a
    tenth of a storm's processing CPU); the decision is JSON-encoded once, when stored. Its
    note is recorded, not sent: only the Markdown is redacted (the whole note was, labels
    and all, for a dict thrown away), and it still is. A decision takes two turns. Its
    timestamps (created, finished, stored) share the second's text, formatted once a second
    (a datetime was made and formatted for each). Its record is packed against its kind's
    reference, digested once for all of them (zlib set its dictionary up for each)."""
    rules = write_rules(tmp_path / "rules", RULES)
    cfg = Config(rules=[str(rules)], store=f"sqlite:///{tmp_path}/w.db", webhook_token=TOKEN,
                 escalation_dir=str(tmp_path / "notes"), guards=loopback_guards())
    # turns counted by structure, not by CPU time: a chunk held past LONG (a collection, a
    # busy CI machine) takes a turn before its note, which made this count flake (49)
    monkeypatch.setattr(turns, "SLICE", 60.0)
    monkeypatch.setattr(turns, "LONG", 60.0)
    w = InProcessWorker(cfg).start()
    n = 20
    secret = "http://prometheus.example/graph?g0.expr=up&token=sekret-in-the-url"
    try:
        def storm(tag: str) -> None:
            alerts = [alert("WebDown", deployment=f"{tag}{i}", team="a", fingerprint=f"{tag}{i}")
                      for i in range(n)]
            for a in alerts:
                a["generatorURL"] = secret  # shown in the note's "Source"
            assert w.post_alerts(notification(*alerts))[0] == 202
            w.wait_idle()

        storm("warm")
        copies: list[object] = []
        contexts: list[object] = []
        encodings: list[object] = []
        redactions: list[object] = []
        _count(monkeypatch, copy, "deepcopy", copies)
        _count(monkeypatch, template_context, "build", contexts)
        _count(monkeypatch, json, "dumps", encodings)
        _count(monkeypatch, packing, "dumps", encodings)
        digests: list[object] = []
        deflates: list[object] = []
        _count(monkeypatch, zstandard, "ZstdCompressor", digests)
        _count(monkeypatch, packing.zlib, "compressobj", deflates)
        note_redaction = types.SimpleNamespace(text=escalation.redact.text,
                                               value=escalation.redact.value)
        _count(monkeypatch, note_redaction, "value", redactions)
        monkeypatch.setattr(escalation, "redact", note_redaction)
        formats: list[object] = []
        _count(monkeypatch, time, "strftime", formats)

        class Datetime(alerts.datetime):  # type: ignore[name-defined]
            @classmethod
            def now(cls, tz=None):  # type: ignore[no-untyped-def]
                formats.append(tz)
                return super().now(tz)

        monkeypatch.setattr(alerts, "datetime", Datetime)
        granted = w.call(_granted())
        started = time.monotonic()
        storm("counted")
        seconds = time.monotonic() - started
        granted = w.call(_granted()) - granted
        monkeypatch.undo()
        decisions = w.call(w.service.store.list_executions(1000))
    finally:
        w.stop()
    counted = [d for d in decisions if d["fingerprint"].startswith("counted")]
    assert len(counted) == n and {d["outcome"] for d in counted} == {"planned"}
    assert all("team a" in d["escalation"]["note"] for d in counted)
    assert all("token=<redacted>" in d["escalation"]["note"]
               and "sekret" not in d["escalation"]["note"] + d["escalation"]["title"]
               for d in counted)
    assert redactions == []
    assert copies == []
    # processing's turns: a decision's start, its plan (its steps together: nothing is
    # called or written between them), and its note and record in its plan's chunk (66 here
    # before: a turn for its record), none after its one write (its last:
    # test_a_decisions_final_write_takes_no_turn_after_it); and the claims
    assert granted <= 2 * n + 3 * (n // Service.claim_batch) + 2, granted
    # the steps' context; a note makes only the roots its templates read, as they read them
    assert len(contexts) == n
    # the test's request body, then at intake the notification's group once and each alert
    # (its inbox item), and one per decision (its stored body)
    assert len(encodings) == 2 + 2 * n, encodings
    # each record packed against its kind's reference, digested once, by the warm-up's first
    # decision (zlib set its dictionary up again for every record, a sixth of a storm's
    # instructions per decision); at intake each alert's inbox item is packed from a copy of
    # a zlib compressor primed with its alertname's reference by the warm-up (a new one whose
    # dictionary was set up for each alert was ~23 k of a webhook's ~688 k instructions)
    assert digests == [] and deflates == [], (digests, len(deflates))
    assert len(formats) <= seconds + 2, (len(formats), seconds)  # 3 per decision before


def test_a_literal_steps_plan_is_made_once_and_again_after_a_new_secret(tmp_path, monkeypatch):
    """A dry run only describes its steps: one written without a template, a `when`, a change
    or a place it writes is planned alike for every alert, so its record (described,
    redacted, for each alert before) is made once per playbook version and
    copied (describe counted; a templated step is still planned per alert). A secret
    remembered since makes it planned, and redacted, again."""
    secret = "plan-secret-4f1c9a7e"
    rules = write_rules(tmp_path / "rules", f"""
playbooks:
  - name: look
    match: {{alertname: Look}}
    steps:
      - {{name: fixed, action: log, params: {{message: "see the {secret} board"}}}}
      - {{name: which, action: log, params: {{message: "{{{{ labels.x }}}} is down"}}}}
""")
    cfg = Config(rules=[str(rules)], store=f"sqlite:///{tmp_path}/w.db", webhook_token=TOKEN,
                 escalation_dir=str(tmp_path / "notes"), guards=loopback_guards())
    described: list[object] = []
    _count(monkeypatch, ACTIONS["log"], "describe", described)
    n = 10
    w = InProcessWorker(cfg).start()
    try:
        def storm(tag: str) -> None:
            alerts = [alert("Look", x=f"{tag}{i}", fingerprint=f"{tag}{i}") for i in range(n)]
            assert w.post_alerts(notification(*alerts))[0] == 202
            w.wait_idle()

        storm("a")
        first = len(described)
        redact.remember(secret)
        storm("b")
        second = len(described) - first
        decisions = w.call(w.service.store.list_executions(100))
    finally:
        w.stop()
    steps = {d["fingerprint"]: {s["name"]: s for s in d["steps"]} for d in decisions}
    assert len(steps) == 2 * n and {d["outcome"] for d in decisions} == {"planned"}
    assert first == 1 + 1 + n, first  # the literal step once (and checked once as kept)
    assert second == 1 + 1 + n, second  # again once, under the new secret
    for fingerprint, by_name in steps.items():
        assert by_name["which"]["detail"] == f"log info: {fingerprint} is down"
        fixed = by_name["fixed"]
        assert fixed["outcome"] == "planned" and fixed["params"]["level"] == "info"
        if fingerprint.startswith("b"):
            assert secret not in json.dumps(fixed) and "<redacted>" in fixed["detail"]
        else:  # planned before remediator knew it for a secret
            assert fixed["detail"] == f"log info: see the {secret} board"
    copies = [by_name["fixed"] for by_name in steps.values()]
    assert len({id(c) for c in copies}) == len({id(c["params"]) for c in copies}) == 2 * n


def test_a_long_plan_takes_a_turn_every_few_steps(tmp_path, monkeypatch):
    """A dry run's steps share a turn (nothing is called or written between them), but a
    plan of any length in one turn stalled intake for all of it: a playbook has no bound
    on its steps, and each renders templates over the alert. Every `PLAN_CHUNK` steps,
    processing takes a turn again (the engine's turns counted, for a one-step plan and a
    long one). `turns.LONG` made long: a chunk past it takes a turn at its next step too."""
    steps = "".join(f"      - {{name: s{i}, action: log, params: {{message: '{{{{ labels.x }}}}'}}}}\n"
                    for i in range(2 * engine.PLAN_CHUNK + 1))
    rules = write_rules(tmp_path / "rules", f"""
playbooks:
  - name: short
    match: {{alertname: Short}}
    steps:
      - {{name: s0, action: log, params: {{message: '{{{{ labels.x }}}}'}}}}
  - name: long
    match: {{alertname: Long}}
    steps:
{steps}""")
    cfg = Config(rules=[str(rules)], store=f"sqlite:///{tmp_path}/w.db", webhook_token=TOKEN,
                 escalation_dir=str(tmp_path / "notes"), guards=loopback_guards())
    taken: list[object] = []
    # the engine's turns only; counted by structure, not by CPU time (`turns.LONG`)
    counted = types.SimpleNamespace(take=turns.take, turns=turns.turns, held=turns.held,
                                    LONG=60.0)
    _count(monkeypatch, counted, "take", taken)
    for module in ENGINE_TURNS:
        monkeypatch.setattr(module, "turns", counted)
    w = InProcessWorker(cfg).start()
    try:
        plans = []
        for name in ("Short", "Long"):
            before = len(taken)
            assert w.post_alerts(notification(alert(name, x="y", fingerprint=name)))[0] == 202
            w.wait_idle()
            plans.append(len(taken) - before)
        decisions = w.call(w.service.store.list_executions(10))
    finally:
        w.stop()
    assert {d["playbook"]: len(d["steps"]) for d in decisions} == {
        "short": 1, "long": 2 * engine.PLAN_CHUNK + 1}
    assert plans[1] - plans[0] == 2, plans  # a turn again at steps PLAN_CHUNK and twice that


def test_a_playbooks_first_plan_compiles_each_text_in_a_chunk_of_its_own(tmp_path, monkeypatch):
    """A playbook's first plan and note compiled all of their templates in one chunk (Jinja:
    1-5 ms a text; up to 27 ms in a storm's first seconds, every webhook in flight waiting).
    Each text is now compiled, then parsed for what it reads, in a chunk of its own once the
    chunk ran for `turns.SLICE` (none here: every time); an alert of the same playbook
    after that compiles nothing (a plan's step past `turns.LONG` takes a turn before the
    next, and before its note: the test before). The
    turns templating takes, counted: two per text (its steps' three texts, the note's two),
    and one after each part's texts (what follows is a chunk of its own); texts no other
    test compiles (the compiled templates are the process's)."""
    rules = write_rules(tmp_path / "rules", """
playbooks:
  - name: look
    match: {alertname: PodDown}
    steps:
      - {name: a, action: log, params: {message: "{{ labels.pod }} down (first plan)"}}
      - name: b
        action: log
        when: "labels.pod != 'first plan'"
        params: {message: "{{ labels.pod }} in {{ labels.namespace }} (first plan)"}
    escalation:
      summary: "{{ labels.pod }} is down (first plan)"
      owner: "{{ labels.team | default('first plan') }}"
      always: true
""")
    cfg = Config(rules=[str(rules)], store=f"sqlite:///{tmp_path}/w.db", webhook_token=TOKEN,
                 escalation_dir=str(tmp_path / "notes"), guards=loopback_guards())
    template_memo.clear()
    taken: list[object] = []
    counted = types.SimpleNamespace(take=turns.take, turns=turns.turns, held=turns.held)
    _count(monkeypatch, counted, "take", taken)
    monkeypatch.setattr(templating, "turns", counted)  # templating's turns only
    monkeypatch.setattr(turns, "SLICE", 0.0)
    w = InProcessWorker(cfg).start()
    try:
        counts = []
        for pod in ("web-0", "web-1"):
            before = len(taken)
            assert w.post_alerts(notification(alert("PodDown", pod=pod, namespace="prod",
                                                    fingerprint=pod)))[0] == 202
            w.wait_idle()
            counts.append(len(taken) - before)
        decisions = w.call(w.service.store.list_executions(10))
    finally:
        w.stop()
    assert {d["outcome"] for d in decisions} == {"planned"}
    assert all(f"{d['alert']['labels']['pod']} is down (first plan)" in d["escalation"]["note"]
               for d in decisions)
    assert counts == [2 * 1 + 1 + 2 * 2 + 1 + 2 * 2 + 1, 0], counts


def test_a_decisions_note_and_its_record_are_chunks_of_their_own(tmp_path, monkeypatch):
    """Rendering a note (its templates, its redaction) and recording the decision (encoding
    it) were one chunk of processing, the longest a storm held the loop for: a webhook
    arriving meanwhile waited for both. After a live run's steps, the note takes a turn of
    its own and the record another; a dry run's note continues its plan's chunk, and its
    record too (nothing was called, written or waited for since: a turn, a loop iteration
    and a resumption of the whole await chain less; it took one before), unless something
    did wait (the note's first probe of Prometheus, once per 30 s; on PostgreSQL, every
    store call) or the chunk ran for `turns.SLICE` already (a long chunk is what a webhook
    waits behind): then the record takes a turn. The engine's turns and the pieces of work,
    in order, for a second alert (the first one probed); the slice made long (no chunk
    reaches it) or none; `turns.LONG` made long (a first plan's chunk past it takes a turn
    at its next step and before its note)."""
    rules = write_rules(tmp_path / "rules", RULES)
    cfg = Config(rules=[str(rules)], store=f"sqlite:///{tmp_path}/w.db", webhook_token=TOKEN,
                 escalation_dir=str(tmp_path / "notes"), guards=loopback_guards())
    events: list[object] = []

    def logged(owner: object, name: str, tag: str) -> None:
        real = getattr(owner, name)

        def call(*args, **kwargs):
            events.append(tag)
            return real(*args, **kwargs)

        monkeypatch.setattr(owner, name, call)

    counted = types.SimpleNamespace(take=turns.take, turns=turns.turns, held=turns.held,
                                    LONG=60.0)
    logged(counted, "take", "turn")
    for module in ENGINE_TURNS:  # the engine's turns only
        monkeypatch.setattr(module, "turns", counted)
    logged(escalation, "note_for", "note")
    logged(packing, "body_text", "record")
    logged(Steps, "run", "step")
    tails = []
    for mode, slice_ in (("dry-run", 60.0), ("dry-run", 0.0), ("live", 60.0)):
        monkeypatch.setattr(turns, "SLICE", slice_)
        cfg.mode, cfg.store = mode, f"sqlite:///{tmp_path}/{mode}{slice_}.db"
        template_memo.clear()  # as a new process: the plans the run before kept are not used
        w = InProcessWorker(cfg).start()
        try:
            for n in range(2):
                assert w.post_alerts(notification(alert(
                    "WebDown", deployment=f"web{n}", team="a", fingerprint=f"f{n}")))[0] == 202
                w.wait_idle()
                if n == 0:
                    first = events[-2:]
            decisions = w.call(w.service.store.list_executions(10))
        finally:
            w.stop()
        assert all("team a" in d["escalation"]["note"] for d in decisions)
        tails.append((decisions[0]["outcome"], first, events[-6:]))
    assert tails == [("planned", ["turn", "record"],  # the first note probed Prometheus
                      ["record", "turn", "step", "step", "note", "record"]),
                     # its plan and note ran for the slice (all of it, here: none)
                     ("planned", ["turn", "record"],
                      ["turn", "step", "step", "note", "turn", "record"]),
                     # its last step called, journaled (the store's turn), then its note
                     ("failed", ["turn", "record"],
                      ["turn", "step", "turn", "note", "turn", "record"])], tails


async def _granted() -> int:
    return turns.turns().granted


def _iterations() -> list[int]:
    """A counter of the running loop's iterations (a callback that runs once in each)."""
    loop, count = asyncio.get_running_loop(), [0]

    def tick() -> None:
        count[0] += 1
        loop.call_soon(tick)

    loop.call_soon(tick)
    return count


def test_processing_takes_one_chunk_per_loop_iteration(run):
    async def scenario():
        iteration = _iterations()
        ran: list[int] = []

        async def execution() -> None:
            for _ in range(3):
                await turns.take()
                ran.append(iteration[0])

        tasks = [asyncio.ensure_future(execution()) for _ in range(10)]
        await asyncio.sleep(0)
        tasks[3].cancel()  # a waiter cancelled (shutdown) passes its turn on
        await asyncio.gather(*tasks, return_exceptions=True)
        assert len(ran) == 27 and len(set(ran)) == 27  # every chunk ran, each in an iteration of its own
    run(scenario())


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_deferred_turn_waits_a_millisecond_on_either_loop_never_spins(loop):
    """While a webhook is in flight, a turn is put off until intake had its share. uvloop
    fires a timer under half a millisecond at once, and the loop re-armed it without end:
    175 000 turns deferred a second beside 0.1 ms chunks, 75 % of a core. Each deferral now
    waits a millisecond, as asyncio's epoll always made it (a webhook's I/O wakes it sooner)."""
    async def scenario() -> int:
        t = turns.turns()

        async def processing() -> None:
            while True:
                await turns.take()
                end = time.thread_time() + 0.0001
                while time.thread_time() < end:  # a 0.1 ms chunk
                    pass

        with turns.intake():  # a webhook in flight (its body still arriving)
            task = asyncio.ensure_future(processing())
            await asyncio.sleep(0.2)
            task.cancel()
        return t.deferred

    deferred = event_loop.run(scenario(), loop)
    assert 0 < deferred <= 250, deferred  # at most one a millisecond (200 in 0.2 s), plus slack


def test_a_turn_costs_one_callback_besides_its_wakeup(run):
    """A turn is paid for on every chunk of every decision (five for a dry-run decision with
    a note): its chunk is timed from its task's resumption to one callback right after it,
    which also grants the next turn (a callback before the chunk and another to grant were
    a tenth of processing's loop overhead). Callbacks counted; each chunk still timed alone,
    without the other work of its iteration (here a callback spending CPU in every one)."""
    async def scenario():
        loop = asyncio.get_running_loop()
        wall, cpu = [1.0], [0.0]  # no webhook answered lately: no turn is deferred
        t = turns.Turns(loop, clock=lambda: wall[0], cpu=lambda: cpu[0])
        took: list[float] = []
        after = t._after_cb  # the chunk's end (and the next turn's grant)
        t._after_cb = lambda: (after(), took.append(t._chunk[0]))  # type: ignore[assignment]
        busy = [True]

        def intake() -> None:  # other work in every iteration
            cpu[0] += 0.01
            if busy[0]:
                loop.call_soon(intake)

        async def execution() -> None:
            for _ in range(5):
                await t.take()
                cpu[0] += 0.001  # the chunk's CPU

        scheduled: list[object] = []
        call_soon = loop.call_soon

        def counted(callback, *args, **kwargs):  # type: ignore[no-untyped-def]
            scheduled.append(callback)
            return call_soon(callback, *args, **kwargs)

        loop.call_soon(intake)
        loop.call_soon = counted  # type: ignore[method-assign]
        try:
            await asyncio.gather(*(execution() for _ in range(4)))
        finally:
            del loop.call_soon
            busy[0] = False
        assert t.granted == 20
        # per turn its wakeup and one callback; and the tasks' start and end
        assert len([c for c in scheduled if c is not intake]) <= 2 * 20 + 10, scheduled
        assert len(took) == 20 and all(abs(x - 0.001) < 1e-9 for x in took), took
    run(scenario())


def test_while_a_webhook_is_in_flight_processing_keeps_to_its_share_of_the_loop(run):
    """Each chunk is timed (here by clocks that move only when a chunk or the test says so),
    and while a webhook is in flight the next turn waits until the rest of the loop's work
    had its share of the CPU (processing's is at most `turns.SHARE`), or the loop idled as
    long as the chunk took. (Before, one chunk per iteration gave processing most of the loop
    in a storm: webhooks were answered at 0.2x a bare handler's rate.) With no webhook in
    flight, a turn per iteration again."""
    async def scenario():
        wall, cpu = [0.0], [0.0]
        chunk = 0.001
        t = turns.Turns(asyncio.get_running_loop(), clock=lambda: wall[0], cpu=lambda: cpu[0])
        ran: list[float] = []

        def spend(seconds: float, idle: bool = False) -> None:
            wall[0] += seconds
            cpu[0] += 0 if idle else seconds

        async def execution() -> None:
            for _ in range(4):
                await t.take()
                ran.append(wall[0])
                spend(chunk)  # the chunk's work

        async def until(count: int) -> None:
            while len(ran) < count:
                await asyncio.sleep(0)

        with t.intake_busy():
            tasks = [asyncio.ensure_future(execution()) for _ in range(2)]
            for _ in range(50):
                await asyncio.sleep(0)
            assert len(ran) == 1 and t.deferred >= 1  # the clocks stood still: intake's time
            spend(chunk * (1 - turns.SHARE) / turns.SHARE * 0.9)
            for _ in range(50):
                await asyncio.sleep(0)
            assert len(ran) == 1  # not quite its share yet
            spend(chunk * (1 - turns.SHARE) / turns.SHARE * 0.2)  # intake had its share
            await until(2)
            spend(chunk, idle=True)  # the loop waited (a PostgreSQL commit) as long
            await until(3)
            assert t.granted == 3
        wall[0] += turns.RECENT  # no webhook answered for a moment: intake is not busy
        deferred = t.deferred
        iteration = _iterations()
        await until(8)  # no webhook in flight: a turn per iteration, none deferred
        assert t.deferred == deferred and iteration[0] <= 2 * 5 + 1
        await asyncio.gather(*tasks)
    run(scenario())


class _Clocks:
    """Turns on clocks that move only when a chunk or the test says so."""

    def __init__(self, chunk: float = 0.001) -> None:
        self.wall = self.cpu = 0.0
        self.chunk = chunk
        self.ran: list[float] = []
        self.turns = turns.Turns(asyncio.get_running_loop(), clock=lambda: self.wall,
                                 cpu=lambda: self.cpu)

    def spend(self, seconds: float) -> None:
        self.wall += seconds
        self.cpu += seconds

    async def execution(self, chunks: int) -> None:
        for _ in range(chunks):
            await self.turns.take()
            self.ran.append(self.wall)
            self.spend(self.chunk)


def test_between_answers_intake_is_busy_for_a_moment(run):
    """A storm's connections each send their next request as soon as they are answered: it
    is read, then handled an iteration or two later, and between answers no webhook is in
    flight. Processing took a turn per iteration in those gaps, so its share went unpaced
    (in a storm 9 of 10 turns were taken in them). Intake counts as busy for `RECENT` after
    an answer; then a turn per iteration again."""
    async def scenario():
        c = _Clocks()
        with c.turns.intake_busy():
            pass  # a webhook answered just now; none in flight
        task = asyncio.ensure_future(c.execution(3))
        for _ in range(50):
            await asyncio.sleep(0)
        assert len(c.ran) == 1 and c.turns.deferred >= 1  # the next chunk waits for intake
        assert c.chunk * (1 - turns.SHARE) / turns.SHARE > turns.RECENT  # only its lapse frees it
        c.spend(turns.RECENT)  # the loop busy all along, but with no answer since
        await asyncio.wait_for(task, 5)
        assert len(c.ran) == 3
    run(scenario())


def test_processing_statements_in_a_commit_count_toward_its_share(run, tmp_path):
    """A commit that carries processing's writes charges processing's turns with all of it
    but intake's statements (before, that time counted as intake's: processing earned more
    turns by writing); a commit of intake's writes alone charges nothing."""
    async def scenario():
        store = SQLiteStore(f"sqlite:///{tmp_path}/s.db")
        await store.open()
        t = turns.turns()
        charged: list[float] = []
        charge = t.charge
        t.charge = lambda seconds: (charged.append(seconds), charge(seconds))  # type: ignore[method-assign]
        try:
            await store.enqueue([("a0", {"n": 0}, {})])
            assert charged == []
            await store.record_event("k", "k0", 0)
            assert len(charged) == 1 and charged[0] > 0
            await asyncio.gather(store.enqueue([("a1", {"n": 1}, {})]),
                                 store.record_event("k", "k1", 1))
            assert len(charged) == 2
        finally:
            await store.close()

        c = _Clocks()
        intake = c.chunk * (1 - turns.SHARE) / turns.SHARE  # intake's time for one chunk
        with c.turns.intake_busy():
            task = asyncio.ensure_future(c.execution(2))
            while not c.ran:
                await asyncio.sleep(0)
            await asyncio.sleep(0)
            c.spend(c.chunk)  # processing's statements in a commit, after its chunk
            c.turns.charge(c.chunk)
            c.spend(intake)  # enough for one chunk, not for the chunk and the commit
            for _ in range(50):
                await asyncio.sleep(0)
            assert len(c.ran) == 1
            c.spend(intake)
            await asyncio.wait_for(task, 5)
    run(scenario())


def test_a_webhook_is_in_flight_for_the_turns_while_it_is_handled(tmp_path, monkeypatch):
    seen: list[int] = []
    with _one_webhook(tmp_path, monkeypatch, lambda: seen.append(turns.turns().intake)) as w:
        assert seen == [1]
        assert w.call(_intake_now()) == 0  # and no longer once answered


def test_a_webhook_passes_one_middleware_of_ours(tmp_path, monkeypatch):
    """Authentication, the store's 503 and the webhook's count and turns are one middleware:
    three were three coroutines more, each behind aiohttp's wrapper, on every webhook's way
    in and out. Counted: the coroutine frames between aiohttp's app and the route's handler
    (ours, and aiohttp's own that sets the request's current app)."""
    between: list[list[str]] = []

    def frames() -> None:
        frame, names = sys._getframe(2), []
        while frame.f_code.co_name != "receive_alerts":
            frame = frame.f_back
        frame = frame.f_back
        while frame.f_code is not web.Application._handle.__code__:
            names.append(frame.f_code.co_name)
            frame = frame.f_back
        between.append(names)

    with _one_webhook(tmp_path, monkeypatch, frames):
        assert between == [["guard", "impl"]], between


@contextlib.contextmanager
def _one_webhook(tmp_path, monkeypatch, look) -> Iterator[InProcessWorker]:  # type: ignore[no-untyped-def]
    """A worker that answers one webhook, calling `look()` from its intake."""
    rules = write_rules(tmp_path / "rules", RULES)
    cfg = Config(rules=[str(rules)], store=f"sqlite:///{tmp_path}/w.db", webhook_token=TOKEN,
                 escalation_dir=str(tmp_path / "notes"), guards=loopback_guards())
    w = InProcessWorker(cfg).start()
    intake = w.service.intake

    async def looked_at(notification):  # type: ignore[no-untyped-def]
        look()
        return await intake(notification)

    monkeypatch.setattr(w.service, "intake", looked_at)
    try:
        assert w.post_alerts(notification(alert("WebDown", deployment="a", team="a")))[0] == 202
        yield w
    finally:
        w.stop()


async def _intake_now() -> int:
    return turns.turns().intake


def test_a_webhooks_loop_iterations_carry_at_most_one_decision_each(tmp_path, monkeypatch):
    """A storm's backlog being processed while webhooks arrive: no two decisions start in
    one loop iteration (before, the dispatcher started a claim's batch of 4 in one, and a
    commit resumed 4 more, so each of a 202's iterations waited behind several decisions'
    CPU). Every alert is still decided."""
    rules = write_rules(tmp_path / "rules", RULES)
    cfg = Config(rules=[str(rules)], store=f"sqlite:///{tmp_path}/w.db", webhook_token=TOKEN,
                 escalation_dir=str(tmp_path / "notes"), guards=loopback_guards())
    w = InProcessWorker(cfg).start()
    engine = w.service.engine
    assert engine is not None
    process, started = engine.process, []
    iteration = w.call(_count_iterations())

    async def counted_process(item):  # type: ignore[no-untyped-def]
        started.append(iteration[0])
        return await process(item)

    monkeypatch.setattr(engine, "process", counted_process)
    try:
        backlog = notification(*(alert("WebDown", deployment=f"web{i}", team="a",
                                       fingerprint=f"b{i}") for i in range(200)))
        assert w.post_alerts(backlog)[0] == 202
        for i in range(20):
            assert w.post_alerts(notification(alert("WebDown", deployment=f"x{i}", team="a",
                                                    fingerprint=f"x{i}")))[0] == 202
        w.wait_idle()
        assert len(w.wait_executions(220)) == 220  # nothing lost, the backlog drained
    finally:
        w.stop()
    assert len(started) == 220
    assert collections.Counter(started).most_common(1)[0][1] == 1, started


async def _count_iterations() -> list[int]:
    return _iterations()


async def _trace(service: Service, statements: list[str]) -> None:
    service.store._db.set_trace_callback(statements.append)  # type: ignore[attr-defined]


def test_postgres_processing_calls_take_a_turn_intake_and_claims_do_not(run, postgres_url):
    """As after a SQLite write, processing's PostgreSQL calls are followed by its turn: the
    caller's work up to its next call ran unpaced in whatever loop iteration the answer came
    in, webhooks waiting in it. Intake, a claim (its items are registered for lease renewal
    when it returns), the operator's state, the heartbeat, a critical section's statements
    (its lock held meanwhile), the pending gauge's count and the record that finishes an item
    (its decision's log line follows) take none; nor does anything once intake is quiet."""
    async def scenario():
        store = open_store(postgres_url)
        await store.open()
        t = turns.turns()
        try:
            with turns.intake():  # a webhook in flight: processing is paced
                await store.enqueue([("a1", {"n": 1}, {}), ("a2", {"n": 2}, {})])
                [item, _] = await store.claim(10)
                await store.claim_key("a2")
                await store.put_state("pause", {"paused": False})
                await store.renew()
                async with store.critical("maintenance"):
                    await store.get_state("inside")
                await store.pending_count()  # a scrape's: a turn could outlast its second
                assert t.granted == 0
                await store.get_state("k")
                await store.record_event("budget", "global", 1.0)
                await store.finish(item.id)
                assert t.granted == 3
                decision = {"id": "e1", "created_at": "2026-11-30T00:00:00.000000Z",
                            "alertname": "A", "playbook": "p", "outcome": "planned",
                            "fingerprint": "f", "steps": [], "alert": {"labels": {}}}
                await store.save_execution(decision)
                assert t.granted == 4
                await store.save_execution(decision, finishes=item.id)  # its item's last
                assert t.granted == 4
            await asyncio.sleep(turns.RECENT * 2)
            await store.get_state("k")  # intake quiet: nothing to make room for
            await store.record_event("budget", "global", 2.0)
            assert t.granted == 4
        finally:
            await store.close()
    run(scenario())


def test_postgres_hands_a_connection_back_without_a_reset_unless_it_held_a_section(run,
                                                                                 postgres_url):
    """asyncpg resets every connection it takes back (advisory unlock all, CLOSE ALL,
    UNLISTEN, RESET ALL): a second round trip for each statement. Only a critical section's
    connection, which held a session advisory lock, needs it; and intake has a connection
    of its own, so a webhook's commit never queues behind processing for the pool."""
    async def scenario():
        store = open_store(postgres_url)
        await store.open()
        try:
            queries: list[str] = []
            async with store._pool.acquire() as db:  # the pool's one connection so far
                # (the lease heartbeat's renewals may run on it too: not counted)
                db.add_query_logger(lambda q: "lease_until" in q.query or queries.append(q.query))
            for i in range(5):
                await store.get_state(f"k{i}")
            assert len(queries) == 5, queries
            async with store.critical("x"):
                await store.get_state("inside")
            await store.get_state("after")
            assert sum("pg_advisory_unlock_all" in q for q in queries) == 1, queries
            # lock, read, unlock, reset and the client check set again; one read after
            assert len(queries) == 5 + 5 + 1, queries
            async with store._pool.acquire() as db:  # (a closed client's statement is ended)
                assert await db.fetchval("SHOW client_connection_check_interval") == "1s"
            intake: list[str] = []
            (await store._intake_connection()).add_query_logger(lambda q: intake.append(q.query))
            loop = asyncio.get_running_loop()
            tasks: list[object] = []
            loop.set_task_factory(lambda lp, coro, **kw: tasks.append(coro) or asyncio.Task(
                coro, loop=lp, **kw))
            try:
                await store.enqueue([("a1", {"n": 1}, {})])
            finally:
                loop.set_task_factory(None)
            # One task, the commit's: its connection is held, not pooled (the pool's shielded
            # release ran in a task of its own: more loop iterations before the 202, each of
            # which may carry a chunk of processing).
            assert len(tasks) == 1, tasks
            # one statement, committed on its own, durable before the 202 (and, the first
            # time, the driver's introspection of its types)
            assert sum("INSERT INTO inbox" in q for q in intake) == 1, intake
            assert not any(q.startswith(("BEGIN", "SET LOCAL", "COMMIT")) for q in intake), intake
            assert await store._intake_db.fetchval("SHOW synchronous_commit") == "on"
            assert await store._pool.fetchval("SHOW synchronous_commit") == "off"
            assert not any("INSERT INTO inbox" in q for q in queries)
        finally:
            await store.close()
    run(scenario())


LIVE_RULES = """
playbooks:
  - name: restart
    match: {alertname: WebDown}
    target: {kind: deployment, namespace: prod, name: "{{ labels.deployment }}"}
    guards: {rate_limit: {max: 1000, window: 1h}, lock: false}
    steps:
      - name: restart
        action: http.request
        params: {url: "%s", method: POST, expect_status: [202]}
"""



def _statements(log: str) -> list[str]:
    """Each statement the server ran (log_statement = all), on one line."""
    return [" ".join(m.group(1).split()) for m in re.finditer(
        r"LOG:  (?:statement|execute [^:]*): (.*?)(?=\n\S|\Z)", log, re.S)]


def test_a_live_decision_on_postgres_takes_a_counted_number_of_statements(tmp_path,
                                                                          postgres_cluster):
    """The statements PostgreSQL runs for one live decision with one mutation, counted at the
    server (CPU per decision is what limits two replicas on a small machine). A first run
    has no journal to read: its execution was not recorded, so none of its steps were."""
    url = postgres_cluster.create_database()
    postgres_cluster.sql(f"ALTER DATABASE {url.rsplit('/', 1)[1]} SET log_statement = 'all'")
    log = postgres_cluster.dir / "server.log"
    n = 20
    with _LiveStorm(tmp_path, url, n) as storm:
        storm("warm")  # connections opened and their types introspected, startup work done
        offset = log.stat().st_size
        storm("counted")
        ran = _statements(log.read_bytes()[offset:].decode(errors="replace"))
        assert len(storm.decided()) == 2 * n
    # the rows the server writes per decision beyond the statements: four events (the
    # mutation, the budget, the target and the circuit's success), of which `event_counts`
    # counts only the two kinds a limit without `unless` reads (all four before)
    counted = postgres_cluster.sql("SELECT string_agg(kind || '=' || n, ' ' ORDER BY kind) FROM "
                                   "(SELECT kind, sum(n) n FROM event_counts GROUP BY kind) c",
                                   url.rsplit("/", 1)[1])
    assert counted == f"budget={2 * n} mutation={2 * n}"
    kinds = postgres_cluster.sql("SELECT string_agg(kind || '=' || n, ' ' ORDER BY kind) FROM "
                                 "(SELECT kind, count(*) n FROM events GROUP BY kind) e",
                                 url.rsplit("/", 1)[1])
    assert kinds == " ".join(f"{k}={2 * n}" for k in ("budget", "mutation", "success", "target"))

    def per(prefix: str) -> float:
        return sum(s.startswith(prefix) for s in ran) / n

    # 1. the execution (none yet) and the pause before the run, read together
    assert per("SELECT p.value AS pause, e.id, e.body") == 1
    assert per("SELECT e.id") == per("SELECT value FROM state WHERE key=") == 0
    assert per("SELECT idx, body, packed FROM steps") == 0  # so no journal to read
    # 2. the admission, which also reads that the run still holds its claim, whether the
    # resolution arrived and, again, the pause, with the intent and the `running` record (the
    # run's first journal entry carries it), both written only if it admitted, once the call
    # slot is held; and it waits for the WAL flush
    assert sum(s.startswith("WITH a AS MATERIALIZED (SELECT CASE WHEN $12::text IS NULL OR "
                            "EXISTS (SELECT 1 FROM inbox WHERE dedupe_key=$12")
               and "THEN remediator_admit(" in s and "set_config('synchronous_commit', 'on'" in s
               and "x AS (INSERT INTO executions" in s and "INSERT INTO steps" in s
               for s in ran) == n
    assert per("SELECT CASE WHEN") == per("SELECT EXISTS (SELECT 1 FROM inbox") == 0
    # 3. the step's result, the final record, the circuit's success and the inbox item done
    assert sum(s.startswith("WITH") and "INSERT INTO events" in s and "UPDATE inbox SET "
               "state='done'" in s and "st AS (INSERT INTO steps" in s
               and "INSERT INTO executions" in s for s in ran) == n
    assert per("INSERT INTO events") == per("UPDATE inbox SET state='done'") == 0
    assert per("INSERT INTO steps") == per("INSERT INTO executions") == 0
    claims = per("WITH t AS (SELECT ctid AS tid, state FROM inbox")
    assert 0 < claims <= 1
    # (and a new pooled connection's type introspection and client check, once per connection)
    decision_path = [s for s in ran if not s.startswith(("SELECT count(*)", "UPDATE locks",
                                                          "UPDATE inbox SET lease_until",
                                                          "WITH RECURSIVE typeinfo_tree",
                                                          "SET client_connection_check"))
                     and "set_config('jit'" not in s]
    # the intake's one statement (no transaction block: 4 round trips before), shared by the
    # notification's alerts, and the claims aside: 3 statements per decision (7 before the
    # pause was read with the execution, the admission, the `running` record and the intent
    # written together and the result with the final record; 11 before the pause and
    # resolution reads went into the admission and the final writes into one statement; 12
    # before a first run read no journal)
    assert not any(s.startswith(("BEGIN", "SET LOCAL", "COMMIT")) for s in decision_path)
    assert sum(not s.startswith(("WITH t AS", "WITH new_refs")) for s in decision_path) == 3 * n, \
        collections.Counter(s[:60] for s in decision_path)


def test_a_live_decision_calls_over_one_session_without_thread_trips_or_deep_copies(
        tmp_path, monkeypatch):
    """What a live decision costs in remediator's own code beyond a dry run's, counted: its
    call goes over the one shared session (its pooled connection), with no trip to a worker
    thread (aiohttp's `trust_env` looked the proxy and netrc up in one for every request,
    though the environment configured neither: most of the call's CPU), and its step
    records are copied once, by the redaction (`dataclasses.asdict` deep-copied each first);
    its admission counts the limits in the store's index, however many events they hold; its
    templates render without merging the sandbox's globals again (half of a render's CPU);
    its call is retried by a plain loop (tenacity inspected and wrapped its callbacks on
    every attempt)."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "WS_PROXY", "WSS_PROXY", "NETRC"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    sessions: list[object] = []
    trips: list[object] = []
    copies: list[object] = []
    _count(monkeypatch, aiohttp.ClientSession, "__init__", sessions)
    _count(monkeypatch, asyncio.BaseEventLoop, "run_in_executor", trips)
    _count(monkeypatch, copy, "deepcopy", copies)
    merges: list[object] = []  # Jinja's globals, merged per render (its ChainMap) before
    _count(monkeypatch, collections.ChainMap, "__iter__", merges)
    inspections: list[object] = []  # a retry library's, wrapping its callbacks per attempt
    _count(monkeypatch, inspect, "iscoroutinefunction", inspections)
    n = 10
    with _LiveStorm(tmp_path, f"sqlite:///{tmp_path}/l.db", n) as storm:
        storm("warm")  # the session is made on first use
        del sessions[:], trips[:], copies[:], merges[:], inspections[:]
        statements: list[str] = []
        storm.worker.call(_trace(storm.worker.service, statements))
        storm("counted")
        assert sessions == [] and trips == [] and copies == [] and merges == []
        assert inspections == []
        # the rate limit and the budget are counted in their index, no event read into Python
        admissions = [s for s in statements if "FROM events WHERE kind=" in s]
        assert len(admissions) == 2 * n and all(s.startswith("SELECT count(*)") for s in admissions)
        decisions = storm.decided()
        assert len(decisions) == 2 * n
        journal = storm.worker.call(storm.worker.service.store.completed_steps(decisions[0]["id"]))
        assert journal[0]["result"]["status"] == 202


class _LiveStorm:
    """A live `serve` (in process) whose playbook makes one mutating call per alert to a
    real receiver; calling it posts `n` alerts and waits until they are decided."""

    def __init__(self, tmp_path, store: str, n: int):
        self.n, self.port, self.calls = n, free_port(), 0
        rules = write_rules(tmp_path / "rules", LIVE_RULES % f"http://127.0.0.1:{self.port}/restart")
        self.config = Config(rules=[str(rules)], store=store, webhook_token=TOKEN, mode="live",
                             escalation_dir=str(tmp_path / "notes"),
                             guards=loopback_guards(budget_max=100))

    def __enter__(self) -> _LiveStorm:
        self.worker = InProcessWorker(self.config).start()
        self.runner: web.AppRunner | None = None
        try:
            self.worker.call(self._serve())
        except BaseException:
            self.worker.stop()
            raise
        return self

    async def _serve(self) -> None:
        async def receive(request: web.Request) -> web.Response:
            self.calls += 1
            return web.Response(status=202)

        app = web.Application()
        app.router.add_post("/restart", receive)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    def __call__(self, tag: str) -> None:
        body = notification(*(alert("WebDown", deployment=f"{tag}{i}", fingerprint=f"{tag}{i}")
                              for i in range(self.n)))
        done = self.calls + self.n
        assert self.worker.post_alerts(body)[0] == 202
        deadline = time.monotonic() + 60
        while self.calls < done and time.monotonic() < deadline:
            time.sleep(0.05)
        self.worker.wait_idle()
        assert self.calls == done

    def decided(self) -> list[dict]:
        """Every decision so far, each of which made its call and succeeded."""
        decisions = self.worker.call(self.worker.service.store.list_executions(1000))
        assert len(decisions) == self.calls and {d["outcome"] for d in decisions} == {"succeeded"}
        return decisions

    def __exit__(self, *exc: object) -> None:
        try:
            if self.runner is not None:
                self.worker.call(self.runner.cleanup())
        finally:
            self.worker.stop()


def _count(monkeypatch, owner: object, name: str, into: list[object]) -> None:
    """Record each call of `owner.name`, which still runs."""
    real = getattr(owner, name)

    def counted(*args, **kwargs):
        into.append(args[:1])
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)


def test_an_http_proxy_in_the_environment_is_still_used(run, tmp_path, monkeypatch):
    """The shared session honours HTTP_PROXY as every HTTP tool does (the environment is
    read when the session is made, not on every request)."""
    for name in ("NO_PROXY", "no_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    seen: list[str] = []

    async def proxy(request: web.Request) -> web.Response:  # a forward proxy's side of it
        seen.append(f"{request.method} {request.url}")
        return web.json_response({"ok": True})

    async def scenario() -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", proxy)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}")
        backends = Backends()
        try:
            ctx = ActionContext(backends=backends, log=logging.getLogger("t"), execution_id="e")
            params, problems = check_params(ACTIONS["http.request"], {
                "url": "http://upstream.invalid:8080/check", "expect_json": {"ok": True}},
                rendered=True)
            assert not problems
            result = await ACTIONS["http.request"].run(params, ctx)
        finally:
            await backends.close()
            await runner.cleanup()
        assert result["status"] == 200
        assert seen == ["GET http://upstream.invalid:8080/check"]
    run(scenario())


_READ_ONE_WEBHOOK = """
import socket, sys
from remediator import collector
if sys.argv[1] == "serve":
    collector.receive_buffers_from_the_heap()
a, b = socket.socketpair()
a.send(b"x" * 1000)
data = b.recv(256 << 10)  # as asyncio's transport reads (its max_size)
heap = next(line.split()[0] for line in open("/proc/self/maps") if line.endswith("[heap]\\n"))
low, high = (int(x, 16) for x in heap.split("-"))
print(low <= id(data) < high)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mmap threshold")
def test_a_webhooks_read_comes_from_the_heap_not_a_new_mapping():
    """asyncio reads a connection into a new 256 KiB buffer, shrunk to what came; glibc maps
    that much with mmap unless a free block fits or a freed mapping raised its threshold,
    and in `serve` with processing off neither held in 4 runs of 10: each webhook's read was
    then an mmap, a page fault, an mremap and an munmap (~13 us against ~2). Counted in a
    new interpreter: without the call the read is a mapping of its own; after `serve`'s call
    it is in the heap."""
    def in_heap(mode: str) -> bool:
        out = subprocess.run([sys.executable, "-c", _READ_ONE_WEBHOOK, mode], check=True,
                             capture_output=True, text=True)
        return out.stdout.strip() == "True"

    if in_heap("plain"):
        pytest.skip("this allocator reads into the heap anyway")
    assert in_heap("serve")


def test_serve_runs_full_collections_between_webhooks(run):
    """`serve` turns the collector's automatic full passes off (in a storm they walked the
    whole heap every few seconds, 20-30 ms of the loop with webhooks waiting) and runs them
    once no webhook was in flight for a second, or once too many young passes piled up."""
    async def scenario():
        full: list[int] = []

        def seen(phase: str, info: dict) -> None:
            if phase == "start" and info["generation"] == 2:
                full.append(1)

        gc.callbacks.append(seen)
        try:
            gc.collect(1)  # something reached the oldest generation
            with turns.intake():
                assert not collector.collect_between_webhooks() and not full
            assert not collector.collect_between_webhooks() and not full  # one was just answered
            turns.turns().answered_at -= 1.0  # a second ago
            assert collector.collect_between_webhooks() and len(full) == 1
            assert not collector.collect_between_webhooks()  # nothing new since
            with turns.intake():
                for _ in range(collector.FULL_GC_FORCED):
                    gc.collect(1)
                assert collector.collect_between_webhooks() and len(full) == 2
        finally:
            gc.callbacks.remove(seen)
    with _as_serve():
        run(scenario())



def test_serve_makes_a_young_pass_per_ten_thousand_objects_not_per_700(run):
    """A storm's decisions in flight rise and fall by more than Python's 700 objects, so each
    crossed the young threshold again and again (73 passes in a drain of 1 800 decisions, ~2 %
    of its instructions): `serve` raises it (1 in that drain). Young passes counted."""
    young: list[int] = []

    def seen(phase: str, info: dict) -> None:
        if phase == "start":
            young.append(info["generation"])

    async def scenario() -> None:
        task = collector.between_webhooks()
        try:
            gc.collect(0)  # the young count from zero
            gc.callbacks.append(seen)
            try:
                held = [{} for _ in range(collector.YOUNG_OBJECTS // 2)]
                assert young == []  # 5 000 more alive: at 700, 7 passes
                held += [{} for _ in range(collector.YOUNG_OBJECTS)]
                assert young  # past it: a pass
            finally:
                gc.callbacks.remove(seen)
            del held
        finally:
            task.cancel()

    threshold = gc.get_threshold()
    try:
        run(scenario())
    finally:
        gc.set_threshold(*threshold)


def test_garbage_reaching_the_oldest_generation_is_collected_while_webhooks_keep_coming(run):
    """Webhooks always in flight (a storm of failing live remediations: each failure's
    exception and traceback frames are cycles, ~90 objects per decision that outlive young
    passes) and few young passes: a full collection still runs once the oldest generation
    doubled since the last one (past FULL_GC_OBJECTS), not only after FULL_GC_FORCED young
    passes (~20 000 such decisions: ~2 million objects, then one pass of seconds)."""
    async def scenario():
        gc.collect(1)
        assert collector.collect_between_webhooks()  # no webhook yet: what survived, counted
        peak = 0
        with turns.intake():
            for _ in range(100):
                cycles = [{"self": {}} for _ in range(2_000)]
                for c in cycles:
                    c["self"]["back"] = c
                gc.collect(1)
                gc.collect(1)  # promoted: alive through two young passes
                del cycles, c  # now garbage that only a full collection frees
                collector.collect_between_webhooks()
                peak = max(peak, len(gc.get_objects(2)))
        assert gc.get_count()[2] < collector.FULL_GC_FORCED  # not forced by young passes
        assert peak < collector.FULL_GC_OBJECTS + 20_000, peak  # of 400 000 made
    with _as_serve():
        run(scenario())


@contextlib.contextmanager
def _as_serve() -> Iterator[None]:
    """The collector as `serve` leaves it: what start-up built frozen, full passes not
    automatic."""
    threshold = gc.get_threshold()
    gc.set_threshold(*threshold[:2], 1 << 30)
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


def test_a_literal_steps_parameters_are_checked_once_and_a_templated_one_per_alert(
        tmp_path, monkeypatch):
    """A step written without a template has the same parameters whatever the alert: they
    are rendered and checked once per playbook version (checking every step of every
    decision was a tenth of a storm's processing), handed out as a copy; a templated step is
    rendered and checked for each alert, so a hostile label is still refused (check_params
    calls counted; the kubernetes reads, dry-run, call nothing)."""
    rules = write_rules(tmp_path / "rules", """
playbooks:
  - name: look
    match: {alertname: PodDown}
    steps:
      - name: literal
        action: kubernetes.get
        params: {resource: pods, namespace: prod, name: web, limit: 5}
      - name: templated
        action: kubernetes.get
        params: {resource: pods, namespace: prod, name: "{{ labels.pod }}"}
""")
    cfg = Config(rules=[str(rules)], store=f"sqlite:///{tmp_path}/w.db", webhook_token=TOKEN,
                 escalation_dir=str(tmp_path / "notes"), guards=loopback_guards())
    checked: list[object] = []
    _count(monkeypatch, plans, "check_params", checked)
    w = InProcessWorker(cfg).start()
    n = 10
    try:
        pods = [f"web-{i}" for i in range(n)] + ["Web_Bad!"]
        assert w.post_alerts(notification(*(alert("PodDown", pod=p, fingerprint=p)
                                            for p in pods)))[0] == 202
        w.wait_idle()
        decisions = {d["fingerprint"]: d for d in w.call(w.service.store.list_executions(100))}
    finally:
        w.stop()
    assert len(checked) == 1 + n + 1, len(checked)  # the literal step once, the other per alert
    for p in pods[:n]:
        literal, templated = decisions[p]["steps"]
        assert (literal["outcome"], templated["outcome"]) == ("planned", "planned"), decisions[p]
        assert literal["params"] == {"resource": "pods", "namespace": "prod", "name": "web",
                                     "limit": 5}
        assert templated["params"]["name"] == p
    bad = decisions["Web_Bad!"]
    assert bad["outcome"] == "failed" and bad["steps"][1]["outcome"] == "failed"
    assert "refused" in bad["steps"][1]["detail"], bad["steps"][1]


def test_a_dry_runs_plan_of_a_templated_step_is_made_once_per_value_it_reads(
        tmp_path, monkeypatch):
    """A dry run's plan of a built-in's step with templates or a `when` is a function of the
    values they read (rendered, checked, described and redacted for every alert, it was a
    tenth of a storm's processing): made once per distinct value, then copied; made again
    for a value not seen yet, and once a secret is remembered (redaction may differ).
    `Steps.run` calls counted; the records are those a plan of each alert makes."""
    rules = write_rules(tmp_path / "rules", """
playbooks:
  - name: look
    match: {alertname: PodDown}
    steps:
      - name: pods
        action: kubernetes.get
        params: {resource: pods, namespace: "{{ labels.namespace }}", name: web}
      - name: pod
        action: kubernetes.get
        when: "labels.namespace == 'prod'"
        params: {resource: pods, namespace: prod, name: "{{ labels.pod }}"}
""")
    cfg = Config(rules=[str(rules)], store=f"sqlite:///{tmp_path}/w.db", webhook_token=TOKEN,
                 escalation_dir=str(tmp_path / "notes"), guards=loopback_guards())
    template_memo.clear()
    planned: list[object] = []
    _count(monkeypatch, Steps, "run", planned)
    w = InProcessWorker(cfg).start()
    try:
        prod = [alert("PodDown", namespace="prod", pod=f"web-{i}", fingerprint=f"p{i}")
                for i in range(4)]
        dev = [alert("PodDown", namespace="dev", pod="web-0", fingerprint=f"d{i}")
               for i in range(3)]
        assert w.post_alerts(notification(*prod, *dev))[0] == 202
        w.wait_idle()
        # `pods` once per namespace, `pod` once per prod pod and once skipped (dev)
        assert len(planned) == 2 + 4 + 1, len(planned)
        monkeypatch.setattr(redact, "_pattern", (re.compile("s3cr3t-v4lue"), ("s3cr3t-v4lue",)))
        assert w.post_alerts(notification(alert("PodDown", namespace="prod", pod="web-0",
                                                fingerprint="again")))[0] == 202
        w.wait_idle()
        assert len(planned) == 2 + 4 + 1 + 2, len(planned)  # a secret known since: again
        decisions = {d["fingerprint"]: d for d in w.call(w.service.store.list_executions(100))}
    finally:
        w.stop()
    for a in (*prod, *dev):
        pods, pod = decisions[a["fingerprint"]]["steps"]
        namespace, name = a["labels"]["namespace"], a["labels"]["pod"]
        assert (pods["outcome"], pods["params"]["namespace"]) == ("planned", namespace), pods
        assert pods["detail"] == ACTIONS["kubernetes.get"].describe(pods["params"]), pods
        if namespace == "prod":
            assert (pod["outcome"], pod["params"]["name"]) == ("planned", name), pod
        else:
            assert (pod["outcome"], pod["detail"]) == (
                "skipped", "condition false: labels.namespace == 'prod'"), pod
    assert decisions["again"]["steps"] == decisions["p0"]["steps"]
    big = ("a plan whose parameters are big",)  # not kept: sized inside mappings and lists
    template_memo.put(big, True, ({"params": {"q": ["x" * 4097]}}, None, False))
    assert template_memo.get(big) is None


def test_a_webhook_counts_its_answer_and_alerts_without_looking_up_a_metric(tmp_path, monkeypatch):
    """What a webhook counts (its answer's code, its alerts' statuses) looks up no metric's
    child (`labels()` takes a lock and builds its key: two of them were ~2 us of each
    webhook; they are plain counts now, metrics.IntakeCounts); the counts are the same."""
    rules = write_rules(tmp_path / "rules", RULES)
    cfg = Config(rules=[str(rules)], store=f"sqlite:///{tmp_path}/w.db", webhook_token=TOKEN,
                 escalation_dir=str(tmp_path / "notes"), guards=loopback_guards())
    w = InProcessWorker(cfg).start()
    looked_up = _metric_lookups(monkeypatch)
    try:
        payload = notification(alert("WebDown", deployment="a", fingerprint="f1"),
                               alert("WebDown", deployment="b", fingerprint="f2", status="resolved"))
        assert w.post_alerts(payload)[0] == 202
        assert w.post_alerts(payload)[0] == 202  # duplicates
        assert w.post_alerts({"version": "4"})[0] == 400
        sample = w.service.metrics.registry.get_sample_value
        assert [n for n in looked_up if n.startswith(("remediator_webhook", "remediator_alerts"))] == []
        assert sample("remediator_webhook_requests_total", {"code": "202"}) == 2
        assert sample("remediator_webhook_requests_total", {"code": "400"}) == 1
        assert sample("remediator_webhook_ack_duration_seconds_count") == 2
        assert sample("remediator_alerts_received_total", {"status": "firing"}) == 2
        assert sample("remediator_alerts_received_total", {"status": "resolved"}) == 2
        assert sample("remediator_alerts_duplicate_total") == 2
    finally:
        w.stop()


def _metric_lookups(monkeypatch) -> list[str]:
    """The names of the metrics whose children are looked up (`labels()`) from now on."""
    from prometheus_client.metrics import MetricWrapperBase

    looked_up: list[str] = []
    labels = MetricWrapperBase.labels

    def counted(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        looked_up.append(self._name)
        return labels(self, *args, **kwargs)

    monkeypatch.setattr(MetricWrapperBase, "labels", counted)
    return looked_up


def test_a_decision_hashes_its_id_once_and_counts_itself_without_looking_up_a_metric(
        tmp_path, monkeypatch):
    """A decision's execution id is hashed once (twice before: the alert's last one was
    hashed again to know which record finishes its item, ~1.5 us), and the children it
    counts (its outcome, a guard's block, a step's duration) are looked up once per label
    values, not at every decision (~3 us); the counts are the same."""
    rules = write_rules(tmp_path / "rules", RULES)
    cfg = Config(rules=[str(rules)], store=f"sqlite:///{tmp_path}/w.db", webhook_token=TOKEN,
                 escalation_dir=str(tmp_path / "notes"), guards=loopback_guards())
    w = InProcessWorker(cfg).start()
    try:
        def storm(tag: str) -> None:
            body = notification(*(alert("WebDown", deployment=f"{tag}{i}", team="a",
                                        fingerprint=f"{tag}{i}") for i in range(5)),
                                alert("Unknown", fingerprint=f"{tag}u"))
            assert w.post_alerts(body)[0] == 202
            w.wait_idle()

        storm("warm")
        looked_up = _metric_lookups(monkeypatch)
        hashed: list[object] = []
        _count(monkeypatch, records, "execution_id", hashed)
        storm("counted")
        monkeypatch.undo()
        metrics = w.service.metrics
        assert metrics.executions.labels("restart-web", "planned")._value.get() == 10
        assert metrics.executions.labels("", "no_match")._value.get() == 2
    finally:
        w.stop()
    assert looked_up == []
    assert len(hashed) == 6  # one per decision (11 before)


def _engine_for_one_step(tmp_path, text: str):
    """An engine over `text`'s rules (its steps checked as processing checks them), the
    first playbook's first step and its action."""
    from remediator.playbooks.validate import load_rules

    rules = load_rules([str(write_rules(tmp_path / "rules", text))])
    step = rules.playbooks[0].steps[0]
    return (engine.Engine(rules=rules, store=None, guards=None),  # type: ignore[arg-type]
            step, ACTIONS[step.action])


def test_a_literal_steps_parameters_are_handed_out_sharing_nothing(tmp_path):
    """Each decision gets its own copy of a literal step's checked parameters, lists and
    mappings inside included: an action that changes what it was given (a plugin's run
    appending to a list) changes neither the next decision's parameters nor the kept ones,
    which are never checked again."""
    e, step, action = _engine_for_one_step(tmp_path, """
playbooks:
  - name: env
    match: {alertname: WebDown}
    target: {kind: deployment, namespace: prod, name: web}
    guards: {cooldown: 10m}
    steps:
      - name: set
        action: kubernetes.set_env
        params: {namespace: prod, name: web, env: {MODE: safe}, unset: [DEBUG]}
""")
    first, problems, _ = e.plans.checked(action, step, {})
    assert not problems and first["env"] == {"MODE": "safe"}, problems
    first["env"]["MODE"] = "$(reboot)"  # as an action might, running the first decision
    first["unset"].append("PATH")
    second, problems, _ = e.plans.checked(action, step, {})
    assert (second["env"], second["unset"], problems) == ({"MODE": "safe"}, ["DEBUG"], [])


def test_a_loop_finds_its_own_turns_while_another_threads_loop_looks_up_its_own(run):
    """The last Turns looked up is one global for every thread's loop (tests run workers'
    loops in threads): another thread rebinding it between the check that it is this loop's
    and its return must not hand this loop the other's (futures of another loop)."""
    async def scenario():
        loop = asyncio.get_running_loop()
        other = turns.Turns(asyncio.new_event_loop())
        mine = turns.Turns(loop)

        class Racing:  # this loop's, until another thread looks its own up
            def __getattr__(self, name: str) -> object:
                turns._last = other
                return getattr(mine, name)

        racing = Racing()
        turns._last = racing  # type: ignore[assignment]
        try:
            assert turns.turns() is racing
        finally:
            other._loop.close()
            turns._last = None
    run(scenario())


def test_a_plugins_literal_step_is_checked_for_every_alert(tmp_path, monkeypatch):
    """A plugin's checks are not ours to call pure (the validator checks its steps at every
    load, as it does): its literal step is checked for each alert, so a check that refuses
    now (a tracker in maintenance, read at each call) is not answered by an earlier pass."""
    e, step, action = _engine_for_one_step(tmp_path, """
playbooks:
  - name: ticket
    match: {alertname: WebDown}
    target: {kind: deployment, namespace: prod, name: web}
    guards: {cooldown: 10m}
    steps:
      - name: open
        action: example.open_ticket
        params: {tracker: "https://tickets.example/new", title: web is down}
""")
    closed = [False]
    monkeypatch.setattr(action, "check", lambda params: ["in maintenance"] if closed[0] else [])
    assert e.plans.checked(action, step, {})[1] == []
    closed[0] = True
    assert e.plans.checked(action, step, {})[1] == [("", "in maintenance")]


class _Unscanned(dict):
    def items(self):
        raise AssertionError("every lock was read")

    __iter__ = keys = values = items


def test_an_execution_releases_its_locks_without_reading_every_lock_held(run):
    """A single replica's target locks are in memory; an execution releases its own two or
    three times as it ends (blocked, finished, and once more whatever happened), and each
    release read every lock held, one per execution in flight (up to `max_executions`).
    Counted: a release reads none of the others' locks, and frees only its own."""
    from remediator.store.base import LocalCoordination

    async def main() -> None:
        store = LocalCoordination()
        store._locks = _Unscanned()
        for i in range(1000):
            assert await store.acquire_lock(f"deployment/prod/web{i}", f"e{i}") is None
        assert await store.acquire_lock("deployment/prod/web7", "mine") == "e7"
        assert await store.acquire_lock("bucket/b", "mine") is None
        await store.release_locks("mine")
        await store.release_locks("mine")  # again: nothing left to release
        await store.release_locks("e7")
        assert await store.acquire_lock("bucket/b", "other") is None
        assert await store.acquire_lock("deployment/prod/web7", "mine") is None
        assert await store.acquire_lock("deployment/prod/web8", "mine") == "e8"
        assert dict.__len__(store._locks) == 1001

    run(main())
