"""``matrix-synapse-setup plan``: what ``dpkg-reconfigure matrix-synapse-setup`` would do
with the answers in debconf now, and nothing done: the postinst's own inspection and
plan, without its execution (and without its questions: the answers are taken as they
are, and one that would be refused is said)."""

from __future__ import annotations

import argparse

from matrix_synapse_setup.core import messages
from matrix_synapse_setup.dpkg import debconf
from matrix_synapse_setup.postinst import inspect
from matrix_synapse_setup.postinst import plan as planner


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
        print(messages.PLAN_NOTE.format(note=note))
    if not plan.steps:
        print(messages.PLAN_NOTHING)
        return 0
    if plan.database_unchanged:
        print(messages.PLAN_DATABASE_UNCHANGED)
    print(messages.PLAN_HEADER)
    for number, line in enumerate(plan.describe(), 1):
        print(messages.PLAN_STEP.format(number=number, step=line))
    return 0
