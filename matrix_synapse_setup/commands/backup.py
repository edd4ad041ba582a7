"""A dump of Synapse's database before every Synapse upgrade, and ``matrix-synapse-setup backup``.

apt runs ``/usr/share/matrix-synapse-setup/apt-backup-hook`` before it hands any package
to dpkg (``DPkg::Pre-Install-Pkgs`` in ``/etc/apt/apt.conf.d/60matrix-synapse-setup``,
protocol version 3 on stdin: see :func:`parse_hook_input`).  When ``matrix-synapse-py3``
or ``matrix-synapse`` is about to go from one version to another, and Synapse's effective
database is the one our snippet names, it writes ``pg_dump -Fc`` of that database to
``/var/backups/matrix-synapse-setup/synapse-OLDVERSION-TIME.dump`` (0600 root, in a 0700
directory), keeps the last N (debconf's ``backup-keep``, which the postinst copies to
files/state.py's ``KEEP_FILE``: the hook runs outside debconf) and refuses the upgrade
(non-zero exit) when the dump fails or the disk is too full, unless :data:`SKIP_ENV` is
set.

``pg_dump`` runs as postgres/dump.py says (without the rows of the one-time keys); its
output comes to this root process on a pipe, which writes the file.  The restore of a
dump is commands/restore.py.

Next to each dump goes ``synapse-OLDVERSION-TIME.config.tar``: what makes the server
itself (files/archive.py): homeserver.yaml, all of conf.d, the signing key and the log
configuration, as Synapse's effective configuration names them.  A plain tar, not a
compressed one: these files weigh a few KiB, and a plain tar lists and extracts with any
tar, and a damaged byte costs one member, not the rest of the stream.  The dump is renamed
into place before its archive, so that an archive never exists without its dump (a crash
between the two leaves a dump without an archive, as earlier versions made them); an
archive whose dump is gone is deleted with the dumps beyond the number to keep.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from matrix_synapse_setup.core import messages
from matrix_synapse_setup.core.errors import SetupError, run
from matrix_synapse_setup.core.output import say
from matrix_synapse_setup.core.paths import BACKUP_DIR, PACKAGE, POSTGRESQL_SOCKET_DIR, SNIPPET
from matrix_synapse_setup.core.settings import Settings
from matrix_synapse_setup.dpkg.packages import SYNAPSE_PACKAGES, installed_synapse
from matrix_synapse_setup.files import archive, atomic, snippet
from matrix_synapse_setup.files.atomic import private_dir
from matrix_synapse_setup.files.space import free_bytes
from matrix_synapse_setup.files.state import read_keep
from matrix_synapse_setup.postgres.dump import (
    database_size,
    last_line,
    pg_dump_command,
    pg_tool,
)
from matrix_synapse_setup.synapse import config as synapse_config
from matrix_synapse_setup.synapse.config import ServerFiles

SKIP_ENV = "MATRIX_SYNAPSE_SETUP_SKIP_BACKUP"
# Free space wanted beyond the database's size (pg_database_size; a custom-format dump is
# compressed and usually much smaller, so this errs on the side of refusing).
MARGIN = 64 * 1024 * 1024
STAMP_FORMAT = "%Y%m%dT%H%M%SZ"
# synapse-<Debian version, ':' written as '_'>-<UTC time>.dump, and its archive
DUMP_SUFFIX = ".dump"
ARCHIVE_SUFFIX = ".config.tar"
BASE_RE = r"synapse-(?P<version>[0-9][A-Za-z0-9.+~_-]*)-(?P<stamp>\d{8}T\d{6}Z)"
NAME_RE = re.compile(BASE_RE + re.escape(DUMP_SUFFIX) + r"\Z")
ARCHIVE_RE = re.compile(BASE_RE + re.escape(ARCHIVE_SUFFIX) + r"\Z")


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


# --- names and retention ------------------------------------------------------------


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


def archive_name(dump: str) -> str | None:
    """The name of the archive that goes with the dump named *dump*; None when *dump* is
    not the name of one of our dumps."""
    if not NAME_RE.match(dump):
        return None
    return dump[: -len(DUMP_SUFFIX)] + ARCHIVE_SUFFIX


def archive_of(dump: Path) -> Path | None:
    """Where the archive of *dump* is (whether it exists or not)."""
    name = archive_name(dump.name)
    return None if name is None else dump.with_name(name)


def parse_archive_name(name: str) -> tuple[str, str] | None:
    """(Synapse's Debian version, the UTC time) from an archive's file name."""
    found = ARCHIVE_RE.match(name)
    if not found:
        return None
    return found["version"].replace("_", ":"), found["stamp"]


def to_delete(names: Iterable[str], keep: int) -> list[str]:
    """Of the file names, our dumps beyond the *keep* newest (by the time in the name),
    with their archives, and every archive whose dump is not there, sorted by name.
    Other files are never included."""
    names = list(names)
    dumps = sorted(
        ((parsed[1], name) for name in names if (parsed := parse_dump_name(name))),
        reverse=True,
    )
    kept = {archive_name(name) for _, name in dumps[:keep]}
    old = [name for _, name in dumps[keep:]]
    archives = [name for name in names if parse_archive_name(name) and name not in kept]
    return sorted(old + archives)


# --- which database --------------------------------------------------------------


def our_database(
    snippet_path: Path | None = None, files: list[Path] | None = None
) -> Settings | None:
    """Synapse's database when it is the one our snippet names (Synapse's effective setting,
    homeserver.yaml and conf.d merged as Synapse merges them); None otherwise (no snippet,
    SQLite, another file's database)."""
    path = snippet_path or SNIPPET
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
    with contextlib.suppress(SetupError):
        found = snippet.read(snippet_path or SNIPPET)
        if found and found.get("passfile"):
            return str(found["passfile"])
    return None


# --- dumping ---------------------------------------------------------------------


def dump(
    settings: Settings,
    version: str,
    *,
    directory: Path = BACKUP_DIR,
    socket_dir: str = POSTGRESQL_SOCKET_DIR,
    passfile: str | None = None,
    keep: int | None = None,
    now: datetime.datetime | None = None,
    server: ServerFiles | None = None,
) -> Path:
    """Check the free space, dump Synapse's database into *directory* (0600, written under
    a temporary name, synced, renamed) and, with *server*, the archive of its files beside
    it (see the module's text), then keep the *keep* newest dumps.  The dump's path."""
    private_dir(directory)
    size, major = database_size(settings)
    free = free_bytes(directory)
    if free < size + MARGIN:
        raise SetupError(
            messages.BACKUP_NO_SPACE.format(
                directory=directory,
                free=synapse_config.human_size(free),
                needed=synapse_config.human_size(size + MARGIN),
                dbname=settings.dbname,
                env=SKIP_ENV,
            )
        )
    final = directory / dump_name(version, stamp(now))
    final_archive = directory / str(archive_name(final.name))
    tmp = final.with_name(f".{final.name}.partial")
    archive_tmp = final_archive.with_name(f".{final_archive.name}.partial")
    cmd, env, kwargs = pg_dump_command(settings, socket_dir, passfile)
    cmd[0] = pg_tool("pg_dump", major)
    left_out: list[Path] = []
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
            reason = last_line(proc.stderr.decode("utf-8", "replace"))
            raise SetupError(
                messages.BACKUP_DUMP_FAILED.format(
                    dbname=settings.dbname, reason=reason, env=SKIP_ENV
                )
            )
        if server is not None:
            left_out = archive.write(archive_tmp, server.paths())
        # The dump first: an archive never stands without its dump.
        os.replace(tmp, final)
        if server is not None:
            os.replace(archive_tmp, final_archive)
        atomic.sync_directory(directory)
    except BaseException:
        for partial in (tmp, archive_tmp):
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()
        raise
    for path in left_out:
        say(messages.ARCHIVE_LEFT_OUT.format(path=path, archive=final_archive))
    for name in to_delete(os.listdir(directory), read_keep() if keep is None else keep):
        with contextlib.suppress(FileNotFoundError):
            (directory / name).unlink()
    return final


def hook(
    stdin: str,
    *,
    directory: Path = BACKUP_DIR,
    socket_dir: str = POSTGRESQL_SOCKET_DIR,
    database: Callable[[], Settings | None] | None = None,
    passfile: str | None = None,
    server: ServerFiles | None = None,
) -> int:
    """The apt hook: a dump when Synapse is about to be upgraded, and the archive of the
    server's files beside it; 0 to let apt go on.  *database*: what finds Synapse's
    database (our_database; tests give their own, and *server*, the files to archive)."""
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
            server=server if database else synapse_config.server_files(),
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
    written = archive_of(path)
    if written is not None and written.exists():
        say(messages.ARCHIVE_WRITTEN.format(path=written))
    return 0


def hook_main() -> int:
    text = sys.stdin.read()
    return run(lambda: hook(text), prog=PACKAGE)


def backup_now(*, directory: Path = BACKUP_DIR, socket_dir: str = POSTGRESQL_SOCKET_DIR) -> Path:
    """`matrix-synapse-setup backup`: the same dump and archive now, named after the
    installed Synapse.  The dump's path."""
    settings = our_database()
    if settings is None:
        raise SetupError(messages.BACKUP_NOT_OURS.format(path=SNIPPET))
    found = installed_synapse()
    if found is None:
        raise SetupError(messages.BACKUP_NO_SYNAPSE)
    return dump(
        settings,
        found[1],
        directory=directory,
        socket_dir=socket_dir,
        passfile=passfile_of(),
        server=synapse_config.server_files(),
    )


def command(args: argparse.Namespace) -> int:
    """``matrix-synapse-setup backup``: the dump's path, then its archive's."""
    path = backup_now(socket_dir=args.socket_dir)
    print(path)
    written = archive_of(path)
    if written is not None and written.exists():
        print(written)
    return 0
