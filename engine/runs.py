"""Clearing, interface curves and disaggregation of a market whose network changes during its horizon.

A change set splits a market's intervals into runs of one network state
(:func:`engine.network_changes.network_runs`). Each run is cleared, traced or
disaggregated on its own feeder with the bids of its intervals (bids at
de-energised buses take no part: nothing can be delivered there), with
whatever formulation the options name, and the tables are put back together
in interval order. With no change in effect this is exactly the ordinary
call on the feeder as loaded.

A resource that couples intervals (storage, EV energy, ramps) cannot be split
between runs, so such a market with more than one run is refused: clear the
runs as separate markets, or state the change from the market's first
interval.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import polars as pl

from dsomarket.engine.bids import BidBook, MarketRules, Resource, couples_intervals, validate_bids
from dsomarket.engine.clearing import ClearingOptions, ClearingResult, clear
from dsomarket.engine.disaggregation import Disaggregation, disaggregate
from dsomarket.engine.errors import InputError
from dsomarket.engine.interface import InterfaceCurve, trace_curve
from dsomarket.engine.network import Feeder, _utc
from dsomarket.engine.network_changes import NetworkRun, network_runs


def runs_for(feeder: Feeder, changes: pl.DataFrame | None, book: BidBook,
             resources: tuple[Resource, ...]) -> tuple[NetworkRun, ...]:
    """The runs of a book's intervals; InputError when a coupling resource would be split."""
    runs = network_runs(feeder, changes, book.intervals) if changes is not None and changes.height else (
        NetworkRun(tuple(range(book.n_interval)), list(book.intervals), feeder, (), (), ()),)
    if len(runs) > 1 and couples_intervals(book, resources):
        raise InputError("network_changes", "start", "a network change inside the horizon of a market whose "
                         "storage, EV or ramp resources couple its intervals: clear the parts as separate markets")
    return runs


def run_book(book: BidBook, run: NetworkRun, rules: MarketRules) -> BidBook:
    """The bids of a run's intervals at energised buses, validated against the run's feeder."""
    if len(run.indices) == book.n_interval and not run.de_energised:
        return validate_bids(book.table, run.feeder, rules, book.intervals)
    keep = np.isin(book.t_idx, run.indices) & ~book.table["bus"].is_in(list(run.de_energised)).to_numpy()
    return validate_bids(book.table.filter(pl.Series(keep)), run.feeder, rules, run.intervals)


def _sorted(frames: list[pl.DataFrame]) -> pl.DataFrame:
    frames = [f for f in frames if f is not None and f.width]
    if not frames:
        return pl.DataFrame()
    out = pl.concat(frames, how="vertical_relaxed")
    return out.sort("interval", maintain_order=True) if "interval" in out.columns else out


def combine_clearings(results: list[ClearingResult], intervals: list) -> ClearingResult:
    """One clearing of the whole horizon from the clearings of its runs (in run order)."""
    if len(results) == 1:
        return results[0]
    failed = [r for r in results if not r.ok]
    if failed:
        first = failed[0]
        return dataclasses.replace(first, intervals=list(intervals),
                                   diagnosis=tuple(d for r in failed for d in r.diagnosis))
    sheds = [r.shed for r in results if r.shed is not None]
    checks = [r.ac_check for r in results if r.ac_check]
    gaps = [r.relaxation_gap for r in results if r.relaxation_gap is not None]
    return ClearingResult(
        status="optimal", formulation=results[0].formulation, intervals=list(intervals),
        welfare=float(sum(r.welfare for r in results)),
        dispatch=_sorted([r.dispatch for r in results]), prices=_sorted([r.prices for r in results]),
        lines=_sorted([r.lines for r in results]), buses=_sorted([r.buses for r in results]),
        interface=_sorted([r.interface for r in results]), solver=results[0].solver,
        build_seconds=sum(r.build_seconds for r in results), solve_seconds=sum(r.solve_seconds for r in results),
        shed=_sorted(sheds) if sheds else None, ac_check=_worst(checks) if checks else None,
        relaxation_gap=max(gaps) if gaps else None)


def _worst(checks: list[dict]) -> dict:
    """The AC check of several runs: the worst of each figure."""
    low = min(checks, key=lambda c: c.get("min_v_pu", np.inf))
    out = dict(checks[0])
    for key in out:
        values = [c[key] for c in checks if key in c]
        if key == "converged":
            out[key] = all(values)
        elif key in ("min_v_pu", "min_v_bus"):
            out[key] = low.get(key)
        elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            out[key] = max(values)
    return out


def clear_runs(runs: tuple[NetworkRun, ...], book: BidBook, iso_price, *, rules: MarketRules,
               resources: tuple[Resource, ...] = (), options: ClearingOptions = ClearingOptions()) -> ClearingResult:
    """:func:`engine.clearing.clear` run by run; ``iso_price`` per MWh, scalar or one per interval."""
    price = np.broadcast_to(np.asarray(iso_price, dtype=float), (book.n_interval,))
    results = [clear(run.feeder, run_book(book, run, rules), price[list(run.indices)], rules=rules,
                     resources=resources, options=options) for run in runs]
    return combine_clearings(results, book.intervals)


def trace_runs(runs: tuple[NetworkRun, ...], book: BidBook, rules: MarketRules,
               resources: tuple[Resource, ...] = (), options: ClearingOptions = ClearingOptions(),
               forecast=None, progress: Callable[[int, int], None] | None = None,
               **socp_options) -> InterfaceCurve:
    """:func:`engine.interface.trace_curve` run by run; ``forecast`` per MWh, scalar, per interval or None.

    ``progress(done, total)`` is called after each interval, counted over all runs.
    """
    fc = None if forecast is None else np.broadcast_to(np.asarray(forecast, dtype=float), (book.n_interval,))
    curves = []
    done = 0
    for run in runs:
        def step(k: int, _total: int, before: int = done) -> None:
            progress(before + k, book.n_interval)

        curves.append(trace_curve(run.feeder, run_book(book, run, rules), rules, resources, options,
                                  forecast=None if fc is None else fc[list(run.indices)],
                                  progress=None if progress is None else step, **socp_options))
        done += len(run.indices)
    if len(curves) == 1:
        return curves[0]
    forecast_all = np.empty(book.n_interval)
    for run, c in zip(runs, curves, strict=True):
        forecast_all[list(run.indices)] = c.forecast
    gaps = [c.relaxation_gap for c in curves if c.relaxation_gap is not None]
    return InterfaceCurve(
        bands=_sorted([c.bands for c in curves]), fixed_net_load_kw=_sorted([c.fixed_net_load_kw for c in curves]),
        conditional=any(c.conditional for c in curves), forecast=forecast_all,
        solves=sum(c.solves for c in curves), seconds=sum(c.seconds for c in curves),
        exact=all(c.exact for c in curves), max_error_kw=max(c.max_error_kw for c in curves),
        price_tol=max(c.price_tol for c in curves), relaxation_gap=max(gaps) if gaps else None,
        bound_flips=sum(c.bound_flips for c in curves))


def disaggregate_runs(runs: tuple[NetworkRun, ...], book: BidBook, award: pl.DataFrame, rules: MarketRules,
                      resources: tuple[Resource, ...] = (), options: ClearingOptions = ClearingOptions(),
                      day_ahead: pl.DataFrame | None = None, day_ahead_minutes: float = 60.0) -> Disaggregation:
    """:func:`engine.disaggregation.disaggregate` run by run.

    ``award`` and ``day_ahead`` are cut to each run's intervals; a day-ahead
    position at a de-energised bus is not held (nothing can be delivered there).
    """
    parts = []
    for run in runs:
        sub_award = award
        if len(runs) > 1 and "interval" in award.columns:
            stamp = _utc(pl.col("interval"), award.schema["interval"])
            sub_award = award.filter(stamp.is_in(run.intervals))
        held = day_ahead
        if held is not None and run.de_energised:
            held = held.filter(~pl.col("bus").is_in(list(run.de_energised)))
        parts.append(disaggregate(run.feeder, run_book(book, run, rules), sub_award, rules, resources, options,
                                  day_ahead=held, day_ahead_minutes=day_ahead_minutes))
    if len(parts) == 1:
        return parts[0]
    return Disaggregation(clearing=combine_clearings([p.clearing for p in parts], book.intervals),
                          award=_sorted([p.award for p in parts]),
                          instructions=_sorted([p.instructions for p in parts]).sort(
                              ["aggregator_id", "resource_id", "interval"], nulls_last=False),
                          fixed_load=_sorted([p.fixed_load for p in parts]),
                          interval_minutes=parts[0].interval_minutes)
