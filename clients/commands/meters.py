"""Offline metered settlement: ``dsomarket meters settle``.

Reads a ``dsomarket disaggregate`` output directory (the instructions, the DLMPs
and the award), the resources' meter readings and optionally the interface
meter, and settles with the engine directly (:mod:`engine.metering`): each
resource's metered deviation from its instruction at the DLMP of its bus, the
interface imbalance against the award at the ISO's price, and the residual the
DSO keeps, so that the books balance to the cent. Bad input exits 2 naming the
row and field (duplicates, gaps, unknown intervals).
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from dsomarket.clients.files import output_dir, read_table, write_csv, write_json
from dsomarket.engine.errors import InputError
from dsomarket.engine.metering import performance, settle_imbalance, validate_interface_meters, validate_resource_meters
from dsomarket.engine.network import _utc


def register(subparsers) -> None:
    """Add the ``meters`` group to the ``dsomarket`` parser."""
    group = subparsers.add_parser("meters", help="settlement on meter readings")
    actions = group.add_subparsers(dest="meters_command", required=True, metavar="ACTION")
    s = actions.add_parser("settle", help="settle metered deviations and the interface imbalance",
                           description="Settle each resource's metered net injection against its instruction at "
                                       "its bus's DLMP, and the interface imbalance against the award.")
    s.add_argument("--run", required=True, metavar="DIR", help="output directory of `dsomarket disaggregate`")
    s.add_argument("--meters", required=True, help="aggregator_id, resource_id, interval, kw (net injection)")
    s.add_argument("--interface-meters", default=None, help="interval, import_kw (one per interval)")
    s.add_argument("--out", required=True, metavar="DIR")
    s.set_defaults(func=_settle)


def _table(path, name: str) -> pl.DataFrame:
    t = read_table(path, name)
    fix = [pl.col(c).cast(pl.Utf8).fill_null("") for c in ("aggregator_id", "resource_id", "bid_id", "bus")
           if c in t.columns]
    if "interval" in t.columns:
        fix.append(_utc(pl.col("interval"), t.schema["interval"]).alias("interval"))
    return t.with_columns(fix)


def _settle(args) -> int:
    run = Path(args.run)
    summary = run / "summary.json"
    if not summary.is_file():
        raise InputError(str(run), "summary.json", "missing: not a `dsomarket disaggregate` output")
    hours = float(json.loads(summary.read_text())["interval_minutes"]) / 60.0
    instructed = _table(run / "instructions.csv", "instructions")
    award = _table(run / "award.csv", "award")
    intervals = award["interval"].to_list()
    where = (_table(run / "dispatch.csv", "dispatch").filter(pl.col("resource_id") != "")
             .group_by("aggregator_id", "resource_id").agg(pl.col("bus").first()))
    dlmp = (instructed.select("aggregator_id", "resource_id", "interval")
            .join(where, on=["aggregator_id", "resource_id"], how="left")
            .join(_table(run / "prices.csv", "prices").select("bus", "interval", "dlmp"), on=["bus", "interval"],
                  how="left"))
    metered = validate_resource_meters(_table(args.meters, "meters"), intervals, required=instructed)
    iface = (validate_interface_meters(_table(args.interface_meters, "interface_meters"), intervals)
             if args.interface_meters else None)
    out = settle_imbalance(instructed, metered, dlmp, award.select("interval", "import_kw", "price"), iface, hours)
    with output_dir(args.out) as target:
        write_csv(out["resources"], target / "deviations.csv")
        if out["interface"] is not None:
            write_csv(out["interface"], target / "interface.csv")
        write_csv(performance(instructed, metered), target / "performance.csv")
        write_json(target / "summary.json", {k: str(v) for k, v in out["totals"].items()})
    return 0
