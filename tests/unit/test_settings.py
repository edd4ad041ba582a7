"""Validation of the answers, with no server."""

from pathlib import Path

import pytest

from matrix_synapse_setup.core.errors import SetupError
from matrix_synapse_setup.core.settings import Settings, validate_name, validate_port


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


@pytest.mark.parametrize(
    "host", ["/var/run/post gres", "bad host", "-x", "a..b", "db.example.org:5433", "a\nb"]
)
def test_bad_hosts_are_refused(host):
    with pytest.raises(SetupError):
        Settings.from_answers(host=host)


def test_control_characters_in_a_password_are_refused():
    with pytest.raises(SetupError, match="control characters"):
        Settings.from_answers(password="line1\nline2")


def test_no_repr_shows_the_password():
    from matrix_synapse_setup.dpkg.debconf import Answers

    answers = Answers("localhost", "5432", "synapse", "synapse", "s3cr3t-pw", "prefer", False)
    settings = Settings.from_answers(**answers.settings_answers())
    assert "s3cr3t-pw" not in repr(answers) and "s3cr3t-pw" not in repr(settings)


@pytest.mark.parametrize(
    ("host", "local"),
    [
        ("localhost", True),
        ("127.0.0.1", True),
        ("::1", True),
        ("/var/run/postgresql", True),
        ("/run/pg-remote", True),
        ("db.example.org", False),
        ("10.0.0.5", False),
        ("fd00::5", False),
        ("localhost.example.org", False),
    ],
)
def test_local_means_the_cluster_on_this_machine(host, local):
    settings = Settings.from_answers(host=host, password="pw")
    assert settings.local is local
    assert settings.sslmode == ("prefer" if local else "verify-full")
    assert settings.sslrootcert == (None if local else "/etc/ssl/certs/ca-certificates.crt")


@pytest.mark.parametrize(
    "host",
    [
        "localhost",
        "127.0.0.1",
        "127.1.2.3",
        "::1",
        "/var/run/postgresql",
        "/run/pg x",
        "",
        "db.example.org",
        "10.0.0.5",
        "fd00::5",
        "127.example.org",
        "127.0.0",
        "localhost.example.org",
        # edge cases: what ipaddress refuses is a host name, so not local
        " localhost",
        "localhost\t",
        "127.0.0.255",
        "127.0.0.256",
        "127.0.0.01",
        "127..1.1",
        "127.0.0.1.",
        "127.0.1",
        "127.*.0.1",
        "0:0:0:0:0:0:0:1",
        "0::1",
        "::0:0:0:0:0:0:1",
        "0:0:0:0:0:0:0:0:1",
        "::0001",
        "::00001",
        ":::1",
        ":0::1",
        "::1::1",
        "::ffff:127.0.0.1",
        "::127.0.0.1",
        "::1%lo",
        "::",
        "::2",
    ],
)
@pytest.mark.parametrize("script", ["postrm", "config"])
def test_the_shell_copies_agree_on_what_is_local(script, host):
    # debian/postrm runs when our Python is gone, debian/config before it is unpacked:
    # each has a shell copy of is_local, with the same "SCRIPT is-local HOST" interface.
    import subprocess

    from matrix_synapse_setup.core.settings import is_local

    path = Path(__file__).resolve().parents[2] / "debian" / script
    proc = subprocess.run(["sh", str(path), "is-local", host], check=False, capture_output=True)
    assert proc.stdout == proc.stderr == b""
    assert proc.returncode in (0, 1)
    assert (proc.returncode == 0) is is_local(host)
