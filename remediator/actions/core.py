"""Actions that need no backend: `log` and `wait`."""

from __future__ import annotations

from typing import Any

from .. import templating
from .base import Action, ActionContext, ActionError, Param


class Log(Action):
    name = "log"
    local = True
    summary = "Write a message to the execution's log and record it on the step."
    params = {
        "message": Param("string", required=True),
        "level": Param("string", default="info", choices=("debug", "info", "warning", "error")),
    }

    def describe(self, params: dict[str, Any]) -> str:
        return f"log {params['level']}: {params['message']}"

    async def run(self, params: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
        ctx.log.log(_LEVELS[params["level"]], params["message"])
        return {"message": params["message"]}


class Wait(Action):
    name = "wait"
    summary = "Pause the execution, e.g. to let a fix take effect before verifying it."
    params = {"duration": Param("duration", required=True, minimum=0)}

    def own_timeout(self, params: dict[str, Any]) -> float | None:
        value = params.get("duration")
        return float(value) if isinstance(value, int | float) else None

    def describe(self, params: dict[str, Any]) -> str:
        return f"wait {params['duration']:g}s"

    async def run(self, params: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
        await ctx.sleep(params["duration"])
        return {"waited_seconds": params["duration"]}


class Check(Action):
    name = "check"
    local = True
    summary = ("Fail unless a condition holds, so a playbook stops (and escalates, with "
               "on_failure: escalate) on a result, e.g. a validation that did not pass.")
    params = {
        "that": Param("boolean", required=True, description="a template rendering to true/false"),
        "message": Param("string", default="the condition does not hold"),
    }

    def describe(self, params: dict[str, Any]) -> str:
        message, that = params.get("message", "the condition does not hold"), params["that"]
        if isinstance(message, str) and templating.only_placeholder(message):
            # A plan shows a message that branches on an earlier result as the placeholder it
            # stopped at: alone, it would read as if it were the message.
            message = "its message depends on earlier results"
        if that is True:  # known before the run (a plan), or as it ran
            return f"the condition holds (else the run stops here: {message})"
        if that is False:  # (`when: <a problem>` with `that: false`: it stops the run)
            return f"the run stops here: {message}"
        return f"check a condition known at run time (if it does not hold: {message})"

    async def run(self, params: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
        if not params["that"]:
            raise ActionError(params["message"], {"that": False})
        return {"that": True, "detail": "the condition holds"}


_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
