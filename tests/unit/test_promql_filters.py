"""The filters that let an alert's value into PromQL outside a string (`promql_name`,
`promql_duration`): a value each passes is one token; any other fails the render, never
passed on. And where lint says a splice stands: strings of each quote, comments."""

from __future__ import annotations

import pytest

from remediator import templating
from remediator.templating import TemplateError, render

HOSTILE = ["x) or vector(1) or (y", "5m]) or vector(1) or rate(x[5m", "", " 5m", "5m\n",
           "up{job=\"a\"}", "a b", "1h 30m", "-5m", "5m#", "é"]


@pytest.mark.parametrize("value", ["up", "http_requests_total", "job:errors:rate5m", "_x",
                                   "Job", "a1"])
def test_promql_name_passes_a_name_as_it_is(value):
    assert render("{{ labels.x | promql_name }}", {"labels": {"x": value}}) == value


@pytest.mark.parametrize("value", [*HOSTILE, "1up", "a-b", "a.b", "Inf", "NaN", "or", "SUM",
                                   "offset", "bool"])
def test_promql_name_fails_the_render_on_anything_else(value):
    with pytest.raises(TemplateError, match=r"^promql_name: .* not put into the query"):
        render("up > 0 and {{ labels.x | promql_name }}", {"labels": {"x": value}})


@pytest.mark.parametrize("value", ["5m", "1h30m", "90s", "1d", "2w", "1y", "250ms", "0s",
                                   "1y2w3d4h5m6s7ms"])
def test_promql_duration_passes_a_duration_as_it_is(value):
    assert render("rate(x[{{ labels.w | promql_duration }}])", {"labels": {"w": value}}) == \
        f"rate(x[{value}])"


@pytest.mark.parametrize("value", [*HOSTILE, "5", "0", "m", "5M", "30m1h", "5m5m", "1.5h",
                                   "5min", "9" * 20 + "y", "P1D", "\u0665m"])  # an Arabic-Indic 5
def test_promql_duration_fails_the_render_on_anything_else(value):
    with pytest.raises(TemplateError, match=r"^promql_duration: .* not a Prometheus duration"):
        render("rate(x[{{ labels.w | promql_duration }}])", {"labels": {"w": value}})


def test_a_refused_value_is_shown_bounded():
    with pytest.raises(TemplateError) as refused:
        render("{{ labels.x | promql_name }}", {"labels": {"x": "y" * 10_000 + "-"}})
    assert len(str(refused.value)) < 300


def test_a_placeholder_passes_through_in_a_plan():
    pending = templating.Pending("steps.q.result.value")
    assert render("x[{{ w | promql_duration }}] {{ w | promql_name }}", {"w": pending}) == \
        f"x[{pending}] {pending}"


@pytest.mark.parametrize("query", [
    'up{job="{{ labels.job | promql_str }}"}',
    'up{job="a\\"{{ labels.job | promql_str }}"}',  # an escaped quote does not close it
    "rate({{ labels.m | promql_name }}[{{ labels.w | promql_duration }}]) > {{ labels.t | float }}",
    "topk({{ labels.n | int }}, up) offset {{ labels.w | promql_duration }}",
    "up{job=`{{ labels.job | promql_name }}`}",  # a checked token is safe in any string
    "up{job='{{ labels.job | promql_name }}'}",
    '{{ target.name | promql_name }}{job="{{ steps.a.result.job | promql_str }}"}',
    "up # a comment's quote: ' \n{{ labels.n | int }}",
    'up{job="{{ "api" }}"} > {{ 5 }}',  # the playbook's own values
    'up{job="{{- labels.job | promql_str -}}"}',
    '{% raw %}up{job="{% endraw %}{{ labels.job | promql_str }}"}',  # raw text is output
])
def test_lint_passes_what_is_escaped_or_checked(query):
    assert templating.unescaped_promql(query) == []


@pytest.mark.parametrize("query, where", [
    ("rate(x[{{ labels.window }}])", "outside a string"),
    ("{{ labels.metric }}{job=\"a\"}", "outside a string"),
    ("errors > {{ annotations.threshold }}", "outside a string"),
    ("sum by ({{ group.groupLabels.by }}) (up)", "outside a string"),
    ("up offset {{ alert.startsAt }}", "outside a string"),
    ("rate(x[{{ labels.window | promql_str }}])", "outside a string"),
    ("topk({{ labels.n | int(labels.m) }}, up)", "outside a string"),
    ("topk({{ labels.n | float(default=labels.m) }}, up)", "outside a string"),
    ("{{ labels.m | promql_name ~ '' }}", "outside a string"),
    ("{% for m in labels.values() %}{{ m }}{% endfor %}", "outside a string"),
    ('up{job="{{ labels.job }}"}', "inside a string"),
    ('up{job="{{ labels.job | promql_str | upper }}"}', "inside a string"),
    ('up{job="{{ steps.q.result.job }}"}', "inside a string"),
    ('up{job="{{ target.name }}"}', "inside a string"),
    ("up{job=`{{ labels.job | promql_str }}`}", "inside a backtick string"),
    ("up{job=`a\\`{{ labels.job | promql_str }}`}", "outside a string"),  # `\` escapes nothing
    ("up{job='{{ labels.job | promql_str }}'}", "inside a single-quoted string"),
    ("up{job='a\\'{{ labels.job | promql_str }}'}", "inside a single-quoted string"),
    ('up # the "errors\n > {{ labels.job | promql_str }}', "outside a string"),
    ("up # {{ labels.job | promql_str }}", "in a comment"),
    # A `%}` or `}}` in a template's own string ends nothing, and its quote is not output
    ('{% if labels.a == "%}" %}{{ labels.y | promql_str }}{% endif %}', "outside a string"),
    ('up > {{ labels.x ~ "}}" }}', "outside a string"),
    ('up{job={# " #}"{{ labels.job }}"}', "inside a string"),
])
def test_lint_refuses_an_unchecked_splice_wherever_it_stands(query, where):
    found = templating.unescaped_promql(query)
    assert len(found) == 1 and f"into PromQL {where} unescaped" in found[0], found
    assert "promql_name" in found[0] and "promql_duration" in found[0]  # says what to write


def test_a_backtick_string_gets_no_escape_from_promql_str():
    """Why lint refuses it: promql_str's escapes are literal in a raw string, so its
    backtick closes the string and the rest is query."""
    rendered = render("up{job=`{{ labels.job | promql_str }}`}",
                      {"labels": {"job": "x` } or vector(1) or up{job=`"}})
    assert rendered == "up{job=`x` } or vector(1) or up{job=``}"
