"""Every Prometheus metric, defined in one place, on a registry owned by the process.

Labels stay low-cardinality: playbook, action, outcome, guard, sink — never pod names,
targets or fingerprints.
"""

from __future__ import annotations

import bisect
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, ProcessCollector
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.utils import floatToGoString

from . import __version__


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self._children: dict[tuple[MetricWrapperBase, tuple[str, ...]], Any] = {}
        # Intake's per-webhook counts: plain numbers, exported at scrape time (IntakeCounts).
        self.intake = IntakeCounts()
        r.register(_Family(self.intake.received))
        self.alerts_truncated = Counter(
            "remediator_alerts_truncated_total",
            "Alerts Alertmanager left out of a notification (the receiver's max_alerts).",
            registry=r)
        self.alerts_duplicate = Counter(
            "remediator_alerts_duplicate_total",
            "Alerts dropped as duplicates (Alertmanager retries, HA peers).", registry=r)
        self.connections_refused = Counter(
            "remediator_connections_refused_total",
            "Connections answered 503 and closed at once: max_connections were open.",
            registry=r)
        r.register(_Family(self.intake.requests))
        r.register(_Family(self.intake.ack))
        self.executions = Counter(
            "remediator_executions_total", "Decisions by playbook and outcome.",
            ["playbook", "outcome"], registry=r)
        self.step_seconds = Histogram(
            "remediator_step_duration_seconds", "Duration of executed steps by action and outcome.",
            ["action", "outcome"], registry=r,
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300))
        self.guard_blocks = Counter(
            "remediator_guard_blocks_total", "Executions or steps stopped by a guard.", ["guard"],
            registry=r)
        self.escalations = Counter(
            "remediator_escalations_total", "Escalation note deliveries by sink and outcome.",
            ["sink", "outcome"], registry=r)
        self.inbox_pending = Gauge(
            "remediator_inbox_pending", "Acknowledged alerts not yet fully processed.", registry=r)
        self.inbox_retries = Counter(
            "remediator_inbox_retries_total",
            "Alerts processed again after a store error, or an internal error not even recorded.",
            registry=r)
        self.escalations_spooled = Gauge(
            "remediator_escalations_spooled", "Escalation notes waiting for redelivery.",
            registry=r)
        self.circuits_open = Gauge(
            "remediator_circuits_open", "Targets whose circuit breaker is open.", registry=r)
        self.rules_loaded = Gauge(
            "remediator_rules_loaded", "Playbooks in the active rule set.", registry=r)
        self.reloads = Counter(
            "remediator_rules_reloads_total", "Rule reloads by result.", ["result"], registry=r)
        self.live_mode = Gauge(
            "remediator_live_mode", "1 when serving in live mode, 0 in dry-run.", registry=r)
        self.store_seconds = Histogram(
            "remediator_store_operation_duration_seconds",
            "Round trips to a shared (PostgreSQL) store by operation.", ["operation"], registry=r,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0))
        self.lease_takeovers = Counter(
            "remediator_store_lease_takeovers_total",
            "Alerts taken over from a replica whose lease expired (it died or lost the store).",
            registry=r)
        self.paused = Gauge(
            "remediator_paused", "1 while the kill switch is on (config or API), else 0.",
            registry=r)
        self.paused_seconds = Gauge(
            "remediator_paused_seconds", "How long the kill switch has been on (0: off).",
            registry=r)
        self.oldest_running = Gauge(
            "remediator_oldest_running_execution_age_seconds",
            "Age of the oldest execution still running (0: none).", registry=r)
        self.oldest_approval = Gauge(
            "remediator_oldest_pending_approval_age_seconds",
            "Age of the oldest approval still waiting for an operator (0: none).", registry=r)
        self.store_clock_offset = Gauge(
            "remediator_store_clock_offset_seconds",
            "The shared store's clock minus this replica's (PostgreSQL; 0 on SQLite): what "
            "guards' windows are corrected by.", registry=r)
        # process_open_fds against process_max_fds, CPU, memory: the client's standard set.
        # Past the descriptor limit uvloop drops new connections unlogged (asyncio logged).
        ProcessCollector(registry=r)
        self.build = Info("remediator_build", "Build information.", registry=r)
        self.build.info({"version": __version__})

    def child(self, metric: MetricWrapperBase, *values: str) -> Any:
        """`metric.labels(*values)`, looked up once per label values: `labels()` takes a
        lock and builds its key (~3 us of every decision). The values are low-cardinality
        (see above), so the children kept are few."""
        found = self._children.get((metric, values))
        if found is None:
            found = self._children[(metric, values)] = metric.labels(*values)
        return found


class IntakeCounts:
    """What every webhook counts (its answer's code, its alerts by status, its time to the
    202), kept as plain numbers and turned into metric families only when /metrics is
    scraped: prometheus_client's `inc` and `observe` took a lock and checked their argument
    each time, ~18 k instructions a webhook (docs/performance.md, "Intake's CPU"). The
    series are prometheus_client's own: the same names, labels, HELP, `_created`.

    No lock: intake (`guard`, `Service.intake`) and the /metrics handler that reads these
    all run on the event loop's one thread, and a scrape reads them without awaiting."""

    ACK_BOUNDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, float("inf"))
    # Present at 0 from the start: `increase()` sees the first 401 of a fresh process (a
    # series that appears at 1 has increased by nothing).
    CODES = (202, 400, 401, 403, 405, 413, 415, 499, 500, 503)

    def __init__(self) -> None:
        now = time.time()
        self.by_status = {"firing": 0, "resolved": 0}
        self._status_created = dict.fromkeys(self.by_status, now)
        self.codes = dict.fromkeys(self.CODES, 0)
        self._code_created = dict.fromkeys(self.CODES, now)
        self._ack_buckets = [0] * len(self.ACK_BOUNDS)  # each bound's own, not cumulative
        self._ack_sum = 0.0
        self._ack_created = now

    def answered(self, code: int) -> None:
        """A webhook answered `code` (any: one not listed gets its series then)."""
        if code in self.codes:
            self.codes[code] += 1
        else:
            self.codes[code] = 1
            self._code_created[code] = time.time()

    def acknowledged(self, seconds: float) -> None:
        """A 202 took `seconds`: the first bucket whose bound is at least that (as
        prometheus_client's `Histogram.observe`)."""
        self._ack_buckets[bisect.bisect_left(self.ACK_BOUNDS, seconds)] += 1
        self._ack_sum += seconds

    def received(self) -> Metric:
        family = CounterMetricFamily(
            "remediator_alerts_received", "Alerts received on the webhook, by status.",
            labels=["status"])
        for status, count in self.by_status.items():
            family.add_metric([status], count, created=_created(self._status_created[status]))
        return family

    def requests(self) -> Metric:
        family = CounterMetricFamily(
            "remediator_webhook_requests", "Webhook requests by HTTP status code.",
            labels=["code"])
        for code, count in self.codes.items():
            family.add_metric([str(code)], count, created=_created(self._code_created[code]))
        return family

    def ack(self) -> Metric:
        name = "remediator_webhook_ack_duration_seconds"
        family = HistogramMetricFamily(
            name, "Time from request to acknowledgement (alerts durably stored).", labels=[])
        cumulative, buckets = 0, []
        for bound, count in zip(self.ACK_BOUNDS, self._ack_buckets, strict=True):
            cumulative += count
            buckets.append((floatToGoString(bound), cumulative))
        family.add_metric([], buckets, self._ack_sum)
        created = _created(self._ack_created)
        if created is not None:  # HistogramMetricFamily.add_metric takes no `created`
            family.add_sample(f"{name}_created", {}, created)
        return family


def _created(when: float) -> float | None:
    """`when`, unless PROMETHEUS_DISABLE_CREATED_SERIES leaves `_created` series out (as
    prometheus_client's own metrics do)."""
    disabled = os.environ.get("PROMETHEUS_DISABLE_CREATED_SERIES", "False").lower() \
        in ("true", "1", "t")
    return None if disabled else when


class _Family:
    """A custom collector (prometheus_client's documented `registry.register(obj)`) of one
    metric family, registered where its Counter/Histogram was: /metrics keeps its order."""

    def __init__(self, family: Callable[[], Metric]) -> None:
        self._family = family

    def collect(self) -> Iterator[Metric]:
        yield self._family()

    def describe(self) -> Iterator[Metric]:
        yield self._family()  # its name, for the registry's duplicate check
