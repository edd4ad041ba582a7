"""Every step of one maintainer-script run, decided from the inspected state alone.

:func:`plan` reads nothing and changes nothing: a test gives it a :class:`State` built
by hand.  What it refuses (a database Synapse cannot be pointed at, an edited snippet
nobody can be asked about) it refuses before anything has changed.  An empty plan is
an unchanged run: the answers are what is installed, and the login as Synapse's role
proved that the database is right.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

from matrix_synapse_setup.core import messages, paths
from matrix_synapse_setup.core.errors import SetupError
from matrix_synapse_setup.core.settings import Settings, is_local, validate_keep
from matrix_synapse_setup.dpkg.debconf import KEEP_SQLITE, MIGRATE, START_EMPTY, Answers
from matrix_synapse_setup.files import snippet
from matrix_synapse_setup.postgres import budget
from matrix_synapse_setup.postinst import upgrades
from matrix_synapse_setup.postinst import workers as run_workers
from matrix_synapse_setup.postinst.state import State
from matrix_synapse_setup.postinst.workers import Workers
from matrix_synapse_setup.synapse import config as synapse_config
from matrix_synapse_setup.synapse import porting
from matrix_synapse_setup.synapse.config import Database, SqliteFacts, SynapseState

# --- the steps ----------------------------------------------------------------------------
# Named tuples: immutable records, and cheap to define on the path every run takes.


class Upgrade(NamedTuple):
    """A change that only an upgrade from an older version makes (see .upgrades)."""

    name: str

    def describe(self) -> str:
        return upgrades.BY_NAME[self.name].what


class Defer(NamedTuple):
    """PostgreSQL is unpacked in this dpkg run but not configured: provision from our
    trigger, which dpkg runs once it is."""

    packages: tuple[str, ...]

    def describe(self) -> str:
        return f"wait for {', '.join(self.packages)} (our trigger provisions then)"


class TuneRequest(NamedTuple):
    """What the postgres child does with the PostgreSQL settings for Synapse."""

    path: str
    text: str | None  # None: remove our file
    only_if_alone: bool  # the template's default: only a cluster that serves Synapse only
    label: str
    unit: str

    def as_request(self) -> dict[str, Any]:
        return self._asdict()


class Provision(NamedTuple):
    """Local: create or update the role and database (and tune), as postgres.  Remote:
    verify only.  Then log in as Synapse's role."""

    settings: Settings
    tune: TuneRequest | None = None

    def describe(self) -> str:
        s = self.settings
        where = f"{s.dbname} on {s.host}:{s.port}"
        first = "provision the role and database" if s.local else "verify database"
        tuned = f"; PostgreSQL settings for Synapse in {self.tune.path}" if self.tune else ""
        return f"{first} {where}{tuned}"


class KeepSqlite(NamedTuple):
    sqlite: SqliteFacts

    def describe(self) -> str:
        return "leave Synapse on SQLite"


class Port(NamedTuple):
    """Copy Synapse's SQLite data to PostgreSQL, compare, then write the snippet."""

    synapse: SynapseState
    settings: Settings
    text: str

    def describe(self) -> str:
        return (
            "port Synapse's SQLite data (synapse_port_db; a stopped Synapse's pending "
            "background updates first, on the snapshot); compare row counts; "
            f"write {paths.SNIPPET} (ucf); start Synapse again if it ran"
        )


class WriteSnippet(NamedTuple):
    settings: Settings
    text: str
    same_connection: bool = False  # the values are the installed ones, in another form
    start_empty: Path | None = None  # Synapse's SQLite file, left behind on purpose
    before: str | None = None  # the file now
    unedited: bool = True  # ucf's record: nobody edited the file since ucf wrote it

    def describe(self) -> str:
        return f"write {paths.SNIPPET} (ucf)"


class Restart(NamedTuple):
    """try-restart Synapse if provisioning or the snippet changed anything."""

    def describe(self) -> str:
        return "restart Synapse if anything changed"


class StoreBackupKeep(NamedTuple):
    value: str

    def describe(self) -> str:
        return f"keep {self.value} dumps before Synapse upgrades"


class AdminAccount(NamedTuple):
    user: str
    password: str

    def __repr__(self) -> str:
        return f"AdminAccount(user={self.user!r})"  # never the password

    def describe(self) -> str:
        what = "create or update" if self.password else "check"
        return f"{what} the admin account {self.user} (when Synapse answers)"


class RemoveOrphanedDropins(NamedTuple):
    """Our PostgreSQL settings left in the directory of a cluster that is gone
    (pg_dropcluster keeps a conf.d that is not empty): remove them, and the directories
    they kept alive when those are then empty."""

    paths: tuple[Path, ...]

    def describe(self) -> str:
        return "remove " + ", ".join(map(str, self.paths)) + " (its cluster is gone)"


PlanStep = (
    Upgrade
    | Defer
    | Provision
    | KeepSqlite
    | Port
    | WriteSnippet
    | Restart
    | StoreBackupKeep
    | AdminAccount
    | RemoveOrphanedDropins
    | Workers
)


class Plan(NamedTuple):
    steps: tuple[PlanStep, ...] = ()
    notes: tuple[str, ...] = ()  # said before anything is done
    settings: Settings | None = None  # what the snippet says, after this run
    database_unchanged: bool = False  # proved: the snippet and the database are right
    proof: tuple[Any, ...] = ()  # then: the checks that proved it
    stop: bool = False  # nothing after the notes: the admin's deletion is respected

    def __bool__(self) -> bool:
        return bool(self.steps)

    def describe(self) -> list[str]:
        return [step.describe() for step in self.steps]

    def of(self, kind: type) -> list[Any]:
        return [step for step in self.steps if isinstance(step, kind)]


# --- deciding -------------------------------------------------------------------------------


def resolve_password(answers: Answers, current: str | None, fresh: str) -> str:
    """The new password, else the one in use, else (local) *fresh*, a random one."""
    if answers.password:
        return answers.password
    if current:
        return current
    if is_local(answers.host):
        return fresh
    raise SetupError(messages.REMOTE_PASSWORD_NEEDED.format(user=answers.user))


def wanted(state: State) -> tuple[Settings, str | None]:
    """The settings the answers ask for (validated), and the snippet's password stamp."""
    answers, current = state.answers, state.on_disk.values
    password = resolve_password(answers, state.on_disk.password, state.fresh_password)
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
    return settings, snippet.new_password_stamp(previous, state.clock)


def may_be_unchanged(state: State, settings: Settings, stamp: str | None) -> bool:
    """The answers are the installed snippet's values: worth a login to prove it."""
    current = state.on_disk.values
    return (
        current is not None
        and stamp == current.get("password_set")
        and snippet.same_values(current, settings)
    )


def tuned_as_answered(state: State) -> bool:
    """True when the PostgreSQL settings for Synapse are as answered.  A cluster never
    tuned because it serves other databases counts as answered too."""
    cluster = state.cluster
    if cluster is None:
        return True
    wanted_, explicit = state.tune
    if wanted_ and not cluster.includes_conf_d:
        return True  # never tuned: the full path says why
    if wanted_ and not explicit and not cluster.dropin_exists:
        return False  # only the full path can ask the cluster whether it serves only Synapse
    return cluster.current


def tune_request(state: State) -> tuple[TuneRequest | None, list[str]]:
    """What the postgres child is to do with the settings file; and what to say."""
    cluster = state.cluster
    if cluster is None:
        return None, []
    wanted_, explicit = state.tune
    if wanted_ and not cluster.includes_conf_d:
        return None, [messages.TUNING_NO_INCLUDE_DIR.format(conf=cluster.conffile)]
    request = TuneRequest(
        path=str(cluster.dropin),
        text=cluster.text if wanted_ else None,
        only_if_alone=wanted_ and not explicit,
        label=cluster.label,
        unit=cluster.unit,
    )
    return request, []


def database_unchanged(state: State, settings: Settings, text: str) -> bool:
    """Writing the snippet, the password file and tuning would change nothing, and the
    login as Synapse's role proved the database right."""
    disk = state.on_disk
    ucf = disk.ucf
    return (
        state.proof is not None
        and disk.text == text
        and disk.owned
        and ucf is not None
        and ucf.unedited
        and ucf.registered
        and disk.passfile_text == snippet.passfile_text(settings)
        and disk.passfile_owned
        and (not settings.local or tuned_as_answered(state))
    )


def conflict(state: State, text: str, settings: Settings) -> list[str] | None:
    """The managed fields an admin's edited snippet has otherwise than *text*; None
    when the file can simply be written (absent, ours, equal, or equal values)."""
    disk = state.on_disk
    if not disk.exists or disk.text == text:
        return None
    if disk.ucf is not None and disk.ucf.unedited:
        return None  # not edited since ucf installed it
    try:
        found = snippet.parse(str(disk.text))
    except SetupError:
        return ["the whole file"]
    return snippet.differences(found, settings) or None


def refuse_another_database(state: State, database: Database, settings: Settings) -> None:
    """Synapse already uses a PostgreSQL database that another file names: writing our
    snippet must not point it at a different one (its data would seem gone)."""
    args = database.args
    theirs = (
        str(args.get("host") or "localhost"),
        int(args.get("port") or 5432),
        str(args.get("dbname") or args.get("database") or ""),
    )
    if theirs == (settings.host, settings.port, settings.dbname):
        return
    if state.database_overridden_by is not None:
        return  # the other file comes after ours: ours would change nothing for Synapse
    host, port, dbname = theirs
    raise SetupError(
        messages.OTHER_DATABASE_IN_USE.format(
            dbname=dbname, host=host, port=port, source=database.source, path=paths.SNIPPET
        )
    )


def max_connections(state: State) -> int | None:
    """The local cluster's max_connections that every Synapse process's pool needs
    (the tuning writes it when Debian's 100 is not enough); None for an answer the
    plan refuses."""
    try:
        layout = run_workers.wanted_layout(state.workers, state.cores)
    except SetupError:
        return None
    return budget.needed_max_connections(
        run_workers.connections_needed(layout), budget.DEFAULT_LIMITS
    )


def workers_step(state: State, settings: Settings) -> tuple[Workers | None, list[str]]:
    """What the workers' answers call for, and what to say (refused before anything
    changed: a Redis server missing, a remote server whose connections cannot hold every
    pool, Synapse's listeners set after our snippet)."""
    disk = state.workers_on_disk
    if disk is None:
        return None, []
    layout = run_workers.wanted_layout(state.workers, state.cores)
    if layout is not None and not state.homeserver_exists:
        # The shared snippet repeats Synapse's listeners, which do not exist yet: our
        # trigger on Synapse's unit sets the workers up when Synapse arrives.
        return None, [messages.WORKERS_WAIT_FOR_SYNAPSE.format(path=synapse_config.HOMESERVER)]
    if layout is not None and not state.worker_python:
        raise SetupError(messages.WORKERS_NEED_UPSTREAM_SYNAPSE)
    listeners, source = state.listeners if state.listeners is not None else (None, None)
    if layout is not None:
        if not settings.local:
            run_workers.refuse_budget(layout, state.server_limits, settings.host)
        if (
            source is not None
            and source.parent == paths.WORKERS_SNIPPET.parent
            and (source.name > paths.WORKERS_SNIPPET.name)
        ):
            raise SetupError(
                messages.WORKERS_LISTENERS_LATER.format(source=source, path=paths.WORKERS_SNIPPET)
            )
    step = run_workers.decide(
        state.workers,
        state.cores,
        disk,
        listeners=listeners,
        redis=state.redis,
        fresh=state.fresh_secrets,
    )
    return step, []


def extras(state: State, workers: Workers | None = None) -> list[PlanStep]:
    """What every successful run does besides the database: Synapse's workers, our
    settings left behind by a cluster that is gone, the apt hook's number of dumps, and
    the admin account."""
    steps: list[PlanStep] = [workers] if workers is not None else []
    if state.orphaned_dropins:
        steps.append(RemoveOrphanedDropins(state.orphaned_dropins))
    keep = str(validate_keep(state.backup_keep.strip() or paths.DEFAULT_BACKUP_KEEP))
    if keep != state.backup_keep_stored:
        steps.append(StoreBackupKeep(keep))
    if state.admin_user and (state.admin_password or not state.admin_created_here):
        steps.append(AdminAccount(state.admin_user, state.admin_password))
    return steps


def plan(state: State) -> Plan:
    """Every step of this run.  Raises SetupError for what is refused."""
    upgrades: list[PlanStep] = [Upgrade(name) for name in state.upgrades_due]
    disk = state.on_disk
    if state.old_version and not state.reconfigure and disk.deleted_by_hand:
        # Respected on an upgrade, as a deleted conffile is; dpkg-reconfigure writes
        # it again.
        notes = (messages.SNIPPET_DELETED.format(path=paths.SNIPPET),)
        return Plan(tuple(upgrades), notes, stop=True)
    notes: list[str] = []
    if disk.problem is not None:
        notes.append(messages.SNIPPET_IGNORED.format(reason=disk.problem))
    settings, stamp = wanted(state)
    workers, said = workers_step(state, settings)
    notes += said
    if state.redis_pending and not state.deferred and workers is not None:
        # Redis's own postinst makes the group its configuration is given to.
        return Plan((*upgrades, Defer(state.redis_pending)), tuple(notes), settings)
    text = snippet.render_template(state.template, settings, password_set=stamp)
    if may_be_unchanged(state, settings, stamp) and database_unchanged(state, settings, text):
        return Plan(
            (*upgrades, *extras(state, workers)),
            tuple(notes),
            settings,
            database_unchanged=True,
            proof=tuple(state.proof or ()),
        )
    if state.postgresql_pending and not state.deferred and settings.local:
        return Plan((*upgrades, Defer(state.postgresql_pending)), tuple(notes), settings)
    fields = conflict(state, text, settings)
    if fields and not state.force_conffnew and not state.interactive:
        # ucf would keep the admin's file, with values that no longer work once the
        # role has changed: refuse before changing anything.
        raise SetupError(
            messages.SNIPPET_CONFLICT.format(path=paths.SNIPPET, fields=", ".join(fields))
        )
    synapse = state.synapse
    choice = state.sqlite_choice if synapse is not None and synapse.sqlite is not None else None
    if choice == MIGRATE and state.database_overridden_by is not None:
        raise SetupError(
            messages.SNIPPET_OVERRIDDEN.format(
                source=state.database_overridden_by, path=paths.SNIPPET
            )
        )
    if synapse is not None and synapse.database.engine != "sqlite3":
        refuse_another_database(state, synapse.database, settings)
    tune, said = tune_request(state) if settings.local else (None, [])
    notes += said
    steps: list[PlanStep] = [*upgrades, Provision(settings, tune)]
    if choice == KEEP_SQLITE:
        steps.append(KeepSqlite(synapse.sqlite))  # type: ignore[union-attr,arg-type]
    elif choice == MIGRATE:
        if state.port_space is not None:
            # A port that cannot fit is refused here, before anything changes.
            porting.refuse_short(synapse.sqlite.path, state.port_space)  # type: ignore[union-attr]
        steps.append(Port(synapse, settings, text))  # type: ignore[arg-type]
    else:
        sqlite = synapse.sqlite if choice == START_EMPTY and synapse is not None else None
        steps.append(
            WriteSnippet(
                settings,
                text,
                same_connection=snippet.same_values(disk.values, settings),
                start_empty=sqlite.path if sqlite is not None else None,
                before=disk.text,
                unedited=not disk.exists or (disk.ucf is not None and disk.ucf.unedited),
            )
        )
        steps.append(Restart())
    return Plan((*steps, *extras(state, workers)), tuple(notes), settings)
