"""Intake's CPU per webhook: `remediator serve` with processing off and on, beside the bare
handler, on bench/storm.lua's traffic (wrk, 1 thread, 8 connections, 2 alerts per request).

Busy machines make throughput noisy; the server's CPU time per request is far less so. Each
round runs every target once, in turn, so checkouts compared with --code meet the same load:

    python bench/intake_bench.py --code new=. --code old=../old --rounds 4
    python bench/intake_bench.py --profile intake.prof   # cProfile of intake alone
    python bench/intake_bench.py --handler --code new=. --code old=../old   # in process
    python bench/intake_bench.py --handler --postgres ...   # on PostgreSQL (a new cluster)

`--handler` runs bench/intake_handler.py instead: the app's handler chain in process (no HTTP,
no network, 4 webhooks per commit), the loop thread's CPU per webhook; far steadier than a
server's on a shared machine, and all of what intake adds to the bare handler.

`intake` is `remediator serve` (dry-run, SQLite, the shipped rules and production config,
log level info) whose dispatcher never claims (bench/intake_server.py); `storm` is the same
server as shipped, processing while it answers (what bench/storm_bench.py measures). A
server is stopped once wrk is done: the storm's backlog is not drained here.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
SERVER = os.environ.get("INTAKE_SERVER", str(ROOT / "bench" / "intake_server.py"))

from live_peers import production_config  # noqa: E402
from storm_bench import (  # noqa: E402
    PER_REQUEST,
    alert_label_sets,
    cpu_seconds,
    lua_script,
    run_wrk,
    start_wait,
)
from webhook_bench import start  # noqa: E402

from tests.support.worker import TOKEN, free_port  # noqa: E402


def measure(proc: subprocess.Popen, script: Path, port: int, requests: int, tag: str
            ) -> tuple[float, float]:
    """(requests/s, server CPU us per request) of one wrk run."""
    cpu0 = cpu_seconds(proc.pid)
    w = run_wrk(script, port, requests, tag)
    return w["requests"] / w["seconds"], (cpu_seconds(proc.pid) - cpu0) / w["requests"] * 1e6


def serve(code: str, tmp: Path, config: Path, script: Path, requests: int, intake_only: bool,
          profile: str | None = None) -> tuple[float, float]:
    port = free_port()
    code, *settings = code.split(",")  # DIR[,VAR=VALUE...]: a checkout, and its environment
    env = {**os.environ, "REMEDIATOR_WEBHOOK_TOKEN": TOKEN, "REMEDIATOR_LOG_LEVEL": "info",
           "PYTHONPATH": str(Path(code).resolve()), **dict(s.split("=", 1) for s in settings)}
    if intake_only:
        env["INTAKE_ONLY"] = "1"
    if profile:
        env["PROFILE"] = profile
    with (tmp / "serve.log").open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, SERVER, "serve", "--listen",
             f"127.0.0.1:{port}", "--store", f"sqlite:///{tmp}/{time.time_ns()}.db",
             "--rules", str(Path(code) / "rules"), "--config", str(config)],
            env=env, stdout=log, stderr=log)
        try:
            start_wait(port, proc)
            run_wrk(script, port, 200, f"w{time.time_ns()}")  # first requests: imports, refs
            return measure(proc, script, port, requests, f"m{time.time_ns()}")
        finally:
            proc.terminate()
            proc.wait(120)


def handler(codes: list[tuple[str, str]], tmp: Path, rounds: int, postgres: bool) -> None:
    (tmp / "labels.json").write_text(json.dumps(alert_label_sets()))
    url = "http://127.0.0.1:9"  # dry-run: no peer is called
    config = production_config(tmp / "config.yaml", url, url, tmp / "escalations")
    runs: dict[str, list[float]] = {}
    cluster = None
    if postgres:
        from tests.support.postgres import PostgresCluster
        cluster = PostgresCluster().init()
    try:
        for i in range(rounds):
            for name, code in codes:
                store = [cluster.create_database()] if cluster else []  # each run a new one
                out = subprocess.run(
                    [sys.executable, str(ROOT / "bench" / "intake_handler.py"),
                     str(tmp / "labels.json"), str(config), str(Path(code) / "rules"), "5", *store],
                    capture_output=True, text=True,
                    env={**os.environ, "PYTHONPATH": str(Path(code).resolve())})
                if out.returncode:
                    raise SystemExit(out.stderr)
                runs.setdefault(name, []).append(min(json.loads(out.stdout)))  # steadiest batch
            print(f"round {i + 1}: " + ", ".join(f"{k} {v[-1]:.0f} us" for k, v in runs.items()),
                  flush=True)
    finally:
        if cluster is not None:
            cluster.destroy()
    print(f"\nthe handler chain in process on {'PostgreSQL' if postgres else 'SQLite'}, the loop "
          f"thread's CPU per webhook (least of 5 batches of 2 000 per run), median of {rounds} "
          f"runs; load average {os.getloadavg()[0]:.1f}")
    for name, us in runs.items():
        print(f"{name:16}{statistics.median(us):8.0f} us")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--code", action="append", default=[], metavar="NAME=DIR",
                        help="a checkout to measure (default: this one); DIR,VAR=VALUE,... sets "
                        "variables in its server's environment")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--no-storm", action="store_true", help="intake alone only")
    parser.add_argument("--bare-uvloop", action="store_true",
                        help="the bare handler on uvloop too, each round (the baseline is on "
                             "asyncio's loop)")
    parser.add_argument("--profile", metavar="OUT", help="profile intake alone once, then stop")
    parser.add_argument("--handler", action="store_true",
                        help="the handler chain in process (bench/intake_handler.py), per checkout")
    parser.add_argument("--postgres", action="store_true",
                        help="with --handler: on PostgreSQL (a throwaway cluster) instead of SQLite")
    args = parser.parse_args()
    codes = [(c.split("=", 1)[0], c.split("=", 1)[1]) for c in args.code] or [("this", str(ROOT))]
    tmp = Path(tempfile.mkdtemp(prefix="remediator-intake-"))
    if args.handler:
        handler(codes, tmp, args.rounds, args.postgres)
        return
    script = tmp / "storm.lua"
    script.write_text(lua_script(alert_label_sets()))
    bare_port = free_port()
    bare = start([sys.executable, str(ROOT / "bench" / "bare_server.py"), str(bare_port)],
                 bare_port)
    url = f"http://127.0.0.1:{bare_port}"
    uv_port = free_port()
    uv = start([sys.executable, str(ROOT / "bench" / "bare_server.py"), str(uv_port), "uvloop"],
               uv_port) if args.bare_uvloop else None
    config = production_config(tmp / "config.yaml", url, url, tmp / "escalations")
    results: dict[str, list[tuple[float, float]]] = {}
    try:
        if args.profile:
            rps, cpu = serve(codes[0][1], tmp, config, script, args.requests, True, args.profile)
            print(f"intake alone, profiled: {rps:.0f} req/s, {cpu:.0f} us CPU per request")
            return
        run_wrk(script, bare_port, 2000, "warm")
        for i in range(args.rounds):
            results.setdefault("bare", []).append(
                measure(bare, script, bare_port, args.requests, f"b{i}{time.time_ns()}"))
            if uv is not None:
                results.setdefault("bare uvloop", []).append(
                    measure(uv, script, uv_port, args.requests, f"u{i}{time.time_ns()}"))
            for name, code in codes:
                for kind in ("intake", *(() if args.no_storm else ("storm",))):
                    results.setdefault(f"{name} {kind}", []).append(serve(
                        code, tmp, config, script, args.requests, kind == "intake"))
            print(f"round {i + 1}: " + ", ".join(f"{k} {v[-1][0]:.0f} req/s {v[-1][1]:.0f} us"
                                                 for k, v in results.items()), flush=True)
    finally:
        for server in (bare, uv):
            if server is not None:
                server.terminate()
                server.wait(30)
    # Each run's ratio is to the bare handler's run of the same round: the machine's speed
    # changes from minute to minute.
    bare = [r for r, _ in results["bare"]]
    print(f"\n{args.requests} requests of {PER_REQUEST} alerts per run, median of {args.rounds}; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print(f"{'':16}{'req/s':>8}{'x bare':>8}{'CPU us/req':>12}")
    for name, runs in results.items():
        ratio = statistics.median(r / b for (r, _), b in zip(runs, bare, strict=True))
        print(f"{name:16}{statistics.median(r for r, _ in runs):8.0f}{ratio:8.2f}"
              f"{statistics.median(c for _, c in runs):12.0f}")


if __name__ == "__main__":
    main()
