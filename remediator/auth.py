"""Who is calling: the webhook sender, viewers and operators; one user store for every way in.

Three kinds of caller, never interchangeable:

- `webhook`: Alertmanager (the webhook bearer token or basic auth); may only POST /alerts.
- `viewer`: a configured operator entry with `role: viewer`; reads /api/v1.
- `operator`: reads, and approves, rejects, pauses, resumes, resets circuits, reloads.

A configured user authenticates with a bearer token (`token_file`) or basic auth against a
bcrypt `password_hash`. Whatever the scheme, the result is a `Principal`, and the name it
carries is what gets recorded as the actor, never anything the caller asserts in a header. A
browser session can reuse the same store: `Users.check_password` for a login form, and the
`Principal` it returns kept server-side behind a session cookie.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

ROLES = ("viewer", "operator")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")  # no ':' (basic auth), no spaces
_BCRYPT = re.compile(r"\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}")
MIN_TOKEN_CHARS = 16  # a shorter token is guessable over the network


@dataclass(frozen=True)
class Principal:
    name: str
    role: str  # webhook | viewer | operator | anonymous (--allow-unauthenticated)

    def may(self, need: str) -> bool:
        """`need` is webhook, viewer or operator; an operator may also view."""
        if self.role == "anonymous":
            return True
        if need == "viewer":
            return self.role in ROLES
        return self.role == need


ANONYMOUS = Principal("anonymous", "anonymous")


@dataclass(frozen=True)
class Operator:
    """One configured user (config `operators:`), with its secret already read."""

    name: str
    role: str
    token: str = ""
    password_hash: str = ""


def parse_operators(raw: Any, read_file: Callable[[str], str] | None) -> list[Operator]:
    """Validate `operators:` from the config file; `read_file(path)` returns a secret file's
    text (None: check the entries without reading their files, as lint does in CI).

    Raises ValueError naming the entry at fault."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ValueError("operators: must be a list of {name, role, token_file | password_hash}")
    users: list[Operator] = []
    for i, entry in enumerate(raw):
        where = f"operators[{i}]"
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: must be a mapping")
        unknown = set(entry) - {"name", "role", "token_file", "password_hash"}
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        name, role = str(entry.get("name", "")), entry.get("role")
        if not _NAME.fullmatch(name):
            raise ValueError(f"{where}: name {name!r} must be 1-64 of A-Z a-z 0-9 . _ @ -")
        if role not in ROLES:
            raise ValueError(f"{where} ({name}): role must be viewer or operator, got {role!r}")
        if ("token_file" in entry) == ("password_hash" in entry):
            raise ValueError(f"{where} ({name}): give exactly one of token_file, password_hash")
        if "token_file" in entry:
            if read_file is None:
                users.append(Operator(name, role))
                continue
            token = read_file(str(entry["token_file"])).strip()
            if len(token) < MIN_TOKEN_CHARS:
                raise ValueError(f"{where} ({name}): the token in token_file is shorter than "
                                 f"{MIN_TOKEN_CHARS} characters")
            users.append(Operator(name, role, token=token))
        else:
            hashed = str(entry["password_hash"])
            if not _BCRYPT.fullmatch(hashed):
                raise ValueError(f"{where} ({name}): password_hash must be a bcrypt hash "
                                 "($2b$…, e.g. from `htpasswd -nbBC 12 '' PASSWORD`)")
            users.append(Operator(name, role, password_hash=hashed))
    names = [u.name for u in users]
    if dup := sorted({n for n in names if names.count(n) > 1}):
        raise ValueError(f"operators: duplicate name(s) {', '.join(dup)}")
    tokens = [u.token for u in users if u.token]
    if len(set(tokens)) != len(tokens):
        raise ValueError("operators: two users share a token; each needs its own")
    return users


def check_distinct(operators: list[Operator], webhook_token: str, webhook_username: str) -> None:
    """A secret or a name proves one identity only: never both the webhook and a user."""
    if webhook_username and any(u.name == webhook_username for u in operators):
        raise ValueError(f"operators: {webhook_username!r} is also the webhook's basic auth "
                         "username; use another name")
    if webhook_token and any(u.token == webhook_token for u in operators):
        raise ValueError("operators: a user's token is the webhook token; each needs its own")


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()


class Users:
    """Authenticates an `Authorization` header to a Principal, in constant time per secret."""

    def __init__(self, operators: list[Operator], webhook_token: str = "",
                 webhook_username: str = "", webhook_password: str = "",
                 allow_unauthenticated: bool = False):
        self.allow_unauthenticated = allow_unauthenticated
        # Tokens are compared as SHA-256 digests: equal lengths, so compare_digest is constant
        # time, and every configured token is compared, whichever matches.
        self._tokens = [(_digest(u.token), Principal(u.name, u.role)) for u in operators if u.token]
        if webhook_token:
            self._tokens.append((_digest(webhook_token), Principal("alertmanager", "webhook")))
        self._hashes = {u.name: (u.password_hash, Principal(u.name, u.role))
                        for u in operators if u.password_hash}
        self._webhook_basic = (webhook_username, webhook_password) if webhook_username else None
        self._verified: dict[bytes, Principal] = {}  # bcrypt is slow on purpose: cache successes
        self._bcrypt = ThreadPoolExecutor(max_workers=2, thread_name_prefix="bcrypt")

    @property
    def has_viewers(self) -> bool:
        return bool(self._hashes) or any(p.role != "webhook" for _, p in self._tokens)

    async def authenticate(self, header: str) -> Principal | None:
        """The caller an `Authorization` header proves, or None; without one, anonymous only
        when serving with --allow-unauthenticated."""
        scheme, _, value = header.strip().partition(" ")
        if not header.strip():
            return ANONYMOUS if self.allow_unauthenticated else None
        if scheme.lower() == "bearer":
            return self.check_token(value.strip())
        if scheme.lower() == "basic":
            try:
                user, sep, password = base64.b64decode(value.strip(), validate=True) \
                    .decode("utf-8").partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return None
            return await self.check_password(user, password) if sep else None
        return None

    def check_token(self, token: str) -> Principal | None:
        presented, found = _digest(token), None
        for digest, principal in self._tokens:
            if hmac.compare_digest(presented, digest):
                found = principal
        return found

    async def check_password(self, name: str, password: str) -> Principal | None:
        """Basic auth (or a future login form): the webhook's user, or an operator's bcrypt hash."""
        if self._webhook_basic is not None:
            user, secret = self._webhook_basic
            if hmac.compare_digest(_digest(name), _digest(user)) & \
                    hmac.compare_digest(_digest(password), _digest(secret)):
                return Principal("alertmanager", "webhook")
        if name not in self._hashes:
            return None
        hashed, principal = self._hashes[name]
        key = hashlib.sha256(f"{name}\0{password}\0{hashed}".encode("utf-8", "surrogatepass")).digest()
        if key in self._verified:
            return principal
        loop = asyncio.get_running_loop()  # ~0.2 s of CPU: never on the event loop
        if not await loop.run_in_executor(self._bcrypt, _bcrypt_ok, password, hashed):
            return None
        if len(self._verified) >= 1024:
            self._verified.clear()
        self._verified[key] = principal
        return principal

    def close(self) -> None:
        self._bcrypt.shutdown(wait=False)


def _bcrypt_ok(password: str, hashed: str) -> bool:
    import bcrypt

    try:
        return bcrypt.checkpw(password.encode("utf-8", "surrogatepass"), hashed.encode())
    except ValueError:  # bcrypt refuses passwords over 72 bytes in recent releases
        return False
