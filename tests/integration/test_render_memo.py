"""Kept renders (templating/memo.py) change nothing a decision records: a mixed storm over the
shipped rules and the production config, drained with them and without, records the same
decisions byte for byte (steps, reasons, notes, titles), times aside; and a secret learned
after a render was kept is redacted from every later decision that reuses it."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import yaml

from remediator import redact
from remediator.alerts import parse_notification
from remediator.config import Config, load_config
from remediator.service import Service
from remediator.templating import memo as template_memo
from tests.conftest import write_rules
from tests.support.payloads import alert, notification
from tests.support.worker import TOKEN, InProcessWorker, loopback_guards

ROOT = Path(__file__).resolve().parents[2]
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)?")


def label_sets() -> list[dict[str, str]]:
    """Every label set the playbook tests send, then each alert rule's own labels."""
    seen: dict[str, dict[str, str]] = {}
    for path in sorted((ROOT / "rules").glob("*_test.yaml")):
        for test in yaml.safe_load(path.read_text())["tests"]:
            for a in test.get("alerts", []):
                labels = {k: str(v) for k, v in a["labels"].items()}
                seen.setdefault(json.dumps(labels, sort_keys=True), labels)
    for path in sorted((ROOT / "deploy" / "prometheus").glob("*.rules.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    labels = {"alertname": rule["alert"],
                              **{k: str(v) for k, v in (rule.get("labels") or {}).items()}}
                    seen.setdefault(json.dumps(labels, sort_keys=True), labels)
    return list(seen.values())


def storm(alerts: int) -> list[bytes]:
    """Two alerts a request, of every 10 requests 8 new, 1 retry, 1 resolution (storm.lua's
    mix), cycling through the label sets."""
    sets = label_sets()
    bodies = []

    def body(n: int, status: str) -> bytes:
        labels = dict(sets[n % len(sets)])
        name = labels.pop("alertname")
        return json.dumps(notification(*(alert(name, status=status, fingerprint=f"{n:08x}{j}",
                                               **labels) for j in range(2)))).encode()

    for counter in range(1, alerts // 2 + 1):
        k = counter % 10
        bodies.append(body(counter - 1, "firing") if k == 7 else
                      body(counter - 5, "resolved") if k == 9 else body(counter, "firing"))
    return bodies


async def drain(bodies: list[bytes], tmp: Path) -> list[dict[str, Any]]:
    """The storm acknowledged, then decided one alert at a time (in order: what runs at once
    is left out, so the two drains meet the same guards)."""
    cfg = load_config(str(ROOT / "deploy" / "kubernetes" / "config.yaml"),
                      env={"REMEDIATOR_WEBHOOK_TOKEN": TOKEN}, secrets=False,
                      rules=[str(ROOT / "rules")], store=f"sqlite:///{tmp}/s.db",
                      escalation_dir=str(tmp / "notes"), rules_cache="")
    cfg.escalation_default_sinks, cfg.escalation_sinks = ["files"], {}
    service = Service(cfg)
    await service.start(dispatch=False)
    try:
        for body in bodies:
            await service.intake(parse_notification(body))
        assert service.engine is not None
        while items := await service.store.claim(1):
            await service.engine.process(items[0])
        decisions = await service.store.list_executions(100_000)
    finally:
        await service.stop()
    return sorted(decisions, key=lambda d: d["id"])


def normalised(decisions: list[dict[str, Any]]) -> str:
    return _TIME.sub("<time>", json.dumps(decisions, sort_keys=True, ensure_ascii=False))


def test_a_storm_records_the_same_decisions_with_kept_renders(tmp_path, monkeypatch):
    bodies = storm(600)
    template_memo.clear()
    monkeypatch.setattr(template_memo, "_reads", lambda *a: False)
    (tmp_path / "off").mkdir()
    rendered = asyncio.run(drain(bodies, tmp_path / "off"))
    monkeypatch.undo()
    template_memo._plans.clear()
    template_memo._read_by_text.clear()
    kept: list[object] = []
    real_get = template_memo.get
    monkeypatch.setattr(template_memo, "get", lambda entry: (
        lambda found: (found and kept.append(entry)) or found)(real_get(entry)))
    (tmp_path / "on").mkdir()
    memo = asyncio.run(drain(bodies, tmp_path / "on"))
    outcomes = {d["outcome"] for d in memo}
    # (no dry-run decision escalates now: a check computing on earlier results is planned,
    # not failed)
    assert {"planned", "blocked", "resolved", "no_match"} <= outcomes, outcomes
    notes = [d["escalation"]["note"] for d in memo if d.get("escalation")]
    assert len(notes) > len(memo) // 2
    assert len(kept) > len(memo)  # renders and conditions taken from what was kept
    assert normalised(memo) == normalised(rendered)


def test_a_secret_learned_after_a_kept_render_is_redacted(tmp_path):
    """A render is kept before redaction: every output redacts what it is given, after."""
    secret = "memo-secret-5b7e21"
    rules = write_rules(tmp_path / "rules", """
playbooks:
  - name: look
    match: {alertname: Look}
    steps:
      - {name: say, action: log, params: {message: "board {{ labels.board }}"}}
    escalation: {severity: warning, always: true, owner: "see {{ labels.board }}",
                 summary: "{{ labels.board }} is down"}
""")
    cfg = Config(rules=[str(rules)], store=f"sqlite:///{tmp_path}/w.db", webhook_token=TOKEN,
                 escalation_dir=str(tmp_path / "notes"), guards=loopback_guards())
    w = InProcessWorker(cfg).start()
    try:
        for tag in ("before", "after"):
            if tag == "after":
                redact.remember(secret)
            assert w.post_alerts(notification(alert("Look", board=secret,
                                                    fingerprint=tag)))[0] == 202
            w.wait_idle()
        decisions = {d["fingerprint"]: d for d in w.call(w.service.store.list_executions(10))}
    finally:
        w.stop()
    before, after = decisions["before"], decisions["after"]
    # not a secret yet: shown, and its renders kept; then redacted wherever it was rendered
    assert secret in json.dumps([before["escalation"], before["steps"]])
    assert secret not in json.dumps([after["escalation"], after["steps"]])
    assert "see <redacted>" in after["escalation"]["note"]
    assert after["escalation"]["title"] == "[WARNING] Look: <redacted> is down — planned"
    assert after["steps"][0]["detail"] == "log info: board <redacted>"
