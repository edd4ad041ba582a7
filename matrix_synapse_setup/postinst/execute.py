"""Carry out a :class:`~.plan.Plan`, step by step, each saying what it changed."""

from __future__ import annotations

import dataclasses
from typing import Any

from matrix_synapse_setup.core import messages, paths
from matrix_synapse_setup.core.errors import SetupError
from matrix_synapse_setup.core.output import say
from matrix_synapse_setup.core.settings import Settings
from matrix_synapse_setup.core.steps import Step, changed
from matrix_synapse_setup.dpkg import debconf, packages, ucf
from matrix_synapse_setup.dpkg.debconf import Conversation
from matrix_synapse_setup.files import atomic
from matrix_synapse_setup.files import state as state_files
from matrix_synapse_setup.postgres import provision, tuning
from matrix_synapse_setup.postinst import admin, upgrades
from matrix_synapse_setup.postinst import plan as p
from matrix_synapse_setup.postinst import workers as run_workers
from matrix_synapse_setup.synapse import porting, service


@dataclasses.dataclass
class Run:
    """What the steps carried out so far changed."""

    conv: Conversation
    owner: atomic.Ownership
    changed: bool = False
    deferred: bool = False  # our trigger will provision
    defer_failed: bool = False  # dpkg-trigger failed: plan again, provisioning now


def execute(conv: Conversation, plan: p.Plan, owner: atomic.Ownership) -> Run:
    """Carry out *plan*.  Raises SetupError (ServerUnavailable included) on a failure;
    what was done before it stays done, and is safe to do again."""
    run = Run(conv, owner)
    for note in plan.notes:
        say(note)
    if plan.database_unchanged:
        for step in plan.proof:
            say(str(step))
        say(messages.ALL_UNCHANGED.format(path=paths.SNIPPET))
    elif plan.steps:
        say("plan: " + "; ".join(plan.describe()))
    for step in plan.steps:
        if isinstance(step, p.AdminAccount):
            continue  # after the password has left debconf (below)
        HANDLERS[type(step)](run, step)
        if run.deferred or run.defer_failed:
            return run
    if plan.stop:
        return run
    conv.clear_password()
    for step in plan.of(p.AdminAccount):
        admin_account(conv, step.user, step.password)
    return run


def upgrade(run: Run, step: p.Upgrade) -> None:
    said = upgrades.BY_NAME[step.name].run()
    if said:
        say(said)


def defer(run: Run, step: p.Defer) -> None:
    """Provision from our trigger, after PostgreSQL's postinst made its cluster (apt
    orders configuration by Depends only; PostgreSQL is a Recommends)."""
    if not packages.trigger(packages.PROVISION_TRIGGER):
        run.defer_failed = True
        return
    say(messages.DEFERRED.format(packages=", ".join(step.packages)))
    run.deferred = True


def provision_step(run: Run, step: p.Provision) -> list[Step]:
    return _provision(run, step.settings, step.tune)


def _provision(run: Run, settings: Settings, tune: p.TuneRequest | None) -> list[Step]:
    facts: dict[str, Any] = {}
    request = tune.as_request() if tune is not None else None
    steps = provision.provision(settings, facts=facts, tune=request)
    for done in steps:
        say(str(done))
    run.changed = run.changed or changed(steps)
    if tune is not None and facts.get("tuning") is not None:
        report_tuning(run.conv, tune, facts["tuning"])
    return steps


def report_tuning(conv: Conversation, tune: p.TuneRequest, answer: dict[str, Any]) -> None:
    """Say what the postgres child did with the settings; record "no" in debconf when
    they are not applied (what reconfigure then shows)."""
    if answer.get("skipped_for"):
        others = ", ".join(answer["skipped_for"])
        say(messages.TUNING_SHARED_CLUSTER.format(cluster=tune.label, others=others))
        conv.set(debconf.TUNE, "false")
        return
    if answer.get("error"):
        say(messages.TUNING_FAILED.format(path=tune.path, reason=answer["error"]))
        return
    say(str(Step(**answer["step"])))
    if answer.get("refused"):
        refused = ", ".join(answer["refused"])
        say(messages.TUNING_REFUSED.format(cluster=tune.label, path=tune.path, names=refused))
        conv.set(debconf.TUNE, "false")
    elif answer.get("pending"):
        pending = ", ".join(answer["pending"])
        say(messages.TUNING_PENDING.format(cluster=tune.label, names=pending, unit=tune.unit))


def keep_sqlite(run: Run, step: p.KeepSqlite) -> None:
    say(messages.KEEP_SQLITE.format(path=step.sqlite.path))


def port(run: Run, step: p.Port) -> None:
    """Port Synapse's SQLite data, then switch it to PostgreSQL (the snippet)."""
    sqlite = step.synapse.sqlite
    assert sqlite is not None  # noqa: S101 - the plan ports only data that exists

    def switch() -> None:
        ucf.install(run.conv, step.text, step.settings, run.owner)  # a new file: nothing kept

    say(sqlite.describe())
    result = porting.migrate(sqlite, step.settings, step.synapse.config, switch, say=say)
    for done in result.steps:
        say(str(done))
    backup = result.backup or "(none)"
    say(messages.MIGRATED.format(path=sqlite.path, backup=backup, snippet=paths.SNIPPET))


def write_snippet(run: Run, step: p.WriteSnippet) -> None:
    done = ucf.install(
        run.conv,
        step.text,
        step.settings,
        run.owner,
        before=step.before,
        unedited=step.unedited,
    )
    file_changed = done.changed
    if file_changed and step.same_connection:
        # The same connection in another form (the password moved from the YAML to
        # the password file): Synapse need not restart for it.
        file_changed = False
    run.changed = run.changed or file_changed
    if step.start_empty is not None:
        say(messages.START_EMPTY.format(path=step.start_empty))
    kept = done.kept
    if kept is not None:
        # The admin kept an edited file (ucf's question): make the role match the
        # file Synapse reads, and show its values as the current answers.
        _provision(run, kept, None)
        for key, question in debconf.SNIPPET_QUESTIONS.items():
            run.conv.set(question, str(getattr(kept, key)))
    if (run.owner.uid, run.owner.gid) == (0, 0):
        say(messages.NO_SYNAPSE_USER.format(user=paths.SYNAPSE_USER, path=paths.SNIPPET))


def restart(run: Run, step: p.Restart) -> None:
    if run.changed:
        if service.invoke_command("try-restart") is None and service.synapse_installed():
            # Nothing to restart it through: it may still run, on the old database.
            say(messages.RESTART_BY_HAND.format(path=paths.SNIPPET))
            return
        service.restart_synapse("try-restart")


def store_backup_keep(run: Run, step: p.StoreBackupKeep) -> None:
    """The apt hook runs outside debconf: it reads the number of dumps from a file."""
    state_files.store_keep(step.value)


def remove_orphaned_dropins(run: Run, step: p.RemoveOrphanedDropins) -> None:
    for path in step.paths:
        for removed in tuning.remove_orphan(path):
            say(messages.ORPHAN_REMOVED.format(path=removed))


def workers(run: Run, step: run_workers.Workers) -> None:
    run.changed = run_workers.carry_out(run.conv, step, run.owner) or run.changed


def admin_account(conv: Conversation, user: str, password: str) -> None:
    """Create the admin account, or change its password; explain and ask again what
    Synapse refuses (its password policy, an account that is someone else's)."""
    while True:
        try:
            outcome = admin.ensure(user, password, say=say, conv=conv)
            break
        except SetupError as err:
            if not conv.ask_admin_again(err.message):
                raise
            user, password = conv.admin_answers()
            if not user:
                return
    say(outcome.message)
    if outcome.applied:
        conv.clear_admin_password()


HANDLERS: dict[type, Any] = {
    p.Upgrade: upgrade,
    p.Defer: defer,
    p.Provision: provision_step,
    p.KeepSqlite: keep_sqlite,
    p.Port: port,
    p.WriteSnippet: write_snippet,
    p.Restart: restart,
    p.StoreBackupKeep: store_backup_keep,
    p.RemoveOrphanedDropins: remove_orphaned_dropins,
    run_workers.Workers: workers,
}
