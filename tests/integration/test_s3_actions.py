"""S3 actions against a real S3 API: moto in server mode behind a fault-injecting proxy.

Nothing in boto3 is patched: requests are signed, sent over HTTP and parsed by botocore, and
faults (SlowDown, AccessDenied) are real S3 error responses from `s3_proxy`. Actions are driven
the way the engine drives them: params through `check_params`, then `run` or the Executor.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import random
from typing import Any

import pytest

from remediator.actions.backends import Backends
from remediator.actions.base import ActionContext, ActionError, check_params
from remediator.actions.registry import ACTIONS
from remediator.engine.executor import Executor, StepRecord
from tests.conftest import new_store
from tests.support.actions import params
from tests.support.loop_probe import LoopProbe
from tests.support.payloads import alert, notification
from tests.support.worker import replay_cli

BUCKET = "sboms-prod"


@pytest.fixture
def ctx(s3_env, run):
    """A fresh Backends per test: the cached client reads AWS_ENDPOINT_URL when it is built."""
    backends = Backends()
    yield ActionContext(backends=backends, log=logging.getLogger("t"), execution_id="e1")
    run(backends.close())


def act(run, name: str, ctx: ActionContext, **raw: Any) -> dict[str, Any]:
    action = ACTIONS[name]
    return run(action.run(params(action, **raw), ctx))


def execute(run, name: str, ctx: ActionContext, attempts: int = 3, **raw: Any) -> StepRecord:
    """Through the Executor: retries on transient errors only, inside the step's deadline."""
    action = ACTIONS[name]
    p = params(action, **raw)
    record = StepRecord(name="step", action=name, params=p, outcome="planned")
    return run(Executor(retry_wait=0.01).run(action, p, ctx, record, timeout=10, attempts=attempts))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def versioned(s3_client) -> str:
    s3_client.create_bucket(Bucket=BUCKET)
    s3_client.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    return BUCKET


def put(s3_client, key: str, body: bytes, checksum: str | None = None, bucket: str = BUCKET) -> str:
    meta = {"checksum": checksum if checksum is not None else sha(body)}
    return s3_client.put_object(Bucket=bucket, Key=key, Body=body, Metadata=meta).get("VersionId")


# --- validation happens before any request ---------------------------------------------------

@pytest.mark.parametrize(("name", "raw"), [
    ("s3.verify_checksum", {"bucket": BUCKET, "key": "../x"}),
    ("s3.verify_checksum", {"bucket": BUCKET, "key": "sboms/../../etc/passwd"}),
    ("s3.head_object", {"bucket": BUCKET, "key": "/abs"}),
    ("s3.restore_version", {"bucket": "Bad_Bucket", "key": "a"}),
    ("s3.object_stats", {"bucket": BUCKET, "prefix": "a/../b/"}),
    ("s3.sample_integrity", {"bucket": BUCKET, "rate": 1.5}),
    ("s3.sample_integrity", {"bucket": BUCKET, "compare_bucket": "other-b", "compare_dir": "/d"}),
    ("s3.list_object_versions", {"bucket": BUCKET}),
])
def test_hostile_or_inconsistent_params_are_refused(name, raw, s3_proxy) -> None:
    _, problems = check_params(ACTIONS[name], raw, rendered=True)
    assert problems
    assert s3_proxy.requests() == []


def test_declarations() -> None:
    assert ACTIONS["s3.restore_version"].mutates({}) is True
    assert not any(ACTIONS[n].mutates({}) for n in ACTIONS if n.startswith("s3.")
                   and n != "s3.restore_version")
    perms = {str(p) for p in ACTIONS["s3.restore_version"].permissions}
    assert {"s3:GetBucketVersioning", "s3:ListBucketVersions", "s3:GetObjectVersion",
            "s3:PutObject"} <= perms
    assert [str(p) for p in ACTIONS["s3.verify_checksum"].permissions] == [
        "s3:GetObject", "s3:GetObjectVersion"]
    # "the previous version" moves with each restore: only a pinned version may be repeated
    assert ACTIONS["s3.restore_version"].repeatable({"version_id": "v1"})
    assert not ACTIONS["s3.restore_version"].repeatable({})


# --- reads -----------------------------------------------------------------------------------

def test_head_bucket_and_head_object(run, ctx, versioned, s3_client) -> None:
    assert act(run, "s3.head_bucket", ctx, bucket=BUCKET) == {"exists": True, "region": "us-east-1"}
    body = b'{"bomFormat": "CycloneDX"}'
    s3_client.put_object(Bucket=BUCKET, Key="sboms/t1/sbom.json", Body=body, ChecksumAlgorithm="SHA256",
                         Metadata={"checksum": sha(body)})
    head = act(run, "s3.head_object", ctx, bucket=BUCKET, key="sboms/t1/sbom.json")
    assert head["exists"] and head["size"] == len(body)
    assert head["checksum"] == sha(body) and head["checksum_source"] == "metadata:checksum"
    assert head["checksum_sha256"] == base64.b64encode(hashlib.sha256(body).digest()).decode()
    assert head["version_id"]
    json.dumps(head)  # results go to the audit store as JSON

    s3_client.delete_object(Bucket=BUCKET, Key="sboms/t1/sbom.json")
    gone = act(run, "s3.head_object", ctx, bucket=BUCKET, key="sboms/t1/sbom.json", missing_ok=True)
    assert gone == {"exists": False, "deleted": True}
    record = execute(run, "s3.head_bucket", ctx, bucket="no-such-bucket")
    assert (record.outcome, record.attempts) == ("failed", 1)


def test_verify_checksum_accepts_hex_base64_and_s3_checksums(run, ctx, versioned, s3_client) -> None:
    body = b"certificate bytes" * 1000
    put(s3_client, "hex", body)
    put(s3_client, "b64", body, base64.b64encode(hashlib.sha256(body).digest()).decode())
    put(s3_client, "prefixed", body, "sha256:" + sha(body))
    s3_client.put_object(Bucket=BUCKET, Key="native", Body=body, ChecksumAlgorithm="SHA256")
    for key, source in [("hex", "metadata:checksum"), ("b64", "metadata:checksum"),
                        ("prefixed", "metadata:checksum"), ("native", "ChecksumSHA256")]:
        result = act(run, "s3.verify_checksum", ctx, bucket=BUCKET, key=key)
        assert result["result"] == "match", key
        assert (result["expected"], result["actual"], result["bytes"]) == (sha(body), sha(body), len(body))
        assert result["source"] == source


def test_checksum_mismatch_is_a_result_not_a_failure(run, ctx, versioned, s3_client) -> None:
    put(s3_client, "sboms/t2/sbom.json", b"tampered", checksum=sha(b"original"))
    record = execute(run, "s3.verify_checksum", ctx, bucket=BUCKET, key="sboms/t2/sbom.json")
    assert (record.outcome, record.attempts) == ("succeeded", 1)
    assert record.result["result"] == "mismatch"
    assert record.result["expected"] == sha(b"original")
    assert record.result["actual"] == sha(b"tampered") and record.result["bytes"] == 8


def test_several_metadata_keys_take_the_first_present(run, ctx, versioned, s3_client) -> None:
    """Code Forge's S3ArtifactClient stores the sha256 as metadata `sha256` (upload_file sets no
    S3 checksum); its runbook reads `checksum`. A playbook names both, and finds either."""
    uploaded = {"sha256": sha(b"original"), "source": "code-forge"}
    s3_client.put_object(Bucket=BUCKET, Key="sboms/t5/sbom.json", Body=b"tampered",
                         Metadata=uploaded)
    put(s3_client, "sboms/t6/sbom.json", b"tampered", checksum=sha(b"original"))
    for key, source in (("sboms/t5/sbom.json", "metadata:sha256"),
                        ("sboms/t6/sbom.json", "metadata:checksum")):
        result = act(run, "s3.verify_checksum", ctx, bucket=BUCKET, key=key,
                     metadata_key="sha256, checksum")
        assert (result["result"], result["source"]) == ("mismatch", source), key
        head = act(run, "s3.head_object", ctx, bucket=BUCKET, key=key, metadata_key="sha256,checksum")
        assert (head["checksum"], head["checksum_source"]) == (sha(b"original"), source)
    sample = act(run, "s3.sample_integrity", ctx, bucket=BUCKET, prefix="sboms/t5/", rate=1,
                 min_sample=1, metadata_key="sha256,checksum")
    assert sample["mismatches"] == 1
    # the default (checksum only) finds nothing to compare the real client's object with
    record = execute(run, "s3.verify_checksum", ctx, bucket=BUCKET, key="sboms/t5/sbom.json")
    assert record.outcome == "failed" and "has no stored sha256" in record.detail


def test_missing_object_fails_without_retry(run, ctx, versioned, s3_proxy) -> None:
    record = execute(run, "s3.verify_checksum", ctx, bucket=BUCKET, key="nope")
    assert (record.outcome, record.attempts) == ("failed", 1)
    assert "NoSuchKey" in record.detail and record.result["status"] == 404
    assert [(r.method, r.status) for r in s3_proxy.requests("GET")] == [("GET", 404)]


def test_an_archived_object_is_named_by_head_and_fails_verify_once(run, ctx, versioned, s3_client,
                                                                   s3_proxy) -> None:
    """rules/code-forge.yaml's integrity note says 'archived to GLACIER' from head's
    storage_class; its body cannot be read until restored, a failure not worth a retry."""
    body = b'{"bomFormat": "CycloneDX"}'
    s3_client.put_object(Bucket=BUCKET, Key="sboms/t4/sbom.json", Body=body, StorageClass="GLACIER",
                         Metadata={"checksum": sha(body)})
    head = act(run, "s3.head_object", ctx, bucket=BUCKET, key="sboms/t4/sbom.json", missing_ok=True)
    assert head["exists"] and head["storage_class"] == "GLACIER"
    record = execute(run, "s3.verify_checksum", ctx, bucket=BUCKET, key="sboms/t4/sbom.json")
    assert (record.outcome, record.attempts) == ("failed", 1)
    assert "InvalidObjectState" in record.detail, record.detail


def test_slowdown_is_retried_by_the_executor(run, ctx, versioned, s3_client, s3_proxy) -> None:
    put(s3_client, "k", b"x")
    s3_proxy.inject("GET", rf"^/{BUCKET}/k$", status=503, code="SlowDown", times=2)
    record = execute(run, "s3.verify_checksum", ctx, bucket=BUCKET, key="k")
    assert (record.outcome, record.attempts, record.result["result"]) == ("succeeded", 3, "match")
    # botocore made exactly one try per attempt: the executor owns the retry policy
    assert len(s3_proxy.requests("GET", injected=True)) == 2
    assert len(s3_proxy.requests("GET", injected=False)) == 1


def test_head_503_without_error_body_is_transient(run, ctx, versioned, s3_client, s3_proxy) -> None:
    put(s3_client, "k", b"x")
    s3_proxy.inject("HEAD", rf"^/{BUCKET}/k$", status=503, times=1)  # HEAD errors carry no code
    record = execute(run, "s3.head_object", ctx, bucket=BUCKET, key="k")
    assert (record.outcome, record.attempts) == ("succeeded", 2)


def test_access_denied_is_never_retried(run, ctx, versioned, s3_client, s3_proxy) -> None:
    put(s3_client, "k", b"x")
    s3_proxy.inject("GET", rf"^/{BUCKET}/k$", status=403, code="AccessDenied", times=5,
                    message="Access Denied")
    record = execute(run, "s3.verify_checksum", ctx, bucket=BUCKET, key="k")
    assert (record.outcome, record.attempts) == ("failed", 1)
    assert "AccessDenied" in record.detail
    assert len(s3_proxy.requests("GET")) == 1


def test_unreachable_endpoint_is_transient(run, monkeypatch, s3_env) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens on discard
    c = ActionContext(backends=Backends(), log=logging.getLogger("t"))
    record = execute(run, "s3.head_bucket", c, attempts=2, bucket=BUCKET)
    run(c.backends.close())
    assert (record.outcome, record.attempts) == ("failed", 2)
    assert "EndpointConnectionError" in record.detail


def test_a_slow_s3_call_does_not_block_the_event_loop(run, ctx, versioned, s3_client, s3_proxy) -> None:
    put(s3_client, "slow", b"x")
    s3_proxy.inject("GET", rf"^/{BUCKET}/slow$", status=503, times=1, delay=0.5)
    ticks = 0

    async def both() -> StepRecord:
        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.02)
                ticks += 1

        task = asyncio.create_task(ticker())
        try:
            action = ACTIONS["s3.verify_checksum"]
            p = params(action, bucket=BUCKET, key="slow")
            return await Executor(retry_wait=0.01).run(
                action, p, ctx, StepRecord("s", action.name, p, "planned"), timeout=10, attempts=2)
        finally:
            task.cancel()

    record = run(both())
    assert (record.outcome, record.attempts) == ("succeeded", 2)
    assert ticks >= 15  # the loop kept running while a thread waited on S3


def test_list_object_versions_newest_first(run, ctx, versioned, s3_client) -> None:
    v1 = put(s3_client, "sboms/a.json", b"1")
    v2 = put(s3_client, "sboms/a.json", b"2")
    marker = s3_client.delete_object(Bucket=BUCKET, Key="sboms/a.json")["VersionId"]
    put(s3_client, "sboms/a.json.bak", b"other key, same prefix")
    result = act(run, "s3.list_object_versions", ctx, bucket=BUCKET, key="sboms/a.json")
    assert [v["version_id"] for v in result["versions"]] == [marker, v2, v1]
    assert result["deleted"] and result["latest"] == marker and result["count"] == 3
    under = act(run, "s3.list_object_versions", ctx, bucket=BUCKET, prefix="sboms/", max_items=2)
    assert under["count"] == 2 and under["truncated"]


def test_object_stats_average_size(run, ctx, versioned, s3_client) -> None:
    for i, size in enumerate([100, 200, 300, 1000]):
        s3_client.put_object(Bucket=BUCKET, Key=f"sboms/{i}.json", Body=b"x" * size)
    s3_client.put_object(Bucket=BUCKET, Key="other/x", Body=b"x" * 5000)
    stats = act(run, "s3.object_stats", ctx, bucket=BUCKET, prefix="sboms/")
    assert stats == {"count": 4, "total_bytes": 1600, "average_bytes": 400.0,
                     "largest": {"key": "sboms/3.json", "bytes": 1000}, "truncated": False}
    capped = act(run, "s3.object_stats", ctx, bucket=BUCKET, prefix="sboms/", max_keys=2)
    assert capped["count"] == 2 and capped["truncated"]


# --- restore ---------------------------------------------------------------------------------

def read(s3_client, key: str) -> bytes:
    return s3_client.get_object(Bucket=BUCKET, Key=key)["Body"].read()


def test_restore_a_deleted_object(run, ctx, versioned, s3_client) -> None:
    put(s3_client, "certs/c1.pdf", b"v1")
    v2 = put(s3_client, "certs/c1.pdf", b"v2")
    marker = s3_client.delete_object(Bucket=BUCKET, Key="certs/c1.pdf")["VersionId"]
    result = act(run, "s3.restore_version", ctx, bucket=BUCKET, key="certs/c1.pdf")
    assert result["restored_version"] == v2 and result["was_deleted"]
    assert result["previous_current"] == marker
    assert read(s3_client, "certs/c1.pdf") == b"v2"
    head = s3_client.head_object(Bucket=BUCKET, Key="certs/c1.pdf")
    assert head["VersionId"] == result["new_version_id"] != v2
    assert head["Metadata"]["checksum"] == sha(b"v2")  # metadata travels with the copy


def test_restore_an_overwritten_object(run, ctx, versioned, s3_client) -> None:
    v1 = put(s3_client, "certs/c2.pdf", b"good")
    bad = put(s3_client, "certs/c2.pdf", b"corrupt")
    action = ACTIONS["s3.restore_version"]
    p = params(action, bucket=BUCKET, key="certs/c2.pdf")
    assert action.describe(p) == "would restore s3://sboms-prod/certs/c2.pdf to the previous version " \
                                 "(the newest real version, if the key is deleted)"
    result = run(action.run(p, ctx))
    assert (result["restored_version"], result["previous_current"], result["was_deleted"]) == (v1, bad, False)
    assert read(s3_client, "certs/c2.pdf") == b"good"
    # pinned versions: the bad one back, then the good one again
    pinned = act(run, "s3.restore_version", ctx, bucket=BUCKET, key="certs/c2.pdf", version_id=bad)
    assert pinned["changed"] and read(s3_client, "certs/c2.pdf") == b"corrupt"
    pinned = act(run, "s3.restore_version", ctx, bucket=BUCKET, key="certs/c2.pdf", version_id=v1)
    assert pinned["restored_version"] == v1 and read(s3_client, "certs/c2.pdf") == b"good"
    # restoring the version that is already current is a no-op, not another copy
    current = s3_client.head_object(Bucket=BUCKET, Key="certs/c2.pdf")["VersionId"]
    count = len(s3_client.list_object_versions(Bucket=BUCKET, Prefix="certs/c2.pdf")["Versions"])
    same = act(run, "s3.restore_version", ctx, bucket=BUCKET, key="certs/c2.pdf", version_id=current)
    assert same["changed"] is False and same["new_version_id"] is None
    assert len(s3_client.list_object_versions(Bucket=BUCKET, Prefix="certs/c2.pdf")["Versions"]) == count
    assert ACTIONS["s3.restore_version"].describe({"bucket": BUCKET, "key": "k", "version_id": v1}) \
        == f"would restore s3://{BUCKET}/k to version {v1}"


def test_restore_refuses_an_unversioned_bucket(run, ctx, s3_client, s3_proxy) -> None:
    s3_client.create_bucket(Bucket="plain-bucket")
    s3_client.put_object(Bucket="plain-bucket", Key="k", Body=b"only copy")
    before = len(s3_proxy.requests("PUT"))
    record = execute(run, "s3.restore_version", ctx, bucket="plain-bucket", key="k")
    assert (record.outcome, record.attempts) == ("failed", 1)
    assert "refusing" in record.detail and record.result == {"versioning": "off"}
    assert len(s3_proxy.requests("PUT")) == before  # no CopyObject was sent
    assert s3_client.get_object(Bucket="plain-bucket", Key="k")["Body"].read() == b"only copy"


def test_restore_with_nothing_older_fails(run, ctx, versioned, s3_client) -> None:
    put(s3_client, "single", b"one")
    with pytest.raises(ActionError, match="nothing older"):
        act(run, "s3.restore_version", ctx, bucket=BUCKET, key="single")
    with pytest.raises(ActionError, match="no version 'nope'"):
        act(run, "s3.restore_version", ctx, bucket=BUCKET, key="single", version_id="nope")


# --- integrity sampling ----------------------------------------------------------------------

@pytest.fixture
def certificates(s3_client, versioned) -> set[str]:
    """200 objects, 10 of them stored with a wrong checksum: a 5 % mismatch rate."""
    corrupted = {f"certificates/cert_{i:03d}.pdf" for i in range(0, 200, 20)}
    for i in range(200):
        key, body = f"certificates/cert_{i:03d}.pdf", f"cert {i}".encode()
        put(s3_client, key, body, sha(b"backfill bug") if key in corrupted else None)
    return corrupted


def test_sample_everything_finds_the_exact_rate(run, ctx, certificates) -> None:
    result = act(run, "s3.sample_integrity", ctx, bucket=BUCKET, prefix="certificates/", rate=1.0,
                 max_mismatch_rate=0.005)
    assert (result["sampled"], result["mismatches"]) == (200, 10)
    assert result["mismatch_rate"] == 0.05 and result["mismatch_rate_percent"] == 5.0
    assert set(result["mismatch_keys"]) == certificates and result["pass"] is False
    assert result["mismatch_details"][0]["reason"] == "sha256 differs"


def test_seeded_sample_is_bounded_and_consistent(run, ctx, certificates) -> None:
    raw = {"bucket": BUCKET, "prefix": "certificates/", "rate": 0.5, "seed": 7}
    first = act(run, "s3.sample_integrity", ctx, **raw)
    assert first == act(run, "s3.sample_integrity", ctx, **raw)
    assert first["sampled"] == 100
    keys = sorted(f"certificates/cert_{i:03d}.pdf" for i in range(200))
    sample = set(random.Random(7).sample(keys, 100))
    assert set(first["mismatch_keys"]) == sample & certificates
    assert first["mismatch_rate"] == len(sample & certificates) / 100
    small = act(run, "s3.sample_integrity", ctx, **{**raw, "rate": 0.001, "min_sample": 12})
    assert small["sampled"] == 12  # at least min_sample
    capped = act(run, "s3.sample_integrity", ctx, **{**raw, "rate": 1.0, "max_sample": 30})
    assert capped["sampled"] == 30


def test_sample_against_a_second_copy(run, ctx, versioned, s3_client, tmp_path) -> None:
    s3_client.create_bucket(Bucket="certs-local-copy")
    for i in range(20):
        body = f"doc {i}".encode()
        put(s3_client, f"docs/{i:02d}", body)
        copy = b"drifted" if i in (3, 4) else body
        if i != 5:
            put(s3_client, f"docs/{i:02d}", copy, bucket="certs-local-copy")
        (tmp_path / "docs").mkdir(exist_ok=True)
        if i != 6:
            (tmp_path / "docs" / f"{i:02d}").write_bytes(b"drifted" if i == 7 else body)
    other = act(run, "s3.sample_integrity", ctx, bucket=BUCKET, prefix="docs/", rate=1.0,
                compare_bucket="certs-local-copy")
    assert other["mismatch_keys"] == ["docs/03", "docs/04", "docs/05"]
    assert other["mismatch_details"][2]["reason"] == "missing in compare_bucket"
    local = act(run, "s3.sample_integrity", ctx, bucket=BUCKET, prefix="docs/", rate=1.0,
                compare_dir=str(tmp_path), max_mismatch_rate=0.2)
    assert local["mismatch_keys"] == ["docs/06", "docs/07"] and local["mismatch_rate_percent"] == 10.0
    assert local["pass"] is True


def test_sample_of_nothing_fails(run, ctx, versioned) -> None:
    with pytest.raises(ActionError, match="no objects"):
        act(run, "s3.sample_integrity", ctx, bucket=BUCKET, prefix="empty/")


# --- through the engine: `remediator replay` ------------------------------------------------

RULES = """
playbooks:
  - name: sbom-integrity
    description: verify the SBOM the alert names, note a mismatch for on-call
    match: {alertname: CodeForgeS3IntegrityFailure}
    steps:
      - name: verify
        action: s3.verify_checksum
        params: {bucket: "{{ labels.bucket }}", key: "{{ labels.key }}"}
      - name: note
        action: log
        when: "steps.verify.result.result == 'mismatch'"
        params: {message: "sha256 mismatch on {{ labels.key }}"}
"""


def replay(tmp_path, *args: str, **labels: str) -> dict[str, Any]:
    return replay_cli(tmp_path, RULES, notification(alert("CodeForgeS3IntegrityFailure", **labels)),
                      *args)


def test_replay_live_and_dry_run(tmp_path, versioned, s3_client, s3_proxy) -> None:
    put(s3_client, "sboms/t9/sbom.json", b"tampered", checksum=sha(b"original"))
    labels = {"bucket": BUCKET, "key": "sboms/t9/sbom.json"}

    planned = replay(tmp_path, **labels)
    assert planned["outcome"] == "planned"
    assert planned["steps"][0]["detail"] == (
        f"verify the sha256 of s3://{BUCKET}/sboms/t9/sbom.json against metadata 'checksum' "
        "(else S3's ChecksumSHA256)")
    assert s3_proxy.requests("GET") == []  # dry-run touched nothing

    store = new_store(f"sqlite:///{tmp_path / 'r.db'}")
    live = replay(tmp_path, "--mode", "live", "--store", store, **labels)
    verify, note = live["steps"]
    assert live["outcome"] == "succeeded" and verify["outcome"] == "succeeded"
    assert verify["result"]["result"] == "mismatch"
    assert verify["result"]["actual"] == sha(b"tampered")
    assert note["outcome"] == "succeeded"  # the `when:` branch on the mismatch ran
    assert len(s3_proxy.requests("GET")) == 1

    hostile = replay(tmp_path, "--mode", "live", "--store", new_store(store + "-2"), bucket=BUCKET,
                     key="../x")
    assert hostile["steps"][0]["outcome"] == "failed"
    assert hostile["steps"][0]["detail"].startswith("refused:")
    assert len(s3_proxy.requests("GET")) == 1  # refused before any call



def test_building_the_client_never_blocks_the_event_loop(run, tmp_path, monkeypatch, s3_env,
                                                         versioned, s3_client) -> None:
    """The AWS chain may run a `credential_process` (SSO helpers, vaults) or ask the instance
    metadata service when the client is built: in a worker thread, not on the event loop."""
    put(s3_client, "a", b"x")
    probe = LoopProbe(tmp_path, {"Version": 1, "AccessKeyId": "testing",
                                 "SecretAccessKey": "testing"})
    (tmp_path / "aws-config").write_text(f"[default]\ncredential_process = {' '.join(probe.argv)}\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    backends = Backends()
    ctx = ActionContext(backends=backends, log=logging.getLogger("t"), execution_id="e1")
    action = ACTIONS["s3.head_object"]
    p = params(action, bucket=BUCKET, key="a")
    record = StepRecord(name="step", action=action.name, params=p, outcome="planned")
    try:
        run(probe.run(Executor().run(action, p, ctx, record, timeout=60, attempts=1)))
    finally:
        run(backends.close())
    assert record.outcome == "succeeded", record.detail
