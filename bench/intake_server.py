"""`remediator serve` for bench/intake_bench.py: as shipped, or with intake alone.

INTAKE_ONLY=1 replaces the dispatcher with one that never claims, so the process does what
a webhook needs and nothing else (the inbox fills); PROFILE=out.prof writes a cProfile of the
whole run at exit (the main thread's CPU time). The remediator imported is whichever
PYTHONPATH names first (the bench compares two checkouts this way).
"""

import asyncio
import cProfile
import os
import sys
import time

from remediator import cli
from remediator.service import Service


async def _never_dispatch(self: Service) -> None:
    await asyncio.Event().wait()


if os.environ.get("INTAKE_ONLY"):
    Service._dispatch_loop = _never_dispatch  # type: ignore[method-assign]

if __name__ == "__main__":
    out = os.environ.get("PROFILE")
    if out:
        # The loop's thread's CPU time: wall time charged the syscalls with the time this
        # process waited for a core on a loaded machine.
        profile = cProfile.Profile(time.thread_time)
        code = profile.runcall(cli.main, sys.argv[1:])
        profile.dump_stats(out)
        sys.exit(code)
    sys.exit(cli.main(sys.argv[1:]))
