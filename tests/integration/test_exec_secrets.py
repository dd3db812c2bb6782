"""What an exec prints is filtered like docker.inspect's environment before anything records it.

A real `serve` runs playbooks whose commands print a container's environment (`env`,
`/proc/1/environ`), a command line with credentials in it, and a secret on stderr in the last
line an error message quotes: in a container of the test dockerd (docker.exec) and in a pod of
the Kubernetes API test server (kubernetes.exec, a real local process). No secret may reach
the log file, the API, the note or the store; the output the playbook's checks read (a JSON
report, redis-cli and psql output, ordinary `key=value` lines) is left as it was.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.integration.test_docker_inspect import SECRET_VALUES, SECRETS
from tests.kubeapi.rbac import Policy, step_documents
from tests.support.recorded import run_live

# The checks a playbook makes of ordinary output: all of it must still be there as printed.
ORDINARY = ("'NODE_ENV=production' in steps.env.result.stdout.splitlines()"
            " and 'BROKER=amqp://<redacted>@mq:5672/vhost' in steps.env.result.stdout"
            " and steps.report.result.json == {'status': 'ok', 'uptime': 12,"
            " 'keys': 3, 'token_count': 2}"
            " and steps.report.result.stdout == REPORT"
            " and steps.plain.result.stdout == PLAIN")
REPORT = '{"status": "ok", "uptime": 12, "keys": 3, "token_count": 2}\n'
# redis-cli INFO, psql, pg_isready (as tests/support/docker.py's fakes print them) and the
# `key=value` lines a script prints
LINES = "lag=3\nstatus=ok\nexpired_keys=7\nkeyspace_hits:12\nsessions=4\nchecks passed: 5\n"
# and what an engineer correlates by: a test's verdict, a credential's settings, S3's request id,
# a git sha, a trace id (hex is no secret's shape)
IDS = ("4442587FB7D0A2F9", "a94a8fe5ccb19ba61c4c0873d391e987982fbbd3",
       "4bf92f3577b34da6a3ce929d0e0e4736")
LINES += "\n".join(("--- PASS: TestTokenRefresh (0.00s)", "AUTH_MODE=oidc",
                    "PASSWORD_MIN_LENGTH=12", f"RequestId: {IDS[0]}", *IDS[1:], ""))
PLAIN = ("# Memory\r\nused_memory:1048576\r\nmaxmemory:0\r\n"
         " ?column? \n----------\n        1\n(1 row)\n"
         "/var/run/postgresql:5432 - accepting connections\n" + LINES)


def playbook(alertname: str, action: str, target: dict, where: dict,
             argv: dict[str, list[str]]) -> str:
    """Each command a step of `action`, a check of the ordinary output, and last the command
    that fails: the run ends there and escalates (the note shows every step's result)."""
    def step(name: str, **extra) -> dict:
        return {"name": name, "action": action, "on_failure": "continue",
                "params": {**where, "command": argv[name], **extra}}

    steps = [step("env"), step("environ"), step("java"), step("report", parse="json"),
             step("plain"), step("shapes"), step("pairs", parse="json"),
             {"name": "shown", "action": "log",  # everything printed, in the log file too
              "params": {"message": " ".join("{{ steps." + n + ".result }}" for n in argv
                                             if n != "stderr")}},
             {"name": "ordinary", "action": "check", "on_failure": "continue",
              "params": {"that": "{{ " + ORDINARY.replace("REPORT", repr(REPORT))
                                                 .replace("PLAIN", repr(PLAIN)) + " }}"}},
             # a command that fails may have changed something: the run ends there, escalated
             step("stderr")]
    return yaml.safe_dump({"playbooks": [{"name": f"{alertname.lower()}-probe",
                                          "match": {"alertname": alertname},
                                          "target": target, "guards": {"cooldown": "1m"},
                                          "steps": steps,
                                          "escalation": {"severity": "warning"}}]})


def run_and_search(tmp_path: Path, rules: str, alertname: str, config: dict) -> dict:
    decision, outputs = run_live(tmp_path, rules, alertname, config)
    steps = {s["name"]: s for s in decision["steps"]}
    # the commands ran and printed what a leak would be made of
    assert [n for n in ("env", "environ", "java", "report", "plain", "shapes", "pairs")
            if steps[n]["outcome"] != "succeeded"] == [], decision
    assert steps["stderr"]["outcome"] == "failed"
    assert "exited with code 3: DB_PASS=<redacted>" in steps["stderr"]["detail"]
    assert steps["ordinary"]["outcome"] == "succeeded", steps["ordinary"]
    assert decision["outcome"] == "failed" and any(n.startswith("note ") for n in outputs)
    leaks = [(s, where) for s in SECRET_VALUES for where, text in outputs.items() if s in text]
    assert leaks == []
    [note] = [text for where, text in outputs.items() if where.startswith("note ")]
    assert [s for s in (*IDS, "TestTokenRefresh", "AUTH_MODE=oidc") if s not in note] == []
    # a secret's name anywhere in a line, in lower case, in an env pair; an error's name stays
    assert steps["shapes"]["result"]["stdout"] == SHAPES % (("<redacted>",) * len(SHAPE_VARS))
    assert steps["pairs"]["result"]["json"] == {
        "env": [{"name": "DB_PASSWORD", "value": "<redacted>"},
                {"name": "NODE_ENV", "value": "production"}], "SIGNING_KEY": "<redacted>"}
    return steps


# Secrets in the shapes a name outside a line's start, lower case, a header or a Kubernetes env
# pair give them; an error's name followed by prose, as printed.
SHAPES = ('SIGNING_KEY: %s\n     1\tHMAC=%s\ninvalid_token=%s ExpiredToken:%s\n'
          'private_key: %s\nSet-Cookie: %s\n'
          '{"name": "DB_PASSWORD", "value": "%s"}\n'
          'ExpiredToken: The provided token has expired\n')
SHAPE_VARS = ("DB_PASS", "SMTP_PASS", "MONGO_PASS", "DB_PWD", "SESSION_SALT", "DB_PASS",
              "SMTP_PASS")
PAIRS = '{"env": [{"name": "DB_PASSWORD", "value": "%s"}, {"name": "NODE_ENV", "value": ' \
    '"production"}], "SIGNING_KEY": "%s"}'
PAIR_VARS = ("DB_PASS", "MONGO_PASS")


def printf(template: str, names: tuple[str, ...]) -> list[str]:
    fmt = template.replace("\n", "\\n").replace("\t", "\\t")
    return ["sh", "-c", f"printf '{fmt}' " + " ".join(f'"${n}"' for n in names)]


# Print the environment as a process sees it: `env`'s lines, and /proc/1/environ's NULs.
ARGV = {"shapes": printf(SHAPES, SHAPE_VARS), "pairs": printf(PAIRS, PAIR_VARS),
        "java": ["sh", "-c", 'echo "java $JAVA_OPTS $QUOTED_OPTS -jar app.jar"'],
        "stderr": ["sh", "-c", 'echo "connecting" >&2; echo "DB_PASS=$DB_PASS" >&2; exit 3'],
        "report": ["sh", "-c", f"printf '%s' '{REPORT}'"],
        "plain": ["sh", "-c", "redis-cli INFO memory; psql -X -A -t -c 'SELECT 1'; "
                              f"pg_isready; printf '%s' '{LINES}'"]}


def test_docker_exec_output_never_records_a_secret(docker_env, tmp_path: Path):
    docker_env.service("libervia", "gateway", name="libervia-gateway",
                       env={**SECRETS, "NODE_ENV": "production"})
    docker_env.wait_logs("libervia-gateway", "started")
    rules = playbook("GatewayProbe", "docker.exec", {"kind": "container",
                                                     "name": "libervia-gateway"},
                     {"project": "libervia", "service": "gateway"},
                     {"env": ["env"], "environ": ["cat", "/proc/1/environ"], **ARGV})
    steps = run_and_search(tmp_path, rules, "GatewayProbe",
                           {"guards": {"compose_projects": {"allow": ["libervia"]}}})
    env = steps["env"]["result"]["stdout"].splitlines()
    assert "DB_PASS=<redacted>" in env and "NODE_ENV=production" in env
    assert "JAVA_OPTS=-Xmx1g -Dspring.datasource.password=<redacted> -Dx=1" in env
    assert "DB_PWD=<redacted>" in steps["environ"]["result"]["stdout"].split("\x00")
    assert steps["java"]["result"]["stdout"] == (
        "java -Xmx1g -Dspring.datasource.password=<redacted> -Dx=1 -Ddb.password=<redacted> "
        "--token <redacted> -Dapi.key=<redacted> -jar app.jar\n")


NS = "shop"
# the pod model runs only python (no shell, no coreutils): the same commands in it
PY = {"env": "import os; print('\\n'.join(f'{k}={v}' for k, v in os.environ.items()))",
      "environ": "import os, sys; sys.stdout.write(''.join(f'{k}={v}\\0' for k, v in "
                 "os.environ.items()))",
      "java": "import os; print('java', os.environ['JAVA_OPTS'], os.environ['QUOTED_OPTS'], "
              "'-jar app.jar')",
      "stderr": "import os, sys; print('connecting', file=sys.stderr); "
                "print('DB_PASS=' + os.environ['DB_PASS'], file=sys.stderr); sys.exit(3)",
      "shapes": f"import os, sys; sys.stdout.write({SHAPES!r} % tuple(os.environ[n] for n in "
                f"{SHAPE_VARS!r}))",
      "pairs": f"import os, sys; sys.stdout.write({PAIRS!r} % tuple(os.environ[n] for n in "
               f"{PAIR_VARS!r}))",
      "report": f"import sys; sys.stdout.write({REPORT!r})",
      "plain": f"import sys; sys.stdout.write({PLAIN!r})"}


@pytest.fixture
def cart(kubeapi, kubeconfig):
    kubeapi.rbac = Policy(step_documents("kubernetes.exec", {"namespace": NS}, NS))
    kubeapi.add_deployment("cart", NS, containers=[{
        "name": "app", "image": "shop/cart:1",
        "env": [{"name": k, "value": v} for k, v in {**SECRETS, "NODE_ENV": "production"}.items()]}])
    return kubeapi


def test_kubernetes_exec_output_never_records_a_secret(cart, tmp_path: Path):
    rules = playbook("CartProbe", "kubernetes.exec",
                     {"kind": "deployment", "namespace": NS, "name": "cart"},
                     {"namespace": NS, "selector": "app=cart", "container": "app"},
                     {name: ["python", "-c", code] for name, code in PY.items()})
    steps = run_and_search(tmp_path, rules, "CartProbe",
                           {"guards": {"namespaces": {"allow": [NS]}}})
    env = steps["env"]["result"]["stdout"].splitlines()
    assert "DB_PASS=<redacted>" in env and "NODE_ENV=production" in env
    assert "SESSION_SALT=<redacted>" in steps["environ"]["result"]["stdout"].split("\x00")
    assert [p[0] for *_, p in cart.execs.started] == ["python"] * len(PY)
