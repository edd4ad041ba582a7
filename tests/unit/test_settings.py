"""Validation of the answers, with no server."""

import pytest

from matrix_synapse_setup.errors import SetupError
from matrix_synapse_setup.settings import Settings, validate_name, validate_port


@pytest.mark.parametrize("name", ["synapse", "_s", "matrix_synapse_2", "a" * 63])
def test_safe_names_are_accepted(name):
    assert validate_name("database", name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "Synapse",
        "1synapse",
        "syn-apse",
        "syn apse",
        'syn"apse',
        "a" * 64,
        "postgres",
        "template0",
        "pg_monitor",
        "synapse;drop",
        "sÿnapse",
    ],
)
def test_unsafe_names_are_refused_with_the_rule(name):
    with pytest.raises(SetupError, match="lower-case letters"):
        validate_name("database", name)


@pytest.mark.parametrize("port", ["0", "65536", "-1", "abc", "54 32", ""])
def test_bad_ports_are_refused(port):
    with pytest.raises(SetupError, match="1 to 65535"):
        validate_port(port)


def test_defaults_are_the_local_cluster():
    s = Settings.from_answers()
    assert (s.host, s.port, s.dbname, s.user, s.local) == (
        "localhost",
        5432,
        "synapse",
        "synapse",
        True,
    )


def test_remote_host_is_not_local_and_password_is_not_in_repr():
    s = Settings.from_answers(host="db.example.org", port="6543", password="s3cret'\"")
    assert not s.local and s.port == 6543
    assert "s3cret" not in repr(s)


@pytest.mark.parametrize("host", ["/var/run/postgresql", "bad host", "-x", "a..b"])
def test_bad_hosts_are_refused(host):
    with pytest.raises(SetupError):
        Settings.from_answers(host=host)


def test_control_characters_in_a_password_are_refused():
    with pytest.raises(SetupError, match="control characters"):
        Settings.from_answers(password="line1\nline2")


def test_no_repr_shows_the_password():
    from matrix_synapse_setup.conversation import Answers

    answers = Answers("localhost", "5432", "synapse", "synapse", "s3cr3t-pw", "prefer", False)
    settings = Settings.from_answers(**answers.settings_answers())
    assert "s3cr3t-pw" not in repr(answers) and "s3cr3t-pw" not in repr(settings)
