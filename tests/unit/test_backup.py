"""The backup hook's logic that needs no server: apt's hook input (protocol version 3),
dump names, retention, the debconf answer's check, version comparison."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from matrix_synapse_setup.commands import backup, restore
from matrix_synapse_setup.core.errors import SetupError
from matrix_synapse_setup.core.paths import DEFAULT_BACKUP_KEEP
from matrix_synapse_setup.core.settings import validate_keep
from matrix_synapse_setup.dpkg.packages import compare_versions
from matrix_synapse_setup.files import state
from matrix_synapse_setup.postgres.dump import pg_tool

# apt's hook input, version 3, as apt's pkgDPkgPM::SendPkgsInfo (apt-pkg/deb/dpkgpm.cc)
# writes it: "VERSION 3", the configuration as key=value lines (shortened here), an empty
# line, then per action "NAME OLDVER OLDARCH OLDMA DIR NEWVER NEWARCH NEWMA WHAT" ("- -
# none" for no version).  This one is `apt-get install ./newer.deb` with Synapse
# installed: the unpack line with the .deb, then the configure line.
# (tests/system/test_backup.py checks the parser against a real apt's input.)
APT_V3 = """\
VERSION 3
APT::Architecture=amd64
APT::Build-Essential::=build-essential
DPkg::Pre-Install-Pkgs::=/usr/sbin/dpkg-preconfigure --apt || true
DPkg::Tools::Options::/usr/share/matrix-synapse-setup/apt-backup-hook::Version=3
Dir::State::status=/var/lib/dpkg/status

matrix-synapse-py3 1.163.2+mss.systest all none < 1.163.3+mss.systest all none /tmp/debs/matrix-synapse-py3_1.163.3+mss.systest_all.deb
matrix-synapse-py3 1.163.2+mss.systest all none < 1.163.3+mss.systest all none **CONFIGURE**
"""  # noqa: E501

FRESH_INSTALL = """\
VERSION 3
APT::Architecture=amd64

matrix-synapse-py3 - - none < 1.163.2+mss.systest all none /var/cache/apt/archives/matrix-synapse-py3_1.163.2+mss.systest_all.deb
libpq5 - - none < 15.8-0+deb12u1 amd64 same /var/cache/apt/archives/libpq5_15.8-0+deb12u1_amd64.deb
"""  # noqa: E501

REINSTALL_AND_REMOVE = """\
VERSION 3

matrix-synapse 1.163.2 all none = 1.163.2 all none /var/cache/apt/archives/matrix-synapse_1.163.2_all.deb
matrix-synapse-py3 1.163.2 all none > - - none **REMOVE**
"""  # noqa: E501


def test_an_upgrade_of_synapse_is_seen_in_apts_version_3_input():
    actions = backup.parse_hook_input(APT_V3)
    assert len(actions) == 2
    first = actions[0]
    assert (first.package, first.old, first.direction, first.new) == (
        "matrix-synapse-py3",
        "1.163.2+mss.systest",
        "<",
        "1.163.3+mss.systest",
    )
    assert first.what.endswith(".deb")
    found = backup.synapse_upgrade(actions)
    assert found is first


def test_a_first_install_a_reinstall_or_a_removal_is_no_upgrade():
    assert backup.synapse_upgrade(backup.parse_hook_input(FRESH_INSTALL)) is None
    actions = backup.parse_hook_input(REINSTALL_AND_REMOVE)
    assert [a.package for a in actions] == ["matrix-synapse", "matrix-synapse-py3"]
    assert actions[1].new is None
    assert backup.synapse_upgrade(actions) is None


def test_a_downgrade_is_a_version_change_too():
    text = "VERSION 3\n\nmatrix-synapse 1.2 all none > 1.1 all none /x/matrix-synapse_1.1_all.deb\n"
    found = backup.synapse_upgrade(backup.parse_hook_input(text))
    assert found is not None and (found.old, found.new) == ("1.2", "1.1")


def test_version_2_input_is_read_too():
    text = "VERSION 2\nA::B=c\n\nmatrix-synapse-py3 1.0 < 1.1 /x/m_1.1_all.deb\n"
    found = backup.synapse_upgrade(backup.parse_hook_input(text))
    assert found is not None and (found.old, found.new) == ("1.0", "1.1")


def test_input_that_is_not_apts_protocol_is_refused():
    with pytest.raises(SetupError, match="Version"):
        backup.parse_hook_input("/var/cache/apt/archives/x.deb\n")


def test_dump_names_carry_the_version_and_read_back():
    name = backup.dump_name("1.163.2+mss.systest", "20261201T091500Z")
    assert name == "synapse-1.163.2+mss.systest-20261201T091500Z.dump"
    assert backup.parse_dump_name(name) == ("1.163.2+mss.systest", "20261201T091500Z")
    epoch = backup.dump_name("1:1.2.3-4~bpo12+1", "20261201T091500Z")
    assert ":" not in epoch
    assert backup.parse_dump_name(epoch) == ("1:1.2.3-4~bpo12+1", "20261201T091500Z")
    for other in ("homeserver-20261201T0915Z.db", "synapse-1.2.dump", "synapse-1.2-x.dump"):
        assert backup.parse_dump_name(other) is None
    with pytest.raises(SetupError):
        backup.dump_name("1.2/../../etc", "20261201T091500Z")


def test_retention_keeps_the_newest_and_touches_nothing_else():
    names = [
        "synapse-1.1-20261101T000000Z.dump",
        "synapse-1.3-20261201T000000Z.dump",
        "synapse-1.2-20261115T000000Z.dump",
        "synapse-1.0-20261001T000000Z.dump",
        "homeserver-20260101T000000Z.db",
        "notes.txt",
        ".synapse-1.4-20261202T000000Z.dump.partial",
    ]
    assert backup.to_delete(names, 2) == [
        "synapse-1.0-20261001T000000Z.dump",
        "synapse-1.1-20261101T000000Z.dump",
    ]
    assert backup.to_delete(names, 10) == []


@pytest.mark.parametrize("value", ["0", "-1", "three", "", "1.5", "1001"])
def test_invalid_keep_answers_are_refused(value):
    with pytest.raises(SetupError, match="whole number"):
        validate_keep(value)


def test_keep_file_round_trip_and_default(tmp_path: Path):
    path = tmp_path / "lib" / "backup-keep"
    assert state.read_keep(path) == DEFAULT_BACKUP_KEEP
    assert state.store_keep(" 5 ", path) is True
    assert path.read_text() == "5\n"
    assert state.store_keep("5", path) is False  # unchanged: not written
    assert state.read_keep(path) == 5
    path.write_text("garbage\n")
    assert state.read_keep(path) == DEFAULT_BACKUP_KEEP
    with pytest.raises(SetupError):
        state.store_keep("0", path)


def test_versions_compare_as_dpkg_compares_them():
    assert compare_versions("1.163.3+mss.systest", "gt", "1.163.2+mss.systest")
    assert compare_versions("1.163.2~rc1", "lt", "1.163.2")
    assert compare_versions("1:1.0", "gt", "2.0")
    assert not compare_versions("1.163.2", "gt", "1.163.2")


def test_restore_names_are_valid_database_names():
    import datetime

    when = datetime.datetime(2026, 12, 1, 9, 30, 5, tzinfo=datetime.UTC)
    assert restore.restore_name("synapse", when) == "synapse_restored_20261201t093005"
    long = restore.restore_name("s" * 63, when)
    assert len(long) == 63 and long.endswith("_restored_20261201t093005")


def test_the_hook_command_survives_the_package_removal(tmp_path: Path):
    """The conffile's command: a refusing hook stops apt, a missing hook does not."""
    conf = Path(__file__).resolve().parents[2] / "debian/apt.conf.d/60matrix-synapse-setup"
    text = conf.read_text()
    command = re.search(r'Pre-Install-Pkgs \{\s*"([^"]+)";', text)[1]
    hook = "/usr/share/matrix-synapse-setup/apt-backup-hook"
    assert command.startswith(hook + " ")
    assert f'DPkg::Tools::Options::{hook}::Version "3";' in text
    fake = tmp_path / "hook"
    for body, expected in (("exit 1", 1), ("exit 0", 0), (None, 0)):
        if body is None:
            fake.unlink()
        else:
            fake.write_text(f"#!/bin/sh\ncat >/dev/null\n{body}\n")
            fake.chmod(0o755)
        code = subprocess.run(
            ["/bin/sh", "-c", command.replace(hook, str(fake))], input="VERSION 3\n\n", text=True
        ).returncode
        assert (code != 0) == bool(expected), body


def test_the_client_programs_match_the_servers_version(tmp_path: Path):
    for version in ("13", "15", "17"):
        tool = tmp_path / version / "bin" / "pg_dump"
        tool.parent.mkdir(parents=True)
        tool.write_text("")
    assert pg_tool("pg_dump", 15, tmp_path) == str(tmp_path / "15/bin/pg_dump")
    assert pg_tool("pg_dump", 16, tmp_path) == str(tmp_path / "17/bin/pg_dump")
    assert pg_tool("pg_dump", 18, tmp_path) == str(tmp_path / "17/bin/pg_dump")
    assert pg_tool("pg_dump", None, tmp_path) == str(tmp_path / "17/bin/pg_dump")
    assert pg_tool("pg_restore", 15, tmp_path) == "pg_restore"  # pg_wrapper's choice
