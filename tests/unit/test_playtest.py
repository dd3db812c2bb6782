"""`remediator test`: the project's own playbook tests, and the test runner itself."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import pytest

from remediator.cli import main
from remediator.playtest import PlaytestError, compare, find_test_files, run_file

ROOT = Path(__file__).parent.parent.parent
OWN_TESTS = find_test_files([str(ROOT / "rules"), str(ROOT / "tests" / "playtest")])


@pytest.mark.parametrize("file", OWN_TESTS, ids=lambda f: str(Path(f).relative_to(ROOT)))
def test_own_playbook_tests_pass(file):
    """rules/<system>_test.yaml (and tests/playtest/) run on every test-suite run."""
    results = run_file(file)
    assert results
    failures = [f"{r.name}:\n" + "\n".join(r.failures) for r in results if not r.ok]
    assert not failures, "\n\n".join(failures)


RULES = """
    playbooks:
      - name: restart
        match: {alertname: Down, matchers: ['env="prod"']}
        target: {kind: deployment, namespace: "{{ labels.namespace }}", name: "{{ labels.app }}"}
        guards:
          cooldown: 10m
          precondition: {promql: 'up == 0', delay: 5m}
          time_windows: [{days: [mon, tue, wed, thu, fri], start: "08:00", end: "18:00"}]
        steps:
          - name: restart
            action: http.request
            params: {url: "https://unreachable.invalid/{{ labels.app }}/restart", method: POST}
          - name: check
            action: prometheus.query
            params: {query: 'up{app="{{ labels.app | promql_str }}"}'}
        escalation: {severity: critical, sinks: [pager]}
"""


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip())
    return str(path)


def test_offline_fake_clock_and_canned_results(tmp_path):
    write(tmp_path, "down.yaml", RULES)
    file = write(tmp_path, "down_test.yaml", """
        config:
          escalation: {sinks: {pager: {type: slack, url: "https://hooks.slack.invalid/x"}}}
          guards: {http: {allow: [unreachable.invalid]}}
        tests:
          - name: everything offline
            results:
              restart: [{fail: "connection refused", transient: true, sent: false},
                        {status: 202}]
              prometheus.query: {value: 1.0}
            alerts:
              - labels: {alertname: Down, env: prod, namespace: shop, app: web}
                expect:
                  - outcome: succeeded
                    steps:
                      - {name: restart, outcome: succeeded, attempts: 2, result: {status: 202}}
                      - {name: check, result: {value: 1.0}}
              - at: 9h   # 19:00 on a Monday: outside the window
                labels: {alertname: Down, env: prod, namespace: shop, app: api}
                expect: [{outcome: blocked, guard: time_window, escalation: {sinks: [pager]}}]
    """)
    started = time.monotonic()
    [result] = run_file(file)
    assert time.monotonic() - started < 5, "a precondition delay must not sleep for real"
    assert result.ok, result.failures
    delivered = result.decisions[1]["escalation"]["deliveries"]["pager"]
    assert delivered.endswith(".md") and "remediator-test-" in delivered  # a temp dir, no Slack


def test_failure_prints_a_readable_diff(tmp_path, capsys):
    write(tmp_path, "down.yaml", RULES)
    file = write(tmp_path, "down_test.yaml", """
        config: {guards: {http: {allow: [unreachable.invalid]}}}
        tests:
          - name: wrong expectations
            results: {restart: {fail: "409 conflict"}}
            alerts:
              - labels: {alertname: Down, env: prod, namespace: shop, app: web}
                expect:
                  - playbook: restart
                    outcome: succeeded
                    reason: "nothing"
                    steps: [{name: restart, outcome: succeeded}]
                    escalation: false
    """)
    assert main(["test", file]) == 1
    out = capsys.readouterr().out
    assert out == textwrap.dedent(f"""\
        {file}
          FAIL   wrong expectations  (1 decision(s))
                 alert 1 at 0s: Down{{app="web",env="prod",namespace="shop"}} (firing)
                 --- expected
                 +++ actual
                 @@ -1,7 +1,7 @@
                  - playbook: restart
                 -  outcome: succeeded
                 -  reason: nothing
                 +  outcome: failed
                 +  reason: 'step ''restart'' failed: 409 conflict'
                    steps:
                    - name: restart
                 -    outcome: succeeded
                 -  escalation: false
                 +    outcome: failed
                 +  escalation: true
        """)


def test_test_file_problems_are_located(tmp_path, capsys):
    write(tmp_path, "down.yaml", RULES)
    bad = write(tmp_path, "bad_test.yaml", """
        tests:
          - name: typo
            alerts:
              - labels: {alertname: Down}
                expect: [{outcom: failed}]
    """)
    with pytest.raises(PlaytestError) as error:
        run_file(bad)
    assert [str(p) for p in error.value.problems] == [
        f"{bad}:5:19: error: tests[0].alerts[0].expect[0]: unknown key 'outcom' (did you mean "
        "'outcome'?)"]
    missing = write(tmp_path, "other_test.yaml", "rule_files: [nope.yaml]\ntests: [{name: x, alerts: "
                                                 "[{labels: {alertname: A}}]}]\n")
    with pytest.raises(PlaytestError, match=r"other_test.yaml:1:14: error: rule file nope.yaml not found"):
        run_file(missing)
    unused = write(tmp_path, "unused_test.yaml", """
        rule_files: [down.yaml]
        tests:
          - name: a canned result nothing uses
            results: {restart: {}, prometheus.query: {}, restrat: {fail: boom}}
            alerts: [{labels: {alertname: Down}}]
    """)
    with pytest.raises(PlaytestError) as error:
        run_file(unused)
    assert [str(p) for p in error.value.problems] == [
        f"{unused}:4:50: error: results: no step or action 'restrat' in the rule files (did you "
        "mean 'restart'?)"]
    broken = tmp_path / "broken"
    broken.mkdir()
    write(broken, "x.yaml",
          "playbooks:\n  - {name: x, match: {alertname: A}, steps: [{name: a, action: nope}]}\n")
    write(broken, "x_test.yaml", "tests: [{name: x, alerts: [{labels: {alertname: A}}]}]\n")
    assert main(["test", str(broken)]) == 1
    assert "x.yaml:2:56: error: unknown action 'nope'" in capsys.readouterr().out


def test_alerts_in_time_order_and_show(tmp_path, capsys):
    write(tmp_path, "down.yaml", RULES)
    file = write(tmp_path, "down_test.yaml", """
        tests:
          - name: backwards
            alerts:
              - {at: 5m, labels: {alertname: Other}}
              - {at: 1m, labels: {alertname: Other}}
    """)
    with pytest.raises(PlaytestError, match=r"down_test.yaml:5:10: error: alerts must be listed in time"):
        run_file(file)
    write(tmp_path, "down_test.yaml", "tests: [{name: show, alerts: [{labels: {alertname: Other}}]}]\n")
    assert main(["test", "--show", file]) == 0
    assert "outcome: no_match" in capsys.readouterr().out


def test_no_test_files(tmp_path, capsys):
    assert main(["test", str(tmp_path)]) == 1
    assert "no test files" in capsys.readouterr().err


# --- comparing -----------------------------------------------------------------------------------------

DECISION = {"playbook": "p", "outcome": "blocked", "reason": "cooldown: web was changed at 10:00",
            "target": "shop/deployment/web", "escalation": None,
            "steps": [{"name": "a", "params": {"x": 1, "y": [1, 2]}, "outcome": "succeeded",
                       "detail": "did a thing"},
                      {"name": "b", "params": {}, "outcome": "blocked", "detail": ""}]}


def test_compare_subset_and_substring():
    assert compare([{"outcome": "blocked", "guard": "cooldown", "reason": "was changed",
                     "escalation": False,
                     "steps": [{"params": {"x": 1}, "detail": "a thing"}, {"name": "b"}]}],
                   [DECISION]) == ""
    assert compare([{}], [DECISION]) == ""


def test_compare_reports_missing_and_extra():
    diff = compare([{"steps": [{"name": "a"}]}], [DECISION])
    assert "+  - name: b\n+    outcome: blocked" in diff
    diff = compare([{"outcome": "blocked"}, {"outcome": "failed"}], [DECISION])
    assert diff.startswith("expected 2 decision(s), got 1")
    diff = compare([{"outcome": "blocked"}], [DECISION, DECISION])
    assert "+- playbook: p" in diff
    assert "+- target: <absent>" in compare([{"target": "x"}], [{"outcome": "no_match"}])


def test_a_wrong_target_is_shown_in_the_diff(tmp_path, capsys):
    """A decision's target is a str subclass: the diff printed it (it raised before)."""
    write(tmp_path, "down.yaml", RULES)
    file = write(tmp_path, "down_test.yaml", """
        config: {guards: {http: {allow: [unreachable.invalid]}}}
        tests:
          - name: wrong target
            alerts:
              - labels: {alertname: Down, env: prod, namespace: shop, app: web}
                expect: [{target: shop/deployment/api}]
    """)
    assert main(["test", file]) == 1
    out = capsys.readouterr().out
    assert "-- target: shop/deployment/api\n" in out and "+- target: shop/deployment/web\n" in out
