"""The ``dsomarket`` command line.

Each group of subcommands lives in a module of ``clients.commands`` with a
``register(subparsers)`` function; a subcommand sets ``func(args) -> int``.
Bad input ends with exit status 2 and one line on stderr naming the field.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from dsomarket.engine.errors import InputError

COMMAND_MODULES = ("feeder", "market", "flex", "service", "hybrid")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dsomarket", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"dsomarket.clients.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except InputError as exc:
        print(f"dsomarket: error: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, NotADirectoryError, PermissionError) as exc:
        print(f"dsomarket: error: {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
