"""The manual page documents the admin command's real parser: every command and option.

The commands and options come from matrix_synapse_setup.commands.cli.build_parser() (options hidden
with argparse.SUPPRESS are internal and left out); the page is read as roff: the tags of
its .TP items under COMMANDS and OPTIONS, and its SYNOPSIS blocks (.SY ... .YS).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from matrix_synapse_setup.commands.cli import build_parser

PAGE = Path(__file__).resolve().parents[2] / "debian" / "matrix-synapse-setup.8"
OPTION = re.compile(r"(?<![\w-])(--?[a-z][a-z-]*)")


def plain(roff: str) -> str:
    """roff text without font escapes, with its hyphens and spaces as typed."""
    text = re.sub(r"\\f[BIRP]|\\f\[[A-Z]*\]", "", roff)
    text = text.replace("\\-", "-").replace("\\~", " ").replace("\\e", "\\")
    text = re.sub(r"^\.(B|I|BR|RB|IR|RI|BI|IB)\s+", "", text, flags=re.MULTILINE)
    return text.replace('"', "")


def sections(roff: str) -> dict[str, str]:
    parts = re.split(r"^\.SH\s+(.*)$", roff, flags=re.MULTILINE)
    return {name.strip('"'): body for name, body in zip(parts[1::2], parts[2::2], strict=True)}


def tags(body: str) -> list[str]:
    """The tag line of every .TP item."""
    lines = body.splitlines()
    return [plain(lines[i + 1]) for i, line in enumerate(lines[:-1]) if line.startswith(".TP")]


def synopsis_blocks(body: str) -> dict[str, str]:
    """command -> the plain text of its .SY block (the block of -h has no command)."""
    blocks = {}
    for block in re.findall(r"^\.SY .*?^\.YS", body, flags=re.MULTILINE | re.DOTALL):
        words = plain(block).split()
        command = words[2] if len(words) > 2 and re.fullmatch("[a-z][a-z-]*", words[2]) else ""
        blocks[command] = " ".join(words)
    return blocks


def parser_options(parser: argparse.ArgumentParser) -> set[str]:
    return {
        flag
        for action in parser._actions
        if action.help != argparse.SUPPRESS and not isinstance(action, argparse._SubParsersAction)
        for flag in action.option_strings
    }


def commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    found: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found.update(action.choices)
    return found


PARSER = build_parser()
ROFF = PAGE.read_text(encoding="utf-8")
SECTIONS = sections(ROFF)


def test_the_parser_is_read():
    """The lists below come from the real parser (an empty one would prove nothing)."""
    assert set(commands(PARSER)) >= {"provision", "verify", "migrate"}
    assert {"--host", "--password-file", "--dry-run", "-h"} <= parser_options(
        commands(PARSER)["migrate"]
    )
    assert "--socket-dir" not in parser_options(commands(PARSER)["provision"])  # hidden


def test_every_command_has_an_item_under_commands():
    documented = {tag.split()[0] for tag in tags(SECTIONS["COMMANDS"])}
    assert documented == set(commands(PARSER))


def test_every_option_has_an_item_under_options_and_no_other_does():
    wanted = parser_options(PARSER).union(*map(parser_options, commands(PARSER).values()))
    documented = {flag for tag in tags(SECTIONS["OPTIONS"]) for flag in OPTION.findall(tag)}
    assert documented == wanted


def test_every_command_and_its_options_are_in_the_synopsis():
    blocks = synopsis_blocks(SECTIONS["SYNOPSIS"])
    for name, sub in commands(PARSER).items():
        assert name in blocks, f"no synopsis for {name}"
        text = blocks[name]
        shared = re.search(r"options as for (\S+)", text)
        if shared:  # "[options as for provision]": that block's options count too
            text += " " + blocks[shared.group(1).rstrip("]")]
        shown = set(OPTION.findall(text)) | {"-h", "--help"}  # -h has a block of its own
        assert parser_options(sub) <= shown, f"{name}: {parser_options(sub) - shown}"
    assert {"-h", "--help"} <= set(OPTION.findall(blocks[""]))


def test_every_exit_status_of_the_command_is_documented():
    documented = {tag.strip() for tag in tags(SECTIONS["EXIT STATUS"])}
    # errors.run: 0, SetupError's default 1, 130 on Control-C; argparse and "no
    # command": 2.
    from matrix_synapse_setup.core.errors import EXIT_FAILURE

    assert documented == {"0", str(EXIT_FAILURE), "2", "130"}


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff is not installed")
def test_groff_reads_the_page_without_a_warning():
    proc = subprocess.run(
        ["groff", "-man", "-Tutf8", "-ww", "-z", str(PAGE)], capture_output=True, text=True
    )
    assert (proc.returncode, proc.stderr) == (0, "")
