"""matrix-synapse-setup doctor without a server: the table and JSON, the exit code rule,
the effective-database check on real configuration directories, who may read the snippet
(real files, real users), Synapse's listener and a real HTTP server, the backups."""

from __future__ import annotations

import http.server
import json
import os
import pwd
import socket
import tempfile
import threading
import time
from pathlib import Path

import pytest

from matrix_synapse_setup.commands import doctor
from matrix_synapse_setup.commands.doctor import backups, database, facts, files, report, synapse
from matrix_synapse_setup.commands.doctor.facts import Facts, Paths
from matrix_synapse_setup.commands.doctor.report import FAIL, OK, SKIPPED, WARN, Check
from matrix_synapse_setup.core.settings import Settings
from matrix_synapse_setup.files import snippet
from matrix_synapse_setup.postgres import budget

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="gives files to another user (chown)")
SQLITE = "database:\n  name: sqlite3\n  args: {database: /var/lib/matrix-synapse/homeserver.db}\n"
USER = "nobody"  # a user that exists everywhere, standing in for matrix-synapse


# --- rendering and the exit code ---------------------------------------------------------

SAMPLE = [
    Check("snippet", OK, "/etc/x parses"),
    Check("synapse", FAIL, "Synapse does not answer", "systemctl start matrix-synapse"),
    Check("database", SKIPPED, "not checked: no connection"),
    Check("last backup", WARN, "no backup yet", "make one"),
]


def test_the_table_shows_every_row_and_the_fix_only_when_not_ok():
    table = report.render_table([*SAMPLE, Check("tls", OK, "in use", "a fix nobody needs")])
    lines = table.splitlines()
    assert lines[0].split()[:2] == ["ok", "snippet"]
    assert lines[1].split()[:2] == ["fail", "synapse"]
    assert lines[2].strip() == "fix: systemctl start matrix-synapse"
    assert lines[3].split()[:2] == ["skipped", "database"]
    assert lines[4].split()[:3] == ["warn", "last", "backup"]
    assert lines[5].strip() == "fix: make one"
    assert "a fix nobody needs" not in table
    assert lines[-1] == "overall: fail (2 ok, 1 warn, 1 fail, 1 skipped)"
    # The detail column starts at the same place on every row.
    assert lines[0].index("/etc/x parses") == lines[1].index("Synapse does not answer")


def test_json_lists_every_row_and_the_overall_status():
    data = json.loads(report.render_json(SAMPLE))
    assert data["status"] == FAIL and data["exit_code"] == 2
    assert data["checks"][1] == {
        "name": "synapse",
        "status": "fail",
        "detail": "Synapse does not answer",
        "fix": "systemctl start matrix-synapse",
    }
    assert [row["status"] for row in data["checks"]] == [OK, FAIL, SKIPPED, WARN]


@pytest.mark.parametrize(
    ("statuses", "code"),
    [
        ([OK, OK], 0),
        ([OK, SKIPPED], 0),  # skipped alone changes nothing (its cause is another row)
        ([OK, WARN], 1),
        ([WARN, SKIPPED, OK], 1),
        ([OK, WARN, FAIL], 2),
        ([FAIL, SKIPPED], 2),
    ],
)
def test_exit_code_0_ok_1_warnings_2_failures(statuses, code):
    rows = [Check(f"c{i}", status, "x") for i, status in enumerate(statuses)]
    assert report.exit_code(rows) == code
    assert json.loads(report.render_json(rows))["exit_code"] == code


def test_a_check_that_breaks_is_a_failure_row_and_the_others_still_run(tmp_path):
    def breaks(facts):
        raise RuntimeError("boom")

    rows = doctor.run(paths_in(tmp_path), checks={**doctor.CHECKS, "passfile": breaks})
    assert [row.name for row in rows] == list(doctor.ROWS)
    broken = rows[doctor.ROWS.index("passfile")]
    assert broken.status == FAIL and "RuntimeError: boom" in broken.detail
    assert broken.fix


def test_a_broken_check_keeps_its_rows_name(tmp_path):
    """Every check breaking: each failure row has the name that check's row has."""
    names = [row.name for row in doctor.run(paths_in(tmp_path))]
    assert names == list(doctor.ROWS)  # each check names its row as CHECKS does

    def breaks(facts):
        raise OSError("no")

    rows = doctor.run(paths_in(tmp_path), checks=dict.fromkeys(doctor.CHECKS, breaks))
    assert [row.name for row in rows] == names
    assert {row.status for row in rows} == {FAIL}


# --- the effective database, on real configuration directories ----------------------------


def paths_in(etc: Path, user: str = USER) -> Paths:
    return Paths(
        homeserver=etc / "homeserver.yaml",
        confd=etc / "conf.d",
        snippet=etc / "conf.d" / "database.yaml",
        backups=etc / "backups",
        synapse_user=user,
        workers=etc / "workers",
    )


def snippet_text(passfile: Path) -> str:
    # A port nothing listens on: the checks that log in fail at once (no server here).
    settings = Settings(
        port=free_port(), password="secret-never-shown", dbname="synapse", user="synapse"
    )
    text = snippet.render(settings)
    return text.replace(str(snippet.PASSFILE), str(passfile))


@pytest.fixture
def etc():
    """An /etc/matrix-synapse as our package leaves it: homeserver.yaml (SQLite), the
    snippet and its password file; in a directory every user may search."""
    top = Path(tempfile.mkdtemp(prefix="mss-doctor-"))
    os.chmod(top, 0o755)
    (top / "conf.d").mkdir(mode=0o755)
    (top / "homeserver.yaml").write_text("server_name: mss.test\n" + SQLITE)
    passfile = top / "conf.d" / "database.pgpass"
    passfile.write_text("*:*:*:synapse:secret-never-shown\n")
    passfile.chmod(0o600)
    snip = top / "conf.d" / "database.yaml"
    snip.write_text(snippet_text(passfile))
    snip.chmod(0o640)
    yield top
    for path in sorted(top.rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    top.rmdir()


def test_the_effective_database_is_ours(etc):
    row = database.check_effective_database(Facts(paths_in(etc)))
    assert row.status == OK
    assert str(etc / "conf.d" / "database.yaml") in row.detail


def test_another_file_sorted_after_ours_wins_and_is_named(etc):
    other = etc / "conf.d" / "zz-other.yaml"
    other.write_text(SQLITE)
    row = database.check_effective_database(Facts(paths_in(etc)))
    assert row.status == FAIL
    assert str(other) in row.detail and "sqlite3" in row.detail
    assert f"remove 'database:' from {other}" in row.fix
    # A file sorted before ours does not win; one Synapse ignores (not *.yaml) neither.
    other.rename(etc / "conf.d" / "aa-other.yaml")
    (etc / "conf.d" / "zz-other.yaml.disabled").write_text(SQLITE)
    assert database.check_effective_database(Facts(paths_in(etc))).status == OK


def test_without_our_snippet_synapse_uses_homeserver_yaml_and_that_fails(etc):
    (etc / "conf.d" / "database.yaml").unlink()
    rows = {row.name: row for row in doctor.run(paths_in(etc))}
    assert rows["effective database"].status == FAIL
    assert str(etc / "homeserver.yaml") in rows["effective database"].detail
    assert rows["snippet"].status == FAIL and "does not exist" in rows["snippet"].detail
    # What needs the snippet's values is skipped, pointing at the cause.
    skips = ("passfile", "postgresql", "database", "privileges", "tls", "connections")
    for name in (*skips, "connection budget"):
        assert rows[name].status == SKIPPED, name
        assert "'snippet'" in rows[name].detail


def test_a_configuration_file_that_does_not_parse_is_named(etc):
    bad = etc / "conf.d" / "broken.yaml"
    bad.write_text("database: [unclosed\n")
    row = database.check_effective_database(Facts(paths_in(etc)))
    assert row.status == FAIL and str(bad) in row.detail


# --- who may read the snippet and its password file ----------------------------------------


def test_a_directory_the_user_cannot_search_is_named(tmp_path):
    top = Path(tempfile.mkdtemp(prefix="mss-doctor-"))
    try:
        (top / "f").write_text("x")
        (top / "f").chmod(0o644)
        top.chmod(0o700)
        if pwd.getpwnam(USER).pw_uid == os.geteuid():
            pytest.skip(f"this test runs as {USER}")
        assert files.unreadable_by(top / "f", USER) == str(top)
        top.chmod(0o755)
        assert files.unreadable_by(top / "f", USER) is None
        (top / "f").chmod(0o600)
        assert files.unreadable_by(top / "f", USER) == str(top / "f")
    finally:
        (top / "f").unlink()
        top.rmdir()


@needs_root
def test_the_snippet_readable_by_synapses_user_only_is_ok(etc):
    nobody = pwd.getpwnam(USER)
    snip, passfile = etc / "conf.d" / "database.yaml", etc / "conf.d" / "database.pgpass"
    os.chown(snip, 0, nobody.pw_gid)  # root:<its group> 0640: how the package writes it
    os.chown(passfile, nobody.pw_uid, 0)
    facts = Facts(paths_in(etc))
    row = files.check_snippet(facts)
    assert row.status == OK, row
    assert str(snip) in row.detail
    row = files.check_passfile(facts)
    assert row.status == OK, row
    rows = doctor.run(paths_in(etc))
    assert "secret-never-shown" not in json.dumps([r.as_dict() for r in rows])


@needs_root
def test_a_snippet_synapses_user_cannot_read_fails_naming_it(etc):
    snip = etc / "conf.d" / "database.yaml"
    os.chown(snip, 0, 0)
    snip.chmod(0o600)
    row = files.check_snippet(Facts(paths_in(etc)))
    assert row.status == FAIL
    assert str(snip) in row.detail and USER in row.detail and "root:root 0600" in row.detail
    assert f"chmod 0640 {snip}" in row.fix or f"chmod 0440 {snip}" in row.fix


@needs_root
def test_a_world_readable_snippet_warns_and_with_a_password_in_it_fails(etc):
    snip = etc / "conf.d" / "database.yaml"
    snip.chmod(0o644)
    assert files.check_snippet(Facts(paths_in(etc))).status == WARN
    snip.write_text(
        snip.read_text().replace("    passfile:", "    password: hunter2\n    passfile:")
    )
    row = files.check_snippet(Facts(paths_in(etc)))
    assert row.status == FAIL and "the password" in row.detail
    assert "hunter2" not in row.detail + row.fix


@needs_root
@pytest.mark.parametrize("fault", ["mode 0640", "owned by root", "missing", "no line"])
def test_a_password_file_libpq_or_synapse_would_not_use_fails(etc, fault):
    nobody = pwd.getpwnam(USER)
    passfile = etc / "conf.d" / "database.pgpass"
    os.chown(passfile, nobody.pw_uid, 0)
    if fault == "mode 0640":
        passfile.chmod(0o640)
    elif fault == "owned by root":
        os.chown(passfile, 0, 0)
    elif fault == "missing":
        passfile.unlink()
    else:
        passfile.write_text("*:*:*:another_role:x\n")
    row = files.check_passfile(Facts(paths_in(etc)))
    assert row.status == FAIL, row
    assert str(passfile) in row.detail
    assert row.fix


# --- Synapse's listener, and a real HTTP server ---------------------------------------------


@pytest.mark.parametrize(
    ("listener", "url"),
    [
        (
            {"port": 8008, "type": "http", "bind_addresses": ["::1", "127.0.0.1"],
             "resources": [{"names": ["client", "federation"]}]},
            "http://127.0.0.1:8008/_matrix/client/versions",
        ),
        (
            {"port": 8448, "type": "http", "tls": True, "bind_addresses": ["0.0.0.0"],  # noqa: S104
             "resources": [{"names": ["client"]}]},
            "https://127.0.0.1:8448/_matrix/client/versions",
        ),
        (
            {"port": 8008, "type": "http", "resources": [{"names": ["client"]}]},
            "http://127.0.0.1:8008/_matrix/client/versions",
        ),
        (
            {"port": 8008, "type": "http", "bind_addresses": ["::"],
             "resources": [{"names": ["client"]}]},
            "http://[::1]:8008/_matrix/client/versions",
        ),
        (
            {"port": 8008, "type": "http", "bind_addresses": ["192.0.2.7"],
             "resources": [{"names": ["client"]}]},
            "http://192.0.2.7:8008/_matrix/client/versions",
        ),
        ({"port": 9000, "type": "metrics", "resources": []}, None),
        ({"port": 8009, "type": "http", "resources": [{"names": ["federation"]}]}, None),
    ],
)  # fmt: skip
def test_the_client_listener_is_found(listener, url):
    assert synapse.client_url({"listeners": [listener]}) == url


class Versions(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"versions": ["r0.6.1", "v1.11"]}).encode()
        self.send_response(200 if self.path == synapse.CLIENT_PATH else 404)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listen_on(etc: Path, port: int) -> None:
    (etc / "homeserver.yaml").write_text(
        "server_name: mss.test\n"
        f"listeners:\n  - {{port: {port}, type: http, bind_addresses: ['127.0.0.1'], "
        "resources: [{names: [client]}]}\n"
    )


def managed(running):
    return lambda: running


def test_synapse_answering_is_ok_and_not_answering_fails(etc, monkeypatch):
    """Synapse's answer decides; the service manager's view is told when it disagrees."""
    monkeypatch.setenv("http_proxy", "http://192.0.2.1:9")  # never used: no proxy for this
    server = http.server.HTTPServer(("127.0.0.1", 0), Versions)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        listen_on(etc, server.server_address[1])
        row = synapse.check_synapse(Facts(paths_in(etc), service_running=managed(True)))
        assert row.status == OK, row
        assert "v1.11" in row.detail
        assert "service manager" not in row.detail
        # Started by hand, in a container, under another supervisor: still answering.
        row = synapse.check_synapse(Facts(paths_in(etc), service_running=managed(False)))
        assert row.status == OK, row
        assert "answers at" in row.detail and "service manager does not show it" in row.detail
    finally:
        server.shutdown()
        server.server_close()
    listen_on(etc, free_port())
    started = time.monotonic()
    row = synapse.check_synapse(Facts(paths_in(etc), timeout=2, service_running=managed(False)))
    assert time.monotonic() - started < 5
    assert row.status == FAIL
    assert "does not answer at http://127.0.0.1:" in row.detail
    assert "service manager" not in row.detail
    assert "journalctl -u matrix-synapse" in row.fix
    row = synapse.check_synapse(Facts(paths_in(etc), timeout=2, service_running=managed(True)))
    assert row.status == FAIL and "yet the service manager shows it running" in row.detail


def test_synapse_not_installed_warns(etc):
    (etc / "homeserver.yaml").unlink()
    row = synapse.check_synapse(Facts(paths_in(etc)))
    assert row.status == WARN and "not installed" in row.detail


# --- connections and backups ---------------------------------------------------------------


def test_connections_warn_past_80_percent_with_synapses_whole_pool():
    # 100 allowed: 60 others + a pool of 10 = 70, fine; 75 others + 10 = 85, too many.
    assert database.connections_check(60, 0, 10, 100).status == OK
    # Synapse's own 8 open connections are part of its pool, not counted twice.
    assert database.connections_check(68, 8, 10, 100).status == OK
    row = database.connections_check(75, 0, 10, 100)
    assert row.status == WARN
    assert "max_connections to at least 107" in row.fix


# --- the connection budget -------------------------------------------------------------------

DEBIAN = budget.Limits(max_connections=100, superuser_reserved=3)


def test_the_budget_fits():
    row = database.budget_check(budget.budget(["main", "client1", "events1"], 10, DEBIAN))
    assert (row.name, row.status, row.fix) == ("connection budget", OK, "")
    assert row.detail == (
        "Synapse's pools fit: 3 processes x 10 = 30 of 87 (max_connections 100 - 3 "
        "superuser_reserved_connections - 10 kept for admins and backups)"
    )


def test_a_budget_exactly_at_what_is_available_fits():
    limits = DEBIAN._replace(max_connections=53)  # 40 available
    assert database.budget_check(budget.budget(["main", *"abc"], 10, limits)).status == OK


def test_a_budget_into_the_margin_warns():
    # 9 x 10 = 90: more than the 87 available, within the 97 the server lets the role open.
    row = database.budget_check(budget.budget([f"p{i}" for i in range(9)], 10, DEBIAN))
    assert row.status == WARN
    assert "less than the 10 connections kept for admins and backups" in row.detail
    assert "9 processes x 10 = 90 of 87" in row.detail
    assert row.fix.startswith("raise max_connections to at least 103, then restart PostgreSQL")
    assert "dpkg-reconfigure matrix-synapse-setup" in row.fix


def test_a_budget_over_what_the_server_allows_fails():
    pg16 = budget.Limits(max_connections=50, superuser_reserved=3, reserved=2)
    row = database.budget_check(
        budget.budget(["main", *[f"client{i}" for i in range(5)]], 10, pg16)
    )
    assert row.status == FAIL
    assert "6 processes x 10 = 60 of 35" in row.detail
    assert "- 2 reserved_connections" in row.detail
    assert "at least 75" in row.fix  # 60 + 3 + 2 + 10


def test_the_processes_are_main_and_every_worker_file(etc):
    facts = Facts(paths_in(etc))
    assert facts.processes() == ["main"]  # no workers' directory
    workers = etc / "workers"
    workers.mkdir()
    for name in ("client2.yaml", "client1.yaml", "events1.yaml", "redis.secret", "x.yaml.bak"):
        (workers / name).write_text("worker_app: synapse.app.generic_worker\n")
    (workers / "notes.yaml").mkdir()  # a directory is no worker
    assert Facts(paths_in(etc)).processes() == ["main", "client1", "client2", "events1"]


def test_the_pool_size_is_the_effective_cp_max(etc):
    assert Facts(paths_in(etc)).pool_size() == 10  # our snippet's
    (etc / "conf.d" / "database.yaml").unlink()  # homeserver.yaml's SQLite: twisted's 5
    assert Facts(paths_in(etc)).pool_size() == facts.DEFAULT_CP_MAX == 5


def test_without_a_server_the_tuning_needs_what_the_budget_needs_with_defaults(etc):
    facts_ = Facts(paths_in(etc))
    assert facts_.server() is None  # nothing listens on the snippet's port
    assert facts_.connection_budget() is None
    assert database.check_budget(facts_).status == SKIPPED
    assert "'postgresql'" in database.check_budget(facts_).detail
    assert facts_.needed_max_connections() == 100  # 1 x 10 fits Debian's default
    workers = etc / "workers"
    workers.mkdir()
    for i in range(12):
        (workers / f"client{i}.yaml").write_text("")
    # 13 x 10 + 3 superuser_reserved_connections + 10 kept
    assert Facts(paths_in(etc)).needed_max_connections() == 143


def test_backups_none_recent_and_old(etc):
    facts = Facts(paths_in(etc))
    row = backups.check_last_backup(facts)
    # a fresh install has none: nothing is wrong, and the detail says how to make one
    assert row.status == OK and row.detail.startswith("none yet in ")
    assert "matrix-synapse-setup backup" in row.detail
    dumps = etc / "backups"
    dumps.mkdir(mode=0o700)
    old, new = dumps / "synapse-1.100.dump", dumps / "synapse-1.101.dump"
    for path in (old, new, dumps / "notes.txt"):
        path.write_bytes(b"PGDMP")
    now = time.time()
    os.utime(old, (now - 90 * 86400, now - 90 * 86400))
    os.utime(new, (now - 2 * 86400, now - 2 * 86400))
    row = backups.check_last_backup(facts, now=now)
    assert row.status == OK and str(new) in row.detail and "newest of 2" in row.detail
    row = backups.check_last_backup(facts, now=now + 29 * 86400)
    assert row.status == WARN and "older than 30 days" in row.detail
    assert row.fix.endswith("to make one now: matrix-synapse-setup backup")


def test_backup_disk_compares_with_one_gib_without_a_database(etc):
    row = backups.check_backup_disk(Facts(paths_in(etc)))
    # No snippet values usable here would give a size: it compares with 1 GiB, at the
    # nearest directory that exists.
    assert "1.0 GiB" in row.detail and str(etc) in row.detail
    free = os.statvfs(etc)
    expected = OK if free.f_bavail * free.f_frsize >= backups.MIN_FREE_BYTES else WARN
    assert row.status == expected
