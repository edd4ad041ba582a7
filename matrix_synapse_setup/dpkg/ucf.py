"""ucf, for the files we write into Synapse's configuration directory.

The snippet (and the registration snippet) go through ucf as conffiles would: ucf
records each file's checksum when it writes it, so that an administrator's edit is
detected and never silently lost (ucf asks, or keeps the admin's file), and ucfr
records the file as this package's (the postrm purges it).  ``ucfq`` says what ucf's
records hold.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

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
from matrix_synapse_setup.files.atomic import Ownership, current_text, fix_ownership, write_atomic
from matrix_synapse_setup.files.snippet import (
    MANAGED,
    differences,
    effective,
    parse,
    same_values,
    write_passfile,
)

if TYPE_CHECKING:
    from matrix_synapse_setup.dpkg.debconf import Conversation

UCF_HASHFILE = Path("/var/lib/ucf/hashfile")  # only for the test-only fault point


class UcfState(NamedTuple):
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


class Query:
    """ucfq for *path*, started now and read by :meth:`state`: ucfq is a Perl program
    whose start-up would otherwise be a large share of an unchanged run, so the run
    does its other reads meanwhile.  Close it (or read it) before leaving."""

    def __init__(self, path: Path = SNIPPET, state_dir: Path | None = None) -> None:
        try:
            self.proc: subprocess.Popen[str] | None = subprocess.Popen(
                _ucfq(path, state_dir),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
        except FileNotFoundError:
            self.proc = None
        self.answer: UcfState | None = None

    def state(self) -> UcfState:
        if self.answer is None:
            if self.proc is None:
                self.answer = UcfState(registered=False, unedited=False)
            else:
                output, _ = self.proc.communicate()
                self.answer = _ucf_answer(self.proc.returncode, output)
        return self.answer

    def close(self) -> None:
        """Stop and reap a query nobody read."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


def ucf_state(path: Path = SNIPPET, state_dir: Path | None = None) -> UcfState:
    """ucfq's answer for *path*.  *state_dir*: ucf's (tests only)."""
    return Query(path, state_dir).state()


class Installed(NamedTuple):
    """What :func:`install` did."""

    changed: bool  # the snippet's text changed
    kept: Settings | None = None  # ucf kept the admin's edited file: its settings


def _kept_settings(text: str, settings: Settings) -> Settings | None:
    """The settings of an admin's edited file that ucf kept, when they are not
    *settings*; None when they are, or when the file is not usable."""
    try:
        found = effective(parse(text))
    except SetupError:
        return None
    fields = differences(found, settings)
    if not fields:
        return None
    say(messages.SNIPPET_KEPT.format(path=SNIPPET, fields=", ".join(fields)))
    answers = {key: None if found[key] is None else str(found[key]) for key in MANAGED}
    try:
        return Settings.from_answers(**answers)
    except SetupError as err:
        say(messages.SNIPPET_IGNORED.format(reason=err.message))
        return None


def install(
    conv: Conversation | None,
    text: str,
    settings: Settings,
    owner: Ownership,
    path: Path = SNIPPET,
    *,
    before: str | None = None,
    unedited: bool | None = None,
) -> Installed:
    """Put the password file, then *text* through ucf, in place.  *before* and
    *unedited*: the file's text and ucf's record of it, when the caller read them
    already (under the same lock); else they are read here."""
    write_passfile(settings)
    if unedited is None:
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
                return Installed(changed=False)
    if before != text and unedited:
        write_atomic(path, text, owner)
    through_ucf(conv, path, text, owner)
    # Our text is in place unless ucf had an edit to ask about: only then is the file
    # read again, to learn what the admin chose.
    after = text if unedited else current_text(path)
    kept = _kept_settings(after, settings) if after is not None and after != text else None
    if after == before:
        say(messages.SNIPPET_UNCHANGED.format(path=path))
        return Installed(changed=False, kept=kept)
    say(messages.WROTE_SNIPPET.format(path=path, owner=owner.describe()))
    return Installed(changed=True, kept=kept)


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


def through_ucf(conv: Conversation | None, path: Path, text: str, owner: Ownership) -> None:
    """Hand *text* to ucf for *path* (from a private temporary copy with *owner*), and
    register *path* as ours; *owner* for the file and ucf's copies beside it."""
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


def install_file(conv: Conversation | None, path: Path, text: str, owner: Ownership) -> bool:
    """Put *text* in *path* through ucf (it asks about, or keeps, an admin's edit), with
    *owner*; True when the file changed.  For the files without a password: the
    database snippet has :func:`install`."""
    before = current_text(path)
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    through_ucf(conv, path, text, owner)
    return current_text(path) != before


def remove_file(path: Path) -> bool:
    """Remove *path* and ucf's record of it (and its backups); True when it existed."""
    existed = path.exists()
    for suffix in ("", *UCF_BACKUP_SUFFIXES):
        with contextlib.suppress(FileNotFoundError):
            path.with_name(path.name + suffix).unlink()
    if ucf_state(path).registered:
        subprocess.run(["ucf", "--purge", str(path)], **child_fds())
        subprocess.run(["ucfr", "--purge", PACKAGE, str(path)], **child_fds())
    return existed
