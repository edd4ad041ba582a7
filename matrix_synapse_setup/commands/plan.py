"""``matrix-synapse-setup plan``: what ``dpkg-reconfigure matrix-synapse-setup`` would do
with the answers in debconf now, and nothing done: the postinst's own inspection and
plan, without its execution (and without its questions: the answers are taken as they
are, and one that would be refused is said)."""

from __future__ import annotations

import argparse

from matrix_synapse_setup.dpkg import debconf
from matrix_synapse_setup.postinst import inspect
from matrix_synapse_setup.postinst import plan as planner

NOTHING = "nothing would change: the files, the database and the services are as the answers say."


def command(args: argparse.Namespace) -> int:
    conv = debconf.Conversation(debconf.communicator())
    reading = inspect.read_on_disk()
    try:
        # dpkg-reconfigure at a terminal: someone can answer ucf's question about an edit.
        state = inspect.inspect(conv, reading, ask=False, reconfigure=True, interactive=True)
    finally:
        reading.close()
    plan = planner.plan(state)
    for note in plan.notes:
        print(f"note: {note}")
    if not plan.steps:
        print(NOTHING)
        return 0
    if plan.database_unchanged:
        print("the database and the snippet are as the answers say; besides:")
    print('"dpkg-reconfigure matrix-synapse-setup" would:')
    for number, line in enumerate(plan.describe(), 1):
        print(f"{number}. {line}")
    return 0
