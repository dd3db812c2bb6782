"""The console's dark scheme, in a real headless Chromium told the system prefers dark
(DevTools' media emulation): every page dark, every text at least 4.5:1 on what is behind
it, as the browser computes both; and the light scheme as it was."""

from __future__ import annotations

import pytest
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.keys import Keys

from remediator.console import OUTCOMES
from tests.console.test_browser import log_in
from tests.console.test_browser_oncall import GUIDED
from tests.support.payloads import alert, notification
from tests.support.worker import OPERATOR_TOKEN

# Every badge and button the pages may draw, added to the page measured: a page shows only
# the outcomes it has.
SAMPLES = [*(f"pill o-{o}" for o in OUTCOMES),
           *(f"pill a-{s}" for s in ("pending", "approved", "rejected", "expired", "lapsed",
                                     "resolved")),
           "pill mutating", "button", "button primary", "button danger"]

# What is behind an element (its nearest opaque background, the translucent ones between
# composed over it) and a colour's relative luminance, as WCAG 2 defines it.
COLOURS = """
const rgba = (text) => {
  const [r, g, b, a = 1] = text.match(/[\\d.]+/g).map(Number);
  return [r, g, b, a];
};
const over = ([r, g, b, a], [R, G, B]) => [r * a + R * (1 - a), g * a + G * (1 - a),
                                           b * a + B * (1 - a)];
const behind = (el) => {
  const layers = [];
  for (let e = el; e; e = e.parentElement) {
    const c = rgba(getComputedStyle(e).backgroundColor);
    if (c[3] > 0) layers.push(c);
    if (c[3] === 1) break;
  }
  let bg = [255, 255, 255];  // the canvas, were nothing opaque
  for (const c of layers.reverse()) bg = over(c, bg);
  return bg;
};
const lum = (rgb) => {
  const [r, g, b] = rgb.map((v) => {
    v /= 255;
    return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
  });
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
};
"""

# The contrast of each visible text (and field) with what is behind it, the samples added.
CONTRASTS = COLOURS + """
const samples = arguments[0];
const box = document.createElement("p");
box.className = "samples";
for (const cls of samples) {
  const el = document.createElement(cls.startsWith("button") ? "button" : "span");
  el.className = cls.replace(/^button ?/, "");
  el.textContent = cls;
  box.appendChild(el);
}
document.querySelector("main").appendChild(box);
const out = [];
for (const el of document.querySelectorAll("body *")) {
  const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
  const field = el.matches("input:not([type=hidden]), select, button");
  if (!(own || field) || el.closest(".visually-hidden, option, script, style")) continue;
  if (!el.getClientRects().length || getComputedStyle(el).visibility !== "visible") continue;
  const bg = behind(el);
  const ink = over(rgba(getComputedStyle(el).color), bg);
  const [a, b] = [lum(ink), lum(bg)].sort((x, y) => y - x);
  out.push({what: el.tagName.toLowerCase() + (el.className ? "." + el.className : "") +
                  " " + (el.textContent || el.value || "").trim().slice(0, 30),
            ratio: (a + 0.05) / (b + 0.05), bg: lum(bg)});
}
return {texts: out, page: lum(behind(document.body))};
"""

# The focused element's outline against the page behind it.
FOCUS = COLOURS + """
const el = document.activeElement, style = getComputedStyle(el);
const ring = lum(over(rgba(style.outlineColor), behind(el.parentElement)));
const page = lum(behind(el.parentElement));
const [a, b] = [ring, page].sort((x, y) => y - x);
return {what: el.outerHTML.slice(0, 60), style: style.outlineStyle, ratio: (a + 0.05) / (b + 0.05)};
"""


def scheme(driver, value: str) -> None:
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {
        "features": [{"name": "prefers-color-scheme", "value": value}]})


def measure(driver) -> dict:
    return driver.execute_script(CONTRASTS, SAMPLES)


def pages(blocked: dict) -> list[str]:
    return ["/ui/", f"/ui/executions/{blocked['id']}", "/ui/approvals", "/ui/control",
            f"/ui/executions/{blocked['id']}/approve?step=restart", "/ui/executions/nope"]


@pytest.fixture
def console(worker_factory, chromium):
    """A console with something on every page: a step waiting for approval, a decision no
    playbook matched, automation paused and a circuit open (the banner), logged in."""
    w = worker_factory(GUIDED, mode="live")
    w.post_alerts(notification(alert("WebDown", fingerprint="w1")))
    w.post_alerts(notification(alert("NobodysAlert", fingerprint="n1")))
    found = w.wait_executions(2)
    [blocked] = [d for d in found if d["outcome"] == "blocked"]
    w.call(w.service.pause(True, "alice"))
    w.call(w.service.store.put_state(f"circuit:restart-web:{blocked['target']}",
                                     {"opened_at": w.service.clock(),
                                      "until": w.service.clock() + 3600}))
    log_in(chromium, w.url, "alice", OPERATOR_TOKEN)
    return w, blocked


def readable(driver, url: str, page: str) -> dict:
    """The page's measures, once every text on it is found readable."""
    if page == "/ui/login":
        driver.delete_all_cookies()
    driver.get(url + page)
    found = measure(driver)
    poor = [(t["what"], round(t["ratio"], 2)) for t in found["texts"] if t["ratio"] < 4.5]
    assert not poor, (page, poor)
    assert len(found["texts"]) > len(SAMPLES) + 5, page  # it measured the page's own texts
    return found


def test_every_page_is_dark_and_readable_when_the_system_prefers_dark(console, chromium):
    w, blocked = console
    driver = chromium
    scheme(driver, "dark")
    driver.get(f"{w.url}/ui/")
    # The focus ring, met with the keyboard: at least 3:1 (WCAG's for a component's edge).
    ActionChains(driver).send_keys(Keys.TAB).perform()
    ring = driver.execute_script(FOCUS)
    assert ring["style"] == "solid" and ring["ratio"] >= 3, ring
    for page in [*pages(blocked), "/ui/login"]:
        found = readable(driver, w.url, page)
        assert found["page"] < 0.02, (page, found["page"])  # a dark page, not a grey one
        # The cards, tables and badges are dark too: no light box left on the dark page (the
        # header's mode and its count of approvals are coloured on purpose).
        light = [t["what"] for t in found["texts"] if t["bg"] > 0.2
                 and not t["what"].startswith(("span.mode", "span.badge"))]
        assert not light, (page, light)


# The light scheme's colours before the dark one was added: it must not have moved.
LIGHT = {
    "body": ("rgb(31, 41, 55)", "rgb(246, 247, 249)"),
    ".list": ("rgb(31, 41, 55)", "rgb(255, 255, 255)"),
    ".list th": ("rgb(107, 114, 128)", "rgb(249, 250, 251)"),
    ".pill.o-blocked": ("rgb(180, 83, 9)", "rgb(254, 243, 199)"),
    ".pill.o-no_match": ("rgb(55, 65, 81)", "rgb(243, 244, 246)"),
    "#automation-state": ("rgb(120, 53, 15)", "rgb(254, 243, 199)"),
    "select": ("rgb(0, 0, 0)", "rgb(255, 255, 255)"),
    ".filters button": ("rgb(31, 41, 55)", "rgb(255, 255, 255)"),
    ".reason": ("rgb(75, 85, 99)", "rgba(0, 0, 0, 0)"),
    ".samples .o-failed": ("rgb(185, 28, 28)", "rgb(254, 226, 226)"),
    ".samples .o-planned": ("rgb(30, 64, 175)", "rgb(219, 234, 254)"),
    ".samples .mutating": ("rgb(154, 52, 18)", "rgb(255, 247, 237)"),
    ".samples button.primary": ("rgb(255, 255, 255)", "rgb(37, 99, 235)"),
    ".samples button.danger": ("rgb(185, 28, 28)", "rgb(255, 255, 255)"),
}


def test_the_light_scheme_is_as_it_was(console, chromium):
    w, blocked = console
    driver = chromium
    scheme(driver, "light")
    driver.get(f"{w.url}/ui/")
    measure(driver)  # adds the samples
    colours = {css: driver.execute_script(
        "const s = getComputedStyle(document.querySelector(arguments[0]));"
        "return [s.color, s.backgroundColor];", css) for css in LIGHT}
    assert colours == {css: list(pair) for css, pair in LIGHT.items()}
    for page in [*pages(blocked), "/ui/login"]:  # and it was readable already
        readable(driver, w.url, page)
