#!/usr/bin/python3
"""Maintainer-script time of our package against dbconfig-common, as root.

Two steps are timed, side by side in one run, alternating ours / anchor / ours / anchor:

1. fresh configure: `dpkg --configure PKG` right after `dpkg --unpack DEB` (not timed),
   preseeded, DEBIAN_FRONTEND=noninteractive; the config script runs in it (debconf's
   confmodule runs it from the postinst);
2. unchanged reconfigure: `dpkg-reconfigure -fnoninteractive PKG` right after, in the same
   root, with the same answers (nothing preseeded again).

The packages:

- ours: dist/matrix-synapse-setup_<version>_all.deb (run `invoke build` first; it is
  copied at the start, so a rebuild during the run changes nothing; its sha256 and time
  are in the output), preseeded as the system tests' fresh local install is
  (scripts/devtools/steps.preseed(db_password=...)): the local cluster, every other answer
  its default.  It creates the role and the database
  (UTF8, C, template0) as postgres over the Unix socket, verifies that the role logs in
  over TCP to localhost:5432, and writes database.yaml (+ database.pgpass) with ucf.
- the anchor: dbc-anchor, built here with dpkg-deb from scripts/dbc-anchor/, whose
  maintainer scripts are dbconfig-common's (dbconfig-pgsql) doing the same job: a role with
  a password, a database (dbc_pgsql_createdb_encoding=UTF8, dbc_pgsql_createdb_collate=C,
  dbc_pgsql_createdb_ctype=C, which dbconfig-common turns into CREATE DATABASE ... WITH
  TEMPLATE "template0" ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' OWNER role, so the C
  locale can be asked for) and a YAML file from a template (dbc_generate_include, with
  ucf).  Preseeded with pgsql/method "TCP/IP" and remote/host localhost, port 5432: the
  closest to ours, whose snippet names localhost over TCP.  Like ours, dbconfig-common
  still does its admin work as postgres over the Unix socket (authmethod-admin ident),
  and the role has a password (authmethod-user password).
  Note: on an unchanged `dpkg-reconfigure`, dbconfig-common asks dbconfig-reinstall
  (default false, so noninteractive says no): it rewrites its own config file and the
  generated file through ucf and never contacts PostgreSQL; saying yes would dump, DROP
  and re-create the database.  Ours verifies the server, role and database every time.

Both run in the system tests' throwaway roots, booted (scripts/devtools/harness.BootedRoot,
with the PostgreSQL layer of scripts/bench_migration.Layers, the cluster running under
systemd), a fresh overlay upper layer per sample, so each fresh configure starts from
nothing.  The roots are offline: the dependencies of both packages (dbconfig-pgsql,
dbconfig-common, python3-psycopg, ...) are downloaded once on the host from the Debian
mirror of the host's apt sources (scripts/devtools/roots.apt_sources, for the root's suite),
resolved against the PostgreSQL layer's dpkg status, cached in
build/cache/bench-scripts-debs-<suite>-<key>/, and installed with `dpkg -i` into one more
overlay layer shared by every sample.

Floors, measured in every sample's root the same way (time.perf_counter around
harness.Root.run): entering the root (nsenter + env + `true`), and CREATE ROLE + CREATE
DATABASE (UTF8, C, template0) in two `psql` calls as postgres.

It prints progress to stderr and a table to stdout (medians, min-max, ours/anchor, the
goals: fresh <= 0.5 x, unchanged <= 0.8 x), and writes build/bench-scripts-<suite>.json.
It asserts nothing, but every sample must succeed (dpkg exit 0; ours: the snippet and the
database exist; the anchor: its generated file and database exist), or the bench stops.

--against OLD.deb compares two builds of ours instead, for a change to the unchanged path
whose effect is smaller than the spread between roots (one root's disk and cluster are
not the next one's): in ONE booted root, OLD.deb and the built .deb are installed in
turn (`dpkg -i`, which must take the unchanged path: "Nothing to change"), and after each
install --per unchanged `dpkg-reconfigure -fnoninteractive` runs are timed; --runs such
rounds.  It prints both medians and min, and the ratio new/old.

    scripts/bench_scripts.py [--suite bookworm|trixie] [--runs N] [--keep DIR]
    scripts/bench_scripts.py --against OLD.deb [--suite S] [--runs N] [--per N]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_migration import ROOT, Layers

import tasks
from scripts.devtools import harness, roots, steps

ANCHOR_SRC = ROOT / "scripts" / "dbc-anchor"
ANCHOR = "dbc-anchor"
ANCHOR_FILE = "/etc/dbc-anchor/database.yaml"
ANCHOR_DB = "anchor"  # database and role, as DEBIAN/config sets them
OURS_DB = "synapse"  # our default database name
PASSWORD = "bench-only Pa55word"  # noqa: S105 - a throwaway root's, both packages
DEPS_IN_ROOT = "/var/cache/mss-bench-debs"
EXTRA_DEPS = "dbconfig-pgsql"  # the anchor's; ours are read from the .deb
NONINTERACTIVE = steps.NONINTERACTIVE
GOALS = {"fresh": 0.5, "unchanged": 0.8}  # ours / anchor, at most
STEPS = {"fresh": "fresh configure", "unchanged": "unchanged reconfigure"}
FLOOR_ENTER_REPEAT = 3
OUT_DIR = ROOT / "build"

ANCHOR_PRESEED = f"""\
{ANCHOR} {ANCHOR}/dbconfig-install boolean true
{ANCHOR} {ANCHOR}/database-type select pgsql
{ANCHOR} {ANCHOR}/pgsql/method select TCP/IP
{ANCHOR} {ANCHOR}/remote/host select localhost
{ANCHOR} {ANCHOR}/remote/newhost string localhost
{ANCHOR} {ANCHOR}/remote/port string 5432
{ANCHOR} {ANCHOR}/pgsql/authmethod-admin select ident
{ANCHOR} {ANCHOR}/pgsql/authmethod-user select password
{ANCHOR} {ANCHOR}/pgsql/admin-user string postgres
{ANCHOR} {ANCHOR}/db/dbname string {ANCHOR_DB}
{ANCHOR} {ANCHOR}/db/app-user string {ANCHOR_DB}
{ANCHOR} {ANCHOR}/pgsql/app-pass password {PASSWORD}
{ANCHOR} {ANCHOR}/app-password-confirm password {PASSWORD}
"""


class BenchFailed(Exception):
    """A sample did not succeed: the bench stops with this message."""


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# --- the anchor package -----------------------------------------------------------------


def build_anchor(workdir: Path) -> Path:
    """dpkg-deb --build of a copy of scripts/dbc-anchor/ (modes set here, not trusted)."""
    tree = workdir / "dbc-anchor"
    shutil.copytree(ANCHOR_SRC, tree)
    (tree / "etc/dbc-anchor").mkdir(parents=True)  # debian/dirs; git keeps no empty dir
    for path in tree.rglob("*"):
        script = path.parent.name == "DEBIAN" and path.name != "control"
        path.chmod(0o755 if path.is_dir() or script else 0o644)
    deb = workdir / f"{ANCHOR}_all.deb"
    cmd = ["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(tree), str(deb)]
    subprocess.run(cmd, check=True, capture_output=True)
    return deb


def snapshot_ours(workdir: Path) -> tuple[Path, dict]:
    """A copy of the built .deb (a rebuild during the run changes nothing), and its facts."""
    built = tasks.deb_path()
    copy = workdir / built.name
    shutil.copy2(built, copy)
    facts = {
        "deb": built.name,
        "sha256": hashlib.sha256(copy.read_bytes()).hexdigest(),
        "built": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(copy.stat().st_mtime)),
    }
    return copy, facts


# --- the dependencies, downloaded on the host, installed in a layer ---------------------


def native_arch() -> str:
    return subprocess.run(
        ["dpkg", "--print-architecture"], check=True, capture_output=True, text=True
    ).stdout.strip()


def apt_options(tmp: Path, status: Path) -> list[str]:
    """apt-get options: the suite's sources in TMP, the root's dpkg status, no host state."""
    for sub in ("lists/partial", "archives/partial", "parts", "cache", "state"):
        (tmp / sub).mkdir(parents=True, exist_ok=True)
    settings = {
        "Dir::Etc::SourceList": tmp / "sources.list",
        "Dir::Etc::SourceParts": tmp / "parts",
        "Dir::Etc::PreferencesParts": tmp / "parts",
        "Dir::State": tmp / "state",
        "Dir::State::Lists": tmp / "lists",
        "Dir::State::status": status,
        "Dir::Cache": tmp / "cache",
        "Dir::Cache::Archives": tmp / "archives",
        "APT::Architectures": native_arch(),
        "APT::Install-Recommends": "false",
        "APT::Sandbox::User": "root",
        "Debug::NoLocking": "true",
    }
    return [arg for key, value in settings.items() for arg in ("-o", f"{key}={value}")]


def download_debs(suite: str, status: Path, spec: str) -> list[Path]:
    """The .debs that SPEC (a Depends-style list) needs beyond what STATUS has installed,
    from the host's Debian mirror for SUITE; cached under build/cache/."""
    digest = hashlib.sha256(
        json.dumps([suite, roots.cache_key(suite), spec, status.read_bytes().hex()]).encode()
    ).hexdigest()[:16]
    dest = roots.CACHE / f"bench-scripts-debs-{suite}-{digest}"
    if (dest / ".complete").exists():
        return sorted(dest.glob("*.deb"))
    say(f"downloading {spec} for {suite} on the host (apt, the host's mirror) ...")
    roots.CACHE.mkdir(parents=True, exist_ok=True)
    for old in roots.CACHE.glob(f"bench-scripts-debs-{suite}-*"):
        shutil.rmtree(old, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix="bench-apt-", dir=roots.CACHE) as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "sources.list").write_text("\n".join(roots.apt_sources(suite)) + "\n")
        opts = apt_options(tmp, status)
        for cmd in (
            ["apt-get", *opts, "-q", "update"],
            ["apt-get", *opts, "-q", "-y", "--download-only", "satisfy", spec],
        ):
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode:
                raise BenchFailed(
                    f"{' '.join(cmd[:1] + cmd[-3:])} failed:\n{proc.stdout}{proc.stderr}"
                )
        partial = tmp / "debs"
        partial.mkdir()
        for deb in (tmp / "archives").glob("*.deb"):
            os.replace(deb, partial / deb.name)
        (partial / ".complete").touch()
        os.replace(partial, dest)
    return sorted(dest.glob("*.deb"))


def deps_spec(ours: Path) -> str:
    depends = subprocess.run(
        ["dpkg-deb", "-f", str(ours), "Depends"], check=True, capture_output=True, text=True
    ).stdout.strip()
    return f"{EXTRA_DEPS}, {depends}"


class BenchLayers(Layers):
    """bench_migration's layers (the cached root, PostgreSQL), one more with both packages'
    dependencies installed, and the two .debs under test."""

    def __init__(self, suite: str, workdir: Path, ours: Path, anchor: Path) -> None:
        with contextlib.redirect_stdout(sys.stderr):  # its progress lines
            super().__init__(suite, workdir)
        self.debs = [ours, anchor]
        say("making the dependencies layer (dbconfig-pgsql, our Depends) ...")
        status = self.postgresql / "var/lib/dpkg/status"
        debs = download_debs(suite, status, deps_spec(ours))
        self.deps, self.versions = self.deps_layer(workdir, debs)

    def deps_layer(self, workdir: Path, debs: list[Path]) -> tuple[Path, dict[str, str]]:
        root = harness.Root("bench-deps-layer", self.suite, [self.postgresql, self.lower])
        for deb in debs:
            root.put_file(deb, f"{DEPS_IN_ROOT}/{deb.name}")
        dest = workdir / f"bench-deps-layer-{self.suite}"
        with root:
            installed = [f"{DEPS_IN_ROOT}/{deb.name}" for deb in debs]
            root.ok(
                ["dpkg", "-i", *installed], what="installing the dependencies", env=NONINTERACTIVE
            )
            root.ok(["rm", "-rf", DEPS_IN_ROOT], what="removing the copied .debs")
            query = ["dpkg-query", "-W", "-f", "${Package} ${Version}\\n"]
            names = ["dbconfig-common", "postgresql", "python3-psycopg", "ucf", "debconf"]
            out = root.ok([*query, *names], what="versions").output
            versions = dict(line.split(" ", 1) for line in out.splitlines() if " " in line)
            root.keep_as_layer(dest)
        return dest, versions

    def layers(self) -> list[Path]:
        """Layers.layers, with the dependencies layer on top."""
        return [self.deps, *super().layers()]


# --- the two packages -------------------------------------------------------------------


@dataclass
class Package:
    key: str  # "ours" or "anchor"
    name: str  # dpkg's name
    deb: Path
    preseed: Callable[[harness.Root], None]
    made: str  # the file the package writes
    database: str


def preseed_ours(root: harness.Root) -> None:
    steps.preseed(root, db_password=PASSWORD)


def preseed_anchor(root: harness.Root) -> None:
    root.ok(["debconf-set-selections"], input=ANCHOR_PRESEED, what="preseeding dbc-anchor")


def packages(ours_deb: Path, anchor: Path) -> list[Package]:
    ours = Package("ours", steps.PKG, ours_deb, preseed_ours, steps.SNIPPET, OURS_DB)
    dbc = Package("anchor", ANCHOR, anchor, preseed_anchor, ANCHOR_FILE, ANCHOR_DB)
    return [ours, dbc]


# --- one sample -------------------------------------------------------------------------


def timed(root: harness.Root, argv: list[str], env: dict | None = None) -> tuple[float, str, int]:
    start = time.perf_counter()
    result = root.run(argv, env=env)
    return time.perf_counter() - start, result.output, result.code


def check(root: harness.Root, pkg: Package, step: str, code: int, output: str) -> dict:
    """The step succeeded: exit 0, the package's file and database exist.  Their facts."""
    problems = [] if code == 0 else [f"exit {code}"]
    if not root.exists(pkg.made):
        problems.append(f"{pkg.made} is missing")
    facts = steps.database_facts(root, pkg.database)
    if not facts:
        problems.append(f"database {pkg.database} is missing")
    if problems:
        tail = "\n".join(output.splitlines()[-40:])
        raise BenchFailed(f"[{root.label}] {pkg.key}: {step}: {', '.join(problems)}\n{tail}")
    return facts


def floors(root: harness.Root, number: int) -> dict:
    """Entering the root (`true`), and CREATE ROLE + CREATE DATABASE in two psql calls."""
    enter = [timed(root, ["true"])[0] for _ in range(FLOOR_ENTER_REPEAT)]
    name = f"floor{number}"
    psql = ["runuser", "-u", "postgres", "--", "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1"]
    sql = [
        f"CREATE ROLE {name} LOGIN PASSWORD '{PASSWORD}'",
        f"CREATE DATABASE {name} OWNER {name} ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' "
        "TEMPLATE template0",
    ]
    total = 0.0
    for statement in sql:
        seconds, output, code = timed(root, [*psql, "-c", statement])
        if code:
            raise BenchFailed(f"[{root.label}] floor: {statement}: exit {code}\n{output}")
        total += seconds
    return {"enter": enter, "psql": total}


def sample(layers: BenchLayers, pkg: Package, number: int, keep: Path | None) -> dict:
    """Fresh configure, then unchanged reconfigure, in a freshly booted root."""
    root = layers.booted(f"bench-{pkg.key}-{number}")
    try:
        pkg.preseed(root)
        deb = f"{harness.DEBS}/{pkg.deb.name}"
        root.ok(["dpkg", "--unpack", deb], what=f"unpacking {pkg.name}", env=NONINTERACTIVE)
        fresh, out_fresh, code = timed(root, ["dpkg", "--configure", pkg.name], NONINTERACTIVE)
        facts = check(root, pkg, STEPS["fresh"], code, out_fresh)
        unchanged, out_again, code = timed(root, ["dpkg-reconfigure", "-fnoninteractive", pkg.name])
        check(root, pkg, STEPS["unchanged"], code, out_again)
        floor = floors(root, number)
    finally:
        root.stop()
    if keep:
        (keep / f"{number:02d}-{pkg.key}-fresh.log").write_text(out_fresh)
        (keep / f"{number:02d}-{pkg.key}-unchanged.log").write_text(out_again)
    return {"fresh": fresh, "unchanged": unchanged, "floor": floor, "database": facts}


# --- two builds of ours, in one root (--against) ----------------------------------------


def compare(layers: BenchLayers, pkg: Package, old: Path, rounds: int, per: int) -> dict:
    """Unchanged reconfigure times of OLD and of the built .deb, alternating in one root."""
    root = layers.booted("bench-against")
    builds = {"old": old, "new": pkg.deb}
    times: dict[str, list[float]] = {key: [] for key in builds}
    try:
        for key, deb in builds.items():
            root.put_file(deb, f"{DEPS_IN_ROOT}/{key}.deb")
        pkg.preseed(root)
        root.ok(["dpkg", "-i", f"{DEPS_IN_ROOT}/old.deb"], what="old", env=NONINTERACTIVE)
        for number in range(rounds):
            for key in builds:
                argv = ["dpkg", "-i", f"{DEPS_IN_ROOT}/{key}.deb"]
                out = root.ok(argv, what=f"installing {key}", env=NONINTERACTIVE).output
                if "Nothing to change" not in out:
                    raise BenchFailed(f"{key}: the install did not take the unchanged path\n{out}")
                for _ in range(per):
                    seconds, output, code = timed(
                        root, ["dpkg-reconfigure", "-fnoninteractive", pkg.name]
                    )
                    if code or "Nothing to change" not in output:
                        raise BenchFailed(f"{key}: unchanged reconfigure: exit {code}\n{output}")
                    times[key].append(seconds)
            old_s, new_s = (statistics.median(times[key]) for key in builds)
            say(f"round {number + 1}/{rounds}: old {old_s:.3f} s, new {new_s:.3f} s (medians)")
    finally:
        root.stop()
    return {key: stats(got) | {"n": len(got)} for key, got in times.items()}


def report_against(result: dict, old: Path, new: Path) -> None:
    print()
    print(f"Unchanged dpkg-reconfigure, two builds of ours in one booted {result['suite']} root")
    for key, deb in (("old", old), ("new", new)):
        row = result[key]
        print(f"{key}: {deb.name}: median {span(row)}, {row['n']} runs")
    print(f"new/old (medians): {result['new']['median'] / result['old']['median']:.2f}x")


# --- the run ----------------------------------------------------------------------------


def measure(layers: BenchLayers, pkgs: list[Package], runs: int, warmup: int, keep) -> dict:
    """Samples[key] = [ {fresh, unchanged, floor, database}, ... ], alternating."""
    samples: dict[str, list[dict]] = {pkg.key: [] for pkg in pkgs}
    number = 0
    for run in range(-warmup, runs):
        for pkg in pkgs:
            number += 1
            result = sample(layers, pkg, number, keep)
            label = f"warm-up {run + warmup + 1}/{warmup}" if run < 0 else f"run {run + 1}/{runs}"
            floor = result["floor"]
            say(
                f"{label} {pkg.key:>6}: fresh {result['fresh']:.2f} s, "
                f"unchanged {result['unchanged']:.2f} s (floors: enter "
                f"{min(floor['enter']) * 1000:.0f} ms, psql {floor['psql']:.2f} s)"
            )
            if run >= 0:
                samples[pkg.key].append(result)
    return samples


def stats(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarize(samples: dict[str, list[dict]]) -> dict:
    summary: dict = {}
    for step in STEPS:
        row = {key: stats([s[step] for s in got]) for key, got in samples.items()}
        row["ratio"] = row["ours"]["median"] / row["anchor"]["median"]
        row["goal"] = GOALS[step]
        summary[step] = row
    every = [s for got in samples.values() for s in got]
    summary["floor_enter"] = stats([min(s["floor"]["enter"]) for s in every])
    summary["floor_psql"] = stats([s["floor"]["psql"] for s in every])
    return summary


def machine_facts() -> dict:
    cpu = platform.processor() or "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = next(line for line in Path("/proc/meminfo").read_text().splitlines()
               if line.startswith("MemTotal"))  # fmt: skip
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(int(mem.split()[1]) / 1024 / 1024, 1),
        "kernel": os.uname().release,
    }


def load_average() -> float:
    """The last minute's load average: other work on the machine makes the numbers noisy."""
    return os.getloadavg()[0]


def span(value: dict, scale: float = 1.0, unit: str = "s", digits: int = 2) -> str:
    med, low, high = (value[k] * scale for k in ("median", "min", "max"))
    return f"{med:.{digits}f} {unit} ({low:.{digits}f}-{high:.{digits}f})"


def report(result: dict) -> None:
    summary, m, ours = result["summary"], result["machine"], result["ours"]
    print()
    print(f"Maintainer scripts: ours against dbconfig-common, {result['date']}")
    print(
        f"machine: {m['cores']} cores, {m['cpu']}, {m['memory_gib']} GiB; suite: {result['suite']} "
        f"(booted throwaway root); {result['runs']} runs each, alternating, a fresh root per run"
    )
    versions = result["versions"]
    print(
        f"ours {ours['deb']} (sha256 {ours['sha256'][:12]}, built {ours['built']}); "
        f"dbconfig-common {versions.get('dbconfig-common', '?')}; "
        f"postgresql {versions.get('postgresql', '?')}; anchor: pgsql/method TCP/IP, localhost:5432"
    )
    load = result["load_average"]
    busy = (
        "" if max(load.values()) < m["cores"] / 2 else " (busy: other work ran, numbers are noisy)"
    )
    print(f"load average (1 min) at start {load['start']:.1f}, at end {load['end']:.1f}{busy}")
    print()
    print(f"| {'step':<22} | {'anchor median (min-max)':<26} | {'ours median (min-max)':<26} "
          f"| ours/anchor | goal |")  # fmt: skip
    print(f"|{'-' * 24}|{'-' * 28}|{'-' * 28}|-------------|------|")
    for step, title in STEPS.items():
        row = summary[step]
        verdict = "met" if row["ratio"] <= row["goal"] else "missed"
        print(
            f"| {title:<22} | {span(row['anchor']):<26} | {span(row['ours']):<26} "
            f"| {row['ratio']:>10.2f}x | ≤ {row['goal']}x: {verdict} |"
        )
    print()
    enter = span(summary["floor_enter"], 1000, "ms", 1)
    print(f"floor: entering the root (`true`, best of {FLOOR_ENTER_REPEAT}): {enter}")
    psql = span(summary["floor_psql"])
    print(f"floor: CREATE ROLE + CREATE DATABASE (UTF8, C, template0), two psql calls: {psql}")
    facts = {key: result["databases"][key] for key in ("anchor", "ours")}
    print(f"databases made: {json.dumps(facts)}")
    print(f"results: {result['json']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", default="bookworm", choices=roots.SUITES)
    parser.add_argument("--runs", type=int, default=6, help="samples of each package")
    parser.add_argument("--warmup", type=int, default=1, help="samples of each, not counted")
    parser.add_argument("--keep", metavar="DIR", help="keep each sample's dpkg output in DIR")
    parser.add_argument("--against", metavar="OLD.deb", help="compare with an older build")
    parser.add_argument("--per", type=int, default=3, help="--against: runs per install")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (booted roots: unshare, nsenter, cgroups)")
    if not tasks.deb_path().exists():
        raise SystemExit(f"{tasks.deb_path()} is missing: run `invoke build`")
    keep = Path(args.keep).resolve() if args.keep else None
    if keep:
        keep.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="mss-bench-scripts-"))
    layers = None
    try:
        ours, ours_facts = snapshot_ours(workdir)
        anchor = build_anchor(workdir)
        layers = BenchLayers(args.suite, workdir, ours, anchor)
        pkgs = packages(ours, anchor)
        if args.against:
            old = Path(args.against).resolve()
            result = compare(layers, pkgs[0], old, args.runs, args.per) | {"suite": args.suite}
            report_against(result, old, ours)
            return 0
        load_start = load_average()
        samples = measure(layers, pkgs, args.runs, args.warmup, keep)
        result = {
            "date": time.strftime("%Y-%m-%d %H:%M %Z"),
            "suite": args.suite,
            "runs": args.runs,
            "machine": machine_facts(),
            "load_average": {"start": load_start, "end": load_average()},
            "ours": ours_facts,
            "versions": layers.versions,
            "anchor": {"pgsql/method": "TCP/IP", "host": "localhost", "port": 5432},
            "summary": summarize(samples),
            "databases": {key: got[0]["database"] for key, got in samples.items()},
            "samples": samples,
            "json": str((OUT_DIR / f"bench-scripts-{args.suite}.json").relative_to(ROOT)),
        }
        OUT_DIR.mkdir(exist_ok=True)
        (ROOT / result["json"]).write_text(json.dumps(result, indent=2) + "\n")
        report(result)
    except (BenchFailed, AssertionError) as err:
        print(f"bench stopped: {err}", file=sys.stderr)
        return 1
    finally:
        if layers is not None:
            layers.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
