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


def test_a_pattern_is_compiled_once_and_a_refused_one_every_time():
    """A `logs` step's `grep` is checked for every decision that plans it: compiled once
    (the same immutable RE2 object), while a pattern RE2 refuses is refused each time."""
    from remediator import untrusted_regex
    first = untrusted_regex.compile_regex("(timeout|refused) [0-9]+")
    misses = untrusted_regex._compile.cache_info().misses
    assert untrusted_regex.compile_regex("(timeout|refused) [0-9]+") is first
    assert untrusted_regex._compile.cache_info().misses == misses
    assert untrusted_regex.compile_regex("(timeout|refused) [0-9]+", anchored=True) is not first
    for _ in range(2):
        with pytest.raises(untrusted_regex.RegexError, match="not a valid RE2"):
            untrusted_regex.compile_regex("(?=lookahead)")


def test_a_long_pattern_from_a_label_is_not_kept_alive():
    """A `grep` rendered from a label (`{{ labels.tenant_id | re_escape }}`, shipped in
    rules/libervia.yaml) makes a distinct pattern per alert: a compiled RE2 regex holds ~250
    bytes per character, so caching every such pattern kept ~1 MB alive per 4 000-character
    label, a thousand of them ~1 GB. What the cache can hold stays small whatever labels say."""
    from remediator import untrusted_regex
    long = "tenant-" + "x" * 3990  # a literal under MAX_PATTERN, as re_escape leaves a label
    assert untrusted_regex.compile_regex(long) is not untrusted_regex.compile_regex(long)
    assert untrusted_regex.compile_regex(long).search("... tenant-" + "x" * 3990 + " ...")
    for i in range(untrusted_regex.CACHED_ENTRIES * 2):  # a storm of distinct short ones
        untrusted_regex.compile_regex(f"tenant-{i}")
    info = untrusted_regex._compile.cache_info()
    assert info.currsize <= untrusted_regex.CACHED_ENTRIES
    assert untrusted_regex.CACHED_ENTRIES * untrusted_regex.CACHED_PATTERN <= 64 << 10


class _Unscannable(list):
    def __iter__(self):
        raise AssertionError("the rule set was scanned")


def test_a_playbook_is_found_by_name_without_scanning_the_rule_set():
    """A decision with a note looks its playbook up by name: a scan of every loaded playbook
    per note grew with unrelated playbooks. The first of a name in order is the one found."""
    from remediator.playbooks.index import RuleSet
    from remediator.playbooks.models import Playbook

    playbooks = [Playbook(name=f"pb{i}", file="r.yaml", order=1000 - i, alertnames=(f"A{i}",))
                 for i in range(1000)]
    twin = Playbook(name="pb500", file="r.yaml", order=2000, alertnames=("B",))
    rules = RuleSet([*playbooks, twin])
    rules.playbooks = _Unscannable(rules.playbooks)
    assert rules.get("pb999") is playbooks[999]
    assert rules.get("pb500") is playbooks[500]
    assert rules.get("nope") is None
