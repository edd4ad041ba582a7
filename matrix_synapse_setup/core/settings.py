"""The answers debconf asks for, and their validation: the database, the first admin
account, how many backups to keep.

The same rules serve the debconf conversation (an invalid answer is asked
again), the admin command and the maintainer scripts (an invalid answer is a
:class:`SetupError` that changes nothing).
"""

from __future__ import annotations

import dataclasses
import grp
import ipaddress
import os
import pwd
import re
import stat
import unicodedata

from matrix_synapse_setup.core import messages
from matrix_synapse_setup.core.errors import SetupError
from matrix_synapse_setup.core.paths import SYNAPSE_USER

SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
# Modes that check the server's certificate: they need a root certificate file.
VERIFYING = ("verify-ca", "verify-full")
# Debian's bundle of the CAs it trusts (package ca-certificates): the default root
# certificate for verify-full.  libpq's own default, ~/.postgresql/root.crt of the
# user that connects, is no place for a system service.
SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
# A remote server: TLS with the certificate and host name checked.  The local
# cluster (loopback or a Unix socket) has no network path to attack.
REMOTE_SSLMODE = "verify-full"
LOCAL_SSLMODE = "prefer"
DEFAULTS = {
    "host": "localhost",
    "port": "5432",
    "dbname": "synapse",
    "user": "synapse",
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
MAX_PASSWORD_LENGTH = 1000
_HOST_WITH_PORT_RE = re.compile(r"(.+):([0-9]+)\Z")
# Synapse's rule for the local part of a new user ID (synapse.types).
ADMIN_LOCALPART = re.compile(r"[a-z0-9._=/+-]{1,255}")
ADMIN_PASSWORD_LIMIT = 512  # Synapse refuses longer passwords
MAX_KEEP = 1000  # dumps the apt hook may keep


def without_libpq_variables(env: dict[str, str]) -> dict[str, str]:
    """*env* without the PG* variables libpq takes defaults from (PGHOSTADDR, PGOPTIONS,
    PGSSLCERT, PGSERVICE, ...).  Synapse, started by systemd, has none of them, so what we
    run must not see those of the admin's shell either: it would connect otherwise than
    Synapse will."""
    return {name: value for name, value in env.items() if not name.startswith("PG")}


def drop_libpq_environment() -> None:
    """This process's checks see no PG* variable (:func:`without_libpq_variables`).
    (The superuser child clears its whole environment.)"""
    clean = without_libpq_variables(dict(os.environ))
    for name in [name for name in os.environ if name not in clean]:
        del os.environ[name]


def is_local(host: str) -> bool:
    """True when *host* means the PostgreSQL cluster on this machine, which we provision:
    ``localhost``, a loopback address (127.0.0.1, ::1) or a Unix socket directory.

    The one definition used everywhere (debian/postrm, which runs when our Python is
    gone, has a shell copy that tests/unit/test_settings.py compares with this one)."""
    host = host.strip(" \t")
    if host in ("", "localhost") or host.startswith("/"):
        return True
    # Spelled out rather than ipaddress's is_loopback, which counts an IPv4-mapped
    # ::ffff:127.0.0.1 since Python 3.13 only: the shell copies could not follow.
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if address.version == 4:
        return address in ipaddress.ip_network("127.0.0.0/8")
    return address == ipaddress.IPv6Address("::1")


def default_sslmode(host: str) -> str:
    return LOCAL_SSLMODE if is_local(host) else REMOTE_SSLMODE


def validate_name(kind: str, value: str) -> str:
    """Return *value* if it is a safe database or role name, else raise."""
    if not _NAME_RE.match(value) or value.startswith("pg_") or value in _RESERVED_NAMES:
        raise SetupError(messages.BAD_NAME.format(kind=kind, value=value))
    return value


def validate_host(value: str) -> str:
    value = value.strip()
    if value.startswith("/"):
        # A Unix socket directory (the local cluster): a plain absolute path.
        if not value.isprintable() or any(ch.isspace() for ch in value) or "/../" in value:
            raise SetupError(messages.BAD_HOST_SOCKET.format(value=value))
        return value.rstrip("/") or "/"
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        pass
    if not _HOSTNAME_RE.match(value):
        with_port = _HOST_WITH_PORT_RE.match(value)
        if with_port and _HOSTNAME_RE.match(with_port[1]):
            raise SetupError(
                messages.BAD_HOST_WITH_PORT.format(
                    value=value, host=with_port[1], port=with_port[2]
                )
            )
        raise SetupError(messages.BAD_HOST.format(value=value))
    return value


def validate_port(value: str | int) -> int:
    text = str(value).strip()
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= 65535:
        raise SetupError(messages.BAD_PORT.format(value=value))
    return int(text)


def validate_password(value: str) -> str:
    """Any text is a valid password but control characters and line or paragraph
    separators (a password file holds one line per entry); Unicode spaces and joiners
    are fine."""
    if len(value) > MAX_PASSWORD_LENGTH:
        raise SetupError(messages.BAD_PASSWORD_LENGTH.format(limit=MAX_PASSWORD_LENGTH))
    if any(unicodedata.category(ch) in ("Cc", "Cs", "Zl", "Zp") for ch in value):
        raise SetupError(messages.BAD_PASSWORD_CHARS)
    if not value.strip():
        raise SetupError(messages.BAD_PASSWORD_BLANK)
    return value


def validate_sslmode(value: str) -> str:
    if value not in SSLMODES:
        raise SetupError(messages.BAD_SSLMODE.format(value=value, modes=", ".join(SSLMODES)))
    return value


def validate_sslrootcert(value: str, *, reader: str | None = SYNAPSE_USER) -> str:
    """A root certificate file: an absolute path to a readable file of PEM certificates
    that *reader* (Synapse's user, when it exists) can read too."""
    import ssl

    path = value.strip()
    if not path.startswith("/") or not path.isprintable():
        raise SetupError(messages.BAD_SSLROOTCERT_PATH.format(value=value))
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise SetupError(messages.BAD_SSLROOTCERT_NOT_FILE.format(path=path))
        with open(path, "rb") as fh:
            data = fh.read(4 << 20)
    except OSError as err:
        raise SetupError(
            messages.BAD_SSLROOTCERT_UNREADABLE.format(path=path, reason=err.strerror)
        ) from None
    try:
        if b"-----BEGIN CERTIFICATE-----" not in data:
            raise ssl.SSLError("no PEM certificate")
        ssl.create_default_context().load_verify_locations(cadata=data.decode("ascii"))
    except (ssl.SSLError, UnicodeDecodeError, ValueError):
        raise SetupError(messages.BAD_SSLROOTCERT_PEM.format(path=path)) from None
    if reader is not None and not _readable_by(st, reader):
        raise SetupError(messages.BAD_SSLROOTCERT_PERMISSIONS.format(path=path, user=reader))
    return path


def _readable_by(st: os.stat_result, user: str) -> bool:
    """Whether *user* (if it exists) may read a file with *st*, by its mode bits."""
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return True  # Synapse is not installed yet: nothing to check against
    if st.st_uid == entry.pw_uid:
        return bool(st.st_mode & stat.S_IRUSR)
    groups = {entry.pw_gid} | {g.gr_gid for g in grp.getgrall() if user in g.gr_mem}
    if st.st_gid in groups:
        return bool(st.st_mode & stat.S_IRGRP)
    return bool(st.st_mode & stat.S_IROTH)


def validate_admin_user(value: str) -> str:
    """The local part of the admin's Matrix ID (empty: no account)."""
    if value and not ADMIN_LOCALPART.fullmatch(value):
        raise SetupError(messages.BAD_ADMIN_USER.format(value=value))
    return value


def validate_admin_password(value: str) -> str:
    """The admin account's password (empty: keep the one it has)."""
    if len(value) > ADMIN_PASSWORD_LIMIT:
        raise SetupError(messages.BAD_PASSWORD_LENGTH.format(limit=ADMIN_PASSWORD_LIMIT))
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise SetupError(messages.BAD_PASSWORD_CHARS)
    if value and not value.strip():
        raise SetupError(messages.BAD_PASSWORD_BLANK)
    return value


def validate_keep(value: str | int) -> int:
    """How many dumps the apt hook keeps: 1 to MAX_KEEP."""
    text = str(value).strip()
    if not text.isdigit() or not 1 <= int(text) <= MAX_KEEP:
        raise SetupError(messages.BACKUP_KEEP_INVALID.format(value=text, maximum=MAX_KEEP))
    return int(text)


# Synapse's worker presets (debconf's workers question), "none" first: the default.
WORKER_PRESETS = ("none", "federation", "client")
MAX_CLIENT_WORKERS = 16


def validate_workers(value: str) -> str:
    """One of the presets."""
    text = value.strip()
    if text not in WORKER_PRESETS:
        raise SetupError(
            messages.WORKERS_INVALID.format(value=text, choices=", ".join(WORKER_PRESETS))
        )
    return text


def default_client_workers(cores: int) -> int:
    """One client worker per core beyond the first, one to four: the main process,
    the event persister and PostgreSQL need the rest."""
    return max(1, min(4, cores - 1))


def validate_client_workers(value: str, cores: int = 1) -> int:
    """The number of client workers: empty means default_client_workers(cores)."""
    text = value.strip()
    if not text:
        return default_client_workers(cores)
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_CLIENT_WORKERS:
        raise SetupError(
            messages.CLIENT_WORKERS_INVALID.format(
                value=value,
                maximum=MAX_CLIENT_WORKERS,
                default=default_client_workers(cores),
                cores=cores,
            )
        )
    return int(text)


@dataclasses.dataclass(frozen=True)
class Settings:
    """Where Synapse's database lives and how Synapse logs in to it."""

    host: str = DEFAULTS["host"]
    port: int = int(DEFAULTS["port"])
    dbname: str = DEFAULTS["dbname"]
    user: str = DEFAULTS["user"]
    password: str = dataclasses.field(default="", repr=False)
    sslmode: str = LOCAL_SSLMODE
    sslrootcert: str | None = None

    @property
    def local(self) -> bool:
        """True when we provision the cluster ourselves (as the postgres user)."""
        return is_local(self.host)

    @property
    def socket_dir(self) -> str | None:
        """The Unix socket directory when the host names one."""
        return self.host if self.host.startswith("/") else None

    @classmethod
    def from_answers(cls, **answers: str | int | None) -> Settings:
        """Validate raw answers (strings from debconf or the command line).  An answer
        that is None takes its default; an empty one is refused like any bad one."""

        def given(key: str) -> str:
            value = answers.get(key)
            return DEFAULTS[key] if value is None else str(value)

        host = validate_host(given("host"))
        password = str(answers.get("password") or "")
        sslmode = validate_sslmode(
            str(answers.get("sslmode") or "").strip() or default_sslmode(host)
        )
        rootcert = str(answers.get("sslrootcert") or "").strip()
        if not rootcert and sslmode in VERIFYING:
            rootcert = SYSTEM_CA_BUNDLE
        return cls(
            host=host,
            port=validate_port(given("port")),
            dbname=validate_name("database", given("dbname").strip()),
            user=validate_name("role", given("user").strip()),
            password=validate_password(password) if password else "",
            sslmode=sslmode,
            sslrootcert=validate_sslrootcert(rootcert) if rootcert else None,
        )
