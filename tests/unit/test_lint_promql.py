"""`remediator lint` checks the playbooks' PromQL with the real promtool (tests/run.sh installs
Prometheus, which ships it): errors at the playbook's file:line, templates replaced by
placeholders, one promtool run per lint, and no promtool on the PATH is a note, not an error."""

from __future__ import annotations

import os
import shutil
import stat
import textwrap
from pathlib import Path

import pytest

from remediator.cli import main
from remediator.lint.promql import variants

PROMQL = """
playbooks:
  - name: checks
    match: {alertname: A}
    guards:
      precondition:
        promql: rate(http_requests_total[5m) > 1
    steps:
      - name: fine
        action: prometheus.query
        params:
          query: >-
            up{job="{{ labels.job | promql_str }}"} > {{ labels.threshold | float }}
            and topk({{ labels.n | int }}, up) and {{ labels.metric | promql_name }}{job="a"}
            and rate(x[{{ labels.window | promql_duration }}])
            and x offset {{ labels.window | promql_duration }}
      - name: by_label
        action: prometheus.query
        params: {query: "sum by ({{ labels.by | promql_name }}) (up)"}
    on_resolved:
      - name: verify
        action: prometheus.wait_until
        params: {query: "sum(rate(errors_total[5m])) by job", timeout: 1m}
"""
OTHER = """
playbooks:
  - name: other
    match: {alertname: B}
    steps:
      - {name: q, action: prometheus.query, params: {query: "up =! 1"}}
"""


@pytest.fixture
def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool is not installed: run tests/run.sh (it installs prometheus)"
    return path


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def test_promql_errors_are_located_in_the_playbook(tmp_path, capsys, promtool):
    rules = write(tmp_path, "rules.yaml", PROMQL)
    other = write(tmp_path, "other.yaml", OTHER)
    assert main(["lint", str(tmp_path)]) == 1
    out = [line for line in capsys.readouterr().out.splitlines() if ": error: " in line]
    assert out == [
        f'{other}:5:54: error: PromQL: promtool: 1:4: parse error: unexpected "="',
        f'{rules}:6:9: error: PromQL: promtool: 1:28: parse error: unexpected ")" in subquery or '
        'range, expected ":" or "]"',
        f'{rules}:22:18: error: PromQL: promtool: 1:32: parse error: unexpected identifier "job" '
        'in grouping opts, expected "("',
    ]


def test_one_promtool_run_per_lint_and_none_without_promtool(tmp_path, capsys, monkeypatch,
                                                             promtool):
    write(tmp_path, "rules.yaml", PROMQL)
    write(tmp_path, "other.yaml", OTHER)
    bin_dir, log = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir()
    wrapper = bin_dir / "promtool"  # the real promtool, counting its runs
    wrapper.write_text(f'#!/bin/sh\necho run >> "{log}"\nexec "{promtool}" "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    assert main(["lint", "-v", str(tmp_path)]) == 1
    assert log.read_text() == "run\n"
    assert "remediator lint: promtool checked 5 PromQL queries" in capsys.readouterr().err

    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert main(["lint", "-v", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert "error" not in captured.out.replace("0 error(s)", "")
    assert "promtool is not on the PATH: 5 PromQL queries were not checked" in captured.err
    assert main(["lint", str(tmp_path)]) == 0
    assert "promtool" not in capsys.readouterr().err  # only -v says so


def test_placeholders_follow_the_query_context():
    assert variants('up{job="{{ labels.job }}"}[{{ labels.w }}] offset {{ labels.w }}') == [
        'up{job="x"}[5m] offset 5m']
    assert variants("topk({{ labels.n }}, {{ labels.m }}{a='b'})") == [
        "topk(1, templated{a='b'})", "topk(templated, templated{a='b'})"]
    assert variants(r'x{a="\"{{ y }}"} > {{ z }}') == [r'x{a="\"x"} > 1', r'x{a="\"x"} > templated']
