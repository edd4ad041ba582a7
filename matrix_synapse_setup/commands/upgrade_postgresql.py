"""``matrix-synapse-setup upgrade-postgresql [--dry-run]``: the cluster Synapse uses, moved
to the newest installed PostgreSQL major the way Debian documents it, in a safe order.

1. check the free space (the new cluster's data directory; the backup's directory);
2. take a backup (backup.py's dump);
3. stop Synapse;
4. ``pg_upgradecluster OLD NAME`` (dump and restore), its output in a log file;
5. refresh the collation versions that differ;
6. compare the row counts of Synapse's key tables, before (Synapse stopped) and after;
7. start Synapse (if it ran) and check that it answers;
8. keep the old cluster, stopped; print the ``pg_dropcluster`` line.

A failure before step 4 has changed nothing (but the backup, which is kept).  After it,
the new cluster is stopped and kept, the old one gets back its port and start.conf
(pg_upgradecluster moves its port and sets it to manual), it starts, and so does
Synapse: Synapse is on the old cluster, running, and the message says so.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
from collections.abc import Callable
from pathlib import Path

from matrix_synapse_setup.commands import backup
from matrix_synapse_setup.commands.doctor.synapse import CLIENT_PATH
from matrix_synapse_setup.core import messages
from matrix_synapse_setup.core.errors import SetupError
from matrix_synapse_setup.core.output import note
from matrix_synapse_setup.core.paths import BACKUP_DIR, SNIPPET
from matrix_synapse_setup.files import lock as locking
from matrix_synapse_setup.files import space
from matrix_synapse_setup.postgres import tuning
from matrix_synapse_setup.postgres import upgrade as pg
from matrix_synapse_setup.postgres.dump import database_size
from matrix_synapse_setup.postgres.provision import Superuser, postgres_user
from matrix_synapse_setup.postgres.queries import version_text
from matrix_synapse_setup.synapse import config as synapse_config
from matrix_synapse_setup.synapse import service as services
from matrix_synapse_setup.synapse.client import Client
from matrix_synapse_setup.synapse.porting import KEY_TABLES, LOG_DIR, postgres_counts

SYNAPSE_WAIT = 90  # seconds for Synapse to answer after its start
size = synapse_config.human_size


def as_postgres(cluster: tuning.Cluster, what: str) -> dict:
    return Superuser.start(postgres_user(), pg.cluster_answer).ask(
        {"what": what, "socket_dir": cluster.socket_dir, "port": cluster.port}
    )


def measure(etc: Path = tuning.ETC) -> pg.Facts:
    """Everything the plan needs; changes nothing.  Refuses what is not ours to upgrade."""
    settings = backup.our_database()
    if settings is None:
        raise SetupError(messages.BACKUP_NOT_OURS.format(path=SNIPPET))
    if not settings.local:
        raise SetupError(messages.UPGRADE_REMOTE.format(host=settings.host))
    cluster = tuning.cluster_for_port(settings.port, etc, socket_dir=settings.socket_dir)
    if cluster is None:
        raise SetupError(
            messages.UPGRADE_NO_CLUSTER.format(port=settings.port, etc=etc, host=settings.host)
        )
    installed = tuple(pg.installed_majors())
    facts = pg.Facts(
        settings=settings,
        cluster=cluster,
        running=tuning.postmaster(cluster) is not None,
        installed=installed,
    )
    target = pg.newest(installed)
    if target is None or pg.major_key(target) <= pg.major_key(cluster.version) or not facts.running:
        return facts  # the plan says so
    answer = as_postgres(cluster, "facts")
    synapse_size, _ = database_size(settings)
    needs = (
        space.measure(
            messages.UPGRADE_NEED_DATA.format(new=f"{target}/{cluster.name}"),
            space.existing(pg.DATA_ROOT / target / cluster.name),
            pg.data_need(answer["size"]),
        ),
        space.measure(
            messages.UPGRADE_NEED_BACKUP, space.existing(BACKUP_DIR), synapse_size + backup.MARGIN
        ),
    )
    return facts._replace(
        target_exists=tuning.cluster_exists(etc / target / cluster.name),
        server_version=answer["version"],
        cluster_size=answer["size"],
        database_size=synapse_size,
        needs=needs,
    )


@dataclasses.dataclass
class Saved:
    """What pg_upgradecluster changes on the old cluster, to give it back."""

    port: int
    start_conf: str | None
    synapse_ran: bool = False
    counts: dict[str, int] = dataclasses.field(default_factory=dict)


def synapse_answers(url: str | None, timeout: float) -> bool:
    """Whether the client listener at *url* (its base: Client adds the path) answers
    within *timeout* seconds."""
    if url is None:
        return False
    return Client(url, timeout).wait(timeout, lambda _: None)


def roll_back(plan: pg.Plan, saved: Saved, etc: Path) -> list[str]:
    """Synapse back on the old cluster: the new one stopped and kept (on the port the old
    one was moved to, started by hand only), the old one with its port and start.conf,
    started.  What went wrong on the way (empty: all of it worked)."""
    old = plan.old
    new_dir = etc / plan.new_version / old.name
    problems = []

    def attempt(action: Callable[[], object]) -> None:
        try:
            action()
        except (SetupError, OSError) as err:
            problems.append(str(err))

    if tuning.cluster_exists(new_dir):
        new = tuning.read_cluster(new_dir)
        if new is not None and tuning.postmaster(new) is not None:
            attempt(lambda: pg.pg_ctlcluster(plan.new_version, old.name, "stop"))
        # The new cluster takes the port the old one was moved to, and never starts by
        # itself: at boot it would take Synapse's port before the old one.
        moved = tuning.read_cluster(old.confdir)
        if moved is not None and moved.port != saved.port:
            attempt(lambda: pg.set_port(plan.new_version, old.name, moved.port))
        attempt(lambda: pg.write_start_conf(new_dir, pg.MANUAL_START))
    # Only what pg_upgradecluster changed is changed back.
    moved = tuning.read_cluster(old.confdir)
    if moved is None or moved.port != saved.port:
        attempt(lambda: pg.set_port(old.version, old.name, saved.port))
    if pg.read_start_conf(old.confdir) != saved.start_conf:
        attempt(lambda: pg.write_start_conf(old.confdir, saved.start_conf))
        pg.daemon_reload()
    current = tuning.read_cluster(old.confdir)
    if current is None or tuning.postmaster(current) is None:
        attempt(lambda: pg.pg_ctlcluster(old.version, old.name, "start"))
    if saved.synapse_ran and not services.start_synapse():
        problems.append(messages.UPGRADE_SYNAPSE_NOT_STARTED)
    return problems


def failed(plan: pg.Plan, saved: Saved, etc: Path, reason: str, log: Path) -> SetupError:
    problems = roll_back(plan, saved, etc)
    new = f"{plan.new_version}/{plan.old.name}"
    if problems:
        return SetupError(
            messages.UPGRADE_ROLLBACK_FAILED.format(
                reason=reason, problems="; ".join(problems), old=plan.old.label, log=log
            )
        )
    dropped = not tuning.cluster_exists(etc / plan.new_version / plan.old.name)
    return SetupError(
        messages.UPGRADE_ROLLED_BACK.format(
            reason=reason,
            old=plan.old.label,
            log=log,
            keep=messages.UPGRADE_NEW_DROPPED
            if dropped
            else messages.UPGRADE_NEW_KEPT.format(
                new=new, drop=f"pg_dropcluster {plan.new_version} {plan.old.name}"
            ),
        )
    )


def carry_out(
    plan: pg.Plan, etc: Path = tuning.ETC, now: datetime.datetime | None = None
) -> list[str]:
    """Steps 2 to 8 (step 1 is the plan's); the lines to print at the end."""
    old, settings = plan.old, plan.facts.settings
    stamp = backup.stamp(now)
    url = synapse_config.client_listener(synapse_config.load(synapse_config.config_files())[0])
    # 2. a backup
    dump = backup.backup_now(socket_dir=old.socket_dir)
    note(messages.UPGRADE_BACKED_UP.format(path=dump))
    # 3. Synapse stopped
    saved = Saved(port=old.port, start_conf=pg.read_start_conf(old.confdir))
    saved.synapse_ran = services.synapse_running()
    if saved.synapse_ran and not services.stop_synapse():
        raise SetupError(messages.UPGRADE_STOP_REFUSED)
    if url is not None and synapse_answers(url, 2):
        if saved.synapse_ran:
            services.start_synapse()
        raise SetupError(messages.UPGRADE_SYNAPSE_STILL_ANSWERS.format(url=f"{url}{CLIENT_PATH}"))
    log = LOG_DIR / f"upgrade-postgresql-{old.version}-{plan.new_version}-{stamp}.log"
    # From here on, whatever fails puts Synapse back on the old cluster, running.
    try:
        saved.counts = postgres_counts(settings, list(KEY_TABLES))
        LOG_DIR.mkdir(parents=True, exist_ok=True, mode=0o750)  # as the migration's log
        # 4. pg_upgradecluster
        note(messages.UPGRADE_RUNNING.format(old=old.label, new=plan.new_version, log=log))
        code = pg.pg_upgradecluster(old.version, old.name, log)
        if code != 0:
            raise SetupError(
                messages.UPGRADE_PG_UPGRADECLUSTER_FAILED.format(code=code, last=pg.log_tail(log))
            )
        new = tuning.read_cluster(etc / plan.new_version / old.name)
        if new is None or new.port != saved.port:
            raise SetupError(messages.UPGRADE_NEW_PORT.format(port=saved.port))
        if tuning.postmaster(new) is None:
            pg.pg_ctlcluster(new.version, new.name, "start")
        # 5. collation versions
        refreshed = as_postgres(new, "refresh")["refreshed"]
        # 6. row counts
        after = postgres_counts(settings, list(KEY_TABLES))
        differ = pg.count_differences(saved.counts, after)
        if differ:
            raise SetupError(messages.UPGRADE_COUNTS_DIFFER.format(tables="; ".join(differ[:4])))
        # 7. Synapse started and answering
        if saved.synapse_ran:
            services.start_synapse()
            if not synapse_answers(url, SYNAPSE_WAIT):
                services.stop_synapse()
                raise SetupError(messages.UPGRADE_SYNAPSE_SILENT.format(url=f"{url}{CLIENT_PATH}"))
    except SetupError as err:
        raise failed(plan, saved, etc, err.message, log) from None
    except Exception as err:  # noqa: BLE001 - whatever broke, Synapse goes back
        raise failed(plan, saved, etc, f"{type(err).__name__}: {err}", log) from None
    # 8. the old cluster stays, stopped
    lines = [
        messages.UPGRADE_DONE.format(
            old=old.label,
            new=new.label,
            tables=len(saved.counts),
            rows=sum(saved.counts.values()),
            log=log,
        )
    ]
    if refreshed:
        lines.append(messages.UPGRADE_REFRESHED.format(names=", ".join(refreshed)))
    if old.dropin.exists() and not new.dropin.exists():
        lines.append(messages.UPGRADE_NOT_TUNED.format(new=new.label))
    if not saved.synapse_ran:
        lines.append(messages.UPGRADE_SYNAPSE_WAS_STOPPED)
    lines.append(messages.UPGRADE_KEEP_OLD.format(old=old.label))
    lines.append(plan.drop_line())
    if old.dropin.exists():
        # pg_dropcluster keeps a conf.d that is not empty; the next configure removes ours.
        lines.append(messages.UPGRADE_AFTER_DROP.format(path=old.dropin))
    return lines


def command(args: argparse.Namespace) -> int:
    """``matrix-synapse-setup upgrade-postgresql [--dry-run]``."""
    with locking.exclusive(note):
        facts = measure()
        plan = pg.plan_upgrade(facts)
        if plan is None:
            print(
                messages.UPGRADE_ALREADY_NEWEST.format(
                    cluster=facts.cluster.label,
                    installed=", ".join(facts.installed) or "none",
                )
            )
            return 0
        print(
            messages.UPGRADE_PLAN_HEADER.format(
                old=plan.old.label,
                version=version_text(facts.server_version),
                new=plan.new_version,
            )
        )
        for number, line in enumerate(plan.describe(size), 1):
            print(f"{'would ' if args.dry_run else ''}{number}. {line}")
        problems = pg.space_problems(list(facts.needs))
        if args.dry_run:
            for problem in problems:
                print(
                    messages.UPGRADE_NO_SPACE.format(
                        where=problem.path,
                        free=size(problem.free),
                        need=size(problem.need),
                        what=problem.what,
                    )
                )
            return 1 if problems else 0
        pg.refuse_space(problems, size)
        for line in carry_out(plan):
            print(line)
    return 0
