"""Synapse's database snippet, /etc/matrix-synapse/conf.d/database.yaml: its whole life.

Rendered from a Jinja2 template with every value passed through a YAML-safe
filter, parsed back and compared with the values before it is used, written
atomically (never world-readable, not even for a moment) and registered with
ucf so that an administrator's edits are detected and never silently lost.

Who may read it: root, and the Synapse service user ``matrix-synapse``.

- The user's primary group is private to it (upstream's ``matrix-synapse-py3``
  creates the group ``matrix-synapse``): ``root:<that group>``, mode 0640.
- The primary group is shared (Debian's ``matrix-synapse`` package puts the
  user in ``nogroup``, which ``nobody`` and other daemons share): giving that
  group read access would hand the password to every process running as
  ``nogroup``.  Then the file is owned by ``matrix-synapse``, group root,
  mode 0440: Synapse reads it, nobody else but root.
- No such user (Synapse not installed yet): ``root:root`` 0640; the dpkg file
  trigger on Synapse's unit file fixes it when Synapse arrives.
"""

from __future__ import annotations

import contextlib
import dataclasses
import grp
import os
import pwd
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from matrix_synapse_setup.core import messages
from matrix_synapse_setup.core.errors import SetupError
from matrix_synapse_setup.core.faults import fault, ucf_wrapper_dir
from matrix_synapse_setup.core.settings import Settings
from matrix_synapse_setup.synapse.service import child_fds, say

if TYPE_CHECKING:
    from matrix_synapse_setup.dpkg.debconf import Conversation

SNIPPET = Path("/etc/matrix-synapse/conf.d/database.yaml")
# The role's password, in libpq's password file format, named by the snippet's
# "passfile" (psycopg2 hands it to libpq).  Not in the YAML: ucf shows the YAML's
# differences to an admin, and those must not show a password.  Synapse reads only
# *.yaml in conf.d.  libpq ignores a password file that its group or others can
# read: it is 0600, owned by Synapse's user.
PASSFILE = Path("/etc/matrix-synapse/conf.d/database.pgpass")
# Versions before 0.5.0 wrote Synapse's systemd drop-in here at run time; it is now
# shipped under /usr/lib/systemd/system/matrix-synapse.service.d/ (the admin's
# directory is /etc).  RUNTIME_DROPIN_TEXT is what they wrote, to tell an edit.
RUNTIME_DROPIN = Path("/etc/systemd/system/matrix-synapse.service.d/matrix-synapse-setup.conf")
SYNAPSE_USER = "matrix-synapse"
TEMPLATE = "database.yaml.j2"
UCF_HASHFILE = Path("/var/lib/ucf/hashfile")  # only for the test-only fault point
PACKAGE = "matrix-synapse-setup"
UCF_BACKUP_SUFFIXES = (".ucf-old", ".ucf-new", ".ucf-dist")

# The values this package manages (the password through the password file):
# everything else in the file (pool sizes, keepalives, comments) is ours to render
# but an admin may edit it.
MANAGED = ("host", "port", "dbname", "user", "password", "sslmode", "sslrootcert")
# What the snippet's text says about them.
TEXT_KEYS = ("host", "port", "dbname", "user", "sslmode", "sslrootcert")

RUNTIME_DROPIN_TEXT = """\
# Written by matrix-synapse-setup: Synapse's database is the PostgreSQL cluster
# on this machine, so start Synapse after it.  Removed when the package is
# purged or the database moves to another host (dpkg-reconfigure).
[Unit]
Wants=postgresql.service
After=postgresql.service
"""


# --- rendering ----------------------------------------------------------------


def yaml_scalar(value: Any) -> str:
    """One YAML scalar on one line that safe_load reads back as *value*."""
    import yaml

    if isinstance(value, bool) or value is None:
        raise TypeError(f"not a snippet value: {value!r}")
    if isinstance(value, int):
        return str(value)
    text = yaml.safe_dump(
        str(value), default_style='"', allow_unicode=True, width=1 << 30, explicit_end=False
    )
    text = text.rstrip("\n")
    if "\n" in text:  # width is huge and control characters are escaped: cannot happen
        raise ValueError("a YAML scalar spans lines")
    return text


def render(
    settings: Settings, *, password_set: str | None = None, template_dir: Path | None = None
) -> str:
    """The snippet's text for *settings* (whose password must be set).

    *password_set*: when the role's password was last set (see password_stamp()).  The
    password is in the password file, so without this line a new password would leave
    the YAML unchanged, and ucf would neither ask about an edited file nor replace it."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template_dir or Path(__file__).parent / "templates")),
        autoescape=False,  # noqa: S701 - YAML, not HTML: values go through the yaml filter
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    env.filters["yaml"] = yaml_scalar
    values = text_values(settings) | {"password_set": password_set}
    text = env.get_template(TEMPLATE).render(**values)
    check_round_trip(text, settings)
    return text


_STAMP_RE = re.compile(r"^# The role's password was set on (\S+)\.$", re.MULTILINE)


def password_stamp(text: str | None) -> str | None:
    """The "password was set on" time in a snippet's text, if it has one."""
    found = _STAMP_RE.search(text or "")
    return found[1] if found else None


def new_password_stamp(previous: str | None = None) -> str:
    """Now, differing from *previous* (the stamp in the file): two password changes in
    the same second must still give ucf two versions."""
    import datetime

    now = datetime.datetime.now(datetime.UTC)
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    return stamp if stamp != previous else now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def values_of(settings: Settings) -> dict[str, Any]:
    return {name: getattr(settings, name) for name in MANAGED}


def text_values(settings: Settings) -> dict[str, Any]:
    """What the template writes: the managed values but the password, and the file
    that holds it."""
    values = {name: getattr(settings, name) for name in TEXT_KEYS}
    values["passfile"] = str(PASSFILE)
    return values


def parse(text: str, *, where: str = str(SNIPPET)) -> dict[str, Any]:
    """The managed values in a snippet's text, and its passfile; SetupError if it is not
    one.  "password" is the one written in the YAML (None when there is none)."""
    import yaml

    from matrix_synapse_setup.core.yamlload import safe_load

    try:
        data = safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f"line {mark.line + 1}" if mark else "somewhere"
        raise SetupError(messages.SNIPPET_UNREADABLE.format(path=where, reason=line)) from None
    database = data.get("database") if isinstance(data, dict) else None
    args = database.get("args") if isinstance(database, dict) else None
    if not isinstance(args, dict) or database.get("name") != "psycopg2":
        raise SetupError(
            messages.SNIPPET_UNREADABLE.format(
                path=where, reason="no 'database: {name: psycopg2, args: ...}'"
            )
        )
    found = {name: args.get(name) for name in MANAGED}
    found["port"] = args.get("port", 5432)
    found["passfile"] = args.get("passfile")
    found["password_set"] = password_stamp(text)
    return found


def check_round_trip(text: str, settings: Settings) -> None:
    """Refuse to use a rendering that does not read back as exactly *settings*."""
    found = parse(text, where="the rendered snippet")
    wanted = text_values(settings) | {"password": None}
    for name in (*TEXT_KEYS, "passfile", "password"):
        if found[name] != wanted[name] or type(found[name]) is not type(wanted[name]):
            raise SetupError(messages.SNIPPET_ROUND_TRIP.format(field=name))


def effective(found: dict[str, Any]) -> dict[str, Any]:
    """*found* (from parse) with the password libpq will use: the one in the YAML, else
    the one the password file names gives for the role."""
    if found.get("password") is not None or not found.get("passfile"):
        return found
    password = read_passfile(Path(str(found["passfile"])), str(found.get("user") or ""))
    return found | {"password": password}


def read(path: Path = SNIPPET) -> dict[str, Any] | None:
    """The managed values of the installed snippet (the password resolved), None when
    there is none."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as err:
        raise SetupError(
            messages.SNIPPET_UNREADABLE.format(path=path, reason=type(err).__name__)
        ) from None
    return effective(parse(text, where=str(path)))


def differences(found: dict[str, Any] | None, settings: Settings) -> list[str]:
    """The managed values in which *found* (parsed, not resolved) would connect Synapse
    otherwise than *settings* with our password file."""
    if found is None:
        return ["the whole file"]
    wanted = values_of(settings)
    fields = [name for name in TEXT_KEYS if found.get(name) != wanted[name]]
    if found.get("password") is not None:  # in the YAML: it wins over any password file
        if found["password"] != settings.password:
            fields.append("password")
    elif found.get("passfile") != str(PASSFILE):
        fields.append("passfile")
    return fields


def same_values(found: dict[str, Any] | None, settings: Settings) -> bool:
    return not differences(found, settings)


# --- the password file (libpq's format) -------------------------------------------


def _pgpass_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


def _pgpass_fields(line: str) -> list[str]:
    fields, current, escaped = [], [], False
    for ch in line:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == ":" and len(fields) < 4:
            fields.append("".join(current))
            current = []
        else:
            current.append(ch)
    fields.append("".join(current))
    return fields


def passfile_text(settings: Settings) -> str:
    # Any host, port and database: the file serves this snippet's connection only, and
    # an admin who edits the host in the snippet must not lose the login.
    return (
        "# Written by matrix-synapse-setup for /etc/matrix-synapse/conf.d/database.yaml:\n"
        "# the password of Synapse's PostgreSQL role (libpq password file format).\n"
        f"*:*:*:{_pgpass_escape(settings.user)}:{_pgpass_escape(settings.password)}\n"
    )


def read_passfile(path: Path, user: str) -> str | None:
    """The password *path* (libpq's format) gives for *user*, None if none."""
    try:
        lines = path.read_text(encoding="utf-8").split("\n")  # libpq's lines: \n only
    except (OSError, UnicodeDecodeError):
        return None
    for line in lines:
        if not line.strip() or line.startswith("#"):
            continue
        fields = _pgpass_fields(line)
        if len(fields) == 5 and fields[3] in (user, "*"):
            return fields[4]
    return None


def passfile_ownership(user: str = SYNAPSE_USER) -> Ownership:
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return Ownership(0, 0, 0o600)
    return Ownership(entry.pw_uid, 0, 0o600)


def write_passfile(settings: Settings, path: Path = PASSFILE) -> bool:
    """Put the role's password in the password file; True if it changed."""
    owner = passfile_ownership()
    text = passfile_text(settings)
    try:
        if path.read_text(encoding="utf-8") == text:
            fix_ownership(path, owner)
            return False
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    write_atomic(path, text, owner)
    return True


# --- who may read it -------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Ownership:
    uid: int
    gid: int
    mode: int

    def describe(self) -> str:
        user = _name(pwd.getpwuid, self.uid)
        group = _name(grp.getgrgid, self.gid)
        return f"{user}:{group} {self.mode:04o}"


def _name(lookup: Any, ident: int) -> str:
    try:
        return lookup(ident)[0]
    except KeyError:
        return str(ident)


def _group_is_private(user: pwd.struct_passwd) -> bool:
    """True when only *user* is in its primary group."""
    if user.pw_gid == 0:
        return False
    try:
        group = grp.getgrgid(user.pw_gid)
    except KeyError:
        return False
    if set(group.gr_mem) - {user.pw_name}:
        return False
    return not any(
        other.pw_gid == user.pw_gid and other.pw_name != user.pw_name for other in pwd.getpwall()
    )


def ownership(user: str = SYNAPSE_USER) -> Ownership:
    """Owner, group and mode that let root and the Synapse user, and nobody else, read."""
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return Ownership(0, 0, 0o640)
    if _group_is_private(entry):
        return Ownership(0, entry.pw_gid, 0o640)
    return Ownership(entry.pw_uid, 0, 0o440)


# --- writing -----------------------------------------------------------------------


def write_atomic(path: Path, text: str, owner: Ownership) -> None:
    """Replace *path* with *text*: temp file beside it, owner and mode set before
    the content is written, fsync, rename, fsync of the directory."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    # A run killed between writing and renaming left its temporary file (it may hold
    # the password): gone now.
    for leftover in path.parent.glob(f".{path.name}.*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            leftover.unlink()
    # A name Synapse ignores (it reads only *.yaml) while the file is incomplete.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        os.fchown(fd, owner.uid, owner.gid)
        os.fchmod(fd, owner.mode)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        fault("before-rename")
        os.rename(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dirfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)


def fix_ownership(path: Path, owner: Ownership) -> bool:
    """Give an existing file *owner*; True if something changed."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return False
    if (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (owner.uid, owner.gid, owner.mode):
        return False
    # Tighten first, so that the file is never readable by the wrong group.
    os.chmod(path, 0o600)
    os.chown(path, owner.uid, owner.gid)
    os.chmod(path, owner.mode)
    return True


@dataclasses.dataclass(frozen=True)
class UcfState:
    """What ucf's records say about a file (``ucfq``; its files are ucf's own)."""

    registered: bool  # ucfr names this package as the file's
    unedited: bool  # the file exists with the checksum ucf recorded when it wrote it


def _ucfq(path: Path, state_dir: Path | None) -> list[str]:
    where = ["--state-dir", str(state_dir)] if state_dir else []
    return ["ucfq", *where, "--with-colons", str(path)]


def _ucf_answer(returncode: int, output: str) -> UcfState:
    """ucfq's ``FILE:PACKAGE:EXISTS:CHANGED``, read."""
    fields = output.strip().rsplit(":", 3)
    if returncode or len(fields) != 4:
        return UcfState(registered=False, unedited=False)
    _, package, exists, changed = fields
    return UcfState(registered=package == PACKAGE, unedited=(exists, changed) == ("Yes", "No"))


def ucf_state(path: Path = SNIPPET, state_dir: Path | None = None) -> UcfState:
    """ucfq's answer for *path*.  *state_dir*: ucf's (tests only)."""
    try:
        proc = subprocess.run(
            _ucfq(path, state_dir),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
        )
    except FileNotFoundError:
        return UcfState(registered=False, unedited=False)
    return _ucf_answer(proc.returncode, proc.stdout)


def _identity(path: Path) -> tuple[int, ...] | None:
    """What changes whenever the file's content may have: inode (our writes and ucf's
    rename a new file in), size and change time."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_ctime_ns, st.st_mtime_ns)


class UcfQuery:
    """ucf_state(*path*), started now in the background and read later (issue 11: ucfq is
    a Perl program, and an unchanged run would otherwise wait for it).  Its answer counts
    only for the file it looked at: if the file was replaced or written since the query
    started, :meth:`state` says "not unedited", which sends the run down the full path
    (never the other way round).  A file absent when it starts is not asked about (an
    unchanged run needs the file).  Use it as a context manager: a query nobody read is
    stopped and reaped."""

    def __init__(self, path: Path = SNIPPET, state_dir: Path | None = None) -> None:
        self.path = path
        self.before = _identity(path)
        self.proc: subprocess.Popen[str] | None = None
        if self.before is None:
            return
        try:
            self.proc = subprocess.Popen(
                _ucfq(path, state_dir),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
        except FileNotFoundError:
            self.proc = None

    def state(self) -> UcfState:
        if self.proc is None:
            return UcfState(registered=False, unedited=False)
        output, _ = self.proc.communicate()
        found = _ucf_answer(self.proc.returncode, output)
        if _identity(self.path) != self.before:
            return UcfState(registered=found.registered, unedited=False)
        return found

    def __enter__(self) -> UcfQuery:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def _is(path: Path, text: str, owner: Ownership) -> bool:
    """True when *path* holds *text* with *owner*'s uid, gid and mode."""
    try:
        st = path.stat()
        if (st.st_uid, st.st_gid, st.st_mode & 0o7777) != (owner.uid, owner.gid, owner.mode):
            return False
        return path.read_bytes() == text.encode("utf-8")
    except (OSError, UnicodeDecodeError):
        return False


def installed(
    text: str, settings: Settings, path: Path = SNIPPET, ucf: UcfState | None = None
) -> bool:
    """True when writing *text* and *settings*' password file would change nothing: the
    snippet holds *text* with its owner and mode, ucf recorded exactly that file and
    knows it as ours (so ucf and ucfr would do nothing), and the password file holds
    the password with its owner and mode.  Reads only.  *ucf*: ucf_state(path), when
    the caller asked already."""
    if not _is(path, text, ownership()):
        return False
    ucf = ucf or ucf_state(path)
    if not (ucf.unedited and ucf.registered):
        return False
    return _is(PASSFILE, passfile_text(settings), passfile_ownership())


# --- the installed file: edits, ucf, kept values ---------------------------------


def kept(settings: Settings, path: Path = SNIPPET) -> Settings | None:
    """The settings of the file on disk when they are not *settings* (an admin kept
    an edited snippet), None when they are, or when the file is not usable."""
    try:
        found = read(path)
    except SetupError:
        return None
    if found is None or same_values(found, settings):
        return None
    answers = {key: None if found[key] is None else str(found[key]) for key in MANAGED}
    try:
        return Settings.from_answers(**answers)
    except SetupError as err:
        say(messages.SNIPPET_IGNORED.format(reason=err.message))
        return None


def conflict(text: str, settings: Settings, path: Path = SNIPPET) -> list[str] | None:
    """The managed fields an admin's edited snippet has otherwise than *text*; None
    when the file can simply be written (absent, ours, equal, or equal values)."""
    try:
        before = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError):
        return ["the whole file"]
    if before == text:
        return None
    if ucf_state(path).unedited:
        return None  # not edited since ucf installed it
    try:
        found = parse(before)
    except SetupError:
        return ["the whole file"]
    return differences(found, settings) or None


def install(
    conv: Conversation | None,
    text: str,
    settings: Settings,
    owner: Ownership,
    path: Path = SNIPPET,
) -> bool:
    """Put the password file, then *text* through ucf, in place; True if the snippet
    changed."""
    write_passfile(settings)
    try:
        before = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        before = None
    except (OSError, UnicodeDecodeError):
        before = ""
    unedited = before is None or ucf_state(path).unedited
    if before is not None and before != text and not unedited:
        with contextlib.suppress(SetupError):
            found = parse(before)
            if same_values(found, settings):
                # Edited by hand, but with the values we would write: leave it.
                fix_ownership(path, owner)
                ucfr_register(path)
                say(messages.SNIPPET_UNCHANGED.format(path=path))
                if found.get("password") is not None:
                    say(messages.SNIPPET_INLINE_PASSWORD.format(path=path, passfile=PASSFILE))
                return False
    if before != text and unedited:
        write_atomic(path, text, owner)
    tmpdir = tempfile.mkdtemp(prefix="matrix-synapse-setup.")
    try:
        new = Path(tmpdir) / path.name
        write_atomic(new, text, owner)
        # ucf records the file's checksum (to detect later edits); when the admin
        # edited it, ucf asks what to do (non-interactive: keeps the admin's file).
        ucf(conv, ["--debconf-ok", str(new), str(path)])
    finally:
        for leftover in Path(tmpdir).iterdir():
            leftover.unlink()
        os.rmdir(tmpdir)
    ucfr_register(path)
    fix_ownership(path, owner)
    for suffix in UCF_BACKUP_SUFFIXES:
        fix_ownership(path.with_name(path.name + suffix), owner)
    after = path.read_text(encoding="utf-8")
    if after != text:
        with contextlib.suppress(SetupError):
            fields = differences(parse(after), settings)
            if fields:
                say(messages.SNIPPET_KEPT.format(path=path, fields=", ".join(fields)))
    if after == before:
        say(messages.SNIPPET_UNCHANGED.format(path=path))
        return False
    say(messages.WROTE_SNIPPET.format(path=path, owner=owner.describe()))
    return True


def ucf(conv: Conversation | None, args: list[str]) -> None:
    """Run ucf on our debconf connection (it may ask about a file edited by hand)."""
    env = dict(os.environ)
    kwargs: dict[str, Any] = {"stdout": sys.stderr, "check": False}
    if conv is not None and os.environ.get("DEBCONF_REDIR"):
        kwargs["pass_fds"] = (3,)
    else:
        env.pop("DEBIAN_HAS_FRONTEND", None)  # no confmodule pipe to share: no prompts
        kwargs["stdin"] = subprocess.DEVNULL
    if conv is None:
        # The admin command (migrate) writes a snippet that does not exist yet: ucf has
        # nothing to ask, and its debconf frontend need not look for a terminal.
        env["DEBIAN_FRONTEND"] = "noninteractive"
    wrappers = ucf_wrapper_dir(Path(args[-1]), UCF_HASHFILE)  # test-only: see faults.py
    if wrappers:
        env["PATH"] = wrappers + ":" + env.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
    proc = subprocess.run(["ucf", *args], env=env, **kwargs)
    if conv is not None:
        conv.capabilities()  # ucf sends its own CAPB
    if proc.returncode:
        raise SetupError(f"ucf {' '.join(args[-2:])} failed (exit {proc.returncode}).")


def ucfr_register(path: Path) -> None:
    proc = subprocess.run(["ucfr", PACKAGE, str(path)], **child_fds())
    if proc.returncode:
        raise SetupError(f"ucfr {PACKAGE} {path} failed (exit {proc.returncode}).")


# --- the systemd drop-in of versions before 0.5.0 ------------------------------------


def remove_runtime_dropin(path: Path = RUNTIME_DROPIN) -> bool | None:
    """Remove the drop-in older versions wrote into /etc (ours is shipped under
    /usr/lib now).  True: removed; None: there was none; False: kept, because the
    admin edited it (theirs now, in their directory)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError):
        return False
    if text != RUNTIME_DROPIN_TEXT:
        return False
    path.unlink()
    with contextlib.suppress(OSError):
        path.parent.rmdir()
    return True
