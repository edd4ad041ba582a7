"""Drive an interactive command on a pseudo-terminal inside a system-test root, as a person
would: the pty is made here, inside the scenario's namespaces.

    ptydrive.py COMMAND [ARG...] < steps.json

steps.json: {"timeout": seconds, "steps": [{"expect": REGEX, "send": TEXT}, ...]}.  Each
REGEX is searched in what the command printed since the previous match; TEXT and a newline
are then typed.  Answers come on standard input, never on a command line.  Prints the whole
transcript; exits with the command's status, or 124 when an expected prompt never came.
"""

import json
import os
import pty
import re
import select
import sys
import time

plan = json.load(sys.stdin)
deadline_step = float(plan.get("timeout", 60))
pid, fd = pty.fork()
if pid == 0:
    os.execvp(sys.argv[1], sys.argv[1:])  # noqa: S606 - the command under test

transcript = b""
pending = b""


def pump(timeout):
    """Read what is there; False at end of output."""
    global transcript, pending
    ready, _, _ = select.select([fd], [], [], timeout)
    if not ready:
        return True
    try:
        data = os.read(fd, 65536)
    except OSError:
        return False
    if not data:
        return False
    transcript += data
    pending += data
    return True


def show(status):
    sys.stdout.write(transcript.decode("utf-8", "replace"))
    sys.stdout.flush()
    sys.exit(status)


for step in plan["steps"]:
    pattern = re.compile(step["expect"].encode())
    deadline = time.monotonic() + deadline_step
    while True:
        match = pattern.search(pending)
        if match:
            pending = pending[match.end() :]
            break
        if time.monotonic() > deadline or not pump(0.5):
            if pattern.search(pending):
                continue
            transcript += f"\nptydrive: never saw /{step['expect']}/\n".encode()
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            show(124)
    time.sleep(0.2)  # let the prompt finish drawing before typing, like a person
    os.write(fd, step["send"].encode() + b"\r")

end = time.monotonic() + deadline_step
while time.monotonic() < end and pump(1):
    pass
_, status = os.waitpid(pid, 0)
show(os.waitstatus_to_exitcode(status))
