"""Issue 6's end-to-end proof, one headline alert per system.

A metric changes on the exporter → a real Prometheus evaluates deploy/prometheus's rules → a
real Alertmanager routes with deploy/alertmanager's configuration → `remediator serve --mode
live` runs rules/ → the Kubernetes API test server and moto show the effect, and the
escalation note says what a human needs. The stack and what it rewrites for test timings:
tests/e2e/harness.py. Tests share one stack and run in file order; each leaves its alerts
resolved, and the few that need guard state forgotten (cooldowns) restart remediator.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.e2e import seed
from tests.e2e.harness import Stack, eventually, unrouted
from tests.e2e.seed import (
    CERT_FALLBACKS,
    CERT_READS,
    CODE_FORGE,
    CODE_FORGE_NS,
    DELTACROWN,
    DELTACROWN_NS,
    UPLOAD_FAILED,
    UPLOAD_OK,
    UPLOADS,
)
from tests.support.worker import http

HEADLINE_ALERTS = ["CodeForgeS3UploadFailureHigh", "CodeForgeS3IntegrityFailure",
                   "DeltaCrownCertS3ReadFallbackHigh", "HackathonFileProcessorHighCPU",
                   "HackathonFileProcessorDown", "API_DOWN", "ThreeDPotHigh5xxRate",
                   "ThreeDPotRedisConnectionFailed"]


def steps_of(decision: dict) -> dict[str, dict]:
    return {s["name"]: s for s in decision["steps"]}


def firing_decisions(stack: Stack, alertname: str) -> list[dict]:
    return [d for d in stack.executions(alertname=alertname) if d["status"] == "firing"]


@pytest.mark.parametrize("alertname", HEADLINE_ALERTS)
def test_project_routes_send_the_headline_alert_to_remediator(alertname):
    missing = unrouted(alertname)  # amtool on the project's file as it is
    assert not missing, (f"deploy/alertmanager/alertmanager.yml does not route {alertname} "
                         f"(labels {missing[0]}) to remediator")


def test_latency_alert_travels_the_whole_pipeline_and_escalates(stack):
    """The pipeline itself: scrape → rule → Alertmanager → remediator and the humans, both."""
    alertname = "CodeForgeS3LatencyHigh"
    stack.require_route(alertname)
    slow = [("1", 0.0), ("5", 0.02), ("10", 0.04), ("30", 1.0), ("+Inf", 1.0)]
    stack.traffic.mix((seed.LATENCY, {"le": le, "operation": "upload"}, share) for le, share in slow)

    decision = stack.wait_decision(alertname)
    assert decision["playbook"] == "code-forge-s3-latency"
    assert decision["outcome"] == "escalated"
    labels = decision["alert"]["labels"]
    assert labels["namespace"] == CODE_FORGE_NS and labels["prefix"] == "sboms/"
    assert decision["group"]["receiver"] == "remediator"
    assert steps_of(decision)["p95"]["result"]["value"] > 10
    assert steps_of(decision)["sbom_sizes"]["result"]["count"] == len(seed.SBOMS)
    # The runbook's checks of Code Forge's path to S3 run from inside its pod (its IRSA
    # credentials, its network), not from remediator's: the call ran in a code-forge pod.
    pod_path = steps_of(decision)["pod_path"]
    assert pod_path["outcome"] == "succeeded" and pod_path["mutating"] is False
    # the runbook's check is the pod's path to S3 itself: the bucket's HEAD, not STS
    assert json.loads(pod_path["result"]["stdout"])["BucketRegion"] == "us-east-1"
    ran = [(ns, pod) for ns, pod, _, argv in stack.kube.execs.started
           if argv == ["aws", "s3api", "head-bucket", "--bucket", "code-forge-artifacts-prod",
                       "--output", "json"]]
    assert ran and all(ns == CODE_FORGE_NS and pod.startswith(f"{CODE_FORGE}-")
                       for ns, pod in ran), ran
    assert steps_of(decision)["remediator_path"]["outcome"] == "succeeded"
    note = stack.note(decision)
    assert note.startswith(f"# [WARNING] {alertname}")
    assert "Respond within:** 30 min" in note and "Syft" in note
    eventually(lambda: stack.human_deliveries(alertname), "the on-call receiver to get it too", 30)

    fast = [("1", 1.0), ("5", 1.0), ("10", 1.0), ("30", 1.0), ("+Inf", 1.0)]
    stack.traffic.mix((seed.LATENCY, {"le": le, "operation": "upload"}, share) for le, share in fast)
    assert stack.wait_decision(alertname, status="resolved")["outcome"] == "resolved"


def test_code_forge_upload_failures_restart_once_and_verify(stack):
    alertname = "CodeForgeS3UploadFailureHigh"
    stack.require_route(alertname)
    kube = stack.kube
    assert seed.restarted_at(kube, CODE_FORGE_NS, CODE_FORGE) is None
    duplicates_before = stack.metric("remediator_alerts_duplicate_total")

    stack.traffic.mix([(UPLOADS, UPLOAD_OK, 0.6), (UPLOADS, UPLOAD_FAILED, 0.4)])
    stamp = eventually(lambda: seed.restarted_at(kube, CODE_FORGE_NS, CODE_FORGE),
                       "remediator to restart deployment/code-forge", 90, why=stack.diagnostics)
    # While remediation is under way Alertmanager re-sends the firing alert: deduplicated.
    eventually(lambda: stack.metric("remediator_alerts_duplicate_total") > duplicates_before,
               "Alertmanager to re-send the firing alert", 45)
    running = stack.wait_decision(alertname, final=False, where=lambda d: any(
        s["name"] == "verify" and s["outcome"] == "running" for s in d["steps"]))

    # The fix: the new pods have fresh IRSA tokens, uploads succeed again.
    stack.traffic.mix([(UPLOADS, UPLOAD_OK, 1.0), (UPLOADS, UPLOAD_FAILED, 0.0)])
    decision = stack.wait_decision(alertname, where=lambda d: d["id"] == running["id"], timeout=60)
    steps = steps_of(decision)
    assert "ExpiredToken" in json.dumps(steps["logs"]["result"])  # the evidence, from the pods
    assert steps["irsa"]["result"]["object"]["metadata"]["annotations"][
        "eks.amazonaws.com/role-arn"] == "arn:aws:iam::123456789012:role/code-forge"
    # `aws sts get-caller-identity` really ran in a code-forge pod (the test server's pod model)
    assert json.loads(steps["identity"]["result"]["stdout"])["Account"] == "123456789012"
    assert [s["name"] for s in decision["steps"] if s["outcome"] == "failed"] == []
    assert steps["restart"]["result"]["restarted_at"] == stamp
    assert [steps[n]["outcome"] for n in ("logs", "bucket", "restart", "rollout")] == ["succeeded"] * 4
    # verify polls every 30 s; the alert's resolution (its complement: ratio back under 5 %)
    # may reach remediator first and cut the wait short. Either way the fix is confirmed by
    # Prometheus, the execution succeeded, and nobody is paged.
    assert decision["outcome"] == "succeeded", decision["reason"]
    assert (steps["verify"]["outcome"] == "cancelled" and decision["reason"] ==
            "verified by the alert's resolution while step 'verify' waited") or \
        steps["verify"]["result"]["met"] is True
    assert not (stack.escalation_dir / f"{decision['id']}.md").exists()

    stack.wait_inactive(alertname)
    resolved = stack.wait_decision(alertname, status="resolved")
    assert resolved["outcome"] == "resolved" and resolved["fingerprint"] == decision["fingerprint"]

    # The same notification once more, by hand: accepted as a duplicate, nothing runs again.
    assert stack.redeliver(decision) == (202, {"accepted": 0, "duplicates": 1})
    assert len(firing_decisions(stack, alertname)) == 1
    assert seed.restarted_at(kube, CODE_FORGE_NS, CODE_FORGE) == stamp
    patches = kube.requests_matching("PATCH", f"/namespaces/{CODE_FORGE_NS}/deployments/{CODE_FORGE}$")
    assert len(patches) == 1, [r.path for r in patches]


def _fallback(stack: Stack, share: float) -> None:
    stack.traffic.mix([(CERT_READS, {}, 1.0), (CERT_FALLBACKS, {}, share)])


def _saves(stack: Stack, failing: float) -> None:
    stack.traffic.mix([(seed.CERT_SAVES, {}, 1.0), (seed.CERT_SAVE_FAILS, {}, failing)])


def _flags(stack: Stack) -> dict[str, str]:
    env = seed.env_of(stack.kube, DELTACROWN_NS, DELTACROWN)
    return {k: env[k] for k in seed.DELTACROWN_ENV}


def _s3_down(stack: Stack) -> None:
    """S3 answers 503 to everything on the certificates bucket, for everyone (pods too)."""
    stack.s3_proxy.inject("*", rf"^/{seed.CERT_BUCKET}(/|$)", status=503, code="ServiceUnavailable",
                          message="Service Unavailable", times=None)


def test_deltacrown_s3_outage_reads_locally_then_flips_back_once_s3_and_the_validator_agree(stack):
    """Scenario 1: outage -> reads local -> recovery -> the application's validator -> S3."""
    alertname = "DeltaCrownCertS3ReadFallbackHigh"
    stack.require_route(alertname)
    assert _flags(stack) == seed.DELTACROWN_ENV

    _s3_down(stack)
    _saves(stack, 1.0)   # every save fails (dual-write keeps the local copy)
    # The save-failure ratio needs two scrapes to show; an outage shows in saves first, as in
    # production, and a fallback alert firing earlier would rightly see no outage signature.
    stack.prometheus.wait_for("deltacrown:cert_s3_save_fail_ratio:rate10m > 0.2", timeout=300)
    _fallback(stack, 1.0)  # every read falls back
    decision = stack.wait_decision(alertname)
    assert decision["playbook"] == "deltacrown-read-fallback"
    assert decision["outcome"] == "escalated"  # acted, and tells a human S3 is down
    steps = steps_of(decision)
    assert steps["s3_canary"]["outcome"] == "failed" and steps["outage"]["outcome"] == "succeeded"
    assert steps["s3_canary"]["result"] == {"error": "503", "status": 503}  # S3 unavailable
    assert steps["local_rollout"]["outcome"] == "succeeded"  # df ran in a pod of the new version
    assert _flags(stack) == {**seed.DELTACROWN_ENV, "CERT_S3_READ_PRIMARY": "false"}
    note = stack.note(decision)
    assert note.startswith(f"# [CRITICAL] {alertname}: S3 outage: deltacrown reads moved to local")
    assert "AWS Status Dashboard" in note

    stack.s3_proxy.clear_faults()  # S3 is back
    _saves(stack, 0.0)
    _fallback(stack, 0.0)
    # The flip back waits for its rollout, then verifies over 2 minutes of reads made after it.
    resolved = stack.wait_decision(alertname, status="resolved", timeout=300)
    assert resolved["outcome"] == "resolved", resolved["reason"]
    steps = steps_of(resolved)
    assert [steps[n]["outcome"] for n in ("flag", "s3_recovered", "canary", "validate", "gate",
                                          "read_s3", "s3_rollout", "settle", "verify")] == [
        "succeeded"] * 9
    # The script the pod ran printed progress text and wrote its JSON report to the file
    # remediator named under /tmp, read back from the same pod, then deleted.
    validate = steps["validate"]["result"]
    report = validate["json"]
    assert report["status"] == "PASS" and report["mismatch_rate_percent"] == 0.0
    assert (report["total_sampled"], report["matches"], report["errors"]) == (1, 1, 0)
    assert "Starting S3 backfill validation" in validate["stdout"]
    *_, (_, pod, _, ran), (_, pod_cat, _, cat), (_, pod_rm, _, rm) = stack.kube.execs.started
    path = ran[-1]
    assert ran == ["python", "scripts/s3_backfill_validator.py", "--sample-rate", "0.01",
                   "--output", path] and path.startswith("/tmp/remediator-report-")
    assert (cat, rm, pod_cat, pod_rm) == (["cat", "--", path], ["rm", "-f", "--", path], pod, pod)
    assert not Path(path).exists()
    # the nightly report a human reads (artifacts/backfill_report.json) was never written
    assert not list((stack.kube.execs.root / DELTACROWN_NS).rglob("backfill_report.json"))
    assert _flags(stack) == seed.DELTACROWN_ENV

    # The firing notification once more (202 means stored or found a duplicate, so nothing
    # is queued behind it): reads are not moved to local storage again.
    assert stack.redeliver(decision) == (202, {"accepted": 0, "duplicates": 1})
    assert len(firing_decisions(stack, alertname)) == 1
    assert _flags(stack) == seed.DELTACROWN_ENV


def test_deltacrown_read_fallback_without_an_outage_does_not_flip(stack):
    """Scenario 4: 20 % of reads fall back but S3 answers and saves succeed: diagnose only."""
    alertname = "DeltaCrownCertS3ReadFallbackHigh"
    stack.require_route(alertname)
    stack.worker.restart()  # a new episode, guard state forgotten: only the evidence decides
    stack.s3_proxy.clear_faults()  # S3 answers (were an earlier scenario to leave it down)
    patches = len(stack.kube.requests_matching("PATCH", f"/deployments/{DELTACROWN}$"))
    known = {d["id"] for d in stack.executions(alertname=alertname)}

    _saves(stack, 0.0)
    _fallback(stack, 0.2)
    decision = stack.wait_decision(alertname, where=lambda d: d["id"] not in known)
    steps = steps_of(decision)
    assert decision["outcome"] == "escalated"
    assert steps["s3_canary"]["outcome"] == "succeeded" and steps["outage"]["outcome"] == "failed"
    assert steps["read_local"]["outcome"] == "skipped"
    assert _flags(stack) == seed.DELTACROWN_ENV
    note = stack.note(decision)
    assert "reads stay on S3, diagnose" in note and "get-bucket-location" in note

    _fallback(stack, 0.0)
    resolved = stack.wait_decision(alertname, status="resolved", where=lambda d: d["id"] not in known)
    assert resolved["outcome"] == "resolved" and resolved["steps"] == []
    assert len(stack.kube.requests_matching("PATCH", f"/deployments/{DELTACROWN}$")) == patches


def test_deltacrown_keeps_local_reads_when_the_validator_finds_objects_missing_in_s3(stack):
    alertname = "DeltaCrownCertS3ReadFallbackHigh"
    stack.require_route(alertname)
    stack.worker.restart()  # the first episode's 10-minute cooldown would block the flip
    known = {d["id"] for d in stack.executions(alertname=alertname)}
    # The validator's 1 % sample of 20 local certificates is the first key: it never reached
    # S3 (a write during the outage). An object-to-own-checksum comparison cannot see that.
    missing = seed.CERTS[0]
    versions = stack.s3.list_object_versions(Bucket=seed.CERT_BUCKET, Prefix=missing)["Versions"]
    for v in versions:
        stack.s3.delete_object(Bucket=seed.CERT_BUCKET, Key=missing, VersionId=v["VersionId"])

    _s3_down(stack)
    _saves(stack, 1.0)
    # The earlier scenarios left minutes of successful saves in the 10-minute window: the
    # save-failure ratio climbs slower than the fallback alert fires, and the playbook would
    # rightly see no outage yet. An outage shows in the saves first, as it does in production.
    stack.prometheus.wait_for("deltacrown:cert_s3_save_fail_ratio:rate10m > 0.2", timeout=300)
    _fallback(stack, 1.0)
    eventually(lambda: _flags(stack)["CERT_S3_READ_PRIMARY"] == "false",
               "reads to move to local storage", 90, why=stack.diagnostics)
    stack.s3_proxy.clear_faults()
    _saves(stack, 0.0)
    _fallback(stack, 0.0)
    resolved = stack.wait_decision(alertname, status="resolved", timeout=90,
                                   where=lambda d: d["id"] not in known)
    assert resolved["outcome"] == "escalated", resolved["reason"]
    # DeltaCrown's validator counts a missing object in `errors`, outside its mismatch rate:
    # by its own status this is a PASS. The gate counts errors too.
    report = steps_of(resolved)["validate"]["result"]["json"]
    assert report["status"] == "PASS" and report["mismatch_rate_percent"] == 0.0
    assert (report["total_sampled"], report["mismatches"], report["errors"]) == (1, 0, 1)
    assert report["mismatch_details"] == [{"object_key": missing, "error": "Object missing in S3"}]
    assert steps_of(resolved)["gate"]["outcome"] == "failed"
    assert "read_s3" not in steps_of(resolved)  # the gate stopped it
    assert _flags(stack)["CERT_S3_READ_PRIMARY"] == "false"
    assert _flags(stack)["CERT_S3_DUAL_WRITE"] == "true"

    note = stack.note(resolved)
    assert note.startswith(f"# [CRITICAL] {alertname}: S3 reads not restored for deltacrown")
    assert "1 objects missing from S3 or unreadable in 1 sampled" in note and missing in note


def test_code_forge_missing_bucket_escalates_to_the_platform_team_without_a_restart(stack):
    alertname = "CodeForgeS3UploadFailureHigh"
    stack.require_route(alertname)
    stack.worker.restart()  # the earlier restart's guard state (cooldown) is not what decides
    before = seed.restarted_at(stack.kube, CODE_FORGE_NS, CODE_FORGE)
    known = {d["id"] for d in stack.executions(alertname=alertname)}
    seed.set_logs(stack.kube, CODE_FORGE_NS, CODE_FORGE, seed.CODE_FORGE_NO_BUCKET_LOGS)
    # S3 itself says the bucket is gone (remediator's own HEAD, through the S3 endpoint)
    stack.s3_proxy.inject("HEAD", rf"^/{seed.SBOM_BUCKET}/?$", status=404, code="NoSuchBucket",
                          message="The specified bucket does not exist", times=None)
    try:
        stack.traffic.mix([(UPLOADS, UPLOAD_OK, 0.5), (UPLOADS, UPLOAD_FAILED, 0.5)])
        decision = stack.wait_decision(alertname, where=lambda d: d["id"] not in known)
    finally:
        stack.s3_proxy.clear_faults()
        seed.set_logs(stack.kube, CODE_FORGE_NS, CODE_FORGE, seed.CODE_FORGE_LOGS)
    assert decision["reason"].startswith("step 'bucket_exists' failed: the bucket is missing")
    steps = steps_of(decision)
    assert steps["bucket"]["outcome"] == "failed" and "restart" not in steps
    assert seed.restarted_at(stack.kube, CODE_FORGE_NS, CODE_FORGE) == before
    assert decision["escalation"]["team"] == "platform-team"
    page = eventually(lambda: [a for d in stack.human_deliveries("RemediationEscalation")
                               for a in d.body["alerts"] if d.path == "/platform-team"
                               and a["labels"]["execution_id"] == decision["id"]],
                      "the platform team's receiver to be paged", 60)
    assert page[0]["labels"]["severity"] == "critical"

    stack.traffic.mix([(UPLOADS, UPLOAD_OK, 1.0), (UPLOADS, UPLOAD_FAILED, 0.0)])
    stack.wait_inactive(alertname)


def test_code_forge_integrity_failure_restores_the_object_after_approval(stack):
    """Code Forge as it runs: its counter has only `status`, so the alert names no object; the
    S3ArtifactClient's log line names it (sbom_uri=s3://...), and the sha256 it checks against is
    the object's `sha256` metadata."""
    alertname = "CodeForgeS3IntegrityFailure"
    stack.require_route(alertname)
    key = seed.SBOMS[3]
    good = seed.read(stack.s3, seed.SBOM_BUCKET, key)
    seed.put_checksummed(stack.s3, seed.SBOM_BUCKET, key, b'{"bomFormat": "Cyclo', seed.sha256(good))
    seed.set_logs(stack.kube, CODE_FORGE_NS, CODE_FORGE, seed.code_forge_integrity_logs(key))
    stack.exporter.set(seed.INTEGRITY, 1, status="failure")

    blocked = stack.wait_decision(alertname)
    assert blocked["outcome"] == "blocked" and blocked["reason"].startswith("approval_pending")
    assert blocked["blocked_step"] == "restore"
    steps = steps_of(blocked)
    assert "object_key" not in blocked["alert"]["labels"]
    # the key of the failing line, not of s3_integrity_verified's (a pass) logged before it
    assert steps["logs"]["result"]["extracted"] == [key]
    assert steps["sbom_key"]["outcome"] == "skipped"  # no object_key label
    assert steps["verify"]["result"]["result"] == "mismatch"
    assert steps["verify"]["result"]["source"] == "metadata:sha256"
    assert steps["versions"]["result"]["count"] == 2
    note = stack.note(blocked)
    assert note.startswith(f"# [EMERGENCY] {alertname}: SBOM integrity failure on {key}")
    assert f"/api/v1/executions/{blocked['id']}/approve" in note
    assert seed.read(stack.s3, seed.SBOM_BUCKET, key) != good  # nothing restored without a human

    approve_url = f"{stack.worker.url}/api/v1/executions/{blocked['id']}/approve"
    assert http("POST", approve_url, b"")[0] == 401  # only with the bearer token
    status, approved = stack.approve(blocked["id"])
    assert status == 200, approved
    assert approved["outcome"] in ("escalated", "succeeded"), approved["reason"]
    steps = steps_of(approved)
    assert steps["restore"]["outcome"] == "succeeded" and steps["restore"]["result"]["changed"]
    assert steps["reverify"]["result"]["result"] == "match"
    assert seed.read(stack.s3, seed.SBOM_BUCKET, key) == good
    assert len(firing_decisions(stack, alertname)) == 1

    stack.exporter.remove(seed.INTEGRITY, status="failure")  # checks pass again
    seed.set_logs(stack.kube, CODE_FORGE_NS, CODE_FORGE, seed.CODE_FORGE_LOGS)
    stack.wait_decision(alertname, status="resolved")


# A rate over [5m] of a series only seconds old is its increase / 300 s, so the CPU counters
# advance 50 CPU-seconds per second: > 80 % of the pods' requests within a few seconds.
HOT = 50.0


def _cpu(stack: Stack, cpu_seconds_per_second: float, request_cores: float) -> None:
    for pod in stack.cpu_pods:
        labels = seed.cpu_labels(pod)
        stack.traffic.rate(seed.CPU, cpu_seconds_per_second, **labels)
        stack.exporter.set(seed.CPU_REQUESTS, request_cores, resource="cpu", unit="core", **labels)


def _replicas(stack: Stack) -> int:
    return stack.kube.get("deployments", seed.HACKATHON_NS, seed.HACKATHON)["spec"]["replicas"]


def test_hackathon_high_cpu_escalates_with_the_hpa_status_and_never_scales(stack):
    alertname = "HackathonFileProcessorHighCPU"
    stack.require_route(alertname)
    assert _replicas(stack) == 4

    _cpu(stack, HOT, 0.5)
    decision = stack.wait_decision(alertname)
    assert decision["outcome"] == "escalated", decision["reason"]
    steps = steps_of(decision)
    assert steps["hpa"]["result"]["object"]["spec"]["maxReplicas"] == 16  # the evidence
    assert not any(s["mutating"] for s in decision["steps"])
    assert _replicas(stack) == 4  # the HPA owns the replica count
    assert not stack.kube.requests_matching("PATCH", f"/deployments/{seed.HACKATHON}")
    note = stack.note(decision)
    assert note.startswith(f"# [WARNING] {alertname}: file processor CPU above 80 % for 10 minutes")
    assert "do not scale the deployment by hand" in note

    _cpu(stack, 0.0, 1000.0)
    stack.wait_decision(alertname, status="resolved")


def test_hackathon_service_down_with_ready_pods_does_not_restart(stack):
    """The scrape job is misconfigured: up == 0 fires, but every pod is ready, so a restart
    would only drop in-flight files. The note reaches the team's receiver."""
    alertname = "HackathonFileProcessorDown"
    stack.require_route(alertname)
    stack.reload_prometheus(misconfigure_job="hackathon-file-processor")
    try:
        decision = stack.wait_decision(alertname, timeout=60)
    finally:
        stack.reload_prometheus()
    assert decision["outcome"] == "escalated", decision["reason"]
    assert decision["reason"].startswith("step 'pods_not_ready' failed: every pod is ready (4 of 4)")
    assert seed.restarted_at(stack.kube, seed.HACKATHON_NS, seed.HACKATHON) is None
    assert not stack.kube.requests_matching("PATCH", f"/deployments/{seed.HACKATHON}")
    assert stack.note(decision).startswith(f"# [CRITICAL] {alertname}: hackathon-file-processor is down")
    pages = eventually(lambda: [a["labels"] for d in stack.human_deliveries("RemediationEscalation")
                                for a in d.body["alerts"] if d.path == "/hackathon-oncall"
                                and a["labels"]["original_alertname"] == alertname],
                       "the team's receiver to be paged", 60)
    assert (pages[0]["team"], pages[0]["severity"]) == ("hackathon-oncall", "critical")
    stack.wait_decision(alertname, status="resolved", timeout=60)


def started_at(stack: Stack, container: str) -> str:
    return stack.docker.api.inspect_container(container)["State"]["StartedAt"]


def test_libervia_api_down_restarts_the_dead_gateway_container_once(stack):
    """PROC-001 on compose: the gateway's container dies, the scrape fails (up == 0), the Engine
    confirms the container exited, remediator restarts it once and verifies /health."""
    alertname = "API_DOWN"
    stack.require_route(alertname)
    services, gateway = stack.services, seed.LIBERVIA
    before = started_at(stack, gateway)

    stack.docker.crash(gateway)  # the process dies (SIGKILLed, not by the Engine) ...
    services.healthy[services.LIBERVIA] = False  # ... so nothing answers on :3000: up == 0
    eventually(lambda: started_at(stack, gateway) != before,
               "remediator to start the gateway container again", 60, why=stack.diagnostics)
    services.healthy[services.LIBERVIA] = True  # the restarted gateway serves
    decision = stack.wait_decision(alertname, timeout=90)
    steps = steps_of(decision)
    assert decision["playbook"] == "libervia-api-down"
    assert decision["outcome"] == "succeeded", decision["reason"]
    assert decision["group"]["receiver"] == "remediator-compose"
    state = steps["state"]["result"]
    assert state["exited"] == [gateway] and state["containers"][0]["exit_code"] == 137
    assert state["crashed"] == [gateway] and state["containers"][0]["exit_cause"] == "crash"
    assert state["containers"][0]["environment_withheld"] == ["ADMIN_TOKEN"]
    assert "e2e-admin-secret" not in json.dumps(decision)
    assert steps["restart"]["result"]["restarted"] == [
        {"name": gateway, "was": "exited", "exit_code": 137}]
    assert steps["healthy"]["outcome"] == "succeeded"
    assert any("EventLog write failed" in line for line in steps["logs"]["result"]["lines"])
    assert stack.docker.api.inspect_container(gateway)["State"]["Running"]
    stack.wait_decision(alertname, status="resolved")

    # Alertmanager re-sent the firing alert meanwhile, and a duplicate delivery changes nothing
    assert stack.redeliver(decision)[0] == 202
    stamp = started_at(stack, gateway)
    time.sleep(2)
    assert [d["id"] for d in firing_decisions(stack, alertname)] == [decision["id"]]
    assert started_at(stack, gateway) == stamp


def test_3dpot_redis_failure_is_confirmed_by_ping_then_redis_is_restarted(stack):
    """redis_exporter reports redis_up == 0; `redis-cli ping` inside 3dpot-redis fails too, so
    remediator restarts the redis service once and verifies PONG."""
    alertname = "ThreeDPotRedisConnectionFailed"
    stack.require_route(alertname)
    redis = "3dpot-redis"
    before = started_at(stack, redis)
    stack.docker.set_state(redis, "redis-cli",
                           "1\nCould not connect to Redis at 127.0.0.1:6379: Connection refused")
    stack.traffic.exporter.set("redis_up", 0, job="3dpot-redis")

    eventually(lambda: started_at(stack, redis) != before, "remediator to restart 3dpot-redis", 60,
               why=stack.diagnostics)
    decision = stack.wait_decision(alertname, timeout=90)
    steps = steps_of(decision)
    assert decision["playbook"] == "3dpot-redis-connection"
    assert decision["outcome"] == "succeeded", decision["reason"]
    assert steps["ping"]["outcome"] == "failed"
    assert "Connection refused" in steps["ping"]["result"]["stdout"]
    assert steps["redis_answers"]["outcome"] == "skipped"
    assert [r["name"] for r in steps["restart"]["result"]["restarted"]] == [redis]
    assert steps["verify"]["result"]["stdout"] == "PONG\n"
    assert steps["verify_pong"]["outcome"] == "succeeded"  # PONG, not only exit 0
    stack.traffic.exporter.set("redis_up", 1, job="3dpot-redis")
    stack.wait_decision(alertname, status="resolved")
    # one restart for the whole episode, whatever Alertmanager re-sent
    assert len(firing_decisions(stack, alertname)) == 1


def test_3dpot_redis_answering_noauth_is_not_restarted(stack):
    """redis_up == 0 because redis_exporter's password went stale; `redis-cli ping` inside
    3dpot-redis answers NOAUTH and exits 0 (redis-cli without -e does on an error reply). Redis
    is up: a restart would drop sessions and rate limits and fix nothing, so none happens and
    DevOps is told it is authentication."""
    alertname = "ThreeDPotRedisConnectionFailed"
    stack.require_route(alertname)
    stack.worker.restart()  # the earlier episode's guard state is not what decides
    redis = "3dpot-redis"
    known = {d["id"] for d in stack.executions(alertname=alertname)}
    before = started_at(stack, redis)
    stack.docker.set_state(redis, "redis-cli", "0\nNOAUTH Authentication required.")
    stack.traffic.exporter.set("redis_up", 0, job="3dpot-redis")
    try:
        decision = stack.wait_decision(alertname, timeout=90, where=lambda d: d["id"] not in known)
        steps = steps_of(decision)
        assert decision["outcome"] == "escalated", decision["reason"]
        ping = steps["ping"]
        assert (ping["outcome"], ping["result"]["exit_code"]) == ("succeeded", 0)
        assert "NOAUTH" in ping["result"]["stdout"]
        assert steps["redis_error"]["outcome"] == "failed" and "restart" not in steps
        assert started_at(stack, redis) == before
        note = stack.note(decision)
        assert "3dPot Redis answers with an error, not PONG: not restarted" in note
        assert "NOAUTH Authentication required." in note
    finally:
        stack.docker.client.containers.get(redis).exec_run(["rm", "-f", "/state/redis-cli"])
        stack.traffic.exporter.set("redis_up", 1, job="3dpot-redis")
    stack.wait_decision(alertname, status="resolved", where=lambda d: d["id"] not in known)


def test_3dpot_database_stopped_on_purpose_is_not_started_behind_whoever_stopped_it(stack):
    """pg_up == 0 because someone ran `docker-compose stop db` (a maintenance window, the
    runbook's database rollback): PostgreSQL exits 0 on SIGTERM. The Engine says it was
    stopped, not crashed: nothing starts it, and the note says how to, once the work is done."""
    alertname = "ThreeDPotDatabaseConnectionFailed"
    stack.require_route(alertname)
    db = stack.docker.client.containers.get("3dpot-db")
    db.stop(timeout=20)
    stopped_at = stack.docker.api.inspect_container("3dpot-db")["State"]["FinishedAt"]
    stack.traffic.exporter.set("pg_up", 0, job="3dpot-db")
    try:
        decision = stack.wait_decision(alertname, timeout=90)
        steps = steps_of(decision)
        assert decision["playbook"] == "3dpot-db-connection"
        assert decision["outcome"] == "escalated", decision["reason"]
        assert "3dpot-db exited and the Docker Engine does not say it crashed (exit code 0" \
            in decision["reason"]
        assert steps["state"]["result"]["stopped"] == ["3dpot-db"]
        assert steps["state"]["result"]["crashed"] == []
        assert "restart" not in steps
        state = stack.docker.api.inspect_container("3dpot-db")["State"]
        assert (state["Status"], state["FinishedAt"]) == ("exited", stopped_at)
        assert "docker-compose up -d db" in stack.note(decision)
    finally:
        db.start()  # the human's work is done
        stack.traffic.exporter.set("pg_up", 1, job="3dpot-db")
    stack.wait_decision(alertname, status="resolved")


def test_3dpot_5xx_escalates_with_the_evidence_and_next_steps(stack):
    alertname = "ThreeDPotHigh5xxRate"
    stack.require_route(alertname)
    ok, failed = seed.HTTP_3DPOT_OK, seed.HTTP_3DPOT_5XX
    stack.traffic.mix([(seed.HTTP_3DPOT, ok, 0.8), (seed.HTTP_3DPOT, failed, 0.2)])

    decision = stack.wait_decision(alertname)
    assert decision["playbook"] == "3dpot-high-5xx" and decision["outcome"] == "escalated"
    steps = steps_of(decision)
    lines = json.dumps(steps["logs_5xx"]["result"])
    assert "t-9f2" in lines and "t-b77" in lines and "t-a01" not in lines  # 5xx lines only
    assert "/api/v1/projects" in json.dumps(steps["endpoints"]["result"])
    assert steps["deployment"]["outcome"] == "succeeded"
    note = stack.note(decision)
    assert note.startswith(f"# [CRITICAL] {alertname}: 3dPot API answers 5xx to more than 5 %")
    assert "Respond within:** 15 min" in note
    assert "t-9f2" in note and "psycopg2.OperationalError" in note  # the evidence
    assert "BACKEND_IMAGE_TAG=<previous> docker-compose up -d backend" in note  # the next steps

    stack.traffic.mix([(seed.HTTP_3DPOT, ok, 1.0), (seed.HTTP_3DPOT, failed, 0.0)])
    stack.wait_decision(alertname, status="resolved")
    assert stack.services.probed(stack.services.THREEDPOT), steps["health"]["detail"]
    assert steps["health"]["result"]["json"]["status"] == "healthy"
