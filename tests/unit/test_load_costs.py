"""Loading a rule set costs per distinct text, not per playbook: a thousand files repeat the
same templates and matchers (speed itself is measured in bench/, never asserted here)."""

from __future__ import annotations

import gc
from pathlib import Path

from remediator import templating
from remediator.playbooks import source
from remediator.playbooks.matchers import parse_matcher
from remediator.playbooks.validate import validate_paths

PLAYBOOK = """\
playbooks:
  - name: restart-{i}
    match:
      alertname: Down{i}
      matchers: ['namespace=~"shop|pay"']
    target: {{kind: deployment, namespace: "{{{{ labels.namespace }}}}", name: "{{{{ labels.app }}}}"}}
    guards:
      cooldown: 10m
      precondition: {{promql: 'up{{job="{{{{ labels.job | promql_str }}}}"}} == 0'}}
    steps:
      - name: check
        action: prometheus.query
        params: {{query: 'up{{namespace="{{{{ labels.namespace | promql_str }}}}"}}'}}
      - name: restart
        action: http.request
        when: steps.check.result.value > 0
        params: {{url: "https://deploy.example/restart/{{{{ labels.app }}}}", method: POST}}
"""


def _write(directory: Path, count: int) -> Path:
    directory.mkdir()
    for i in range(count):
        (directory / f"pb{i:03d}.yaml").write_text(PLAYBOOK.format(i=i), encoding="utf-8")
    return directory


def _parses(paths: list[Path]) -> int:
    """Template texts analysed (parsed by Jinja) while validating `paths` from cold caches."""
    templating._analyse.cache_clear()
    templating._unescaped_promql.cache_clear()
    result = validate_paths([str(p) for p in paths])
    assert result.ok, result.problems
    return (templating._analyse.cache_info().misses
            + templating._unescaped_promql.cache_info().misses)


def test_templates_are_parsed_once_per_text_not_once_per_playbook(tmp_path):
    one = _parses([_write(tmp_path / "one", 1)])
    assert one >= 4  # the target's two, the when, the query; the precondition's splices
    assert _parses([_write(tmp_path / "many", 40)]) == one


def test_what_is_cached_is_bounded():
    for cached in (templating._analyse, templating._unescaped_promql, parse_matcher):
        assert cached.cache_info().maxsize is not None
    for i in range(70_000):  # more distinct plain scalars than the resolver keeps
        source.load_source("x.yaml", f"key: value{i}\n")
    assert len(source._RESOLVED) <= 65536


def test_a_failed_load_leaves_the_garbage_collector_running(tmp_path):
    (tmp_path / "bad.yaml").write_text("playbooks: [{name: x, steps: [", encoding="utf-8")
    (tmp_path / "worse.yaml").write_bytes(b"\xff\xfe not utf-8")
    assert not validate_paths([str(tmp_path)]).ok
    assert gc.isenabled()
