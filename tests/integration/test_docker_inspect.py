"""docker.inspect against a real Docker Engine (tests/support/docker.py): how an exited
container ended, from the Engine's own events, which decides whether the shipped playbooks
restart it; and its environment, without secrets, in the step result and the note.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest

from remediator.actions.backends import Backends
from remediator.actions.base import ActionContext
from remediator.actions.registry import ACTIONS
from remediator.guards import GuardSettings
from tests.support.actions import params
from tests.support.payloads import alert, notification

RULES = Path(__file__).resolve().parents[2] / "rules" / "libervia.yaml"
LOOP = "echo started; while :; do sleep 0.1; done"


@pytest.fixture
def ctx(docker_env, run):
    backends = Backends()
    yield ActionContext(backends=backends, log=logging.getLogger("t"), execution_id="e1")
    run(backends.close())


def inspect(run, ctx: ActionContext, **raw: Any) -> dict[str, Any]:
    action = ACTIONS["docker.inspect"]
    return run(action.run(params(action, **raw), ctx))


def causes(state: dict[str, Any]) -> dict[str, tuple[int, str]]:
    return {c["name"]: (c["exit_code"], c["exit_cause"]) for c in state["containers"]}


def test_a_stop_that_outlasts_its_timeout_is_a_stop_not_a_crash(docker_env, ctx, run):
    """`docker stop` / `docker compose stop` SIGKILLs what is still running at its timeout
    (compose's default: 10 s): a Node PID 1 that ignores SIGTERM, a graceful shutdown longer
    than the timeout (the libervia runbook allows 30 s) exit 137, and an application may exit
    1 at SIGTERM. Each was stopped on purpose (an upgrade, a rollback): never `crashed`."""
    commands = {"ignores": f"trap '' TERM; {LOOP}", "slow": f"trap 'sleep 15; exit 0' TERM; {LOOP}",
                "fails": f"trap 'exit 1' TERM; {LOOP}"}
    for number, (name, command) in enumerate(commands.items(), 1):
        docker_env.service("libervia", "gateway", name=name, number=number, command=command)
    for name in commands:
        docker_env.wait_logs(name, "started")
        docker_env.client.containers.get(name).stop(timeout=1)
    state = inspect(run, ctx, project="libervia", service="gateway")
    assert causes(state) == {"ignores": (137, "stop"), "slow": (137, "stop"), "fails": (1, "stop")}
    assert sorted(state["stopped"]) == ["fails", "ignores", "slow"] and state["crashed"] == []
    [ignores] = [c for c in state["containers"] if c["name"] == "ignores"]
    assert ignores["exit_evidence"].endswith(
        "Engine events: kill (signal 15), kill (signal 9), die (exit code 137), stop")


def test_a_process_killed_outside_the_engine_crashed_and_a_docker_kill_is_deliberate(
        docker_env, ctx, run):
    """A SIGKILL the Engine did not send (the kernel, `kill -9` on the host) is a crash, as is
    any other exit the Engine logged only a `die` for. `docker kill` / `docker compose kill`
    is someone's deliberate act, as Docker's own restart policies count it (a `docker kill`ed
    container with `restart: always` stays down): left to them, like a stop."""
    docker_env.service("3dpot", "db", name="3dpot-db")
    docker_env.service("3dpot", "db", name="3dpot-db-2", number=2)
    docker_env.service("3dpot", "db", name="3dpot-db-3", number=3, command="echo bye; exit 3")
    docker_env.wait_logs("3dpot-db", "started")
    docker_env.crash("3dpot-db")
    docker_env.client.containers.get("3dpot-db-2").kill()
    docker_env.wait_for("3dpot-db-2", lambda s: s["Status"] == "exited")
    docker_env.wait_for("3dpot-db-3", lambda s: s["Status"] == "exited")
    state = inspect(run, ctx, project="3dpot", service="db")
    assert causes(state) == {"3dpot-db": (137, "crash"), "3dpot-db-2": (137, "kill"),
                             "3dpot-db-3": (3, "crash")}
    assert sorted(state["crashed"]) == ["3dpot-db", "3dpot-db-3"]
    assert state["stopped"] == ["3dpot-db-2"]
    by_name = {c["name"]: c["exit_evidence"] for c in state["containers"]}
    assert by_name["3dpot-db"].endswith("Engine events: die (exit code 137)")
    assert by_name["3dpot-db-2"].endswith("Engine events: kill (signal 9), die (exit code 137)")


def test_a_sigkill_the_engine_no_longer_records_is_not_taken_for_a_crash(docker_env, ctx, run):
    """The Engine keeps its last 256 events: on a busy host an exit minutes old has no record
    left. A 137 without one may be a stop past its timeout: `unknown`, and left alone (in
    `stopped`, which the shipped playbooks escalate), never restarted as `crashed`. Other exit
    codes without a record stay crashes, as they always were."""
    docker_env.service("libervia", "gateway", name="libervia-gateway")
    docker_env.service("libervia", "gateway", name="libervia-gateway-2", number=2,
                       command="exit 3")
    busy = docker_env.service("other", "app", name="busy")
    docker_env.wait_logs("libervia-gateway", "started")
    docker_env.crash("libervia-gateway")
    docker_env.wait_for("libervia-gateway-2", lambda s: s["Status"] == "exited")
    for n in range(260):  # a busy host's events (one each), past the Engine's 256
        docker_env.api.rename(busy.id, f"busy-{n}")
    state = inspect(run, ctx, project="libervia", service="gateway")
    assert causes(state) == {"libervia-gateway": (137, "unknown"),
                             "libervia-gateway-2": (3, "crash")}
    assert state["stopped"] == ["libervia-gateway"] and state["crashed"] == ["libervia-gateway-2"]
    assert "no record of this exit in the Engine's events" in \
        state["containers"][0]["exit_evidence"]


SECRETS = {"DB_PASS": "hunter2hunter2", "SMTP_PASS": "smtp-pw-6655", "MONGO_PASS": "mongo-pw-7788",
           "DB_PWD": "pwd-value-9911", "SESSION_SALT": "salt-value-1234",
           "BROKER": "amqp://app:broker-pw-4242@mq:5672/vhost",
           "JAVA_OPTS": "-Xmx1g -Dspring.datasource.password=javapw-3131 -Dx=1",
           "QUOTED_OPTS": "-Ddb.password=\"quoted pw-5151\" --token 'tok-6161' -Dapi.key=ak-7171",
           "UPSTREAM": "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8",
           "SIGNATURE_SEED": "Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MEFCQ0RFRg"}
SECRET_VALUES = ("hunter2hunter2", "smtp-pw-6655", "mongo-pw-7788", "pwd-value-9911",
                 "salt-value-1234", "broker-pw-4242", "javapw-3131", "a1B2c3D4e5F6g7H8",
                 "Zm9vYmFyYmF6cXV4", "quoted pw-5151", "tok-6161", "ak-7171")


# What an on-call engineer reads the environment for: a credential's settings, a switch, the
# build's git sha (hex is no secret's shape; a hex secret is named as one).
EVIDENCE = {"AUTH_MODE": "oidc", "PASSWORD_MIN_LENGTH": "12", "CERT_S3_READ_PRIMARY": "false",
            "GIT_SHA": "a94a8fe5ccb19ba61c4c0873d391e987982fbbd3"}


def test_environment_never_shows_a_secret_by_name_or_by_look(docker_env, ctx, run):
    docker_env.service("libervia", "gateway", name="libervia-gateway",
                       env={**SECRETS, "NODE_ENV": "production", "PORT": "3000",
                            "BASE_DIR": "/data/libervia", **EVIDENCE})
    state = inspect(run, ctx, container="libervia-gateway", environment=True)
    [gateway] = state["containers"]
    text = json.dumps(state)
    assert [s for s in SECRET_VALUES if s in text] == []
    assert gateway["environment_withheld"] == sorted(
        ["DB_PASS", "SMTP_PASS", "MONGO_PASS", "DB_PWD", "SESSION_SALT", "UPSTREAM",
         "SIGNATURE_SEED"])
    env = gateway["environment"]
    assert (env["NODE_ENV"], env["PORT"], env["BASE_DIR"]) == ("production", "3000",
                                                              "/data/libervia")
    assert {name: env[name] for name in EVIDENCE} == EVIDENCE
    # the rest of a value stays: where the broker is, the JVM's other options
    assert env["BROKER"] == "amqp://<redacted>@mq:5672/vhost"
    assert env["JAVA_OPTS"] == "-Xmx1g -Dspring.datasource.password=<redacted> -Dx=1"
    assert env["QUOTED_OPTS"] == "-Ddb.password=<redacted> --token <redacted> -Dapi.key=<redacted>"


def test_libervia_api_down_leaves_a_gateway_stopped_past_its_timeout_and_its_secrets_out(
        docker_env, worker_factory, tmp_path):
    """The shipped PROC-001 playbook (only its probe URL on 127.0.0.1, nothing listens, and its
    evidence directory in tmp): the operator's `docker-compose stop` of an upgrade or rollback
    outlasted the stop timeout (137). The gateway is not started in the middle of that work:
    escalated, the container still down; the note names the cause and shows no secret."""
    evidence = tmp_path / "evidence"
    rules = RULES.read_text().replace("http://libervia-gateway:3000", "http://127.0.0.1:9")
    rules = rules.replace("/var/lib/remediator/evidence/libervia", str(evidence))
    gateway = docker_env.service("libervia", "gateway", name="libervia-gateway",
                                 command=f"trap 'sleep 15; exit 0' TERM; {LOOP}",
                                 env={**SECRETS, "NODE_ENV": "production"})
    docker_env.wait_logs("libervia-gateway", "started")
    gateway.stop(timeout=1)
    w = worker_factory(rules, mode="live", guards=GuardSettings(
        compose_projects_allow=["libervia"], evidence_directories=[str(evidence)]))
    w.post_alerts(notification(alert("API_DOWN", fingerprint="g1", compose_project="libervia",
                                      job="libervia-gateway", severity="critical")))
    [decision] = w.wait_executions(1, timeout=120)
    steps = {s["name"]: s for s in decision["steps"]}
    assert decision["outcome"] == "escalated", decision
    assert steps["container_up"]["outcome"] == "failed"
    assert ("libervia-gateway exited and the Docker Engine does not say it crashed (stopped "
            "through the Engine's API (docker stop, compose stop); Engine events: ") \
        in decision["reason"]
    assert "restart" not in steps or steps["restart"]["outcome"] != "succeeded"
    assert docker_env.api.inspect_container("libervia-gateway")["State"]["Status"] == "exited"
    assert steps["state"]["result"]["containers"][0]["exit_cause"] == "stop"
    note = (tmp_path / "escalations" / f"{decision['id']}.md").read_text()
    assert "stopped through the Engine's API" in note and "NODE_ENV" in note
    assert [f.name for f in evidence.rglob("state.json")] == ["state.json"]  # the bundle's copy
    everything = note + json.dumps(decision) + "".join(
        f.read_text(errors="replace") for f in evidence.rglob("*") if f.is_file())
    assert [s for s in SECRET_VALUES if s in everything] == []


def test_libervia_api_down_escalates_a_gateway_the_kernel_killed_for_memory(
        docker_env, worker_factory, tmp_path):
    """A real out-of-memory kill: the gateway's container has an 8 MiB limit (swap included)
    and allocates until the kernel's OOM killer ends it; the Engine records OOMKilled, exit
    code 137 and an `oom` event. The shipped PROC-001 playbook restarts a crashed gateway, but
    not this one: the runbook's fix is more memory (a human's change to docker-compose.yml),
    and the same limit would kill it again. Escalated to N2 with the memory steps, not
    restarted."""
    evidence = tmp_path / "evidence"
    rules = RULES.read_text().replace("http://libervia-gateway:3000", "http://127.0.0.1:9")
    rules = rules.replace("/var/lib/remediator/evidence/libervia", str(evidence))
    docker_env.service("libervia", "gateway", name="libervia-gateway", memory="8m",
                       command="echo started; tail /dev/zero")
    killed = docker_env.wait_for("libervia-gateway", lambda s: s["Status"] == "exited")
    assert (killed["State"]["OOMKilled"], killed["State"]["ExitCode"]) == (True, 137)
    events = docker_env.api.events(since=0, until=int(time.time()) + 1, decode=True,
                                   filters={"container": killed["Id"]})
    assert [e["Action"] for e in events] == ["create", "start", "oom", "die"]
    w = worker_factory(rules, mode="live", guards=GuardSettings(
        compose_projects_allow=["libervia"], evidence_directories=[str(evidence)]))
    w.post_alerts(notification(alert("API_DOWN", fingerprint="m1", compose_project="libervia",
                                      job="libervia-gateway", severity="critical")))
    [decision] = w.wait_executions(1, timeout=120)
    steps = {s["name"]: s for s in decision["steps"]}
    assert decision["outcome"] == "escalated", decision
    state = steps["state"]["result"]
    assert state["containers"][0]["exit_cause"] == "oom"
    assert state["oom_killed"] == ["libervia-gateway"] and state["crashed"] == ["libervia-gateway"]
    assert steps["container_up"]["outcome"] == "skipped"  # it is down: the memory decides
    assert steps["enough_memory"]["outcome"] == "failed"
    assert "killed by the kernel's OOM killer, OOMKilled" in decision["reason"]
    assert "restart" not in steps
    after = docker_env.api.inspect_container("libervia-gateway")
    assert (after["State"]["Status"], after["State"]["StartedAt"], after["RestartCount"]) == \
        ("exited", killed["State"]["StartedAt"], 0)
    note = (tmp_path / "escalations" / f"{decision['id']}.md").read_text()
    assert "ran out of memory: not restarted as is" in note
    assert "Libervia N2 SRE (sre@example.com): the gateway needs more memory" in note
    assert "raise NODE_OPTIONS (--max-old-space-size) / the memory limit" in note  # next steps


def api_down(docker_env, worker_factory, tmp_path, fingerprint: str) -> dict[str, Any]:
    """The shipped PROC-001 playbook, live (its probes on 127.0.0.1, where nothing listens;
    its evidence in tmp), for one API_DOWN: its decision's steps by name, and the decision."""
    evidence = tmp_path / "evidence"
    rules = RULES.read_text().replace("http://libervia-gateway:3000", "http://127.0.0.1:9")
    rules = rules.replace("/var/lib/remediator/evidence/libervia", str(evidence))
    w = worker_factory(rules, mode="live", guards=GuardSettings(
        compose_projects_allow=["libervia"], evidence_directories=[str(evidence)]))
    w.post_alerts(notification(alert("API_DOWN", fingerprint=fingerprint, severity="critical",
                                      compose_project="libervia", job="libervia-gateway")))
    [decision] = w.wait_executions(1, timeout=180)
    return {s["name"]: s for s in decision["steps"]} | {"": decision}


def test_libervia_api_down_restarts_only_the_gateway_that_crashed(docker_env, worker_factory,
                                                                  tmp_path):
    """Three gateways (compose --scale): gateway-2 stopped on purpose (its upgrade under way),
    gateway-3 serving, gateway-1 crashes. `docker-compose restart gateway` would start
    gateway-2 behind whoever stopped it and interrupt gateway-3: only gateway-1 is restarted,
    and gateway-2 is not waited for."""
    for n in (1, 2, 3):
        docker_env.service("libervia", "gateway", name=f"libervia-gateway-{n}", number=n,
                           command=LOOP)
        docker_env.wait_logs(f"libervia-gateway-{n}", "started")
    docker_env.client.containers.get("libervia-gateway-2").stop(timeout=1)
    serving = docker_env.api.inspect_container("libervia-gateway-3")["State"]["StartedAt"]
    docker_env.crash("libervia-gateway-1")
    steps = api_down(docker_env, worker_factory, tmp_path, "s1")
    assert steps["state"]["result"]["crashed"] == ["libervia-gateway-1"]
    assert steps["restart"]["outcome"] == "succeeded", steps[""]
    assert [r["name"] for r in steps["restart"]["result"]["restarted"]] == ["libervia-gateway-1"]
    assert steps["restart"]["result"]["left"] == ["libervia-gateway-2", "libervia-gateway-3"]
    assert steps["healthy"]["outcome"] == "succeeded"
    status = {n: docker_env.api.inspect_container(f"libervia-gateway-{n}")["State"]
              for n in (1, 2, 3)}
    assert [status[n]["Status"] for n in (1, 2, 3)] == ["running", "exited", "running"]
    assert status[3]["StartedAt"] == serving


def test_libervia_api_down_does_not_restart_a_gateway_that_died_on_a_full_disk(
        docker_env, worker_factory, tmp_path):
    """The runbook: 1 GB free before a start; "Se disco cheio" a cleanup that deletes data.
    A gateway that died of ENOSPC is not started to die again: escalated to SRE, still down."""
    docker_env.service("libervia", "gateway", name="libervia-gateway", command=(
        "echo started; echo '{\"level\":60,\"msg\":\"Error: ENOSPC: no space left on device, "
        "write\",\"path\":\"/data/libervia/tenants/t1/eventlog/events.jsonl\"}'; exit 1"))
    docker_env.wait_for("libervia-gateway", lambda s: s["Status"] == "exited")
    docker_env.wait_logs("libervia-gateway", "ENOSPC")
    steps = api_down(docker_env, worker_factory, tmp_path, "d1")
    assert steps["state"]["result"]["crashed"] == ["libervia-gateway"]
    assert steps["no_space"]["result"]["matched"] == 1
    assert steps["enough_disk"]["outcome"] == "failed"
    assert steps[""]["outcome"] == "escalated" and "restart" not in steps
    assert "1 ENOSPC / no space left on device lines" in steps[""]["reason"]
    assert docker_env.api.inspect_container("libervia-gateway")["State"]["Status"] == "exited"
