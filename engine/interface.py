"""Total-DSO net demand curves at the T-D interface.

``Q_t(lambda)`` is the optimal interface import of interval t when the ISO
price there is ``lambda`` (per MWh). For the LinDistFlow market it is a
non-increasing step function whose steps sit where congestion and voltage
limits put them, not at the raw bid prices.

The LP tracer of one interval and its exactness argument are in
:mod:`engine.tracer`; the loss-aware curve made of converged clearings in
:mod:`engine.losscurve`.

Intervals coupled by storage, EVs or ramps are traced one at a time with the
other intervals' ISO prices held at a forecast: such curves are conditional on
that forecast, and say so.

Branch-flow SOCP (:func:`trace_curve_socp`)
-------------------------------------------
With losses ``Q(lambda)`` is piecewise smooth, not a staircase. It is sampled
adaptively: because ``Q`` is non-increasing, ``Q(lambda)`` lies between the
imports found at the two samples around ``lambda``, so an interval whose
samples differ by at most ``2 max_error_kw`` is represented by their midpoint
with an error of at most ``max_error_kw`` (plus the conic solver's accuracy),
and intervals are halved until that holds or they are narrower than
``price_tol``: a jump of ``Q`` is then located to within ``price_tol``.

"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import time
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
from threadpoolctl import ThreadpoolController

from dsomarket.engine.bids import (BidBook, MarketRules, Resource, canonical, couples_intervals, for_interval,
                         resources_for_interval)
from dsomarket.engine.clearing import ClearingOptions, NodalMarket, _iv_column, socp_solver
from dsomarket.engine.errors import InputError
from dsomarket.engine.lindistflow import market_loads
from dsomarket.engine.losses import CURVE_HARD_CLEARINGS, CURVE_MAX_CLEARINGS, CURVE_UNWALKED_CLEARINGS, CurveCheck
from dsomarket.engine.network import S_BASE_KVA, Feeder

from dsomarket.engine.horizoncurve import HorizonCurves, trace_reduced
from dsomarket.engine.losscurve import MAX_SPLITS, UNWALKED_SPLITS, _FixedPoints, _trace_fixed_points
from dsomarket.engine import tracerjit
from dsomarket.engine.tracer import Q_TOL_MW, _merge_equal, _Probe, _trace_interval



@dataclass(frozen=True, eq=False)
class InterfaceCurve:
    """Net demand curve per interval of one T-D interface.

    Attributes
    ----------
    bands
        ``interval, price_low, price_high, import_kw``: on ``[price_low,
        price_high]`` the optimal import is ``import_kw`` (kW, positive = from
        the ISO). The bands of an interval are sorted by price, cover the
        market's floor to cap and share their boundary prices (no gap, no
        overlap); at a boundary the import is anything between its neighbours'.
    fixed_net_load_kw
        ``interval, fixed_kw``: the inflexible net load (fixed loads) below the interface.
    conditional
        True when intervals are coupled and each curve assumes ``forecast`` prices elsewhere.
    forecast
        ISO prices per interval assumed for the other intervals (per MWh).
    solves
        Number of solves used.
    seconds
        Wall time of the tracing.
    exact
        True for the LinDistFlow staircase; False for a sampled SOCP curve.
    max_error_kw
        Largest difference between ``import_kw`` and the true optimal import at any
        price more than ``price_tol`` away from a band boundary (0 for an exact curve,
        up to floating-point accuracy).
    price_tol
        Width (per MWh) within which a jump of a sampled curve is located (0 when exact).
    relaxation_gap
        Largest SOCP relaxation gap met while sampling (None for the LP).
    bound_flips
        Steps walked by bound flips without a solve (LP tracing).
    ac_check
        Loss-aware curves: ``bands``, the converged ``clearings`` they were made from,
        ``max_error_pct`` (bound on a band's import against the clearing at a price
        inside it) and ``max_residual_kw`` (a clearing's LP import against the AC power
        flow of its dispatch) (:class:`engine.losses.CurveCheck`); None otherwise.
    """

    bands: pl.DataFrame
    fixed_net_load_kw: pl.DataFrame
    conditional: bool
    forecast: np.ndarray
    solves: int
    seconds: float
    exact: bool = True
    max_error_kw: float = 0.0
    price_tol: float = 0.0
    relaxation_gap: float | None = None
    bound_flips: int = 0
    ac_check: dict | None = None

    def intervals(self) -> list:
        """The intervals of the curve in order (``[None]`` for a single-interval market)."""
        return sorted(set(self.bands["interval"].to_list()), key=_sort_key)

    def interval_bands(self, t: int) -> pl.DataFrame:
        """Bands of interval index ``t``, sorted by price."""
        return self.bands.filter(_iv_eq(self.intervals()[t])).sort("price_low")

    def import_at(self, t: int, price: float) -> float:
        """Optimal import (kW) of interval index t at an ISO price (the left band at a boundary)."""
        b = self.interval_bands(t)
        hi = b["price_high"].to_numpy()
        k = min(int(np.searchsorted(hi, price, side="left")), len(hi) - 1)
        return float(b["import_kw"][k])

    def summary(self) -> dict:
        """JSON-ready facts about the curve (what the ISO file and an operator need to know)."""
        return {
            "bands": self.bands.height, "solves": self.solves, "bound_flips": self.bound_flips,
            "seconds": self.seconds,
            "exact": self.exact, "max_error_kw": self.max_error_kw, "price_tol": self.price_tol,
            "conditional_on_forecast": self.conditional,
            "forecast_price": self.forecast.tolist() if self.conditional else None,
            "fixed_net_load_kw": self.fixed_net_load_kw["fixed_kw"].to_list(),
            "relaxation_gap": self.relaxation_gap,
            "ac_check": self.ac_check,
        }

    def iso_offer(self, max_segments: int = 10, memo: MutableMapping | None = None) -> tuple[pl.DataFrame, float]:
        """The curve in the ISO's units: MW and per MWh, at most ``max_segments`` per bid.

        Returns ``(table, area)``. The table has ``interval, kind, segment,
        price, mw`` with ``kind`` one of

        - ``fixed_demand``: MW imported at any price up to the cap (the import at the cap, when positive);
        - ``demand``: a demand bid step: ``mw`` more is bought when the ISO price is below ``price``;
        - ``supply``: an offer step: ``mw`` more is sold (exported) when the price is above ``price``;
        - ``fixed_supply``: MW exported at any price down to the floor (the export at the floor).

        Demand steps are numbered from the highest price down, supply steps from
        the lowest up, as ISOs list monotone bids. A step of the exact curve that
        crosses zero import is split between the demand and the supply side.
        When a side has more steps than allowed, neighbouring steps are merged so
        that the welfare area between the exact and the reduced curve (``area``,
        currency per hour summed over sides and intervals) is least
        (:func:`reduce_steps`); the quantities at segment ends stay on the exact
        curve, so every one of them is deliverable. The inflexible net load
        below the interface is :attr:`fixed_net_load_kw`, stated apart.

        ``memo``: each interval's offer depends on its own bands alone, so a caller that offers the same
        interval curve again (a kept interface's next market, :class:`engine.runs.KeptMarket`) passes a
        mapping that keeps it, keyed by a digest of those bands and ``max_segments``; the result is the same.
        """
        if max_segments < 1:
            raise InputError("options", "max_segments", "must be at least 1")
        rows: list[dict] = []
        area = 0.0
        for iv in self.intervals():
            grp = self.bands.filter(_iv_eq(iv)).sort("price_low")
            q = grp["import_kw"].to_numpy() / 1000.0
            hi = grp["price_high"].to_numpy()
            if memo is None:
                steps, errs = _interval_offer(q, hi, max_segments)
            else:
                key = hashlib.sha256(b"%d\0%b\0%b" % (max_segments, q.tobytes(), hi.tobytes())).digest()
                steps, errs = memo.get(key) or memo.setdefault(key, _interval_offer(q, hi, max_segments))
            rows.extend(_row(iv, *step) for step in steps)
            for err in errs:   # summed in the order of intervals and sides, as one pass over them sums it
                area += err
        schema = {"interval": pl.Datetime("us", "UTC"), "kind": pl.Utf8, "segment": pl.Int64,
                  "price": pl.Float64, "mw": pl.Float64}
        return pl.DataFrame(rows, schema=schema), area


def _interval_offer(q: np.ndarray, hi: np.ndarray, max_segments: int) -> tuple[list[tuple], tuple[float, float]]:
    """One interval's ISO offer steps ``(kind, segment, price, mw)`` and the area each side's reduction left
    (demand, supply), from its bands sorted by price: import ``q`` (MW) and upper price ``hi`` (per MWh)."""
    steps: list[tuple] = []
    prices = hi[:-1]                 # the step prices, ascending
    q_cap, q_floor = q[-1], q[0]
    if q_cap > 0:
        steps.append(("fixed_demand", 0, None, round(float(q_cap), 9)))
    if q_floor < 0:
        steps.append(("fixed_supply", 0, None, round(float(-q_floor), 9)))
    upper, lower = q[:-1], q[1:]      # import just below and just above each step price
    dem = np.clip(upper, 0, None) - np.clip(lower, 0, None)
    sup = np.clip(-lower, 0, None) - np.clip(-upper, 0, None)
    errs = []
    for kind, w in (("demand", dem), ("supply", sup)):
        keep = w > Q_TOL_MW
        seg_p, seg_w, err = reduce_steps(prices[keep], w[keep], max_segments)
        errs.append(err)
        order = np.argsort(-seg_p if kind == "demand" else seg_p, kind="stable")
        steps.extend((kind, k + 1, float(seg_p[i]), round(float(seg_w[i]), 9)) for k, i in enumerate(order))
    return steps, (errs[0], errs[1])


def _row(interval, kind, segment, price, mw) -> dict:
    return {"interval": interval, "kind": kind, "segment": segment, "price": price, "mw": mw}


def _sort_key(iv):
    return (iv is not None, iv)


def _iv_eq(iv) -> pl.Expr:
    return pl.col("interval").is_null() if iv is None else pl.col("interval") == iv


# -- reduction to the ISO's segment cap ------------------------------------------------------------

def reduce_steps(prices: np.ndarray, widths: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Merge a staircase's steps into at most ``k`` with the least area between the two curves.

    Parameters
    ----------
    prices
        Step prices, ascending (per MWh).
    widths
        Quantity of each step (MW), positive.
    k
        Most segments allowed.

    Returns
    -------
    (prices, widths, area)
        A merged segment keeps the total quantity of its steps (so its ends lie
        on the exact curve) at the weighted median of their prices, which
        minimises ``sum w |p - p_seg|`` within it; a dynamic programme over
        contiguous groups minimises the total, ``area`` (currency per hour).

    Notes
    -----
    ``E_L(j) = min_i E_{L-1}(i - 1) + cost(i, j)``, the least area of steps
    ``0..j`` in exactly ``L`` segments, with ``cost(i, j)`` the weighted-median
    L1 cost of steps ``i..j`` (1-D weighted k-median). That cost satisfies the
    quadrangle inequality, so the best start ``i`` is non-decreasing in ``j`` and
    each level is solved by divide and conquer over ``j`` in ``O(n log n)``, in
    one compiled loop (:func:`engine.tracerjit.reduce_segments`): a curve of
    5,000 steps reduces in milliseconds. Splitting a segment never adds area, so
    exactly ``min(k, n)`` segments are used.
    """
    prices = np.asarray(prices, dtype=float)
    widths = np.asarray(widths, dtype=float)
    n = len(prices)
    if k < 1:
        raise InputError("options", "max_segments", "must be at least 1")
    if n <= k:
        return prices.copy(), widths.copy(), 0.0
    wc = np.concatenate([[0.0], np.cumsum(widths)])
    pc = np.concatenate([[0.0], np.cumsum(widths * prices)])
    first, median, area = tracerjit.reduce_segments(np.ascontiguousarray(prices), wc, pc, k)
    last = np.append(first[1:] - 1, n - 1)
    return prices[median], wc[last + 1] - wc[first], float(area)



def trace_curve(feeder: Feeder, book: BidBook, rules: MarketRules = MarketRules(),
                resources: tuple[Resource, ...] = (), options: ClearingOptions = ClearingOptions(),
                forecast=None, load_p_kw: np.ndarray | None = None,
                load_q_kvar: np.ndarray | None = None, max_solves: int | None = None,
                progress: Callable[[int, int], None] | None = None, intervals: Sequence[int] | None = None,
                market: NodalMarket | None = None, **socp_options) -> InterfaceCurve:
    """Trace ``Q_t(lambda)`` from ``rules.price_floor`` to ``rules.price_cap``.

    Parameters
    ----------
    feeder, book, rules, resources
        The market, as for :func:`engine.clearing.clear`.
    options
        ``formulation = "lossaware"`` (default) makes the curve of converged clearings
        (:func:`_trace_fixed_points`); ``"lossless"`` (alias ``"lindistflow"``) traces
        the exact staircase of the lossless LP; ``"socp"`` samples the branch-flow
        curve (:func:`trace_curve_socp`, which takes ``socp_options``).
    forecast
        ISO price per interval (per MWh) held in the *other* intervals while one
        is traced; only matters when resources couple intervals. Defaults to the
        midpoint of floor and cap.
    load_p_kw, load_q_kvar
        Fixed withdrawal per bus and interval (n, T); defaults to the feeder's loads.
    max_solves
        Safety limit on solves per interval (default ``4 * bids + 1000``); the loss-aware curve also
        spends at most ``losses.CURVE_MAX_CLEARINGS`` clearings an interval, up to ``losses.CURVE_HARD_CLEARINGS``
        where its stated bound would otherwise exceed ``losses.CURVE_TOL`` (``losses.CURVE_UNWALKED_CLEARINGS``
        where resources couple the intervals: that curve is not walked; see :func:`_trace_fixed_points`),
        plus at most ``losscurve.REPAIR_CLEARINGS`` fresh ones for each step whose walked bands fresh clearings
        redraw (:meth:`engine.losscurve._FixedPoints.repair`).
    progress
        Called as ``progress(done, total)`` after each interval is traced (the
        caller decides whether and where to show it; the engine prints nothing).
    intervals
        Interval indices to trace (default all): the curve then holds only their bands
        and fixed loads. Each interval's curve is the same whichever others are traced
        with it (:func:`trace_intervals`), so a caller may trace parts of the horizon in
        separate processes and put them together with :func:`join_curves`.
    market
        The lossless market of these same inputs, built and (typically) solved: the clearing's, at the ISO
        price. A curve of one interval is then traced on it, from its optimal basis, instead of on a model
        built and solved from no basis (the same bands, solves and bound flips on every feeder checked, one
        model build and one cold solve fewer); its ISO price and basis are put back after, so it re-clears
        as before. Ignored for a loss-aware or SOCP market and for more than one interval (each interval is
        then traced on a model of its own).

    Returns
    -------
    InterfaceCurve
        Bands per interval covering floor to cap. Raises :class:`InputError`
        when the market is infeasible (no curve exists at any price).

    Notes
    -----
    The method and its exactness argument are in :mod:`engine.tracer`. Price
    and quantity tolerances: imports within ``Q_TOL_MW`` (1 mW) are one
    quantity, and a step is placed at the tangent intersection, i.e. to
    floating-point accuracy of the solver's primal values.
    """
    if options.formulation == "socp":
        if intervals is not None:
            raise TypeError("the sampled SOCP curve traces every interval")
        return trace_curve_socp(feeder, book, rules, resources, options, forecast=forecast, progress=progress,
                                **socp_options)
    if socp_options:
        raise TypeError(f"unexpected options for an LP curve: {sorted(socp_options)}")
    t0 = time.perf_counter()
    book = canonical(book, feeder, rules)   # the same file whatever the order of the bids
    T = book.n_interval
    fc = _forecast(forecast, rules, T)
    opts = ClearingOptions(formulation=options.formulation, polygon_sides=options.polygon_sides, ac_check=False,
                           time_limit=options.time_limit)
    if load_p_kw is None:
        load_p_kw, load_q_kvar = market_loads(feeder, book)
    coupled = couples_intervals(book, resources)
    limit = max_solves if max_solves is not None else 4 * book.n + 1000
    todo = _intervals(intervals, T)
    # One BLAS thread: the sparse LU solves are small, and idle OpenBLAS threads spinning
    # against HiGHS on a loaded machine made each of them ten times slower.
    with _one_blas_thread():
        if coupled:
            shared = NodalMarket(feeder, book, fc, rules, resources, opts, load_p_kw, load_q_kvar)
            rows, solves, flips, check = trace_intervals(shared, todo, fc, rules, limit, progress)
        else:
            # Uncoupled intervals are separate problems: tracing each on its own model
            # keeps every solve T times smaller than the whole horizon's.
            def alone(t: int) -> tuple:
                if market is not None and T == 1 and not market.lossaware:
                    return _traced_on(market, rules, limit)
                one = slice(t, t + 1)
                own = NodalMarket(feeder, for_interval(book, t), fc[one], rules,
                                  resources_for_interval(resources, book.intervals[t]), opts,
                                  load_p_kw[:, one], load_q_kvar[:, one])
                return trace_market_interval(own, 0, rules, limit)

            rows, solves, flips, check = _each(todo, alone, progress)
    return InterfaceCurve(bands=_bands_table(book, rows), fixed_net_load_kw=_fixed_table(book, load_p_kw, todo),
                          conditional=coupled, forecast=fc, solves=solves,
                          seconds=time.perf_counter() - t0, bound_flips=flips,
                          ac_check=None if check is None else dataclasses.asdict(check))



_BLAS: ThreadpoolController | None = None
"""The process's BLAS libraries (:func:`_one_blas_thread`), found once."""


def _one_blas_thread():
    """A context in which the BLAS libraries run one thread (restored after).

    ``threadpool_limits`` looks the loaded libraries up afresh on every call (it walks the process's shared
    objects and reads their files): 1.1 ms of wall time a curve, 2 % of a 1,000-bus / 1,000-bid trace. They
    are found once here instead, after SciPy's sparse LU (which the tracer loads lazily, with SciPy's own
    BLAS) is imported, so the controller holds every BLAS a curve uses."""
    global _BLAS
    if _BLAS is None:
        import scipy.sparse.linalg  # noqa: F401  (its BLAS loaded, for the controller to find)

        _BLAS = ThreadpoolController()
    return _BLAS.limit(limits=1, user_api="blas")


def _traced_on(market: NodalMarket, rules: MarketRules, max_solves: int) -> tuple:
    """:func:`trace_market_interval` of a one-interval market kept by its caller, from the basis it holds;
    the market's ISO price and basis are restored after, so that its next solve starts where it would have."""
    basis = market.solver.held_basis()
    try:
        return trace_market_interval(market, 0, rules, max_solves)
    finally:
        market.set_iso_price(market.iso_price)
        market.solver.start_from(basis)


def trace_intervals(market, intervals: Sequence[int], forecast: np.ndarray, rules: MarketRules, max_solves: int,
                    progress: Callable[[int, int], None] | None = None) -> tuple[list, int, int, CurveCheck | None]:
    """The curves of ``intervals`` of one horizon market whose intervals are coupled, each conditional on
    ``forecast`` (per MWh) in the others: ``(rows, solves, bound flips, check)`` with rows ``(t, price_low,
    price_high, import_kw)``.

    Every interval's trace starts from the same state, so its curve does not depend on which
    intervals were traced before it (or in another process). On the lossless LP the other
    intervals' networks that no price of the traced one can load are summed away first
    (:mod:`engine.horizoncurve`: exact, and each basis change is then about one interval's
    network), each curve on its own such model; with none to sum, each trace starts from the
    basis optimal at the forecast, solved once here. On the loss-aware model the horizon is
    cleared once at the forecast, and each curve starts from that fixed point with only its own
    interval re-linearised (:class:`engine.runs.LiveInterval`). ``market`` is a
    :class:`~engine.clearing.NodalMarket` or an :class:`engine.runs.CoupledMarket`.
    """
    start = horizon = None
    settled = 0     # solves of the loss-aware horizon's clearing at the forecast
    if market.lossaware:
        from dsomarket.engine.runs import LiveInterval   # engine.runs builds on this module

        market.set_iso_price(forecast)
        market = LiveInterval.of(market)
        sol = market.settle()
        if not sol.ok:
            raise InputError("market", "iso_price", f"the market is not solvable ({sol.status}) at the ISO price "
                             "forecast: no interface curve exists")
        settled = market.convergence["iterations"]
    else:
        market.set_iso_price(forecast)
        horizon = HorizonCurves(market)
        if not horizon.summed:
            horizon = None
            if market.solver.run() == "optimal":      # else no price clears it: the trace says so
                start = market.solver.held_basis()

    def one(t: int) -> tuple:
        market.set_iso_price(forecast)
        if market.lossaware:
            market.around(t)
        elif start is not None:
            market.solver.start_from(start)
        return trace_market_interval(market, t, rules, max_solves, horizon)

    rows, solves, flips, check = _each(intervals, one, progress)
    return rows, solves + (start is not None) + settled, flips, check


def _each(intervals: Sequence[int], trace: Callable[[int], tuple],
          progress: Callable[[int, int], None] | None) -> tuple[list, int, int, CurveCheck | None]:
    """``trace(t)`` (:func:`trace_market_interval`'s answer) of each interval, gathered as rows
    ``(t, price_low, price_high, import_kw)``, solves, bound flips and the loss-aware check."""
    rows, solves, flips = [], 0, 0
    check: CurveCheck | None = None
    for done, t in enumerate(intervals, 1):
        bands, n_solves, n_flips, band_check = trace(t)
        solves += n_solves
        flips += n_flips
        check = _merged(check, band_check)
        rows += [(t, lo, hi, q) for lo, hi, q in bands]
        if progress is not None:
            progress(done, len(intervals))
    return rows, solves, flips, check


def join_curves(curves: Sequence[InterfaceCurve], forecast: np.ndarray | None = None) -> InterfaceCurve:
    """One curve of the intervals of several (traced apart: other intervals, other network runs).

    ``forecast``: the whole horizon's (per MWh; default the first curve's). Solves, flips and
    seconds add up (seconds are the parts' sum, not the wall time when they ran side by side).
    """
    if len(curves) == 1 and forecast is None:
        return curves[0]
    checks = [CurveCheck(**c.ac_check) for c in curves if c.ac_check is not None]
    gaps = [c.relaxation_gap for c in curves if c.relaxation_gap is not None]
    check = None
    for one in checks:
        check = _merged(check, one)
    return InterfaceCurve(
        bands=_by_interval([c.bands for c in curves]),
        fixed_net_load_kw=_by_interval([c.fixed_net_load_kw for c in curves]),
        conditional=any(c.conditional for c in curves),
        forecast=curves[0].forecast if forecast is None else forecast,
        solves=sum(c.solves for c in curves), seconds=sum(c.seconds for c in curves),
        exact=all(c.exact for c in curves), max_error_kw=max(c.max_error_kw for c in curves),
        price_tol=max(c.price_tol for c in curves), relaxation_gap=max(gaps) if gaps else None,
        bound_flips=sum(c.bound_flips for c in curves),
        ac_check=None if check is None else dataclasses.asdict(check))


def _by_interval(frames: list[pl.DataFrame]) -> pl.DataFrame:
    """Rows of the parts in interval order, each interval's in its part's order."""
    return pl.concat(frames, how="vertical_relaxed").sort("interval", maintain_order=True)


def _merged(check: CurveCheck | None, other: CurveCheck | None) -> CurveCheck | None:
    if other is None:
        return check
    return other if check is None else check.merged(other)


def _intervals(intervals: Sequence[int] | None, T: int) -> list[int]:
    if intervals is None:
        return list(range(T))
    todo = sorted({int(t) for t in intervals})
    if not todo or any(not 0 <= t < T for t in todo):
        raise InputError("options", "intervals", f"must be interval indices 0..{T - 1} (got {list(intervals)})")
    return todo


def trace_market_interval(market, t: int, rules: MarketRules, max_solves: int,
                          horizon: HorizonCurves | None = None
                          ) -> tuple[list[tuple[float, float, float]], int, int, CurveCheck | None]:
    """Bands ``(price_low, price_high, import_kw)`` of interval ``t`` of a built market, floor to cap.

    ``market`` is a :class:`~engine.clearing.NodalMarket` or an :class:`engine.runs.CoupledMarket`
    (a horizon whose network changes), with the other intervals' ISO prices set to the forecast.
    The loss-aware market's curve is made of its converged clearings (:func:`_trace_fixed_points`),
    the lossless LP's is its exact staircase (:func:`_trace_interval`). Returns the bands, the
    solves, the bound flips, and the loss-aware curve's check (None for the lossless LP).
    ``horizon``: the lossless ``market``'s :class:`engine.horizoncurve.HorizonCurves`, to trace
    on the horizon with the networks it can sum away summed (the same curve, smaller bases).
    """
    if horizon is not None and not market.lossaware:
        return (*trace_reduced(horizon, t, rules.price_floor, rules.price_cap, max_solves), None)
    if market.lossaware:
        fixed = _FixedPoints(market, t)
        # A horizon's curve (no one-feeder NodalMarket) is not walked: its anchors are clearings too.
        walked = isinstance(market, NodalMarket)
        budget, splits = (CURVE_MAX_CLEARINGS, MAX_SPLITS) if walked else (CURVE_UNWALKED_CLEARINGS, UNWALKED_SPLITS)
        hard = CURVE_HARD_CLEARINGS if walked else budget
        bands, check = _trace_fixed_points(fixed, rules.price_floor, rules.price_cap, min(max_solves, budget), splits,
                                           min(max_solves, hard))
        return bands, fixed.solves, 0, check
    probe = _Probe(market, t)
    return _trace_interval(probe, rules.price_floor, rules.price_cap, max_solves), probe.solves, probe.flips, None


def _forecast(forecast, rules: MarketRules, T: int) -> np.ndarray:
    if forecast is None:
        return np.full(T, (rules.price_floor + rules.price_cap) / 2.0)
    fc = np.broadcast_to(np.asarray(forecast, dtype=float), (T,)).copy()
    if not np.all(np.isfinite(fc)):
        raise InputError("options", "forecast", "must be finite")
    return fc


def _bands_table(book: BidBook, rows) -> pl.DataFrame:
    """Bands as a table: prices rounded to 1e-9 per MWh (a step found through a chain of bound
    flips carries the rounding of its sums), imports to 1e-6 kW; a band that rounding
    closes is dropped, its neighbours meeting at its price."""
    t_idx = np.array([r[0] for r in rows], dtype=np.int64)
    low = np.round(np.array([r[1] for r in rows], dtype=float), 9) + 0.0
    high = np.round(np.array([r[2] for r in rows], dtype=float), 9) + 0.0
    keep = high > low
    return pl.DataFrame({
        "interval": _iv_column(book.intervals, t_idx[keep]),
        "price_low": low[keep],
        "price_high": high[keep],
        "import_kw": np.round(np.array([r[3] for r in rows], dtype=float)[keep], 6) + 0.0,
    })


def _fixed_table(book: BidBook, load_p_kw: np.ndarray, intervals: Sequence[int] | None = None) -> pl.DataFrame:
    idx = np.arange(book.n_interval) if intervals is None else np.asarray(intervals, dtype=np.int64)
    return pl.DataFrame({"interval": _iv_column(book.intervals, idx), "fixed_kw": load_p_kw.sum(axis=0)[idx]})


# -- sampled SOCP curve ----------------------------------------------------------------------------

def trace_curve_socp(feeder: Feeder, book: BidBook, rules: MarketRules = MarketRules(),
                     resources: tuple[Resource, ...] = (), options: ClearingOptions = ClearingOptions(),
                     forecast=None, max_error_kw: float = 1.0, price_tol: float = 0.01,
                     solver: str = "auto", max_solves: int = 5000, min_price: float | None = 1.0,
                     progress: Callable[[int, int], None] | None = None) -> InterfaceCurve:
    """Sample the branch-flow SOCP's ``Q_t(lambda)`` with a stated maximum error.

    Parameters
    ----------
    max_error_kw
        Largest error (kW) of a band's import against the SOCP's optimal import
        at any price farther than ``price_tol`` from a band boundary where the
        curve jumps.
    price_tol
        Price width (per MWh) within which a jump is located.
    solver
        ``"ecos"``, ``"clarabel"`` or ``"auto"`` (``options.socp_solver``, else ECOS up to
        500 buses and Clarabel above); a sample the first solver leaves inaccurate is
        solved again with the other.

    Returns
    -------
    InterfaceCurve
        ``exact = False``, with ``max_error_kw``, ``price_tol`` and the largest
        relaxation gap met. A band ``[low, high]`` with import ``q`` means: for
        every price inside it, the SOCP's import is within ``max_error_kw`` of ``q``
        (up to the conic solver's accuracy, about 1e-6 of the feeder's flows).

    Notes
    -----
    The model is built once (:func:`engine.socp.build`) and re-solved with the
    ISO price as a cvxpy parameter (DPP), so only the first solve compiles.
    Because ``Q`` is non-increasing, the import at any price between two samples
    lies between theirs: an interval whose samples differ by at most
    ``2 max_error_kw`` is one band at their midpoint; a wider one is halved,
    down to ``price_tol``.
    """
    import cvxpy as cp

    from dsomarket.engine import lindistflow, socp

    if not (max_error_kw > 0 and math.isfinite(max_error_kw)):
        raise InputError("options", "max_error_kw", "must be a positive number")
    if not (price_tol > 0 and math.isfinite(price_tol)):
        raise InputError("options", "price_tol", "must be a positive number")
    t0 = time.perf_counter()
    T = book.n_interval
    fc = _forecast(forecast, rules, T)
    loads = lindistflow.market_loads(feeder, book)
    # Build at the largest price in magnitude, so the model's cost scale covers the whole sweep.
    span = max(abs(rules.price_floor), abs(rules.price_cap))
    model = socp.build(feeder, book, np.full(T, span), rules, resources, *loads)
    var = model.variables
    scale = model.cost_scale
    mva = getattr(model, "power_base_kva", S_BASE_KVA) / S_BASE_KVA
    price = cp.Parameter(T, name="iso_price")
    bid_cost = -book.withdraw_sign * book.price * mva / scale
    cost = bid_cost @ var["bid"] + (mva / scale) * (price @ var["import_p"])
    if "shed" in var:
        cost = cost + rules.value_of_lost_load * mva / scale * cp.sum(var["shed"])
    problem = cp.Problem(cp.Minimize(cost), list(model.constraints.values()))
    if solver == "auto":
        solver = socp_solver(feeder, options)
    if solver not in ("ecos", "clarabel"):
        raise InputError("options", "solver", f"must be auto, ecos or clarabel (got {solver!r})")
    solvers = ["ecos", "clarabel"] if solver == "ecos" else ["clarabel", "ecos"]
    coupled = couples_intervals(book, resources)
    tol_mw = max_error_kw / S_BASE_KVA
    lowest = rules.price_floor if min_price is None else max(rules.price_floor, float(min_price))
    if lowest >= rules.price_cap:
        raise InputError("options", "min_price", "must lie below the price cap")
    gap = 0.0
    solves = 0
    rows = []

    for t in range(T):
        prices = fc.copy()

        def sample(lam: float, t: int = t, prices: np.ndarray = prices) -> float:
            nonlocal gap, solves
            prices[t] = lam
            price.value = prices
            solves += 1
            for name in solvers:   # the other conic solver where the first stops inaccurate
                status, _ = socp.run(problem, name)
                if status == "optimal":
                    break
            if status != "optimal":
                raise InputError("market", "iso_price", f"the SOCP is {status} at an ISO price of {lam:g} "
                                 f"in interval {t}: no interface curve exists")
            gap = max(gap, socp.relaxation_gap(model, feeder)[0])
            return float(var["import_p"].value[t]) * mva

        pts = {lowest: sample(lowest), rules.price_cap: sample(rules.price_cap)}
        todo = [(lowest, rules.price_cap)]
        while todo:
            a, b = todo.pop()
            if pts[a] - pts[b] <= 2 * tol_mw or b - a <= price_tol:
                continue
            if solves >= max_solves:
                raise RuntimeError(f"SOCP curve: more than {max_solves} solves")
            mid = (a + b) / 2.0
            pts[mid] = sample(mid)
            todo += [(mid, b), (a, mid)]
        xs = sorted(pts)
        qs = [pts[p] for p in xs]
        # Monotone envelope: solver noise must not make the curve rise.
        qs = list(np.minimum.accumulate(np.array(qs)))
        bands: list[list[float]] = []
        for (a, b), (qa, qb) in zip(zip(xs[:-1], xs[1:]), zip(qs[:-1], qs[1:])):
            if qa - qb <= 2 * tol_mw:
                bands.append([a, b, (qa + qb) / 2.0])
            else:  # a jump located within price_tol
                mid = (a + b) / 2.0
                bands += [[a, mid, qa], [mid, b, qb]]
        rows += [(t, lo, hi, q * S_BASE_KVA) for lo, hi, q in _merge_equal(bands)]
        if progress is not None:
            progress(t + 1, T)
    return InterfaceCurve(bands=_bands_table(book, rows), fixed_net_load_kw=_fixed_table(book, loads[0]),
                          conditional=coupled, forecast=fc, solves=solves,
                          seconds=time.perf_counter() - t0, exact=False, max_error_kw=max_error_kw,
                          price_tol=price_tol, relaxation_gap=gap)
