"""The connection budget's limits as a real PostgreSQL states them: read on the throwaway
cluster as the superuser and as Synapse's role (no superuser, no pg_read_all_settings),
through psycopg and through the package's own libpq binding."""

from __future__ import annotations

import pytest

from matrix_synapse_setup.postgres import budget, libpq
from matrix_synapse_setup.postgres.provision import connect_as_role, role_params

pytestmark = pytest.mark.integration

PASSWORD = "budget's pass:word"


def shown(cluster) -> tuple[int, int, int, int]:
    """What SHOW says, as the superuser: max_connections, superuser_reserved_connections,
    reserved_connections (0 where the server has no such setting), server_version_num."""
    [(version,)] = cluster.query("SHOW server_version_num")
    names = ["max_connections", "superuser_reserved_connections"]
    if int(version) >= 160000:
        names.append("reserved_connections")
    values = [int(cluster.query(f"SHOW {name}")[0][0]) for name in names]
    return (*values, *([0] * (3 - len(values))), int(version))


def test_the_superuser_reads_what_show_says(cluster):
    *limits, _ = shown(cluster)
    with cluster.connect() as conn:
        assert budget.read_limits(conn) == budget.Limits(*limits)


def test_synapses_role_reads_the_same_limits(cluster, provisioned):
    *limits, version = shown(cluster)
    [(superuser,)] = cluster.query(
        "SELECT rolsuper FROM pg_roles WHERE rolname = %s", (provisioned.user,)
    )
    assert superuser is False
    with connect_as_role(provisioned) as conn:  # psycopg
        assert budget.read_limits(conn) == budget.Limits(*limits)
    with libpq.Connection(role_params(provisioned)) as conn:  # the doctor's binding
        assert budget.read_limits(conn) == budget.Limits(*limits)
    if version < 160000:  # the setting does not exist: read as 0, not an error
        assert limits[2] == 0


def test_the_limits_give_the_budget_of_a_worker_preset(cluster, provisioned):
    with connect_as_role(provisioned) as conn:
        limits = budget.read_limits(conn)
    processes = ["main", "client1", "client2", "events1"]
    found = budget.budget(processes, 10, limits)
    assert found.available == (
        limits.max_connections - limits.superuser_reserved - limits.reserved - budget.MARGIN
    )
    needed = budget.needed_max_connections(found.total, limits)
    assert budget.budget(processes, 10, limits._replace(max_connections=needed)).fits
