"""Everything a `serve` process recorded of its runs, as text to search for a secret: its log
file, the API's answers, the notes it wrote, and the store's decisions and journal (long
bodies are stored compressed: unpacked here)."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from remediator.store import packing
from tests.support.payloads import alert, notification
from tests.support.worker import VIEWER, WorkerProcess, http


def run_live(tmp_path: Path, rules: str, alertname: str, config: dict,
             labels: dict[str, str] | None = None) -> tuple[dict, dict[str, str]]:
    """`rules` in a live `serve`, one `alertname` alert sent: its final decision, and
    everything the process recorded of it (`everything`)."""
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    (rules_dir / "rules.yaml").write_text(rules)
    notes = tmp_path / "notes"
    w = WorkerProcess(tmp_path, [str(rules_dir)], mode="live", config=config,
                      extra_env={"REMEDIATOR_ESCALATION_DIR": str(notes)}).start()
    try:
        sent = alert(alertname, fingerprint="x1", **(labels or {}))
        assert w.post_alerts(notification(sent))[0] == 202
        decision = final_decision(w, alertname)
        outputs = everything(w, decision, notes, tmp_path / "remediator.db")
    finally:
        assert w.stop() == 0
    return decision, outputs


def final_decision(w: WorkerProcess, alertname: str, timeout: float = 120) -> dict:
    """The run's final record once its note is delivered (the record is written after)."""
    deadline = time.monotonic() + timeout
    while not (done := [e for e in w.executions(alertname=alertname)
                        if e["outcome"] != "running" and e["escalation"] is not None]):
        assert time.monotonic() < deadline, (w.executions(), w.logs())
        time.sleep(0.1)
    return done[0]


def everything(w: WorkerProcess, decision: dict, notes: Path, store: Path) -> dict[str, str]:
    """Where each text came from -> the text (read while `w` runs, the store after)."""
    outputs = {"log": w.log_path.read_text(errors="replace")}
    for path in ("/api/v1/executions?limit=1000", f"/api/v1/executions/{decision['id']}"):
        outputs[f"api {path}"] = json.dumps(http("GET", w.url + path, headers=VIEWER)[1])
    outputs.update({f"note {p.name}": p.read_text() for p in notes.glob("*.md")})
    with sqlite3.connect(store) as conn:
        for table, sql in (("executions", "SELECT e.body, r.data FROM executions e LEFT JOIN "
                                          "refs r ON r.id = e.ref"),
                           ("steps", "SELECT body, NULL FROM steps")):
            outputs[f"store {table}"] = "\n".join(
                json.dumps(packing.unpack(b, r)) for b, r in conn.execute(sql))
    return outputs
