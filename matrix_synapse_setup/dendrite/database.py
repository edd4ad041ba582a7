"""Dendrite's role and database: provisioned by the same code as Synapse's, then proven
with exactly the connection string Dendrite will be given, as the user Dendrite runs as.

With peer authentication that proof runs in a forked child with the uid of Dendrite's
system user (:class:`provision.Superuser` with a handler of ours), since the login is
that user's; with a password it runs here.  Either way the checks are Synapse's
(:func:`provision.checks`): the server's version, the database's encoding, collation and
owner, and a table created and rolled back.  The server's connection limits are read on
the same connection.
"""

from __future__ import annotations

import pwd
from typing import Any

from matrix_synapse_setup.core.paths import PACKAGE
from matrix_synapse_setup.core.settings import Settings
from matrix_synapse_setup.core.steps import Step
from matrix_synapse_setup.dendrite.uri import Target
from matrix_synapse_setup.postgres import budget, libpq, provision, superuser


def settings_of(target: Target) -> Settings:
    """*target* as the Settings the shared provisioning and its messages work with."""
    return Settings(
        host=target.host,
        port=target.port,
        dbname=target.dbname,
        user=target.user,
        password=target.password or "",
        sslmode=target.sslmode,
        sslrootcert=target.sslrootcert,
    )


def provision_database(target: Target, socket_dir: str) -> list[Step]:
    """Create or update the role and the database on the local cluster (UTF8, C, owned
    by the role, from template0); nothing is verified here (see :func:`verify`)."""
    return provision.provision(
        settings_of(target),
        socket_dir=socket_dir,
        peer=target.password is None,
        verify_as_role=False,
    )


def _check(request: dict[str, Any]) -> dict[str, Any]:
    target = Target(**request["target"])
    settings = settings_of(target)
    params = {
        "dbname": request["uri"],
        "connect_timeout": provision.CONNECT_TIMEOUT,
        "application_name": PACKAGE,
    }
    try:
        conn = libpq.Connection(params, expand=True)
    except libpq.Error as err:
        raise provision.connect_error(err, settings) from None
    with conn:
        steps = provision.checks(conn, settings)
        limits = budget.read_limits(conn)
    return {"steps": [step._asdict() for step in steps], "limits": list(limits)}


def _answer(request: dict[str, Any]) -> dict[str, Any]:
    try:
        return _check(request)
    except Exception as err:  # noqa: BLE001 - answered to the parent
        return superuser.error_answer(err)


def verify(target: Target, connection_string: str) -> tuple[list[Step], budget.Limits]:
    """Log in with *connection_string* as Dendrite will (as its system user when the
    login is peer's) and check the database; the steps, and the server's limits."""
    request = {"uri": connection_string, "target": target._asdict()}
    if target.password is None:
        child = provision.Superuser.start(pwd.getpwnam(target.user), handler=_answer)
        answer = child.ask(request)
    else:
        answer = _check(request)
    steps = [Step(**step) for step in answer["steps"]]
    return steps, budget.Limits(*answer["limits"])
