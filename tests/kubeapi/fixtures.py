"""Pytest plugin: fixtures for the Kubernetes API test server.

Enable with ``pytest_plugins = ["tests.kubeapi.fixtures"]`` (root conftest or a test
module). One server runs per session and is ``reset()`` before every test that
uses it, which is much faster than binding a new port and re-running kubectl
discovery for each test.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .server import KubeAPIServer

KUBECTL = os.environ.get("KUBECTL", "/usr/bin/kubectl")
Kubectl = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="session")
def kubeapi_server() -> Iterator[KubeAPIServer]:
    """The session-wide server (prefer ``kubeapi``, which also resets it)."""
    server = KubeAPIServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def kube_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """kubectl's discovery cache; kept out of ~/.kube so stale ports never collide."""
    return tmp_path_factory.mktemp("kube-cache")


@pytest.fixture
def kubeapi(kubeapi_server: KubeAPIServer) -> KubeAPIServer:
    """A clean server: only namespaces default/kube-system/kube-public exist."""
    kubeapi_server.reset()
    return kubeapi_server


@pytest.fixture
def kubeconfig(kubeapi: KubeAPIServer, tmp_path: Path, kube_cache_dir: Path,
               monkeypatch: pytest.MonkeyPatch) -> Path:
    """Path to a kubeconfig for ``kubeapi`` with the remediator's service account token
    (authorized by RBAC, see ``KubeAPIServer.rbac``); also exported as ``$KUBECONFIG``
    (and ``$KUBECACHEDIR``) so code under test and kubectl pick it up."""
    path = kubeapi.write_kubeconfig(tmp_path / "kubeconfig")
    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.setenv("KUBECACHEDIR", str(kube_cache_dir))
    return path


@pytest.fixture
def kubectl(kubeapi: KubeAPIServer, kubeconfig: Path, kube_cache_dir: Path) -> Kubectl:
    """Run the real kubectl against ``kubeapi``, as the cluster admin:
    ``kubectl("get", "pods", check=True)``.

    Returns the CompletedProcess (text mode); ``check=True`` raises on non-zero exit
    with stderr in the message.
    """
    admin = kubeapi.write_kubeconfig(kubeconfig.with_name("kubeconfig-admin"), admin=True)

    def run(*args: str, check: bool = False, timeout: float = 30) -> subprocess.CompletedProcess:
        cmd = [KUBECTL, "--kubeconfig", str(admin), "--cache-dir", str(kube_cache_dir),
               *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr}")
        return proc

    return run


@pytest.fixture
def kube_api_client(kubeapi: KubeAPIServer, kubeconfig: Path) -> Iterator[object]:
    """An official-client ``kubernetes.client.ApiClient`` for ``kubeapi``, as the cluster
    admin (no global state)."""
    from kubernetes import config

    admin = kubeapi.write_kubeconfig(kubeconfig.with_name("kubeconfig-admin"), admin=True)
    client = config.new_client_from_config(config_file=str(admin))
    try:
        yield client
    finally:
        client.close()
