"""Reproducible builds: two real dpkg-buildpackage runs give byte-identical .debs and
source packages (.dsc and .tar.xz).

scripts/repro.py builds the package twice from copies of the tree in different
directories, with different umasks, clocks (faketime, days apart), time zones,
locales and file dates, and compares.  On failure the assertion message holds
diffoscope's explanation.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def repro():
    spec = importlib.util.spec_from_file_location("repro", ROOT / "scripts" / "repro.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["repro"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_two_builds_in_different_conditions_are_byte_identical(repro, tmp_path):
    with open(tmp_path / "build.log", "w+") as log:
        ok, report = repro.check(log=log)
        log.seek(0)
        text = log.read()
    assert ok, f"{report}\n--- end of the build log ---\n{text[-4000:]}"
    # Both builds really ran, in different directories, umasks and clocks.
    starts = [line for line in text.splitlines() if line.startswith("repro: ")]
    assert len(starts) == 2
    assert "umask 022" in starts[0] and "umask 077" in starts[1]
    assert "files fresh" in starts[0] and "files dated" in starts[1]
    # The source package was built and compared too, not only the .deb.
    for suffix in ("_all.deb sha256", ".dsc sha256", ".tar.xz sha256"):
        assert suffix in report, report


def test_a_difference_between_builds_is_caught_and_explained(repro, monkeypatch, tmp_path):
    """The check can fail: a tree that differs in one file gives diffoscope output."""
    write_tree = repro.write_tree

    def second_tree_differs(files, dest, umask, mtime):
        if umask == 0o077:
            files = [
                (name, data + b"# differs\n" if name == "debian/copyright" else data, x)
                for name, data, x in files
            ]
        write_tree(files, dest, umask, mtime)

    monkeypatch.setattr(repro, "write_tree", second_tree_differs)
    with open(tmp_path / "build.log", "w") as log:
        ok, report = repro.check(log=log)
    assert not ok
    for suffix in ("_all.deb differ", ".dsc differ", ".tar.xz differ"):
        assert suffix in report, report[:2000]
    assert "usr/share/doc/matrix-synapse-setup/copyright" in report
    assert "# differs" in report
