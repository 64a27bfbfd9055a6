"""Offline market commands: ``dsomarket clear | curve | disaggregate | settle``.

They call the engine directly on files (no server). Inputs: a feeder (built-in
name or directory), a bids table (CSV or Parquet, columns of
:mod:`engine.bids`), optionally a resources table. Every output directory is
written file by file atomically; bad input exits with status 2 and one line; an
infeasible market with status 1; a market that clears but whose AC power flow
violates a limit (or whose SOCP gap is above tolerance, or whose loss-aware
iteration did not converge) writes its outputs, prints one warning line on
stderr and exits with status 3 (``EXIT_PHYSICS``); ``summary.json`` lists the
warnings and ``ac_check.violations``. ``curve`` does the same when a loss-aware
curve's own error bound exceeds ``losses.CURVE_TOL`` (:func:`curve_warnings`).
On success a short summary goes to stdout (:mod:`clients.report`). Tables
list buses and lines in feeder order (numeric ids by number) within each
interval; power is in kW everywhere, the ISO's ``iso_offer.csv`` included.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from dsomarket.clients.cli import finite_float, positive_float, positive_int
from dsomarket.clients import report
from dsomarket.clients.progress import Progress
from dsomarket.clients.files import (by_id, numbers, output_dir, read_feeder, read_table, write_csv, write_json,
                                     write_outputs)
from dsomarket.engine.bids import MarketRules, parse_commitments, parse_resources, validate_bids
from dsomarket.engine.clearing import FORMULATIONS, ClearingOptions, ClearingResult
from dsomarket.engine.errors import InputError
from dsomarket.engine.losses import CURVE_TOL
from dsomarket.engine.network_changes import validate_changes
from dsomarket.engine.runs import clear_runs, disaggregate_runs, runs_for, trace_runs
from dsomarket.engine.territory import prices_for

if TYPE_CHECKING:   # the curve modules load when a curve is traced (engine.runs), not for a plain `clear`
    from dsomarket.engine.interface import InterfaceCurve

_DEFAULT = MarketRules()
_FORMULATION_HELP = ("lossaware (default: LinDistFlow linearised at the AC operating point, losses "
                     "included), lossless (alias lindistflow) or socp")
EXIT_PHYSICS = 3
"""Exit status when the market cleared but its AC power flow violates a limit, the SOCP's
relaxation gap is above tolerance or the loss-aware iteration did not converge; of ``curve``
when the loss-aware curve may be further than ``CURVE_TOL`` from its clearings."""
CLEARING_FILES = ("dispatch.csv", "prices.csv", "lines.csv", "buses.csv", "shed.csv", "summary.json")
"""Tables of a clearing; a failed run removes them, so none of an earlier run sits beside its summary."""
DISAGGREGATION_FILES = CLEARING_FILES + ("instructions.csv", "award.csv", "fixed_load.csv")


def register(subparsers) -> None:
    """Add ``clear``, ``curve``, ``disaggregate`` and ``settle`` to the ``dsomarket`` parser."""
    c = subparsers.add_parser("clear", help="clear the nodal market of a feeder (DLMPs)")
    _market_args(c)
    c.add_argument("--iso-price", required=True,
                   help="ISO price at the interface per MWh: a number, or a CSV with interval, price")
    c.add_argument("--formulation", choices=FORMULATIONS, default="lossaware", help=_FORMULATION_HELP)
    c.add_argument("--no-ac-check", action="store_true", help="skip the AC power flow of the dispatch")
    c.set_defaults(func=_clear, solves=True)

    k = subparsers.add_parser("curve", help="trace the exact interface net demand curve for the ISO")
    _market_args(k)
    k.add_argument("--forecast-price", type=finite_float, default=None,
                   help="ISO price assumed in the other intervals when storage couples them "
                        "(default: midpoint of floor and cap)")
    k.add_argument("--max-segments", type=positive_int, default=10, help="segments per ISO bid (default 10)")
    k.add_argument("--formulation", choices=FORMULATIONS, default="lossaware",
                   help=_FORMULATION_HELP + "; lossaware and lossless trace the exact staircase, socp samples")
    k.add_argument("--max-error-kw", type=positive_float, default=1.0,
                   help="socp only: largest gap between the sampled and the true curve (kW)")
    k.add_argument("--price-tol", type=positive_float, default=0.01,
                   help="socp only: width within which a jump of the curve is located (per MWh)")
    k.add_argument("--workers", type=positive_int, default=1,
                   help="processes tracing intervals side by side (lossaware and lossless; default 1): "
                        "the curves are the same as with one")
    k.set_defaults(func=_curve, solves=True)

    d = subparsers.add_parser("disaggregate", help="re-clear at the ISO award and dispatch every bid")
    _market_args(d)
    d.add_argument("--award", required=True, help="CSV: interval, import_kw[, price]")
    d.add_argument("--day-ahead", default=None, metavar="DIR",
                   help="a day-ahead disaggregate output: real-time re-clear from its positions")
    d.add_argument("--formulation", choices=[f for f in FORMULATIONS if f != "socp"], default="lossaware",
                   help="lossaware (default: the award is delivered after losses) or lossless (alias lindistflow)")
    d.set_defaults(func=_disaggregate, solves=True)

    s = subparsers.add_parser("settle", help="settle day-ahead (and real-time) disaggregation outputs")
    s.add_argument("--day-ahead", required=True, metavar="DIR", help="output directory of `disaggregate`")
    s.add_argument("--real-time", default=None, metavar="DIR", help="output directory of a real-time run")
    s.add_argument("--out", required=True, metavar="DIR")
    s.set_defaults(func=_settle)


def _market_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--feeder", required=True, help="ieee33, ieee69, synth:N:SEED or a feeder directory")
    p.add_argument("--bids", required=True, help="bids table, CSV or Parquet")
    p.add_argument("--resources", default=None, help="resources table (batteries, EVs, flexible loads)")
    p.add_argument("--commitments", default=None, metavar="FILE",
                   help="kW resources already sold elsewhere: resource_id, interval, max_sell_kw, max_buy_kw")
    p.add_argument("--floor", type=finite_float, default=_DEFAULT.price_floor, help="price floor per MWh")
    p.add_argument("--cap", type=finite_float, default=_DEFAULT.price_cap, help="price cap per MWh")
    p.add_argument("--interval-minutes", type=positive_float, default=None,
                   help="interval length (default: the bids' spacing, which must then be even, or 60); "
                        "give it when some intervals have no bids")
    p.add_argument("--voll", type=positive_float, default=None, help="shed fixed load at this value of lost load")
    p.add_argument("--polygon-sides", type=positive_int, default=ClearingOptions().polygon_sides)
    p.add_argument("--flex-awards", default=None, metavar="FILE",
                   help="awards.csv of `dsomarket flex clear`: accepted activations change the net load")
    p.add_argument("--network-changes", default=None, metavar="FILE",
                   help="outages, switching, ratings, voltage and interface limits per interval: change_id, kind, "
                        "element, start[, end, s_max_kva, vmin_pu, vmax_pu, import_max_kw, export_max_kw, shed, "
                        "who, why] (see docs/realtime.md)")
    p.add_argument("--out", required=True, metavar="DIR")


def _inputs(args, out: Path):
    """Read and check every input; ``network.csv`` in ``out`` says which network changes apply when."""
    feeder = read_feeder(args.feeder)
    if args.flex_awards:
        # Imported here, like settlement below: a plain `clear` starts without modules it does not use.
        from dsomarket.engine.flexibility import apply_activations
        feeder = apply_activations(feeder, read_table(args.flex_awards, "flex_awards"))
    bids = read_table(args.bids, "bids")
    resources = parse_resources(read_table(args.resources, "resources")) if args.resources else ()
    if args.commitments:
        resources += parse_commitments(read_table(args.commitments, "commitments"))
    minutes = spacing_minutes(bids, args.interval_minutes)
    rules = MarketRules(price_floor=args.floor, price_cap=args.cap, interval_minutes=minutes,
                        value_of_lost_load=args.voll)
    book = validate_bids(bids, feeder, rules)
    changes = (validate_changes(read_table(args.network_changes, "network_changes"), feeder)
               if args.network_changes else None)
    runs = runs_for(feeder, changes, book)
    write_outputs(out, {"network.csv": None if changes is None else _runs_table(runs)}, ("network.csv",))
    return runs, book, resources, rules


def _runs_table(runs) -> pl.DataFrame:
    """Which changes were in effect in each interval, and what they took out of service."""
    rows = [{"interval": run.intervals[k], "changes": " ".join(run.change_ids),
             "out_of_service": " ".join(run.out_of_service), "de_energised": " ".join(run.de_energised)}
            for run in runs for k in range(len(run.indices))]
    return pl.DataFrame(rows).sort("interval")


def spacing_minutes(bids: pl.DataFrame, minutes: float | None = None) -> float:
    """The interval length of a bids table (``interval`` as UTC timestamps), in minutes.

    With ``minutes`` given, every interval must lie on its grid from the first
    one (intervals without bids are allowed); without it, the intervals must be
    evenly spaced, and the spacing is the length (60 for a single interval).
    Bids at 00:00, 00:15 and 01:00 are refused rather than settled as three
    15-minute intervals.

    Raises
    ------
    InputError
        Naming the first row whose interval breaks the spacing.
    """
    if "interval" not in bids.columns or bids["interval"].null_count() == bids.height:
        return minutes or _DEFAULT.interval_minutes
    ivs = bids["interval"].drop_nulls().unique().sort()
    gaps = ivs.diff().drop_nulls().dt.total_microseconds().to_numpy()
    if minutes is not None:
        step = round(minutes * 60e6)
        offsets = (ivs - ivs[0]).dt.total_microseconds().to_numpy()
        off = np.nonzero(offsets % step)[0]
        if len(off):
            iv = ivs[int(off[0])]
            raise InputError("bids", "interval", f"{iv:%Y-%m-%dT%H:%M:%SZ} is not a whole number of "
                             f"{minutes:g}-minute intervals after the first, {ivs[0]:%Y-%m-%dT%H:%M:%SZ}",
                             row=_first_row(bids, iv))
        return minutes
    if len(gaps) == 0:
        return _DEFAULT.interval_minutes
    uneven = np.nonzero(gaps != gaps[0])[0]
    if len(uneven):
        iv = ivs[int(uneven[0]) + 1]
        raise InputError("bids", "interval", f"{iv:%Y-%m-%dT%H:%M:%SZ} comes {gaps[uneven[0]] / 60e6:g} minutes "
                         f"after the interval before it, but the first intervals are {gaps[0] / 60e6:g} minutes "
                         "apart: intervals must be evenly spaced (give --interval-minutes when some have no bids)",
                         row=_first_row(bids, iv))
    return float(gaps[0] / 60e6)


def _first_row(table: pl.DataFrame, interval) -> int:
    return int((table["interval"] == interval).arg_max())


def write_result(res: ClearingResult, out: Path, products: tuple[str, ...] = CLEARING_FILES,
                 extra: dict[str, pl.DataFrame] | None = None, summary: dict | None = None) -> None:
    """The tables of a clearing (and ``extra`` ones) and ``summary`` (default the clearing's); a failed
    clearing writes its summary (with the diagnosis) only and removes every file of ``products`` left
    by an earlier run."""
    tables: dict[str, pl.DataFrame | None] = {}
    if res.ok:
        d = res.dispatch
        first = ("bid_id", "interval", "cleared_kw")
        tables = {"dispatch.csv": d.select(*first, *[c for c in d.columns if c not in first]),
                  "prices.csv": by_id(res.prices, "bus"), "lines.csv": by_id(res.lines, "line"),
                  "buses.csv": by_id(res.buses, "bus"),
                  "shed.csv": by_id(res.shed, "bus") if res.shed is not None and res.shed.height else None,
                  **(extra or {})}
    write_outputs(out, tables, [p for p in products if p != "summary.json"])
    write_json(out / "summary.json", res.summary() if summary is None else summary)


def _status(res: ClearingResult) -> int:
    if res.ok:
        warnings = res.warnings()
        if warnings:
            print(f"dsomarket: warning: {'; '.join(warnings)}", file=sys.stderr)
            return EXIT_PHYSICS
        return 0
    reasons = "; ".join(f"{d['limit']} at {d['element']}" + (f" ({d['interval']})" if d.get("interval") else "")
                        for d in res.diagnosis[:5])
    print(f"dsomarket: market {res.status}: {reasons or 'no diagnosis'}", file=sys.stderr)
    return 1


def read_iso_price(spec: str) -> float | dict:
    """``--iso-price``: a number, or a CSV with ``interval, price`` read as {interval start (UTC): price}."""
    try:
        return float(spec)
    except ValueError:
        pass
    table = read_table(spec, "iso_price")
    for col in ("interval", "price"):
        if col not in table.columns:
            raise InputError("iso_price", col, "column is missing")
    table = numbers(table, "iso_price", ("price",))
    return dict(zip(table["interval"].to_list(), table["price"].to_list()))


def _clear(args) -> int:
    with output_dir(args.out) as out:
        runs, book, resources, rules = _inputs(args, out)
        prices = prices_for(book, read_iso_price(args.iso_price))
        options = ClearingOptions(formulation=args.formulation, polygon_sides=args.polygon_sides,
                                  ac_check=not args.no_ac_check)
        res = clear_runs(runs, book, prices, rules=rules, resources=resources, options=options)
        write_result(res, out)
    report.emit([f"dsomarket clear: feeder {args.feeder}, {book.n} bid segments", *report.clearing_lines(res, args.polygon_sides, _vmin(runs)),
                 report.files_line(out, ("network.csv", *CLEARING_FILES))])
    return _status(res)


def _curve(args) -> int:
    with output_dir(args.out) as out:
        runs, book, resources, rules = _inputs(args, out)
        options = ClearingOptions(formulation=args.formulation, polygon_sides=args.polygon_sides)
        extra = {"max_error_kw": args.max_error_kw, "price_tol": args.price_tol} if args.formulation == "socp" else {}
        try:
            with Progress("dsomarket curve: intervals traced") as progress:
                if args.workers > 1 and args.formulation != "socp" and book.n_interval > 1:
                    curve = trace_in_processes(args.workers, runs, book, rules, resources, options,
                                               args.forecast_price, progress)
                else:
                    curve = trace_runs(runs, book, rules, resources, options, forecast=args.forecast_price,
                                       progress=progress, **extra)
        except InputError as exc:
            if (exc.table, exc.field) != ("market", "iso_price"):
                raise
            return _unsolvable_curve(exc, runs, book, rules, resources, options, out)
        offer, area = curve.iso_offer(args.max_segments)
        write_curve(curve, offer, area, rules, args.formulation, args.max_segments, out)
    report.emit([f"dsomarket curve: feeder {args.feeder}, {book.n} bid segments", *curve_lines(curve, offer, area),
                 report.files_line(out, ("network.csv", *CURVE_FILES))])
    warnings = curve_warnings(curve)
    if warnings:
        print(f"dsomarket: warning: {'; '.join(warnings)}", file=sys.stderr)
        return EXIT_PHYSICS
    return 0


def _unsolvable_curve(exc: InputError, runs, book, rules: MarketRules, resources, options: ClearingOptions,
                      out: Path) -> int:
    """A market the curve's tracing found unsolvable at some price: status 1, as ``clear`` gives it.

    The market cleared at the price floor says why (its diagnosis, on stderr and in ``summary.json``,
    where no curve file of an earlier run is left); the tracer's own message is the line when that
    clearing succeeds (a solve that failed at another price).
    """
    res = clear_runs(runs, book, prices_for(book, rules.price_floor), rules=rules, resources=resources,
                     options=dataclasses.replace(options, ac_check=False))
    write_outputs(out, {}, [f for f in CURVE_FILES if f != "summary.json"])
    write_json(out / "summary.json", res.summary() if not res.ok else {"status": "error", "error": exc.reason})
    if res.ok:
        print(f"dsomarket: market not solvable: {exc.reason}", file=sys.stderr)
        return 1
    return _status(res)


def curve_warnings(curve: InterfaceCurve) -> list[str]:
    """Why a loss-aware curve may be further from its clearings than ``losses.CURVE_TOL`` (empty when it is not).

    The bound is the curve's own (``ac_check``, :class:`engine.losses.CurveCheck`): relative to a band's
    import, or to ``CURVE_SIZE_SHARE`` of the feeder's size near a zero import, where a tenth of a kW
    would otherwise read as a large share of nothing.
    """
    check = curve.ac_check
    if check is None or check["max_error_pct"] <= CURVE_TOL * 100.0:
        return []
    unresolved = (f" ({check['unresolved_steps']} steps unresolved where clearings at nearby prices disagree)"
                  if check["unresolved_steps"] else "")
    return [f"loss-aware curve: a band may be {check['max_error_kw']:.3g} kW ({check['max_error_pct']:.3g} %) off "
            f"the clearing at a price inside it, against {CURVE_TOL * 100:g} %{unresolved}"]


def trace_in_processes(workers: int, runs, book, rules: MarketRules, resources, options: ClearingOptions,
                       forecast, progress=None, intervals: list[int] | None = None) -> InterfaceCurve:
    """:func:`engine.runs.trace_runs` of ``intervals`` (default all), dealt out to ``workers`` processes.

    Each process builds the market and traces every ``workers``-th interval; an interval's curve
    does not depend on which others are traced with it (:func:`engine.interface.trace_intervals`),
    so the joined curve is the one a single process traces. Processes are spawned (a fork would
    copy HiGHS's and the BLAS's threads' state); ``progress(done, total)`` after each part.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from dsomarket.engine.interface import join_curves

    todo = list(range(book.n_interval)) if intervals is None else sorted(intervals)
    parts = [todo[k::workers] for k in range(min(workers, len(todo)))]
    curves: list[InterfaceCurve | None] = [None] * len(parts)
    done = 0
    with ProcessPoolExecutor(len(parts), mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(trace_runs, runs, book, rules, resources, options, forecast, None, part): k
                   for k, part in enumerate(parts)}
        for future in as_completed(futures):
            k = futures[future]
            curves[k] = future.result()
            done += len(parts[k])
            if progress is not None:
                progress(done, len(todo))
    return join_curves(curves)


def _vmin(runs) -> dict[str, float]:
    """The lowest voltage limit of each bus over the network runs (pu)."""
    limits: dict[str, float] = {}
    for run in runs:
        for bus, v in zip(run.feeder.buses["bus"].cast(pl.Utf8), run.feeder.buses["vmin_pu"]):
            limits[bus] = min(v, limits.get(bus, v))
    return limits


CURVE_FILES = ("curve.csv", "iso_offer.csv", "fixed_load.csv", "summary.json")


def iso_offer_kw(offer: pl.DataFrame) -> pl.DataFrame:
    """The ISO offer with its quantities in kW (``quantity_kw``), the unit of every file and of the API."""
    return offer.with_columns((pl.col("mw") * 1000.0).alias("quantity_kw")).drop("mw")


def curve_lines(curve: InterfaceCurve, offer: pl.DataFrame, area: float) -> list[str]:
    """What an operator checks before sending a curve: its ends, its steps, the ISO file's reduction."""
    bands = curve.bands
    n_iv = bands["interval"].n_unique()
    at_floor = bands.sort("price_low").group_by("interval", maintain_order=True).first()["import_kw"]
    at_cap = bands.sort("price_high").group_by("interval", maintain_order=True).last()["import_kw"]
    steps = offer.filter(pl.col("kind").is_in(["demand", "supply"])).height
    return [f"status       traced: {bands.height} bands over {n_iv} interval{'s' if n_iv != 1 else ''} "
            f"({'exact' if curve.exact else 'sampled'})",
            f"import       {at_floor.max():,.1f} kW at the price floor .. {at_cap.min():,.1f} kW at the cap "
            "(positive = the feeder buys from the ISO)",
            *_accuracy_lines(curve.ac_check),
            f"ISO offer    {steps} demand/supply steps in iso_offer.csv (kW, per MWh); the reduction leaves "
            f"{area:,.2f} per hour of welfare area off the exact curve",
            "coupling     " + ("each interval's curve assumes the forecast ISO price in the others"
                               if curve.conditional else "intervals are independent")]


def _accuracy_lines(check: dict | None) -> list[str]:
    """A loss-aware curve's stated bound against ``clear`` (:class:`engine.losses.CurveCheck`), with the steps it
    locates only as well as ``clear`` itself places its import; none for a lossless curve (exact, no bound)."""
    if check is None:
        return []
    n = check.get("steep_steps", 0)
    steep = (f"; {n} step{'s' if n != 1 else ''} placed only as well as clear places its own import there (it moves "
             f"up to {check['steep_kw']:,.1f} kW across one)" if n else "")
    return [f"accuracy     a band is within {check['max_error_pct']:.3g} % ({check['max_error_kw']:,.1f} kW) of the "
            f"clearing at any price inside it, from {check['clearings']} clearings and {check['anchored']} "
            f"re-linearisations walked{steep}"]


def write_curve(curve: InterfaceCurve, offer: pl.DataFrame, area: float, rules: MarketRules, formulation: str,
                max_segments: int, out: Path) -> None:
    """The files of ``dsomarket curve``: curve.csv, iso_offer.csv (kW), fixed_load.csv and summary.json."""
    write_csv(curve.bands, out / "curve.csv")
    write_csv(iso_offer_kw(offer), out / "iso_offer.csv")
    write_csv(curve.fixed_net_load_kw, out / "fixed_load.csv")
    write_json(out / "summary.json", curve.summary() | {
        "formulation": formulation, "warnings": curve_warnings(curve),
        "iso_offer_segments_max": max_segments, "iso_offer_area_per_hour": area,
        "price_floor": rules.price_floor, "price_cap": rules.price_cap,
        "note": ("each interval's curve assumes the forecast ISO prices in the other intervals"
                 if curve.conditional else "intervals are independent"),
    })


def _disaggregate(args) -> int:
    with output_dir(args.out) as out:
        runs, book, resources, rules = _inputs(args, out)
        award = read_table(args.award, "award")
        da = _outcome(Path(args.day_ahead)) if args.day_ahead else None
        dis = disaggregate_runs(runs, book, award, rules, resources,
                                ClearingOptions(formulation=args.formulation, polygon_sides=args.polygon_sides),
                                day_ahead=da.dispatch if da else None,
                                day_ahead_minutes=da.interval_minutes if da else 60.0)
        write_result(dis.clearing, out, DISAGGREGATION_FILES,
                     extra={"instructions.csv": dis.instructions, "award.csv": dis.award,
                            "fixed_load.csv": by_id(dis.fixed_load, "bus")},
                     summary=dis.summary() if dis.clearing.ok else None)
    lines = report.clearing_lines(dis.clearing, args.polygon_sides, _vmin(runs))
    if dis.clearing.ok:
        lines.insert(1, f"award        {report.kw_range(dis.award['import_kw'])} re-cleared; "
                        f"{dis.instructions.height} instruction rows for "
                        f"{dis.instructions['aggregator_id'].n_unique()} aggregator(s) in instructions.csv")
    report.emit([f"dsomarket disaggregate: feeder {args.feeder}, {book.n} bid segments", *lines,
                 report.files_line(out, ("network.csv", *DISAGGREGATION_FILES))])
    return _status(dis.clearing)


def _outcome(d: Path):
    """A disaggregate output directory as the tables settlement needs (an ``engine.settlement.MarketOutcome``)."""
    from dsomarket.engine.settlement import MarketOutcome

    summary_path = d / "summary.json"
    if not summary_path.is_file():
        raise InputError(str(d), "summary.json", "missing: not a `dsomarket disaggregate` output")
    summary = json.loads(summary_path.read_text())
    if summary.get("status") != "optimal":
        raise InputError(str(d), "status", f"the run is {summary.get('status')}: nothing to settle")

    def table(name: str) -> pl.DataFrame:
        t = read_table(d / name, name.removesuffix(".csv"))
        return t.with_columns(pl.col(c).fill_null("") for c in ("aggregator_id", "resource_id", "bid_id")
                              if c in t.columns)

    return MarketOutcome(dispatch=table("dispatch.csv"), prices=table("prices.csv"), award=table("award.csv"),
                         fixed_load=table("fixed_load.csv"), interval_minutes=float(summary["interval_minutes"]))


def _settle(args) -> int:
    with output_dir(args.out) as out:
        da = _outcome(Path(args.day_ahead))
        rt = _outcome(Path(args.real_time)) if args.real_time else None
        from dsomarket.engine.settlement import settle
        result = settle(da, rt)
        write_csv(result.statements, out / "statements.csv")
        write_csv(result.by_aggregator(), out / "aggregators.csv")
        write_json(out / "summary.json", result.summary)
    t = result.summary
    report.emit([f"dsomarket settle: {t['lines']} statement lines "
                 f"({'balanced' if t['balanced'] else 'NOT balanced'} to the cent)",
                 f"bids         paid {t['paid_to_bids']:,.2f}, charged {t['charged_to_bids']:,.2f}; "
                 f"fixed load charged {t['fixed_load_charges']:,.2f}",
                 f"ISO          the DSO pays {t['iso_payment']:,.2f} for the interface import (negative: it is paid)",
                 f"surplus      {t['merchandising_surplus']:,.2f} merchandising surplus (congestion rent, >= 0)",
                 report.files_line(out, ("statements.csv", "aggregators.csv", "summary.json"))])
    return 0
