"""What doctor's checks share, each read once, by the first check that needs it: the
snippet's values, Synapse's effective configuration, what PostgreSQL says to Synapse's
role, Synapse's processes and the connections their pools need.  A read that fails keeps
why (``found_error``, ``config_error``, ``server_error``) for the row of its root cause;
the other rows that need it are skipped."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from matrix_synapse_setup.commands.doctor.server import server_facts
from matrix_synapse_setup.core import messages
from matrix_synapse_setup.core.errors import SetupError
from matrix_synapse_setup.core.paths import BACKUP_DIR, SNIPPET, SYNAPSE_USER, WORKERS_DIR
from matrix_synapse_setup.core.settings import Settings
from matrix_synapse_setup.files import snippet
from matrix_synapse_setup.postgres import budget
from matrix_synapse_setup.synapse import config as synapse_config
from matrix_synapse_setup.synapse import service as services

TIMEOUT = 5  # seconds, for each network step (login, query, HTTP request)
# twisted.enterprise.adbapi's pool size, which Synapse keeps when its config names none
# (our snippet names cp_max 10).
DEFAULT_CP_MAX = 5
MAIN_PROCESS = "main"


@dataclasses.dataclass(frozen=True)
class Paths:
    """Where doctor looks (the real system's files by default; tests give others)."""

    homeserver: Path = synapse_config.HOMESERVER
    confd: Path = synapse_config.CONFD
    snippet: Path = SNIPPET
    backups: Path = BACKUP_DIR
    synapse_user: str = SYNAPSE_USER
    workers: Path = WORKERS_DIR  # one <name>.yaml per worker process


class Facts:
    """The reads one doctor run shares among its checks (each check receives this)."""

    def __init__(
        self,
        paths: Paths | None = None,
        *,
        timeout: float = TIMEOUT,
        service_running: Callable[[], bool] | None = None,
    ) -> None:
        self.paths = paths or Paths()
        self.timeout = timeout
        # The service manager's view of Synapse (tests give their own): a hint only.
        self.service_running = service_running or services.synapse_running
        self._found: dict[str, Any] | None | bool = False  # False: not read yet
        self.found_error: str | None = None
        self._config: tuple[dict, dict] | None = None
        self.config_error: str | None = None
        self._server: dict[str, Any] | None = None
        self.server_error: tuple[str, str] | None = None
        self._server_tried = False

    def found(self) -> dict[str, Any] | None:
        """The snippet's values (password resolved), None when missing or broken."""
        if self._found is False:
            try:
                self._found = snippet.read(self.paths.snippet)
                if self._found is None:
                    self.found_error = messages.DOCTOR_SNIPPET_MISSING.format(
                        path=self.paths.snippet
                    )
            except SetupError as err:
                self._found, self.found_error = None, err.message
        return self._found  # type: ignore[return-value]

    def settings(self) -> Settings | None:
        found = self.found()
        if found is None:
            return None
        answers = {k: str(found[k]) for k in snippet.MANAGED if found.get(k) is not None}
        try:
            return Settings.from_answers(**answers)
        except SetupError as err:
            self.found_error = err.message
            return None

    def config(self) -> tuple[dict, dict] | None:
        """Synapse's effective configuration and where each key came from."""
        if self._config is None and self.config_error is None:
            try:
                files = synapse_config.config_files(self.paths.homeserver, self.paths.confd)
                self._config = synapse_config.load(files)
            except SetupError as err:
                self.config_error = err.message
        return self._config

    def processes(self) -> list[str]:
        """Synapse's processes: the main one, then a worker for each *.yaml in the workers'
        directory (none when it is missing or cannot be read)."""
        try:
            workers = sorted(p.stem for p in self.paths.workers.glob("*.yaml") if p.is_file())
        except OSError:
            workers = []
        return [MAIN_PROCESS, *workers]

    def pool_size(self) -> int:
        """Each process's pool: the effective database's cp_max (every process reads the
        same database configuration), else twisted's default."""
        config = self.config()
        args: dict[str, Any] = {}
        if config is not None:
            database = synapse_config.effective_database(*config)
            if database.engine == "psycopg2":
                args = database.args
        try:
            return int(args.get("cp_max", DEFAULT_CP_MAX))
        except (TypeError, ValueError):
            return DEFAULT_CP_MAX

    def connection_budget(self) -> budget.Budget | None:
        """The connection budget of Synapse's processes on the server (None: no login)."""
        server = self.server()
        if server is None:
            return None
        return budget.budget(self.processes(), self.pool_size(), server["limits"])

    def needed_max_connections(self) -> int:
        """The max_connections the budget needs of the server (what the postinst writes in
        a local cluster's tuning); PostgreSQL's default reservations when it is not up."""
        server = self.server()
        limits = server["limits"] if server is not None else budget.DEFAULT_LIMITS
        total = len(self.processes()) * self.pool_size()
        return budget.needed_max_connections(total, limits)

    def server(self) -> dict[str, Any] | None:
        """What the server says, in one connection as Synapse's role (None: no login)."""
        if not self._server_tried:
            self._server_tried = True
            settings = self.settings()
            if settings is not None:
                self._server, self.server_error = server_facts(settings, self.timeout)
        return self._server
