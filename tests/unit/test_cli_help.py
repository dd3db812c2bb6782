"""Every command has a description and every flag its help, default and environment variable;
the README's CLI synopsis lists every flag that exists."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from remediator.cli import _SETTINGS, _parser

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


def commands() -> dict[str, argparse.ArgumentParser]:
    [sub] = [a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def test_every_command_and_flag_is_documented_in_its_help():
    for name, parser in commands().items():
        assert parser.description, f"{name}: no description"
        text = parser.format_help()
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            flag = "/".join(action.option_strings) or action.dest
            assert action.help, f"remediator {name} {flag}: no help"
            if action.option_strings and action.default not in (None, False, []):
                assert f"default: {action.default}" in text.replace("\n", " ") or \
                    "default" in action.help, f"remediator {name} {flag}: default not shown"
            if action.dest in _SETTINGS and action.option_strings and action.default is None:
                env = f"REMEDIATOR_{action.dest.upper()}"
                assert env in re.sub(r"\s+", " ", text), f"remediator {name} {flag}: {env} not shown"


def test_the_readme_synopsis_lists_every_flag():
    synopsis = README.split("## CLI", 1)[1].split("```", 2)[1]
    lines = {line.split()[1]: line for line in synopsis.splitlines()
             if line.startswith("remediator ")}
    for name, parser in commands().items():
        line = next((v for k, v in lines.items() if k == name), None) or \
            next(v for v in synopsis.splitlines() if f"remediator {name}" in v)
        for action in parser._actions:
            for flag in action.option_strings:
                if flag.startswith("--") and flag != "--help":
                    assert flag in line, f"README CLI synopsis: remediator {name} lacks {flag}"


def test_each_store_flag_says_where_its_decisions_go():
    """serve's store defaults to a file beside it; a replay's stays in memory whatever
    REMEDIATOR_STORE or the config say (cmd_replay), so its help must not offer that variable."""
    helps = {name: re.sub(r"\s+", " ", parser.format_help()) for name, parser in commands().items()}
    assert "default: sqlite:///remediator.db) [env REMEDIATOR_STORE]" in helps["serve"]
    replay = helps["replay"]
    assert "default: sqlite:// in memory, leaving no trace; REMEDIATOR_STORE and the config's " \
        "store are not read)" in replay
    assert "[env REMEDIATOR_STORE]" not in replay


def test_lint_permissions_help_names_everything_it_prints():
    """`lint --permissions` prints `docker:` (the Engine API endpoints) besides RBAC and IAM;
    its help said only the two."""
    import subprocess
    import sys
    root = Path(__file__).resolve().parents[2]
    printed = subprocess.run([sys.executable, "-m", "remediator.cli", "lint", "--permissions",
                              str(root / "rules")], capture_output=True, text=True, timeout=120)
    assert "docker:" in printed.stdout, printed.stdout[-2000:]
    text = re.sub(r"\s+", " ", commands()["lint"].format_help())
    assert ("print the Kubernetes RBAC rules, IAM actions and Docker Engine API endpoints the "
            "playbooks need") in text
