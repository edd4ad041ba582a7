"""What dpkg knows about packages: versions compared, what is installed or about to be,
and our triggers."""

from __future__ import annotations

import subprocess

from matrix_synapse_setup.core.output import child_fds

# Our own trigger (debian/triggers): provisioning deferred until PostgreSQL,
# unpacked in the same dpkg run, is configured.
PROVISION_TRIGGER = "matrix-synapse-setup-provision"
POSTGRESQL_PACKAGES = ("postgresql", "postgresql-common", "postgresql-[0-9]*")
# The Redis servers the workers use: their postinst makes the user and group our
# instance's configuration is given to.
REDIS_PACKAGES = ("redis-server", "valkey-server")
SYNAPSE_PACKAGES = ("matrix-synapse-py3", "matrix-synapse")


def compare_versions(a: str, op: str, b: str) -> bool:
    """dpkg --compare-versions A OP B."""
    proc = subprocess.run(["dpkg", "--compare-versions", a, op, b], **child_fds())
    return proc.returncode == 0


def trigger(name: str) -> bool:
    """Activate the trigger *name* without waiting for it (dpkg runs it later in this
    run); True when dpkg took it."""
    return subprocess.run(["dpkg-trigger", "--no-await", name], **child_fds()).returncode == 0


def postgresql_being_installed() -> list[str]:
    """PostgreSQL packages unpacked but not configured yet (same dpkg run as ours)."""
    return being_installed(POSTGRESQL_PACKAGES)


def being_installed(patterns: tuple[str, ...]) -> list[str]:
    """Packages matching *patterns* unpacked but not configured yet (same dpkg run)."""
    proc = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Package} ${db:Status-Abbrev}\n", *patterns],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    pending = []
    for line in proc.stdout.splitlines():
        name, _, status = line.partition(" ")
        # want install (i), and unpacked (U), half-configured (F) or half-installed (H)
        if status[:1] == "i" and status[1:2] in ("U", "F", "H"):
            pending.append(name)
    return pending


def installed_synapse() -> tuple[str, str] | None:
    """(package, version) of the installed Synapse package, None when there is none."""
    for package in SYNAPSE_PACKAGES:
        proc = subprocess.run(
            ["dpkg-query", "-W", "-f", "${db:Status-Abbrev} ${Version}", package],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
        )
        status, _, version = proc.stdout.partition(" ")
        if proc.returncode == 0 and status.strip() in ("ii", "iU", "iF", "iH") and version:
            return package, version.strip()
    return None
