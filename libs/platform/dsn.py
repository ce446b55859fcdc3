"""PostgreSQL connection URLs taken apart and put back together without losing anything.

A ``DATABASE_URL`` carries more than a host and a database: ``sslmode``, ``sslrootcert``,
``options``, ``application_name``, ``target_session_attrs``, several hosts, IPv6 literals, and a
password that may contain any character (percent-encoded). Cutting such a URL at its last ``/``
drops all of that; these helpers change only the part they are asked to change and leave the host
list and the query string exactly as given.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, unquote, urlsplit, urlunsplit

SCHEMES = ("postgresql", "postgres")


@dataclass(frozen=True)
class _Parts:
    scheme: str
    userinfo: str | None
    hosts: str
    path: str
    query: str
    fragment: str


def _split(url: str) -> _Parts:
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise ValueError(f"not a PostgreSQL URL (scheme {parts.scheme!r}, expected postgresql://)")
    # The host list may hold several hosts and IPv6 literals ("[::1]:5432,db2:5433"); it is kept
    # verbatim. Userinfo ends at the last "@": host lists never contain one.
    userinfo, at, hosts = parts.netloc.rpartition("@")
    return _Parts(parts.scheme, userinfo if at else None, hosts, parts.path, parts.query, parts.fragment)


def _join(p: _Parts) -> str:
    netloc = f"{p.userinfo}@{p.hosts}" if p.userinfo is not None else p.hosts
    return urlunsplit((p.scheme, netloc, p.path, p.query, p.fragment))


def database_name(url: str) -> str | None:
    """The database the URL names (``?dbname=`` wins over the path, as in libpq), or None."""
    p = _split(url)
    for key, value in parse_qsl(p.query):
        if key in ("dbname", "database") and value:
            return value
    name = unquote(p.path.removeprefix("/"))
    return name or None


def with_database(url: str, name: str) -> str:
    """The same URL pointing at another database on the same server(s), every parameter kept."""
    p = _split(url)
    query = "&".join(
        part for part in p.query.split("&") if part and part.split("=", 1)[0] not in ("dbname", "database")
    )
    return _join(_Parts(p.scheme, p.userinfo, p.hosts, "/" + quote(name, safe=""), query, p.fragment))


def with_host(url: str, host: str, port: int | None = None) -> str:
    """The same URL on another server (one host; IPv6 literals bracketed), every other part kept."""
    p = _split(url)
    hosts = f"[{host}]" if ":" in host else host
    if port is not None:
        hosts += f":{port}"
    return _join(_Parts(p.scheme, p.userinfo, hosts, p.path, p.query, p.fragment))


def user_name(url: str) -> str | None:
    p = _split(url)
    for key, value in parse_qsl(p.query):
        if key == "user" and value:
            return value
    if not p.userinfo:
        return None
    return unquote(p.userinfo.partition(":")[0]) or None


def password(url: str) -> str | None:
    p = _split(url)
    for key, value in parse_qsl(p.query):
        if key == "password" and value:
            return value
    if not p.userinfo or ":" not in p.userinfo:
        return None
    return unquote(p.userinfo.partition(":")[2]) or None


def with_login(url: str, user: str, secret: str | None = None) -> str:
    """The same URL logging in as ``user`` (with ``secret``, percent-encoded, or none: then the
    password comes from a pgpass file or the server does not ask for one)."""
    p = _split(url)
    query = "&".join(
        part for part in p.query.split("&") if part and part.split("=", 1)[0] not in ("user", "password")
    )
    userinfo = quote(user, safe="")
    if secret is not None:
        userinfo += ":" + quote(secret, safe="")
    return _join(_Parts(p.scheme, userinfo, p.hosts, p.path, query, p.fragment))


def parameters(url: str) -> dict[str, str]:
    """The URL's query parameters (the last one wins, as in libpq and asyncpg)."""
    return dict(parse_qsl(_split(url).query))


def redacted(url: str) -> str:
    """The URL with any password replaced by ``***``: safe for a log line or an error message."""
    try:
        p = _split(url)
    except ValueError:
        return "<not a PostgreSQL URL>"
    userinfo = p.userinfo
    if userinfo is not None and ":" in userinfo:
        userinfo = userinfo.partition(":")[0] + ":***"
    query = "&".join(
        "password=***" if part.split("=", 1)[0] == "password" else part for part in p.query.split("&") if part
    )
    return _join(_Parts(p.scheme, userinfo, p.hosts, p.path, query, p.fragment))


def address(url: str) -> str:
    """Where the URL points, for an error message: its host list and database, never the login
    (``db-1:5432,db-2:5432 (database baton)``; ``?host=`` wins over the host list, as in libpq)."""
    p = _split(url)
    query = parameters(url)
    hosts = query.get("host") or p.hosts or "the local socket"
    if "port" in query and ":" not in hosts:
        hosts += f":{query['port']}"
    name = database_name(url)
    return f"{hosts} (database {name})" if name else hosts
