"""pg_dump and pg_restore for the backup and restore commands, and the empty database a
restore fills.

The local cluster is reached as ``postgres`` over the Unix socket (peer authentication);
a remote server as Synapse's role, with the password file the snippet names
(``PGPASSFILE``): no password on a command line or in a log.  No PG* variable of the
admin's shell steers these connections.

No dump holds the rows of Synapse's ``e2e_one_time_keys_json`` (its schema stays): Synapse's
backup guide says they must not be restored, since a one-time key handed out after the
dump would be handed out a second time, and the clients that got it could not decrypt.
A dump made before this rule held them; a restore empties the table then.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path
from typing import Any

from matrix_synapse_setup.core import messages
from matrix_synapse_setup.core.errors import SetupError
from matrix_synapse_setup.core.paths import PACKAGE
from matrix_synapse_setup.core.settings import Settings, without_libpq_variables
from matrix_synapse_setup.postgres.provision import connect_as_role, postgres_user
from matrix_synapse_setup.postgres.queries import import_psycopg
from matrix_synapse_setup.postgres.superuser import ensure_database, error_answer

PG_LIB = Path("/usr/lib/postgresql")
# Synapse's table of the one-time keys that devices uploaded, each to be handed out once.
ONE_TIME_KEYS = "e2e_one_time_keys_json"
EXCLUDE_ONE_TIME_KEYS = f"--exclude-table-data={ONE_TIME_KEYS}"


def pg_tool(name: str, major: int | None = None, lib: Path = PG_LIB) -> str:
    """The PostgreSQL client program *name* for a server of version *major*: that
    version's own, else the newest installed one that is not older (pg_dump refuses a
    newer server), else the newest; "name" (pg_wrapper's choice) when none is found.
    pg_wrapper alone would take the default cluster's version, which may be another
    cluster's."""
    found = []
    for path in lib.glob(f"*/bin/{name}"):
        with contextlib.suppress(ValueError):
            found.append((int(path.parent.parent.name), str(path)))
    found.sort()
    if not found:
        return name
    if major is not None:
        for version, path in found:
            if version >= major:
                return path
    return found[-1][1]


def database_size(settings: Settings) -> tuple[int, int]:
    """(pg_database_size of Synapse's database, the server's major version), as Synapse's
    role."""
    with connect_as_role(settings) as conn:
        (size,) = conn.execute("SELECT pg_database_size(current_database())").fetchone()
        major = conn.info.server_version // 10000
    return int(size), major


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """No PG* variable of the admin's shell steers our connections."""
    env = without_libpq_variables(dict(os.environ))
    env["LC_ALL"] = "C.UTF-8"
    env.update(extra or {})
    return env


def last_line(text: str) -> str:
    """A tool's last words: its last line that is not blank."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


def pg_dump_command(
    settings: Settings, socket_dir: str, passfile: str | None
) -> tuple[list[str], dict[str, str], dict[str, Any]]:
    """(argv, environment, subprocess arguments) for pg_dump -Fc to stdout."""
    if settings.local:
        postgres = postgres_user()
        cmd = ["pg_dump", "-Fc", EXCLUDE_ONE_TIME_KEYS]
        cmd += ["-h", settings.socket_dir or socket_dir, "-p", str(settings.port)]
        cmd += ["-d", settings.dbname]
        env = clean_env({"HOME": postgres.pw_dir})
        kwargs = {"user": postgres.pw_uid, "group": postgres.pw_gid, "extra_groups": []}
        return cmd, env, kwargs
    extra = {
        "PGHOST": settings.host,
        "PGPORT": str(settings.port),
        "PGUSER": settings.user,
        "PGDATABASE": settings.dbname,
        "PGSSLMODE": settings.sslmode,
        "PGCONNECT_TIMEOUT": "10",
        "PGAPPNAME": PACKAGE,
    }
    if settings.sslrootcert:
        extra["PGSSLROOTCERT"] = settings.sslrootcert
    if passfile:
        extra["PGPASSFILE"] = passfile
    return ["pg_dump", "-Fc", EXCLUDE_ONE_TIME_KEYS, "-w"], clean_env(extra), {}


def pg_restore_command(
    socket_dir: str, port: int, dbname: str, role: str
) -> tuple[list[str], dict[str, str], dict[str, Any]]:
    """(argv, environment, subprocess arguments) for pg_restore from stdin into *dbname* of
    the local cluster, as postgres, the objects owned by *role* (SET ROLE)."""
    postgres = postgres_user()
    cmd = [
        pg_tool("pg_restore"),
        "--no-owner",
        "--no-privileges",
        f"--role={role}",
        "--exit-on-error",
        "-h",
        socket_dir,
        "-p",
        str(port),
        "-d",
        dbname,
    ]
    env = clean_env({"HOME": postgres.pw_dir})
    kwargs = {"user": postgres.pw_uid, "group": postgres.pw_gid, "extra_groups": []}
    return cmd, env, kwargs


def holds_table_data(listing: str, table: str) -> bool:
    """Whether ``pg_restore -l``'s *listing* of a dump has a TABLE DATA entry for *table*
    (in any schema): "ID; 0 OID TABLE DATA SCHEMA TABLE OWNER"."""
    for line in listing.splitlines():
        if line.startswith(";"):
            continue
        _, sep, entry = line.partition(" TABLE DATA ")
        if sep and entry.split()[1:2] == [table]:
            return True
    return False


def dump_holds_one_time_keys(dump: Path) -> bool:
    """Whether the dump holds rows of :data:`ONE_TIME_KEYS` (a dump made before they were
    left out): its table of contents, read by ``pg_restore -l``, which connects nowhere.
    The file (0600 root) comes on stdin from this root process."""
    with dump.open("rb") as source:
        try:
            proc = subprocess.run(
                [pg_tool("pg_restore"), "-l"],
                stdin=source,
                capture_output=True,
                check=False,
                env=clean_env(),
            )
        except FileNotFoundError:
            raise SetupError(messages.RESTORE_NO_PG_RESTORE) from None
    if proc.returncode != 0:
        raise SetupError(
            messages.RESTORE_UNREADABLE_DUMP.format(
                path=dump, reason=last_line(proc.stderr.decode("utf-8", "replace"))
            )
        )
    return holds_table_data(proc.stdout.decode("utf-8", "replace"), ONE_TIME_KEYS)


def empty_one_time_keys(settings: Settings) -> int | None:
    """As Synapse's role (the owner of the restored tables), in *settings*' database: the
    number of rows :data:`ONE_TIME_KEYS` had, now none; None when there is no such table."""
    psycopg = import_psycopg()
    sql = psycopg.sql
    with connect_as_role(settings) as conn:
        found = conn.execute(
            "SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.relname = %s AND c.relkind IN ('r', 'p')"
            " AND pg_catalog.pg_table_is_visible(c.oid)",
            (ONE_TIME_KEYS,),
        ).fetchone()
        if found is None:
            return None
        table = sql.Identifier(found[0], ONE_TIME_KEYS)
        (count,) = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table)).fetchone()
        if count:
            conn.execute(sql.SQL("TRUNCATE {}").format(table))
    return int(count)


# --- the database a restore fills, made as postgres ---------------------------------------


def create_database(socket_dir: str, port: int, dbname: str, owner: str) -> str:
    """As postgres: CREATE DATABASE *dbname* as Synapse needs it, owned by *owner*; refuse
    a name that exists (nothing is ever overwritten)."""
    psycopg = import_psycopg()
    with psycopg.connect(
        host=socket_dir,
        port=port,
        dbname="postgres",
        user="postgres",
        connect_timeout=10,
        autocommit=True,
    ) as conn:
        row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
        if row is not None:
            raise SetupError(messages.RESTORE_EXISTS.format(dbname=dbname))
        ensure_database(conn, psycopg.sql, Settings(port=port, dbname=dbname, user=owner), False)
    return dbname


def create_database_answer(request: dict[str, Any]) -> dict[str, Any]:
    """In the postgres child (:class:`provision.Superuser`): :func:`create_database` for
    *request*; ``{"result": name}`` or the error (:func:`superuser.error_answer`)."""
    try:
        return {
            "result": create_database(
                request["socket_dir"], request["port"], request["dbname"], request["owner"]
            )
        }
    except Exception as err:  # noqa: BLE001 - answered to the parent
        return error_answer(err)
