"""The ISO's commands against a server: ``curves fetch|follow`` and ``award submit|interval``.

A curve prints one row per segment: ``kind`` fixed_demand (the inflexible net
load), import_demand (a demand bid: the DSO buys up to ``quantity_kw`` at
``price``) or export_supply, ``quantity_kw`` in kW (the interface's unit on the
wire; divide by 1,000 for MW), ``price`` per MWh.
"""

from __future__ import annotations

from pathlib import Path

from dsomarket.clients.api import Client, InterfaceCurve, IntervalAward
from dsomarket.clients.cli import non_negative_int
from dsomarket.clients.commands.remote import add_connection, show, talk, utc
from dsomarket.clients.commands.tables import read_award
from dsomarket.clients.output import Stream, add_format_options
from dsomarket.engine.errors import InputError

CURVE_COLUMNS = ("sequence", "market_id", "feeder_id", "interval", "kind", "segment", "price", "quantity_kw",
                 "fixed_net_load_kw", "conditional")


def register(subparsers) -> None:
    """Add the ``curves`` and ``award`` groups."""
    g = subparsers.add_parser("curves", help="interface curves (ISO)").add_subparsers(
        dest="curves_command", required=True, metavar="ACTION")
    p = g.add_parser("fetch", help="published curve segments")
    p.add_argument("--market", default="")
    p.add_argument("--feeder", default="")
    add_connection(p)
    add_format_options(p)
    p.set_defaults(func=_curves_fetch)
    p = g.add_parser("follow", help="curve segments as each curve is published, after the history (Ctrl-C stops)")
    p.add_argument("--market", default="")
    p.add_argument("--feeder", default="")
    p.add_argument("--after", type=non_negative_int, default=0, metavar="SEQUENCE", help="resume after this sequence")
    p.add_argument("--count", type=non_negative_int, default=0, help="stop after this many curves (default: never)")
    add_connection(p)
    add_format_options(p, stream=True)
    p.set_defaults(func=_curves_follow)

    g = subparsers.add_parser("award", help="the ISO's award").add_subparsers(
        dest="award_command", required=True, metavar="ACTION")
    p = g.add_parser("submit", help="award a published market: interval, import_kw[, price]",
                     description="Columns: interval (ISO 8601 UTC start), import_kw (kW from the ISO, negative = "
                                 "export), optionally price (per MWh; empty = the interface's marginal price). "
                                 "Exit status 1 when the re-clearing at the award is not optimal.")
    p.add_argument("--market", required=True)
    p.add_argument("--file", required=True, type=Path)
    add_connection(p)
    p.set_defaults(func=_award_submit)
    p = g.add_parser("interval", help="award the next interval(s) of a published real-time or hour-ahead market",
                     description="The rolling award (RealTimeService.SubmitIntervalAward): the intervals named are "
                                 "disaggregated and dispatched now, the others stay open for later awards. Give "
                                 "--interval and --import-kw (and --price) for one interval, or --file with the "
                                 "columns of `award submit` for a few. Prints the status, the market's state and "
                                 "the intervals still without an award; exit status 1 when the re-clearing at "
                                 "the award is not optimal.")
    p.add_argument("--market", required=True)
    p.add_argument("--file", type=Path, help="interval, import_kw[, price] per row")
    p.add_argument("--interval", help="start of the interval (ISO 8601 UTC)")
    p.add_argument("--import-kw", type=float, help="the ISO's dispatch signal, kW (negative = export)")
    p.add_argument("--price", default="", help="per MWh (default: the interface's marginal price)")
    add_connection(p)
    p.set_defaults(func=_award_interval)


def segment_rows(curve: InterfaceCurve) -> list[dict]:
    return [{"sequence": curve.sequence, "market_id": curve.market_id, "feeder_id": curve.feeder_id,
             "interval": curve.interval_start, "kind": s.kind, "segment": s.index, "price": s.price,
             "quantity_kw": s.quantity_kw, "fixed_net_load_kw": curve.fixed_net_load_kw,
             "conditional": curve.conditional} for s in curve.segments]


async def _segments(client: Client, args) -> list[dict]:
    curves = await client.list_curves(market_id=args.market, feeder_id=args.feeder)
    return [row for c in curves for row in segment_rows(c)]


def _curves_fetch(args) -> int:
    return show(args, lambda c: _segments(c, args), CURVE_COLUMNS)


def _curves_follow(args) -> int:
    out = Stream(args.format, CURVE_COLUMNS)

    async def work(client: Client) -> int:
        seen = 0
        async for curve in client.curve_stream(market_id=args.market, feeder_id=args.feeder,
                                               after_sequence=args.after):
            for row in segment_rows(curve):
                out.write(row)
            seen += 1
            if args.count and seen >= args.count:
                break
        return 0

    return talk(args, work)


def _award_submit(args) -> int:
    awards = read_award(args.file)

    async def work(client: Client) -> int:
        result = await client.submit_award(args.market, awards)
        print(f"award {result.status}; market {result.market.market_id} is {result.market.state}")
        for line in result.diagnosis:
            print(f"  {line}")
        return 0 if result.status == "optimal" else 1

    return talk(args, work)


def _interval_awards(args) -> list[IntervalAward]:
    """The awards of ``award interval``: from ``--file``, or the one interval of the flags."""
    single = args.interval is not None or args.import_kw is not None
    if (args.file is None) == (not single):
        raise InputError("arguments", "file", "give --file, or --interval with --import-kw, not both")
    if args.file is not None:
        return read_award(args.file)
    if args.interval is None or args.import_kw is None:
        raise InputError("arguments", "interval" if args.interval is None else "import_kw",
                         "--interval and --import-kw go together")
    return [IntervalAward(utc(args.interval, "interval"), args.import_kw, args.price or None)]


def _award_interval(args) -> int:
    awards = _interval_awards(args)

    async def work(client: Client) -> int:
        result, remaining = await client.submit_interval_award(args.market, awards)
        print(f"interval award {result.status}; market {result.market.market_id} is {result.market.state}; "
              f"{remaining} intervals without an award")
        for line in result.diagnosis:
            print(f"  {line}")
        return 0 if result.status == "optimal" else 1

    return talk(args, work)
