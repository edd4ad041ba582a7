"""ucf, for the files we write into Synapse's configuration directory.

The snippet (and the registration snippet) go through ucf as conffiles would: ucf
records each file's checksum when it writes it, so that an administrator's edit is
detected and never silently lost (ucf asks, or keeps the admin's file), and ucfr
records the file as this package's (the postrm purges it).  ``ucfq`` says what ucf's
records hold.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from matrix_synapse_setup.core import messages
from matrix_synapse_setup.core.errors import SetupError
from matrix_synapse_setup.core.faults import ucf_wrapper_dir
from matrix_synapse_setup.core.output import child_fds, say
from matrix_synapse_setup.core.paths import (
    PACKAGE,
    PASSFILE,
    SNIPPET,
    SYSTEM_PATH,
    UCF_BACKUP_SUFFIXES,
)
from matrix_synapse_setup.core.settings import Settings
from matrix_synapse_setup.files.atomic import (
    Ownership,
    current_text,
    fix_ownership,
    ownership,
    passfile_ownership,
    write_atomic,
)
from matrix_synapse_setup.files.snippet import (
    MANAGED,
    differences,
    parse,
    passfile_text,
    read,
    same_values,
    write_passfile,
)

if TYPE_CHECKING:
    from matrix_synapse_setup.dpkg.debconf import Conversation

UCF_HASHFILE = Path("/var/lib/ucf/hashfile")  # only for the test-only fault point


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
    """ucf_state(*path*), started now in the background and read later: ucfq is a Perl
    program, and the unchanged path, which every upgrade takes, would otherwise wait for
    it.  Its answer counts only for the file it looked at: if the file was replaced or
    written since the query
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


# --- the installed snippet: edits, ucf, kept values ------------------------------


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
    before = current_text(path)
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
        env["PATH"] = wrappers + ":" + env.get("PATH", SYSTEM_PATH)
    proc = subprocess.run(["ucf", *args], env=env, **kwargs)
    if conv is not None:
        conv.capabilities()  # ucf sends its own CAPB
    if proc.returncode:
        raise SetupError(f"ucf {' '.join(args[-2:])} failed (exit {proc.returncode}).")


def ucfr_register(path: Path) -> None:
    proc = subprocess.run(["ucfr", PACKAGE, str(path)], **child_fds())
    if proc.returncode:
        raise SetupError(f"ucfr {PACKAGE} {path} failed (exit {proc.returncode}).")
