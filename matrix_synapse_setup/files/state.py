"""What the package keeps between runs, under /var/lib/matrix-synapse-setup.

- :data:`RECORD` (root only, 0600): the admin account this package created, and the
  access token of the session its registration opened (see postinst/admin.py);
- :data:`KEEP_FILE`: debconf's ``backup-keep``, copied by the postinst for the apt hook,
  which runs outside debconf (see commands/backup.py).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from matrix_synapse_setup.core.errors import SetupError
from matrix_synapse_setup.core.paths import DEFAULT_BACKUP_KEEP, STATE_DIR
from matrix_synapse_setup.core.settings import validate_keep
from matrix_synapse_setup.files.atomic import Ownership, write_atomic

RECORD = STATE_DIR / "admin.json"
KEEP_FILE = STATE_DIR / "backup-keep"


# --- the admin account this package created --------------------------------------------


def read_record(path: Path | None = None) -> dict[str, str]:
    path = path or RECORD
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_record(record: dict[str, str], path: Path | None = None) -> None:
    path = path or RECORD
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomic(path, json.dumps(record, indent=1) + "\n", Ownership(0, 0, 0o600))


def created_here(user: str, record: dict[str, str]) -> bool:
    """True when *user* is the account this package created (and recorded)."""
    user_id = record.get("user_id", "")
    return bool(user) and user_id.startswith(f"@{user}:")


# --- backup-keep, for the apt hook --------------------------------------------------------


def read_keep(path: Path = KEEP_FILE) -> int:
    try:
        return validate_keep(path.read_text(encoding="ascii"))
    except (OSError, UnicodeDecodeError, SetupError):
        return DEFAULT_BACKUP_KEEP


def store_keep(value: str, path: Path = KEEP_FILE) -> bool:
    """Write the validated answer for the hook; True when the file changed."""
    text = f"{validate_keep(value)}\n"
    with contextlib.suppress(OSError, UnicodeDecodeError):
        if path.read_text(encoding="ascii") == text:
            return False
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="ascii")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return True


# --- Dendrite's configuration, as the dendrite command last left it ----------------------

DENDRITE_FILE = STATE_DIR / "dendrite"


def read_dendrite(path: Path = DENDRITE_FILE) -> Path | None:
    """The Dendrite configuration file the dendrite command pointed at our database."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return Path(text) if text.startswith("/") else None


def store_dendrite(config: Path, path: Path = DENDRITE_FILE) -> bool:
    """Remember *config* for doctor; True when that changed the file."""
    text = f"{config}\n"
    with contextlib.suppress(OSError):
        if path.read_text(encoding="utf-8") == text:
            return False
    write_atomic(path, text, Ownership(0, 0, 0o644), crash_point=None)
    return True
