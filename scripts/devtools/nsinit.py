#!/usr/bin/python3
"""PID 1 of a system-test namespace (run by harness.py under `unshare`, with the host's python).

argv: MERGED LOWERS UPPER WORK.  In the new mount namespace it mounts an overlay of the
cached root (LOWERS: read-only layers shared by the scenarios of one test session, top
first, ":"-separated) with this scenario's writable UPPER at MERGED, then /proc of the new
PID namespace (what `unshare --mount-proc` would do, but inside the root), a minimal /dev,
/dev/pts, /dev/shm, tmpfs /run and /tmp, and brings up `lo` in the new network namespace.
It prints "ready" and then only reaps children (orphans are re-parented to it: without
reaping, a stopped daemon would stay a zombie and start-stop-daemon would still see it).
When it dies, the kernel kills every process of the namespace: PostgreSQL and Synapse
cannot outlive the scenario.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

HOSTNAME = "mss-test"  # harness.py puts it in the root's /etc/hosts
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True)


def pts_shm_and_links(dev: str, sh) -> None:
    """/dev/pts (a new instance), /dev/ptmx, /dev/shm and the fd links, in DEV (a tmpfs);
    shared with nsboot.py."""
    os.mkdir(f"{dev}/pts")
    sh("mount", "-t", "devpts", "-o", "newinstance,ptmxmode=0666,mode=0620,gid=5", "devpts",
       f"{dev}/pts")  # fmt: skip
    os.symlink("pts/ptmx", f"{dev}/ptmx")
    os.mkdir(f"{dev}/shm")
    sh("mount", "-t", "tmpfs", "-o", "mode=1777,nosuid,nodev", "tmpfs", f"{dev}/shm")
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):  # fmt: skip
        os.symlink(target, f"{dev}/{name}")


def setup(merged: str, lower: str, upper: str, work: str) -> None:
    layers = f"lowerdir={lower},upperdir={upper},workdir={work}"
    sh("mount", "-t", "overlay", "overlay", "-o", layers, merged)
    sh("mount", "-t", "proc", "proc", f"{merged}/proc")
    dev = f"{merged}/dev"
    sh("mount", "-t", "tmpfs", "-o", "mode=0755,nosuid", "tmpfs", dev)
    for name in DEVICES:
        Path(f"{dev}/{name}").touch()  # a mount point
        sh("mount", "--bind", f"/dev/{name}", f"{dev}/{name}")
    pts_shm_and_links(dev, sh)
    sh("mount", "-t", "tmpfs", "-o", "mode=0755,nosuid,nodev", "tmpfs", f"{merged}/run")
    os.mkdir(f"{merged}/run/lock", 0o1777)
    os.chmod(f"{merged}/run/lock", 0o1777)  # noqa: S103 - the root's /run/lock, as Debian makes it
    sh("mount", "-t", "tmpfs", "-o", "mode=1777,nosuid,nodev", "tmpfs", f"{merged}/tmp")  # noqa: S108 - the root's own /tmp
    sh("ip", "link", "set", "lo", "up")
    socket.sethostname(HOSTNAME)  # in the scenario's own UTS namespace


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        setup(*sys.argv[1:5])
    except (OSError, subprocess.CalledProcessError) as err:
        print(f"nsinit: setting up the namespace failed: {err}", flush=True)
        sys.exit(1)
    print("ready", flush=True)
    os.dup2(os.open("/dev/null", os.O_WRONLY), 1)
    while True:
        try:
            os.wait()
        except ChildProcessError:
            time.sleep(0.2)


if __name__ == "__main__":
    main()
