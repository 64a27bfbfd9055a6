"""The aggregator's commands against a server: resources, bids, awards, instructions, statements.

``resources register|list``, ``bids submit|replace|withdraw|list``,
``awards list|follow``, ``instructions list|follow`` and ``statements list|follow``.
An aggregator sees only its own; operators and auditors see everyone's
(``--aggregator`` narrows it). Lists print with ``--format``; ``follow``
prints one event per line (JSON or CSV) as it happens, history first.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from dsomarket.clients.api import Award, Bid, Client, Instruction, Resource, Statement
from dsomarket.clients.cli import non_negative_int, positive_float, positive_int
from dsomarket.clients.commands.remote import acknowledge, add_connection, add_list_options, command_group, show, talk
from dsomarket.clients.commands.tables import read_bid_ids, read_bids, read_resources
from dsomarket.clients.output import Stream, add_format_options, iso

BIDS_COLUMNS = ("Columns: bid_id, resource_id, side (buy|sell), quantity_kw, price (per MWh), interval "
                "(ISO 8601 UTC start)[, tan_phi]; CSV or Parquet.")


def register(subparsers) -> None:
    """Add the ``resources``, ``bids``, ``awards``, ``instructions`` and ``statements`` groups."""
    g = command_group(subparsers, "resources", "your DERs on a server")
    p = g.add_parser("register", help="register (or update) resources from a file, all or none",
                     description="Columns: resource_id, feeder_id, bus, kind (pv|battery|ev|flexible_load), "
                                 "capacity_kw and, as the kind needs them, energy_kwh, charge_kw, discharge_kw, "
                                 "eta_charge, eta_discharge, soc_init_kwh, soc_end_kwh, soc_min_kwh, ramp_kw "
                                 "(kW, kWh), departure (ISO 8601 UTC; EVs). CSV or Parquet.")
    p.add_argument("--file", required=True, type=Path)
    add_connection(p)
    p.set_defaults(func=_resources_register)
    p = g.add_parser("list", help="registered resources")
    p.add_argument("--aggregator", default="", help="operator and auditor: whose (default all)")
    p.add_argument("--feeder", default="")
    add_list_options(p)
    p.set_defaults(func=_resources_list)

    g = command_group(subparsers, "bids", "your bids on a server")
    p = g.add_parser("submit", help="submit new bid segments from a file, all or none", description=BIDS_COLUMNS)
    _market_file(p)
    p.add_argument("--batch", type=positive_int, default=20_000, help="segments per request (default %(default)s)")
    p.set_defaults(func=_bids_submit)
    p = g.add_parser("replace", help="replace your bids of the file's bid ids, all or none",
                     description="Every bid_id in the file replaces all segments of that bid (same columns as "
                                 "submit). " + BIDS_COLUMNS)
    _market_file(p)
    p.set_defaults(func=_bids_replace)
    p = g.add_parser("withdraw", help="withdraw bids by id, before their gate closes")
    p.add_argument("--market", required=True)
    ids = p.add_mutually_exclusive_group(required=True)
    ids.add_argument("--bid", action="append", metavar="BID_ID", help="a bid id (repeat)")
    ids.add_argument("--file", type=Path, help="a file with a bid_id column")
    add_connection(p)
    p.set_defaults(func=_bids_withdraw)
    p = g.add_parser("list", help="bids, newest state of each segment")
    p.add_argument("--market", default="")
    p.add_argument("--aggregator", default="", help="operator and auditor: whose bids (default all)")
    p.add_argument("--include-withdrawn", action="store_true")
    add_list_options(p)
    p.set_defaults(func=_bids_list)

    for name, what in (("awards", "cleared quantities and prices per bid"),
                       ("instructions", "dispatch instructions per resource (awards and overrides)")):
        g = command_group(subparsers, name, what)
        p = g.add_parser("list", help=f"{name} so far")
        p.add_argument("--market", default="")
        p.add_argument("--aggregator", default="", help="operator and auditor: whose (default all)")
        add_list_options(p)
        p.set_defaults(func=_dispatch_list, kind=name)
        p = g.add_parser("follow", help=f"{name} as they happen, after the history (Ctrl-C stops)")
        p.add_argument("--market", default="")
        p.add_argument("--aggregator", default="", help="operator and auditor: whose (default all)")
        p.add_argument("--after", type=non_negative_int, default=0, metavar="SEQUENCE", help="resume after this sequence")
        p.add_argument("--count", type=non_negative_int, default=0, help="stop after this many events (default: never)")
        if name == "awards":
            p.add_argument("--with-instructions", action="store_true",
                           help="print instructions too (a `type` column tells them apart)")
        add_connection(p)
        add_format_options(p, stream=True)
        p.set_defaults(func=_dispatch_follow, kind=name)

    g = command_group(subparsers, "statements", "settlement statements (after the market is settled)")
    p = g.add_parser("list", help="statement lines: amount > 0 is paid to the aggregator")
    p.add_argument("--market", default="")
    p.add_argument("--aggregator", default="", help="operator and auditor: whose (default all)")
    add_list_options(p)
    p.set_defaults(func=_statements_list)
    p = g.add_parser("follow", help="statement lines as markets are settled, after those so far (Ctrl-C stops)",
                     description="The API streams awards and instructions but not statements (a market is "
                                 "settled once): this asks for the list every --every seconds and prints the "
                                 "lines not printed before.")
    p.add_argument("--market", default="")
    p.add_argument("--aggregator", default="", help="operator and auditor: whose (default all)")
    p.add_argument("--every", type=positive_float, default=10.0, metavar="SECONDS",
                   help="seconds between asks (default %(default)s)")
    p.add_argument("--count", type=non_negative_int, default=0, help="stop after this many lines (default: never)")
    add_connection(p)
    add_format_options(p, stream=True)
    p.set_defaults(func=_statements_follow)




def _market_file(p) -> None:
    p.add_argument("--market", required=True)
    p.add_argument("--file", required=True, type=Path)
    add_connection(p)


def _resources_register(args) -> int:
    resources = read_resources(args.file)

    async def work(client: Client) -> int:
        n = await client.register_resources(resources)
        print(f"{n} resources registered")
        return 0

    return talk(args, work)


def _resources_list(args) -> int:
    return show(args, lambda c: c.list_resources(aggregator_id=args.aggregator, feeder_id=args.feeder), Resource)


def _bids_submit(args) -> int:
    bids = read_bids(args.file)

    async def work(client: Client) -> int:
        total = 0
        for k in range(0, len(bids), args.batch):
            ack = await client.submit_bids(args.market, bids[k:k + args.batch])
            total += ack.count
            print(f"{total} of {len(bids)} segments acknowledged at {iso(ack.acknowledged_at)}")
        return 0

    return talk(args, work)


def _bids_replace(args) -> int:
    bids = read_bids(args.file)
    return acknowledge(args, lambda c: c.replace_bids(args.market, bids), "segments replaced")


def _bids_withdraw(args) -> int:
    ids = args.bid if args.bid else read_bid_ids(args.file)
    return acknowledge(args, lambda c: c.withdraw_bids(args.market, ids), "segments withdrawn")


def _bids_list(args) -> int:
    return show(args, lambda c: c.list_bids(market_id=args.market, aggregator_id=args.aggregator,
                                            include_withdrawn=args.include_withdrawn), Bid)


_DISPATCH = {"awards": ("list_awards", Award), "instructions": ("list_instructions", Instruction)}


def _dispatch_list(args) -> int:
    method, row_type = _DISPATCH[args.kind]
    return show(args, lambda c: getattr(c, method)(market_id=args.market, aggregator_id=args.aggregator), row_type)


def _dispatch_follow(args) -> int:
    both = getattr(args, "with_instructions", False)
    row_type = _DISPATCH[args.kind][1]
    wanted = (Award, Instruction) if both else row_type
    if both:   # one header over both event types: the award's columns, then the instruction's own
        columns = ["type", *_fields(Award)] + [c for c in _fields(Instruction) if c not in _fields(Award)]
    else:
        columns = _fields(row_type)
    out = Stream(args.format, columns)

    async def work(client: Client) -> int:
        seen = 0
        async for event in client.dispatch_stream(market_id=args.market, aggregator_id=args.aggregator,
                                                  after_sequence=args.after):
            if not isinstance(event, wanted):
                continue
            out.write(event, type=type(event).__name__.lower())
            seen += 1
            if args.count and seen >= args.count:
                break
        return 0

    return talk(args, work)


def _fields(row_type) -> list[str]:
    return list(row_type.__dataclass_fields__)


def _statements_list(args) -> int:
    return show(args, lambda c: c.list_statements(market_id=args.market, aggregator_id=args.aggregator), Statement)


def _statements_follow(args) -> int:
    out = Stream(args.format, _fields(Statement))

    async def work(client: Client) -> int:
        printed, seen = set(), 0
        while True:
            for s in await client.list_statements(market_id=args.market, aggregator_id=args.aggregator):
                key = (s.market_id, s.aggregator_id, s.bid_id, s.resource_id, s.interval_start, s.settlement, s.kind)
                if key in printed:
                    continue
                printed.add(key)
                out.write(s)
                seen += 1
                if args.count and seen >= args.count:
                    return 0
            await asyncio.sleep(args.every)

    return talk(args, work)
