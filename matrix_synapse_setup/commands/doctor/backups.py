"""doctor's checks of the pre-upgrade dumps (commands/backup.py, run by the apt hook):
room for the next one, how old the newest is, and whether the archive of the signing key
and configuration is beside it."""

from __future__ import annotations

import os
import shutil
import time

from matrix_synapse_setup.commands.backup import archive_of
from matrix_synapse_setup.commands.doctor.facts import Facts
from matrix_synapse_setup.commands.doctor.report import OK, WARN, Check
from matrix_synapse_setup.core import messages
from matrix_synapse_setup.synapse import config as synapse_config

# The pre-upgrade dumps of the apt hook (commands/backup.py), in BACKUP_DIR.
BACKUP_GLOB = "*.dump"
BACKUP_MAX_AGE_DAYS = 30
MIN_FREE_BYTES = 1 << 30  # without the database's size: 1 GiB


def check_backup_disk(facts: Facts) -> Check:
    name = "backup disk"
    directory = facts.paths.backups
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    server = facts.server()
    size = server["size"] if server else None
    need = size if size is not None else MIN_FREE_BYTES
    what = (
        messages.DOCTOR_DISK_DATABASE.format(size=synapse_config.human_size(size))
        if size is not None
        else messages.DOCTOR_DISK_DEFAULT.format(size=synapse_config.human_size(need))
    )
    detail = messages.DOCTOR_DISK.format(
        free=synapse_config.human_size(free), path=existing, what=what
    )
    if free < need:
        return Check(name, WARN, detail, messages.DOCTOR_FIX_DISK.format(path=existing))
    return Check(name, OK, detail)


def check_last_backup(facts: Facts, now: float | None = None) -> Check:
    name = "last backup"
    directory = facts.paths.backups
    dumps = []
    if directory.is_dir() and not os.access(directory, os.R_OK | os.X_OK):
        # glob() would see nothing in it, and say "no backup yet"
        return Check(
            name,
            WARN,
            messages.DOCTOR_BACKUPS_UNREADABLE.format(path=directory),
            messages.DOCTOR_FIX_RUN_AS_ROOT,
        )
    try:
        for path in directory.glob(BACKUP_GLOB):
            try:
                dumps.append((path.stat().st_mtime, path))
            except FileNotFoundError:
                continue  # removed while we looked (the hook keeps the last N)
    except PermissionError:
        return Check(
            name,
            WARN,
            messages.DOCTOR_BACKUPS_UNREADABLE.format(path=directory),
            messages.DOCTOR_FIX_RUN_AS_ROOT,
        )
    if not dumps:
        # A fresh install has none, and nothing is wrong: the hook makes the first
        # before Synapse's first upgrade (the row would warn on every new server).
        return Check(name, OK, messages.DOCTOR_NO_BACKUP.format(path=directory))
    mtime, newest = max(dumps)
    days = ((now if now is not None else time.time()) - mtime) / 86400
    detail = messages.DOCTOR_BACKUP.format(path=newest, days=days, count=len(dumps))
    beside = archive_of(newest)
    if beside is not None:
        # Mentioned, not warned: dumps made by earlier versions have none.
        detail += (
            messages.DOCTOR_BACKUP_ARCHIVE.format(name=beside.name)
            if beside.exists()
            else messages.DOCTOR_BACKUP_NO_ARCHIVE
        )
    if days > BACKUP_MAX_AGE_DAYS:
        return Check(
            name,
            WARN,
            detail + messages.DOCTOR_BACKUP_OLD.format(limit=BACKUP_MAX_AGE_DAYS),
            messages.DOCTOR_FIX_BACKUP,
        )
    return Check(name, OK, detail)
