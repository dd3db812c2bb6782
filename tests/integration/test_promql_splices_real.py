"""An alert's value in a PromQL range, against a real Prometheus and a live `serve`: a label
`promql_duration` refuses ends its decision with a clear reason and a note, and Prometheus
receives no query at all (its own count of query requests says so); the same playbooks with
a real duration query it. The precondition's case, and a label the alert lacks, were an
internal error (a traceback in the log) before: they are a blocked, escalated decision."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import write_rules
from tests.support.payloads import alert, notification
from tests.support.procs import http_request
from tests.support.prometheus import prometheus_config
from tests.support.worker import WorkerProcess

RULES = """
playbooks:
  - name: windowed-precondition
    match: {alertname: Windowed}
    guards:
      precondition:
        promql: 'absent_over_time(probe_missing[{{ labels.window | promql_duration }}])'
    steps:
      - name: look
        action: prometheus.query
        params: {query: 'absent_over_time(probe_missing[{{ labels.window | promql_duration }}])'}
  - name: windowed-query
    match: {alertname: WindowedQuery}
    steps:
      - name: look
        action: prometheus.query
        params: {query: 'absent_over_time(probe_missing[{{ labels.window | promql_duration }}])'}
"""
# Spliced as it came, this parses and is true: `...[5m]) or vector(1) or absent_over_time(...`
HOSTILE = "5m]) or vector(1) or absent_over_time(probe_missing[5m"


def query_requests(prometheus_url: str) -> float:
    """How many requests Prometheus' query endpoint has received, refused ones included."""
    status, body = http_request("GET", f"{prometheus_url}/metrics", timeout=10)
    assert status == 200
    return sum(float(line.rsplit(" ", 1)[1]) for line in body.decode().splitlines()
               if line.startswith("prometheus_http_requests_total{")
               and 'handler="/api/v1/query"' in line)


def queries_run(log: Path) -> list[str]:
    """The queries Prometheus evaluated (its query log): one it could not parse is not
    there, but is counted by `query_requests`."""
    if not log.exists():
        return []
    return [json.loads(line)["params"]["query"] for line in log.read_text().splitlines()]


def decide(w: WorkerProcess, alertname: str, fingerprint: str, **labels: str) -> dict[str, Any]:
    return w.decision(notification(alert(alertname, fingerprint=fingerprint, **labels)), fingerprint)


def test_a_refused_duration_sends_no_query_and_ends_the_decision_clearly(
        tmp_path: Path, prometheus_factory) -> None:
    log = tmp_path / "queries.log"
    config = yaml.safe_load(prometheus_config())
    config["global"]["query_log_file"] = str(log)
    prom = prometheus_factory(yaml.safe_dump(config))
    rules = write_rules(tmp_path / "rules", RULES)
    w = WorkerProcess(tmp_path, [str(rules)], mode="live",
                      config={"prometheus": {"url": prom.url}}).start()
    try:
        before, logged = query_requests(prom.url), len(queries_run(log))
        blocked = decide(w, "Windowed", "hostile-precondition", window=HOSTILE)
        assert blocked["outcome"] == "blocked", blocked
        assert blocked["reason"].startswith(
            "precondition_unknown: precondition not checked: its query cannot be made from this "
            f"alert (promql_duration: {HOSTILE!r} is not a Prometheus duration"), blocked
        assert "no query was sent" in blocked["reason"] and blocked.get("escalation"), blocked
        assert not blocked.get("steps"), blocked

        failed = decide(w, "WindowedQuery", "hostile-step", window=HOSTILE)
        assert failed["outcome"] == "failed", failed
        [step] = failed["steps"]
        assert step["outcome"] == "failed" and step["detail"].startswith(
            f"promql_duration: {HOSTILE!r} is not a Prometheus duration"), step
        assert failed.get("escalation"), failed

        missing = decide(w, "Windowed", "no-window")  # was: internal error, with a traceback
        assert missing["outcome"] == "blocked", missing
        assert "alert has no label 'window'" in missing["reason"], missing
        assert "failed unexpectedly" not in w.logs()

        # Not one of those queries reached Prometheus: what did is the notes' probe
        # (`graphs.probe`: is there a graph to draw?), which asks `1`.
        ran = queries_run(log)[logged:]
        assert set(ran) <= {"1"}, ran
        assert query_requests(prom.url) == before + len(ran)

        fine = decide(w, "Windowed", "a-real-window", window="1h30m")
        assert fine["outcome"] == "succeeded", fine
        assert fine["steps"][0]["params"]["query"] == "absent_over_time(probe_missing[1h30m])"
        ran = queries_run(log)[logged:]  # the precondition, then the step
        assert [q for q in ran if q != "1"] == ["absent_over_time(probe_missing[1h30m])"] * 2
        assert query_requests(prom.url) == before + len(ran)
    finally:
        w.stop()


def test_serve_refuses_a_rule_set_splicing_a_label_into_a_range(tmp_path: Path) -> None:
    """Outside a string, an unchecked label was a warning: serve loaded it, and the label
    rewrote the query."""
    rules = write_rules(tmp_path / "rules", RULES.replace(" | promql_duration", "", 1))
    w = WorkerProcess(tmp_path, [str(rules)], mode="live")
    done = subprocess.run(w.args, env=w.env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "splices an alert's value into PromQL outside a string" in done.stderr + done.stdout
