"""Bring PostgreSQL to the state Synapse needs, then prove Synapse can use it.

Local mode (host ``localhost``): the superuser part runs in a child process
with the ``postgres`` uid, over the Unix socket with peer authentication (see
:mod:`matrix_synapse_setup.superuser`).  Both modes then verify, as the role,
over TCP to the host and port the configuration will name: exactly what
Synapse will do.  Every step inspects first and reports what it did.
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

from . import messages
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
        steps += _run_as_postgres(settings, socket_dir)
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
        kind = ServerUnavailable if answer["error"]["retry"] else SetupError
        raise kind(answer["error"]["message"])
    return [Step(**step) for step in answer["steps"]]


# --- verification, as the role, over TCP --------------------------------------


def _reason(err: Exception) -> str:
    """The useful part of a libpq error: its first line, without prefixes."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if "failed: " in text:
        text = text.rsplit("failed: ", 1)[1] if text.startswith("connection") else text
    return text.replace("FATAL:  ", "").strip()


def connect_error(err: Exception, settings: Settings) -> SetupError:
    """Map a failed connection as the role to the message an admin needs."""
    text = str(err)
    fields = {
        "host": settings.host,
        "port": settings.port,
        "user": settings.user,
        "dbname": settings.dbname,
        "reason": _reason(err),
    }
    if f'database "{settings.dbname}" does not exist' in text:
        return SetupError(messages.DATABASE_MISSING.format(**fields))
    if "authentication failed" in text or "pg_hba.conf" in text or "role " in text:
        return ServerUnavailable(messages.LOGIN_REFUSED.format(**fields))
    return ServerUnavailable(messages.SERVER_UNREACHABLE.format(**fields))


def connect_as_role(settings: Settings, *, dbname: str | None = None) -> Any:
    psycopg = import_psycopg()
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
    try:
        return psycopg.connect(**params)
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


def verify(settings: Settings) -> list[Step]:
    """Check what Synapse will check, as Synapse will connect.  Changes nothing."""
    psycopg = import_psycopg()
    where = f"{settings.host}:{settings.port}"
    with connect_as_role(settings) as conn:
        steps = [check_version(conn.info.server_version, where)]
        steps.append(Step(f"login as {settings.user} over TCP", OK, where))
        row = conn.execute(DATABASE_QUERY, (settings.dbname,)).fetchone()
        steps += check_database(row, settings, where)
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
