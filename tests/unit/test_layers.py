"""The three parts of the tree depend one way only: tests -> developer tooling -> runtime.

- runtime: matrix_synapse_setup/ (and the entry points the .deb installs from scripts/);
- developer tooling: scripts/ (its shared helpers in scripts/devtools/) and tasks.py;
- tests: tests/.

The tests may import the tooling and the runtime; the tooling may import the runtime but
never the tests; the runtime imports neither.  Imports are read with ast (import
statements, and importlib.import_module / __import__ with a literal name), so a comment or
a string that merely mentions a module does not count, and an import inside a function does.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]


def python_files(*tops: str) -> list[Path]:
    """Every Python source under the given files or folders: *.py, and scripts with a
    python shebang (the admin command and the maintainer-script helper have no suffix)."""
    found = []
    for top in tops:
        path = PROJECT / top
        for file in [path] if path.is_file() else sorted(path.rglob("*")):
            if not file.is_file() or "__pycache__" in file.parts:
                continue
            if file.suffix == ".py":
                found.append(file)
            elif not file.suffix:
                with file.open("rb") as handle:
                    first = handle.readline()
                if first.startswith(b"#!") and b"python" in first:
                    found.append(file)
    return found


def imported(source: str, filename: str = "<source>") -> set[str]:
    """The absolute module names a Python source imports, wherever the import is."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            first = node.args[0]
            if called in ("import_module", "__import__") and isinstance(first, ast.Constant):
                if isinstance(first.value, str):
                    names.add(first.value)
    return names


def offending(files: list[Path], forbidden: tuple[str, ...], root: Path = PROJECT) -> list[str]:
    bad = []
    for file in files:
        for name in sorted(imported(file.read_text(encoding="utf-8"), str(file))):
            top = name.split(".")[0]
            dotted = ".".join(name.split(".")[:2])
            if top in forbidden or dotted in forbidden:
                bad.append(f"{file.relative_to(root)} imports {name}")
    return bad


TOOLING = ("scripts", "tasks.py")
RUNTIME = ("matrix_synapse_setup",)
RUNTIME_ENTRY_POINTS = (
    "scripts/matrix-synapse-setup",
    "scripts/maintscript-helper",
    "scripts/apt-backup-hook",
)


def test_the_files_are_found():
    """The walk sees what it must judge (an empty list would make the next tests pass)."""
    tooling = {str(f.relative_to(PROJECT)) for f in python_files(*TOOLING)}
    assert {"tasks.py", "scripts/bench.py", "scripts/publish_root.py"} <= tooling
    assert {"scripts/devtools/pgcluster.py", "scripts/devtools/roots.py"} <= tooling
    assert set(RUNTIME_ENTRY_POINTS) <= tooling  # found by their python shebang
    assert "matrix_synapse_setup/commands/cli.py" in {
        str(f.relative_to(PROJECT)) for f in python_files(*RUNTIME)
    }


def test_developer_tooling_never_imports_the_tests():
    assert offending(python_files(*TOOLING), ("tests",)) == []


def test_the_runtime_imports_neither_tooling_nor_tests():
    files = python_files(*RUNTIME, *RUNTIME_ENTRY_POINTS)
    assert offending(files, ("tests", "tasks", "scripts.devtools", "devtools")) == []


@pytest.mark.parametrize(
    "source",
    [
        "from tests.system import roots",
        "import tests.pgcluster",
        "import tests",
        "from tests import conftest",
        "def f():\n    from tests.system.conftest import older_build\n",
        "import importlib\nimportlib.import_module('tests.system.roots')",
        "__import__('tests.pgcluster')",
    ],
)
def test_every_kind_of_import_of_the_tests_is_caught(source, tmp_path):
    """Negative control: the checker above does see each way of importing the tests."""
    sample = tmp_path / "scripts" / "probe.py"
    sample.parent.mkdir()
    sample.write_text(source, encoding="utf-8")
    assert offending([sample], ("tests",), root=tmp_path), f"not caught: {source!r}"


@pytest.mark.parametrize(
    "source",
    [
        "# from tests.system import roots",
        "HELP = 'see tests/system/conftest.py or tests.pgcluster'",
        "from scripts.devtools import roots",
        "import testsuite",
    ],
)
def test_mentions_and_lookalikes_are_not_imports(source):
    names = imported(source)
    assert not any(n == "tests" or n.startswith("tests.") for n in names)
