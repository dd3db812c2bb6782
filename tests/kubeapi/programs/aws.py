"""`aws` in the test pod model: the AWS CLI's `sts get-caller-identity`, a real STS call, and
`s3api head-bucket --bucket B`, a real HeadBucket.

It goes to the endpoint the container's env names (AWS_ENDPOINT_URL: a moto server in tests;
anything but a loopback endpoint is refused, so no test reaches AWS) with the container's
credentials, and prints and fails the way the AWS CLI v2 does (JSON on stdout; `An error
occurred (Code) when calling ...` on stderr, exit 254; no endpoint, exit 255; a usage error,
exit 252). Nothing else of the CLI is modelled.
"""

import argparse
import json
import os
import sys
from urllib.parse import urlsplit

import boto3
import botocore.exceptions


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="aws", add_help=False)
    parser.add_argument("service")
    parser.add_argument("operation")
    parser.add_argument("--output", choices=("json", "text"), default="json")
    parser.add_argument("--region")
    parser.add_argument("--no-cli-pager", action="store_true")
    parser.add_argument("--bucket")
    try:
        args = parser.parse_args(argv)
    except SystemExit:
        return 252
    if (args.service, args.operation) == ("s3api", "head-bucket") and args.bucket:
        return head_bucket(args)
    if (args.service, args.operation) != ("sts", "get-caller-identity"):
        print(f"aws: [ERROR]: argument operation: Found invalid choice '{args.operation}'",
              file=sys.stderr)
        return 252
    endpoint = os.environ.get("AWS_ENDPOINT_URL_STS") or os.environ.get("AWS_ENDPOINT_URL", "")
    if urlsplit(endpoint).hostname not in ("127.0.0.1", "localhost"):  # tests stay on loopback
        print(f"\nCould not connect to the endpoint URL: {endpoint!r} is not a local endpoint",
              file=sys.stderr)
        return 255
    sts = boto3.client("sts", region_name=args.region or "us-east-1")
    try:
        identity = sts.get_caller_identity()
    except botocore.exceptions.ClientError as exc:
        error = exc.response.get("Error", {})
        print(f"\nAn error occurred ({error.get('Code')}) when calling the GetCallerIdentity "
              f"operation: {error.get('Message')}", file=sys.stderr)
        return 254
    except botocore.exceptions.EndpointConnectionError as exc:
        print(f"\n{exc}", file=sys.stderr)
        return 255
    shown = {k: identity[k] for k in ("UserId", "Account", "Arn")}
    if args.output == "text":
        print("\t".join(shown[k] for k in ("Account", "Arn", "UserId")))
    else:
        print(json.dumps(shown, indent=4))
    return 0


def head_bucket(args: argparse.Namespace) -> int:
    """`aws s3api head-bucket`: a real HeadBucket to the S3 endpoint of the container's env,
    printing what AWS CLI v2 does (the bucket's region) or its error, exit 254."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL", "")
    if urlsplit(endpoint).hostname not in ("127.0.0.1", "localhost"):  # tests stay on loopback
        print(f"\nCould not connect to the endpoint URL: {endpoint!r} is not a local endpoint",
              file=sys.stderr)
        return 255
    s3 = boto3.client("s3", region_name=args.region or "us-east-1", endpoint_url=endpoint)
    try:
        answer = s3.head_bucket(Bucket=args.bucket)
    except botocore.exceptions.ClientError as exc:
        error = exc.response.get("Error", {})
        print(f"\nAn error occurred ({error.get('Code')}) when calling the HeadBucket "
              f"operation: {error.get('Message')}", file=sys.stderr)
        return 254
    region = answer.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get(
        "x-amz-bucket-region", args.region or "us-east-1")
    print(json.dumps({"BucketRegion": region, "AccessPointAlias": False}, indent=4))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
