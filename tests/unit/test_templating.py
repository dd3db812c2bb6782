import re

import pytest

from remediator import templating
from remediator.templating import TemplateError, render
from remediator.templating.validators import validate

CTX = {"labels": {"deployment": "{{ 7*7 }}", "evil": "{% for x in range(10) %}x{% endfor %}"},
       "annotations": {}, "alert": {}, "group": {}, "steps": {}}


def test_label_values_are_data_never_templates():
    assert render("{{ labels.deployment }}", CTX) == "{{ 7*7 }}"
    assert render("{{ labels.evil }}", CTX) == CTX["labels"]["evil"]


@pytest.mark.parametrize("template", [
    "{{ ''.__class__.__mro__ }}",
    "{{ labels.__class__ }}",
    "{{ cycler.__init__.__globals__ }}",
])
def test_sandbox_refuses_reaching_into_python(template):
    with pytest.raises(TemplateError):
        render(template, CTX)


def test_strict_undefined_is_an_error_not_an_empty_string():
    with pytest.raises(TemplateError, match="undefined"):
        render("{{ labels.missing }}", CTX)


def test_a_missing_label_is_named_with_the_labels_present():
    message = "alert has no label 'pod' (labels: deployment, evil)"
    for template in ("{{ labels.pod }}", "{{ labels['pod'] | lower }}"):
        with pytest.raises(TemplateError, match=re.escape(message)):
            render(template, CTX)
    with pytest.raises(TemplateError, match=re.escape(message)):
        templating.evaluate("labels.pod == 'x'", CTX)
    with pytest.raises(TemplateError, match="'str object' has no attribute 'pod'"):
        render("{{ labels.deployment.pod }}", CTX)  # not a missing label: said as Jinja says it


def test_compile_check_reports_root_names():
    assert templating.compile_check("{{ labels.a }}/{{ foo.b }}") == {"labels", "foo"}
    with pytest.raises(TemplateError, match="syntax"):
        templating.compile_check("{{ labels.a ")


@pytest.mark.parametrize("kind, value", [
    ("k8s_name", "../kube-system"), ("k8s_name", "a/b"), ("k8s_name", "Code-Forge"),
    ("k8s_name", "{{ 7*7 }}"), ("k8s_name", "a" * 254), ("namespace", "kube_system"),
    ("namespace", ""), ("env_name", "A=B"), ("env_name", "1ABC"), ("s3_key", "../etc/passwd"),
    ("s3_key", "/abs/key"), ("s3_key", "a/../../b"), ("s3_key", "x\n"), ("s3_bucket", "Bad_Bucket"),
    ("label_selector", ""), ("label_selector", " , "), ("label_selector", "*"),
    ("label_selector", "app=web;rm -rf"), ("url", "file:///etc/passwd"),
    # a trailing newline: `$` accepts it, a full match does not
    ("namespace", "kube-system\n"), ("k8s_name", "web\n"), ("container", "web\n"),
    ("env_name", "PATH\n"), ("s3_bucket", "code-forge-artifacts\n"), ("label_selector", "app=web\n"),
    ("label_selector", "app\nin\n(a)"),
])
def test_validators_refuse_hostile_values(kind, value):
    with pytest.raises(ValueError):
        validate(kind, value)


@pytest.mark.parametrize("kind, value", [
    ("k8s_name", "code-forge"), ("namespace", "neural-hive-pipeline"), ("env_name", "CERT_S3_READ_PRIMARY"),
    ("s3_key", "sboms/T-1/a1/sbom.cyclonedx.json"), ("s3_bucket", "code-forge-artifacts-prod"),
    ("label_selector", "app=code-forge"), ("label_selector", "app in (a,b),!canary"),
    ("url", "http://libervia.libervia.svc:3000/health"),
])
def test_validators_accept_real_names(kind, value):
    validate(kind, value)


def test_validators_stay_linear_on_hostile_label_values():
    # 8 KiB is the longest label value intake accepts; the selector pattern backtracked
    # quadratically on runs of spaces (2 s on the event loop for this one value).
    with pytest.raises(ValueError):
        validate("label_selector", "a" + " " * 8000 + "x")
    with pytest.raises(ValueError):
        validate("label_selector", "a=" + "b" * 5000)
    validate("label_selector", "app = web, tier in (a, b)")


def test_pending_results_render_as_placeholders_and_refuse_comparison():
    ctx = {**CTX, "steps": {"ratio": {"result": templating.Pending("steps.ratio.result")}}}
    assert templating.PENDING in render("{{ steps.ratio.result.value }}", ctx)
    with pytest.raises(TemplateError, match="only known at run time"):
        templating.evaluate("steps.ratio.result.value < 0.05", ctx)


def test_action_patterns_refuse_a_trailing_newline():
    from tests.support.actions import problems
    assert problems("kubernetes.get", resource="events", namespace="shop",
                    field_selector="involvedObject.name=web\n") == [
        "invalid field selector 'involvedObject.name=web\\n'"]
    assert problems("evidence.bundle", directory="evidence", include=["restart\n"]) == [
        "include must list step names, got ['restart\\n']"]


@pytest.mark.parametrize("template", [
    "{{ labels.clear() }}", "{{ labels.update({'deployment': 'x'}) }}",
    "{{ steps.check.result.pop('value') }}", "{{ steps.check.result.lines.append(1) }}",
])
def test_templates_cannot_change_what_they_read(template):
    ctx = {"labels": {"deployment": "web"},
           "steps": {"check": {"result": {"value": 1, "lines": [0]}}}}
    with pytest.raises(TemplateError, match="unsafe"):
        render(template, ctx)
    assert ctx == {"labels": {"deployment": "web"},
                   "steps": {"check": {"result": {"value": 1, "lines": [0]}}}}


@pytest.mark.parametrize("template, message", [
    ("{{ '%300000000d' % 1 }}", "width or precision 300000000 refused"),
    ("{{ '%.300000000f' % 1 }}", "width or precision 300000000 refused"),
    ("{{ '%300000000d' | format(1) }}", "width or precision 300000000 refused"),
    ("{{ '{:>300000000}'.format(1) }}", "spec '>300000000' refused"),
    ("{{ 'x'.center(300000000) }}", "center width 300000000"),
    ("{{ labels.big * 1000 }}", "multiplication would build 8192000 items"),
    ("{{ labels.big.replace('x', labels.big) }}", "replace would build 67108864 items"),
    ("{{ labels.big | replace('x', labels.big) }}", "replace would build 67108864 items"),
    ("{{ 7 ** 100000000 }}", "would exceed 65536 bits"),
    ("{% for i in range(100000) %}x{% endfor %}", "range of 100000 items exceeds 10000"),
    ("{% for c in labels.big %}{{ labels.big }}{% endfor %}", "renders more than 1048576"),
])
def test_templates_cannot_build_huge_values(template, message):
    # '%300000000d' % 1 built a 300 MB string in 4.4 s on the event loop: now it fails first
    with pytest.raises(TemplateError, match=re.escape(message)):
        render(template, {"labels": {"big": "x" * 8192}})


def test_ordinary_formatting_still_works():
    ctx = {"labels": {"deployment": "web", "n": "3"}}
    assert render("{{ '%s-%05.1f' % (labels.deployment, 2.5) }}|{{ '{}/{}'.format(1, 2) }}|"
                  "{{ labels.deployment * 2 }}|{{ (labels.n|int) ** 2 }}|{{ 'ab'|center(6) }}|"
                  "{{ labels.deployment|replace('w', 'W') }}", ctx) == \
        "web-002.5|1/2|webweb|9|  ab  |Web"


def test_a_render_error_is_raised_without_rewriting_its_traceback(monkeypatch):
    """Jinja rewrote every render error's traceback to point into the template, compiling a
    fake frame for each (~100 us; a dry run's plan and notes meet such errors routinely,
    e.g. a condition on a result not known yet), for a traceback nobody shows: the message
    is what a TemplateError carries, and it is the same. A syntax error is still translated
    (counted: Jinja's fake frames)."""
    import jinja2.debug

    faked: list[object] = []
    real = jinja2.debug.fake_traceback
    monkeypatch.setattr(jinja2.debug, "fake_traceback", lambda *a: faked.append(a) or real(*a))
    for template, message in [("{{ labels.nope }}", "alert has no label 'nope'"),
                              ("{{ 1 // 0 }}", "ZeroDivisionError"),
                              ("{{ steps.x.result.y }}", "'steps' is undefined"),
                              ("{{ 'a' * 10**7 }}", "refused by the sandbox")]:
        with pytest.raises(TemplateError, match=re.escape(message)):
            render(template, {"labels": {"a": "b"}})
    assert faked == []
    with pytest.raises(TemplateError, match="template syntax error"):
        render("{{ unclosed", {})
