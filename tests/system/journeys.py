"""Journeys: the steps of a test class share one root per release, in order.

A class marked `journey`, with `suite` parametrized at class scope, is one journey per
release: its class-scoped root (conftest.py's journey_root) lives from its first step to
its last, and tests/conftest.py puts each journey's steps in one pytest-xdist group, so one
worker runs them in order.  Each step is its own test, so a failure names what broke.
Once a step fails (in its setup, call or teardown), every later step of that journey is
reported as an error that names the failed step: it did not run, and it never passes.
A journey whose root is asked for a second time in one process fails at once: its steps
were not run together (tests/unit/test_journeys.py runs these hooks in a pytest of its own).
"""

from __future__ import annotations

import pytest

MARK = "journey"

# journey -> the step that failed first (a journey runs on one worker: one process).
_BROKEN: dict[tuple[str, str], str] = {}
_STARTED: set[tuple[str, str]] = set()


def register(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARK}: the tests of this class are the steps of one journey on one root per "
        "release, in order; after a failure the later steps are errors, not runs",
    )


def key(item: pytest.Item) -> tuple[str, str] | None:
    """(the class's node id, the release) of a journey's step; None for another test."""
    if item.cls is None or item.get_closest_marker(MARK) is None:
        return None
    suite = item.callspec.params.get("suite") if hasattr(item, "callspec") else None
    return (item.parent.nodeid if item.parent else item.cls.__name__), str(suite)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """A step after a failed one is an error that names it, before any fixture runs."""
    found = key(item)
    if found is not None and found in _BROKEN:
        pytest.fail(
            f"journey {found[0]} on {found[1]} stopped at {_BROKEN[found]}: "
            "this step did not run",
            pytrace=False,
        )


def record(item: pytest.Item, report: pytest.TestReport) -> None:
    """Remember a journey's first failed step (call it from pytest_runtest_makereport)."""
    found = key(item)
    if found is not None and report.failed and found not in _BROKEN:
        _BROKEN[found] = f"{item.name} ({report.when})"


def claim(nodeid: str, suite: object) -> tuple[str, str]:
    """The journey's root is made now; a second time means its steps were split."""
    found = (nodeid, str(suite))
    if found in _STARTED:
        pytest.fail(f"journey {found[0]} on {found[1]}: its root was asked for twice", False)
    _STARTED.add(found)
    return found


def broken(found: tuple[str, str]) -> bool:
    return found in _BROKEN
