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

import numpy as np
import polars as pl

from dsomarket.engine import branches, lindistflow, losses, successive
from dsomarket.engine.bids import BidBook, BidColumns, Commitment, MarketRules, Resource, canonical, merge_columns, validate_bids
from dsomarket.engine.errors import InputError
from dsomarket.engine.network import S_BASE_KVA, Feeder
from dsomarket.engine.results import (ECOS_MAX_BUSES, FORMULATIONS, ROUND_KW, ClearingOptions,  # noqa: F401
                                      ClearingResult, MarketContext, TableLayout, _failed, _iv_column, _tables, ac_check,
                                      iso_prices, net_withdrawal, pro_rata)
from dsomarket.engine.solver import HighsSolver, Solution


class NodalMarket:
    """A built clearing LP of one feeder and bid book, re-solvable in place.

    ``options.formulation`` picks the model: ``lossaware`` (the default: the
    LinDistFlow LP linearised at the AC operating point, :mod:`engine.losses`)
    or ``lossless`` / ``lindistflow`` (:mod:`engine.lindistflow`). Both have the
    same variable blocks, so the interface curve and disaggregation work on
    either. Changing the ISO price (:meth:`set_iso_price`) or fixing the
    interface import (:meth:`fix_import`) keeps HiGHS's basis, so the next
    solve is warm. :meth:`converge` re-linearises the loss-aware model until
    the AC power flow of the dispatch agrees with it; :meth:`solve_raw` solves
    the current model as it stands. The feeder and the bids are never modified.

    ``standalone=False`` builds one part of a horizon whose network changes
    (:class:`engine.runs.CoupledMarket`): the model without the rows that link
    intervals (built once over the whole horizon there) and without a solver.
    """

    def __init__(self, feeder: Feeder, book: BidBook, iso_price, rules: MarketRules = MarketRules(),
                 resources: tuple[Resource, ...] = (), options: ClearingOptions = ClearingOptions(),
                 load_p_kw: np.ndarray | None = None, load_q_kvar: np.ndarray | None = None,
                 standalone: bool = True):
        t0 = time.perf_counter()
        self.feeder, self.book, self.rules, self.resources, self.options = feeder, book, rules, resources, options
        self.iso_price = iso_prices(iso_price, book.n_interval)
        self._load_p_kw = load_p_kw
        self._load_q_kvar = load_q_kvar
        self.lossaware = options.formulation == "lossaware"
        self.convergence: dict | None = None
        self._layout: tuple[Feeder, BidBook, TableLayout] | None = None   # see context
        # One LP column per group of identical bids; results are split back pro rata.
        self.columns = merge_columns(book, {r.resource_id for r in resources})
        if not standalone:
            # A part of a horizon model (engine.coupled): the rows that link intervals are built
            # over the whole horizon there; only per-interval commitments stay with the part.
            resources = tuple(r for r in resources if isinstance(r, Commitment))
        try:
            if self.lossaware:
                # Start from LinDistFlow (the linearisation with no losses): its first solve is a
                # cheap cold one and its dispatch a near point for the first re-linearisation.
                # No dispatch's AC point yet (None): the first solve only supplies one.
                self._point_bids: np.ndarray | None = None
                point = losses.lossless_point(feeder, *self.loads())
                if resources or rules.value_of_lost_load is not None:
                    self.model = losses.build(feeder, self.columns.book, self.iso_price, rules, point, resources,
                                              load_p_kw, load_q_kvar, options.polygon_sides)
                    self._relinearise = losses.Relinearisation.of(self.model, feeder, point, options.polygon_sides)
                    self.model = self._relinearise.model   # the same model, assembled once
                else:   # the network's part of the split made once per topology
                    self._relinearise, self.model = losses.Relinearisation.plain(
                        feeder, self.columns.book, self.iso_price, rules, point, load_p_kw, load_q_kvar,
                        options.polygon_sides)
                self.point = point   # the AC operating point the model is linearised at
                self._flat = (self.model, point)
            else:
                self.model = lindistflow.build(feeder, self.columns.book, self.iso_price, rules, resources,
                                               load_p_kw, load_q_kvar, options.polygon_sides)
        except InputError as err:
            if err.row is None or not self.columns.merged:
                raise
            raise InputError(err.table, err.field, err.reason, row=int(self.columns.first_bid[err.row])) from None
        self.solver = HighsSolver(self.model, time_limit=options.time_limit) if standalone else None
        self.build_seconds = time.perf_counter() - t0

    def set_iso_price(self, iso_price) -> None:
        """ISO price per interval (per MWh) at the interface; scalar broadcasts."""
        self.iso_price = iso_prices(iso_price, self.book.n_interval)
        self.solver.set_cost("import_p", self.iso_price)

    def fix_import(self, import_kw) -> None:
        """Hold the interface import at ``import_kw`` per interval (NaN = leave free); None frees all."""
        T = self.book.n_interval
        self.solver.set_col_bounds("import_p", *import_bounds(np.full(T, self.feeder.export_max_kw),
                                                              np.full(T, self.feeder.import_max_kw), import_kw))

    def relabel(self, book: BidBook) -> None:
        """Label results with ``book`` from now on: this market's bids at other interval starts (standing bids
        in a later cycle). ``book`` must equal :attr:`book` (canonical order) but for its interval starts, and
        the feeder must have no load profile: then the model, which knows intervals by index only, is the
        one ``book`` would build."""
        self.book = book
        self.columns = merge_columns(book, {r.resource_id for r in self.resources})

    def block(self, values: np.ndarray, name: str, rows: bool = False) -> np.ndarray:
        """The slice of a full primal/dual vector of the current model that belongs to a named block."""
        return values[(self.model.con(name) if rows else self.model.var(name)).slice]

    def bid_mw(self, x: np.ndarray) -> np.ndarray:
        """Cleared MW per bid (book order) of a full primal vector, pro rata within identical bids."""
        return self.columns.split(self.block(x, "bid"), self.book)

    def hold_bids(self, bid_mw: np.ndarray | None) -> None:
        """Hold the bids at ``bid_mw`` (MW per bid, book order; NaN = free); None frees them all."""
        self.solver.set_col_bounds("bid", *held_bounds(self.columns, bid_mw))

    def restart(self) -> None:
        """Back to the state a new market starts from: no basis and, loss-aware, its first model and
        no dispatch's point yet. The next :meth:`converge` then follows the path a fresh clearing at
        the same prices and bounds follows, hence ends where it does (a warm basis could end at
        another optimal vertex of a degenerate LP, or the loss-aware iteration at another point
        within its tolerance)."""
        if self.lossaware:
            self.model, self.point = self._flat
            self._point_bids = None
            successive.restore_limits(self.solver)   # limits widened for the last linearisation's noise
            self.solver.set_matrix(self.model)
        self.solver.h.clearSolver()

    def solve_raw(self) -> Solution:
        """One solve of the model as it stands (no re-linearisation); for the loss-aware model, one more
        when it was found infeasible by numerical noise only (:func:`engine.successive.relieve_noise`)."""
        sol = self.solver.solve()
        if sol.status == "infeasible" and self.lossaware and successive.relieve_noise(self.solver):
            sol = self.solver.solve()
        return sol

    def converge(self, compare: bool = True) -> Solution:
        """Solve; for the loss-aware model, re-linearise until the LP is at a KKT point of the AC problem.

        Successive linear programming (:func:`engine.successive.converge`, the
        iteration a horizon whose network changes runs too): the AC power flow of
        the dispatch (all intervals in one batched sweep), re-linearised there until
        the LP's import, line flows and voltages match it, no bid moved more than
        ``losses.STEP_TOL_KW``, and no bid is held against a pin or the trust
        region with a reduced cost above ``losses.MARGINAL_TOL``; bids whose
        optimum the losses hold inside their quantity settle by per-bid brackets
        and a Newton step on the losses' curvature, then a trust region accepted
        by the AC objective it gains. A new market starts from LinDistFlow
        (:func:`engine.losses.lossless_point`): a cheap cold solve whose dispatch
        is the first AC point; typically three more warm solves follow (1,000
        buses / 10,000 bids: 4 solves in all). Where some DLMP is negative the
        losses are worth money and the AC problem is non-convex: a bid whose own
        losses could hold it at the other end of its quantity is tried there (an
        interval's, or a resource's bids in it, at a time), and the best of the
        fixed points kept (:func:`engine.branches.best_fixed_point`;
        here, so that ``clear``, the curve's clearings and a kept market's re-clears
        choose alike; ``compare=False``: the fixed point successive LP reaches from
        where the market is, one branch followed, as ``benchmarks/bench_fixed_points.py``
        shows them). Iterations, the residual, whether it converged and how many
        fixed points were compared (``branches``) are in :attr:`convergence`.
        """
        if not self.lossaware and not self.resources:
            # A cold clearing (a new market, or one restarted) starts from the network's slack basis: the
            # same start on every path, so a territory, the server and `dsomarket clear` agree; a warm one
            # from the basis it holds. Either reads the values of its optimal basis alone (HighsSolver.
            # solve_by_basis), so a warm re-clear that ends in a cold clearing's basis gives its bits.
            # A market with resources (batteries, EVs, ramps, commitments) clears cold: when to charge is often
            # degenerate, and the horizon model of a market whose network changes (engine.runs.CoupledMarket,
            # solved cold) must reach the vertex a plain clearing of the same LP reaches.
            # Where the warm optimum is one of several (bids tied at their DLMP), solve_kept clears cold instead;
            # at once where a bid is priced exactly at the ISO price (bid_at_iso_price).
            sol = (self.solver.solve_kept(self.bid_at_iso_price()) if self.solver.h.getBasis().valid
                   else self.solver.solve_from_slack())
        elif self.lossaware and not self.resources:
            # The loss-aware model's first LP (LinDistFlow's, from restart()) also starts from the slack basis:
            # every path that clears it anew (clear, the curve's fresh clearings, the server, replay) takes this
            # one; one given a basis (a kept market's next price, a curve's walk, a disaggregation's re-solve) is
            # solved from it (HighsSolver.solve_by_basis: HiGHS runs only where a few pivots of its own do not do).
            sol = self.solver.solve_unless_warm()
        else:
            sol = self.solver.solve()
        if not self.lossaware:
            return sol
        parts = [successive.Part(self)]

        def set_matrix() -> None:
            self.solver.set_matrix(self.model)

        sol, convergence = successive.converge(self.solver, parts, set_matrix, sol)
        # Where losses are worth money the AC problem is non-convex: of the fixed points reachable from
        # either side of the bids that could be fixed points at either end, the better one.
        sol, self.convergence = (branches.best_fixed_point(self.solver, parts, set_matrix, sol, convergence)
                                 if compare else (sol, convergence))
        return sol

    def bid_at_iso_price(self) -> bool:
        """Whether a bid is priced exactly at its interval's ISO price. Wherever no limit binds between its bus and
        the interface its DLMP is that price, so any quantity of it is optimal: a tie, which a kept market's warm
        re-clear would reach and then clear cold (:meth:`engine.solver.HighsSolver.solve_kept`). In
        bench_territory's re-clears (20 interfaces of 1,000 buses and bids, eight prices) it foretold 5 of the 6
        ties and none of the 154 re-clears that did not tie."""
        cols = self.columns.book
        return bool(np.any(cols.price == self.iso_price[cols.t_idx]))

    def solve(self) -> ClearingResult:
        sol = self.converge()
        if not sol.ok:
            diag = diagnose(self) if sol.status == "infeasible" else ()
            return _failed(self.context, sol.status, sol.solve_seconds, diag)
        return self.result(sol)

    def result(self, sol: Solution) -> ClearingResult:
        """Tables of an optimal solution (dispatch pro rata among identical bids)."""
        book, topo = self.book, self.feeder.topology
        n, m, T = topo.n_bus, topo.n_line, book.n_interval
        x = self.bid_mw(sol.x)
        line_p = self.block(sol.x, "line_p").reshape(T, m)
        line_q = self.block(sol.x, "line_q").reshape(T, m)
        v = self.block(sol.x, "v").reshape(T, n)
        p0 = self.block(sol.x, "import_p")
        q0 = self.block(sol.x, "import_q")
        y_p = self.block(sol.row_dual, "bus_p_balance", rows=True).reshape(T, n)
        y_q = self.block(sol.row_dual, "bus_q_balance", rows=True).reshape(T, n)
        if self.lossaware:
            energy, loss, congestion, voltage = losses.price_components(self.model, sol, n, T, self.iso_price)
        else:
            energy, congestion, voltage = self._lossless_components(sol)
            loss = np.zeros_like(energy)
        shed = self.block(sol.x, "shed").reshape(T, n) * S_BASE_KVA if self.model.has_var("shed") else None
        welfare = -sol.objective * self.rules.hours
        ac = ac_check(self.feeder, book, x, line_p, line_q, v, self.loads(), shed) if self.options.ac_check else None
        losses_kw = None
        if self.lossaware:   # the lossless LP has none: its import is the net withdrawal it serves
            losses_kw = p0 * S_BASE_KVA - net_withdrawal(self.feeder, book, x, self.loads(), shed)[0].sum(axis=0)
        return _tables(self.context, "optimal", x, line_p, line_q, v, p0, q0, y_p, y_q,
                       (energy, congestion, voltage, loss), welfare, sol.solve_seconds,
                       shed=shed, ac=ac, solver="highs", convergence=self.convergence if self.lossaware else None,
                       losses_kw=losses_kw)

    def _lossless_components(self, sol: Solution) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Energy, congestion and voltage parts of LinDistFlow's DLMPs by path sums, shape (T, n)."""
        topo, T = self.feeder.topology, self.book.n_interval
        n, m = topo.n_bus, topo.n_line
        y_v = self.block(sol.row_dual, "voltage_drop", rows=True).reshape(T, m)
        cong_line = np.zeros((T, m))
        if self.model.has_con("line_thermal"):
            faces = lindistflow.polygon_faces(self.options.polygon_sides)
            limited = np.nonzero(np.isfinite(topo.s_max_kva))[0]
            y_s = self.block(sol.row_dual, "line_thermal", rows=True).reshape(T, len(limited), len(faces.cos))
            cong_line[:, limited] = -(y_s @ faces.cos)
        # Stationarity of each free line flow gives dlmp(child) - dlmp(parent) =
        # -2 r y_V - sum_k cos(phi_k) y_S: sum it along the path from the root.
        volt_line = -2 * topo.r_pu[None, :] * y_v
        interface = -self.block(sol.col_dual, "import_p")  # non-zero only at an import/export limit
        congestion = interface[:, None] + topo.path_sum(cong_line.T).T
        voltage = topo.path_sum(volt_line.T).T
        energy = np.repeat(self.iso_price[:, None], n, axis=1)
        return energy, congestion, voltage

    def root_duals(self, sol: Solution) -> np.ndarray:
        """The interface DLMP per interval (dual of the root bus's balance, per MWh)."""
        return self.block(sol.row_dual, "bus_p_balance", rows=True).reshape(self.book.n_interval, -1)[:, 0]

    def loads(self) -> tuple[np.ndarray, np.ndarray]:
        """Fixed withdrawal (kW, kvar) per bus and interval this market clears against, shape (n, T)."""
        if self._load_p_kw is not None:
            return self._load_p_kw, self._load_q_kvar
        return lindistflow.market_loads(self.feeder, self.book)

    @property
    def context(self) -> MarketContext:
        # The tables' fixed columns are kept for the feeder and book they were built of (relabel() and the
        # callers that set another book get their own): a re-clear of a kept market rebuilds only values.
        kept = self._layout
        if kept is None or kept[0] is not self.feeder or kept[1] is not self.book:
            kept = self._layout = (self.feeder, self.book, TableLayout.of(self.feeder, self.book))
        return MarketContext(self.feeder, self.book, self.iso_price, self.options.formulation, self.build_seconds,
                             kept[2])


def import_bounds(export_max_kw: np.ndarray, import_max_kw: np.ndarray, import_kw) -> tuple[np.ndarray, np.ndarray]:
    """Bounds (MW) of ``import_p`` per interval: the interface limits (kW, >= 0), or ``import_kw``
    (kW, import positive; NaN = free, None = all free) where it holds the import.

    A held import outside the limits gives crossed bounds, so the model is infeasible.
    """
    lo = -np.asarray(export_max_kw, dtype=float) / S_BASE_KVA
    hi = np.asarray(import_max_kw, dtype=float) / S_BASE_KVA
    if import_kw is not None:
        q = np.broadcast_to(np.asarray(import_kw, dtype=float), lo.shape)
        fixed = np.isfinite(q)
        # An award beyond a limit keeps that limit (lo > hi): the solve is infeasible and the
        # diagnosis names the interface limit, instead of the award silently overriding it.
        q_mw = q[fixed] / S_BASE_KVA
        lo[fixed], hi[fixed] = np.maximum(q_mw, lo[fixed]), np.minimum(q_mw, hi[fixed])
    return lo, hi


def held_bounds(columns: BidColumns, bid_mw: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Bounds (MW) of the bid columns with bids held at ``bid_mw`` (MW per bid; NaN = free, None = all free)."""
    lo, hi = np.zeros(columns.book.n), columns.book.quantity_kw / S_BASE_KVA
    if bid_mw is None:
        return lo, hi
    bid_mw = np.asarray(bid_mw, dtype=float)
    x = columns.total(np.nan_to_num(bid_mw))
    held = columns.total(np.isfinite(bid_mw).astype(float)) > 0   # a column's bids share their interval
    return np.where(held, x, lo), np.where(held, x, hi)


def _crossed_interface(market: NodalMarket) -> tuple[dict, ...]:
    """A held import beyond an interface limit (crossed bounds, see :func:`import_bounds`).

    Nothing else needs relaxing to explain it, and a feasibility relaxation of crossed bounds
    would report limits that merely absorb the crossing.
    """
    imp = market.model.var("import_p").slice
    lo, hi = market.solver.col_lower[imp] * S_BASE_KVA, market.solver.col_upper[imp] * S_BASE_KVA
    ivs = market.book.intervals
    # Import side: lo is the award, above hi = the import limit (>= 0); export side: hi is the
    # award, below lo = minus the export limit (<= 0).
    return tuple({"limit": "interface_import_max" if lo[t] > 0 else "interface_export_max",
                  "element": market.feeder.root_bus, "interval": None if ivs[t] is None else ivs[t].isoformat(),
                  "violation": float(lo[t] - hi[t]), "unit": "kW"}
                 for t in np.nonzero(lo > hi + 1e-9)[0])


THERMAL_ROWS = ("line_thermal", "line_thermal_receiving")
"""The polygon rows of a line's apparent-power limit: the sending end (both models) and the receiving
end (the loss-aware model, :func:`engine.losses.thermal`); rows ``(interval, limited line, face)``."""


def _thermal_violations(market: NodalMarket, probe: HighsSolver, rows: np.ndarray, iso) -> list[dict]:
    """One ``line_thermal`` entry per line and interval whose polygon rows a relaxed solution bends.

    The violation (kVA) is the largest of any face at either end, read against the rows' own bounds
    (the lossless polygon is inscribed, the loss-aware one circumscribed). Where both ends are
    modelled (loss-aware), ``detail`` names the end; a lossless line carries one flow end to end.
    """
    topo, T = market.feeder.topology, market.book.n_interval
    limited = np.nonzero(np.isfinite(topo.s_max_kva))[0]
    ends = [name for name in THERMAL_ROWS if market.model.has_con(name)]
    if not ends or not len(limited):
        return []
    over = np.stack([
        np.maximum(probe.row_lower[blk.slice] - rows[blk.slice], rows[blk.slice] - probe.row_upper[blk.slice])
        .reshape(T, len(limited), -1).max(axis=2)
        for blk in map(market.model.con, ends)]) * S_BASE_KVA        # (end, T, limited)
    worst, end = over.max(axis=0), over.argmax(axis=0)
    parent, child = topo.bus_ids[topo.parent[1:][limited]], topo.bus_ids[1:][limited]
    return [{"limit": "line_thermal", "element": str(topo.line_ids[limited[li]]), "interval": iso(t),
             "violation": float(worst[t, li]), "unit": "kVA"}
            | ({"detail": f"receiving end (bus {child[li]})" if end[t, li] else f"sending end (bus {parent[li]})"}
               if len(ends) > 1 else {})
            for t, li in zip(*np.nonzero(worst > 1e-4))]


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
    crossed = _crossed_interface(market)
    if crossed:
        return crossed
    probe = market.solver.copy()
    row_pen = np.full(model.n_row, -1.0)
    lo_pen = np.full(model.n_col, -1.0)
    up_pen = np.full(model.n_col, -1.0)
    soft_rows = [name for name in (*THERMAL_ROWS, "battery_soc", "battery_charge", "battery_discharge",
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
    out += _thermal_violations(market, probe, rows, iso)
    for name in soft_rows:
        if name in THERMAL_ROWS:
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
    validated = not isinstance(bids, BidBook)
    book = validate_bids(bids, feeder, rules, intervals) if validated else bids
    book = canonical(book, feeder, rules, indexed=validated)  # input row order must not change the LP
    if options.formulation == "socp":
        from dsomarket.engine import socp  # cvxpy is imported only when the SOCP is asked for
        return socp.clear(feeder, book, iso_price, rules=rules, resources=resources, options=options,
                          solver=socp_solver(feeder, options))
    return NodalMarket(feeder, book, iso_price, rules, resources, options).solve()


