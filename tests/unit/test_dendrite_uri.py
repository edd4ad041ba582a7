"""Dendrite's connection string: built, read back by libpq (psycopg's parser) and by our
own reader, and masked."""

from __future__ import annotations

import pytest
from psycopg.conninfo import conninfo_to_dict

from matrix_synapse_setup.dendrite import uri
from matrix_synapse_setup.dendrite.uri import Target

HARD = "p@ss/w%rd:x? #1"


def test_peer_over_the_socket_has_no_password_and_names_the_socket():
    target = Target("dendrite", "dendrite", "/run/postgresql", 5432, None, "disable")
    assert (
        uri.build(target) == "postgresql://dendrite@/dendrite?host=/run/postgresql&sslmode=disable"
    )
    assert conninfo_to_dict(uri.build(target)) == {
        "user": "dendrite",
        "dbname": "dendrite",
        "host": "/run/postgresql",
        "sslmode": "disable",
    }


def test_another_port_on_the_socket_is_named():
    target = Target("dendrite", "dendrite", "/run/postgresql", 5433, None, "disable")
    assert conninfo_to_dict(uri.build(target))["port"] == "5433"


@pytest.mark.parametrize("password", [HARD, "a b", "%41", "ü€", "'\"\\", "x@y@z"])
def test_a_password_survives_libpq_and_our_reader(password):
    target = Target("d_tcp", "d_db", "127.0.0.1", 5432, password, "disable")
    text = uri.build(target)
    assert conninfo_to_dict(text)["password"] == password
    assert uri.parse(text) == target
    # Nothing of the password's special characters is left bare in the URI.
    authority = text.split("://", 1)[1].rsplit("@", 1)[0]
    assert not set("@/?# %:") & set(authority.split(":", 1)[1].replace("%", ""))


def test_ipv6_and_a_ca_file():
    target = Target("d", "d", "::1", 5433, "x", "verify-full", "/etc/ssl/certs/ca-certificates.crt")
    text = uri.build(target)
    assert "@[::1]:5433/" in text
    params = conninfo_to_dict(text)
    assert params["host"] == "::1"
    assert params["sslrootcert"] == "/etc/ssl/certs/ca-certificates.crt"
    assert uri.parse(text) == target


def test_parse_takes_lib_pq_defaults_and_refuses_other_schemes():
    found = uri.parse("postgres://u:p@h/db")
    assert found == Target("u", "db", "h", 5432, "p", "require")
    assert uri.parse("file:dendrite.db") is None
    assert uri.parse("host=x dbname=y") is None
    assert uri.parse("postgresql://u@h:notaport/db") is None


def test_mask_hides_every_password_and_nothing_else():
    text = uri.build(Target("u", "db", "h", 5432, HARD, "require"))
    line = f"    connection_string: {text} # comment"
    masked = uri.mask(line)
    assert (
        masked == "    connection_string: postgresql://u:****@h:5432/db?sslmode=require # comment"
    )
    peer = uri.build(Target("u", "db", "/run/postgresql", 5432, None, "disable"))
    assert uri.mask(peer) == peer
    assert uri.mask("postgresql://username:password@hostname/dendrite") == (
        "postgresql://username:****@hostname/dendrite"
    )
