"""Helpers for driving one action the way the engine does: validated parameters first."""

from __future__ import annotations

from typing import Any

from remediator.actions.base import Action, check_params
from remediator.actions.registry import ACTIONS


def params(action: Action, **raw: Any) -> dict[str, Any]:
    """The action's parameters as the engine passes them after rendering (defaults applied)."""
    checked, problems = check_params(action, raw, rendered=True)
    assert not problems, problems
    return checked


def problems(action: str, /, **raw: Any) -> list[str]:
    """What the validator says about these parameters (empty when they are fine)."""
    return [m for _, m in check_params(ACTIONS[action], raw, rendered=True)[1]]
