"""The one filter for what a container holds or prints: its environment (docker.inspect), an
exec's output (docker.exec, kubernetes.exec) and its log lines (docker.logs, kubernetes.logs,
and so evidence.bundle's files); a pod template or ConfigMap kubernetes.get snapshots, an
answer http.request records; before a step result, a note, the journal, a log line or the
API shows it. Runbooks say `env | grep -v TOKEN | grep -v PEPPER`; this is
that, much stricter.

A value is a secret because of its name or its shape, never for being long hex: a variable is
withheld whole (its value never shown) when its name says it holds a secret, or its value
looks like one whatever the name (a private key, a token of a known issuer, an opaque
key-like string mixing cases and digits, not words as an alert's or a metric's name is). A
git sha, a trace or request id, a digest stay: they
are what an on-call engineer correlates by. A credential's setting (PASSWORD_MIN_LENGTH=12,
AUTH_MODE=oidc) and a test runner's verdict (`--- PASS: TestFoo`) name no secret. Every other
value is shown with the credentials inside it masked: a URL's `user:pass@` (BROKER_URL,
AMQP_ADDR), a credential query parameter, `password=…` / `db.password: …` / `--token …` inside
an option string (JAVA_OPTS, NODE_OPTIONS).

Output is read line by line (and entry by entry between NULs, as /proc/<pid>/environ has
them): an environment line (`NAME=value`, `export NAME=…`, a name without lower case, as
`env`, `printenv` and `set` print them) is judged like a variable; any other line has its
inline credentials and known token shapes masked, and is withheld when it is one opaque
key-like string (`printenv SESSION_SECRET`). Inline, a secret's name is one rule
(credential_key) wherever it stands: an upper-case variable's name anywhere in a line
(`SIGNING_KEY: v`, `1\tDB_PASS=v`, `Environment=KEY=v`), a credential's words in any case
(`private_key`, `privateKey`, `tls.key`, Cookie headers), a JSON key, a Kubernetes env pair's
name; an error's CamelCase name followed by prose (`ExpiredToken: The provided token has
expired`) names no secret. Lines without any of that (JSON, redis-cli INFO's `name:value`,
psql, `lag=3`, `passed=3`) are left as printed. Withholding too much costs the evidence an
escalation is read for; too little, a password in everyone's mailbox.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from .. import redact
from ..untrusted_regex import compile_regex

# Name parts that mean a secret. PASS anywhere (DB_PASS, SMTP_PASS, PASSWD) but in PASSED,
# PASSES, PASSING (TESTS_PASSED=3, as the inline rule reads `passed`), PWD (DB_PWD), KEY
# (API_KEY, PRIVATE_KEY, KEYFILE), CERT, SALT, SESSION, COOKIE, SIGNING, and connection strings
# that carry credentials in forms no pattern below knows (DSN, *_URI, DATABASE_URL).
SECRET_NAME = re.compile(
    r"(?i)TOKEN|PEPPER|SECRET|PASS(?![EI])|PWD|PRIVATE|KEY|CERT|SALT|SESSION|COOKIE|SIGNING"
    r"|CRED|AUTH|JWT|BEARER|HMAC|NONCE|DSN|DATABASE_URL|REDIS_URL|_URI$")

# Values that are a secret whatever the variable is called. RE2: a value is the container's,
# any length, and these run over each one.
_SECRET_VALUE = compile_regex(
    r"PRIVATE KEY-----"                                  # PEM private keys
    r"|eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\."        # JWTs
    r"|\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"                    # AWS access key ids
    r"|\bgh[pousr]_[A-Za-z0-9]{30,}|\bgithub_pat_\w{30,}|\bglpat-[\w-]{20,}"
    r"|\bxox[abprs]-[A-Za-z0-9-]{10,}|\b[rs]k_(?:live|test)_[A-Za-z0-9]{16,}"
    r"|\bAIza[0-9A-Za-z_-]{30,}|\bSG\.[\w-]{16,}\.[\w-]{16,}|\bnpm_[A-Za-z0-9]{30,}")
# A whole value that is one opaque key-like string: 24+ base64 characters mixing upper case,
# lower case and digits (an API key, AWS's secret access key, a session secret). A hostname, a
# path or a version has dots, slashes or a single case. Hex alone is no secret's shape: it is
# what an on-call engineer correlates by (a git sha, a trace or request id, S3's RequestId, a
# digest, a container id), and a hex secret is named as one (SESSION_SECRET=…, `"token": …`).
# Python's re: one character class repeated runs in linear time there too, and these run on
# each line of an output (RE2's call costs ~20 us: 16 000 NUL-separated entries took 2 s).
_BASE64 = re.compile(r"[A-Za-z0-9+/_-]{24,}={0,2}")
_MIXED = (re.compile(r"[A-Z]"), re.compile(r"[a-z]"), re.compile(r"[0-9]"))
# The words that name a credential inside a longer text (`db.password`, `privateKey`,
# `access_key`, `tls.key`, `Set-Cookie`, `auth`), and a JSON key. `pass` but not passed, passes,
# passing ("checks passed: 5" is no credential); `key` only after a word that makes it a
# credential's (S3's `Key` and `object_key`, a cache's, a partition's or an idempotency key
# are names: DeltaCrown's validator reports each missing object by its `object_key`), and not
# keys/keyspace (redis-cli INFO's `expired_keys:3`); auth, session, salt only as a word (not
# author, sessions).
_KEY = (r"(?:pass(?:[a-df-hj-z0-9_.-][\w.-]*)?|(?:pwd|secret|token|api[._-]?key|credential"
        r"|cookie|pepper|hmac|jwt|bearer)[\w.-]*|(?:private|access|signing|encryption|master"
        r"|license|ssh|tls|client|app|service|account|gpg|pgp|rsa|ecdsa|ed25519|host|deploy"
        r"|admin|root|shared|crypt|enc|sign|webhook|auth|session|storage|consumer)"
        r"[_.-]?key(?:[_.-][\w.-]*|\d)?"
        r"|(?:auth|session|salt|nonce|creds?|dsn)(?:[_.-][\w.-]*)?)")
# A variable's name in upper case (SECRET_NAME's words) anywhere in a line: YAML's
# `SIGNING_KEY: v`, `cat -n`'s `1\tDB_PASS=v`, `typeset -x`, systemd's `Environment=KEY=v`.
_UPPER = (r"(?-i:\b[A-Z0-9_]*(?:TOKEN|PEPPER|SECRET|PASS|PWD|PRIVATE|KEY|CERT|SALT|SESSION"
          r"|COOKIE|SIGNING|CRED|AUTH|JWT|BEARER|HMAC|NONCE|DSN|DATABASE_URL|REDIS_URL|_URI)"
          r"[A-Z0-9_]*)")
_SPACE = r"[ \t\x{00a0}]*"  # a no-break space too (`password\u00a0=`)
# An error's *name* ending in a credential's word names no credential when prose follows its
# `: `: S3's `ExpiredToken: The provided token has expired`, `TokenExpiredError: jwt expired`,
# InvalidPasswordException. Class names only (case matters): `invalid_token=…`,
# `missing_token: …`, `ExpiredToken:VALUE` are values. Matched first (RE2 takes the leftmost
# match, then the first alternative) and left as is.
_CAMEL = r"(?:[A-Z][a-z0-9]+)*"
_WORD = r"(?:Token|Password|Passwd|Secret|Credentials?|ApiKey|Key)"
_ERROR_NAME = (rf"(?-i:{_CAMEL}(?:Expired|Invalid|Missing|Bad|Wrong|Incorrect|Unknown|Revoked)"
               rf"{_WORD}{_CAMEL}|{_CAMEL}{_WORD}{_CAMEL}"
               r"(?:Error|Exception|NotFound|Expired|Invalid|Missing|Required|Mismatch)): [A-Za-z]+ ")
_VALUE = r"(?:\"[^\"\n]*\"?|'[^'\n]*'?|[^\s\x00&;,\"']+)"
_JSON_STRING = r"\"(?:[^\"\\\n]|\\.)*\"?"
# A Python dict's repr (a Python program logging its settings or botocore's --debug headers:
# `{'password': 'x'}`, `'X-Amz-Security-Token': b'...'`): the JSON alternative's, in quotes.
_REPR_STRING = r"b?'(?:[^'\\\n]|\\.)*'?"
# `password=…`, `db.password: …`, `DB_PASS=…` anywhere; `--token …` / `-password …` only as
# an option, at a word's start (in prose, "password authentication failed" names no password;
# `kubectl get secrets` prints `db-secret  Opaque`), its value after a space or a NUL
# (/proc/<pid>/cmdline), `redis-cli -a …`, `mysql -p…`; `Authorization: Bearer …`, a Cookie
# header to its line's end. The value is masked, quoted (`password="s3cret pw"`,
# `--password 'x'`) or not, never past its line. In JSON text, a credential key's string
# (`"password": "…"`; not `"token_count": 2`, as json_value does), its closing quote too where
# an excerpt's end cut it off (http.request's body), and a Kubernetes env pair's value
# (`{"name": "DB_PASSWORD", "value": "…"}`, and its YAML). One capture group an alternative:
# what stays before the mask (the last, JSON's, gets its quotes back).
_INLINE = compile_regex(
    rf"(?i){_ERROR_NAME}"
    rf"|((?:set-)?cookie{_SPACE}:{_SPACE})[^\n\x00]+"
    rf"|(setenv[ \t]+{_UPPER}[ \t]+|{_UPPER}{_SPACE}(?:=|:[ \t]){_SPACE}|{_KEY}{_SPACE}"
    rf"[=:]{_SPACE}|\B-[\w.-]*{_KEY}[ \t\x00]+|authorization{_SPACE}[=:]{_SPACE}"
    r"(?:(?:bearer|basic|token|digest)[ \t]+)?"
    r"|(?-i:\bredis-cli\b[^\n]*?[ \t\x00]-a[ \t\x00]+|\bmysql(?:dump|admin)?\b[^\n]*?[ \t\x00]-p)"
    rf"|name:[ \t]*[\"']?[\w.-]*?(?:{_KEY}|{_UPPER})[\"']?[ \t]*\r?\n[ \t]*value:[ \t]*){_VALUE}"
    rf"|((?:[\"'][\w.-]*?(?:{_KEY}|{_UPPER}|authorization)[\"']|\"name\"\s*:\s*\"[\w.-]*?(?:"
    rf"{_KEY}|{_UPPER})\"\s*,\s*\"value\"){_SPACE}:{_SPACE})(?:{_JSON_STRING}|{_REPR_STRING})")
_JSON_KEY = 3
_CREDENTIAL_KEY = compile_regex(rf"(?i)[\w.-]*?{_KEY}|authorization", anchored=True)
# A PEM private key in output spans lines: withheld from its BEGIN to its END (or the end).
_PEM_BEGIN = compile_regex(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----")
_PEM_END = compile_regex(r"-----END [A-Z0-9 ]*PRIVATE KEY-----")
_PEM = compile_regex(r"(?s)-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?"
                     r"(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|$)")
# A line as `env`, `printenv`, `export -p` and `set` print a variable (`declare -x` in bash):
# its start, the value is the rest. Linear in Python's re (a line's start, once).
_ASSIGNMENT = re.compile(r"([ \t]*(?:export[ \t]+|declare[ \t]+-x[ \t]+)?)([A-Za-z_][A-Za-z0-9_]*)=")
_LINES = re.compile(r"(\n|\x00)")
# What a token is made of (base64, base64url, a JWT's dots, a key's dashes): the run a known
# token's shape starts in is withheld whole, and nothing around it.
_TOKEN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=_.-")


def looks_secret(value: str) -> bool:
    return bool(_SECRET_VALUE.search(value)) or _opaque(value)


def _opaque(value: str) -> bool:
    if len(value) < 24:
        return False
    return (bool(_BASE64.fullmatch(value)) and all(p.search(value) for p in _MIXED)
            and not _identifier(value))


# An identifier is words, a random string is not: an alert's or a metric's name
# (ForgeS3UploadFailureHigh, Neural5xxRatioHighCritical, http_requests_5xx_total) is mostly
# pronounceable words (a capital or none, then 2+ lower-case letters with a vowel, no 5
# consonants or 3 vowels in a row), in few pieces (at least 3 characters a piece on average:
# CamelCase words, `_`/`-` parts, digit runs, acronyms). Measured on 10^6 random strings each
# (base64url of random bytes, the mixed-case ones _opaque would withhold): ~4 in 10 000 of
# 24 characters pass, ~6 in 100 000 of 32, ~1 in 100 000 of 40; a known issuer's token
# (ghp_, AKIA, a JWT) is withheld by _SECRET_VALUE whatever this says.
_IDENTIFIER = re.compile(r"[A-Za-z0-9]+(?:[_-][A-Za-z0-9]+)*")
_PIECES = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|[0-9]+")
_WORDS = re.compile(r"[A-Z]?[a-z]{2,}")
_VOWEL = re.compile(r"[aeiouy]")
_UNSAID = re.compile(r"[^aeiouy]{5}|[aeiouy]{3}")


def _identifier(value: str) -> bool:
    if not _IDENTIFIER.fullmatch(value):  # a `+`, `/`, `=` or doubled separator: base64's
        return False
    letters = len(value) - value.count("_") - value.count("-")
    if len(_PIECES.findall(value)) * 3 > letters:
        return False
    said = sum(len(w) for w in _WORDS.findall(value) if len(w) < 3 or (
        _VOWEL.search(w.lower()) and not _UNSAID.search(w.lower())))
    return said * 10 >= letters * 7


# A switch's value is no secret whatever its name: CERT_S3_READ_PRIMARY=false is what
# deltacrown's playbook reads back from the deployment's env.
_SWITCH = frozenset({"", "true", "false", "yes", "no", "on", "off", "enabled", "disabled"})
# A credential's setting is no credential: a name whose last word says what its value tells
# about one (PASSWORD_MIN_LENGTH=12, AUTH_MODE=oidc, TOKEN_TTL=3600, token_count,
# POSTGRES_HOST_AUTH_METHOD, postgresql.conf's password_encryption, kubectl describe's
# TokenExpirationSeconds and SecretName), when its value is a word or a number as a setting's
# is. Anything else under such a name (a space, `=`, `/`, `:`, a quote inside, 65+ characters,
# an opaque key-like string) is still withheld: a wrong guess shows a word, never a sentence.
_SETTING_WORDS = frozenset({
    "mode", "type", "method", "provider", "scheme", "algorithm", "alg", "policy", "encryption",
    "length", "len", "size", "count", "min", "max", "limit", "rounds", "iterations", "ttl",
    "timeout", "expiry", "expiration", "lifetime", "age", "duration", "interval", "seconds",
    "minutes", "hours", "days", "name", "enabled", "disabled", "required"})
_CAMEL_TAIL = re.compile(r"[a-z0-9]([A-Z][a-z]+)\Z")
_PLAIN = re.compile(r"[\w.+-]{0,64}")


def _setting(name: str, value: str) -> bool:
    if not _names_setting(name):
        return False
    value = value.strip().strip("'\"")
    return bool(_PLAIN.fullmatch(value)) and not _opaque(value)


def _names_setting(name: str) -> bool:
    """Whether a name's last word (after `_`, `.`, `-`, or camel case's) is a setting's."""
    cut = max(name.rfind("_"), name.rfind("."), name.rfind("-"))
    if cut >= 0 and name[cut + 1:].lower() in _SETTING_WORDS:
        return True
    camel = None if name.islower() or name.isupper() else _CAMEL_TAIL.search(name)
    return camel is not None and camel[1].lower() in _SETTING_WORDS


def secret_variable(name: str, value: str) -> bool:
    """Whether an environment variable (or a ConfigMap's key) is withheld whole."""
    if value.strip().lower() in _SWITCH:
        return False
    return _secret_name(name, value) or looks_secret(value)


def _secret_name(name: str, value: str) -> bool:
    return bool(SECRET_NAME.search(name)) and not _setting(name, value)


def credential_key(key: str) -> bool:
    """Whether a JSON key (or a ConfigMap's, an env pair's name) names a credential: in upper
    case as a variable's name (SIGNING_KEY, DB_PASS), else by its words (`password`,
    `api_key`, `tls.key`, `privateKey`; not `keys`, `passed`, `status`)."""
    if not any(c.islower() for c in key):
        return bool(SECRET_NAME.search(key))
    return bool(_CREDENTIAL_KEY.fullmatch(key))


def credential(key: str, value: str) -> bool:
    """Whether the string `value` under `key` (JSON, YAML, a ConfigMap) is withheld: its key
    names a credential and it is not one of its settings (`"token_ttl": "3600"`)."""
    return credential_key(key) and not _setting(key, value)


# An inline match names no credential after all (RE2 has no lookaround: the pattern finds
# the candidates, _shown decides, in time linear in what the pattern matched):
# - a credential's setting, as above;
# - a test runner's verdict, `PASS: <test>`, upper case exactly: Go's `--- PASS: TestFoo (0.00s)`
#   (any test name), automake's `# PASS:  5`, and a bare `PASS: ` (automake's, DejaGnu's, a
#   grep of Go's) before a test's name: Go's (TestXxx, ExampleXxx, BenchmarkXxx, FuzzXxx and
#   its subtests) or a test file's path (`tests/auth.sh`, `gcc.dg/x.c`). PASS is a password's
#   name too (`PASS=…` in a script, an indented YAML `PASS: …`): before anything else
#   (`PASS: hunter2`), or as `PASS=`, `pass:` or `Pass:`, it still is one;
# - a source file's line (`test_auth.py:42:`, `session.go:118:`) and a scope (`auth::login`,
#   pytest's `tests/test_auth.py::test_token`): no credential's name is a file or a path.
# A value kept is one word without `=`: nothing a credential could hide in is left unread.
_SOURCES = r"py|go|js|mjs|cjs|ts|tsx|jsx|rb|java|kt|rs|c|h|cc|cpp|hpp|cs|php|ex|exs|sh|pl|lua"
_SOURCE = re.compile(rf"\.(?:{_SOURCES})\Z")
_GO_TEST = re.compile(r"(?:Test|Example|Benchmark|Fuzz)(?![a-z])[^\s=:]*")
_TEST_FILE = re.compile(rf"[\w.+-]*/[\w./+-]*|[\w+-][\w.+-]*\.(?:{_SOURCES}|test|t|bats|exp)")
_FILE_LINE = re.compile(r"\d+(?::\d+)*:?")
_SCOPE = re.compile(r":[\w.:\[\]/+-]*")
# The key's name: the last word before its separator, or a Kubernetes env pair's `name`.
# Matched at the start of the head reversed: a search for the last word tried each word.
_NAME = re.compile(r"[^\w.-]*([\w.-]+)")
_PAIR_NAME = re.compile(r"[^\w.-]*eulav[^\w.-]+([\w.-]+)")
_UPPER_NAME = re.compile(r"[A-Z0-9_]+")


def _shown(head: str, value: str, match: Any) -> bool:
    """Whether an inline `match` (`head` then `value`) is left as printed."""
    if "=" in value:
        return False
    kind, name = _kind(head) if len(head) <= 64 else _kind.__wrapped__(head)
    if kind == _SCOPE_ONLY:
        return value[:1] == ":" and bool(_SCOPE.fullmatch(value))
    if kind == _A_SETTING:
        return _setting(name, value)
    if kind == _VERDICT:
        start = match.start()
        before = match.string[max(0, start - 4):start]  # the characters before
        if isinstance(before, bytes):
            before = before.decode("latin-1")
        if before.endswith("--- "):
            return ":" not in value
        if before.endswith("# ") and value.isdigit():
            return True
        return bool(_GO_TEST.fullmatch(value)) or (bool(
            _TEST_FILE.fullmatch(value)) and not _opaque(value))
    if kind == _SOURCE_FILE:
        return bool(_FILE_LINE.fullmatch(value) or (value[:1] == ":" and _SCOPE.fullmatch(value)))
    return kind == _PASSED and bool(_PLAIN.fullmatch(value.strip("'\"")))


_MASKED, _SCOPE_ONLY, _A_SETTING, _VERDICT, _SOURCE_FILE, _PASSED = range(6)


@functools.lru_cache(maxsize=1024)  # a text's heads repeat (`password=`, `DB_PASS=`)
def _kind(head: str) -> tuple[int, str]:
    """What the name an inline match's head ends with may be besides a credential's."""
    tail = head[:-257:-1]  # reversed; a name cut at 256 characters is none of these: masked
    found = _NAME.match(tail)
    if found is None or (found.end() == len(tail) and len(tail) < len(head)):
        return _MASKED, ""
    name = found[1][::-1]
    if name == "value":
        found = _PAIR_NAME.match(tail)
        name = found[1][::-1] if found else name
    if _names_setting(name):
        return _A_SETTING, name
    if name == "PASS" and head.rstrip().endswith("PASS:"):
        return _VERDICT, name
    if "." in name and _SOURCE.search(name):
        return _SOURCE_FILE, name
    # TESTS_PASSED=3: an upper-case name's only PASS in PASSED, PASSES, PASSING
    if "PASS" in name and _UPPER_NAME.fullmatch(name) and not SECRET_NAME.search(name):
        return _PASSED, name
    return (_SCOPE_ONLY if head[-1:] == ":" else _MASKED), name


def masked(value: str) -> str:
    """`value` with a URL's user info, credential query values and inline `password=…` masked."""
    value = redact.text(value)
    if not _INLINE.search(value):
        return value
    try:  # as UTF-8 bytes: the RE2 binding's call costs ~3x more per match on a str
        return _INLINE.sub(_mask, value.encode()).decode()
    except UnicodeEncodeError:  # a lone surrogate (a JSON string's \ud800)
        return _INLINE.sub(lambda m: _mask(m, str), value)


def _mask(match: Any, kind: type = bytes) -> Any:
    kept, whole = match.lastindex, match.group(0)  # the alternative's group
    if kept is None:  # an error's name, left as is
        return whole
    head, value = match.group(kept), whole[len(match.group(kept)):]
    if kind is bytes:
        head, value = head.decode(), value.decode()
    if kept != 1 and _shown(head, value, match):
        return whole
    if kept == _JSON_KEY:
        quote = "'" if value[:1] in ("'", "b") else '"'
        shown = f"{head}{quote}{redact.REDACTED}{quote}"
    elif value.strip("'\"").lower() in _SWITCH:  # CERT_S3_READ_PRIMARY=false, as
        shown = head + value                       # secret_variable shows it
    else:
        shown = head + redact.REDACTED
    return shown.encode() if kind is bytes else shown


def output(text: str, *, lone_keys: bool = True, pem: Any = redact.REDACTED) -> str:
    """A command's output (stdout, stderr, a report file) fit to record: see the module doc.
    `lone_keys=False`: a line that is one opaque key-like string stays (a JSON string, which
    its key names: a checksum a check compares). `pem`: what replaces a private key."""
    if "PRIVATE KEY-----" in text:
        text = _PEM.sub(pem, text)
    # Inline credentials and URLs in one pass over the whole text (a pass per line cost
    # RE2's call each); then each line alone, with Python's cheap checks first.
    text = masked(text)
    # Where a known token's shape starts, found in one pass: only its lines are searched
    # again (a search per line cost ~6 us each, 0.2-0.3 s for 64 KiB of short lines).
    starts = iter([m.start() for m in _SECRET_VALUE.finditer(text)] + [len(text) + 1])
    token, at, shown = next(starts), 0, []
    for i, part in enumerate(_LINES.split(text)):
        end = at + len(part)
        if i % 2:
            shown.append(part)
        else:
            shown.append(_line(part, lone_keys, token < end))
            while token < end:
                token = next(starts)
        at = end
    return "".join(shown)


def lines(texts: list[str]) -> list[str]:
    """Log lines (each without its newline) fit to record, one for one, each as `output`
    shows it; a private key over several lines is withheld line by line. One call for them
    all: RE2's call costs ~20 us, a line's filtering ~1 us."""
    if not texts:
        return []
    cut = _headless_key(texts)
    shown = output("\n".join(texts[cut:]), pem=_pem_lines).split("\n")
    if len(shown) != len(texts) - cut:  # a secret remediator knows had a newline in it
        shown = [output(text).replace("\n", " ") for text in texts[cut:]]
    return [redact.REDACTED] * cut + shown


def _headless_key(texts: list[str]) -> int:
    """How many first lines belong to a private key whose BEGIN is not among them: the
    newest log lines kept (loglines.keep) can start inside one. 0 when there is none."""
    for i, text in enumerate(texts):
        if "PRIVATE KEY-----" in text:  # cheap: a substring before the regex
            begins = _PEM_BEGIN.search(text)
            ends = _PEM_END.search(text)
            if ends and not (begins and begins.start() < ends.start()):
                return i + 1
            return 0
    return 0


def _pem_lines(match: Any) -> str:
    return "\n".join(redact.REDACTED for _ in match.group(0).split("\n"))


def _line(line: str, lone_keys: bool, tokens: bool) -> str:
    body, end = (line[:-1], "\r") if line.endswith("\r") else (line, "")
    variable = _ASSIGNMENT.match(body)
    if variable and not any(c.islower() for c in variable[2]):
        value = body[variable.end():].strip("'\"")
        if value.strip().lower() in _SWITCH:
            return line
        if _secret_name(variable[2], value) or _opaque(value) or (
                tokens and _SECRET_VALUE.search(value)):
            return f"{variable[0]}{redact.REDACTED}{end}"
        return line
    if tokens:  # a known token's shape: the token's run of characters (a JWT's signature
        # after its match too), not the quotes and commas around it: JSON stays JSON (sts
        # get-caller-identity's `"UserId": "AKIA…",` read by a check)
        spans: list[tuple[int, int]] = []
        for match in _SECRET_VALUE.finditer(body):
            if not spans or match.start() >= spans[-1][1]:  # not in a run already withheld
                start, stop = match.start(), match.end()
                while start > 0 and body[start - 1] in _TOKEN_CHARS:
                    start -= 1
                while stop < len(body) and body[stop] in _TOKEN_CHARS:
                    stop += 1
                spans.append((start, stop))
        if spans:
            kept, at = [], 0
            for start, stop in spans:
                kept += [body[at:start], redact.REDACTED]
                at = stop
            return "".join(kept) + body[at:] + end
    if lone_keys and _opaque(body.strip()):  # one key-like string alone (`printenv API_SECRET`)
        return redact.REDACTED + end
    return line


def json_value(data: Any) -> Any:
    """Parsed JSON output with the same filter: each string as output, and a string under a
    credential's key (`"password": "…"`, `"api_key": "…"`) withheld. Numbers, booleans and
    every other key stay as printed: they are what a playbook's checks compare."""
    if isinstance(data, str):
        return output(data, lone_keys=False)
    if isinstance(data, list):
        return [json_value(v) for v in data]
    if isinstance(data, dict):
        # a Kubernetes env pair: {"name": "DB_PASSWORD", "value": "…"}
        name = data.get("name")
        return {k: redact.REDACTED if isinstance(v, str) and (credential(str(k), v) or (
                    k == "value" and isinstance(name, str) and credential(name, v)
                    and v.strip().lower() not in _SWITCH))
                else json_value(v) for k, v in data.items()}
    return data
