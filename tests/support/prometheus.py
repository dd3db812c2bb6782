"""A real Prometheus (2.42) for integration tests.

Alert rules shipped in `rules/` and the remediator's own metrics are only proven
when a real Prometheus scrapes, evaluates and forwards to Alertmanager; PromQL
semantics (staleness, `for:`, rate windows) are not something to fake.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
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

BINARY = "/usr/bin/prometheus"


def prometheus_config(
    targets: Sequence[str] = (),
    *,
    scrape_interval: str = "1s",
    evaluation_interval: str = "1s",
    rule_files: Sequence[str] = (),
    alertmanager_url: str | None = None,
    job_name: str = "test",
    external_labels: Mapping[str, str] | None = None,
) -> str:
    """Prometheus YAML scraping `targets` ("host:port") under one job.

    `rule_files` may be relative: Prometheus resolves them against the config dir,
    where `Prometheus.start(files=...)` writes them.  `alertmanager_url` (e.g.
    `Alertmanager.url`) becomes `alerting.alertmanagers[0].static_configs`.
    """
    config: dict[str, Any] = {
        "global": {
            "scrape_interval": scrape_interval,
            "scrape_timeout": scrape_interval,
            "evaluation_interval": evaluation_interval,
        },
        "scrape_configs": [{"job_name": job_name, "static_configs": [{"targets": list(targets)}]}],
    }
    if external_labels:
        config["global"]["external_labels"] = dict(external_labels)
    if rule_files:
        config["rule_files"] = list(rule_files)
    if alertmanager_url:
        parsed = urllib.parse.urlsplit(alertmanager_url)
        am: dict[str, Any] = {
            "scheme": parsed.scheme or "http",
            "api_version": "v2",
            "timeout": "2s",
            "static_configs": [{"targets": [parsed.netloc]}],
        }
        if parsed.path.strip("/"):
            am["path_prefix"] = parsed.path
        config["alerting"] = {"alertmanagers": [am]}
    return yaml.safe_dump(config, sort_keys=False)


class Prometheus(LocalServer):
    """One Prometheus process plus wrappers around its query/rules/alerts API.

    Helpers are synchronous; from async tests use `asyncio.to_thread`.
    """

    name = "prometheus"

    def __init__(self, workdir: Path | None = None) -> None:
        super().__init__(workdir)
        self.config_path = self.workdir / "prometheus.yml"
    def _write(self, config_yaml: str, files: Mapping[str, str] | None) -> None:
        for name, content in (files or {}).items():
            path = self.workdir / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
        self.config_path.write_text(config_yaml)

    def start(
        self, config_yaml: str, files: Mapping[str, str] | None = None, timeout: float = 30.0
    ) -> Prometheus:
        """Write config (+ extra files such as rule files), launch, wait for `/-/ready`."""
        self._write(config_yaml, files)

        def argv(port: int) -> list[str]:
            return [
                BINARY,
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                "--storage.tsdb.retention.time=1h",
                f"--web.listen-address={LOCALHOST}:{port}",
                # Links in payloads (externalURL, generatorURL) must not use the hostname.
                f"--web.external-url=http://{LOCALHOST}:{port}",
                "--web.enable-lifecycle",
                # Re-send firing alerts every second instead of every minute, so a
                # test that (re)starts Alertmanager late still sees them quickly.
                "--rules.alert.resend-delay=1s",
                "--log.level=debug",
            ]

        self._launch(argv, "/-/ready", timeout)
        return self

    def reload(self, config_yaml: str, files: Mapping[str, str] | None = None) -> None:
        """Rewrite config/rule files and POST `/-/reload` (needs --web.enable-lifecycle)."""
        self._write(config_yaml, files)
        status, body = http_request("POST", f"{self.url}/-/reload", timeout=10)
        if status != 200:
            raise RuntimeError(f"Prometheus reload failed ({status}): {body.decode()}")

    def _api(self, path: str, **params: str) -> Any:
        qs = urllib.parse.urlencode(params)
        payload = http_json("GET", f"{self.url}/api/v1/{path}?{qs}", timeout=10)
        if payload.get("status") != "success":
            raise RuntimeError(f"Prometheus API {path} failed: {payload}")
        return payload["data"]

    def query(self, promql: str) -> dict[str, Any]:
        """Instant query; returns `data` ({"resultType": ..., "result": [...]})."""
        return self._api("query", query=promql)

    def wait_for(
        self,
        promql: str,
        predicate: Callable[[list[dict[str, Any]]], bool] = bool,
        timeout: float = 15.0,
    ) -> list[dict[str, Any]]:
        """Poll `query(promql)` until `predicate(result)` holds; returns that result.

        Scrapes and rule evaluations are periodic, so tests must wait, not assert once.
        """
        deadline = time.monotonic() + timeout
        result: list[dict[str, Any]] = []
        while True:
            result = self.query(promql)["result"]
            if predicate(result):
                return result
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{promql!r} did not satisfy predicate within {timeout}s; last: {result}"
                )
            time.sleep(0.2)

    def wait_for_targets(self, timeout: float = 15.0) -> list[dict[str, Any]]:
        """Block until every active target has been scraped successfully.

        Prometheus 2.42 hands discovered targets to the scraper only every 5 s
        (hard-coded), so the first scrape lands ~5 s after start whatever the
        scrape_interval; call this once instead of sprinkling long timeouts.
        """
        deadline = time.monotonic() + timeout
        while True:
            targets = self.targets()
            if targets and all(t["health"] == "up" for t in targets):
                return targets
            if time.monotonic() > deadline:
                raise AssertionError(f"targets not all up within {timeout}s: {targets}")
            time.sleep(0.2)

    def rules(self) -> list[dict[str, Any]]:
        """Rule groups as reported by `/api/v1/rules` (with health and lastError)."""
        return self._api("rules")["groups"]

    def alerts(self) -> list[dict[str, Any]]:
        """Pending and firing alerts from `/api/v1/alerts`."""
        return self._api("alerts")["alerts"]

    def targets(self) -> list[dict[str, Any]]:
        """Active scrape targets (health, lastError) from `/api/v1/targets`."""
        return self._api("targets")["activeTargets"]


@pytest.fixture
def prometheus_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., Prometheus]]:
    """`start(config_yaml, files=None) -> Prometheus`; all are stopped after the test."""
    started: list[Prometheus] = []

    def start(config_yaml: str, files: Mapping[str, str] | None = None) -> Prometheus:
        prom = Prometheus(tmp_path_factory.mktemp("prometheus"))
        started.append(prom)
        return prom.start(config_yaml, files)

    yield start
    stop_all(started)
