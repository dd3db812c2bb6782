"""A real Alertmanager (prometheus-alertmanager 0.25) for integration tests.

The remediator's contract is Alertmanager's webhook payload, grouping and repeat
timing; emulating those in a fake would test our assumptions, not Alertmanager.
So tests run the real binary on 127.0.0.1 with a throwaway storage dir and gossip off.
"""

from __future__ import annotations

import subprocess
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.procs import (
    LOCALHOST,
    LocalServer,
    http_json,
    http_request,
    stop_all,
)

BINARY = "/usr/bin/prometheus-alertmanager"
AMTOOL = "/usr/bin/amtool"


def webhook_config(
    url: str,
    token_file: str | Path | None = None,
    group_wait: str = "0s",
    group_interval: str = "100ms",
    repeat_interval: str = "1h",
    send_resolved: bool = True,
    group_by: Sequence[str] = ("alertname",),
    max_alerts: int = 0,
    basic_auth: tuple[str, str | Path] | None = None,
) -> str:
    """Alertmanager YAML that routes every alert to one webhook receiver at `url`.

    Timings default to "as fast as Alertmanager allows" so tests do not sleep.
    `token_file` becomes `http_config.authorization.credentials_file`: Alertmanager
    reads it per request and sends `Authorization: Bearer <file contents>`.
    `basic_auth=(username, password_file)` sends basic auth instead, the password read from
    the file. `group_by=["..."]` means "every distinct label set is its own group".
    """
    webhook: dict[str, Any] = {"url": url, "send_resolved": send_resolved}
    if max_alerts:
        webhook["max_alerts"] = max_alerts
    if token_file is not None:
        webhook["http_config"] = {"authorization": {"type": "Bearer", "credentials_file": str(token_file)}}
    if basic_auth is not None:
        webhook["http_config"] = {"basic_auth": {"username": basic_auth[0],
                                                 "password_file": str(basic_auth[1])}}
    config = {
        "global": {"resolve_timeout": "5m"},
        "route": {
            "receiver": "webhook",
            "group_by": list(group_by),
            "group_wait": group_wait,
            "group_interval": group_interval,
            "repeat_interval": repeat_interval,
        },
        "receivers": [{"name": "webhook", "webhook_configs": [webhook]}],
    }
    return yaml.safe_dump(config, sort_keys=False)


def make_alert(
    labels: dict[str, str],
    annotations: dict[str, str] | None = None,
    *,
    resolved: bool = False,
    generator_url: str = "http://example.invalid/graph",
) -> dict[str, Any]:
    """Build one `/api/v2/alerts` item; `resolved=True` sets endsAt in the past."""
    now = datetime.now(UTC)
    alert: dict[str, Any] = {
        "labels": labels,
        "annotations": annotations or {},
        "generatorURL": generator_url,
        "startsAt": (now - timedelta(minutes=5)).isoformat(),
    }
    if resolved:
        alert["endsAt"] = (now - timedelta(seconds=1)).isoformat()
    return alert


class Alertmanager(LocalServer):
    """One Alertmanager process plus thin wrappers around its v2 HTTP API.

    Helpers are synchronous (stdlib HTTP). From an async test that also serves the
    webhook in its own event loop, call them via `asyncio.to_thread` so the loop
    can keep answering Alertmanager.
    """

    name = "alertmanager"

    def __init__(self, workdir: Path | None = None) -> None:
        super().__init__(workdir)
        self.config_path = self.workdir / "alertmanager.yml"
        self.storage = self.workdir / "data"
    def start(self, config_yaml: str, timeout: float = 20.0,
              cluster: Sequence[str] = ("--cluster.listen-address=",)) -> Alertmanager:
        """Write the config, launch, and block until `/-/ready` answers 200. By default
        alone (`--cluster.listen-address=`: no gossip, no second port); `cluster` gives
        the flags of an HA pair instead."""
        self.config_path.write_text(config_yaml)
        self.storage.mkdir(parents=True, exist_ok=True)

        def argv(port: int) -> list[str]:
            return [
                BINARY,
                f"--config.file={self.config_path}",
                f"--storage.path={self.storage}",
                f"--web.listen-address={LOCALHOST}:{port}",
                # Links in payloads (externalURL, generatorURL) must not use the hostname.
                f"--web.external-url=http://{LOCALHOST}:{port}",
                *cluster,
                "--log.level=debug",
            ]

        self._launch(argv, "/-/ready", timeout)
        return self

    def reload(self, config_yaml: str) -> None:
        """Rewrite the config file and hot-reload; raises with Alertmanager's reason."""
        self.config_path.write_text(config_yaml)
        status, body = http_request("POST", f"{self.url}/-/reload")
        if status != 200:
            raise RuntimeError(f"Alertmanager reload failed ({status}): {body.decode()}")

    def post_alerts(self, alerts: list[dict[str, Any]]) -> None:
        """Push alerts the way Prometheus does (POST /api/v2/alerts)."""
        http_json("POST", f"{self.url}/api/v2/alerts", alerts)

    def alerts(self, **filters: str) -> list[dict[str, Any]]:
        """Current alerts (GET /api/v2/alerts); kwargs become `filter=k="v"` matchers."""
        query = urllib.parse.urlencode([("filter", f'{k}="{v}"') for k, v in filters.items()])
        return http_json("GET", f"{self.url}/api/v2/alerts?{query}") or []

    def silences(self) -> list[dict[str, Any]]:
        """All silences including expired ones (GET /api/v2/silences)."""
        return http_json("GET", f"{self.url}/api/v2/silences") or []

    def create_silence(self, matchers: dict[str, str], minutes: float = 60, comment: str = "test") -> str:
        """Create an equality-matcher silence; returns its id."""
        now = datetime.now(UTC)
        body = {
            "matchers": [
                {"name": k, "value": v, "isRegex": False, "isEqual": True} for k, v in matchers.items()
            ],
            "startsAt": now.isoformat(),
            "endsAt": (now + timedelta(minutes=minutes)).isoformat(),
            "createdBy": "tests",
            "comment": comment,
        }
        return str(http_json("POST", f"{self.url}/api/v2/silences", body)["silenceID"])


def check_config(config_yaml: str, workdir: Path) -> str:
    """Run `amtool check-config`; returns its output, raises ValueError if rejected."""
    path = Path(workdir) / "check-alertmanager.yml"
    path.write_text(config_yaml)
    res = subprocess.run([AMTOOL, "check-config", str(path)], capture_output=True, text=True, timeout=30)
    if res.returncode != 0:
        raise ValueError(f"amtool rejected config:\n{res.stdout}{res.stderr}")
    return res.stdout + res.stderr


@pytest.fixture
def alertmanager_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[[str], Alertmanager]]:
    """`start(config_yaml) -> Alertmanager`; every instance is stopped after the test."""
    started: list[Alertmanager] = []

    def start(config_yaml: str) -> Alertmanager:
        am = Alertmanager(tmp_path_factory.mktemp("alertmanager"))
        started.append(am)
        return am.start(config_yaml)

    yield start
    stop_all(started)
