"""Changes that only an upgrade from an older version makes, oldest first.

Each is gated the same way: it runs on the first configure of a version at or after
``since`` over one before it (or on a first install, where the old files may be left
from a removed, not purged, older version), never on dpkg-reconfigure.  Each function
takes nothing and returns what to say, if anything.

(debian/config keeps one of its own: it reads a snippet of a version before 0.3.0,
which held the password inline, because it runs before our Python is unpacked.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from matrix_synapse_setup.core import messages
from matrix_synapse_setup.dpkg import packages
from matrix_synapse_setup.files import snippet
from matrix_synapse_setup.synapse import service


def retire_runtime_dropin() -> str | None:
    """Versions before 0.5.0 wrote Synapse's systemd drop-in into /etc at run time; we
    ship it under /usr/lib now.  Theirs goes, unless the admin edited it; systemd then
    sees ours."""
    removed = snippet.remove_runtime_dropin()
    service.daemon_reload()
    if removed is False:
        return messages.RUNTIME_DROPIN_EDITED.format(path=snippet.RUNTIME_DROPIN)
    return None


class Upgrade(NamedTuple):
    since: str  # the first version that no longer needs it
    name: str
    what: str  # for the plan
    run: Callable[[], str | None]


UPGRADES = (
    Upgrade(
        "0.5.0~",
        "runtime-dropin",
        "let systemd read the drop-in we ship for Synapse's unit (and remove the one that "
        "versions before 0.5.0 wrote into /etc, if any)",
        retire_runtime_dropin,
    ),
)
BY_NAME = {upgrade.name: upgrade for upgrade in UPGRADES}


def due(old_version: str, *, reconfigure: bool) -> tuple[str, ...]:
    """The names of the upgrades a configure from *old_version* ("" on a first
    install) makes, oldest first."""
    if reconfigure:
        return ()
    return tuple(
        upgrade.name
        for upgrade in UPGRADES
        if not old_version or packages.compare_versions(old_version, "lt", upgrade.since)
    )
