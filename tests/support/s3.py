"""A real S3 API (moto in server mode) for integration tests.

The remediator talks to S3 through boto3 over HTTP.  Running moto as a separate
server (rather than `mock_aws` patching botocore in-process) keeps the whole HTTP
stack real: signing, retries, endpoint resolution via AWS_ENDPOINT_URL, and it
works for code under test that runs in another process or thread.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from tests.support.procs import (
    LOCALHOST,
    LocalServer,
    http_request,
)
from tests.support.s3proxy import S3FaultProxy

# Credentials and region moto accepts; nothing here is a secret.
FAKE_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}
# Anything that could send boto3 to a real account or change its retry behaviour.
UNSET_ENV = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_ENDPOINT_URL_S3",
    "AWS_MAX_ATTEMPTS",
    "AWS_RETRY_MODE",
)


class MotoServer(LocalServer):
    """`python -m moto.server` bound to 127.0.0.1 on a free port."""

    name = "moto"

    def start(self, timeout: float = 30.0) -> MotoServer:
        def argv(port: int) -> list[str]:
            return [sys.executable, "-m", "moto.server", "-H", LOCALHOST, "-p", str(port)]

        env = {**_clean_environ(), **FAKE_ENV}
        self._launch(argv, "/moto-api/config", timeout, env=env,
                     ok=lambda status: 200 <= status < 300)  # /moto-api/config answers 201
        return self

    def reset(self) -> None:
        """Drop all buckets/objects (POST /moto-api/reset) so tests don't share state."""
        status, body = http_request("POST", f"{self.url}/moto-api/reset")
        if status != 200:
            raise RuntimeError(f"moto reset failed ({status}): {body[:300]!r}")


def _clean_environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in UNSET_ENV}


def make_s3_client(endpoint_url: str, *, max_attempts: int | None = None) -> Any:
    """A boto3 S3 client with fake credentials for `endpoint_url`.

    `max_attempts` is the total number of tries (standard retry mode); 1 disables
    retries, so an injected error surfaces as-is.
    """
    config = Config(
        region_name="us-east-1",
        s3={"addressing_style": "path"},
        # botocore's `max_attempts` counts retries; `total_max_attempts` counts tries.
        retries={"mode": "standard", "total_max_attempts": max_attempts} if max_attempts else None,
        connect_timeout=5,
        read_timeout=10,
    )
    return boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    ).client("s3", endpoint_url=endpoint_url, config=config)


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """One moto server for the whole session (it takes ~1-2 s to start)."""
    server = MotoServer(tmp_path_factory.mktemp("moto")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_server(moto_server: MotoServer) -> MotoServer:
    """The session moto server, reset to empty before this test."""
    moto_server.reset()
    return moto_server


@pytest.fixture
def s3_proxy(s3_server: MotoServer) -> Iterator[S3FaultProxy]:
    """A fault-injecting proxy in front of the (reset) moto server."""
    proxy = S3FaultProxy(s3_server.url).start()
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture
def s3_env(monkeypatch: pytest.MonkeyPatch, s3_proxy: S3FaultProxy, tmp_path: Path) -> str:
    """Point any boto3 client built by the code under test at moto, via `s3_proxy`.

    Returns the endpoint URL.  Going through the proxy costs nothing when no fault
    is injected and lets a test call `s3_proxy.inject(...)` or read `s3_proxy.log`.
    Config/credential files are pointed at empty paths so ~/.aws never leaks in.
    """
    for name in UNSET_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in FAKE_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config-absent"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-creds-absent"))
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_proxy.url)
    return s3_proxy.url


@pytest.fixture
def s3_client(s3_env: str) -> Any:
    """A boto3 S3 client on the same endpoint as `s3_env` (default retry settings)."""
    return make_s3_client(s3_env)
