"""Our own byte-code: compiled when missing or stale, never by py3compile.

dh_python3 would byte-compile the package in the postinst (py3compile) and remove the
byte-code in the prerm (py3clean).  dpkg-reconfigure runs both, so every reconfigure
and upgrade started three more Python interpreters, which cost more than all of our
own work.  Instead, the entry points (``maintscript-helper`` and
``matrix-synapse-setup``) call :func:`refresh` before they import anything else of
ours, and Python's own imports write no byte-code (``sys.dont_write_bytecode``).

The byte-code is *checked-hash* byte-code (PEP 552): Python compares it with a hash
of the source at each import, so it can never be stale, even when a rebuilt package
of the same version has sources of the same size and modification time (the build
gives every file the changelog's date).  An up-to-date package costs one hash of
~200 kB of source per run; nothing is written.  The prerm removes the byte-code on
remove, as py3clean would.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

# flags of a PEP 552 .pyc: hash-based (1) and checked against the source (2)
_CHECKED_HASH = (0b11).to_bytes(4, "little")


def _current(source: bytes, cached: str, magic: bytes, source_hash: Callable) -> bool:
    try:
        with open(cached, "rb") as fh:
            header = fh.read(16)
    except OSError:
        return False
    return header == magic + _CHECKED_HASH + source_hash(source)


def refresh(package: Path | None = None) -> list[str]:
    """(Re)compile the modules of *package* (ours by default) whose byte-code is
    missing or stale; the names compiled.  Only root writes (the package's directory
    is root's); for anyone else, and on any error, Python compiles in memory."""
    if os.geteuid() != 0:
        return []
    import importlib.util

    package = package or Path(__file__).resolve().parent
    compiled = []
    try:
        for path in sorted(package.rglob("*.py")):
            source = path.read_bytes()
            cached = importlib.util.cache_from_source(str(path))
            if _current(source, cached, importlib.util.MAGIC_NUMBER, importlib.util.source_hash):
                continue
            import py_compile

            py_compile.compile(
                str(path),
                cfile=cached,
                doraise=True,
                invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH,
            )
            compiled.append(path.name)
    except Exception:  # noqa: BLE001 - byte-code is an optimisation, never a failure
        return compiled  # a read-only /usr, say: Python compiles in memory, as for anyone
    return compiled
