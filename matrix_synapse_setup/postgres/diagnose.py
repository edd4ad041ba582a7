"""Why a connection failed, told by SQLSTATE and connection state, never by message text.

psycopg reports a failed login as an OperationalError without a SQLSTATE, and the
text comes in the server's language (``lc_messages``) and the client's.  So when a
connection fails, :func:`diagnose` tries once more with libpq directly, with the
error verbosity set to ``PQERRORS_SQLSTATE`` before the first packet: the server's
FATAL then arrives as its five-character code.  Where libpq itself gave up (no
code), the furthest connection state reached tells where: the network, the TLS
handshake, or the login.  The human-readable reason (in whatever language) is
only ever shown, never parsed.
"""

from __future__ import annotations

import re
import select
import socket
from typing import Any, NamedTuple

from matrix_synapse_setup.postgres import libpq

# libpq's ConnStatusType (libpq-fe.h) -> how far a connection got, in wire order:
# STARTED (connecting), MADE (connected), SSL_STARTUP (TLS handshake),
# AWAITING_RESPONSE (startup packet sent, authenticating), AUTH_OK.
_RANK = {2: 0, 3: 1, 7: 2, 4: 3, 5: 4}
_CONNECTED, _TLS_HANDSHAKE, _AUTHENTICATING = 1, 2, 3
_POLL_FAILED, _POLL_READING, _POLL_WRITING, _POLL_OK = 0, 1, 2, 3
_PQERRORS_SQLSTATE = 3

# What went wrong, as classes of the caller's concern.
UNREACHABLE = "unreachable"  # nothing answered at host:port (or the socket)
TLS = "tls"  # the TLS handshake failed (certificate, host name, no TLS on the server)
LOGIN = "login"  # the server refused the role: password, pg_hba.conf, NOLOGIN
NO_DATABASE = "no-database"  # 3D000
BUSY = "busy"  # starting up, shutting down, too many connections: try again later
OTHER = "other"

# SQLSTATE -> class.  Codes of classes 08 (connection exception) and 57P0x
# (operator intervention) mean "try again"; 28xxx is a refused login.
_BY_SQLSTATE = {
    "28P01": LOGIN,  # invalid_password
    "28000": LOGIN,  # invalid_authorization_specification: pg_hba.conf, NOLOGIN, peer
    "42501": LOGIN,  # insufficient_privilege: no CONNECT on the database
    "3D000": NO_DATABASE,  # invalid_catalog_name
    "53300": BUSY,  # too_many_connections
    "57P01": BUSY,  # admin_shutdown
    "57P02": BUSY,  # crash_shutdown
    "57P03": BUSY,  # cannot_connect_now (starting up, in recovery)
}
_SQLSTATE_RE = re.compile(r":  ([0-9A-Z]{5})\s*$", re.MULTILINE)


class Diagnosis(NamedTuple):
    kind: str
    sqlstate: str | None
    reason: str  # libpq's words when it has no code (any language): shown, not parsed
    client_address: str | None = None  # our address as the server saw it (TCP)


def classify(sqlstate: str | None, furthest: int) -> str:
    """The class of a failure from its SQLSTATE, else from how far the connection got
    (a rank of :data:`_RANK`)."""
    if sqlstate:
        if sqlstate in _BY_SQLSTATE:
            return _BY_SQLSTATE[sqlstate]
        if sqlstate.startswith("28"):
            return LOGIN
        if sqlstate.startswith("08"):
            return BUSY
        return OTHER
    if furthest >= _AUTHENTICATING:
        return LOGIN  # the server dropped us during authentication without a code
    if furthest == _TLS_HANDSHAKE:
        return TLS
    return UNREACHABLE


def reason_text(message: str) -> str:
    """The useful part of a libpq error for a reader: its first line and the lines that
    continue it (a translation may wrap a message; libpq's hints and further attempts
    start with a tab or "connection to server"), without libpq's prefixes.  Shown,
    never parsed (it comes in the server's and the client's language)."""
    lines = message.strip().splitlines()
    if not lines:
        return ""
    text = lines[0]
    for more in lines[1:]:
        if more.startswith(("\t", " ", "connection to server")) or ":  " in more:
            break
        text += " " + more.strip()
    if "failed: " in text and text.startswith("connection"):
        text = text.rsplit("failed: ", 1)[1]
    return text.replace("FATAL:  ", "").strip()


def reason_of(err: Exception) -> str:
    """What to show of a libpq or psycopg error (:func:`reason_text`), else its type."""
    return reason_text(str(err)) or type(err).__name__


def _client_address(host: str, port: int, timeout: float) -> str | None:
    """Our source address towards host:port (what pg_hba.conf sees), when TCP."""
    if host.startswith("/"):
        return None
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            return str(sock.getsockname()[0])
    except OSError:
        return None


def diagnose(params: dict[str, Any], *, timeout: float = 10.0) -> Diagnosis:
    """Connect once with *params* (libpq keywords) and say why it fails.

    Returns kind ``ok`` (as :data:`OTHER` with no reason) if it does not fail now."""
    lib = libpq.lib()
    keys, values = libpq.keywords(params)
    conn = lib.PQconnectStartParams(keys, values, 0)
    if not conn:
        return Diagnosis(OTHER, None, "libpq could not allocate a connection")
    furthest = 0
    try:
        lib.PQsetErrorVerbosity(conn, _PQERRORS_SQLSTATE)
        poll = _POLL_WRITING
        while True:
            furthest = max(furthest, _RANK.get(lib.PQstatus(conn), 0))
            if poll == _POLL_OK:
                return Diagnosis("ok", None, "")
            if poll == _POLL_FAILED:
                break
            sock = lib.PQsocket(conn)
            if sock < 0:
                break
            wait = ([sock], [], []) if poll == _POLL_READING else ([], [sock], [])
            if not any(select.select(*wait, timeout)):
                return Diagnosis(UNREACHABLE, None, f"no answer within {timeout:g} s")
            poll = lib.PQconnectPoll(conn)
        message = (lib.PQerrorMessage(conn) or b"").decode("utf-8", errors="replace")
    finally:
        lib.PQfinish(conn)
    codes = _SQLSTATE_RE.findall(message)
    sqlstate = codes[-1] if codes else None
    kind = classify(sqlstate, furthest)
    address = None
    if kind == LOGIN:
        address = _client_address(
            str(params.get("host") or "localhost"), int(params.get("port") or 5432), timeout
        )
    return Diagnosis(kind, sqlstate, reason_text(message) or "no reason given", address)
