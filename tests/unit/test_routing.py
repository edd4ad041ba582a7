"""The nginx include for the client workers: the pattern file, and what the rendered text
routes where.

nginx itself is not run here (the unit tests are offline, and the build machine has no
nginx); the system tests run Debian's nginx on the rendered include.  Instead a small
reader of the rendered text does what nginx does with it: the server-level ``set``/``if``
lines in order, then the first ``location ~`` whose regex matches the decoded path (PCRE
and Python's re agree on these patterns: anchors, classes, alternation, ``.*``).
"""

from __future__ import annotations

import re
import string
from pathlib import Path

import pytest

from matrix_synapse_setup.core.errors import SetupError
from matrix_synapse_setup.synapse import routing

PROJECT = Path(__file__).resolve().parents[2]
PORTS = (8083, 8084)

SET = re.compile(r"^set (\$\w+) (\d+);$")
IF = re.compile(r'^if \((\$\w+) ~ "([^"]+)"\) \{ set (\$\w+) (\d+); \}$')
LOCATION = re.compile(r'^location ~ "([^"]+)" \{$')
PROXY = re.compile(r"^proxy_pass http://127\.0\.0\.1:(\$\w+);$")


class Include:
    """The rendered include, read the way nginx runs it for one request."""

    def __init__(self, text: str) -> None:
        self.statements: list[tuple[str, ...]] = []
        self.locations: list[tuple[re.Pattern[str], str]] = []
        regex = None
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#") or line == "}":
                continue
            if m := SET.match(line):
                self.statements.append(("set", m[1], m[2]))
            elif m := IF.match(line):
                self.statements.append(("if", m[1], m[2], m[3], m[4]))
            elif m := LOCATION.match(line):
                regex = re.compile(m[1])
            elif m := PROXY.match(line):
                assert regex is not None
                self.locations.append((regex, m[1]))
                regex = None
            else:
                assert line.startswith(("proxy_set_header ", "proxy_http_version ", "client_max"))

    def route(self, path: str, request_id: str = "0" * 31 + "0") -> int | None:
        """The worker port that *path* (decoded, as nginx's $uri) goes to; None when none of
        the include's locations takes it (the admin's own location for the main process)."""
        variables = {"$uri": path, "$request_id": request_id}
        for statement in self.statements:
            if statement[0] == "set":
                variables[statement[1]] = statement[2]
            elif re.search(statement[2], variables[statement[1]]):
                variables[statement[3]] = statement[4]
        for regex, variable in self.locations:
            if regex.search(path):
                return int(variables[variable])
        return None


@pytest.fixture(scope="module")
def patterns() -> tuple[str, ...]:
    return routing.load_patterns()


@pytest.fixture(scope="module")
def include(patterns) -> Include:
    return Include(routing.render_nginx(PORTS, patterns))


def test_the_pattern_file_names_its_source():
    head = [line for line in routing.PATTERNS.read_text().splitlines() if line.startswith("#")]
    text = "\n".join(head)
    for needed in ("element-hq/synapse", "docs/workers.md", "1.163.2", "Read: ", "Rule: "):
        assert needed in text


def test_every_pattern_compiles_and_is_client_api(patterns):
    assert len(patterns) == len(set(patterns))
    for pattern in patterns:
        re.compile(pattern)
        assert pattern.startswith("^/_matrix/client/"), pattern


def test_the_patterns_routed_by_room_are_in_the_file(patterns):
    assert set(routing.BY_ROOM) <= set(patterns)


@pytest.mark.parametrize(
    "path",
    [
        "/_matrix/client/v3/sync",
        "/_matrix/client/r0/sync",
        "/_matrix/client/v3/rooms/!r:example.org/send/m.room.message/txn1",
        "/_matrix/client/v3/rooms/!r:example.org/state/m.room.name/",
        "/_matrix/client/v3/rooms/!r:example.org/messages",
        "/_matrix/client/v3/rooms/!r:example.org/join",
        "/_matrix/client/v3/join/#alias:example.org",
        "/_matrix/client/v3/login",
        "/_matrix/client/v3/register",
        "/_matrix/client/v3/register/available",
        "/_matrix/client/v3/createRoom",
        "/_matrix/client/versions",
        "/_matrix/client/v3/account/whoami",
        # The doc lists it for generic workers (since Synapse 1.73 they pass it on).
        "/_matrix/client/v3/keys/upload",
        "/_matrix/client/v3/keys/query",
        "/_matrix/client/v3/profile/@u:example.org/displayname",
    ],
)
def test_worker_endpoints_go_to_a_worker(include, path):
    assert include.route(path) in PORTS


@pytest.mark.parametrize(
    "path",
    [
        "/_synapse/admin/v1/users/@u:example.org",
        # The doc lets a generic worker take it; it is the admin API, left to main.
        "/_synapse/admin/v1/rooms/!r:example.org",
        "/_matrix/federation/v1/send/txn1",
        "/_matrix/key/v2/query",
        "/_matrix/media/v3/upload",
        "/_matrix/client/v1/media/download/example.org/abc",
        "/_matrix/client/v3/logout",
        "/_matrix/client/v3/pushrules/",
        "/_matrix/client/v3/presence/@u:example.org/status",
        "/_matrix/client/v3/user/@u:example.org/account_data/m.direct",
        "/_matrix/client/v3/user/@u:example.org/rooms/!r:example.org/tags",
        "/_matrix/client/v3/rooms/!r:example.org/typing/@u:example.org",
        "/_matrix/client/v3/rooms/!r:example.org/receipt/m.read/$e",
        "/_matrix/client/v3/sendToDevice/m.room_key/txn1",
        "/_matrix/client/v3/login/sso/redirect",
        "/_synapse/client/oidc/callback",
        "/.well-known/matrix/client",
    ],
)
def test_other_endpoints_stay_with_the_main_process(include, path):
    assert include.route(path) is None


@pytest.mark.parametrize("count", range(1, 17))
def test_request_ids_cover_every_hex_digit(patterns, count):
    ports = tuple(range(8083, 8083 + count))
    buckets = routing.request_buckets(ports)
    digits = "".join(d for _, d in buckets)
    assert sorted(digits) == sorted(routing.HEX_DIGITS)
    assert all(d for _, d in buckets)
    seen = Include(routing.render_nginx(ports, patterns))
    for value, digit in enumerate(routing.HEX_DIGITS):
        port = seen.route("/_matrix/client/v3/sync", request_id="f" * 31 + digit)
        assert port == ports[value % count]


@pytest.mark.parametrize("count", [1, 2, 3, 4, 7])
def test_one_room_pages_on_one_worker(patterns, count):
    ports = tuple(range(8083, 8083 + count))
    seen = Include(routing.render_nginx(ports, patterns))
    used = set()
    for first in routing.ROOM_ID_CHARS:
        room = f"!{first}bcdef:example.org"
        path = f"/_matrix/client/v3/rooms/{room}/messages"
        ports_seen = {seen.route(path, request_id="0" * 31 + d) for d in routing.HEX_DIGITS}
        assert len(ports_seen) == 1, room
        used |= ports_seen
    assert used == set(ports)


def test_room_characters_cover_synapse_room_ids():
    # Synapse's own ids are ASCII letters; newer room versions' are URL-safe base64.
    assert set(string.ascii_letters + string.digits + "-_") == set(routing.ROOM_ID_CHARS)
    for count in range(1, 17):
        chars = "".join(c for _, c in routing.room_buckets(range(count)))
        assert sorted(chars) == sorted(routing.ROOM_ID_CHARS)


def test_sends_in_one_room_spread_over_the_workers(include):
    path = "/_matrix/client/v3/rooms/!r:example.org/send/m.room.message/t1"
    assert {include.route(path, request_id="0" * 31 + d) for d in "01"} == set(PORTS)


def test_server_context_only(patterns):
    text = routing.render_nginx(PORTS, patterns)
    words = {line.split()[0] for line in text.splitlines() if line.strip()}
    assert not words & {"upstream", "map", "server", "http", "split_clients"}
    assert text.count("{") == text.count("}")
    # nginx refuses a token longer than its 4096-byte read buffer.
    assert all(len(line.encode()) < 4000 for line in text.splitlines())
    # No URI part after the port: nginx passes the client's URI unchanged.
    for line in text.splitlines():
        if "proxy_pass" in line:
            assert line.strip().endswith("_port;")


def test_the_include_names_itself_and_the_source(patterns):
    text = routing.render_nginx(PORTS, patterns)
    assert f"include {routing.INCLUDE};" in text
    assert str(routing.PATTERNS) in text
    assert "dpkg-reconfigure" in text
    assert "127.0.0.1:8083, 127.0.0.1:8084" in text


def test_deterministic(patterns):
    first = routing.render_nginx((8083, 8084, 8085), patterns)
    assert first == routing.render_nginx((8083, 8084, 8085), tuple(patterns))
    assert first == routing.render_nginx([8083, 8084, 8085], list(routing.load_patterns()))


def test_every_pattern_is_in_one_location(patterns):
    text = routing.render_nginx(PORTS, patterns)
    regexes = [m[1] for line in text.splitlines() if (m := LOCATION.match(line))]
    joined = [group[3:-1].split("|^") for group in regexes]
    flat = [p if p.startswith("^") else "^" + p for group in joined for p in group]
    assert sorted(flat) == sorted(patterns)


@pytest.mark.parametrize("ports", [(), (8083, 8083), (0,), (65536,)])
def test_bad_ports_refused(patterns, ports):
    with pytest.raises(SetupError):
        routing.render_nginx(ports, patterns)


@pytest.mark.parametrize(
    "line", ['^/_matrix/client/a"b', "^/_matrix/client/a b", "/_matrix/client/x", "^/a\\\\b"]
)
def test_bad_patterns_refused(tmp_path, line):
    path = tmp_path / "patterns.txt"
    path.write_text(f"# a header\n^/_matrix/client/ok$\n{line}\n")
    with pytest.raises(SetupError, match=r"patterns\.txt:3"):
        routing.load_patterns(path)


def test_an_empty_file_is_refused(tmp_path):
    path = tmp_path / "patterns.txt"
    path.write_text("# only comments\n\n")
    with pytest.raises(SetupError):
        routing.load_patterns(path)


def test_the_package_installs_the_pattern_file():
    install = (PROJECT / "debian" / "matrix-synapse-setup.install").read_text().splitlines()
    source = str(routing.PATTERNS.relative_to(PROJECT))
    target = "usr/share/matrix-synapse-setup/matrix_synapse_setup/synapse/"
    assert any(line.split() == [source, target] for line in install)
