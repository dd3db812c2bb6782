"""A reverse proxy in front of moto that can inject S3 errors on demand.

moto has no switch to make S3 throttle, yet the remediator's retry/backoff logic
must be tested against real `503 SlowDown` responses parsed by real botocore.
This proxy forwards every request to moto unchanged, except that a test can ask
for the next N requests matching (method, path regex) to get an S3-style XML
error instead.  It runs its own asyncio loop in a thread so sync and async tests
(and code under test in other threads) can all use it.
"""

from __future__ import annotations

import asyncio
import re
import threading
import uuid
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from tests.support.procs import LOCALHOST

# Headers that describe one hop, or that aiohttp recomputes for the re-encoded body.
_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "transfer-encoding",
    "content-length",
    "expect",
}


@dataclass
class Fault:
    """`times` more matching requests get `status`/`code`; None means forever."""

    method: str
    path: re.Pattern[str]
    status: int | None
    code: str
    message: str
    times: int | None
    delay: float = 0.0
    applied: bool = False

    def matches(self, method: str, path: str) -> bool:
        return self.method in ("*", method) and bool(self.path.search(path))


@dataclass
class LoggedRequest:
    method: str
    path: str
    query: str
    status: int
    injected: bool


def error_xml(code: str, message: str, resource: str, request_id: str) -> bytes:
    """The body shape S3 uses for errors, which botocore parses into ClientError."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        f"<Resource>{resource}</Resource><RequestId>{request_id}</RequestId></Error>"
    ).encode()


class S3FaultProxy:
    """Proxy on 127.0.0.1:<ephemeral> forwarding to `upstream` (a moto URL)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.log: list[LoggedRequest] = []
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.port: int | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("proxy not started")
        return f"http://{LOCALHOST}:{self.port}"

    def inject(
        self,
        method: str,
        path_regex: str,
        status: int = 503,
        code: str = "SlowDown",
        times: int | None = 1,
        message: str = "Please reduce your request rate.",
        delay: float = 0.0,
        applied: bool = False,
    ) -> Fault:
        """Fail the next `times` requests whose method and path match.

        `method="*"` matches any method; the regex is `re.search`ed against the
        URL path (e.g. r"^/my-bucket/" or r"\\.tar\\.gz$").  `delay` sleeps first,
        which is handy for client timeout tests.  Faults apply in insertion order.
        `applied=True` forwards the request to moto first (a write lands), then sleeps
        `delay` and answers with `status`, or with moto's own answer when `status` is None:
        a change that is made but answered late or with an error.
        """
        fault = Fault(method.upper(), re.compile(path_regex), status, code, message, times, delay,
                      applied)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def requests(self, method: str | None = None, injected: bool | None = None) -> list[LoggedRequest]:
        """Logged requests, optionally filtered by method and by injected-or-not."""
        with self._lock:
            entries = list(self.log)
        return [
            r
            for r in entries
            if (method is None or r.method == method) and (injected is None or r.injected == injected)
        ]

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(method, path):
                    if fault.times is not None:
                        fault.times -= 1
                        if fault.times <= 0:
                            self._faults.remove(fault)
                    return fault
        return None

    def _record(self, request: web.Request, status: int, injected: bool) -> None:
        with self._lock:
            self.log.append(
                LoggedRequest(request.method, request.path, request.query_string, status, injected)
            )

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        fault = self._take_fault(request.method, request.path)
        if fault is not None and fault.applied:  # logged once, as injected, with moto's status
            resp = await self._forward(request, body, injected=True)
            await asyncio.sleep(fault.delay)
            if fault.status is None:
                return resp
        elif fault is not None and fault.delay:
            await asyncio.sleep(fault.delay)
        if fault is not None and fault.status is not None:
            rid = uuid.uuid4().hex[:16].upper()
            if not fault.applied:
                self._record(request, fault.status, True)
            return web.Response(
                status=fault.status,
                body=None
                if request.method == "HEAD"
                else error_xml(fault.code, fault.message, request.path, rid),
                headers={"Content-Type": "application/xml", "x-amz-request-id": rid},
            )
        return await self._forward(request, body)

    async def _forward(self, request: web.Request, body: bytes,
                       injected: bool = False) -> web.Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        assert self._session is not None
        async with self._session.request(
            request.method,
            self.upstream + request.path_qs,
            headers=headers,
            data=body,
            allow_redirects=False,
        ) as upstream:
            payload = await upstream.read()
            out = [(k, v) for k, v in upstream.headers.items() if k.lower() not in _HOP]
            if request.method == "HEAD":
                # No body, but the client needs the object's real Content-Length.
                length = upstream.headers.get("Content-Length")
                if length is not None:
                    out.append(("Content-Length", length))
                resp = web.Response(status=upstream.status, headers=CIMultiDict(out))
            else:
                resp = web.Response(status=upstream.status, body=payload, headers=CIMultiDict(out))
        self._record(request, upstream.status, injected)
        return resp

    async def _setup(self) -> None:
        self._session = aiohttp.ClientSession(
            auto_decompress=False,
            skip_auto_headers=("Content-Type", "Accept-Encoding", "User-Agent"),
            timeout=aiohttp.ClientTimeout(total=60),
        )
        app = web.Application(client_max_size=1024**3)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, LOCALHOST, 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def _teardown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def start(self) -> S3FaultProxy:
        """Start the loop thread and block until the listening port is known."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="s3-proxy", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._setup(), self._loop).result(timeout=10)
        return self

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._teardown(), self._loop).result(timeout=10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()
            self._loop = None
