"""Nodal clearing of a distribution market: dispatch, DLMPs and their components.

:func:`clear` is the one-shot entry point. :class:`NodalMarket` keeps a built
LinDistFlow model in a persistent HiGHS instance so that the interface curve
and the disaggregation of ISO awards re-solve it warm with a new ISO price or a
fixed interface import, instead of rebuilding it.

Sign conventions: DLMP at a bus is the cost of one more kW *withdrawn* there,
per MWh. ``dlmp = energy + congestion + voltage + loss`` where ``energy`` is
the ISO price at the interface, ``congestion`` collects thermal limits and any
interface import/export limit, ``voltage`` the voltage limits, and ``loss`` is
zero in the lossless LinDistFlow model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import polars as pl

from dsomarket.engine import lindistflow
from dsomarket.engine.bids import BidBook, MarketRules, Resource, canonical, merge_columns, validate_bids
from dsomarket.engine.errors import InputError
from dsomarket.engine.network import S_BASE_KVA, Feeder
from dsomarket.engine.solver import HighsSolver, Solution

FORMULATIONS = ("lindistflow", "socp")
ECOS_MAX_BUSES = 500
ROUND_KW = 6  # decimals of kW kept in outputs: sub-milliwatt solver noise is not a dispatch


@dataclass(frozen=True)
class ClearingOptions:
    """How to clear.

    Attributes
    ----------
    formulation
        ``lindistflow`` (LP, default) or ``socp`` (branch-flow with losses).
    polygon_sides
        Sides of the inscribed polygon approximating each thermal limit in the LP.
    ac_check
        Run an AC power flow of the cleared dispatch and report the linear model's error.
    time_limit
        Seconds the solver may take; ``None`` for no limit.
    socp_solver
        ``ecos``, ``clarabel`` or ``auto``: ECOS up to ``ECOS_MAX_BUSES`` buses
        (tighter cones on small feeders), Clarabel above (ECOS returns
        inaccurate answers from about 1,000 buses).
    """

    formulation: str = "lindistflow"
    polygon_sides: int = lindistflow.POLYGON_SIDES
    ac_check: bool = True
    time_limit: float | None = None
    socp_solver: str = "auto"

    def __post_init__(self):
        if self.formulation not in FORMULATIONS:
            raise InputError("options", "formulation", f"must be one of {FORMULATIONS} "
                             f"(got {self.formulation!r})")
        if self.socp_solver not in ("auto", "ecos", "clarabel"):
            raise InputError("options", "socp_solver", f"must be auto, ecos or clarabel (got {self.socp_solver!r})")


@dataclass(frozen=True, eq=False)
class MarketContext:
    """What a formulation's arrays need around them to become result tables."""

    feeder: Feeder
    book: BidBook
    iso_price: np.ndarray
    formulation: str
    build_seconds: float


@dataclass(frozen=True, eq=False)
class ClearingResult:
    """Outcome of one clearing; tables are in kW, kvar, pu and per MWh.

    ``dispatch``: bid_id, interval, bus, side, aggregator_id, resource_id, price,
    quantity_kw, tan_phi, cleared_kw, in (interval, bid_id) order. ``prices``: bus, interval, dlmp, energy, congestion,
    voltage, loss, dlmp_q (reactive, per Mvarh). ``lines``: line, interval,
    p_kw, q_kvar (from_bus -> to_bus as given), loading_pct (null where
    unlimited). ``buses``: bus, interval, v_pu. ``interface``: interval,
    import_kw, import_kvar, iso_price. ``welfare`` is in currency over all
    intervals (buyers' value minus sellers' cost minus the ISO energy bill).
    """

    status: str
    formulation: str
    intervals: list
    welfare: float
    dispatch: pl.DataFrame
    prices: pl.DataFrame
    lines: pl.DataFrame
    buses: pl.DataFrame
    interface: pl.DataFrame
    solver: str
    build_seconds: float
    solve_seconds: float
    diagnosis: tuple = ()
    shed: pl.DataFrame | None = None
    ac_check: dict | None = None
    relaxation_gap: float | None = None

    @property
    def ok(self) -> bool:
        return self.status == "optimal"

    @property
    def interface_import_kw(self) -> np.ndarray:
        return self.interface["import_kw"].to_numpy()

    def summary(self) -> dict:
        """The JSON-ready summary written as ``summary.json``."""
        out = {
            "status": self.status,
            "formulation": self.formulation,
            "welfare": self.welfare,
            "interface_import_kw": (self.interface_import_kw.tolist() if len(self.intervals) > 1
                                    else (float(self.interface_import_kw[0]) if self.ok else None)),
            "solver": self.solver,
            "build_seconds": self.build_seconds,
            "solve_seconds": self.solve_seconds,
            "intervals": [None if iv is None else iv.isoformat() for iv in self.intervals],
            "ac_check": self.ac_check,
        }
        if self.diagnosis:
            out["diagnosis"] = list(self.diagnosis)
        if self.relaxation_gap is not None:
            out["relaxation_gap"] = self.relaxation_gap
        if self.shed is not None and self.shed.height:
            out["shed_kw"] = float(self.shed["shed_kw"].sum())
        return out


def iso_prices(iso_price, T: int) -> np.ndarray:
    p = np.atleast_1d(np.asarray(iso_price, dtype=float))
    if p.size == 1:
        p = np.repeat(p, T)
    if p.shape != (T,):
        raise InputError("iso_price", "iso_price", f"needs one price per interval ({T}), got {p.size}")
    if not np.all(np.isfinite(p)):
        raise InputError("iso_price", "iso_price", "must be finite")
    return p


class NodalMarket:
    """A built LinDistFlow clearing model of one feeder and bid book, re-solvable in place.

    Changing the ISO price (:meth:`set_iso_price`) or fixing the interface import
    (:meth:`fix_import`) keeps HiGHS's basis, so the next :meth:`solve` is warm.
    The feeder and the bids are never modified.
    """

    def __init__(self, feeder: Feeder, book: BidBook, iso_price, rules: MarketRules = MarketRules(),
                 resources: tuple[Resource, ...] = (), options: ClearingOptions = ClearingOptions(),
                 load_p_kw: np.ndarray | None = None, load_q_kvar: np.ndarray | None = None):
        t0 = time.perf_counter()
        self.feeder, self.book, self.rules, self.resources, self.options = feeder, book, rules, resources, options
        self.iso_price = iso_prices(iso_price, book.n_interval)
        # One LP column per group of identical bids; results are split back pro rata.
        self.columns = merge_columns(book, {r.resource_id for r in resources})
        try:
            self.model = lindistflow.build(feeder, self.columns.book, self.iso_price, rules, resources, load_p_kw,
                                           load_q_kvar, options.polygon_sides)
        except InputError as err:
            if err.row is None or not self.columns.merged:
                raise
            raise InputError(err.table, err.field, err.reason, row=int(self.columns.first_bid[err.row])) from None
        self.solver = HighsSolver(self.model, time_limit=options.time_limit)
        self.build_seconds = time.perf_counter() - t0
        self._load_p_kw = load_p_kw
        self._load_q_kvar = load_q_kvar

    def set_iso_price(self, iso_price) -> None:
        """ISO price per interval (per MWh) at the interface; scalar broadcasts."""
        self.iso_price = iso_prices(iso_price, self.book.n_interval)
        self.solver.set_cost("import_p", self.iso_price)

    def fix_import(self, import_kw) -> None:
        """Hold the interface import at ``import_kw`` per interval (NaN = leave free); None frees all."""
        f = self.feeder
        lo = np.full(self.book.n_interval, -f.export_max_kw / S_BASE_KVA)
        hi = np.full(self.book.n_interval, f.import_max_kw / S_BASE_KVA)
        if import_kw is not None:
            q = np.broadcast_to(np.asarray(import_kw, dtype=float), lo.shape)
            fixed = np.isfinite(q)
            lo[fixed] = hi[fixed] = q[fixed] / S_BASE_KVA
        self.solver.set_col_bounds("import_p", lo, hi)

    def bid_mw(self, x: np.ndarray) -> np.ndarray:
        """Cleared MW per bid (book order) of a full primal vector, pro rata within identical bids."""
        return self.columns.split(self.solver.block(x, "bid"), self.book)

    def hold_bids(self, bid_mw: np.ndarray | None) -> None:
        """Hold the bids at ``bid_mw`` (MW per bid, book order); None frees them to ``[0, quantity]``."""
        if bid_mw is None:
            q = self.columns.book.quantity_kw / S_BASE_KVA
            self.solver.set_col_bounds("bid", 0.0, q)
        else:
            x = self.columns.total(np.asarray(bid_mw, dtype=float))
            self.solver.set_col_bounds("bid", x, x)

    def solve_raw(self) -> Solution:
        return self.solver.solve()

    def solve(self) -> ClearingResult:
        sol = self.solver.solve()
        if not sol.ok:
            diag = diagnose(self) if sol.status == "infeasible" else ()
            return _failed(self.context, sol.status, sol.solve_seconds, diag)
        return self.result(sol)

    def result(self, sol: Solution) -> ClearingResult:
        """Tables of an optimal solution (dispatch pro rata among identical bids)."""
        s, book, topo = self.solver, self.book, self.feeder.topology
        n, m, T = topo.n_bus, topo.n_line, book.n_interval
        x = self.bid_mw(sol.x)
        line_p = s.block(sol.x, "line_p").reshape(T, m)
        line_q = s.block(sol.x, "line_q").reshape(T, m)
        v = s.block(sol.x, "v").reshape(T, n)
        p0 = s.block(sol.x, "import_p")
        q0 = s.block(sol.x, "import_q")
        y_p = s.block(sol.row_dual, "bus_p_balance", rows=True).reshape(T, n)
        y_q = s.block(sol.row_dual, "bus_q_balance", rows=True).reshape(T, n)
        y_v = s.block(sol.row_dual, "voltage_drop", rows=True).reshape(T, m)
        cong_line = np.zeros((T, m))
        if self.model.has_con("line_thermal"):
            faces = lindistflow.polygon_faces(self.options.polygon_sides)
            limited = np.nonzero(np.isfinite(topo.s_max_kva))[0]
            y_s = s.block(sol.row_dual, "line_thermal", rows=True).reshape(T, len(limited), len(faces.cos))
            cong_line[:, limited] = -(y_s @ faces.cos)
        # Stationarity of each free line flow gives dlmp(child) - dlmp(parent) =
        # -2 r y_V - sum_k cos(phi_k) y_S: sum it along the path from the root.
        volt_line = -2 * topo.r_pu[None, :] * y_v
        interface = -s.block(sol.col_dual, "import_p")  # non-zero only at an import/export limit
        congestion = interface[:, None] + topo.path_sum(cong_line.T).T
        voltage = topo.path_sum(volt_line.T).T
        energy = np.repeat(self.iso_price[:, None], n, axis=1)
        shed = s.block(sol.x, "shed").reshape(T, n) * S_BASE_KVA if self.model.has_var("shed") else None
        welfare = -sol.objective * self.rules.hours
        ac = ac_check(self.feeder, book, x, line_p, line_q, v, self.loads(), shed) if self.options.ac_check else None
        return _tables(self.context, "optimal", x, line_p, line_q, v, p0, q0, y_p, y_q,
                       (energy, congestion, voltage, np.zeros_like(energy)), welfare, sol.solve_seconds,
                       shed=shed, ac=ac, solver="highs")

    def loads(self) -> tuple[np.ndarray, np.ndarray]:
        """Fixed withdrawal (kW, kvar) per bus and interval this market clears against, shape (n, T)."""
        if self._load_p_kw is not None:
            return self._load_p_kw, self._load_q_kvar
        return lindistflow.market_loads(self.feeder, self.book)

    @property
    def context(self) -> MarketContext:
        return MarketContext(self.feeder, self.book, self.iso_price, "lindistflow", self.build_seconds)


def pro_rata(book: BidBook, x: np.ndarray) -> np.ndarray:
    """Share the cleared total of identical bids in proportion to their quantities.

    Bids at the same bus, interval, side, price, tan_phi and resource are the
    same column of the LP up to its bound, so any split of their total is
    optimal; the solver's vertex picks one arbitrarily. Splitting pro rata makes
    the outcome fair and independent of input order. (:class:`NodalMarket`
    merges such bids into one column before building its model.)
    """
    columns = merge_columns(book)
    return columns.split(columns.total(x), book)


def _iv_column(intervals: list, t_idx: np.ndarray) -> pl.Series:
    values = [intervals[t] for t in t_idx]
    return pl.Series("interval", values, dtype=pl.Datetime("us", "UTC"))


def _tables(market: MarketContext, status: str, x, line_p, line_q, v, p0, q0, y_p, y_q, parts, welfare,
            solve_seconds, shed=None, ac=None, solver="highs", gap=None) -> ClearingResult:
    """Result tables from arrays in MW / pu, shaped (T, n) per bus and (T, m) per line."""
    feeder, book = market.feeder, market.book
    topo = feeder.topology
    n, m, T = topo.n_bus, topo.n_line, book.n_interval
    ivs = book.intervals
    tab = book.table
    # Round first, then clip: rounding a full acceptance up must not exceed the bid.
    cleared = np.clip(np.round(x * S_BASE_KVA, ROUND_KW), 0.0, book.quantity_kw) + 0.0
    dispatch = tab.select("bid_id", "interval", "bus", "side", "aggregator_id", "resource_id", "price",
                          "quantity_kw", "tan_phi").with_columns(pl.Series("cleared_kw", cleared))
    t_bus = np.repeat(np.arange(T), n)
    t_line = np.repeat(np.arange(T), m)
    energy, congestion, voltage, loss = parts
    prices = pl.DataFrame({
        "bus": np.tile(topo.bus_ids, T).astype(str),
        "interval": _iv_column(ivs, t_bus),
        # + 0.0 turns the solver's signed zeros into plain zeros in the files.
        "dlmp": y_p.ravel() + 0.0, "energy": energy.ravel() + 0.0, "congestion": congestion.ravel() + 0.0,
        "voltage": voltage.ravel() + 0.0, "loss": loss.ravel() + 0.0, "dlmp_q": y_q.ravel() + 0.0,
    })
    p_kw = np.round(line_p * S_BASE_KVA * topo.line_sign[None, :], ROUND_KW) + 0.0
    q_kvar = np.round(line_q * S_BASE_KVA * topo.line_sign[None, :], ROUND_KW) + 0.0
    s_lim = np.tile(topo.s_max_kva, T)
    loading = np.hypot(p_kw, q_kvar).ravel() / s_lim * 100.0
    lines = pl.DataFrame({
        "line": np.tile(topo.line_ids, T).astype(str),
        "interval": _iv_column(ivs, t_line),
        "p_kw": p_kw.ravel(), "q_kvar": q_kvar.ravel(),
        "loading_pct": pl.Series(np.where(np.isfinite(s_lim), loading, np.nan)).fill_nan(None),
    })
    buses = pl.DataFrame({"bus": np.tile(topo.bus_ids, T).astype(str), "interval": _iv_column(ivs, t_bus),
                          "v_pu": np.sqrt(np.maximum(v.ravel(), 0.0))})
    interface = pl.DataFrame({"interval": _iv_column(ivs, np.arange(T)),
                              "import_kw": np.round(p0 * S_BASE_KVA, ROUND_KW) + 0.0,
                              "import_kvar": np.round(q0 * S_BASE_KVA, ROUND_KW) + 0.0,
                              "iso_price": market.iso_price})
    shed_df = None
    if shed is not None:
        tt, jj = np.nonzero(shed > 1e-6)
        shed_df = pl.DataFrame({"bus": topo.bus_ids[jj].astype(str), "interval": _iv_column(ivs, tt),
                                "shed_kw": shed[tt, jj]})
    return ClearingResult(status=status, formulation=market.formulation, intervals=list(ivs),
                          welfare=float(welfare), dispatch=dispatch, prices=prices, lines=lines, buses=buses,
                          interface=interface, solver=solver, build_seconds=market.build_seconds,
                          solve_seconds=solve_seconds, shed=shed_df, ac_check=ac, relaxation_gap=gap)


def _failed(market: MarketContext, status: str, solve_seconds: float, diagnosis: tuple,
            solver: str = "highs") -> ClearingResult:
    empty = pl.DataFrame()
    dispatch = market.book.table.select("bid_id", "interval", "bus", "side", "aggregator_id", "resource_id",
                                        "price", "quantity_kw", "tan_phi").with_columns(
        cleared_kw=pl.lit(None, pl.Float64))
    return ClearingResult(status=status, formulation=market.formulation,
                          intervals=list(market.book.intervals), welfare=float("nan"), dispatch=dispatch,
                          prices=empty, lines=empty, buses=empty,
                          interface=pl.DataFrame({"interval": _iv_column(market.book.intervals,
                                                                         np.arange(market.book.n_interval)),
                                                  "import_kw": np.full(market.book.n_interval, np.nan)}),
                          solver=solver, build_seconds=market.build_seconds, solve_seconds=solve_seconds,
                          diagnosis=diagnosis)


def diagnose(market: NodalMarket) -> tuple[dict, ...]:
    """Which limits, where and when, make the market infeasible.

    Solves HiGHS's feasibility relaxation in which only physical limits may
    bend (voltage bounds, thermal rows, the interface limits, storage and EV
    rows); balances, the voltage-drop law and bid quantities stay hard. Every
    limit the relaxed solution has to bend is reported with its violation.
    """
    model, feeder, book = market.model, market.feeder, market.book
    topo = feeder.topology
    n, T = topo.n_bus, book.n_interval
    probe = HighsSolver(model)
    # Carry over bounds changed in place (a fixed interface import, say).
    all_cols = np.arange(model.n_col, dtype=np.int32)
    probe.h.changeColsBounds(model.n_col, all_cols, market.solver.col_lower, market.solver.col_upper)
    probe.col_lower, probe.col_upper = market.solver.col_lower.copy(), market.solver.col_upper.copy()
    row_pen = np.full(model.n_row, -1.0)
    lo_pen = np.full(model.n_col, -1.0)
    up_pen = np.full(model.n_col, -1.0)
    soft_rows = [name for name in ("line_thermal", "battery_soc", "battery_charge", "battery_discharge",
                                   "ev_energy", "ev_charge", "ramp", "commitment_sell", "commitment_buy")
                 if model.has_con(name)]
    for name in soft_rows:
        row_pen[model.con(name).slice] = 1.0
    v = model.var("v")
    free_v = np.ones(v.size, dtype=bool)
    free_v[::n] = False  # the root voltage is set by the ISO, not a limit
    lo_pen[v.start:v.start + v.size][free_v] = 1.0
    up_pen[v.start:v.start + v.size][free_v] = 1.0
    lo_pen[model.var("import_p").slice] = 1.0
    up_pen[model.var("import_p").slice] = 1.0
    if model.has_var("soc"):
        lo_pen[model.var("soc").slice] = 1.0
        up_pen[model.var("soc").slice] = 1.0
    relaxed = probe.relax_feasibility(row_pen, lo_pen, up_pen)
    if relaxed is None:
        return ({"limit": "unknown", "element": "", "interval": None,
                 "detail": "even with every physical limit relaxed no dispatch balances the feeder"},)
    rows, cols = relaxed
    tol = 1e-7
    ivs = book.intervals

    def iso(t: int) -> str | None:
        return None if ivs[t] is None else ivs[t].isoformat()

    out: list[dict] = []
    vv = cols[v.slice].reshape(T, n)
    for label, bad, amount in (("bus_v_min", vv < (topo.vmin_pu ** 2)[None, :] - tol,
                                np.sqrt(np.maximum(topo.vmin_pu[None, :] ** 2, 0)) - np.sqrt(np.maximum(vv, 0))),
                               ("bus_v_max", vv > (topo.vmax_pu ** 2)[None, :] + tol,
                                np.sqrt(np.maximum(vv, 0)) - topo.vmax_pu[None, :])):
        bad[:, 0] = False
        for t, j in zip(*np.nonzero(bad)):
            out.append({"limit": label, "element": str(topo.bus_ids[j]), "interval": iso(t),
                        "violation": float(amount[t, j]), "unit": "pu"})
    imp = model.var("import_p").slice
    p0 = cols[imp] * S_BASE_KVA
    p0_lo, p0_hi = probe.col_lower[imp] * S_BASE_KVA, probe.col_upper[imp] * S_BASE_KVA
    fixed = p0_lo == p0_hi
    for t in range(T):
        what = "interface_import_fixed" if fixed[t] else "interface_import_max"
        if p0[t] > p0_hi[t] + 1e-4:
            out.append({"limit": what, "element": feeder.root_bus, "interval": iso(t),
                        "violation": float(p0[t] - p0_hi[t]), "unit": "kW"})
        if p0[t] < p0_lo[t] - 1e-4:
            out.append({"limit": "interface_import_fixed" if fixed[t] else "interface_export_max",
                        "element": feeder.root_bus, "interval": iso(t),
                        "violation": float(p0_lo[t] - p0[t]), "unit": "kW"})
    if model.has_con("line_thermal"):
        blk = model.con("line_thermal")
        limited = np.nonzero(np.isfinite(topo.s_max_kva))[0]
        k = lindistflow.polygon_faces(market.options.polygon_sides).cos.size
        act = rows[blk.slice].reshape(T, len(limited), k)
        bound = (topo.s_max_kva[limited] / S_BASE_KVA * lindistflow.polygon_faces(
            market.options.polygon_sides).inset)[None, :]
        over = (np.abs(act).max(axis=2) - bound) * S_BASE_KVA
        for t, li in zip(*np.nonzero(over > 1e-4)):
            out.append({"limit": "line_thermal", "element": str(topo.line_ids[limited[li]]), "interval": iso(t),
                        "violation": float(over[t, li]), "unit": "kVA"})
    for name in soft_rows:
        if name == "line_thermal":
            continue
        blk = model.con(name)
        act = rows[blk.slice]
        lo, hi = probe.row_lower[blk.slice], probe.row_upper[blk.slice]
        viol = np.maximum(lo - act, act - hi)
        for r in np.nonzero(viol > 1e-7)[0]:
            out.append({"limit": name, "element": f"row {int(r)}", "interval": None,
                        "violation": float(viol[r] * S_BASE_KVA), "unit": "kW or kWh"})
    if not out:
        out.append({"limit": "unknown", "element": "", "interval": None,
                    "detail": "the solver reports infeasibility but no single limit explains it"})
    return tuple(out)


def socp_solver(feeder: Feeder, options: ClearingOptions) -> str:
    """The conic solver for this feeder: the option, or for ``auto`` ECOS on small feeders, Clarabel on large."""
    if options.socp_solver != "auto":
        return options.socp_solver
    return "ecos" if feeder.topology.n_bus <= ECOS_MAX_BUSES else "clarabel"


def clear(feeder: Feeder, bids: pl.DataFrame | BidBook, iso_price, *, rules: MarketRules = MarketRules(),
          resources: tuple[Resource, ...] = (), options: ClearingOptions = ClearingOptions(),
          intervals: list | None = None) -> ClearingResult:
    """Clear the nodal market of one feeder.

    Parameters
    ----------
    feeder
        The radial feeder below the T-D interface.
    bids
        Bid table (see :mod:`engine.bids`) or an already validated :class:`BidBook`.
    iso_price
        ISO energy price at the interface per MWh, scalar or one per interval.
    rules, resources, options
        Market rules, intertemporal resources, formulation and solver options.
    intervals
        The market's intervals (UTC), when some have no bids.

    Returns
    -------
    ClearingResult
        ``status == "optimal"`` with the tables, or another status with a
        ``diagnosis`` naming the limits that cannot be met. Never raises for an
        infeasible market; raises :class:`InputError` for bad input.
    """
    book = bids if isinstance(bids, BidBook) else validate_bids(bids, feeder, rules, intervals)
    book = canonical(book, feeder, rules)  # input row order must not change the LP, hence the dispatch
    if options.formulation == "socp":
        from dsomarket.engine import socp  # cvxpy is imported only when the SOCP is asked for
        return socp.clear(feeder, book, iso_price, rules=rules, resources=resources, options=options,
                          solver=socp_solver(feeder, options))
    return NodalMarket(feeder, book, iso_price, rules, resources, options).solve()


def ac_check(feeder: Feeder, book: BidBook, x_mw: np.ndarray, line_p, line_q, v, loads, shed_kw=None) -> dict:
    """AC power flow of the cleared dispatch, interval by interval, against the linear model.

    Returns losses (kW, worst interval), the lowest AC voltage and where, and the
    worst voltage (pu) and flow (kW) error of the linear model.
    """
    from dsomarket.engine.powerflow import ac_power_flow, linear_model_error

    w_p, w_q = net_withdrawal(feeder, book, x_mw, loads, shed_kw)
    worst: dict = {"losses_kw": 0.0, "min_v_pu": np.inf, "min_v_bus": None, "max_v_error_pu": 0.0,
                   "max_flow_error_kw": 0.0, "converged": True}
    for t in range(book.n_interval):
        pf = ac_power_flow(feeder, w_p[:, t], w_q[:, t])
        worst["converged"] &= bool(pf.converged)
        worst["losses_kw"] = max(worst["losses_kw"], float(pf.losses_kw))
        if pf.min_v_pu < worst["min_v_pu"]:
            worst["min_v_pu"], worst["min_v_bus"] = float(pf.min_v_pu), str(pf.min_v_bus)
            if book.n_interval > 1:
                worst["min_v_interval"] = book.intervals[t].isoformat()
        err = linear_model_error(feeder, w_p[:, t], w_q[:, t], np.sqrt(np.maximum(v[t], 0)),
                                 line_p[t] * S_BASE_KVA, line_q[t] * S_BASE_KVA, ac=pf)
        worst["max_v_error_pu"] = max(worst["max_v_error_pu"], float(err["max_v_error_pu"]))
        worst["max_flow_error_kw"] = max(worst["max_flow_error_kw"], float(err["max_flow_error_kw"]))
    return worst


def net_withdrawal(feeder: Feeder, book: BidBook, x_mw: np.ndarray, loads, shed_kw=None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Net withdrawal per bus (topology order) and interval, kW and kvar, shape (n, T).

    Fixed load plus cleared buys minus cleared sells minus shed load.
    """
    load_p, load_q = loads
    w_p = load_p.astype(float).copy()
    w_q = load_q.astype(float).copy()
    kw = x_mw * S_BASE_KVA * book.withdraw_sign
    np.add.at(w_p, (book.bus_idx, book.t_idx), kw)
    np.add.at(w_q, (book.bus_idx, book.t_idx), kw * book.tan_phi)
    if shed_kw is not None:
        ratio = np.divide(load_q, load_p, out=np.zeros_like(load_q, dtype=float), where=load_p > 0)
        w_p -= shed_kw.T
        w_q -= shed_kw.T * ratio
    return w_p, w_q
