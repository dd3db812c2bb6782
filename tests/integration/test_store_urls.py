"""A store's URL, through the real CLI: one that cannot name a store is one line and exit 2
whichever command reads it (asyncpg raised a traceback on a port out of range or not a
number, an IPv6 bracket left open), and its password is never shown, whether in its user
info (`user:pw@`) or in libpq's `password` parameter, on a real PostgreSQL refusing it.
"""

from __future__ import annotations

import json
import uuid

import pytest

from remediator import redact
from remediator.config import load_config
from tests.conftest import NO_MATCH_RULES, write_rules
from tests.integration.test_cli_errors import one_line, remediator
from tests.support.payloads import notification
from tests.support.procs import LOCALHOST, free_port

# Each URL, and what the refusal says (it quotes nothing of the URL: the password may be
# anywhere in one written wrong).
BAD = {
    "postgresql://rem:pw@127.0.0.1:99999/rem": "store: its port is out of range (1 to 65535)",
    "postgresql://rem@127.0.0.1:notaport/rem":
        "store: its port is not a number (in a user or password, write @ / ? # as %40 %2F %3F "
        "%23)",
    "postgresql://rem@[::1:19532/rem":
        "store: an IPv6 host is written in brackets, closed: [::1] or [::1]:5432",
    "postgresql://rem@127.0.0.1:5432/rem?sslmode": "store: its query is not name=value pairs "
                                                   "joined by &",
    "postgresql://rem@127.0.0.1/rem?port=70000":
        "store: its port parameter is not a number from 1 to 65535 (or a list of them)",
    "sqlite://remediator.db": "store: a SQLite URL names no host: sqlite:///relative/path.db "
                              "(three slashes) or sqlite:////absolute/path.db (four)",
}


@pytest.mark.parametrize("url", BAD)
def test_a_store_url_that_cannot_work_is_one_line_whichever_command_reads_it(tmp_path, url):
    rules = str(write_rules(tmp_path / "rules", NO_MATCH_RULES))
    payload = tmp_path / "payload.json"
    payload.write_text(json.dumps(notification()))
    expected = f"remediator: configuration error: --store: {BAD[url]}"
    one_line(remediator(tmp_path, "serve", "--rules", rules, "--listen", "127.0.0.1:0",
                        env={"REMEDIATOR_STORE": url}),
             expected.replace("--store", "REMEDIATOR_STORE"))
    one_line(remediator(tmp_path, "history", "--store", url), expected)
    one_line(remediator(tmp_path, "show", "abc", "--store", url), expected)
    one_line(remediator(tmp_path, "replay", str(payload), "--rules", rules, "--store", url),
             expected)


def test_an_absolute_sqlite_path_is_shown_with_one_slash(tmp_path):
    """`sqlite:////abs` is `/abs` (it was `//abs`: the same file, shown doubled)."""
    rules = str(write_rules(tmp_path / "rules", NO_MATCH_RULES))
    url = "sqlite:////nonexistent/dir/r.db"
    one_line(remediator(tmp_path, "serve", "--rules", rules, "--store", url,
                        "--listen", "127.0.0.1:0"),
             f"remediator: cannot open the store {url}: directory '/nonexistent/dir' does not "
             "exist (remediator creates the database file, not its directory)")
    one_line(remediator(tmp_path, "history", "--store", url),
             f"remediator: cannot open the store {url}: no store at '/nonexistent/dir/r.db': it "
             "does not exist (pass --store, or the --config serve runs with)")


def test_a_password_in_the_store_url_is_remembered_for_every_output():
    """Logs and records are redacted by value too (redact.py): a URL's password is known."""
    secret, other = f"in-query-{uuid.uuid4().hex}", f"in-userinfo-{uuid.uuid4().hex}"
    load_config(env={"REMEDIATOR_STORE":
                     f"postgresql://rem:{other}@db:5432/rem?sslmode=prefer&password={secret}"})
    assert redact.text(f"failed: {secret} and {other}") == \
        f"failed: {redact.REDACTED} and {redact.REDACTED}"


def test_a_password_in_the_store_url_is_never_shown(tmp_path, postgres_cluster, monkeypatch):
    """A real role refusing a wrong password: `serve` and `history` say so in one line, the
    URL's user kept, its password masked, in either place libpq takes it from."""
    monkeypatch.delenv("PGPASSWORD", raising=False)
    role, password = f"pw_{uuid.uuid4().hex[:8]}", f"S3cret-{uuid.uuid4().hex}"
    url = postgres_cluster.password_role(role, password)
    hosts_and_db = url.split("@", 1)[1]
    rules = str(write_rules(tmp_path / "rules", NO_MATCH_RULES))
    env = {"PGPASSFILE": str(tmp_path / "no-pgpass")}  # not ~/.pgpass
    wrong = f"WRONGPASS-{uuid.uuid4().hex}"
    forms = {f"{url}?password={wrong}": f"{url}?password=<redacted>",
             f"{url}?sslmode=prefer&password={wrong}":
                 f"{url}?sslmode=prefer&password=<redacted>",
             f"postgresql://{role}:{wrong}@{hosts_and_db}":
                 f"postgresql://{role}:<redacted>@{hosts_and_db}"}
    for given, shown in forms.items():
        for command in (["history", "--store", given],
                        ["serve", "--rules", rules, "--listen", f"{LOCALHOST}:{free_port()}",
                         "--store", given]):
            done = remediator(tmp_path, *command, env={**env, "REMEDIATOR_LOG_LEVEL": "debug"})
            assert done.returncode == 2, done
            assert wrong not in done.stderr + done.stdout, done
            lines = [line for line in done.stderr.splitlines() if not line.startswith("{")]
            assert len(lines) == 1, done.stderr
            [line] = lines
            assert line.startswith(f"remediator: cannot open the store {shown}: "), line
            assert "password authentication failed" in line, line
            assert line.count("cannot open") == 1, line  # the prefix said once
    # sslmode=require on a server without TLS: refused before any login, never shown either
    done = remediator(tmp_path, "history", "--store", f"{url}?sslmode=require&password={wrong}",
                      env=env)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done
    assert wrong not in done.stderr + done.stdout and len(done.stderr.splitlines()) == 1, done
    # and the right one, in the query, opens it: the check refuses no URL libpq takes
    done = remediator(tmp_path, "history", "--store", f"{url}?password={password}", env=env)
    assert password not in done.stderr + done.stdout, done
    assert "no remediator schema in this database" in done.stderr, done  # logged in


def test_redaction_and_the_check_never_raise_whatever_the_text():
    """They run on URLs refused for their shape too: `redact` raised `Port out of range`."""
    from remediator.store import url as store_url

    pieces = ["postgresql://", "sqlite://", "u", ":", "S3cretPw", "@", "[", "]", "::1", "/",
              "?", "#", "&", "password=", "99999", "%", "%4", ",", "h", " "]
    texts = [a + b + c + d for a in pieces[:2] for b in pieces for c in pieces for d in pieces]
    for text in texts:
        shown = store_url.redact(text)
        store_url.problem(text)
        if any("S3cretPw" in secret for secret in store_url.passwords(text)):
            assert "S3cretPw" not in shown, (text, shown)
