"""`evidence.bundle`: earlier steps' results to a directory or S3, with a verifiable manifest."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from remediator.actions.backends import Backends
from remediator.actions.base import ActionContext, check_params
from remediator.actions.registry import ACTIONS
from remediator.engine.executor import Executor, StepRecord
from tests.conftest import new_store
from tests.support.payloads import alert, notification

BUNDLE = ACTIONS["evidence.bundle"]
RESULTS = {
    "pods": {"outcome": "succeeded", "detail": "list pods",
             "result": {"count": 2, "names": ["web-1", "web-2"]}},
    "logs": {"outcome": "succeeded", "detail": "tail logs",
             "result": {"lines": ["boot ok", "OOMKilled: limit 256Mi"], "container": "web"}},
    "probe": {"outcome": "skipped", "detail": "condition false: x", "result": {}},
}


def context(results: dict[str, Any] | None = None, step: str = "evidence") -> ActionContext:
    return ActionContext(backends=Backends(), log=logging.getLogger("t"), execution_id="e1",
                         fingerprint="fp1", results=RESULTS if results is None else results,
                         step=step)


def bundle(run, ctx: ActionContext, **raw: Any) -> StepRecord:
    params, problems = check_params(BUNDLE, raw, rendered=True)
    assert not problems, problems
    record = StepRecord(name="evidence", action=BUNDLE.name, params=params, outcome="planned")
    record = run(Executor(retry_wait=0.01).run(BUNDLE, params, ctx, record, timeout=10, attempts=3))
    run(ctx.backends.close())
    return record


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_declarations_and_checks() -> None:
    # Evidence never changes the system being remediated: it runs even when mutations are blocked.
    assert BUNDLE.mutates({"bucket": "b"}) is False
    assert [str(p) for p in BUNDLE.permissions] == ["s3:PutObject"]
    for raw in ({}, {"directory": "/tmp/x", "bucket": "evidence-b"}, {"directory": "/tmp/../etc"},
                {"bucket": "evidence-b", "prefix": "../x"}, {"directory": "/d", "include": ["../up"]}):
        _, problems = check_params(BUNDLE, raw, rendered=True)
        assert problems, raw
    params, _ = check_params(BUNDLE, {"bucket": "evidence-b", "include": ["logs"]}, rendered=True)
    assert BUNDLE.describe(params) == ("bundle the results of logs with a sha256 manifest into "
                                       "s3://evidence-b/evidence/<id>/<step>/")


def test_bundle_to_a_directory(run, tmp_path) -> None:
    record = bundle(run, context(), directory=str(tmp_path))
    assert record.outcome == "succeeded", record.detail
    where = tmp_path / "e1" / "evidence"
    assert record.result["location"] == str(where)
    assert sorted(p.name for p in where.iterdir()) == [
        "logs.json", "logs.log", "manifest.json", "pods.json", "probe.json"]
    manifest_bytes = (where / "manifest.json").read_bytes()
    assert record.result["manifest_sha256"] == sha(manifest_bytes)
    manifest = json.loads(manifest_bytes)
    assert manifest["execution_id"] == "e1" and manifest["steps"] == ["pods", "logs", "probe"]
    assert record.result["files"] == len(manifest["files"]) == 4
    for entry in manifest["files"]:
        data = (where / entry["name"]).read_bytes()
        assert (entry["sha256"], entry["bytes"]) == (sha(data), len(data))
    assert (where / "logs.log").read_text() == "boot ok\nOOMKilled: limit 256Mi\n"
    logs = json.loads((where / "logs.json").read_text())
    assert logs["outcome"] == "succeeded" and logs["result"]["container"] == "web"
    assert json.loads((where / "probe.json").read_text())["outcome"] == "skipped"

    again = bundle(run, context(), directory=str(tmp_path))  # a re-run rewrites the same bundle
    assert again.result == record.result
    assert [p.name for p in tmp_path.iterdir()] == ["e1"]


def test_include_picks_steps_and_reports_missing_ones(run, tmp_path) -> None:
    record = bundle(run, context(), directory=str(tmp_path), include=["pods", "later_step"])
    assert record.outcome == "succeeded"
    assert (record.result["steps"], record.result["missing"], record.result["files"]) == (
        ["pods"], ["later_step"], 1)
    assert json.loads((tmp_path / "e1" / "evidence" / "manifest.json").read_text())[
        "missing"] == ["later_step"]


def test_unwritable_directory_fails_once(run, tmp_path) -> None:
    (tmp_path / "file").write_text("not a directory")
    record = bundle(run, context(), directory=str(tmp_path / "file"))
    assert (record.outcome, record.attempts) == ("failed", 1)
    assert "cannot write evidence" in record.detail


def test_bundle_to_s3_and_read_it_back(run, s3_env, s3_client, s3_proxy) -> None:
    s3_client.create_bucket(Bucket="incident-evidence")
    s3_proxy.inject("PUT", r"^/incident-evidence/", status=503, code="SlowDown", times=1)
    ctx = context()
    record = bundle(run, ctx, bucket="incident-evidence", prefix="libervia")
    assert (record.outcome, record.attempts) == ("succeeded", 2)  # SlowDown retried
    assert record.result["location"] == "s3://incident-evidence/libervia/e1/evidence/"
    listed = s3_client.list_objects_v2(Bucket="incident-evidence", Prefix="libervia/e1/")
    keys = sorted(o["Key"] for o in listed["Contents"])
    assert keys == [f"libervia/e1/evidence/{n}" for n in
                    ("logs.json", "logs.log", "manifest.json", "pods.json", "probe.json")]

    def get(name: str) -> bytes:
        return s3_client.get_object(Bucket="incident-evidence",
                                    Key=f"libervia/e1/evidence/{name}")["Body"].read()

    manifest_bytes = get("manifest.json")
    assert sha(manifest_bytes) == record.result["manifest_sha256"]
    for entry in json.loads(manifest_bytes)["files"]:
        assert sha(get(entry["name"])) == entry["sha256"]
    # each object carries its checksum, so the evidence itself can be verified later
    verify = ACTIONS["s3.verify_checksum"]
    params, _ = check_params(verify, {"bucket": "incident-evidence",
                                      "key": "libervia/e1/evidence/logs.log"}, rendered=True)
    ctx = context()
    assert run(verify.run(params, ctx))["result"] == "match"
    run(ctx.backends.close())


RULES = """
playbooks:
  - name: oom-evidence
    match: {alertname: SbomLatencyHigh}
    steps:
      - name: note
        action: log
        params: {message: "collecting evidence for {{ labels.bucket }}"}
      - name: sizes
        action: s3.object_stats
        params: {bucket: "{{ labels.bucket }}", prefix: "sboms/"}
      - name: evidence
        action: evidence.bundle
        params: {directory: "%(out)s"}
      - name: sizes_only
        action: evidence.bundle
        params: {directory: "%(out)s", include: [sizes]}
      - name: to_s3
        action: evidence.bundle
        params: {bucket: incident-evidence}
"""


def replay(tmp_path: Path, rules: str, config: str, store: str = "r.db"
           ) -> subprocess.CompletedProcess[str]:
    (tmp_path / "rules.yaml").write_text(textwrap.dedent(rules))
    (tmp_path / "config.yaml").write_text(config)
    payload = tmp_path / "payload.json"
    payload.write_text(json.dumps(notification(alert("SbomLatencyHigh", bucket="code-forge-artifacts"))))
    return subprocess.run(
        [sys.executable, "-m", "remediator.cli", "replay", str(payload), "--rules",
         str(tmp_path / "rules.yaml"), "--config", str(tmp_path / "config.yaml"), "--format",
         "json", "--mode", "live", "--store", new_store(f"sqlite:///{tmp_path / store}")],
        capture_output=True, text=True, timeout=60, env=dict(os.environ), check=False)


def test_bundle_through_the_engine_is_scoped(tmp_path, s3_client) -> None:
    s3_client.create_bucket(Bucket="code-forge-artifacts")
    s3_client.create_bucket(Bucket="incident-evidence")
    s3_client.put_object(Bucket="code-forge-artifacts", Key="sboms/a.json", Body=b"x" * 10)
    out = tmp_path / "evidence"
    # Evidence goes only under the configured root; no bucket is allowed (buckets.allow: []).
    proc = replay(tmp_path, RULES % {"out": out},
                  f"guards: {{evidence: {{directories: [{out}]}}, buckets: {{allow: []}}}}\n")
    assert proc.returncode == 0, proc.stderr
    [decision] = json.loads(proc.stdout)
    steps = {s["name"]: s for s in decision["steps"]}
    where = Path(steps["evidence"]["result"]["location"])
    assert where == out / decision["id"] / "evidence"
    assert steps["evidence"]["result"]["steps"] == ["note", "sizes"]
    sizes = json.loads((where / "sizes.json").read_text())
    assert sizes["result"]["average_bytes"] == 10.0
    # A second bundle of the same execution is kept beside the first, not over it.
    again = Path(steps["sizes_only"]["result"]["location"])
    assert again == out / decision["id"] / "sizes_only"
    assert json.loads((where / "manifest.json").read_text())["steps"] == ["note", "sizes"]
    assert json.loads((again / "manifest.json").read_text())["steps"] == ["sizes"]
    # An S3 write passes the bucket allow list even though evidence mutates nothing.
    assert (steps["to_s3"]["outcome"], steps["to_s3"]["guard"]) == ("blocked", "scope_denied")
    assert "guards.buckets.allow: empty" in steps["to_s3"]["detail"]
    assert "Contents" not in s3_client.list_objects_v2(Bucket="incident-evidence")

    # Outside the configured root: refused before anything is written.
    elsewhere = replay(tmp_path, RULES % {"out": tmp_path / "elsewhere"},
                       f"guards: {{evidence: {{directories: [{out}]}}}}\n", "other.db")
    [refused] = json.loads(elsewhere.stdout)
    assert {s["name"]: s["guard"] for s in refused["steps"]}["evidence"] == "scope_denied"
    assert not (tmp_path / "elsewhere").exists()


def test_no_label_chooses_where_evidence_goes(tmp_path) -> None:
    for params in ('{bucket: "{{ labels.bucket }}"}',
                   '{bucket: incident-evidence, prefix: "{{ labels.team }}/"}',
                   '{directory: "/var/lib/remediator/evidence/{{ labels.app }}"}'):
        rules = tmp_path / "rules.yaml"
        rules.write_text(textwrap.dedent(f"""
            playbooks:
              - name: p
                match: {{alertname: A}}
                steps:
                  - {{name: evidence, action: evidence.bundle, params: {params}}}
            """))
        lint = subprocess.run([sys.executable, "-m", "remediator.cli", "lint", str(rules)],
                              capture_output=True, text=True, timeout=60, check=False)
        assert lint.returncode != 0 and "must be written literally" in lint.stdout + lint.stderr, (
            params, lint.stdout)
