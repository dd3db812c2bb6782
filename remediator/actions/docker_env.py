"""A container's environment fit for the audit store and an escalation note (mailed to teams):
the runbooks' `env | grep -v TOKEN | grep -v PEPPER`, made much stricter.

A variable is withheld whole (its name listed, its value never shown) when its name says it
holds a secret, or its value looks like one whatever the name (a private key, a token of a
known issuer, an opaque key-like string). Every other value is shown with the credentials
inside it masked: a URL's `user:pass@` (whatever the variable's name: BROKER_URL, AMQP_ADDR),
a credential query parameter, and `password=…` / `--token …` inside an option string
(JAVA_OPTS, NODE_OPTIONS). Withholding too much costs some evidence; too little, a password in
everyone's mailbox.
"""

from __future__ import annotations

import re
from typing import Any

from .. import redact
from ..untrusted_regex import compile_regex

# Name parts that mean a secret. PASS anywhere (DB_PASS, SMTP_PASS, PASSWD), PWD (DB_PWD),
# KEY (API_KEY, PRIVATE_KEY, KEYFILE), CERT, SALT, SESSION, COOKIE, SIGNING, and connection
# strings that carry credentials in forms no pattern below knows (DSN, *_URI, DATABASE_URL).
SECRET_NAME = re.compile(
    r"(?i)TOKEN|PEPPER|SECRET|PASS|PWD|PRIVATE|KEY|CERT|SALT|SESSION|COOKIE|SIGNING|CRED|AUTH"
    r"|JWT|BEARER|HMAC|NONCE|DSN|DATABASE_URL|REDIS_URL|_URI$")

# Values that are a secret whatever the variable is called. RE2: a value is the container's,
# any length, and these run over each one.
_SECRET_VALUE = compile_regex(
    r"PRIVATE KEY-----"                                  # PEM private keys
    r"|eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\."        # JWTs
    r"|\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"                    # AWS access key ids
    r"|\bgh[pousr]_[A-Za-z0-9]{30,}|\bgithub_pat_\w{30,}|\bglpat-[\w-]{20,}"
    r"|\bxox[abprs]-[A-Za-z0-9-]{10,}|\b[rs]k_(?:live|test)_[A-Za-z0-9]{16,}"
    r"|\bAIza[0-9A-Za-z_-]{30,}|\bSG\.[\w-]{16,}\.[\w-]{16,}|\bnpm_[A-Za-z0-9]{30,}")
# A whole value that is one opaque key-like string: 32+ hex digits, or 24+ base64 characters
# mixing upper case, lower case and digits (an API key, a session secret). A hostname, a path
# or a version has dots, slashes or a single case.
_HEX = compile_regex(r"[0-9a-fA-F]{32,}", anchored=True)
_BASE64 = compile_regex(r"[A-Za-z0-9+/_-]{24,}={0,2}", anchored=True)
_MIXED = (re.compile(r"[A-Z]"), re.compile(r"[a-z]"), re.compile(r"[0-9]"))
# `password=…`, `db.password: …`, `--token …` inside a longer value: the value part is
# masked, quoted (`password="s3cret pw"`, `--password 'x'`) or not.
_INLINE = compile_regex(
    r"(?i)((?:pass|pwd|secret|token|api[._-]?key|credential)[\w.-]*(?:\s*[=:]\s*|\s+))"
    r"(?:\"[^\"]*\"?|'[^']*'?|[^\s&;,\"']+)")


def environment(info: dict[str, Any]) -> dict[str, Any]:
    """`environment` (name: value, secrets masked) and `environment_withheld` (sorted names)."""
    env, withheld = {}, []
    for item in (info.get("Config") or {}).get("Env") or []:
        name, _, value = item.partition("=")
        if SECRET_NAME.search(name) or looks_secret(value):
            withheld.append(name)
        else:
            env[name] = masked(value)
    return {"environment": env, "environment_withheld": sorted(withheld)}


def looks_secret(value: str) -> bool:
    if _SECRET_VALUE.search(value):
        return True
    if _HEX.fullmatch(value):
        return True
    return bool(_BASE64.fullmatch(value)) and all(p.search(value) for p in _MIXED)


def masked(value: str) -> str:
    """`value` with a URL's user info, credential query values and inline `password=…` masked."""
    value = redact.text(value)
    if _INLINE.search(value):
        value = _INLINE.sub(rf"\1{redact.REDACTED}", value)
    return value
