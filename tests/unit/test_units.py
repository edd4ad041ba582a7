"""The workers' units: the unit files parse, the target's links are exactly ours, and
what runs to enable, start and stop them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from matrix_synapse_setup.core.steps import CHANGED, CREATED, OK
from matrix_synapse_setup.synapse import service, units, workers

PROJECT = Path(__file__).resolve().parents[2]
UNITS = PROJECT / "debian" / "systemd"
STANDIN = PROJECT / "scripts/devtools/synapse-standin/lib/systemd/system/matrix-synapse.service"
REDIS = workers.redis_server("redis")


def unit_lines(name: str) -> list[str]:
    text = (UNITS / name).read_text()
    return [ln for ln in text.splitlines() if ln and not ln.startswith("#")]


# --- the unit files ----------------------------------------------------------------------


def test_the_worker_unit_runs_what_synapses_own_unit_runs():
    """The interpreter and the configuration paths are the main unit's (the stand-in is a
    copy of Synapse's package's unit), plus the worker's own file."""
    main = dict(ln.split("=", 1) for ln in STANDIN.read_text().splitlines() if "=" in ln)
    worker = dict(
        ln.split("=", 1) for ln in unit_lines("matrix-synapse-worker@.service") if "=" in ln
    )
    expected = main["ExecStart"].replace("synapse.app.homeserver", "synapse.app.generic_worker")
    assert worker["ExecStart"] == (expected + " --config-path=/etc/matrix-synapse/workers/%i.yaml")
    for key in ("Type", "User", "WorkingDirectory", "EnvironmentFile", "Restart"):
        assert worker[key] == main[key], key


def test_the_worker_unit_follows_the_main_process():
    lines = unit_lines("matrix-synapse-worker@.service")
    assert "AssertPathExists=/etc/matrix-synapse/workers/%i.yaml" in lines
    assert "PartOf=matrix-synapse.service matrix-synapse.target" in lines
    assert "Requires=matrix-synapse.service" in lines
    after = " ".join(ln.removeprefix("After=") for ln in lines if ln.startswith("After="))
    for unit in (
        "matrix-synapse.service",
        "redis-server@matrix-synapse.service",
        "valkey-server@matrix-synapse.service",
        "postgresql.service",
    ):
        assert unit in after.split()
    assert "SyslogIdentifier=matrix-synapse-%i" in lines
    assert lines[-2:] == ["[Install]", "WantedBy=matrix-synapse.target"]


def test_the_target():
    lines = unit_lines("matrix-synapse.target")
    assert "Wants=matrix-synapse.service" in lines
    assert lines[-2:] == ["[Install]", "WantedBy=multi-user.target"]


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="no systemd-analyze here")
def test_the_unit_files_verify(tmp_path):
    """systemd-analyze verify, on copies whose interpreter exists here (verify checks that
    the command is executable, and this machine has no Synapse), beside the main unit
    that the worker requires (the stand-in's copy of Synapse's)."""
    for path in (
        UNITS / "matrix-synapse-worker@.service",
        UNITS / "matrix-synapse.target",
        STANDIN,
    ):
        text = path.read_text().replace("/opt/venvs/matrix-synapse/bin/python", sys.executable)
        (tmp_path / path.name.replace("@.", "@client1.")).write_text(text)
    result = subprocess.run(
        [
            "systemd-analyze",
            "verify",
            "--man=no",
            str(tmp_path / "matrix-synapse-worker@client1.service"),
            str(tmp_path / "matrix-synapse.target"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if "Failed to initialize manager" in result.stderr or "No medium" in result.stderr:
        pytest.skip(f"systemd-analyze cannot run here: {result.stderr.strip()}")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # an unknown key or section is only a warning


# --- the target's links ------------------------------------------------------------------


@pytest.fixture
def wants(tmp_path) -> Path:
    return tmp_path / "etc/systemd/system" / "matrix-synapse.target.wants"


def links(wants: Path) -> dict[str, str]:
    if not wants.is_dir():
        return {}
    return {entry: os.readlink(wants / entry) for entry in sorted(os.listdir(wants))}


def test_links_for_the_workers_and_redis(wants):
    template = units.WORKER_TEMPLATE
    steps, removed = units.link(("client1", "events1"), REDIS, wants)
    assert links(wants) == {
        "matrix-synapse-worker@client1.service": str(template),
        "matrix-synapse-worker@events1.service": str(template),
        "redis-server@matrix-synapse.service": str(REDIS.template),
    }
    assert [(s.name, s.outcome) for s in steps] == [
        ("matrix-synapse-worker@client1.service", CREATED),
        ("matrix-synapse-worker@events1.service", CREATED),
        ("redis-server@matrix-synapse.service", CREATED),
    ]
    assert removed == []
    assert units.enabled_workers(wants) == ("client1", "events1")


def test_links_unchanged_change_nothing(wants):
    units.link(("client1",), REDIS, wants)
    assert units.link(("client1",), REDIS, wants) == ([], [])


def test_fewer_workers_remove_ours_and_keep_the_admins(wants):
    units.link(("client1", "client2", "events1"), REDIS, wants)
    # An admin's own worker, and an admin's link to the main unit (upstream's docs do that).
    (wants / "matrix-synapse-worker@media1.service").symlink_to(units.WORKER_TEMPLATE)
    (wants / "matrix-synapse.service").symlink_to("/usr/lib/systemd/system/matrix-synapse.service")
    steps, removed = units.link(("client1", "events1"), REDIS, wants)
    assert removed == ["matrix-synapse-worker@client2.service"]
    assert [(s.name, s.outcome) for s in steps] == [
        ("matrix-synapse-worker@client2.service", CHANGED)
    ]
    assert sorted(links(wants)) == [
        "matrix-synapse-worker@client1.service",
        "matrix-synapse-worker@events1.service",
        "matrix-synapse-worker@media1.service",
        "matrix-synapse.service",
        "redis-server@matrix-synapse.service",
    ]
    assert units.enabled_workers(wants) == ("client1", "events1", "media1")


def test_none_removes_all_of_ours_and_the_empty_directory(wants):
    units.link(("federation_sender1", "background1"), REDIS, wants)
    steps, removed = units.link((), None, wants)
    assert removed == [
        "matrix-synapse-worker@background1.service",
        "matrix-synapse-worker@federation_sender1.service",
        "redis-server@matrix-synapse.service",
    ]
    assert not wants.exists()
    assert units.enabled_workers(wants) == ()


def test_none_keeps_a_directory_with_the_admins_links(wants):
    units.link(("client1",), None, wants)
    (wants / "matrix-synapse-worker@media1.service").symlink_to(units.WORKER_TEMPLATE)
    units.link((), None, wants)
    assert list(links(wants)) == ["matrix-synapse-worker@media1.service"]


def test_a_link_to_another_template_is_replaced(wants, tmp_path):
    valkey = workers.redis_server("valkey", tmp_path / "lib/systemd/system/valkey-server@.service")
    units.link(("client1",), REDIS, wants)
    steps, removed = units.link(("client1",), valkey, wants)
    assert removed == ["redis-server@matrix-synapse.service"]
    assert links(wants)["valkey-server@matrix-synapse.service"] == str(valkey.template)
    wrong = wants / "matrix-synapse-worker@client1.service"
    wrong.unlink()
    wrong.symlink_to("/elsewhere")
    steps, _ = units.link(("client1",), valkey, wants)
    assert [(s.name, s.outcome) for s in steps] == [
        ("matrix-synapse-worker@client1.service", CHANGED)
    ]
    assert links(wants)["matrix-synapse-worker@client1.service"] == str(units.WORKER_TEMPLATE)
    assert not any(name.endswith(".tmp") for name in links(wants))


def test_no_wants_directory_means_no_workers(wants):
    assert units.enabled_workers(wants) == ()
    assert units.link((), None, wants) == ([], [])
    assert not wants.exists()


# --- what runs ---------------------------------------------------------------------------


def commands(names, redis=REDIS, changed=False, **given):
    args = {"removed": [], "was_enabled": True, "reload": False, "systemd": True} | given
    return [" ".join(cmd) for cmd in units.commands(names, redis, changed, **args)]


def test_first_workers_enable_the_target_and_start_it():
    assert commands(("client1",), changed=True, was_enabled=False, reload=True) == [
        "deb-systemd-helper enable matrix-synapse.target",
        "systemctl daemon-reload",
        "deb-systemd-invoke start redis-server@matrix-synapse.service",
        "deb-systemd-invoke restart matrix-synapse.target",
    ]


def test_an_unchanged_run_only_makes_sure_they_run():
    assert commands(("client1",)) == [
        "deb-systemd-invoke start redis-server@matrix-synapse.service",
        "deb-systemd-invoke start matrix-synapse.target",
    ]


def test_fewer_workers_stop_the_ones_removed():
    removed = ["matrix-synapse-worker@client2.service"]
    assert commands(("client1",), changed=True, removed=removed, reload=True) == [
        "systemctl daemon-reload",
        "deb-systemd-invoke stop matrix-synapse-worker@client2.service",
        "deb-systemd-invoke start redis-server@matrix-synapse.service",
        "deb-systemd-invoke restart matrix-synapse.target",
    ]


def test_none_disables_the_target_and_stops_everything_of_ours():
    removed = ["matrix-synapse-worker@client1.service", "redis-server@matrix-synapse.service"]
    assert commands((), None, changed=True, removed=removed, reload=True) == [
        "deb-systemd-helper disable matrix-synapse.target",
        "systemctl daemon-reload",
        "deb-systemd-invoke stop matrix-synapse-worker@client1.service "
        "redis-server@matrix-synapse.service",
    ]


def test_none_again_does_nothing():
    assert commands((), None, was_enabled=False) == []


def test_without_systemd_only_the_target_is_enabled():
    assert commands(("client1",), changed=True, was_enabled=False, systemd=False) == [
        "deb-systemd-helper enable matrix-synapse.target"
    ]
    assert commands((), None, removed=["x"], systemd=False) == [
        "deb-systemd-helper disable matrix-synapse.target"
    ]


# Stands in for deb-systemd-helper, deb-systemd-invoke and systemctl, as real processes on
# PATH (the real ones would act on this machine's systemd): each records its name and
# arguments and writes a line on its stdout.  deb-systemd-helper makes the link to the
# target that the real one makes; "systemctl is-active" answers from $MSS_ACTIVE.
TOOL = """#!/bin/sh
echo "$(basename "$0") $*" >> "$MSS_TOOL_CALLS"
echo "stdout of $(basename "$0")"
case "$(basename "$0") $1" in
    "deb-systemd-helper enable") ln -s /usr/lib/systemd/system/$2 "$MSS_TARGET_LINK" ;;
    "deb-systemd-helper disable") rm -f "$MSS_TARGET_LINK" ;;
    "systemctl is-active") exit "$(cat "$MSS_ACTIVE")" ;;
esac
exit 0
"""


@pytest.fixture
def system(tmp_path, monkeypatch):
    """A fake system: the tools on PATH, Synapse's unit installed, systemd "running"
    (its runtime directory exists).  Returns the calls recorded, a function."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name in ("deb-systemd-helper", "deb-systemd-invoke", "systemctl"):
        (bindir / name).write_text(TOOL)
        (bindir / name).chmod(0o755)
    calls = tmp_path / "calls"
    system_dir = tmp_path / "etc/systemd/system"
    (system_dir / "multi-user.target.wants").mkdir(parents=True)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    monkeypatch.setenv("MSS_TOOL_CALLS", str(calls))
    monkeypatch.setenv(
        "MSS_TARGET_LINK", str(system_dir / "multi-user.target.wants" / units.TARGET)
    )
    active = tmp_path / "active"
    active.write_text("0\n")
    monkeypatch.setenv("MSS_ACTIVE", str(active))
    unit = tmp_path / "matrix-synapse.service"
    unit.write_text("[Unit]\n")
    monkeypatch.setattr(service, "SYNAPSE_UNITS", (unit,))
    monkeypatch.setattr(service, "SYSTEMD_RUNNING", tmp_path)
    monkeypatch.setattr(service, "SYSTEM_DIR", system_dir)

    def recorded() -> list[str]:
        found = calls.read_text().splitlines() if calls.exists() else []
        calls.unlink(missing_ok=True)
        return found

    return recorded


def test_apply_enables_starts_and_then_goes_back_to_none(system, tmp_path, capfd):
    wants = tmp_path / "etc/systemd/system/matrix-synapse.target.wants"
    steps = units.apply(("client1", "events1"), REDIS, True, wants=wants)
    assert system() == [
        "deb-systemd-helper enable matrix-synapse.target",
        "systemctl daemon-reload",
        "deb-systemd-invoke start redis-server@matrix-synapse.service",
        "deb-systemd-invoke restart matrix-synapse.target",
    ]
    assert units.target_enabled(wants.parent)
    assert units.enabled_workers(wants) == ("client1", "events1")
    assert [s.outcome for s in steps] == [CREATED] * 3 + [CHANGED, CHANGED, OK, CHANGED]
    out, err = capfd.readouterr()
    assert out == ""  # fd 1 is debconf's in a maintainer script
    assert "stdout of deb-systemd-invoke" in err

    # unchanged: nothing changes, the units are only made sure to run
    steps = units.apply(("client1", "events1"), REDIS, False, wants=wants)
    assert system() == [
        "deb-systemd-invoke start redis-server@matrix-synapse.service",
        "deb-systemd-invoke start matrix-synapse.target",
    ]
    assert all(s.outcome == OK for s in steps)

    # the whole of Synapse is the target now
    assert service.stop_synapse() is False  # "systemctl is-active" still says active
    assert system() == [
        "deb-systemd-invoke stop matrix-synapse.target",
        "systemctl is-active --quiet matrix-synapse.service",
    ]

    units.apply((), None, True, wants=wants)
    assert system() == [
        "deb-systemd-helper disable matrix-synapse.target",
        "systemctl daemon-reload",
        "deb-systemd-invoke stop matrix-synapse-worker@client1.service "
        "matrix-synapse-worker@events1.service redis-server@matrix-synapse.service",
    ]
    assert not units.target_enabled(wants.parent)
    assert not wants.exists()

    # and the main unit alone again
    assert service.start_synapse() is True
    assert system() == [
        "deb-systemd-invoke start matrix-synapse.service",
        "systemctl is-active --quiet matrix-synapse.service",
    ]


def test_apply_without_systemd_makes_the_links_and_says_so(system, tmp_path, monkeypatch, capfd):
    monkeypatch.setattr(service, "SYSTEMD_RUNNING", tmp_path / "no")
    wants = tmp_path / "etc/systemd/system/matrix-synapse.target.wants"
    units.apply(("federation_sender1", "background1"), REDIS, True, wants=wants)
    assert system() == ["deb-systemd-helper enable matrix-synapse.target"]
    assert units.enabled_workers(wants) == ("background1", "federation_sender1")
    assert "systemd does not run here" in capfd.readouterr().err


def test_a_failing_start_is_reported_not_raised(system, tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("PATH", "/nonexistent")
    wants = tmp_path / "etc/systemd/system/matrix-synapse.target.wants"
    steps = units.apply(("client1",), None, False, wants=wants)
    assert [s.detail for s in steps if s.detail.startswith("exit")] == ["exit 127"] * 3
    assert "deb-systemd-invoke start matrix-synapse.target failed" in capfd.readouterr().err
