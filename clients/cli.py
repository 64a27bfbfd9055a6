"""The ``dsomarket`` command line.

Each group of subcommands lives in a module of ``clients.commands`` with a
``register(subparsers)`` function; a subcommand sets ``func(args) -> int``.
Bad input ends with exit status 2 and one line on stderr naming the field.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from dsomarket import __version__
from dsomarket.engine.errors import InputError

COMMAND_MODULES = ("feeder", "market", "flex", "territory", "service", "operator", "aggregator", "iso", "shell",
                   "hybrid")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dsomarket", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more log output: -v info, -vv debug (default: warnings only; `serve` logs info)")
    parser.add_argument("-q", "--quiet", action="count", default=0, help="less log output: errors only")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"dsomarket.clients.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.verbosity = args.verbose - args.quiet
    logging.basicConfig(level=logging.WARNING - 10 * args.verbosity,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
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
