"""Console sessions: a signed cookie naming a configured user, checked against the one user
store on every request, and the CSRF token bound to it.

The cookie holds `name|issued|expires|nonce|credential|signature` (HMAC-SHA256 under the
console's secret): no server-side table, so any replica sharing `console.session_secret_file`
accepts it. The role is never taken from the cookie: `Users.lookup` says what the user is now,
so removing a user or demoting them takes effect on their next click. `credential` is a keyed
hash of what the user signs in with (`Users.credential`): once their token or password is
rotated (and serve restarted), the sessions the old one opened are refused. A logout is kept in the
store until the cookie would have expired, so every replica refuses the cookie after it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from typing import Any

from ..auth import Principal, Users

COOKIE = "remediator_session"
LOGGED_OUT = "console-logout:"  # + the session's nonce -> {"until": its expiry}


class Sessions:
    def __init__(self, users: Users, store: Any, secret: str = "", ttl: float = 12 * 3600.0,
                 secure: bool = False, clock: Callable[[], float] = time.time):
        # Without a configured secret each process signs with its own: sessions then end at
        # a restart, and several replicas need sticky routing or the shared secret.
        self._key = hashlib.sha256((secret or secrets.token_hex(32)).encode()).digest()
        self.users, self.store, self.ttl, self.secure = users, store, ttl, secure
        # The store's clock (Service.clock): a logout is kept until the cookie's expiry, and a
        # replica whose own clock ran ahead dropped it while the others still took the cookie.
        self.clock = clock

    def _sign(self, payload: str) -> str:
        # A cookie's text is the browser's (any header byte reaches us, undecodable ones as
        # surrogates): encoded whatever it holds, where a refusal was a 500.
        mac = hmac.new(self._key, payload.encode("utf-8", "surrogatepass"), hashlib.sha256)
        return base64.urlsafe_b64encode(mac.digest()).decode().rstrip("=")

    def _signed(self, payload: str, mac: str) -> bool:
        """Whether `mac` signs `payload`: compared as bytes (compare_digest refuses a str
        with a character outside ASCII, as a forged cookie or form may hold)."""
        return hmac.compare_digest(mac.encode("utf-8", "surrogatepass"),
                                   self._sign(payload).encode())

    def issue(self, principal: Principal, now: float | None = None) -> str:
        now = self.clock() if now is None else now
        payload = (f"{principal.name}|{int(now)}|{int(now + self.ttl)}|"
                   f"{secrets.token_urlsafe(16)}|{self._credential(principal.name)}")
        return f"{payload}|{self._sign(payload)}"

    def _credential(self, name: str) -> str:
        """The cookie's keyed hash of `name`'s credential now (in a signed cookie: compared
        plainly)."""
        return self._sign(f"credential|{name}|{self.users.credential(name).hex()}")[:22]

    async def principal(self, cookie: str, now: float | None = None) -> Principal | None:
        """Who a cookie proves now, or None (forged, expired, logged out, user gone, their
        token or password changed since)."""
        payload, _, mac = cookie.rpartition("|")
        if not payload or not self._signed(payload, mac):
            return None
        name, _issued, expires, nonce, credential = [*payload.split("|"), "", "", "", ""][:5]
        now = self.clock() if now is None else now
        if not expires.isdigit() or int(expires) < now \
                or credential != self._credential(name) \
                or await self.store.get_state(LOGGED_OUT + nonce) is not None:
            return None
        return self.users.lookup(name)

    def csrf(self, cookie: str) -> str:
        """The form token of this session: forms carry it, a cross-site page cannot read it."""
        return self._sign("csrf|" + cookie)

    def check_csrf(self, cookie: str, token: str) -> bool:
        return bool(cookie) and self._signed("csrf|" + cookie, token)

    @property
    def anonymous_cookie(self) -> str:
        """The name of the cookie an unauthenticated console binds its forms to: this
        instance's (its secret's) own. Cookies ignore ports: another instance on the same host
        (a laptop runs several) shares the browser's cookies, and under one name each would
        overwrite the other's, or lend its own to ours."""
        return "remediator_forms_" + self._sign("anonymous-forms-cookie")[:10]

    def issue_anonymous(self) -> str:
        """A value for `anonymous_cookie`: random, signed, so one planted by another site of
        this host (any port is same-site) is not taken."""
        nonce = secrets.token_urlsafe(16)
        return f"{nonce}|{self._sign('anonymous|' + nonce)}"

    def anonymous_valid(self, value: str) -> bool:
        nonce, _, mac = value.rpartition("|")
        return bool(nonce) and self._signed("anonymous|" + nonce, mac)

    async def revoke(self, cookie: str) -> None:
        """Log a (signed) session out, on every replica; the logouts of cookies that have
        expired meanwhile are dropped."""
        parts = cookie.split("|")
        if len(parts) == 6 and parts[2].isdigit():
            now = self.clock()
            for key, value in (await self.store.list_state(LOGGED_OUT)).items():
                if value.get("until", 0) < now:
                    await self.store.put_state(key, None)
            await self.store.put_state(LOGGED_OUT + parts[3], {"until": float(parts[2])})
