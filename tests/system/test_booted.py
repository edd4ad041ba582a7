"""The package under a real service manager: systemd is PID 1 of the scenario's root.

A journey (conftest.py: the steps of TestUnderSystemd share one root, in order) boots a
throwaway root per release (harness.BootedRoot: the same cached root and PostgreSQL layer
as test_scenarios.py, but /lib/systemd/system is in charge), on trixie and bookworm
(quick mode: see conftest.py).  PostgreSQL runs as postgresql@VER-main, started at boot;
the Synapse stand-in's maintainer scripts enable and start matrix-synapse.service as
upstream's do (deb-systemd-helper, deb-systemd-invoke), and Synapse tells systemd it is
ready (Type=notify).  So the package's restarts (deb-systemd-invoke), its drop-in
ordering Synapse after PostgreSQL and the daemon-reload that makes it count are real.
"""

from __future__ import annotations

import pytest

from scripts.devtools import steps
from scripts.devtools.harness import Root
from scripts.devtools.steps import ADVERSARIAL, SYNAPSE_UNIT
from tests.system import doctor_checks

SUITES = ["trixie", "bookworm"]
smoke = pytest.mark.smoke
NEW_PASSWORD = "r0tated 'under' systemd \\ $HOME %s :@ ßø"
THIRD_PASSWORD = "third-password-refused-restart"
DROPIN = "/usr/lib/systemd/system/matrix-synapse.service.d/matrix-synapse-setup.conf"
# What versions before 0.5.0 wrote at run time (matrix_synapse_setup/files/snippet.py).
RUNTIME_DROPIN = "/etc/systemd/system/matrix-synapse.service.d/matrix-synapse-setup.conf"


def check_synapse_running(root: Root, what: str) -> dict[str, str]:
    """Synapse's unit is active (running): Synapse told systemd it is ready."""
    props = steps.unit_properties(
        root, SYNAPSE_UNIT, "ActiveState", "SubState", "MainPID", "NRestarts", "Type"
    )
    root.check(
        (props.get("ActiveState"), props.get("SubState")) == ("active", "running")
        and props.get("Type") == "notify"
        and props.get("MainPID", "0") != "0",
        what,
        f"{SYNAPSE_UNIT}: Type=notify, active (running), a MainPID",
        f"{props}\n--- Synapse's journal ---\n{steps.synapse_log(root)}",
    )
    return props


def install_synapse_then_us(root: Root, debs, password: str) -> None:
    """The stand-in enables and starts Synapse's unit (SQLite); our package moves it to
    PostgreSQL and restarts it."""
    steps.apt_install(root, debs["synapse"], what="installing Synapse (stand-in package)")
    enabled = root.run(["systemctl", "is-enabled", SYNAPSE_UNIT]).output.strip()
    root.check(
        enabled == "enabled",
        "the stand-in's postinst enables Synapse's unit (deb-systemd-helper)",
        "enabled",
        enabled,
    )
    check_synapse_running(root, "the stand-in's postinst starts Synapse under systemd")
    steps.synapse_up(root, "Synapse runs on SQLite before our package")
    before = steps.synapse_pid(root)
    steps.preseed(root, db_password=password)
    steps.apt_install(root, debs["current"])
    check_synapse_running(root, "Synapse runs under systemd after our package")
    after = steps.synapse_pid(root)
    root.check(
        after != before,
        "installing our package restarts Synapse's unit (a new MainPID)",
        f"a MainPID other than {before}",
        after,
    )


@smoke
@pytest.mark.journey
@pytest.mark.parametrize("suite", SUITES, scope="class")
class TestUnderSystemd:
    """One booted root per release, its steps in order: Synapse arrives and moves to
    PostgreSQL, its password rotates (restart_on_change); it boots in the right order
    (boot_order); doctor judges the install and each fault (doctor_checks.py)."""

    @pytest.fixture(scope="class")
    def root(self, journey_root, suite) -> Root:
        return journey_root(suite, postgresql=True, booted=True)

    def test_restart_on_change(self, root, debs):
        restart_on_change(root, debs)

    def test_boot_order(self, root):
        boot_order(root)

    def test_doctor_on_a_booted_install(self, root):
        doctor_checks.doctor_on_a_healthy_install(root)


def restart_on_change(root: Root, debs) -> None:
    """Synapse under systemd moves to PostgreSQL when our package arrives; a new password
    through dpkg-reconfigure restarts its unit and it works; the same answers again
    restart nothing; a policy-rc.d refusing restarts is honoured."""
    install_synapse_then_us(root, debs, ADVERSARIAL)
    steps.synapse_chats(root)
    steps.synapse_on_postgresql(root)

    pid = steps.synapse_pid(root)
    steps.preseed(root, db_password=NEW_PASSWORD)
    root.ok(
        ["dpkg-reconfigure", "-fnoninteractive", "matrix-synapse-setup"],
        what="dpkg-reconfigure with a new (preseeded) password",
    )
    args = steps.check_snippet(root, password=NEW_PASSWORD, group="matrix-synapse")
    check_synapse_running(root, "Synapse runs under systemd after the rotation")
    new_pid = steps.synapse_pid(root)
    root.check(
        new_pid != pid,
        "a new password restarts Synapse's unit (deb-systemd-invoke)",
        f"a MainPID other than {pid}",
        new_pid,
    )
    root.check(
        steps.pg_login(root, args, NEW_PASSWORD).code == 0,
        "the new password logs in",
        "ok",
        "refused",
    )
    steps.synapse_recheck(root)

    pid = steps.synapse_pid(root)
    root.ok(
        ["dpkg-reconfigure", "-fnoninteractive", "matrix-synapse-setup"],
        what="dpkg-reconfigure with the same answers",
    )
    check_synapse_running(root, "Synapse still runs under systemd")
    now = steps.synapse_pid(root)
    root.check(now == pid, "the same answers restart nothing", f"MainPID {pid}", f"MainPID {now}")
    steps.synapse_recheck(root)

    # An admin's policy-rc.d that refuses restarts is honoured (deb-systemd-invoke asks it);
    # the admin restarts Synapse later.
    steps.policy_rc_d(root, deny_synapse=("restart", "try-restart"))
    steps.preseed(root, db_password=THIRD_PASSWORD)
    root.ok(
        ["dpkg-reconfigure", "-fnoninteractive", "matrix-synapse-setup"],
        what="dpkg-reconfigure with a new password, policy-rc.d refusing restarts",
    )
    steps.check_snippet(root, password=THIRD_PASSWORD, group="matrix-synapse")
    now = steps.synapse_pid(root)
    root.check(
        now == pid,
        "policy-rc.d refusing restarts is honoured",
        f"MainPID {pid}",
        f"MainPID {now}",
    )
    steps.policy_rc_d_default(root)
    root.ok(["deb-systemd-invoke", "restart", SYNAPSE_UNIT], what="the admin restarts Synapse")
    now = steps.synapse_pid(root)
    root.check(now != pid, "the admin's restart restarts Synapse", f"not {pid}", now)
    steps.synapse_recheck(root)


def boot_order(root: Root) -> None:
    """After a reboot systemd starts PostgreSQL's cluster first and Synapse after it (our
    drop-in), so Synapse comes up on the first try and its users are still there."""
    root.check(root.exists(DROPIN), "our package orders Synapse (drop-in)", DROPIN, "absent")
    after = steps.unit_properties(root, SYNAPSE_UNIT, "After")["After"].split()
    root.check(
        "postgresql.service" in after,
        "systemd orders Synapse after PostgreSQL (the drop-in is loaded: daemon-reload)",
        "postgresql.service in After=",
        " ".join(after),
    )

    retire_the_runtime_dropin(root)

    root.reboot()
    steps.check_cluster_booted(root)
    steps.synapse_up(root, "Synapse starts at boot")
    synapse = check_synapse_running(root, "Synapse's unit runs after the boot")
    root.check(
        synapse["NRestarts"] == "0",
        "Synapse started at boot on the first try (not by Restart=always after failing)",
        "NRestarts=0",
        f"NRestarts={synapse['NRestarts']}\n--- Synapse's journal ---\n{steps.synapse_log(root)}",
    )
    stamps = ("ActiveEnterTimestampMonotonic", "InactiveExitTimestampMonotonic")
    stamps += ("ExecMainStartTimestampMonotonic",)
    pg_unit = steps.postgresql_unit(root)
    pg = steps.unit_properties(root, pg_unit, *stamps)
    syn = steps.unit_properties(root, SYNAPSE_UNIT, *stamps)
    pg_ready = int(pg["ActiveEnterTimestampMonotonic"])
    syn_starting = int(syn["InactiveExitTimestampMonotonic"])  # its ExecStartPre begins
    syn_main = int(syn["ExecMainStartTimestampMonotonic"])
    root.check(
        0 < pg_ready <= syn_starting <= syn_main,
        f"systemd started Synapse only once {pg_unit} was up",
        f"{pg_unit} active (ActiveEnter) <= Synapse leaves inactive <= Synapse's main process",
        f"{pg_unit}: {pg}\n{SYNAPSE_UNIT}: {syn}",
    )
    steps.synapse_recheck(root)


def retire_the_runtime_dropin(root: Root) -> None:
    """The configure of an upgrade from 0.4.0 (dpkg's call: postinst configure 0.4.0)
    removes the drop-in that version wrote into /etc, and systemd stops loading it; an
    edited one is the admin's and stays."""
    from matrix_synapse_setup.files import snippet

    postinst = ["/var/lib/dpkg/info/matrix-synapse-setup.postinst", "configure", "0.4.0"]
    env = ["env", "DEBIAN_FRONTEND=noninteractive"]
    for edited in (False, True):
        text = snippet.RUNTIME_DROPIN_TEXT + ("Requires=postgresql.service\n" if edited else "")
        root.ok(["mkdir", "-p", RUNTIME_DROPIN.rsplit("/", 1)[0]], what="the old drop-in's dir")
        root.write(RUNTIME_DROPIN, text)
        root.ok(["systemctl", "daemon-reload"], what="systemd loads the old drop-in")
        out = root.ok([*env, *postinst], what="configure after an upgrade from 0.4.0")
        paths = steps.unit_properties(root, SYNAPSE_UNIT, "DropInPaths")["DropInPaths"].split()
        if edited:
            root.check(
                root.exists(RUNTIME_DROPIN) and "it is yours now" in out.output,
                "an edited runtime drop-in is kept, and the run says so",
                f"{RUNTIME_DROPIN} kept",
                out.output,
            )
            root.ok(["rm", "-r", RUNTIME_DROPIN.rsplit("/", 1)[0]], what="the admin removes it")
            root.ok(["systemctl", "daemon-reload"], what="reload")
        else:
            root.check(
                not root.exists(RUNTIME_DROPIN) and paths == [DROPIN],
                "the runtime drop-in of 0.4.0 is removed and systemd loads only ours",
                f"DropInPaths={DROPIN}",
                f"exists={root.exists(RUNTIME_DROPIN)} DropInPaths={paths}\n{out.output}",
            )
