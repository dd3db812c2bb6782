"""docs/actions.md is `remediator schema --actions builtin`: CI fails when an action's
declaration changes and the reference is not regenerated."""

from __future__ import annotations

from pathlib import Path

from remediator.actions.base import Action, Param, rbac
from remediator.actions.reference import reference
from remediator.actions.registry import BUILTIN
from remediator.cli import main

DOC = Path(__file__).resolve().parents[2] / "docs" / "actions.md"


def test_docs_actions_md_is_the_generated_reference(capsys):
    assert main(["schema", "--actions", "builtin"]) == 0
    assert DOC.read_text(encoding="utf-8") == capsys.readouterr().out, (
        "docs/actions.md is out of date: remediator schema --actions builtin > docs/actions.md")


class _Probe(Action):
    name = "test.probe"
    summary = "A test action whose effect depends on its parameters."
    params = {"method": Param("string", default="GET", choices=("GET", "POST")),
              "name": Param("string", required=True, kind="k8s_name", description="the object"),
              "pin": Param("string", description="makes a POST safe to repeat"),
              "timeout": Param("duration", default=30.0, minimum=1)}
    permissions = rbac("apps", "deployments", "get", "patch")

    def mutates(self, params):
        return params["method"] == "POST"

    def repeatable(self, params):
        return not self.mutates(params) or bool(params.get("pin"))

    def scope(self, params):
        return [("http_host", "h:80")] if self.mutates(params) else []


def test_the_reference_reads_what_the_guards_read():
    """Mutation, repeatability and scope come from the methods the engine calls, over the
    parameters' variations; a new parameter or permission changes the text (so the doc drifts)."""
    text = reference({"test.probe": _Probe()}, title=False)
    assert text.splitlines() == [
        "[`test.probe`](#testprobe)", "",
        "## test.probe", "",
        "A test action whose effect depends on its parameters.", "",
        f"*A plugin action, from `{_Probe.__module__}`.*", "",
        "- **Changes things**: no; yes when `method` is `POST`",
        "- **After an interruption**: repeated; not repeated when `method` is `POST`",
        "- **Writes to**: HTTP mutation (`guards.http.allow`)",
        "- **Permissions**: RBAC `apps/deployments`: get, patch", "",
        "| parameter | type | required | default | description |",
        "|---|---|---|---|---|",
        "| `method` | string |  | `GET` | one of `GET`, `POST` |",
        "| `name` | string (k8s_name) | yes |  | the object |",
        "| `pin` | string |  |  | makes a POST safe to repeat |",
        "| `timeout` | duration |  | `30s` | at least 1s |"]
    assert "## kubernetes.rollout_restart" in reference(BUILTIN)
