"""Where our lines go: stderr, always.  In a maintainer script fd 1 may be debconf's pipe,
so neither we nor the programs we start ever write there."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from matrix_synapse_setup.core.paths import PACKAGE


def say(text: str) -> None:
    """One line for the administrator, prefixed with the package's name."""
    print(f"{PACKAGE}: {text}", file=sys.stderr, flush=True)


def note(text: str) -> None:
    """One line on stderr as it is: the admin command's progress, beside its results on
    stdout."""
    print(text, file=sys.stderr, flush=True)


def child_fds() -> dict[str, Any]:
    """subprocess arguments for a child that must not touch the debconf pipe."""
    return {"stdin": subprocess.DEVNULL, "stdout": sys.stderr, "check": False}
