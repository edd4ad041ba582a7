"""System-test harness: a throwaway Debian root per scenario, in its own namespaces.

A cached root (roots.py), extracted once, and the cached layers on it (layers.py) are the
read-only lower directories; each scenario gets an overlay with its own writable layer on
top of them, mounted inside a private mount namespace, and runs with new PID, network, IPC
and UTS namespaces too.
Two kinds of root, with the same API (run, ok, fails, check, read, write, exists, put_file,
fail, label; `booted` tells them apart):

Root: no init system.

    unshare --mount --net --pid --ipc --uts --fork --kill-child  nsinit.py   (PID 1)
    nsenter --target <PID 1> ... chroot <root> COMMAND                       (each step)

  PID 1 (nsinit.py) holds the namespaces for the whole scenario, so PostgreSQL and Synapse
  keep running between steps; killing it ends every process of the scenario.  Services are
  started by their init scripts through invoke-rc.d (pg_ctlcluster for PostgreSQL; the
  Synapse stand-in's /etc/init.d/matrix-synapse stands in for its systemd unit).

BootedRoot: a real systemd is PID 1 (nsboot.py pivot_roots into the overlay and execs it),
  in a cgroup namespace too, rooted in a fresh sub-cgroup of the host's cgroup2; services
  are units (postgresql@VER-main, matrix-synapse.service), steps enter with nsenter.

The host's ports, services and packages are untouched: the namespace has only its own `lo`
(and the veth pair a scenario asks for), and no network to the outside.
"""

from __future__ import annotations

import os
import re
import select
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
INROOT = HERE / "inroot"
HELPERS = "/usr/local/lib/mss-test"  # where inroot/* is copied inside a root
DEBS = "/var/cache/mss-test"  # where the .debs under test are copied inside a root
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
HOSTS = "127.0.0.1\tlocalhost\n127.0.1.1\tmss-test\n::1\tlocalhost ip6-localhost ip6-loopback\n"
KEY_LINE = re.compile(r"matrix-synapse-setup[^_]|[Ee]rror|E: |Traceback|FATAL|refus", re.I)
KEEP = os.environ.get("MSS_KEEP_ROOTS") == "1"  # keep a failed scenario's files to debug


@dataclass
class Result:
    command: str
    code: int
    output: str  # standard output and error, interleaved as they came

    def tail(self, lines: int = 60) -> str:
        """The last LINES lines, after the earlier lines that name our package or an error."""
        text = self.output.replace("\r\n", "\n").rstrip("\n").splitlines()
        cut = text[-lines:]
        earlier = [line for line in text[:-lines] if KEY_LINE.search(line)][-40:]
        more = ""
        if earlier:
            more = "[... earlier lines naming our package or an error:]\n" + "\n".join(earlier)
            more += "\n[... the last lines:]\n"
        elif len(text) > lines:
            more = f"[... {len(text) - lines} earlier lines]\n"
        return more + "\n".join(cut)


class Root:
    """One scenario's root: `with Root(...) as root: root.ok(...)`."""

    booted = False  # no init system: see BootedRoot

    def __init__(
        self, scenario: str, suite: str, lower: Path | list[Path], base: Path | None = None
    ) -> None:
        self.scenario = scenario
        self.suite = suite
        # Overlay lower layers, top first: e.g. [a layer with postgresql installed, the base].
        self.lowers = lower if isinstance(lower, list) else [lower]
        # BASE: where the root's files go (the temporary directory by default); a root
        # kept as a layer (keep_as_layer) should be made on the layer's file system.
        self.dir = Path(tempfile.mkdtemp(prefix=f"mss-{suite}-{scenario}-", dir=base))
        self.upper = self.dir / "upper"
        self.merged = self.dir / "root"
        self.holder: subprocess.Popen | None = None
        self.pid1 = 0
        self.extra_netns: dict[str, int] = {}
        self.failed = False

    # --- life cycle ------------------------------------------------------------------

    def __enter__(self) -> Root:
        try:
            self.start()
        except BaseException:
            self.failed = True  # MSS_KEEP_ROOTS=1 keeps a root that did not start
            self.stop()
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.failed = exc_type is not None
        self.stop()

    def prepare_upper(self) -> None:
        """Files written to the upper layer before the overlay is mounted appear in the root."""
        for sub in ("upper", "work", "root"):
            (self.dir / sub).mkdir(exist_ok=True)
        self.put_file(INROOT / "policy-rc.d", "/usr/sbin/policy-rc.d", 0o755)
        self.put_text("/etc/hostname", "mss-test\n")  # nsinit.py and nsboot.py set it
        self.put_text("/etc/hosts", HOSTS)
        for path in sorted(INROOT.iterdir()):
            if path.is_file() and path.name != "policy-rc.d":
                self.put_file(path, f"{HELPERS}/{path.name}", 0o755)

    def start(self) -> None:
        self.prepare_upper()
        cmd = [
            "unshare",
            "--mount",
            "--net",
            "--pid",
            "--ipc",
            "--uts",
            "--fork",
            "--kill-child=SIGKILL",
            "--propagation=private",
            "/usr/bin/python3",
            str(HERE / "nsinit.py"),
            str(self.merged),
            ":".join(map(str, self.lowers)),
            str(self.upper),
            str(self.dir / "work"),
        ]
        self.holder = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
        line = self.holder.stdout.readline().strip() if self.holder.stdout else ""
        if line != "ready":
            rest = self.holder.stdout.read() if self.holder.stdout else ""
            raise AssertionError(f"[{self.label}] the namespace did not start: {line}\n{rest}")
        self.pid1 = self._child_of(self.holder.pid)

    @staticmethod
    def _child_of(pid: int) -> int:
        for _ in range(50):
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            if children:
                return int(children[0])
            time.sleep(0.05)
        raise AssertionError(f"unshare (pid {pid}) has no child")

    def stop(self) -> None:
        for pid in self.extra_netns.values():
            _kill(pid)
        self.extra_netns.clear()
        self.halt()
        # Every mount lived in the namespace, which is gone: only plain files remain.
        self.remove_files()

    def halt(self) -> None:
        """End every process of the scenario (its namespaces go with them)."""
        if self.pid1:
            _kill(self.pid1)  # the kernel then kills every process of the PID namespace
        if self.holder is not None:
            try:
                self.holder.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.holder.pid, signal.SIGKILL)
                self.holder.wait()
        self.pid1, self.holder = 0, None

    def remove_files(self) -> None:
        if KEEP and self.failed:
            print(f"[{self.label}] kept {self.dir} (MSS_KEEP_ROOTS=1)")
        else:
            shutil.rmtree(self.dir, ignore_errors=True)

    def keep_as_layer(self, dest: Path) -> None:
        """Stop the namespace and keep this root's changes (its upper layer) at DEST, to be
        a lower layer of later roots.  Stop its services cleanly first."""
        self.halt()
        os.replace(self.upper, dest)
        shutil.rmtree(self.dir, ignore_errors=True)

    @property
    def label(self) -> str:
        return f"{self.scenario} on {self.suite}"

    # --- files -----------------------------------------------------------------------

    def put_file(self, src: Path, dest: str, mode: int = 0o644) -> None:
        """Copy a host file into the root (before start: into the overlay's upper layer)."""
        if self.pid1:
            self.ok(
                ["install", "-D", "-m", f"{mode:o}", "/dev/stdin", dest],
                what=f"copying {src.name} in",
                input_bytes=src.read_bytes(),
            )
            return
        target = self.upper / dest.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, target)
        target.chmod(mode)

    def put_text(self, dest: str, text: str, mode: int = 0o644) -> None:
        """Write a file into the overlay's upper layer (before start)."""
        target = self.upper / dest.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        target.chmod(mode)

    def read(self, path: str) -> str:
        return self.ok(["cat", path], what=f"reading {path}").output

    def exists(self, path: str) -> bool:
        return self.run(["test", "-e", path]).code == 0

    def write(self, path: str, text: str, mode: int = 0o644) -> None:
        self.ok(
            ["install", "-D", "-m", f"{mode:o}", "/dev/stdin", path],
            what=f"writing {path}",
            input_bytes=text.encode(),
        )

    # --- commands --------------------------------------------------------------------

    def command(
        self, argv: list[str], env: dict[str, str] | None = None, net: str = ""
    ) -> list[str]:
        environ = {"PATH": PATH, "HOME": "/root", "LANG": "C.UTF-8", "TERM": "dumb"}
        environ.update(env or {})
        return [
            *self.enter(net),
            "/usr/bin/env",
            "-i",
            *[f"{k}={v}" for k, v in environ.items()],
            *argv,
        ]

    def enter(self, net: str = "") -> list[str]:
        """The command prefix that enters the scenario's namespaces and root."""
        nsargs = ["--mount", "--pid", "--ipc", "--uts"]
        if net:
            nsargs.append(f"--net=/proc/{self.extra_netns[net]}/ns/net")
        else:
            nsargs.append("--net")
        return ["nsenter", f"--target={self.pid1}", *nsargs, "--", "chroot", str(self.merged)]

    def run(
        self,
        argv: list[str] | str,
        *,
        input: str | None = None,
        input_bytes: bytes | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 900,
        net: str = "",
    ) -> Result:
        """Run ARGV (a list, or a shell script string for /bin/sh -ec) inside the root."""
        if isinstance(argv, str):
            shown, argv = argv, ["/bin/sh", "-ec", argv]
        else:
            shown = shlex.join(argv)
        data = input_bytes if input_bytes is not None else (input or "").encode()
        try:
            proc = subprocess.run(
                self.command(argv, env, net),
                input=data,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as err:
            out = (err.stdout or b"").decode("utf-8", "replace")
            return Result(shown, -1, out + f"\n[timed out after {timeout:.0f} s]")
        return Result(shown, proc.returncode, proc.stdout.decode("utf-8", "replace"))

    def ok(self, argv: list[str] | str, *, what: str, **kwargs) -> Result:
        """Run; the step must succeed."""
        result = self.run(argv, **kwargs)
        if result.code != 0:
            self.fail(what, "success (exit 0)", f"exit {result.code}", result)
        return result

    def fails(self, argv: list[str] | str, *, what: str, **kwargs) -> Result:
        """Run; the step must fail (non-zero exit)."""
        result = self.run(argv, **kwargs)
        if result.code == 0:
            self.fail(what, "a failure (non-zero exit)", "exit 0", result)
        return result

    def fail(self, what: str, expected: str, seen: str, result: Result | None = None) -> None:
        text = f"[{self.label}] {what}\n  expected: {expected}\n  seen:     {seen}"
        if result is not None:
            text += f"\n  command:  {result.command}\n--- output ---\n{result.tail()}"
        raise AssertionError(text)

    def check(self, condition: bool, what: str, expected: str, seen: str, result=None) -> None:
        if not condition:
            self.fail(what, expected, seen, result)

    # --- a second network namespace (remote PostgreSQL) ------------------------------------

    def add_netns(self, name: str, here: str, there: str, prefix: int = 24) -> None:
        """A second network namespace NAME, joined to the scenario's by a veth pair:
        the scenario has address HERE, NAME has THERE.  Its holder lives in the scenario's
        PID namespace, so it dies with it."""
        holder = subprocess.Popen(
            [
                "nsenter",
                f"--target={self.pid1}",
                "--pid",
                "--mount",
                "--",
                "unshare",
                "--net",
                "--",
                "sleep",
                "infinity",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        pid = self._child_of(holder.pid)
        for _ in range(50):  # wait until unshare has made the namespace and exec'd sleep
            if Path(f"/proc/{pid}/ns/net").resolve() != Path(f"/proc/{self.pid1}/ns/net").resolve():
                if Path(f"/proc/{pid}/comm").read_text().strip() == "sleep":
                    break
            time.sleep(0.05)
        self.extra_netns[name] = pid
        veth_here, veth_there = f"veth-{name}"[:15], f"veth-{name}-p"[:15]
        here_ns = ["nsenter", f"--target={self.pid1}", "--net", "--"]
        there_ns = ["nsenter", f"--target={pid}", "--net", "--"]
        for cmd in (
            [
                *here_ns,
                "ip",
                "link",
                "add",
                veth_here,
                "type",
                "veth",
                "peer",
                "name",
                veth_there,
                "netns",
                str(pid),
            ],
            [*here_ns, "ip", "addr", "add", f"{here}/{prefix}", "dev", veth_here],
            [*here_ns, "ip", "link", "set", veth_here, "up"],
            [*there_ns, "ip", "link", "set", "lo", "up"],
            [*there_ns, "ip", "addr", "add", f"{there}/{prefix}", "dev", veth_there],
            [*there_ns, "ip", "link", "set", veth_there, "up"],
        ):
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode:
                raise AssertionError(f"[{self.label}] {shlex.join(cmd)}: {proc.stderr}")


# Units masked in booted roots: the gettys (there is no terminal: /dev/console is a file)
# and apt's daily timers (the root is offline: they would fail and degrade the system
# in the middle of a scenario).
MASKED_UNITS = (
    "console-getty.service",
    "getty@tty1.service",
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
)
BOOT_TIMEOUT = 180.0  # seconds until `systemctl is-system-running` must say running
POWEROFF_TIMEOUT = 60.0


def cgroup2_home() -> Path:
    """The host's cgroup2 directory of this process (where a booted root's cgroup goes)."""
    mounts = [line.split() for line in Path("/proc/self/mounts").read_text().splitlines()]
    mount = next((fields[1] for fields in mounts if fields[2] == "cgroup2"), None)
    if mount is None:
        raise AssertionError("booted roots need cgroup2 on the host (systemd in unified mode)")
    lines = Path("/proc/self/cgroup").read_text().splitlines()
    own = next((line[3:] for line in lines if line.startswith("0::")), "/")
    return Path(mount) / own.lstrip("/")


class BootedRoot(Root):
    """A scenario's root with a real systemd as its PID 1: `root.booted` is True.

        sh -c 'echo $$ > CGROUP/cgroup.procs; exec unshare --pid --mount --uts --ipc --net
            --cgroup --fork ... nsboot.py'  ->  pivot_root, exec /lib/systemd/systemd --system
        nsenter --target <systemd> --mount --uts --ipc --net --pid --cgroup --root --wd COMMAND

    Same overlay layers and files as Root; systemd runs in a fresh sub-cgroup of the host's
    cgroup2 (its cgroup namespace's root) and starts what the root has enabled (PostgreSQL's
    clusters, Synapse's unit).  Commands run beside it through nsenter, with Root's clean
    environment; services are started by systemd (systemctl, deb-systemd-invoke).
    `reboot()` powers off and boots again on the same upper layer.  Stopping powers off
    (SIGRTMIN+4, SIGKILL if that takes too long), then removes the sub-cgroup.
    """

    booted = True

    def __init__(
        self, scenario: str, suite: str, lower: Path | list[Path], base: Path | None = None
    ) -> None:
        super().__init__(scenario, suite, lower, base)
        self.boots = 0
        self.cgroup: Path | None = None
        self.console = self.dir / "console.log"

    def start(self) -> None:
        self.prepare_upper()
        masks = self.upper / "etc/systemd/system"
        masks.mkdir(parents=True, exist_ok=True)
        for unit in MASKED_UNITS:
            (masks / unit).unlink(missing_ok=True)
            (masks / unit).symlink_to("/dev/null")
        self.boot()

    def boot(self) -> None:
        """Start systemd on the scenario's layers; return when the system runs."""
        self.boots += 1
        self.console = self.dir / f"console-{self.boots}.log"
        self.cgroup = cgroup2_home() / f"mss-{os.getpid()}-{self.dir.name}-{self.boots}"
        self.cgroup.mkdir()
        read_fd, write_fd = os.pipe()
        cmd = [
            "/bin/sh",
            "-c",
            'echo $$ >"$0" && exec "$@"',  # into the sub-cgroup, then the namespaces
            str(self.cgroup / "cgroup.procs"),
            "unshare",
            "--fork",
            "--kill-child=SIGKILL",
            "--pid",
            "--mount",
            "--uts",
            "--ipc",
            "--net",
            "--cgroup",
            "--propagation=private",
            "/usr/bin/python3",
            str(HERE / "nsboot.py"),
            str(self.merged),
            ":".join(map(str, self.lowers)),
            str(self.upper),
            str(self.dir / "work"),
            str(self.console),
            str(write_fd),
        ]
        try:
            with open(self.console, "ab") as console:
                self.holder = subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=console,
                    stderr=subprocess.STDOUT,
                    pass_fds=(write_fd,),
                    start_new_session=True,
                )
        finally:
            os.close(write_fd)
        with os.fdopen(read_fd) as status:
            ready, _, _ = select.select([status], [], [], 60)
            line = status.readline().strip() if ready else "no word from nsboot.py in 60 s"
        if line != "ready":
            self.boot_failed(line or f"the namespaces did not start (exit {self.holder.wait()})")
        self.pid1 = self._child_of(self.holder.pid)
        self.wait_running()

    def wait_running(self) -> None:
        deadline = time.monotonic() + BOOT_TIMEOUT
        state = ""
        while True:
            if self.holder is None or self.holder.poll() is not None:
                self.boot_failed("systemd ended while booting")
            left = deadline - time.monotonic()
            if left <= 0:
                self.boot_failed(f"still {state!r} after {BOOT_TIMEOUT:.0f} s")
            result = self.run(["systemctl", "is-system-running", "--wait"], timeout=left)
            lines = result.output.strip().splitlines()
            state = lines[-1] if lines else ""
            if state == "running":
                return
            if state in ("degraded", "maintenance", "stopping"):
                failed = self.run(["systemctl", "--failed", "--no-pager", "--full"]).output
                units = self.run(["systemctl", "--failed", "--plain", "--no-legend"]).output
                for unit in [line.split()[0] for line in units.splitlines() if line.split()]:
                    cmd = ["journalctl", "-b", "--no-pager", "-q", "-n", "25", "-u", unit]
                    failed += f"\n--- {unit} ---\n{self.run(cmd).output.rstrip()}"
                self.boot_failed(f"the system is {state}", failed)
            # Before systemd has made /run/systemd/system and its socket, systemctl says
            # "offline" at once: poll until it answers.
            time.sleep(0.2)

    def boot_failed(self, reason: str, details: str = "") -> None:
        text = f"[{self.label}] booting the root failed: {reason}"
        if details:
            text += f"\n{details.rstrip()}"
        if self.pid1 and self.holder is not None and self.holder.poll() is None:
            journal = self.run(["journalctl", "-b", "--no-pager", "-q", "-n", "80"], timeout=30)
            text += f"\n--- journal (last lines) ---\n{journal.output.rstrip()}"
        console = self.console.read_text(errors="replace") if self.console.exists() else ""
        text += "\n--- console (last lines) ---\n" + "\n".join(console.splitlines()[-60:])
        raise AssertionError(text)

    def enter(self, net: str = "") -> list[str]:
        nsargs = ["--mount", "--uts", "--ipc", "--pid", "--cgroup", "--root", "--wd"]
        if net:
            nsargs.append(f"--net=/proc/{self.extra_netns[net]}/ns/net")
        else:
            nsargs.append("--net")
        return ["nsenter", f"--target={self.pid1}", *nsargs, "--"]

    def halt(self) -> None:
        """Power off: systemd stops every unit; SIGKILL when that takes too long.  Then
        remove the sub-cgroup (every process of the namespaces is gone by then)."""
        holder = self.holder
        if holder is not None:
            if self.pid1 and holder.poll() is None:
                _kill(self.pid1, signal.SIGRTMIN + 4)  # systemd: poweroff.target
            try:
                holder.wait(timeout=POWEROFF_TIMEOUT)
            except subprocess.TimeoutExpired:
                print(f"[{self.label}] systemd did not power off in {POWEROFF_TIMEOUT:.0f} s")
                if self.pid1:
                    _kill(self.pid1)
                try:
                    holder.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(holder.pid, signal.SIGKILL)  # unshare: --kill-child
                    holder.wait()
        self.pid1, self.holder = 0, None
        if self.cgroup is not None:
            _remove_cgroup(self.cgroup)
            self.cgroup = None

    def reboot(self) -> None:
        """Power off cleanly, then boot again on the same upper layer."""
        for pid in self.extra_netns.values():
            _kill(pid)
        self.extra_netns.clear()
        self.halt()
        self.boot()


def _remove_cgroup(path: Path, timeout: float = 30) -> None:
    """Remove a cgroup and the ones systemd made below it, deepest first."""
    deadline = time.monotonic() + timeout
    while path.exists():
        for top, dirs, _ in os.walk(path, topdown=False):
            for name in dirs:
                try:
                    os.rmdir(os.path.join(top, name))
                except OSError:
                    pass
        try:
            path.rmdir()
        except FileNotFoundError:
            return
        except OSError as err:
            if time.monotonic() > deadline:
                procs = sorted(
                    {pid for f in path.rglob("cgroup.procs") for pid in f.read_text().split()}
                )
                raise AssertionError(
                    f"cannot remove cgroup {path}: {err}; processes left: {procs}"
                ) from err
            time.sleep(0.1)  # the last processes of the namespace are still exiting


def _kill(pid: int, sig: int = signal.SIGKILL) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
