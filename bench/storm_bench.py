"""Alert storm: intake, acknowledgement latency while processing runs, end-to-end decisions,
storage and logs per decision, start-up, lint and matching cost. Printed, not a test.

Load comes from `wrk` (C, one thread, 8 connections; installed with apt-get if missing), with
bench/storm.lua: the five systems' alerts (their rules in deploy/prometheus/, the labels the
playbook tests of rules/ use), a new fingerprint per alert, 10 % duplicates (retries) and
10 % resolutions, 2 alerts per request. Targets, one after the other:
  - bench/bare_server.py, the ceiling (parse, 202); its CPU share shows wrk is not the limit;
  - `remediator serve`, dry-run, the shipped rules and production config, on SQLite and on a
    throwaway PostgreSQL cluster (tests/support/postgres.py), log level info to a file;
  - the same, `--mode live` against the e2e tests' peers (bench/live_peers.py: the Kubernetes
    API test server, moto S3, a private dockerd, Prometheus, Alertmanager), a fresh set per
    storm; it prints what the decisions did: mutations executed, blocked, coalesced.

    python bench/storm_bench.py --quick     # one 20 000-alert storm per store dry-run, one live
                                            # on SQLite (--live-postgres: on PostgreSQL too)
    python bench/storm_bench.py             # full: 3 storms per store, a 100 000-alert soak
    python bench/storm_bench.py --quick --no-live --no-sqlite --only storms
                                            # one PostgreSQL storm and the bare handler's run
                                            # (its ratios' base), nothing else (~1.5 min)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from debian import ensure  # noqa: E402
from lint_bench import generate  # noqa: E402
from live_peers import LivePeers, live_config, production_config  # noqa: E402
from webhook_bench import peak_rss_mb, start  # noqa: E402

from remediator.engine import execution_id  # noqa: E402
from remediator.playbooks.validate import load_rules, validate_paths  # noqa: E402
from tests.support.procs import cpu_seconds, cpu_wait  # noqa: E402
from tests.support.worker import TOKEN, free_port  # noqa: E402

PER_REQUEST = 2
SYSTEMS = ("3dpot", "code-forge", "deltacrown", "hackathon", "libervia")


# --- traffic ---------------------------------------------------------------------------------

def alert_label_sets() -> list[dict[str, str]]:
    """Every label set the playbook tests send, then each alert rule's own labels (alerts the
    tests do not cover: a realistic share that matches no playbook)."""
    seen: dict[str, dict[str, str]] = {}
    for system in SYSTEMS:
        for test in yaml.safe_load((ROOT / "rules" / f"{system}_test.yaml").read_text())["tests"]:
            for a in test.get("alerts", []):
                labels = {k: str(v) for k, v in a["labels"].items()}
                seen.setdefault(json.dumps(labels, sort_keys=True), labels)
        doc = yaml.safe_load((ROOT / "deploy" / "prometheus" / f"{system}.rules.yml").read_text())
        for group in doc["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    labels = {"alertname": rule["alert"],
                              **{k: str(v) for k, v in (rule.get("labels") or {}).items()}}
                    seen.setdefault(json.dumps(labels, sort_keys=True), labels)
    return list(seen.values())


def lua_script(label_sets: list[dict[str, str]]) -> str:
    templates = []
    for labels in label_sets:
        templates.append(json.dumps({
            "status": "@STATUS@", "labels": labels,
            "annotations": {"summary": f"{labels['alertname']} summary"},
            "startsAt": "2026-11-21T10:00:00Z", "endsAt": "@ENDS@",
            "generatorURL": "http://prometheus.example/graph?g0.expr=up", "fingerprint": "@FP@"}))
    items = ",\n".join(f"[==[{t}]==]" for t in templates)
    head = f"ALERTS = {{\n{items}\n}}\nTOKEN = [==[{TOKEN}]==]\nPER_REQUEST = {PER_REQUEST}\n"
    return head + (ROOT / "bench" / "storm.lua").read_text()


# --- measuring -------------------------------------------------------------------------------

def ensure_wrk() -> str:
    ensure({"wrk": "wrk"})
    return str(shutil.which("wrk"))


def run_wrk(script: Path, port: int, requests: int, tag: str, seconds: int = 600) -> dict[str, Any]:
    """One wrk run; stops after `requests` answers (or after `seconds` when 0)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.Popen([ensure_wrk(), "-t1", "-c8", f"-d{seconds}s", "--timeout", "10s",
                             "-s", str(script), f"http://127.0.0.1:{port}", "--", str(requests),
                             tag], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    out = []
    for line in proc.stdout:  # wrk stops early on SIGINT, and still reports
        if line.startswith("LIMIT"):
            proc.send_signal(signal.SIGINT)
        out.append(line)
    if proc.wait() != 0:
        raise SystemExit(f"wrk failed: {''.join(out)}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next(x for x in out if x.startswith("RESULT "))
    result = json.loads(line[len("RESULT "):])
    result["seconds"] = result["duration_us"] / 1e6
    result["wrk_cpu"] = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    if result["non202"] or result["errors"]:
        raise SystemExit(f"wrk against {port}: {result['non202']} non-202 answers, "
                         f"{result['errors']} socket errors")
    return result


def metrics(port: int, by: tuple[str, str] | None = None) -> dict[str, float]:
    """Each remediator_ metric summed over its labels; with `by` = (metric, label), that
    metric's samples summed per value of the label instead."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30).read().decode()
    sums: dict[str, float] = {}
    for line in text.splitlines():
        m = re.match(r"(remediator_[a-z_]+?)(?:\{(.*)\})? (\S+)$", line)
        if m and by is None:
            sums[m[1]] = sums.get(m[1], 0.0) + float(m[3])
        elif m and m[1] == by[0] and (v := re.search(rf'{by[1]}="([^"]*)"', m[2] or "")):
            sums[v[1]] = sums.get(v[1], 0.0) + float(m[3])
    return sums


def drain(port: int, started: float, timeout: float) -> tuple[float, float, float]:
    """Wait until nothing is pending and the decision count stops moving, or `timeout`
    seconds; returns (decisions, seconds from `started` to the last decision seen, alerts
    still pending)."""
    last, last_at, quiet, pending = -1.0, time.perf_counter(), 0, 1.0
    while quiet < 3 and time.perf_counter() - started < timeout:
        m = metrics(port)
        decided, pending = (m.get("remediator_executions_total", 0.0),
                            m.get("remediator_inbox_pending", 1.0))
        if decided != last:
            last, last_at, quiet = decided, time.perf_counter(), 0
        elif pending == 0:
            quiet += 1
        time.sleep(0.5)
    return last, last_at - started, pending


def tally(store: str, accepted: float) -> dict[str, Any]:
    """What the decisions did, read back with `remediator history` (the store, read-only):
    mutating steps by outcome (blocked ones by guard), runs that called a backend, and the
    acknowledged alerts that have a final decision."""
    out = subprocess.run([sys.executable, "-m", "remediator.cli", "history", "--store", store,
                          "--limit", str(10**9), "--format", "json"],
                         capture_output=True, check=True)
    decisions = json.loads(out.stdout)
    steps = [s for d in decisions for s in d.get("steps") or []]
    mutations = Counter(f"blocked by {s.get('guard')}" if s["outcome"] == "blocked" else s["outcome"]
                        for s in steps if s.get("mutating"))
    final = [d for d in decisions if d["outcome"] != "running"]
    decided = {(d["alert"].get("fingerprint"), d["alert"].get("startsAt"), d["alert"]["status"])
               for d in final}
    called = sum(1 for d in final if any(s["outcome"] in ("succeeded", "failed")
                                         for s in d.get("steps") or []))
    failed = Counter(f"{d['playbook']}/{s['name']}" for d in final for s in d.get("steps") or []
                     if s["outcome"] == "failed")
    return {"mutations": dict(mutations), "called": called, "failed_steps": dict(failed),
            "running": len(decisions) - len(final),
            "decided_alerts": len(decided), "accepted": int(accepted)}


def ledger(store: str) -> dict[str, int]:
    """What the store holds once a storm drained (the server stopped): acknowledged alerts
    (inbox items), those not done, and those without a final decision. An alert's decisions
    are found by their ids (a hash of its dedupe key and playbook), so `undecided` is exact
    whatever the decision count says: `decisions` (the metric) follows the acknowledged
    alerts, which vary by a few between storms: wrk stops after N answers with up to 7 more
    requests in flight (one per other connection), fewer when several answers came in one
    read (a group commit answers webhooks together); the server acknowledges those sent.
    Against a counting handler, 1 000 answers were 1 000 to 1 007 requests received (1 800
    to 1 812 alerts): an 18 010-decision storm beside 18 012 ones is two alerts fewer
    acknowledged, not lost."""
    query = ("SELECT dedupe_key, state FROM inbox", "SELECT id, playbook, outcome FROM executions")
    if store.startswith("sqlite:///"):
        import sqlite3
        db = sqlite3.connect(f"file:{store[len('sqlite:///'):]}?mode=ro", uri=True)
        try:
            inbox, executions = (db.execute(q).fetchall() for q in query)
        finally:
            db.close()
    else:
        async def read() -> tuple[list[Any], list[Any]]:
            import asyncpg
            conn = await asyncpg.connect(store)
            try:
                return await conn.fetch(query[0]), await conn.fetch(query[1])
            finally:
                await conn.close()
        inbox, executions = asyncio.run(read())
    final = {e[0] for e in executions if e[2] != "running"}
    playbooks = {e[1] or "" for e in executions} | {""}
    undecided = [key for key, _ in inbox
                 if not any(execution_id(key, pb) in final for pb in playbooks)]
    return {"inbox": len(inbox), "not_done": sum(state != "done" for _, state in inbox),
            "final": len(final), "undecided": len(undecided)}


def store_bytes(store: str, pg: Any) -> int:
    if store.startswith("sqlite:///"):
        db = Path(store[len("sqlite:///"):])
        return sum(f.stat().st_size for f in db.parent.glob(db.name + "*"))

    async def size(url: str) -> int:
        import asyncpg
        conn = await asyncpg.connect(url)
        try:
            return int(await conn.fetchval("SELECT pg_database_size(current_database())"))
        finally:
            await conn.close()
    return asyncio.run(size(store)) - asyncio.run(size(pg.create_database()))


def storm(name: str, store: str, pg: Any, tmp: Path, script: Path, alerts: int,
          bare_rps: float, config: Path, env: dict[str, str], live: bool = False,
          drain_timeout: float = 1800.0) -> dict[str, Any]:
    port = free_port()
    log = tmp / f"{re.sub(r'[^a-zA-Z-]+', '_', name)}-{time.time_ns()}.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "remediator.cli", "serve", "--listen", f"127.0.0.1:{port}",
             "--store", store, "--rules", str(ROOT / "rules"), "--config", str(config),
             *(["--mode", "live"] if live else [])],
            env={**env, "REMEDIATOR_LOG_LEVEL": "info"}, stdout=err, stderr=err)
        try:
            start_wait(port, proc)
            cpu0, wait0, started = cpu_seconds(proc.pid), cpu_wait(proc.pid), time.perf_counter()
            w = run_wrk(script, port, alerts // PER_REQUEST, f"{name[:2]}{time.time_ns()}")
            intake_done = time.perf_counter() - started
            intake_cpu = cpu_seconds(proc.pid) - cpu0
            intake_wait = (cpu_wait(proc.pid) - wait0) / intake_done
            decisions, elapsed, pending = drain(port, started, drain_timeout)
            m = metrics(port)
            outcomes = metrics(port, by=("remediator_executions_total", "outcome"))
            guards = metrics(port, by=("remediator_guard_blocks_total", "guard"))
            calls = metrics(port, by=("remediator_step_duration_seconds_count", "action"))
            call_seconds = metrics(port, by=("remediator_step_duration_seconds_sum", "action"))
            rss = peak_rss_mb(proc.pid)
            cores = (cpu_seconds(proc.pid) - cpu0) / (time.perf_counter() - started)
        finally:
            proc.terminate()
            proc.wait(120)
    sent = w["requests"] * PER_REQUEST
    held = ledger(store)
    log_bytes = log.stat().st_size
    log_lines = len(log.read_bytes().splitlines())
    rps = w["requests"] / w["seconds"]
    return {"name": name, "rps": rps, "ratio": rps / bare_rps,
            "alerts_s": sent / w["seconds"], "p50": w["p50_us"] / 1000, "p99": w["p99_us"] / 1000,
            "max": w["max_us"] / 1000, "decisions": decisions, "e2e": decisions / elapsed,
            "e2e_ratio": decisions / elapsed / bare_rps, "drain": max(0.0, elapsed - intake_done),
            "rss": rss, "duplicates": m.get("remediator_alerts_duplicate_total", 0.0),
            "bytes_per_decision": store_bytes(store, pg) / max(decisions, 1),
            "log_bytes_per_decision": log_bytes / max(decisions, 1),
            "log_lines_per_decision": log_lines / max(decisions, 1),
            "pending": pending, "outcomes": outcomes, "cores": cores, "ledger": held,
            "acknowledged": m.get("remediator_alerts_received_total", 0.0)
            - m.get("remediator_alerts_duplicate_total", 0.0),
            "intake_cpu_us": intake_cpu / w["requests"] * 1e6, "intake_wait": intake_wait,
            "calls": {a: (n, call_seconds.get(a, 0.0) / n) for a, n in calls.items() if n}, "guards": guards,
            **(tally(store, m.get("remediator_alerts_received_total", 0.0)
                     - m.get("remediator_alerts_duplicate_total", 0.0)) if live else {})}


def start_wait(port: int, proc: subprocess.Popen, timeout: float = 60) -> float:
    """Seconds until /-/ready answers 200 (polled every 5 ms)."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=1)
            return time.perf_counter() - started
        except OSError:
            time.sleep(0.005)
    proc.kill()
    raise SystemExit("server did not become ready")


def startup(tmp: Path, runs: int) -> tuple[float, float, int, float]:
    """Seconds to ready with the rules parse cache (`rules_cache`, beside the store) and
    without it, and the CPU seconds the server used to get ready with it (less sensitive to
    other jobs on the machine than the time it took). Bytecode is
    compiled beforehand, as in an installed package (pip compiles it;
    PYTHONDONTWRITEBYTECODE, if set here, would make every start compile the sources)."""
    rules = tmp / "startup-rules"
    rules.mkdir(exist_ok=True)
    generate(rules, 1000)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(REMEDIATOR_WEBHOOK_TOKEN=TOKEN, REMEDIATOR_LOG_LEVEL="warning",
               PYTHONPYCACHEPREFIX=str(tmp / "pycache"))
    settings = {"cache": "auto", "none": "''"}  # rules_cache: beside the store, or none
    samples: dict[str, list[float]] = {name: [] for name in settings}
    cpu: list[float] = []
    loaded = 0
    for i in range(runs + 1):  # the first start of each compiles bytecode, fills the cache
        for name, setting in settings.items():
            cfg = tmp / f"startup-{name}.yaml"
            cfg.write_text(f"guards: {{namespaces: {{allow: [shop, pay]}}}}\n"
                           f"rules_cache: {setting}\n")
            port = free_port()
            proc = subprocess.Popen(
                [sys.executable, "-m", "remediator.cli", "serve", "--listen", f"127.0.0.1:{port}",
                 "--store", f"sqlite:///{tmp}/startup-{name}{i}.db", "--rules", str(rules),
                 "--config", str(cfg)],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                took = start_wait(port, proc)
                if i:
                    samples[name].append(took)
                    if name == "cache":
                        cpu.append(cpu_seconds(proc.pid))
                loaded = int(metrics(port).get("remediator_rules_loaded", 0))
            finally:
                proc.terminate()
                proc.wait(60)
    return (statistics.median(samples["cache"]), statistics.median(samples["none"]), loaded,
            statistics.median(cpu))


def lint_time(tmp: Path, runs: int) -> float:
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        check = validate_paths([str(tmp / "startup-rules")])
        samples.append(time.perf_counter() - t0)
        assert check.ok, check.problems[:3]
    return statistics.median(samples)


def matching(tmp: Path, label_sets: list[dict[str, str]]) -> dict[int, float]:
    """Microseconds per match against the shipped rules plus N-10 unrelated playbooks'."""
    out = {}
    for total in (10, 10_000):
        extra = tmp / f"match-{total}"
        extra.mkdir()
        generate(extra, max(total - 10, 0) // 2)
        rules = load_rules([str(ROOT / "rules"), str(extra)], known_sinks={"files", "alertmanager"})
        rounds = 2000
        t0 = time.perf_counter()
        for _ in range(rounds):
            for labels in label_sets:
                rules.match(labels, "firing")
        out[len(rules)] = (time.perf_counter() - t0) / (rounds * len(label_sets)) * 1e6
    return out


def drained(r: dict[str, Any]) -> str:
    """The drain time, or `>N` when alerts were still pending at the drain's timeout."""
    return f">{r['drain']:.0f}" if r["pending"] else f"{r['drain']:.1f}"


def what_decisions_did(r: dict[str, Any]) -> str:
    """One line per storm: outcomes, guard blocks, and for a live one what ran and changed."""
    def counts(c: dict[str, float]) -> str:
        return ", ".join(f"{k} {v:.0f}" for k, v in sorted(c.items(), key=lambda kv: -kv[1]) if v)
    held = r["ledger"]
    text = (f"{r['name']}: {r['decisions']:.0f} decisions ({counts(r['outcomes'])}) for "
            f"{r['acknowledged']:.0f} acknowledged alerts (wrk stops with requests in flight: a "
            f"few alerts more or less from one storm to the next); in the store "
            f"{held['inbox']} alerts, {held['not_done']} not done, {held['undecided']} without a "
            f"final decision, {held['final']} final decisions; "
            f"guard blocks: {counts(r['guards']) or 'none'} (locked: coalesced into a running "
            f"execution); still pending after the drain: {r['pending']:.0f}; the server used "
            f"{r['cores']:.2f} cores from the first request to the end of the drain, and "
            f"{r['intake_cpu_us']:.0f} us of CPU per request while wrk ran (intake and the "
            f"processing done meanwhile; less sensitive to other jobs than the rates); its threads "
            f"waited for a CPU {r['intake_wait']:.0%} of that time (other jobs on the machine: "
            "a p99 made by them as much as by the server)")
    if "mutations" in r:
        text += (f"\n    {r['called']} runs called a peer; mutating steps: "
                 f"{counts(r['mutations']) or 'none'}; acknowledged alerts with a final decision: "
                 f"{r['decided_alerts']} of {r['accepted']} ({r['running']} still running)"
                 f"\n    failed steps (playbook/step): {counts(r['failed_steps']) or 'none'}"
                 "\n    steps by action, count x mean ms (with the wait for one of `workers` call slots): "
                 + ", ".join(f"{a} {n:.0f} x {mean * 1000:.0f}" for a, (n, mean)
                             in sorted(r["calls"].items(), key=lambda kv: -kv[1][0] * kv[1][1])))
    return text


# --- the run ---------------------------------------------------------------------------------

def startup_line(up: float, cold: float, loaded: int, cpu: float) -> str:
    return (f"start-up to ready, {loaded} playbooks in 1000 files: {up:.2f} s (floor < 0.5 s; "
            f"{cpu:.2f} s of CPU; without the parse cache {cold:.2f} s; load average "
            f"{os.getloadavg()[0]:.1f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one storm per store, no soak")
    parser.add_argument("--alerts", type=int, default=20_000, help="alerts per storm")
    parser.add_argument("--soak", type=int, default=100_000, help="alerts in the RSS soak (full)")
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--no-sqlite", action="store_true",
                        help="storms on PostgreSQL only (with the bare handler's, its ratios' base)")
    parser.add_argument("--no-live", action="store_true", help="dry-run storms only")
    parser.add_argument("--live-postgres", action="store_true",
                        help="with --quick: a live storm on PostgreSQL too (the full run has it)")
    parser.add_argument("--drain-timeout", type=float, default=1800.0,
                        help="seconds a storm may take to drain before it is reported unfinished")
    parser.add_argument("--only", choices=["startup", "storms"],
                        help="measure start-up only, or the storms only (no soak, start-up, lint "
                             "or matching)")
    parser.add_argument("--rounds", type=int, help="storms per store (default 3, --quick 1)")
    parser.add_argument("--compare-loops", action="store_true",
                        help="each dry-run storm on asyncio's own loop too (REMEDIATOR_EVENT_LOOP="
                             "asyncio), alternated with the default's, and the bare handler on "
                             "uvloop beside the baseline's asyncio")
    args = parser.parse_args()
    # Stopped by SIGTERM, or by SIGINT when started in the background (which ignores it), the
    # bench still stops what it started: the servers, the peers, the PostgreSQL cluster.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    rounds = args.rounds or (1 if args.quick else 3)
    if args.only == "startup":
        print(startup_line(*startup(Path(tempfile.mkdtemp(prefix="remediator-storm-")), 5)))
        return
    ensure_wrk()
    tmp = Path(tempfile.mkdtemp(prefix="remediator-storm-"))
    labels = alert_label_sets()
    script = tmp / "storm.lua"
    script.write_text(lua_script(labels))
    bare_port = free_port()
    bare = start([sys.executable, str(ROOT / "bench" / "bare_server.py"), str(bare_port)], bare_port)
    # Dry-run calls no peer: the production config with every peer at the bare handler.
    bare_url = f"http://127.0.0.1:{bare_port}"
    dry_config = production_config(tmp / "config.yaml", bare_url, bare_url, tmp / "escalations")
    dry_env = {**os.environ, "REMEDIATOR_WEBHOOK_TOKEN": TOKEN}
    pg = peers = None
    if not args.no_postgres:
        from tests.support.postgres import PostgresCluster
        pg = PostgresCluster().init()
    rows: list[dict[str, Any]] = []
    peer_seconds: list[float] = []
    try:
        run_wrk(script, bare_port, 2000, "warm")
        cpu0 = cpu_seconds(bare.pid)
        bare_runs = [run_wrk(script, bare_port, args.alerts // PER_REQUEST, f"b{i}")
                     for i in range(rounds)]
        bare_cpu = (cpu_seconds(bare.pid) - cpu0) / sum(r["seconds"] for r in bare_runs)
        wrk_cpu = sum(r["wrk_cpu"] for r in bare_runs) / sum(r["seconds"] for r in bare_runs)
        bare_rps = statistics.median(r["requests"] / r["seconds"] for r in bare_runs)
        b = bare_runs[len(bare_runs) // 2]
        bare_rss = peak_rss_mb(bare.pid)
        if args.compare_loops:  # the same handler on uvloop: what the loop alone is worth
            uv_port = free_port()
            uv = start([sys.executable, str(ROOT / "bench" / "bare_server.py"), str(uv_port),
                        "uvloop"], uv_port)
            try:
                run_wrk(script, uv_port, 2000, "warm")
                uv_runs = [run_wrk(script, uv_port, args.alerts // PER_REQUEST, f"u{i}")
                           for i in range(rounds)]
            finally:
                uv.terminate()
                uv.wait(30)
            uv_rps = statistics.median(r["requests"] / r["seconds"] for r in uv_runs)
        setups = [] if args.no_sqlite else [("SQLite", lambda i: f"sqlite:///{tmp}/storm{i}.db")]
        if pg is not None:
            setups.append(("PostgreSQL", lambda i: pg.create_database()))

        def live_storm(name: str, store: str) -> dict[str, Any]:
            nonlocal peers
            peers = peers or LivePeers(tmp / "peers")
            stack, seconds = peers.fresh()
            peer_seconds.append(seconds)
            try:
                return storm(name, store, pg, tmp, script, args.alerts, bare_rps,
                             live_config(stack, tmp / "live.yaml"), peers.env(), live=True,
                             drain_timeout=args.drain_timeout)
            finally:
                peers.stop_stack()  # idle peers must not weigh on the next storm

        def dry_storm(name: str, store: str) -> dict[str, Any]:
            return storm(name, store, pg, tmp, script, args.alerts, bare_rps, dry_config,
                         dry_env, drain_timeout=args.drain_timeout)

        def asyncio_storm(name: str, store: str) -> dict[str, Any]:
            return storm(name, store, pg, tmp, script, args.alerts, bare_rps, dry_config,
                         {**dry_env, "REMEDIATOR_EVENT_LOOP": "asyncio"},
                         drain_timeout=args.drain_timeout)

        plan = [("dry-run", dry_storm, *setup) for setup in setups]
        if args.compare_loops:  # each round of the two alternated, in the same minutes
            plan = [step for setup in setups for step in (
                ("dry-run", dry_storm, *setup), ("dry-run, asyncio", asyncio_storm, *setup))]
        if not args.no_live:  # a live storm takes minutes to drain: --quick runs one
            live_setups = setups if args.live_postgres or not args.quick else setups[:1]
            plan += [("live", live_storm, *setup) for setup in live_setups]
        done: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for i in range(rounds if args.compare_loops else 1):  # alternated round by round
            for mode, run, name, store in plan:
                these = range(i, i + 1) if args.compare_loops else range(rounds)
                done.setdefault((mode, name), []).extend(
                    run(f"{name}, {mode}", store(f"{mode}{j}".replace(", ", "-")))
                    for j in these)
        for (mode, name), runs in done.items():
            runs.sort(key=lambda r: r["rps"])
            rows.append(runs[len(runs) // 2])
            print(f"{name}, {mode}: " + ", ".join(f"{r['rps']:.0f} req/s p99 {r['p99']:.1f} ms "
                                                  f"{r['e2e']:.0f} decisions/s "
                                                  f"{r['bytes_per_decision']:.0f} B/decision"
                                                  for r in runs), flush=True)
        if not args.quick and args.only != "storms":
            soak = storm("SQLite soak", f"sqlite:///{tmp}/soak.db", pg, tmp, script, args.soak,
                         bare_rps, dry_config, dry_env, drain_timeout=args.drain_timeout)
            rows.append({**soak, "name": f"SQLite, {args.soak} alerts"})
        if args.only != "storms":
            up = startup(tmp, rounds)
            lint = lint_time(tmp, rounds)
            match = matching(tmp, labels)
    finally:
        bare.terminate()
        bare.wait(30)
        if peers is not None:
            peers.stop()
        if pg is not None:
            pg.destroy()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nstorm: {args.alerts} alerts, wrk 1 thread 8 connections, {PER_REQUEST} alerts/request, "
          f"{len(labels)} label sets of the five systems, 10 % duplicates, 10 % resolutions; "
          f"shipped rules and config, log level info; {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}; median of {rounds}")
    print(f"{'':24}{'req/s':>8}{'alerts/s':>10}{'x bare':>8}{'p50 ms':>8}{'p99 ms':>8}"
          f"{'decisions/s':>13}{'x bare':>8}{'drain s':>9}{'RSS MB':>8}{'B/decision':>11}"
          f"{'log B/dec':>10}")
    print(f"{'bare aiohttp handler':24}{bare_rps:8.0f}{bare_rps * PER_REQUEST:10.0f}{1:8.2f}"
          f"{b['p50_us'] / 1000:8.2f}{b['p99_us'] / 1000:8.2f}{'-':>13}{'-':>8}{'-':>9}"
          f"{bare_rss:8.0f}")
    if args.compare_loops:
        u = uv_runs[len(uv_runs) // 2]
        print(f"{'bare handler, uvloop':24}{uv_rps:8.0f}{uv_rps * PER_REQUEST:10.0f}"
              f"{uv_rps / bare_rps:8.2f}{u['p50_us'] / 1000:8.2f}{u['p99_us'] / 1000:8.2f}")
    for r in rows:
        print(f"{r['name']:24}{r['rps']:8.0f}{r['alerts_s']:10.0f}{r['ratio']:8.2f}{r['p50']:8.2f}"
              f"{r['p99']:8.2f}{r['e2e']:13.0f}{r['e2e_ratio']:8.2f}{drained(r):>9}{r['rss']:8.0f}"
              f"{r['bytes_per_decision']:11.0f}{r['log_bytes_per_decision']:10.0f}")
    print(f"wrk is not the bottleneck: the bare handler used {bare_cpu:.0%} of a core "
          f"({bare_cpu / bare_rps * 1e6:.0f} us of CPU per request), wrk {wrk_cpu:.0%}")
    for r in rows:
        print(what_decisions_did(r))
    if peer_seconds:
        print(f"live peers (bench/live_peers.py) started in {statistics.median(peer_seconds):.0f} s "
              "each, outside the measured storms")
    if args.only != "storms":
        print(startup_line(*up))
        print(f"lint (validate_paths) of 1000 files: {lint:.2f} s (floor < 1 s)")
        print("matching, microseconds per alert: " + ", ".join(
            f"{n} playbooks {us:.1f}" for n, us in match.items()) + " (floor: flat)")
    print("floors: intake >= 0.5 x bare, p99 ack < 10 ms, end to end >= 0.3 x bare, "
          "RSS < 100 MB after 100 000 alerts, <= 1 KB per routine decision")


if __name__ == "__main__":
    main()
