"""markdown_text: an untrusted value renders as exactly its characters, in CommonMark as the
console renders a note (markdown-it), whatever punctuation it holds."""

from __future__ import annotations

import html
import random

from remediator import markdown_text
from remediator.console import _markdown

HOSTILE = ["[click me](https://evil.example)", "![x](https://tracker/img)", "# HEADING",
           "<img src=x onerror=alert(1)>", "<https://evil.example>", "a` [x](https://e) `b",
           "**bold** _it_ ~~gone~~", "1. item", "2) item", "- bullet", "+ bullet", "> quote",
           "===", "a | b", "\\[not a link](https://e)", "&lt;b&gt;", "x\n# INJECTED\n[y](https://e)",
           "``", "`", "a\\", "[a]: https://evil.example", "*", "-", "10.", "https://e.example",
           "&amp;", "&#65;", "&#x41;", "~~gone~~", "~~~", "---", "- - -", "___", "***", "##",
           "###### h", "####### h", "1)", "+", "=", "= =", "\t- x", "  1. x"]


def _shown(markdown: str) -> str:
    """What a reader sees of one paragraph, which must be text alone (no tag in it)."""
    out = _markdown().render(markdown).strip()
    assert out.startswith("<p>") and out.endswith("</p>") and "<" not in out[3:-4], out
    return html.unescape(out[3:-4])


def test_a_value_is_text_that_renders_as_itself():
    rng = random.Random(7)
    alphabet = "[]()!<>`*_~#|\\&=+-.:/ \nab1;x"
    samples = HOSTILE + ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 24)))
                         for _ in range(6000)]
    for value in samples:
        seen = value.replace("\r", " ").replace("\n", " ")
        if not seen.strip():
            continue
        # at a line's start (a next step's list item) and within a line
        for prefix in ("", "x "):
            if not prefix and seen.startswith(("    ", "\t")):
                continue  # an indented code block: literal text too, not a paragraph
            shown = _shown(prefix + markdown_text.text(value))
            assert shown == (prefix + seen).strip(" "), (value, shown)
        assert markdown_text.unescape(markdown_text.text(value)) == seen, value


def test_a_value_as_code_cannot_leave_its_span():
    for value in [*HOSTILE, "`a`", "``a``", " `x` ", "a`b``c```d"]:
        rendered = _markdown().render("x " + markdown_text.code(value)).strip()
        assert rendered.count("<code>") == 1 and rendered.endswith("</code></p>"), (value, rendered)
        shown = html.unescape(rendered.split("<code>", 1)[1][:-len("</code></p>")])
        assert shown == value.replace("\n", " "), (value, shown)


def test_label_values_in_an_annotation_are_text_the_authors_markdown_stays():
    link = "[click me](https://evil.example)"
    prose = f"Pod {link} is down: see [the dashboard](https://grafana.example/d) and {link}"
    rendered = _markdown().render(markdown_text.within(prose, ["prod", link, "x"]))
    assert rendered.count("<a href") == 1 and 'href="https://grafana.example/d"' in rendered
    assert rendered.count(html.escape(link, quote=False)) == 2
    assert markdown_text.within(prose, ["prod", "web-1"]) == prose  # nothing to escape


def test_what_makes_no_markup_is_left_as_it_is():
    """A backslash shows as itself inside a code span an operator copies a command from:
    addresses, versions, numbers, flags, query strings and paths are not escaped."""
    for value in ["10.20.30.40:9100", "1.25.3", "0.95", "-flag", "--dry-run", "#tag",
                  "http://h/x?a=1&b=2", "~/.kube/config", "a~b", "+1", "=x", "pg_up", "1.x"]:
        assert markdown_text.text(value) == value, value


def test_unescape_without_a_backslash_or_a_backtick_is_the_full_scan():
    """unescape's shortcuts (no backslash: nothing to remove; no backtick: no code) give
    what the scan for code spans and fences gives."""
    def scanned(markdown: str) -> str:
        out, at = [], 0
        for found in markdown_text._CODE.finditer(markdown):
            out += [markdown_text._ESCAPED.sub(r"\1", markdown[at:found.start()]), found.group()]
            at = found.end()
        return "".join([*out, markdown_text._ESCAPED.sub(r"\1", markdown[at:])])

    rng = random.Random(11)
    for alphabet in ("\\[]*_ab —\n", "`\\[]*_ab —\n", "`[]*_ab —\n"):
        for _ in range(3000):
            value = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
            assert markdown_text.unescape(value) == scanned(value), value
