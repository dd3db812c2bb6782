"""What depends on a playbook alone is worked out once per version of it, not by each of its
decisions' guards: whether it changes anything (it takes the target lock) and its durations
(a circuit breaker's window, a cooldown). Counted."""

from __future__ import annotations

import pytest

from remediator import guards
from remediator.actions import base
from remediator.actions.registry import ACTIONS
from remediator.playbooks.models import build_playbook


def _playbook(name: str) -> object:
    return build_playbook({"name": name, "match": {"alertname": "A"},
                           "target": {"kind": "deployment", "name": "web"},
                           "steps": [{"name": "look", "action": "log", "params": {"message": "x"}},
                                     {"name": "restart", "action": "kubernetes.rollout_restart",
                                      "params": {"name": "web"}}]}, "rules.yaml", 0)


def test_whether_a_playbook_mutates_is_asked_once_per_version(
        monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []
    for name in ("log", "kubernetes.rollout_restart"):
        action = ACTIONS[name]
        real = type(action).mutates
        monkeypatch.setattr(action, "mutates",
                            lambda params, real=real, action=action, name=name:
                            asked.append(name) or real(action, params))
    pb = _playbook("p")
    assert all(guards._mutates(pb) for _ in range(5))
    assert asked == ["log", "kubernetes.rollout_restart"]
    reloaded = _playbook("p")  # a reload: a new version, asked again
    assert guards._mutates(reloaded) and len(asked) == 4


def test_a_duration_is_parsed_once() -> None:
    base._kept_duration.cache_clear()
    assert [base.parse_duration(v) for v in ("1h30m", " 1h30m ", "1h30m", 90)] == [5400] * 3 + [90]
    assert base._kept_duration.cache_info()[:2] == (2, 1)  # (found, parsed)
    long = "1s" * 40  # a label's, maybe (a rendered parameter): parsed, never kept
    assert base.parse_duration(long) == base.parse_duration(long) == 40
    assert base._kept_duration.cache_info()[:2] == (2, 1)
    with pytest.raises(ValueError, match="invalid duration ' 5 minutes'"):
        base.parse_duration(" 5 minutes")
