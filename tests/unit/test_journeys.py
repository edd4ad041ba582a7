"""The journey hooks (tests/system/journeys.py) in a pytest of their own: after a failed
step the later steps of that journey are errors that name it, never passes, and the same
journey on the other release is not touched."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]

CONFTEST = """
import pytest
from tests.system import journeys

pytest_runtest_setup = journeys.pytest_runtest_setup

def pytest_configure(config):
    journeys.register(config)

@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    journeys.record(item, outcome.get_result())

@pytest.fixture(scope="class")
def root(request, suite):
    journeys.claim(request.node.nodeid, suite)
    return []
"""

JOURNEY = """
import pytest

@pytest.mark.journey
@pytest.mark.parametrize("suite", ["trixie", "bookworm"], scope="class")
class TestTrip:
    def test_one(self, root, suite):
        root.append(1)

    def test_two(self, root, suite):
        root.append(2)
        assert suite != "bookworm", "broken on bookworm"

    def test_three(self, root, suite):
        assert root == [1, 2]
"""


def run(tmp_path: Path) -> dict[str, tuple[str, str]]:
    """test name -> (outcome, message) of the sample journey, run by a pytest of its own."""
    (tmp_path / "conftest.py").write_text(CONFTEST, encoding="utf-8")
    (tmp_path / "test_trip.py").write_text(JOURNEY, encoding="utf-8")
    junit = tmp_path / "out.xml"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--strict-markers"]
    cmd += [f"--junitxml={junit}", "--rootdir", str(tmp_path), str(tmp_path)]
    env = {"PYTHONPATH": str(PROJECT), "PATH": "/usr/bin:/bin"}
    subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, check=False)
    results = {}
    for case in ET.parse(junit).getroot().iter("testcase"):  # noqa: S314 - our own run's file
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            found = case.find(tag)
            if found is not None:
                outcome, message = tag, found.get("message", "")
        results[case.get("name", "")] = (outcome, message)
    return results


def test_a_step_after_a_failed_one_is_an_error_naming_it(tmp_path):
    results = run(tmp_path)
    assert results["test_two[bookworm]"][0] == "failure"
    outcome, message = results["test_three[bookworm]"]
    assert outcome == "error", results
    assert "stopped at test_two[bookworm] (call)" in message and "did not run" in message


def test_the_same_journey_on_the_other_release_runs_on(tmp_path):
    results = run(tmp_path)
    for step in ("test_one", "test_two", "test_three"):
        assert results[f"{step}[trixie]"][0] == "passed", results
    assert results["test_one[bookworm]"][0] == "passed"
