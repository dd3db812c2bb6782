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
from tests.support.payloads import alert, notification
from tests.support.prometheus import prometheus_config
from tests.support.worker import VIEWER_TOKEN

VALUES = [1, 3, 2, 5, 4, 6]  # one per scrape-and-a-bit; a shape a renderer could get wrong


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
    prom = prometheus_factory(prometheus_config([exporter.target], scrape_interval="1s"))
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
    assert requests.get(f"{w.url}/-/healthy", timeout=5).status_code == 200
    # A comparison after the same spaces is still split, its number the threshold.
    assert graphs.split_threshold("up" + " " * 200_000 + "> 0.5") == ("up", 0.5)
