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


# --- inside the runtime: sub-packages in layers, no circles -----------------------------

# Bottom first; docs/development.md says what each holds and why in this order.  A
# module may import its own sub-package and the ones below it, never one above.
LAYERS = ("core", "files", "dpkg", "postgres", "synapse", "dendrite", "postinst", "commands")
PACKAGE = "matrix_synapse_setup"


def runtime_module(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def our_imports(path: Path) -> set[str]:
    """The modules of ours *path* imports, as module names (``from a.b import c`` is
    a.b.c when c is a module of ours, else a.b); TYPE_CHECKING imports too."""
    return {
        name
        for name in imported(path.read_text(encoding="utf-8"), str(path))
        if name == PACKAGE or name.startswith(PACKAGE + ".")
    }


def graph(root: Path = PROJECT) -> dict[str, set[str]]:
    """Module → the modules of ours it imports."""
    files = sorted((root / PACKAGE).rglob("*.py"))
    modules = {runtime_module(f, root): f for f in files}
    edges: dict[str, set[str]] = {}
    for module, path in modules.items():
        targets = set()
        for name in our_imports(path):
            while name not in modules and "." in name:
                name = name.rsplit(".", 1)[0]  # an attribute: its module
            if name in modules and name != module and name != PACKAGE:
                targets.add(name)
        # "from a.pkg import mod" names the package too: the module is what counts
        edges[module] = {t for t in targets if not any(o.startswith(t + ".") for o in targets)}
    return edges


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None


def against_the_layers(edges: dict[str, set[str]]) -> list[str]:
    bad = []
    for module, targets in sorted(edges.items()):
        mine = layer_of(module)
        for target in sorted(targets):
            theirs = layer_of(target)
            if mine is not None and theirs is not None and theirs > mine:
                bad.append(f"{module} ({LAYERS[mine]}) imports {target} ({LAYERS[theirs]})")
    return bad


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_every_runtime_module_is_in_a_layer():
    edges = graph()
    assert f"{PACKAGE}.postinst.plan" in edges and f"{PACKAGE}.core.errors" in edges
    outside = sorted(m for m in edges if layer_of(m) is None and m != PACKAGE)
    assert outside == [f"{PACKAGE}.bytecode"]  # stdlib only, run before any import


def test_no_import_against_the_layer_order():
    assert against_the_layers(graph()) == []


def test_no_import_circle():
    assert circles(graph()) == []


def test_the_bytecode_helper_imports_nothing_of_ours():
    assert graph()[f"{PACKAGE}.bytecode"] == set()


def write_tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, source in files.items():
        path = tmp_path / PACKAGE / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source, encoding="utf-8")
    return tmp_path


def test_an_upward_import_and_a_circle_are_caught(tmp_path):
    """Negative control: a tree with an import from core up to postinst, and a circle
    through a function-level import, fails both checks."""
    root = write_tree(
        tmp_path,
        {
            "__init__.py": "",
            "core/__init__.py": "",
            "core/errors.py": "from matrix_synapse_setup.postinst import plan\n",
            "postinst/__init__.py": "",
            "postinst/plan.py": "def f():\n    from matrix_synapse_setup.postinst import run\n",
            "postinst/run.py": "from matrix_synapse_setup.postinst.plan import f\n",
        },
    )
    edges = graph(root)
    assert against_the_layers(edges) == [
        f"{PACKAGE}.core.errors (core) imports {PACKAGE}.postinst.plan (postinst)"
    ]
    assert circles(edges) == [[f"{PACKAGE}.postinst.plan", f"{PACKAGE}.postinst.run"]]
