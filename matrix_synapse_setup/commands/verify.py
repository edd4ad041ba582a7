"""``matrix-synapse-setup verify``: only check that Synapse can use its database (any
server), and which certificate a TLS server presents."""

from __future__ import annotations

import argparse

from matrix_synapse_setup.commands.arguments import settings_from
from matrix_synapse_setup.postgres.provision import verify


def command(args: argparse.Namespace) -> int:
    for step in verify(settings_from(args), show_certificate=True):
        print(step)
    return 0
