"""The few libpq calls we make below psycopg, through ctypes.

Two users: :mod:`matrix_synapse_setup.postgres.diagnose` (a connection attempt whose error
must carry its SQLSTATE, which psycopg does not give for a failed login) and the
check of an unchanged run (:func:`matrix_synapse_setup.postgres.provision.quick_verify`):
one connection as Synapse's role and one query, without importing psycopg, whose
import alone costs more than the whole check.

Queries are parameterised; results come as text.
"""

from __future__ import annotations

import ctypes
from typing import Any

LIBPQ_SONAME = "libpq.so.5"
CONNECTION_OK = 0
PGRES_COMMAND_OK = 1
PGRES_TUPLES_OK = 2

_lib: Any = None


def lib() -> Any:
    """libpq, loaded once by its soname (Debian's loader finds it without ld.so.cache)."""
    global _lib
    if _lib is not None:
        return _lib
    pq = ctypes.CDLL(LIBPQ_SONAME)
    ptr, string, strings = ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_char_p)
    signatures: dict[str, tuple[list[Any], Any]] = {
        "PQconnectStartParams": ([strings, strings, ctypes.c_int], ptr),
        "PQconnectdbParams": ([strings, strings, ctypes.c_int], ptr),
        "PQconnectPoll": ([ptr], ctypes.c_int),
        "PQsocket": ([ptr], ctypes.c_int),
        "PQstatus": ([ptr], ctypes.c_int),
        "PQerrorMessage": ([ptr], string),
        "PQsetErrorVerbosity": ([ptr, ctypes.c_int], ctypes.c_int),
        "PQserverVersion": ([ptr], ctypes.c_int),
        "PQsslInUse": ([ptr], ctypes.c_int),
        "PQsslAttribute": ([ptr, string], string),
        "PQexecParams": (
            [ptr, string, ctypes.c_int, ptr, strings, ptr, ptr, ctypes.c_int],
            ptr,
        ),
        "PQresultStatus": ([ptr], ctypes.c_int),
        "PQresultErrorMessage": ([ptr], string),
        "PQntuples": ([ptr], ctypes.c_int),
        "PQnfields": ([ptr], ctypes.c_int),
        "PQgetisnull": ([ptr, ctypes.c_int, ctypes.c_int], ctypes.c_int),
        "PQgetvalue": ([ptr, ctypes.c_int, ctypes.c_int], string),
        "PQclear": ([ptr], None),
        "PQfinish": ([ptr], None),
    }
    for name, (argtypes, restype) in signatures.items():
        func = getattr(pq, name)
        func.argtypes = argtypes
        func.restype = restype
    _lib = pq
    return pq


def keywords(params: dict[str, Any]) -> tuple[Any, Any]:
    """libpq's two NULL-terminated arrays (keywords, values) for *params*; None is left out."""
    items = [(k, str(v)) for k, v in params.items() if v is not None]
    keys = (ctypes.c_char_p * (len(items) + 1))(*[k.encode() for k, _ in items], None)
    values = (ctypes.c_char_p * (len(items) + 1))(*[v.encode() for _, v in items], None)
    return keys, values


class Error(Exception):
    """A connection or a query failed (libpq's words, in any language: shown only)."""


class Connection:
    """A blocking libpq connection (``connect_timeout`` in *params* bounds it)."""

    def __init__(self, params: dict[str, Any], *, expand: bool = False) -> None:
        """*expand*: *params*' dbname may be a whole connection string (a URI), which
        libpq reads as such; the other keywords then add to it."""
        pq = lib()
        keys, values = keywords(params | {"client_encoding": "UTF8"})
        self._conn = pq.PQconnectdbParams(keys, values, 1 if expand else 0)
        if not self._conn:
            raise Error("libpq could not allocate a connection")
        if pq.PQstatus(self._conn) != CONNECTION_OK:
            message = (pq.PQerrorMessage(self._conn) or b"").decode("utf-8", errors="replace")
            self.close()
            raise Error(message.strip() or "connection failed")

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._conn:
            lib().PQfinish(self._conn)
            self._conn = None

    @property
    def server_version(self) -> int:
        return int(lib().PQserverVersion(self._conn))

    def tls(self) -> tuple[str, str] | None:
        """(protocol, cipher) when the connection uses TLS."""
        pq = lib()
        if not pq.PQsslInUse(self._conn):
            return None
        protocol = pq.PQsslAttribute(self._conn, b"protocol") or b"?"
        cipher = pq.PQsslAttribute(self._conn, b"cipher") or b"?"
        return protocol.decode(), cipher.decode()

    def command(self, sql: str) -> None:
        """Run one statement that returns no rows."""
        self._run(sql, (), PGRES_COMMAND_OK)

    def query(self, sql: str, *args: str) -> list[tuple[str | None, ...]]:
        """Run one parameterised query ($1, $2 ...); its rows as text (None for NULL)."""
        return self._run(sql, args, PGRES_TUPLES_OK)

    def _run(self, sql: str, args: tuple[str, ...], expected: int) -> list[tuple[str | None, ...]]:
        pq = lib()
        values = (ctypes.c_char_p * max(1, len(args)))(*[a.encode() for a in args])
        result = pq.PQexecParams(self._conn, sql.encode(), len(args), None, values, None, None, 0)
        try:
            if not result or pq.PQresultStatus(result) != expected:
                message = pq.PQresultErrorMessage(result) if result else b""
                if not message:
                    message = pq.PQerrorMessage(self._conn) or b"query failed"
                raise Error(message.decode("utf-8", errors="replace").strip())
            rows = []
            for row in range(pq.PQntuples(result)):
                rows.append(
                    tuple(
                        None
                        if pq.PQgetisnull(result, row, col)
                        else pq.PQgetvalue(result, row, col).decode("utf-8")
                        for col in range(pq.PQnfields(result))
                    )
                )
            return rows
        finally:
            if result:
                pq.PQclear(result)
