"""Dumps and restores against a real cluster: the dump that the apt hook takes before a
Synapse upgrade, the refusals (pg_dump failing, a full disk) and the override, a restore
into a new database; the one-time keys that no dump holds and that a restore of an older
dump empties; the archive of the server's files beside each dump."""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from matrix_synapse_setup.commands import backup, restore
from matrix_synapse_setup.core.errors import SetupError, run
from matrix_synapse_setup.core.settings import Settings
from matrix_synapse_setup.postgres.dump import (
    EXCLUDE_ONE_TIME_KEYS,
    dump_holds_one_time_keys,
    pg_dump_command,
)
from matrix_synapse_setup.postgres.provision import provision
from matrix_synapse_setup.postgres.queries import import_psycopg
from matrix_synapse_setup.synapse import config as synapse_config
from matrix_synapse_setup.synapse.config import ServerFiles

psycopg = import_psycopg()
sql = psycopg.sql
PASSWORD = "s3cret-Backup 'pass'"
UPGRADE = (
    "VERSION 3\nAPT::Architecture=amd64\n\n"
    "matrix-synapse-py3 1.163.2+mss.systest all none < 1.163.3+mss.systest all none "
    "/tmp/debs/matrix-synapse-py3_1.163.3+mss.systest_all.deb\n"
)


@pytest.fixture
def synapse_db(cluster, names):
    """A provisioned database (as the package makes it) with a table of rows, owned by
    Synapse's role; its Settings."""
    dbname, user = names
    settings = Settings(
        host="localhost", port=cluster.port, dbname=dbname, user=user, password=PASSWORD
    )
    provision(settings, socket_dir=cluster.socket_dir)
    conninfo = {"host": "127.0.0.1", "port": cluster.port, "dbname": dbname, "user": user}
    with psycopg.connect(**conninfo, password=PASSWORD, sslmode="disable") as conn:
        conn.execute("CREATE TABLE events (id int PRIMARY KEY, body text)")
        conn.execute("INSERT INTO events SELECT n, 'message ' || n FROM generate_series(1, 500) n")
        # Synapse's table of one-time keys (its columns), with keys of one device.
        conn.execute(
            "CREATE TABLE e2e_one_time_keys_json (user_id text NOT NULL, device_id text NOT NULL,"
            " algorithm text NOT NULL, key_id text NOT NULL, ts_added_ms bigint NOT NULL,"
            " key_json text NOT NULL, UNIQUE (user_id, device_id, algorithm, key_id))"
        )
        conn.execute(
            "INSERT INTO e2e_one_time_keys_json SELECT '@a:mss.test', 'DEV', 'signed_curve25519',"
            " 'AAAAA' || n, 0, '{}' FROM generate_series(1, 3) n"
        )
    return settings


@pytest.fixture
def restored(cluster):
    """Databases a test restored into: dropped afterwards."""
    made: list[str] = []
    yield made
    with cluster.connect() as conn:
        for name in made:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


def dumps(directory: Path) -> list[Path]:
    return sorted(directory.glob("synapse-*.dump"))


def test_a_dump_restores_into_a_new_database_with_the_rows(cluster, synapse_db, tmp_path, restored):
    directory = tmp_path / "backups"
    path = backup.dump(
        synapse_db, "1.163.2+mss.systest", directory=directory, socket_dir=cluster.socket_dir
    )
    assert path.parent == directory
    assert path.name.startswith("synapse-1.163.2+mss.systest-")
    st = path.stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o600)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert path.read_bytes()[:5] == b"PGDMP"  # pg_dump's custom format
    assert [p.name for p in directory.iterdir()] == [path.name]  # no temporary file left

    plan = restore.RestorePlan(
        path,
        "1.163.2+mss.systest",
        synapse_db,
        restore.restore_name(synapse_db.dbname),
        cluster.socket_dir,
    )
    restored.append(plan.new_dbname)
    lines = restore.restore_database(plan)
    assert f"database {plan.new_dbname}: created" in lines
    [(count, last)] = cluster.query(
        "SELECT count(*), max(body) FROM events", dbname=plan.new_dbname
    )
    assert (count, last) == (500, "message 99")
    [(enc, collate, ctype, owner)] = cluster.query(
        "SELECT pg_encoding_to_char(encoding), datcollate, datctype, pg_get_userbyid(datdba)"
        " FROM pg_database WHERE datname = %s",
        (plan.new_dbname,),
    )
    assert (enc, collate, ctype, owner) == ("UTF8", "C", "C", synapse_db.user)
    [(table_owner,)] = cluster.query(
        "SELECT tableowner FROM pg_tables WHERE tablename = 'events'", dbname=plan.new_dbname
    )
    assert table_owner == synapse_db.user  # Synapse's role can migrate its schema
    # The old database is untouched.
    [(old_count,)] = cluster.query("SELECT count(*) FROM events", dbname=synapse_db.dbname)
    assert old_count == 500

    # A second restore at the same second is refused: nothing is overwritten.
    with pytest.raises(SetupError, match="exists already"):
        restore.restore_database(plan)


def test_a_failed_pg_restore_says_so_and_keeps_synapses_database(
    cluster, synapse_db, tmp_path, restored
):
    bogus = tmp_path / "synapse-1.0-20261201T000000Z.dump"
    bogus.write_bytes(b"PGDMP not really a dump")
    plan = restore.RestorePlan(
        bogus, "1.0", synapse_db, restore.restore_name(synapse_db.dbname), cluster.socket_dir
    )
    restored.append(plan.new_dbname)
    with pytest.raises(SetupError, match="pg_restore .* failed") as err:
        restore.restore_database(plan)
    assert f"dropdb {plan.new_dbname}" in err.value.message


def test_retention_keeps_the_newest_n(cluster, synapse_db, tmp_path):
    import datetime

    directory = tmp_path / "backups"
    directory.mkdir(mode=0o700)
    foreign = directory / "homeserver-20260101T000000Z.db"
    foreign.write_text("not ours")
    base = datetime.datetime(2026, 12, 1, 9, 0, tzinfo=datetime.UTC)
    for minute in range(4):
        backup.dump(
            synapse_db,
            f"1.{minute}",
            directory=directory,
            socket_dir=cluster.socket_dir,
            keep=2,
            now=base + datetime.timedelta(minutes=minute),
        )
    assert [p.name for p in dumps(directory)] == [
        "synapse-1.2-20261201T090200Z.dump",
        "synapse-1.3-20261201T090300Z.dump",
    ]
    assert foreign.exists()


def test_a_failing_pg_dump_refuses_and_leaves_no_file(cluster, synapse_db, tmp_path):
    """pg_dump cannot reach the cluster (a socket directory where none listens): the
    upgrade is refused, with the reason and the override."""
    directory = tmp_path / "backups"
    empty = tmp_path / "no-socket-here"
    empty.mkdir()
    with pytest.raises(SetupError) as err:
        backup.dump(synapse_db, "1.163.2", directory=directory, socket_dir=str(empty))
    message = err.value.message
    assert "pg_dump of database" in message and "failed" in message
    assert backup.SKIP_ENV in message
    assert len(message.splitlines()) <= 2
    assert list(directory.iterdir()) == []


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str = "1m"):
    path.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)], check=True
    )
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def test_a_full_disk_refuses_before_dumping(cluster, synapse_db, tmp_path):
    with small_tmpfs(tmp_path / "small") as directory:
        with pytest.raises(SetupError) as err:
            backup.dump(synapse_db, "1.163.2", directory=directory, socket_dir=cluster.socket_dir)
        assert list(directory.iterdir()) == []
    message = err.value.message
    assert f"{directory} has" in message and "free" in message
    assert f"{backup.SKIP_ENV}=1 apt upgrade" in message
    assert len(message.splitlines()) <= 2


def test_the_hook_refuses_an_upgrade_on_a_full_disk_unless_overridden(
    cluster, synapse_db, tmp_path, monkeypatch, capsys
):
    with small_tmpfs(tmp_path / "small") as directory:

        def hook() -> int:
            return backup.hook(
                UPGRADE,
                directory=directory,
                socket_dir=cluster.socket_dir,
                database=lambda: synapse_db,
            )

        monkeypatch.delenv(backup.SKIP_ENV, raising=False)
        monkeypatch.delenv("DPKG_MAINTSCRIPT_DEBUG", raising=False)
        assert run(hook) == 1
        err = capsys.readouterr().err
        assert "no Synapse upgrade without a dump" in err and "Traceback" not in err
        monkeypatch.setenv(backup.SKIP_ENV, "1")
        assert run(hook) == 0
        err = capsys.readouterr().err
        assert "warning" in err and backup.SKIP_ENV in err
        assert list(directory.iterdir()) == []


def test_the_hook_dumps_before_an_upgrade_and_ignores_everything_else(
    cluster, synapse_db, tmp_path, capsys
):
    directory = tmp_path / "backups"
    args = {"directory": directory, "socket_dir": cluster.socket_dir}
    nothing = "VERSION 3\n\nlibpq5 15.7 amd64 same < 15.8 amd64 same /x/libpq5_15.8_amd64.deb\n"
    assert backup.hook(nothing, database=lambda: synapse_db, **args) == 0
    assert not directory.exists()
    assert backup.hook(UPGRADE, database=lambda: None, **args) == 0  # SQLite, or not ours
    assert not directory.exists()
    assert backup.hook(UPGRADE, database=lambda: synapse_db, **args) == 0
    [made] = dumps(directory)
    assert made.name.startswith("synapse-1.163.2+mss.systest-")
    err = capsys.readouterr().err
    assert str(made) in err and "1.163.2+mss.systest -> 1.163.3+mss.systest" in err
    assert PASSWORD not in err


def test_a_remote_server_is_dumped_as_the_role_with_its_password_file(
    cluster, synapse_db, tmp_path, monkeypatch
):
    """Remote mode: pg_dump logs in as Synapse's role over TCP; the password comes from
    the password file (PGPASSFILE), never the command line.  The admin's own PG*
    variables do not steer it (a service that does not exist would make it fail)."""
    from matrix_synapse_setup.files import snippet

    monkeypatch.setenv("PGSERVICE", "no-such-service")
    monkeypatch.setenv("PGSSLMODE", "require")  # the cluster has no TLS

    passfile = tmp_path / "database.pgpass"
    remote = Settings(
        host="127.0.0.1",
        port=cluster.port,
        dbname=synapse_db.dbname,
        user=synapse_db.user,
        password=PASSWORD,
        sslmode="disable",
    )
    passfile.write_text(snippet.passfile_text(remote))
    os.chmod(passfile, 0o600)
    cmd, env, kwargs = pg_dump_command(_as_remote(remote), cluster.socket_dir, str(passfile))
    assert PASSWORD not in " ".join(cmd) and all(PASSWORD not in v for v in env.values())
    assert env["PGPASSFILE"] == str(passfile) and kwargs == {}
    out = subprocess.run(cmd, env=env, capture_output=True, check=False)
    assert out.returncode == 0, out.stderr.decode()
    assert out.stdout[:5] == b"PGDMP"


def _as_remote(settings: Settings) -> Settings:
    """The same server seen as a remote one (Settings.local is False)."""

    class Remote(Settings):
        @property
        def local(self) -> bool:
            return False

    return Remote(**{f: getattr(settings, f) for f in settings.__dataclass_fields__})


@pytest.mark.server_language
def test_every_refusal_of_the_hook_names_the_override(cluster, synapse_db, tmp_path, monkeypatch):
    """A server that does not answer (here: nothing on that port) is refused with the
    connection's own explanation, and the override on a line of its own."""
    import dataclasses

    from scripts.devtools.pgcluster import free_port

    monkeypatch.delenv(backup.SKIP_ENV, raising=False)
    gone = dataclasses.replace(synapse_db, port=free_port())
    with pytest.raises(SetupError) as err:
        backup.hook(UPGRADE, directory=tmp_path / "b", database=lambda: gone)
    assert err.value.message.splitlines()[-1].endswith(f"{backup.SKIP_ENV}=1 apt upgrade")
    assert PASSWORD not in err.value.message


# --- one-time keys ----------------------------------------------------------------------


def one_time_keys(cluster, dbname: str) -> int:
    [(count,)] = cluster.query("SELECT count(*) FROM e2e_one_time_keys_json", dbname=dbname)
    return count


def test_a_dump_has_the_one_time_keys_table_but_none_of_its_rows(
    cluster, synapse_db, tmp_path, restored
):
    path = backup.dump(
        synapse_db, "1.163.2", directory=tmp_path / "backups", socket_dir=cluster.socket_dir
    )
    assert dump_holds_one_time_keys(path) is False
    listing = subprocess.run(
        ["pg_restore", "-l", str(path)], capture_output=True, text=True, check=True
    ).stdout
    assert "TABLE public e2e_one_time_keys_json" in listing  # the schema stays
    assert "TABLE DATA public events" in listing
    plan = restore.RestorePlan(
        path, "1.163.2", synapse_db, restore.restore_name(synapse_db.dbname), cluster.socket_dir
    )
    assert not any("e2e_one_time_keys_json" in line for line in plan.describe())
    restored.append(plan.new_dbname)
    lines = restore.restore_database(plan)
    assert not any("e2e_one_time_keys_json" in line for line in lines)
    assert one_time_keys(cluster, plan.new_dbname) == 0
    [(count,)] = cluster.query("SELECT count(*) FROM events", dbname=plan.new_dbname)
    assert count == 500
    assert one_time_keys(cluster, synapse_db.dbname) == 3  # Synapse's database: untouched


def test_a_restore_of_an_older_dump_empties_the_one_time_keys(
    cluster, synapse_db, tmp_path, restored
):
    """A dump as earlier versions made it (with the keys' rows): the plan says the table
    is emptied, the restore empties it in the new database and says how many keys went."""
    path = tmp_path / "synapse-1.0-20261101T000000Z.dump"
    cmd, env, kwargs = pg_dump_command(synapse_db, cluster.socket_dir, None)
    cmd = [c for c in cmd if c != EXCLUDE_ONE_TIME_KEYS]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    with os.fdopen(fd, "wb") as out:
        subprocess.run(cmd, stdout=out, env=env, check=True, **kwargs)
    assert dump_holds_one_time_keys(path) is True
    plan = restore.RestorePlan(
        path,
        "1.0",
        synapse_db,
        restore.restore_name(synapse_db.dbname),
        cluster.socket_dir,
        one_time_keys=dump_holds_one_time_keys(path),
    )
    assert any("empty table e2e_one_time_keys_json" in line for line in plan.describe())
    restored.append(plan.new_dbname)
    lines = restore.restore_database(plan)
    assert "e2e_one_time_keys_json: emptied (3 one-time key(s)" in "\n".join(lines)
    assert one_time_keys(cluster, plan.new_dbname) == 0
    [(count,)] = cluster.query("SELECT count(*) FROM events", dbname=plan.new_dbname)
    assert count == 500
    assert one_time_keys(cluster, synapse_db.dbname) == 3


def test_a_dump_that_pg_restore_cannot_read_is_refused_before_anything(tmp_path):
    bogus = tmp_path / "synapse-1.0-20261201T000000Z.dump"
    bogus.write_bytes(b"not a dump")
    with pytest.raises(SetupError, match="not a dump that pg_restore can read"):
        dump_holds_one_time_keys(bogus)


# --- the archive of the server's files --------------------------------------------------


def a_server(base: Path) -> ServerFiles:
    etc = base / "etc" / "matrix-synapse"
    (etc / "conf.d").mkdir(parents=True)
    (etc / "homeserver.yaml").write_text(f"signing_key_path: {etc}/mss.test.signing.key\n")
    (etc / "conf.d" / "server_name.yaml").write_text("server_name: mss.test\n")
    (etc / "mss.test.signing.key").write_text("ed25519 a_AAAA secret\n")
    return synapse_config.server_files(etc / "homeserver.yaml", etc / "conf.d")


def test_each_dump_has_its_archive_kept_and_pruned_with_it(cluster, synapse_db, tmp_path):
    import datetime

    server = a_server(tmp_path)
    directory = tmp_path / "backups"
    base = datetime.datetime(2026, 12, 1, 9, 0, tzinfo=datetime.UTC)
    made = []
    for minute in range(3):
        made.append(
            backup.dump(
                synapse_db,
                f"1.{minute}",
                directory=directory,
                socket_dir=cluster.socket_dir,
                keep=2,
                now=base + datetime.timedelta(minutes=minute),
                server=server,
            )
        )
    assert sorted(p.name for p in directory.iterdir()) == [
        "synapse-1.1-20261201T090100Z.config.tar",
        "synapse-1.1-20261201T090100Z.dump",
        "synapse-1.2-20261201T090200Z.config.tar",
        "synapse-1.2-20261201T090200Z.dump",
    ]
    beside = backup.archive_of(made[-1])
    st = beside.stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o600)
    with tarfile.open(beside) as tar:
        names = tar.getnames()
    etc = str(tmp_path / "etc" / "matrix-synapse").lstrip("/")
    assert sorted(names) == sorted(
        f"{etc}/{n}"
        for n in ("homeserver.yaml", "conf.d", "conf.d/server_name.yaml", "mss.test.signing.key")
    )


def test_a_failed_dump_leaves_no_archive_either(cluster, synapse_db, tmp_path):
    directory = tmp_path / "backups"
    empty = tmp_path / "no-socket-here"
    empty.mkdir()
    with pytest.raises(SetupError, match="pg_dump of database"):
        backup.dump(
            synapse_db,
            "1.163.2",
            directory=directory,
            socket_dir=str(empty),
            server=a_server(tmp_path),
        )
    assert list(directory.iterdir()) == []


def test_the_hook_writes_the_archive_beside_the_dump_and_says_where(
    cluster, synapse_db, tmp_path, capsys
):
    directory = tmp_path / "backups"
    server = a_server(tmp_path)
    assert (
        backup.hook(
            UPGRADE,
            directory=directory,
            socket_dir=cluster.socket_dir,
            database=lambda: synapse_db,
            server=server,
        )
        == 0
    )
    [made] = dumps(directory)
    beside = backup.archive_of(made)
    assert beside.is_file()
    err = capsys.readouterr().err
    assert f"signing key and configuration: {beside}" in err
    # A key that is gone is left out, and the hook says so.
    server.signing_key.unlink()
    backup.hook(
        UPGRADE.replace("1.163.2+mss", "1.163.1+mss"),
        directory=directory,
        socket_dir=cluster.socket_dir,
        database=lambda: synapse_db,
        server=server,
    )
    err = capsys.readouterr().err
    assert f"{server.signing_key} is not in" in err
