"""doctor's rows for Dendrite, when the dendrite command pointed a dendrite.yaml at our
PostgreSQL (it records the file's path): the file (a password in it must not be readable
by others), the database as Dendrite logs in to it (exactly its connection string, as its
user), and the connection budget of Dendrite's pools together with Synapse's on the same
cluster."""

from __future__ import annotations

from pathlib import Path

from matrix_synapse_setup.commands.doctor import database
from matrix_synapse_setup.commands.doctor.facts import Facts
from matrix_synapse_setup.commands.doctor.files import unreadable_by
from matrix_synapse_setup.commands.doctor.report import FAIL, OK, WARN, Check, skipped
from matrix_synapse_setup.core import messages
from matrix_synapse_setup.core.errors import SetupError
from matrix_synapse_setup.core.settings import is_local
from matrix_synapse_setup.dendrite import config, uri
from matrix_synapse_setup.dendrite import database as dendrite_db
from matrix_synapse_setup.dendrite.uri import Target
from matrix_synapse_setup.files.atomic import Ownership
from matrix_synapse_setup.postgres import budget

CONFIG, DATABASE, BUDGET = "dendrite config", "dendrite database", "dendrite connection budget"
DENDRITE_BUDGET = database.BudgetTexts(
    BUDGET,
    messages.DOCTOR_DENDRITE_BUDGET_FITS,
    messages.DOCTOR_BUDGET_MARGIN_ALL,
    messages.DOCTOR_BUDGET_OVER_ALL,
    messages.DOCTOR_FIX_DENDRITE_BUDGET,
)


class DendriteFacts:
    """The recorded file, read once: its document, target and the server's limits."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.document: config.Document | None = None
        self.target: Target | None = None
        self.error: str | None = None
        self.limits: budget.Limits | None = None
        self.db_error: str | None = None
        try:
            self.document = config.read(path)
        except SetupError as err:
            self.error = err.message
            return
        value = self.document.connection_string
        self.target = uri.parse(value) if value else None
        if self.target is None:
            self.error = messages.DOCTOR_DENDRITE_NOT_POSTGRES.format(
                path=path, value=uri.mask(value) or "nothing"
            )

    def verify(self) -> list | None:
        if self.target is None or self.document is None:
            return None
        try:
            steps, self.limits = dendrite_db.verify(self.target, self.document.connection_string)
        except SetupError as err:
            self.db_error = err.message
            return None
        except KeyError:  # no system user of the role's name: peer cannot work
            self.db_error = messages.DENDRITE_NO_SYSTEM_USER.format(user=self.target.user)
            return None
        return steps


def synapse_pools(facts: Facts, target: Target) -> list[budget.Pool]:
    """Synapse's pools when its database is on the same local cluster as Dendrite's."""
    settings = facts.settings()
    if settings is None or not settings.local or not is_local(target.host):
        return []
    if settings.port != target.port:
        return []
    size = facts.pool_size()
    return [budget.Pool(f"synapse {name}", size) for name in facts.processes()]


def dendrite_budget(
    document: config.Document, value: str, limits: budget.Limits, pools: list[budget.Pool]
) -> tuple[budget.Budget, list[str]]:
    """The budget of Dendrite's pools once *value* is its connection string, with *pools*
    (Synapse's on the same cluster); and the names of Dendrite's pools without a limit."""
    own = [budget.Pool(name, size) for name, size in config.pools(document.data, value)]
    found = budget.Budget(
        tuple(own + pools),
        limits.max_connections,
        limits.superuser_reserved,
        limits.reserved,
        budget.MARGIN,
    )
    return found, [pool.process for pool in own if pool.size == 0]


def check_config(facts: Facts, dendrite: DendriteFacts) -> Check:
    document, target = dendrite.document, dendrite.target
    if dendrite.error is not None or document is None or target is None:
        return Check(
            CONFIG,
            FAIL,
            dendrite.error or "",
            messages.DOCTOR_FIX_DENDRITE.format(path=dendrite.path),
        )
    owner = Ownership(document.uid, document.gid, document.mode).describe()
    how = "peer authentication" if target.password is None else "a password"
    detail = messages.DOCTOR_DENDRITE_FILE.format(path=dendrite.path, owner=owner, how=how)
    if target.password is not None and document.others_can_read():
        return Check(
            CONFIG,
            FAIL,
            messages.DOCTOR_DENDRITE_READABLE.format(path=dendrite.path, owner=owner),
            messages.DOCTOR_FIX_DENDRITE_MODE.format(path=dendrite.path),
        )
    if target.password is None and _unreadable(dendrite.path, target.user):
        # Peer authentication: the role's name is the system user Dendrite runs as.
        return Check(
            CONFIG,
            FAIL,
            messages.DOCTOR_DENDRITE_UNREADABLE.format(
                path=dendrite.path, user=target.user, owner=owner
            ),
            messages.DOCTOR_FIX_DENDRITE_READ.format(path=dendrite.path, user=target.user),
        )
    return Check(CONFIG, OK, detail)


def _unreadable(path: Path, user: str) -> bool:
    try:
        return unreadable_by(path, user) is not None
    except (KeyError, OSError):  # no such user: the database row says so
        return False


def check_database(facts: Facts, dendrite: DendriteFacts) -> Check:
    if dendrite.error is not None:
        return skipped(DATABASE, CONFIG)
    steps = dendrite.verify()
    if steps is None:
        return Check(
            DATABASE,
            FAIL,
            dendrite.db_error or "",
            messages.DOCTOR_FIX_DENDRITE.format(path=dendrite.path),
        )
    return Check(
        DATABASE, OK, "; ".join(f"{s.name} ({s.detail})" if s.detail else s.name for s in steps[1:])
    )


def check_budget(facts: Facts, dendrite: DendriteFacts) -> Check:
    document, target = dendrite.document, dendrite.target
    if dendrite.error is not None or document is None or target is None:
        return skipped(BUDGET, CONFIG)
    if dendrite.limits is None:
        return skipped(BUDGET, DATABASE)
    found, unlimited = dendrite_budget(
        document, document.connection_string, dendrite.limits, synapse_pools(facts, target)
    )
    if unlimited:
        return Check(
            BUDGET,
            WARN,
            messages.DENDRITE_UNLIMITED.format(
                pool=", ".join(unlimited), path=dendrite.path, available=found.available
            ),
        )
    return database.budget_check(found, DENDRITE_BUDGET, path=str(dendrite.path))


CHECKS = {CONFIG: check_config, DATABASE: check_database, BUDGET: check_budget}


def rows(facts: Facts, path: Path | None) -> list[Check]:
    """Dendrite's rows, none when no file is recorded."""
    if path is None:
        return []
    dendrite = DendriteFacts(path)
    return [check(facts, dendrite) for check in CHECKS.values()]
