"""The admin command, /usr/sbin/matrix-synapse-setup: its options, and which module runs
each command (one module per command in this package).

It provisions (local cluster) or verifies (any server) Synapse's database with
the values of the installed snippet, or with values given as options.  The
password is never an option: it comes from the snippet, a file, standard
input, or a prompt.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from matrix_synapse_setup.commands import (
    admin,
    backup,
    dendrite,
    doctor,
    migrate,
    plan,
    provision,
    restore,
    upgrade_postgresql,
    verify,
)
from matrix_synapse_setup.core.errors import run
from matrix_synapse_setup.core.paths import BACKUP_DIR, PACKAGE, POSTGRESQL_SOCKET_DIR, SNIPPET
from matrix_synapse_setup.core.settings import SSLMODES


def add_backup_commands(commands: Any) -> None:
    text = f"dump Synapse's database now into {BACKUP_DIR}"
    sub = commands.add_parser("backup", help=text, description=text[0].upper() + text[1:] + ".")
    sub.set_defaults(func=backup.command)
    sub.add_argument("--socket-dir", default=POSTGRESQL_SOCKET_DIR, help=argparse.SUPPRESS)
    text = "restore a dump into a new database and switch Synapse to it"
    sub = commands.add_parser("restore", help=text, description=text[0].upper() + text[1:] + ".")
    sub.set_defaults(func=restore.command)
    sub.add_argument("file", metavar="FILE", help="a dump made by the backup (synapse-*.dump)")
    sub.add_argument("--dry-run", action="store_true", help="print the plan only")
    sub.add_argument(
        "--with-config",
        action="store_true",
        help="also put back the signing key and configuration from the archive beside FILE "
        "(asks for a confirmation; the current files are kept)",
    )
    sub.add_argument(
        "--yes",
        action="store_true",
        help="with --with-config: confirmed, do not ask (needed without a terminal)",
    )
    sub.add_argument("--socket-dir", default=POSTGRESQL_SOCKET_DIR, help=argparse.SUPPRESS)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PACKAGE,
        description="Provision and verify the PostgreSQL database of Matrix Synapse.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, func, text in (
        ("provision", provision.command, "create or update the role and database, then verify"),
        ("verify", verify.command, "only check that Synapse can use the database"),
        ("migrate", migrate.command, "move Synapse's data from SQLite to PostgreSQL, then switch"),
    ):
        sub = commands.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        sub.set_defaults(func=func)
        sub.add_argument(
            "--config",
            default=str(SNIPPET),
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
        sub.add_argument("--socket-dir", default=POSTGRESQL_SOCKET_DIR, help=argparse.SUPPRESS)
        if name == "migrate":
            sub.add_argument("--dry-run", action="store_true", help="print the plan only")
    sub = commands.add_parser(
        "admin",
        help="create the first admin account, or change its password",
        description="Create the server admin account that debconf's admin-user names (or "
        "--user), or change its password, through Synapse's shared-secret registration "
        "and admin APIs.",
    )
    sub.set_defaults(func=admin.command)
    sub.add_argument("action", choices=("create",), help="what to do")
    sub.add_argument("--user", help="local part of the account's Matrix ID (default: admin-user)")
    sub.add_argument(
        "--password-file",
        metavar="FILE",
        help="read the account's password from FILE ('-' for standard input)",
    )
    sub = commands.add_parser(
        "plan",
        help="print what dpkg-reconfigure would do with the current answers; change nothing",
        description="Print, one step per line, what 'dpkg-reconfigure matrix-synapse-setup' "
        "would do with the answers in debconf now, and change nothing: no file, no database, "
        "no service. Needs root, like dpkg-reconfigure.",
    )
    sub.set_defaults(func=plan.command)
    sub = commands.add_parser(
        "doctor",
        help="check the whole setup (read-only): exit 0 ok, 1 warnings, 2 failures",
        description="Check the snippet, Synapse's effective database, PostgreSQL, Synapse "
        "and the backups; change nothing. Exit 0: all ok, 1: warnings, 2: failures.",
    )
    sub.set_defaults(func=doctor.command)
    sub.add_argument("--json", action="store_true", help="print the checks as JSON")
    add_backup_commands(commands)
    text = "move Synapse's local cluster to the newest installed PostgreSQL major"
    sub = commands.add_parser(
        "upgrade-postgresql",
        help=text,
        description=text[0].upper() + text[1:] + " (pg_upgradecluster), with a backup, "
        "Synapse stopped meanwhile, and the row counts compared; on a failure Synapse "
        "stays on the old cluster.",
    )
    sub.set_defaults(func=upgrade_postgresql.command)
    sub.add_argument("--dry-run", action="store_true", help="print the plan only")
    dendrite.add_parser(commands)
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
