"""A real, throwaway PostgreSQL cluster, for the integration tests and the benchmarks.

The cluster is made with Debian's initdb in a temporary directory, owned by
the ``postgres`` system user, listening on a free port on loopback (TCP,
scram-sha-256) and on a private Unix socket directory (peer authentication
for ``postgres`` only), with a server certificate for TLS tests.  The test
process itself inspects the cluster as ``postgres`` over TCP with a password
that only this fixture knows, so the code under test must really use the
postgres uid and peer authentication to provision.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from matrix_synapse_setup.postgres.queries import import_psycopg

psycopg = import_psycopg()


def _pg_bindir() -> Path:
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name)
    )
    if not versions:
        raise RuntimeError("no PostgreSQL server: run scripts/bootstrap (it installs postgresql)")
    return versions[-1].parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclasses.dataclass
class Cluster:
    port: int
    socket_dir: str
    datadir: Path
    superuser_password: str
    ca_file: str
    bindir: Path
    # This machine's own non-loopback address, where the cluster listens too: what
    # a server on another machine looks like to the package (127.x is "local").  No
    # pg_hba.conf line admits it: a test adds one for its role (hba_lines).
    remote_address: str | None = None

    @property
    def log(self) -> Path:
        return self.datadir.parent / "log" / "server.log"

    def connect(self, dbname: str = "postgres", **kwargs):
        """A superuser connection over TCP (autocommit)."""
        return psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            dbname=dbname,
            user="postgres",
            password=self.superuser_password,
            sslmode="disable",
            autocommit=True,
            **kwargs,
        )

    def can_login(self, dbname: str, user: str, password: str) -> bool:
        """Whether USER logs in to DBNAME over TCP with PASSWORD (as Synapse will)."""
        try:
            psycopg.connect(
                host="127.0.0.1",
                port=self.port,
                dbname=dbname,
                user=user,
                password=password,
                sslmode="disable",
                connect_timeout=5,
            ).close()
        except psycopg.OperationalError:
            return False
        return True

    def query(self, sql, params=(), dbname: str = "postgres"):
        with self.connect(dbname) as conn:
            return conn.execute(sql, params).fetchall()

    def pg_ctl(self, *args: str) -> None:
        _as_postgres([str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-w", *args])

    @property
    def hba_file(self) -> Path:
        return self.datadir / "pg_hba.conf"

    def reload(self, timeout: float = 10.0) -> None:
        """Reload the configuration (pg_hba.conf too) and wait until new connections
        get it: the postmaster stamps each reload, and its new backends inherit the stamp."""
        query = "SELECT pg_conf_load_time()"
        [(before,)] = self.query(query)
        self.pg_ctl("reload")
        deadline = time.monotonic() + timeout
        while self.query(query)[0][0] == before:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the cluster did not reload within {timeout:g} s")
            time.sleep(0.02)

    @contextlib.contextmanager
    def hba_lines(self, *lines: str):
        """pg_hba.conf with *lines* first (they win over the rest), reloaded; restored
        and reloaded afterwards."""
        original = self.hba_file.read_text()
        self.hba_file.write_text("".join(f"{line}\n" for line in lines) + original)
        try:
            self.reload()
            yield
        finally:
            self.hba_file.write_text(original)
            self.reload()


def _as_postgres(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    pg = pwd.getpwnam("postgres")
    return subprocess.run(
        cmd,
        user=pg.pw_uid,
        group=pg.pw_gid,
        extra_groups=[],
        env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", "HOME": pg.pw_dir},
        check=True,
        capture_output=True,
        cwd="/",
        **kwargs,
    )


def _make_certificates(directory: Path) -> None:
    """A CA and a server certificate for localhost and 127.0.0.1."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=matrix-synapse-setup test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    )
    openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    )
    (directory / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.crt",
    )


def non_loopback_ipv4() -> str | None:
    """An IPv4 address of this machine that is not loopback, if it has one."""
    out = subprocess.run(
        ["ip", "-j", "-4", "addr", "show"], capture_output=True, text=True, check=False
    ).stdout
    for link in json.loads(out or "[]"):
        for info in link.get("addr_info", []):
            if info.get("scope") == "global":
                return str(info["local"])
    return None


@contextlib.contextmanager
def throwaway_cluster(lc_messages: str | None = None):
    """Start a cluster as described in the module docstring; remove it afterwards.

    *lc_messages* (such as ``fr_FR.UTF-8``, a locale the system has) sets the
    language of the server's messages; None leaves initdb's (C: English)."""
    if os.geteuid() != 0:
        raise RuntimeError("a throwaway cluster needs root (it acts as the postgres user)")
    bindir = _pg_bindir()
    pg = pwd.getpwnam("postgres")
    top = Path(tempfile.mkdtemp(prefix="mss-cluster-"))
    os.chmod(top, 0o755)  # noqa: S103 - postgres must reach its data directory below
    datadir, sockdir, tls, logs = top / "data", top / "socket", top / "tls", top / "log"
    for d in (datadir, sockdir, tls, logs):
        d.mkdir()
        os.chown(d, pg.pw_uid, pg.pw_gid)
    os.chmod(datadir, 0o700)
    password = secrets.token_urlsafe(24)
    pwfile = top / "pwfile"
    pwfile.write_text(password + "\n")
    os.chown(pwfile, pg.pw_uid, pg.pw_gid)
    os.chmod(pwfile, 0o600)
    _make_certificates(tls)
    for name in ("server.key", "server.crt", "ca.crt"):
        os.chown(tls / name, pg.pw_uid, pg.pw_gid)
    os.chmod(tls / "server.key", 0o600)
    # Debian's clusters default to C.UTF-8: the test cluster does too, so the
    # code must create Synapse's database from template0 with locale C.
    _as_postgres(
        [
            str(bindir / "initdb"),
            "-D",
            str(datadir),
            "-U",
            "postgres",
            "--pwfile",
            str(pwfile),
            "--encoding=UTF8",
            "--locale=C.UTF-8",
            "--auth-local=peer",
            "--auth-host=scram-sha-256",
        ]
    )
    pwfile.unlink()
    port = free_port()
    remote_address = non_loopback_ipv4()
    listen = ["127.0.0.1", *([remote_address] if remote_address else [])]
    with open(datadir / "postgresql.conf", "a") as conf:
        conf.write(
            f"port = {port}\nlisten_addresses = '{','.join(listen)}'\n"
            f"unix_socket_directories = '{sockdir}'\n"
            f"ssl = on\nssl_cert_file = '{tls / 'server.crt'}'\n"
            f"ssl_key_file = '{tls / 'server.key'}'\n"
            "fsync = off\nlog_min_messages = warning\n"
        )
        if lc_messages is not None:
            conf.write(f"lc_messages = '{lc_messages}'\n")
    cluster = Cluster(
        port, str(sockdir), datadir, password, str(tls / "ca.crt"), bindir, remote_address
    )
    cluster.pg_ctl("-l", str(cluster.log), "start")
    try:
        yield cluster
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            cluster.pg_ctl("-m", "immediate", "stop")
        shutil.rmtree(top, ignore_errors=True)
