"""The Dockerfile, checked without a Docker engine: its structure statically, and its build
stage by running the same wheel build on exactly the files the build context would hold."""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml

from tests.deploy.conftest import DEPLOY, ROOT, run

DOCKERFILE = ROOT / "Dockerfile"
BUILD_TOOLS = re.compile(r"\b(gcc|g\+\+|make|build-essential|clang|cargo|rustc|python3?-dev|"
                         r"libc6?-dev|apt-get|apk|pip3?\s+install)\b")


class Stage:
    def __init__(self, base: str, name: str | None):
        self.base, self.name = base, name
        self.instructions: list[tuple[str, str]] = []

    def all(self, op: str) -> list[str]:
        return [arg for o, arg in self.instructions if o == op]


def parse(text: str) -> tuple[dict[str, str], list[Stage]]:
    """(global ARG defaults, stages) from a Dockerfile: continuations joined, comments dropped."""
    logical = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines()
                                             if not line.lstrip().startswith("#")))
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical.splitlines():
        if not line.strip():
            continue
        op, _, rest = line.strip().partition(" ")
        op, rest = op.upper(), rest.strip()
        if op == "FROM":
            parts = rest.split()
            base = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), parts[0])
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(base, name))
        elif op == "ARG" and not stages:
            key, _, default = rest.partition("=")
            args[key] = default
        else:
            assert stages, f"{op} before FROM"
            stages[-1].instructions.append((op, rest))
    return args, stages


def final_stage() -> Stage:
    return parse(DOCKERFILE.read_text())[1][-1]


def ignored(path: str, patterns: list[str]) -> bool:
    """.dockerignore semantics (last matching pattern wins; a directory match covers its
    contents; `!` re-includes), enough for the patterns this repository uses."""
    parts = path.split("/")
    candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    result = False
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw.lstrip("!").strip("/")
        options = [pattern] + ([pattern[3:]] if pattern.startswith("**/") else [])
        if any(fnmatch.fnmatchcase(c, p) for c in candidates for p in options):
            result = not negate
    return result


def dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def build_context(into: Path) -> list[str]:
    """Copy what `docker build .` would send (after .dockerignore) into `into`."""
    patterns = dockerignore()
    sent = []
    for f in sorted(ROOT.rglob("*")):
        rel = f.relative_to(ROOT).as_posix()
        if f.is_file() and not rel.startswith(".git/") and not ignored(rel, patterns):
            (into / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, into / rel)
            sent.append(rel)
    return sent


# --- structure -------------------------------------------------------------------------------------

def test_multi_stage_onto_slim_python():
    _, stages = parse(DOCKERFILE.read_text())
    assert len(stages) >= 2, "build in one stage, run in another"
    final = stages[-1]
    assert re.fullmatch(r"python:3\.\d+-slim(-\w+)?", final.base), final.base
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    version = re.match(r"python:(3\.\d+)", final.base).group(1)
    assert requires == f">={version}" or requires.startswith(f">={version}"), (requires, version)
    copies = [c for c in final.all("COPY") if c.startswith("--from=")]
    assert copies, "the final stage takes the virtualenv from the build stage"
    builder = {s.name for s in stages[:-1]}
    assert {c.split()[0].removeprefix("--from=") for c in copies} <= builder


def test_no_build_tools_or_package_installs_in_the_final_image():
    for run_line in final_stage().all("RUN"):
        assert not BUILD_TOOLS.search(run_line), run_line


def test_runs_as_the_unprivileged_user_the_deployment_expects():
    users = final_stage().all("USER")
    assert users, "the final stage must set USER"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0, "numeric, non-root (runAsNonRoot checks numerically)"
    deployment = yaml.safe_load((DEPLOY / "kubernetes" / "deployment.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]["securityContext"]
    assert int(uid) == pod["runAsUser"]
    assert not gid or int(gid) == pod["runAsGroup"]


def test_entrypoint_is_remediator_serve_on_the_deployment_port():
    final = final_stage()
    assert json.loads(final.all("ENTRYPOINT")[-1]) == ["remediator", "serve"]
    cmd = json.loads(final.all("CMD")[-1])
    assert "--listen=0.0.0.0:9095" in cmd, "reachable from outside the container by default"
    deployment = yaml.safe_load((DEPLOY / "kubernetes" / "deployment.yaml").read_text())
    ports = deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
    assert [int(p) for p in final.all("EXPOSE")] == [p["containerPort"] for p in ports]


def test_copied_sources_exist_and_are_in_the_build_context():
    patterns = dockerignore()
    for stage in parse(DOCKERFILE.read_text())[1]:
        for copy in stage.all("COPY"):
            if copy.startswith("--from="):
                continue
            *sources, _dest = copy.split()
            for src in sources:
                assert (ROOT / src).exists(), f"COPY {src}: not in the repository"
                assert not ignored(src.rstrip("/"), patterns), f"COPY {src}: excluded by .dockerignore"


def test_dockerignore_keeps_secrets_tests_and_state_out():
    patterns = dockerignore()
    for path in (".git/config", "tests/unit/test_alerts.py", "deploy/kubernetes/config.yaml",
                 "remediator.db", "escalations/note.md", "remediator/__pycache__/cli.cpython-311.pyc",
                 ".venv/bin/python", "bench/run.py"):
        assert ignored(path, patterns), path
    for path in ("pyproject.toml", "remediator/cli.py", "remediator/actions/base.py"):
        assert not ignored(path, patterns), path


# --- the build stage, run here --------------------------------------------------------------------

def test_the_build_context_builds_a_wheel_with_the_console_script(tmp_path):
    """The build stage's `pip wheel --no-deps .`, on only the files the context holds."""
    context = tmp_path / "context"
    context.mkdir()
    sent = build_context(context)
    assert "README.md" in sent, "pyproject.toml names README.md: the wheel build needs it"
    assert not [s for s in sent if s.startswith(("tests/", "deploy/", ".git/"))]
    result = run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir",
                 str(tmp_path / "dist"), ".", cwd=context)
    if "satisfies the requirement setuptools" in result.stderr:
        pytest.skip("no package index reachable for the isolated build's setuptools")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    wheel = next((tmp_path / "dist").glob("remediator-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        assert "remediator/cli.py" in names
        assert not [n for n in names if n.startswith(("tests/", "deploy/"))]
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        assert "remediator = remediator.cli:main" in zf.read(entry_points).decode()
