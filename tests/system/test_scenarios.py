"""The package's life in a throwaway Debian root, judged by a real Synapse and a real client.

Each test is one scenario of issue 5, on trixie and bookworm (quick mode: see conftest.py).
Synapse is the real one from PyPI; it is laid out by a test-only stand-in for upstream's
matrix-synapse-py3 package (synapse-standin/).  No init system runs in these roots
(harness.Root): the stand-in's /etc/init.d/matrix-synapse stands in for its systemd unit,
through invoke-rc.d; test_booted.py runs the package under a real systemd.  Everything else
is real: apt, dpkg, debconf, ucf, PostgreSQL, the .deb built from this tree.
"""

from __future__ import annotations

import json
import re

import pytest

from scripts.devtools import steps
from scripts.devtools.harness import DEBS, HELPERS, Root
from scripts.devtools.steps import ADVERSARIAL, SNIPPET

SUITES = ["trixie", "bookworm"]
suites = pytest.mark.parametrize("suite", SUITES)
# A journey (conftest.py): one root per release for all the steps of a class.
suites_per_journey = pytest.mark.parametrize("suite", SUITES, scope="class")
smoke = pytest.mark.smoke
LOCAL_DB = {"encoding": "UTF8", "collate": "C", "ctype": "C", "owner": "synapse"}


def pty_run(root: Root, argv: list[str], plan: dict, env: dict, *, what: str):
    """Run ARGV on a pseudo-terminal inside the root, answering as PLAN says."""
    return root.ok(
        ["python3", f"{HELPERS}/ptydrive.py", *argv],
        input=json.dumps(plan),
        env={"TERM": "xterm", **env},
        what=what,
        timeout=600,
    )


HOST_PROMPT = r"Host name of the PostgreSQL server for Synapse:"
ADMIN_PROMPT = r"Name of the first server admin account \(empty for none\):"


def password_steps(*pairs: tuple[str, str]) -> list[dict]:
    """Typed answers to the password question and its confirmation, pair by pair."""
    out = []
    for first, again in pairs:
        out.append({"expect": r"Password of the PostgreSQL role for Synapse:", "send": first})
        out.append({"expect": r"Password confirmation:", "send": again})
    return out


def all_answers(password: str) -> list[dict]:
    """Every question at priority low, typed by a person (the readline frontend shows no
    default without a readline library, so Enter would answer "")."""
    return [
        {"expect": HOST_PROMPT, "send": "localhost"},
        {"expect": r"Port of the PostgreSQL server:", "send": "5432"},
        {"expect": r"Name of Synapse's database:", "send": "synapse"},
        {"expect": r"PostgreSQL role \(user name\) for Synapse:", "send": "synapse"},
        *password_steps((password, password)),
        {"expect": r"Tune the local PostgreSQL cluster for Synapse\?", "send": "yes"},
        {"expect": r"Name of the first server admin account \(empty for none\):", "send": ""},
        {"expect": r"Delete Synapse's database when this package is purged\?", "send": "no"},
        {"expect": r"Number of database dumps to keep:", "send": "3"},
        {"expect": r"Synapse worker processes:", "send": "1"},  # the first choice: none
    ]


def pg_version(root: Root) -> str:
    out = root.ok(["pg_lsclusters", "-h"], what="listing PostgreSQL clusters").output
    return out.split()[0]


def with_synapse(root: Root, debs) -> None:
    steps.apt_install(root, debs["synapse"], what="laying Synapse out (stand-in package)")


# --- 1 ---------------------------------------------------------------------------------


@smoke
@suites
def test_fresh_install(make_root, debs, suite):
    """One `apt install ./deb` pulls in PostgreSQL (libpq5 unpacked in the same dpkg run),
    preseeded with an adversarial password; then Synapse arrives and works on it."""
    root = make_root(suite)
    steps.preseed(root, db_password=ADVERSARIAL)
    out = steps.apt_install(root, debs["current"]).output
    root.check(
        "Unpacking libpq5" in out and "Unpacking matrix-synapse-setup" in out,
        "libpq5 and our package are unpacked in the same apt run (the known trap)",
        "both unpacked",
        "not both in the output",
    )
    root.check("Traceback" not in out, "no traceback", "none", out[-2000:])
    facts = steps.database_facts(root)
    root.check(facts == LOCAL_DB, "database synapse as Synapse needs it", str(LOCAL_DB), str(facts))
    args = steps.check_snippet(root, password=ADVERSARIAL, group="root")
    login = steps.pg_login(root, args, ADVERSARIAL)
    root.check(
        login.code == 0,
        "the role logs in over TCP with the adversarial password",
        "ok",
        login.output,
    )
    steps.password_not_in_debconf(root, ADVERSARIAL)

    with_synapse(root, debs)  # Synapse after us: our file trigger hands it the snippet
    steps.check_snippet(root, password=ADVERSARIAL, group="matrix-synapse")
    steps.synapse_chats(root, messages=20)
    steps.synapse_on_postgresql(root)
    root.check(
        not root.exists("/var/lib/matrix-synapse/homeserver.db"),
        "Synapse does not use SQLite",
        "no homeserver.db",
        "homeserver.db exists",
    )


# --- 2 ---------------------------------------------------------------------------------

TYPED = 'he said "let\'s go" and left'


@smoke
@suites
def test_interactive_install(make_root, debs, suite):
    """A person answers the debconf prompts (readline frontend on a pty): a password with
    quotes and spaces, a mismatched confirmation first, then the right one."""
    root = make_root(suite, layer="synapse")  # Synapse runs on SQLite before us
    plan = {
        "timeout": 120,
        "steps": [
            {"expect": HOST_PROMPT, "send": "localhost"},
            *password_steps((TYPED, TYPED + " typo")),
            {"expect": r"Passwords do not match", "send": None},
            *password_steps((TYPED, TYPED)),
            # at medium priority the first admin account is asked too; none here
            {"expect": ADMIN_PROMPT, "send": ""},
            # and the workers' preset: the first choice, none
            {"expect": r"Synapse worker processes:", "send": "1"},
        ],
    }
    env = {"DEBIAN_FRONTEND": "readline", "DEBIAN_PRIORITY": "medium"}
    cmd = ["apt-get", "install", "-y", f"/var/cache/mss-test/{debs['current'].name}"]
    out = pty_run(root, cmd, plan, env, what="interactive install (readline on a pty)").output
    asked = len(re.findall(r"Password of the PostgreSQL role for Synapse:", out))
    root.check(
        asked == 2,
        "the password is asked again after a mismatch",
        "asked twice",
        f"asked {asked} times",
    )
    root.check(
        TYPED not in out, "the typed password is not echoed", "not in the transcript", "echoed"
    )
    args = steps.check_snippet(root, password=TYPED, group="matrix-synapse")
    root.check(
        steps.pg_login(root, args, TYPED).code == 0, "the typed password logs in", "ok", "refused"
    )
    steps.synapse_chats(root)
    steps.synapse_on_postgresql(root)


# --- 3 ---------------------------------------------------------------------------------


@pytest.mark.journey
@suites_per_journey
class TestSynapseBeforeUsThenPurged:
    """Synapse runs (on SQLite) before us; then our package is removed and purged with
    purge-database."""

    @pytest.fixture(scope="class")
    def root(self, journey_root, suite) -> Root:
        return journey_root(suite, layer="synapse")  # Synapse runs on SQLite before us

    def test_synapse_before_us(self, root, debs):
        synapse_before_us(root, debs)

    def test_remove_and_purge_drop_db(self, root):
        remove_and_purge(root, purge_database=True)


def synapse_before_us(root: Root, debs) -> None:
    """Synapse is installed and running (on SQLite) before us: we switch it to PostgreSQL,
    restart it, and never touch homeserver.yaml."""
    steps.synapse_up(root, "Synapse runs on SQLite before our package")
    before_pid = steps.synapse_pid(root)
    hs_before = root.ok(["sha256sum", "/etc/matrix-synapse/homeserver.yaml"], what="hash").output
    steps.preseed(root, db_password=ADVERSARIAL)
    steps.apt_install(root, debs["current"])
    steps.check_snippet(root, password=ADVERSARIAL, group="matrix-synapse")
    hs_after = root.ok(["sha256sum", "/etc/matrix-synapse/homeserver.yaml"], what="hash").output
    root.check(hs_before == hs_after, "homeserver.yaml is never touched", hs_before, hs_after)
    after_pid = steps.synapse_pid(root)
    root.check(
        after_pid != before_pid,
        "Synapse was restarted",
        f"a pid other than {before_pid}",
        after_pid,
    )
    steps.synapse_chats(root)
    steps.synapse_on_postgresql(root)


@suites
def test_synapse_after_us(make_root, debs, suite):
    """Our package first with no preseeded password (a strong one is generated), Synapse
    afterwards: the file trigger gives Synapse's user the snippet, and Synapse works."""
    root = make_root(suite, postgresql=True)  # only test_fresh_install pulls it in with us
    steps.apt_install(root, debs["current"])
    args = steps.check_snippet(root, password=None, group="root")
    password = str(args.get("password", ""))
    root.check(
        len(password) >= 20,
        "a strong password is generated",
        ">= 20 characters",
        f"{len(password)} characters",
    )
    with_synapse(root, debs)
    steps.check_snippet(root, password=password, group="matrix-synapse")
    steps.synapse_chats(root)
    steps.synapse_on_postgresql(root)
    root.check(
        not root.exists("/var/lib/matrix-synapse/homeserver.db"),
        "Synapse does not use SQLite",
        "no homeserver.db",
        "homeserver.db exists",
    )


# --- 4 ---------------------------------------------------------------------------------

NEW_PASSWORD = "n3w 'secret' with \\ and $PATH %d :@ ßø"


@smoke
@pytest.mark.journey
@suites_per_journey
class TestLifeCycle:
    """One root per release, its steps in order: an older version installed by a person who
    answered everything, upgraded (upgrade); the password rotated, then the same answers
    (reconfigure); removed, then purged without purge-database (remove_and_purge)."""

    @pytest.fixture(scope="class")
    def root(self, journey_root, suite) -> Root:
        return journey_root(suite, layer="synapse")  # Synapse runs on SQLite before us

    def test_upgrade(self, root, debs, old_deb):
        upgrade(root, debs, old_deb)

    def test_reconfigure(self, root):
        reconfigure(root)

    def test_plan_changes_nothing(self, root):
        plan_changes_nothing(root)

    def test_remove_and_purge_keep_db(self, root):
        remove_and_purge(root, purge_database=False)


def reconfigure(root: Root) -> None:
    """dpkg-reconfigure with a new password: role and snippet rotate together, Synapse
    restarts and works, the old password no longer logs in.  The same answers again
    change nothing and restart nothing.  Installed with ADVERSARIAL, Synapse chatted."""
    pid = steps.synapse_pid(root)

    # dpkg-reconfigure asks everything (priority low).
    plan = {"timeout": 120, "steps": all_answers(NEW_PASSWORD)}
    env = {"DEBIAN_FRONTEND": "readline"}
    pty_run(
        root,
        ["dpkg-reconfigure", "matrix-synapse-setup"],
        plan,
        env,
        what="dpkg-reconfigure with a new password",
    )
    args = steps.check_snippet(root, password=NEW_PASSWORD, group="matrix-synapse")
    new_pid = steps.synapse_pid(root)
    root.check(new_pid != pid, "Synapse restarts after the rotation", f"not {pid}", new_pid)
    root.check(
        steps.pg_login(root, args, NEW_PASSWORD).code == 0,
        "the new password logs in",
        "ok",
        "refused",
    )
    old = steps.pg_login(root, args, ADVERSARIAL)
    root.check(old.code != 0, "the old password no longer logs in", "refused", old.output)
    steps.password_not_in_debconf(root, NEW_PASSWORD)
    steps.synapse_recheck(root)

    sha = root.ok(["sha256sum", SNIPPET], what="hash").output
    pid = steps.synapse_pid(root)
    root.ok(
        ["dpkg-reconfigure", "-fnoninteractive", "matrix-synapse-setup"],
        what="dpkg-reconfigure with the same answers",
    )
    root.check(
        root.ok(["sha256sum", SNIPPET], what="hash").output == sha,
        "the same answers leave the snippet alone",
        "unchanged",
        "changed",
    )
    root.check(
        steps.synapse_pid(root) == pid,
        "the same answers restart nothing",
        f"pid {pid}",
        steps.synapse_pid(root),
    )
    steps.synapse_recheck(root)


# What `matrix-synapse-setup plan` must leave exactly as it was: our files and their
# owners and modes, ucf's and debconf's records, the cluster's settings files.
WATCHED = (
    "/etc/matrix-synapse",
    "/etc/postgresql",
    "/var/lib/matrix-synapse-setup",
    "/var/lib/ucf",
    "/var/cache/debconf/config.dat",
    "/var/cache/debconf/passwords.dat",
)
CATALOG = (
    "select rolname || ' ' || coalesce(rolpassword, '') from pg_authid order by 1;"
    "select datname || ' ' || pg_get_userbyid(datdba) from pg_database order by 1;"
)


def snapshot(root: Root) -> tuple[str, str, str]:
    files = root.ok(
        [
            "sh",
            "-c",
            'find "$@" -type f -exec stat -c "%n %U:%G %a %s %Y" {} + -exec sha256sum {} + '
            "| sort",
            "-",
            *WATCHED,
        ],
        what="checksums of the watched files",
    ).output
    catalog = steps.psql(root, CATALOG, what="the cluster's roles and databases")
    return files, catalog, steps.synapse_pid(root)


def unchanged(before: tuple[str, ...], after: tuple[str, ...], root: Root) -> None:
    for name, was, now in zip(("files", "catalog", "Synapse's pid"), before, after, strict=True):
        root.check(was == now, f"plan changes nothing: {name}", was, now)


def plan_changes_nothing(root: Root) -> None:
    """`matrix-synapse-setup plan` says what dpkg-reconfigure would do, and does none of
    it: with the answers in use it says nothing would change; with a new password
    preseeded it lists provisioning and the snippet, and the files (checksums, owners,
    modes), the cluster's roles, password hashes and databases, and Synapse's process
    are the same before and after."""
    before = snapshot(root)
    same = root.ok(["matrix-synapse-setup", "plan"], what="plan with the answers in use")
    root.check(
        "nothing would change" in same.output,
        "the plan of an unchanged setup is empty",
        "nothing would change",
        same.output,
    )
    unchanged(before, snapshot(root), root)
    steps.preseed(root, db_password="a-password-nobody-applies")
    before = snapshot(root)
    listed = root.ok(["matrix-synapse-setup", "plan"], what="plan with a new password")
    for line in ("provision the role and database", f"write {SNIPPET} (ucf)"):
        root.check(line in listed.output, "the plan lists each step", line, listed.output)
    root.check(
        "a-password-nobody-applies" not in listed.output,
        "the plan shows no password",
        "not shown",
        listed.output,
    )
    unchanged(before, snapshot(root), root)
    steps.preseed(root, db_password="")


# --- 5 ---------------------------------------------------------------------------------


def upgrade(root: Root, debs, old_deb) -> None:
    """Upgrade from an older build, installed by a person who answered every question:
    the upgrade asks nothing (at priority low; a prompt would block the pty until the
    timeout), keeps the password and the snippet; Synapse and its data still work."""
    root.put_file(old_deb, f"{DEBS}/{old_deb.name}")
    # The older version installed by a person who answered every question (priority low).
    plan = {"timeout": 120, "steps": all_answers(ADVERSARIAL)}
    env = {"DEBIAN_FRONTEND": "readline", "DEBIAN_PRIORITY": "low"}
    cmd = ["apt-get", "install", "-y", f"{DEBS}/{old_deb.name}"]
    pty_run(root, cmd, plan, env, what="installing the older version, answering everything")
    steps.synapse_chats(root)
    sha = root.ok(["sha256sum", SNIPPET], what="hash").output

    plan = {"timeout": 90, "steps": []}  # nobody answers anything
    env = {"DEBIAN_FRONTEND": "readline", "DEBIAN_PRIORITY": "low"}
    cmd = ["apt-get", "install", "-y", f"/var/cache/mss-test/{debs['current'].name}"]
    pty_run(root, cmd, plan, env, what="upgrade with nobody at the keyboard")
    version = root.ok(
        ["dpkg-query", "-W", "-f", "${Version} ${db:Status-Abbrev}", "matrix-synapse-setup"],
        what="version",
    ).output
    root.check(
        version.split()[0] == debs["current"].name.split("_")[1] and "ii" in version,
        "the new version is installed and configured",
        debs["current"].name,
        version,
    )
    steps.check_snippet(root, password=ADVERSARIAL, group="matrix-synapse")
    root.check(
        root.ok(["sha256sum", SNIPPET], what="hash").output == sha,
        "the upgrade keeps the snippet",
        "unchanged",
        "changed",
    )
    steps.synapse_recheck(root)


# --- 6 ---------------------------------------------------------------------------------


@suites
def test_postgresql_stopped(make_root, debs, suite):
    """PostgreSQL stopped at install time: a clear error, the package left unconfigured;
    after the cluster starts, `dpkg --configure -a` completes."""
    root = make_root(suite, postgresql=True)
    version = pg_version(root)
    root.ok(["pg_ctlcluster", version, "main", "stop"], what="stopping the cluster")
    steps.preseed(root, db_password=ADVERSARIAL)
    out = steps.apt_install(root, debs["current"], ok=False, what="install with PostgreSQL down")
    text = out.output
    root.check(
        "Traceback" not in text,
        "the error is a message, not a traceback",
        "no traceback",
        text[-2000:],
    )
    root.check(
        re.search(r"matrix-synapse-setup.*(PostgreSQL|postgres|server)", text, re.I | re.S)
        is not None
        and "pg_lsclusters" in text,
        "the error says PostgreSQL is unreachable and what to check",
        "a message naming PostgreSQL and pg_lsclusters",
        out.tail(25),
    )
    status = root.ok(
        ["dpkg-query", "-W", "-f", "${db:Status-Abbrev}", "matrix-synapse-setup"],
        what="package status",
    ).output.strip()
    root.check(status in ("iF", "iU"), "the package is left unconfigured", "iF or iU", status)
    root.check(not root.exists(SNIPPET), "no snippet is written", "absent", "present")

    root.ok(["pg_ctlcluster", version, "main", "start"], what="starting the cluster")
    root.ok(["dpkg", "--configure", "-a"], what="dpkg --configure -a", env=steps.NONINTERACTIVE)
    status = root.ok(
        ["dpkg-query", "-W", "-f", "${db:Status-Abbrev}", "matrix-synapse-setup"],
        what="package status",
    ).output.strip()
    root.check(status == "ii", "the package is configured", "ii", status)
    facts = steps.database_facts(root)
    root.check(facts == LOCAL_DB, "database synapse as Synapse needs it", str(LOCAL_DB), str(facts))
    args = steps.check_snippet(root, password=ADVERSARIAL, group="root")
    root.check(
        steps.pg_login(root, args, ADVERSARIAL).code == 0, "the password logs in", "ok", "refused"
    )


@suites
def test_postgresql_not_installed(make_root, debs, suite):
    """Installed without Recommends, so with no PostgreSQL at all: a clear error that says to
    install it; 'ignore' lets the install finish; after `apt install postgresql`,
    `dpkg-reconfigure` applies the preseeded password that was kept for it."""
    root = make_root(suite)
    steps.preseed(root, db_password=ADVERSARIAL)
    out = steps.apt_install(
        root, debs["current"], ok=False, what="install without PostgreSQL", recommends=False
    )
    root.check(
        "apt install postgresql" in out.output and "Traceback" not in out.output,
        "the error says PostgreSQL is missing and how to install it",
        "a message naming 'apt install postgresql', no traceback",
        out.tail(25),
    )
    root.check(not root.exists(SNIPPET), "no snippet is written", "absent", "present")

    steps.preseed(root, db_failure="ignore")
    out = root.ok(
        ["dpkg", "--configure", "-a"], what="configure with 'ignore'", env=steps.NONINTERACTIVE
    )
    root.check(
        "dpkg-reconfigure matrix-synapse-setup" in out.output,
        "the warning says how to finish later",
        "a hint naming dpkg-reconfigure",
        out.tail(15),
    )
    steps.install_postgresql(root)
    root.ok(
        ["dpkg-reconfigure", "-f", "noninteractive", "matrix-synapse-setup"],
        what="dpkg-reconfigure once PostgreSQL is there",
    )
    facts = steps.database_facts(root)
    root.check(facts == LOCAL_DB, "database synapse as Synapse needs it", str(LOCAL_DB), str(facts))
    args = steps.check_snippet(root, password=ADVERSARIAL, group="root")
    root.check(
        steps.pg_login(root, args, ADVERSARIAL).code == 0,
        "the preseeded password logs in",
        "ok",
        "refused",
    )
    steps.password_not_in_debconf(root, ADVERSARIAL)


# --- 7 ---------------------------------------------------------------------------------

ROWS_SQL = "SELECT md5(string_agg(id || ':' || note, ',' ORDER BY id)) FROM precious"


@suites
def test_wrong_collation_refused(make_root, debs, suite):
    """An existing `synapse` database with C.UTF-8 collation and rows: refused with a clear
    message; database and rows untouched, no snippet."""
    root = make_root(suite, postgresql=True)
    steps.psql(root, "CREATE ROLE synapse LOGIN", what="creating role synapse")
    steps.psql(
        root,
        "CREATE DATABASE synapse ENCODING 'UTF8' LC_COLLATE 'C.UTF-8' "
        "LC_CTYPE 'C.UTF-8' TEMPLATE template0 OWNER synapse",
        what="creating a C.UTF-8 database",
    )
    steps.psql(
        root,
        "CREATE TABLE precious (id int PRIMARY KEY, note text); "
        "INSERT INTO precious SELECT g, 'row ' || g FROM generate_series(1, 500) g",
        "synapse",
        what="putting rows in it",
    )
    rows = steps.psql(root, ROWS_SQL, "synapse", what="checksum of the rows")
    before = steps.database_facts(root)
    steps.preseed(root, db_password=ADVERSARIAL)
    out = steps.apt_install(root, debs["current"], ok=False, what="install over a C.UTF-8 db")
    root.check(
        "Traceback" not in out.output, "a message, not a traceback", "no traceback", out.tail(25)
    )
    root.check(
        "synapse" in out.output and "C.UTF-8" in out.output and "template0" in out.output,
        "the refusal names the database, what it is and the fix",
        "'synapse', 'C.UTF-8' and the fix (template0)",
        out.tail(25),
    )
    after = steps.database_facts(root)
    root.check(after == before, "the database is untouched", str(before), str(after))
    now = steps.psql(root, ROWS_SQL, "synapse", what="checksum of the rows")
    root.check(now == rows, "the rows are untouched", rows, now)
    root.check(not root.exists(SNIPPET), "no snippet is written", "absent", "present")


# --- 8 ---------------------------------------------------------------------------------


def remove_and_purge(root: Root, purge_database: bool) -> None:
    """remove keeps config and database; purge removes our snippet, ucf registration and
    debconf answers, and drops database and role only with purge-database, after a dump.
    Installed, Synapse chatted on PostgreSQL."""
    root.ok(
        ["apt-get", "remove", "-y", "matrix-synapse-setup"],
        what="apt remove",
        env=steps.NONINTERACTIVE,
    )
    root.check(root.exists(SNIPPET), "remove keeps the snippet", "present", "absent")
    facts = steps.database_facts(root)
    root.check(facts == LOCAL_DB, "remove keeps the database", str(LOCAL_DB), str(facts))
    steps.synapse_recheck(root)

    steps.preseed(root, purge_database="true" if purge_database else "false")
    if purge_database:  # an admin stops Synapse before deleting its database
        root.ok(["invoke-rc.d", "matrix-synapse", "stop"], what="stopping Synapse")
    out = root.ok(
        ["apt-get", "purge", "-y", "matrix-synapse-setup"],
        what="apt purge",
        env=steps.NONINTERACTIVE,
    ).output
    root.check(not root.exists(SNIPPET), "purge removes the snippet", "absent", "present")
    where = "the dump /var/backups/" if purge_database else "database 'synapse' on localhost"
    root.check(
        "Synapse uses the database that homeserver.yaml names" in out and where in out,
        "purge says Synapse goes back to its own setting, and where its data is",
        where,
        out[-1500:],
    )
    ucf = root.run(f"grep -F {SNIPPET} /var/lib/ucf/hashfile /var/lib/ucf/registry || true")
    root.check(
        ucf.output.strip() == "", "purge removes the ucf registration", "nothing", ucf.output
    )
    answers = root.run("debconf-show matrix-synapse-setup 2>&1 || true").output
    root.check(
        "matrix-synapse-setup/" not in answers, "purge removes our debconf answers", "none", answers
    )
    facts = steps.database_facts(root)
    role = steps.psql(
        root, "SELECT count(*) FROM pg_roles WHERE rolname = 'synapse'", what="looking for the role"
    )
    dumps = root.run("ls /var/backups/matrix-synapse-setup_* 2>/dev/null || true").output.split()
    if not purge_database:
        root.check(
            facts == LOCAL_DB and role == "1",
            "purge without purge-database keeps " "database and role",
            "both kept",
            f"{facts}, role count {role}",
        )
        root.check(dumps == [], "no dump without purge-database", "none", str(dumps))
        return
    root.check(
        facts == {} and role == "0",
        "purge-database drops database and role",
        "both gone",
        f"{facts}, role count {role}",
    )
    match = re.search(r"dumped to (\S+)", out)
    root.check(
        match is not None and len(dumps) == 1 and match.group(1) == dumps[0],
        "the dump's path is printed",
        f"'dumped to {dumps}'",
        out[-1500:],
    )
    listing = root.ok(["pg_restore", "-l", dumps[0]], what="reading the dump").output
    root.check(
        "TABLE public users" in listing or " users " in listing,
        "the dump holds Synapse's tables",
        "table users",
        listing[:1500],
    )
    mode = root.ok(["stat", "-c", "%a", dumps[0]], what="dump mode").output.strip()
    root.check(mode == "600", "the dump is private", "600", mode)


# --- 9 ---------------------------------------------------------------------------------

HERE_ADDR, DB_ADDR = "10.231.7.1", "10.231.7.2"


@suites
def test_remote_server(make_root, debs, suite):
    """PostgreSQL reachable only over TCP at another address (its own network namespace
    behind a veth pair, no local cluster): verify only, then Synapse connects there."""
    root = make_root(suite, layer="synapse")  # Synapse runs on SQLite before us
    version = pg_version(root)
    root.ok(["pg_dropcluster", "--stop", version, "main"], what="removing the local cluster")
    root.add_netns("dbnet", HERE_ADDR, DB_ADDR)
    sock = "/run/pg-remote"
    root.ok(
        f"""
        install -d -o postgres -g postgres -m 0700 {sock}
        pg_createcluster {version} remote -p 5432 >/dev/null
        conf=/etc/postgresql/{version}/remote
        echo "listen_addresses = '{DB_ADDR}'" >> $conf/postgresql.conf
        echo "unix_socket_directories = '{sock}'" >> $conf/postgresql.conf
        echo "host all all 10.231.7.0/24 scram-sha-256" >> $conf/pg_hba.conf
        """,
        what="making the remote cluster",
    )
    root.ok(
        ["pg_ctlcluster", version, "remote", "start"],
        net="dbnet",
        what="starting the remote cluster in its own network namespace",
    )

    def remote_psql(sql: str, db: str = "postgres") -> str:
        return steps.psql(root, sql, db, what=f"remote: {sql[:40]}", socket_dir=sock)

    remote_psql(
        "SET password_encryption = 'scram-sha-256'; "
        "CREATE ROLE synapse LOGIN PASSWORD 'remote pw'"
    )
    remote_psql(
        "CREATE DATABASE synapse ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' "
        "TEMPLATE template0 OWNER synapse"
    )

    steps.preseed(root, db_host=DB_ADDR, db_password="remote pw", db_sslmode="prefer")
    steps.apt_install(root, debs["current"])
    args = steps.check_snippet(root, password="remote pw", group="matrix-synapse", host=DB_ADDR)
    root.check(str(args.get("port")) == "5432", "snippet port", "5432", str(args.get("port")))
    clusters = root.ok(["pg_lsclusters", "-h"], what="clusters").output
    root.check(
        clusters.split()[1:2] == ["remote"] and len(clusters.splitlines()) == 1,
        "nothing is provisioned locally",
        "only the remote cluster",
        clusters,
    )
    steps.synapse_chats(root)
    count = remote_psql("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'", "synapse")
    root.check(int(count) > 100, "Synapse's tables are on the remote server", "> 100", count)
