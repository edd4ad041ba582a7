"""postinst triggered: Synapse's unit file arrived after us."""

import os
import stat

from matrix_synapse_setup import maint, snippet

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
    monkeypatch.setattr(snippet, "DROPIN", dropin)
    owner = snippet.Ownership(os.getuid(), os.getgid(), 0o640)
    monkeypatch.setattr(snippet, "ownership", lambda user=snippet.SYNAPSE_USER: owner)
    monkeypatch.setattr(maint, "synapse_installed", lambda: installed)
    restarts = []
    monkeypatch.setattr(maint, "restart_synapse", restarts.append)
    monkeypatch.setattr(maint, "daemon_reload", lambda: None)
    return path, dropin, restarts


def test_trigger_lets_synapse_read_and_orders_it_after_postgresql(tmp_path, monkeypatch):
    path, dropin, restarts = arrange(tmp_path, monkeypatch)
    assert maint.triggered(path) == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert "After=postgresql.service" in dropin.read_text()
    assert restarts == ["restart"]
    # Synapse upgraded later: the trigger fires again and changes nothing.
    assert maint.triggered(path) == 0
    assert restarts == ["restart"]


def test_trigger_without_a_snippet_does_nothing(tmp_path, monkeypatch):
    path, dropin, restarts = arrange(tmp_path, monkeypatch)
    path.unlink()
    assert maint.triggered(path) == 0
    assert not dropin.exists() and restarts == []


def test_trigger_for_a_remote_database_writes_no_dropin(tmp_path, monkeypatch):
    path, dropin, restarts = arrange(tmp_path, monkeypatch)
    path.write_text(TEXT.replace("host: localhost", "host: db.example.org"))
    maint.triggered(path)
    assert not dropin.exists()
    assert restarts == ["restart"]  # the file's mode was fixed


def test_ucf_backups_are_not_readable_by_others(tmp_path, monkeypatch):
    path, dropin, restarts = arrange(tmp_path, monkeypatch)
    backup = path.with_name(path.name + ".ucf-dist")
    backup.write_text(TEXT)
    backup.chmod(0o644)
    maint.triggered(path)
    assert stat.S_IMODE(backup.stat().st_mode) == 0o640
