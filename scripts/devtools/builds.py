"""Builds of this tree for the upgrade tests and tools (system tests, piuparts)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from scripts.devtools import roots


def older_build(tasks, workdir: Path) -> Path:
    """The same tree with a lower version on top of debian/changelog (for the upgrade).

    Cached in build/cache by the digest of the package's inputs."""
    files = tasks.source_files()
    digest = tasks.inputs_digest(files)[:16]
    version = f"{tasks.version()}~systest1"
    cached = roots.CACHE / f"system-old-{digest}" / f"{tasks.PACKAGE}_{version}_all.deb"
    if cached.exists():
        return cached
    src = workdir / "old-src" / tasks.PACKAGE
    for name in files:
        dest = src / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(roots.PROJECT / name, dest)
    changelog = src / "debian" / "changelog"
    text = changelog.read_text(encoding="utf-8")
    trailer = next(line for line in text.splitlines() if line.startswith(" -- "))
    entry = (
        f"{tasks.PACKAGE} ({version}) unstable; urgency=medium\n\n"
        "  * System-test build with a lower version, to test upgrades.\n\n"
        f"{trailer}\n\n"
    )
    changelog.write_text(entry + text, encoding="utf-8")
    # Debian's tools first on PATH, as `invoke build` does (a pyenv python3 has no
    # python3-debconf); nocheck: this run of `invoke test` runs the unit tests itself.
    env = {**os.environ, "PATH": tasks.BUILD_PATH, "DEB_BUILD_OPTIONS": "nocheck"}
    proc = subprocess.run(
        ["dpkg-buildpackage", "--build=all", "--no-sign"],
        cwd=src,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    built = src.parent / cached.name
    if proc.returncode or not built.exists():
        raise AssertionError(f"building the older .deb failed:\n{proc.stdout[-3000:]}{proc.stderr}")
    cached.parent.mkdir(parents=True, exist_ok=True)
    partial = cached.with_suffix(f".{os.getpid()}.tmp")
    shutil.move(built, partial)
    os.replace(partial, cached)  # other test sessions may use the cache at the same time
    for old in roots.CACHE.glob("system-old-*"):  # prune builds of trees a day old
        if old != cached.parent and time.time() - old.stat().st_mtime > 86400:
            shutil.rmtree(old, ignore_errors=True)
    return cached
