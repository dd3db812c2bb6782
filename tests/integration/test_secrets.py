"""Secrets stay in their box: a live run that uses every kind of secret remediator handles,
then every log line, note, API answer, metric and stored byte is searched for them."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from remediator.store import packing
from tests.conftest import write_rules
from tests.support.payloads import alert, notification
from tests.support.worker import OPERATOR, VIEWER, WorkerProcess, free_port, http

SECRETS = {
    "sink_path": "Tsinkpath0secret1",         # a webhook sink's URL is its credential
    "sink_header": "sinkheader0secret2",      # a sink's own Authorization header
    "slack_path": "Bslackpath0secret3",       # a Slack URL that cannot be reached: logged, spooled
    "url_password": "urlpass0secret4",        # user:pass@ in a step's URL
    "query_token": "querytoken0secret5",      # ?token= in a step's URL
    "literal_header": "literalheader0secret6",  # a header written in the playbook
    "file_header": "fileheader0secret7",      # headers_from: read at call time from a file
    "env_header": "envheader0secret8",        # headers_from: read at call time from the environment
}

RULES = """
playbooks:
  - name: probe-admin
    match: {alertname: AdminDown}
    target: {kind: deployment, namespace: prod, name: admin}
    guards: {cooldown: 1m}
    steps:
      - name: admin_call
        action: http.request
        params:
          url: "http://127.0.0.1:%(port)d/admin/resume?token=%(query_token)s"
          method: POST
          headers: {X-Api-Key: %(literal_header)s, Accept: application/json}
          headers_from:
            Authorization: {file: "%(token_file)s", prefix: "Bearer "}
            X-Admin-Token: {env: ADMIN_TOKEN}
      - name: basic_call
        action: http.request
        params:
          url: "http://ops:%(url_password)s@127.0.0.1:%(port)d/admin/check"
          method: POST
          expect_status: [204]
    escalation: {severity: critical, sinks: [files, hook, slack]}
"""


def test_no_secret_reaches_logs_notes_api_metrics_or_the_store(tmp_path: Path, webhook_receiver):
    token_file = tmp_path / "admin-token"
    token_file.write_text(SECRETS["file_header"] + "\n")
    rules = write_rules(tmp_path / "rules", RULES % {
        **SECRETS, "port": webhook_receiver.port, "token_file": token_file})
    sinks = {
        "hook": {"type": "webhook",
                 "url": f"http://127.0.0.1:{webhook_receiver.port}/hooks/{SECRETS['sink_path']}",
                 "headers": {"Authorization": f"Bearer {SECRETS['sink_header']}"}},
        "slack": {"type": "slack",
                  "url": f"http://127.0.0.1:{free_port()}/services/T1/{SECRETS['slack_path']}"},
    }
    w = WorkerProcess(tmp_path, [str(rules)], mode="live", config={"escalation": {"sinks": sinks}},
                      extra_env={"ADMIN_TOKEN": SECRETS["env_header"],
                                 "REMEDIATOR_ESCALATION_DIR": str(tmp_path / "notes")}).start()
    try:
        assert w.post_alerts(notification(alert("AdminDown", fingerprint="s1")))[0] == 202
        # The secrets were really used: the admin endpoint got every header, the sink its own.
        call = webhook_receiver.wait_for(lambda d: d.path.startswith("/admin/resume"))
        assert call.headers["Authorization"] == f"Bearer {SECRETS['file_header']}"
        assert call.headers["X-Admin-Token"] == SECRETS["env_header"]
        assert call.headers["X-Api-Key"] == SECRETS["literal_header"]
        assert SECRETS["query_token"] in call.path
        call = webhook_receiver.wait_for(lambda d: d.path == "/admin/check")
        assert call.headers["Authorization"].startswith("Basic ")
        note = webhook_receiver.wait_for(lambda d: d.path.startswith("/hooks/"), timeout=20)
        assert note.headers["Authorization"] == f"Bearer {SECRETS['sink_header']}"
        assert note.body["id"] and note.body["outcome"] == "failed"
        deadline = time.monotonic() + 30
        while "not delivered to slack" not in w.logs():
            assert time.monotonic() < deadline, w.logs()
            time.sleep(0.1)
        [decision] = w.executions(alertname="AdminDown")

        outputs = {"log": w.log_path.read_text(errors="replace"),
                   "metrics": http("GET", f"{w.url}/metrics")[1]}
        for path in ("/api/v1/executions?limit=1000", f"/api/v1/executions/{decision['id']}"):
            outputs[f"api {path}"] = str(http("GET", w.url + path, headers=VIEWER)[1])
        outputs["api reject"] = str(http("POST", f"{w.url}/api/v1/executions/{decision['id']}/reject",
                                         b"", OPERATOR)[1])
        outputs.update({f"note {p.name}": p.read_text() for p in (tmp_path / "notes").glob("*")})
        outputs.update({f"sink delivery {d.path}": str(d.body) for d in webhook_receiver.deliveries
                        if d.path.startswith("/hooks/")})
    finally:
        assert w.stop() == 0
    for db in tmp_path.glob("remediator.db*"):  # the store, WAL included
        outputs[f"store {db.name}"] = db.read_bytes().decode("utf-8", "replace")
    with sqlite3.connect(tmp_path / "remediator.db") as conn:  # long bodies are compressed
        for table, sql in (("executions", "SELECT e.body, r.data FROM executions e LEFT JOIN "
                                          "refs r ON r.id = e.ref"),
                           ("steps", "SELECT body, NULL FROM steps"),
                           ("refs", "SELECT data, NULL FROM refs")):
            outputs[f"store {table}"] = "\n".join(
                json.dumps(packing.unpack(b, r)) if isinstance(b, bytes) and table != "refs"
                else b.decode() if isinstance(b, bytes) else b for b, r in conn.execute(sql))
    assert "<redacted>" in outputs["store steps"]  # the bodies were read

    leaks = [(name, where) for name, secret in SECRETS.items()
             for where, text in outputs.items() if secret in text]
    assert leaks == [], leaks
    # ...and the places a secret would have been are there, redacted.
    admin, basic = decision["steps"]
    assert admin["params"]["headers"] == {"X-Api-Key": "<redacted>", "Accept": "application/json"}
    assert admin["params"]["url"].endswith("/admin/resume?token=<redacted>")
    assert admin["outcome"] == "succeeded" and "token=<redacted>" in admin["detail"]
    assert basic["params"]["url"].startswith("http://<redacted>@127.0.0.1:")
    assert basic["outcome"] == "failed" and "http://<redacted>@127.0.0.1" in basic["detail"]
    assert decision["escalation"]["deliveries"]["hook"] == \
        f"delivered: http://127.0.0.1:{webhook_receiver.port}/<redacted>"
    assert decision["escalation"]["deliveries"]["slack"] == "spooled"
    assert any(len(text) > 200 for where, text in outputs.items() if where.startswith("note "))
