"""The registry of actions: every built-in's name known from the start, its module imported
when the action is first looked up (counts of modules, not times)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from remediator.actions.base import Action
from remediator.actions.registry import _BUILTIN, ACTIONS, BUILTIN, Actions


def test_each_built_in_is_the_action_of_its_name_and_the_same_in_both_maps():
    assert list(BUILTIN) == list(_BUILTIN) and len(BUILTIN) == len(_BUILTIN) == 32
    for name in _BUILTIN:
        assert isinstance(BUILTIN[name], Action) and BUILTIN[name].name == name
        assert ACTIONS[name] is BUILTIN[name]
    assert set(BUILTIN) <= set(ACTIONS)


_FRESH = """
import json, sys
from remediator.actions.registry import ACTIONS, BUILTIN
def actions():
    return sorted(m for m in sys.modules if m.startswith("remediator.actions."))
before = actions()
names = sorted(ACTIONS)
known = "kubernetes.scale" in ACTIONS and "docker.exec" in BUILTIN and "no.such" not in ACTIONS
after_names = actions()
scale = ACTIONS["kubernetes.scale"].name
print(json.dumps({"before": before, "names": len(names), "known": known,
                  "after_names": after_names, "scale": scale, "after": actions()}))
"""


def test_a_built_in_module_is_imported_when_its_action_is_first_looked_up():
    done = subprocess.run([sys.executable, "-c", _FRESH], capture_output=True, text=True,
                          timeout=60, check=True)
    found = json.loads(done.stdout)
    assert "remediator.actions.kubernetes" not in found["before"]
    assert found["known"] and found["names"] >= 32 and found["after_names"] == found["before"]
    assert found["scale"] == "kubernetes.scale"
    assert "remediator.actions.kubernetes" in found["after"]


def test_setting_and_deleting_an_action():
    actions = Actions(["log"])
    with pytest.raises(KeyError):
        actions["no.such"]
    replacement = object()
    actions["log"] = replacement  # type: ignore[assignment]
    actions["example.x"] = replacement  # type: ignore[assignment]
    assert actions["log"] is replacement and list(actions) == ["log", "example.x"]
    del actions["log"], actions["example.x"]
    assert "log" not in actions and len(actions) == 0 and actions.get("log") is None
    with pytest.raises(KeyError):
        del actions["log"]
