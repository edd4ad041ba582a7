"""The built .deb: maintainer scripts keep debhelper's snippets and call our helper,
the trigger, the templates (with the French translation) and the helper are in it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HELPER = "/usr/share/matrix-synapse-setup/maintscript-helper"


@pytest.fixture(scope="module")
def control(tmp_path_factory):
    """`invoke build` (a no-op when dist/ is up to date), then dpkg-deb -e."""
    subprocess.run(["invoke", "build"], cwd=ROOT, check=True, capture_output=True)
    debs = sorted((ROOT / "dist").glob("matrix-synapse-setup_*_all.deb"))
    assert debs, "invoke build made no .deb"
    out = tmp_path_factory.mktemp("control")
    subprocess.run(["dpkg-deb", "-e", str(debs[-1]), str(out)], check=True)
    files = subprocess.run(
        ["dpkg-deb", "-c", str(debs[-1])], check=True, capture_output=True, text=True
    ).stdout
    return out, files


def test_postinst_has_the_debhelper_snippets_and_our_helper(control):
    out, _ = control
    postinst = (out / "postinst").read_text()
    assert "#DEBHELPER#" not in postinst
    assert f"helper={HELPER}" in postinst
    assert '"$helper" postinst "$@"' in postinst
    assert ". /usr/share/debconf/confmodule" in postinst
    # No py3compile (nor py3clean in the prerm): the helper keeps its own checked-hash
    # byte-code (matrix_synapse_setup/bytecode.py), issue 11.
    assert "py3compile" not in postinst


def test_prerm_removes_our_bytecode_on_remove_only(control):
    out, _ = control
    prerm = (out / "prerm").read_text()
    assert "#DEBHELPER#" not in prerm and "py3clean" not in prerm
    case = prerm[prerm.index('case "$1" in') :]
    assert (
        case.index("remove)")
        < case.index("rm -rf /usr/share/matrix-synapse-setup/matrix_synapse_setup/__pycache__")
        < case.index("/usr/share/matrix-synapse-setup/matrix_synapse_setup/*/__pycache__")
        < case.index("/usr/share/matrix-synapse-setup/matrix_synapse_setup/*/*/__pycache__")
        < case.index("esac")
    )
    assert "upgrade" not in case[: case.index("esac")]


def test_postrm_purges_debconf_after_our_purge_code(control):
    out, _ = control
    postrm = (out / "postrm").read_text()
    assert "#DEBHELPER#" not in postrm
    assert "dh_installdebconf" in postrm
    # our purge reads the answers (purge-database) before debhelper's db_purge
    assert postrm.index("purge_database\n") < postrm.index("db_purge")
    assert "ucf --purge" in postrm and "ucfr --purge" in postrm
    # shell only: on purge our Python is gone
    assert HELPER not in postrm


def test_config_and_templates_with_french(control):
    out, _ = control
    config = (out / "config").read_text()
    # debian/config is shell on debconf's confmodule only: it runs before unpack (apt's
    # preconfiguration), when our Python is not on the system yet.
    assert config.startswith("#!/bin/sh\n") and ". /usr/share/debconf/confmodule" in config
    assert HELPER not in config and "python3" not in config
    for name in ("db-host", "db-port", "db-name", "db-user", "db-password", "purge-database"):
        assert f"matrix-synapse-setup/{name}" in config
    templates = (out / "templates").read_text()
    for name in (
        "db-host",
        "db-port",
        "db-name",
        "db-user",
        "db-password",
        "db-sslmode",
        "purge-database",
        "db-failure",
    ):
        assert f"Template: matrix-synapse-setup/{name}\n" in templates
    assert "Description-fr.UTF-8: Nom d'hôte du serveur PostgreSQL pour Synapse :" in templates


def test_file_trigger_on_synapse_units(control):
    out, _ = control
    triggers = (out / "triggers").read_text().split("\n")
    assert "interest-noawait /lib/systemd/system/matrix-synapse.service" in triggers
    assert "interest-noawait /usr/lib/systemd/system/matrix-synapse.service" in triggers
    # provisioning deferred until PostgreSQL (same dpkg run) is configured
    assert "interest-noawait matrix-synapse-setup-provision" in triggers


def test_helper_and_package_are_installed_where_the_scripts_look(control):
    _, files = control
    line = next(x for x in files.splitlines() if x.endswith("." + HELPER))
    assert line.startswith("-rwxr-xr-x root/root")
    for module in ("dpkg/debconf.py", "files/snippet.py", "postinst/main.py", "core/__init__.py"):
        assert f"/usr/share/matrix-synapse-setup/matrix_synapse_setup/{module}" in files
    assert "/matrix_synapse_setup/files/templates/database.yaml.j2" in files


def test_the_apt_backup_hook_is_a_conffile_and_its_program_is_installed(control):
    """Issue 14: the hook's apt configuration is a conffile (kept on remove, where its
    command then does nothing); the program it names is executable."""
    out, files = control
    conf = "/etc/apt/apt.conf.d/60matrix-synapse-setup"
    assert conf in (out / "conffiles").read_text().split()
    hook = "/usr/share/matrix-synapse-setup/apt-backup-hook"
    line = next(x for x in files.splitlines() if x.endswith("." + hook))
    assert line.startswith("-rwxr-xr-x root/root")
    assert "/usr/share/matrix-synapse-setup/matrix_synapse_setup/commands/backup.py" in files
    templates = (out / "templates").read_text()
    assert "Template: matrix-synapse-setup/backup-keep\n" in templates
    assert "matrix-synapse-setup/backup-keep" in (out / "config").read_text()
