"""The connection budget: every Synapse process (the main one and each worker) keeps a pool
of up to cp_max connections to PostgreSQL, and all of them together must fit in what the
server lets ordinary roles open.

What the server allows Synapse's role is ``max_connections`` less the slots it keeps for
superusers (``superuser_reserved_connections``) and, from PostgreSQL 16, for roles with
pg_use_reserved_connections (``reserved_connections``); of that we keep :data:`MARGIN` free
too.  Pure, apart from :func:`read_limits`, which asks a connection it is handed: a leaf
like queries.py, with the standard library only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from matrix_synapse_setup.core import messages
from matrix_synapse_setup.core.errors import SetupError

# Connections left free for what is not Synapse: an admin's psql, the backup hook's pg_dump
# (one connection, held for the whole dump), monitoring, a migration tool.  The superuser
# slots do not cover them: pg_dump and psql run as roles that are no superuser too.
MARGIN = 10
# PostgreSQL's default max_connections, which Debian's clusters keep: a budget that fits in
# it needs no change of the server's configuration.
DEFAULT_MAX_CONNECTIONS = 100

# The three numbers, as any role may read them (current_setting needs no privilege);
# reserved_connections does not exist before PostgreSQL 16: NULL then (missing_ok).
LIMITS_COLUMNS = (
    "current_setting('max_connections'), current_setting('superuser_reserved_connections'),"
    " current_setting('reserved_connections', true)"
)
LIMITS_QUERY = "SELECT " + LIMITS_COLUMNS


class Limits(NamedTuple):
    max_connections: int
    superuser_reserved: int
    reserved: int = 0  # reserved_connections (PostgreSQL >= 16), 0 before


# PostgreSQL's defaults (superuser_reserved_connections 3; reserved_connections 0), for
# when the server cannot be asked.
DEFAULT_LIMITS = Limits(DEFAULT_MAX_CONNECTIONS, 3, 0)


class Pool(NamedTuple):
    process: str  # "main", or a worker's name
    size: int  # its cp_max


class Budget(NamedTuple):
    pools: tuple[Pool, ...]
    max_connections: int
    superuser_reserved: int
    reserved: int
    margin: int

    @property
    def total(self) -> int:
        """The connections all the pools may hold at once."""
        return sum(pool.size for pool in self.pools)

    @property
    def available(self) -> int:
        """What the server leaves Synapse's role, less the margin."""
        return self.max_connections - self.superuser_reserved - self.reserved - self.margin

    @property
    def fits(self) -> bool:
        return self.total <= self.available

    @property
    def limits(self) -> Limits:
        return Limits(self.max_connections, self.superuser_reserved, self.reserved)

    def text(self) -> str:
        """One line with every number, e.g. "4 processes x 10 = 40 of 87 (max_connections
        100 - 3 superuser_reserved_connections - 10 kept for admins and backups)"."""
        count = len(self.pools)
        processes = messages.BUDGET_ONE_PROCESS if count == 1 else messages.BUDGET_PROCESSES
        sizes = {pool.size for pool in self.pools}
        if len(sizes) <= 1:
            head = messages.BUDGET_SAME_POOLS.format(
                count=count,
                processes=processes,
                size=next(iter(sizes), 0),
                total=self.total,
                available=self.available,
            )
        else:
            head = messages.BUDGET_MIXED_POOLS.format(
                count=count,
                processes=processes,
                pools=", ".join(f"{pool.process} {pool.size}" for pool in self.pools),
                total=self.total,
                available=self.available,
            )
        why = messages.BUDGET_LIMITS.format(
            max_connections=self.max_connections, superuser_reserved=self.superuser_reserved
        )
        if self.reserved:
            why += messages.BUDGET_RESERVED.format(reserved=self.reserved)
        why += messages.BUDGET_MARGIN.format(margin=self.margin)
        return f"{head} ({why})"


def budget(
    processes: Sequence[str], pool_size: int, limits: Limits, margin: int = MARGIN
) -> Budget:
    """The budget of *processes* (names, the main one included), each with a pool of
    *pool_size* connections, on a server with *limits*."""
    return Budget(
        pools=tuple(Pool(name, pool_size) for name in processes),
        max_connections=limits.max_connections,
        superuser_reserved=limits.superuser_reserved,
        reserved=limits.reserved,
        margin=margin,
    )


def minimum_max_connections(total: int, limits: Limits, margin: int = MARGIN) -> int:
    """The smallest max_connections with which *total* connections fit, given the other
    limits (*limits*' own max_connections is not read)."""
    return total + limits.superuser_reserved + limits.reserved + margin


def needed_max_connections(total: int, limits: Limits, margin: int = MARGIN) -> int:
    """The max_connections to configure for *total* connections: the smallest that fits,
    never below PostgreSQL's (and Debian's) default of 100, which is what a cluster has
    when nobody asks for more (*limits*' own max_connections is not read)."""
    return max(DEFAULT_MAX_CONNECTIONS, minimum_max_connections(total, limits, margin))


def _number(value: Any, default: int | None = None) -> int:
    if value is None and default is not None:
        return default
    return int(str(value).strip())


def limits_from_row(row: Sequence[Any]) -> Limits:
    """The :class:`Limits` of a row of :data:`LIMITS_COLUMNS` (text or numbers)."""
    max_connections, superuser_reserved, reserved = row
    return Limits(_number(max_connections), _number(superuser_reserved), _number(reserved, 0))


def read_limits(conn: Any) -> Limits:
    """The server's limits, asked on *conn*: a psycopg connection (``execute``) or one of
    libpq.py (``query``); as any role, Synapse's too."""
    if hasattr(conn, "execute"):
        row = conn.execute(LIMITS_QUERY).fetchone()
    else:
        row = conn.query(LIMITS_QUERY)[0]
    return limits_from_row(row)


def refuse(budget: Budget, preset: str, host: str) -> None:
    """Raise :class:`SetupError` with the numbers and the ways out, unless *budget* fits."""
    if budget.fits:
        return
    raise SetupError(
        messages.BUDGET_REFUSED.format(
            preset=preset,
            host=host,
            budget=budget.text(),
            needed=minimum_max_connections(budget.total, budget.limits, budget.margin),
        )
    )
