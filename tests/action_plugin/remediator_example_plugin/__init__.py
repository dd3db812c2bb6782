"""Two example actions: `example.open_ticket` files a ticket in an HTTP issue tracker, and
`example.annotate` records a note on a Deployment (it declares the RBAC it needs).

`example.open_ticket` is a complete plugin action: declared parameters (one literal: no
alert label picks the tracker), it mutates (so lint demands a guard and the guards and
budget apply), it is not repeatable after a crash (a second ticket), it describes itself for
dry-run and says which errors are worth a retry. It uses remediator's shared HTTP session, as
the built-ins do.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from remediator.actions.base import (
    Action,
    ActionContext,
    ActionError,
    Param,
    Permission,
    TransientError,
    rbac,
)
from remediator.actions.kube_client import MERGE, NAME, NAMESPACE, KubeAction, named, patch_workload


class OpenTicket(Action):
    name = "example.open_ticket"
    summary = "Open a ticket in the team's tracker (POST JSON to its API)."
    mutating = True
    params = {
        "tracker": Param("string", required=True, literal=True,
                         description="the tracker's API URL, written in the playbook"),
        "title": Param("string", required=True, description="the ticket's title"),
        "priority": Param("string", default="p3", choices=("p1", "p2", "p3", "p4")),
    }

    def describe(self, params: dict[str, Any]) -> str:
        return f"would open a {params['priority']} ticket {params['title']!r} at {params['tracker']}"

    def is_transient(self, exc: BaseException) -> bool:
        return isinstance(exc, TransientError | aiohttp.ClientConnectionError)

    async def run(self, params: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
        body = {"title": params["title"], "priority": params["priority"],
                "execution": ctx.execution_id}
        async with ctx.backends.http().post(params["tracker"], json=body) as resp:
            if resp.status >= 500:
                raise TransientError(f"tracker answered {resp.status}", {"status": resp.status})
            if resp.status >= 300:
                raise ActionError(f"tracker refused the ticket: {resp.status}",
                                  {"status": resp.status}, unapplied=resp.status >= 400)
            return {"status": resp.status}


class Annotate(KubeAction):
    """`kubectl annotate deployment NAME example.com/remediation=NOTE --overwrite`.

    It declares its permission: `lint --permissions` and deploy/kubernetes/generate.py grant
    it `patch` on the deployment the step names (resourceNames when the name is literal), and
    nothing else, so the call fails with 403 if the declaration is wrong. Setting the same
    annotation twice leaves the same object: it is safe to repeat after a crash.
    """

    name = "example.annotate"
    summary = "Record a note on a Deployment as its example.com/remediation annotation."
    mutating = True
    idempotent = True
    params = {"namespace": NAMESPACE, "name": NAME,
              "note": Param("string", required=True, description="the annotation's value")}
    permissions = rbac("apps", "deployments", "patch")
    KEY = "example.com/remediation"

    def permissions_for(self, params: dict[str, Any]) -> tuple[Permission, ...]:
        return named(self.permissions, params, {"deployments"})

    def touches(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"kind": "deployment", "namespace": params.get("namespace"),
                "name": params.get("name")}

    def describe(self, params: dict[str, Any]) -> str:
        return (f"would annotate deployment {params['namespace']}/{params['name']} with "
                f"{self.KEY}={params['note']!r}")

    async def run(self, params: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
        body = {"metadata": {"annotations": {self.KEY: params["note"]}}}
        await patch_workload(ctx.backends, "deployment", params["namespace"], params["name"],
                             body, MERGE)
        return {"annotation": self.KEY, "note": params["note"]}
