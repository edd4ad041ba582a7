"""A dump before every Synapse upgrade, and its restore (issue 14), under a real systemd.

A booted root (harness.BootedRoot) with PostgreSQL, the Synapse stand-in and our package;
the judge chats.  Then apt upgrades the stand-in to a newer version (the same real Synapse
inside): with a full disk where the dumps go, apt is stopped before anything is unpacked;
with room, the dump is written first (0600, the old version in its name).
`matrix-synapse-setup restore` puts it into a new database, Synapse restarts on it, and
the judge's earlier users find their messages.
"""

from __future__ import annotations

import json
import re

import pytest

from matrix_synapse_setup.commands import backup
from scripts.devtools import steps
from scripts.devtools.harness import DEBS, HELPERS, Root
from scripts.devtools.steps import NONINTERACTIVE

SUITES = ["trixie", "bookworm"]
suites = pytest.mark.parametrize("suite", SUITES)
smoke = pytest.mark.smoke
BACKUPS = "/var/backups/matrix-synapse-setup"
OLD, NEW = steps.STANDIN_VERSION, steps.STANDIN_NEWER_VERSION
CAPTURED = "/root/apt-hook-input"
JUDGE_STATE = "/root/judge-state.json"  # inroot/judge.py's record
# A second hook, test-only, that keeps a copy of what apt sends ours (protocol 3).
CAPTURE_CONF = f"""\
DPkg::Pre-Install-Pkgs {{ "tee {CAPTURED} >/dev/null"; }};
DPkg::Tools::Options::tee::Version "3";
"""


@pytest.fixture(scope="module")
def newer_synapse(workdir):
    return steps.standin_deb(workdir, NEW)


def synapse_status(root: Root) -> str:
    cmd = ["dpkg-query", "-W", "-f", "${db:Status-Abbrev}${Version}", "matrix-synapse-py3"]
    return root.ok(cmd, what="asking dpkg about Synapse").output.strip()


def dumps_in(root: Root) -> list[str]:
    out = root.run(["find", BACKUPS, "-maxdepth", "1", "-name", "synapse-*.dump"]).output
    return sorted(line for line in out.split() if line)


@smoke
@suites
def test_backup_before_upgrade_and_restore(make_root, debs, newer_synapse, suite):
    root = make_root(suite, booted=True, layer="synapse")  # Synapse runs, on SQLite
    root.put_file(newer_synapse, f"{DEBS}/{newer_synapse.name}")
    steps.apt_install(root, debs["current"])
    root.check(
        root.exists("/etc/apt/apt.conf.d/60matrix-synapse-setup"),
        "the package installs its apt hook",
        "/etc/apt/apt.conf.d/60matrix-synapse-setup",
        "absent",
    )
    steps.synapse_chats(root)
    # The judge's record of users and messages as they are when the dump is taken: what
    # the restored database must hold, exactly (later messages go to the old database).
    root.ok(["cp", JUDGE_STATE, f"{JUDGE_STATE}.at-dump"], what="keeping the judge's state")
    root.write("/etc/apt/apt.conf.d/99mss-test-capture", CAPTURE_CONF)
    upgrade = ["apt-get", "install", "-y", "-q", f"{DEBS}/{newer_synapse.name}"]

    # A full disk where the dumps go: apt stops before dpkg unpacks anything.
    root.ok(["mkdir", "-p", "-m", "0700", BACKUPS], what="the backup directory")
    root.ok(
        ["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", BACKUPS],
        what="a tiny file system for the dumps",
    )
    pid = steps.synapse_pid(root)
    refused = root.fails(upgrade, what="upgrading Synapse with a full disk", env=NONINTERACTIVE)
    root.check(
        "no Synapse upgrade without a dump" in refused.output
        and f"{backup.SKIP_ENV}=1 apt upgrade" in refused.output
        and "Traceback" not in refused.output,
        "the refusal says why and names the override",
        f"'no Synapse upgrade without a dump' and '{backup.SKIP_ENV}=1 apt upgrade'",
        refused.output,
    )
    status = synapse_status(root)
    root.check(
        status == f"ii {OLD}",
        "nothing was unpacked: the old Synapse is installed, configured",
        f"ii {OLD}",
        status,
    )
    root.check(
        steps.synapse_pid(root) == pid,
        "Synapse was not stopped",
        f"MainPID {pid}",
        steps.synapse_pid(root),
    )
    root.ok(["umount", BACKUPS], what="the disk has room again")

    # With room: the dump first, then the upgrade.
    done = root.ok(upgrade, what="upgrading Synapse", env=NONINTERACTIVE)
    status = synapse_status(root)
    root.check(status == f"ii {NEW}", "Synapse is upgraded", f"ii {NEW}", status)
    found = dumps_in(root)
    root.check(len(found) == 1, "one dump was written", "1 dump", repr(found), done)
    dump = found[0]
    parsed = backup.parse_dump_name(dump.rsplit("/", 1)[1])
    root.check(
        parsed is not None and parsed[0] == OLD,
        "the dump's name carries the old Synapse version",
        f"synapse-{OLD}-TIME.dump",
        dump,
    )
    root.check(
        f"{OLD} -> {NEW}: {dump}" in done.output,
        "the hook says where the dump went",
        dump,
        done.output,
    )
    modes = root.ok(["stat", "-c", "%a %U %G", dump, BACKUPS], what="the dump's mode").output
    root.check(
        modes.split() == ["600", "root", "root", "700", "root", "root"],
        "the dump is root's alone",
        "600 root root / 700 root root",
        modes,
    )
    captured = backup.parse_hook_input(root.read(CAPTURED))
    seen = backup.synapse_upgrade(captured)
    root.check(
        seen is not None and (seen.old, seen.new) == (OLD, NEW),
        "the parser reads the real apt's hook input (version 3)",
        f"matrix-synapse-py3 {OLD} < {NEW}",
        root.read(CAPTURED)[-600:],
    )
    steps.synapse_recheck(root)

    # A dump of a newer Synapse than the installed one is refused.
    newer = f"{BACKUPS}/synapse-9.9.9-20261201T000000Z.dump"
    root.ok(["cp", dump, newer], what="a dump that claims a newer Synapse")
    out = root.fails(["matrix-synapse-setup", "restore", newer], what="restoring a newer dump")
    root.check("newer than the installed" in out.output, "refused: newer", "newer", out.output)
    root.ok(["rm", newer], what="removing it")

    plan = root.ok(
        ["matrix-synapse-setup", "restore", "--dry-run", dump], what="the restore's plan"
    )
    root.check(
        "would 1. create database synapse_restored_" in plan.output, "a plan", "", plan.output
    )
    pid = steps.synapse_pid(root)
    out = root.ok(["matrix-synapse-setup", "restore", dump], what="restoring the dump")
    data = steps.snippet(root)[0]
    new_db = data["database"]["args"]["dbname"]
    root.check(
        new_db.startswith("synapse_restored_") and "dropdb synapse" in out.output,
        "the snippet names the new database; the old one's drop is explained",
        "synapse_restored_*, 'runuser -u postgres -- dropdb synapse'",
        f"{new_db}\n{out.output}",
    )
    root.check(steps.synapse_pid(root) != pid, "Synapse restarted", f"not {pid}", "same PID")
    # The messages of the dump's time are there, in order, and none sent after it.
    root.ok(["cp", f"{JUDGE_STATE}.at-dump", JUDGE_STATE], what="the judge's state at the dump")
    steps.synapse_recheck(root)
    steps.synapse_on_postgresql(root, new_db)
    root.check(
        steps.database_facts(root, "synapse") != {},
        "the old database is left in place",
        "database synapse exists",
        "dropped",
    )
    shown = root.ok(["debconf-show", "matrix-synapse-setup"], what="debconf's answers").output
    root.check(
        f"matrix-synapse-setup/db-name: {new_db}" in shown,
        "debconf's db-name follows the restore",
        new_db,
        shown,
    )
    # A later reconfigure keeps Synapse on the restored database.
    root.ok(
        ["dpkg-reconfigure", "-fnoninteractive", "matrix-synapse-setup"],
        what="dpkg-reconfigure after the restore",
    )
    after = steps.snippet(root)[0]["database"]["args"]["dbname"]
    root.check(after == new_db, "a reconfigure keeps the restored database", new_db, after)
    steps.synapse_recheck(root)

    # The override, through apt itself (apt hands its environment to the hook): with the
    # disk full again, a downgrade (a version change too) goes on without a dump, warned.
    root.ok(
        ["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", BACKUPS],
        what="a tiny file system for the dumps, again",
    )
    downgrade = ["apt-get", "install", "-y", "-q", "--allow-downgrades"]
    downgrade.append(f"{DEBS}/{debs['synapse'].name}")
    out = root.ok(
        downgrade,
        what=f"downgrading Synapse with a full disk and {backup.SKIP_ENV}=1",
        env=NONINTERACTIVE | {backup.SKIP_ENV: "1"},
    )
    root.check(
        "warning" in out.output and backup.SKIP_ENV in out.output,
        "the override lets apt go on, with a warning",
        f"a warning naming {backup.SKIP_ENV}",
        out.output,
    )
    status = synapse_status(root)
    root.check(status == f"ii {OLD}", "Synapse is downgraded", f"ii {OLD}", status)
    root.ok(["umount", BACKUPS], what="unmounting the tiny file system")


# --- one-time keys and the server's identity across a restore ------------------------------

KEY = "/etc/matrix-synapse/mss.test.signing.key"  # the stand-in's generated homeserver.yaml
LOG_CONFIG = "/etc/matrix-synapse/mss.test.log.config"
CONFD_FILES = (
    "/etc/matrix-synapse/conf.d/server_name.yaml",
    "/etc/matrix-synapse/conf.d/database.yaml",
    "/etc/matrix-synapse/conf.d/database.pgpass",
)
OTK = "/root/otk.py"
# A Matrix client of the end-to-end encryption API, with the standard library only: run by
# the root's own python3, over real HTTP to the real Synapse.  Its state (users, tokens, the
# key it uploaded) is kept in /root/otk-state.json between the calls.
OTK_SCRIPT = r'''
import base64, hashlib, hmac, json, re, secrets, sys, urllib.error, urllib.request
from pathlib import Path

SERVER = "http://127.0.0.1:8008"
SECRET = Path("/etc/matrix-synapse/conf.d/zz-test-registration.yaml")
STATE = Path("/root/otk-state.json")


def http(method, path, body=None, token=""):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(SERVER + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.load(resp)
    except urllib.error.HTTPError as err:
        sys.exit(f"{method} {path}: HTTP {err.code} {err.read()[:300]!r}")


def register(user, password):
    """Synapse's shared-secret registration (its admin API)."""
    secret = re.search(r'registration_shared_secret:\s*"?([^"\n]+)', SECRET.read_text())[1]
    nonce = http("GET", "/_synapse/admin/v1/register")["nonce"]
    mac = hmac.new(secret.encode(), digestmod=hashlib.sha1)
    mac.update(b"\x00".join(p.encode() for p in (nonce, user, password, "notadmin")))
    body = {"nonce": nonce, "username": user, "password": password, "admin": False,
            "mac": mac.hexdigest()}
    return http("POST", "/_synapse/admin/v1/register", body)["user_id"]


def login(user, password, device):
    body = {"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user},
            "password": password, "device_id": device}
    return http("POST", "/_matrix/client/v3/login", body)["access_token"]


def unpadded(raw):
    return base64.b64encode(raw).decode().rstrip("=")


command = sys.argv[1]
if command == "setup":
    state = {}
    for name, device in (("alice", "ALICEDEV"), ("bob", "BOBDEV")):
        password = secrets.token_urlsafe(12)
        state[name] = {"id": register(name, password), "device": device,
                       "token": login(name, password, device)}
    # One signed curve25519 one-time key for Alice's device, as a client uploads it; Synapse
    # stores it as given (the signature is for the claiming client to check).
    key = unpadded(secrets.token_bytes(32))
    signature = unpadded(secrets.token_bytes(64))
    alice = state["alice"]
    body = {"one_time_keys": {"signed_curve25519:AAAAAQ": {
        "key": key, "signatures": {alice["id"]: {"ed25519:ALICEDEV": signature}}}}}
    counts = http("POST", "/_matrix/client/v3/keys/upload", body, alice["token"])
    state["key"] = key
    STATE.write_text(json.dumps(state))
    print(json.dumps({"uploaded": key, "counts": counts["one_time_key_counts"]}))
elif command == "claim":
    state = json.loads(STATE.read_text())
    alice, bob = state["alice"], state["bob"]
    body = {"one_time_keys": {alice["id"]: {alice["device"]: "signed_curve25519"}}}
    got = http("POST", "/_matrix/client/v3/keys/claim", body, bob["token"])
    keys = got.get("one_time_keys", {}).get(alice["id"], {}).get(alice["device"], {})
    print(json.dumps({"uploaded": state["key"], "claimed": {k: v["key"] for k, v in keys.items()}}))
elif command == "server-keys":
    print(json.dumps(sorted(http("GET", "/_matrix/key/v2/server")["verify_keys"])))
'''


def otk(root: Root, command: str, what: str) -> dict | list:
    steps.synapse_up(root, "Synapse answers")
    return json.loads(root.ok(["python3", OTK, command], what=what).output.strip().splitlines()[-1])


def restore_facts(root: Root) -> dict[str, str]:
    """What a refused restore must leave as it is: the snippet's database, the databases,
    the signing key and configuration files (checksums, owners, modes), kept copies."""
    listing = root.ok(
        "find /etc/matrix-synapse -printf '%p %m %u %g\\n' | sort;"
        " find /etc/matrix-synapse -type f -print0 | sort -z | xargs -0 sha256sum",
        what="the configuration's files",
    ).output
    databases = steps.psql(
        root, "SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database", what="dbs"
    )
    return {"files": listing, "databases": databases, "pid": steps.synapse_pid(root)}


@smoke  # cheap: a booted root on a cached layer, no apt upgrade; tarfile differs by release
@suites
def test_a_restore_never_hands_out_a_used_one_time_key_and_brings_the_key_back(
    make_root, debs, suite
):
    root = make_root(suite, booted=True, layer="synapse")  # Synapse runs, on SQLite
    steps.apt_install(root, debs["current"])  # now on PostgreSQL
    root.write(OTK, OTK_SCRIPT)
    up = otk(root, "setup", "Alice uploads a one-time key for her device")
    root.check(
        up["counts"] == {"signed_curve25519": 1},
        "Synapse holds Alice's one-time key",
        "one_time_key_counts {'signed_curve25519': 1}",
        json.dumps(up),
    )
    identity = otk(root, "server-keys", "the server's signing keys, as Synapse publishes them")

    made = root.ok(["matrix-synapse-setup", "backup"], what="a backup now").output
    printed = [line for line in made.splitlines() if line.startswith(BACKUPS)]
    root.check(len(printed) == 2, "backup prints the dump and its archive", "2 paths", made)
    dump, archive = printed
    root.check(
        archive == dump[: -len(".dump")] + ".config.tar",
        "the archive is named after its dump",
        dump[: -len(".dump")] + ".config.tar",
        archive,
    )
    listing = root.ok(["pg_restore", "-l", dump], what="the dump's table of contents").output
    root.check(
        "TABLE public e2e_one_time_keys_json" in listing
        and "TABLE DATA public e2e_one_time_keys_json" not in listing
        and "TABLE DATA public users" in listing,
        "the dump has the one-time keys' table, none of its rows, and the other data",
        "TABLE e2e_one_time_keys_json, no TABLE DATA for it, TABLE DATA users",
        listing[-3000:],
    )
    # The archive: root's alone, with the key, homeserver.yaml, conf.d and the log
    # configuration, each with its owner and mode.
    modes = root.ok(["stat", "-c", "%a %U %G", archive], what="the archive's mode").output
    root.check(modes.split() == ["600", "root", "root"], "the archive is 0600 root", "", modes)
    members = root.ok(["tar", "-tvf", archive], what="the archive's members").output
    seen = {line.split()[-1]: line.split()[:2] for line in members.splitlines() if line.strip()}
    for path in (KEY, LOG_CONFIG, "/etc/matrix-synapse/homeserver.yaml", *CONFD_FILES):
        mode, owner = root.ok(
            ["stat", "-c", "%A %U/%G", path], what=f"{path}'s mode"
        ).output.split()
        root.check(
            seen.get(path.lstrip("/")) == [mode, owner],
            f"the archive has {path} with its owner and mode",
            f"{mode} {owner}",
            members,
        )
    root.check(
        "etc/matrix-synapse/conf.d/" in seen, "the archive has conf.d itself", "conf.d/", members
    )

    # Bob claims Alice's key after the dump: he gets it, and Synapse hands it out once.
    claimed = otk(root, "claim", "Bob claims Alice's one-time key")
    root.check(
        list(claimed["claimed"].values()) == [up["uploaded"]],
        "the key uploaded before the dump is handed out once, after it",
        up["uploaded"],
        json.dumps(claimed),
    )
    again = otk(root, "claim", "Bob claims again")
    root.check(again["claimed"] == {}, "a claimed key is gone", "{}", json.dumps(again))

    plan = root.ok(["matrix-synapse-setup", "restore", "--dry-run", dump], what="the plan")
    root.check(
        "restore --with-config" in plan.output and archive in plan.output,
        "the plan says an archive is there, and how to put it back",
        f"{archive} and 'restore --with-config'",
        plan.output,
    )
    out = root.ok(["matrix-synapse-setup", "restore", dump], what="restoring the dump")
    root.check(
        "Synapse: restarted" in out.output and "--with-config" in out.output,
        "Synapse runs on the restored database; the archive is mentioned",
        "'Synapse: restarted', '--with-config'",
        out.output,
    )
    after = otk(root, "claim", "Bob claims Alice's key from the restored server")
    root.check(
        up["uploaded"] not in after["claimed"].values(),
        "the restored server does not hand out the key claimed after the dump again",
        "no key",
        json.dumps(after),
    )

    # The admin's key changed since the dump (another server's identity, say).
    original = root.read(KEY)
    root.ok(
        f"/opt/venvs/matrix-synapse/bin/generate_signing_key > /root/other.key"
        f" && cat /root/other.key > {KEY}",
        what="another signing key in place",
    )
    other = root.read(KEY)
    before = restore_facts(root)
    cmd = ["matrix-synapse-setup", "restore", "--with-config", dump]
    refused = root.fails(cmd, what="restore --with-config without a terminal nor --yes")
    root.check(
        "confirmation" in refused.output and "--yes" in refused.output,
        "refused without a terminal: says how to confirm",
        "a confirmation ... --yes",
        refused.output,
    )
    root.check(restore_facts(root) == before, "a refusal changes nothing", "", "changed")
    typed = root.fails(
        ["python3", f"{HELPERS}/ptydrive.py", *cmd],
        input=json.dumps(
            {"timeout": 120, "steps": [{"expect": "Type mss.test to go on", "send": "yes"}]}
        ),
        env={"TERM": "xterm"},
        what="restore --with-config on a terminal, answered with something else",
    )
    root.check(
        "nothing was changed" in typed.output and str(KEY) in typed.output,
        "on a terminal: the plan names the key, and a wrong answer refuses",
        "the key's path, 'nothing was changed'",
        typed.output,
    )
    root.check(restore_facts(root) == before, "a refusal on a terminal changes nothing", "", "")

    pid = steps.synapse_pid(root)
    out = root.ok([*cmd, "--yes"], what="restore --with-config --yes")
    kept = re.search(rf"{re.escape(KEY)}: put back .* kept as (\S+)", out.output)
    root.check(kept is not None, "the replaced key is kept, and named", "kept as ...", out.output)
    root.check(
        root.read(kept.group(1)) == other,
        "the admin's key before the restore is kept as it was",
        other,
        root.read(kept.group(1)),
    )
    modes = root.ok(["stat", "-c", "%a %U %G", KEY, kept.group(1)], what="the keys' owners")
    root.check(
        modes.output.split()[:3] == modes.output.split()[3:],
        "the key put back has the owner and mode it had",
        modes.output,
        modes.output,
    )
    root.check(steps.synapse_pid(root) != pid, "Synapse restarted", f"not {pid}", "same")
    root.check(root.read(KEY) == original, "the key of the dump's time is back", "", "")
    root.check(
        otk(root, "server-keys", "the server's signing keys after the restore") == identity,
        "Synapse publishes the signing key of the dump's time again: the same server",
        json.dumps(identity),
        root.read(KEY),
    )
    after = otk(root, "claim", "Bob claims Alice's key once more")
    root.check(
        up["uploaded"] not in after["claimed"].values(),
        "after the restore with the configuration too, the key is still not handed out",
        "no key",
        json.dumps(after),
    )
