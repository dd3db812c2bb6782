"""Where PostgreSQL's CPU goes per live decision: ha_bench's end to end (its rules and config,
one mutating step per alert), on a throwaway cluster. Printed, not a test.

- CPU per decision of the replica(s) and of each kind of PostgreSQL process (the backends,
  the WAL writer, autovacuum, workers that exited meanwhile);
- what the database did per decision: commits, WAL records and bytes, rows written, rows
  read by sequential scans (a plan that reads a growing table whole), per table;
- `--statements`: the server's own CPU per statement (`log_statement_stats`: getrusage
  around each bind and execute), per decision and per call; what is left of the backends'
  CPU is the protocol, commits and waiting between statements;
- `--variants A.sql B.sql`: server-side SQL (a function's body, an index, a trigger) applied
  alternately in the same cluster under the same replica, so the machine's speed, which
  varies by tens of percent from minute to minute, weighs on both alike.

CPU per decision depends far less on the load other processes put on the machine than
decisions per second; still, compare only runs alternated in the same few minutes.
Usage: python bench/pg_cpu_bench.py [--decisions 2000] [--replicas 1] [--statements]
       python bench/pg_cpu_bench.py --variants old.sql new.sql [--rounds 6]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from ha_bench import _cpu, _intake, executions, replicas, setting, stop  # noqa: E402
from webhook_bench import payloads  # noqa: E402

from tests.support.postgres import PostgresCluster  # noqa: E402

_COUNTERS = ("SELECT sum(xact_commit), sum(tup_inserted), sum(tup_updated), "
             "(SELECT wal_records FROM pg_stat_wal), (SELECT wal_bytes FROM pg_stat_wal) "
             "FROM pg_stat_database")


def _processes(pg: PostgresCluster) -> dict[int, tuple[str, float]]:
    """The postmaster's children: pid -> (kind, CPU seconds); the postmaster itself carries
    the CPU of children that exited (autovacuum workers)."""
    main = int((pg.data / "postmaster.pid").read_text().split()[0])
    out = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) != main:
                continue
            title = (stat.parent / "cmdline").read_bytes().decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue
        kind = title.replace("postgres: ", "").strip("\0").split(" ")[0]
        out[int(stat.parent.name)] = ("backends" if "127.0.0.1" in title else kind,
                                      _cpu(int(stat.parent.name)))
    reaped = Path(f"/proc/{main}/stat").read_text().rsplit(")", 1)[1].split()
    out[main] = ("exited workers", (int(reaped[13]) + int(reaped[14])) / os.sysconf("SC_CLK_TCK"))
    return out


def _cpu_by_kind(before: dict, after: dict) -> dict[str, float]:
    used: dict[str, float] = defaultdict(float)
    for pid, (kind, cpu) in after.items():
        old = before.get(pid)
        used[kind] += cpu - (old[1] if old and old[0] == kind else 0.0)
    return used


def _counters(pg: PostgresCluster, db: str) -> list[float]:
    return [float(x) for x in pg.sql(_COUNTERS, db).split("|")]


def _decide(ports: list[int], count: int, tag: str, done: float) -> float:
    """Post `count` alerts, wait until decided; the total decided so far."""
    asyncio.run(_intake(ports, payloads(count, tag)))
    while sum(executions(p) for p in ports) < done + count:
        time.sleep(0.2)
    return done + count


def _statements(log: str, n: int) -> None:
    used: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    for m in re.finditer(r"LOG:  (BIND|EXECUTE) MESSAGE STATISTICS\n.*?! system usage stats:"
                         r"\n\s*!\s*([\d.]+) s user, ([\d.]+) s system.*?STATEMENT:  (.*?)"
                         r"(?=\n\S+ \S+ \S+ \[\d+\]|\Z)", log, re.S):
        key = f"{m.group(1).lower():7} {' '.join(m.group(4).split())[:80]}"
        used[key][0] += 1
        used[key][1] += float(m.group(2)) + float(m.group(3))
    total = sum(cpu for _, cpu in used.values())
    print(f"statements (bind and execute): {total / n * 1e3:.3f} ms per decision")
    for key, (calls, cpu) in sorted(used.items(), key=lambda kv: -kv[1][1])[:12]:
        print(f"  {cpu / n * 1e3:6.3f} ms  {calls / n:5.2f}/decision  {cpu / calls * 1e6:5.0f} us/call"
              f"  {key}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--decisions", type=int, default=2000, help="per measurement")
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--statements", action="store_true", help="server CPU per statement")
    parser.add_argument("--variants", nargs=2, metavar=("A.sql", "B.sql"))
    parser.add_argument("--rounds", type=int, default=6, help="with --variants")
    args = parser.parse_args()
    n = args.decisions
    tmp, pg, sink, _ = setting()
    url = pg.create_database()
    db = url.rsplit("/", 1)[1]
    if args.statements:
        pg.sql(f"ALTER DATABASE {db} SET log_statement_stats = on")
        pg.sql(f"ALTER DATABASE {db} SET log_min_error_statement = log")  # names the statement
    servers = replicas(args.replicas, url, tmp, mode="live")
    ports = [p for _, p in servers]
    try:
        done = _decide(ports, 300, "warm", 0)  # connections opened, statements prepared
        if args.variants:
            sql = {v: Path(f).read_text() for v, f in zip("AB", args.variants, strict=True)}
            seen: dict[str, list[tuple[float, float]]] = {"A": [], "B": []}
            for r in range(args.rounds):
                for v in "AB":
                    pg.sql(sql[v], db)
                    cpu, replica = _processes(pg), sum(_cpu(p.pid) for p, _ in servers)
                    done = _decide(ports, n, f"{v}{r}", done)
                    used = sum(_cpu_by_kind(cpu, _processes(pg)).values()) / n
                    mine = (sum(_cpu(p.pid) for p, _ in servers) - replica) / n
                    seen[v].append((used, mine))
                    print(f"{v} round {r + 1}: PostgreSQL {used * 1e3:.3f} ms, replicas "
                          f"{mine * 1e3:.3f} ms per decision", flush=True)
            for v, runs in seen.items():
                print(f"{v}: median PostgreSQL {statistics.median(u for u, _ in runs) * 1e3:.3f} "
                      f"ms per decision, PostgreSQL/replicas "
                      f"{statistics.median(u / m for u, m in runs):.3f}")
            return
        pg.sql("SELECT pg_stat_reset(), pg_stat_reset_shared('wal')", db)
        counters, cpu = _counters(pg, db), _processes(pg)
        replica, offset = sum(_cpu(p.pid) for p, _ in servers), (pg.dir / "server.log").stat().st_size
        started = time.perf_counter()
        _decide(ports, n, "measured", done)
        took = time.perf_counter() - started
        used = _cpu_by_kind(cpu, _processes(pg))
        mine = sum(_cpu(p.pid) for p, _ in servers) - replica
        print(f"{n} decisions, {args.replicas} replica(s), {n / took:.0f}/s: replicas "
              f"{mine / n * 1e3:.3f} ms, PostgreSQL {sum(used.values()) / n * 1e3:.3f} ms CPU "
              f"per decision")
        for kind, cpu_s in sorted(used.items(), key=lambda kv: -kv[1]):
            if cpu_s > 0:
                print(f"  {kind:20} {cpu_s / n * 1e3:.3f} ms")
        commits, ins, upd, records, wal = (b - a for a, b in zip(counters, _counters(pg, db),
                                                                   strict=True))
        print(f"per decision: {commits / n:.2f} commits, {records / n:.1f} WAL records, "
              f"{wal / n:.0f} WAL bytes, {ins / n:.2f} rows inserted, {upd / n:.2f} updated")
        print("per table and decision (inserted, updated, of which HOT, read by sequential "
              "scans):")
        for row in pg.sql(f"SELECT relname, round(n_tup_ins / {n}.0, 2), round(n_tup_upd / {n}.0, 2), "
                          f"round(n_tup_hot_upd / {n}.0, 2), round(seq_tup_read / {n}.0, 1) "
                          "FROM pg_stat_user_tables WHERE n_tup_ins + n_tup_upd + seq_tup_read > 0 "
                          "ORDER BY n_tup_ins + n_tup_upd DESC", db).splitlines():
            print("  " + "  ".join(row.split("|")))
        if args.statements:
            _statements((pg.dir / "server.log").read_bytes()[offset:].decode(errors="replace"), n)
    finally:
        stop(servers)
        sink.terminate()
        sink.wait(30)
        pg.destroy()


if __name__ == "__main__":
    main()
