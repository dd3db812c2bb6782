"""Every YAML block in README.md and docs/ is checked by the tool that will read it.

An Alertmanager config goes through `amtool check-config` and a routing test (humans still
receive what remediator receives), Prometheus rules through `promtool check rules`, playbooks
through remediator's own validator, playbook tests through their schema, a remediator config
through its loader, a Kubernetes
object must parse as one. Anything else must be marked, just above the block, with
`<!-- snippet: fragment (why) -->`, so a block cannot silently escape its check.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from remediator.config import load_config
from remediator.playbooks.schema import TEST_FILE, check_shape
from remediator.playbooks.validate import validate_paths
from tests.deploy.conftest import ROOT, require_tool, run

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_BLOCK = re.compile(r"^(<!-- snippet: (?P<mark>[^>]*?) -->\n)?```ya?ml\n(?P<body>.*?)^```", re.M | re.S)
_CONFIG_KEYS = {"listen", "mode", "store", "rules", "guards", "escalation", "operators"}


def snippets() -> list[tuple[str, str, str]]:
    found = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for m in _BLOCK.finditer(text):
            line = text[:m.start("body")].count("\n") + 1
            found.append((f"{doc.relative_to(ROOT)}:{line}", m.group("mark") or "", m.group("body")))
    return found


SNIPPETS = snippets()


@pytest.mark.parametrize("where, mark, body", SNIPPETS, ids=[w for w, _, _ in SNIPPETS])
def test_doc_snippet_passes_its_tool(tmp_path: Path, where: str, mark: str, body: str) -> None:
    data = yaml.safe_load(body)
    file = tmp_path / "snippet.yml"
    file.write_text(body, encoding="utf-8")
    if mark.startswith("fragment"):
        return  # parsed above: that is all a fragment can promise
    assert isinstance(data, dict), f"{where}: not a mapping; mark it <!-- snippet: fragment -->"
    if "route" in data:
        check_alertmanager(where, file, data)
    elif "playbooks" in data:
        result = validate_paths([str(file)])
        assert result.ok, f"{where}: " + "; ".join(map(str, result.problems))
    elif "tests" in data:  # a playbook test file: the shape `remediator test` requires
        problems = check_shape(data, TEST_FILE, ())
        assert not problems, f"{where}: {problems}"
    elif "groups" in data:
        done = run(require_tool("promtool"), "check", "rules", str(file))
        assert done.returncode == 0, f"{where}: {done.stdout}{done.stderr}"
    elif "apiVersion" in data:
        assert data.get("kind"), f"{where}: a Kubernetes object without kind"
    elif set(data) & _CONFIG_KEYS:  # a remediator config: its loader refuses any unknown key
        load_config(str(file), env={}, secrets=False)
    else:
        pytest.fail(f"{where}: no tool checks this block; mark it <!-- snippet: fragment (why) -->")


def check_alertmanager(where: str, file: Path, data: dict) -> None:
    amtool = require_tool("amtool")
    done = run(amtool, "check-config", str(file))
    assert done.returncode == 0, f"{where}: {done.stdout}{done.stderr}"
    humans = data["route"].get("receiver")
    assert humans and humans != "remediator", f"{where}: the root route must keep the humans'"
    for alertname in _routed_alertnames(data) or ["Anything"]:
        done = run(amtool, "config", "routes", "test", f"--config.file={file}",
                   f"alertname={alertname}")
        assert done.returncode == 0, done.stderr
        receivers = done.stdout.strip().split(",")
        assert "remediator" in receivers and humans in receivers, (
            f"{where}: {alertname} reaches {receivers}: humans ({humans}) must still be notified")


def _routed_alertnames(data: dict) -> list[str]:
    """The names a `alertname=~"A|B"` matcher of the remediator route lists."""
    names: list[str] = []
    for route in data["route"].get("routes", []):
        if route.get("receiver") == "remediator":
            for matcher in route.get("matchers", []):
                m = re.fullmatch(r'alertname=~?"([A-Za-z0-9_|]+)"', matcher)
                names += m.group(1).split("|") if m else []
    return names


def test_the_quick_starts_replay_plans_the_whole_code_forge_playbook(tmp_path: Path) -> None:
    """The README's first command shows the plan: the checks that compute on the logs'
    results are planned, not failed (they ended the plan with an escalation), and the
    restart, its rollout and the verification follow."""
    import json
    import subprocess
    import sys

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    payload = re.search(r"<<'JSON'\n(.*?)^JSON$", readme, re.M | re.S).group(1)
    (tmp_path / "payload.json").write_text(payload)
    done = subprocess.run([sys.executable, "-m", "remediator.cli", "replay", "payload.json",
                           "--rules", str(ROOT / "rules"), "--format", "json"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    [decision] = json.loads(done.stdout)
    assert (decision["playbook"], decision["outcome"]) == ("code-forge-s3-upload-failure", "planned")
    steps = {s["name"]: s for s in decision["steps"]}
    assert {s["outcome"] for s in steps.values()} == {"planned"}, steps
    # A check deciding on earlier results: its message as written, each expression in it
    # shown as the placeholder of the result it reads, not as Jinja.
    assert steps["bucket_exists"]["detail"] == (
        "check a condition known at run time (if it does not hold: the bucket is missing "
        "(\u27e8steps.no_bucket.result.get('matched', 0)\u27e9 NoSuchBucket lines in the logs; "
        "HTTP \u27e8steps.bucket.result.get('status', 'ok')\u27e9 on remediator's HEAD; the "
        "pod's: \u27e8steps.pod_bucket.result.get('stderr', '') | trim or 'ok'\u27e9): a "
        "Terraform change, not a restart)")
    # Its message's placeholder names the call it waits for, not the sandbox's probe of it.
    assert steps["bucket_exists"]["params"]["message"] == \
        "\u27e8steps.no_bucket.result.get(\u2026)\u27e9"
    assert list(steps)[-3:] == ["restart", "rollout", "verify"]
