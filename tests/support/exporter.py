"""A tiny metrics exporter whose values tests change at runtime.

Alert rules are driven by metrics from other services (e.g. code-forge S3 upload
counters).  To exercise the real Prometheus -> Alertmanager -> remediator path we
need a scrape target we control; this serves a `prometheus_client` registry whose
samples come from a dict that `set`/`inc` update.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tests.support.procs import LOCALHOST

LabelKey = tuple[tuple[str, str], ...]


class _DictCollector(Collector):
    """Yields one family per metric name from {name: {labels: value}}.

    A custom collector (instead of Gauge/Counter objects) lets a test pick label
    names per call and `set` a counter, e.g. to simulate a process restart.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.values: dict[str, dict[LabelKey, float]] = {}

    def collect(self) -> Iterator[Metric]:
        with self.lock:
            snapshot = {name: dict(series) for name, series in self.values.items()}
        for name, series in sorted(snapshot.items()):
            family: Metric
            if name.endswith("_total"):
                family = CounterMetricFamily(name, f"test counter {name}")
            else:
                family = GaugeMetricFamily(name, f"test gauge {name}")
            for key, value in series.items():
                family.add_sample(name, dict(key), value)
            yield family


class Exporter:
    """HTTP `/metrics` on 127.0.0.1:<ephemeral port> served from a background thread.

    Names ending in `_total` are exposed as counters, everything else as gauges.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._collector = _DictCollector()
        self.registry.register(self._collector)
        self._server: Any = None
        self.port: int | None = None

    def start(self) -> Exporter:
        self._server, _thread = start_http_server(0, LOCALHOST, self.registry)
        self.port = int(self._server.server_address[1])
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def target(self) -> str:
        """`host:port` for a Prometheus static_config."""
        if self.port is None:
            raise RuntimeError("exporter not started")
        return f"{LOCALHOST}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.target}/metrics"

    @staticmethod
    def _key(labels: dict[str, str]) -> LabelKey:
        return tuple(sorted((k, str(v)) for k, v in labels.items()))

    def set(self, name: str, value: float, /, **labels: str) -> None:
        """Set the sample `name{labels}` to `value` (creating it if needed)."""
        with self._collector.lock:
            self._collector.values.setdefault(name, {})[self._key(labels)] = float(value)

    def inc(self, name: str, amount: float = 1.0, /, **labels: str) -> float:
        """Add `amount` to `name{labels}` (starting from 0); returns the new value."""
        key = self._key(labels)
        with self._collector.lock:
            series = self._collector.values.setdefault(name, {})
            series[key] = series.get(key, 0.0) + amount
            return series[key]

    def remove(self, name: str, /, **labels: str) -> None:
        """Drop one series (Prometheus then marks it stale on the next scrape)."""
        with self._collector.lock:
            self._collector.values.get(name, {}).pop(self._key(labels), None)

    def clear(self) -> None:
        with self._collector.lock:
            self._collector.values.clear()


@pytest.fixture
def exporter() -> Iterator[Exporter]:
    """A started `Exporter`; shut down after the test."""
    exp = Exporter().start()
    try:
        yield exp
    finally:
        exp.stop()
