"""A fake PostgreSQL 13 server: just enough of the wire protocol to log a client in.

Why a fake: the product refuses servers older than PostgreSQL 14, and no such
server can be installed here (Debian's archive has only the current major
version, and there is no network but Debian's mirrors).  What the product
checks is the version the server announces after the login (libpq's
``PQserverVersion``, from the ``server_version`` ParameterStatus), so a server
that logs every client in and announces 13.14 is a faithful stand-in for that
one check; it can answer nothing else (every query gets an error).

The conversation, per connection (protocol 3.0, see the PostgreSQL documentation,
"Message Flow" and "Message Formats"):

- SSLRequest or GSSENCRequest: answer ``N`` (no TLS, no GSS encryption), read on;
- StartupMessage: AuthenticationOk, ParameterStatus (server_version 13.14 and what
  libpq expects), BackendKeyData, ReadyForQuery;
- then Terminate ends it; a Query gets an ErrorResponse and ReadyForQuery.

It listens on TCP (host, port) or on a Unix socket ``<dir>/.s.PGSQL.<port>``, in
threads of the test process, until the context manager exits.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102
PROTOCOL_3 = 196608
VERSION = "13.14"
PARAMETERS = {
    "server_version": VERSION,
    "server_encoding": "UTF8",
    "client_encoding": "UTF8",
    "DateStyle": "ISO, MDY",
    "integer_datetimes": "on",
    "standard_conforming_strings": "on",
    "TimeZone": "UTC",
    "is_superuser": "off",
    "session_authorization": "synapse",
    "application_name": "",
}


def _message(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!i", len(body) + 4) + body


def _cstr(text: str) -> bytes:
    return text.encode() + b"\0"


def _read_exactly(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ConnectionError("client went away")
        data += chunk
    return data


def _serve(conn: socket.socket) -> None:
    with conn:
        try:
            while True:  # the untyped startup packets
                (length,) = struct.unpack("!i", _read_exactly(conn, 4))
                body = _read_exactly(conn, length - 4)
                (code,) = struct.unpack("!i", body[:4])
                if code in (SSL_REQUEST, GSSENC_REQUEST):
                    conn.sendall(b"N")
                    continue
                if code != PROTOCOL_3:
                    return  # CancelRequest or an unknown protocol: hang up
                break
            reply = _message(b"R", struct.pack("!i", 0))  # AuthenticationOk
            for name, value in PARAMETERS.items():
                reply += _message(b"S", _cstr(name) + _cstr(value))
            reply += _message(b"K", struct.pack("!ii", os.getpid(), 12345))
            reply += _message(b"Z", b"I")
            conn.sendall(reply)
            while True:  # typed messages
                kind = _read_exactly(conn, 1)
                (length,) = struct.unpack("!i", _read_exactly(conn, 4))
                _read_exactly(conn, length - 4)
                if kind == b"X":
                    return
                if kind in (b"Q", b"S"):  # a query, or Sync after extended protocol
                    error = b"SERROR\0C0A000\0Mthis fake PostgreSQL 13 answers no query\0\0"
                    conn.sendall(_message(b"E", error) + _message(b"Z", b"I"))
        except (ConnectionError, OSError, struct.error):
            return


@contextlib.contextmanager
def old_server(*, host: str | None = None, port: int, socket_dir: Path | None = None) -> Iterator:
    """Serve on TCP *host*:*port*, or on the Unix socket of *port* in *socket_dir*."""
    if socket_dir is not None:
        path = socket_dir / f".s.PGSQL.{port}"
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(path))
        os.chmod(path, 0o777)  # as a real server's socket: anyone may connect
    else:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host or "127.0.0.1", port))
    listener.listen(16)
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=_serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)
        listener.close()
        thread.join(timeout=5)
        if socket_dir is not None:
            with contextlib.suppress(FileNotFoundError):
                (socket_dir / f".s.PGSQL.{port}").unlink()
