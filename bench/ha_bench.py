"""Several replicas: intake and end-to-end decisions/s on PostgreSQL against SQLite and a bare
aiohttp handler, with one and two replicas, in the same run. Printed, not a test.

- intake: alerts acknowledged per second (8 connections, 2 alerts per request), spread
  evenly over the replicas;
- end to end: alerts posted, matched, guarded, journaled and executed (`--mode live`, one
  mutating `http.request` step against a local aiohttp receiver) per second, until every
  replica's `remediator_executions_total` adds up to the alerts sent.

PostgreSQL is a throwaway cluster (`initdb` in a temporary directory, as in the tests).
Usage: python bench/ha_bench.py [--alerts 20000] [--decisions 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

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


def replicas(n: int, store: str, tmp: Path, mode: str = "dry-run") -> list[tuple[subprocess.Popen, int]]:
    out = []
    for _ in range(n):
        port = free_port()
        proc = start([sys.executable, "-m", "remediator.cli", "serve", "--listen",
                      f"127.0.0.1:{port}", "--store", store, "--rules", str(tmp / "rules"),
                      "--mode", mode, "--config", str(tmp / "config.yaml")], port,
                     {"REMEDIATOR_WEBHOOK_TOKEN": TOKEN, "REMEDIATOR_LOG_LEVEL": "warning",
                      "REMEDIATOR_WORKERS": "16"})
        out.append((proc, port))
    return out


def stop(servers: list[tuple[subprocess.Popen, int]]) -> None:
    for proc, _ in servers:
        proc.terminate()
    for proc, _ in servers:
        proc.wait(60)


async def _intake(ports: list[int], bodies: list[bytes]) -> float:
    shares = [bodies[i::len(ports)] for i in range(len(ports))]
    started = time.perf_counter()
    await asyncio.gather(*(drive(f"http://127.0.0.1:{p}/alerts", share)
                           for p, share in zip(ports, shares, strict=True)))
    return time.perf_counter() - started


def executions(port: int, outcome: str = "") -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith(f'remediator_executions_total{{outcome="{outcome}'))


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


def end_to_end(servers: list[tuple[subprocess.Popen, int]], count: int, tag: str,
               pg: PostgresCluster, sink: subprocess.Popen) -> tuple[float, str]:
    """Decisions/s; the share of a CPU each process used meanwhile, how long each replica
    waited for a CPU (runnable, not running), and how busy the whole machine was (other
    jobs included): replicas that wait for a CPU on a busy machine are CPU-bound, not
    waiting for each other."""
    ports = [p for _, p in servers]
    bodies = payloads(count, tag)
    procs = {f"replica {i + 1}": [proc.pid] for i, (proc, _) in enumerate(servers)}
    procs["postgres"] = _postgres_pids(pg)
    procs["receiver"] = [sink.pid]
    before = {pid: _cpu(pid) for pids in procs.values() for pid in pids}
    waited = {proc.pid: _ready_wait(proc.pid) for proc, _ in servers}
    machine = _machine()
    me = os.times()
    started = time.perf_counter()
    asyncio.run(_intake(ports, bodies))
    while sum(executions(p) for p in ports) < count:
        time.sleep(0.2)  # a scrape costs the replica CPU: not too often
    took = time.perf_counter() - started
    succeeded = sum(executions(p, "succeeded") for p in ports)
    if succeeded != count:  # a blocked decision is not the path measured here
        raise SystemExit(f"only {succeeded:g} of {count} decisions succeeded")
    procs["postgres"] = _postgres_pids(pg)  # backends opened meanwhile count from zero
    used = {name: sum(_cpu(pid) - before.get(pid, 0.0) for pid in pids) / took
            for name, pids in procs.items()}
    waits = "/".join(f"{(_ready_wait(pid) - since) / took:.0%}" for pid, since in waited.items())
    total, idle = (b - a for a, b in zip(machine, _machine(), strict=True))
    now = os.times()
    used["load generator"] = (now.user + now.system - me.user - me.system) / took
    per = sum(share for name, share in used.items()
              if name not in ("load generator", "receiver")) * took / count
    database = used["postgres"] * took / count
    # CPU time per decision does not depend on how much CPU other processes left us.
    return count / took, (", ".join(f"{name} {share:.0%}" for name, share in used.items())
                          + f"; {per * 1000:.1f} CPU ms per decision (replicas + PostgreSQL), "
                          f"of which PostgreSQL {database * 1000:.2f}; replicas waiting for a "
                          f"CPU {waits} of the time; machine busy {1 - idle / total:.0%}")


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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--alerts", type=int, default=20_000, help="per intake measurement")
    parser.add_argument("--decisions", type=int, default=2_000, help="per end-to-end measurement")
    args = parser.parse_args()
    tmp, pg, sink, sink_port = setting()
    intake: dict[str, float] = {}
    e2e: dict[str, float] = {}
    try:
        intake["bare aiohttp handler"] = args.alerts / asyncio.run(
            _intake([sink_port], payloads(args.alerts, "bare")))
        setups = [("SQLite, 1 replica", 1, lambda: f"sqlite:///{tmp}/{time.time_ns()}.db"),
                  ("PostgreSQL, 1 replica", 1, pg.create_database),
                  ("PostgreSQL, 2 replicas", 2, pg.create_database)]
        for name, n, store in setups:
            servers = replicas(n, store(), tmp)
            try:
                ports = [p for _, p in servers]
                asyncio.run(_intake(ports, payloads(2000, f"warm{name}")))
                intake[name] = args.alerts / asyncio.run(
                    _intake(ports, payloads(args.alerts, f"i{name}")))
            finally:
                stop(servers)
            servers = replicas(n, store(), tmp, mode="live")
            try:
                e2e[name], cpu = end_to_end(servers, args.decisions, f"e{name}", pg, sink)
            finally:
                stop(servers)
            print(f"{name}: intake {intake[name]:.0f} alerts/s, end to end {e2e[name]:.0f} "
                  f"decisions/s; CPU during end to end: {cpu}; load average "
                  f"{os.getloadavg()[0]:.1f}", flush=True)
    finally:
        sink.terminate()
        sink.wait(30)
        pg.destroy()
    print(f"\nintake: {args.alerts} alerts per setup, 8 connections; end to end: {args.decisions} "
          f"alerts, live, one mutating step each; {os.cpu_count()} CPUs")
    print(f"{'':28} {'intake alerts/s':>16} {'decisions/s':>12}")
    for name, rate in intake.items():
        print(f"{name:28} {rate:16.0f} {e2e.get(name, float('nan')):12.0f}")
    sqlite, one, two = (intake["SQLite, 1 replica"], intake["PostgreSQL, 1 replica"],
                        intake["PostgreSQL, 2 replicas"])
    e_sqlite, e_one, e_two = (e2e["SQLite, 1 replica"], e2e["PostgreSQL, 1 replica"],
                              e2e["PostgreSQL, 2 replicas"])
    print(f"PostgreSQL 1 replica / SQLite: intake {one / sqlite:.2f}, end to end "
          f"{e_one / e_sqlite:.2f} (floor 0.5)")
    print(f"PostgreSQL 2 replicas / 1: intake {two / one:.2f}, end to end {e_two / e_one:.2f} "
          f"(floor 1.5)")


if __name__ == "__main__":
    main()
