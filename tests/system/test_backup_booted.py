"""A dump before every Synapse upgrade, and its restore (issue 14), under a real systemd.

A booted root (harness.BootedRoot) with PostgreSQL, the Synapse stand-in and our package;
the judge chats.  Then apt upgrades the stand-in to a newer version (the same real Synapse
inside): with a full disk where the dumps go, apt is stopped before anything is unpacked;
with room, the dump is written first (0600, the old version in its name).
`matrix-synapse-setup restore` puts it into a new database, Synapse restarts on it, and
the judge's earlier users find their messages.
"""

from __future__ import annotations

import pytest

from matrix_synapse_setup.commands import backup
from scripts.devtools import steps
from scripts.devtools.harness import DEBS, Root
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
