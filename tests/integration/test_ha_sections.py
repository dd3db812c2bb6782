"""Critical sections across real `serve` replicas on a real PostgreSQL: a replica frozen
(SIGSTOP) inside one loses it within a lease, as it loses its claims, so the other replicas'
maintenance and approvals go on; woken, it does not write there any more. And what a
replica tells Alertmanager is timed on the database's clock, not its own."""

from __future__ import annotations

import datetime
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import write_rules
from tests.integration.test_ha_postgres import (
    CONFIG,
    Receiver,
    _alert,
    _clock_off,
    _decisions,
    _notification,
    _post,
    _settled,
)
from tests.integration.test_maintenance_order import BlackHole
from tests.support.worker import OPERATOR, WorkerProcess, http

SECTIONS = """
playbooks:
  - name: note
    match: {alertname: Note}
    escalation: {always: true, severity: critical}
    steps:
      - name: look
        action: log
        params: {message: "hello"}
  - name: gated
    match: {alertname: Gated}
    target: {kind: deployment, namespace: demo, name: "{{ labels.deployment }}"}
    guards: {rate_limit: {max: 10, window: 1h}, approval_ttl: %(ttl)s}
    escalation: {sinks: [files]}
    steps:
      - name: restart
        action: http.request
        approval: required
        params: {url: "%(url)s", method: POST, json: {fp: "{{ alert.fingerprint }}"}}
"""


def _replica(tmp: Path, name: str, rules: str, store: str, config: dict[str, Any],
             **env: str) -> WorkerProcess:
    return WorkerProcess(tmp, [str(write_rules(tmp / name, rules))], mode="live", store=store,
                         config={**CONFIG, **config},
                         extra_env={"REMEDIATOR_STORE_LEASE": "3s", **env}).start()


def _sinks(tmp: Path, hook: str) -> dict[str, Any]:
    return {"escalation": {"sinks": {"hook": {"type": "webhook", "url": hook},
                                     "files": {"type": "directory", "path": str(tmp / "f")}},
                           "default_sinks": ["hook"]}}


def _until(condition: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, what
        time.sleep(0.2)
    return value


def _finished(url: str, expected: int) -> dict[str, dict[str, Any]] | None:
    """The decisions by fingerprint once `expected` of them are final (none blocked)."""
    decisions = _decisions(url)
    return {d["fingerprint"]: d for d in decisions} if len(decisions) == expected and all(
        d["outcome"] not in ("running", "blocked") for d in decisions) else None


def _section_held(cluster: Any, url: str, name: str) -> bool:
    return cluster.sql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                       "AND objsubid = 1 AND objid::bigint = "
                       f"(hashtext('{name}')::bigint & 4294967295)",
                       url.rsplit("/", 1)[1]) == "1"


def test_a_replica_frozen_in_maintenance_leaves_it_to_the_others_within_a_lease(
        tmp_path, postgres_cluster, postgres_url):
    """A holds the maintenance section, redelivering a note to a sink that never answers,
    and is frozen there. Its session kept the lock for as long as it stayed frozen: B's
    passes waited for it, and an approval B asked for never expired."""
    hole, sink = BlackHole(), Receiver()
    config = _sinks(tmp_path, hole.url)
    rules = SECTIONS % {"ttl": "5s", "url": sink.url}
    a = _replica(tmp_path, "a", rules, postgres_url, config)
    b = None
    try:
        assert _post(a, _notification(_alert("n1", "Note"))) == 202
        # The note waits out its attempts at the black hole, is spooled, and A's next pass
        # holds the section while it waits on the black hole again.
        db = postgres_url.rsplit("/", 1)[1]
        _until(lambda: postgres_cluster.sql("SELECT count(*) FROM state WHERE key LIKE "
                                            "'spool:%'", db) == "1", 120, "never spooled")
        tried = len(hole.accepted)
        _until(lambda: len(hole.accepted) > tried
               and _section_held(postgres_cluster, postgres_url, "maintenance"), 60,
               "A's pass never held the section")
        assert a.proc is not None
        os.kill(a.proc.pid, signal.SIGSTOP)
        try:
            b = _replica(tmp_path, "b", rules, postgres_url, config)
            assert _post(b, _notification(_alert("g1", "Gated"))) == 202
            expired = _until(lambda: [d for d in _decisions(postgres_url)
                                      if d["fingerprint"] == "g1" and d["outcome"] != "running"
                                      and "expired" in d["reason"]], 90,
                             "B's maintenance never expired the approval")
        finally:
            os.kill(a.proc.pid, signal.SIGCONT)
        assert expired[0]["outcome"] == "escalated"
        # A, woken, goes on maintaining: its next passes take the section again.
        assert _post(a, _notification(_alert("g2", "Gated"))) == 202
        _until(lambda: [d for d in _decisions(postgres_url) if d["fingerprint"] == "g2"
                        and "expired" in d.get("reason", "")], 90, "g2 never expired")
    finally:
        for w in (a, b):
            if w is not None:
                w.stop()
        hole.close()
        sink.close()
    assert sink.calls == {}


# Where A is frozen in its approval: the statement a trigger makes slow (3 s, the lease).
FROZEN_IN = {
    # Its claim of e1's alert: committed, then lapsed while A is frozen.
    "claim": ("BEFORE UPDATE ON inbox", "starts_with(NEW.dedupe_key, 'e1:') AND OLD.state = "
              "'done' AND NEW.state = 'running'", "UPDATE inbox SET state=''running''%"),
    # Its decision.
    "decision": ("BEFORE INSERT OR UPDATE ON state", "NEW.key = 'approval:{e1}:restart'",
                 "%INSERT INTO state%"),
}


@pytest.mark.parametrize("frozen_in", list(FROZEN_IN))
def test_a_replica_frozen_mid_approval_neither_blocks_approvals_nor_strands_its_own(
        tmp_path, postgres_cluster, postgres_url, frozen_in):
    """A is frozen inside the approvals section (a statement of its approval of e1 made slow
    by a trigger). B's approval of another execution waited for A's section until its
    statement timed out: a 503 after 30 s, for as long as A stayed frozen. It goes through
    now. A's claim on e1's alert lapses meanwhile, and B takes the alert over (e1, still
    pending, is blocked again). Frozen in its decision's write, A committed `approved`
    after that, while its removal of the pending entry, a second statement, was fenced: e1
    stayed blocked until its TTL, nobody resumed it, and approving it again answered 409.
    The decision and its entry are one statement now, with A's claim locked in it: B takes
    the alert over only once it committed, and runs the step, once. Frozen before its
    decision, A writes nothing, says so, and B's approval of e1 goes through."""
    sink = Receiver()
    rules = SECTIONS % {"ttl": "1h", "url": sink.url}
    config = _sinks(tmp_path, "http://127.0.0.1:9/hook")
    config["escalation"]["default_sinks"] = ["files"]
    a = _replica(tmp_path, "a", rules, postgres_url, config)
    b = _replica(tmp_path, "b", rules, postgres_url, config)
    db = postgres_url.rsplit("/", 1)[1]
    on, when, statement = FROZEN_IN[frozen_in]

    def approve(at: WorkerProcess, fingerprint: str) -> tuple[int, Any]:
        return http("POST", f"{at.url}/api/v1/executions/{ids[fingerprint]}/approve", {},
                    OPERATOR, timeout=120)

    try:
        assert _post(a, _notification(_alert("e1", "Gated"), _alert("e2", "Gated"))) == 202
        ids = {d["fingerprint"]: d["id"] for d in _settled(postgres_url, 2)}
        postgres_cluster.sql(
            "CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN IF "
            f"{when.format(e1=ids['e1'])} THEN PERFORM pg_sleep(3); END IF; RETURN NEW; "
            f"END $$; CREATE TRIGGER slow {on} FOR EACH ROW EXECUTE FUNCTION slow()", db)
        answers: dict[str, Any] = {}
        thread = threading.Thread(target=lambda: answers.update(a=approve(a, "e1")))
        thread.start()
        _until(lambda: postgres_cluster.sql(
            f"SELECT count(*) FROM pg_stat_activity WHERE query LIKE '{statement}' "
            "AND wait_event = 'PgSleep'", db) != "0", 30, "A's approval never reached it")
        assert a.proc is not None
        os.kill(a.proc.pid, signal.SIGSTOP)
        try:
            answers["b"] = approve(b, "e2")
        finally:
            os.kill(a.proc.pid, signal.SIGCONT)
        thread.join(120)
        if frozen_in == "claim":  # (B's own claim made slow too lapses as A's did)
            postgres_cluster.sql("DROP FUNCTION slow() CASCADE", db)
            answers["again"] = approve(b, "e1")
        # The approval recorded is acted on (by whichever replica claims its alert next).
        decisions = _until(lambda: _finished(postgres_url, 2), 60, "e1, approved, never ran")
        if frozen_in == "decision":
            answers["again"] = approve(b, "e1")
    finally:
        postgres_cluster.sql("DROP FUNCTION IF EXISTS slow() CASCADE", db)
        a.stop()
        b.stop()
        sink.close()
    assert answers["b"][0] == 200, answers["b"]
    assert decisions["e1"]["outcome"] == decisions["e2"]["outcome"] == "succeeded", decisions
    assert sink.calls == {"e1": 1, "e2": 1}, sink.calls
    status, body = answers["a"]
    if frozen_in == "claim":
        assert status == 503 and "was not recorded: decide again" in body["error"], body
        assert answers["again"][0] in (200, 202), answers["again"]  # (202: still running)
    else:
        # Its statement ran while it held the section: recorded, and the run goes on (on B,
        # which took the alert over once A's claim lapsed; or on A, had it kept its claim).
        assert status in (200, 202), answers["a"]
        again = answers["again"]
        assert again[0] == 409 and "step 'restart' approved" in again[1]["error"], again


SILENCE = """
playbooks:
  - name: quiet
    match: {alertname: Noisy}
    target: {kind: deployment, namespace: demo, name: web}
    guards: {rate_limit: {max: 10, window: 1h}}
    escalation: {always: true, severity: critical}
    steps:
      - name: silence
        action: alertmanager.silence
        params:
          matchers: {alertname: Noisy, deployment: web}
          duration: 1h
          comment: quiet for a while
"""


def test_a_replica_hours_behind_pages_and_silences_on_the_databases_clock(
        tmp_path, postgres_url, alertmanager_factory):
    """A replica whose clock runs 5 hours behind (libfaketime) sent a page whose endsAt had
    passed (now + 4 h on its clock), which Alertmanager took as resolved and never showed,
    and a silence that had ended before it began."""
    am = alertmanager_factory("route: {receiver: blackhole}\nreceivers: [{name: blackhole}]\n")
    config = {"alertmanager": {"url": am.url},
              "escalation": {"sinks": {"am": {"type": "alertmanager", "url": am.url}},
                             "default_sinks": ["am"]}}
    behind = _replica(tmp_path, "behind", SILENCE, postgres_url, config, **_clock_off("-5h"))
    try:
        assert _post(behind, _notification({**_alert("q1", "Noisy"),
                                            "labels": {"alertname": "Noisy",
                                                       "deployment": "web"}})) == 202
        [decision] = _settled(postgres_url, 1)
    finally:
        behind.stop()
    assert decision["outcome"] == "escalated" or decision["outcome"] == "succeeded", decision
    now = datetime.datetime.now(datetime.UTC)
    pages = am.alerts(alertname="RemediationEscalation")
    assert [p["status"]["state"] for p in pages] == ["active"], pages
    ends = datetime.datetime.fromisoformat(pages[0]["endsAt"].replace("Z", "+00:00"))
    assert ends > now + datetime.timedelta(hours=3), pages[0]["endsAt"]
    [silence] = am.silences()
    assert silence["status"]["state"] == "active", silence
