"""The console in a real headless Chromium (Debian's chromium + chromium-driver, Selenium):
log in as viewer and operator, watch a decision arrive live, approve a step and see the
restart on the Kubernetes API test server, reject another, pause and resume; hostile labels
stay text. Screenshots of the main pages land in artifacts/console/ (and, with
REMEDIATOR_DOCS_SCREENSHOTS=1, the README's two in docs/)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import urllib.parse
from pathlib import Path

from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException, StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from tests.kubeapi.rbac import step_documents
from tests.support.payloads import alert, notification
from tests.support.prometheus import Prometheus, prometheus_config
from tests.support.worker import OPERATOR_TOKEN, VIEWER_TOKEN

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts" / "console"
NS = "neural-hive-pipeline"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
HOSTILE = "<script>alert(1)</script>"
# The alerting rule whose expression the alerts carry: only such an expression is graphed.
SHOP_ERRORS = """
groups:
  - name: shop
    rules:
      - alert: ShopErrorsHigh
        expr: shop_error_ratio > 0.05
"""
RULES = """
playbooks:
  - name: restart-shop
    description: restart the shop's web tier once a human agrees
    runbook: https://runbooks.example/shop
    match: {alertname: ShopErrorsHigh}
    target: {kind: deployment, namespace: NS, name: "{{ labels.deployment }}"}
    guards: {cooldown: 15m}
    steps:
      - name: restart
        action: kubernetes.rollout_restart
        approval: required
        params: {namespace: NS, name: "{{ labels.deployment }}"}
      - name: verify
        action: prometheus.wait_until
        params: {query: "shop_error_ratio < 0.05", timeout: 1m, interval: 1s}
    escalation:
      severity: critical
      team: shop
      summary: "Error ratio of {{ labels.deployment }} above 5%"
      next_steps: ["check the latest deploy of {{ labels.deployment }}"]
""".replace("NS", NS)


def _history(target: str, now: float) -> str:
    """An hour of shop_error_ratio as Prometheus would have scraped it: calm, then rising."""
    lines = ["# TYPE shop_error_ratio gauge"]
    for i in range(0, 3540, 15):
        t = now - 3600 + i
        ramp = max(0.0, (i - 2100) / 1100) * 0.11
        value = 0.012 + 0.006 * ((i // 15) % 7) / 7 + ramp
        lines.append(f'shop_error_ratio{{instance="{target}",job="test"}} {value:.4f} {t:.0f}')
    return "\n".join([*lines, "# EOF", ""])


def shot(driver: webdriver.Chrome, name: str, docs: str = "") -> None:
    """A full-page screenshot into artifacts/ (and docs/ when asked to refresh those)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, max(700, min(int(height) + 40, 2400)))
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    driver.set_window_size(1280, 900)
    if docs and os.environ.get("REMEDIATOR_DOCS_SCREENSHOTS") == "1":
        shutil.copy(path, ROOT / "docs" / docs)


def log_in(driver: webdriver.Chrome, url: str, name: str, secret: str) -> None:
    driver.get(f"{url}/ui/")
    assert "/ui/login" in driver.current_url  # no session: the login form
    driver.find_element(By.NAME, "name").send_keys(name)
    driver.find_element(By.NAME, "password").send_keys(secret)
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    WebDriverWait(driver, 20).until(EC.presence_of_element_located((By.ID, "decisions")))


def log_out(driver: webdriver.Chrome) -> None:
    driver.find_element(By.CSS_SELECTOR, "form.who button").click()
    WebDriverWait(driver, 20).until(EC.url_contains("/ui/login"))


def no_dialog(driver: webdriver.Chrome) -> bool:
    try:
        driver.switch_to.alert  # noqa: B018 - raises when no script opened a dialog
    except NoAlertPresentException:
        return True
    return False


def test_console_in_a_real_browser(chromium, worker_factory, exporter, kubeapi, kubeconfig,
                                   tmp_path):
    # Live updates re-render the page: an element read mid-refresh is stale, so look again.
    driver, wait = chromium, WebDriverWait(chromium, 60,
                                           ignored_exceptions=(StaleElementReferenceException,))
    now = time.time()
    exporter.set("shop_error_ratio", 0.013)  # after the restart: below the verify threshold
    prom = Prometheus(tmp_path / "prometheus")
    (tmp_path / "history.om").write_text(_history(exporter.target, now))
    subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics",
                    str(tmp_path / "history.om"), str(prom.workdir / "data")],
                   check=True, capture_output=True, timeout=120)
    prom.start(prometheus_config([exporter.target], scrape_interval="1s",
                                 rule_files=["alerts.yml"]), {"alerts.yml": SHOP_ERRORS})
    try:
        prom.wait_for("shop_error_ratio", timeout=30)
        _scenario(driver, wait, worker_factory, prom, kubeapi, now)
    finally:
        prom.stop()


def _scenario(driver, wait, worker_factory, prom, kubeapi, now):
    for name in ("web-a", "web-b"):
        kubeapi.add_deployment(name, NS)
        kubeapi.grant(step_documents("kubernetes.rollout_restart", {"namespace": NS, "name": name}, NS))
    w = worker_factory(RULES, mode="live", prometheus_url=prom.url,
                       external_url="https://remediator.example", console_graph_timeout=30.0)

    def firing(deployment: str, **labels: str) -> dict:
        a = alert("ShopErrorsHigh", namespace=NS, deployment=deployment, severity="critical",
                  fingerprint=f"fp-{deployment}", **labels)
        a["startsAt"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 20 * 60))
        a["generatorURL"] = f"{prom.url}/graph?g0.expr=" + urllib.parse.quote(
            "shop_error_ratio > 0.05")
        a["annotations"] = {"summary": "Shop 5xx ratio above 5% for 10 minutes",
                            "description": "Checkout requests fail; customers see errors."}
        return a

    # A viewer watches the list; a decision arrives without a reload (server-sent events).
    log_in(driver, w.url, "victor", VIEWER_TOKEN)
    driver.execute_script("window.sameDocument = true")
    w.post_alerts(notification(firing("web-a", evil=HOSTILE, template="{{ 7*7 }}")))
    row = wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, "#decisions tr[data-id]")))
    wait.until(lambda d: "blocked" in row.text)
    assert driver.execute_script("return window.sameDocument") is True  # it came live
    assert "ShopErrorsHigh" in row.text
    assert len(row.find_elements(By.CSS_SELECTOR, "a wbr")) == 2  # Shop|Errors|High may wrap
    w.post_alerts(notification(firing("web-b")))
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#decisions tr[data-id]")) == 2)
    assert "DRY-RUN" not in driver.find_element(By.ID, "mode").text
    assert "LIVE" in driver.find_element(By.ID, "mode").text
    driver.refresh()
    shot(driver, "decisions")
    drawn = driver.find_element(By.CSS_SELECTOR, "#decisions tr[data-id]")
    assert len(drawn.find_elements(By.CSS_SELECTOR, "a wbr")) == 2  # as the server draws it
    assert len(drawn.find_elements(By.CSS_SELECTOR, "td.mono wbr")) == 2  # ns/|deployment/|web
    driver.set_window_size(860, 900)  # the list fits a narrow window: no sideways scroll
    assert driver.execute_script("return document.documentElement.scrollWidth "
                                 "<= document.documentElement.clientWidth")
    driver.set_window_size(1280, 900)

    # Opening it: the hostile labels are text, nothing ran; the viewer may not act.
    [a_id] = [d["id"] for d in w.wait_executions(2) if d["alert"]["labels"]["deployment"] == "web-a"]
    [b_id] = [d["id"] for d in w.wait_executions(2) if d["alert"]["labels"]["deployment"] == "web-b"]
    driver.find_element(By.CSS_SELECTOR, f'#decisions tr[data-id="{a_id}"] a').click()
    wait.until(EC.url_contains(a_id))
    body = driver.find_element(By.TAG_NAME, "body").text
    assert HOSTILE in body and "{{ 7*7 }}" in body and no_dialog(driver)
    assert driver.find_elements(By.XPATH, "//script[not(@src)]") == []
    assert "You are a viewer" in body and not driver.find_elements(By.LINK_TEXT, "Approve…")
    driver.get(f"{w.url}/ui/approvals")
    assert len(driver.find_elements(By.CSS_SELECTOR, ".approval")) == 2
    driver.get(f"{w.url}/ui/executions/{a_id}/approve?step=restart")
    assert "403" in driver.find_element(By.TAG_NAME, "h1").text
    log_out(driver)

    # The operator approves web-a's restart: the Kubernetes API server sees the patch.
    log_in(driver, w.url, "alice", OPERATOR_TOKEN)
    driver.get(f"{w.url}/ui/approvals")
    shot(driver, "approvals", docs="console-approvals.png")
    card = driver.find_element(By.CSS_SELECTOR, f'.approval[data-id="{a_id}"]')
    assert "kubernetes.rollout_restart" in card.text and "expires" in card.text
    assert '"name": "web-a"' in card.text  # the step as rendered for this alert
    card.find_element(By.LINK_TEXT, "Approve…").click()
    wait.until(EC.presence_of_element_located((By.ID, "confirm")))
    shot(driver, "confirm")
    assert "Approve as alice" in driver.find_element(By.ID, "confirm").text
    driver.find_element(By.ID, "confirm").click()
    wait.until(EC.url_matches(rf"/ui/executions/{a_id}$"))
    wait.until(lambda d: "succeeded" in d.find_element(By.TAG_NAME, "h1").text)
    restarted = kubeapi.get("deployments", NS, "web-a")["spec"]["template"]["metadata"]
    assert RESTARTED_AT in (restarted.get("annotations") or {})
    state = w.call(w.service.store.get_state(f"approval:{a_id}:restart"))
    assert (state["status"], state["by"]) == ("approved", "alice")
    # The graph: the alert's expression from the real Prometheus, threshold and markers.
    svg = driver.execute_script(
        "return fetch(arguments[0]).then(r => r.text())",
        f"{w.url}/ui/executions/{a_id}/graph.svg?q=alert")
    assert '<path class="series"' in svg and 'data-value="0.05"' in svg and 'class="marker"' in svg
    wait.until(lambda d: d.execute_script(
        "return [...document.images].every(i => i.complete && i.naturalWidth > 0)"))
    shot(driver, "decision", docs="console-decision.png")

    # ... and rejects web-b's: nothing is patched.
    driver.get(f"{w.url}/ui/executions/{b_id}/reject?step=restart")
    driver.find_element(By.ID, "confirm").click()
    wait.until(lambda d: "blocked" in d.find_element(By.TAG_NAME, "h1").text)
    assert RESTARTED_AT not in (kubeapi.get("deployments", NS, "web-b")["spec"]["template"]
                                ["metadata"].get("annotations") or {})
    assert w.call(w.service.store.get_state(f"approval:{b_id}:restart"))["status"] == "rejected"
    assert kubeapi.requests_matching("PATCH", "web-b") == []

    # Pause and resume, each after the browser's confirmation dialog.
    driver.get(f"{w.url}/ui/control")
    for verb, expect in (("Pause", "Paused"), ("Resume", "Running")):
        driver.find_element(By.ID, "pause-toggle").click()
        wait.until(EC.alert_is_present())
        assert verb in driver.switch_to.alert.text
        driver.switch_to.alert.accept()
        wait.until(lambda d, e=expect: d.find_element(By.ID, "paused-state").text.startswith(e))
        if verb == "Pause":
            assert w.call(w.service.store.get_state("paused"))["by"] == "alice"
            shot(driver, "control")
    assert not w.call(w.service.store.get_state("paused"))["paused"]
