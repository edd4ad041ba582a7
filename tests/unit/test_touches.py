"""tests/system/touches.toml, the map of `invoke test --changed`, stays true to the tree:
every runtime module is listed, every pattern still matches a tracked file, and every test
it names exists.  A file it does not list runs every system test, so a gap is never unsafe;
these checks keep the inner loop from quietly running everything."""

from __future__ import annotations

import fnmatch
import subprocess
import tomllib
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]
TOUCHES = PROJECT / "tests" / "system" / "touches.toml"
SYSTEM_TESTS = {p.name for p in (PROJECT / "tests" / "system").glob("test_*.py")}


@pytest.fixture(scope="module")
def touches() -> dict[str, list[str]]:
    with open(TOUCHES, "rb") as fh:
        return tomllib.load(fh)["touches"]


@pytest.fixture(scope="module")
def tracked() -> list[str]:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=PROJECT, capture_output=True, check=True
        ).stdout.decode()

    try:
        top = Path(git("rev-parse", "--show-toplevel").strip()).resolve()
    except (OSError, subprocess.CalledProcessError):
        top = None
    if top != PROJECT:  # a source package's tree, maybe inside another checkout's build/
        pytest.skip("not the top of a git checkout: no list of files to compare with")
    out = git("ls-files", "-z", "--cached", "--others", "--exclude-standard")
    return [name for name in out.split("\0") if name]


def test_every_runtime_module_is_listed(touches):
    modules = [
        str(p.relative_to(PROJECT))
        for p in sorted((PROJECT / "matrix_synapse_setup").rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    ]
    missing = [m for m in modules if not any(fnmatch.fnmatchcase(m, pat) for pat in touches)]
    assert not missing, f"add these to {TOUCHES.name}: {missing}"


def test_every_pattern_matches_a_file(touches, tracked):
    stale = [pat for pat in touches if not any(fnmatch.fnmatchcase(f, pat) for f in tracked)]
    assert not stale, f"{TOUCHES.name} lists what the tree no longer has: {stale}"


def test_every_named_test_exists(touches):
    named = {name for tests in touches.values() for name in tests} - {"*", "self"}
    assert named <= SYSTEM_TESTS, sorted(named - SYSTEM_TESTS)
    assert all(tests in (["*"], ["self"]) or "*" not in tests for tests in touches.values())
