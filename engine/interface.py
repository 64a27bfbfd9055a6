"""Total-DSO net demand curves at the T-D interface.

``Q_t(lambda)`` is the optimal interface import of interval t when the ISO
price there is ``lambda`` (per MWh). For the LinDistFlow market it is a
non-increasing step function whose steps sit where congestion and voltage
limits put them, not at the raw bid prices.

Exact tracing (:func:`trace_curve`)
-----------------------------------
Let ``f(lambda) = min_x c^T x + lambda P0`` be the market's optimal cost as a
function of the ISO price: it is concave and piecewise linear, and its slope
on each piece is the optimal import, so the kinks of ``f`` are the steps of
``Q``. Every solve at a price ``lambda_i`` gives a tangent
``g_i + q_i lambda`` (``q_i`` the import found, ``g_i = f(lambda_i) - q_i
lambda_i`` the bid part of the cost). Between two solves with different
imports ``q_a > q_b`` the two tangents meet at

    ``lambda* = (g_b - g_a) / (q_a - q_b)``.

If ``f`` touches both tangents there, ``lambda*`` is the only step between the
two solves; otherwise a solve at ``lambda*`` finds a new import strictly
between ``q_a`` and ``q_b`` and both halves are searched again (Eisner and
Severance's method for parametric programmes). That a tangent still holds at
``lambda*`` is certified without a solve where possible: after every solve the
range of ISO prices over which HiGHS's optimal basis stays optimal is computed
for the one column ``P0`` (a BTRAN of its row of the basis inverse and a ratio
test over the reduced costs: the single-column version of ``getRanging``,
which costs about 1,000 times more on a 1,000-bus feeder). Where the ranges of
two neighbouring solves meet, the one step between them lies where they meet,
located by the ratio test (more accurate than the tangents). A certificate
that fails only costs a solve; the answer never depends on it.

Between two basis changes the tracer is a parametric simplex method of its own
on the basis HiGHS found: the basis is factorised once (sparse LU of its *core*,
the rows whose logical is nonbasic against the basic columns), the duals are
affine in the price, ``y(lambda) = y0 + lambda z``, and so is every reduced cost,
so all the prices at which a bid switches on or off in that basis come from one
vectorised ratio, sorted. A bid switching is a *bound flip*: it keeps the basis
dual feasible, and the flips' moves of the basic values are solved together and
summed cumulatively, so the first flip after which a basic value (a line, a
voltage, a partly cleared bid, a battery) would leave its bounds is found
without a per-flip solver call or Python loop. That flip, or a limit whose dual
reaches zero, is a real pivot: the tracer takes it itself (ratio test, new basis
factorised) and keeps it only if the new basis is optimal at that price (primal
and dual feasible); otherwise a warm HiGHS solve takes over. On a 1,000-bus
feeder with 10,000 bids priced to the cent this traces 5,245 steps with one or
two HiGHS solves and some 200 own pivots (``benchmarks/bench_curve.py``). Each
step is located to floating-point accuracy, not to a price grid.

Every quantity on the curve is a clearing of the full network model, so it is
deliverable; quantities between two steps are deliverable too, because the
feasible interface imports of an LP form an interval, and the re-clear's price
there is the step's price.

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

Loss-aware LP (:func:`_trace_fixed_points`)
-------------------------------------------
The loss-aware market is successive LP, so its ``Q(lambda)`` is what
``clear`` converges to at each price, and the curve is made of those
clearings. A clearing whose dispatch is a vertex of the LP linearised at it
holds over the price range of that LP's optimal basis (the linearisation has
the AC equations' values and gradients there, so their optimality conditions
agree): a flat band, exact. Between two such ranges a bid may clear part-way
because of its own effect on the losses, and the import then moves with the
price: that stretch is sampled by further clearings (Eisner and Severance's
tangents, as above) until neighbouring imports differ by at most twice
``losses.CURVE_REL_TOL`` (one band at their middle).

Clearings are the expensive part (each is several HiGHS solves on swapped
matrices), so the curve walks from one fixed point to the next without them
where it can (:meth:`_FixedPoints.walk`): on a vertex's own linearisation the
tracer's bound flips (or its own pivot) say which bids switch past the end of
its range; the dispatch with them switched is re-linearised at its AC power
flow and the same basis solved there, until it is its own linearisation's basic
solution (:meth:`_FixedPoints.anchor`); that basis's price range there is the
next fixed point's, exactly as for a clearing's. Where one bid then clears
part-way (a stretch), the bid is anchored at evenly spaced quantities, each of
which fixes the price at which it is a fixed point. Where walking fails (the
basis leaves a bound, or is optimal at no price) the clearings above take over.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import polars as pl
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from dsomarket.engine import losses
from dsomarket.engine.bids import (BidBook, MarketRules, Resource, canonical, couples_intervals, for_interval,
                         resources_for_interval)
from dsomarket.engine.clearing import ClearingOptions, NodalMarket, _iv_column, socp_solver
from dsomarket.engine.errors import InputError
from dsomarket.engine.lindistflow import market_loads
from dsomarket.engine.results import net_withdrawal
from dsomarket.engine.losses import (CURVE_ABS_KW, CURVE_MAX_DEPTH, CURVE_PRICE_TOL, CURVE_REL_TOL,
                                      STEP_TOL_KW, CurveCheck)
from dsomarket.engine.network import S_BASE_KVA, Feeder

Q_TOL_MW = 1e-6
"""Imports (MW) closer than this are one quantity: 1 W, far below any bid. HiGHS's vertices are
accurate to its primal feasibility tolerance (1e-7 on the scaled model); near-optimal vertices at
a price can differ by some 1e-7 MW, which is not a step of the curve."""
P_REL_TOL = 1e-9
"""Relative price tolerance within which a tangent intersection coincides with a solved price."""
CERT_REL_TOL = 1e-7
"""Relative price tolerance of a ranging certificate (a missed band would be narrower than this)."""
_ALPHA_TOL = 1e-9
_PRIMAL_TOL = 1e-7
"""Primal feasibility tolerance (MW, pu) of a basis the tracer settles itself, as HiGHS's."""
_DUAL_TOL = 1e-7
"""Dual feasibility tolerance (per MWh) of a basis whose price range the tracer computes itself."""
_ANCHOR_ITERATIONS = 8
"""Re-linearisations of one basis's dispatch before :meth:`_FixedPoints.anchor` gives up (it takes one or two)."""
_MAX_STALL = 50
"""Own pivots in a row at one price before a warm HiGHS solve takes over (a guard against cycling)."""


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

    def iso_offer(self, max_segments: int = 10) -> tuple[pl.DataFrame, float]:
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
        """
        if max_segments < 1:
            raise InputError("options", "max_segments", "must be at least 1")
        rows: list[dict] = []
        area = 0.0
        for iv in self.intervals():
            grp = self.bands.filter(_iv_eq(iv)).sort("price_low")
            q = grp["import_kw"].to_numpy() / 1000.0
            hi = grp["price_high"].to_numpy()
            prices = hi[:-1]                 # the step prices, ascending
            q_cap, q_floor = q[-1], q[0]
            if q_cap > 0:
                rows.append(_row(iv, "fixed_demand", 0, None, round(float(q_cap), 9)))
            if q_floor < 0:
                rows.append(_row(iv, "fixed_supply", 0, None, round(float(-q_floor), 9)))
            upper, lower = q[:-1], q[1:]      # import just below and just above each step price
            dem = np.clip(upper, 0, None) - np.clip(lower, 0, None)
            sup = np.clip(-lower, 0, None) - np.clip(-upper, 0, None)
            for kind, w in (("demand", dem), ("supply", sup)):
                keep = w > Q_TOL_MW
                seg_p, seg_w, err = reduce_steps(prices[keep], w[keep], max_segments)
                area += err
                order = np.argsort(-seg_p if kind == "demand" else seg_p, kind="stable")
                for k, i in enumerate(order):
                    rows.append(_row(iv, kind, k + 1, float(seg_p[i]), round(float(seg_w[i]), 9)))
        schema = {"interval": pl.Datetime("us", "UTC"), "kind": pl.Utf8, "segment": pl.Int64,
                  "price": pl.Float64, "mw": pl.Float64}
        return pl.DataFrame(rows, schema=schema), area


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
    each level is solved by divide and conquer over ``j`` in ``O(n log n)``
    (all the midpoints of one recursion depth in one vectorised batch): a curve
    of 5,000 steps reduces in well under a second. Splitting a segment never
    adds area, so exactly ``min(k, n)`` segments are used.
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

    def median(i: np.ndarray, j: np.ndarray) -> np.ndarray:
        half = wc[i] + (wc[j + 1] - wc[i]) / 2.0
        return np.clip(np.searchsorted(wc, half, side="left") - 1, i, j)

    def cost(i: np.ndarray, j: np.ndarray) -> np.ndarray:
        m = median(i, j)
        pm = prices[m]
        left = pm * (wc[m + 1] - wc[i]) - (pc[m + 1] - pc[i])
        right = (pc[j + 1] - pc[m + 1]) - pm * (wc[j + 1] - wc[m + 1])
        return np.maximum(left, 0.0) + np.maximum(right, 0.0)

    all_j = np.arange(n)
    best = cost(np.zeros(n, dtype=np.int64), all_j)     # E_1
    starts: list[np.ndarray] = []
    for level in range(1, k):                            # E_{level+1}, defined for j >= level
        new = np.full(n, np.inf)
        opt = np.zeros(n, dtype=np.int64)
        # Open tasks (j_lo, j_hi, i_lo, i_hi) as arrays: one recursion depth of all tasks per pass.
        jl, jh, il, ih = (np.array([v]) for v in (level, n - 1, level, n - 1))
        while len(jl):
            mids = (jl + jh) // 2
            counts = np.minimum(ih, mids) - il + 1
            owner = np.repeat(np.arange(len(jl)), counts)
            first = np.cumsum(counts) - counts
            i = il[owner] + (np.arange(counts.sum()) - np.repeat(first, counts))
            vals = best[i - 1] + cost(i, mids[owner])
            seg_min = np.minimum.reduceat(vals, first)
            # Leftmost minimum of each task: the first candidate reaching its task's minimum.
            pos = np.nonzero(vals <= seg_min[owner])[0]
            o = owner[pos]
            keep = np.concatenate([[True], o[1:] != o[:-1]])
            arg = np.full(len(jl), -1)
            arg[o[keep]] = i[pos[keep]]
            new[mids] = seg_min
            opt[mids] = arg
            left, right = jl <= mids - 1, mids + 1 <= jh
            jl, jh, il, ih = (np.concatenate([jl[left], mids[right] + 1]), np.concatenate([mids[left] - 1, jh[right]]),
                              np.concatenate([il[left], arg[right]]), np.concatenate([arg[left], ih[right]]))
        starts.append(opt)
        best = new
    segments, j = [], n - 1
    for level in range(k - 1, 0, -1):
        i = int(starts[level - 1][j])
        segments.append((i, j))
        j = i - 1
    segments.append((0, j))
    segments.reverse()
    seg_p = np.array([prices[int(median(np.array(i), np.array(j)))] for i, j in segments])
    seg_w = np.array([wc[j + 1] - wc[i] for i, j in segments])
    return seg_p, seg_w, float(best[n - 1])


# -- exact tracing on the LP -----------------------------------------------------------------------

@dataclass(frozen=True)
class _Sample:
    """A price range ``[low, high]`` on which one import is optimal, with its tangent.

    ``price`` lies in the range (a solved price, or the end of the range a bound
    flip starts at); ``q`` is the import (MW) and ``g`` the bid part of the cost
    (``f(lambda) = g + q lambda`` on the range).
    """

    price: float
    q: float
    g: float
    low: float
    high: float


@dataclass
class _Basis:
    """One optimal basis, factorised for the parametric steps: values, and the nonbasic reduced costs that block it.

    ``up`` and ``down`` are the nonbasic variables whose reduced cost reaches
    zero as the ISO price rises (falls), with the price change needed: arrays
    ``(delta, kind, index)`` with kind 0 a column, 1 a row, unordered
    (:func:`_first_events` orders the first few).

    The basis is held in its *core* form: the rows whose logical is nonbasic
    (``active``: balances, voltage drops, binding limits) against the basic
    columns (``structural``). A row whose logical is basic only defines its
    activity, ``r = a_i x``, and constrains nothing while it stays within its
    bounds, so ``core = A[active, structural]`` is square and a flip of column
    ``j`` by ``step`` moves the basic columns by ``-step core^-1 A[active, j]``
    and the basic rows' activities by ``A[inactive] dx``.
    """

    price: float
    x: np.ndarray
    g: float
    up: tuple
    down: tuple
    structural: np.ndarray | None = None   # basic columns, in core order
    active: np.ndarray | None = None       # rows of the core
    inactive: np.ndarray | None = None     # rows whose logical is basic
    lu: object = None                      # splu of the core
    p0_pos: int = -1                       # P0's position among ``structural`` (-1: nonbasic)
    c0: np.ndarray | None = None           # costs of the basic columns with P0's set to 0
    bounded: np.ndarray | None = None      # which basic columns have a finite bound
    r: np.ndarray | None = None            # row activities A x
    a_inactive_structural: tuple | None = None   # A[inactive, structural] as (row, column, value) arrays
    row_pos: np.ndarray | None = None      # per row: position among active (>= 0) or -1 - among inactive


class _Probe:
    """The optimal import of one interval as a function of its ISO price, on a persistent HiGHS model.

    Between two HiGHS solves the optimal basis is fixed, so the duals are affine
    in the price, ``y(lambda) = y0 + lambda z`` with ``z`` one transposed solve
    with P0's unit cost, and so is every nonbasic reduced cost: all the prices
    at which a bid switches on or off in that basis follow from one vectorised
    ratio (:func:`_blocking`). Switching a bid (a boxed column) to its other
    bound keeps the basis dual feasible (the parametric simplex's bound flip);
    the flips' effects on the basic values are one multi-right-hand-side solve
    with the basis's own sparse LU factorisation, summed cumulatively, so the
    first flip that would push a basic value (a line, a voltage, a partly
    cleared bid, a battery) past its bound is found without a per-flip call into
    HiGHS. That flip, or a row reaching zero reduced cost, needs a real pivot:
    it is left to a warm HiGHS solve.
    """

    def __init__(self, market: NodalMarket, t: int, model=None):
        self.market = market
        self.solver = market.solver
        self.h = market.solver.h
        self.t = t
        self.col = market.model.var("import_p").start + t
        self.solves = 0
        self.flips = 0
        self.pivots = 0
        self.last_run = 0
        self._load(model)

    def _load(self, model=None) -> None:
        """Read the market's matrix and bounds. Again whenever the market swaps its model: the loss-aware
        market re-linearises (:meth:`NodalMarket.converge`) in place, and a basis of the new model
        factorised with the old coefficients is wrong or singular. ``model``: another linearisation of
        the market's model (same blocks, bounds and costs) to factorise bases of, without solving it."""
        self.model = self.market.model if model is None else model
        _, _, _, a, _, _, _ = self.model.assemble()
        a = a.tocsr(copy=True)
        a.eliminate_zeros()     # e.g. a bid's reactive coefficient when tan_phi = 0: nothing to solve for
        self.a = a
        self.at = a.T.tocsr()
        a_csc = a.tocsc()
        a_csc.sort_indices()
        # Raw CSC arrays: columns are gathered with numpy (:meth:`_columns`); scipy's sparse
        # fancy indexing costs some 0.5 ms a call in checks and conversions.
        self.indptr, self.indices, self.data = a_csc.indptr.astype(np.int64), a_csc.indices, a_csc.data
        s = self.solver
        self.col_range = s.col_lower < s.col_upper
        self.row_range = s.row_lower < s.row_upper
        self.flippable = np.isfinite(s.col_lower) & np.isfinite(s.col_upper) & self.col_range
        self.flippable[self.col] = False

    def _columns(self, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Nonzeros of the columns ``cols`` of A: ``(k, row, value)``, ``k`` the position in ``cols``,
        grouped by ``k`` and sorted by row within each column."""
        start = self.indptr[cols]
        count = self.indptr[cols + 1] - start
        k = np.repeat(np.arange(len(cols)), count)
        offset = np.arange(int(count.sum())) + np.repeat(start - (np.cumsum(count) - count), count)
        return k, self.indices[offset], self.data[offset]

    def solve(self, price: float) -> tuple[_Sample, _Basis]:
        if self.market.model is not self.model:
            self._load()
        s = self.solver
        s.set_cost("import_p", price, index=self.t)
        status = s.run()
        self.solves += 1
        if status != "optimal":
            raise InputError("market", "iso_price", f"the market is not solvable ({status}) at an ISO "
                             f"price of {price:g} in interval {self.t}: no interface curve exists")
        x = np.asarray(self.h.getSolution().col_value)
        q = float(x[self.col])
        # Plain sums, not BLAS dot products: OpenBLAS's spinning threads slow HiGHS down between calls.
        g = float(np.sum(s.cost * x)) - price * q
        basis = self._basis(price, x, g)
        low = price - _nearest(basis.down)
        high = price + _nearest(basis.up)
        return _Sample(price, q, g, low, high), basis

    def _basis(self, price: float, x: np.ndarray, g: float) -> _Basis:
        """Factorise HiGHS's optimal basis and find the reduced costs that block it (cost ranging of P0).

        Reduced costs ``d = c - A^T y`` with ``core^T y_active = c_structural``
        (``y`` is zero on rows whose logical is basic); raising P0's cost by
        ``delta`` moves ``y`` by ``delta z``, ``core^T z_active = e_P0``, so ``d``
        by ``-delta A^T z`` and a row's dual by ``delta z``. The basis stays
        optimal until a nonbasic reduced cost changes sign. Nonbasic positions are
        read from the primal values (at which bound), and a reduced cost of the
        wrong sign within tolerance counts as zero, so a range is never overstated.
        """
        _, basic = self.h.getBasicVariables()
        basic = np.asarray(basic)
        basis = self._factor(price, x, g, np.sort(basic[basic >= 0]), np.sort(-basic[basic < 0] - 1))
        if basis is None:
            raise RuntimeError("interface curve: HiGHS's optimal basis is singular to the tracer")
        return basis

    def _core(self, structural: np.ndarray, inactive: np.ndarray) -> tuple | None:
        """The basis's core (:class:`_Basis`) factorised: ``(active_mask, row_pos, a_inactive_structural, lu)``;
        None when it is not square or singular."""
        from scipy.sparse.linalg import splu  # ~0.4 s of imports that a clearing alone never needs

        n_row = self.a.shape[0]
        active_mask = np.ones(n_row, dtype=bool)
        active_mask[inactive] = False
        active = np.nonzero(active_mask)[0]
        if len(active) != len(structural):
            return None
        row_pos = np.empty(n_row, dtype=np.int64)
        row_pos[active] = np.arange(len(active))
        row_pos[inactive] = -1 - np.arange(len(inactive))
        k, row, val = self._columns(structural)
        pos_all = row_pos[row]
        on = pos_all >= 0
        # Rows keep their order under row_pos, so the core's columns come out sorted (canonical CSC).
        core = sp.csc_matrix((val[on], pos_all[on], np.concatenate([[0], np.cumsum(
            np.bincount(k[on], minlength=len(structural)))])), shape=(len(active), len(structural)))
        off = ~on
        a_inactive_structural = (-1 - pos_all[off], k[off], val[off])
        try:
            lu = splu(core, permc_spec="MMD_ATA", options={"SymmetricMode": True})
        except RuntimeError:            # singular: a pivot the tracer should not have taken
            return None
        return active_mask, row_pos, a_inactive_structural, lu

    def _factor(self, price: float, x: np.ndarray, g: float, structural: np.ndarray, inactive: np.ndarray,
                check: bool = False, core: tuple | None = None) -> _Basis | None:
        """The :class:`_Basis` of basic columns ``structural`` and basic row logicals ``inactive`` at ``price``.

        With ``check`` (a basis reached by the tracer's own pivot, not by HiGHS),
        None unless it is primal feasible (``x`` within bounds, the active rows
        held) and dual feasible at ``price`` (no nonbasic reduced cost of the
        wrong sign), i.e. optimal there. ``core``: :meth:`_core` of the same basis, when
        already factorised.
        """
        s = self.solver
        n_row = self.a.shape[0]
        r = self.a @ x
        core = core or self._core(structural, inactive)
        if core is None:
            return None
        active_mask, row_pos, a_inactive_structural, lu = core
        active = np.nonzero(active_mask)[0]
        cost = s.cost.copy()
        cost[self.col] = price
        y = np.zeros(n_row)
        y[active] = lu.solve(cost[structural], trans="T")
        d = cost - self.at @ y
        nb_cols = self.col_range.copy()
        nb_cols[structural] = False
        nb_rows = active_mask & self.row_range
        if check and not _optimal(x, r, d, y, structural, inactive, nb_cols, nb_rows, s, price):
            return None
        pos = np.searchsorted(structural, self.col)
        if pos >= len(structural) or structural[pos] != self.col:  # P0 nonbasic: at a limit, or fixed
            lo, hi = s.col_lower[self.col], s.col_upper[self.col]
            none = (np.zeros(0), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
            up, down = none, none
            if lo != hi:
                d0 = float(d[self.col])
                one = np.array([self.col])
                if math.isfinite(lo) and (not math.isfinite(hi) or x[self.col] - lo <= hi - x[self.col]):
                    down = (np.array([max(d0, 0.0)]), np.zeros(1, dtype=np.int64), one)
                else:
                    up = (np.array([max(-d0, 0.0)]), np.zeros(1, dtype=np.int64), one)
            return _Basis(price, x, g, up, down)
        unit = np.zeros(len(structural))
        unit[pos] = 1.0
        z = np.zeros(n_row)
        z[active] = lu.solve(unit, trans="T")
        cu, cd = _blocking(d, self.at @ z, x, s.col_lower, s.col_upper, nb_cols)
        ru, rd = _blocking(y, -z, r, s.row_lower, s.row_upper, nb_rows)
        c0 = cost[structural].copy()
        c0[pos] = 0.0
        bounded = np.isfinite(s.col_lower[structural]) | np.isfinite(s.col_upper[structural])
        return _Basis(price, x, g, _merge_events(cu, ru), _merge_events(cd, rd), structural, active, inactive,
                      lu, int(pos), c0, bounded, r, a_inactive_structural, row_pos)

    def settle(self, x: np.ndarray, structural: np.ndarray, inactive: np.ndarray) -> tuple | None:
        """The basic solution of a basis on this probe's matrix, nonbasic columns held at their values in ``x``.

        Each row whose logical is nonbasic is held at the bound nearest its activity (an equality's
        value, a binding limit), and the basic columns solved for: ``(x, core)`` with ``core`` the
        factorised basis (:meth:`_core`), or None when it is singular or leaves a bound by more
        than the primal tolerance.
        """
        s = self.solver
        core = self._core(structural, inactive)
        if core is None:
            return None
        active_mask, _, _, lu = core
        rest = x.copy()
        rest[structural] = 0.0
        r = self.a @ x
        lo, hi = s.row_lower[active_mask], s.row_upper[active_mask]
        near_lo = np.isfinite(lo) & (~np.isfinite(hi) | (np.abs(r[active_mask] - lo) <= np.abs(r[active_mask] - hi)))
        held = np.where(near_lo, lo, hi)
        if not np.all(np.isfinite(held)):
            return None
        out = rest
        out[structural] = lu.solve(held - (self.a @ rest)[active_mask])
        r = self.a @ out
        tol = _PRIMAL_TOL
        if np.any(out < s.col_lower - tol) or np.any(out > s.col_upper + tol) or \
                np.any(r < s.row_lower - tol) or np.any(r > s.row_upper + tol):
            return None
        return out, core

    def dual_range(self, x: np.ndarray, structural: np.ndarray, core: tuple) -> tuple[float, float] | None:
        """The ISO prices ``[low, high]`` at which the basis ``structural`` (factorised as ``core``) with primal
        point ``x`` is optimal: every nonbasic reduced cost and active row dual of the right sign.

        Duals are affine in the price (P0 basic): ``y = y0 + lambda z``. A nonbasic column held
        off its bounds (a bid pinned inside its quantity) needs a zero reduced cost, which fixes the
        price (``low == high``, within ``losses.MARGINAL_TOL``). None when no price is left, or
        when P0 is nonbasic.
        """
        s = self.solver
        active_mask, _, _, lu = core
        pos = np.searchsorted(structural, self.col)
        if pos >= len(structural) or structural[pos] != self.col:
            return None
        n_row = self.a.shape[0]
        cost = s.cost.copy()
        cost[self.col] = 0.0
        unit = np.zeros(len(structural))
        unit[pos] = 1.0
        y0, z = np.zeros(n_row), np.zeros(n_row)
        sol = lu.solve(np.column_stack([cost[structural], unit]), trans="T")
        y0[active_mask], z[active_mask] = sol[:, 0], sol[:, 1]
        nonbasic = np.ones(len(x), dtype=bool)
        nonbasic[structural] = False
        r = self.a @ x
        # f(lambda) = d0 + lambda slope: reduced costs of nonbasic columns, duals of active rows.
        d0 = np.concatenate([(cost - self.at @ y0)[nonbasic], y0[active_mask]])
        slope = np.concatenate([-(self.at @ z)[nonbasic], z[active_mask]])
        value = np.concatenate([x[nonbasic], r[active_mask]])
        lower = np.concatenate([s.col_lower[nonbasic], s.row_lower[active_mask]])
        upper = np.concatenate([s.col_upper[nonbasic], s.row_upper[active_mask]])
        keep = lower < upper
        d0, slope, value, lower, upper = d0[keep], slope[keep], value[keep], lower[keep], upper[keep]
        at_lo = np.abs(value - lower) <= _PRIMAL_TOL
        at_hi = ~at_lo & (np.abs(value - upper) <= _PRIMAL_TOL)
        inside = ~at_lo & ~at_hi
        # At a lower bound f >= 0 (the bid stays out), at an upper f <= 0; inside f = 0. Written as
        # sign * f >= -tol with both signs for a value inside its bounds.
        sign = np.concatenate([np.where(at_lo, 1.0, -1.0), np.ones(int(inside.sum()))])
        d0 = np.concatenate([d0, d0[inside]])
        slope = np.concatenate([slope, slope[inside]])
        tol = np.concatenate([np.full(len(at_lo), _DUAL_TOL), np.full(int(inside.sum()), losses.MARGINAL_TOL)])
        tol[:len(at_lo)][inside] = losses.MARGINAL_TOL
        a, b = sign * slope, sign * d0 + tol          # a lambda + b >= 0
        flat = np.abs(a) <= _ALPHA_TOL
        if np.any(flat & (b < 0.0)):
            return None
        with np.errstate(divide="ignore"):
            bound = -b / a
        low = float(np.max(bound[~flat & (a > 0)], initial=-math.inf))
        high = float(np.min(bound[~flat & (a < 0)], initial=math.inf))
        if low > high:
            return None
        held = np.abs(slope[len(at_lo):]) > _ALPHA_TOL
        if held.any():                  # the price at which the held bids' reduced costs vanish
            price = float(np.median(-d0[len(at_lo):][held] / slope[len(at_lo):][held]))
            return price, price
        return low, high

    def chain(self, start: _Sample, basis: _Basis, rising: bool, limit: float) -> list[_Sample]:
        """Samples reached from ``start`` by bound flips and the tracer's own pivots, towards ``limit`` (exclusive).

        After the flips of a basis (:meth:`_flips`), the event that ends them is
        taken as a primal simplex pivot at its price: the entering variable (the
        bid whose flip breaks a bound, or a row whose dual reaches zero) moves
        until the first basic variable reaches a bound (ratio test), which
        leaves. The new basis is factorised and kept only if it is optimal at that
        price (:func:`_optimal`); otherwise, or after too many pivots that make no
        progress, the chain ends and a warm HiGHS solve takes over.
        """
        out: list[_Sample] = []
        stalled = 0
        while True:
            samples, brk = self._flips(basis, rising, limit)
            out += samples
            if brk is None or stalled >= _MAX_STALL:
                return out
            pivot = self._pivot(basis, brk, rising)
            if pivot is None:
                return out
            sample, nxt = pivot
            # Degenerate pivots at one price could cycle (with flips between them): a few are fine.
            stalled = stalled + 1 if sample.price == basis.price or (samples and sample.price == samples[-1].price) \
                else 0
            self.pivots += 1
            out.append(sample)
            basis = nxt

    def _pivot(self, basis: _Basis, brk: tuple, rising: bool) -> tuple[_Sample, _Basis] | None:
        """One primal simplex pivot at the price of event ``brk``; None when it cannot be taken safely."""
        kind, j, price, x = brk
        s = self.solver
        st, act, ina = basis.structural, basis.active, basis.inactive
        r = self.a @ x
        r_ina = r[ina]
        if kind == 0:
            lo_e, hi_e, val = s.col_lower[j], s.col_upper[j], x[j]
        else:
            lo_e, hi_e, val = s.row_lower[j], s.row_upper[j], r[j]
        sigma = 1.0 if (math.isfinite(lo_e) and abs(val - lo_e) <= abs(val - hi_e)) else -1.0
        if kind == 0:
            a_j = np.zeros(len(r))
            _, rows, vals = self._columns(np.array([j]))
            a_j[rows] = vals
            d_s = -sigma * basis.lu.solve(a_j[act])
            d_r = _times(basis.a_inactive_structural, len(ina), d_s) + sigma * a_j[ina]
        else:
            unit = np.zeros(len(act))
            unit[np.searchsorted(act, j)] = sigma
            d_s = basis.lu.solve(unit)
            d_r = _times(basis.a_inactive_structural, len(ina), d_s)
        own = hi_e - lo_e
        vals = np.concatenate([x[st], r_ina])
        rate = np.concatenate([d_s, d_r])
        lower = np.concatenate([s.col_lower[st], s.row_lower[ina]])
        upper = np.concatenate([s.col_upper[st], s.row_upper[ina]])
        eps = 1e-9
        with np.errstate(divide="ignore", invalid="ignore"):
            theta = np.where(rate > eps, (upper - vals) / rate, np.where(rate < -eps, (lower - vals) / rate, np.inf))
        theta = np.maximum(theta, 0.0)
        leave = int(np.argmin(theta))
        step = float(theta[leave])
        if not math.isfinite(step) or step >= own:
            return None
        x = x.copy()
        x[st] += step * d_s
        if kind == 0:
            x[j] += sigma * step
        structural, inactive = st, ina
        if leave < len(st):                     # a basic column reaches a bound and leaves
            x[st[leave]] = upper[leave] if rate[leave] > 0 else lower[leave]
            structural = np.delete(st, leave)
        else:                                   # a basic row reaches a bound: it becomes active
            inactive = np.delete(ina, leave - len(st))
        if kind == 0:
            structural = np.insert(structural, np.searchsorted(structural, j), j)
        else:
            inactive = np.insert(inactive, np.searchsorted(inactive, j), j)
        g = float(np.sum(s.cost * x)) - s.cost[self.col] * x[self.col]
        nxt = self._factor(price, x, g, structural, inactive, check=True)
        if nxt is None:
            return None
        q = float(x[self.col])
        if rising:
            high = price + _nearest(nxt.up)
            return _Sample(price, q, g, price, high), nxt
        low = price - _nearest(nxt.down)
        return _Sample(price, q, g, low, price), nxt

    def _flips(self, basis: _Basis, rising: bool, limit: float) -> tuple[list[_Sample], tuple | None]:
        """Samples reached by bound flips alone from ``basis``, and the event that ends them.

        The flips are the basis's blocking columns in price order up to the first
        row event or non-flippable column. Their moves of the basic columns are
        solved together (``core^-1 A[active, flips]``, in chunks) and summed
        cumulatively; the run stops before the first flip after which any basic
        column or basic row activity would lie outside its bounds. Import and
        tangent of every sample are cumulative sums too. The ending event is
        ``(kind, index, price, x)`` with ``x`` the point after the valid flips,
        or None at ``limit`` or when nothing blocks.
        """
        events = basis.up if rising else basis.down
        total = len(events[0])
        if total == 0 or basis.p0_pos < 0:   # P0 at a limit: its own bound is the only blocker
            return [], None
        s = self.solver
        sign = 1.0 if rising else -1.0
        first = 64 if total > 1024 else total    # a short list is sorted at once, not partitioned repeatedly
        while True:   # order only the events up to the first that ends the run of flips
            delta, kind, idx = _first_events(events, first)
            prices = basis.price + sign * delta
            beyond = (prices >= limit) if rising else (prices <= limit)
            stop = (kind != 0) | ~self.flippable[np.where(kind == 0, idx, 0)] | beyond
            if stop.any() or len(delta) == total:
                break
            first *= 4
        n_run = int(np.argmax(stop)) if stop.any() else len(delta)
        x = basis.x
        cols = idx[:n_run]
        lo, hi = s.col_lower[cols], s.col_upper[cols]
        steps = np.where(x[cols] - lo <= hi - x[cols], hi - lo, lo - hi)
        st, act, ina = basis.structural, basis.active, basis.inactive
        bounded = basis.bounded                       # basic columns with a finite bound (not line flows)
        x_b, lo_b, hi_b = x[st][bounded], s.col_lower[st][bounded], s.col_upper[st][bounded]
        r_now = basis.r[ina]
        lo_r, hi_r = s.row_lower[ina], s.row_upper[ina]
        # Values HiGHS left outside a bound (within its tolerance) may stay there, no further.
        allow_b = np.maximum(np.maximum(lo_b - x_b, x_b - hi_b), 1e-9)[:, None]
        allow_r = np.maximum(np.maximum(lo_r - r_now, r_now - hi_r), 1e-9)[:, None]
        moved = np.zeros(len(st))                     # basic columns' change by the flips so far
        r_cur = r_now.copy()                          # basic rows' activities after the flips so far
        is_row, is_col, is_val = basis.a_inactive_structural
        n_ina = len(ina)
        # Cumulative moves are needed only of the basic columns with a bound or in a basic row.
        need_mask = bounded.copy()
        need_mask[is_col] = True
        need = np.nonzero(need_mask)[0]
        loc = np.cumsum(need_mask) - 1                # position among ``need``
        in_need_b = loc[bounded]
        is_loc = loc[is_col]
        is_coo, abs_is = (is_row, is_loc, is_val), (is_row, is_loc, np.abs(is_val))
        valid = n_run
        dq = np.zeros(n_run)
        dg = np.zeros(n_run)
        # The first chunk is sized by the previous run: flips solved past the run's end are wasted.
        begin, size = 0, max(8, min(64, self.last_run + 4))
        while begin < n_run:
            end = min(n_run, begin + size)
            chunk, step = cols[begin:end], steps[begin:end]
            k = len(chunk)
            ent, row, val = self._columns(chunk)
            pos = basis.row_pos[row]                      # >= 0: active row; < 0: -1 - inactive row
            on = pos >= 0
            rhs = np.zeros((len(act), k), order="F")
            rhs[pos[on], ent[on]] = val[on]
            move = -basis.lu.solve(rhs) * step            # one flip per column
            cum = np.cumsum(move[need], axis=1)
            xb = x_b[:, None] + moved[bounded, None] + cum[in_need_b]
            bad = (np.maximum(lo_b[:, None] - xb, xb - hi_b[:, None]) > allow_b).any(axis=0)
            # The flipped columns' own coefficients in basic rows (resource rows; none for a plain bid).
            own_rows, inv = np.unique(-1 - pos[~on], return_inverse=True)
            own = np.zeros((len(own_rows), k))
            own[inv, ent[~on]] = val[~on] * step[ent[~on]]
            own_cum = np.cumsum(own, axis=1)
            # Activities: only rows the flips could push to a bound are computed; a row moves by at
            # most sum_j |a_ij| max_n |change of x_j| plus the flipped columns' own coefficients.
            reach = _times(abs_is, n_ina, np.abs(cum).max(axis=1))
            reach[own_rows] += np.abs(own).sum(axis=1)
            near = np.nonzero(reach > np.minimum(r_cur - lo_r, hi_r - r_cur) + allow_r[:, 0])[0]
            if len(near):
                rank = np.full(n_ina, -1)
                rank[near] = np.arange(len(near))
                sel = np.nonzero(rank[is_row] >= 0)[0]
                r = np.repeat(r_cur[near, None], k, axis=1)
                np.add.at(r, rank[is_row[sel]], is_val[sel, None] * cum[is_loc[sel]])
                hit = np.searchsorted(own_rows, near)
                mine = (hit < len(own_rows)) & (own_rows[np.minimum(hit, len(own_rows) - 1)] == near) \
                    if len(own_rows) else np.zeros(len(near), dtype=bool)
                r[mine] += own_cum[hit[mine]]
                bad |= (np.maximum(lo_r[near, None] - r, r - hi_r[near, None]) > allow_r[near]).any(axis=0)
            dq[begin:end] = move[basis.p0_pos]
            dg[begin:end] = step * s.cost[chunk] + basis.c0 @ move
            if bad.any():
                valid = begin + int(np.argmax(bad))
                moved += move[:, :valid - begin].sum(axis=1)
                break
            moved += move.sum(axis=1)
            r_cur += _times(is_coo, n_ina, cum[:, -1])
            r_cur[own_rows] += own_cum[:, -1]
            begin, size = end, min(size * 2, 64)
        self.flips += valid
        self.last_run = valid
        brk = None
        if valid < len(delta) and not beyond[valid]:
            # The event that ends the run: a flip that breaks a bound, a row, or a column that cannot flip.
            x_new = x.copy()
            x_new[st] += moved
            x_new[cols[:valid]] += steps[:valid]
            brk = (int(kind[valid]), int(idx[valid]), float(prices[valid]), x_new)
        q = float(x[self.col]) + np.cumsum(dq[:valid])
        g = basis.g + np.cumsum(dg[:valid])
        at = prices[:valid]
        nxt = np.append(prices[1:], sign * math.inf)[:valid]
        if rising:
            out = [_Sample(float(p), float(qq), float(gg), float(p), float(n)) for p, qq, gg, n in zip(at, q, g, nxt)]
        else:
            out = [_Sample(float(p), float(qq), float(gg), float(n), float(p)) for p, qq, gg, n in zip(at, q, g, nxt)]
        return out, brk


def _times(coo: tuple, n_rows: int, v: np.ndarray) -> np.ndarray:
    """``M @ v`` for ``M`` given as ``(row, column, value)`` arrays with ``n_rows`` rows (no sparse matrix
    object: scipy's constructors cost more than the product on the tracer's few inactive-row entries)."""
    row, col, val = coo
    # astype: bincount of no entries gives integers.
    return np.bincount(row, weights=val * v[col], minlength=n_rows).astype(float, copy=False)


def _optimal(x, r, d, y, structural, inactive, nb_cols, nb_rows, s, price: float) -> bool:
    """Whether a basis's point is primal feasible and its reduced costs dual feasible (within tolerances).

    ``nb_cols`` and ``nb_rows`` mark the nonbasic columns and rows with a range (a fixed one is
    feasible at any reduced cost). Only basic values are checked against their bounds: a pivot
    (:meth:`_Probe._pivot`) moves nothing else off the bound it sits at.
    """
    p_tol, d_tol = 1e-7, 1e-7 * max(1.0, abs(price))
    for value, lower, upper in ((x[structural], s.col_lower[structural], s.col_upper[structural]),
                                (r[inactive], s.row_lower[inactive], s.row_upper[inactive])):
        if np.any(value < lower - p_tol) or np.any(value > upper + p_tol):
            return False
    for value, red, lower, upper, sel in ((x, d, s.col_lower, s.col_upper, nb_cols),
                                          (r, y, s.row_lower, s.row_upper, nb_rows)):
        v, dd = value[sel], red[sel]
        at_lo = np.abs(v - lower[sel]) <= p_tol
        at_hi = np.abs(v - upper[sel]) <= p_tol
        # At a lower bound d >= 0, at an upper one d <= 0, off both d = 0; on both (a range narrower
        # than the tolerance) any d.
        lo_ok, hi_ok = dd >= -d_tol, dd <= d_tol
        if not np.all(np.where(at_lo, at_hi | lo_ok, np.where(at_hi, hi_ok, lo_ok & hi_ok))):
            return False
    return True


def _blocking(d, alpha, value, lower, upper, nonbasic):
    """Price changes at which nonbasic reduced costs ``d - delta alpha`` turn infeasible.

    ``nonbasic`` marks the nonbasic variables with a range (``lower < upper``).
    Returns ``(up, down)``: arrays ``(delta, index)`` for a rising and a falling price.
    """
    sel = np.nonzero(nonbasic & (np.abs(alpha) > _ALPHA_TOL))[0]
    d, alpha, value, lower, upper = d[sel], alpha[sel], value[sel], lower[sel], upper[sel]
    fin_lo, fin_up = np.isfinite(lower), np.isfinite(upper)
    at_lo = fin_lo & (~fin_up | (value - lower <= upper - value))
    at_up = ~at_lo & fin_up
    free = ~at_lo & ~at_up
    room = np.where(at_lo, np.maximum(d, 0.0), np.where(at_up, np.maximum(-d, 0.0), np.abs(d)))
    slack = room / np.abs(alpha)
    # At a lower bound d >= 0 must hold: a rising cost (delta > 0) hurts when alpha > 0.
    hurts_up = (at_lo & (alpha > 0)) | (at_up & (alpha < 0)) | free
    hurts_dn = (at_lo & (alpha < 0)) | (at_up & (alpha > 0)) | free
    return (slack[hurts_up], sel[hurts_up]), (slack[hurts_dn], sel[hurts_dn])


def _merge_events(cols, rows) -> tuple:
    """Column and row blockers as arrays ``(delta, kind, index)``, unordered (:func:`_first_events`)."""
    delta = np.concatenate([cols[0], rows[0]])
    kind = np.concatenate([np.zeros(len(cols[0]), dtype=np.int64), np.ones(len(rows[0]), dtype=np.int64)])
    return delta, kind, np.concatenate([cols[1], rows[1]])


def _first_events(events: tuple, k: int) -> tuple:
    """The ``k`` first events by price change (ties: columns first, by index), in that order; ties with
    the ``k``-th are all kept. A run of flips uses a few dozen of thousands, so only those are sorted."""
    delta, kind, idx = events
    if len(delta) > k:
        sel = np.nonzero(delta <= np.partition(delta, k - 1)[k - 1])[0]
        delta, kind, idx = delta[sel], kind[sel], idx[sel]
    order = np.lexsort((idx, kind, delta))
    return delta[order], kind[order], idx[order]


def _nearest(events: tuple) -> float:
    """The smallest price change among ``events`` (inf when none)."""
    return float(events[0].min()) if len(events[0]) else math.inf


def _trace_interval(probe: _Probe, floor: float, cap: float,
                    max_solves: int) -> list[tuple[float, float, float]]:
    """Bands ``(price_low, price_high, import_kw)`` of one interval, exact, floor to cap."""
    first, basis = probe.solve(floor)
    up = probe.chain(first, basis, True, cap)
    if (up[-1] if up else first).high >= cap:
        samples = [first, *up]          # flips and pivots reached the cap: no second solve needed
    else:
        top = up[-1].price if up else floor
        last, basis = probe.solve(cap)
        down = probe.chain(last, basis, False, top)
        samples = [first, *up, *reversed(down), last]
    stack = [(a, b) for a, b in zip(samples[:-1], samples[1:])][::-1]
    done: list[tuple[_Sample, _Sample, float | None]] = []   # consecutive pairs and their step (or None)
    while stack:
        a, b = stack.pop()
        if a.q - b.q <= Q_TOL_MW:
            done.append((a, b, None))   # one import on the whole pair: Q is monotone
            continue
        lam = (b.g - a.g) / (a.q - b.q)
        cert = CERT_REL_TOL * max(1.0, abs(a.high), abs(b.low))
        if a.high >= b.low - cert:
            # a's basis is optimal up to a.high, b's from b.low: one step, between the two
            # (located by the ratio tests, which are more accurate than the tangents).
            lo, hi = min(a.high, b.low), max(a.high, b.low)
            done.append((a, b, min(max(lam, lo, a.price), hi, b.price)))
            continue
        tol = P_REL_TOL * max(1.0, abs(lam))
        if lam <= a.price + tol:
            done.append((a, b, a.price))    # f on b's tangent back to a: the step is at a
            continue
        if lam >= b.price - tol:
            done.append((a, b, b.price))
            continue
        if probe.solves >= max_solves:
            raise RuntimeError(f"interface curve: more than {max_solves} solves in interval {probe.t}; "
                               "the LP is numerically troubled")
        # Solve just past the end of a's range: HiGHS starts from the last basis, which sits there
        # (pairs are settled left to right), so the warm solve is the one pivot that ends the range,
        # and the new basis's range meets a's within the certificate tolerance.
        p = a.high + cert / 2 if math.isfinite(a.high) else lam
        p = min(max(p, a.high + cert / 2), b.low - cert / 2)
        s, basis = probe.solve(p)
        if s.q >= a.q - Q_TOL_MW and s.high <= a.high + cert and a.price < lam < b.price:
            # No progress past a's range (a short ranging, as on the loss-aware model's denser
            # rows): the tangent intersection, which always lies strictly between a and b.
            s, basis = probe.solve(lam)
        left = probe.chain(s, basis, False, a.price)
        right = probe.chain(s, basis, True, b.price)
        seq = [a, *reversed(left), s, *right, b]
        stack += [(x, y) for x, y in zip(seq[:-1], seq[1:])][::-1]
    # Pairs were settled left to right (the stack pops the leftmost first), so ``done`` is in price order.
    bands: list[list[float]] = []
    low, q = floor, first.q
    for a, b, step in done:
        if step is None:
            continue
        # Steps found through different bases may differ by rounding: closer than the price
        # tolerance they are one step, and the sliver between them is no band.
        if step > low + P_REL_TOL * max(1.0, abs(step)):
            bands.append([low, step, q])
            low = step
        q = b.q
    bands.append([low, cap, q])
    return [(lo, hi, qq * S_BASE_KVA) for lo, hi, qq in _merge_equal(bands)]


def _merge_equal(bands: list[list[float]]) -> list[list[float]]:
    """Join neighbouring ``[low, high, import_mw]`` bands whose imports agree within ``Q_TOL_MW``.

    For a sampled curve this keeps its error bound: every price in a merged band
    stays within the tolerance of the band's value.
    """
    merged: list[list[float]] = []
    for band in bands:
        if merged and abs(merged[-1][2] - band[2]) <= Q_TOL_MW:
            merged[-1][1] = band[1]
        else:
            merged.append(band)
    return merged


def trace_curve(feeder: Feeder, book: BidBook, rules: MarketRules = MarketRules(),
                resources: tuple[Resource, ...] = (), options: ClearingOptions = ClearingOptions(),
                forecast=None, load_p_kw: np.ndarray | None = None,
                load_q_kvar: np.ndarray | None = None, max_solves: int | None = None,
                progress: Callable[[int, int], None] | None = None, **socp_options) -> InterfaceCurve:
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
        Safety limit on solves per interval (default ``4 * bids + 1000``).
    progress
        Called as ``progress(done, total)`` after each interval is traced (the
        caller decides whether and where to show it; the engine prints nothing).

    Returns
    -------
    InterfaceCurve
        Bands per interval covering floor to cap. Raises :class:`InputError`
        when the market is infeasible (no curve exists at any price).

    Notes
    -----
    The method and its exactness argument are in the module docstring. Price
    and quantity tolerances: imports within ``Q_TOL_MW`` (1 mW) are one
    quantity, and a step is placed at the tangent intersection, i.e. to
    floating-point accuracy of the solver's primal values.
    """
    if options.formulation == "socp":
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
    rows, solves, flips = [], 0, 0
    check: CurveCheck | None = None
    # One BLAS thread: the sparse LU solves are small, and idle OpenBLAS threads spinning
    # against HiGHS on a loaded machine made each of them ten times slower.
    with threadpool_limits(1, user_api="blas"):
        # Uncoupled intervals are separate problems: tracing each on its own model
        # keeps every solve T times smaller than the whole horizon's.
        shared = NodalMarket(feeder, book, fc, rules, resources, opts, load_p_kw, load_q_kvar) if coupled else None
        for t in range(T):
            if coupled:
                shared.set_iso_price(fc)
                market, k = shared, t
            else:
                one = slice(t, t + 1)
                market, k = NodalMarket(feeder, for_interval(book, t), fc[one], rules,
                                        resources_for_interval(resources, book.intervals[t]), opts,
                                        load_p_kw[:, one], load_q_kvar[:, one]), 0
            bands, n_solves, n_flips, band_check = trace_market_interval(market, k, rules, limit)
            solves += n_solves
            flips += n_flips
            if band_check is not None:
                check = band_check if check is None else check.merged(band_check)
            rows += [(t, lo, hi, q) for lo, hi, q in bands]
            if progress is not None:
                progress(t + 1, T)
    return InterfaceCurve(bands=_bands_table(book, rows), fixed_net_load_kw=_fixed_table(book, load_p_kw),
                          conditional=coupled, forecast=fc, solves=solves,
                          seconds=time.perf_counter() - t0, bound_flips=flips,
                          ac_check=None if check is None else dataclasses.asdict(check))


def trace_market_interval(market, t: int, rules: MarketRules,
                          max_solves: int) -> tuple[list[tuple[float, float, float]], int, int, CurveCheck | None]:
    """Bands ``(price_low, price_high, import_kw)`` of interval ``t`` of a built market, floor to cap.

    ``market`` is a :class:`~engine.clearing.NodalMarket` or an :class:`engine.runs.CoupledMarket`
    (a horizon whose network changes), with the other intervals' ISO prices set to the forecast.
    The loss-aware market's curve is made of its converged clearings (:func:`_trace_fixed_points`),
    the lossless LP's is its exact staircase (:func:`_trace_interval`). Returns the bands, the
    solves, the bound flips, and the loss-aware curve's check (None for the lossless LP).
    """
    if market.lossaware:
        fixed = _FixedPoints(market, t)
        bands, check = _trace_fixed_points(fixed, rules.price_floor, rules.price_cap, max_solves)
        return bands, fixed.solves, 0, check
    probe = _Probe(market, t)
    return _trace_interval(probe, rules.price_floor, rules.price_cap, max_solves), probe.solves, probe.flips, None


class _FixedPoints:
    """Loss-aware clearings of interval t at chosen ISO prices, each converged to its own fixed point.

    A clearing at price ``lambda`` is :meth:`NodalMarket.converge` (what ``clear`` does), so
    its import is the AC power flow's of its dispatch. Where that dispatch is a vertex of the
    LP linearised at it, the range of ISO prices over which that LP's basis stays optimal
    (:meth:`_Probe.solve`) is exactly the range over which the dispatch is a fixed point:
    the linearisation has the AC equations' values and gradients there, so the LP's
    optimality conditions at it are the AC ones. Where a bid clears part-way because of
    its own effect on the losses (an interior optimum) the import moves with the price and
    the sample holds at its own price only.
    """

    def __init__(self, market: NodalMarket, t: int):
        self.market, self.t = market, t
        self.clearings = 0
        self.solves = 0
        self.anchored = 0
        self.interpolated = 0.0
        self.residual_kw = 0.0
        # Vertex samples not yet walked from: id -> (sample, probe on its linearisation, its basis there).
        self._anchors: dict[int, tuple[_Sample, _Probe, _Basis]] = {}

    def keep(self, old: _Sample, new: _Sample) -> _Sample:
        """``new`` (``old`` with a clipped range) takes over ``old``'s basis for walking on."""
        entry = self._anchors.pop(id(old), None)
        if entry is not None and entry[0] is old:
            self._anchors[id(new)] = (new, *entry[1:])
        return new

    def anchor(self, x: np.ndarray, structural: np.ndarray, inactive: np.ndarray,
               keep: bool = True) -> _Sample | None:
        """The fixed point reached from dispatch ``x`` with the basis ``(structural, inactive)``, without HiGHS.

        Linearise at the AC power flow of ``x`` (:meth:`engine.losses.Relinearisation.at`), take the basic
        solution of the same basis there with the nonbasic columns held (:meth:`_Probe.settle`), and again
        from its dispatch until no bid moves more than ``losses.STEP_TOL_KW`` and the import is within
        ``losses.RESIDUAL_TOL_KW`` of the AC power flow's (the tests :meth:`NodalMarket.converge` stops on):
        that dispatch is then its own linearisation's basic solution,
        and the prices at which the basis is optimal there (:meth:`_Probe.dual_range`) are exactly those at
        which it is a fixed point, as for a clearing's range (class docstring). A bid held inside its
        quantity fixes the price (a point of a stretch, ``low == high``). None where the basis leaves a
        bound or is optimal at no price: the caller then clears instead.
        """
        m, t = self.market, self.t
        book, T = m.columns.book, m.book.n_interval
        bid = m.model.var("bid").slice
        for _ in range(_ANCHOR_ITERATIONS):
            shed = m.solver.block(x, "shed").reshape(T, -1) * S_BASE_KVA if m.model.has_var("shed") else None
            point = losses.operating_point(m.feeder, *net_withdrawal(m.feeder, book, x[bid], m.loads(), shed))
            self.anchored += 1
            if not point.converged:
                return None
            probe = _Probe(m, t, m._relinearise.at(point))
            settled = probe.settle(x, structural, inactive)
            if settled is None:
                return None
            moved = float(np.max(np.abs(settled[0][bid] - x[bid]), initial=0.0)) * S_BASE_KVA
            x, core = settled
            residual = abs(float(x[probe.col] - point.p0[t])) * S_BASE_KVA
            if moved <= STEP_TOL_KW and residual <= losses.RESIDUAL_TOL_KW:
                break
        else:
            return None
        span = probe.dual_range(x, structural, core)
        if span is None:
            return None
        low, high = span
        price = low if high == low else (low + high) / 2.0 if math.isfinite(low + high) else \
            (high - 1.0 if math.isfinite(high) else low + 1.0)
        q = float(x[probe.col])
        g = float(np.sum(m.solver.cost * x)) - m.solver.cost[probe.col] * q
        sample = _Sample(price, q, g, low, high)
        self.residual_kw = max(self.residual_kw, residual)
        if keep and high > low:
            basis = probe._factor(price, x, g, structural, inactive, core=core)
            if basis is not None:
                self._anchors[id(sample)] = (sample, probe, basis)
        return sample

    def walk(self, a: _Sample, limit: float, tol: float) -> list[_Sample] | None:
        """Fixed points past ``a``'s range towards ``limit``, found from ``a``'s basis without HiGHS.

        On ``a``'s linearisation the tracer's bound flips (:meth:`_Probe._flips`) give the bids that
        switch past ``a.high``; as many are taken at once as move the import by at most ``2 tol`` (MW;
        at least one), or the pivot that ends ``a``'s range (:meth:`_Probe._pivot`), and the result is
        anchored (:meth:`anchor`): the next fixed point, ``v``. Between ``a`` and ``v`` the import lies
        between theirs (monotone), so a pair within ``2 tol`` is one band. Where one bid clears
        part-way between them (``v``'s range starts after ``a``'s ends: a stretch), the stretch is
        drawn by anchoring that bid at evenly spaced quantities, each fixing its own price, with
        imports no more than ``2 tol`` apart. None when ``a`` has no basis to walk on or no fixed point
        is reached: the caller clears instead.
        """
        entry = self._anchors.pop(id(a), None)
        if entry is None or entry[0] is not a:
            return None
        _, probe, basis = entry
        if basis.p0_pos < 0:
            return None
        samples, brk = probe._flips(basis, True, limit)
        if samples:
            _, _, idx = _first_events(basis.up, len(samples))
            s = self.market.solver
            k = max(1, int(np.sum(a.q - np.array([x.q for x in samples]) <= 2.0 * tol)))
            # Fewer bids where the first leap finds no fixed point; where even one does not (its stretch
            # reaches past the next bid's switch), that bid with the next few.
            tries = [k >> i for i in range(k.bit_length())] + list(range(2, min(len(samples), 4) + 1))
            for k in dict.fromkeys(tries):
                cols = idx[:k]
                x = basis.x.copy()
                lo, hi = s.col_lower[cols], s.col_upper[cols]
                x[cols] = np.where(x[cols] - lo <= hi - x[cols], hi, lo)
                v = self.anchor(x, basis.structural, basis.inactive)
                if v is not None:
                    break
        elif brk is not None:
            pivot = probe._pivot(basis, brk, True)
            if pivot is None:
                return None
            nxt = pivot[1]
            cols = None
            v = self.anchor(nxt.x, nxt.structural, nxt.inactive)
        else:
            return None
        if v is None or v.q >= a.q - Q_TOL_MW or v.high < a.high:
            return None
        cert = CERT_REL_TOL * max(1.0, abs(a.high), abs(v.low))
        if v.low <= a.high + cert or a.q - v.q <= 2.0 * tol or cols is None or len(cols) != 1:
            return [v]
        # A stretch: one bid clearing part-way, its price set by its own effect on the losses.
        ramp = self._stretch(a, v, basis, int(cols[0]), float(x[cols[0]]), tol, cert)
        return [v] if ramp is None else [*ramp, v]

    def _stretch(self, a: _Sample, v: _Sample, basis: _Basis, j: int, end: float, tol: float,
                 cert: float) -> list[_Sample] | None:
        """Samples of the stretch between ``a.high`` and ``v.low`` where column ``j`` of ``a``'s basis goes
        from its value there to ``end``, its imports no more than ``2 tol`` (MW) apart.

        Anchored with ``j`` held inside its quantity, each share of it is the fixed point at the one
        price where its reduced cost vanishes (:meth:`anchor`). The price and the import are smooth
        in the share (the AC marginal losses are), so the stretch is anchored adaptively: a piece
        whose middle anchor lies within ``tol / 4`` of the straight line through its ends (in
        import, and in price times the piece's slope) is filled by interpolation; otherwise both
        halves are anchored again. The largest such deviation is kept in ``interpolated`` (MW,
        relative to the import). None when an anchor fails or leaves the stretch.
        """
        start = float(basis.x[j])

        def pinned(share: float) -> _Sample | None:
            x = basis.x.copy()
            x[j] = start + share * (end - start)
            c = self.anchor(x, basis.structural, basis.inactive, keep=False)
            return None if c is None or c.high > c.low else c

        knots = [(0.0, a.high, a.q, a.g), (1.0, v.low, v.q, v.g)]
        out: list[_Sample] = []
        stack = [(knots[0], knots[1], 0)]
        while stack:
            k0, k1, depth = stack.pop()
            (s0, p0, q0, _), (s1, p1, q1, g1) = k0, k1
            if q0 - q1 <= 2.0 * tol:
                out.append(_Sample(p1, q1, g1, p1, p1))
                continue
            if depth >= CURVE_MAX_DEPTH:
                return None
            c = pinned((s0 + s1) / 2.0)
            if c is None or not p0 - cert <= c.price <= p1 + cert or not q0 >= c.q >= q1:
                return None
            km = ((s0 + s1) / 2.0, c.price, c.q, c.g)
            slope = (q0 - q1) / max(p1 - p0, cert)
            off = max(abs(c.q - (q0 + q1) / 2.0), abs(c.price - (p0 + p1) / 2.0) * slope)
            if off > tol / 4.0:
                stack += [(km, k1, depth + 1), (k0, km, depth + 1)]
                continue
            self.interpolated = max(self.interpolated, off / max(min(abs(q0), abs(q1)), CURVE_ABS_KW / S_BASE_KVA))
            for (_, pa, qa, ga), (_, pb, qb, gb) in ((k0, km), (km, k1)):
                n = math.ceil((qa - qb) / (1.9 * tol))
                for w in np.arange(1, n + 1) / n:
                    p, q, g = pa + w * (pb - pa), qa + w * (qb - qa), ga + w * (gb - ga)
                    out.append(_Sample(p, q, g, p, p))
        out.pop()                       # the last is v's end of the stretch: v itself follows
        return out

    def at(self, price: float, between: tuple[float, float] = (math.inf, -math.inf)) -> _Sample:
        """The clearing at ``price``: import (MW), tangent, and the price range on which it holds.

        ``between``: the imports (MW) of the clearings at a lower and a higher price; a warm
        clearing that is no vertex is kept only when its import lies between them."""
        m, t = self.market, self.t
        prices = m.iso_price.copy()
        prices[t] = price
        m.set_iso_price(prices)
        sample, vertex = self._converged(price)
        if not vertex and not between[0] + Q_TOL_MW >= sample.q >= between[1] - Q_TOL_MW:
            # Warm from the last clearing, successive LP may settle elsewhere than a fresh clearing
            # where bids clear part-way (the import out of order says so): start where ``clear``
            # starts, so the curve says what it does.
            m.restart()
            sample, _ = self._converged(price)
        return sample

    def _converged(self, price: float) -> tuple[_Sample, bool]:
        """Converge at the prices set: the sample, and whether its fixed point is a vertex."""
        m, t = self.market, self.t
        sol = m.converge()
        self.clearings += 1
        self.solves += m.convergence["iterations"] if m.convergence else 1
        if not sol.ok:
            raise InputError("market", "iso_price", f"the market is not solvable ({sol.status}) at an ISO "
                             f"price of {price:g} in interval {t}: no interface curve exists")
        s = m.solver
        q = float(s.block(sol.x, "import_p")[t])
        g = float(np.sum(s.cost * sol.x)) - price * q
        self.residual_kw = max(self.residual_kw, m.convergence["residual_import_kw"])
        probe = _Probe(m, t)
        ranged, basis = probe.solve(price)
        self.solves += 1
        bids = m.model.var("bid").slice
        vertex = (abs(ranged.q - q) <= Q_TOL_MW and
                  float(np.max(np.abs(basis.x[bids] - sol.x[bids]), initial=0.0)) * S_BASE_KVA <= STEP_TOL_KW)
        if vertex and m.convergence["converged"]:
            sample = _Sample(price, q, g, min(ranged.low, price), max(ranged.high, price))
            if isinstance(m, NodalMarket):
                # Walked on from (:meth:`walk`): one feeder's AC power flow re-linearises it. A horizon
                # whose network changes (engine.runs.CoupledMarket) has one per run: it is cleared instead.
                self._anchors[id(sample)] = (sample, probe, basis)
            return sample, True
        return _Sample(price, q, g, price, price), False


def _band_tol(a: _Sample, b: _Sample) -> float:
    """Largest error (MW) of one band standing for the imports between two clearings."""
    return max(CURVE_REL_TOL * min(abs(a.q), abs(b.q)), CURVE_ABS_KW / S_BASE_KVA)


def _trace_fixed_points(fixed: _FixedPoints, floor: float, cap: float,
                        max_clearings: int) -> tuple[list[tuple[float, float, float]], CurveCheck]:
    """Bands ``(price_low, price_high, import_kw)`` of one interval of a loss-aware market, floor to cap.

    Between two clearings ``a < b`` the import is non-increasing (the optimal cost is
    concave in the ISO price, whatever the model), so it lies between theirs. A pair is
    settled when a's range meets b's (one step, where they meet), when their imports
    differ by at most twice the band tolerance (one band at the middle import, off by at
    most the tolerance; this is how a stretch where a bid clears part-way is drawn), or
    when the gap is narrower than ``CURVE_PRICE_TOL`` (a step located within it).
    Otherwise a clearing in the gap splits it: just past a's range first (a bid flipping
    at a's end starts the next range there), then where the two tangents meet. After
    ``CURVE_MAX_DEPTH`` splits without a new range, the step goes where the tangents meet.
    Before any clearing, a pair whose left end has a basis is walked (:meth:`_FixedPoints.walk`):
    the fixed points it reaches split the pair the same way, at no HiGHS solve.
    """
    first = fixed.at(floor)
    last = first if first.high >= cap else fixed.at(cap)
    probed: set[int] = set()
    stack = [(first, last, 0)]
    done: list[tuple[_Sample, _Sample, float | None]] = []
    worst, unresolved = 0.0, 0
    while stack:
        a, b, depth = stack.pop()
        if a is b or a.q - b.q <= Q_TOL_MW:
            done.append((a, b, None))
            continue
        cert = CERT_REL_TOL * max(1.0, abs(a.high), abs(b.low))
        if a.high >= b.low - cert:
            done.append((a, b, min(max((a.high + b.low) / 2.0, a.price), b.price)))
            continue
        if a.q - b.q <= 2 * _band_tol(a, b):
            done.append((a, b, math.nan))
            worst = max(worst, (a.q - b.q) / 2.0 / max(min(abs(a.q), abs(b.q)), CURVE_ABS_KW / S_BASE_KVA))
            continue
        width = b.low - a.high
        lam = (b.g - a.g) / (a.q - b.q)
        if not a.high + 0.01 * width < lam < b.low - 0.01 * width:
            lam = a.high + width / 2.0
        if depth >= CURVE_MAX_DEPTH:
            # Clearings this close in price that still disagree: a step where the tangents meet.
            done.append((a, b, lam))
            unresolved += 1
            continue
        if b.low - a.high <= CURVE_PRICE_TOL * max(1.0, abs(a.high)):
            done.append((a, b, (a.high + b.low) / 2.0))
            continue
        walked = fixed.walk(a, b.low, _band_tol(a, b))
        if walked is not None:
            seq = [a, *walked, b]
            stack += [(x, y, depth) for x, y in zip(seq[:-1], seq[1:])][::-1]
            continue
        if fixed.clearings >= max_clearings:
            raise RuntimeError(f"loss-aware curve: more than {max_clearings} clearings in interval {fixed.t}")
        past = a.high > a.low and id(a) not in probed
        if past:
            probed.add(id(a))
            lam = a.high + min(max(cert, 1e-9 * max(1.0, abs(a.high))), width / 2.0)
        c = fixed.at(lam, (a.q, b.q))
        c = fixed.keep(c, _Sample(c.price, c.q, c.g, max(c.low, a.high), min(c.high, b.low)))
        # A range that starts where a's ends is progress along the curve, not a subdivision.
        onward = depth if past and c.low <= a.high + cert else depth + 1
        stack += [(c, b, onward), (a, c, depth + 1)]
    bands: list[list[float]] = []
    low, q = floor, first.q
    for a, b, step in done:
        if step is None:
            continue
        if math.isnan(step):            # a stretch drawn as one band at its middle import
            if a.high > low:
                bands.append([low, a.high, q])
            bands.append([a.high, b.low, (a.q + b.q) / 2.0])
            low = b.low
        elif step > low:
            bands.append([low, step, q])
            low = step
        q = b.q
    bands.append([low, cap, q])
    bands = [band for band in bands if band[1] > band[0] + P_REL_TOL * max(1.0, abs(band[0]))] or bands[-1:]
    for lo, hi in zip(bands[:-1], bands[1:]):   # dropping a sliver leaves its neighbours to meet
        hi[0] = lo[1]
    bands[0][0], bands[-1][1] = floor, cap
    merged = _merge_equal(bands)
    # A band in an interpolated stretch may be off by the interpolation's deviation on top of its own width.
    check = CurveCheck(bands=len(merged), clearings=fixed.clearings, max_error_pct=(worst + fixed.interpolated) * 100.0,
                       max_residual_kw=fixed.residual_kw, unresolved_steps=unresolved, anchored=fixed.anchored)
    return [(lo, hi, qq * S_BASE_KVA) for lo, hi, qq in merged], check


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


def _fixed_table(book: BidBook, load_p_kw: np.ndarray) -> pl.DataFrame:
    return pl.DataFrame({"interval": _iv_column(book.intervals, np.arange(book.n_interval)),
                         "fixed_kw": load_p_kw.sum(axis=0)})


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
