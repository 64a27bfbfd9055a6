"""Disaggregation of an ISO award at the T-D interface back to bids, resources and aggregators.

The ISO answers the interface curve with, per interval, a cleared import
(kW, positive = the feeder buys) and its price, or a price alone. The DSO
re-clears its nodal market with the interface import fixed to the award (or
at the price), which yields the dispatch of every bid, the DLMPs, and the
dispatch instructions per resource and aggregator. Because the award is a
point on a curve traced from the same model, the re-clear is feasible and
respects every distribution limit.

A real-time award re-clears from the day-ahead position: resources that do
not bid again in real time are held at their day-ahead dispatch.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import polars as pl

from engine.bids import BidBook, MarketRules, Resource
from engine.clearing import ClearingOptions, ClearingResult, NodalMarket, _iv_column
from engine.errors import InputError
from engine.network import Feeder, _utc


@dataclass(frozen=True, eq=False)
class Disaggregation:
    """An ISO award turned into dispatch.

    Attributes
    ----------
    clearing
        The re-clear at the award (dispatch, DLMPs, flows, voltages).
    award
        ``interval, import_kw, price`` as applied (price filled in from the
        re-clear's interface DLMP where the ISO gave none).
    instructions
        ``aggregator_id, resource_id, interval, kw``: net injection to deliver
        (kW, positive = into the feeder), one row per resource (or per bid
        where a bid names no resource).
    fixed_load
        ``bus, interval, load_kw``: the inflexible withdrawal the re-clear
        carried (including day-ahead positions held in real time).
    interval_minutes
        Length of each interval, for settlement.
    """

    clearing: ClearingResult
    award: pl.DataFrame
    instructions: pl.DataFrame
    fixed_load: pl.DataFrame
    interval_minutes: float


def _award_arrays(award: pl.DataFrame, intervals: list) -> tuple[np.ndarray, np.ndarray]:
    if "interval" not in award.columns:
        award = award.with_columns(interval=pl.lit(None, pl.Datetime("us", "UTC")))
    for col in ("import_kw", "price"):
        if col not in award.columns:
            award = award.with_columns(pl.lit(None, pl.Float64).alias(col))
    award = award.with_columns(_utc(pl.col("interval"), award.schema["interval"]).alias("interval"),
                               pl.col("import_kw").cast(pl.Float64), pl.col("price").cast(pl.Float64))
    t_of = {iv: k for k, iv in enumerate(intervals)}
    q = np.full(len(intervals), np.nan)
    p = np.full(len(intervals), np.nan)
    seen = set()
    for row, rec in enumerate(award.iter_rows(named=True)):
        t = t_of.get(rec["interval"])
        if t is None:
            raise InputError("award", "interval", f"{rec['interval']} is not an interval of this market", row=row)
        if t in seen:
            raise InputError("award", "interval", "appears twice", row=row)
        seen.add(t)
        qi, pi = rec["import_kw"], rec["price"]
        if qi is None and pi is None:
            raise InputError("award", "import_kw", "an award needs import_kw, price or both", row=row)
        for name, v in (("import_kw", qi), ("price", pi)):
            if v is not None and not np.isfinite(v):
                raise InputError("award", name, "must be finite", row=row)
        q[t] = np.nan if qi is None else qi
        p[t] = np.nan if pi is None else pi
    missing = [k for k in range(len(intervals)) if k not in seen]
    if missing:
        iv = intervals[missing[0]]
        raise InputError("award", "interval", f"no award for interval {iv}")
    return q, p


def disaggregate(feeder: Feeder, book: BidBook, award: pl.DataFrame, rules: MarketRules = MarketRules(),
                 resources: tuple[Resource, ...] = (), options: ClearingOptions = ClearingOptions(),
                 day_ahead: pl.DataFrame | None = None, day_ahead_minutes: float = 60.0) -> Disaggregation:
    """Re-clear the feeder at the ISO's award and dispatch every bid.

    Parameters
    ----------
    award
        ``interval`` (null for a single-interval market), ``import_kw`` (kW,
        positive = import from the ISO) and/or ``price`` (per MWh).
    day_ahead
        For a real-time re-clear: the day-ahead dispatch table (``bid_id,
        interval, bus, side, resource_id, cleared_kw``). Bids of
        resources (or bids without a resource) that do not appear in ``book``
        are held at their day-ahead dispatch in the day-ahead interval of
        ``day_ahead_minutes`` containing each real-time interval.

    Returns
    -------
    Disaggregation
        ``clearing.status`` is ``infeasible`` (with a diagnosis) when the award
        lies outside what the feeder can deliver.
    """
    if options.formulation != "lindistflow":
        raise InputError("options", "formulation", "disaggregation re-clears the LinDistFlow market")
    q, p = _award_arrays(award, book.intervals)
    loads = None
    if day_ahead is not None:
        loads = _held_positions(feeder, book, day_ahead, day_ahead_minutes)
    price0 = np.where(np.isfinite(p), p, (rules.price_floor + rules.price_cap) / 2.0)
    market = NodalMarket(feeder, book, price0, rules, resources, options,
                         None if loads is None else loads[0], None if loads is None else loads[1])
    market.fix_import(q)
    sol = market.solve_raw()
    if sol.ok and np.any(~np.isfinite(p)):
        # No price from the ISO: the interface's own marginal price is the
        # energy price, so re-solve (warm, same dispatch) with it as the cost.
        root = market.solver.block(sol.row_dual, "bus_p_balance", rows=True).reshape(book.n_interval, -1)[:, 0]
        price0 = np.where(np.isfinite(p), p, root)
        market.set_iso_price(price0)
        sol = market.solve_raw()
    result = market.result(sol) if sol.ok else market.solve()
    applied = pl.DataFrame({"interval": result.interface["interval"],
                            "import_kw": result.interface["import_kw"], "price": price0})
    load_p, _ = market._loads()
    topo = feeder.topology
    T = book.n_interval
    fixed = pl.DataFrame({"bus": np.tile(topo.bus_ids, T).astype(str),
                          "interval": _iv_column(book.intervals, np.repeat(np.arange(T), topo.n_bus)),
                          "load_kw": load_p.T.ravel()})
    return Disaggregation(clearing=result, award=applied, instructions=instructions(result),
                          fixed_load=fixed, interval_minutes=rules.interval_minutes)


def instructions(result: ClearingResult) -> pl.DataFrame:
    """Net injection per aggregator, resource and interval (kW, positive = into the feeder).

    Bids without a resource are reported under their bid_id, so that every
    kW cleared has an addressee.
    """
    d = result.dispatch
    if d["cleared_kw"].null_count() == d.height and d.height:
        return pl.DataFrame(schema={"aggregator_id": pl.Utf8, "resource_id": pl.Utf8,
                                    "interval": pl.Datetime("us", "UTC"), "kw": pl.Float64})
    return (d.with_columns(
        resource_id=pl.when(pl.col("resource_id") == "").then(pl.col("bid_id")).otherwise(pl.col("resource_id")),
        kw=pl.when(pl.col("side") == "sell").then(pl.col("cleared_kw")).otherwise(-pl.col("cleared_kw")))
        .group_by(["aggregator_id", "resource_id", "interval"])
        .agg(pl.col("kw").sum().round(6))
        .sort(["aggregator_id", "resource_id", "interval"], nulls_last=False))


def _held_positions(feeder: Feeder, book: BidBook, da: pl.DataFrame, da_minutes: float):
    """Fixed load per bus and real-time interval including day-ahead positions not re-bid."""
    topo = feeder.topology
    ivs = book.intervals
    p, q = feeder.loads(ivs if ivs != [None] else None)
    if p.shape[1] != book.n_interval:
        p, q = np.repeat(p, book.n_interval, axis=1), np.repeat(q, book.n_interval, axis=1)
    rt = book.table
    rebid_res = set(rt.filter(pl.col("resource_id") != "")["resource_id"].to_list())
    rebid_bids = set(rt["bid_id"].to_list())
    held = da.filter(
        pl.when(pl.col("resource_id") != "").then(~pl.col("resource_id").is_in(list(rebid_res)))
        .otherwise(~pl.col("bid_id").is_in(list(rebid_bids))))
    if held.height == 0 or ivs == [None]:
        return p, q
    span = timedelta(minutes=da_minutes)
    bus = topo.bus_index_of(held["bus"].to_list(), table="day_ahead")
    sign = np.where(held["side"].to_numpy() == "buy", 1.0, -1.0)
    kw = held["cleared_kw"].to_numpy() * sign
    starts = held["interval"].to_list()
    for t, iv in enumerate(ivs):
        inside = np.array([s is not None and s <= iv < s + span for s in starts], dtype=bool)
        np.add.at(p[:, t], bus[inside], kw[inside])
    return p, q
