"""Successive linear programming of the loss-aware model to a KKT point of the AC problem.

The one iteration behind :meth:`engine.clearing.NodalMarket.converge` (one
feeder, every interval of the market) and :meth:`engine.runs.CoupledMarket.converge`
(a horizon whose network changes: one part per run of one network state, all in
one LP that the rows linking intervals tie together). Both hand :func:`converge`
the solver of the LP they solve and their loss-aware parts (:class:`Part`: a
:class:`~engine.clearing.NodalMarket` and where its columns and rows sit in that
LP); a part is re-linearised at the AC power flow of its own intervals' dispatch.

The ``bid`` block of the LP solved is the parts' bid columns one part after
another (as :func:`engine.runs._placement` lays it out), so every per-bid rule
(brackets, pins, the trust region, the stationarity test) works on that block
whatever the number of parts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse.linalg as spla

from dsomarket.engine import losses
from dsomarket.engine.network import S_BASE_KVA
from dsomarket.engine.results import net_withdrawal
from dsomarket.engine.solver import HIGHS_PRIMAL_TOL, TIE_DUAL_TOL, HighsSolver, Solution


@dataclass(frozen=True, eq=False)
class Part:
    """A loss-aware :class:`~engine.clearing.NodalMarket` (its ``model``, ``point`` and linearisation) and the
    columns and rows of the LP solved that are its own (``slice(None)``: the market is the whole LP)."""

    market: object
    cols: np.ndarray | slice = field(default_factory=lambda: slice(None))
    rows: np.ndarray | slice = field(default_factory=lambda: slice(None))
    frozen: bool = False
    """Keep the linearisation the market has (its ``point``): the part is a linear model in this iteration, so
    its AC power flow, residual, merit and curvature are not taken (``engine.runs.LiveInterval``)."""

    @property
    def n_bid(self) -> int:
        return self.market.columns.book.n


def _split(parts: list[Part], bids: np.ndarray) -> list[np.ndarray]:
    """The ``bid`` block of the LP solved, cut into each part's bid columns."""
    if len(parts) == 1:     # a market's own LP (NodalMarket.converge): the block itself, without np.split's work
        return [bids]
    return np.split(bids, np.cumsum([p.n_bid for p in parts])[:-1])


def points(parts: list[Part], x: np.ndarray, bids: np.ndarray) -> list[losses.OperatingPoint]:
    """Each part's AC power flow (:func:`engine.losses.operating_point`) of the bid columns ``bids`` (MW, the
    ``bid`` block) with the load shed of the full primal vector ``x``."""
    out = []
    for part, xb in zip(parts, _split(parts, bids)):
        if part.frozen:
            out.append(part.market.point)
            continue
        m, xp = part.market, x[part.cols]
        T = m.book.n_interval
        shed = m.block(xp, "shed").reshape(T, -1) * S_BASE_KVA if m.model.has_var("shed") else None
        out.append(losses.operating_point(m.feeder, *net_withdrawal(m.feeder, m.columns.book, xb, m.loads(), shed),
                                          start=m.point))
    return out


def residual(parts: list[Part], x: np.ndarray, pts: list[losses.OperatingPoint]) -> losses.Residual:
    """The worst over parts of :func:`engine.losses.residual` of the primal vector ``x`` and its AC points."""
    each = []
    for part, point in zip(_live(parts), _live(parts, pts)):
        m, xp = part.market, x[part.cols]
        T, topo = m.book.n_interval, m.feeder.topology
        each.append(losses.residual(point, m.block(xp, "line_p").reshape(T, topo.n_line),
                                    m.block(xp, "v").reshape(T, topo.n_bus), m.block(xp, "import_p")))
    return losses.Residual(max(r.import_kw for r in each), max(r.flow_kw for r in each), max(r.v_pu for r in each))


def merit(parts: list[Part], sol: Solution, solver: HighsSolver, pts: list[losses.OperatingPoint]) -> tuple[float, float]:
    """The trust region's measure of a solve's dispatch: its objective with the AC import of each part's
    dispatch (``pts``) in place of the LP's, and the parts' AC limit violation (:func:`engine.losses.violation`).

    Kept apart rather than summed with a penalty weight: a step along limits that bind is
    outside them by its square (the Maratos effect), which an exact penalty weighs against
    the first-order gain and rejects; here a step counts as feasible while its violation stays
    within ``VIOLATION_TOL`` or below the centre's."""
    objective, viol = float(sol.objective), 0.0
    for part, point in zip(_live(parts), _live(parts, pts)):
        imp = part.market.model.var("import_p").slice
        objective += float(np.dot(solver.cost[part.cols][imp], point.p0 - sol.x[part.cols][imp]))
        viol += losses.violation(part.market.feeder, point)
    return objective, viol


def _relinearise(parts: list[Part], solver: HighsSolver, bids: np.ndarray, pts: list[losses.OperatingPoint],
                 set_matrix: Callable[[], None]) -> None:
    """Each part's model linearised at its point, then the LP solved given the parts' new matrices, its limits
    at the model's own bounds (:func:`restore_limits`); one market's carried basis holds its lines on their ratings on
    the new tangent faces (:meth:`HighsSolver.hold_instead`)."""
    restore_limits(solver)
    for part, xb, point in zip(parts, _split(parts, bids), pts):
        m = part.market
        m._point_bids = xb.copy()
        if not part.frozen:
            if m.point is not None:
                point = losses.refined(m.feeder, point, m.point, m.options.polygon_sides)
            m.point, m.model = point, m._relinearise.at(point)
    set_matrix()
    m = parts[0].market
    if len(parts) == 1 and not parts[0].frozen and solver.model is m.model and (held := solver.held_rows()) is not None:
        # The carried basis holds each line on its rating on the face that was tight at the last point: held on the
        # tangent face of this one instead (HighsSolver.hold_instead), HiGHS's warm run takes far fewer pivots.
        inactive = losses.tangent_held(m.model, m.feeder, m.point, m._relinearise.polygon_sides, held)
        if inactive is not held:
            solver.hold_instead(inactive)


def _live(parts: list[Part], each: list | None = None) -> list:
    """The parts not frozen (or the items of ``each`` that are theirs)."""
    return [item for part, item in zip(parts, parts if each is None else each) if not part.frozen]


PHASE_ONE_TRIES = 3
"""Re-linearisations at the least-violating dispatch (:func:`_phase_one`) after a solve found infeasible."""
PHASE_ONE_STALL = 0.5
"""Phase one stops when a re-linearisation leaves its least violation above this fraction of the previous
one's (:func:`_phase_one`)."""


def _phase_one(parts: list[Part], solver: HighsSolver, set_matrix: Callable[[], None],
               failed: Solution) -> tuple[Solution, int, float]:
    """Re-linearise where the current linearisation comes closest to feasible; up to ``PHASE_ONE_TRIES``
    times, until a linearisation is feasible (then solved) or re-linearising stops bringing the LP closer.

    A linearisation is exact only at its own point: where power flows back LinDistFlow (the start)
    overstates what arrives at a line's far end, and any linearisation far from a held schedule that
    sits on a limit errs by a fraction of a VA either way; if nothing bid can move away from that
    limit, the LP is then infeasible though the feeder is not. The phase-one point is the dispatch of
    the linearisation's feasibility relaxation (:func:`_least_violation`), whose linearised violation is
    least; limits the next linearisation breaks by numerical noise only are widened by that
    (:func:`_widen_by_noise`) before it is solved. The LP linearised there errs only to second order around it, so where the feeder is feasible the next
    relaxation's violation is a small fraction of this one's; where it stays above ``PHASE_ONE_STALL``
    of it, the limits are broken on the feeder itself and further tries would find the same.

    Only a linearisation whose relaxation breaks no limit by more than ``NOISE_SLACK`` is solved (cold:
    the basis of an infeasible solve on another linearisation is no start for this one). An LP known to
    be infeasible is never handed to HiGHS here: on a 1,000-bus market 50 kVA over a rating, HiGHS took
    6 s of CPU to give up on one warm re-solve at the ISO price and minutes on one without presolve at
    the price floor, where the relaxation that says as much takes 0.2-0.4 s. Returns the last solve
    (``failed``, the solve found infeasible, when none was made or the relaxation itself fails), the
    number of solves made here and their seconds.
    """
    bid = solver.model.var("bid").slice
    sol, solves, seconds, before = failed, 0, 0.0, np.inf
    relaxed = _least_violation(solver)
    for _ in range(PHASE_ONE_TRIES):
        if relaxed is None:
            break
        # The sum over limits of mixed units (MW, MVA, pu squared) is what the relaxation itself minimises
        # (unit weights), so each try is measured on the relaxation's own terms.
        excess = relaxed.total(solver)
        if excess > PHASE_ONE_STALL * before:
            break
        before = excess
        _relinearise(parts, solver, relaxed.x[bid], points(parts, relaxed.x, relaxed.x[bid]), set_matrix)
        relaxed = _least_violation(solver)
        if relaxed is None or relaxed.worst(solver) > NOISE_SLACK:
            continue
        _widen_by_noise(solver, relaxed)
        solver.h.clearSolver()
        sol = solver.solve()
        solves += 1
        seconds += sol.solve_seconds
        if sol.ok:
            break
    if not sol.ok and sol.status in UNSOLVED:
        # Last, from the fixed load's own point: the relaxation's dispatches can stay far from it (an 18 MW sell on
        # ieee33, a property test of the server's, left every linearisation near its own export infeasible at
        # 68.246 per MWh, where the feeder with nothing bid is within its limits).
        start = _from_fixed_load(parts, solver, set_matrix)
        if start is not None:
            sol, solves, seconds = start, solves + 1, seconds + start.solve_seconds
    return sol, solves, seconds


def within_limits(parts: list[Part], pts: list[losses.OperatingPoint]) -> bool:
    """Whether every part's AC power flow ``pts`` converged and, together, they break the feeders' limits by no more
    than ``losses.VIOLATION_TOL`` (:func:`engine.losses.violation`)."""
    return all(p.converged for p in pts) and \
        sum(losses.violation(part.market.feeder, pt) for part, pt in zip(parts, pts)) <= losses.VIOLATION_TOL


def _from_fixed_load(parts: list[Part], solver: HighsSolver, set_matrix: Callable[[], None]) -> Solution | None:
    """The LP linearised at the dispatch of no bid (each at its bound nearest zero, no load shed), solved cold:
    the fixed load's own AC point, where every linearised equation is exact, so that the LP holds that dispatch.
    Only where that point is within the feeder's limits (``losses.VIOLATION_TOL``; else None, nothing solved: an
    LP known to be infeasible is not handed to HiGHS, as in :func:`_phase_one`). One solve."""
    bid = solver.model.var("bid").slice
    zero = np.clip(0.0, solver.col_lower[bid], solver.col_upper[bid])
    pts = points(parts, np.zeros(solver.model.n_col), zero)
    if not within_limits(parts, pts):
        return None
    _relinearise(parts, solver, zero, pts, set_matrix)
    solver.h.clearSolver()
    return solver.solve()


@dataclass(frozen=True, eq=False)
class _Relaxed:
    """A dispatch of the feasibility relaxation (:func:`_least_violation`): which rows and columns are limits
    (soft), the row values and the primal vector."""

    soft_rows: np.ndarray
    soft_cols: np.ndarray
    row_value: np.ndarray
    x: np.ndarray

    def excess(self, solver: HighsSolver) -> tuple[np.ndarray, np.ndarray]:
        """How far each limit's row value and column value lie outside their bounds (model units; 0 inside)."""
        def out(value: np.ndarray, lower: np.ndarray, upper: np.ndarray, soft: np.ndarray) -> np.ndarray:
            return np.where(soft, np.maximum(np.maximum(value - upper, lower - value), 0.0), 0.0)
        return (out(self.row_value, solver.row_lower, solver.row_upper, self.soft_rows),
                out(self.x, solver.col_lower, solver.col_upper, self.soft_cols))

    def total(self, solver: HighsSolver) -> float:
        """The summed excess: what the relaxation minimises (unit weights on rows of mixed units)."""
        rows, cols = self.excess(solver)
        return float(rows.sum() + cols.sum())

    def worst(self, solver: HighsSolver) -> float:
        rows, cols = self.excess(solver)
        return float(max(rows.max(initial=0.0), cols.max(initial=0.0)))


STATE_COLUMNS = ("line_p", "line_q", "v", "import_p", "import_q")
"""The network's state: what its equations (``losses.NETWORK_ROWS``) determine once the dispatch is set."""


def _state_columns(model) -> np.ndarray:
    """Which columns of ``model`` are the network's state (:data:`STATE_COLUMNS`)."""
    state = np.zeros(model.n_col, dtype=bool)
    for name in STATE_COLUMNS:
        state[model.var(name).slice] = True
    return state


def _least_violation(solver: HighsSolver) -> _Relaxed | None:
    """The feasibility relaxation of the solver's model (HiGHS, on a copy): the network's equations, the bid
    and shed bounds hard, every limit soft (rows, and the voltage and interface bounds on columns). Returns
    its dispatch with the network state recomputed exactly (:func:`_exact_state`); None when even the
    relaxation fails."""
    model = solver.model
    probe = solver.copy()
    rows, cols = np.ones(model.n_row), np.ones(model.n_col)
    for name in losses.NETWORK_ROWS:
        rows[model.con(name).slice] = -1.0
    for name in ("bid", "shed"):
        if model.has_var(name):
            cols[model.var(name).slice] = -1.0
    relaxed = probe.relax_feasibility(rows, cols, cols)
    if relaxed is None:
        return None
    row_value, x = _exact_state(solver, relaxed[1], cols < 0)
    return _Relaxed(rows > 0, cols > 0, row_value, x)


def _exact_state(solver: HighsSolver, x: np.ndarray, hard: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The relaxation's dispatch with its ``hard`` columns moved inside their bounds, with the network state that the linearised
    network equations give for it: the row values and primal vector of the dispatch as the LP sees it.

    HiGHS keeps the relaxation's hard bounds only to its feasibility tolerance (1e-7). A limit broken by
    less than that can then read as met: a day-ahead position rounded to the micro-kW and held on a rating
    puts it 0.3 mVA over, which the relaxation hides in a bid 0.3 mW over its quantity, while the LP itself
    is infeasible by that much and HiGHS, to the same tolerance, may put it on a bid whose effect on the
    rating is two thousand times smaller (7e-7 MW below zero): "infeasible", with no limit to widen
    (tests/test_settlement.py, seed 3628). Solving the equations for the state (one sparse LU, the size
    of the network) puts the excess back on the limit it breaks, where :func:`_widen_by_noise` reads it.
    An awarded import (fixed, in disaggregation) is solved for as a state too: the dispatch then imports the
    award only to within that excess, which shows on the import's own bounds, and the limit that has the rest
    is widened as in a clearing (seed 3628's real-time market with line 3 rated 0.1 VA less, awarded the import
    it clears: reported infeasible before; tests/test_successive.py). Where the state's equations are not square, or singular, HiGHS's
    values are returned as they are.
    """
    model = solver.model
    a = model.assemble()[3]
    x = np.where(hard, np.clip(x, solver.col_lower, solver.col_upper), x)
    state = _state_columns(model)
    # The root voltage is set, not solved for; an awarded import (fixed: disaggregation) is solved for all the
    # same, so that the equations stay square and the award's share of the excess shows on its own bounds.
    free = solver.col_lower < solver.col_upper
    free[model.var("import_p").slice] = True
    state &= free
    eq = np.concatenate([np.arange(model.n_row)[model.con(name).slice] for name in losses.NETWORK_ROWS])
    cols = np.nonzero(state)[0]
    if len(cols) != len(eq):
        return a @ x, x
    rhs = solver.row_lower[eq] - a[eq][:, ~state] @ x[~state]
    try:
        state_x = spla.splu(a[eq][:, cols].tocsc()).solve(rhs)
    except RuntimeError:   # singular: a state the equations leave open
        return a @ x, x
    if np.isfinite(state_x).all():
        x[cols] = state_x
    return a @ x, x


def _known_infeasible(solver: HighsSolver) -> bool:
    """Whether the LP as bounded now is infeasible by its only point: every column but the network's state fixed (the
    bids held at one dispatch), the state the network's equations give for them (:func:`_exact_state`) breaks a
    limit by more than ``NOISE_SLACK``. False where that is not known (columns left free, equations not solved).

    ``NOISE_SLACK`` is ten times HiGHS's primal feasibility tolerance (``HIGHS_PRIMAL_TOL``), so HiGHS could not end
    such an LP optimal either; it is not handed one. The bids held at the point the model is linearised at
    (:func:`_trust_from_linearisation_point`) often are: that point is the last solve's dispatch, within the limits
    of the linearisation before, and its AC state breaks a rating by up to several kVA. HiGHS's warm dual simplex
    ran such LPs (1,000 buses, a curve's clearings) to status ``Unknown`` through bases ever worse conditioned
    (10-13 iterations, up to 1e9 MW primal infeasibility, 1.1-7.3 s of CPU) and solved each again cold and without presolve.
    """
    model = solver.model
    state = _state_columns(model)
    if not np.all(state | (solver.col_lower == solver.col_upper)):
        return False
    row_value, x = _exact_state(solver, np.clip(0.0, solver.col_lower, solver.col_upper), ~state)
    eq = np.zeros(model.n_row, dtype=bool)
    for name in losses.NETWORK_ROWS:
        eq[model.con(name).slice] = True
    # _exact_state leaves the state as given where the equations are not square or are singular: unknown then.
    if not np.all(np.abs(row_value[eq] - solver.row_lower[eq]) <= HIGHS_PRIMAL_TOL):
        return False
    return _Relaxed(~eq, state, row_value, x).worst(solver) > NOISE_SLACK


def relieve_noise(solver: HighsSolver) -> bool:
    """After a solve found infeasible: widen the limits it breaks by numerical noise only
    (:func:`_widen_by_noise`); True when it did, so that solving again is worth it."""
    relaxed = _least_violation(solver)
    return relaxed is not None and _widen_by_noise(solver, relaxed)


NOISE_SLACK = 1e-6
"""Largest excess of a limit (model units: MW, MVA, squared pu) that phase one reads as numerical noise and
widens the limit by: 1 VA, or 5e-7 pu of voltage, far inside the AC check's violation tolerances
(``engine.results.VIOLATION_TOL_PCT``, ``VIOLATION_TOL_V_PU``)."""


def _widen_by_noise(solver: HighsSolver, relaxed: _Relaxed) -> bool:
    """Widen the limits the feasibility relaxation leaves by at most ``NOISE_SLACK``, when it leaves no larger.

    Held positions (a real-time re-clear holding a day-ahead schedule, read back to the micro-kW) can
    sit on a rating by a fraction of a milli-VA over it, with no bid able to move off it: every
    linearisation is then infeasible by that much and HiGHS says so, though the feeder is not (a
    real-time clearing of ``tests/test_hidden_physics.py`` needed 4.7e-10 MVA on a 162 kVA line).
    Such a limit (a row, or a voltage bound), and only when every limit's excess is that small, is
    widened by ten times its excess, so the excess is read as the noise it is, until the model is
    re-linearised (:func:`restore_limits`). True when it widened any.
    """
    rows, cols = relaxed.excess(solver)
    if max(rows.max(initial=0.0), cols.max(initial=0.0)) > NOISE_SLACK:
        return False
    # Of the columns only the voltages: the interface import's bounds are the award or the feeder's
    # rating, set by the market (engine.clearing.NodalMarket.fix_import), not a limit of the linearisation.
    cols = np.where(_voltages(solver), cols, 0.0)
    widened = False
    for over, value, lower, upper, change in (
            (rows, relaxed.row_value, solver.row_lower, solver.row_upper, solver.h.changeRowsBounds),
            (cols, relaxed.x, solver.col_lower, solver.col_upper, solver.h.changeColsBounds)):
        idx = np.nonzero(over > 0.0)[0]
        if not len(idx):
            continue
        # Ten times the excess: room for HiGHS to err by as much again, and little enough that the bids
        # gain next to nothing from it.
        room = np.minimum(10.0 * over[idx], NOISE_SLACK)
        lower[idx] = np.where(value[idx] < lower[idx], lower[idx] - room, lower[idx])
        upper[idx] = np.where(value[idx] > upper[idx], upper[idx] + room, upper[idx])
        change(len(idx), idx.astype(np.int32), lower[idx], upper[idx])
        widened = True
    return widened


def _voltages(solver: HighsSolver) -> np.ndarray:
    """Which columns of the solver's model are squared bus voltages."""
    out = np.zeros(solver.model.n_col, dtype=bool)
    out[solver.model.var("v").slice] = True
    return out


def restore_limits(solver: HighsSolver) -> None:
    """Undo :func:`_widen_by_noise`: every row and voltage back at the model's own bounds.

    The room is for the linearisation its excess was measured on. Near a fixed point that excess is
    the held positions' rounding; on a linearisation far from it (phase one's first points) it is the
    linearisation's own error, up to the ``NOISE_SLACK`` a fixed point must not keep: a rating held
    by day-ahead positions that the real-time bids move only through the voltage (2,000 times less
    than a bid at its far end) let a buy clear 1.8 kW past it where the room of such a point had
    stayed, and the clearing converged from the award's linearisation did not (tests/test_settlement.py,
    seed 6180: the award was not on the curve).
    """
    _, lo, up, _, rlo, rup, _ = solver.model.assemble()
    rows = np.nonzero((solver.row_lower != rlo) | (solver.row_upper != rup))[0]
    if len(rows):
        solver.row_lower[rows], solver.row_upper[rows] = rlo[rows], rup[rows]
        solver.h.changeRowsBounds(len(rows), rows.astype(np.int32), rlo[rows], rup[rows])
    cols = np.nonzero(_voltages(solver) & ((solver.col_lower != lo) | (solver.col_upper != up)))[0]
    if len(cols):
        solver.col_lower[cols], solver.col_upper[cols] = lo[cols], up[cols]
        solver.h.changeColsBounds(len(cols), cols.astype(np.int32), lo[cols], up[cols])


UNSOLVED = ("infeasible", "error")
"""Statuses of a solve that phase one and the relief of noise follow: infeasible, or HiGHS undecided (status
``Unknown`` without presolve, 1.5e-2 MW primal infeasibility, on a linearisation whose relaxation breaks a
rating by 25 mVA: a real-time re-clear of tests/test_settlement.py, seed 2293). A time limit is the caller's own and ends the
iteration."""


def _bound_bids(solver: HighsSolver, lower: np.ndarray, upper: np.ndarray) -> None:
    """Give the bids the bounds ``lower``, ``upper`` (MW, one per bid column), passing HiGHS only the bids whose
    bounds change: a pin or the trust region moves a few of them, and HiGHS's ``changeColsBounds`` costs ~1.6 ms for
    all 10,000 bids at 1,000 buses (bench_physics seed 2: 5 calls a clearing, one bid changed in each). The
    unchanged bids keep their bounds and HiGHS its statuses: the same solves as passing every bid."""
    bid = solver.model.var("bid").slice
    changed = np.flatnonzero((lower != solver.col_lower[bid]) | (upper != solver.col_upper[bid]))
    if len(changed):
        solver.set_col_bounds("bid", lower[changed], upper[changed], index=changed)


def _trust_from_linearisation_point(parts: list[Part], solver: HighsSolver, centre: np.ndarray, value: float,
                                    viol: float, base_lo: np.ndarray, base_hi: np.ndarray) -> tuple | None:
    """Where the trust region takes over (``losses.BRACKET_ITERATIONS``): its first region around the dispatch
    the model is linearised at (``centre``, MW per bid) rather than around the last solve's, when the AC merit
    of ``centre`` (:func:`merit`, its bids fixed) is better than that solve's (``value``, with violation
    ``viol``). Returns the solve in a region of ``losses.TRUST_START_MW / 2`` around ``centre``, the centre's
    merit and violation, the region's half-widths (MW) and the two solves' seconds; None where the solve's own
    dispatch is as good (the bid bounds are then ``centre``'s: the caller sets its own).

    The bracketed bids settle by then to near their optimum, but a bracket that closed on a reduced cost still
    open is released (the optimum moved outside it as the bids it trades with moved), and that bid's free
    solve leaps to a vertex: ieee33-s7908 at 138.589 (``bench_hidden_physics``) leapt 120 kW from a dispatch
    moving 0.06 kW a solve, and a region about the leap, its steps held to ~1 kW by the curvature of the
    rating they run along, crept back for all of the 60 solves left: not converged (exit 3).
    """
    _bound_bids(solver, centre, centre)
    if _known_infeasible(solver):   # centre's own state breaks a limit: HiGHS would end not optimal, and slowly
        return None
    fixed = solver.solve()
    seconds = fixed.solve_seconds
    if not fixed.ok:
        return None
    at_centre, viol_centre = merit(parts, fixed, solver, points(parts, fixed.x, centre))
    if not (at_centre < value and viol_centre <= max(viol, losses.VIOLATION_TOL)):
        return None
    radius = np.full(len(centre), losses.TRUST_START_MW / 2.0)
    _bound_bids(solver, np.maximum(base_lo, centre - radius), np.minimum(base_hi, centre + radius))
    sol = solver.solve()
    if not sol.ok:
        return None
    return sol, at_centre, viol_centre, radius, seconds + sol.solve_seconds


def _moved_with_basis(solver: HighsSolver, x: np.ndarray, cols: np.ndarray, to: np.ndarray, base_lo: np.ndarray,
                      base_hi: np.ndarray) -> np.ndarray:
    """The bid dispatch ``x`` (MW, the ``bid`` block) with the bids ``cols`` (indices in that block, nonbasic in the
    last optimal solve) moved to ``to`` (MW) and the bids that solve holds basic moved with them as its basis has it
    (:meth:`HighsSolver.basis_directions`: the limits that bind stay on, the interface balance holds), each within
    its own bounds ``base_lo``, ``base_hi``. Only ``cols`` move where HiGHS holds no factored basis.

    Where the model is linearised next: a bid moved there by hand (a pin, a Newton point) makes the LP move the bids
    it trades with as much, and where those are linearised where they were, the next solve's step is that move, its
    reduced costs sampled away from where the bids end."""
    bid = solver.model.var("bid").slice
    d = solver.basis_directions(bid.start + cols)
    target = x.copy() if d is None else np.clip(x + d[bid] @ (to - x[cols]), base_lo, base_hi)
    target[cols] = to
    return target


POLISH_SOLVES = 10
"""Solves :func:`_polish` may take after ``losses.MAX_ITERATIONS`` to reach a converged state."""
POLISH_REGION_KW = losses.STEP_TOL_KW / 2.0
"""Half-width (kW) of :func:`_polish`'s region on every bid around the point it linearises at: any step inside it
is within the step tolerance, so whether it converges is the residual's and the reduced costs' to say."""


def _polish(parts: list[Part], solver: HighsSolver, set_matrix: Callable[[], None], sol: Solution,
            base_lo: np.ndarray, base_hi: np.ndarray) -> tuple[Solution, int, float, losses.Residual, float] | None:
    """After ``losses.MAX_ITERATIONS``: up to ``POLISH_SOLVES`` more solves from the last solve ``sol`` to a converged
    state; None, with the solver and the parts exactly as they were, where they do not reach one.

    Where the iteration stops unconverged, it is typically a fixed point in all but stationarity: bids pressed on
    a trust region halved to next to nothing (1e-9 to 1e-5 kW), with reduced costs above ``losses.MARGINAL_TOL``
    (benchmarks/README.md, helpers flat12 and flat14). Two bids trading along a flat valley of the losses creep
    across it a few watts a solve (ieee33-s9100 at 193.7), or their region was halved on the AC merit's noise
    (194.5): their Newton point on the losses' curvature (:func:`engine.losses.curvature_step`, the pressed bids
    together) is where their reduced costs vanish, and the model is linearised there. Every bid then has a region
    of its own here, ``POLISH_REGION_KW`` around the point linearised at, not the one the iteration halved: in
    one of a few nanowatts every bid is all but fixed, and the LP's reduced costs are then those of a vertex of
    fixed bids, tens of units per MWh (the CLI test's book near 156 per MWh, warm clearings of its curve).

    A bid held by the region at a rating's degenerate vertex has no curvature to step on (its Newton point is NaN,
    or megawatts off): its reduced cost reads one sign on one side of the vertex and the other on the other (one
    linearisation's polygon face, then the next's), so the region reverses and halves around it for ever. Its
    duals are not unique there, and the reduced cost against the region is only one of them: whether another
    prices the bid at zero is the LP's to say. The bids held open are released (their own bounds) on the same
    linearisation, and where the LP then moves no bid more than ``losses.STEP_TOL_KW`` from the point linearised
    at, with the AC residual in tolerance and no bid held open, the point is a KKT point of that linearisation
    (a bid it newly presses is released in turn): at -28.2826 sell b28 is released and clears in full, with line
    8 on its rating.

    Everything here runs on a copy of the solver's HiGHS model (:meth:`HighsSolver.checkpoint`), and a polish that
    does not converge is rolled back (the parts' linearisations, then the solver), so the result and whatever
    later solves start from it (a curve's warm clearings) are those the iteration gave without it, to the bit.
    Returns the converged solve, the solves taken and their seconds, its residual and its last step (kW).
    """
    bid = solver.model.var("bid").slice
    radius = POLISH_REGION_KW / S_BASE_KVA
    saved = [(p.market.model, p.market.point, p.market._point_bids) for p in parts]
    checkpoint = solver.checkpoint()
    seconds, eps = 0.0, 1e-9
    released = np.zeros(len(base_lo), dtype=bool)
    damping, last_open = 1.0, np.inf
    for solves in range(1, POLISH_SOLVES + 1):
        x, reduced = solver.block(sol.x, "bid"), solver.block(sol.col_dual, "bid")
        lo, hi = solver.col_lower[bid], solver.col_upper[bid]
        # The bids the region holds against their wish: on its bound, not their own, with a reduced cost that is no
        # tie (beyond TIE_DUAL_TOL: nonbasic there, so that basis_directions moves them).
        pressed = np.flatnonzero(((x >= hi - eps) & (hi < base_hi - eps) & (reduced < -TIE_DUAL_TOL))
                                 | ((x <= lo + eps) & (lo > base_lo + eps) & (reduced > TIE_DUAL_TOL)))
        newton = x[pressed] + damping * losses.curvature_step(
            solver, [(p.market.model, p.market.feeder, p.market.point, p.cols, p.rows) for p in _live(parts)], sol,
            pressed) if len(pressed) else x[pressed]
        if len(pressed) and np.all(np.isfinite(newton) & (newton >= base_lo[pressed]) & (newton <= base_hi[pressed])):
            # The basic bids move with them as the basis has it (limits that bind stay on): each region is
            # around where its bid will be, or a line on its rating leaves none feasible (ieee33-s13305 at 58.6443).
            target = _moved_with_basis(solver, x, pressed, newton, base_lo, base_hi)
            _relinearise(parts, solver, target, points(parts, sol.x, target), set_matrix)
        else:
            held = pressed[np.abs(reduced[pressed]) > losses.MARGINAL_TOL]
            if not len(held):
                break
            released[held] = True
            target = np.concatenate([p.market._point_bids for p in parts])   # the same linearisation
        lo, hi = np.maximum(base_lo, target - radius), np.minimum(base_hi, target + radius)
        _bound_bids(solver, np.where(released, base_lo, lo), np.where(released, base_hi, hi))
        sol = solver.solve_by_basis(pivots=0, primal_tol=HIGHS_PRIMAL_TOL, fresh=False)   # as converge
        seconds += sol.solve_seconds
        if not sol.ok:
            break
        x = solver.block(sol.x, "bid")
        pts = points(parts, sol.x, x)
        if not all(p.converged for p in pts):
            break
        res = residual(parts, sol.x, pts)
        moved = float(np.max(np.abs(x - target), initial=0.0)) * S_BASE_KVA
        reduced = solver.block(sol.col_dual, "bid")
        open_ = losses.held_open(x, reduced, solver.col_lower[bid], solver.col_upper[bid], base_lo, base_hi)
        # A Newton step on a model of the losses' curvature alone (a rating's polygon turns with the point too) can
        # overshoot: where the pressed bids' largest reduced cost does not fall, the next step is half as long.
        worst = float(np.max(np.abs(reduced[open_]), initial=0.0))
        damping, last_open = (damping / 2.0 if worst >= last_open else damping), worst
        if res.ok and moved <= losses.STEP_TOL_KW and not open_.any():
            _bound_bids(solver, base_lo, base_hi)
            return sol, solves, seconds, res, moved
    for p, (model, point, bids) in zip(parts, saved):
        p.market.model, p.market.point, p.market._point_bids = model, point, bids
    set_matrix()    # what the caller keeps of the parts' matrices (a horizon's), on the copy
    solver.rollback(checkpoint)
    return None


def converge(solver: HighsSolver, parts: list[Part], set_matrix: Callable[[], None],
             sol: Solution, rescue: bool = True) -> tuple[Solution, dict]:
    """Re-linearise the parts from the first solve ``sol`` until the LP is at a KKT point of the AC problem.

    Successive linear programming (Hu et al. 2010): run each part's AC power
    flow of the dispatch (all its intervals in one batched sweep), re-linearise
    there (:class:`engine.losses.Relinearisation`, swapped in warm:
    ``set_matrix()`` gives the solver the parts' new matrices), until the LP's
    import, line flows and voltages match those power flows within
    ``losses.RESIDUAL_TOL_KW`` / ``RESIDUAL_TOL_V_PU`` and no bid moved more
    than ``losses.STEP_TOL_KW`` from the dispatch the model was linearised at.
    A new market starts from LinDistFlow (:func:`engine.losses.lossless_point`):
    a cheap solve from the network's slack basis whose dispatch is the first AC point.

    A bid priced within the range its own dispatch moves its bus's loss
    factor over has its optimum inside its quantity, where no vertex of one
    linearisation lies: plain iteration would flip it between 0 and full.
    Such a bid, once its reduced cost has changed sign between two points
    or it reverses without contracting, is pinned inside that bracket
    (:class:`engine.losses.MarginalBracket`), a trust region of zero width:
    at the Newton step on the losses' curvature taken for all bracketed bids
    together (:func:`engine.losses.curvature_step`) where it falls inside,
    else where regula falsi puts the zero of its reduced cost, the model
    linearised there with the bids the LP holds basic where the basis moves
    them with the pins (:func:`_moved_with_basis`); the bid bounds
    are restored afterwards. Where several bids and limits interact so
    that this still circles after ``losses.BRACKET_ITERATIONS`` solves, a
    trust region on every bid takes over: a step is kept when its dispatch
    (:func:`merit`: the objective with the AC import) gains at least
    ``TRUST_ACCEPT`` of what the linearisation promised without leaving the
    limits by more than ``VIOLATION_TOL`` or the centre's own excess, else the
    region shrinks fourfold around the same point; each bid's width is halved
    where it turned back, doubled after a full step that gained three quarters of
    its promise and 1.2 times wider after a full step the same way as the last (a
    kept step that gained under a quarter halves every bid's width instead).

    Converged means a fixed point that is optimal for its own linearisation:
    the AC power flow of the dispatch matches the LP (``RESIDUAL_TOL_*``), no
    bid moved more than ``STEP_TOL_KW``, and no bid is pressed against a pin or
    the trust region with a reduced cost above ``MARGINAL_TOL``
    (:func:`engine.losses.held_open`). The linearisation has the AC equations'
    values and gradients at its own point, so this is the KKT condition of the
    AC problem; a region shrunk to nothing around a point that is not
    stationary is not reported as converged. Where ``losses.MAX_ITERATIONS``
    solves end without it, :func:`_polish` takes up to ``POLISH_SOLVES`` more
    (a Newton point of the pressed bids, or those held open released) on a copy
    of the solver, and where they do not converge either, the result and the
    solver are those of the last solve here, to the bit.

    A re-linearised solve found infeasible (or left undecided by HiGHS: ``UNSOLVED``)
    whose feasibility relaxation breaks limits by numerical noise only is solved again
    with those limits widened by ten times that noise (:func:`relieve_noise`), for that
    linearisation only (:func:`restore_limits` undoes it on re-linearising). Otherwise
    a solve found infeasible (the first, or one after re-linearising) is followed
    once by phase one (:func:`_phase_one`): re-linearised where its linearisation
    comes closest to feasible, since a linearisation is exact only at its own point
    and an LP far from a feeder's thin feasible set (a held schedule on a limit)
    can miss it. Only if that fails too, and a start from the fixed load's own AC point (:func:`_from_fixed_load`,
    where that point is within the feeder's limits) fails as well, is the market reported infeasible; a dispatch
    whose AC power flow does not converge is followed once by that start too.

    ``rescue=False``: a first solve found infeasible is the answer, no phase one after it, for a start linearised
    at its own AC point that breaks a limit (:func:`engine.branches.best_fixed_point`'s held branches): the LP has
    that point's values and gradients, so no dispatch near it meets the limits (:func:`engine.branches._held_there`).

    Returns the last solve (its ``solve_seconds`` those of every solve) and the
    convergence summary (:func:`engine.losses.convergence_summary`; None when no
    solve succeeded); the bid bounds are the ones the LP had on entry.
    """
    s = solver
    bid = s.model.var("bid").slice
    n = bid.stop - bid.start
    base_lo, base_hi = s.col_lower[bid].copy(), s.col_upper[bid].copy()
    rested = False   # whether a failed solve was followed by phase one (:func:`_phase_one`)
    reset = False    # whether a dispatch with no AC power flow was followed by the fixed load's point (_from_fixed_load)
    extra = 0
    if not sol.ok:
        if sol.status not in UNSOLVED or not rescue:
            return sol, None
        # LinDistFlow (the start) is no relaxation of the AC feeder where power flows back: it leaves out
        # the losses of the lines beyond, so it overstates what arrives. A schedule held at a line's rating
        # can be infeasible there and feasible on the feeder.
        first = sol.solve_seconds
        sol, extra, more = _phase_one(parts, s, set_matrix, sol)
        sol, rested = dataclasses.replace(sol, solve_seconds=first + more), True
        if not sol.ok:
            return sol, None
    bracket = losses.MarginalBracket(n)
    pinned = np.zeros(n, dtype=bool)
    radius, trusting = np.full(n, np.inf), False   # the trust region's half-width per bid (MW)
    centre_merit = centre_viol = np.nan   # the trust region's centre: its AC objective and violation
    seconds, solves, trust, kept = sol.solve_seconds, 1 + extra, False, False
    last_step = np.zeros(n)   # the trust region's last kept step
    for iteration in range(1, losses.MAX_ITERATIONS + 1):
        x = s.block(sol.x, "bid")
        pts = points(parts, sol.x, x)
        res = residual(parts, sol.x, pts)
        # No point yet (None): the first model is the lossless linearisation, not one at a dispatch.
        lossless = parts[0].market._point_bids is None
        centre = None if lossless else np.concatenate([p.market._point_bids for p in parts])
        step = x - (np.zeros_like(x) if lossless else centre)
        moved = np.inf if lossless else float(np.max(np.abs(step), initial=0.0)) * S_BASE_KVA
        reduced = s.block(sol.col_dual, "bid")   # at the point this solve was linearised at
        # Stationarity (KKT of the AC problem, whose gradients the linearisation has): the LP's reduced
        # costs are dual feasible for the bounds it was solved with; a bid is held against its wish only
        # where the bound it presses on is a pin or the trust region's, not its own quantity or zero.
        open_ = losses.held_open(x, reduced, s.col_lower[bid], s.col_upper[bid], base_lo, base_hi)
        if trusting:
            value, viol = merit(parts, sol, s, pts)
            pred = centre_merit - sol.objective
            ratio = (centre_merit - value) / pred if pred > 0 else 1.0   # AC gain / promised gain
            gained = ratio >= losses.TRUST_ACCEPT
            feasible = viol <= max(centre_viol, losses.VIOLATION_TOL)
            if not (gained and feasible) and np.max(radius, initial=0.0) > losses.TRUST_MIN_MW and not kept:
                # The AC problem did not gain what its linearisation promised: a smaller region around
                # the same centre (the model stays linearised there, so the re-solve is warm).
                candidate = sol
                for scale in (0.25, 4.0):
                    # A centre outside a limit may need the wider region to get back inside: then
                    # the step is kept as it was.
                    radius *= scale
                    _bound_bids(s, np.maximum(base_lo, centre - radius), np.minimum(base_hi, centre + radius))
                    sol = s.solve()
                    solves += 1
                    seconds += sol.solve_seconds
                    kept = scale > 1.0
                    if sol.ok:
                        break
                if not sol.ok:
                    # HiGHS failed on a region it had solved: stop at the step it gave then.
                    sol = candidate
                    break
                continue
            kept = False
            centre_merit, centre_viol = value, viol
            # A bid sent back the way it came by a step as long as the region: the region is wider than
            # the distance to where its reduced cost vanishes, and a fixed width would circle there.
            reversed_ = (step * last_step < 0) & (np.abs(step) >= 0.5 * radius)
            # One sent on the same way after a step at least half as long: its reduced cost has not vanished
            # within the region, so the region may grow even where the step gained only part of its promise.
            onward = (step * last_step > 0) & (np.abs(last_step) >= 0.5 * radius)
            last_step = step
        done = res.ok and moved <= losses.STEP_TOL_KW and not open_.any()
        if not done and not reset and not all(p.converged for p in pts) and iteration < losses.MAX_ITERATIONS:
            # No AC power flow of this dispatch (its linearisation let it far past what the feeder carries: from
            # LinDistFlow's start, 13 MW exported on ieee33 at 68.25 per MWh, a property test of the server's): once,
            # from the fixed load's own point, where the AC power flow converges if the feeder's base case does.
            _bound_bids(s, base_lo, base_hi)
            start, reset = _from_fixed_load(parts, s, set_matrix), True
            if start is not None:
                solves, seconds = solves + 1, seconds + start.solve_seconds
            if start is not None and start.ok:
                sol, bracket, trusting, trust, kept = start, losses.MarginalBracket(n), False, False, False
                pinned[:] = False
                radius = np.full(n, np.inf)
                continue
        if done or iteration == losses.MAX_ITERATIONS or not all(p.converged for p in pts):
            break
        if iteration >= losses.BRACKET_ITERATIONS:
            # Still circling (several bids and limits interacting): a trust region on every bid around
            # the dispatch, accepted by the AC merit it gains and shrunk when it gains too little, ends
            # the cycle at a stationary point, not merely where the region has shrunk.
            if not trusting:
                trusting = True
                radius = np.full(n, max(float(np.max(np.abs(step), initial=0.0)), losses.TRUST_START_MW) / 2.0)
                radius_max = radius.copy()   # per bid: widened where a bid keeps stepping the same way at it
                centre_merit, centre_viol = merit(parts, sol, s, pts)
                start = _trust_from_linearisation_point(parts, s, centre, centre_merit, centre_viol,
                                                        base_lo, base_hi)
                if start is not None:
                    sol, centre_merit, centre_viol, radius, more = start
                    solves, seconds, trust, last_step = solves + 2, seconds + more, True, np.zeros(n)
                    continue
            elif ratio < 0.25:
                radius /= 2.0   # kept, but it gained under a quarter of what it promised
            else:
                # Per bid: narrower where a bid turned back, wider again where a full step gained as promised,
                # 1.2 times wider where a full step went on the way the last went (Rprop's rule, as the thermal
                # polygons' own trust region, engine.losses.refined): otherwise a step that gains 0.6-0.7 of
                # its promise holds such a bid to a fixed width, and it creeps (ieee33 hidden-physics seed 1508
                # near 190.7186: two bids 2.4 W an iteration for the last 25 of MAX_ITERATIONS).
                at_edge = np.abs(step) >= radius * (1 - 1e-9)
                grow = np.where((ratio >= 0.75) & at_edge, 2.0, np.where(onward & at_edge, 1.2, 1.0))
                # The cap (half the step before the region took over) is a guess at how far the linearisation
                # holds; a bid that keeps going the same way at the cap, step after kept step, shows it holds
                # further. Capped for good, a bid of synth1000-s31006 at -96.0045 (hidden-physics seed 31000) crept
                # 5 kW a solve, the same way, to MAX_ITERATIONS.
                radius_max = np.where(onward & at_edge & (radius >= radius_max * (1 - 1e-9)), 2.0 * radius_max,
                                      radius_max)
                radius = np.where(reversed_, radius / 2.0, np.minimum(grow * radius, radius_max))
            pin = np.full(n, np.nan)
            pinned = np.zeros(n, dtype=bool)
        elif lossless:
            # The lossless model's reduced costs are not those of a linearisation at a dispatch:
            # they would seed brackets that regula falsi cannot use.
            pin = np.full(n, np.nan)
        else:
            pin = bracket.target(centre, reduced, x)
            # A bracket closed on a non-zero reduced cost held no interior optimum: free that bid.
            bracket.release(open_ & (bracket.width() * S_BASE_KVA <= losses.STEP_TOL_KW))
            pin[~bracket.active] = np.nan
            if bracket.active.any():
                # Newton on the losses' curvature moves interacting bids together; the bracket
                # (regula falsi) stays the safeguard where the step leaves it.
                idx = np.nonzero(bracket.active)[0]
                pin = bracket.prefer(pin, idx, x[idx] + losses.curvature_step(
                    s, [(p.market.model, p.market.feeder, p.market.point, p.cols, p.rows) for p in _live(parts)], sol,
                    idx))
            # A pinned bid whose reduced cost is within tolerance is settled: moving it again
            # would only make the bids the LP holds basic chase it.
            hold = pinned & bracket.active & (np.abs(reduced) <= losses.MARGINAL_TOL)
            pin[hold] = centre[hold]
            pinned = np.isfinite(pin)
        if pinned.any():
            # Linearise where the pinned bids will be, so the next reduced cost is sampled there, and the bids the LP
            # holds basic where the pins' moves put them (a line on its rating, the interface balance): moved by
            # the next solve instead, they would be linearised where they were, and cost another solve or two.
            # Basis directions are those of nonbasic columns: a pinned bid basic (or tied: reduced cost within
            # TIE_DUAL_TOL) in this solve moves alone, as does one held at its centre.
            to = np.clip(pin, base_lo, base_hi)
            moving = np.flatnonzero(pinned & (to != x) & (np.abs(reduced) > TIE_DUAL_TOL))
            if len(moving):
                x = _moved_with_basis(s, x, moving, to[moving], base_lo, base_hi)
            x = np.where(pinned, to, x)
            pts = points(parts, sol.x, x)
        _relinearise(parts, s, x, pts, set_matrix)
        if trusting:
            trust = True
            _bound_bids(s, np.maximum(base_lo, x - radius), np.minimum(base_hi, x + radius))
        elif pinned.any() or trust:
            trust = True
            _bound_bids(s, np.where(pinned, x, base_lo), np.where(pinned, x, base_hi))
        # From the last basis, factorised afresh on the new matrix: where it is still optimal within HiGHS's own
        # tolerance (a re-linearisation typically leaves its values within 1e-7 of a bound) no HiGHS run, which
        # would end there in 0 iterations and cost its set-up and factorisation (HighsSolver.solve_by_basis); the
        # values are those of the basis alone, as after that run. No pivots of our own: where the basis is not
        # optimal, HiGHS's run from it and ours can end at different optimal vertices, and where two fixed points
        # hold at a price the iteration then lands on the other branch (tests/test_hidden_physics.py, ieee69 seed
        # 406 near -74.71). A HiGHS run's optimum is read through the run's own factorisation: the next
        # re-linearisation factorises its basis afresh anyway.
        nxt = s.solve_by_basis(pivots=0, primal_tol=HIGHS_PRIMAL_TOL, fresh=False)
        solves += 1
        seconds += nxt.solve_seconds
        if not nxt.ok and pinned.any():
            # Pins that leave no feasible dispatch: free the bids and iterate plainly from here.
            _bound_bids(s, base_lo, base_hi)
            bracket = losses.MarginalBracket(n)
            pinned[:] = False
            nxt = s.solve()
            solves += 1
            seconds += nxt.solve_seconds
        if not nxt.ok and nxt.status in UNSOLVED and relieve_noise(s):
            # Broken by noise only (held positions read back to the micro-kW on a limit nothing bid can
            # relieve): after phase one as before it, since every later linearisation meets that limit again.
            nxt = s.solve()
            solves += 1
            seconds += nxt.solve_seconds
        if not nxt.ok and nxt.status in UNSOLVED and not rested:
            # A linearisation far from where the feeder's feasible dispatches lie (a held schedule on a
            # limit, nothing bid that relieves it): from where it comes closest, once.
            _bound_bids(s, base_lo, base_hi)
            bracket, trusting, trust = losses.MarginalBracket(n), False, False
            pinned[:] = False
            radius = np.full(n, np.inf)
            nxt, extra, more = _phase_one(parts, s, set_matrix, nxt)
            solves, seconds, rested = solves + extra, seconds + more, True
        sol = nxt
        if not sol.ok:
            # Pinned bids or the re-linearised model itself leave no feasible dispatch: report it.
            break
    if not done and sol.ok and iteration == losses.MAX_ITERATIONS and all(p.converged for p in pts):
        polished = _polish(parts, s, set_matrix, sol, base_lo, base_hi)
        if polished is not None:
            sol, more, more_seconds, res, moved = polished
            done, solves, seconds, trusting = True, solves + more, seconds + more_seconds, False
            pinned[:] = False
    if trust:
        # No re-solve released: converged, no bid presses on a pin or the region with a reduced cost
        # above MARGINAL_TOL, so the duals of this solve are the prices of the free LP at this point.
        _bound_bids(s, base_lo, base_hi)
    summary = losses.convergence_summary(done, solves, res, moved, int(pinned.sum()),
                                         float(np.max(radius, initial=0.0)) if trusting else np.inf)
    return dataclasses.replace(sol, solve_seconds=seconds), summary
