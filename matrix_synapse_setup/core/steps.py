"""What a step found or did: the lines a run prints, and whether anything changed."""

from __future__ import annotations

from typing import NamedTuple

CREATED, CHANGED, UNCHANGED, OK = "created", "changed", "unchanged", "ok"


class Step(NamedTuple):
    """What one step found or did (a named tuple: cheap to define, every run imports it)."""

    name: str
    outcome: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.name}: {self.outcome}" + (f" ({self.detail})" if self.detail else "")


def changed(steps: list[Step]) -> bool:
    return any(step.outcome in (CREATED, CHANGED) for step in steps)
