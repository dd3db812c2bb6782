"""How an on-call engineer actually uses the console, in a real headless Chromium: many tabs,
the Back button, a phone-sized window, a list left open for days."""

from __future__ import annotations

import time
from typing import Any

from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from remediator.console import LIST_LIMIT
from remediator.console.live import LATEST
from tests.console.test_browser import log_in
from tests.console.test_console_forms import GATED
from tests.console.test_console_http import _storm
from tests.integration.test_store_contract import earlier_by
from tests.support.payloads import alert, notification
from tests.support.worker import OPERATOR_TOKEN

# Chromium's connections to one host over HTTP/1.1: each live list's stream holds one.
CONNECTIONS_PER_HOST = 6


def live_state(driver) -> str:
    return driver.find_element(By.ID, "live-state").get_attribute("data-state")


def confirm(driver, url: str, execution_id: str) -> None:
    """Click the confirmation page's button; on the execution's page once decided."""
    driver.find_element(By.ID, "confirm").click()
    WebDriverWait(driver, 30).until(
        lambda d: d.current_url == f"{url}/ui/executions/{execution_id}")


def _gated_list(driver: Any, worker_factory: Any) -> tuple[Any, dict]:
    """A live worker with one run blocked on its approval; alice on its list, streaming."""
    driver.set_page_load_timeout(30)
    w = worker_factory(GATED, mode="live")
    w.post_alerts(notification(alert("WebDown", fingerprint="w1")))
    [blocked] = w.wait_executions(1)
    log_in(driver, w.url, "alice", OPERATOR_TOKEN)
    WebDriverWait(driver, 30).until(lambda d: live_state(d) == "live")
    return w, blocked


def test_hidden_list_tabs_leave_connections_for_the_rest_of_the_console(worker_factory, chromium):
    """Each open decisions list held its event stream for ever: with six list tabs open,
    Chromium had no connection left for this host, and Control, an approval, every other
    page of the console waited for one (the engineer saw a console that hung)."""
    driver = chromium
    w, blocked = _gated_list(driver, worker_factory)
    first = driver.current_window_handle
    for _ in range(CONNECTIONS_PER_HOST):  # seven list tabs: six of them hidden
        driver.switch_to.new_window("tab")
        driver.get(f"{w.url}/ui/")
        WebDriverWait(driver, 30).until(lambda d: live_state(d) == "live")
    driver.switch_to.new_window("tab")
    driver.get(f"{w.url}/ui/control")
    assert driver.find_element(By.ID, "pause-toggle").is_displayed()
    driver.get(f"{w.url}/ui/executions/{blocked['id']}/approve?step=restart")
    confirm(driver, w.url, blocked["id"])
    state = w.call(w.service.store.get_state(f"approval:{blocked['id']}:restart"))
    assert (state["status"], state["by"]) == ("approved", "alice")
    decided = w.call(w.service.store.get_execution(blocked["id"]))["outcome"]
    assert decided != "blocked"
    # Back to a list tab: its stream opens again from where it stopped, and what changed
    # while the tab was hidden is in it.
    driver.close()
    driver.switch_to.window(first)
    WebDriverWait(driver, 30, ignored_exceptions=(StaleElementReferenceException,)).until(
        lambda d: d.find_element(By.CSS_SELECTOR, f'tr[data-id="{blocked["id"]}"]')
        .get_attribute("data-outcome") == decided)
    assert live_state(driver) == "resumed"  # a reconnection, and it says so


def test_back_after_approving_shows_the_approval_as_it_is_now(worker_factory, chromium):
    """Chromium keeps a page in its back/forward cache despite `Cache-Control: no-store`:
    Back after approving showed the confirmation with its button, the approval still
    pending, and Back again the approvals page with it waiting."""
    driver = chromium
    w = worker_factory(GATED, mode="live")
    w.post_alerts(notification(alert("WebDown", fingerprint="w1")))
    [blocked] = w.wait_executions(1)
    log_in(driver, w.url, "alice", OPERATOR_TOKEN)
    driver.get(f"{w.url}/ui/approvals")
    driver.find_element(By.LINK_TEXT, "Approve…").click()
    WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.ID, "confirm"))
    confirm(driver, w.url, blocked["id"])
    main = (By.TAG_NAME, "main")
    driver.back()
    WebDriverWait(driver, 30, ignored_exceptions=(StaleElementReferenceException,)).until(
        lambda d: "has no pending approval" in d.find_element(*main).text)
    assert not driver.find_elements(By.ID, "confirm")
    driver.back()
    WebDriverWait(driver, 30, ignored_exceptions=(StaleElementReferenceException,)).until(
        lambda d: "Nothing waits for a human." in d.find_element(*main).text)
    assert not driver.find_elements(By.LINK_TEXT, "Approve…")
    assert not driver.find_elements(By.ID, "approvals-waiting")


# What reaches past the window's right edge, for a failure to say.
WIDE = """const w = document.documentElement.clientWidth;
return [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > w)
  .map(e => e.tagName + '.' + e.className + ' ' + Math.round(e.getBoundingClientRect().right));"""
NO_SIDEWAYS = "return document.documentElement.scrollWidth <= document.documentElement.clientWidth"


def test_a_phone_sized_window_does_not_scroll_sideways(worker_factory, chromium):
    """At 485 px the decisions table was 788 px wide: the whole page scrolled sideways."""
    driver = chromium
    w = worker_factory(GATED, mode="live")
    w.post_alerts(notification(alert("WebDown", fingerprint="w1")))
    [blocked] = w.wait_executions(1)
    log_in(driver, w.url, "alice", OPERATOR_TOKEN)
    driver.set_window_size(485, 900)
    for page in ("/ui/", f"/ui/executions/{blocked['id']}", "/ui/approvals", "/ui/control",
                 f"/ui/executions/{blocked['id']}/approve?step=restart"):
        driver.get(w.url + page)
        assert driver.execute_script(NO_SIDEWAYS), (page, driver.execute_script(WIDE))
    # The list is all there: it scrolls inside its own box.
    driver.get(w.url + "/ui/")
    assert driver.find_element(By.CSS_SELECTOR, f'tr[data-id="{blocked["id"]}"] td.reason'
                               ).get_attribute("textContent")


def counts(driver) -> str:
    return driver.find_element(By.ID, "counts").text


def test_a_live_list_keeps_to_the_pages_length_and_its_counts(worker_factory, chromium):
    """A list left open grew by every decision, never cut back to the page's 1000, and
    said "1000 shown" with the counts of the page as it was first drawn."""
    driver = chromium
    w = worker_factory(GATED, mode="live")
    w.post_alerts(notification(alert("WebDown", fingerprint="w0")))
    [model] = w.wait_executions(1)

    async def seed() -> None:  # older decisions, as many as the page shows
        for i in range(LIST_LIMIT):
            await w.service.store.save_execution(
                {**model, "id": f"old{i:04d}", "outcome": "failed",
                 "created_at": f"2026-01-01T00:{i // 60:02d}:{i % 60:02d}.000000Z"})

    w.call(seed(), timeout=300)
    log_in(driver, w.url, "alice", OPERATOR_TOKEN)
    WebDriverWait(driver, 30).until(lambda d: live_state(d) == "live")
    assert counts(driver) == f"{LIST_LIMIT} shown (newest {LIST_LIMIT}): blocked 1 failed 999"
    w.post_alerts(notification(alert("WebDown", fingerprint="w1", service="web2")))
    w.wait_executions(LIST_LIMIT + 2)
    rows = "#decisions tr[data-id]"
    WebDriverWait(driver, 30).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "#decisions tr.fresh"))
    assert len(driver.find_elements(By.CSS_SELECTOR, rows)) == LIST_LIMIT
    live = counts(driver)
    assert live == f"{LIST_LIMIT} shown (newest {LIST_LIMIT}): blocked 2 failed 998", live
    driver.refresh()
    assert counts(driver) == live  # as the page draws it


def _hide_behind_a_tab(driver, url: str) -> str:
    """Open another tab of the console (the list's is hidden: it lets its stream go); its
    handle."""
    driver.switch_to.new_window("tab")
    driver.get(f"{url}/ui/control")
    return driver.current_window_handle


def _row_outcome(driver, execution_id: str) -> str:
    return driver.find_element(By.CSS_SELECTOR, f'tr[data-id="{execution_id}"]'
                               ).get_attribute("data-outcome")


def test_a_list_shown_again_catches_up_on_decisions_older_than_a_read(worker_factory,
                                                                     chromium):
    """A tab shown again opened its stream from its newest decision: what it sent was the
    newest 50 as they are now, so an older decision's change made while hidden (an approval
    answered) was never drawn, and the list said "reload the page for older ones". It goes
    on from the store's position it had: every change since, however old the decision."""
    driver = chromium
    w = worker_factory(GATED, mode="live")
    w.post_alerts(notification(alert("WebDown", fingerprint="w1")))
    [blocked] = w.wait_executions(1)
    _storm(w, LATEST)  # newer: the blocked one is past the newest 50
    log_in(driver, w.url, "alice", OPERATOR_TOKEN)
    WebDriverWait(driver, 30).until(lambda d: live_state(d) == "live")
    driver.execute_script("window.drawnOnce = true")  # gone if the page is loaded again
    first = driver.current_window_handle
    other = _hide_behind_a_tab(driver, w.url)
    decided = w.call(w.service.approve(blocked["id"], by="alice"))["outcome"]
    assert decided not in ("blocked", "running")
    # Hidden for longer than a read by `updated_at` reached back (10 s), as a tab is.
    stamped = w.service.store.now_iso()  # (after its record's stamp)
    while w.service.store.now_iso() < earlier_by(stamped, -12):
        time.sleep(0.5)
    driver.switch_to.window(first)
    WebDriverWait(driver, 30, ignored_exceptions=(StaleElementReferenceException,)).until(
        lambda d: _row_outcome(d, blocked["id"]) == decided)
    assert live_state(driver) == "resumed"  # a reconnection, and it says so
    assert driver.execute_script("return window.drawnOnce === true")  # caught up, no reload
    # More changed while hidden than a read holds: the list draws itself again, as it is.
    driver.switch_to.window(other)
    storm = _storm(w, LATEST + 1, "Hidden")
    driver.switch_to.window(first)
    WebDriverWait(driver, 30, ignored_exceptions=(StaleElementReferenceException,)).until(
        lambda d: not d.execute_script("return window.drawnOnce === true"))
    WebDriverWait(driver, 30, ignored_exceptions=(StaleElementReferenceException,)).until(
        lambda d: live_state(d) == "live")
    assert _row_outcome(driver, storm[0]["id"]) == storm[0]["outcome"]


def test_list_windows_past_two_poll_and_leave_connections_for_the_console(worker_factory,
                                                                          chromium):
    """Each list shown held its event stream: with six list windows side by side (none
    hidden), Chromium had no connection left for this host, and a seventh list, Control,
    an approval, every page of the console waited for one. Two lists stream (counted across
    the browser's windows), the others poll: each list still draws what changed."""
    driver = chromium
    w, blocked = _gated_list(driver, worker_factory)
    windows = [driver.current_window_handle]
    for _ in range(CONNECTIONS_PER_HOST):  # seven list windows, each shown
        driver.switch_to.new_window("window")
        driver.get(f"{w.url}/ui/")
        WebDriverWait(driver, 30).until(lambda d: live_state(d) in ("live", "polled"))
        windows.append(driver.current_window_handle)
    states = []
    for handle in windows:
        driver.switch_to.window(handle)
        assert not driver.execute_script("return document.hidden")
        states.append(live_state(driver))
    assert sorted(states) == ["live"] * 2 + ["polled"] * 5, states
    driver.switch_to.new_window("window")
    driver.get(f"{w.url}/ui/executions/{blocked['id']}/approve?step=restart")
    confirm(driver, w.url, blocked["id"])
    decided = w.call(w.service.store.get_execution(blocked["id"]))["outcome"]
    assert decided != "blocked"
    for handle in windows:  # streamed or polled, every list draws it
        driver.switch_to.window(handle)
        WebDriverWait(driver, 30, ignored_exceptions=(StaleElementReferenceException,)).until(
            lambda d: _row_outcome(d, blocked["id"]) == decided)
