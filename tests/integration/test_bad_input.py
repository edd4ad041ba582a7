"""Bad answers, each given through debconf and to the admin command (issue 12).

One table, CASES: every case is run twice, once per channel.  Every bad input could
be given through both (so no case is limited to one channel):

- ``debconf``: the answers are preseeded (debconf-set-selections, the admin's tool;
  a value it cannot carry -- a newline, a NUL, leading or trailing spaces -- goes in
  through the debconf protocol, SET with the ``escape`` capability, as any
  confmodule could put it), then the real debian/postinst runs non-interactively
  under the real debconf (``Site``, see test_debconf_postinst.py).
- ``admin``: the admin command, ``matrix-synapse-setup provision`` with options and
  ``--password-file``, run as installed (scripts/matrix-synapse-setup importing the
  copy in /usr/share) in the same private mount namespace.

Each run must end in one clear line (the message of messages.py for that case, at
most two lines from "error:" to the end, no traceback) and change nothing: the
catalog (roles, memberships, databases, and what is inside the case's database),
the files (the overlays on /etc, /var/lib, /var/backups and /usr/share) and
debconf's database are compared before and after the run.  The password given
appears in no output: the run's stdout and stderr, the files under the overlays,
the server's log (nor in this test's own failure messages).  On stdout, debconf's
non-interactive frontend shows the error notes (invalid-answer, setup-error) that it
cannot ask: debconf's doing, not an extra line of ours.

The remote server: 127.0.0.1 and ::1 count as the local cluster, which the
product provisions; a remote server must be reached at an address that is not
loopback.  The throwaway cluster is made to listen also on this machine's own
non-loopback address (eth0 here), which is what a server on another machine looks
like to libpq and to pg_hba.conf; its pg_hba.conf admits that address only for
members of REMOTE_GROUP (and rejects members of REJECT_GROUP), so a role that is
in neither has no pg_hba.conf entry, as on a real server that was not told about
Synapse.  A server older than 14 is a fake (old_server.py says why).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import secrets
import shutil
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from matrix_synapse_setup.core import messages
from matrix_synapse_setup.core.settings import SSLMODES
from scripts.devtools.pgcluster import free_port, psycopg
from tests.integration.old_server import old_server
from tests.integration.test_debconf import ROOT
from tests.integration.test_debconf_postinst import Site

sql = psycopg.sql

REMOTE_GROUP = "bad_input_remote"  # members may log in from the remote address
REJECT_GROUP = "bad_input_rejected"  # members are rejected by a pg_hba.conf line
SYNAPSE_UID = 64990  # a matrix-synapse user in the namespace's /etc/passwd, when needed
FIELDS = {
    "host": "db-host",
    "port": "db-port",
    "dbname": "db-name",
    "user": "db-user",
    "password": "db-password",
    "sslmode": "db-sslmode",
    "sslrootcert": "db-sslrootcert",
}
OVERLAYS = ("etc", "var/lib", "var/backups", "usr/share")


# --- the world a case runs in --------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Ctx:
    cluster: Any
    dbname: str
    user: str
    canary: str  # in every password (but the blank one): what must never be shown
    remote: str  # the cluster's non-loopback address
    files: Path  # CA files of every kind of wrong (see ca_files)
    old_port: int  # the fake PostgreSQL 13, on TCP at remote:old_port ...
    old_socket_dir: Path  # ... and on a Unix socket of the same port here

    @property
    def port(self) -> str:
        return str(self.cluster.port)

    @property
    def password(self) -> str:
        return f"{self.canary} p@ss 'w\"ord"


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    # Over the defaults (see resolve()); None: not given.
    answers: dict[str, str | Callable[[Ctx], str] | None]
    # The message of the refusal: fragments of the error text (from "error:" on),
    # per channel when the channels differ.
    expect: Callable[[Ctx, dict[str, str]], list[str] | dict[str, list[str]]]
    remote: bool = False  # defaults for the remote server instead of the local cluster
    setup: Callable[[Ctx], None] | None = None  # the server's state before the run
    synapse_user: bool = False  # a matrix-synapse user exists (in the namespace)
    old_local: bool = False  # the local cluster is the fake PostgreSQL 13
    hba_line_works: bool = False  # afterwards, the pg_hba.conf line named is tried

    def resolve(self, ctx: Ctx) -> dict[str, str]:
        if self.remote:
            given: dict[str, Any] = {
                "host": ctx.remote,
                "sslmode": "verify-ca",
                "sslrootcert": ctx.cluster.ca_file,
            }
        else:
            given = {"host": "localhost"}
        given |= {"port": ctx.port, "dbname": ctx.dbname, "user": ctx.user}
        given["password"] = ctx.password
        given |= self.answers
        return {
            key: value(ctx) if callable(value) else value
            for key, value in given.items()
            if value is not None
        }


# --- the cases -------------------------------------------------------------------------


def exactly(template: str, **fields: Any) -> Callable[[Ctx, dict[str, str]], list[str]]:
    return lambda ctx, a: [template.format(**fields)]


def bad_name(case_id: str, kind: str, value: str) -> Case:
    field = {"database": "dbname", "role": "user"}[kind]
    return Case(case_id, {field: value}, exactly(messages.BAD_NAME, kind=kind, value=value))


def bad_port(case_id: str, value: str) -> Case:
    return Case(case_id, {"port": value}, exactly(messages.BAD_PORT, value=value))


def bad_host(case_id: str, value: str, template: str = messages.BAD_HOST, **fields: str) -> Case:
    return Case(case_id, {"host": value}, exactly(template, value=value, **fields))


def bad_password(case_id: str, value: Callable[[Ctx], str], template: str, **fields: Any) -> Case:
    return Case(case_id, {"password": value}, exactly(template, **fields))


def bad_cafile(
    case_id: str, name: str, template: str, *, relative=False, synapse_user=False, **fields: str
) -> Case:
    """A CA file (*name* under ctx.files, or as it is if *relative*) that verify-ca cannot
    use."""

    def expect(ctx: Ctx, a: dict[str, str]) -> list[str]:
        return [template.format(path=a["sslrootcert"], value=a["sslrootcert"], **fields)]

    path = name if relative else lambda ctx: str(ctx.files / name)
    return Case(case_id, {"sslrootcert": path}, expect, remote=True, synapse_user=synapse_user)


def create_database(owner: str, *, encoding="UTF8", collate="C", ctype="C"):
    """The case's database, owned by "postgres" or by the case's "role"."""

    def setup(ctx: Ctx) -> None:
        with ctx.cluster.connect() as conn:
            conn.execute(
                sql.SQL(
                    "CREATE DATABASE {} OWNER {} ENCODING {} LC_COLLATE {} LC_CTYPE {} "
                    "TEMPLATE template0"
                ).format(
                    sql.Identifier(ctx.dbname),
                    sql.Identifier({"postgres": "postgres", "role": ctx.user}[owner]),
                    sql.Literal(encoding),
                    sql.Literal(collate),
                    sql.Literal(ctype),
                )
            )

    return setup


def create_role(*, group: str | None = REMOTE_GROUP, password: str | None = None, extra=""):
    """The case's role, with the case's password (or *password*), in *group*."""

    def setup(ctx: Ctx) -> None:
        with ctx.cluster.connect() as conn:
            # Hashed here: the clear text reaches neither the server nor its log.
            hashed = conn.pgconn.encrypt_password(
                (password or ctx.password).encode(), ctx.user.encode(), b"scram-sha-256"
            ).decode()
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN {} PASSWORD {}").format(
                    sql.Identifier(ctx.user), sql.SQL(extra), sql.Literal(hashed)
                )
            )
            if group:
                conn.execute(
                    sql.SQL("GRANT {} TO {}").format(
                        sql.Identifier(group), sql.Identifier(ctx.user)
                    )
                )

    return setup


def both(*setups: Callable[[Ctx], None]) -> Callable[[Ctx], None]:
    def setup(ctx: Ctx) -> None:
        for one in setups:
            one(ctx)

    return setup


def login_refused(sqlstate: str) -> Callable[[Ctx, dict[str, str]], list[str]]:
    def expect(ctx: Ctx, a: dict[str, str]) -> list[str]:
        return [
            f"PostgreSQL at {ctx.remote}:{ctx.port} refused role '{ctx.user}' for database "
            f"'{ctx.dbname}' (SQLSTATE {sqlstate}: ",
            f"pg_hba.conf on the server has the line "
            f"'hostssl {ctx.dbname} {ctx.user} {ctx.remote}/32 scram-sha-256' "
            "above any line that rejects it (then reload PostgreSQL).",
        ]

    return expect


def wrong_database(found: str, needed: str) -> Callable[[Ctx, dict[str, str]], list[str]]:
    return lambda ctx, a: [
        messages.WRONG_DATABASE.format(dbname=ctx.dbname, user=ctx.user, found=found, needed=needed)
    ]


def wrong_owner(ctx: Ctx, a: dict[str, str]) -> list[str]:
    return [messages.WRONG_OWNER.format(dbname=ctx.dbname, owner="postgres", user=ctx.user)]


def tls_failed(sslmode: str) -> Callable[[Ctx, dict[str, str]], list[str]]:
    return lambda ctx, a: [
        f"The TLS connection to PostgreSQL at {ctx.remote}:{ctx.port} failed with sslmode "
        f"'{sslmode}' (",
        f"signed by a CA in {a['sslrootcert']} and name '{ctx.remote}'",
    ]


CASES = [
    # --- names ---
    bad_name("dbname-double-quote", "database", 'syn"apse'),
    bad_name("user-single-quote", "role", "syn'apse"),
    bad_name("dbname-sql-injection", "database", "synapse; DROP DATABASE postgres"),
    bad_name("dbname-non-ascii", "database", "synapsé"),
    bad_name("user-non-ascii", "role", "ユーザー"),
    bad_name("dbname-leading-digit", "database", "1synapse"),
    bad_name("user-leading-digit", "role", "9synapse"),
    bad_name("dbname-64-bytes", "database", "s" * 64),
    bad_name("user-64-bytes", "role", "u" * 64),
    bad_name("dbname-upper-case", "database", "Synapse"),
    bad_name("dbname-inner-space", "database", "syn apse"),
    bad_name("dbname-reserved-postgres", "database", "postgres"),
    bad_name("dbname-reserved-template0", "database", "template0"),
    bad_name("dbname-reserved-template1", "database", "template1"),
    bad_name("user-reserved-postgres", "role", "postgres"),
    bad_name("user-reserved-public", "role", "public"),
    bad_name("user-reserved-pg-prefix", "role", "pg_monitor"),
    # --- ports ---
    bad_port("port-0", "0"),
    bad_port("port-65536", "65536"),
    bad_port("port-abc", "abc"),
    bad_port("port-empty", ""),
    bad_port("port-negative", "-1"),
    bad_port("port-arabic-indic-digits", "٥٤٣٢"),
    bad_port("port-huge", "99999999999999999999"),
    # --- hosts ---
    bad_host("host-inner-space", "db example.org"),
    bad_host("host-newline", "db.example.org\nevil.example.org"),
    bad_host("host-tab", "db.example.org\tx"),
    bad_host(
        "host-with-port",
        "db.example.org:6432",
        messages.BAD_HOST_WITH_PORT,
        host="db.example.org",
        port="6432",
    ),
    bad_host(
        "localhost-with-port",
        "localhost:5432",
        messages.BAD_HOST_WITH_PORT,
        host="localhost",
        port="5432",
    ),
    bad_host("host-url", "postgres://db.example.org/synapse"),
    bad_host("host-underscore", "db_server.example.org"),
    bad_host("host-socket-dir-with-space", "/run/post gresql", messages.BAD_HOST_SOCKET),
    # --- passwords ---
    bad_password("password-nul", lambda c: f"{c.canary}\0rest", messages.BAD_PASSWORD_CHARS),
    bad_password("password-newline", lambda c: f"{c.canary}\nrest", messages.BAD_PASSWORD_CHARS),
    bad_password("password-tab", lambda c: f"{c.canary}\trest", messages.BAD_PASSWORD_CHARS),
    bad_password("password-escape", lambda c: f"{c.canary}\x1b[2J", messages.BAD_PASSWORD_CHARS),
    bad_password("password-only-spaces", lambda c: " " * 47, messages.BAD_PASSWORD_BLANK),
    bad_password(
        "password-1001-characters",
        lambda c: (c.canary * 100)[:1001],
        messages.BAD_PASSWORD_LENGTH,
        limit=1000,
    ),
    # --- TLS (remote server, verify-ca unless said otherwise) ---
    Case(
        "sslmode-bogus",
        {"sslmode": "bogus"},
        lambda ctx, a: {
            "debconf": [messages.BAD_SSLMODE.format(value="bogus", modes=", ".join(SSLMODES))],
            "admin": [messages.BAD_SSLMODE.format(value="bogus", modes=", ".join(SSLMODES))],
        },
        remote=True,
    ),
    Case(
        "sslmode-upper-case",
        {"sslmode": "VERIFY-FULL"},
        lambda ctx, a: {
            "debconf": [
                messages.BAD_SSLMODE.format(value="VERIFY-FULL", modes=", ".join(SSLMODES))
            ],
            "admin": [messages.BAD_SSLMODE.format(value="VERIFY-FULL", modes=", ".join(SSLMODES))],
        },
        remote=True,
    ),
    bad_cafile(
        "cafile-missing",
        "absent.pem",
        messages.BAD_SSLROOTCERT_UNREADABLE,
        reason="No such file or directory",
    ),
    bad_cafile(
        "cafile-dangling-symlink",
        "dangling.pem",
        messages.BAD_SSLROOTCERT_UNREADABLE,
        reason="No such file or directory",
    ),
    bad_cafile(
        "cafile-under-a-file",
        "plain.txt/ca.pem",
        messages.BAD_SSLROOTCERT_UNREADABLE,
        reason="Not a directory",
    ),
    bad_cafile("cafile-relative", "ca.pem", messages.BAD_SSLROOTCERT_PATH, relative=True),
    bad_cafile("cafile-directory", "a-directory", messages.BAD_SSLROOTCERT_NOT_FILE),
    bad_cafile(
        "cafile-unreadable-by-synapse",
        "root-only.pem",
        messages.BAD_SSLROOTCERT_PERMISSIONS,
        synapse_user=True,  # 0600 root: the matrix-synapse user cannot read it
        user="matrix-synapse",
    ),
    bad_cafile("cafile-random-bytes", "random.bin", messages.BAD_SSLROOTCERT_PEM),
    bad_cafile("cafile-text", "plain.txt", messages.BAD_SSLROOTCERT_PEM),
    bad_cafile("cafile-empty", "empty.pem", messages.BAD_SSLROOTCERT_PEM),
    bad_cafile("cafile-garbage-in-pem", "garbage.pem", messages.BAD_SSLROOTCERT_PEM),
    bad_cafile("cafile-private-key", "other-ca.key", messages.BAD_SSLROOTCERT_PEM),
    # --- servers ---
    Case(
        "remote-older-than-14",
        {"port": lambda ctx: str(ctx.old_port), "sslmode": "prefer", "sslrootcert": None},
        lambda ctx, a: [
            messages.SERVER_TOO_OLD.format(version="13.14", where=f"{ctx.remote}:{ctx.old_port}")
        ],
        remote=True,
    ),
    Case(
        "remote-wrong-collation",
        {},
        wrong_database("collate 'C.UTF-8', ctype 'C.UTF-8'", "collate 'C', ctype 'C'"),
        remote=True,
        setup=both(create_role(), create_database("role", collate="C.UTF-8", ctype="C.UTF-8")),
    ),
    Case(
        "remote-wrong-owner",
        {},
        wrong_owner,
        remote=True,
        setup=both(create_role(), create_database("postgres")),
    ),
    Case(
        "local-older-than-14",
        {"port": lambda ctx: str(ctx.old_port)},
        lambda ctx, a: [
            messages.SERVER_TOO_OLD.format(
                version="13.14", where=f"local cluster (port {ctx.old_port})"
            )
        ],
        old_local=True,
    ),
    Case(
        "local-wrong-collation",
        {},
        wrong_database("collate 'C.UTF-8', ctype 'C.UTF-8'", "collate 'C', ctype 'C'"),
        setup=create_database("postgres", collate="C.UTF-8", ctype="C.UTF-8"),
    ),
    Case(
        "local-wrong-ctype",
        {},
        wrong_database("ctype 'C.UTF-8'", "ctype 'C'"),
        setup=create_database("postgres", ctype="C.UTF-8"),
    ),
    Case(
        "local-wrong-encoding",
        {},
        wrong_database("encoding 'SQL_ASCII'", "encoding 'UTF8'"),
        setup=create_database("postgres", encoding="SQL_ASCII"),
    ),
    Case("local-wrong-owner", {}, wrong_owner, setup=create_database("postgres")),
    Case(
        "local-role-is-superuser",
        {},
        lambda ctx, a: [messages.ROLE_IS_SUPERUSER.format(user=ctx.user)],
        setup=create_role(group=None, extra="SUPERUSER"),
    ),
]
# The refusals the error classifier tells apart (a refused login, a missing database, a
# failed TLS handshake): the French pass repeats these (mark server_language).
CLASSIFIED_CASES = [
    Case(
        "cafile-another-ca",
        {"sslrootcert": lambda ctx: str(ctx.files / "other-ca.crt")},
        tls_failed("verify-ca"),
        remote=True,
        setup=both(create_role(), create_database("role")),
    ),
    Case(
        "verify-full-name-mismatch",  # the certificate names localhost and 127.0.0.1 only
        {"sslmode": "verify-full"},
        tls_failed("verify-full"),
        remote=True,
        setup=both(create_role(), create_database("role")),
    ),
    Case(
        "remote-no-pg-hba-entry",
        {},
        login_refused("28000"),
        remote=True,
        setup=both(create_role(group=None), create_database("role")),
        hba_line_works=True,
    ),
    Case(
        "remote-pg-hba-reject",
        {},
        login_refused("28000"),
        remote=True,
        setup=both(create_role(group=REJECT_GROUP), create_database("role")),
        hba_line_works=True,
    ),
    Case(
        "remote-wrong-password",
        {},
        login_refused("28P01"),
        remote=True,
        setup=both(create_role(password="not the one given"), create_database("role")),
    ),
    Case(
        "remote-database-missing",
        {},
        lambda ctx, a: [
            messages.DATABASE_MISSING.format(
                dbname=ctx.dbname, host=ctx.remote, port=ctx.port, user=ctx.user
            )
        ],
        remote=True,
        setup=create_role(),
    ),
]
CHANNELS = ("debconf", "admin")


def test_the_table_is_large_and_covers_every_kind():
    ids = [case.id for case in CASES + CLASSIFIED_CASES]
    assert len(ids) == len(set(ids))
    assert len(ids) >= 40 and len(ids) * len(CHANNELS) >= 80
    # Only a refused login names a pg_hba.conf line, and only the classified cases check it.
    assert not [case.id for case in CASES if case.hba_line_works]
    kinds = ("dbname", "user", "port", "host", "password", "sslmode", "cafile", "remote", "local")
    for prefix in kinds:
        assert any(i.startswith(prefix) for i in ids), prefix


# --- fixtures: the remote address, the fake old server, the CA files ------------------


def non_loopback_ipv4() -> str:
    out = subprocess.run(
        ["ip", "-j", "-4", "addr", "show"], capture_output=True, text=True, check=True
    ).stdout
    for link in json.loads(out):
        for info in link.get("addr_info", []):
            if info.get("scope") == "global":
                return info["local"]
    raise AssertionError("no non-loopback IPv4 address: a remote server cannot be simulated")


def reload_hba(cluster) -> None:
    with cluster.connect() as conn:
        conn.execute("SELECT pg_reload_conf()")


@pytest.fixture(scope="module")
def remote(cluster):
    """The cluster, listening on this machine's own non-loopback address too."""
    address = non_loopback_ipv4()
    hba = cluster.datadir / "pg_hba.conf"
    original = hba.read_text()
    with cluster.connect() as conn:
        conn.execute(f"ALTER SYSTEM SET listen_addresses = '127.0.0.1,{address}'")
        for group in (REMOTE_GROUP, REJECT_GROUP):
            conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(group)))
    hba.write_text(
        f"host all +{REJECT_GROUP} {address}/32 reject\n"
        f"host all +{REMOTE_GROUP} {address}/32 scram-sha-256\n" + original
    )
    cluster.pg_ctl("-l", str(cluster.log), "restart")  # listen_addresses needs a restart
    try:
        yield address
    finally:
        hba.write_text(original)
        with cluster.connect() as conn:
            conn.execute("ALTER SYSTEM RESET listen_addresses")
            for group in (REMOTE_GROUP, REJECT_GROUP):
                conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(group)))
        cluster.pg_ctl("-l", str(cluster.log), "restart")


@pytest.fixture(scope="module")
def old_port(remote, tmp_path_factory):
    """The fake PostgreSQL 13 on remote:port and on a Unix socket of the same port."""
    port = free_port()
    socket_dir = tmp_path_factory.mktemp("old-server-socket")
    os.chmod(socket_dir, 0o755)  # the postgres user reaches it, as /run/postgresql
    with old_server(host=remote, port=port), old_server(port=port, socket_dir=socket_dir):
        yield port, socket_dir


@pytest.fixture(scope="module")
def ca_files(cluster, tmp_path_factory):
    """CA files that verify-ca cannot use, one of each kind of wrong."""
    files = tmp_path_factory.mktemp("ca-files")
    os.chmod(files, 0o755)
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=another CA", "-keyout", "other-ca.key", "-out", "other-ca.crt"],
        cwd=files, check=True, capture_output=True,
    )  # fmt: skip
    os.chmod(files / "other-ca.key", 0o644)  # readable: refused for what it is, not its mode
    (files / "random.bin").write_bytes(secrets.token_bytes(2048))
    (files / "plain.txt").write_text("This is the CA of db.example.org, I promise.\n")
    (files / "empty.pem").write_bytes(b"")
    (files / "garbage.pem").write_text(
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n"
    )
    (files / "dangling.pem").symlink_to(files / "gone.pem")
    (files / "a-directory").mkdir()
    shutil.copy(cluster.ca_file, files / "root-only.pem")
    os.chmod(files / "root-only.pem", 0o600)
    return files


@pytest.fixture
def ctx(cluster, names, remote, old_port, ca_files):
    return Ctx(
        cluster=cluster,
        dbname=names[0],
        user=names[1],
        canary="canary-" + secrets.token_hex(8),
        remote=remote,
        files=ca_files,
        old_port=old_port[0],
        old_socket_dir=old_port[1],
    )


# --- what must not change ----------------------------------------------------------------


def catalog(ctx: Ctx) -> dict[str, Any]:
    """Every role, membership and database, and what the case's database holds."""
    state: dict[str, Any] = {}
    with ctx.cluster.connect() as conn:
        state["roles"] = conn.execute(
            "SELECT rolname, rolsuper, rolinherit, rolcreaterole, rolcreatedb, rolcanlogin,"
            " rolreplication, rolbypassrls, rolconnlimit, rolpassword, rolvaliduntil::text"
            " FROM pg_authid ORDER BY rolname"
        ).fetchall()
        state["members"] = conn.execute(
            "SELECT roleid::regrole::text, member::regrole::text FROM pg_auth_members ORDER BY 1, 2"
        ).fetchall()
        state["databases"] = conn.execute(
            "SELECT datname, pg_encoding_to_char(encoding), datcollate, datctype,"
            " pg_get_userbyid(datdba), datallowconn, datconnlimit, datacl::text"
            " FROM pg_database ORDER BY datname"
        ).fetchall()
        state["settings"] = conn.execute(
            "SELECT setdatabase, setrole, setconfig FROM pg_db_role_setting ORDER BY 1, 2"
        ).fetchall()
    if any(row[0] == ctx.dbname for row in state["databases"]):
        with ctx.cluster.connect(ctx.dbname) as conn:
            state["inside"] = conn.execute(
                "SELECT n.nspname, pg_get_userbyid(n.nspowner), n.nspacl::text, c.relname,"
                " c.relkind FROM pg_namespace n LEFT JOIN pg_class c ON c.relnamespace = n.oid"
                " WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')"
                " ORDER BY 1, 4"
            ).fetchall()
    return state


def files(site: Site) -> dict[str, tuple]:
    """Everything the overlays hold (what a run wrote, deleted -- whiteouts -- or left).
    The copy of our code in /usr/share gets Python's __pycache__ when it first runs: not
    the product's doing, left out.  (The lock file is in the run's private /run/lock,
    see PrivateLockSite: no state.)"""
    found: dict[str, tuple] = {}
    for overlay in OVERLAYS:
        upper = site.overlay / overlay / "upper"
        for path in sorted(upper.rglob("*")) if upper.exists() else ():
            if "__pycache__" in path.parts:
                continue
            st = path.lstat()
            meta = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
            if path.is_symlink():
                content: Any = os.readlink(path)
            elif stat.S_ISREG(st.st_mode):
                content = (path.read_bytes(), st.st_mtime_ns)
            else:
                content = st.st_rdev if stat.S_ISCHR(st.st_mode) else None
            found[f"/{overlay}/{path.relative_to(upper)}"] = (*meta, content)
    return found


def debconf_db(site: Site) -> dict[str, str]:
    """debconf's database files, as they are on disk."""
    return {
        name: (site.dir / name).read_text(encoding="utf-8", errors="surrogateescape")
        for name in ("config.dat", "passwords.dat")
        if (site.dir / name).exists()
    }


def debconf_answers(site: Site) -> dict[str, tuple[str, str]]:
    """Every question's answer and seen flag, as a confmodule reads them (GET, FGET).

    Not the files themselves: a run that fails in the config script saves nothing,
    but one that fails later in the postinst saves what debconf itself must store
    to tell the failure -- the error text substituted into the notes (db-failure,
    setup-error: Variables) -- and writes out defaults it showed non-interactively
    (purge-database "false", db-failure "abort", an empty db-password-again), which
    are the same answers as before.  What an admin or the package reads back must not
    change: no answer, no seen flag."""
    names = sorted(
        {
            name
            for text in debconf_db(site).values()
            for name in re.findall(r"^Name: (\S+)$", text, re.M)
        }
    )
    requests = "".join(f"GET {name}\nFGET {name} seen\n" for name in names)
    replies = site.run(
        ["debconf-communicate", "matrix-synapse-setup"],
        stdin="CAPB escape\n" + requests,
        check=False,
    ).stdout.split("\n")[1:]
    return {name: (replies[2 * i], replies[2 * i + 1]) for i, name in enumerate(names)}


def snapshot(site: Site, ctx: Ctx) -> dict[str, Any]:
    return {"catalog": catalog(ctx), "files": files(site), "debconf": debconf_answers(site)}


# --- the two channels ----------------------------------------------------------------------


class PrivateLockSite(Site):
    """A Site whose runs have their own /run/lock: the product's lock
    (/run/lock/matrix-synapse-setup.lock) is on the host's /run, which the namespace
    shares, and other test runs on this machine take it too; a run that waited for
    one of them would say so, a line that is not the refusal's."""

    def run(self, argv, **kwargs):
        private = 'mount -t tmpfs -o mode=1777 tmpfs /run/lock && exec "$@"'
        return super().run(["sh", "-c", private, "-", *argv], **kwargs)


def make_site(ctx: Ctx, case: Case, tmp_path: Path) -> Site:
    site = PrivateLockSite(tmp_path)
    site.install_helper()
    site.env["PGSOCKDIR"] = str(ctx.old_socket_dir if case.old_local else ctx.cluster.socket_dir)
    if case.synapse_user:
        # Synapse's user exists for this run only, in the namespace's /etc (an overlay):
        # the host's /etc/passwd is untouched.
        site.etc.mkdir(parents=True, exist_ok=True)
        line = f"matrix-synapse:x:{SYNAPSE_UID}:{SYNAPSE_UID}::/var/lib/matrix-synapse:/bin/false"
        (site.etc / "passwd").write_text(Path("/etc/passwd").read_text() + line + "\n")
        group = f"matrix-synapse:x:{SYNAPSE_UID}:\n"
        (site.etc / "group").write_text(Path("/etc/group").read_text() + group)
    return site


def line_safe(value: str) -> bool:
    """Whether debconf-set-selections carries *value* exactly (one line, no edge spaces)."""
    return value == value.strip() and not any(ch in value for ch in "\n\r\0")


def seed_debconf(site: Site, answers: dict[str, str]) -> None:
    plain = {}
    protocol = []
    for key, value in answers.items():
        question = FIELDS[key]
        if line_safe(value):
            plain[question.replace("-", "_")] = value
        else:
            # the escape capability: backslash, newline and (else collapsed) space
            escaped = value.replace("\\", "\\\\").replace("\n", "\\n").replace(" ", "\\ ")
            protocol += [
                f"SET matrix-synapse-setup/{question} {escaped}",
                f"FSET matrix-synapse-setup/{question} seen true",
            ]
    site.preseed(**plain)
    if protocol:
        site.run(
            ["debconf-communicate", "matrix-synapse-setup"],
            stdin="CAPB escape\n" + "\n".join(protocol) + "\n",
        )
    for key, value in answers.items():  # the bad answer reached debconf exactly
        if site.get(FIELDS[key]) != value:
            pytest.fail(f"{FIELDS[key]} did not reach debconf as given")


def run_admin(site: Site, answers: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess:
    password_file = tmp_path / "password"
    password_file.write_bytes(answers["password"].encode() + b"\n")
    password_file.chmod(0o600)
    argv = ["/usr/bin/python3", str(ROOT / "scripts" / "matrix-synapse-setup"), "provision"]
    for key in ("host", "port", "dbname", "user", "sslmode", "sslrootcert"):
        if key in answers:
            argv += [f"--{key}", answers[key]]
    return site.run([*argv, "--password-file", str(password_file)], check=False)


# --- checks -----------------------------------------------------------------------------------
# A failure message must not show the password either: no bare "assert" on texts that
# may hold it (pytest would print both sides); they are redacted, or only named.


def secrets_of(ctx: Ctx, answers: dict[str, str]) -> list[str]:
    password = answers["password"]
    return [password, ctx.canary] if password.strip() else [password]


def redacted(text: str, secret_texts: list[str]) -> str:
    for secret in secret_texts:
        text = text.replace(secret, "<password>")
    return text


def error_text(proc: subprocess.CompletedProcess, secret_texts: list[str]) -> str:
    """From the one "error:" line to the end of stderr: at most two lines, no traceback."""
    shown = redacted(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}", secret_texts)
    if proc.returncode == 0:
        pytest.fail(f"the bad answer was accepted:\n{shown}")
    if "Traceback" in proc.stdout + proc.stderr or "internal error" in proc.stderr:
        pytest.fail(f"a traceback or an internal error:\n{shown}")
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    errors = [
        i for i, line in enumerate(lines) if re.match(r"matrix-synapse-setup[ a-z]*: error:", line)
    ]
    if len(errors) != 1:
        pytest.fail(f"not one error line:\n{shown}")
    text = lines[errors[0] :]
    if len(text) > 2:
        pytest.fail(f"more than two lines from the error on:\n{shown}")
    # Before it: only the plan the postinst announces.
    for line in lines[: errors[0]]:
        if not line.startswith("matrix-synapse-setup: plan: "):
            pytest.fail(f"an unexpected line before the error:\n{shown}")
    return redacted("\n".join(text), secret_texts)


def assert_unchanged(what: str, before: dict[str, Any], after: dict[str, Any]) -> None:
    """Say what changed, without the content of a file or a password question (it could
    hold the password); the catalog's rows and other answers are shown."""
    changes = []
    for key in sorted(before.keys() | after.keys()):
        old, new = before.get(key), after.get(key)
        if old == new:
            continue
        if what == "catalog":
            gone = sorted(set(old or ()) - set(new or ()), key=repr)
            came = sorted(set(new or ()) - set(old or ()), key=repr)
            changes.append(f"{key}: gone {gone}, new {came}")
        elif what == "debconf" and "password" not in key:
            changes.append(f"{key}: {old} -> {new}")
        else:
            changes.append(key)
    if changes:
        pytest.fail(f"the refused run changed the {what}:\n" + "\n".join(changes))


def assert_no_password(
    secret_texts: list[str], proc: subprocess.CompletedProcess, site: Site, log: bytes
) -> None:
    places = {
        "stdout": proc.stdout,
        "stderr": proc.stderr,
        "server log": log.decode(errors="replace"),
    }
    for name, content in files(site).items():
        if not name.startswith("/usr/share/") and isinstance(content[-1], tuple):
            places[name] = content[-1][0].decode(errors="replace")
    places["debconf config.dat"] = debconf_db(site).get("config.dat", "")
    for where, text in places.items():
        if any(secret in text for secret in secret_texts):
            pytest.fail(f"the password appears in {where}")


def hba_line_of(error: str) -> str:
    found = re.search(r"has the line '([^']+)'", error)
    assert found, error
    return found[1]


def assert_hba_line_works(ctx: Ctx, answers: dict[str, str], line: str) -> None:
    """The pg_hba.conf line the message names does let the role in."""
    hba = ctx.cluster.datadir / "pg_hba.conf"
    original = hba.read_text()
    hba.write_text(line + "\n" + original)
    reload_hba(ctx.cluster)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                psycopg.connect(
                    host=ctx.remote, port=ctx.port, dbname=ctx.dbname, user=ctx.user,
                    password=answers["password"], sslmode=answers["sslmode"],
                    sslrootcert=answers["sslrootcert"], connect_timeout=5,
                ).close()  # fmt: skip
                break
            except psycopg.OperationalError:
                assert time.monotonic() < deadline, f"{line!r} does not let {ctx.user} in"
                time.sleep(0.2)
    finally:
        hba.write_text(original)
        reload_hba(ctx.cluster)


# --- the test ---------------------------------------------------------------------------------


@pytest.mark.parametrize("channel", CHANNELS)
@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_a_bad_answer_is_one_clear_line_and_changes_nothing(case, channel, ctx, tmp_path):
    refused_without_a_change(case, channel, ctx, tmp_path)


@pytest.mark.server_language
@pytest.mark.parametrize("channel", CHANNELS)
@pytest.mark.parametrize("case", CLASSIFIED_CASES, ids=[case.id for case in CLASSIFIED_CASES])
def test_a_refused_connection_is_one_clear_line_and_changes_nothing(case, channel, ctx, tmp_path):
    answers, error = refused_without_a_change(case, channel, ctx, tmp_path)
    if case.hba_line_works:
        assert_hba_line_works(ctx, answers, hba_line_of(error))


def refused_without_a_change(
    case: Case, channel: str, ctx: Ctx, tmp_path: Path
) -> tuple[dict[str, str], str]:
    """The run with CASE's answers through CHANNEL fails with CASE's message and changes
    nothing: not the catalog, not a file, not debconf; no password in any output.
    Returns the answers given and the error's text."""
    if case.setup is not None:
        case.setup(ctx)
    answers = case.resolve(ctx)
    site = make_site(ctx, case, tmp_path)
    if channel == "debconf":
        seed_debconf(site, answers)
    # debconf is compared from after the preseeding: the bad answer stays where the
    # admin put it (debconf holds what was answered, not what was accepted), and the
    # refusing run must not change it or anything else.
    log_offset = ctx.cluster.log.stat().st_size
    before = snapshot(site, ctx)

    if channel == "debconf":
        proc = site.postinst(check=False)
    else:
        proc = run_admin(site, answers, tmp_path)

    after = snapshot(site, ctx)
    with ctx.cluster.log.open("rb") as log:
        log.seek(log_offset)
        new_log = log.read()
    secret_texts = secrets_of(ctx, answers)
    error = error_text(proc, secret_texts)
    expected = case.expect(ctx, answers)
    if isinstance(expected, dict):
        expected = expected[channel]
    for fragment in expected:
        assert fragment in error
    for what in ("catalog", "files", "debconf"):
        assert_unchanged(what, before[what], after[what])
    assert_no_password(secret_texts, proc, site, new_log)
    return answers, error
