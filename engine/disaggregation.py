"""Disaggregation of an ISO award at the T-D interface back to bids, resources and aggregators.

The ISO answers the interface curve with, per interval, a cleared import
(kW, positive = the feeder buys) and its price, or a price alone, or a
quantity alone. The DSO re-clears its nodal market with the interface import
fixed to the award (or at the price), which yields the dispatch of every bid,
the DLMPs, and the dispatch instructions per resource and aggregator. Because
an award on the curve is a point traced from the same model, the re-clear is
feasible and respects every distribution limit; an award off the curve is
re-cleared all the same when the feeder can deliver it, and said so.

Prices. With a quantity and a price, the dispatch is the re-clear at the fixed
import, and the DLMPs are those of the market at the ISO's price whenever that
dispatch is optimal there (the award lies on the curve): any optimal dispatch
and any optimal prices of one LP satisfy its optimality conditions together,
so every bid is consistent with the DLMPs and the interface DLMP equals the
ISO's price. With a quantity alone the price is the interface DLMP of the
re-clear; with a price alone the import is the market's choice at that price.

Fair and reproducible. Bids are cleared in a canonical order (by interval and
bid_id), so the same bids in any order give byte-identical outputs. Marginal
bids of equal price (same interval, side and tan phi, no linked resource),
whose effective DLMP equals that price, share their cleared total pro rata to
their quantities, across buses, whenever the network can carry that split (a
second re-clear with the bids held there checks it); the LP's vertex would
otherwise fill one and leave the other.

A real-time award re-clears from the day-ahead position: in each real-time
interval, every day-ahead position (a resource's, or a bid's where it names no
resource) that is not bid again in that interval is held at its day-ahead
dispatch. Held positions are part of the net load the re-clear sees and appear
in the dispatch (``held = true``) and the instructions, so that dispatch plus
fixed load equals the award. A resource that bids again is released in that
interval whole (all its day-ahead bids): its real-time bids are its position. A
bid without a resource is the same position only under the same bid_id, which
is unique in a book, so a position re-bid in several real-time intervals needs
a ``resource_id``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import polars as pl

from dsomarket.engine import lindistflow
from dsomarket.engine.losses import CURVE_ABS_KW, CURVE_TOL
from dsomarket.engine.bids import BidBook, MarketRules, Resource, canonical
from dsomarket.engine.clearing import ROUND_KW, ClearingOptions, ClearingResult, NodalMarket, _iv_column
from dsomarket.engine.errors import InputError
from dsomarket.engine.network import S_BASE_KVA, Feeder, _first_uncastable, _utc, as_polars
from dsomarket.engine.solver import Solution

DISPATCH_SCHEMA = {"bid_id": pl.Utf8, "interval": pl.Datetime("us", "UTC"), "bus": pl.Utf8, "side": pl.Utf8,
                   "aggregator_id": pl.Utf8, "resource_id": pl.Utf8, "price": pl.Float64,
                   "quantity_kw": pl.Float64, "tan_phi": pl.Float64, "cleared_kw": pl.Float64,
                   "held": pl.Boolean}
INSTRUCTION_SCHEMA = {"aggregator_id": pl.Utf8, "resource_id": pl.Utf8, "interval": pl.Datetime("us", "UTC"),
                      "kw": pl.Float64}
_MARGINAL_TOL = 1e-6      # per MWh: an effective DLMP this close to a bid's price makes it marginal


@dataclass(frozen=True, eq=False)
class Disaggregation:
    """An ISO award turned into dispatch.

    Attributes
    ----------
    clearing
        The re-clear at the award (dispatch, DLMPs, flows, voltages). Its
        ``dispatch`` carries ``tan_phi`` and ``held`` (a day-ahead position
        held in real time) and lists bids by interval and bid_id.
    award
        ``interval, import_kw, price, price_source, on_curve`` as applied:
        ``price_source`` is ``iso`` or ``interface_dlmp`` (the ISO gave a
        quantity only); ``on_curve`` says whether the re-clear at the ISO's
        price could deliver the awarded quantity (null where the ISO gave only
        one of the two).
    instructions
        ``aggregator_id, resource_id, interval, kw``: net injection to deliver
        (kW, positive = into the feeder), one row per resource (or per bid
        where a bid names no resource), held positions included.
    fixed_load
        ``bus, interval, load_kw, load_kvar``: the inflexible withdrawal served
        (fixed load minus any shed load), without held positions.
    interval_minutes
        Length of each interval, for settlement.
    """

    clearing: ClearingResult
    award: pl.DataFrame
    instructions: pl.DataFrame
    fixed_load: pl.DataFrame
    interval_minutes: float

    def balance_kw(self) -> pl.DataFrame:
        """Per interval: import, dispatch net withdrawal, fixed load, losses and ``error_kw`` (0 up to rounding).

        ``withdrawal_kw + fixed_kw + losses_kw == import_kw``, with ``losses_kw`` the
        line losses of the re-clear's model (zero in the lossless LP; in the loss-aware
        one those of the AC power flow of the dispatch, to the convergence tolerance).
        When the AC check ran, ``ac_import_kw`` is what the AC power flow of the
        dispatch draws at the interface and ``ac_error_kw`` its excess over the award
        (the lossless LP's shortfall is its losses).
        """
        d = self.clearing.dispatch
        w = (d.with_columns(w=pl.when(pl.col("side") == "buy").then(pl.col("cleared_kw"))
                            .otherwise(-pl.col("cleared_kw")))
             .group_by("interval").agg(withdrawal_kw=pl.col("w").sum()))
        f = self.fixed_load.group_by("interval").agg(fixed_kw=pl.col("load_kw").sum())
        out = (self.award.select("interval", "import_kw")
               .join(w, on="interval", how="left", nulls_equal=True)
               .join(f, on="interval", how="left", nulls_equal=True)
               .with_columns(pl.col("withdrawal_kw").fill_null(0.0), pl.col("fixed_kw").fill_null(0.0)))
        losses = self.clearing.interface.select("interval", "losses_kw")
        out = out.join(losses, on="interval", how="left", nulls_equal=True).with_columns(
            pl.col("losses_kw").fill_null(0.0))
        out = out.with_columns(error_kw=pl.col("withdrawal_kw") + pl.col("fixed_kw") + pl.col("losses_kw")
                               - pl.col("import_kw"))
        ac = self.clearing.ac_check
        if ac is not None and len(ac.get("import_kw", [])) == out.height:
            # What the feeder really draws for this dispatch: the award must hold after losses.
            out = out.with_columns(ac_import_kw=pl.Series(ac["import_kw"], dtype=pl.Float64)).with_columns(
                ac_error_kw=pl.col("ac_import_kw") - pl.col("import_kw"))
        return out

    def summary(self) -> dict:
        """JSON-ready facts: the clearing's summary plus the award as applied and the balance check."""
        out = self.clearing.summary()
        out["interval_minutes"] = self.interval_minutes
        out["award_import_kw"] = self.award["import_kw"].to_list()
        out["award_price"] = self.award["price"].to_list()
        out["award_on_curve"] = self.award["on_curve"].to_list()
        if self.clearing.ok:
            balance = self.balance_kw()
            out["max_balance_error_kw"] = float(balance["error_kw"].abs().max() or 0.0)
            out["losses_kw"] = balance["losses_kw"].to_list()
            if "ac_error_kw" in balance.columns:
                out["ac_import_kw"] = balance["ac_import_kw"].to_list()
                out["max_ac_import_error_kw"] = float(balance["ac_error_kw"].abs().max() or 0.0)
            out["held_positions"] = int(self.clearing.dispatch["held"].sum())
        return out


def _award_arrays(award: pl.DataFrame, intervals: list, every: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Awarded import (kW) and price (per MWh) per interval of the market, NaN where not given.

    ``every``: each interval of the market must have its award (else InputError); False takes an
    award of some intervals (the others NaN).
    """
    award = as_polars(award, "award")
    if "interval" not in award.columns:
        award = award.with_columns(interval=pl.lit(None, pl.Datetime("us", "UTC")))
    for col in ("import_kw", "price"):
        if col not in award.columns:
            award = award.with_columns(pl.lit(None, pl.Float64).alias(col))
    if "import_kw" not in award.columns and "price" not in award.columns:
        raise InputError("award", "import_kw", "column is missing (give import_kw, price or both)")
    bad = _first_uncastable(award, {"interval": pl.Datetime("us", "UTC"), "import_kw": pl.Float64,
                                    "price": pl.Float64})
    if bad:
        raise InputError("award", bad[0], bad[2], row=bad[1])
    try:
        award = award.with_columns(_utc(pl.col("interval"), award.schema["interval"]).alias("interval"),
                                   pl.col("import_kw").cast(pl.Float64), pl.col("price").cast(pl.Float64))
    except pl.exceptions.PolarsError as exc:
        raise InputError("award", "interval", f"unreadable value ({str(exc).splitlines()[0]})") from None
    t_of = {iv: k for k, iv in enumerate(intervals)}
    q = np.full(len(intervals), np.nan)
    p = np.full(len(intervals), np.nan)
    seen: set = set()
    for row, rec in enumerate(award.iter_rows(named=True)):
        t = t_of.get(rec["interval"])
        if t is None:
            raise InputError("award", "interval", f"{rec['interval']} is not an interval of this market",
                             row=row)
        if t in seen:
            raise InputError("award", "interval", "appears twice", row=row)
        seen.add(t)
        qi, pi = rec["import_kw"], rec["price"]
        if qi is None and pi is None:
            raise InputError("award", "import_kw", "an award needs import_kw, price or both", row=row)
        for name, v in (("import_kw", qi), ("price", pi)):
            if v is not None and not math.isfinite(v):
                raise InputError("award", name, "must be finite", row=row)
        q[t] = np.nan if qi is None else qi
        p[t] = np.nan if pi is None else pi
    missing = [k for k in range(len(intervals)) if k not in seen]
    if missing and every:
        raise InputError("award", "interval", f"no award for interval {intervals[missing[0]]}")
    return q, p


def disaggregate(feeder: Feeder, book: BidBook, award: pl.DataFrame, rules: MarketRules = MarketRules(),
                 resources: tuple[Resource, ...] = (), options: ClearingOptions = ClearingOptions(),
                 day_ahead: pl.DataFrame | None = None, day_ahead_minutes: float = 60.0,
                 share_marginal: bool = True) -> Disaggregation:
    """Re-clear the feeder at the ISO's award and dispatch every bid.

    Parameters
    ----------
    feeder, book, rules, resources
        The market (for real time: the real-time bids and interval length).
    award
        ``interval`` (null or absent for a single-interval market), ``import_kw``
        (kW, positive = import from the ISO) and/or ``price`` (per MWh).
    options
        ``formulation``: ``lossaware`` (default; the award is delivered at the
        interface after losses, as the AC power flow of the dispatch draws it),
        ``lossless`` or ``lindistflow``.
    day_ahead
        For a real-time re-clear: the day-ahead dispatch (``bid_id, interval,
        bus, side, cleared_kw`` and optionally ``aggregator_id, resource_id,
        tan_phi, price, quantity_kw``). In each real-time interval every
        day-ahead position not bid again is held at its dispatch in the
        day-ahead interval of ``day_ahead_minutes`` containing it.
    share_marginal
        Share equal-priced marginal bids pro rata across buses (see the module docstring).

    Returns
    -------
    Disaggregation
        ``clearing.status`` is ``infeasible`` (with a diagnosis) when the award
        lies outside what the feeder can deliver.
    """
    if options.formulation == "socp":
        raise InputError("options", "formulation", "disaggregation re-clears a linear market: lossaware (the "
                         "default), lossless or lindistflow")
    book = canonical(book, feeder, rules)
    q, p = _award_arrays(award, book.intervals)
    T, topo = book.n_interval, feeder.topology
    base_p, base_q = lindistflow.market_loads(feeder, book)
    held = (_held_rows(feeder, book, day_ahead, day_ahead_minutes) if day_ahead is not None
            else _empty_dispatch())
    load_p, load_q = held_loads(feeder, book, held, base_p, base_q)

    price = np.where(np.isfinite(p), p, (rules.price_floor + rules.price_cap) / 2.0)
    market = NodalMarket(feeder, book, price, rules, resources, options, load_p, load_q)
    sol, q = converge_award(market, q, p, rules)
    seconds = sol.solve_seconds
    source = np.where(np.isfinite(p), "iso", "interface_dlmp")
    if not sol.ok:
        result = market.solve()   # the failed result, with a diagnosis of the limits the award breaks
        applied = _applied(result, q, p, source, [None] * T)
        return Disaggregation(result, applied, _empty_instructions(),
                              _fixed_table(book, topo, base_p, base_q, None), rules.interval_minutes)

    sol, duals, on_curve, extra = award_prices(market, sol, q, p)
    seconds += extra
    x = sol.x
    if share_marginal:
        x, extra = _share_marginal(market, sol, duals)
        seconds += extra
    merged = Solution(status="optimal", objective=sol.objective, x=x, row_value=sol.row_value,
                      row_dual=duals.row_dual, col_dual=duals.col_dual, solve_seconds=seconds,
                      iterations=sol.iterations)
    result = market.result(merged)
    result = with_held(result, held)
    shed = shed_array(result, book, topo, base_p.shape)
    # A price taken from the re-clear is the interface DLMP the final prices carry.
    root = result.prices.filter(pl.col("bus") == feeder.root_bus)["dlmp"].to_numpy()
    applied_price = np.where(np.isfinite(p), p, root)
    return Disaggregation(clearing=result, award=_applied(result, q, applied_price, source, on_curve),
                          instructions=instructions(result),
                          fixed_load=_fixed_table(book, topo, base_p, base_q, shed),
                          interval_minutes=rules.interval_minutes)


def holding_day_ahead(feeder: Feeder, book: BidBook, day_ahead: pl.DataFrame | None,
                      day_ahead_minutes: float = 60.0) -> Feeder:
    """The feeder whose fixed load includes the day-ahead positions a real-time market holds.

    The positions are those :func:`disaggregate` holds for the same ``book`` and ``day_ahead``
    (every position not bid again, per real-time interval, at its kW and tan phi: a buy adds
    load, a sell removes it). A real-time market's clearing and interface curve are built on
    this feeder, so that the curve the ISO awards from describes the feeder its award is
    disaggregated on. Without it the curve leaves the held positions out, the award lands
    off the feeder's real curve by their net kW, and the ISO's deviation is settled at its
    price while the re-clear prices it at the marginal local bid (a negative merchandising
    surplus). ``None`` or no position held: the feeder itself.
    """
    if day_ahead is None:
        return feeder
    held = _held_rows(feeder, book, day_ahead, day_ahead_minutes)
    if not held.height:
        return feeder
    # Imported here: ``dsomarket clear`` imports this module and must not load the flexibility auction.
    from dsomarket.engine.flexibility import apply_activations
    return apply_activations(feeder, held.select(
        "bus", "interval", pl.when(pl.col("side") == "buy").then(pl.lit("down")).otherwise(pl.lit("up"))
        .alias("direction"), pl.col("cleared_kw").alias("accepted_kw"), "tan_phi"))


def with_held(result: ClearingResult, held: pl.DataFrame) -> ClearingResult:
    """A re-clear's result whose dispatch also lists the held day-ahead positions (``held = true``)."""
    dispatch = pl.concat([result.dispatch.with_columns(held=pl.lit(False)).select(list(DISPATCH_SCHEMA)),
                          held.select(list(DISPATCH_SCHEMA))])
    return dataclasses.replace(result, dispatch=dispatch.sort(["interval", "bid_id", "held"], nulls_last=False))


def held_loads(feeder: Feeder, book: BidBook, held: pl.DataFrame, base_p: np.ndarray, base_q: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """The fixed withdrawal (kW, kvar; (n, T)) with the held day-ahead positions (:func:`_held_rows`) added."""
    load_p, load_q = base_p.astype(float).copy(), base_q.astype(float).copy()
    if held.height:
        t_of = {iv: k for k, iv in enumerate(book.intervals)}
        ti = np.array([t_of[iv] for iv in held["interval"].to_list()], dtype=np.int64)
        bi = feeder.topology.bus_index_of(held["bus"].to_list(), table="day_ahead")
        kw = np.where(held["side"].to_numpy() == "buy", 1.0, -1.0) * held["cleared_kw"].to_numpy()
        np.add.at(load_p, (bi, ti), kw)
        np.add.at(load_q, (bi, ti), kw * held["tan_phi"].to_numpy())
    return load_p, load_q


def shed_array(result: ClearingResult, book: BidBook, topo, shape: tuple) -> np.ndarray | None:
    """Shed load (kW) per bus (topology order) and interval of ``book`` from a clearing's ``shed`` table, or None."""
    if result.shed is None or not result.shed.height:
        return None
    rows = result.shed
    if book.intervals != [None]:   # a run's own intervals of a horizon's table
        rows = rows.filter(pl.col("interval").is_in(book.intervals))
    shed = np.zeros(shape)
    t_of = {iv: k for k, iv in enumerate(book.intervals)}
    shed[topo.bus_index_of(rows["bus"].to_list()),
         [t_of[iv] for iv in rows["interval"].to_list()]] = rows["shed_kw"].to_numpy()
    return shed


def award_prices(market, sol: Solution, q: np.ndarray, p: np.ndarray) -> tuple[Solution, Solution, list, float]:
    """Price an optimal fixed-import solve of an award (``q`` kW, ``p`` per MWh per interval; NaN = not given).

    An interval awarded a quantity without a price takes the interface's own DLMP as
    its price (re-solved, same dispatch: the import is fixed, so that the energy
    component of every DLMP is that price); one awarded both takes the prices of the
    market at the ISO's price where the dispatch is optimal there
    (:func:`_prices_at_award`). ``market`` is a :class:`~engine.clearing.NodalMarket`
    or :class:`~engine.runs.CoupledMarket`. Returns the solve, the one whose duals
    price it, ``on_curve`` per interval (None where no price was given) and the
    seconds the extra solves took.
    """
    seconds, on_curve = 0.0, [None] * len(q)
    quantity_only = np.isfinite(q) & ~np.isfinite(p)
    if quantity_only.any():
        before = market.solver.cost.copy()
        market.set_iso_price(np.where(quantity_only, market.root_duals(sol), market.iso_price))
        if market.lossaware:
            sol = _repriced(market.solver.cost, before, sol)
        else:
            sol = market.solve_raw()
            seconds += sol.solve_seconds
    duals = sol
    both = np.isfinite(p) & np.isfinite(q)
    if both.any():
        sol, duals, ok = (_prices_at_converged_award if market.lossaware else _prices_at_award)(market, sol, q, both)
        seconds += duals.solve_seconds
        for t in np.nonzero(both)[0]:
            on_curve[t] = bool(ok[t])
    return sol, duals, on_curve, seconds


def _repriced(cost: np.ndarray, before: np.ndarray, sol: Solution) -> Solution:
    """``sol``, optimal at the costs ``before``, at the costs ``cost``, which differ from them only on fixed import
    columns now priced at the interface DLMP of ``sol`` (the dual of the root's balance, the one row besides their
    bounds that holds them): their reduced costs become zero, so the same dispatch and duals are optimal, and only
    the objective and those reduced costs move.

    Not a re-solve on the loss-aware model: its converged solve may have held bids on a trust region or pins that
    the iteration then released (:func:`engine.successive.converge`), and a re-solve with them free leaps off the
    fixed point (bench_hidden_physics seed 15000, ieee33-s15003 awarded -276.694 kW: the re-solve's dispatch drew
    -274.153 kW on the AC feeder, 0.92 % short, while its linearisation said the award)."""
    return dataclasses.replace(sol, objective=float(np.sum(cost * sol.x)), col_dual=sol.col_dual + (cost - before))


def converge_award(market, q: np.ndarray, p: np.ndarray, rules: MarketRules) -> tuple[Solution, np.ndarray]:
    """Converge ``market`` (a :class:`~engine.clearing.NodalMarket` or :class:`~engine.runs.CoupledMarket`,
    its ISO prices set) with the interface import fixed at ``q`` (kW per interval; NaN = free); ``p`` the
    awarded prices (per MWh; NaN = none). Returns the solve and the imports fixed.

    Loss-aware, the market is re-linearised until the AC power flow of the dispatch imports the award
    itself. A linearisation holds the losses' tangent, which is below them away from its point (they are
    convex in the flows), so an award near the top of the curve can be a few kW out of reach of a
    linearisation taken elsewhere: of the first one (LinDistFlow, no losses at all) in particular. The
    award is then converged again from the clearing at the awarded prices (an award on the curve is that
    clearing's import), and failing that from the linearisations at the ends of the curve
    (:func:`_deliverable`, which also moves an award a few watts past an end onto it).
    """
    market.fix_import(q)
    sol = market.converge()
    if sol.ok or not market.lossaware:
        return sol, q
    if np.isfinite(p).any():
        market.fix_import(np.where(np.isfinite(p), np.nan, q))
        if market.converge().ok:
            market.fix_import(q)
            sol = market.converge()
            if sol.ok:
                return sol, q
    q = _deliverable(market, q, rules)
    market.fix_import(q)
    return market.converge(), q


def _deliverable(market: NodalMarket, q: np.ndarray, rules: MarketRules) -> np.ndarray:
    """Awarded imports (kW) moved to the nearest import the loss-aware feeder can deliver, where
    that is within the curve's accuracy (``losses.CURVE_TOL``); others are left as awarded.

    The ends of a loss-aware curve come from the linearisation they were traced on; the AC
    feeder's own smallest and largest imports can differ by the curve's accuracy, and an
    award at an end may then lie a few watts outside them. Those ends are the converged
    clearings at the price cap (least import) and floor (most import).
    """
    price = market.iso_price.copy()
    ends = []
    market.fix_import(None)
    for p in (rules.price_cap, rules.price_floor):
        market.set_iso_price(np.full_like(price, p))
        sol = market.converge()
        if not sol.ok:
            break
        ends.append(market.solver.block(sol.x, "import_p") * S_BASE_KVA)
    market.set_iso_price(price)
    if len(ends) < 2:
        return q
    near = np.clip(q, ends[0], ends[1])
    move = np.isfinite(q) & (np.abs(near - q) <= CURVE_TOL * np.abs(q) + CURVE_ABS_KW)
    return np.where(move, near, q)


def _prices_at_award(market: NodalMarket, sol: Solution, q: np.ndarray, both: np.ndarray
                     ) -> tuple[Solution, np.ndarray]:
    """Prices of the market at the ISO's price where the fixed-import dispatch is optimal there.

    Frees the import of the intervals awarded a quantity and a price and re-solves
    (warm): if the optimum does not improve on the fixed-import dispatch, that
    dispatch is optimal at the ISO's prices and the free solve's duals price it,
    with the interface DLMP equal to the ISO's price. Otherwise (an award off the
    curve) the fixed-import duals stay, and the intervals responsible are found
    one at a time. Returns the fixed-import solve, the solution whose duals to use and a
    flag per interval.
    """
    ok = np.zeros(len(q), dtype=bool)
    tol = 1e-7 * max(1.0, abs(sol.objective)) + 1e-7

    def improves(free_mask: np.ndarray) -> tuple[bool, Solution]:
        market.fix_import(np.where(free_mask, np.nan, q))
        free = market.solve_raw()
        market.fix_import(q)
        return not free.ok or free.objective < sol.objective - tol, free

    better, free = improves(both)
    if not better:
        ok[both] = True
        return sol, free, ok
    for t in np.nonzero(both)[0]:
        one = np.zeros_like(both)
        one[t] = True
        ok[t] = not improves(one)[0]
    return sol, sol, ok


def _prices_at_converged_award(market: NodalMarket, sol: Solution, q: np.ndarray, both: np.ndarray
                               ) -> tuple[Solution, Solution, np.ndarray]:
    """:func:`_prices_at_award` on the loss-aware model: an award is on the curve where the market
    cleared at the ISO's price imports it within the curve's stated accuracy (``losses.CURVE_TOL``, with its
    floor ``losses.CURVE_ABS_KW`` near a zero import, where two clearings may part by a bid's last step,
    ``losses.STEP_TOL_KW``), since the curve is made of such clearings: converged from the award's own
    linearisation, or else from the market's first model, as ``clear`` converges and the curve's fresh
    clearings do (:meth:`engine.losscurve._FixedPoints.fresh`).

    Not one free solve of the award's linearisation, as on the lossless LP: a linearisation holds the
    losses' tangent, so where a bid's share is set by the losses' curvature (a lone sell bid clearing
    part of its quantity) the free LP sends the bid to a bound, far from the curve (hypothesis
    example seed 131 of ``tests/test_settlement.py``: 32.2 kW free against 129.9 kW awarded, on
    the curve). Nor the clearing from the award's linearisation alone: warm from the award's basis, HiGHS
    may end at a basis that is feasible only to its tolerance (1e-7), and where a bid moves a rating
    10^5 times less than its own kW that tolerance is kW of import. Seed 7220's real-time market: a sell at
    the far bus of a rating held by day-ahead positions was left basic 0.09 W below its bound, and a sell
    at bus 1 (0.022 VA per kW on that rating) cleared in full, 4.45 kW more, the rating 0.1 VA over once
    the first is read at its bound; converged there, 4.65 kW of import from the fresh clearing the award
    was taken from (off the curve), which imports the award. Where every interval is on the curve the free
    clearing's duals price the dispatch, and the market is left at that clearing's linearisation so
    that the price components are taken on the model those duals are of; otherwise the award is
    converged again, its duals stay, and the fixed-import solve returned is that one.
    """
    def cleared(restart: bool) -> tuple[Solution, np.ndarray]:
        """The market cleared at the ISO's price (from its first model where ``restart``) and whether it
        imports the award, per interval."""
        market.fix_import(np.where(both, np.nan, q))
        if restart:
            market.restart()
        free = market.converge()
        market.fix_import(q)
        if not free.ok:
            return free, np.zeros(len(q), dtype=bool)
        got = market.solver.block(free.x, "import_p") * S_BASE_KVA
        return free, both & (np.abs(got - q) <= CURVE_TOL * np.abs(q) + CURVE_ABS_KW)

    free, ok = cleared(restart=False)
    if ok[both].all():
        return sol, free, ok
    free, fresh = cleared(restart=True)
    if fresh[both].all():
        return sol, free, fresh
    ok |= fresh   # each interval on its curve by one of the two clearings, neither pricing them all
    again = market.converge()   # back to the award itself, whose duals then price it
    # It converged from the award's start before; should it not from here, the first solve stands.
    return (again, again, ok) if again.ok else (sol, sol, ok)


def _share_marginal(market: NodalMarket, sol: Solution, duals: Solution) -> tuple[np.ndarray, float]:
    """Split each group of equal-priced marginal bids pro rata, where the network carries it.

    A group is bids of one interval, side, price and tan phi with no linked
    resource whose effective DLMP (``dlmp + tan_phi dlmp_q``) equals the price.
    Moving cleared kW within a group changes no cost, so a split that the
    network can carry is as optimal as the solver's vertex. Each split is
    checked by re-solving with all bids held at the new values (first all groups
    at once, else one group at a time); the DLMPs stay those of ``duals``.
    """
    s, book = market.solver, market.book
    topo = market.feeder.topology
    T, n = book.n_interval, topo.n_bus
    x_bid = market.bid_mw(sol.x)
    y_p = s.block(duals.row_dual, "bus_p_balance", rows=True).reshape(T, n)
    y_q = s.block(duals.row_dual, "bus_q_balance", rows=True).reshape(T, n)
    eff = y_p[book.t_idx, book.bus_idx] + book.tan_phi * y_q[book.t_idx, book.bus_idx]
    free = book.table["resource_id"].to_numpy() == ""
    marginal = free & (np.abs(eff - book.price) <= _MARGINAL_TOL * np.maximum(1.0, np.abs(book.price)))
    if marginal.sum() < 2:
        return sol.x, 0.0
    q_mw = book.quantity_kw / S_BASE_KVA
    keys = pl.DataFrame({"t": book.t_idx[marginal], "s": book.withdraw_sign[marginal],
                         "p": book.price[marginal], "tan": book.tan_phi[marginal],
                         "bus": book.bus_idx[marginal], "row": np.nonzero(marginal)[0]})
    groups = []
    for _, g in keys.group_by(["t", "s", "p", "tan"], maintain_order=True):
        if g["bus"].n_unique() < 2:
            continue          # one bus: clearing.pro_rata already shares it
        rows = g["row"].to_numpy()
        target = x_bid[rows].sum() * q_mw[rows] / q_mw[rows].sum()
        if np.max(np.abs(target - x_bid[rows])) > 1e-9:
            groups.append((rows, target))
    if not groups:
        return sol.x, 0.0
    seconds = 0.0
    tol = 1e-7 * max(1.0, abs(sol.objective)) + 1e-7

    def carried(x_try: np.ndarray) -> Solution | None:
        nonlocal seconds
        market.hold_bids(x_try)
        trial = s.solve()
        seconds += trial.solve_seconds
        return trial if trial.ok and abs(trial.objective - sol.objective) <= tol else None

    best_x, current = sol.x, x_bid.copy()
    all_at_once = current.copy()
    for rows, target in groups:
        all_at_once[rows] = target
    trial = carried(all_at_once)
    if trial is not None:
        best_x = trial.x
    else:
        for rows, target in groups:
            attempt = current.copy()
            attempt[rows] = target
            trial = carried(attempt)
            if trial is not None:
                current, best_x = attempt, trial.x
    market.hold_bids(None)
    return best_x, seconds


def _applied(result: ClearingResult, q, p, source, on_curve) -> pl.DataFrame:
    ivs = result.intervals
    imp = result.interface["import_kw"].to_numpy() if result.ok else np.asarray(q, dtype=float)
    price = np.asarray(p, dtype=float)
    return pl.DataFrame({"interval": _iv_column(ivs, np.arange(len(ivs))),
                         "import_kw": pl.Series(imp, dtype=pl.Float64).fill_nan(None),
                         "price": pl.Series(price, dtype=pl.Float64).fill_nan(None),
                         "price_source": list(source), "on_curve": pl.Series(on_curve, dtype=pl.Boolean)})


def _fixed_table(book: BidBook, topo, load_p, load_q, shed) -> pl.DataFrame:
    T, n = book.n_interval, topo.n_bus
    served_p = load_p.astype(float).copy()
    served_q = load_q.astype(float).copy()
    if shed is not None:
        ratio = np.divide(load_q, load_p, out=np.zeros_like(served_q), where=load_p > 0)
        served_p -= shed
        served_q -= shed * ratio
    return pl.DataFrame({"bus": np.tile(topo.bus_ids, T).astype(str),
                         "interval": _iv_column(book.intervals, np.repeat(np.arange(T), n)),
                         "load_kw": np.round(served_p.T.ravel(), ROUND_KW) + 0.0,
                         "load_kvar": np.round(served_q.T.ravel(), ROUND_KW) + 0.0})


def _empty_dispatch() -> pl.DataFrame:
    return pl.DataFrame(schema=DISPATCH_SCHEMA)


def _empty_instructions() -> pl.DataFrame:
    return pl.DataFrame(schema=INSTRUCTION_SCHEMA)


def instructions(result: ClearingResult) -> pl.DataFrame:
    """Net injection per aggregator, resource and interval (kW, positive = into the feeder).

    Bids without a resource are reported under their bid_id, so that every
    kW cleared has an addressee. Rows are sorted, so equal inputs give equal tables.
    """
    d = result.dispatch
    if not result.ok or d.height == 0:
        return _empty_instructions()
    return (d.with_columns(
        resource_id=pl.when(pl.col("resource_id") == "").then(pl.col("bid_id"))
        .otherwise(pl.col("resource_id")),
        kw=pl.when(pl.col("side") == "sell").then(pl.col("cleared_kw")).otherwise(-pl.col("cleared_kw")))
        .group_by(["aggregator_id", "resource_id", "interval"])
        .agg(pl.col("kw").sum().round(ROUND_KW))
        .with_columns(pl.col("kw") + 0.0)
        .sort(["aggregator_id", "resource_id", "interval"], nulls_last=False)
        .select(list(INSTRUCTION_SCHEMA)))


def _day_ahead_table(da: pl.DataFrame) -> pl.DataFrame:
    for col in ("bid_id", "interval", "bus", "side", "cleared_kw"):
        if col not in da.columns:
            raise InputError("day_ahead", col, "column is missing")
    if "held" in da.columns:
        da = da.filter(~pl.col("held").fill_null(False).cast(pl.Boolean))
    exprs = []
    for col, dtype in DISPATCH_SCHEMA.items():
        if col == "held":
            continue
        if col not in da.columns:
            default = {"aggregator_id": "", "resource_id": "", "tan_phi": 0.0}.get(col)
            exprs.append(pl.lit(default, dtype=dtype).alias(col))
        elif isinstance(dtype, pl.Datetime):
            exprs.append(_utc(pl.col(col), da.schema[col]).alias(col))
        else:
            e = pl.col(col).cast(dtype)
            if col in ("aggregator_id", "resource_id"):
                e = e.fill_null("")
            if col == "tan_phi":
                e = e.fill_null(0.0)
            exprs.append(e.alias(col))
    try:
        out = da.select(exprs)
    except pl.exceptions.PolarsError as exc:
        raise InputError("day_ahead", "?", str(exc).splitlines()[0]) from None
    bad = out.filter(pl.col("cleared_kw").is_null() | ~pl.col("side").is_in(["buy", "sell"]))
    if bad.height:
        raise InputError("day_ahead", "cleared_kw", "every position needs a side (buy/sell) and a cleared_kw")
    return out


def _held_rows(feeder: Feeder, book: BidBook, day_ahead: pl.DataFrame, da_minutes: float) -> pl.DataFrame:
    """Day-ahead positions held in each real-time interval, as dispatch rows (``held = true``).

    A position is a resource's (all its day-ahead bids) or a bid's where it names no
    resource. It is held in a real-time interval unless that interval has a bid of the
    same resource (or bid_id). A day-ahead interval of ``da_minutes`` contains the
    real-time intervals starting within it; an untimed day-ahead market contains all.
    """
    da = _day_ahead_table(day_ahead)
    topo = feeder.topology
    topo.bus_index_of(da["bus"], table="day_ahead")
    if da.height == 0:
        return _empty_dispatch()
    key = pl.when(pl.col("resource_id") != "").then(pl.lit("r:") + pl.col("resource_id")) \
        .otherwise(pl.lit("b:") + pl.col("bid_id"))
    da = da.with_columns(_key=key)
    rt = book.table.with_columns(_key=key).select("_key", "interval")
    starts = da["interval"]
    span = timedelta(minutes=da_minutes)
    out = []
    for iv in book.intervals:
        if iv is None:
            if starts.drop_nulls().n_unique() > 1:
                raise InputError("day_ahead", "interval", "the day-ahead market has several intervals: "
                                 "give the real-time bids and award an interval")
            inside = np.ones(da.height, dtype=bool)
        else:   # column-wise: a day-ahead award holds a position per bid and hour
            at = pl.lit(iv, dtype=starts.dtype)
            inside = da.select(pl.col("interval").is_null() | ((pl.col("interval") <= at)
                                                                & (at < pl.col("interval") + span)))
            inside = inside.to_series().to_numpy()
        same = pl.col("interval").is_null() if iv is None else pl.col("interval") == iv
        rebid = set(rt.filter(same)["_key"])
        rows = da.filter(pl.Series(inside) & ~pl.col("_key").is_in(list(rebid)))
        if rows.height:
            out.append(rows.with_columns(interval=pl.lit(iv, dtype=pl.Datetime("us", "UTC"))))
    if not out:
        return _empty_dispatch()
    return pl.concat(out).with_columns(held=pl.lit(True)).select(list(DISPATCH_SCHEMA))
