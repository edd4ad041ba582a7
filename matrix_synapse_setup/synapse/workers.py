"""Synapse's workers: the presets, the files they need, and the Redis instance they share.

Pure: every function here computes names, numbers and texts; the only I/O is
:func:`find_redis`, which looks for Debian's Redis servers' unit files.  Writing the
files (through ucf) and starting the units (``synapse/units.py``) are the callers'.

Every preset runs the main process plus generic workers (``synapse.app.generic_worker``)
whose systemd instance name (``matrix-synapse-worker@NAME``) is the Synapse
``worker_name``:

- ``federation``: ``federation_sender1`` sends federation traffic, ``background1``
  runs the background tasks; neither listens, nothing is routed;
- ``client``: ``client1``..``clientN`` serve the client API on 127.0.0.1:8083 and up
  (the reverse proxy routes to them), ``events1`` persists events and listens for
  replication on 127.0.0.1:9094.

In every preset the main process listens for replication on 127.0.0.1:9093, and all of
them meet in Redis, reached on a Unix socket with a password.
"""

from __future__ import annotations

import copy
import hashlib
import os
import secrets
from pathlib import Path
from typing import Any, NamedTuple

from matrix_synapse_setup.core import messages
from matrix_synapse_setup.core.errors import SetupError
from matrix_synapse_setup.core.paths import (
    REDIS_SECRET,
    REPLICATION_SECRET,
    WORKERS_DIR,
    WORKERS_SNIPPET,
)
from matrix_synapse_setup.core.settings import (
    MAX_CLIENT_WORKERS,
    WORKER_PRESETS,
    default_client_workers,
    validate_client_workers,
    validate_workers,
)

NONE = "none"
PRESETS = WORKER_PRESETS
MAIN = "main"  # Synapse's instance name of the main process
LOOPBACK = "127.0.0.1"
MAIN_REPLICATION_PORT = 9093
FIRST_CLIENT_PORT = 8083
EVENTS_PORT = 9094
# More client workers than this would not help on one machine, and would leave the
# ports below the event persister's (8083 + 16 - 1 = 8098).
MAX_COUNT = MAX_CLIENT_WORKERS
WORKER_APP = "synapse.app.generic_worker"
WORKER_UNIT = "matrix-synapse-worker@{name}.service"
# The line of the shared snippet that says what was chosen (debian/config reads it too).
MARKER = "# Workers preset: "

CLIENT, EVENTS, FEDERATION_SENDER, BACKGROUND = (
    "client",
    "events",
    "federation_sender",
    "background",
)


class Worker(NamedTuple):
    """One worker process: its name (Synapse's worker_name and the unit's instance), what
    it does, and the loopback port and resources of its HTTP listener (None: it has none)."""

    name: str
    role: str
    port: int | None
    resources: tuple[str, ...]

    @property
    def unit(self) -> str:
        return WORKER_UNIT.format(name=self.name)

    @property
    def path(self) -> Path:
        return WORKERS_DIR / f"{self.name}.yaml"


class Layout(NamedTuple):
    """A preset made concrete: its workers, and *count* client workers (0 for any preset
    but client)."""

    preset: str
    count: int
    workers: tuple[Worker, ...]

    @property
    def routed(self) -> tuple[Worker, ...]:
        """The workers the reverse proxy sends requests to (the client workers)."""
        return tuple(w for w in self.workers if w.role == CLIENT)

    def names(self) -> tuple[str, ...]:
        return tuple(w.name for w in self.workers)

    def shared_settings(self, redis_socket: str | None = None) -> dict[str, Any]:
        """What every process reads from the shared snippet, but its listeners.

        *redis_socket* is the Redis instance's socket (:attr:`RedisServer.socket`);
        redis-server's by default."""
        instance_map: dict[str, Any] = {MAIN: {"host": LOOPBACK, "port": MAIN_REPLICATION_PORT}}
        settings: dict[str, Any] = {"instance_map": instance_map}
        for worker in self.workers:
            if worker.role == EVENTS:
                instance_map[worker.name] = {"host": LOOPBACK, "port": worker.port}
                settings["stream_writers"] = {"events": worker.name}
        senders = [w.name for w in self.workers if w.role == FEDERATION_SENDER]
        if senders:
            settings["federation_sender_instances"] = senders
        for worker in self.workers:
            if worker.role == BACKGROUND:
                settings["run_background_tasks_on"] = worker.name
        settings["redis"] = {
            "enabled": True,
            "path": redis_socket or REDIS.socket,
            "password_path": str(REDIS_SECRET),
        }
        settings["worker_replication_secret_path"] = str(REPLICATION_SECRET)
        return settings


def default_count(cores: int) -> int:
    """Client workers for a machine of *cores* cores (core/settings.py says why)."""
    return default_client_workers(cores)


def parse_count(text: str, cores: int) -> int:
    """The debconf answer for the number of client workers: empty is the default for
    *cores*; else a whole number from 1 to MAX_COUNT (SetupError otherwise)."""
    return validate_client_workers(text, cores)


def layout(preset: str, count: int | None = None, cores: int | None = None) -> Layout | None:
    """The workers of *preset* (None for "none").  *count* is the number of client
    workers (client preset only; None: derived from *cores*, this machine's by default).
    SetupError for an unknown preset or a count out of range."""
    validate_workers(preset)
    if preset == NONE:
        return None
    if preset == "federation":
        workers = (
            Worker(f"{FEDERATION_SENDER}1", FEDERATION_SENDER, None, ()),
            Worker(f"{BACKGROUND}1", BACKGROUND, None, ()),
        )
        return Layout(preset, 0, workers)
    if cores is None:
        cores = _cores()
    if count is None:
        count = default_count(cores)
    # A bool is an int to Python; as text ("True") it is refused like any other.
    validate_client_workers(str(count), cores)
    clients = tuple(
        Worker(f"{CLIENT}{i}", CLIENT, FIRST_CLIENT_PORT + i - 1, ("client",))
        for i in range(1, count + 1)
    )
    events = Worker(f"{EVENTS}1", EVENTS, EVENTS_PORT, ("replication",))
    return Layout(preset, count, (*clients, events))


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def processes(layout: Layout | None) -> list[str]:
    """Every Synapse process of *layout*: each has its own database pool."""
    return [MAIN, *(layout.names() if layout is not None else ())]


def read_back(text: str) -> tuple[str, int] | None:
    """The preset and client count that the shared snippet's marker line records; None
    when *text* has no readable marker."""
    for line in text.splitlines():
        if not line.startswith(MARKER):
            continue
        fields = line[len(MARKER) :].split()
        if len(fields) != 2 or fields[0] not in PRESETS or not fields[1].isascii():
            return None
        if not fields[1].isdigit():
            return None
        return fields[0], int(fields[1])
    return None


# --- listeners ----------------------------------------------------------------------------


def main_replication_listener() -> dict[str, Any]:
    return {
        "port": MAIN_REPLICATION_PORT,
        "bind_addresses": [LOOPBACK],
        "type": "http",
        "resources": [{"names": ["replication"]}],
    }


def _resource_names(listener: dict[str, Any]) -> set[str]:
    names: set[str] = set()
    for resource in listener.get("resources") or ():
        if isinstance(resource, dict):
            names.update(str(n) for n in resource.get("names") or ())
    return names


def _serves_main_replication(listener: Any) -> bool:
    return (
        isinstance(listener, dict)
        and listener.get("port") == MAIN_REPLICATION_PORT
        and "replication" in _resource_names(listener)
    )


def with_replication_listener(listeners: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """*listeners* (homeserver.yaml's, as Synapse reads them), each kept, plus the main
    process's replication listener unless one is there already.  A copy: the shared
    snippet's "listeners" replaces homeserver.yaml's, so it must carry them all."""
    result = copy.deepcopy(list(listeners))
    if not any(_serves_main_replication(listener) for listener in result):
        result.append(main_replication_listener())
    return result


def check_ports(layout: Layout, listeners: list[dict[str, Any]]) -> None:
    """SetupError when one of the admin's listeners takes a port the workers need (a
    replication listener on the main process's port is ours, or the same)."""
    wanted = {MAIN_REPLICATION_PORT: MAIN}
    wanted.update({w.port: w.name for w in layout.workers if w.port is not None})
    for listener in listeners:
        if not isinstance(listener, dict) or _serves_main_replication(listener):
            continue
        port = listener.get("port")
        if port in wanted:
            raise SetupError(messages.WORKERS_PORT_TAKEN.format(port=port, user=wanted[port]))


# --- rendering ------------------------------------------------------------------------------


def _dump(data: dict[str, Any]) -> str:
    from matrix_synapse_setup.core import yamlload

    # Sorted keys and block style: the same settings give the same bytes, so an
    # unchanged reconfigure finds nothing to write.
    return yamlload.safe_dump(data, default_flow_style=False, sort_keys=True)


def _checked(text: str, intended: dict[str, Any], path: Path) -> str:
    """*text* if it reads back as *intended*; a bug of ours otherwise."""
    from matrix_synapse_setup.core import yamlload

    if yamlload.safe_load(text) != intended:
        raise SetupError(messages.WORKERS_RENDER_MISMATCH.format(path=path))
    return text


def shared_dict(
    layout: Layout, listeners: list[dict[str, Any]], redis_socket: str
) -> dict[str, Any]:
    """The shared snippet's settings, as Synapse will read them."""
    settings = layout.shared_settings(redis_socket)
    settings["listeners"] = with_replication_listener(listeners)
    return settings


def render_shared(layout: Layout, listeners: list[dict[str, Any]], redis_socket: str) -> str:
    """The text of conf.d/workers.yaml for *layout*: its header (with the marker line
    that :func:`read_back` reads), then the settings every process shares."""
    check_ports(layout, listeners)
    intended = shared_dict(layout, listeners, redis_socket)
    header = messages.WORKERS_SHARED_HEADER.format(preset=layout.preset, count=layout.count)
    return _checked(header + _dump(intended), intended, WORKERS_SNIPPET)


def worker_dict(worker: Worker) -> dict[str, Any]:
    settings: dict[str, Any] = {"worker_app": WORKER_APP, "worker_name": worker.name}
    if worker.port is not None:
        listener: dict[str, Any] = {
            "type": "http",
            "bind_addresses": [LOOPBACK],
            "port": worker.port,
            "resources": [{"names": list(worker.resources)}],
        }
        if worker.role == CLIENT:
            # Behind the reverse proxy: the client's address is in X-Forwarded-For.
            listener["x_forwarded"] = True
        settings["worker_listeners"] = [listener]
    return settings


def render_worker(worker: Worker) -> str:
    """The text of workers/NAME.yaml: no secret (those are in files of their own)."""
    intended = worker_dict(worker)
    header = messages.WORKER_FILE_HEADER.format(
        name=worker.name, role=worker.role, unit=worker.unit, shared=WORKERS_SNIPPET
    )
    return _checked(header + _dump(intended), intended, worker.path)


def new_secret() -> str:
    """A fresh secret for the replication or the Redis password file."""
    return secrets.token_urlsafe(32)


# --- Redis ------------------------------------------------------------------------------------
#
# Debian's servers, as their packages ship them (trixie: redis-server 8.0 and valkey-server
# 8.1 are both in main; bookworm: redis-server 7.0 only, its units in /lib):
# - the templated unit redis-server@.service / valkey-server@.service runs
#   "/usr/bin/<kind>-server /etc/<kind>/<kind>-%i.conf --supervised systemd --daemonize no"
#   as User=Group=redis / valkey (created by redis-tools / valkey-tools, home
#   /var/lib/<kind>, 0750), with RuntimeDirectory=<kind>-%i (mode 2755),
#   PIDFile=/run/<kind>-%i/<kind>-server.pid, PrivateUsers=true, ProtectSystem=strict and
#   ReadWritePaths /var/lib/<kind>, /var/log/<kind>, /var/run/<kind>-%i;
# - /etc/<kind> is 2770 <kind>:<kind>.
# So our instance is <kind>-server@matrix-synapse.service, its configuration
# /etc/<kind>/<kind>-matrix-synapse.conf, its socket and pid file in
# /run/<kind>-matrix-synapse/.

INSTANCE = "matrix-synapse"
REDIS_KINDS = ("redis", "valkey")  # redis-server first when both are installed
UNIT_DIRS = ("usr/lib/systemd/system", "lib/systemd/system")


class RedisServer(NamedTuple):
    """One of Debian's Redis servers, and our instance of it."""

    kind: str  # "redis" or "valkey"
    unit: str  # our instance, e.g. redis-server@matrix-synapse.service
    template: Path  # the templated unit file it is an instance of
    binary: str
    conffile: Path
    socket: str
    group: str  # the server's group: our configuration file is 0640 root:<group>

    @property
    def runtime_dir(self) -> str:
        return f"/run/{self.kind}-{INSTANCE}"

    @property
    def pidfile(self) -> str:
        return f"{self.runtime_dir}/{self.kind}-server.pid"

    @property
    def data_dir(self) -> str:
        return f"/var/lib/{self.kind}"


def redis_server(kind: str, template: Path | None = None) -> RedisServer:
    """Our instance of Debian's *kind* server (its unit file where Debian 13 has it)."""
    return RedisServer(
        kind=kind,
        unit=f"{kind}-server@{INSTANCE}.service",
        template=template or Path("/") / UNIT_DIRS[0] / f"{kind}-server@.service",
        binary=f"/usr/bin/{kind}-server",
        conffile=Path(f"/etc/{kind}/{kind}-{INSTANCE}.conf"),
        socket=f"/run/{kind}-{INSTANCE}/{kind}-server.sock",
        group=kind,
    )


REDIS = redis_server("redis")


def find_redis(root: Path = Path("/")) -> RedisServer | None:
    """The Redis server installed under *root* (its templated unit is there), redis-server
    before valkey-server; None when neither is."""
    for kind in REDIS_KINDS:
        for unit_dir in UNIT_DIRS:
            template = root / unit_dir / f"{kind}-server@.service"
            if template.is_file():
                return redis_server(kind, template)
    return None


def password_hash(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()


def render_redis_conf(server: RedisServer, password: str) -> str:
    """Our instance's configuration: a Unix socket only, no persistence (Synapse keeps
    nothing in Redis that outlives a restart), and only the password's hash."""
    lines = [
        "port 0",
        f"unixsocket {server.socket}",
        "unixsocketperm 777",
        f"user default on #{password_hash(password)} ~* &* +@all",
        'save ""',
        "appendonly no",
        f"pidfile {server.pidfile}",
        'logfile ""',
        f"dir {server.data_dir}",
        f"dbfilename {INSTANCE}.rdb",
    ]
    header = messages.REDIS_CONF_HEADER.format(unit=server.unit, secret=REDIS_SECRET)
    return header + "\n".join(lines) + "\n"
