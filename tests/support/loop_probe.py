"""A credential helper (a kubeconfig `exec` plugin, an AWS `credential_process`) that answers
only once a coroutine on the event loop has run while it waited: proof that building a client
runs it off the loop. Deterministic: a blocked loop never releases it, and it gives up (exit 1)
after 30 s instead of hanging the test."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

SCRIPT = """
import os, pathlib, sys, time
started, release, answer = sys.argv[1:4]
pathlib.Path(started).touch()
deadline = time.monotonic() + 30
while not os.path.exists(release) and time.monotonic() < deadline:
    time.sleep(0.02)
if not os.path.exists(release):
    sys.exit("the event loop never ran while this credential helper did")
print(pathlib.Path(answer).read_text())
"""


class LoopProbe:
    def __init__(self, directory: Path, answer: dict[str, Any]):
        self.started, self.release = directory / "probe-started", directory / "probe-release"
        script, answer_file = directory / "probe.py", directory / "probe-answer.json"
        script.write_text(SCRIPT)
        answer_file.write_text(json.dumps(answer))
        self.argv = [sys.executable, str(script), str(self.started), str(self.release),
                     str(answer_file)]

    async def run(self, work: Awaitable[T]) -> T:
        """`work`, while a coroutine on the loop releases the helper once it has started."""
        async def on_the_loop() -> None:
            while not self.started.exists():
                await asyncio.sleep(0.02)
            self.release.touch()

        helper = asyncio.create_task(on_the_loop())
        try:
            return await work
        finally:
            helper.cancel()
