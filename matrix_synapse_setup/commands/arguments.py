"""The database settings the provision, verify and migrate commands work with: the
installed snippet's values (or another file's, --config), overridden by options.  A
password is never an option: it comes from the snippet, a file, standard input, or a
prompt."""

from __future__ import annotations

import argparse
import getpass
import secrets
import sys
from pathlib import Path

from matrix_synapse_setup.core import messages
from matrix_synapse_setup.core.errors import SetupError
from matrix_synapse_setup.core.settings import Settings, is_local
from matrix_synapse_setup.files import snippet

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
