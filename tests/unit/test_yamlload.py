"""yamlload.safe_load: libyaml's parser where PyYAML has it, with PyYAML's results."""

from __future__ import annotations

import pytest
import yaml

from matrix_synapse_setup.core import yamlload
from matrix_synapse_setup.core.errors import SetupError
from matrix_synapse_setup.files import snippet

TEXTS = [
    "database:\n  name: psycopg2\n  args: {user: synapse, port: 5432, host: '::1'}\n",
    'a: "\\u00e9t\\u00e9 \\" \\\\ :"\nb: [1, 2.5, true, null, ~, 0o17, 0x1f, 2001-12-14]\n',
    "key: |\n  two\n  lines\n# a comment\nother: >-\n  folded\n  text\n",
    "anchors: &a {x: 1}\nuse: *a\nempty:\n",
    "",
]


@pytest.mark.parametrize("text", TEXTS)
def test_the_same_values_as_pyyaml_safe_load(text):
    assert yamlload.safe_load(text) == yaml.safe_load(text)


def test_the_c_parser_when_there_is_one_else_pythons(monkeypatch):
    loaders = []
    real, expected = yaml.load, yaml.safe_load(TEXTS[0])

    def load(text, Loader):
        loaders.append(Loader)
        return real(text, Loader=Loader)

    monkeypatch.setattr(yaml, "load", load)
    assert yamlload.safe_load(TEXTS[0]) == expected
    if yaml.__with_libyaml__:  # Debian's python3-yaml is built with libyaml
        assert loaders == [yaml.CSafeLoader]
    monkeypatch.delattr(yaml, "CSafeLoader")  # a PyYAML without libyaml
    assert yamlload.safe_load(TEXTS[0]) == expected
    assert loaders[-1] is yaml.SafeLoader


def test_a_broken_snippet_names_its_line_as_before():
    text = "database:\n  name: psycopg2\n  args: [unclosed\n"
    with pytest.raises(yaml.YAMLError) as pure:
        yaml.safe_load(text)
    with pytest.raises(SetupError) as err:
        snippet.parse(text, where="/x.yaml")
    assert f"line {pure.value.problem_mark.line + 1}" in err.value.message
