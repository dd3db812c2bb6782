"""A reload (`POST /-/reload`, SIGHUP, the console's button) reads and validates the rule files
in a thread: webhooks are acknowledged while a large rule set loads (on the event loop each
waited for all of it: 1 000 files, half a second and more), the new set is swapped in at once
once it is valid, and a refused one leaves the old set serving."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

from tests.conftest import DEMO_RULES, write_rules
from tests.support.payloads import alert, notification
from tests.support.worker import OPERATOR, WorkerProcess, http

FILES = 1500  # a reload of this many files takes seconds, on the loop or off it
PLAYBOOK = """\
playbooks:
  - name: restart-{i}
    match:
      alertname: [PodCrashLooping{i}, PodNotReady{i}]
      matchers: ['namespace=~"shop|pay"', 'severity!="info"']
    target: {{kind: deployment, namespace: "{{{{ labels.namespace }}}}", name: "{{{{ labels.deployment }}}}"}}
    guards: {{rate_limit: {{max: 3, window: 1h}}, cooldown: 10m}}
    steps:
      - name: check
        action: prometheus.query
        params: {{query: 'rate(restarts{{namespace="{{{{ labels.namespace | promql_str }}}}"}}[5m])'}}
      - name: note
        action: log
        when: steps.check.result.value > 0
        params: {{message: "restarting {{{{ labels.deployment }}}} ({i})"}}
    escalation: {{severity: critical, owner: team-shop, next_steps: ["check the logs"]}}
"""


def _generate(rules: Path) -> None:
    for i in range(FILES):
        (rules / f"pb{i:04d}.yaml").write_text(PLAYBOOK.format(i=i))


def _acknowledged_while(reload: threading.Thread, w: WorkerProcess, first: int) -> tuple[int, int]:
    """Post webhooks one after another until `reload` has its answer: (how many were
    acknowledged before it had, how many were posted)."""
    during = n = 0
    while reload.is_alive():
        status, body = w.post_alerts(notification(alert(
            "DemoDown", namespace="demo", deployment="web", fingerprint=f"f{first + n}")))
        assert status == 202, body
        n += 1
        during += reload.is_alive()
    return during, n


def _reload_in_background(w: WorkerProcess) -> tuple[threading.Thread, dict]:
    answer: dict = {}

    def reload() -> None:
        answer["answer"] = http("POST", f"{w.url}/-/reload", b"", OPERATOR, timeout=300)

    thread = threading.Thread(target=reload)
    thread.start()
    return thread, answer


def _decided(w: WorkerProcess, count: int) -> list[dict]:
    deadline = time.monotonic() + 120
    while len(done := [e for e in w.executions() if e["outcome"] != "running"]) < count:
        assert time.monotonic() < deadline, (len(done), w.logs())
        time.sleep(0.2)
    return done


def test_webhooks_are_acknowledged_while_a_large_rule_set_reloads(tmp_path):
    rules = write_rules(tmp_path / "rules", DEMO_RULES)
    # No parse cache: every reload parses and validates each file anew.
    w = WorkerProcess(tmp_path, [str(rules)], config={"rules_cache": ""}).start()
    try:
        _generate(rules)
        thread, answer = _reload_in_background(w)
        during, posted = _acknowledged_while(thread, w, 0)
        assert answer["answer"] == (200, {"status": f"loaded {1 + FILES} playbooks"}), w.logs()
        # On the loop, none was answered before the reload was (the loop was busy loading;
        # one sent before it began could be); off it, they keep being acknowledged.
        assert during >= 5, (during, posted)

        # A rule set refused after a load as long: webhooks acknowledged meanwhile, the
        # answer names the problem, and the old set still decides.
        (rules / "zz-broken.yaml").write_text("playbooks:\n  - name: x\n    matchh: {}\n")
        thread, answer = _reload_in_background(w)
        more, also = _acknowledged_while(thread, w, posted)
        status, body = answer["answer"]
        assert status == 400 and "matchh" in " ".join(body["problems"]), body
        assert body["error"] == "rules refused, previous set still serving"
        assert more >= 5, (more, also)
        metrics = http("GET", f"{w.url}/metrics")[1]
        assert f"remediator_rules_loaded {1 + FILES:.1f}" in metrics
        assert 'remediator_rules_reloads_total{result="failure"} 1.0' in metrics

        # Every acknowledged alert is decided, by the playbook loaded before.
        done = _decided(w, posted + also)
        assert {e["playbook"] for e in done} == {"demo-restart"}
        assert {e["fingerprint"] for e in done} == {f"f{n}" for n in range(posted + also)}
    finally:
        w.stop()


def _metric(w: WorkerProcess, line: str) -> bool:
    return line in http("GET", f"{w.url}/metrics")[1]


def test_sighup_reloads_and_a_refused_set_keeps_the_old_one(tmp_path):
    rules = write_rules(tmp_path / "rules", DEMO_RULES)
    w = WorkerProcess(tmp_path, [str(rules)], config={"rules_cache": ""}).start()
    try:
        (rules / "more.yaml").write_text(PLAYBOOK.format(i=1))
        assert w.proc is not None
        w.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 60
        while not _metric(w, 'remediator_rules_reloads_total{result="success"} 1.0'):
            assert time.monotonic() < deadline, w.logs()
            time.sleep(0.1)
        assert _metric(w, "remediator_rules_loaded 2.0")

        (rules / "more.yaml").write_text("playbooks:\n  - name: x\n    matchh: {}\n")
        w.proc.send_signal(signal.SIGHUP)
        while not _metric(w, 'remediator_rules_reloads_total{result="failure"} 1.0'):
            assert time.monotonic() < deadline, w.logs()
            time.sleep(0.1)
        assert _metric(w, "remediator_rules_loaded 2.0")  # the old set
        assert "reload refused, keeping 2 playbooks" in w.logs()
        assert w.post_alerts(notification(alert("DemoDown", namespace="demo",
                                                deployment="web")))[0] == 202
        assert _decided(w, 1)[0]["playbook"] == "demo-restart"
    finally:
        assert w.stop() == 0
