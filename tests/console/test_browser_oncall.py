"""What an on-call engineer meets in the console, in a real headless Chromium: the state of
the automation on every page, names that stay readable in a narrow window, and a
confirmation that says what an approval will really do."""

from __future__ import annotations

from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from tests.conftest import APPROVAL_RULES
from tests.console.test_browser import log_in
from tests.support.payloads import alert, notification
from tests.support.worker import VIEWER_TOKEN

# A step behind an approval that is never approved here: its URL is never reached.
GATED = APPROVAL_RULES % {"url": "http://127.0.0.1:9/"}


def state_banner(driver) -> str:
    found = driver.find_elements(By.ID, "automation-state")
    return found[0].text if found and found[0].is_displayed() else ""


def test_every_page_says_automation_is_paused_and_what_waits(chromium, worker_factory):
    """Only Control said that automation was paused: the decisions list (the landing page)
    looked the same paused or not, and nothing outside Approvals said a step waited."""
    driver = chromium
    w = worker_factory(GATED, mode="live")
    w.post_alerts(notification(alert("WebDown", fingerprint="w1")))
    [blocked] = w.wait_executions(1)
    log_in(driver, w.url, "alice", OPERATOR_TOKEN)
    assert state_banner(driver) == ""  # running: nothing to say
    waiting = driver.find_element(By.ID, "approvals-waiting")
    assert waiting.is_displayed() and waiting.text.startswith("1")

    w.call(w.service.pause(True, "alice"))
    w.call(w.service.store.put_state(f"circuit:restart-web:{blocked['target']}",
                                     {"opened_at": w.service.clock(),
                                      "until": w.service.clock() + 3600}))
    for page in ("/ui/", f"/ui/executions/{blocked['id']}", "/ui/approvals"):
        driver.get(w.url + page)
        banner = state_banner(driver)
        assert "Automation is paused by alice" in banner, (page, banner)
        assert "1 circuit open" in banner, (page, banner)
        assert driver.find_element(By.ID, "approvals-waiting").text.startswith("1")
    # From the banner to Control with the keyboard alone.
    link = driver.find_element(By.LINK_TEXT, "Resume on Control")
    link.send_keys(Keys.ENTER)
    assert driver.current_url == f"{w.url}/ui/control"
    assert "Automation is paused by alice" in state_banner(driver)
    assert not driver.find_elements(By.LINK_TEXT, "Resume on Control")  # already there

    w.call(w.service.pause(False, "alice"))
    w.call(w.service.reset_circuits(blocked["target"], "", "alice"))
    driver.get(f"{w.url}/ui/")
    assert state_banner(driver) == ""
