"""The ``dsomarket`` command line.

Each group of subcommands lives in a module of ``clients.commands`` with a
``register(subparsers)`` function; a subcommand sets ``func(args) -> int``.

Exit status: 0 on success; 1 when a market or solve fails (infeasible, a
refused call); 2 for bad input or usage, with one line on stderr naming the
field (rows counted as a spreadsheet does: the header is row 1, the first data
row is row 2); 130 after Ctrl-C. A command that sets ``solves=True`` runs in a
worker thread, so that Ctrl-C stops it even inside the solver. Before a command
that sets ``solves`` or ``quiet_highs`` (``serve``, ``demo``: their solves run
in process), the process's first HiGHS model is made with stdout closed, so that
the HiGHS banner never mixes with the command's output. The process runs one
OpenBLAS thread unless ``OPENBLAS_NUM_THREADS`` says otherwise (:func:`_one_blas_thread`).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import math
import os
import sqlite3
import sys
import threading

from dsomarket import __version__
from dsomarket.engine.errors import InputError

COMMAND_MODULES = ("feeder", "market", "flex", "meters", "territory", "service", "operator", "aggregator", "iso",
                   "ders", "shell", "plot", "hybrid", "territories")
COMMANDS = {
    "feeder": "feeder", "powerflow": "feeder",
    "clear": "market", "curve": "market", "disaggregate": "market", "settle": "market",
    "flex": "flex", "meters": "meters", "territory": "territory",
    "audit": "service", "demo": "service", "serve": "service", "token": "service",
    "feeders": "operator", "markets": "operator", "network": "operator", "territories": "territories",
    "awards": "aggregator", "bids": "aggregator", "instructions": "aggregator", "resources": "aggregator",
    "statements": "aggregator",
    "award": "iso", "curves": "iso",
    "completion": "shell", "config": "shell", "whoami": "shell",
    "plot": "plot",
    "registry": "hybrid", "envelopes": "hybrid", "hybrid": "hybrid",
    "ders": "ders", "direct": "ders", "conflicts": "ders",
}
"""Which module registers each command (add new commands here; a test checks the table against the
modules). A command imports only its own module, so that ``clear`` does not pay for gRPC or cvxpy;
a command missing from the table still works, importing every module."""


class _Parser(argparse.ArgumentParser):
    """A usage error is one line too, like any other bad input (the usage is one ``--help`` away).

    Subcommand parsers are of the same class (argparse makes them with ``type(parent)``).
    """

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _number(kind, name: str, ok, what: str):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") \
                from None
        if not (math.isfinite(value) and ok(value)):
            raise argparse.ArgumentTypeError(f"{text!r}: must be {what}")
        return value

    parse.__name__ = name   # argparse names the type in its messages
    return parse


positive_int = _number(int, "positive integer", lambda v: v > 0, "at least 1")
non_negative_int = _number(int, "non-negative integer", lambda v: v >= 0, "0 or more")
positive_float = _number(float, "positive number", lambda v: v > 0, "greater than 0")
non_negative_float = _number(float, "non-negative number", lambda v: v >= 0, "0 or more")
finite_float = _number(float, "number", lambda v: True, "finite")


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser; given the arguments, only the module of their command is imported (all without one)."""
    _one_blas_thread()
    parser = _Parser(prog="dsomarket", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more log output: -v info, -vv debug (default: warnings only; `serve` logs info)")
    parser.add_argument("-q", "--quiet", action="count", default=0, help="less log output: errors only")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    command = next((a for a in (argv or []) if not a.startswith("-")), None)
    if command is None and "--version" in (argv or []):
        return parser   # `dsomarket --version` needs no command's module
    for name in [COMMANDS[command]] if command in COMMANDS else COMMAND_MODULES:
        importlib.import_module(f"dsomarket.clients.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    args.verbosity = args.verbose - args.quiet
    logging.basicConfig(level=logging.WARNING - 10 * args.verbosity,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if getattr(args, "solves", False) or getattr(args, "quiet_highs", False):
            _quiet_highs()
        if getattr(args, "solves", False):
            return _interruptible(args)
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return _interrupted()
    except InputError as exc:
        return _fail(error_line(exc))
    except sqlite3.DatabaseError as exc:
        return _fail(f"{getattr(args, 'db', 'database')}: not a dsomarket database ({exc})")
    except OSError as exc:
        return _fail(f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc))


def _one_blas_thread() -> None:
    """Ask numpy's and scipy's OpenBLAS for one thread each, unless the user set ``OPENBLAS_NUM_THREADS``.

    Only before numpy is imported (OpenBLAS reads the variable when it loads), so in effect only in a
    command-line process, before its command's module loads; its children inherit it. Each OpenBLAS
    starts a thread per core when it loads, which spins waiting for work: about a tenth of the CPU of a
    33-bus ``clear`` (``benchmarks/bench_startup.py``), and a core taken from HiGHS on a busy machine.
    The engine's dense algebra is small, and the curve tracer already limits BLAS to one thread
    (``engine.interface.trace_curve``).
    """
    if "numpy" not in sys.modules:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def error_line(exc: InputError) -> str:
    """The one line the command line prints for bad input; a row is counted as in a spreadsheet."""
    if exc.row is None:
        return str(exc)
    return f"{exc.table} row {exc.row + 2} (the header is row 1), field {exc.field}: {exc.reason}"


def _fail(line: str) -> int:
    print(f"dsomarket: error: {line}", file=sys.stderr)
    return 2


def _interruptible(args) -> int:
    """Run ``args.func`` in a worker thread; Ctrl-C in the main thread ends the process at once.

    HiGHS releases the GIL while it solves, but Python runs signal handlers only in the
    main thread between bytecodes: a solve in the main thread would hold Ctrl-C until it ends.
    """
    box: dict = {}

    def work():
        try:
            box["rc"] = int(args.func(args) or 0)
        except BaseException as exc:   # re-raised in the main thread, where main() maps it
            box["exc"] = exc

    thread = threading.Thread(target=work, name="dsomarket-command", daemon=True)
    thread.start()
    try:
        while thread.is_alive():
            thread.join(0.1)
    except KeyboardInterrupt:
        _interrupted()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)   # the solver thread cannot be stopped from Python; files are written atomically
    if "exc" in box:
        raise box["exc"]
    return box["rc"]


def _interrupted() -> int:
    from dsomarket.clients.files import remove_empty_outputs

    remove_empty_outputs()
    print("dsomarket: interrupted (Ctrl-C); results of this run are incomplete", file=sys.stderr)
    return 130


def _quiet_highs() -> None:
    """Make the process's first HiGHS model, which prints the HiGHS banner, with stdout on /dev/null."""
    import ctypes

    import highspy

    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        highspy.Highs()
        ctypes.CDLL(None).fflush(None)   # the banner sits in C's stdout buffer until flushed
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
