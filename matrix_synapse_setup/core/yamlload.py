"""YAML through PyYAML, which only this module imports, and only when YAML is read or
written: a maintainer script that reads no YAML does not pay for PyYAML's import.

Reading goes through libyaml's C parser when PyYAML has it (Debian's python3-yaml does):
it builds the same Python values as the pure-Python one (the constructor is the same
SafeConstructor) and its errors carry the same marks; it reads a snippet about ten times
faster, which the unchanged path of every upgrade feels.  Writing stays with PyYAML's
pure-Python emitter: the snippet's text must not change with the emitter.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any


class YAMLError(Exception):
    """A text PyYAML refused: where (*line*, from 1; None when PyYAML does not say) and
    PyYAML's name for the error (*kind*, e.g. ScannerError)."""

    def __init__(self, original: Exception) -> None:
        super().__init__(str(original))
        mark = getattr(original, "problem_mark", None)
        self.line: int | None = mark.line + 1 if mark is not None else None
        self.kind = type(original).__name__


def _yaml() -> ModuleType:
    import yaml

    return yaml


def safe_load(text: str) -> Any:
    """yaml.safe_load(*text*), through the C parser when there is one; YAMLError (ours)
    when it is not YAML."""
    yaml = _yaml()
    try:
        return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as err:
        raise YAMLError(err) from err


def safe_dump(data: Any, **options: Any) -> str:
    """yaml.safe_dump(*data*, **options*): PyYAML's pure-Python emitter."""
    return _yaml().safe_dump(data, **options)
