"""psycopg, loaded robustly, and what the PostgreSQL modules share: the error a retry
may cure, the queries and checks of a database, the server's version, SCRAM hashes.

Why the loader: when libpq5 is unpacked in the same dpkg run as this package,
libc-bin's ldconfig trigger has not run yet when our postinst runs, so
``/etc/ld.so.cache`` does not list libpq.  psycopg's pure-Python binding asks
``ctypes.util.find_library("pq")``, which reads that cache, finds nothing, and
psycopg fails to import.  The dynamic loader itself does not need the cache:
Debian's ld.so searches the multiarch library directories, so
``dlopen("libpq.so.5")`` works.  We therefore answer psycopg's look-up with
that soname, for the duration of the import only, when the loader confirms it
can open it.  (We answer with the soname first: it spares the two `ldconfig -p` runs
that find_library starts.)
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import ctypes.util
import hashlib
import hmac
import stringprep
import unicodedata
from collections.abc import Iterator
from types import ModuleType

from matrix_synapse_setup.core import messages
from matrix_synapse_setup.core.errors import SetupError
from matrix_synapse_setup.core.settings import Settings
from matrix_synapse_setup.core.steps import OK, Step
from matrix_synapse_setup.postgres.libpq import LIBPQ_SONAME

MIN_SERVER_VERSION = 140000
# What Synapse needs of its database.
NEEDED = {"encoding": "UTF8", "collate": "C", "ctype": "C"}


class ServerUnavailable(SetupError):
    """The server cannot be reached, or it refused the login: may be retried."""


@contextlib.contextmanager
def _libpq_lookup_fallback() -> Iterator[None]:
    original = ctypes.util.find_library

    def find_library(name: str) -> str | None:
        # The soname itself when the loader opens it: no need for ld.so.cache, and no
        # `ldconfig -p` run (find_library starts one per call; psycopg asks for libc too).
        soname = {"pq": LIBPQ_SONAME, "c": "libc.so.6"}.get(name)
        if soname is not None:
            try:
                ctypes.CDLL(soname)
            except OSError:
                return original(name)
            return soname
        return original(name)

    ctypes.util.find_library = find_library
    try:
        yield
    finally:
        ctypes.util.find_library = original


def import_psycopg() -> ModuleType:
    """Import psycopg (and psycopg.sql), also before ldconfig knows libpq."""
    try:
        with _libpq_lookup_fallback():
            import psycopg
            import psycopg.sql
    except ImportError as err:
        raise SetupError(messages.LIBPQ_MISSING) from err
    return psycopg


def version_text(version_num: int) -> str:
    """160004 -> '16.4'."""
    return f"{version_num // 10000}.{version_num % 10000}"


# --- a database as Synapse needs it -------------------------------------------------

_DATABASE_SELECT = (
    "SELECT pg_encoding_to_char(encoding), datcollate, datctype, pg_get_userbyid(datdba)"
    " FROM pg_database WHERE datname = "
)
DATABASE_QUERY = _DATABASE_SELECT + "%s"  # psycopg's placeholder (superuser.py)
DATABASE_QUERY_PQ = _DATABASE_SELECT + "$1"  # libpq's (verify)

# The databases of the cluster that are not Synapse's (nor PostgreSQL's own): does the
# cluster serve only Synapse?  (tune-postgresql's default, see tuning.apply)
OTHER_DATABASES = (
    "SELECT datname FROM pg_database"
    " WHERE NOT datistemplate AND datname <> 'postgres' AND datname <> %s ORDER BY 1"
)

# The proof of an unchanged run (provision.quick_verify), in one query as Synapse's role.
QUICK_QUERY = """
SELECT pg_encoding_to_char(d.encoding), d.datcollate, d.datctype, pg_get_userbyid(d.datdba),
       r.rolsuper, has_schema_privilege('public', 'CREATE')
  FROM pg_database d JOIN pg_roles r ON r.rolname = current_user
 WHERE d.datname = current_database()
"""


def check_database(
    row: tuple[str, str, str, str] | None, settings: Settings, where: str
) -> list[Step]:
    """Refuse a database whose encoding, collation, ctype or owner is wrong."""
    if row is None:
        raise SetupError(
            messages.DATABASE_MISSING.format(
                dbname=settings.dbname, host=settings.host, port=settings.port, user=settings.user
            )
        )
    encoding, collate, ctype, owner = row
    found = {"encoding": encoding, "collate": collate, "ctype": ctype}
    wrong = [k for k, v in NEEDED.items() if found[k] != v]
    if wrong:
        raise SetupError(
            messages.WRONG_DATABASE.format(
                dbname=settings.dbname,
                user=settings.user,
                found=", ".join(f"{k} {found[k]!r}" for k in wrong),
                needed=", ".join(f"{k} {NEEDED[k]!r}" for k in wrong),
            )
        )
    if owner != settings.user:
        raise SetupError(
            messages.WRONG_OWNER.format(dbname=settings.dbname, owner=owner, user=settings.user)
        )
    return [Step(f"verify database {settings.dbname}", OK, f"UTF8, C, C, owner {owner}, {where}")]


def check_version(version_num: int, where: str) -> Step:
    if version_num < MIN_SERVER_VERSION:
        raise SetupError(
            messages.SERVER_TOO_OLD.format(version=version_text(version_num), where=where)
        )
    return Step(f"server {where}", OK, "PostgreSQL " + version_text(version_num))


# --- SCRAM-SHA-256 -----------------------------------------------------------
# PostgreSQL stores "SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>".
# Recomputing it for a candidate password tells, without logging in, whether a
# role already has that password: so a second run can report "unchanged".


def saslprep(password: str) -> bytes:
    """The bytes PostgreSQL hashes for *password* (its pg_saslprep, RFC 4013).

    Pure ASCII is used as it is; otherwise the text is mapped and NFKC
    normalised, and where SASLprep would refuse it PostgreSQL falls back to the
    raw UTF-8 bytes, as we do.
    """
    raw = password.encode("utf-8")
    if password.isascii():
        return raw
    mapped = "".join(
        " " if stringprep.in_table_c12(ch) else ch
        for ch in password
        if not stringprep.in_table_b1(ch)
    )
    normalized = unicodedata.normalize("NFKC", mapped)
    if not normalized:
        return raw
    prohibited = (
        stringprep.in_table_c12,
        stringprep.in_table_c21_c22,
        stringprep.in_table_c3,
        stringprep.in_table_c4,
        stringprep.in_table_c5,
        stringprep.in_table_c6,
        stringprep.in_table_c7,
        stringprep.in_table_c8,
        stringprep.in_table_c9,
        stringprep.in_table_a1,
    )
    if any(test(ch) for ch in normalized for test in prohibited):
        return raw
    rand_al = [stringprep.in_table_d1(ch) for ch in normalized]
    if any(rand_al) and (
        any(stringprep.in_table_d2(ch) for ch in normalized) or not (rand_al[0] and rand_al[-1])
    ):
        return raw
    return normalized.encode("utf-8")


def scram_matches(stored: str | None, password: str) -> bool:
    """True when the pg_authid.rolpassword *stored* is a SCRAM hash of *password*."""
    if not stored or not stored.startswith("SCRAM-SHA-256$"):
        return False
    try:
        _, params, keys = stored.split("$")
        iterations, salt_b64 = params.split(":")
        stored_key_b64, server_key_b64 = keys.split(":")
        salt = base64.b64decode(salt_b64)
        salted = hashlib.pbkdf2_hmac("sha256", saslprep(password), salt, int(iterations))
    except ValueError:
        return False
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    return hmac.compare_digest(
        base64.b64encode(stored_key).decode(), stored_key_b64
    ) and hmac.compare_digest(base64.b64encode(server_key).decode(), server_key_b64)
