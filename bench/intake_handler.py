"""Intake's handling in process, for bench/intake_bench.py --handler: storm bodies through
the app's handler chain (middlewares, authentication, parse, validation, the store's group
commit) 4 webhooks at a time, without HTTP or the network; prints the loop thread's CPU
per webhook of each batch of 2 000 as JSON. What it leaves out (aiohttp's protocol, the
socket calls, the checkpointer's thread) is what the bare handler pays too.

    PYTHONPATH=<checkout> python bench/intake_handler.py LABELS.json CONFIG.yaml RULES ROUNDS [STORE]

STORE is the store's URL (default: a new SQLite file).

The remediator imported is whichever PYTHONPATH names first: this script imports nothing
of the checkout it lives in.
"""

import asyncio
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from aiohttp import streams
from aiohttp.test_utils import make_mocked_request

from remediator.config import load_config
from remediator.server import build_app
from remediator.service import Service

TOKEN = "intake-handler-token-0123456789"
PER_COMMIT, BATCH = 4, 2000


def _fingerprint(n: int, j: int) -> str:
    """Alertmanager's fingerprint: 16 hex digits of a hash, spread uniformly over the store's
    dedupe index as storm.lua's are (n * 2654435761 below 2**64 ascended with n: every
    commit's keys fell on the same index page, which real traffic never does)."""
    return hashlib.blake2b(f"{n}:{j}".encode(), digest_size=8).hexdigest()


def body(labels: list[dict[str, str]], n: int) -> bytes:
    """bench/storm.lua's request n: 2 alerts of one label set, a fingerprint each."""
    ls = labels[n % len(labels)]
    alerts = [{"status": "firing", "labels": ls, "annotations": {"summary": f"{ls['alertname']} summary"},
               "startsAt": "2026-11-21T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
               "generatorURL": "http://prometheus.example/graph?g0.expr=up",
               "fingerprint": _fingerprint(n, j)} for j in range(2)]
    return json.dumps({"version": "4", "groupKey": '{}:{alertname="bench"}', "truncatedAlerts": 0,
                       "status": "firing", "receiver": "remediator", "groupLabels": {},
                       "commonLabels": {}, "commonAnnotations": {},
                       "externalURL": "http://alertmanager.example:9093", "alerts": alerts},
                      separators=(",", ":")).encode()


class _Protocol:  # what a request body's stream asks of its connection
    _reading_paused = False

    def pause_reading(self, *args: object, **kwargs: object) -> None:
        pass

    def resume_reading(self, *args: object, **kwargs: object) -> None:
        pass


class _Writer:  # the answer goes nowhere: aiohttp's writing is the bare handler's too
    buffer_size = output_size = 0
    length = None
    chunked = False

    def enable_chunking(self) -> None:
        pass

    def enable_compression(self, *args: object, **kwargs: object) -> None:
        pass

    def send_headers(self, *args: object) -> None:
        pass

    def set_eof(self) -> None:
        pass

    async def write_headers(self, *args: object) -> None:
        pass

    async def write(self, *args: object, **kwargs: object) -> None:
        pass

    async def write_eof(self, *args: object) -> None:
        pass

    async def drain(self) -> None:
        pass


async def main() -> None:
    labels = json.loads(Path(sys.argv[1]).read_text())
    os.environ["REMEDIATOR_WEBHOOK_TOKEN"] = TOKEN
    store = sys.argv[5] if len(sys.argv) > 5 else \
        f"sqlite:///{tempfile.mkdtemp(prefix='remediator-handler-')}/intake.db"
    service = Service(load_config(sys.argv[2], rules=[sys.argv[3]], store=store))
    await service.start(dispatch=False)
    app = build_app(service)
    app.freeze()
    loop = asyncio.get_running_loop()
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}

    def request(data: bytes) -> object:
        payload = streams.StreamReader(_Protocol(), 2**16, loop=loop)
        payload.feed_data(data)
        payload.feed_eof()
        return make_mocked_request("POST", "/alerts", app=app, payload=payload, writer=_Writer(),
                                   headers={**headers, "Content-Length": str(len(data))})

    n, out = 0, []
    for _ in range(int(sys.argv[4])):
        # 10 % duplicates (a retry of the previous request), as the storm's
        batch = [request(body(labels, k - 1 if k % 10 == 7 else k)) for k in range(n, n + BATCH)]
        n += BATCH
        started = time.thread_time()
        for i in range(0, BATCH, PER_COMMIT):
            answers = await asyncio.gather(*(app._handle(r) for r in batch[i:i + PER_COMMIT]))
            if any(a.status != 202 for a in answers):
                raise SystemExit(f"answered {[a.status for a in answers]}")
        out.append((time.thread_time() - started) / BATCH * 1e6)
    await service.stop()
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main())
