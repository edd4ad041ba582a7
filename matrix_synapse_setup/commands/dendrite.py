"""``matrix-synapse-setup dendrite --config FILE``: Dendrite's role and database on the same
PostgreSQL, provisioned as Synapse's are, and the admin's dendrite.yaml pointed at them.

Inspect, decide, then act: the file is read and checked first (before the root check,
so that a file the caller cannot read says so), every refusal comes before anything
changes, the role and database are provisioned, the exact connection string is proven
as Dendrite will log in, and only then the one value in the file changes (a backup of
the file kept beside it).  Dendrite itself is never started or stopped: it has no
package or unit of Debian's; the admin restarts it.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import pwd
import secrets
import sys
from pathlib import Path

from matrix_synapse_setup.commands.arguments import read_password
from matrix_synapse_setup.commands.doctor import dendrite as doctor_dendrite
from matrix_synapse_setup.commands.doctor.facts import Facts
from matrix_synapse_setup.core import messages
from matrix_synapse_setup.core.errors import SetupError
from matrix_synapse_setup.core.output import note
from matrix_synapse_setup.core.settings import (
    SYSTEM_CA_BUNDLE,
    drop_libpq_environment,
    is_local,
    validate_host,
    validate_name,
    validate_password,
    validate_port,
)
from matrix_synapse_setup.core.steps import CHANGED, CREATED, UNCHANGED, Step, changed
from matrix_synapse_setup.dendrite import config, uri
from matrix_synapse_setup.dendrite import database as dendrite_db
from matrix_synapse_setup.dendrite.uri import Target
from matrix_synapse_setup.files import lock as locking
from matrix_synapse_setup.files import state
from matrix_synapse_setup.files.atomic import Ownership, write_atomic
from matrix_synapse_setup.postgres import budget

DEFAULT_HOST = "/run/postgresql"
# A password without --host: over TCP to the local cluster, since Debian's pg_hba.conf
# takes peer authentication only on the socket.
TCP_HOST = "127.0.0.1"
DEFAULT_NAME = "dendrite"
# Placeholders of Dendrite's dendrite-sample.yaml: a value nobody's data is behind.
SAMPLE_USER, SAMPLE_HOST = "username", "hostname"


def add_parser(commands: argparse._SubParsersAction) -> None:
    text = "provision Dendrite's role and database and point its dendrite.yaml at them"
    sub = commands.add_parser(
        "dendrite",
        help=text,
        description=text[0].upper() + text[1:] + ": UTF8, C, owned by the role; peer "
        "authentication over the local socket by default, else a password in the URI. Only "
        "global.database.connection_string changes; the file's comments, order, owner and "
        "mode are kept, and a backup beside it.",
    )
    sub.set_defaults(func=command)
    sub.add_argument("--config", required=True, help="Dendrite's configuration (dendrite.yaml)")
    sub.add_argument("--user", default=DEFAULT_NAME, help="role name (default: %(default)s)")
    sub.add_argument("--dbname", default=DEFAULT_NAME, help="database name (default: %(default)s)")
    sub.add_argument(
        "--host",
        default=None,
        help=f"a socket directory (peer authentication, default: {DEFAULT_HOST}; "
        f"{TCP_HOST} with --password-file), 'localhost', 127.0.0.1 or ::1 (the local "
        "cluster over TCP, with a password), or a remote server",
    )
    sub.add_argument("--port", default="5432", help="server port (default: %(default)s)")
    sub.add_argument("--sslmode", help="TLS mode: " + ", ".join(uri.SSLMODES))
    sub.add_argument("--sslrootcert", help="CA certificate file for verify-ca/verify-full")
    sub.add_argument(
        "--password-file",
        metavar="FILE",
        help="log in with the password in FILE ('-' for standard input), not peer",
    )
    sub.add_argument("--dry-run", action="store_true", help="show the change as a diff only")
    sub.add_argument("--socket-dir", default=None, help=argparse.SUPPRESS)
    # Where doctor learns of the file: the tests name one of their own.
    sub.add_argument("--record", default=str(state.DENDRITE_FILE), help=argparse.SUPPRESS)


# --- deciding -----------------------------------------------------------------------------


def choose_target(args: argparse.Namespace, current: str) -> Target:
    """Where and how Dendrite will log in, from the options and the file's current
    connection string (whose password is kept when it is the same role's)."""
    host = validate_host(args.host or (TCP_HOST if args.password_file else DEFAULT_HOST))
    port = validate_port(args.port)
    user = validate_name("role", args.user)
    dbname = validate_name("database", args.dbname)
    local = is_local(host)
    sslmode = (args.sslmode or "").strip() or ("disable" if local else "verify-full")
    if sslmode not in uri.SSLMODES:
        raise SetupError(
            messages.DENDRITE_SSLMODE.format(value=sslmode, modes=", ".join(uri.SSLMODES))
        )
    rootcert = args.sslrootcert or (
        SYSTEM_CA_BUNDLE if sslmode in ("verify-ca", "verify-full") else None
    )
    password: str | None
    if args.password_file:
        password = validate_password(read_password(args.password_file))
    elif host.startswith("/"):
        try:
            pwd.getpwnam(user)
        except KeyError:
            raise SetupError(messages.DENDRITE_NO_SYSTEM_USER.format(user=user)) from None
        password = None
    else:
        before = uri.parse(current) if current else None
        if before is not None and before.user == user and before.password:
            password = before.password
        elif local:
            password = secrets.token_urlsafe(32)
        else:
            raise SetupError(messages.DENDRITE_REMOTE_PASSWORD.format(user=user))
    return Target(user, dbname, host, port, password, sslmode, rootcert)


def same_database(a: Target, b: Target) -> bool:
    if a.dbname != b.dbname or a.port != b.port:
        return False
    return a.host == b.host or (is_local(a.host) and is_local(b.host))


def check_current(document: config.Document, target: Target, value: str) -> None:
    """Refuse a file whose connection strings point Dendrite at data we would leave
    behind: the admin's non-PostgreSQL choice, another PostgreSQL database, or a
    component's own string naming another database."""
    current = document.connection_string
    if current and not uri.is_postgres(current):
        raise SetupError(
            messages.DENDRITE_NOT_POSTGRES.format(path=document.path, value=uri.mask(current))
        )
    if current and current != value:
        before = uri.parse(current)
        sample = before is not None and (before.user, before.host) == (SAMPLE_USER, SAMPLE_HOST)
        if not sample and (before is None or not same_database(before, target)):
            raise SetupError(
                messages.DENDRITE_OTHER_DATABASE.format(
                    path=document.path,
                    dbname=before.dbname if before else "?",
                    where=f"{before.host}:{before.port}" if before else "an unreadable URI",
                    ours=target.dbname,
                )
            )
    others = [
        key
        for key, string in config.component_strings(document.data)
        if string != value and not _names(string, target)
    ]
    if others:
        more = messages.DENDRITE_COMPONENT_MORE.format(count=len(others) - 1)
        raise SetupError(
            messages.DENDRITE_COMPONENT_OVERRIDE.format(
                path=document.path, key=others[0], more=more if len(others) > 1 else ""
            )
        )


def _names(string: str, target: Target) -> bool:
    """Whether *string* names *target*'s database."""
    other = uri.parse(string)
    return other is not None and same_database(other, target)


def new_mode(document: config.Document, target: Target) -> int:
    """The file's mode: its own, less the others' bits once it holds a password."""
    return document.mode & ~0o007 if target.password else document.mode


# --- acting -------------------------------------------------------------------------------


def backup_name(path: Path) -> Path:
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S")
    return path.with_name(f"{path.name}.before-setup-{stamp}")


def keep_backup(document: config.Document) -> Path:
    """A copy of the file as it was, 0600 root's (it may hold the old password)."""
    backup = backup_name(document.path.resolve())
    write_atomic(backup, document.text, Ownership(0, 0, 0o600), crash_point=None)
    return backup


def budget_warnings(
    document: config.Document, value: str, limits: budget.Limits, target: Target
) -> list[str]:
    """Warnings when Dendrite's pools (and Synapse's on the same cluster) may not fit."""
    found, unlimited = doctor_dendrite.dendrite_budget(
        document, value, limits, doctor_dendrite.synapse_pools(Facts(), target)
    )
    if unlimited:
        return [
            messages.DENDRITE_UNLIMITED.format(
                pool=", ".join(unlimited), path=document.path, available=found.available
            )
        ]
    if found.fits:
        return []
    return [messages.DENDRITE_BUDGET.format(text=found.text(), path=document.path)]


def command(args: argparse.Namespace) -> int:
    drop_libpq_environment()  # log in as Dendrite will, not with the admin's PG* defaults
    path = Path(args.config)
    document = config.read(path)
    target = choose_target(args, document.connection_string)
    if args.host is None and target.password is not None:
        note(messages.DENDRITE_PASSWORD_OVER_TCP.format(host=target.host))
    value = uri.build(target)
    check_current(document, target, value)
    text = config.edit(document, value)
    mode = new_mode(document, target)
    where = "the local cluster" if is_local(target.host) else f"{target.host}:{target.port}"
    how = "peer authentication" if target.password is None else "a password"
    if args.dry_run:
        print(
            f"would provision role {target.user} and database {target.dbname} on {where}"
            if is_local(target.host)
            else f"would verify role {target.user} and database {target.dbname} on {where}"
        )
        print(f"would log in as Dendrite will: {uri.mask(value)} ({how})")
        diff = config.masked_diff(document, text)
        print(diff if diff else f"{path}: unchanged", end="" if diff else "\n")
        if mode != document.mode:
            print(f"would set {path}'s mode to {mode:04o} (was {document.mode:04o})")
        print("dry run: nothing changed")
        return 0
    if os.geteuid() != 0:
        # Checked after the file, so that a file this user cannot read says so first.
        raise SetupError(messages.DENDRITE_NEED_ROOT)
    socket_dir = args.socket_dir or (target.host if target.socket else DEFAULT_HOST)
    with locking.exclusive(note):
        steps: list[Step] = []
        if is_local(target.host):
            steps += dendrite_db.provision_database(target, socket_dir)
        checked, limits = dendrite_db.verify(target, value)
        steps += checked
        warnings = budget_warnings(document, value, limits, target)
        if text != document.text or mode != document.mode:
            backup = keep_backup(document)
            owner = Ownership(document.uid, document.gid, mode)
            # A symbolic link stays one: the file it names is replaced.
            write_atomic(path.resolve(), text, owner, crash_point=None)
            detail = "global.database.connection_string"
            if mode != document.mode:
                detail += f", mode {mode:04o}"
            steps.append(Step(str(path), CHANGED, detail))
            steps.append(Step("backup", CREATED, str(backup)))
        else:
            steps.append(Step(str(path), UNCHANGED))
        with contextlib.suppress(OSError):
            state.store_dendrite(path.resolve(), Path(args.record))
    for step in steps:
        print(step)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if target.password is not None and changed(steps):
        owner = Ownership(document.uid, document.gid, mode).describe()
        print(messages.DENDRITE_PASSWORD_IN_FILE.format(path=path, owner=owner))
    print("changed: restart Dendrite" if changed(steps) else "unchanged: nothing to do")
    return 0
