"""A store's URL: the one check of its shape, and its password kept out of what is shown.

`problem` is what settings loading asks (a config file's `store` at its line, the
environment's and a flag's in one line), so `serve`, `replay`, `history`, `show` and
`lint --config` refuse the same URLs before any driver reads them: asyncpg raised a bare
`ValueError` (a traceback, exit 1) on a port out of range or not a number, an IPv6 bracket
left open, a query it could not split.

A PostgreSQL URL carries its password in the user info (`user:pw@`) or in libpq's
`password` parameter (`?password=pw`): `redact` masks both (and what `remediator.redact`
masks by shape or knows), and `passwords` names them for `remediator.redact.remember`.
Neither raises, whatever the text: they run on URLs `problem` refused too.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, unquote, unquote_plus

from .. import redact as secrets

SCHEMES = ("sqlite", "postgresql", "postgres")
USAGE = "use sqlite:///path.db, sqlite:// (in memory) or postgresql://user@host:port/db"
# libpq's parameters that hold a secret: the login's password, the client key's passphrase.
_SECRET_PARAMETERS = frozenset({"password", "sslpassword"})
_IPV6 = re.compile(r"\[[0-9A-Za-z:.%_-]+\](?::(?P<port>[^:]*))?")
_ENCODE = "(in a user or password, write @ / ? # as %40 %2F %3F %23)"


def _split(url: str) -> tuple[str, str, str, str, str]:
    """(scheme, user info, hosts, path, query and fragment) as asyncpg's urlparse reads them,
    except that the user info ends at the authority's last `@` (a raw `@` in a password is
    masked whole)."""
    scheme, _, rest = url.partition("://")
    end = next((i for i, c in enumerate(rest) if c in "/?#"), len(rest))
    userinfo, _, hosts = rest[:end].rpartition("@")
    if "@" in rest[end:] and ":" in rest[:end]:
        # A password holding a raw `/`, `?` or `#` ends the authority early in a parser's eyes
        # (`u:pa/ss@h`): everything up to the last `@` is taken for the user info, so it is
        # masked whatever part a parser would make of it.
        userinfo, _, tail = rest.rpartition("@")
        end = next((i for i, c in enumerate(tail) if c in "/?#"), len(tail))
        hosts, rest, end = tail[:end], tail, end
    after = rest[end:]
    cut = next((i for i, c in enumerate(after) if c in "?#"), len(after))
    return scheme, userinfo, hosts, after[:cut], after[cut:]


def redact(url: str) -> str:
    """The URL fit for a message, a log or an answer: its user kept (which role failed to log
    in is worth reading), its password masked wherever it is given."""
    if "://" not in url:
        return secrets.text(url)
    scheme, userinfo, hosts, path, query = _split(url)
    user, colon, _ = userinfo.partition(":")
    shown = secrets.text(user) + (f":{secrets.REDACTED}" if colon else "")
    return (f"{scheme}://" + (f"{shown}@" if userinfo else "")
            + secrets.text(hosts + path + _masked_query(query)))


def _masked_query(query: str) -> str:
    if not query.startswith("?"):
        return query
    body, hash_, fragment = query[1:].partition("#")
    pairs = []
    for pair in body.split("&"):
        name, equals, _ = pair.partition("=")
        secret = equals and unquote(name).strip().lower() in _SECRET_PARAMETERS
        pairs.append(f"{name}={secrets.REDACTED}" if secret else pair)
    return "?" + "&".join(pairs) + hash_ + fragment


def passwords(url: str) -> list[str]:
    """The secrets a store URL holds, as written and as the driver decodes them."""
    _, userinfo, _, _, query = _split(url)
    found = [userinfo.partition(":")[2]] if ":" in userinfo else []
    body = query.partition("#")[0][1:] if query.startswith("?") else ""
    for pair in body.split("&"):
        name, _, value = pair.partition("=")
        if unquote(name).strip().lower() in _SECRET_PARAMETERS:
            found.append(value)
    # as written, and as the driver decodes it (a query's `+` is a space there)
    return [form for value in found if value
            for form in dict.fromkeys((value, unquote(value), unquote_plus(value)))]


def problem(url: str) -> str | None:
    """Why `url` cannot name a store, or None. It quotes nothing of the URL: a password may
    sit anywhere in a URL written wrong (`postgresql://user:pw/db` reads `pw` as a port)."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in SCHEMES or (scheme != "sqlite" and not rest):
        return f"not a store URL: {USAGE}"
    if scheme == "sqlite":
        if rest and not rest.startswith("/"):
            return ("a SQLite URL names no host: sqlite:///relative/path.db (three slashes) or "
                    "sqlite:////absolute/path.db (four)")
        return None
    if "#" in rest:
        return f"a PostgreSQL URL has no fragment {_ENCODE}"
    end = next((i for i, c in enumerate(rest) if c in "/?"), len(rest))
    authority, path, query = rest[:end], *rest[end:].partition("?")[::2]
    if authority.count("@") > 1:
        return f"its user info holds a raw @ {_ENCODE}"
    hosts = authority.rpartition("@")[2]
    for host in hosts.split(",") if hosts else []:
        if why := _host_problem(host):
            return why
    if "/" in path[1:]:
        return f"its path is more than a database name (/db) {_ENCODE}"
    try:
        parameters = parse_qsl(query, strict_parsing=True) if query else []
    except ValueError:
        return "its query is not name=value pairs joined by &"
    for name, value in parameters:
        if name == "port" and not all(_port(p) for p in value.split(",")):
            return "its port parameter is not a number from 1 to 65535 (or a list of them)"
    return None


def _host_problem(host: str) -> str | None:
    if not host:
        return "a host in its list of hosts is empty"
    if host.startswith("["):
        match = _IPV6.fullmatch(host)
        if match is None:
            return "an IPv6 host is written in brackets, closed: [::1] or [::1]:5432"
        port = match["port"]
    elif host.count(":") > 1:
        return "an IPv6 host is written in brackets: [::1] or [::1]:5432"
    else:
        port = host.partition(":")[2]
    if port and not (port.isascii() and port.isdigit()):  # empty (`h:`): the default, as libpq
        return f"its port is not a number {_ENCODE}"
    if port and not _port(port):
        return "its port is out of range (1 to 65535)"
    return None


def _port(text: str) -> bool:
    return text.isascii() and text.isdigit() and 1 <= int(text) <= 65535
