"""What the engine keeps per version of a playbook (a literal step's checked parameters and
its dry-run record, a note's templates and severity, whether it mutates) is the loaded
version's, reload after reload: a playbook and its steps keep their names across versions,
and an old version's objects are freed, their addresses soon a new one's."""

from __future__ import annotations

import gc
import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from remediator.alerts import parse_notification
from remediator.config import Config
from remediator.engine.executor import Executor
from remediator.service import Service
from tests.support.payloads import alert, notification
from tests.support.worker import loopback_guards

RULES = """
playbooks:
  - name: web
    match: {{alertname: WebDown}}
    target: {{kind: deployment, namespace: prod, name: "{target}"}}
    guards: {{rate_limit: {{max: 100, window: 1h}}}}
    steps:
      - name: say
        action: log
        params: {{message: "version {v}"}}
      - name: restart
        action: http.request
        params: {{url: "http://127.0.0.1:9/v{v}", method: {method}}}
    escalation: {{severity: {severity}, always: true, summary: "web is down",
                 next_steps: ["page {{{{ labels.team }}}}"]}}
"""
SEVERITIES = ("info", "warning", "critical", "emergency")


@pytest.mark.parametrize("mode", ["dry-run", "live"])
def test_each_reload_runs_the_version_it_loaded(tmp_path: Path, run: Any, mode: str) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    called: list[str] = []

    async def runner(action: Any, params: dict, ctx: Any) -> dict:
        called.append(params.get("url", params.get("message")))
        return {"status": 200}

    def write(v: int) -> None:
        (rules / "web.yaml").write_text(textwrap.dedent(RULES.format(
            v=v, target=f"web{v % 2}", method="POST" if v % 2 else "GET",
            severity=SEVERITIES[v % 4])))

    write(0)
    cfg = Config(rules=[str(rules)], store=f"sqlite:///{tmp_path}/s.db", mode=mode,
                 escalation_dir=str(tmp_path / "notes"), guards=loopback_guards(),
                 rules_cache="")
    service = Service(cfg, executor=Executor(runner=runner, retry_wait=0))

    async def fire(n: int) -> dict:
        body = notification(alert("WebDown", fingerprint=f"f{n}", team="ops"))
        await service.intake(parse_notification(json.dumps(body).encode()))
        [decision] = await service.drain()
        return decision

    async def scenario() -> None:
        await service.start(dispatch=False)
        try:
            for v in range(8):
                if v:
                    write(v)
                    await service.reload()
                    gc.collect()  # the old version's objects freed: their ids free for reuse
                for n in range(2):  # the second decision finds what the first kept
                    called.clear()
                    d = await fire(v * 10 + n)
                    steps = {s["name"]: s for s in d["steps"]}
                    assert steps["say"]["params"]["message"] == f"version {v}"
                    assert steps["restart"]["params"]["url"] == f"http://127.0.0.1:9/v{v}"
                    assert steps["restart"]["mutating"] is bool(v % 2)
                    assert d["target"] == f"prod/deployment/web{v % 2}"
                    if mode == "dry-run":
                        assert steps["say"]["detail"] == f"log info: version {v}"
                        assert f"http://127.0.0.1:9/v{v}" in steps["restart"]["detail"]
                    else:
                        assert called == [f"version {v}", f"http://127.0.0.1:9/v{v}"], (
                            d["outcome"], d["reason"], steps["restart"])
                    note = d["escalation"]["note"]
                    assert note.startswith(f"# [{SEVERITIES[v % 4].upper()}] WebDown: "
                                           "web is down — "), note[:80]
                    assert "1. page ops\n" in note
        finally:
            await service.stop()

    run(scenario())
