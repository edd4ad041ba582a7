"""Synapse's effective database, read as Synapse reads its files; what a SQLite file holds."""

import sqlite3

import pytest

from matrix_synapse_setup.core.errors import SetupError
from matrix_synapse_setup.synapse import config as synapse_config
from matrix_synapse_setup.synapse import porting as migration

SQLITE = "database:\n  name: sqlite3\n  args: {database: /var/lib/matrix-synapse/homeserver.db}\n"
POSTGRES = "database:\n  name: psycopg2\n  args: {host: localhost, dbname: synapse}\n"


@pytest.fixture
def etc(tmp_path):
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "homeserver.yaml").write_text("server_name: mss.test\n" + SQLITE)
    return tmp_path


def effective(etc):
    files = synapse_config.config_files(etc / "homeserver.yaml", etc / "conf.d")
    return files, synapse_config.effective_database(*synapse_config.load(files))


def test_homeserver_yaml_alone(etc):
    files, db = effective(etc)
    assert files == [etc / "homeserver.yaml"]
    assert (db.engine, db.source) == ("sqlite3", etc / "homeserver.yaml")


def test_the_last_yaml_file_in_conf_d_wins_and_others_are_ignored(etc):
    confd = etc / "conf.d"
    (confd / "database.yaml").write_text(POSTGRES)
    (confd / "zz-back.yaml.disabled").write_text(SQLITE)  # not *.yaml: Synapse ignores it
    (confd / "sub.yaml").mkdir()  # a directory: ignored
    (confd / "aa-other.yaml").write_text("report_stats: false\n")
    files, db = effective(etc)
    assert files == [etc / "homeserver.yaml", confd / "aa-other.yaml", confd / "database.yaml"]
    assert (db.engine, db.source) == ("psycopg2", confd / "database.yaml")
    (confd / "zz-back.yaml").write_text(SQLITE)  # sorted after database.yaml: it wins
    _, db = effective(etc)
    assert (db.engine, db.source) == ("sqlite3", confd / "zz-back.yaml")


def test_a_relative_sqlite_path_is_in_synapses_working_directory(etc):
    (etc / "conf.d" / "db.yaml").write_text("database: {name: sqlite3, args: {database: x.db}}\n")
    _, db = effective(etc)
    assert db.sqlite_path == synapse_config.DATA_DIR / "x.db"


def test_no_database_section_means_synapses_default_sqlite(etc):
    (etc / "homeserver.yaml").write_text("server_name: mss.test\n")
    _, db = effective(etc)
    assert (db.engine, db.sqlite_path) == ("sqlite3", synapse_config.DATA_DIR / "homeserver.db")


def test_a_file_about_to_be_written_is_read_in_its_place(etc):
    snippet = etc / "conf.d" / "database.yaml"
    files = synapse_config.config_files(etc / "homeserver.yaml", etc / "conf.d", including=snippet)
    assert files[-1] == snippet
    merged, origin = synapse_config.load(files, {snippet: POSTGRES})
    assert origin["database"] == snippet and merged["server_name"] == "mss.test"
    assert not snippet.exists()


def test_a_broken_file_is_a_clear_error(etc):
    (etc / "conf.d" / "bad.yaml").write_text("database: [unclosed\n")
    with pytest.raises(SetupError, match="bad.yaml cannot be read"):
        effective(etc)


def make_sqlite(path, users=0, events=0, updates=0):
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE users (name TEXT)")
    conn.execute("CREATE TABLE events (id INTEGER)")
    conn.execute("CREATE TABLE rooms (id TEXT)")
    conn.execute("CREATE TABLE background_updates (update_name TEXT)")
    conn.executemany("INSERT INTO users VALUES (?)", [(f"u{i}",) for i in range(users)])
    conn.executemany("INSERT INTO events VALUES (?)", [(i,) for i in range(events)])
    conn.executemany("INSERT INTO background_updates VALUES (?)", [("x",)] * updates)
    conn.commit()
    conn.close()


def test_sqlite_facts_count_users_rooms_events(tmp_path):
    path = tmp_path / "homeserver.db"
    make_sqlite(path, users=2, events=5)
    facts = synapse_config.sqlite_facts(path)
    assert (facts.users, facts.rooms, facts.events, facts.has_data) == (2, 0, 5, True)
    assert "holds 2 user(s), 0 room(s) and 5 event(s)" in facts.describe()


def test_an_empty_or_missing_database_is_no_migration(tmp_path):
    path = tmp_path / "homeserver.db"
    assert synapse_config.sqlite_facts(path) is None
    make_sqlite(path)
    assert not synapse_config.sqlite_facts(path).has_data
    schemaless = tmp_path / "new.db"
    sqlite3.connect(schemaless).close()
    assert not synapse_config.sqlite_facts(schemaless).has_data


def test_pending_background_updates_are_counted(tmp_path, monkeypatch):
    """A stopped Synapse's pending updates are refused only where upstream's tool that runs
    them (update_synapse_database) is missing; with it, the port runs them on its snapshot."""
    path = tmp_path / "homeserver.db"
    make_sqlite(path, users=1, updates=3)
    assert migration.pending_updates(path) == 3
    monkeypatch.setattr(migration, "UPDATE_TOOLS", (tmp_path / "missing",))
    with pytest.raises(SetupError, match="3 background update"):
        migration.wait_for_updates(path, running=False, say=print)
    tool = tmp_path / "update_synapse_database"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    monkeypatch.setattr(migration, "UPDATE_TOOLS", (tmp_path / "missing", tool))
    assert migration.find_update_tool() == tool
    migration.wait_for_updates(path, running=False, say=print)  # not refused


def test_the_update_tool_gets_the_snapshot_never_the_live_file(tmp_path):
    import yaml

    snap = tmp_path / "final.db"
    config = {"server_name": "mss.test", "database": {"name": "sqlite3", "args": {}}}
    data = yaml.safe_load(migration.update_config(config, snap, tmp_path))
    assert data["database"] == {"name": "sqlite3", "args": {"database": str(snap)}}
    assert data["server_name"] == "mss.test"
    assert data["signing_key_path"] == "/etc/matrix-synapse/mss.test.signing.key"
    assert data["media_store_path"] == str(tmp_path / "media")


def test_a_checkpointed_snapshot_is_read_without_files_beside_it(tmp_path):
    """Counting as root must leave no root-owned log beside a snapshot that Synapse's user
    opens next; and a log beside it would be lost when the snapshot is renamed."""
    path = tmp_path / "final.db"
    make_sqlite(path, users=1, updates=2)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("INSERT INTO background_updates VALUES ('y')")
    conn.commit()
    conn.close()
    migration.checkpoint(path)
    assert migration.pending_updates(path) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final.db"]


def test_too_little_space_is_refused_with_the_numbers(tmp_path, monkeypatch):
    import os

    from matrix_synapse_setup.core.settings import Settings

    live = tmp_path / "homeserver.db"
    free = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize
    with open(live, "wb") as fh:
        fh.truncate(free)  # sparse: takes no room, needs twice its size
    facts = synapse_config.SqliteFacts(live, free, 1, 0, 0)
    monkeypatch.setattr(migration, "WORKDIR", tmp_path / "migration")
    remote = Settings.from_answers(host="db.example.org", password="x", sslmode="require")
    with pytest.raises(SetupError) as err:
        migration.check_space(facts, remote)  # a remote server: the work directory only
    text = err.value.message
    assert f"work directory {tmp_path / 'migration'}" in text
    assert "PostgreSQL's data directory" not in text
    assert f"{synapse_config.human_size(2 * free)} needed" in text
    assert "free" in text and "Nothing was changed" in text and "dpkg-reconfigure" in text
    live.unlink()
    make_sqlite(live, users=1)
    migration.check_space(facts._replace(size=live.stat().st_size), remote)  # room: no error


def test_snapshot_is_a_consistent_private_copy(tmp_path):
    import os
    import stat

    live = tmp_path / "homeserver.db"
    make_sqlite(live, users=3, events=7)
    copy = tmp_path / "copy.db"
    migration.snapshot(live, copy, (os.getuid(), os.getgid()))
    assert stat.S_IMODE(copy.stat().st_mode) == 0o600
    conn = sqlite3.connect(copy)
    assert synapse_config.table_counts(conn, ("users", "events", "nothere")) == {
        "users": 3,
        "events": 7,
    }
    conn.close()


def test_port_tool_reasons():
    tail = ["Traceback (most recent call last):", '  File "x.py", line 1', "psycopg2.Error: boom"]
    assert migration.why(tail, 5) == "psycopg2.Error: boom (exit 5)"
    pending = ["Pending background updates exist in the SQLite3 database. Please start"]
    assert migration.why(pending, 5) == migration.messages.PORT_PENDING_UPDATES


def test_rows_changed_since_the_last_copy_are_found(tmp_path):
    """The port tool never reads again the rows it copied from an "append-only" table:
    a row changed or deleted since that copy must make the table be copied again."""
    import shutil

    ported = tmp_path / "ported.db"
    make_sqlite(ported, users=3, events=4)
    new = tmp_path / "new.db"
    shutil.copy(ported, new)
    conn = sqlite3.connect(new)
    conn.execute("INSERT INTO events VALUES (99)")  # appended: the port tool takes it
    conn.commit()
    tables = ["users", "events", "rooms"]
    assert migration.changed_tables(ported, new, tables) == []
    conn.execute("UPDATE users SET name = 'renamed' WHERE name = 'u1'")
    conn.execute("DELETE FROM events WHERE id = 0")
    conn.execute("ALTER TABLE rooms ADD COLUMN extra TEXT")  # another schema
    conn.commit()
    conn.close()
    assert migration.changed_tables(ported, new, tables) == ["users", "events", "rooms"]
    assert migration.changed_tables(ported, new, ["gone"]) == ["gone"]


def test_progress_says_tables_rows_and_time_left():
    done = {"events": (500, 1000), "users": (10, 10)}
    assert migration.progress_line("first copy", done, 10.0) == (
        "first copy: 1/2 tables, 510/1010 rows, about 10 s left"
    )


@pytest.mark.skipif(__import__("os").geteuid() != 0, reason="runs a tool as a user (setgroups)")
def test_an_update_tool_that_would_hang_after_its_failure_is_ended(tmp_path):
    """update_synapse_database never exits once its background process failed: that line
    ends it, and the failure names the log."""
    import pwd

    tool = tmp_path / "update_synapse_database"
    tool.write_text(
        "#!/bin/sh\necho \"Background process 'background_updates' threw an exception\"\n"
        "exec sleep 600\n"
    )
    tool.chmod(0o755)
    log = tmp_path / "migrate.log"
    user = pwd.getpwuid(0)
    porter = migration.Porter(tmp_path / "port", tmp_path, tmp_path / "c", log, user, print)
    with pytest.raises(SetupError, match="background updates .* failed") as err:
        porter.update(tool, tmp_path / "update.yaml", "background updates")
    assert str(log) in err.value.message
    assert "threw an exception" in log.read_text()
