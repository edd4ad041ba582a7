"""doctor's checks of Synapse's database: which one Synapse's configuration picks (ours?),
then what PostgreSQL says to Synapse's role (server.py logs in, once): the server's
version, the database's encoding and collation, the role's privileges, TLS, room for
Synapse's connection pool, and the budget of every process's pool (main and workers)."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from matrix_synapse_setup.commands.doctor.facts import Facts
from matrix_synapse_setup.commands.doctor.report import FAIL, OK, WARN, Check, skipped
from matrix_synapse_setup.core import messages
from matrix_synapse_setup.postgres import budget
from matrix_synapse_setup.postgres.queries import MIN_SERVER_VERSION, NEEDED, version_text
from matrix_synapse_setup.synapse import config as synapse_config

CONNECTIONS_LIMIT = 0.8  # of max_connections
SYNAPSE_PROCESSES = 1  # this row's pool; the budget row counts every process


def _need_server(facts: Facts, name: str) -> dict[str, Any] | Check:
    """The server's facts, or the skipped row that names why there are none."""
    server = facts.server()
    if server is not None:
        return server
    if facts.settings() is None:
        return skipped(name, messages.DOCTOR_NO_SETTINGS)
    return skipped(name, messages.DOCTOR_NO_SERVER)


# --- Synapse's effective database ----------------------------------------------------


def check_effective_database(facts: Facts) -> Check:
    name = "effective database"
    config = facts.config()
    if config is None:
        return Check(name, FAIL, facts.config_error or "?", messages.DOCTOR_FIX_CONFIG)
    database = synapse_config.effective_database(*config)
    ours = facts.paths.snippet
    if database.source == ours:
        return Check(
            name,
            OK,
            messages.DOCTOR_EFFECTIVE_OK.format(engine=database.engine, path=ours),
        )
    if database.source is None:
        return Check(
            name,
            FAIL,
            messages.DOCTOR_EFFECTIVE_DEFAULT.format(path=database.sqlite_path, snippet=ours),
            messages.DOCTOR_FIX_RECONFIGURE,
        )
    return Check(
        name,
        FAIL,
        messages.DOCTOR_EFFECTIVE_OTHER.format(
            source=database.source, engine=database.engine, snippet=ours
        ),
        messages.DOCTOR_FIX_EFFECTIVE.format(source=database.source, snippet=ours),
    )


# --- PostgreSQL: login, version, database, privileges, TLS -----------------------------


def check_postgresql(facts: Facts) -> Check:
    name = "postgresql"
    settings = facts.settings()
    if settings is None:
        return skipped(name, messages.DOCTOR_NO_SETTINGS)
    server = facts.server()
    if server is None:
        detail, fix = facts.server_error or ("?", "")
        return Check(name, FAIL, detail, fix)
    version = version_text(server["version"])
    where = server["where"]
    if server["version"] < MIN_SERVER_VERSION:
        return Check(
            name,
            FAIL,
            messages.DOCTOR_SERVER_TOO_OLD.format(version=version, where=where),
            messages.DOCTOR_FIX_SERVER_TOO_OLD,
        )
    return Check(
        name,
        OK,
        messages.DOCTOR_SERVER_OK.format(version=version, where=where, user=settings.user),
    )


def check_database(facts: Facts) -> Check:
    name = "database"
    server = _need_server(facts, name)
    if isinstance(server, Check):
        return server
    wrong = [key for key, value in NEEDED.items() if server[key] != value]
    size = synapse_config.human_size(server["size"])
    if wrong:
        return Check(
            name,
            FAIL,
            messages.DOCTOR_DATABASE_WRONG.format(
                dbname=server["dbname"],
                found=", ".join(f"{k} {server[k]!r}" for k in wrong),
                needed=", ".join(f"{k} {NEEDED[k]!r}" for k in wrong),
            ),
            messages.DOCTOR_FIX_DATABASE.format(dbname=server["dbname"], user=server["user"]),
        )
    return Check(name, OK, messages.DOCTOR_DATABASE_OK.format(dbname=server["dbname"], size=size))


def check_privileges(facts: Facts) -> Check:
    name = "privileges"
    server = _need_server(facts, name)
    if isinstance(server, Check):
        return server
    user, dbname, owner = server["user"], server["dbname"], server["owner"]
    if server["superuser"]:
        return Check(
            name,
            WARN,
            messages.DOCTOR_SUPERUSER.format(user=user),
            messages.DOCTOR_FIX_SUPERUSER.format(user=user),
        )
    if owner == user:
        return Check(name, OK, messages.DOCTOR_OWNER_OK.format(user=user, dbname=dbname))
    if server["can_create"]:
        return Check(
            name, OK, messages.DOCTOR_CREATE_OK.format(user=user, dbname=dbname, owner=owner)
        )
    return Check(
        name,
        FAIL,
        messages.DOCTOR_NO_PRIVILEGE.format(user=user, dbname=dbname, owner=owner),
        messages.DOCTOR_FIX_PRIVILEGE.format(user=user, dbname=dbname),
    )


def check_tls(facts: Facts) -> Check:
    name = "tls"
    server = _need_server(facts, name)
    if isinstance(server, Check):
        return server
    settings = facts.settings()
    if settings is None:  # cannot be: the facts came from a login with them
        return skipped(name, messages.DOCTOR_NO_SETTINGS)
    if server["ssl"]:
        detail = messages.DOCTOR_TLS_OK.format(
            version=server["ssl_version"], cipher=server["ssl_cipher"], sslmode=settings.sslmode
        )
        if not settings.local and settings.sslmode not in ("verify-ca", "verify-full"):
            return Check(
                name,
                WARN,
                detail + messages.DOCTOR_TLS_UNCHECKED,
                messages.DOCTOR_FIX_TLS,
            )
        return Check(name, OK, detail)
    if settings.local:
        return Check(name, OK, messages.DOCTOR_TLS_LOCAL.format(where=server["where"]))
    return Check(
        name,
        FAIL,
        messages.DOCTOR_TLS_MISSING.format(where=server["where"], sslmode=settings.sslmode),
        messages.DOCTOR_FIX_TLS,
    )


# --- connections ------------------------------------------------------------------------


def check_connections(facts: Facts) -> Check:
    name = "connections"
    server = _need_server(facts, name)
    if isinstance(server, Check):
        return server
    return connections_check(
        server["connections"], server["mine"], pool_size(facts), server["max_connections"]
    )


def pool_size(facts: Facts) -> int:
    """Synapse's pool size: the effective database's cp_max, else twisted's default."""
    return facts.pool_size()


def connections_check(used: int, mine: int, cp_max: int, limit: int) -> Check:
    """*used*: client connections on the server but this one; *mine*: Synapse's role's
    among them (they are part of its pool).  Warn when the others plus Synapse's whole
    pool (cp_max per Synapse process) take more than CONNECTIONS_LIMIT of max_connections."""
    others = used - mine
    needed = others + cp_max * SYNAPSE_PROCESSES
    detail = messages.DOCTOR_CONNECTIONS.format(
        used=used, mine=mine, limit=limit, cp_max=cp_max, needed=needed
    )
    if needed > CONNECTIONS_LIMIT * limit:
        percent = int(CONNECTIONS_LIMIT * 100)
        return Check(
            "connections",
            WARN,
            detail + messages.DOCTOR_CONNECTIONS_HIGH.format(percent=percent),
            messages.DOCTOR_FIX_CONNECTIONS.format(needed=math.ceil(needed / CONNECTIONS_LIMIT)),
        )
    return Check("connections", OK, detail)


# --- the connection budget: every process's pool --------------------------------------------


def check_budget(facts: Facts) -> Check:
    name = "connection budget"
    server = _need_server(facts, name)
    if isinstance(server, Check):
        return server
    found = facts.connection_budget()
    if found is None:  # cannot be: the server's facts are there
        return skipped(name, messages.DOCTOR_NO_SERVER)
    return budget_check(found)


class BudgetTexts(NamedTuple):
    """A budget row's name and words: Synapse's pools, or Dendrite's with Synapse's."""

    name: str
    fits: str
    margin: str
    over: str
    fix: str


SYNAPSE_BUDGET = BudgetTexts(
    "connection budget",
    messages.DOCTOR_BUDGET_FITS,
    messages.DOCTOR_BUDGET_MARGIN,
    messages.DOCTOR_BUDGET_OVER,
    messages.DOCTOR_FIX_BUDGET,
)


def budget_check(found: budget.Budget, texts: BudgetTexts = SYNAPSE_BUDGET, **fix: str) -> Check:
    """ok when every pool fits with the margin kept; warn when they eat into the margin
    (an admin's psql or the backup's pg_dump may be refused when Synapse is busy); fail
    when they cannot all connect at once, whatever else runs.  *fix*: more fields for
    the fix's text."""
    text = found.text()
    if found.fits:
        return Check(texts.name, OK, texts.fits.format(budget=text))
    needed = budget.minimum_max_connections(found.total, found.limits, found.margin)
    hint = texts.fix.format(needed=needed, **fix)
    if found.total <= found.available + found.margin:
        detail = texts.margin.format(margin=found.margin, budget=text)
        return Check(texts.name, WARN, detail, hint)
    return Check(texts.name, FAIL, texts.over.format(budget=text), hint)
