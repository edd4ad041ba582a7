"""postinst triggered: Synapse's unit file arrived after us."""

import os
import stat

from matrix_synapse_setup import maint, services, snippet

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
    owner = snippet.Ownership(os.getuid(), os.getgid(), 0o640)
    monkeypatch.setattr(snippet, "ownership", lambda user=snippet.SYNAPSE_USER: owner)
    restarts = []
    monkeypatch.setattr(maint, "restart_synapse", restarts.append)
    return path, dropin, restarts


def test_trigger_lets_synapse_read_the_snippet(tmp_path, monkeypatch):
    # The drop-in that orders Synapse after PostgreSQL is shipped (debian/systemd/):
    # the trigger writes none.
    path, dropin, restarts = arrange(tmp_path, monkeypatch)
    assert maint.triggered(path) == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert not dropin.exists()
    assert restarts == ["restart"]
    # Synapse upgraded later: the trigger fires again and changes nothing.
    assert maint.triggered(path) == 0
    assert restarts == ["restart"]


def test_trigger_without_a_snippet_does_nothing(tmp_path, monkeypatch):
    path, dropin, restarts = arrange(tmp_path, monkeypatch)
    path.unlink()
    assert maint.triggered(path) == 0
    assert not dropin.exists() and restarts == []


def test_ucf_backups_are_not_readable_by_others(tmp_path, monkeypatch):
    path, dropin, restarts = arrange(tmp_path, monkeypatch)
    backup = path.with_name(path.name + ".ucf-dist")
    backup.write_text(TEXT)
    backup.chmod(0o644)
    maint.triggered(path)
    assert stat.S_IMODE(backup.stat().st_mode) == 0o640


def test_restart_honours_policy_and_survives_a_missing_tool(tmp_path, monkeypatch, capsys):
    unit = tmp_path / "matrix-synapse.service"
    unit.write_text("[Unit]\n")
    monkeypatch.setattr(services, "SYNAPSE_UNITS", (unit,))
    monkeypatch.setattr(services, "SYSTEMD_RUNNING", tmp_path)  # "systemd runs"
    calls = []

    def fake_run(cmd, **kwargs):
        calls.append(cmd)
        assert kwargs["stdout"] is not None  # never the debconf pipe on fd 1
        if cmd[0] == "deb-systemd-invoke" and len(calls) == 2:
            raise FileNotFoundError(cmd[0])
        return services.subprocess.CompletedProcess(cmd, 101 if len(calls) == 1 else 0)

    monkeypatch.setattr(services.subprocess, "run", fake_run)
    services.restart_synapse("try-restart")  # 101: policy-rc.d said no; not an error
    assert calls[0] == ["deb-systemd-invoke", "try-restart", "matrix-synapse.service"]
    assert "warning" not in capsys.readouterr().err
    services.restart_synapse("restart")
    assert "deb-systemd-invoke is missing" in capsys.readouterr().err
