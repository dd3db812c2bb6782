"""How many statements the store runs for one decision, by outcome, counted on both stores.

Routine decisions are most of a storm's processing, and each call into the store is CPU on
the one event loop intake shares: these counts guard the hot path (times go in bench/).
A claim, a commit (SQLite: BEGIN, COMMIT and the one statement that marks every inbox item
the commit finished) are shared by the decisions of a batch and counted apart.
"""

from __future__ import annotations

import collections
import json
import textwrap
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from remediator.alerts import parse_notification
from remediator.config import Config
from remediator.service import Service
from tests.support.payloads import alert, notification
from tests.support.worker import loopback_guards

RULES = """
playbooks:
  - name: plan
    match: {alertname: Plan}
    steps:
      - {name: look, action: log, params: {message: "{{ labels.n }} is down"}}
    on_resolved:
      - {name: back, action: log, params: {message: "{{ labels.n }} is back"}}
  - name: restart
    match: {alertname: Restart}
    target: {kind: deployment, namespace: web, name: "{{ labels.n }}"}
    guards: {cooldown: 1m, circuit_breaker: {max_refires: 3, window: 1h}}
    steps:
      - {name: restart, action: http.request, params: {url: "http://127.0.0.1:9/r", method: POST}}
  - name: denied
    match: {alertname: Denied}
    target: {kind: deployment, namespace: web, name: "{{ labels.n }}"}
    guards: {cooldown: 1m, circuit_breaker: {max_refires: 3, window: 1h}}
    steps:
      - {name: restart, action: http.request, params: {url: "http://192.0.2.1/r", method: POST}}
"""

# Statements of a commit or a claim, shared by the decisions of a batch, and intake's; and
# PostgreSQL's lease renewals (every `store_lease` / 3: a slow run meets one).
SHARED = ("BEGIN", "COMMIT", "UPDATE inbox SET state='done'", "UPDATE inbox SET state='running'",
          "SELECT count(*) FROM inbox", "INSERT OR IGNORE INTO refs", "SELECT id, data FROM refs",
          "WITH t AS (SELECT ctid", "SELECT id, data FROM refs", "UPDATE inbox SET lease_until",
          "UPDATE locks SET lease_until",
          "SET client_connection_check_interval")  # (a new pooled connection's, once)


class _Counting:
    """The store's SQLite connection, counting the calls made into it by statement."""

    def __init__(self, db: Any) -> None:
        self._db, self.calls = db, collections.Counter[str]()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)

    def execute(self, sql: str, *args: Any) -> Any:
        self.calls[" ".join(sql.split())] += 1
        return self._db.execute(sql, *args)

    def executemany(self, sql: str, *args: Any) -> Any:
        self.calls[" ".join(sql.split())] += 1
        return self._db.executemany(sql, *args)


def _count_postgres(monkeypatch: pytest.MonkeyPatch, calls: collections.Counter) -> None:
    """Each statement a pooled PostgreSQL connection sends, counted (one round trip each)."""
    for method in ("fetch", "fetchrow", "fetchval", "execute", "executemany"):
        sent = getattr(asyncpg.Connection, method)

        async def counted(self: Any, sql: str, *args: Any, _sent: Any = sent, **kw: Any) -> Any:
            calls[" ".join(sql.split())] += 1
            return await _sent(self, sql, *args, **kw)

        monkeypatch.setattr(asyncpg.Connection, method, counted)


def _decide(tmp: Path, run: Any, url: str, monkeypatch: pytest.MonkeyPatch,
            batches: list[tuple[str, list[dict]]], hold: str
            ) -> dict[str, tuple[collections.Counter, float, dict]]:
    """Each batch's alerts acknowledged, then decided; per batch, its outcomes and the calls
    per decision made into the store outside the shared statements."""
    rules = tmp / "rules"
    rules.mkdir(exist_ok=True)
    (rules / "r.yaml").write_text(textwrap.dedent(RULES))
    cfg = Config(rules=[str(rules)], store=url, escalation_dir=str(tmp / "notes"),
                 guards=loopback_guards())
    calls = collections.Counter[str]()
    sqlite = url.startswith("sqlite")
    if not sqlite:
        _count_postgres(monkeypatch, calls)

    async def scenario() -> dict[str, tuple[collections.Counter, float, dict]]:
        service = Service(cfg)
        await service.start(dispatch=False)
        if sqlite:
            db = service.store._db = _Counting(service.store._db)  # type: ignore[attr-defined]
            db.calls = calls
        out = {}
        try:
            # another run of `restart` changes the target: its alerts are coalesced into it
            assert service.engine is not None
            await service.engine.guards.store.acquire_lock(hold, "other")
            service.engine.guards._locked_by["other"] = ("restart",)
            for name, alerts in batches:
                await service.intake(parse_notification(json.dumps(notification(*alerts)).encode()))
                calls.clear()
                decisions = await service.drain()
                outcomes = collections.Counter(
                    "coalesced" if (d.get("reason") or "").startswith("locked: coalesced")
                    else d["outcome"] for d in decisions)
                own = sum(n for sql, n in calls.items() if not sql.startswith(SHARED))
                if sqlite:  # the items a commit finished, marked by one statement (one each before)
                    done = calls["UPDATE inbox SET state='done' WHERE id=?"]
                    assert 0 < done <= calls["COMMIT"] and done < len(decisions), (name, done)
                out[name] = (outcomes, own / len(decisions), dict(calls))
        finally:
            await service.stop()
        return out

    return run(scenario())


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_each_outcome_takes_a_counted_number_of_statements(tmp_path, run, monkeypatch, store,
                                                            request):
    """Statements per decision beyond its share of claims and commits. SQLite: a planned dry
    run reads its execution with the pause and writes its record (2; 3 before: each item was
    marked done by a statement of its own), a no_match writes its record (1; 2), a coalesced
    one also reads its circuit breaker, state and successes together (3; 5: apart), a blocked
    one too, then its resolution and the pause again (5; 7); a resolution also reads whether
    its firing run is still held, the approvals pending and, after those waits, the pause
    again (5; 6). PostgreSQL: the record and the inbox item done are one statement already;
    taking a target lock that another run holds reads its holder in the same statement (a
    coalesced alert: 4; 6), a blocked one reads its circuit in one (7; 8), and a resolution
    with no approval pending for it takes no critical section (5; 8: the section's lock,
    unlock and connection reset)."""
    url = (f"sqlite:///{tmp_path}/s.db" if store == "sqlite"
           else request.getfixturevalue("postgres_url"))
    n = 6
    batches = [
        ("planned", [alert("Plan", n=f"p{i}", fingerprint=f"p{i}") for i in range(n)]),
        ("no_match", [alert("Nothing", n=f"x{i}", fingerprint=f"x{i}") for i in range(n)]),
        ("coalesced", [alert("Restart", n="web", fingerprint=f"r{i}") for i in range(n)]),
        ("blocked", [alert("Denied", n=f"d{i}", fingerprint=f"d{i}") for i in range(n)]),
        ("resolved", [alert("Plan", status="resolved", n=f"p{i}", fingerprint=f"p{i}")
                      for i in range(n)]),
    ]
    counted = _decide(tmp_path, run, url, monkeypatch, batches, hold="web/deployment/web")
    for name, (outcomes, _, calls) in counted.items():
        assert outcomes == {name: n}, (name, outcomes, calls)
    per = {name: per for name, (_, per, _) in counted.items()}
    expected = {"sqlite": {"planned": 2, "no_match": 1, "coalesced": 3, "blocked": 5,
                           "resolved": 5},
                "postgresql": {"planned": 2, "no_match": 1, "coalesced": 4, "blocked": 7,
                               "resolved": 5}}[store]
    assert per == expected, {name: calls for name, (_, _, calls) in counted.items()}
