"""Synapse's service: is it installed, does it run, stop/start/restart it.

Through ``deb-systemd-invoke`` when systemd runs, else ``invoke-rc.d``: both honour
``policy-rc.d``.  With workers (``matrix-synapse.target`` enabled) a stop or a start for
the whole of Synapse acts on the target, which takes the main process and every worker
with it; a restart, and the question whether Synapse runs, are about the main process
(the workers restart with it: their unit is PartOf it).

``deb-systemd-invoke`` says nothing (exit 0) when the policy forbids an action, so a
stop is checked by asking whether the service still runs.

Children never write to fd 1: in a maintainer script that is debconf's pipe.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from matrix_synapse_setup.core import messages
from matrix_synapse_setup.core.output import child_fds, say

UNIT = "matrix-synapse.service"
SYNAPSE_UNITS = (
    Path("/lib/systemd/system/matrix-synapse.service"),
    Path("/usr/lib/systemd/system/matrix-synapse.service"),
)
SYNAPSE_INITSCRIPT = Path("/etc/init.d/matrix-synapse")
SYSTEMD_RUNNING = Path("/run/systemd/system")
POLICY_FORBIDS = 101  # invoke-rc.d: the action is forbidden by policy-rc.d
# The target that groups the main process and the workers (debian/systemd), enabled only
# when workers are chosen: deb-systemd-helper links it into multi-user.target.wants.
TARGET = "matrix-synapse.target"
SYSTEM_DIR = Path("/etc/systemd/system")


def synapse_installed() -> bool:
    return any(unit.exists() for unit in SYNAPSE_UNITS) or SYNAPSE_INITSCRIPT.exists()


def systemd_runs() -> bool:
    return SYSTEMD_RUNNING.is_dir()


ADMIN_UNIT = Path("/etc/systemd/system/matrix-synapse.service")


def daemon_reload() -> None:
    """Let systemd see our drop-in for Synapse's unit.  Not when there is no such unit:
    the package that installs it reloads systemd then (and a reload costs more than
    everything else a run does)."""
    if not (synapse_installed() or ADMIN_UNIT.exists()):
        return
    if systemd_runs():
        try:
            subprocess.run(["systemctl", "daemon-reload"], **child_fds())
        except FileNotFoundError:
            pass  # systemd runs but systemctl is gone: nothing we can do


def target_enabled(system_dir: Path | None = None) -> bool:
    """True when the workers' target is enabled (it starts at boot)."""
    return ((system_dir or SYSTEM_DIR) / "multi-user.target.wants" / TARGET).is_symlink()


def whole_unit(system_dir: Path | None = None) -> str:
    """The unit that stands for all of Synapse: the target when workers are enabled, else
    the main process's unit."""
    return TARGET if target_enabled(system_dir) else UNIT


def invoke_command(action: str) -> list[str] | None:
    """The command that would run *action* on Synapse's service; None when no service
    manager knows it (no systemd running, no init script)."""
    return _command(action)


def _command(action: str, unit: str = UNIT) -> list[str] | None:
    if systemd_runs():
        return ["deb-systemd-invoke", action, unit]
    if SYNAPSE_INITSCRIPT.exists():
        return ["invoke-rc.d", "matrix-synapse", action]
    return None


def invoke(action: str, unit: str = UNIT) -> int | None:
    """Run *action* on Synapse's service (*unit* under systemd); its exit code, None when
    there is no tool or no service to act on (a warning is printed when the tool is
    missing)."""
    if not synapse_installed():
        return None
    cmd = _command(action, unit)
    if cmd is None:
        return None
    try:
        return subprocess.run(cmd, **child_fds()).returncode
    except FileNotFoundError:
        say(messages.RESTART_FAILED.format(reason=f"{cmd[0]} is missing"))
        return None


def restart_synapse(action: str) -> None:
    """Restart Synapse if it is installed, honouring policy-rc.d."""
    code = invoke(action)
    # policy-rc.d forbidding it (101) is the admin's choice, not a failure.
    if code not in (None, 0, POLICY_FORBIDS):
        say(messages.RESTART_FAILED.format(reason=f"exit {code}"))


def synapse_running() -> bool:
    """True when Synapse's service runs (systemd's view, or the init script's status)."""
    if not synapse_installed():
        return False
    if systemd_runs():
        cmd = ["systemctl", "is-active", "--quiet", UNIT]
    elif SYNAPSE_INITSCRIPT.exists():
        cmd = [str(SYNAPSE_INITSCRIPT), "status"]
    else:
        return False
    try:
        return subprocess.run(cmd, **child_fds()).returncode == 0
    except (FileNotFoundError, PermissionError):
        return False


def stop_synapse() -> bool:
    """Stop Synapse, its workers too; True when the main process does not run afterwards
    (policy-rc.d may refuse)."""
    invoke("stop", whole_unit())
    return not synapse_running()


def start_synapse() -> bool:
    """Start Synapse, its workers too; True when the main process runs afterwards."""
    invoke("start", whole_unit())
    return synapse_running()
