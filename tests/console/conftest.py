"""The browser the console's Selenium tests drive (Debian's headless chromium through
chromium-driver), and the live streams' read held between two ticks."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service


@pytest.fixture
def chromium():
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run",
                "--window-size=1280,900", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture
def held_ticks():
    """Holds the live streams' shared read (the feed's task's reads of the store, the store's
    own method wrapped) until let go: what the store records meanwhile lands between two
    ticks, as in a storm that records faster than a read a tick sends. Returns, given a
    worker, the function that lets the read go."""

    def hold(worker) -> Callable[[], None]:
        store, gate = worker.service.store, asyncio.Event()
        read = store.changes

        async def held(since, limit: int):
            if asyncio.current_task().get_name() == "console-feed":
                await gate.wait()
            return await read(since, limit)

        store.changes = held
        return lambda: worker.loop.call_soon_threadsafe(gate.set)

    return hold
