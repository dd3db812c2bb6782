"""POST /alerts over real HTTP: acknowledgement, idempotency, bad input, and the API around it."""

import gzip
import hashlib
import json
import re
import resource
import zlib
from dataclasses import replace

from remediator.guards import GuardSettings
from tests.conftest import NO_MATCH_RULES, write_rules
from tests.support.payloads import alert, notification
from tests.support.worker import OPERATOR, TOKEN, VIEWER, WorkerProcess, http, loopback_guards


def test_alert_is_acknowledged_stored_and_turned_into_one_decision(worker_factory):
    w = worker_factory()
    payload = notification(alert("DemoDown", namespace="demo", deployment="web", fingerprint="a1"))
    assert w.post_alerts(payload) == (202, {"accepted": 1, "duplicates": 0})
    [decision] = w.wait_executions(1)
    assert decision["playbook"] == "demo-restart"
    assert decision["outcome"] == "planned"  # dry-run by default
    assert decision["target"] == "demo/deployment/web"
    assert decision["steps"][0]["params"]["message"] == "remediating web in demo"
    status, body = http("GET", f"{w.url}/api/v1/executions/{decision['id']}", headers=VIEWER)
    assert status == 200 and body["id"] == decision["id"]


def test_redelivery_and_ha_duplicates_never_start_a_second_execution(worker_factory):
    w = worker_factory()
    payload = notification(alert("DemoDown", namespace="demo", deployment="web", fingerprint="a1"))
    assert w.post_alerts(payload)[1] == {"accepted": 1, "duplicates": 0}
    assert w.post_alerts(payload)[1] == {"accepted": 0, "duplicates": 1}
    twice = notification(*payload["alerts"], *payload["alerts"])
    assert w.post_alerts(twice)[1] == {"accepted": 0, "duplicates": 2}
    w.wait_executions(1)
    assert len(w.wait_executions(2, timeout=0.5)) == 1
    metrics = http("GET", f"{w.url}/metrics")[1]
    assert "remediator_alerts_duplicate_total 3.0" in metrics


def test_resolution_is_a_separate_decision(worker_factory):
    w = worker_factory()
    w.post_alerts(notification(alert("DemoDown", namespace="demo", deployment="web", fingerprint="a1")))
    w.post_alerts(notification(alert("DemoDown", status="resolved", namespace="demo",
                                     deployment="web", fingerprint="a1")))
    outcomes = sorted(d["outcome"] for d in w.wait_executions(2))
    assert outcomes == ["planned", "resolved"]


def test_bad_requests_get_a_clear_4xx_and_the_server_keeps_serving(worker_factory):
    w = worker_factory(max_body_bytes=64 * 1024)
    url = f"{w.url}/alerts"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    cases = [
        (b"{not json", auth, 400, "invalid JSON"),
        (b"\xff\xfe\x00", auth, 400, "UTF-8"),
        (json.dumps({"version": "4"}).encode(), auth, 400, "$.alerts: required"),
        (json.dumps({"version": "2", "alerts": []}).encode(), auth, 400, "unsupported webhook version"),
        (json.dumps({"version": "4", "alerts": [{"status": 1}]}).encode(), auth, 400, "status"),
        # the value echoed as the JSON sent, not as Python shows it (None)
        (b'{"version":"4","status":"firing","alerts":[{"labels":{}}]}', auth, 400,
         '$.alerts[0].status: must be "firing" or "resolved", got null'),
        (b"x" * (65 * 1024), auth, 413, "exceeds"),
        (b"{}", {}, 401, "credentials"),
        (b"{}", {"Authorization": "Bearer wrong"}, 401, "credentials"),
    ]
    for body, headers, status, message in cases:
        got, answer = http("POST", url, body, headers)
        assert (got, message in answer["error"]) == (status, True), (body[:40], answer)
    got, answer = http("POST", url, b"a=b", {**auth, "Content-Type": "application/x-www-form-urlencoded"})
    assert got == 415 and "application/json" in answer["error"]
    # A body its Content-Encoding cannot decode: a 400 that says so (it was a 500).
    gzipped = {**auth, "Content-Encoding": "gzip"}
    got, answer = http("POST", url, b"{}", gzipped)
    assert got == 400 and "content-encoding: gzip" in answer["error"], answer
    empty = json.dumps({"version": "4", "alerts": []}).encode()
    assert http("POST", url, gzip.compress(empty), gzipped)[0] == 202
    # A console form takes plain bodies only (no browser sends another).
    got, answer = http("POST", f"{w.url}/ui/login", b"user=a&password=b", {
        **gzipped, "Content-Type": "application/x-www-form-urlencoded"})
    assert (got, answer) == (415, {"error": "Content-Encoding 'gzip' is not accepted here; "
                                            "send the body as one of: identity"}), answer
    # Nothing valid was lost: a good alert after all that still goes through.
    good = notification(alert("DemoDown", namespace="demo", deployment="web", fingerprint="ok"))
    assert w.post_alerts(good)[0] == 202
    assert len(w.wait_executions(1)) == 1


def test_a_webhooks_content_encoding_is_decoded_or_refused_in_our_own_words(worker_factory):
    """gzip and deflate (zlib or raw) are decoded, within the body limit once decoded; any
    other coding is a 415 in the API's JSON naming those accepted: an unknown one (`foo`)
    was taken for plain and acknowledged, `br` and `zstd` met aiohttp's parser, which
    answered in plain text to install Brotli. Nothing refused is stored; nothing is a 5xx."""
    w = worker_factory(max_body_bytes=64 * 1024)
    url = f"{w.url}/alerts"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    body = json.dumps(notification(alert("DemoDown", namespace="demo", deployment="web",
                                         fingerprint="refused"))).encode()
    refused = ("Content-Encoding {!r} is not accepted here; send the body as one of: "
               "identity, gzip, deflate")
    for name in ("foo", "br", "zstd", "gzip, deflate"):
        got, answer = http("POST", url, body, {**auth, "Content-Encoding": name})
        assert (got, answer) == (415, {"error": refused.format(name)}), (name, answer)
    bomb = zlib.compressobj(wbits=31)
    cases = [  # (body, coding, status, what the answer says)
        (gzip.compress(body)[:-9], "gzip", 400, "ends early"),
        (gzip.compress(body) + b"x", "gzip", 400, "bytes after its end"),
        (bomb.compress(b" " * (65 * 1024)) + bomb.flush(), "gzip", 413, "once decoded"),
    ]
    for sent, name, status, says in cases:
        got, answer = http("POST", url, sent, {**auth, "Content-Encoding": name})
        assert (got, says in answer["error"]) == (status, True), (name, says, answer)
    assert w.call(w.service.store.list_executions(10)) == []  # nothing refused was stored

    def taken(n: int) -> bytes:
        return body.replace(b'"refused"', f'"taken{n}"'.encode())
    raw = zlib.compressobj(wbits=-15)
    for sent, name in ((zlib.compress(taken(0)), "Deflate"),
                       (raw.compress(taken(1)) + raw.flush(), "deflate"), (taken(2), "identity")):
        got, answer = http("POST", url, sent, {**auth, "Content-Encoding": name})
        assert (got, answer) == (202, {"accepted": 1, "duplicates": 0}), (name, answer)
    assert len(w.wait_executions(3)) == 3


def test_a_body_that_cannot_be_decoded_leaves_nothing_in_the_log_but_its_answer(tmp_path):
    """aiohttp decoded a body's Content-Encoding as it was read and, after the answer, read
    what was left of it, failing again: an error-level "Unhandled exception" with a
    traceback, for the client's mistake, whatever the answer was (a 400 if the handler read
    it, a 415 if it never did); filtered, still a warning each. The app decodes the body
    itself now (content_coding.py): nothing is left to fail after the answer."""
    w = WorkerProcess(tmp_path, [str(write_rules(tmp_path / "rules", NO_MATCH_RULES))]).start()
    try:
        gzipped = {"Authorization": f"Bearer {TOKEN}", "Content-Encoding": "gzip"}
        assert http("POST", f"{w.url}/alerts", b"{}", gzipped)[0] == 400
        assert http("POST", f"{w.url}/alerts", b"{}",
                    {**gzipped, "Content-Type": "text/plain"})[0] == 415
        assert w.post_alerts(notification())[0] == 202  # and it goes on serving
    finally:
        assert w.stop() == 0
    log = [json.loads(line) for line in w.log_path.read_text().splitlines()]
    assert not [e for e in log if e["level"] == "error" or "Traceback" in e.get("error", "")]
    assert [e["msg"] for e in log if "body" in e["msg"]] == []


def test_ten_thousand_alerts_in_one_payload_are_all_recorded(worker_factory):
    w = worker_factory(max_body_bytes=8 << 20)
    alerts = [alert("Unrelated", fingerprint=f"f{i}", instance=f"i{i}") for i in range(10_000)]
    status, body = w.post_alerts(notification(*alerts))
    assert (status, body) == (202, {"accepted": 10_000, "duplicates": 0})
    w.wait_idle()
    decisions = w.call(w.service.store.list_executions(20_000, outcome="no_match"))
    assert len({d["fingerprint"] for d in decisions}) == 10_000


def test_hostile_label_values_become_safe_recorded_decisions(worker_factory):
    w = worker_factory()
    hostile = ["{{ 7*7 }}", "{% for x in range(99) %}x{% endfor %}", "../kube-system", "a/b",
               "x" * 300, "web\nINJECTED: true"]
    alerts = [alert("DemoDown", namespace="demo", deployment=v, fingerprint=f"h{i}")
              for i, v in enumerate(hostile)]
    assert w.post_alerts(notification(*alerts))[0] == 202
    decisions = w.wait_executions(len(hostile))
    assert len(decisions) == len(hostile)
    for d in decisions:
        assert d["outcome"] == "failed" and d["reason"].startswith("invalid target"), d
        assert d["steps"] == []  # nothing ran with a hostile value
    # and a label that is only *text* in a message renders literally, never evaluated
    w.post_alerts(notification(alert("DemoDown", namespace="demo", deployment="web",
                                     fingerprint="t", annotations={"summary": "{{ 7*7 }}"})))
    assert any(d["fingerprint"] == "t" for d in w.wait_executions(len(hostile) + 1))


def test_health_ready_metrics_and_reload(worker_factory, tmp_path):
    w = worker_factory()
    assert http("GET", f"{w.url}/-/healthy")[0] == 200
    assert http("GET", f"{w.url}/-/ready")[0] == 200
    metrics = http("GET", f"{w.url}/metrics")[1]
    assert "remediator_rules_loaded 1.0" in metrics and "remediator_build_info" in metrics
    # the client's process set: descriptors against their limit (uvloop drops connections
    # past it without a log line, so this is what shows it coming)
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert re.search(rf"^process_max_fds {float(soft)}$", metrics, re.M), metrics
    assert 0 < float(re.search(r"^process_open_fds (\S+)$", metrics, re.M).group(1)) < soft
    rules_dir = w.config.rules[0]
    write_rules(tmp_path / "unused", "")  # keep tmp_path used
    (tmp_path / rules_dir / "rules.yaml").write_text("playbooks:\n  - name: x\n    matchh: {}\n")
    status, body = http("POST", f"{w.url}/-/reload", b"", OPERATOR)
    assert status == 400 and "matchh" in " ".join(body["problems"])
    assert len(w.service.rules) == 1  # the old set keeps serving
    w.post_alerts(notification(alert("DemoDown", namespace="demo", deployment="web", fingerprint="z")))
    assert w.wait_executions(1)[0]["playbook"] == "demo-restart"
    assert http("POST", f"{w.url}/-/reload", b"")[0] == 401


def test_store_that_cannot_accept_answers_503_so_alertmanager_retries(worker_factory):
    w = worker_factory()
    w.call(w.service.store.close())
    status, body = w.post_alerts(notification(alert("DemoDown", fingerprint="s")))
    assert status == 503 and "store" in body["error"]


PAUSABLE = """
playbooks:
  - name: restart-web
    match: {alertname: WebDown}
    target: {kind: deployment, namespace: prod, name: web}
    guards: {cooldown: 1m}
    steps:
      - name: restart
        action: http.request
        params: {url: "%(url)s", method: POST}
  - name: restore-sbom
    match: {alertname: SbomCorrupt}
    target: {kind: bucket, name: "{{ labels.bucket }}"}
    guards: {cooldown: 1m}
    steps:
      - name: restore
        action: s3.restore_version
        params: {bucket: "{{ labels.bucket }}", key: sboms/a.json}
"""


def test_kill_switch_over_the_api_records_alerts_and_mutates_nothing(worker_factory, webhook_receiver):
    w = worker_factory(PAUSABLE % {"url": webhook_receiver.url}, mode="live")
    auth = OPERATOR
    assert http("POST", f"{w.url}/api/v1/pause", b"")[0] == 401
    assert http("POST", f"{w.url}/api/v1/pause", b"", auth) == (200, {"paused": True})
    w.post_alerts(notification(alert("WebDown", fingerprint="p1")))
    [paused] = w.wait_executions(1)
    assert paused["outcome"] == "blocked" and paused["reason"].startswith("paused: automation is paused")
    assert http("POST", f"{w.url}/api/v1/resume", b"", auth) == (200, {"paused": False})
    w.post_alerts(notification(alert("WebDown", fingerprint="p2")))
    assert {d["outcome"] for d in w.wait_executions(2)} == {"blocked", "succeeded"}
    assert len(webhook_receiver.deliveries) == 1
    assert "remediator_guard_blocks_total{guard=\"paused\"} 1.0" in http("GET", f"{w.url}/metrics")[1]


def test_s3_mutations_only_touch_allowed_buckets(worker_factory):
    w = worker_factory(PAUSABLE % {"url": "http://127.0.0.1:9/"},
                       guards=GuardSettings(buckets_allow=["code-forge-artifacts-prod"]))
    w.post_alerts(notification(alert("SbomCorrupt", fingerprint="b1", bucket="someone-elses-bucket"),
                               alert("SbomCorrupt", fingerprint="b2", bucket="code-forge-artifacts-prod")))
    decisions = {d["fingerprint"]: d for d in w.wait_executions(2)}
    assert decisions["b1"]["reason"] == ("scope_denied: bucket 'someone-elses-bucket' is not in the "
                                         "S3 write allow list (guards.buckets.allow: "
                                         "code-forge-artifacts-prod)")
    assert decisions["b2"]["outcome"] == "planned"  # dry-run: allowed, described, not called


def test_mutating_http_only_reaches_allowed_hosts(worker_factory, webhook_receiver):
    rules = PAUSABLE % {"url": webhook_receiver.url}
    closed = worker_factory(rules, mode="live", guards=GuardSettings())  # http.allow: empty
    closed.post_alerts(notification(alert("WebDown", fingerprint="h1")))
    [denied] = closed.wait_executions(1)
    assert (denied["outcome"], denied["steps"][0]["guard"]) == ("blocked", "scope_denied")
    assert denied["reason"] == (f"scope_denied: http host '127.0.0.1:{webhook_receiver.port}' is "
                                "not in the HTTP mutation allow list (guards.http.allow: empty)")
    assert webhook_receiver.deliveries == []  # nothing was sent
    opened = worker_factory(rules, mode="live", guards=GuardSettings(http_allow=["127.0.0.1"]))
    opened.post_alerts(notification(alert("WebDown", fingerprint="h2")))
    [allowed] = opened.wait_executions(1)
    assert allowed["outcome"] == "succeeded" and len(webhook_receiver.deliveries) == 1


def test_hostile_identifiers_on_postgresql_are_refused_or_recorded(worker_factory, postgres_url):
    """What PostgreSQL text cannot hold (NUL) or index (over ~2700 bytes): a fingerprint, the
    inbox's unique key, is refused with 400 naming it, never a 503 that Alertmanager retries
    forever (and that fails the other requests sharing its commit); a NUL in a label is
    acknowledged and its decision recorded, not lost after the 202."""
    w = worker_factory(store=postgres_url)
    digests = "".join(hashlib.sha256(bytes([i])).hexdigest() for i in range(60))  # incompressible
    for fingerprint in ("a\x00b", digests):
        status, answer = w.post_alerts(notification(alert("DemoDown", fingerprint=fingerprint,
                                                          namespace="demo", deployment="web")))
        assert (status, "fingerprint" in answer["error"]) == (400, True), answer
    name = "Demo\x00Down"
    assert w.post_alerts(notification(alert(name, fingerprint="nul", namespace="demo")))[0] == 202
    [decision] = w.wait_executions(1, alertname=name)
    assert (decision["alertname"], decision["outcome"]) == (name, "no_match")


def test_an_execution_id_postgresql_cannot_hold_is_a_404(worker_factory, postgres_url):
    """An id from a URL is the caller's text: a NUL, which no PostgreSQL text holds, is no
    execution's (ids are hex), not a 500 from the API or the console, nor a 503 saying
    the store is unavailable from an approval."""
    w = worker_factory(store=postgres_url)
    for method, path, headers in (("GET", "/api/v1/executions/a%00b", VIEWER),
                                  ("POST", "/api/v1/executions/a%00b/approve", OPERATOR),
                                  ("POST", "/api/v1/executions/a%00b/reject", OPERATOR)):
        status, answer = http(method, f"{w.url}{path}", None, headers)
        assert (status, answer) == (404, {"error": "no execution 'a\\x00b'"}), (path, answer)
    for path in ("/ui/executions/a%00b", "/ui/executions/a%00b/graph.svg"):
        status, page = http("GET", f"{w.url}{path}", None, VIEWER)
        assert status == 404 and "no execution" in page, (path, page[-300:])
    assert http("GET", f"{w.url}/-/ready")[0] == 200


def test_a_resume_over_the_api_does_not_claim_to_override_the_configurations_pause(
        worker_factory, webhook_receiver):
    """With guards.paused (REMEDIATOR_PAUSED) on, a resume answered `{"paused": false}`, and
    the next block named the operator who resumed as the one who paused."""
    w = worker_factory(PAUSABLE % {"url": webhook_receiver.url}, mode="live",
                       guards=replace(loopback_guards(), paused=True))
    status, answer = http("POST", f"{w.url}/api/v1/resume", b"", OPERATOR)
    assert status == 200 and answer["paused"] is True and answer["paused_by_configuration"]
    assert "keeps automation paused" in answer["detail"]
    w.post_alerts(notification(alert("WebDown", fingerprint="c1")))
    [blocked] = w.wait_executions(1)
    assert blocked["reason"].startswith("paused: automation is paused by configuration")
    assert "alice" not in blocked["reason"] and webhook_receiver.deliveries == []
