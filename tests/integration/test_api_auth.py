"""Who may call what, over real HTTP: the webhook, viewers and operators, and what is recorded."""

from __future__ import annotations

import base64
import time
from concurrent.futures import ThreadPoolExecutor

import bcrypt
import pytest
import requests
import yaml

from remediator.auth import Operator
from remediator.cli import main
from remediator.config import ConfigError, load_config
from tests.conftest import APPROVAL_RULES, DEMO_RULES, write_rules
from tests.support.alertmanager import make_alert, webhook_config
from tests.support.payloads import alert, notification
from tests.support.worker import (
    OPERATOR,
    OPERATORS,
    TOKEN,
    VIEWER,
    WorkerProcess,
    http,
)

WEBHOOK = {"Authorization": f"Bearer {TOKEN}"}


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_each_credential_reaches_only_what_its_role_allows(worker_factory):
    w = worker_factory()
    w.post_alerts(notification(alert("DemoDown", namespace="demo", deployment="web", fingerprint="a")))
    [decision] = w.wait_executions(1)
    reads = ["/api/v1/executions", f"/api/v1/executions/{decision['id']}"]
    controls = ["/api/v1/pause", "/api/v1/resume", "/api/v1/circuits/reset?target=demo/deployment/web",
                "/-/reload", f"/api/v1/executions/{decision['id']}/approve"]
    for path in reads:
        status, body = http("GET", w.url + path)
        assert status == 401 and "credentials" in body["error"], path
        assert http("GET", w.url + path, headers=WEBHOOK)[0] == 403, path
        assert http("GET", w.url + path, headers={"Authorization": "Bearer nope"})[0] == 401
        assert http("GET", w.url + path, headers=VIEWER)[0] == 200, path
        assert http("GET", w.url + path, headers=OPERATOR)[0] == 200, path
    for path in controls:
        assert http("POST", w.url + path, b"")[0] == 401, path
        status, body = http("POST", w.url + path, b"", WEBHOOK)
        assert (status, body["error"]) == (403, "the webhook credential may only POST /alerts")
        status, body = http("POST", w.url + path, b"", VIEWER)
        assert status == 403 and "victor is a viewer" in body["error"], path
        assert http("POST", w.url + path, b"", OPERATOR)[0] != 403, path  # 200, 400, 409...
    # The webhook is Alertmanager's alone; users read and act, they do not inject alerts.
    status, body = w.post_alerts(notification(alert("DemoDown", fingerprint="b")), token=None,
                                 **OPERATOR)
    assert (status, body["error"]) == (403, "alice is an operator; POST /alerts needs the "
                                            "webhook role")
    # Open by Prometheus convention, and nothing in them needs a credential.
    for path in ("/metrics", "/-/healthy", "/-/ready"):
        assert http("GET", w.url + path)[0] == 200, path
    # Refused webhooks still count, so RemediatorWebhookRejected sees a wrong token.
    assert w.post_alerts(notification(alert("DemoDown", fingerprint="c")), token="wrong")[0] == 401
    metrics = http("GET", f"{w.url}/metrics")[1]
    assert 'remediator_webhook_requests_total{code="401"} 1.0' in metrics
    assert 'remediator_webhook_requests_total{code="403"} 1.0' in metrics


def test_the_recorded_actor_is_the_authenticated_user_never_a_header(worker_factory):
    w = worker_factory(APPROVAL_RULES % {"url": "http://127.0.0.1:9/"}, mode="live")
    w.post_alerts(notification(alert("WebDown", fingerprint="w1")))
    [pending] = w.wait_executions(1)
    assert pending["reason"].startswith("approval_pending")
    claims = {"X-Remediator-User": "mallory", **OPERATOR}
    url = f"{w.url}/api/v1/executions/{pending['id']}/reject"
    status, rejected = http("POST", url, b"", claims)
    assert status == 200 and rejected["reason"].endswith("by alice"), rejected["reason"]
    assert http("POST", f"{w.url}/api/v1/pause", b"", claims)[0] == 200
    assert w.call(w.service.store.get_state("paused"))["by"] == "alice"


def test_resetting_a_circuit_that_is_not_open_is_a_404_naming_those_that_are(worker_factory):
    # A 200 `{"reset": []}` for a mistyped target read as success at 3 a.m.
    w = worker_factory()
    now = w.service.clock()
    w.call(w.service.store.put_state("circuit:flap:service/flap-svc",
                                     {"opened_at": now, "until": now + 3600}))
    w.call(w.service.store.put_state("circuit:old:service/gone", {"opened_at": now - 7200,
                                                                  "until": now - 3600}))
    status, body = http("POST", f"{w.url}/api/v1/circuits/reset?target=flap-svc", b"", OPERATOR)
    assert status == 404, body
    assert body["error"] == "no circuit of flap-svc to reset; open now: flap on service/flap-svc"
    assert body["open"] == [{"playbook": "flap", "target": "service/flap-svc"}]
    status, body = http("POST", f"{w.url}/api/v1/circuits/reset?target=service/flap-svc",
                        b"", OPERATOR)
    assert (status, body) == (200, {"reset": ["flap:service/flap-svc"]})
    status, body = http("POST", f"{w.url}/api/v1/circuits/reset?target=service/flap-svc",
                        b"", OPERATOR)
    assert (status, body["open"]) == (404, [])
    assert body["error"].endswith("open now: none")


def test_limit_is_validated(worker_factory):
    w = worker_factory()
    w.post_alerts(notification(*(alert("DemoDown", namespace="demo", deployment=f"d{i}",
                                       fingerprint=f"f{i}") for i in range(3))))
    w.wait_executions(3)
    for bad in ("-1", "0", "1001", "abc", ""):
        status, body = http("GET", f"{w.url}/api/v1/executions?limit={bad}", headers=VIEWER)
        assert status == 400 and "limit must be an integer from 1 to 1000" in body["error"], bad
    status, body = http("GET", f"{w.url}/api/v1/executions?limit=2", headers=VIEWER)
    assert status == 200 and len(body["executions"]) == 2


def test_operators_with_bcrypt_passwords_use_basic_auth(worker_factory):
    hashed = bcrypt.hashpw(b"correct horse", bcrypt.gensalt(rounds=4)).decode()
    w = worker_factory(operators=[Operator("olga", "operator", password_hash=hashed),
                                  Operator("vera", "viewer", password_hash=hashed)])
    executions = f"{w.url}/api/v1/executions"
    assert http("GET", executions, headers=basic("vera", "correct horse"))[0] == 200
    assert http("GET", executions, headers=basic("vera", "correct horse"))[0] == 200  # cached
    assert http("GET", executions, headers=basic("vera", "wrong"))[0] == 401
    assert http("GET", executions, headers=basic("nobody", "correct horse"))[0] == 401
    assert http("POST", f"{w.url}/api/v1/pause", b"", basic("vera", "correct horse"))[0] == 403
    assert http("POST", f"{w.url}/api/v1/pause", b"", basic("olga", "correct horse"))[0] == 200
    assert w.call(w.service.store.get_state("paused"))["by"] == "olga"
    for garbage in ("Basic !!!", "Basic " + base64.b64encode(b"no-colon").decode(), "Digest x"):
        assert http("GET", executions, headers={"Authorization": garbage})[0] == 401, garbage


def test_allow_unauthenticated_opens_everything_as_anonymous(worker_factory):
    w = worker_factory(allow_unauthenticated=True, operators=[])
    assert w.post_alerts(notification(alert("DemoDown", fingerprint="u")), token=None)[0] == 202
    assert http("GET", f"{w.url}/api/v1/executions")[0] == 200
    assert http("POST", f"{w.url}/api/v1/pause", b"")[0] == 200
    assert w.call(w.service.store.get_state("paused"))["by"] == "anonymous"
    # A credential that is presented is still checked: a wrong one is not "anonymous".
    assert http("GET", f"{w.url}/api/v1/executions", headers={"Authorization": "Bearer x"})[0] == 401


def test_operator_config_is_validated_with_a_clear_message(tmp_path):
    good = tmp_path / "alice"
    good.write_text("a-long-enough-token-0123\n")
    short = tmp_path / "short"
    short.write_text("abc")
    cases = [
        ([{"name": "alice", "role": "admin", "token_file": str(good)}], "'admin' is not one of viewer"),
        ([{"name": "alice", "role": "viewer"}], "exactly one of token_file, password_hash"),
        ([{"name": "alice", "role": "viewer", "token_file": str(short)}], "shorter than 16"),
        ([{"name": "alice", "role": "viewer", "token_file": str(tmp_path / "absent")}], "cannot read"),
        ([{"name": "alice", "role": "viewer", "password_hash": "plaintext"}], "bcrypt hash"),
        ([{"name": "a:b", "role": "viewer", "token_file": str(good)}], "name: 'a:b': must be 1-64"),
        ([{"name": "alice", "role": "viewer", "token_file": str(good)},
          {"name": "bob", "role": "operator", "token_file": str(good)}], "share a token"),
        ([{"name": "alice", "role": "viewer", "token_file": str(good), "tokn": 1}], "unknown key"),
    ]
    for operators, message in cases:
        config = tmp_path / "config.yaml"
        config.write_text(yaml.safe_dump({"operators": operators}))
        with pytest.raises(ConfigError, match=message):
            load_config(str(config), env={})
    config.write_text(yaml.safe_dump({"operators": [
        {"name": "alice", "role": "operator", "token_file": str(good)}]}))
    with pytest.raises(ConfigError, match="is the webhook token"):
        load_config(str(config), env={"REMEDIATOR_WEBHOOK_TOKEN": "a-long-enough-token-0123"})
    assert load_config(str(config), env={}).operators == [
        Operator("alice", "operator", token="a-long-enough-token-0123")]
    # The webhook's token starts remediations: as guessable when short, refused the same way,
    # the message naming the setting, never the token.
    with pytest.raises(ConfigError, match="webhook_token is shorter than 16") as refused:
        load_config(None, env={"REMEDIATOR_WEBHOOK_TOKEN": "dev-token-15chr"})
    assert "dev-token" not in str(refused.value)
    assert load_config(None, env={"REMEDIATOR_WEBHOOK_TOKEN": "dev-token-16char"}).webhook_token
    # So is the webhook's basic auth password, the same credential sent another way.
    basic = {"REMEDIATOR_BASIC_AUTH_USERNAME": "am", "REMEDIATOR_BASIC_AUTH_PASSWORD": "x"}
    with pytest.raises(ConfigError, match=r"basic_auth\.password is shorter than 16"):
        load_config(None, env=basic)
    with pytest.raises(ConfigError, match=r"basic_auth\.password is shorter than 16"):
        load_config(None, env={"REMEDIATOR_BASIC_AUTH_USERNAME": "am"})
    basic["REMEDIATOR_BASIC_AUTH_PASSWORD"] = "am-password-16ch"
    assert load_config(None, env=basic).basic_auth_password == "am-password-16ch"
    # A secret put where its file's path belongs is not quoted by the refusal either.
    given = "a-secret-given-in-place-of-its-file"
    with pytest.raises(ConfigError, match="webhook_token_file: cannot read") as refused:
        load_config(None, env={"REMEDIATOR_WEBHOOK_TOKEN_FILE": given})
    config.write_text(yaml.safe_dump({"operators": [
        {"name": "alice", "role": "operator", "token_file": given}]}))
    with pytest.raises(ConfigError, match=r"operators\[0\] \(alice\): cannot read") as unread:
        load_config(str(config), env={})
    assert given not in str(refused.value) + str(unread.value)



def test_lint_checks_operators_without_the_mounted_secrets(tmp_path, capsys):
    """CI lints the production config where no Secret is mounted; serve still needs them."""
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "webhook_token_file": str(tmp_path / "absent-webhook-token"),
        "operators": [{"name": "alice", "role": "operator", "token_file": str(tmp_path / "absent")}]}))
    rules = write_rules(tmp_path / "rules", DEMO_RULES)
    assert main(["lint", "--config", str(config), str(rules)]) == 0, capsys.readouterr()
    with pytest.raises(ConfigError, match="No such file"):
        load_config(str(config), env={})  # serve: the webhook token file first
    config.write_text(yaml.safe_dump({"operators": [{"name": "alice", "role": "admin",
                                                      "token_file": "/absent"}]}))
    assert main(["lint", "--config", str(config), str(rules)]) == 1
    assert "role: 'admin' is not one of viewer, operator" in capsys.readouterr().out


def test_alertmanager_basic_auth_with_password_file(tmp_path, alertmanager_factory):
    """The webhook's basic auth password from a `_FILE`, sent by a real Alertmanager from its
    own password_file; the same credential is refused on the API."""
    password = tmp_path / "webhook-password"
    password.write_text("s3cret-basic-password\n")
    rules = write_rules(tmp_path / "rules", DEMO_RULES)
    w = WorkerProcess(tmp_path, [str(rules)], extra_env={
        "REMEDIATOR_WEBHOOK_TOKEN": "",
        "REMEDIATOR_BASIC_AUTH_USERNAME": "alertmanager",
        "REMEDIATOR_BASIC_AUTH_PASSWORD_FILE": str(password)}).start()
    try:
        am = alertmanager_factory(webhook_config(f"{w.url}/alerts",
                                                 basic_auth=("alertmanager", password)))
        am.post_alerts([make_alert({"alertname": "DemoDown", "namespace": "demo",
                                    "deployment": "web"})])
        deadline = time.monotonic() + 20
        while not w.executions(alertname="DemoDown"):
            assert time.monotonic() < deadline, w.logs()
            time.sleep(0.1)
        assert w.post_alerts(notification(alert("DemoDown", fingerprint="x")))[0] == 401  # no token
        creds = basic("alertmanager", "s3cret-basic-password")
        assert http("GET", f"{w.url}/api/v1/executions", headers=creds)[0] == 403
        assert http("POST", f"{w.url}/alerts", notification(alert("DemoDown", fingerprint="y")),
                    creds)[0] == 202
        assert http("POST", f"{w.url}/alerts", b"{}", basic("alertmanager", "s3cret"))[0] == 401
    finally:
        assert w.stop() == 0



def test_a_credential_that_is_not_ascii_is_a_401_never_a_500(worker_factory):
    # Basic credentials are base64, which holds no other character; decoding `Basic é`
    # raised a ValueError the handler did not expect (a 500 and a traceback per request,
    # to anyone, authenticated or not).
    w = worker_factory()
    for header in ("Basic é", "Basic ZéZ=", "Bearer é", "Basic \u00ff\u00ff\u00ff\u00ff"):
        for method, path in (("GET", "/api/v1/executions"), ("POST", "/alerts"),
                             ("POST", "/api/v1/pause")):
            status, body = http(method, f"{w.url}{path}", {}, {"Authorization": header})
            assert status == 401 and "invalid credentials" in body["error"], (header, path, body)
    assert w.call(w.service.store.get_state("paused")) is None


def test_password_checks_in_flight_are_bounded_and_the_rest_told_to_retry(worker_factory):
    # A bcrypt check is ~0.2 s of CPU on purpose, run in a pool of two threads: anyone could
    # queue thousands of wrong passwords for a known name (no credential needed to try one),
    # each login then waiting behind all of them, and the CPU the event loop needs burnt.
    hashed = bcrypt.hashpw(b"correct horse", bcrypt.gensalt(rounds=12)).decode()
    w = worker_factory(operators=[Operator("olga", "operator", password_hash=hashed)])
    executions = f"{w.url}/api/v1/executions"
    assert http("GET", executions, headers=basic("olga", "correct horse"))[0] == 200
    flood = [basic("olga", f"guess {i}") for i in range(40)]
    flood[::8] = [basic("olga", "correct horse")] * 5  # a verified password is not checked again
    with ThreadPoolExecutor(len(flood)) as pool:
        answers = list(pool.map(lambda h: http("GET", executions, headers=h, timeout=60), flood))
    assert [status for status, _ in answers[::8]] == [200] * 5
    refused = [answer for status, answer in answers if status == 429]
    assert refused and all("password checks" in a["error"] for a in refused), answers
    assert len(refused) + sum(status == 401 for status, _ in answers) == 35
    assert http("GET", executions, headers=basic("olga", "another guess"))[0] == 401


def test_without_credentials_a_cross_site_page_cannot_act(worker_factory):
    # --allow-unauthenticated is for a laptop, where the browser is the other way in: any
    # page it opens may POST a form to 127.0.0.1 (no credential needed, none preflighted),
    # and so pause, reset or approve a live change. Browsers say where a request comes from
    # (Sec-Fetch-Site, Origin); a request from another site may not act anonymously.
    w = worker_factory(APPROVAL_RULES % {"url": "http://127.0.0.1:9/"}, mode="live",
                       allow_unauthenticated=True, operators=[])
    assert w.post_alerts(notification(alert("WebDown", fingerprint="x")), token=None)[0] == 202
    [blocked] = w.wait_executions(1)
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    for where in ({"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"},
                  {"Origin": "https://evil.example"}, {"Origin": "null"},
                  {"Origin": "http://[::1"}):  # one that cannot be split: refused, not a 500
        for path in ("/api/v1/pause", f"/api/v1/executions/{blocked['id']}/approve",
                     "/api/v1/circuits/reset?target=prod/deployment/web", "/-/reload"):
            status, answer = http("POST", f"{w.url}{path}", b"x=1", {**form, **where})
            assert status == 403 and "another site" in answer["error"], (where, path, answer)
    assert w.call(w.service.store.get_state("paused")) is None
    assert w.call(w.service.store.get_execution(blocked["id"]))["outcome"] == "blocked"
    # The console's own pages, a script without a browser, and a credential still act.
    own = {"Sec-Fetch-Site": "same-origin", "Origin": w.url}
    assert http("POST", f"{w.url}/api/v1/pause", b"", own)[0] == 200
    assert http("POST", f"{w.url}/api/v1/resume", b"")[0] == 200
    assert http("GET", f"{w.url}/api/v1/executions", headers={"Sec-Fetch-Site": "cross-site"})[0] == 200


def test_without_credentials_a_server_named_by_a_dns_name_answers_nothing(worker_factory):
    # DNS rebinding: a page of evil.example whose name then resolves to 127.0.0.1 is the same
    # site as this server to the browser, which sends no header saying otherwise (Sec-Fetch-*
    # only go to secure origins) and lets the page read every answer and post forms.
    w = worker_factory(allow_unauthenticated=True, operators=[])
    port = w.url.rsplit(":", 1)[1]
    executions = f"{w.url}/api/v1/executions"
    for host in (f"evil.example:{port}", "evil.example", f"localhost.evil.example:{port}"):
        for method, path in (("GET", "/api/v1/executions"), ("POST", "/api/v1/pause"),
                             ("GET", "/ui/")):
            status, answer = http(method, f"{w.url}{path}", b"", {"Host": host})
            assert status == 403 and "DNS rebinding" in str(answer), (host, path, answer)
    assert w.call(w.service.store.get_state("paused")) is None
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"app.localhost:{port}",
                 f"[::1]:{port}", "10.1.2.3"):
        assert http("GET", executions, headers={"Host": host})[0] == 200, host
    # A credential is checked as ever, whatever the name.
    assert http("GET", executions, headers={"Host": "evil.example",
                                            "Authorization": "Bearer not-a-token-of-anyone"}
                )[0] == 401
    # Open endpoints stay open by any name (Prometheus scrapes by service name).
    assert http("GET", f"{w.url}/metrics", headers={"Host": "remediator:9095"})[0] == 200
    # Alertmanager posts by a service's name and says neither Origin nor Sec-Fetch-*: a 403
    # would drop its alerts. A browser's POST always carries its Origin.
    alerts = notification(alert("WebDown", fingerprint="by-name"))
    assert http("POST", f"{w.url}/alerts", alerts, {"Host": "remediator:9095"})[0] == 202
    status, answer = http("POST", f"{w.url}/alerts", alerts,
                          {"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"})
    assert status == 403 and "DNS rebinding" in answer["error"], answer
    # A Host header that is no host is refused as a name, not a 500.
    for host in ("[::1", "a b"):
        assert http("GET", executions, headers={"Host": host})[0] == 403, host


def test_with_credentials_a_cross_site_page_cannot_act_nor_log_in(worker_factory):
    """A Basic credential the browser had cached paused automation from
    Origin: https://evil.example; a login form posted from elsewhere was taken."""
    hashed = bcrypt.hashpw(b"correct horse", bcrypt.gensalt(rounds=4)).decode()
    w = worker_factory(operators=[*OPERATORS, Operator("olga", "operator", password_hash=hashed)])
    cred = basic("olga", "correct horse")
    for where in ({"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"},
                  {"Sec-Fetch-Site": "same-site"}, {"Origin": "https://evil.example"},
                  {"Origin": "null"}):
        status, body = http("POST", f"{w.url}/api/v1/pause", {}, {**cred, **where})
        assert status == 403 and "another site" in body["error"], (where, status, body)
        status, _ = http("POST", f"{w.url}/ui/login", b"name=olga&password=correct+horse",
                         {"Content-Type": "application/x-www-form-urlencoded", **where})
        assert status == 403, where
    assert http("GET", f"{w.url}/api/v1/executions", headers={**cred, "Sec-Fetch-Site":
                                                              "cross-site"})[0] == 200
    # The console's own pages, and the CLI (neither header), act.
    own = {"Sec-Fetch-Site": "same-origin", "Origin": w.url}
    status, body = http("POST", f"{w.url}/ui/login", b"name=olga&password=correct+horse",
                        {"Content-Type": "application/x-www-form-urlencoded", **own})
    assert status == 200, body
    assert http("POST", f"{w.url}/api/v1/pause", {}, cred)[0] == 200


def test_answers_name_no_aiohttp_version_and_api_reads_are_not_cached(worker_factory):
    w = worker_factory()
    read = requests.get(f"{w.url}/api/v1/executions", headers=OPERATOR, timeout=10)
    assert read.status_code == 200 and read.headers["Cache-Control"] == "no-store"
    answers = [read, requests.post(f"{w.url}/alerts", json={}, timeout=10),
               requests.get(f"{w.url}/ui/", allow_redirects=False, timeout=10),
               requests.get(f"{w.url}/nowhere", timeout=10),
               requests.get(f"{w.url}/-/healthy", timeout=10)]
    assert [r.headers["Server"] for r in answers] == ["remediator"] * len(answers), \
        [(r.status_code, r.headers.get("Server")) for r in answers]
