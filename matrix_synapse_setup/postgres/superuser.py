"""The part of provisioning that runs with the ``postgres`` uid.

Run by :func:`matrix_synapse_setup.postgres.provision.provision` in a forked child
that dropped to the ``postgres`` uid (the same interpreter: no second Python to
start).  It takes one request (the password travels in memory, never on a
command line), connects as ``postgres`` over the Unix socket with peer
authentication, and answers with one JSON object on a pipe: the steps it took, or
an error message.  SQL is composed with psycopg.sql only.
"""

from __future__ import annotations

from typing import Any

from matrix_synapse_setup.core import messages
from matrix_synapse_setup.core.errors import SetupError, debugging
from matrix_synapse_setup.core.faults import fault
from matrix_synapse_setup.core.paths import PACKAGE
from matrix_synapse_setup.core.settings import (
    Settings,
    validate_name,
    validate_password,
    validate_port,
)
from matrix_synapse_setup.core.steps import CHANGED, CREATED, UNCHANGED, Step
from matrix_synapse_setup.postgres import diagnose, tuning
from matrix_synapse_setup.postgres.diagnose import reason_of
from matrix_synapse_setup.postgres.queries import (
    DATABASE_QUERY,
    OTHER_DATABASES,
    ServerUnavailable,
    check_database,
    check_version,
    import_psycopg,
    scram_matches,
)


def ensure_role(conn: Any, sql: Any, settings: Settings) -> Step:
    """The role, able to log in with *settings*' password; without one (peer
    authentication: the system user of the same name logs in over the socket) a new role
    gets none, and an existing role keeps whatever password it has."""
    name = f"role {settings.user}"
    row = conn.execute(
        "SELECT rolsuper, rolcanlogin, rolpassword FROM pg_authid WHERE rolname = %s",
        (settings.user,),
    ).fetchone()
    if row is not None and row[0]:
        raise SetupError(messages.ROLE_IS_SUPERUSER.format(user=settings.user))
    if not settings.password:
        return _ensure_peer_role(conn, sql, settings, row)
    if row is not None and row[1] and scram_matches(row[2], settings.password):
        return Step(name, UNCHANGED)
    # Hashed here, on the client side: the clear text never reaches the server.
    hashed = conn.pgconn.encrypt_password(
        settings.password.encode(), settings.user.encode(), b"scram-sha-256"
    ).decode("ascii")
    if row is None:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD {}").format(
                sql.Identifier(settings.user), sql.Literal(hashed)
            )
        )
        fault("after-role-created")
        return Step(name, CREATED)
    conn.execute(
        sql.SQL("ALTER ROLE {} WITH LOGIN PASSWORD {}").format(
            sql.Identifier(settings.user), sql.Literal(hashed)
        )
    )
    fault("after-password-changed")
    return Step(name, CHANGED, "password set" if row[1] else "login and password set")


def _ensure_peer_role(conn: Any, sql: Any, settings: Settings, row: Any) -> Step:
    name = f"role {settings.user}"
    if row is None:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE").format(
                sql.Identifier(settings.user)
            )
        )
        return Step(name, CREATED, "no password: peer authentication")
    if row[1]:
        return Step(name, UNCHANGED)
    conn.execute(sql.SQL("ALTER ROLE {} WITH LOGIN").format(sql.Identifier(settings.user)))
    return Step(name, CHANGED, "login set")


def inspect_database(conn: Any, settings: Settings, where: str) -> bool:
    """True if the database exists and is right; refuse it if it is wrong."""
    row = conn.execute(DATABASE_QUERY, (settings.dbname,)).fetchone()
    if row is not None:
        check_database(row, settings, where)
    return row is not None


def ensure_database(conn: Any, sql: Any, settings: Settings, exists: bool) -> list[Step]:
    if exists:
        return [Step(f"database {settings.dbname}", UNCHANGED)]
    conn.execute(
        sql.SQL(
            "CREATE DATABASE {} WITH OWNER {} ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'"
            " TEMPLATE template0"
        ).format(sql.Identifier(settings.dbname), sql.Identifier(settings.user))
    )
    fault("after-database-created")
    return [Step(f"database {settings.dbname}", CREATED, "UTF8, C, C, owner " + settings.user)]


def provision_as_superuser(
    request: dict[str, Any],
) -> tuple[list[Step], list[str], dict[str, Any] | None]:
    settings = Settings(
        port=validate_port(request["port"]),
        dbname=validate_name("database", request["dbname"]),
        user=validate_name("role", request["user"]),
        # No password: peer authentication (a role for a system user of the same name).
        password=validate_password(request["password"]) if request.get("password") else "",
    )
    psycopg = import_psycopg()
    where = f"local cluster (port {settings.port})"
    params = {
        "host": request["socket_dir"],
        "port": settings.port,
        "dbname": "postgres",
        "user": "postgres",
        "connect_timeout": 10,
        "application_name": PACKAGE,
    }
    try:
        # autocommit: CREATE DATABASE cannot run in a transaction
        conn = psycopg.connect(**params, autocommit=True)
    except psycopg.Error as err:
        # Classified by SQLSTATE and connection state, never by the (translated) text.
        found = diagnose.diagnose(params)
        kind = found.kind
        if found.kind == diagnose.LOGIN:
            message = messages.LOCAL_SUPERUSER_REFUSED.format(
                port=settings.port, sqlstate=found.sqlstate or "none"
            )
        else:
            reason = reason_of(err)
            if found.kind == diagnose.UNREACHABLE:
                reason = f"no answer on {request['socket_dir']}/.s.PGSQL.{settings.port}"
            message = messages.LOCAL_UNREACHABLE.format(port=settings.port, reason=reason)
        error = ServerUnavailable(message)
        error.kind = kind
        raise error from None
    with conn:
        steps = [check_version(conn.info.server_version, where)]
        # Inspect everything before changing anything: a refusal changes nothing.
        exists = inspect_database(conn, settings, where)
        others = [name for (name,) in conn.execute(OTHER_DATABASES, (settings.dbname,)).fetchall()]
        steps.append(ensure_role(conn, psycopg.sql, settings))
        steps += ensure_database(conn, psycopg.sql, settings, exists)
        tuned = tune(conn, request.get("tune"), others)
    return steps, others, tuned


def tune(conn: Any, request: dict[str, Any] | None, others: list[str]) -> dict[str, Any] | None:
    """The PostgreSQL settings for Synapse (tuning.apply), on this same connection.  A
    failure there is reported, never a failure of the provisioning."""
    if request is None:
        return None
    try:
        return tuning.apply(conn, request, others)
    except Exception as err:  # reported to the parent, which says it
        if debugging():
            raise
        return {"error": f"{type(err).__name__}: {reason_of(err)}"}


def answer(request: dict[str, Any]) -> dict[str, Any]:
    """The steps taken for *request*, or the error, as one JSON-ready object."""
    try:
        steps, others, tuned = provision_as_superuser(request)
        return {
            "steps": [step._asdict() for step in steps],
            "other_databases": others,
            "tuning": tuned,
        }
    except Exception as err:  # noqa: BLE001 - answered to the parent
        return error_answer(err)


def error_answer(err: Exception) -> dict[str, Any]:
    """*err* as a handler's answer, which :meth:`provision.Superuser.ask` raises again in
    the parent.  An unexpected error is re-raised here when debugging."""
    if isinstance(err, SetupError):
        return {
            "error": {
                "message": err.message,
                "retry": isinstance(err, ServerUnavailable),
                "kind": err.kind,
            }
        }
    if debugging():
        raise err
    reason = f"{type(err).__name__}: {reason_of(err)}"
    return {"error": {"message": messages.SUPERUSER_FAILED.format(reason=reason), "retry": False}}
