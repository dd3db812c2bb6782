"""The webhook under 10 000 generated bodies (seeded, so a failure reproduces): valid
notifications, valid ones with their structure, types, sizes and encodings broken, garbage, and
other content types. None may get a 5xx or take the server down, and every alert acknowledged
with 202 must be in the store."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections import Counter
from typing import Any

import aiohttp

from remediator.alerts import parse_notification
from tests.support.payloads import alert, notification
from tests.support.worker import TOKEN, http

BODIES = 10_000
SEED = 20261129
MAX_BODY = 64 << 10  # small, so 413s are cheap to provoke
JSON = "application/json"
OTHER_TYPES = ("text/plain", "", "application/x-www-form-urlencoded", "application/JSON",
               "multipart/form-data; boundary=x", "application/json; charset=latin-1")
TEXTS = ("web", "", " ", "é", "\u202e", "\x00", "\ud800", "\U0001f525", "{{ 7*7 }}", "../x",
         "a\nb", '"', "\\", "\ufeff", "\uffff")


class Fuzzer:
    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.serial = 0

    def text(self) -> str:
        r = self.rng
        text = "".join(r.choice(TEXTS) for _ in range(r.randint(1, 4)))
        return text * r.choice((1, 1, 1, 1, 1, 1, 1, 10, 3000))  # now and then beyond 8 KiB

    def value(self, depth: int = 0) -> Any:
        r = self.rng
        makers = [lambda: None, lambda: True, lambda: r.randint(-9, 9), r.random, self.text,
                  lambda: 10 ** r.choice((3, 20, 4000)), lambda: "x" * r.choice((10, 10, 9000)),
                  lambda: r.choice((float("nan"), float("inf")))]
        if depth < 3:
            makers += [lambda: [self.value(depth + 1) for _ in range(r.randint(0, 3))],
                       lambda: {self.text(): self.value(depth + 1) for _ in range(r.randint(0, 3))}]
        return r.choice(makers)()

    def valid(self) -> dict:
        r = self.rng
        alerts = []
        for _ in range(r.randint(1, 3)):
            self.serial += 1
            labels = {f"l{i}": r.choice(("web", "é\U0001f525", "a b", "x" * 200, "{{ x }}"))
                      for i in range(r.randint(0, 3))}
            alerts.append(alert(r.choice(("DemoDown", "Other")), fingerprint=f"fz{self.serial}",
                                status=r.choice(("firing", "resolved")), namespace="demo",
                                deployment=r.choice(("web", "api")), **labels))
        return notification(*alerts)

    def mutate(self, data: Any) -> Any:
        """One random change somewhere in the tree: a value replaced, a key dropped or added."""
        r = self.rng
        node, path = data, []
        while isinstance(node, dict | list) and node and r.random() < 0.7:
            key = r.choice(list(node)) if isinstance(node, dict) else r.randrange(len(node))
            path.append((node, key))
            node = node[key]
        if not path:
            return self.value()
        parent, key = path[-1]
        action = r.randrange(3)
        if action == 0 or isinstance(parent, list):
            parent[key] = self.value()
        elif action == 1:
            del parent[key]
        else:
            parent[self.text()] = self.value()
        return data

    def corrupt(self, raw: bytes) -> bytes:
        r = self.rng
        choice = r.randrange(6)
        if choice == 0:
            return raw[: r.randrange(len(raw))]
        if choice == 1:
            i = r.randrange(len(raw))
            return raw[:i] + bytes([r.randrange(256)]) + raw[i + 1:]
        if choice == 2:
            return raw.decode().encode(r.choice(("utf-16", "utf-32", "utf-8-sig")))
        if choice == 3:
            return raw.replace(b'"web"', b'"w\xe9b"')  # latin-1, not UTF-8
        if choice == 4 and r.random() < 0.5:  # beyond Python's digit limit for int()
            return raw.replace(b'"truncatedAlerts": 0', b'"truncatedAlerts": ' + b"7" * 5000)
        if choice == 4:
            return raw + b"x" * r.choice((0, MAX_BODY))
        return raw.replace(b'"4"', b"4")

    def garbage(self) -> bytes:
        r = self.rng
        return r.choice((b"", b"null", b"[]", b"{}", b"[" * 100_000, b"1" * 5000, b"NaN",
                         b'{"version": "4", "alerts": [' + b"{}," * 50 + b"{}]}",
                         bytes(r.randrange(256) for _ in range(r.randrange(1, 200)))))

    def body(self) -> tuple[bytes, str, bool]:
        """(body, content type, is it a known-valid notification)."""
        r = self.rng
        kind = r.random()
        if kind < 0.3:
            return json.dumps(self.valid()).encode(), r.choice((JSON, JSON + "; charset=utf-8")), True
        if kind < 0.65:
            data = self.valid()
            for _ in range(r.randint(1, 3)):
                data = self.mutate(data)
            return json.dumps(data).encode(), JSON, False
        if kind < 0.85:
            return self.corrupt(json.dumps(self.valid()).encode()), JSON, False
        if kind < 0.95:
            return self.garbage(), JSON, False
        return json.dumps(self.valid()).encode(), r.choice(OTHER_TYPES), False


async def _post_all(url: str, bodies: list[tuple[bytes, str, bool]]) -> list[tuple[int, Any]]:
    limit = asyncio.Semaphore(8)
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as session:
        async def post(body: bytes, content_type: str) -> tuple[int, Any]:
            headers = {"Content-Type": content_type} if content_type else {}
            async with limit, session.post(url, data=body, headers=headers) as resp:
                return resp.status, await resp.read()
        return await asyncio.gather(*(post(b, t) for b, t, _ in bodies))


def test_ten_thousand_generated_bodies_no_5xx_no_crash_nothing_valid_lost(worker_factory, caplog):
    caplog.set_level(logging.ERROR)
    w = worker_factory(max_body_bytes=MAX_BODY)
    fuzzer = Fuzzer(SEED)
    bodies = [fuzzer.body() for _ in range(BODIES)]
    started = time.monotonic()
    answers = asyncio.new_event_loop().run_until_complete(_post_all(f"{w.url}/alerts", bodies))
    elapsed = time.monotonic() - started
    statuses = Counter(status for status, _ in answers)
    assert set(statuses) <= {202, 400, 413, 415}, statuses
    acknowledged: set[str] = set()
    for (body, _, valid), (status, answer) in zip(bodies, answers, strict=True):
        assert status == 202 or not valid, (body[:200], answer[:200])
        if status == 202:
            acknowledged.update(a.dedupe_key for a in parse_notification(body).alerts)
        else:
            assert json.loads(answer)["error"]  # a clear message, never an empty 4xx
    assert statuses[202] >= 3000 and statuses[400] >= 3000 and statuses[413] and statuses[415]
    # nothing acknowledged is lost: every alert is in the store and gets processed
    missing = [k for k in acknowledged if not w.call(w.service.store.received(k))]
    assert not missing, missing[:5]
    w.wait_idle(timeout=120)
    assert w.call(w.service.store.pending_count()) == 0
    assert http("GET", f"{w.url}/-/healthy")[0] == 200
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.records[:3]
    print(f"\nfuzz: {BODIES} bodies in {elapsed:.1f}s, {dict(statuses)}, "
          f"{len(acknowledged)} alerts acknowledged")
