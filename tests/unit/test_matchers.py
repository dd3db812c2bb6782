import pytest

from remediator.playbooks.matchers import MatcherError, parse_matcher


@pytest.mark.parametrize("text, labels, expected", [
    ('env="prod"', {"env": "prod"}, True),
    ('env="prod"', {"env": "preprod"}, False),
    ("env=prod", {"env": "prod"}, True),
    ('env!="prod"', {"env": "dev"}, True),
    ('env!="prod"', {}, True),
    ('env=~"prod"', {"env": "preprod"}, False),  # anchored, as in Alertmanager
    ('env=~"prod|staging"', {"env": "staging"}, True),
    ('env=~".*prod"', {"env": "preprod"}, True),
    ('env!~"prod.*"', {"env": "production"}, False),
    ('env=""', {}, True),  # a missing label is the empty string
    ('severity=~"critical|warning"', {"severity": "info"}, False),
    ('path="a\\"b"', {"path": 'a"b'}, True),
    # RE2, as Alertmanager's Go regexp: `$` is the end of the text, `.` stops at a newline,
    # classes are ASCII
    ('env=~"prod"', {"env": "prod\n"}, False),
    ('env=~".*"', {"env": "a\nb"}, False),
    (r"n=~\d+", {"n": "\u0663"}, False),
    (r"n=~\w+", {"n": "\u00e9"}, False),
])
def test_matchers_behave_like_alertmanager(text, labels, expected):
    assert parse_matcher(text).matches(labels) is expected


@pytest.mark.parametrize("text, message", [
    ("env", "expected name=\"value\""),
    ('env=~"(unclosed"', "invalid regex"),
    ('env="unterminated', "unterminated quoted value"),
    ("9env=x", "expected name"),
    ("env=a,b", "quote a value"),
    ('env=~"(?=prod)"', "not a valid RE2 regex"),  # lookarounds and backreferences: RE2 refuses
    (r"x=~(a)\1", "not a valid RE2 regex"),
])
def test_bad_matchers_are_refused(text, message):
    with pytest.raises(MatcherError, match=message.replace("(", r"\(")):
        parse_matcher(text)
