"""The five systems as the e2e stack seeds them: names from docs/runbooks.md.

Kubernetes workloads (with pod logs a playbook greps), S3 objects with the sha256 in the
`sha256` metadata key, as Code Forge's S3ArtifactClient stores it, and the
metric series the alert rules select, exported at 0 so a rule's first `rate()` sees the
first increase.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from tests.kubeapi.server import KubeAPIServer
from tests.support.s3 import FAKE_ENV

CODE_FORGE_NS, CODE_FORGE = "neural-hive-pipeline", "code-forge"
DELTACROWN_NS, DELTACROWN = "deltacrown", "deltacrown"
LIBERVIA_NS, LIBERVIA = "libervia", "libervia-gateway"
HACKATHON_NS, HACKATHON = "default", "hackathon-file-processor"  # its runbook's namespace
THREEDPOT_NS, THREEDPOT = "3dpot", "3dpot-backend"
NAMESPACES = (CODE_FORGE_NS, DELTACROWN_NS, LIBERVIA_NS, HACKATHON_NS, THREEDPOT_NS)

SBOM_BUCKET = "code-forge-artifacts-prod"
CERT_BUCKET = "deltacrown-certificates"
BUCKETS = (SBOM_BUCKET, CERT_BUCKET)
CHECKSUM_KEY = "sha256"  # S3ArtifactClient's ExtraArgs Metadata {'sha256': ...} (not the runbook's)
SBOMS = [f"sboms/TICKET-{100 + i}/artifact-{i}/sbom.cyclonedx.json" for i in range(12)]
CERTS = [f"certificates/{i:04d}.pem" for i in range(20)]
CANARY = "test.txt"  # the runbook's S3 test object, DeltaCrown's canary read
DELTACROWN_ENV = {"CERT_S3_READ_PRIMARY": "true", "CERT_S3_DUAL_WRITE": "true", "LOG_LEVEL": "INFO"}
DELTACROWN_IMAGE = "registry.example.com/deltacrown:1.0"
# The application's files in that image: scripts/s3_backfill_validator.py (run through exec).
DELTACROWN_APP = Path(__file__).parent / "apps" / "deltacrown"

# Code Forge logs with structlog; S3ArtifactClient's events as its console renderer prints them
# (keys sorted): an upload names remote_key=, an integrity check sbom_uri=s3://<bucket>/<key>.
def _uploads(count: int) -> list[str]:
    """The two lines S3ArtifactClient logs for each upload that worked: a busy morning's."""
    lines = []
    for i in range(count):
        key = f"sboms/TICKET-{i}/artifact-{i}/sbom.cyclonedx.json"
        at = f"2026-11-21T09:{i // 60 % 60:02d}:{i % 60:02d}"
        lines += [f"{at}.000Z [info     ] s3_upload_started              artifact_type=sbom "
                  f"local_path=/tmp/sbom-{i}.json remote_key={key} size_bytes=48211",
                  f"{at}.380Z [info     ] s3_upload_completed            artifact_type=sbom "
                  f"duration_seconds=0.38 remote_key={key} s3_uri=s3://{SBOM_BUCKET}/{key} "
                  "size_bytes=48211"]
    return lines


# 200 uploads, then the credentials expire: the evidence is the newest lines, and the
# ExpiredToken line is past any first 100 matching `s3|upload|error`
CODE_FORGE_LOGS = [
    *_uploads(200),
    "2026-11-21T10:00:01.104Z [info     ] sbom_generated                 artifact_id=artifact-0 "
    "ticket_id=TICKET-100",
    "2026-11-21T10:00:02.311Z [error    ] s3_upload_failed               artifact_type=sbom "
    "duration_seconds=0.412 error='An error occurred (ExpiredToken) when calling the PutObject "
    "operation: The provided token has expired.' error_type=ClientError "
    "remote_key=sboms/TICKET-100/artifact-0/sbom.cyclonedx.json",
    "2026-11-21T10:00:03.020Z [warning  ] s3_integrity_no_checksum       "
    "sbom_uri=s3://code-forge-artifacts-prod/sboms/TICKET-101/artifact-1/sbom.cyclonedx.json",
    "2026-11-21T10:00:05.000Z [info     ] healthz_ok",
]


def code_forge_integrity_logs(key: str) -> list[str]:
    """What S3ArtifactClient.verify_sbom_integrity logs for a corrupt SBOM."""
    return [*CODE_FORGE_LOGS,
            f"2026-11-21T10:00:04.100Z [info     ] s3_integrity_verified          "
            f"sbom_uri=s3://{SBOM_BUCKET}/{SBOMS[0]}",
            f"2026-11-21T10:00:04.500Z [info     ] s3_download_completed          "
            f"local_path=/tmp/tmpx1 s3_uri=s3://{SBOM_BUCKET}/{key} size_bytes=20",
            f"2026-11-21T10:00:04.512Z [error    ] s3_integrity_mismatch          "
            f"calculated=5f0c3a9b1d2e4f60 expected=9a8b7c6d5e4f3a2b sbom_uri=s3://{SBOM_BUCKET}/{key}"]
CODE_FORGE_NO_BUCKET_LOGS = [
    "2026-11-21T11:00:01Z ERROR S3ArtifactClient upload failed key=sboms/TICKET-100/artifact-0/"
    "sbom.cyclonedx.json: NoSuchBucket: The specified bucket does not exist",
]
DELTACROWN_LOGS = [
    "2026-11-21T10:00:01Z WARNING cert_storage: S3 read failed, falling back to local: "
    "EndpointConnectionError",
    "2026-11-21T10:00:02Z ERROR cert_storage: S3 save failed: SlowDown (HTTP 503)",
    "2026-11-21T10:00:03Z INFO  certificate issued id=0007",
]
LIBERVIA_LOGS = [
    '{"level":50,"msg":"EventLog write failed","tenantId":"acme","err":"EMFILE"}',
    '{"level":30,"msg":"request completed","statusCode":200}',
]
HACKATHON_LOGS = [
    "2026-11-21T10:00:01Z INFO  processing file uploads/big.csv from SQS",
    "2026-11-21T10:00:02Z ERROR MongoDB write timeout after 30000ms",
]
THREEDPOT_LOGS = [
    '{"level":"error","request_id":"r-1","trace_id":"t-9f2","path":"/api/v1/projects",'
    '"status_code":500,"duration_ms":812,"error":"psycopg2.OperationalError"}',
    '{"level":"INFO","request_id":"r-2","trace_id":"t-a01","path":"/health","status_code":200}',
    '{"level":"error","request_id":"r-3","trace_id":"t-b77","path":"/api/v1/models/upload",'
    '"status_code":503,"duration_ms":30001,"error":"storage timeout"}',
]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sbom(key: str, generation: int = 1) -> bytes:
    """A small CycloneDX document, distinct per key and generation."""
    return json.dumps({"bomFormat": "CycloneDX", "specVersion": "1.5", "serialNumber": key,
                       "version": generation, "components": [{"name": "libfoo", "version": "1.2"}]},
                      sort_keys=True).encode()


def certificate(key: str) -> bytes:
    return f"-----BEGIN CERTIFICATE-----\n{sha256(key.encode())}\n-----END CERTIFICATE-----\n".encode()


# --- Kubernetes ----------------------------------------------------------------------------

def _service(kube: KubeAPIServer, namespace: str, name: str, port: int, app: str) -> None:
    kube.add({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": namespace},
              "spec": {"selector": {"app": app},
                       "ports": [{"name": "http", "port": port, "targetPort": port}]}})


def pod_names(kube: KubeAPIServer, namespace: str, app: str) -> list[str]:
    return sorted(p["metadata"]["name"] for p in kube.list("pods", namespace, f"app={app}"))


def set_logs(kube: KubeAPIServer, namespace: str, app: str, lines: list[str]) -> None:
    for pod in pod_names(kube, namespace, app):
        kube.set_logs(namespace, pod, lines)


def aws_env(s3_url: str) -> dict[str, str]:
    """What a pod needs to reach S3 in the test: the endpoint and fake credentials."""
    return {**FAKE_ENV, "AWS_ENDPOINT_URL": s3_url}


def local_copy(media: Path) -> None:
    """DeltaCrown's local dual-write copy (the volume at /mnt/media): every certificate."""
    for key in CERTS:
        path = media / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(certificate(key))


def kubernetes(kube: KubeAPIServer, s3_url: str, media: Path) -> None:
    kube.add({"apiVersion": "v1", "kind": "ServiceAccount",
              "metadata": {"name": CODE_FORGE, "namespace": CODE_FORGE_NS, "annotations": {
                  "eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/code-forge"}}})
    kube.add_deployment(CODE_FORGE, CODE_FORGE_NS, replicas=2, env=aws_env(s3_url))
    local_copy(media)
    kube.add_image_files(DELTACROWN_IMAGE, DELTACROWN_APP)
    kube.add_deployment(DELTACROWN, DELTACROWN_NS, replicas=2, image=DELTACROWN_IMAGE,
                        env={**DELTACROWN_ENV, **aws_env(s3_url), "CERT_LOCAL_ROOT": str(media)})
    kube.add_deployment(HACKATHON, HACKATHON_NS, replicas=4)
    kube.add({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
              "metadata": {"name": HACKATHON, "namespace": HACKATHON_NS},
              "spec": {"minReplicas": 4, "maxReplicas": 16,
                       "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                          "name": HACKATHON}}})
    _service(kube, HACKATHON_NS, HACKATHON, 3000, HACKATHON)
    set_logs(kube, CODE_FORGE_NS, CODE_FORGE, CODE_FORGE_LOGS)
    set_logs(kube, DELTACROWN_NS, DELTACROWN, DELTACROWN_LOGS)
    set_logs(kube, HACKATHON_NS, HACKATHON, HACKATHON_LOGS)


# Libervia and 3dPot run on docker-compose: containers as compose labels them, printing their
# logs at start. Starting is what fixes them, as a restart does: the gateway serves again, and
# Redis forgets the failure /state/redis-cli makes its redis-cli report.
COMPOSE_PROJECTS = ("libervia", "3dpot")
SERVE = "exec sleep 100000"
# PostgreSQL's shutdown on SIGTERM (docker-compose stop): it exits 0.
SERVE_UNTIL_STOPPED = "trap 'exit 0' TERM; while :; do sleep 0.2; done"


def docker(engine: Any) -> None:
    engine.service("libervia", "gateway", name=LIBERVIA, state={"logs": "\n".join(LIBERVIA_LOGS)},
                   command=f"cat /state/logs; echo; {SERVE}",
                   env={"NODE_ENV": "production", "ADMIN_TOKEN": "e2e-admin-secret"})
    engine.service("3dpot", "backend", name=THREEDPOT, state={"logs": "\n".join(THREEDPOT_LOGS)},
                   command=f"cat /state/logs; echo; {SERVE}")
    engine.service("3dpot", "db", name="3dpot-db", command=SERVE_UNTIL_STOPPED)
    engine.service("3dpot", "redis", name="3dpot-redis", command=f"rm -f /state/redis-cli; {SERVE}",
                   health="redis-cli ping")


def env_of(kube: KubeAPIServer, namespace: str, name: str) -> dict[str, str]:
    """The first container's env of a deployment, as a dict."""
    dep = kube.get("deployments", namespace, name)
    assert dep is not None, f"deployment {namespace}/{name} is gone"
    container = dep["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", "") for e in container.get("env") or []}


def restarted_at(kube: KubeAPIServer, namespace: str, name: str, kind: str = "deployments") -> str | None:
    obj = kube.get(kind, namespace, name) or {}
    annotations = obj.get("spec", {}).get("template", {}).get("metadata", {}).get("annotations") or {}
    return annotations.get("kubectl.kubernetes.io/restartedAt")


# --- S3 ------------------------------------------------------------------------------------

def put_checksummed(s3: Any, bucket: str, key: str, body: bytes, checksum: str | None = None) -> str:
    """Store `body` with `checksum` (its own sha256 unless given: a corrupt object keeps the
    checksum of what it should be); returns the new version id."""
    response = s3.put_object(Bucket=bucket, Key=key, Body=body,
                             Metadata={CHECKSUM_KEY: checksum or sha256(body)})
    return response.get("VersionId", "")


def s3(client: Any) -> None:
    for bucket in BUCKETS:
        client.create_bucket(Bucket=bucket)
        client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    for key in SBOMS:
        put_checksummed(client, SBOM_BUCKET, key, sbom(key))
    for key in CERTS:
        put_checksummed(client, CERT_BUCKET, key, certificate(key))
    client.put_object(Bucket=CERT_BUCKET, Key=CANARY, Body=b"deltacrown canary\n")


def read(client: Any, bucket: str, key: str) -> bytes:
    return client.get_object(Bucket=bucket, Key=key)["Body"].read()


# --- metrics -------------------------------------------------------------------------------

UPLOADS = "code_forge_s3_upload_total"
UPLOAD_OK = {"status": "success", "operation": "upload"}
UPLOAD_FAILED = {"status": "failure", "operation": "upload"}
INTEGRITY = "code_forge_s3_integrity_check_total"
LATENCY = "code_forge_s3_upload_duration_seconds_bucket"
LATENCY_BUCKETS = ("1", "5", "10", "30", "+Inf")
CERT_READS, CERT_FALLBACKS = "cert_s3_read_total", "cert_s3_read_fallback_total"
CERT_SAVES, CERT_SAVE_FAILS = "cert_s3_save_total", "cert_s3_save_fail_total"
HTTP_3DPOT = "http_requests_total"
HTTP_3DPOT_OK = {"job": "3dpot-backend", "method": "GET", "endpoint": "/api/v1/projects", "status": "200"}
HTTP_3DPOT_5XX = {**HTTP_3DPOT_OK, "status": "500"}
CPU = "container_cpu_usage_seconds_total"
CPU_REQUESTS = "kube_pod_container_resource_requests"


def hackathon_pods(kube: KubeAPIServer) -> list[str]:
    return pod_names(kube, HACKATHON_NS, HACKATHON)


def cpu_labels(pod: str) -> dict[str, str]:
    return {"namespace": HACKATHON_NS, "pod": pod, "container": HACKATHON}


def metrics(traffic: Any, kube: KubeAPIServer) -> list[str]:
    """Export every series the scenarios drive, at 0; returns the hackathon pods with CPU series."""
    traffic.declare(UPLOADS, **UPLOAD_OK)
    traffic.declare(UPLOADS, **UPLOAD_FAILED)
    traffic.declare(INTEGRITY, status="success")
    for le in LATENCY_BUCKETS:
        traffic.declare(LATENCY, le=le, operation="upload")
    traffic.declare(CERT_READS)
    traffic.declare(CERT_FALLBACKS)
    traffic.declare(CERT_SAVES)
    traffic.declare(CERT_SAVE_FAILS)
    traffic.declare(HTTP_3DPOT, **HTTP_3DPOT_OK)
    traffic.declare(HTTP_3DPOT, **HTTP_3DPOT_5XX)
    traffic.exporter.set("pg_up", 1, job="3dpot-db")
    traffic.exporter.set("redis_up", 1, job="3dpot-redis")
    pods = hackathon_pods(kube)
    for pod in pods:
        traffic.declare(CPU, **cpu_labels(pod))
        traffic.exporter.set(CPU_REQUESTS, 0.5, resource="cpu", unit="core", **cpu_labels(pod))
    return pods
