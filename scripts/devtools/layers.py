"""Cached overlay layers for the system tests: the states that many scenarios start from
and none of them tests, made once and kept in build/cache/layers/ between runs.

A layer is the upper directory of a root in which its steps ran, on top of the layer below
it (or of the cached Debian root, roots.py, extracted once into build/cache/roots/).  It is
keyed by its inputs: the cached root's key, the layer below, the files its steps use
(the Synapse stand-in's tree, the in-root helpers) and this file's own text, so that any
change to them makes a new one.  A scenario's root stacks its own writable layer on a chain
of them (harness.Root's lowers, top first):

- ``postgresql``: `apt-get install postgresql` (offline, from the root's cache), its cluster
  stopped cleanly;
- ``synapse``: on it, the Synapse stand-in installed (upstream's layout, its unit enabled)
  and Synapse started once on SQLite, until it answers, then stopped cleanly: its
  homeserver.db, signing key and log exist;
- ``synapse-data``: on that, Synapse fast at its background updates (test-only conf.d
  file) and a real Matrix client's user, room and ten messages in SQLite (the judge's
  record in /root), Synapse stopped cleanly.

Each is made in a root without an init system (the stand-in's init script stands in for
its unit); a booted root on it has the same files, and systemd starts the enabled unit.
Builders take turns through one lock, so pytest-xdist workers and `invoke layers` share
one copy.  Run as a script: `/usr/bin/python3 -m scripts.devtools.layers [--suite S]`.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from scripts.devtools import harness, roots, steps

HERE = Path(__file__).resolve().parent
LAYERS = roots.CACHE / "layers"
EXTRACTED = roots.CACHE / "roots"
HOMESERVER_DB = "/var/lib/matrix-synapse/homeserver.db"
# Test-only: Synapse finishes the background updates of a new database in seconds rather
# than minutes (a Synapse used for a while has none pending), so a migration may start.
FAST_UPDATES_FILE = "/etc/matrix-synapse/conf.d/zz-test-background-updates.yaml"
FAST_UPDATES = "background_updates: {sleep_duration_ms: 1, min_batch_size: 100}\n"
SEEDED_MESSAGES = 10


def _tree_digest(top: Path) -> str:
    """Names, modes and contents of every file under TOP."""
    digest = hashlib.sha256()
    for path in sorted(p for p in top.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(str(path.relative_to(top)).encode() + b"\0")
        digest.update(oct(path.stat().st_mode & 0o7777).encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()


@contextmanager
def _locked(name: str) -> Iterator[None]:
    LAYERS.mkdir(parents=True, exist_ok=True)
    with open(LAYERS / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def extracted_root(suite: str) -> Path:
    """The cached root of SUITE (roots.build), extracted once into build/cache/roots/:
    the lowest layer of every scenario's overlay, never written."""
    tarball = roots.build(suite, quiet=True)
    target = EXTRACTED / tarball.name.split(".")[0]
    with _locked(f"root-{suite}"):
        if not target.is_dir():
            EXTRACTED.mkdir(parents=True, exist_ok=True)
            partial = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=EXTRACTED))
            try:
                subprocess.run(
                    ["tar", "--zstd", "-xpf", str(tarball), "--numeric-owner", "-C", str(partial)],
                    check=True,
                )
                os.replace(partial, target)
            finally:
                shutil.rmtree(partial, ignore_errors=True)
            for old in EXTRACTED.glob(f"system-{suite}-*"):
                if old != target:
                    shutil.rmtree(old, ignore_errors=True)
    return target


# --- the layers' steps ----------------------------------------------------------------


def _make_postgresql(root: harness.Root, _: Path) -> None:
    steps.install_postgresql(root)
    root.ok(
        "pg_ctlcluster $(pg_lsclusters -h | cut -d' ' -f1) main stop",
        what="stopping the cluster for the layer",
    )


def _make_synapse(root: harness.Root, workdir: Path) -> None:
    standin = steps.standin_deb(workdir)
    root.put_file(standin, f"{harness.DEBS}/{standin.name}")
    steps.apt_install(root, standin, what="laying Synapse out (stand-in package)")
    steps.synapse_up(root, "Synapse starts on SQLite for the layer")
    root.ok(["invoke-rc.d", "matrix-synapse", "stop"], what="stopping Synapse for the layer")
    root.check(root.exists(HOMESERVER_DB), "Synapse made its SQLite database", "present", "no")
    root.ok(["rm", "-f", f"{harness.DEBS}/{standin.name}"], what="removing the stand-in's .deb")


def _make_synapse_data(root: harness.Root, _: Path) -> None:
    root.write(FAST_UPDATES_FILE, FAST_UPDATES)
    root.ok(["invoke-rc.d", "matrix-synapse", "start"], what="starting Synapse on SQLite")
    steps.synapse_chats(root, messages=SEEDED_MESSAGES)
    root.ok(["invoke-rc.d", "matrix-synapse", "stop"], what="stopping Synapse for the layer")


@dataclass(frozen=True)
class Layer:
    below: str | None
    make: Callable[[harness.Root, Path], None]
    # Files and trees (relative to scripts/devtools) whose contents the steps depend on.
    inputs: tuple[str, ...] = ()


SPECS: dict[str, Layer] = {
    "postgresql": Layer(None, _make_postgresql),
    "synapse": Layer("postgresql", _make_synapse, ("synapse-standin", "inroot")),
    "synapse-data": Layer("synapse", _make_synapse_data, ("inroot",)),
}


def key(suite: str, name: str) -> str:
    spec = SPECS[name]
    digest = hashlib.sha256()
    digest.update(f"{suite}\0{name}\0{roots.cache_key(suite)}\0".encode())
    digest.update(Path(__file__).read_bytes())
    digest.update((HERE / "steps.py").read_bytes())
    for item in spec.inputs:
        path = HERE / item
        digest.update(_tree_digest(path).encode() if path.is_dir() else path.read_bytes())
    if spec.below:
        digest.update(key(suite, spec.below).encode())
    return digest.hexdigest()[:16]


def path(suite: str, name: str) -> Path:
    return LAYERS / f"{suite}-{name}-{key(suite, name)}"


def chain(suite: str, name: str | None) -> list[Path]:
    """The lower layers of a root that starts from layer NAME (None: the bare root), top
    first, ending with the extracted root; each is built first if missing."""
    below = [extracted_root(suite)]
    if name is None:
        return below
    spec = SPECS[name]
    lowers = chain(suite, spec.below)
    target = path(suite, name)
    with _locked(f"{suite}-{name}"):
        if not target.is_dir():
            _build(suite, name, lowers, target)
    return [target, *lowers]


def _build(suite: str, name: str, lowers: list[Path], target: Path) -> None:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"mss-layer-{suite}-{name}-") as workdir:
        root = harness.Root(f"layer-{name}", suite, lowers, base=LAYERS)
        with root:
            SPECS[name].make(root, Path(workdir))
            partial = LAYERS / f".{target.name}.partial"
            shutil.rmtree(partial, ignore_errors=True)
            root.keep_as_layer(partial)
    # The helpers and policy-rc.d of this build's root are in every scenario's own upper
    # layer anyway; the layer keeps what its steps made.
    os.replace(partial, target)
    for old in LAYERS.glob(f"{suite}-{name}-*"):
        if old != target:
            shutil.rmtree(old, ignore_errors=True)
    print(f"built layer {target.name} in {time.monotonic() - started:.0f} s", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", action="append", choices=roots.SUITES, help="default: all")
    parser.add_argument("--dry-run", action="store_true", help="say what would be built")
    args = parser.parse_args(argv)
    suites = args.suite or list(roots.SUITES)
    if args.dry_run:
        for suite in suites:
            for name in SPECS:
                there = path(suite, name).is_dir()
                print(f"{path(suite, name).name}: {'up to date' if there else 'would be built'}")
        return 0
    if os.geteuid() != 0:
        print("layers: building them needs root (namespaces, overlays)", file=sys.stderr)
        return 1
    # One release per core: each builds its chain in order.
    with ThreadPoolExecutor(max_workers=len(suites)) as pool:
        for done in pool.map(lambda suite: chain(suite, list(SPECS)[-1]), suites):
            print(f"layers up to date: {', '.join(p.name for p in done[:-1])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
