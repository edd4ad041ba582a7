"""PostgreSQL major upgrades against real parts of this host: the pg_upgradecluster hook
run as postgres on a configuration tree of its own (postgresql-common's
PG_CLUSTER_CONF_ROOT), and its shell conffile under run-parts; doctor's collation query
and upgrade-postgresql's refresh against the throwaway cluster.  The real
pg_upgradecluster needs two majors installed: the release-upgrade system test runs it."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from matrix_synapse_setup.commands import doctor
from matrix_synapse_setup.commands.doctor import versions
from matrix_synapse_setup.commands.doctor.report import OK, WARN
from matrix_synapse_setup.core.settings import Settings
from matrix_synapse_setup.postgres import tuning
from matrix_synapse_setup.postgres import upgrade as pg
from matrix_synapse_setup.postgres.provision import Superuser, postgres_user
from matrix_synapse_setup.synapse.porting import KEY_TABLES, postgres_counts

pytestmark = pytest.mark.integration

TREE = Path(__file__).resolve().parents[2]
HOOK = TREE / "debian" / "pg_upgradecluster.d" / "matrix-synapse-setup"
HELPER = TREE / "scripts" / "pg-upgradecluster-hook"
PASSWORD = "upgrade's pass:word"


@pytest.fixture
def conf_tree():
    """/etc/postgresql as pg_upgradecluster leaves it at the init phase: 15/main with our
    drop-in, 17/main made (postgresql.conf copied, with include_dir and its own data
    directory), all postgres's, in a directory postgres can reach."""
    top = Path(tempfile.mkdtemp(prefix="mss-pgconf-"))
    os.chmod(top, 0o755)
    postgres = pwd.getpwnam("postgres")
    etc, data = top / "etc", top / "data"
    for version in ("15", "17"):
        confdir = etc / version / "main"
        (confdir / "conf.d").mkdir(parents=True)
        (data / version / "main").mkdir(parents=True)
        (confdir / "postgresql.conf").write_text(
            f"data_directory = '{data / version / 'main'}'\nport = 5432\n"
            "include_dir = 'conf.d'\n"
        )
    (etc / "15" / "main" / "conf.d" / tuning.DROPIN_NAME).write_text("shared_buffers = 1GB\n")
    for path in [top, *top.rglob("*")]:
        os.chown(path, postgres.pw_uid, postgres.pw_gid)
    yield etc
    shutil.rmtree(top)


def run_hook(etc: Path, *args: str, script: Path = HELPER) -> subprocess.CompletedProcess:
    """The hook as pg_upgradecluster runs it: as postgres, PATH reset, the conf root in
    postgresql-common's variable; our tree's Python on the path."""
    return subprocess.run(
        ["/usr/sbin/runuser", "-u", "postgres", "--", str(script), *args],
        env={
            "PATH": "/bin:/usr/bin",
            "PG_CLUSTER_CONF_ROOT": str(etc),
            "PYTHONPATH": str(TREE),
            "LC_ALL": "C.UTF-8",
        },
        capture_output=True,
        text=True,
        check=False,
        cwd="/",
    )


def test_the_hook_carries_the_dropin_resized_and_postgres_s(conf_tree):
    result = run_hook(conf_tree, "15", "main", "17", "init")
    assert result.returncode == 0, result.stderr
    new = tuning.read_cluster(conf_tree / "17" / "main")
    dropin = new.dropin
    assert dropin.is_file(), result.stderr
    st = dropin.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (
        pwd.getpwnam("postgres").pw_uid,
        pwd.getpwnam("postgres").pw_gid,
        0o644,
    )
    # Re-sized for the new cluster: exactly what a configure would write, so it is current.
    assert dropin.read_text() == tuning.text_for(new)
    assert tuning.current(new, True)
    assert str(dropin) in result.stderr and len(result.stderr.splitlines()) == 1
    assert not list(dropin.parent.glob(".*.tmp"))  # atomic: no temporary file left
    # Again (a second init, or finish): nothing changes, nothing fails.
    before = dropin.stat().st_mtime_ns
    assert run_hook(conf_tree, "15", "main", "17", "init").returncode == 0
    assert run_hook(conf_tree, "15", "main", "17", "finish").returncode == 0
    assert dropin.stat().st_mtime_ns == before


def test_the_hook_leaves_an_untuned_cluster_alone(conf_tree):
    (conf_tree / "15" / "main" / "conf.d" / tuning.DROPIN_NAME).unlink()
    result = run_hook(conf_tree, "15", "main", "17", "init")
    assert (result.returncode, result.stderr) == (0, "")
    assert not (conf_tree / "17" / "main" / "conf.d" / tuning.DROPIN_NAME).exists()


def test_a_problem_is_a_warning_and_never_fails_the_upgrade(conf_tree):
    # The new cluster's conf.d is not postgres's to write: the hook cannot write there.
    conf_d = conf_tree / "17" / "main" / "conf.d"
    os.chown(conf_d, 0, 0)
    conf_d.chmod(0o755)
    result = run_hook(conf_tree, "15", "main", "17", "init")
    assert result.returncode == 0
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "warning" in result.stderr and "dpkg-reconfigure matrix-synapse-setup" in result.stderr
    assert not (conf_d / tuning.DROPIN_NAME).exists()


def test_the_conffile_is_silent_when_the_package_is_removed(conf_tree, tmp_path):
    """Removed, not purged: the conffile stays, its helper is gone."""
    script = tmp_path / "hook"
    script.write_text(
        HOOK.read_text().replace(
            "/usr/share/matrix-synapse-setup/pg-upgradecluster-hook", str(tmp_path / "gone")
        )
    )
    script.chmod(0o755)
    result = subprocess.run(
        [str(script), "15", "main", "17", "init"], capture_output=True, text=True, check=False
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_the_conffile_warns_when_its_helper_breaks(tmp_path):
    broken = tmp_path / "broken"
    broken.write_text("#!/bin/sh\nexit 3\n")
    broken.chmod(0o755)
    script = tmp_path / "hook"
    script.write_text(
        HOOK.read_text().replace(
            "/usr/share/matrix-synapse-setup/pg-upgradecluster-hook", str(broken)
        )
    )
    script.chmod(0o755)
    result = subprocess.run(
        [str(script), "15", "main", "17", "init"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0
    assert result.stderr.count("\n") == 1
    assert "17/main" in result.stderr and "dpkg-reconfigure matrix-synapse-setup" in result.stderr


def test_run_parts_runs_the_conffile_by_its_name():
    """pg_upgradecluster runs the directory with run-parts --lsbsysinit: a name with a dot
    (or a wrong character) would be skipped silently."""
    listed = subprocess.run(
        ["run-parts", "--test", "--lsbsysinit", str(HOOK.parent)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert listed == [str(HOOK)]


# --- the postinst's clean-up of what a dropped cluster left ----------------------------


def test_an_orphaned_dropin_goes_with_the_directories_it_kept(conf_tree):
    old = conf_tree / "15" / "main"
    # pg_dropcluster 15 main: its files go, a conf.d that is not empty stays.
    for name in ("postgresql.conf",):
        (old / name).unlink()
    keep = conf_tree / "17" / "main" / "conf.d" / "50-admin.conf"
    keep.write_text("work_mem = 8MB\n")
    (conf_tree / "17" / "main" / "conf.d" / tuning.DROPIN_NAME).write_text("x\n")
    found = tuning.orphaned_dropins(conf_tree)
    assert found == (old / "conf.d" / tuning.DROPIN_NAME,)  # 17/main still exists
    removed = tuning.remove_orphan(found[0])
    assert removed == [
        str(old / "conf.d" / tuning.DROPIN_NAME),
        str(old / "conf.d"),
        str(old),
        str(conf_tree / "15"),
    ]
    assert not (conf_tree / "15").exists() and keep.exists()
    assert tuning.orphaned_dropins(conf_tree) == ()


def test_an_orphan_s_directories_stay_when_something_else_is_in_them(conf_tree):
    old = conf_tree / "15" / "main"
    (old / "postgresql.conf").unlink()
    (old / "conf.d" / "zz-admin.conf").write_text("work_mem = 8MB\n")
    (conf_tree / "15" / "other").mkdir()
    [found] = tuning.orphaned_dropins(conf_tree)
    assert tuning.remove_orphan(found) == [str(found)]
    assert (old / "conf.d" / "zz-admin.conf").exists()


def test_the_tuned_cluster_is_the_one_the_socket_reaches(conf_tree):
    """Two clusters on one port in two socket directories: a socket host picks its own."""
    other = conf_tree / "17" / "main" / "postgresql.conf"
    other.write_text(other.read_text() + "unix_socket_directories = '/tmp/elsewhere'\n")
    by_port = tuning.cluster_for_port(5432, conf_tree)
    assert by_port.label == "17/main"  # the newest, when neither runs
    assert tuning.cluster_for_port(5432, conf_tree, socket_dir="/run/postgresql").label == "15/main"
    assert tuning.cluster_for_port(5432, conf_tree, socket_dir="/tmp/elsewhere").label == "17/main"
    assert tuning.cluster_for_port(5432, conf_tree, socket_dir="/nowhere") is None


# --- collations and row counts on the real cluster ---------------------------------------


def versioned_locale() -> str | None:
    """A locale whose collation glibc versions (C and C.* have none)."""
    found = subprocess.run(["locale", "-a"], capture_output=True, text=True, check=False)
    for name in found.stdout.split():
        if name.lower().endswith((".utf8", ".utf-8")) and not name.startswith("C."):
            return name
    return None


@pytest.fixture
def versioned(cluster):
    """A database whose collation has a version (bootstrap generates fr_FR.UTF-8),
    dropped after."""
    locale = versioned_locale()
    if locale is None:
        pytest.skip("no locale but C here: run scripts/bootstrap (it generates fr_FR.UTF-8)")
    name = "mss_collated"
    with cluster.connect() as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE template0 LOCALE '{locale}' ENCODING 'UTF8'")
    try:
        yield name
    finally:
        with cluster.connect() as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name}")


class FakeFacts(doctor.facts.Facts):
    """doctor's shared reads, with the settings given (no snippet on disk)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(None, timeout=5)
        self._settings = settings

    def settings(self) -> Settings:
        return self._settings


def test_doctor_sees_a_changed_collation_version_and_the_refresh_fixes_it(
    cluster, provisioned, versioned
):
    facts = FakeFacts(provisioned)
    if facts.server()["version"] < pg.COLLATIONS_MIN_VERSION:
        pytest.skip("PostgreSQL before 15 records no collation version")
    row = versions.check_collation(facts)
    assert row.status == OK, row
    [(name, recorded, actual)] = [r for r in versions.collation_rows(facts) if r[0] == versioned]
    assert recorded and recorded == actual, "this locale has no version here: nothing to test"
    with cluster.connect() as conn:  # what a newer glibc looks like to PostgreSQL
        conn.execute("UPDATE pg_database SET datcollversion = '0.1' WHERE datname = %s", (name,))
    row = versions.check_collation(FakeFacts(provisioned))
    assert row.status == WARN and f"{name}: 0.1 recorded, {actual} now" in row.detail
    assert f'ALTER DATABASE "{name}" REFRESH COLLATION VERSION' in row.fix
    answer = Superuser.start(postgres_user(), pg.cluster_answer).ask(
        {"what": "refresh", "socket_dir": cluster.socket_dir, "port": cluster.port}
    )
    assert answer == {"refreshed": [name]}
    assert versions.check_collation(FakeFacts(provisioned)).status == OK


def test_the_cluster_s_size_is_every_database_s(cluster, provisioned):
    answer = Superuser.start(postgres_user(), pg.cluster_answer).ask(
        {"what": "facts", "socket_dir": cluster.socket_dir, "port": cluster.port}
    )
    [(total,)] = cluster.query("SELECT sum(pg_database_size(oid)) FROM pg_database")
    assert answer["size"] == int(total) and answer["version"] >= 140000


def test_row_counts_of_synapse_s_key_tables(cluster, provisioned):
    with cluster.connect(provisioned.dbname) as conn:
        conn.execute(f"SET ROLE {provisioned.user}")
        conn.execute("CREATE TABLE users (name text)")
        conn.execute("INSERT INTO users VALUES ('a'), ('b')")
    before = postgres_counts(provisioned, list(KEY_TABLES))
    assert before["users"] == 2 and before["events"] == -1  # no such table here
    assert pg.count_differences(before, postgres_counts(provisioned, list(KEY_TABLES))) == []
    with cluster.connect(provisioned.dbname) as conn:
        conn.execute("DELETE FROM users WHERE name = 'a'")
    after = postgres_counts(provisioned, list(KEY_TABLES))
    assert pg.count_differences(before, after) == ["users: 2 before, 1 after"]


# --- upgrade-postgresql's measurements and its way back, on real parts -------------------


@pytest.fixture
def layout(cluster, tmp_path):
    """The throwaway cluster as Debian's layout shows it: 15/main in a tree of its own,
    naming its data directory, port and socket directory."""
    etc = tmp_path / "etc"
    confdir = etc / cluster.bindir.parent.name / "main"
    (confdir / "conf.d").mkdir(parents=True)
    (confdir / "postgresql.conf").write_text(
        f"data_directory = '{cluster.datadir}'\nport = {cluster.port}\n"
        f"unix_socket_directories = '{cluster.socket_dir}'\ninclude_dir = 'conf.d'\n"
    )
    return etc


def test_upgrade_postgresql_measures_and_plans(cluster, provisioned, layout, monkeypatch):
    from matrix_synapse_setup.commands import backup, upgrade_postgresql
    from matrix_synapse_setup.synapse.config import human_size

    monkeypatch.setattr(backup, "our_database", lambda: provisioned)
    version = cluster.bindir.parent.name
    monkeypatch.setattr(pg, "installed_majors", lambda: [version])
    facts = upgrade_postgresql.measure(layout)
    assert pg.plan_upgrade(facts) is None  # one major installed: nothing to do

    monkeypatch.setattr(pg, "installed_majors", lambda: [version, "99"])
    facts = upgrade_postgresql.measure(layout)
    assert facts.running and facts.cluster.label == f"{version}/main"
    [(total,)] = cluster.query("SELECT sum(pg_database_size(oid)) FROM pg_database")
    assert facts.cluster_size == int(total) and facts.database_size > 0
    data, dump = facts.needs
    assert data.path == Path("/var/lib/postgresql") or data.path.exists()
    assert data.need == pg.data_need(int(total)) and data.free > 0
    plan = pg.plan_upgrade(facts)
    assert plan.new_version == "99" and plan.drop_line() == f"pg_dropcluster {version} main"
    lines = plan.describe(human_size)
    assert len(lines) == 8 and human_size(int(total)) in lines[3]

    # Too little room: refused, with the words the release-upgrade test looks for.
    tight = [n._replace(free=n.need - 1) for n in facts.needs]
    with pytest.raises(Exception) as refused:
        pg.refuse_space(pg.space_problems(tight), human_size)
    assert "free space" in str(refused.value)


def test_upgrade_postgresql_refuses_a_remote_server(monkeypatch):
    from matrix_synapse_setup.commands import backup, upgrade_postgresql
    from matrix_synapse_setup.core.errors import SetupError

    remote = Settings(host="db.example.org", port=5432, dbname="s", user="s", password="p")
    monkeypatch.setattr(backup, "our_database", lambda: remote)
    with pytest.raises(SetupError, match="db.example.org, not a cluster of this machine"):
        upgrade_postgresql.measure()


def test_the_way_back_gives_the_old_cluster_its_port_and_start_conf(tmp_path, monkeypatch):
    """What pg_upgradecluster leaves when a later step fails: the old cluster on another
    port, manual; the new one on Synapse's port.  The way back (with postgresql-common's
    own pg_conftool) swaps them back; nothing runs here, so starting the old cluster is
    the one thing that fails, and is said."""
    from matrix_synapse_setup.commands import upgrade_postgresql

    etc = tmp_path / "etc"
    for version, port, start in (("15", 5433, "manual\n"), ("17", 5432, "auto\n")):
        confdir = etc / version / "main"
        confdir.mkdir(parents=True)
        (confdir / "postgresql.conf").write_text(
            f"data_directory = '{tmp_path / version}'\nport = {port}\n"
        )
        (confdir / "start.conf").write_text(start)
    monkeypatch.setenv(pg.CONF_ROOT_ENV, str(etc))
    old = tuning.read_cluster(etc / "15" / "main")
    facts = pg.Facts(
        settings=Settings(host="localhost", port=5432, dbname="s", user="s", password="p"),
        cluster=old._replace(port=5432),
        running=True,
        installed=("15", "17"),
    )
    plan = pg.Plan(facts, "17")
    saved = upgrade_postgresql.Saved(port=5432, start_conf="# as it was\nauto\n")
    problems = upgrade_postgresql.roll_back(plan, saved, etc)
    assert tuning.read_cluster(etc / "15" / "main").port == 5432
    assert (etc / "15" / "main" / "start.conf").read_text() == "# as it was\nauto\n"
    assert tuning.read_cluster(etc / "17" / "main").port == 5433
    assert pg.read_start_conf(etc / "17" / "main").strip().endswith("manual")
    assert len(problems) == 1 and "pg_ctlcluster 15 main start" in problems[0]


@pytest.fixture
def real_major_tree():
    """Like conf_tree, with this host's own major as the new one, so that its server can
    be asked about the configuration."""
    version = pg.installed_majors()[-1]
    top = Path(tempfile.mkdtemp(prefix="mss-pgconf-"))
    os.chmod(top, 0o755)
    postgres = pwd.getpwnam("postgres")
    etc = top / "etc"
    for old_or_new in ("9.6", version):
        confdir = etc / old_or_new / "main"
        (confdir / "conf.d").mkdir(parents=True)
        data = top / "data" / old_or_new
        data.mkdir(parents=True, mode=0o700)
        (confdir / "postgresql.conf").write_text(
            f"data_directory = '{data}'\ninclude_dir = 'conf.d'\n"
        )
    (etc / "9.6" / "main" / "conf.d" / tuning.DROPIN_NAME).write_text("shared_buffers = 1GB\n")
    for path in [top, *top.rglob("*")]:
        os.chown(path, postgres.pw_uid, postgres.pw_gid)
    yield etc, version
    shutil.rmtree(top)


def test_the_new_server_accepts_the_carried_dropin(real_major_tree):
    etc, version = real_major_tree
    result = run_hook(etc, "9.6", "main", version, "init")
    assert result.returncode == 0 and "warning" not in result.stderr, result.stderr
    new = tuning.read_cluster(etc / version / "main")
    assert new.dropin.read_text() == tuning.text_for(new)


def test_the_budgets_max_connections_is_carried_and_accepted(real_major_tree):
    """An old drop-in that raised max_connections for Synapse's workers: the new cluster's
    has the same (what a configure for the same processes writes), and its server takes it."""
    etc, version = real_major_tree
    old = etc / "9.6" / "main" / "conf.d" / tuning.DROPIN_NAME
    old.write_text("shared_buffers = 1GB\nmax_connections = '140'\n")
    result = run_hook(etc, "9.6", "main", version, "init")
    assert result.returncode == 0 and "warning" not in result.stderr, result.stderr
    new = tuning.read_cluster(etc / version / "main")
    text = new.dropin.read_text()
    assert text == tuning.text_for(new, 140)
    assert tuning.dropin_max_connections(text) == 140
    assert tuning.current(new, True, max_connections=140)


def test_a_dropin_the_new_server_refuses_is_taken_away(real_major_tree, monkeypatch, capsys):
    """Run in this (root) process, with a drop-in PostgreSQL refuses: the server is asked
    as the cluster's owner, and the new cluster is left as it was."""
    from matrix_synapse_setup.postgres import upgrade_hook

    etc, version = real_major_tree
    monkeypatch.setattr(tuning, "text_for", lambda cluster, max_connections=None: "jit = maybe\n")
    assert upgrade_hook.run(["9.6", "main", version, "init"], etc=etc) == 0
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "warning" in err
    assert f"PostgreSQL {version} refuses them" in err and "jit" in err
    assert "dpkg-reconfigure matrix-synapse-setup" in err
    assert not (etc / version / "main" / "conf.d" / tuning.DROPIN_NAME).exists()
