"""debian/tests pass under autopkgtest, as `invoke autopkgtest` runs them.

Each test of debian/tests/control runs in a fresh copy of the cached testbed root
(scripts/publish_root.py), with autopkgtest's chroot virt-server, in PID, mount and
network namespaces of its own: offline, nothing reaches beyond the root's loopback.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from debian.deb822 import Deb822

PROJECT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("suite", ["trixie", "bookworm"])
def test_autopkgtests_pass(debs, tmp_path, suite):
    out = tmp_path / "autopkgtest"
    proc = subprocess.run(
        [
            sys.executable,
            str(PROJECT / "scripts" / "run_autopkgtest.py"),
            str(debs["current"]),
            "--output-dir",
            str(out),
            "--suite",
            suite,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    with open(PROJECT / "debian" / "tests" / "control") as fh:
        names = [n for p in Deb822.iter_paragraphs(fh) for n in p["Tests"].split()]
    summaries = {
        n: (out / n / "summary").read_text().strip()
        if (out / n / "summary").exists()
        else "(no summary)"
        for n in names
    }
    assert (
        proc.returncode == 0
    ), f"autopkgtest exit {proc.returncode}: {summaries}\n{proc.stdout[-6000:]}{proc.stderr}"
    assert names and all(s.split() == [n, "PASS"] for n, s in summaries.items()), summaries
