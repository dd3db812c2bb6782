"""A faithful-enough Kubernetes API server for tests (real kubectl and the python client work).

Typical use::

    from tests.kubeapi import KubeAPIServer

    with KubeAPIServer() as kube:
        kube.add_deployment("code-forge", "neural-hive-pipeline", replicas=2)
        kube.write_kubeconfig(tmp_path / "kubeconfig")

Pytest fixtures (``kubeapi``, ``kubeconfig``) live in :mod:`tests.kubeapi.fixtures`.
"""

from .errors import ApiError
from .faults import Fault, RecordedRequest
from .server import KubeAPIServer

__all__ = ["ApiError", "Fault", "KubeAPIServer", "RecordedRequest"]
