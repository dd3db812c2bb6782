"""prometheus.* and alertmanager.* actions against a real Prometheus (scraping a test exporter)
and a real Alertmanager."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest

from remediator.actions.backends import Backends
from remediator.actions.base import ActionContext, check_params
from remediator.actions.registry import ACTIONS
from remediator.config import Config
from remediator.engine.executor import Executor, StepRecord
from tests.support.alertmanager import make_alert, webhook_config
from tests.support.exporter import Exporter
from tests.support.payloads import alert, notification
from tests.support.prometheus import Prometheus, prometheus_config
from tests.support.worker import TOKEN, InProcessWorker, loopback_guards, replay_cli


def run_action(name: str, raw: dict, backends: Backends, attempts: int = 1,
               timeout: float = 30) -> StepRecord:
    action = ACTIONS[name]
    params, problems = check_params(action, raw, rendered=True)
    assert not problems, problems
    ctx = ActionContext(backends=backends, log=logging.getLogger("test"), execution_id="e1")
    record = StepRecord(name="s", action=name, params=params, outcome="planned")

    async def go() -> StepRecord:
        try:
            return await Executor(retry_wait=0.01).run(action, params, ctx, record, timeout, attempts)
        finally:
            await backends.close()
    return asyncio.run(go())


@pytest.fixture(scope="module")
def scraped(tmp_path_factory):
    """One Prometheus scraping one exporter for the module (first scrape takes ~5 s)."""
    exporter = Exporter().start()
    prom = Prometheus(tmp_path_factory.mktemp("prometheus"))
    try:
        prom.start(prometheus_config([exporter.target]))
        prom.wait_for_targets()
        yield prom, exporter
    finally:
        prom.stop()
        exporter.stop()


@pytest.fixture
def prometheus(scraped):
    prom, exporter = scraped
    exporter.set("code_forge_s3_upload_failure_ratio", 0.12, namespace="neural-hive-pipeline")
    prom.wait_for("code_forge_s3_upload_failure_ratio > 0.1", lambda r: bool(r))
    return prom


@pytest.fixture
def exporter(scraped):
    return scraped[1]


def test_query_returns_the_sample_and_its_labels(prometheus):
    rec = run_action("prometheus.query", {"query": "code_forge_s3_upload_failure_ratio"},
                     Backends(prometheus_url=prometheus.url))
    assert rec.outcome == "succeeded"
    assert rec.result["value"] == pytest.approx(0.12)
    assert rec.result["series"][0]["labels"]["namespace"] == "neural-hive-pipeline"


def test_bad_promql_fails_without_retry(prometheus):
    rec = run_action("prometheus.query", {"query": "rate(x[5m"}, Backends(prometheus_url=prometheus.url),
                     attempts=3)
    assert rec.outcome == "failed" and rec.attempts == 1 and "bad_data" in rec.detail


def test_wait_until_sees_the_fix_take_effect(prometheus, exporter):
    # The remediation "works" 2 s into the wait: the ratio drops below 5 %.
    threading.Timer(2.0, lambda: exporter.set("code_forge_s3_upload_failure_ratio", 0.01,
                                              namespace="neural-hive-pipeline")).start()
    started = time.monotonic()
    rec = run_action("prometheus.wait_until",
                     {"query": "code_forge_s3_upload_failure_ratio < 0.05", "timeout": "30s",
                      "interval": "0.5s"}, Backends(prometheus_url=prometheus.url))
    assert rec.outcome == "succeeded", rec.detail
    assert rec.result["met"] is True and rec.result["value"] == pytest.approx(0.01)
    assert rec.result["polls"] > 1 and time.monotonic() - started >= 2


def test_wait_until_times_out_with_the_last_value(prometheus):
    rec = run_action("prometheus.wait_until",
                     {"query": "code_forge_s3_upload_failure_ratio < 0.05", "timeout": "2s",
                      "interval": "0.5s"}, Backends(prometheus_url=prometheus.url))
    assert rec.outcome == "failed" and "condition not met within 2s" in rec.detail
    assert rec.result["met"] is False and rec.result["polls"] >= 3


def test_unreachable_prometheus_is_transient_and_retried():
    rec = run_action("prometheus.query", {"query": "up"}, Backends(prometheus_url="http://127.0.0.1:9"),
                     attempts=3)
    assert rec.outcome == "failed" and rec.attempts == 3 and "unreachable" in rec.detail


def test_silence_created_and_expired_and_alert_status(alertmanager_factory, webhook_receiver):
    am = alertmanager_factory(webhook_config(webhook_receiver.url))
    backends = Backends(alertmanager_url=am.url)
    am.post_alerts([make_alert({"alertname": "API_DOWN", "namespace": "libervia"})])
    status = run_action("alertmanager.alert_status", {"alertname": "API_DOWN",
                                                      "matchers": {"namespace": "libervia"}}, backends)
    assert status.result == {"firing": True, "count": 1}
    other = run_action("alertmanager.alert_status", {"alertname": "API_DOWN",
                                                     "matchers": {"namespace": "other"}}, backends)
    assert other.result["firing"] is False

    created = run_action("alertmanager.silence", {"matchers": {"alertname": "API_DOWN"},
                                                  "duration": "30m", "comment": "restarting"}, backends)
    assert created.outcome == "succeeded"
    [silence] = [s for s in am.silences() if s["id"] == created.result["silence_id"]]
    assert silence["status"]["state"] == "active" and "restarting (execution e1)" in silence["comment"]
    expired = run_action("alertmanager.silence", {"expire_id": created.result["silence_id"]}, backends)
    assert expired.outcome == "succeeded"
    [silence] = [s for s in am.silences() if s["id"] == created.result["silence_id"]]
    assert silence["status"]["state"] == "expired"


def test_alert_status_matches_label_values_with_quotes_and_backslashes(alertmanager_factory,
                                                                       webhook_receiver):
    """Alertmanager's matcher syntax quotes values: a value holding `"` or `\\` is escaped,
    so it matches exactly its own alert (it was refused with a 400, failing the step), and a
    value written to close the quote cannot add a matcher of its own."""
    am = alertmanager_factory(webhook_config(webhook_receiver.url))
    backends = Backends(alertmanager_url=am.url)
    values = ('web", namespace="zzz', 'C:\\tmp\\"x"', "a\nb", 'web", namespace="other')
    am.post_alerts([make_alert({"alertname": "API_DOWN", "deployment": v}) for v in values[:3]])
    for value in values:
        status = run_action("alertmanager.alert_status", {"alertname": "API_DOWN",
                                                          "matchers": {"deployment": value}},
                            backends)
        assert status.outcome == "succeeded", status.detail
        assert status.result == {"firing": value in values[:3], "count": int(value in values[:3])}


def test_silence_needs_matchers_or_an_id():
    _, problems = check_params(ACTIONS["alertmanager.silence"], {}, rendered=True)
    assert problems == [("", "either matchers (to create) or expire_id (to expire) is required")]


def test_promql_str_keeps_a_label_inside_its_string(prometheus, exporter):
    from remediator import templating
    exporter.set("hostile_label_probe", 7, namespace='a"b\\c\nd')
    prometheus.wait_for("hostile_label_probe", lambda r: bool(r))
    query = 'hostile_label_probe{namespace="%s"}'

    def value(labels: dict, expr: str) -> object:
        rendered = templating.render(query % expr, {"labels": labels})
        rec = run_action("prometheus.query", {"query": rendered},
                         Backends(prometheus_url=prometheus.url))
        assert rec.outcome == "succeeded", rec.detail
        return rec.result["value"]

    attack = {"namespace": 'x"} or vector(1) or up{namespace="'}
    assert value(attack, "{{ labels.namespace }}") == 1.0  # spliced, the label rewrites the query
    assert value(attack, "{{ labels.namespace | promql_str }}") is None  # escaped: no such series
    assert value({"namespace": 'a"b\\c\nd'}, "{{ labels.namespace | promql_str }}") == 7.0


def test_a_proxy_error_page_instead_of_prometheus_is_a_transient_error():
    from tests.support.procs import answering, serving

    page = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
    with serving(answering(502, "text/html", page)) as port:
        rec = run_action("prometheus.query", {"query": "up"},
                         Backends(prometheus_url=f"http://127.0.0.1:{port}"), attempts=2)
    assert rec.outcome == "failed" and rec.attempts == 2  # transient: retried
    assert "answered 502 without JSON" in rec.detail and "502 Bad Gateway" in rec.detail


SILENCE_RULES = """
playbooks:
  - name: quiet
    match: {alertname: API_DOWN}
    target: {kind: service, namespace: libervia, name: api}
    guards: {cooldown: 1m}
    steps:
      - name: silence
        action: alertmanager.silence
        params: {matchers: %s, duration: 30m}
"""


def test_a_silence_covers_only_the_alert_and_ends_within_a_day(tmp_path):
    payload = notification(alert("API_DOWN", namespace="libervia"))
    wide = replay_cli(tmp_path, SILENCE_RULES % "{alertname: API_DOWN}", payload)
    [step] = wide["steps"]
    assert step["outcome"] == "failed" and "does not pin namespace" in step["detail"]
    own = replay_cli(tmp_path, SILENCE_RULES % "{alertname: API_DOWN, namespace: "
                                               '"{{ labels.namespace }}"}', payload)
    assert own["steps"][0]["outcome"] == "planned", own["steps"][0]["detail"]
    _, problems = check_params(ACTIONS["alertmanager.silence"],
                               {"matchers": {"alertname": "A"}, "duration": "48h"}, rendered=True)
    assert problems and "longer than a silence may last" in problems[0][1]


SILENCE_AFTER_STATUS = """
playbooks:
  - name: quiet
    match: {alertname: API_DOWN}
    target: {kind: service, namespace: libervia, name: api}
    guards: {cooldown: 1m}
    steps:
      - name: status
        action: alertmanager.alert_status
        params: {alertname: API_DOWN}
      - name: silence
        action: alertmanager.silence
        params:
          matchers: %s
          %s
"""
# Another parameter of the silence reads the status step's result: rendered as its
# placeholder, or not at all in a plan (a condition on it is only decided at run time).
FROM_RESULT = ['comment: "{{ steps.status.result.count }} firing"',
               "duration: \"{{ '30m' if steps.status.result.firing else '10m' }}\""]


@pytest.mark.parametrize("from_result", FROM_RESULT)
def test_a_plan_refuses_a_wide_silence_whose_other_parameter_reads_a_result(
        tmp_path, alertmanager_factory, webhook_receiver, from_result):
    """A silence that does not pin the alert's labels is refused by the live run whatever the
    earlier step returns; its plan refused it only while no other parameter read that result
    (it was 'planned with parameters from earlier results'). The plan calls nobody."""
    am = alertmanager_factory(webhook_config(webhook_receiver.url))
    payload = notification(alert("API_DOWN", namespace="libervia"))
    am.post_alerts([make_alert({"alertname": "API_DOWN", "namespace": "libervia"})])
    wide = SILENCE_AFTER_STATUS % ("{alertname: API_DOWN}", from_result)
    rules = tmp_path / "live"
    rules.mkdir()
    (rules / "rules.yaml").write_text(wide)
    cfg = Config(rules=[str(rules / "rules.yaml")], store=f"sqlite:///{tmp_path}/w.db",
                 webhook_token=TOKEN, mode="live", alertmanager_url=am.url,
                 escalation_dir=str(tmp_path / "notes"), guards=loopback_guards())
    w = InProcessWorker(cfg).start()
    try:
        assert w.post_alerts(payload)[0] == 202
        [live] = w.wait_executions(1)
        live = w.call(w.service.store.get_execution(live["id"]))
    finally:
        w.stop()
    status, silence = live["steps"]
    assert status["outcome"] == "succeeded" and silence["outcome"] == "failed", live
    assert "does not pin namespace" in silence["detail"]
    assert am.silences() == []

    [status, silence] = replay_cli(tmp_path, wide, payload)["steps"]
    assert (status["outcome"], silence["outcome"]) == ("planned", "failed"), silence
    assert silence["detail"] == live["steps"][1]["detail"]
    # Its matchers pinned from the labels, the silence is planned: only the parameter that
    # reads the result waits for the run.
    own = SILENCE_AFTER_STATUS % ('{alertname: API_DOWN, namespace: "{{ labels.namespace }}"}',
                                  from_result)
    [_, silence] = replay_cli(tmp_path, own, payload)["steps"]
    assert silence["outcome"] == "planned", silence
    assert am.silences() == []


def test_an_error_page_quoting_the_credential_is_filtered(tmp_path):
    """A Prometheus behind a proxy answered a page quoting the request's own header
    (`Authorization was Basic <base64 of user:pass>`): the step's detail showed it."""
    import base64
    from http.server import BaseHTTPRequestHandler

    from tests.conftest import write_rules
    from tests.support.procs import serve_http
    from tests.support.worker import WorkerProcess

    class Echo(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            page = b"boom: Authorization was " + self.headers.get("Authorization", "").encode()
            self.send_response(500)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args: object) -> None:
            pass

    server, port = serve_http(Echo)
    rules = write_rules(tmp_path / "rules", """
playbooks:
  - name: probe
    match: {alertname: A}
    steps:
      - {name: q, action: prometheus.query, params: {query: up}}
""")
    w = WorkerProcess(tmp_path, [str(rules)], mode="live", config={
        "prometheus": {"url": f"http://promuser:PROMPASS-zz9-secret@127.0.0.1:{port}"}})
    w.start()
    try:
        assert w.post_alerts(notification(alert("A")))[0] == 202
        decision = w.decided()[0]
    finally:
        w.stop()
        server.shutdown()
        server.server_close()
    detail = decision["steps"][0]["detail"]
    assert "answered 500 without JSON" in detail and "Authorization was" in detail, detail
    encoded = base64.b64encode(b"promuser:PROMPASS-zz9-secret").decode()
    assert encoded.rstrip("=") not in detail and "PROMPASS" not in detail, detail


@pytest.mark.parametrize("answer", [b'{"ok":true}', b'{"status":"success","data":{"x":1}}',
                                    b'{"status":"success","data":{"resultType":"vector",'
                                    b'"result":[{"metric":{}}]}}'])
def test_an_answer_that_is_not_a_query_result_says_what_came(answer):
    """A URL that is not Prometheus's answering 200 with other JSON: `failed: None: None` or
    an internal error said nothing; the step says what answered, bounded, not retried."""
    from tests.support.procs import answering, serving

    with serving(answering(200, "application/json", answer)) as port:
        rec = run_action("prometheus.query", {"query": "up"},
                         Backends(prometheus_url=f"http://127.0.0.1:{port}"), attempts=2)
    assert rec.outcome == "failed" and rec.attempts == 1, rec
    assert rec.detail == (f"Prometheus at http://127.0.0.1:{port}/api/v1/query answered 200 with "
                          "JSON that is not a query's answer (is prometheus_url Prometheus?): "
                          f"{answer.decode()[:120]!r}"), rec.detail
