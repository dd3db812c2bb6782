"""A real password: a role that PostgreSQL authenticates with scram-sha-256 (pg_hba.conf), the
password read from `REMEDIATOR_STORE_PASSWORD_FILE`. A wrong or missing password is one
clear line and exit 2 at start, and a password rotated under a running replica makes it
unready, not crashed; the password is never in a log, an answer, a metric or an error.
"""

from __future__ import annotations

import time
import uuid

from tests.conftest import write_rules
from tests.integration.test_cli import cli
from tests.integration.test_ha_postgres import _alert, _notification, _rules
from tests.support.procs import LOCALHOST, free_port
from tests.support.worker import TOKEN, VIEWER, WorkerProcess, http


def _ready(w: WorkerProcess, status: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while http("GET", f"{w.url}/-/ready")[0] != status:
        assert time.monotonic() < deadline, w.logs()
        time.sleep(0.2)


def test_a_password_from_a_file_connects_and_is_never_shown(tmp_path, postgres_cluster,
                                                             monkeypatch):
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "no-pgpass"))  # not ~/.pgpass
    role, password = f"pw_{uuid.uuid4().hex[:8]}", f"S3cret-{uuid.uuid4().hex}"
    url = postgres_cluster.password_role(role, password)
    rules = write_rules(tmp_path / "rules", _rules(f"http://{LOCALHOST}:9/x"))
    (tmp_path / "right").write_text(password + "\n")
    (tmp_path / "wrong").write_text("not-" + password + "\n")

    def serve(**env: str):
        return cli("serve", "--listen", f"{LOCALHOST}:{free_port()}", "--store", url,
                   "--rules", str(rules), webhook_token=TOKEN, **env)

    for env in ({"store_password_file": str(tmp_path / "wrong")}, {}):  # wrong, then none
        started = serve(**env)
        assert started.returncode == 2, started.stderr
        [line] = started.stderr.strip().splitlines()  # one line, no traceback
        assert line.startswith("remediator: cannot open the store ") and role in line
        assert "password" in line, line  # says what is wrong: authentication
        assert password not in started.stderr + started.stdout

    w = WorkerProcess(tmp_path, [str(rules)], store=url,
                      extra_env={"REMEDIATOR_STORE_PASSWORD_FILE": str(tmp_path / "right"),
                                 "REMEDIATOR_STORE_LEASE": "3s", "PGPASSFILE": "/nonexistent"})
    w.start()
    try:
        assert w.post_alerts(_notification(_alert("a1")))[0] == 202
        deadline = time.monotonic() + 60
        while not (decisions := [d for d in w.executions() if d["outcome"] != "running"]):
            assert time.monotonic() < deadline, w.logs()
            time.sleep(0.2)
        assert decisions[0]["outcome"] == "planned"  # stored and read back on PostgreSQL
        # The password is rotated under the running replica: it cannot reconnect, so it is
        # unready (Alertmanager's retries wait) rather than broken; then it is given back.
        postgres_cluster.sql(f"ALTER ROLE {role} PASSWORD 'rotated-{password}'")
        postgres_cluster.sql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                             f"WHERE usename = '{role}'")
        _ready(w, 503)
        assert w.post_alerts(_notification(_alert("a2")))[0] == 503
        postgres_cluster.sql(f"ALTER ROLE {role} PASSWORD '{password}'")
        _ready(w, 200)
        assert w.post_alerts(_notification(_alert("a2")))[0] == 202
        shown = [http("GET", f"{w.url}/-/ready")[1], http("GET", f"{w.url}/metrics")[1],
                 http("GET", f"{w.url}/api/v1/executions", headers=VIEWER)[1],
                 http("GET", f"{w.url}/-/healthy")[1]]
    finally:
        w.stop()
    logs = w.log_path.read_text()
    assert "password authentication failed" in logs  # the outage was logged ...
    assert password not in logs and password not in repr(shown)  # ... never the password
