"""Offline flexibility auction: ``dsomarket flex clear``.

Reads a feeder, the DSO's needs and the aggregators' offers (see
:mod:`engine.flexibility` for the columns), clears the auction with the engine
directly (no server) and writes ``awards.csv``, ``needs.csv``, ``conflicts.csv``
and ``summary.json`` to the output directory.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import polars as pl

from dsomarket.clients import report
from dsomarket.clients.cli import positive_float
from dsomarket.clients.commands import auction
from dsomarket.clients.files import output_dir, read_feeder, read_table, write_csv, write_json
from dsomarket.engine.flexibility import PRICING, BaseCase, clear_flexibility

_STAMP = "%Y-%m-%dT%H:%M:%SZ"


def register(subparsers) -> None:
    """Add the ``flex`` group to the ``dsomarket`` parser."""
    group = subparsers.add_parser("flex", help="local flexibility auctions")
    actions = group.add_subparsers(dest="flex_command", required=True, metavar="ACTION")
    auction.register(actions)   # the same auction on a running server
    clear = actions.add_parser(
        "clear", help="clear a flexibility auction",
        description="Buy the cheapest offers that meet the DSO's needs through the feeder's sensitivities. "
                    "Exit status 1 when the solver fails.")
    clear.add_argument("--feeder", required=True, help="ieee33, ieee69, synth:N:SEED or a feeder directory")
    clear.add_argument("--needs", required=True, help="needs table (.csv or .parquet)")
    clear.add_argument("--offers", required=True, help="offers table (.csv or .parquet)")
    clear.add_argument("--capabilities", help="resource capability table (.csv or .parquet)")
    clear.add_argument("--base-lines", help="base-case line flows to keep within limits: line, interval, p_kw"
                                            "[, p_min_kw, p_max_kw]")
    clear.add_argument("--base-buses", help="base-case voltages to keep within limits: bus, interval, v_pu"
                                            "[, vmin_pu, vmax_pu]")
    clear.add_argument("--base-interface", help="base-case interface import: interval, import_kw"
                                                "[, import_max_kw, export_max_kw]")
    clear.add_argument("--pricing", choices=PRICING, default="pay_as_bid", help="default pay_as_bid")
    clear.add_argument("--interval-minutes", type=positive_float, default=60.0, metavar="M",
                       help="interval length for payments (default 60)")
    clear.add_argument("--time-limit", type=positive_float, metavar="S", help="seconds the solver may take per solve")
    clear.add_argument("--out", required=True, help="output directory (created if missing)")
    clear.set_defaults(func=_clear, solves=True)


def _optional(path: str | None, table: str) -> pl.DataFrame | None:
    return read_table(path, table) if path else None


def _clear(args: argparse.Namespace) -> int:
    with output_dir(args.out) as out:
        return _clear_into(args, out)


def _clear_into(args: argparse.Namespace, out: Path) -> int:
    feeder = read_feeder(args.feeder)
    base_tables = (_optional(args.base_lines, "base_lines"), _optional(args.base_buses, "base_buses"),
                   _optional(args.base_interface, "base_interface"))
    base = BaseCase(*base_tables) if any(t is not None for t in base_tables) else None
    result = clear_flexibility(feeder, read_table(args.needs, "needs"), read_table(args.offers, "offers"),
                               _optional(args.capabilities, "capabilities"), base=base, pricing=args.pricing,
                               interval_minutes=args.interval_minutes, time_limit=args.time_limit)
    stamp = pl.col("interval").dt.to_string(_STAMP)
    awards = result.awards.select(
        "offer_id", stamp, "accepted_kw", "price", "reason", "aggregator_id", "resource_id", "payment",
        "conflict", pl.col("need_ids").list.join(";"), "bus", "direction", "tan_phi")
    needs = result.needs.select("need_id", "met", "cost", "marginal_price", "shortfall_kw", stamp, "kind",
                                "element", "shortfall")
    conflicts = result.conflicts.with_columns(stamp, pl.col("offer_ids").list.join(";"))
    write_csv(awards, out / "awards.csv")
    write_csv(needs, out / "needs.csv")
    write_csv(conflicts, out / "conflicts.csv")
    summary = {
        "feeder": feeder.name, "status": result.status, "pricing": result.pricing,
        "total_cost": result.total_cost, "shortfall_cost": result.shortfall_cost,
        "offers": result.awards.height, "offers_accepted": int((result.awards["accepted_kw"] > 0).sum()),
        "accepted_kw": float(result.awards["accepted_kw"].sum()),
        "needs": result.needs.height, "needs_met": int(result.needs["met"].sum()),
        "conflicts": result.conflicts.height, "interval_minutes": result.interval_minutes,
        "build_seconds": result.build_seconds, "solve_seconds": result.solve_seconds,
    }
    write_json(out / "summary.json", summary)
    report.emit([f"status       {result.status}: {summary['offers_accepted']} of {summary['offers']} offers "
                 f"accepted ({summary['accepted_kw']:,.1f} kW), {summary['needs_met']} of {summary['needs']} "
                 "needs met",
                 f"cost         {result.total_cost:,.2f} paid by the DSO ({result.pricing}); "
                 f"{summary['conflicts']} conflict(s) between offers of one resource",
                 report.files_line(out, ("awards.csv", "needs.csv", "conflicts.csv", "summary.json"))])
    return 0 if result.status == "optimal" else 1
