"""The nginx include that sends the client API's worker endpoints to the client workers.

The admin includes one file inside their own ``server`` block, so everything here must be
valid in server context: no ``upstream`` and no ``map`` (both http context).  The worker is
chosen with ``set`` and ``if`` at server level, which nginx runs in the server's rewrite
phase without switching location (only ``set`` inside them, the safe use of ``if``), and
each location proxies to ``127.0.0.1:$port``.

A ``proxy_pass`` with a variable and no URI part sends the request line's URI as the client
sent it (``$request_uri``), so a percent-encoded room id reaches Synapse unchanged, while
the locations match the decoded, normalised path (``$uri``), as Synapse's patterns expect.

The patterns come from one data file beside this module (its header names its source).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from matrix_synapse_setup.core import messages
from matrix_synapse_setup.core.errors import SetupError
from matrix_synapse_setup.core.paths import NGINX_INCLUDE, PACKAGE

PATTERNS = Path(__file__).with_name("worker-endpoints.list")
INCLUDE = NGINX_INCLUDE

# Synapse's docs: "all requests for a given room must be routed to the same instance" for
# pagination.  These are routed by room; every other pattern by request.
BY_ROOM = ("^/_matrix/client/(api/v1|r0|v3|unstable)/rooms/.*/messages$",)

# nginx reads its configuration in 4096-byte buffers and refuses a longer token, so the
# patterns are joined into several location regexes, each well below that.
MAX_REGEX = 2000

HEX_DIGITS = "0123456789abcdef"
# The character after a room id's "!": Synapse's random ids are ASCII letters, the ids of
# newer room versions unpadded URL-safe base64.  Each maps to one worker.
ROOM_ID_CHARS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-_"
# Where a room id starts in a client API path ($uri: decoded, so "!" not "%21").
ROOM_IN_PATH = "^/_matrix/client/.+?/rooms/!?"

REQUEST_PORT = "$mss_worker_port"
ROOM_PORT = "$mss_room_port"

# What Synapse needs behind a proxy (its reverse proxy documentation).
PROXY_SETTINGS = (
    "proxy_set_header X-Forwarded-For $remote_addr;",
    "proxy_set_header X-Forwarded-Proto $scheme;",
    "proxy_set_header Host $host:$server_port;",
    # Synapse's default max_upload_size; nginx allows 1M unless told.
    "client_max_body_size 50M;",
    # Synapse's answers may be chunked, an HTTP/1.1 feature.
    "proxy_http_version 1.1;",
)

# In a double-quoted nginx string a quote ends the string and nginx rewrites these escapes;
# whitespace has no place in a path.
NGINX_ESCAPES = ('\\"', "\\'", "\\\\", "\\n", "\\r", "\\t")


def load_patterns(path: Path = PATTERNS) -> tuple[str, ...]:
    """The patterns in *path*, in its order: one a line, ``#`` lines and blanks skipped."""
    patterns: list[str] = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        check_pattern(line, where=f"{path}:{number}")
        patterns.append(line)
    if not patterns:
        raise SetupError(messages.ROUTING_NO_PATTERNS.format(path=path))
    return tuple(patterns)


def check_pattern(pattern: str, *, where: str) -> None:
    """Refuse what could not sit in a quoted nginx regex: a pattern is Synapse's path
    regex, anchored at the path's start."""
    if (
        not pattern.startswith("^/")
        or '"' in pattern
        or any(c.isspace() or not c.isprintable() for c in pattern)
        or any(escape in pattern for escape in NGINX_ESCAPES)
    ):
        raise SetupError(messages.ROUTING_BAD_PATTERN.format(where=where, pattern=pattern))


def request_buckets(ports: Sequence[int]) -> tuple[tuple[int, str], ...]:
    """Each port with the last hex digits of ``$request_id`` that choose it: digit d goes
    to ``ports[d % len(ports)]``, so every one of the 16 digits has a port."""
    return tuple((port, HEX_DIGITS[i :: len(ports)]) for i, port in enumerate(ports))


def room_buckets(ports: Sequence[int]) -> tuple[tuple[int, str], ...]:
    """Each port with the first characters of room ids that it serves, the same way."""
    return tuple((port, ROOM_ID_CHARS[i :: len(ports)]) for i, port in enumerate(ports))


def join_patterns(patterns: Iterable[str], limit: int = MAX_REGEX) -> tuple[str, ...]:
    """The patterns as few alternations ``(?:p1|p2|...)`` as fit in *limit* characters each,
    in their order (nginx tries regex locations in order; these never overlap in effect,
    since every one of them goes to a worker)."""
    groups: list[list[str]] = [[]]
    size = 0
    for pattern in patterns:
        if groups[-1] and size + len(pattern) + 1 > limit - len("(?:)"):
            groups.append([])
            size = 0
        groups[-1].append(pattern)
        size += len(pattern) + 1
    return tuple("(?:" + "|".join(group) + ")" for group in groups if group)


def check_ports(ports: Sequence[int]) -> None:
    if not ports or len(set(ports)) != len(ports) or any(not 0 < p < 65536 for p in ports):
        raise SetupError(messages.ROUTING_BAD_PORTS.format(ports=list(ports)))


def render_nginx(
    ports: Sequence[int],
    patterns: Sequence[str],
    *,
    source: Path = PATTERNS,
    include: Path = INCLUDE,
) -> str:
    """The include for the client workers listening on 127.0.0.1:*ports*: the same text
    for the same arguments."""
    check_ports(ports)
    for pattern in patterns:
        check_pattern(pattern, where="render_nginx")
    by_room = [p for p in patterns if p in BY_ROOM]
    by_request = [p for p in patterns if p not in BY_ROOM]

    out = [
        f'# Generated by {PACKAGE} for its "client" workers preset: dpkg-reconfigure',
        f"# {PACKAGE} writes it again, so edits here are lost.",
        "# Include it in the nginx server block that proxies to Synapse, with the one line",
        f"#     include {include};",
        '# above your own "location ~" for /_matrix: nginx takes the first regex location',
        '# that matches, and a "location ^~" prefix before any regex.  What these locations',
        "# do not match goes to your own location: the main process.",
        "# The endpoint patterns, from Synapse's docs/workers.md (the file names the version):",
        f"#     {source}",
        "# Workers: " + ", ".join(f"127.0.0.1:{port}" for port in ports),
        "",
        "# Any worker serves these: one per request, by the last hex digit of $request_id.",
        f"set {REQUEST_PORT} {ports[0]};",
    ]
    for port, digits in request_buckets(ports)[1:]:
        out.append(f'if ($request_id ~ "[{digits}]$") {{ set {REQUEST_PORT} {port}; }}')
    if by_room:
        out += [
            "# Pagination: every request for one room to one worker, by the room id's first",
            "# character.",
            f"set {ROOM_PORT} {ports[0]};",
        ]
        for port, chars in room_buckets(ports)[1:]:
            out.append(f'if ($uri ~ "{ROOM_IN_PATH}[{chars}]") {{ set {ROOM_PORT} {port}; }}')
    for variable, group in ((ROOM_PORT, by_room), (REQUEST_PORT, by_request)):
        for regex in join_patterns(group):
            out += [
                "",
                f'location ~ "{regex}" {{',
                # No URI part after the port: nginx then passes the client's URI unchanged.
                f"    proxy_pass http://127.0.0.1:{variable};",
                *(f"    {setting}" for setting in PROXY_SETTINGS),
                "}",
            ]
    return "\n".join(out) + "\n"


def render_no_routes(preset: str, include: Path = INCLUDE) -> str:
    """The include when no client worker runs (preset none or federation, or the package
    removed): it routes nothing, so an nginx server block that includes it still loads
    and sends every request to its own location, the main process.  Deleting it would
    break the admin's next `nginx -t`."""
    return "\n".join(
        (
            f"# Generated by {PACKAGE}: no client workers run (workers preset: {preset}),",
            "# so nothing is routed here and the main process serves every request.",
            "# nginx still loads a server block that has the line",
            f"#     include {include};",
            "# You may remove that line; purging the package removes this file.",
            "",
        )
    )
