"""A remote PostgreSQL server with TLS, for the system tests that point a client at one.

A test CA (made on the host with openssl), a server certificate it signed for DB_ADDR and
an unrelated CA; a cluster in the root's own second network namespace (behind a veth
pair), listening on DB_ADDR only, with TLS from that certificate and scram-sha-256 for
the pair's subnet.  Its admin works on its own socket directory, REMOTE_SOCKET, so a local
cluster may keep running beside it.  Shared by test_security.py (Synapse's snippet) and
test_dendrite.py (Dendrite's connection string).
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import secrets
import shutil
import ssl
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from scripts.devtools import steps
from scripts.devtools.harness import Root

HERE_ADDR, DB_ADDR = "10.231.12.1", "10.231.12.2"
SUBNET = "10.231.12.0/24"
NETNS = "dbnet"
REMOTE_SOCKET = "/run/pg-remote"
SERVER_CN = "mss-remote-db"
CA_CN = "MSS Test CA"
OTHER_CA_CN = "MSS Other CA"


# --- certificates (made on the host with openssl, copied into the root) --------------------

OPENSSL_CNF = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[v3_ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
[v3_server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = IP:{ip}
"""


@dataclass
class Certs:
    ca: Path  # the CA's certificate (PEM): what the root trusts
    server_cert: Path  # the server's certificate, signed by the CA, SAN IP:DB_ADDR
    server_key: Path
    other_ca: Path  # a CA that did not sign the server's certificate

    def server_sha256(self) -> str:
        der = ssl.PEM_cert_to_DER_cert(self.server_cert.read_text())
        return hashlib.sha256(der).hexdigest()


def openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode:
        raise AssertionError(f"openssl {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}")


def make_ca(tmp: Path, name: str, cn: str) -> Path:
    openssl(
        "req", "-x509", "-config", "openssl.cnf", "-extensions", "v3_ca",
        "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem",
        "-days", "30", "-subj", f"/CN={cn}", cwd=tmp,
    )  # fmt: skip
    return tmp / f"{name}.pem"


@contextlib.contextmanager
def make_certs() -> Iterator[Certs]:
    """A test CA, a server certificate it signed for DB_ADDR, and an unrelated CA, in a
    temporary directory removed afterwards."""
    tmp = Path(tempfile.mkdtemp(prefix="mss-certs-"))
    try:
        (tmp / "openssl.cnf").write_text(OPENSSL_CNF.format(ip=DB_ADDR))
        ca = make_ca(tmp, "ca", CA_CN)
        other = make_ca(tmp, "other-ca", OTHER_CA_CN)
        openssl(
            "req", "-new", "-config", "openssl.cnf", "-newkey", "rsa:2048", "-nodes",
            "-keyout", "server.key", "-out", "server.csr", "-subj", f"/CN={SERVER_CN}", cwd=tmp,
        )  # fmt: skip
        openssl(
            "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-set_serial", str(secrets.randbits(63)), "-days", "30", "-out", "server.pem",
            "-extfile", "openssl.cnf", "-extensions", "v3_server", cwd=tmp,
        )  # fmt: skip
        yield Certs(ca, tmp / "server.pem", tmp / "server.key", other)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --- the remote cluster ------------------------------------------------------------------


def pg_version(root: Root) -> str:
    return root.ok(["pg_lsclusters", "-h"], what="listing PostgreSQL clusters").output.split()[0]


def tls_cluster(root: Root, certs: Certs, version: str = "") -> Callable[..., str]:
    """Cluster `remote` of PostgreSQL VERSION (default: the local cluster's) at DB_ADDR
    only (network namespace NETNS), TLS on with the test CA's server certificate,
    scram-sha-256 from the pair's subnet; any local cluster is left as it is (the remote
    one has its own socket directory, so the same port does not clash).  Returns
    psql(sql, db="postgres") as the remote superuser (its socket)."""
    version = version or pg_version(root)
    root.add_netns(NETNS, HERE_ADDR, DB_ADDR)
    conf = f"/etc/postgresql/{version}/remote"
    root.ok(
        f"install -d -o postgres -g postgres -m 0700 {REMOTE_SOCKET}\n"
        f"pg_createcluster {version} remote -p 5432 >/dev/null",
        what="making the remote cluster",
    )
    root.put_file(certs.server_cert, f"{conf}/server-test.crt", 0o644)
    root.put_file(certs.server_key, f"{conf}/server-test.key", 0o600)
    root.ok(
        f"""
        chown postgres:postgres {conf}/server-test.crt {conf}/server-test.key
        cat >> {conf}/postgresql.conf <<EOF
listen_addresses = '{DB_ADDR}'
unix_socket_directories = '{REMOTE_SOCKET}'
ssl = on
ssl_cert_file = '{conf}/server-test.crt'
ssl_key_file = '{conf}/server-test.key'
EOF
        echo "host all all {SUBNET} scram-sha-256" >> {conf}/pg_hba.conf
        """,
        what="configuring the remote cluster (TLS with the test CA's certificate)",
    )
    root.ok(
        ["pg_ctlcluster", version, "remote", "start"],
        net=NETNS,
        what="starting the remote cluster in its own network namespace",
    )

    def psql(sql: str, db: str = "postgres") -> str:
        return steps.psql(root, sql, db, what=f"remote: {sql[:50]}", socket_dir=REMOTE_SOCKET)

    return psql


def make_role_and_database(psql: Callable[..., str], name: str, password: str) -> None:
    """What the remote server's admin does for a client: role NAME with PASSWORD (scram),
    and database NAME as a Matrix server needs it (UTF8, C, from template0, owned by it)."""
    quoted = password.replace("'", "''")
    psql(f"SET password_encryption = 'scram-sha-256'; CREATE ROLE {name} LOGIN PASSWORD '{quoted}'")
    psql(
        f"CREATE DATABASE {name} ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' "
        f"TEMPLATE template0 OWNER {name}"
    )


def check_over_tls(root: Root, psql: Callable[..., str], role: str) -> None:
    """Every connection of ROLE to the remote server uses TLS (pg_stat_ssl), and there is
    at least one."""
    out = psql(
        "SELECT ssl, coalesce(version, '') FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) "  # noqa: S608
        f"WHERE usename = '{role}'"  # role: a name the test chose
    )
    rows = [line for line in out.splitlines() if line.strip()]
    root.check(
        bool(rows) and all(re.fullmatch(r"t\|TLSv1\.[23]", row) for row in rows),
        f"every connection of role {role} to the remote server uses TLS (pg_stat_ssl)",
        "at least one row, all 't|TLSv1.2' or 't|TLSv1.3'",
        repr(rows),
    )
