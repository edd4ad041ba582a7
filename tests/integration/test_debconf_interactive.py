"""The real config script and postinst, interactive, under debconf's readline
frontend on a pseudo-terminal: a person typing answers, making mistakes, being
told why, going back.

The config script asks; the postinst's helper explains what it refuses and asks
that again, then goes on to the server.  Uses the private debconf database and
mount namespace of test_debconf.py.

Going back to the previous question is a feature of the readline frontend with
Term::ReadLine::Gnu (Page Up); without it the frontend has no "back"
at all.  The tests that go back use that library (PERL_RL=Gnu: the system's, or
else libterm-readline-gnu-perl unpacked into build/cache with apt-get download),
the others the plain stub (PERL_RL=Stub), whichever is installed.
"""

from __future__ import annotations

import json
import re
import subprocess
import textwrap

import pytest

from scripts.devtools.pgcluster import free_port
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
    for expect, answer, *raw in steps:
        deadline = time.monotonic() + 30
        while alive and not re.search(expect.encode(), pending) and time.monotonic() < deadline:
            alive = pump(0.2)
        if not re.search(expect.encode(), pending):
            transcript += b"\\n<<no prompt matching " + expect.encode() + b">>\\n"
            status = 124
            break
        pending = b""
        time.sleep(0.1)
        os.write(fd, answer.encode() + (b"" if raw else b"\\r"))
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


def make(tmp_path, cls=Debconf):
    made = cls(tmp_path)
    made.install_helper()
    (tmp_path / "driver.py").write_text(DRIVER)
    made.driver = tmp_path / "driver.py"
    return made


@pytest.fixture
def dc(tmp_path):
    return make(tmp_path)


def converse(dc, steps, priority="low", env=None, script="postinst"):
    """Run debian/SCRIPT ("postinst": the config script first, then the postinst, as
    dpkg does; "config": the config script alone) on a pty, typing *steps*."""
    return dc.run(
        ["/usr/bin/python3", str(dc.driver), str(ROOT / "debian" / script), "configure", ""],
        stdin=json.dumps(steps),
        env={
            "DEBIAN_FRONTEND": "readline",
            "DEBIAN_PRIORITY": priority,
            "TERM": "dumb",
            "PERL_RL": "Stub",
        }
        | (env or {}),
        check=False,
    )


# The failure question the postinst asks when no server answers (none does here).
FAILURE = r"Action after the PostgreSQL server failure:"


def test_a_person_corrects_mistakes_and_the_answers_are_stored(tmp_path, cluster, names):
    from tests.integration.test_debconf_postinst import Site

    dc = make(tmp_path, Site)
    dbname, user = names
    port = str(cluster.port)
    dc.env["PGSOCKDIR"] = cluster.socket_dir
    password = "p w\\d 'é\""
    proc = converse(
        dc,
        [
            # the config script asks everything, and judges nothing but the confirmation
            ("Host name of the PostgreSQL server for Synapse:", "localhost"),
            ("Port of the PostgreSQL server:", "99999"),
            ("Name of Synapse's database:", "Bad-Name"),
            (r"role \(user name\) for Synapse:", user),
            ("Password of the PostgreSQL role for Synapse:", password),
            ("Password confirmation:", "typo"),
            (r"Passwords do not match[\s\S]*Password of the PostgreSQL role", password),
            ("Password confirmation:", password),
            (r"Tune the local PostgreSQL cluster for Synapse\? \[yes/no\]", "no"),
            (r"Name of the first server admin account \(empty for none\):", ""),
            (r"Delete Synapse's database when this package is purged\? \[yes/no\]", "yes"),
            ("Number of database dumps to keep:", "5"),
            ("Synapse worker processes:", "1"),
            # the postinst's helper: told why, asked again
            (
                r"not a number from 1 to 65535[\s\S]*Port of the PostgreSQL server:",
                str(cluster.port),
            ),
            (r"lower-case letters[\s\S]*Name of Synapse's database:", dbname),
        ],
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (dc.get("db-host"), dc.get("db-port"), dc.get("db-name"), dc.get("db-user")) == (
        "localhost",
        port,
        dbname,
        user,
    )
    assert dc.get("tune-postgresql") == "false"
    assert dc.get("purge-database") == "true"
    assert dc.get("backup-keep") == "5"
    # ... and applied: the role logs in with the password typed, which is in the
    # snippet's password file, not in debconf.
    args = dc.args()
    assert (args["port"], args["dbname"], args["user"]) == (cluster.port, dbname, user)
    assert args["password"] == password
    assert cluster.can_login(dbname, user, password)
    assert dc.get("db-password") == ""
    # The password was never echoed.
    assert password not in proc.stdout


def test_a_remote_host_asks_the_tls_mode_and_insists_on_a_password(dc):
    proc = converse(
        dc,
        [
            ("Host name of the PostgreSQL server for Synapse:", "db.invalid"),
            ("TLS mode for the connection", "verify-full"),
            # empty: the system's CAs
            ("CA certificate file for the PostgreSQL server:", ""),
            ("Password of the PostgreSQL role for Synapse:", ""),
            (r"Name of the first server admin account \(empty for none\):", ""),
            ("Synapse worker processes:", "1"),
            # the helper refuses the empty password for a remote server
            (r"remote server needs the password[\s\S]*Password of the PostgreSQL role", "pw"),
            ("Password confirmation:", "pw"),
            (r"db\.invalid[\s\S]*" + FAILURE, "abort"),
        ],
        priority="medium",
    )
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "<<no prompt" not in proc.stdout, proc.stdout
    assert (dc.get("db-host"), dc.get("db-sslmode"), dc.get("db-sslrootcert")) == (
        "db.invalid",
        "verify-full",
        "",
    )
    assert dc.get("db-password") == "pw"  # not applied: kept for the next run


def test_a_ca_file_that_is_no_certificate_is_asked_again(dc, tmp_path):
    bogus = tmp_path / "ca.pem"
    bogus.write_text("not a certificate\n")
    bogus.chmod(0o644)
    proc = converse(
        dc,
        [
            ("Host name of the PostgreSQL server for Synapse:", "db.invalid"),
            ("TLS mode for the connection", "verify-full"),
            ("CA certificate file for the PostgreSQL server:", str(bogus)),
            ("Password of the PostgreSQL role for Synapse:", "pw"),
            ("Password confirmation:", "pw"),
            (r"Name of the first server admin account \(empty for none\):", ""),
            ("Synapse worker processes:", "1"),
            (r"holds no\s+PEM certificate[\s\S]*CA certificate file for the PostgreSQL", ""),
            (FAILURE, "abort"),
        ],
        priority="medium",
    )
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "<<no prompt" not in proc.stdout, proc.stdout
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
            (r"Nom du premier compte administrateur du serveur \(vide pour aucun\) :", ""),
            ("Processus auxiliaires \\(workers\\) de Synapse :", "1"),
        ],
        priority="medium",
        env={"LOCPATH": str(tmp_path), "LANG": "fr_FR.UTF-8"},
        script="config",
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
            (r"Name of the first server admin account \(empty for none\):", ""),
            (r"Delete Synapse's database when this package is purged\? \[yes/no\]", "no"),
            ("Number of database dumps to keep:", ""),
            ("Synapse worker processes:", "1"),
        ],
        script="config",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [dc.get(q) for q in ("db-host", "db-port", "db-name", "db-user", "db-sslmode")] == [
        "db.example.org",
        "5432",
        "synapse",
        "app",
        "prefer",
    ]
    assert dc.get("backup-keep") == "3"  # Enter kept the default shown


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


@pytest.mark.server_language
def test_synapse_data_on_sqlite_is_asked_about_by_the_postinst_at_high_priority(dc):
    # Only the helper can look into Synapse's database: the question is the postinst's,
    # asked before the server is contacted (none answers here).
    synapse_on_sqlite(dc, users=2)
    dc.preseed(db_port=str(free_port()))
    found = r"holds 2 user\(s\),\s+1 room\(s\)\s+and\s+6 event\(s\)[\s\S]*SQLite data:"
    proc = converse(dc, [(found, "keep-sqlite"), (FAILURE, "abort")], priority="high")
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "<<no prompt" not in proc.stdout, proc.stdout
    assert "about 1 minute(s)" in " ".join(proc.stdout.split())
    assert dc.get("sqlite-data") == "keep-sqlite"
    # not asked by the config script, which runs before the package is unpacked
    assert "sqlite-data" not in (ROOT / "debian" / "config").read_text()


@pytest.mark.server_language
def test_an_empty_sqlite_database_asks_nothing(dc):
    synapse_on_sqlite(dc, users=0)
    dc.preseed(db_port=str(free_port()))
    proc = converse(dc, [(FAILURE, "abort")], priority="high")
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "<<no prompt" not in proc.stdout, proc.stdout
    assert "SQLite data" not in proc.stdout


# --- going back (Term::ReadLine::Gnu) -------------------------------------------

# Page Up: debconf's readline frontend binds it to previous-question.  (It binds
# Ctrl-U too, but readline gives the terminal's kill character back to
# unix-line-discard.)
BACK = "\x1b[5~"
CLEAR = "\x01\x0b"  # Ctrl-A Ctrl-K: Gnu readline puts the current value in the line


@pytest.fixture(scope="session")
def readline_gnu():
    """The environment for debconf's readline frontend with Term::ReadLine::Gnu."""
    env = {"PERL_RL": "Gnu"}
    # (Term::ReadLine::Gnu refuses to be loaded directly)
    check = ["perl", "-MTerm::ReadLine", "-e", "exit(Term::ReadLine->ReadLine !~ /::Gnu$/)"]
    plain = {"PATH": "/usr/bin:/bin", "PERL_RL": "Gnu"}
    if subprocess.run(check, env=plain, capture_output=True, check=False).returncode == 0:
        return env
    cache = ROOT / "build" / "cache" / "libterm-readline-gnu-perl"
    found = list(cache.glob("root/usr/lib/*/perl5/*/Term/ReadLine/Gnu.pm"))
    if not found:
        cache.mkdir(parents=True, exist_ok=True)
        for old in cache.glob("*.deb"):
            old.unlink()
        got = subprocess.run(
            ["apt-get", "download", "libterm-readline-gnu-perl"],
            cwd=cache,
            capture_output=True,
            text=True,
            check=False,
        )
        debs = list(cache.glob("*.deb"))
        if got.returncode or not debs:
            pytest.fail(
                "going back needs Term::ReadLine::Gnu: install libterm-readline-gnu-perl, "
                f"or let apt-get download it (it said: {got.stderr.strip()})",
                pytrace=False,
            )
        subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(cache / "root")], check=True)
        found = list(cache.glob("root/usr/lib/*/perl5/*/Term/ReadLine/Gnu.pm"))
    env["PERL5LIB"] = str(found[0].parents[2])
    proc = subprocess.run(check, env=plain | {"PERL5LIB": env["PERL5LIB"]}, check=False)
    assert proc.returncode == 0, f"Term::ReadLine::Gnu in {env['PERL5LIB']} does not load"
    return env


def type_(answer: str) -> str:
    return CLEAR + answer


def prompts(transcript: str) -> list[str]:
    """The questions in the order they were shown."""
    names = {
        "host": "Host name of the PostgreSQL server for Synapse:",
        "port": "Port of the PostgreSQL server:",
        "name": "Name of Synapse's database:",
        "user": "role (user name) for Synapse:",
        "tls": "TLS mode for the connection",
        "ca": "CA certificate file for the PostgreSQL server:",
        "password": "Password of the PostgreSQL role for Synapse:",
        "again": "Password confirmation:",
        "tune": "Tune the local PostgreSQL cluster for Synapse?",
        "admin": "Name of the first server admin account (empty for none):",
        "purge": "Delete Synapse's database when this package is purged?",
        "keep": "Number of database dumps to keep:",
        "workers": "Synapse worker processes:",
    }
    where = {}
    for name, text in names.items():
        for match in re.finditer(re.escape(text), transcript):
            where[match.start()] = name
    return [where[k] for k in sorted(where)]


def test_going_back_shows_the_question_before_and_takes_the_new_answer(dc, readline_gnu):
    proc = converse(
        dc,
        [
            ("Host name of the PostgreSQL server for Synapse:", type_("db.example.org")),
            ("Port of the PostgreSQL server:", BACK, "raw"),
            # the host again, with the answer given
            ("Host name of the PostgreSQL server for Synapse:", type_("localhost")),
            ("Port of the PostgreSQL server:", type_("6432")),
            ("Name of Synapse's database:", type_("matrix")),
            (r"role \(user name\) for Synapse:", type_("synapse_app")),
            ("Password of the PostgreSQL role for Synapse:", "pw"),
            ("Password confirmation:", "pw"),
            (r"Tune the local PostgreSQL cluster for Synapse\?", type_("no")),
            (r"Name of the first server admin account \(empty for none\):", type_("")),
            (r"Delete Synapse's database when this package is purged\?", type_("no")),
            ("Number of database dumps to keep:", type_("3")),
            ("Synapse worker processes:", type_("1")),
        ],
        env=readline_gnu,
        script="config",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "<<no prompt" not in proc.stdout, proc.stdout
    # The host shown again held the first answer.
    again = proc.stdout.split("Port of the PostgreSQL server:", 1)[1]
    assert "db.example.org" in again.split("Port of the PostgreSQL server:", 1)[0]
    assert prompts(proc.stdout) == [
        "host", "port", "host", "port", "name", "user", "password", "again", "tune", "admin",
        "purge", "keep", "workers",
    ]  # fmt: skip
    # The local cluster: no TLS questions.
    assert (dc.get("db-host"), dc.get("db-port"), dc.get("db-name"), dc.get("db-user")) == (
        "localhost",
        "6432",
        "matrix",
        "synapse_app",
    )
    assert (dc.get("db-password"), dc.get("tune-postgresql")) == ("pw", "false")


def test_going_back_from_the_confirmation_asks_the_password_again(dc, readline_gnu):
    proc = converse(
        dc,
        [
            ("Host name of the PostgreSQL server for Synapse:", type_("localhost")),
            ("Password of the PostgreSQL role for Synapse:", "first"),
            ("Password confirmation:", BACK, "raw"),
            ("Password of the PostgreSQL role for Synapse:", "second"),
            ("Password confirmation:", "second"),
            (r"Name of the first server admin account \(empty for none\):", type_("")),
            ("Synapse worker processes:", type_("1")),
        ],
        priority="medium",
        env=readline_gnu,
        script="config",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "<<no prompt" not in proc.stdout, proc.stdout
    assert prompts(proc.stdout) == [
        "host", "password", "again", "password", "again", "admin", "workers"
    ]  # fmt: skip
    assert (dc.get("db-password"), dc.get("db-password-again")) == ("second", "second")


def test_the_admin_password_is_asked_again_after_a_mismatch_and_after_going_back(dc, readline_gnu):
    """The admin account's password loop in debian/config, with the real debconf: two
    different passwords are said and asked again; back from the confirmation is back to
    the password."""
    proc = converse(
        dc,
        [
            ("Host name of the PostgreSQL server for Synapse:", type_("localhost")),
            ("Password of the PostgreSQL role for Synapse:", ""),
            (r"Name of the first server admin account \(empty for none\):", type_("alice")),
            ("Password of the server admin account:", "one"),
            ("Admin account password confirmation:", "two"),
            (r"Passwords do not match[\s\S]*Password of the server admin account:", "three"),
            ("Admin account password confirmation:", BACK, "raw"),
            ("Password of the server admin account:", "four"),
            ("Admin account password confirmation:", "four"),
            ("Synapse worker processes:", type_("1")),
        ],
        priority="medium",
        env=readline_gnu,
        script="config",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "<<no prompt" not in proc.stdout, proc.stdout
    assert proc.stdout.count("Passwords do not match") == 1, proc.stdout
    assert proc.stdout.count("Password of the server admin account:") == 3, proc.stdout
    assert (dc.get("admin-user"), dc.get("admin-password")) == ("alice", "four")
    assert dc.get("admin-password-again") == "four"


def test_going_back_over_questions_not_shown_lands_on_the_last_one_shown(dc, readline_gnu):
    # At medium priority the port, name and user (low) are not shown, nor the TLS
    # questions (local host): back from the password is the host.
    proc = converse(
        dc,
        [
            ("Host name of the PostgreSQL server for Synapse:", type_("localhost")),
            ("Password of the PostgreSQL role for Synapse:", BACK, "raw"),
            ("Host name of the PostgreSQL server for Synapse:", type_("db.example.org")),
            ("TLS mode for the connection", type_("require")),
            ("Password of the PostgreSQL role for Synapse:", "pw"),
            ("Password confirmation:", "pw"),
            (r"Name of the first server admin account \(empty for none\):", type_("")),
            ("Synapse worker processes:", type_("1")),
        ],
        priority="medium",
        env=readline_gnu,
        script="config",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "<<no prompt" not in proc.stdout, proc.stdout
    assert prompts(proc.stdout) == [
        "host", "password", "host", "tls", "password", "again", "admin", "workers"
    ]  # fmt: skip
    assert (dc.get("db-host"), dc.get("db-sslmode"), dc.get("db-password")) == (
        "db.example.org",
        "require",
        "pw",
    )
    assert dc.get("db-port") == "5432"


def test_an_upgrade_does_not_ask_the_new_questions_a_first_install_does(dc):
    """Issue 14's admin-user and backup-keep are new: an upgrade ("configure OLD-VERSION")
    asks nothing, not even at priority low (the defaults hold: no account, 3 dumps); a
    first install asks them."""
    dc.preseed(
        db_host="localhost",
        db_port="5432",
        db_name="synapse",
        db_user="synapse",
        db_password="pw",
        db_password_again="pw",
        tune_postgresql="true",
        purge_database="false",
    )
    env = {"DEBIAN_FRONTEND": "readline", "DEBIAN_PRIORITY": "low", "TERM": "dumb"}
    env["PERL_RL"] = "Stub"
    config = str(ROOT / "debian" / "config")
    upgrade = dc.run(
        ["/usr/bin/python3", str(dc.driver), config, "configure", "0.4.0"],
        stdin="[]",
        env=env,
        check=False,
    )
    assert upgrade.returncode == 0, upgrade.stdout + upgrade.stderr
    assert "Number of database dumps to keep:" not in upgrade.stdout
    assert "admin account" not in upgrade.stdout
    assert "Synapse worker processes:" not in upgrade.stdout
    proc = converse(
        dc,
        [
            (r"Name of the first server admin account \(empty for none\):", ""),
            ("Number of database dumps to keep:", "6"),
            ("Synapse worker processes:", "1"),
        ],
        script="config",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert dc.get("backup-keep") == "6"
