"""A local cluster moved to a newer PostgreSQL major with postgresql-common's own tools
(pg_upgradecluster, pg_ctlcluster, pg_conftool), and what deciding that needs: the
installed and supported majors, the free space, the collation versions.

The decisions are pure functions (:func:`plan_upgrade`, :func:`space_problems`,
:func:`count_differences`, :func:`collation_mismatches`); the commands layer carries
them out (commands/upgrade_postgresql.py).  What runs as ``postgres`` is
:func:`cluster_answer`, the handler of the privilege-separated child
(provision.Superuser).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path
from typing import Any, NamedTuple

from matrix_synapse_setup.core import messages
from matrix_synapse_setup.core.errors import SetupError
from matrix_synapse_setup.core.paths import SYSTEM_PATH
from matrix_synapse_setup.core.settings import Settings
from matrix_synapse_setup.files import space
from matrix_synapse_setup.files.atomic import Ownership, write_atomic
from matrix_synapse_setup.files.space import Need
from matrix_synapse_setup.postgres import tuning
from matrix_synapse_setup.postgres.queries import import_psycopg
from matrix_synapse_setup.postgres.superuser import error_answer

PG_LIB = Path("/usr/lib/postgresql")
DATA_ROOT = Path("/var/lib/postgresql")
SUPPORTED_VERSIONS = Path("/usr/share/postgresql-common/supported-versions")
# Beyond the databases' size, for the new cluster's WAL, catalogs and indexes built
# again: a quarter of a GiB, and a tenth of the data.
DATA_MARGIN = 256 * 1024 * 1024
MARGIN_SHARE = 10


def major_key(version: str) -> tuple[int, ...]:
    """A PostgreSQL major ("9.6", "15") as a sortable key."""
    return tuple(int(part) if part.isdigit() else -1 for part in version.split("."))


def installed_majors(lib: Path = PG_LIB) -> list[str]:
    """The majors whose server is installed (/usr/lib/postgresql/V/bin/postgres), oldest
    first."""
    found = [path.parent.parent.name for path in lib.glob("*/bin/postgres")]
    return sorted(found, key=major_key)


def parse_supported(text: str) -> list[int]:
    """The majors in supported-versions' output (one a line)."""
    majors = []
    for line in text.split():
        with contextlib.suppress(ValueError):
            majors.append(int(line.split(".")[0]))
    return sorted(majors)


def supported_majors(script: Path = SUPPORTED_VERSIONS) -> list[int] | None:
    """The majors this release supports, as postgresql-common says; None when it cannot
    say (not installed)."""
    try:
        proc = subprocess.run(
            [str(script)],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
            env={"PATH": SYSTEM_PATH, "HOME": "/nonexistent"},
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    majors = parse_supported(proc.stdout) if proc.returncode == 0 else []
    return majors or None


def obsolete(major: int, supported: list[int]) -> bool:
    """Older than every major the release supports."""
    return bool(supported) and major < min(supported)


# --- free space ------------------------------------------------------------------------


def space_problems(needs: list[Need]) -> list[Need]:
    """The needs that do not fit (space.shortages), one per filesystem: the first need
    on it stands for it, with the others' names joined and their sum."""
    return [
        short.needs[0]._replace(what=" and ".join(n.what for n in short.needs), need=short.need)
        for short in space.shortages(needs)
    ]


def data_need(cluster_size: int) -> int:
    """Room the dump-and-restore method needs for the new cluster: its databases again,
    and a margin."""
    return cluster_size + DATA_MARGIN + cluster_size // MARGIN_SHARE


# --- the plan -----------------------------------------------------------------------


class Facts(NamedTuple):
    """What the command measured (read-only)."""

    settings: Settings
    cluster: tuning.Cluster
    running: bool
    installed: tuple[str, ...]  # majors, oldest first
    target_exists: bool = False  # NEW/NAME is a cluster already
    server_version: int = 0  # server_version_num
    cluster_size: int = 0  # every database of the cluster
    database_size: int = 0  # Synapse's (the backup's)
    needs: tuple[Need, ...] = ()


class Plan(NamedTuple):
    facts: Facts
    new_version: str

    @property
    def old(self) -> tuning.Cluster:
        return self.facts.cluster

    @property
    def new_datadir(self) -> Path:
        return DATA_ROOT / self.new_version / self.old.name

    def drop_line(self) -> str:
        return f"pg_dropcluster {self.old.version} {self.old.name}"

    def describe(self, size: Any) -> list[str]:
        old, facts = self.old, self.facts
        space = "; ".join(
            messages.UPGRADE_PLAN_SPACE.format(
                what=n.what, where=n.path, need=size(n.need), free=size(n.free)
            )
            for n in facts.needs
        )
        return [
            messages.UPGRADE_PLAN_CHECK.format(space=space),
            messages.UPGRADE_PLAN_BACKUP.format(
                dbname=facts.settings.dbname, size=size(facts.database_size)
            ),
            messages.UPGRADE_PLAN_STOP,
            messages.UPGRADE_PLAN_RUN.format(
                old=old.label,
                new=f"{self.new_version}/{old.name}",
                version=old.version,
                name=old.name,
                datadir=self.new_datadir,
                size=size(facts.cluster_size),
            ),
            messages.UPGRADE_PLAN_COLLATION,
            messages.UPGRADE_PLAN_COUNTS,
            messages.UPGRADE_PLAN_START,
            messages.UPGRADE_PLAN_KEEP.format(old=old.label, drop=self.drop_line()),
        ]


def newest(installed: tuple[str, ...] | list[str]) -> str | None:
    return max(installed, key=major_key) if installed else None


def plan_upgrade(facts: Facts) -> Plan | None:
    """The upgrade these facts call for; None when the cluster is already on the newest
    installed major.  Raises SetupError for what is refused (nothing has changed)."""
    old = facts.cluster
    target = newest(facts.installed)
    if target is None or major_key(target) <= major_key(old.version):
        return None
    if facts.target_exists:
        raise SetupError(
            messages.UPGRADE_TARGET_EXISTS.format(
                new=f"{target}/{old.name}", version=target, name=old.name
            )
        )
    if not facts.running:
        raise SetupError(
            messages.UPGRADE_NOT_RUNNING.format(
                cluster=old.label, version=old.version, name=old.name
            )
        )
    plan = Plan(facts, target)
    return plan


def refuse_space(problems: list[Need], size: Any) -> None:
    if problems:
        raise SetupError(
            "\n".join(
                messages.UPGRADE_NO_SPACE.format(
                    where=n.path, free=size(n.free), need=size(n.need), what=n.what
                )
                for n in problems
            )
        )


# --- row counts, collations ---------------------------------------------------------------


def count_differences(before: dict[str, int], after: dict[str, int]) -> list[str]:
    """The key tables whose row count changed (a table missing afterwards counts)."""
    return [
        f"{table}: {count} before, {after.get(table, -1)} after"
        for table, count in before.items()
        if after.get(table, -1) != count
    ]


# PostgreSQL 15 and newer record the collation library's version of each database;
# a database made with another version than the library now has may sort differently
# (its indexes on text may need a REINDEX).  C and POSIX have no version (NULL).
COLLATIONS_QUERY = (
    "SELECT datname, datcollversion, pg_database_collation_actual_version(oid)"
    " FROM pg_database ORDER BY datname"
)
COLLATIONS_MIN_VERSION = 150000


def collation_mismatches(rows: list[tuple[Any, Any, Any]]) -> list[tuple[str, str, str]]:
    """(database, recorded, actual) where both are known and differ."""
    return [
        (str(name), str(recorded), str(actual))
        for name, recorded, actual in rows
        if recorded is not None and actual is not None and recorded != actual
    ]


def quote_identifier(name: str) -> str:
    """*name* as an SQL identifier in a line an admin types (doctor's fix; our own
    statements compose with psycopg.sql)."""
    return '"' + name.replace('"', '""') + '"'


def refresh_statement(dbname: str) -> str:
    """The line an admin runs (doctor shows it)."""
    return f"ALTER DATABASE {quote_identifier(dbname)} REFRESH COLLATION VERSION"


# --- as postgres, in the superuser child --------------------------------------------


def _connect(request: dict[str, Any]) -> Any:
    psycopg = import_psycopg()
    return psycopg.connect(
        host=request["socket_dir"],
        port=request["port"],
        dbname="postgres",
        user="postgres",
        connect_timeout=10,
        autocommit=True,
    )


def cluster_answer(request: dict[str, Any]) -> dict[str, Any]:
    """In the postgres child: ``facts`` (the server's version, the size of all its
    databases) or ``refresh`` (ALTER DATABASE ... REFRESH COLLATION VERSION where the
    recorded version differs; the names refreshed)."""
    try:
        with _connect(request) as conn:
            version = conn.info.server_version
            if request["what"] == "facts":
                (size,) = conn.execute(
                    "SELECT coalesce(sum(pg_database_size(oid)), 0) FROM pg_database"
                ).fetchone()
                return {"version": version, "size": int(size)}
            if request["what"] == "refresh":
                if version < COLLATIONS_MIN_VERSION:
                    return {"refreshed": []}
                found = collation_mismatches(conn.execute(COLLATIONS_QUERY).fetchall())
                sql = import_psycopg().sql
                for name, _, _ in found:
                    conn.execute(
                        sql.SQL("ALTER DATABASE {} REFRESH COLLATION VERSION").format(
                            sql.Identifier(name)
                        )
                    )
                return {"refreshed": [name for name, _, _ in found]}
            raise ValueError(f"unknown request {request['what']!r}")
    except Exception as err:  # noqa: BLE001 - answered to the parent
        return error_answer(err)


# --- postgresql-common's tools, as root ----------------------------------------------


# postgresql-common's own variable for another configuration root (its test suite and
# ours set it); every tool of it reads it.
CONF_ROOT_ENV = "PG_CLUSTER_CONF_ROOT"


def tool_env(**extra: str) -> dict[str, str]:
    """No variable of the admin's shell but postgresql-common's configuration root."""
    env = {"PATH": SYSTEM_PATH, **extra}
    if os.environ.get(CONF_ROOT_ENV):
        env[CONF_ROOT_ENV] = os.environ[CONF_ROOT_ENV]
    return env


def _tool(argv: list[str], what: str) -> None:
    env = tool_env(LC_ALL="C.UTF-8")
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, check=False, env=env, stdin=subprocess.DEVNULL
        )
    except OSError as err:
        raise SetupError(messages.UPGRADE_TOOL_FAILED.format(what=what, reason=err)) from None
    if proc.returncode != 0:
        lines = [line for line in (proc.stderr + proc.stdout).splitlines() if line.strip()]
        reason = lines[-1].strip() if lines else f"exit {proc.returncode}"
        raise SetupError(messages.UPGRADE_TOOL_FAILED.format(what=what, reason=reason))


def pg_ctlcluster(version: str, name: str, action: str) -> None:
    _tool(["pg_ctlcluster", version, name, action], f"pg_ctlcluster {version} {name} {action}")


def set_port(version: str, name: str, port: int) -> None:
    """The cluster's port in its postgresql.conf (what pg_upgradecluster changes)."""
    _tool(
        ["pg_conftool", version, name, "postgresql.conf", "set", "port", str(port)],
        f"pg_conftool {version} {name} set port {port}",
    )


# What pg_upgradecluster writes into the old cluster's start.conf.
MANUAL_START = (
    "# This cluster was upgraded to a newer major version, which failed: it is kept for\n"
    "# you to look at or drop (pg_dropcluster), and is not started automatically.\n\nmanual\n"
)


def read_start_conf(confdir: Path) -> str | None:
    try:
        return (confdir / "start.conf").read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def write_start_conf(confdir: Path, text: str | None) -> None:
    """start.conf as it was (None: it did not exist), with the cluster's ownership."""
    path = confdir / "start.conf"
    if text is None:
        path.unlink(missing_ok=True)
        return
    st = (confdir / "postgresql.conf").stat()
    write_atomic(path, text, Ownership(st.st_uid, st.st_gid, 0o644), crash_point=None)


def pg_upgradecluster(version: str, name: str, log: Path) -> int:
    """``pg_upgradecluster VERSION NAME`` (the default method, dump and restore, to the
    newest installed major), its output appended to *log*; its exit code."""
    env = tool_env(LANG="C.UTF-8")
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "ab") as out:
        try:
            proc = subprocess.run(
                ["pg_upgradecluster", version, name],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                check=False,
            )
        except OSError as err:
            out.write(f"{err}\n".encode())
            return 127
    return proc.returncode


def log_tail(log: Path, lines: int = 1) -> str:
    try:
        text = log.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "no log"
    found = [line.strip() for line in text.splitlines() if line.strip()]
    return " / ".join(found[-lines:]) if found else "no output"


def daemon_reload() -> None:
    """Let systemd's generator see a start.conf we changed (pg_upgradecluster does the
    same after it sets the old cluster to manual)."""
    if Path("/run/systemd/system").is_dir():
        with contextlib.suppress(OSError):
            subprocess.run(["systemctl", "daemon-reload"], check=False, stdin=subprocess.DEVNULL)
