"""Console sessions: a signed cookie naming a configured user, checked against the one user
store on every request, and the CSRF token bound to it.

The cookie holds `name|issued|expires|nonce|signature` (HMAC-SHA256 under the console's
secret): no server-side table, so any replica sharing `console.session_secret_file` accepts
it. The role is never taken from the cookie: `Users.lookup` says what the user is now, so
removing a user or demoting them takes effect on their next click.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time

from ..auth import Principal, Users

COOKIE = "remediator_session"


class Sessions:
    def __init__(self, users: Users, secret: str = "", ttl: float = 12 * 3600.0,
                 secure: bool = False):
        # Without a configured secret each process signs with its own: sessions then end at
        # a restart, and several replicas need sticky routing or the shared secret.
        self._key = hashlib.sha256((secret or secrets.token_hex(32)).encode()).digest()
        self.users, self.ttl, self.secure = users, ttl, secure
        self._revoked: dict[str, float] = {}  # nonce -> expiry: logged out before expiring

    def _sign(self, payload: str) -> str:
        mac = hmac.new(self._key, payload.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).decode().rstrip("=")

    def issue(self, principal: Principal, now: float | None = None) -> str:
        now = time.time() if now is None else now
        payload = f"{principal.name}|{int(now)}|{int(now + self.ttl)}|{secrets.token_urlsafe(16)}"
        return f"{payload}|{self._sign(payload)}"

    def principal(self, cookie: str, now: float | None = None) -> Principal | None:
        """Who a cookie proves now, or None (forged, expired, logged out, user gone)."""
        payload, _, mac = cookie.rpartition("|")
        if not payload or not hmac.compare_digest(mac, self._sign(payload)):
            return None
        name, _issued, expires, nonce = [*payload.split("|"), "", "", ""][:4]
        now = time.time() if now is None else now
        if not expires.isdigit() or int(expires) < now or nonce in self._revoked:
            return None
        return self.users.lookup(name)

    def csrf(self, cookie: str) -> str:
        """The form token of this session: forms carry it, a cross-site page cannot read it."""
        return self._sign("csrf|" + cookie)

    def check_csrf(self, cookie: str, token: str) -> bool:
        return bool(cookie) and hmac.compare_digest(token, self.csrf(cookie))

    def revoke(self, cookie: str) -> None:
        parts = cookie.split("|")
        if len(parts) == 5 and parts[2].isdigit():
            now = time.time()
            self._revoked = {n: t for n, t in self._revoked.items() if t > now}
            self._revoked[parts[3]] = float(parts[2])
