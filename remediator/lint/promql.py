"""The playbooks' PromQL, checked by Prometheus' own parser when `promtool` is on the PATH.

Every query a playbook holds (a precondition's `promql`, every action parameter declared
`kind="promql"`: `prometheus.query`, `prometheus.wait_until`, a plugin's) becomes an alerting
rule of one synthetic rule file, and `promtool check rules` runs once per lint, however many
files; its errors are mapped back to the playbook's `file:line`.

Templates are replaced by placeholders first: a word inside a PromQL string, a duration
inside `[...]` or after `offset`, a name before `{` or `[`, and elsewhere a number or, in a
second variant, a name, so `topk({{ n }}, up)`, `{{ metric }}{job="a"}` and
`sum by ({{ label }}) (up)` all parse; a query is reported only when every variant fails.
A query with `{% %}` statements is not checked (only run time knows its shape). Without
promtool nothing is checked, and `lint -v` says so: never an error.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path as FsPath
from typing import Any

from ..actions.registry import ACTIONS
from ..playbooks.models import Playbook
from ..playbooks.source import Path, Problem
from ..playbooks.validate import Validation

_TEMPLATE = re.compile(r"\{\{.*?\}\}", re.S)
# promtool: `file: 7:15: group "g", rule 2, "q1v0": could not parse expression: 1:10: ...`
_ERROR = re.compile(r'rule \d+, "q(\d+)v(\d+)": (?:could not parse expression: )?(.*)$')
_OUTSIDE = ("1", "templated")  # a template outside strings and durations: a number, a name


def queries(result: Validation) -> Iterator[tuple[Playbook, Path, str]]:
    """(playbook, path inside it, text) of every PromQL query in the validated playbooks."""
    for pb in result.playbooks:
        promql = (pb.guards.get("precondition") or {}).get("promql")
        if isinstance(promql, str):
            yield pb, ("guards", "precondition", "promql"), promql
        for section in ("steps", "on_resolved"):
            for j, step in enumerate(getattr(pb, section)):
                for key, spec in ACTIONS[step.action].params.items():
                    value = step.params.get(key)
                    if spec.kind == "promql" and isinstance(value, str):
                        yield pb, (section, j, "params", key), value


def variants(text: str) -> list[str]:
    """The query with its templates replaced by placeholders, one text per variant."""
    return list(dict.fromkeys(_fill(text, outside) for outside in _OUTSIDE))


def _fill(text: str, outside: str) -> str:
    out: list[str] = []
    quote, square, i = "", 0, 0
    while i < len(text):
        if found := _TEMPLATE.match(text, i):
            duration = square or re.search(r"\boffset\s*$", "".join(out))
            selector = text[found.end():].lstrip()[:1] in ("{", "[")  # a metric's name
            out.append("x" if quote else "5m" if duration else
                       _OUTSIDE[1] if selector else outside)
            i = found.end()
            continue
        c = text[i]
        if quote and c == "\\":
            out.append(text[i:i + 2])
            i += 2
            continue
        if quote:
            quote = "" if c == quote else quote
        elif c in "\"'`":
            quote = c
        elif c in "[]":
            square = square + 1 if c == "[" else max(0, square - 1)
        out.append(c)
        i += 1
    return "".join(out)


def check_promql(result: Validation, notes: list[str]) -> list[Problem]:
    """promtool's verdict on every query, located in its playbook; `notes` says what ran."""
    every = list(queries(result))
    found = [q for q in every if "{%" not in q[2] and "{#" not in q[2]]
    if len(found) < len(every):
        notes.append(f"{len(every) - len(found)} PromQL queries with {{% %}} statements were not "
                     "checked by promtool")
    if not found:
        return []
    promtool = shutil.which("promtool")
    if promtool is None:
        notes.append(f"promtool is not on the PATH: {len(found)} PromQL queries were not "
                     "checked (it comes with Prometheus: apt-get install prometheus)")
        return []
    tried = [variants(text) for _, _, text in found]
    rules = [{"alert": f"q{i}v{v}", "expr": expr}
             for i, exprs in enumerate(tried) for v, expr in enumerate(exprs)]
    done = _run(promtool, {"groups": [{"name": "remediator-playbooks", "rules": rules}]})
    if isinstance(done, str):
        return [Problem("<promtool>", 1, 1, "warning", done)]
    failed: dict[int, list[str]] = {}
    for line in done.stdout.splitlines() + done.stderr.splitlines():
        if m := _ERROR.search(line):
            failed.setdefault(int(m.group(1)), []).append(m.group(3).strip())
    if done.returncode != 0 and not failed:
        return [Problem("<promtool>", 1, 1, "warning", "promtool check rules failed: "
                        + (done.stderr or done.stdout).strip()[-500:])]
    notes.append(f"promtool checked {len(found)} PromQL queries")
    problems = []
    for i, messages in sorted(failed.items()):
        if len(messages) < len(tried[i]):
            continue  # a placeholder made one variant fail, another parses
        pb, where, text = found[i]
        placeholders = " (templates replaced by placeholders)" if _TEMPLATE.search(text) else ""
        problems.append(result.problem_at(pb, where, "error",
                                          f"PromQL{placeholders}: promtool: {messages[0]}"))
    return problems


def _run(promtool: str, rules: dict[str, Any]) -> subprocess.CompletedProcess[str] | str:
    with tempfile.TemporaryDirectory(prefix="remediator-lint-") as tmp:
        file = FsPath(tmp) / "playbook-promql.yml"
        file.write_text(json.dumps(rules), encoding="utf-8")  # JSON is YAML
        try:
            return subprocess.run([promtool, "check", "rules", "--lint=none", str(file)],
                                  capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"promtool could not run: {exc}"
