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

:func:`best_fixed_point`, called by :meth:`engine.clearing.NodalMarket.converge` (so ``clear``, the
curve's fresh clearings and a kept market's re-clears choose alike), converges once more from the
other side of the bids that could be fixed points there (:func:`candidates`) and keeps the better
of the two fixed points by the objective with the AC import (:func:`engine.successive.merit`).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from dsomarket.engine import losses, successive
from dsomarket.engine.solver import Solution

CANDIDATE_MARGIN = 1.5
"""How far past its estimate (:func:`candidates`) the move of a bid's loss-adjusted price by its own
dispatch is trusted: the estimate leaves out the voltage's fall along the path (``1 / v^2``) and the cross
terms with the other bids' flows, so a bid whose reduced cost is up to 1.5 times it is tried."""

MERIT_TIE = 1e-9
"""Relative difference of two fixed points' AC objectives below which they count as tied; the one with
the smaller import is then kept (the same choice whichever the iteration reached first)."""


def candidates(market, sol: Solution) -> np.ndarray | None:
    """Where each bid column would be on the other branch (MW), NaN where it has none; None where no bid has.

    A branch is possible only where losses are worth money: at a bus whose DLMP in ``sol`` is negative, the
    objective (which pays that price for the losses its dispatch causes) is concave in the dispatch there.
    Not the ISO price's sign: behind an import limit the root's DLMP is not the ISO price, and behind a
    congested line a subtree can have power to spare at a positive ISO price. A bid column at such a bus, not
    held (its bounds apart), is a candidate when its reduced cost (per MWh) is smaller in size than
    ``CANDIDATE_MARGIN`` times what moving it to its other side moves its bus's loss-adjusted price by: the
    idea of :class:`engine.losses.MarginalBracket`, a bid priced within the range its own dispatch moves its
    bus's loss factor over. That move is the DLMP times the change of the loss factor, ``2 R (1 + tan_phi^2)
    dq`` (the path's resistance and the distance moved, pu). Its other side is the end of its quantity
    farther from where it cleared (the other bound of a bid at one, the farther one of a bid cleared part-way).
    """
    s, book, topo = market.solver, market.columns.book, market.feeder.topology
    dlmp = market.block(sol.row_dual, "bus_p_balance", rows=True).reshape(book.n_interval, topo.n_bus)
    if not (dlmp < 0.0).any():
        return None
    bid = market.model.var("bid").slice
    lo, hi = s.col_lower[bid], s.col_upper[bid]
    x, reduced = market.block(sol.x, "bid"), market.block(sol.col_dual, "bid")
    other = np.where(x - lo > hi - x, lo, hi)
    price = dlmp[book.t_idx, book.bus_idx]
    move = -price * 2.0 * topo.path_sum(topo.r_pu)[book.bus_idx] * (1.0 + book.tan_phi ** 2) * np.abs(other - x)
    flip = (hi > lo) & (price < 0.0) & (np.abs(reduced) < CANDIDATE_MARGIN * move)
    return np.where(flip, other, np.nan) if flip.any() else None


def best_fixed_point(market, sol: Solution, convergence: dict | None) -> tuple[Solution, dict | None]:
    """The better of the fixed point ``sol`` (converged, its summary ``convergence``) and the one successive LP
    reaches from the other side of its :func:`candidates`, with the summary of the one kept.

    The other start is the AC power flow of ``sol``'s dispatch with the candidates moved to their other side,
    linearised there (as a re-linearisation of :func:`engine.successive.converge` is) and converged from.
    Both are fixed points (KKT points of the AC problem); the one with the smaller objective with its AC
    import (:func:`engine.successive.merit`; ties within ``MERIT_TIE``: the smaller import) is kept, and the
    market is left as that one's converge leaves it (its linearisation, point and basis). The summary's
    ``iterations`` count both; ``branches`` is how many fixed points were compared (1 where there was no
    other side to try, or ``sol`` did not converge).
    """
    if convergence is None:
        return sol, convergence
    flip = candidates(market, sol) if sol.ok and convergence["converged"] else None
    if flip is None:
        return sol, convergence | {"branches": 1}
    s, parts = market.solver, [successive.Part(market)]
    x = market.block(sol.x, "bid")
    first = successive.merit(parts, sol, s, successive.points(parts, sol.x, x))
    kept = (market.model, market.point, market._point_bids, s.h.getBasis())

    def set_matrix() -> None:
        s.set_matrix(market.model)

    start = np.where(np.isfinite(flip), flip, x)
    successive._relinearise(parts, s, start, successive.points(parts, sol.x, start), set_matrix)
    other, summary = successive.converge(s, parts, set_matrix, s.solve())
    solves = convergence["iterations"] + (summary["iterations"] if summary else 1)
    if other.ok and summary["converged"]:
        second = successive.merit(parts, other, s, successive.points(parts, other.x, market.block(other.x, "bid")))
        imports = [float(np.sum(market.block(v.x, "import_p"))) for v in (sol, other)]
        tied = abs(second[0] - first[0]) <= MERIT_TIE * max(1.0, abs(first[0]))
        better = second[0] < first[0] and not tied or tied and imports[1] < imports[0]
        if better and second[1] <= max(first[1], losses.VIOLATION_TOL):
            return (dataclasses.replace(other, solve_seconds=sol.solve_seconds + other.solve_seconds),
                    summary | {"iterations": solves, "branches": 2})
    # Back to the first fixed point: its linearisation and basis, set before the matrix, which carries it to the
    # next solve; the basis the other start's last solve kept (HighsSolver.solve_by_basis) is not this one.
    market.model, market.point, market._point_bids, basis = kept
    successive.restore_limits(s)
    s.h.setBasis(basis)
    s._kept = None
    s.set_matrix(market.model)
    return (dataclasses.replace(sol, solve_seconds=sol.solve_seconds + other.solve_seconds),
            convergence | {"iterations": solves, "branches": 2})
