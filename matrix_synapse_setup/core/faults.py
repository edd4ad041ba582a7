"""Test-only crash injection: prove that every step survives a SIGKILL.

When the environment variable ``MSS_TEST_CRASH_AT`` names a point, the process
kills itself with SIGKILL there, as a power cut or ``kill -9`` would; the next
``dpkg --configure -a`` must then end consistent (docs/development.md, "The kinds
of tests").  No other value has any effect, and nothing sets the variable but the tests.

Points (in the order a postinst passes them):

- ``after-role-created``, ``after-password-changed``, ``after-database-created``:
  in the superuser child, right after the statement committed; the child (the
  postgres uid may not signal root's helper) kills itself, and the helper, seeing
  that, kills itself too (:func:`follow_child`);
- ``before-rename``: the first atomic file write (the password file, or the
  snippet) has its temporary file complete and synced, not yet renamed;
- ``during-ucf``: ucf has put the new snippet in place (its own ``cp`` over an
  edited file, or our write before it) and has not recorded its checksum yet (its
  ``mv`` of the new hashfile);
- ``after-first-phase``, ``after-stop``, ``after-final-port``: the SQLite migration.

``MSS_TEST_PAUSE_AT`` names a point where the process sleeps instead
(``MSS_TEST_PAUSE_SECONDS``, default 5): the lock test uses it to hold a run
in the middle while a second one starts.
"""

from __future__ import annotations

import os
import signal
import tempfile
import time
from pathlib import Path

ENV = "MSS_TEST_CRASH_AT"
PAUSE_ENV = "MSS_TEST_PAUSE_AT"
PAUSE_SECONDS_ENV = "MSS_TEST_PAUSE_SECONDS"


def armed(name: str) -> bool:
    return os.environ.get(ENV) == name


CHILD_POINTS = ("after-role-created", "after-password-changed", "after-database-created")


def fault(name: str) -> None:
    """Die here with SIGKILL if the test asked for *name* (or pause, see above)."""
    if os.environ.get(PAUSE_ENV) == name:
        time.sleep(float(os.environ.get(PAUSE_SECONDS_ENV) or 5))
    if armed(name):
        os.kill(os.getpid(), signal.SIGKILL)


def follow_child(returncode: int) -> None:
    """The superuser child died at one of its crash points: die with it."""
    if returncode == -signal.SIGKILL and any(armed(point) for point in CHILD_POINTS):
        os.kill(os.getpid(), signal.SIGKILL)


def ucf_wrapper_dir(dest: Path, hashfile: Path) -> str | None:
    """For ``during-ucf``: a directory to put first in ucf's PATH.  Its ``cp`` copies,
    then kills ucf and the helper that runs it once *dest* was written; its ``mv``
    kills them instead of moving ucf's new *hashfile* in place."""
    if not armed("during-ucf"):
        return None
    directory = tempfile.mkdtemp(prefix="mss-fault-")
    kill = f'kill -9 {os.getpid()} "$PPID" "$$"'
    for name, before, after in (
        ("cp", "", f'[ "$last" = "{dest}" ] && {kill}'),
        ("mv", f'[ "$last" = "{hashfile}" ] && {kill}', ""),
    ):
        script = Path(directory) / name
        script.write_text(
            "#!/bin/sh\n"
            'for last in "$@"; do :; done\n'
            f"{before}\n"
            f'/bin/{name} "$@" || exit\n'
            f"{after}\n"
            "exit 0\n"
        )
        script.chmod(0o755)
    return directory
