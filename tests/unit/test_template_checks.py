"""What lint checks in a template is what fails at run time, and `re_escape` keeps a label
literal in a regex (issue 10, item 10). Locations are proven by the corpus (tests/lint/)."""

from __future__ import annotations

import pytest

from remediator import templating
from remediator.untrusted_regex import compile_regex


@pytest.mark.parametrize("text", ["{{ labels.x | nosuchfilter }}",
                                  "{% if labels.x %}{{ labels.x | nosuchfilter }}{% endif %}",
                                  "{{ labels.x is nosuchtest }}"])
def test_what_lint_refuses_also_fails_to_render(text: str) -> None:
    with pytest.raises(templating.TemplateError, match=r"unknown (filter|test) 'nosuch"):
        templating.compile_check(text)
    with pytest.raises(templating.TemplateError):
        templating.render(text, {"labels": {"x": "1"}})


@pytest.mark.parametrize("label", [".*", "acme-corp", "a|b", "(?i)x", "t[0-9]+$", "\\Q.\\E"])
def test_re_escape_matches_a_label_literally(label: str) -> None:
    pattern = compile_regex(templating.render("tenant={{ labels.t | re_escape }}",
                                              {"labels": {"t": label}}))
    assert pattern.search(f"GET tenant={label} 409")
    assert not pattern.search("GET tenant=other 409")
