"""Every action by name. Adding an action touches its own module and this list, nothing else."""

from __future__ import annotations

from .alertmanager import AlertStatus, Silence
from .base import Action
from .core import Log, Wait
from .http import HttpRequest
from .prometheus import PrometheusQuery, PrometheusWaitUntil

ACTIONS: dict[str, Action] = {
    a.name: a
    for a in (
        Log(), Wait(), HttpRequest(),
        PrometheusQuery(), PrometheusWaitUntil(),
        AlertStatus(), Silence(),
    )
}


def get_action(name: str) -> Action | None:
    return ACTIONS.get(name)
