"""A dump of Synapse's database before every Synapse upgrade, and its restore (issue 14).

apt runs ``/usr/share/matrix-synapse-setup/apt-backup-hook`` before it hands any package
to dpkg (``DPkg::Pre-Install-Pkgs`` in ``/etc/apt/apt.conf.d/60matrix-synapse-setup``,
protocol version 3 on stdin: see :func:`parse_hook_input`).  When ``matrix-synapse-py3``
or ``matrix-synapse`` is about to go from one version to another, and Synapse's effective
database is the one our snippet names, it writes ``pg_dump -Fc`` of that database to
``/var/backups/matrix-synapse-setup/synapse-OLDVERSION-TIME.dump`` (0600 root, in a 0700
directory), keeps the last N (debconf's ``backup-keep``, which the postinst copies to
:data:`KEEP_FILE`: the hook runs outside debconf) and refuses the upgrade (non-zero exit)
when the dump fails or the disk is too full, unless :data:`SKIP_ENV` is set.

The local cluster is dumped by ``pg_dump`` running as ``postgres`` over the Unix socket
(peer authentication); its output comes to this root process on a pipe, which writes the
file.  A remote server is dumped as Synapse's role, with the password file the snippet
names (``PGPASSFILE``): no password on a command line or in a log.

``restore`` (local cluster only) makes a new database (UTF8, C, C, from template0, owned
by Synapse's role), ``pg_restore``s the dump into it, switches the snippet to it (ucf, as
the package writes it), sets debconf's ``db-name`` and restarts Synapse if it ran.  The
old database stays.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
import pwd
import re
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from matrix_synapse_setup.core import messages
from matrix_synapse_setup.core.errors import SetupError
from matrix_synapse_setup.core.settings import Settings, without_libpq_variables

BACKUP_DIR = Path("/var/backups/matrix-synapse-setup")
# Where the postinst copies debconf's backup-keep for the hook (purged with the package).
KEEP_FILE = Path("/var/lib/matrix-synapse-setup/backup-keep")
DEFAULT_KEEP = 3
MAX_KEEP = 1000
SKIP_ENV = "MATRIX_SYNAPSE_SETUP_SKIP_BACKUP"
SYNAPSE_PACKAGES = ("matrix-synapse-py3", "matrix-synapse")
# Free space wanted beyond the database's size (pg_database_size; a custom-format dump is
# compressed and usually much smaller, so this errs on the side of refusing).
MARGIN = 64 * 1024 * 1024
DEFAULT_SOCKET_DIR = "/var/run/postgresql"
STAMP_FORMAT = "%Y%m%dT%H%M%SZ"
# synapse-<Debian version, ':' written as '_'>-<UTC time>.dump
NAME_RE = re.compile(r"synapse-(?P<version>[0-9][A-Za-z0-9.+~_-]*)-(?P<stamp>\d{8}T\d{6}Z)\.dump\Z")
DEBCONF_DB_NAME = "matrix-synapse-setup/db-name"


def say(text: str) -> None:
    print(f"matrix-synapse-setup: {text}", file=sys.stderr, flush=True)


# --- the hook's input (apt's Pre-Install-Pkgs protocol, version 3) -----------------------


@dataclasses.dataclass(frozen=True)
class Action:
    """One package line: "NAME OLD OLDARCH OLDMA DIR NEW NEWARCH NEWMA WHAT" (version 3).
    A missing version is None; WHAT is a .deb path, **CONFIGURE** or **REMOVE**."""

    package: str
    old: str | None
    direction: str
    new: str | None
    what: str

    @property
    def version_change(self) -> bool:
        return self.old is not None and self.new is not None and self.old != self.new


def parse_hook_input(text: str) -> list[Action]:
    """The package actions of apt's hook protocol version 2 or 3: a "VERSION N" line, the
    configuration ("key=value" lines) up to an empty line, then one line per action."""
    lines = text.splitlines()
    if not lines or not lines[0].startswith("VERSION "):
        raise SetupError(messages.BACKUP_HOOK_INPUT.format(first=(lines or [""])[0][:40]))
    version = lines[0].split()[1]
    try:
        end = lines.index("", 1)
    except ValueError:
        end = len(lines)
    actions = []
    for line in lines[end + 1 :]:
        fields = line.split()
        if version == "2" and len(fields) == 5:
            name, old, direction, new, what = fields
        elif len(fields) == 9:
            name, old, _, _, direction, new, _, _, what = fields
        else:
            continue  # a line this version does not understand: not ours to judge
        actions.append(
            Action(name, None if old == "-" else old, direction, None if new == "-" else new, what)
        )
    return actions


def synapse_upgrade(actions: Iterable[Action]) -> Action | None:
    """The action that unpacks another version of Synapse over an installed one."""
    for action in actions:
        if (
            action.package in SYNAPSE_PACKAGES
            and action.version_change
            and action.what.startswith("/")  # an unpack (.deb); not configure or remove
        ):
            return action
    return None


# --- names, retention, versions ----------------------------------------------------


def stamp(now: datetime.datetime | None = None) -> str:
    return (now or datetime.datetime.now(datetime.UTC)).strftime(STAMP_FORMAT)


def dump_name(version: str, when: str) -> str:
    """synapse-VERSION-TIME.dump; an epoch's ':' is written '_' (not in Debian versions)."""
    name = f"synapse-{version.replace(':', '_')}-{when}.dump"
    if not NAME_RE.match(name):
        raise SetupError(messages.BACKUP_BAD_VERSION.format(version=version))
    return name


def parse_dump_name(name: str) -> tuple[str, str] | None:
    """(Synapse's Debian version, the UTC time) from a dump's file name, None if it is not
    one of ours."""
    found = NAME_RE.match(name)
    if not found:
        return None
    return found["version"].replace("_", ":"), found["stamp"]


def to_delete(names: Iterable[str], keep: int) -> list[str]:
    """Of the file names, our dumps beyond the *keep* newest (by the time in the name),
    oldest first.  Other files are never included."""
    ours = sorted(
        ((parsed[1], name) for name in names if (parsed := parse_dump_name(name))),
        reverse=True,
    )
    return sorted(name for _, name in ours[keep:])


def validate_keep(value: str | int) -> int:
    text = str(value).strip()
    if not text.isdigit() or not 1 <= int(text) <= MAX_KEEP:
        raise SetupError(messages.BACKUP_KEEP_INVALID.format(value=text, maximum=MAX_KEEP))
    return int(text)


def read_keep(path: Path = KEEP_FILE) -> int:
    try:
        return validate_keep(path.read_text(encoding="ascii"))
    except (OSError, UnicodeDecodeError, SetupError):
        return DEFAULT_KEEP


def store_keep(value: str, path: Path = KEEP_FILE) -> bool:
    """Write the validated answer for the hook; True when the file changed."""
    text = f"{validate_keep(value)}\n"
    with contextlib.suppress(OSError, UnicodeDecodeError):
        if path.read_text(encoding="ascii") == text:
            return False
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="ascii")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return True


def compare_versions(a: str, op: str, b: str) -> bool:
    """dpkg --compare-versions A OP B."""
    proc = subprocess.run(
        ["dpkg", "--compare-versions", a, op, b], stdin=subprocess.DEVNULL, check=False
    )
    return proc.returncode == 0


def installed_synapse() -> tuple[str, str] | None:
    """(package, version) of the installed Synapse package, None when there is none."""
    for package in SYNAPSE_PACKAGES:
        proc = subprocess.run(
            ["dpkg-query", "-W", "-f", "${db:Status-Abbrev} ${Version}", package],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
        )
        status, _, version = proc.stdout.partition(" ")
        if proc.returncode == 0 and status.strip() in ("ii", "iU", "iF", "iH") and version:
            return package, version.strip()
    return None


# --- which database --------------------------------------------------------------


def our_database(
    snippet_path: Path | None = None, files: list[Path] | None = None
) -> Settings | None:
    """Synapse's database when it is the one our snippet names (Synapse's effective setting,
    homeserver.yaml and conf.d merged as Synapse merges them); None otherwise (no snippet,
    SQLite, another file's database)."""
    from matrix_synapse_setup.files import snippet
    from matrix_synapse_setup.synapse import config as synapse_config

    path = snippet_path or snippet.SNIPPET
    if not path.exists():
        return None
    merged, origin = synapse_config.load(
        files if files is not None else synapse_config.config_files()
    )
    database = synapse_config.effective_database(merged, origin)
    if database.engine != "psycopg2" or database.source != path:
        return None
    found = snippet.read(path)
    if found is None:
        return None
    answers = {key: None if found[key] is None else str(found[key]) for key in snippet.MANAGED}
    settings = Settings.from_answers(**answers)
    return dataclasses.replace(settings, password=str(found.get("password") or ""))


def passfile_of(snippet_path: Path | None = None) -> str | None:
    from matrix_synapse_setup.files import snippet

    with contextlib.suppress(SetupError):
        found = snippet.read(snippet_path or snippet.SNIPPET)
        if found and found.get("passfile"):
            return str(found["passfile"])
    return None


# --- dumping ---------------------------------------------------------------------


def database_size(settings: Settings) -> tuple[int, int]:
    """(pg_database_size of Synapse's database, the server's major version), as Synapse's
    role."""
    from matrix_synapse_setup.postgres.provision import connect_as_role

    with connect_as_role(settings) as conn:
        (size,) = conn.execute("SELECT pg_database_size(current_database())").fetchone()
        major = conn.info.server_version // 10000
    return int(size), major


PG_LIB = Path("/usr/lib/postgresql")


def pg_tool(name: str, major: int | None = None, lib: Path = PG_LIB) -> str:
    """The PostgreSQL client program *name* for a server of version *major*: that
    version's own, else the newest installed one that is not older (pg_dump refuses a
    newer server), else the newest; "name" (pg_wrapper's choice) when none is found.
    pg_wrapper alone would take the default cluster's version, which may be another
    cluster's."""
    found = []
    for path in lib.glob(f"*/bin/{name}"):
        with contextlib.suppress(ValueError):
            found.append((int(path.parent.parent.name), str(path)))
    found.sort()
    if not found:
        return name
    if major is not None:
        for version, path in found:
            if version >= major:
                return path
    return found[-1][1]


def free_bytes(directory: Path) -> int:
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize


def private_dir(directory: Path) -> None:
    """The backup directory: 0700 root (created, or its mode set)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chown(directory, 0, 0)
    os.chmod(directory, 0o700)


def _clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """No PG* variable of the admin's shell steers our connections."""
    env = without_libpq_variables(dict(os.environ))
    env["LC_ALL"] = "C.UTF-8"
    env.update(extra or {})
    return env


def _postgres() -> pwd.struct_passwd:
    from matrix_synapse_setup.postgres.provision import _postgres_user

    return _postgres_user()


def pg_dump_command(
    settings: Settings, socket_dir: str, passfile: str | None
) -> tuple[list[str], dict[str, str], dict[str, Any]]:
    """(argv, environment, subprocess arguments) for pg_dump -Fc to stdout."""
    if settings.local:
        postgres = _postgres()
        cmd = ["pg_dump", "-Fc", "-h", settings.socket_dir or socket_dir, "-p", str(settings.port)]
        cmd += ["-d", settings.dbname]
        env = _clean_env({"HOME": postgres.pw_dir})
        kwargs = {"user": postgres.pw_uid, "group": postgres.pw_gid, "extra_groups": []}
        return cmd, env, kwargs
    extra = {
        "PGHOST": settings.host,
        "PGPORT": str(settings.port),
        "PGUSER": settings.user,
        "PGDATABASE": settings.dbname,
        "PGSSLMODE": settings.sslmode,
        "PGCONNECT_TIMEOUT": "10",
        "PGAPPNAME": "matrix-synapse-setup",
    }
    if settings.sslrootcert:
        extra["PGSSLROOTCERT"] = settings.sslrootcert
    if passfile:
        extra["PGPASSFILE"] = passfile
    return ["pg_dump", "-Fc", "-w"], _clean_env(extra), {}


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


def dump(
    settings: Settings,
    version: str,
    *,
    directory: Path = BACKUP_DIR,
    socket_dir: str = DEFAULT_SOCKET_DIR,
    passfile: str | None = None,
    keep: int | None = None,
    now: datetime.datetime | None = None,
) -> Path:
    """Check the free space, dump Synapse's database into *directory* (0600, written under
    a temporary name, synced, renamed), then keep the *keep* newest dumps.  The path."""
    private_dir(directory)
    size, major = database_size(settings)
    free = free_bytes(directory)
    if free < size + MARGIN:
        raise SetupError(
            messages.BACKUP_NO_SPACE.format(
                directory=directory,
                free=_human(free),
                needed=_human(size + MARGIN),
                dbname=settings.dbname,
                env=SKIP_ENV,
            )
        )
    final = directory / dump_name(version, stamp(now))
    tmp = final.with_name(f".{final.name}.partial")
    cmd, env, kwargs = pg_dump_command(settings, socket_dir, passfile)
    cmd[0] = pg_tool("pg_dump", major)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                proc = subprocess.run(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.PIPE,
                    env=env,
                    check=False,
                    **kwargs,
                )
            except FileNotFoundError:
                raise SetupError(messages.BACKUP_NO_PG_DUMP.format(env=SKIP_ENV)) from None
            out.flush()
            os.fsync(out.fileno())
        if proc.returncode != 0:
            reason = _last_line(proc.stderr.decode("utf-8", "replace"))
            raise SetupError(
                messages.BACKUP_DUMP_FAILED.format(
                    dbname=settings.dbname, reason=reason, env=SKIP_ENV
                )
            )
        os.replace(tmp, final)
        dirfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dirfd)
        finally:
            os.close(dirfd)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    for name in to_delete(os.listdir(directory), read_keep() if keep is None else keep):
        with contextlib.suppress(FileNotFoundError):
            (directory / name).unlink()
    return final


def _human(size: int) -> str:
    from matrix_synapse_setup.synapse.config import human_size

    return human_size(size)


def hook(
    stdin: str,
    *,
    directory: Path = BACKUP_DIR,
    socket_dir: str = DEFAULT_SOCKET_DIR,
    database: Callable[[], Settings | None] | None = None,
    passfile: str | None = None,
) -> int:
    """The apt hook: a dump when Synapse is about to be upgraded; 0 to let apt go on.
    *database*: what finds Synapse's database (our_database; tests give their own)."""
    try:
        upgrade = synapse_upgrade(parse_hook_input(stdin))
        if upgrade is None or upgrade.old is None:
            return 0
        settings = (database or our_database)()
        if settings is None:
            return 0
        path = dump(
            settings,
            upgrade.old,
            directory=directory,
            socket_dir=socket_dir,
            passfile=passfile if database else passfile_of(),
        )
    except SetupError as err:
        if os.environ.get(SKIP_ENV, "") not in ("", "0"):
            say(messages.BACKUP_SKIPPED.format(reason=err.message, env=SKIP_ENV))
            return 0
        if SKIP_ENV not in err.message:  # a refusal always names the way past it
            raise SetupError(
                f"{err.message}\n{messages.BACKUP_OVERRIDE.format(env=SKIP_ENV)}"
            ) from None
        raise
    say(
        messages.BACKUP_WRITTEN.format(
            path=path, package=upgrade.package, old=upgrade.old, new=upgrade.new
        )
    )
    return 0


def hook_main() -> int:
    from matrix_synapse_setup.core.errors import run

    text = sys.stdin.read()
    return run(lambda: hook(text), prog="matrix-synapse-setup")


def backup_now(*, directory: Path = BACKUP_DIR, socket_dir: str = DEFAULT_SOCKET_DIR) -> Path:
    """`matrix-synapse-setup backup`: the same dump now, named after the installed Synapse."""
    settings = our_database()
    if settings is None:
        raise SetupError(messages.BACKUP_NOT_OURS.format(path=_snippet_path()))
    found = installed_synapse()
    if found is None:
        raise SetupError(messages.BACKUP_NO_SYNAPSE)
    return dump(
        settings, found[1], directory=directory, socket_dir=socket_dir, passfile=passfile_of()
    )


def _snippet_path() -> Path:
    from matrix_synapse_setup.files import snippet

    return snippet.SNIPPET


# --- restoring --------------------------------------------------------------------


def _create_database(socket_dir: str, port: int, dbname: str, owner: str) -> str:
    """As postgres: CREATE DATABASE *dbname* as Synapse needs it, owned by *owner*; refuse
    a name that exists (nothing is ever overwritten)."""
    from matrix_synapse_setup.postgres.queries import import_psycopg
    from matrix_synapse_setup.postgres.superuser import ensure_database

    psycopg = import_psycopg()
    with psycopg.connect(
        host=socket_dir,
        port=port,
        dbname="postgres",
        user="postgres",
        connect_timeout=10,
        autocommit=True,
    ) as conn:
        row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
        if row is not None:
            raise SetupError(messages.RESTORE_EXISTS.format(dbname=dbname))
        ensure_database(conn, psycopg.sql, Settings(port=port, dbname=dbname, user=owner), False)
    return dbname


def _create_database_answer(request: dict[str, Any]) -> dict[str, Any]:
    """In the postgres child (:class:`provision.Superuser`): :func:`_create_database` for
    *request*; ``{"result": name}`` or the error (:func:`superuser.error_answer`)."""
    from matrix_synapse_setup.postgres.superuser import error_answer

    try:
        return {
            "result": _create_database(
                request["socket_dir"], request["port"], request["dbname"], request["owner"]
            )
        }
    except Exception as err:  # noqa: BLE001 - answered to the parent
        return error_answer(err)


def restore_name(dbname: str, now: datetime.datetime | None = None) -> str:
    """OLD_restored_YYYYMMDDtHHMMSS, a valid name (at most 63 characters)."""
    suffix = "_restored_" + stamp(now).lower().rstrip("z")
    from matrix_synapse_setup.core.settings import validate_name

    return validate_name("database", dbname[: 63 - len(suffix)] + suffix)


@dataclasses.dataclass
class RestorePlan:
    dump: Path
    version: str
    settings: Settings
    new_dbname: str
    socket_dir: str

    def describe(self) -> list[str]:
        return [
            f"create database {self.new_dbname} (UTF8, C, C, owner {self.settings.user})",
            f"pg_restore {self.dump} (Synapse {self.version}) into it",
            f"switch {_snippet_path()} from {self.settings.dbname} to {self.new_dbname} (ucf),"
            f" set debconf's {DEBCONF_DB_NAME}",
            "restart Synapse if it runs",
            f"keep database {self.settings.dbname}",
        ]


def plan_restore(
    dump_file: Path, *, socket_dir: str = DEFAULT_SOCKET_DIR, now: datetime.datetime | None = None
) -> RestorePlan:
    """Check everything a restore needs; changes nothing."""
    parsed = parse_dump_name(dump_file.name)
    if parsed is None:
        raise SetupError(messages.RESTORE_BAD_NAME.format(path=dump_file))
    if not dump_file.is_file():
        raise SetupError(messages.RESTORE_NO_FILE.format(path=dump_file))
    version = parsed[0]
    found = installed_synapse()
    if found is None:
        raise SetupError(messages.BACKUP_NO_SYNAPSE)
    if compare_versions(version, "gt", found[1]):
        raise SetupError(
            messages.RESTORE_NEWER.format(
                path=dump_file.name, version=version, package=found[0], installed=found[1]
            )
        )
    settings = our_database()
    if settings is None:
        raise SetupError(messages.BACKUP_NOT_OURS.format(path=_snippet_path()))
    if not settings.local:
        raise SetupError(
            messages.RESTORE_REMOTE.format(host=settings.host, path=dump_file, user=settings.user)
        )
    return RestorePlan(
        dump_file,
        version,
        settings,
        restore_name(settings.dbname, now),
        settings.socket_dir or socket_dir,
    )


def pg_restore(plan: RestorePlan) -> None:
    """pg_restore as postgres, the objects owned by Synapse's role (SET ROLE); the file
    (0600 root) comes on stdin from this root process."""
    postgres = _postgres()
    cmd = [
        pg_tool("pg_restore"),
        "--no-owner",
        "--no-privileges",
        f"--role={plan.settings.user}",
        "--exit-on-error",
        "-h",
        plan.socket_dir,
        "-p",
        str(plan.settings.port),
        "-d",
        plan.new_dbname,
    ]
    with plan.dump.open("rb") as source:
        try:
            proc = subprocess.run(
                cmd,
                stdin=source,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                check=False,
                env=_clean_env({"HOME": postgres.pw_dir}),
                user=postgres.pw_uid,
                group=postgres.pw_gid,
                extra_groups=[],
            )
        except FileNotFoundError:
            raise SetupError(messages.BACKUP_NO_PG_DUMP.format(env=SKIP_ENV)) from None
    if proc.returncode != 0:
        raise SetupError(
            messages.RESTORE_FAILED.format(
                path=plan.dump,
                dbname=plan.new_dbname,
                reason=_last_line(proc.stderr.decode("utf-8", "replace")),
            )
        )


def set_debconf_db_name(dbname: str) -> bool:
    """debconf's db-name follows the snippet (else a later dpkg-reconfigure would switch
    back).  False when debconf's database is locked (apt running) or missing."""
    line = f"matrix-synapse-setup {DEBCONF_DB_NAME} string {dbname}\n"
    try:
        proc = subprocess.run(
            ["debconf-set-selections"], input=line, text=True, capture_output=True, check=False
        )
    except FileNotFoundError:
        return False
    return proc.returncode == 0


def restore_database(plan: RestorePlan) -> list[str]:
    """A new database from the dump, checked as Synapse's role; changes no file."""
    from matrix_synapse_setup.postgres.provision import Superuser, verify

    Superuser.start(_postgres(), _create_database_answer).ask(
        {
            "socket_dir": plan.socket_dir,
            "port": plan.settings.port,
            "dbname": plan.new_dbname,
            "owner": plan.settings.user,
        }
    )
    lines = [f"database {plan.new_dbname}: created"]
    pg_restore(plan)
    lines.append(f"pg_restore {plan.dump.name}: ok")
    new = dataclasses.replace(plan.settings, dbname=plan.new_dbname)
    return lines + [str(step) for step in verify(new)]


def switch(plan: RestorePlan) -> list[str]:
    """The snippet (ucf) and debconf name the new database; Synapse restarts if it ran."""
    from matrix_synapse_setup.files import snippet
    from matrix_synapse_setup.synapse import service as services

    new = dataclasses.replace(plan.settings, dbname=plan.new_dbname)
    current = snippet.read() or {}
    text = snippet.render(new, password_set=current.get("password_set"))
    running = services.synapse_running()
    snippet.install(None, text, new, snippet.ownership())
    after = snippet.read() or {}
    if after.get("dbname") != plan.new_dbname:
        raise SetupError(
            messages.RESTORE_SNIPPET_KEPT.format(path=snippet.SNIPPET, dbname=plan.new_dbname)
        )
    lines = [f"{snippet.SNIPPET}: now names {plan.new_dbname}"]
    if set_debconf_db_name(plan.new_dbname):
        lines.append(f"debconf {DEBCONF_DB_NAME}: {plan.new_dbname}")
    else:
        lines.append(messages.RESTORE_DEBCONF.format(dbname=plan.new_dbname))
    if running:
        services.restart_synapse("restart")
        lines.append("Synapse: restarted")
    lines.append(messages.RESTORED.format(old=plan.settings.dbname, new=plan.new_dbname))
    return lines


def restore(plan: RestorePlan) -> list[str]:
    """Carry out *plan*; the lines to print."""
    return restore_database(plan) + switch(plan)
