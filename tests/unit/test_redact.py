"""Redaction's patterns run only where they can match (every decision's note and step
records pass through it), and what it returns is what running them all always returned."""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Mapping

from remediator import redact
from remediator.escalation import _valid_unicode
from remediator.templating.context import Target

SAMPLES = [
    "",
    "short",
    "- **Owner:** on-call (oncall@example.com)\n- **Source:** http://prom:9090/graph?g0.expr=up",
    "curl https://ops:hunter22@example.com/x and mail a@b.c",
    "two: http://a:b@h1/ then ftp://c@h2/ and x.y+svn://u@h3",
    "no scheme ://user@host, 9x://n@h, a://b@c://d@e",
    "https://h/p?token=abc&sig=def#frag and ?Password=x",
    "http://u @h/ spaces stop user info: http://u/x@h",
    "the secret sekret-value-123 inside, twice sekret-value-123",
    "a&token=1 b?y=1&password=p&ok=2 ?? &&sig= and no query = here, ? token=x",
    "x=1 without a separator, then a tail ?",
]


def _reference(value: str) -> str:
    """Every pattern, unconditionally."""
    value = redact._pattern[0].sub(redact.REDACTED, value) if redact._pattern else value
    value = redact._USERINFO.sub(rf"\1{redact.REDACTED}@", value)
    return redact._SECRET_QUERY.sub(rf"\1{redact.REDACTED}", value)


class _Counted:
    def __init__(self, pattern: re.Pattern[str]) -> None:
        self.pattern, self.calls = pattern, 0

    def sub(self, *args: object) -> str:
        self.calls += 1
        return self.pattern.sub(*args)  # type: ignore[arg-type]

    def match(self, *args: object) -> re.Match[str] | None:
        return self.pattern.match(*args)  # type: ignore[arg-type]


def test_redaction_scans_only_where_a_pattern_can_match_and_returns_the_same(monkeypatch):
    # Its own known secrets: the suite's earlier tests may have remembered more than
    # `_FEW`, when every text is scanned (what this test counts would not hold).
    monkeypatch.setattr(redact, "_known", set())
    monkeypatch.setattr(redact, "_pattern", None)
    redact.remember("sekret-value-123")
    for sample in SAMPLES:
        assert redact.text(sample) == _reference(sample), sample
    assert "hunter22" not in redact.text(SAMPLES[3])
    userinfo, query = _Counted(redact._USERINFO), _Counted(redact._SECRET_QUERY)
    monkeypatch.setattr(redact, "_USERINFO", userinfo)
    monkeypatch.setattr(redact, "_SECRET_QUERY", query)
    # A note's Markdown: a link with a query and an e-mail address, no user info in any URL
    # and no credential in the query. The user-info pattern tries a scheme at every word:
    # 70 us for a 2 KB note; the query pattern 15.
    redact.text(SAMPLES[2])
    assert userinfo.calls == query.calls == 0
    redact.text(SAMPLES[3])
    redact.text(SAMPLES[6])
    assert userinfo.calls == query.calls == 1
    # Known secrets: their pattern scans only a text that holds one (15 us over a note).
    expected = _reference(SAMPLES[8])
    secrets = _Counted(redact._pattern[0])
    monkeypatch.setattr(redact, "_pattern", (secrets, redact._pattern[1]))
    redact.text(SAMPLES[2])
    assert secrets.calls == 0
    assert redact.text(SAMPLES[8]) == expected and secrets.calls == 1


def test_many_known_secrets_are_all_redacted(monkeypatch):
    monkeypatch.setattr(redact, "_known", set())
    monkeypatch.setattr(redact, "_pattern", None)
    many = [f"many-secret-{i:03d}-value" for i in range(redact._FEW + 4)]
    redact.remember(*many)
    text = " ".join(many[::-3]) + " and sekret-value-123"
    assert redact.text(text) == _reference(text)
    assert "many-secret" not in redact.text(text)


def _reference_value(data: object) -> object:
    """The recursion by abstract types, as it was."""
    if isinstance(data, str):
        return _reference(data)
    if isinstance(data, Mapping):
        return {k: redact.headers(v) if str(k).lower() == "headers" and isinstance(v, Mapping)
                else _reference_value(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_reference_value(v) for v in data]
    return data


def test_a_record_is_redacted_as_by_the_abstract_types():
    redact.remember("sekret-value-123")
    record = {"name": "call", "params": {"url": SAMPLES[3], "Headers": {"Authorization": "x",
                                                                         "Accept": "y"},
                                         "n": 3, "f": 0.5, "on": True, "none": None,
                                         "args": ("a", "sekret-value-123", ["b", {1: "c"}])},
              "result": OrderedDict(headers={"X-Token": "t"}, body=SAMPLES[6]),
              "target": Target("ns/deployment/web"), 7: "sekret-value-123"}
    assert redact.value(record) == _reference_value(record)
    redacted = redact.value(record)
    assert redacted["params"]["Headers"] == {"Authorization": "<redacted>", "Accept": "y"}
    assert redacted["result"]["headers"] == {"X-Token": "<redacted>"}
    assert redacted[7] == "<redacted>" and "sekret" not in str(redacted)


def test_a_lone_surrogate_is_replaced_and_valid_text_kept_as_it_is():
    note = {"markdown": "# title — ok \U0001f525", "labels": {"a\ud800": ["x\udfff", 1]}}
    assert _valid_unicode(note) == {"markdown": note["markdown"],
                                    "labels": {"a\ufffd": ["x\ufffd", 1]}}


def test_a_step_record_is_journaled_whole_and_redacted_as_a_mapping_would_be():
    """StepRecord.to_dict names its fields (no generic walk over engine-set values): it
    still carries every field, redacted exactly as the redaction of all of it would be."""
    from dataclasses import asdict

    from remediator.engine.executor import StepRecord
    redact.remember("sekret-value-123")
    record = StepRecord(name="call", action="http.request",
                        params={"url": SAMPLES[3], "headers": {"Authorization": "x"}},
                        outcome="failed", detail="refused by sekret-value-123: " + SAMPLES[6],
                        guard="scope_denied", mutating=True, uncertain=True,
                        result={"body": ["sekret-value-123", {"Headers": {"Cookie": "c"}}]},
                        attempts=2, started_at="2026-11-21T10:00:00Z", duration_seconds=0.5)
    journaled = record.to_dict()
    assert journaled == _reference_value(asdict(record))
    assert "sekret" not in str(journaled) and "hunter22" not in str(journaled)


def test_user_info_is_redacted_whatever_comes_before_its_scheme_or_is_in_it():
    for text in ("1a://ops:hunter22@h/x", "x_https://ops:hunter22@h/x", "9x://ops:hunter22@h",
                 "пhttp://ops:hunter22@h", "(https://ops:hunter22@h)",
                 "postgresql://ops:hunter22@hunter22@db/x"):  # a raw `@` in the password
        out = redact.text(text)
        assert "hunter22" not in out and redact.REDACTED in out, out
