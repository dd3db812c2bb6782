"""`kubernetes.exec` and the fixed-command core, against the Kubernetes API test server.

The server's pods/exec speaks the real channel.k8s.io WebSocket protocol and runs each command
as a real local process in its pod model; real kubectl proves the endpoint, then remediator's
action runs the same commands through the official client.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from remediator.actions.backends import Backends
from remediator.actions.base import ActionContext, ActionError
from remediator.actions.command import PROBES, probe_for
from remediator.actions.registry import ACTIONS
from remediator.engine.executor import Executor, StepRecord
from tests.kubeapi.rbac import Policy, step_documents
from tests.support.actions import params, problems

if TYPE_CHECKING:
    from tests.kubeapi import KubeAPIServer
    from tests.kubeapi.fixtures import Kubectl

NS = "shop"
EXEC = ACTIONS["kubernetes.exec"]
# Prints where it runs, one env var, and a line on stderr; exits with its first argument.
SCRIPT = ("import os, sys; print(os.getcwd().split(os.sep)[-2:], os.environ.get('MODE')); "
          "print('to stderr', file=sys.stderr); sys.exit(int(sys.argv[1]))")


@pytest.fixture
def ctx(kubeapi: KubeAPIServer, kubeconfig: Path, run):
    # remediator's service account holds what deploy/kubernetes/generate.py grants an exec
    # step in NS (by pod name or by selector), and nothing else.
    kubeapi.rbac = Policy([*step_documents("kubernetes.exec", {"namespace": NS, "pod": "p"}, NS),
                           *step_documents("kubernetes.exec", {"namespace": NS}, NS)])
    backends = Backends()
    yield ActionContext(backends=backends, log=logging.getLogger("t"), execution_id="e1")
    run(backends.close())


@pytest.fixture
def cart(kubeapi: KubeAPIServer) -> KubeAPIServer:
    kubeapi.add_deployment("cart", NS, replicas=2,
                           containers=[{"name": "app", "image": "shop/cart:1",
                                        "env": [{"name": "MODE", "value": "prod"}]},
                                       {"name": "sidecar", "image": "proxy:1"}])
    return kubeapi


def pods(kube: KubeAPIServer) -> list[str]:
    return sorted(p["metadata"]["name"] for p in kube.list("pods", NS))


def test_kubectl_exec_runs_a_real_process_in_the_pod_model(cart: KubeAPIServer,
                                                            kubectl: Kubectl) -> None:
    first, second = pods(cart)
    ok = kubectl("exec", "-n", NS, first, "-c", "app", "--", "python", "-c", SCRIPT, "0")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == f"['{first}', 'app'] prod\n"  # its own directory, its container's env
    assert "to stderr" in ok.stderr
    failed = kubectl("exec", "-n", NS, second, "-c", "app", "--", "python", "-c", SCRIPT, "3")
    assert failed.returncode == 3  # kubectl exits with the command's code
    assert failed.stdout == f"['{second}', 'app'] prod\n"
    missing = kubectl("exec", "-n", NS, first, "-c", "app", "--", "/bin/sh", "-c", "id")
    assert missing.returncode != 0 and "executable file not found" in missing.stderr
    assert [argv[0] for *_, argv in cart.execs.started] == ["python", "python", "/bin/sh"]


def test_exec_result_matches_kubectl_and_picks_the_first_ready_pod(
        run, ctx, cart: KubeAPIServer, kubectl: Kubectl) -> None:
    first, second = pods(cart)
    cart.set_pod_state(NS, first, ready=False)
    result = run(EXEC.run(params(EXEC, namespace=NS, selector="app=cart", container="app",
                                 command=["python", "-c", SCRIPT, "0"]), ctx))
    by_kubectl = kubectl("exec", "-n", NS, second, "-c", "app", "--", "python", "-c", SCRIPT, "0")
    assert result == {"exit_code": 0, "stdout": by_kubectl.stdout, "stderr": "to stderr\n",
                      "truncated": False, "json": None, "pod": second, "container": "app"}
    cart.set_pod_state(NS, second, ready=False)
    with pytest.raises(ActionError, match="no ready pod in shop matches 'app=cart'"):
        run(EXEC.run(params(EXEC, namespace=NS, selector="app=cart", command=["python"]), ctx))


def test_exec_by_selector_never_picks_a_pod_a_rollout_is_terminating(
        run, ctx, cart: KubeAPIServer, kubectl: Kubectl) -> None:
    """Right after a flag flip's rollout the old pods linger, still Ready, in their grace
    period: a validator run there checked the old configuration, or was killed mid-way."""
    first, second = pods(cart)
    cart.set_pod_state(NS, first, terminating=True)
    listed = kubectl("get", "pods", "-n", NS, first, "-o", "json")
    assert json.loads(listed.stdout)["metadata"]["deletionTimestamp"]  # as kubectl sees it
    result = run(EXEC.run(params(EXEC, namespace=NS, selector="app=cart", container="app",
                                 command=["python", "-c", SCRIPT, "0"]), ctx))
    assert result["pod"] == second and result["stdout"] == f"['{second}', 'app'] prod\n"
    cart.set_pod_state(NS, second, terminating=True)
    with pytest.raises(ActionError, match="none ready and not terminating"):
        run(EXEC.run(params(EXEC, namespace=NS, selector="app=cart", command=["python"]), ctx))


def test_exit_codes_json_and_bounded_output(run, ctx, cart: KubeAPIServer) -> None:
    pod = pods(cart)[0]

    def exec_(**raw):
        return run(EXEC.run(params(EXEC, namespace=NS, pod=pod, **raw), ctx))

    with pytest.raises(ActionError, match=r"exited with code 3: to stderr") as failed:
        exec_(command=["python", "-c", SCRIPT, "3"])
    assert failed.value.result["exit_code"] == 3  # the record keeps what was seen
    report = {"status": "FAIL", "mismatch_rate_percent": 1.5}
    printed = ["python", "-c", f"print({json.dumps(json.dumps(report))}); raise SystemExit(1)"]
    # a non-zero exit the playbook accepts, with the report parsed
    assert exec_(command=printed, parse="json", ok_exit_codes=[0, 1])["json"] == report
    with pytest.raises(ActionError, match="stdout is not JSON"):
        exec_(command=["python", "-c", "print('no')"], parse="json")
    # the default container is the first; output is cut at max_output and counted
    big = exec_(command=["python", "-c", "import sys; sys.stdout.write('x' * 200000)"],
                max_output=1000)
    assert (big["container"], len(big["stdout"]), big["truncated"]) == ("app", 1000, True)
    with pytest.raises(ActionError, match="stdout is longer than max_output"):
        exec_(command=["python", "-c", "print('[' + '1,' * 900 + '1]')"], max_output=100,
              parse="json")


# Writes a JSON report to the file named by --output, progress text to stdout (DeltaCrown's
# validator's shape); with "none" it writes nothing. Exits with its first argument.
WRITER = ("import json, sys; code, what = int(sys.argv[1]), sys.argv[2]; "
          "path = sys.argv[sys.argv.index('--output') + 1]; print('Sampled 2 objects'); "
          "what == 'none' or open(path, 'w').write(json.dumps({'errors': 2, 'path': path}) "
          "if what == 'json' else 'Status: PASS'); sys.exit(code)")


def test_a_report_file_is_written_under_tmp_read_back_from_the_same_pod_and_deleted(
        run, ctx, cart: KubeAPIServer) -> None:
    pod = pods(cart)[0]

    def exec_(*args: str, **raw):
        return run(EXEC.run(params(EXEC, namespace=NS, pod=pod, report_option="--output",
                                   command=["python", "-c", WRITER, *args], **raw), ctx))

    first = exec_("1", "json", parse="json", ok_exit_codes=[0, 1])
    second = exec_("0", "json", parse="json")
    paths = [first["json"]["path"], second["json"]["path"]]
    assert first["stdout"] == "Sampled 2 objects\n"  # stdout is left as it was, not parsed
    assert first["json"]["errors"] == 2 and first["report"] == json.dumps(first["json"])
    assert all(path.startswith("/tmp/remediator-report-") and path.endswith(".json")
               for path in paths) and paths[0] != paths[1]  # one fresh file per call
    assert not any(Path(path).exists() for path in paths)  # deleted after reading
    runs = [argv for _, p, _, argv in cart.execs.started if p == pod]
    assert runs[-3:] == [["python", "-c", WRITER, "0", "json", "--output", paths[1]],
                         ["cat", "--", paths[1]], ["rm", "-f", "--", paths[1]]]
    with pytest.raises(ActionError, match="the report file is not JSON"):
        exec_("0", "text", parse="json")
    with pytest.raises(ActionError, match=r"exit code 0\) left no report to read at /tmp/"):
        exec_("0", "none")
    with pytest.raises(ActionError, match="exited with code 2"):
        exec_("2", "json")  # a failed run's report is not read, and still deleted
    written, removed = (argv for *_, argv in cart.execs.started[-2:])
    assert removed == ["rm", "-f", "--", written[-1]] and not Path(written[-1]).exists()


def test_a_command_past_its_timeout_is_stopped_and_not_retried(run, ctx,
                                                               cart: KubeAPIServer) -> None:
    p = params(EXEC, namespace=NS, pod=pods(cart)[0], timeout=1,
               command=["python", "-c", "import time; print('started', flush=True); "
                                        "time.sleep(30)"])
    record = StepRecord(name="s", action=EXEC.name, params=p, outcome="planned")
    run(Executor(retry_wait=0.01).run(EXEC, p, ctx, record, timeout=20, attempts=3))
    assert (record.outcome, record.attempts) == ("failed", 1)
    assert "did not finish within 1s" in record.detail
    assert record.result["stdout"] == "started\n" and record.result["timed_out"]


def test_denied_exec_fails_at_once_and_a_5xx_on_open_is_retried(run, ctx,
                                                                cart: KubeAPIServer) -> None:
    pod = pods(cart)[0]
    p = params(EXEC, namespace=NS, pod=pod, command=["python", "-c", "print(1)"])

    def execute() -> StepRecord:
        record = StepRecord(name="s", action=EXEC.name, params=p, outcome="planned")
        return run(Executor(retry_wait=0.01).run(EXEC, p, ctx, record, timeout=20, attempts=3))

    cart.forbid("create", "pods/exec", NS)
    denied = execute()
    assert (denied.outcome, denied.attempts) == ("failed", 1)
    assert "pods/exec" in denied.detail and "HTTP 403" in denied.detail
    cart.clear_faults()
    cart.inject("GET", r"/pods/.*/exec$", status=503, times=1)
    retried = execute()
    assert (retried.outcome, retried.attempts, retried.result["stdout"]) == ("succeeded", 2, "1\n")
    assert len(cart.execs.started) == 1  # the refused attempt ran nothing


def test_declarations_probes_and_permissions() -> None:
    base = {"namespace": NS, "pod": "cart-0"}
    assert EXEC.mutates(params(EXEC, **base, command=["redis-cli", "ping"]))
    probe = params(EXEC, **base, command=["redis-cli", "-h", "cache", "PING"], read_only=True)
    assert not EXEC.mutates(probe)
    assert problems("kubernetes.exec", **base, command=["redis-cli", "FLUSHALL"],
                    read_only=True)[0].startswith("read_only: true is accepted only for")
    assert problems("kubernetes.exec", namespace=NS, command=["x"]) == [
        "give exactly one of pod or selector"]
    for argv in (["redis-cli", "INFO", "memory"], ["pg_isready", "-h", "db", "-p", "5432"],
                 ["psql", "-h", "db", "-U", "app", "-X", "-c", "SELECT 1"],
                 ["aws", "sts", "get-caller-identity", "--output", "json"],
                 ["aws", "s3api", "head-bucket", "--bucket", "code-forge-artifacts-prod"],
                 ["python", "scripts/s3_backfill_validator.py", "--sample-rate", "0.01"],
                 ["df", "-h", "/mnt/media/certificates"],
                 ["cat", "artifacts/backfill_report.json"]):
        assert probe_for(argv) is not None, argv
    # DeltaCrown's validator writes its report to artifacts/backfill_report.json (the nightly
    # report a human reads) unless told otherwise: a probe only with a file of remediator's own.
    validator = ["python", "scripts/s3_backfill_validator.py", "--sample-rate", "0.01"]
    assert problems("kubernetes.exec", **base, command=validator, read_only=True)[0].startswith(
        "read_only: true is accepted for 'python scripts/s3_backfill_validator.py --sample-rate "
        "0.01' only with report_option: --output")
    assert problems("kubernetes.exec", **base, command=validator, read_only=True,
                    report_option="--output") == []
    assert problems("kubernetes.exec", **base, command=["df", "/x"], read_only=True,
                    report_option="--output") == [
        "'df /x' writes no report file: report_option does not apply"]
    assert problems("kubernetes.exec", **base, command=validator,
                    report_option="--output /etc/x")[0].startswith("report_option must be")
    for argv in (["psql", "-c", "DROP TABLE x"], ["psql", "-f", "x.sql", "-c", "SELECT 1"],
                 ["redis-cli", "-a", "secret", "ping"], ["redis-cli", "ping", "extra"],
                 ["python", "scripts/s3_backfill_validator.py", "--sample-rate", "0"],
                 ["python", "scripts/s3_backfill_validator.py", "--sample-rate", "0.1",
                  "--output", "x.json"], ["aws", "s3", "rm", "s3://b/k"], ["sh", "-c", "ping"],
                 ["aws", "s3api", "head-bucket"], ["aws", "s3api", "delete-bucket", "--bucket", "b1"],
                 ["aws", "s3api", "head-bucket", "--bucket", "../x"],
                 # cat reads a validator report, nothing else: no other file, no option
                 ["cat", "/var/run/secrets/kubernetes.io/serviceaccount/token"],
                 ["cat", "artifacts/../settings.json"], ["cat", "artifacts/x.txt"],
                 ["cat", "-A", "artifacts/x.json"], ["cat", "artifacts/a.json", "artifacts/b.json"],
                 ["cat"]):
        assert probe_for(argv) is None, argv
    assert len(PROBES) == 9
    by_pod = {str(p) for p in EXEC.permissions_for(base)}
    by_selector = {str(p) for p in EXEC.permissions_for({"namespace": NS, "selector": "a=b"})}
    assert by_pod == {"core/pods:get", "core/pods/exec:create"}
    assert by_selector == {"core/pods:list", "core/pods/exec:create"}
