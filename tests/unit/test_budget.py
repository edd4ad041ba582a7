"""The connection budget: the pools of Synapse's processes against what PostgreSQL allows,
the max_connections that fits, the refusal's message, the server's limits as read."""

from __future__ import annotations

import pytest

from matrix_synapse_setup.core.errors import SetupError
from matrix_synapse_setup.postgres import budget as b
from matrix_synapse_setup.postgres.budget import Budget, Limits, Pool

DEBIAN = Limits(max_connections=100, superuser_reserved=3)
CLIENT4 = ["main", "client1", "client2", "client3", "client4", "events1"]


def test_the_pools_add_up_and_the_margin_is_kept():
    found = b.budget(["main", "federation_sender1", "background1"], 10, DEBIAN)
    assert found.pools == (
        Pool("main", 10),
        Pool("federation_sender1", 10),
        Pool("background1", 10),
    )
    assert found.total == 30
    assert found.margin == b.MARGIN == 10
    assert found.available == 100 - 3 - 10
    assert found.fits


def test_reserved_connections_are_counted():
    pg16 = Limits(max_connections=100, superuser_reserved=3, reserved=5)
    found = b.budget(["main"], 10, pg16)
    assert found.available == 100 - 3 - 5 - 10
    assert b.budget(["main"], 10, DEBIAN).available == 87


@pytest.mark.parametrize(("processes", "fits"), [(8, True), (9, False)])
def test_fits_up_to_exactly_what_is_available(processes, fits):
    # 87 available: 8 x 10 fits with 7 to spare, 9 x 10 does not.
    assert b.budget([f"p{i}" for i in range(processes)], 10, DEBIAN).fits is fits


def test_exactly_available_fits_and_one_more_does_not():
    limits = Limits(max_connections=53, superuser_reserved=3)  # 40 available
    assert b.budget(["main", "w1", "w2", "w3"], 10, limits).fits  # 40 of 40
    assert not b.budget(["main", "w1", "w2", "w3"], 10, limits._replace(max_connections=52)).fits
    assert not b.budget(["main", "w1", "w2", "w3", "w4"], 8, limits._replace(reserved=1)).fits


def test_a_smaller_margin_is_taken_when_given():
    limits = Limits(max_connections=43, superuser_reserved=3)
    assert not b.budget(["main", "w1", "w2", "w3"], 10, limits).fits
    assert b.budget(["main", "w1", "w2", "w3"], 10, limits, margin=0).fits


@pytest.mark.parametrize(
    ("total", "limits", "needed"),
    [
        (10, DEBIAN, 100),  # one process: Debian's default is plenty
        (60, DEBIAN, 100),  # 60 + 3 + 10 = 73: still the default
        (87, DEBIAN, 100),  # exactly the default
        (88, DEBIAN, 101),
        (120, DEBIAN, 133),
        (120, Limits(0, superuser_reserved=3, reserved=5), 138),  # max_connections not read
    ],
)
def test_needed_max_connections_never_below_the_default(total, limits, needed):
    assert b.needed_max_connections(total, limits) == needed
    # What it gives always fits.
    processes = [f"p{i}" for i in range(total)]
    fitted = limits._replace(max_connections=needed)
    assert b.budget(processes, 1, fitted).fits
    if needed > b.DEFAULT_MAX_CONNECTIONS:  # and it is the smallest that does
        assert not b.budget(processes, 1, fitted._replace(max_connections=needed - 1)).fits


def test_text_names_every_number():
    assert b.budget(CLIENT4[:4], 10, DEBIAN).text() == (
        "4 processes x 10 = 40 of 87 (max_connections 100 - 3 superuser_reserved_connections"
        " - 10 kept for admins and backups)"
    )
    pg16 = Limits(max_connections=200, superuser_reserved=3, reserved=2)
    assert b.budget(["main"], 5, pg16).text() == (
        "1 process x 5 = 5 of 185 (max_connections 200 - 3 superuser_reserved_connections"
        " - 2 reserved_connections - 10 kept for admins and backups)"
    )


def test_text_lists_pools_of_different_sizes():
    mixed = Budget((Pool("main", 10), Pool("client1", 5)), 100, 3, 0, 10)
    assert mixed.total == 15
    assert mixed.text().startswith("2 processes (main 10, client1 5) = 15 of 87 (")


def test_refuse_says_nothing_when_it_fits():
    assert b.refuse(b.budget(CLIENT4, 10, DEBIAN), "client", "db.example.org") is None


def test_refuse_names_the_numbers_and_the_ways_out():
    low = Limits(max_connections=50, superuser_reserved=3)
    with pytest.raises(SetupError) as raised:
        b.refuse(b.budget(CLIENT4, 10, low), "client", "db.example.org")
    message = raised.value.message
    assert "'client'" in message and "db.example.org" in message
    assert "6 processes x 10 = 60 of 37" in message
    assert "max_connections 50 - 3 superuser_reserved_connections" in message
    # 60 + 3 + 10: the smallest that fits (a remote server's own, not Debian's default)
    assert "at least 73" in message
    assert "fewer client workers" in message and "'none'" in message
    assert "\n" not in message


# --- the server's limits, from a row --------------------------------------------------------


@pytest.mark.parametrize(
    ("row", "limits"),
    [
        (("100", "3", None), Limits(100, 3, 0)),  # before PostgreSQL 16: no such setting
        (("250", "3", "5"), Limits(250, 3, 5)),
        ((100, 3, 0), Limits(100, 3, 0)),
    ],
)
def test_limits_from_a_row(row, limits):
    assert b.limits_from_row(row) == limits


def test_the_query_asks_for_reserved_connections_without_failing_before_16():
    assert "current_setting('reserved_connections', true)" in b.LIMITS_QUERY
    assert b.LIMITS_QUERY.startswith("SELECT ")
