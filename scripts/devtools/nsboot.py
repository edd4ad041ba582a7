#!/usr/bin/python3
"""Becomes systemd, PID 1 of a booted system-test root (run by harness.BootedRoot).

harness.py starts it with the host's python as the first process of new mount, PID, UTS,
IPC, network and cgroup namespaces (`unshare --fork --pid ... --cgroup`, from inside a fresh
sub-cgroup of the host's cgroup2, which becomes the cgroup namespace's root).

argv: MERGED LOWERS UPPER WORK CONSOLE STATUS_FD.  It mounts the overlay of the cached root
(LOWERS, ":"-separated, top first) with this scenario's writable UPPER at MERGED, then what
a container manager gives systemd: /proc (with /proc/sys read-only, so that
systemd-sysctl cannot change the host's kernel settings), a read-only /sys with the
namespace's cgroup2 at /sys/fs/cgroup, a small /dev (CONSOLE, a host file, is bind-mounted
on /dev/console), tmpfs /run and /tmp; brings `lo` up and sets the host name.  Then it
pivot_roots into MERGED (not chroot: systemd's sandboxing needs a real root), drops
CAP_SYS_MODULE and CAP_SYS_TIME from the bounding set (trixie's systemd-modules-load would
fail otherwise), writes "ready" to STATUS_FD and execs /lib/systemd/systemd --system with
container=other.  On any failure it writes the reason to STATUS_FD and exits 1.
"""

import ctypes
import os
import socket
import subprocess
import sys
from pathlib import Path

from nsinit import pts_shm_and_links  # beside this file: run as a script, its folder is on sys.path

HOSTNAME = "mss-test"  # harness.py puts it in the root's /etc/hosts and /etc/hostname
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
MNT_DETACH = 2
PR_CAPBSET_DROP = 24
CAP_SYS_MODULE, CAP_SYS_TIME = 16, 25
LIBC = ctypes.CDLL(None, use_errno=True)


def sh(*cmd: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)}: exit {proc.returncode}: {proc.stderr.strip()}")


def libc(name: str, *args) -> None:
    if getattr(LIBC, name)(*args) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{name}{args}: {os.strerror(err)}")


def setup(merged: str, lower: str, upper: str, work: str, console: str) -> None:
    layers = f"lowerdir={lower},upperdir={upper},workdir={work}"
    sh("mount", "-t", "overlay", "overlay", "-o", layers, merged)
    sh("mount", "-t", "proc", "-o", "nosuid,nodev,noexec", "proc", f"{merged}/proc")
    sh("mount", "--bind", f"{merged}/proc/sys", f"{merged}/proc/sys")
    sh("mount", "-o", "remount,bind,ro,nosuid,nodev,noexec", f"{merged}/proc/sys")
    sh("mount", "-t", "sysfs", "-o", "ro,nosuid,nodev,noexec", "sysfs", f"{merged}/sys")
    sh("mount", "-t", "cgroup2", "-o", "nosuid,nodev,noexec", "cgroup2",
       f"{merged}/sys/fs/cgroup")  # fmt: skip
    dev = f"{merged}/dev"
    sh("mount", "-t", "tmpfs", "-o", "mode=0755,nosuid", "tmpfs", dev)
    for name in (*DEVICES, "console"):
        Path(f"{dev}/{name}").touch()  # a mount point
    for name in DEVICES:
        sh("mount", "--bind", f"/dev/{name}", f"{dev}/{name}")
    sh("mount", "--bind", console, f"{dev}/console")
    pts_shm_and_links(dev, sh)
    sh("mount", "-t", "tmpfs", "-o", "mode=0755,nosuid,nodev", "tmpfs", f"{merged}/run")
    sh("mount", "-t", "tmpfs", "-o", "mode=1777,nosuid,nodev", "tmpfs", f"{merged}/tmp")  # noqa: S108 - the root's own /tmp
    sh("ip", "link", "set", "lo", "up")
    socket.sethostname(HOSTNAME)  # in the scenario's own UTS namespace
    # pivot_root(".", "."): the old root ends up on top of the new one; detach it.  The
    # kernel moves every process of this namespace whose root was the old root (this one).
    os.chdir(merged)
    sh("pivot_root", ".", ".")
    libc("umount2", b".", MNT_DETACH)
    os.chdir("/")
    if not os.path.exists("/lib/systemd/systemd"):
        raise RuntimeError("no /lib/systemd/systemd in the root (is systemd in roots.INSTALL?)")
    for cap in (CAP_SYS_MODULE, CAP_SYS_TIME):
        libc("prctl", PR_CAPBSET_DROP, cap, 0, 0, 0)


def main() -> None:
    merged, lower, upper, work, console, status_fd = sys.argv[1:7]
    status = os.fdopen(int(status_fd), "w")
    try:
        setup(merged, lower, upper, work, console)
    except (OSError, RuntimeError) as err:
        status.write(f"nsboot: preparing the root failed: {err}\n")
        sys.exit(1)
    status.write("ready\n")
    status.close()
    env = {"container": "other", "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin"}
    os.execve("/lib/systemd/systemd", ["/lib/systemd/systemd", "--system"], env)  # noqa: S606


if __name__ == "__main__":
    main()
