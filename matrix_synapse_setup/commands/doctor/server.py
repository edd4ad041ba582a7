"""What PostgreSQL says to Synapse's role, in one login and one query (:func:`server_facts`),
and why a login failed (:func:`connect_failure`).  Apart from the checks that judge these
facts (database.py) because the shared reads (facts.py) log in here, and those checks
import the shared reads: one module for both would be an import circle."""

from __future__ import annotations

from matrix_synapse_setup.core import messages
from matrix_synapse_setup.core.settings import Settings
from matrix_synapse_setup.postgres import budget, diagnose, libpq
from matrix_synapse_setup.postgres.diagnose import reason_of
from matrix_synapse_setup.postgres.provision import connect_error, role_params

# A client connection in pg_stat_activity.  Another role's rows show their pid, user and
# database but no backend_type (without pg_read_all_stats): a row with a user and a
# database is a client then (the server's own processes have neither, or no database).
CLIENT = "coalesce(backend_type = 'client backend', datname IS NOT NULL AND usesysid IS NOT NULL)"
FACTS_QUERY = """
SELECT current_setting('server_version_num'),
       pg_encoding_to_char(d.encoding), d.datcollate, d.datctype, pg_get_userbyid(d.datdba),
       r.rolsuper, has_schema_privilege('public', 'CREATE'),
       current_setting('max_connections'),
       (SELECT count(*) FROM pg_stat_activity WHERE {client} AND pid <> pg_backend_pid()),
       (SELECT count(*) FROM pg_stat_activity
         WHERE {client} AND pid <> pg_backend_pid() AND usename = current_user),
       s.ssl, s.version, s.cipher,
       pg_database_size(current_database()),
       {limits}
  FROM pg_database d
  JOIN pg_roles r ON r.rolname = current_user
  LEFT JOIN pg_stat_ssl s ON s.pid = pg_backend_pid()
 WHERE d.datname = current_database()
""".replace("{client}", CLIENT).replace("{limits}", budget.LIMITS_COLUMNS)


def server_facts(settings: Settings, timeout: float) -> tuple[dict | None, tuple | None]:
    """(facts, None), or (None, (detail, fix)) when the login as Synapse's role fails."""
    where = f"{settings.host}:{settings.port}"
    if settings.socket_dir:
        where = f"{settings.socket_dir}/.s.PGSQL.{settings.port}"
    params = role_params(settings) | {
        "connect_timeout": max(1, int(timeout)),
        "options": f"-c statement_timeout={int(timeout * 1000)}",
    }
    try:
        conn = libpq.Connection(params)
    except libpq.Error as err:
        return None, connect_failure(err, settings, where)
    except OSError as err:  # libpq itself cannot be loaded
        return None, (messages.DOCTOR_NO_LIBPQ.format(reason=err), messages.LIBPQ_MISSING)
    with conn:
        try:
            rows = conn.query(FACTS_QUERY)
        except libpq.Error as err:  # logged in, but the query failed (or took too long)
            return None, (
                messages.DOCTOR_QUERY_FAILED.format(where=where, reason=reason_of(err)),
                messages.DOCTOR_FIX_QUERY_FAILED,
            )
    if len(rows) != 1:
        return None, (
            messages.DOCTOR_QUERY_FAILED.format(where=where, reason=f"{len(rows)} rows"),
            messages.DOCTOR_FIX_BUG,
        )
    row = rows[0]
    facts = {
        "where": where,
        "user": settings.user,
        "dbname": settings.dbname,
        "version": int(row[0] or 0),
        "encoding": row[1],
        "collate": row[2],
        "ctype": row[3],
        "owner": row[4],
        "superuser": row[5] == "t",
        "can_create": row[6] == "t",
        "max_connections": int(row[7] or 0),
        "connections": int(row[8] or 0),
        "mine": int(row[9] or 0),
        "ssl": row[10] == "t",
        "ssl_version": row[11],
        "ssl_cipher": row[12],
        "size": int(row[13]) if row[13] is not None else None,
        "limits": budget.limits_from_row(row[14:17]),
    }
    return facts, None


def connect_failure(err: Exception, settings: Settings, where: str) -> tuple[str, str]:
    """(detail, fix) of a failed login as Synapse's role, classified as the package's other
    checks classify it (by SQLSTATE and connection state, in any language)."""
    error = connect_error(err, settings)
    reason = reason_of(err)
    if error.kind == diagnose.UNREACHABLE:
        fix = (
            messages.DOCTOR_FIX_START_POSTGRESQL
            if settings.local
            else messages.DOCTOR_FIX_REMOTE_POSTGRESQL
        )
        return messages.DOCTOR_NO_ANSWER.format(where=where, reason=reason), fix
    details = {
        diagnose.LOGIN: messages.DOCTOR_LOGIN_REFUSED,
        diagnose.NO_DATABASE: messages.DOCTOR_NO_DATABASE,
        diagnose.TLS: messages.DOCTOR_TLS_FAILED,
        diagnose.BUSY: messages.DOCTOR_BUSY,
    }
    detail = details.get(error.kind or "", messages.DOCTOR_LOGIN_FAILED)
    return detail.format(
        where=where, user=settings.user, dbname=settings.dbname, reason=reason
    ), error.message
