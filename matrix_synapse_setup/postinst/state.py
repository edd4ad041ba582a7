"""What one maintainer-script run found, read once by :mod:`.inspect` and decided on by
:mod:`.plan`.  Plain immutable records (named tuples, cheap to define on the path every
run takes): a test builds one by hand."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any, NamedTuple

from matrix_synapse_setup.core.steps import Step
from matrix_synapse_setup.dpkg.debconf import Answers
from matrix_synapse_setup.dpkg.ucf import UcfState
from matrix_synapse_setup.files.atomic import Ownership
from matrix_synapse_setup.synapse.config import SynapseState

# Without Synapse's user: root's alone (see files/atomic.py).
ROOT_ONLY = Ownership(0, 0, 0o640)
ROOT_ONLY_PASSFILE = Ownership(0, 0, 0o600)


class OnDisk(NamedTuple):
    """The installed snippet and its password file."""

    text: str | None = None  # None: there is no snippet
    values: dict[str, Any] | None = None  # parsed, the password resolved; None: unusable
    problem: str | None = None  # why the file is not used, when it exists but is unusable
    owned: bool = False  # the snippet has the owner and mode we give it
    passfile_text: str | None = None
    passfile_owned: bool = False
    ucf: UcfState | None = None  # asked when the answer matters (see inspect)
    owner: Ownership = ROOT_ONLY  # what we give the snippet
    passfile_owner: Ownership = ROOT_ONLY_PASSFILE  # and the password file

    @property
    def exists(self) -> bool:
        return self.text is not None

    def __repr__(self) -> str:
        return f"OnDisk(exists={self.exists})"  # its texts and values hold the password

    @property
    def deleted_by_hand(self) -> bool:
        """No snippet where ucf knows one was installed: the admin deleted it, as one
        deletes a conffile."""
        return not self.exists and self.ucf is not None and self.ucf.registered

    @property
    def password(self) -> str | None:
        found = (self.values or {}).get("password")
        return found if isinstance(found, str) and found else None


class Cluster(NamedTuple):
    """The local cluster's PostgreSQL settings for Synapse (Debian's layout only)."""

    dropin: Path
    label: str
    unit: str
    conffile: Path
    includes_conf_d: bool
    dropin_exists: bool
    text: str  # what our file would hold
    current: bool  # the file is as the tune-postgresql answer asks


class State(NamedTuple):
    """Everything the plan needs, and nothing it would have to read again."""

    answers: Answers
    on_disk: OnDisk
    template: Any  # the snippet's template, compiled (files/snippet.load_template)
    clock: datetime.datetime  # now: the stamp of a new password
    fresh_password: str  # if a new one is needed
    old_version: str = ""  # dpkg's argument: the version configured before
    reconfigure: bool = False  # dpkg-reconfigure
    deferred: bool = False  # run from our own trigger, PostgreSQL configured by now
    interactive: bool = False  # someone can answer ucf's question
    force_conffnew: bool = False  # UCF_FORCE_CONFFNEW: the admin lets ucf replace edits
    tune: tuple[bool, bool] = (True, False)  # tune-postgresql, and whether an admin gave it
    cluster: Cluster | None = None
    synapse: SynapseState | None = None  # read when there is no snippet yet
    database_overridden_by: Path | None = None  # a later file's database: beats ours
    sqlite_choice: str | None = None  # the answer, when Synapse's SQLite holds data
    proof: tuple[Step, ...] | None = None  # Synapse's role logged in: all is right
    postgresql_pending: tuple[str, ...] = ()  # unpacked, not configured yet
    backup_keep: str = ""  # the answer
    backup_keep_stored: str | None = None  # the apt hook's file
    admin_user: str = ""
    admin_password: str = ""
    admin_created_here: bool = False
    upgrades_due: tuple[str, ...] = ()  # names of version upgrades this run must make
    orphaned_dropins: tuple[Path, ...] = ()  # ours, in cluster directories that are gone
    port_space: Any = None  # synapse/porting.PortSpace, when the answer is to migrate
    workers: tuple[str, str] = ("none", "")  # the answers: preset, client workers' count
    cores: int = 1
    workers_on_disk: Any = None  # postinst/workers.WorkersOnDisk (None: not read)
    listeners: Any = None  # (Synapse's listeners without our workers snippet, their file)
    homeserver_exists: bool = True  # Synapse's homeserver.yaml: the listeners to repeat
    worker_python: bool = True  # the interpreter our worker unit runs (upstream's package)
    redis: Any = None  # synapse/workers.RedisServer: the Redis server installed
    redis_pending: tuple[str, ...] = ()  # Redis unpacked, not configured yet
    server_limits: Any = None  # postgres/budget.Limits of a remote server, with workers
    fresh_secrets: tuple[str, str] = ("", "")  # replication's and Redis's, if needed

    @property
    def owner(self) -> Ownership:
        return self.on_disk.owner

    def __repr__(self) -> str:
        return "State(...)"  # it holds passwords
