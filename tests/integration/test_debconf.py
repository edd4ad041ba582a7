"""The real debian/config script, and the real postinst that checks its answers,
under the real debconf frontend.

debconf uses a temporary configuration (DEBCONF_SYSTEMRC) with File databases
in a temporary directory, the templates are loaded with debconf-loadtemplate
(as po2debconf merges them at build time), preseeds go in with
debconf-set-selections, answers are read back with debconf-communicate.

The config script (shell, debconf's confmodule only) asks the questions and
reads /etc/matrix-synapse/conf.d/database.yaml; the postinst runs the config
first (debconf's frontend does, as dpkg's run does), then calls
/usr/share/matrix-synapse-setup/maintscript-helper, which checks the answers.
Each run happens in a private mount namespace (unshare) where overlays on
/usr/share, /etc and /var/lib hold this tree's helper and package, the test's
snippet and ucf's records.  Nothing on the host changes.  Runs that would reach
a server find none: the "local cluster" is an empty socket directory and the
port is closed, unless a test gives the throwaway cluster of conftest.py.
"""

from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from scripts.devtools.pgcluster import free_port

ROOT = Path(__file__).resolve().parents[2]
PKG = "matrix-synapse-setup"
Q = f"{PKG}/"
SNIPPET = "matrix-synapse/conf.d/database.yaml"

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
        self.var_lib = self.overlay / "var/lib" / "upper"
        # No PostgreSQL cluster on this "machine" (a test with one sets its own).
        nocluster = tmp / "no-cluster"
        nocluster.mkdir()
        self.env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(tmp),
            "LANG": "C.UTF-8",
            "DEBCONF_SYSTEMRC": str(self.rc),
            "DEBIAN_FRONTEND": "noninteractive",
            "DEBCONF_PACKAGE": PKG,
            "DEBCONF_NONINTERACTIVE_SEEN": "false",
            "PGSOCKDIR": str(nocluster),
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
            kind = "select" if name in ("db_sslmode", "db_failure", "workers") else kind
            lines.append(f"{PKG} {question} {kind} {value}")
        self.run(["debconf-set-selections"], stdin="\n".join(lines) + "\n")

    def config(self, *args: str, check=True, env=None):
        return self.run([str(ROOT / "debian" / "config"), "configure", *args], check=check, env=env)

    def postinst(self, *args: str, check=True, env=None):
        """The postinst, as dpkg runs it: its confmodule starts debconf's frontend,
        which runs the config script first, then the postinst."""
        argv = [str(ROOT / "debian" / "postinst"), "configure", *(args or ("",))]
        return self.run(argv, check=check, env=env)

    def ucf_install(self, text: str) -> Path:
        """The snippet, installed and registered the way the postinst does (ucf, ucfr):
        ucf's records are in the overlay's /var/lib/ucf."""
        source = self.dir / "snippet.new"
        source.write_text(text)
        dest = "/etc/matrix-synapse/conf.d/database.yaml"
        self.run(["mkdir", "-p", "/etc/matrix-synapse/conf.d"])
        self.run(["ucf", str(source), dest])
        self.run(["ucfr", PKG, dest])
        return self.etc / "matrix-synapse" / "conf.d" / "database.yaml"

    def files_written(self) -> list[str]:
        """The files a run left in /etc and /var/lib (the overlays' upper layers)."""
        return sorted(
            str(path.relative_to(self.overlay))
            for top in (self.etc, self.var_lib)
            for path in top.rglob("*")
            if not path.is_dir()
        )

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


REMOTE_SNIPPET = (
    "database:\n  name: psycopg2\n  args:\n    host: db.example.org\n    port: 6543\n"
    "    dbname: edited\n    user: edited_user\n    password: 'kept secret'\n"
    "    sslmode: require\n"
)


def answers(dc) -> tuple[str, ...]:
    return tuple(dc.get(n) for n in ("db-host", "db-port", "db-name", "db-user", "db-sslmode"))


def test_the_config_needs_none_of_our_files(tmp_path):
    # apt's preconfiguration runs the config before the package is unpacked: no helper.
    fresh = Debconf(tmp_path)
    fresh.preseed(db_name="matrix")
    proc = fresh.config()
    assert proc.returncode == 0
    assert proc.stderr == ""
    assert fresh.get("db-host") == "localhost"
    assert fresh.get("db-name") == "matrix"
    assert "maintscript-helper" not in (ROOT / "debian" / "config").read_text()


def test_noninteractive_without_preseed_keeps_the_defaults(dc):
    dc.config()
    assert answers(dc)[:4] == ("localhost", "5432", "synapse", "synapse")
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
    assert answers(dc) == ("db.example.org", "6432", "matrix", "synapse_app", "verify-full")
    assert dc.get("purge-database") == "true"
    assert dc.get("db-password") == password
    # The secret is in the 0600 passwords database, not in config.dat.
    assert "pre seeded" not in (dc.dir / "config.dat").read_text()
    assert stat.S_IMODE((dc.dir / "passwords.dat").stat().st_mode) == 0o600


@pytest.mark.parametrize(
    ("preseed", "expected"),
    [
        ({"db_port": "99999"}, "1 to 65535"),
        ({"db_name": "Synapse-DB"}, "lower-case letters"),
        ({"db_host": "/var/run/post gres"}, "socket directory"),
        ({"db_host": "db.example.org:5433"}, "has a port in it"),
        ({"db_host": "db.example.org"}, "remote server needs the password"),
        ({"db_host": "db.example.org", "db_sslmode": "verify-everything"}, "verify-everything"),
        ({"db_password": "a", "db_password_again": "b"}, "differ"),
        ({"db_host": "db.example.org", "db_password": "a", "db_password_again": "b"}, "differ"),
        ({"backup_keep": "0"}, "whole number from 1 to 1000"),
        ({"backup_keep": "three"}, "whole number from 1 to 1000"),
        ({"workers": "everything"}, "is not a worker preset"),
        ({"workers": "client", "client_workers": "17"}, "whole number from 1 to 16"),
    ],
)
def test_an_invalid_preseed_fails_the_postinst_with_one_clear_line(dc, preseed, expected):
    # The config script asks (here: nothing, all is preseeded) and does not judge; the
    # postinst's helper refuses before it contacts any server, and changes nothing.
    dc.preseed(**({"db_password": "pw"} if "db_sslmode" in preseed else {}) | preseed)
    proc = dc.postinst(check=False)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if "matrix-synapse-setup: error:" in line]
    assert len(errors) == 1, proc.stderr
    assert expected in errors[0]
    assert "Traceback" not in proc.stderr
    assert "plan:" not in proc.stderr  # nothing was about to happen
    # Explained as an invalid answer (the noninteractive frontend prints the error
    # template), by the check that comes first, not as a failed setup.
    mismatch = expected == "differ"
    assert ("Passwords do not match" if mismatch else "The answer cannot be used") in proc.stdout
    assert "The database for Synapse cannot be used" not in proc.stdout
    assert dc.files_written() == []


@pytest.mark.server_language
def test_a_valid_preseed_passes_the_check_and_goes_on_to_the_server(dc):
    # The other side of the test above: the same run with valid answers gets past the
    # check, to the server (none here: an answer to the failure question ends it).
    port = free_port()
    dc.preseed(db_port=str(port), db_name="matrix", db_failure="ignore")
    proc = dc.postinst()
    assert "error:" not in proc.stderr
    assert f"provision the role and database matrix on localhost:{port}" in proc.stderr
    assert "was not set up" in proc.stderr
    assert dc.files_written() == []


def test_a_hand_edited_snippet_wins_over_older_answers(dc):
    # ucf has no record of this file: the admin wrote it.  Its values become the
    # answers, also where an answer was preseeded (seen) before.
    dc.preseed(db_host="localhost", db_port="5432")
    dc.write_snippet(REMOTE_SNIPPET)
    dc.config()
    assert answers(dc) == ("db.example.org", "6543", "edited", "edited_user", "require")
    # The password in the file is used by the postinst; it is not copied to debconf.
    assert dc.get("db-password") == ""
    assert "kept secret" not in (dc.dir / "passwords.dat").read_text()


def test_an_answer_wins_over_a_file_ucf_wrote_unchanged(dc):
    dc.ucf_install(REMOTE_SNIPPET)
    assert ":Yes:No" in dc.run(["ucfq", "--with-colons", f"/etc/{SNIPPET}"]).stdout
    dc.preseed(db_port="7000")  # seen: given since the file was written
    dc.run(["debconf-communicate", PKG], stdin=f"FSET {Q}db-name seen false\n")
    dc.config()
    # preseeded: kept; never seen (a lost debconf database): the file's; the rest
    # were not seen either.
    assert answers(dc) == ("db.example.org", "7000", "edited", "edited_user", "require")
    # The admin edits the file ucf wrote: now it wins over that answer.
    path = dc.etc / SNIPPET
    path.write_text(path.read_text().replace("port: 6543", "port: 6544"))
    assert ":Yes:Yes" in dc.run(["ucfq", "--with-colons", f"/etc/{SNIPPET}"]).stdout
    dc.config()
    assert dc.get("db-port") == "6544"


def test_an_answer_wins_over_the_values_the_admin_left_in_an_edited_file(dc):
    # The admin edited one value of the file ucf wrote; a database name preseeded
    # since then still wins, because the file's name is the one in ucf's copy of the
    # version it installed.  The edited port is the admin's.
    path = dc.ucf_install(REMOTE_SNIPPET)
    path.write_text(path.read_text().replace("port: 6543", "port: 6544"))
    dc.preseed(db_name="synapse2", db_port="6543", db_host="db.example.org")
    dc.config()
    assert (dc.get("db-name"), dc.get("db-port")) == ("synapse2", "6544")
    # Without ucf's copy (removed by hand), an edited file counts as the admin's
    # throughout: its name comes back.
    cached = dc.var_lib / "ucf/cache" / f"/etc/{SNIPPET}".replace("/", ":")
    assert cached.is_file(), sorted(p.name for p in cached.parent.iterdir())
    cached.unlink()
    dc.config()
    assert (dc.get("db-name"), dc.get("db-port")) == ("edited", "6544")


LOCAL_SNIPPET = (
    "database:\n  name: psycopg2\n  args:\n    host: localhost\n    port: 5432\n"
    "    dbname: synapse\n    user: synapse\n    sslmode: prefer\n"
)


def test_a_local_clusters_tls_mode_is_not_taken_for_an_answer(dc):
    # "prefer" is the package's own mode for the local cluster; were it read back into
    # the unanswered question, a remote server preseeded later would keep it instead of
    # verify-full.  (And the first reconfigure after an install would write debconf.)
    dc.ucf_install(LOCAL_SNIPPET)
    assert dc.flag("db-sslmode") == "false"
    default = dc.get("db-sslmode")
    dc.config()
    assert default != "prefer" and dc.get("db-sslmode") == default
    assert dc.get("db-name") == "synapse"
    # The admin's own mode, edited into the file, is an answer.
    path = dc.etc / SNIPPET
    path.write_text(path.read_text().replace("sslmode: prefer", "sslmode: disable"))
    dc.config()
    assert dc.get("db-sslmode") == "disable"


def test_running_config_twice_changes_nothing(dc):
    dc.preseed(db_name="matrix", db_password="pw")
    dc.write_snippet(REMOTE_SNIPPET)
    dc.config()
    before = (dc.dir / "config.dat").read_text(), (dc.dir / "passwords.dat").read_text()
    dc.config()
    after = (dc.dir / "config.dat").read_text(), (dc.dir / "passwords.dat").read_text()
    assert before == after


@pytest.mark.server_language
def test_helper_output_never_reaches_the_debconf_pipe(dc):
    # The helper talks debconf on the postinst's pipe (the confmodule moved its stdout
    # to fd 3); anything it printed there would be taken for a debconf command and
    # break the protocol.  With debug output on, the whole run still works.
    dc.preseed(db_port=str(free_port()), db_failure="ignore")
    proc = dc.postinst(env={"DEBCONF_DEBUG": "developer"})
    log = proc.stderr
    assert "<-- CAPB backup" in log  # the config script
    assert "<-- CAPB escape backup" in log  # the helper
    assert "<-- GET matrix-synapse-setup/db-failure" in log  # ... until the end
    assert "Unsupported command" not in log
    assert "was not set up" in log


def test_the_unknown_actions_of_a_newer_config_are_accepted(dc):
    proc = dc.run([str(ROOT / "debian" / "config"), "some-future-action"])
    assert proc.returncode == 0


def test_nothing_leaks_to_the_host(dc, cluster, names):
    # A run that writes the snippet, the password file and ucf's records (the
    # throwaway cluster is "the local cluster"): all of it in the overlays.
    host_files = [Path("/etc", SNIPPET), Path("/etc/matrix-synapse/conf.d/database.pgpass")]
    before = [p.read_bytes() if p.exists() else None for p in host_files]
    password = f"leak-check-{names[0]}"
    dc.env["PGSOCKDIR"] = cluster.socket_dir
    dc.preseed(db_port=str(cluster.port), db_name=names[0], db_user=names[1])
    dc.preseed(db_password=password, db_password_again=password)
    dc.postinst()
    written = dc.files_written()
    assert f"etc/upper/{SNIPPET}" in written
    assert password in (dc.etc / "matrix-synapse/conf.d/database.pgpass").read_text()
    assert any(path.startswith("var/lib/upper/ucf/") for path in written)
    assert [p.read_bytes() if p.exists() else None for p in host_files] == before
    host_ucf = Path("/var/lib/ucf/hashfile")
    assert not host_ucf.exists() or f"/etc/{SNIPPET}" not in host_ucf.read_text()


def test_plain_and_simply_quoted_values_reach_debconf_exactly(dc):
    dc.write_snippet(
        "database:\n  name: psycopg2\n  args:\n"
        '    host: "db.example.org"\n'
        "    port: 6543 # moved\n"
        "    dbname: 'matrix'\n"
        "    user:   synapse_app  \n"
        "    password: pw\n"
        "    sslmode: verify-ca\n"
        "    sslrootcert: '/etc/ssl/our ca.pem'\n"
    )
    dc.config()
    assert answers(dc) == ("db.example.org", "6543", "matrix", "synapse_app", "verify-ca")
    assert dc.get("db-sslrootcert") == "/etc/ssl/our ca.pem"


def test_a_readable_but_invalid_value_is_explained_by_the_postinst(dc):
    dc.write_snippet(
        "database:\n  name: psycopg2\n  args:\n    host: localhost\n    port: 5432\n"
        "    dbname: 'my db\\x'\n    user: synapse\n    password: pw\n"
    )
    proc = dc.postinst(check=False)
    assert dc.get("db-name") == "my db\\x"  # YAML single quotes: no escapes
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if "matrix-synapse-setup: error:" in line]
    assert len(errors) == 1, proc.stderr
    # the message shows the value as Python's repr (the backslash doubled)
    assert "The database name " + repr("my db\\x") + " is not allowed" in errors[0]
    assert dc.files_written() == [f"etc/upper/{SNIPPET}"]  # the test's own


@pytest.mark.parametrize(
    "args",
    [
        # double quotes with an escape: "synapse_x"
        '\n    host: localhost\n    port: 6000\n    dbname: "syn\\x61pse_x"\n'
        "    user: synapse\n    password: pw\n",
        # flow style
        " {host: localhost, port: 6000, dbname: synapse_x, user: synapse, password: pw}\n",
        # blanks debconf's protocol would not carry (two spaces, a tab, at either end)
        "\n    host: localhost\n    port: 6000\n    dbname: 'synapse  x'\n"
        "    user: synapse\n    password: pw\n",
        "\n    host: localhost\n    port: 6000\n    dbname: 'synapse\tx'\n"
        "    user: synapse\n    password: pw\n",
        "\n    host: localhost\n    port: 6000\n    dbname: ' synapse_x'\n"
        "    user: synapse\n    password: pw\n",
    ],
    ids=["escape", "flow", "two-spaces", "tab", "leading-space"],
)
def test_values_the_shell_cannot_read_are_left_to_the_helper(dc, args):
    # The config leaves the answer alone rather than guess; the helper reads the whole
    # YAML, and explains that the file differs from the answers.
    dc.preseed(db_name="matrix")
    dc.write_snippet("database:\n  name: psycopg2\n  args:" + args)
    proc = dc.postinst(check=False)
    assert dc.get("db-name") == "matrix"
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if "matrix-synapse-setup: error:" in line]
    assert len(errors) == 1, proc.stderr
    assert "edited by hand and differs from the answers in" in errors[0]
    assert "dbname" in errors[0]
    assert "Traceback" not in proc.stderr


WORKERS_SNIPPET = "matrix-synapse/conf.d/workers.yaml"


def test_a_reconfigure_reads_the_workers_preset_back_from_the_files(dc):
    # A lost debconf database (never seen): the preset and count come from the header
    # line of the shared snippet; an answer given since then (seen) wins.
    path = dc.etc / WORKERS_SNIPPET
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# Managed by matrix-synapse-setup\n# Workers preset: client 3\nredis: {}\n")
    dc.config()
    assert (dc.get("workers"), dc.get("client-workers")) == ("client", "3")
    dc.preseed(workers="none")
    dc.config()
    assert dc.get("workers") == "none"


def test_a_workers_file_without_our_line_changes_no_answer(dc):
    path = dc.etc / WORKERS_SNIPPET
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# Workers preset: everything 2\nredis: {}\n")
    dc.config()
    assert dc.get("workers") == "none"
