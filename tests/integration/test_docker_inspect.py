"""docker.inspect against a real Docker Engine (tests/support/docker.py): a container's
environment, without secrets, in the step result.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from remediator.actions.backends import Backends
from remediator.actions.base import ActionContext
from remediator.actions.registry import ACTIONS
from tests.support.actions import params


@pytest.fixture
def ctx(docker_env, run):
    backends = Backends()
    yield ActionContext(backends=backends, log=logging.getLogger("t"), execution_id="e1")
    run(backends.close())


def inspect(run, ctx: ActionContext, **raw: Any) -> dict[str, Any]:
    action = ACTIONS["docker.inspect"]
    return run(action.run(params(action, **raw), ctx))


SECRETS = {"DB_PASS": "hunter2hunter2", "SMTP_PASS": "smtp-pw-6655", "MONGO_PASS": "mongo-pw-7788",
           "DB_PWD": "pwd-value-9911", "SESSION_SALT": "salt-value-1234",
           "BROKER": "amqp://app:broker-pw-4242@mq:5672/vhost",
           "JAVA_OPTS": "-Xmx1g -Dspring.datasource.password=javapw-3131 -Dx=1",
           "UPSTREAM": "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8",
           "SIGNATURE_SEED": "Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MEFCQ0RFRg"}
SECRET_VALUES = ("hunter2hunter2", "smtp-pw-6655", "mongo-pw-7788", "pwd-value-9911",
                 "salt-value-1234", "broker-pw-4242", "javapw-3131", "a1B2c3D4e5F6g7H8",
                 "Zm9vYmFyYmF6cXV4")


def test_environment_never_shows_a_secret_by_name_or_by_look(docker_env, ctx, run):
    docker_env.service("libervia", "gateway", name="libervia-gateway",
                       env={**SECRETS, "NODE_ENV": "production", "PORT": "3000",
                            "OPAQUE": "0123456789abcdef0123456789abcdef",
                            "BASE_DIR": "/data/libervia"})
    state = inspect(run, ctx, container="libervia-gateway", environment=True)
    [gateway] = state["containers"]
    text = json.dumps(state)
    assert [s for s in SECRET_VALUES if s in text] == []
    assert gateway["environment_withheld"] == sorted(
        ["DB_PASS", "SMTP_PASS", "MONGO_PASS", "DB_PWD", "SESSION_SALT", "UPSTREAM",
         "SIGNATURE_SEED", "OPAQUE"])
    env = gateway["environment"]
    assert (env["NODE_ENV"], env["PORT"], env["BASE_DIR"]) == ("production", "3000",
                                                              "/data/libervia")
    # the rest of a value stays: where the broker is, the JVM's other options
    assert env["BROKER"] == "amqp://<redacted>@mq:5672/vhost"
    assert env["JAVA_OPTS"] == "-Xmx1g -Dspring.datasource.password=<redacted> -Dx=1"
