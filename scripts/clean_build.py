#!/usr/bin/python3
"""Rebuild the package from a published apt repository in a clean, throwaway root.

    scripts/clean_build.py REPO [--suite S] [--repo-suite stable] [--keyring K]
                           [--compare DEB] [--nocheck] [--output-dir DIR]

What a Debian developer (or a buildd) does with a published source, with nothing
of this machine in the way: a root made by mmdebstrap --variant=buildd (Essential,
apt, build-essential) with only the package's Build-Depends added (apt-get
satisfy, no Recommends; cached in build/cache/ by what it is made of), then, in a
fresh copy of it, offline (network namespace with loopback only; REPO served on
127.0.0.1), as an unprivileged user:

    apt-get source matrix-synapse-setup     (deb-src with Signed-By: --keyring)
    dpkg-buildpackage -b --no-sign          (unit tests run unless --nocheck)

The .deb it makes is copied to --output-dir; with --compare, it must be
byte-identical to that .deb.  Prints the time of each step.  Exit 0 on success.
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
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "build" / "cache"
sys.path.insert(0, str(ROOT / "scripts"))

import publish_root  # noqa: E402 - the offline namespaces, the host's mirror

PACKAGE = "matrix-synapse-setup"
PORT = 8080
BUILDER = "builder"  # uid/gid 1000 in the root
PROG = "clean_build"


def build_depends() -> str:
    """debian/control's Build-Depends (profiles included), as apt-get satisfy takes it."""
    from debian.deb822 import Deb822

    with open(ROOT / "debian" / "control", encoding="utf-8") as fh:
        source = next(Deb822.iter_paragraphs(fh))
    return " ".join(source["Build-Depends"].split()).rstrip(",")


def mmdebstrap_command(suite: str, output: Path) -> list[str]:
    hosts = f"printf '{publish_root.HOSTS}' > \"$1/etc/hosts\""
    user = (
        f"echo '{BUILDER}:x:1000:1000::/home/{BUILDER}:/bin/sh' >> \"$1/etc/passwd\" && "
        f"echo '{BUILDER}:x:1000:' >> \"$1/etc/group\" && "
        f'mkdir -p "$1/home/{BUILDER}" && chown 1000:1000 "$1/home/{BUILDER}"'
    )
    return [
        "mmdebstrap",
        "--mode=root",
        "--variant=buildd",
        "--format=tar",
        # What sbuild installs besides build-essential: the Build-Depends, no Recommends.
        '--customize-hook=chroot "$1" apt-get satisfy -y -q --no-install-recommends '
        + shlex.quote(build_depends()),
        "--customize-hook=" + hosts,
        "--customize-hook=" + user,
        suite,
        str(output),
        *publish_root.apt_sources(suite),
    ]


def tarball(suite: str) -> Path:
    key = hashlib.sha256(json.dumps(mmdebstrap_command(suite, Path("OUT"))).encode())
    return CACHE / f"publish-buildd-{suite}-{key.hexdigest()[:16]}.tar.zst"


def build_root(suite: str) -> Path:
    """The cached root (made when missing or when the Build-Depends changed)."""
    target = tarball(suite)
    if target.exists():
        return target
    if shutil.which("mmdebstrap") is None:
        raise SystemExit(f"{PROG}: mmdebstrap is missing: run scripts/bootstrap")
    CACHE.mkdir(parents=True, exist_ok=True)
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LC_ALL": "C.UTF-8"}
    with tempfile.TemporaryDirectory(prefix=f"publish-buildd-{suite}-", dir=CACHE) as tmp:
        partial = Path(tmp) / "root.tar.zst"
        result = subprocess.run(mmdebstrap_command(suite, partial), env=env, check=False)
        if result.returncode or not partial.exists():
            raise SystemExit(f"{PROG}: mmdebstrap for {suite} failed (exit {result.returncode})")
        os.replace(partial, target)
    for old in CACHE.glob(f"publish-buildd-{suite}-*"):
        if old != target and old.is_file():
            old.unlink()
    return target


@contextlib.contextmanager
def extracted(source: Path):
    """A fresh copy of the cached root in a temporary directory (removed afterwards)."""
    top = Path(tempfile.mkdtemp(prefix="publish-buildd-"))
    try:
        subprocess.run(
            ["tar", "-C", str(top), "--extract", "--file", str(source)],
            check=True,
            capture_output=True,
        )
        yield top
    finally:
        subprocess.run(["rm", "-rf", "--one-file-system", str(top)], check=False)


def inner_script(root: Path, repo_suite: str, signed_by: str, nocheck: bool) -> str:
    """Run on the host side inside the namespaces: chroot for root's steps, --userspec
    for the builder's."""
    q = shlex.quote
    as_root = f"chroot {q(str(root))}"
    as_builder = f"chroot --userspec=1000:1000 {q(str(root))} env HOME=/home/{BUILDER}"
    options = "nocheck" if nocheck else ""
    source = (
        f"Types: deb-src\\nURIs: http://127.0.0.1:{PORT}/\\nSuites: {repo_suite}\\n"
        f"Components: main\\n{signed_by}"
    )
    steps = [
        ("apt-get update", f"{as_root} apt-get update -q"),
        (
            "apt-get source",
            f"{as_builder} sh -c 'cd /home/{BUILDER} && apt-get source -q {PACKAGE}'",
        ),
        (
            "dpkg-buildpackage -b",
            f"{as_builder} DEB_BUILD_OPTIONS={q(options)} sh -c "
            f"'cd /home/{BUILDER}/{PACKAGE}-* && dpkg-buildpackage -b --no-sign'",
        ),
    ]
    lines = [
        "set -eu",
        # Only the repository under test: the root's Debian sources are unreachable here.
        f"rm -f {q(str(root / 'etc/apt/sources.list'))}",
        f"printf {q(source)} > {q(str(root / 'etc/apt/sources.list.d/mss.sources'))}",
    ]
    for what, command in steps:
        lines += [
            "start=$EPOCHREALTIME",
            command,
            f'echo "$start $EPOCHREALTIME" | awk \'{{printf "{PROG}: {what}: %.1f s\\n", '
            "$2 - $1}'",
        ]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    parser.add_argument("repo", type=Path, help="the published repository (scripts/repo.py)")
    parser.add_argument("--suite", default="bookworm", help="Debian release of the build root")
    parser.add_argument("--repo-suite", default="stable", help="the repository's suite")
    parser.add_argument("--keyring", type=Path, help="the repository's key (else trusted=yes)")
    parser.add_argument("--compare", type=Path, help="the .deb the rebuild must equal")
    parser.add_argument("--nocheck", action="store_true", help="DEB_BUILD_OPTIONS=nocheck")
    parser.add_argument("--output-dir", type=Path, default=ROOT / "build" / "clean-build")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print(f"{PROG}: needs root (mmdebstrap --mode=root, namespaces)", file=sys.stderr)
        return 1
    began = time.monotonic()
    cached = build_root(args.suite)
    print(f"{PROG}: build root {cached.name}: {time.monotonic() - began:.1f} s", flush=True)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    with extracted(cached) as root:
        print(f"{PROG}: root extracted: {time.monotonic() - began:.1f} s", flush=True)
        signed_by = "Trusted: yes\\n"
        if args.keyring is not None:
            (root / "etc/apt/keyrings").mkdir(parents=True, exist_ok=True)
            shutil.copyfile(args.keyring, root / "etc/apt/keyrings/mss.gpg")
            signed_by = "Signed-By: /etc/apt/keyrings/mss.gpg\\n"
        script = inner_script(root, args.repo_suite, signed_by, args.nocheck)
        command = publish_root.offline_command(
            root, ["bash", "-c", script, PROG], serve=args.repo.resolve(), port=PORT
        )
        result = subprocess.run(command, check=False)
        debs = sorted((root / "home" / BUILDER).glob(f"{PACKAGE}_*_all.deb"))
        if result.returncode or len(debs) != 1:
            print(f"{PROG}: the build failed (exit {result.returncode})", file=sys.stderr)
            return 1
        built = args.output_dir / debs[0].name
        shutil.copyfile(debs[0], built)
    print(f"{PROG}: built {built} in {time.monotonic() - began:.1f} s in all", flush=True)
    if args.compare is not None:
        if built.read_bytes() != args.compare.read_bytes():
            print(f"{PROG}: error: {built} differs from {args.compare}", file=sys.stderr)
            return 1
        sha = hashlib.sha256(built.read_bytes()).hexdigest()
        print(f"{PROG}: identical to {args.compare} (sha256 {sha})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
