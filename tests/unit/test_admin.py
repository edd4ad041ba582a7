"""The first admin account's pure parts: the answers, where Synapse listens, which
registration secret is in effect, and what this package recorded.  The requests to a
real Synapse are in tests/system/test_admin.py."""

from __future__ import annotations

import json

import pytest

from matrix_synapse_setup.core.errors import SetupError
from matrix_synapse_setup.core.settings import validate_admin_password, validate_admin_user
from matrix_synapse_setup.files import state
from matrix_synapse_setup.postinst import admin


@pytest.mark.parametrize("name", ["alice", "a", "bob.smith", "x_y=z-1/2+3", "0day"])
def test_account_names_synapse_registers_are_accepted(name):
    assert validate_admin_user(name) == name


@pytest.mark.parametrize(
    "name", ["Alice", "@alice:example.org", "alice:example.org", "al ice", "élise", "a" * 256]
)
def test_other_account_names_are_refused_with_the_rule(name):
    with pytest.raises(SetupError, match="local part of its Matrix ID"):
        validate_admin_user(name)


def test_an_empty_name_means_no_account():
    assert validate_admin_user("") == ""


def test_checking_the_answers_loads_no_http_client(fresh_python):
    """Every postinst checks admin-user and admin-password (an unchanged run pays only
    for what it uses), and the admin step's module comes with its client; only a
    request to Synapse needs ssl and urllib."""
    code = (
        "import sys\n"
        "from matrix_synapse_setup.core import settings\n"
        "from matrix_synapse_setup.dpkg import debconf\n"
        "from matrix_synapse_setup.postinst import admin\n"
        "settings.validate_admin_user('alice'); settings.validate_admin_password('s3cret')\n"
        "print(sorted({'ssl', 'urllib.request', 'http.client'} & set(sys.modules)))\n"
        "from matrix_synapse_setup.synapse.client import Client\n"
        "Client('http://127.0.0.1:8008')\n"
        "print(sorted({'ssl', 'urllib.request', 'http.client'} & set(sys.modules)))\n"
    )
    out = fresh_python(code).splitlines()
    assert out == ["[]", "['http.client', 'ssl', 'urllib.request']"]


@pytest.mark.parametrize(
    ("password", "match"),
    [("x" * 513, "longer than 512"), ("tab\there", "control characters"), ("   ", "only spaces")],
)
def test_passwords_synapse_or_debconf_cannot_take_are_refused(password, match):
    with pytest.raises(SetupError, match=match):
        validate_admin_password(password)


def listener(**fields):
    base = {"port": 8008, "type": "http", "resources": [{"names": ["client", "federation"]}]}
    return {"listeners": [base | fields]}


@pytest.mark.parametrize(
    ("fields", "url"),
    [
        # what `synapse --generate-config` writes
        ({"bind_addresses": ["::1", "127.0.0.1"], "tls": False}, "http://127.0.0.1:8008"),
        ({"bind_addresses": ["::1"]}, "http://[::1]:8008"),
        ({"bind_addresses": ["::"]}, "http://[::1]:8008"),
        ({"bind_addresses": ["0.0.0.0"]}, "http://127.0.0.1:8008"),  # noqa: S104
        ({}, "http://127.0.0.1:8008"),  # Synapse's default: every address
        ({"bind_addresses": ["10.1.2.3"]}, "http://10.1.2.3:8008"),
        ({"bind_addresses": ["fd00::5"], "port": 8448, "tls": True}, "https://[fd00::5]:8448"),
    ],
)
def test_the_client_listener_is_reached_on_loopback_when_it_listens_there(fields, url):
    assert admin.client_url(listener(**fields)) == url


def test_listeners_without_the_client_api_are_skipped():
    config = {
        "listeners": [
            {"port": 9000, "type": "metrics"},
            {"port": 8448, "type": "http", "resources": [{"names": ["federation"]}]},
            {"path": "/run/synapse.sock", "type": "http", "resources": [{"names": ["client"]}]},
            {"port": 8008, "type": "http", "resources": [{"names": ["client"]}]},
        ]
    }
    assert admin.client_url(config) == "http://127.0.0.1:8008"
    assert admin.client_url({"listeners": config["listeners"][:3]}) is None
    assert admin.client_url({}) is None


def test_the_secret_in_effect_is_used_as_it_is(tmp_path):
    inline = admin.inspect({"server_name": "ex.org", "registration_shared_secret": "s3cret"})
    assert (inline.secret, inline.source, inline.server_name) == (
        "s3cret",
        "inline",
        "ex.org",
    )
    path = tmp_path / "secret"
    path.write_text("from-a-file\n")
    named = admin.inspect({"registration_shared_secret_path": str(path)})
    assert (named.secret, named.source) == ("from-a-file", "path")
    # inline wins in Synapse too; both at once is refused by Synapse, not by us
    both = admin.inspect(
        {"registration_shared_secret": "a", "registration_shared_secret_path": "x"}
    )
    assert both.secret == "a"


def test_an_unreadable_secret_file_is_told_apart_from_none(tmp_path):
    missing = admin.inspect({"registration_shared_secret_path": str(tmp_path / "gone")})
    assert (missing.secret, missing.source) == (None, "path")
    none = admin.inspect({"server_name": "ex.org"})
    assert (none.secret, none.source, none.url) == (None, "none", None)


def test_the_record_names_the_account_this_package_created(tmp_path):
    path = tmp_path / "admin.json"
    assert state.read_record(path) == {}
    path.write_text(json.dumps({"user_id": "@alice:ex.org", "access_token": "t"}))
    record = state.read_record(path)
    assert state.created_here("alice", record)
    assert not state.created_here("alic", record)  # a prefix is another account
    assert not state.created_here("bob", record)
    assert not state.created_here("", record)
    path.write_text("not json")
    assert state.read_record(path) == {}


def test_the_registration_snippet_names_the_secret_file_only():
    import yaml

    assert yaml.safe_load(admin.REGISTRATION_TEXT) == {
        "registration_shared_secret_path": str(admin.SECRET_FILE)
    }
    # Synapse reads only *.yaml in conf.d: the secret's own file is not one.
    assert admin.SECRET_FILE.suffix != ".yaml"
    assert admin.REGISTRATION_SNIPPET.suffix == ".yaml"


def test_synapse_runs_when_its_client_listener_answers(monkeypatch):
    """Synapse's own answer, not the service manager's view, tells that it runs (it may be
    in a container, under another supervisor, or started by hand)."""
    import http.server
    import socket
    import threading

    class Versions(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            ok = self.path == "/_matrix/client/versions"
            self.send_response(200 if ok else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(json.dumps({"versions": ["v1.11"]}).encode())

        def log_message(self, *args):
            pass

    monkeypatch.setenv("http_proxy", "http://192.0.2.1:9")  # never used: no proxy for this
    server = http.server.HTTPServer(("127.0.0.1", 0), Versions)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert admin.answers(f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert not admin.answers(f"http://127.0.0.1:{port}", timeout=2)
