"""Every connection error gets the same class, kind and advice in any server language.

Issue 12: errors are classified by SQLSTATE or connection state, never by message
text.  ``invoke test`` runs this file against an English cluster and against one
with ``lc_messages = 'fr_FR.UTF-8'`` (MSS_PG_LC_MESSAGES, see conftest.py), where
libpq's own messages are French too.  In both runs each case must raise the same
exception class with the same ``kind``, and the same message: the one built from
the template in messages.py, where only ``{reason}`` (libpq's words, shown to the
admin as they are) may differ.  That reason is checked to be in the run's language,
so a run that silently fell back to English would fail here as well.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import Callable, Iterator

import pytest

from matrix_synapse_setup.core import messages
from matrix_synapse_setup.core.errors import SetupError
from matrix_synapse_setup.core.settings import Settings
from matrix_synapse_setup.postgres.provision import provision, verify
from matrix_synapse_setup.postgres.queries import ServerUnavailable, import_psycopg
from scripts.devtools.pgcluster import free_port

# Every test here is about the classifier: the French pass repeats them all.
pytestmark = pytest.mark.server_language

psycopg = import_psycopg()
sql = psycopg.sql

PASSWORD = "right-password"
OTHER_CA = "/etc/ssl/certs/ca-certificates.crt"  # the system's CAs: not the cluster's
DEFAULT_ROOT = "the default root certificate"  # what the TLS advice says without a file
MASK = "\0reason\0"

# What libpq's reason says, by language: the server's text for a SQLSTATE, or libpq's
# and the C library's own text (translated by this process's LC_MESSAGES).
SAYS = {
    "28P01": {"en": "password authentication failed", "fr": "authentification par mot de passe"},
    "nologin": {"en": "not permitted to log in", "fr": "n'est pas autorisé à se connecter"},
    "hba": {"en": "pg_hba.conf rejects connection", "fr": "pg_hba.conf rejette la connexion"},
    "53300": {"en": "too many connections for role", "fr": "trop de connexions pour le rôle"},
    "refused": {"en": "Connection refused", "fr": "Connexion refusée"},
    "certificate": {"en": "SSL error", "fr": "erreur SSL"},
    "no-tls": {"en": "server does not support SSL", "fr": "le serveur ne supporte pas SSL"},
}


@pytest.fixture
def language(lc_messages) -> str:
    return lc_messages.split("_")[0] if lc_messages else "en"


def advice(template: str, **fields) -> re.Pattern[str]:
    """The message *template* gives with *fields*, as a pattern where the reason (any
    text, in any language) is the group ``reason``."""
    text = template.format(reason=MASK, **fields)
    assert text.count(MASK) <= 1, template
    return re.compile("(?P<reason>.+)".join(map(re.escape, text.split(MASK))), re.DOTALL)


def create_role(cluster, user: str, *options: str) -> None:
    with cluster.connect() as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} {} PASSWORD {}").format(
                sql.Identifier(user), sql.SQL(" ".join(options or ["LOGIN"])), sql.Literal(PASSWORD)
            )
        )


def create_database(cluster, dbname: str, user: str) -> None:
    with cluster.connect() as conn:
        conn.execute(
            sql.SQL(
                "CREATE DATABASE {} OWNER {} ENCODING 'UTF8' LOCALE 'C' TEMPLATE template0"
            ).format(sql.Identifier(dbname), sql.Identifier(user))
        )


@contextlib.contextmanager
def server_setting(cluster, name: str, value: str) -> Iterator[None]:
    with cluster.connect() as conn:
        conn.execute(sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name), value))
    try:
        cluster.reload()
        yield
    finally:
        with cluster.connect() as conn:
            conn.execute(sql.SQL("ALTER SYSTEM RESET {}").format(sql.Identifier(name)))
        cluster.reload()


def tcp(cluster, dbname, user, **kw) -> Settings:
    kw.setdefault("password", PASSWORD)
    kw.setdefault("sslmode", "disable")
    kw.setdefault("port", cluster.port)
    return Settings(host="127.0.0.1", dbname=dbname, user=user, **kw)


def hba(settings: Settings, kind: str = "host") -> str:
    """The pg_hba.conf line the advice must name: ours is 127.0.0.1."""
    return f"{kind} {settings.dbname} {settings.user} 127.0.0.1/32 scram-sha-256"


@dataclasses.dataclass
class Case:
    id: str
    # Prepares the cluster for (cluster, dbname, user); returns the settings to verify
    # and, if the cluster must be changed meanwhile, a context manager doing that.
    setup: Callable[..., tuple[Settings, contextlib.AbstractContextManager | None]]
    error: type[SetupError]
    kind: str
    template: str
    fields: Callable[[Settings], dict]  # the template's fields other than the reason
    says: str | None  # a key of SAYS: what the reason is about, in the run's language


def login_fields(sqlstate: str, hba_kind: str = "host") -> Callable[[Settings], dict]:
    def fields(s: Settings) -> dict:
        return {**_where(s), "sqlstate": sqlstate, "hba": hba(s, hba_kind)}

    return fields


def _where(s: Settings) -> dict:
    return {"host": s.host, "port": s.port, "user": s.user, "dbname": s.dbname}


def _wrong_password(cluster, dbname, user, **kw):
    create_role(cluster, user)
    create_database(cluster, dbname, user)
    return tcp(cluster, dbname, user, password="wrong-password", **kw), None


def _no_such_role(cluster, dbname, user):
    return tcp(cluster, dbname, user), None


def _nologin(cluster, dbname, user):
    create_role(cluster, user, "NOLOGIN")  # with a password: the login itself is refused
    create_database(cluster, dbname, user)
    return tcp(cluster, dbname, user), None


def _no_database(cluster, dbname, user):
    create_role(cluster, user)
    return tcp(cluster, dbname, user), None


def _hba_reject(cluster, dbname, user):
    create_role(cluster, user)
    create_database(cluster, dbname, user)
    return tcp(cluster, dbname, user), cluster.hba_lines(f"host all {user} 127.0.0.1/32 reject")


def _connection_limit(cluster, dbname, user):
    create_role(cluster, user, "LOGIN CONNECTION LIMIT 0")
    create_database(cluster, dbname, user)
    return tcp(cluster, dbname, user), None


def _nothing_listening(cluster, dbname, user):
    return tcp(cluster, dbname, user, port=free_port()), None


def _unknown_ca(cluster, dbname, user):
    create_role(cluster, user)
    create_database(cluster, dbname, user)
    return tcp(cluster, dbname, user, sslmode="verify-full", sslrootcert=OTHER_CA), None


def _server_without_tls(cluster, dbname, user):
    create_role(cluster, user)
    create_database(cluster, dbname, user)
    return tcp(cluster, dbname, user, sslmode="require"), server_setting(cluster, "ssl", "off")


def _tls_fields(s: Settings) -> dict:
    return {**_where(s), "sslmode": s.sslmode, "sslrootcert": s.sslrootcert or DEFAULT_ROOT}


CASES = [
    Case(
        "wrong password",
        _wrong_password,
        ServerUnavailable,
        "login",
        messages.LOGIN_REFUSED,
        login_fields("28P01"),
        "28P01",
    ),
    Case(
        # prefer: libpq tries TLS, is refused, then tries again without it
        "wrong password, sslmode prefer",
        lambda c, d, u: _wrong_password(c, d, u, sslmode="prefer"),
        ServerUnavailable,
        "login",
        messages.LOGIN_REFUSED,
        login_fields("28P01"),
        "28P01",
    ),
    Case(
        "wrong password over verified TLS",
        lambda c, d, u: _wrong_password(c, d, u, sslmode="verify-full", sslrootcert=c.ca_file),
        ServerUnavailable,
        "login",
        messages.LOGIN_REFUSED,
        login_fields("28P01", "hostssl"),
        "28P01",
    ),
    Case(
        # the server does not tell a missing role from a wrong password
        "role does not exist",
        _no_such_role,
        ServerUnavailable,
        "login",
        messages.LOGIN_REFUSED,
        login_fields("28P01"),
        "28P01",
    ),
    Case(
        "NOLOGIN role",
        _nologin,
        ServerUnavailable,
        "login",
        messages.LOGIN_REFUSED,
        login_fields("28000"),
        "nologin",
    ),
    Case(
        "pg_hba.conf rejects",
        _hba_reject,
        ServerUnavailable,
        "login",
        messages.LOGIN_REFUSED,
        login_fields("28000"),
        "hba",
    ),
    Case(
        "database does not exist",
        _no_database,
        SetupError,
        "no-database",
        messages.DATABASE_MISSING,
        _where,
        None,
    ),
    Case(
        "connection limit reached",
        _connection_limit,
        ServerUnavailable,
        "busy",
        messages.SERVER_BUSY,
        lambda s: {**_where(s), "sqlstate": "53300"},
        "53300",
    ),
    Case(
        "nothing listens on the port",
        _nothing_listening,
        ServerUnavailable,
        "unreachable",
        messages.SERVER_UNREACHABLE,
        _where,
        "refused",
    ),
    Case(
        "verify-full with a CA that did not sign the server's certificate",
        _unknown_ca,
        SetupError,
        "tls",
        messages.TLS_FAILED,
        _tls_fields,
        "certificate",
    ),
    Case(
        "sslmode require, server without TLS",
        _server_without_tls,
        SetupError,
        "tls",
        messages.TLS_FAILED,
        _tls_fields,
        "no-tls",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_connection_error_is_classified_and_advised_as_in_english(cluster, names, language, case):
    dbname, user = names
    settings, change = case.setup(cluster, dbname, user)
    with change or contextlib.nullcontext():
        with pytest.raises(SetupError) as info:
            verify(settings)
    error = info.value
    assert type(error) is case.error, error.message
    assert error.kind == case.kind, error.message
    expected = advice(case.template, **case.fields(settings))
    found = expected.fullmatch(error.message)
    assert found, (
        f"the advice differs from the template's:\n  got      {error.message!r}\n"
        f"  expected {expected.pattern!r}"
    )
    if case.says is not None:
        reason = found["reason"]
        assert SAYS[case.says].get(language, "") in reason, reason
        if language != "en":
            assert SAYS[case.says]["en"] not in reason, reason


def test_the_pg_hba_line_in_the_advice_lets_the_role_in(cluster, names):
    dbname, user = names
    settings, reject = _hba_reject(cluster, dbname, user)
    assert reject is not None
    with reject:
        with pytest.raises(ServerUnavailable) as info:
            verify(settings)
        line = hba(settings)
        assert f"'{line}'" in info.value.message
        with cluster.hba_lines(line):  # before the reject line, as the admin would add it
            steps = verify(settings)
    assert {step.outcome for step in steps} == {"ok"}


def test_verify_full_with_the_clusters_ca_succeeds(cluster, names):
    dbname, user = names
    create_role(cluster, user)
    create_database(cluster, dbname, user)
    settings = tcp(cluster, dbname, user, sslmode="verify-full", sslrootcert=cluster.ca_file)
    steps = verify(settings)
    assert {step.outcome for step in steps} == {"ok"}, steps


# --- the local cluster: the superuser part, as postgres over the Unix socket -------


def local(cluster, dbname, user, **kw) -> Settings:
    kw.setdefault("port", cluster.port)
    return Settings(host="localhost", dbname=dbname, user=user, password=PASSWORD, **kw)


def test_local_superuser_refused_by_pg_hba(cluster, names):
    dbname, user = names
    with cluster.hba_lines("local all postgres reject"):
        with pytest.raises(SetupError) as info:
            provision(local(cluster, dbname, user), socket_dir=cluster.socket_dir)
    error = info.value
    assert type(error) is ServerUnavailable, error.message
    assert error.message == messages.LOCAL_SUPERUSER_REFUSED.format(
        port=cluster.port, sqlstate="28000"
    )
    assert cluster.query("SELECT 1 FROM pg_roles WHERE rolname = %s", (user,)) == []


def test_local_cluster_not_running(cluster, names):
    dbname, user = names
    port = free_port()
    with pytest.raises(SetupError) as info:
        provision(local(cluster, dbname, user, port=port), socket_dir=cluster.socket_dir)
    error = info.value
    assert type(error) is ServerUnavailable, error.message
    found = advice(messages.LOCAL_UNREACHABLE, port=port).fullmatch(error.message)
    assert found, error.message
    assert f"{cluster.socket_dir}/.s.PGSQL.{port}" in found["reason"]


@pytest.mark.parametrize("refused", [True, False], ids=["refused", "not running"])
def test_local_errors_have_a_kind(cluster, names, refused):
    dbname, user = names
    hba_lines = cluster.hba_lines("local all postgres reject") if refused else None
    port = cluster.port if refused else free_port()
    with hba_lines or contextlib.nullcontext():
        with pytest.raises(SetupError) as info:
            provision(local(cluster, dbname, user, port=port), socket_dir=cluster.socket_dir)
    assert info.value.kind == ("login" if refused else "unreachable")
