"""Dendrite's YAML: read, checked, and changed in one value with every other byte kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from matrix_synapse_setup.core.errors import SetupError
from matrix_synapse_setup.dendrite import config

SAMPLE = """\
# This is the Dendrite configuration file.
version: 2

# Global Matrix configuration.
global:
  # The domain name of this homeserver.
  server_name: example.org   # trailing comment
  private_key: matrix_key.pem

  # Global database connection pool.
  database:
    connection_string: postgresql://username:password@hostname/dendrite?sslmode=disable
    max_open_conns: 90   # per process
    max_idle_conns: 5
    conn_max_lifetime: -1

  trusted_third_party_id_servers:
    - matrix.org
    - vector.im

client_api:
  registration_shared_secret: ""   # quoted empty
sync_api:
  search:
    enabled: false
"""
NEW = "postgresql://dendrite@/dendrite?host=/run/postgresql&sslmode=disable"


def document(tmp_path: Path, text: str) -> config.Document:
    path = tmp_path / "dendrite.yaml"
    path.write_text(text)
    return config.read(path)


def test_only_the_value_changes(tmp_path):
    doc = document(tmp_path, SAMPLE)
    text = config.edit(doc, NEW)
    before, after = SAMPLE.splitlines(), text.splitlines()
    changed = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    assert changed == [
        (
            "    connection_string: postgresql://username:password@hostname/dendrite?sslmode=disable",
            f"    connection_string: {NEW}",
        )
    ]
    assert config.edit(document(tmp_path, text), NEW) == text  # a second run: the same text


@pytest.mark.parametrize(
    "old",
    [
        "'postgresql://a:b@c/d'",
        '"postgresql://a:b@c/d"  # quoted, with a comment',
        "postgresql://a:b@c/d # a comment",
        "''",
    ],
)
def test_quoted_values_and_trailing_comments(tmp_path, old):
    text = SAMPLE.replace("postgresql://username:password@hostname/dendrite?sslmode=disable", old)
    new = config.edit(document(tmp_path, text), NEW)
    line = next(line for line in new.splitlines() if "connection_string" in line)
    assert line.startswith(f"    connection_string: {NEW}")
    assert ("#" in old) == ("#" in line)


def test_an_empty_key_gets_its_value(tmp_path):
    text = SAMPLE.replace(" postgresql://username:password@hostname/dendrite?sslmode=disable", "")
    new = config.edit(document(tmp_path, text), NEW)
    assert f"    connection_string: {NEW}\n" in new
    assert new.count("connection_string") == 1


def test_a_missing_key_or_section_is_written_in_with_the_neighbours_indent(tmp_path):
    no_key = SAMPLE.replace(
        "    connection_string: postgresql://username:password@hostname/dendrite?sslmode=disable\n",
        "",
    )
    new = config.edit(document(tmp_path, no_key), NEW)
    assert f"  database:\n    connection_string: {NEW}\n    max_open_conns: 90" in new
    start, end = SAMPLE.index("  database:\n"), SAMPLE.index("  trusted_third")
    no_section = SAMPLE[:start] + SAMPLE[end:]
    new = config.edit(document(tmp_path, no_section), NEW)
    assert f"global:\n  database:\n    connection_string: {NEW}\n" in new
    assert document(tmp_path, new).connection_string == NEW


def test_every_comment_is_kept_in_order(tmp_path):
    doc = document(tmp_path, SAMPLE)
    new = config.edit(doc, NEW)
    comments = [line.split("#", 1)[1] for line in SAMPLE.splitlines() if "#" in line]
    kept = [line.split("#", 1)[1] for line in new.splitlines() if "#" in line]
    assert comments == kept


def test_a_value_yaml_would_misread_is_quoted(tmp_path):
    doc = document(tmp_path, SAMPLE)
    odd = "postgresql://u@/d?host=/run/postgresql&sslmode=disable #not a comment"
    new = config.edit(doc, odd)
    assert document(tmp_path, new).connection_string == odd


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("global: [unclosed\n", "is not valid YAML (line 2"),
        ("global:\n  a: 1\n  a: 2\n", "is not valid YAML"),
        ("- just\n- a list\n", "has no 'global' section"),
        ("version: 2\n", "has no 'global' section"),
        ("", "has no 'global' section"),
    ],
)
def test_not_dendrite_yaml_is_refused_in_one_line(tmp_path, text, words):
    with pytest.raises(SetupError) as err:
        document(tmp_path, text)
    assert words in err.value.message
    assert "\n" not in err.value.message


def test_missing_unreadable_and_directory(tmp_path):
    with pytest.raises(SetupError, match="does not exist"):
        config.read(tmp_path / "absent.yaml")
    with pytest.raises(SetupError, match="is not a file"):
        config.read(tmp_path)
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"global:\n  x: \xff\n")
    with pytest.raises(SetupError, match="not UTF-8"):
        config.read(binary)


def test_component_strings_and_pools(tmp_path):
    text = SAMPLE.replace(
        "sync_api:\n",
        "sync_api:\n  database:\n    connection_string: postgresql://a:b@other/sync\n"
        "    max_open_conns: 20\n",
    ).replace("client_api:\n", "media_api:\n  database:\n    connection_string: ''\nclient_api:\n")
    doc = document(tmp_path, text)
    assert config.component_strings(doc.data) == [
        ("sync_api.database.connection_string", "postgresql://a:b@other/sync")
    ]
    assert config.pools(doc.data, NEW) == [("dendrite", 90), ("dendrite sync_api", 20)]
    unlimited = document(tmp_path, SAMPLE.replace("max_open_conns: 90", "max_open_conns: -1"))
    assert config.pools(unlimited.data, NEW) == [("dendrite", 0)]
    default = document(tmp_path, SAMPLE.replace("    max_open_conns: 90   # per process\n", ""))
    assert config.pools(default.data, NEW) == [("dendrite", config.GLOBAL_MAX_OPEN_CONNS)]


def test_the_diff_masks_passwords(tmp_path):
    doc = document(tmp_path, SAMPLE)
    new = config.edit(doc, "postgresql://d:s%40cret@127.0.0.1:5432/d?sslmode=disable")
    diff = config.masked_diff(doc, new)
    assert "s%40cret" not in diff and ":password@" not in diff
    assert "-    connection_string: postgresql://username:****@hostname" in diff
    assert "+    connection_string: postgresql://d:****@127.0.0.1:5432/d" in diff


def test_without_ruamel_yaml_the_command_says_what_to_install(tmp_path, monkeypatch):
    # python3-ruamel.yaml is a Suggests: a system without it is real; its absence is made
    # here by hiding the module from the import system.
    monkeypatch.setitem(__import__("sys").modules, "ruamel.yaml", None)
    path = tmp_path / "dendrite.yaml"
    path.write_text(SAMPLE)
    with pytest.raises(SetupError) as err:
        config.read(path)
    assert "apt install python3-ruamel.yaml" in err.value.message
