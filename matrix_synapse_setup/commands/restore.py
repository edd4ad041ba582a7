"""``matrix-synapse-setup restore``: a dump of the backup into a new database, and Synapse
switched to it.

Local cluster only: a new database (UTF8, C, C, from template0, owned by Synapse's role),
``pg_restore`` of the dump into it, checked as Synapse's role; then the snippet names it
(ucf, as the package writes it), debconf's ``db-name`` follows, and Synapse restarts if it
ran.  The old database stays.

A dump made before one-time keys were left out holds the rows of
``e2e_one_time_keys_json``: the new database's table is emptied before Synapse is switched
to it, so that no key handed out since the dump is handed out again.

``--with-config`` also puts back the signing key and the configuration from the archive
next to the dump (commands/backup.py), after a confirmation, because the key is the
server's identity to other servers.  Each current file it replaces is kept beside it as
``FILE.before-restore-TIME``.  Our snippet and its password file are left out: the restore
of the database writes the snippet, and the role's password lives in the cluster, not in
the dump, so the current password file is the right one.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import subprocess
import sys
from pathlib import Path

from matrix_synapse_setup.commands.backup import (
    SKIP_ENV,
    archive_of,
    our_database,
    parse_dump_name,
    stamp,
)
from matrix_synapse_setup.core import messages
from matrix_synapse_setup.core.errors import SetupError
from matrix_synapse_setup.core.output import note
from matrix_synapse_setup.core.paths import (
    PASSFILE,
    POSTGRESQL_SOCKET_DIR,
    SNIPPET,
    UCF_BACKUP_SUFFIXES,
)
from matrix_synapse_setup.core.settings import Settings, validate_name
from matrix_synapse_setup.dpkg import debconf, ucf
from matrix_synapse_setup.dpkg.packages import compare_versions, installed_synapse
from matrix_synapse_setup.files import archive, atomic, snippet
from matrix_synapse_setup.files import lock as locking
from matrix_synapse_setup.postgres.dump import (
    ONE_TIME_KEYS,
    create_database_answer,
    dump_holds_one_time_keys,
    empty_one_time_keys,
    last_line,
    pg_restore_command,
)
from matrix_synapse_setup.postgres.provision import Superuser, postgres_user, verify
from matrix_synapse_setup.synapse import config as synapse_config
from matrix_synapse_setup.synapse import service as services


def restore_name(dbname: str, now: datetime.datetime | None = None) -> str:
    """OLD_restored_YYYYMMDDtHHMMSS, a valid name (at most 63 characters)."""
    suffix = "_restored_" + stamp(now).lower().rstrip("z")
    return validate_name("database", dbname[: 63 - len(suffix)] + suffix)


def ours(confd: Path) -> frozenset[Path]:
    """The files of ours in *confd* that the restore of the database writes (the snippet,
    its password file, ucf's copies of the snippet): never put back from an archive."""
    names = [SNIPPET.name, PASSFILE.name, *(SNIPPET.name + end for end in UCF_BACKUP_SUFFIXES)]
    return frozenset(confd / name for name in names)


@dataclasses.dataclass
class ConfigPlan:
    """What ``--with-config`` puts back from *archive*."""

    archive: Path
    server_name: str | None  # the archive's, to be typed as the confirmation
    signing_key: Path | None  # the archive's signing key file, as its configuration names it
    changes: list[archive.Change]
    left: list[Path]  # files of conf.d now that the archive does not have: left as they are

    def describe(self) -> list[str]:
        lines = []
        for change in self.changes:
            path = change.member.path
            what = messages.RESTORE_CONFIG_KEY if path == self.signing_key else ""
            if change.action == "replace":
                lines.append(messages.RESTORE_CONFIG_REPLACE.format(path=path, kept=change.kept))
            elif change.action == "create":
                lines.append(messages.RESTORE_CONFIG_CREATE.format(path=path))
            elif change.action == "mkdir":
                lines.append(messages.RESTORE_CONFIG_MKDIR.format(path=path))
            else:
                lines.append(messages.RESTORE_CONFIG_SAME.format(path=path))
            lines[-1] += what
        lines.append(messages.RESTORE_CONFIG_OURS.format(snippet=SNIPPET, passfile=PASSFILE))
        lines += [messages.RESTORE_CONFIG_LEFT.format(path=path) for path in self.left]
        return lines


@dataclasses.dataclass
class RestorePlan:
    dump: Path
    version: str
    settings: Settings
    new_dbname: str
    socket_dir: str
    one_time_keys: bool = False  # the dump holds rows of e2e_one_time_keys_json
    archive: Path | None = None  # the archive beside the dump, when there is one
    config: ConfigPlan | None = None  # with --with-config

    def describe(self) -> list[str]:
        lines = [
            f"create database {self.new_dbname} (UTF8, C, C, owner {self.settings.user})",
            f"pg_restore {self.dump} (Synapse {self.version}) into it",
        ]
        if self.one_time_keys:
            lines.append(messages.RESTORE_PLAN_ONE_TIME_KEYS.format(table=ONE_TIME_KEYS))
        if self.config is not None:
            lines.append(
                messages.RESTORE_PLAN_CONFIG.format(
                    archive=self.config.archive, server=self.config.server_name or "?"
                )
            )
            lines += self.config.describe()
        lines += [
            f"switch {SNIPPET} from {self.settings.dbname} to {self.new_dbname} (ucf),"
            f" set debconf's {debconf.NAME}",
            "restart Synapse if it runs",
            f"keep database {self.settings.dbname}",
        ]
        return lines


def plan_config(
    archive_path: Path,
    when: str,
    *,
    homeserver: Path = synapse_config.HOMESERVER,
    confd: Path = synapse_config.CONFD,
) -> ConfigPlan:
    """What putting back the archive's files would do; reads only."""
    members = archive.read(archive_path)
    skip = ours(confd)
    texts = {m.path: m.data.decode("utf-8", "replace") for m in members if not m.is_dir}
    files = [homeserver] if homeserver in texts else []
    files += sorted(p for p in texts if p.parent == confd and p.name.endswith(".yaml"))
    merged, _ = synapse_config.load(files, texts)
    key, _ = synapse_config.identity_paths(merged, files)
    wanted = [m for m in members if m.path not in skip]
    archived = {m.path for m in members}
    try:
        now = sorted(p for p in confd.iterdir() if p not in archived and p not in skip)
    except FileNotFoundError:
        now = []
    left = [p for p in now if archive.KEPT_INFIX not in p.name]
    return ConfigPlan(
        archive_path,
        synapse_config.server_name(merged),
        key,
        archive.changes(wanted, when),
        left,
    )


def plan_restore(
    dump_file: Path,
    *,
    socket_dir: str = POSTGRESQL_SOCKET_DIR,
    now: datetime.datetime | None = None,
    with_config: bool = False,
) -> RestorePlan:
    """Check everything a restore needs; changes nothing."""
    now = now or datetime.datetime.now(datetime.UTC)  # one time for every name made
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
    beside = archive_of(dump_file)
    found_archive = beside if beside is not None and beside.is_file() else None
    config = None
    if with_config:
        if found_archive is None:
            raise SetupError(messages.RESTORE_NO_ARCHIVE.format(archive=beside, dump=dump_file))
        config = plan_config(found_archive, stamp(now))
    return RestorePlan(
        dump_file,
        version,
        settings,
        restore_name(settings.dbname, now),
        settings.socket_dir or socket_dir,
        dump_holds_one_time_keys(dump_file),
        found_archive,
        config,
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
    # Whatever the dump's table of contents said: the rows that arrived are what counts.
    removed = empty_one_time_keys(new) or 0
    if removed or plan.one_time_keys:
        lines.append(messages.RESTORE_ONE_TIME_KEYS.format(table=ONE_TIME_KEYS, count=removed))
    return lines + [str(step) for step in verify(new)]


def put_back_config(config: ConfigPlan) -> list[str]:
    """The archive's files in place, each current one kept beside it."""
    lines = []
    for change in archive.put_back(config.changes):
        path = change.member.path
        if change.action == "replace":
            lines.append(messages.RESTORE_CONFIG_REPLACED.format(path=path, kept=change.kept))
        elif change.action == "create":
            lines.append(messages.RESTORE_CONFIG_CREATED.format(path=path))
        else:
            lines.append(messages.RESTORE_CONFIG_MADE.format(path=path))
    return lines or [messages.RESTORE_CONFIG_NOTHING.format(archive=config.archive)]


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
    """Carry out *plan*; the lines to print.  The files go back before the switch, so that
    Synapse's restart reads them."""
    lines = restore_database(plan)
    if plan.config is not None:
        lines += put_back_config(plan.config)
    return lines + switch(plan)


def confirm(config: ConfigPlan, *, yes: bool) -> None:
    """Go on only when the admin confirmed: --yes, or the server name (else "yes") typed on
    a terminal.  A refusal raises before anything changed."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise SetupError(messages.RESTORE_CONFIRM_NEEDED)
    expected = config.server_name or "yes"
    print(
        messages.RESTORE_CONFIRM_PROMPT.format(archive=config.archive, expected=expected),
        end="",
        file=sys.stderr,
        flush=True,
    )
    answer = sys.stdin.readline().strip()
    if answer != expected:
        raise SetupError(messages.RESTORE_NOT_CONFIRMED.format(expected=expected))


def command(args: argparse.Namespace) -> int:
    """``matrix-synapse-setup restore FILE [--dry-run] [--with-config [--yes]]``."""
    plan = plan_restore(
        Path(args.file).absolute(), socket_dir=args.socket_dir, with_config=args.with_config
    )
    for number, line in enumerate(plan.describe(), 1):
        print(f"{'would ' if args.dry_run else ''}{number}. {line}")
    if plan.archive is not None and plan.config is None:
        note(messages.RESTORE_ARCHIVE_NOTE.format(archive=plan.archive, dump=plan.dump))
    if args.dry_run:
        return 0
    if plan.config is not None:
        confirm(plan.config, yes=args.yes)
    with locking.exclusive(note):
        for line in restore(plan):
            print(line)
    return 0
