"""S3 integrity: `s3.verify_checksum` (one object) and `s3.sample_integrity` (the certificate
runbook's backfill validator: hash a sample, compare with a stored checksum or a second copy).

Objects are streamed through sha256 in fixed chunks, so memory stays flat whatever their size.
A mismatch is a result, not a failure: the step succeeds and a playbook branches on it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import math
import random
import re
from pathlib import Path
from typing import Any

from .base import ActionContext, ActionError, Param, iam
from .s3 import (
    BUCKET,
    KEY,
    METADATA_KEY,
    VERSION,
    S3Action,
    call,
    client,
    list_objects,
    stored_checksum,
    url,
)

CHUNK = 1024 * 1024  # hashing reads 1 MiB at a time
MAX_LISTED = 50  # mismatches a result carries in full; results land in the audit store


def sha256_digest(text: str | None) -> bytes | None:
    """A stored sha256 in any common form (hex, base64, `sha256:` prefix), or None."""
    if not text:
        return None
    value = text.strip()
    value = value[7:] if value.lower().startswith("sha256:") else value
    if re.fullmatch(r"[0-9a-fA-F]{64}", value):
        return bytes.fromhex(value)
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == 32 else None


def hash_object(s3: Any, bucket: str, key: str, version_id: str | None = None) -> dict[str, Any]:
    """Stream an object through sha256 (blocking: run it in a thread). One GET gives both the
    bytes and the headers they were stored with, so content and checksum can't come from two
    different versions."""
    extra = {"VersionId": version_id} if version_id else {}
    response = s3.get_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED", **extra)
    digest, size = hashlib.sha256(), 0
    body = response["Body"]
    try:
        for chunk in body.iter_chunks(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    finally:
        body.close()
    return {"digest": digest.digest(), "bytes": size, "response": response}


def hash_file(path: Path) -> bytes:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.digest()


class VerifyChecksum(S3Action):
    name = "s3.verify_checksum"
    summary = ("Stream an object through sha256 and compare with its stored checksum; "
               "result is match|mismatch (a mismatch is a result, not a failure).")
    params = {"bucket": BUCKET, "key": KEY, "version_id": VERSION, "metadata_key": METADATA_KEY,
              "expected": Param("string", description="sha256 (hex or base64) to compare with "
                                "instead of the stored one")}
    permissions = iam("s3:GetObject", "s3:GetObjectVersion")

    def describe(self, params: dict[str, Any]) -> str:
        against = "the given sha256" if params.get("expected") else \
            f"metadata {params['metadata_key']!r} (else S3's ChecksumSHA256)"
        return f"verify the sha256 of {url(params['bucket'], params['key'])} against {against}"

    async def run(self, params: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
        where = url(params["bucket"], params["key"])
        got = await call(f"GetObject {where}", hash_object, client(ctx.backends), params["bucket"],
                         params["key"], params.get("version_id"))
        source, stored = ("param", params["expected"]) if params.get("expected") else \
            stored_checksum(got["response"], params["metadata_key"])
        result: dict[str, Any] = {"actual": got["digest"].hex(), "bytes": got["bytes"],
                                  "version_id": got["response"].get("VersionId"), "source": source}
        if stored is None:
            raise ActionError(f"{where} has no stored sha256 (metadata {params['metadata_key']!r} "
                              "or ChecksumSHA256) to compare with", result)
        expected = sha256_digest(stored)
        result["expected"] = expected.hex() if expected else stored
        result["result"] = "match" if expected == got["digest"] else "mismatch"
        if expected is None:
            result["note"] = "the stored checksum is not a sha256 in hex or base64"
        return result


class SampleIntegrity(S3Action):
    name = "s3.sample_integrity"
    summary = ("Hash a random sample of the objects under a prefix and compare each with its "
               "metadata checksum or a second copy; report the mismatch rate.")
    params = {
        "bucket": BUCKET, "prefix": Param("string", default="", kind="s3_prefix"),
        "rate": Param("number", default=0.01, description="fraction of keys to sample, 0 < rate <= 1"),
        "min_sample": Param("integer", default=10, minimum=1),
        "max_sample": Param("integer", default=1000, minimum=1),
        "seed": Param("integer", description="fixes the sample (tests, reproducing a report)"),
        "compare_bucket": Param("string", kind="s3_bucket", description="copy with the same keys"),
        "compare_dir": Param("string", description="local directory with the same relative keys"),
        "metadata_key": METADATA_KEY,
        "max_mismatch_rate": Param("number", minimum=0,
                                   description="adds pass = mismatch_rate <= this (a fraction)"),
        "max_keys": Param("integer", default=100_000, minimum=1, description="listing bound"),
        "concurrency": Param("integer", default=8, minimum=1),
    }
    permissions = iam("s3:ListBucket", "s3:GetObject")

    def check(self, params: dict[str, Any]) -> list[str]:
        problems = []
        if not 0 < params["rate"] <= 1:
            problems.append(f"rate must be in (0, 1], got {params['rate']}")
        if params["min_sample"] > params["max_sample"]:
            problems.append("min_sample must be <= max_sample")
        if params.get("compare_bucket") and params.get("compare_dir"):
            problems.append("give at most one of compare_bucket, compare_dir")
        if params["concurrency"] > 16:
            problems.append("concurrency must be <= 16 (the client's connection pool)")
        return problems

    def describe(self, params: dict[str, Any]) -> str:
        against = (f"the copy in bucket {params['compare_bucket']}" if params.get("compare_bucket")
                   else f"the copy in {params['compare_dir']}" if params.get("compare_dir")
                   else f"metadata {params['metadata_key']!r}")
        text = (f"hash {params['rate']:.2%} (min {params['min_sample']}, max {params['max_sample']}) "
                f"of {url(params['bucket'], params['prefix'])} and compare with {against}")
        if params.get("max_mismatch_rate") is not None:
            text += f"; pass if at most {params['max_mismatch_rate']:.2%} mismatch"
        return text

    async def run(self, params: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
        s3, bucket = client(ctx.backends), params["bucket"]
        where = url(bucket, params["prefix"])
        objects, truncated = await call(f"ListObjectsV2 {where}", list_objects, s3, bucket,
                                        params["prefix"], params["max_keys"])
        if not objects:
            raise ActionError(f"no objects under {where} to sample", {"listed": 0})
        keys = sorted(o["Key"] for o in objects)
        size = min(len(keys), params["max_sample"],
                   max(params["min_sample"], math.ceil(round(params["rate"] * len(keys), 6))))
        sample = sorted(random.Random(params.get("seed")).sample(keys, size))
        found = await _compare_all(s3, params, sample)
        rate = len(found) / len(sample)
        result: dict[str, Any] = {
            "listed": len(keys), "truncated": truncated, "sampled": len(sample),
            "mismatches": len(found), "mismatch_keys": [m["key"] for m in found[:MAX_LISTED]],
            "mismatch_details": found[:MAX_LISTED], "mismatch_rate": round(rate, 6),
            "mismatch_rate_percent": round(rate * 100, 4)}
        if params.get("max_mismatch_rate") is not None:
            result["pass"] = rate <= params["max_mismatch_rate"]
        return result


async def _compare_all(s3: Any, params: dict[str, Any], sample: list[str]) -> list[dict]:
    """Compare with `concurrency` workers; the first error (or the step's timeout) stops all."""
    pending, found = iter(sample), []

    async def worker() -> None:
        for key in pending:  # one shared iterator: each key is taken by exactly one worker
            mismatch = await _compare(s3, params, key)
            if mismatch is not None:
                found.append(mismatch)

    tasks = [asyncio.create_task(worker()) for _ in range(min(params["concurrency"], len(sample)))]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
    return sorted(found, key=lambda m: m["key"])


async def _compare(s3: Any, params: dict[str, Any], key: str) -> dict[str, Any] | None:
    """None when the key checks out, else {key, reason, expected, actual}."""
    bucket = params["bucket"]
    try:
        got = await call(f"GetObject {url(bucket, key)}", hash_object, s3, bucket, key)
    except ActionError as exc:
        if exc.result.get("status") == 404:  # deleted since the listing: gone is a mismatch
            return {"key": key, "reason": "missing"}
        raise
    actual = got["digest"]
    if params.get("compare_bucket"):
        other = params["compare_bucket"]
        try:
            copy = await call(f"GetObject {url(other, key)}", hash_object, s3, other, key)
        except ActionError as exc:
            if exc.result.get("status") == 404:
                return {"key": key, "reason": "missing in compare_bucket", "actual": actual.hex()}
            raise
        expected: bytes | None = copy["digest"]
    elif params.get("compare_dir"):
        root = Path(params["compare_dir"]).resolve()
        path = (root / key).resolve()
        if not path.is_relative_to(root):  # a key like a/../../etc/x must not leave the dir
            return {"key": key, "reason": "key escapes compare_dir", "actual": actual.hex()}
        if not path.is_file():
            return {"key": key, "reason": "missing in compare_dir", "actual": actual.hex()}
        expected = await asyncio.to_thread(hash_file, path)
    else:
        _, stored = stored_checksum(got["response"], params["metadata_key"])
        if stored is None:
            return {"key": key, "reason": "no stored checksum", "actual": actual.hex()}
        expected = sha256_digest(stored)
    if expected == actual:
        return None
    return {"key": key, "reason": "sha256 differs", "expected": expected.hex() if expected else None,
            "actual": actual.hex()}
