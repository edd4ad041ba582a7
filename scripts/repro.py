#!/usr/bin/python3
"""Build the package twice under different conditions and compare what they make.

    scripts/repro.py [--keep DIR]

The two builds differ in everything a build must not depend on: the source
directory (name and depth), the umask (022 / 077, applied to the copied tree
and to the build), the clock (the second build runs under faketime, days
later), the time zone and the locale.  Both copy the same files `invoke build`
uses (tasks.source_files) and run the same dpkg-buildpackage command as
`invoke build` (tasks.BUILDPACKAGE: the source package and the .deb).  The
.debs, the .dsc files and the source tarballs must be byte-identical, and every
member of the .deb must carry the changelog's date (SOURCE_DATE_EPOCH).  (The
.buildinfo and .changes record the build's date and environment: they differ by
design.)  On a difference, diffoscope explains it.
Exit 0 when reproducible, 1 when not.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tasks import (  # noqa: E402
    BUILD_PATH,
    BUILDPACKAGE,
    PACKAGE,
    changelog_epoch,
    source_files,
    stage_tree,
    version,
)


@dataclass(frozen=True)
class Variation:
    name: str
    subdir: str  # where, below the work directory, the source tree goes
    umask: int
    faketime: str | None  # a faketime(1) offset, or None for the real clock
    tz: str
    lang: str
    age: int | None  # make the copied files this many seconds older than the changelog


VARIATIONS = (
    Variation("first", "a/" + PACKAGE, 0o022, None, "UTC", "C.UTF-8", None),
    Variation(
        "second",
        "b/deeper/path/src-" + PACKAGE + "-copy",
        0o077,
        "+3d",
        "Pacific/Chatham",
        "C",
        86400 * 400,
    ),
)


def source_date_epoch() -> int:
    return changelog_epoch()


Snapshot = list[tuple[str, bytes, bool]]


def snapshot() -> Snapshot:
    """The files `invoke build` uses, read once, so both builds see the same tree."""
    return [
        (name, (ROOT / name).read_bytes(), os.access(ROOT / name, os.X_OK))
        for name in source_files()
    ]


def write_tree(files: Snapshot, dest: Path, umask: int, mtime: int | None) -> None:
    """The snapshot as a checkout made under *umask* (and at *mtime*) has it."""
    for name, data, executable in files:
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(target.parent, 0o777 & ~umask)
        target.write_bytes(data)
        os.chmod(target, (0o777 if executable else 0o666) & ~umask)
        if mtime is not None:
            os.utime(target, (mtime, mtime))


def artefacts() -> list[str]:
    """What a build makes that must not depend on where, when or how it ran."""
    return [
        f"{PACKAGE}_{version()}_all.deb",
        f"{PACKAGE}_{version()}.dsc",
        f"{PACKAGE}_{version()}.tar.xz",
    ]


def build(work: Path, files: Snapshot, var: Variation, log) -> list[Path]:
    """A checkout made under the variation, built as `invoke build` builds it: from a
    copy (tasks.stage_tree) in a directory named after the package."""
    checkout = work / var.subdir
    mtime = None if var.age is None else source_date_epoch() - var.age
    write_tree(files, checkout, var.umask, mtime)
    srcdir = checkout.parent / f"{checkout.name}.build" / PACKAGE
    env = {
        "PATH": BUILD_PATH,
        "HOME": str(work),
        "TZ": var.tz,
        "LANG": var.lang,
        "LC_ALL": var.lang,
    }
    cmd = list(BUILDPACKAGE)
    if var.faketime:
        cmd = ["faketime", "-f", var.faketime, *cmd]
    old = os.umask(var.umask)
    try:
        stage_tree(checkout, [name for name, _, _ in files], srcdir)
        date = subprocess.run(
            ["faketime", "-f", var.faketime, "date", "-u"] if var.faketime else ["date", "-u"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        files_date = "fresh" if mtime is None else f"dated @{mtime}"
        print(
            f"repro: {var.name} build of {checkout} in {srcdir} "
            f"(umask {var.umask:03o}, TZ={var.tz}, LC_ALL={var.lang}, clock {date}, "
            f"files {files_date})",
            file=log,
            flush=True,
        )
        result = subprocess.run(
            cmd, cwd=srcdir, env=env, stdout=log, stderr=subprocess.STDOUT, check=False
        )
    finally:
        os.umask(old)
    made = [srcdir.parent / name for name in artefacts()]
    if result.returncode or not all(path.exists() for path in made):
        raise SystemExit(
            f"repro: the {var.name} build failed (dpkg-buildpackage exit "
            f"{result.returncode}); see the log above"
        )
    return made


def member_dates(deb: Path) -> dict[str, int]:
    """mtime of every member: the ar members and each entry of data and control tarballs."""
    from debian.arfile import ArFile

    dates = {}
    ar = ArFile(str(deb))
    for member in ar.getmembers():
        dates[f"ar:{member.name}"] = int(member.mtime)
        if member.name.startswith(("data.tar", "control.tar")):
            with tarfile.open(fileobj=ar.getmember(member.name), mode="r:*") as tar:
                for entry in tar.getmembers():
                    dates[f"{member.name}:{entry.name}"] = int(entry.mtime)
    return dates


def diffoscope(a: Path, b: Path) -> str:
    if shutil.which("diffoscope") is None:
        return "(diffoscope is not installed: run scripts/bootstrap)"
    result = subprocess.run(
        ["diffoscope", "--text", "-", str(a), str(b)], capture_output=True, text=True, check=False
    )
    return result.stdout + result.stderr


def check(keep: Path | None = None, log=sys.stdout) -> tuple[bool, str]:
    """Build twice; return (reproducible, report)."""
    work = Path(tempfile.mkdtemp(prefix="mss-repro-", dir=keep))
    try:
        files = snapshot()
        builds = [build(work, files, var, log) for var in VARIATIONS]
        epoch = source_date_epoch()
        lines = []
        for var, made in zip(VARIATIONS, builds, strict=True):
            wrong = {k: v for k, v in member_dates(made[0]).items() if v != epoch}
            if wrong:
                lines.append(
                    f"{var.name} build: members not dated SOURCE_DATE_EPOCH {epoch}: "
                    + ", ".join(f"{k}={v}" for k, v in sorted(wrong.items())[:10])
                )
        same = []
        for a, b in zip(*builds, strict=True):
            if a.read_bytes() != b.read_bytes():
                lines.append(f"the two builds' {a.name} differ:\n{diffoscope(a, b)}")
            else:
                same.append(f"{a.name} sha256 {hashlib.sha256(a.read_bytes()).hexdigest()}")
        if not lines:
            lines.append(
                f"reproducible: both builds made {', '.join(same)}; every member of the "
                f".deb dated {epoch}"
            )
        return len(lines) == 1 and lines[0].startswith("reproducible"), "\n".join(lines)
    finally:
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"repro: builds kept in {work}", file=log)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="repro", description=__doc__.split("\n")[0])
    parser.add_argument("--keep", type=Path, help="build below this directory and keep it")
    args = parser.parse_args(argv)
    ok, report = check(args.keep)
    print(("repro: " if ok else "repro: error: ") + report, file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
