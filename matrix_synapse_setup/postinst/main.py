"""Entry points for the maintainer scripts.

The shell scripts call ``/usr/share/matrix-synapse-setup/maintscript-helper
<script> <dpkg arguments...>``.  The questions are asked by debian/config, a
shell script (before the package is unpacked); the postinst's helper checks the
answers, asks again what it refuses, and applies them.  An unknown script or
action is accepted and ignored.

Output goes to stderr only: the debconf pipe is on stdin and fd 3 (or fd 1).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from matrix_synapse_setup.core import messages, paths
from matrix_synapse_setup.core.errors import SetupError, run
from matrix_synapse_setup.core.output import say
from matrix_synapse_setup.core.settings import Settings, drop_libpq_environment, is_local
from matrix_synapse_setup.core.steps import Step, changed
from matrix_synapse_setup.dpkg import debconf as conversation
from matrix_synapse_setup.dpkg import packages
from matrix_synapse_setup.dpkg import ucf as ucf_files
from matrix_synapse_setup.dpkg.debconf import (
    ABORT,
    IGNORE,
    KEEP_SQLITE,
    MIGRATE,
    RETRY,
    START_EMPTY,
    Conversation,
)
from matrix_synapse_setup.files import atomic, snippet
from matrix_synapse_setup.files import lock as locking
from matrix_synapse_setup.files import state as state_files
from matrix_synapse_setup.synapse.service import daemon_reload, restart_synapse

if TYPE_CHECKING:
    from matrix_synapse_setup.synapse import config as synapse_config

# Imported where they are used (migration, synapse_config, provision, psycopg, jinja2):
# a maintainer script pays only for what its path needs.


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    drop_libpq_environment()
    return run(lambda: dispatch(args), prog=paths.PACKAGE)


def dispatch(argv: list[str]) -> int:
    script = argv[0] if argv else ""
    action = argv[1] if len(argv) > 1 else ""
    if script == "postinst" and action == "configure":
        old_version = argv[2] if len(argv) > 2 else ""
        retire_runtime_dropin(old_version)
        if snippet_deleted_by_hand(old_version):
            say(messages.SNIPPET_DELETED.format(path=paths.SNIPPET))
            return 0
        return postinst_configure(Conversation(conversation.connect()))
    if script == "postinst" and action == "triggered":
        names = " ".join(argv[2:]).split()
        status = 0
        if packages.PROVISION_TRIGGER in names:
            status = postinst_configure(Conversation(conversation.connect()), deferred=True)
        if set(names) - {packages.PROVISION_TRIGGER}:
            status = status or triggered()
            if not status and conversation.debconf_running():
                try:
                    admin_account(Conversation(conversation.connect()))
                except SetupError as err:
                    # Synapse's package is what is being configured: its trigger
                    # must not fail because of the account; the admin can retry.
                    say(err.message)
        return status
    return 0  # other scripts and actions: nothing to do (and an old helper stays usable)


# --- postinst configure ----------------------------------------------------------


def _has_password(found: dict[str, Any] | None) -> bool:
    return bool(found and isinstance(found.get("password"), str) and found["password"])


def snippet_deleted_by_hand(old_version: str, path: Path = paths.SNIPPET) -> bool:
    """An upgrade finds no snippet where ucf knows one was installed: the admin deleted
    it, as one deletes a conffile; respected (dpkg-reconfigure writes it again)."""
    if not old_version or os.environ.get("DEBCONF_RECONFIGURE") or path.exists():
        return False
    return ucf_files.ucf_state(path).registered


# The first version that ships Synapse's drop-in under /usr/lib (debian/
# matrix-synapse-setup.install); those before wrote it into /etc at run time.
STATIC_DROPIN_SINCE = "0.5.0~"


def retire_runtime_dropin(old_version: str) -> None:
    """On the first configure of this version (install or upgrade from one that wrote
    the drop-in at run time): remove the drop-in those versions wrote in /etc, unless
    the admin edited it, and let systemd see the one we ship."""
    if os.environ.get("DEBCONF_RECONFIGURE"):
        return
    if old_version and not packages.compare_versions(old_version, "lt", STATIC_DROPIN_SINCE):
        return
    removed = snippet.remove_runtime_dropin()
    if removed is False:
        say(messages.RUNTIME_DROPIN_EDITED.format(path=snippet.RUNTIME_DROPIN))
    daemon_reload()


def postinst_configure(conv: Conversation, *, deferred: bool = False) -> int:
    from matrix_synapse_setup.postgres.provision import Superuser

    # A first install (no snippet yet) provisions: its superuser child starts before
    # the answers are checked, so that psycopg's import, in the child, is done on the
    # other core by the time the plan is carried out.  Other runs start one in apply(),
    # when they get there.  (Forking on an unchanged run does not pay: the fork's
    # copy-on-write costs more than the import a child could take away, Jinja2's for
    # the render included.)
    early = Superuser.early() if not paths.SNIPPET.exists() else None
    try:
        return _postinst_configure(conv, deferred, early)
    finally:
        if early is not None:
            early.close()


def _postinst_configure(conv: Conversation, deferred: bool, early: Any) -> int:
    from matrix_synapse_setup.postgres.queries import ServerUnavailable

    # ucfq (Perl) answers while the answers are checked: an unchanged run needs it.
    with ucf_files.UcfQuery() as ucf:
        check_answers(conv)
        with locking.exclusive(say):
            done = unchanged(conv, conv.answers(), ucf)
    if done:
        store_backup_keep(conv)
        admin_account(conv)  # takes the lock itself
        return 0
    if not deferred and is_local(conv.answers().host):
        pending = packages.postgresql_being_installed()
        if pending:
            # apt orders configuration by Depends only; PostgreSQL (a Recommends)
            # may be configured after us.  Its postinst creates the postgres user
            # and the cluster: provision from our trigger, which dpkg runs after.
            if packages.trigger(packages.PROVISION_TRIGGER):
                say(messages.DEFERRED.format(packages=", ".join(pending)))
                return 0
    while True:
        answers = conv.answers()
        try:
            with locking.exclusive(say):
                apply(conv, answers, early)
            store_backup_keep(conv)
            admin_account(conv)
            return 0
        except ServerUnavailable as err:
            choice = conv.ask_failure(err.message)
            if choice == RETRY:
                continue
            if choice == IGNORE:
                # The password was not applied: it stays (in debconf's root-only
                # passwords.dat) for the dpkg-reconfigure that will apply it.
                say(messages.IGNORED.format(path=paths.SNIPPET))
                return 0
            assert choice == ABORT  # noqa: S101 - ask_failure returns one of three
            raise SetupError(f"{err.message}\n{messages.ABORTED}") from None
        except SetupError as err:
            # Wrong answers or a database Synapse cannot use: never "ignore".
            if not conv.setup_error(err.message):
                raise
            found = None
            with contextlib.suppress(SetupError):
                found = snippet.read()
            conv.ask(known_password=_has_password(found), again=True)


def store_backup_keep(conv: Conversation) -> None:
    """The apt hook runs outside debconf: it reads backup-keep (checked by check_answers)
    from a small file (state_files.KEEP_FILE), written only when the answer changed, and only
    by a run that succeeded (a refused or ignored run changes nothing)."""
    keep = conv.get(conversation.BACKUP_KEEP).strip() or str(paths.DEFAULT_BACKUP_KEEP)
    state_files.store_keep(keep)


def check_answers(conv: Conversation) -> None:
    """Validate what debian/config asked (or what was preseeded); explain and ask
    again what is refused (SetupError when nobody can answer)."""
    try:
        found = snippet.read()
    except SetupError:
        found = None  # decide() says why the file is not used
    conv.ask(known_password=_has_password(found))


def resolve_password(answers: conversation.Answers, current: dict[str, Any] | None) -> str:
    """The new password, else the one in use, else (local) a new random one."""
    if answers.password:
        return answers.password
    if _has_password(current):
        return str(current["password"])  # type: ignore[index]
    if is_local(answers.host):
        import secrets

        return secrets.token_urlsafe(32)
    raise SetupError(messages.REMOTE_PASSWORD_NEEDED.format(user=answers.user))


def wanted(
    answers: conversation.Answers, current: dict[str, Any] | None
) -> tuple[Settings, str | None]:
    """The settings the answers ask for (validated), and the snippet's password stamp."""
    password = resolve_password(answers, current)
    given = answers.settings_answers() | {"password": password}
    if is_local(answers.host) and current and is_local(str(current.get("host") or "")):
        # The TLS questions are not asked for the local cluster: what the snippet has
        # (an admin's edit, or the default we wrote) stays.
        given["sslmode"] = current.get("sslmode") or None
        given["sslrootcert"] = current.get("sslrootcert") or None
    settings = Settings.from_answers(**given)
    previous = current.get("password_set") if current else None
    if current and current.get("password") == settings.password:
        return settings, previous
    return settings, snippet.new_password_stamp(previous)


def unchanged(
    conv: Conversation, answers: conversation.Answers, ucf: ucf_files.UcfQuery | None = None
) -> bool:
    """True when this run has nothing to change, and proved it: the answers are the
    installed snippet's values, writing the snippet, the password file and the drop-in
    would change nothing, and Synapse's role logs in to a database that is right
    (provision.quick_verify).  Then nothing is written, ucf is not called and nothing
    restarts: every upgrade runs this.  False sends the run down the full
    path, which inspects again, changes what must change and explains any failure.
    *ucf*: ucfq's answer, asked before the lock was taken (ucf_files.UcfQuery: it does not
    count if the file changed since)."""
    try:
        current = snippet.read()
        if current is None:
            return False
        settings, stamp = wanted(answers, current)
    except SetupError:
        return False  # the full path says what is wrong
    if stamp != current.get("password_set") or not snippet.same_values(current, settings):
        return False
    from matrix_synapse_setup.postgres.provision import quick_verify

    # The login (network and the server's work) runs while this thread renders.
    proof: dict[str, Any] = {}
    worker = threading.Thread(target=lambda: proof.update(steps=quick_verify(settings)))
    worker.start()
    try:
        text = snippet.render(settings, password_set=stamp)
        state = ucf.state() if ucf is not None else None
        on_disk = ucf_files.installed(text, settings, ucf=state)
    except SetupError:
        on_disk = False
    finally:
        worker.join()
    if not on_disk or proof.get("steps") is None:
        return False
    if settings.local and not tuned_as_answered(conv, settings):
        return False
    for step in proof["steps"]:
        say(str(step))
    conv.clear_password()  # a preseeded password equal to the one in use
    say(messages.ALL_UNCHANGED.format(path=paths.SNIPPET))
    return True


@dataclasses.dataclass(frozen=True)
class Plan:
    """What this run will do, decided before anything changes (see decide())."""

    settings: Settings
    text: str  # the snippet to write, already parsed back and compared
    synapse: synapse_config.SynapseState | None  # when Synapse's SQLite holds data
    choice: str | None  # then: the sqlite-data answer
    current: dict[str, Any] | None = None  # the installed snippet's values, when usable

    def describe(self) -> list[str]:
        where = f"{self.settings.dbname} on {self.settings.host}:{self.settings.port}"
        first = "provision the role and database" if self.settings.local else "verify database"
        lines = [f"{first} {where}"]
        if self.choice == KEEP_SQLITE:
            return [*lines, "leave Synapse on SQLite"]
        if self.choice == MIGRATE:
            lines += ["port Synapse's SQLite data (synapse_port_db)", "compare row counts"]
        lines.append(f"write {paths.SNIPPET} (ucf)")
        if self.choice == MIGRATE:
            return [*lines, "start Synapse again if it ran"]
        return [*lines, "restart Synapse if anything changed"]


def decide(conv: Conversation, answers: conversation.Answers) -> Plan:
    """Inspect the snippet, Synapse's configuration and data; validate the answers;
    refuse what cannot work.  Changes nothing."""
    try:
        current = snippet.read()
    except SetupError as err:
        say(messages.SNIPPET_IGNORED.format(reason=err.message))
        current = None
    # A Synapse on SQLite with data, when our snippet does not exist yet: ask what to do.
    from matrix_synapse_setup.synapse import config as synapse_config

    state = None if paths.SNIPPET.exists() else synapse_config.inspect()
    synapse = state if state is not None and state.sqlite is not None else None
    choice = None
    if synapse is not None and synapse.sqlite is not None:
        # Asked here rather than in debian/config: only a look into Synapse's
        # database tells whether it holds anything to move (a Synapse that just
        # started on SQLite holds nothing, and its admin is not asked).
        facts = synapse.sqlite
        minutes = max(1, round(facts.estimate_seconds() / 60))
        choice = conv.ask_sqlite(facts.describe(), minutes)
    settings, stamp = wanted(answers, current)
    # parsed back and compared before anything happens
    text = snippet.render(settings, password_set=stamp)
    conflict = ucf_files.conflict(text, settings)
    if conflict and not os.environ.get("UCF_FORCE_CONFFNEW") and noninteractive(conv):
        # ucf would keep the admin's file, with values that no longer work once
        # the role has changed: refuse before changing anything.
        raise SetupError(
            messages.SNIPPET_CONFLICT.format(path=paths.SNIPPET, fields=", ".join(conflict))
        )
    if choice == MIGRATE:
        source = synapse_config.database_source_once_written(paths.SNIPPET, text)
        if source != paths.SNIPPET:
            raise SetupError(messages.SNIPPET_OVERRIDDEN.format(source=source, path=paths.SNIPPET))
    if state is not None and state.database.engine != "sqlite3":
        refuse_another_database(state.database, settings, text)
    return Plan(settings, text, synapse, choice, current)


def refuse_another_database(
    database: synapse_config.Database, settings: Settings, text: str
) -> None:
    """Synapse already uses a PostgreSQL database that another file names: writing our
    snippet must not point it at a different one (its data would seem gone)."""
    from matrix_synapse_setup.synapse import config as synapse_config

    args = database.args
    theirs = (
        str(args.get("host") or "localhost"),
        int(args.get("port") or 5432),
        str(args.get("dbname") or args.get("database") or ""),
    )
    if theirs == (settings.host, settings.port, settings.dbname):
        return
    if synapse_config.database_source_once_written(paths.SNIPPET, text) != paths.SNIPPET:
        return  # the other file comes later: ours would change nothing for Synapse
    host, port, dbname = theirs
    raise SetupError(
        messages.OTHER_DATABASE_IN_USE.format(
            dbname=dbname, host=host, port=port, source=database.source, path=paths.SNIPPET
        )
    )


def apply(conv: Conversation, answers: conversation.Answers, early: Any = None) -> None:
    """Decide a plan (inspect, validate), print it, then carry it out step by step.
    *early*: a superuser child started before (see postinst_configure), used if unused."""
    from matrix_synapse_setup.postgres.provision import Superuser

    # The superuser part's child starts now, unless one is waiting already: it imports
    # psycopg while we decide, and does nothing unless the plan is carried out.
    child = early if early is not None and not early.used else None
    if child is None and is_local(answers.host):
        child = Superuser.early()
    try:
        plan = decide(conv, answers)
        say("plan: " + "; ".join(plan.describe()))
        execute(conv, plan, child)
    finally:
        if child is not None:
            child.close()


def execute(conv: Conversation, plan: Plan, child: Any = None) -> None:
    from matrix_synapse_setup.postgres.provision import provision

    settings = plan.settings
    facts: dict[str, Any] = {}
    tune = tune_request(conv, settings) if settings.local else None
    steps = provision(settings, child=child, facts=facts, tune=tune)
    for step in steps:
        say(str(step))
    owner = atomic.ownership()
    sqlite = plan.synapse.sqlite if plan.synapse is not None else None
    if plan.choice == KEEP_SQLITE:
        conv.clear_password()
        say(messages.KEEP_SQLITE.format(path=sqlite.path))  # type: ignore[union-attr]
        return
    if plan.choice == MIGRATE:
        migrate(conv, plan, owner)
        return
    file_changed = ucf_files.install(conv, plan.text, settings, owner)
    if file_changed and snippet.same_values(plan.current, settings):
        # The same connection in another form (an upgrade moving the password from
        # the YAML to the password file): Synapse need not restart for it.
        file_changed = False
    if plan.choice == START_EMPTY:
        say(messages.START_EMPTY.format(path=sqlite.path))  # type: ignore[union-attr]
    kept = ucf_files.kept(settings)
    if kept is not None:
        # The admin kept an edited file (ucf's question): make the role match the
        # file Synapse reads, and show its values as the current answers.
        settings = kept
        more = provision(settings)
        for step in more:
            say(str(step))
        steps += more
        for key, question in conversation.SNIPPET_QUESTIONS.items():
            conv.set(question, str(getattr(settings, key)))
    if tune is not None and facts.get("tuning") is not None:
        report_tuning(conv, tune, facts["tuning"])
    conv.clear_password()
    if owner.uid == 0 and owner.gid == 0:
        say(messages.NO_SYNAPSE_USER.format(user=paths.SYNAPSE_USER, path=paths.SNIPPET))
    if changed(steps) or file_changed:
        restart_synapse("try-restart")


def tune_request(conv: Conversation, settings: Settings) -> dict[str, Any] | None:
    """What the superuser child is to do with the PostgreSQL settings for Synapse
    (tune-postgresql; tuning.apply does it, on its connection as postgres).  None when
    the local cluster is not one of Debian's layout (/etc/postgresql), or does not read
    conf.d.  The template's default (yes) holds for a cluster that serves only Synapse:
    one that holds other databases is tuned only when an admin said yes (preseeded or
    answered), or when it was tuned before."""
    from matrix_synapse_setup.postgres import tuning

    cluster = tuning.cluster_for_port(settings.port)
    if cluster is None:
        return None
    wanted, explicit = conv.tune()
    if wanted and not cluster.includes_conf_d:
        say(messages.TUNING_NO_INCLUDE_DIR.format(conf=cluster.conffile))
        return None
    return {
        "path": str(cluster.dropin),
        "text": tuning.text_for(cluster) if wanted else None,
        "only_if_alone": wanted and not explicit,
        "label": cluster.label,
        "unit": cluster.unit,
    }


def report_tuning(conv: Conversation, request: dict[str, Any], answer: dict[str, Any]) -> None:
    """Say what tuning.apply did; record "no" when the settings are not applied."""
    label, path = request["label"], request["path"]
    if answer.get("skipped_for"):
        others = ", ".join(answer["skipped_for"])
        say(messages.TUNING_SHARED_CLUSTER.format(cluster=label, others=others))
        conv.set(conversation.TUNE, "false")  # what is applied, and what reconfigure shows
        return
    if answer.get("error"):
        say(messages.TUNING_FAILED.format(path=path, reason=answer["error"]))
        return
    say(str(Step(**answer["step"])))
    if answer.get("refused"):
        refused = ", ".join(answer["refused"])
        say(messages.TUNING_REFUSED.format(cluster=label, path=path, names=refused))
        conv.set(conversation.TUNE, "false")
    elif answer.get("pending"):
        pending = ", ".join(answer["pending"])
        say(messages.TUNING_PENDING.format(cluster=label, names=pending, unit=request["unit"]))


def tuned_as_answered(conv: Conversation, settings: Settings) -> bool:
    """True when tune() would change nothing (reads only; for an unchanged run).  A
    cluster never tuned because it serves other databases: as answered too."""
    from matrix_synapse_setup.postgres import tuning

    cluster = tuning.cluster_for_port(settings.port)
    if cluster is None:
        return True
    wanted, explicit = conv.tune()
    if wanted and not cluster.includes_conf_d:
        return True  # never tuned (tune_request says why, on the full path)
    if wanted and not explicit and not cluster.dropin.exists():
        return False  # the full path asks the cluster whether it serves only Synapse
    return tuning.current(cluster, wanted)


def migrate(conv: Conversation, plan: Plan, owner: atomic.Ownership) -> None:
    """Port Synapse's SQLite data, then switch it (the snippet and the drop-in)."""
    assert plan.synapse is not None and plan.synapse.sqlite is not None  # noqa: S101
    sqlite = plan.synapse.sqlite

    def switch() -> None:
        ucf_files.install(conv, plan.text, plan.settings, owner)

    say(sqlite.describe())
    from matrix_synapse_setup.synapse import porting as migration

    result = migration.migrate(sqlite, plan.settings, plan.synapse.config, switch, say=say)
    for step in result.steps:
        say(str(step))
    conv.clear_password()
    backup = result.backup or "(none)"
    say(messages.MIGRATED.format(path=sqlite.path, backup=backup, snippet=paths.SNIPPET))


def noninteractive(conv: Conversation) -> bool:
    """True when nobody can answer ucf's question about an edited file."""
    return not conv.interactive()


# --- the first admin account ------------------------------------------------------------


def admin_account(conv: Conversation) -> None:
    """Create the admin account debconf names, or change its password; nothing when no
    account is asked for, or when the one asked for is the one this package created
    and no new password was given (no request to Synapse then)."""
    user, password = conv.admin_answers()
    if not user:
        return
    record = state_files.read_record()
    if not password and state_files.created_here(user, record):
        return
    from matrix_synapse_setup.postinst import admin

    while True:
        try:
            with locking.exclusive(say):
                outcome = admin.ensure(user, password, say=say, conv=conv)
            break
        except SetupError as err:
            # Synapse refused the password (its password policy), or the account is
            # someone else's: explain, and ask again when someone can answer.
            if not conv.ask_admin_again(err.message):
                raise
            user, password = conv.admin_answers()
            if not user:
                return
    say(outcome.message)
    if outcome.applied:
        conv.clear_admin_password()


# --- postinst triggered --------------------------------------------------------------


def triggered(path: Path = paths.SNIPPET) -> int:
    """Synapse's unit file appeared (or changed): let its user read the snippet (the
    drop-in that orders it after PostgreSQL is shipped, under /usr/lib)."""
    if not path.exists():
        return 0
    owner = atomic.ownership()
    changed = atomic.fix_ownership(path, owner)
    for suffix in paths.UCF_BACKUP_SUFFIXES:
        atomic.fix_ownership(path.with_name(path.name + suffix), owner)
    changed = atomic.fix_ownership(paths.PASSFILE, atomic.passfile_ownership()) or changed
    if changed:
        say(messages.WROTE_SNIPPET.format(path=path, owner=owner.describe()))
        restart_synapse("restart")
    return 0
