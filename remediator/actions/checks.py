"""The live checks behind the `precondition` guard, built from the action backends."""

from __future__ import annotations

from typing import Any

from ..alerts import Alert
from .alertmanager import alert_firing
from .base import ActionError
from .prometheus import instant_query


def precondition_check(backends: Any) -> Any:
    """A callable (promql, alert, check_firing) -> (holds, why) for guards.Guards;
    holds is None when a backend could not answer."""

    async def check(promql: str | None, alert: Alert,
                    check_firing: bool) -> tuple[bool | None, str]:
        try:
            if promql is not None:
                result = await instant_query(backends, promql)
                if not result["series"] and result["value"] in (None, 0.0):
                    return False, f"precondition no longer holds: {promql} returned no result"
            if check_firing and not await alert_firing(backends, alert):
                return False, f"{alert.alertname} is no longer firing at Alertmanager"
        except ActionError as exc:
            return None, f"precondition could not be checked, so nothing was done: {exc}"
        return True, ""

    return check
