"""po-debconf: templates.pot is current, fr.po is complete and valid, and
debconf-updatepo (run on a copy of debian/) leaves both unchanged."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_debconf_updatepo_changes_nothing(tmp_path):
    debian = tmp_path / "debian"
    shutil.copytree(ROOT / "debian", debian)
    subprocess.run(["debconf-updatepo"], cwd=debian, check=True, capture_output=True)
    for name in ("templates.pot", "fr.po"):
        assert (
            (debian / "po" / name).read_text() == (ROOT / "debian" / "po" / name).read_text()
        ), f"debian/po/{name} is out of date: run debconf-updatepo in debian/ and commit it"


def test_french_is_complete_and_valid():
    proc = subprocess.run(
        ["msgfmt", "-c", "--statistics", "-o", "/dev/null", str(ROOT / "debian/po/fr.po")],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "LC_ALL": "C.UTF-8"},  # the statistics below are read in English
    )
    stats = proc.stderr.strip()
    assert "translated message" in stats
    assert "fuzzy" not in stats and "untranslated" not in stats, stats


def test_po2debconf_merges_french_into_every_translatable_template():
    merged = subprocess.run(
        ["po2debconf", str(ROOT / "debian/matrix-synapse-setup.templates")],
        cwd=ROOT / "debian",
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    source = (ROOT / "debian/matrix-synapse-setup.templates").read_text()
    assert merged.count("Description-fr.UTF-8:") == source.count("_Description:")
    assert merged.count("Choices-fr.UTF-8:") == source.count("__Choices:")
