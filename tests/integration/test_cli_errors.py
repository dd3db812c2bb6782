"""What cannot work is said in one line, exit 2, never a traceback, and touches nothing."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import NO_MATCH_RULES, write_rules
from tests.support.payloads import notification


def remediator(cwd: Path, *args: str, env: dict[str, str] | None = None
               ) -> subprocess.CompletedProcess[str]:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("REMEDIATOR_")},
           "REMEDIATOR_WEBHOOK_TOKEN": "a-webhook-token-of-some-length", **(env or {})}
    return subprocess.run([sys.executable, "-m", "remediator.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


def one_line(done: subprocess.CompletedProcess[str], expected: str) -> None:
    assert done.returncode == 2, done
    lines = [line for line in done.stderr.splitlines() if not line.startswith("{")]  # JSON logs
    assert lines == [expected], done.stderr


def test_serve_refuses_what_cannot_work_in_one_line(tmp_path):
    one_line(remediator(tmp_path, "serve"),
             f"remediator: no playbooks: directory 'rules' not found in {tmp_path}; pass --rules PATH")
    rules = str(write_rules(tmp_path / "rules", NO_MATCH_RULES))
    one_line(remediator(tmp_path, "serve", "--listen", "9095"),
             "remediator: configuration error: --listen: listen: '9095': not HOST:PORT with a port up to "
             "65535: use e.g. 127.0.0.1:9095, or 0.0.0.0:9095 for every interface")
    one_line(remediator(tmp_path, "serve", "--store", "mysql://db"),
             "remediator: configuration error: --store: store: the value given: not a store URL: use "
             "sqlite:///path.db, sqlite:// (in memory) or postgresql://user@host:port/db")
    one_line(remediator(tmp_path, "serve", "--store", "sqlite:///absent/remediator.db",
                        "--listen", "127.0.0.1:0"),
             "remediator: cannot open the store sqlite:///absent/remediator.db: directory "
             "'absent' does not exist (remediator creates the database file, not its directory)")
    assert not (tmp_path / "absent").exists()
    # The SQLAlchemy convention trips newcomers: three slashes is relative to the directory.
    one_line(remediator(tmp_path, "serve", "--store", f"sqlite://{tmp_path}/r.db",
                        "--listen", "127.0.0.1:0"),
             f"remediator: cannot open the store sqlite://{tmp_path}/r.db: directory "
             f"'{str(tmp_path)[1:]}' does not exist (remediator creates the database file, not "
             f"its directory); for the absolute path write sqlite:///{tmp_path}/r.db (four "
             "slashes)")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = remediator(tmp_path, "serve", "--rules", rules, "--store", "sqlite://",
                          "--listen", f"127.0.0.1:{port}")
    one_line(done, f"remediator: cannot listen on 127.0.0.1:{port}: error while attempting to "
                   f"bind on address ('127.0.0.1', {port}): address already in use")
    done = remediator(tmp_path, "serve", "--rules", rules, "--store", "sqlite://",
                      "--listen", "no-such-host.invalid:9095")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "remediator: cannot listen on no-such-host.invalid:9095: " in done.stderr


@pytest.mark.parametrize("command", [["history"], ["show", "abc"]])
def test_history_and_show_never_create_a_store(tmp_path, command):
    one_line(remediator(tmp_path, *command),
             "remediator: cannot open the store sqlite:///remediator.db: no store at "
             "'remediator.db': it does not exist (pass --store, or the --config serve runs with)")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", [["history"], ["show", "abc"]])
def test_history_and_show_refuse_a_file_that_is_not_a_store_in_one_line(tmp_path, command):
    """An empty file or another program's SQLite database was a 30-line traceback."""
    (tmp_path / "empty.db").write_bytes(b"")
    other = sqlite3.connect(tmp_path / "other.db")
    other.execute("CREATE TABLE t (x)")
    other.close()
    for name in ("empty.db", "other.db"):
        one_line(remediator(tmp_path, *command, "--store", f"sqlite:///{name}"),
                 f"remediator: cannot open the store sqlite:///{name}: '{name}' is not a "
                 "remediator store (it has no decisions table): pass the --store serve uses")
    assert (tmp_path / "empty.db").read_bytes() == b""  # read, never made a store


@pytest.mark.parametrize("limit", ["-1", "0", "ten"])
def test_history_refuses_a_limit_that_is_not_a_positive_count(tmp_path, limit):
    # SQLite read LIMIT -1 as "all"; PostgreSQL refused it with a traceback.
    done = remediator(tmp_path, "history", "--limit", limit)
    assert done.returncode == 2 and done.stderr.splitlines()[-1] == \
        f"remediator history: error: argument --limit: not a positive integer: '{limit}'"


def test_history_refuses_an_outcome_that_is_none(tmp_path):
    """`--outcome bogus` printed an empty table, exit 0: a typo read as "nothing failed"."""
    done = remediator(tmp_path, "history", "--outcome", "bogus")
    assert done.returncode == 2 and done.stderr.splitlines()[-1] == (
        "remediator history: error: argument --outcome: invalid choice: 'bogus' (choose from "
        "'running', 'planned', 'succeeded', 'failed', 'blocked', 'escalated', 'resolved', "
        "'no_match', 'duplicate')"), done.stderr


def test_replay_of_a_payload_that_is_not_utf8_is_one_line_as_the_webhook_says_it(tmp_path):
    (tmp_path / "payload.json").write_bytes(b'\xff\xfe{"version": "4"}')
    done = remediator(tmp_path, "replay", "payload.json", "--rules", str(write_rules(
        tmp_path / "rules", NO_MATCH_RULES)))
    one_line(done, "remediator: invalid payload: body is not valid UTF-8 (byte 0)")


def test_replay_refuses_what_cannot_work_in_one_line_as_serve_does(tmp_path):
    one_line(remediator(tmp_path, "replay", "absent.json"),
             "remediator: cannot read absent.json: No such file or directory")
    (tmp_path / "payload.json").write_text(json.dumps(notification()))
    one_line(remediator(tmp_path, "replay", "payload.json"),  # was "rules refused", exit 1
             f"remediator: no playbooks: directory 'rules' not found in {tmp_path}; pass --rules PATH")
    rules = str(write_rules(tmp_path / "rules", NO_MATCH_RULES))
    one_line(remediator(tmp_path, "replay", "payload.json", "--rules", rules, "--store",
                        "sqlite:///absent/r.db"),  # was a traceback, exit 1
             "remediator: cannot open the store sqlite:///absent/r.db: directory 'absent' does "
             "not exist (remediator creates the database file, not its directory)")


def test_a_replay_leaves_no_trace_in_the_store_serve_would_use(tmp_path):
    """As `replay --help` says: REMEDIATOR_STORE and the config's store are serve's; only
    --store puts a replay's decisions in a store (and only --store lets it run live)."""
    rules = str(write_rules(tmp_path / "rules", NO_MATCH_RULES))
    (tmp_path / "payload.json").write_text(json.dumps(notification()))
    (tmp_path / "config.yml").write_text(f"store: sqlite:///{tmp_path}/configured.db\n")
    env = {"REMEDIATOR_STORE": f"sqlite:///{tmp_path}/env.db"}
    done = remediator(tmp_path, "replay", "payload.json", "--rules", rules, env=env)
    assert done.returncode == 0, done
    done = remediator(tmp_path, "replay", "payload.json", "--rules", rules, "--config",
                      str(tmp_path / "config.yml"))
    assert done.returncode == 0, done
    assert not list(tmp_path.glob("*.db*"))
    done = remediator(tmp_path, "replay", "payload.json", "--rules", rules, "--mode", "live",
                      env=env)
    assert done.returncode == 2 and "--mode live needs --store" in done.stderr, done
    assert not list(tmp_path.glob("*.db*"))


def test_a_live_replay_refuses_a_store_that_does_not_exist_yet(tmp_path):
    """A new store would be an empty one: no pause, cooldowns, rate limits, circuits nor
    budget. A typo'd path, or `sqlite://` in memory, is refused, and nothing is created; a
    dry run still replays in memory."""
    rules = str(write_rules(tmp_path / "rules", NO_MATCH_RULES))
    (tmp_path / "payload.json").write_text(json.dumps(notification()))
    needs = ("remediator: replay --mode live needs the existing store serve uses, which holds "
             "the pause, cooldowns, rate limits, circuits and budget: cannot open the store ")
    for url, path in (("sqlite:///typo/path.db", "typo/path.db"), ("sqlite://", ":memory:")):
        one_line(remediator(tmp_path, "replay", "payload.json", "--rules", rules, "--mode",
                            "live", "--store", url),
                 f"{needs}{url}: no store at {path!r}: it does not exist (pass --store, or "
                 "the --config serve runs with)")
    assert not list(tmp_path.glob("**/*.db*"))
    assert remediator(tmp_path, "replay", "payload.json", "--rules", rules).returncode == 0


def test_replay_takes_no_more_input_than_the_webhook_would(tmp_path):
    """Bounded by max_body_bytes, as the webhook's body: `replay /dev/zero` (or `-` from an
    endless pipe) was a MemoryError; a payload too large for the webhook was replayed."""
    rules = str(write_rules(tmp_path / "rules", NO_MATCH_RULES))
    env = {"REMEDIATOR_MAX_BODY_BYTES": "4096"}
    (tmp_path / "payload.json").write_text(json.dumps(notification()) + " " * 4096)
    one_line(remediator(tmp_path, "replay", "payload.json", "--rules", rules, env=env),
             "remediator: payload.json: the payload exceeds max_body_bytes (4096 bytes), as "
             "the webhook would refuse it")
    one_line(remediator(tmp_path, "replay", "/dev/zero", "--rules", rules, env=env),
             "remediator: /dev/zero: the payload exceeds max_body_bytes (4096 bytes), as the "
             "webhook would refuse it")
    with open("/dev/zero", "rb") as endless:
        done = subprocess.run([sys.executable, "-m", "remediator.cli", "replay", "-", "--rules",
                               rules], cwd=tmp_path, stdin=endless, capture_output=True,
                              text=True, timeout=60, env={
                                  **os.environ, "REMEDIATOR_MAX_BODY_BYTES": "4096",
                                  "REMEDIATOR_WEBHOOK_TOKEN": "a-webhook-token-of-some-length"})
    one_line(done, "remediator: standard input: the payload exceeds max_body_bytes (4096 "
                   "bytes), as the webhook would refuse it")


def test_approve_refuses_what_it_cannot_send_in_one_line_never_showing_the_token(tmp_path):
    with socket.socket() as s:  # a port nothing listens on: the request itself is sound
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    one_line(remediator(tmp_path, "approve", "abc", "--url", "localhost:9095"),
             "remediator: --url 'localhost:9095': not an http:// or https:// URL "
             "(e.g. http://127.0.0.1:9095)")
    token = tmp_path / "token"
    for secret in (b"first-half-of-it\nsecond-half-of-it", b"operator-token-\xff\xfe-tail"):
        token.write_bytes(secret)  # http.client's traceback quoted the whole header
        done = remediator(tmp_path, "approve", "abc", "--token-file", str(token), "--url", closed)
        one_line(done, f"remediator: the operator token in {token} holds what an HTTP header "
                       "cannot carry (a line break, a control character, non-ASCII text)")
        assert b"half" not in done.stderr.encode() and b"tail" not in done.stderr.encode()
    # The token itself where its file's path belongs: the refusal names the option, not it.
    given = "operator-token-given-in-place-of-its-file"
    done = remediator(tmp_path, "approve", "abc", "--token-file", given, "--url", closed)
    one_line(done, "remediator: cannot read the operator token file --token-file names: "
                   "No such file or directory")
    done = remediator(tmp_path, "approve", "abc", "--url", closed,
                      env={"REMEDIATOR_OPERATOR_TOKEN_FILE": given})
    assert "REMEDIATOR_OPERATOR_TOKEN_FILE names" in done.stderr and given not in done.stderr
    # An id is one path segment, quoted: not a request http.client refuses with a traceback.
    done = remediator(tmp_path, "approve", "a b\r\n", "--url", closed)
    assert done.returncode == 1 and done.stderr.startswith(f"remediator: cannot reach {closed}: ")


def test_output_cut_short_by_a_closed_pipe_ends_quietly(tmp_path):
    """`remediator schema | head -1`: the reader is gone before the output is written. It
    stops as a shell reports a process SIGPIPE ended (141), not with a BrokenPipeError."""
    read, write = os.pipe()
    os.close(read)  # every write to the pipe now fails (EPIPE)
    try:
        for command in (["schema"], ["schema", "--actions", "builtin"]):
            done = subprocess.run([sys.executable, "-m", "remediator.cli", *command], cwd=tmp_path,
                                  stdout=write, stderr=subprocess.PIPE, text=True, timeout=60)
            assert (done.returncode, done.stderr) == (141, ""), command
    finally:
        os.close(write)


def test_approve_follows_no_redirect_checks_the_answer_and_masks_the_url(tmp_path):
    """`approve --url` followed a redirect with the operator token, died with a KeyError on
    an answer that was not a decision, and echoed --url's user:password in its errors."""
    from http.server import BaseHTTPRequestHandler

    from tests.support.procs import serve_http

    seen: list[tuple[str, str]] = []

    class Double(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            seen.append((self.path, self.headers.get("Authorization", "")))
            if self.path.startswith("/moved/"):
                self.send_response(302)
                self.send_header("Location", f"http://127.0.0.1:{port}/elsewhere/")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = b'{"ok": true}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST  # a 302 is followed as a GET

        def log_message(self, *args: object) -> None:
            pass

    server, port = serve_http(Double)
    token = {"REMEDIATOR_OPERATOR_TOKEN": "operator-token-never-elsewhere-0123"}
    try:
        done = remediator(tmp_path, "approve", "abc", "--url", f"http://127.0.0.1:{port}/moved",
                          env=token)
        assert done.returncode == 1 and "302" in done.stderr and "not followed" in done.stderr, \
            done.stderr
        assert [path for path, _ in seen] == ["/moved/api/v1/executions/abc/approve"]
        done = remediator(tmp_path, "approve", "abc", "--url", f"http://127.0.0.1:{port}",
                          env=token)
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
        assert "what is not a decision" in done.stderr and "remediator show abc" in done.stderr
    finally:
        server.shutdown()
        server.server_close()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    done = remediator(tmp_path, "approve", "abc", "--url",
                      f"http://admin:url-password-0123@127.0.0.1:{closed}", env=token)
    assert done.returncode == 1 and "url-password-0123" not in done.stderr, done.stderr
