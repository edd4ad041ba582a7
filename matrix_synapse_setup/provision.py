"""Bring PostgreSQL to the state Synapse needs, then prove Synapse can use it.

Local mode (``localhost``, a loopback address or a socket directory: see
:func:`matrix_synapse_setup.settings.is_local`): the superuser part runs in a
child process with the ``postgres`` uid, over the Unix socket with peer
authentication (see :mod:`matrix_synapse_setup.superuser`).  Both modes then
verify, as the role, to the host and port the configuration will name:
exactly what Synapse will do.  Every step inspects first and reports what it did.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pwd
import subprocess
import sys
from pathlib import Path
from typing import Any

from . import diagnose, faults, messages
from .diagnose import reason_text
from .errors import SetupError, debugging
from .pg import MIN_SERVER_VERSION, import_psycopg, version_text
from .settings import Settings

DEFAULT_SOCKET_DIR = "/var/run/postgresql"
CONNECT_TIMEOUT = 10
PROBE_TABLE = "matrix_synapse_setup_probe"
NEEDED = {"encoding": "UTF8", "collate": "C", "ctype": "C"}

CREATED, CHANGED, UNCHANGED, OK = "created", "changed", "unchanged", "ok"


@dataclasses.dataclass(frozen=True)
class Step:
    """What one step found or did."""

    name: str
    outcome: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.name}: {self.outcome}" + (f" ({self.detail})" if self.detail else "")


class ServerUnavailable(SetupError):
    """The server cannot be reached, or it refused the login: may be retried."""


def changed(steps: list[Step]) -> bool:
    return any(step.outcome in (CREATED, CHANGED) for step in steps)


def provision(settings: Settings, *, socket_dir: str = DEFAULT_SOCKET_DIR) -> list[Step]:
    """Local: create or update role and database, then verify.  Remote: verify."""
    steps: list[Step] = []
    if settings.local:
        if not settings.password:
            raise SetupError(messages.EMPTY_PASSWORD.format(user=settings.user))
        steps += _run_as_postgres(settings, settings.socket_dir or socket_dir)
    return steps + verify(settings)


# --- the superuser part, in a child with the postgres uid -------------------


def _run_as_postgres(settings: Settings, socket_dir: str) -> list[Step]:
    try:
        postgres = pwd.getpwnam("postgres")
    except KeyError:
        # PostgreSQL (a Recommends) is not installed yet: like a stopped server,
        # this may be retried or ignored once the admin installs it.
        raise ServerUnavailable(messages.NO_POSTGRES_USER) from None
    drop: dict[str, Any] = {}
    if os.geteuid() != postgres.pw_uid:
        if os.geteuid() != 0:
            raise SetupError(messages.NEED_ROOT)
        drop = {"user": postgres.pw_uid, "group": postgres.pw_gid, "extra_groups": []}
    request = {
        "socket_dir": socket_dir,
        "port": settings.port,
        "dbname": settings.dbname,
        "user": settings.user,
        "password": settings.password,
    }
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": postgres.pw_dir,
        "LC_ALL": "C.UTF-8",
    }
    if debugging():
        env["DPKG_MAINTSCRIPT_DEBUG"] = os.environ["DPKG_MAINTSCRIPT_DEBUG"]
    for name in (faults.ENV, faults.PAUSE_ENV, faults.PAUSE_SECONDS_ENV):
        if name in os.environ:  # test-only crash injection (faults.py)
            env[name] = os.environ[name]
    # The password travels on the child's stdin, never on its command line.
    # Its stdout is captured: in a maintainer script fd 1 is debconf's pipe.
    proc = subprocess.run(
        [sys.executable, "-m", "matrix_synapse_setup.superuser"],
        input=json.dumps(request).encode(),
        capture_output=True,
        cwd=str(Path(__file__).resolve().parent.parent),
        env=env,
        check=False,
        **drop,
    )
    faults.follow_child(proc.returncode)  # test-only crash injection
    try:
        answer = json.loads(proc.stdout)
    except ValueError:
        reason = proc.stderr.decode(errors="replace").strip().splitlines()
        raise SetupError(
            messages.SUPERUSER_FAILED.format(reason=reason[-1] if reason else proc.returncode)
        ) from None
    if proc.stderr and debugging():
        sys.stderr.write(proc.stderr.decode(errors="replace"))
    if "error" in answer:
        error = (ServerUnavailable if answer["error"]["retry"] else SetupError)(
            answer["error"]["message"]
        )
        error.kind = answer["error"].get("kind")
        raise error
    return [Step(**step) for step in answer["steps"]]


# --- verification, as the role, over TCP --------------------------------------


def _reason(err: Exception) -> str:
    """What to show of a libpq error (diagnose.reason_text), else its type."""
    return reason_text(str(err)) or type(err).__name__


def hba_line(settings: Settings, client: str | None) -> str:
    """The pg_hba.conf line that lets *settings* log in from *client* (our address)."""
    if settings.host.startswith("/"):
        return f"local {settings.dbname} {settings.user} scram-sha-256"
    kind = "hostssl" if settings.sslmode in ("require", "verify-ca", "verify-full") else "host"
    where = "samehost"
    if client:
        where = f"{client}/128" if ":" in client else f"{client}/32"
    return f"{kind} {settings.dbname} {settings.user} {where} scram-sha-256"


def connect_error(err: Exception, settings: Settings) -> SetupError:
    """Map a failed connection as the role to the message an admin needs: by SQLSTATE
    and connection state (see :mod:`matrix_synapse_setup.diagnose`), never by text."""
    found = diagnose.diagnose(role_params(settings), timeout=CONNECT_TIMEOUT)
    fields = {
        "host": settings.host,
        "port": settings.port,
        "user": settings.user,
        "dbname": settings.dbname,
        "sslmode": settings.sslmode,
        "sslrootcert": settings.sslrootcert or "the default root certificate",
        "reason": _reason(err),
        "sqlstate": found.sqlstate or "none",
    }
    error: SetupError
    if found.kind == diagnose.NO_DATABASE:
        error = SetupError(messages.DATABASE_MISSING.format(**fields))
    elif found.kind == diagnose.LOGIN:
        hba = hba_line(settings, found.client_address)
        error = ServerUnavailable(messages.LOGIN_REFUSED.format(hba=hba, **fields))
    elif found.kind == diagnose.TLS:
        error = SetupError(messages.TLS_FAILED.format(**fields))
    elif found.kind == diagnose.BUSY:
        error = ServerUnavailable(messages.SERVER_BUSY.format(**fields))
    elif found.kind == "ok":
        # It works now (a server that just finished starting): let the caller retry.
        error = ServerUnavailable(messages.SERVER_UNREACHABLE.format(**fields))
    else:
        error = ServerUnavailable(messages.SERVER_UNREACHABLE.format(**fields))
    error.kind = found.kind
    return error


def role_params(settings: Settings, *, dbname: str | None = None) -> dict[str, Any]:
    """libpq keywords for a connection as Synapse's role, as Synapse will connect."""
    params: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "dbname": dbname or settings.dbname,
        "user": settings.user,
        "password": settings.password,
        "sslmode": settings.sslmode,
        "connect_timeout": CONNECT_TIMEOUT,
        "application_name": "matrix-synapse-setup",
    }
    if settings.sslrootcert:
        params["sslrootcert"] = settings.sslrootcert
    return params


def connect_as_role(settings: Settings, *, dbname: str | None = None) -> Any:
    psycopg = import_psycopg()
    try:
        return psycopg.connect(**role_params(settings, dbname=dbname))
    except psycopg.Error as err:
        raise connect_error(err, settings) from None


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


DATABASE_QUERY = (
    "SELECT pg_encoding_to_char(encoding), datcollate, datctype, pg_get_userbyid(datdba)"
    " FROM pg_database WHERE datname = %s"
)


def describe_certificate(settings: Settings) -> str:
    """Which certificate the server presents, and what checked it: a TLS handshake of
    our own (PostgreSQL's SSLRequest, then TLS), since libpq does not tell."""
    import hashlib
    import socket
    import ssl
    import struct

    context = ssl.create_default_context()
    verified = settings.sslmode in ("verify-ca", "verify-full") and settings.sslrootcert
    if verified:
        context.load_verify_locations(cafile=settings.sslrootcert)
        context.check_hostname = settings.sslmode == "verify-full"
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((settings.host, settings.port), CONNECT_TIMEOUT) as raw:
            raw.sendall(struct.pack("!ii", 8, 80877103))  # SSLRequest
            if raw.recv(1) != b"S":
                return "the server offers no TLS"
            name = settings.host if context.check_hostname else None
            with context.wrap_socket(raw, server_hostname=name) as tls:
                der = tls.getpeercert(binary_form=True) or b""
                cert = tls.getpeercert() if verified else {}
    except (OSError, ssl.SSLError) as err:
        return f"certificate not shown ({err})"
    fingerprint = hashlib.sha256(der).hexdigest()
    subject = dict(item for part in cert.get("subject", ()) for item in part)
    issuer = dict(item for part in cert.get("issuer", ()) for item in part)
    if not verified:
        return f"certificate SHA-256 {fingerprint} (not checked: sslmode {settings.sslmode})"
    return (
        f"certificate CN={subject.get('commonName', '?')} issued by "
        f"CN={issuer.get('commonName', '?')}, valid until {cert.get('notAfter', '?')}, "
        f"verified with {settings.sslrootcert}, SHA-256 {fingerprint}"
    )


TLS_QUERY = "SELECT version, cipher FROM pg_stat_ssl WHERE pid = pg_backend_pid() AND ssl"


def verify(settings: Settings, *, show_certificate: bool = False) -> list[Step]:
    """Check what Synapse will check, as Synapse will connect.  Changes nothing.
    *show_certificate*: also say which certificate the server presented."""
    psycopg = import_psycopg()
    where = f"{settings.host}:{settings.port}"
    if settings.socket_dir:
        where = f"{settings.socket_dir}/.s.PGSQL.{settings.port}"
    with connect_as_role(settings) as conn:
        steps = [check_version(conn.info.server_version, where)]
        how = "over the Unix socket" if settings.socket_dir else "over TCP"
        steps.append(Step(f"login as {settings.user} {how}", OK, where))
        row = conn.execute(DATABASE_QUERY, (settings.dbname,)).fetchone()
        steps += check_database(row, settings, where)
        tls = conn.execute(TLS_QUERY).fetchone()
        if tls is not None:
            detail = f"{tls[0]}, {tls[1]}, sslmode {settings.sslmode}"
            if show_certificate:
                detail += "; " + describe_certificate(settings)
            steps.append(Step("TLS", OK, detail))
        elif not settings.local:
            steps.append(Step("TLS", "not used", f"sslmode {settings.sslmode}"))
        try:
            conn.execute(
                psycopg.sql.SQL("CREATE TABLE {} (id integer)").format(
                    psycopg.sql.Identifier(PROBE_TABLE)
                )
            )
        except psycopg.Error as err:
            raise SetupError(
                messages.CANNOT_CREATE_TABLE.format(
                    user=settings.user, dbname=settings.dbname, reason=_reason(err)
                )
            ) from None
        finally:
            conn.rollback()
        steps.append(Step(f"create tables in {settings.dbname}", OK, "as " + settings.user))
    return steps
