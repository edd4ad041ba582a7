"""The answers that describe the database, and their validation.

The same rules serve the debconf conversation (an invalid answer is asked
again), the admin command and the maintainer scripts (an invalid answer is a
:class:`SetupError` that changes nothing).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re

from . import messages
from .errors import SetupError

LOCAL_HOSTS = frozenset({"localhost"})
SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
DEFAULTS = {
    "host": "localhost",
    "port": "5432",
    "dbname": "synapse",
    "user": "synapse",
    "sslmode": "prefer",
}

# PostgreSQL identifiers we are willing to create: lower case, no quoting
# needed, within NAMEDATALEN (63 bytes).  Upper case or exotic names would
# work through psycopg.sql.Identifier, but they surprise admins in psql.
_NAME_RE = re.compile(r"[a-z_][a-z0-9_]{0,62}\Z")
_RESERVED_NAMES = frozenset({"postgres", "template0", "template1", "public", "pg_signal_backend"})
_HOSTNAME_RE = re.compile(
    r"(?=.{1,253}\Z)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)"
    r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?\Z"
)
MAX_PASSWORD_LENGTH = 1024


def validate_name(kind: str, value: str) -> str:
    """Return *value* if it is a safe database or role name, else raise."""
    if not _NAME_RE.match(value) or value.startswith("pg_") or value in _RESERVED_NAMES:
        raise SetupError(messages.BAD_NAME.format(kind=kind, value=value))
    return value


def validate_host(value: str) -> str:
    value = value.strip()
    if value.startswith("/"):
        raise SetupError(messages.BAD_HOST_SOCKET.format(value=value))
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    if not _HOSTNAME_RE.match(value):
        raise SetupError(messages.BAD_HOST.format(value=value))
    return value


def validate_port(value: str | int) -> int:
    text = str(value).strip()
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise SetupError(messages.BAD_PORT.format(value=value))
    return int(text)


def validate_password(value: str) -> str:
    """Any printable text is a valid password; control characters are not."""
    if len(value) > MAX_PASSWORD_LENGTH:
        raise SetupError(messages.BAD_PASSWORD_LENGTH.format(limit=MAX_PASSWORD_LENGTH))
    if not value.isprintable():
        raise SetupError(messages.BAD_PASSWORD_CHARS)
    return value


def validate_sslmode(value: str) -> str:
    if value not in SSLMODES:
        raise SetupError(messages.BAD_SSLMODE.format(value=value, modes=", ".join(SSLMODES)))
    return value


@dataclasses.dataclass(frozen=True)
class Settings:
    """Where Synapse's database lives and how Synapse logs in to it."""

    host: str = DEFAULTS["host"]
    port: int = int(DEFAULTS["port"])
    dbname: str = DEFAULTS["dbname"]
    user: str = DEFAULTS["user"]
    password: str = dataclasses.field(default="", repr=False)
    sslmode: str = DEFAULTS["sslmode"]
    sslrootcert: str | None = None

    @property
    def local(self) -> bool:
        """True when we provision the cluster ourselves (as the postgres user)."""
        return self.host in LOCAL_HOSTS

    @classmethod
    def from_answers(cls, **answers: str | int | None) -> Settings:
        """Validate raw answers (strings from debconf or the command line)."""
        password = str(answers.get("password") or "")
        rootcert = answers.get("sslrootcert") or None
        return cls(
            host=validate_host(str(answers.get("host") or DEFAULTS["host"])),
            port=validate_port(answers.get("port") or DEFAULTS["port"]),
            dbname=validate_name("database", str(answers.get("dbname") or DEFAULTS["dbname"])),
            user=validate_name("role", str(answers.get("user") or DEFAULTS["user"])),
            password=validate_password(password) if password else "",
            sslmode=validate_sslmode(str(answers.get("sslmode") or DEFAULTS["sslmode"])),
            sslrootcert=str(rootcert) if rootcert else None,
        )
