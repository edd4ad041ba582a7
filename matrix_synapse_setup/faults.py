"""Test-only crash injection: prove that every step survives a SIGKILL.

When the environment variable ``MSS_TEST_CRASH_AT`` names a point, the process
kills itself with SIGKILL there, as a power cut or ``kill -9`` would; the next
``dpkg --configure -a`` must then end consistent (README, "Development").  No
other value has any effect, and nothing sets the variable but the tests.

Points (in the order a postinst passes them):

- ``after-role-created``, ``after-password-changed``, ``after-database-created``:
  in the superuser child, right after the statement committed; the child kills
  the helper that started it, then itself;
- ``before-rename``: the first atomic file write (the password file, or the
  snippet) has its temporary file complete and synced, not yet renamed;
- ``during-ucf``: ucf has copied the new snippet over the old one and has not
  recorded its checksum yet;
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
POINTS = (
    "after-role-created",
    "after-password-changed",
    "after-database-created",
    "before-rename",
    "during-ucf",
    "after-first-phase",
    "after-stop",
    "after-final-port",
)


def armed(name: str) -> bool:
    return os.environ.get(ENV) == name


def fault(name: str, *, parent_too: bool = False) -> None:
    """Die here with SIGKILL if the test asked for *name* (or pause, see above)."""
    if os.environ.get(PAUSE_ENV) == name:
        time.sleep(float(os.environ.get(PAUSE_SECONDS_ENV) or 5))
    if not armed(name):
        return
    if parent_too:
        os.kill(os.getppid(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def ucf_wrapper_dir(dest: Path) -> str | None:
    """For ``during-ucf``: a directory to put first in ucf's PATH, whose ``cp`` copies,
    then kills ucf and the helper that runs it once *dest* was written."""
    if not armed("during-ucf"):
        return None
    directory = tempfile.mkdtemp(prefix="mss-fault-")
    script = Path(directory) / "cp"
    script.write_text(
        "#!/bin/sh\n"
        '/bin/cp "$@" || exit\n'
        'for last in "$@"; do :; done\n'
        f'if [ "$last" = "{dest}" ]; then kill -9 {os.getpid()} "$PPID" "$$"; fi\n'
    )
    script.chmod(0o755)
    return directory
