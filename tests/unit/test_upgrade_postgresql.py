"""The PostgreSQL major upgrade's pure decisions: the pg_upgradecluster hook's arguments
and decision, upgrade-postgresql's plan and refusals, the free space, the row counts,
the collation versions, and doctor's judgments of versions, tuning and collations."""

from __future__ import annotations

from pathlib import Path

import pytest

from matrix_synapse_setup.commands.doctor import versions
from matrix_synapse_setup.commands.doctor.report import OK, WARN
from matrix_synapse_setup.core import messages
from matrix_synapse_setup.core.errors import SetupError
from matrix_synapse_setup.core.settings import Settings
from matrix_synapse_setup.postgres import tuning
from matrix_synapse_setup.postgres import upgrade as pg
from matrix_synapse_setup.postgres import upgrade_hook as hook
from matrix_synapse_setup.synapse.config import human_size

GiB = 1024**3

# --- the hook's arguments and decision ------------------------------------------------


def test_the_hook_reads_pg_upgradecluster_s_four_arguments():
    assert hook.parse_args(["15", "main", "17", "init"]) == hook.Request("15", "main", "17", "init")
    assert hook.parse_args(["9.6", "my-db.2", "17", "finish"]).old_version == "9.6"


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["15", "main", "17"],
        ["15", "main", "17", "init", "extra"],
        ["15", "..", "17", "init"],
        ["15", ".", "17", "init"],
        ["15", "a/b", "17", "init"],
        ["15", "main", "../17", "init"],
        ["x", "main", "17", "init"],
        ["15", "", "17", "init"],
    ],
)
def test_the_hook_ignores_what_pg_upgradecluster_would_not_pass(argv):
    assert hook.parse_args(argv) is None


@pytest.mark.parametrize(
    "argv, old_has_dropin, wanted",
    [
        (["15", "main", "17", "init"], True, hook.CARRY),
        (["15", "main", "17", "init"], False, hook.NOTHING),  # not a cluster we tuned
        (["15", "main", "17", "finish"], True, hook.NOTHING),  # carried at init already
        (["15", "main", "17", "unknown-phase"], True, hook.NOTHING),
        (["15", "main", "15", "init"], True, hook.NOTHING),  # --rename within a version
        (["15", "main"], True, hook.NOTHING),
    ],
)
def test_the_hook_carries_the_dropin_at_init_only_from_a_tuned_cluster(
    argv, old_has_dropin, wanted
):
    assert hook.decide(hook.parse_args(argv), old_has_dropin) == wanted


def test_the_hook_finds_the_clusters_under_postgresql_common_s_root():
    request = hook.Request("15", "main", "17", "init")
    assert request.old_confdir(Path("/etc/postgresql")) == Path("/etc/postgresql/15/main")
    assert request.new_confdir(Path("/etc/postgresql")) == Path("/etc/postgresql/17/main")
    assert hook.conf_root({}) == Path("/etc/postgresql")
    assert hook.conf_root({hook.CONF_ROOT_ENV: "/tmp/pgconf"}) == Path("/tmp/pgconf")


def test_the_hook_never_fails_and_names_the_fix(tmp_path, capsys):
    """A new cluster that is not there: a warning with the fix, exit 0."""
    old = tmp_path / "15" / "main" / "conf.d"
    old.mkdir(parents=True)
    (old / tuning.DROPIN_NAME).write_text("shared_buffers = 1GB\n")
    assert hook.run(["15", "main", "17", "init"], etc=tmp_path) == 0
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1
    assert "dpkg-reconfigure matrix-synapse-setup" in err and "17/main" in err


def test_the_hook_says_nothing_when_there_is_nothing_to_carry(tmp_path, capsys):
    assert hook.run(["15", "main", "17", "init"], etc=tmp_path) == 0
    assert hook.run(["nonsense"], etc=tmp_path) == 0
    assert capsys.readouterr().err == ""


# --- upgrade-postgresql's plan --------------------------------------------------------------

SETTINGS = Settings.from_answers(
    host="localhost", port="5432", dbname="synapse", user="synapse", password="pw"
)
CLUSTER = tuning.Cluster(
    "15", "main", Path("/etc/postgresql/15/main"), 5432, Path("/var/lib/postgresql/15/main"), True
)


def facts(**changes) -> pg.Facts:
    given = dict(
        settings=SETTINGS,
        cluster=CLUSTER,
        running=True,
        installed=("15", "17"),
        server_version=150010,
        cluster_size=3 * GiB,
        database_size=2 * GiB,
        needs=(
            pg.Need("cluster 17/main's data", Path("/var/lib/postgresql"), 1, 50 * GiB, 4 * GiB),
            pg.Need("the backup", Path("/var/backups"), 1, 50 * GiB, 2 * GiB),
        ),
    )
    return pg.Facts(**(given | changes))


def test_the_newest_installed_major_is_the_target():
    plan = pg.plan_upgrade(facts(installed=("13", "15", "17", "16")))
    assert plan.new_version == "17"
    assert plan.new_datadir == Path("/var/lib/postgresql/17/main")
    assert plan.drop_line() == "pg_dropcluster 15 main"


@pytest.mark.parametrize("installed", [("15",), (), ("9.6", "15"), ("14",)])
def test_a_cluster_on_the_newest_installed_major_has_nothing_to_do(installed):
    assert pg.plan_upgrade(facts(installed=installed)) is None


def test_an_existing_target_cluster_is_refused():
    with pytest.raises(SetupError) as refused:
        pg.plan_upgrade(facts(target_exists=True))
    assert "17/main exists already" in refused.value.message
    assert "pg_dropcluster --stop 17 main" in refused.value.message


def test_a_stopped_cluster_is_refused():
    with pytest.raises(SetupError, match="pg_ctlcluster 15 main start"):
        pg.plan_upgrade(facts(running=False))


def test_the_dry_run_s_plan_has_eight_steps_with_what_was_measured():
    plan = pg.plan_upgrade(facts())
    lines = plan.describe(human_size)
    assert len(lines) == 8
    assert lines[0].startswith("check the free space: ")
    assert "4.0 GiB needed in /var/lib/postgresql, 50.0 GiB free" in lines[0]
    assert "synapse (2.0 GiB)" in lines[1]
    assert lines[3].startswith("pg_upgradecluster 15 main: 15/main (3.0 GiB of databases)")
    assert "/var/lib/postgresql/17/main" in lines[3]
    assert lines[7] == "keep 15/main, stopped, until you drop it (pg_dropcluster 15 main)"


def test_major_versions_sort_as_numbers():
    assert pg.newest(["9.6", "15", "10"]) == "15"
    assert pg.major_key("9.6") < pg.major_key("10")


def test_the_data_needs_the_databases_again_and_a_margin():
    assert pg.data_need(0) == pg.DATA_MARGIN
    assert pg.data_need(10 * GiB) == 11 * GiB + pg.DATA_MARGIN


def test_needs_on_one_filesystem_add_up():
    data = pg.Need("data", Path("/var/lib/postgresql"), 7, 5 * GiB, 3 * GiB)
    dump = pg.Need("the backup", Path("/var/backups"), 7, 5 * GiB, 3 * GiB)
    [short] = pg.space_problems([data, dump])
    assert short.need == 6 * GiB and short.what == "data and the backup"
    assert pg.space_problems([data, dump._replace(device=8)]) == []


def test_the_free_space_refusal_says_free_space_and_changes_nothing():
    data = pg.Need("cluster 17/main's data", Path("/var/lib/postgresql"), 7, GiB, 3 * GiB)
    with pytest.raises(SetupError) as refused:
        pg.refuse_space([data], human_size)
    message = refused.value.message
    assert "free space" in message and "/var/lib/postgresql" in message
    assert "3.0 GiB needed, 1.0 GiB free" in message and "nothing was changed" in message
    pg.refuse_space([], human_size)  # nothing short: no refusal


def test_row_counts_compare_table_by_table():
    before = {"users": 3, "events": 40}
    assert pg.count_differences(before, {"users": 3, "events": 40, "rooms": 1}) == []
    assert pg.count_differences(before, {"users": 3, "events": 39}) == [
        "events: 40 before, 39 after"
    ]
    assert pg.count_differences(before, {"users": 3}) == ["events: 40 before, -1 after"]


def test_collation_mismatches_need_both_versions():
    rows = [
        ("synapse", None, None),  # C: no version
        ("postgres", "2.36", "2.36"),
        ("template1", "2.36", "2.41"),
        ("other", None, "2.41"),  # never recorded: PostgreSQL itself does not complain
    ]
    assert pg.collation_mismatches(rows) == [("template1", "2.36", "2.41")]


def test_the_refresh_statement_quotes_the_name():
    assert pg.refresh_statement('we"ird') == 'ALTER DATABASE "we""ird" REFRESH COLLATION VERSION'


def test_supported_versions_and_obsolete():
    assert pg.parse_supported("17\n") == [17]
    assert pg.parse_supported("15\n16\n17\n") == [15, 16, 17]
    assert pg.parse_supported("") == []
    assert pg.obsolete(15, [17]) and not pg.obsolete(17, [17]) and not pg.obsolete(16, [16, 17])
    assert not pg.obsolete(15, [])


def test_installed_majors_are_the_servers_installed(tmp_path):
    for version, program in (("15", "postgres"), ("17", "postgres"), ("16", "psql")):
        (tmp_path / version / "bin").mkdir(parents=True)
        (tmp_path / version / "bin" / program).touch()
    assert pg.installed_majors(tmp_path) == ["15", "17"]  # 16: only its client


# --- doctor's judgments -------------------------------------------------------------------


def test_doctor_warns_of_an_obsolete_major_with_the_command():
    status, detail, fix = versions.judge_version(15, "cluster 15/main", [17], 140000, local=True)
    assert status == WARN and "obsolete" in detail and "17" in detail
    assert fix == "matrix-synapse-setup upgrade-postgresql"


def test_doctor_is_content_with_a_supported_major():
    assert versions.judge_version(17, "cluster 17/main", [17], 140000, local=True)[0] == OK
    assert versions.judge_version(15, "cluster 15/main", [15], 140000, local=True)[0] == OK
    assert versions.judge_version(15, "cluster 15/main", None, 140000, local=True)[0] == OK


def test_doctor_warns_of_a_server_older_than_synapse_supports():
    status, detail, fix = versions.judge_version(14, "cluster 14/main", [14], 150000, local=True)
    assert status == WARN and "15 or newer" in detail
    assert fix == "matrix-synapse-setup upgrade-postgresql"
    status, _, fix = versions.judge_version(13, "db.example.org:5432", None, 140000, local=False)
    assert status == WARN and fix == messages.DOCTOR_FIX_REMOTE_UPGRADE


def test_a_remote_server_is_never_called_obsolete_by_this_release():
    assert versions.judge_version(15, "db:5432", [17], 140000, local=False)[0] == OK


def test_doctor_reads_synapse_s_minimum_from_its_code():
    code = (
        "        if not allow_outdated_version and self._version < 140000:\n"
        '            raise RuntimeError("Synapse requires PostgreSQL 14 or above.")\n'
    )
    assert versions.parse_synapse_minimum(code) == 140000
    assert versions.parse_synapse_minimum(code.replace("140000", "150000")) == 150000
    assert versions.parse_synapse_minimum("nothing here") is None
    assert versions.synapse_minimum(("/nonexistent/*/postgres.py",)) == 140000


@pytest.mark.parametrize(
    "tune, includes, installed, status",
    [
        (True, True, "WANTED", OK),
        (True, True, None, WARN),  # missing: the upgraded cluster that lost its drop-in
        (True, True, "OLD", WARN),  # stale: sized for another cluster or machine
        (True, True, "", WARN),  # unreadable
        (False, True, None, OK),  # the admin said no
        (False, True, "OLD", OK),  # the next configure removes it; nothing to say here
        (True, False, None, OK),  # the cluster reads no conf.d: never tuned
        (None, True, None, OK),  # debconf not readable
    ],
)
def test_doctor_judges_the_tuning_against_the_debconf_answer(tune, includes, installed, status):
    got, detail, fix = versions.judge_tuning(tune, "17/main", includes, installed, "WANTED")
    assert got == status and "17/main" in detail
    assert (fix == "dpkg-reconfigure matrix-synapse-setup") == (status == WARN)


def test_doctor_gives_the_collation_fix():
    assert versions.judge_collations([])[0] == OK
    status, detail, fix = versions.judge_collations([("template1", "2.36", "2.41")])
    assert status == WARN and "template1: 2.36 recorded, 2.41 now" in detail
    assert 'ALTER DATABASE "template1" REFRESH COLLATION VERSION' in fix
    assert 'REINDEX DATABASE "template1"' in fix


def test_doctor_s_new_rows_come_last():
    from matrix_synapse_setup.commands.doctor import ROWS

    assert ROWS[-3:] == ("postgresql version", "tuning", "collation")
