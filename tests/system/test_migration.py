"""An existing Synapse on SQLite moves to PostgreSQL (issue 10), under a real systemd.

Each scenario boots a throwaway root with systemd as PID 1 (harness, booted mode) on the
cached layer where the Synapse stand-in (the real Synapse from PyPI, upstream's unit) is
installed and a real Matrix client (judge.py) registered a user, made a room and sent
messages on SQLite (scripts/devtools/layers.py, synapse-data), then installs our .deb
with apt.  The judge then logs in again with the same password and reads every message:
nothing else proves that the data moved.  The port tool is the real synapse_port_db of that
Synapse; the only fake is a failing wrapper around it in the fault scenario, which stands in
for a port that breaks halfway (a real breakage cannot be produced on demand).
"""

from __future__ import annotations

import pytest

from scripts.devtools import layers, steps
from scripts.devtools.harness import DEBS, Root
from scripts.devtools.steps import SNIPPET

SUITES = ["trixie", "bookworm"]
suites = pytest.mark.parametrize("suite", SUITES)
smoke = pytest.mark.smoke
HOMESERVER_DB = "/var/lib/matrix-synapse/homeserver.db"
SIGNING_KEY = "/etc/matrix-synapse/mss.test.signing.key"
PORT_TOOL = "/opt/venvs/matrix-synapse/bin/synapse_port_db"
BACKUPS = "/var/backups/matrix-synapse-setup"
CRASH = "MSS_TEST_CRASH_AT"  # migration.CRASH_ENV


def synapse_on_sqlite_with_data(make_root, debs, suite: str) -> Root:
    """A booted root where Synapse runs on SQLite and holds a user, a room and messages:
    the cached layer synapse-data (scripts/devtools/layers.py), which also makes Synapse
    finish its background updates in seconds (a Synapse used for a while has none
    pending)."""
    root = make_root(suite, booted=True, layer="synapse-data")
    root.check(root.exists(HOMESERVER_DB), "Synapse runs on SQLite", HOMESERVER_DB, "absent")
    root.check(
        root.exists(layers.FAST_UPDATES_FILE),
        "Synapse does its background updates fast (test-only)",
        layers.FAST_UPDATES_FILE,
        "absent",
    )
    return root


def sha256(root: Root, path: str) -> str:
    return root.ok(["sha256sum", path], what=f"hashing {path}").output.split()[0]


def synapse_active(root: Root) -> bool:
    return root.run(["systemctl", "is-active", "--quiet", "matrix-synapse.service"]).code == 0


def sqlite_users(root: Root) -> str:
    """'USERS EVENTS' in homeserver.db, read-only."""
    script = (
        "import sqlite3, sys; c = sqlite3.connect(f'file:{sys.argv[1]}?mode=ro', uri=True); "
        "print(*(c.execute(f'SELECT count(*) FROM {t}').fetchone()[0] for t in sys.argv[2:]))"
    )
    cmd = ["python3", "-c", script, HOMESERVER_DB, "users", "events"]
    return root.ok(cmd, what="counting SQLite's rows").output.strip()


def still_on_sqlite(root: Root, before: str, key: str) -> None:
    """Synapse was not switched: no snippet, SQLite intact, users log in and read."""
    root.check(not root.exists(SNIPPET), "no snippet is written", "absent", "present")
    root.check(sqlite_users(root) == before, "SQLite keeps all rows", before, sqlite_users(root))
    root.check(sha256(root, SIGNING_KEY) == key, "the signing key is unchanged", key, "changed")
    root.check(synapse_active(root), "Synapse runs (again) after the failure", "active", "not")
    steps.synapse_recheck(root, messages=1)  # on SQLite still: every message is there
    root.check(not root.exists(SNIPPET), "still on SQLite", "no snippet", "snippet")


def migrated(root: Root, key: str) -> None:
    """Synapse runs on PostgreSQL with every account, room and message of SQLite."""
    steps.check_snippet(root, password=None, group="matrix-synapse")
    steps.synapse_recheck(root, messages=1)  # same users, passwords, every message, one more
    steps.synapse_on_postgresql(root)
    root.check(sha256(root, SIGNING_KEY) == key, "the signing key is unchanged", key, "changed")
    root.check(root.exists(HOMESERVER_DB), "homeserver.db stays in place", "present", "absent")
    listing = root.ok(
        f"stat -c '%a %U %n' {BACKUPS}/homeserver-*.db", what="looking for the backup"
    ).output
    root.check(
        listing.startswith("600 root "), "a 0600 backup copy of homeserver.db", "600 root", listing
    )


def refused(root: Root, debs, before: str, key: str, *, what: str, says: list[str]) -> None:
    """`apt install` fails with a message saying all of SAYS (no traceback), and Synapse
    stays on SQLite with everything (still_on_sqlite)."""
    out = steps.apt_install(root, debs["current"], ok=False, what=what)
    root.check(
        all(text in out.output for text in says) and "Traceback" not in out.output,
        f"{what}: a clear message",
        " and ".join(repr(text) for text in says) + ", no traceback",
        out.tail(20),
    )
    still_on_sqlite(root, before, key)


def retry_migrates(root: Root, key: str) -> None:
    root.ok(["dpkg", "--configure", "-a"], what="the retry", env=steps.NONINTERACTIVE)
    root.check(package_status(root) == "ii", "configured after the retry", "ii", "not")
    migrated(root, key)


def package_status(root: Root) -> str:
    return root.ok(
        ["dpkg-query", "-W", "-f", "${db:Status-Abbrev}", "matrix-synapse-setup"],
        what="package status",
    ).output.strip()


@smoke
@suites
def test_migrate_stopped_synapse(make_root, debs, suite):
    """The issue's report: Synapse on SQLite with data, stopped, then `apt install ./deb`
    with default answers.  Everything moves; Synapse is not started by us (it was stopped)."""
    root = synapse_on_sqlite_with_data(make_root, debs, suite)
    key = sha256(root, SIGNING_KEY)
    root.ok(["systemctl", "stop", "matrix-synapse.service"], what="stopping Synapse")
    out = steps.apt_install(root, debs["current"]).output
    root.check(
        "holds 1 user(s)" in out and "compare row counts: ok" in out,
        "the install says what it found and that the copy was checked",
        "the facts and the count comparison",
        out[-3000:],
    )
    root.check(not synapse_active(root), "a stopped Synapse stays stopped", "inactive", "active")
    root.ok(["systemctl", "start", "matrix-synapse.service"], what="starting Synapse")
    migrated(root, key)


@suites
def test_migrate_running_synapse(make_root, debs, suite):
    """Synapse runs during the install: two phases, the package stops it and starts it on
    PostgreSQL, and says the downtime."""
    root = synapse_on_sqlite_with_data(make_root, debs, suite)
    key = sha256(root, SIGNING_KEY)
    pid = steps.synapse_pid(root)
    out = steps.apt_install(root, debs["current"]).output
    root.check(
        "port while Synapse runs: ok" in out and "downtime" in out,
        "a first copy while Synapse serves, then the downtime is printed",
        "both",
        out[-3000:],
    )
    root.check(synapse_active(root), "Synapse runs again", "active", "inactive")
    root.check(steps.synapse_pid(root) != pid, "Synapse was restarted", f"not {pid}", pid)
    migrated(root, key)


@suites
def test_port_tool_fails_halfway(make_root, debs, suite):
    """The port tool breaks halfway: Synapse stays on SQLite with all its data, is running
    again, the message names the log and the retry; the retry migrates."""
    root = synapse_on_sqlite_with_data(make_root, debs, suite)
    key, before = sha256(root, SIGNING_KEY), sqlite_users(root)
    root.ok(["mv", PORT_TOOL, PORT_TOOL + ".real"], what="moving the real port tool aside")
    # Test-only fake: runs the real tool, then fails as a broken port would (see docstring).
    root.write(
        PORT_TOOL,
        f'#!/bin/sh\n"{PORT_TOOL}.real" "$@" | head -n 15\necho "boom: row rejected" >&2\n'
        "exit 1\n",
        mode=0o755,
    )
    says = ["Synapse stays on SQLite", "/var/log/matrix-synapse-setup/migrate-"]
    says.append("dpkg-reconfigure matrix-synapse-setup")  # the retry
    refused(root, debs, before, key, what="install, port tool fails", says=says)
    root.ok(["mv", PORT_TOOL + ".real", PORT_TOOL], what="restoring the real port tool")
    retry_migrates(root, key)


@suites
def test_postgresql_stopped_during_migration(make_root, debs, suite):
    """PostgreSQL is down: nothing is switched, Synapse keeps serving from SQLite; once
    PostgreSQL is back, `dpkg --configure -a` migrates."""
    root = synapse_on_sqlite_with_data(make_root, debs, suite)
    key, before = sha256(root, SIGNING_KEY), sqlite_users(root)
    root.ok(["systemctl", "stop", "postgresql.service"], what="stopping PostgreSQL")
    refused(root, debs, before, key, what="install, PostgreSQL down", says=["pg_lsclusters"])
    root.ok(["systemctl", "start", "postgresql.service"], what="starting PostgreSQL")
    retry_migrates(root, key)


@suites
def test_policy_refuses_the_stop(make_root, debs, suite):
    """policy-rc.d refuses to stop Synapse: it is not switched (it would keep writing to
    SQLite), it keeps running; once the policy allows it, the retry migrates."""
    root = synapse_on_sqlite_with_data(make_root, debs, suite)
    key, before = sha256(root, SIGNING_KEY), sqlite_users(root)
    steps.policy_rc_d(root, deny_synapse=("stop",))
    refused(root, debs, before, key, what="install, stop refused", says=["could not be stopped"])
    steps.policy_rc_d_default(root)
    retry_migrates(root, key)


@suites
def test_keep_sqlite_then_migrate_command(make_root, debs, suite):
    """Preseeded keep-sqlite: PostgreSQL is prepared, Synapse stays on SQLite; later
    `matrix-synapse-setup migrate` moves it (its --dry-run changes nothing)."""
    root = synapse_on_sqlite_with_data(make_root, debs, suite)
    key = sha256(root, SIGNING_KEY)
    steps.preseed(root, sqlite_data="keep-sqlite")
    out = steps.apt_install(root, debs["current"]).output
    root.check("matrix-synapse-setup migrate" in out, "says how to move later", "hint", out[-2000:])
    root.check(not root.exists(SNIPPET), "Synapse stays on SQLite", "no snippet", "snippet")
    root.check(
        steps.database_facts(root).get("owner") == "synapse",
        "the PostgreSQL database is prepared",
        "owned by synapse",
        str(steps.database_facts(root)),
    )
    steps.synapse_recheck(root, messages=1)
    dry = root.ok(["matrix-synapse-setup", "migrate", "--dry-run"], what="migrate --dry-run")
    root.check("would 2." in dry.output, "the plan is printed", "a plan", dry.output)
    root.check(not root.exists(SNIPPET), "--dry-run changes nothing", "no snippet", "snippet")
    root.ok(["matrix-synapse-setup", "migrate"], what="matrix-synapse-setup migrate")
    migrated(root, key)


@suites
def test_start_empty(make_root, debs, suite):
    """Preseeded start-empty: Synapse switches to the empty database; homeserver.db is left
    untouched, and the install says where it is."""
    root = synapse_on_sqlite_with_data(make_root, debs, suite)
    root.ok(["systemctl", "stop", "matrix-synapse.service"], what="stopping Synapse")
    db_hash = sha256(root, HOMESERVER_DB)
    steps.preseed(root, sqlite_data="start-empty")
    out = steps.apt_install(root, debs["current"]).output
    root.check(HOMESERVER_DB in out, "the install says where the old data is", "path", out[-2000:])
    root.ok(["systemctl", "start", "matrix-synapse.service"], what="starting Synapse")
    steps.synapse_chats(root, messages=2)  # a new user on the new database
    users = steps.psql(root, "SELECT count(*) FROM users", "synapse", what="counting users")
    root.check(users == "1", "the PostgreSQL database started empty", "1 user", users)
    root.check(sha256(root, HOMESERVER_DB) == db_hash, "homeserver.db untouched", "same", "not")


@suites
@pytest.mark.parametrize("point", ["after-first-phase", "after-stop", "after-final-port"])
def test_killed_midway(make_root, debs, suite, point):
    """The postinst is killed (SIGKILL, through the test-only MSS_TEST_CRASH_AT) at a point
    of the migration: Synapse is not switched; `dpkg --configure -a` ends migrated, with
    Synapse running again since it ran before."""
    root = synapse_on_sqlite_with_data(make_root, debs, suite)
    key, before = sha256(root, SIGNING_KEY), sqlite_users(root)
    cmd = ["apt-get", "install", "-y", "-q", f"{DEBS}/{debs['current'].name}"]
    root.fails(cmd, what=f"install killed {point}", env={**steps.NONINTERACTIVE, CRASH: point})
    root.check(not root.exists(SNIPPET), "killed before the switch", "no snippet", "snippet")
    root.check(sqlite_users(root) == before, "SQLite keeps all rows", before, sqlite_users(root))
    root.ok(["dpkg", "--configure", "-a"], what="the retry", env=steps.NONINTERACTIVE)
    root.check(package_status(root) == "ii", "configured after the retry", "ii", "not")
    root.check(synapse_active(root), "Synapse runs, as before the install", "active", "not")
    migrated(root, key)


@suites
def test_changes_between_the_phases_are_not_lost(make_root, debs, suite):
    """A row that the first copy already took changes before the rest is copied (here: a
    password; the port tool never reads such rows again): it is copied again.  The install
    is killed after the first copy (MSS_TEST_CRASH_AT) so that the change can be made
    while Synapse still serves from SQLite; the retry resumes."""
    root = synapse_on_sqlite_with_data(make_root, debs, suite)
    key = sha256(root, SIGNING_KEY)
    cmd = ["apt-get", "install", "-y", "-q", f"{DEBS}/{debs['current'].name}"]
    env = {**steps.NONINTERACTIVE, CRASH: "after-first-phase"}
    root.fails(cmd, what="install killed after the first copy", env=env)
    steps.judge(root, "passwd", what="the user changes its password, on SQLite")
    out = root.ok(["dpkg", "--configure", "-a"], what="the retry", env=steps.NONINTERACTIVE)
    root.check(
        "copied again: " in out.output and "users" in out.output,
        "the changed table is copied again",
        "'copied again: ... users ...'",
        out.tail(30),
    )
    migrated(root, key)  # the judge logs in with the new password


def init_script_runs(root: Root) -> bool:
    """Whether Synapse runs, in a root without an init system (the stand-in's script)."""
    return root.run(["/etc/init.d/matrix-synapse", "status"]).code == 0


def sqlite_pending(root: Root) -> int:
    """Synapse's pending background updates in homeserver.db (Synapse stopped: read as
    immutable, so that no file of root's is left beside it)."""
    script = (
        "import sqlite3, sys; "
        "c = sqlite3.connect(f'file:{sys.argv[1]}?mode=ro&immutable=1', uri=True); "
        "print(c.execute('SELECT count(*) FROM background_updates').fetchone()[0])"
    )
    out = root.ok(["python3", "-c", script, HOMESERVER_DB], what="counting pending updates")
    return int(out.output.strip())


@smoke
@suites
def test_synapse_stopped_with_background_updates_pending(make_root, debs, suite):
    """A Synapse used for under a minute, then stopped, still has background updates pending
    in SQLite (which the port tool refuses).  `apt install` with migration preseeded runs
    them with upstream's update_synapse_database on the snapshot, never on the live file,
    ports, and ends configured, on PostgreSQL, with every user and message.  The `synapse`
    layer, not synapse-data: its test-only setting makes Synapse finish its updates at once."""
    root = make_root(suite, layer="synapse")  # no init system: the stand-in's init script
    root.check(
        not root.exists(layers.FAST_UPDATES_FILE),
        "Synapse does its background updates at its own pace",
        "no test-only setting",
        layers.FAST_UPDATES_FILE,
    )
    steps.synapse_chats(root, messages=5)  # a real client registers, sends and reads
    root.ok(["invoke-rc.d", "matrix-synapse", "stop"], what="stopping Synapse")
    pending = sqlite_pending(root)
    root.check(pending > 0, "background updates are pending in SQLite", "> 0", str(pending))
    key = sha256(root, SIGNING_KEY)
    steps.preseed(root, sqlite_data="migrate")
    out = steps.apt_install(root, debs["current"], what="apt install, migration preseeded")
    root.check(
        "update_synapse_database" in out.output
        and "background updates on the snapshot: ok" in out.output
        and "compare row counts: ok" in out.output,
        "the updates ran on the snapshot before the port, and the copy was checked",
        "update_synapse_database; 'background updates on the snapshot: ok'; counts equal",
        out.tail(40),
    )
    root.check(package_status(root) == "ii", "the package is configured", "ii", "not")
    root.check(
        sqlite_pending(root) == pending,
        "the live SQLite file was not updated (only its snapshot)",
        str(pending),
        str(sqlite_pending(root)),
    )
    root.check(not init_script_runs(root), "a stopped Synapse stays stopped", "stopped", "runs")
    root.ok(["invoke-rc.d", "matrix-synapse", "start"], what="starting Synapse")
    migrated(root, key)


@suites
def test_too_little_free_space_is_refused_before_anything_changes(make_root, debs, suite):
    """The migration's work directory is a 1 MiB filesystem, too small for two snapshots of
    homeserver.db: the install refuses with the numbers, and nothing is changed (no role,
    no database, no snippet, SQLite and Synapse as they were)."""
    root = make_root(suite, layer="synapse-data", synapse_started=False)
    key, before = sha256(root, SIGNING_KEY), sqlite_users(root)
    work = "/var/lib/matrix-synapse-setup/migration"
    root.ok(f"mkdir -p {work} && mount -t tmpfs -o size=1m tmpfs {work}", what="a small fs")
    steps.preseed(root, sqlite_data="migrate")
    out = steps.apt_install(root, debs["current"], ok=False, what="apt install, no room")
    root.check(
        "Not enough free disk space" in out.output
        and f"work directory {work}: " in out.output
        and " free, " in out.output
        and " MiB needed (" in out.output
        and "Traceback" not in out.output,
        "a clear refusal with what is free and what is needed",
        "Not enough free disk space ... work directory ...: N free, M MiB needed (...)",
        out.tail(20),
    )
    root.check(not root.exists(SNIPPET), "no snippet is written", "absent", "present")
    found = steps.psql(
        root,
        "SELECT (SELECT count(*) FROM pg_roles WHERE rolname = 'synapse') + "
        "(SELECT count(*) FROM pg_database WHERE datname = 'synapse')",
        "postgres",
        what="looking for the role and the database",
    )
    root.check(found == "0", "no role and no database were made", "0", found)
    root.check(sqlite_users(root) == before, "SQLite keeps all rows", before, sqlite_users(root))
    root.check(sha256(root, SIGNING_KEY) == key, "the signing key is unchanged", key, "changed")
    root.check(not init_script_runs(root), "Synapse stays stopped", "stopped", "runs")
    root.check(package_status(root) != "ii", "the package is not configured", "not ii", "ii")
