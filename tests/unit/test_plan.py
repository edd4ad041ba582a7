"""plan() on states built by hand: every path of a maintainer-script run, no I/O.

Each state is what :func:`~matrix_synapse_setup.postinst.inspect.inspect` would have
read; the plan must follow from it alone.  The snippet on disk in these states is
rendered by the same template the package ships, so that "unchanged" is the real
comparison the postinst makes.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest

from matrix_synapse_setup.core import messages, paths
from matrix_synapse_setup.core.errors import SetupError
from matrix_synapse_setup.core.settings import Settings
from matrix_synapse_setup.core.steps import OK, Step
from matrix_synapse_setup.dpkg.debconf import KEEP_SQLITE, MIGRATE, START_EMPTY, Answers
from matrix_synapse_setup.dpkg.ucf import UcfState
from matrix_synapse_setup.files import snippet
from matrix_synapse_setup.files.atomic import Ownership
from matrix_synapse_setup.files.space import Need
from matrix_synapse_setup.postinst import plan as p
from matrix_synapse_setup.postinst.state import Cluster, OnDisk, State
from matrix_synapse_setup.synapse.config import Database, SqliteFacts, SynapseState
from matrix_synapse_setup.synapse.porting import PortSpace

TEMPLATE = snippet.load_template()
CLOCK = datetime.datetime(2026, 12, 6, 12, 0, 0, tzinfo=datetime.UTC)
STAMP = "2026-11-01T10:00:00Z"
PASSWORD = "the-password-in-use"
OWNER = Ownership(0, 110, 0o640)
PASSFILE_OWNER = Ownership(110, 0, 0o600)
PROOF = (Step("login as synapse over the Unix socket", OK, "/var/run/postgresql"),)
HOMESERVER = Path("/etc/matrix-synapse/homeserver.yaml")


def answers(**changes) -> Answers:
    given = dict(
        host="localhost",
        port="5432",
        dbname="synapse",
        user="synapse",
        password="",
        sslmode="",
        purge=False,
        sslrootcert="",
    )
    return Answers(**(given | changes))


def installed(settings: Settings, stamp: str = STAMP) -> OnDisk:
    """The snippet and password file exactly as a run before wrote them."""
    text = snippet.render_template(TEMPLATE, settings, password_set=stamp)
    values = snippet.effective(snippet.parse(text), snippet.passfile_text(settings))
    return OnDisk(
        text=text,
        values=values,
        owned=True,
        passfile_text=snippet.passfile_text(settings),
        passfile_owned=True,
        ucf=UcfState(registered=True, unedited=True),
        owner=OWNER,
        passfile_owner=PASSFILE_OWNER,
    )


LOCAL = Settings.from_answers(
    host="localhost", port="5432", dbname="synapse", user="synapse", password=PASSWORD
)
CLUSTER = Cluster(
    dropin=Path("/etc/postgresql/15/main/conf.d/00-matrix-synapse-setup.conf"),
    label="15/main",
    unit="postgresql@15-main.service",
    conffile=Path("/etc/postgresql/15/main/postgresql.conf"),
    includes_conf_d=True,
    dropin_exists=True,
    text="shared_buffers = 1GB\n",
    current=True,
)


def state(**changes) -> State:
    """An installed, unchanged local setup; *changes* make each test's case."""
    given = dict(
        answers=answers(),
        on_disk=installed(LOCAL),
        template=TEMPLATE,
        clock=CLOCK,
        fresh_password="a-fresh-random-password",
        proof=PROOF,
        cluster=CLUSTER,
        backup_keep="3",
        backup_keep_stored="3",
    )
    return State(**(given | changes))


def sqlite_synapse(**database) -> SynapseState:
    facts = SqliteFacts(Path("/var/lib/matrix-synapse/homeserver.db"), 5 << 20, 2, 3, 400)
    db = Database("sqlite3", HOMESERVER, facts.path)
    if database:
        db = Database(**database)
        facts = None
    return SynapseState({"server_name": "example.org"}, db, facts)


def kinds(plan: p.Plan) -> list[type]:
    return [type(step) for step in plan.steps]


def test_unchanged_is_an_empty_plan():
    plan = p.plan(state())
    assert not plan and plan.steps == ()
    assert plan.database_unchanged and plan.proof == PROOF


def test_fresh_install_provisions_writes_and_restarts():
    plan = p.plan(state(on_disk=OnDisk(), proof=None, backup_keep_stored=None))
    assert kinds(plan) == [p.Provision, p.WriteSnippet, p.Restart, p.StoreBackupKeep]
    provision, write = plan.steps[0], plan.steps[1]
    assert provision.settings.password == "a-fresh-random-password"
    assert provision.tune is not None and provision.tune.text == CLUSTER.text
    assert provision.tune.only_if_alone  # the template's default, nobody said yes
    assert "password_set" not in write.text and "2026-12-06T12:00:00Z" in write.text
    assert not write.same_connection
    assert plan.describe()[0] == (
        "provision the role and database synapse on localhost:5432; "
        f"PostgreSQL settings for Synapse in {CLUSTER.dropin}"
    )


def test_a_new_password_rotates_role_and_snippet():
    plan = p.plan(state(answers=answers(password="a-new-password")))
    assert kinds(plan) == [p.Provision, p.WriteSnippet, p.Restart]
    assert plan.settings.password == "a-new-password"
    assert "2026-12-06T12:00:00Z" in plan.steps[1].text  # a new stamp: ucf sees a change


def test_a_new_password_within_the_same_second_still_changes_the_stamp():
    current = installed(LOCAL, stamp="2026-12-06T12:00:00Z")
    plan = p.plan(state(on_disk=current, answers=answers(password="again-new")))
    assert "2026-12-06T12:00:00.000000Z" in plan.steps[1].text


def test_the_password_in_use_given_again_changes_nothing():
    assert not p.plan(state(answers=answers(password=PASSWORD)))


def test_a_failed_login_is_not_unchanged():
    plan = p.plan(state(proof=None))
    assert kinds(plan) == [p.Provision, p.WriteSnippet, p.Restart]
    assert plan.steps[1].same_connection  # the same values: no restart for the file alone


@pytest.mark.parametrize(
    "choice, steps",
    [
        (MIGRATE, [p.Provision, p.Port]),
        (KEEP_SQLITE, [p.Provision, p.KeepSqlite]),
        (START_EMPTY, [p.Provision, p.WriteSnippet, p.Restart]),
    ],
)
def test_synapse_on_sqlite_with_data(choice, steps):
    synapse = sqlite_synapse()
    plan = p.plan(state(on_disk=OnDisk(), proof=None, synapse=synapse, sqlite_choice=choice))
    assert kinds(plan) == steps
    if choice == START_EMPTY:
        assert plan.steps[1].start_empty == synapse.sqlite.path
    if choice == MIGRATE:
        assert plan.steps[1].text.startswith("#")


def test_a_migration_that_a_later_file_would_undo_is_refused():
    later = Path("/etc/matrix-synapse/conf.d/zz-database.yaml")
    fresh = state(
        on_disk=OnDisk(),
        proof=None,
        synapse=sqlite_synapse(),
        sqlite_choice=MIGRATE,
        database_overridden_by=later,
    )
    with pytest.raises(SetupError) as refused:
        p.plan(fresh)
    assert refused.value.message == messages.SNIPPET_OVERRIDDEN.format(
        source=later, path=paths.SNIPPET
    )


def test_a_migration_that_cannot_fit_is_refused_before_any_step():
    work = Need("the migration's work directory", Path("/var/lib/x"), 1, 10 * 2**20, 8 * 2**20)
    data = Need("PostgreSQL's data directory", Path("/var/lib/p"), 1, 10 * 2**20, 8 * 2**20)
    short = PortSpace(4 * 2**20, (work, data))  # 16 MiB on one filesystem with 10 free
    migrating = state(on_disk=OnDisk(), proof=None, synapse=sqlite_synapse(), sqlite_choice=MIGRATE)
    with pytest.raises(SetupError) as refused:
        p.plan(migrating._replace(port_space=short))
    assert "16.0 MiB" in refused.value.message and "10.0 MiB" in refused.value.message
    room = short._replace(needs=(work, data._replace(device=2)))  # apart: each fits
    assert kinds(p.plan(migrating._replace(port_space=room))) == [p.Provision, p.Port]


def test_remote_verifies_only():
    remote = answers(host="db.example.org", password="remote-secret", sslmode="verify-full")
    plan = p.plan(state(answers=remote, on_disk=OnDisk(), proof=None, cluster=None))
    assert kinds(plan) == [p.Provision, p.WriteSnippet, p.Restart]
    assert plan.describe()[0] == "verify database synapse on db.example.org:5432"
    assert plan.steps[0].tune is None


def test_remote_without_a_password_is_refused():
    remote = answers(host="db.example.org")
    with pytest.raises(SetupError, match="password"):
        p.plan(state(answers=remote, on_disk=OnDisk(), proof=None, cluster=None))


def test_a_snippet_deleted_by_hand_is_respected_on_upgrade():
    gone = OnDisk(ucf=UcfState(registered=True, unedited=False))
    plan = p.plan(state(on_disk=gone, proof=None, old_version="0.6.4"))
    assert plan.stop and plan.steps == ()
    assert plan.notes == (messages.SNIPPET_DELETED.format(path=paths.SNIPPET),)


def test_a_snippet_deleted_by_hand_is_written_again_by_reconfigure():
    gone = OnDisk(ucf=UcfState(registered=True, unedited=False))
    plan = p.plan(state(on_disk=gone, proof=None, old_version="0.6.4", reconfigure=True))
    assert p.WriteSnippet in kinds(plan)


def test_synapse_on_another_database_is_not_switched():
    other = sqlite_synapse(
        engine="psycopg2",
        source=HOMESERVER,
        args={"host": "localhost", "port": 5432, "dbname": "theirs"},
    )
    with pytest.raises(SetupError) as refused:
        p.plan(state(on_disk=OnDisk(), proof=None, synapse=other))
    assert "theirs" in refused.value.message


def test_synapse_on_the_database_we_would_name_is_fine():
    same = sqlite_synapse(
        engine="psycopg2",
        source=HOMESERVER,
        args={"host": "localhost", "port": 5432, "dbname": "synapse"},
    )
    assert p.WriteSnippet in kinds(p.plan(state(on_disk=OnDisk(), proof=None, synapse=same)))


def test_an_edited_snippet_nobody_can_be_asked_about_is_refused():
    edited = installed(LOCAL)._replace(
        text=installed(LOCAL).text.replace('dbname: "synapse"', 'dbname: "edited"'),
        ucf=UcfState(registered=True, unedited=False),
    )
    with pytest.raises(SetupError) as refused:
        p.plan(state(on_disk=edited, answers=answers(password="new")))
    assert "dbname" in refused.value.message
    asked = p.plan(state(on_disk=edited, answers=answers(password="new"), interactive=True))
    assert p.WriteSnippet in kinds(asked)


def test_a_tuning_change_provisions_again():
    stale = CLUSTER._replace(current=False)
    plan = p.plan(state(cluster=stale))
    assert kinds(plan) == [p.Provision, p.WriteSnippet, p.Restart]
    assert plan.steps[0].tune.text == CLUSTER.text


def test_tuning_answered_no_removes_our_file():
    plan = p.plan(state(tune=(False, True), cluster=CLUSTER._replace(current=False)))
    assert plan.steps[0].tune.text is None


def test_a_cluster_without_conf_d_is_not_tuned_and_says_why():
    closed = CLUSTER._replace(includes_conf_d=False, current=True)
    assert not p.plan(state(cluster=closed))
    plan = p.plan(state(cluster=closed, proof=None))
    assert plan.steps[0].tune is None
    assert plan.notes == (messages.TUNING_NO_INCLUDE_DIR.format(conf=CLUSTER.conffile),)


def test_an_admin_account_waits_for_synapse_in_its_own_step():
    plan = p.plan(state(admin_user="alice", admin_password="s3cret-enough"))
    assert kinds(plan) == [p.AdminAccount]
    assert plan.database_unchanged
    step = plan.steps[0]
    assert (step.user, step.password) == ("alice", "s3cret-enough")


def test_the_admin_account_we_created_is_left_alone_without_a_password():
    assert not p.plan(state(admin_user="alice", admin_created_here=True))
    assert kinds(p.plan(state(admin_user="alice"))) == [p.AdminAccount]


def test_a_new_number_of_dumps_is_stored():
    plan = p.plan(state(backup_keep="5"))
    assert plan.steps == (p.StoreBackupKeep("5"),)


def test_postgresql_being_installed_defers_provisioning():
    plan = p.plan(state(on_disk=OnDisk(), proof=None, postgresql_pending=("postgresql-15",)))
    assert plan.steps == (p.Defer(("postgresql-15",)),)
    deferred = state(
        on_disk=OnDisk(), proof=None, postgresql_pending=("postgresql-15",), deferred=True
    )
    assert p.Provision in kinds(p.plan(deferred))


def test_upgrades_due_run_first():
    plan = p.plan(state(upgrades_due=("runtime-dropin",)))
    assert plan.steps == (p.Upgrade("runtime-dropin"),)
    assert plan.database_unchanged


def test_an_unreadable_snippet_is_said_and_replaced():
    broken = OnDisk(text="database: [", problem="broken", ucf=UcfState(True, True))
    plan = p.plan(state(on_disk=broken, proof=None))
    assert plan.notes == (messages.SNIPPET_IGNORED.format(reason="broken"),)
    assert p.WriteSnippet in kinds(plan)


def test_the_number_of_dumps_is_compared_as_a_number():
    assert not p.plan(state(backup_keep="03", backup_keep_stored="3"))
    assert p.plan(state(backup_keep="", backup_keep_stored=None)).steps == (
        p.StoreBackupKeep(str(paths.DEFAULT_BACKUP_KEEP)),
    )
    with pytest.raises(SetupError):
        p.plan(state(backup_keep="many"))


def test_no_record_of_a_run_shows_a_password():
    """What a traceback or a debugger would print of the state and the plan."""
    secret = "a-new-password-nobody-sees"
    run = state(answers=answers(password=secret), admin_user="alice", admin_password=secret)
    shown = [repr(run), repr(run.on_disk), *map(repr, p.plan(run).steps)]
    assert PASSWORD in run.on_disk.passfile_text  # the record does hold it
    assert not [text for text in shown if secret in text or PASSWORD in text]


# --- our PostgreSQL settings left behind by a cluster that is gone -------------------------

ORPHAN = Path("/etc/postgresql/15/main/conf.d/00-matrix-synapse-setup.conf")


def test_an_orphaned_dropin_is_removed_even_by_an_unchanged_run():
    plan = p.plan(state(orphaned_dropins=(ORPHAN,)))
    assert plan.database_unchanged
    assert kinds(plan) == [p.RemoveOrphanedDropins]
    assert plan.steps[0].paths == (ORPHAN,)
    assert plan.describe() == [f"remove {ORPHAN} (its cluster is gone)"]


def test_an_orphaned_dropin_is_removed_by_a_run_that_changes_the_database_too():
    plan = p.plan(state(answers=answers(password="a-new-password"), orphaned_dropins=(ORPHAN,)))
    assert kinds(plan) == [p.Provision, p.WriteSnippet, p.Restart, p.RemoveOrphanedDropins]


def test_no_orphan_no_step():
    assert p.RemoveOrphanedDropins not in kinds(p.plan(state(answers=answers(password="x1"))))


def test_an_upgrade_that_respects_a_deleted_snippet_leaves_orphans_for_the_next_run():
    deleted = OnDisk(ucf=UcfState(registered=True, unedited=True))
    plan = p.plan(state(on_disk=deleted, old_version="0.6.0", orphaned_dropins=(ORPHAN,)))
    assert plan.stop and p.RemoveOrphanedDropins not in kinds(plan)
