"""The tuning drop-in against a real PostgreSQL (tuning.apply, on a superuser
connection as the package's superuser child makes it): every setting and value we write
is accepted, those that can change live apply at once (a reload), the rest (postmaster
context) are reported as waiting for a restart, and the cluster restarts with all of
them, reporting them as coming from our file; a drop-in it refuses is taken away again;
a cluster that serves other databases is left alone unless told otherwise.

The throwaway cluster (scripts/devtools/pgcluster.py) is made with initdb and run with pg_ctl, not
in Debian's /etc/postgresql layout: its data directory is made to look like one (its
postgresql.conf gets Debian's "include_dir = 'conf.d'", a fake /etc/postgresql/V/NAME
links to it); the test restarts it with pg_ctl.
"""

from __future__ import annotations

import os
import pwd

import pytest

from matrix_synapse_setup.core import messages
from matrix_synapse_setup.postgres import budget, tuning
from scripts.devtools.pgcluster import throwaway_cluster

pytestmark = pytest.mark.integration

GiB = 1024**3


@pytest.fixture(scope="module")
def pg():
    """A cluster of its own (it is restarted), with a Debian-like conf.d."""
    with throwaway_cluster() as cluster:
        pg_user = pwd.getpwnam("postgres")
        conf_d = cluster.datadir / "conf.d"
        conf_d.mkdir()
        os.chown(conf_d, pg_user.pw_uid, pg_user.pw_gid)
        with open(cluster.datadir / "postgresql.conf", "a") as conf:
            conf.write(f"data_directory = '{cluster.datadir}'\ninclude_dir = 'conf.d'\n")
        cluster.pg_ctl("-l", str(cluster.log), "restart")
        yield cluster


@pytest.fixture
def layout(pg, tmp_path):
    """The cluster as tuning sees it, found by port in a fake /etc/postgresql."""
    etc = tmp_path / "etc-postgresql"
    version = pg.bindir.parent.name
    (etc / version).mkdir(parents=True)
    (etc / version / "mss").symlink_to(pg.datadir)
    found = tuning.cluster_for_port(pg.port, etc)
    assert found is not None, "cluster_for_port did not find the running cluster"
    yield found
    found.dropin.unlink(missing_ok=True)


def restart(pg) -> None:
    pg.pg_ctl("-l", str(pg.log), "restart")


def to_bytes(value: str) -> int:
    return int(value[:-2]) * {"kB": 1024, "MB": 1024**2, "GB": 1024**3}[value[-2:]]


def check_applied(pg, found, values: dict[str, str]) -> None:
    rows = pg.query(
        "SELECT name, current_setting(name), sourcefile, pending_restart FROM pg_settings "
        "WHERE name = ANY(%s)",
        (list(values),),
    )
    assert {row[0] for row in rows} == set(values), "a name PostgreSQL does not know"
    dropin = str(pg.datadir / "conf.d" / tuning.DROPIN_NAME)
    for name, shown, sourcefile, pending in rows:
        assert sourcefile == dropin, (name, sourcefile)
        assert not pending, name
        wanted = values[name]
        if wanted[-2:] in ("MB", "GB"):
            assert to_bytes(shown) == to_bytes(wanted), (name, shown, wanted)
        elif name == "random_page_cost" or name == "checkpoint_completion_target":
            assert float(shown) == float(wanted), (name, shown, wanted)
        else:
            assert shown == wanted, (name, shown, wanted)
    errors = pg.query(
        "SELECT sourcefile, sourceline, error FROM pg_file_settings WHERE error IS NOT NULL"
    )
    assert errors == []
    # Nothing that trades safety for speed was changed.
    for name in ("fsync", "full_page_writes", "synchronous_commit"):
        [(sourcefile,)] = pg.query("SELECT sourcefile FROM pg_settings WHERE name = %s", (name,))
        assert sourcefile != dropin


def test_finds_the_cluster_by_port(pg, layout):
    assert layout.port == pg.port
    assert layout.includes_conf_d
    assert layout.data_directory == pg.datadir
    assert layout.socket_dir == pg.socket_dir
    assert tuning.postmaster(layout) is not None


def request(pg, text: str | None, *, only_if_alone: bool = False) -> dict:
    # The real path PostgreSQL reports as the settings' source file.
    path = str(pg.datadir / "conf.d" / tuning.DROPIN_NAME)
    return {"path": path, "text": text, "only_if_alone": only_if_alone,
            "label": "test", "unit": "postgresql@test.service"}  # fmt: skip


def apply(pg, req: dict, others: list[str] | None = None) -> dict:
    with pg.connect() as conn:
        return tuning.apply(conn, req, others or [])


def text_for(memory: int, cores: int, rotational: bool | None) -> tuple[str, dict[str, str]]:
    values = tuning.recommended(memory, cores, rotational)
    return tuning.render(values, memory=memory, rotational=rotational), values


def postmaster_context(pg, names) -> set[str]:
    rows = pg.query(
        "SELECT name FROM pg_settings WHERE context = 'postmaster' AND name = ANY(%s)",
        (list(names),),
    )
    return {name for (name,) in rows}


def test_this_machines_settings_apply_live_or_at_the_next_restart(pg, layout):
    text, values = text_for(tuning.machine_memory(), os.cpu_count() or 1, None)
    answer = apply(pg, request(pg, text))
    assert answer["step"]["outcome"] == "created" and answer["refused"] == []
    # shared_buffers and wal_buffers differ from initdb's and wait for a restart; the
    # rest applies now, with no restart.
    assert {"shared_buffers", "wal_buffers"} <= set(answer["pending"])
    assert set(answer["pending"]) <= postmaster_context(pg, values)
    [(jit,)] = pg.query("SHOW jit")
    [(work_mem,)] = pg.query("SHOW work_mem")
    assert jit == "off" and to_bytes(work_mem) == to_bytes(values["work_mem"])
    restart(pg)
    check_applied(pg, layout, values)
    again = apply(pg, request(pg, text))
    assert again["step"]["outcome"] == "unchanged" and again["pending"] == []


@pytest.mark.parametrize(
    ("memory", "cores", "rotational"),
    [(1 * GiB, 1, True), (256 * GiB, 64, False)],
)
def test_small_and_large_machines_are_accepted(pg, layout, memory, cores, rotational):
    text, values = text_for(memory, cores, rotational)
    answer = apply(pg, request(pg, text))
    assert answer["refused"] == []
    assert set(answer["pending"]) <= postmaster_context(pg, values)
    if memory <= GiB:  # this machine can restart with it (8GB of shared_buffers: not here)
        restart(pg)
        check_applied(pg, layout, values)
    apply(pg, request(pg, None))
    restart(pg)


def test_the_budgets_max_connections_waits_for_a_restart_then_fits(pg, layout):
    """A budget that needs more than 100: max_connections is reported as waiting for a
    restart (the postinst says so with TUNING_PENDING), then the server has it, and the
    budget that asked for it fits."""
    processes = ["main", *[f"client{i}" for i in range(1, 10)], "events1"]  # 11 x 10
    with pg.connect() as conn:
        before = budget.read_limits(conn)
    needed = budget.needed_max_connections(len(processes) * 10, before)
    assert needed > 100 and not budget.budget(processes, 10, before).fits
    values = tuning.recommended(4 * GiB, 2, False, max_connections=needed)
    text = tuning.render(values, memory=4 * GiB, rotational=False)
    answer = apply(pg, request(pg, text))
    assert answer["refused"] == [] and "max_connections" in answer["pending"]
    note = messages.TUNING_PENDING.format(
        cluster="15/main", names=", ".join(answer["pending"]), unit="postgresql@15-main"
    )
    assert "except " in note and "max_connections" in note and "restarts" in note
    restart(pg)
    check_applied(pg, layout, values)
    with pg.connect() as conn:
        after = budget.read_limits(conn)
    assert after == before._replace(max_connections=needed)
    assert budget.budget(processes, 10, after).fits
    apply(pg, request(pg, None))
    restart(pg)


def test_a_refused_setting_takes_the_file_away_again(pg, layout):
    text, _ = text_for(4 * GiB, 2, False)
    bad = text.replace("\nwork_mem = ", "\nwork_mem = '10 parsecs'\n# was: work_mem = ")
    answer = apply(pg, request(pg, bad))
    assert answer["refused"] == ["work_mem"]
    assert not layout.dropin.exists()
    [(source,)] = pg.query("SELECT sourcefile FROM pg_settings WHERE name = 'work_mem'")
    assert source != str(pg.datadir / "conf.d" / tuning.DROPIN_NAME)


def test_a_shared_cluster_is_left_alone_by_default(pg, layout):
    text, _ = text_for(4 * GiB, 2, False)
    answer = apply(pg, request(pg, text, only_if_alone=True), others=["other_app"])
    assert answer == {"skipped_for": ["other_app"]}
    assert not layout.dropin.exists()
    # alone, or told so explicitly: tuned
    assert apply(pg, request(pg, text, only_if_alone=True))["step"]["outcome"] == "created"
    removed = apply(pg, request(pg, None))
    assert removed["step"]["outcome"] == "changed" and not layout.dropin.exists()
    restart(pg)
