"""``matrix-synapse-setup provision``: create or update the role and database (the local
cluster), then verify as Synapse will connect."""

from __future__ import annotations

import argparse
from pathlib import Path

from matrix_synapse_setup.commands.arguments import settings_from
from matrix_synapse_setup.core import messages
from matrix_synapse_setup.core.output import note
from matrix_synapse_setup.core.paths import PASSFILE, SNIPPET
from matrix_synapse_setup.core.steps import changed
from matrix_synapse_setup.files import lock as locking
from matrix_synapse_setup.files import snippet
from matrix_synapse_setup.postgres.provision import provision


def command(args: argparse.Namespace) -> int:
    with locking.exclusive(note):
        # Read inside the lock: a run that held it may have changed the snippet.
        settings = settings_from(args)
        steps = provision(settings, socket_dir=args.socket_dir)
        for step in steps:
            print(step)
        # A new password for the role that the installed snippet logs in with: its
        # password file follows, or Synapse's next connection would be refused.
        found = snippet.read(Path(args.config))
        if (
            Path(args.config) == SNIPPET
            and found is not None
            and found.get("passfile") == str(PASSFILE)
            and found.get("user") == settings.user
            and found.get("password") != settings.password
            and snippet.write_passfile(settings)
        ):
            print(messages.PASSFILE_UPDATED.format(path=PASSFILE))
            return 0
    print("changed" if changed(steps) else "unchanged: nothing to do")
    return 0
