"""Hostile alert input over real HTTP: what an attacker who can push alerts can and cannot do."""

import json
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from remediator.actions.base import MAX_JSON_DEPTH, Action, ActionContext, Param
from remediator.actions.registry import ACTIONS
from tests.support.payloads import alert, notification
from tests.support.procs import serve_http
from tests.support.worker import OPERATOR, VIEWER, http

NODE_RULES = r"""
playbooks:
  - name: node-exporter
    match:
      alertname: NodeDown
      matchers: ['instance=~"(\\w+\\.?)+:9100"']
    steps:
      - name: note
        action: log
        params: {message: "node {{ labels.instance }}"}
"""


def test_a_hostile_label_cannot_stall_the_server_through_a_regex_matcher(worker_factory):
    # With backtracking regexes this label costs 2**28 steps on the event loop (tens of
    # seconds, doubling per character); RE2 matches in linear time.
    w = worker_factory(NODE_RULES)
    hostile = "a" * 28 + "!"
    payload = notification(alert("NodeDown", instance=hostile, fingerprint="evil"),
                           alert("NodeDown", instance="node1.example:9100", fingerprint="good"))
    assert w.post_alerts(payload)[0] == 202
    for _ in range(3):  # while the dispatcher matches, health checks are answered
        assert http("GET", f"{w.url}/-/healthy", timeout=5)[0] == 200
    outcomes = {d["fingerprint"]: d["outcome"] for d in w.wait_executions(2)}
    assert outcomes == {"evil": "no_match", "good": "planned"}


PROBE_RULES = """
playbooks:
  - name: probe
    match: {alertname: ServiceDown}
    steps:
      - name: health
        action: http.request
        params:
          url: "http://{{ labels.service }}.prod.svc/v1/{{ labels.path }}?env={{ labels.env }}"
          allow_hosts: [web.prod.svc]
"""


def test_a_label_cannot_choose_the_host_or_leave_its_path_segment(worker_factory):
    w = worker_factory(PROBE_RULES)
    ssrf = "169.254.169.254/latest/meta-data/iam/?"
    payload = notification(
        alert("ServiceDown", service=ssrf, path="x", env="prod", fingerprint="ssrf"),
        alert("ServiceDown", service="web", path="../admin", env="a&b=c", fingerprint="path"),
        alert("ServiceDown", service="web", path="..", env="prod", fingerprint="dots"),
        # empty: `/v1/` would name the collection, not one of its items
        alert("ServiceDown", service="web", path="", env="prod", fingerprint="empty"))
    assert w.post_alerts(payload)[0] == 202
    decisions = {d["fingerprint"]: d for d in w.wait_executions(4)}
    assert decisions["empty"]["outcome"] == "failed"
    assert "'' cannot be a value in a URL" in decisions["empty"]["reason"]
    assert decisions["ssrf"]["outcome"] == "failed"
    assert "is not in allow_hosts (web.prod.svc)" in decisions["ssrf"]["reason"]
    assert decisions["dots"]["outcome"] == "failed" and "'..' cannot be" in decisions["dots"]["reason"]
    [step] = decisions["path"]["steps"]  # dry-run: planned with the encoded URL
    assert step["params"]["url"] == "http://web.prod.svc/v1/..%2Fadmin?env=a%26b%3Dc"


def test_a_url_too_long_is_refused_for_its_length(worker_factory):
    """A label of 3 000 slashes (9 000 characters percent-encoded) made the URL's refusal
    say "without spaces or control characters", which it had none of."""
    w = worker_factory(PROBE_RULES)
    assert w.post_alerts(notification(alert("ServiceDown", service="web", path="/" * 3000,
                                            env="prod")))[0] == 202
    [decision] = w.wait_executions(1)
    assert decision["outcome"] == "failed", decision
    assert "at most 8192 characters, not 90" in decision["reason"], decision["reason"]
    assert "spaces" not in decision["reason"]


HOLD_RULES = """
playbooks:
  - name: hold
    match: {alertname: Hold}
    steps:
      - name: hold
        action: wait
        params: {duration: "{{ labels.hold }}"}
  - name: sample
    match: {alertname: Sample}
    steps:
      - name: sample
        action: s3.sample_integrity
        params: {bucket: certs, max_mismatch_rate: "{{ labels.rate }}"}
"""


def test_a_label_cannot_make_a_number_nan_or_infinite(worker_factory):
    # NaN passes every `minimum` (its comparisons are all false); infinity is a wait that
    # never ends. A label spells either, also as digits past a float's range.
    w = worker_factory(HOLD_RULES)
    holds = {"nan": "nan", "inf": "inf", "digits": "9" * 400 + "s", "ok": "30s"}
    rates = {"rate-nan": "nan", "rate-inf": "inf", "rate-ok": "0.01"}
    payload = notification(*(alert("Hold", hold=v, fingerprint=k) for k, v in holds.items()),
                           *(alert("Sample", rate=v, fingerprint=k) for k, v in rates.items()))
    assert w.post_alerts(payload)[0] == 202
    decisions = {d["fingerprint"]: d for d in w.wait_executions(len(holds) + len(rates))}
    for name in ("rate-nan", "rate-inf"):
        assert decisions[name]["outcome"] == "failed"
        assert f"must be a finite number, got {rates[name]}" in decisions[name]["reason"]
    assert decisions["rate-ok"]["outcome"] == "planned"
    for name in ("nan", "inf"):
        assert decisions[name]["outcome"] == "failed"
        assert "invalid duration" in decisions[name]["reason"]
    assert decisions["digits"]["outcome"] == "failed"
    assert "must be a finite duration, got inf" in decisions["digits"]["reason"]
    assert decisions["ok"]["outcome"] == "planned"
    assert decisions["ok"]["steps"][0]["params"]["duration"] == 30.0


def test_bodies_python_cannot_hold_are_400_naming_the_path(worker_factory):
    w = worker_factory()
    good = notification(alert("DemoDown", namespace="demo", deployment="web", fingerprint="ok"))
    good["commonLabels"] = {"alertname": "DemoDown"}
    huge_int = json.dumps(good).replace('"truncatedAlerts": 0', '"truncatedAlerts": ' + "9" * 5000)
    huge_count = json.dumps(good).replace('"truncatedAlerts": 0', '"truncatedAlerts": ' + "9" * 400)
    surrogate_value = json.dumps(good).replace('"deployment": "web"', '"deployment": "\\ud800"')
    surrogate_name = json.dumps(good).replace('"deployment": "web"', '"\\udfff": "web"')
    for body, message in ((huge_int, "invalid JSON: Exceeds the limit (4300 digits)"),
                          (huge_count, "$.truncatedAlerts: must be an integer from 0"),
                          (surrogate_value, "$.alerts[0].labels.deployment: contains a lone"),
                          (surrogate_name, "$.alerts[0].labels (a name): contains a lone")):
        status, answer = w.post_alerts(body.encode())
        assert (status, answer["error"].startswith(message)) == (400, True), answer
    assert w.post_alerts(good)[0] == 202  # nothing valid lost
    assert [d["fingerprint"] for d in w.wait_executions(1)] == ["ok"]


def test_a_full_group_of_large_alerts_fits_the_default_body_limit(worker_factory):
    # Alertmanager sends at most max_alerts (1000 shipped) alerts per notification and does
    # not retry a 413: with the default max_body_bytes a full group of large alerts (4 KiB of
    # labels and annotations each) is accepted whole. The old 1 MiB limit refused it.
    w = worker_factory()
    alerts = [alert("Unrelated", fingerprint=f"big{i}", pod=f"web-{i}", namespace="prod",
                    annotations={"description": "d" * 4000, "runbook_url": "https://r.example/x"})
              for i in range(1000)]
    payload = notification(*alerts)
    assert len(json.dumps(payload)) > 4 << 20  # four times the old limit
    assert w.post_alerts(payload) == (202, {"accepted": 1000, "duplicates": 0})
    oversized = json.dumps(payload).encode() + b" " * (w.config.max_body_bytes)
    assert w.post_alerts(oversized)[0] == 413
    metrics = http("GET", f"{w.url}/metrics")[1]
    assert 'remediator_webhook_requests_total{code="413"} 1.0' in metrics


def test_alerts_alertmanager_left_out_are_counted(worker_factory):
    w = worker_factory()
    payload = notification(alert("Unrelated", fingerprint="t1"))
    payload["truncatedAlerts"] = 250
    assert w.post_alerts(payload)[0] == 202
    assert "remediator_alerts_truncated_total 250.0" in http("GET", f"{w.url}/metrics")[1]


DEEP = 500  # levels: encoding a step record this deep exhausts the interpreter's stack


class _DeepJSON(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = ("[" * DEEP + "]" * DEEP).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


DEEP_RULES = """
playbooks:
  - name: probe
    match: {alertname: ServiceDown}
    steps:
      - name: health
        action: %s
        params: {url: "%s"}
"""


def _one_final_decision(w):
    w.post_alerts(notification(alert("ServiceDown", fingerprint="deep")))
    [decision] = w.wait_executions(1)
    stored = w.call(w.service.store.get_execution(decision["id"]))
    assert [s["outcome"] for s in stored["steps"]] == ["failed"]  # none left `running`
    assert "failed at step 'health'" in stored["escalation"]["note"]
    return stored


def test_a_reply_nested_too_deep_fails_its_step_saying_why(worker_factory):
    server, port = serve_http(_DeepJSON)
    try:
        w = worker_factory(DEEP_RULES % ("http.request", f"http://127.0.0.1:{port}/health"),
                           mode="live")
        stored = _one_final_decision(w)
    finally:
        server.shutdown()
        server.server_close()
    assert stored["outcome"] == "failed" and "internal error" not in stored["reason"]
    [step] = stored["steps"]
    assert f"reply refused: JSON is nested deeper than {MAX_JSON_DEPTH} levels" in step["detail"]
    assert step["result"]["status"] == 200 and step["result"]["json"] is None


class _DeepResult(Action):
    """A plugin's bug: a result no record can hold (not parsed through `parse_json`)."""
    name = "test.deep_result"
    summary = "returns a result nested too deep to record"
    params = {"url": Param("string", required=True)}

    def describe(self, params: dict) -> str:
        return "return a deep result"

    async def run(self, params: dict, ctx: ActionContext) -> dict:
        deep: list = []
        for _ in range(DEEP * 4):
            deep = [deep]
        return {"deep": deep}


def test_an_internal_error_mid_step_fails_that_step_and_names_it(worker_factory, monkeypatch):
    monkeypatch.setitem(ACTIONS, _DeepResult.name, _DeepResult())
    w = worker_factory(DEEP_RULES % (_DeepResult.name, "unused"), mode="live")
    stored = _one_final_decision(w)
    assert stored["outcome"] == "failed"
    assert stored["reason"].startswith("step 'health' failed: internal error: RecursionError")
    assert "internal error while running or recording it" in stored["steps"][0]["detail"]


def test_a_label_cannot_stall_the_server_through_redaction(worker_factory):
    # Every answer, note and log line is redacted, labels included; user info in a URL is
    # found by a scheme at a word's start. With `a-a-a-…` before a `://x@` Python's regex
    # tried every dash-separated word as a scheme's start and read on to the word's end each
    # time: a label's length squared (8 KiB: ~0.2 s), on the event loop, for each label of
    # each decision an API answer or a note showed. RE2 reads it once.
    w = worker_factory()
    slow = "a-" * 4000 + " ftp://user:secret@example"
    labels = {f"l{i}": slow for i in range(300)}
    assert w.post_alerts(notification(alert("Nothing", fingerprint="dashes", **labels)))[0] == 202
    [decision] = w.wait_executions(1)
    status, shown = http("GET", f"{w.url}/api/v1/executions/{decision['id']}", headers=VIEWER,
                         timeout=30)
    assert status == 200 and "secret" not in json.dumps(shown)
    assert shown["alert"]["labels"]["l0"] == "a-" * 4000 + " ftp://<redacted>@example"
    assert http("GET", f"{w.url}/-/healthy", timeout=5)[0] == 200


LOGS_RULES = """
playbooks:
  - name: tenant-logs
    match: {alertname: A}
    steps:
      - name: raw
        action: kubernetes.logs
        params: {namespace: shop, selector: app=web, grep: "tenant={{ labels.tenant }}"}
"""
INJECTABLE = LOGS_RULES + """
  - name: by-job
    match: {alertname: B}
    steps:
      - name: up
        action: prometheus.query
        params: {query: 'up{job="{{ labels.job }}"}'}
"""


def test_a_label_cannot_rewrite_a_playbooks_promql_and_rule_warnings_are_logged(
        worker_factory, caplog):
    """`job='x"} or vector(1) or up{job="'` ran `up{job="x"} or vector(1) or up{job=""}`: the
    unescaped splice was a lint warning only, which serve loaded and never logged."""
    caplog.set_level("WARNING", logger="remediator.service")
    w = worker_factory(LOGS_RULES)
    logged = [r.getMessage() for r in caplog.records if r.name == "remediator.service"]
    assert any("warning: kubernetes.logs: grep" in m for m in logged), logged
    rules_file = next(iter(w.config.rules))
    (Path(rules_file) / "rules.yaml").write_text(INJECTABLE)
    status, body = http("POST", f"{w.url}/-/reload", headers=OPERATOR)
    assert status == 400, body
    assert any("splices an alert's value into PromQL" in p and ": error: " in p
               for p in body["problems"]), body
    caplog.clear()
    (Path(rules_file) / "rules.yaml").write_text(LOGS_RULES)
    assert http("POST", f"{w.url}/-/reload", headers=OPERATOR)[0] == 200
    assert any("warning: kubernetes.logs: grep" in r.getMessage() for r in caplog.records)
