"""A `no_match` answers "why wasn't this alert acted on?": its reason names the playbooks
meant for the alert's name and the matcher that refused each (Alertmanager's syntax), or says
no playbook handles that name at all, with the sender's label values quoted and cut short."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import write_rules
from tests.support.payloads import alert, notification
from tests.support.worker import WorkerProcess

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "no playbook matches this alert: "
PASSWORD_URL = "postgresql://admin:" + "hunter2" * 12 + "@db.example:5432/app"

RULES = """
playbooks:
  - name: web-prod
    match: {alertname: WebDown, matchers: ['namespace="prod"', 'team=~"web|edge"']}
    steps: [{name: look, action: log, params: {message: prod}}]
  - name: web-staging
    match: {alertname: WebDown, matchers: ['namespace=~"staging|dev"']}
    steps: [{name: look, action: log, params: {message: staging}}]
  - name: web-cleared
    match: {alertname: WebDown, status: resolved}
    steps: [{name: look, action: log, params: {message: cleared}}]
  - name: web-a
    match: {alertname: WebDown, matchers: ['env="a"']}
    steps: [{name: look, action: log, params: {message: a}}]
  - name: web-b
    match: {alertname: WebDown, matchers: ['env="b"']}
    steps: [{name: look, action: log, params: {message: b}}]
  - name: db-down
    match: {alertname: DbDown}
    steps: [{name: look, action: log, params: {message: db}}]
"""


def test_replay_names_the_shipped_playbook_and_the_matcher_that_refused(tmp_path):
    """The reviewer's case: HackathonFileProcessorDown from namespace prod against the shipped
    rules, whose service-down playbook is for namespace default."""
    payload = tmp_path / "payload.json"
    payload.write_text(json.dumps(notification(alert(
        "HackathonFileProcessorDown", namespace="prod", deployment="hackathon-file-processor"))))
    replay = [sys.executable, "-m", "remediator.cli", "replay", str(payload),
              "--rules", str(ROOT / "rules")]
    text = subprocess.run(replay, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert text.returncode == 0, text.stderr
    expected = (PREFIX + 'hackathon-service-down: namespace="default" does not match '
                'namespace="prod"')
    assert f"→ no_match: {expected}\n" in text.stdout, text.stdout
    done = subprocess.run([*replay, "--format", "json"], capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    [decision] = json.loads(done.stdout)
    assert (decision["outcome"], decision["reason"]) == ("no_match", expected)


def test_serve_records_near_misses_bounded_and_one_line(tmp_path):
    """Through a real `serve`, webhook to API: each candidate under the alertname with its
    first refusing matcher (or its status: a resolved-only playbook and a firing alert), at
    most three named; an alertname nothing handles said so; a hostile label (newlines, an
    ESC, 8 KiB: the largest value a webhook accepts) quoted, one line and cut short, in the
    decision and in its log line, a secret in it redacted before it is cut."""
    rules = write_rules(tmp_path / "rules", RULES)
    huge = "prod\n\x1b[2K" + "x" * 8183
    assert len(huge) == 8192
    w = WorkerProcess(tmp_path, [str(rules)]).start()
    try:
        code, _ = w.post_alerts(notification(
            alert("WebDown", fingerprint="team", namespace="prod", team="db"),
            alert("WebDown", fingerprint="noteam", namespace="prod"),
            alert("WebDown", fingerprint="hostile", namespace=huge, team="web", env="c"),
            alert("WebDown", fingerprint="secret", namespace=PASSWORD_URL),
            alert("WebDown", fingerprint="inline", namespace="prod password=s3cr3tpass",
                  team="Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlc2ln"),
            alert("DiskFull", fingerprint="nobody", device="sda"),
            alert("Disk\nFull\x1b[1A" + "y" * 8000, fingerprint="hostile-name")))
        assert code == 202
        deadline = time.monotonic() + 20
        while len(found := {d["fingerprint"]: d for d in w.decided()}) < 7:
            assert time.monotonic() < deadline, (found, w.logs())
            time.sleep(0.1)
    finally:
        assert w.stop() == 0
    assert {d["outcome"] for d in found.values()} == {"no_match"}
    reasons = {fp: d["reason"] for fp, d in found.items()}
    assert reasons["team"] == PREFIX + (
        'web-prod: team=~"web|edge" does not match team="db"; '
        'web-staging: namespace=~"staging|dev" does not match namespace="prod"; '
        "web-cleared: it handles only the alert's resolution, and this alert is firing; "
        "and 2 more")
    assert reasons["noteam"].startswith(
        PREFIX + 'web-prod: team=~"web|edge" does not match: the alert has no team label; ')
    assert reasons["hostile"].startswith(
        PREFIX + 'web-prod: namespace="prod" does not match namespace="prod\\n\\u001b[2Kxxx')
    assert "… (8192 characters); web-staging: " in reasons["hostile"]
    # a URL's password is redacted though the value is cut before its `@`
    assert "hunter2" not in reasons["secret"]
    assert 'does not match namespace="postgresql://<redacted>@db.example' in reasons["secret"]
    # so are an inline password and a bearer token, as in exec output
    assert "s3cr3tpass" not in reasons["inline"] and "eyJ" not in reasons["inline"], reasons
    assert reasons["nobody"] == PREFIX + 'none handles alertname="DiskFull"'
    assert reasons["hostile-name"].startswith(
        PREFIX + 'none handles alertname="Disk\\nFull\\u001b[1Ayyy')
    assert reasons["hostile-name"].endswith("… (8013 characters)")
    for reason in reasons.values():
        assert len(reason) < 600 and reason.isprintable(), reason
    logged = [json.loads(line) for line in w.log_path.read_text().splitlines()
              if "decision no_match" in line]
    assert len(logged) == 7
    assert sorted(entry["msg"] for entry in logged) == sorted(
        f"decision no_match: {reason}" for reason in reasons.values())


def test_replay_shows_the_alertname_nothing_handles(tmp_path):
    """The README's payload against rules for another alert: the reason names the alert as
    sent (the secret filter took CodeForgeS3UploadFailureHigh, 28 characters with a digit, for
    a key), and a label value of that shape in a refusal is shown too."""
    rules = write_rules(tmp_path / "rules", """
playbooks:
  - name: other
    match: {alertname: KubePodCrashLooping}
    steps: [{name: look, action: log, params: {message: x}}]
  - name: neural
    match: {alertname: Neural5xxRatioHighCritical, matchers: ['service="api"']}
    steps: [{name: look, action: log, params: {message: x}}]
""")
    payload = tmp_path / "payload.json"
    payload.write_text(json.dumps(notification(
        alert("CodeForgeS3UploadFailureHigh", fingerprint="a", severity="critical",
              namespace="neural-hive-pipeline", deployment="code-forge"),
        alert("Neural5xxRatioHighCritical", fingerprint="b", service="ForgeS3UploadFailureHigh"))))
    done = subprocess.run([sys.executable, "-m", "remediator.cli", "replay", str(payload),
                           "--rules", str(rules), "--format", "json"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    reasons = sorted(d["reason"] for d in json.loads(done.stdout))
    assert reasons == [
        PREFIX + 'neural: service="api" does not match service="ForgeS3UploadFailureHigh"',
        PREFIX + 'none handles alertname="CodeForgeS3UploadFailureHigh"']
