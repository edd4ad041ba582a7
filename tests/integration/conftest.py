"""Fixtures: a real, throwaway PostgreSQL cluster (see tests/pgcluster.py)."""

from __future__ import annotations

import secrets

import pytest

from tests.pgcluster import psycopg, throwaway_cluster


@pytest.fixture(scope="session")
def cluster():
    with throwaway_cluster() as made:
        yield made


@pytest.fixture
def names(cluster):
    """A fresh database and role name for one test; dropped afterwards."""
    token = secrets.token_hex(4)
    dbname, user = f"synapse_{token}", f"synapse_{token}"
    yield dbname, user
    sql = psycopg.sql
    with cluster.connect() as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(dbname)))
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(user)))
