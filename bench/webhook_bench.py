"""Webhook intake benchmark: `remediator serve` (dry-run, SQLite) vs a bare aiohttp handler.

Both servers run as separate processes on loopback and get the same realistic traffic
(Alertmanager-shaped notifications, 2 alerts each, unique fingerprints) from 8 concurrent
connections. Prints alerts/s, p50/p99 acknowledgement latency and peak RSS side by side, and
the ratios. Usage: python bench/webhook_bench.py [--alerts 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.payloads import alert, notification  # noqa: E402
from tests.support.worker import TOKEN, free_port  # noqa: E402

CONCURRENCY = 8
PER_REQUEST = 2
ALERTNAMES = ["CodeForgeS3UploadFailureHigh", "DeltaCrownCertS3ReadFallbackHigh", "LiberviaApiDown",
              "HackathonHighErrorRate", "ThreeDPotHigh5xxRate", "NodeFilesystemAlmostFull"]


def payloads(count: int, tag: str) -> list[bytes]:
    out = []
    for i in range(0, count, PER_REQUEST):
        alerts = [alert(ALERTNAMES[(i + j) % len(ALERTNAMES)], fingerprint=f"{tag}-{i + j}",
                        namespace="neural-hive-pipeline", deployment=f"svc-{(i + j) % 50}",
                        pod=f"svc-{(i + j) % 50}-7d9f8c6b5-x{(i + j) % 997}", severity="critical")
                  for j in range(PER_REQUEST)]
        out.append(json.dumps(notification(*alerts)).encode())
    return out


def start(args: list[str], port: int, env: dict[str, str] | None = None) -> subprocess.Popen:
    proc = subprocess.Popen(args, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            import urllib.request
            urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=1)
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"server did not start: {args}")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def drive(url: str, bodies: list[bytes]) -> tuple[float, list[float]]:
    latencies: list[float] = []
    queue = iter(bodies)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}

    async def worker(session: aiohttp.ClientSession) -> None:
        for body in queue:
            t0 = time.perf_counter()
            async with session.post(url, data=body, headers=headers) as resp:
                await resp.read()
                if resp.status != 202:
                    raise SystemExit(f"unexpected {resp.status} from {url}")
            latencies.append(time.perf_counter() - t0)

    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(CONCURRENCY)))
        return time.perf_counter() - started, latencies


def measure(url: str, alerts: int, tag: str) -> dict[str, float]:
    elapsed, lat = asyncio.run(drive(url, payloads(alerts, tag)))
    lat.sort()
    return {"alerts_per_s": alerts / elapsed, "p50_ms": lat[len(lat) // 2] * 1000,
            "p99_ms": lat[int(len(lat) * 0.99)] * 1000}


def median_of(rounds: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--alerts", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="remediator-bench-"))
    (tmp / "rules").mkdir()
    (tmp / "rules" / "bench.yaml").write_text(
        "playbooks:\n  - name: bench-log\n    match: {alertname: CodeForgeS3UploadFailureHigh}\n"
        "    steps:\n      - {name: note, action: log, params: {message: '{{ labels.deployment }}'}}\n")
    bare_port, rem_port = free_port(), free_port()
    bare = start([sys.executable, str(ROOT / "bench" / "bare_server.py"), str(bare_port)], bare_port)
    rem = start([sys.executable, "-m", "remediator.cli", "serve", "--listen", f"127.0.0.1:{rem_port}",
                 "--store", f"sqlite:///{tmp}/bench.db", "--rules", str(tmp / "rules")], rem_port,
                {"REMEDIATOR_WEBHOOK_TOKEN": TOKEN, "REMEDIATOR_LOG_LEVEL": "warning"})
    # The machine is shared and noisy: alternate the two servers round by round so both see
    # the same conditions, and report medians (every round is printed too).
    per_round = args.alerts // args.rounds
    bare_url, rem_url = f"http://127.0.0.1:{bare_port}/alerts", f"http://127.0.0.1:{rem_port}/alerts"
    rounds: dict[str, list[dict[str, float]]] = {"bare": [], "rem": []}
    try:
        for url, tag in ((bare_url, "warm-b"), (rem_url, "warm-r")):
            asyncio.run(drive(url, payloads(2000, tag)))  # warm-up, not counted
        for i in range(args.rounds):
            rounds["bare"].append(measure(bare_url, per_round, f"b{i}"))
            rounds["rem"].append(measure(rem_url, per_round, f"r{i}"))
            print(f"round {i + 1}: bare {rounds['bare'][-1]['alerts_per_s']:7.0f} alerts/s, "
                  f"remediator {rounds['rem'][-1]['alerts_per_s']:7.0f} alerts/s "
                  f"(p99 {rounds['rem'][-1]['p99_ms']:.2f} ms)")
        rss = {"bare": peak_rss_mb(bare.pid), "rem": peak_rss_mb(rem.pid)}
    finally:
        for p in (bare, rem):
            p.terminate()
            p.wait(30)
    base, ours = median_of(rounds["bare"]), median_of(rounds["rem"])
    print(f"\nwebhook intake: {args.alerts} alerts in {args.rounds} alternating rounds, "
          f"{PER_REQUEST} alerts per request, {CONCURRENCY} connections; medians")
    print(f"{'':38} {'alerts/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'peak RSS MB':>12}")
    for name, r, key in (("bare aiohttp (parse only)", base, "bare"),
                         ("remediator serve (dry-run, SQLite)", ours, "rem")):
        print(f"{name:38} {r['alerts_per_s']:10.0f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} "
              f"{rss[key]:12.1f}")
    print(f"ratio remediator/bare: throughput {ours['alerts_per_s'] / base['alerts_per_s']:.2f} "
          f"(floor 0.50); p99 ack {ours['p99_ms']:.2f} ms (floor < 10); "
          f"peak RSS {rss['rem']:.0f} MB after {args.alerts} alerts (floor < 100)")


if __name__ == "__main__":
    main()
