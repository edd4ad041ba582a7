"""``matrix-synapse-setup migrate``: move a Synapse that runs on SQLite to PostgreSQL (what
the postinst does when the answer is "migrate"), for an admin who chose "keep-sqlite" or
wants to retry."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from matrix_synapse_setup.commands.arguments import settings_from
from matrix_synapse_setup.core import messages
from matrix_synapse_setup.core.errors import SetupError
from matrix_synapse_setup.core.output import note
from matrix_synapse_setup.core.paths import BACKUP_DIR, SNIPPET
from matrix_synapse_setup.core.settings import Settings, is_local
from matrix_synapse_setup.dpkg import ucf
from matrix_synapse_setup.files import atomic, snippet
from matrix_synapse_setup.files import lock as locking
from matrix_synapse_setup.postgres.provision import provision
from matrix_synapse_setup.synapse import config as synapse_config
from matrix_synapse_setup.synapse import porting as migration


def command(args: argparse.Namespace) -> int:
    state = synapse_config.inspect()
    if state is None or state.sqlite is None:
        print(messages.NOTHING_TO_MIGRATE)
        return 0
    # Local: nothing uses the role while Synapse is on SQLite; without a password file it
    # gets a new random password (the snippet will hold it).
    local = is_local(args.host or "localhost")
    settings = settings_from(args, generate=local and not Path(args.config).exists())
    text = snippet.render(settings, password_set=snippet.new_password_stamp())
    source = synapse_config.database_source_once_written(SNIPPET, text)
    if source != SNIPPET:
        raise SetupError(messages.SNIPPET_OVERRIDDEN.format(source=source, path=SNIPPET))
    print(state.sqlite.describe())
    migration.check_space(state.sqlite, settings)  # refused before anything changes
    print(messages.PORT_SPACE_STEP)
    plan = [
        f"provision role {settings.user} and database {settings.dbname} on {settings.host}"
        if settings.local
        else f"verify database {settings.dbname} on {settings.host}",
        "port a snapshot with synapse_port_db while Synapse runs (if it runs)",
        "stop Synapse, port the rest from a second snapshot",
        messages.PORT_UPDATES_STEP,
        f"compare row counts of {len(migration.KEY_TABLES)} key tables",
        f"write {SNIPPET}, start Synapse again if it ran",
        f"keep a copy of {state.sqlite.path} in {BACKUP_DIR}",
    ]
    for number, line in enumerate(plan, 1):
        print(f"{'would ' if args.dry_run else ''}{number}. {line}")
    if args.dry_run:
        return 0
    with locking.exclusive(note):
        return _migrate(args, settings, state, text)


def _migrate(args: argparse.Namespace, settings: Settings, state: Any, text: str) -> int:
    for step in provision(settings, socket_dir=args.socket_dir):
        print(step)
    owner = atomic.ownership()

    def switch() -> None:
        ucf.install(None, text, settings, owner)

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
            path=state.sqlite.path, backup=result.backup or "(none)", snippet=SNIPPET
        )
    )
    return 0
