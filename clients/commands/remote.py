"""What every command that talks to a server shares: connection options and one way to run a call.

Connection settings come from flags, then ``DSOMARKET_*`` variables, then the
config file (see :mod:`clients.config`). A call the server refuses prints one
line, ``dsomarket: error: CODE: details``, and exits with status 2 when the
request was malformed (INVALID_ARGUMENT), 1 otherwise (not found, not
allowed, wrong state, unreachable).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from dsomarket.clients.cli import positive_float
from dsomarket.clients.config import Settings, resolve
from dsomarket.clients.output import add_format_options, emit, iso
from dsomarket.engine.errors import InputError

if TYPE_CHECKING:
    from dsomarket.clients.api import Client


def command_group(subparsers, name: str, text: str):
    """A ``dsomarket NAME ACTION`` group; its actions are added to what this returns."""
    return subparsers.add_parser(name, help=text).add_subparsers(dest=f"{name}_command", required=True,
                                                                 metavar="ACTION")


def add_list_options(p: argparse.ArgumentParser) -> None:
    """Connection flags and the table/CSV/JSON/Parquet output options of a command that lists rows."""
    add_connection(p)
    add_format_options(p)


def add_connection(p: argparse.ArgumentParser) -> None:
    """The connection flags; None means "not given", so the environment and the config file can fill in."""
    g = p.add_argument_group("connection", "each from the flag, else DSOMARKET_<NAME>, else the config file "
                                           "(see `dsomarket config show`)")
    g.add_argument("--server", help="host:port (default 127.0.0.1:50051)")
    g.add_argument("--token", help="participant token (`dsomarket token create`)")
    g.add_argument("--token-file", type=Path, help="a file holding the token")
    g.add_argument("--ca", type=Path, help="CA of the server certificate (PEM): use TLS")
    g.add_argument("--cert", type=Path, help="client certificate (PEM) for mutual TLS")
    g.add_argument("--key", type=Path, help="client key (PEM) for mutual TLS")
    g.add_argument("--timeout", type=positive_float, help="seconds per call (default 60)")
    g.add_argument("--config", type=Path, help="config file (default $DSOMARKET_CONFIG or "
                                               "~/.config/dsomarket/config.toml)")
    g.add_argument("--profile", help="a [profiles.NAME] table of the config file (default $DSOMARKET_PROFILE)")


def settings(args: argparse.Namespace) -> Settings:
    flags = {k: getattr(args, k, None) for k in ("server", "token", "ca", "cert", "key", "timeout")}
    flags["token_file"] = getattr(args, "token_file", None)
    return resolve(flags, config=getattr(args, "config", None), profile=getattr(args, "profile", None))


def talk(args: argparse.Namespace, work) -> int:
    """Run ``await work(client)`` and return its exit status; a refused call prints one line.

    The client library, and gRPC with it, is imported here: registering these options costs an offline
    command of the same group (``flex clear``, ``meters settle``) nothing."""
    from dsomarket.clients.api import ApiError, InvalidArgument

    config = settings(args)

    async def main():
        async with config.client() as client:
            return await work(client)

    try:
        return asyncio.run(main()) or 0
    except ApiError as exc:
        print(f"dsomarket: error: {exc.code.name}: {exc.details}", file=sys.stderr)
        return 2 if isinstance(exc, InvalidArgument) else 1
    except ValueError as exc:  # a value the client library rejects before sending (InputError included)
        print(f"dsomarket: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # a `follow` stopped by the user
        return 130


def utc(text: str, field: str) -> datetime:
    """An ISO 8601 time given on the command line; without a zone it is UTC."""
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InputError("arguments", field, f"{text!r} is not an ISO 8601 time (e.g. 2026-12-02T00:00Z)") \
            from None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def show(args: argparse.Namespace, call, row_type) -> int:
    """Print the rows ``await call(client)`` returns in ``--format`` (to ``--out``)."""
    async def work(client: Client) -> int:
        emit(await call(client), args.format, args.out, row_type)
        return 0

    return talk(args, work)


def acknowledge(args: argparse.Namespace, call, what: str) -> int:
    """Run a write whose reply is an :class:`Ack` and say what was stored, and when."""
    async def work(client: Client) -> int:
        ack = await call(client)
        print(f"{ack.count} {what} at {iso(ack.acknowledged_at)}")
        return 0

    return talk(args, work)
