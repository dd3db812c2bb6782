"""The one filter for what a container prints (exec output), in the shapes a real run can't
all show at once: an argv read from /proc/<pid>/cmdline, a PEM key over several lines, JSON
text, prose about passwords, and ordinary output that must stay as printed."""

from __future__ import annotations

import json

import pytest

from remediator.actions.secret_text import (
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
