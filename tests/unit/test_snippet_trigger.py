"""postinst triggered: Synapse's unit file arrived after us."""

import os
import stat

import pytest

from matrix_synapse_setup.core.paths import SYNAPSE_USER
from matrix_synapse_setup.files import atomic
from matrix_synapse_setup.postinst import main as maint
from matrix_synapse_setup.synapse import service as services

TEXT = """\
database:
  name: psycopg2
  args: {host: localhost, port: 5432, dbname: synapse, user: synapse, password: pw}
"""


def arrange(tmp_path, monkeypatch, *, installed=True):
    path = tmp_path / "conf.d" / "database.yaml"
    path.parent.mkdir()
    path.write_text(TEXT)
    path.chmod(0o600)
    dropin = tmp_path / "matrix-synapse.service.d" / "matrix-synapse-setup.conf"
    owner = atomic.Ownership(os.getuid(), os.getgid(), 0o640)
    monkeypatch.setattr(atomic, "ownership", lambda user=SYNAPSE_USER: owner)
    restarts = []
    monkeypatch.setattr(services, "restart_synapse", restarts.append)
    return path, dropin, restarts


def test_trigger_lets_synapse_read_the_snippet(tmp_path, monkeypatch):
    # The drop-in that orders Synapse after PostgreSQL is shipped (debian/systemd/):
    # the trigger writes none.
    path, dropin, restarts = arrange(tmp_path, monkeypatch)
    assert maint.synapse_arrived(path) == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert not dropin.exists()
    assert restarts == ["restart"]
    # Synapse upgraded later: the trigger fires again and changes nothing.
    assert maint.synapse_arrived(path) == 0
    assert restarts == ["restart"]


def test_trigger_without_a_snippet_does_nothing(tmp_path, monkeypatch):
    path, dropin, restarts = arrange(tmp_path, monkeypatch)
    path.unlink()
    assert maint.synapse_arrived(path) == 0
    assert not dropin.exists() and restarts == []


def test_ucf_backups_are_not_readable_by_others(tmp_path, monkeypatch):
    path, dropin, restarts = arrange(tmp_path, monkeypatch)
    backup = path.with_name(path.name + ".ucf-dist")
    backup.write_text(TEXT)
    backup.chmod(0o644)
    maint.synapse_arrived(path)
    assert stat.S_IMODE(backup.stat().st_mode) == 0o640


# Stands in for deb-systemd-invoke and invoke-rc.d, as a real process on PATH: records
# its name and arguments, writes a line on its stdout, exits with the code the test chose.
TOOL = """#!/bin/sh
echo "$(basename "$0") $*" >> "$MSS_TOOL_CALLS"
echo "stdout of $(basename "$0")"
exit "$(cat "$MSS_TOOL_EXIT")"
"""


@pytest.fixture
def tools(tmp_path, monkeypatch):
    """deb-systemd-invoke and invoke-rc.d on PATH (before the real ones); Synapse's unit
    installed.  Returns run(action, exit_code, systemd=True) -> (calls, stdout, stderr)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name in ("deb-systemd-invoke", "invoke-rc.d"):
        (bindir / name).write_text(TOOL)
        (bindir / name).chmod(0o755)
    calls, code = tmp_path / "calls", tmp_path / "exit"
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    monkeypatch.setenv("MSS_TOOL_CALLS", str(calls))
    monkeypatch.setenv("MSS_TOOL_EXIT", str(code))
    unit, initscript = tmp_path / "matrix-synapse.service", tmp_path / "init.d-matrix-synapse"
    unit.write_text("[Unit]\n")
    initscript.write_text("#!/bin/sh\n")
    monkeypatch.setattr(services, "SYNAPSE_UNITS", (unit,))
    monkeypatch.setattr(services, "SYNAPSE_INITSCRIPT", initscript)

    def run(action, exit_code, *, systemd=True):
        code.write_text(f"{exit_code}\n")
        calls.unlink(missing_ok=True)
        # systemd "runs" when its runtime directory exists
        monkeypatch.setattr(services, "SYSTEMD_RUNNING", tmp_path if systemd else tmp_path / "no")
        services.restart_synapse(action)
        return calls.read_text().splitlines() if calls.exists() else []

    return run


def test_a_restart_refused_by_policy_is_no_failure(tools, capfd):
    # 101: policy-rc.d forbade the action (invoke-rc.d's code; the admin's choice)
    assert tools("try-restart", 101) == ["deb-systemd-invoke try-restart matrix-synapse.service"]
    assert "warning" not in capfd.readouterr().err
    assert tools("restart", 101, systemd=False) == ["invoke-rc.d matrix-synapse restart"]
    assert "warning" not in capfd.readouterr().err


def test_a_restart_that_fails_is_reported(tools, capfd):
    assert tools("restart", 1) == ["deb-systemd-invoke restart matrix-synapse.service"]
    assert "warning: restarting Synapse failed (exit 1)" in capfd.readouterr().err
    assert tools("restart", 0) == ["deb-systemd-invoke restart matrix-synapse.service"]
    assert "warning" not in capfd.readouterr().err


def test_the_tools_output_never_reaches_fd_1(tools, capfd):
    """In a maintainer script fd 1 is debconf's pipe: the child's stdout goes to stderr."""
    tools("restart", 0)
    tools("restart", 101, systemd=False)
    out, err = capfd.readouterr()
    assert out == ""
    assert "stdout of deb-systemd-invoke" in err and "stdout of invoke-rc.d" in err


def test_a_missing_tool_is_a_warning_not_a_crash(tools, monkeypatch, capfd):
    monkeypatch.setenv("PATH", "/nonexistent")
    assert tools("restart", 0) == []
    assert "deb-systemd-invoke is missing" in capfd.readouterr().err
