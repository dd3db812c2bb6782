"""Lint speed: `validate_paths` over 1 000 generated playbook files, against plain YAML parsing.

The floor is 1 000 files in under 1 s (issue 17). The baseline (`yaml.safe_load` of the same
files, libyaml when available) shows how much of the time is the validator's own work.

    python bench/lint_bench.py [--files 1000] [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml

from remediator.playbooks.validate import rule_files, validate_paths

PLAYBOOK = """\
playbooks:
  - name: restart-{i}
    description: restart the deployment when its pods crash-loop ({i})
    runbook: https://runbooks.example/restart-{i}
    match:
      alertname: [PodCrashLooping{i}, PodNotReady{i}]
      matchers: ['namespace=~"shop|pay"', 'severity!="info"']
    target: {{kind: deployment, namespace: "{{{{ labels.namespace }}}}", name: "{{{{ labels.deployment }}}}"}}
    guards:
      rate_limit: {{max: 3, window: 1h}}
      cooldown: 10m
      circuit_breaker: {{max_refires: 3, window: 2h}}
      precondition: {{promql: 'up{{job="{{{{ labels.job }}}}"}} == 0', alert_firing: true}}
    steps:
      - name: check
        action: prometheus.query
        params: {{query: 'rate(restarts{{namespace="{{{{ labels.namespace }}}}"}}[5m])'}}
      - name: restart
        action: http.request
        when: steps.check.result.value > 0
        params:
          url: "https://deploy.example/api/restart/{{{{ labels.namespace }}}}/{{{{ labels.deployment }}}}"
          method: POST
          expect_status: [200, 202]
      - name: verify
        action: prometheus.wait_until
        params: {{query: 'kube_deployment_status_replicas_available > 0', timeout: 5m}}
    on_resolved:
      - name: note
        action: log
        params: {{message: "{{{{ labels.deployment }}}} recovered"}}
    escalation:
      severity: critical
      owner: team-shop
      next_steps: ["check the logs", "roll back the last deploy"]
  - name: silence-{i}
    match: {{alertname: NoisyAlert{i}, status: firing}}
    target: {{kind: service, name: "{{{{ labels.service }}}}"}}
    guards: {{rate_limit: {{max: 1, window: 1d}}}}
    steps:
      - name: silence
        action: alertmanager.silence
        params: {{matchers: {{alertname: NoisyAlert{i}}}, duration: 2h}}
"""


def generate(directory: Path, count: int) -> None:
    for i in range(count):
        (directory / f"pb{i:04d}.yaml").write_text(PLAYBOOK.format(i=i), encoding="utf-8")


def timed(fn: Callable[[], object], runs: int) -> float:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--files", type=int, default=1000)
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args(argv)
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp), args.files)
        check = validate_paths([tmp])
        if not check.ok or len(check.playbooks) != 2 * args.files:
            print("generated playbooks do not validate:", *check.problems[:5], sep="\n  ")
            return 1

        def baseline() -> None:
            for f in rule_files([tmp]):
                yaml.load(Path(f).read_text(encoding="utf-8"), Loader=loader)

        lint = timed(lambda: validate_paths([tmp]), args.runs)
        base = timed(baseline, args.runs)
    print(f"{args.files} files, {2 * args.files} playbooks, median of {args.runs} runs "
          f"(libyaml: {'yes' if loader is not yaml.SafeLoader else 'no'})")
    print(f"  {'':<24}{'seconds':>10}{'files/s':>12}")
    print(f"  {'validate_paths':<24}{lint:>10.3f}{args.files / lint:>12.0f}")
    print(f"  {'yaml.load (baseline)':<24}{base:>10.3f}{args.files / base:>12.0f}")
    print(f"  ratio lint/baseline: {lint / base:.1f}x; floor < 1 s: "
          f"{'met' if lint < 1 else 'MISSED'}")
    return 0 if lint < 1 else 1


if __name__ == "__main__":
    sys.exit(main())
