"""YAML parsed with libyaml's C parser when PyYAML has it (Debian's python3-yaml does).

The C parser builds the same Python values as the pure-Python one (the constructor is
the same SafeConstructor) and raises the same ``yaml.YAMLError`` classes with their
marks; it reads a snippet about ten times faster, which an unchanged run feels
(issue 11).  Writing stays with PyYAML's pure-Python emitter: the snippet's text must
not change with the emitter.
"""

from __future__ import annotations

from typing import Any


def safe_load(text: str) -> Any:
    """yaml.safe_load(*text*), through the C parser when there is one."""
    import yaml

    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506 - a safe loader
