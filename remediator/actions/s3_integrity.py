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
        got = await call(f"GetObject {where}", hash_object, await client(ctx.backends), params["bucket"],
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
                                   description="adds pass: with `confidence`, the true mismatch "
                                   "rate is at most this (a fraction); sizes the sample"),
        "confidence": Param("number", default=0.95, description="of pass, 0.5 <= c < 1"),
        "max_keys": Param("integer", default=100_000, minimum=1, description="listing bound"),
        "concurrency": Param("integer", default=8, minimum=1),
    }
    ordered = (("min_sample", "max_sample"),)
    permissions = iam("s3:ListBucket", "s3:GetObject")

    def check(self, params: dict[str, Any]) -> list[str]:
        problems = []
        if not 0 < params["rate"] <= 1:
            problems.append(f"rate must be in (0, 1], got {params['rate']}")
        if params.get("compare_bucket") and params.get("compare_dir"):
            problems.append("give at most one of compare_bucket, compare_dir")
        if not 0.5 <= params["confidence"] < 1:
            problems.append(f"confidence must be in [0.5, 1), got {params['confidence']}")
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
            text += (f"; pass if, with {params['confidence']:.0%} confidence, at most "
                     f"{params['max_mismatch_rate']:.2%} mismatch ("
                     f"{_keys(required_sample(params['max_mismatch_rate'], params['confidence']))}"
                     " sampled, or all)")
        return text

    async def run(self, params: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
        s3, bucket = await client(ctx.backends), params["bucket"]
        where = url(bucket, params["prefix"])
        objects, truncated = await call(f"ListObjectsV2 {where}", list_objects, s3, bucket,
                                        params["prefix"], params["max_keys"])
        if not objects:
            raise ActionError(f"no objects under {where} to sample", {"listed": 0})
        keys = sorted(o["Key"] for o in objects)
        threshold, confidence = params.get("max_mismatch_rate"), params["confidence"]
        wanted = max(params["min_sample"], math.ceil(round(params["rate"] * len(keys), 6)))
        if threshold is not None:
            wanted = max(wanted, required_sample(threshold, confidence))
        size = int(min(len(keys), params["max_sample"], wanted))
        # Uniform over every listed key; a truncated listing is reported and never passes.
        sample = sorted(random.Random(params.get("seed")).sample(keys, size))
        found = await _compare_all(s3, params, sample)
        rate = len(found) / len(sample)
        result: dict[str, Any] = {
            "listed": len(keys), "truncated": truncated, "sampled": len(sample),
            "mismatches": len(found), "mismatch_keys": [m["key"] for m in found[:MAX_LISTED]],
            "mismatch_details": found[:MAX_LISTED], "mismatch_rate": round(rate, 6),
            "mismatch_rate_percent": round(rate * 100, 4)}
        if threshold is not None:
            result.update(_verdict(threshold, confidence, len(found), len(sample),
                                   census=size == len(keys) and not truncated,
                                   truncated=truncated, max_keys=params["max_keys"]))
        return result


def _keys(needed: float) -> str:
    return "every key" if math.isinf(needed) else f"{needed} keys"


def required_sample(threshold: float, confidence: float) -> float:
    """Keys to sample so that finding no mismatch shows, with `confidence`, that the true
    rate is at most `threshold`: the zero-failure bound n >= ln(1 - c) / ln(1 - p).
    (0.5 % at 95 %: 598 keys.) A threshold of 0 can only be shown by checking every key."""
    if threshold <= 0:
        return math.inf
    if threshold >= 1:
        return 1
    return math.ceil(math.log(1 - confidence) / math.log1p(-threshold) - 1e-9)


def upper_bound(mismatches: int, sampled: int, confidence: float) -> float:
    """One-sided Clopper-Pearson upper bound on the true rate: the largest p for which seeing
    at most `mismatches` in `sampled` draws still has probability 1 - confidence."""
    if mismatches >= sampled:
        return 1.0
    low, high = mismatches / sampled, 1.0
    for _ in range(60):  # bisection: the binomial CDF falls as p grows
        mid = (low + high) / 2
        if _binomial_cdf(mismatches, sampled, mid) > 1 - confidence:
            low = mid
        else:
            high = mid
    return high


def _binomial_cdf(k: int, n: int, p: float) -> float:
    if p <= 0:
        return 1.0
    if p >= 1:
        return 0.0 if k < n else 1.0
    logs = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1)
            + i * math.log(p) + (n - i) * math.log1p(-p) for i in range(k + 1)]
    top = max(logs)
    return min(1.0, math.exp(top) * sum(math.exp(v - top) for v in logs))


def _verdict(threshold: float, confidence: float, mismatches: int, sampled: int, *,
             census: bool, truncated: bool, max_keys: int) -> dict[str, Any]:
    """pass, the bound it rests on, and the reason when it does not pass."""
    out: dict[str, Any] = {"confidence": confidence}
    if truncated:
        return {**out, "pass": False, "reason": f"the listing stopped at max_keys ({max_keys}): "
                "keys past it were never sampled, so nothing is shown about them"}
    if census:  # every key checked: the rate is exact
        ok = mismatches / sampled <= threshold
        return {**out, "pass": ok, "upper_bound": round(mismatches / sampled, 6),
                **({} if ok else {"reason": f"{mismatches} of all {sampled} keys mismatch"})}
    bound = upper_bound(mismatches, sampled, confidence)
    out.update({"pass": bound <= threshold, "upper_bound": round(bound, 6)})
    if not out["pass"]:
        needed = required_sample(threshold, confidence)
        out["reason"] = (f"{mismatches} mismatch(es) in {sampled} sampled keys only bound the "
                         f"true rate below {bound:.3%} at {confidence:.0%} confidence, above "
                         f"{threshold:.3%}")
        if sampled < needed:
            out["reason"] += (f"; under-powered: {_keys(needed)} must be sampled, "
                              "max_sample allows fewer")
    return out


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
