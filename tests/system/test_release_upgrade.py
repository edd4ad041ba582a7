"""Debian 12 -> 13 with Synapse on this package's PostgreSQL 15, then PostgreSQL 15 -> 17.

Two journeys (conftest.py: the steps of a class share one root, in order), each on a booted
bookworm root (harness.BootedRoot: systemd is PID 1) on the `synapse-data` layer, with
scripts/devtools/release_layer.py's layer on top: trixie's sources, lists and .debs aside
in /var/cache/mss-release-upgrade/, so that the upgrade runs offline.  Synapse (the
stand-in around the real Synapse from PyPI) runs on SQLite with a real client's user, room
and messages; `apt install` of our .deb moves it to PostgreSQL 15 and tunes 15/main.  Then
the admin's release upgrade: the sources switched to trixie and a real noninteractive
`apt-get full-upgrade` (postgresql/auto_upgrade answered no, the config files kept), after
which Synapse still serves every message, from 15/main.  Then the cluster's upgrade:

- TestReleaseUpgradeCommand: `doctor` warns and names `upgrade-postgresql`; the command
  refuses without free space and changes nothing; `--dry-run` changes nothing; the command
  moves Synapse to 17/main with every user and message and our drop-in in effect there,
  keeps 15/main stopped and prints its `pg_dropcluster` line; a reconfigure changes
  nothing; once 15/main is dropped, a reconfigure leaves nothing of ours in
  /etc/postgresql/15.
- TestReleaseUpgradeByHand: Debian's documented way, Synapse stopped, `pg_upgradecluster
  15 main`, Synapse started: the same result through our pg_upgradecluster.d hook, and
  `doctor` no longer warns about the major.

Heavy (a whole release upgrade, each journey): not smoke, and bookworm only, so it runs
with MSS_SYSTEM_FULL=1 (conftest.py).
"""

from __future__ import annotations

import pytest

from scripts.devtools import release_layer, steps
from scripts.devtools.harness import Root
from scripts.devtools.steps import NONINTERACTIVE, PASSFILE, SNIPPET, SYNAPSE_UNIT

SUITES = [release_layer.FROM]
CACHE = release_layer.CACHE_DIR
OLD, NEW = "15", "17"
DROPIN_NAME = "00-matrix-synapse-setup.conf"
BACKUPS = "/var/backups/matrix-synapse-setup"
UPGRADE_TIMEOUT = 3600.0
COMMAND = "upgrade-postgresql"


@pytest.fixture(scope="module")
def lowers():
    """The roots of this module start from the release layer (conftest's `lowers`, with
    release_layer.py's layer on top of bookworm's `synapse-data`)."""

    def chain(suite: str, layer: str | None):
        assert (suite, layer) == (release_layer.FROM, release_layer.BELOW), (suite, layer)
        return release_layer.chain()

    return chain


# --- looking at the clusters ------------------------------------------------------------


def dropin(version: str) -> str:
    return f"/etc/postgresql/{version}/main/conf.d/{DROPIN_NAME}"


def clusters(root: Root) -> dict[str, tuple[int, str]]:
    """pg_lsclusters as {version: (port, status)} for the clusters named main."""
    out = root.ok(["pg_lsclusters", "-h"], what="listing PostgreSQL clusters").output
    found = {}
    for line in out.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[1] == "main":
            found[fields[0]] = (int(fields[2]), fields[3])
    return found


def synapse_clusters(root: Root) -> list[str]:
    """The versions of the running clusters where Synapse's role holds connections to its
    database (Synapse keeps a pool open while it serves)."""
    args = steps.snippet(root)[0]["database"]["args"]
    found = []
    for version, (port, status) in sorted(clusters(root).items()):
        if status != "online":
            continue
        count = steps.psql(
            root,
            "SELECT count(*) FROM pg_stat_activity WHERE datname = "  # noqa: S608
            f"'{args['dbname']}' AND usename = '{args['user']}'",  # names the package chose
            port=port,
            what=f"Synapse's connections to {version}/main",
        )
        if int(count) > 0:
            found.append(version)
    return found


def synapse_serves_from(root: Root, version: str, what: str) -> None:
    """Synapse answers, every earlier user logs in and reads every message (and sends one
    more), its schema and users are in the cluster of VERSION, and it uses that one."""
    steps.synapse_recheck(root, messages=1)
    port = clusters(root).get(version, (0, ""))[0]
    root.check(port == 5432, f"{what}: {version}/main on port 5432", "5432", str(port))
    steps.synapse_on_postgresql(root)
    seen = synapse_clusters(root)
    root.check(
        seen == [version],
        f"{what}: Synapse is connected to {version}/main only",
        f"[{version!r}]",
        f"{seen}; clusters {clusters(root)}",
    )


def dropin_in_effect(root: Root, version: str, what: str) -> None:
    """Our drop-in is in VERSION/main's conf.d and the running cluster took its
    shared_buffers from it (not postgresql.conf's 128MB)."""
    path = dropin(version)
    root.check(root.exists(path), f"{what}: our drop-in is in {version}/main", path, "absent")
    values = {}
    for line in root.read(path).splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition(" = ")
            values[name.strip()] = value.strip().strip("'")
    wanted = values.get("shared_buffers", "")
    root.check(bool(wanted), f"{what}: the drop-in sets shared_buffers", "a value", repr(values))
    port = clusters(root)[version][0]
    literal = wanted.replace("'", "''")
    out = steps.psql(
        root,
        "SELECT pg_size_bytes(current_setting('shared_buffers')) = "  # noqa: S608
        f"pg_size_bytes('{literal}'), current_setting('shared_buffers'), "
        "coalesce(sourcefile, '') FROM pg_settings WHERE name = 'shared_buffers'",
        port=port,
        what="SHOW shared_buffers",
    )
    same, shown, source = out.split("|")
    root.check(
        same == "t" and source == path,
        f"{what}: {version}/main runs with the drop-in's shared_buffers",
        f"{wanted} from {path}",
        f"{shown} from {source or 'the default'}",
    )


def no_cluster(root: Root, version: str, what: str) -> None:
    found = clusters(root)
    root.check(version not in found, what, f"no {version}/main", repr(found))


def doctor(root: Root) -> tuple[int, str]:
    result = root.run(["matrix-synapse-setup", "doctor"], timeout=300)
    return result.code, result.output


def sha256(root: Root, *paths: str) -> str:
    return root.ok(["sha256sum", *paths], what="hashing files").output


def state(root: Root) -> dict[str, str]:
    """What a refused or dry run must leave as it was: the clusters, their databases, every
    file under /etc/postgresql, our snippet and password file, the backups, Synapse's
    process."""
    databases = steps.psql(
        root, "SELECT datname FROM pg_database ORDER BY 1", what="listing the databases"
    )
    files = root.ok(
        "find /etc/postgresql /var/lib/postgresql -maxdepth 2 | sort; "
        "find /etc/postgresql -type f -print0 | sort -z | xargs -0 sha256sum; "
        f"ls -l {BACKUPS} 2>&1 || true",
        what="listing PostgreSQL's directories and our backups",
    ).output
    return {
        "clusters": repr(clusters(root)),
        "databases": databases,
        "files": files,
        "snippet": sha256(root, SNIPPET, PASSFILE),
        "synapse": steps.synapse_pid(root),
    }


def same_state(root: Root, before: dict[str, str], what: str) -> None:
    after = state(root)
    changed = {k: (before[k], after[k]) for k in before if before[k] != after[k]}
    root.check(not changed, what, "nothing changed", repr(changed))


# --- the steps both journeys share ------------------------------------------------------


def install_on_postgresql_15(root: Root, debs) -> None:
    """Synapse runs on SQLite with the judge's data; `apt install` of our .deb (default
    answers) moves it to 15/main, tuned."""
    root.check(
        root.read("/etc/debian_version").startswith("12."),
        "the root is Debian 12",
        "12.x",
        root.read("/etc/debian_version"),
    )
    steps.apt_install(root, debs["current"])
    steps.check_snippet(root, password=None, group="matrix-synapse")
    synapse_serves_from(root, OLD, "after the install")
    root.check(root.exists(dropin(OLD)), "15/main is tuned", dropin(OLD), "absent")


def switch_to_trixie(root: Root) -> None:
    """The admin's sources now say trixie; their lists are the cached ones (the root is
    offline: this is what `apt update` would have fetched)."""
    root.ok(
        f"cp {CACHE}/sources.list /etc/apt/sources.list && "
        "rm -f /var/lib/apt/lists/*_dists_* && "
        f"cp {CACHE}/lists/*_dists_* /var/lib/apt/lists/",
        what="switching apt's sources and lists to trixie",
    )


def full_upgrade_keeps_postgresql_15(root: Root) -> None:
    """A real noninteractive `apt-get full-upgrade` to trixie, offline from the layer's
    .debs: Synapse still serves every message, from 15/main."""
    switch_to_trixie(root)
    # trixie's postgresql asks whether to upgrade the clusters now (default no): an admin
    # who reads the release notes says no and upgrades later.
    root.ok(
        ["debconf-set-selections"],
        input="postgresql postgresql/auto_upgrade boolean false\n",
        what="preseeding postgresql/auto_upgrade false",
    )
    upgrade = root.run(
        [
            "apt-get",
            "full-upgrade",
            "-y",
            "-q",
            "--no-download",
            "-o",
            f"Dir::Cache::Archives={CACHE}/archives/",
            "-o",
            "Dpkg::Options::=--force-confold",
            "-o",
            "Dpkg::Options::=--force-confdef",
        ],
        env=NONINTERACTIVE,
        timeout=UPGRADE_TIMEOUT,
    )
    if upgrade.code:
        root.fail("apt-get full-upgrade to trixie", "exit 0", f"exit {upgrade.code}", upgrade)
    version = root.read("/etc/debian_version").strip()
    root.check(version.startswith("13."), "the root is Debian 13", "13.x", version, upgrade)
    broken = root.ok(
        ["dpkg-query", "-W", "-f", "${db:Status-Abbrev} ${Package}\\n"], what="dpkg's states"
    ).output
    unfinished = [line for line in broken.splitlines() if not line.startswith(("ii", "rc"))]
    root.check(not unfinished, "every package is configured", "ii", repr(unfinished), upgrade)
    new_server = root.run(["dpkg-query", "-W", "-f", "${db:Status-Abbrev}", f"postgresql-{NEW}"])
    root.check(
        new_server.output.startswith("ii"),
        f"postgresql-{NEW} is installed (trixie's postgresql pulled it)",
        "installed",
        new_server.output,
    )
    no_cluster(root, NEW, f"the full-upgrade made no {NEW}/main (auto_upgrade: no)")
    # Only that it answers: libc6's postinst restarted PostgreSQL under the running
    # Synapse, whose pooled connections then each fail one request (Synapse's own way of
    # noticing), which a login may meet.  The release notes end with a reboot: Debian
    # 13's systemd starts 15/main and then Synapse, on trixie's Python, and there every
    # message is checked.
    steps.synapse_up(root, "Synapse answers after the full-upgrade")
    root.reboot()
    steps.check_cluster_booted(root)
    steps.synapse_up(root, "Synapse starts at the first boot of Debian 13")
    synapse_serves_from(root, OLD, "after the reboot into Debian 13")
    dropin_in_effect(root, OLD, "after the reboot into Debian 13")


def moved_to_17(root: Root, what: str) -> None:
    """Synapse serves every user and message from 17/main, tuned; 15/main is kept,
    stopped, beside it."""
    synapse_serves_from(root, NEW, what)
    old = clusters(root).get(OLD)
    root.check(
        old is not None and old[1] == "down" and old[0] != 5432,
        f"{what}: 15/main is kept, stopped, on another port",
        "15 main <port> down",
        repr(clusters(root)),
    )
    root.check(
        root.exists(f"/var/lib/postgresql/{OLD}/main/PG_VERSION"),
        f"{what}: 15/main's data is kept",
        "present",
        "absent",
    )
    dropin_in_effect(root, NEW, what)


def reconfigure(root: Root, what: str) -> str:
    return root.ok(
        ["dpkg-reconfigure", "-fnoninteractive", steps.PKG], what=what, env=NONINTERACTIVE
    ).output


# --- the journeys -----------------------------------------------------------------------


class OnDebian13:
    """The first steps of both journeys (not collected by itself: its name is not
    Test*); pytest orders a journey's steps by line, so these come first."""

    @pytest.fixture(scope="class")
    def root(self, journey_root, suite) -> Root:
        return journey_root(suite, booted=True, layer=release_layer.BELOW)

    def test_install_on_postgresql_15(self, root, debs):
        install_on_postgresql_15(root, debs)

    def test_full_upgrade_keeps_postgresql_15(self, root):
        full_upgrade_keeps_postgresql_15(root)


@pytest.mark.journey
@pytest.mark.parametrize("suite", SUITES, scope="class")
class TestReleaseUpgradeCommand(OnDebian13):
    """Debian 12 -> 13, then `matrix-synapse-setup upgrade-postgresql`."""

    def test_doctor_names_the_command(self, root):
        code, out = doctor(root)
        root.check(
            code == 1 and COMMAND in out,
            "doctor warns that Synapse is on a major trixie calls obsolete, and names the fix",
            f"exit 1, '{COMMAND}' in its output",
            f"exit {code}\n{out}",
        )

    def test_no_free_space_changes_nothing(self, root):
        target = f"/var/lib/postgresql/{NEW}"
        made = not root.exists(target)
        if made:
            root.ok(["install", "-d", "-o", "postgres", "-g", "postgres", target], what=target)
        root.ok(
            ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", target],
            what=f"a 1 MB file system at {target}",
        )
        root.ok(["chown", "postgres:postgres", target], what=f"{target} is postgres's")
        before = state(root)
        out = root.fails(
            ["matrix-synapse-setup", COMMAND],
            what=f"{COMMAND} with 1 MB where {NEW}/main would go",
            timeout=UPGRADE_TIMEOUT,
        )
        root.check(
            "free space" in out.output and "Traceback" not in out.output,
            "the refusal says there is not enough free space",
            "'free space', no traceback",
            out.output,
        )
        same_state(root, before, "a refused upgrade changes nothing")
        no_cluster(root, NEW, f"no {NEW}/main after the refusal")
        root.ok(["umount", target], what=f"unmounting {target}")
        if made:
            root.ok(["rmdir", target], what=f"removing {target} again")
        synapse_serves_from(root, OLD, "after the refusal")

    def test_dry_run_changes_nothing(self, root):
        before = state(root)
        root.ok(
            ["matrix-synapse-setup", COMMAND, "--dry-run"],
            what=f"{COMMAND} --dry-run",
            timeout=UPGRADE_TIMEOUT,
        )
        same_state(root, before, f"{COMMAND} --dry-run changes nothing")
        no_cluster(root, NEW, f"no {NEW}/main after the dry run")

    def test_upgrade_postgresql_moves_synapse_to_17(self, root):
        out = root.ok(
            ["matrix-synapse-setup", COMMAND],
            what=f"{COMMAND}: 15/main -> 17/main",
            timeout=UPGRADE_TIMEOUT,
        )
        root.check(
            f"pg_dropcluster {OLD} main" in out.output,
            "the command prints the line that drops the old cluster",
            f"pg_dropcluster {OLD} main",
            out.output,
        )
        moved_to_17(root, f"after {COMMAND}")
        # A client logs in and sends on the new cluster: a new user too.
        steps.synapse_chats(root, messages=3)
        steps.synapse_recheck(root, messages=1)

    def test_reconfigure_changes_nothing(self, root):
        pid = steps.synapse_pid(root)
        files = sha256(root, SNIPPET, PASSFILE, dropin(NEW))
        reconfigure(root, "dpkg-reconfigure after the cluster's upgrade")
        root.check(
            steps.synapse_pid(root) == pid,
            "the reconfigure does not restart Synapse",
            f"MainPID {pid}",
            steps.synapse_pid(root),
        )
        root.check(
            sha256(root, SNIPPET, PASSFILE, dropin(NEW)) == files,
            "the reconfigure leaves the snippet, the password file and 17's drop-in as they were",
            files,
            sha256(root, SNIPPET, PASSFILE, dropin(NEW)),
        )
        synapse_serves_from(root, NEW, "after the reconfigure")

    def test_dropped_old_cluster_leaves_nothing_of_ours(self, root):
        root.ok(["pg_dropcluster", OLD, "main"], what=f"the admin drops {OLD}/main")
        reconfigure(root, f"dpkg-reconfigure after {OLD}/main is dropped")
        left = root.run(["find", f"/etc/postgresql/{OLD}"]).output
        root.check(
            not root.exists(f"/etc/postgresql/{OLD}"),
            f"nothing of ours is left under /etc/postgresql/{OLD}",
            "the directory is gone",
            left,
        )
        synapse_serves_from(root, NEW, f"after {OLD}/main is dropped")
        dropin_in_effect(root, NEW, f"after {OLD}/main is dropped")


@pytest.mark.journey
@pytest.mark.parametrize("suite", SUITES, scope="class")
class TestReleaseUpgradeByHand(OnDebian13):
    """Debian 12 -> 13, then the cluster upgraded the way Debian documents it."""

    def test_pg_upgradecluster_carries_the_tuning(self, root):
        root.ok(["systemctl", "stop", SYNAPSE_UNIT], what="the admin stops Synapse")
        root.ok(
            ["pg_upgradecluster", OLD, "main"],
            what=f"pg_upgradecluster {OLD} main",
            timeout=UPGRADE_TIMEOUT,
        )
        root.ok(["systemctl", "start", SYNAPSE_UNIT], what="the admin starts Synapse")
        steps.synapse_up(root, "Synapse starts on 17/main")
        moved_to_17(root, "after pg_upgradecluster")

    def test_doctor_quiet_about_the_major(self, root):
        code, out = doctor(root)
        root.check(
            COMMAND not in out and code in (0, 1),
            f"doctor no longer names {COMMAND}: Synapse is on {NEW}",
            f"no '{COMMAND}'",
            f"exit {code}\n{out}",
        )
