"""The workers model: presets, names and ports, the files rendered, Redis."""

from __future__ import annotations

import hashlib

import pytest
import yaml

from matrix_synapse_setup.core.errors import SetupError
from matrix_synapse_setup.core.paths import REDIS_SECRET, REPLICATION_SECRET, WORKERS_DIR
from matrix_synapse_setup.synapse import workers
from matrix_synapse_setup.synapse.workers import (
    EVENTS_PORT,
    FIRST_CLIENT_PORT,
    MAIN_REPLICATION_PORT,
    Layout,
    Worker,
)

SOCKET = "/run/redis-matrix-synapse/redis-server.sock"
# homeserver.yaml's listener as Debian's Synapse package writes it.
ADMIN_LISTENERS = [
    {
        "port": 8008,
        "tls": False,
        "type": "http",
        "x_forwarded": True,
        "bind_addresses": ["::1", "127.0.0.1"],
        "resources": [{"names": ["client", "federation"], "compress": False}],
    }
]


def all_layouts() -> list[Layout]:
    found = [workers.layout("federation")]
    found += [workers.layout("client", count) for count in (1, 2, 4, workers.MAX_COUNT)]
    return found


def test_none_has_no_layout_and_one_process():
    assert workers.layout("none") is None
    assert workers.processes(None) == ["main"]


def test_federation_preset():
    layout = workers.layout("federation", cores=8)
    assert layout.count == 0
    assert [(w.name, w.role, w.port) for w in layout.workers] == [
        ("federation_sender1", "federation_sender", None),
        ("background1", "background", None),
    ]
    assert layout.routed == ()
    settings = layout.shared_settings(SOCKET)
    assert settings["federation_sender_instances"] == ["federation_sender1"]
    assert settings["run_background_tasks_on"] == "background1"
    assert "stream_writers" not in settings
    assert settings["instance_map"] == {"main": {"host": "127.0.0.1", "port": 9093}}
    assert workers.processes(layout) == ["main", "federation_sender1", "background1"]


def test_client_preset():
    layout = workers.layout("client", 3)
    assert [(w.name, w.role, w.port, w.resources) for w in layout.workers] == [
        ("client1", "client", 8083, ("client",)),
        ("client2", "client", 8084, ("client",)),
        ("client3", "client", 8085, ("client",)),
        ("events1", "events", 9094, ("replication",)),
    ]
    assert [w.name for w in layout.routed] == ["client1", "client2", "client3"]
    settings = layout.shared_settings(SOCKET)
    assert settings["stream_writers"] == {"events": "events1"}
    assert settings["instance_map"] == {
        "main": {"host": "127.0.0.1", "port": MAIN_REPLICATION_PORT},
        "events1": {"host": "127.0.0.1", "port": EVENTS_PORT},
    }
    assert "federation_sender_instances" not in settings
    assert "run_background_tasks_on" not in settings
    assert settings["redis"] == {
        "enabled": True,
        "path": SOCKET,
        "password_path": str(REDIS_SECRET),
    }
    assert settings["worker_replication_secret_path"] == str(REPLICATION_SECRET)
    assert "listeners" not in settings
    assert workers.processes(layout) == ["main", "client1", "client2", "client3", "events1"]


def test_worker_unit_and_path():
    worker = workers.layout("client", 1).workers[0]
    assert worker.unit == "matrix-synapse-worker@client1.service"
    assert worker.path == WORKERS_DIR / "client1.yaml"


@pytest.mark.parametrize("layout", all_layouts(), ids=lambda lay: f"{lay.preset}-{lay.count}")
def test_names_and_ports_are_unique_and_clear_of_main(layout):
    names = workers.processes(layout)
    assert len(set(names)) == len(names)
    ports = [w.port for w in layout.workers if w.port is not None]
    ports.append(MAIN_REPLICATION_PORT)
    assert len(set(ports)) == len(ports)
    assert 8008 not in ports and 8448 not in ports  # Synapse's own default ports


@pytest.mark.parametrize(("cores", "count"), [(1, 1), (2, 1), (3, 2), (5, 4), (64, 4)])
def test_default_count(cores, count):
    assert workers.default_count(cores) == count
    assert workers.layout("client", cores=cores).count == count
    assert workers.parse_count("", cores) == count
    assert workers.parse_count("  ", cores) == count


def test_parse_count():
    assert workers.parse_count("3", 2) == 3
    assert workers.parse_count(" 16 ", 2) == 16


@pytest.mark.parametrize("text", ["0", "17", "-1", "1.5", "two", "٣", "+2", "1e1"])
def test_a_bad_count_says_what_is_allowed(text):
    with pytest.raises(SetupError) as err:
        workers.parse_count(text, 3)
    message = str(err.value)
    assert repr(text) in message
    assert "1 to 16" in message
    assert "empty for 2" in message  # the default on 3 cores


@pytest.mark.parametrize("count", [0, 17, -3, True])
def test_layout_refuses_a_count_out_of_range(count):
    with pytest.raises(SetupError, match="1 to 16"):
        workers.layout("client", count, cores=2)


def test_an_unknown_preset_names_the_known_ones():
    with pytest.raises(SetupError) as err:
        workers.layout("media")
    assert "'media'" in str(err.value)
    assert "none, federation, client" in str(err.value)
    assert "dpkg-reconfigure" in str(err.value)


# --- listeners ---------------------------------------------------------------------------


def test_the_replication_listener_is_added_and_the_admins_kept():
    listeners = workers.with_replication_listener(ADMIN_LISTENERS)
    assert listeners[0] == ADMIN_LISTENERS[0]
    assert listeners[1] == {
        "port": 9093,
        "bind_addresses": ["127.0.0.1"],
        "type": "http",
        "resources": [{"names": ["replication"]}],
    }
    assert len(listeners) == 2


def test_adding_the_replication_listener_is_idempotent_and_copies():
    once = workers.with_replication_listener(ADMIN_LISTENERS)
    twice = workers.with_replication_listener(once)
    assert twice == once
    twice[0]["port"] = 1
    assert ADMIN_LISTENERS[0]["port"] == 8008 and once[0]["port"] == 8008


def test_an_admins_own_replication_listener_on_the_port_counts():
    own = {"port": 9093, "type": "http", "resources": [{"names": ["replication", "metrics"]}]}
    assert workers.with_replication_listener([own]) == [own]


def test_no_listeners_at_all():
    assert workers.with_replication_listener([]) == [workers.main_replication_listener()]


@pytest.mark.parametrize("port", [9093, 8084, 9094])
def test_a_listener_on_a_port_the_workers_need_is_refused(port):
    layout = workers.layout("client", 2)
    taken = [*ADMIN_LISTENERS, {"port": port, "type": "metrics"}]
    with pytest.raises(SetupError, match=f"Port {port} "):
        workers.render_shared(layout, taken, SOCKET)


# --- rendering ---------------------------------------------------------------------------


@pytest.mark.parametrize("layout", all_layouts(), ids=lambda lay: f"{lay.preset}-{lay.count}")
def test_the_shared_snippet_round_trips_and_reads_back(layout):
    text = workers.render_shared(layout, ADMIN_LISTENERS, SOCKET)
    expected = layout.shared_settings(SOCKET)
    expected["listeners"] = workers.with_replication_listener(ADMIN_LISTENERS)
    assert yaml.safe_load(text) == expected
    assert workers.read_back(text) == (layout.preset, layout.count)
    assert text == workers.render_shared(layout, ADMIN_LISTENERS, SOCKET)  # same bytes


def test_the_shared_snippets_header():
    text = workers.render_shared(workers.layout("client", 2), ADMIN_LISTENERS, SOCKET)
    lines = text.splitlines()
    first_setting = next(i for i, line in enumerate(lines) if not line.startswith("#"))
    comments = lines[:first_setting]
    assert not any(line.startswith("#") for line in lines[first_setting:])
    assert "matrix-synapse-setup" in comments[0]
    assert any("dpkg-reconfigure matrix-synapse-setup" in line for line in comments)
    assert any("homeserver.yaml" in line for line in comments)
    assert [line for line in comments if line.startswith("# Workers preset: ")] == [
        "# Workers preset: client 2"
    ]


def test_the_shared_snippet_does_not_depend_on_key_order():
    reordered = [dict(reversed(list(ADMIN_LISTENERS[0].items())))]
    layout = workers.layout("federation")
    assert workers.render_shared(layout, reordered, SOCKET) == workers.render_shared(
        layout, ADMIN_LISTENERS, SOCKET
    )


@pytest.mark.parametrize(
    "text",
    [
        "",
        "listeners: []\n",
        "# Workers preset: media 2\n",
        "# Workers preset: client\n",
        "# Workers preset: client two\n",
        "# Workers preset: client ٣\n",
        "# Workers preset: client 2 extra\n",
    ],
)
def test_read_back_finds_nothing_without_a_good_marker(text):
    assert workers.read_back(text) is None


def test_read_back_of_an_edited_file():
    text = "# my own comment\nfoo: 1\n# Workers preset: federation 0\n"
    assert workers.read_back(text) == ("federation", 0)


def test_a_client_workers_file():
    worker = workers.layout("client", 2).workers[1]
    text = workers.render_worker(worker)
    assert text.startswith("# Managed by matrix-synapse-setup")
    assert "client2" in text.splitlines()[0]
    assert yaml.safe_load(text) == {
        "worker_app": "synapse.app.generic_worker",
        "worker_name": "client2",
        "worker_listeners": [
            {
                "type": "http",
                "bind_addresses": ["127.0.0.1"],
                "port": FIRST_CLIENT_PORT + 1,
                "x_forwarded": True,
                "resources": [{"names": ["client"]}],
            }
        ],
    }


def test_the_event_persisters_file():
    events = workers.layout("client", 1).workers[-1]
    loaded = yaml.safe_load(workers.render_worker(events))
    assert loaded["worker_listeners"] == [
        {
            "type": "http",
            "bind_addresses": ["127.0.0.1"],
            "port": EVENTS_PORT,
            "resources": [{"names": ["replication"]}],
        }
    ]


@pytest.mark.parametrize("worker", workers.layout("federation").workers, ids=str)
def test_federation_workers_do_not_listen(worker):
    loaded = yaml.safe_load(workers.render_worker(worker))
    assert loaded == {"worker_app": "synapse.app.generic_worker", "worker_name": worker.name}


@pytest.mark.parametrize("layout", all_layouts(), ids=lambda lay: f"{lay.preset}-{lay.count}")
def test_worker_files_hold_no_secret_and_are_deterministic(layout):
    for worker in layout.workers:
        text = workers.render_worker(worker)
        assert "secret" not in yaml.safe_load(text)
        assert "password" not in text
        assert text == workers.render_worker(Worker(*worker))


def test_new_secrets_are_long_and_differ():
    first, second = workers.new_secret(), workers.new_secret()
    assert first != second
    assert len(first) >= 43  # 32 random bytes
    assert first.strip() == first  # Synapse strips what it reads


# --- Redis -------------------------------------------------------------------------------


def unit_file(root, libdir: str, kind: str):
    path = root / libdir / "systemd" / "system" / f"{kind}-server@.service"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("[Service]\n")
    return path


def test_no_redis_server(tmp_path):
    assert workers.find_redis(tmp_path) is None
    # the plain (not templated) unit alone is not enough
    plain = tmp_path / "usr/lib/systemd/system/redis-server.service"
    plain.parent.mkdir(parents=True)
    plain.write_text("")
    assert workers.find_redis(tmp_path) is None


@pytest.mark.parametrize("libdir", ["lib", "usr/lib"])
def test_redis_server_in_either_unit_directory(tmp_path, libdir):
    template = unit_file(tmp_path, libdir, "redis")
    server = workers.find_redis(tmp_path)
    assert server.kind == "redis"
    assert server.template == template
    assert server.unit == "redis-server@matrix-synapse.service"
    assert server.binary == "/usr/bin/redis-server"
    assert str(server.conffile) == "/etc/redis/redis-matrix-synapse.conf"
    assert server.socket == "/run/redis-matrix-synapse/redis-server.sock"
    assert server.group == "redis"


def test_valkey_server(tmp_path):
    template = unit_file(tmp_path, "usr/lib", "valkey")
    server = workers.find_redis(tmp_path)
    assert server.kind == "valkey"
    assert server.template == template
    assert server.unit == "valkey-server@matrix-synapse.service"
    assert server.binary == "/usr/bin/valkey-server"
    assert str(server.conffile) == "/etc/valkey/valkey-matrix-synapse.conf"
    assert server.socket == "/run/valkey-matrix-synapse/valkey-server.sock"
    assert server.group == "valkey"


def test_redis_server_is_preferred_to_valkey(tmp_path):
    unit_file(tmp_path, "usr/lib", "valkey")
    unit_file(tmp_path, "lib", "redis")
    assert workers.find_redis(tmp_path).kind == "redis"


@pytest.mark.parametrize("kind", ["redis", "valkey"])
def test_the_redis_configuration(kind):
    server = workers.redis_server(kind)
    password = "s3cret-" + kind
    text = workers.render_redis_conf(server, password)
    assert password not in text
    directives = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition(" ")
            directives[key] = value
    digest = hashlib.sha256(password.encode()).hexdigest()
    assert directives == {
        "port": "0",
        "unixsocket": f"/run/{kind}-matrix-synapse/{kind}-server.sock",
        "unixsocketperm": "777",
        "user": f"default on #{digest} ~* &* +@all",
        "save": '""',
        "appendonly": "no",
        "pidfile": f"/run/{kind}-matrix-synapse/{kind}-server.pid",
        "logfile": '""',
        "dir": f"/var/lib/{kind}",
        "dbfilename": "matrix-synapse.rdb",
    }
    assert text == workers.render_redis_conf(server, password)


def test_the_redis_configurations_comment_says_why_the_socket_is_open():
    text = workers.render_redis_conf(workers.REDIS, "x")
    comments = " ".join(line for line in text.splitlines() if line.startswith("#"))
    assert "PrivateUsers" in comments
    assert str(REDIS_SECRET) in comments


def test_the_shared_snippet_names_the_servers_socket(tmp_path):
    unit_file(tmp_path, "usr/lib", "valkey")
    server = workers.find_redis(tmp_path)
    text = workers.render_shared(workers.layout("federation"), [], server.socket)
    assert yaml.safe_load(text)["redis"]["path"] == server.socket
