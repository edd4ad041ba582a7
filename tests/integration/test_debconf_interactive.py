"""The real config script, interactive, under debconf's readline frontend on a
pseudo-terminal: a person typing answers, making mistakes, being told why.

Uses the private debconf database and mount namespace of test_debconf.py.
"""

from __future__ import annotations

import json
import subprocess
import textwrap

import pytest

from tests.integration.test_debconf import ROOT, Debconf

DRIVER = textwrap.dedent(
    """\
    import json, os, pty, re, select, sys, time

    steps = json.loads(sys.stdin.read())
    pid, fd = pty.fork()
    if pid == 0:
        os.execvp(sys.argv[1], sys.argv[1:])
    pending, transcript, alive = b"", b"", True

    def pump(timeout):
        global pending, transcript
        if not select.select([fd], [], [], timeout)[0]:
            return True
        try:
            data = os.read(fd, 65536)
        except OSError:
            return False
        pending += data
        transcript += data
        return bool(data)

    status = 0
    for expect, answer in steps:
        deadline = time.monotonic() + 30
        while alive and not re.search(expect.encode(), pending) and time.monotonic() < deadline:
            alive = pump(0.2)
        if not re.search(expect.encode(), pending):
            transcript += b"\\n<<no prompt matching " + expect.encode() + b">>\\n"
            status = 124
            break
        pending = b""
        time.sleep(0.1)
        os.write(fd, answer.encode() + b"\\r")
    deadline = time.monotonic() + 30
    while alive and time.monotonic() < deadline:
        alive = pump(0.2)
    if alive:
        os.kill(pid, 9)
    _, st = os.waitpid(pid, 0)
    sys.stdout.write(transcript.decode(errors="replace"))
    sys.exit(status or os.waitstatus_to_exitcode(st))
    """
)


@pytest.fixture
def dc(tmp_path):
    made = Debconf(tmp_path)
    made.install_helper()
    (tmp_path / "driver.py").write_text(DRIVER)
    made.driver = tmp_path / "driver.py"
    return made


def converse(dc, steps, priority="low", env=None):
    return dc.run(
        ["/usr/bin/python3", str(dc.driver), str(ROOT / "debian" / "config"), "configure", ""],
        stdin=json.dumps(steps),
        env={"DEBIAN_FRONTEND": "readline", "DEBIAN_PRIORITY": priority, "TERM": "dumb"}
        | (env or {}),
        check=False,
    )


def test_a_person_corrects_mistakes_and_the_answers_are_stored(dc):
    password = "p w\\d 'é\""
    proc = converse(
        dc,
        [
            ("Host name of the PostgreSQL server for Synapse:", "localhost"),
            ("Port of the PostgreSQL server:", "99999"),
            # told why, asked again
            (r"not a number from 1 to 65535[\s\S]*Port of the PostgreSQL server:", "6432"),
            ("Name of Synapse's database:", "Bad-Name"),
            (r"lower-case letters[\s\S]*Name of Synapse's database:", "matrix"),
            (r"role \(user name\) for Synapse:", "synapse_app"),
            ("Password of the PostgreSQL role for Synapse:", password),
            ("Password confirmation:", "typo"),
            (r"Passwords do not match[\s\S]*Password of the PostgreSQL role", password),
            ("Password confirmation:", password),
            (r"Tune the local PostgreSQL cluster for Synapse\? \[yes/no\]", "no"),
            (r"Delete Synapse's database when this package is purged\? \[yes/no\]", "yes"),
        ],
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert dc.get("tune-postgresql") == "false"
    assert (dc.get("db-host"), dc.get("db-port"), dc.get("db-name"), dc.get("db-user")) == (
        "localhost",
        "6432",
        "matrix",
        "synapse_app",
    )
    assert dc.get("db-password") == password
    assert dc.get("purge-database") == "true"
    # The password was never echoed.
    assert password not in proc.stdout


def test_a_remote_host_asks_the_tls_mode_and_insists_on_a_password(dc):
    proc = converse(
        dc,
        [
            ("Host name of the PostgreSQL server for Synapse:", "db.example.org"),
            ("TLS mode for the connection", "verify-full"),
            # empty: the system's CAs
            ("CA certificate file for the PostgreSQL server:", ""),
            ("Password of the PostgreSQL role for Synapse:", ""),
            (r"remote server needs the password[\s\S]*Password of the PostgreSQL role", "pw"),
            ("Password confirmation:", "pw"),
        ],
        priority="medium",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (dc.get("db-host"), dc.get("db-sslmode"), dc.get("db-password")) == (
        "db.example.org",
        "verify-full",
        "pw",
    )
    assert dc.get("db-sslrootcert") == ""


def test_a_ca_file_that_is_no_certificate_is_asked_again(dc, tmp_path):
    bogus = tmp_path / "ca.pem"
    bogus.write_text("not a certificate\n")
    bogus.chmod(0o644)
    proc = converse(
        dc,
        [
            ("Host name of the PostgreSQL server for Synapse:", "db.example.org"),
            ("TLS mode for the connection", "verify-full"),
            ("CA certificate file for the PostgreSQL server:", str(bogus)),
            (r"holds no\s+PEM certificate[\s\S]*CA certificate file for the PostgreSQL", ""),
            ("Password of the PostgreSQL role for Synapse:", "pw"),
            ("Password confirmation:", "pw"),
        ],
        priority="medium",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert dc.get("db-sslrootcert") == ""


def test_french_questions_for_a_french_speaker(dc, tmp_path):
    # A French locale of our own (glibc's LOCPATH), the system's is not touched.
    subprocess.run(
        ["localedef", "-i", "fr_FR", "-f", "UTF-8", str(tmp_path / "fr_FR.UTF-8")], check=True
    )
    proc = converse(
        dc,
        [
            ("Nom d'hôte du serveur PostgreSQL pour Synapse :", "localhost"),
            ("Mot de passe du rôle PostgreSQL pour Synapse :", ""),
        ],
        priority="medium",
        env={"LOCPATH": str(tmp_path), "LANG": "fr_FR.UTF-8"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "que seuls root et Synapse peuvent lire" in " ".join(proc.stdout.split())


def test_enter_keeps_the_value_shown(dc):
    # Without Term::ReadLine::Gnu, debconf's readline frontend shows no default and
    # answers "" to Enter: that keeps the current value.
    dc.preseed(db_host="db.example.org", db_password="pw", db_password_again="pw")
    dc.run(
        ["debconf-communicate", "matrix-synapse-setup"],
        stdin="FSET matrix-synapse-setup/db-host seen false\n",
    )
    proc = converse(
        dc,
        [
            ("Host name of the PostgreSQL server for Synapse:", ""),
            ("Port of the PostgreSQL server:", ""),
            ("Name of Synapse's database:", ""),
            (r"role \(user name\) for Synapse:", "app"),
            ("TLS mode for the connection", "prefer"),  # debconf insists on a choice
            (r"Delete Synapse's database when this package is purged\? \[yes/no\]", "no"),
        ],
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [dc.get(q) for q in ("db-host", "db-port", "db-name", "db-user", "db-sslmode")] == [
        "db.example.org",
        "5432",
        "synapse",
        "app",
        "prefer",
    ]


def synapse_on_sqlite(dc, users: int) -> None:
    """Synapse's files as upstream's package lays them out, on SQLite with *users* users."""
    import sqlite3

    hs = dc.etc / "matrix-synapse" / "homeserver.yaml"
    hs.parent.mkdir(parents=True, exist_ok=True)
    hs.write_text(
        "server_name: mss.test\n"
        "database:\n  name: sqlite3\n  args: {database: /var/lib/matrix-synapse/homeserver.db}\n"
    )
    db = dc.overlay / "var/lib" / "upper" / "matrix-synapse" / "homeserver.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE users (name TEXT)")
    conn.execute("CREATE TABLE rooms (room_id TEXT)")
    conn.execute("CREATE TABLE events (stream_ordering INTEGER)")
    conn.executemany("INSERT INTO users VALUES (?)", [(f"@u{i}:mss.test",) for i in range(users)])
    conn.execute("INSERT INTO rooms VALUES ('!r:mss.test')")
    conn.executemany("INSERT INTO events VALUES (?)", [(i,) for i in range(users * 3)])
    conn.commit()
    conn.close()


def test_synapse_data_on_sqlite_is_asked_about_at_high_priority(dc):
    synapse_on_sqlite(dc, users=2)
    found = r"holds 2 user\(s\),\s+1 room\(s\)\s+and\s+6 event\(s\)[\s\S]*SQLite data:"
    proc = converse(dc, [(found, "keep-sqlite")], priority="high")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "about 1 minute(s)" in " ".join(proc.stdout.split())
    assert dc.get("sqlite-data") == "keep-sqlite"


def test_an_empty_sqlite_database_asks_nothing(dc):
    synapse_on_sqlite(dc, users=0)
    proc = converse(dc, [], priority="high")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SQLite data" not in proc.stdout
