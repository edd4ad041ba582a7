"""Dendrite's binaries for the system test of `matrix-synapse-setup dendrite`.

Built from source with the host's Go toolchain, at the last release under the project's
original licence, into build/dendrite-<version>/bin/: `dendrite`, `generate-keys`,
`generate-config` and `create-account`.  CGO is off, so the binaries are static and run
inside every test root whatever its C library.  Beside bin/ lies the release's own
`dendrite-sample.yaml`, the commented configuration an admin starts from (generate-config
writes no comments, and the command under test must keep them).

The build is cached: nothing is done when the four binaries and the sample exist.  It is
made in a temporary directory renamed into place, so a killed build leaves no half cache.
Go's module download follows the environment (GOPROXY, GOFLAGS, GOMODCACHE) unchanged.

Run as a script: `/usr/bin/python3 -m scripts.devtools.dendrite [--force]`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent.parent
MODULE = "github.com/matrix-org/dendrite"
VERSION = "v0.13.8"
COMMANDS = ("dendrite", "generate-keys", "generate-config", "create-account")
SAMPLE = "dendrite-sample.yaml"
TARGET = PROJECT / "build" / f"dendrite-{VERSION}"


class BuildError(RuntimeError):
    """The binaries could not be built; the message is one line for the developer."""


def _complete(top: Path) -> bool:
    return all((top / "bin" / name).is_file() for name in COMMANDS) and (top / SAMPLE).is_file()


def _go() -> str:
    found = shutil.which("go") or next(
        (p for p in ("/usr/local/go/bin/go", "/usr/lib/go/bin/go") if os.access(p, os.X_OK)),
        None,
    )
    if found is None:
        raise BuildError(f"go is missing: install a Go toolchain to build Dendrite {VERSION}")
    return found


def _run(cmd: list[str], env: dict[str, str]) -> str:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise BuildError(f"{' '.join(cmd[:2])} failed (exit {proc.returncode}): {tail}")
    return proc.stdout


def build(force: bool = False, quiet: bool = True) -> Path:
    """Build (or reuse) the binaries and the sample; return build/dendrite-<version>/."""
    say = (lambda *_: None) if quiet else print
    if _complete(TARGET) and not force:
        say(f"{TARGET.relative_to(PROJECT)} is up to date")
        return TARGET
    go = _go()
    env = {**os.environ, "CGO_ENABLED": "0"}
    TARGET.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    say(f"building Dendrite {VERSION} with {go} (module download may need the network)")
    with tempfile.TemporaryDirectory(prefix=f".dendrite-{VERSION}-", dir=TARGET.parent) as tmp:
        partial = Path(tmp) / "out"
        (partial / "bin").mkdir(parents=True)
        _run(
            [go, "install", *(f"{MODULE}/cmd/{name}@{VERSION}" for name in COMMANDS)],
            {**env, "GOBIN": str(partial / "bin")},
        )
        # The sample comes from the very module the binaries were built from.
        modcache = _run([go, "env", "GOMODCACHE"], env).strip()
        sample = Path(modcache) / f"{MODULE}@{VERSION}" / SAMPLE
        if not sample.is_file():
            raise BuildError(f"{sample} is missing after the build")
        shutil.copyfile(sample, partial / SAMPLE)
        os.chmod(partial / SAMPLE, 0o644)
        if TARGET.exists():
            shutil.rmtree(TARGET)
        os.replace(partial, TARGET)
    say(f"built {TARGET.relative_to(PROJECT)} in {time.monotonic() - started:.0f} s")
    return TARGET


def binaries() -> Path:
    """The directory holding the four binaries (built on first use)."""
    return build() / "bin"


def sample() -> Path:
    """The release's commented dendrite-sample.yaml."""
    return build() / SAMPLE


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="rebuild even if cached")
    args = parser.parse_args(argv)
    try:
        build(force=args.force, quiet=False)
    except BuildError as exc:
        print(f"dendrite: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
