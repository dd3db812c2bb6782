"""The listening socket of `serve`, with a cap on the connections open at once.

Connections opened faster than `idle_timeout` closes them filled the process's file
descriptor table, and then the store, the actions and the escalations could open nothing.
aiohttp has no cap of its own (its maintainers leave it to a proxy in front,
aio-libs/aiohttp#675); `BaseSite` is its way to listen otherwise, and the runner's server is
the protocol factory every site hands to asyncio. Past the cap a new connection is answered
503 with `Retry-After` (Alertmanager retries it) and closed at once; a connection already
open is never touched, so neither is a request under way nor an alert being acknowledged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import time
from typing import cast

from aiohttp import web
from prometheus_client import Counter

log = logging.getLogger("remediator")

# `max_connections: 0` with no descriptor limit: this many.
UNLIMITED = 1 << 20


def connection_limit(configured: int) -> int:
    """`configured`, or for 0 half the process's file descriptor limit (the other half for
    the store, the actions' and escalations' connections, files). No lower bound of our own:
    past the cap `/-/healthy` is answered 503 too, and a kubelet restarts the pod; a flood
    must reach what would otherwise have run the process out of descriptors (a container's
    limit is often 1 048 576), not a few thousand connections."""
    if configured:
        return configured
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return UNLIMITED if soft == resource.RLIM_INFINITY else max(1, soft // 2)


class _Refused(asyncio.Protocol):
    """A connection past the cap: the 503, then closed. Closed with the client's request
    unread, the kernel would reset it, and the client read the reset, not the answer: what
    comes is read and dropped until the client closes, for at most a second, while fewer
    than an eighth of the cap do (a flood's are closed at once: each holds a descriptor)."""

    def __init__(self, site: CappedSite):
        self.site = site
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport, not necessarily asyncio's class: uvloop's TCPTransport is none
        # (an isinstance check raised there, and the connection was reset unanswered).
        transport = cast(asyncio.Transport, transport)
        transport.write(self.site.answer)
        if self.site.lingering >= max(1, self.site.limit // 8):
            transport.close()
            return
        self.site.lingering += 1
        transport.write_eof()  # the answer is all: sent, then our half closed
        self.timer = asyncio.get_running_loop().call_later(1.0, transport.close)

    def data_received(self, data: bytes) -> None:
        pass

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.site.lingering -= 1


class CappedSite(web.BaseSite):
    """A TCP site whose connections are at most `limit`. Descriptors may peak higher by one
    accept batch (asyncio accepts up to the listen backlog, 128, before the first is handed
    a protocol) and the refused ones still being read (at most an eighth of `limit`)."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, limit: int,
                 refused: Counter):
        super().__init__(runner)
        self._host, self._port, self.limit, self._refused = host, port, limit, refused
        self._warned = 0.0
        self.lingering = 0  # refused connections read until their client closes
        # Connections handed to aiohttp in this loop iteration: asyncio calls the protocol
        # factory for a whole accept batch before any of them is in `server.connections`
        # (their connection_made is the next iteration's), and a burst passed the cap by the
        # batch. Counted here until then.
        self._fresh = 0
        body = json.dumps({"error": f"too many connections: max_connections ({limit}) "
                                    "reached; retry"}).encode()
        self.answer = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                        b"Retry-After: 1\r\nConnection: close\r\nContent-Length: "
                        + str(len(body)).encode() + b"\r\n\r\n" + body)

    def bound(self) -> str:
        """HOST:PORT as bound: port 0 asks the kernel for a free one, which this names."""
        assert self._server is not None  # started
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None  # the runner is set up

        loop = asyncio.get_running_loop()

        def settled() -> None:  # runs before this iteration's connection_made callbacks
            self._fresh = 0

        def protocol() -> asyncio.BaseProtocol:
            if len(server.connections) + self._fresh < self.limit:
                if not self._fresh:
                    loop.call_soon(settled)
                self._fresh += 1
                return server()
            self._refused.inc()
            if time.monotonic() - self._warned >= 60:  # a flood is one line a minute
                self._warned = time.monotonic()
                log.warning("max_connections (%d) reached: new connections are answered 503 "
                            "(remediator_connections_refused_total counts them)", self.limit)
            return _Refused(self)

        self._server = await loop.create_server(
            protocol, self._host, self._port, backlog=self._backlog)
