"""Issue 11, "done when": an unchanged `dpkg-reconfigure -fnoninteractive matrix-synapse-setup`
makes zero writes, calls no ucf and restarts nothing.

A booted root (harness.BootedRoot: systemd is PID 1) with PostgreSQL; our package with a
preseeded password on the local cluster, then the Synapse stand-in, so that the real Synapse
runs on our database under systemd.  ucf and ucfr, deb-systemd-invoke and invoke-rc.d are
diverted (dpkg-divert --local --rename) and replaced by wrappers that log their argv and
exec the real tool.  Then a picture is taken before and after the unchanged run:

- files: every directory, regular file and symlink under /etc, /var/lib, /var/cache/debconf,
  and /usr/share/matrix-synapse-setup, where the helper's byte-code is (inroot/picture.py:
  type, size, mode, owner, mtime and ctime in nanoseconds, sha256 or link target), less
  the trees that change on their own (EXCLUDED, each with its reason);
- the catalog: the role's pg_authid row and the database's pg_database row with their
  xmin (an UPDATE, even to the same values, makes a new row version), every
  pg_db_role_setting row with its xmin, the number of relations in the database and its
  public schema's row;
- debconf: the password question's value (empty: the package cleared it);
- services: MainPID, InvocationID and NRestarts of Synapse's unit and of the cluster's,
  and the service manager's UnitsLoadTimestamp (a daemon-reload moves it).

One thing is forgiven, and measured rather than assumed: dpkg-reconfigure itself (debconf)
saves its database at the end of every run, same bytes, new times (see PROBE).

Everything must be identical and the wrappers' log empty.  Then, as a negative control in
the same root, one answer changes for real (a new preseeded password): the same pictures
must now show the writes (password file, snippet, ucf called, the role's password, Synapse
restarted), which proves that they can see them.  A failure lists everything that moved.

In quick mode this runs on both releases (smoke): what an unchanged run writes depends on
each release's debconf, ucf, systemd and Python (byte-code), so one release proves
nothing for the other.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from scripts.devtools import steps
from scripts.devtools.harness import DEBS, HELPERS, Root
from scripts.devtools.steps import (
    ADVERSARIAL,
    NONINTERACTIVE,
    PASSFILE,
    PKG,
    SNIPPET,
    SYNAPSE_UNIT,
)

SUITES = ["trixie", "bookworm"]
suites = pytest.mark.parametrize("suite", SUITES)
smoke = pytest.mark.smoke
NEW_PASSWORD = "n3w 'unchanged-test' \\ $HOME %s :@ ßø"

TREES = (
    "/etc",
    "/var/lib",
    "/var/cache/debconf",
    "/usr/share/matrix-synapse-setup",
)
# Trees that change by themselves, with no command run: two pictures taken some seconds
# apart differ there (the test checks that nothing else does: idle_check).
EXCLUDED = (
    # The cluster's data directory: WAL, checkpoints, autovacuum, statistics.  What the
    # package may change in PostgreSQL is judged through the catalog instead.
    "/var/lib/postgresql",
    # Synapse's own data (media store, its signing key's use, ...): written by Synapse.
    "/var/lib/matrix-synapse",
)
WRAPPED = {  # tool -> the path dpkg knows it by (the same on bookworm and trixie)
    "ucf": "/usr/bin/ucf",
    "ucfr": "/usr/bin/ucfr",
    "deb-systemd-invoke": "/usr/bin/deb-systemd-invoke",
    "invoke-rc.d": "/usr/sbin/invoke-rc.d",
}
CALLS = "/run/mss-test-calls.log"  # the wrappers' log (/run: not in the picture)
UNIT_PROPS = ("MainPID", "InvocationID", "NRestarts", "ActiveEnterTimestampMonotonic")
# The service manager's own property that `systemctl daemon-reload` moves (measured on
# systemd 252 and 257: the generators' and the startup's unit-load timestamps do not).
MANAGER_PROPS = ("UnitsLoadTimestampMonotonic",)
IDLE_SECONDS = 15

# debconf's own writes.  dpkg-reconfigure saves debconf's database when it ends
# (Debconf::Db->save), and debconf's cache marks an item dirty on any INPUT, SET or flag,
# with the same value or not: config.dat, passwords.dat and templates.dat (with their
# -old copies and their directory) get new times and the same bytes on every
# dpkg-reconfigure of any package that asks through debconf.  The test measures that with
# PROBE, a package that only asks (INPUT, GO, GET), and forgives exactly the fields that
# moved for it, in /var/cache/debconf only: the content, size, mode and owner of debconf's
# files must still be unchanged after our run.
PROBE = "mss-debconf-probe"
PROBE_FILES = {
    "control": f"""Package: {PROBE}
Version: 1.0
Architecture: all
Maintainer: matrix-synapse-setup tests <tests@example.org>
Description: test-only package that asks through debconf and does nothing else
 test_unchanged.py measures what dpkg-reconfigure itself writes.
""",
    "templates": f"""Template: {PROBE}/name
Type: string
Default: synapse
Description: A string question

Template: {PROBE}/password
Type: password
Description: A password question
""",
    "config": f"""#!/bin/sh
set -e
. /usr/share/debconf/confmodule
db_input low {PROBE}/name || true
db_input medium {PROBE}/password || true
db_go || true
""",
    "postinst": f"""#!/bin/sh
set -e
. /usr/share/debconf/confmodule
db_get {PROBE}/name
""",
}
FORGIVABLE_TREE = "/var/cache/debconf"
FORGIVABLE_FIELDS = {"mtime_ns", "ctime_ns"}

WRAPPER = """#!/bin/sh
# test_unchanged.py: log this call of {tool}, then run the real one (diverted).
{{ printf '%s' '{tool}'; for arg in "$@"; do printf ' %s' "$arg"; done; echo; }} \\
    >>{log} 2>/dev/null || :
exec {real} "$@"
"""

CATALOG_SQL = """
SELECT json_build_object(
  'role', (SELECT json_build_object('xmin', a.xmin::text, 'row', to_jsonb(a))
           FROM pg_authid a WHERE a.rolname = 'synapse'),
  -- datfrozenxid and datminmxid: vacuum advances them in place, by itself.
  'database', (SELECT json_build_object(
                 'xmin', d.xmin::text, 'row', to_jsonb(d) - 'datfrozenxid' - 'datminmxid')
               FROM pg_database d WHERE d.datname = 'synapse'),
  'settings', (SELECT coalesce(json_agg(json_build_object(
                 'xmin', s.xmin::text, 'database', s.setdatabase, 'role', s.setrole,
                 'config', s.setconfig) ORDER BY s.setdatabase, s.setrole), '[]'::json)
               FROM pg_db_role_setting s)
)
"""
CATALOG_DB_SQL = """
SELECT json_build_object(
  'relations', (SELECT coalesce(json_agg(c.oid::regclass::text || ' (' || c.relkind::text || ')'
                                         ORDER BY c.oid::regclass::text), '[]'::json)
                FROM pg_class c WHERE c.relpersistence <> 't'),
  'public schema', (SELECT json_build_object(
                      'xmin', n.xmin::text, 'owner', n.nspowner::regrole::text,
                      'acl', n.nspacl::text)
                    FROM pg_namespace n WHERE n.nspname = 'public')
)
"""


# --- pictures ----------------------------------------------------------------------------


def file_picture(root: Root) -> dict[str, dict]:
    cmd = ["python3", f"{HELPERS}/picture.py"]
    for path in EXCLUDED:
        cmd += ["--exclude", path]
    out = root.ok([*cmd, *TREES], what="taking a picture of the files").output
    return json.loads(out)


def describe(item: dict) -> str:
    kind = item.get("type", "?")
    if kind == "file":
        return f"file {item['mode']} {item['uid']}:{item['gid']} {item['size']} bytes"
    if kind == "link":
        return f"link -> {item['target']}"
    return f"{kind} {item.get('mode', '')}".rstrip()


def short(key: str, value) -> str:
    if key == "sha256":
        return str(value)[:12]
    return str(value)


def moved_fields(before: dict[str, dict], after: dict[str, dict]) -> set[tuple[str, str]]:
    """(path, field) for every field that differs on a path in both pictures."""
    return {
        (path, key)
        for path in before.keys() & after.keys()
        for key in before[path].keys() | after[path].keys()
        if before[path].get(key) != after[path].get(key)
    }


def file_diff(
    before: dict[str, dict], after: dict[str, dict], forgiven: set[tuple[str, str]] = frozenset()
) -> list[str]:
    """What differs between two pictures, one line per path; FORGIVEN (path, field)
    pairs are left out (debconf's own writes)."""
    lines = []
    for path in sorted(before.keys() | after.keys()):
        old, new = before.get(path), after.get(path)
        if old == new:
            continue
        if old is not None and new is not None:
            old = {k: v for k, v in old.items() if (path, k) not in forgiven}
            new = {k: v for k, v in new.items() if (path, k) not in forgiven}
            if old == new:
                continue
        if old is None:
            lines.append(f"created  {path} ({describe(new)})")
        elif new is None:
            lines.append(f"removed  {path} ({describe(old)})")
        else:
            fields = [
                f"{key} {short(key, old.get(key))} -> {short(key, new.get(key))}"
                for key in sorted(old.keys() | new.keys())
                if old.get(key) != new.get(key)
            ]
            lines.append(f"changed  {path}: {', '.join(fields)}")
    return lines


def catalog(root: Root) -> dict:
    cluster = json.loads(steps.psql(root, CATALOG_SQL, what="reading the catalog"))
    database = json.loads(
        steps.psql(root, CATALOG_DB_SQL, "synapse", what="reading database synapse's catalog")
    )
    return {**cluster, **database}


def catalog_diff(before: dict, after: dict) -> list[str]:
    lines = []
    for key in sorted(before.keys() | after.keys()):
        old, new = before.get(key), after.get(key)
        if old == new:
            continue
        if isinstance(old, list) and isinstance(new, list) and key == "relations":
            gone, made = sorted(set(old) - set(new)), sorted(set(new) - set(old))
            lines.append(f"catalog relations: {len(old)} -> {len(new)}")
            lines += [f"catalog relation created: {name}" for name in made]
            lines += [f"catalog relation dropped: {name}" for name in gone]
            continue
        lines.append(
            f"catalog {key}: {json.dumps(old, sort_keys=True)}\n"
            f"      -> {json.dumps(new, sort_keys=True)}"
        )
    return lines


def services(root: Root) -> dict[str, dict[str, str]]:
    pg_unit = steps.postgresql_unit(root)
    manager = root.ok(
        ["systemctl", "show", *[f"--property={name}" for name in MANAGER_PROPS]],
        what="asking systemd about itself",
    ).output
    return {
        SYNAPSE_UNIT: steps.unit_properties(root, SYNAPSE_UNIT, *UNIT_PROPS),
        pg_unit: steps.unit_properties(root, pg_unit, *UNIT_PROPS),
        "systemd (manager)": dict(
            line.split("=", 1) for line in manager.splitlines() if "=" in line
        ),
    }


def services_diff(before: dict, after: dict) -> list[str]:
    lines = []
    for unit in sorted(before.keys() | after.keys()):
        old, new = before.get(unit, {}), after.get(unit, {})
        for key in sorted(old.keys() | new.keys()):
            if old.get(key) != new.get(key):
                lines.append(f"service {unit}: {key} {old.get(key)} -> {new.get(key)}")
    return lines


def debconf_passwords(root: Root) -> dict[str, str]:
    """The values of our password questions in debconf's passwords.dat (read as a file:
    debconf-communicate could write its database)."""
    values, name = {}, None
    for line in root.read("/var/cache/debconf/passwords.dat").splitlines():
        if line.startswith("Name: "):
            name = line[len("Name: ") :]
        elif line.startswith("Value:") and name and name.startswith(f"{PKG}/"):
            values[name] = line[len("Value:") :].strip()
    return values


def calls(root: Root) -> list[str]:
    out = root.ok(f"cat {CALLS} 2>/dev/null || :", what="reading the wrappers' log").output
    return [line for line in out.splitlines() if line.strip()]


def picture(root: Root) -> dict:
    """Everything the test compares, files last (after the reads that run commands)."""
    return {
        "catalog": catalog(root),
        "services": services(root),
        "debconf": debconf_passwords(root),
        "files": file_picture(root),
    }


def picture_diff(
    before: dict, after: dict, forgiven: set[tuple[str, str]] = frozenset()
) -> list[str]:
    lines = file_diff(before["files"], after["files"], forgiven)
    lines += catalog_diff(before["catalog"], after["catalog"])
    lines += services_diff(before["services"], after["services"])
    if before["debconf"] != after["debconf"]:
        lines.append(f"debconf passwords.dat values: {before['debconf']} -> {after['debconf']}")
    return lines


# --- steps -------------------------------------------------------------------------------


def wrap_tools(root: Root) -> None:
    """Divert each tool in WRAPPED and put a logging wrapper in its place."""
    for tool, path in WRAPPED.items():
        real = f"{path}.distrib"
        root.ok(
            ["dpkg-divert", "--local", "--rename", "--divert", real, "--add", path],
            what=f"diverting {path}",
        )
        root.write(path, WRAPPER.format(tool=tool, log=CALLS, real=real), 0o755)
    root.ok(["rm", "-f", CALLS], what="emptying the wrappers' log")
    # The wrappers work: a harmless call of each is logged (ucf --help, ucfr --help,
    # invoke-rc.d --help and deb-systemd-invoke's usage all just print and exit).
    for tool in WRAPPED:
        root.run([tool, "--help"])
    logged = [line.split()[0] for line in calls(root)]
    root.check(
        logged == list(WRAPPED),
        "each wrapper logs its call and runs the real tool",
        " ".join(WRAPPED),
        " ".join(logged) or "nothing logged",
    )
    root.ok(["rm", "-f", CALLS], what="emptying the wrappers' log")


def reconfigure(root: Root, what: str, package: str = PKG) -> str:
    cmd = ["dpkg-reconfigure", "-fnoninteractive", package]
    return root.ok(cmd, what=what, env=NONINTERACTIVE).output


def debconf_own_writes(root: Root, workdir: Path) -> set[tuple[str, str]]:
    """What dpkg-reconfigure writes by itself (see PROBE): the (path, field) pairs that
    move when a package that only asks is reconfigured, in steady state."""
    tree = workdir / PROBE
    (tree / "DEBIAN").mkdir(parents=True)
    for name, text in PROBE_FILES.items():
        (tree / "DEBIAN" / name).write_text(text)
        (tree / "DEBIAN" / name).chmod(0o755 if name in ("config", "postinst") else 0o644)
    deb = workdir / f"{PROBE}_1.0_all.deb"
    cmd = ["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(tree), str(deb)]
    subprocess.run(cmd, check=True, capture_output=True)
    root.put_file(deb, f"{DEBS}/{deb.name}")
    root.ok(["dpkg", "-i", f"{DEBS}/{deb.name}"], what=f"installing {PROBE}", env=NONINTERACTIVE)
    reconfigure(root, f"dpkg-reconfigure {PROBE} (warm-up)", PROBE)
    before = file_picture(root)
    reconfigure(root, f"dpkg-reconfigure {PROBE}", PROBE)
    after = file_picture(root)
    moved = moved_fields(before, after)
    other = file_diff(
        before,
        after,
        forgiven={
            (path, key)
            for path, key in moved
            if path.startswith(FORGIVABLE_TREE) and key in FORGIVABLE_FIELDS
        },
    )
    root.check(
        not other,
        f"dpkg-reconfigure of {PROBE} (a package that only asks) writes only the times of "
        f"debconf's files in {FORGIVABLE_TREE}",
        "no other change",
        "\n".join(other),
    )
    return moved


def settle(root: Root, timeout: float = 600) -> None:
    """Wait until Synapse has run its background updates: they create and drop tables
    and indexes in its database by themselves."""
    deadline = time.monotonic() + timeout
    sql = "SELECT count(*) FROM background_updates"
    while (left := steps.psql(root, sql, "synapse", what="Synapse's background updates")) != "0":
        if time.monotonic() > deadline:
            root.fail(
                "Synapse finishes its background updates",
                "none left",
                f"{left} left after {timeout:.0f} s",
            )
        time.sleep(2)


def idle_check(root: Root) -> dict:
    """Two pictures IDLE_SECONDS apart with nothing run in between must be identical:
    otherwise a difference after dpkg-reconfigure would prove nothing (add what changes
    on its own to EXCLUDED, with its reason).  Returns the second picture."""
    first = picture(root)
    time.sleep(IDLE_SECONDS)
    second = picture(root)
    moved = picture_diff(first, second)
    root.check(
        not moved,
        f"nothing changes on its own in {IDLE_SECONDS} s (else exclude it, with a reason)",
        "two identical pictures",
        "\n".join(moved),
    )
    return second


@smoke
@suites
def test_unchanged_reconfigure_writes_nothing(make_root, debs, suite, tmp_path):
    """dpkg-reconfigure with the same answers writes no file, calls no ucf or ucfr, changes
    no catalog row and restarts nothing; a new password then shows all of those."""
    root = make_root(suite, postgresql=True, booted=True)
    steps.preseed(root, db_password=ADVERSARIAL)
    steps.apt_install(root, debs["current"])
    steps.apt_install(root, debs["synapse"], what="installing Synapse (stand-in package)")
    steps.synapse_chats(root)
    steps.synapse_on_postgresql(root)
    steps.password_not_in_debconf(root, ADVERSARIAL)
    wrap_tools(root)
    debconf_writes = debconf_own_writes(root, tmp_path)

    # Warm-up: a run after the install could still write missing byte-code (matrix_
    # synapse_setup/bytecode.py; the install's own runs normally wrote it all).  The test
    # proves that a steady-state unchanged run writes nothing, so it pictures after one.
    reconfigure(root, "dpkg-reconfigure with the same answers (warm-up)")
    steps.synapse_up(root, "Synapse still answers after the warm-up")
    root.ok(["rm", "-f", CALLS], what="emptying the wrappers' log")
    settle(root)

    before = idle_check(root)
    root.check(
        all(value == "" for value in before["debconf"].values()) and before["debconf"],
        "debconf holds no password for our questions",
        "empty values",
        repr(before["debconf"]),
    )
    out = reconfigure(root, "dpkg-reconfigure with the same answers")
    after = picture(root)
    problems = picture_diff(before, after, debconf_writes)
    problems += [f"called: {line}" for line in calls(root)]
    steps.synapse_up(root, "Synapse still answers after the unchanged run")
    unchanged_report = ""
    if problems:
        unchanged_report = (
            "an unchanged dpkg-reconfigure changed the system:\n  "
            + "\n  ".join(problems)
            + "\n(not counted: the times debconf itself moves on "
            + ", ".join(sorted({path for path, _ in debconf_writes}))
            + ")"
            + "\n--- its output ---\n"
            + out.strip()
        )

    # Negative control: a new password, for real.  The same pictures must see the writes.
    root.ok(["rm", "-f", CALLS], what="emptying the wrappers' log")
    before = picture(root)
    steps.preseed(root, db_password=NEW_PASSWORD)
    out = reconfigure(root, "dpkg-reconfigure with a new (preseeded) password")
    after = picture(root)
    seen = picture_diff(before, after)
    logged = calls(root)
    files = file_diff(before["files"], after["files"])
    expected = {
        f"{PASSFILE} rewritten": any(f" {PASSFILE}:" in line for line in files),
        f"{SNIPPET} rewritten": any(f" {SNIPPET}:" in line for line in files),
        "ucf called": any(line.startswith("ucf ") for line in logged),
        "Synapse restarted through deb-systemd-invoke": any(
            line.startswith("deb-systemd-invoke ") and SYNAPSE_UNIT in line for line in logged
        ),
        "the role's pg_authid row changed (rolpassword, xmin)": (
            before["catalog"]["role"]["xmin"] != after["catalog"]["role"]["xmin"]
            and before["catalog"]["role"]["row"]["rolpassword"]
            != after["catalog"]["role"]["row"]["rolpassword"]
        ),
        "Synapse's unit restarted (MainPID, InvocationID)": all(
            before["services"][SYNAPSE_UNIT][key] != after["services"][SYNAPSE_UNIT][key]
            for key in ("MainPID", "InvocationID")
        ),
        "debconf's password cleared again": all(value == "" for value in after["debconf"].values()),
    }
    # The manager's timestamps see a daemon-reload (the run above need not do one).
    services_before = services(root)
    root.ok(["systemctl", "daemon-reload"], what="systemctl daemon-reload (control)")
    manager = "systemd (manager)"
    expected["a daemon-reload moves the manager's timestamps"] = all(
        services_before[manager][key] != services(root)[manager][key] for key in MANAGER_PROPS
    )
    missed = [name for name, ok in expected.items() if not ok]
    control_report = ""
    if missed:
        control_report = (
            "the negative control (a new password) did not show: "
            + "; ".join(missed)
            + "\n  what it saw:\n  "
            + "\n  ".join(seen + [f"called: {line}" for line in logged])
            + "\n--- its output ---\n"
            + out.strip()
        )
    steps.check_snippet(root, password=NEW_PASSWORD, group="matrix-synapse")
    steps.synapse_recheck(root)
    root.check(
        not unchanged_report and not control_report,
        "an unchanged dpkg-reconfigure writes nothing, calls no ucf, restarts nothing; "
        "a changed one is seen doing so",
        "no change from the unchanged run; every expected change from the new password",
        "\n\n".join(text for text in (unchanged_report, control_report) if text),
    )
