"""The admin command, /usr/sbin/matrix-synapse-setup."""

from __future__ import annotations

import argparse
import sys

from .errors import run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="matrix-synapse-setup",
        description="Provision and verify the PostgreSQL database of Matrix Synapse.",
    )
    parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)

    def _main() -> int:
        if args.command is None:
            parser.print_help(sys.stderr)
            return 2
        return args.func(args)

    return run(_main)
