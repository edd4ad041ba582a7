"""One run at a time: the postinst, dpkg-reconfigure and the admin command take one lock.

Two runs at once could each create half of the state (one writes the password
file for its password, the other sets the role to another).  The second run waits
for the first, bounded, and says so; the lock goes away with its holder's process
(flock), so a run killed with SIGKILL never leaves a stale lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from matrix_synapse_setup.core import messages
from matrix_synapse_setup.core.errors import SetupError

LOCK = Path("/run/lock/matrix-synapse-setup.lock")
WAIT_ENV = "MATRIX_SYNAPSE_SETUP_LOCK_WAIT"
WAIT = 600.0  # seconds


@contextlib.contextmanager
def exclusive(say: Callable[[str], None], path: Path = LOCK) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            wait = float(os.environ.get(WAIT_ENV) or WAIT)
            say(messages.LOCK_WAITING.format(path=path, seconds=round(wait)))
            deadline = time.monotonic() + wait
            while True:
                time.sleep(0.2)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise SetupError(messages.LOCK_TIMEOUT.format(path=path)) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)
