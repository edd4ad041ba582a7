"""psycopg loading and SCRAM comparison, with no server."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from matrix_synapse_setup.postgres.queries import saslprep, scram_matches

ROOT = Path(__file__).resolve().parents[2]

# Simulates the state of a dpkg run that unpacked libpq5 together with us:
# libc-bin's ldconfig trigger has not run, so ld.so.cache (what
# ctypes.util.find_library reads) does not know libpq yet.  The library file
# itself is in place, as it is then.  (The system tests install the real .deb
# together with libpq5 in one apt run, which is the real thing.)
STALE_CACHE = """
import ctypes.util, sys
real = ctypes.util.find_library
ctypes.util.find_library = lambda name: None if name == "pq" else real(name)
"""


def python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["/usr/bin/python3", "-c", code], cwd=ROOT, capture_output=True, text=True, check=False
    )


def test_plain_psycopg_import_fails_when_ldconfig_has_not_run():
    result = python(STALE_CACHE + "import psycopg")
    assert result.returncode != 0
    assert "libpq" in result.stderr


def test_our_loader_imports_psycopg_before_ldconfig_has_run():
    code = STALE_CACHE + (
        "from matrix_synapse_setup.postgres.queries import import_psycopg\n"
        "pg = import_psycopg()\n"
        "print(pg.pq.version() >= 140000, pg.pq.__impl__)\n"
        "assert ctypes.util.find_library('pq') is None  # the fallback was for the import only\n"
    )
    result = python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "python"]


def test_missing_libpq_is_a_clear_error():
    code = (
        "import ctypes, ctypes.util, sys\n"
        "ctypes.util.find_library = lambda name: None\n"
        "ctypes.CDLL = lambda *a, **k: (_ for _ in ()).throw(OSError('gone'))\n"
        "from matrix_synapse_setup.core.errors import run\n"
        "from matrix_synapse_setup.postgres.queries import import_psycopg\n"
        "sys.exit(run(import_psycopg))\n"
    )
    result = python(code)
    assert result.returncode == 1
    assert "apt install libpq5" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain ascii 'with' \\ quotes", b"plain ascii 'with' \\ quotes"),
        ("I\u00adX", b"IX"),  # RFC 4013: soft hyphen maps to nothing
        ("\u00aa", b"a"),  # NFKC
        ("\u2168", b"IX"),  # NFKC
        ("a\u00a0b", b"a b"),  # non-ASCII space maps to a space
        ("\u00e9\u0007", "\u00e9\u0007".encode()),  # prohibited: raw bytes, as PostgreSQL
        ("e\u0301", "\u00e9".encode()),  # composed
    ],
)
def test_saslprep_matches_postgresql_rules(text, expected):
    assert saslprep(text) == expected


@pytest.mark.parametrize("stored", [None, "", "md5abc", "SCRAM-SHA-256$x", "SCRAM-SHA-256$1:!$a:b"])
def test_non_scram_or_broken_hashes_never_match(stored):
    assert not scram_matches(stored, "pencil")


def test_scram_hash_of_a_known_password():
    # Made by PostgreSQL 15 for password "pencil" (SELECT rolpassword after
    # CREATE ROLE ... PASSWORD 'pencil').
    stored = (
        "SCRAM-SHA-256$4096:Urw30I/EfhYA5vZc7YEs+A=="
        "$BmMWVMZ4NbWzAIP9nnmmkaSAUB0QojxHb4/h2/rWVzM=:"
        "B41MVbfoYpPIQAzA/i8xPP2WIa7te+C84G5Hgb4kus4="
    )
    assert scram_matches(stored, "pencil")
    assert not scram_matches(stored, "pencil ")
