"""PostgreSQL settings for Synapse (issue 11): the drop-in in the local cluster's conf.d.

In booted roots (a real systemd, postgresql@VER-main under it), on trixie and bookworm
(PostgreSQL 17 and 15): the drop-in is there after install, PostgreSQL reloaded it (what
can change live applies at once; shared_buffers and wal_buffers wait for a restart, which
the package leaves to the admin and says so), it restarts cleanly with it, an unchanged
reconfigure touches nothing, answering no removes the file, purge removes it; a cluster
that serves other databases is tuned only when the admin says yes explicitly.
"""

from __future__ import annotations

import pytest

from scripts.devtools import steps
from scripts.devtools.harness import Root

SUITES = ["trixie", "bookworm"]
suites = pytest.mark.parametrize("suite", SUITES)
DROPIN_NAME = "00-matrix-synapse-setup.conf"
# Never ours to set (tuning.NEVER): they trade data for speed.
NEVER = ("fsync", "full_page_writes", "synchronous_commit")


def dropin_path(root: Root) -> str:
    version = root.ok(["pg_lsclusters", "-h"], what="listing PostgreSQL clusters").output.split()[0]
    return f"/etc/postgresql/{version}/main/conf.d/{DROPIN_NAME}"


def started_at(root: Root) -> str:
    return steps.psql(root, "SELECT pg_postmaster_start_time()", what="PostgreSQL's start time")


def from_dropin(root: Root, path: str) -> dict[str, tuple[str, str]]:
    """The settings PostgreSQL took from *path*: name -> (value, pending_restart)."""
    out = steps.psql(
        root,
        f"SELECT name, setting, pending_restart FROM pg_settings WHERE sourcefile = '{path}'",  # noqa: S608
        what="reading pg_settings",
    )
    return {n: (v, p) for n, v, p in (line.split("|") for line in out.splitlines() if line)}


def file_values(text: str) -> dict[str, str]:
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition(" = ")
            values[name] = value.strip("'")
    return values


def reconfigure(root: Root, **answers: str) -> str:
    if answers:
        steps.preseed(root, **answers)
    return root.ok(
        ["dpkg-reconfigure", "-fnoninteractive", steps.PKG],
        what="dpkg-reconfigure -fnoninteractive",
        env=steps.NONINTERACTIVE,
    ).output


def setting(root: Root, name: str) -> tuple[str, str]:
    """(value, source file) of a setting, as PostgreSQL runs now."""
    out = steps.psql(
        root,
        f"SELECT current_setting('{name}'), coalesce(sourcefile, '') FROM pg_settings"  # noqa: S608
        f" WHERE name = '{name}'",
        what=f"reading {name}",
    )
    value, source = out.split("|")
    return value, source


@pytest.mark.smoke
@suites
def test_dropin_applied_restarts_cleanly_and_goes_on_purge(make_root, debs, suite):
    root = make_root(suite, postgresql=True, booted=True)
    unit = steps.postgresql_unit(root)
    before = started_at(root)
    steps.preseed(root, db_password="tuned for synapse")
    out = steps.apt_install(root, debs["current"]).output
    path = dropin_path(root)
    text = root.read(path)
    values = file_values(text)
    root.check(
        {"shared_buffers", "effective_cache_size", "work_mem", "jit"} <= values.keys()
        and not set(NEVER) & values.keys(),
        "the drop-in holds Synapse's settings, never fsync/full_page_writes/synchronous_commit",
        "shared_buffers, effective_cache_size, work_mem, jit; none of " + ", ".join(NEVER),
        text,
    )
    mode = root.ok(["stat", "-c", "%a %U:%G", path], what="the drop-in's mode").output.strip()
    root.check(mode == "644 postgres:postgres", "the drop-in is owned like postgresql.conf",
               "644 postgres:postgres", mode)  # fmt: skip
    root.check(started_at(root) == before, "the package did not restart PostgreSQL",
               before, started_at(root))  # fmt: skip
    root.check(setting(root, "jit") == ("off", path), "a live setting applies at once (reload)",
               f"jit off from {path}", str(setting(root, "jit")))  # fmt: skip
    pending = steps.psql(
        root,
        "SELECT string_agg(name, ',' ORDER BY name) FROM pg_settings WHERE pending_restart",
        what="settings waiting for a restart",
    )
    root.check(
        "shared_buffers" in pending.split(",") and f"systemctl restart {unit}" in out,
        "shared_buffers waits for a restart, and the run says how to do it",
        f"shared_buffers pending; 'systemctl restart {unit}' in the output",
        f"pending: {pending}\n{out}",
    )

    # It restarts cleanly with it.
    root.ok(["systemctl", "restart", unit], what=f"systemctl restart {unit}")
    active = root.run(["systemctl", "is-active", unit]).output.strip()
    root.check(active == "active", "PostgreSQL restarts cleanly with the drop-in", "active",
               active + "\n" + root.run(["journalctl", "-u", unit, "-n", "30"]).output)  # fmt: skip
    applied = from_dropin(root, path)
    root.check(
        applied.keys() == values.keys() and all(p == "f" for _, p in applied.values()),
        "after the restart PostgreSQL runs with every setting of the drop-in",
        ", ".join(sorted(values)),
        str(applied),
    )
    errors = steps.psql(root, "SELECT count(*) FROM pg_file_settings WHERE error IS NOT NULL",
                        what="configuration errors")  # fmt: skip
    root.check(errors == "0", "no configuration file errors", "0", errors)

    # An unchanged reconfigure touches nothing.
    before = started_at(root)
    reconfigure(root)
    root.check(started_at(root) == before, "an unchanged reconfigure leaves PostgreSQL alone",
               before, started_at(root))  # fmt: skip

    # No: the file goes, and what can change live is PostgreSQL's own again.
    out = reconfigure(root, tune_postgresql="false")
    root.check(not root.exists(path), "answering no removes the drop-in", f"no {path}", out)
    root.check(setting(root, "jit")[1] != path, "jit no longer comes from the drop-in",
               "another source", str(setting(root, "jit")))  # fmt: skip

    # Yes again, then purge: the file is removed; PostgreSQL is not restarted by it.
    reconfigure(root, tune_postgresql="true")
    root.check(root.exists(path), "answering yes again writes the drop-in", path, "missing")
    before = started_at(root)
    out = root.ok(["dpkg", "--purge", steps.PKG], what="dpkg --purge").output
    root.check(not root.exists(path), "purge removes the drop-in", f"no {path}", out)
    root.check(
        started_at(root) == before and "until it restarts" in out,
        "purge does not restart PostgreSQL, and says when the settings go",
        f"start time {before}; a note 'until it restarts'",
        f"{started_at(root)}\n{out}",
    )


@suites
def test_a_shared_cluster_is_tuned_only_on_an_explicit_yes(make_root, debs, suite):
    root = make_root(suite, postgresql=True, booted=True)
    steps.psql(root, "CREATE DATABASE other_app", what="another application's database")
    steps.preseed(root, db_password="shared cluster")
    out = steps.apt_install(root, debs["current"]).output
    path = dropin_path(root)
    root.check(
        not root.exists(path) and "also serves other databases (other_app)" in out,
        "a cluster with another database is not tuned by default, and the run says why",
        f"no {path}; a note naming other_app",
        out,
    )
    answer = root.ok(["debconf-show", steps.PKG], what="debconf-show").output
    root.check("tune-postgresql: false" in answer, "the answer shows what was applied: false",
               "tune-postgresql: false", answer)  # fmt: skip
    reconfigure(root, tune_postgresql="true")
    root.check(root.exists(path), "an explicit yes tunes the shared cluster", path, "missing")
