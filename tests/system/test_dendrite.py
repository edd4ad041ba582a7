"""`matrix-synapse-setup dendrite`: a real Dendrite on the database the command made.

A journey (journeys.py: the steps of TestDendrite share one root per release, in order)
on the cached `postgresql` layer, without an init system: Dendrite has no Debian package
and no unit, so the test starts it itself as its system user, with start-stop-daemon, as
an admin's own unit would.  Its binaries are Dendrite v0.13.8, built from source once on
the host (scripts/devtools/dendrite.py: static, so they run in both releases), and its
configuration is the release's own commented dendrite-sample.yaml, edited the way an admin
would (server name, paths, shared secret) before the command runs, so that the command is
what changes `global.database.connection_string`.

- peer (the default): the role without a password and the database as Dendrite needs
  them; the file keeps every comment and key, its owner and mode, and a backup; Dendrite
  runs on that database only, and a real client (judge.py, matrix-nio) registers through
  the shared-secret API, makes a room, sends and reads back; a second run changes nothing.
- password over TCP to the local cluster: a password of URI-special characters, percent-
  encoded in the file, which loses its "other" permission bits; the password is in no
  other file; Dendrite logs in with it and the client chats; a second run changes nothing.
- a remote server over TLS (a cluster in its own network namespace with a test CA's
  certificate: scripts/devtools/remote_tls.py, shared with test_security.py) whose admin
  made the role and the database: the command only verifies them, over TLS with
  verify-full and the CA file given, and writes the connection string (the password
  percent-encoded, the CA file named); nothing is made on either cluster; Dendrite runs on
  the remote database and the client chats; a second run changes nothing; a CA that did
  not sign the server's certificate is refused in one line, and nothing changes.
- bad input: a missing file, a file that is not YAML, a SQLite connection string, a file
  the caller cannot read: one line on stderr, exit 1, and nothing changed.
"""

from __future__ import annotations

import hashlib
import json
import re
import urllib.parse

import pytest
import yaml

from scripts.devtools import dendrite, remote_tls, steps
from scripts.devtools.harness import DEBS, Root
from scripts.devtools.steps import NONINTERACTIVE

SUITES = ["trixie", "bookworm"]
ETC = "/etc/dendrite"
CONFIG = f"{ETC}/dendrite.yaml"
TCP_CONFIG = f"{ETC}/tcp.yaml"
KEY = f"{ETC}/matrix_key.pem"
HOME = "/var/lib/dendrite"
BIN = "/usr/local/bin"
PIDFILE = "/run/dendrite.pid"
LOG = f"{HOME}/dendrite.log"
SERVER = "http://127.0.0.1:8008"
SERVER_NAME = "test.invalid"
# A test-only secret: the judge registers its users with it.
SHARED_SECRET = "dendrite-systest-shared-secret"
SAMPLE_URI = "postgresql://username:password@hostname/dendrite?sslmode=disable"
PEER_URI = "postgresql://dendrite@/dendrite?host=/run/postgresql&sslmode=disable"
# Every character that means something in a URI's authority, path or query.
TCP_PASSWORD = "p@ss/w%rd:x? #1"
PASSWORD_FILE = "/root/pw"
TCP_ROLE = "dendrite_tcp"
# RFC 3986's userinfo: unreserved, sub-delims, ":" and percent-encoded octets.
USERINFO_PASSWORD = r"(?:[A-Za-z0-9._~!$&'()*+,;=:-]|%[0-9A-Fa-f]{2})*"
TCP_URI = re.compile(
    rf"postgresql://{TCP_ROLE}:(?P<password>{USERINFO_PASSWORD})@127\.0\.0\.1:5432/{TCP_ROLE}"
    r"\?sslmode=disable"
)
REMOTE_CONFIG = f"{ETC}/remote.yaml"
REMOTE_ROLE = "dendrite_remote"
# The remote server's admin chose it: URI-special characters again, in another order.
REMOTE_PASSWORD = "r@mote/p%ss:w? #2"
REMOTE_PASSWORD_FILE = "/root/remote-pw"
# The test CA's certificate, and a CA that did not sign the server's: readable by Dendrite,
# which opens the file itself (lib/pq) when it connects.
REMOTE_CA = f"{ETC}/remote-ca.pem"
OTHER_CA = f"{ETC}/other-ca.pem"
REMOTE_URI = re.compile(
    rf"postgresql://{REMOTE_ROLE}:(?P<password>{USERINFO_PASSWORD})"
    rf"@{re.escape(remote_tls.DB_ADDR)}:5432/{REMOTE_ROLE}"
    rf"\?sslmode=verify-full&sslrootcert={re.escape(REMOTE_CA)}"
)
TLS_LINE = re.compile(r"TLS: ok \(TLSv1\.[23], [^,]+, sslmode verify-full\)")
RECORD = "/var/lib/matrix-synapse-setup/dendrite"
MESSAGES = 5
# Dendrite's sync API sees a sent event once it has come through its stream: a read
# right after the sends may wait this long for them.
SETTLE = 30
# Tables that Dendrite's own schema creates (roomserver, user API, sync API).
DENDRITE_TABLES = ("roomserver_rooms", "userapi_accounts", "syncapi_output_room_events")


# --- the admin's configuration -------------------------------------------------------------


def sample_edits(data_dir: str) -> list[tuple[str, str]]:
    """(line of dendrite-sample.yaml, the admin's line): everything but the database.  The
    paths are absolute (Dendrite resolves relative ones against its working directory)."""
    return [
        ("  server_name: localhost", f"  server_name: {SERVER_NAME}"),
        ("  private_key: matrix_key.pem", f"  private_key: {KEY}"),
        ("    storage_path: ./", f"    storage_path: {data_dir}/jetstream"),
        ('  registration_shared_secret: ""', f'  registration_shared_secret: "{SHARED_SECRET}"'),
        ("  base_path: ./media_store", f"  base_path: {data_dir}/media_store"),
        ('    index_path: "./searchindex"', f'    index_path: "{data_dir}/searchindex"'),
        ("      path: ./logs", f"      path: {data_dir}/logs"),
        # The judge's few requests come quickly from one address.
        ("    enabled: true", "    enabled: false"),
    ]


def admin_config(root: Root, path: str, data_dir: str, mode: str, *, uri: str = "") -> None:
    """PATH: the sample as an admin edits it by hand, line by line (every comment stays),
    owner root:dendrite, MODE; URI replaces the sample's connection string if given."""
    edits = sample_edits(data_dir)
    if uri:
        edits.append((f"    connection_string: {SAMPLE_URI}", f"    connection_string: {uri}"))
    lines = dendrite.sample().read_text(encoding="utf-8").split("\n")
    for old, new in edits:
        found = [i for i, line in enumerate(lines) if line == old]
        assert len(found) == 1, f"dendrite-sample.yaml has {len(found)} lines {old!r}, not one"
        lines[found[0]] = new
    root.write(path, "\n".join(lines))
    root.ok(
        f"chown root:dendrite {path} && chmod {mode} {path}"
        f" && install -d -o dendrite -g dendrite -m 0750 {data_dir}",
        what=f"{path}: owner, mode and data directory",
    )
    data = yaml.safe_load(root.read(path))
    seen = {
        "server_name": data["global"]["server_name"],
        "private_key": data["global"]["private_key"],
        "jetstream": data["global"]["jetstream"]["storage_path"],
        "secret": data["client_api"]["registration_shared_secret"],
        "media": data["media_api"]["base_path"],
        "search": data["sync_api"]["search"]["index_path"],
        "logs": data["logging"][1]["params"]["path"],
        "rate_limiting": data["client_api"]["rate_limiting"]["enabled"],
        "uri": data["global"]["database"]["connection_string"],
    }
    want = {
        "server_name": SERVER_NAME,
        "private_key": KEY,
        "jetstream": f"{data_dir}/jetstream",
        "secret": SHARED_SECRET,
        "media": f"{data_dir}/media_store",
        "search": f"{data_dir}/searchindex",
        "logs": f"{data_dir}/logs",
        "rate_limiting": False,
        "uri": uri or SAMPLE_URI,
    }
    root.check(seen == want, f"{path}: the admin's edits took", repr(want), repr(seen))


def comments(text: str) -> list[str]:
    """Every comment of a YAML text, whole-line and trailing, in order."""
    out = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            out.append(stripped)
        elif " #" in line:
            out.append(line[line.index(" #") :].strip())
    return out


def key_paths(node, prefix: str = "") -> list[str]:
    """Every mapping key of a parsed YAML document, as a dotted path, in document order."""
    out = []
    if isinstance(node, dict):
        for key, value in node.items():
            out.append(f"{prefix}{key}")
            out += key_paths(value, f"{prefix}{key}.")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            out += key_paths(value, f"{prefix}{index}.")
    return out


def without_uri(data: dict) -> dict:
    copy = json.loads(json.dumps(data))
    copy["global"]["database"].pop("connection_string", None)
    return copy


def file_state(root: Root, path: str) -> str:
    """Owner, mode and content hash of PATH ("absent" if it is not there)."""
    if not root.exists(path):
        return "absent"
    out = root.ok(["stat", "-c", "%U:%G %a", path], what=f"looking at {path}").output.strip()
    digest = hashlib.sha256(root.read(path).encode()).hexdigest()
    return f"{out} {digest}"


def mode_owner(root: Root, path: str) -> str:
    return root.ok(["stat", "-c", "%U:%G %a", path], what=f"looking at {path}").output.strip()


def backups(root: Root, path: str) -> list[str]:
    out = root.run(f"ls -1 {path}.before-setup-* 2>/dev/null || true").output
    return sorted(out.split())


def cluster_state(root: Root) -> str:
    """The cluster's databases and roles, by name."""
    databases = steps.psql(root, "SELECT datname FROM pg_database ORDER BY 1", what="databases")
    roles = steps.psql(root, "SELECT rolname FROM pg_roles ORDER BY 1", what="roles")
    return f"databases: {databases.split()}\nroles: {roles.split()}"


def databases(root: Root) -> set[str]:
    return set(steps.psql(root, "SELECT datname FROM pg_database", what="databases").split())


def run_setup(root: Root, *args: str, user: str = "") -> tuple[int, str, str]:
    """`matrix-synapse-setup dendrite ARGS` (as USER if given): exit code, stdout, stderr."""
    argv = ["matrix-synapse-setup", "dendrite", *args]
    if user:
        argv = ["runuser", "-u", user, "--", *argv]
    result = root.run(
        ["sh", "-c", '"$@" 2>/tmp/setup.err; echo "exit $?" >/tmp/setup.exit', "-", *argv]
    )
    err = root.run(["cat", "/tmp/setup.err"]).output
    code = root.run(["cat", "/tmp/setup.exit"]).output.split()
    return int(code[1]) if len(code) == 2 else -1, result.output, err


def check_ran(root: Root, what: str, code: int, out: str, err: str, last: str) -> None:
    """Exit 0, no traceback, and the last line of stdout is LAST (`changed` may say what
    the admin does next: `changed: restart Dendrite`)."""
    lines = out.strip().splitlines()
    final = lines[-1] if lines else ""
    said = final == last or (last == "changed" and final.startswith("changed: "))
    root.check(
        code == 0 and said and "Traceback" not in out + err,
        what,
        f"exit 0, last line {last!r}",
        f"exit {code}\n--- stdout ---\n{out}\n--- stderr ---\n{err}",
    )


def check_comments_and_keys(root: Root, before: str, after: str, path: str) -> None:
    root.check(
        comments(after) == comments(before),
        f"{path} keeps every comment, in order",
        f"{len(comments(before))} comments as before",
        "\n".join(c for c in comments(before) if c not in comments(after))
        or f"{len(comments(after))} comments, in another order",
    )
    old, new = yaml.safe_load(before), yaml.safe_load(after)
    root.check(
        key_paths(new) == key_paths(old),
        f"{path} keeps every key, in order",
        f"{len(key_paths(old))} keys as before",
        repr([k for k in key_paths(new) if k not in key_paths(old)] or key_paths(new)[:40]),
    )
    root.check(
        without_uri(new) == without_uri(old),
        f"{path}: only the connection string changed",
        "every other value as before",
        "another value changed",
    )


def check_backup(root: Root, path: str, before_backups: list[str], before: str) -> None:
    made = [b for b in backups(root, path) if b not in before_backups]
    root.check(len(made) == 1, f"a backup of {path} is kept", "one new backup", repr(made))
    got = mode_owner(root, made[0])
    root.check(got == "root:root 600", f"{made[0]} is private", "root:root 600", got)
    root.check(
        root.read(made[0]) == before, f"{made[0]} is the file as it was", "same text", "another"
    )


# --- Dendrite -------------------------------------------------------------------------------


def start_dendrite(root: Root, config: str) -> None:
    """Dendrite as user dendrite in its home, on CONFIG, listening on loopback only;
    returns when it answers the client API."""
    root.ok(
        [
            "start-stop-daemon",
            "--start",
            "--quiet",
            "--background",
            "--make-pidfile",
            "--pidfile",
            PIDFILE,
            "--chuid",
            "dendrite",
            "--chdir",
            HOME,
            "--startas",
            "/bin/sh",
            "--",
            "-c",
            f"exec {BIN}/dendrite --config {config} --http-bind-address 127.0.0.1:8008"
            f" >>{LOG} 2>&1",
        ],
        what=f"starting Dendrite on {config}",
    )
    result = root.run(
        [
            "/opt/venvs/judge/bin/python",
            "/usr/local/lib/mss-test/judge.py",
            "wait",
            "--timeout",
            "90",
            "--server",
            SERVER,
        ]
    )
    if result.code:
        log = root.run(["tail", "-n", "40", LOG]).output
        root.fail("Dendrite answers", f"/_matrix/client/versions at {SERVER}", result.output + log)
    pid = root.read(PIDFILE).strip()
    user = root.ok(["ps", "-o", "user=", "-p", pid], what="Dendrite's user").output.strip()
    root.check(user == "dendrite", "Dendrite runs as its own user", "dendrite", user)


def stop_dendrite(root: Root) -> None:
    root.ok(
        [
            "start-stop-daemon",
            "--stop",
            "--quiet",
            "--oknodo",
            "--pidfile",
            PIDFILE,
            "--remove-pidfile",
            "--retry",
            "TERM/30/KILL/5",
        ],
        what="stopping Dendrite",
    )


def dendrite_chats(root: Root, config: str, db: str, *, socket_dir: str | None = None) -> None:
    """A new user registers through Dendrite's shared-secret API, logs in with matrix-nio,
    makes a room, sends and reads back; its account and room are in database DB (of the
    cluster whose socket is in SOCKET_DIR if given, else the local one)."""
    steps.judge(
        root,
        "chat",
        "--messages",
        str(MESSAGES),
        "--server",
        SERVER,
        "--secret-file",
        config,
        "--settle",
        str(SETTLE),
        what="the client registers on Dendrite, makes a room, sends and reads back",
    )
    entry = json.loads(root.read("/root/judge-state.json"))["users"][-1]
    tables = steps.psql(
        root,
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
        db,
        what=f"Dendrite's tables in {db}",
        socket_dir=socket_dir,
    ).split()
    missing = [t for t in DENDRITE_TABLES if t not in tables]
    root.check(not missing, f"Dendrite's schema is in database {db}", "its tables", repr(missing))
    account = steps.psql(
        root,
        f"SELECT count(*) FROM userapi_accounts WHERE localpart = '{entry['user']}'",  # noqa: S608
        db,
        what="the judge's account",
        socket_dir=socket_dir,
    )
    room = steps.psql(
        root,
        f"SELECT count(*) FROM roomserver_rooms WHERE room_id = '{entry['room']}'",  # noqa: S608
        db,
        what="the judge's room",
        socket_dir=socket_dir,
    )
    root.check(
        (account, room) == ("1", "1"),
        f"the client's account and room are in database {db}",
        "1 account, 1 room",
        f"{account} account(s), {room} room(s)",
    )


# --- the journey ------------------------------------------------------------------------------


@pytest.mark.smoke  # one root per release, no init system: cheap enough for every release
@pytest.mark.journey
@pytest.mark.parametrize("suite", SUITES, scope="class")
class TestDendrite:
    """One root per release (quick mode: trixie; MSS_SYSTEM_FULL=1: both), PostgreSQL
    running: peer, then a password over TCP, then a remote server over TLS, then bad
    input."""

    @pytest.fixture(scope="class")
    def root(self, journey_root, suite) -> Root:
        return journey_root(suite, postgresql=True)

    def test_install(self, root, debs):
        install(root, debs)

    def test_peer(self, root):
        peer(root)

    def test_password_over_tcp(self, root):
        password_over_tcp(root)

    def test_remote_server_over_tls(self, root):
        remote_server_over_tls(root)

    def test_bad_input_changes_nothing(self, root):
        bad_input(root)


def check_password_written(
    root: Root,
    path: str,
    pattern: re.Pattern[str],
    password: str,
    output: tuple[str, str],
    expected: str,
) -> tuple[str, re.Match[str]]:
    """The command printed neither the password nor its encoded form, and PATH's
    connection string is PATTERN with the password percent-encoded in it; PATH's new text
    and the match."""
    encoded = urllib.parse.quote(password, safe="")
    printed = "".join(output)
    root.check(
        password not in printed and encoded not in printed,
        "the command never prints the password",
        "absent from its output",
        "present",
    )
    after = root.read(path)
    uri = yaml.safe_load(after)["global"]["database"]["connection_string"]
    match = pattern.fullmatch(uri)
    root.check(
        match is not None and urllib.parse.unquote(match["password"]) == password,
        f"{path}: the password, percent-encoded, in the connection string",
        expected,
        uri,
    )
    assert match is not None  # root.check failed otherwise
    return after, match


def install(root: Root, debs) -> None:
    """Our package with ruamel.yaml (offline), Dendrite's user, binaries, key and the
    admin's configuration."""
    root.ok(
        [
            "apt-get",
            "install",
            "-y",
            "-q",
            "--no-install-recommends",
            f"{DEBS}/{debs['current'].name}",
            "python3-ruamel.yaml",
        ],
        what="installing our package and python3-ruamel.yaml (offline, from the apt cache)",
        env=NONINTERACTIVE,
    )
    root.ok(
        ["adduser", "--system", "--group", "--home", HOME, "dendrite"],
        what="Dendrite's system user",
    )
    binaries = dendrite.binaries()
    for name in ("dendrite", "generate-keys"):
        root.put_file(binaries / name, f"{BIN}/{name}", 0o755)
    root.ok(
        f"install -d -m 0755 {ETC} && {BIN}/generate-keys --private-key {KEY}"
        f" && chown root:dendrite {KEY} && chmod 0640 {KEY}",
        what="Dendrite's signing key",
    )
    admin_config(root, CONFIG, HOME, "640")


def peer(root: Root) -> None:
    before = root.read(CONFIG)
    owner_mode = mode_owner(root, CONFIG)
    old_backups = backups(root, CONFIG)
    old_databases = databases(root)

    code, out, err = run_setup(root, "--config", CONFIG)
    check_ran(root, "the command provisions for Dendrite (peer)", code, out, err, "changed")
    after = root.read(CONFIG)
    uri = yaml.safe_load(after)["global"]["database"]["connection_string"]
    root.check(uri == PEER_URI, f"{CONFIG}: the peer connection string", PEER_URI, uri)
    check_comments_and_keys(root, before, after, CONFIG)
    got = mode_owner(root, CONFIG)
    root.check(got == owner_mode, f"{CONFIG} keeps its owner and mode", owner_mode, got)
    check_backup(root, CONFIG, old_backups, before)
    recorded = root.run(["cat", RECORD]).output
    root.check(CONFIG in recorded, f"{RECORD} names the file (for doctor)", CONFIG, recorded)

    facts = steps.database_facts(root, "dendrite")
    want = {"encoding": "UTF8", "collate": "C", "ctype": "C", "owner": "dendrite"}
    root.check(facts == want, "database dendrite as Dendrite needs it", repr(want), repr(facts))
    role = steps.psql(
        root,
        "SELECT rolpassword IS NULL, rolsuper, rolcanlogin FROM pg_authid "
        "WHERE rolname = 'dendrite'",
        what="role dendrite",
    )
    root.check(
        role == "t|f|t",
        "role dendrite logs in by peer only: no password, no superuser",
        "no password, not superuser, login (t|f|t)",
        role,
    )

    start_dendrite(root, CONFIG)
    dendrite_chats(root, CONFIG, "dendrite")
    stop_dendrite(root)
    now = databases(root)
    root.check(
        now == old_databases | {"dendrite"},
        "only database dendrite was made (by the command; Dendrite made none)",
        repr(sorted(old_databases | {"dendrite"})),
        repr(sorted(now)),
    )

    state = (file_state(root, CONFIG), backups(root, CONFIG), cluster_state(root))
    code, out, err = run_setup(root, "--config", CONFIG)
    check_ran(root, "a second run (peer)", code, out, err, "unchanged: nothing to do")
    again = (file_state(root, CONFIG), backups(root, CONFIG), cluster_state(root))
    root.check(
        again == state,
        "a second run leaves the file (bytes, owner, mode), the backups and the cluster",
        repr(state),
        repr(again),
    )


def password_over_tcp(root: Root) -> None:
    data_dir = f"{HOME}/tcp"
    admin_config(root, TCP_CONFIG, data_dir, "644")
    root.write(PASSWORD_FILE, TCP_PASSWORD, mode=0o600)
    args = ["--config", TCP_CONFIG, "--host", "127.0.0.1", "--user", TCP_ROLE]
    args += ["--dbname", TCP_ROLE, "--password-file", PASSWORD_FILE]
    before = root.read(TCP_CONFIG)
    old_backups = backups(root, TCP_CONFIG)
    encoded = urllib.parse.quote(TCP_PASSWORD, safe="")

    # A dry run shows the change with the password masked, and makes nothing.
    state = (file_state(root, TCP_CONFIG), backups(root, TCP_CONFIG), cluster_state(root))
    code, out, err = run_setup(root, *args, "--dry-run")
    root.check(
        code == 0
        and "****" in out
        and TCP_PASSWORD not in out + err
        and encoded not in out + err
        and "Traceback" not in out + err,
        "a dry run shows the plan with the password masked",
        "exit 0, ****, no password",
        f"exit {code}\n--- stdout ---\n{out}\n--- stderr ---\n{err}",
    )
    again = (file_state(root, TCP_CONFIG), backups(root, TCP_CONFIG), cluster_state(root))
    root.check(again == state, "a dry run changes nothing", repr(state), repr(again))

    code, out, err = run_setup(root, *args)
    check_ran(root, "the command provisions (password, TCP)", code, out, err, "changed")
    after, match = check_password_written(
        root,
        TCP_CONFIG,
        TCP_URI,
        TCP_PASSWORD,
        (out, err),
        f"postgresql://{TCP_ROLE}:{encoded}@127.0.0.1:5432/{TCP_ROLE}?sslmode=disable",
    )
    check_comments_and_keys(root, before, after, TCP_CONFIG)
    got = mode_owner(root, TCP_CONFIG)
    root.check(
        got == "root:dendrite 640",
        f"{TCP_CONFIG} holds a secret: others may no longer read it",
        "root:dendrite 640",
        got,
    )
    check_backup(root, TCP_CONFIG, old_backups, before)
    holders = set()
    for needle in {TCP_PASSWORD, encoded, match["password"]}:
        found = root.run(["grep", "-rlF", "--", needle, "/etc", "/var/lib/matrix-synapse-setup"])
        holders |= set(found.output.split())
    root.check(
        holders == {TCP_CONFIG},
        "the password is in Dendrite's file only",
        TCP_CONFIG,
        repr(sorted(holders)),
    )
    facts = steps.database_facts(root, TCP_ROLE)
    want = {"encoding": "UTF8", "collate": "C", "ctype": "C", "owner": TCP_ROLE}
    root.check(facts == want, f"database {TCP_ROLE} as Dendrite needs it", repr(want), repr(facts))
    role = steps.psql(
        root,
        f"SELECT rolpassword LIKE 'SCRAM-SHA-256$%', rolsuper FROM pg_authid "  # noqa: S608
        f"WHERE rolname = '{TCP_ROLE}'",
        what=f"role {TCP_ROLE}",
    )
    root.check(role == "t|f", f"role {TCP_ROLE}: a SCRAM password, no superuser", "t|f", role)

    start_dendrite(root, TCP_CONFIG)  # it logs in over TCP with the password
    dendrite_chats(root, TCP_CONFIG, TCP_ROLE)
    stop_dendrite(root)

    state = (file_state(root, TCP_CONFIG), backups(root, TCP_CONFIG), cluster_state(root))
    code, out, err = run_setup(root, *args)
    check_ran(root, "a second run (password, TCP)", code, out, err, "unchanged: nothing to do")
    again = (file_state(root, TCP_CONFIG), backups(root, TCP_CONFIG), cluster_state(root))
    root.check(
        again == state,
        "a second run leaves the file (bytes, owner, mode), the backups and the cluster",
        repr(state),
        repr(again),
    )


def remote_server_over_tls(root: Root) -> None:
    """A remote server (its own network namespace, TLS from a test CA) whose admin made
    the role and the database: the command verifies them over TLS and writes the file,
    provisions nothing anywhere; Dendrite runs there; another CA is refused."""
    local = cluster_state(root)
    with remote_tls.make_certs() as certs:
        remote_psql = remote_tls.tls_cluster(root, certs)
        root.put_file(certs.ca, REMOTE_CA, 0o644)
        root.put_file(certs.other_ca, OTHER_CA, 0o644)
    remote_tls.make_role_and_database(remote_psql, REMOTE_ROLE, REMOTE_PASSWORD)
    admin_config(root, REMOTE_CONFIG, f"{HOME}/remote", "640")
    root.write(REMOTE_PASSWORD_FILE, REMOTE_PASSWORD, mode=0o600)
    args = ["--config", REMOTE_CONFIG, "--host", remote_tls.DB_ADDR, "--user", REMOTE_ROLE]
    args += ["--dbname", REMOTE_ROLE, "--password-file", REMOTE_PASSWORD_FILE]
    before = root.read(REMOTE_CONFIG)
    old_backups = backups(root, REMOTE_CONFIG)
    encoded = urllib.parse.quote(REMOTE_PASSWORD, safe="")

    code, out, err = run_setup(root, *args, "--sslrootcert", REMOTE_CA)
    check_ran(root, "the command points Dendrite at a remote server", code, out, err, "changed")
    made = [line for line in out.splitlines() if re.match(r"(role|database) .*: created", line)]
    root.check(
        not made,
        "a remote server is only verified: no role or database made",
        "no 'created' role or database line",
        "\n".join(made),
    )
    root.check(
        any(TLS_LINE.fullmatch(line.strip()) for line in out.splitlines()),
        "the command logged in over TLS, the certificate verified",
        "TLS: ok (TLSv1.x, cipher, sslmode verify-full)",
        out,
    )
    after, match = check_password_written(
        root,
        REMOTE_CONFIG,
        REMOTE_URI,
        REMOTE_PASSWORD,
        (out, err),
        f"postgresql://{REMOTE_ROLE}:{encoded}@{remote_tls.DB_ADDR}:5432/{REMOTE_ROLE}"
        f"?sslmode=verify-full&sslrootcert={REMOTE_CA}",
    )
    check_comments_and_keys(root, before, after, REMOTE_CONFIG)
    got = mode_owner(root, REMOTE_CONFIG)
    want = "root:dendrite 640"
    root.check(got == want, f"{REMOTE_CONFIG} keeps its owner and mode", want, got)
    check_backup(root, REMOTE_CONFIG, old_backups, before)
    now = cluster_state(root)
    root.check(
        now == local and REMOTE_ROLE not in now,
        f"the local cluster got no role or database {REMOTE_ROLE}",
        local,
        now,
    )

    start_dendrite(root, REMOTE_CONFIG)  # it logs in over TLS, the CA file read as its user
    dendrite_chats(root, REMOTE_CONFIG, REMOTE_ROLE, socket_dir=remote_tls.REMOTE_SOCKET)
    remote_tls.check_over_tls(root, remote_psql, REMOTE_ROLE)
    stop_dendrite(root)

    def whole_state() -> tuple:
        return (
            file_state(root, REMOTE_CONFIG),
            backups(root, REMOTE_CONFIG),
            cluster_state(root),
            root.run(["cat", RECORD]).output,
        )

    state = whole_state()
    code, out, err = run_setup(root, *args, "--sslrootcert", REMOTE_CA)
    check_ran(root, "a second run (remote, TLS)", code, out, err, "unchanged: nothing to do")
    again = whole_state()
    root.check(
        again == state,
        "a second run leaves the file (bytes, owner, mode), the backups and the cluster",
        repr(state),
        repr(again),
    )

    # The server's certificate is not signed by the CA named: refused before any change.
    code, out, err = run_setup(root, *args, "--sslrootcert", OTHER_CA)
    lines = [line for line in err.splitlines() if line.strip()]
    root.check(
        code == 1 and len(lines) == 1 and "Traceback" not in out + err,
        "a CA that did not sign the server's certificate is refused in one line",
        "exit 1, one line on stderr",
        f"exit {code}\n--- stdout ---\n{out}\n--- stderr ---\n{err}",
    )
    root.check(
        "TLS" in lines[0] and OTHER_CA in lines[0],
        "the refusal says TLS failed and names the CA file",
        f"a line naming TLS and {OTHER_CA}",
        lines[0],
    )
    again = whole_state()
    root.check(again == state, "the refused CA changes nothing", repr(state), repr(again))


def bad_input(root: Root) -> None:
    """Each refused in one line on stderr, exit 1, before anything changed."""
    missing = f"{ETC}/missing.yaml"
    broken = f"{ETC}/broken.yaml"
    sqlite = f"{ETC}/sqlite.yaml"
    private = f"{ETC}/private.yaml"
    root.write(broken, "global: [unclosed\n")
    admin_config(root, sqlite, f"{HOME}/sqlite", "640", uri="file:dendrite.db")
    admin_config(root, private, f"{HOME}/private", "600")
    root.ok(["chown", "root:root", private], what=f"{private} is root's alone")
    cases = [
        (missing, "", "a missing file"),
        (broken, "", "a file that is not YAML"),
        (sqlite, "", "a SQLite connection string (the admin's choice)"),
        (private, "nobody", "a file the caller cannot read (read before the root check)"),
    ]
    for path, user, what in cases:
        state = (
            file_state(root, path),
            backups(root, path),
            cluster_state(root),
            root.run(["cat", RECORD]).output,
        )
        code, out, err = run_setup(root, "--config", path, user=user)
        lines = [line for line in err.splitlines() if line.strip()]
        root.check(
            code == 1 and len(lines) == 1 and "Traceback" not in out + err,
            f"{what} is refused in one line",
            "exit 1, one line on stderr",
            f"exit {code}\n--- stdout ---\n{out}\n--- stderr ---\n{err}",
        )
        if user:
            root.check(
                path in lines[0],
                f"{what}: the refusal names the file, not the missing root",
                f"a line naming {path}",
                lines[0],
            )
        after = (
            file_state(root, path),
            backups(root, path),
            cluster_state(root),
            root.run(["cat", RECORD]).output,
        )
        root.check(after == state, f"{what} changes nothing", repr(state), repr(after))
