#!/usr/bin/python3
"""Synapse's throughput on SQLite, on our PostgreSQL, and with the workers preset, as root.

Each round boots fresh system-test roots (scripts/devtools/harness.BootedRoot, the layers of
scripts/bench_migration.py), one at a time, and measures the real Synapse (the stand-in
.deb, Synapse from PyPI) under the same load through its client-server API
(scripts/synapse_load.py):

a. sqlite: the stand-in alone, on its default SQLite;
b. postgresql, one process: our package first (apt install of the .deb in dist/, preseeded
   password, local cluster), then the stand-in, so Synapse runs on the database and the
   snippet our package made (checked: Synapse's schema and users are in PostgreSQL);
c. client-N, the client preset: as (b), but redis-server and nginx installed first (offline,
   from the root's apt cache), our package preseeded with the `client` workers preset and N
   client workers, the whole target (main, workers, Redis) running, and nginx in front: a
   server block on 127.0.0.1:PROXY_PORT that includes the package's routing file and
   proxies the rest to the main process.  The load goes through nginx.

Once Synapse's background updates are done: register users, a warm-up, then a fixed
number of messages into one room with 8 concurrent senders, then with 1 sender, then the
median of /sync (timeout=0).  It prints msg/s per round, the ratios of the medians (to
SQLite; the presets also to one process on PostgreSQL, beside the goals), the /sync
latency and where the CPU went (groups of processes, and each systemd unit: the main
process, each worker, Redis, PostgreSQL, nginx; and the load generator), and writes
build/bench-synapse-<suite>.json.  It asserts nothing.  A setup that fails (say, a .deb
without the workers) is reported as such; the others are still measured.

--workers N[,N...] measures the client preset with each count (a fresh root each); the
default is 1; `none` measures no preset.

--variant NAME (repeatable: each one is measured in every round, against the same SQLite)
applies test-only changes inside root (b), Synapse stopped and started again; NAME joins
parts with "+", e.g. `socket+tuned`.  The parts: see VARIANT_HELP below.  The default is
`package`: the package as built, nothing changed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import yaml
from bench_migration import (
    CONFD,
    LOAD_SCRIPT,
    ROOT,
    SYNAPSE_DB,
    Layers,
    LoadProcess,
    in_root_python,
    install_synapse,
    machine,
    say,
    start_synapse,
)

import tasks
from scripts.devtools import harness, roots, steps

SENDERS = 8
USERS = 8
WARMUP_MESSAGES = 200
SYNC_SAMPLES = 20
NOISY = 0.10  # share of the machine's CPU that other work may take during a measurement
MAX_TRIES = 2
BENCH_YAML = f"{CONFD}/zz-bench.yaml"  # test-only: replaces the snippet's database key
SOCKET_DIR = "/var/run/postgresql"
SYNAPSE_LOG = "/var/log/matrix-synapse/homeserver.log"

# The client preset (setup c): the names the package's workers runtime uses.
PRESET = "client"
WORKERS_SNIPPET = f"{CONFD}/workers.yaml"
WORKERS_MARKER = "# Workers preset: "  # the snippet's line that says what was chosen
WORKERS_DIR = "/etc/matrix-synapse/workers"
WORKER_TEMPLATE = "/usr/lib/systemd/system/matrix-synapse-worker@.service"
WORKER_UNIT = "matrix-synapse-worker@{name}.service"
TARGET = "matrix-synapse.target"
NGINX_INCLUDE = "/etc/matrix-synapse/nginx-workers.conf"
# The admin's own server block (test-only), on a loopback port of its own.
PROXY_PORT = 8090
PROXY_URL = f"http://127.0.0.1:{PROXY_PORT}"
NGINX_SITE = "/etc/nginx/sites-available/mss-bench"
MAIN_URL = "http://127.0.0.1:8008"
GOAL_VS_ONE_PROCESS = 1.2  # the client preset with 8 senders, against (b)
GOAL_VS_SQLITE = 1.0  # the same, against (a)

# In the root: until URL answers 200 (or TIMEOUT seconds); the start of its body.
WAIT_HTTP_PY = r"""
import sys, time, urllib.request
url, timeout = sys.argv[1], float(sys.argv[2])
deadline = time.monotonic() + timeout
while True:
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            print(reply.read(300).decode("utf-8", "replace"))
            break
    except Exception as exc:
        if time.monotonic() > deadline:
            print(f"no answer from {url} in {timeout:.0f} s: {exc}")
            sys.exit(1)
        time.sleep(0.5)
"""

VARIANT_HELP = """\
package          the package as built (nothing changed)
nossl            snippet's connection with sslmode: disable (TCP to localhost)
socket           host: /var/run/postgresql, password (scram-sha-256): a test-only pg_hba line
                 `local <db> <role> scram-sha-256` above `local all all peer`
peer             host: /var/run/postgresql, no password: `local <db> <role> peer
                 map=synapse` and a pg_ident map matrix-synapse -> <role>
poolMIN-MAX      Synapse's cp_min/cp_max (the package's: 5/10), e.g. pool1-3
tuned            PostgreSQL sized for the machine (shared_buffers = RAM/4, ...: TUNED)
jitoff           jit = off
commitdelay      commit_delay = 1000, commit_siblings = 2
pgss             pg_stat_statements loaded (profiling: the top statements are reported)
"""

# Sized for the machine (the PostgreSQL conf.d file of the `tuned` part); {mb} = RAM in MiB.
TUNED = {
    "shared_buffers": lambda mb: f"{min(mb // 4, 8192)}MB",
    "effective_cache_size": lambda mb: f"{mb * 3 // 4}MB",
    "work_mem": lambda mb: f"{max(4, min(mb // 256, 64))}MB",
    "maintenance_work_mem": lambda mb: f"{max(64, min(mb // 16, 2048))}MB",
    "wal_buffers": lambda mb: "16MB",
    "random_page_cost": lambda mb: "1.1",
    "effective_io_concurrency": lambda mb: "200",
    "checkpoint_completion_target": lambda mb: "0.9",
    "max_wal_size": lambda mb: "4GB",
    "min_wal_size": lambda mb: "1GB",
}

BG_UPDATES_SQLITE = """
import sqlite3, sys
c = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True, timeout=30)
print(c.execute("SELECT count(*) FROM background_updates").fetchone()[0])
"""

# CPU seconds so far, by group of processes in the root (exited processes are not counted),
# by systemd unit (its cgroup's usage: every process it ever had), and the machine's
# busy/total.
CPU_PY = r"""
import json, os
tck = os.sysconf("SC_CLK_TCK")
groups = {"synapse": 0.0, "postgres": 0.0, "redis": 0.0, "nginx": 0.0, "load": 0.0,
          "other": 0.0}
for pid in os.listdir("/proc"):
    if not pid.isdigit():
        continue
    try:
        stat = open(f"/proc/{pid}/stat").read()
        raw = open(f"/proc/{pid}/cmdline", "rb").read()
        cmd = raw.replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        continue
    comm = stat[stat.index("(") + 1 : stat.rindex(")")]
    fields = stat[stat.rindex(")") + 2 :].split()
    cpu = (int(fields[11]) + int(fields[12])) / tck
    if "synapse.app" in cmd:
        group = "synapse"
    elif comm == "postgres" or cmd.startswith("postgres"):
        group = "postgres"
    elif comm.startswith(("redis-server", "valkey-server")):
        group = "redis"
    elif comm == "nginx":
        group = "nginx"
    elif "synapse_load" in cmd:
        group = "load"
    else:
        group = "other"
    groups[group] += cpu
units = {}
for top, dirs, files in os.walk("/sys/fs/cgroup"):
    if top.endswith(".service") and "cpu.stat" in files:
        dirs[:] = []  # the unit's own sub-cgroups are in its usage
        for line in open(os.path.join(top, "cpu.stat")):
            if line.startswith("usage_usec "):
                units[os.path.basename(top)] = int(line.split()[1]) / 1e6
groups["_units"] = units
vals = [int(v) for v in open("/proc/stat").readline().split()[1:]]
groups["_busy"] = (sum(vals) - vals[3] - vals[4]) / tck
groups["_total"] = sum(vals) / tck
print(json.dumps(groups))
"""


# --- variants: test-only changes inside root (b) ----------------------------------------


class Variant:
    """Parts joined by "+"; apply() runs with Synapse installed and stopped."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.parts = [p for p in name.split("+") if p and p != "package"]
        for part in self.parts:
            if part not in ("nossl", "socket", "peer", "tuned", "jitoff", "commitdelay", "pgss"):
                if not re.fullmatch(r"pool\d+-\d+", part):
                    raise SystemExit(f"--variant {name}: unknown part {part!r}\n{VARIANT_HELP}")

    @property
    def pgss(self) -> bool:
        return "pgss" in self.parts

    def apply(self, root: harness.Root) -> list[str]:
        """Change ROOT; what was done, one line each."""
        done: list[str] = []
        snippet = yaml.safe_load(root.read(steps.SNIPPET))
        database = snippet["database"]
        args = dict(database["args"])
        user, dbname = args["user"], args["dbname"]
        pg_conf: dict[str, str] = {}
        hba: list[str] = []
        ident: list[str] = []
        for part in self.parts:
            if part == "nossl":
                args["sslmode"] = "disable"
            elif part in ("socket", "peer"):
                args["host"] = SOCKET_DIR
                args["sslmode"] = "disable"  # no TLS on a Unix socket anyway
                if part == "socket":
                    # The package's passfile says *:*:*:role:password: it serves a socket too.
                    hba.append(f"local {dbname} {user} scram-sha-256")
                else:
                    hba.append(f"local {dbname} {user} peer map=synapse")
                    ident.append(f"synapse matrix-synapse {user}")
                    args.pop("passfile", None)
            elif part.startswith("pool"):
                low, high = part[4:].split("-")
                args["cp_min"], args["cp_max"] = int(low), int(high)
            elif part == "tuned":
                mb = memory_mib()
                pg_conf.update({k: f(mb) for k, f in TUNED.items()})
            elif part == "jitoff":
                pg_conf["jit"] = "off"
            elif part == "commitdelay":
                pg_conf.update(commit_delay="1000", commit_siblings="2")
            elif part == "pgss":
                pg_conf.update(shared_preload_libraries="'pg_stat_statements'")
                pg_conf["pg_stat_statements.track"] = "all"
        if args != database["args"]:
            # The whole database key: a later file's replaces the snippet's.
            text = yaml.safe_dump({"database": {**database, "args": args}}, sort_keys=False)
            root.write(BENCH_YAML, text, 0o644)
            changed = {k: v for k, v in args.items() if database["args"].get(k) != v}
            done.append(f"{BENCH_YAML}: database args {changed}")
        version = cluster_version(root)
        etc = f"/etc/postgresql/{version}/main"
        if hba or ident:
            hba_file = f"{etc}/pg_hba.conf"
            lines = root.read(hba_file).splitlines()
            first = next(i for i, ln in enumerate(lines) if re.match(r"local\s+all\s+all\s", ln))
            lines[first:first] = hba
            root.write(hba_file, "\n".join(lines) + "\n", 0o640)
            root.ok(["chown", "postgres:postgres", hba_file], what="owning pg_hba.conf")
            if ident:
                ident_file = f"{etc}/pg_ident.conf"
                text = root.read(ident_file).rstrip("\n") + "\n" + "\n".join(ident) + "\n"
                root.write(ident_file, text, 0o640)
                root.ok(["chown", "postgres:postgres", ident_file], what="owning pg_ident")
            done.append(f"pg_hba.conf above `local all all peer`: {hba}; pg_ident: {ident}")
        if pg_conf:
            text = "".join(f"{k} = {v}\n" for k, v in pg_conf.items())
            root.write(f"{etc}/conf.d/zz-bench.conf", text, 0o644)
            done.append(f"{etc}/conf.d/zz-bench.conf: {pg_conf}")
        if pg_conf or hba or ident:
            unit = steps.postgresql_unit(root)
            root.ok(["systemctl", "restart", unit], what="restarting PostgreSQL")
            if self.pgss:
                steps.psql(root, "CREATE EXTENSION pg_stat_statements", dbname, what="pgss")
        return done


def memory_mib() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    return 1024


def cluster_version(root: harness.Root) -> str:
    return root.ok(["pg_lsclusters", "-h"], what="listing clusters").output.split()[0]


# --- the client preset (setup c): Redis, nginx, the workers ------------------------------


class SetupFailed(Exception):
    """A setup cannot be measured; the message says why (the other setups go on)."""


def runtime_missing(deb: Path) -> str | None:
    """Why DEB cannot make the client preset (None: it has what the preset needs): its
    debconf questions and its worker unit, read from the .deb on the host."""
    templates = subprocess.run(
        ["dpkg-deb", "--info", str(deb), "templates"], capture_output=True, text=True
    ).stdout
    questions = [f"{steps.PKG}/workers", f"{steps.PKG}/client-workers"]
    lacking = [q for q in questions if f"Template: {q}\n" not in templates]
    contents = subprocess.run(
        ["dpkg-deb", "--contents", str(deb)], capture_output=True, text=True
    ).stdout
    if f".{WORKER_TEMPLATE}\n" not in contents:
        lacking.append(WORKER_TEMPLATE)
    if not lacking:
        return None
    return (
        f"the {PRESET} preset needs the workers runtime, which {deb.name} lacks "
        f"(no {', '.join(lacking)}): build a .deb that has it (`invoke build`), "
        "or measure without the preset (--workers none)"
    )


def in_root_wait_http(root: harness.Root, url: str, what: str, timeout: float = 90) -> str:
    """URL's answer (200) from inside the root, waiting up to TIMEOUT seconds for it."""
    result = root.run(["python3", "-c", WAIT_HTTP_PY, url, str(timeout)])
    if result.code:
        raise SetupFailed(f"{what}: {result.output.strip()}")
    return result.output.strip()


def install_redis_nginx(root: harness.Root) -> dict:
    """redis-server and nginx from the root's apt cache (offline), as an admin installs
    them for the preset; their versions."""
    root.ok(
        ["apt-get", "install", "-y", "-q", "redis-server", "nginx"],
        what="installing redis-server and nginx (offline, from the root's apt cache)",
        env=steps.NONINTERACTIVE,
    )
    show = ["dpkg-query", "-W", "-f", "${Version}"]
    return {
        "redis_server": root.ok([*show, "redis-server"], what="redis version").output.strip(),
        "nginx": root.ok([*show, "nginx"], what="nginx version").output.strip(),
    }


def nginx_site(include: str | None) -> str:
    """The admin's server block, as Synapse's docs/reverse_proxy.md has it, on its own
    loopback port; INCLUDE (the package's routing to the workers) inside it."""
    routing = f"    include {include};\n" if include else ""
    return (
        "# Test-only (scripts/bench_synapse.py): an admin's server block in front of Synapse.\n"
        "server {\n"
        f"    listen 127.0.0.1:{PROXY_PORT};\n"
        "    server_name mss.test;\n"
        "    client_max_body_size 50M;\n"
        f"{routing}"
        "    location / {\n"
        f"        proxy_pass {MAIN_URL};\n"
        "        proxy_http_version 1.1;\n"
        "        proxy_set_header X-Forwarded-For $remote_addr;\n"
        "        proxy_set_header X-Forwarded-Proto $scheme;\n"
        "        proxy_set_header Host $host;\n"
        "    }\n"
        "}\n"
    )


def configure_nginx(root: harness.Root, include: str | None = NGINX_INCLUDE) -> None:
    """nginx serves the server block on PROXY_PORT (started, enabled); Synapse's main
    process answers through it (its admin API, which no worker serves)."""
    root.write(NGINX_SITE, nginx_site(include))
    enabled = f"/etc/nginx/sites-enabled/{Path(NGINX_SITE).name}"
    root.ok(["ln", "-sf", NGINX_SITE, enabled], what="enabling the server block")
    test = root.run(["nginx", "-t"])
    if test.code:
        raise SetupFailed(f"nginx refuses its configuration (nginx -t):\n{test.output.strip()}")
    started = root.run(["systemctl", "enable", "--now", "nginx.service"])
    restarted = root.run(["systemctl", "reload-or-restart", "nginx.service"])
    if started.code or restarted.code:
        status = root.run(["systemctl", "status", "--no-pager", "-n", "20", "nginx"]).output
        raise SetupFailed(f"nginx does not start:\n{status}")
    in_root_wait_http(
        root,
        f"{PROXY_URL}/_synapse/admin/v1/register",
        "Synapse's main process through nginx (GET /_synapse/admin/v1/register)",
    )


def preseed_workers(root: harness.Root, count: int) -> None:
    lines = (
        f"{steps.PKG} {steps.PKG}/workers select {PRESET}\n"
        f"{steps.PKG} {steps.PKG}/client-workers string {count}\n"
    )
    root.ok(["debconf-set-selections"], input=lines, what="preseeding the workers preset")


def check_preset_files(root: harness.Root, count: int) -> None:
    """Our .deb, preseeded with the preset, wrote its files: the first place where the
    preset needs the workers runtime."""
    missing = [p for p in (WORKERS_SNIPPET, WORKER_TEMPLATE, NGINX_INCLUDE) if not root.exists(p)]
    if missing:
        raise SetupFailed(
            f"our .deb, preseeded with workers={PRESET} and {count} client workers, made no "
            f"{', '.join(missing)}: the workers runtime is missing from this build"
        )
    header = f"{WORKERS_MARKER}{PRESET} {count}"
    lines = root.read(WORKERS_SNIPPET).splitlines()
    if header not in lines:
        said = [ln for ln in lines if ln.startswith(WORKERS_MARKER)]
        raise SetupFailed(f"{WORKERS_SNIPPET} says {said or 'no preset'}, not {header!r}")


def worker_ports(root: harness.Root) -> dict[str, list[int]]:
    """Each worker's HTTP listener ports, from its file in WORKERS_DIR."""
    names = root.ok(["ls", "-1", WORKERS_DIR], what=f"listing {WORKERS_DIR}").output.split()
    ports: dict[str, list[int]] = {}
    for name in sorted(n.removesuffix(".yaml") for n in names if n.endswith(".yaml")):
        config = yaml.safe_load(root.read(f"{WORKERS_DIR}/{name}.yaml")) or {}
        listeners = config.get("worker_listeners") or []
        ports[name] = [int(lis["port"]) for lis in listeners if lis.get("port")]
    return ports


def start_preset(root: harness.Root, count: int) -> dict:
    """Every unit of the target running (the main process, each worker, Redis), each
    worker answering on its listeners: the units, each worker's ports."""
    ports = worker_ports(root)
    expected = {f"{PRESET}{i}" for i in range(1, count + 1)} | {"events1"}
    if not expected <= set(ports):
        raise SetupFailed(f"{WORKERS_DIR} has {sorted(ports)}, not every one of {sorted(expected)}")
    # A worker that started before Synapse's own package was there may have given up.
    root.run(["systemctl", "reset-failed"])
    restart = root.run(["systemctl", "restart", TARGET])
    units = [WORKER_UNIT.format(name=name) for name in sorted(ports)]
    listed = root.run(
        ["systemctl", "list-units", "--all", "--plain", "--no-legend", "redis-server@*",
         "valkey-server@*"]
    ).output  # fmt: skip
    # Only the servers installed: the worker unit orders itself after both kinds, so the
    # other one is listed too, "not-found".
    redis = [
        fields[0]
        for fields in map(str.split, listed.splitlines())
        if len(fields) > 1 and fields[1] == "loaded"
    ]
    for unit in [steps.SYNAPSE_UNIT, *units, *redis]:
        state = root.run(["systemctl", "is-active", unit]).output.strip()
        if restart.code or state != "active":
            status = root.run(["systemctl", "status", "--no-pager", "-n", "25", unit]).output
            raise SetupFailed(
                f"after `systemctl restart {TARGET}` (exit {restart.code}), {unit} is "
                f"{state}:\n{status}"
            )
    if not redis:
        raise SetupFailed("no Redis instance (redis-server@*, valkey-server@*) under systemd")
    steps.synapse_up(root, "Synapse's main process answers after the target's restart")
    for name, listening in ports.items():
        for port in listening:
            in_root_wait_http(root, f"http://127.0.0.1:{port}/health", f"worker {name}")
    return {"units": [steps.SYNAPSE_UNIT, *units, *redis], "worker_ports": ports}


# --- one measurement: one booted root ---------------------------------------------------


def pending_updates(root: harness.Root, kind: str) -> int:
    if kind == "sqlite":
        out = in_root_python(root, BG_UPDATES_SQLITE, SYNAPSE_DB, what="background updates")
    else:
        out = steps.psql(
            root, "SELECT count(*) FROM background_updates", "synapse", what="bg updates"
        )
    return int(out)


def wait_updates(root: harness.Root, kind: str, timeout: float = 900) -> float:
    started = time.monotonic()
    while pending_updates(root, kind):
        if time.monotonic() - started > timeout:
            raise SystemExit(f"{kind}: background updates still pending after {timeout} s")
        time.sleep(2)
    return time.monotonic() - started


def cpu(root: harness.Root) -> dict:
    return json.loads(in_root_python(root, CPU_PY, what="CPU times"))


def load(root: harness.Root, messages: int, senders: int, sync: int = 0, server: str = "") -> dict:
    """The load from inside the root, to SERVER (default: Synapse's main process)."""
    spec = {
        "users": USERS,
        "rooms": 1,
        "messages": messages,
        "senders": senders,
        "receipt-every": 100,
        "sync-samples": sync,
    }
    if server:
        spec["server"] = server
    result = LoadProcess(root, "bench", spec).result(timeout=3600)
    if "error" in result or result.get("errors"):
        raise SystemExit(f"the load failed: {result}")
    return result


def measured_load(
    root: harness.Root, messages: int, senders: int, sync: int = 0, server: str = ""
) -> dict:
    before = cpu(root)
    result = load(root, messages, senders, sync, server)
    after = cpu(root)
    units_before, units_after = before.pop("_units"), after.pop("_units")
    delta = {k: round(after[k] - before[k], 2) for k in before}
    delta["load"] = result.get("cpu_seconds", 0.0)
    # CPU used outside this root meanwhile (other work on the machine): noise.
    ours = sum(delta[k] for k in ("synapse", "postgres", "redis", "nginx", "load", "other"))
    delta["foreign"] = round(max(0.0, delta["_busy"] - ours), 2)
    wall = delta.pop("_total") / (os.cpu_count() or 1)
    delta["wall"] = round(wall, 2)
    # A unit started meanwhile counts from zero; one that did nothing is left out.
    used = {u: round(v - units_before.get(u, 0.0), 2) for u, v in units_after.items()}
    delta["units"] = {u: v for u, v in sorted(used.items()) if v > 0}
    result["cpu"] = delta
    return result


def quiet_load(
    root: harness.Root, messages: int, senders: int, sync: int = 0, server: str = ""
) -> dict:
    """measured_load, again (at most MAX_TRIES in all) while other work on the machine took
    more than NOISY of its CPU; the quietest try, the others in "noisy_tries"."""
    tries = []
    for _ in range(MAX_TRIES):
        result = measured_load(root, messages, senders, sync, server)
        tries.append(result)
        share = result["cpu"]["foreign"] / ((os.cpu_count() or 1) * result["cpu"]["wall"])
        if share <= NOISY:
            break
        say(f"other work took {100 * share:.0f}% of the machine's CPU meanwhile: again")
    best = min(tries, key=lambda r: r["cpu"]["foreign"] / r["cpu"]["wall"])
    best["noisy_tries"] = [
        {"messages_per_second": r["messages_per_second"], "cpu": r["cpu"]}
        for r in tries
        if r is not best
    ]
    return best


def synapse_log_facts(root: harness.Root) -> dict:
    """Counts in Synapse's log: retried transactions (serialization failures), errors."""
    script = (
        f"grep -c 'could not serialize' {SYNAPSE_LOG} || true; "
        f"grep -c ' - ERROR - ' {SYNAPSE_LOG} || true; "
        f"grep -c 'Slow' {SYNAPSE_LOG} || true"
    )
    out = root.run(script).output.split()
    names = ("serialization_failures", "errors", "slow")
    return {k: int(v) for k, v in zip(names, out, strict=False) if v.isdigit()}


def pg_facts(root: harness.Root, variant: Variant) -> dict:
    facts: dict = {}
    row = steps.psql(
        root,
        "SELECT xact_commit, xact_rollback, deadlocks, blks_hit, blks_read "
        "FROM pg_stat_database WHERE datname = 'synapse'",
        what="pg_stat_database",
    )
    keys = ("xact_commit", "xact_rollback", "deadlocks", "blks_hit", "blks_read")
    facts.update(zip(keys, map(int, row.split("|")), strict=True))
    facts["ssl_connections"] = int(
        steps.psql(
            root,
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) "
            "WHERE s.ssl AND a.datname = 'synapse'",
            what="TLS connections",
        )
    )
    facts["connections"] = int(
        steps.psql(
            root,
            "SELECT count(*) FROM pg_stat_activity WHERE datname = 'synapse'",
            what="connections",
        )
    )
    if variant.pgss:
        top = steps.psql(
            root,
            "SELECT calls, round(total_exec_time::numeric, 1), "
            "round(mean_exec_time::numeric, 3), left(regexp_replace(query, '\\s+', ' ', 'g'), 110) "
            "FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 15",
            "synapse",
            what="pg_stat_statements",
        )
        total = steps.psql(
            root,
            "SELECT sum(calls), round(sum(total_exec_time)::numeric, 1) FROM pg_stat_statements",
            "synapse",
            what="pg_stat_statements total",
        )
        facts["pgss_total_calls_ms"] = total
        facts["pgss_top"] = top.splitlines()
    return facts


class Setup:
    """What one root measures: sqlite, postgresql (one process, with a variant), or the
    client preset with COUNT client workers."""

    def __init__(self, kind: str, variant: Variant | None = None, count: int = 0) -> None:
        self.kind = kind
        self.variant = variant or Variant("package")
        self.count = count

    @property
    def key(self) -> str:
        if self.kind == "sqlite":
            return "sqlite"
        if self.kind == PRESET:
            return f"{PRESET}-{self.count}"
        return self.variant.name


def measure(layers: Layers, setup: Setup, name: str, args) -> dict:
    root = layers.booted(name)
    kind, variant = setup.kind, setup.variant
    on_pg = kind != "sqlite"
    server = PROXY_URL if kind == PRESET else ""
    try:
        info: dict = {"kind": kind, "variant": variant.name if kind == "postgresql" else kind}
        if kind == PRESET:
            info["workers"] = setup.count
            # As on an admin's machine: maintainer scripts start what they install (the
            # roots' policy-rc.d allows only the services the system tests need).
            root.ok(["rm", "-f", "/usr/sbin/policy-rc.d"], what="removing policy-rc.d")
            info.update(install_redis_nginx(root))
        if on_pg:
            steps.preseed(root, db_password=secrets.token_hex(16))
            if kind == PRESET:
                preseed_workers(root, setup.count)
            steps.apt_install(root, layers.debs[0], what="installing our .deb")
            info["package"] = root.ok(
                ["dpkg-query", "-W", "-f", "${Version}", steps.PKG], what="package version"
            ).output.strip()
            info["postgresql"] = cluster_version(root)
        install_synapse(root)
        if kind == PRESET:
            if not root.exists(WORKERS_SNIPPET):
                # Our package came before Synapse's (as in setup b): its files may wait for
                # Synapse's homeserver.yaml, whose listeners the shared snippet copies.
                info["reconfigured"] = True
                root.ok(
                    ["dpkg-reconfigure", "-fnoninteractive", steps.PKG],
                    what="dpkg-reconfigure with Synapse installed",
                    env=steps.NONINTERACTIVE,
                )
            check_preset_files(root, setup.count)
        if kind == "postgresql" and variant.parts:
            root.ok(["systemctl", "stop", "matrix-synapse.service"], what="stopping Synapse")
            info["applied"] = variant.apply(root)
            start_synapse(root, f"Synapse starts with variant {variant.name}")
        if kind == PRESET:
            info.update(start_preset(root, setup.count))
            configure_nginx(root)
            info["server"] = server
        root.put_file(ROOT / "scripts" / "synapse_load.py", LOAD_SCRIPT, 0o755)
        info["updates_wait"] = round(wait_updates(root, "postgresql" if on_pg else kind), 1)
        load(root, WARMUP_MESSAGES, SENDERS, server=server)  # registers the users; a warm-up
        if on_pg:
            steps.synapse_on_postgresql(root)
            if variant.pgss:
                steps.psql(root, "SELECT pg_stat_statements_reset()", "synapse", what="reset")
        info["many"] = quiet_load(root, args.messages, SENDERS, server=server)
        say(f"{name}: {SENDERS} senders {info['many']['messages_per_second']} msg/s, "
            f"CPU {info['many']['cpu']}")  # fmt: skip
        if on_pg:
            info["pg"] = pg_facts(root, variant)
        if args.single_messages:
            info["one"] = quiet_load(root, args.single_messages, 1, SYNC_SAMPLES, server)
            say(f"{name}: 1 sender {info['one']['messages_per_second']} msg/s, "
                f"/sync {info['one'].get('sync_ms_median')} ms")  # fmt: skip
        info["log"] = synapse_log_facts(root)
        return info
    finally:
        root.stop()


# --- the report -----------------------------------------------------------------------------


def median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def rate(m: dict, which: str) -> float | None:
    return m.get(which, {}).get("messages_per_second")


def unit_label(unit: str) -> str:
    """How the report names a systemd unit's processes."""
    if unit == steps.SYNAPSE_UNIT:
        return "main"
    worker = re.fullmatch(r"matrix-synapse-worker@(.+)\.service", unit)
    if worker:
        return worker[1]
    for prefix, label in (("postgresql", "postgresql"), ("redis-server", "redis"),
                          ("valkey-server", "redis"), ("nginx", "nginx")):  # fmt: skip
        if unit.startswith(prefix):
            return label
    return "other units"


def label_order(label: str) -> tuple:
    fixed = ["main", "redis", "postgresql", "nginx", "other units", "load", "foreign"]
    return (fixed.index(label) if label in fixed else 0.5, label)


def cpu_by_process(many: dict) -> dict[str, float]:
    """CPU seconds per 1000 messages of one measurement, by process (systemd unit), the
    load generator and the CPU other work took meanwhile."""
    k = 1000 / many["messages"]
    per: dict[str, float] = {}
    for unit, seconds in many["cpu"].get("units", {}).items():
        label = unit_label(unit)
        per[label] = per.get(label, 0.0) + seconds * k
    per["load"] = many["cpu"]["load"] * k
    per["foreign"] = many["cpu"]["foreign"] * k
    return {label: per[label] for label in sorted(per, key=label_order)}


def measured(r: dict, name: str) -> dict | None:
    """A round's measurement of setup NAME, None if it failed or is missing."""
    m = r.get(name)
    return m if m and "error" not in m and "many" in m else None


def summarize(data: dict) -> dict:
    """Medians over the rounds, the ratios, the goals and the CPU by process, per setup."""
    rounds = data["rounds"]
    names = data["setups"]
    one_process = next((v for v in data["variants"] if v == "package"), None)
    one_process = one_process or (data["variants"][0] if data["variants"] else None)
    summary: dict = {"one_process": one_process, "setups": {}, "goals": {}}
    medians = {}
    for name in names:
        entry: dict = {}
        errors = [r[name]["error"] for r in rounds if "error" in r.get(name, {})]
        if errors:
            entry["errors"] = errors
        for which in ("many", "one"):
            values = [rate(m, which) for r in rounds if (m := measured(r, name))]
            medians[name, which] = median(values)
            entry[which] = {"per_round": values, "median": medians[name, which]}
        cpu: dict[str, list[float]] = {}
        for r in rounds:
            if m := measured(r, name):
                for label, value in cpu_by_process(m["many"]).items():
                    cpu.setdefault(label, []).append(value)
        entry["cpu_per_1000_messages"] = {k: round(median(v), 2) for k, v in cpu.items()}
        summary["setups"][name] = entry

    def ratio(name: str, base: str | None, which: str) -> float | None:
        num, den = medians.get((name, which)), medians.get((base, which)) if base else None
        return round(num / den, 2) if num and den else None

    for name in names:
        for which in ("many", "one"):
            entry = summary["setups"][name][which]
            entry["vs_sqlite"] = ratio(name, "sqlite", which)
            if name.startswith(f"{PRESET}-"):
                entry["vs_one_process"] = ratio(name, one_process, which)
        if name.startswith(f"{PRESET}-"):
            many = summary["setups"][name]["many"]
            goals = {}
            for field, goal in (("vs_one_process", GOAL_VS_ONE_PROCESS),
                                ("vs_sqlite", GOAL_VS_SQLITE)):  # fmt: skip
                value = many[field]
                goals[field] = {"ratio": value, "goal": goal,
                                "met": None if value is None else value >= goal}  # fmt: skip
            summary["goals"][name] = goals
    return summary


def times(value: float | None) -> str:
    return f"{value:.2f} x" if value is not None else "n/a"


def report(data: dict) -> None:
    rounds, summary = data["rounds"], data["summary"]
    names = data["setups"]
    one_process = summary["one_process"]
    presets = [n for n in names if n.startswith(f"{PRESET}-")]
    print()
    print(f"Synapse throughput, {data['date']}")
    print(f"machine: {data['machine']}; root: {data['suite']} (booted); Synapse {data['synapse']}")
    print(f"package: {data.get('package', '?')}; PostgreSQL {data.get('postgresql', '?')}; "
          f"messages: {data['messages']} with {SENDERS} senders, "
          f"{data['single_messages']} with 1 sender")  # fmt: skip
    print("setups: sqlite (Synapse's default); one process on this package's PostgreSQL: "
          f"{', '.join(data['variants']) or 'none'}; the {PRESET} preset (N client workers, "
          f"events1, Redis, nginx in front): "
          f"{', '.join(str(n) for n in data['workers']) or 'not measured'}")  # fmt: skip
    for name in names:
        for number, r in enumerate(rounds, 1):
            if "error" in r.get(name, {}):
                first = r[name]["error"].strip().splitlines()
                print(f"\n{name}, round {number}: FAILED: {first[0] if first else '?'}")
                for line in first[1:12]:
                    print(f"    {line}")
    for which, label in (("many", f"{SENDERS} senders"), ("one", "1 sender")):
        if which == "one" and not data["single_messages"]:
            continue
        extra = f", to one process ({one_process})" if presets and one_process else ""
        print(f"\n{label}: msg/s per round, median, ratio to SQLite's median{extra}")
        for name in names:
            entry = summary["setups"][name][which]
            if not entry["per_round"]:
                print(f"  {name:<26} not measured (failed)")
                continue
            shown = "  ".join(f"{v:6.1f}" if v else "   n/a" for v in entry["per_round"])
            line = (f"  {name:<26} {shown}   median {entry['median'] or 0:6.1f}   "
                    f"{times(entry['vs_sqlite'])}")  # fmt: skip
            if "vs_one_process" in entry:
                line += f"   {times(entry['vs_one_process'])}"
            print(line)
    if presets:
        print(f"\ngoals with {SENDERS} senders: the {PRESET} preset >= "
              f"{GOAL_VS_ONE_PROCESS} x one process on PostgreSQL ({one_process}), "
              f">= {GOAL_VS_SQLITE} x SQLite")  # fmt: skip
        for name in presets:
            parts = []
            for field, what in (("vs_one_process", "one process"), ("vs_sqlite", "SQLite")):
                goal = summary["goals"][name][field]
                met = {True: "met", False: "NOT met", None: "n/a"}[goal["met"]]
                parts.append(f"{times(goal['ratio'])} {what} (goal {goal['goal']}: {met})")
            print(f"  {name:<26} " + "; ".join(parts))
    if data["single_messages"]:
        print("\n/sync (timeout=0) median ms per round")
        for name in names:
            values = [m["one"].get("sync_ms_median") for r in rounds
                      if (m := measured(r, name)) and "one" in m]  # fmt: skip
            shown = "  ".join(f"{v or 0:6.1f}" for v in values)
            print(f"  {name:<26} {shown or 'n/a'}")
    print(f"\nCPU seconds per 1000 messages ({SENDERS} senders; median over rounds), "
          "machine busy %")  # fmt: skip
    for name in names:
        per: dict[str, list[float]] = {}
        for r in rounds:
            if not (m := measured(r, name)):
                continue
            many = m["many"]
            k = 1000 / many["messages"]
            for group in ("synapse", "postgres", "redis", "nginx", "load", "foreign", "_busy"):
                per.setdefault(group, []).append(many["cpu"].get(group, 0.0) * k)
            per.setdefault("busy%", []).append(
                100 * many["cpu"]["_busy"] / ((os.cpu_count() or 1) * many["cpu"]["wall"])
            )
        cols = "  ".join(f"{g.strip('_')} {median(v):5.1f}" for g, v in per.items())
        print(f"  {name:<26} {cols or 'n/a'}")
    print(f"\nCPU seconds per 1000 messages by process (systemd unit; {SENDERS} senders, "
          "median over rounds)")  # fmt: skip
    for name in names:
        cpu = summary["setups"][name]["cpu_per_1000_messages"]
        shown = "  ".join(f"{label} {value:.1f}" for label, value in cpu.items() if value >= 0.05)
        print(f"  {name:<26} {shown or 'n/a'}")
    connections = {n: m["pg"].get("connections") for n in names
                   if (m := measured(rounds[-1], n)) and "pg" in m}  # fmt: skip
    if connections:
        shown = ", ".join(f"{n} {c}" for n, c in connections.items())
        print(f"\nPostgreSQL connections to synapse after {SENDERS} senders (last round): {shown}")
    for name in data["variants"]:
        r = measured(rounds[-1], name) or {}
        if "pgss_top" in r.get("pg", {}):
            print(f"\npg_stat_statements ({name}, last round, {SENDERS} senders): calls|ms total")
            print(f"  {r['pg']['pgss_total_calls_ms']}")
            for line in r["pg"]["pgss_top"]:
                print(f"  {line}")


def parse_workers(text: str) -> list[int]:
    """--workers: "none", or client worker counts separated by commas."""
    if text.strip().lower() in ("none", "0", ""):
        return []
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise SystemExit(f"--workers {text}: counts separated by commas (1,2,3), or none") from None
    if any(count < 1 for count in counts):
        raise SystemExit(f"--workers {text}: each count is at least 1")
    return list(dict.fromkeys(counts))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="variant parts:\n" + VARIANT_HELP,
    )
    parser.add_argument("--suite", default="trixie", choices=roots.SUITES)
    parser.add_argument("--rounds", type=int, default=2, help="rounds (default 2)")
    parser.add_argument(
        "--messages", type=int, default=3000, help=f"messages with {SENDERS} senders (3000)"
    )
    parser.add_argument(
        "--single-messages",
        type=int,
        default=None,
        help="messages with 1 sender (default: half of --messages; 0: skip)",
    )
    parser.add_argument(
        "--variant",
        action="append",
        help="what to measure on PostgreSQL with one process (repeatable; default: package)",
    )
    parser.add_argument(
        "--workers",
        default="1",
        metavar="N[,N...]",
        help=f"the {PRESET} preset with N client workers, each N in a fresh root (default 1; "
        "e.g. 1,2,3 for the curve; none: no preset)",
    )
    args = parser.parse_args()
    if args.single_messages is None:
        args.single_messages = args.messages // 2
    variants = [Variant(v) for v in (args.variant or ["package"])]
    counts = parse_workers(args.workers)
    if os.geteuid() != 0:
        raise SystemExit("run as root (booted roots: unshare, nsenter, cgroups)")
    if not tasks.deb_path().exists():
        raise SystemExit(f"{tasks.deb_path()} is missing: run `invoke build`")
    workdir = Path(tempfile.mkdtemp(prefix="mss-bench-synapse-"))
    layers = None
    data: dict = {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "machine": machine(),
        "suite": args.suite,
        "messages": args.messages,
        "single_messages": args.single_messages,
        "senders": SENDERS,
        "variants": [v.name for v in variants],
        "workers": counts,
        "rounds": [],
    }
    setups = [Setup("sqlite")]
    setups += [Setup("postgresql", variant) for variant in variants]
    setups += [Setup(PRESET, count=count) for count in counts]
    data["setups"] = [setup.key for setup in setups]
    out = ROOT / "build" / f"bench-synapse-{args.suite}.json"
    try:
        layers = Layers(args.suite, workdir)
        # One package for the whole run, even if dist/ is rebuilt meanwhile.
        deb = workdir / layers.debs[0].name
        shutil.copyfile(layers.debs[0], deb)
        layers.debs[0] = deb
        data["deb"] = deb.name
        data["synapse"] = layers.synapse_facts()[0]
        missing = runtime_missing(deb) if counts else None
        if missing:
            say(f"the {PRESET} preset will not be measured: {missing}")
        for number in range(1, args.rounds + 1):
            this: dict = {}
            for setup in setups:
                key = setup.key
                if setup.kind == PRESET and missing:
                    say(f"round {number}: {key}: not measured: {missing}")
                    this[key] = {"kind": PRESET, "workers": setup.count, "error": missing}
                    continue
                say(f"round {number}: {key} ...")
                started = time.monotonic()
                try:
                    this[key] = measure(layers, setup, f"bench-synapse-{number}", args)
                except (SetupFailed, AssertionError, SystemExit, subprocess.SubprocessError) as exc:
                    # The setup's own message (a root's step says what it expected and saw).
                    text = str(exc) or type(exc).__name__
                    say(f"round {number}: {key} FAILED: {text.strip().splitlines()[0]}")
                    this[key] = {"kind": setup.kind, "error": text}
                    if setup.kind == PRESET:
                        this[key]["workers"] = setup.count
                this[key]["seconds"] = round(time.monotonic() - started, 1)
                if "package" in this[key]:
                    data["package"] = this[key]["package"]
                    data["postgresql"] = this[key]["postgresql"]
            data["rounds"].append(this)
            data["summary"] = summarize(data)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(data, indent=1) + "\n")
        report(data)
        print(f"\nJSON: {out.relative_to(ROOT)}")
    finally:
        if layers is not None:
            layers.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
