"""The real debian/config script under the real debconf frontend.

debconf uses a temporary configuration (DEBCONF_SYSTEMRC) with File databases
in a temporary directory, the templates are loaded with debconf-loadtemplate
(as po2debconf merges them at build time), preseeds go in with
debconf-set-selections, answers are read back with debconf-communicate.

The script calls /usr/share/matrix-synapse-setup/maintscript-helper, and the
helper reads /etc/matrix-synapse/conf.d/database.yaml: each run happens in a
private mount namespace (unshare) where overlays on /usr/share and /etc hold
this tree's helper and package, and the test's snippet.  Nothing on the host
changes.
"""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PKG = "matrix-synapse-setup"
Q = f"{PKG}/"

DEBCONF_CONF = """\
Config: configdb
Templates: templatedb

Name: config
Driver: File
Mode: 644
Reject-Type: password
Filename: {d}/config.dat

Name: passwords
Driver: File
Mode: 600
Backup: false
Required: false
Accept-Type: password
Filename: {d}/passwords.dat

Name: configdb
Driver: Stack
Stack: config, passwords

Name: templatedb
Driver: File
Mode: 644
Filename: {d}/templates.dat
"""

NAMESPACE_SCRIPT = """\
set -e
for dir in usr/share etc var/lib var/backups; do
    mkdir -p "$OVL/$dir/upper" "$OVL/$dir/work"
    mount -t overlay overlay \
        -o "lowerdir=/$dir,upperdir=$OVL/$dir/upper,workdir=$OVL/$dir/work" "/$dir"
done
# The test's PostgreSQL cluster is "the local cluster"; no systemd to talk to.
if [ -n "${PGSOCKDIR:-}" ]; then
    mount --bind "$PGSOCKDIR" /run/postgresql
fi
if [ -d /run/systemd ]; then
    mount -t tmpfs tmpfs /run/systemd
fi
# A private /run/lock: the package's one-run-at-a-time lock is per machine, and
# tests running at the same time are separate machines.
if [ -d /run/lock ]; then
    mount -t tmpfs tmpfs /run/lock
fi
exec "$@"
"""


class Debconf:
    """A private debconf database, and runs of the real config script with it."""

    def __init__(self, tmp: Path) -> None:
        self.dir = tmp / "debconf"
        self.dir.mkdir()
        self.rc = self.dir / "debconf.conf"
        self.rc.write_text(DEBCONF_CONF.format(d=self.dir))
        self.overlay = tmp / "overlay"
        self.etc = self.overlay / "etc" / "upper"
        self.share = self.overlay / "usr/share" / "upper"
        self.env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(tmp),
            "LANG": "C.UTF-8",
            "DEBCONF_SYSTEMRC": str(self.rc),
            "DEBIAN_FRONTEND": "noninteractive",
            "DEBCONF_PACKAGE": PKG,
            "DEBCONF_NONINTERACTIVE_SEEN": "false",
        }
        templates = subprocess.run(
            ["po2debconf", str(ROOT / "debian" / f"{PKG}.templates")],
            cwd=ROOT / "debian",
            check=True,
            capture_output=True,
            text=True,
            env=self.env | {"PODEBCONF_ENCODINGS": "UTF-8"},
        ).stdout
        (self.dir / "templates").write_text(templates)
        self.run(["debconf-loadtemplate", PKG, str(self.dir / "templates")])

    def install_helper(self) -> None:
        """Our files, where the package puts them (debian/*.install)."""
        dest = self.share / PKG
        dest.mkdir(parents=True)
        shutil.copy2(ROOT / "scripts" / "maintscript-helper", dest / "maintscript-helper")
        shutil.copytree(
            ROOT / "matrix_synapse_setup",
            dest / "matrix_synapse_setup",
            ignore=shutil.ignore_patterns("__pycache__"),
        )

    def write_snippet(self, text: str) -> Path:
        path = self.etc / "matrix-synapse" / "conf.d" / "database.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def run(self, argv, *, stdin: str = "", env=None, check=True):
        proc = subprocess.run(
            [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                NAMESPACE_SCRIPT,
                "-",
                *argv,
            ],
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env | {"OVL": str(self.overlay)} | (env or {}),
            check=False,
            timeout=120,
        )
        if check and proc.returncode:
            raise AssertionError(f"{argv} exited {proc.returncode}:\n{proc.stderr}")
        return proc

    def preseed(self, **answers: str) -> None:
        lines = []
        for name, value in answers.items():
            question = Q + name.replace("_", "-")
            kind = {"db-password": "password", "db-password-again": "password"}.get(
                name.replace("_", "-"), "string"
            )
            kind = "boolean" if name == "purge_database" else kind
            kind = "select" if name in ("db_sslmode", "db_failure") else kind
            lines.append(f"{PKG} {question} {kind} {value}")
        self.run(["debconf-set-selections"], stdin="\n".join(lines) + "\n")

    def config(self, *args: str, check=True, env=None):
        return self.run([str(ROOT / "debian" / "config"), "configure", *args], check=check, env=env)

    def get(self, name: str) -> str:
        out = self.run(
            # its exit status is the last reply's code: 1 for escaped data
            ["debconf-communicate", PKG],
            stdin=f"CAPB escape\nGET {Q}{name}\n",
            check=False,
        ).stdout.splitlines()
        status, _, value = out[-1].partition(" ")
        assert status in ("0", "1"), out
        return value.replace("\\n", "\n").replace("\\\\", "\\") if status == "1" else value

    def flag(self, name: str, flag: str = "seen") -> str:
        out = self.run(
            ["debconf-communicate", PKG], stdin=f"FGET {Q}{name} {flag}\n", check=False
        ).stdout
        return out.split()[-1]


@pytest.fixture
def dc(tmp_path):
    made = Debconf(tmp_path)
    made.install_helper()
    return made


def test_first_preconfigure_without_our_files_exits_quietly(tmp_path):
    fresh = Debconf(tmp_path)  # no helper installed: the package is not unpacked yet
    proc = fresh.config()
    assert proc.returncode == 0
    assert proc.stderr == ""
    assert fresh.get("db-host") == "localhost"


def test_noninteractive_without_preseed_keeps_the_defaults(dc):
    dc.config()
    assert [dc.get(n) for n in ("db-host", "db-port", "db-name", "db-user")] == [
        "localhost",
        "5432",
        "synapse",
        "synapse",
    ]
    assert dc.get("db-password") == ""
    assert dc.get("purge-database") == "false"


def test_preseeded_answers_are_kept_exactly(dc):
    password = "  pre seeded \\ pass\"word' $HOME %s é  "
    dc.preseed(
        db_host="db.example.org",
        db_port="6432",
        db_name="matrix",
        db_user="synapse_app",
        db_password=password,
        db_sslmode="verify-full",
        purge_database="true",
    )
    dc.config()
    assert dc.get("db-host") == "db.example.org"
    assert dc.get("db-port") == "6432"
    assert dc.get("db-name") == "matrix"
    assert dc.get("db-user") == "synapse_app"
    assert dc.get("db-sslmode") == "verify-full"
    assert dc.get("purge-database") == "true"
    assert dc.get("db-password") == password
    # The secret is in the 0600 passwords database, not in config.dat.
    assert "pre seeded" not in (dc.dir / "config.dat").read_text()
    assert stat.S_IMODE((dc.dir / "passwords.dat").stat().st_mode) == 0o600


@pytest.mark.parametrize(
    ("answers", "expected"),
    [
        ({"db_port": "99999"}, "1 to 65535"),
        ({"db_name": "Synapse-DB"}, "lower-case letters"),
        ({"db_host": "/var/run/post gres"}, "socket directory"),
        ({"db_host": "db.example.org:5433"}, "has a port in it"),
        ({"db_host": "db.example.org"}, "remote server needs the password"),
        ({"db_password": "a", "db_password_again": "b"}, "differ"),
    ],
)
def test_invalid_preseed_fails_noninteractive_with_one_clear_line(dc, answers, expected):
    dc.preseed(**answers)
    proc = dc.config(check=False)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if "matrix-synapse-setup: error:" in line]
    assert len(errors) == 1, proc.stderr
    assert expected in errors[0]
    assert "Traceback" not in proc.stderr


def test_the_installed_snippet_wins_over_older_answers(dc):
    dc.preseed(db_host="localhost", db_port="5432")
    dc.write_snippet(
        "database:\n  name: psycopg2\n  args:\n    host: db.example.org\n    port: 6543\n"
        "    dbname: edited\n    user: edited_user\n    password: 'kept secret'\n"
        "    sslmode: require\n"
    )
    proc = dc.config()
    assert "edited by hand" in proc.stderr
    assert (dc.get("db-host"), dc.get("db-port"), dc.get("db-name"), dc.get("db-user")) == (
        "db.example.org",
        "6543",
        "edited",
        "edited_user",
    )
    assert dc.get("db-sslmode") == "require"
    # The password in the file is used by the postinst; it is not copied to debconf.
    assert dc.get("db-password") == ""
    # A second config run (debconf runs it again from the postinst) keeps what
    # was answered in between.
    dc.preseed(db_port="7000")
    proc = dc.config()
    assert "edited by hand" not in proc.stderr
    assert dc.get("db-port") == "7000"


def test_running_config_twice_changes_nothing(dc):
    dc.preseed(db_name="matrix", db_password="pw")
    dc.config()
    before = (dc.dir / "config.dat").read_text(), (dc.dir / "passwords.dat").read_text()
    dc.config()
    after = (dc.dir / "config.dat").read_text(), (dc.dir / "passwords.dat").read_text()
    assert before == after


def test_helper_output_never_reaches_the_debconf_pipe(dc):
    # Anything the helper printed to fd 1 would be taken for a debconf command
    # and break the protocol; with debug output on, it still works.
    proc = dc.config(env={"DEBCONF_DEBUG": "developer"})
    assert "Unsupported command" not in proc.stderr
    assert "<-- CAPB escape backup" in proc.stderr


def test_the_unknown_actions_of_a_newer_config_are_accepted(dc):
    proc = dc.run([str(ROOT / "debian" / "config"), "some-future-action"])
    assert proc.returncode == 0


def test_nothing_leaks_to_the_host(dc):
    text = "database: {name: psycopg2, args: {host: h.example.org, password: leak-check}}\n"
    dc.write_snippet(text)
    dc.config()
    host_snippet = Path("/etc/matrix-synapse/conf.d/database.yaml")
    assert not host_snippet.exists() or "leak-check" not in host_snippet.read_text()


def test_odd_hand_edited_values_reach_debconf_exactly_and_are_refused(dc):
    # SET with the escape capability: spaces, backslashes survive the protocol.
    dc.write_snippet(
        "database:\n  name: psycopg2\n  args:\n    host: localhost\n    port: 5432\n"
        "    dbname: ' my  db\\\\x '\n    user: synapse\n    password: pw\n"
    )
    proc = dc.config(check=False)
    assert dc.get("db-name") == " my  db\\\\x "  # YAML single quotes: two backslashes
    assert proc.returncode != 0
    assert "The database name 'my  db" in proc.stderr and "is not allowed" in proc.stderr
