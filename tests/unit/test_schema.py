"""The playbook schema: JSON Schema for editors, `check_shape` for the validator, and the
position-keeping YAML loader both stand on."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from remediator.actions.registry import ACTIONS
from remediator.cli import main
from remediator.playbooks import source as source_module
from remediator.playbooks.schema import TEST_FILE, check_shape, json_schema
from remediator.playbooks.source import SourceError, load_source

TESTS = Path(__file__).parent.parent
GOOD = TESTS / "playtest" / "rules" / "shop.yaml"


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    schema = json_schema()
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def test_schema_command_prints_the_schema(capsys):
    assert main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out) == json_schema()


def test_every_action_and_parameter_is_in_the_schema():
    step = json_schema()["properties"]["playbooks"]["items"]["properties"]["steps"]["items"]
    assert step["properties"]["action"]["enum"] == sorted(ACTIONS)
    by_action = {rule["if"]["properties"]["action"]["const"]: rule["then"] for rule in step["allOf"]}
    for name, action in ACTIONS.items():
        params = by_action[name]["properties"]["params"]
        assert set(params["properties"]) == set(action.params)
        assert set(params.get("required", [])) == {n for n, p in action.params.items() if p.required}


def test_valid_playbooks_validate(validator):
    assert list(validator.iter_errors(yaml.safe_load(GOOD.read_text()))) == []


@pytest.mark.parametrize("case", ["unknown_key", "wrong_type", "missing_required", "empty_alertname",
                                  "bad_name", "unknown_action", "unknown_param", "param_value"])
def test_editors_reject_what_the_validator_rejects(validator, case):
    data = yaml.safe_load((TESTS / "lint" / f"{case}.yaml").read_text())
    assert list(validator.iter_errors(data)), f"{case}: the JSON Schema accepts it"


def test_templates_are_accepted_for_typed_parameters(validator):
    data = {"playbooks": [{"name": "x", "match": {"alertname": "A"}, "steps": [
        {"name": "w", "action": "wait", "params": {"duration": "{{ labels.wait }}"}},
        {"name": "q", "action": "http.request",
         "params": {"url": "https://x.example", "expect_status": "{{ labels.codes }}"}}]}]}
    assert list(validator.iter_errors(data)) == []


def test_test_file_schema():
    jsonschema.Draft7Validator.check_schema(TEST_FILE)
    data = yaml.safe_load((TESTS / "playtest" / "rules" / "shop_test.yaml").read_text())
    assert list(jsonschema.Draft7Validator(TEST_FILE).iter_errors(data)) == []
    assert check_shape(data, TEST_FILE, ()) == []


# --- check_shape -----------------------------------------------------------------------------

def test_check_shape_messages():
    schema = {"type": "object", "additionalProperties": {"type": "string"},
              "properties": {"items": {"type": "array", "minItems": 1},
                             "when": {"type": ["string", "null"]}}}
    assert check_shape({"a": "x", "b": 3, "items": [], "when": None}, schema, ()) == [
        (("b",), "b: expected string, got integer (quote it)"),
        (("items",), "items: must not be empty"),
    ]


def test_leaves_checked_by_their_type_alone_still_tell_a_bool_from_a_number():
    # Such leaves are checked by the exact class of the value (bool is a subclass of int).
    schema = {"type": "object", "additionalProperties": {"type": "integer"},
              "properties": {"n": {"type": "number"}, "b": {"type": "boolean"},
                             "items": {"type": "array", "items": {"type": "integer"}}}}
    assert check_shape({"n": True, "b": 1, "x": False, "items": [1, True]}, schema, ()) == [
        (("n",), "n: expected number, got boolean"),
        (("b",), "b: expected boolean, got integer"),
        (("x",), "x: expected integer, got boolean"),
        (("items", 1), "items[1]: expected integer, got boolean"),
    ]
    assert check_shape({"n": 1.5, "b": False, "x": 2, "items": [3]}, schema, ()) == []


@pytest.mark.parametrize("value", ["restart\n", "1\u0662:00"])
def test_patterns_match_whole_ascii_values(value):
    # `$` accepts a trailing newline and Python's `\d` Unicode digits; a pattern is the whole value
    schema = {"type": "string", "pattern": r"^([a-z_][a-z0-9_]*|[0-2]\d:\d\d)$"}
    assert check_shape(value, schema, ()) != []
    assert check_shape("restart", schema, ()) == check_shape("12:00", schema, ()) == []


# --- the loader ---------------------------------------------------------------------------------

def test_positions_point_at_keys_and_items():
    src = load_source("f.yaml", "a:\n  b: 1\n  c:\n    - x\n    - {d: 2}\n")
    assert src.data == {"a": {"b": 1, "c": ["x", {"d": 2}]}}
    assert src.where(("a", "b")) == (2, 3)
    assert src.where(("a", "c")) == (3, 3)       # the key, not the block below it
    assert src.where(("a", "c", 1, "d")) == (5, 8)
    assert src.where(("a", "c", 1, "missing")) == (5, 7)  # nearest ancestor


def test_duplicate_keys_merge_keys_and_aliases():
    text = ("base: &b {x: 1, y: 2}\n"
            "m:\n  <<: *b\n  y: 3\n"
            "n: *b\n"
            "d: 1\nd: 2\n")
    src = load_source("f.yaml", text)
    assert src.data == {"base": {"x": 1, "y": 2}, "m": {"x": 1, "y": 3},
                        "n": {"x": 1, "y": 2}, "d": 2}
    assert [str(p) for p in src.problems] == [
        "f.yaml:7:1: error: duplicate key 'd' (first at line 6); YAML keeps only the last one"]


@pytest.mark.parametrize(("text", "message"), [
    ("a: !vault x\n", "f.yaml:1:4: error: unsupported YAML tag '!vault'"),
    ("? [a]\n: 1\n", "f.yaml:1:3: error: a mapping key must be a plain value"),
    ("a: 'x\n", "f.yaml:2:1: error: YAML syntax: found unexpected end of stream (while scanning a "
                "quoted scalar started at line 1, column 4)"),
    ("a: 1\n---\nb: 2\n", "f.yaml:2:1: error: YAML syntax: but found another document (expected a "
                          "single document in the stream started at line 1, column 1)"),
])
def test_load_errors_are_located(text, message):
    with pytest.raises(SourceError) as error:
        load_source("f.yaml", text)
    if yaml.__with_libyaml__:
        assert str(error.value) == message
    else:
        assert str(error.value).split(": ")[0] == message.split(": ")[0]


def test_alias_bombs_are_refused(monkeypatch):
    monkeypatch.setattr(source_module, "MAX_NODES", 1000)
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]" for i in range(1, 6)]
    with pytest.raises(SourceError, match="more than 1000 YAML nodes"):
        load_source("bomb.yaml", "\n".join(lines) + "\n")


@pytest.mark.parametrize("text", ["a: &r {again: *r}\n", "a: &r [x, *r]\n", "<<: &m {b: *m}\n",
                                  "a: " + "[" * 900 + "]" * 900 + "\n"])
def test_an_alias_inside_itself_or_deep_nesting_is_a_located_error(text):
    """Not a RecursionError traceback (lint, test and serve's config all load this way)."""
    with pytest.raises(SourceError, match=r"f\.yaml:1:\d+: error: nested deeper than 64 levels"):
        load_source("f.yaml", text)
