"""Shared fixtures. Real components come from tests/support (processes) and tests/kubeapi."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

import pytest

from remediator.config import Config
from remediator.event_loop import loop_factory
from remediator.store import open_store
from tests.support.worker import OPERATORS, TOKEN, InProcessWorker, loopback_guards

pytest_plugins = ["tests.support.plugin", "tests.kubeapi.fixtures"]

# A rule set that matches no alert sent: serve and replay refuse one with no playbook at all.
NO_MATCH_RULES = "playbooks:\n  - name: note\n    match: {alertname: NeverSent}\n"
DEMO_RULES = """
playbooks:
  - name: demo-restart
    description: probe then log, the shape of a real remediation
    runbook: https://runbooks.example/demo
    match:
      alertname: DemoDown
      matchers: ['namespace=~"demo|prod"']
    target: {kind: deployment, namespace: "{{ labels.namespace }}", name: "{{ labels.deployment }}"}
    steps:
      - name: note
        action: log
        params: {message: "remediating {{ labels.deployment }} in {{ labels.namespace }}"}
    escalation: {severity: warning, next_steps: ["check the deployment"]}
"""

# One restart behind a human approval; `%(url)s` is what the restart POSTs to.
APPROVAL_RULES = """
playbooks:
  - name: restart-web
    match: {alertname: WebDown}
    target: {kind: deployment, namespace: prod, name: web}
    guards: {cooldown: 1m}
    steps:
      - name: restart
        action: http.request
        approval: required
        params: {url: "%(url)s", method: POST}
    escalation: {severity: critical}
"""


def new_store(url: str) -> str:
    """A store created as `serve`'s first start creates it: `replay --mode live` refuses a
    store that does not exist (it would hold no guard state)."""
    async def create() -> None:
        store = open_store(url)
        await store.open()
        await store.close()

    asyncio.run(create())
    return url


def write_rules(directory: Path, text: str, name: str = "rules.yaml") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return directory


@pytest.fixture
def run():
    """Run coroutines from a synchronous test on one event loop for the whole test: the
    loop `serve` runs on."""
    loop = loop_factory()()
    yield loop.run_until_complete
    loop.close()


@pytest.fixture
def worker_factory(tmp_path):
    """Start in-process workers on real ports; stopped at teardown."""
    started: list[InProcessWorker] = []

    def start(rules: str = DEMO_RULES, **settings) -> InProcessWorker:
        rules_dir = write_rules(tmp_path / f"rules{len(started)}", rules)
        cfg = Config(rules=[str(rules_dir)], store=f"sqlite:///{tmp_path}/w{len(started)}.db",
                     webhook_token=TOKEN, escalation_dir=str(tmp_path / "escalations"),
                     operators=list(OPERATORS), guards=loopback_guards())
        for key, value in settings.items():
            setattr(cfg, key, value)
        worker = InProcessWorker(cfg).start()
        started.append(worker)
        return worker

    yield start
    for w in started:
        w.stop()
