"""The migration's target database, against a real PostgreSQL cluster: what may be ported
into, what a retry cleans or copies again.  (The port itself is the system tests' business:
synapse_port_db runs only where Synapse is installed.)"""

from __future__ import annotations

import pytest

from matrix_synapse_setup.core.errors import SetupError
from matrix_synapse_setup.core.settings import Settings
from matrix_synapse_setup.postgres.provision import connect_as_role, provision
from matrix_synapse_setup.postgres.queries import import_psycopg
from matrix_synapse_setup.synapse import porting as migration

PORT_TABLE = (
    "CREATE TABLE port_from_sqlite3 (table_name varchar(100) NOT NULL UNIQUE,"
    " forward_rowid bigint NOT NULL, backward_rowid bigint NOT NULL)"
)


@pytest.fixture
def target(cluster, names):
    dbname, user = names
    settings = Settings(port=cluster.port, dbname=dbname, user=user, password="pw-target")
    provision(settings, socket_dir=cluster.socket_dir)
    return settings


def execute(settings, *statements):
    with connect_as_role(settings) as conn:
        for statement in statements:
            conn.execute(statement)


def tables(settings) -> set[str]:
    with connect_as_role(settings) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {row[0] for row in rows.fetchall()}


def test_an_empty_target_is_taken(target):
    assert migration.check_target(target).detail == "empty"


def test_a_database_another_synapse_filled_is_refused(target):
    execute(target, "CREATE TABLE users (name text)", "INSERT INTO users VALUES ('@a:x')")
    with pytest.raises(SetupError, match="not an unfinished port"):
        migration.check_target(target)
    assert tables(target) == {"users"}


def test_an_unfinished_port_without_a_valid_snapshot_is_cleaned(target, tmp_path, monkeypatch):
    monkeypatch.setattr(migration, "PORTED", tmp_path / "ported.db")  # none: not valid
    execute(target, PORT_TABLE, "CREATE TABLE events (id int)", "INSERT INTO events VALUES (1)")
    assert migration.check_target(target).detail == "an unfinished port, resumed"
    step = migration.prepare_target(target, tmp_path / "new.db", None)
    assert step is not None and "from scratch" in step.detail
    assert tables(target) == set()


def test_reset_tables_empties_them_and_what_references_them(target):
    execute(
        target,
        PORT_TABLE,
        "CREATE TABLE users (name text PRIMARY KEY)",
        "CREATE TABLE devices (name text REFERENCES users (name), id text)",
        "CREATE TABLE events (id int)",
        "INSERT INTO users VALUES ('@a:x')",
        "INSERT INTO devices VALUES ('@a:x', 'D1')",
        "INSERT INTO events VALUES (1)",
        "INSERT INTO port_from_sqlite3 VALUES ('users', 2, 0), ('devices', 2, 0), ('events', 2, 0)",
    )
    assert sorted(migration.ported_tables(target)) == ["devices", "events", "users"]
    assert migration.reset_tables(target, ["users"]) == ["devices", "users"]
    psycopg = import_psycopg()
    with connect_as_role(target) as conn:
        counts = [
            conn.execute(
                psycopg.sql.SQL("SELECT count(*) FROM {}").format(psycopg.sql.Identifier(t))
            ).fetchone()[0]
            for t in ("users", "devices", "events")
        ]
    assert counts == [0, 0, 1]
    assert migration.ported_tables(target) == ["events"]


def test_a_finished_target_is_never_again_taken_for_a_port(target):
    execute(target, PORT_TABLE, "CREATE TABLE users (name text)")
    migration.finish_target(target)
    with pytest.raises(SetupError, match="not an unfinished port"):
        migration.check_target(target)


def test_a_missing_port_tool_changes_nothing(target, tmp_path, monkeypatch):
    from matrix_synapse_setup.synapse.config import SqliteFacts

    monkeypatch.setattr(migration, "PORT_TOOLS", (tmp_path / "synapse_port_db",))
    switched = []
    facts = SqliteFacts(tmp_path / "homeserver.db", 1, 1, 1, 1)
    with pytest.raises(migration.MigrationFailed, match="synapse_port_db is missing"):
        migration.migrate(facts, target, {}, lambda: switched.append(1), say=print)
    assert switched == [] and tables(target) == set()


def test_a_full_disk_is_a_clear_error(tmp_path):
    """SQLite's snapshot on a file system with no room left (a 64 KiB tmpfs)."""
    import sqlite3
    import subprocess

    live = tmp_path / "homeserver.db"
    conn = sqlite3.connect(live)
    conn.execute("CREATE TABLE events (json TEXT)")
    conn.executemany("INSERT INTO events VALUES (?)", [("x" * 1000,)] * 500)
    conn.commit()
    conn.close()
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(small)], check=True)
    try:
        with pytest.raises(migration.MigrationFailed, match="check free disk space"):
            migration.snapshot(live, small / "copy.db", (0, 0))
    finally:
        subprocess.run(["umount", str(small)], check=True)
