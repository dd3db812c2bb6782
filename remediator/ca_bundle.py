"""aiohttp imported with its CA bundle loaded later, in a thread (the command line imports this
first).

aiohttp builds its two default client SSL contexts as it is imported, and each loads the
system's CA bundle: two loads of 20-40 ms, a tenth of `serve`'s start-up, before anything else
can run. Imported from here, aiohttp is imported with those loads put aside. The one that
matters (the verified context's: the unverified one verifies nothing) runs in a thread started
by `start()`: `serve` calls it once it is ready (beside start-up it competed with it for the GIL
and, on a busy machine, for a CPU: 30-40 ms of its CPU before ready), and nothing before ready
makes a client session. Until it is done, the verified context trusts no CA (a TLS call
would fail, never succeed unverified); `loaded()` starts it if nobody has and waits for it, and
the one place that makes client sessions (actions/backends.py) calls it first. A process that
imported aiohttp before this module loads them at import as usual.
"""

from __future__ import annotations

import ssl
import sys
import threading

_deferred: list[ssl.SSLContext] = []  # aiohttp's contexts, their CA bundle not loaded yet
_failed: list[BaseException] = []


def _defer(context: ssl.SSLContext) -> None:
    # The unverified context (verify_mode CERT_NONE, set before aiohttp loads the bundle)
    # never consults a CA: loading it there was half the thread's CPU (~40 ms) for nothing.
    if context.verify_mode != ssl.CERT_NONE:
        _deferred.append(context)


def _load() -> None:
    try:
        for context in _deferred:
            context.set_default_verify_paths()
    except BaseException as exc:  # raised to whoever waits for it, as the import would have
        _failed.append(exc)


# Not a daemon: a process that exits while it loads waits for it, where OpenSSL's exit
# handlers freed what the thread was still using (a segfault or an abort, 7 exits in 30 of
# `python -c "import remediator.ca_bundle"` when the import started it).
_thread = threading.Thread(target=_load, name="ca-bundle")
_starting = threading.Lock()


def start() -> None:
    """Load the CA bundle in a thread, once (at once, after the first call)."""
    with _starting:
        if _thread.ident is None:
            _thread.start()


def loaded() -> None:
    """Wait until aiohttp's default contexts hold the CA bundle, starting its load if nobody
    has (at once, after the first)."""
    start()
    _thread.join()
    if _failed:
        raise _failed[0]


if "aiohttp" not in sys.modules:
    ssl.SSLContext.set_default_verify_paths = _defer  # type: ignore[method-assign,assignment]
    try:
        import aiohttp  # noqa: F401
    finally:
        del ssl.SSLContext.set_default_verify_paths  # the C method again
