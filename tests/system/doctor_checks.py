"""matrix-synapse-setup doctor on a real install: the checks of a step of the journey under
systemd (test_booted.py: systemd is PID 1 of the root, PostgreSQL and the Synapse stand-in
run as services, our package installed with apt).  Not a test module itself.

doctor on the healthy install (all ok, the backup row says there is no dump yet), again
after `matrix-synapse-setup backup` made one, then each fault in turn, each undone before
the next: Synapse stopped, the snippet unreadable by Synapse's user, another conf.d file
winning Synapse's database, PostgreSQL stopped.
"""

from __future__ import annotations

import json

from matrix_synapse_setup.commands.doctor import ROWS
from scripts.devtools import steps
from scripts.devtools.harness import Root
from scripts.devtools.steps import SNIPPET, SYNAPSE_UNIT

OTHER = "/etc/matrix-synapse/conf.d/zz-other.yaml"


def doctor(root: Root, what: str) -> tuple[int, dict[str, dict[str, str]], str]:
    """Run `matrix-synapse-setup doctor --json`: (exit code, rows by name, raw output)."""
    result = root.run(["matrix-synapse-setup", "doctor", "--json"], timeout=120)
    try:
        data = json.loads(result.output)
    except ValueError:
        root.fail(what, "doctor's JSON on standard output, nothing else", "not JSON", result)
    rows = {row["name"]: row for row in data["checks"]}
    root.check(
        list(rows) == list(ROWS) and data["exit_code"] == result.code,
        f"{what}: every row, the exit code in the JSON",
        f"{list(ROWS)}, exit_code {result.code}",
        f"{list(rows)}, exit_code {data['exit_code']}",
        result,
    )
    return result.code, rows, result.output


def expect(root: Root, what: str, code: int, rows: dict, wanted: dict[str, str], out: str) -> None:
    """Exit *code*, and each row's status as *wanted* (rows not named: ok)."""
    seen = {name: row["status"] for name, row in rows.items()}
    expected = {name: wanted.get(name, "ok") for name in ROWS}
    root.check(
        seen == expected,
        what,
        f"{expected}, exit {code}",
        f"{seen}, exit {code}\n{out}",
    )


def doctor_on_a_healthy_install(root: Root) -> None:
    """Our package installed, Synapse on PostgreSQL under systemd, no dump made yet."""
    # Healthy, no dump yet (none is made before Synapse's first upgrade): all ok.
    code, rows, out = doctor(root, "doctor on a fresh install")
    expect(root, "fresh install: every row ok", 0, rows, {}, out)
    root.check(code == 0, "fresh install: exit 0", "exit 0", f"exit {code}\n{out}")
    backup = rows["last backup"]
    root.check(
        backup["detail"].startswith("none yet in /var/backups/matrix-synapse-setup")
        and "matrix-synapse-setup backup" in backup["detail"],
        "the backup row says there is none yet, and how to make one",
        "none yet in ... (matrix-synapse-setup backup ...)",
        backup["detail"],
    )
    root.ok(["matrix-synapse-setup", "backup"], what="the backup row's command")
    listing = root.ok(
        "stat -c '%a %n' /var/backups/matrix-synapse-setup/*.dump", what="the dump"
    ).output
    root.check(listing.startswith("600 "), "the dump is 0600", "600 ...", listing)

    code, rows, out = doctor(root, "doctor on a healthy install with a dump")
    expect(root, "healthy: every row ok", 0, rows, {}, out)
    root.check(code == 0, "healthy: exit 0", "exit 0", f"exit {code}\n{out}")
    root.check(
        rows["last backup"]["detail"].startswith("newest of 1: "),
        "the backup row names the dump",
        "newest of 1: ...",
        rows["last backup"]["detail"],
    )
    table = root.run(["matrix-synapse-setup", "doctor"])
    root.check(
        table.code == 0
        and table.output.rstrip().endswith(
            f"overall: ok ({len(ROWS)} ok, 0 warn, 0 fail, 0 skipped)"
        ),
        "the table says ok (exit 0)",
        f"overall: ok ({len(ROWS)} ok, ...), exit 0",
        f"exit {table.code}",
        table,
    )

    # Fault 1: Synapse stopped.
    root.ok(["systemctl", "stop", SYNAPSE_UNIT], what="stopping Synapse")
    code, rows, out = doctor(root, "doctor with Synapse stopped")
    expect(root, "Synapse stopped: its row fails", 2, rows, {"synapse": "fail"}, out)
    synapse = rows["synapse"]
    root.check(
        code == 2
        and "does not answer at http://127.0.0.1:8008/_matrix/client/versions" in synapse["detail"]
        and "journalctl -u matrix-synapse" in synapse["fix"],
        "Synapse stopped: exit 2, the URL asked and the journal named",
        "exit 2, ...127.0.0.1:8008..., journalctl -u matrix-synapse",
        f"exit {code}: {synapse}",
    )
    root.ok(["systemctl", "start", SYNAPSE_UNIT], what="starting Synapse again")
    steps.synapse_up(root, "Synapse answers again")

    # Fault 2: the snippet unreadable by Synapse's user.
    before = root.ok(["stat", "-c", "%U:%G %a", SNIPPET], what="the snippet's owner").output
    root.ok(["chmod", "600", SNIPPET], what="making the snippet root's only")
    code, rows, out = doctor(root, "doctor with the snippet unreadable")
    expect(root, "snippet unreadable: its row fails", 2, rows, {"snippet": "fail"}, out)
    row = rows["snippet"]
    root.check(
        code == 2
        and SNIPPET in row["detail"]
        and "matrix-synapse cannot read it" in row["detail"]
        and f"chmod 0640 {SNIPPET}" in row["fix"],
        "snippet unreadable: exit 2, the file, the user and the fix named",
        f"exit 2, {SNIPPET}, matrix-synapse, chmod 0640",
        f"exit {code}: {row}",
    )
    root.ok(["chmod", "640", SNIPPET], what="giving the snippet its mode back")
    after = root.ok(["stat", "-c", "%U:%G %a", SNIPPET], what="the snippet's owner").output
    root.check(after == before, "the snippet is as before", before, after)

    # Fault 3: another conf.d file, sorted after ours, sets Synapse's database.
    root.write(OTHER, "database:\n  name: sqlite3\n  args:\n    database: /tmp/other.db\n")
    code, rows, out = doctor(root, "doctor with zz-other.yaml")
    expect(
        root, "another database wins: its row fails", 2, rows, {"effective database": "fail"}, out
    )
    row = rows["effective database"]
    root.check(
        code == 2 and OTHER in row["detail"] and f"remove 'database:' from {OTHER}" in row["fix"],
        "another database wins: exit 2, zz-other.yaml named in the row and its fix",
        f"exit 2, {OTHER}",
        f"exit {code}: {row}",
    )
    root.ok(["rm", OTHER], what="removing zz-other.yaml")

    # Fault 4: PostgreSQL stopped.
    root.ok(["systemctl", "stop", "postgresql"], what="stopping PostgreSQL")
    # The wrapper unit's stop returns before its cluster's (PartOf) has finished: a login
    # meanwhile is refused as "shutting down" (57P03).  Wait for the cluster's unit.
    cluster = steps.postgresql_unit(root)
    root.ok(["systemctl", "stop", cluster], what=f"waiting for {cluster} to stop")
    code, rows, out = doctor(root, "doctor with PostgreSQL stopped")
    row = rows["postgresql"]
    root.check(
        code == 2
        and row["status"] == "fail"
        and row["detail"].startswith("PostgreSQL does not answer at localhost:5432")
        and row["fix"].startswith("systemctl start postgresql"),
        "PostgreSQL stopped: exit 2, its row fails with the fix",
        "exit 2, fail: PostgreSQL does not answer at localhost:5432, systemctl start postgresql",
        f"exit {code}: {row}",
    )
    skipped = {name: rows[name]["status"] for name in ROWS[4:8]}
    root.check(
        set(skipped.values()) == {"skipped"},
        "PostgreSQL stopped: the rows that need it are skipped, not failed",
        "skipped",
        str(skipped),
    )
    for name in ("snippet", "passfile", "effective database", "backup disk", "last backup"):
        root.check(
            rows[name]["status"] == "ok",
            f"PostgreSQL stopped: the {name} row is still checked",
            "ok",
            str(rows[name]),
        )
    root.ok(["systemctl", "start", "postgresql"], what="starting PostgreSQL again")
    steps.check_cluster_booted(root)
    code, rows, out = doctor(root, "doctor with PostgreSQL started again")
    for name in ROWS[3:8]:
        root.check(rows[name]["status"] == "ok", f"{name} ok again", "ok", f"{rows[name]}\n{out}")
