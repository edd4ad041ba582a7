"""``matrix-synapse-setup admin create``: create the first admin account (what the postinst
does with admin-user and admin-password), or change its password: for a Synapse that was
not running then."""

from __future__ import annotations

import argparse
import getpass
import sys

from matrix_synapse_setup.commands.arguments import read_password
from matrix_synapse_setup.core import messages
from matrix_synapse_setup.core.errors import SetupError
from matrix_synapse_setup.core.output import note
from matrix_synapse_setup.core.settings import validate_admin_password, validate_admin_user
from matrix_synapse_setup.dpkg import debconf
from matrix_synapse_setup.files import lock as locking
from matrix_synapse_setup.files import state as state_files
from matrix_synapse_setup.postinst import admin


def command(args: argparse.Namespace) -> int:
    answers = None
    user = args.user
    if user is None:
        answers = debconf.communicator()
        user = str(answers.get(debconf.ADMIN_USER)).strip()
        if not user:
            raise SetupError(messages.ADMIN_NOTHING_PENDING)
    validate_admin_user(user)
    if args.password_file:
        password = read_password(args.password_file)
    elif answers is not None:
        password = str(answers.get(debconf.ADMIN_PASSWORD))
    else:
        password = ""
    if not password and not state_files.created_here(user, state_files.read_record()):
        if not sys.stdin.isatty():
            raise SetupError(messages.ADMIN_PASSWORD_MISSING.format(user=user))
        password = getpass.getpass(f"Password for the admin account {user}: ")
        if password != getpass.getpass("Repeat the password: "):
            raise SetupError(messages.PASSWORDS_DIFFER)
    validate_admin_password(password)
    with locking.exclusive(note):
        outcome = admin.ensure(user, password, say=note)
    print(outcome.message)
    if answers is not None and outcome.applied and answers.get(debconf.ADMIN_PASSWORD):
        # Applied: the password leaves debconf's database.
        answers.set(debconf.ADMIN_PASSWORD, "")
        answers.set(debconf.ADMIN_PASSWORD_AGAIN, "")
    return 0 if outcome.applied else 1
