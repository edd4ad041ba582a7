"""Synapse's workers in one maintainer-script run: what is on disk (read by the
inspection), the step that makes it what the answers ask for (decided by the plan,
reading nothing), and carrying that step out.

The files are the shared snippet (conf.d/workers.yaml), one file per worker, the nginx
include (client preset), and our Redis instance's configuration: all through ucf, as the
database snippet.  The two secrets (replication, Redis) are made once and kept.  The
units: the target and one enabled instance per worker (synapse/units.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

from matrix_synapse_setup.core import messages, paths
from matrix_synapse_setup.core.errors import SetupError
from matrix_synapse_setup.core.output import say
from matrix_synapse_setup.core.settings import validate_client_workers, validate_workers
from matrix_synapse_setup.dpkg import ucf
from matrix_synapse_setup.files import atomic
from matrix_synapse_setup.postgres import budget
from matrix_synapse_setup.synapse import routing, service, units, workers

# Each process's pool: the database snippet's cp_max (files/templates/database.yaml.j2;
# tests/unit/test_workers_plan.py checks that they agree).
POOL_SIZE = 10

# How each file's owner is chosen when it is written.
SYNAPSE_READS = "synapse"  # root and Synapse's user, like the database snippet
PUBLIC = "public"  # 0644 root: nothing secret in it
REDIS_READS = "redis"  # root and the Redis server's group


class WorkersOnDisk(NamedTuple):
    """Our workers' files and units as this run finds them."""

    files: dict[Path, str] = {}  # noqa: RUF012 - never mutated: a NamedTuple default
    secrets: dict[Path, str] = {}  # noqa: RUF012
    enabled: tuple[str, ...] = ()  # worker instances with our symlink in the target's wants
    redis_enabled: bool = False
    target_enabled: bool = False

    def __repr__(self) -> str:
        return f"WorkersOnDisk(files={sorted(map(str, self.files))}, enabled={self.enabled})"

    @property
    def anything(self) -> bool:
        return bool(self.files or self.enabled or self.redis_enabled or self.target_enabled)


class Workers(NamedTuple):
    """Make Synapse's workers what the answers ask for (none: remove ours)."""

    layout: Any  # synapse.workers.Layout | None
    install: tuple[tuple[Path, str, str], ...]  # (path, text, owner kind): those that differ
    secrets: tuple[tuple[Path, str], ...]  # to create (kept once made)
    remove: tuple[Path, ...]  # ours, no longer wanted
    redis: Any  # synapse.workers.RedisServer | None

    def __repr__(self) -> str:
        return f"Workers(preset={self.preset!r}, install={[str(p) for p, _, _ in self.install]})"

    @property
    def preset(self) -> str:
        return self.layout.preset if self.layout is not None else workers.NONE

    def describe(self) -> str:
        if self.layout is None:
            return "remove Synapse's workers (one process)"
        names = ", ".join(w.name for w in self.layout.workers)
        return f"Synapse's workers ({self.preset}: {names}), Redis, matrix-synapse.target"


# --- inspect -----------------------------------------------------------------------------


def _text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError):
        return ""  # differs from anything we write: it is written again


def read(redis: Any) -> WorkersOnDisk:
    """Our files (every worker file there, to remove stale ones), the secrets, and which
    units are enabled."""
    found: dict[Path, str] = {}
    candidates = [paths.WORKERS_SNIPPET, paths.NGINX_INCLUDE]
    if paths.WORKERS_DIR.is_dir():
        candidates += sorted(paths.WORKERS_DIR.glob("*.yaml"))
    if redis is not None:
        candidates.append(redis.conffile)
    for path in candidates:
        text = _text(path)
        if text is not None:
            found[path] = text
    secrets = {}
    for path in (paths.REPLICATION_SECRET, paths.REDIS_SECRET):
        text = _text(path)
        if text:
            secrets[path] = text
    return WorkersOnDisk(
        files=found,
        secrets=secrets,
        enabled=units.enabled_workers(),
        redis_enabled=units.redis_enabled(),
        target_enabled=units.target_enabled(),
    )


# --- plan -----------------------------------------------------------------------------------


def wanted_layout(answers: tuple[str, str], cores: int) -> Any:
    """The layout the answers ask for (None: no workers); SetupError for a bad answer."""
    preset = validate_workers(answers[0] or workers.NONE)
    if preset == workers.NONE:
        return None
    count = validate_client_workers(answers[1], cores) if preset == "client" else None
    return workers.layout(preset, count)


def connections_needed(layout: Any) -> int:
    """Every process's pool together."""
    return POOL_SIZE * len(workers.processes(layout))


def refuse_budget(layout: Any, limits: Any, host: str) -> None:
    """A remote server whose connections cannot hold every pool: refused, with the
    numbers, before anything is written."""
    if layout is None or limits is None:
        return
    found = budget.budget(workers.processes(layout), POOL_SIZE, limits)
    if not found.fits:
        budget.refuse(found, layout.preset, host)


def decide(
    answers: tuple[str, str],
    cores: int,
    disk: WorkersOnDisk,
    *,
    listeners: list[dict[str, Any]] | None,
    redis: Any,
    fresh: tuple[str, str],
) -> Workers | None:
    """The step that makes the workers what *answers* ask for; None when they are."""
    layout = wanted_layout(answers, cores)
    if layout is None:
        return _none(answers[0] or workers.NONE, disk, redis)
    if redis is None:
        raise SetupError(messages.WORKERS_NEED_REDIS)
    if listeners is None:
        raise SetupError(messages.WORKERS_NO_LISTENERS.format(path=paths.WORKERS_SNIPPET))
    secrets: list[tuple[Path, str]] = []
    values = {}
    for path, new in zip((paths.REPLICATION_SECRET, paths.REDIS_SECRET), fresh, strict=True):
        value = disk.secrets.get(path, "").strip()
        if not value:
            value = new
            secrets.append((path, value + "\n"))
        values[path] = value
    texts: dict[Path, tuple[str, str]] = {
        paths.WORKERS_SNIPPET: (
            workers.render_shared(
                layout, workers.with_replication_listener(listeners), redis.socket
            ),
            SYNAPSE_READS,
        ),
        redis.conffile: (workers.render_redis_conf(redis, values[paths.REDIS_SECRET]), REDIS_READS),
    }
    for worker in layout.workers:
        texts[worker.path] = (workers.render_worker(worker), PUBLIC)
    if layout.routed:
        ports = tuple(w.port for w in layout.routed)
        texts[paths.NGINX_INCLUDE] = (routing.render_nginx(ports, routing.load_patterns()), PUBLIC)
    elif paths.NGINX_INCLUDE in disk.files:
        texts[paths.NGINX_INCLUDE] = (routing.render_no_routes(layout.preset), PUBLIC)
    install = tuple(
        (path, text, kind)
        for path, (text, kind) in sorted(texts.items())
        if disk.files.get(path) != text
    )
    remove = tuple(sorted(path for path in disk.files if path not in texts))
    names = tuple(w.name for w in layout.workers)
    units_right = set(disk.enabled) == set(names) and disk.redis_enabled and disk.target_enabled
    if not install and not remove and not secrets and units_right:
        return None
    return Workers(layout, install, tuple(secrets), remove, redis)


def _none(preset: str, disk: WorkersOnDisk, redis: Any) -> Workers | None:
    """No workers: every file and unit of ours goes, but the nginx include, which an
    admin's server block may name: it stays, routing nothing."""
    install: tuple[tuple[Path, str, str], ...] = ()
    if paths.NGINX_INCLUDE in disk.files:
        text = routing.render_no_routes(preset)
        if disk.files[paths.NGINX_INCLUDE] != text:
            install = ((paths.NGINX_INCLUDE, text, PUBLIC),)
    remove = tuple(
        sorted(path for path in (*disk.files, *disk.secrets) if path != paths.NGINX_INCLUDE)
    )
    if (
        not install
        and not remove
        and not (disk.enabled or disk.redis_enabled or disk.target_enabled)
    ):
        return None
    return Workers(None, install, (), remove, redis)


# --- execute -------------------------------------------------------------------------------


def _owner(kind: str, synapse_owner: atomic.Ownership, redis: Any) -> atomic.Ownership:
    if kind == SYNAPSE_READS:
        return synapse_owner
    if kind == REDIS_READS and redis is not None:
        return atomic.group_ownership(redis.group)
    return atomic.Ownership(0, 0, 0o644)


def carry_out(conv: Any, step: Workers, synapse_owner: atomic.Ownership) -> bool:
    """Write, remove, enable and (re)start; True when anything changed."""
    changed = False
    secret_owner = atomic.ownership()
    for path, text in step.secrets:
        atomic.write_atomic(path, text, secret_owner)
        say(messages.WORKERS_SECRET_MADE.format(path=path, owner=secret_owner.describe()))
        changed = True
    for path, text, kind in step.install:
        if ucf.install_file(conv, path, text, _owner(kind, synapse_owner, step.redis)):
            say(messages.WORKERS_FILE_WRITTEN.format(path=path))
            changed = True
    for path in step.remove:
        if ucf.remove_file(path):
            say(messages.WORKERS_FILE_REMOVED.format(path=path))
            changed = True
    names = tuple(w.name for w in step.layout.workers) if step.layout is not None else ()
    redis = step.redis if step.layout is not None else None
    # Without Synapse's unit the workers cannot start: Synapse's arrival (our trigger on
    # its unit) starts the target then.
    for done in units.apply(names, redis, changed, start=service.synapse_installed()):
        say(str(done))
    written = {path for path, _, _ in step.install}
    if redis is not None and redis.conffile in written and units.systemd_runs():
        # A new password (its secret was lost): Redis reads it only when it starts.
        say(str(units.run_unit("restart", redis.unit)))
    if paths.NGINX_INCLUDE in written:
        reloaded = units.reload_nginx()
        if reloaded is not None:
            say(str(reloaded))
    if step.layout is None and changed:
        # One process again: the main process must forget the workers' settings.
        service.restart_synapse("try-restart")
    return changed


def package_removed() -> int:
    """``prerm remove``: the workers' units go with the package.  Synapse is left as one
    process (the shared snippet removed, the main process restarted), the include routes
    nothing, our Redis instance stops; the workers' own files and secrets are
    configuration and stay until purge (a reinstall uses them again)."""
    enabled = units.enabled_workers() or units.redis_enabled() or units.target_enabled()
    if not paths.WORKERS_SNIPPET.exists() and not enabled:
        return 0
    if paths.NGINX_INCLUDE.exists():
        ucf.install_file(
            None,
            paths.NGINX_INCLUDE,
            routing.render_no_routes("none"),
            atomic.Ownership(0, 0, 0o644),
        )
        reloaded = units.reload_nginx()
        if reloaded is not None:
            say(str(reloaded))
    for done in units.apply((), None, False):
        say(str(done))
    if ucf.remove_file(paths.WORKERS_SNIPPET):
        say(messages.WORKERS_REMOVED.format(path=paths.WORKERS_SNIPPET))
        service.restart_synapse("try-restart")
    return 0


def synapse_arrived() -> None:
    """Synapse's unit appeared (our trigger): give Synapse's user the workers' shared
    snippet and secrets (root's alone while that user did not exist), then start the
    workers' target, which could not start without Synapse's unit."""
    owner = atomic.ownership()
    for path in (paths.WORKERS_SNIPPET, paths.REPLICATION_SECRET, paths.REDIS_SECRET):
        if path.exists() and atomic.fix_ownership(path, owner):
            say(messages.WORKERS_FILE_OWNER.format(path=path, owner=owner.describe()))
    if units.target_enabled() and units.systemd_runs():
        say(str(units.run_unit("start", units.TARGET)))
