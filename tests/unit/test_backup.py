"""The backup hook's logic that needs no server: apt's hook input (protocol version 3),
dump and archive names, retention, the debconf answer's check, version comparison, the
archive of the server's files (its members, owners and modes) and putting it back, and
where Synapse's signing key and log configuration are."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from matrix_synapse_setup.commands import backup, restore
from matrix_synapse_setup.core.errors import SetupError
from matrix_synapse_setup.core.paths import DEFAULT_BACKUP_KEEP
from matrix_synapse_setup.core.settings import validate_keep
from matrix_synapse_setup.dpkg.packages import compare_versions
from matrix_synapse_setup.files import archive, state
from matrix_synapse_setup.postgres.dump import (
    ONE_TIME_KEYS,
    holds_table_data,
    pg_dump_command,
    pg_tool,
)
from matrix_synapse_setup.synapse import config as synapse_config

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


# --- the archive of what makes the server itself -------------------------------------------


def test_an_archive_is_named_after_its_dump():
    dump = backup.dump_name("1:1.163.2+mss.systest", "20261201T091500Z")
    name = backup.archive_name(dump)
    assert name == "synapse-1_1.163.2+mss.systest-20261201T091500Z.config.tar"
    assert backup.parse_archive_name(name) == ("1:1.163.2+mss.systest", "20261201T091500Z")
    assert backup.parse_dump_name(name) is None  # an archive is never taken for a dump
    assert backup.parse_archive_name(dump) is None
    assert backup.archive_of(Path("/b") / dump) == Path("/b") / name
    assert backup.archive_name("notes.txt") is None
    assert backup.archive_of(Path("/b/synapse-1.2.dump")) is None


def test_retention_prunes_each_archive_with_its_dump_and_nothing_else():
    names = [
        "synapse-1.0-20261001T000000Z.dump",
        "synapse-1.0-20261001T000000Z.config.tar",
        "synapse-1.1-20261101T000000Z.dump",  # made before archives existed
        "synapse-1.2-20261115T000000Z.dump",
        "synapse-1.2-20261115T000000Z.config.tar",
        "synapse-1.3-20261201T000000Z.dump",
        "synapse-1.3-20261201T000000Z.config.tar",
        "synapse-1.4-20261202T000000Z.config.tar",  # its dump is gone: pruned with it
        ".synapse-1.5-20261203T000000Z.config.tar.partial",
        ".synapse-1.5-20261203T000000Z.dump.partial",
        "homeserver-20260101T000000Z.db",
        "synapse-1.0-20261001T000000Z.config.tar.bak",
        "notes.txt",
    ]
    assert backup.to_delete(names, 2) == [
        "synapse-1.0-20261001T000000Z.config.tar",
        "synapse-1.0-20261001T000000Z.dump",
        "synapse-1.1-20261101T000000Z.dump",
        "synapse-1.4-20261202T000000Z.config.tar",
    ]
    # Everything kept but the orphan archive; never a file that is not ours.
    assert backup.to_delete(names, 10) == ["synapse-1.4-20261202T000000Z.config.tar"]
    ours = {n for n in names if backup.parse_dump_name(n) or backup.parse_archive_name(n)}
    for keep in range(1, 6):
        assert set(backup.to_delete(names, keep)) <= ours
        left = set(names) - set(backup.to_delete(names, keep))
        for name in left:  # every archive left has its dump
            if backup.parse_archive_name(name):
                assert name.replace(".config.tar", ".dump") in left


def test_synapse_finds_its_signing_key_and_log_config_as_synapse_does(tmp_path: Path):
    homeserver, confd = tmp_path / "homeserver.yaml", tmp_path / "conf.d"
    files = [homeserver, confd / "server_name.yaml"]
    # The paths that upstream's generated homeserver.yaml names.
    merged = {
        "server_name": "mss.test",
        "signing_key_path": "/etc/matrix-synapse/mss.test.signing.key",
        "log_config": "/etc/matrix-synapse/mss.test.log.config",
    }
    assert synapse_config.identity_paths(merged, files) == (
        Path("/etc/matrix-synapse/mss.test.signing.key"),
        Path("/etc/matrix-synapse/mss.test.log.config"),
    )
    # Relative paths: from Synapse's working directory.
    merged = {"server_name": "x", "signing_key_path": "keys/x.key", "log_config": "log.yaml"}
    assert synapse_config.identity_paths(merged, files) == (
        synapse_config.DATA_DIR / "keys/x.key",
        synapse_config.DATA_DIR / "log.yaml",
    )
    # No signing_key_path: SERVER.signing.key beside the last file Synapse read.
    assert synapse_config.identity_paths({"server_name": "x"}, files) == (
        confd / "x.signing.key",
        None,
    )
    # The key inline: no file.
    assert (
        synapse_config.identity_paths({"server_name": "x", "signing_key": "ed25519 a b"}, files)[0]
        is None
    )


def test_the_files_to_archive_are_each_named_once():
    confd = Path("/etc/matrix-synapse/conf.d")
    server = synapse_config.ServerFiles(
        Path("/etc/matrix-synapse/homeserver.yaml"),
        confd,
        confd / "x.signing.key",  # in conf.d already
        Path("/etc/matrix-synapse/x.log.config"),
        "x",
    )
    assert server.paths() == [
        Path("/etc/matrix-synapse/homeserver.yaml"),
        confd,
        Path("/etc/matrix-synapse/x.log.config"),
    ]


def server_tree(base: Path) -> synapse_config.ServerFiles:
    """A server's files as upstream's package lays them out, under *base*."""
    etc = base / "etc/matrix-synapse"
    confd = etc / "conf.d"
    confd.mkdir(parents=True)
    (etc / "homeserver.yaml").write_text(
        f"signing_key_path: {etc}/mss.test.signing.key\nlog_config: {etc}/mss.test.log.config\n"
    )
    (etc / "mss.test.signing.key").write_text("ed25519 a_AAAA secret\n")
    os.chmod(etc / "mss.test.signing.key", 0o640)
    (etc / "mss.test.log.config").write_text("version: 1\n")
    (confd / "server_name.yaml").write_text("server_name: mss.test\n")
    (confd / "database.yaml").write_text("database: {name: psycopg2}\n")
    (confd / "database.pgpass").write_text("*:*:*:*:pw\n")
    os.chmod(confd / "database.pgpass", 0o600)
    (confd / "notes.txt").write_text("not yaml, still conf.d's\n")
    (confd / "sub").mkdir()
    (confd / "sub" / "more.yaml").write_text("a: 1\n")
    return synapse_config.server_files(etc / "homeserver.yaml", confd)


def test_the_archive_holds_key_configuration_and_log_config_with_owners_and_modes(
    tmp_path: Path,
):
    server = server_tree(tmp_path)
    assert server.server_name == "mss.test"
    missing = tmp_path / "etc/matrix-synapse/gone.yaml"
    out = tmp_path / "out.config.tar"
    left_out = archive.write(out, [*server.paths(), missing])
    assert left_out == [missing]
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    etc = str(tmp_path / "etc/matrix-synapse").lstrip("/")
    with tarfile.open(out) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert sorted(members) == sorted(
        f"{etc}/{name}"
        for name in (
            "homeserver.yaml",
            "conf.d",
            "conf.d/database.pgpass",
            "conf.d/database.yaml",
            "conf.d/notes.txt",
            "conf.d/server_name.yaml",
            "conf.d/sub",
            "conf.d/sub/more.yaml",
            "mss.test.signing.key",
            "mss.test.log.config",
        )
    )
    for name, info in members.items():
        st = os.stat("/" + name)
        assert (info.uid, info.gid, info.mode) == (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode))
    assert members[f"{etc}/mss.test.signing.key"].mode == 0o640
    assert members[f"{etc}/conf.d/database.pgpass"].mode == 0o600
    # Read back: the same files, at their absolute paths.
    back = {m.path: m for m in archive.read(out)}
    key = tmp_path / "etc/matrix-synapse/mss.test.signing.key"
    assert back[key].data == b"ed25519 a_AAAA secret\n" and back[key].mode == 0o640
    assert back[tmp_path / "etc/matrix-synapse/conf.d"].is_dir


def test_an_archive_with_a_foreign_member_is_refused(tmp_path: Path):
    bad = tmp_path / "bad.config.tar"
    with tarfile.open(bad, "w") as tar:
        info = tarfile.TarInfo("../etc/passwd")
        tar.addfile(info)
    with pytest.raises(SetupError, match="not an archive of ours"):
        archive.read(bad)
    link = tmp_path / "link.config.tar"
    with tarfile.open(link, "w") as tar:
        info = tarfile.TarInfo("etc/matrix-synapse/x")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/shadow"
        tar.addfile(info)
    with pytest.raises(SetupError, match="not an archive of ours"):
        archive.read(link)
    broken = tmp_path / "broken.config.tar"
    broken.write_bytes(b"not a tar at all" * 100)
    with pytest.raises(SetupError, match="cannot be read as an archive"):
        archive.read(broken)


def test_putting_back_keeps_every_current_file_it_replaces(tmp_path: Path):
    server = server_tree(tmp_path)
    out = tmp_path / "out.config.tar"
    archive.write(out, server.paths())
    etc = tmp_path / "etc/matrix-synapse"
    key, hs, name = etc / "mss.test.signing.key", etc / "homeserver.yaml", etc / "conf.d/sub"
    key.write_text("ed25519 a_BBBB another server\n")  # a new identity since the archive
    os.chmod(key, 0o600)
    (etc / "conf.d/sub/more.yaml").unlink()
    members = archive.read(out)
    planned = archive.changes(members, "20261207T030000Z")
    actions = {c.member.path: c.action for c in planned}
    assert actions[key] == "replace" and actions[hs] == "unchanged"
    assert actions[name / "more.yaml"] == "create" and name not in actions  # dir exists
    before = list(etc.rglob("*"))
    done = archive.put_back(planned)
    assert {c.member.path for c in done} == {key, name / "more.yaml"}
    assert key.read_text() == "ed25519 a_AAAA secret\n"
    assert stat.S_IMODE(key.stat().st_mode) == 0o640
    kept = etc / "mss.test.signing.key.before-restore-20261207T030000Z"
    assert kept.read_text() == "ed25519 a_BBBB another server\n"
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600  # the admin's file, as it was
    assert set(etc.rglob("*")) == {*before, kept, name / "more.yaml"}  # no temporary left
    # Again at the same second: the kept name exists, refused before any change.
    key.write_text("third\n")
    with pytest.raises(SetupError, match="exists already"):
        archive.put_back(archive.changes(members, "20261207T030000Z"))
    assert key.read_text() == "third\n"


# --- one-time keys ----------------------------------------------------------------------

LISTING = """\
;
; Archive created at 2026-12-07 02:45:17 UTC
;     dbname: synapse
;
; Selected TOC Entries:
;
214; 1259 16385 TABLE public e2e_one_time_keys_json synapse_user
215; 1259 16388 TABLE public events synapse_user
3344; 0 16388 TABLE DATA public events synapse_user
"""


def test_the_dump_listing_tells_whether_one_time_keys_are_in_it():
    assert not holds_table_data(LISTING, ONE_TIME_KEYS)  # the schema alone
    assert holds_table_data(LISTING, "events")
    old = LISTING + "3345; 0 16385 TABLE DATA public e2e_one_time_keys_json synapse_user\n"
    assert holds_table_data(old, ONE_TIME_KEYS)
    assert not holds_table_data("; TABLE DATA public e2e_one_time_keys_json x\n", ONE_TIME_KEYS)


def test_a_remote_dump_leaves_out_the_one_time_keys():
    from matrix_synapse_setup.core.settings import Settings

    remote = Settings(host="db.example.org", port=5432, dbname="synapse", user="synapse_user")
    cmd, _, _ = pg_dump_command(remote, "/var/run/postgresql", None)
    assert f"--exclude-table-data={ONE_TIME_KEYS}" in cmd


def test_restore_with_config_plans_the_key_and_leaves_the_snippet_and_new_files(tmp_path: Path):
    server = server_tree(tmp_path)
    out = tmp_path / "synapse-1.0-20261201T000000Z.config.tar"
    archive.write(out, server.paths())
    etc = tmp_path / "etc/matrix-synapse"
    key = etc / "mss.test.signing.key"
    key.write_text("ed25519 a_BBBB another server\n")
    (etc / "conf.d/database.yaml").write_text("database: {name: psycopg2, args: {dbname: new}}\n")
    (etc / "conf.d/added-later.yaml").write_text("b: 2\n")
    config = restore.plan_config(
        out, "20261207T030000Z", homeserver=etc / "homeserver.yaml", confd=etc / "conf.d"
    )
    assert config.server_name == "mss.test" and config.signing_key == key
    lines = config.describe()
    kept = f"{key}.before-restore-20261207T030000Z"
    assert (
        f"put back {key}, keeping the current file as {kept}" + restore.messages.RESTORE_CONFIG_KEY
        in lines
    )
    assert f"leave {etc / 'homeserver.yaml'}: the same as in the archive" in lines
    assert f"leave {etc / 'conf.d/added-later.yaml'} as it is (not in the archive)" in lines
    planned = {c.member.path for c in config.changes}
    assert etc / "conf.d/database.yaml" not in planned  # ours: the database restore writes it
    assert etc / "conf.d/database.pgpass" not in planned
    done = restore.put_back_config(config)
    assert done == [f"{key}: put back from the archive; the file before is kept as {kept}"]
    assert "dbname: new" in (etc / "conf.d/database.yaml").read_text()
    assert (etc / "conf.d/added-later.yaml").exists()


def test_doctor_says_whether_the_newest_dump_has_its_archive(tmp_path: Path):
    from matrix_synapse_setup.commands.doctor import backups as doctor_backups
    from matrix_synapse_setup.commands.doctor.facts import Facts, Paths
    from matrix_synapse_setup.commands.doctor.report import OK

    directory = tmp_path / "backups"
    directory.mkdir(mode=0o700)
    facts = Facts(Paths(backups=directory))
    dump = directory / "synapse-1.0-20261201T000000Z.dump"
    dump.write_bytes(b"PGDMP")
    row = doctor_backups.check_last_backup(facts)
    assert row.status == OK and "no archive of the signing key and configuration" in row.detail
    (directory / "synapse-1.0-20261201T000000Z.config.tar").write_bytes(b"")
    row = doctor_backups.check_last_backup(facts)
    assert row.status == OK
    assert "with its signing key and configuration (synapse-1.0-20261201T000000Z.config.tar)" in (
        row.detail
    )


def test_the_confirmation_wants_the_server_name_on_a_terminal(monkeypatch, capsys):
    """On a real pseudo-terminal: the server name goes on, anything else refuses; without a
    terminal, only --yes goes on."""
    import io
    import pty

    config = restore.ConfigPlan(Path("/b/x.config.tar"), "mss.test", None, [], [])
    for typed, accepted in (("mss.test", True), ("yes", False), ("", False)):
        try:
            master, slave = pty.openpty()
        except OSError:  # a build chroot without /dev/ptmx
            pytest.skip("no pseudo-terminal here")
        with os.fdopen(slave, "r") as terminal, os.fdopen(master, "w") as keyboard:
            keyboard.write(typed + "\n")
            keyboard.flush()
            monkeypatch.setattr("sys.stdin", terminal)
            if accepted:
                restore.confirm(config, yes=False)
            else:
                with pytest.raises(SetupError, match="not 'mss.test': nothing was changed"):
                    restore.confirm(config, yes=False)
        assert "Type mss.test to go on: " in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO("mss.test\n"))  # not a terminal
    with pytest.raises(SetupError, match="or add --yes"):
        restore.confirm(config, yes=False)
    restore.confirm(config, yes=True)
