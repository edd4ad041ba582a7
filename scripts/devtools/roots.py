"""Cached Debian roots for the system tests (bookworm and trixie), built with mmdebstrap.

Each root is a tarball build/cache/system-<suite>-<key>.tar.zst, where <key> hashes the package
lists, the PyPI pins and HARNESS_VERSION, so a change to any of them builds a new root.
The mirror is read at run time from the host's apt sources; no host name is written here.

Inside each root (built with network; the scenarios run without it):
- installed: python3, python3-venv, adduser, apt-utils and a few tools (DOWNLOAD_ONLY stays NOT
  installed: scenario 1 must unpack libpq5 in the same dpkg run as our package);
- downloaded only (apt cache, with Recommends, as a user's `apt install` would want them):
  DOWNLOAD_ONLY;
- /opt/venvs/matrix-synapse: Synapse from PyPI (pinned), built with the root's own python3;
- /opt/venvs/judge: matrix-nio (pinned), the Matrix client that judges the result;
- /etc/hosts (mmdebstrap roots have none).

Run as a script: `/usr/bin/python3 -m scripts.devtools.roots [--suite S] [--dry-run] [--force]`
(`invoke roots` does that).
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent.parent
CACHE = PROJECT / "build" / "cache"
SUITES = ("bookworm", "trixie")

# Bump when the way a root is made changes (hook script, layout), not only its lists.
HARNESS_VERSION = "3"

# apt-utils (Priority: important, on every regular install) makes apt preconfigure packages
# (debconf's config script runs before unpack), as on a user's machine; trixie's apt does
# that by itself.
INSTALL = [
    "python3",
    "python3-venv",
    "adduser",
    "procps",
    "iproute2",
    "ca-certificates",
    "apt-utils",
    # A real service manager for the booted scenarios (harness.BootedRoot); installed but
    # not running, it changes nothing for the others (/run/systemd/system is absent there).
    "systemd",
    "systemd-sysv",
    "dbus",
]
DOWNLOAD_ONLY = [
    "postgresql",
    "python3-psycopg",
    "python3-jinja2",
    "python3-yaml",
    "python3-debconf",
    "ucf",
    "debconf",
    "libpq5",
    # Synapse's workers: Redis between the processes, nginx routing to them.
    "redis-server",
    "nginx",
    # The `dendrite` command edits Dendrite's YAML with its comments kept (a Suggests).
    "python3-ruamel.yaml",
]
# The redis extra (txredisapi, hiredis): workers talk to each other through Redis.
SYNAPSE_PIP = ["matrix-synapse[redis]==1.163.2", "psycopg2-binary==2.9.10"]
JUDGE_PIP = ["matrix-nio==0.26.0"]


def cache_key(suite: str) -> str:
    spec = {
        "suite": suite,
        "harness": HARNESS_VERSION,
        "install": INSTALL,
        "download": DOWNLOAD_ONLY,
        "synapse": SYNAPSE_PIP,
        "judge": JUDGE_PIP,
        "hook": (HERE / "root-customize.sh").read_text(),
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def tarball(suite: str) -> Path:
    return CACHE / f"system-{suite}-{cache_key(suite)}.tar.zst"


def _host_codename() -> str:
    for line in Path("/etc/os-release").read_text().splitlines():
        if line.startswith("VERSION_CODENAME="):
            return line.split("=", 1)[1].strip().strip('"')
    raise RuntimeError("cannot tell the host's Debian release from /etc/os-release")


def _host_entries() -> list[tuple[str, list[str]]]:
    """(URI, suites) of every enabled `deb` source of the host, deb822 and one-line style."""
    entries: list[tuple[str, list[str]]] = []
    for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
        for stanza in re.split(r"\n\s*\n", Path(path).read_text()):
            fields: dict[str, str] = {}
            key = None
            for line in stanza.splitlines():
                if line.startswith("#") or not line.strip():
                    continue
                if line[0].isspace() and key:
                    fields[key] += " " + line.strip()
                    continue
                key, _, value = line.partition(":")
                key = key.strip().lower()
                fields[key] = value.strip()
            if "deb" not in fields.get("types", "").split():
                continue
            if fields.get("enabled", "yes").lower() == "no":
                continue
            for uri in fields.get("uris", "").split():
                entries.append((uri, fields.get("suites", "").split()))
    lists = ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*.list"))]
    for path in lists:
        if not os.path.exists(path):
            continue
        for line in Path(path).read_text().splitlines():
            words = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
            if len(words) >= 3 and words[0] == "deb":
                entries.append((words[1], [words[2]]))
    return entries


def apt_sources(suite: str) -> list[str]:
    """One-line apt sources for SUITE, built from the host's Debian mirror (and security)."""
    host = _host_codename()
    mirror = security = None
    updates = False
    for uri, suites in _host_entries():
        if host in suites and mirror is None:
            mirror = uri
            updates = f"{host}-updates" in suites
        if f"{host}-security" in suites and security is None:
            security = uri
    if mirror is None:
        raise RuntimeError(
            f"no apt source for {host} on this host: the system tests build their roots "
            "from the host's Debian mirror (/etc/apt/sources.list.d/*.sources)"
        )
    lines = [f"deb {mirror} {suite} main"]
    if updates:
        lines.append(f"deb {mirror} {suite}-updates main")
    if security:
        lines.append(f"deb {security} {suite}-security main")
    return lines


def mmdebstrap_command(suite: str, output: Path) -> list[str]:
    return [
        "mmdebstrap",
        "--mode=root",
        "--variant=apt",
        "--format=tar",
        "--include=" + ",".join(INSTALL),
        "--skip=cleanup/apt",  # keep lists and downloaded .debs: the scenarios run offline
        "--customize-hook=" + str(HERE / "root-customize.sh"),
        suite,
        str(output),
        *apt_sources(suite),
    ]


def build(suite: str, force: bool = False, dry_run: bool = False, quiet: bool = False) -> Path:
    """Build (or reuse) the cached root of SUITE; return the tarball's path."""
    target = tarball(suite)
    say = (lambda *_: None) if quiet else print
    if target.exists() and not force:
        say(f"{target.relative_to(PROJECT)} is up to date")
        return target
    cmd = mmdebstrap_command(suite, target)
    if dry_run:
        say(f"would build {target.relative_to(PROJECT)} with: {' '.join(cmd)}")
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    env = {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": "/root",
        "LC_ALL": "C.UTF-8",
        "MSS_DOWNLOAD": " ".join(DOWNLOAD_ONLY),
        "MSS_SYNAPSE_PIP": " ".join(SYNAPSE_PIP),
        "MSS_JUDGE_PIP": " ".join(JUDGE_PIP),
        "MSS_CA_BUNDLE": "/etc/ssl/certs/ca-certificates.crt",
    }
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"mss-root-{suite}-", dir=CACHE) as tmp:
        partial = Path(tmp) / target.name
        cmd = mmdebstrap_command(suite, partial)
        say(f"building {target.relative_to(PROJECT)} (mmdebstrap, network needed)")
        result = subprocess.run(cmd, env=env, capture_output=quiet, text=True, check=False)
        if result.returncode:
            tail = (result.stderr or "")[-4000:] if quiet else ""
            raise RuntimeError(f"mmdebstrap for {suite} failed (exit {result.returncode})\n{tail}")
        os.replace(partial, target)
    for old in CACHE.glob(f"system-{suite}-*.tar.zst"):
        if old != target:
            old.unlink()
    say(f"built {target.relative_to(PROJECT)} in {time.monotonic() - started:.0f} s")
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", action="append", choices=SUITES, help="default: all")
    parser.add_argument("--force", action="store_true", help="rebuild even if cached")
    parser.add_argument("--dry-run", action="store_true", help="say what would be done")
    args = parser.parse_args(argv)
    if os.geteuid() != 0 and not args.dry_run:
        print("roots: mmdebstrap --mode=root needs root", file=sys.stderr)
        return 1
    if not args.dry_run and shutil.which("mmdebstrap") is None:
        print("roots: mmdebstrap is missing: run scripts/bootstrap", file=sys.stderr)
        return 1
    for suite in args.suite or SUITES:
        build(suite, force=args.force, dry_run=args.dry_run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
