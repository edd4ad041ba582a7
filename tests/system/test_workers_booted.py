"""Synapse's workers: the `client` preset under a real systemd, and the connection budget.

A journey (journeys.py: the steps of TestClientWorkers share one booted root per release,
in order) starts from the cached `synapse` layer (the Synapse stand-in installed, Synapse
on SQLite) under a real systemd (harness.BootedRoot).  Debian's redis-server and nginx are
installed offline from the root's apt cache, then our .deb with the `client` preset and one
client worker preseeded: Redis (our instance of Debian's templated unit), the main process
and the workers (one client worker, one event persister) run under matrix-synapse.target.
The admin's nginx server block includes the generated routing; a real Matrix client
(judge.py, matrix-nio) talks only to nginx, and nginx's log of the upstream each request
went to, and the workers' own logs, show that the messages went through the client worker.
Restarting the target restarts every process; switching back to `none` leaves one process
and no worker unit; purge leaves no worker file, unit or enabled symlink.

test_remote_budget_refused: a remote PostgreSQL whose max_connections cannot hold the
pools of three processes refuses the preset with the numbers, and nothing is written.
"""

from __future__ import annotations

import hashlib
import json
import re
import time

import pytest
import yaml

from scripts.devtools import steps
from scripts.devtools.harness import Root
from scripts.devtools.steps import NONINTERACTIVE, PKG, SNIPPET, SYNAPSE_UNIT

SUITES = ["trixie", "bookworm"]
ETC = "/etc/matrix-synapse"
WORKERS_SNIPPET = f"{ETC}/conf.d/workers.yaml"
WORKERS_DIR = f"{ETC}/workers"
SECRETS = (f"{WORKERS_DIR}/replication.secret", f"{WORKERS_DIR}/redis.secret")
NGINX_INCLUDE = f"{ETC}/nginx-workers.conf"
REDIS_UNIT = "redis-server@matrix-synapse.service"
REDIS_CONF = "/etc/redis/redis-matrix-synapse.conf"
REDIS_SOCKET = "/run/redis-matrix-synapse/redis-server.sock"
TARGET = "matrix-synapse.target"
WANTS = f"/etc/systemd/system/{TARGET}.wants"
WORKER_TEMPLATE = "/usr/lib/systemd/system/matrix-synapse-worker@.service"
OUR_UNITS = (WORKER_TEMPLATE, f"/usr/lib/systemd/system/{TARGET}")
WORKERS = ("client1", "events1")  # the client preset with one client worker
SYNAPSE_GROUP = "matrix-synapse"
HOMESERVER_DB = "/var/lib/matrix-synapse/homeserver.db"
JUDGE_STATE = "/root/judge-state.json"  # inroot/judge.py's record
MESSAGES = 10

# The admin's own server block: everything to the main process, and the one line the
# README gives for the workers' routes.  nginx logs which upstream served each request.
NGINX_PORT = 8448
NGINX_URL = f"http://127.0.0.1:{NGINX_PORT}"
UPSTREAM_LOG = "/var/log/nginx/matrix-upstream.log"
NGINX_SITE = f"""\
log_format mss_upstream '$request_method $uri $upstream_addr';
server {{
    listen 127.0.0.1:{NGINX_PORT};
    access_log {UPSTREAM_LOG} mss_upstream;
    proxy_set_header X-Forwarded-For $remote_addr;
    proxy_set_header X-Forwarded-Proto $scheme;
    proxy_set_header Host $host;
    location / {{
        proxy_pass http://127.0.0.1:8008;
    }}
    include {NGINX_INCLUDE};
}}
"""
NGINX_SITE_PATH = "/etc/nginx/sites-enabled/matrix-synapse"


def worker_unit(name: str) -> str:
    return f"matrix-synapse-worker@{name}.service"


def check_running(root: Root, unit: str, what: str) -> str:
    """UNIT is active (running) with a main process; its MainPID."""
    props = steps.unit_properties(root, unit, "ActiveState", "SubState", "MainPID")
    state = (props.get("ActiveState"), props.get("SubState"))
    if state != ("active", "running") or props.get("MainPID", "0") == "0":
        journal = root.run(["journalctl", "-u", unit, "--no-pager", "-n", "40"]).output
        root.fail(what, f"{unit} active (running), a MainPID", f"{props}\n{journal}")
    return props["MainPID"]


def stat(root: Root, path: str) -> str:
    return root.ok(["stat", "-c", "%a %U %G", path], what=f"looking at {path}").output.strip()


def worker_config(root: Root, name: str) -> dict:
    return yaml.safe_load(root.read(f"{WORKERS_DIR}/{name}.yaml")) or {}


def client_port(root: Root, name: str = "client1") -> int:
    """The port of a client worker's HTTP listener, from its own file."""
    listeners = worker_config(root, name).get("worker_listeners") or []
    ports = [int(x["port"]) for x in listeners if x.get("type") == "http" and "port" in x]
    root.check(len(ports) == 1, f"{name} has one HTTP listener", "one port", repr(listeners))
    return ports[0]


def wait_answers(root: Root, url: str, what: str) -> None:
    """The judge waits until Synapse (a worker, or nginx in front) answers at URL."""
    cmd = ["/opt/venvs/judge/bin/python", "/usr/local/lib/mss-test/judge.py", "wait"]
    result = root.run([*cmd, "--timeout", "90", "--server", url])
    if result.code:
        logs = "\n".join(
            root.run(["journalctl", "-u", unit, "--no-pager", "-n", "30"]).output
            for unit in (SYNAPSE_UNIT, *map(worker_unit, WORKERS))
        )
        root.fail(what, f"an answer at {url}", f"{result.output}\n{logs}")


def synapse_processes(root: Root) -> list[str]:
    """The command lines of every running Synapse process (main and workers)."""
    out = root.ok(["ps", "-eo", "args"], what="listing processes").output
    return [line for line in out.splitlines() if "synapse.app." in line]


def judge_rooms(root: Root) -> list[str]:
    """The rooms the judge made (its record)."""
    return [entry["room"] for entry in json.loads(root.read(JUDGE_STATE))["users"]]


def log_lines(root: Root, unit: str, port: int, *needles: str) -> list[str]:
    """The requests one Synapse process logged that hold every one of NEEDLES: from its
    unit's journal (a process without a log file logs there) and from the log files, the
    lines of its access logger (synapse.access.http.PORT: processes may share a file)."""
    access_logger = f"synapse.access.http.{port} "
    journal = root.run(["journalctl", "-u", unit, "--no-pager", "-q", "-o", "cat"]).output
    files = root.run(
        f"grep -hF '{access_logger}' /var/log/matrix-synapse/*.log 2>/dev/null || true"
    ).output
    return [
        line
        for line in (journal + "\n" + files).splitlines()
        if access_logger in line and all(needle in line for needle in needles)
    ]


def sends(root: Root, unit: str, port: int, room: str) -> list[str]:
    """The sends into ROOM that one Synapse process served, by its log."""
    return log_lines(root, unit, port, "/send/", room.lstrip("!").split(":")[0])


def replication_port(root: Root, name: str) -> int:
    """The port of a worker's replication listener, from its own file."""
    listeners = worker_config(root, name).get("worker_listeners") or []
    ports = [
        int(x["port"])
        for x in listeners
        if "replication" in str(x.get("resources")) and "port" in x
    ]
    root.check(len(ports) == 1, f"{name} has a replication listener", "one port", repr(listeners))
    return ports[0]


def upstreams(root: Root) -> list[tuple[str, str, str]]:
    """(method, uri, upstream) of every request nginx passed on (our server block's log)."""
    text = root.run(["cat", UPSTREAM_LOG]).output
    return [tuple(line.split(" ", 2)) for line in text.splitlines() if line.count(" ") >= 2]


def secret_text(root: Root, path: str) -> str:
    return root.read(path).strip()


# --- the journey -------------------------------------------------------------------------


@pytest.mark.journey
@pytest.mark.parametrize("suite", SUITES, scope="class")
class TestClientWorkers:
    """One booted root per release (quick mode: trixie; MSS_SYSTEM_FULL=1: both): the
    client preset installed, used through nginx, restarted, switched off and on, purged."""

    @pytest.fixture(scope="class")
    def root(self, journey_root, suite) -> Root:
        return journey_root(suite, booted=True, layer="synapse")  # Synapse runs, on SQLite

    def test_install_client_preset(self, root, debs):
        install_client_preset(root, debs)

    def test_client_through_nginx(self, root):
        client_through_nginx(root)

    def test_restart_target(self, root):
        restart_target(root)

    def test_back_to_none(self, root):
        back_to_none(root)

    def test_client_again_then_purge(self, root):
        client_again_then_purge(root)


def install_client_preset(root: Root, debs) -> None:
    """Redis and nginx from Debian, then our .deb with the client preset and one client
    worker: Redis, the main process and both workers run under the target."""
    root.ok(
        ["apt-get", "install", "-y", "-q", "redis-server", "nginx"],
        what="installing Debian's redis-server and nginx (offline, from the root's apt cache)",
        env=NONINTERACTIVE,
    )
    steps.preseed(root, workers="client", client_workers="1")
    steps.apt_install(root, debs["current"])

    for path in OUR_UNITS:
        root.check(root.exists(path), "the package ships the unit", path, "absent")
    enabled = root.run(["systemctl", "is-enabled", TARGET]).output.strip()
    active = root.run(["systemctl", "is-active", TARGET]).output.strip()
    root.check(
        (enabled, active) == ("enabled", "active"),
        f"{TARGET} is enabled and active",
        "enabled active",
        f"{enabled} {active}",
    )
    check_running(root, REDIS_UNIT, "our Redis instance runs")
    steps.synapse_up(root, "the main process answers on 8008")
    check_running(root, SYNAPSE_UNIT, "the main process runs under systemd")
    for name in WORKERS:
        check_running(root, worker_unit(name), f"worker {name} runs under systemd")
        link = f"{WANTS}/{worker_unit(name)}"
        target = root.run(["readlink", link]).output.strip()
        root.check(
            target == WORKER_TEMPLATE,
            f"worker {name} is enabled into {TARGET}",
            f"{link} -> {WORKER_TEMPLATE}",
            target or "no symlink",
        )
    root.check(
        root.run(["test", "-L", f"{WANTS}/{REDIS_UNIT}"]).code == 0,
        f"our Redis instance is enabled into {TARGET}",
        f"{WANTS}/{REDIS_UNIT}",
        root.run(["ls", "-l", WANTS]).output,
    )
    port = client_port(root)
    wait_answers(root, f"http://127.0.0.1:{port}", "the client worker answers the client API")

    # The files, their owners and modes.
    header = root.read(WORKERS_SNIPPET)
    root.check(
        "# Workers preset: client 1\n" in header,
        f"{WORKERS_SNIPPET} records the preset for a reconfigure",
        "# Workers preset: client 1",
        header[:600],
    )
    for name in WORKERS:
        config = worker_config(root, name)
        root.check(
            config.get("worker_app") == "synapse.app.generic_worker"
            and config.get("worker_name") == name,
            f"{WORKERS_DIR}/{name}.yaml names the worker",
            f"worker_app synapse.app.generic_worker, worker_name {name}",
            repr(config),
        )
        got = stat(root, f"{WORKERS_DIR}/{name}.yaml")
        root.check(got == "644 root root", f"{name}.yaml holds no secret", "644 root root", got)
    secrets = {}
    for path in SECRETS:
        got = stat(root, path)
        root.check(
            got == f"640 root {SYNAPSE_GROUP}",
            f"{path} is readable by root and Synapse only",
            f"640 root {SYNAPSE_GROUP}",
            got,
        )
        secrets[path] = secret_text(root, path)
        root.check(len(secrets[path]) >= 16, f"{path} holds a secret", ">= 16 chars", "shorter")
    for path, secret in secrets.items():
        found = root.run(
            ["grep", "-rlF", "--exclude=*.secret", "--", secret, ETC, "/etc/redis", "/etc/nginx"]
        ).output.split()
        root.check(found == [], f"the secret of {path} is in no other file", "none", str(found))

    redis_password = secrets[f"{WORKERS_DIR}/redis.secret"]
    conf = root.read(REDIS_CONF)
    got = stat(root, REDIS_CONF)
    root.check(got == "640 root redis", f"{REDIS_CONF} is private", "640 root redis", got)
    digest = hashlib.sha256(redis_password.encode()).hexdigest()
    root.check(
        redis_password not in conf and f"#{digest}" in conf,
        f"{REDIS_CONF} holds the password's hash only",
        f"#{digest[:12]}..., not the password",
        "the password in clear" if redis_password in conf else "no hash of the password",
    )
    pong = root.run(
        ["runuser", "-u", "matrix-synapse", "--", "redis-cli", "-s", REDIS_SOCKET, "ping"],
        env={"REDISCLI_AUTH": redis_password},
    )
    root.check(pong.output.strip() == "PONG", "Synapse's user reaches Redis", "PONG", pong.output)
    anonymous = root.run(["redis-cli", "-s", REDIS_SOCKET, "ping"]).output
    root.check(
        "NOAUTH" in anonymous, "Redis refuses a client without the password", "NOAUTH", anonymous
    )


def client_through_nginx(root: Root) -> None:
    """The admin includes the generated routes in their server block; a real client talks
    only to nginx: it registers, makes a room, sends and reads back.  The sends went to the
    client worker, never to the main process."""
    root.check(root.exists(NGINX_INCLUDE), "the package writes the nginx include", "", "absent")
    root.write(NGINX_SITE_PATH, NGINX_SITE)
    root.ok(["nginx", "-t"], what="nginx accepts the server block with our include")
    root.ok(["systemctl", "reload", "nginx.service"], what="nginx loads it")
    wait_answers(root, NGINX_URL, "Synapse answers through nginx")
    steps.judge(
        root,
        "chat",
        "--messages",
        str(MESSAGES),
        "--server",
        NGINX_URL,
        what="the client registers, makes a room, sends and reads back, through nginx",
    )
    room = judge_rooms(root)[-1]
    port = client_port(root)

    proxied = [(m, uri, up) for m, uri, up in upstreams(root) if m == "PUT" and "/send/" in uri]
    elsewhere = [s for s in proxied if s[2] != f"127.0.0.1:{port}"]
    root.check(
        len(proxied) >= MESSAGES and not elsewhere,
        "nginx passed every send to the client worker (the include's route)",
        f">= {MESSAGES} PUT .../send/ to 127.0.0.1:{port}",
        "\n".join(" ".join(s) for s in (elsewhere or proxied)) or "no send",
    )
    # The workers' own logs say they served them: the client worker the sends, the event
    # persister the events it was handed to write (a log file may be flushed seconds later).
    persister = replication_port(root, "events1")
    deadline = time.monotonic() + 30
    while True:
        served = sends(root, worker_unit("client1"), port, room)
        persisted = log_lines(
            root, worker_unit("events1"), persister, "/_synapse/replication/send_events"
        )
        if len(served) >= MESSAGES and len(persisted) >= MESSAGES:
            break
        if time.monotonic() > deadline:
            break
        time.sleep(1)
    for unit, lines, what in (
        (worker_unit("client1"), served, f"PUT .../send/ into {room}"),
        (worker_unit("events1"), persisted, "POST /_synapse/replication/send_events"),
    ):
        journal = ["journalctl", "-u", unit, "--no-pager", "-n", "30"]
        root.check(
            len(lines) >= MESSAGES,
            f"the log of {unit} shows it served the messages",
            f">= {MESSAGES} requests {what}",
            "\n".join(lines) or root.run(journal).output,
        )
    main = sends(root, SYNAPSE_UNIT, 8008, room)
    root.check(main == [], "the main process did not serve the sends", "none", "\n".join(main))


def restart_target(root: Root) -> None:
    """`systemctl restart matrix-synapse.target` restarts the main process and every worker;
    the client still sends and reads through nginx."""
    units = (SYNAPSE_UNIT, *map(worker_unit, WORKERS))
    before = {unit: check_running(root, unit, f"{unit} runs") for unit in units}
    root.ok(["systemctl", "restart", TARGET], what=f"restarting {TARGET}")
    steps.synapse_up(root, "the main process answers again")
    wait_answers(root, NGINX_URL, "Synapse answers through nginx again")
    after = {unit: check_running(root, unit, f"{unit} runs again") for unit in units}
    same = [unit for unit in units if after[unit] == before[unit]]
    root.check(
        not same,
        f"restarting {TARGET} restarts every process (a new MainPID each)",
        "every MainPID new",
        f"before {before}, after {after}",
    )
    wait_answers(root, f"http://127.0.0.1:{client_port(root)}", "the client worker answers")
    steps.judge(
        root,
        "recheck",
        "--messages",
        "3",
        "--server",
        NGINX_URL,
        what="the client logs in again, reads every message and sends more, through nginx",
    )
    # Stopped processes have flushed their log files: the main process served no send.
    for room in judge_rooms(root):
        main = sends(root, SYNAPSE_UNIT, 8008, room)
        root.check(main == [], "the main process served no send", "none", "\n".join(main))


def back_to_none(root: Root) -> None:
    """`none` again: one Synapse process, no worker unit, file or enabled symlink; every
    message is still there."""
    steps.preseed(root, workers="none")
    root.ok(
        ["dpkg-reconfigure", "-fnoninteractive", PKG],
        what="dpkg-reconfigure with workers none",
    )
    steps.synapse_up(root, "the main process answers")
    check_running(root, SYNAPSE_UNIT, "the main process runs")
    processes = synapse_processes(root)
    root.check(
        len(processes) == 1 and "synapse.app.homeserver" in processes[0],
        "one Synapse process runs",
        "synapse.app.homeserver alone",
        "\n".join(processes),
    )
    listed = root.run(
        ["systemctl", "list-units", "--all", "--plain", "--no-legend", "matrix-synapse-worker@*"]
    ).output.strip()
    root.check(listed == "", "no worker unit is loaded", "none", listed)
    links = root.run(f"ls -A {WANTS} 2>/dev/null || true").output.split()
    ours = [x for x in links if x.startswith("matrix-synapse-worker@") or x == REDIS_UNIT]
    root.check(ours == [], f"no worker enabled into {TARGET}", "no symlink", str(ours))
    left = root.run(f"ls {WORKERS_DIR}/*.yaml {WORKERS_SNIPPET} 2>/dev/null || true").output
    root.check(left.strip() == "", "no worker file is left", "none", left)
    steps.synapse_recheck(root, messages=2)  # directly on 8008: every message, two more
    # The admin's server block still includes our file: it stays, routing nothing, and the
    # package reloaded nginx, so every request now reaches the main process.
    include = root.read(NGINX_INCLUDE)
    root.check("location" not in include, f"{NGINX_INCLUDE} stays and routes nothing", "", include)
    root.ok(["nginx", "-t"], what="nginx still accepts the server block with our include")
    before = len(upstreams(root))
    steps.judge(
        root,
        "recheck",
        "--messages",
        "2",
        "--server",
        NGINX_URL,
        what="the client reads every message and sends more through nginx, one process",
    )
    served = {up for _, _, up in upstreams(root)[before:]}
    root.check(
        served == {"127.0.0.1:8008"},
        "nginx sends everything to the main process now",
        "127.0.0.1:8008 only",
        str(served),
    )


def client_again_then_purge(root: Root) -> None:
    """The client preset again; apt remove leaves one process (the workers' files kept);
    then purge (keeping the database): no worker file, unit, Redis instance or enabled
    symlink is left; Synapse's data is."""
    steps.preseed(root, workers="client", client_workers="1")
    root.ok(
        ["dpkg-reconfigure", "-fnoninteractive", PKG],
        what="dpkg-reconfigure with the client preset again",
    )
    for name in WORKERS:
        check_running(root, worker_unit(name), f"worker {name} runs again")
    wait_answers(root, f"http://127.0.0.1:{client_port(root)}", "the client worker answers")

    # apt remove: the workers' units go, so Synapse goes on as one process; the workers'
    # own files are configuration and stay until purge.
    root.ok(["apt-get", "remove", "-y", PKG], what="apt remove", env=NONINTERACTIVE)
    steps.synapse_up(root, "the main process answers after apt remove")
    processes = synapse_processes(root)
    root.check(
        len(processes) == 1 and "synapse.app.homeserver" in processes[0],
        "after apt remove one Synapse process runs",
        "synapse.app.homeserver alone",
        "\n".join(processes),
    )
    root.check(
        not root.exists(WORKERS_SNIPPET), "apt remove takes the shared snippet", "absent", "present"
    )
    for name in WORKERS:
        path = f"{WORKERS_DIR}/{name}.yaml"
        root.check(root.exists(path), "apt remove keeps the workers' files", path, "absent")
    steps.synapse_recheck(root, messages=1)

    steps.preseed(root, purge_database="false")
    root.ok(["apt-get", "purge", "-y", PKG], what="apt purge", env=NONINTERACTIVE)
    for path in (WORKERS_SNIPPET, NGINX_INCLUDE, REDIS_CONF, *SECRETS, *OUR_UNITS):
        root.check(not root.exists(path), "purge removes our file", f"{path} absent", "present")
    left = root.run(f"ls -A {WORKERS_DIR} 2>/dev/null || true").output
    root.check(left.strip() == "", f"purge leaves nothing in {WORKERS_DIR}", "", left)
    links = root.run(
        "grep -rl -e matrix-synapse-worker -e redis-server@matrix-synapse /etc/systemd; "
        "find /etc/systemd -name 'matrix-synapse-worker@*' -o -name 'redis-server@matrix-*'"
    ).output.strip()
    root.check(links == "", "purge leaves no enabled symlink or unit of ours", "none", links)
    workers = [p for p in synapse_processes(root) if "generic_worker" in p]
    root.check(workers == [], "no worker process runs after purge", "none", "\n".join(workers))
    root.check(root.exists(HOMESERVER_DB), "Synapse's SQLite file is kept", "present", "absent")
    facts = steps.database_facts(root)
    root.check(facts.get("owner") == "synapse", "the database is kept", "synapse's", str(facts))


# --- a remote server too small for the preset --------------------------------------------

HERE_ADDR, DB_ADDR = "10.231.7.1", "10.231.7.2"
REMOTE_SOCKET = "/run/pg-remote"
REMOTE_PASSWORD = "remote budget pw"
# Room for one process's pool (10) but not for three (main, client1, events1: 30):
# 35 - 3 (superuser_reserved_connections) - 10 (the margin) = 22.
MAX_CONNECTIONS = 35
WATCHED = (ETC, "/etc/redis", "/etc/systemd/system")


def remote_cluster(root: Root, max_connections: int) -> str:
    """PostgreSQL on another address (its own network namespace behind a veth pair, as in
    test_scenarios.test_remote_server), with the role and database made by its admin, and
    the local cluster removed.  Returns the server's version."""
    version = root.ok(["pg_lsclusters", "-h"], what="listing clusters").output.split()[0]
    root.ok(["pg_dropcluster", "--stop", version, "main"], what="removing the local cluster")
    root.add_netns("dbnet", HERE_ADDR, DB_ADDR)
    root.ok(
        f"""
        install -d -o postgres -g postgres -m 0700 {REMOTE_SOCKET}
        pg_createcluster {version} remote -p 5432 >/dev/null
        conf=/etc/postgresql/{version}/remote
        echo "listen_addresses = '{DB_ADDR}'" >> $conf/postgresql.conf
        echo "unix_socket_directories = '{REMOTE_SOCKET}'" >> $conf/postgresql.conf
        echo "max_connections = {max_connections}" >> $conf/postgresql.conf
        echo "host all all 10.231.7.0/24 scram-sha-256" >> $conf/pg_hba.conf
        """,
        what="making the remote cluster",
    )
    root.ok(
        ["pg_ctlcluster", version, "remote", "start"],
        net="dbnet",
        what="starting the remote cluster in its own network namespace",
    )
    for sql in (
        "SET password_encryption = 'scram-sha-256'; "
        f"CREATE ROLE synapse LOGIN PASSWORD '{REMOTE_PASSWORD}'",
        "CREATE DATABASE synapse ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' "
        "TEMPLATE template0 OWNER synapse",
    ):
        steps.psql(root, sql, what=f"remote: {sql[:40]}", socket_dir=REMOTE_SOCKET)
    shown = steps.psql(
        root, "SHOW max_connections", what="the remote max_connections", socket_dir=REMOTE_SOCKET
    )
    root.check(shown == str(max_connections), "the remote server's limit", "set", shown)
    return version


def checksums(root: Root) -> str:
    """Every name under WATCHED with its owner, mode and link target; every file's hash."""
    return root.ok(
        [
            "sh",
            "-c",
            "find \"$@\" -printf '%p %u:%g %m %l\\n' -type f -exec sha256sum {} + | sort",
            "-",
            *WATCHED,
        ],
        what="checksums of the watched files",
    ).output


@pytest.mark.parametrize("suite", SUITES)
def test_remote_budget_refused(make_root, debs, suite):
    """A remote server whose max_connections holds one process's pool but not three:
    the client preset is refused with the numbers, in a line or two, and nothing is
    written; the same answers with `none` then configure."""
    root = make_root(suite, layer="synapse")  # Synapse runs on SQLite before us
    remote_cluster(root, MAX_CONNECTIONS)
    root.ok(
        ["apt-get", "install", "-y", "-q", "redis-server"],
        what="installing Debian's redis-server (offline)",
        env=NONINTERACTIVE,
    )
    steps.preseed(
        root,
        db_host=DB_ADDR,
        db_password=REMOTE_PASSWORD,
        db_sslmode="prefer",
        workers="client",
        client_workers="1",
    )
    before = checksums(root)
    out = steps.apt_install(root, debs["current"], ok=False, what="install with the client preset")
    root.check(
        "Traceback" not in out.output, "a message, not a traceback", "no traceback", out.tail(25)
    )
    # The helper's error is one line, said once (debconf's noninteractive frontend also
    # shows it, wrapped, as the setup-error note: that is not the error line).
    text = out.output.replace("\r\n", "\n")
    lines = re.findall(r"^matrix-synapse-setup: error: .*$", text, re.M)
    line = lines[0] if lines else ""
    root.check(
        len(lines) == 1
        and "max_connections" in line
        and f"max_connections {MAX_CONNECTIONS}" in line
        and re.search(r"\b30\b", line) is not None,
        "the refusal is one line naming max_connections, its value and what the pools need",
        f"matrix-synapse-setup: error: ... max_connections {MAX_CONNECTIONS} ... 30 ...",
        out.tail(25),
    )
    status = root.ok(
        ["dpkg-query", "-W", "-f", "${db:Status-Abbrev}", PKG], what="package status"
    ).output.strip()
    root.check(status in ("iF", "iU"), "the package is left unconfigured", "iF or iU", status)
    for path in (WORKERS_SNIPPET, WORKERS_DIR, SNIPPET, REDIS_CONF):
        root.check(not root.exists(path), "nothing is written", f"{path} absent", "present")
    after = checksums(root)
    root.check(after == before, "nothing is written (checksums)", before, after)

    # The same server holds one process's pool: `none` configures.
    steps.preseed(root, db_password=REMOTE_PASSWORD, workers="none")
    root.ok(["dpkg", "--configure", "-a"], what="configure with workers none", env=NONINTERACTIVE)
    steps.check_snippet(root, password=REMOTE_PASSWORD, group=SYNAPSE_GROUP, host=DB_ADDR)
    root.check(not root.exists(WORKERS_SNIPPET), "no workers with none", "absent", "present")


@pytest.mark.parametrize("suite", SUITES)
def test_workers_wait_for_synapse(make_root, debs, suite):
    """Installed before Synapse, with the client preset: the workers wait for Synapse (the
    shared snippet must repeat listeners that do not exist yet), and nothing fails; when
    Synapse's package arrives, our trigger on its unit sets them up: the main process
    (with its own listeners) and both workers run, the client worker answers, and a
    client chats."""
    root = make_root(suite, postgresql=True, booted=True)
    root.ok(
        ["apt-get", "install", "-y", "-q", "redis-server"],
        what="installing Debian's redis-server (offline)",
        env=NONINTERACTIVE,
    )
    steps.preseed(root, workers="client", client_workers="1")
    first = steps.apt_install(root, debs["current"], what="apt install before Synapse")
    root.check(
        "its workers are set up when it is" in first.output,
        "the install says the workers wait for Synapse",
        "Synapse is not installed yet ...: its workers are set up when it is.",
        first.tail(),
    )
    # The shared snippet repeats Synapse's listeners, which do not exist yet: nothing of
    # the workers is written (a snippet without them would leave Synapse deaf).
    root.check(not root.exists(WORKERS_SNIPPET), "no shared snippet yet", "absent", "present")
    failed = root.run(["systemctl", "--failed", "--plain", "--no-legend"]).output.strip()
    root.check(failed == "", "no unit failed while Synapse is missing", "none", failed)

    steps.apt_install(root, debs["synapse"], what="installing Synapse (stand-in) afterwards")
    steps.synapse_up(root, "the main process answers")
    for unit in (SYNAPSE_UNIT, *map(worker_unit, WORKERS), REDIS_UNIT):
        check_running(root, unit, f"{unit} runs once Synapse is installed")
    for path in SECRETS:
        got = stat(root, path)
        root.check(
            got == f"640 root {SYNAPSE_GROUP}",
            f"{path} is given to Synapse's group when Synapse arrives",
            f"640 root {SYNAPSE_GROUP}",
            got,
        )
    port = client_port(root)
    wait_answers(root, f"http://127.0.0.1:{port}", "the client worker answers the client API")
    # Registration by shared secret is an admin endpoint, which only the main process
    # serves; the client worker's own routing is the journey's.
    steps.judge(
        root,
        "chat",
        "--messages",
        "3",
        what="a client registers, sends and reads back (the event persister writes)",
    )
