"""A recording HTTP endpoint that stands in for a webhook consumer.

Used to observe what Alertmanager actually sends (payload, headers, timing)
without depending on the remediator's server being correct.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from tests.support.procs import LOCALHOST, serve_http


@dataclass
class Delivery:
    path: str
    headers: dict[str, str]
    body: Any  # decoded JSON, or the raw text if not JSON
    received_at: float  # time.monotonic()


class WebhookReceiver:
    """Records every POST on 127.0.0.1:<ephemeral port>; answers `status` (200)."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        # Called with each delivery before it is answered (e.g. to crash the sender mid-call).
        self.on_post: Callable[[Delivery], None] | None = None
        self.deliveries: list[Delivery] = []
        self._cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body: Any = json.loads(raw)
                except ValueError:
                    body = raw.decode(errors="replace")
                with receiver._cond:
                    receiver.deliveries.append(
                        Delivery(self.path, dict(self.headers.items()), body, time.monotonic())
                    )
                    receiver._cond.notify_all()
                if receiver.on_post is not None:
                    receiver.on_post(receiver.deliveries[-1])
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:  # keep pytest output clean
                pass

        # Bound (and so its port known) now; serving from the moment it is created.
        self._server, self.port = serve_http(Handler)

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}/alerts"

    def start(self) -> WebhookReceiver:
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def wait_for(
        self, predicate: Callable[[Delivery], bool] = lambda d: True, timeout: float = 10.0
    ) -> Delivery:
        """Block until a delivery matching `predicate` has arrived; return the first such."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for delivery in self.deliveries:
                    if predicate(delivery):
                        return delivery
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"no matching webhook within {timeout}s; got {len(self.deliveries)}: "
                        f"{[d.body for d in self.deliveries]}"
                    )
                self._cond.wait(remaining)


@pytest.fixture
def webhook_receiver() -> Iterator[WebhookReceiver]:
    """A started `WebhookReceiver`, shut down after the test."""
    receiver = WebhookReceiver().start()
    try:
        yield receiver
    finally:
        receiver.stop()
