"""Rendering the snippet: every value survives render -> yaml.safe_load, byte for byte."""

import os
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

from matrix_synapse_setup.core.errors import SetupError
from matrix_synapse_setup.core.paths import PACKAGE, PASSFILE
from matrix_synapse_setup.core.settings import Settings
from matrix_synapse_setup.dpkg import ucf
from matrix_synapse_setup.dpkg.packages import compare_versions
from matrix_synapse_setup.files import atomic, snippet

ADVERSARIAL_PASSWORDS = [
    "it's",
    'say "hi"',
    "back\\slash\\",
    "two  spaces inside",
    " leading",
    "trailing ",
    "  both  ",
    "$HOME%s:@#{}[]&*!|",
    "a: b",
    "a #comment",
    "{flow: map}",
    "[flow, seq]",
    "yes",
    "no",
    "on",
    "off",
    "null",
    "~",
    "true",
    "0x1F",
    "0o17",
    "1e3",
    "1_000",
    "12:30:00",
    "2026-11-26",
    ".inf",
    ".nan",
    "=",
    "<<",
    "- item",
    "? key",
    ">",
    "> folded",
    "| literal",
    "%YAML 1.2",
    "---",
    "...",
    "@at",
    "`backtick`",
    "!tag",
    "&anchor",
    "*alias",
    "é à ü ß Ω 日本語 😀",
    "x" * 200,
    # and every one of tests/integration/test_provision.py
    'it\'s "quoted"',
    " leading and trailing spaces ",
    "$HOME %s %(x)s {0} ${x}",
    "user:pass@host/db?x=1#frag",
    "'; DROP ROLE postgres; --",
    "äöü ñ 日本語 пароль ﬁ",
    "- yes",
    "a" * 200,
    "e\u0301",
    "p" + "\\\"'" * 60,
]


@pytest.mark.parametrize("password", ADVERSARIAL_PASSWORDS)
def test_every_password_survives_the_password_file_and_stays_out_of_the_yaml(password, tmp_path):
    settings = Settings.from_answers(password=password, user="synapse")
    text = snippet.render(settings)
    args = yaml.safe_load(text)["database"]["args"]
    assert "password" not in args and args["passfile"] == str(PASSFILE)
    assert password not in args.values()
    passfile = tmp_path / "pgpass"
    passfile.write_text(snippet.passfile_text(settings))
    assert snippet.read_passfile(passfile, "synapse") == password
    assert snippet.read_passfile(passfile, "other") is None


def test_the_rendered_snippet_is_what_synapse_wants(tmp_path):
    rootcert = tmp_path / "root ca.pem"
    rootcert.write_bytes(Path("/etc/ssl/certs/ca-certificates.crt").read_bytes())
    rootcert.chmod(0o644)
    settings = Settings.from_answers(
        host="db.example.org",
        port="6543",
        dbname="matrix",
        user="synapse_user",
        password="pw",
        sslmode="verify-full",
        sslrootcert=str(rootcert),
    )
    data = yaml.safe_load(snippet.render(settings))
    assert list(data) == ["database"]
    assert data["database"]["name"] == "psycopg2"
    assert data["database"]["args"] == {
        "user": "synapse_user",
        "passfile": "/etc/matrix-synapse/conf.d/database.pgpass",
        "dbname": "matrix",
        "host": "db.example.org",
        "port": 6543,
        "sslmode": "verify-full",
        "sslrootcert": str(rootcert),
        "cp_min": 5,
        "cp_max": 10,
        "keepalives": 1,
        "keepalives_idle": 10,
        "keepalives_interval": 10,
        "keepalives_count": 3,
    }


def test_a_template_that_loses_a_value_is_refused(tmp_path):
    # A template that forgets the filter: the YAML keyword comes back as a bool.
    (tmp_path / snippet.TEMPLATE).write_text(
        (snippet.Path(snippet.__file__).parent / "templates" / snippet.TEMPLATE)
        .read_text()
        .replace("{{ user | yaml }}", "{{ user }}")
    )
    with pytest.raises(SetupError, match="user"):
        snippet.render(Settings.from_answers(user="null", password="pw"), template_dir=tmp_path)


@pytest.mark.parametrize(
    "text",
    [
        "database: [",
        "database:\n  name: sqlite3\n  args: {database: /x}\n",
        "just a string\n",
        "",
    ],
)
def test_a_file_that_is_no_snippet_is_a_clear_error(text):
    with pytest.raises(SetupError, match="dpkg-reconfigure"):
        snippet.parse(text)


def test_write_atomic_sets_mode_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "conf.d" / "database.yaml"
    owner = atomic.Ownership(os.getuid(), os.getgid(), 0o640)
    atomic.write_atomic(path, "one\n", owner)
    atomic.write_atomic(path, "two\n", owner)
    assert path.read_text() == "two\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert sorted(p.name for p in path.parent.iterdir()) == ["database.yaml"]


def test_fix_ownership_reports_a_change_only_once(tmp_path):
    path = tmp_path / "database.yaml"
    path.write_text("x")
    path.chmod(0o644)
    owner = atomic.Ownership(os.getuid(), os.getgid(), 0o640)
    assert atomic.fix_ownership(path, owner) is True
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert atomic.fix_ownership(path, owner) is False


def test_no_synapse_user_means_root_only():
    assert atomic.ownership("no-such-user-here") == atomic.Ownership(0, 0, 0o640)


def test_a_shared_primary_group_is_not_given_the_password():
    # "nobody" is in group nogroup (65534), which is shared on Debian.
    import pwd

    nobody = pwd.getpwnam("nobody")
    owner = atomic.ownership("nobody")
    assert owner == atomic.Ownership(nobody.pw_uid, 0, 0o440)


def test_ucf_state_comes_from_ucfq(tmp_path):
    # The real ucf, ucfr and ucfq, on a state directory of the test's own.
    state, new, path = tmp_path / "ucf", tmp_path / "new.yaml", tmp_path / "database.yaml"
    state.mkdir()
    new.write_text("a: 1\n")
    assert ucf.ucf_state(path, state_dir=state) == ucf.UcfState(False, False)
    run = {"check": True, "stdin": subprocess.DEVNULL, "capture_output": True}
    subprocess.run(["ucf", "--state-dir", str(state), str(new), str(path)], **run)
    assert ucf.ucf_state(path, state_dir=state) == ucf.UcfState(False, True)
    subprocess.run(["ucfr", "--state-dir", str(state), PACKAGE, str(path)], **run)
    assert ucf.ucf_state(path, state_dir=state) == ucf.UcfState(True, True)
    path.write_text("a: 2\n")  # edited by hand
    assert ucf.ucf_state(path, state_dir=state) == ucf.UcfState(True, False)
    path.unlink()  # deleted by hand
    assert ucf.ucf_state(path, state_dir=state) == ucf.UcfState(True, False)


def test_the_runtime_dropin_of_older_versions_goes_unless_edited(tmp_path):
    dropin = tmp_path / "matrix-synapse.service.d" / "matrix-synapse-setup.conf"
    assert snippet.remove_runtime_dropin(dropin) is None
    dropin.parent.mkdir()
    dropin.write_text(snippet.RUNTIME_DROPIN_TEXT)
    assert snippet.remove_runtime_dropin(dropin) is True
    assert not dropin.parent.exists()
    dropin.parent.mkdir()
    dropin.write_text(snippet.RUNTIME_DROPIN_TEXT + "Requires=postgresql.service\n")
    assert snippet.remove_runtime_dropin(dropin) is False
    assert dropin.exists()


def test_the_shipped_dropin_only_orders_and_joins_the_target(tmp_path):
    # No Wants=: with a remote server, starting Synapse must not start a local cluster.
    # PartOf= the workers' target, which it does not start either.
    shipped = (
        Path(__file__).resolve().parents[2] / "debian" / "systemd" / "matrix-synapse-setup.conf"
    )
    lines = [ln for ln in shipped.read_text().splitlines() if ln and not ln.startswith("#")]
    assert lines == [
        "[Unit]",
        "After=postgresql.service",
        "PartOf=matrix-synapse.target",
        "ReloadPropagatedFrom=matrix-synapse.target",
    ]


def test_a_private_primary_group_gets_read_access():
    # On Debian, postgres's primary group "postgres" has no other member.
    import grp
    import pwd

    postgres = pwd.getpwnam("postgres")
    group = grp.getgrgid(postgres.pw_gid)
    if set(group.gr_mem) - {"postgres"}:
        pytest.skip("the postgres group has other members here")
    assert atomic.ownership("postgres") == atomic.Ownership(0, postgres.pw_gid, 0o640)


def test_a_new_password_stamp_differs_from_the_one_in_the_file():
    # ucf sees a new password only through this line: two changes in one second too.
    first = snippet.new_password_stamp()
    assert snippet.new_password_stamp(first) != first
    settings = Settings.from_answers(password="pw")
    text = snippet.render(settings, password_set=first)
    assert snippet.password_stamp(text) == first
    assert snippet.parse(text)["password_set"] == first


def test_versions_before_the_static_dropin_are_told_by_dpkg():
    from matrix_synapse_setup.postinst import upgrades

    since = upgrades.BY_NAME["runtime-dropin"].since
    assert compare_versions("0.4.0", "lt", since)
    assert upgrades.due("0.4.0", reconfigure=False) == ("runtime-dropin",)
    assert upgrades.due("", reconfigure=False) == ("runtime-dropin",)  # left by a removal
    assert upgrades.due("0.4.0", reconfigure=True) == ()
    assert upgrades.due("0.6.4", reconfigure=False) == ()
    assert compare_versions("0.5.0~systest1", "lt", "0.5.0")
    assert not compare_versions("0.5.0", "lt", "0.5.0~")
