"""The real postinst (and postrm purge) under the real debconf, against a real
PostgreSQL cluster, with the real ucf.

Each run happens in a private mount namespace (see test_debconf.py): overlays
on /usr/share (our helper), /etc (the snippet, the systemd drop-in), /var/lib
(ucf's state) and /var/backups (the purge dump); the throwaway cluster's socket
directory is bound on /run/postgresql, so for the package it is the local
cluster.  Synapse is not installed here and there is no systemd: restarting
is the system tests' business.
"""

from __future__ import annotations

import concurrent.futures
import os
import pwd
import re
import stat
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import yaml

from scripts.devtools.pgcluster import free_port, psycopg
from tests.integration.test_debconf import ROOT, Debconf

SNIPPET = "matrix-synapse/conf.d/database.yaml"
PASSFILE = "matrix-synapse/conf.d/database.pgpass"


class Site(Debconf):
    def postinst(self, check=True):
        return self.run([str(ROOT / "debian" / "postinst"), "configure", ""], check=check)

    def postrm(self, action="purge", check=True, script=None):
        return self.run([str(script or ROOT / "debian" / "postrm"), action], check=check)

    @property
    def snippet(self) -> Path:
        return self.etc / SNIPPET

    @property
    def passfile(self) -> Path:
        return self.etc / PASSFILE

    def args(self) -> dict:
        """The snippet's args, with the password libpq would use: the YAML's, else the
        one in the password file the snippet names (as the package writes it)."""
        args = yaml.safe_load(self.snippet.read_text())["database"]["args"]
        if "password" not in args and args.get("passfile") == f"/etc/{PASSFILE}":
            lines = [x for x in self.passfile.read_text().splitlines() if x[:1] not in "#"]
            assert len(lines) == 1 and lines[0].startswith("*:*:*:"), lines
            host, port, db, user, password = lines[0].split(":", 4)
            assert user == args["user"]
            args["password"] = re.sub(r"\\(.)", r"\1", password)  # libpq's unescaping
        return args

    def inline_password(self, text: str, password: str) -> str:
        """*text* (the snippet) with the password written in the YAML, as an admin may."""
        return text.replace(
            "    passfile:",
            f"    password: {yaml.safe_dump(password).splitlines()[0]}\n" "    passfile:",
            1,
        )


@pytest.fixture
def site(tmp_path, cluster, names):
    made = Site(tmp_path)
    made.install_helper()
    made.env["PGSOCKDIR"] = cluster.socket_dir
    made.dbname, made.user = names
    made.preseed(db_port=str(cluster.port), db_name=made.dbname, db_user=made.user)
    return made


def test_first_install_provisions_and_writes_the_snippet(site, cluster):
    proc = site.postinst()
    args = site.args()
    assert (args["host"], args["port"], args["dbname"], args["user"]) == (
        "localhost",
        cluster.port,
        site.dbname,
        site.user,
    )
    assert len(args["password"]) >= 40  # generated: secrets.token_urlsafe(32)
    assert cluster.can_login(site.dbname, site.user, args["password"])
    st = site.snippet.stat()
    # no matrix-synapse user on this machine: root only
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, 0o640)
    assert "Wrote /etc/matrix-synapse/conf.d/database.yaml (root:root 0640)" in proc.stderr
    assert args["password"] not in proc.stderr
    # The password is in the password file (libpq ignores one others can read), not
    # in the YAML that ucf shows differences of.
    assert args["password"] not in site.snippet.read_text()
    st = site.passfile.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, 0o600)
    # The secret does not stay in debconf.
    assert site.get("db-password") == ""
    assert args["password"] not in (site.dir / "passwords.dat").read_text()
    # ucf knows the file and who owns it.
    ucf = site.overlay / "var/lib/upper/ucf"
    assert f"  /etc/{SNIPPET}" in (ucf / "hashfile").read_text()
    registry = [line.split() for line in (ucf / "registry").read_text().splitlines()]
    assert ["matrix-synapse-setup", f"/etc/{SNIPPET}"] in registry
    # The drop-in that starts Synapse after PostgreSQL is shipped under /usr/lib: none
    # is written in /etc, the admin's directory.
    assert not (site.etc / "systemd/system/matrix-synapse.service.d").exists()
    # No temporary file was left beside the snippet.
    assert sorted(p.name for p in site.snippet.parent.iterdir()) == [
        "database.pgpass",
        "database.yaml",
    ]


def test_the_admins_libpq_variables_do_not_steer_the_checks(site, cluster):
    # Synapse (under systemd) has no PG* variables; with these from the admin's shell,
    # the role's login would run read-only (its "create tables" check fails) and the
    # superuser's would look for another database.
    site.env["PGOPTIONS"] = "-c default_transaction_read_only=on"
    site.env["PGDATABASE"] = "no_such_database"
    proc = site.postinst()
    assert "create tables in" in proc.stderr and site.snippet.is_file()
    assert site.args()["dbname"] == site.dbname


def test_second_run_changes_nothing(site, cluster):
    site.postinst()
    before = site.snippet.read_bytes(), site.snippet.stat().st_mtime_ns
    proc = site.postinst()
    assert (site.snippet.read_bytes(), site.snippet.stat().st_mtime_ns) == before
    assert "Nothing to change" in proc.stderr  # maint.unchanged: the quick path
    assert "Wrote" not in proc.stderr
    assert ": created" not in proc.stderr and ": changed" not in proc.stderr


def test_the_number_of_dumps_to_keep_reaches_the_apt_hook(site, cluster):
    """Issue 14: the hook runs outside debconf; a run that succeeds leaves backup-keep
    where the hook reads it, and a later answer replaces it (also on the quick path)."""
    keep = site.var_lib / "matrix-synapse-setup" / "backup-keep"
    site.postinst()
    assert keep.read_text() == "3\n"
    assert stat.S_IMODE(keep.stat().st_mode) == 0o644 and keep.stat().st_uid == 0
    site.preseed(backup_keep="7")
    proc = site.postinst()
    assert "Nothing to change" in proc.stderr
    assert keep.read_text() == "7\n"


def test_a_new_password_rotates_role_and_snippet_together(site, cluster):
    site.postinst()
    old = site.args()["password"]
    new = " new pass\\word \"with\" 'quotes' $x %s é "
    site.preseed(db_password=new)
    site.postinst()
    assert site.args()["password"] == new
    assert cluster.can_login(site.dbname, site.user, new)
    assert not cluster.can_login(site.dbname, site.user, old)
    assert site.get("db-password") == ""
    # and an empty answer afterwards keeps it
    site.postinst()
    assert site.args()["password"] == new


def test_hand_edits_that_keep_our_values_are_left_alone(site, cluster):
    site.postinst()
    edited = site.snippet.read_text().replace("cp_max: 10", "cp_max: 20") + "# mine\n"
    site.snippet.write_text(edited)
    proc = site.postinst()
    assert site.snippet.read_text() == edited
    assert "Wrote" not in proc.stderr


def test_a_root_certificate_added_by_hand_is_kept(site, cluster):
    # sslrootcert is no debconf question: an admin adds it to the snippet, and an
    # upgrade or reconfigure (same server) keeps it instead of refusing the edit.
    site.postinst()
    text = site.snippet.read_text()
    edited = text.replace("    sslmode:", f"    sslrootcert: {cluster.ca_file}\n    sslmode:", 1)
    assert edited != text
    site.snippet.write_text(edited)
    proc = site.postinst()
    assert site.args()["sslrootcert"] == cluster.ca_file
    assert "Traceback" not in proc.stderr


@pytest.mark.server_language
def test_server_unavailable_aborts_noninteractive_and_writes_nothing(site, cluster):
    site.preseed(db_port=str(free_port()))
    # dpkg exports DPKG_MAINTSCRIPT_DEBUG=0 to maintainer scripts: not a debug request
    proc = site.run(
        [str(ROOT / "debian" / "postinst"), "configure", ""],
        env={"DPKG_MAINTSCRIPT_DEBUG": "0"},
        check=False,
    )
    assert proc.returncode != 0
    assert "dpkg --configure -a" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not site.snippet.exists()


@pytest.mark.server_language
def test_ignore_writes_no_snippet(site, cluster):
    password = "pre seeded 'pass' \\ word"
    site.preseed(db_port=str(free_port()), db_password=password)
    site.preseed(db_failure="ignore")
    proc = site.postinst()
    assert "was not set up" in proc.stderr
    assert not site.snippet.exists()
    # Not applied, so the preseeded password stays for the run that applies it.
    assert site.get("db-password") == password
    site.preseed(db_port=str(cluster.port))
    site.postinst()
    assert site.args()["password"] == password
    assert cluster.can_login(site.dbname, site.user, password)
    assert site.get("db-password") == ""


@pytest.mark.server_language
def test_a_preseeded_retry_that_nobody_can_change_aborts(site, cluster):
    # Non-interactive, the failure question is not shown: retrying would loop for
    # ever (the run's 120 s timeout would fail this test).
    site.preseed(db_port=str(free_port()))
    site.preseed(db_failure="retry")
    proc = site.postinst(check=False)
    assert proc.returncode != 0
    assert "dpkg --configure -a" in proc.stderr
    assert not site.snippet.exists()


def test_a_wrong_locale_database_is_refused_untouched(site, cluster):
    from scripts.devtools.pgcluster import psycopg as pg

    sql = pg.sql
    with cluster.connect() as conn:
        conn.execute(
            sql.SQL(
                "CREATE DATABASE {} ENCODING 'UTF8' LC_COLLATE 'C.UTF-8' LC_CTYPE 'C.UTF-8' "
                "TEMPLATE template0"
            ).format(sql.Identifier(site.dbname))
        )
    proc = site.postinst(check=False)
    assert proc.returncode != 0
    assert site.dbname in proc.stderr and "C.UTF-8" in proc.stderr
    assert not site.snippet.exists()
    rows = cluster.query("SELECT datcollate FROM pg_database WHERE datname = %s", (site.dbname,))
    assert rows == [("C.UTF-8",)]


def test_a_snippet_deleted_by_hand_is_respected_on_upgrade(site, cluster):
    """As a deleted conffile: an upgrade does not write it again (with a new password);
    dpkg-reconfigure, the admin's explicit request, does."""
    site.postinst()
    password = site.args()["password"]
    site.snippet.unlink()
    configure = [str(ROOT / "debian" / "postinst"), "configure", "0.0.9"]
    proc = site.run(configure)
    assert not site.snippet.exists()
    assert "was deleted by hand" in proc.stderr and "dpkg-reconfigure" in proc.stderr
    assert cluster.can_login(site.dbname, site.user, password)  # the role is untouched
    site.run(configure, env={"DEBCONF_RECONFIGURE": "1"})
    assert site.snippet.exists()
    assert cluster.can_login(site.dbname, site.user, site.args()["password"])


def test_synapse_on_another_postgresql_database_is_not_switched(site, cluster):
    """A file of the admin's (sorted before ours) points Synapse at another PostgreSQL
    database: our snippet would replace it, so nothing is written; naming that same
    database in the answers is fine."""
    confd = site.etc / "matrix-synapse" / "conf.d"
    confd.mkdir(parents=True)
    (confd / "aa-db.yaml").write_text(
        "database:\n  name: psycopg2\n"
        f"  args: {{host: localhost, port: {cluster.port}, dbname: elsewhere, user: x}}\n"
    )
    proc = site.postinst(check=False)
    assert proc.returncode != 0
    assert "uses the PostgreSQL database 'elsewhere'" in proc.stderr
    assert "nothing was changed" in proc.stderr and "Traceback" not in proc.stderr
    assert not site.snippet.exists()
    assert not cluster.query("SELECT 1 FROM pg_database WHERE datname = %s", (site.dbname,))
    site.preseed(db_name="elsewhere")
    try:
        site.postinst()
        assert site.args()["dbname"] == "elsewhere"
    finally:
        with cluster.connect() as conn:  # before the fixture drops the role owning it
            conn.execute("DROP DATABASE IF EXISTS elsewhere")


def test_purge_without_purge_database_keeps_the_database(site, cluster):
    site.postinst()
    proc = site.postrm("purge")
    assert not site.snippet.exists()
    assert cluster.query("SELECT 1 FROM pg_database WHERE datname = %s", (site.dbname,))
    assert "dumped" not in proc.stderr
    ucf = site.overlay / "var/lib/upper/ucf"
    assert f"/etc/{SNIPPET}" not in (ucf / "hashfile").read_text()
    assert f"/etc/{SNIPPET}" not in (ucf / "registry").read_text()


@pytest.fixture(scope="module")
def built_postrm(tmp_path_factory):
    """The postrm of the built .deb: with debhelper's db_purge after our code."""
    subprocess.run(["invoke", "build"], cwd=ROOT, check=True, capture_output=True)
    deb = sorted((ROOT / "dist").glob("matrix-synapse-setup_*_all.deb"))[-1]
    out = tmp_path_factory.mktemp("control")
    subprocess.run(["dpkg-deb", "-e", str(deb), str(out)], check=True)
    return out / "postrm"


def test_purge_database_dumps_then_drops(site, cluster, built_postrm):
    site.postinst()
    password = site.args()["password"]
    with psycopg.connect(
        host="127.0.0.1",
        port=cluster.port,
        dbname=site.dbname,
        user=site.user,
        password=password,
        sslmode="disable",
        autocommit=True,
    ) as conn:
        conn.execute("CREATE TABLE kept (x text)")
        conn.execute("INSERT INTO kept VALUES ('a row that must be in the dump')")
    site.preseed(purge_database="true")
    proc = site.postrm("purge", script=built_postrm)
    dumps = list((site.overlay / "var/backups/upper").glob("matrix-synapse-setup_*.pgdump"))
    assert len(dumps) == 1, proc.stderr
    assert f"/var/backups/{dumps[0].name}" in proc.stderr
    assert stat.S_IMODE(dumps[0].stat().st_mode) == 0o600
    listing = subprocess.run(
        ["pg_restore", "-f", "-", str(dumps[0])], capture_output=True, text=True, check=True
    ).stdout
    assert "a row that must be in the dump" in listing
    assert not cluster.query("SELECT 1 FROM pg_database WHERE datname = %s", (site.dbname,))
    assert not cluster.query("SELECT 1 FROM pg_roles WHERE rolname = %s", (site.user,))
    assert not site.snippet.exists()
    # db_purge: our questions are gone from debconf
    out = site.run(
        ["debconf-communicate", "matrix-synapse-setup"],
        stdin="GET matrix-synapse-setup/db-host\n",
        check=False,
    ).stdout
    assert out.startswith("10 "), out


def test_remove_keeps_everything(site, cluster):
    site.postinst()
    before = site.snippet.read_bytes()
    site.postrm("remove")
    assert site.snippet.read_bytes() == before
    assert site.get("db-name") == site.dbname


def debconf_fds_of_the_superuser_child(helper_name: str, marker: str) -> dict[str, object] | None:
    """The superuser child of a running maintscript-helper with *marker* (NAME=VALUE) in
    its environment (a process of the postgres uid whose parent runs the helper): where
    its descriptors point, and where its parent's debconf pipe is (fd 0 reads debconf's
    replies, fd 3 writes commands: confmodule's DEBCONF_REDIR).  None while there is no
    such process."""
    postgres = pwd.getpwnam("postgres").pw_uid
    for proc in Path("/proc").iterdir():
        try:
            status = (proc / "status").read_text()
            uid = int(re.search(r"^Uid:\s+(\d+)", status, re.MULTILINE)[1])
            ppid = re.search(r"^PPid:\s+(\d+)", status, re.MULTILINE)[1]
            if (
                uid != postgres
                or helper_name.encode() not in Path(f"/proc/{ppid}/cmdline").read_bytes()
                # this test's helper, not one in a system test's root running meanwhile
                or marker.encode() not in Path(f"/proc/{ppid}/environ").read_bytes().split(b"\0")
            ):
                continue
            fds = {fd.name: os.readlink(fd) for fd in (proc / "fd").iterdir()}
            pipe = {n: os.readlink(f"/proc/{ppid}/fd/{n}") for n in ("0", "3")}
        except (OSError, TypeError):  # gone meanwhile, or not ours to read
            continue
        return {"fds": fds, "debconf": pipe}
    return None


def test_the_superuser_child_holds_no_end_of_the_debconf_pipe(site, cluster):
    """The postgres child (provision._child) must never write into debconf's pipe (its
    output would be read as a debconf command): its fds 0, 1 and 3 are /dev/null and no
    descriptor of it is the helper's debconf pipe.  Read in /proc while the child sits at
    its test-only pause point after creating the role (faults.py)."""
    pause = {"MSS_TEST_PAUSE_AT": "after-role-created", "MSS_TEST_PAUSE_SECONDS": "4"}
    marker = f"MSS_TEST_THIS_RUN={uuid.uuid4()}"  # not a helper in a system test's root
    seen = None
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        run = pool.submit(
            site.run,
            [str(ROOT / "debian" / "postinst"), "configure", ""],
            env=pause | dict([marker.split("=", 1)]),
            check=False,
        )
        deadline = time.monotonic() + 60
        while seen is None and not run.done() and time.monotonic() < deadline:
            # The role exists: the child is past its start (its dup2s), at the pause.
            if cluster.query("SELECT 1 FROM pg_roles WHERE rolname = %s", (site.user,)):
                seen = debconf_fds_of_the_superuser_child("maintscript-helper", marker)
            time.sleep(0.05)
        proc = run.result()
    assert seen is not None, f"no paused superuser child was seen:\n{proc.stderr}"
    assert all(end.startswith("pipe:") for end in seen["debconf"].values()), seen
    assert [seen["fds"].get(n) for n in ("0", "1", "3")] == ["/dev/null"] * 3, seen
    assert not set(seen["debconf"].values()) & set(seen["fds"].values()), seen
    # And the run went on to the end, with debconf never confused.
    assert proc.returncode == 0, proc.stderr
    assert "Unsupported command" not in proc.stderr
    assert cluster.can_login(site.dbname, site.user, site.args()["password"])


def test_an_edit_of_unmanaged_values_survives_a_new_password(site, cluster):
    # The password is not in the YAML: an admin's edit and a new password do not meet.
    site.postinst()
    edited = site.snippet.read_text().replace("cp_max: 10", "cp_max: 20")
    site.snippet.write_text(edited)
    site.preseed(db_password="rotated")
    site.postinst()
    assert site.snippet.read_text() == edited
    assert site.args()["password"] == "rotated"
    assert cluster.can_login(site.dbname, site.user, "rotated")


def test_an_edited_snippet_is_never_silently_overwritten(site, cluster):
    site.postinst()
    old = site.args()["password"]
    # The admin wrote the password into the YAML (it wins over the password file).
    edited = site.inline_password(site.snippet.read_text(), old).replace("cp_max: 10", "cp_max: 20")
    site.snippet.write_text(edited)
    site.preseed(db_password="rotated")
    proc = site.postinst(check=False)
    # Non-interactive, ucf would keep the edited file with the old password: refuse
    # before the role's password changes.
    assert proc.returncode != 0
    assert "edited by hand and differs from the answers in password" in proc.stderr
    assert site.snippet.read_text() == edited
    assert cluster.can_login(site.dbname, site.user, old)
    # The admin says to replace it.
    proc = site.run(
        [str(ROOT / "debian" / "postinst"), "configure", ""], env={"UCF_FORCE_CONFFNEW": "1"}
    )
    assert site.args()["password"] == "rotated"
    assert cluster.can_login(site.dbname, site.user, "rotated")
    assert "cp_max: 10" in site.snippet.read_text()
    assert "password:" not in site.snippet.read_text()


# --- interactive postinst (readline frontend on a pty) --------------------------


def interactive_postinst(site, tmp_path, steps, priority="high"):
    from tests.integration.test_debconf_interactive import DRIVER

    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    return site.run(
        ["/usr/bin/python3", str(driver), str(ROOT / "debian" / "postinst"), "configure", ""],
        stdin=__import__("json").dumps(steps),
        # PERL_RL=Stub: the same prompts whether or not Term::ReadLine::Gnu is installed
        # (test_debconf_interactive.py tests going back with it).
        env={
            "DEBIAN_FRONTEND": "readline",
            "DEBIAN_PRIORITY": priority,
            "TERM": "dumb",
            "PERL_RL": "Stub",
        },
        check=False,
    )


@pytest.mark.server_language
def test_interactive_retry_then_abort_when_the_server_is_down(site, cluster, tmp_path):
    site.preseed(db_port=str(free_port()))
    proc = interactive_postinst(
        site,
        tmp_path,
        [
            (r"Cannot connect[\s\S]*Action after the PostgreSQL server failure:", "retry"),
            (r"Cannot connect[\s\S]*Action after the PostgreSQL server failure:", "abort"),
        ],
    )
    assert proc.returncode != 0, proc.stdout
    assert not site.snippet.exists()


def test_interactive_wrong_database_asks_the_questions_again(site, cluster, tmp_path, names):
    from scripts.devtools.pgcluster import psycopg as pg

    sql = pg.sql
    with cluster.connect() as conn:
        conn.execute(
            sql.SQL(
                "CREATE DATABASE {} ENCODING 'UTF8' LC_COLLATE 'C.UTF-8' LC_CTYPE 'C.UTF-8' "
                "TEMPLATE template0"
            ).format(sql.Identifier(site.dbname))
        )
    other = site.dbname + "_ok"
    try:
        proc = interactive_postinst(
            site,
            tmp_path,
            [
                (r"C\.UTF-8[\s\S]*Host name of the PostgreSQL server for Synapse:", "localhost"),
                ("Port of the PostgreSQL server:", str(cluster.port)),
                ("Name of Synapse's database:", other),
                (r"role \(user name\) for Synapse:", site.user),
                ("Password of the PostgreSQL role for Synapse:", ""),
                (r"Tune the local PostgreSQL cluster for Synapse\? \[yes/no\]", "yes"),
                (r"Name of the first server admin account \(empty for none\):", ""),
                (r"Delete Synapse's database when this package is purged\? \[yes/no\]", "no"),
                ("Number of database dumps to keep:", "3"),
                ("Synapse worker processes:", "1"),
            ],
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert site.args()["dbname"] == other
        assert cluster.query("SELECT datcollate FROM pg_database WHERE datname = %s", (other,)) == [
            ("C",)
        ]
        # the refused database is untouched
        assert cluster.query(
            "SELECT datcollate FROM pg_database WHERE datname = %s", (site.dbname,)
        ) == [("C.UTF-8",)]
    finally:
        with cluster.connect() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(other)))


def test_interactive_ucf_asks_about_an_edited_snippet_on_our_debconf_pipe(site, cluster, tmp_path):
    site.postinst()
    old = site.args()["password"]
    edited = site.inline_password(site.snippet.read_text(), old).replace("cp_max: 10", "cp_max: 20")
    site.snippet.write_text(edited)
    site.preseed(db_password="rotated again")
    proc = interactive_postinst(
        site,
        tmp_path,
        [
            # ucf's own question, asked through the debconf connection we share with it
            (
                r"What do you want to do about modified configuration file database\.yaml\?",
                "install the package maintainer's version",
            ),
        ],
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert site.args()["password"] == "rotated again"
    assert "cp_max: 10" in site.snippet.read_text()
    assert cluster.can_login(site.dbname, site.user, "rotated again")
    st = site.snippet.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, 0o640)


def test_interactive_keeping_the_edited_snippet_is_warned_about(site, cluster, tmp_path):
    site.postinst()
    old = site.args()["password"]
    edited = site.inline_password(site.snippet.read_text(), old).replace("cp_max: 10", "cp_max: 20")
    site.snippet.write_text(edited)
    site.preseed(db_password="rotated again")
    proc = interactive_postinst(
        site,
        tmp_path,
        [
            (
                r"What do you want to do about modified configuration file database\.yaml\?",
                "keep the local version currently installed",
            ),
        ],
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert site.snippet.read_text() == edited
    assert "keeps your edited version, which differs from the answers in password" in proc.stdout
    # Synapse reads the kept file: the role follows it, so Synapse can still log in.
    password = site.args()["password"]
    assert cluster.can_login(site.dbname, site.user, password)
    assert not cluster.can_login(site.dbname, site.user, "rotated again")
    # ucf's copy of the answers' version (what its differences view shows) holds no
    # password: that is in the password file.
    dist = site.snippet.with_name("database.yaml.ucf-dist")
    assert "rotated again" not in dist.read_text()
    assert stat.S_IMODE(dist.stat().st_mode) == 0o640 and dist.stat().st_gid == 0


def test_provisioning_waits_for_postgresql_configured_in_the_same_run(site, cluster):
    # dpkg's view inside the namespace: PostgreSQL unpacked, not configured yet
    # (apt orders configuration by Depends only; postgresql is a Recommends).
    status = Path("/var/lib/dpkg/status").read_text()
    stanzas = status.split("\n\n")
    changed = []
    for i, stanza in enumerate(stanzas):
        if stanza.startswith("Package: postgresql-common\n"):
            stanzas[i] = stanza.replace(
                "Status: install ok installed", "Status: install ok unpacked"
            )
            changed.append(i)
    assert changed, "postgresql-common is not installed here"
    upper = site.overlay / "var/lib/upper/dpkg"
    upper.mkdir(parents=True)
    (upper / "status").write_text("\n\n".join(stanzas))
    env = {"DPKG_MAINTSCRIPT_PACKAGE": "matrix-synapse-setup", "DPKG_MAINTSCRIPT_NAME": "postinst"}
    proc = site.run([str(ROOT / "debian" / "postinst"), "configure", ""], env=env)
    assert "postgresql-common is not configured yet" in proc.stderr
    assert not site.snippet.exists()
    assert "matrix-synapse-setup-provision" in (upper / "triggers" / "Unincorp").read_text()
    # dpkg runs our trigger once PostgreSQL is configured.
    (upper / "status").write_text(status)
    proc = site.run(
        [str(ROOT / "debian" / "postinst"), "triggered", "matrix-synapse-setup-provision"], env=env
    )
    assert "Wrote /etc/matrix-synapse/conf.d/database.yaml" in proc.stderr
    assert cluster.can_login(site.dbname, site.user, site.args()["password"])
    assert site.get("db-password") == ""


def test_after_answering_everything_the_next_run_asks_nothing(site, cluster, tmp_path):
    # A person answers every question (priority low) ...
    proc = interactive_postinst(
        site,
        tmp_path,
        [
            # (port, database and role are preseeded: seen)
            ("Host name of the PostgreSQL server for Synapse:", "localhost"),
            ("Password of the PostgreSQL role for Synapse:", "typed pw"),
            ("Password confirmation:", "typed pw"),
            (r"Tune the local PostgreSQL cluster for Synapse\? \[yes/no\]", "yes"),
            (r"Name of the first server admin account \(empty for none\):", ""),
            (r"Delete Synapse's database when this package is purged\? \[yes/no\]", "no"),
            ("Number of database dumps to keep:", "4"),
            ("Synapse worker processes:", "1"),
        ],
        priority="low",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert site.args()["password"] == "typed pw"
    # ... then an upgrade at priority low, nobody at the keyboard: nothing is asked
    # (a prompt would block until the driver gives up).
    proc = interactive_postinst(site, tmp_path, [], priority="low")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Configuring matrix-synapse-setup" not in proc.stdout, proc.stdout
    assert site.args()["password"] == "typed pw"


def traced_postinst(site, tmp_path, name: str) -> dict[str, int]:
    """The postinst under strace: how often the helper's own process opened the
    snippet and its template, and how often anything ran ucfq."""
    log = tmp_path / f"{name}.strace"
    site.run(
        [
            "strace",
            "-f",
            "-qq",
            "-e",
            "trace=openat,execve",
            "-o",
            str(log),
            str(ROOT / "debian" / "postinst"),
            "configure",
            "",
        ]
    )
    lines = log.read_text().splitlines()
    helpers = {
        line.split()[0]
        for line in lines
        if "execve(" in line and "maintscript-helper" in line and "= 0" in line
    }
    assert len(helpers) == 1, helpers  # one helper process: what it did is counted
    own = [line for line in lines if line.split()[0] in helpers and "openat(" in line]
    return {
        "snippet": sum('/conf.d/database.yaml"' in line for line in own),
        "template": sum('/database.yaml.j2"' in line for line in own),
        "ucfq": sum("execve(" in line and '/ucfq"' in line and "= 0" in line for line in lines),
    }


@pytest.mark.parametrize("second", ["unchanged", "new password"])
def test_one_run_reads_the_snippet_once_renders_once_and_asks_ucf_once(
    site, cluster, tmp_path, second
):
    """Inspect reads everything once; the plan renders once; ucfq runs at most once.
    (ucf itself, a separate program, reads and writes the file as it must.)"""
    first = traced_postinst(site, tmp_path, "first")
    assert first == {"snippet": 1, "template": 1, "ucfq": 0}, first
    if second == "new password":
        site.preseed(db_password="a-new-password-for-the-count")
    again = traced_postinst(site, tmp_path, "second")
    assert again == {"snippet": 1, "template": 1, "ucfq": 1}, again
