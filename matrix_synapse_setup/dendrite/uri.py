"""Dendrite's connection string: a ``postgresql://`` URI, the only form its driver (Go's
lib/pq, through database/sql) takes in Dendrite's configuration.

Built here, read back here, and masked here: every part that is not a plain name is
percent-encoded, so a password with ``@ / % : ? #`` or a space survives both libpq's
parser (our verification) and Go's net/url (Dendrite's).  Pure: the standard library
only.
"""

from __future__ import annotations

import re
from typing import NamedTuple
from urllib.parse import parse_qsl, quote, unquote, urlsplit

SCHEMES = ("postgresql", "postgres")
# lib/pq's TLS modes: it refuses libpq's allow and prefer ("unsupported sslmode").
SSLMODES = ("disable", "require", "verify-ca", "verify-full")
DEFAULT_PORT = 5432
MASK = "****"
# A password in any postgres URI: between "user:" and the last "@" of the authority.
_PASSWORD_RE = re.compile(r"(postgres(?:ql)?://[^:/?#@\s]*:)([^\s]*)(@[^@/?#\s]*(?:[/?#\s]|$))")


class Target(NamedTuple):
    """What a connection string points at, and how it logs in."""

    user: str
    dbname: str
    host: str  # a socket directory (absolute path) or a host name or address
    port: int
    password: str | None  # None: peer authentication over the socket
    sslmode: str
    sslrootcert: str | None = None

    @property
    def socket(self) -> bool:
        return self.host.startswith("/")


def build(target: Target) -> str:
    """The URI for *target*: over a socket as
    ``postgresql://USER@/DB?host=/run/postgresql&sslmode=disable`` (``&port=N`` when not
    5432), over TCP as ``postgresql://USER:PASSWORD@HOST:PORT/DB?sslmode=M``."""
    user = quote(target.user, safe="")
    dbname = quote(target.dbname, safe="")
    if target.socket:
        query = [("host", target.host)]
        if target.port != DEFAULT_PORT:
            query.append(("port", str(target.port)))
        authority = user + (":" + quote(target.password, safe="") if target.password else "")
        return f"postgresql://{authority}@/{dbname}?" + _query(query, target)
    host = f"[{target.host}]" if ":" in target.host else target.host
    authority = user + (":" + quote(target.password, safe="") if target.password else "")
    return f"postgresql://{authority}@{host}:{target.port}/{dbname}?" + _query([], target)


def _query(query: list[tuple[str, str]], target: Target) -> str:
    query.append(("sslmode", target.sslmode))
    if target.sslrootcert:
        query.append(("sslrootcert", target.sslrootcert))
    return "&".join(f"{key}={quote(value, safe='/')}" for key, value in query)


def is_postgres(text: str) -> bool:
    return text.split("://", 1)[0].lower() in SCHEMES and "://" in text


def parse(text: str) -> Target | None:
    """*text* read back as a Target (None when it is no postgres URI, or cannot be
    read as one).  Defaults as lib/pq takes them: port 5432, sslmode require."""
    if not is_postgres(text):
        return None
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return None
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    host = query.get("host") or unquote(parts.hostname or "")
    try:
        port = int(query.get("port") or port or DEFAULT_PORT)
    except ValueError:
        return None
    return Target(
        user=unquote(parts.username or "") or query.get("user", ""),
        dbname=unquote(parts.path.lstrip("/")) or query.get("dbname", ""),
        host=host,
        port=port,
        password=unquote(parts.password) if parts.password is not None else None,
        sslmode=query.get("sslmode", "require"),
        sslrootcert=query.get("sslrootcert"),
    )


def mask(text: str) -> str:
    """*text* with the password of every postgres URI in it replaced by ``****``."""
    return _PASSWORD_RE.sub(lambda m: m.group(1) + MASK + m.group(3), text)
