"""The workers' units: enable exactly the workers chosen, and start or stop them.

A worker is an instance of the template ``matrix-synapse-worker@.service``, enabled by
the symlink that ``systemctl enable`` would make in matrix-synapse.target.wants:
deb-systemd-helper cannot enable a template's instance (it reads only unit files that
exist).  Our Redis instance is enabled the same way, so that the target starts it.  The
target itself is enabled and disabled by deb-systemd-helper, which keeps the state
Debian's purge handling reads.  Starting and stopping go through deb-systemd-invoke,
which honours policy-rc.d.

Only our symlinks are touched: the workers our presets name and our Redis instance; an
admin's own worker (another name) stays enabled.

Children never write to fd 1: in a maintainer script that is debconf's pipe.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from matrix_synapse_setup.core import messages
from matrix_synapse_setup.core.output import child_fds, say
from matrix_synapse_setup.core.steps import CHANGED, CREATED, OK, Step
from matrix_synapse_setup.synapse.service import (
    SYSTEM_DIR,
    TARGET,
    systemd_runs,
    target_enabled,
)
from matrix_synapse_setup.synapse.workers import (
    BACKGROUND,
    CLIENT,
    EVENTS,
    FEDERATION_SENDER,
    REDIS_KINDS,
    WORKER_UNIT,
    RedisServer,
    redis_server,
)

__all__ = ["TARGET", "WANTS_DIR", "apply", "enabled_workers", "target_enabled"]

WANTS_DIR = SYSTEM_DIR / f"{TARGET}.wants"
WORKER_TEMPLATE = Path("/usr/lib/systemd/system/matrix-synapse-worker@.service")
# The interpreter the worker unit runs: upstream's package's (matrix-synapse-py3), as its
# own unit does.  Debian's matrix-synapse runs /usr/bin/python3 instead.
WORKER_PYTHON = Path("/opt/venvs/matrix-synapse/bin/python")
_WORKER_LINK = re.compile(r"^matrix-synapse-worker@(.+)\.service$")
# The names our presets give (synapse/workers.py): only these links are ours to remove.
_OUR_WORKER = re.compile(rf"^({CLIENT}|{EVENTS}|{FEDERATION_SENDER}|{BACKGROUND})[0-9]+$")
_OUR_REDIS_UNITS = frozenset(redis_server(kind).unit for kind in REDIS_KINDS)


def enabled_workers(wants: Path = WANTS_DIR) -> tuple[str, ...]:
    """The instance names of the workers enabled in the target (sorted), ours or not."""
    try:
        entries = sorted(os.listdir(wants))
    except (FileNotFoundError, NotADirectoryError):
        return ()
    names = []
    for entry in entries:
        match = _WORKER_LINK.match(entry)
        if match and (wants / entry).is_symlink():
            names.append(match.group(1))
    return tuple(names)


def redis_enabled(wants: Path = WANTS_DIR) -> bool:
    """Our Redis instance (redis-server's or valkey-server's) is enabled in the target."""
    return any((wants / unit).is_symlink() for unit in sorted(_OUR_REDIS_UNITS))


def _ours(entry: str) -> bool:
    match = _WORKER_LINK.match(entry)
    if match:
        return bool(_OUR_WORKER.match(match.group(1)))
    return entry in _OUR_REDIS_UNITS


def link(
    names: tuple[str, ...],
    redis: RedisServer | None,
    wants: Path = WANTS_DIR,
    template: Path = WORKER_TEMPLATE,
) -> tuple[list[Step], list[str]]:
    """Make the target's wants hold exactly our links for *names* and *redis*; the steps
    that changed something, and the units whose link was removed."""
    wanted = {WORKER_UNIT.format(name=name): template for name in names}
    if redis is not None:
        wanted[redis.unit] = redis.template
    steps: list[Step] = []
    removed: list[str] = []
    try:
        present = sorted(os.listdir(wants))
    except (FileNotFoundError, NotADirectoryError):
        present = []
    for entry in present:
        if entry not in wanted and _ours(entry) and (wants / entry).is_symlink():
            (wants / entry).unlink()
            removed.append(entry)
            steps.append(Step(entry, CHANGED, "disabled"))
    for unit, target in wanted.items():
        path = wants / unit
        if path.is_symlink() and os.readlink(path) == str(target):
            continue
        existed = path.is_symlink() or path.exists()
        wants.mkdir(parents=True, exist_ok=True)
        # A new link beside the old one, renamed over it: never a moment without one.
        tmp = wants / f".{unit}.tmp"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(target)
        tmp.replace(path)
        steps.append(Step(unit, CHANGED if existed else CREATED, "enabled"))
    if not wanted and wants.is_dir() and not any(wants.iterdir()):
        wants.rmdir()
    return steps, removed


def commands(
    names: tuple[str, ...],
    redis: RedisServer | None,
    changed: bool,
    *,
    removed: list[str],
    was_enabled: bool,
    reload: bool,
    systemd: bool,
    start: bool = True,
) -> list[list[str]]:
    """What :func:`apply` runs after the links are made, in order (pure)."""
    cmds: list[list[str]] = []
    if names and not was_enabled:
        cmds.append(["deb-systemd-helper", "enable", TARGET])
    elif not names and was_enabled:
        cmds.append(["deb-systemd-helper", "disable", TARGET])
    if not systemd:
        return cmds
    if reload or cmds:
        cmds.append(["systemctl", "daemon-reload"])
    if removed:
        cmds.append(["deb-systemd-invoke", "stop", *removed])
    if not start:
        return cmds  # Synapse is not installed yet: its arrival starts the target
    if redis is not None:
        cmds.append(["deb-systemd-invoke", "start", redis.unit])
    if names:
        cmds.append(["deb-systemd-invoke", "restart" if changed else "start", TARGET])
    return cmds


def apply(
    names: tuple[str, ...],
    redis: RedisServer | None,
    changed: bool,
    *,
    wants: Path = WANTS_DIR,
    template: Path = WORKER_TEMPLATE,
    start: bool = True,
) -> list[Step]:
    """Enable exactly the workers *names* (and *redis*'s instance) in the target, enable
    the target when there are workers, disable it when there are none; then, under
    systemd, stop what was removed, start Redis and start the target, or restart it when
    the configuration *changed*.  With no workers the main process is the caller's to
    restart (a target left running does nothing).  Without a running systemd only the
    links are made: the units start at the next boot."""
    was_enabled = target_enabled(wants.parent)
    steps, removed = link(names, redis, wants, template)
    systemd = systemd_runs()
    for cmd in commands(
        names,
        redis,
        changed,
        removed=removed,
        was_enabled=was_enabled,
        reload=bool(steps),
        systemd=systemd,
        start=start,
    ):
        steps.append(_run(cmd))
    if names and not systemd:
        say(messages.UNITS_NO_SYSTEMD.format(wants=wants))
    return steps


NGINX = Path("/usr/sbin/nginx")
NGINX_UNIT = "nginx.service"


def reload_nginx() -> Step | None:
    """After the include changed: reload a running nginx when it accepts its
    configuration (``nginx -t``), so that the routes follow the workers; None when no
    nginx runs here.  A configuration nginx refuses is left to the admin: reloading
    would fail anyway."""
    if not NGINX.exists() or not systemd_runs():
        return None
    active = subprocess.run(["systemctl", "is-active", "--quiet", NGINX_UNIT], **child_fds())
    if active.returncode != 0:
        return None
    test = subprocess.run([str(NGINX), "-t", "-q"], **child_fds())
    if test.returncode != 0:
        say(messages.NGINX_NOT_RELOADED)
        return Step("reload nginx", "not done", "nginx -t refuses its configuration")
    return _run(["deb-systemd-invoke", "reload", NGINX_UNIT])


def run_unit(action: str, unit: str) -> Step:
    """*action* on *unit* through deb-systemd-invoke (policy-rc.d is honoured)."""
    return _run(["deb-systemd-invoke", action, unit])


def _run(cmd: list[str]) -> Step:
    name = " ".join(cmd)
    try:
        code = subprocess.run(cmd, **child_fds()).returncode
    except FileNotFoundError:
        code = 127
    if code != 0:
        say(messages.UNITS_FAILED.format(command=name, code=code, unit=cmd[-1]))
        return Step(name, CHANGED, f"exit {code}")
    # A start finds the units running when nothing changed: not a change.
    return Step(name, OK if cmd[:2] == ["deb-systemd-invoke", "start"] else CHANGED)
