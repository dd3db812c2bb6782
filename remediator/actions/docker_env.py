"""A container's environment fit for the audit store and an escalation note (mailed to teams):
each variable judged by secret_text.py, the one filter for what a container holds or prints
(exec output goes through it too).
"""

from __future__ import annotations

from typing import Any

from .secret_text import masked, secret_variable


def environment(info: dict[str, Any]) -> dict[str, Any]:
    """`environment` (name: value, secrets masked) and `environment_withheld` (sorted names)."""
    env, withheld = {}, []
    for item in (info.get("Config") or {}).get("Env") or []:
        name, _, value = item.partition("=")
        if secret_variable(name, value):
            withheld.append(name)
        else:
            env[name] = masked(value)
    return {"environment": env, "environment_withheld": sorted(withheld)}
