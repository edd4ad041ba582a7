"""The debconf conversation, with python3-debconf's Debconf talking over a real
socket pair to a scripted frontend.

The frontend here is a fake: it answers the protocol the way debconf's
Debconf::ConfModule does (INPUT/GO/GET/SET/SUBST/FSET/RESET/CAPB, the
``escape`` capability, priorities, the seen flag, error templates, backup),
and a script plays the user.  What is tested here is the postinst's side: the
questions were asked by debian/config (a shell script), and the helper checks
the answers and asks again only what it refuses.  The real debconf runs the
real config script and postinst in tests/integration/test_debconf*.py.
"""

from __future__ import annotations

import re
import socket
import threading
from pathlib import Path

import debconf
import pytest

from matrix_synapse_setup.core import messages
from matrix_synapse_setup.core.errors import SetupError
from matrix_synapse_setup.core.paths import PACKAGE
from matrix_synapse_setup.dpkg import debconf as cv
from matrix_synapse_setup.files import state
from matrix_synapse_setup.postinst import main as maint

PRIORITIES = ["low", "medium", "high", "critical"]
TEMPLATES_FILE = Path(__file__).resolve().parents[2] / "debian" / "matrix-synapse-setup.templates"


def load_templates() -> dict[str, dict[str, str]]:
    templates = {}
    for block in TEMPLATES_FILE.read_text().split("\n\n"):
        fields = dict(re.findall(r"^(\w[\w-]*): ?(.*)$", block, re.M))
        templates[fields["Template"]] = fields
    return templates


TEMPLATES = load_templates()
BACK = object()


def unescape_split(text: str) -> list[str]:
    """Debconf::ConfModule::unescape_split."""
    words, word = [], ""
    for chunk in re.split(r"(\\.|\s+)", text):
        if chunk == "\\n":
            word += "\n"
        elif len(chunk) == 2 and chunk[0] == "\\":
            word += chunk[1]
        elif chunk and chunk.isspace():
            words.append(word)
            word = ""
        else:
            word += chunk
    if word:
        words.append(word)
    return words


class FakeFrontend(threading.Thread):
    def __init__(self, sock, *, interactive=True, priority="high", user=None, preseed=None):
        super().__init__(daemon=True)
        self.file = sock.makefile("rw", encoding="utf-8", newline="\n")
        self.interactive = interactive
        self.threshold = PRIORITIES.index(priority)
        self.user = {q: list(a) for q, a in (user or {}).items()}
        self.values = {q: t.get("Default", "") for q, t in TEMPLATES.items()}
        self.flags = {q: {"seen": "false"} for q in TEMPLATES}
        self.substs: dict[str, dict[str, str]] = {q: {} for q in TEMPLATES}
        for q, v in (preseed or {}).items():
            self.values[q] = v
            self.flags[q]["seen"] = "true"
        self.capb: list[str] = []
        self.pending: list[str] = []
        self.backed_up = False
        self.shown: list[str] = []
        self.errors: list[str] = []
        self.failure: BaseException | None = None
        self.seen_in_session: set[str] = set()

    def run(self):
        try:
            for line in self.file:
                reply = self.handle(line.rstrip("\n"))
                self.file.write(reply + "\n")
                self.file.flush()
        except BaseException as err:  # noqa: BLE001 - reported by the test
            self.failure = err
            self.file.close()

    def handle(self, line):
        if "escape" in self.capb:
            cmd, *params = unescape_split(line)
        else:
            cmd, *params = line.split()
        cmd = cmd.lower()
        if cmd == "version":
            return "0 2.1"
        if cmd == "capb":
            self.capb = params
            return "0 multiselect escape backup progression"
        if cmd == "get":
            value = self.values[params[0]]
            if "escape" in self.capb:
                return "1 " + value.replace("\\", "\\\\").replace("\n", "\\n")
            return "0 " + value
        if cmd == "set":
            self.values[params[0]] = " ".join(params[1:])
            return "0 value set"
        if cmd == "reset":
            self.values[params[0]] = TEMPLATES[params[0]].get("Default", "")
            self.flags[params[0]]["seen"] = "false"
            return "0"
        if cmd == "subst":
            self.substs[params[0]][params[1]] = " ".join(params[2:])
            return "0"
        if cmd == "fset":
            self.flags[params[0]][params[1]] = params[2]
            return "0"
        if cmd == "fget":
            return "0 " + self.flags[params[0]].get(params[1], "false")
        if cmd == "input":
            priority, q = params
            is_error = TEMPLATES[q]["Type"] == "error"
            visible = is_error or (
                PRIORITIES.index(priority) >= self.threshold and self.flags[q]["seen"] != "true"
            )
            if not (visible and self.interactive):
                return "30 question skipped"
            self.pending.append(q)
            return "0 question will be asked"
        if cmd == "go":
            pending, self.pending = self.pending, []
            for q in pending:
                self.shown.append(q)
                if TEMPLATES[q]["Type"] == "error":
                    self.errors.append(self.substs[q].get("error", q))
                    continue
                answers = self.user.get(q)
                assert answers, f"{q} was shown but the user script has no answer for it"
                answer = answers.pop(0)
                if answer is BACK:
                    self.backed_up = True
                    return "30 backup"
                self.values[q] = answer
                # like debconf, the seen flags are set when the session ends
                self.seen_in_session.add(q)
            if self.backed_up and not pending:
                return "30 backup"
            self.backed_up = False
            return "0 ok"
        if cmd == "clear":
            self.pending = []
            return "0"
        return f"20 Unsupported command {cmd}"


@pytest.fixture
def session():
    """session(**frontend options) -> (Conversation, FakeFrontend)"""
    made = []

    def make(**options):
        ours, theirs = socket.socketpair()
        frontend = FakeFrontend(theirs, **options)
        frontend.start()
        stream = ours.makefile("rw", encoding="utf-8", newline="\n")
        db = debconf.Debconf(read=stream, write=stream)
        made.append((frontend, ours, stream))
        return cv.Conversation(db), frontend

    yield make
    for frontend, ours, stream in made:
        stream.close()
        ours.close()
        frontend.join(timeout=5)
        assert frontend.failure is None, frontend.failure
        for q, left in frontend.user.items():
            assert not left, f"the user script still has answers for {q}: {left}"


Q = cv


def test_noninteractive_first_install_takes_the_defaults(session):
    conv, fe = session(interactive=False)
    answers = conv.ask(known_password=False)
    assert answers == cv.Answers(
        host="localhost",
        port="5432",
        dbname="synapse",
        user="synapse",
        password="",
        sslmode="verify-full",
        purge=False,
    )
    assert fe.shown == []


def test_default_priority_asks_nothing_on_a_local_first_install(session):
    conv, fe = session(priority="high")
    conv.ask(known_password=False)
    assert fe.shown == []


def test_valid_answers_are_not_shown_again_at_any_priority(session):
    # debian/config asked them; dpkg-reconfigure would show them a second time.
    password = " pass\\word with  spaces \"'$ é "
    conv, fe = session(
        priority="low",
        preseed={
            Q.HOST: "db.example.org",
            Q.PORT: "6432",
            Q.PASSWORD: password,
            Q.PASSWORD_AGAIN: password,
        },
    )
    for question in TEMPLATES:
        fe.flags[question]["seen"] = "false"  # as a noninteractive run leaves them
    answers = conv.ask(known_password=False)
    assert fe.shown == []
    assert (answers.host, answers.port, answers.password) == ("db.example.org", "6432", password)


def test_an_invalid_preseed_is_explained_and_asked_again_at_critical(session):
    conv, fe = session(priority="high", preseed={Q.PORT: "54 32"}, user={Q.PORT: ["5433"]})
    answers = conv.ask(known_password=True)
    assert fe.shown == [Q.INVALID, Q.PORT]
    assert "1 to 65535" in fe.errors[0]
    assert answers.port == "5433"


def test_an_invalid_answer_is_asked_again_until_it_is_valid(session):
    # Once something was asked again, what was never seen is shown too (at its own
    # priority): the new answer may have made it matter.
    conv, fe = session(
        priority="low",
        preseed={Q.NAME: "Bad-Name"},
        user={
            Q.NAME: ["pg_x", "good_name"],
            Q.USER: ["synapse"],
            Q.PASSWORD: [""],
            Q.TUNE: ["true"],
            Q.ADMIN_USER: [""],
            Q.PURGE: ["false"],
            Q.BACKUP_KEEP: ["3"],
            Q.WORKERS: ["none"],
        },
    )
    for question in (Q.HOST, Q.PORT):
        fe.flags[question]["seen"] = "true"
    answers = conv.ask(known_password=True)
    assert answers.dbname == "good_name"
    assert fe.shown == [
        Q.INVALID,
        Q.NAME,
        Q.INVALID,
        Q.NAME,
        Q.USER,
        Q.PASSWORD,
        Q.TUNE,
        Q.ADMIN_USER,
        Q.PURGE,
        Q.BACKUP_KEEP,
        Q.WORKERS,
    ]
    assert all("lower-case letters" in e for e in fe.errors)


@pytest.mark.parametrize(
    ("question", "value", "expected"),
    [
        (Q.PORT, "99999", "1 to 65535"),
        (Q.HOST, "/var/run/postgre sql", "socket directory"),
        (Q.HOST, "bad host", "not a host name"),
        (Q.NAME, "postgres", "lower-case letters"),
        (Q.USER, "Synapse", "lower-case letters"),
        (Q.SSLMODE, "sometimes", "not one of"),
        (Q.BACKUP_KEEP, "0", "whole number from 1"),
        (Q.BACKUP_KEEP, "many", "whole number from 1"),
    ],
)
def test_noninteractive_invalid_preseed_fails_with_the_message(session, question, value, expected):
    preseed = {question: value}
    if question == Q.SSLMODE:
        preseed |= {Q.HOST: "db.example.org", Q.PASSWORD: "pw"}
    conv, fe = session(interactive=False, preseed=preseed)
    with pytest.raises(SetupError, match=expected):
        conv.ask(known_password=True)


def test_an_invalid_backup_keep_is_explained_and_asked_again(session):
    conv, fe = session(priority="high", preseed={Q.BACKUP_KEEP: "-2"}, user={Q.BACKUP_KEEP: ["7"]})
    conv.ask(known_password=True)
    assert fe.shown == [Q.INVALID, Q.BACKUP_KEEP]
    assert "whole number from 1 to 1000" in fe.errors[0]
    assert conv.get(Q.BACKUP_KEEP) == "7"


def test_mismatched_passwords_are_explained_and_asked_again(session):
    conv, fe = session(
        priority="medium",
        preseed={Q.PASSWORD: "first", Q.PASSWORD_AGAIN: "frist"},
        user={
            Q.PASSWORD: ["second"],
            Q.PASSWORD_AGAIN: ["second"],
            Q.ADMIN_USER: [""],
            Q.WORKERS: ["none"],
        },
    )
    answers = conv.ask(known_password=False)
    assert answers.password == "second"
    # After the mismatch, what was never seen is shown too (the admin account's name,
    # the workers' preset).
    assert fe.shown == [Q.MISMATCH, Q.PASSWORD, Q.PASSWORD_AGAIN, Q.ADMIN_USER, Q.WORKERS]


def test_a_preseeded_password_needs_no_confirmation(session):
    conv, fe = session(interactive=False, preseed={Q.PASSWORD: "pre seeded\\"})
    assert conv.ask(known_password=False).password == "pre seeded\\"


def test_preseeded_passwords_that_differ_fail_noninteractive(session):
    conv, fe = session(interactive=False, preseed={Q.PASSWORD: "a", Q.PASSWORD_AGAIN: "b"})
    with pytest.raises(SetupError, match="differ"):
        conv.ask(known_password=False)
    # A refused answer changes nothing (the preseed stays in root's passwords.dat).
    assert (fe.values[Q.PASSWORD], fe.values[Q.PASSWORD_AGAIN]) == ("a", "b")


def test_a_password_with_a_control_character_is_refused(session):
    conv, fe = session(interactive=False, preseed={Q.PASSWORD: "tab\there"})
    with pytest.raises(SetupError, match="control characters"):
        conv.ask(known_password=False)


def test_a_remote_server_needs_a_password(session):
    conv, fe = session(interactive=False, preseed={Q.HOST: "db.example.org"})
    with pytest.raises(SetupError, match="remote server needs the password"):
        conv.ask(known_password=False)


def test_set_keeps_spaces_and_backslashes_exactly(session):
    conv, fe = session()
    value = "  two  spaces \\ back\\\\slash "
    conv.set(Q.HOST, value)
    assert fe.values[Q.HOST] == value
    assert conv.get(Q.HOST) == value


def test_failure_question_defaults_to_abort_when_noninteractive(session):
    conv, fe = session(interactive=False)
    assert conv.ask_failure("server down") == cv.ABORT
    assert fe.substs[Q.FAILURE]["error"] == "server down"


@pytest.mark.parametrize(("preseed", "expected"), [("retry", cv.ABORT), ("ignore", cv.IGNORE)])
def test_a_preseeded_failure_answer_when_nobody_is_asked(session, preseed, expected):
    # retry with nobody to change the answer would loop for ever: abort instead.
    conv, _fe = session(interactive=False, preseed={Q.FAILURE: preseed})
    assert conv.ask_failure("server down") == expected


def test_failure_question_offers_retry_and_ignore(session):
    conv, fe = session(user={Q.FAILURE: ["retry", "ignore"]})
    assert conv.ask_failure("down") == cv.RETRY
    assert conv.ask_failure("down") == cv.IGNORE


def test_clear_password_leaves_no_secret(session):
    conv, fe = session(preseed={Q.PASSWORD: "secret", Q.PASSWORD_AGAIN: "secret"})
    conv.clear_password()
    assert fe.values[Q.PASSWORD] == fe.values[Q.PASSWORD_AGAIN] == ""
    assert fe.flags[Q.PASSWORD]["seen"] == "true"  # not asked again on upgrade


def test_resolve_password_keeps_the_current_one_or_generates():
    from matrix_synapse_setup.postinst import plan

    answers = cv.Answers("localhost", "5432", "synapse", "synapse", "", "prefer", False)
    assert plan.resolve_password(answers, "current", "fresh") == "current"
    assert plan.resolve_password(answers, None, "fresh") == "fresh"
    answers.password = "new"
    assert plan.resolve_password(answers, "current", "fresh") == "new"
    remote = cv.Answers("db.example.org", "5432", "synapse", "synapse", "", "prefer", False)
    with pytest.raises(SetupError, match=re.escape(messages.REMOTE_PASSWORD_NEEDED[:20])):
        plan.resolve_password(remote, None, "fresh")


def test_unknown_scripts_and_actions_do_nothing():
    assert maint.dispatch([]) == 0
    assert maint.dispatch(["prerm", "remove"]) == 0
    assert maint.dispatch(["postinst", "abort-upgrade", "0.1"]) == 0
    assert maint.dispatch(["config", "something-new"]) == 0


def test_interactivity_is_probed_without_showing_anything(session):
    conv, fe = session(interactive=False)
    assert conv.interactive() is False
    conv, fe = session(interactive=True)
    assert conv.interactive() is True
    conv.go()
    assert fe.shown == []


def shell_uses(script: Path) -> set[str]:
    """The templates a maintainer script uses as lintian sees them (db_input, db_text,
    db_get, db_set at the start of a line; lintian's check debian/debconf)."""
    found = set()
    for line in script.read_text().splitlines():
        line = line.split("#", 1)[0]
        words = line.split()
        if len(words) >= 2 and words[0] in ("db_get", "db_set"):
            found.add(words[1].strip("\"'"))
        if len(words) >= 3 and words[0] in ("db_input", "db_text"):
            found.add(words[2].strip("\"'"))
    return {name.replace("$q/", f"{PACKAGE}/") for name in found}


def test_only_templates_the_helper_shows_are_overridden(session):
    # Backs debian/matrix-synapse-setup.lintian-overrides: the overridden templates
    # are exactly those no shell script uses, and the helper really shows each.
    debian = TEMPLATES_FILE.parent
    used = set().union(*(shell_uses(debian / name) for name in ("config", "postinst", "postrm")))
    overrides = (debian / "matrix-synapse-setup.lintian-overrides").read_text()
    overridden = set(re.findall(r"^unused-debconf-template (\S+)", overrides, re.M))
    assert overridden == set(TEMPLATES) - used
    conv, fe = session(
        priority="high",
        preseed={Q.PORT: "0"},
        user={Q.PORT: ["5432"], Q.FAILURE: ["abort"], Q.SQLITE_DATA: ["migrate"]},
    )
    conv.ask(known_password=True)  # an invalid answer: invalid-answer
    conv.ask_failure("the server does not answer")  # db-failure
    conv.setup_error("the server is too old")  # setup-error
    fe.flags[Q.SQLITE_DATA]["seen"] = "false"
    conv.ask_sqlite("2 users", 1)  # sqlite-data
    assert overridden <= set(fe.shown)


# --- the first admin account ---------------------------------------------------------


@pytest.fixture
def no_record(tmp_path, monkeypatch):
    monkeypatch.setattr(state, "RECORD", tmp_path / "admin.json")
    return state.RECORD


def test_an_admin_account_without_a_password_is_refused_and_changes_nothing(session, no_record):
    conv, fe = session(interactive=False, preseed={Q.ADMIN_USER: "alice"})
    with pytest.raises(SetupError, match="A password is needed to create the admin account"):
        conv.ask(known_password=True)
    assert fe.values[Q.ADMIN_USER] == "alice"


def test_an_admin_account_name_with_the_server_is_refused(session, no_record):
    conv, fe = session(
        interactive=False, preseed={Q.ADMIN_USER: "@alice:example.org", Q.ADMIN_PASSWORD: "pw"}
    )
    with pytest.raises(SetupError, match="local part of its Matrix ID"):
        conv.ask(known_password=True)


def test_the_account_this_package_created_keeps_its_password_when_none_is_given(session, no_record):
    no_record.write_text('{"user_id": "@alice:ex.org", "access_token": "t"}')
    conv, fe = session(interactive=False, preseed={Q.ADMIN_USER: "alice"})
    conv.ask(known_password=True)
    assert conv.admin_answers() == ("alice", "")
    # another name is another account: it needs a password
    conv, fe = session(interactive=False, preseed={Q.ADMIN_USER: "bob"})
    with pytest.raises(SetupError, match="A password is needed"):
        conv.ask(known_password=True)


def test_admin_passwords_that_differ_are_asked_again(session, no_record):
    conv, fe = session(
        priority="medium",
        preseed={Q.ADMIN_USER: "alice", Q.ADMIN_PASSWORD: "one", Q.ADMIN_PASSWORD_AGAIN: "two"},
        user={Q.ADMIN_PASSWORD: ["three"], Q.ADMIN_PASSWORD_AGAIN: ["three"], Q.WORKERS: ["none"]},
    )
    conv.ask(known_password=True)
    assert conv.admin_answers() == ("alice", "three")
    assert fe.shown == [Q.MISMATCH, Q.ADMIN_PASSWORD, Q.ADMIN_PASSWORD_AGAIN, Q.WORKERS]


def test_backing_up_from_the_admin_confirmation_asks_the_password_again(session, no_record):
    """As for the database's password: back from the confirmation is back to the
    password, not a mismatch."""
    conv, fe = session(
        priority="medium",
        preseed={Q.ADMIN_USER: "alice", Q.ADMIN_PASSWORD: "one", Q.ADMIN_PASSWORD_AGAIN: "two"},
        user={
            Q.ADMIN_PASSWORD: ["three", "four"],
            Q.ADMIN_PASSWORD_AGAIN: [BACK, "four"],
            Q.WORKERS: ["none"],
        },
    )
    conv.ask(known_password=True)
    assert conv.admin_answers() == ("alice", "four")
    assert fe.shown == [
        Q.MISMATCH,
        Q.ADMIN_PASSWORD,
        Q.ADMIN_PASSWORD_AGAIN,
        Q.ADMIN_PASSWORD,
        Q.ADMIN_PASSWORD_AGAIN,
        Q.WORKERS,
    ]


def test_an_applied_admin_password_leaves_debconf(session):
    conv, fe = session(preseed={Q.ADMIN_PASSWORD: "s3cret", Q.ADMIN_PASSWORD_AGAIN: "s3cret"})
    conv.clear_admin_password()
    assert (fe.values[Q.ADMIN_PASSWORD], fe.values[Q.ADMIN_PASSWORD_AGAIN]) == ("", "")
