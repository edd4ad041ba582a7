"""A Synapse that no service manager knows: "running" means "answers".

Synapse runs in containers, under other supervisors, or started by hand: then neither
systemd nor an init script knows it, yet it answers on its client listener.  A throwaway
root without an init system, with the Synapse stand-in (the real Synapse from PyPI, laid
out as upstream's package) whose test-only init script is removed, and Synapse started
by hand as its user.  `matrix-synapse-setup admin create` asks Synapse itself, not the
service manager: it creates the account, which a real Matrix client (the judge) logs in
with; doctor says Synapse answers, and that the service manager does not know it.
"""

from __future__ import annotations

import json

import pytest

from scripts.devtools import steps
from scripts.devtools.harness import Root

SUITES = ["trixie", "bookworm"]
suites = pytest.mark.parametrize("suite", SUITES)
ADMIN = "handadmin"
PASSWORD = 'by "hand" pass \\ $HOME ü'
PASSWORD_FILE = "/root/admin-password"
INIT_SCRIPT = "/etc/init.d/matrix-synapse"
TEST_SECRET = "/etc/matrix-synapse/conf.d/zz-test-registration.yaml"
SYNAPSE = (
    "/opt/venvs/matrix-synapse/bin/python -m synapse.app.homeserver "
    "--config-path=/etc/matrix-synapse/homeserver.yaml "
    "--config-path=/etc/matrix-synapse/conf.d/"
)
LOG = "/var/log/matrix-synapse/by-hand.log"


def start_by_hand(root: Root, what: str) -> None:
    """Synapse started as its user in the background, as the unit's ExecStart does it, with
    no service manager: its output into a log, no descriptor of this shell kept."""
    inner = f"cd /var/lib/matrix-synapse && exec setsid {SYNAPSE} </dev/null >>{LOG} 2>&1"
    root.ok(
        f"runuser -u matrix-synapse -- sh -c '{inner}' </dev/null >/dev/null 2>&1 &",
        what=what,
    )
    steps.synapse_up(root, what)


def stop_by_hand(root: Root) -> None:
    """SIGTERM to the Synapse started by hand (the root has its own process namespace),
    then wait until it is gone."""
    root.ok(
        "pid=$(pgrep -u matrix-synapse -f '^/opt/venvs/matrix-synapse/bin/python -m synapse'); "
        "kill $pid; "
        "while kill -0 $pid 2>/dev/null; do sleep 0.2; done",
        what="stopping the Synapse started by hand",
    )


def restart_by_hand(root: Root, what: str) -> None:
    stop_by_hand(root)
    start_by_hand(root, what)


def admin_create(root: Root) -> tuple[int, str]:
    cmd = ["matrix-synapse-setup", "admin", "create", "--user", ADMIN]
    result = root.run([*cmd, "--password-file", PASSWORD_FILE], timeout=300)
    return result.code, result.output


@suites
def test_admin_create_asks_synapse_not_the_service_manager(make_root, debs, suite):
    root = make_root(suite, layer="synapse", synapse_started=False)
    root.ok(["rm", "-f", INIT_SCRIPT, TEST_SECRET], what="no init script, no test-only secret")
    root.check(
        not root.exists("/run/systemd/system"), "no systemd runs", "no /run/systemd", "there"
    )
    start_by_hand(root, "Synapse started by hand answers")

    out = steps.apt_install(root, debs["current"], what="apt install beside it").output
    root.check(
        "restart it so that it reads /etc/matrix-synapse/conf.d/database.yaml" in out,
        "the install says that Synapse must be restarted by hand",
        "restart it so that it reads ...database.yaml",
        out[-3000:],
    )
    restart_by_hand(root, "Synapse restarted by hand, on PostgreSQL")
    tables = steps.synapse_table_count(root)
    root.check(tables > 100, "Synapse uses PostgreSQL now", "> 100 tables", str(tables))

    root.write(PASSWORD_FILE, PASSWORD + "\n", mode=0o600)
    code, said = admin_create(root)
    root.check(
        code == 1
        and "not running" not in said
        and "runs outside the service manager" in said
        and "registration.yaml" in said,
        "the new secret needs a restart that only the admin can make, and says so",
        "exit 1, '... runs outside the service manager ... registration.yaml ...'",
        f"exit {code}: {said}",
    )
    restart_by_hand(root, "Synapse restarted by hand, with the registration secret")
    code, said = admin_create(root)
    root.check(
        code == 0 and f"Created the server admin account @{ADMIN}:mss.test" in said,
        "admin create creates the account of a Synapse no service manager knows",
        "exit 0, 'Created the server admin account ...'",
        f"exit {code}: {said}",
    )
    root.check(PASSWORD not in said, "the password is not printed", "absent", "present")
    steps.judge_stdin(
        root, "admin", "--user", ADMIN, stdin=PASSWORD, what="the admin logs in and is an admin"
    )

    result = root.run(["matrix-synapse-setup", "doctor", "--json"], timeout=120)
    rows = {row["name"]: row for row in json.loads(result.output)["checks"]}
    synapse = rows["synapse"]
    root.check(
        synapse["status"] == "ok"
        and "answers at http://127.0.0.1:8008" in synapse["detail"]
        and "service manager does not show it running" in synapse["detail"],
        "doctor: Synapse answers; the service manager's view is told beside it",
        "ok, 'answers at ...; the service manager does not show it running ...'",
        str(synapse),
    )
