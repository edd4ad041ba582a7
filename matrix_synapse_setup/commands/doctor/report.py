"""doctor's rows and what they add up to: one :class:`Check` a row, the overall status and
the exit code, the table for a person and the JSON for monitoring."""

from __future__ import annotations

import dataclasses
import json

from matrix_synapse_setup.core import messages

OK, WARN, FAIL, SKIPPED = "ok", "warn", "fail", "skipped"
EXIT_CODES = {OK: 0, WARN: 1, FAIL: 2}


@dataclasses.dataclass(frozen=True)
class Check:
    """One row: a name, ok/warn/fail/skipped, a one-line detail, the fix when not ok."""

    name: str
    status: str
    detail: str
    fix: str = ""

    def as_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)


def skipped(name: str, because: str) -> Check:
    """A row not checked: *because* names the row that carries the root cause."""
    return Check(name, SKIPPED, messages.DOCTOR_SKIPPED.format(because=because))


def overall(checks: list[Check]) -> str:
    """fail if any row fails, else warn if any warns, else ok (skipped rows: nothing)."""
    statuses = {check.status for check in checks}
    return FAIL if FAIL in statuses else WARN if WARN in statuses else OK


def exit_code(checks: list[Check]) -> int:
    return EXIT_CODES[overall(checks)]


def render_table(checks: list[Check]) -> str:
    """The rows as a table, the fix under each row that is not ok, then the summary."""
    width = max([len(check.name) for check in checks] + [4])
    lines = []
    for check in checks:
        lines.append(f"{check.status:<7} {check.name:<{width}}  {check.detail}")
        if check.fix and check.status != OK:
            lines.append(f"{'':<7} {'':<{width}}  fix: {check.fix}")
    counts = {s: sum(c.status == s for c in checks) for s in (OK, WARN, FAIL, SKIPPED)}
    lines.append(messages.DOCTOR_SUMMARY.format(status=overall(checks), **counts))
    return "\n".join(lines) + "\n"


def render_json(checks: list[Check]) -> str:
    return (
        json.dumps(
            {
                "status": overall(checks),
                "exit_code": exit_code(checks),
                "checks": [check.as_dict() for check in checks],
            },
            indent=2,
            ensure_ascii=False,
        )
        + "\n"
    )
