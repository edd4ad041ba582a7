"""apt's preconfiguration: the questions come before any package is unpacked (issue 13).

apt (with apt-utils: apt-extracttemplates, dpkg-preconfigure) runs each package's config
script before it unpacks anything; ours asks every question there.  A person answers on a
pseudo-terminal (debconf's readline frontend, priority low: every question), and the
transcript shows each prompt before apt's "Unpacking matrix-synapse-setup"; the postinst
asks none of them again.
"""

from __future__ import annotations

import json
import re

import pytest

from scripts.devtools.harness import DEBS, HELPERS

SUITES = ["trixie", "bookworm"]

# Every question at priority low, for the local cluster, in the order asked; the answers.
QUESTIONS = [
    ("Host name of the PostgreSQL server for Synapse:", "localhost"),
    ("Port of the PostgreSQL server:", "5432"),
    ("Name of Synapse's database:", "synapse"),
    ("PostgreSQL role (user name) for Synapse:", "synapse"),
    ("Password of the PostgreSQL role for Synapse:", "typed before unpack"),
    ("Password confirmation:", "typed before unpack"),
    ("Tune the local PostgreSQL cluster for Synapse?", "no"),
    ("Name of the first server admin account (empty for none):", ""),
    ("Delete Synapse's database when this package is purged?", "no"),
    ("Number of database dumps to keep:", "4"),
    ("Synapse worker processes:", "1"),  # the first choice: none
]
PASSWORD = "typed before unpack"
UNPACKING = "Unpacking matrix-synapse-setup"
PRECONFIGURING = "Preconfiguring packages"


@pytest.mark.smoke
@pytest.mark.parametrize("suite", SUITES)
def test_apt_asks_every_question_before_unpacking(make_root, debs, suite):
    root = make_root(suite, postgresql=True)
    tool = root.run(["sh", "-c", "command -v apt-extracttemplates && command -v dpkg-preconfigure"])
    root.check(
        tool.code == 0 and len(tool.output.split()) == 2,
        "apt-utils in the root (without it apt preconfigures nothing)",
        "apt-extracttemplates and dpkg-preconfigure",
        tool.output,
    )
    steps = [{"expect": re.escape(prompt), "send": answer} for prompt, answer in QUESTIONS]
    steps.append({"expect": UNPACKING, "send": None})  # and only after the questions
    deb = f"{DEBS}/{debs['current'].name}"
    out = root.ok(
        ["python3", f"{HELPERS}/ptydrive.py", "apt-get", "install", "-y", deb],
        input=json.dumps({"timeout": 180, "steps": steps}),
        env={"TERM": "xterm", "DEBIAN_FRONTEND": "readline", "DEBIAN_PRIORITY": "low"},
        what="apt-get install with preconfiguration, answered on a pty",
        timeout=600,
    ).output

    preconfigured, unpacked = out.find(PRECONFIGURING), out.find(UNPACKING)
    root.check(
        0 <= preconfigured < unpacked,
        "apt preconfigures before it unpacks",
        f"{PRECONFIGURING!r} before {UNPACKING!r}",
        f"at {preconfigured} and {unpacked}",
    )
    for prompt, _ in QUESTIONS:
        where = [m.start() for m in re.finditer(re.escape(prompt), out)]
        root.check(
            len(where) == 1 and preconfigured < where[0] < unpacked,
            f"{prompt!r} is asked once, while apt preconfigures",
            f"once, between {preconfigured} and {unpacked}",
            f"at {where}",
        )
    root.check(PASSWORD not in out, "the typed password is not echoed", "not shown", "shown")
    # What was answered before the unpacking is what the postinst applied.
    applied = root.run(["grep", "-c", PASSWORD, "/etc/matrix-synapse/conf.d/database.pgpass"])
    root.check(applied.output.strip() == "1", "the typed password is applied", "1", applied.output)
    # ... and the number of dumps to keep reaches the apt hook's file (issue 14).
    keep = root.run(["cat", "/var/lib/matrix-synapse-setup/backup-keep"]).output.strip()
    root.check(keep == "4", "the backup-keep answer is stored for the apt hook", "4", keep)
