"""Crash safety (issue 12): every step of the postinst may be killed with SIGKILL, and
two runs at once take one lock.

Each scenario arms a test-only crash point (MSS_TEST_CRASH_AT, matrix_synapse_setup/
faults.py) in the environment of a real apt, dpkg or dpkg-reconfigure run in a throwaway
root: the package's own process kills itself there, as `kill -9` or a power cut would.
The test first shows that the run really died at that point (the postinst's exit status
137, and the state that point leaves), then does what an admin would do (`dpkg
--configure -a`, or `dpkg-reconfigure` again), and then judges the end state as Synapse
would see it: its user loads the snippet and connects with psycopg2 and exactly its
arguments (libpq reads the password from the `passfile` they name), in the Synapse
stand-in's own virtualenv.  The catalog's SCRAM verifier must match the password file, the
database must be as Synapse needs it, ucf must know the snippet as it is, no temporary file
may be left in conf.d, and a row written before the crash must still be there.

Synapse is laid out by its stand-in package (its user and group make the files' ownership
real; the cached layer, scripts/devtools/layers.py) but not running: policy-rc.d refuses to
start it, since only the database matters here.
Like test_migration.py's killed scenarios, none is in the smoke subset: quick mode runs them
on trixie, MSS_SYSTEM_FULL=1 on bookworm too.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import subprocess
import threading
import time
import unicodedata

import pytest

from scripts.devtools import steps
from scripts.devtools.harness import DEBS, Root
from scripts.devtools.steps import ADVERSARIAL, NONINTERACTIVE, PASSFILE, PKG, SNIPPET

SUITES = ["trixie", "bookworm"]
suites = pytest.mark.parametrize("suite", SUITES)
CRASH = "MSS_TEST_CRASH_AT"  # faults.ENV
PAUSE = "MSS_TEST_PAUSE_AT"  # faults.PAUSE_ENV
PAUSE_SECONDS = "MSS_TEST_PAUSE_SECONDS"  # faults.PAUSE_SECONDS_ENV
CONFD = "/etc/matrix-synapse/conf.d"
HASHFILE = "/var/lib/ucf/hashfile"
SYNAPSE_USER = "matrix-synapse"
SYNAPSE_PYTHON = "/opt/venvs/matrix-synapse/bin/python"
LOCAL_DB = {"encoding": "UTF8", "collate": "C", "ctype": "C", "owner": "synapse"}
# 128 + SIGKILL: the postinst's shell saw its helper die of SIGKILL; dpkg says "exit status
# 137", dpkg-reconfigure exits with it.
KILLED = 137
# Leftovers of snippet.write_atomic: ".<name>.<random>.tmp" beside the file.
TEMP_FILE = re.compile(r"^\.database\.(yaml|pgpass)\..+\.tmp$")

FIRST = ADVERSARIAL  # quotes, spaces, backslash, ':' and '@': the password file escapes
SECOND = "second 'pass' \\ with : colon"
THIRD = "third pass, from a file"
PRECIOUS = "CREATE TABLE precious (id integer PRIMARY KEY, note text); "
PRECIOUS += "INSERT INTO precious VALUES (1, 'written before the crash')"
PRECIOUS_READ = "SELECT id, note FROM precious ORDER BY id"
PRECIOUS_ROWS = [[1, "written before the crash"]]

# Connect as Synapse does (synapse/storage/database.py: psycopg2.connect with the
# snippet's args but the cp_* pool settings), then run SQL (argv[2], optional).
SYNAPSE_CONNECT = r"""
import json, sys
import psycopg2, yaml
with open(sys.argv[1], encoding="utf-8") as fh:
    config = yaml.safe_load(fh)
args = {k: v for k, v in config["database"]["args"].items() if not k.startswith("cp_")}
try:
    conn = psycopg2.connect(**args)
except psycopg2.Error as err:
    print(json.dumps({"error": str(err).strip()}))
    sys.exit(1)
cur = conn.cursor()
cur.execute("SELECT current_user, current_database()")
user, dbname = cur.fetchone()
rows = None
if len(sys.argv) > 2:
    try:
        cur.execute(sys.argv[2])
    except psycopg2.Error as err:
        print(json.dumps({"error": str(err).strip()}))
        sys.exit(1)
    rows = cur.fetchall() if cur.description else None
    conn.commit()
print(json.dumps({"user": user, "dbname": dbname, "rows": rows}))
"""


# --- facts ------------------------------------------------------------------------------


def package_status(root: Root) -> str:
    cmd = ["dpkg-query", "-W", "-f", "${db:Status-Abbrev}", PKG]
    return root.ok(cmd, what="package status").output.strip()


def role_verifier(root: Root, user: str = "synapse") -> str:
    """The role's password verifier in pg_authid ("" when there is no such role)."""
    sql = f"SELECT coalesce(rolpassword, 'NULL') FROM pg_authid WHERE rolname = '{user}'"  # noqa: S608
    return steps.psql(root, sql, what=f"reading role {user}'s verifier")


def database_exists(root: Root, db: str) -> bool:
    sql = f"SELECT count(*) FROM pg_database WHERE datname = '{db}'"  # noqa: S608
    return steps.psql(root, sql, what=f"looking for database {db}") == "1"


def scram_matches(verifier: str, password: str) -> bool:
    """True if PostgreSQL's SCRAM-SHA-256 VERIFIER was made from PASSWORD (RFC 5802,
    RFC 7677; SASLprep is NFKC for the passwords used here)."""
    found = re.fullmatch(r"SCRAM-SHA-256\$(\d+):([^$]+)\$([^:]+):(.+)", verifier)
    if not found:
        return False
    iterations, salt = int(found[1]), base64.b64decode(found[2])
    normalized = unicodedata.normalize("NFKC", password).encode()
    salted = hashlib.pbkdf2_hmac("sha256", normalized, salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    return hashlib.sha256(client_key).digest() == base64.b64decode(found[3])


def passfile_password(text: str, user: str = "synapse") -> str | None:
    """What libpq takes from a password file's text for USER, None if no line matches."""
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            fields = steps.pgpass_entry(line)
            if len(fields) == 5 and fields[3] in (user, "*"):
                return fields[4]
    return None


def temp_leftovers(root: Root) -> list[str]:
    names = root.ok(["ls", "-A", CONFD], what=f"listing {CONFD}").output.split()
    return [name for name in names if TEMP_FILE.match(name)]


def synapse_connects(root: Root, sql: str | None = None) -> dict:
    """Connect as Synapse would (SYNAPSE_CONNECT, as its user, in its virtualenv):
    {"user", "dbname", "rows"}, or {"error"}."""
    cmd = ["runuser", "-u", SYNAPSE_USER, "--", SYNAPSE_PYTHON, "-c", SYNAPSE_CONNECT, SNIPPET]
    result = root.run(cmd + ([sql] if sql else []))
    try:
        return json.loads(result.output.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": result.output.strip()}


# --- setting up -------------------------------------------------------------------------


def with_synapse_laid_out(make_root, debs, suite: str) -> Root:
    """A root with PostgreSQL running and Synapse's stand-in installed (the cached layer:
    its SQLite database made, no user in it) but not running, and not to be started."""
    root = make_root(suite, layer="synapse", synapse_started=False)
    steps.policy_rc_d(root, deny_synapse=("start", "restart", "try-restart"))
    return root


def installed_with_a_row(make_root, debs, suite: str) -> Root:
    """Our package installed (password FIRST) and consistent, and a row in Synapse's
    database, written by Synapse's role."""
    root = with_synapse_laid_out(make_root, debs, suite)
    steps.preseed(root, db_password=FIRST)
    steps.apt_install(root, debs["current"])
    consistent(root, FIRST)
    written = synapse_connects(root, PRECIOUS)
    root.check("error" not in written, "Synapse's role writes a row", "ok", str(written))
    return root


def install_cmd(debs) -> list[str]:
    return ["apt-get", "install", "-y", "-q", f"{DEBS}/{debs['current'].name}"]


def killed(root: Root, cmd: list[str], point: str, *, what: str, env: dict | None = None):
    """Run CMD with the crash point armed: it must fail, because our process was killed."""
    out = root.fails(cmd, what=what, env={**NONINTERACTIVE, **(env or {}), CRASH: point})
    root.check(
        out.code == KILLED or f"exit status {KILLED}" in out.output,
        f"{what}: the run died of SIGKILL at {point}",
        f"the postinst killed (exit status {KILLED})",
        f"exit {out.code}",
        out,
    )
    return out


def repaired(root: Root) -> None:
    """What an admin does after a crash of apt or dpkg."""
    out = root.ok(["dpkg", "--configure", "-a"], what="dpkg --configure -a", env=NONINTERACTIVE)
    root.check("Traceback" not in out.output, "the repair shows no traceback", "none", out.tail())


# --- the end state ----------------------------------------------------------------------


def consistent(root: Root, password: str, *, dbname: str = "synapse") -> None:
    """The package is configured; Synapse's snippet and password file are in place, private,
    known to ucf; they log Synapse's user in to a database Synapse can use; the role's
    password in the catalog is PASSWORD, and so is the password file's; no temporary file
    is left; the password is not left in debconf."""
    status = package_status(root)
    root.check(status == "ii", "the package is configured", "ii", status)
    # The snippet (0640, no password in it, names the password file) and the password
    # file (0600, Synapse's user, one entry for the role, holding PASSWORD).
    args = steps.check_snippet(root, password=password, group=SYNAPSE_USER)
    root.check(args.get("dbname") == dbname, "the snippet's database", dbname, repr(args))
    verifier = role_verifier(root)
    root.check(
        scram_matches(verifier, password),
        "the role's password in the catalog is the one in the password file",
        f"a SCRAM verifier of {password!r}",
        verifier or "no role",
    )
    login = synapse_connects(root)
    root.check(
        login.get("user") == "synapse" and login.get("dbname") == dbname,
        "Synapse's user logs in with exactly what the snippet and the password file say",
        f"synapse on {dbname}",
        str(login),
    )
    facts = steps.database_facts(root, dbname)
    root.check(facts == LOCAL_DB, f"database {dbname} as Synapse needs it", LOCAL_DB, facts)
    left = temp_leftovers(root)
    root.check(not left, f"no temporary file is left in {CONFD}", "none", " ".join(left))
    md5 = root.ok(["md5sum", SNIPPET], what="hashing the snippet").output.split()[0]
    recorded = [
        line.split()[0]
        for line in root.read(HASHFILE).splitlines()
        if line.split()[1:] == [SNIPPET]
    ]
    root.check(recorded == [md5], "ucf's hashfile records the snippet as it is", md5, str(recorded))
    ucfq = root.ok(["ucfq", "-w", SNIPPET], what="ucfq").output.strip()
    wanted_ucfq = f"{SNIPPET}:{PKG}:Yes:No"
    root.check(ucfq == wanted_ucfq, "ucf: ours, present, unchanged", wanted_ucfq, ucfq)
    steps.password_not_in_debconf(root, password)


def nothing_lost(root: Root) -> None:
    rows = synapse_connects(root, PRECIOUS_READ)
    root.check(
        rows.get("rows") == PRECIOUS_ROWS, "the row written before the crash", PRECIOUS_ROWS, rows
    )


# --- a first install, killed at each step -------------------------------------------------


def killed_state(root: Root, point: str) -> None:
    """What each crash point of a first install leaves behind (the proof that the run died
    there, not before or after)."""
    status = package_status(root)
    root.check(status == "iF", "the package is left half-configured", "iF", status)
    role = role_verifier(root)
    root.check(bool(role), "the role was created before the kill", "a role synapse", "none")
    has_db = database_exists(root, "synapse")
    if point == "after-role-created":
        root.check(not has_db, "killed before the database was created", "no database", "one")
    else:
        root.check(has_db, "killed after the database was created", "database synapse", "none")
    if point in ("after-role-created", "after-database-created", "before-rename"):
        root.check(not root.exists(SNIPPET), "no snippet yet", "absent", "present")
        root.check(not root.exists(PASSFILE), "no password file yet", "absent", "present")
    if point == "before-rename":
        left = temp_leftovers(root)
        root.check(
            any(name.startswith(".database.pgpass.") for name in left),
            "killed with the password file's temporary file written, not renamed",
            ".database.pgpass.*.tmp",
            " ".join(left) or "none",
        )
    if point == "during-ucf":
        root.check(root.exists(SNIPPET), "the snippet was put in place", "present", "absent")
        hashfile = root.read(HASHFILE)
        root.check(
            SNIPPET not in hashfile,
            "killed before ucf recorded the snippet's checksum",
            "no record",
            hashfile,
        )


@suites
@pytest.mark.parametrize(
    "point", ["after-role-created", "after-database-created", "before-rename", "during-ucf"]
)
def test_killed_at_every_step(make_root, debs, suite, point):
    """`apt install ./deb` (a first install, preseeded password) killed at POINT; then
    `dpkg --configure -a` ends consistent, with that password."""
    root = with_synapse_laid_out(make_root, debs, suite)
    steps.preseed(root, db_password=FIRST)
    killed(root, install_cmd(debs), point, what=f"install killed at {point}")
    killed_state(root, point)
    repaired(root)
    consistent(root, FIRST)


@suites
def test_killed_with_a_generated_password(make_root, debs, suite):
    """No password preseeded (a default install): the postinst makes a random one and is
    killed with it in the role and in the password file's temporary file only (before-rename).
    `dpkg --configure -a` ends consistent, with a new strong password that the role and
    the password file share."""
    root = with_synapse_laid_out(make_root, debs, suite)
    killed(root, install_cmd(debs), "before-rename", what="install killed at before-rename")
    killed_state(root, "before-rename")
    temp = next(name for name in temp_leftovers(root) if name.startswith(".database.pgpass."))
    lost = passfile_password(root.read(f"{CONFD}/{temp}")) or ""
    root.check(
        len(lost) >= 20 and scram_matches(role_verifier(root), lost),
        "killed with the generated password in the role and the temporary file only",
        "the same strong password in both",
        f"{len(lost)} characters in {temp}",
    )
    repaired(root)
    password = passfile_password(root.read(PASSFILE)) or ""
    root.check(
        len(password) >= 20, "a strong password", ">= 20 characters", f"{len(password)} characters"
    )
    consistent(root, password)


# --- a password change, killed ------------------------------------------------------------


@suites
@pytest.mark.parametrize(
    ("how", "point"),
    [
        ("reconfigure", "after-password-changed"),
        ("reinstall", "after-password-changed"),
        ("reinstall", "before-rename"),
    ],
)
def test_killed_changing_the_password(make_root, debs, suite, how, point):
    """A new preseeded password, applied by `dpkg-reconfigure` or by the postinst of
    `dpkg -i` of the same .deb, killed at POINT: the role already has the new password,
    the password file still the old one.  The admin's retry (`dpkg-reconfigure` again, or
    `dpkg --configure -a`) ends with the new password everywhere, and the row written
    before is still there."""
    root = installed_with_a_row(make_root, debs, suite)
    steps.preseed(root, db_password=SECOND)
    if how == "reconfigure":
        cmd = ["dpkg-reconfigure", "-fnoninteractive", PKG]
        out = killed(root, cmd, point, what=f"dpkg-reconfigure killed at {point}")
        status = package_status(root)
        root.check(status == "ii", "dpkg-reconfigure leaves the package configured", "ii", status)
    else:
        cmd = ["dpkg", "-i", f"{DEBS}/{debs['current'].name}"]
        out = killed(root, cmd, point, what=f"dpkg -i killed at {point}")
        status = package_status(root)
        root.check(status == "iF", "the package is left half-configured", "iF", status)
    root.check("Traceback" not in out.output, "no traceback", "none", out.tail())
    verifier = role_verifier(root)
    root.check(
        scram_matches(verifier, SECOND),
        f"killed at {point}: after the role's password changed",
        "the new password's verifier",
        verifier,
    )
    in_file = passfile_password(root.read(PASSFILE))
    root.check(in_file == FIRST, "killed before the password file changed", FIRST, repr(in_file))
    if point == "before-rename":
        left = temp_leftovers(root)
        root.check(
            any(name.startswith(".database.pgpass.") for name in left),
            "killed with the new password file written, not renamed",
            ".database.pgpass.*.tmp",
            " ".join(left) or "none",
        )

    if how == "reconfigure":
        out = root.ok(
            ["dpkg-reconfigure", "-fnoninteractive", PKG],
            what="dpkg-reconfigure again",
            env=NONINTERACTIVE,
        )
        root.check("Traceback" not in out.output, "no traceback", "none", out.tail())
    else:
        repaired(root)
    consistent(root, SECOND)
    nothing_lost(root)
    verifier = role_verifier(root)
    root.check(
        not scram_matches(verifier, FIRST), "the old password no longer works", "not", "it does"
    )


# --- the snippet itself, killed --------------------------------------------------------------

EDIT = "    cp_max: 10\n"
EDITED = "    cp_max: 12\n"


@suites
@pytest.mark.parametrize("point", ["before-rename", "during-ucf"])
def test_killed_moving_to_another_database(make_root, debs, suite, point):
    """A new preseeded database name, applied by `dpkg -i` of the same .deb: the snippet
    changes (the password file does not), and the run is killed while the snippet is
    replaced.  before-rename: the snippet's own temporary file is written, not renamed.
    during-ucf: the admin had edited the snippet (a pool size) and forces the package's
    version (UCF_FORCE_CONFFNEW=1), so ucf copies it over the edited one; killed before ucf
    records its checksum.  `dpkg --configure -a` ends consistent on the new database; the
    old one keeps its row."""
    root = installed_with_a_row(make_root, debs, suite)
    env = {}
    if point == "during-ucf":
        text = root.read(SNIPPET)
        root.check(EDIT in text, "the snippet has a pool size to edit", EDIT, text)
        root.write(SNIPPET, text.replace(EDIT, EDITED), mode=0o640)
        root.ok(["chgrp", SYNAPSE_USER, SNIPPET], what="keeping the snippet's group")
        # The admin's reconfigure reads the edit in (same values: the file is kept).
        root.ok(
            ["dpkg-reconfigure", "-fnoninteractive", PKG],
            what="dpkg-reconfigure after the edit",
            env=NONINTERACTIVE,
        )
        root.check(EDITED in root.read(SNIPPET), "the edit is kept", EDITED, "lost")
        env["UCF_FORCE_CONFFNEW"] = "1"
    before = root.read(SNIPPET)
    steps.preseed(root, db_name="synapse2")
    cmd = ["dpkg", "-i", f"{DEBS}/{debs['current'].name}"]
    killed(root, cmd, point, what=f"dpkg -i killed at {point}", env=env)
    status = package_status(root)
    root.check(status == "iF", "the package is left half-configured", "iF", status)
    root.check(database_exists(root, "synapse2"), "the new database was made", "yes", "no")
    if point == "before-rename":
        root.check(root.read(SNIPPET) == before, "the snippet is intact", "unchanged", "changed")
        left = temp_leftovers(root)
        root.check(
            any(name.startswith(".database.yaml.") for name in left),
            "killed with the snippet's temporary file written, not renamed",
            ".database.yaml.*.tmp",
            " ".join(left) or "none",
        )
    else:
        now = root.read(SNIPPET)
        root.check(
            '"synapse2"' in now and EDITED not in now,
            "ucf copied the package's version over the edited one",
            "dbname synapse2, no edit",
            now,
        )
        md5 = root.ok(["md5sum", SNIPPET], what="hashing the snippet").output.split()[0]
        root.check(
            md5 not in root.read(HASHFILE),
            "killed before ucf recorded its checksum",
            "not recorded",
            "recorded",
        )
    repaired(root)
    consistent(root, FIRST, dbname="synapse2")
    old = steps.psql(root, PRECIOUS_READ, "synapse", what="reading the old database's row")
    root.check(old == "1|written before the crash", "the old database keeps its row", "1|...", old)


# --- two runs at once ---------------------------------------------------------------------


class Running:
    """A command running in the root in the background; its output lines, timestamped."""

    def __init__(self, root: Root, argv: list[str], env: dict[str, str]) -> None:
        self.lines: list[tuple[float, str]] = []
        self.started, self.ended = time.time(), 0.0
        self.proc = subprocess.Popen(
            root.command(argv, env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.append((time.time(), raw.decode("utf-8", "replace").rstrip("\n")))
        self.proc.wait()
        self.ended = time.time()

    def wait(self, timeout: float) -> int:
        self.reader.join(timeout)
        if self.reader.is_alive():
            self.proc.kill()
            self.reader.join(30)
            return -1
        return self.proc.returncode

    @property
    def output(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def first(self, text: str) -> float | None:
        return next((at for at, line in self.lines if text in line), None)


def poll(condition, timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return False


def sampled(root: Root, timeline: list[tuple[float, float, str]]) -> str:
    """The role's verifier now; TIMELINE gets (asked at, answered at, verifier)."""
    asked = time.time()
    verifier = role_verifier(root)
    timeline.append((asked, time.time(), verifier))
    return verifier


@suites
@pytest.mark.parametrize("password_file", [True, False], ids=["new-password", "recheck"])
def test_two_runs_take_one_lock(make_root, debs, suite, password_file):
    """`dpkg-reconfigure` with a new password, held for PAUSE seconds right after it
    changed the role (MSS_TEST_PAUSE_AT), and meanwhile `matrix-synapse-setup provision`:
    the second says it waits, both succeed, and the end is consistent: the password file
    and the role share the last run's password, and Synapse logs in with it.

    new-password (`--password-file` with a third password): the second changes the role
    only once the first is done (the catalog, sampled all along, shows the third password
    PAUSE seconds or more after the first's change).  recheck (no password given: the
    installed snippet's): the second sees what the first applied and changes nothing."""
    root = installed_with_a_row(make_root, debs, suite)
    steps.preseed(root, db_password=SECOND)
    root.write("/root/third-password", THIRD + "\n", mode=0o600)
    timeline: list[tuple[float, float, str]] = []
    pause = 8
    env = {**NONINTERACTIVE, PAUSE: "after-password-changed", PAUSE_SECONDS: str(pause)}
    first = Running(root, ["dpkg-reconfigure", "-fnoninteractive", PKG], env)
    paused = poll(
        lambda: scram_matches(sampled(root, timeline), SECOND) or first.proc.poll() is not None,
        120,
    )
    if not paused or first.proc.poll() is not None:
        first.wait(60)
        root.fail(
            "the first run changes the role's password, then pauses",
            "the new verifier while it runs",
            f"exit {first.proc.returncode}\n{first.output[-3000:]}",
        )
    argv = ["matrix-synapse-setup", "provision"]
    argv += ["--password-file", "/root/third-password"] if password_file else []
    second = Running(root, argv, {})

    def both_done() -> bool:
        sampled(root, timeline)  # the catalog all along
        return first.proc.poll() is not None and second.proc.poll() is not None

    poll(both_done, 300)
    second_code, first_code = second.wait(60), first.wait(60)
    root.check(
        first_code == 0,
        "the dpkg-reconfigure succeeds",
        "exit 0",
        f"exit {first_code}\n{first.output[-3000:]}",
    )
    root.check(
        second_code == 0,
        "matrix-synapse-setup provision succeeds",
        "exit 0",
        f"exit {second_code}\n{second.output[-3000:]}",
    )
    waiting = second.first("waiting for it to finish")
    root.check(
        waiting is not None and waiting < first.ended,
        "the second run says it waits for the first, while the first runs",
        "'... waiting for it to finish' before the first ended",
        f"at {waiting} (the first ended at {first.ended})\n{second.output}",
    )
    # The first changed the role after it started and after the last sample that did not
    # see the change was asked, then held the lock for PAUSE seconds at least.
    index = next(i for i, (_, _, v) in enumerate(timeline) if scram_matches(v, SECOND))
    changed_after = timeline[index - 1][0] if index else first.started
    if password_file:
        third = next((seen for _, seen, v in timeline if scram_matches(v, THIRD)), None)
        root.check(
            third is not None and third >= changed_after + pause,
            "the second run changes the role only after the first is done",
            f"the third password seen {pause} s or more after the first's change",
            "never seen"
            if third is None
            else f"seen {third - changed_after:.1f} s after the first's change",
        )
    else:
        later = {verifier for _, _, verifier in timeline[index:]}
        root.check(
            later == {timeline[index][2]},
            "the re-check leaves the role as the first run set it",
            "the first's verifier to the end",
            f"{len(later)} different verifiers\n{second.output}",
        )
    consistent(root, THIRD if password_file else SECOND)
    nothing_lost(root)
