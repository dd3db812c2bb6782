"""The event loop `serve` and `replay` run on: uvloop (libuv's loop and transports, in C)
wherever it is installed, else Python's own.

The same asyncio code runs on either; uvloop makes a storm's server cheaper per request
(the loop's callbacks, timers and socket I/O: docs/performance.md has the figures). It is
what uvicorn's and gunicorn's aiohttp workers pick by default for the same reason.
`event_loop: asyncio` keeps Python's loop: a platform uvloop has no build for, or an
incident where the loop itself is suspected.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

CHOICES = ("auto", "uvloop", "asyncio")

T = TypeVar("T")


def loop_factory(choice: str = "auto") -> Callable[[], asyncio.AbstractEventLoop]:
    """New loops of `choice`: `auto` is uvloop where it can be imported (the config refuses
    `uvloop` where it cannot: `uvloop_missing`)."""
    if choice == "asyncio" or (choice == "auto" and uvloop_missing()):
        return asyncio.new_event_loop
    import uvloop

    return uvloop.new_event_loop


def uvloop_missing() -> str:
    """Why uvloop cannot be imported here, or "" if it can."""
    try:
        import uvloop  # noqa: F401
    except ImportError as exc:
        return str(exc) or "no module named 'uvloop'"
    return ""


def run(main: Coroutine[Any, Any, T], choice: str = "auto") -> T:
    """`asyncio.run(main)` on a loop of `choice`."""
    with asyncio.Runner(loop_factory=loop_factory(choice)) as runner:
        return runner.run(main)


def name(loop: asyncio.AbstractEventLoop) -> str:
    """`uvloop` or `asyncio`: what a loop is, for the log and `remediator_build_info`."""
    return "uvloop" if type(loop).__module__.partition(".")[0] == "uvloop" else "asyncio"
