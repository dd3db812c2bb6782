"""Console benchmark: the decisions list with 1 000 decisions in the store.

Fills a SQLite store with 1 000 replayed decisions (the demo playbook, dry-run), serves the
real app in-process, logs in as a viewer, and times GET /ui/ (the list: the newest 1 000)
and one decision page over loopback. Prints the page weight (raw and gzip) and the server
time (median and p95 of sequential requests). Usage: python bench/console_bench.py [--rounds 20]
"""

from __future__ import annotations

import argparse
import gzip
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from remediator.config import Config  # noqa: E402
from tests.conftest import DEMO_RULES, write_rules  # noqa: E402
from tests.support.payloads import alert, notification  # noqa: E402
from tests.support.worker import OPERATORS, TOKEN, VIEWER_TOKEN, InProcessWorker  # noqa: E402

DECISIONS = 1000


def timed(session: requests.Session, url: str, rounds: int) -> tuple[list[float], bytes]:
    times, body = [], b""
    for _ in range(rounds):
        started = time.perf_counter()
        response = session.get(url)
        times.append(time.perf_counter() - started)
        assert response.status_code == 200, response.status_code
        body = response.content
    return times, body


def report(name: str, times: list[float], body: bytes, static: int = 0) -> None:
    times = sorted(times)
    p95 = times[min(len(times) - 1, int(len(times) * 0.95))]
    extra = f" (+ {static / 1024:.1f} KiB CSS+JS, cached)" if static else ""
    print(f"{name}: {len(body) / 1024:.0f} KiB HTML, {len(gzip.compress(body)) / 1024:.0f} KiB "
          f"gzipped{extra}; server time median {statistics.median(times) * 1000:.0f} ms, "
          f"p95 {p95 * 1000:.0f} ms over {len(times)} requests")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rules = write_rules(Path(tmp) / "rules", DEMO_RULES)
        cfg = Config(rules=[str(rules)], store=f"sqlite:///{tmp}/bench.db", webhook_token=TOKEN,
                     escalation_dir=f"{tmp}/escalations", operators=list(OPERATORS))
        worker = InProcessWorker(cfg).start()
        try:
            for start in range(0, DECISIONS, 100):
                worker.post_alerts(notification(*(
                    alert("DemoDown", namespace="demo", deployment=f"web-{i % 40}",
                          fingerprint=f"bench-{i}") for i in range(start, start + 100))))
            found = worker.wait_executions(DECISIONS, timeout=600)
            assert len(found) >= DECISIONS, len(found)
            session = requests.Session()
            session.post(f"{worker.url}/ui/login", data={"name": "victor", "password": VIEWER_TOKEN})
            page = session.get(f"{worker.url}/ui/").text
            static = sum(len(session.get(f"{worker.url}{path}").content) for path in
                         ("/ui/static/console.css", "/ui/static/console.js"))
            assert page.count("<tr data-id=") == DECISIONS
            times, body = timed(session, f"{worker.url}/ui/", args.rounds)
            report(f"decisions list ({DECISIONS} decisions)", times, body, static)
            times, body = timed(session, f"{worker.url}/ui/executions/{found[0]['id']}", args.rounds)
            report("one decision page", times, body)
        finally:
            worker.stop()


if __name__ == "__main__":
    main()
