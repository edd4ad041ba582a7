"""System-test harness: a throwaway Debian root per scenario, in its own namespaces.

A cached root (roots.py) is extracted once per test session per release into a read-only
lower directory; each scenario gets an overlay with its own writable layer, mounted inside
a private mount namespace, and runs with new PID, network, IPC and UTS namespaces too:

    unshare --mount --net --pid --ipc --uts --fork --kill-child  nsinit.py   (PID 1)
    nsenter --target <PID 1> ... chroot <root> COMMAND                       (each step)

PID 1 (nsinit.py) holds the namespaces for the whole scenario, so PostgreSQL and Synapse keep
running between steps; killing it ends every process of the scenario.  The host's ports,
services and packages are untouched: the namespace has only its own `lo` (and the veth pair a
scenario asks for), and no network to the outside.
"""

from __future__ import annotations

import os
import re
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


def extract(tarball: Path) -> Path:
    """Extract a cached root into a fresh temporary directory (the overlays' lower layer)."""
    lower = Path(tempfile.mkdtemp(prefix=f"mss-lower-{tarball.name.split('.')[0]}-"))
    subprocess.run(
        ["tar", "--zstd", "-xpf", str(tarball), "--numeric-owner", "-C", str(lower)],
        check=True,
    )
    return lower


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

    def __init__(self, scenario: str, suite: str, lower: Path | list[Path]) -> None:
        self.scenario = scenario
        self.suite = suite
        # Overlay lower layers, top first: e.g. [a layer with postgresql installed, the base].
        self.lowers = lower if isinstance(lower, list) else [lower]
        self.dir = Path(tempfile.mkdtemp(prefix=f"mss-{suite}-{scenario}-"))
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
            self.stop()
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.failed = exc_type is not None
        self.stop()

    def start(self) -> None:
        for sub in ("upper", "work", "root"):
            (self.dir / sub).mkdir(exist_ok=True)
        # Files written to the upper layer before the overlay is mounted appear in the root.
        self.put_file(INROOT / "policy-rc.d", "/usr/sbin/policy-rc.d", 0o755)
        self.put_text("/etc/hostname", "mss-test\n")  # nsinit.py sets it
        self.put_text("/etc/hosts", HOSTS)
        for path in sorted(INROOT.iterdir()):
            if path.is_file() and path.name != "policy-rc.d":
                self.put_file(path, f"{HELPERS}/{path.name}", 0o755)
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
        if self.pid1:
            _kill(self.pid1)  # the kernel then kills every process of the PID namespace
        if self.holder is not None:
            try:
                self.holder.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.holder.pid, signal.SIGKILL)
                self.holder.wait()
        # Every mount lived in the namespace, which is gone: only plain files remain.
        if KEEP and self.failed:
            print(f"[{self.label}] kept {self.dir} (MSS_KEEP_ROOTS=1)")
        else:
            shutil.rmtree(self.dir, ignore_errors=True)

    def keep_as_layer(self, dest: Path) -> None:
        """Stop the namespace and keep this root's changes (its upper layer) at DEST, to be
        a lower layer of later roots.  Stop its services cleanly first."""
        pid1, self.pid1 = self.pid1, 0
        _kill(pid1)
        if self.holder is not None:
            self.holder.wait(timeout=30)
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
        target = str(self.pid1)
        nsargs = ["--mount", "--pid", "--ipc", "--uts"]
        if net:
            nsargs.append(f"--net=/proc/{self.extra_netns[net]}/ns/net")
        else:
            nsargs.append("--net")
        return [
            "nsenter",
            f"--target={target}",
            *nsargs,
            "--",
            "chroot",
            str(self.merged),
            "/usr/bin/env",
            "-i",
            *[f"{k}={v}" for k, v in environ.items()],
            *argv,
        ]

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


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
