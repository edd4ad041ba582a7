"""Files written whole or not at all, with the owner and mode they must have from the start.

Who may read the files that hold Synapse's connection (the snippet, and the password file
it names): root, and the Synapse service user ``matrix-synapse``.

- The user's primary group is private to it (upstream's ``matrix-synapse-py3``
  creates the group ``matrix-synapse``): ``root:<that group>``, mode 0640.
- The primary group is shared (Debian's ``matrix-synapse`` package puts the
  user in ``nogroup``, which ``nobody`` and other daemons share): giving that
  group read access would hand the password to every process running as
  ``nogroup``.  Then the file is owned by ``matrix-synapse``, group root,
  mode 0440: Synapse reads it, nobody else but root.
- No such user (Synapse not installed yet): ``root:root`` 0640; the dpkg file
  trigger on Synapse's unit file fixes it when Synapse arrives.

The password file is 0600 and Synapse's user's: libpq ignores a password file that its
group or others can read.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

from matrix_synapse_setup.core.faults import fault
from matrix_synapse_setup.core.paths import SYNAPSE_USER


class Ownership(NamedTuple):
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


def group_ownership(group: str) -> Ownership:
    """0640 root:*group*, for a server that runs as that group (root's alone until the
    group exists)."""
    try:
        return Ownership(0, grp.getgrnam(group).gr_gid, 0o640)
    except KeyError:
        return Ownership(0, 0, 0o640)


def passfile_ownership(user: str = SYNAPSE_USER) -> Ownership:
    """The password file's: Synapse's user's, 0600 (root's until that user exists)."""
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return Ownership(0, 0, 0o600)
    return Ownership(entry.pw_uid, 0, 0o600)


def current_text(path: Path) -> str | None:
    """*path*'s text now: None when there is no such file, "" when it cannot be read (so
    that it differs from any text we would write)."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError):
        return ""


def write_atomic(
    path: Path, text: str, owner: Ownership, *, crash_point: str | None = "before-rename"
) -> None:
    """Replace *path* with *text*: temp file beside it, owner and mode set before
    the content is written, fsync, rename, fsync of the directory.  *crash_point*: the
    test-only fault point passed between the sync and the rename (core/faults.py); None
    for a file that is not part of Synapse's connection."""
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
        if crash_point is not None:
            fault(crash_point)
        os.rename(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    sync_directory(path.parent)


def sync_directory(directory: Path) -> None:
    """Make the names renamed into *directory* durable (its entry list, synced)."""
    dirfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)


def owned(path: Path, owner: Ownership) -> bool:
    """True when *path* exists with *owner*'s uid, gid and mode."""
    try:
        st = path.stat()
    except OSError:
        return False
    return (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (owner.uid, owner.gid, owner.mode)


def fix_ownership(path: Path, owner: Ownership) -> bool:
    """Give an existing file *owner*; True if something changed."""
    if not path.exists() or owned(path, owner):
        return False
    # Tighten first, so that the file is never readable by the wrong group.
    os.chmod(path, 0o600)
    os.chown(path, owner.uid, owner.gid)
    os.chmod(path, owner.mode)
    return True


def private_dir(path: Path, uid: int = 0, gid: int = 0) -> None:
    """*path* as a directory only *uid* may enter: created, or made so (0700)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    os.chown(path, uid, gid)
