"""Provisioning and verification against a real PostgreSQL cluster."""

from __future__ import annotations

import pytest

from matrix_synapse_setup.core.errors import SetupError
from matrix_synapse_setup.core.settings import Settings
from matrix_synapse_setup.core.steps import changed
from matrix_synapse_setup.postgres.provision import provision, verify
from matrix_synapse_setup.postgres.queries import ServerUnavailable, import_psycopg

psycopg = import_psycopg()
sql = psycopg.sql

ADVERSARIAL_PASSWORDS = [
    'it\'s "quoted"',
    "back\\slash\\",
    " leading and trailing spaces ",
    "$HOME %s %(x)s {0} ${x}",
    "user:pass@host/db?x=1#frag",
    "'; DROP ROLE postgres; --",
    "äöü ñ 日本語 пароль ﬁ",
    "- yes",
    "null",
    "a" * 200,
    "=",
    "e\u0301",  # combining accent: SASLprep normalises it
]


def at(host, cluster, dbname, user, password="s3cret-Pass", **kw) -> Settings:
    """Settings for the test cluster reached at *host*."""
    return Settings(host=host, port=cluster.port, dbname=dbname, user=user, password=password, **kw)


def local(cluster, dbname, user, password="s3cret-Pass", **kw) -> Settings:
    return at("localhost", cluster, dbname, user, password, **kw)


def run(cluster, settings):
    return provision(settings, socket_dir=cluster.socket_dir)


def outcomes(steps):
    return {step.name.split(" on ")[0]: step.outcome for step in steps}


def test_fresh_cluster_gets_role_and_database_as_synapse_needs(cluster, names):
    dbname, user = names
    steps = run(cluster, local(cluster, dbname, user))
    got = outcomes(steps)
    assert got[f"role {user}"] == "created"
    assert got[f"database {dbname}"] == "created"
    assert got[f"login as {user} over TCP"] == "ok"
    assert got[f"create tables in {dbname}"] == "ok"

    [(enc, collate, ctype, owner)] = cluster.query(
        "SELECT pg_encoding_to_char(encoding), datcollate, datctype, pg_get_userbyid(datdba)"
        " FROM pg_database WHERE datname = %s",
        (dbname,),
    )
    assert (enc, collate, ctype, owner) == ("UTF8", "C", "C", user)
    [(login, superuser, createdb, createrole, stored)] = cluster.query(
        "SELECT rolcanlogin, rolsuper, rolcreatedb, rolcreaterole, rolpassword"
        " FROM pg_authid WHERE rolname = %s",
        (user,),
    )
    assert (login, superuser, createdb, createrole) == (True, False, False, False)
    assert stored.startswith("SCRAM-SHA-256$")
    assert cluster.can_login(dbname, user, "s3cret-Pass")
    # The probe table of the verification was rolled back.
    assert cluster.query(
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'", dbname=dbname
    ) == [(0,)]


def test_second_run_changes_nothing_and_says_so(cluster, names):
    dbname, user = names
    settings = local(cluster, dbname, user, password="äöü ñ spaces 'and' quotes")
    assert changed(run(cluster, settings))
    [(stored_before,)] = cluster.query(
        "SELECT rolpassword FROM pg_authid WHERE rolname = %s", (user,)
    )
    again = run(cluster, settings)
    assert not changed(again)
    assert outcomes(again)[f"role {user}"] == "unchanged"
    assert outcomes(again)[f"database {dbname}"] == "unchanged"
    [(stored_after,)] = cluster.query(
        "SELECT rolpassword FROM pg_authid WHERE rolname = %s", (user,)
    )
    assert stored_after == stored_before  # not even re-salted


def test_new_password_rotates_the_role_password(cluster, names):
    dbname, user = names
    run(cluster, local(cluster, dbname, user, password="old-password"))
    steps = run(cluster, local(cluster, dbname, user, password="new-password"))
    assert outcomes(steps)[f"role {user}"] == "changed"
    assert outcomes(steps)[f"database {dbname}"] == "unchanged"
    assert cluster.can_login(dbname, user, "new-password")
    assert not cluster.can_login(dbname, user, "old-password")


@pytest.mark.parametrize("password", ADVERSARIAL_PASSWORDS)
def test_any_printable_password_works_and_is_stable(cluster, names, password):
    dbname, user = names
    settings = local(cluster, dbname, user, password=password)
    run(cluster, settings)
    assert cluster.can_login(dbname, user, password)
    assert not changed(run(cluster, settings))


def test_the_clear_text_password_never_reaches_the_server(cluster, names):
    dbname, user = names
    password = "never-in-the-server-log-" + user
    with cluster.connect() as conn:
        conn.execute("ALTER SYSTEM SET log_statement = 'all'")
        conn.execute("SELECT pg_reload_conf()")
    try:
        run(cluster, local(cluster, dbname, user, password=password))
    finally:
        with cluster.connect() as conn:
            conn.execute("ALTER SYSTEM RESET log_statement")
            conn.execute("SELECT pg_reload_conf()")
    log = cluster.log.read_text(errors="replace")
    assert f'CREATE ROLE "{user}"' in log  # the statement was logged ...
    assert password not in log  # ... with the hash, not the password


def test_existing_right_database_with_rows_survives(cluster, names):
    dbname, user = names
    run(cluster, local(cluster, dbname, user))
    with cluster.connect(dbname) as conn:
        conn.execute("CREATE TABLE events (id int)")
        conn.execute("INSERT INTO events SELECT generate_series(1, 100)")
        conn.execute(sql.SQL("ALTER TABLE events OWNER TO {}").format(sql.Identifier(user)))
    steps = run(cluster, local(cluster, dbname, user, password="rotated"))
    assert outcomes(steps)[f"database {dbname}"] == "unchanged"
    assert cluster.query("SELECT count(*) FROM events", dbname=dbname) == [(100,)]


def test_wrong_locale_database_is_refused_untouched(cluster, names):
    dbname, user = names
    with cluster.connect() as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE template0 LOCALE 'C.UTF-8'").format(
                sql.Identifier(dbname)
            )
        )
    with cluster.connect(dbname) as conn:
        conn.execute("CREATE TABLE precious (v text)")
        conn.execute("INSERT INTO precious VALUES ('keep me')")
    before = cluster.query(
        "SELECT datcollate, datctype, datdba FROM pg_database" " WHERE datname = %s", (dbname,)
    )
    with pytest.raises(SetupError) as info:
        run(cluster, local(cluster, dbname, user))
    message = str(info.value)
    assert dbname in message and "'C.UTF-8'" in message and "LC_COLLATE 'C'" in message
    assert "pg_dump" in message
    assert not isinstance(info.value, ServerUnavailable)
    assert (
        cluster.query(
            "SELECT datcollate, datctype, datdba FROM pg_database" " WHERE datname = %s", (dbname,)
        )
        == before
    )
    assert cluster.query("SELECT v FROM precious", dbname=dbname) == [("keep me",)]
    # A refused answer changes nothing: not even the role was created.
    assert cluster.query("SELECT 1 FROM pg_roles WHERE rolname = %s", (user,)) == []


def test_database_owned_by_someone_else_is_refused(cluster, names):
    dbname, user = names
    with cluster.connect() as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE template0 LOCALE 'C' ENCODING 'UTF8'").format(
                sql.Identifier(dbname)
            )
        )
    with pytest.raises(SetupError, match="owned by 'postgres'"):
        run(cluster, local(cluster, dbname, user))
    assert cluster.query(
        "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (dbname,)
    ) == [("postgres",)]


def test_existing_superuser_role_is_refused(cluster, names):
    dbname, user = names
    with cluster.connect() as conn:
        conn.execute(sql.SQL("CREATE ROLE {} SUPERUSER LOGIN").format(sql.Identifier(user)))
    with pytest.raises(SetupError, match="superuser"):
        run(cluster, local(cluster, dbname, user))
    assert cluster.query("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)) == []


def test_half_done_state_is_finished_by_a_rerun(cluster, names):
    dbname, user = names
    with cluster.connect() as conn:  # as if a run stopped after the role
        conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(user)))
    steps = run(cluster, local(cluster, dbname, user))
    assert outcomes(steps)[f"role {user}"] == "changed"
    assert outcomes(steps)[f"database {dbname}"] == "created"
    assert cluster.can_login(dbname, user, "s3cret-Pass")


@pytest.mark.server_language
def test_stopped_server_is_a_retryable_clear_error(cluster, names, tmp_path):
    dbname, user = names
    settings = Settings(host="localhost", port=1, dbname=dbname, user=user, password="x")
    with pytest.raises(ServerUnavailable) as info:
        provision(settings, socket_dir=cluster.socket_dir)
    assert "pg_lsclusters" in str(info.value) and "port 1" in str(info.value)
    assert "Traceback" not in str(info.value)


@pytest.mark.server_language
def test_remote_mode_verifies_only(cluster, names):
    # A remote server is any host that is not this machine: here, the cluster reached at
    # this machine's own non-loopback address (127.x would be the local cluster).
    assert cluster.remote_address, "this machine has no non-loopback IPv4 address"
    dbname, user = names
    remote = at(cluster.remote_address, cluster, dbname, user, "pw", sslmode="disable")
    assert not remote.local
    with cluster.hba_lines(f"host all {user} {cluster.remote_address}/32 scram-sha-256"):
        with pytest.raises(ServerUnavailable, match="refused role"):
            provision(remote)  # no role yet, and remote mode must not create one
        assert cluster.query("SELECT 1 FROM pg_roles WHERE rolname = %s", (user,)) == []
        run(cluster, local(cluster, dbname, user, password="pw"))
        steps = provision(remote)
    assert not changed(steps)
    assert {s.outcome for s in steps if s.name != "TLS"} == {"ok"}
    # sslmode disable, chosen: said, not hidden
    assert [(s.outcome, s.detail) for s in steps if s.name == "TLS"] == [
        ("not used", "sslmode disable")
    ]
    assert [s.name for s in steps][:2] == [
        f"server {cluster.remote_address}:{cluster.port}",
        f"login as {user} over TCP",
    ]


@pytest.mark.server_language
@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "socket"])
def test_every_local_address_provisions_the_local_cluster(cluster, names, host):
    dbname, user = names
    if host == "socket":
        host = cluster.socket_dir
    settings = local(cluster, dbname, user, password="pw")
    settings = Settings(**{**settings.__dict__, "host": host, "sslmode": "disable"})
    assert settings.local
    if host == "::1":
        # The throwaway cluster listens on 127.0.0.1 only: the superuser part (the
        # socket) still provisions, and the login over ::1 is refused as unreachable.
        with pytest.raises(ServerUnavailable, match="Cannot connect"):
            provision(settings, socket_dir=cluster.socket_dir)
    elif host.startswith("/"):
        # Over the socket the cluster has peer authentication only: the login as the
        # role is refused, and the advice is the "local" pg_hba.conf line.
        with pytest.raises(ServerUnavailable, match=f"'local {dbname} {user} scram-sha-256'"):
            provision(settings, socket_dir=cluster.socket_dir)
    else:
        steps = provision(settings, socket_dir=cluster.socket_dir)
        assert {s.outcome for s in steps} >= {"created"}
    assert cluster.query("SELECT 1 FROM pg_roles WHERE rolname = %s", (user,)) == [(1,)]
    assert cluster.query("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)) == [(1,)]


def test_remote_mode_missing_database_is_named(cluster, names):
    dbname, user = names
    run(cluster, local(cluster, dbname, user, password="pw"))
    remote = at("127.0.0.1", cluster, dbname + "_x", user, "pw", sslmode="disable")
    with pytest.raises(SetupError, match=f"'{dbname}_x' does not exist"):
        verify(remote)


@pytest.mark.server_language
def test_remote_mode_wrong_password_is_refused(cluster, names):
    dbname, user = names
    run(cluster, local(cluster, dbname, user, password="pw"))
    remote = at("127.0.0.1", cluster, dbname, user, "wrong", sslmode="disable")
    with pytest.raises(ServerUnavailable, match="check the role's password"):
        verify(remote)


@pytest.mark.server_language
def test_remote_mode_with_tls_verify_full(cluster, names):
    dbname, user = names
    run(cluster, local(cluster, dbname, user, password="pw"))
    tls = at(
        "127.0.0.1", cluster, dbname, user, "pw", sslmode="verify-full", sslrootcert=cluster.ca_file
    )
    plain = Settings(**{**tls.__dict__, "sslmode": "disable", "sslrootcert": None})
    # The server admits this role over TLS only: verify passing is the server's word that
    # the role's login was encrypted, whatever verify says about it.
    with cluster.hba_lines(f"hostnossl all {user} all reject"):
        steps = verify(tls)
        with pytest.raises(SetupError) as refused:  # the line does bite
            verify(plain)
    assert refused.value.kind == "login"  # pg_hba.conf refused it (SQLSTATE 28000)
    assert {s.outcome for s in steps} == {"ok"}
    # And verify reports it: the protocol libpq negotiated, and the mode asked for.
    [tls_step] = [s for s in steps if s.name == "TLS"]
    assert tls_step.detail.startswith("TLSv1.") and "sslmode verify-full" in tls_step.detail


@pytest.mark.server_language
def test_remote_mode_verify_full_checks_the_host_name(cluster, names):
    # The cluster's certificate names localhost and 127.0.0.1 only.  Reached at this
    # machine's other address, with the right CA: verify-ca passes (the chain is good),
    # verify-full is refused for the name.  So verify-full is not quietly verify-ca.
    assert cluster.remote_address, "this machine has no non-loopback IPv4 address"
    dbname, user = names
    run(cluster, local(cluster, dbname, user, password="pw"))
    chain_only = at(
        cluster.remote_address,
        cluster,
        dbname,
        user,
        "pw",
        sslmode="verify-ca",
        sslrootcert=cluster.ca_file,
    )
    full = Settings(**{**chain_only.__dict__, "sslmode": "verify-full"})
    with cluster.hba_lines(f"hostssl all {user} {cluster.remote_address}/32 scram-sha-256"):
        assert {s.outcome for s in verify(chain_only)} == {"ok"}
        with pytest.raises(SetupError) as refused:
            verify(full)
    assert not isinstance(refused.value, ServerUnavailable) and refused.value.kind == "tls"
    assert cluster.remote_address in refused.value.message


@pytest.mark.server_language
def test_remote_mode_tls_with_an_unknown_ca_is_refused(cluster, names, tmp_path):
    dbname, user = names
    run(cluster, local(cluster, dbname, user, password="pw"))
    other_ca = tmp_path / "other.crt"
    other_ca.write_text(open("/etc/ssl/certs/ca-certificates.crt").read())
    tls = at(
        "127.0.0.1", cluster, dbname, user, "pw", sslmode="verify-full", sslrootcert=str(other_ca)
    )
    # A certificate problem is no passing outage: a SetupError that asks for other
    # answers (not ServerUnavailable's retry).
    with pytest.raises(SetupError, match="certificate must be signed by a CA") as info:
        verify(tls)
    assert not isinstance(info.value, ServerUnavailable) and info.value.kind == "tls"


def test_role_without_create_rights_is_refused(cluster, names):
    dbname, user = names
    run(cluster, local(cluster, dbname, user, password="pw"))
    with cluster.connect(dbname) as conn:
        conn.execute(sql.SQL("REVOKE CREATE ON SCHEMA public FROM pg_database_owner, PUBLIC"))
    with pytest.raises(SetupError, match="cannot create tables"):
        verify(
            Settings(
                host="127.0.0.1",
                port=cluster.port,
                dbname=dbname,
                user=user,
                password="pw",
                sslmode="disable",
            )
        )
