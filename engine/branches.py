"""Which of the loss-aware clearing's fixed points a market keeps where losses are worth money.

Where a DLMP is negative (an ISO price below zero, or a subtree behind a congested line with power
to spare), the losses are worth money at that bus: the objective, which pays the price for the
import, is concave in the dispatch there, and the AC clearing problem is non-convex. A bid large
enough to move its own bus's loss factor can then be a fixed point of successive LP at either end
of its quantity (its own losses pay for it, or without them it does not clear), and the iteration
(:func:`engine.successive.converge`) settles on one of them by the path it takes: on
``bench_hidden_physics`` case ieee33-s908 a fresh clearing imported 4,984 kW at -42.4 per MWh,
4,174 at -42.2 and 4,975 at -42.1, though at each price the branch buying bid b8 (815.5 kW at
bus 21) is the better optimum below about -41.95 and the one without it above
(``benchmarks/bench_fixed_points.py``). The import of a global optimum falls with the price
(revealed preference); the interface curve, which must agree with ``clear`` and be monotone, needs
the same of ``clear``.

:func:`best_fixed_point`, called by :meth:`engine.clearing.NodalMarket.converge` and
:meth:`engine.runs.CoupledMarket.converge` (so ``clear``, ``clear_runs``, the curves' clearings, a horizon's
included, and a kept market's re-clears choose alike), converges once more from the other side of the bids
that could be fixed points there (:func:`candidates`), one interval's (or one resource's in it) at a time and,
where such a group has several, each alone too, and keeps the better fixed point by the objective with the AC
import (:func:`engine.successive.merit`).

Why the best by that objective: each branch's welfare is, near its price, the best over the dispatches around
its fixed point of a function affine in the ISO price, so convex in it, with slope minus its import; the best
of a set of branches found at every price is then convex too, and its import (the slope's negative) falls as the
price rises. The selection is monotone as long as every branch that is best where it holds is also found there;
a branch missed at one price and found at the next is what makes ``clear`` rise (synth100-s17002 below).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import highspy
import numpy as np
import polars as pl

from dsomarket.engine import losses, successive
from dsomarket.engine.solver import HighsSolver, Solution

CANDIDATE_MARGIN = 1.5
"""How far past its estimate (:func:`candidates`) the move of a bid's loss-adjusted price by its own
dispatch is trusted: the estimate leaves out the voltage's fall along the path (``1 / v^2``) and the cross
terms with the other bids' flows, so a bid whose reduced cost is up to 1.5 times it is tried."""

FORCING_TIE = 1e-9
"""Reduced cost (per MWh) at or below which a bid column may be basic in the LP's optimal basis, and what it costs to
move it is its row's ratio test (:func:`candidates`) rather than its reduced cost."""

MERIT_TIE = 1e-9
"""Relative difference of two fixed points' AC objectives below which they count as tied; the one with
the smaller import is then kept (the same choice whichever the iteration reached first)."""


def candidates(parts: list[successive.Part], solver: HighsSolver, sol: Solution
               ) -> tuple[np.ndarray, np.ndarray] | None:
    """Where each column of the ``bid`` block would be on the other branch (MW; NaN where it has none) and its
    group (an index per part, interval and resource: an interval's bids of no resource are one group, each
    resource's bids in it another); None where no bid has one.

    A branch is possible only where losses are worth money: at a bus whose DLMP in ``sol`` is negative, the
    objective (which pays that price for the losses its dispatch causes) is concave in the dispatch there.
    Not the ISO price's sign: behind an import limit the root's DLMP is not the ISO price, and behind a
    congested line a subtree can have power to spare at a positive ISO price. A bid column at such a bus, not
    held (its bounds apart), is a candidate when its reduced cost (per MWh; for a column basic in the LP's optimal
    basis, part-way or tied at a bound, what forcing it towards its other side costs the LP instead,
    :meth:`HighsSolver.forcing_costs`, where known) is smaller in size than
    ``CANDIDATE_MARGIN`` times what moving it to its other side moves its bus's loss-adjusted price by: the
    idea of :class:`engine.losses.MarginalBracket`, a bid priced within the range its own dispatch moves its
    bus's loss factor over. That move is the DLMP times the change of the loss factor, ``2 R (1 + tan_phi^2)
    dq`` (the path's resistance and the distance moved, pu). Its other side is the end of its quantity
    farther from where it cleared (the other bound of a bid at one, the farther one of a bid cleared part-way).
    A frozen part's bids (its linearisation held, :class:`engine.successive.Part`) have none.

    The forcing cost is the least rate at which the LP pays for the move (it holds to the first change of basis and
    rises from there), so a basic bid it rules out is ruled out over the whole move, as a nonbasic one is by its
    reduced cost. Before it, every part-way bid at such a bus was a candidate: at the floor price of the territory's
    synthetic feeders those are the bids a rating or a voltage floor holds part-way, small against what forcing
    them costs, and every start from one came back to the same fixed point, half of a loss-aware curve's time
    (``python benchmarks/profile_curve.py --feeder DIR/feeder-0000 --branches``; benchmarks/README.md).
    """
    others, groups, offset = [], [], 0
    for part in parts:
        m = part.market
        book, topo = m.columns.book, m.feeder.topology
        x, bid = sol.x[part.cols], m.model.var("bid").slice
        dlmp = m.block(sol.row_dual[part.rows], "bus_p_balance", rows=True).reshape(book.n_interval, topo.n_bus)
        if part.frozen or not (dlmp < 0.0).any():
            others.append(np.full(book.n, np.nan))
            groups.append(np.full(book.n, -1))
            continue
        # A resource's bids apart from the interval's others: its state links them to its bids in other
        # intervals, so that whether it is on one branch is another choice than whether they are. Only a resource
        # the market models (a battery, an EV, a flexible load, a commitment): a resource_id that names a DER
        # with no such state is a label, and its bids stay in their interval's group (one group per label would
        # converge once per candidate bid).
        linked = sorted({r.resource_id for r in m.resources})
        resource = book.table["resource_id"].replace_strict(linked, range(1, len(linked) + 1), default=0,
                                                            return_dtype=pl.Int64).to_numpy()
        kinds = len(linked) + 1
        groups.append(offset + book.t_idx * kinds + resource)
        offset += book.n_interval * kinds
        lo, hi = solver.col_lower[part.cols][bid], solver.col_upper[part.cols][bid]
        xb, reduced = x[bid], sol.col_dual[part.cols][bid]
        other = np.where(xb - lo > hi - xb, lo, hi)
        price = dlmp[book.t_idx, book.bus_idx]
        move = -price * 2.0 * topo.path_sum(topo.r_pu)[book.bus_idx] * (1.0 + book.tan_phi ** 2) * np.abs(other - xb)
        flip = (hi > lo) & (price < 0.0) & (np.abs(reduced) < CANDIDATE_MARGIN * move)
        # A basic bid (part-way, or tied at a bound) has no reduced cost to hold it where it is: what it costs the LP
        # to force it towards its other side is its row's ratio test (HighsSolver.forcing_costs), which holds it
        # as a reduced cost holds a nonbasic bid. Unknown (NaN): a candidate still.
        basic = np.flatnonzero(flip & (np.abs(reduced) <= FORCING_TIE))
        if basic.size:
            forcing = solver.forcing_costs(sol, np.arange(solver.model.n_col)[part.cols][bid][basic],
                                           other[basic] > xb[basic])
            flip[basic[forcing >= CANDIDATE_MARGIN * move[basic]]] = False
        others.append(np.where(flip, other, np.nan))
    other = np.concatenate(others)
    return (other, np.concatenate(groups)) if np.isfinite(other).any() else None


@dataclass(frozen=True, eq=False)
class _FixedPoint:
    """A converged solve, its summary, its merit (:func:`engine.successive.merit`: AC objective, violation), its
    import (MW, summed over intervals) and the state that reached it: each part's linearisation and the basis."""

    sol: Solution
    summary: dict
    merit: tuple[float, float]
    import_mw: float
    state: tuple

    @staticmethod
    def of(parts: list[successive.Part], solver: HighsSolver, sol: Solution, summary: dict) -> "_FixedPoint":
        pts = successive.points(parts, sol.x, solver.block(sol.x, "bid"))
        return _FixedPoint(sol, summary, successive.merit(parts, sol, solver, pts),
                           float(np.sum(solver.block(sol.x, "import_p"))),
                           ([(p.market.model, p.market.point, p.market._point_bids) for p in parts],
                            solver.held_basis()))

    def better_than(self, other: "_FixedPoint") -> bool:
        """A smaller AC objective (ties within ``MERIT_TIE``: the smaller import) within ``other``'s violation or
        ``VIOLATION_TOL``."""
        tied = abs(self.merit[0] - other.merit[0]) <= MERIT_TIE * max(1.0, abs(other.merit[0]))
        better = self.merit[0] < other.merit[0] and not tied or tied and self.import_mw < other.import_mw
        return better and self.merit[1] <= max(other.merit[1], losses.VIOLATION_TOL)

    def restore(self, parts: list[successive.Part], solver: HighsSolver, set_matrix: Callable[[], None]) -> None:
        """The market as this fixed point's converge left it: its linearisation and basis, set before the matrix,
        which carries it to the next solve; the basis another start's last solve kept
        (:meth:`HighsSolver.solve_by_basis`) is not this one's."""
        for p, (model, point, bids) in zip(parts, self.state[0]):
            p.market.model, p.market.point, p.market._point_bids = model, point, bids
        successive.restore_limits(solver)
        solver.start_from(self.state[1])
        set_matrix()


def _moves(other: np.ndarray, group: np.ndarray) -> list[tuple[int, int]]:
    """The starts :func:`best_fixed_point` may try from a fixed point whose :func:`candidates` are ``(other,
    group)``, in order, each as (group, column): a group's candidates all moved together (column -1), then, where
    one group alone has candidates and it has several, each moved alone (its column in the ``bid`` block).

    Alone only where one group has candidates (a market of one interval, or a horizon with them in one interval):
    a horizon's groups already split its candidates (an interval's, a resource's), and moving each alone in every
    interval multiplies the converges of every clearing of a horizon's curve: ``tests/test_coupled_branches.py``'s
    curve ran past its 900 s timeout with that (load 7-9 on 2 cores)."""
    groups = np.unique(group[np.isfinite(other)])
    out = []
    for g in groups:
        out.append((int(g), -1))
        cols = np.nonzero(np.isfinite(other) & (group == g))[0]
        if groups.size == 1 and cols.size > 1:
            out.extend((int(g), int(c)) for c in cols)
    return out


def _held_there(solver: HighsSolver, parts: list[successive.Part], set_matrix: Callable[[], None],
                moved: np.ndarray, start: np.ndarray, within: bool) -> tuple[Solution, dict | None]:
    """Successive LP with the bids ``moved`` held where ``start`` has them (MW: one of their own bounds), from the
    linearisation the market has; where that fixed point leaves them pressing on their own bound only (their reduced
    costs would keep them there: :func:`engine.losses.held_open` against their own bounds), it is a fixed point of
    the market itself, returned as it is with their own bounds back; else successive LP goes on from it with them
    free (a bid whose branch lies inside its quantity, as b8's of ieee33-s908 at 801.4 of 815.5 kW). The summary's
    ``iterations`` count both converges.

    Held, because a start from the other side alone can drift back: on synth100-s17002 at -95.78 per MWh, bid b58
    (120.1 kW at bus 50) moved to its quantity went back to 0 after some 20 iterations of the others' trust region,
    while held there the others settle at a fixed point where b58's own reduced cost (-0.013 per MWh) keeps it at
    its quantity, better by 0.0003 per hour than the fixed point without it.

    ``within``: whether the AC point of ``start`` (the linearisation the market has) is within the feeder's
    limits. Where it is not and the LP held there is infeasible, there is no such fixed point near it: no phase one
    (``converge``'s ``rescue``): phase one's two feasibility relaxations (~0.4 s each at 1,000 buses) found none on
feeders 2, 4 and 7 of ``dsomarket territory synth --feeders 8 --buses 1000 --bids 1000 --seed 2`` at the floor
price, whose curves are the same to the bit without them in 0.32-0.57 of the time (``python
benchmarks/bench_successive_ab.py --base bc66600 --feeder DIR/feeder-000K``)."""
    bid = solver.model.var("bid").slice
    lo, hi = solver.col_lower[bid].copy(), solver.col_upper[bid].copy()
    held_lo, held_hi = np.where(moved, start, lo), np.where(moved, start, hi)
    successive._bound_bids(solver, held_lo, held_hi)
    sol, summary = successive.converge(solver, parts, set_matrix, solver.solve(explore=True), rescue=within)
    successive._bound_bids(solver, lo, hi)
    if not (sol.ok and summary is not None and summary["converged"]):
        return sol, summary
    xb, reduced = solver.block(sol.x, "bid"), solver.block(sol.col_dual, "bid")
    if not losses.held_open(xb, reduced, held_lo, held_hi, lo, hi).any():
        # Nonbasic at the bound they were held on (a fixed column may be marked at either): its basis is the free
        # LP's optimal one, so a warm solve from it (the next re-clear) starts where this fixed point is.
        basis = solver.h.getBasis()
        status = np.asarray(basis.col_status, dtype=object)
        at = np.flatnonzero(moved) + bid.start
        nonbasic = status[at] != highspy.HighsBasisStatus.kBasic
        status[at[nonbasic]] = np.where(start[moved][nonbasic] >= hi[moved][nonbasic],
                                        highspy.HighsBasisStatus.kUpper, highspy.HighsBasisStatus.kLower)
        basis.col_status = status.tolist()
        solver.start_from(basis)
        return sol, summary
    free, more = successive.converge(solver, parts, set_matrix, solver.solve(explore=True))
    if more is not None:
        more = more | {"iterations": more["iterations"] + summary["iterations"]}
    return dataclasses.replace(free, solve_seconds=free.solve_seconds + sol.solve_seconds), more


def best_fixed_point(solver: HighsSolver, parts: list[successive.Part], set_matrix: Callable[[], None],
                     sol: Solution, convergence: dict | None) -> tuple[Solution, dict | None]:
    """The best of the fixed point ``sol`` (converged, its summary ``convergence``) and those successive LP
    reaches from the other side of its :func:`candidates` (:func:`_moves`: a group's together, then each alone),
    with the summary of the one kept.

    ``solver``, ``parts`` and ``set_matrix`` are what :func:`engine.successive.converge` was given
    (:meth:`engine.clearing.NodalMarket.converge`: the market itself; :meth:`engine.runs.CoupledMarket.converge`:
    a horizon's parts). Each other start is the AC power flow of the best fixed point so far with one group's
    candidates, or one of them (then held there while the others settle: :func:`_held_there`), moved to their
    other side, linearised there (as a re-linearisation of
    :func:`engine.successive.converge` is) and converged from; the one reached is kept where its objective with its
    AC import (:func:`engine.successive.merit`; ties within ``MERIT_TIE``: the smaller import) is smaller, and the
    candidates are then those of the one kept. One group at a time because each interval's bids have their own
    branches, and a resource's are tied to its bids in the other intervals: over a horizon of three hours at a
    negative ISO price (bid b8 of ieee33-s908 each hour, a battery at its bus), moving every candidate at once
    compared two of the eight branches of b8 and kept the worse, and moving each hour's together (the battery's
    with b8's) missed the battery charging in hour 1, better by 0.004 per hour with line 17 out
    (``benchmarks/bench_coupled_fixed_points.py``). Each alone too where a group has several, because moving them
    together can lead back to the same fixed point: on ``bench_hidden_physics`` case synth100-s17002 at -95.7878 per
    MWh, bids 2 (107.4 kW cleared) and 54 (0 of 120.1 kW) moved together converged back to 7,198.0 kW, while bid
    54 bought alone is a fixed point importing 7,307.8 kW and better by 0.0012 per hour, which the first converge
    at -95.7876 reached (``clear`` rose by 110 kW between the two prices, and the curve could not place the
    step); and at -95.78, b58 moved alone drifted back, so a bid moved alone is held there first. Each move is
    tried once (a group's together once, whatever its candidates are by then; a bid alone once, with a second
    converge where it is released), so a market of one interval and no resource converges at most twice where it
    has one candidate (as before) and up to 2 k + 2 times where the fixed points kept have k in all (from the first,
    k = 2 tries each other combination of sides), and one of T intervals and R resources at most T (R + 1) + 1
    times where several groups have candidates, as before. All are
    fixed points (KKT points of the AC problem); the market is left as the kept one's converge left it (its
    linearisation, point and basis). The summary's ``iterations`` count every converge; ``branches`` is how many
    fixed points were compared (1 where there was no other side to try, or ``sol`` did not converge).
    """
    if convergence is None:
        return sol, convergence
    flip = candidates(parts, solver, sol) if sol.ok and convergence["converged"] else None
    if flip is None:
        return sol, convergence | {"branches": 1}
    best = _FixedPoint.of(parts, solver, sol, convergence)
    solves, seconds, compared, tried = convergence["iterations"], sol.solve_seconds, 1, set()
    while flip is not None and (todo := [m for m in _moves(*flip) if m not in tried]):
        tried.add(todo[0])
        x = solver.block(best.sol.x, "bid")
        g, col = todo[0]
        moved = np.isfinite(flip[0]) & (flip[1] == g) if col < 0 else np.arange(x.size) == col
        start = np.where(moved, flip[0], x)
        pts = successive.points(parts, best.sol.x, start)
        successive._relinearise(parts, solver, start, pts, set_matrix)
        if col < 0:
            other, summary = successive.converge(solver, parts, set_matrix, solver.solve(explore=True))
        else:
            other, summary = _held_there(solver, parts, set_matrix, moved, start,
                                         successive.within_limits(parts, pts))
        solves += summary["iterations"] if summary else 1
        seconds += other.solve_seconds
        compared += 1
        reached = _FixedPoint.of(parts, solver, other, summary) if other.ok and summary["converged"] else None
        if reached is not None and reached.better_than(best):
            best = reached
            flip = candidates(parts, solver, other)
        else:
            best.restore(parts, solver, set_matrix)
    return (dataclasses.replace(best.sol, solve_seconds=seconds),
            best.summary | {"iterations": solves, "branches": compared})
