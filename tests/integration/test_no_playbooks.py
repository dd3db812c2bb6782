"""No playbooks is no remediation: `serve` was ready, acknowledged every alert and decided
each `no_match` (a blank Helm value for REMEDIATOR_RULES, an empty rules directory)."""

from __future__ import annotations

import json

from tests.conftest import DEMO_RULES, write_rules
from tests.integration.test_cli_errors import one_line, remediator
from tests.integration.test_reload_off_the_loop import _decided
from tests.support.payloads import alert, notification
from tests.support.worker import OPERATOR, WorkerProcess, http


def test_serve_and_replay_refuse_a_rules_directory_without_a_playbook(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (tmp_path / "payload.json").write_text(json.dumps(notification(alert("DemoDown"))))
    for rules in (empty, write_rules(tmp_path / "listless", "playbooks: []\n")):
        expected = (f"remediator: no playbooks: '{rules}' holds none (a .yaml file with a "
                    "`playbooks:` list; *_test.yaml files are tests); pass --rules PATH")
        one_line(remediator(tmp_path, "serve", "--rules", str(rules), "--store", "sqlite://",
                            "--listen", "127.0.0.1:0"), expected)
        one_line(remediator(tmp_path, "replay", "payload.json", "--rules", str(rules)), expected)


def test_a_blank_rules_variable_is_unset(tmp_path):
    """`REMEDIATOR_RULES=` (a Helm value left blank) is the default `rules`, not no rules."""
    done = remediator(tmp_path, "serve", "--store", "sqlite://", "--listen", "127.0.0.1:0",
                      env={"REMEDIATOR_RULES": " "})
    one_line(done, f"remediator: no playbooks: directory 'rules' not found in {tmp_path}; "
                   "pass --rules PATH")


def test_a_reload_to_no_playbooks_is_refused_and_the_current_set_serves(tmp_path):
    rules = write_rules(tmp_path / "rules", DEMO_RULES)
    w = WorkerProcess(tmp_path, [str(rules)], config={"rules_cache": ""}).start()
    try:
        (rules / "rules.yaml").write_text("playbooks: []\n")
        status, body = http("POST", f"{w.url}/-/reload", b"", OPERATOR)
        assert status == 400, body
        assert body["error"] == "rules refused, previous set still serving"
        assert "no playbooks" in body["problems"][0], body
        assert "remediator_rules_loaded 1.0" in http("GET", f"{w.url}/metrics")[1]
        assert w.post_alerts(notification(alert("DemoDown", namespace="demo",
                                                deployment="web")))[0] == 202
        assert _decided(w, 1)[0]["playbook"] == "demo-restart"
    finally:
        assert w.stop() == 0
