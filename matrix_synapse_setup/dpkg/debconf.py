"""The debconf questions: asking, validating, asking again.

Talks to debconf with python3-debconf's :class:`debconf.Debconf` over the
pipes a shell maintainer script inherited from the confmodule: replies come
on stdin, commands go to fd 3 (``DEBCONF_REDIR`` set: the confmodule moved the
script's stdout there) or else to fd 1.  ``runFrontEnd`` is not used: it
re-executes the frontend with the Python interpreter as the script, and
debconf then finds no templates.

An invalid answer is explained (an error template) and asked again at
critical priority.  When the explanation cannot be shown (non-interactive
frontend, or a frontend that does not show errors) there is nobody to ask:
:class:`SetupError` with the explanation, and nothing is changed.
"""

from __future__ import annotations

import dataclasses
import io
import os
import subprocess
from collections.abc import Callable
from typing import Any

from matrix_synapse_setup.core import messages, settings
from matrix_synapse_setup.core.errors import SetupError
from matrix_synapse_setup.core.paths import DEFAULT_BACKUP_KEEP, PACKAGE
from matrix_synapse_setup.files import state as state_files

HOST = f"{PACKAGE}/db-host"
PORT = f"{PACKAGE}/db-port"
NAME = f"{PACKAGE}/db-name"
USER = f"{PACKAGE}/db-user"
PASSWORD = f"{PACKAGE}/db-password"
PASSWORD_AGAIN = f"{PACKAGE}/db-password-again"
SSLMODE = f"{PACKAGE}/db-sslmode"
SSLROOTCERT = f"{PACKAGE}/db-sslrootcert"
PURGE = f"{PACKAGE}/purge-database"
FAILURE = f"{PACKAGE}/db-failure"
SQLITE_DATA = f"{PACKAGE}/sqlite-data"
INVALID = f"{PACKAGE}/invalid-answer"
MISMATCH = f"{PACKAGE}/password-mismatch"
SETUP_ERROR = f"{PACKAGE}/setup-error"
TUNE = f"{PACKAGE}/tune-postgresql"
ADMIN_USER = f"{PACKAGE}/admin-user"
ADMIN_PASSWORD = f"{PACKAGE}/admin-password"
ADMIN_PASSWORD_AGAIN = f"{PACKAGE}/admin-password-again"
BACKUP_KEEP = f"{PACKAGE}/backup-keep"
WORKERS = f"{PACKAGE}/workers"
CLIENT_WORKERS = f"{PACKAGE}/client-workers"

# debconf protocol codes
SKIPPED = 30  # INPUT: the question will not be shown; GO: the user backed up
LOW, MEDIUM, HIGH, CRITICAL = "low", "medium", "high", "critical"

RETRY, ABORT, IGNORE = "retry", "abort", "ignore"
MIGRATE, KEEP_SQLITE, START_EMPTY = "migrate", "keep-sqlite", "start-empty"

# The templates' defaults, for an answer left empty.
DEFAULTS = {
    HOST: settings.DEFAULTS["host"],
    PORT: settings.DEFAULTS["port"],
    NAME: settings.DEFAULTS["dbname"],
    USER: settings.DEFAULTS["user"],
    SSLMODE: settings.REMOTE_SSLMODE,
    BACKUP_KEEP: str(DEFAULT_BACKUP_KEEP),
}

# Answers read into debconf from the installed snippet, by snippet key.
SNIPPET_QUESTIONS = {
    "host": HOST,
    "port": PORT,
    "dbname": NAME,
    "user": USER,
    "sslmode": SSLMODE,
    "sslrootcert": SSLROOTCERT,
}


def _python_debconf() -> Any:
    """python3-debconf's module (imported here only: a test gives its own)."""
    import debconf

    return debconf


def debconf_error() -> type[Exception]:
    return _python_debconf().DebconfError


def debconf_running() -> bool:
    """True when the maintainer script sourced debconf's confmodule."""
    return bool(os.environ.get("DEBIAN_HAS_FRONTEND"))


def connect() -> Any:
    """A :class:`debconf.Debconf` on the pipes inherited from the confmodule."""
    write_fd = 3 if os.environ.get("DEBCONF_REDIR") else 1
    # Unbuffered binary underneath: nothing beyond one reply is ever read
    # ahead, so children (ucf) can use the same pipes afterwards.
    read = io.TextIOWrapper(
        io.FileIO(0, "rb", closefd=False), encoding="utf-8", errors="surrogateescape"
    )
    write = io.TextIOWrapper(
        io.FileIO(write_fd, "wb", closefd=False),
        encoding="utf-8",
        errors="surrogateescape",
        write_through=True,
    )
    return _python_debconf().Debconf(read=read, write=write)


def communicator() -> Any:
    """debconf's database outside a maintainer script, read and written with
    debconf-communicate (root only): for the admin command."""
    try:
        return _python_debconf().DebconfCommunicator(PACKAGE)
    except OSError as err:
        raise SetupError(messages.DEBCONF_UNAVAILABLE.format(reason=err.strerror)) from None


def set_debconf_db_name(dbname: str) -> bool:
    """debconf's db-name follows the snippet (else a later dpkg-reconfigure would switch
    back).  False when debconf's database is locked (apt running) or missing."""
    line = f"{PACKAGE} {NAME} string {dbname}\n"
    try:
        proc = subprocess.run(
            ["debconf-set-selections"], input=line, text=True, capture_output=True, check=False
        )
    except FileNotFoundError:
        return False
    return proc.returncode == 0


def escape(value: str) -> str:
    """A value as one word of the debconf protocol with the ``escape`` capability."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace(" ", "\\ ")


@dataclasses.dataclass
class Answers:
    """What debconf holds, as strings."""

    host: str
    port: str
    dbname: str
    user: str
    password: str = dataclasses.field(repr=False)  # never in a log or a traceback
    sslmode: str
    purge: bool
    sslrootcert: str = ""

    def settings_answers(self) -> dict[str, str | None]:
        """The answers for Settings.from_answers.  The TLS questions are not asked for
        the local cluster: their answers count for a remote server only (None: the
        default), and the root certificate only with a mode that checks certificates."""
        remote = not settings.is_local(self.host)
        verifying = remote and self.sslmode in settings.VERIFYING
        return {
            "host": self.host,
            "port": self.port,
            "dbname": self.dbname,
            "user": self.user,
            "password": self.password,
            "sslmode": self.sslmode if remote else None,
            "sslrootcert": (self.sslrootcert or None) if verifying else None,
        }


class Conversation:
    """The questions of matrix-synapse-setup on one debconf connection."""

    def __init__(self, db: Any) -> None:
        self.db = db
        self.DebconfError = debconf_error()
        self.capabilities()

    def capabilities(self) -> None:
        """(Re)announce our capabilities; a child that talked debconf may have changed them."""
        reply = self.db.capb("escape", "backup")
        self.frontend_capb = set(str(reply).split())

    # --- protocol helpers ---------------------------------------------------

    def get(self, question: str) -> str:
        return str(self.db.get(question))

    def set(self, question: str, value: str) -> None:
        self.db.set(question, escape(value))

    def subst(self, question: str, key: str, value: str) -> None:
        self.db.subst(question, key, escape(value))

    def fset(self, question: str, flag: str, value: str) -> None:
        self.db.fset(question, flag, value)

    def fget(self, question: str, flag: str) -> str:
        return str(self.db.fget(question, flag))

    def reset(self, question: str) -> None:
        self.db.reset(question)

    def input(self, priority: str, question: str) -> bool:
        """True if the question will be shown."""
        return self._unless_skipped(self.db.input, priority, question)

    def go(self) -> bool:
        """False when the user asked to go back."""
        return self._unless_skipped(self.db.go)

    def _unless_skipped(self, command: Callable[..., object], *args: str) -> bool:
        """Run a debconf *command*: True, or False when debconf answers 30 (SKIPPED)."""
        try:
            command(*args)
            return True
        except self.DebconfError as err:
            if err.args[0] == SKIPPED:
                return False
            raise

    def interactive(self) -> bool:
        """Whether a critical question would be shown, asked without showing one:
        INPUT tells (30: it would not), CLEAR drops the pending question."""
        shown = self.input(CRITICAL, SETUP_ERROR)
        self.db.command("clear")
        return shown

    def show_error(self, template: str, message: str | None = None) -> bool:
        """Show an error template (with ${error}); False if nobody can see it."""
        if message is not None:
            self.subst(template, "error", message)
        self.fset(template, "seen", "false")
        shown = self.input(CRITICAL, template)
        self.go()
        return shown

    def complain(self, question: str, message: str, template: str = INVALID) -> None:
        """Explain *message* and arrange for *question* to be asked again at critical
        priority, or raise when no one can see the explanation."""
        if not self.show_error(template, message):
            raise SetupError(message)
        self.fset(question, "seen", "false")

    # --- the questions ------------------------------------------------------

    def ask(self, *, known_password: bool, again: bool = False) -> Answers:
        """Validate the answers and ask again what is invalid.  The questions were
        asked by the config script (debian/config, before the package was
        unpacked): here a question is shown only when its answer was refused, or
        when it was never seen and an answer given here may have made it matter.
        *known_password*: the snippet holds one.  *again*: after a failure, show
        every question (at critical priority)."""
        state: dict[str, Any] = {
            "priority": {},
            "backing": False,
            "again": again,
            "reasked": again,
        }
        steps: list[Callable[[dict[str, Any]], bool]] = [
            self._string_step(HOST, MEDIUM, settings.validate_host),
            self._string_step(PORT, LOW, settings.validate_port),
            self._string_step(NAME, LOW, lambda v: settings.validate_name("database", v)),
            self._string_step(USER, LOW, lambda v: settings.validate_name("role", v)),
            self._sslmode_step,
            self._sslrootcert_step,
            lambda st: self._password_step(st, known_password),
            self._tune_step,
            self._string_step(ADMIN_USER, MEDIUM, settings.validate_admin_user),
            self._admin_password_step,
            lambda st: self._show(st, PURGE, LOW),
            self._string_step(BACKUP_KEEP, LOW, settings.validate_keep),
            self._workers_step,
            self._client_workers_step,
        ]
        self._walk(steps, state)
        return self.answers()

    def answers(self) -> Answers:
        return Answers(
            host=self.get(HOST).strip(),
            port=self.get(PORT).strip(),
            dbname=self.get(NAME).strip(),
            user=self.get(USER).strip(),
            password=self.get(PASSWORD),
            sslmode=self.get(SSLMODE).strip() or settings.REMOTE_SSLMODE,
            purge=self.get(PURGE) == "true",
            sslrootcert=self.get(SSLROOTCERT).strip(),
        )

    def _show(self, state: dict[str, Any], question: str, default: str) -> bool:
        """Input + go for one question: False when the user backed up (or when we are
        backing up over a question that is not shown), True to go on."""
        if not self._to_show(state, question):
            state["shown"] = False
            return not state["backing"]
        priority = CRITICAL if state.get("again") else default
        shown = self.input(state["priority"].get(question, priority), question)
        state["shown"] = shown
        forward = self.go()
        if not shown:
            # debconf answers "backup" to a GO with nothing to show while backing
            # up: that is not the user's wish for this question.
            return not state["backing"]
        state["backing"] = not forward
        return forward

    def _to_show(self, state: dict[str, Any], question: str) -> bool:
        """Whether to INPUT *question* here: after a failure (*again*), when it was
        refused, or once something was asked again and it was never seen.  Not
        otherwise: dpkg-reconfigure would show every question a second time."""
        if state["again"] or question in state["priority"]:
            return True
        return bool(state["reasked"]) and self.fget(question, "seen") != "true"

    def _string_step(
        self,
        question: str,
        priority: str,
        validate: Callable[[str], object],
        *,
        empty_is_valid: bool = False,
    ) -> Callable[[dict[str, Any]], bool]:
        """One string question, asked until valid.  *empty_is_valid*: an empty answer
        means the default (it does not keep the value shown)."""

        def step(state: dict[str, Any]) -> bool:
            while True:
                before = self.get(question).strip() or DEFAULTS.get(question, "")
                if not self._show(state, question, priority):
                    return False
                shown_kept = state.get("shown") and not empty_is_valid
                if shown_kept and not self.get(question).strip() and before:
                    # An empty answer keeps the value shown: debconf's readline
                    # frontend without Term::ReadLine::Gnu returns "" for Enter.  (An
                    # empty preseeded answer is no Enter: it is refused like any other.)
                    self.set(question, before)
                try:
                    validate(self.get(question).strip())
                    return True
                except SetupError as err:
                    self.complain(question, err.message)
                    state["priority"][question] = CRITICAL
                    state["reasked"] = True
                    state["backing"] = False

        return step

    def _sslmode_step(self, state: dict[str, Any]) -> bool:
        if settings.is_local(self.get(HOST)):
            return not state["backing"]  # the local cluster: not asked
        preseeded = self.get(SSLMODE).strip()
        if preseeded and preseeded not in settings.SSLMODES:
            # Checked before INPUT: debconf replaces a select's value that is not one of
            # its choices with the first choice, and a typo would go unreported.
            try:
                settings.validate_sslmode(preseeded)
            except SetupError as err:
                self.complain(SSLMODE, err.message)
                state["priority"][SSLMODE] = CRITICAL
                state["reasked"] = True
        return self._string_step(SSLMODE, MEDIUM, settings.validate_sslmode)(state)

    def _sslrootcert_step(self, state: dict[str, Any]) -> bool:
        """The CA file, for a remote server with a mode that checks certificates; empty
        means the system's CAs."""
        if settings.is_local(self.get(HOST)) or self.get(SSLMODE).strip() not in (
            settings.VERIFYING
        ):
            return not state["backing"]

        def validate(value: str) -> object:
            return settings.validate_sslrootcert(value) if value else value

        return self._string_step(SSLROOTCERT, MEDIUM, validate, empty_is_valid=True)(state)

    def _tune_step(self, state: dict[str, Any]) -> bool:
        """PostgreSQL settings for Synapse: for the local cluster only."""
        if not settings.is_local(self.get(HOST)):
            return not state["backing"]
        return self._show(state, TUNE, LOW)

    def _workers_step(self, state: dict[str, Any]) -> bool:
        """The workers' preset, checked before INPUT like the TLS mode: debconf would
        replace a preseeded value that is not a choice with the first one."""
        preseeded = self.get(WORKERS).strip()
        if preseeded and preseeded not in settings.WORKER_PRESETS:
            try:
                settings.validate_workers(preseeded)
            except SetupError as err:
                self.complain(WORKERS, err.message)
                state["priority"][WORKERS] = CRITICAL
                state["reasked"] = True
        return self._string_step(WORKERS, MEDIUM, settings.validate_workers)(state)

    def _client_workers_step(self, state: dict[str, Any]) -> bool:
        """How many client workers: for the client preset only; empty is the default."""
        if self.get(WORKERS).strip() != "client":
            return not state["backing"]
        return self._string_step(
            CLIENT_WORKERS, LOW, settings.validate_client_workers, empty_is_valid=True
        )(state)

    def workers(self) -> tuple[str, str]:
        """The workers' preset (empty: the default, none) and the client workers' count."""
        return self.get(WORKERS).strip() or "none", self.get(CLIENT_WORKERS).strip()

    def tune(self) -> tuple[bool, bool]:
        """(the answer to tune-postgresql, whether an admin gave it: preseeded or
        answered, rather than the template's default)."""
        return self.get(TUNE) == "true", self.fget(TUNE, "seen") == "true"

    def _password_step(self, state: dict[str, Any], known_password: bool) -> bool:
        remote = not settings.is_local(self.get(HOST))
        default = LOW if known_password else (HIGH if remote else MEDIUM)
        while True:
            if not self._show(state, PASSWORD, default):
                return False
            password = self.get(PASSWORD)
            if not password:
                if remote and not known_password:
                    user = self.get(USER).strip()
                    self.complain(PASSWORD, messages.REMOTE_PASSWORD_NEEDED.format(user=user))
                    state["priority"][PASSWORD] = CRITICAL
                    state["reasked"] = True
                    continue
                self.set(PASSWORD_AGAIN, "")
                return True
            try:
                settings.validate_password(password)
            except SetupError as err:
                # Refused with nobody to ask: complain raises, and nothing changed.
                self.complain(PASSWORD, err.message)
                self._forget_password()
                state["priority"][PASSWORD] = CRITICAL
                state["reasked"] = True
                continue
            if self._confirmed(state, PASSWORD, PASSWORD_AGAIN, password, default):
                return True

    def _admin_password_step(self, state: dict[str, Any]) -> bool:
        """The first admin account's password: needed to create the account, optional
        for the one this package created (empty keeps its password)."""
        user = self.get(ADMIN_USER).strip()
        if not user:
            return not state["backing"]
        created = state_files.created_here(user, state_files.read_record())
        default = LOW if created else MEDIUM
        while True:
            if not self._show(state, ADMIN_PASSWORD, default):
                return False
            password = self.get(ADMIN_PASSWORD)
            try:
                if not password and not created:
                    raise SetupError(messages.ADMIN_PASSWORD_MISSING.format(user=user))
                settings.validate_admin_password(password)
            except SetupError as err:
                self.complain(ADMIN_PASSWORD, err.message)
                self._forget_password(ADMIN_PASSWORD, ADMIN_PASSWORD_AGAIN)
                state["priority"][ADMIN_PASSWORD] = CRITICAL
                state["reasked"] = True
                continue
            if not password:
                self.set(ADMIN_PASSWORD_AGAIN, "")
                return True
            if self._confirmed(state, ADMIN_PASSWORD, ADMIN_PASSWORD_AGAIN, password, default):
                return True

    def _confirmed(
        self, state: dict[str, Any], question: str, again_question: str, password: str, default: str
    ) -> bool:
        """The confirmation of *password* (the answer to *question*, checked already),
        asked only with a password shown here, at the password's priority.  True when
        they match or there is nothing to compare (a preseed without the confirmation);
        False to ask the password again: the user backed up from the confirmation, or
        the two differ (said, both forgotten, asked again at critical priority)."""
        priority = state["priority"].get(question, CRITICAL if state["again"] else default)
        shown = bool(state.get("shown")) and self.input(priority, again_question)
        if shown and not self.go():
            self.fset(question, "seen", "false")
            state["priority"][question] = priority
            return False  # back from the confirmation: the password again
        again = self.get(again_question)
        if (shown or again) and again != password:
            if not self.show_error(MISMATCH):
                raise SetupError(messages.DEBCONF_PASSWORDS_DIFFER)
            self._forget_password(question, again_question)
            state["priority"][question] = CRITICAL
            state["reasked"] = True
            return False
        return True

    def ask_admin_again(self, message: str) -> bool:
        """Synapse refused the admin account's answers: explain, and ask the account's
        questions again (False when nobody can see the explanation)."""
        if not self.show_error(INVALID, message):
            return False
        self._forget_password(ADMIN_PASSWORD, ADMIN_PASSWORD_AGAIN)
        state: dict[str, Any] = {
            "priority": {ADMIN_USER: CRITICAL, ADMIN_PASSWORD: CRITICAL},
            "backing": False,
            "again": False,
            "reasked": True,
        }
        steps = [
            self._string_step(ADMIN_USER, CRITICAL, settings.validate_admin_user),
            self._admin_password_step,
        ]
        self._walk(steps, state)
        return True

    @staticmethod
    def _walk(steps: list[Callable[[dict[str, Any]], bool]], state: dict[str, Any]) -> None:
        """Run the questions' steps in order; a step that returns False (the user
        backed up) goes back to the one before."""
        i = 0
        while i < len(steps):
            if steps[i](state):
                i += 1
            elif i > 0:
                i -= 1
            else:
                state["backing"] = False  # nothing before the first question

    def admin_answers(self) -> tuple[str, str]:
        """(admin-user, admin-password)."""
        return self.get(ADMIN_USER).strip(), self.get(ADMIN_PASSWORD)

    def clear_admin_password(self) -> None:
        """Applied: the admin's password leaves debconf's database."""
        self._clear(ADMIN_PASSWORD, ADMIN_PASSWORD_AGAIN)

    def _forget_password(self, *questions: str) -> None:
        for question in questions or (PASSWORD, PASSWORD_AGAIN):
            self.set(question, "")
            self.fset(question, "seen", "false")

    def clear_password(self) -> None:
        """The snippet holds the password now: it does not stay in debconf."""
        self._clear(PASSWORD, PASSWORD_AGAIN)

    def _clear(self, question: str, again_question: str) -> None:
        """A password and its confirmation leave debconf's database.  The questions stay
        seen, so an upgrade does not ask them again (an empty answer keeps the password;
        dpkg-reconfigure shows them anyway).  What is already so is not set again:
        debconf rewrites its database for any change."""
        for name in (question, again_question):
            if self.get(name):
                self.set(name, "")
            if self.fget(name, "seen") != "true":
                self.fset(name, "seen", "true")

    def ask_sqlite(self, facts: str, minutes: int) -> str:
        """What to do with the data of a Synapse that runs on SQLite (high priority: the
        default, migrate, is right for almost everyone).  Returns the choice."""
        self.subst(SQLITE_DATA, "facts", facts)
        self.subst(SQLITE_DATA, "minutes", str(minutes))
        self.input(HIGH, SQLITE_DATA)
        self.go()
        return self.sqlite_choice()

    def sqlite_choice(self) -> str:
        choice = self.get(SQLITE_DATA).strip()
        return choice if choice in (MIGRATE, KEEP_SQLITE, START_EMPTY) else MIGRATE

    # --- failures in the postinst ---------------------------------------------

    def ask_failure(self, message: str) -> str:
        """retry / abort / ignore after the server could not be used."""
        self.subst(FAILURE, "error", message)
        self.fset(FAILURE, "seen", "false")
        shown = self.input(CRITICAL, FAILURE)
        self.go()
        choice = self.get(FAILURE).strip()
        if choice == RETRY and not shown:
            # A preseeded "retry" nobody can change would retry for ever.
            return ABORT
        return choice if choice in (RETRY, ABORT, IGNORE) else ABORT

    def setup_error(self, message: str) -> bool:
        """Explain a failure that needs other answers; False if nobody can see it."""
        if not self.show_error(SETUP_ERROR, message):
            return False
        for question in (HOST, PORT, NAME, USER, SSLMODE, SSLROOTCERT, PASSWORD):
            self.fset(question, "seen", "false")
        return True
