"""The debconf conversation, with python3-debconf's Debconf talking over a real
socket pair to a scripted frontend.

The frontend here is a fake: it answers the protocol the way debconf's
Debconf::ConfModule does (INPUT/GO/GET/SET/SUBST/FSET/RESET/CAPB, the
``escape`` capability, priorities, the seen flag, error templates, backup),
and a script plays the user.  The real debconf runs the real config script in
tests/integration/test_debconf.py.
"""

from __future__ import annotations

import re
import socket
import threading
from pathlib import Path

import debconf
import pytest

from matrix_synapse_setup import conversation as cv
from matrix_synapse_setup import maint, messages
from matrix_synapse_setup.errors import SetupError

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


def test_medium_priority_asks_host_and_password_with_confirmation(session):
    password = " pass\\word with  spaces \"'$ é "
    conv, fe = session(
        priority="medium",
        user={Q.HOST: ["localhost"], Q.PASSWORD: [password], Q.PASSWORD_AGAIN: [password]},
    )
    answers = conv.ask(known_password=False)
    assert fe.shown == [Q.HOST, Q.PASSWORD, Q.PASSWORD_AGAIN]
    assert answers.password == password


def test_low_priority_asks_everything_and_sslmode_only_for_a_remote_host(session):
    conv, fe = session(
        priority="low",
        user={
            Q.HOST: ["db.example.org"],
            Q.PORT: ["6432"],
            Q.NAME: ["matrix"],
            Q.USER: ["synapse_app"],
            Q.SSLMODE: ["verify-full"],
            Q.SSLROOTCERT: [""],
            Q.PASSWORD: ["pw"],
            Q.PASSWORD_AGAIN: ["pw"],
            Q.PURGE: ["true"],
        },
    )
    answers = conv.ask(known_password=False)
    assert answers == cv.Answers(
        host="db.example.org",
        port="6432",
        dbname="matrix",
        user="synapse_app",
        password="pw",
        sslmode="verify-full",
        purge=True,
    )
    assert Q.SSLMODE in fe.shown and Q.SSLROOTCERT in fe.shown


def test_a_known_password_is_not_asked_at_medium_priority(session):
    conv, fe = session(priority="medium", user={Q.HOST: ["localhost"]})
    answers = conv.ask(known_password=True)
    assert fe.shown == [Q.HOST]
    assert answers.password == ""


def test_an_invalid_preseed_is_explained_and_asked_again_at_critical(session):
    conv, fe = session(priority="high", preseed={Q.PORT: "54 32"}, user={Q.PORT: ["5433"]})
    answers = conv.ask(known_password=True)
    assert fe.shown == [Q.INVALID, Q.PORT]
    assert "1 to 65535" in fe.errors[0]
    assert answers.port == "5433"


def test_an_invalid_answer_is_asked_again_until_it_is_valid(session):
    conv, fe = session(
        priority="low",
        user={
            Q.HOST: ["localhost"],
            Q.PORT: ["5432"],
            Q.NAME: ["Bad-Name", "pg_x", "good_name"],
            Q.USER: ["synapse"],
            Q.PASSWORD: [""],
            Q.TUNE: ["true"],
            Q.PURGE: ["false"],
        },
    )
    answers = conv.ask(known_password=True)
    assert answers.dbname == "good_name"
    assert fe.shown.count(Q.INVALID) == 2
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
    ],
)
def test_noninteractive_invalid_preseed_fails_with_the_message(session, question, value, expected):
    preseed = {question: value}
    if question == Q.SSLMODE:
        preseed |= {Q.HOST: "db.example.org", Q.PASSWORD: "pw"}
    conv, fe = session(interactive=False, preseed=preseed)
    with pytest.raises(SetupError, match=expected):
        conv.ask(known_password=True)


def test_mismatched_passwords_are_explained_and_asked_again(session):
    conv, fe = session(
        priority="medium",
        user={
            Q.HOST: ["localhost"],
            Q.PASSWORD: ["first", "second"],
            Q.PASSWORD_AGAIN: ["frist", "second"],
        },
    )
    answers = conv.ask(known_password=False)
    assert answers.password == "second"
    assert fe.shown == [
        Q.HOST,
        Q.PASSWORD,
        Q.PASSWORD_AGAIN,
        Q.MISMATCH,
        Q.PASSWORD,
        Q.PASSWORD_AGAIN,
    ]


def test_a_preseeded_password_needs_no_confirmation(session):
    conv, fe = session(interactive=False, preseed={Q.PASSWORD: "pre seeded\\"})
    assert conv.ask(known_password=False).password == "pre seeded\\"


def test_preseeded_passwords_that_differ_fail_noninteractive(session):
    conv, fe = session(interactive=False, preseed={Q.PASSWORD: "a", Q.PASSWORD_AGAIN: "b"})
    with pytest.raises(SetupError, match="differ"):
        conv.ask(known_password=False)
    # and the mismatching secret does not stay in debconf
    assert fe.values[Q.PASSWORD] == fe.values[Q.PASSWORD_AGAIN] == ""


def test_a_password_with_a_control_character_is_refused(session):
    conv, fe = session(interactive=False, preseed={Q.PASSWORD: "tab\there"})
    with pytest.raises(SetupError, match="control characters"):
        conv.ask(known_password=False)


def test_a_remote_server_needs_a_password(session):
    conv, fe = session(interactive=False, preseed={Q.HOST: "db.example.org"})
    with pytest.raises(SetupError, match="remote server needs the password"):
        conv.ask(known_password=False)


def test_backing_up_from_the_port_shows_the_host_again(session):
    conv, fe = session(
        priority="low",
        user={
            Q.HOST: ["db1.example.org", "localhost"],
            Q.PORT: [BACK, "5432"],
            Q.NAME: ["synapse"],
            Q.USER: ["synapse"],
            Q.PASSWORD: [""],
            Q.TUNE: ["true"],
            Q.PURGE: ["false"],
        },
    )
    answers = conv.ask(known_password=True)
    assert answers.host == "localhost"
    assert fe.shown[:4] == [Q.HOST, Q.PORT, Q.HOST, Q.PORT]


def test_backing_up_skips_questions_that_are_not_shown(session):
    # priority medium: only host and password are shown; back from the password
    # goes over port, name, user (not shown) to the host.
    conv, fe = session(
        priority="medium",
        user={
            Q.HOST: ["localhost", "localhost"],
            Q.PASSWORD: [BACK, "pw"],
            Q.PASSWORD_AGAIN: ["pw"],
        },
    )
    assert conv.ask(known_password=False).password == "pw"
    assert fe.shown == [Q.HOST, Q.PASSWORD, Q.HOST, Q.PASSWORD, Q.PASSWORD_AGAIN]


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


# --- config: the installed snippet's values win, once ---------------------------

SNIPPET = """\
database:
  name: psycopg2
  args:
    user: edited_user
    password: "from the file"
    dbname: edited_db
    host: db.example.org
    port: 6000
    sslmode: require
"""


def test_hand_edits_are_read_into_debconf_once(session, tmp_path):
    path = tmp_path / "database.yaml"
    path.write_text(SNIPPET)
    conv, fe = session(interactive=False)
    found = maint.load_snippet(conv, path)
    assert found["password"] == "from the file"
    assert (fe.values[Q.HOST], fe.values[Q.PORT], fe.values[Q.NAME], fe.values[Q.USER]) == (
        "db.example.org",
        "6000",
        "edited_db",
        "edited_user",
    )
    assert fe.values[Q.SSLMODE] == "require"
    # The admin answers something else (first config run); the second config run
    # in the same dpkg run must not put the old file's values back.
    fe.values[Q.HOST] = "localhost"
    maint.load_snippet(conv, path)
    assert fe.values[Q.HOST] == "localhost"
    # A later hand edit is read again.
    path.write_text(SNIPPET.replace("6000", "6001"))
    maint.load_snippet(conv, path)
    assert fe.values[Q.PORT] == "6001"
    assert fe.values[Q.HOST] == "db.example.org"


def test_an_unreadable_snippet_is_not_used(session, tmp_path, capsys):
    path = tmp_path / "database.yaml"
    path.write_text("database: [\n")
    conv, fe = session(interactive=False)
    assert maint.load_snippet(conv, path) is None
    assert fe.values[Q.HOST] == "localhost"
    assert "not a database snippet" in capsys.readouterr().err


def test_resolve_password_keeps_the_current_one_or_generates():
    answers = cv.Answers("localhost", "5432", "synapse", "synapse", "", "prefer", False)
    assert maint.resolve_password(answers, {"password": "current"}) == "current"
    generated = maint.resolve_password(answers, None)
    assert len(generated) >= 40
    assert generated != maint.resolve_password(answers, None)
    answers.password = "new"
    assert maint.resolve_password(answers, {"password": "current"}) == "new"
    remote = cv.Answers("db.example.org", "5432", "synapse", "synapse", "", "prefer", False)
    with pytest.raises(SetupError, match=re.escape(messages.REMOTE_PASSWORD_NEEDED[:20])):
        maint.resolve_password(remote, None)


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


def test_an_empty_answer_keeps_the_value_shown(session):
    # debconf's readline frontend without Term::ReadLine::Gnu answers "" to Enter.
    conv, fe = session(
        priority="low",
        preseed={Q.HOST: "db.example.org", Q.PASSWORD: "pw", Q.PASSWORD_AGAIN: "pw"},
        user={
            Q.PORT: [""],
            Q.NAME: [""],
            Q.USER: ["app"],
            Q.SSLMODE: [""],
            Q.SSLROOTCERT: [""],
            Q.PURGE: ["false"],
        },
    )
    for q in (Q.HOST, Q.PASSWORD, Q.PASSWORD_AGAIN):
        fe.flags[q]["seen"] = "false"
    fe.user[Q.HOST] = [""]
    fe.user[Q.PASSWORD] = ["pw"]
    fe.user[Q.PASSWORD_AGAIN] = ["pw"]
    answers = conv.ask(known_password=False)
    assert (answers.host, answers.port, answers.dbname, answers.user, answers.sslmode) == (
        "db.example.org",
        "5432",
        "synapse",
        "app",
        "verify-full",
    )


def test_every_template_is_used_by_the_helper():
    # Backs debian/matrix-synapse-setup.lintian-overrides: lintian reads only the shell
    # scripts, so it cannot see the helper ask these questions.
    code = "\n".join(p.read_text() for p in sorted(Path(cv.__file__).parent.glob("*.py")))
    names = {
        value: key
        for key, value in vars(cv).items()
        if key.isupper() and isinstance(value, str) and value.startswith(f"{cv.PKG}/")
    }
    for template in TEMPLATES:
        assert template in names, f"no constant names {template}"
        uses = re.findall(rf"\b{names[template]}\b", code)
        assert len(uses) > 1, f"{template} ({names[template]}) is defined but never used"
