"""A tar archive of files that must come back exactly (a server's signing key and its
configuration), and putting them back without losing the files that are there now.

The archive holds each file under its absolute path without the leading "/", with its
owner, group, mode and time (a POSIX tar, Python's tarfile; symbolic links are followed,
so that a linked file is kept, not the link).  It is written as the dumps are: a 0600
file under a temporary name, synced; the caller renames it.

Putting a member back never loses the file it replaces: the current file is first linked
to ``PATH.before-restore-TIME`` (the same inode: its content, owner and mode), then the
member, written beside it under a temporary name, is renamed over it.  Every member is
written out before the first rename, so that a failure while writing changes no file that
exists (only a missing directory may have been made).
"""

from __future__ import annotations

import contextlib
import dataclasses
import grp
import hashlib
import os
import posixpath
import pwd
import stat
import tarfile
import tempfile
from collections.abc import Iterable
from pathlib import Path

from matrix_synapse_setup.core import messages
from matrix_synapse_setup.core.errors import SetupError
from matrix_synapse_setup.files import atomic

KEPT_INFIX = ".before-restore-"


def member_name(path: Path) -> str:
    """The name of *path* (absolute) in an archive."""
    return str(path).lstrip("/")


def _add(tar: tarfile.TarFile, path: Path, left_out: list[Path], seen: set) -> None:
    try:
        info = tar.gettarinfo(str(path), arcname=member_name(path))
    except FileNotFoundError:
        left_out.append(path)  # missing, or a link to nothing
        return
    except OSError as err:
        raise SetupError(
            messages.ARCHIVE_UNREADABLE.format(path=path, reason=err.strerror)
        ) from None
    if info is None or not (info.isreg() or info.isdir()):
        left_out.append(path)  # a socket, a pipe or a device: nothing to keep
        return
    if info.isdir():
        st = path.stat()
        if (st.st_dev, st.st_ino) in seen:
            return  # a link back to a directory already archived
        seen.add((st.st_dev, st.st_ino))
        tar.addfile(info)
        for name in sorted(os.listdir(path)):
            _add(tar, path / name, left_out, seen)
        return
    try:
        with path.open("rb") as source:
            tar.addfile(info, source)
    except OSError as err:
        raise SetupError(
            messages.ARCHIVE_UNREADABLE.format(path=path, reason=err.strerror)
        ) from None


def write(path: Path, paths: Iterable[Path]) -> list[Path]:
    """The archive of *paths* (files, or directories with everything in them) written to
    *path*, a new file (0600, of the running user), synced; the caller renames it into
    place.  A failure removes it.  The paths that were left out (missing, or neither file
    nor directory)."""
    left_out: list[Path] = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as out:
            with tarfile.open(
                fileobj=out, mode="w", format=tarfile.PAX_FORMAT, dereference=True
            ) as tar:
                seen: set = set()
                for each in paths:
                    _add(tar, each, left_out, seen)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        raise
    return left_out


# --- reading an archive back ------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Member:
    """A file or directory of an archive, and where it goes."""

    path: Path
    is_dir: bool
    uid: int
    gid: int
    mode: int
    data: bytes = dataclasses.field(default=b"", repr=False)


def _owner(info: tarfile.TarInfo) -> tuple[int, int]:
    """The member's owner and group on this system: by name, as tar does, else by number."""
    uid, gid = info.uid, info.gid
    with contextlib.suppress(KeyError):
        uid = pwd.getpwnam(info.uname).pw_uid if info.uname else uid
    with contextlib.suppress(KeyError):
        gid = grp.getgrnam(info.gname).gr_gid if info.gname else gid
    return uid, gid


def read(archive: Path) -> list[Member]:
    """The members of *archive*, checked: only files and directories, each under a plain
    absolute path (no "..").  Anything else is refused: it is not an archive of ours."""
    members = []
    try:
        with tarfile.open(archive, mode="r:") as tar:
            for info in tar:
                name = info.name
                normal = posixpath.normpath(name)
                bad_name = (
                    name.startswith("/") or normal != name.rstrip("/") or normal.startswith("..")
                )
                if bad_name or not (info.isreg() or info.isdir()):
                    raise SetupError(messages.ARCHIVE_NOT_OURS.format(path=archive, member=name))
                data = b""
                if info.isreg():
                    source = tar.extractfile(info)
                    data = source.read() if source is not None else b""
                uid, gid = _owner(info)
                members.append(
                    Member(Path("/" + normal), info.isdir(), uid, gid, info.mode & 0o7777, data)
                )
    except (OSError, tarfile.TarError) as err:
        reason = getattr(err, "strerror", None) or str(err)
        raise SetupError(messages.ARCHIVE_BROKEN.format(path=archive, reason=reason)) from None
    return members


# --- putting members back ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Change:
    """What putting one member back does: "create", "replace" (the current file kept as
    *kept*), "unchanged", or "mkdir"."""

    member: Member
    action: str
    kept: Path | None = None


def _same(member: Member, path: Path) -> bool:
    try:
        st = path.stat(follow_symlinks=False)
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(st.st_mode):
        return False
    if (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) != (member.uid, member.gid, member.mode):
        return False
    with path.open("rb") as current:
        return hashlib.sha256(current.read()).digest() == hashlib.sha256(member.data).digest()


def changes(members: Iterable[Member], when: str) -> list[Change]:
    """What putting *members* back would do, with *when* (a time stamp) in the names of the
    files kept.  Reads only."""
    found = []
    for member in members:
        target = member.path
        if member.is_dir:
            if not target.is_dir():
                found.append(Change(member, "mkdir"))
            continue
        if target.is_dir() and not target.is_symlink():
            raise SetupError(messages.ARCHIVE_DIRECTORY_IN_THE_WAY.format(path=target))
        if not os.path.lexists(target):
            found.append(Change(member, "create"))
        elif _same(member, target):
            found.append(Change(member, "unchanged"))
        else:
            kept = target.with_name(f"{target.name}{KEPT_INFIX}{when}")
            found.append(Change(member, "replace", kept))
    return found


def put_back(planned: Iterable[Change]) -> list[Change]:
    """Carry out *planned* (see :func:`changes`); the changes made.  Every file is written
    under a temporary name first; then each current file is linked to its kept name and
    the new one renamed over it.  A name to keep that exists already is refused before
    anything is renamed."""
    work = [change for change in planned if change.action != "unchanged"]
    for change in work:
        if change.kept is not None and os.path.lexists(change.kept):
            raise SetupError(messages.ARCHIVE_KEPT_EXISTS.format(path=change.kept))
    for change in work:
        if change.action == "mkdir":
            member = change.member
            member.path.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chown(member.path, member.uid, member.gid)
            os.chmod(member.path, member.mode)
    temps: list[tuple[Change, str]] = []
    try:
        for change in work:
            if change.action == "mkdir":
                continue
            member = change.member
            member.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(
                prefix=f".{member.path.name}.", suffix=".tmp", dir=member.path.parent
            )
            temps.append((change, tmp))
            os.fchmod(fd, 0o600)
            os.fchown(fd, member.uid, member.gid)
            os.fchmod(fd, member.mode)
            with os.fdopen(fd, "wb") as out:
                out.write(member.data)
                out.flush()
                os.fsync(out.fileno())
        for change, tmp in temps:
            if change.kept is not None:
                os.link(change.member.path, change.kept, follow_symlinks=False)
            os.replace(tmp, change.member.path)
    except BaseException:
        for _, tmp in temps:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        raise
    for directory in {change.member.path.parent for change in work}:
        atomic.sync_directory(directory)
    return work
