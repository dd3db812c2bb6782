"""The e2e stack (tests/e2e/harness.py): started once, on first use, for the whole session.

`E2E_ROUTE_ALSO=AlertA,AlertB` is a development aid: it also routes these alert names to
remediator, to try a scenario before deploy/alertmanager routes its alert. The routing tests
still check the project's configuration as it is.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.e2e.harness import Stack
from tests.support.docker import start_dockerd


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    also = [n.strip() for n in os.environ.get("E2E_ROUTE_ALSO", "").split(",") if n.strip()]
    # Its own dockerd: the integration tests' engine removes every container after each test.
    engine = start_dockerd()
    try:
        started = Stack(tmp_path_factory.mktemp("e2e"), engine, route_also=also).start()
        try:
            yield started
        finally:
            started.stop()
    finally:
        engine.stop()
