"""matrix-synapse-setup doctor against a real PostgreSQL cluster: a healthy database, a
database with the wrong collation, a superuser role, a remote server without TLS, and a
server that does not answer."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import tempfile
from pathlib import Path

import pytest

from matrix_synapse_setup.commands import doctor
from matrix_synapse_setup.commands.doctor.facts import Paths
from matrix_synapse_setup.commands.doctor.report import FAIL, OK, SKIPPED, WARN, Check, exit_code
from matrix_synapse_setup.core.settings import Settings
from matrix_synapse_setup.files import snippet
from scripts.devtools.pgcluster import free_port

PASSWORD = "doctor's pass:word \\ ü"
USER = "nobody"  # stands in for matrix-synapse: owns the password file
PG_ROWS = ("postgresql", "database", "privileges", "tls", "connections", "connection budget")


@pytest.fixture
def etc():
    top = Path(tempfile.mkdtemp(prefix="mss-doctor-"))
    os.chmod(top, 0o755)
    (top / "conf.d").mkdir(mode=0o755)
    (top / "homeserver.yaml").write_text(
        "server_name: mss.test\ndatabase: {name: sqlite3, args: {database: homeserver.db}}\n"
    )
    yield top
    shutil.rmtree(top)


def write_snippet(etc: Path, settings: Settings) -> Paths:
    """The snippet and password file as the package writes them, for *settings*."""
    nobody = pwd.getpwnam(USER)
    passfile = etc / "conf.d" / "database.pgpass"
    passfile.write_text(snippet.passfile_text(settings))
    os.chown(passfile, nobody.pw_uid, 0)
    passfile.chmod(0o600)
    text = snippet.render(settings).replace(str(snippet.PASSFILE), str(passfile))
    snip = etc / "conf.d" / "database.yaml"
    snip.write_text(text)
    os.chown(snip, 0, nobody.pw_gid)
    snip.chmod(0o640)
    return Paths(
        homeserver=etc / "homeserver.yaml",
        confd=etc / "conf.d",
        snippet=snip,
        backups=etc / "backups",
        synapse_user=USER,
        workers=etc / "workers",
    )


def rows_of(paths: Paths) -> dict[str, Check]:
    return {row.name: row for row in doctor.run(paths)}


def sql(cluster, statement: str, dbname: str = "postgres") -> None:
    with cluster.connect(dbname) as conn:
        conn.execute(statement)


def test_a_healthy_database_gives_ok_rows(cluster, provisioned, etc):
    paths = write_snippet(etc, provisioned)
    # Another client, of another role, is counted: the role sees the whole server.
    with cluster.connect():
        rows = rows_of(paths)
    for name in ("snippet", "passfile", "effective database", *PG_ROWS):
        assert rows[name].status == OK, rows[name]
    assert rows["postgresql"].detail.startswith("PostgreSQL ")
    assert f"localhost:{cluster.port}" in rows["postgresql"].detail
    assert f"'{provisioned.dbname}': UTF8, collation C, ctype C" in rows["database"].detail
    assert f"role {provisioned.user} owns database" in rows["privileges"].detail
    assert rows["tls"].detail.startswith("in use: TLS")  # the cluster has ssl = on
    used = int(rows["connections"].detail.split()[0])
    assert used >= 1, rows["connections"]
    # The database's size is known now: the free disk is compared with it.
    assert "the database takes" in rows["backup disk"].detail
    assert PASSWORD not in json.dumps([row.as_dict() for row in rows.values()])


def workers(etc: Path, count: int) -> None:
    """*count* worker files, as the workers' presets write them (one per process)."""
    directory = etc / "workers"
    directory.mkdir(exist_ok=True)
    for path in directory.glob("*.yaml"):
        path.unlink()
    for i in range(1, count + 1):
        (directory / f"client{i}.yaml").write_text(
            f"worker_app: synapse.app.generic_worker\nworker_name: client{i}\n"
        )


def test_the_connection_budget_counts_every_process_against_the_servers_limits(
    cluster, provisioned, etc
):
    [(max_connections,)] = cluster.query("SHOW max_connections")
    [(superuser_reserved,)] = cluster.query("SHOW superuser_reserved_connections")
    allowed = int(max_connections) - int(superuser_reserved)  # before PostgreSQL 16
    available = allowed - 10
    paths = write_snippet(etc, provisioned)  # cp_max 10 for each process
    row = rows_of(paths)["connection budget"]
    assert row.status == OK, row
    assert row.detail == (
        f"Synapse's pools fit: 1 process x 10 = 10 of {available} (max_connections "
        f"{max_connections} - {superuser_reserved} superuser_reserved_connections - 10 kept "
        "for admins and backups)"
    )
    fitting = available // 10  # processes
    workers(etc, fitting - 1)
    assert rows_of(paths)["connection budget"].status == OK
    # One more eats into the margin; as many as the role may open and one more cannot fit.
    workers(etc, fitting)
    row = rows_of(paths)["connection budget"]
    assert row.status == WARN, row
    assert f"{fitting + 1} processes x 10 = {(fitting + 1) * 10} of {available}" in row.detail
    needed = (fitting + 1) * 10 + int(superuser_reserved) + 10
    assert f"raise max_connections to at least {needed}" in row.fix
    workers(etc, allowed // 10)
    rows = rows_of(paths)
    assert rows["connection budget"].status == FAIL, rows["connection budget"]
    assert exit_code(list(rows.values())) == 2


def test_a_database_with_the_wrong_collation_fails_naming_it(cluster, provisioned, etc):
    wrong = provisioned.dbname + "_cutf8"
    sql(
        cluster,
        f'CREATE DATABASE "{wrong}" OWNER "{provisioned.user}" TEMPLATE template0 '
        "ENCODING 'UTF8' LC_COLLATE 'C.UTF-8' LC_CTYPE 'C.UTF-8'",
    )
    try:
        settings = Settings(
            host="localhost", port=cluster.port, dbname=wrong, user=provisioned.user,
            password=PASSWORD,
        )  # fmt: skip
        rows = rows_of(write_snippet(etc, settings))
    finally:
        sql(cluster, f'DROP DATABASE "{wrong}"')
    row = rows["database"]
    assert row.status == FAIL
    assert f"database '{wrong}'" in row.detail
    assert "collate 'C.UTF-8'" in row.detail and "ctype 'C.UTF-8'" in row.detail
    assert "LC_COLLATE 'C'" in row.fix
    assert rows["postgresql"].status == OK  # the login itself works
    assert exit_code(list(rows.values())) == 2


def test_a_superuser_role_warns(cluster, provisioned, etc):
    sql(cluster, f'ALTER ROLE "{provisioned.user}" SUPERUSER')
    try:
        rows = rows_of(write_snippet(etc, provisioned))
    finally:
        sql(cluster, f'ALTER ROLE "{provisioned.user}" NOSUPERUSER')
    assert rows["privileges"].status == WARN
    assert f"ALTER ROLE {provisioned.user} NOSUPERUSER" in rows["privileges"].fix


def test_a_role_without_the_right_to_create_tables_fails(cluster, provisioned, etc):
    dbname, user = provisioned.dbname, provisioned.user
    sql(cluster, f'ALTER DATABASE "{dbname}" OWNER TO postgres')
    sql(cluster, "ALTER SCHEMA public OWNER TO postgres", dbname)
    try:
        rows = rows_of(write_snippet(etc, provisioned))
    finally:
        sql(cluster, f'ALTER DATABASE "{dbname}" OWNER TO "{user}"')
    assert rows["privileges"].status == FAIL
    assert f"ALTER DATABASE {dbname} OWNER TO {user}" in rows["privileges"].fix


@pytest.mark.parametrize(("sslmode", "status"), [("disable", FAIL), ("require", WARN)])
def test_a_remote_server_without_checked_tls(cluster, provisioned, etc, sslmode, status):
    address = cluster.remote_address
    if address is None:
        pytest.skip("this machine has no non-loopback address")
    settings = Settings(
        host=address, port=cluster.port, dbname=provisioned.dbname, user=provisioned.user,
        password=PASSWORD, sslmode=sslmode,
    )  # fmt: skip
    paths = write_snippet(etc, settings)
    line = f"host {settings.dbname} {settings.user} {address}/32 scram-sha-256"
    with cluster.hba_lines(line):
        rows = rows_of(paths)
    assert rows["postgresql"].status == OK, rows["postgresql"]
    assert rows["tls"].status == status, rows["tls"]
    assert "verify-full" in rows["tls"].fix


@pytest.mark.server_language
def test_a_server_that_does_not_answer_fails_and_skips_what_needs_it(
    cluster, provisioned, etc, capsys
):
    port = free_port()
    settings = Settings(
        host="localhost", port=port, dbname=provisioned.dbname, user=provisioned.user,
        password=PASSWORD,
    )  # fmt: skip
    paths = write_snippet(etc, settings)
    code = doctor.main(as_json=True, paths=paths)
    data = json.loads(capsys.readouterr().out)
    rows = {row["name"]: row for row in data["checks"]}
    assert (code, data["status"], data["exit_code"]) == (2, FAIL, 2)
    row = rows["postgresql"]
    assert row["status"] == FAIL
    assert row["detail"].startswith(f"PostgreSQL does not answer at localhost:{port}")
    assert row["fix"].startswith("systemctl start postgresql")
    for name in PG_ROWS[1:]:
        assert rows[name]["status"] == SKIPPED, rows[name]
        assert "'postgresql'" in rows[name]["detail"]
    # What does not need the server is still checked.
    for name in ("snippet", "passfile", "effective database"):
        assert rows[name]["status"] == OK, rows[name]
    assert "1.0 GiB" in rows["backup disk"]["detail"]  # the database's size is not known


@pytest.mark.server_language
@pytest.mark.parametrize("fault", ["wrong password", "no such database"])
def test_a_refused_login_and_a_missing_database_are_told_apart(cluster, provisioned, etc, fault):
    settings = Settings(
        host="localhost", port=cluster.port, user=provisioned.user,
        dbname=provisioned.dbname + ("_missing" if fault == "no such database" else ""),
        password=PASSWORD + ("-wrong" if fault == "wrong password" else ""),
    )  # fmt: skip
    rows = rows_of(write_snippet(etc, settings))
    row = rows["postgresql"]
    assert row.status == FAIL
    if fault == "wrong password":
        assert row.detail.startswith(f"PostgreSQL at localhost:{cluster.port} refuses")
        assert "pg_hba.conf" in row.fix  # the package's advice for a refused login
    else:
        assert row.detail == (
            f"the database '{settings.dbname}' does not exist at localhost:{cluster.port}"
        )
        assert "create it (UTF8, collation and ctype C" in row.fix
    assert PASSWORD not in row.detail + row.fix
    assert {rows[name].status for name in PG_ROWS[1:]} == {SKIPPED}
