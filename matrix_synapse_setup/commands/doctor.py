"""``matrix-synapse-setup doctor``: what is wrong, in one table.

Every check is read-only and bounded in time, and independent of the others: one that
fails (or breaks) never hides the rest.  A check that needs something another check
found missing (the snippet's values, a connection to PostgreSQL) is shown as
``skipped``; the root cause's own row carries the failure.

Exit code: 0 when every row is ``ok``, 1 when some warn and none fails, 2 when any
fails (``skipped`` rows count for nothing).  ``--json`` prints the same rows for
monitoring.  Secrets are never printed: the password is only handed to libpq.
"""

from __future__ import annotations

import argparse
import dataclasses
import grp
import json
import math
import os
import pwd
import shutil
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from matrix_synapse_setup.core import messages
from matrix_synapse_setup.core.errors import SetupError
from matrix_synapse_setup.core.paths import BACKUP_DIR, SNIPPET, SYNAPSE_USER
from matrix_synapse_setup.core.settings import Settings, drop_libpq_environment
from matrix_synapse_setup.files import atomic, snippet
from matrix_synapse_setup.postgres import diagnose, libpq
from matrix_synapse_setup.postgres.diagnose import reason_of
from matrix_synapse_setup.postgres.provision import connect_error, role_params
from matrix_synapse_setup.postgres.queries import MIN_SERVER_VERSION, NEEDED, version_text
from matrix_synapse_setup.synapse import config as synapse_config
from matrix_synapse_setup.synapse.client import Client, HttpError

OK, WARN, FAIL, SKIPPED = "ok", "warn", "fail", "skipped"
EXIT_CODES = {OK: 0, WARN: 1, FAIL: 2}
# The pre-upgrade dumps of the apt hook (commands/backup.py), in BACKUP_DIR.
BACKUP_GLOB = "*.dump"
BACKUP_MAX_AGE_DAYS = 30
MIN_FREE_BYTES = 1 << 30  # without the database's size: 1 GiB
CONNECTIONS_LIMIT = 0.8  # of max_connections
SYNAPSE_PROCESSES = 1  # a single-process Synapse (workers would multiply cp_max)
DEFAULT_CP_MAX = 10  # Synapse's (twisted.enterprise.adbapi's) default pool size
TIMEOUT = 5  # seconds, for each network step (login, query, HTTP request)
CLIENT_PATH = "/_matrix/client/versions"


@dataclasses.dataclass(frozen=True)
class Check:
    """One row: a name, ok/warn/fail/skipped, a one-line detail, the fix when not ok."""

    name: str
    status: str
    detail: str
    fix: str = ""

    def as_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Paths:
    """Where doctor looks (the real system's files by default; tests give others)."""

    homeserver: Path = synapse_config.HOMESERVER
    confd: Path = synapse_config.CONFD
    snippet: Path = SNIPPET
    backups: Path = BACKUP_DIR
    synapse_user: str = SYNAPSE_USER


# --- the overall result ------------------------------------------------------------


def overall(checks: list[Check]) -> str:
    """fail if any row fails, else warn if any warns, else ok (skipped rows: nothing)."""
    statuses = {check.status for check in checks}
    return FAIL if FAIL in statuses else WARN if WARN in statuses else OK


def exit_code(checks: list[Check]) -> int:
    return EXIT_CODES[overall(checks)]


def render_table(checks: list[Check]) -> str:
    """The rows as a table, the fix under each row that is not ok, then the summary."""
    width = max([len(check.name) for check in checks] + [4])
    lines = []
    for check in checks:
        lines.append(f"{check.status:<7} {check.name:<{width}}  {check.detail}")
        if check.fix and check.status != OK:
            lines.append(f"{'':<7} {'':<{width}}  fix: {check.fix}")
    counts = {s: sum(c.status == s for c in checks) for s in (OK, WARN, FAIL, SKIPPED)}
    lines.append(messages.DOCTOR_SUMMARY.format(status=overall(checks), **counts))
    return "\n".join(lines) + "\n"


def render_json(checks: list[Check]) -> str:
    return (
        json.dumps(
            {
                "status": overall(checks),
                "exit_code": exit_code(checks),
                "checks": [check.as_dict() for check in checks],
            },
            indent=2,
            ensure_ascii=False,
        )
        + "\n"
    )


# --- who may read a file ------------------------------------------------------------


def _groups(entry: pwd.struct_passwd) -> set[int]:
    return {entry.pw_gid} | {g.gr_gid for g in grp.getgrall() if entry.pw_name in g.gr_mem}


def _allowed(st: os.stat_result, entry: pwd.struct_passwd, groups: set[int], bits: int) -> bool:
    """Whether a user (uid, groups) has *bits* (an "other" triplet: 4 read, 1 search)."""
    if entry.pw_uid == 0:
        return True
    if st.st_uid == entry.pw_uid:
        return st.st_mode & (bits << 6) == bits << 6
    if st.st_gid in groups:
        return st.st_mode & (bits << 3) == bits << 3
    return st.st_mode & bits == bits


def unreadable_by(path: Path, user: str) -> str | None:
    """None when *user* can read *path* (every directory above searchable, the file
    readable, by mode bits); else the file or directory that stops it."""
    entry = pwd.getpwnam(user)
    groups = _groups(entry)
    path = Path(os.path.abspath(path))
    for directory in reversed(path.parents):
        if not _allowed(directory.stat(), entry, groups, 1):
            return str(directory)
    if not _allowed(path.stat(), entry, groups, 4):
        return str(path)
    return None


def describe_owner(st: os.stat_result) -> str:
    return atomic.Ownership(st.st_uid, st.st_gid, st.st_mode & 0o7777).describe()


# --- the checks ------------------------------------------------------------------------


class Doctor:
    """The checks, sharing what they found (the snippet's values, the server's facts)."""

    def __init__(self, paths: Paths | None = None, *, timeout: float = TIMEOUT) -> None:
        self.paths = paths or Paths()
        self.timeout = timeout
        self._found: dict[str, Any] | None | bool = False  # False: not read yet
        self._found_error: str | None = None
        self._config: tuple[dict, dict] | None = None
        self._config_error: str | None = None
        self._facts: dict[str, Any] | None = None
        self._facts_error: str | None = None
        self._facts_tried = False

    # -- shared, read once ------------------------------------------------------------

    def found(self) -> dict[str, Any] | None:
        """The snippet's values (password resolved), None when missing or broken."""
        if self._found is False:
            try:
                self._found = snippet.read(self.paths.snippet)
                if self._found is None:
                    self._found_error = messages.DOCTOR_SNIPPET_MISSING.format(
                        path=self.paths.snippet
                    )
            except SetupError as err:
                self._found, self._found_error = None, err.message
        return self._found  # type: ignore[return-value]

    def settings(self) -> Settings | None:
        found = self.found()
        if found is None:
            return None
        answers = {k: str(found[k]) for k in snippet.MANAGED if found.get(k) is not None}
        try:
            return Settings.from_answers(**answers)
        except SetupError as err:
            self._found_error = err.message
            return None

    def config(self) -> tuple[dict, dict] | None:
        """Synapse's effective configuration and where each key came from."""
        if self._config is None and self._config_error is None:
            try:
                files = synapse_config.config_files(self.paths.homeserver, self.paths.confd)
                self._config = synapse_config.load(files)
            except SetupError as err:
                self._config_error = err.message
        return self._config

    def facts(self) -> dict[str, Any] | None:
        """What the server says, in one connection as Synapse's role (None: no login)."""
        if not self._facts_tried:
            self._facts_tried = True
            settings = self.settings()
            if settings is not None:
                self._facts, self._facts_error = server_facts(settings, self.timeout)
        return self._facts

    def _skip(self, name: str, because: str) -> Check:
        return Check(name, SKIPPED, messages.DOCTOR_SKIPPED.format(because=because))

    def _need_server(self, name: str) -> dict[str, Any] | Check:
        facts = self.facts()
        if facts is not None:
            return facts
        if self.settings() is None:
            return self._skip(name, "the snippet's values are not usable (see 'snippet')")
        return self._skip(name, "no connection to PostgreSQL (see 'postgresql')")

    # -- 1. the snippet and its password file -------------------------------------------

    def check_snippet(self) -> Check:
        path, user = self.paths.snippet, self.paths.synapse_user
        name = "snippet"
        try:
            st = path.stat()
        except FileNotFoundError:
            return Check(
                name,
                FAIL,
                messages.DOCTOR_SNIPPET_MISSING.format(path=path),
                messages.DOCTOR_FIX_RECONFIGURE,
            )
        owner = atomic.ownership(user)
        names, mode = owner.describe().split()
        want = f"chown {names} {path} && chmod {mode} {path}"
        try:
            pwd.getpwnam(user)
        except KeyError:
            blocked = None
            no_user = True
        else:
            blocked = unreadable_by(path, user)
            no_user = False
        if blocked is not None:
            where = describe_owner(Path(blocked).stat())
            return Check(
                name,
                FAIL,
                messages.DOCTOR_SNIPPET_UNREADABLE.format(
                    path=path, user=user, blocked=blocked, owner=where
                ),
                messages.DOCTOR_FIX_OWNERSHIP.format(command=want),
            )
        self.found()
        if self.settings() is None:
            fix = messages.DOCTOR_FIX_RECONFIGURE
            if not os.access(path, os.R_OK):
                fix = messages.DOCTOR_FIX_RUN_AS_ROOT
            return Check(name, FAIL, self._found_error or "?", fix)
        if st.st_mode & stat.S_IROTH:
            inline = self.inline_password()
            return Check(
                name,
                FAIL if inline else WARN,
                messages.DOCTOR_SNIPPET_WORLD_READABLE.format(
                    path=path,
                    owner=describe_owner(st),
                    what="the password" if inline else "the role and the server",
                ),
                messages.DOCTOR_FIX_OWNERSHIP.format(command=want),
            )
        if no_user:
            return Check(
                name,
                WARN,
                messages.DOCTOR_NO_SYNAPSE_USER.format(path=path, user=user),
                messages.DOCTOR_FIX_INSTALL_SYNAPSE,
            )
        return Check(
            name,
            OK,
            messages.DOCTOR_SNIPPET_OK.format(path=path, user=user, owner=describe_owner(st)),
        )

    def inline_password(self) -> bool:
        """Whether the snippet's YAML itself holds a password."""
        try:
            text = self.paths.snippet.read_text(encoding="utf-8")
            return snippet.parse(text, where=str(self.paths.snippet))["password"] is not None
        except (OSError, UnicodeDecodeError, SetupError):
            return False

    def check_passfile(self) -> Check:
        name, user = "passfile", self.paths.synapse_user
        found = self.found()
        if found is None:
            return self._skip(name, "the snippet is missing or does not parse (see 'snippet')")
        raw = found.get("passfile")
        if not raw:
            if self.inline_password():
                return Check(
                    name,
                    WARN,
                    messages.DOCTOR_INLINE_PASSWORD.format(path=self.paths.snippet),
                    messages.DOCTOR_FIX_RECONFIGURE,
                )
            return Check(
                name,
                FAIL,
                messages.DOCTOR_NO_PASSWORD.format(path=self.paths.snippet),
                messages.DOCTOR_FIX_RECONFIGURE,
            )
        path = Path(str(raw))
        try:
            st = path.stat()
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return Check(
                name,
                FAIL,
                messages.DOCTOR_PASSFILE_MISSING.format(path=path, snippet=self.paths.snippet),
                messages.DOCTOR_FIX_RECONFIGURE,
            )
        except (OSError, UnicodeDecodeError) as err:
            reason = getattr(err, "strerror", None) or type(err).__name__
            return Check(
                name,
                FAIL,
                messages.DOCTOR_PASSFILE_UNREADABLE.format(path=path, reason=reason),
                messages.DOCTOR_FIX_RUN_AS_ROOT,
            )
        del text  # read only to prove it can be; the password is never shown
        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            entry = None
        wanted = atomic.passfile_ownership(user)
        names = wanted.describe().split()[0]
        fix = messages.DOCTOR_FIX_OWNERSHIP.format(
            command=f"chown {names} {path} && chmod 0600 {path}"
        )
        problems = []
        if st.st_mode & 0o077:
            problems.append(messages.DOCTOR_PASSFILE_MODE.format(mode=st.st_mode & 0o7777))
        if entry is not None and st.st_uid != entry.pw_uid:
            problems.append(messages.DOCTOR_PASSFILE_OWNER.format(user=user))
        elif entry is not None and unreadable_by(path, user) is not None:
            problems.append(messages.DOCTOR_PASSFILE_NOT_READABLE.format(user=user))
        if problems:
            return Check(
                name,
                FAIL,
                messages.DOCTOR_PASSFILE_BAD.format(
                    path=path, owner=describe_owner(st), problems="; ".join(problems)
                ),
                fix,
            )
        if snippet.read_passfile(path, str(found.get("user") or "")) is None:
            return Check(
                name,
                FAIL,
                messages.DOCTOR_PASSFILE_NO_ENTRY.format(path=path, user=found.get("user")),
                messages.DOCTOR_FIX_RECONFIGURE,
            )
        return Check(
            name, OK, messages.DOCTOR_PASSFILE_OK.format(path=path, owner=describe_owner(st))
        )

    # -- 2. Synapse's effective database ------------------------------------------------

    def check_effective_database(self) -> Check:
        name = "effective database"
        config = self.config()
        if config is None:
            return Check(name, FAIL, self._config_error or "?", messages.DOCTOR_FIX_CONFIG)
        database = synapse_config.effective_database(*config)
        ours = self.paths.snippet
        if database.source == ours:
            return Check(
                name,
                OK,
                messages.DOCTOR_EFFECTIVE_OK.format(engine=database.engine, path=ours),
            )
        if database.source is None:
            return Check(
                name,
                FAIL,
                messages.DOCTOR_EFFECTIVE_DEFAULT.format(path=database.sqlite_path, snippet=ours),
                messages.DOCTOR_FIX_RECONFIGURE,
            )
        return Check(
            name,
            FAIL,
            messages.DOCTOR_EFFECTIVE_OTHER.format(
                source=database.source, engine=database.engine, snippet=ours
            ),
            messages.DOCTOR_FIX_EFFECTIVE.format(source=database.source, snippet=ours),
        )

    # -- 3. PostgreSQL: login, version, database, privileges, TLS -------------------------

    def check_postgresql(self) -> Check:
        name = "postgresql"
        settings = self.settings()
        if settings is None:
            return self._skip(name, "the snippet's values are not usable (see 'snippet')")
        facts = self.facts()
        if facts is None:
            detail, fix = self._facts_error or ("?", "")
            return Check(name, FAIL, detail, fix)
        version = version_text(facts["version"])
        where = facts["where"]
        if facts["version"] < MIN_SERVER_VERSION:
            return Check(
                name,
                FAIL,
                messages.DOCTOR_SERVER_TOO_OLD.format(version=version, where=where),
                messages.DOCTOR_FIX_SERVER_TOO_OLD,
            )
        return Check(
            name,
            OK,
            messages.DOCTOR_SERVER_OK.format(version=version, where=where, user=settings.user),
        )

    def check_database(self) -> Check:
        name = "database"
        facts = self._need_server(name)
        if isinstance(facts, Check):
            return facts
        wrong = [key for key, value in NEEDED.items() if facts[key] != value]
        size = synapse_config.human_size(facts["size"])
        if wrong:
            return Check(
                name,
                FAIL,
                messages.DOCTOR_DATABASE_WRONG.format(
                    dbname=facts["dbname"],
                    found=", ".join(f"{k} {facts[k]!r}" for k in wrong),
                    needed=", ".join(f"{k} {NEEDED[k]!r}" for k in wrong),
                ),
                messages.DOCTOR_FIX_DATABASE.format(dbname=facts["dbname"], user=facts["user"]),
            )
        return Check(
            name, OK, messages.DOCTOR_DATABASE_OK.format(dbname=facts["dbname"], size=size)
        )

    def check_privileges(self) -> Check:
        name = "privileges"
        facts = self._need_server(name)
        if isinstance(facts, Check):
            return facts
        user, dbname, owner = facts["user"], facts["dbname"], facts["owner"]
        if facts["superuser"]:
            return Check(
                name,
                WARN,
                messages.DOCTOR_SUPERUSER.format(user=user),
                messages.DOCTOR_FIX_SUPERUSER.format(user=user),
            )
        if owner == user:
            return Check(name, OK, messages.DOCTOR_OWNER_OK.format(user=user, dbname=dbname))
        if facts["can_create"]:
            return Check(
                name, OK, messages.DOCTOR_CREATE_OK.format(user=user, dbname=dbname, owner=owner)
            )
        return Check(
            name,
            FAIL,
            messages.DOCTOR_NO_PRIVILEGE.format(user=user, dbname=dbname, owner=owner),
            messages.DOCTOR_FIX_PRIVILEGE.format(user=user, dbname=dbname),
        )

    def check_tls(self) -> Check:
        name = "tls"
        facts = self._need_server(name)
        if isinstance(facts, Check):
            return facts
        settings = self.settings()
        if settings is None:  # cannot be: the facts came from a login with them
            return self._skip(name, "the snippet's values are not usable (see 'snippet')")
        if facts["ssl"]:
            detail = messages.DOCTOR_TLS_OK.format(
                version=facts["ssl_version"], cipher=facts["ssl_cipher"], sslmode=settings.sslmode
            )
            if not settings.local and settings.sslmode not in ("verify-ca", "verify-full"):
                return Check(
                    name,
                    WARN,
                    detail + messages.DOCTOR_TLS_UNCHECKED,
                    messages.DOCTOR_FIX_TLS,
                )
            return Check(name, OK, detail)
        if settings.local:
            return Check(name, OK, messages.DOCTOR_TLS_LOCAL.format(where=facts["where"]))
        return Check(
            name,
            FAIL,
            messages.DOCTOR_TLS_MISSING.format(where=facts["where"], sslmode=settings.sslmode),
            messages.DOCTOR_FIX_TLS,
        )

    # -- 4. connections -------------------------------------------------------------------

    def check_connections(self) -> Check:
        name = "connections"
        facts = self._need_server(name)
        if isinstance(facts, Check):
            return facts
        return connections_check(
            facts["connections"], facts["mine"], self.cp_max(), facts["max_connections"]
        )

    def cp_max(self) -> int:
        """Synapse's pool size: the effective database's cp_max, else the snippet's."""
        config = self.config()
        args: dict[str, Any] = {}
        if config is not None:
            database = synapse_config.effective_database(*config)
            if database.engine == "psycopg2":
                args = database.args
        try:
            return int(args.get("cp_max", DEFAULT_CP_MAX))
        except (TypeError, ValueError):
            return DEFAULT_CP_MAX

    # -- 5. Synapse answers ---------------------------------------------------------------

    def check_synapse(self) -> Check:
        name = "synapse"
        if not self.paths.homeserver.exists():
            return Check(
                name,
                WARN,
                messages.DOCTOR_SYNAPSE_MISSING.format(path=self.paths.homeserver),
                messages.DOCTOR_FIX_INSTALL_SYNAPSE,
            )
        config = self.config()
        if config is None:
            return self._skip(
                name, "Synapse's configuration cannot be read (see 'effective database')"
            )
        url = client_url(config[0])
        if url is None:
            return Check(
                name,
                WARN,
                messages.DOCTOR_NO_LISTENER.format(path=self.paths.homeserver),
                messages.DOCTOR_FIX_LISTENER,
            )
        answer, error = get_versions(url, self.timeout)
        if error is not None:
            return Check(
                name,
                FAIL,
                messages.DOCTOR_SYNAPSE_DOWN.format(url=url, reason=error),
                messages.DOCTOR_FIX_SYNAPSE,
            )
        return Check(name, OK, messages.DOCTOR_SYNAPSE_OK.format(url=url, versions=answer))

    # -- 6. backups ---------------------------------------------------------------------

    def check_backup_disk(self) -> Check:
        name = "backup disk"
        directory = self.paths.backups
        existing = directory
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        free = shutil.disk_usage(existing).free
        facts = self.facts()
        size = facts["size"] if facts else None
        need = size if size is not None else MIN_FREE_BYTES
        what = (
            messages.DOCTOR_DISK_DATABASE.format(size=synapse_config.human_size(size))
            if size is not None
            else messages.DOCTOR_DISK_DEFAULT.format(size=synapse_config.human_size(need))
        )
        detail = messages.DOCTOR_DISK.format(
            free=synapse_config.human_size(free), path=existing, what=what
        )
        if free < need:
            return Check(name, WARN, detail, messages.DOCTOR_FIX_DISK.format(path=existing))
        return Check(name, OK, detail)

    def check_last_backup(self, now: float | None = None) -> Check:
        name = "last backup"
        directory = self.paths.backups
        dumps = []
        if directory.is_dir() and not os.access(directory, os.R_OK | os.X_OK):
            # glob() would see nothing in it, and say "no backup yet"
            return Check(
                name,
                WARN,
                messages.DOCTOR_BACKUPS_UNREADABLE.format(path=directory),
                messages.DOCTOR_FIX_RUN_AS_ROOT,
            )
        try:
            for path in directory.glob(BACKUP_GLOB):
                try:
                    dumps.append((path.stat().st_mtime, path))
                except FileNotFoundError:
                    continue  # removed while we looked (the hook keeps the last N)
        except PermissionError:
            return Check(
                name,
                WARN,
                messages.DOCTOR_BACKUPS_UNREADABLE.format(path=directory),
                messages.DOCTOR_FIX_RUN_AS_ROOT,
            )
        if not dumps:
            # A fresh install has none, and nothing is wrong: the hook makes the first
            # before Synapse's first upgrade (the row would warn on every new server).
            return Check(name, OK, messages.DOCTOR_NO_BACKUP.format(path=directory))
        mtime, newest = max(dumps)
        days = ((now if now is not None else time.time()) - mtime) / 86400
        detail = messages.DOCTOR_BACKUP.format(path=newest, days=days, count=len(dumps))
        if days > BACKUP_MAX_AGE_DAYS:
            return Check(
                name,
                WARN,
                detail + messages.DOCTOR_BACKUP_OLD.format(limit=BACKUP_MAX_AGE_DAYS),
                messages.DOCTOR_FIX_BACKUP,
            )
        return Check(name, OK, detail)

    # -- all of them ------------------------------------------------------------------------

    def checks(self) -> list[Callable[[], Check]]:
        return [
            self.check_snippet,
            self.check_passfile,
            self.check_effective_database,
            self.check_postgresql,
            self.check_database,
            self.check_privileges,
            self.check_tls,
            self.check_connections,
            self.check_synapse,
            self.check_backup_disk,
            self.check_last_backup,
        ]

    def run(self) -> list[Check]:
        rows = []
        for check in self.checks():
            name = check.__name__.removeprefix("check_").replace("_", " ")
            try:
                rows.append(check())
            except Exception as err:  # noqa: BLE001 - one broken check must not hide the rest
                rows.append(
                    Check(
                        name,
                        FAIL,
                        messages.DOCTOR_CHECK_BROKE.format(reason=f"{type(err).__name__}: {err}"),
                        messages.DOCTOR_FIX_BUG,
                    )
                )
        return rows


def connections_check(used: int, mine: int, cp_max: int, limit: int) -> Check:
    """*used*: client connections on the server but this one; *mine*: Synapse's role's
    among them (they are part of its pool).  Warn when the others plus Synapse's whole
    pool (cp_max per Synapse process) take more than CONNECTIONS_LIMIT of max_connections."""
    others = used - mine
    needed = others + cp_max * SYNAPSE_PROCESSES
    detail = messages.DOCTOR_CONNECTIONS.format(
        used=used, mine=mine, limit=limit, cp_max=cp_max, needed=needed
    )
    if needed > CONNECTIONS_LIMIT * limit:
        percent = int(CONNECTIONS_LIMIT * 100)
        return Check(
            "connections",
            WARN,
            detail + messages.DOCTOR_CONNECTIONS_HIGH.format(percent=percent),
            messages.DOCTOR_FIX_CONNECTIONS.format(needed=math.ceil(needed / CONNECTIONS_LIMIT)),
        )
    return Check("connections", OK, detail)


# --- PostgreSQL, as Synapse's role ---------------------------------------------------------

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
       pg_database_size(current_database())
  FROM pg_database d
  JOIN pg_roles r ON r.rolname = current_user
  LEFT JOIN pg_stat_ssl s ON s.pid = pg_backend_pid()
 WHERE d.datname = current_database()
""".replace("{client}", CLIENT)


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


# --- Synapse's client API ---------------------------------------------------------------------


def client_url(config: dict[str, Any]) -> str | None:
    """The URL of /_matrix/client/versions on Synapse's client listener (see
    synapse_config.client_listener)."""
    base = synapse_config.client_listener(config)
    return base + CLIENT_PATH if base else None


def get_versions(url: str, timeout: float) -> tuple[str | None, str | None]:
    """(the newest client API version Synapse announces, None) or (None, why not).
    Through :class:`client.Client`: never a proxy, a certificate unchecked on loopback only."""
    import urllib.error  # the HTTP client's, loaded with it

    try:
        body = Client(url, timeout).call("GET", "")
    except HttpError as err:
        return None, f"HTTP {err.status}"
    except urllib.error.URLError as err:
        return None, str(getattr(err.reason, "strerror", None) or err.reason)
    except (OSError, ValueError) as err:
        return None, getattr(err, "strerror", None) or str(err) or type(err).__name__
    versions = body.get("versions") if isinstance(body, dict) else None
    if not isinstance(versions, list) or not versions:
        return None, "the answer has no 'versions'"
    return str(versions[-1]), None


# --- the command ----------------------------------------------------------------------------


def main(*, as_json: bool = False, paths: Paths | None = None) -> int:
    drop_libpq_environment()  # connect as Synapse does, not with the admin's PG* defaults
    rows = Doctor(paths).run()
    print(render_json(rows) if as_json else render_table(rows), end="", flush=True)
    return exit_code(rows)


def command(args: argparse.Namespace) -> int:
    """``matrix-synapse-setup doctor [--json]``."""
    return main(as_json=args.json)
