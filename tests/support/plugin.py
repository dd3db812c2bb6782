"""pytest plugin exposing every fixture in `tests.support`.

Enable from the root conftest with `pytest_plugins = ["tests.support.plugin"]`,
or import `*` from here in a single test module.
"""

from tests.support.alertmanager import alertmanager_factory
from tests.support.docker import docker_engine, docker_env
from tests.support.exporter import exporter
from tests.support.postgres import postgres_cluster, postgres_url
from tests.support.prometheus import prometheus_factory
from tests.support.s3 import moto_server, s3_client, s3_env, s3_proxy, s3_server
from tests.support.webhook import webhook_receiver

__all__ = [
    "alertmanager_factory",
    "docker_engine",
    "docker_env",
    "exporter",
    "moto_server",
    "postgres_cluster",
    "postgres_url",
    "prometheus_factory",
    "s3_client",
    "s3_env",
    "s3_proxy",
    "s3_server",
    "webhook_receiver",
]
