"""Environment values and flags are held to the config file's rules (README: Configuration):
a `REMEDIATOR_*` value the file would refuse is refused at start, in one line naming it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import fields
from pathlib import Path

import pytest

from remediator.config import Config, ConfigError, load_config
from remediator.config_schema import config_schema
from remediator.guards import GuardSettings
from tests.conftest import write_rules
from tests.integration.test_cli_errors import one_line, remediator
from tests.support.payloads import notification

PLAYBOOK = "playbooks:\n  - name: note\n    match: {alertname: Note}\n"

REFUSED = [
    # a traceback (Semaphore initial value must be >= 0)
    ("REMEDIATOR_WORKERS", "-3", "REMEDIATOR_WORKERS: workers: must be >= 1"),
    # ready, 202s, and no alert ever decided
    ("REMEDIATOR_WORKERS", "0", "REMEDIATOR_WORKERS: workers: must be >= 1"),
    ("REMEDIATOR_MAX_EXECUTIONS", "0", "REMEDIATOR_MAX_EXECUTIONS: max_executions: must be >= 1"),
    ("REMEDIATOR_BACKEND_CONCURRENCY", "0",
     "REMEDIATOR_BACKEND_CONCURRENCY: backend_concurrency: must be >= 1"),
    # every webhook a 413, which Alertmanager drops
    ("REMEDIATOR_MAX_BODY_BYTES", "-1", "REMEDIATOR_MAX_BODY_BYTES: max_body_bytes: must be >= 1"),
    # was `setting workers: invalid literal for int() with base 10: 'abc'`
    ("REMEDIATOR_WORKERS", "abc", "REMEDIATOR_WORKERS: 'abc' is not an integer"),
    ("REMEDIATOR_GRACE_PERIOD", "soon",
     "REMEDIATOR_GRACE_PERIOD: 'soon' is not a duration (e.g. 30s, 5m, 1h30m)"),
    ("REMEDIATOR_CONSOLE_COOKIE_SECURE", "maybe",
     "REMEDIATOR_CONSOLE_COOKIE_SECURE: 'maybe' is not a boolean (true or false)"),
    ("REMEDIATOR_EXTERNAL_URL", "x", "REMEDIATOR_EXTERNAL_URL: external_url: 'x': not an "
                                     "absolute http(s) URL: use e.g. https://remediator.example.com"),
]


@pytest.mark.parametrize("variable, value, message", REFUSED,
                         ids=[f"{v}={x}" for v, x, _ in REFUSED])
def test_a_variable_the_file_would_refuse_stops_serve_and_replay_naming_it(tmp_path, variable,
                                                                           value, message):
    rules = str(write_rules(tmp_path / "rules", PLAYBOOK))
    (tmp_path / "payload.json").write_text(json.dumps(notification()))
    expected = f"remediator: configuration error: {message}"
    one_line(remediator(tmp_path, "serve", "--rules", rules, "--store", "sqlite://",
                        "--listen", "127.0.0.1:0", env={variable: value}), expected)
    one_line(remediator(tmp_path, "replay", "payload.json", "--rules", rules,
                        env={variable: value}), expected)


def test_every_number_any_source_can_set_meets_the_schemas_minimum():
    """Whichever setting: a new integer setting is covered the moment it exists."""
    schema = config_schema()["properties"]
    integers = [f.name for f in fields(Config) if schema[f.name].get("type") == "integer"]
    assert {"workers", "backend_concurrency", "max_executions", "max_body_bytes",
            "max_connections"} <= set(integers)
    for name in integers:
        variable, below = f"REMEDIATOR_{name.upper()}", schema[name]["minimum"] - 1
        with pytest.raises(ConfigError, match=f"^{variable}: {name}: must be >= "):
            load_config(env={variable: str(below)}, secrets=False)
        assert getattr(load_config(env={variable: str(below + 1)}, secrets=False), name) == \
            below + 1


@pytest.mark.parametrize("text, message", [
    ("grace_period: -5\n", "1:1: grace_period: must be >= 0"),
    ("guards:\n  approval_ttl: -1\n", "2:3: guards.approval_ttl: must be >= 0"),
    ("external_url: x\n", "1:1: external_url: 'x': not an absolute http(s) URL"),
    ("external_url: remediator.example.com/ui\n", "not an absolute http(s) URL"),
])
def test_the_file_refuses_a_negative_duration_and_a_relative_external_url(tmp_path, text,
                                                                          message):
    config = tmp_path / "config.yaml"
    config.write_text(text)
    rules = str(write_rules(tmp_path / "rules", PLAYBOOK))
    done = remediator(tmp_path, "serve", "--config", str(config), "--rules", rules)
    assert done.returncode == 2 and message in done.stderr, done.stderr


def test_an_absolute_external_url_or_none_is_taken():
    for url in ("", "https://remediator.example.com", "http://10.0.0.7:9095/remediator/"):
        assert load_config(env={"REMEDIATOR_EXTERNAL_URL": url}).external_url == url


def test_schema_config_gives_each_default_from_where_it_is_defined(tmp_path):
    done = subprocess.run([sys.executable, "-m", "remediator.cli", "schema", "--config"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60, check=True)
    schema = json.loads(done.stdout)["properties"]
    assert schema["rules"]["default"] == ["rules"]  # README: `rules`
    assert schema["escalation"]["properties"]["default_sinks"]["default"] == ["files"]
    assert schema["escalation_default_sinks"]["default"] == ["files"]
    guards = schema["guards"]["properties"]
    assert guards["paused"]["default"] is False
    assert guards["budget"]["properties"]["max"]["default"] == 30
    assert guards["budget"]["properties"]["window"]["default"] == 3600
    assert guards["approval_ttl"]["default"] == 3600
    assert guards["namespaces"]["properties"]["deny"]["default"] == \
        GuardSettings().namespaces_deny


def test_schema_takes_config_or_actions_not_both(tmp_path):
    done = subprocess.run([sys.executable, "-m", "remediator.cli", "schema", "--config",
                           "--actions"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2 and done.stdout == "", done
    assert "argument --actions: not allowed with argument --config" in done.stderr


def test_ctrl_c_while_replay_reads_standard_input_is_130_without_a_traceback(tmp_path):
    """`sleep 20 | remediator replay -`, then Ctrl-C: a KeyboardInterrupt traceback was shown."""
    rules = str(write_rules(tmp_path / "rules", PLAYBOOK))
    env = {k: v for k, v in os.environ.items() if not k.startswith("REMEDIATOR_")}
    proc = subprocess.Popen([sys.executable, "-m", "remediator.cli", "replay", "-", "--rules",
                             rules], cwd=tmp_path, env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # Interrupted once it waits in read(2) on standard input (syscall 0, fd 0): the
        # interpreter and the command are set up by then.
        syscall = Path(f"/proc/{proc.pid}/syscall")
        while not syscall.read_text().startswith("0 0x0 "):
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert b"Traceback" not in err and b"KeyboardInterrupt" not in err, err
