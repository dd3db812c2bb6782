"""Graphs against the suite's real Prometheus: known samples in, an SVG that follows them."""

from __future__ import annotations

import asyncio
import re
import time
import urllib.parse

import aiohttp
import requests

from remediator import graphs
from tests.conftest import APPROVAL_RULES
from tests.support.alertmanager import webhook_config
from tests.support.payloads import alert, notification
from tests.support.prometheus import prometheus_config
from tests.support.worker import TOKEN, VIEWER_TOKEN

VALUES = [1, 3, 2, 5, 4, 6]  # one per scrape-and-a-bit; a shape a renderer could get wrong
# WebDown's alerting rule, written as Prometheus would not format it (`graph_test_ratio > 0.5`).
WEB_DOWN = """
groups:
  - name: shop
    rules:
      - alert: WebDown
        expr: graph_test_ratio>0.5
"""


def _points(path: str) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in re.findall(r"[ML](-?[\d.]+),(-?[\d.]+)", path)]


def test_svg_points_follow_the_series_prometheus_holds(exporter, prometheus_factory):
    prom = prometheus_factory(prometheus_config([exporter.target], scrape_interval="1s"))
    start = time.time()
    for value in VALUES:
        exporter.set("graph_test_ratio", value, job="shop")
        prom.wait_for("graph_test_ratio", lambda r, v=value: r and float(r[0]["value"][1]) == v)
        time.sleep(1.2)
    end = time.time()

    async def draw() -> tuple[graphs.Graph, str]:
        expr, threshold = graphs.split_threshold("graph_test_ratio > 3.5")
        g = graphs.Graph("test", expr=expr, threshold=threshold, start=start, end=end,
                         markers=[(start + (end - start) / 2, "restart: succeeded")])
        async with aiohttp.ClientSession() as session:
            await graphs.fetch(session, prom.url, g, timeout=10, step=0.5)
        return g, graphs.render(g)

    g, svg = asyncio.run(draw())
    assert not g.problem and g.threshold == 3.5
    [(name, samples)] = g.series
    assert "job=shop" in name
    # Prometheus' own samples, deduplicated in order, are the values we set.
    seen = [v for i, (_, v) in enumerate(samples) if i == 0 or samples[i - 1][1] != v]
    assert seen == VALUES, seen
    # The drawn path has one point per sample, in time order, and its heights rank the
    # values exactly as the samples do (SVG y grows downwards).
    [path] = re.findall(r'<path class="series" d="([^"]+)"', svg)
    points = _points(path)
    assert len(points) == len(samples)
    assert [x for x, _ in points] == sorted(x for x, _ in points)
    for (_, y1), (_, y2), (_, v1), (_, v2) in zip(points, points[1:], samples, samples[1:], strict=False):
        assert (y1 > y2) == (v1 < v2) and (y1 == y2) == (v1 == v2)
    # The threshold line sits between the samples under it and those over it.
    ty = float(re.search(r'class="threshold"[^>]*y1="([\d.]+)"', svg).group(1))
    assert 'data-value="3.5"' in svg
    assert all((y < ty) == (v > 3.5) for (_, y), (_, v) in zip(points, samples, strict=True))
    assert svg.count('class="marker"') == 1 and "restart: succeeded" in svg


def test_console_graph_of_a_decision_from_the_real_prometheus(worker_factory, exporter,
                                                             prometheus_factory):
    prom = prometheus_factory(prometheus_config([exporter.target], rule_files=["alerts.yml"]),
                              {"alerts.yml": WEB_DOWN})
    exporter.set("graph_test_ratio", 0.9, job="shop")
    prom.wait_for("graph_test_ratio")
    w = worker_factory(APPROVAL_RULES % {"url": "http://127.0.0.1:9/"}, mode="live",
                       prometheus_url=prom.url, external_url="https://remediator.example",
                       console_graph_timeout=30.0)  # a loaded test machine is slow, not down
    firing = alert("WebDown", fingerprint="g1")
    firing["startsAt"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    firing["generatorURL"] = f"{prom.url}/graph?g0.expr=" + urllib.parse.quote(
        "graph_test_ratio > 0.5") + "&g0.tab=1"
    w.post_alerts(notification(firing))
    [decision] = w.wait_executions(1)
    note = decision["escalation"]["note"]
    url = f"https://remediator.example/ui/executions/{decision['id']}/graph.svg?q=alert"
    assert f"[Graph of `graph_test_ratio > 0.5`]({url})" in note
    s = requests.Session()
    s.post(f"{w.url}/ui/login", data={"name": "victor", "password": VIEWER_TOKEN})
    # query_range evaluates on steps aligned to the window's start: a series younger than one
    # step has no point yet, so wait (bounded) until the graph has one.
    deadline = time.monotonic() + 60
    while '<path class="series"' not in (
            svg := s.get(f"{w.url}/ui/executions/{decision['id']}/graph.svg?q=alert").text):
        assert time.monotonic() < deadline, svg
        time.sleep(1)
    assert '<path class="series"' in svg and 'class="threshold"' in svg and 'data-value="0.5"' in svg
    # The playbook has no verify query: said plainly, not an error.
    svg = s.get(f"{w.url}/ui/executions/{decision['id']}/graph.svg?q=verify").text
    assert "no prometheus.wait_until step" in svg
    # Prometheus goes away: the page and the graph still answer, and say why.
    prom.stop()
    assert s.get(f"{w.url}/ui/executions/{decision['id']}").status_code == 200
    svg = s.get(f"{w.url}/ui/executions/{decision['id']}/graph.svg?q=alert").text
    assert "Prometheus did not answer" in svg


def test_a_hostile_expression_is_graphed_without_stalling_the_server(worker_factory, exporter,
                                                                      prometheus_factory):
    # The alert's sender writes its generatorURL, hence the expression a graph splits at its
    # comparison. `up + 1` with 200 000 spaces before the `+` is valid PromQL that compares
    # nothing: a backtracking split tried every space at every one (minutes on the event
    # loop, every request waiting); RE2's is linear.
    prom = prometheus_factory(prometheus_config([exporter.target], scrape_interval="1s"))
    prom.wait_for("up")
    w = worker_factory(APPROVAL_RULES % {"url": "http://127.0.0.1:9/"}, mode="live",
                       prometheus_url=prom.url, console_graph_timeout=30.0)
    hostile = alert("WebDown", fingerprint="spaces")
    hostile["generatorURL"] = f"{prom.url}/graph?g0.expr=up" + "+" * 200_000 + "%2B+1"
    assert w.post_alerts(notification(hostile))[0] == 202
    [decision] = w.wait_executions(1)
    s = requests.Session()
    s.post(f"{w.url}/ui/login", data={"name": "victor", "password": VIEWER_TOKEN})
    svg = s.get(f"{w.url}/ui/executions/{decision['id']}/graph.svg?q=alert", timeout=20)
    assert svg.status_code == 200 and svg.text.startswith("<svg")
    assert 'class="threshold"' not in svg.text  # nothing compared, no threshold drawn
    assert "not drawn: " in svg.text  # split, but no rule's expression: never queried
    assert requests.get(f"{w.url}/-/healthy", timeout=5).status_code == 200
    # A comparison after the same spaces is still split, its number the threshold.
    assert graphs.split_threshold("up" + " " * 200_000 + "> 0.5") == ("up", 0.5)


# A playbook for each name: an alert of either is decided, so it has a graph to ask for.
NOTED = "playbooks:\n" + "".join(f"""
  - name: note-{name.lower()}
    match: {{alertname: {name}}}
    target: {{kind: deployment, namespace: prod, name: {name.lower()}}}
    steps:
      - name: note
        action: log
        params: {{message: seen}}
""" for name in ("WebDown", "ShopDown"))


def _requests(prom, handler: str) -> float:
    """How many times Prometheus was asked `handler` (its own count, from its /metrics)."""
    text = requests.get(f"{prom.url}/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("prometheus_http_requests_total{")
               and f'handler="{handler}"' in line)


def test_only_the_expression_of_the_alerts_own_rule_is_queried(
        tmp_path, worker_factory, exporter, prometheus_factory, alertmanager_factory):
    # Whoever posts a webhook writes its generatorURL: graphed as it came, any PromQL (the
    # costliest, or series nobody meant to show) ran against Prometheus at each page view.
    # Prometheus -> Alertmanager -> remediator: the generatorURL as Prometheus writes it.
    exporter.set("graph_test_ratio", 0.9, job="shop")
    prom = prometheus_factory(prometheus_config([exporter.target]))
    w = worker_factory(NOTED, prometheus_url=prom.url, console_graph_timeout=30.0)
    token = tmp_path / "webhook-token"
    token.write_text(TOKEN + "\n")
    am = alertmanager_factory(webhook_config(f"{w.url}/alerts", token_file=token))
    prom.reload(prometheus_config([exporter.target], rule_files=["alerts.yml"],
                                  alertmanager_url=am.url), {"alerts.yml": WEB_DOWN})
    [sent] = w.wait_executions(1, timeout=60)
    generator_url = sent["alert"]["generatorURL"]
    assert graphs.alert_expr(generator_url) == "graph_test_ratio > 0.5"  # Prometheus's text
    costly = alert("WebDown", fingerprint="costly")  # the rule's name, another expression
    costly["generatorURL"] = f"{prom.url}/graph?g0.expr=" + urllib.parse.quote(
        'count by (__name__) ({__name__=~".+"})')
    renamed = alert("ShopDown", fingerprint="renamed")  # the rule's expression, another name
    renamed["generatorURL"] = generator_url
    for forged in (costly, renamed):
        assert w.post_alerts(notification(forged))[0] == 202
    decided = {d["alert"]["fingerprint"]: d for d in w.wait_executions(3)}
    s = requests.Session()
    s.post(f"{w.url}/ui/login", data={"name": "victor", "password": VIEWER_TOKEN})

    def graph(fingerprint: str) -> str:
        return s.get(f"{w.url}/ui/executions/{decided[fingerprint]['id']}/graph.svg").text

    asked = _requests(prom, "/api/v1/query_range")
    costly_svg, renamed_svg = graph("costly"), graph("renamed")
    assert _requests(prom, "/api/v1/query_range") == asked  # neither was queried
    assert "not drawn: the Prometheus alerting rule of this name evaluates another expression"\
        in costly_svg and "count by (__name__)" in costly_svg  # what the alert claimed
    assert "not drawn: Prometheus has no alerting rule named as this alert" in renamed_svg
    assert '<path class="series"' not in costly_svg + renamed_svg
    # The rule's own expression is graphed (wait, bounded, for a step's first point).
    deadline, views = time.monotonic() + 60, 2
    while '<path class="series"' not in (svg := graph(sent["alert"]["fingerprint"])):
        assert time.monotonic() < deadline, svg
        views += 1
        time.sleep(1)
    assert 'data-value="0.5"' in svg and _requests(prom, "/api/v1/query_range") > asked
    # The rules were read once for all these views (again after a minute at most).
    assert 1 <= _requests(prom, "/api/v1/rules") < views + 1


def test_a_range_is_never_finer_than_prometheus_allows(exporter, prometheus_factory):
    # Prometheus refuses a range of more than 11 000 points a series: an hour at 1 ms.
    prom = prometheus_factory(prometheus_config([exporter.target]))
    exporter.set("graph_test_ratio", 2.0, job="shop")
    prom.wait_for("graph_test_ratio")
    end = time.time()

    async def draw() -> graphs.Graph:
        g = graphs.Graph("fine", expr="graph_test_ratio", start=end - 3600, end=end)
        async with aiohttp.ClientSession() as session:
            return await graphs.fetch(session, prom.url, g, timeout=30, step=0.001)

    g = asyncio.run(draw())
    assert not g.problem, g.problem
    [(_, samples)] = g.series
    assert samples and {v for _, v in samples} == {2.0}
    assert g.end - g.start >= 3599  # the whole hour, at a step Prometheus takes
