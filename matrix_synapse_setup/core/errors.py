"""The one error type that reaches a user, and the one place that catches it.

Every failure we can explain is raised as :class:`SetupError` with a message
that says what is wrong and how to fix it (the texts live in
:mod:`matrix_synapse_setup.core.messages`).  :func:`run` turns it into one or two
lines on stderr and a non-zero exit; a traceback is shown only when
``DPKG_MAINTSCRIPT_DEBUG`` is set, for errors we did not foresee too.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable

from matrix_synapse_setup.core.paths import PACKAGE

EXIT_FAILURE = 1


class SetupError(Exception):
    """A failure with a message written for the administrator."""

    # What kind of failure, where the code classified one (diagnose's kinds):
    # tests compare it across server languages.
    kind: str | None = None

    def __init__(self, message: str, *, exit_code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message


def debugging() -> bool:
    """True when dpkg was asked for debugging (``dpkg --debug``).  dpkg exports
    ``DPKG_MAINTSCRIPT_DEBUG=0`` to every maintainer script: that is no request."""
    return os.environ.get("DPKG_MAINTSCRIPT_DEBUG", "") not in ("", "0")


def run(main: Callable[[], int | None], *, prog: str = PACKAGE) -> int:
    """Call *main* and map every failure to a short message and an exit code."""
    try:
        return main() or 0
    except SetupError as err:
        if debugging():
            traceback.print_exc(file=sys.stderr)
        print(f"{prog}: error: {err.message}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - the last line of defence
        if debugging():
            traceback.print_exc(file=sys.stderr)
        print(
            f"{prog}: internal error: {type(err).__name__}: {err}\n"
            f"Rerun with DPKG_MAINTSCRIPT_DEBUG=1 for details and report it as a bug.",
            file=sys.stderr,
        )
        return EXIT_FAILURE
