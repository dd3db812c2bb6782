"""DeltaCrown's backfill validator, as its runbook runs it in a pod (test stand-in, real work).

    python scripts/s3_backfill_validator.py --sample-rate 0.01 [--output FILE]

Samples the local dual-write copy (CERT_LOCAL_ROOT, default /mnt/media; keys are paths under
it, e.g. certificates/0001.pem), reads each sampled key from S3 (CERT_S3_BUCKET, default
deltacrown-certificates) and compares sha256: a key missing from S3 or with other bytes is a
mismatch. Prints the JSON report (status, total_sampled, mismatches, mismatch_rate_percent,
mismatch_details) and exits 0 on PASS (< 0.5 %), 1 on FAIL, 2 when it cannot validate.
The sample is deterministic (evenly spaced over the sorted keys), so a test can reason on it.
"""

import argparse
import hashlib
import json
import math
import os
import sys
from pathlib import Path
from urllib.parse import urlsplit

import boto3
import botocore.exceptions

THRESHOLD_PERCENT = 0.5


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="s3_backfill_validator.py")
    parser.add_argument("--sample-rate", type=float, required=True)
    parser.add_argument("--output")
    args = parser.parse_args(argv)
    endpoint = os.environ.get("AWS_ENDPOINT_URL", "")
    if urlsplit(endpoint).hostname not in ("127.0.0.1", "localhost"):
        return _error(f"this test stand-in only talks to a local S3 endpoint, not {endpoint!r}")
    root = Path(os.environ.get("CERT_LOCAL_ROOT", "/mnt/media"))
    bucket = os.environ.get("CERT_S3_BUCKET", "deltacrown-certificates")
    keys = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    if not keys:
        return _error(f"no local certificates under {root}")
    n = max(1, math.ceil(args.sample_rate * len(keys)))
    sample = [keys[i * len(keys) // n] for i in range(n)]
    s3 = boto3.client("s3")
    details = []
    for key in sample:
        local = hashlib.sha256((root / key).read_bytes()).hexdigest()
        try:
            remote = hashlib.sha256(s3.get_object(Bucket=bucket, Key=key)["Body"].read()).hexdigest()
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("NoSuchKey", "404"):
                return _error(f"s3://{bucket}/{key}: {exc}")
            details.append({"key": key, "reason": "missing_in_s3", "local_sha256": local,
                            "s3_sha256": None})
            continue
        except botocore.exceptions.BotoCoreError as exc:
            return _error(f"s3://{bucket}/{key}: {exc}")
        if remote != local:
            details.append({"key": key, "reason": "hash_mismatch", "local_sha256": local,
                            "s3_sha256": remote})
    rate = round(100.0 * len(details) / len(sample), 3)
    report = {"status": "PASS" if rate < THRESHOLD_PERCENT else "FAIL",
              "sample_rate": args.sample_rate, "total_objects": len(keys),
              "total_sampled": len(sample), "mismatches": len(details),
              "mismatch_rate_percent": rate, "mismatch_details": details}
    text = json.dumps(report, indent=2)
    if args.output:
        Path(args.output).write_text(text)
    print(text)
    return 0 if report["status"] == "PASS" else 1


def _error(message: str) -> int:
    print(json.dumps({"status": "ERROR", "error": message}))
    print(message, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
