"""Dendrite's one YAML file, the admin's: read it, check it, and change the one value we own,
``global.database.connection_string``, without losing a comment, a blank line or the order
of keys.

Round-trip through ruamel.yaml (Debian's python3-ruamel.yaml, in bookworm and trixie):
it finds the value and reads back every text we would write.  Where the value already
stands on a line of its own, only that value's characters are replaced; the rest of the
file keeps its bytes.  Where there is no such line yet, one is written in, indented as
its neighbours.  Either way the text is parsed back: the same document but for that one
value, with every comment line in the same order, or the edit is refused.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matrix_synapse_setup.core import messages
from matrix_synapse_setup.core.errors import SetupError
from matrix_synapse_setup.dendrite import uri

# Where a value that is not set means something: Dendrite's own defaults.
GLOBAL_MAX_OPEN_CONNS = 90  # Dendrite's default for the shared pool (SingleDatabase)
# Each component's database section may name its own connection string; Dendrite then
# opens one pool per distinct string.
COMPONENTS = (
    ("app_service_api", "database"),
    ("federation_api", "database"),
    ("key_server", "database"),
    ("media_api", "database"),
    ("mscs", "database"),
    ("relay_api", "database"),
    ("room_server", "database"),
    ("sync_api", "database"),
    ("user_api", "account_database"),
)
GLOBAL_KEY = "global.database.connection_string"


def _ruamel() -> Any:
    try:
        from ruamel.yaml import YAML
    except ImportError:
        raise SetupError(messages.DENDRITE_NO_RUAMEL) from None
    return YAML


def parse(text: str, path: Path) -> Any:
    """*text* as ruamel.yaml's round-trip document; a SetupError naming the line when it
    is not YAML, or not a mapping with a ``global`` mapping in it."""
    yaml = _ruamel()()
    from ruamel.yaml.error import YAMLError

    try:
        data = yaml.load(text)
    except (YAMLError, ValueError) as err:  # ValueError: a value its constructors refuse
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "somewhere"
        problem = getattr(err, "problem", None) or type(err).__name__
        raise SetupError(
            messages.DENDRITE_NOT_YAML.format(path=path, where=where, problem=problem)
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("global"), dict):
        raise SetupError(messages.DENDRITE_NOT_DENDRITE.format(path=path))
    return data


@dataclass
class Document:
    """The admin's file as it is now."""

    path: Path
    text: str
    data: Any
    uid: int
    gid: int
    mode: int

    @property
    def connection_string(self) -> str:
        database = self.data["global"].get("database")
        if not isinstance(database, dict):
            return ""
        value = database.get("connection_string")
        return "" if value is None else str(value)

    def others_can_read(self) -> bool:
        return bool(self.mode & 0o007)


def read(path: Path) -> Document:
    """The file at *path*, checked: it exists, can be read, is YAML, and looks like
    Dendrite's (a ``global`` mapping)."""
    try:
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
            raw = fh.read()
    except FileNotFoundError:
        raise SetupError(messages.DENDRITE_NO_FILE.format(path=path)) from None
    except IsADirectoryError:
        raise SetupError(messages.DENDRITE_NOT_FILE.format(path=path)) from None
    except OSError as err:
        raise SetupError(
            messages.DENDRITE_UNREADABLE.format(path=path, reason=err.strerror)
        ) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SetupError(
            messages.DENDRITE_NOT_YAML.format(path=path, where="somewhere", problem="not UTF-8")
        ) from None
    data = parse(text, path)
    return Document(path, text, data, st.st_uid, st.st_gid, st.st_mode & 0o7777)


def _component_databases(data: Any) -> list[tuple[str, Any]]:
    """(section, database mapping) of every component that names its own, non-empty
    connection string."""
    found = []
    for section, key in COMPONENTS:
        block = data.get(section)
        database = block.get(key) if isinstance(block, dict) else None
        if isinstance(database, dict) and database.get("connection_string"):
            found.append((f"{section}.{key}", database))
    return found


def component_strings(data: Any) -> list[tuple[str, str]]:
    """(key, value) of every component's own, non-empty connection string."""
    return [
        (f"{where}.connection_string", str(database["connection_string"]))
        for where, database in _component_databases(data)
    ]


def _size(database: Any, default: int) -> int:
    value = database.get("max_open_conns") if isinstance(database, dict) else None
    try:
        number = default if value is None else int(value)
    except (TypeError, ValueError):
        number = default
    return max(number, 0)


def pools(data: Any, connection_string: str) -> list[tuple[str, int]]:
    """Dendrite's connection pools once *connection_string* is the global one: one per
    distinct connection string (the global one, and any component's own), each with its
    max_open_conns; 0 stands for no limit (Go's database/sql: 0 or less)."""
    sizes = {
        connection_string: (
            "dendrite",
            _size(data["global"].get("database"), GLOBAL_MAX_OPEN_CONNS),
        )
    }
    for where, database in _component_databases(data):
        string = str(database["connection_string"])
        if string not in sizes:
            sizes[string] = (f"dendrite {where.split('.')[0]}", _size(database, 0))
    return list(sizes.values())


# --- the edit ---------------------------------------------------------------------

_PLAIN_END = re.compile(r"\s+#|\s*$")


def _value_span(line: str, col: int) -> tuple[int, int] | None:
    """Where the scalar that starts at *col* of *line* ends (one line, plain or
    quoted); None for anything else (a block scalar, a value on later lines)."""
    if col >= len(line):
        return None
    first = line[col]
    if first in "|>":
        return None
    if first == "'":
        i = col + 1
        while i < len(line):
            if line[i] == "'":
                if i + 1 < len(line) and line[i + 1] == "'":
                    i += 2
                    continue
                return col, i + 1
            i += 1
        return None
    if first == '"':
        i = col + 1
        while i < len(line):
            if line[i] == "\\":
                i += 2
                continue
            if line[i] == '"':
                return col, i + 1
            i += 1
        return None
    match = _PLAIN_END.search(line, col)
    return (col, match.start()) if match else None


def _scalar(value: str) -> str:
    """*value* as a YAML scalar: plain when YAML reads it back unchanged, else double
    quoted (JSON's escapes are YAML's)."""
    import json

    plain_safe = (
        value
        and value[0] not in "!&*[]{}|>'\"%@`#,?:-"
        and ": " not in value
        and " #" not in value
        and value == value.strip()
    )
    return value if plain_safe else json.dumps(value)


def _comments(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip().startswith("#")]


def _plain(data: Any) -> Any:
    """ruamel.yaml's round-trip values as plain dicts and lists, for comparing."""
    if isinstance(data, dict):
        return {str(k): _plain(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_plain(v) for v in data]
    return data


def edit(document: Document, value: str) -> str:
    """The file's text with ``global.database.connection_string`` set to *value*, every
    other byte kept where the value has a line of its own.  Read back before it is
    returned: the same document but for that value, and every comment line kept."""
    if document.connection_string == value:
        return document.text
    text = _replace_in_place(document, value)
    if text is None:
        text = _insert(document, value)
    if text is None:
        raise SetupError(messages.DENDRITE_EDIT_FAILED.format(path=document.path, key=GLOBAL_KEY))
    check_edit(document, text, value)
    return text


def _replace_in_place(document: Document, value: str) -> str | None:
    database = document.data["global"].get("database")
    if not isinstance(database, dict) or "connection_string" not in database:
        return None
    try:
        key_line = database.lc.key("connection_string")[0]
    except (AttributeError, KeyError, TypeError):
        return None
    lines = document.text.splitlines(keepends=True)
    if database.get("connection_string") is None:
        # "connection_string:" with nothing after it: the value goes after the colon.
        body = lines[key_line].rstrip("\r\n")
        head, colon, rest = body.partition("connection_string:")
        if not colon or (rest.strip() and not rest.strip().startswith("#")):
            return None
        lines[key_line] = head + colon + " " + _scalar(value) + rest + lines[key_line][len(body) :]
        return "".join(lines)
    try:
        line_no, col = database.lc.value("connection_string")
    except (AttributeError, KeyError, TypeError):
        return None
    if line_no >= len(lines):
        return None
    line = lines[line_no]
    body = line.rstrip("\r\n")
    span = _value_span(body, col)
    if span is None:
        return None
    start, end = span
    lines[line_no] = body[:start] + _scalar(value) + body[end:] + line[len(body) :]
    return "".join(lines)


def _insert(document: Document, value: str) -> str | None:
    """The key written in as the first line under ``global.database`` (and that mapping
    as the first key under ``global`` when there is none), indented as its neighbours
    are; None when the file's layout gives no place for it (flow style)."""
    glob = document.data["global"]
    lines = document.text.splitlines(keepends=True)
    try:
        glob_line = document.data.lc.key("global")[0]
        keys = list(glob)
        if not keys:
            return None
        indent = glob.lc.key(keys[0])[1]
        database = glob.get("database")
        if database is None and "database" not in glob:
            at = glob_line + 1
            block = [" " * indent + "database:\n", " " * indent * 2 + "connection_string: "]
        elif database is None:
            at = glob.lc.key("database")[0] + 1
            block = [" " * indent * 2 + "connection_string: "]
        elif isinstance(database, dict) and len(database):
            at = glob.lc.key("database")[0] + 1
            block = [" " * database.lc.key(next(iter(database)))[1] + "connection_string: "]
        else:
            return None
    except (AttributeError, KeyError, TypeError):
        return None
    if at > len(lines) or (lines and not lines[-1].endswith("\n") and at == len(lines)):
        return None
    block[-1] += _scalar(value) + "\n"
    return "".join(lines[:at] + block + lines[at:])


def check_edit(document: Document, text: str, value: str) -> None:
    """Refuse *text* unless it reads back as the document with only the connection
    string changed, and with every comment line in the same order."""
    try:
        after = parse(text, document.path)
    except SetupError:
        after = None
    expected = _plain(document.data)
    expected["global"].setdefault("database", {})
    if not isinstance(expected["global"]["database"], dict):
        expected["global"]["database"] = {}
    expected["global"]["database"]["connection_string"] = value
    if after is None or _plain(after) != expected or _comments(text) != _comments(document.text):
        raise SetupError(messages.DENDRITE_EDIT_FAILED.format(path=document.path, key=GLOBAL_KEY))


def masked_diff(document: Document, text: str) -> str:
    """A unified diff of the file, every password in a connection string masked."""
    import difflib

    before = uri.mask(document.text).splitlines(keepends=True)
    after = uri.mask(text).splitlines(keepends=True)
    name = str(document.path)
    return "".join(difflib.unified_diff(before, after, name, name + " (new)"))
