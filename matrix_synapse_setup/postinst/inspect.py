"""Read, once, everything a maintainer-script run decides on (see :mod:`.plan`).

Reading includes the two things that prove an unchanged run may write nothing: ucf's
record of the snippet, and a login as Synapse's role (``quick_verify``), made only when
the answers are the snippet's values.  Nothing here writes, but debconf: a question
whose answer only a look at Synapse's data can make worth asking (``sqlite-data``).
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import secrets
import threading
from pathlib import Path
from typing import Any

from matrix_synapse_setup.core import messages, paths
from matrix_synapse_setup.core.errors import SetupError
from matrix_synapse_setup.core.settings import Settings
from matrix_synapse_setup.core.steps import Step
from matrix_synapse_setup.dpkg import packages, ucf
from matrix_synapse_setup.dpkg.debconf import BACKUP_KEEP, MIGRATE, Conversation
from matrix_synapse_setup.files import atomic, snippet
from matrix_synapse_setup.files import state as state_files
from matrix_synapse_setup.postgres import provision, tuning
from matrix_synapse_setup.postinst import plan, upgrades
from matrix_synapse_setup.postinst import workers as run_workers
from matrix_synapse_setup.postinst.state import Cluster, OnDisk, State
from matrix_synapse_setup.synapse import config as synapse_config
from matrix_synapse_setup.synapse import porting, units, workers


def _read(path: Path) -> tuple[str | None, str | None]:
    """(text, problem): (None, None) when the file does not exist."""
    try:
        return path.read_text(encoding="utf-8"), None
    except FileNotFoundError:
        return None, None
    except (OSError, UnicodeDecodeError) as err:
        return None, type(err).__name__


@dataclasses.dataclass
class Reading:
    """The snippet as read so far; ucf's record of it is still being asked."""

    disk: OnDisk
    query: ucf.Query | None = None

    def finished(self) -> OnDisk:
        if self.query is None:
            return self.disk
        return self.disk._replace(ucf=self.query.state())

    def close(self) -> None:
        if self.query is not None:
            self.query.close()


def on_disk(owner: atomic.Ownership, passfile_owner: atomic.Ownership, *, ask_ucf: bool) -> Reading:
    """The snippet and its password file, each read once; ucf's record of the snippet
    (asked in the background) when it exists or *ask_ucf*."""
    text, unreadable = _read(paths.SNIPPET)
    passfile_text, _ = _read(paths.PASSFILE)
    values, problem = None, None
    if unreadable is not None:
        text = ""  # it exists; what it holds is not used
        problem = messages.SNIPPET_UNREADABLE.format(path=paths.SNIPPET, reason=unreadable)
    elif text is not None:
        try:
            found = snippet.parse(text, where=str(paths.SNIPPET))
            values = snippet.effective(found, passfile_text)
        except SetupError as err:
            problem = err.message
    exists = text is not None
    disk = OnDisk(
        text=text,
        values=values,
        problem=problem,
        owned=exists and atomic.owned(paths.SNIPPET, owner),
        passfile_text=passfile_text,
        passfile_owned=passfile_text is not None and atomic.owned(paths.PASSFILE, passfile_owner),
        owner=owner,
        passfile_owner=passfile_owner,
    )
    return Reading(disk, ucf.Query(paths.SNIPPET) if exists or ask_ucf else None)


def cluster_facts(
    port: int,
    tune: tuple[bool, bool],
    socket_dir: str | None = None,
    max_connections: int | None = None,
) -> Cluster | None:
    """The local cluster that the snippet's host and port reach (*socket_dir*: its
    Unix socket directory, when the host names one), when it is one of Debian's
    (/etc/postgresql).  Only that cluster is ever tuned; *max_connections*: what the
    connection budget needs of it (tuning.recommended)."""
    cluster = tuning.cluster_for_port(port, socket_dir=socket_dir)
    if cluster is None:
        return None
    wanted, _ = tune
    text = tuning.text_for(cluster, max_connections) if wanted and cluster.includes_conf_d else ""
    installed, _ = _read(cluster.dropin)
    if not wanted:
        current = installed is None
    else:
        current = not cluster.includes_conf_d or installed == text
    return Cluster(
        dropin=cluster.dropin,
        label=cluster.label,
        unit=cluster.unit,
        conffile=cluster.conffile,
        includes_conf_d=cluster.includes_conf_d,
        dropin_exists=installed is not None,
        text=text,
        current=current,
    )


def overridden_by(synapse: synapse_config.SynapseState) -> Path | None:
    """A file Synapse reads after our snippet that sets its database: ours, once
    written, would not count."""
    source = synapse.database.source
    files = synapse_config.config_files(including=paths.SNIPPET)
    if source is None or source not in files or source == paths.SNIPPET:
        return None
    return source if files.index(source) > files.index(paths.SNIPPET) else None


def read_on_disk(old_version: str = "") -> Reading:
    """The snippet as this run finds it (ucf's record of an absent one only on an
    upgrade: was it deleted by hand?)."""
    reconfigure = bool(os.environ.get("DEBCONF_RECONFIGURE"))
    return on_disk(
        atomic.ownership(),
        atomic.passfile_ownership(),
        ask_ucf=bool(old_version) and not reconfigure,
    )


def inspect(
    conv: Conversation,
    reading: Reading,
    *,
    old_version: str = "",
    deferred: bool = False,
    ask: bool = True,
    reconfigure: bool | None = None,
    interactive: bool | None = None,
) -> State:
    """What this run finds, *reading* (:func:`read_on_disk`) included.  *ask*: the
    maintainer script, which may ask the sqlite-data question; the plan command asks
    nothing, and says itself whether it stands for dpkg-reconfigure (*reconfigure*) at
    a terminal (*interactive*)."""
    if reconfigure is None:
        reconfigure = bool(os.environ.get("DEBCONF_RECONFIGURE"))
    # ucf's record is read last, after the login (see ucf.Query); when there is no
    # snippet, whether it was deleted by hand decides what else to read.
    disk = reading.disk if reading.disk.exists else reading.finished()
    answers = conv.answers()
    # An upgrade that finds the snippet deleted by hand changes nothing (see plan):
    # Synapse's data is not looked at, and no question about it is asked.
    deleted = bool(old_version) and not reconfigure and disk.deleted_by_hand
    synapse = None if disk.exists or deleted else synapse_config.inspect()
    choice = None
    if synapse is not None and synapse.sqlite is not None:
        # Asked here rather than in debian/config: only a look into Synapse's database
        # tells whether it holds anything to move (a Synapse that just started on
        # SQLite holds nothing, and its admin is not asked).
        facts = synapse.sqlite
        minutes = max(1, round(facts.estimate_seconds() / 60))
        choice = conv.ask_sqlite(facts.describe(), minutes) if ask else conv.sqlite_choice()
    admin_user, admin_password = conv.admin_answers()
    keep_stored, _ = _read(state_files.KEEP_FILE)
    preset, count = conv.workers()
    redis = workers.find_redis()
    with_workers = preset != workers.NONE
    found = State(
        answers=answers,
        on_disk=disk,
        template=None,  # loaded below, while the login waits on the server
        clock=datetime.datetime.now(datetime.UTC),
        fresh_password=secrets.token_urlsafe(32),
        old_version=old_version,
        reconfigure=reconfigure,
        deferred=deferred,
        interactive=bool(interactive),
        force_conffnew=bool(os.environ.get("UCF_FORCE_CONFFNEW")),
        tune=conv.tune(),
        synapse=synapse,
        database_overridden_by=overridden_by(synapse) if synapse is not None else None,
        sqlite_choice=choice,
        backup_keep=conv.get(BACKUP_KEEP),
        backup_keep_stored=keep_stored.strip() if keep_stored is not None else None,
        admin_user=admin_user,
        admin_password=admin_password,
        admin_created_here=bool(admin_user)
        and state_files.created_here(admin_user, state_files.read_record()),
        upgrades_due=upgrades.due(old_version, reconfigure=reconfigure),
        orphaned_dropins=tuning.orphaned_dropins(),
        workers=(preset, count),
        cores=os.cpu_count() or 1,
        workers_on_disk=run_workers.read(redis),
        listeners=synapse_config.listeners(paths.WORKERS_SNIPPET) if with_workers else None,
        homeserver_exists=synapse_config.HOMESERVER.exists(),
        worker_python=units.WORKER_PYTHON.exists() if with_workers else True,
        redis=redis,
        redis_pending=tuple(packages.being_installed(packages.REDIS_PACKAGES))
        if with_workers and not deferred
        else (),
        fresh_secrets=(workers.new_secret(), workers.new_secret()) if with_workers else ("", ""),
    )
    found = _with_database_facts(found, deferred=deferred)
    disk = reading.finished()
    if interactive is None:
        # Asked only where it matters: ucf would ask about an edited snippet.
        edited = disk.exists and not (disk.ucf is not None and disk.ucf.unedited)
        interactive = conv.interactive() if edited else False
    return found._replace(on_disk=disk, interactive=interactive)


def _with_database_facts(found: State, *, deferred: bool) -> State:
    """The facts that depend on the settings the answers ask for: the cluster's
    tuning, the free space a port needs, the proof by login, PostgreSQL packages still
    being installed; and the snippet's template."""
    try:
        settings, stamp = plan.wanted(found)
    except SetupError:
        return found._replace(template=snippet.load_template())  # the plan says why
    changes: dict[str, object] = {}
    if settings.local:
        changes["cluster"] = cluster_facts(
            settings.port, found.tune, settings.socket_dir, plan.max_connections(found)
        )
    elif found.workers[0] != workers.NONE:
        # The budget of a remote server's connections is checked before anything is
        # written; without an answer from the server the full path explains.
        changes["server_limits"] = provision.server_limits(settings)
    sqlite = found.synapse.sqlite if found.synapse is not None else None
    if found.sqlite_choice == MIGRATE and sqlite is not None:
        changes["port_space"] = porting.port_space(sqlite, settings)
    proof = None
    if plan.may_be_unchanged(found, settings, stamp):
        changes["template"], steps = _template_while_logging_in(settings)
        proof = tuple(steps) if steps is not None else None
    else:
        changes["template"] = snippet.load_template()
    changes["proof"] = proof
    if proof is None and settings.local and not deferred:
        changes["postgresql_pending"] = tuple(packages.postgresql_being_installed())
    return found._replace(**changes)


def _template_while_logging_in(settings: Settings) -> tuple[Any, list[Step] | None]:
    """The compiled template, and quick_verify's proof: the login runs in a thread while
    Jinja2 loads, because it mostly waits on the server, a large share of an unchanged run."""
    proof: list[list[Step] | None] = [None]

    def log_in() -> None:
        try:
            proof[0] = provision.quick_verify(settings)
        except Exception:  # noqa: BLE001 - no proof: the full path verifies and explains
            proof[0] = None

    login = threading.Thread(target=log_in)
    login.start()
    try:
        template = snippet.load_template()
    finally:
        login.join()
    return template, proof[0]
