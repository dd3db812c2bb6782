"""The one filter for what a container prints (exec output), in the shapes a real run can't
all show at once: an argv read from /proc/<pid>/cmdline, a PEM key over several lines, JSON
text, prose about passwords, and ordinary output that must stay as printed."""

from __future__ import annotations

import json

import pytest

from remediator.actions.secret_text import (
    credential,
    credential_key,
    json_value,
    lines,
    output,
    secret_variable,
)

R = "<redacted>"
MASKED = [
    ("DB_PASS=hunter2\nNODE_ENV=production\n", f"DB_PASS={R}\nNODE_ENV=production\n"),
    ("export DB_PASS='x y'\ndeclare -x API_KEY=\"k\"\r\n",
     f"export DB_PASS={R}\ndeclare -x API_KEY={R}\r\n"),
    ("PATH=/bin\x00DB_PWD=x\x00JAVA_OPTS=-Xmx1g -Ddb.password=pw -Dx=1\x00",
     f"PATH=/bin\x00DB_PWD={R}\x00JAVA_OPTS=-Xmx1g -Ddb.password={R} -Dx=1\x00"),
    # /proc/<pid>/cmdline: an option's value is the next NUL-ended word
    ("java\x00-Ddb.password=pw\x00--token\x00tok-6161\x00-jar\x00app.jar\x00",
     f"java\x00-Ddb.password={R}\x00--token\x00{R}\x00-jar\x00app.jar\x00"),
    ("java --token 'tok 1' --password=\"a b\" -Dapi.key=ak -jar app.jar",
     f"java --token {R} --password={R} -Dapi.key={R} -jar app.jar"),
    ('{"status": "ok", "db_password": "x \\" y", "Authorization": "Bearer q", "token_count": 2}',
     f'{{"status": "ok", "db_password": "{R}", "Authorization": "{R}", "token_count": 2}}'),
    ("password: hunter2\nAuthorization: Bearer abc.def\n",
     f"password: {R}\nAuthorization: Bearer {R}\n"),
    ("-----BEGIN RSA PRIVATE KEY-----\nMIIabc\nxyz==\n-----END RSA PRIVATE KEY-----\nnext\n",
     f"{R}\nnext\n"),
    ("upstream ghp_a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8 is set\n", f"upstream {R} is set\n"),
    ("Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MEFCQ0RFRg\n", f"{R}\n"),  # printenv SESSION_SECRET
    ("BROKER=amqp://app:pw@mq:5672/v\n", f"BROKER=amqp://{R}@mq:5672/v\n"),
    # an error's name is left as is when prose follows; not a value after it, nor a password
    # someone typed, nor an assignment to a name with an error's word in it
    ("InvalidToken: token=abc access_token=t2\ninvalid_password=pw\n",
     f"InvalidToken: {R} access_token={R}\ninvalid_password={R}\n"),
    ("invalid_token=t1 missing_token: t2 expired-token=t3 invalid_api_key=t4\n"
     "invalid_credentials=user:t5 token_error=t6 secret_exception: t7 ExpiredToken:t8\n",
     f"invalid_token={R} missing_token: {R} expired-token={R} invalid_api_key={R}\n"
     f"invalid_credentials={R} token_error={R} secret_exception: {R} ExpiredToken:{R}\n"),
    # a variable's name in upper case anywhere in a line
    ("SIGNING_KEY: v1\n     1\tSIGNING_KEY=v2\n50%\rSIGNING_KEY=v3\ntypeset -x DB_PASS=v4\n"
     "setenv DB_PASS v5\nEnvironment=SIGNING_KEY=v6\nx HMAC=v7\n",
     f"SIGNING_KEY: {R}\n     1\tSIGNING_KEY={R}\n50%\rSIGNING_KEY={R}\n"
     f"typeset -x DB_PASS={R}\nsetenv DB_PASS {R}\nEnvironment=SIGNING_KEY={R}\nx HMAC={R}\n"),
    # lower case, camel case, headers, clients' password options, a no-break space
    ("private_key: v1\nprivateKey=v2 access_key=v3 tls.key=v4\nCookie: a=v5; b=v6\n"
     "Set-Cookie: sid=v7; Path=/\nredis-cli -h r -a v8 ping\nmysql -h db -P 3306 -pv9 -e 'q'\n"
     "password\u00a0= v10\n",
     f"private_key: {R}\nprivateKey={R} access_key={R} tls.key={R}\nCookie: {R}\n"
     f"Set-Cookie: {R}\nredis-cli -h r -a {R} ping\nmysql -h db -P 3306 -p{R} -e 'q'\n"
     f"password\u00a0= {R}\n"),
    # a Kubernetes env pair (JSON, YAML) and a secret's data key
    ('[{"name": "DB_PASSWORD", "value": "v1"}, {"name": "NODE_ENV", "value": "production"}]\n'
     '{"SIGNING_KEY":"v2","tls.key":"LS0tLS1CRUdJTg=="}\n'
     "- name: DB_PASSWORD\n  value: v3\n- name: NODE_ENV\n  value: production\n",
     f'[{{"name": "DB_PASSWORD", "value": "{R}"}}, {{"name": "NODE_ENV", "value": "production"}}]\n'
     f'{{"SIGNING_KEY":"{R}","tls.key":"{R}"}}\n'
     f"- name: DB_PASSWORD\n  value: {R}\n- name: NODE_ENV\n  value: production\n"),
    # a Python dict's repr: a program logging its settings, botocore's --debug headers
    ("{'password': 'hunter2', 'user': 'bob', 'token_count': 2}\n"
     "{'X-Amz-Security-Token': b'IQoJb3JpZ2luX2VjEJr//wEaCXVz', 'Authorization': "
     "b'AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3, Signature=fe5f'}",
     f"{{'password': '{R}', 'user': 'bob', 'token_count': 2}}\n"
     f"{{'X-Amz-Security-Token': '{R}', 'Authorization': '{R}'}}"),
]
ORDINARY = [
    "# Memory\r\nused_memory:1048576\r\nmaxmemory:0\r\nkeyspace_hits:12\r\nexpired_keys:3\r\n",
    " ?column? \n----------\n        1\n(1 row)\n",
    "/var/run/postgresql:5432 - accepting connections\n",
    "lag=3\nstatus=ok\nexpired_keys=7\nsessions=4\nchecks passed: 5\nall tests passed 12\n",
    'psql: error: FATAL:  password authentication failed for user "app"\n',
    '{"status": "ok", "uptime": 12, "keys": 3, "token_count": 2, "passed": 5}\n',
    "d41d8cd98f00b204e9800998ecf8427e  /data/file\nFilesystem Size Used Avail Use% Mounted on\n",
    # an error's name ending in a credential's word is no credential (S3's, jsonwebtoken's)
    "ERROR s3 upload failed: ExpiredToken: The provided token has expired\n",
    "ExpiredTokenException: The security token included in the request is expired\n",
    "TokenExpiredError: jwt expired\nInvalidPasswordException: Password does not conform\n",
    "NoSuchBucket: The specified bucket does not exist\nTENANT_CONFLICT: tenant busy\n",
    "AccessDenied: Access Denied\nsessions=4 keys=3 S3 Key=a/b.json author: bob\n",
    "SecretNotFound: secret shop/db not found\n",
    # a switch, as docker.inspect shows it (deltacrown reads it back)
    "CERT_S3_READ_PRIMARY=false\n  CERT_S3_READ_PRIMARY: 'true'\n",
]


@pytest.mark.parametrize(("printed", "recorded"), MASKED)
def test_secrets_in_output_are_masked(printed: str, recorded: str) -> None:
    assert output(printed) == recorded


@pytest.mark.parametrize("printed", ORDINARY)
def test_ordinary_output_is_left_as_printed(printed: str) -> None:
    assert output(printed) == printed


def test_parsed_json_keeps_what_checks_compare_and_withholds_credentials() -> None:
    report = {"status": "ok", "token_count": 2, "checksum": "d41d8cd98f00b204e9800998ecf8427e",
              "password": "x", "items": [{"api_key": "k", "line": "DB_PASS=x", "ok": True}]}
    assert json_value(report) == {
        "status": "ok", "token_count": 2, "checksum": "d41d8cd98f00b204e9800998ecf8427e",
        "password": R, "items": [{"api_key": R, "line": f"DB_PASS={R}", "ok": True}]}


def test_log_lines_are_masked_one_for_one() -> None:
    """Lines as a `logs` action keeps them: each as `output` shows it, a key withheld line by
    line (a line is evidence only beside its neighbours)."""
    printed = ["start", "2026-12-02 INFO DB_PASS=hunter2 ok", "key: -----BEGIN PRIVATE KEY-----",
               "MIIabc", "-----END PRIVATE KEY----- loaded",
               "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln", "FATAL: password authentication failed"]
    assert lines(printed) == ["start", f"2026-12-02 INFO DB_PASS={R} ok", f"key: {R}", R,
                              f"{R} loaded", R, "FATAL: password authentication failed"]
    assert lines([]) == [] and lines([""]) == [""]


def test_a_switch_is_no_secret_whatever_its_name() -> None:
    """deltacrown's playbook reads CERT_S3_READ_PRIMARY=false back from the deployment's env."""
    assert [secret_variable("CERT_S3_READ_PRIMARY", v) for v in ("false", "True", " on", "")] \
        == [False] * 4
    assert secret_variable("CERT_S3_READ_PRIMARY", "s3") and secret_variable("DB_PASS", "1234")


def test_a_json_credential_cut_by_an_excerpt_end_is_masked() -> None:
    assert output('{"ok": 1, "token": "abc-123') == f'{{"ok": 1, "token": "{R}"'
    assert credential_key("api_key") and credential_key("db.password")
    assert not credential_key("passed") and not credential_key("status")


def test_parsed_json_withholds_env_pairs_and_variable_names() -> None:
    """Kubernetes' env pairs and docker's environment keys, as `parse: json` reads them."""
    spec = {"env": [{"name": "DB_PASSWORD", "value": "v1"}, {"name": "NODE_ENV", "value": "x"}],
            "data": {"SIGNING_KEY": "v2", "tls.key": "v3", "privateKey": "v4", "Key": "a/b"}}
    assert json_value(spec) == {
        "env": [{"name": "DB_PASSWORD", "value": R}, {"name": "NODE_ENV", "value": "x"}],
        "data": {"SIGNING_KEY": R, "tls.key": R, "privateKey": R, "Key": "a/b"}}
    assert not credential_key("keys") and not credential_key("TENANT_CONFLICT")


def test_a_token_in_json_text_is_withheld_without_its_quotes_and_comma() -> None:
    """`aws sts get-caller-identity` prints a JSON document a check parses: a token's shape
    in it (an access key id as UserId) is withheld inside its quotes, and the rest stays
    JSON (the whole space-separated word, `"AKIA…",`, went, and the document with it)."""
    printed = ('{\n    "UserId": "AKIAIOSFODNN7EXAMPLE",\n    "Account": "123456789012",\n'
               '    "Arn": "arn:aws:sts::123456789012:user/moto"\n}\n')
    assert json.loads(output(printed)) == {"UserId": "<redacted>", "Account": "123456789012",
                                           "Arn": "arn:aws:sts::123456789012:user/moto"}
    # a JWT's signature after its matched head goes with it
    assert output("token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl, done") == (
        "token <redacted>, done")


def test_an_object_key_is_a_name_not_a_credential() -> None:
    """DeltaCrown's validator reports each object missing from S3 by its `object_key`, which
    the playbook quotes: a key is a credential's only after a word that makes it one."""
    report = {"object_key": "certificates/0000.pem", "error": "Object missing in S3"}
    assert json_value(report) == report
    assert output('object_key=certificates/0000.pem cache_key=c1 {"partition_key": "p1"}') == (
        'object_key=certificates/0000.pem cache_key=c1 {"partition_key": "p1"}')
    assert not credential_key("object_key") and not credential_key("idempotency_key")
    assert credential_key("access_key") and credential_key("my_private_key")


# What an on-call engineer correlates by, as real tools print it: a request id, a trace id, a
# git sha, a digest, a UUID, a test runner's verdict, a credential's setting. Each line stays
# as printed, every character (the runbooks' aws, kubectl, docker logs, psql, pytest, go test).
SHA, TRACE, DIGEST = ("a94a8fe5ccb19ba61c4c0873d391e987982fbbd3", "4bf92f3577b34da6a3ce929d0e0e4736",
                      "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08")
EVIDENCE = [
    # aws cli, S3's error body, botocore's headers; a hex id or digest alone (--output text)
    "An error occurred (AccessDenied) when calling the GetObject operation: Access Denied "
    "(RequestId: 4442587FB7D0A2F9)",
    "An error occurred (SignatureDoesNotMatch) when calling the PutObject operation: The request "
    "signature we calculated does not match the signature you provided. Check your key and "
    "signing method.",
    "<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message>"
    "<RequestId>4442587FB7D0A2F9</RequestId></Error>",
    "x-amz-request-id: 4442587FB7D0A2F9\nRequestId: 4442587FB7D0A2F9\n4442587FB7D0A2F9",
    f'{{\n    "ETag": "\\"d41d8cd98f00b204e9800998ecf8427e\\"",\n    "Metadata": {{\n'
    f'        "checksum": "{DIGEST}"\n    }}\n}}',
    DIGEST, TRACE, SHA, "550e8400-e29b-41d4-a716-446655440000",
    # kubectl describe
    f"Container ID:   containerd://{DIGEST}\n"
    f"Image ID:       docker.io/library/nginx@sha256:{DIGEST}",
    "    Environment:\n      AUTH_MODE:             oidc\n      PASSWORD_MIN_LENGTH:   12\n"
    "      CERT_S3_READ_PRIMARY:  false\n      TOKEN_TTL:             3600",
    "    TokenExpirationSeconds:  3607\n    SecretName:  db-credentials\n    Optional:    false",
    f"Annotations:  checksum/config: {DIGEST}",
    # docker logs of a gateway (pino JSON, Prometheus' text), its tracing headers
    f'{{"level":30,"reqId":"req-1","traceId":"{TRACE}","msg":"request completed"}}',
    'auth_failures_total{reason="INVALID_TOKEN",tenant="acme"} 17',
    f"2026-12-02T07:12:03Z INFO request_id={TRACE} status=503 upstream=s3",
    f"traceparent: 00-{TRACE}-00f067aa0ba902b7-01",
    # psql, postgresql.conf
    'psql: error: connection to server at "db" (10.0.0.3), port 5432 failed: FATAL:  password '
    'authentication failed for user "app"',
    "password_encryption = scram-sha-256",
    # pytest
    "tests/test_auth.py::test_token_refresh PASSED                          [ 50%]",
    "FAILED tests/test_auth.py::test_login - AssertionError: assert 401 == 200",
    "tests/test_auth.py:42: AssertionError\nauth_test.go:42: token mismatch",
    "========================= 3 passed, 1 failed in 0.12s =========================",
    # go test -v, automake's test driver and its summary
    "=== RUN   TestTokenRefresh\n--- PASS: TestTokenRefresh (0.00s)\n"
    "    --- PASS: TestTokenRefresh/expired_token (0.00s)\n--- FAIL: TestPassword (0.01s)\n"
    "PASS\nok  \tgithub.com/acme/gw/auth\t0.012s",
    "PASS: TestFoo\nPASS: tests/auth.sh 1 - token refresh\nFAIL: tests/db.sh\n# PASS:  5",
    # kubectl get secrets: a name ending in a credential's word is no option
    "NAME                  TYPE                                  DATA   AGE\n"
    "db-secret             Opaque                                1      5d\n"
    "default-token-x7k2p   kubernetes.io/service-account-token   3      5d",
    # git
    f"commit {SHA}\nHEAD is now at a94a8fe fix: token refresh",
    # a credential's settings and a switch, as env, set and a script print them
    f"CERT_S3_READ_PRIMARY=false\nPASSWORD_MIN_LENGTH=12\nAUTH_MODE=oidc\nTOKEN_TTL=3600\n"
    f"POSTGRES_HOST_AUTH_METHOD=scram-sha-256\nSESSION_TIMEOUT=30m\nJWT_ALGORITHM=HS256\n"
    f"GIT_SHA={SHA}\nREQUEST_ID={TRACE}\nTESTS_PASSED=3\n",
    "passed=3 failed=0 token_count=2 auth_mode: oidc",
]


@pytest.mark.parametrize("printed", EVIDENCE)
def test_what_an_engineer_correlates_by_is_left_as_printed(printed: str) -> None:
    assert output(printed) == printed
    assert lines(printed.split("\n")) == printed.split("\n")


# The shapes that stay withheld, next to what is now shown: a key-like string alone (AWS's
# secret key), a token of a known issuer, a hex secret by its name, PASS as a password's name
# (not a verdict), a setting's name over a value that is no setting's.
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
STILL_MASKED = [
    (AWS_SECRET, R),
    (f"AWS_SECRET_ACCESS_KEY={AWS_SECRET}\naws_secret_access_key = {AWS_SECRET}",
     f"AWS_SECRET_ACCESS_KEY={R}\naws_secret_access_key = {R}"),
    (f'{{"AccessKeyId": "ASIAIOSFODNN7EXAMPLE", "SecretAccessKey": "{AWS_SECRET}", '
     f'"SessionToken": "IQoJb3JpZ2luX2VjEXAMPLE"}}',
     f'{{"AccessKeyId": "{R}", "SecretAccessKey": "{R}", "SessionToken": "{R}"}}'),
    ("ghp_a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8 eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln",
     f"{R} {R}"),
    ("Authorization: Bearer abc.def\npassword=hunter2", f"Authorization: Bearer {R}\npassword={R}"),
    ("-----BEGIN PRIVATE KEY-----\nMIIabc\n-----END PRIVATE KEY-----", R),
    ("postgresql://app:hunter2@db:5432/app", f"postgresql://{R}@db:5432/app"),
    (f"SESSION_SECRET={TRACE}\nsession_secret: {TRACE}", f"SESSION_SECRET={R}\nsession_secret: {R}"),
    ('{"token_type": "Bearer", "access_token": "at-1", "expires_in": 3600}',
     f'{{"token_type": "Bearer", "access_token": "{R}", "expires_in": 3600}}'),
    # PASS as a password: `PASS=`, indented (YAML), lower case, before no test's name
    ("PASS=hunter2\n  PASS: hunter2\npass: hunter2\nPass: hunter2\nPASS: hunter2\nDB_PASS: x",
     f"PASS={R}\n  PASS: {R}\npass: {R}\nPass: {R}\nPASS: {R}\nDB_PASS: {R}"),
    (f"PASS: {AWS_SECRET}\n# PASS: pw5\nPASSWORD: 12", f"PASS: {R}\n# PASS: {R}\nPASSWORD: {R}"),
    # a setting's name, but no setting's value: a sentence, an assignment, a key
    ('AUTH_MODE="oidc password=hunter2"\nx TOKEN_TTL=a=b auth_type: ' + AWS_SECRET,
     f"AUTH_MODE={R}\nx TOKEN_TTL={R} auth_type: {R}"),
    # a file's line or a scope only before a line number or a name
    ("auth.py: password=hunter2 token::x=y", f"auth.py: {R} token:{R}"),
]


@pytest.mark.parametrize(("printed", "recorded"), STILL_MASKED)
def test_secrets_next_to_evidence_stay_masked(printed: str, recorded: str) -> None:
    assert output(printed) == recorded


def test_a_credentials_setting_is_shown_by_every_reader() -> None:
    """docker.inspect's environment, a Kubernetes env pair, parsed JSON: one rule."""
    assert [secret_variable(n, v) for n, v in (
        ("AUTH_MODE", "oidc"), ("PASSWORD_MIN_LENGTH", "12"), ("GIT_SHA", SHA),
        ("REQUEST_ID", TRACE), ("TESTS_PASSED", "3"))] == [False] * 5
    assert [secret_variable(n, v) for n, v in (
        ("SESSION_SECRET", TRACE), ("AUTH_MODE", "a b"), ("TOKEN_TTL", AWS_SECRET),
        ("AUTH", "oidc"), ("X", AWS_SECRET))] == [True] * 5
    assert not credential("token_ttl", "3600") and credential("token", "3600")
    assert json_value({"auth_mode": "oidc", "password_min_length": "12", "password": "12",
                       "env": [{"name": "AUTH_MODE", "value": "oidc"},
                               {"name": "AUTH", "value": "oidc"}]}) == {
        "auth_mode": "oidc", "password_min_length": "12", "password": R,
        "env": [{"name": "AUTH_MODE", "value": "oidc"}, {"name": "AUTH", "value": R}]}
    assert output("- name: AUTH_MODE\n  value: oidc\n- name: AUTH\n  value: oidc") == (
        f"- name: AUTH_MODE\n  value: oidc\n- name: AUTH\n  value: {R}")


# An alert's or a metric's name is words, however long, with digits in it: shown, alone on a
# line (a no_match's reason quotes a label value so), as a variable's value and in JSON.
# A random string of the same length and characters (a key, a token, a JWT's part) is not.
NAMES = [
    "ForgeS3UploadFailureHigh", "CodeForgeS3UploadFailureHigh", "Neural5xxRatioHighCritical",
    "KubePodCrashLooping", "AWSEC2InstanceStatusCheckFailed", "KubeAPIErrorBudgetBurn1h",
    "NodeFilesystemSpaceFillingUp24h", "PostgresReplicationLag30sWarning",
    "K8sNodeNotReadyFor15Minutes", "etcdHighNumberOfFailedGRPCRequests2",
    "checkout-api-v2-5xx-ratio-high", "http_server_requests_seconds_count_5xx",
    "AlertmanagerClusterFailedToSendAlerts5m",
]
RANDOM = [
    AWS_SECRET, "je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY",  # AWS's documented secret keys
    "Hk3tZr9QpL2mXw7vBn4sYc8dFg6jKa1e0oTuVi5R",  # an AWS secret key with no / or +
    "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8",  # a GitHub token's body, without its ghp_
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9",  # a JWT's header alone
    "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",  # a JWT's signature alone
    "Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MEFCQ0RFRg", "q8ZJ3nD0xYk2Vb7pW1sLr4Tg",  # base64 of random bytes
    "ckwPdd9Ig_JZ1G2xrJJGnQlMuBQhTkr5NcHzjCZ6Uz4", "lF3kQ9zXb2VnR7pTw0YhJ8sM",
]


@pytest.mark.parametrize("name", NAMES)
def test_an_identifier_is_shown(name: str) -> None:
    assert output(name) == name
    assert output(f"ALERTNAME={name}") == f"ALERTNAME={name}"
    assert not secret_variable("ALERT", name)


@pytest.mark.parametrize("token", RANDOM)
def test_a_random_string_as_long_stays_withheld(token: str) -> None:
    assert output(token) == R
    assert output(f"X={token}") == f"X={R}"
    assert secret_variable("ALERT", token)
