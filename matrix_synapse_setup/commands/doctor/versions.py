"""doctor's checks of versions: the PostgreSQL major Synapse's cluster runs (obsolete for
this release? older than the installed Synapse supports?), whether that cluster holds
our PostgreSQL settings as debconf's tune-postgresql asks, and the collation versions
its databases recorded against the library's.

Each judgment is a pure function of facts (``judge_*``, unit-tested); the checks read
those facts.  The version row needs no login for the local cluster (its directory says
its major), so that a stopped PostgreSQL does not hide it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from matrix_synapse_setup.commands.doctor.facts import Facts
from matrix_synapse_setup.commands.doctor.report import OK, WARN, Check, skipped
from matrix_synapse_setup.core import messages
from matrix_synapse_setup.dpkg import debconf
from matrix_synapse_setup.postgres import libpq, tuning
from matrix_synapse_setup.postgres import upgrade as pg
from matrix_synapse_setup.postgres.provision import role_params

# Synapse's own check, in synapse/storage/engines/postgres.py of the installed Synapse:
#     if not allow_outdated_version and self._version < 140000:
SYNAPSE_ENGINES = (
    "/opt/venvs/matrix-synapse/lib/python3*/site-packages/synapse/storage/engines/postgres.py",
    "/usr/lib/python3/dist-packages/synapse/storage/engines/postgres.py",
)
SYNAPSE_MIN_RE = re.compile(r"self\._version\s*<\s*(\d{5,6})\b")
SYNAPSE_MIN_FALLBACK = 140000


# --- what the installed Synapse and the release say ---------------------------------------


def parse_synapse_minimum(source: str) -> int | None:
    found = SYNAPSE_MIN_RE.search(source)
    return int(found[1]) if found else None


def synapse_minimum(patterns: tuple[str, ...] = SYNAPSE_ENGINES) -> int:
    """The oldest server_version_num the installed Synapse starts on; 14 when its code
    cannot be read."""
    for pattern in patterns:
        for path in sorted(Path("/").glob(pattern.lstrip("/")), reverse=True):
            try:
                found = parse_synapse_minimum(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError):
                continue
            if found is not None:
                return found
    return SYNAPSE_MIN_FALLBACK


def tune_answer() -> bool | None:
    """debconf's tune-postgresql (root only, and not while apt holds debconf's database);
    None when it cannot be read."""
    if os.geteuid() != 0:
        return None
    try:
        conv = debconf.Conversation(debconf.communicator())
        return conv.tune()[0]
    except Exception:  # noqa: BLE001 - unknown, and the row says so
        return None


def local_cluster(facts: Facts) -> tuning.Cluster | None:
    settings = facts.settings()
    if settings is None or not settings.local:
        return None
    return tuning.cluster_for_port(settings.port, socket_dir=settings.socket_dir)


# --- judgments ------------------------------------------------------------------------


def judge_version(
    major: int, where: str, supported: list[int] | None, minimum: int, *, local: bool
) -> tuple[str, str, str]:
    """(status, detail, fix) for Synapse's server on PostgreSQL *major*."""
    fix = messages.DOCTOR_FIX_UPGRADE_POSTGRESQL if local else messages.DOCTOR_FIX_REMOTE_UPGRADE
    if major * 10000 < minimum:
        return (
            WARN,
            messages.DOCTOR_VERSION_TOO_OLD_FOR_SYNAPSE.format(
                major=major, where=where, minimum=minimum // 10000
            ),
            fix,
        )
    if local and supported and pg.obsolete(major, supported):
        return (
            WARN,
            messages.DOCTOR_VERSION_OBSOLETE.format(
                major=major, where=where, supported=", ".join(map(str, supported))
            ),
            fix,
        )
    return OK, messages.DOCTOR_VERSION_OK.format(major=major, where=where), ""


def judge_tuning(
    tune: bool | None, label: str, includes_conf_d: bool, installed: str | None, wanted: str
) -> tuple[str, str, str]:
    """(status, detail, fix) for our drop-in in the cluster Synapse uses."""
    if tune is None:
        present = "holds" if installed is not None else "has no"
        return OK, messages.DOCTOR_TUNING_UNKNOWN.format(cluster=label, present=present), ""
    if not tune:
        return OK, messages.DOCTOR_TUNING_NOT_WANTED.format(cluster=label), ""
    if not includes_conf_d:
        return OK, messages.DOCTOR_TUNING_NO_CONF_D.format(cluster=label), ""
    if installed is None:
        return (
            WARN,
            messages.DOCTOR_TUNING_MISSING.format(cluster=label),
            messages.DOCTOR_FIX_RETUNE,
        )
    if installed != wanted:
        return WARN, messages.DOCTOR_TUNING_STALE.format(cluster=label), messages.DOCTOR_FIX_RETUNE
    return OK, messages.DOCTOR_TUNING_OK.format(cluster=label), ""


def judge_collations(mismatches: list[tuple[str, str, str]]) -> tuple[str, str, str]:
    if not mismatches:
        return OK, messages.DOCTOR_COLLATION_OK, ""
    found = "; ".join(
        f"{name}: {recorded} recorded, {actual} now" for name, recorded, actual in mismatches
    )
    name = mismatches[0][0]
    fix = messages.DOCTOR_FIX_COLLATION.format(
        dbname=name, quoted=pg.quote_identifier(name), statement=pg.refresh_statement(name)
    )
    return WARN, messages.DOCTOR_COLLATION_DIFFERS.format(found=found), fix


# --- the checks -----------------------------------------------------------------------


def check_version(facts: Facts) -> Check:
    name = "postgresql version"
    settings = facts.settings()
    if settings is None:
        return skipped(name, messages.DOCTOR_NO_SETTINGS)
    cluster = local_cluster(facts)
    if cluster is not None:
        major, where = pg.major_key(cluster.version)[0], f"cluster {cluster.label}"
    else:
        server = facts.server()
        if server is None:
            return skipped(name, messages.DOCTOR_NO_SERVER)
        major, where = server["version"] // 10000, server["where"]
    supported = pg.supported_majors() if settings.local else None
    status, detail, fix = judge_version(
        major, where, supported, synapse_minimum(), local=settings.local
    )
    return Check(name, status, detail, fix)


def check_tuning(facts: Facts) -> Check:
    name = "tuning"
    settings = facts.settings()
    if settings is None:
        return skipped(name, messages.DOCTOR_NO_SETTINGS)
    if not settings.local:
        return Check(name, OK, messages.DOCTOR_TUNING_REMOTE.format(host=settings.host))
    cluster = local_cluster(facts)
    if cluster is None:
        return Check(name, OK, messages.DOCTOR_TUNING_NO_CLUSTER.format(port=settings.port))
    try:
        installed: str | None = cluster.dropin.read_text(encoding="utf-8")
    except FileNotFoundError:
        installed = None
    except (OSError, UnicodeDecodeError):
        installed = ""
    # With the max_connections the budget of Synapse's processes needs: what a configure
    # writes for them.
    needed = facts.needed_max_connections()
    wanted = tuning.text_for(cluster, needed) if cluster.includes_conf_d else ""
    status, detail, fix = judge_tuning(
        tune_answer(), cluster.label, cluster.includes_conf_d, installed, wanted
    )
    return Check(name, status, detail, fix)


def collation_rows(facts: Facts) -> list[tuple[Any, Any, Any]]:
    """pg_database's recorded and actual collation versions, as Synapse's role."""
    settings = facts.settings()
    assert settings is not None  # noqa: S101 - only called after a login with them
    params = role_params(settings) | {
        "connect_timeout": max(1, int(facts.timeout)),
        "options": f"-c statement_timeout={int(facts.timeout * 1000)}",
    }
    with libpq.Connection(params) as conn:
        return [tuple(row) for row in conn.query(pg.COLLATIONS_QUERY)]


def check_collation(facts: Facts) -> Check:
    name = "collation"
    if facts.settings() is None:
        return skipped(name, messages.DOCTOR_NO_SETTINGS)
    server = facts.server()
    if server is None:
        return skipped(name, messages.DOCTOR_NO_SERVER)
    if server["version"] < pg.COLLATIONS_MIN_VERSION:
        return Check(name, OK, messages.DOCTOR_COLLATION_UNRECORDED)
    status, detail, fix = judge_collations(pg.collation_mismatches(collation_rows(facts)))
    return Check(name, status, detail, fix)
