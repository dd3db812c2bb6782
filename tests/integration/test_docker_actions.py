"""Docker actions against a real Docker Engine (tests/support/docker.py: a private dockerd per
session, busybox containers labelled as docker compose labels them, `--network none`).

Actions are driven as the engine drives them: params through `check_params`, then `run` or the
Executor; the playbook-level tests go through a worker, with its guards.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest

from remediator.actions.backends import Backends
from remediator.actions.base import ActionContext, ActionError
from remediator.actions.registry import ACTIONS
from remediator.config import load_config
from remediator.engine.executor import Executor, StepRecord
from remediator.guards import GuardSettings
from tests.support.actions import params, problems
from tests.support.payloads import alert, notification
from tests.support.procs import LOCALHOST, start_on_free_port

# Starts healthy only on its second start: the first start's state is "unhealthy".
SECOND_START_HEALTHY = ("if [ -f /state/started ]; then touch /state/ok; fi; touch /state/started; "
                        "echo started; exec sleep 100000")
HEALTH = "test -f /state/ok"
CRASH_ONCE = ("if [ -f /state/started ]; then echo started again; exec sleep 100000; fi; "
              "touch /state/started; echo crashing; exit 1")


@pytest.fixture
def ctx(docker_env, run):
    backends = Backends()
    yield ActionContext(backends=backends, log=logging.getLogger("t"), execution_id="e1")
    run(backends.close())


def act(run, name: str, ctx: ActionContext, /, **raw: Any) -> dict[str, Any]:
    action = ACTIONS[name]
    return run(action.run(params(action, **raw), ctx))


def execute(run, name: str, ctx: ActionContext, /, attempts: int = 3, **raw: Any) -> StepRecord:
    action = ACTIONS[name]
    p = params(action, **raw)
    record = StepRecord(name="step", action=name, params=p, outcome="planned")
    return run(Executor(retry_wait=0.01).run(action, p, ctx, record, timeout=60, attempts=attempts))


def started_at(engine, name: str) -> str:
    return engine.api.inspect_container(name)["State"]["StartedAt"]


def test_a_killed_gateway_is_started_again_once(docker_env, ctx, run):
    gw = docker_env.service("libervia", "gateway", name="libervia-gateway",
                            env={"NODE_ENV": "production", "ADMIN_TOKEN": "s3cr3t-admin",
                                 "LIBERVIA_AUTH_PEPPER": "s3cr3t-pepper", "BASE_DIR": "/data"})
    # killed before its shell said it started, a loaded machine logged one start in all
    docker_env.wait_logs("libervia-gateway", "started")
    docker_env.crash("libervia-gateway")
    before = act(run, "docker.inspect", ctx, container="libervia-gateway")
    assert before["exited"] == ["libervia-gateway"] and before["containers"][0]["exit_code"] == 137
    result = act(run, "docker.restart", ctx, project="libervia", service="gateway")
    assert result == {"restarted": [{"name": "libervia-gateway", "was": "exited",
                                     "exit_code": 137}], "count": 1}
    after = act(run, "docker.inspect", ctx, project="libervia", service="gateway",
                environment=True)
    assert after["all_ready"] and after["containers"][0]["running"]
    # the runbook's `env | grep -v TOKEN | grep -v PEPPER`: names kept, secret values never
    env = after["containers"][0]
    assert env["environment"]["NODE_ENV"] == "production" and "s3cr3t" not in str(after)
    assert env["environment_withheld"] == ["ADMIN_TOKEN", "LIBERVIA_AUTH_PEPPER"]
    # the container's log shows exactly one more start (the Engine copies its output to the
    # log shortly after the restart returns: a loaded machine read it before the line came)
    docker_env.wait_logs("libervia-gateway", "started", times=2)
    assert gw.logs().decode().count("started") == 2


def test_a_container_stopped_on_purpose_is_told_from_a_crashed_one(docker_env, ctx, run):
    """docker.inspect's `stopped` and `crashed`, which rules/libervia.yaml and rules/3dpot.yaml
    read to restart only what crashed, never what `docker-compose stop` stopped (a shutdown,
    an upgrade, a rollback, a restore): the real Engine's states. A process that handles
    SIGTERM (PostgreSQL, Redis, the gateway's graceful shutdown) exits 0; one that dies of it,
    143; a crash exits otherwise, or 137 at a SIGKILL the Engine did not send (the kernel);
    a container created and never started, or one whose healthcheck fails, is down too.
    (Stops past their timeout and `docker kill`: tests/integration/test_docker_inspect.py.)"""
    for number, code in enumerate((0, 143), 1):
        name = f"libervia-gateway-{number}"
        docker_env.service("libervia", "gateway", name=name, number=number,
                           command=f"trap 'exit {code}' TERM; echo started; "
                                   "while :; do sleep 0.1; done")
        docker_env.wait_logs(name, "started")
        docker_env.client.containers.get(name).stop(timeout=20)
    state = act(run, "docker.inspect", ctx, project="libervia", service="gateway")
    assert sorted(c["exit_code"] for c in state["containers"]) == [0, 143]
    assert sorted(state["stopped"]) == ["libervia-gateway-1", "libervia-gateway-2"]
    assert state["crashed"] == [] and state["oom_killed"] == []
    docker_env.service("3dpot", "db", name="3dpot-db", command="echo crashing; exit 1")
    docker_env.service("3dpot", "db", name="3dpot-db-2", number=2)
    docker_env.service("3dpot", "db", name="3dpot-db-3", number=3, start=False)
    docker_env.wait_logs("3dpot-db-2", "started")
    docker_env.crash("3dpot-db-2")
    docker_env.wait_for("3dpot-db", lambda s: s["Status"] == "exited")
    down = act(run, "docker.inspect", ctx, project="3dpot", service="db")
    codes = {c["name"]: (c["status"], c["exit_code"]) for c in down["containers"]}
    assert codes == {"3dpot-db": ("exited", 1), "3dpot-db-2": ("exited", 137),
                     "3dpot-db-3": ("created", 0)}
    assert sorted(down["crashed"]) == ["3dpot-db", "3dpot-db-2", "3dpot-db-3"]
    assert down["stopped"] == []
    docker_env.service("3dpot", "redis", name="3dpot-redis", command=SECOND_START_HEALTHY,
                       health=HEALTH)
    docker_env.wait_for("3dpot-redis", lambda s: s["Health"]["Status"] == "unhealthy")
    unhealthy = act(run, "docker.inspect", ctx, project="3dpot", service="redis")
    assert (unhealthy["crashed"], unhealthy["stopped"]) == (["3dpot-redis"], [])
    docker_env.service("3dpot", "backend", name="3dpot-backend")
    docker_env.wait_for("3dpot-backend", lambda s: s["Running"])
    running = act(run, "docker.inspect", ctx, project="3dpot", service="backend")
    assert (running["crashed"], running["stopped"]) == ([], [])


def test_an_unhealthy_service_is_restarted_and_waited_healthy(docker_env, ctx, run):
    docker_env.service("3dpot", "redis", name="3dpot-redis", command=SECOND_START_HEALTHY,
                       health=HEALTH)
    docker_env.wait_for("3dpot-redis", lambda s: s["Health"]["Status"] == "unhealthy")
    waited = execute(run, "docker.wait_healthy", ctx, attempts=1, project="3dpot",
                     service="redis", timeout="1s", interval="0.2s")
    assert waited.outcome == "failed" and "3dpot-redis running/unhealthy" in waited.detail
    inspected = act(run, "docker.inspect", ctx, project="3dpot", service="redis")
    assert inspected["unhealthy"] == ["3dpot-redis"]
    assert inspected["containers"][0]["failing_streak"] >= 1
    act(run, "docker.restart", ctx, project="3dpot", container="3dpot-redis", timeout=1)
    healthy = act(run, "docker.wait_healthy", ctx, project="3dpot", service="redis",
                  timeout="60s", interval="0.2s")
    assert healthy["ready"] and healthy["containers"][0]["health"] == "healthy"


def test_logs_of_a_stopped_container_with_grep_and_bounds(docker_env, ctx, run):
    lines = "; ".join(f"echo 'line {i} {'ERROR boom' if i % 3 == 0 else 'ok'}'" for i in range(30))
    docker_env.service("libervia", "gateway", name="libervia-gateway",
                       command=f"echo 'on stderr ERROR' >&2; sleep 1; {lines}; exit 3")
    docker_env.wait_for("libervia-gateway", lambda s: s["Status"] == "exited")
    # the Engine copies the last output to the log shortly after the exit
    docker_env.wait_logs("libervia-gateway", "line 29")
    result = act(run, "docker.logs", ctx, project="libervia", service="gateway", tail=11,
                 grep="ERROR", max_lines=2)
    assert result["states"] == {"libervia-gateway": "exited"}
    # the last 11 lines: 19..29; ERROR in 21, 24, 27; the newest 2 kept of 3
    assert result["lines"] == ["[libervia-gateway] line 24 ERROR boom",
                               "[libervia-gateway] line 27 ERROR boom"]
    assert result["matched"] == 3 and result["truncated"], result
    # bounded by bytes as well, from the newest: the last lines that fit
    tight = act(run, "docker.logs", ctx, container="libervia-gateway", tail=11, max_lines=100,
                max_bytes=2 * len("[libervia-gateway] line 28 ok") + 1)
    assert tight["lines"] == ["[libervia-gateway] line 28 ok", "[libervia-gateway] line 29 ok"]
    everything = act(run, "docker.logs", ctx, container="libervia-gateway", tail=1000,
                     grep="stderr")
    assert everything["lines"] == ["[libervia-gateway] on stderr ERROR"]
    state = act(run, "docker.inspect", ctx, container="libervia-gateway")["containers"][0]
    assert (state["status"], state["exit_code"], state["oom_killed"]) == ("exited", 3, False)


def test_copy_out_lands_in_the_evidence_store_byte_identical(docker_env, ctx, run, tmp_path):
    docker_env.service("libervia", "gateway", name="libervia-gateway")
    events = os.urandom(300_000) + b'{"broken json\n'
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        info = tarfile.TarInfo("events.jsonl")
        info.size = len(events)
        tar.addfile(info, io.BytesIO(events))
    assert docker_env.client.containers.get("libervia-gateway").exec_run(
        ["mkdir", "-p", "/data/libervia/tenants/acme/eventlog"]).exit_code == 0
    assert docker_env.api.put_archive("libervia-gateway", "/data/libervia/tenants/acme/eventlog",
                                      archive.getvalue())
    result = act(run, "docker.copy_out", ctx, project="libervia", service="gateway",
                 path="/data/libervia/tenants/acme", directory=str(tmp_path / "evidence"))
    assert result["file"] == str(tmp_path / "evidence" / "e1" / "data_libervia_tenants_acme.tar")
    with tarfile.open(result["file"]) as tar:
        copied = tar.extractfile("acme/eventlog/events.jsonl").read()
    assert copied == events
    assert result["stat"]["name"] == "acme" and result["bytes"] > len(events)
    # bounded: past max_bytes nothing is kept
    with pytest.raises(ActionError, match="larger than max_bytes"):
        act(run, "docker.copy_out", ctx, container="libervia-gateway",
            path="/data/libervia/tenants/acme", directory=str(tmp_path / "small"),
            max_bytes=1000)
    assert not list((tmp_path / "small").rglob("*.tar*"))
    # a missing path is the Engine's 404, not retried
    record = execute(run, "docker.copy_out", ctx, container="libervia-gateway",
                     path="/data/libervia/tenants/nobody", directory=str(tmp_path / "e"))
    assert record.outcome == "failed" and record.attempts == 1 and "HTTP 404" in record.detail


def test_stats_samples_running_containers_only(docker_env, ctx, run):
    docker_env.service("3dpot", "backend", name="3dpot-backend")
    docker_env.service("3dpot", "db", name="3dpot-db", command="exit 0")
    docker_env.wait_for("3dpot-db", lambda s: s["Status"] == "exited")
    result = act(run, "docker.stats", ctx, project="3dpot")
    assert [c["name"] for c in result["containers"]] == ["3dpot-backend"]
    assert result["not_running"] == ["3dpot-db"]
    sample = result["containers"][0]
    assert sample["memory_bytes"] > 0 and sample["pids"] >= 1 and sample["cpu_percent"] >= 0


def test_a_container_of_another_compose_project_is_never_touched(docker_env, ctx, run):
    other = docker_env.service("other", "gateway", name="libervia-gateway")
    mine = docker_env.service("libervia", "gateway", name="libervia-gateway-1")
    oneoff = docker_env.service("libervia", "gateway", name="libervia-gateway-run-1", oneoff=True)
    stamps = {c.name: started_at(docker_env, c.name) for c in (other, mine, oneoff)}
    # by name: the container's own label must name the project the guard admitted
    with pytest.raises(ActionError, match="not part of project 'libervia'"):
        act(run, "docker.restart", ctx, project="libervia", container="libervia-gateway")
    # by service: only the project's own, never a one-off `compose run` container
    result = act(run, "docker.restart", ctx, project="libervia", service="gateway", timeout=1)
    assert [r["name"] for r in result["restarted"]] == ["libervia-gateway-1"]
    assert started_at(docker_env, "libervia-gateway") == stamps["libervia-gateway"]
    assert started_at(docker_env, "libervia-gateway-run-1") == stamps["libervia-gateway-run-1"]
    assert started_at(docker_env, "libervia-gateway-1") != stamps["libervia-gateway-1"]
    # more containers than the playbook allows: none restarted
    docker_env.service("libervia", "gateway", name="libervia-gateway-2", number=2)
    with pytest.raises(ActionError, match="more than max_containers 1: restarted none"):
        act(run, "docker.restart", ctx, project="libervia", service="gateway", max_containers=1)


def test_parameters_are_validated_before_anything_runs():
    assert problems("docker.restart", service="gateway") == ["missing required parameter 'project'"]
    assert problems("docker.restart", project="libervia") == ["give container or service"]
    assert problems("docker.logs", container="x; rm -rf /") == [
        "parameter 'container': must be a container name ([a-zA-Z0-9][a-zA-Z0-9_.-]*)"]
    assert problems("docker.copy_out", container="gw", directory="/e",
                    path="/data/tenants/../../etc") == [
        "parameter 'path': must be an absolute path without '.' or '..' segments, of letters, "
        "digits and _@%+=:,.-"]
    assert problems("docker.inspect", container="libervia-gateway\n") == [
        "parameter 'container': must be a container name ([a-zA-Z0-9][a-zA-Z0-9_.-]*)"]
    assert problems("docker.logs", project="Libervia") == [
        "parameter 'project': must be a compose project or service name (lowercase "
        "alphanumerics, '-' and '_')"]


def test_engine_api_down_is_transient_and_retried(monkeypatch, tmp_path, run):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/nothing-listens.sock")
    backends = Backends()
    ctx = ActionContext(backends=backends, log=logging.getLogger("t"), execution_id="e1")
    record = execute(run, "docker.inspect", ctx, project="libervia", service="gateway")
    # three attempts: an error that is not transient is tried once
    assert record.outcome == "failed" and record.attempts == 3
    # where it was looked for, which variable said so, and why not (the SDK's message named
    # neither: "('Connection aborted.', FileNotFoundError(2, ...))")
    assert record.detail == (f"Docker Engine at unix://{tmp_path}/nothing-listens.sock "
                             "(DOCKER_HOST) unreachable: no such socket"), record.detail
    run(backends.close())


def test_tls_without_its_certificates_names_the_path_and_the_variable(monkeypatch, tmp_path,
                                                                      run):
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:2376")
    monkeypatch.setenv("DOCKER_TLS_VERIFY", "1")
    monkeypatch.setenv("DOCKER_CERT_PATH", str(tmp_path / "nonexist"))
    backends = Backends()
    ctx = ActionContext(backends=backends, log=logging.getLogger("t"), execution_id="e1")
    record = execute(run, "docker.inspect", ctx, project="libervia", service="gateway")
    assert record.outcome == "failed" and record.attempts == 1  # the same every time
    assert record.detail == (
        "Docker Engine: TLS is on (DOCKER_TLS_VERIFY or DOCKER_CERT_PATH is set) but "
        f"DOCKER_CERT_PATH={tmp_path / 'nonexist'} lacks ca.pem, cert.pem, key.pem: put ca.pem, "
        "cert.pem and key.pem there, or unset DOCKER_TLS_VERIFY"), record.detail
    run(backends.close())


DOWN_RULES = """
playbooks:
  - name: gateway-down
    match: {alertname: API_DOWN}
    target: {kind: container, name: libervia-gateway}
    guards: {rate_limit: {max: 5, window: 1h}}
    steps:
      - name: state
        action: docker.inspect
        params: {project: libervia, service: gateway}
        retries: 3              # attempts, on transient errors only
      - name: restart
        action: docker.restart
        when: steps.state.result.exited
        params: {project: "{{ labels.project }}", service: gateway}
    escalation: {severity: critical, next_steps: ["docker compose ps"]}
"""


def test_playbook_guards_scope_by_compose_project(docker_env, worker_factory, tmp_path):
    docker_env.service("libervia", "gateway", name="libervia-gateway", command=CRASH_ONCE)
    docker_env.wait_for("libervia-gateway", lambda s: s["Status"] == "exited")
    (tmp_path / "config.yaml").write_text("guards: {compose_projects: {allow: [libervia]}}\n")
    w = worker_factory(DOWN_RULES, mode="live",
                       guards=load_config(str(tmp_path / "config.yaml"), env={}).guards)
    w.post_alerts(notification(alert("API_DOWN", fingerprint="a1", project="other")))
    [denied] = w.wait_executions(1)
    assert denied["reason"] == ("scope_denied: compose project 'other' is not in the Docker "
                                "mutation allow list (guards.compose_projects.allow: libervia)")
    assert docker_env.api.inspect_container("libervia-gateway")["State"]["Status"] == "exited"
    w.post_alerts(notification(alert("API_DOWN", fingerprint="a2", project="libervia")))
    decisions = {d["fingerprint"]: d for d in w.wait_executions(2)}
    assert decisions["a2"]["outcome"] == "succeeded", decisions["a2"]
    assert [s["name"] for s in decisions["a2"]["steps"]] == ["state", "restart"]
    assert docker_env.api.inspect_container("libervia-gateway")["State"]["Running"]


def test_engine_down_retries_then_escalates(worker_factory, monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/down.sock")
    w = worker_factory(DOWN_RULES, mode="live",
                       guards=GuardSettings(compose_projects_allow=["libervia"]))
    w.post_alerts(notification(alert("API_DOWN", fingerprint="d1", project="libervia")))
    [decision] = w.wait_executions(1, timeout=60)
    assert decision["outcome"] == "failed", decision
    [state] = [s for s in decision["steps"] if s["name"] == "state"]
    assert state["attempts"] == 3 and "Docker Engine" in state["detail"]
    note = (tmp_path / "escalations" / f"{decision['id']}.md").read_text()
    assert note.startswith("# [CRITICAL] API_DOWN") and "step 'state' failed" in note


def test_exec_probe_output_is_parsed_and_bounded(docker_env, ctx, run):
    docker_env.service("3dpot", "redis", name="3dpot-redis")
    docker_env.service("libervia", "gateway", name="libervia-gateway")
    ping = act(run, "docker.exec", ctx, project="3dpot", service="redis",
               command=["redis-cli", "ping"], read_only=True)
    assert (ping["exit_code"], ping["stdout"], ping["container"]) == (0, "PONG\n", "3dpot-redis")
    health = act(run, "docker.exec", ctx, container="libervia-gateway", read_only=False,
                 project="libervia", command=["health-json"], parse="json")
    assert health["json"] == {"status": "ok", "uptime": 12}
    # the probe's answer is the container's: a failing Redis fails the step, with its output
    docker_env.set_state("3dpot-redis", "redis-cli",
                         "1\nCould not connect to Redis at 127.0.0.1:6379: Connection refused")
    failed = execute(run, "docker.exec", ctx, container="3dpot-redis",
                     command=["redis-cli", "ping"], read_only=True)
    assert failed.outcome == "failed" and failed.attempts == 1
    assert failed.result["exit_code"] == 1 and "Connection refused" in failed.result["stdout"]
    # bounded output, stderr kept apart
    big = act(run, "docker.exec", ctx, project="libervia", service="gateway", max_output=1000,
              command=["sh", "-c", "head -c 200000 /dev/zero | tr '\\0' x; echo oops >&2"])
    assert len(big["stdout"]) == 1000 and big["truncated"] and big["stderr"] == "oops\n"


def test_exec_stops_waiting_at_its_timeout_and_needs_a_running_container(docker_env, ctx, run):
    docker_env.service("libervia", "gateway", name="libervia-gateway")
    slow = execute(run, "docker.exec", ctx, project="libervia", container="libervia-gateway",
                   command=["sleep", "30"], timeout="1s")
    assert slow.outcome == "failed" and slow.attempts == 1
    assert slow.result["timed_out"] and "did not finish within 1s" in slow.detail
    docker_env.service("3dpot", "db", name="3dpot-db", command="exit 2")
    docker_env.wait_for("3dpot-db", lambda s: s["Status"] == "exited")
    with pytest.raises(ActionError, match=r"no running container of service db .*3dpot-db exited"):
        act(run, "docker.exec", ctx, project="3dpot", service="db", read_only=True,
            command=["pg_isready", "-q"])


def test_exec_parameters():
    assert problems("docker.exec", container="3dpot-redis", command=["redis-cli", "FLUSHALL"]) \
        == ["project is required: the scope guard admits changes by compose project "
            "(guards.compose_projects.allow), and the container must carry it"]
    [refused] = problems("docker.exec", container="3dpot-redis", read_only=True,
                         command=["redis-cli", "FLUSHALL"])
    assert refused.startswith("read_only: true is accepted only for the documented read-only")
    assert problems("docker.exec", container="3dpot-db", read_only=True,
                    command=["psql", "-U", "postgres", "-c", "SELECT 1"]) == []


COPY_RULES = """
playbooks:
  - name: eventlog-backup
    match: {alertname: EVENTLOG_INTEGRITY_FAILURE}
    steps:
      - name: backup
        action: docker.copy_out
        params: {project: libervia, service: gateway, directory: "%s",
                 path: "/data/libervia/tenants/{{ labels.tenant_id }}"}
    escalation: {severity: critical, always: true}
"""


def test_copy_out_writes_only_under_the_evidence_roots(docker_env, worker_factory, tmp_path):
    gw = docker_env.service("libervia", "gateway", name="libervia-gateway")
    assert gw.exec_run(["sh", "-c", "mkdir -p /data/libervia/tenants/acme && echo ev > "
                        "/data/libervia/tenants/acme/events.jsonl"]).exit_code == 0
    roots = GuardSettings(evidence_directories=[str(tmp_path / "evidence")])
    outside = worker_factory(COPY_RULES % (tmp_path / "elsewhere"), mode="live", guards=roots)
    outside.post_alerts(notification(alert("EVENTLOG_INTEGRITY_FAILURE", fingerprint="c1",
                                           tenant_id="acme")))
    [denied] = outside.wait_executions(1)
    assert denied["steps"][0]["outcome"] == "blocked", denied
    assert "evidence directory" in denied["steps"][0]["detail"]
    assert not (tmp_path / "elsewhere").exists()
    inside = worker_factory(COPY_RULES % (tmp_path / "evidence" / "libervia"), mode="live",
                            guards=roots)
    inside.post_alerts(notification(alert("EVENTLOG_INTEGRITY_FAILURE", fingerprint="c2",
                                          tenant_id="acme")))
    [copied] = inside.wait_executions(1)
    [step] = copied["steps"]
    assert step["outcome"] == "succeeded", copied
    with tarfile.open(step["result"]["file"]) as tar:
        assert tar.extractfile("acme/events.jsonl").read() == b"ev\n"


PROXY_CFG = Path(__file__).resolve().parents[2] / "deploy" / "compose" / "socket-proxy.cfg"


@pytest.fixture
def socket_proxy(docker_env, tmp_path, monkeypatch):
    """deploy/compose's HAProxy in front of the test dockerd; DOCKER_HOST points at it. Only
    its listening address and the socket path are rewritten."""
    haproxy = shutil.which("haproxy")
    assert haproxy, "haproxy is not installed (tests/run.sh installs Debian's haproxy)"
    text = PROXY_CFG.read_text()
    bind, server = "bind :2375", "server engine /var/run/docker.sock"
    assert bind in text and server in text

    def argv(port: int) -> list[str]:
        cfg = tmp_path / f"haproxy-{port}.cfg"
        cfg.write_text(text.replace(bind, f"bind {LOCALHOST}:{port}").replace(
            server, f"server engine {docker_env.host.removeprefix('unix://')}"))
        return [haproxy, "-db", "-f", str(cfg)]

    proc, port = start_on_free_port(argv, "/version", tmp_path / "haproxy.log", name="haproxy")
    monkeypatch.setenv("DOCKER_HOST", f"tcp://{LOCALHOST}:{port}")
    yield f"tcp://{LOCALHOST}:{port}"
    proc.stop()


def test_the_shipped_socket_proxy_lets_the_playbooks_work_and_nothing_else(docker_env, socket_proxy,
                                                                          run, tmp_path):
    import docker

    docker_env.service("3dpot", "redis", name="3dpot-redis", command=SECOND_START_HEALTHY,
                       health=HEALTH)
    ctx = ActionContext(backends=Backends(), log=logging.getLogger("t"), execution_id="e1")
    try:
        assert act(run, "docker.inspect", ctx, project="3dpot", environment=True)["count"] == 1
        # the container prints its line once its shell runs: wait for it, then read it through the proxy
        deadline = time.monotonic() + 30
        while "started" not in docker_env.client.containers.get("3dpot-redis").logs().decode():
            assert time.monotonic() < deadline, "the container never printed its start line"
            time.sleep(0.1)
        assert act(run, "docker.logs", ctx, container="3dpot-redis")["lines"] == [
            "[3dpot-redis] started"]
        assert act(run, "docker.stats", ctx, project="3dpot")["containers"][0]["pids"] >= 1
        copied = act(run, "docker.copy_out", ctx, container="3dpot-redis", path="/state",
                     directory=str(tmp_path / "evidence"))
        assert copied["bytes"] > 0
        ping = act(run, "docker.exec", ctx, container="3dpot-redis", read_only=True,
                   command=["redis-cli", "ping"])  # exec create, the upgraded stream, inspect
        assert ping["stdout"] == "PONG\n"
        act(run, "docker.restart", ctx, project="3dpot", service="redis", timeout=1)
        assert act(run, "docker.wait_healthy", ctx, project="3dpot", service="redis",
                   timeout="60s", interval="0.2s")["ready"]
        docker_env.service("3dpot", "db", name="3dpot-db", command="exit 3")
        docker_env.wait_for("3dpot-db", lambda s: s["Status"] == "exited")
        [db] = act(run, "docker.inspect", ctx, container="3dpot-db")["containers"]
        # how it ended, from the Engine's events read through the proxy
        assert db["exit_cause"] == "crash", db
        assert db["exit_evidence"].endswith("Engine events: die (exit code 3)")
    finally:
        run(ctx.backends.close())
    # anything else through the proxy: refused, and the Engine unchanged
    api = docker.APIClient(base_url=socket_proxy, version="auto")
    refused = [lambda: api.kill("3dpot-redis"), lambda: api.stop("3dpot-redis"),
               lambda: api.remove_container("3dpot-redis", force=True),
               lambda: api.create_container("remediator-test/busybox:1", "true"),
               lambda: api.images(), lambda: api.prune_containers(),
               lambda: api.put_archive("3dpot-redis", "/tmp", b"")]
    for call in refused:
        with pytest.raises(docker.errors.APIError) as denied:
            call()
        assert denied.value.status_code == 403
    api.close()
    assert docker_env.api.inspect_container("3dpot-redis")["State"]["Running"]
