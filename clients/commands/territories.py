"""The operator's territory commands against a server: ``dsomarket territories ...``.

``territories create|show`` group loaded feeders into T-D interfaces; a session runs one market per
interface together: ``territories open`` (a market on every interface), ``gate`` (one gate closure),
``clear`` (one clearing, fanned out over the server's worker processes or Ray cluster), ``publish`` (every
cleared interface's curve to the ISO), ``settle`` (every awarded interface) and ``status``. The ISO awards each
interface's market on its own (``dsomarket award submit``). Each step prints one row per interface; the
exit status is 1 when an interface did not get through the step (an infeasible interface, say), whose
row says why. Every call goes through :mod:`clients.api` (see :mod:`clients.commands.territory` for the
offline ``territory synth|clear``).

``--interfaces FILE`` takes the ``territory.json`` of an offline territory directory, with loaded feeder
ids for feeder names::

    {"interfaces": [{"interface_id": "sub-1", "feeders": ["f-0000", "f-0001"], "import_max_kw": 25000},
                    {"feeders": ["f-0002"]}]}
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dsomarket.clients.api import Client, TerritoryInterface, TerritorySession
from dsomarket.clients.commands.operator import add_market_options, market_times
from dsomarket.clients.commands.remote import add_connection, talk
from dsomarket.clients.output import add_format_options, emit
from dsomarket.engine.errors import InputError

SESSION_COLUMNS = ("interface_id", "market_id", "state", "clearing_status", "diagnosis")


def register(subparsers) -> None:
    """Add the ``territories`` group."""
    group = subparsers.add_parser("territories", help="territories on a server: interfaces run as one market "
                                                      "session (operator)")
    actions = group.add_subparsers(dest="territories_command", required=True, metavar="ACTION")
    c = actions.add_parser("create", help="group loaded feeders into T-D interfaces",
                           description="Each --feeder is an interface of its own; --interfaces FILE groups "
                                       "feeders behind substation transformers (see `dsomarket territory`).")
    c.add_argument("territory_id")
    c.add_argument("--feeder", action="append", default=[], metavar="FEEDER_ID",
                   help="a loaded feeder as an interface of its own (repeat)")
    c.add_argument("--interfaces", type=Path, metavar="FILE", help="territory.json: interfaces and their feeders")
    _common(c)
    c.set_defaults(func=_create)

    s = actions.add_parser("show", help="a territory's interfaces (operator, auditor)")
    s.add_argument("territory_id")
    _common(s)
    s.set_defaults(func=_show)

    o = actions.add_parser("open", help="open a market session: a market SESSION:INTERFACE on every interface")
    o.add_argument("session_id")
    o.add_argument("--territory", required=True, help="the territory's id")
    add_market_options(o, "SESSION", "real-time: the day-ahead session whose markets it settles deviations from")
    _common(o)
    o.set_defaults(func=_open)

    for name, text, func in (
            ("status", "where each interface's market of a session stands (operator, auditor)", _status),
            ("gate", "close the gate of every open market of the session: open -> closed", _gate),
            ("publish", "publish every cleared interface's prices and curves to the ISO: cleared -> published",
             _publish),
            ("settle", "settle every awarded market of the session: awarded -> settled", _settle)):
        p = actions.add_parser(name, help=text)
        p.add_argument("session_id")
        _common(p)
        p.set_defaults(func=func)

    k = actions.add_parser("clear", help="clear every closed market of the session: closed -> cleared",
                           description="Nodal clearing and exact interface curve of every interface, fanned out "
                                       "over the server's workers. An interface that is not optimal stays "
                                       "closed and its row says why (exit status 1); the others clear.")
    k.add_argument("session_id")
    k.add_argument("--iso-price", action="append", default=[], metavar="PRICE",
                   help="forecast ISO price per MWh at every interface: once for all intervals or once per "
                        "interval (default: midpoint of floor and cap)")
    _common(k)
    k.set_defaults(func=_clear)


def _common(p: argparse.ArgumentParser) -> None:
    add_connection(p)
    add_format_options(p)


def interfaces(args) -> list[TerritoryInterface]:
    """The interfaces of ``--feeder`` and ``--interfaces FILE``; InputError naming the file's entry."""
    out = [TerritoryInterface("", (f,)) for f in args.feeder]
    if args.interfaces is not None:
        try:
            doc = json.loads(args.interfaces.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise InputError("interfaces", "json", f"{args.interfaces}: not JSON ({exc.msg}, line {exc.lineno})") \
                from None
        items = doc.get("interfaces") if isinstance(doc, dict) else None
        if not isinstance(items, list):
            raise InputError("interfaces", "interfaces", f"{args.interfaces}: needs a list \"interfaces\"")
        for k, item in enumerate(items):
            feeders = item.get("feeders") if isinstance(item, dict) else None
            if not isinstance(feeders, list) or not all(isinstance(f, str) for f in feeders):
                raise InputError("interfaces", f"interfaces[{k}].feeders", "must be a list of feeder ids")
            limits = []
            for name in ("import_max_kw", "export_max_kw"):
                value = item.get(name)
                if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                    raise InputError("interfaces", f"interfaces[{k}].{name}", f"must be a number (got {value!r})")
                limits.append(None if value is None else float(value))
            out.append(TerritoryInterface(str(item.get("interface_id") or ""), tuple(feeders), *limits))
    if not out:
        raise InputError("arguments", "feeder", "give --feeder or --interfaces")
    return out


def _interface_rows(interfaces) -> list[dict]:
    return [{"interface_id": i.interface_id, "feeders": " ".join(i.feeder_ids), "import_max_kw": i.import_max_kw,
             "export_max_kw": i.export_max_kw} for i in interfaces]


def _session_rows(session: TerritorySession) -> list[dict]:
    return [{"interface_id": i.interface_id, "market_id": i.market.market_id, "state": i.market.state,
             "clearing_status": i.market.clearing_status, "diagnosis": "; ".join(i.market.diagnosis)}
            for i in session.interfaces]


def _create(args) -> int:
    wanted = interfaces(args)

    async def work(client: Client) -> int:
        t = await client.create_territory(args.territory_id, wanted)
        emit(_interface_rows(t.interfaces), args.format, args.out, ("interface_id", "feeders", "import_max_kw",
                                                                   "export_max_kw"))
        return 0

    return talk(args, work)


def _show(args) -> int:
    async def work(client: Client) -> int:
        t = await client.get_territory(args.territory_id)
        emit(_interface_rows(t.interfaces), args.format, args.out, ("interface_id", "feeders", "import_max_kw",
                                                                   "export_max_kw"))
        return 0

    return talk(args, work)


def _open(args) -> int:
    start, closure, lead = market_times(args)

    async def work(client: Client) -> int:
        s = await client.open_territory_session(
            args.session_id, territory_id=args.territory, kind=args.kind, delivery_start=start,
            interval_count=args.intervals, gate_closure_time=closure, gate_lead=lead, price_floor=args.floor,
            price_cap=args.cap, currency=args.currency, value_of_lost_load=args.voll,
            day_ahead_session_id=args.day_ahead, formulation=args.formulation)
        emit(_session_rows(s), args.format, args.out, SESSION_COLUMNS)
        return 0

    return talk(args, work)


def _step(args, method: str, reached: str) -> int:
    """A session step whose reply is the session; exit 1 when a market did not reach ``reached``."""
    async def work(client: Client) -> int:
        s = await getattr(client, method)(args.session_id)
        emit(_session_rows(s), args.format, args.out, SESSION_COLUMNS)
        return 0 if not reached or all(i.market.state == reached for i in s.interfaces) else 1

    return talk(args, work)


def _status(args) -> int:
    return _step(args, "get_territory_session", "")


def _gate(args) -> int:
    return _step(args, "close_territory_gate", "closed")


def _publish(args) -> int:
    return _step(args, "publish_territory", "published")


def _clear(args) -> int:
    async def work(client: Client) -> int:
        r = await client.clear_territory(args.session_id, iso_price_forecast=args.iso_price)
        print(f"session {args.session_id}: {r.optimal} of {len(r.interfaces)} interfaces cleared optimal in "
              f"{r.solve_seconds:.2f} s ({len(r.warm)} warm)", file=sys.stderr)
        for iid, what in sorted(r.recovered.items()):
            print(f"interface {iid}: {what}", file=sys.stderr)
        rows = [{"interface_id": iid, "market_id": c.market.market_id, "status": c.status,
                 "import_kw": " ".join(f"{f.import_kw:.3f}" for f in c.interface),
                 "welfare": "" if c.welfare is None else str(c.welfare), "curve_segments": c.curve_segments,
                 "diagnosis": "; ".join(c.diagnosis)} for iid, c in r.interfaces.items()]
        emit(rows, args.format, args.out, ("interface_id", "market_id", "status", "import_kw", "welfare",
                                           "curve_segments", "diagnosis"))
        return 0 if r.optimal == len(r.interfaces) else 1

    return talk(args, work)


def _settle(args) -> int:
    async def work(client: Client) -> int:
        r = await client.settle_territory(args.session_id)
        rows = [{"interface_id": iid, "market_id": s.market.market_id, "statements": s.statement_count,
                 "merchandising_surplus": str(s.totals.get("merchandising_surplus", "")), "error": ""}
                for iid, s in r.settled.items()]
        rows += [{"interface_id": iid, "market_id": r.session.market_of(iid).market_id, "statements": 0,
                  "merchandising_surplus": "", "error": e} for iid, e in r.errors.items()]
        emit(sorted(rows, key=lambda row: row["interface_id"]), args.format, args.out,
             ("interface_id", "market_id", "statements", "merchandising_surplus", "error"))
        return 0 if not r.errors else 1

    return talk(args, work)
