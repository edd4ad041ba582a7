"""Move a Synapse that runs on SQLite to PostgreSQL with upstream's own port tool.

Nothing here copies rows itself: ``synapse_port_db`` from the installed Synapse does.  This
module makes it safe around the port tool:

1. the target database is empty, or holds an earlier, unfinished port of ours (the port
   tool's ``port_from_sqlite3`` table): never a database another Synapse filled;
2. the port tool reads a consistent snapshot (SQLite's online backup API), never the live
   file; it runs as Synapse's user with a 0600 configuration file, the password on no
   command line;
3. two phases when Synapse runs: a first port while it serves, then Synapse is stopped
   (``deb-systemd-invoke``/``invoke-rc.d``, honouring ``policy-rc.d``), a second snapshot
   is ported (the port tool resumes: append-only tables carry on, the others are copied
   again), so the downtime is the second phase only.  A running Synapse finishes its
   pending background updates (which the port tool refuses) by itself, so the port waits
   for them; a stopped one cannot, so upstream's ``update_synapse_database`` runs them on
   the final snapshot, as Synapse's user, before it is ported;
4. the row counts of key tables must match between the final snapshot and PostgreSQL;
5. only then the switch (the caller writes the snippet), and Synapse starts again if it ran;
6. the old file stays where it is, and a copy goes to /var/backups/matrix-synapse-setup.

Before anything changes, the free space is checked (the postinst's inspection measures
it with port_space and its plan refuses with refuse_short; the migrate command calls
check_space): PostgreSQL's data directory needs up to twice the SQLite file (Synapse's
porting guide), the work directory two snapshots.

On any failure before the switch, Synapse stays on SQLite with all its data and is
started again if it ran; the message names the log and the command that retries.  A
crash is covered too: whether Synapse ran is kept in a state file until the switch, so the
retry (``dpkg --configure -a``) knows whether to start it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pwd
import re
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from matrix_synapse_setup.core import messages
from matrix_synapse_setup.core.errors import SetupError
from matrix_synapse_setup.core.faults import fault
from matrix_synapse_setup.core.output import say
from matrix_synapse_setup.core.paths import (
    BACKUP_DIR,
    STATE_DIR,
    SYNAPSE_ETC,
    SYNAPSE_USER,
    SYSTEM_PATH,
)
from matrix_synapse_setup.core.settings import Settings
from matrix_synapse_setup.core.steps import CHANGED, OK, Step
from matrix_synapse_setup.core.yamlload import safe_dump
from matrix_synapse_setup.files import space
from matrix_synapse_setup.files.atomic import private_dir
from matrix_synapse_setup.postgres import tuning
from matrix_synapse_setup.postgres.provision import connect_as_role
from matrix_synapse_setup.postgres.queries import import_psycopg
from matrix_synapse_setup.synapse import service as services
from matrix_synapse_setup.synapse.config import SqliteFacts, human_size, table_counts

PORT_TOOLS = (
    Path("/opt/venvs/matrix-synapse/bin/synapse_port_db"),  # upstream's matrix-synapse-py3
    Path("/usr/bin/synapse_port_db"),  # Debian's matrix-synapse
)
# Runs a database's pending background updates without starting the homeserver; each
# package ships it beside its port tool.
UPDATE_TOOLS = (
    Path("/opt/venvs/matrix-synapse/bin/update_synapse_database"),
    Path("/usr/bin/update_synapse_database"),
)
# Lines after which update_synapse_database never exits by itself: its background
# process failed, and nothing stops its reactor.
UPDATES_ABORTED = (
    "background update failures; aborting",
    "Background process 'background_updates' threw an exception",
)
WORKDIR = STATE_DIR / "migration"
STATE_FILE = STATE_DIR / "migration.json"
LOG_DIR = Path("/var/log/matrix-synapse-setup")
# Compared between the SQLite snapshot and PostgreSQL after the port.
KEY_TABLES = (
    "users",
    "rooms",
    "events",
    "event_json",
    "state_groups",
    "state_groups_state",
    "room_memberships",
    "current_state_events",
    "event_edges",
    "access_tokens",
    "devices",
    "receipts_linearized",
)
PORT_TABLE = "port_from_sqlite3"
RETRY = "dpkg-reconfigure matrix-synapse-setup (or: matrix-synapse-setup migrate)"
PROGRESS_RE = re.compile(r"^(\w+): (\d+)% \((\d+)/(\d+)\)$")

# How long to wait for a running Synapse's pending background updates, in seconds.
UPDATES_WAIT = 900
UPDATES_WAIT_ENV = "MATRIX_SYNAPSE_SETUP_UPDATES_WAIT"


class MigrationFailed(SetupError):
    """The port did not complete: Synapse stays on SQLite."""


def find_port_tool() -> Path:
    for tool in PORT_TOOLS:
        if os.access(tool, os.X_OK):
            return tool
    raise MigrationFailed(
        messages.PORT_TOOL_MISSING.format(paths=" or ".join(map(str, PORT_TOOLS)))
    )


def find_update_tool() -> Path | None:
    """Upstream's update_synapse_database next to the installed port tool, else the other
    package's; None when neither is there."""
    for tool in UPDATE_TOOLS:
        if os.access(tool, os.X_OK):
            return tool
    return None


# --- free space -------------------------------------------------------------------------
# PostgreSQL may need up to twice the SQLite file's size (Synapse's porting guide).  At
# most two snapshots lie in the work directory at once (the copy the target reflects and
# the next one; a stopped Synapse's one snapshot grows by its background updates).
TARGET_FACTOR = 2
SNAPSHOT_FACTOR = 2


def sqlite_size(live: Path) -> int:
    """The SQLite file's bytes with its write-ahead log: what a snapshot copies."""
    size = 0
    for path in (live, live.with_name(live.name + "-wal")):
        with contextlib.suppress(OSError):
            size += path.stat().st_size
    return size


class PortSpace(NamedTuple):
    """What a port of a SQLite file of *size* bytes needs where (read by port_space)."""

    size: int
    needs: tuple[space.Need, ...]


def port_space(facts: SqliteFacts, settings: Settings) -> PortSpace:
    """Measure the filesystems a port writes to: the work directory of the snapshots, and
    the data directory of the local cluster *settings* reach (a remote server's is not
    ours to see)."""
    size = sqlite_size(facts.path)
    needs = [space.measure("the migration's work directory", WORKDIR, SNAPSHOT_FACTOR * size)]
    cluster = (
        tuning.cluster_for_port(settings.port, socket_dir=settings.socket_dir)
        if settings.local
        else None
    )
    if cluster is not None:
        needs.append(
            space.measure(
                "PostgreSQL's data directory", cluster.data_directory, TARGET_FACTOR * size
            )
        )
    return PortSpace(size, tuple(needs))


def refuse_short(path: Path, found: PortSpace) -> None:
    """Refuse, before anything changed, a port of *path* that would fill a filesystem."""
    short = space.shortages(list(found.needs))
    if not short:
        return
    lines = []
    for group, free, need in short:
        where = " and ".join(f"{p.what} {p.path}" for p in group)
        parts = ", ".join(f"{human_size(p.need)} for {p.what}" for p in group)
        lines.append(
            messages.NO_SPACE_THERE.format(
                where=where, free=human_size(free), need=human_size(need), parts=parts
            )
        )
    raise MigrationFailed(
        messages.NO_SPACE_TO_PORT.format(
            path=path, size=human_size(found.size), short="; ".join(lines), retry=RETRY
        )
    )


def check_space(facts: SqliteFacts, settings: Settings) -> None:
    """port_space, then refuse_short: for the migrate command, which has no plan."""
    refuse_short(facts.path, port_space(facts, settings))


# --- the target ---------------------------------------------------------------------------


def public_tables(conn: Any) -> set[str]:
    rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    return {row[0] for row in rows.fetchall()}


def target_state(settings: Settings) -> tuple[int, bool]:
    """(tables in the target's public schema, whether one is the port tool's own)."""
    with connect_as_role(settings) as conn:
        tables = public_tables(conn)
    return len(tables), PORT_TABLE in tables


def check_target(settings: Settings) -> Step:
    """The target must be empty or an unfinished port of ours; never another Synapse's."""
    count, ours = target_state(settings)
    if count and not ours:
        raise SetupError(messages.TARGET_NOT_EMPTY.format(dbname=settings.dbname, tables=count))
    detail = "empty" if not count else "an unfinished port, resumed"
    return Step(f"target database {settings.dbname}", OK, detail)


# The port tool copies "append-only" tables only from the SQLite rowid where its last run
# stopped (its port_from_sqlite3 table), and never reads the earlier rows again: a row
# that changed in SQLite since then (a new password, a redaction, a purge) would keep its
# old content in PostgreSQL.  So we keep the snapshot the target reflects (PORTED, valid
# only after a run that completed), compare it with the next snapshot, and make the port
# tool copy again, in full, every table whose already-copied rows changed.  Without a
# valid PORTED, an unfinished target is cleaned and copied from scratch.
PORTED = WORKDIR / "ported.db"


def append_only_tables(tool: Path) -> set[str] | None:
    """The tables the port tool resumes, from the port tool itself; None if unknown."""
    python = tool.parent / "python3"
    code = "from synapse._scripts.synapse_port_db import APPEND_ONLY_TABLES as t; print(*t)"
    try:
        proc = subprocess.run(
            [str(python), "-c", code], capture_output=True, text=True, timeout=120, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return set(proc.stdout.split()) if proc.returncode == 0 and proc.stdout.strip() else None


def changed_tables(ported: Path, new: Path, tables: list[str]) -> list[str]:
    """Tables of *tables* whose rows in the snapshot *ported* are not all, unchanged,
    in the snapshot *new* (changed, deleted, or another schema)."""
    conn = sqlite3.connect(f"file:{new}?mode=ro", uri=True)
    try:
        conn.execute("ATTACH DATABASE ? AS ported", (f"file:{ported}?mode=ro",))
        changed = []
        for table in tables:
            columns = [
                conn.execute(f'PRAGMA {db}.table_info("{table}")').fetchall()
                for db in ("main", "ported")
            ]
            if not columns[0] or columns[0] != columns[1]:
                changed.append(table)
                continue
            # Names from the target's port_from_sqlite3, checked against both schemas.
            query = f'SELECT 1 FROM (SELECT * FROM ported."{table}" EXCEPT SELECT * FROM main."{table}") LIMIT 1'  # noqa: S608, E501
            if conn.execute(query).fetchone():
                changed.append(table)
        return changed
    finally:
        conn.close()


def ported_tables(settings: Settings) -> list[str]:
    """Tables the port tool would resume (it has copied some of their rows)."""
    with connect_as_role(settings) as conn:
        rows = conn.execute(
            "SELECT table_name FROM port_from_sqlite3 WHERE forward_rowid > 1 OR backward_rowid < 0"
        ).fetchall()
    return [row[0] for row in rows]


def reset_tables(settings: Settings, tables: list[str]) -> list[str]:
    """Make the port tool copy *tables* again in full: empty them (and the tables that
    reference them) and forget their progress.  Returns every table reset."""
    psycopg = import_psycopg()
    sql = psycopg.sql
    with connect_as_role(settings) as conn:
        existing = public_tables(conn)
        todo = [t for t in tables if t in existing]
        every = set(todo)
        while todo:  # tables that reference them, through foreign keys, transitively
            rows = conn.execute(
                "SELECT DISTINCT c.conrelid::regclass::text FROM pg_constraint c"
                " WHERE c.contype = 'f' AND c.confrelid::regclass::text = ANY(%s)",
                (todo,),
            ).fetchall()
            todo = [r[0] for r in rows if r[0] not in every]
            every.update(todo)
        names = sorted(every)
        if names:
            conn.execute(
                sql.SQL("TRUNCATE {}").format(sql.SQL(", ").join(map(sql.Identifier, names)))
            )
        conn.execute("DELETE FROM port_from_sqlite3 WHERE table_name = ANY(%s)", (names,))
    return names


def clean_target(settings: Settings) -> None:
    """Remove what an unfinished port of ours left (check_target proved it is ours)."""
    with connect_as_role(settings) as conn:
        conn.execute("DROP OWNED BY CURRENT_USER")


def prepare_target(settings: Settings, new: Path, resumable: set[str] | None) -> Step | None:
    """Before a port run: make sure the run leaves the target equal to *new*."""
    count, _ = target_state(settings)
    if not count:
        with contextlib.suppress(FileNotFoundError):
            PORTED.unlink()
        return None
    if not PORTED.exists():
        clean_target(settings)
        return Step("unfinished earlier port", CHANGED, "removed, copying from scratch")
    tables = ported_tables(settings)
    if resumable is not None:
        tables = [t for t in tables if t in resumable]
    changed = changed_tables(PORTED, new, tables)
    PORTED.unlink()  # until this run completes, the target reflects no snapshot
    if not changed:
        return None
    names = reset_tables(settings, changed)
    return Step("tables changed since the last copy", CHANGED, "copied again: " + ", ".join(names))


def finish_target(settings: Settings) -> None:
    """Synapse uses the target now: drop the port tool's bookkeeping, so that the target
    is never again taken for an unfinished port (which a retry may clean)."""
    psycopg = import_psycopg()
    with connect_as_role(settings) as conn:
        try:
            conn.execute("DROP TABLE IF EXISTS port_from_sqlite3")
        except psycopg.Error as err:
            raise SetupError(f"dropping port_from_sqlite3 failed: {err}") from None


def postgres_counts(settings: Settings, tables: list[str]) -> dict[str, int]:
    psycopg = import_psycopg()
    counts = {}
    with connect_as_role(settings) as conn:
        for table in tables:
            query = psycopg.sql.SQL("SELECT count(*) FROM {}").format(psycopg.sql.Identifier(table))
            try:
                counts[table] = conn.execute(query).fetchone()[0]
            except psycopg.Error:
                conn.rollback()
                counts[table] = -1
    return counts


# --- files --------------------------------------------------------------------------------


def synapse_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(SYNAPSE_USER)
    except KeyError:
        raise MigrationFailed(messages.NO_SYNAPSE_USER_TO_PORT.format(user=SYNAPSE_USER)) from None


def snapshot(live: Path, dest: Path, owner: tuple[int, int], mode: int = 0o600) -> None:
    """A consistent copy of the SQLite database *live* at *dest*: SQLite's online backup
    API, which reads under SQLite's own locks while another process may write."""
    for leftover in (dest, dest.with_name(dest.name + "-wal"), dest.with_name(dest.name + "-shm")):
        with contextlib.suppress(FileNotFoundError):
            leftover.unlink()
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.fchown(fd, *owner)
    os.fchmod(fd, mode)
    os.close(fd)
    try:
        source = sqlite3.connect(f"file:{live}?mode=ro", uri=True, timeout=60)
        target = sqlite3.connect(dest)
        try:
            source.backup(target, pages=4096)
        finally:
            target.close()
            source.close()
    except sqlite3.Error as err:
        raise MigrationFailed(messages.SNAPSHOT_FAILED.format(path=live, reason=err)) from None
    except OSError as err:
        raise MigrationFailed(
            messages.SNAPSHOT_FAILED.format(path=live, reason=err.strerror)
        ) from None


def tool_config(config: dict[str, Any], workdir: Path, database: dict[str, Any]) -> dict:
    """What Synapse's tools parse before they touch a database (the server name, the
    signing key, a media store), and *database*."""
    name = str(config.get("server_name") or "")
    key = config.get("signing_key_path") or SYNAPSE_ETC / f"{name}.signing.key"
    return {
        "server_name": name,
        "signing_key_path": str(key),
        "media_store_path": str(workdir / "media"),  # it makes the directory; never used
        "report_stats": False,
        "database": database,
    }


def port_config(settings: Settings, config: dict[str, Any], workdir: Path) -> str:
    """The port tool's configuration: the target database as Synapse will use it (the
    snippet's values)."""
    args: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "dbname": settings.dbname,
        "user": settings.user,
        "password": settings.password,
        "sslmode": settings.sslmode,
    }
    if settings.sslrootcert:
        args["sslrootcert"] = settings.sslrootcert
    data = tool_config(config, workdir, {"name": "psycopg2", "args": args})
    # The port tool runs the target's background updates itself: without pauses.
    data["background_updates"] = {"sleep_enabled": False}
    return safe_dump(data, default_flow_style=False)


def update_config(config: dict[str, Any], sqlite: Path, workdir: Path) -> str:
    """update_synapse_database's configuration: the snapshot as the database, never the
    live file."""
    database = {"name": "sqlite3", "args": {"database": str(sqlite)}}
    return safe_dump(tool_config(config, workdir, database), default_flow_style=False)


def write_private(path: Path, text: str, owner: tuple[int, int]) -> None:
    """*text* in *path*, 0600 and owned by *owner* (Synapse's user) from its creation."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchown(fd, *owner)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)


def checkpoint(sqlite: Path) -> None:
    """Fold a snapshot's write-ahead log into the file itself: the snapshot is renamed
    later, and a log left beside the old name would take its rows with it."""
    try:
        conn = sqlite3.connect(sqlite, timeout=60)
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.execute("PRAGMA journal_mode = DELETE")
        finally:
            conn.close()
    except sqlite3.Error as err:
        raise MigrationFailed(messages.SNAPSHOT_FAILED.format(path=sqlite, reason=err)) from None


def pending_updates(live: Path) -> int:
    """Synapse's background updates not done yet in the SQLite database *live* (the port
    tool refuses to run while there are any)."""
    try:
        conn = sqlite3.connect(f"file:{live}?mode=ro", uri=True, timeout=30)
        try:
            return table_counts(conn, ("background_updates",)).get("background_updates", 0)
        finally:
            conn.close()
    except sqlite3.Error:
        return 0  # the port tool will say what is wrong


def wait_for_updates(live: Path, running: bool, say: Callable[[str], None]) -> None:
    """A running Synapse finishes its pending background updates by itself: wait for it
    (bounded, printed).  A stopped one cannot: the port runs them on its snapshot with
    upstream's tool (run_updates); without that tool, say how to let Synapse finish."""
    pending = pending_updates(live)
    if not pending:
        return
    if not running:
        if find_update_tool() is None:
            raise MigrationFailed(messages.UPDATES_PENDING_STOPPED.format(count=pending))
        return
    limit = int(os.environ.get(UPDATES_WAIT_ENV, UPDATES_WAIT))
    say(messages.WAITING_FOR_UPDATES.format(count=pending, limit=limit))
    deadline = time.monotonic() + limit
    while pending and time.monotonic() < deadline:
        time.sleep(2)
        pending = pending_updates(live)
    if pending:
        raise MigrationFailed(messages.UPDATES_STILL_PENDING.format(count=pending, limit=limit))


# --- the port tool ------------------------------------------------------------------------


@dataclasses.dataclass
class Porter:
    """Runs the port tool as Synapse's user, its output into the log."""

    tool: Path
    workdir: Path
    config: Path
    log: Path
    user: pwd.struct_passwd
    show: Callable[[str], None]

    def port(self, sqlite: Path, phase: str) -> float:
        """Port *sqlite*; the seconds it took.  MigrationFailed with the tool's last words."""
        cmd = [str(self.tool), "--sqlite-database", str(sqlite), "--postgres-config"]
        cmd += [str(self.config), "--batch-size", "5000"]
        started = time.monotonic()
        code, tail = self.run(cmd, phase)
        if code:
            raise MigrationFailed(
                messages.PORT_FAILED.format(reason=why(tail, code), log=self.log, retry=RETRY)
            )
        return time.monotonic() - started

    def update(self, tool: Path, config: Path, phase: str) -> float:
        """Run the pending background updates of the database *config* names (a
        snapshot) with upstream's *tool*; the seconds it took."""
        cmd = [str(tool), "--database-config", str(config), "--run-background-updates"]
        started = time.monotonic()
        code, tail = self.run(cmd, phase, give_up=UPDATES_ABORTED)
        if code:
            raise MigrationFailed(
                messages.UPDATES_RUN_FAILED.format(
                    reason=why(tail, code), log=self.log, retry=RETRY
                )
            )
        return time.monotonic() - started

    def run(
        self, cmd: list[str], phase: str, give_up: tuple[str, ...] = ()
    ) -> tuple[int, list[str]]:
        """*cmd* as Synapse's user, its output into the log; (exit code, last lines).
        A line holding one of *give_up* ends it (exit 1): the tool would hang there."""
        started = time.monotonic()
        env = {
            "PATH": SYSTEM_PATH,
            "HOME": str(self.workdir),
            "LC_ALL": "C.UTF-8",
        }
        tail: list[str] = []
        done: dict[str, tuple[int, int]] = {}
        gave_up = False
        with open(self.log, "a", encoding="utf-8") as log:
            log.write(f"=== {time.strftime('%F %T')} {phase}: {' '.join(cmd)}\n")
            log.flush()
            try:
                proc = subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    cwd=self.workdir,
                    env=env,
                    text=True,
                    errors="replace",
                    user=self.user.pw_uid,
                    group=self.user.pw_gid,
                    extra_groups=[],
                )
            except OSError as err:
                raise MigrationFailed(
                    messages.PORT_FAILED.format(reason=err.strerror, log=self.log, retry=RETRY)
                ) from None
            assert proc.stdout is not None  # noqa: S101 - stdout=PIPE
            last_shown = 0.0
            for line in proc.stdout:
                log.write(line)
                line = line.rstrip("\n")
                tail = [*tail, line][-20:]
                if any(text in line for text in give_up):
                    gave_up = True
                    proc.kill()
                    break
                match = PROGRESS_RE.match(line)
                if match:
                    done[match[1]] = (int(match[3]), int(match[4]))
                    now = time.monotonic()
                    if now - last_shown >= 2:
                        last_shown = now
                        self.show(progress_line(phase, done, now - started))
            code = proc.wait()
        return (code or 1) if gave_up else code, tail


def progress_line(phase: str, done: dict[str, tuple[int, int]], elapsed: float) -> str:
    rows = sum(d for d, _ in done.values())
    total = sum(t for _, t in done.values())
    finished = sum(1 for d, t in done.values() if d >= t)
    left = ""
    if rows and total > rows:
        left = f", about {elapsed * (total - rows) / rows:.0f} s left"
    return f"{phase}: {finished}/{len(done)} tables, {rows}/{total} rows{left}"


def why(tail: list[str], code: int) -> str:
    """The port tool's reason, from its last lines."""
    text = "\n".join(tail)
    if "Pending background updates" in text:
        return messages.PORT_PENDING_UPDATES
    for line in reversed(tail):
        line = line.strip()
        if line and not line.startswith(("File ", "Traceback", "^", "~")) and "%" not in line:
            return f"{line[:300]} (exit {code})"
    return f"exit {code}"


# --- the whole migration ----------------------------------------------------------------


@dataclasses.dataclass
class Result:
    steps: list[Step]
    backup: Path | None
    downtime: float | None


def read_state() -> dict[str, Any]:
    try:
        return json.loads(STATE_FILE.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return {}


def write_state(state: dict[str, Any]) -> None:
    STATE_DIR.mkdir(parents=True, exist_ok=True, mode=0o755)
    tmp = STATE_FILE.with_suffix(".tmp")
    tmp.write_text(json.dumps(state), encoding="utf-8")
    os.replace(tmp, STATE_FILE)


def migrate(
    facts: SqliteFacts,
    settings: Settings,
    config: dict[str, Any],
    switch: Callable[[], None],
    *,
    say: Callable[[str], None],
    show: Callable[[str], None] | None = None,
) -> Result:
    """Port *facts*' database into *settings*' one, then call *switch* (which writes the
    snippet) and start Synapse again if it ran.  See the module's docstring."""
    show = show or say
    steps = [check_target(settings)]
    tool = find_port_tool()
    user = synapse_user()
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    LOG_DIR.mkdir(parents=True, exist_ok=True, mode=0o750)
    log = LOG_DIR / f"migrate-{stamp}.log"
    log.touch(mode=0o600)
    # Synapse's user must reach its working directory inside.
    STATE_DIR.mkdir(parents=True, exist_ok=True, mode=0o755)
    private_dir(WORKDIR, user.pw_uid, user.pw_gid)
    owner = (user.pw_uid, user.pw_gid)
    conf = WORKDIR / "port.yaml"
    write_private(conf, port_config(settings, config, WORKDIR), owner)
    porter = Porter(tool, WORKDIR, conf, log, user, show)

    # Whether Synapse ran before we (or an earlier, interrupted run of ours) stopped it.
    state = read_state()
    was_running = bool(state.get("synapse_was_running")) or services.synapse_running()
    write_state({"synapse_was_running": was_running, "sqlite": str(facts.path)})
    stopped_at = None
    resumable = append_only_tables(tool)
    try:
        running = services.synapse_running()
        wait_for_updates(facts.path, running, say)
        if was_running and running:
            snap = WORKDIR / "phase1.db"
            snapshot(facts.path, snap, owner)
            say(messages.PORT_PHASE.format(phase="first copy, Synapse still serving", log=log))
            took = port_run(porter, settings, snap, "first copy", resumable, steps)
            steps.append(Step("port while Synapse runs", OK, f"{took:.1f} s"))
            fault("after-first-phase")  # test-only crash injection (core/faults.py)
            stopped_at = time.monotonic()
            if not services.stop_synapse():
                raise MigrationFailed(messages.CANNOT_STOP_SYNAPSE)
            steps.append(Step("stop Synapse", OK))
            fault("after-stop")  # test-only crash injection (core/faults.py)
        elif was_running:
            stopped_at = time.monotonic()  # an interrupted run stopped it already
        final = WORKDIR / "final.db"
        started = time.monotonic()
        snapshot(facts.path, final, owner)
        steps.append(Step("final snapshot", OK, f"{time.monotonic() - started:.1f} s"))
        run_updates(porter, final, config, owner, steps, say)
        say(messages.PORT_PHASE.format(phase="final copy", log=log))
        took = port_run(porter, settings, final, "final copy", resumable, steps)
        steps.append(Step("port the rest" if stopped_at else "port", OK, f"{took:.1f} s"))
        fault("after-final-port")  # test-only crash injection (core/faults.py)
        steps.append(compare_counts(PORTED, settings))
        switch()
    except BaseException:
        if was_running and not services.synapse_running():
            # Still on SQLite (the snippet was not written): back to how it was.
            services.start_synapse()
            say(messages.SYNAPSE_STARTED_AGAIN)
        with contextlib.suppress(FileNotFoundError):
            STATE_FILE.unlink()
        raise
    try:
        finish_target(settings)
    except SetupError as err:  # Synapse has everything; a leftover table is harmless
        say(f"warning: {err.message}")
    downtime = None
    if was_running:
        services.start_synapse()
        if stopped_at is not None:
            downtime = time.monotonic() - stopped_at
            steps.append(Step("start Synapse on PostgreSQL", OK, f"downtime {downtime:.1f} s"))
    with contextlib.suppress(FileNotFoundError):
        STATE_FILE.unlink()
    backup = keep_backup(facts.path, stamp)
    shutil.rmtree(WORKDIR, ignore_errors=True)
    return Result(steps, backup, downtime)


def run_updates(
    porter: Porter,
    snap: Path,
    config: dict[str, Any],
    owner: tuple[int, int],
    steps: list[Step],
    say: Callable[[str], None],
) -> None:
    """The snapshot *snap* of a stopped Synapse may hold pending background updates, which
    the port tool refuses: run them there with upstream's update_synapse_database, as
    Synapse's user; the live file is never touched.  Refuses when any remain."""
    checkpoint(snap)  # counted by root without leaving root's files beside it
    pending = pending_updates(snap)
    if not pending:
        return
    tool = find_update_tool()
    if tool is None:
        raise MigrationFailed(messages.UPDATES_PENDING_STOPPED.format(count=pending))
    conf = WORKDIR / "update.yaml"
    write_private(conf, update_config(config, snap, WORKDIR), owner)
    say(messages.UPDATES_RUNNING.format(count=pending, tool=tool, log=porter.log))
    took = porter.update(tool, conf, "background updates")
    checkpoint(snap)
    left = pending_updates(snap)
    if left:
        raise MigrationFailed(
            messages.UPDATES_LEFT.format(count=left, tool=tool, log=porter.log, retry=RETRY)
        )
    steps.append(Step("background updates on the snapshot", OK, f"{pending} run, {took:.1f} s"))


def port_run(
    porter: Porter,
    settings: Settings,
    snap: Path,
    phase: str,
    resumable: set[str] | None,
    steps: list[Step],
) -> float:
    """One run of the port tool on *snap*; afterwards the target reflects *snap*."""
    started = time.monotonic()
    step = prepare_target(settings, snap, resumable)
    if step is not None:
        steps.append(step)
    checked = time.monotonic() - started
    if checked >= 1:
        steps.append(Step(f"{phase}: compare with the last copy", OK, f"{checked:.1f} s"))
    took = porter.port(snap, phase)
    os.replace(snap, PORTED)
    return took


def compare_counts(final: Path, settings: Settings) -> Step:
    conn = sqlite3.connect(f"file:{final}?mode=ro", uri=True)
    try:
        before = table_counts(conn, KEY_TABLES)
    finally:
        conn.close()
    after = postgres_counts(settings, list(before))
    wrong = [
        f"{t}: {before[t]} in SQLite, {after[t]} in PostgreSQL"
        for t in before
        if before[t] != after[t]
    ]
    if wrong:
        raise MigrationFailed(
            messages.COUNTS_DIFFER.format(tables="; ".join(wrong[:4]), retry=RETRY)
        )
    total = sum(before.values())
    return Step("compare row counts", OK, f"{len(before)} tables, {total} rows, all equal")


def keep_backup(live: Path, stamp: str) -> Path | None:
    """A copy of the old SQLite file (Synapse no longer writes it) for going back."""
    BACKUP_DIR.mkdir(parents=True, exist_ok=True, mode=0o700)
    dest = BACKUP_DIR / f"homeserver-{stamp}.db"
    try:
        snapshot(live, dest, (0, 0), 0o600)
    except MigrationFailed as err:
        say(f"warning: {err.message}")
        return None
    return dest
