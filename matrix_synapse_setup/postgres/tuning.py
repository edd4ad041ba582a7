"""PostgreSQL settings that suit Synapse, for the local cluster, in a drop-in we own.

The drop-in is ``/etc/postgresql/<version>/<cluster>/conf.d/00-matrix-synapse-setup.conf``:
sized from this machine's memory (and its cgroup's limit) and storage, pgtune-style
for an OLTP ("web") load, which is what Synapse puts on PostgreSQL.  fsync,
full_page_writes and synchronous_commit are never written: speed is not bought
with the safety of the data.

Where it sits in PostgreSQL's reading order (later wins):

1. ``postgresql.conf`` itself; Debian's ends with ``include_dir = 'conf.d'``, so
   *every* file in conf.d overrides it.  That includes values an admin set there
   (initdb writes ``shared_buffers = 128MB``, ``max_wal_size = 1GB`` ... there,
   which we must override to do anything at all): the drop-in's header says so.
2. ``conf.d/*.conf`` in name (byte) order.  Ours is named ``00-...`` so that it
   comes first: an admin's own file there (``tuning.conf``, ``50-local.conf``)
   sorts after it and wins, without the admin having to know about us.
3. ``postgresql.auto.conf`` (ALTER SYSTEM): wins over everything above.

No third-party module at import time: this module is on the maintainer scripts' hot path.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from matrix_synapse_setup.core.paths import POSTGRESQL_SOCKET_DIR
from matrix_synapse_setup.core.steps import CHANGED, CREATED, UNCHANGED, Step
from matrix_synapse_setup.files.atomic import Ownership, current_text, write_atomic
from matrix_synapse_setup.postgres.budget import DEFAULT_MAX_CONNECTIONS

# Sorts before any name an admin is likely to give (letters, or "10-"...), so that
# the admin's own conf.d files win over ours; see the module docstring.
DROPIN_NAME = "00-matrix-synapse-setup.conf"
ETC = Path("/etc/postgresql")
DEFAULT_PORT = 5432
WHAT = "PostgreSQL settings for Synapse"

MB = 1024**2
GB = 1024**3

# Our snippet gives Synapse a pool of cp_max 10 per process.  The cluster's max_connections
# is left at Debian's 100 unless the connection budget (budget.py: the main process and its
# workers) needs more; work_mem is sized for whichever applies.
MAX_CONNECTIONS = DEFAULT_MAX_CONNECTIONS
# max_worker_processes (needs its own restart, default 8) is left alone: parallel
# workers are taken from it.
MAX_WORKER_PROCESSES = 8


# --- how much memory, which storage ------------------------------------------------


def _meminfo_total(meminfo: Path) -> int:
    for line in meminfo.read_text(encoding="ascii", errors="replace").splitlines():
        if line.startswith("MemTotal:"):
            value, _, unit = line.split(":", 1)[1].strip().partition(" ")
            return int(value) * (1024 if unit.strip().lower() == "kb" else 1)
    raise ValueError(f"no MemTotal in {meminfo}")


def _cgroup_limit(path: Path) -> int | None:
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    if not text.isdigit():  # "max": no limit
        return None
    value = int(text)
    # cgroup v1 says "no limit" with a huge number (PAGE_COUNTER_MAX pages).
    return value if value < 1 << 62 else None


def machine_memory(
    meminfo: Path = Path("/proc/meminfo"),
    cgroup: Path = Path("/proc/self/cgroup"),
    cgroup_root: Path = Path("/sys/fs/cgroup"),
) -> int:
    """Bytes of memory this machine (or container) has: MemTotal, or less when our
    cgroup or one of its ancestors has a lower limit (cgroup v2 ``memory.max``; v1's
    ``memory.limit_in_bytes`` on a hybrid system).  A limit set on PostgreSQL's own
    unit (MemoryMax=) is not seen: that is another cgroup."""
    memory = _meminfo_total(meminfo)
    try:
        lines = cgroup.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return memory
    candidates: list[tuple[Path, str]] = []
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            candidates.append((cgroup_root, path))  # v2, mounted at the root
        elif "memory" in controllers.split(","):
            candidates.append((cgroup_root / "memory", path))  # v1 memory controller
    for base, path in candidates:
        name = "memory.max" if base == cgroup_root else "memory.limit_in_bytes"
        parts = [p for p in path.split("/") if p and p not in (".", "..")]
        # Our cgroup and every ancestor: a container's limit is usually on one of them.
        for depth in range(len(parts), -1, -1):
            limit = _cgroup_limit(base.joinpath(*parts[:depth], name))
            if limit is not None and limit > 0:
                memory = min(memory, limit)
    return memory


# Drivers whose queue/rotational says nothing about the medium: virtio-blk cannot be
# told by the host whether its backing store spins, and Linux then assumes it does.
_UNINFORMED_DRIVERS = frozenset({"virtio_blk"})


def _disk_rotational(device: Path, sysfs: Path, depth: int = 0) -> bool | None:
    """Whether the block device whose sysfs directory is *device* is rotational."""
    if depth > 8 or not device.is_dir():
        return None
    if (device / "partition").exists():
        device = device.parent  # a partition: its disk knows
    slaves = sorted((device / "slaves").glob("*")) if (device / "slaves").is_dir() else []
    if slaves:
        # device-mapper, md: rotational when any member is, SSD when all are.
        answers = [
            _disk_rotational((sysfs / "class" / "block" / s.name).resolve(), sysfs, depth + 1)
            for s in slaves
        ]
        if any(a is True for a in answers):
            return True
        return False if answers and all(a is False for a in answers) else None
    if "/devices/virtual/" in str(device):
        return None  # loop, zram, ram, nbd ...: no medium of its own
    try:
        flag = (device / "queue" / "rotational").read_text(encoding="ascii").strip()
    except OSError:
        return None
    if flag == "0":
        return False
    driver = device / "device" / "driver"
    if driver.exists() and driver.resolve().name in _UNINFORMED_DRIVERS:
        return None
    return True if flag == "1" else None


def block_rotational(major: int, minor: int, sysfs: Path = Path("/sys")) -> bool | None:
    """Whether block device MAJ:MIN (a disk, a partition, dm or md) is rotational;
    None when unknown."""
    link = sysfs / "dev" / "block" / f"{major}:{minor}"
    if not link.exists():
        return None
    return _disk_rotational(link.resolve(), sysfs)


def _mount_source(path: str, mountinfo: Path) -> str | None:
    """The source device (/dev/...) of the mount that holds *path*."""
    try:
        lines = mountinfo.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    best, source = "", None
    for line in lines:
        fields = line.split(" ")
        if "-" not in fields:
            continue
        sep = fields.index("-")
        if len(fields) < sep + 3 or len(fields) < 5:
            continue
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), fields[4])
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, source = point, fields[sep + 2]
    return source if source and source.startswith("/dev/") else None


def rotational(
    data_directory: str | os.PathLike[str],
    *,
    sysfs: Path = Path("/sys"),
    mountinfo: Path = Path("/proc/self/mountinfo"),
) -> bool | None:
    """Whether the cluster's data directory is on a rotating disk; None when that is
    unknown (tmpfs, overlay, loop, virtio-blk, a missing directory ...)."""
    try:
        st = os.stat(data_directory)
    except OSError:
        return None
    major, minor = os.major(st.st_dev), os.minor(st.st_dev)
    if (sysfs / "dev" / "block" / f"{major}:{minor}").exists():
        return block_rotational(major, minor, sysfs)
    # btrfs and the like report an anonymous device (0:N): ask the mount's source.
    source = _mount_source(os.path.realpath(data_directory), mountinfo)
    if source is None:
        return None
    try:
        rdev = os.stat(source).st_rdev
    except OSError:
        return None
    if not rdev:
        return None
    return block_rotational(os.major(rdev), os.minor(rdev), sysfs)


# --- what to set ---------------------------------------------------------------------


class Machine(NamedTuple):
    memory: int  # bytes
    cores: int
    rotational: bool | None  # None: unknown, taken as SSD (what servers have today)
    max_connections: int = MAX_CONNECTIONS  # what the cluster will run with

    @property
    def shared_buffers(self) -> int:
        return _clamp(self.memory // 4, 128 * MB, 8 * GB)


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))


def size(value: int) -> str:
    """*value* bytes as a postgresql.conf size: whole MB (rounded down), GB when whole."""
    mb = max(1, value // MB)
    return f"{mb // 1024}GB" if mb % 1024 == 0 else f"{mb}MB"


class Rule(NamedTuple):
    name: str
    value: Callable[[Machine], str]
    reason: str


# The whole recommendation, one line each.  Never fsync, full_page_writes,
# synchronous_commit: those trade data for speed.
RULES: tuple[Rule, ...] = (
    Rule("shared_buffers", lambda m: size(m.shared_buffers),
         "PostgreSQL's own cache: a quarter of memory (128MB..8GB; the OS caches the rest)"),
    Rule("effective_cache_size", lambda m: size(m.memory * 3 // 4),
         "planner hint, nothing allocated: shared_buffers plus the OS cache, ~3/4 of memory"),
    Rule("maintenance_work_mem", lambda m: size(_clamp(m.memory // 16, 64 * MB, GB)),
         "VACUUM and CREATE INDEX (Synapse's background updates build big indexes)"),
    Rule("work_mem",
         lambda m: size(_clamp((m.memory - m.shared_buffers) // (m.max_connections * 3),
                               4 * MB, 64 * MB)),
         "per sort/hash, several per query: what is left over max_connections x 3 (4MB..64MB)"),
    Rule("wal_buffers", lambda m: "16MB",
         "the most that helps; the default (1/32 of shared_buffers) stops at 16MB anyway"),
    Rule("checkpoint_completion_target", lambda m: "0.9",
         "spread checkpoint writes over the interval instead of bursts"),
    Rule("min_wal_size", lambda m: "1GB",
         "keep WAL segments for reuse instead of recreating them after each checkpoint"),
    Rule("max_wal_size", lambda m: "4GB",
         "fewer forced checkpoints when Synapse writes a lot (joins of big rooms, purges)"),
    Rule("random_page_cost", lambda m: "4" if m.rotational else "1.1",
         "random reads cost about what sequential ones do, except on a spinning disk"),
    Rule("effective_io_concurrency", lambda m: "2" if m.rotational else "200",
         "prefetch depth for bitmap heap scans: SSDs serve many reads at once, disks few"),
    Rule("default_statistics_target", lambda m: "100",
         "the planner's sample size, pgtune's value for OLTP (and PostgreSQL's default)"),
    Rule("jit", lambda m: "off",
         "Synapse's queries are short OLTP queries: JIT compiling costs more than it saves"),
    Rule("max_parallel_workers_per_gather", lambda m: str(_clamp(m.cores // 2, 1, 4)),
         "at most half the cores for one query, the rest keep serving other requests"),
    Rule("max_parallel_workers",
         lambda m: str(_clamp(m.cores, 1, MAX_WORKER_PROCESSES)),
         "no more parallel workers in all than there are cores"),
    Rule("max_parallel_maintenance_workers", lambda m: str(_clamp(m.cores // 2, 1, 4)),
         "CREATE INDEX in parallel, half the cores at most"),
)  # fmt: skip

NEVER = frozenset({"fsync", "full_page_writes", "synchronous_commit"})


def recommended(
    memory: int, cores: int, rotational: bool | None, max_connections: int | None = None
) -> dict[str, str]:
    """The PostgreSQL settings (postgresql.conf values, with units) for a cluster that
    serves Synapse on a machine with *memory* bytes and *cores* cores.

    *max_connections*: what the connection budget needs (budget.needed_max_connections).
    Written only when it is more than Debian's 100, which the cluster otherwise keeps
    (an admin's own value, in postgresql.conf, is then left alone); work_mem is sized for
    it.  It applies at PostgreSQL's next restart only (apply() says so)."""
    wanted = max_connections if max_connections and max_connections > MAX_CONNECTIONS else None
    machine = Machine(
        memory=memory,
        cores=max(1, cores),
        rotational=rotational,
        max_connections=wanted or MAX_CONNECTIONS,
    )
    values = {rule.name: rule.value(machine) for rule in RULES}
    if wanted is not None:
        values["max_connections"] = str(wanted)
    if NEVER & values.keys():  # pragma: no cover - a table edit gone wrong
        raise AssertionError(f"tuning must not set {sorted(NEVER & values.keys())}")
    return values


def storage_text(rotational: bool | None) -> str:
    if rotational is None:
        return "unknown, taken as SSD"
    return "rotating disk" if rotational else "SSD"


def memory_text(memory: int) -> str:
    if memory < GB:
        return f"{memory // MB} MiB"
    return f"{memory / GB:.1f} GiB"


# --- postgresql.conf syntax ----------------------------------------------------------

_NAME = r"[A-Za-z_][A-Za-z0-9_.]*"
_QUOTED = r"'(?:[^'\\\n]|\\.|'')*'"
_LINE = re.compile(rf"^\s*(?P<name>{_NAME})\s*=?\s*(?P<value>{_QUOTED}|[^\s#']+)\s*(?:#.*)?$")
_NAME_RE = re.compile(_NAME)
_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


def _unquote(value: str) -> str:
    """A postgresql.conf value as PostgreSQL reads it (GUC_scanstr)."""
    if not (len(value) >= 2 and value[0] == value[-1] == "'"):
        return value
    body, out, i = value[1:-1], [], 0
    while i < len(body):
        ch = body[i]
        if ch == "\\" and i + 1 < len(body):
            nxt = body[i + 1]
            octal = re.match(r"[0-7]{1,3}", body[i + 1 :])
            if octal:
                out.append(chr(int(octal[0], 8)))
                i += 1 + len(octal[0])
                continue
            out.append(_ESCAPES.get(nxt, nxt))
            i += 2
        elif ch == "'" and body[i + 1 : i + 2] == "'":
            out.append("'")
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def quote(value: str) -> str:
    """*value* as a quoted postgresql.conf string that PostgreSQL reads back as it is."""
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise ValueError(f"a control character in a postgresql.conf value: {value!r}")
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def parse_lines(text: str) -> list[tuple[str, str]]:
    """Every ``name = value`` in a postgresql.conf text, in order (names lower-cased,
    as PostgreSQL's are case-insensitive; values unquoted).  Lines PostgreSQL would
    refuse are skipped."""
    pairs = []
    for line in text.splitlines():
        found = _LINE.match(line)
        if found:
            pairs.append((found["name"].lower(), _unquote(found["value"])))
    return pairs


def parse_conf(text: str) -> dict[str, str]:
    """The settings of a postgresql.conf text: the last assignment of a name wins.
    Include directives are not followed (see effective_settings)."""
    return dict(parse_lines(text))


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def _conf_dir_files(directory: Path) -> list[Path]:
    """The files include_dir reads: *.conf, not hidden, in byte order of their names."""
    try:
        names = [p.name for p in directory.iterdir()]
    except OSError:
        return []
    chosen = [n for n in names if n.endswith(".conf") and not n.startswith(".")]
    return [directory / n for n in sorted(chosen, key=lambda n: n.encode())]


def effective_settings(conffile: Path, _depth: int = 0) -> list[tuple[str, str, Path]]:
    """Every assignment PostgreSQL reads from *conffile*, with its includes followed
    where they stand, in order: (name, value, file)."""
    text = _read(conffile)
    if text is None or _depth > 10:
        return []
    out: list[tuple[str, str, Path]] = []
    for name, value in parse_lines(text):
        if name in ("include", "include_if_exists", "include_dir"):
            target = Path(value)
            if not target.is_absolute():
                target = conffile.parent / target
            files = _conf_dir_files(target) if name == "include_dir" else [target]
            for included in files:
                out += effective_settings(included, _depth + 1)
            out.append((name, str(target), conffile))
        else:
            out.append((name, value, conffile))
    return out


# --- the local clusters ---------------------------------------------------------------


class Cluster(NamedTuple):
    version: str
    name: str
    confdir: Path
    port: int
    data_directory: Path
    includes_conf_d: bool  # postgresql.conf has include_dir = 'conf.d' (Debian's default)
    socket_dir: str = POSTGRESQL_SOCKET_DIR

    @property
    def label(self) -> str:
        return f"{self.version}/{self.name}"

    @property
    def conffile(self) -> Path:
        return self.confdir / "postgresql.conf"

    @property
    def dropin(self) -> Path:
        return self.confdir / "conf.d" / DROPIN_NAME

    @property
    def unit(self) -> str:
        return f"postgresql@{self.version}-{self.name}.service"


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) if p.isdigit() else -1 for p in version.split("."))


def read_cluster(confdir: Path) -> Cluster | None:
    """The cluster configured in *confdir* (Debian's /etc/postgresql/VERSION/NAME)."""
    conffile = confdir / "postgresql.conf"
    assignments = effective_settings(conffile)
    if not assignments and not conffile.is_file():
        return None
    version, name = confdir.parent.name, confdir.name
    settings = {n: v for n, v, _ in assignments}
    data_directory = Path(settings.get("data_directory") or f"/var/lib/postgresql/{version}/{name}")
    # ALTER SYSTEM's file is read last, and may move the port.
    auto = _read(data_directory / "postgresql.auto.conf")
    if auto:
        settings |= parse_conf(auto)
    conf_d = (confdir / "conf.d").resolve()
    includes = any(
        n == "include_dir" and Path(v).resolve() == conf_d and where == conffile
        for n, v, where in assignments
    )
    try:
        port = int(settings.get("port", DEFAULT_PORT))
    except ValueError:
        return None
    sockets = [s.strip() for s in settings.get("unix_socket_directories", "").split(",")]
    socket_dir = next((s for s in sockets if s.startswith("/")), POSTGRESQL_SOCKET_DIR)
    return Cluster(version, name, confdir, port, data_directory, includes, socket_dir)


def postmaster(cluster: Cluster) -> int | None:
    """The pid of the cluster's running postmaster, None when it is down."""
    text = _read(cluster.data_directory / "postmaster.pid")
    first = (text or "").split("\n", 1)[0].strip()
    if not first.isdigit():
        return None
    try:
        os.kill(int(first), 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # it runs, as another user
    return int(first)


def clusters(etc: Path = ETC) -> list[Cluster]:
    """Every cluster in Debian's layout, newest version first."""
    found = []
    for conffile in etc.glob("*/*/postgresql.conf"):
        cluster = read_cluster(conffile.parent)
        if cluster is not None:
            found.append(cluster)
    found.sort(key=lambda c: c.name)
    found.sort(key=lambda c: _version_key(c.version), reverse=True)
    return found


def cluster_for_port(
    port: int, etc: Path = ETC, *, socket_dir: str | None = None
) -> Cluster | None:
    """The local cluster that listens on *port* (and, when Synapse connects over a Unix
    socket, has its socket in *socket_dir*: another directory is another cluster's); of
    two on one port (only one can run), the running one, else the newest version.  No
    pg_lsclusters: it is slow Perl."""
    matching = [c for c in clusters(etc) if c.port == port]
    if socket_dir is not None:
        wanted = os.path.realpath(socket_dir)
        matching = [c for c in matching if os.path.realpath(c.socket_dir) == wanted]
    running = [c for c in matching if postmaster(c) is not None]
    return (running or matching or [None])[0]


def cluster_exists(confdir: Path) -> bool:
    """Whether postgresql-common counts *confdir* as a cluster: it has a postgresql.conf
    (a dangling symbolic link counts too, as in PgCommon's get_version_clusters)."""
    conffile = confdir / "postgresql.conf"
    return conffile.exists() or conffile.is_symlink()


def orphaned_dropins(etc: Path = ETC) -> tuple[Path, ...]:
    """Our drop-ins in a cluster directory whose cluster is gone (pg_dropcluster keeps a
    conf.d that is not empty, and with it the version's directory).  One glob: this runs
    on every configure."""
    found = etc.glob(f"*/*/conf.d/{DROPIN_NAME}")
    return tuple(sorted(path for path in found if not cluster_exists(path.parent.parent)))


def remove_orphan(path: Path) -> list[str]:
    """Remove our drop-in *path* of a cluster that is gone, then the directories it kept
    alive (conf.d, the cluster's, the version's) when they are empty; nothing else.
    What was removed, in order."""
    if cluster_exists(path.parent.parent):
        return []  # the cluster came back since we looked: its drop-in is current business
    removed = []
    if remove(path).outcome == CHANGED:
        removed.append(str(path))
    for directory in (path.parent, path.parent.parent, path.parent.parent.parent):
        try:
            directory.rmdir()
        except OSError:
            break  # not empty (or gone): it is not ours to remove, nor its parents
        removed.append(str(directory))
    return removed


# --- the drop-in --------------------------------------------------------------------


def render(values: dict[str, str], *, memory: int, rotational: bool | None) -> str:
    """The drop-in's text for *values* (from recommended())."""
    for name in values:
        if not _NAME_RE.fullmatch(name) or name.lower() in NEVER:
            raise ValueError(f"not a setting this drop-in may write: {name!r}")
    header = (
        "# Managed by matrix-synapse-setup: PostgreSQL settings for Synapse, sized for\n"
        f"# this machine (memory {memory_text(memory)}, storage {storage_text(rotational)}).\n"
        "# They override postgresql.conf, which is read before conf.d. Files in conf.d\n"
        "# that sort after this one, and ALTER SYSTEM, override them: put your own\n"
        "# values there, as this file is rewritten whenever the package is configured.\n"
        "# fsync, full_page_writes and synchronous_commit are not touched.\n"
        "# To undo: answer no to 'dpkg-reconfigure matrix-synapse-setup', or delete this\n"
        "# file and restart PostgreSQL (systemctl restart postgresql).\n"
    )
    body = "".join(f"{name} = {quote(values[name])}\n" for name in sorted(values))
    return header + body


def configured_max_connections(cluster: Cluster) -> int | None:
    """The max_connections the cluster's configuration sets apart from our drop-in
    (postgresql.conf, the other files of conf.d, ALTER SYSTEM); None when none does."""
    found = None
    for name, value, where in effective_settings(cluster.conffile):
        if name == "max_connections" and where != cluster.dropin:
            found = value
    auto = _read(cluster.data_directory / "postgresql.auto.conf")
    found = parse_conf(auto or "").get("max_connections", found)
    return int(found) if found is not None and found.strip().isdigit() else None


def text_for(cluster: Cluster, max_connections: int | None = None) -> str:
    """The drop-in this machine calls for: its memory, cores, and the storage under the
    cluster's data directory; *max_connections* as recommended() takes it, unless the
    cluster's own configuration already sets as many or more (ours would lower it)."""
    if max_connections is not None and max_connections > MAX_CONNECTIONS:
        # Read only when ours would be written: parsing postgresql.conf is not free, and
        # every configure (an unchanged one too) comes here.
        own = configured_max_connections(cluster)
        if own is not None and own >= max_connections:
            max_connections = None
    memory = machine_memory()
    disk = rotational(cluster.data_directory)
    values = recommended(memory, os.cpu_count() or 1, disk, max_connections)
    return render(values, memory=memory, rotational=disk)


def dropin_max_connections(text: str | None) -> int | None:
    """The max_connections a drop-in's *text* sets (None: none, or not a number)."""
    value = parse_conf(text or "").get("max_connections", "")
    return int(value) if value.isdigit() else None


def current(cluster: Cluster, wanted: bool, max_connections: int | None = None) -> bool:
    """True when ensure()/remove() would change nothing (reads only)."""
    if not wanted:
        return not cluster.dropin.exists()
    if not cluster.includes_conf_d:
        return True  # ensure() skips it
    try:
        return cluster.dropin.read_text(encoding="utf-8") == text_for(cluster, max_connections)
    except (OSError, UnicodeDecodeError):
        return False


def ensure(path: Path, text: str) -> Step:
    """Put *text* (from render()) in the drop-in *path* when it differs.  Run in the
    superuser child, whose uid is postgres: the file is postgres's, 0644 (nothing
    secret), like the rest of the cluster's configuration that postgresql-common makes.
    The test-only crash point ``before-rename`` stays on the files that hold Synapse's
    connection (core/faults.py)."""
    before = current_text(path)
    if before == text:
        return Step(WHAT, UNCHANGED, str(path))
    owner = Ownership(os.geteuid(), os.getegid(), 0o644)
    write_atomic(path, text, owner, crash_point=None)
    return Step(WHAT, CREATED if before is None else CHANGED, str(path))


def remove(path: Path) -> Step:
    """Remove the drop-in *path* (and a leftover temporary file of ours)."""
    for leftover in path.parent.glob(f".{path.name}.*.tmp"):
        leftover.unlink(missing_ok=True)
    try:
        path.unlink()
    except FileNotFoundError:
        return Step(WHAT, UNCHANGED, f"no {path}")
    return Step(WHAT, CHANGED, f"removed {path}")


# The settings PostgreSQL read from our file and did not apply: with a postmaster
# context, they wait for a restart; any other is an error (a name or value refused).
NOT_APPLIED = (
    "SELECT f.name, s.context FROM pg_file_settings f LEFT JOIN pg_settings s USING (name)"
    " WHERE f.sourcefile = %s AND NOT f.applied ORDER BY f.seqno"
)


def apply(conn: Any, request: dict[str, Any], others: list[str]) -> dict[str, Any]:
    """In the superuser child, on its connection as ``postgres`` (autocommit): write or
    remove the drop-in as *request* says, and when it changed, reload PostgreSQL
    (``pg_reload_conf()``: everything that can change live applies now) and ask it
    what it made of the file.  PostgreSQL is never restarted here: shared_buffers and
    wal_buffers apply at its next restart, which stays the admin's to choose (it cuts
    every connection of every database).  A file PostgreSQL refuses is removed again.

    *request*: path, text (None: remove), only_if_alone (the template's default: not
    for a cluster that holds *others*).  The answer: step, pending (names), refused
    (names), skipped_for (the other databases)."""
    path = Path(request["path"])
    text = request["text"]
    if text is not None and request["only_if_alone"] and others and not path.exists():
        return {"skipped_for": others}
    step = ensure(path, text) if text is not None else remove(path)
    answer: dict[str, Any] = {"step": step._asdict(), "pending": [], "refused": []}
    if step.outcome not in (CREATED, CHANGED):
        return answer
    conn.execute("SELECT pg_reload_conf()")
    if text is None:
        return answer
    for name, context in conn.execute(NOT_APPLIED, (str(path),)).fetchall():
        answer["pending" if context == "postmaster" else "refused"].append(name)
    if answer["refused"]:
        remove(path)
        conn.execute("SELECT pg_reload_conf()")
    return answer
