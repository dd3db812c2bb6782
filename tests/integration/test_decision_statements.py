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

# Statements of a commit or a claim, shared by the decisions of a batch.
SHARED = ("BEGIN", "COMMIT", "UPDATE inbox SET state='done'", "UPDATE inbox SET state='running'",
          "SELECT count(*) FROM inbox", "INSERT OR IGNORE INTO refs", "SELECT id, data FROM refs")


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


def _decide(tmp: Path, run: Any, batches: list[tuple[str, list[dict]]],
            hold: str | None = None) -> dict[str, tuple[collections.Counter, float]]:
    """Each batch's alerts acknowledged, then decided; per batch, its outcomes and the calls
    per decision made into SQLite outside the shared statements."""
    rules = tmp / "rules"
    rules.mkdir(exist_ok=True)
    (rules / "r.yaml").write_text(textwrap.dedent(RULES))
    cfg = Config(rules=[str(rules)], store=f"sqlite:///{tmp}/s.db",
                 escalation_dir=str(tmp / "notes"), guards=loopback_guards())

    async def scenario() -> dict[str, tuple[collections.Counter, float]]:
        service = Service(cfg)
        await service.start(dispatch=False)
        db = service.store._db = _Counting(service.store._db)  # type: ignore[attr-defined]
        out = {}
        try:
            if hold:  # another run of `restart` changes the target: its alerts coalesce
                assert service.engine is not None
                await service.engine.guards.store.acquire_lock(hold, "other")
                service.engine.guards._locked_by["other"] = "restart"
            for name, alerts in batches:
                await service.intake(parse_notification(json.dumps(notification(*alerts)).encode()))
                db.calls.clear()
                decisions = await service.drain()
                outcomes = collections.Counter(
                    "coalesced" if (d.get("reason") or "").startswith("locked: coalesced")
                    else d["outcome"] for d in decisions)
                own = sum(n for sql, n in db.calls.items() if not sql.startswith(SHARED))
                # the items a commit finished, marked by one statement (one per item before)
                done = db.calls["UPDATE inbox SET state='done' WHERE id=?"]
                assert 0 < done <= db.calls["COMMIT"] and done < len(decisions), (name, done)
                out[name] = (outcomes, own / len(decisions), dict(db.calls))
        finally:
            await service.stop()
        return out

    return run(scenario())


def test_each_outcome_takes_a_counted_number_of_sqlite_calls(tmp_path, run):
    """Calls into SQLite per decision beyond its share of claims and commits: a planned dry
    run reads its execution with the pause and writes its record (2; 3 before: each item was
    marked done by a statement of its own), a no_match writes its record (1; 2), a coalesced
    one also reads its circuit breaker, state and successes together (3; 5: apart), a blocked
    one too, then its resolution and the pause again (5; 7); a resolution also reads whether
    its firing run is still held, the approvals pending and, after those waits, the pause
    again (5; 6)."""
    n = 6
    batches = [
        ("planned", [alert("Plan", n=f"p{i}", fingerprint=f"p{i}") for i in range(n)]),
        ("no_match", [alert("Nothing", n=f"x{i}", fingerprint=f"x{i}") for i in range(n)]),
        ("coalesced", [alert("Restart", n="web", fingerprint=f"r{i}") for i in range(n)]),
        ("blocked", [alert("Denied", n=f"d{i}", fingerprint=f"d{i}") for i in range(n)]),
        ("resolved", [alert("Plan", status="resolved", n=f"p{i}", fingerprint=f"p{i}")
                      for i in range(n)]),
    ]
    counted = _decide(tmp_path, run, batches, hold="web/deployment/web")
    for name, (outcomes, _, calls) in counted.items():
        assert outcomes == {name: n}, (name, outcomes, calls)
    per = {name: per for name, (_, per, _) in counted.items()}
    assert per == {"planned": 2, "no_match": 1, "coalesced": 3, "blocked": 5,
                   "resolved": 5}, {name: calls for name, (_, _, calls) in counted.items()}
