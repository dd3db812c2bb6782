"""A real Alertmanager delivers to a real `remediator serve`: recorded once, resolution too."""

import time

from tests.conftest import DEMO_RULES, write_rules
from tests.support.alertmanager import make_alert, webhook_config
from tests.support.worker import TOKEN, WorkerProcess, http


def _duplicates(w) -> float:
    for line in http("GET", f"{w.url}/metrics")[1].splitlines():
        if line.startswith("remediator_alerts_duplicate_total "):
            return float(line.split()[1])
    raise AssertionError("metric missing")


def _wait(fn, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = fn()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def test_alertmanager_delivers_dedupes_redeliveries_and_resolution(tmp_path, alertmanager_factory):
    rules = write_rules(tmp_path / "rules", DEMO_RULES)
    w = WorkerProcess(tmp_path, [str(rules)]).start()
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    am = alertmanager_factory(webhook_config(f"{w.url}/alerts", token_file=str(token)))
    try:
        labels = {"alertname": "DemoDown", "namespace": "demo", "deployment": "web"}
        am.post_alerts([make_alert(labels)])
        first = _wait(lambda: [d for d in w.executions(alertname="DemoDown")
                               if d["outcome"] != "running"])
        assert [d["outcome"] for d in first] == ["planned"]
        # A new alert joining the group makes Alertmanager send the whole group again,
        # including the first alert: that redelivery must not start a second execution.
        am.post_alerts([make_alert({**labels, "deployment": "api"})])
        _wait(lambda: len(w.executions(alertname="DemoDown")) == 2)
        _wait(lambda: _duplicates(w) >= 1)
        per_target = sorted(d["target"] for d in w.executions(alertname="DemoDown"))
        assert per_target == ["demo/deployment/api", "demo/deployment/web"]

        am.post_alerts([make_alert(labels, resolved=True)])
        resolved = _wait(lambda: [d for d in w.executions(alertname="DemoDown")
                                  if d["status"] == "resolved"])
        assert resolved[0]["outcome"] == "resolved"
        assert resolved[0]["target"] == "demo/deployment/web"
        assert len(w.executions(alertname="DemoDown")) == 3
    finally:
        assert w.stop() == 0
