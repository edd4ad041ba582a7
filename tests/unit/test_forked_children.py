"""provision.Superuser's child outside a maintainer script: with no debconf pipe on fd 3,
the child's own pipe may be fd 3, and the child must not take it for debconf's (it puts
/dev/null on debconf's fds)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]

SUPERUSER_CHECK = """
import os, pwd
from matrix_synapse_setup.postgres.provision import Superuser

assert not os.path.exists("/proc/self/fd/3"), "fd 3 must be free for this check"
child = Superuser.start(pwd.getpwuid(os.geteuid()), handler=lambda request: {"got": request})
print(child.ask({"x": 42})["got"]["x"], end="")
"""


def test_a_superuser_child_answers_when_fd_3_was_free():
    # A new interpreter with fds 0 to 2 only, as `matrix-synapse-setup restore` run from
    # a shell: the child's request pipe is fd 3 (the handler echoes; the user is this
    # one).  Without a preloaded library that opens a file of its own: the package's
    # reproducibility check builds under faketime, whose libfaketime holds fd 3.
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD" and "FAKETIME" not in k}
    out = subprocess.run(
        [sys.executable, "-c", SUPERUSER_CHECK],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out == "42"
