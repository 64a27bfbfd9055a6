"""The operator's commands against a server: ``feeders``, ``markets`` and ``network``.

``feeders create|list``; ``markets create|list|show|intervals|prices`` (the
last three for every role) and the market's life: ``markets gate``,
``reopen``, ``clear``, ``publish``, ``settle`` and ``override``;
``network submit|list`` for a feeder's network changes. Every call goes through
:mod:`clients.api`; lists print with ``--format table|csv|json|parquet``.
"""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta
from pathlib import Path

from dsomarket.clients.api import BusPrice, Client, Feeder, FeederUpload, Instruction, InterfaceFlow, Market
from dsomarket.clients.api import MARKET_KINDS, MARKET_STATES, MarketInterval, MarketRevision, NetworkChange
from dsomarket.clients.commands.remote import add_connection, show, talk, utc
from dsomarket.clients.commands.tables import read_network_changes
from dsomarket.clients.files import read_feeder
from dsomarket.clients.output import add_format_options, chosen_format, emit, iso
from dsomarket.engine.errors import InputError


def register(subparsers) -> None:
    """Add the ``feeders``, ``markets`` and ``network`` groups."""
    group = subparsers.add_parser("feeders", help="feeders loaded on a server (operator)")
    actions = group.add_subparsers(dest="feeders_command", required=True, metavar="ACTION")
    fc = actions.add_parser("create", help="load a built-in feeder or upload a feeder directory",
                            description="Load a feeder under FEEDER_ID: a built-in one (--builtin ieee33, ieee69, "
                                        "synth:N:SEED) or a feeder directory (--dir: feeder.json, buses.csv, "
                                        "lines.csv; checked here first, as `dsomarket clear` reads it).")
    fc.add_argument("feeder_id", help="the id markets will refer to")
    source = fc.add_mutually_exclusive_group(required=True)
    source.add_argument("--builtin", help="ieee33, ieee69 or synth:N:SEED")
    source.add_argument("--dir", type=Path, help="a feeder directory (`dsomarket feeder export` writes one)")
    _common(fc)
    fc.set_defaults(func=_feeders_create)
    fl = actions.add_parser("list", help="loaded feeders (operator, auditor)")
    _common(fl)
    fl.set_defaults(func=_feeders_list)

    group = subparsers.add_parser("markets", help="markets on a server: create, read, gate, clear, publish, "
                                                  "settle, override")
    actions = group.add_subparsers(dest="markets_command", required=True, metavar="ACTION")
    mc = actions.add_parser("create", help="open a market (operator)")
    mc.add_argument("market_id")
    mc.add_argument("--feeder", required=True, help="a loaded feeder's id")
    add_market_options(mc, "MARKET", "real-time: the day-ahead market it settles deviations from")
    _common(mc, formats=False)
    mc.set_defaults(func=_markets_create)

    ml = actions.add_parser("list", help="markets you may see")
    ml.add_argument("--feeder", default="", help="only this feeder's markets")
    ml.add_argument("--state", action="append", choices=MARKET_STATES, default=[], help="only these states (repeat)")
    ml.add_argument("--kind", choices=MARKET_KINDS, default="")
    _common(ml)
    ml.set_defaults(func=_markets_list)

    ms = actions.add_parser("show", help="one market, field by field")
    ms.add_argument("market_id")
    _common(ms)
    ms.set_defaults(func=_markets_show)

    mi = actions.add_parser("intervals", help="a market's intervals and their gates")
    mi.add_argument("market_id")
    _common(mi)
    mi.set_defaults(func=_markets_intervals)

    mp = actions.add_parser("prices", help="published DLMPs per bus and interval, per MWh, with their parts "
                                           "(energy + congestion + voltage + loss)")
    mp.add_argument("market_id")
    mp.add_argument("--bus", default="", help="only this bus")
    mp.add_argument("--include-superseded", action="store_true",
                    help="also the prices no longer in force (a clearing's once awarded, those a network change "
                         "replaced), flagged superseded")
    _common(mp)
    mp.set_defaults(func=_markets_prices)

    for name, text, func in (("gate", "close the gate now: open -> closed (operator)", _gate),
                             ("publish", "publish prices and curves to the ISO: cleared -> published (operator)",
                              _publish)):
        p = actions.add_parser(name, help=text)
        p.add_argument("market_id")
        _common(p, formats=False)
        p.set_defaults(func=func)

    mk = actions.add_parser("clear", help="nodal clearing and interface curves: closed -> cleared (operator)",
                            description="Clear a closed market and trace its interface curves. Prints the "
                                        "interface import per interval at the forecast ISO price. Exit status 1 "
                                        "when the market is not optimal (it stays closed; the diagnosis says "
                                        "why).")
    mk.add_argument("market_id")
    mk.add_argument("--iso-price", action="append", default=[], metavar="PRICE",
                    help="forecast ISO price per MWh: once for all intervals or once per interval "
                         "(default: midpoint of floor and cap)")
    _common(mk)
    mk.set_defaults(func=_clear)

    mr = actions.add_parser("reopen", help="reopen a closed market whose clearing failed: closed -> open "
                                           "(operator)",
                            description="Bids can then be withdrawn or replaced, and the gate closed and the "
                                        "market cleared again. The reason is audited.")
    mr.add_argument("market_id")
    mr.add_argument("--reason", required=True, help="why, for the audit log")
    _common(mr, formats=False)
    mr.set_defaults(func=_reopen)

    mt = actions.add_parser("settle", help="settle an awarded market: awarded -> settled (operator)")
    mt.add_argument("market_id")
    _common(mt, formats=False)
    mt.set_defaults(func=_settle)

    mo = actions.add_parser("override", help="override one resource's dispatch for reliability (operator)",
                            description="Send an instruction that replaces a resource's awarded net injection "
                                        "in one interval of an awarded market; its aggregator receives it on "
                                        "its dispatch stream.")
    mo.add_argument("market_id")
    mo.add_argument("--aggregator", required=True, help="the resource's aggregator")
    mo.add_argument("--resource", required=True)
    mo.add_argument("--interval", required=True, help="interval start, ISO 8601 UTC")
    mo.add_argument("--kw", required=True, type=float, help="net injection to deliver, kW (positive = into "
                                                           "the feeder)")
    mo.add_argument("--reason", required=True, help="why, for the audit log and the aggregator")
    _common(mo)
    mo.set_defaults(func=_override)


    group = subparsers.add_parser("network", help="network changes of a feeder on a server (operator)")
    actions = group.add_subparsers(dest="network_command", required=True, metavar="ACTION")
    ns = actions.add_parser("submit", help="add changes as the feeder's next network version, all or none",
                            description="Columns as for the offline --network-changes: change_id, kind (outage, "
                                        "return, open, close, rating, voltage, interface), element, start, "
                                        "reason (or why) and optionally end, s_max_kva, vmin_pu, vmax_pu, "
                                        "import_max_kw, export_max_kw, shed. Markets of the feeder already "
                                        "cleared are cleared again; the table lists them.")
    ns.add_argument("--feeder", required=True)
    ns.add_argument("--file", required=True, type=Path)
    _common(ns)
    ns.set_defaults(func=_network_submit)
    nl = actions.add_parser("list", help="the feeder's network changes, in version order")
    nl.add_argument("--feeder", required=True)
    _common(nl)
    nl.set_defaults(func=_network_list)


def add_market_options(p: argparse.ArgumentParser, day_ahead_metavar: str, day_ahead_help: str) -> None:
    """The options of a new market (kind, delivery, gates, price limits, currency, VoLL, its day-ahead, its
    clearing model);
    :func:`market_times` reads the times back."""
    p.add_argument("--kind", choices=MARKET_KINDS, default="day_ahead",
                   help="day_ahead: hourly intervals; hour_ahead: 15-minute; real_time: 5-minute "
                        "(default %(default)s)")
    p.add_argument("--start", required=True, help="start of the first interval, ISO 8601 UTC, on a whole "
                                                  "interval (e.g. 2026-12-02T00:00Z)")
    p.add_argument("--intervals", type=int, default=0,
                   help="number of intervals (default: the server's for the kind, 24 day-ahead)")
    gate = p.add_mutually_exclusive_group()
    gate.add_argument("--gate-closure", help="one gate closure time for every interval, ISO 8601 UTC")
    gate.add_argument("--gate-lead", type=float, metavar="MINUTES",
                      help="each interval's gate closes this many minutes before it starts")
    p.add_argument("--floor", help="price floor per MWh (default -1000)")
    p.add_argument("--cap", help="price cap per MWh (default 3000)")
    p.add_argument("--currency", default="", help="ISO 4217 code (default EUR)")
    p.add_argument("--voll", help="value of lost load per MWh: shed fixed load above it (default: never shed)")
    p.add_argument("--day-ahead", default="", metavar=day_ahead_metavar, help=day_ahead_help)
    p.add_argument("--formulation", default="", metavar="NAME",
                   help="clearing model of the market's clearings, curves and awards: lossaware (the server's "
                        "default: losses in prices and interface import), lossless (alias lindistflow) or socp "
                        "(cleared and traced for comparison; cannot be awarded)")


def market_times(args) -> tuple:
    """Start, gate closure and gate lead of :func:`add_market_options`, checked."""
    if args.gate_lead is not None and args.gate_lead < 0:
        raise InputError("arguments", "gate-lead", "must be >= 0 minutes")
    start = utc(args.start, "start")
    closure = utc(args.gate_closure, "gate-closure") if args.gate_closure else None
    lead = timedelta(minutes=args.gate_lead) if args.gate_lead is not None else None
    return start, closure, lead


def _common(p: argparse.ArgumentParser, formats: bool = True) -> None:
    add_connection(p)
    if formats:
        add_format_options(p)


def _feeders_create(args) -> int:
    tables = None
    if args.dir is not None:
        if not args.dir.is_dir():
            raise InputError("feeder", "dir", f"{args.dir}: no such directory")
        if (args.dir / "loads.csv").exists():
            raise InputError("feeder", "dir", f"{args.dir / 'loads.csv'}: per-interval loads cannot be uploaded "
                                              "(the server takes the fixed loads of buses.csv); remove it")
        f = read_feeder(str(args.dir))
        tables = FeederUpload(f.name, f.root_bus, f.base_kv, f.buses.to_dict(as_series=False),
                              f.lines.to_dict(as_series=False), f.v0_pu, f.import_max_kw, f.export_max_kw)

    async def work(client: Client) -> int:
        feeder = await client.create_feeder(args.feeder_id, builtin=args.builtin or "", tables=tables)
        emit([feeder], args.format, args.out, Feeder)
        return 0

    return talk(args, work)


def _feeders_list(args) -> int:
    return show(args, lambda c: c.list_feeders(), Feeder)


def _markets_create(args) -> int:
    start, closure, lead = market_times(args)

    async def work(client: Client) -> int:
        m = await client.create_market(args.market_id, feeder_id=args.feeder, kind=args.kind, delivery_start=start,
                                       interval_count=args.intervals, gate_closure_time=closure, gate_lead=lead,
                                       price_floor=args.floor, price_cap=args.cap, currency=args.currency,
                                       value_of_lost_load=args.voll, day_ahead_market_id=args.day_ahead,
                                       formulation=args.formulation)
        print(f"market {m.market_id} is {m.state}: {m.kind} on {m.feeder_id}, {m.interval_count} intervals of "
              f"{m.interval_length} from {iso(m.delivery_start)}, formulation {m.formulation}")
        return 0

    return talk(args, work)


def _markets_list(args) -> int:
    async def work(client: Client) -> int:
        markets = await client.list_markets(feeder_id=args.feeder, states=args.state, kind=args.kind)
        # The table keeps what tells markets apart; `markets show` and the script formats have every field.
        emit(markets, args.format, args.out, ("market_id", "feeder_id", "kind", "state", "delivery_start",
                                              "interval_count", "interval_length", "price_floor", "price_cap",
                                              "currency", "formulation", "clearing_status")
             if chosen_format(args.format, args.out) == "table" else Market)
        return 0

    return talk(args, work)


def _markets_show(args) -> int:
    async def work(client: Client) -> int:
        m = await client.get_market(args.market_id)
        if chosen_format(args.format, args.out) == "table":   # one record reads better down than across
            emit([{"field": k, "value": v} for k, v in vars(m).items()], "table", args.out, ("field", "value"))
        else:
            emit([m], args.format, args.out, Market)
        return 0

    return talk(args, work)


def _markets_intervals(args) -> int:
    return show(args, lambda c: c.list_intervals(args.market_id), MarketInterval)


def _markets_prices(args) -> int:
    return show(args, lambda c: c.list_prices(args.market_id, bus=args.bus,
                                              include_superseded=args.include_superseded), BusPrice)


def _transition(args, method: str) -> int:
    async def work(client: Client) -> int:
        m = await getattr(client, method)(args.market_id)
        print(f"market {m.market_id} is {m.state}")
        return 0

    return talk(args, work)


def _gate(args) -> int:
    return _transition(args, "close_gate")


def _publish(args) -> int:
    return _transition(args, "publish_market")


def _clear(args) -> int:
    async def work(client: Client) -> int:
        r = await client.clear_market(args.market_id, iso_price_forecast=args.iso_price)
        welfare = "" if r.welfare is None else f", welfare {r.welfare} {r.market.currency} (benefit of buyers " \
                                               "minus cost of sellers and of the import)"
        print(f"market {r.market.market_id} is {r.market.state}: {r.status}{welfare}, "
              f"{r.curve_segments} curve segments, {r.solve_seconds:.2f} s", file=sys.stderr)
        for line in r.diagnosis:
            print(f"  {line}", file=sys.stderr)
        emit(r.interface, args.format, args.out, InterfaceFlow)
        return 0 if r.status == "optimal" else 1

    return talk(args, work)


def _reopen(args) -> int:
    async def work(client: Client) -> int:
        m = await client.reopen_market(args.market_id, args.reason)
        print(f"market {m.market_id} is {m.state}")
        return 0

    return talk(args, work)


def _network_submit(args) -> int:
    changes = read_network_changes(args.file)

    async def work(client: Client) -> int:
        version, revisions = await client.submit_network_changes(args.feeder, changes)
        print(f"feeder {args.feeder} is at network version {version}; {len(revisions)} markets cleared again",
              file=sys.stderr)
        emit(revisions, args.format, args.out, MarketRevision)
        return 0

    return talk(args, work)


def _network_list(args) -> int:
    return show(args, lambda c: c.list_network_changes(args.feeder), NetworkChange)


def _settle(args) -> int:
    async def work(client: Client) -> int:
        r = await client.settle_market(args.market_id)
        totals = ", ".join(f"{k} {v}" for k, v in sorted(r.totals.items()))
        print(f"market {r.market.market_id} is {r.market.state}: {r.statement_count} statements; {totals}")
        return 0

    return talk(args, work)


def _override(args) -> int:
    interval = utc(args.interval, "interval")

    async def work(client: Client) -> int:
        i = await client.override_dispatch(args.market_id, aggregator_id=args.aggregator,
                                           resource_id=args.resource, interval_start=interval, kw=args.kw,
                                           reason=args.reason)
        emit([i], args.format, args.out, Instruction)
        return 0

    return talk(args, work)
