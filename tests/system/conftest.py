"""Fixtures of the system tests: the .debs under test, the cached roots, a root per scenario.

Quick mode (the default): every scenario on trixie (what most users run), a smoke subset
on bookworm; MSS_SYSTEM_FULL=1 runs every scenario on both.  MSS_KEEP_ROOTS=1 keeps a failed
scenario's files.  A missing root cache is built first (mmdebstrap; network to the Debian
mirror and PyPI).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from scripts.devtools import harness, layers, steps
from scripts.devtools.builds import older_build
from tests.system import journeys

PROJECT = Path(__file__).resolve().parents[2]
FULL = os.environ.get("MSS_SYSTEM_FULL") == "1"
FULL_SUITE = "trixie"
SMOKE_MARK = "smoke"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{SMOKE_MARK}: system scenario run on every release")
    journeys.register(config)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/system/" not in str(item.path):
            continue
        item.add_marker(pytest.mark.system)
        suite = getattr(item, "callspec", None) and item.callspec.params.get("suite")
        if FULL or suite in (None, FULL_SUITE) or item.get_closest_marker(SMOKE_MARK):
            continue
        item.add_marker(
            pytest.mark.skip(
                reason=f"quick mode: full set on {FULL_SUITE}, smoke subset on {suite}; "
                "MSS_SYSTEM_FULL=1 runs it"
            )
        )


@pytest.fixture(scope="session", autouse=True)
def _root_needed() -> None:
    if os.geteuid() != 0:
        pytest.fail("the system tests need root (mmdebstrap, unshare, chroot): run as root")
    for tool in ("mmdebstrap", "unshare", "nsenter", "zstd", "dpkg-deb", "dpkg-buildpackage"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: run scripts/bootstrap")


@pytest.fixture(scope="session")
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="mss-system-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def debs(workdir: Path) -> dict[str, Path]:
    """The .debs every scenario gets in harness.DEBS: ours and Synapse's stand-in."""
    import tasks  # the project's tasks.py: one definition of the version and the inputs

    built = subprocess.run(["invoke", "build"], cwd=PROJECT, capture_output=True, text=True)
    if built.returncode:
        pytest.fail(f"`invoke build` failed:\n{built.stdout[-3000:]}{built.stderr[-3000:]}")
    current = tasks.deb_path()
    assert current.exists(), f"`invoke build` did not produce {current}"
    standin = steps.standin_deb(workdir)
    return {"current": current, "synapse": standin}


@pytest.fixture(scope="session")
def old_deb(workdir: Path, debs) -> Path:
    """An older build of ours (for the upgrade scenario); copy it into a root yourself."""
    import tasks

    return older_build(tasks, workdir)


@pytest.fixture(scope="session")
def lowers() -> Callable[[str, str | None], list[Path]]:
    """(suite, layer) -> the lower layers of a root that starts from that cached layer
    (layers.SPECS; None: the bare root), top first; built once and kept in build/cache."""
    return layers.chain


def _includes(layer: str | None, name: str) -> bool:
    """Whether a root on LAYER has what layer NAME made (it is LAYER or below it)."""
    while layer is not None:
        if layer == name:
            return True
        layer = layers.SPECS[layer].below
    return False


class RootMaker:
    """make(suite, ...) -> a started root with the .debs in harness.DEBS; stop() stops
    every root it made.  For one scenario (make_root) or one journey (journey_root)."""

    def __init__(self, scenario: str, lowers, debs) -> None:
        self.scenario = scenario
        self.lowers = lowers
        self.debs = debs
        self.started: list[harness.Root] = []

    def __call__(
        self,
        suite: str,
        postgresql: bool = False,
        booted: bool = False,
        layer: str | None = None,
        synapse_started: bool = True,
    ) -> harness.Root:
        layer = layer or ("postgresql" if postgresql else None)
        kind = harness.BootedRoot if booted else harness.Root
        root = kind(self.scenario, suite, self.lowers(suite, layer))
        self.started.append(root)
        for path in self.debs.values():
            root.put_file(path, f"{harness.DEBS}/{path.name}")
        root.__enter__()
        if _includes(layer, "postgresql") and booted:
            steps.check_cluster_booted(root)
        elif _includes(layer, "postgresql"):
            root.ok(
                "pg_ctlcluster $(pg_lsclusters -h | cut -d' ' -f1) main start",
                what="starting the PostgreSQL cluster",
            )
        if _includes(layer, "synapse") and booted:
            steps.synapse_up(root, "Synapse starts at boot (on SQLite, from the layer)")
        elif _includes(layer, "synapse") and synapse_started:
            root.ok(["invoke-rc.d", "matrix-synapse", "start"], what="starting Synapse")
            steps.synapse_up(root, "Synapse starts (on SQLite, from the layer)")
        return root

    def stop(self, failed: bool) -> None:
        for root in self.started:
            root.failed = failed
            root.stop()


@pytest.fixture
def make_root(request, lowers, debs) -> Iterator[RootMaker]:
    """make_root(suite, postgresql=False, booted=False, layer=None, synapse_started=True)
    -> a started root with the .debs in harness.DEBS.  With postgresql=True, PostgreSQL is
    installed (as by `apt-get install postgresql`) and its cluster runs.  layer= starts from
    another cached layer (layers.SPECS): "synapse" (Synapse laid out by its stand-in and
    running on SQLite; synapse_started=False leaves it stopped where no init system runs),
    "synapse-data" (with a user, a room and messages).  With booted=True, a real systemd is
    the root's PID 1 (harness.BootedRoot): the cluster is then postgresql@VER-main, and
    Synapse's unit, enabled and started at boot.  Stopped afterwards."""
    maker = RootMaker(request.node.originalname.removeprefix("test_"), lowers, debs)
    yield maker
    maker.stop(bool(getattr(request.node, "rep_call", None) and request.node.rep_call.failed))


# --- journeys: the steps of a test class share one root, in order (journeys.py) -----------

pytest_runtest_setup = journeys.pytest_runtest_setup


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)
    journeys.record(item, report)


@pytest.fixture(scope="class")
def journey_root(request, lowers, debs, suite) -> Iterator[RootMaker]:
    """make_root for a journey (a test class marked journey): its roots live until the
    class's last step.  The class parametrizes `suite` with scope="class"."""
    key = journeys.claim(request.node.nodeid, suite)
    maker = RootMaker(request.cls.__name__.removeprefix("Test").lower(), lowers, debs)
    yield maker
    maker.stop(journeys.broken(key))
