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
import hashlib
import hmac
import ipaddress
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

ROLES = ("viewer", "operator")
MIN_TOKEN_CHARS = 16  # a shorter token is guessable over the network
# Password checks queued or running at once (two threads run them): anyone may try a
# password, each ~0.2 s of CPU, and unbounded a flood of guesses queued every login behind it.
MAX_PASSWORD_CHECKS = 8


class PasswordChecksBusy(Exception):
    """Too many password checks in flight: refused before one is queued (a 429)."""


@dataclass(frozen=True)
class Principal:
    """Who is calling, as authenticated: the name recorded as the actor, and its role."""

    name: str
    role: str  # webhook | viewer | operator | anonymous (--allow-unauthenticated)

    def described(self) -> str:
        """Who, in words, for a refusal: "alice is an operator"."""
        return f"{self.name} is {'an' if self.role[:1] in ('a', 'o') else 'a'} {self.role}"

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
    """The users of `operators:`, whose entries the config schema has checked (names, roles,
    one credential each: config_schema.OPERATOR); `read_file(path)` returns a secret file's
    text (None: do not read them, as lint does in CI).

    Raises ValueError naming the entry at fault."""
    users: list[Operator] = []
    for i, entry in enumerate(raw or []):
        name, role = entry["name"], entry["role"]
        if "password_hash" in entry:
            users.append(Operator(name, role, password_hash=entry["password_hash"]))
        elif read_file is None:
            users.append(Operator(name, role))
        else:
            try:
                token = read_file(str(entry["token_file"])).strip()
            except ValueError as exc:
                raise ValueError(f"operators[{i}] ({name}): {exc}") from None
            check_token(token, f"operators[{i}] ({name}): the token in token_file")
            users.append(Operator(name, role, token=token))
    names = [u.name for u in users]
    if dup := sorted({n for n in names if names.count(n) > 1}):
        raise ValueError(f"operators: duplicate name(s) {', '.join(dup)}")
    tokens = [u.token for u in users if u.token]
    if len(set(tokens)) != len(tokens):
        raise ValueError("operators: two users share a token; each needs its own")
    return users


def check_token(token: str, what: str) -> None:
    """Raises ValueError, naming `what` and never the token, if it is too short to resist
    guessing over the network: the webhook's can start remediations, a user's approve them."""
    if len(token) < MIN_TOKEN_CHARS:
        raise ValueError(f"{what} is shorter than {MIN_TOKEN_CHARS} characters "
                         "(`openssl rand -hex 24` makes one)")


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
        # What an unknown name is checked against: the costliest hash, so no user's check
        # takes longer than a name no user has.
        self._stand_in = max((h for h, _ in self._hashes.values()), key=_bcrypt_cost, default="")
        self._webhook_basic = (webhook_username, webhook_password) if webhook_username else None
        self._verified: dict[bytes, Principal] = {}  # bcrypt is slow on purpose: cache successes
        self._bcrypt = ThreadPoolExecutor(max_workers=2, thread_name_prefix="bcrypt")
        self._checking = 0  # bcrypt checks queued or running

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
            except ValueError:  # not base64 (a character outside ASCII too), not UTF-8
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
            # Checked all the same against a configured hash, its answer ignored: refused at
            # once, an unknown name was answered ~0.2 s sooner than a known one, which told
            # anyone which names to guess passwords for. Not the webhook's own user: a
            # misconfigured Alertmanager retrying its notifications would take every
            # check's place, and lock people out.
            if self._stand_in and (self._webhook_basic is None or name != self._webhook_basic[0]):
                await self._checked(password, self._stand_in)
            return None
        hashed, principal = self._hashes[name]
        key = hashlib.sha256(f"{name}\0{password}\0{hashed}".encode("utf-8", "surrogatepass")).digest()
        if key in self._verified:
            return principal
        if not await self._checked(password, hashed):
            return None
        if len(self._verified) >= 1024:
            self._verified.clear()
        self._verified[key] = principal
        return principal

    async def login(self, name: str, secret: str) -> Principal | None:
        """The console's login form: a viewer or operator by name, with their password or
        their token; never the webhook's credential."""
        # A token first: a user who has one signs in without a password check's ~0.2 s.
        principal = self.check_token(secret)
        if principal is None or principal.name != name:
            principal = await self.check_password(name, secret)
        if principal is None or principal.name != name or principal.role not in ROLES:
            return None
        return principal

    async def _checked(self, password: str, hashed: str) -> bool:
        """One bcrypt check, in its pool; at most MAX_PASSWORD_CHECKS queued or running."""
        if self._checking >= MAX_PASSWORD_CHECKS:
            raise PasswordChecksBusy(f"{self._checking} password checks are in progress; "
                                     "retry in a second")
        self._checking += 1
        try:
            loop = asyncio.get_running_loop()  # ~0.2 s of CPU: never on the event loop
            return await loop.run_in_executor(self._bcrypt, _bcrypt_ok, password, hashed)
        finally:
            self._checking -= 1

    def lookup(self, name: str) -> Principal | None:
        """The configured user `name` as the config says now (a session outlives neither
        its user's removal nor a change of role)."""
        if name in self._hashes:
            return self._hashes[name][1]
        return next((p for _, p in self._tokens if p.name == name and p.role in ROLES), None)

    def credential(self, name: str) -> bytes:
        """A digest of what user `name` signs in with now (their token's digest, their
        password's hash): a console session signs a keyed hash of it, so rotating either ends
        the sessions the old one began. Never the credential itself."""
        parts = [digest for digest, p in self._tokens if p.name == name and p.role in ROLES]
        if name in self._hashes:
            parts.append(self._hashes[name][0].encode())
        return hashlib.sha256(b"\0".join(parts)).digest()

    def close(self) -> None:
        self._bcrypt.shutdown(wait=False)


def _bcrypt_cost(hashed: str) -> int:
    """A bcrypt hash's cost (`$2b$12$…`: 12); 0 if it does not say."""
    parts = hashed.split("$")
    return int(parts[2]) if len(parts) > 3 and parts[2].isdigit() else 0


def _bcrypt_ok(password: str, hashed: str) -> bool:
    import bcrypt

    try:
        return bcrypt.checkpw(password.encode("utf-8", "surrogatepass"), hashed.encode())
    except ValueError:  # bcrypt refuses passwords over 72 bytes in recent releases
        return False


# Why a request without credentials that names this server by a DNS name is refused.
NOT_BY_ADDRESS = ("a request without credentials must name this server by its IP address or "
                  "localhost (a DNS name may be pointed here by any web page: DNS rebinding); "
                  "present a credential")


def named_by_address(host: str) -> bool:
    """`host` (a Host header) is an IP address, `localhost` or a name under it (RFC 6761:
    the client resolves those to loopback itself), which --allow-unauthenticated needs.
    DNS rebinding: a page of evil.example, its name pointed at 127.0.0.1 once loaded, is the
    same site as this server to the browser, which then lets it read every answer and post
    forms, no header saying so (Sec-Fetch-* go to secure origins only). It needs a name its
    owner's DNS answers for; an address or localhost is none."""
    try:
        name = (urlsplit(f"//{host}").hostname or "").rstrip(".")
        if name == "localhost" or name.endswith(".localhost"):
            return True
        ipaddress.ip_address(name)
    except ValueError:  # not an address, or a Host header that is no host (`[::1`)
        return False
    return True
