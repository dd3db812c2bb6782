import json
import re

import pytest

from remediator.alerts import MAX_ALERTS, PayloadError, label_fingerprint, parse_notification
from tests.support.payloads import alert, notification


def parse(obj) -> object:
    return parse_notification(json.dumps(obj).encode())


def test_parses_every_field_and_treats_zero_end_time_as_unset():
    n = parse(notification(alert("CodeForgeS3UploadFailureHigh", namespace="neural-hive-pipeline",
                                 fingerprint="f00")))
    a = n.alerts[0]
    assert (a.status, a.alertname, a.fingerprint) == ("firing", "CodeForgeS3UploadFailureHigh", "f00")
    assert a.labels["namespace"] == "neural-hive-pipeline"
    assert a.ends_at is None
    assert a.generator_url.startswith("http://prometheus.example")
    assert n.group.receiver == "remediator" and n.group.external_url.endswith(":9093")
    assert n.group.group_labels == {"alertname": "CodeForgeS3UploadFailureHigh"}


def test_each_alert_keeps_its_own_status_and_unknown_fields_are_ignored():
    payload = notification(alert("A"), alert("A", status="resolved", fingerprint="other"),
                           status="firing")
    payload["someFutureField"] = {"x": 1}
    payload["alerts"][0]["newAlertField"] = 1
    n = parse(payload)
    assert [a.status for a in n.alerts] == ["firing", "resolved"]


def test_missing_fingerprint_is_derived_from_labels_stably():
    a1 = alert("A", fingerprint="", b="2", a="1")
    a2 = alert("A", fingerprint="", a="1", b="2")
    f1, f2 = parse(notification(a1)).alerts[0], parse(notification(a2)).alerts[0]
    assert f1.fingerprint == f2.fingerprint == label_fingerprint(f1.labels)
    assert f1.dedupe_key == f2.dedupe_key


def test_dedupe_key_separates_episodes_and_statuses():
    keys = {parse(notification(a)).alerts[0].dedupe_key for a in (
        alert("A", fingerprint="x"), alert("A", fingerprint="x", status="resolved"),
        alert("A", fingerprint="x", starts_at="2026-11-21T12:00:00Z"))}
    assert len(keys) == 3


@pytest.mark.parametrize("body, message", [
    (b"{not json", "invalid JSON"),
    (b"\xff\xfe{}", "not valid UTF-8"),
    (b"[]", "must be a JSON object"),
    (json.dumps({"version": "3", "alerts": []}).encode(), 'unsupported webhook version "3": expected "4"'),
    # a value echoed as the JSON sent: null, true, a number, a string cut short
    (json.dumps({"version": 4, "alerts": []}).encode(), 'unsupported webhook version 4: '),
    (json.dumps({"version": "4", "alerts": [{"labels": {}}]}).encode(),
     '$.alerts[0].status: must be "firing" or "resolved", got null'),
    (json.dumps({"version": "4", "alerts": [{"status": True}]}).encode(),
     '$.alerts[0].status: must be "firing" or "resolved", got true'),
    (json.dumps({"version": "4", "alerts": [{"status": {"a": 1}}]}).encode(),
     '$.alerts[0].status: must be "firing" or "resolved", got an object'),
    (json.dumps({"version": "4", "alerts": [{"status": "firing", "labels": {"alertname": "A"},
                                             "startsAt": "x\n" * 30}]}).encode(),
     '$.alerts[0].startsAt: not an RFC 3339 timestamp: "' + "x\\n" * 20 + '"…'),
    (json.dumps({"version": "4"}).encode(), "$.alerts: required"),
    (json.dumps({"version": "4", "alerts": {}}).encode(), "$.alerts: required, must be a list"),
    (json.dumps({"version": "4", "alerts": [{"status": "firing", "labels": {"alertname": 5}}]}).encode(),
     "$.alerts[0].labels.alertname: must be a string"),
    (json.dumps({"version": "4", "alerts": [{"status": "weird", "labels": {"alertname": "A"}}]}).encode(),
     '$.alerts[0].status: must be "firing" or "resolved"'),
    (json.dumps({"version": "4", "alerts": [{"status": "firing", "labels": {}}]}).encode(),
     "$.alerts[0].labels.alertname: required"),
    (json.dumps({"version": "4", "alerts": [{"status": "firing", "labels": {"alertname": "A"},
                                             "startsAt": "yesterday"}]}).encode(),
     "$.alerts[0].startsAt: not an RFC 3339 timestamp"),
    (json.dumps({"version": "4", "alerts": [{"status": "firing",
                                             "labels": {"alertname": "A", "x": "v" * 9000}}]}).encode(),
     "$.alerts[0].labels.x: longer than 8192"),
    (json.dumps({"version": "4", "alerts": [{"status": "firing", "startsAt": "2026-11-21T10:00:00Z",
                                             "labels": {"alertname": "A", "x" * 9000: "v"}}]}).encode(),
     "$.alerts[0].labels: a name longer than 8192"),
    (json.dumps({"version": "4", "alerts": [{"status": "firing", "startsAt": "2026-11-21T10:00:00Z",
                                             "labels": {"alertname": "A"},
                                             "annotations": {"y" * 9000: "v"}}]}).encode(),
     "$.alerts[0].annotations: a name longer than 8192"),
    # the episode is in the dedupe key: without it a later episode was taken for a duplicate
    (json.dumps({"version": "4", "alerts": [{"status": "firing", "labels": {"alertname": "A"}}]}).encode(),
     "$.alerts[0].startsAt: required"),
    (json.dumps({"version": "4", "alerts": [{"status": "firing", "labels": {"alertname": "A"},
                                             "startsAt": "0001-01-01T00:00:00Z"}]}).encode(),
     "$.alerts[0].startsAt: required"),
])
def test_malformed_payloads_say_what_is_wrong(body, message):
    with pytest.raises(PayloadError) as exc:
        parse_notification(body)
    assert message in str(exc.value)


def test_alert_count_limit():
    parse(notification(*[alert("A", fingerprint=str(i)) for i in range(MAX_ALERTS)]))
    with pytest.raises(PayloadError, match="exceed the limit"):
        parse(notification(*[alert("A", fingerprint=str(i)) for i in range(MAX_ALERTS + 1)]))


def test_strings_are_searched_for_lone_surrogates_only_when_an_escape_can_make_one(monkeypatch):
    """Valid UTF-8 holds no surrogate: only a \\ud800-\\udfff escape (either case) makes one.
    A body without such an escape skips the search in every string (~40 % of a parse on
    the storm's traffic); one with it is searched, and refused with the string's path."""
    import remediator.alerts as alerts_module

    searched: list[str] = []
    pattern = alerts_module._SURROGATE

    class Counting:
        def search(self, text: str):
            searched.append(text)
            return pattern.search(text)

    monkeypatch.setattr(alerts_module, "_SURROGATE", Counting())
    good = notification(alert("DemoDown", deployment="web", fingerprint="ok"))
    good["commonLabels"] = {}
    parse_notification(json.dumps(good, ensure_ascii=False).encode())
    assert searched == []
    pair = json.dumps(good).replace('"web"', '"\\ud83d\\ude00"')  # an escaped pair: one emoji
    assert parse_notification(pair.encode()).alerts[0].labels["deployment"] == "\U0001f600"
    assert searched
    escaped_backslash = json.dumps(good).replace('"web"', '"\\\\ud800"')  # text, not an escape
    assert parse_notification(escaped_backslash.encode()).alerts[0].labels["deployment"] == "\\ud800"
    for lone, where in (('"deployment": "\\uD800"', "$.alerts[0].labels.deployment"),
                        ('"deployment": "web", "\\uDFFF": "x"', "$.alerts[0].labels (a name)")):
        body = json.dumps(good).replace('"deployment": "web"', lone)
        with pytest.raises(PayloadError, match=re.escape(where) + ": contains a lone"):
            parse_notification(body.encode())


def test_a_body_is_decoded_once_and_json_reads_only_what_orjson_refuses(monkeypatch):
    """orjson decodes a storm's body in a third of json's time; json reads again only what
    orjson refuses, so those bodies are accepted or refused, with the same message, as before."""
    import remediator.alerts as alerts_module

    slow: list[bytes] = []
    json_loads = alerts_module._json_loads
    monkeypatch.setattr(alerts_module, "_json_loads", lambda b: slow.append(b) or json_loads(b))
    good = notification(alert("DemoDown", deployment="web", fingerprint="ok"),
                        alert("DemoDown", deployment="api"))
    assert len(parse_notification(json.dumps(good).encode()).alerts) == 2
    assert slow == []
    lone = json.dumps(good).replace('"web"', '"\\ud800"').encode()
    with pytest.raises(PayloadError, match="deployment: contains a lone"):
        parse_notification(lone)
    nan = json.dumps({**good, "truncatedAlerts": float("nan")}).encode()  # NaN: json reads it
    with pytest.raises(PayloadError, match=re.escape("$.truncatedAlerts: must be an integer")):
        parse_notification(nan)
    with pytest.raises(PayloadError, match="invalid JSON: Expecting value at line 1 column 2"):
        parse_notification(b"[,]")
    assert slow == [lone, nan, b"[,]"]
