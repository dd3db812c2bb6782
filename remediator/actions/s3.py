"""S3 actions: the reads on-call runs by hand (head, versions, sizes) and the one write,
restoring a key to an earlier version; plus what every S3 action shares (the client, error
classification, listing). Checksums and sampling live in s3_integrity.py.

boto3 blocks, so every call runs in a worker thread (`asyncio.to_thread`) and the event loop
keeps taking webhooks. botocore's own retries are off (one attempt per call): the executor
retries, on `is_transient` only and inside the step's deadline, so every backend follows one
policy and the record counts the real attempts. One client per process, built from the
standard AWS chain (including AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_S3) on first use.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from .base import Action, ActionContext, ActionError, Param, TransientError, iam

if TYPE_CHECKING:
    import botocore.exceptions as bce

T = TypeVar("T")

CONNECT_TIMEOUT = 5.0
MAX_COPY_BYTES = 5 * 1024**3  # CopyObject's limit; larger objects need a multipart copy
HISTORY = 1000  # versions of one key a restore looks through (one ListObjectVersions page)

_TRANSIENT_CODES = frozenset({
    "SlowDown", "ServiceUnavailable", "RequestTimeout", "RequestTimeoutException", "InternalError",
    "Throttling", "ThrottlingException", "ThrottledException", "RequestLimitExceeded",
    "TooManyRequestsException", "Busy",
})
_TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})
_PERMANENT_STATUS = frozenset({400, 401, 403, 404, 405, 409, 412, 422})


def _bce() -> Any:
    """botocore's exceptions, imported on first use like boto3 (start-up need not pay)."""
    import botocore.exceptions
    return botocore.exceptions


@functools.cache
def _transient_errors() -> tuple[type[BaseException], ...]:
    """Network failures that say nothing about the request itself. Not SSLError or proxy
    errors: those are configuration and would fail the same way on every attempt."""
    bce = _bce()
    return (
        bce.EndpointConnectionError, bce.ConnectTimeoutError, bce.ReadTimeoutError,
        bce.ConnectionClosedError, bce.ResponseStreamingError, bce.IncompleteReadError,
        bce.FlexibleChecksumError,  # the body's stored CRC did not match: corrupted in transit
        ConnectionError, TimeoutError,  # builtins: resets, refused, asyncio timeouts
    )


async def client(backends: Any) -> Any:
    """The process's S3 client (thread-safe, so worker threads share its connection pool),
    built in a worker thread: the AWS chain may run a `credential_process` or ask the instance
    metadata service, and boto3 loads its models, seconds the event loop must not wait."""

    def build() -> Any:
        # Imported on first use: boto3 costs ~20 MB a process without S3 steps need not pay.
        import boto3
        import botocore.config

        config = botocore.config.Config(
            retries={"total_max_attempts": 1, "mode": "standard"},
            connect_timeout=CONNECT_TIMEOUT, read_timeout=backends.s3_read_timeout, max_pool_connections=20,
        )
        return boto3.session.Session().client("s3", config=config)

    return await asyncio.to_thread(backends.cached, "s3", build)


def is_transient(exc: BaseException) -> bool:
    """Worth another attempt: throttling, 5xx, timeouts, resets. Never 4xx (denied, missing)."""
    if isinstance(exc, TransientError):
        return True
    if isinstance(exc, ActionError):
        return False
    bce = _bce()
    if isinstance(exc, bce.ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if status in _PERMANENT_STATUS:
            return False
        return _code(exc) in _TRANSIENT_CODES or status in _TRANSIENT_STATUS
    return isinstance(exc, _transient_errors()) and not isinstance(exc, bce.SSLError)


def _code(exc: bce.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: BaseException) -> int | None:
    if isinstance(exc, _bce().ClientError):
        return exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return None


async def call(what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a blocking boto3 call in a thread; turn its errors into ActionError/TransientError.

    `what` names the operation and object for the step's detail (`GetObject s3://b/k`).
    """
    bce = _bce()  # boto3 is loaded by now: `fn` is one of its client's methods
    try:
        return await asyncio.to_thread(fn, *args, **kwargs)
    except ActionError:
        raise
    except (bce.BotoCoreError, bce.ClientError, OSError) as exc:
        if isinstance(exc, bce.ClientError):
            message = f"{what}: {_code(exc)} (HTTP {_status(exc)}): " \
                      f"{exc.response.get('Error', {}).get('Message', '')}".rstrip(": ")
        else:
            message = f"{what}: {type(exc).__name__}: {exc}"
        result = {"error": _code(exc) if isinstance(exc, bce.ClientError)
                  else type(exc).__name__, "status": _status(exc)}
        read = what.startswith(("Get", "Head", "List"))  # `what` starts with the S3 operation
        if is_transient(exc):
            raise TransientError(message, result, unapplied=read) from exc
        refused = isinstance(exc, bce.ClientError) and 400 <= (result["status"] or 0) < 500
        raise ActionError(message, result, unapplied=read or refused) from exc


def url(bucket: str, key: str = "") -> str:
    return f"s3://{bucket}/{key}"


def stored_checksum(response: dict[str, Any], metadata_key: str) -> tuple[str, str | None]:
    """(source, value): the metadata key first (the first present of several, comma-separated:
    a header name has no comma), then S3's own full-object ChecksumSHA256.

    A multipart upload's ChecksumSHA256 (`...-N`) is a checksum of part checksums and can't be
    compared with a hash of the whole object, so it is ignored.
    """
    metadata = response.get("Metadata") or {}
    for name in (k.strip().lower() for k in metadata_key.split(",")):
        if name and metadata.get(name):
            return f"metadata:{name}", metadata[name]
    s3_sum = response.get("ChecksumSHA256")
    if s3_sum and "-" not in s3_sum:
        return "ChecksumSHA256", s3_sum
    return "", None


def list_objects(s3: Any, bucket: str, prefix: str, limit: int) -> tuple[list[dict], bool]:
    """Up to `limit` {Key, Size} under a prefix, paginated; True when more were left out."""
    found: list[dict] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            if len(found) == limit:
                return found, True
            found.append({"Key": obj["Key"], "Size": obj["Size"]})
    return found, False


class S3Action(Action):
    """What every S3 action shares: the error classification above, and a write's scope."""

    def is_transient(self, exc: BaseException) -> bool:
        return is_transient(exc)

    def scope(self, params: dict[str, Any]) -> list[tuple[str, str]]:
        return [("bucket", params.get("bucket") or "")] if self.mutates(params) else []

    def touches(self, params: dict[str, Any]) -> dict[str, Any]:
        bucket = params.get("bucket")  # `target: {kind: bucket, name: ...}`
        return {"kind": "bucket", "name": bucket} if bucket else {}


BUCKET = Param("string", required=True, kind="s3_bucket")
KEY = Param("string", required=True, kind="s3_key")
VERSION = Param("string", description="a version id; default the current version")
# Shared parameter declarations, so every S3 action validates the same way.
METADATA_KEY = Param("string", default="checksum",
                     description="user metadata key holding the sha256 (x-amz-meta-<key>); "
                                 "several, comma-separated: the first one present")


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


# --- reads -----------------------------------------------------------------------------------

class HeadObject(S3Action):
    name = "s3.head_object"
    summary = "Read an object's metadata, stored checksums and version (no content)."
    params = {"bucket": BUCKET, "key": KEY, "version_id": VERSION,
              "metadata_key": METADATA_KEY,
              "missing_ok": Param("boolean", default=False,
                                  description="a missing object gives exists=false, not a failure")}
    permissions = iam("s3:GetObject", "s3:GetObjectVersion")

    def describe(self, params: dict[str, Any]) -> str:
        return f"read metadata of {url(params['bucket'], params['key'])}"

    async def run(self, params: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
        extra = {"VersionId": params["version_id"]} if params.get("version_id") else {}
        where = url(params["bucket"], params["key"])
        try:
            head = await call(f"HeadObject {where}", (await client(ctx.backends)).head_object,
                              Bucket=params["bucket"], Key=params["key"], ChecksumMode="ENABLED",
                              **extra)
        except ActionError as exc:
            if params["missing_ok"] and exc.result.get("status") == 404:
                # S3 marks a HEAD on a deleted key; a playbook can branch to a restore on it.
                cause = exc.__cause__
                headers = cause.response["ResponseMetadata"].get("HTTPHeaders", {}) \
                    if isinstance(cause, _bce().ClientError) else {}
                return {"exists": False, "deleted": headers.get("x-amz-delete-marker") == "true"}
            raise
        source, checksum = stored_checksum(head, params["metadata_key"])
        return {"exists": True, "size": head.get("ContentLength"), "etag": head.get("ETag"),
                "last_modified": _iso(head.get("LastModified")), "version_id": head.get("VersionId"),
                "content_type": head.get("ContentType"), "storage_class": head.get("StorageClass"),
                "metadata": head.get("Metadata") or {}, "checksum": checksum,
                "checksum_source": source or None, "checksum_sha256": head.get("ChecksumSHA256")}


class HeadBucket(S3Action):
    name = "s3.head_bucket"
    summary = "Check that a bucket exists and these credentials can reach it."
    params = {"bucket": BUCKET}
    permissions = iam("s3:ListBucket")

    def describe(self, params: dict[str, Any]) -> str:
        return f"check that bucket {params['bucket']} exists and is reachable"

    async def run(self, params: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
        head = await call(f"HeadBucket {params['bucket']}", (await client(ctx.backends)).head_bucket,
                          Bucket=params["bucket"])
        headers = head.get("ResponseMetadata", {}).get("HTTPHeaders", {})
        return {"exists": True, "region": head.get("BucketRegion") or headers.get("x-amz-bucket-region")}


class ListObjectVersions(S3Action):
    name = "s3.list_object_versions"
    summary = "List the versions and delete markers of a key (or under a prefix), newest first."
    params = {"bucket": BUCKET, "key": Param("string", kind="s3_key"),
              "prefix": Param("string", kind="s3_prefix"),
              "max_items": Param("integer", default=20, minimum=1)}
    permissions = iam("s3:ListBucketVersions")

    def check(self, params: dict[str, Any]) -> list[str]:
        problems = [] if ("key" in params) != ("prefix" in params) else ["give exactly one of key, prefix"]
        return problems + (["max_items must be <= 1000"] if params["max_items"] > 1000 else [])

    def describe(self, params: dict[str, Any]) -> str:
        what = params.get("key", params.get("prefix", "")) + ("" if "key" in params else "*")
        return f"list up to {params['max_items']} versions of {url(params['bucket'], what)}"

    async def run(self, params: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
        key = params.get("key")
        where = url(params["bucket"], key or params.get("prefix", ""))
        versions, truncated = await call(f"ListObjectVersions {where}", versions_of,
                                         await client(ctx.backends), params["bucket"],
                                         key if key is not None else params["prefix"],
                                         params["max_items"], exact=key is not None)
        latest = next((v for v in versions if v["is_latest"]), None)
        return {"versions": versions, "count": len(versions), "truncated": truncated,
                "latest": latest["version_id"] if latest else None,
                "deleted": bool(latest and latest["delete_marker"])}


def versions_of(s3: Any, bucket: str, prefix: str, limit: int, exact: bool) -> tuple[list[dict], bool]:
    """Versions and delete markers, newest first per key (blocking).

    S3 lists a key's versions and its delete markers in two arrays, each newest first; their
    timestamps can tie to the second, so they are merged by timestamp with the order S3 gave
    breaking ties (IsLatest first) rather than re-sorted.
    """
    out: list[dict] = []
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
        entries = [(v, False) for v in page.get("Versions", [])] + \
                  [(m, True) for m in page.get("DeleteMarkers", [])]
        if exact:
            entries = [(e, dm) for e, dm in entries if e["Key"] == prefix]
        entries.sort(key=lambda e: (e[0]["Key"], not e[0]["IsLatest"], -e[0]["LastModified"].timestamp()))
        for entry, marker in entries:
            if len(out) == limit:
                return out, True
            out.append({"key": entry["Key"], "version_id": entry["VersionId"],
                        "is_latest": entry["IsLatest"], "delete_marker": marker,
                        "size": entry.get("Size"), "etag": entry.get("ETag"),
                        "last_modified": _iso(entry["LastModified"])})
        if exact and page.get("NextKeyMarker", prefix) != prefix:
            break  # keys sort by name: once past ours, nothing more of it follows
    return out, False


class ObjectStats(S3Action):
    name = "s3.object_stats"
    summary = "Count the objects under a prefix and their total, average and largest size."
    params = {"bucket": BUCKET, "prefix": Param("string", default="", kind="s3_prefix"),
              "max_keys": Param("integer", default=100_000, minimum=1,
                                description="stop listing after this many objects")}
    permissions = iam("s3:ListBucket")

    def describe(self, params: dict[str, Any]) -> str:
        return (f"count objects and their average size under "
                f"{url(params['bucket'], params['prefix'])} (up to {params['max_keys']})")

    async def run(self, params: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
        where = url(params["bucket"], params["prefix"])
        objects, truncated = await call(f"ListObjectsV2 {where}", list_objects, await client(ctx.backends),
                                        params["bucket"], params["prefix"], params["max_keys"])
        sizes = [o["Size"] for o in objects]
        largest = max(objects, key=lambda o: o["Size"], default=None)
        return {"count": len(sizes), "total_bytes": sum(sizes),
                "average_bytes": round(sum(sizes) / len(sizes), 1) if sizes else 0.0,
                "largest": {"key": largest["Key"], "bytes": largest["Size"]} if largest else None,
                "truncated": truncated}


# --- the one write: restore a version ------------------------------------------------------

class RestoreVersion(S3Action):
    name = "s3.restore_version"
    summary = ("Make an earlier version current again by copying it over the key (undeletes a "
               "deleted key); only on versioned buckets, so the replaced state stays recoverable.")
    mutating = True
    params = {"bucket": BUCKET, "key": KEY,
              "version_id": Param("string", description="version to restore; default the newest "
                                  "version older than the current one (or, when the key is "
                                  "deleted, the newest real version)")}
    # CopyObject copies tags by default: a tagged source also needs the two tagging actions.
    permissions = iam("s3:GetBucketVersioning", "s3:ListBucketVersions", "s3:GetObjectVersion",
                      "s3:GetObjectVersionTagging", "s3:PutObject", "s3:PutObjectTagging")

    def repeatable(self, params: dict[str, Any]) -> bool:
        # "The previous version" moves with every restore: a repeat would undo the first.
        return bool(params.get("version_id"))

    def describe(self, params: dict[str, Any]) -> str:
        to = f"version {params['version_id']}" if params.get("version_id") else \
            "the previous version (the newest real version, if the key is deleted)"
        return f"would restore {url(params['bucket'], params['key'])} to {to}"

    async def run(self, params: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
        s3, bucket, key = await client(ctx.backends), params["bucket"], params["key"]
        where = url(bucket, key)
        versioning = await call(f"GetBucketVersioning {bucket}", s3.get_bucket_versioning, Bucket=bucket)
        if versioning.get("Status") != "Enabled":
            raise ActionError(f"refusing to restore {where}: versioning on {bucket} is "
                              f"{versioning.get('Status', 'off')}, so the copy would overwrite "
                              "the current object with no way back",
                              {"versioning": versioning.get("Status", "off")}, unapplied=True)
        history, _ = await call(f"ListObjectVersions {where}", versions_of, s3, bucket, key,
                                HISTORY, exact=True)
        current = next((v for v in history if v["is_latest"]), None)
        target = _restore_target(history, current, params.get("version_id"), where)
        if target is current:  # already current: a repeat changes nothing, not even the history
            return {"restored_version": target["version_id"], "new_version_id": None,
                    "previous_current": target["version_id"], "was_deleted": False,
                    "bytes": target["size"], "changed": False}
        if (target["size"] or 0) > MAX_COPY_BYTES:
            raise ActionError(f"{where} version {target['version_id']} is {target['size']} bytes; "
                              "CopyObject stops at 5 GiB: restore it by hand with a multipart copy",
                              unapplied=True)
        copied = await call(f"CopyObject {where}", s3.copy_object, Bucket=bucket, Key=key,
                            CopySource={"Bucket": bucket, "Key": key,
                                        "VersionId": target["version_id"]})
        return {"restored_version": target["version_id"], "new_version_id": copied.get("VersionId"),
                "previous_current": current["version_id"] if current else None,
                "was_deleted": bool(current and current["delete_marker"]), "bytes": target["size"],
                "changed": True}


def _restore_target(history: list[dict], current: dict | None, wanted: str | None,
                    where: str) -> dict:
    real = [v for v in history if not v["delete_marker"]]
    if wanted:
        found = next((v for v in history if v["version_id"] == wanted), None)
        if found is None or found["delete_marker"]:
            raise ActionError(f"{where} has no version {wanted!r} to restore"
                              + (" (it is a delete marker)" if found else ""), unapplied=True)
        return found
    if current is None or not real:
        raise ActionError(f"{where} has no earlier version to restore", unapplied=True)
    if current["delete_marker"]:
        return real[0]
    older = real[real.index(current) + 1:]
    if not older:
        raise ActionError(f"{where} has only its current version; nothing older to restore",
                          {"current": current["version_id"]}, unapplied=True)
    return older[0]
