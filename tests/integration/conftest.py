"""Fixtures: a real, throwaway PostgreSQL cluster (see scripts/devtools/pgcluster.py).

The server's language comes from the environment: ``MSS_PG_LC_MESSAGES`` (such
as ``fr_FR.UTF-8``; unset or empty: English) becomes the cluster's
``lc_messages``, and this process's own LC_MESSAGES (not its children's), so
that libpq's client-side messages are translated too.  ``invoke test`` runs the
suite once in English and once in French: every error must be classified the
same way in both.  The French run repeats only the tests marked
``server_language``, those that rely on the error classifier
(tests/unit/test_server_language_marks.py checks that each of them is marked), and
checks first that both sides really speak French, so it cannot silently be an
English one.
"""

from __future__ import annotations

import locale
import os
import secrets

import pytest

from matrix_synapse_setup.core.settings import Settings
from matrix_synapse_setup.postgres.provision import provision
from scripts.devtools.pgcluster import free_port, psycopg, throwaway_cluster

LC_MESSAGES_ENV = "MSS_PG_LC_MESSAGES"
SERVER_LANGUAGE = "server_language"  # the mark of the tests the French run repeats
# What a failed password login says in English (the server's text), and words that
# prove another language: in the server's text for that failure, and in libpq's own
# text for a refused TCP connection ("Is the server running on that host ...").
ENGLISH_LOGIN_FAILED = "password authentication failed"
PROOF = {"fr": ("authentification", "serveur")}


def server_language() -> str | None:
    """The cluster's lc_messages for this run, or None for English."""
    return os.environ.get(LC_MESSAGES_ENV) or None


@pytest.fixture(scope="session")
def lc_messages() -> str | None:
    return server_language()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A translated run repeats only the tests whose outcome depends on the server's
    language: those marked ``server_language`` (a failure classified and advised).
    The others see no server message, or none that they read, and already ran in the
    English pass."""
    if server_language() is None:
        return
    keep, drop = [], []
    for item in items:
        in_here = "tests/integration/" in str(item.path)
        (drop if in_here and not item.get_closest_marker(SERVER_LANGUAGE) else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(scope="session", autouse=True)
def client_language(lc_messages):
    """In a translated run, this process's LC_MESSAGES (set with setlocale: Python does
    not, and libpq and strerror need it): the code under test that runs in it reads
    libpq's own messages in that language too.  The environment is left alone:
    children (debconf, msgfmt, dpkg ...) keep the caller's language, since tests read
    some of their output."""
    if lc_messages is None:
        yield None
        return
    before = locale.setlocale(locale.LC_MESSAGES)
    try:
        locale.setlocale(locale.LC_MESSAGES, lc_messages)
    except locale.Error:
        pytest.fail(
            f"{LC_MESSAGES_ENV}={lc_messages}: the system has no such locale "
            f"(locale -a): run scripts/bootstrap, which generates fr_FR.UTF-8",
            pytrace=False,
        )
    try:
        yield lc_messages
    finally:
        locale.setlocale(locale.LC_MESSAGES, before)


def _failure_text(**params) -> str:
    try:
        psycopg.connect(connect_timeout=5, sslmode="disable", **params).close()
    except psycopg.OperationalError as err:
        return str(err)
    pytest.fail(f"connecting with {params} was meant to fail, and did not", pytrace=False)


def check_language(cluster, lc_messages: str) -> None:
    """Fail loudly unless the server and libpq in this process speak *lc_messages*."""
    [(setting,)] = cluster.query("SHOW lc_messages")
    server = _failure_text(
        host="127.0.0.1", port=cluster.port, user="postgres", password="wrong", dbname="postgres"
    )
    client = _failure_text(host="127.0.0.1", port=free_port(), user="postgres", dbname="postgres")
    server_word, client_word = PROOF.get(lc_messages.split("_")[0], ("", ""))
    problems = []
    if setting != lc_messages:
        problems.append(f"the cluster's lc_messages is {setting!r}")
    if ENGLISH_LOGIN_FAILED in server or server_word not in server:
        problems.append(
            f"the server's error for a wrong password is {server!r}, not in {lc_messages} "
            f"(is PostgreSQL's translation /usr/share/locale/*/LC_MESSAGES/postgres-*.mo "
            f"installed?)"
        )
    if client_word not in client:
        problems.append(
            f"libpq's error for a refused connection is {client!r}, not in {lc_messages} "
            f"(is libpq's translation /usr/share/locale/*/LC_MESSAGES/libpq5-*.mo installed?)"
        )
    if problems:
        pytest.fail(
            f"{LC_MESSAGES_ENV}={lc_messages} but this run is not in that language: "
            + "; ".join(problems),
            pytrace=False,
        )


@pytest.fixture(scope="session")
def cluster(lc_messages, client_language):
    with throwaway_cluster(lc_messages=lc_messages) as made:
        if lc_messages is not None:
            check_language(made, lc_messages)
        yield made


@pytest.fixture
def names(cluster):
    """A fresh database and role name for one test; dropped afterwards."""
    token = secrets.token_hex(4)
    dbname, user = f"synapse_{token}", f"synapse_{token}"
    yield dbname, user
    sql = psycopg.sql
    with cluster.connect() as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(dbname)))
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(user)))


@pytest.fixture
def provisioned(request, cluster, names):
    """Synapse's role and database (*names*), provisioned on the throwaway cluster as the
    package does, with the password of the test module's PASSWORD; their settings."""
    dbname, user = names
    settings = Settings(
        host="localhost",
        port=cluster.port,
        dbname=dbname,
        user=user,
        password=request.module.PASSWORD,
    )
    provision(settings, socket_dir=cluster.socket_dir)
    return settings
