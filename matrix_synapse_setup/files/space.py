"""Free space: what an operation will write on which filesystem, and whether it fits.

Needs on one filesystem add up: a port's snapshots and PostgreSQL's data, or a new
cluster and the backup taken before it, are often both under /var.  A directory that
does not exist yet is measured at its nearest existing ancestor, which is where it will
be made.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple


class Need(NamedTuple):
    """*need* bytes wanted in *path*, which is on filesystem *device* with *free* bytes."""

    what: str  # "PostgreSQL's data directory", "the backup" ...
    path: Path
    device: int
    free: int
    need: int


class Shortage(NamedTuple):
    """A filesystem without room: the needs on it, its free bytes, their sum."""

    needs: tuple[Need, ...]
    free: int
    need: int


def existing(path: Path) -> Path:
    """*path*, or its nearest ancestor that exists."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer may still use on *path*'s filesystem."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def measure(what: str, path: Path, need: int) -> Need:
    """The Need of *need* bytes in *path*, its filesystem measured now."""
    there = existing(path)
    return Need(what, path, os.stat(there).st_dev, free_bytes(there), need)


def shortages(needs: list[Need]) -> list[Shortage]:
    """The filesystems where the needs on them, added up, exceed what is free."""
    by_device: dict[int, list[Need]] = {}
    for each in needs:
        by_device.setdefault(each.device, []).append(each)
    found = []
    for group in by_device.values():
        total = sum(each.need for each in group)
        if total > group[0].free:
            found.append(Shortage(tuple(group), group[0].free, total))
    return found
