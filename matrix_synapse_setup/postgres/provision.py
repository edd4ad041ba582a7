"""Bring PostgreSQL to the state Synapse needs, then prove Synapse can use it.

Local mode (``localhost``, a loopback address or a socket directory: see
:func:`matrix_synapse_setup.core.settings.is_local`): the superuser part runs in a
child process with the ``postgres`` uid, over the Unix socket with peer
authentication (see :mod:`matrix_synapse_setup.postgres.superuser`).  Both modes then
verify, as the role, to the host and port the configuration will name:
exactly what Synapse will do.  Every step inspects first and reports what it did.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import socket
import struct
import sys
import traceback
from collections.abc import Callable
from typing import Any

from matrix_synapse_setup.core import faults, messages
from matrix_synapse_setup.core.errors import SetupError, debugging
from matrix_synapse_setup.core.paths import PACKAGE, POSTGRESQL_SOCKET_DIR, SYSTEM_PATH
from matrix_synapse_setup.core.settings import Settings
from matrix_synapse_setup.core.steps import OK, Step
from matrix_synapse_setup.postgres import budget, diagnose, libpq, superuser
from matrix_synapse_setup.postgres.diagnose import reason_of
from matrix_synapse_setup.postgres.queries import (
    DATABASE_QUERY_PQ,
    QUICK_QUERY,
    ServerUnavailable,
    check_database,
    check_version,
    import_psycopg,
)

CONNECT_TIMEOUT = 10
PROBE_TABLE = "matrix_synapse_setup_probe"


def provision(
    settings: Settings,
    *,
    socket_dir: str = POSTGRESQL_SOCKET_DIR,
    facts: dict[str, Any] | None = None,
    tune: dict[str, Any] | None = None,
    peer: bool = False,
    verify_as_role: bool = True,
) -> list[Step]:
    """Local: create or update role and database, then verify.  Remote: verify.
    *peer*: the role gets no password (its system user logs in over the socket); the
    caller then verifies as that user (*verify_as_role* False skips our verification).
    *tune*: the PostgreSQL settings for Synapse to apply too (tuning.apply's request).
    *facts*: filled with what the superuser part saw and did ("other_databases": the
    cluster's databases that are not Synapse's; "tuning": tuning.apply's answer)."""
    steps: list[Step] = []
    if settings.local:
        if not settings.password and not peer:
            raise SetupError(messages.EMPTY_PASSWORD.format(user=settings.user))
        socket = settings.socket_dir or socket_dir
        steps += _run_as_postgres(settings, socket, facts, tune)
    return (steps + verify(settings)) if verify_as_role else steps


# --- the superuser part, in a child with the postgres uid -------------------


def postgres_user() -> pwd.struct_passwd:
    """The ``postgres`` user, when this process may act as it (root, or postgres)."""
    try:
        postgres = pwd.getpwnam("postgres")
    except KeyError:
        # PostgreSQL (a Recommends) is not installed yet: like a stopped server,
        # this may be retried or ignored once the admin installs it.
        raise ServerUnavailable(messages.NO_POSTGRES_USER) from None
    if os.geteuid() not in (0, postgres.pw_uid):
        raise SetupError(messages.NEED_ROOT)
    return postgres


def _run_as_postgres(
    settings: Settings,
    socket_dir: str,
    facts: dict[str, Any] | None = None,
    tune: dict[str, Any] | None = None,
) -> list[Step]:
    child = Superuser.start(postgres_user())
    request = {
        "socket_dir": socket_dir,
        "port": settings.port,
        "dbname": settings.dbname,
        "user": settings.user,
        "password": settings.password,
        "tune": tune,
    }
    answer = child.ask(request)
    if facts is not None:
        facts["other_databases"] = answer.get("other_databases", [])
        facts["tuning"] = answer.get("tuning")
    return [Step(**step) for step in answer["steps"]]


class Superuser:
    """A forked child with the ``postgres`` uid that runs :func:`superuser.answer` (or
    another *handler*: JSON request in, JSON-able answer out) for one request.  A fork,
    not a new interpreter: no second Python start-up, and the request (with the password)
    never leaves memory.  Closed without a request, it exits having done nothing.  The
    child cannot touch the maintainer script's debconf pipe (stdin, stdout, fd 3):
    they are /dev/null there."""

    def __init__(self, pid: int, requests: int, answers: int) -> None:
        self.pid, self._requests, self._answers = pid, requests, answers
        self.used = False

    @classmethod
    def start(
        cls,
        user: pwd.struct_passwd,
        handler: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> Superuser:
        env = {"PATH": SYSTEM_PATH, "HOME": user.pw_dir, "LC_ALL": "C.UTF-8"}
        for name in (
            "DPKG_MAINTSCRIPT_DEBUG",
            faults.ENV,
            faults.PAUSE_ENV,
            faults.PAUSE_SECONDS_ENV,
        ):
            if name in os.environ:  # debugging, and test-only crash injection (faults.py)
                env[name] = os.environ[name]
        request_r, request_w = os.pipe()
        answer_r, answer_w = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: never returns, never runs the parent's clean-ups
            os.close(request_w)
            os.close(answer_r)
            os._exit(_child(user, env, request_r, answer_w, handler))
        os.close(request_r)
        os.close(answer_w)
        return cls(pid, request_w, answer_r)

    def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        """Send *request*; the handler's answer, or the error it answered
        (:func:`superuser.error_answer`) raised here: ServerUnavailable when a retry may
        help, else SetupError."""
        returncode, output = self._run(request)
        faults.follow_child(returncode)  # test-only crash injection
        try:
            answer = json.loads(output)
        except ValueError:
            raise SetupError(
                messages.SUPERUSER_FAILED.format(reason=f"exit {returncode}")
            ) from None
        if "error" in answer:
            error = (ServerUnavailable if answer["error"]["retry"] else SetupError)(
                answer["error"]["message"]
            )
            error.kind = answer["error"].get("kind")
            raise error
        return answer

    def _run(self, request: dict[str, Any]) -> tuple[int, bytes]:
        """Send *request*; (the child's exit code, its JSON answer)."""
        self.used = True
        data = json.dumps(request).encode()
        try:
            with os.fdopen(self._requests, "wb") as pipe:
                pipe.write(data)
        except BrokenPipeError:
            pass  # the child died early: its exit code tells
        chunks = []
        with os.fdopen(self._answers, "rb") as pipe:
            while chunk := pipe.read(65536):
                chunks.append(chunk)
        _, status = os.waitpid(self.pid, 0)
        return os.waitstatus_to_exitcode(status), b"".join(chunks)

    def close(self) -> None:
        """Without a request: the child exits, having changed nothing."""
        if self.used:
            return
        self.used = True
        os.close(self._requests)
        os.close(self._answers)
        os.waitpid(self.pid, 0)


def _child(
    user: pwd.struct_passwd,
    env: dict[str, str],
    requests: int,
    answers: int,
    handler: Callable[[dict[str, Any]], dict[str, Any]] | None,
) -> int:
    status = 70
    try:
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 3):
            # Outside a maintainer script fd 3 may be one of our own pipes (then it
            # was free: debconf's is fd 3 only under the confmodule).
            if fd not in (requests, answers):
                os.dup2(null, fd)
        # No PG* variable of the admin's shell may steer the superuser connection.
        os.environ.clear()
        os.environ.update(env)
        if os.geteuid() != user.pw_uid:
            os.setgroups([])
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)
        handler = handler or superuser.answer
        with os.fdopen(requests, "rb") as pipe:
            data = pipe.read()
        if not data:
            return 0  # closed without a request
        reply = json.dumps(handler(json.loads(data))).encode()
        while reply:
            reply = reply[os.write(answers, reply) :]
        status = 0
    except BaseException:  # noqa: BLE001 - the child must reach os._exit, always
        if debugging():
            traceback.print_exc()
    return status


# --- verification, as the role, over TCP --------------------------------------


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
    and connection state (see :mod:`matrix_synapse_setup.postgres.diagnose`), never by text."""
    found = diagnose.diagnose(role_params(settings), timeout=CONNECT_TIMEOUT)
    fields = {
        "host": settings.host,
        "port": settings.port,
        "user": settings.user,
        "dbname": settings.dbname,
        "sslmode": settings.sslmode,
        "sslrootcert": settings.sslrootcert or "the default root certificate",
        "reason": reason_of(err),
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
        "application_name": PACKAGE,
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


def describe_certificate(settings: Settings) -> str:
    """Which certificate the server presents, and what checked it: a TLS handshake of
    our own (PostgreSQL's SSLRequest, then TLS), since libpq does not tell."""
    import ssl  # costly, and only the admin command's verify asks for a certificate

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


def verify(settings: Settings, *, show_certificate: bool = False) -> list[Step]:
    """Check what Synapse will check, as Synapse will connect.  Changes nothing (the
    probe table is created in a transaction that is rolled back).
    *show_certificate*: also say which certificate the server presented.

    Through libpq directly (:mod:`matrix_synapse_setup.postgres.libpq`): nothing here needs
    psycopg, whose import would cost more than the whole check."""
    try:
        conn = libpq.Connection(role_params(settings))
    except libpq.Error as err:
        raise connect_error(err, settings) from None
    with conn:
        return checks(conn, settings, show_certificate=show_certificate)


def checks(
    conn: libpq.Connection, settings: Settings, *, show_certificate: bool = False
) -> list[Step]:
    """:func:`verify`'s checks on *conn*, a connection as *settings*' role however it
    was opened (Dendrite's connects with its connection string: dendrite/database.py)."""
    where = f"{settings.host}:{settings.port}"
    if settings.socket_dir:
        where = f"{settings.socket_dir}/.s.PGSQL.{settings.port}"
    steps = [check_version(conn.server_version, where)]
    how = "over the Unix socket" if settings.socket_dir else "over TCP"
    steps.append(Step(f"login as {settings.user} {how}", OK, where))
    rows = conn.query(DATABASE_QUERY_PQ, settings.dbname)
    steps += check_database(rows[0] if rows else None, settings, where)  # type: ignore[arg-type]
    tls = conn.tls()
    if tls is not None:
        detail = f"{tls[0]}, {tls[1]}, sslmode {settings.sslmode}"
        if show_certificate:
            detail += "; " + describe_certificate(settings)
        steps.append(Step("TLS", OK, detail))
    elif not settings.local:
        steps.append(Step("TLS", "not used", f"sslmode {settings.sslmode}"))
    conn.command("BEGIN")
    try:
        # A constant name, quoted: nothing of the input is in this statement.
        conn.command(f'CREATE TABLE "{PROBE_TABLE}" (id integer)')
    except libpq.Error as err:
        raise SetupError(
            messages.CANNOT_CREATE_TABLE.format(
                user=settings.user, dbname=settings.dbname, reason=reason_of(err)
            )
        ) from None
    finally:
        conn.command("ROLLBACK")
    steps.append(Step(f"create tables in {settings.dbname}", OK, "as " + settings.user))
    return steps


# --- the proof of an unchanged run: one connection, one query, no psycopg ----------


def server_limits(settings: Settings) -> budget.Limits | None:
    """The server's connection limits, asked as Synapse's role (any role may read
    them); None when it does not answer: the full path then explains."""
    try:
        with libpq.Connection(role_params(settings)) as conn:
            return budget.read_limits(conn)
    except (OSError, libpq.Error, ValueError, IndexError):
        return None


def quick_verify(settings: Settings) -> list[Step] | None:
    """What :func:`verify` proves, for a run that changes nothing: a login as Synapse's
    role exactly as Synapse connects (host, port, TLS mode and CA file, password), the
    server's version, the database's encoding, collation, ctype and owner, the role not
    a superuser, and its right to create tables, in one connection and one query,
    through libpq directly (see :mod:`matrix_synapse_setup.postgres.libpq`).

    Two proofs differ from the full path's, and why that is enough here: the right to
    create tables is read (``has_schema_privilege``) rather than tried with a table
    created and rolled back, so that nothing is written; and the role's password is
    proven by the login itself rather than compared with its hash as ``postgres``
    (with pg_hba.conf's ``trust`` a wrong password would pass, as it does for Synapse).
    None when anything is not as it should be: the caller then takes the full path,
    which provisions, verifies and explains."""
    where = f"{settings.host}:{settings.port}"
    if settings.socket_dir:
        where = f"{settings.socket_dir}/.s.PGSQL.{settings.port}"
    try:
        with libpq.Connection(role_params(settings)) as conn:
            version = conn.server_version
            rows = conn.query(QUICK_QUERY)
            tls = conn.tls()
    except (OSError, libpq.Error):
        return None
    if len(rows) != 1:
        return None
    encoding, collate, ctype, owner, superuser, can_create = rows[0]
    if superuser != "f" or can_create != "t":
        return None
    try:
        steps = [check_version(version, where)]
        how = "over the Unix socket" if settings.socket_dir else "over TCP"
        steps.append(Step(f"login as {settings.user} {how}", OK, where))
        steps += check_database((encoding, collate, ctype, owner), settings, where)  # type: ignore[arg-type]
    except SetupError:
        return None
    if tls is not None:
        steps.append(Step("TLS", OK, f"{tls[0]}, {tls[1]}, sslmode {settings.sslmode}"))
    elif not settings.local:
        steps.append(Step("TLS", "not used", f"sslmode {settings.sslmode}"))
    steps.append(Step(f"create tables in {settings.dbname}", OK, "as " + settings.user))
    return steps
