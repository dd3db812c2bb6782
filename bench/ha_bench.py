"""Several replicas: intake and end-to-end decisions/s on PostgreSQL against SQLite and a bare
aiohttp handler, with one and two replicas, in the same run. Printed, not a test.

- intake: alerts acknowledged per second (8 connections, 2 alerts per request), spread
  evenly over the replicas;
- end to end: alerts posted, matched, guarded, journaled and executed (`--mode live`, one
  mutating `http.request` step against a local aiohttp receiver) per second, until every
  replica's `remediator_executions_total` adds up to the alerts sent.

Each setup runs twice: unconstrained, then with each replica held to `--replica-cpu` of a CPU
(a cgroup CFS quota, as a pod's `resources.limits.cpu` sets it; PostgreSQL, the receiver and
the load generator stay unconstrained). Unconstrained, one replica with its PostgreSQL already
uses about 1.45 cores, so on a 2-core machine two replicas cannot reach 1.5x one whatever the
code does: that ratio measures the machine. In production replicas run on separate nodes, each
under its limit; the quota models that, and its PG2/PG1 ratio says whether replicas scale
(do not wait on each other in the database). The default, 0.4 of a core, keeps two replicas
(0.8), the PostgreSQL work they cause (about 0.7 of a replica's CPU per decision: 0.55) and
the receiver and load generator (about 0.15) within 1.5 of the 2 cores, leaving some to other
jobs; at half a core they would need about 1.85. The quota binds only where the CPU is
there: each replica's throttling is printed, and a replica throttled in less than half of its
periods is flagged. The quota needs root and a writable cgroup `cpu` controller; without them
the bench says so and runs the unconstrained setups only.

PostgreSQL is a throwaway cluster (`initdb` in a temporary directory, as in the tests).
Usage: python bench/ha_bench.py [--alerts 20000] [--decisions 2000] [--replica-cpu 0.4]
       [--sample-waits]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from cpu_quota import CpuQuota  # noqa: E402
from webhook_bench import drive, payloads, start  # noqa: E402

from tests.support.postgres import PostgresCluster  # noqa: E402
from tests.support.worker import TOKEN, free_port  # noqa: E402

RULES = """
playbooks:
  - name: bench-restart
    match:
      alertname: [CodeForgeS3UploadFailureHigh, DeltaCrownCertS3ReadFallbackHigh, LiberviaApiDown,
                  HackathonHighErrorRate, ThreeDPotHigh5xxRate, NodeFilesystemAlmostFull]
    target: {kind: deployment, namespace: neural-hive-pipeline, name: "{{ labels.deployment }}"}
    guards: {rate_limit: {max: 1000000, window: 1h}, lock: false}
    steps:
      - name: restart
        action: http.request
        params: {url: "%s", method: POST, json: {alerts: []}, expect_status: [202]}
"""
CONFIG = "guards:\n  budget: {max: 1000000, window: 1h}\n  http: {allow: [127.0.0.1]}\n"


def replicas(n: int, store: str, tmp: Path, mode: str = "dry-run",
             quota: CpuQuota | None = None) -> list[tuple[subprocess.Popen, int]]:
    """`n` replicas on `store`, each in its own CPU quota group if `quota` is given (after
    start-up: the quota binds what is measured, not the imports)."""
    out: list[tuple[subprocess.Popen, int]] = []
    try:
        for _ in range(n):
            port = free_port()
            proc = start([sys.executable, "-m", "remediator.cli", "serve", "--listen",
                          f"127.0.0.1:{port}", "--store", store, "--rules", str(tmp / "rules"),
                          "--mode", mode, "--config", str(tmp / "config.yaml")], port,
                         {"REMEDIATOR_WEBHOOK_TOKEN": TOKEN, "REMEDIATOR_LOG_LEVEL": "warning",
                          "REMEDIATOR_WORKERS": "16"})
            out.append((proc, port))
            if quota:
                quota.hold(proc.pid)
    except BaseException:
        stop(out, quota)  # a replica that did not start must not leave the others running
        raise
    return out


def stop(servers: list[tuple[subprocess.Popen, int]], quota: CpuQuota | None = None) -> None:
    for proc, _ in servers:
        proc.terminate()
    for proc, _ in servers:
        proc.wait(60)
    if quota:
        quota.release(*(proc.pid for proc, _ in servers))


def _throttling(quota: CpuQuota | None, servers: list[tuple[subprocess.Popen, int]]
                ) -> list[tuple[int, int, float]]:
    return [quota.throttling(proc.pid) for proc, _ in servers] if quota else []


def _throttled(before: list[tuple[int, int, float]], after: list[tuple[int, int, float]],
               took: float) -> tuple[str, float]:
    """Each replica's throttling meanwhile, and the least throttled replica's share of CFS
    periods throttled: a replica throttled in most periods used all its quota, so the quota,
    not the database, the other replica or the machine's other jobs, is what bound it."""
    if not before:
        return "", float("nan")
    periods = [(t1 - t0) / max(p1 - p0, 1) for (p0, t0, _), (p1, t1, _) in zip(before, after, strict=True)]
    seconds = [s1 - s0 for (_, _, s0), (_, _, s1) in zip(before, after, strict=True)]
    return ("replicas throttled in " + " / ".join(
        f"{p:.0%} of periods, {s / took:.0%} of the time" for p, s in zip(periods, seconds, strict=True)),
        min(periods))


async def _intake(ports: list[int], bodies: list[bytes]) -> float:
    shares = [bodies[i::len(ports)] for i in range(len(ports))]
    started = time.perf_counter()
    await asyncio.gather(*(drive(f"http://127.0.0.1:{p}/alerts", share)
                           for p, share in zip(ports, shares, strict=True)))
    return time.perf_counter() - started


def metric(port: int, prefix: str) -> float:
    """The sum of a replica's samples whose line starts with `prefix`."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(prefix))


def executions(port: int, outcome: str = "") -> float:
    return metric(port, f'remediator_executions_total{{outcome="{outcome}')


def _cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far; 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _ready_wait(pid: int) -> float:
    """Seconds the process's main thread (a replica's event loop) has spent runnable but
    waiting for a CPU (/proc/PID/schedstat); 0 once it is gone."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def _machine() -> tuple[int, int]:
    """All CPUs' ticks so far: (total, idle + iowait), from /proc/stat."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(ticks), ticks[3] + ticks[4]


def _postgres_pids(pg: PostgresCluster) -> list[int]:
    """The postmaster and its children (one backend per connection)."""
    main = int((pg.data / "postmaster.pid").read_text().split()[0])
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == main:
                children.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return [main, *children]


class WaitSampler(threading.Thread):
    """What the replicas' PostgreSQL backends are doing, sampled every 10 ms from
    pg_stat_activity (`--sample-waits`): replicas waiting on each other show as backends
    waiting on a `Lock` (row or advisory locks) or an `LWLock`. The sampling costs the load
    generator CPU, so it is off by default."""

    SQL = ("SELECT state, wait_event_type, wait_event FROM pg_stat_activity "
           "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()")

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.done, self.seen = url, threading.Event(), Counter[str]()

    def run(self) -> None:
        asyncio.run(self._sample())

    async def _sample(self) -> None:
        import asyncpg

        conn = await asyncpg.connect(self.url)
        try:
            while not self.done.is_set():
                for state, kind, event in await conn.fetch(self.SQL):
                    self.seen[f"{state} {kind}:{event}" if kind else state] += 1
                await asyncio.sleep(0.01)
        finally:
            await conn.close()

    def summary(self) -> str:
        self.done.set()
        self.join(10)
        total = sum(self.seen.values()) or 1
        return "; backends sampled: " + ", ".join(
            f"{what} {n / total:.1%}" for what, n in self.seen.most_common(6))


def end_to_end(servers: list[tuple[subprocess.Popen, int]], count: int, tag: str,
               pg: PostgresCluster, sink: subprocess.Popen,
               quota: CpuQuota | None = None, sampler: WaitSampler | None = None
               ) -> tuple[float, str, float, float]:
    """Decisions/s; the share of a CPU each process used meanwhile, how long each replica
    waited for a CPU (runnable, not running), and how busy the whole machine was (other
    jobs included): replicas that wait for a CPU on a busy machine are CPU-bound, not
    waiting for each other. Under a quota the kernel counts time throttled as waiting too."""
    ports = [p for _, p in servers]
    bodies = payloads(count, tag)
    procs = {f"replica {i + 1}": [proc.pid] for i, (proc, _) in enumerate(servers)}
    procs["postgres"] = _postgres_pids(pg)
    procs["receiver"] = [sink.pid]
    before = {pid: _cpu(pid) for pids in procs.values() for pid in pids}
    waited = {proc.pid: _ready_wait(proc.pid) for proc, _ in servers}
    machine = _machine()
    throttled = _throttling(quota, servers)
    me = os.times()
    if sampler:
        sampler.start()
    started = time.perf_counter()
    asyncio.run(_intake(ports, bodies))
    while sum(executions(p) for p in ports) < count:
        time.sleep(0.2)  # a scrape costs the replica CPU: not too often
    took = time.perf_counter() - started
    waits_text = sampler.summary() if sampler else ""
    throttled_text, bound = _throttled(throttled, _throttling(quota, servers), took)
    succeeded = sum(executions(p, "succeeded") for p in ports)
    # Replicas taking each other's alerts over would be churn, not scaling.
    takeovers = sum(metric(p, "remediator_store_lease_takeovers_total ") for p in ports)
    if succeeded != count:  # a blocked decision is not the path measured here
        raise SystemExit(f"only {succeeded:g} of {count} decisions succeeded")
    procs["postgres"] = _postgres_pids(pg)  # backends opened meanwhile count from zero
    used = {name: sum(_cpu(pid) - before.get(pid, 0.0) for pid in pids) / took
            for name, pids in procs.items()}
    waits = "/".join(f"{(_ready_wait(pid) - since) / took:.0%}" for pid, since in waited.items())
    if quota:
        waits += " (throttled included)"
    total, idle = (b - a for a, b in zip(machine, _machine(), strict=True))
    now = os.times()
    used["load generator"] = (now.user + now.system - me.user - me.system) / took
    per = sum(share for name, share in used.items()
              if name not in ("load generator", "receiver")) * took / count
    database = used["postgres"] * took / count
    replica = sum(share for name, share in used.items() if name.startswith("replica")) * took / count
    # CPU time per decision does not depend on how much CPU other processes left us.
    return count / took, (", ".join(f"{name} {share:.0%}" for name, share in used.items())
                          + f"; {per * 1000:.1f} CPU ms per decision (replicas + PostgreSQL), "
                          f"of which PostgreSQL {database * 1000:.2f}; {takeovers:g} lease "
                          f"takeovers; replicas waiting for a "
                          f"CPU {waits} of the time; machine busy {1 - idle / total:.0%}"
                          + (f"; {throttled_text}" if throttled_text else "") + waits_text), bound, replica


def setting() -> tuple[Path, PostgresCluster, subprocess.Popen, int]:
    """The rules and config `replicas` run, a throwaway cluster, and the receiver of the
    playbook's calls (a bare aiohttp handler) with its port."""
    tmp = Path(tempfile.mkdtemp(prefix="remediator-ha-bench-"))
    (tmp / "rules").mkdir()
    (tmp / "config.yaml").write_text(CONFIG)
    pg = PostgresCluster().init()
    sink_port = free_port()
    sink = start([sys.executable, str(ROOT / "bench" / "bare_server.py"), str(sink_port)], sink_port)
    (tmp / "rules" / "bench.yaml").write_text(RULES % f"http://127.0.0.1:{sink_port}/alerts")
    return tmp, pg, sink, sink_port


def _quota(fraction: float) -> CpuQuota | None:
    """The replicas' CPU quota groups, or None (saying why) when they cannot be made."""
    if fraction <= 0:
        return None
    try:
        return CpuQuota(fraction)
    except OSError as exc:
        print(f"NO CPU QUOTA: cannot hold replicas to {fraction} CPU ({exc}); measuring "
              "unconstrained replicas only", flush=True)
        return None


def measure(name: str, n: int, store: Callable[[], str],
            setting_: tuple[Path, PostgresCluster, subprocess.Popen],
            args: argparse.Namespace, quota: CpuQuota | None) -> tuple[float, float, float, float]:
    """One setup's intake and end-to-end rates, printing what each process used meanwhile."""
    tmp, pg, sink = setting_
    label = f"{name}, {quota.fraction:g} CPU each" if quota else name
    servers = replicas(n, store(), tmp, quota=quota)  # a fresh store for each measurement
    try:
        ports = [p for _, p in servers]
        asyncio.run(_intake(ports, payloads(2000, f"warm{label}")))
        before = _throttling(quota, servers)
        took = asyncio.run(_intake(ports, payloads(args.alerts, f"i{label}")))
        intake = args.alerts / took
        intake_throttled = _throttled(before, _throttling(quota, servers), took)[0]
    finally:
        stop(servers, quota)
    servers = replicas(n, store(), tmp, mode="live", quota=quota)
    try:
        sampler = WaitSampler(pg.url()) if args.sample_waits and "PostgreSQL" in name else None
        e2e, cpu, bound, replica = end_to_end(servers, args.decisions, f"e{label}", pg, sink, quota, sampler)
    finally:
        stop(servers, quota)
    throttled = f" ({intake_throttled})" if quota else ""
    print(f"{label}: intake {intake:.0f} alerts/s{throttled}; end to end {e2e:.0f} decisions/s; "
          f"CPU during end to end: {cpu}; load average {os.getloadavg()[0]:.1f}", flush=True)
    return intake, e2e, bound, replica


def report(args: argparse.Namespace, bare: float,
           rates: dict[str, dict[str, tuple[float, float, float, float]]]) -> None:
    """The rates side by side, unconstrained and under the quota, and their ratios."""
    print(f"\nintake: {args.alerts} alerts per setup, 8 connections; end to end: {args.decisions} "
          f"alerts, live, one mutating step each; {os.cpu_count()} CPUs")
    print(f"{'bare aiohttp handler':28} {'intake ' + format(bare, '.0f') + ' alerts/s':>24}")
    print(f"{'':28}" + "".join(f" {v + ' intake/s':>24} {'decisions/s':>12}" for v in rates))
    for name in next(iter(rates.values())):
        print(f"{name:28}" + "".join(f" {r[name][0]:24.0f} {r[name][1]:12.0f}"
                                     for r in rates.values()))
    if len(rates) == 1 and args.replica_cpu > 0:
        print("NO CPU QUOTA could be set (see the first line): unconstrained replicas only")
    for variant, r in rates.items():
        sqlite, one, two = (r["SQLite, 1 replica"], r["PostgreSQL, 1 replica"],
                            r["PostgreSQL, 2 replicas"])
        print(f"{variant}: PostgreSQL 1 replica / SQLite: intake {one[0] / sqlite[0]:.2f}, end to "
              f"end {one[1] / sqlite[1]:.2f} (floor 0.5); 2 replicas / 1: intake "
              f"{two[0] / one[0]:.2f}, end to end {two[1] / one[1]:.2f} (floor 1.5)")
        # CPU per decision hardly depends on the CPU other jobs leave: what each replica held
        # to the same quota would make, two against one, once the quota binds.
        print(f"  replicas' CPU ms per decision {sqlite[3] * 1000:.2f} / {one[3] * 1000:.2f} / "
              f"{two[3] * 1000:.2f}: two replicas with the same CPU each would make "
              f"{2 * one[3] / two[3]:.2f} times one's decisions, if nothing else bound them")
        bound = [r[name][2] for name in r]
        if variant != "unconstrained":
            print(f"  least throttled replica, in end to end: {' / '.join(f'{b:.0%}' for b in bound)} "
                  "of CFS periods" + (" -- below half: there the quota did not bind, the CPU "
                                      "other processes left did" if min(bound) < 0.5 else ""))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--alerts", type=int, default=20_000, help="per intake measurement")
    parser.add_argument("--decisions", type=int, default=2_000, help="per end-to-end measurement")
    parser.add_argument("--replica-cpu", type=float, default=0.4, metavar="FRACTION",
                        help="CPU quota per replica in the constrained runs (0: none)")
    parser.add_argument("--sample-waits", action="store_true",
                        help="sample pg_stat_activity during PostgreSQL end to end")
    args = parser.parse_args()
    quota = _quota(args.replica_cpu)
    tmp, pg, sink, sink_port = setting()
    variants = {"unconstrained": None}
    if quota:
        variants[f"{quota.fraction:g} CPU per replica"] = quota
    rates: dict[str, dict[str, tuple[float, float, float, float]]] = {v: {} for v in variants}
    try:
        bare = args.alerts / asyncio.run(_intake([sink_port], payloads(args.alerts, "bare")))
        print(f"bare aiohttp handler: intake {bare:.0f} alerts/s", flush=True)
        setups = [("SQLite, 1 replica", 1, lambda: f"sqlite:///{tmp}/{time.time_ns()}.db"),
                  ("PostgreSQL, 1 replica", 1, pg.create_database),
                  ("PostgreSQL, 2 replicas", 2, pg.create_database)]
        for name, n, store in setups:
            for variant, held in variants.items():  # alternated: the machine's speed drifts
                rates[variant][name] = measure(name, n, store, (tmp, pg, sink), args, held)
    finally:
        if quota:
            quota.release()
        sink.terminate()
        sink.wait(30)
        pg.destroy()
    report(args, bare, rates)


if __name__ == "__main__":
    main()
