"""The admin command, /usr/sbin/matrix-synapse-setup.

It provisions (local cluster) or verifies (any server) Synapse's database with
the values of the installed snippet, or with values given as options.  The
password is never an option: it comes from the snippet, a file, standard
input, or a prompt.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from . import messages, snippet
from .errors import SetupError, run
from .provision import DEFAULT_SOCKET_DIR, changed, provision, verify
from .settings import SSLMODES, Settings

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


def settings_from(args: argparse.Namespace) -> Settings:
    found = snippet.read(Path(args.config)) or {}
    answers = {key: str(value) for key, value in found.items() if value is not None}
    answers.update({key: getattr(args, key) for key in FIELDS if getattr(args, key)})
    if args.password_file:
        answers["password"] = read_password(args.password_file)
    elif not answers.get("password"):
        if not sys.stdin.isatty():
            raise SetupError(messages.PASSWORD_NEEDED.format(path=args.config))
        first = getpass.getpass("Password for the PostgreSQL role: ")
        if first != getpass.getpass("Repeat the password: "):
            raise SetupError(messages.PASSWORDS_DIFFER)
        answers["password"] = first
    return Settings.from_answers(**answers)


def cmd_provision(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    steps = provision(settings, socket_dir=args.socket_dir)
    for step in steps:
        print(step)
    print("changed" if changed(steps) else "unchanged: nothing to do")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    for step in verify(settings_from(args)):
        print(step)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="matrix-synapse-setup",
        description="Provision and verify the PostgreSQL database of Matrix Synapse.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, func, text in (
        ("provision", cmd_provision, "create or update the role and database, then verify"),
        ("verify", cmd_verify, "only check that Synapse can use the database"),
    ):
        sub = commands.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        sub.set_defaults(func=func)
        sub.add_argument(
            "--config",
            default=str(snippet.SNIPPET),
            help="snippet to read the current values from (default: %(default)s)",
        )
        sub.add_argument("--host", help="'localhost' (provision the local cluster) or a server")
        sub.add_argument("--port", help="server port")
        sub.add_argument("--dbname", help="database name")
        sub.add_argument("--user", help="role name")
        sub.add_argument("--sslmode", choices=SSLMODES, help="TLS mode for a remote server")
        sub.add_argument("--sslrootcert", help="CA certificate file for verify-ca/verify-full")
        sub.add_argument(
            "--password-file",
            metavar="FILE",
            help="read the role's password from FILE ('-' for standard input)",
        )
        sub.add_argument("--socket-dir", default=DEFAULT_SOCKET_DIR, help=argparse.SUPPRESS)
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
