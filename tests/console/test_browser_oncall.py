"""What an on-call engineer meets in the console, in a real headless Chromium: the state of
the automation on every page, names that stay readable in a narrow window, the runbook and
what a gated step does where it is approved, and a list that says whether it is live."""

from __future__ import annotations

import requests
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from remediator.console.live import LATEST
from tests.conftest import APPROVAL_RULES
from tests.console.test_browser import log_in
from tests.support.payloads import alert, notification
from tests.support.worker import OPERATOR_TOKEN, VIEWER_TOKEN

# A step behind an approval that is never approved here: its URL is never reached.
GATED = APPROVAL_RULES % {"url": "http://127.0.0.1:9/"}
RUNBOOK = "https://runbooks.example/web#restart"
DOES = "Rolls the web pods one at a time; sessions survive, the cache is cold for a minute."
GUIDED = GATED.replace("    match:", f"""    description: restart web when it stops answering
    runbook: {RUNBOOK}
    match:""").replace("        approval: required",
                       f'        approval: required\n        description: "{DOES}"')


def state_banner(driver) -> str:
    found = driver.find_elements(By.ID, "automation-state")
    return found[0].text if found and found[0].is_displayed() else ""


def test_every_page_says_automation_is_paused_and_what_waits(worker_factory, chromium):
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

    # The open circuit says what it is and what closing it does; the button closes it.
    heads = [th.get_attribute("textContent") for th in
             driver.find_elements(By.CSS_SELECTOR, "#circuits thead th")]
    assert heads == ["Playbook", "Target", "Opened", "Stopped until", "Action"], heads
    row = driver.find_element(By.CSS_SELECTOR, "#circuits tbody tr").text
    assert "restart-web" in row and blocked["target"] in row, row
    driver.find_element(By.XPATH, "//button[text()='Close circuit']").click()
    assert "next alert runs the playbook again" in driver.switch_to.alert.text
    driver.switch_to.alert.accept()
    WebDriverWait(driver, 10).until(
        lambda d: "No circuit is open." in d.find_element(By.TAG_NAME, "main").text)
    assert w.call(w.service.open_circuits()) == []  # closed: its reset time is kept

    w.call(w.service.pause(False, "alice"))
    w.call(w.service.reset_circuits(blocked["target"], "", "alice"))
    driver.get(f"{w.url}/ui/")
    assert state_banner(driver) == ""


# The words of each name in the list that the browser split across lines: [word, lines].
SPLIT_WORDS = """
return [...document.querySelectorAll('#decisions td a')].flatMap(a =>
  [...a.childNodes].filter(n => n.nodeType === Node.TEXT_NODE).map(n => {
    const range = document.createRange();
    range.selectNodeContents(n);
    return [n.textContent, range.getClientRects().length];
  })).filter(([, lines]) => lines !== 1);
"""


def test_alert_names_wrap_between_words_in_a_narrow_window(worker_factory, chromium):
    """The five systems name alerts both ways (ThreeDPotHighLatency, TENANT_SUSPENSION_CASCADE):
    at 860 px the alert column was squeezed to a few letters (API_DO|WN), and at any width
    an UPPER_SNAKE name broke mid-word (EVENTLOG_INTEGRITY_F|AILURE)."""
    driver = chromium
    w = worker_factory()  # the demo playbook: DemoDown is planned, the others match nothing
    names = ("TENANT_SUSPENSION_CASCADE", "EVENTLOG_INTEGRITY_FAILURE", "API_DOWN",
             "HackathonFileProcessorHighErrorRate", "DemoDown")
    for i, name in enumerate(names):
        w.post_alerts(notification(alert(name, fingerprint=f"n{i}", namespace="demo",
                                         deployment="hackathon-file-processor")))
    w.wait_executions(len(names))
    log_in(driver, w.url, "victor", VIEWER_TOKEN)
    for width in (1360, 860):
        driver.set_window_size(width, 900)
        driver.refresh()
        rows = driver.find_elements(By.CSS_SELECTOR, "#decisions tr[data-id]")
        assert len(rows) == len(names)
        assert driver.execute_script(SPLIT_WORDS) == [], width
        assert driver.execute_script("return document.documentElement.scrollWidth "
                                     "<= document.documentElement.clientWidth"), width


def test_an_approver_finds_the_runbook_and_what_the_step_does(worker_factory, chromium):
    """The gated step's description is written for whoever approves it (the linter asks for
    it), and the escalation note showed it with the playbook's runbook; the console showed
    neither, nor led from a decision to the other decisions of its alert."""
    driver = chromium
    w = worker_factory(GUIDED, mode="live")
    w.post_alerts(notification(alert("WebDown", fingerprint="w1")))
    [blocked] = w.wait_executions(1)
    row = f'tr[data-id="{blocked["id"]}"]'
    log_in(driver, w.url, "alice", OPERATOR_TOKEN)
    driver.get(f"{w.url}/ui/approvals")
    card = driver.find_element(By.CSS_SELECTOR, f'.approval[data-id="{blocked["id"]}"]')
    assert f"What it does: {DOES}" in card.text
    assert card.find_element(By.CSS_SELECTOR, "a.runbook").get_attribute("href") == RUNBOOK
    card.find_element(By.LINK_TEXT, "Approve…").click()
    assert f"What it does: {DOES}" in driver.find_element(By.TAG_NAME, "main").text
    assert driver.find_element(By.CSS_SELECTOR, "a.runbook").get_attribute("href") == RUNBOOK

    driver.get(f"{w.url}/ui/executions/{blocked['id']}")
    assert driver.find_element(By.ID, "runbook").get_attribute("href") == RUNBOOK
    assert f"What it does: {DOES}" in driver.find_element(By.CSS_SELECTOR, ".card.attention").text
    # From the decision to every decision of its alert, with the keyboard.
    driver.find_element(By.ID, "same-alert").send_keys(Keys.ENTER)
    assert driver.current_url == f"{w.url}/ui/?alertname=WebDown"
    assert driver.find_element(By.CSS_SELECTOR, f"#decisions {row}").is_displayed()


def _live_list(driver, worker_factory):
    """A worker, and its decisions list in the browser once its stream is live: (worker, a
    30 s wait, the live-state element)."""
    w = worker_factory()
    log_in(driver, w.url, "victor", VIEWER_TOKEN)
    wait = WebDriverWait(driver, 30)
    state = driver.find_element(By.ID, "live-state")
    wait.until(lambda d: state.get_attribute("data-state") == "live")
    return w, wait, state


def test_the_list_says_whether_it_is_live(worker_factory, chromium):
    """A filtered list never updates, and a stream that ended (its session logged out
    elsewhere or expired) left the list as it was: both looked like the live list."""
    driver = chromium
    w, wait, state = _live_list(driver, worker_factory)
    assert state.is_displayed() and state.text.startswith("Live")
    w.post_alerts(notification(alert("DemoDown", namespace="demo", deployment="web")))
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#decisions tr[data-id]"))

    driver.get(f"{w.url}/ui/?outcome=planned")
    state = driver.find_element(By.ID, "live-state")
    assert state.get_attribute("data-state") == "off" and "Not live" in state.text
    state.find_element(By.LINK_TEXT, "Back to the live list").send_keys(Keys.ENTER)
    state = driver.find_element(By.ID, "live-state")
    wait.until(lambda d: state.get_attribute("data-state") == "live")

    # The same session logged out from another tab: the stream ends, and the list says so.
    cookie = driver.get_cookie("remediator_session")["value"]
    token = driver.find_element(By.CSS_SELECTOR, "form.who input[name=csrf]").get_attribute("value")
    requests.post(f"{w.url}/ui/logout", data={"csrf": token},
                  cookies={"remediator_session": cookie}, allow_redirects=False, timeout=10)
    wait.until(lambda d: state.get_attribute("data-state") == "lost")
    assert "Reload the page" in state.text and state.is_displayed()


def test_a_decision_made_before_the_stream_connects_appears(worker_factory, chromium):
    """The list is drawn, then its stream connects: a decision recorded in between was taken
    for one the page had and never appeared until a reload. Here the stream's request is held
    in the browser (DevTools' Fetch interception) while the decision is made."""
    driver = chromium
    w = worker_factory()
    log_in(driver, w.url, "victor", VIEWER_TOKEN)
    driver.execute_cdp_cmd("Fetch.enable", {"patterns": [{"urlPattern": "*/ui/events*"}]})
    driver.get(f"{w.url}/ui/")
    state = driver.find_element(By.ID, "live-state")
    assert state.get_attribute("data-state") == "static"  # not connected
    w.post_alerts(notification(alert("DemoDown", namespace="demo", deployment="web")))
    [made] = w.wait_executions(1)
    driver.execute_cdp_cmd("Fetch.disable", {})
    wait = WebDriverWait(driver, 30)
    wait.until(lambda d: state.get_attribute("data-state") == "live")
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, f'#decisions tr[data-id="{made["id"]}"]'))


def test_the_list_asks_for_a_reload_when_a_storm_outran_its_stream(worker_factory, chromium,
                                                                    held_ticks):
    """More decisions between two ticks than a read holds: the list drew 50 of them and went on
    saying it was live. The stream's shared read is held while the webhook's are recorded."""
    driver = chromium
    w, wait, state = _live_list(driver, worker_factory)
    let_go = held_ticks(w)
    w.post_alerts(notification(*(alert(f"NoMatch{i}", fingerprint=f"nm{i}")
                                 for i in range(LATEST + 10))))
    w.wait_executions(LATEST + 10, timeout=60)
    let_go()
    wait.until(lambda d: state.get_attribute("data-state") == "gap")
    assert "reload the page" in state.text and state.is_displayed()
    assert len(driver.find_elements(By.CSS_SELECTOR, "#decisions tr[data-id]")) == LATEST


def test_an_outcome_changed_before_the_stream_connects_is_drawn(worker_factory, chromium):
    """The list drew a decision blocked on its approval, approved (its step ran, and failed)
    before the stream connected: it stayed `blocked` until a reload. The stream's first read
    sends the drawn ones as they are now; only the changed row is drawn again."""
    driver = chromium
    w = worker_factory(GATED, mode="live")
    w.post_alerts(notification(alert("WebDown", fingerprint="w1"), alert("NoMatch", fingerprint="n")))
    pending = next(d for d in w.wait_executions(2) if d["alertname"] == "WebDown")
    log_in(driver, w.url, "victor", VIEWER_TOKEN)
    driver.execute_cdp_cmd("Fetch.enable", {"patterns": [{"urlPattern": "*/ui/events*"}]})
    driver.get(f"{w.url}/ui/")
    driver.execute_script("for (const tr of document.querySelectorAll('#decisions tr[data-id]'))"
                          " tr.drawn = true;")
    w.call(w.service.approve(pending["id"], by="alice"))
    now = next(d for d in w.wait_executions(2) if d["id"] == pending["id"])
    assert now["outcome"] not in ("blocked", "running"), now
    driver.execute_cdp_cmd("Fetch.disable", {})
    changed = f'#decisions tr[data-id="{pending["id"]}"]'
    # (The row found may be replaced before its attribute is read: looked for again.)
    WebDriverWait(driver, 30, ignored_exceptions=(StaleElementReferenceException,)).until(
        lambda d: d.find_element(By.CSS_SELECTOR, changed).get_attribute("data-outcome")
        == now["outcome"])
    assert driver.find_element(By.CSS_SELECTOR, f"{changed} .pill").text == now["outcome"]
    # Unchanged, the other row is the page's own: not drawn again (it would flash as new).
    other = next(d["id"] for d in w.wait_executions(2) if d["id"] != pending["id"])
    assert dict(driver.execute_script(
        "return [...document.querySelectorAll('#decisions tr[data-id]')]"
        ".map(tr => [tr.dataset.id, tr.drawn === true])")) == {pending["id"]: False, other: True}


def test_the_list_draws_the_change_of_a_decision_older_than_the_streams_reads(
        worker_factory, chromium):
    """A decision blocked on its approval, and 50 newer above it: the stream read the newest 50
    at each tick, so its approval (the step run, and failed) never reached the list,
    which showed it blocked until a reload. Ticks read what was written since the last."""
    driver = chromium
    w = worker_factory(GATED, mode="live")
    w.post_alerts(notification(alert("WebDown", fingerprint="w1")))
    [pending] = w.wait_executions(1)
    w.post_alerts(notification(*(alert(f"NoMatch{i}", fingerprint=f"nm{i}")
                                 for i in range(LATEST))))
    w.wait_executions(LATEST + 1, timeout=60)
    log_in(driver, w.url, "victor", VIEWER_TOKEN)
    wait = WebDriverWait(driver, 30)
    state = driver.find_element(By.ID, "live-state")
    wait.until(lambda d: state.get_attribute("data-state") == "live")
    row = f'#decisions tr[data-id="{pending["id"]}"]'
    assert driver.find_element(By.CSS_SELECTOR, row).get_attribute("data-outcome") == "blocked"
    decided = w.call(w.service.approve(pending["id"], by="alice"))
    assert decided["outcome"] not in ("blocked", "running"), decided
    wait.until(lambda d: d.find_element(By.CSS_SELECTOR, row)
               .get_attribute("data-outcome") == decided["outcome"])
    assert driver.find_element(By.CSS_SELECTOR, f"{row} .pill").text == decided["outcome"]
    assert state.get_attribute("data-state") == "live"  # no gap: nothing was missed
    assert len(driver.find_elements(By.CSS_SELECTOR, "#decisions tr[data-id]")) == LATEST + 1
