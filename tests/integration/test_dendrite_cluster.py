"""``matrix-synapse-setup dendrite`` against a real cluster: Dendrite's role and database
provisioned, its YAML changed in one value, the login proven with the very connection
string written, and every refusal changing nothing.

Peer authentication needs a system user named like the role: these tests use ``nobody``
(every Debian system has it), whose role they drop afterwards."""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from matrix_synapse_setup.commands import doctor
from matrix_synapse_setup.commands.doctor.report import OK, WARN
from matrix_synapse_setup.dendrite import config

ROOT = Path(__file__).resolve().parents[2]
PEER_USER = "nobody"
HARD = "p@ss/w%rd:x? #1"
SAMPLE = """\
# Dendrite's configuration (a shortened dendrite-sample.yaml).
version: 2

global:
  # The domain name of this homeserver.
  server_name: example.org
  # Global database connection pool, for PostgreSQL monolith deployments.
  database:
    connection_string: postgresql://username:password@hostname/dendrite?sslmode=disable
    max_open_conns: 90   # Dendrite's default
    max_idle_conns: 5
    conn_max_lifetime: -1

client_api:
  # Shared-secret registration.
  registration_shared_secret: ""
"""

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="acts as postgres and as nobody")


def admin(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    """The command, with its record for doctor kept beside the file it is given."""
    code = "import sys; from matrix_synapse_setup.commands.cli import main; sys.exit(main())"
    config_file = Path(args[args.index("--config") + 1])
    record = ["--record", str(config_file.parent / "record")]
    return subprocess.run(
        ["/usr/bin/python3", "-c", code, "dendrite", *args, *record],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )


def snapshot(cluster, path: Path) -> tuple:
    """Everything a refused run must leave as it was."""
    st = path.stat() if path.exists() else None
    return (
        hashlib.sha256(path.read_bytes()).hexdigest() if st else None,
        (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) if st else None,
        sorted(p.name for p in path.parent.iterdir()),
        cluster.query("SELECT datname FROM pg_database ORDER BY 1"),
        cluster.query("SELECT rolname, rolpassword FROM pg_authid ORDER BY 1"),
    )


@pytest.fixture
def dbname(cluster):
    name = f"dendrite_{secrets.token_hex(4)}"
    yield name
    with cluster.connect() as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))
        databases = conn.execute(
            "SELECT count(*) FROM pg_database WHERE datdba = "
            "(SELECT oid FROM pg_roles WHERE rolname = %s)",
            (PEER_USER,),
        ).fetchone()[0]
        if not databases:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(PEER_USER)))


@pytest.fixture
def yaml_file():
    """dendrite.yaml in a directory that Dendrite's user (nobody) can search, as
    /etc/dendrite is (pytest's own temporary directories are root's alone)."""
    directory = Path(tempfile.mkdtemp(prefix="mss-dendrite-"))
    directory.chmod(0o755)
    path = directory / "dendrite.yaml"
    path.write_text(SAMPLE)
    path.chmod(0o644)
    yield path
    shutil.rmtree(directory)


def peer_args(cluster, path: Path, dbname: str) -> list[str]:
    return [
        "--config", str(path), "--user", PEER_USER, "--dbname", dbname,
        "--host", cluster.socket_dir, "--port", str(cluster.port),
    ]  # fmt: skip


def tcp_args(cluster, path: Path, dbname: str) -> list[str]:
    return [
        "--config", str(path), "--user", dbname, "--dbname", dbname,
        "--host", "127.0.0.1", "--port", str(cluster.port), "--socket-dir", cluster.socket_dir,
    ]  # fmt: skip


def connection_string(path: Path) -> str:
    return config.read(path).connection_string


def database_facts(cluster, dbname: str) -> list:
    return cluster.query(
        "SELECT pg_encoding_to_char(encoding), datcollate, datctype, pg_get_userbyid(datdba)"
        " FROM pg_database WHERE datname = %s",
        (dbname,),
    )


def test_peer_by_default_then_unchanged(cluster, dbname, yaml_file):
    first = admin(*peer_args(cluster, yaml_file, dbname))
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip().endswith("changed: restart Dendrite")
    written = connection_string(yaml_file)
    assert conninfo_to_dict(written) == {
        "user": PEER_USER,
        "dbname": dbname,
        "host": cluster.socket_dir,
        "port": str(cluster.port),
        "sslmode": "disable",
    }
    assert database_facts(cluster, dbname) == [("UTF8", "C", "C", PEER_USER)]
    role = cluster.query(
        "SELECT rolpassword, rolsuper, rolcanlogin FROM pg_authid WHERE rolname = %s",
        (PEER_USER,),
    )
    assert role == [(None, False, True)]
    # Only that line changed; the backup is the old file, 0600.
    old, new = SAMPLE.splitlines(), yaml_file.read_text().splitlines()
    assert [i for i, (a, b) in enumerate(zip(old, new, strict=True)) if a != b] == [8]
    backups = list(yaml_file.parent.glob("dendrite.yaml.before-setup-*"))
    assert len(backups) == 1
    assert backups[0].read_text() == SAMPLE
    assert stat.S_IMODE(backups[0].stat().st_mode) == 0o600
    assert stat.S_IMODE(yaml_file.stat().st_mode) == 0o644  # no password: mode kept
    # The login Dendrite will make, as the user it runs as.
    who = subprocess.run(
        ["setpriv", "--reuid", PEER_USER, "--regid", "nogroup", "--clear-groups",
         "/usr/bin/psql", written, "-XAtc", "SELECT current_user, current_database()"],
        capture_output=True, text=True, check=False, env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert who.stdout.strip() == f"{PEER_USER}|{dbname}", who.stderr
    before = snapshot(cluster, yaml_file)
    second = admin(*peer_args(cluster, yaml_file, dbname))
    assert second.returncode == 0, second.stderr
    assert "unchanged: nothing to do" in second.stdout
    assert snapshot(cluster, yaml_file) == before
    assert (yaml_file.parent / "record").read_text() == f"{yaml_file.resolve()}\n"


def test_a_password_with_uri_characters_over_tcp(cluster, dbname, yaml_file, tmp_path):
    os.chown(yaml_file, 65534, 65534)
    password_file = tmp_path / "pw"
    password_file.write_text(HARD + "\n")
    args = [*tcp_args(cluster, yaml_file, dbname), "--password-file", str(password_file)]
    first = admin(*args)
    assert first.returncode == 0, first.stderr
    assert HARD not in first.stdout + first.stderr
    assert "now holds the database password" in first.stdout
    written = connection_string(yaml_file)
    params = conninfo_to_dict(written)
    assert params["password"] == HARD
    assert (params["host"], params["user"], params["dbname"]) == ("127.0.0.1", dbname, dbname)
    assert HARD not in yaml_file.read_text()  # only its percent-encoded form
    st = yaml_file.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (65534, 65534, 0o640)
    assert cluster.can_login(dbname, dbname, HARD)
    assert database_facts(cluster, dbname) == [("UTF8", "C", "C", dbname)]
    before = snapshot(cluster, yaml_file)
    second = admin(*args)
    assert "unchanged: nothing to do" in second.stdout, second.stderr
    assert snapshot(cluster, yaml_file) == before


def test_without_a_password_file_one_is_made_then_kept(cluster, dbname, yaml_file):
    first = admin(*tcp_args(cluster, yaml_file, dbname))
    assert first.returncode == 0, first.stderr
    password = conninfo_to_dict(connection_string(yaml_file))["password"]
    assert len(password) >= 32 and cluster.can_login(dbname, dbname, password)
    before = snapshot(cluster, yaml_file)
    second = admin(*tcp_args(cluster, yaml_file, dbname))
    assert "unchanged: nothing to do" in second.stdout, second.stderr
    assert snapshot(cluster, yaml_file) == before


def test_dry_run_shows_a_masked_diff_and_changes_nothing(cluster, dbname, yaml_file):
    before = snapshot(cluster, yaml_file)
    result = admin(*tcp_args(cluster, yaml_file, dbname), "--password-file", "-", "--dry-run",
                   stdin=HARD)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "-    connection_string: postgresql://username:****@hostname/dendrite" in result.stdout
    assert f"+    connection_string: postgresql://{dbname}:****@127.0.0.1:" in result.stdout
    assert "dry run: nothing changed" in result.stdout
    assert "%40" not in result.stdout and "password@" not in result.stdout
    assert snapshot(cluster, yaml_file) == before


def test_the_budget_warns_with_the_numbers(cluster, dbname, yaml_file):
    result = admin(*peer_args(cluster, yaml_file, dbname))
    assert result.returncode == 0, result.stderr
    limit = cluster.query("SHOW max_connections")[0][0]
    assert "1 process x 90 = 90 of" in result.stderr
    assert f"max_connections {limit}" in result.stderr
    rows = {row.name: row for row in doctor.run(dendrite_config=yaml_file)}
    assert rows["dendrite config"].status == OK
    assert rows["dendrite database"].status == OK
    assert f"owner {PEER_USER}" in rows["dendrite database"].detail
    assert rows["dendrite connection budget"].status == WARN
    yaml_file.write_text(yaml_file.read_text().replace("max_open_conns: 90", "max_open_conns: 20"))
    rows = {row.name: row for row in doctor.run(dendrite_config=yaml_file)}
    assert rows["dendrite connection budget"].status == OK
    again = admin(*peer_args(cluster, yaml_file, dbname))
    assert "warning" not in again.stderr


def test_doctor_fails_a_password_others_can_read(cluster, dbname, yaml_file):
    assert admin(*tcp_args(cluster, yaml_file, dbname)).returncode == 0
    yaml_file.chmod(0o644)
    rows = {row.name: row for row in doctor.run(dendrite_config=yaml_file)}
    assert rows["dendrite config"].status == "fail"
    assert rows["dendrite config"].fix == f"chmod o-rwx {yaml_file}"


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda t: t.replace("postgresql://username:password@hostname/dendrite?sslmode=disable",
                             "file:dendrite.db"), "not PostgreSQL: Dendrite's data is there"),
        (lambda t: t.replace("username:password@hostname/dendrite",
                             "dendrite:x@db.example.org/dendrite"), "Dendrite's data may be there"),
        (lambda t: t + "sync_api:\n  database:\n    connection_string: postgresql://a:b@c/sync\n",
         "sync_api.database.connection_string to another database"),
        (lambda t: "global: [unclosed\n", "is not valid YAML"),
    ],
)  # fmt: skip
def test_refusals_change_nothing(cluster, dbname, yaml_file, change, words):
    yaml_file.write_text(change(SAMPLE))
    before = snapshot(cluster, yaml_file)
    result = admin(*tcp_args(cluster, yaml_file, dbname), "--password-file", "-", stdin=HARD)
    assert result.returncode == 1
    assert words in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert snapshot(cluster, yaml_file) == before


def test_a_superuser_role_is_refused(cluster, dbname, yaml_file):
    with cluster.connect() as conn:
        conn.execute(sql.SQL("CREATE ROLE {} SUPERUSER LOGIN").format(sql.Identifier(dbname)))
    before = snapshot(cluster, yaml_file)
    result = admin(*tcp_args(cluster, yaml_file, dbname), "--password-file", "-", stdin=HARD)
    assert result.returncode == 1
    assert "is a PostgreSQL superuser" in result.stderr
    assert snapshot(cluster, yaml_file) == before


def test_an_existing_role_keeps_its_password_under_peer(cluster, dbname, yaml_file):
    with cluster.connect() as conn:
        create = sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'kept'")
        conn.execute(create.format(sql.Identifier(PEER_USER)))
    hashed = cluster.query("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (PEER_USER,))
    result = admin(*peer_args(cluster, yaml_file, dbname))
    assert result.returncode == 0, result.stderr
    assert f"role {PEER_USER}: unchanged" in result.stdout
    assert (
        cluster.query("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (PEER_USER,))
        == hashed
    )


def test_a_symbolic_link_stays_one(cluster, dbname, yaml_file):
    link = yaml_file.parent / "link.yaml"
    link.symlink_to(yaml_file)
    result = admin(*peer_args(cluster, link, dbname))
    assert result.returncode == 0, result.stderr
    assert link.is_symlink()
    assert conninfo_to_dict(connection_string(yaml_file))["dbname"] == dbname
    assert list(yaml_file.parent.glob("dendrite.yaml.before-setup-*"))


def test_doctor_fails_a_file_dendrites_user_cannot_read(cluster, dbname, yaml_file):
    assert admin(*peer_args(cluster, yaml_file, dbname)).returncode == 0
    yaml_file.chmod(0o600)
    rows = {row.name: row for row in doctor.run(dendrite_config=yaml_file)}
    assert rows["dendrite config"].status == "fail"
    assert f"cannot be read by {PEER_USER}" in rows["dendrite config"].detail


def test_a_password_without_a_host_goes_over_tcp(cluster, dbname, yaml_file):
    result = admin(
        "--config", str(yaml_file), "--user", dbname, "--dbname", dbname,
        "--port", str(cluster.port), "--socket-dir", cluster.socket_dir,
        "--password-file", "-", stdin=HARD,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "over TCP to 127.0.0.1" in result.stderr
    params = conninfo_to_dict(connection_string(yaml_file))
    assert (params["host"], params["password"]) == ("127.0.0.1", HARD)


def test_every_component_override_is_counted(cluster, dbname, yaml_file):
    blocks = "".join(
        f"{section}:\n  database:\n    connection_string: file:{section}.db\n"
        for section in ("federation_api", "media_api", "sync_api")
    )
    yaml_file.write_text(SAMPLE + blocks)
    before = snapshot(cluster, yaml_file)
    result = admin(*peer_args(cluster, yaml_file, dbname))
    assert result.returncode == 1
    assert "federation_api.database.connection_string (and 2 more components)" in result.stderr
    assert snapshot(cluster, yaml_file) == before
