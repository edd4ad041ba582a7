"""Fixtures of the unit tests."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]


@pytest.fixture
def fresh_python() -> Callable[[str], str]:
    """Run *code* in a new interpreter at the project's root; its standard output.  What
    a module imports shows only in a process that has imported nothing else yet."""

    def run(code: str) -> str:
        return subprocess.run(
            [sys.executable, "-c", code], cwd=PROJECT, capture_output=True, text=True, check=True
        ).stdout

    return run
