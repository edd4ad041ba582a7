#!/usr/bin/python3
"""Throwaway Debian roots for the publishing checks (autopkgtest, piuparts, repo tests).

    scripts/publish_root.py [--suite S] [--kind testbed|piuparts] [--force]

Two cached tarballs per suite in build/cache/ (names start with ``publish-`` so
they never collide with the system tests' roots):

- ``publish-testbed-<suite>-<key>.tar.zst`` (mmdebstrap --variant=apt): apt-utils
  installed (autopkgtest publishes the .debs under test with apt-ftparchive
  inside the testbed); the package's dependencies and postgresql downloaded but
  NOT installed, with apt's lists kept, so that apt can install them with no
  network; /etc/hosts.  autopkgtest's unshare virt-server and the repository
  tests run in it offline (in a network namespace of their own).
- ``publish-piuparts-<suite>-<key>.tgz`` (mmdebstrap --variant=minbase, plus
  postgresql with its cluster created and stopped): the base tarball piuparts
  wants (gzip); piuparts itself fetches from the mirror.

<key> hashes the package lists and this file.  The mirror comes from the host's
apt sources (scripts/devtools/roots.py reads them); no host name is written here.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "build" / "cache"
sys.path.insert(0, str(ROOT))

from scripts.devtools.roots import apt_sources  # noqa: E402 - the host's mirror, read once

TESTBED_INSTALL = ["apt-utils", "ca-certificates"]
# What `apt install matrix-synapse-setup` and the autopkgtests need, downloaded only
# (with Recommends, as apt installs them by default).
TESTBED_DOWNLOAD = [
    "postgresql",
    "libpq5",
    "python3",
    "python3-psycopg",
    "python3-jinja2",
    "python3-yaml",
    "python3-debconf",
    "debconf",
    "ucf",
    # trixie's python3-psycopg: "python3-typing-extensions | python3-supported-min (>= 3.13)";
    # apt takes the second, autopkgtest's dependency resolver the first.
    "python3-typing-extensions",
]
KINDS = ("testbed", "piuparts")

HOSTS = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"


def cache_key(kind: str, suite: str) -> str:
    """What the root is made of: its mmdebstrap command (lists, hooks, mirror)."""
    spec = mmdebstrap_command(kind, suite, Path("OUTPUT"))
    return hashlib.sha256(json.dumps(spec).encode()).hexdigest()[:16]


def tarball(kind: str, suite: str) -> Path:
    ext = "tar.zst" if kind == "testbed" else "tgz"
    return CACHE / f"publish-{kind}-{suite}-{cache_key(kind, suite)}.{ext}"


def mmdebstrap_command(kind: str, suite: str, output: Path) -> list[str]:
    hosts = f"printf '{HOSTS}' > \"$1/etc/hosts\""
    if kind == "piuparts":
        return [
            "mmdebstrap",
            "--mode=root",
            "--variant=minbase",
            "--format=tar",
            # A machine with PostgreSQL installed, its cluster down (mmdebstrap's and
            # piuparts' policy-rc.d start nothing): what the package meets there.
            "--include=postgresql",
            "--customize-hook=" + hosts,
            suite,
            str(output),
            *apt_sources(suite),
        ]
    download = " ".join(TESTBED_DOWNLOAD)
    return [
        "mmdebstrap",
        "--mode=root",
        "--variant=apt",
        "--format=tar",
        "--include=" + ",".join(TESTBED_INSTALL),
        "--skip=cleanup/apt",  # keep the lists and the downloaded .debs: used offline
        '--customize-hook=chroot "$1" apt-get install --download-only -y -q '
        f"-o APT::Install-Recommends=true {download}",
        "--customize-hook=" + hosts,
        suite,
        str(output),
        *apt_sources(suite),
    ]


def build(kind: str, suite: str = "bookworm", force: bool = False) -> Path:
    """Build (or reuse) the cached tarball; return its path."""
    target = tarball(kind, suite)
    if target.exists() and not force:
        return target
    if os.geteuid() != 0:
        raise SystemExit("publish_root: mmdebstrap --mode=root needs root")
    if shutil.which("mmdebstrap") is None:
        raise SystemExit("publish_root: mmdebstrap is missing: run scripts/bootstrap")
    CACHE.mkdir(parents=True, exist_ok=True)
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LC_ALL": "C.UTF-8"}
    # mmdebstrap compresses by the name: gzip for piuparts (it unpacks with tar -z).
    name = "root.tar.gz" if kind == "piuparts" else "root.tar.zst"
    with tempfile.TemporaryDirectory(prefix=f"publish-{kind}-{suite}-", dir=CACHE) as tmp:
        partial = Path(tmp) / name
        result = subprocess.run(mmdebstrap_command(kind, suite, partial), env=env, check=False)
        if result.returncode or not partial.exists():
            raise SystemExit(
                f"publish_root: mmdebstrap for {kind} {suite} failed (exit {result.returncode})"
            )
        os.replace(partial, target)
    for old in CACHE.glob(f"publish-{kind}-{suite}-*"):
        if old != target and old.is_file():
            old.unlink()
    return target


@contextlib.contextmanager
def extracted(kind: str = "testbed", suite: str = "bookworm"):
    """A fresh copy of the testbed root in a temporary directory (removed afterwards)."""
    source = build(kind, suite)
    top = Path(tempfile.mkdtemp(prefix=f"publish-root-{suite}-"))
    try:
        subprocess.run(
            ["tar", "-C", str(top), "--extract", "--file", str(source)],
            check=True,
            capture_output=True,
        )
        yield top
    finally:
        subprocess.run(["rm", "-rf", "--one-file-system", str(top)], check=False)


def offline_command(
    root: Path, inner: list[str], serve: Path | None = None, port: int = 8080
) -> list[str]:
    """*inner*, run on the host side in new PID, mount and network namespaces.

    Only loopback exists in that network namespace, so nothing inside reaches
    beyond it; every process started inside dies with it.  *root* gets /proc
    /dev/pts and a /dev/shm (PostgreSQL needs it).  With *serve*, that directory is
    served over HTTP on 127.0.0.1:*port* inside the namespace (a mirror).
    """
    script = [
        "set -eu",
        "ip link set lo up",
        f"mount -t proc proc {shlex.quote(str(root / 'proc'))}",
        f"mkdir -p {shlex.quote(str(root / 'dev/shm'))}",
        f"mount -t tmpfs -o mode=1777 tmpfs {shlex.quote(str(root / 'dev/shm'))}",
        # apt and dpkg log through a pseudo-terminal.
        f"mkdir -p {shlex.quote(str(root / 'dev/pts'))}",
        "mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts "
        f"{shlex.quote(str(root / 'dev/pts'))}",
        f"mount --bind {shlex.quote(str(root / 'dev/pts/ptmx'))} "
        f"{shlex.quote(str(root / 'dev/ptmx'))}",
    ]
    if serve is not None:
        script += [
            f"/usr/bin/python3 -m http.server --bind 127.0.0.1 --directory "
            f"{shlex.quote(str(serve))} {port} >/dev/null 2>&1 &",
            "for _ in $(seq 50); do "
            f"(exec 3<>/dev/tcp/127.0.0.1/{port}) 2>/dev/null && break; sleep 0.1; done",
        ]
    script.append('exec "$@"')
    return [
        "unshare",
        "--net",
        "--pid",
        "--fork",
        "--mount",
        "--mount-proc",
        "--propagation",
        "private",
        "bash",
        "-c",
        "\n".join(script),
        "offline",
        *inner,
    ]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="publish_root", description=__doc__.split("\n")[0])
    parser.add_argument("--suite", default="bookworm")
    parser.add_argument("--kind", choices=KINDS, action="append", help="default: both")
    parser.add_argument("--force", action="store_true", help="rebuild even if cached")
    args = parser.parse_args(argv)
    for kind in args.kind or KINDS:
        print(build(kind, args.suite, force=args.force).relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
