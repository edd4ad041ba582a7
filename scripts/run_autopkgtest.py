#!/usr/bin/python3
"""Run debian/tests with autopkgtest's chroot virt-server in a throwaway, offline root.

    scripts/run_autopkgtest.py DEB [--output-dir DIR] [--suite S] [--shell-fail]

The testbed is a fresh copy of the cached root from scripts/publish_root.py
(the dependencies are in its apt cache, so nothing is downloaded), run in PID,
mount and network namespaces of its own.  Its policy-rc.d lets PostgreSQL's
service (and only it) start when it is installed, as it starts in a container
or a VM: autopkgtest installs the package together with PostgreSQL (Depends: @,
postgresql), and the package provisions the running cluster.  The source tree handed to
autopkgtest is a snapshot of the files `invoke build` uses.  Exit status is
autopkgtest's (0 all passed, 2 some skipped, 4 failed, 8 no tests ran...).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import publish_root  # noqa: E402
import repro  # noqa: E402


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="run_autopkgtest", description=__doc__.split("\n")[0])
    parser.add_argument("deb", type=Path)
    parser.add_argument("--output-dir", type=Path, default=ROOT / "build" / "autopkgtest")
    parser.add_argument("--suite", default="bookworm")
    parser.add_argument("--test", action="append", help="only this test (repeatable)")
    parser.add_argument(
        "--shell-fail", action="store_true", help="a shell in the testbed on failure"
    )
    args = parser.parse_args(argv)
    if not args.deb.is_file():
        print(f"run_autopkgtest: {args.deb} does not exist: run invoke build", file=sys.stderr)
        return 1
    if shutil.which("autopkgtest") is None:
        print("run_autopkgtest: autopkgtest is missing: run scripts/bootstrap", file=sys.stderr)
        return 1
    files = repro.snapshot()
    tests = test_names(files)
    shutil.rmtree(args.output_dir, ignore_errors=True)
    args.output_dir.mkdir(parents=True)
    worst = 0
    # One fresh testbed per test: the chroot virt-server cannot revert one.
    for name in args.test or tests:
        code = run_one(files, name, args)
        print(f"run_autopkgtest: {name}: autopkgtest exit {code}", flush=True)
        worst = max(worst, code)
    print(f"run_autopkgtest: logs in {args.output_dir} (exit {worst})")
    return worst


def test_names(files: repro.Snapshot) -> list[str]:
    from debian.deb822 import Deb822

    control = dict((name, data) for name, data, _ in files)["debian/tests/control"]
    return [
        n
        for stanza in Deb822.iter_paragraphs(control.decode())
        for n in stanza.get("Tests", "").replace(",", " ").split()
    ]


# A chroot has no init system: invoke-rc.d starts nothing without a policy-rc.d that
# allows it.  Only PostgreSQL may start; anything else is refused (101).
POLICY_RC_D = """#!/bin/sh
while [ $# -gt 0 ]; do
    case "$1" in --*) shift ;; *) break ;; esac
done
case "${1:-}" in
    postgresql|postgresql.service|postgresql@*) exit 0 ;;
esac
exit 101
"""


def run_one(files: repro.Snapshot, name: str, args: argparse.Namespace) -> int:
    with (
        publish_root.extracted("testbed", args.suite) as root,
        tempfile.TemporaryDirectory(prefix="mss-autopkgtest-src-") as tmp,
    ):
        policy = root / "usr" / "sbin" / "policy-rc.d"
        policy.write_text(POLICY_RC_D)
        policy.chmod(0o755)
        src = Path(tmp) / "matrix-synapse-setup"
        repro.write_tree(files, src, 0o022, None)
        # A built tree (debian/files names its .deb): autopkgtest then needs no
        # dpkg-source in the testbed and builds nothing.
        (src / "debian" / "files").write_text(f"{args.deb.name} net optional\n")
        inner = [
            "autopkgtest",
            "--output-dir",
            str(args.output_dir / name),
            "--test-name",
            name,
            "--ignore-restrictions=isolation-container",
        ]
        if args.shell_fail:
            inner.append("--shell-fail")
        inner += [str(args.deb.resolve()), str(src), "--", "chroot", str(root)]
        return subprocess.run(publish_root.offline_command(root, inner), check=False).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
