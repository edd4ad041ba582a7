"""``matrix-synapse-setup restore``: a dump of the backup into a new database, and Synapse
switched to it.

Local cluster only: a new database (UTF8, C, C, from template0, owned by Synapse's role),
``pg_restore`` of the dump into it, checked as Synapse's role; then the snippet names it
(ucf, as the package writes it), debconf's ``db-name`` follows, and Synapse restarts if it
ran.  The old database stays.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import subprocess
from pathlib import Path

from matrix_synapse_setup.commands.backup import (
    SKIP_ENV,
    our_database,
    parse_dump_name,
    stamp,
)
from matrix_synapse_setup.core import messages
from matrix_synapse_setup.core.errors import SetupError
from matrix_synapse_setup.core.output import note
from matrix_synapse_setup.core.paths import POSTGRESQL_SOCKET_DIR, SNIPPET
from matrix_synapse_setup.core.settings import Settings, validate_name
from matrix_synapse_setup.dpkg import debconf, ucf
from matrix_synapse_setup.dpkg.packages import compare_versions, installed_synapse
from matrix_synapse_setup.files import atomic, snippet
from matrix_synapse_setup.files import lock as locking
from matrix_synapse_setup.postgres.dump import create_database_answer, last_line, pg_restore_command
from matrix_synapse_setup.postgres.provision import Superuser, postgres_user, verify
from matrix_synapse_setup.synapse import service as services


def restore_name(dbname: str, now: datetime.datetime | None = None) -> str:
    """OLD_restored_YYYYMMDDtHHMMSS, a valid name (at most 63 characters)."""
    suffix = "_restored_" + stamp(now).lower().rstrip("z")
    return validate_name("database", dbname[: 63 - len(suffix)] + suffix)


@dataclasses.dataclass
class RestorePlan:
    dump: Path
    version: str
    settings: Settings
    new_dbname: str
    socket_dir: str

    def describe(self) -> list[str]:
        return [
            f"create database {self.new_dbname} (UTF8, C, C, owner {self.settings.user})",
            f"pg_restore {self.dump} (Synapse {self.version}) into it",
            f"switch {SNIPPET} from {self.settings.dbname} to {self.new_dbname} (ucf),"
            f" set debconf's {debconf.NAME}",
            "restart Synapse if it runs",
            f"keep database {self.settings.dbname}",
        ]


def plan_restore(
    dump_file: Path,
    *,
    socket_dir: str = POSTGRESQL_SOCKET_DIR,
    now: datetime.datetime | None = None,
) -> RestorePlan:
    """Check everything a restore needs; changes nothing."""
    parsed = parse_dump_name(dump_file.name)
    if parsed is None:
        raise SetupError(messages.RESTORE_BAD_NAME.format(path=dump_file))
    if not dump_file.is_file():
        raise SetupError(messages.RESTORE_NO_FILE.format(path=dump_file))
    version = parsed[0]
    found = installed_synapse()
    if found is None:
        raise SetupError(messages.BACKUP_NO_SYNAPSE)
    if compare_versions(version, "gt", found[1]):
        raise SetupError(
            messages.RESTORE_NEWER.format(
                path=dump_file.name, version=version, package=found[0], installed=found[1]
            )
        )
    settings = our_database()
    if settings is None:
        raise SetupError(messages.BACKUP_NOT_OURS.format(path=SNIPPET))
    if not settings.local:
        raise SetupError(
            messages.RESTORE_REMOTE.format(host=settings.host, path=dump_file, user=settings.user)
        )
    return RestorePlan(
        dump_file,
        version,
        settings,
        restore_name(settings.dbname, now),
        settings.socket_dir or socket_dir,
    )


def pg_restore(plan: RestorePlan) -> None:
    """pg_restore as postgres, the objects owned by Synapse's role (SET ROLE); the file
    (0600 root) comes on stdin from this root process."""
    cmd, env, kwargs = pg_restore_command(
        plan.socket_dir, plan.settings.port, plan.new_dbname, plan.settings.user
    )
    with plan.dump.open("rb") as source:
        try:
            proc = subprocess.run(
                cmd,
                stdin=source,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                check=False,
                env=env,
                **kwargs,
            )
        except FileNotFoundError:
            raise SetupError(messages.BACKUP_NO_PG_DUMP.format(env=SKIP_ENV)) from None
    if proc.returncode != 0:
        raise SetupError(
            messages.RESTORE_FAILED.format(
                path=plan.dump,
                dbname=plan.new_dbname,
                reason=last_line(proc.stderr.decode("utf-8", "replace")),
            )
        )


def restore_database(plan: RestorePlan) -> list[str]:
    """A new database from the dump, checked as Synapse's role; changes no file."""
    Superuser.start(postgres_user(), create_database_answer).ask(
        {
            "socket_dir": plan.socket_dir,
            "port": plan.settings.port,
            "dbname": plan.new_dbname,
            "owner": plan.settings.user,
        }
    )
    lines = [f"database {plan.new_dbname}: created"]
    pg_restore(plan)
    lines.append(f"pg_restore {plan.dump.name}: ok")
    new = dataclasses.replace(plan.settings, dbname=plan.new_dbname)
    return lines + [str(step) for step in verify(new)]


def switch(plan: RestorePlan) -> list[str]:
    """The snippet (ucf) and debconf name the new database; Synapse restarts if it ran."""
    new = dataclasses.replace(plan.settings, dbname=plan.new_dbname)
    current = snippet.read() or {}
    text = snippet.render(new, password_set=current.get("password_set"))
    running = services.synapse_running()
    ucf.install(None, text, new, atomic.ownership())
    after = snippet.read() or {}
    if after.get("dbname") != plan.new_dbname:
        raise SetupError(messages.RESTORE_SNIPPET_KEPT.format(path=SNIPPET, dbname=plan.new_dbname))
    lines = [f"{SNIPPET}: now names {plan.new_dbname}"]
    if debconf.set_debconf_db_name(plan.new_dbname):
        lines.append(f"debconf {debconf.NAME}: {plan.new_dbname}")
    else:
        lines.append(messages.RESTORE_DEBCONF.format(dbname=plan.new_dbname))
    if running:
        services.restart_synapse("restart")
        lines.append("Synapse: restarted")
    lines.append(messages.RESTORED.format(old=plan.settings.dbname, new=plan.new_dbname))
    return lines


def restore(plan: RestorePlan) -> list[str]:
    """Carry out *plan*; the lines to print."""
    return restore_database(plan) + switch(plan)


def command(args: argparse.Namespace) -> int:
    """``matrix-synapse-setup restore FILE [--dry-run]``."""
    plan = plan_restore(Path(args.file).absolute(), socket_dir=args.socket_dir)
    for number, line in enumerate(plan.describe(), 1):
        print(f"{'would ' if args.dry_run else ''}{number}. {line}")
    if args.dry_run:
        return 0
    with locking.exclusive(note):
        for line in restore(plan):
            print(line)
    return 0
