"""The cached layer of the Debian 12 -> 13 scenario (tests/system/test_release_upgrade.py):
on bookworm's `synapse-data` layer (layers.py), everything an offline `apt-get full-upgrade`
to trixie needs, kept aside in CACHE_DIR so that the root stays a normal bookworm system
(its own sources, lists and apt cache untouched) until the test switches it:

- ``sources.list``: the trixie sources the lists were fetched with (the host's mirror, read
  at build time as roots.py reads it; no host name is written here);
- ``lists/``: apt's lists of those sources;
- ``archives/``: every .deb that the full-upgrade of such a root wants, Recommends included
  as a user's apt has them, once our package's dependencies (roots.DOWNLOAD_ONLY) are
  installed too, as they are when the scenario upgrades;

and, outside it, trixie's Python 3.13 packages of Synapse's and the judge's venvs beside
their 3.11 ones (_venvs_for), so that both still start once python3 is 3.13.

It is made in a scratch root on the `synapse-data` layer: the dependencies installed offline
from the root's cache, then, with the host's network (nsenter without --net), `apt-get
update` and `apt-get full-upgrade --download-only` pointed at CACHE_DIR
(Dir::Etc::SourceList, Dir::State::Lists, Dir::Cache::Archives).  Only CACHE_DIR is kept
(and the venvs' 3.13 packages): the layer holds none of the scratch root's installs, so the
scenario installs our .deb and its dependencies itself.  Our own .deb is not an input, so
a code change never rebuilds it.

A sibling of layers.py rather than one of its SPECS: those are built for every release by
`invoke layers` and `invoke test`, and this one needs the network and is wanted only by a
scenario of the full system set.  Keyed like them: the key of the layer below (which holds
the cached root's key), the cached trixie root's key, the target release, the dependencies
and this file's own text.
Built on first use, under the layers' lock.  Run as a script:
`/usr/bin/python3 -m scripts.devtools.release_layer [--dry-run]`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from scripts.devtools import harness, layers, roots, steps

FROM, TO = "bookworm", "trixie"
BELOW = "synapse-data"
NAME = f"to-{TO}"
CACHE_DIR = "/var/cache/mss-release-upgrade"
# apt's options that read and write the other release's sources, lists and .debs in
# CACHE_DIR, leaving the root's own where they are.
APT_DIRS = [
    "-o",
    f"Dir::Etc::SourceList={CACHE_DIR}/sources.list",
    "-o",
    f"Dir::State::Lists={CACHE_DIR}/lists/",
    "-o",
    f"Dir::Cache::Archives={CACHE_DIR}/archives/",
    # The binary caches of the other release's lists would replace the root's own.
    "-o",
    "Dir::Cache::pkgcache=",
    "-o",
    "Dir::Cache::srcpkgcache=",
]
ONLINE_TIMEOUT = 3600.0
VENVS = ("/opt/venvs/matrix-synapse", "/opt/venvs/judge")  # roots.py's, by Python version
PYTHON_TO = "python3.13"


def key() -> str:
    digest = hashlib.sha256()
    digest.update(f"{FROM}\0{TO}\0{layers.key(FROM, BELOW)}\0".encode())
    digest.update(roots.cache_key(TO).encode())  # its venvs (_venvs_for)
    digest.update(json.dumps(roots.DOWNLOAD_ONLY).encode())
    digest.update(Path(__file__).read_bytes())
    return digest.hexdigest()[:16]


def path() -> Path:
    return layers.LAYERS / f"{FROM}-{NAME}-{key()}"


def chain() -> list[Path]:
    """The lower layers of a root for the scenario, top first: this layer (built first if
    missing), then bookworm's `synapse-data` chain (layers.chain)."""
    lowers = layers.chain(FROM, BELOW)
    target = path()
    with layers._locked(f"{FROM}-{NAME}"):
        if not target.is_dir():
            _build(lowers, target)
    return [target, *lowers]


def _online(root: harness.Root, argv: list[str], what: str) -> str:
    """Run ARGV in ROOT with the host's network: the root's namespaces but its network."""
    cmd = [part for part in root.command(argv, steps.NONINTERACTIVE) if part != "--net"]
    try:
        proc = subprocess.run(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=ONLINE_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as err:
        raise RuntimeError(f"{what}: no end after {ONLINE_TIMEOUT:.0f} s") from err
    out = proc.stdout.decode("utf-8", "replace")
    if proc.returncode:
        raise RuntimeError(f"{what} failed (exit {proc.returncode}):\n{out[-4000:]}")
    return out


def _venvs_for(partial: Path, bookworm: Path) -> None:
    """Beside each venv's lib/python3.11, trixie's lib/python3.13 of the same pins (hard
    links from the cached trixie root, which roots.py built with trixie's own Python).

    A venv's bin/python is a link to /usr/bin/python3, which the upgrade makes Python
    3.13: a venv with only 3.11's packages then no longer starts.  Upstream ships a
    Synapse package per release, and an admin's upgrade brings trixie's; here Synapse
    and the judge simply run on either Python, so that the scenario tests what happens to
    PostgreSQL, not what becomes of a venv."""
    trixie = layers.extracted_root(TO)
    for venv in VENVS:
        source = trixie / venv.lstrip("/") / "lib" / PYTHON_TO
        if not source.is_dir():
            raise RuntimeError(f"the cached {TO} root has no {venv}/lib/{PYTHON_TO}")
        lib = Path(venv.lstrip("/")) / "lib"
        for parent in [*reversed(lib.parents[:-1]), lib]:
            (partial / parent).mkdir(parents=True, exist_ok=True)
            shutil.copystat(bookworm / parent, partial / parent)
        subprocess.run(["cp", "-al", str(source), str(partial / lib / PYTHON_TO)], check=True)


def _build(lowers: list[Path], target: Path) -> None:
    started = time.monotonic()
    partial = layers.LAYERS / f".{target.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    root = harness.Root(f"layer-{NAME}", FROM, lowers, base=layers.LAYERS)
    with root:
        # The installed set of the scenario at its upgrade: our dependencies, as apt
        # installs them with our .deb (from the root's cache, offline).
        root.ok(
            [
                "apt-get",
                "install",
                "-y",
                "-q",
                "-o",
                "APT::Install-Recommends=true",
                *roots.DOWNLOAD_ONLY,
            ],
            what="installing our dependencies (offline)",
            env=steps.NONINTERACTIVE,
        )
        for sub in ("lists/partial", "archives/partial"):
            root.ok(["mkdir", "-p", f"{CACHE_DIR}/{sub}"], what=f"making {CACHE_DIR}/{sub}")
        root.write(f"{CACHE_DIR}/sources.list", "\n".join(roots.apt_sources(TO)) + "\n")
        _online(root, ["apt-get", "update", "-q", *APT_DIRS], what=f"apt-get update ({TO})")
        out = _online(
            root,
            [
                "apt-get",
                "full-upgrade",
                "--download-only",
                "-y",
                "-q",
                "-o",
                "APT::Install-Recommends=true",
                *APT_DIRS,
            ],
            what=f"apt-get full-upgrade --download-only ({TO})",
        )
        summary = [line for line in out.splitlines() if "upgraded" in line or "Need to get" in line]
        root.ok(
            ["rm", "-f", f"{CACHE_DIR}/lists/lock", f"{CACHE_DIR}/archives/lock"],
            what="removing apt's lock files",
        )
        root.halt()  # its files are plain files in its upper directory now
        kept = root.upper / CACHE_DIR.lstrip("/")
        dest = partial / CACHE_DIR.lstrip("/")
        # The directories above CACHE_DIR hide those of the layers below: the same owner
        # and modes.
        for parent in reversed(dest.relative_to(partial).parents[:-1]):
            (partial / parent).mkdir(parents=True, exist_ok=True)
            shutil.copystat(lowers[-1] / parent, partial / parent)
        partial.chmod(0o755)
        os.replace(kept, dest)
    _venvs_for(partial, lowers[-1])
    os.replace(partial, target)
    for old in layers.LAYERS.glob(f"{FROM}-{NAME}-*"):
        if old != target:
            shutil.rmtree(old, ignore_errors=True)
    size = subprocess.run(["du", "-sh", str(target)], capture_output=True, text=True).stdout
    debs = len(list((target / CACHE_DIR.lstrip("/") / "archives").glob("*.deb")))
    print(
        f"built layer {target.name} in {time.monotonic() - started:.0f} s: {debs} .debs, "
        f"{size.split()[0] if size else '?'} ({'; '.join(summary)})",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="say whether it would be built")
    args = parser.parse_args(argv)
    if args.dry_run:
        there = path().is_dir()
        print(f"{path().name}: {'up to date' if there else 'would be built'}")
        return 0
    if os.geteuid() != 0:
        print("release_layer: building it needs root (namespaces, overlays)", file=sys.stderr)
        return 1
    print(f"layer up to date: {chain()[0].name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
