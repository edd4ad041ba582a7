"""Entry point of the maintainer scripts: ``maintscript-helper <script> <dpkg arguments>``.

The questions are asked by debian/config, a shell script (before the package is
unpacked).  Every run of the postinst is the same pipeline: check the answers (asking
again what is refused), :func:`~.inspect.inspect` the system once, decide every step in
:func:`~.plan.plan`, and :func:`~.execute.execute` them.  A failure explains itself and,
when someone can answer, asks again and starts over from the inspection.  An unknown
script or action is accepted and ignored (a newer config script may call an older
helper).

Output goes to stderr only: the debconf pipe is on stdin and fd 3 (or fd 1).
"""

from __future__ import annotations

import sys
from pathlib import Path

from matrix_synapse_setup.core import messages, paths
from matrix_synapse_setup.core.errors import SetupError, run
from matrix_synapse_setup.core.output import say
from matrix_synapse_setup.core.settings import WORKER_PRESETS, drop_libpq_environment
from matrix_synapse_setup.dpkg import debconf, packages
from matrix_synapse_setup.dpkg.debconf import IGNORE, RETRY, Conversation
from matrix_synapse_setup.files import atomic, lock
from matrix_synapse_setup.postgres.queries import ServerUnavailable
from matrix_synapse_setup.postinst import execute, inspect, workers
from matrix_synapse_setup.postinst import plan as planner
from matrix_synapse_setup.synapse import service

NONE = WORKER_PRESETS[0]


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    drop_libpq_environment()
    return run(lambda: dispatch(args), prog=paths.PACKAGE)


def dispatch(argv: list[str]) -> int:
    script = argv[0] if argv else ""
    action = argv[1] if len(argv) > 1 else ""
    if script == "postinst" and action == "configure":
        old_version = argv[2] if len(argv) > 2 else ""
        return configure(Conversation(debconf.connect()), old_version=old_version)
    if script == "postinst" and action == "triggered":
        names = " ".join(argv[2:]).split()
        status = 0
        if packages.PROVISION_TRIGGER in names:
            status = configure(Conversation(debconf.connect()), deferred=True)
        if set(names) - {packages.PROVISION_TRIGGER}:
            status = status or synapse_arrived()
            if not status and debconf.debconf_running():
                conv = Conversation(debconf.connect())
                if conv.workers()[0] != NONE:
                    # The workers wait for Synapse's configuration (see plan.workers_step):
                    # the whole run, which also makes the admin account.
                    return configure(conv, deferred=True)
                user, password = conv.admin_answers()
                if user:
                    try:
                        with lock.exclusive(say):
                            execute.admin_account(conv, user, password)
                    except SetupError as err:
                        # Synapse's package is what is being configured: its trigger
                        # must not fail because of the account; the admin can retry.
                        say(err.message)
        return status
    if script == "prerm" and action == "remove":
        with lock.exclusive(say):
            return workers.package_removed()
    return 0


def configure(conv: Conversation, *, old_version: str = "", deferred: bool = False) -> int:
    """postinst configure (or our provisioning trigger): inspect, plan, execute; on a
    failure, explain, ask again and start over from the inspection."""
    with lock.exclusive(say):
        reading = inspect.read_on_disk(old_version)
        try:
            conv.ask(known_password=reading.disk.password is not None)
            while True:
                try:
                    state = inspect.inspect(
                        conv, reading, old_version=old_version, deferred=deferred
                    )
                    plan = planner.plan(state)
                    done = execute.execute(conv, plan, state.owner)
                    if not done.defer_failed:
                        return 0
                    deferred = True  # dpkg-trigger failed: provision now
                except ServerUnavailable as err:
                    choice = conv.ask_failure(err.message)
                    if choice == IGNORE:
                        # The password was not applied: it stays (in debconf's root-only
                        # passwords.dat) for the dpkg-reconfigure that will apply it.
                        say(messages.IGNORED.format(path=paths.SNIPPET))
                        return 0
                    if choice != RETRY:
                        raise SetupError(f"{err.message}\n{messages.ABORTED}") from None
                except SetupError as err:
                    # Wrong answers or a database Synapse cannot use: never "ignore".
                    if not conv.setup_error(err.message):
                        raise
                    reading.close()
                    reading = inspect.read_on_disk(old_version)
                    conv.ask(known_password=reading.disk.password is not None, again=True)
                    continue
                reading.close()
                reading = inspect.read_on_disk(old_version)  # after a retry, or a failed defer
        finally:
            reading.close()


def synapse_arrived(path: Path = paths.SNIPPET) -> int:
    """Synapse's unit file appeared (or changed): let its user read the snippet (the
    drop-in that orders it after PostgreSQL is shipped, under /usr/lib)."""
    if not path.exists():
        return 0
    owner = atomic.ownership()
    changed = atomic.fix_ownership(path, owner)
    for suffix in paths.UCF_BACKUP_SUFFIXES:
        atomic.fix_ownership(path.with_name(path.name + suffix), owner)
    changed = atomic.fix_ownership(paths.PASSFILE, atomic.passfile_ownership()) or changed
    if changed:
        say(messages.WROTE_SNIPPET.format(path=path, owner=owner.describe()))
        service.restart_synapse("restart")
    workers.synapse_arrived()
    return 0
