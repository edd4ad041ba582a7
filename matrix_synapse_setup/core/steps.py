"""What a step found or did: the lines a run prints, and whether anything changed."""

from __future__ import annotations

import dataclasses

CREATED, CHANGED, UNCHANGED, OK = "created", "changed", "unchanged", "ok"


@dataclasses.dataclass(frozen=True)
class Step:
    """What one step found or did."""

    name: str
    outcome: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.name}: {self.outcome}" + (f" ({self.detail})" if self.detail else "")


def changed(steps: list[Step]) -> bool:
    return any(step.outcome in (CREATED, CHANGED) for step in steps)
