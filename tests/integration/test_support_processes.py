"""Proof that tests/support starts real, working components.

Each test fails if the component (or our wiring of it) is broken: a config key
Alertmanager ignores, a scrape that never lands, a proxy that corrupts S3 traffic.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from tests.support.alertmanager import check_config, make_alert, webhook_config
from tests.support.procs import ProcessError
from tests.support.prometheus import prometheus_config
from tests.support.s3 import make_s3_client

TOKEN = "s3cr3t-token-for-tests"


def _firing_names(delivery) -> list[str]:
    return sorted(a["labels"].get("instance", "") for a in delivery.body["alerts"] if a["status"] == "firing")


def test_webhook_config_passes_amtool(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text(TOKEN)
    out = check_config(webhook_config("http://127.0.0.1:1/alerts", token_file=token), tmp_path)
    assert "SUCCESS" in out
    with pytest.raises(ValueError):
        check_config("route: {receiver: nope}\nreceivers: []\n", tmp_path)


def test_startup_failure_reports_log_tail(alertmanager_factory) -> None:
    # Bypasses amtool: the process itself must refuse and we must show why.
    with pytest.raises(ProcessError, match="undefined receiver"):
        alertmanager_factory("route: {receiver: missing}\nreceivers: []\n")


def test_alertmanager_delivers_groups_and_resolves(
    alertmanager_factory, webhook_receiver, tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    am = alertmanager_factory(webhook_config(webhook_receiver.url, token_file=token))

    labels_a = {"alertname": "DiskFull", "instance": "a", "severity": "page"}
    am.post_alerts([make_alert(labels_a, {"summary": "disk a"})])
    first = webhook_receiver.wait_for()
    assert first.body["version"] == "4"
    assert first.body["externalURL"] == am.url
    assert first.body["status"] == "firing"
    assert first.body["groupLabels"] == {"alertname": "DiskFull"}
    assert first.body["alerts"][0]["labels"] == labels_a
    assert first.headers["Authorization"] == f"Bearer {TOKEN}"
    assert [a["labels"]["instance"] for a in am.alerts(alertname="DiskFull")] == ["a"]

    # A new alert joining the group is re-sent after group_interval, not repeat_interval.
    am.post_alerts([make_alert({**labels_a, "instance": "b"})])
    second = webhook_receiver.wait_for(lambda d: _firing_names(d) == ["a", "b"], timeout=5)
    assert second.received_at - first.received_at < 5

    # endsAt in the past resolves it; send_resolved delivers that state.
    am.post_alerts(
        [make_alert(labels_a, resolved=True), make_alert({**labels_a, "instance": "b"}, resolved=True)]
    )
    resolved = webhook_receiver.wait_for(lambda d: d.body["status"] == "resolved", timeout=5)
    assert {a["status"] for a in resolved.body["alerts"]} == {"resolved"}

    sid = am.create_silence({"alertname": "DiskFull"})
    assert sid in [s["id"] for s in am.silences()]

    am.reload(webhook_config(webhook_receiver.url, group_by=["..."]))
    with pytest.raises(RuntimeError, match="reload failed"):
        am.reload("route: {receiver: missing}\nreceivers: []\n")


def test_prometheus_scrapes_exporter_and_alerts_alertmanager(
    prometheus_factory, alertmanager_factory, exporter, webhook_receiver
) -> None:
    am = alertmanager_factory(webhook_config(webhook_receiver.url))
    rules = """
groups:
  - name: test
    rules:
      - alert: S3UploadFailures
        expr: code_forge_s3_upload_total{status="failure"} > 5
        for: 0s
        labels: {severity: ticket}
        annotations: {summary: "uploads failing"}
"""
    exporter.set("code_forge_s3_upload_total", 1, status="failure")
    exporter.set("queue_depth", 3)
    prom = prometheus_factory(
        prometheus_config([exporter.target], rule_files=["rules/test.yml"], alertmanager_url=am.url),
        files={"rules/test.yml": rules},
    )
    assert prom.wait_for_targets()[0]["labels"]["job"] == "test"
    prom.wait_for('code_forge_s3_upload_total{status="failure"} == 1')
    assert prom.rules()[0]["rules"][0]["health"] in ("ok", "unknown")
    assert not prom.alerts()

    exporter.inc("code_forge_s3_upload_total", 9, status="failure")
    exporter.set("queue_depth", 42)
    result = prom.wait_for('code_forge_s3_upload_total{status="failure"} == 10')
    assert result[0]["metric"]["job"] == "test"
    assert prom.query("queue_depth")["result"][0]["value"][1] == "42"

    delivery = webhook_receiver.wait_for(timeout=15)
    alert = delivery.body["alerts"][0]
    assert alert["labels"]["alertname"] == "S3UploadFailures"
    assert alert["labels"]["status"] == "failure"
    assert alert["annotations"]["summary"] == "uploads failing"
    assert any(a["state"] == "firing" for a in prom.alerts())


def test_s3_roundtrip_through_proxy(s3_client, s3_proxy, s3_server) -> None:
    s3_client.create_bucket(Bucket="artifacts")
    body = b"x" * 70_000
    s3_client.put_object(Bucket="artifacts", Key="dir/build.tar.gz", Body=body)
    assert s3_client.get_object(Bucket="artifacts", Key="dir/build.tar.gz")["Body"].read() == body
    head = s3_client.head_object(Bucket="artifacts", Key="dir/build.tar.gz")
    assert head["ContentLength"] == len(body)
    assert [r.method for r in s3_proxy.requests()] == ["PUT", "PUT", "GET", "HEAD"]

    # The same data is visible directly on moto (the proxy is transparent) ...
    direct = make_s3_client(s3_server.url)
    assert direct.list_objects_v2(Bucket="artifacts")["KeyCount"] == 1
    # ... and reset wipes it, which is what isolates tests from each other.
    s3_server.reset()
    assert direct.list_buckets()["Buckets"] == []


def test_s3_slowdown_injection(s3_env, s3_proxy) -> None:
    no_retry = make_s3_client(s3_env, max_attempts=1)
    no_retry.create_bucket(Bucket="bkt")
    s3_proxy.inject("PUT", r"^/bkt/key$", status=503, code="SlowDown", times=1)
    with pytest.raises(ClientError) as err:
        no_retry.put_object(Bucket="bkt", Key="key", Body=b"1")
    assert err.value.response["Error"]["Code"] == "SlowDown"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    no_retry.put_object(Bucket="bkt", Key="key", Body=b"2")  # fault used up

    # With retries on, botocore treats SlowDown as throttling and retries through it.
    s3_proxy.inject("GET", r"^/bkt/key$", times=2)
    retrying = make_s3_client(s3_env, max_attempts=3)
    started = time.monotonic()
    assert retrying.get_object(Bucket="bkt", Key="key")["Body"].read() == b"2"
    assert time.monotonic() - started < 20
    assert len(s3_proxy.requests("GET", injected=True)) == 2
    assert len(s3_proxy.requests("GET", injected=False)) == 1
