"""Every integration test that relies on the error classifier carries the mark
`server_language`: `invoke test` repeats only those against a French cluster.

The classifier (matrix_synapse_setup/postgres/diagnose.py) tells a failed connection's kind by
SQLSTATE and connection state, never by text; its callers turn the kind into advice from
messages.py.  A test relies on it when its source, or a module-level helper, constant
or parametrize list it refers to (followed through the module), does any of:

- reads an error's `.kind`, or names `diagnose` or `classify`;
- names a message chosen from a kind: a `messages.NAME` that a runtime function naming a
  `diagnose.` constant refers to (found here by reading the runtime, so a new advice
  message is covered as soon as the code uses it);
- quotes at least ten characters of such a message's fixed text (a phrase, a file name,
  a command), as an expected output or a pattern;
- calls `free_port()`: it points something at a port where nothing answers, and the
  answer is classified (libpq's "Connection refused" comes in the client's language).

Fixtures and classes are not followed: they set the stage, a test's assertions say what it
relies on.  Only tests that take a fixture count: one that takes none never talks to a
server.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from matrix_synapse_setup.core import messages

PROJECT = Path(__file__).resolve().parents[2]
MARK = "server_language"
TRIGGER_NAMES = {"diagnose", "classify", "free_port"}
MIN_TEXT = 10
# Pattern pieces that join literal text in a regular expression: r"a[\s\S]*b" quotes
# "a" and "b".
REGEX_JOINS = re.compile(r"\[\\s\\S\]\*|\.\*|\\.")


def advice_messages() -> set[str]:
    """Names in messages.py that a runtime function also naming a diagnose constant uses."""
    names: set[str] = set()
    for path in sorted((PROJECT / "matrix_synapse_setup").rglob("*.py")):
        for func in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            attrs = [
                node
                for node in ast.walk(func)
                if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
            ]
            if any(node.value.id == "diagnose" for node in attrs):
                names |= {node.attr for node in attrs if node.value.id == "messages"}
    return names


ADVICE = advice_messages()
FIXED_TEXTS = {
    piece.strip(" .,:;()'\"\n")
    for name in ADVICE
    for piece in re.split(r"\{[^}]*\}", getattr(messages, name))
}
FIXED_TEXTS = {text for text in FIXED_TEXTS if len(text) >= MIN_TEXT}


def quotes_advice(text: str) -> bool:
    for part in REGEX_JOINS.split(text):
        part = part.strip()
        if len(part) >= MIN_TEXT and (" " in part or "." in part or "_" in part):
            if any(part in fixed for fixed in FIXED_TEXTS):
                return True
    return False


def reason(node: ast.AST) -> str | None:
    """Why NODE's own source relies on the classifier, or None."""
    for sub in ast.walk(node):
        if isinstance(sub, ast.Attribute):
            if sub.attr == "kind":
                return "reads an error's .kind"
            if isinstance(sub.value, ast.Name):
                if sub.value.id == "messages" and sub.attr in ADVICE:
                    return f"names messages.{sub.attr}"
                if sub.value.id == "diagnose":
                    return "names diagnose"
        if isinstance(sub, ast.Name) and sub.id in TRIGGER_NAMES:
            return f"names {sub.id}"
        if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
            if quotes_advice(sub.value):
                return f"quotes advice: {sub.value[:40]!r}"
    return None


def marked(node: ast.AST) -> bool:
    decorators = getattr(node, "decorator_list", [])
    return any(MARK in ast.unparse(d) for d in decorators)


def module_marked(tree: ast.Module) -> bool:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets
        ):
            return MARK in ast.unparse(node.value)
    return False


def takes_fixtures(func: ast.FunctionDef) -> bool:
    parametrized: set[str] = set()
    for decorator in func.decorator_list:
        if isinstance(decorator, ast.Call) and "parametrize" in ast.unparse(decorator.func):
            first = decorator.args[0] if decorator.args else None
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                parametrized |= {n.strip() for n in first.value.split(",")}
            elif isinstance(first, ast.Tuple | ast.List):
                parametrized |= {e.value for e in first.elts if isinstance(e, ast.Constant)}
    return any(arg.arg not in parametrized for arg in func.args.args)


def relying_tests(path: Path) -> dict[str, tuple[str, bool]]:
    """test name -> (why it relies on the classifier, whether it carries the mark)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top: dict[str, ast.AST] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            # Fixtures set a stage; classes hold their own vocabulary: neither is followed.
            if not any("fixture" in ast.unparse(d) for d in node.decorator_list):
                top[node.name] = node
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            top.update({t.id: node for t in targets if isinstance(t, ast.Name)})
    found: dict[str, str | None] = {}

    def why(name: str, seen: frozenset[str]) -> str | None:
        if name in found:
            return found[name]
        node = top[name]
        result = reason(node)
        if result is None:
            for sub in ast.walk(node):
                if isinstance(sub, ast.Name) and sub.id in top and sub.id not in seen | {name}:
                    inner = why(sub.id, seen | {name})
                    if inner:
                        result = f"{sub.id}: {inner}"
                        break
        found[name] = result
        return result

    whole = module_marked(tree)
    out = {}
    for name, node in top.items():
        if name.startswith("test_"):
            because = why(name, frozenset())
            if because and takes_fixtures(node):
                out[name] = (because, whole or marked(node))
    return out


INTEGRATION = sorted((PROJECT / "tests" / "integration").glob("test_*.py"))


@pytest.mark.parametrize("path", INTEGRATION, ids=[p.name for p in INTEGRATION])
def test_every_test_relying_on_the_classifier_is_marked(path):
    missing = {name: because for name, (because, has) in relying_tests(path).items() if not has}
    assert not missing, (
        f"{path.name}: mark these @pytest.mark.{MARK} (the French pass runs only marked "
        f"tests): {missing}"
    )


def test_the_rule_sees_the_classifier_and_its_advice():
    """The rule is not empty: it finds the advice messages, and the tests of the
    classifier's own file."""
    assert {"LOGIN_REFUSED", "SERVER_UNREACHABLE", "TLS_FAILED"} <= ADVICE
    found = relying_tests(PROJECT / "tests" / "integration" / "test_error_classes.py")
    assert "test_connection_error_is_classified_and_advised_as_in_english" in found


def test_an_unmarked_test_that_quotes_advice_is_caught(tmp_path):
    fixed = max(FIXED_TEXTS, key=len)
    source = (
        "def test_one(cluster):\n"
        f"    assert {fixed!r} in run()\n"
        "def test_two(cluster):\n"
        "    assert error.kind == 'login'\n"
        "def test_three(cluster):\n"
        "    assert run() == 'ok'\n"
    )
    path = tmp_path / "test_sample.py"
    path.write_text(source, encoding="utf-8")
    found = relying_tests(path)
    assert set(found) == {"test_one", "test_two"}
    assert not any(has for _, has in found.values())
