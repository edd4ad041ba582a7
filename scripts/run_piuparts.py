#!/usr/bin/python3
"""piuparts install/purge and upgrade cycles for the built .deb.

    scripts/run_piuparts.py DEB [--suite S] [--from-repo DIR --from-suite S] [--keep-env]

1. install + purge: piuparts installs the .deb (with its dependencies, from
   the mirror) into a fresh chroot, removes and reinstalls it
   (config-files-remaining state), then removes and purges it, and fails on
   any file left behind, changed or missing.
2. upgrade: the previous version is installed from an apt repository, upgraded
   to the .deb, then removed and purged.  The previous version is the one in
   --from-repo (a repository made by `invoke repo`, e.g. the published mirror),
   or else this tree built with a lower version (as the system tests build it),
   published unsigned into a temporary repository.

The chroot comes from the cached minbase tarball of scripts/publish_root.py,
which has PostgreSQL installed with its cluster stopped (piuparts' policy-rc.d
starts no service); piuparts fetches the dependencies from the host's Debian
mirror.  Custom scripts in scripts/piuparts/ preseed the answer to "server
unreachable".  No --install-recommends: on trixie, piuparts then cannot remove
the protected packages (e2fsprogs) that postgresql's Recommends pull in.
Logs: build/piuparts/*.log.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOGS = ROOT / "build" / "piuparts"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import publish_root  # noqa: E402

from scripts.devtools.roots import apt_sources  # noqa: E402


def mirror(suite: str) -> str:
    """The host's Debian mirror URI (piuparts adds suite and component itself)."""
    return apt_sources(suite)[0].split()[1]


def lower_version_build(workdir: Path) -> Path:
    """This tree with a lower version on top of debian/changelog (the "previous release").

    The system tests' builder, so both upgrade from the same (cached) build."""
    import tasks
    from scripts.devtools.builds import older_build

    return older_build(tasks, workdir)


def piuparts(
    deb: Path, suite: str, basetgz: Path, log: Path, extra: list[str], keep_env: bool
) -> int:
    cmd = [
        "piuparts",
        "--basetgz",
        str(basetgz),
        "--distribution",
        suite,
        "--mirror",
        mirror(suite),
        "--scriptsdir",
        str(ROOT / "scripts" / "piuparts"),
        "--log-file",
        str(log),
        "--warn-on-debsums-errors",  # the base tarball is mmdebstrap's, not debootstrap's
        # apt's debconf preconfiguration (any package with templates) leaves this
        # empty directory behind on trixie; it is debconf's, not ours.
        "--ignore=/var/cache/debconf/tmp.ci/",
        *extra,
    ]
    if keep_env:
        cmd.append("--keep-env")
    cmd.append(str(deb.resolve()))
    print(f"run_piuparts: {' '.join(cmd)}", flush=True)
    return subprocess.run(cmd, check=False).returncode


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="run_piuparts", description=__doc__.split("\n")[0])
    parser.add_argument("deb", type=Path)
    parser.add_argument("--suite", default="bookworm")
    parser.add_argument("--from-repo", type=Path, help="repository holding the previous version")
    parser.add_argument("--from-suite", default="stable", help="its suite (default: stable)")
    parser.add_argument("--keep-env", action="store_true", help="keep the chroot (debugging)")
    args = parser.parse_args(argv)
    if not args.deb.is_file():
        print(f"run_piuparts: {args.deb} does not exist: run invoke build", file=sys.stderr)
        return 1
    if shutil.which("piuparts") is None:
        print("run_piuparts: piuparts is missing: run scripts/bootstrap", file=sys.stderr)
        return 1
    basetgz = publish_root.build("piuparts", args.suite)
    shutil.rmtree(LOGS, ignore_errors=True)
    LOGS.mkdir(parents=True)
    results = {}
    results["install-purge"] = piuparts(
        args.deb,
        args.suite,
        basetgz,
        LOGS / "install-purge.log",
        ["--no-upgrade-test", "--install-remove-install"],
        args.keep_env,
    )
    with tempfile.TemporaryDirectory(prefix="mss-piuparts-") as tmp:
        if args.from_repo:
            repo, suite = args.from_repo.resolve(), args.from_suite
            # Signed: the chroot's apt checks it with the repository's own key file.
            keyring = repo / "archive-keyring.gpg"
            signed = (repo / "dists" / suite / "InRelease").exists() and keyring.exists()
            trusted = f"[signed-by={keyring}] " if signed else "[trusted=yes] "
        else:
            old = lower_version_build(Path(tmp))
            repo, suite, trusted = Path(tmp) / "repo", "stable", "[trusted=yes] "
            subprocess.run(
                [
                    sys.executable,
                    str(ROOT / "scripts" / "repo.py"),
                    str(repo),
                    str(old),
                    "--suite",
                    suite,
                    "--unsigned",
                ],
                check=True,
            )
        source = f"deb {trusted}file://{repo} {suite} main"
        extra = ["--no-install-purge-test", "--bindmount", str(repo), "--extra-repo", source]
        results["upgrade"] = piuparts(
            args.deb, args.suite, basetgz, LOGS / "upgrade.log", extra, args.keep_env
        )
    for name, code in results.items():
        print(
            f"run_piuparts: {name}: {'PASS' if code == 0 else f'FAIL (exit {code})'}"
            f" - log in {(LOGS / f'{name}.log').relative_to(ROOT)}"
        )
    return max(results.values())


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
