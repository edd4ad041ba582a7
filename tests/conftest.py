"""Make the in-tree package importable with Debian's /usr/bin/python3; order and group the
tests for pytest-xdist (`invoke test` runs a pass with the system tests on several
workers, tasks.py's MSS_TEST_WORKERS)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.system import journeys  # importable once the project is on the path

# The unit and integration tests share the host (one throwaway cluster per session, the
# host's process table, dist/): under --dist loadgroup they form one group, run in their
# usual order by one worker, while the other workers take the system scenarios.
HOST_GROUP = "host"
# System test files by the length of their scenarios and journeys, longest first (as
# build/test-results/durations.txt shows them after `invoke test`): the long ones start
# first, so that the run does not end with one of them alone on one worker.
LONGEST_FIRST = (
    "test_publish_autopkgtest.py",
    "test_migration.py",
    "test_booted.py",
    "test_workers_booted.py",
    "test_unchanged.py",
    "test_scenarios.py",
    "test_backup_booted.py",
    "test_admin_booted.py",
    "test_publish.py",
    "test_security.py",
    "test_crash_safety.py",
    "test_preconfigure.py",
    "test_postgresql_settings.py",
)


def _rank(item: pytest.Item) -> int:
    if "tests/system/" not in str(item.path):
        return -1  # the host group first: it is the longest unit of work
    name = item.path.name
    return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not hasattr(config, "workerinput"):  # not an xdist worker (the workers collect)
        return
    items.sort(key=_rank)  # stable: the order within a file stays
    for item in items:
        if "tests/system/" not in str(item.path):
            item.add_marker(pytest.mark.xdist_group(HOST_GROUP))
        elif (journey := journeys.key(item)) is not None:
            # A journey's steps share one root: one worker runs them, in order; the two
            # releases' journeys are two groups.  No "]" at the end of a group's name:
            # xdist (3.1) takes "name@group" for a group only if the "@" comes after the
            # last "]" (a test parameter may hold an "@").
            item.add_marker(pytest.mark.xdist_group("-".join(journey)))
