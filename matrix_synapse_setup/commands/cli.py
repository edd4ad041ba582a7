"""The admin command, /usr/sbin/matrix-synapse-setup.

It provisions (local cluster) or verifies (any server) Synapse's database with
the values of the installed snippet, or with values given as options.  The
password is never an option: it comes from the snippet, a file, standard
input, or a prompt.
"""

from __future__ import annotations

import argparse
import getpass
import secrets
import sys
from pathlib import Path
from typing import Any

from matrix_synapse_setup.core import messages
from matrix_synapse_setup.core.errors import SetupError, run
from matrix_synapse_setup.core.settings import SSLMODES, Settings, is_local
from matrix_synapse_setup.files import lock as locking
from matrix_synapse_setup.files import snippet
from matrix_synapse_setup.postgres.provision import DEFAULT_SOCKET_DIR, changed, provision, verify

FIELDS = ("host", "port", "dbname", "user", "sslmode", "sslrootcert")


def read_password(source: str) -> str:
    if source == "-":
        text = sys.stdin.read()
    else:
        try:
            text = Path(source).read_text(encoding="utf-8")
        except OSError as err:
            raise SetupError(
                messages.PASSWORD_FILE_UNREADABLE.format(path=source, reason=err.strerror)
            ) from None
    return text.rstrip("\n")


def settings_from(args: argparse.Namespace, *, generate: bool = False) -> Settings:
    found = snippet.read(Path(args.config)) or {}
    answers = {key: str(value) for key, value in found.items() if value is not None}
    answers.update({key: getattr(args, key) for key in FIELDS if getattr(args, key) is not None})
    if is_local(answers.get("host") or "localhost") and args.sslmode is None:
        answers["sslmode"] = found.get("sslmode") if found else None
    if args.password_file:
        answers["password"] = read_password(args.password_file)
    elif generate and not answers.get("password"):
        answers["password"] = secrets.token_urlsafe(32)
    elif not answers.get("password"):
        if not sys.stdin.isatty():
            raise SetupError(messages.PASSWORD_NEEDED.format(path=args.config))
        first = getpass.getpass("Password for the PostgreSQL role: ")
        if first != getpass.getpass("Repeat the password: "):
            raise SetupError(messages.PASSWORDS_DIFFER)
        answers["password"] = first
    return Settings.from_answers(**answers)


def cmd_provision(args: argparse.Namespace) -> int:
    with locking.exclusive(lambda line: print(line, file=sys.stderr, flush=True)):
        # Read inside the lock: a run that held it may have changed the snippet.
        settings = settings_from(args)
        steps = provision(settings, socket_dir=args.socket_dir)
        for step in steps:
            print(step)
        # A new password for the role that the installed snippet logs in with: its
        # password file follows, or Synapse's next connection would be refused.
        found = snippet.read(Path(args.config))
        if (
            Path(args.config) == snippet.SNIPPET
            and found is not None
            and found.get("passfile") == str(snippet.PASSFILE)
            and found.get("user") == settings.user
            and found.get("password") != settings.password
            and snippet.write_passfile(settings)
        ):
            print(messages.PASSFILE_UPDATED.format(path=snippet.PASSFILE))
            return 0
    print("changed" if changed(steps) else "unchanged: nothing to do")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    """Move a Synapse that runs on SQLite to PostgreSQL (what the postinst does when the
    answer is "migrate"), for an admin who chose "keep-sqlite" or wants to retry."""
    from matrix_synapse_setup.synapse import config as synapse_config
    from matrix_synapse_setup.synapse import porting as migration

    state = synapse_config.inspect()
    if state is None or state.sqlite is None:
        print(messages.NOTHING_TO_MIGRATE)
        return 0
    # Local: nothing uses the role while Synapse is on SQLite; without a password file it
    # gets a new random password (the snippet will hold it).
    local = is_local(args.host or "localhost")
    settings = settings_from(args, generate=local and not Path(args.config).exists())
    text = snippet.render(settings, password_set=snippet.new_password_stamp())
    source = synapse_config.database_source_once_written(snippet.SNIPPET, text)
    if source != snippet.SNIPPET:
        raise SetupError(messages.SNIPPET_OVERRIDDEN.format(source=source, path=snippet.SNIPPET))
    print(state.sqlite.describe())
    plan = [
        f"provision role {settings.user} and database {settings.dbname} on {settings.host}"
        if settings.local
        else f"verify database {settings.dbname} on {settings.host}",
        "port a snapshot with synapse_port_db while Synapse runs (if it runs)",
        "stop Synapse, port the rest from a second snapshot",
        f"compare row counts of {len(migration.KEY_TABLES)} key tables",
        f"write {snippet.SNIPPET}, start Synapse again if it ran",
        f"keep a copy of {state.sqlite.path} in {migration.BACKUP_DIR}",
    ]
    for number, line in enumerate(plan, 1):
        print(f"{'would ' if args.dry_run else ''}{number}. {line}")
    if args.dry_run:
        return 0
    with locking.exclusive(lambda line: print(line, file=sys.stderr, flush=True)):
        return _migrate(args, settings, state, text)


def _migrate(args: argparse.Namespace, settings: Settings, state: Any, text: str) -> int:
    from matrix_synapse_setup.synapse import porting as migration

    for step in provision(settings, socket_dir=args.socket_dir):
        print(step)
    owner = snippet.ownership()

    def switch() -> None:
        snippet.install(None, text, settings, owner)

    def show(line: str) -> None:
        if sys.stdout.isatty():
            print(f"\r{line:<78}", end="", flush=True)

    def say(line: str) -> None:
        print(("\n" if sys.stdout.isatty() else "") + line, flush=True)

    result = migration.migrate(state.sqlite, settings, state.config, switch, say=say, show=show)
    for step in result.steps:
        print(step)
    print(
        messages.MIGRATED.format(
            path=state.sqlite.path, backup=result.backup or "(none)", snippet=snippet.SNIPPET
        )
    )
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    for step in verify(settings_from(args), show_certificate=True):
        print(step)
    return 0


def cmd_admin(args: argparse.Namespace) -> int:
    """Create the first admin account (what the postinst does with admin-user and
    admin-password), or change its password: for a Synapse that was not running then."""
    from matrix_synapse_setup.dpkg import debconf as conversation
    from matrix_synapse_setup.postinst import admin

    answers = None
    user = args.user
    if user is None:
        answers = _debconf()
        user = str(answers.get(conversation.ADMIN_USER)).strip()
        if not user:
            raise SetupError(messages.ADMIN_NOTHING_PENDING)
    admin.validate_user(user)
    if args.password_file:
        password = read_password(args.password_file)
    elif answers is not None:
        password = str(answers.get(conversation.ADMIN_PASSWORD))
    else:
        password = ""
    if not password and not admin.created_here(user, admin.read_record()):
        if not sys.stdin.isatty():
            raise SetupError(messages.ADMIN_PASSWORD_MISSING.format(user=user))
        password = getpass.getpass(f"Password for the admin account {user}: ")
        if password != getpass.getpass("Repeat the password: "):
            raise SetupError(messages.PASSWORDS_DIFFER)
    admin.validate_password(password)

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    with locking.exclusive(say):
        outcome = admin.ensure(user, password, say=say)
    print(outcome.message)
    if answers is not None and outcome.applied and answers.get(conversation.ADMIN_PASSWORD):
        # Applied: the password leaves debconf's database.
        answers.set(conversation.ADMIN_PASSWORD, "")
        answers.set(conversation.ADMIN_PASSWORD_AGAIN, "")
    return 0 if outcome.applied else 1


def _debconf() -> Any:
    """debconf's database, read and written with debconf-communicate (root only)."""
    import debconf

    try:
        return debconf.DebconfCommunicator("matrix-synapse-setup")
    except OSError as err:
        raise SetupError(messages.DEBCONF_UNAVAILABLE.format(reason=err.strerror)) from None


def cmd_doctor(args: argparse.Namespace) -> int:
    from matrix_synapse_setup.commands import doctor

    return doctor.main(as_json=args.json)


# --- backup and restore (issue 14) ---


def cmd_backup(args: argparse.Namespace) -> int:
    from matrix_synapse_setup.commands import backup

    print(backup.backup_now(socket_dir=args.socket_dir))
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from matrix_synapse_setup.commands import backup

    plan = backup.plan_restore(Path(args.file).absolute(), socket_dir=args.socket_dir)
    for number, line in enumerate(plan.describe(), 1):
        print(f"{'would ' if args.dry_run else ''}{number}. {line}")
    if args.dry_run:
        return 0
    with locking.exclusive(lambda line: print(line, file=sys.stderr, flush=True)):
        for line in backup.restore(plan):
            print(line)
    return 0


def add_backup_commands(commands: Any) -> None:
    text = "dump Synapse's database now into /var/backups/matrix-synapse-setup"
    sub = commands.add_parser("backup", help=text, description=text[0].upper() + text[1:] + ".")
    sub.set_defaults(func=cmd_backup)
    sub.add_argument("--socket-dir", default=DEFAULT_SOCKET_DIR, help=argparse.SUPPRESS)
    text = "restore a dump into a new database and switch Synapse to it"
    sub = commands.add_parser("restore", help=text, description=text[0].upper() + text[1:] + ".")
    sub.set_defaults(func=cmd_restore)
    sub.add_argument("file", metavar="FILE", help="a dump made by the backup (synapse-*.dump)")
    sub.add_argument("--dry-run", action="store_true", help="print the plan only")
    sub.add_argument("--socket-dir", default=DEFAULT_SOCKET_DIR, help=argparse.SUPPRESS)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="matrix-synapse-setup",
        description="Provision and verify the PostgreSQL database of Matrix Synapse.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, func, text in (
        ("provision", cmd_provision, "create or update the role and database, then verify"),
        ("verify", cmd_verify, "only check that Synapse can use the database"),
        ("migrate", cmd_migrate, "move Synapse's data from SQLite to PostgreSQL, then switch"),
    ):
        sub = commands.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        sub.set_defaults(func=func)
        sub.add_argument(
            "--config",
            default=str(snippet.SNIPPET),
            help="snippet to read the current values from (default: %(default)s)",
        )
        sub.add_argument(
            "--host",
            help="'localhost', 127.0.0.1, ::1 or a socket directory (the local cluster, "
            "provisioned), or a remote server",
        )
        sub.add_argument("--port", help="server port")
        sub.add_argument("--dbname", help="database name")
        sub.add_argument("--user", help="role name")
        # Not argparse's choices=: its refusal is a usage screen; ours is one line.
        sub.add_argument("--sslmode", help="TLS mode for a remote server: " + ", ".join(SSLMODES))
        sub.add_argument("--sslrootcert", help="CA certificate file for verify-ca/verify-full")
        sub.add_argument(
            "--password-file",
            metavar="FILE",
            help="read the role's password from FILE ('-' for standard input)",
        )
        sub.add_argument("--socket-dir", default=DEFAULT_SOCKET_DIR, help=argparse.SUPPRESS)
        if name == "migrate":
            sub.add_argument("--dry-run", action="store_true", help="print the plan only")
    sub = commands.add_parser(
        "admin",
        help="create the first admin account, or change its password",
        description="Create the server admin account that debconf's admin-user names (or "
        "--user), or change its password, through Synapse's shared-secret registration "
        "and admin APIs.",
    )
    sub.set_defaults(func=cmd_admin)
    sub.add_argument("action", choices=("create",), help="what to do")
    sub.add_argument("--user", help="local part of the account's Matrix ID (default: admin-user)")
    sub.add_argument(
        "--password-file",
        metavar="FILE",
        help="read the account's password from FILE ('-' for standard input)",
    )
    doctor = commands.add_parser(
        "doctor",
        help="check the whole setup (read-only): exit 0 ok, 1 warnings, 2 failures",
        description="Check the snippet, Synapse's effective database, PostgreSQL, Synapse "
        "and the backups; change nothing. Exit 0: all ok, 1: warnings, 2: failures.",
    )
    doctor.set_defaults(func=cmd_doctor)
    doctor.add_argument("--json", action="store_true", help="print the checks as JSON")
    add_backup_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)

    def _main() -> int:
        if args.command is None:
            parser.print_help(sys.stderr)
            return 2
        return args.func(args)

    return run(_main)
