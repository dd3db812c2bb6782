"""Every guard at its boundaries, through the real Service and store, on a simulated clock.

Actions are answered by a recording runner (the guards are under test here, not the
backends); each test counts the mutations that actually reached the runner.
"""

from __future__ import annotations

import asyncio
import json
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from remediator.alerts import parse_notification
from remediator.config import Config, ConfigError, load_config
from remediator.engine.executor import Executor
from remediator.guards import GuardSettings
from remediator.playtest import FakeClock
from remediator.service import Service
from tests.support.payloads import alert, notification
from tests.support.worker import loopback_guards

START = 1_767_607_200.0  # 2026-01-05T10:00:00Z, a Monday

PLAYBOOK = """
playbooks:
  - name: restart-web
    match: {{alertname: WebDown}}
    target: {{kind: deployment, namespace: "{{{{ labels.namespace }}}}", name: "{{{{ labels.deployment }}}}"}}
    guards: {guards}
    steps:
      - name: restart
        action: http.request
        params: {{url: "http://127.0.0.1:9/restart", method: POST}}{approval}
    escalation: {{severity: critical, always: {always}, next_steps: ["page the web team"]}}
"""


class Harness:
    """A Service on a file store and a fake clock; `calls` counts mutations that ran."""

    def __init__(self, tmp: Path, guards: str, approval: bool = False, slow: float = 0.0,
                 settings: GuardSettings | None = None, always: bool = False):
        rules = tmp / "rules"
        rules.mkdir(exist_ok=True)
        (rules / "web.yaml").write_text(textwrap.dedent(PLAYBOOK.format(
            guards=guards, approval="\n        approval: required" if approval else "",
            always=str(always).lower())))
        self.cfg = Config(rules=[str(rules)], store=f"sqlite:///{tmp}/guards.db", mode="live",
                          escalation_dir=str(tmp / "notes"),
                          guards=settings or loopback_guards())
        self.clock = FakeClock(START)
        self.calls: list[str] = []
        self.slow = slow
        self.notes = tmp / "notes"
        self.service: Service | None = None

    async def _runner(self, action: Any, params: dict, ctx: Any) -> dict:
        self.calls.append(ctx.execution_id)
        if self.slow:
            await asyncio.sleep(self.slow)
        return {"status": 202}

    async def start(self) -> Harness:
        self.service = Service(self.cfg, clock=self.clock, sleep=self.clock.sleep,
                               executor=Executor(runner=self._runner, retry_wait=0))
        await self.service.start(dispatch=False)
        return self

    async def restart(self) -> None:
        assert self.service is not None
        await self.service.stop()
        await self.start()

    async def fire(self, *alerts: dict, at: float | None = None) -> list[dict]:
        assert self.service is not None
        if at is not None:
            self.clock.now = START + at
        await self.service.intake(parse_notification(json.dumps(notification(*alerts)).encode()))
        return await self.service.drain()

    def note_files(self) -> list[Path]:
        return sorted(self.notes.glob("*.md")) if self.notes.exists() else []


def restart_then_approved_scale(guards: str) -> str:
    """restart-web's rules under `guards`: a restart, then a scale that waits for its approval
    (`Harness.calls` records the mutations that ran)."""
    return textwrap.dedent("""
        playbooks:
          - name: restart-web
            match: {alertname: WebDown}
            target: {kind: deployment, namespace: "{{ labels.namespace }}",
                     name: "{{ labels.deployment }}"}
            guards: GUARDS
            steps:
              - {name: restart, action: http.request,
                 params: {url: "http://127.0.0.1:9/restart", method: POST}}
              - {name: scale, action: http.request, approval: required,
                 params: {url: "http://127.0.0.1:9/scale", method: POST}}
        """).replace("GUARDS", guards)


def web(n: int, namespace: str = "prod", deployment: str = "web", fingerprint: str = "",
        **kw: Any) -> dict:
    """Episode `n` of the alert: a new startsAt each time it fires again."""
    return alert("WebDown", namespace=namespace, deployment=deployment,
                 fingerprint=fingerprint or deployment,
                 starts_at=f"2026-01-05T{10 + n // 60:02d}:{n % 60:02d}:00Z", **kw)


def test_rate_limit_at_its_boundary_and_across_a_restart(tmp_path, run):
    h = run(Harness(tmp_path, "{rate_limit: {max: 3, window: 1h}}").start())
    for n in range(3):
        [d] = run(h.fire(web(n), at=n * 60))
        assert d["outcome"] == "succeeded"
    run(h.restart())  # counters live in the store
    [d] = run(h.fire(web(3), at=3 * 60))
    assert d["outcome"] == "blocked"
    assert d["reason"].startswith("rate_limited: 3 of max 3 mutations of restart-web:prod/deployment/web")
    assert "next allowed at 2026-01-05T11:00:00Z" in d["reason"]
    [d] = run(h.fire(web(4), at=3600 - 1))
    assert d["outcome"] == "blocked"  # the first event is still inside the window
    [d] = run(h.fire(web(5), at=3600 + 1))
    assert d["outcome"] == "succeeded"
    assert len(h.calls) == 4
    run(h.service.stop())


def test_cooldown_at_its_boundary(tmp_path, run):
    h = run(Harness(tmp_path, "{cooldown: 10m}").start())
    assert run(h.fire(web(0), at=0))[0]["outcome"] == "succeeded"
    [d] = run(h.fire(web(1), at=599))
    assert (d["outcome"], d["reason"].split(":")[0]) == ("blocked", "cooldown")
    assert "ends at 2026-01-05T10:10:00Z" in d["reason"]
    assert run(h.fire(web(2), at=601))[0]["outcome"] == "succeeded"
    # another target is not cooling down
    assert run(h.fire(web(3, deployment="api"), at=602))[0]["outcome"] == "succeeded"
    assert len(h.calls) == 3
    run(h.service.stop())


STEP_TARGET = """
playbooks:
  - name: proxy-web
    match: {alertname: ProxyDown}
    target: {kind: deployment, namespace: prod, name: proxy}
    guards: {rate_limit: {max: 1, window: 1h}}
    steps:
      - name: restart_web
        action: http.request
        target: {kind: deployment, namespace: prod, name: "{{ labels.deployment }}"}
        params: {url: "http://127.0.0.1:9/restart", method: POST}
"""


def test_a_step_with_its_own_target_takes_that_objects_cooldown_and_rate_limit(tmp_path, run):
    h = Harness(tmp_path, "{cooldown: 10m}")
    (tmp_path / "rules" / "proxy.yaml").write_text(STEP_TARGET)
    run(h.start())
    proxy = alert("ProxyDown", namespace="prod", deployment="web", fingerprint="proxy")
    assert run(h.fire(proxy, at=0))[0]["outcome"] == "succeeded"
    # web was changed by proxy-web's step: web's own playbook is cooling down
    [d] = run(h.fire(web(1), at=60))
    assert (d["outcome"], d["reason"].split(":")[0]) == ("blocked", "cooldown")
    assert d["reason"].startswith("cooldown: prod/deployment/web was last changed at "
                                  "2026-01-05T10:00:00Z")
    # the step's rate limit is counted on web, not on the playbook's target (proxy)
    [d] = run(h.fire(dict(proxy, startsAt="2026-01-05T10:02:00Z"), at=120))
    assert d["outcome"] == "blocked"
    assert d["reason"].startswith("rate_limited: 1 of max 1 mutations of "
                                  "proxy-web:prod/deployment/web")
    assert len(h.calls) == 1
    run(h.service.stop())


def test_two_alerts_for_one_target_arriving_together_run_once(tmp_path, run):
    h = run(Harness(tmp_path, "{cooldown: 1m}", slow=0.2).start())
    decisions = run(h.fire(web(0, fingerprint="a"), web(0, fingerprint="b", severity="page")))
    outcomes = sorted(d["outcome"] for d in decisions)
    assert outcomes == ["blocked", "succeeded"]
    coalesced = next(d for d in decisions if d["outcome"] == "blocked")
    assert coalesced["reason"].startswith("locked: coalesced into running execution")
    assert len(h.calls) == 1
    run(h.service.stop())


def test_another_playbooks_alert_waits_for_the_target_instead_of_being_coalesced(tmp_path, run):
    # DeltaCrown: the save-failure playbook is still diagnosing the deployment when the
    # read-fallback alert arrives; it is a different remedy, so it must run after, not vanish.
    h = Harness(tmp_path, "{cooldown: 1m}", slow=0.3)
    (tmp_path / "rules" / "slow.yaml").write_text(PLAYBOOK.format(
        guards="{rate_limit: {max: 3, window: 1h}}", approval="", always="false")
        .replace("restart-web", "scale-web")
        .replace("WebDown", "WebSlow"))
    run(h.start())
    slow = web(0, fingerprint="slow")
    decisions = run(h.fire(web(0), dict(slow, labels={**slow["labels"], "alertname": "WebSlow"})))
    assert sorted((d["playbook"], d["outcome"]) for d in decisions) == [
        ("restart-web", "succeeded"), ("scale-web", "succeeded")]
    assert len(h.calls) == 2
    # While one waits, more alerts of its playbook join it rather than each taking a slot.
    more = [dict(slow, fingerprint=f"slow{i}", startsAt="2026-01-05T10:01:00Z",
                 labels={**slow["labels"], "alertname": "WebSlow", "n": str(i)})
            for i in range(3)]
    decisions = run(h.fire(dict(web(1), fingerprint="w1"), *more, at=300))
    waiting = [d for d in decisions if d["outcome"] == "blocked"]
    assert [(d["playbook"], " waiting for prod/deployment/web" in d["reason"])
            for d in waiting] == [("scale-web", True)] * 2, waiting
    assert len(h.calls) == 4
    # Another alert of a playbook already changing the target is still coalesced into it.
    decisions = run(h.fire(dict(web(5), fingerprint="x"), dict(web(5), fingerprint="y"),
                           at=900))
    assert sorted(d["outcome"] for d in decisions) == ["blocked", "succeeded"]
    run(h.service.stop())


def test_circuit_breaker_opens_once_with_one_not_working_note(tmp_path, run):
    h = run(Harness(tmp_path, "{cooldown: 1m, circuit_breaker: {max_refires: 2, window: 1h}}").start())
    assert run(h.fire(web(0), at=0))[0]["outcome"] == "succeeded"
    assert run(h.fire(web(5), at=300))[0]["outcome"] == "succeeded"
    [opened] = run(h.fire(web(10), at=600))
    assert opened["outcome"] == "blocked"
    assert opened["reason"].startswith("circuit_open: remediation is not working")
    [still] = run(h.fire(web(15), at=900))
    assert still["reason"].startswith("circuit_open: circuit for restart-web on prod/deployment/web open")
    assert len(h.calls) == 2
    notes = [p.read_text() for p in h.note_files()]
    assert sum("remediation is not working" in n for n in notes) == 1
    assert len(notes) == 1  # the repeat was blocked without paging again
    run(h.service.stop())


def test_scope_denies_system_namespaces_and_honours_allow_list(tmp_path, run):
    settings = loopback_guards(namespaces_allow=["prod", "kube-system"],
                               namespaces_deny=["kube-system"])
    h = run(Harness(tmp_path, "{cooldown: 1m}", settings=settings).start())
    [d] = run(h.fire(web(0, namespace="staging")))
    assert d["reason"] == "scope_denied: namespace 'staging' is not in the allow list (prod, kube-system)"
    (tmp_path / "defaults").mkdir()
    h2 = run(Harness(tmp_path / "defaults", "{cooldown: 1m}").start())
    [d2] = run(h2.fire(web(0, namespace="kube-system")))
    assert d2["reason"] == "scope_denied: namespace 'kube-system' is denied"
    assert h.calls == [] and h2.calls == []
    run(h.service.stop())
    run(h2.service.stop())


def test_global_budget_spans_targets(tmp_path, run):
    h = run(Harness(tmp_path, "{cooldown: 1m}", settings=loopback_guards(budget_max=2)).start())
    outcomes = [run(h.fire(web(0, deployment=f"d{i}"), at=i))[0]["outcome"] for i in range(3)]
    assert outcomes == ["succeeded", "succeeded", "blocked"]
    [d] = run(h.fire(web(0, deployment="d9"), at=3))
    assert "global budget spent: 2 of max 2" in d["reason"]
    run(h.service.stop())


def test_pause_records_but_never_mutates(tmp_path, run):
    h = run(Harness(tmp_path, "{cooldown: 1m}").start())
    run(h.service.store.put_state("paused", {"paused": True, "by": "alice"}))
    [d] = run(h.fire(web(0)))
    assert d["outcome"] == "blocked" and d["reason"].startswith("paused: automation is paused by alice")
    # Paused automation still tells a human, and shows what it would have done.
    [note] = [f.read_text() for f in h.note_files()]
    assert note.startswith("# [CRITICAL] WebDown: ") and "blocked by paused, nothing was changed" \
        in note.splitlines()[0]
    assert "automation is paused by alice" in note
    assert "## What would have run\n\n1. `restart`: would send POST http://127.0.0.1:9/restart" in note
    run(h.service.store.put_state("paused", {"paused": False}))
    assert run(h.fire(web(1), at=120))[0]["outcome"] == "succeeded"
    assert len(h.calls) == 1
    run(h.service.stop())


def test_precondition_rechecked_after_delay(tmp_path, run):
    h = run(Harness(tmp_path, "{cooldown: 1m, precondition: {alert_firing: true, delay: 5m}}").start())
    answers = iter([(False, "WebDown is no longer firing at Alertmanager"), (True, "")])

    async def canned(promql, alert, check_firing):
        assert check_firing
        return next(answers)
    h.service.engine.guards.precondition = canned
    [d] = run(h.fire(web(0), at=0))
    assert d["reason"] == "precondition_false: WebDown is no longer firing at Alertmanager"
    assert d["escalation"] is None  # the problem went away: nobody is paged
    assert h.clock.now == START + 300  # it waited the delay before re-checking
    assert run(h.fire(web(10), at=600))[0]["outcome"] == "succeeded"
    assert len(h.calls) == 1


def test_a_precondition_that_cannot_be_checked_blocks_and_escalates(tmp_path, run):
    h = run(Harness(tmp_path, "{cooldown: 1m, precondition: {promql: 'up == 0'}}").start())

    async def unreachable(promql, alert, check_firing):
        return None, "precondition could not be checked, so nothing was done: Prometheus unreachable"
    h.service.engine.guards.precondition = unreachable
    [d] = run(h.fire(web(0)))
    assert d["outcome"] == "blocked" and d["escalation"] is not None
    assert d["reason"].startswith("precondition_unknown: precondition could not be checked")
    assert "could not be checked" in h.note_files()[0].read_text()
    assert h.calls == []
    run(h.service.stop())


def test_time_window_only_escalates_outside_hours(tmp_path, run):
    windows = "{cooldown: 1m, time_windows: [{days: [mon, tue, wed, thu, fri], start: '09:00', end: '17:00'}]}"  # noqa: E501
    h = run(Harness(tmp_path, windows).start())
    assert run(h.fire(web(0), at=0))[0]["outcome"] == "succeeded"  # Monday 10:00Z
    [d] = run(h.fire(web(1), at=8 * 3600))  # Monday 18:00Z
    assert d["reason"].startswith("time_window: 18:00Z mon is outside")
    assert d["escalation"] is not None and len(h.note_files()) == 1
    run(h.service.stop())


def test_approval_pauses_then_resumes_once_approved(tmp_path, run):
    h = run(Harness(tmp_path, "{cooldown: 1m, approval_ttl: 30m}", approval=True).start())
    [d] = run(h.fire(web(0)))
    assert d["outcome"] == "blocked" and d["reason"].startswith("approval_pending: step 'restart'")
    note = h.note_files()[0].read_text()
    assert f"remediator approve {d['id']}" in note and "/approve" in note
    assert h.calls == []
    resumed = run(h.service.approve(d["id"], by="alice"))
    assert resumed["outcome"] == "succeeded" and h.calls == [d["id"]]
    with pytest.raises(ValueError, match="no pending approval"):
        run(h.service.approve(d["id"], by="bob"))
    run(h.service.stop())


def test_an_approval_asked_under_a_cooldown_says_the_step_would_be_refused(tmp_path, run):
    # Paged, approved, then refused by the cooldown: the request now says so up front.
    h = run(Harness(tmp_path, "{cooldown: 1h, approval_ttl: 30m}", approval=True).start())
    [first] = run(h.fire(web(0), at=0))
    assert "would be refused" not in first["reason"]
    assert run(h.service.approve(first["id"], by="alice"))["outcome"] == "succeeded"
    [second] = run(h.fire(web(5), at=300))
    assert second["reason"].startswith("approval_pending: step 'restart' needs approval")
    assert second["reason"].endswith("; approved now, it would be refused: cooldown: "
                                     "prod/deployment/web was last changed at "
                                     "2026-01-05T10:00:00Z; cooldown 1h ends at "
                                     "2026-01-05T11:00:00Z"), second["reason"]
    assert h.calls == [first["id"]]
    run(h.service.stop())


def test_rejected_expired_and_resolved_approvals_never_run(tmp_path, run):
    h = run(Harness(tmp_path, "{cooldown: 1m, approval_ttl: 30m}", approval=True).start())
    [rejected] = run(h.fire(web(0, deployment="a")))
    assert run(h.service.approve(rejected["id"], by="bob", approve=False))["reason"] == \
        "approval_denied: step 'restart': approval rejected by bob"
    # The rejected execution no longer holds its target: a new episode is not coalesced.
    # (The approval re-queued its alert, so this drain also returns the final rejection.)
    [again] = [d for d in run(h.fire(web(5, deployment="a"), at=300)) if d["id"] != rejected["id"]]
    assert again["reason"].startswith("approval_pending: step 'restart' needs approval")
    [expiring] = run(h.fire(web(0, deployment="b")))
    h.clock.now += 31 * 60
    assert run(h.service.engine.expire_approvals()) == 2  # b, and the second episode of a
    expired = run(h.service.store.get_execution(expiring["id"]))
    assert expired["outcome"] == "escalated" and "not approved before it expired" in expired["reason"]
    [resolving] = run(h.fire(web(0, deployment="c")))
    run(h.fire(web(0, deployment="c", status="resolved")))
    with pytest.raises(ValueError, match="resolved"):
        run(h.service.approve(resolving["id"], by="carol"))
    assert h.calls == []
    run(h.service.stop())


def test_history_is_pruned_after_its_retention_but_pending_approvals_are_kept(tmp_path, run):
    h = run(Harness(tmp_path, "{rate_limit: {max: 5, window: 1h}, approval_ttl: 1000d}",
                    approval=True).start())
    [old] = run(h.fire(web(0, deployment="a")))
    assert run(h.service.approve(old["id"], by="alice"))["outcome"] == "succeeded"
    # (The approval re-queued a's alert: this drain also returns a's final decision.)
    [waiting] = [d for d in run(h.fire(web(0, deployment="b"))) if d["id"] != old["id"]]
    store = h.service.store
    # Decided approvals leave the index that expiry scans every 10 s.
    assert list(run(store.list_state("approval-pending:"))) == [f"approval-pending:{waiting['id']}:restart"]
    h.clock.now = time.time() + 91 * 86400  # past the default 90 days (the store's times are real)
    run(h.service.maintain())
    assert run(store.get_execution(old["id"])) is None
    assert run(store.completed_steps(old["id"])) == {}
    assert run(store.list_state(f"approval:{old['id']}:")) == {}
    assert run(store.events_since("mutation", "restart-web:prod/deployment/a", 0)) == []
    kept = run(store.get_execution(waiting["id"]))  # its approval is still pending
    assert kept["outcome"] == "blocked" and run(store.get_state(f"approval:{waiting['id']}:restart"))
    run(h.service.stop())


def test_history_retention_is_configurable_and_at_least_a_day():
    assert load_config(env={}).history_retention == 90 * 86400
    assert load_config(env={"REMEDIATOR_HISTORY_RETENTION": "30d"}).history_retention == 30 * 86400
    with pytest.raises(ConfigError, match="history_retention must be at least 1d"):
        load_config(env={"REMEDIATOR_HISTORY_RETENTION": "1h"})
    with pytest.raises(ConfigError, match="history_retention must be at least inbox_retention"):
        load_config(env={"REMEDIATOR_HISTORY_RETENTION": "2d", "REMEDIATOR_INBOX_RETENTION": "7d"})


def test_a_success_counts_for_the_circuit_while_its_note_goes_out(tmp_path, run):
    """The target is released once the steps are done; a success the circuit must count is
    recorded before a note is delivered, not after (a slow sink must not let the same
    playbook run again on the target past its circuit breaker meanwhile)."""
    h = Harness(tmp_path, "{rate_limit: {max: 10, window: 1h}, "
                          "circuit_breaker: {max_refires: 1, window: 1h}}", always=True)
    run(h.start())
    escalator = h.service.engine.escalator
    deliver, sending, delivered = escalator.escalate, asyncio.Event(), asyncio.Event()

    async def slow_sink(decision: dict, pb: Any, deliver_: bool = True) -> dict:
        if not sending.is_set():  # the first note: held until the second alert is decided
            sending.set()
            await delivered.wait()
        return await deliver(decision, pb, deliver=deliver_)

    escalator.escalate = lambda decision, pb, deliver=True: slow_sink(decision, pb, deliver)

    async def scenario() -> tuple[list[dict], list[dict]]:
        first = asyncio.create_task(h.fire(web(0), at=0))
        await sending.wait()
        again = await h.fire(web(5), at=300)  # the alert fires again while the note goes out
        delivered.set()
        return await first, again

    [one], [two] = run(scenario())
    assert one["outcome"] == "escalated" and len(h.calls) == 1
    assert two["outcome"] == "blocked" and two["reason"].startswith("circuit_open"), two
    run(h.service.stop())


def test_an_alert_whose_step_changes_another_object_is_not_coalesced_away(tmp_path, run):
    """Coalescing drops an alert into the run already changing its target: sound only if
    that run changes what the alert's own run would. proxy-web's step restarts the
    deployment its alert names (`target:` of its own): an alert about `api` arriving while
    the run for `web` holds the playbook's target must still get `api` restarted."""
    h = Harness(tmp_path, "{cooldown: 1m}", slow=0.2)
    (tmp_path / "rules" / "proxy.yaml").write_text(STEP_TARGET.replace("max: 1", "max: 5"))
    run(h.start())
    decisions = run(h.fire(*(alert("ProxyDown", namespace="prod", deployment=name,
                                   fingerprint=name) for name in ("web", "api", "db"))))
    outcomes = {d["fingerprint"]: (d["outcome"], d["reason"]) for d in decisions}
    assert [outcomes[n][0] for n in ("web", "api", "db")] == [
        "succeeded", "succeeded", "blocked"], outcomes
    assert len(h.calls) == 2
    # One waiter per playbook and target, as before; a third object is not dropped silently.
    assert outcomes["db"][1] == (
        "locked: prod/deployment/proxy is being changed by execution "
        f"{decisions[0]['id']}, and execution {decisions[1]['id']} of this playbook waits for "
        "it to change other objects than this alert's (prod/deployment/db); this one did not "
        "run")
    assert decisions[2]["escalation"] is not None
    # Two alerts about the same deployment are still one remedy: coalesced.
    decisions = run(h.fire(*(alert("ProxyDown", namespace="prod", deployment="db",
                                   fingerprint=f"db{i}") for i in range(2)), at=600))
    assert [d["outcome"] for d in decisions] == ["succeeded", "blocked"]
    assert decisions[1]["reason"].startswith("locked: coalesced into running execution")
    assert len(h.calls) == 3
    run(h.service.stop())


def test_a_success_is_counted_before_its_target_is_let_go(tmp_path, run):
    """Hostile: the target was released once the steps were done, before the success the
    circuit counts was written. Another firing decided in between (here: while the final
    write waits for its commit) found the circuit one short and the target free, and ran:
    one remediation more than `max_refires`. The target is now held until the success is
    recorded: that firing is coalesced into the run, as one arriving during its steps."""
    h = run(Harness(tmp_path, "{rate_limit: {max: 10, window: 1h}, "
                              "circuit_breaker: {max_refires: 1, window: 1h}}").start())
    service, store = h.service, h.service.store
    save, seen = store.save_execution, []

    async def meanwhile(decision: dict, events: list | None = None, **kwargs) -> None:
        if events and not seen:  # the first run's final write, with its success
            seen.append(None)
            [item] = await store.claim(1)  # the next firing, decided before it commits
            seen.extend(await service.engine.process(item))
        await save(decision, events, **kwargs)

    store.save_execution = meanwhile

    async def scenario() -> dict:
        for n in (0, 5):
            await service.intake(parse_notification(json.dumps(notification(web(n))).encode()))
        [first] = await store.claim(1)
        [one] = await service.engine.process(first)
        return one

    one = run(scenario())
    [_, two] = seen
    assert one["outcome"] == "succeeded" and h.calls == [one["id"]], (one, two)
    assert two["outcome"] == "blocked", two
    run(service.stop())


READ_RULES = """
playbooks:
  - name: look
    match: {alertname: PodCrash}
    steps:
      - name: pods
        action: kubernetes.get
        params: {resource: pods, namespace: "{{ labels.namespace }}", name: web}
"""


def test_a_read_in_a_namespace_a_label_chose_is_held_to_the_namespace_lists(worker_factory):
    """A label namespace=kube-system made a kubernetes.get read kube-system into the note:
    the namespace lists were checked for changes only."""
    w = worker_factory(READ_RULES)
    for namespace in ("kube-system", "shop"):
        assert w.post_alerts(notification(alert("PodCrash", namespace=namespace,
                                                fingerprint=namespace)))[0] == 202
    decided = {d["fingerprint"]: d for d in w.wait_executions(2)}
    [step] = decided["kube-system"]["steps"]
    assert (step["outcome"], step["guard"]) == ("blocked", "scope_denied"), step
    assert step["detail"] == "namespace 'kube-system' is denied"
    assert decided["shop"]["steps"][0]["outcome"] != "blocked", decided["shop"]
