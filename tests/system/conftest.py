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

from scripts.devtools import harness, roots, steps
from scripts.devtools.builds import older_build

PROJECT = Path(__file__).resolve().parents[2]
FULL = os.environ.get("MSS_SYSTEM_FULL") == "1"
FULL_SUITE = "trixie"
SMOKE_MARK = "smoke"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{SMOKE_MARK}: system scenario run on every release")


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
def lowers() -> Iterator[Callable[[str], Path]]:
    """suite -> the cached root, extracted once per session (the overlays' lower layer)."""
    made: dict[str, Path] = {}

    def get(suite: str) -> Path:
        if suite not in made:
            made[suite] = harness.extract(roots.build(suite, quiet=True))
        return made[suite]

    yield get
    for path in made.values():
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def postgresql_layers(lowers, workdir) -> Callable[[str], Path]:
    """suite -> an overlay layer holding `apt-get install postgresql` done once per session
    (offline, from the root's cache) with its cluster stopped cleanly; scenarios that have
    PostgreSQL before our package start from it instead of installing it each time."""
    made: dict[str, Path] = {}

    def get(suite: str) -> Path:
        if suite not in made:
            made[suite] = steps.postgresql_layer(suite, lowers(suite), workdir)
        return made[suite]

    return get


@pytest.fixture
def make_root(request, lowers, postgresql_layers, debs) -> Iterator[Callable[..., harness.Root]]:
    """make_root(suite, postgresql=False, booted=False) -> a started root with the .debs in
    harness.DEBS.  With postgresql=True, PostgreSQL is installed (as by `apt-get install
    postgresql`) and its cluster runs.  With booted=True, a real systemd is the root's PID 1
    (harness.BootedRoot): the cluster is then postgresql@VER-main, enabled and started at
    boot.  Stopped afterwards."""
    started: list[harness.Root] = []
    scenario = request.node.originalname.removeprefix("test_")

    def make(suite: str, postgresql: bool = False, booted: bool = False) -> harness.Root:
        layers = [lowers(suite)]
        if postgresql:
            layers.insert(0, postgresql_layers(suite))
        kind = harness.BootedRoot if booted else harness.Root
        root = kind(scenario, suite, layers)
        started.append(root)
        for path in debs.values():
            root.put_file(path, f"{harness.DEBS}/{path.name}")
        root.__enter__()
        if postgresql and booted:
            steps.check_cluster_booted(root)
        elif postgresql:
            root.ok(
                "pg_ctlcluster $(pg_lsclusters -h | cut -d' ' -f1) main start",
                what="starting the PostgreSQL cluster",
            )
        return root

    yield make
    failed = bool(getattr(request.node, "rep_call", None) and request.node.rep_call.failed)
    for root in started:
        root.failed = failed
        root.stop()


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)
