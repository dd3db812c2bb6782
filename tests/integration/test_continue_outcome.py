"""`on_failure: continue` lets the next step run; it does not make a failed step succeed. A
real `replay --mode live` with every backend down: a run whose change failed, or whose every
step failed, ends `escalated` with a note, never `succeeded`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import new_store, write_rules
from tests.support.payloads import alert, notification
from tests.support.procs import free_port

RULES = """
playbooks:
  - name: evidence
    match: {alertname: Evidence}
    steps:
      - {name: prom, action: prometheus.query, params: {query: up}, on_failure: continue,
         retries: 1}
      - {name: am, action: alertmanager.alert_status, params: {alertname: Evidence},
         on_failure: continue, retries: 1}
      - {name: health, action: http.request, params: {url: "http://127.0.0.1:PORT/health"},
         on_failure: continue, retries: 1}
      - {name: logs, action: docker.logs, params: {project: p, service: s},
         on_failure: continue, retries: 1}
  - name: change
    match: {alertname: Change}
    target: {kind: deployment, namespace: prod, name: web}
    guards: {cooldown: 1m}
    steps:
      - {name: note, action: log, params: {message: before}}
      - {name: restart, action: http.request, on_failure: continue, retries: 1,
         params: {url: "http://127.0.0.1:PORT/restart", method: POST}}
      - {name: after, action: log, params: {message: after}}
  - name: partial
    match: {alertname: Partial}
    steps:
      - {name: note, action: log, params: {message: gathered}}
      - {name: prom, action: prometheus.query, params: {query: up}, on_failure: continue,
         retries: 1}
"""


def test_continue_past_every_failure_or_a_failed_change_escalates(tmp_path: Path) -> None:
    closed = free_port()
    rules = write_rules(tmp_path / "rules", RULES.replace("PORT", str(closed)))
    (tmp_path / "config.yaml").write_text(
        f"prometheus_url: http://127.0.0.1:{closed}\nalertmanager_url: http://127.0.0.1:{closed}\n"
        f"guards: {{http: {{allow: ['127.0.0.1']}}, compose_projects: {{allow: [p]}}}}\n"
        f"escalation: {{dir: {tmp_path / 'notes'}}}\n")
    payload = tmp_path / "payload.json"
    payload.write_text(json.dumps(notification(alert("Evidence", fingerprint="e"),
                                               alert("Change", fingerprint="c"),
                                               alert("Partial", fingerprint="p"))))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REMEDIATOR_", "DOCKER_"))}
    env["DOCKER_HOST"] = f"unix://{tmp_path}/no-docker.sock"
    done = subprocess.run(
        [sys.executable, "-m", "remediator.cli", "replay", str(payload), "--rules", str(rules),
         "--config", str(tmp_path / "config.yaml"), "--mode", "live", "--format", "json",
         "--store", new_store(f"sqlite:///{tmp_path / 'r.db'}")],
        capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    found = {d["playbook"]: d for d in json.loads(done.stdout)}
    evidence, change, partial = found["evidence"], found["change"], found["partial"]
    assert [s["outcome"] for s in evidence["steps"]] == ["failed"] * 4
    assert evidence["outcome"] == "escalated", evidence
    assert evidence["reason"].startswith(
        "no step succeeded (each failed under on_failure: continue); step 'logs' failed: ")
    assert [s["outcome"] for s in change["steps"]] == ["succeeded", "failed", "succeeded"]
    assert change["outcome"] == "escalated", change
    assert change["reason"].startswith("change 'restart' failed and the run went on "
                                       "(on_failure: continue); step 'restart' failed: ")
    # best-effort evidence, some of it gathered: a success, the gap named in its reason
    assert partial["outcome"] == "succeeded", partial
    assert partial["reason"].startswith("step 'prom' failed: ")
    notes = sorted(p.read_text() for p in (tmp_path / "notes").iterdir())
    assert len(notes) == 2 and all("on_failure: continue" in n for n in notes)
