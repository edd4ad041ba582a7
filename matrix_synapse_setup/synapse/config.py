"""Synapse's configuration as Synapse reads it, and what its SQLite database holds.

Upstream's service starts Synapse with ``--config-path=/etc/matrix-synapse/homeserver.yaml
--config-path=/etc/matrix-synapse/conf.d/``: the file first, then every regular file whose
name ends in ``.yaml`` in the directory, in sorted order.  Each file's top-level keys
replace the earlier ones wholesale (a shallow ``dict.update``), so the effective
``database:`` is the last one in that order.  Without any, Synapse uses SQLite in
``homeserver.db`` relative to its working directory (``/var/lib/matrix-synapse``).
"""

from __future__ import annotations

import dataclasses
import os
import sqlite3
from pathlib import Path
from typing import Any, NamedTuple

from matrix_synapse_setup.core import messages
from matrix_synapse_setup.core.errors import SetupError
from matrix_synapse_setup.core.paths import SYNAPSE_CONFD, SYNAPSE_ETC
from matrix_synapse_setup.core.settings import is_local
from matrix_synapse_setup.core.yamlload import YAMLError, safe_load

HOMESERVER = SYNAPSE_ETC / "homeserver.yaml"
CONFD = SYNAPSE_CONFD
DATA_DIR = Path("/var/lib/matrix-synapse")  # the unit's WorkingDirectory
DEFAULT_SQLITE = "homeserver.db"


def config_files(
    homeserver: Path = HOMESERVER, confd: Path = CONFD, *, including: Path | None = None
) -> list[Path]:
    """The files Synapse reads, in its order (missing ones left out); *including*: a
    file of *confd* that is about to be written, in its place."""
    files = [homeserver] if homeserver.is_file() else []
    try:
        names = {n for n in os.listdir(confd) if (confd / n).is_file()}
    except FileNotFoundError:
        names = set()
    if including is not None and including.parent == confd:
        names.add(including.name)
    return files + [confd / n for n in sorted(names) if n.endswith(".yaml")]


def load(files: list[Path], texts: dict[Path, str] | None = None) -> tuple[dict, dict]:
    """(merged configuration, file that set each top-level key) of *files*, as Synapse
    merges them; *texts* gives the text of a file instead of reading it."""
    merged: dict[str, Any] = {}
    origin: dict[str, Path] = {}
    for path in files:
        try:
            text = (texts or {}).get(path)
            data = safe_load(path.read_text(encoding="utf-8") if text is None else text)
        except (OSError, UnicodeDecodeError, YAMLError) as err:
            # The system's words, else the error's name (PyYAML's, for a YAML error).
            reason = getattr(err, "strerror", None) or getattr(err, "kind", type(err).__name__)
            raise SetupError(
                messages.SYNAPSE_CONFIG_UNREADABLE.format(path=path, reason=reason)
            ) from None
        if isinstance(data, dict):
            merged.update(data)
            origin.update(dict.fromkeys(data, path))
    return merged, origin


def listeners(
    exclude: Path, homeserver: Path = HOMESERVER, confd: Path = CONFD
) -> tuple[list[dict[str, Any]], Path | None] | None:
    """Synapse's effective ``listeners`` without the file *exclude* (the workers'
    snippet, which repeats them: Synapse replaces a top-level key, it does not merge
    lists), and the file that set them; None when Synapse's files cannot be read."""
    files = [f for f in config_files(homeserver, confd) if f != exclude]
    try:
        merged, origin = load(files)
    except SetupError:
        return None
    found = merged.get("listeners")
    if not isinstance(found, list):
        return [], None
    return [item for item in found if isinstance(item, dict)], origin.get("listeners")


@dataclasses.dataclass(frozen=True)
class Database:
    """Synapse's effective ``database:`` setting."""

    engine: str  # "sqlite3", "psycopg2", or what the file says
    source: Path | None  # the file that set it; None: Synapse's default
    sqlite_path: Path | None = None  # for sqlite3
    args: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False)


def effective_database(merged: dict[str, Any], origin: dict[str, Path]) -> Database:
    """The database Synapse uses with the configuration *merged* (see load())."""
    section = merged.get("database")
    if not isinstance(section, dict):
        return Database("sqlite3", None, DATA_DIR / DEFAULT_SQLITE)
    engine = str(section.get("name", "sqlite3"))
    args = section.get("args") if isinstance(section.get("args"), dict) else {}
    source = origin.get("database")
    if engine != "sqlite3":
        return Database(engine, source, None, args)
    name = str(args.get("database") or DEFAULT_SQLITE)
    path = Path(name) if os.path.isabs(name) else DATA_DIR / name
    return Database(engine, source, path, args)


def server_name(config: dict[str, Any]) -> str | None:
    value = config.get("server_name")
    return str(value) if value else None


# --- what makes the server itself: its signing key and configuration --------------------


@dataclasses.dataclass(frozen=True)
class ServerFiles:
    """The files that make this server itself, besides its database: the configuration
    Synapse reads, its signing key (its identity to other servers) and its log
    configuration.  A path is None when the configuration names no such file."""

    homeserver: Path
    confd: Path
    signing_key: Path | None
    log_config: Path | None
    server_name: str | None

    def paths(self) -> list[Path]:
        """What to archive, each once: homeserver.yaml, conf.d (all of it), the signing
        key and the log configuration (when they are not in conf.d already)."""
        found = [self.homeserver, self.confd]
        for extra in (self.signing_key, self.log_config):
            if extra is not None and extra not in found and self.confd not in extra.parents:
                found.append(extra)
        return found


def _from_working_directory(value: Any) -> Path:
    """A path of Synapse's configuration as Synapse opens it: a relative one from its
    working directory."""
    return Path(os.path.normpath(DATA_DIR / str(value)))


def identity_paths(merged: dict[str, Any], files: list[Path]) -> tuple[Path | None, Path | None]:
    """(signing key file, log configuration file) of the merged configuration, as Synapse
    finds them: ``signing_key_path``, else SERVER_NAME.signing.key in the directory of the
    last file it read (none when the key is given inline as ``signing_key``);
    ``log_config`` when set."""
    key: Path | None = None
    if "signing_key" not in merged:
        if merged.get("signing_key_path"):
            key = _from_working_directory(merged["signing_key_path"])
        elif files and server_name(merged):
            key = files[-1].parent / f"{server_name(merged)}.signing.key"
    log = merged.get("log_config")
    return key, _from_working_directory(log) if log else None


def server_files(homeserver: Path = HOMESERVER, confd: Path = CONFD) -> ServerFiles:
    """The files that make this server itself (see :class:`ServerFiles`)."""
    files = config_files(homeserver, confd)
    merged, _ = load(files)
    key, log = identity_paths(merged, files)
    return ServerFiles(homeserver, confd, key, log, server_name(merged))


# --- what a SQLite database holds ------------------------------------------------------


class SqliteFacts(NamedTuple):
    path: Path
    size: int  # bytes, the file alone (a -wal beside it is counted in WAL mode below)
    users: int
    rooms: int
    events: int

    @property
    def has_data(self) -> bool:
        return self.users > 0 or self.events > 0

    def describe(self) -> str:
        return messages.SQLITE_FACTS.format(
            users=self.users,
            rooms=self.rooms,
            events=self.events,
            size=human_size(self.size),
            path=self.path,
        )

    def estimate_seconds(self) -> int:
        """A rough duration of the copy (the rate that scripts/bench_migration.py
        measures: see docs/benchmarks.md)."""
        return int(20 + self.size / PORT_BYTES_PER_SECOND)


# synapse_port_db copies some 3.5 MB of homeserver.db a second on a busy 2-core machine;
# the estimate takes less, as the whole migration does more than the copy.
PORT_BYTES_PER_SECOND = 2_000_000


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def open_readonly(path: Path) -> sqlite3.Connection:
    """A read-only connection (SQLite's own locking keeps it consistent with a writer)."""
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)


def table_counts(conn: sqlite3.Connection, tables: tuple[str, ...]) -> dict[str, int]:
    """Row counts of the *tables* that exist."""
    present = {
        row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    }
    counts = {}
    for table in tables:
        if table in present:
            # The name comes from our own constant list, checked against sqlite_master.
            counts[table] = conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]  # noqa: S608
    return counts


def sqlite_facts(path: Path) -> SqliteFacts | None:
    """What the SQLite file at *path* holds; None when there is no such file."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return None
    try:
        conn = open_readonly(path)
        try:
            counts = table_counts(conn, ("users", "rooms", "events"))
        finally:
            conn.close()
    except sqlite3.Error as err:
        raise SetupError(messages.SQLITE_UNREADABLE.format(path=path, reason=err)) from None
    return SqliteFacts(
        path, size, counts.get("users", 0), counts.get("rooms", 0), counts.get("events", 0)
    )


def synapse_configured() -> bool:
    """Synapse is (or was) installed: its configuration directory exists."""
    return HOMESERVER.exists() or CONFD.is_dir()


class SynapseState(NamedTuple):
    """What Synapse's files say now."""

    config: dict[str, Any]
    database: Database
    sqlite: SqliteFacts | None  # its SQLite database, when it uses one that holds data


def inspect() -> SynapseState | None:
    """Synapse's configuration and data; None when Synapse is not (and was not) installed."""
    if not synapse_configured():
        return None
    merged, origin = load(config_files())
    database = effective_database(merged, origin)
    facts = None
    if database.engine == "sqlite3" and database.sqlite_path is not None:
        facts = sqlite_facts(database.sqlite_path)
        facts = facts if facts is not None and facts.has_data else None
    return SynapseState(merged, database, facts)


def database_source_once_written(path: Path, text: str) -> Path | None:
    """The file that would set Synapse's database once *path* holds *text*."""
    _, origin = load(config_files(including=path), {path: text})
    return origin.get("database")


# --- Synapse's client listener --------------------------------------------------------

# Listening on every address: ask at loopback.
WILDCARDS = frozenset({"0.0.0.0", "::", "", "*"})  # noqa: S104 - read, not bound


def client_listener(config: dict[str, Any]) -> str | None:
    """The base URL of the first HTTP listener of *config* (merged) that serves the client
    API: at a loopback address when it listens on every address or on one, else at its
    first address.  None when there is none on a TCP port."""
    for listener in config.get("listeners") or []:
        if not isinstance(listener, dict) or listener.get("type", "http") != "http":
            continue
        if listener.get("path") or not listener.get("port"):
            continue  # a Unix socket listener, or no port
        names = {
            name
            for resource in listener.get("resources") or []
            if isinstance(resource, dict)
            for name in resource.get("names") or []
        }
        if "client" not in names:
            continue
        binds = listener.get("bind_addresses")
        if binds is None:
            binds = [listener["bind_address"]] if listener.get("bind_address") else []
        binds = [str(b) for b in binds]
        host = "127.0.0.1"
        if binds and not any(b in WILDCARDS for b in binds):
            loopback = [b for b in binds if is_local(b) and not b.startswith("/")]
            loopback.sort(key=lambda b: ":" in b)  # IPv4 first
            host = (loopback or binds)[0]
        elif binds and all(b == "::" for b in binds):
            host = "::1"
        if ":" in host:
            host = f"[{host}]"
        scheme = "https" if listener.get("tls") else "http"
        return f"{scheme}://{host}:{listener['port']}"
    return None
