#!/usr/bin/python3
"""Benchmark of the SQLite -> PostgreSQL migration; `invoke bench`, as root.

In a booted system-test root (scripts/devtools/harness.BootedRoot, with PostgreSQL and the
Synapse stand-in, which is the real Synapse from PyPI), Synapse serves a homeserver.db of
at least 50,000 events that a real Synapse made through its client API (scripts/
synapse_load.py).  One round measures, on the same file:

a. synapse_port_db alone: a snapshot ported into a fresh database (wall time, rows/s);
b. ours: `matrix-synapse-setup migrate` while a light load sends messages, so that the
   second phase has a delta to port: whole time, phase 1, phase 2, the downtime.

It prints a table with the goals beside the numbers (downtime under 5 s; whole time at most
1.2 x the port tool alone); it asserts nothing.

The data set is cached in build/cache/bench-sqlite-<suite>-<key>.tar.zst (<key> hashes the
Synapse pin, the load and DATA_VERSION): Synapse's homeserver.db (stopped cleanly), its
signing key and, when generated here, its configuration.  Generating it takes about 25
minutes (the load sends ~35 messages/s); --seed-from DIR makes it from an existing
directory instead (homeserver.db + mss.test.signing.key of the same Synapse version).
Each round's outputs (migrate's, the port logs) are kept in build/bench-migration/.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import tasks  # noqa: E402
from scripts.devtools import harness, roots, steps  # noqa: E402
from scripts.devtools.layers import chain as layer_chain  # noqa: E402

DATA_VERSION = "1"  # bump when the way the data set is made changes
SERVER_NAME = "mss.test"  # the stand-in's
LOAD = {"users": 50, "rooms": 20, "messages": 50_000, "senders": 8}
DELTA_LOAD = {"users": 2, "rooms": 1, "messages": 300, "senders": 1}
MIN_EVENTS = 50_000
GOAL_DOWNTIME = 5.0  # seconds, plus the final delta
GOAL_RATIO = 1.2  # our whole time / synapse_port_db alone

SYNAPSE_DB = "/var/lib/matrix-synapse/homeserver.db"
ETC = "/etc/matrix-synapse"
SIGNING_KEY = f"{ETC}/{SERVER_NAME}.signing.key"
CONFD = f"{ETC}/conf.d"
SECRET_FILE = f"{CONFD}/zz-test-registration.yaml"
FAST_UPDATES = "background_updates: {sleep_duration_ms: 1, min_batch_size: 100}\n"
VENV = "/opt/venvs/matrix-synapse"
PORT_TOOL = f"{VENV}/bin/synapse_port_db"
BENCH_DIR = "/var/lib/mss-bench"  # inside the root
MANIFEST = "var/lib/mss-bench/data.json"  # inside the tarball
LOAD_SCRIPT = f"{harness.HELPERS}/synapse_load.py"
MIGRATE_LOG_DIR = "/var/log/matrix-synapse-setup"
KEEP_DIR = ROOT / "build" / "bench-migration"  # each round's outputs and logs, for a look

# Run inside the root with its python3: rows of every table, events, size.
COUNT_PY = """
import json, os, sqlite3, sys
c = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
tables = [r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
rows = sum(c.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables)
events = c.execute("SELECT count(*) FROM events").fetchone()[0]
print(json.dumps({"rows": rows, "events": events, "tables": len(tables),
                  "size": os.path.getsize(sys.argv[1])}))
"""
# SQLite's online backup API, as migration.snapshot does.
SNAPSHOT_PY = """
import sqlite3, sys
s = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True, timeout=60)
d = sqlite3.connect(sys.argv[2])
s.backup(d, pages=4096)
d.close(); s.close()
"""
CHECKPOINT_PY = """
import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
c.close()
"""
PROGRESS = re.compile(r"^(\w+): \d+% \((\d+)/(\d+)\)$", re.M)  # as migration.PROGRESS_RE


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


# --- the roots: the system tests' layers ------------------------------------------------


class Layers:
    def __init__(self, suite: str, workdir: Path) -> None:
        self.suite = suite
        say(f"the cached {suite} root and its PostgreSQL layer (scripts/devtools/layers.py) ...")
        self.postgresql, self.lower = layer_chain(suite, "postgresql")
        self.debs = [tasks.deb_path(), steps.standin_deb(workdir)]

    def layers(self) -> list[Path]:
        """The overlay's lower layers, top first (a subclass may put more on top)."""
        return [self.postgresql, self.lower]

    def booted(self, name: str) -> harness.BootedRoot:
        """A started booted root with PostgreSQL running, the .debs in harness.DEBS."""
        root = harness.BootedRoot(name, self.suite, self.layers())
        for deb in self.debs:
            root.put_file(deb, f"{harness.DEBS}/{deb.name}")
        root.__enter__()
        try:
            steps.check_cluster_booted(root)
        except BaseException:
            root.stop()
            raise
        return root

    def cleanup(self) -> None:
        """Nothing of the layers to remove: they are cached in build/cache for the next run."""

    def synapse_facts(self) -> tuple[str, int]:
        """(version, schema version) of the root's Synapse, read from the lower layer."""
        site = next((self.lower / VENV.lstrip("/")).glob("lib/python3*/site-packages"))
        dist = next(site.glob("matrix_synapse-*.dist-info"))
        version = dist.name.removeprefix("matrix_synapse-").removesuffix(".dist-info")
        text = (site / "synapse/storage/schema/__init__.py").read_text()
        match = re.search(r"^SCHEMA_VERSION = (\d+)", text, re.M)
        return version, int(match[1]) if match else -1


def install_synapse(root: harness.Root) -> None:
    """The stand-in on SQLite, running; its background updates made fast (test-only, as in
    test_migration.py) so that a fresh database has none pending for long."""
    root.write(f"{CONFD}/zz-test-background-updates.yaml", FAST_UPDATES)
    steps.apt_install(root, f"{harness.DEBS}/{steps.STANDIN_DEB}", what="installing Synapse")
    steps.synapse_up(root, "Synapse (stand-in) starts on SQLite")


def start_synapse(root: harness.Root, what: str) -> None:
    started = root.run(["systemctl", "start", "matrix-synapse.service"])
    if started.code:
        root.fail(what, "systemctl start: exit 0", steps.synapse_log(root), started)
    steps.synapse_up(root, what)


def in_root_python(root: harness.Root, script: str, *args: str, what: str) -> str:
    return root.ok(["python3", "-c", script, *args], what=what).output.strip()


# --- the cached data set ----------------------------------------------------------------


def cache_path(suite: str) -> Path:
    spec = {
        "synapse": roots.SYNAPSE_PIP,
        "load": LOAD,
        "server_name": SERVER_NAME,
        "version": DATA_VERSION,
    }
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    return roots.CACHE / f"bench-sqlite-{suite}-{key}.tar.zst"


def generate_cache(layers: Layers, dest: Path) -> None:
    print(
        f"building the data set {dest.name}: a real Synapse gets {LOAD['messages']:,} messages "
        f"through its client API ({LOAD['users']} users, {LOAD['rooms']} rooms, "
        f"{LOAD['senders']} senders); at ~35 messages/s on 2 cores that takes about 25 "
        "minutes, once (it is cached; --seed-from DIR uses an existing one)",
        flush=True,
    )
    root = layers.booted("bench-data")
    try:
        install_synapse(root)
        root.put_file(ROOT / "scripts" / "synapse_load.py", LOAD_SCRIPT, 0o755)
        load = LoadProcess(root, "load", LOAD)
        load.follow(report_every=60)
        result = load.result()
        say(f"load done: {result}")
        root.ok(["systemctl", "stop", "matrix-synapse.service"], what="stopping Synapse")
        # Synapse checkpoints when it stops; make sure: no -wal is left to pack.
        as_synapse = ["runuser", "-u", "matrix-synapse", "--", "python3", "-c", CHECKPOINT_PY]
        root.ok([*as_synapse, SYNAPSE_DB], what="checkpointing homeserver.db")
        root.ok(f"test ! -s {SYNAPSE_DB}-wal", what="no WAL left after a clean stop")
        manifest = {"source": "generated", "load": LOAD, "result": result}
        root.write(f"/{MANIFEST}", json.dumps(manifest) + "\n")
        paths = [SYNAPSE_DB, f"{ETC}/homeserver.yaml", SIGNING_KEY, CONFD, f"/{MANIFEST}"]
        pack_from_root(root, [p.lstrip("/") for p in paths], dest)
    finally:
        root.stop()


class LoadProcess:
    """synapse_load.py running inside the root; its stderr read by a thread."""

    def __init__(self, root: harness.Root, prefix: str, load: dict) -> None:
        cmd = ["python3", LOAD_SCRIPT, "--secret-file", SECRET_FILE, "--prefix", prefix]
        for name, value in load.items():
            cmd += [f"--{name}", str(value)]
        cmd += ["--max-seconds", "7200"]
        self.proc = subprocess.Popen(
            root.command(cmd),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self.sending = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None  # noqa: S101 - stderr=PIPE
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))
            if " join: " in line or " send: " in line:
                self.sending.set()

    def follow(self, report_every: float) -> None:
        """Until the load ends, its latest progress line that often."""
        shown = 0
        while self.proc.poll() is None:
            time.sleep(report_every)
            if len(self.lines) > shown:
                shown = len(self.lines)
                say(f"load: {self.lines[-1].split('] ', 1)[-1]}")

    def wait_sending(self, timeout: float) -> None:
        """Until the load has its users in their rooms and sends (or TIMEOUT)."""
        self.sending.wait(timeout)

    def result(self, timeout: float | None = None) -> dict:
        self.proc.wait(timeout=timeout)  # its one line of JSON fits in the pipe
        out = self.proc.stdout.read() if self.proc.stdout else ""
        self.thread.join(5)
        last = out.strip().splitlines()[-1] if out.strip() else ""
        try:
            data = json.loads(last)
        except ValueError:
            data = {"error": f"exit {self.proc.returncode}", "stderr": self.lines[-5:]}
        data.pop("room_ids", None)
        return data


def pack_from_root(root: harness.Root, paths: list[str], dest: Path) -> None:
    """tar PATHS (relative to /) inside the root, zstd on the host, into DEST (atomic)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    with open(partial, "wb") as out:
        tar = subprocess.Popen(root.command(["tar", "-C", "/", "-cf", "-", *paths]),
                               stdout=subprocess.PIPE)  # fmt: skip
        zstd = subprocess.run(["zstd", "-q", "-T0", "-c"], stdin=tar.stdout, stdout=out)
        if tar.stdout:
            tar.stdout.close()
        if tar.wait() or zstd.returncode:
            partial.unlink(missing_ok=True)
            raise SystemExit(f"packing {dest.name} failed (tar {tar.returncode})")
    os.replace(partial, dest)


def seed_cache(layers: Layers, seed: Path, dest: Path) -> None:
    """The data set from an existing directory (homeserver.db of a stopped Synapse, its
    signing key): only if its Synapse matches ours and it has enough events."""
    version, schema = layers.synapse_facts()
    db = seed / "homeserver.db"
    key = seed / f"{SERVER_NAME}.signing.key"
    for path in (db, key):
        if not path.is_file():
            raise SystemExit(f"--seed-from {seed}: {path.name} is missing")
    for leftover in ("homeserver.db-wal", "homeserver.db-journal"):
        if (seed / leftover).exists() and (seed / leftover).stat().st_size:
            raise SystemExit(f"--seed-from {seed}: {leftover} is pending (stop Synapse first)")
    config = seed / "homeserver.yaml"
    if config.is_file():
        import yaml

        name = (yaml.safe_load(config.read_text()) or {}).get("server_name")
        if name != SERVER_NAME:
            raise SystemExit(f"--seed-from {seed}: server_name {name!r}, not {SERVER_NAME!r}")
    # Read-only, and nothing written beside it (immutable: no -shm either).
    conn = sqlite3.connect(f"file:{db}?immutable=1", uri=True)
    try:
        events = conn.execute("SELECT count(*) FROM events").fetchone()[0]
        users = conn.execute("SELECT count(*) FROM users").fetchone()[0]
        pending = conn.execute("SELECT count(*) FROM background_updates").fetchone()[0]
        seed_schema = conn.execute("SELECT version FROM schema_version").fetchone()[0]
    finally:
        conn.close()
    if seed_schema != schema:
        raise SystemExit(
            f"--seed-from {seed}: schema version {seed_schema}, Synapse {version} has {schema}"
        )
    if events < MIN_EVENTS or pending:
        raise SystemExit(
            f"--seed-from {seed}: {events} events (need {MIN_EVENTS}), {pending} pending updates"
        )
    say(
        f"seeding {dest.name} from {seed}: {events:,} events, {users} users, schema {schema} "
        f"(Synapse {version}'s)"
    )
    with tempfile.TemporaryDirectory(prefix="bench-seed-", dir=roots.CACHE) as tmp:
        stage = Path(tmp)
        for src, rel in ((db, SYNAPSE_DB), (key, SIGNING_KEY)):
            target = stage / rel.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, target)
        (stage / MANIFEST).parent.mkdir(parents=True, exist_ok=True)
        manifest = {"source": f"seeded from {seed}", "events": events, "synapse": version}
        (stage / MANIFEST).write_text(json.dumps(manifest) + "\n")
        partial = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
        subprocess.run(
            [
                "tar",
                "--zstd",
                "-cf",
                str(partial),
                "--owner=0",
                "--group=0",
                "-C",
                tmp,
                SYNAPSE_DB.lstrip("/"),
                SIGNING_KEY.lstrip("/"),
                MANIFEST,
            ],  # files only: extracting must not change a directory
            check=True,
        )
        os.replace(partial, dest)


def restore(root: harness.Root, tarball: Path) -> dict:
    """Synapse stopped; the cached files in place, owned as the stand-in sets them."""
    root.ok(["systemctl", "stop", "matrix-synapse.service"], what="stopping Synapse")
    zstd = subprocess.Popen(["zstd", "-dcq", str(tarball)], stdout=subprocess.PIPE)
    # Existing directories keep their owner and mode (/, /var/lib/matrix-synapse, ...).
    untar = root.command(["tar", "--no-overwrite-dir", "-xf", "-", "-C", "/"])
    tar = subprocess.run(untar, stdin=zstd.stdout, capture_output=True, text=True, check=False)
    if zstd.stdout:
        zstd.stdout.close()
    if zstd.wait() or tar.returncode:
        raise SystemExit(f"restoring {tarball.name} failed: {tar.stdout}{tar.stderr}")
    root.ok(
        f"rm -f {SYNAPSE_DB}-wal {SYNAPSE_DB}-shm && "
        f"chown matrix-synapse:matrix-synapse {SYNAPSE_DB} && chmod 644 {SYNAPSE_DB} && "
        f"chown matrix-synapse:root {SIGNING_KEY} && chmod 640 {SIGNING_KEY}",
        what="owning the restored files as the stand-in does",
    )
    return json.loads(root.read(f"/{MANIFEST}"))


# --- one round ----------------------------------------------------------------------------


def timed_run(root: harness.Root, argv: list[str] | str, what: str) -> tuple[float, str]:
    started = time.monotonic()
    out = root.ok(argv, what=what, timeout=7200).output
    return time.monotonic() - started, out


def port_alone(root: harness.Root) -> dict:
    """synapse_port_db on a snapshot, into a fresh database: its wall time and the file."""
    root.ok(
        f"install -d -m 700 -o matrix-synapse -g matrix-synapse {BENCH_DIR}",
        what="the bench's directory",
    )
    snap = f"{BENCH_DIR}/alone.db"
    in_root_python(root, SNAPSHOT_PY, SYNAPSE_DB, snap, what="snapshot for the port alone")
    root.ok(["chown", "matrix-synapse:matrix-synapse", snap], what="owning the snapshot")
    facts = json.loads(in_root_python(root, COUNT_PY, snap, what="counting the rows"))
    password = secrets.token_hex(12)  # a throwaway root; only the port tool uses it
    exists = steps.psql(root, "SELECT 1 FROM pg_roles WHERE rolname = 'synapse'", what="role?")
    verb = "ALTER" if exists else "CREATE"
    steps.psql(root, f"{verb} ROLE synapse LOGIN PASSWORD '{password}'", what="role synapse")
    steps.psql(
        root,
        "CREATE DATABASE bench_alone ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' "
        "TEMPLATE template0 OWNER synapse",
        what="database bench_alone",
    )
    import yaml

    config = {
        "server_name": SERVER_NAME,
        "signing_key_path": SIGNING_KEY,
        "media_store_path": f"{BENCH_DIR}/media",
        "report_stats": False,
        "background_updates": {"sleep_enabled": False},  # as migration.port_config
        "database": {
            "name": "psycopg2",
            "args": {
                "host": "localhost",
                "port": 5432,
                "dbname": "bench_alone",
                "user": "synapse",
                "password": password,
            },
        },
    }
    root.write(f"{BENCH_DIR}/port.yaml", yaml.safe_dump(config), mode=0o600)
    root.ok(["chown", "matrix-synapse", f"{BENCH_DIR}/port.yaml"], what="owning port.yaml")
    say(f"synapse_port_db alone: {facts['rows']:,} rows, {facts['events']:,} events ...")
    cmd = (
        f"cd {BENCH_DIR} && runuser -u matrix-synapse -- env HOME={BENCH_DIR} LC_ALL=C.UTF-8 "
        f"{PORT_TOOL} --sqlite-database {snap} --postgres-config {BENCH_DIR}/port.yaml "
        f"--batch-size 5000 >{BENCH_DIR}/alone.log 2>&1"
    )
    took, _ = timed_run(root, cmd, "synapse_port_db alone")
    say(f"synapse_port_db alone: {took:.1f} s")
    # Out of the way of ours: PostgreSQL and the disk hold one copy again.
    steps.psql(root, "DROP DATABASE bench_alone", what="dropping bench_alone")
    root.ok(["rm", "-f", snap], what="removing the snapshot")
    return {**facts, "alone": took}


def ours(root: harness.Root, keep: Path) -> dict:
    """keep-sqlite at install, then `matrix-synapse-setup migrate`; once its first copy
    starts, a light load sends messages, the delta that the second phase ports."""
    steps.preseed(root, sqlite_data="keep-sqlite")
    steps.apt_install(root, tasks.deb_path(), what="installing our .deb (keep-sqlite)")
    say(f"matrix-synapse-setup migrate; {DELTA_LOAD['messages']} messages sent meanwhile ...")
    started = time.monotonic()
    proc = subprocess.Popen(
        root.command(["matrix-synapse-setup", "migrate"]),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines, load = [], None
    assert proc.stdout is not None  # noqa: S101 - stdout=PIPE
    for line in proc.stdout:
        lines.append(line)
        if load is None and "first copy" in line:
            load = LoadProcess(root, "delta", DELTA_LOAD)
    code = proc.wait()
    took = time.monotonic() - started
    out = "".join(lines)
    (keep / "migrate.out").write_text(out)
    if code:
        raise SystemExit(f"matrix-synapse-setup migrate failed (exit {code}):\n{out[-3000:]}")
    say(f"matrix-synapse-setup migrate: {took:.1f} s")
    delta_load: dict = {"error": "not started (no first copy: Synapse not running?)"}
    if load is not None:
        try:
            delta_load = load.result(timeout=600)
        except subprocess.TimeoutExpired:
            load.proc.kill()
            delta_load = {"error": "still running after 600 s"}

    def seconds(pattern: str) -> float | None:
        match = re.search(pattern, out)
        return float(match[1]) if match else None

    logs = root.ok(f"ls -1t {MIGRATE_LOG_DIR}/migrate-*.log", what="the port log").output
    log = root.read(logs.split()[0])
    (keep / "port.log").write_text(log)
    phases = [parse_progress(section) for section in re.split(r"^=== ", log, flags=re.M)[1:]]
    pg_events = steps.psql(root, "SELECT count(*) FROM events", "synapse", what="events in PG")
    return {
        "whole": took,
        "phase1": seconds(r"port while Synapse runs: ok \(([\d.]+) s\)"),
        "phase2": seconds(r"port the rest: ok \(([\d.]+) s\)"),
        "downtime": seconds(r"start Synapse on PostgreSQL: ok \(downtime ([\d.]+) s\)"),
        "phases": phases,
        "pg_events": int(pg_events),
        "load": delta_load,
    }


def parse_progress(section: str) -> dict[str, tuple[int, int, int]]:
    """table -> (first done, last done, total) from the port tool's progress lines: a
    first line below the total means the table was copied in several batches."""
    found: dict[str, tuple[int, int, int]] = {}
    for match in PROGRESS.finditer(section):
        done, total = int(match[2]), int(match[3])
        found[match[1]] = (found.get(match[1], (done,))[0], done, total)
    return found


def one_round(layers: Layers, tarball: Path, number: int) -> dict:
    root = layers.booted(f"bench-migration-{number}")
    try:
        install_synapse(root)
        root.put_file(ROOT / "scripts" / "synapse_load.py", LOAD_SCRIPT, 0o755)
        manifest = restore(root, tarball)
        start_synapse(root, "Synapse starts on the cached homeserver.db")
        keep = KEEP_DIR / f"round-{number}"
        shutil.rmtree(keep, ignore_errors=True)
        keep.mkdir(parents=True)
        result = port_alone(root)
        (keep / "alone.log").write_text(root.read(f"{BENCH_DIR}/alone.log"))
        result.update(ours(root, keep))
        result["manifest"] = manifest
        return result
    finally:
        root.stop()


# --- the report -----------------------------------------------------------------------------


def machine() -> str:
    mem = next(line for line in Path("/proc/meminfo").read_text().splitlines()
               if line.startswith("MemTotal"))  # fmt: skip
    gib = int(mem.split()[1]) / 1024 / 1024
    return f"{os.cpu_count()} CPUs, {gib:.1f} GiB memory, {os.uname().release}"


def fmt(value: float | None, unit: str = "s", digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f} {unit}".rstrip()


def report(results: list[dict], suite: str, version: str) -> None:
    print()
    print(f"Migration benchmark, {time.strftime('%Y-%m-%d %H:%M %Z')}")
    print(f"machine: {machine()}; root: {suite} (booted, namespaces); Synapse {version}")
    print(f"data set: {results[0]['manifest'].get('source')}")
    for i, r in enumerate(results, 1):
        alone, whole = r["alone"], r["whole"]
        ratio = whole / alone if alone else None
        phases = [*r["phases"], {}, {}]
        p1_events = phases[0].get("events", (0, 0, None))[2]
        # The final copy's events, else PostgreSQL's once the load has ended.
        p2_events = phases[1].get("events", (0, 0, r["pg_events"]))[2]
        delta = p2_events - p1_events if p1_events is not None else None
        rows = [
            ("SQLite file", f"{r['rows']:,} rows in {r['tables']} tables, {r['events']:,} events, "
             f"{r['size'] / 1e6:,.1f} MB", ""),
            ("synapse_port_db alone", fmt(alone), ""),
            ("  rows/s", fmt(r["rows"] / alone, "rows/s", 0), ""),
            ("ours: migrate, whole", fmt(whole), f"goal <= {GOAL_RATIO} x alone"),
            ("  rows/s", fmt(r["rows"] / whole, "rows/s", 0), ""),
            ("  phase 1 (Synapse serves)", fmt(r["phase1"]), ""),
            ("  phase 2 (Synapse stopped)", fmt(r["phase2"]), ""),
            ("  downtime", fmt(r["downtime"]), f"goal < {GOAL_DOWNTIME:.0f} s + final delta"),
            ("  final delta", f"{delta} events" if delta is not None else "n/a",
             f"events {p1_events} -> {p2_events}"),
            ("  ratio whole / alone", fmt(ratio, "x", 2), f"goal <= {GOAL_RATIO}"),
        ]  # fmt: skip
        if len(results) > 1:
            print(f"--- round {i}")
        for name, value, goal in rows:
            print(f"{name:<28} {value:<44} {goal}")
        load = r["load"]
        print(
            f"{'light load during migrate':<28} {load.get('messages', '?')} messages, "
            f"{load.get('errors', '?')} errors, {load.get('messages_per_second', '?')} msg/s; "
            f"events in PostgreSQL after: {r['pg_events']:,}"
        )
        # Tables the port tool copies in full again (it TRUNCATEs those that are not in its
        # APPEND_ONLY_TABLES) show several batches in phase 2.
        again = sorted(
            ((t, n) for t, (first, _, n) in phases[1].items() if first < n), key=lambda x: -x[1]
        )
        copied = ", ".join(f"{t} {n:,}" for t, n in again[:6]) or "none"
        print(f"{'phase 2, batched tables':<28} {copied} rows")
        print(f"{'outputs and logs':<28} {(KEEP_DIR / f'round-{i}').relative_to(ROOT)}/")
    if len(results) > 1:
        med = statistics.median
        print(
            f"median of {len(results)}: alone {med(r['alone'] for r in results):.1f} s, "
            f"whole {med(r['whole'] for r in results):.1f} s, downtime "
            f"{med(r['downtime'] or 0 for r in results):.1f} s"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="trixie", choices=roots.SUITES)
    parser.add_argument("--rounds", type=int, default=1, help="measurement rounds (fresh roots)")
    parser.add_argument(
        "--seed-from",
        metavar="DIR",
        help="make the cached data set from DIR (homeserver.db, mss.test.signing.key) "
        "instead of generating it",
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (booted roots: unshare, nsenter, cgroups)")
    if not tasks.deb_path().exists():
        raise SystemExit(f"{tasks.deb_path()} is missing: run `invoke build`")
    tarball = cache_path(args.suite)
    workdir = Path(tempfile.mkdtemp(prefix="mss-bench-"))
    layers = None
    try:
        layers = Layers(args.suite, workdir)
        version, _ = layers.synapse_facts()
        if args.seed_from and not tarball.exists():
            seed_cache(layers, Path(args.seed_from), tarball)
        elif not tarball.exists():
            generate_cache(layers, tarball)
        else:
            say(f"data set: {tarball.relative_to(ROOT)} (cached)")
        results = []
        for number in range(1, args.rounds + 1):
            results.append(one_round(layers, tarball, number))
        report(results, args.suite, version)
    finally:
        if layers is not None:
            layers.cleanup()
        with contextlib.suppress(OSError):
            shutil.rmtree(workdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
