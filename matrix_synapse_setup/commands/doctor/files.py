"""doctor's checks of the files Synapse reads for its database: our snippet and its
password file, each readable by Synapse's user and by nobody else who should not; and
who may read a file, by mode bits."""

from __future__ import annotations

import grp
import os
import pwd
import stat
from pathlib import Path

from matrix_synapse_setup.commands.doctor.facts import Facts
from matrix_synapse_setup.commands.doctor.report import FAIL, OK, WARN, Check, skipped
from matrix_synapse_setup.core import messages
from matrix_synapse_setup.core.errors import SetupError
from matrix_synapse_setup.files import atomic, snippet

# --- who may read a file ------------------------------------------------------------


def _groups(entry: pwd.struct_passwd) -> set[int]:
    return {entry.pw_gid} | {g.gr_gid for g in grp.getgrall() if entry.pw_name in g.gr_mem}


def _allowed(st: os.stat_result, entry: pwd.struct_passwd, groups: set[int], bits: int) -> bool:
    """Whether a user (uid, groups) has *bits* (an "other" triplet: 4 read, 1 search)."""
    if entry.pw_uid == 0:
        return True
    if st.st_uid == entry.pw_uid:
        return st.st_mode & (bits << 6) == bits << 6
    if st.st_gid in groups:
        return st.st_mode & (bits << 3) == bits << 3
    return st.st_mode & bits == bits


def unreadable_by(path: Path, user: str) -> str | None:
    """None when *user* can read *path* (every directory above searchable, the file
    readable, by mode bits); else the file or directory that stops it."""
    entry = pwd.getpwnam(user)
    groups = _groups(entry)
    path = Path(os.path.abspath(path))
    for directory in reversed(path.parents):
        if not _allowed(directory.stat(), entry, groups, 1):
            return str(directory)
    if not _allowed(path.stat(), entry, groups, 4):
        return str(path)
    return None


def describe_owner(st: os.stat_result) -> str:
    return atomic.Ownership(st.st_uid, st.st_gid, st.st_mode & 0o7777).describe()


def inline_password(path: Path) -> bool:
    """Whether the snippet's YAML itself holds a password."""
    try:
        text = path.read_text(encoding="utf-8")
        return snippet.parse(text, where=str(path))["password"] is not None
    except (OSError, UnicodeDecodeError, SetupError):
        return False


# --- the snippet and its password file ------------------------------------------------


def check_snippet(facts: Facts) -> Check:
    path, user = facts.paths.snippet, facts.paths.synapse_user
    name = "snippet"
    try:
        st = path.stat()
    except FileNotFoundError:
        return Check(
            name,
            FAIL,
            messages.DOCTOR_SNIPPET_MISSING.format(path=path),
            messages.DOCTOR_FIX_RECONFIGURE,
        )
    owner = atomic.ownership(user)
    names, mode = owner.describe().split()
    want = f"chown {names} {path} && chmod {mode} {path}"
    try:
        pwd.getpwnam(user)
    except KeyError:
        blocked = None
        no_user = True
    else:
        blocked = unreadable_by(path, user)
        no_user = False
    if blocked is not None:
        where = describe_owner(Path(blocked).stat())
        return Check(
            name,
            FAIL,
            messages.DOCTOR_SNIPPET_UNREADABLE.format(
                path=path, user=user, blocked=blocked, owner=where
            ),
            messages.DOCTOR_FIX_OWNERSHIP.format(command=want),
        )
    facts.found()
    if facts.settings() is None:
        fix = messages.DOCTOR_FIX_RECONFIGURE
        if not os.access(path, os.R_OK):
            fix = messages.DOCTOR_FIX_RUN_AS_ROOT
        return Check(name, FAIL, facts.found_error or "?", fix)
    if st.st_mode & stat.S_IROTH:
        inline = inline_password(path)
        return Check(
            name,
            FAIL if inline else WARN,
            messages.DOCTOR_SNIPPET_WORLD_READABLE.format(
                path=path,
                owner=describe_owner(st),
                what="the password" if inline else "the role and the server",
            ),
            messages.DOCTOR_FIX_OWNERSHIP.format(command=want),
        )
    if no_user:
        return Check(
            name,
            WARN,
            messages.DOCTOR_NO_SYNAPSE_USER.format(path=path, user=user),
            messages.DOCTOR_FIX_INSTALL_SYNAPSE,
        )
    return Check(
        name,
        OK,
        messages.DOCTOR_SNIPPET_OK.format(path=path, user=user, owner=describe_owner(st)),
    )


def check_passfile(facts: Facts) -> Check:
    name, user, ours = "passfile", facts.paths.synapse_user, facts.paths.snippet
    found = facts.found()
    if found is None:
        return skipped(name, "the snippet is missing or does not parse (see 'snippet')")
    raw = found.get("passfile")
    if not raw:
        if inline_password(ours):
            return Check(
                name,
                WARN,
                messages.DOCTOR_INLINE_PASSWORD.format(path=ours),
                messages.DOCTOR_FIX_RECONFIGURE,
            )
        return Check(
            name,
            FAIL,
            messages.DOCTOR_NO_PASSWORD.format(path=ours),
            messages.DOCTOR_FIX_RECONFIGURE,
        )
    path = Path(str(raw))
    try:
        st = path.stat()
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Check(
            name,
            FAIL,
            messages.DOCTOR_PASSFILE_MISSING.format(path=path, snippet=ours),
            messages.DOCTOR_FIX_RECONFIGURE,
        )
    except (OSError, UnicodeDecodeError) as err:
        reason = getattr(err, "strerror", None) or type(err).__name__
        return Check(
            name,
            FAIL,
            messages.DOCTOR_PASSFILE_UNREADABLE.format(path=path, reason=reason),
            messages.DOCTOR_FIX_RUN_AS_ROOT,
        )
    del text  # read only to prove it can be; the password is never shown
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        entry = None
    wanted = atomic.passfile_ownership(user)
    names = wanted.describe().split()[0]
    fix = messages.DOCTOR_FIX_OWNERSHIP.format(command=f"chown {names} {path} && chmod 0600 {path}")
    problems = []
    if st.st_mode & 0o077:
        problems.append(messages.DOCTOR_PASSFILE_MODE.format(mode=st.st_mode & 0o7777))
    if entry is not None and st.st_uid != entry.pw_uid:
        problems.append(messages.DOCTOR_PASSFILE_OWNER.format(user=user))
    elif entry is not None and unreadable_by(path, user) is not None:
        problems.append(messages.DOCTOR_PASSFILE_NOT_READABLE.format(user=user))
    if problems:
        return Check(
            name,
            FAIL,
            messages.DOCTOR_PASSFILE_BAD.format(
                path=path, owner=describe_owner(st), problems="; ".join(problems)
            ),
            fix,
        )
    if snippet.read_passfile(path, str(found.get("user") or "")) is None:
        return Check(
            name,
            FAIL,
            messages.DOCTOR_PASSFILE_NO_ENTRY.format(path=path, user=found.get("user")),
            messages.DOCTOR_FIX_RECONFIGURE,
        )
    return Check(name, OK, messages.DOCTOR_PASSFILE_OK.format(path=path, owner=describe_owner(st)))
