"""DER registry and hybrid-participation commands against a server (DerRegistryService, HybridService).

``dsomarket ders register|list|retire|review|envelopes``
    An aggregator registers (or updates) and retires its DERs with the services they offer; the operator
    reviews a feeder's pending DERs (hosting capacity, services); everyone reads the operating envelopes.
``dsomarket direct schedules|bids|check``
    The ISO submits its direct participants' schedules and bids (CSV or Parquet); the operator checks them
    with the DSO market's awards against the feeder. ``check`` exits 1 when something is not deliverable.
``dsomarket conflicts list|follow``
    Conflict alerts (a resource sold twice across services, refused before it stood).

Tables print as the other commands do (``--format table|csv|json|parquet``, ``--out``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import polars as pl

from dsomarket.clients.cli import non_negative_int, positive_float
from dsomarket.clients.commands.remote import add_connection, add_list_options, command_group, show, talk, utc
from dsomarket.clients.files import read_table
from dsomarket.clients.hybrid_client import (BidLimit, ConflictAlert, Der, DirectBid, DirectSchedule, Envelope,
                                              ScheduleLimit)
from dsomarket.clients.output import Stream, add_format_options, emit
from dsomarket.engine.errors import InputError

DER_COLUMNS = ("der_id", "kind", "feeder_id", "bus", "aggregation_id", "export_kw", "import_kw", "status",
               "export_limit_kw", "import_limit_kw", "services", "approved_services", "reason")


def register(subparsers) -> None:
    """Add the ``ders``, ``direct`` and ``conflicts`` groups."""
    g = command_group(subparsers, "ders", "the DER registry on a server: register, list, retire, review")
    p = g.add_parser("register", help="register or update DERs (aggregator) from a table",
                     description="Columns: der_id, kind, feeder_id, bus, export_kw, and optionally import_kw, "
                                 "aggregation_id, owner, jurisdiction, energy_kwh, soc_min_kwh, soc_init_kwh, "
                                 "tan_phi, metering, control, services (';'-joined: dso_energy, dso_flexibility, "
                                 "iso_direct). Each DER is pending until the DSO reviews it.")
    p.add_argument("--file", required=True, type=Path)
    add_list_options(p)
    p.set_defaults(func=_register)
    p = g.add_parser("list", help="DERs with their review (an aggregator sees its own)")
    p.add_argument("--feeder", default="")
    add_list_options(p)
    p.set_defaults(func=_list)
    p = g.add_parser("retire", help="retire a DER (aggregator: its own; operator)")
    p.add_argument("der_id")
    p.add_argument("--reason", required=True)
    add_list_options(p)
    p.set_defaults(func=_retire)
    p = g.add_parser("review", help="the DSO's review of a feeder's pending DERs (operator); exit 1 when the AC "
                                    "check fails")
    p.add_argument("--feeder", required=True)
    p.add_argument("--min-useful-kw", type=positive_float, help="smallest limit worth approving (default 1)")
    add_list_options(p)
    p.set_defaults(func=_review)

    p = g.add_parser("envelopes", help="operating envelopes of a feeder's approved DERs; exit 1 when the AC check "
                                       "of their corners fails",
                     description="Per DER and interval, the import/export range any combination of DERs may use "
                                 "without breaking a distribution limit (docs/hybrid.md), on a market's forecast "
                                 "and intervals (--market) or the feeder's own loads.")
    p.add_argument("--feeder", required=True)
    p.add_argument("--market", default="")
    p.add_argument("--rule", default="proportional", choices=("proportional", "equal"))
    add_list_options(p)
    p.set_defaults(func=_envelopes)

    g = command_group(subparsers, "direct", "direct ISO participants: schedules, bids, the DSO's deliverability check")
    p = g.add_parser("schedules", help="submit schedules (ISO): participant_id, bus, interval, p_kw")
    p.add_argument("--feeder", required=True)
    p.add_argument("--file", required=True, type=Path)
    p.add_argument("--interval-minutes", type=non_negative_int, default=60, help="length of an interval (60)")
    add_connection(p)
    p.set_defaults(func=_schedules)
    p = g.add_parser("bids", help="submit bid segments (ISO): participant_id, bus, interval, side, quantity_kw, price")
    p.add_argument("--feeder", required=True)
    p.add_argument("--file", required=True, type=Path)
    add_connection(p)
    p.set_defaults(func=_bids)
    p = g.add_parser("check", help="deliverability of the direct schedules and bids with the DSO's awards "
                                   "(operator); exit 1 when not deliverable",
                     description="Prints each schedule's limit (direct and the DSO market's awards), then each "
                                 "bid's deliverable range (--bids) and the violations (--violations).")
    p.add_argument("--feeder", required=True)
    p.add_argument("--rule", default="sensitivity", choices=("sensitivity", "pro_rata"))
    p.add_argument("--exclude-dso-awards", action="store_true")
    p.add_argument("--bids", action="store_true", help="print the bids' limits instead of the schedules'")
    add_list_options(p)
    p.set_defaults(func=_check)

    g = command_group(subparsers, "conflicts", "conflict alerts: a resource sold twice across services")
    p = g.add_parser("list", help="alerts so far (an aggregator sees its own)")
    p.add_argument("--feeder", default="")
    add_list_options(p)
    p.set_defaults(func=_alerts)
    p = g.add_parser("follow", help="alerts as they are raised, after the history (Ctrl-C stops)")
    p.add_argument("--feeder", default="")
    p.add_argument("--after", type=non_negative_int, default=0, metavar="SEQUENCE")
    p.add_argument("--count", type=non_negative_int, default=0, help="stop after this many alerts (default: never)")
    add_connection(p)
    add_format_options(p, stream=True)
    p.set_defaults(func=_follow)




def _rows(ders: list[Der]) -> list[dict]:
    return [{c: (";".join(getattr(d, c)) if c.endswith("services") else getattr(d, c)) for c in DER_COLUMNS}
            for d in ders]


def _text(t: pl.DataFrame, name: str, default: str = "") -> list[str]:
    return [v or default for v in t[name].cast(pl.Utf8).to_list()] if name in t.columns else [default] * t.height


def _numbers(t: pl.DataFrame, name: str) -> list:
    return t[name].cast(pl.Float64).to_list() if name in t.columns else [None] * t.height


def _read_ders(path: Path) -> list[Der]:
    t = read_table(path, "ders")
    for col in ("der_id", "kind", "feeder_id", "bus", "export_kw"):
        if col not in t.columns:
            raise InputError("ders", col, "is a required column")
    import_kw, tan = _numbers(t, "import_kw"), _numbers(t, "tan_phi")
    energies = {n: _numbers(t, n) for n in ("energy_kwh", "soc_min_kwh", "soc_init_kwh")}
    return [Der(r, k, f, b, float(e), float(import_kw[i] or 0.0), aggregation_id=a, owner=o, jurisdiction=j,
                tan_phi=float(tan[i] or 0.0), metering=m, control=c,
                services=tuple(s for s in svc.split(";") if s), **{n: v[i] for n, v in energies.items()})
            for i, (r, k, f, b, e, a, o, j, m, c, svc) in enumerate(zip(
                _text(t, "der_id"), _text(t, "kind"), _text(t, "feeder_id"), _text(t, "bus"), _numbers(t, "export_kw"),
                _text(t, "aggregation_id"), _text(t, "owner"), _text(t, "jurisdiction"), _text(t, "metering", "none"),
                _text(t, "control", "none"), _text(t, "services"), strict=True))]


def _register(args) -> int:
    ders = _read_ders(args.file)
    return show(args, lambda client: _listed(client.hybrid.register_ders(ders)), DER_COLUMNS)


async def _listed(call):
    return _rows(await call)


def _list(args) -> int:
    return show(args, lambda client: _listed(client.hybrid.list_ders(feeder_id=args.feeder)), DER_COLUMNS)


def _retire(args) -> int:
    async def call(client):
        return _rows([await client.hybrid.retire_der(args.der_id, args.reason)])
    return show(args, call, DER_COLUMNS)


def _review(args) -> int:
    async def work(client) -> int:
        ders, passed = await client.hybrid.prequalify_ders(args.feeder, min_useful_kw=args.min_useful_kw)
        emit(_rows(ders), args.format, args.out, DER_COLUMNS)
        return 0 if passed else 1
    return talk(args, work)


def _starts(t: pl.DataFrame) -> list:
    """The ``interval`` column as UTC datetimes (read_table parses ISO 8601 text already)."""
    col = t["interval"]
    if isinstance(col.dtype, pl.Datetime):
        return col.dt.replace_time_zone(None).dt.replace_time_zone("UTC").to_list() if col.dtype.time_zone is None \
            else col.dt.convert_time_zone("UTC").to_list()
    return [utc(str(v), "interval") for v in col.to_list()]


def _envelopes(args) -> int:
    async def work(client) -> int:
        rows, passed = await client.hybrid.operating_envelopes(args.feeder, market_id=args.market, rule=args.rule)
        emit(rows, args.format, args.out, Envelope)
        return 0 if passed else 1
    return talk(args, work)


def _stamped(path: Path, table: str, columns: tuple[str, ...]) -> pl.DataFrame:
    t = read_table(path, table, text=("price",))
    for col in columns:
        if col not in t.columns:
            raise InputError(table, col, "is a required column")
    return t


def _schedules(args) -> int:
    t = _stamped(args.file, "schedules", ("participant_id", "bus", "interval", "p_kw"))
    rows = [DirectSchedule(p, b, iv, float(kw)) for p, b, iv, kw in
            zip(_text(t, "participant_id"), _text(t, "bus"), _starts(t), _numbers(t, "p_kw"), strict=True)]

    async def work(client) -> int:
        n = await client.hybrid.submit_direct_schedules(args.feeder, rows, interval_minutes=args.interval_minutes)
        print(f"{n} schedules stored for feeder {args.feeder}")
        return 0
    return talk(args, work)


def _bids(args) -> int:
    t = _stamped(args.file, "bids", ("participant_id", "bus", "interval", "side", "quantity_kw", "price"))
    rows = [DirectBid(p, b, iv, s, float(q), price) for p, b, iv, s, q, price in
            zip(_text(t, "participant_id"), _text(t, "bus"), _starts(t), _text(t, "side"),
                _numbers(t, "quantity_kw"), _text(t, "price"), strict=True)]

    async def work(client) -> int:
        n = await client.hybrid.submit_direct_bids(args.feeder, rows)
        print(f"{n} bid segments stored for feeder {args.feeder}")
        return 0
    return talk(args, work)


def _check(args) -> int:
    async def work(client) -> int:
        r = await client.hybrid.check_deliverability(args.feeder, rule=args.rule,
                                                     exclude_dso_awards=args.exclude_dso_awards)
        emit(r.bid_limits if args.bids else r.limits, args.format, args.out, BidLimit if args.bids else ScheduleLimit)
        return 0 if r.deliverable else 1
    return talk(args, work)


def _alerts(args) -> int:
    return show(args, lambda client: client.hybrid.list_conflict_alerts(feeder_id=args.feeder), ConflictAlert)


def _follow(args) -> int:
    async def work(client) -> int:
        out, seen = Stream(args.format, [f.name for f in dataclasses.fields(ConflictAlert)]), 0
        async for alert in client.hybrid.follow_conflict_alerts(feeder_id=args.feeder, after_sequence=args.after):
            out.write(alert)
            seen += 1
            if args.count and seen >= args.count:
                return 0
        return 0
    return talk(args, work)
