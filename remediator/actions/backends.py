"""Clients shared by all actions, created lazily and once per process.

Actions never build their own clients: connection pools are reused across steps, and
configuration (Prometheus/Alertmanager URLs, the kubeconfig, the AWS chain) is read in one
place.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.request import getproxies

import aiohttp
from aiohttp.helpers import netrc_from_env

from .. import ca_bundle


@dataclass
class Backends:
    """Where the actions' peers are, and the clients shared by every call."""

    prometheus_url: str = "http://127.0.0.1:9090"
    alertmanager_url: str = "http://127.0.0.1:9093"
    http_timeout: float = 10.0  # read timeout of HTTP and Kubernetes calls
    s3_read_timeout: float = 30.0  # per socket read: a large GetObject streams for longer
    # Now, on the store's clock (`Service.clock`): the times a peer compares with its own
    # (a silence's, a page's endsAt) are right however far this node's clock is off.
    clock: Callable[[], float] = time.time
    _session: aiohttp.ClientSession | None = field(default=None, repr=False)
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)
    _building: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            ca_bundle.loaded()  # at once, but for the first session after a quick start
            timeout = aiohttp.ClientTimeout(total=self.http_timeout)
            # trust_env: HTTP(S)_PROXY / NO_PROXY are honoured, as every HTTP tool does. No
            # cookie is kept: the session is shared by every alert's calls and the sinks, and
            # a cookie one call was given (a service's session for one playbook's
            # credentials) went out with the next call to that host, whoever made it.
            self._session = aiohttp.ClientSession(timeout=timeout, trust_env=_env_configures_http(),
                                                  cookie_jar=aiohttp.DummyCookieJar())
        return self._session

    def cached(self, name: str, factory: Any) -> Any:
        """One client per kind (Kubernetes ApiClient, boto3 S3 client), built on first use."""
        if name not in self._cache:
            # Built in worker threads (building imports a library and reads credentials,
            # never on the event loop), so two first uses may race: one client is built.
            with self._building:
                if name not in self._cache:
                    self._cache[name] = factory()
        return self._cache[name]

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
        for client in self._cache.values():
            close = getattr(client, "close", None)
            if callable(close):
                close()
        self._cache.clear()


def _env_configures_http() -> bool:
    """Whether aiohttp's `trust_env` can change a request here: a proxy variable or a netrc
    file. Without either (the usual case) it changes nothing and only costs: aiohttp then
    looks both up again in a worker thread for every request, two thread round trips that
    were most of the CPU of an `http.request` call."""
    proxies = getproxies()
    return any(scheme in proxies for scheme in ("http", "https", "ws", "wss")) \
        or netrc_from_env() is not None
