"""The first admin account, end to end: preseeded with the install, then used by a real
Matrix client.

A booted throwaway root (systemd is PID 1, see test_booted.py) with PostgreSQL and the
Synapse stand-in (the real Synapse from PyPI, laid out as upstream's package).  As
upstream's homeserver.yaml, the stand-in's has no registration secret; the test-only
conf.d file that gives the judge one is removed first, so the package's own secret
(registration.secret, named by registration.yaml) is the one that creates the account.
The judge, matrix-nio, logs in with the account, creates a room, sends a message and
calls Synapse's admin API.
"""

from __future__ import annotations

import json

import pytest

from scripts.devtools import steps
from scripts.devtools.harness import DEBS, Root

SUITES = ["trixie", "bookworm"]
suites = pytest.mark.parametrize("suite", SUITES)
ADMIN = "firstadmin"
PASSWORD = 'Adm1n "first" pass \\ $HOME ü'
NEW_PASSWORD = "r0tated admin pass ß"
SECRET = "/etc/matrix-synapse/conf.d/registration.secret"
REGISTRATION = "/etc/matrix-synapse/conf.d/registration.yaml"
RECORD = "/var/lib/matrix-synapse-setup/admin.json"
TEST_SECRET = "/etc/matrix-synapse/conf.d/zz-test-registration.yaml"


def logs_in(root: Root, password: str, what: str) -> None:
    steps.judge_stdin(root, "admin", "--user", ADMIN, stdin=password, what=what)


def refused(root: Root, password: str, what: str) -> None:
    steps.judge_stdin(root, "refused", "--user", ADMIN, stdin=password, what=what)


def mode_owner(root: Root, path: str) -> str:
    return root.ok(["stat", "-c", "%a %U:%G", path], what=f"stat {path}").output.strip()


def record(root: Root) -> dict:
    return json.loads(root.read(RECORD))


def reconfigure(root: Root, password: str, what: str, says: str, meaning: str) -> None:
    """dpkg-reconfigure with *password* preseeded as the admin's; its output says *says*."""
    steps.preseed(root, admin_password=password)
    result = root.ok(
        ["dpkg-reconfigure", "-fnoninteractive", "matrix-synapse-setup"],
        what=f"dpkg-reconfigure with {what}",
    )
    root.check(says in result.output, meaning, says, result.tail())


@pytest.mark.smoke
@suites
def test_first_admin_account(make_root, debs, suite):
    root = make_root(suite, booted=True, layer="synapse")  # Synapse runs, on SQLite
    root.ok(["rm", "-f", TEST_SECRET], what="no registration secret, as upstream ships it")
    hs = root.read("/etc/matrix-synapse/homeserver.yaml")
    root.check(
        "registration_shared_secret:" not in hs,
        "homeserver.yaml has no registration secret (as upstream's)",
        "no registration_shared_secret",
        "present",
    )

    # 1. apt install with a preseeded admin account.
    steps.preseed(root, admin_user=ADMIN, admin_password=PASSWORD)
    result = steps.apt_install(root, debs["current"], what="apt install, admin account preseeded")
    out = result.output
    root.check(
        f"Created the server admin account @{ADMIN}:mss.test" in out,
        "the install says it created the admin account",
        "Created the server admin account ...",
        result.tail(),
    )
    root.check("Waiting up to" in out, "the wait for Synapse is printed", "Waiting up to", out)
    root.check(PASSWORD not in out, "the password is not printed", "absent", "present")
    # The secret: root and Synapse only; named by the snippet; in no other file.
    root.check(
        mode_owner(root, SECRET) == "640 root:matrix-synapse",
        "the registration secret is 0640 root:matrix-synapse",
        "640 root:matrix-synapse",
        mode_owner(root, SECRET),
    )
    root.check(
        f"registration_shared_secret_path: {SECRET}" in root.read(REGISTRATION),
        "conf.d points Synapse at the secret file",
        SECRET,
        root.read(REGISTRATION),
    )
    secret = root.read(SECRET).strip()
    leaks = root.run(
        ["grep", "-rlF", "--", secret, "/etc", "/var/log", "/var/cache/debconf", "/root"]
    ).output.split()
    root.check(
        leaks == [SECRET],
        "the secret is in its own file only",
        f"[{SECRET}]",
        str(leaks),
    )
    root.check(
        mode_owner(root, RECORD) == "600 root:root",
        "the kept session is root's only",
        "600 root:root",
        mode_owner(root, RECORD),
    )
    steps.password_not_in_debconf(root, PASSWORD)

    # 2-4. A real client logs in, creates a room, sends a message; the admin API answers.
    logs_in(root, PASSWORD, "the admin logs in, chats and calls the admin API")

    # Running the install again leaves the account alone (no request to Synapse).
    kept = record(root)
    again = root.ok(
        ["apt-get", "install", "-y", "-q", "--reinstall", f"{DEBS}/{debs['current'].name}"],
        what="apt install --reinstall",
        env=steps.NONINTERACTIVE,
    )
    root.check(
        "Created the server admin account" not in again.output
        and "Waiting up to" not in again.output,
        "the second install leaves the account alone, without asking Synapse",
        "no creation, no wait",
        again.tail(),
    )
    root.check(record(root) == kept, "the kept session is unchanged", "same", "changed")
    logs_in(root, PASSWORD, "the admin still logs in with the first password")

    # Rotating the password: a preseeded new one and dpkg-reconfigure.
    reconfigure(
        root,
        NEW_PASSWORD,
        "a new admin password",
        f"Changed the password of the admin account @{ADMIN}:mss.test",
        "the reconfigure says it changed the password",
    )
    steps.password_not_in_debconf(root, NEW_PASSWORD)
    refused(root, PASSWORD, "the old admin password is refused")
    logs_in(root, NEW_PASSWORD, "the admin logs in with the new password")

    # The same password again: nothing to change.
    reconfigure(
        root,
        NEW_PASSWORD,
        "the same admin password",
        "has that password: left alone",
        "the same password changes nothing",
    )


@suites
def test_admin_waits_for_synapse(make_root, debs, suite):
    """Installed before Synapse: the account is created by the trigger on Synapse's unit
    once Synapse is installed (and running); the run says so."""
    root = make_root(suite, postgresql=True, booted=True)
    steps.preseed(root, admin_user=ADMIN, admin_password=PASSWORD)
    first = steps.apt_install(root, debs["current"], what="apt install before Synapse")
    root.check(
        "Synapse is not installed yet: the admin account" in first.output,
        "the install says the account waits for Synapse",
        "Synapse is not installed yet ...",
        first.tail(),
    )
    steps.apt_install(root, debs["synapse"], what="installing Synapse (stand-in) afterwards")
    root.ok(["rm", "-f", TEST_SECRET], what="removing the test-only secret")
    # The stand-in's secret was in effect when the trigger ran: either secret created
    # the account; what counts is that it exists and works.
    logs_in(root, PASSWORD, "the account made by the trigger logs in and is an admin")
    steps.password_not_in_debconf(root, PASSWORD)
