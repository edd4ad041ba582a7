"""``matrix-synapse-setup doctor``: what is wrong, in one table.

Every check is read-only and bounded in time, and independent of the others: one that
fails (or breaks) never hides the rest.  A check that needs something another check
found missing (the snippet's values, a connection to PostgreSQL) is shown as
``skipped``; the root cause's own row carries the failure.

Exit code: 0 when every row is ``ok``, 1 when some warn and none fails, 2 when any
fails (``skipped`` rows count for nothing).  ``--json`` prints the same rows for
monitoring.  Secrets are never printed: the password is only handed to libpq.

This module is the command and the order of the rows (:data:`CHECKS`).  The rest, bottom
first: ``report`` (a row, the overall status, the table and the JSON), ``server`` (the one
login as Synapse's role), ``facts`` (what the checks share, read once), then the checks by
what they look at: ``files`` (the snippet, its password file), ``database`` (Synapse's
effective database, PostgreSQL, the connection budget), ``synapse`` (whether it answers),
``backups``, ``versions`` (PostgreSQL's major, our tuning, the collation versions), and
``dendrite`` (its rows, only when the dendrite command recorded a dendrite.yaml).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from pathlib import Path

from matrix_synapse_setup.commands.doctor import (
    backups,
    database,
    dendrite,
    files,
    synapse,
    versions,
)
from matrix_synapse_setup.commands.doctor.facts import TIMEOUT, Facts, Paths
from matrix_synapse_setup.commands.doctor.report import (
    FAIL,
    Check,
    exit_code,
    render_json,
    render_table,
)
from matrix_synapse_setup.core import messages
from matrix_synapse_setup.core.settings import drop_libpq_environment
from matrix_synapse_setup.files import state

# Each row's name and its check, in the table's order: a row that is skipped names one
# above it as its cause.
CHECKS: Mapping[str, Callable[[Facts], Check]] = {
    "snippet": files.check_snippet,
    "passfile": files.check_passfile,
    "effective database": database.check_effective_database,
    "postgresql": database.check_postgresql,
    "database": database.check_database,
    "privileges": database.check_privileges,
    "tls": database.check_tls,
    "connections": database.check_connections,
    "connection budget": database.check_budget,
    "synapse": synapse.check_synapse,
    "backup disk": backups.check_backup_disk,
    "last backup": backups.check_last_backup,
    "postgresql version": versions.check_version,
    "tuning": versions.check_tuning,
    "collation": versions.check_collation,
}
ROWS = tuple(CHECKS)


def run(
    paths: Paths | None = None,
    *,
    timeout: float = TIMEOUT,
    checks: Mapping[str, Callable[[Facts], Check]] = CHECKS,
    dendrite_config: Path | None = None,
) -> list[Check]:
    """Every check's row, in order; a check that breaks is a failure row of its name.
    Dendrite's rows follow when *dendrite_config* names its file."""
    facts = Facts(paths, timeout=timeout)
    rows = []
    for name, check in checks.items():
        try:
            rows.append(check(facts))
        except Exception as err:  # noqa: BLE001 - one broken check must not hide the rest
            rows.append(
                Check(
                    name,
                    FAIL,
                    messages.DOCTOR_CHECK_BROKE.format(reason=f"{type(err).__name__}: {err}"),
                    messages.DOCTOR_FIX_BUG,
                )
            )
    try:
        rows += dendrite.rows(facts, dendrite_config)
    except Exception as err:  # noqa: BLE001 - as above
        reason = f"{type(err).__name__}: {err}"
        rows.append(
            Check(
                dendrite.CONFIG,
                FAIL,
                messages.DOCTOR_CHECK_BROKE.format(reason=reason),
                messages.DOCTOR_FIX_BUG,
            )
        )
    return rows


def main(*, as_json: bool = False, paths: Paths | None = None) -> int:
    drop_libpq_environment()  # connect as Synapse does, not with the admin's PG* defaults
    rows = run(paths, dendrite_config=state.read_dendrite())
    print(render_json(rows) if as_json else render_table(rows), end="", flush=True)
    return exit_code(rows)


def command(args: argparse.Namespace) -> int:
    """``matrix-synapse-setup doctor [--json]``."""
    return main(as_json=args.json)
