"""diagnose.classify: a failed connection's class from its SQLSTATE or how far it got."""

from __future__ import annotations

import pytest

from matrix_synapse_setup.postgres import diagnose

# How far a connection got (diagnose's ranks of libpq's connection states).
NOT_CONNECTED, CONNECTED = 0, diagnose._CONNECTED
TLS_HANDSHAKE, AUTHENTICATING = diagnose._TLS_HANDSHAKE, diagnose._AUTHENTICATING


@pytest.mark.parametrize(
    ("sqlstate", "kind"),
    [
        ("28P01", diagnose.LOGIN),  # wrong password, or no such role
        ("28000", diagnose.LOGIN),  # pg_hba.conf reject, NOLOGIN, peer mismatch
        ("28999", diagnose.LOGIN),  # any other of class 28
        ("42501", diagnose.LOGIN),  # no CONNECT privilege on the database
        ("3D000", diagnose.NO_DATABASE),
        ("53300", diagnose.BUSY),  # too many connections
        ("57P01", diagnose.BUSY),
        ("57P03", diagnose.BUSY),  # starting up
        ("08006", diagnose.BUSY),  # class 08: connection exception
        ("XX000", diagnose.OTHER),
        ("53200", diagnose.OTHER),  # out of memory: not "too many connections"
    ],
)
def test_a_sqlstate_decides_whatever_the_connection_state(sqlstate, kind):
    for furthest in (NOT_CONNECTED, CONNECTED, TLS_HANDSHAKE, AUTHENTICATING):
        assert diagnose.classify(sqlstate, furthest) == kind


@pytest.mark.parametrize(
    ("furthest", "kind"),
    [
        (NOT_CONNECTED, diagnose.UNREACHABLE),
        (CONNECTED, diagnose.UNREACHABLE),
        (TLS_HANDSHAKE, diagnose.TLS),
        (AUTHENTICATING, diagnose.LOGIN),
        (AUTHENTICATING + 1, diagnose.LOGIN),
    ],
)
def test_without_a_sqlstate_the_connection_state_decides(furthest, kind):
    assert diagnose.classify(None, furthest) == kind
    assert diagnose.classify("", furthest) == kind


@pytest.mark.parametrize(
    ("message", "codes"),
    [
        ('connection to server at "db", port 5432 failed: FATAL:  28P01\n', ["28P01"]),
        ("la connexion au serveur sur « db », port 5432 a échoué : FATAL:  3D000\n", ["3D000"]),
        # sslmode prefer: refused over TLS, then again without it
        (
            'connection to server at "db", port 5432 failed: FATAL:  28000\n'
            'connection to server at "db", port 5432 failed: FATAL:  28P01\n',
            ["28000", "28P01"],
        ),
        (
            'connection to server at "db", port 5432 failed: SSL error: certificate verify '
            "failed\n",
            [],
        ),
        ('connection to server at "db", port 5432 failed: Connection refused\n', []),
    ],
)
def test_the_sqlstate_is_read_from_libpqs_terse_message(message, codes):
    assert diagnose._SQLSTATE_RE.findall(message) == codes
