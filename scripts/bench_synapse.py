#!/usr/bin/python3
"""Synapse's throughput on our PostgreSQL against its default SQLite, as root.

Each round boots fresh system-test roots (scripts/devtools/harness.BootedRoot, the layers of
scripts/bench_migration.py), one at a time, and measures the real Synapse (the stand-in
.deb, Synapse from PyPI) under the same load through its client-server API
(scripts/synapse_load.py):

a. sqlite: the stand-in alone, on its default SQLite;
b. postgresql: our package first (apt install of the .deb in dist/, preseeded password,
   local cluster), then the stand-in, so Synapse runs on the database and the snippet our
   package made (checked: Synapse's schema and users are in PostgreSQL).

Once Synapse's background updates are done: register users, a warm-up, then a fixed
number of messages into one room with 8 concurrent senders, then with 1 sender, then the
median of /sync (timeout=0).  It prints msg/s per round, the ratio of the medians, the
/sync latency and where the CPU went (Synapse's process, PostgreSQL's, the load
generator), and writes build/bench-synapse-<suite>.json.  It asserts nothing.

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

# CPU seconds so far, by group of processes in the root, and the machine's busy/total.
CPU_PY = r"""
import json, os
tck = os.sysconf("SC_CLK_TCK")
groups = {"synapse": 0.0, "postgres": 0.0, "load": 0.0, "other": 0.0}
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
    elif "synapse_load" in cmd:
        group = "load"
    else:
        group = "other"
    groups[group] += cpu
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


def load(root: harness.Root, messages: int, senders: int, sync: int = 0) -> dict:
    spec = {
        "users": USERS,
        "rooms": 1,
        "messages": messages,
        "senders": senders,
        "receipt-every": 100,
        "sync-samples": sync,
    }
    result = LoadProcess(root, "bench", spec).result(timeout=3600)
    if "error" in result or result.get("errors"):
        raise SystemExit(f"the load failed: {result}")
    return result


def measured_load(root: harness.Root, messages: int, senders: int, sync: int = 0) -> dict:
    before = cpu(root)
    result = load(root, messages, senders, sync)
    after = cpu(root)
    delta = {k: round(after[k] - before[k], 2) for k in before}
    delta["load"] = result.get("cpu_seconds", 0.0)
    # CPU used outside this root meanwhile (other work on the machine): noise.
    ours = sum(delta[k] for k in ("synapse", "postgres", "load", "other"))
    delta["foreign"] = round(max(0.0, delta["_busy"] - ours), 2)
    wall = delta.pop("_total") / (os.cpu_count() or 1)
    delta["wall"] = round(wall, 2)
    result["cpu"] = delta
    return result


def quiet_load(root: harness.Root, messages: int, senders: int, sync: int = 0) -> dict:
    """measured_load, again (at most MAX_TRIES in all) while other work on the machine took
    more than NOISY of its CPU; the quietest try, the others in "noisy_tries"."""
    tries = []
    for _ in range(MAX_TRIES):
        result = measured_load(root, messages, senders, sync)
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


def measure(layers: Layers, kind: str, variant: Variant, name: str, args) -> dict:
    root = layers.booted(name)
    try:
        info: dict = {"kind": kind, "variant": variant.name if kind != "sqlite" else "sqlite"}
        if kind == "postgresql":
            steps.preseed(root, db_password=secrets.token_hex(16))
            steps.apt_install(root, layers.debs[0], what="installing our .deb")
            info["package"] = root.ok(
                ["dpkg-query", "-W", "-f", "${Version}", steps.PKG], what="package version"
            ).output.strip()
            info["postgresql"] = cluster_version(root)
        install_synapse(root)
        if kind == "postgresql" and variant.parts:
            root.ok(["systemctl", "stop", "matrix-synapse.service"], what="stopping Synapse")
            info["applied"] = variant.apply(root)
            start_synapse(root, f"Synapse starts with variant {variant.name}")
        root.put_file(ROOT / "scripts" / "synapse_load.py", LOAD_SCRIPT, 0o755)
        info["updates_wait"] = round(wait_updates(root, kind), 1)
        load(root, WARMUP_MESSAGES, SENDERS)  # registers the users; a warm-up
        if kind == "postgresql":
            steps.synapse_on_postgresql(root)
            if variant.pgss:
                steps.psql(root, "SELECT pg_stat_statements_reset()", "synapse", what="reset")
        info["many"] = quiet_load(root, args.messages, SENDERS)
        say(f"{name}: {SENDERS} senders {info['many']['messages_per_second']} msg/s, "
            f"CPU {info['many']['cpu']}")  # fmt: skip
        if kind == "postgresql":
            info["pg"] = pg_facts(root, variant)
        if args.single_messages:
            info["one"] = quiet_load(root, args.single_messages, 1, SYNC_SAMPLES)
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


def report(data: dict) -> None:
    rounds = data["rounds"]
    print()
    print(f"Synapse throughput, {data['date']}")
    print(f"machine: {data['machine']}; root: {data['suite']} (booted); Synapse {data['synapse']}")
    print(f"package: {data.get('package', '?')}; PostgreSQL {data.get('postgresql', '?')}; "
          f"messages: {data['messages']} with {SENDERS} senders, "
          f"{data['single_messages']} with 1 sender")  # fmt: skip
    names = ["sqlite", *data["variants"]]
    for which, label in (("many", f"{SENDERS} senders"), ("one", "1 sender")):
        if which == "one" and not data["single_messages"]:
            continue
        print(f"\n{label}: msg/s per round, median, ratio to SQLite's median")
        base = median([rate(r["sqlite"], which) for r in rounds])
        for name in names:
            values = [rate(r[name], which) for r in rounds]
            med = median(values)
            ratio = f"{med / base:.2f} x" if med and base else "n/a"
            shown = "  ".join(f"{v:6.1f}" if v else "   n/a" for v in values)
            print(f"  {name:<26} {shown}   median {med or 0:6.1f}   {ratio}")
    if data["single_messages"]:
        print("\n/sync (timeout=0) median ms per round")
        for name in names:
            values = [r[name].get("one", {}).get("sync_ms_median") for r in rounds]
            print(f"  {name:<26} " + "  ".join(f"{v or 0:6.1f}" for v in values))
    print(f"\nCPU seconds per 1000 messages ({SENDERS} senders; median over rounds), "
          "machine busy %")  # fmt: skip
    for name in names:
        per: dict[str, list[float]] = {}
        for r in rounds:
            many = r[name]["many"]
            k = 1000 / many["messages"]
            for group in ("synapse", "postgres", "load", "foreign", "_busy"):
                per.setdefault(group, []).append(many["cpu"][group] * k)
            per.setdefault("busy%", []).append(
                100 * many["cpu"]["_busy"] / ((os.cpu_count() or 1) * many["cpu"]["wall"])
            )
        cols = "  ".join(f"{g.strip('_')} {median(v):5.1f}" for g, v in per.items())
        print(f"  {name:<26} {cols}")
    for name in data["variants"]:
        r = rounds[-1][name]
        if "pgss_top" in r.get("pg", {}):
            print(f"\npg_stat_statements ({name}, last round, {SENDERS} senders): calls|ms total")
            print(f"  {r['pg']['pgss_total_calls_ms']}")
            for line in r["pg"]["pgss_top"]:
                print(f"  {line}")


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
        help="what to measure on PostgreSQL (repeatable; default: package)",
    )
    args = parser.parse_args()
    if args.single_messages is None:
        args.single_messages = args.messages // 2
    variants = [Variant(v) for v in (args.variant or ["package"])]
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
        "rounds": [],
    }
    out = ROOT / "build" / f"bench-synapse-{args.suite}.json"
    try:
        layers = Layers(args.suite, workdir)
        # One package for the whole run, even if dist/ is rebuilt meanwhile.
        deb = workdir / layers.debs[0].name
        shutil.copyfile(layers.debs[0], deb)
        layers.debs[0] = deb
        data["deb"] = deb.name
        data["synapse"] = layers.synapse_facts()[0]
        for number in range(1, args.rounds + 1):
            this: dict = {}
            for variant in [None, *variants]:
                kind = "sqlite" if variant is None else "postgresql"
                key = "sqlite" if variant is None else variant.name
                say(f"round {number}: {key} ...")
                this[key] = measure(
                    layers, kind, variant or Variant("package"), f"bench-synapse-{number}", args
                )
                if kind == "postgresql":
                    data["package"] = this[key]["package"]
                    data["postgresql"] = this[key]["postgresql"]
            data["rounds"].append(this)
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
