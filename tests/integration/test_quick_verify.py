"""The proof of an unchanged run (provision.quick_verify, through libpq directly) and the
superuser child (provision.Superuser), against a real cluster."""

from __future__ import annotations

import os

import pytest

from matrix_synapse_setup.core.settings import Settings
from matrix_synapse_setup.postgres.provision import (
    Superuser,
    postgres_user,
    provision,
    quick_verify,
    verify,
)

PASSWORD = "s3cret-Pass"  # the conftest's provisioned fixture uses it


def local(cluster, dbname, user, password=PASSWORD) -> Settings:
    return Settings(host="localhost", port=cluster.port, dbname=dbname, user=user,
                    password=password)  # fmt: skip


def test_quick_verify_proves_what_verify_proves(cluster, provisioned):
    quick = quick_verify(provisioned)
    assert quick is not None
    full = verify(provisioned)
    # The same steps, named alike: only how "create tables" is proven differs.
    assert [(s.name, s.outcome) for s in quick] == [(s.name, s.outcome) for s in full]


def sql(cluster, statement: str, dbname: str = "postgres") -> None:
    with cluster.connect(dbname) as conn:
        conn.execute(statement)


def test_quick_verify_writes_nothing(cluster, provisioned):
    [(next_xid_before,)] = cluster.query("SELECT pg_current_xact_id()::text")
    assert quick_verify(provisioned) is not None
    [(next_xid_after,)] = cluster.query("SELECT pg_current_xact_id()::text")
    # Each of those two queries took one transaction id; quick_verify took none (verify's
    # rolled-back probe table takes one).
    assert int(next_xid_after) == int(next_xid_before) + 1
    # The control: verify's probe table takes one.
    verify(provisioned)
    [(next_xid_later,)] = cluster.query("SELECT pg_current_xact_id()::text")
    assert int(next_xid_later) == int(next_xid_after) + 2


@pytest.mark.parametrize(
    "break_it",
    ["wrong password", "database owned by another role", "role made superuser", "no CREATE"],
)
def test_quick_verify_says_none_when_anything_is_wrong(cluster, names, provisioned, break_it):
    dbname, user = names
    settings = provisioned
    if break_it == "wrong password":
        settings = local(cluster, dbname, user, password="another password")
    elif break_it == "database owned by another role":
        sql(cluster, f'ALTER DATABASE "{dbname}" OWNER TO postgres')
    elif break_it == "role made superuser":
        sql(cluster, f'ALTER ROLE "{user}" SUPERUSER')
    else:
        # PostgreSQL >= 15: only the schema's owner (pg_database_owner) may create in it
        sql(cluster, "ALTER SCHEMA public OWNER TO postgres", dbname)
    try:
        assert quick_verify(settings) is None
    finally:
        sql(cluster, f'ALTER ROLE "{user}" NOSUPERUSER')


def test_a_child_closed_without_a_request_changes_nothing(cluster, names):
    dbname, user = names
    child = Superuser.start(postgres_user())
    child.close()
    assert not cluster.query("SELECT 1 FROM pg_roles WHERE rolname = %s", (user,))
    with pytest.raises(ChildProcessError):
        os.waitpid(child.pid, os.WNOHANG)  # reaped
    steps = provision(local(cluster, dbname, user), socket_dir=cluster.socket_dir)
    assert {s.name: s.outcome for s in steps}[f"role {user}"] == "created"
