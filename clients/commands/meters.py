"""Meters: offline metered settlement (``dsomarket meters settle``) and the server's meter loop
(``meters submit|history|imbalance``).

Reads a ``dsomarket disaggregate`` output directory (the instructions, the DLMPs
and the award), the resources' meter readings and optionally the interface
meter, and settles with the engine directly (:mod:`engine.metering`): each
resource's metered deviation from its instruction at the DLMP of its bus, the
interface imbalance against the award at the ISO's price, and the residual the
DSO keeps, so that the books balance to the cent. Bad input exits 2 naming the
row and field (duplicates, gaps, unknown intervals).

Against a server: ``meters submit`` sends readings of an awarded market (an
aggregator its resources', the operator any and the interface meter's),
``meters history`` the metered history of flexible loads that their
demand-response baseline is made of, and ``meters imbalance`` (operator)
settles the metered deviations, demand response against its baseline
(docs/realtime.md#demand-response).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import polars as pl

from dsomarket.clients.commands.remote import add_connection, talk
from dsomarket.clients.files import output_dir, read_table, write_csv, write_json
from dsomarket.clients.output import add_format_options, emit
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

    s = actions.add_parser("submit", help="meter readings of an awarded market (server)",
                           description="Columns resource_id, interval, kw[, aggregator_id]: net injection, kW; an "
                                       "empty resource_id is the interface meter (operator), its kw the import.")
    s.add_argument("--market", required=True)
    s.add_argument("--file", required=True, type=Path)
    add_connection(s)
    s.set_defaults(func=_submit)
    s = actions.add_parser("history", help="metered history of flexible loads, for their baseline (server)",
                           description="Columns resource_id, interval, kw[, aggregator_id]: a load's net injection, "
                                       "kW (negative), on the grid of the markets it is the baseline of.")
    s.add_argument("--file", required=True, type=Path)
    add_connection(s)
    s.set_defaults(func=_history)
    s = actions.add_parser("imbalance", help="settle a settled market's meters (server, operator)",
                           description="Prints the totals (they add up to zero) on stderr and the demand-response "
                                       "lines with their baselines.")
    s.add_argument("market_id")
    add_connection(s)
    add_format_options(s)
    s.set_defaults(func=_imbalance)


DEMAND_RESPONSE_COLUMNS = ("aggregator_id", "resource_id", "interval_start", "baseline_kw", "metered_kw",
                           "delivered_kw", "instructed_kw", "deviation_kw", "price", "amount")


def _submit(args) -> int:
    # Here, not at the top: the tables of the server commands import the client library (and gRPC), which
    # the offline `meters settle` does not use.
    from dsomarket.clients.commands.tables import read_meter_readings

    readings = read_meter_readings(args.file)

    async def work(client) -> int:
        print(f"{await client.submit_meter_readings(args.market, readings)} readings stored")
        return 0

    return talk(args, work)


def _history(args) -> int:
    from dsomarket.clients.commands.tables import read_meter_readings

    readings = read_meter_readings(args.file, "history")

    async def work(client) -> int:
        print(f"{await client.submit_resource_history(readings)} history readings stored")
        return 0

    return talk(args, work)


def _imbalance(args) -> int:
    async def work(client) -> int:
        totals, count, _, dr = await client.settle_imbalance(args.market_id)
        print(f"market {args.market_id}: {count} statement lines; "
              + ", ".join(f"{k} {v}" for k, v in sorted(totals.items())), file=sys.stderr)
        emit(dr, args.format, args.out, DEMAND_RESPONSE_COLUMNS)
        return 0

    return talk(args, work)


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
