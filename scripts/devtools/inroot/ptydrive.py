"""Drive an interactive command on a pseudo-terminal inside a system-test root, as a person
would: the pty is made here, inside the scenario's namespaces.

    ptydrive.py COMMAND [ARG...] < plan.json

plan.json: {"timeout": S, "steps": [{"expect": REGEX, "send": TEXT or null}, ...]}.
Each REGEX is searched in what the command printed since the previous match; TEXT and Enter
are then typed (null: nothing is typed, the step only waits for the text).  A prompt that no
step expects is never answered: the run then ends after S seconds with exit 124.  (debconf's
readline frontend without a readline library shows no default: Enter answers "", so the
person types every answer.)  Answers come on standard input, never on a command line.
Prints the transcript and exits with the command's status (124 when an expected prompt
never came or the command never ended).
"""

import json
import os
import pty
import re
import select
import sys
import time

plan = json.load(sys.stdin)
TIMEOUT = float(plan.get("timeout", 120))

pid, fd = pty.fork()
if pid == 0:
    os.execvp(sys.argv[1], sys.argv[1:])  # noqa: S606 - the command under test

transcript = b""
pending = b""


def pump(timeout: float) -> bool:
    """Read what is there; False at the end of the output."""
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


def type_line(text: str) -> None:
    time.sleep(0.2)  # let the prompt finish drawing, like a person
    os.write(fd, text.encode() + b"\r")


def finish(status: int, note: str = "") -> None:
    global transcript
    if note:
        transcript += f"\nptydrive: {note}\n".encode()
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    sys.stdout.write(transcript.decode("utf-8", "replace"))
    sys.stdout.flush()
    sys.exit(status)


for step in plan["steps"]:
    pattern = re.compile(step["expect"].encode())
    deadline = time.monotonic() + TIMEOUT
    while True:
        match = pattern.search(pending)
        if match:
            pending = pending[match.end() :]
            break
        if time.monotonic() > deadline:
            finish(124, f"never saw /{step['expect']}/ within {TIMEOUT:.0f} s")
        if not pump(0.3):
            if pattern.search(pending):
                continue
            finish(124, f"the command ended before /{step['expect']}/")
    if step["send"] is not None:
        type_line(step["send"])

deadline = time.monotonic() + TIMEOUT
while pump(0.3):
    if time.monotonic() > deadline:
        finish(124, f"the command did not end within {TIMEOUT:.0f} s (a prompt nobody answered?)")
_, status = os.waitpid(pid, 0)
finish(os.waitstatus_to_exitcode(status))
