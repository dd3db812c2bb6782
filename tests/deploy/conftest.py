"""Fixtures for the deploy/ tests: the rendered Kustomize base and the tools that check it."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.kubeapi.rbac import generator

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUSTOMIZE_DIR = DEPLOY / "kubernetes"


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed")
    return path


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120)


def render_kustomize(directory: Path = KUSTOMIZE_DIR) -> list[dict[str, Any]]:
    kubectl = require_tool("kubectl")
    result = run(kubectl, "kustomize", str(directory))
    assert result.returncode == 0, f"kubectl kustomize {directory} failed:\n{result.stderr}"
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def load_generator() -> ModuleType:
    """deploy/kubernetes/generate.py, which is a script rather than a package module."""
    return generator()


@pytest.fixture(scope="session")
def rendered() -> list[dict[str, Any]]:
    return render_kustomize()


class Objects:
    def __init__(self, docs: list[dict[str, Any]]):
        self.docs = docs

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d["kind"] == kind]

    def one(self, kind: str, name_prefix: str = "remediator") -> dict[str, Any]:
        found = [d for d in self.all(kind) if d["metadata"]["name"].startswith(name_prefix)]
        assert len(found) == 1, f"expected one {kind} named {name_prefix}*, found {len(found)}"
        return found[0]

    def configmap(self, name: str) -> dict[str, Any]:
        # Generated ConfigMaps carry a content hash suffix: remediator-rules-<hash>.
        found = [d for d in self.all("ConfigMap") if d["metadata"]["name"].rsplit("-", 1)[0] == name]
        assert len(found) == 1, f"expected one ConfigMap {name}-<hash>, found {len(found)}"
        return found[0]


@pytest.fixture(scope="session")
def objects(rendered) -> Objects:
    return Objects(rendered)


# --- PromQL: which metrics an expression reads ---------------------------------------------------

_PROMQL_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_PROMQL_GROUPING = re.compile(
    r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_PROMQL_IDENT = re.compile(r"(?<![\w$.])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()")
_PROMQL_KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
                    "group_left", "group_right", "inf", "nan", "Inf", "NaN"}


def metrics_in(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (strings, label matchers, ranges, grouping
    clauses, function names and Grafana variables removed)."""
    text = _PROMQL_STRING.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = _PROMQL_GROUPING.sub("", text)
    text = re.sub(r"\$\{?\w+\}?", "", text)
    return {m for m in _PROMQL_IDENT.findall(text) if m not in _PROMQL_KEYWORDS}


def exported_metrics() -> set[str]:
    """Every series name remediator/metrics.py exposes, plus Prometheus's own `up`."""
    from remediator.metrics import Metrics

    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"),
                "summary": ("", "_count", "_sum"), "info": ("_info",), "gauge": ("",)}
    names = {"up"}
    for family in Metrics().registry.collect():
        names.update(family.name + s for s in suffixes[family.type])
    return names
