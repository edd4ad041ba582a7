"""Steps the scenarios share: install, preseed, look at PostgreSQL, ask the judges."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterable
from pathlib import Path

import yaml

from scripts.devtools.harness import DEBS, HELPERS, INROOT, Result, Root

PKG = "matrix-synapse-setup"
SNIPPET = "/etc/matrix-synapse/conf.d/database.yaml"
PASSFILE = "/etc/matrix-synapse/conf.d/database.pgpass"
NONINTERACTIVE = {"DEBIAN_FRONTEND": "noninteractive"}
# Quotes, spaces, a backslash, $, %, :, @ and non-ASCII letters.
ADVERSARIAL = 'it\'s a "quoted" pass\\word $HOME 100% a:b@c ünïcødé'


def preseed(root: Root, **answers: str) -> None:
    """debconf-set-selections through standard input: db_host="x" -> .../db-host string x."""
    types = {
        "db_password": "password",
        "db_sslmode": "select",
        "db_failure": "select",
        "sqlite_data": "select",
        "purge_database": "boolean",
        "tune_postgresql": "boolean",
        "admin_password": "password",
        "workers": "select",
    }
    lines = []
    for key, value in answers.items():
        question = f"{PKG}/{key.replace('_', '-')}"
        lines.append(f"{PKG} {question} {types.get(key, 'string')} {value}")
        if key in ("db_password", "admin_password"):
            again = question + "-again"
            lines.append(f"{PKG} {again} password {value}")
    root.ok(["debconf-set-selections"], input="\n".join(lines) + "\n", what="preseeding debconf")


def apt_install(
    root: Root, deb: Path | str, *, ok: bool = True, what: str = "", recommends: bool = True
) -> Result:
    """`apt-get install -y /…/x.deb` (a user's `apt install ./x.deb`), offline."""
    target = f"{DEBS}/{Path(deb).name}" if isinstance(deb, Path) else deb
    what = what or f"installing {Path(str(deb)).name} with apt"
    cmd = ["apt-get", "install", "-y", "-q", target]
    cmd += [] if recommends else ["--no-install-recommends"]
    if ok:
        return root.ok(cmd, what=what, env=NONINTERACTIVE)
    return root.fails(cmd, what=what, env=NONINTERACTIVE)


def install_postgresql(root: Root) -> None:
    root.ok(
        ["apt-get", "install", "-y", "-q", "postgresql"],
        what="installing postgresql",
        env=NONINTERACTIVE,
    )


def psql(
    root: Root,
    sql: str,
    db: str = "postgres",
    port: int = 5432,
    *,
    what: str,
    socket_dir: str | None = None,
) -> str:
    """Run SQL as the postgres superuser over the Unix socket (the default one, or the
    one in SOCKET_DIR); the unaligned output."""
    cmd = ["runuser", "-u", "postgres", "--", "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1"]
    cmd += ["-h", socket_dir] if socket_dir else []
    cmd += ["-p", str(port), "-tA", "-d", db, "-c", sql]
    return root.ok(cmd, what=what).output.strip()


def database_facts(root: Root, db: str = "synapse") -> dict[str, str]:
    row = psql(
        root,
        "SELECT pg_encoding_to_char(encoding), datcollate, datctype, pg_get_userbyid(datdba) "  # noqa: S608
        f"FROM pg_database WHERE datname = '{db}'",  # db: a name the test chose
        what=f"reading database {db}'s properties",
    )
    if not row:
        return {}
    encoding, collate, ctype, owner = row.split("|")
    return {"encoding": encoding, "collate": collate, "ctype": ctype, "owner": owner}


def synapse_table_count(root: Root, db: str = "synapse") -> int:
    out = psql(
        root,
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'",
        db,
        what=f"counting tables in {db}",
    )
    return int(out)


def snippet(root: Root) -> tuple[dict, str, str, str]:
    """(parsed YAML, mode, owner, group) of our snippet."""
    stat = root.ok(["stat", "-c", "%a %U %G", SNIPPET], what=f"looking at {SNIPPET}").output
    mode, owner, group = stat.split()
    return yaml.safe_load(root.read(SNIPPET)), mode, owner, group


def pgpass_entry(line: str) -> list[str]:
    """The five fields of a libpq password file line (libpq's reading: a backslash
    escapes the next character; the fifth field is the rest of the line)."""
    fields, current, chars = [], [], iter(line)
    for ch in chars:
        if ch == "\\":
            current.append(next(chars, ""))
        elif ch == ":" and len(fields) < 4:
            fields.append("".join(current))
            current = []
        else:
            current.append(ch)
    return [*fields, "".join(current)]


def check_snippet(root: Root, *, password: str | None, group: str, host: str = "localhost"):
    """Check the snippet and its password file; returns the snippet's args with the
    password libpq will use (from the password file) under "password"."""
    data, mode, owner, grp = snippet(root)
    root.check(
        mode == "640" and owner == "root" and grp == group,
        f"{SNIPPET} is private",
        f"mode 640 root:{group}",
        f"mode {mode} {owner}:{grp}",
    )
    args = dict((data or {}).get("database", {}).get("args", {}))
    root.check(
        (data or {}).get("database", {}).get("name") == "psycopg2",
        f"{SNIPPET} names Synapse's engine",
        "name: psycopg2",
        repr(data),
    )
    root.check(args.get("host") == host, f"{SNIPPET} host", host, repr(args.get("host")))
    root.check(
        "password" not in args and args.get("passfile") == PASSFILE,
        f"{SNIPPET} names the password file and holds no password",
        f"passfile: {PASSFILE}",
        repr(sorted(args)),
    )
    stat = root.ok(["stat", "-c", "%a %U %G", PASSFILE], what=f"looking at {PASSFILE}").output
    want_owner = "matrix-synapse" if group == "matrix-synapse" else "root"
    root.check(
        stat.split() == ["600", want_owner, "root"],
        f"{PASSFILE} is Synapse's alone (libpq ignores a password file others can read)",
        f"600 {want_owner} root",
        stat,
    )
    entries = [x for x in root.read(PASSFILE).splitlines() if x and not x.startswith("#")]
    root.check(len(entries) == 1, f"{PASSFILE} has one entry", "1", repr(len(entries)))
    user_field, secret = pgpass_entry(entries[0])[3:5]
    root.check(
        user_field == args.get("user"), f"{PASSFILE} is for the role", args.get("user"), user_field
    )
    args["password"] = secret
    if password is not None:
        root.check(
            secret == password,
            f"{PASSFILE} holds the password byte for byte",
            repr(password),
            repr(secret),
        )
    return args


def pg_login(root: Root, args: dict, password: str, *, net: str = "") -> Result:
    """Log in over TCP as Synapse would (pgcheck.py, password on stdin)."""
    params = {
        "host": str(args["host"]),
        "port": int(args.get("port", 5432)),
        "dbname": args["dbname"],
        "user": args["user"],
        "password": password,
    }
    return root.run(["python3", f"{HELPERS}/pgcheck.py"], input=json.dumps(params), net=net)


def password_not_in_debconf(root: Root, password: str) -> None:
    text = root.run(["cat", "/var/cache/debconf/passwords.dat", "/var/cache/debconf/config.dat"])
    root.check(
        password not in text.output,
        "the password does not stay in debconf's database",
        "absent from passwords.dat/config.dat",
        "present",
    )


# --- Synapse and the Matrix client -----------------------------------------------------


def judge(root: Root, *args: str, what: str, ok: bool = True) -> Result:
    cmd = ["/opt/venvs/judge/bin/python", f"{HELPERS}/judge.py", *args]
    return root.ok(cmd, what=what) if ok else root.fails(cmd, what=what)


def judge_stdin(root: Root, *args: str, stdin: str, what: str) -> Result:
    """The judge with a secret (a password) on its standard input, not its command line."""
    cmd = ["/opt/venvs/judge/bin/python", f"{HELPERS}/judge.py", *args]
    return root.ok(cmd, what=what, input=stdin + "\n")


def synapse_log(root: Root) -> str:
    """The end of Synapse's service output: its unit's journal in a booted root, else the
    init script's log."""
    if root.booted:
        return root.run(["journalctl", "-u", "matrix-synapse", "--no-pager", "-n", "60"]).output
    return root.run("tail -n 40 /var/log/matrix-synapse/service.log 2>&1").output


def synapse_up(root: Root, what: str) -> None:
    result = root.run(
        ["/opt/venvs/judge/bin/python", f"{HELPERS}/judge.py", "wait", "--timeout", "90"]
    )
    if result.code:
        root.fail(
            what,
            "Synapse answering on 127.0.0.1:8008",
            f"{result.output.strip()}\n--- Synapse's log ---\n{synapse_log(root)}",
        )


def synapse_chats(root: Root, messages: int = 10) -> None:
    """Synapse is up; a new user registers, logs in, makes a room, sends and reads back."""
    synapse_up(root, "Synapse starts")
    judge(
        root,
        "chat",
        "--messages",
        str(messages),
        what="the Matrix client registers, logs in, sends and reads back messages",
    )


def synapse_recheck(root: Root, messages: int = 5) -> None:
    """Users made before still log in and find their messages (same database)."""
    synapse_up(root, "Synapse starts")
    judge(
        root,
        "recheck",
        "--messages",
        str(messages),
        what="earlier users log in again and read their messages back in order",
    )


def synapse_pid(root: Root) -> str:
    """Synapse's process id ("0" or "" when it does not run): its unit's MainPID in a
    booted root, else the init script's pidfile."""
    if root.booted:
        cmd = ["systemctl", "show", "-p", "MainPID", "--value", SYNAPSE_UNIT]
        return root.ok(cmd, what="asking systemd for Synapse's MainPID").output.strip()
    return root.run(["cat", "/run/matrix-synapse.pid"]).output.strip()


def synapse_on_postgresql(root: Root, db: str = "synapse") -> None:
    count = synapse_table_count(root, db)
    root.check(count > 100, f"Synapse's schema is in database {db}", "> 100 tables", str(count))
    users = psql(root, "SELECT count(*) FROM users", db, what="counting Synapse's users")
    root.check(int(users) > 0, "the judge's users are in PostgreSQL", "> 0 rows", users)


# --- services (policy-rc.d; systemd in booted roots) --------------------------------------

SYNAPSE_UNIT = "matrix-synapse.service"
POLICY_DENY = "/etc/mss-test/policy-rc.d.deny"  # read by inroot/policy-rc.d


def policy_rc_d(root: Root, *, deny_synapse: Iterable[str]) -> None:
    """Make the root's policy-rc.d refuse these actions (e.g. "stop", "restart",
    "try-restart") on Synapse's service, as an admin's would: invoke-rc.d and
    deb-systemd-invoke then skip them; systemctl and systemd are not affected."""
    root.write(POLICY_DENY, "".join(f"{action}\n" for action in deny_synapse))


def policy_rc_d_default(root: Root) -> None:
    """Back to the roots' own policy-rc.d (the services the scenarios need, nothing
    refused for Synapse)."""
    root.ok(["rm", "-f", POLICY_DENY], what="removing the policy-rc.d refusals")
    root.put_file(INROOT / "policy-rc.d", "/usr/sbin/policy-rc.d", 0o755)


def unit_properties(root: Root, unit: str, *names: str) -> dict[str, str]:
    """`systemctl show -p NAME ... UNIT` (booted roots) as a dict."""
    cmd = ["systemctl", "show", *[f"--property={name}" for name in names], unit]
    out = root.ok(cmd, what=f"asking systemd about {unit}").output
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def postgresql_unit(root: Root) -> str:
    """The systemd unit of the root's PostgreSQL cluster: postgresql@VER-main.service."""
    out = root.ok(["pg_lsclusters", "-h"], what="listing PostgreSQL clusters").output
    return f"postgresql@{out.split()[0]}-main.service"


def check_cluster_booted(root: Root) -> None:
    """In a booted root: the cluster runs under systemd, and starts at boot."""
    unit = postgresql_unit(root)
    active = root.run(["systemctl", "is-active", unit]).output.strip()
    enabled = root.run(["systemctl", "is-enabled", "postgresql.service"]).output.strip()
    if active != "active" or enabled != "enabled":
        status = root.run(["systemctl", "status", "--no-pager", "-n", "30", unit]).output
        root.fail(
            "PostgreSQL's cluster runs under systemd and starts at boot",
            f"{unit} active, postgresql.service enabled",
            f"{unit} {active}, postgresql.service {enabled}\n{status}",
        )


# --- what a test session (or the migration benchmark) builds once ------------------------

STANDIN = Path(__file__).resolve().parent / "synapse-standin"
STANDIN_VERSION = "1.163.2+mss.systest"
STANDIN_DEB = f"matrix-synapse-py3_{STANDIN_VERSION}_all.deb"
# A newer version of the same stand-in (the same real Synapse inside): an upgrade of the
# Synapse package, for the backup taken before it (tests/system/test_backup_booted.py).
STANDIN_NEWER_VERSION = "1.163.3+mss.systest"


def standin_deb(workdir: Path, version: str = STANDIN_VERSION) -> Path:
    """Build the Synapse stand-in package (synapse-standin/) into WORKDIR; with another
    VERSION, the same package under that version."""
    deb = workdir / f"matrix-synapse-py3_{version}_all.deb"
    tree = STANDIN
    if version != STANDIN_VERSION:
        import shutil

        tree = workdir / f"synapse-standin-{version}"
        shutil.rmtree(tree, ignore_errors=True)
        shutil.copytree(STANDIN, tree, symlinks=True)
        control = tree / "DEBIAN" / "control"
        text = control.read_text(encoding="utf-8")
        control.write_text(
            text.replace(f"Version: {STANDIN_VERSION}\n", f"Version: {version}\n", 1),
            encoding="utf-8",
        )
    cmd = ["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(tree), str(deb)]
    subprocess.run(cmd, check=True, capture_output=True)
    return deb
