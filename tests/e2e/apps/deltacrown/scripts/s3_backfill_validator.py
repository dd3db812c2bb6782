"""DeltaCrown's backfill validator, as its runbook runs it in a pod (test stand-in, real work).

    python scripts/s3_backfill_validator.py [--sample-rate 0.01] [--output FILE]

Written for the tests, with the interface of DeltaCrown's own scripts/s3_backfill_validator.py
(rkRashik/DeltaCrown), so a playbook that works here works there:
- stdout is progress TEXT for a human (start, sample rate, per-object problems, counters,
  "Report written to: ...", status), never the report;
- the JSON report goes to --output, by default artifacts/backfill_report.json (relative to the
  working directory: the nightly report the runbook tells a human to read);
- an object missing from S3, or one that cannot be read, counts in `errors`, NOT in
  `mismatches`: `mismatch_rate_percent` and `status` (PASS at <= 0.5 %) count only objects
  whose bytes differ, so a sample whose every object is missing is a PASS;
- `mismatch_details` (first 10) name the object as `object_key`: {object_key, local_hash,
  s3_hash} for a mismatch, {object_key, error} for an object missing from S3;
- an empty local store samples nothing: total_sampled 0, PASS;
- exit 1 on FAIL, else 0.

Samples the local dual-write copy (CERT_LOCAL_ROOT, default /mnt/media; keys are paths under
it, e.g. certificates/0001.pem) and reads each sampled key from S3 (CERT_S3_BUCKET, default
deltacrown-certificates). The sample is deterministic (max(1, int(rate * n)) keys evenly
spaced over the sorted keys, where the real one is random), so a test can reason on it.
"""

import argparse
import hashlib
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import boto3
import botocore.exceptions

THRESHOLD_PERCENT = 0.5
DETAILS_KEPT = 10


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="s3_backfill_validator.py")
    parser.add_argument("--sample-rate", type=float, default=0.01)
    parser.add_argument("--output", default="artifacts/backfill_report.json")
    args = parser.parse_args(argv)
    endpoint = os.environ.get("AWS_ENDPOINT_URL", "")
    if urlsplit(endpoint).hostname not in ("127.0.0.1", "localhost"):
        print(f"this test stand-in only talks to a local S3 endpoint, not {endpoint!r}",
              file=sys.stderr)
        return 2
    root = Path(os.environ.get("CERT_LOCAL_ROOT", "/mnt/media"))
    bucket = os.environ.get("CERT_S3_BUCKET", "deltacrown-certificates")
    print(f"[{datetime.now(UTC).isoformat()}] Starting S3 backfill validation")
    print(f"Sample rate: {args.sample_rate * 100}%")
    keys = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    print(f"Total objects in local storage: {len(keys)}")
    counts = {"total_sampled": 0, "matches": 0, "mismatches": 0, "errors": 0}
    details: list[dict] = []
    if keys:
        n = max(1, int(len(keys) * args.sample_rate))
        sample = [keys[i * len(keys) // n] for i in range(n)]
        print(f"Sampled {len(sample)} objects for validation")
        s3 = boto3.client("s3")
        for key in sample:
            counts["total_sampled"] += 1
            _validate(s3, bucket, root, key, counts, details)
        print("\nValidation complete:")
        print(f"  Matches: {counts['matches']}\n  Mismatches: {counts['mismatches']}\n"
              f"  Errors: {counts['errors']}")
    else:
        print("No objects found in local storage. Exiting.")
    total = counts["total_sampled"]
    mismatch_rate = 100.0 * counts["mismatches"] / total if total else 0.0
    report = {"timestamp": datetime.now(UTC).isoformat(),
              "sample_rate_percent": args.sample_rate * 100, **counts,
              "mismatch_rate_percent": round(mismatch_rate, 2),
              "error_rate_percent": round(100.0 * counts["errors"] / total if total else 0.0, 2),
              "status": "PASS" if mismatch_rate <= THRESHOLD_PERCENT else "FAIL",
              "mismatch_details": details[:DETAILS_KEPT]}
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2))
    print(f"\nReport written to: {args.output}\nStatus: {report['status']}")
    if report["status"] == "FAIL":
        print("\nValidation FAILED: mismatch rate exceeds 0.5%")
        return 1
    print("\nValidation PASSED")
    return 0


def _validate(s3, bucket: str, root: Path, key: str, counts: dict, details: list) -> None:
    try:
        local = hashlib.sha256((root / key).read_bytes()).hexdigest()
        try:
            body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("NoSuchKey", "404"):
                raise
            counts["errors"] += 1
            details.append({"object_key": key, "error": "Object missing in S3"})
            print(f"  [MISSING S3] {key}")
            return
        remote = hashlib.sha256(body).hexdigest()
    except (OSError, botocore.exceptions.BotoCoreError,
            botocore.exceptions.ClientError) as exc:  # counted, not a failure of the run
        counts["errors"] += 1
        print(f"  [ERROR] {key}: {exc}")
        return
    if remote == local:
        counts["matches"] += 1
        return
    counts["mismatches"] += 1
    details.append({"object_key": key, "local_hash": local, "s3_hash": remote})
    print(f"  [MISMATCH] {key}: local={local[:8]} s3={remote[:8]}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
