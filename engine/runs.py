"""Clearing, interface curves and disaggregation of a market whose network changes during its horizon.

A change set splits a market's intervals into runs of one network state
(:func:`engine.network_changes.network_runs`). Without a resource that links
intervals, each run is cleared, traced or disaggregated on its own feeder with
the bids of its intervals (bids at de-energised buses take no part: nothing can
be delivered there), with whatever formulation the options name, and the tables
are put back together in interval order. With no change in effect this is
exactly the ordinary call on the feeder as loaded.

Where storage, EV energy or ramps link the intervals, the runs are not cleared
apart: :class:`CoupledMarket` is one LP for the whole horizon whose network rows
differ per interval (each interval has the incidence, impedances, ratings and
limits of its own run's feeder, and a line out of service has no flow column in
its intervals), so that the state of charge, EV energy and ramps run across the
change.
"""

from __future__ import annotations

import dataclasses
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
import scipy.sparse as sp

from dsomarket.engine import branches, successive
from dsomarket.engine.bids import (BidBook, Commitment, MarketRules, Resource, canonical, couples_intervals,
                                  validate_bids)
from dsomarket.engine.clearing import (ClearingOptions, ClearingResult, MarketContext, NodalMarket, _failed, clear,
                                       diagnose, held_bounds, import_bounds, iso_prices)
from dsomarket.engine.disaggregation import (Disaggregation, _applied, _award_arrays, _empty_dispatch,
                                             _empty_instructions, _fixed_table, _held_rows, award_prices, converge_award,
                                             disaggregate, held_loads, instructions, shed_array, with_held)
from dsomarket.engine.errors import InputError
from dsomarket.engine.lindistflow import add_resources, market_loads
from dsomarket.engine.network import S_BASE_KVA, Feeder, _utc
from dsomarket.engine.network_changes import NetworkRun, network_runs
from dsomarket.engine.results import _iv_column
from dsomarket.engine.solver import HighsSolver, LinearModel, Solution

if TYPE_CHECKING:   # the curve modules are imported where a curve is traced: a clearing alone never loads them
    from dsomarket.engine.interface import InterfaceCurve
    from dsomarket.engine.territory import IntervalCurves


def runs_for(feeder: Feeder, changes: pl.DataFrame | None, book: BidBook) -> tuple[NetworkRun, ...]:
    """The runs of one network state of a book's intervals (the feeder as loaded when nothing changes)."""
    if changes is not None and changes.height:
        return network_runs(feeder, changes, book.intervals)
    return (NetworkRun(tuple(range(book.n_interval)), list(book.intervals), feeder, (), (), ()),)


def coupled_runs(runs: tuple[NetworkRun, ...], book: BidBook, resources: tuple[Resource, ...]) -> bool:
    """True when the horizon has several network states and resources that link its intervals:
    it is then cleared as one :class:`CoupledMarket`."""
    return len(runs) > 1 and couples_intervals(book, resources)


def run_rows(book: BidBook, run: NetworkRun) -> np.ndarray:
    """Rows of ``book`` that take part in a run: bids of its intervals at energised buses, in book order."""
    keep = np.isin(book.t_idx, run.indices)
    if run.de_energised:
        keep &= ~book.table["bus"].is_in(list(run.de_energised)).to_numpy()
    return np.nonzero(keep)[0]


def run_book(book: BidBook, run: NetworkRun, rules: MarketRules) -> BidBook:
    """The bids of a run's intervals at energised buses (book order), validated against the run's feeder."""
    if len(run.indices) == book.n_interval and not run.de_energised:
        return validate_bids(book.table, run.feeder, rules, book.intervals)
    return validate_bids(book.table[run_rows(book, run)], run.feeder, rules, run.intervals)


def canonical_order(book: BidBook) -> BidBook:
    """The same bids in interval and bid_id order (see :func:`engine.bids.canonical`), without re-validating
    them against a feeder (a changing network has no one feeder holding every bus in every interval)."""
    order = book.table.with_row_index("_row").sort(["interval", "bid_id"], nulls_last=False)["_row"].to_numpy()
    if np.array_equal(order, np.arange(book.n)):
        return book
    return BidBook(table=book.table[order], intervals=book.intervals, bus_idx=book.bus_idx[order],
                   t_idx=book.t_idx[order], withdraw_sign=book.withdraw_sign[order],
                   quantity_kw=book.quantity_kw[order], price=book.price[order], tan_phi=book.tan_phi[order])


_CONCATENATED = ("bid", "commitment_sell", "commitment_buy")
"""Blocks of a part's model that are not laid out interval by interval: they are put one part after another."""


def _placement(blocks: list[list], runs: tuple[NetworkRun, ...], T: int) -> tuple[list, list[np.ndarray]]:
    """Where every column (or row) of each part's model goes in the horizon model.

    ``blocks[r]`` are part r's blocks. Returns the horizon's blocks ``(name, start, size)`` in order
    of first appearance, and per part the horizon index of each of its own columns (rows). A block
    laid out interval by interval (every network block) holds interval 0's entries, then interval
    1's, ..., each taken from the part of the run holding that interval; the blocks of
    ``_CONCATENATED`` hold part 0's entries, then part 1's.
    """
    names = list(dict.fromkeys(b.name for part in blocks for b in part))
    maps = [np.empty(sum(b.size for b in part), dtype=np.int64) for part in blocks]
    out, offset = [], 0
    for name in names:
        mine = [next((b for b in part if b.name == name), None) for part in blocks]
        if name in _CONCATENATED:
            size = 0
            for blk, where in zip(mine, maps):
                if blk is not None:
                    where[blk.slice] = offset + size + np.arange(blk.size)
                    size += blk.size
        else:
            per = np.zeros(T, dtype=np.int64)
            for blk, run in zip(mine, runs):
                if blk is not None:
                    per[list(run.indices)] = blk.size // len(run.indices)
            start = offset + np.concatenate([[0], np.cumsum(per)[:-1]])
            for blk, run, where in zip(mine, runs, maps):
                if blk is not None and blk.size:
                    each = blk.size // len(run.indices)
                    k = np.arange(blk.size)
                    where[blk.slice] = start[np.asarray(run.indices)[k // each]] + k % each
            size = int(per.sum())
        out.append((name, offset, size))
        offset += size
    return out, maps


class CoupledMarket:
    """One clearing LP for a horizon whose network changes, with resources that link its intervals.

    Each run's network rows are built by the chosen formulation on the run's own
    feeder, as a :class:`engine.clearing.NodalMarket` part (``standalone=False``)
    holding the run's bids at energised buses: the run's incidence, impedances,
    ratings, voltage and interface limits, and no flow column for a line out of
    service. The parts' blocks are laid out interval by interval
    (:func:`_placement`), so each keeps its name and is in market interval order
    (``import_p`` has one column per interval, ``bus_p_balance`` the buses of
    interval 0's feeder, then those of interval 1's, ...), and the rows that link
    intervals (:func:`engine.lindistflow.add_resources`: state of charge, EV
    energy, ramps) are built once over the bid columns of all parts. The state of
    charge thus runs across a change, and every interval's DLMPs carry what
    storage is worth in the others.

    It answers what the interface curve and the disaggregation ask of a
    :class:`~engine.clearing.NodalMarket`: ``model``, ``solver``, ``iso_price``,
    ``lossaware``, :meth:`set_iso_price`, :meth:`fix_import`, :meth:`hold_bids`,
    :meth:`restart`, :meth:`solve_raw`, :meth:`converge`, :meth:`solve`, :meth:`result`. Results are
    each part's tables of its own intervals, put together in interval order.
    """

    def __init__(self, runs: tuple[NetworkRun, ...], book: BidBook, iso_price, rules: MarketRules = MarketRules(),
                 resources: tuple[Resource, ...] = (), options: ClearingOptions = ClearingOptions(),
                 loads: list[tuple[np.ndarray, np.ndarray]] | None = None):
        """``book`` is validated on the feeder as loaded (:func:`canonical_order` is applied); ``loads`` per
        run ``(kW, kvar)`` of shape (buses of the run's feeder, run intervals), or None for the feeders' own."""
        t0 = time.perf_counter()
        self.runs, self.rules, self.resources, self.options = runs, rules, resources, options
        self.book = book = canonical_order(book)
        T = book.n_interval
        self.iso_price = iso_prices(iso_price, T)
        self.lossaware = options.formulation == "lossaware"
        self.convergence: dict | None = None
        self.rows = [run_rows(book, run) for run in runs]
        self.parts = [NodalMarket(run.feeder, run_book(book, run, rules), self.iso_price[list(run.indices)], rules,
                                  resources, options, *(loads[k] if loads is not None else (None, None)),
                                  standalone=False) for k, run in enumerate(runs)]
        self._var_blocks, self._col_map = _placement([p.model.blocks() for p in self.parts], runs, T)
        self._con_blocks, self._row_map = _placement([p.model.blocks(rows=True) for p in self.parts], runs, T)
        self.model = self._flat = self._compose()
        self.solver = HighsSolver(self.model, time_limit=options.time_limit)
        self.frozen: frozenset[int] = frozenset()   # parts :meth:`converge` leaves linearised as they are
        self.build_seconds = time.perf_counter() - t0

    def _network(self, which: Sequence[int] | None = None) -> sp.csc_matrix:
        """The parts' current matrices (those of the parts ``which``; default all) placed in the horizon
        model's rows and columns."""
        rows, cols, vals = [], [], []
        for k in range(len(self.parts)) if which is None else which:
            part, cm, rm = self.parts[k], self._col_map[k], self._row_map[k]
            a = part.model.assemble()[3].tocoo()
            rows.append(rm[a.row])
            cols.append(cm[a.col])
            vals.append(a.data)
        # The whole model's shape once it exists (the intertemporal rows and columns come after these).
        shape = ((self.model.n_row, self.model.n_col) if hasattr(self, "model") else
                 (sum(size for _, _, size in self._con_blocks), sum(size for _, _, size in self._var_blocks)))
        return sp.csc_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=shape)

    def _compose(self) -> LinearModel:
        n_col = sum(size for _, _, size in self._var_blocks)
        n_row = sum(size for _, _, size in self._con_blocks)
        cost, lo, up = np.zeros(n_col), np.zeros(n_col), np.zeros(n_col)
        rlo, rup = np.zeros(n_row), np.zeros(n_row)
        for part, cm, rm in zip(self.parts, self._col_map, self._row_map):
            c, l, u, _, rl, ru, _ = part.model.assemble()
            cost[cm], lo[cm], up[cm], rlo[rm], rup[rm] = c, l, u, rl, ru
        a = self._network().tocsr()
        model = LinearModel()
        for name, start, size in self._var_blocks:
            cut = slice(start, start + size)
            model.add_variables(name, size, lo[cut], up[cut], cost[cut])
        for name, start, size in self._con_blocks:
            band = a[start:start + size].tocsc()
            terms = {var: band[:, vs:vs + vz] for var, vs, vz in self._var_blocks}
            terms = {var: m for var, m in terms.items() if m.nnz} or {"import_p": terms["import_p"]}
            model.add_constraints(name, terms, rlo[start:start + size], rup[start:start + size])
        add_resources(model, self._column_book(), tuple(r for r in self.resources if not isinstance(r, Commitment)),
                      self.rules)
        return model

    def _column_book(self) -> BidBook:
        """The bid columns of all parts as one book of the horizon's intervals, in the ``bid`` block's order
        (``bus_idx`` of each part's own feeder: the rows that link intervals do not read it)."""
        books = [p.columns.book for p in self.parts]
        cat = np.concatenate
        return BidBook(table=pl.concat([b.table for b in books], how="vertical_relaxed"),
                       intervals=self.book.intervals, bus_idx=cat([b.bus_idx for b in books]),
                       t_idx=cat([np.asarray(run.indices, dtype=np.int64)[b.t_idx]
                                  for run, b in zip(self.runs, books)]),
                       withdraw_sign=cat([b.withdraw_sign for b in books]),
                       quantity_kw=cat([b.quantity_kw for b in books]), price=cat([b.price for b in books]),
                       tan_phi=cat([b.tan_phi for b in books]))

    # -- what the curve and the disaggregation change in place ---------------------------
    def set_iso_price(self, iso_price) -> None:
        """ISO price per interval (per MWh) at the interface; scalar broadcasts."""
        self.iso_price = iso_prices(iso_price, self.book.n_interval)
        self.solver.set_cost("import_p", self.iso_price)
        for part, run in zip(self.parts, self.runs):
            part.iso_price = self.iso_price[list(run.indices)]

    def fix_import(self, import_kw) -> None:
        """Hold the interface import at ``import_kw`` per interval (kW; NaN = leave free); None frees all."""
        T = self.book.n_interval
        export_max, import_max = np.zeros(T), np.zeros(T)
        for part, run in zip(self.parts, self.runs):
            export_max[list(run.indices)] = part.feeder.export_max_kw
            import_max[list(run.indices)] = part.feeder.import_max_kw
        self.solver.set_col_bounds("import_p", *import_bounds(export_max, import_max, import_kw))

    def hold_bids(self, bid_mw: np.ndarray | None) -> None:
        """Hold the bids at ``bid_mw`` (MW per bid of :attr:`book`; NaN = free); None frees them all."""
        lo, hi = [], []
        for part, rows in zip(self.parts, self.rows):
            l, h = held_bounds(part.columns, None if bid_mw is None else np.asarray(bid_mw, dtype=float)[rows])
            lo.append(l)
            hi.append(h)
        self.solver.set_col_bounds("bid", np.concatenate(lo), np.concatenate(hi))

    def bid_mw(self, x: np.ndarray) -> np.ndarray:
        """Cleared MW per bid of :attr:`book` (0 for a bid at a de-energised bus)."""
        out = np.zeros(self.book.n)
        for part, rows, cm in zip(self.parts, self.rows, self._col_map):
            out[rows] = part.bid_mw(x[cm])
        return out

    # -- solving ----------------------------------------------------------------------------
    def restart(self) -> None:
        """Back to the state a new loss-aware market starts from (as :meth:`NodalMarket.restart`): every
        part's first model, no dispatch's point yet, no basis; the next :meth:`converge` ends where a fresh
        clearing at the same prices and bounds does."""
        if not self.lossaware:
            return
        for part in self.parts:
            part.model, part.point = part._flat
            part._point_bids = None
        self.model = self._flat
        successive.restore_limits(self.solver)   # limits widened for the last linearisation's noise
        self.solver.set_matrix(self.model)
        self.solver.h.clearSolver()

    def solve_raw(self) -> Solution:
        """One solve of the model as it stands (no re-linearisation)."""
        return self.solver.solve()

    def converge(self, compare: bool = True) -> Solution:
        """Solve; for the loss-aware model, re-linearise every part until the LP is at a KKT point of the AC problem.

        The iteration of :meth:`engine.clearing.NodalMarket.converge`
        (:func:`engine.successive.converge`) on the horizon: each part is
        re-linearised at the AC power flow of its own intervals' dispatch and the
        horizon matrix re-assembled, until every part's import, flows and voltages
        match that power flow, no bid column moved more than ``losses.STEP_TOL_KW``
        and no bid is held against a pin or the trust region with a reduced cost
        above ``losses.MARGINAL_TOL``. The per-bid brackets, the Newton step on the
        losses' curvature (summed over the parts) and the trust region's merit (the
        objective with each part's AC import, the violation of each part's limits)
        span the horizon, so the rows that link intervals are in every step. Where some DLMP is negative, the
        better of the fixed points reachable from either side of the bids that could be fixed points at either
        end is kept, interval by interval and resource by resource, as :meth:`engine.clearing.NodalMarket.converge`
        keeps it (:func:`engine.branches.best_fixed_point`; of the parts not frozen; ``compare=False``: the one
        successive LP reaches from where the horizon is).
        """
        s = self.solver
        sol = s.solve()
        if not self.lossaware:
            return sol
        live = [k for k in range(len(self.parts)) if k not in self.frozen]
        fixed = (s.model.assemble()[3] - self._network(live)).tocsc()   # with the frozen parts' matrices

        def set_matrix() -> None:
            self.model = self.model.with_matrix((fixed + self._network(live)).tocsc())
            s.set_matrix(self.model)

        parts = [successive.Part(part, cm, rm, frozen=k in self.frozen)
                 for k, (part, cm, rm) in enumerate(zip(self.parts, self._col_map, self._row_map))]
        sol, convergence = successive.converge(s, parts, set_matrix, sol)
        sol, self.convergence = (branches.best_fixed_point(s, parts, set_matrix, sol, convergence)
                                 if compare else (sol, convergence))
        return sol

    def solve(self) -> ClearingResult:
        sol = self.converge()
        if not sol.ok:
            return self.failed(sol)
        return self.result(sol)

    def failed(self, sol: Solution) -> ClearingResult:
        """The result of a solve that ended other than optimal, with a diagnosis where it is infeasible.

        Each run's part is solved alone with the bounds in force (held bids, fixed imports) and
        without the rows that link intervals; a part that is infeasible even so is diagnosed as a
        one-network market is (:func:`engine.clearing.diagnose`: the limits, where and when). If
        every part is feasible alone, the storage, EV or ramp limits across the horizon are what
        cannot be met together with the network's.
        """
        if sol.status != "infeasible":
            return _failed(self.context, sol.status, sol.solve_seconds, ())
        diagnosis: list[dict] = []
        s = self.solver
        for part, run, cm in zip(self.parts, self.runs, self._col_map):
            alone = NodalMarket(run.feeder, part.book, part.iso_price, self.rules,
                                tuple(r for r in self.resources if isinstance(r, Commitment)), self.options,
                                *part.loads())
            alone.model = part.model
            alone.solver.set_matrix(part.model)
            for blk in part.model.blocks():
                alone.solver.set_col_bounds(blk.name, s.col_lower[cm][blk.slice], s.col_upper[cm][blk.slice])
            if not alone.solve_raw().ok:
                diagnosis += diagnose(alone)
        if not diagnosis:
            diagnosis = [{"limit": "storage_ev_ramp", "element": "", "interval": None,
                          "detail": "each interval's network can be dispatched, but not together with the storage, "
                                    "EV and ramp limits that link the intervals across the horizon"}]
        return _failed(self.context, sol.status, sol.solve_seconds, tuple(diagnosis))

    def result(self, sol: Solution) -> ClearingResult:
        """Tables of an optimal solution: each part's tables of its intervals, in interval order."""
        results = []
        for part, cm, rm in zip(self.parts, self._col_map, self._row_map):
            sub = Solution(status="optimal", objective=float(np.sum(self.solver.cost[cm] * sol.x[cm])),
                           x=sol.x[cm], row_value=np.asarray(sol.row_value)[rm], row_dual=sol.row_dual[rm],
                           col_dual=sol.col_dual[cm], solve_seconds=sol.solve_seconds, iterations=sol.iterations)
            part.convergence = self.convergence
            results.append(part.result(sub))
        out = combine_clearings(results, self.book.intervals)
        return dataclasses.replace(out, build_seconds=self.build_seconds, solve_seconds=sol.solve_seconds,
                                   convergence=self.convergence if self.lossaware else None)

    def root_duals(self, sol: Solution) -> np.ndarray:
        """The interface DLMP per interval (dual of the root bus's balance, per MWh)."""
        out = np.zeros(self.book.n_interval)
        for part, run, rm in zip(self.parts, self.runs, self._row_map):
            n = part.feeder.topology.n_bus
            rows = rm[part.model.con("bus_p_balance").start + n * np.arange(len(run.indices))]
            out[list(run.indices)] = sol.row_dual[rows]
        return out

    def loads(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Each part's fixed withdrawal (kW, kvar), shape (buses of its feeder, its intervals)."""
        return [part.loads() for part in self.parts]

    @property
    def context(self) -> MarketContext:
        return MarketContext(self.runs[0].feeder, self.book, self.iso_price, self.options.formulation,
                             self.build_seconds)


def interval_runs(runs: tuple[NetworkRun, ...]) -> tuple[NetworkRun, ...]:
    """Every interval of ``runs`` as a run of its own, on its run's feeder."""
    return tuple(dataclasses.replace(run, indices=(t,), intervals=[iv])
                 for run in runs for t, iv in zip(run.indices, run.intervals))


class LiveInterval(CoupledMarket):
    """A loss-aware horizon whose interval curves are traced with the other intervals' linearisations held.

    Every interval is a part of its own (:func:`interval_runs`). :meth:`settle` converges
    the whole horizon at the forecast, what :func:`clear_runs` does there: every interval
    is then linearised at the AC power flow of its own dispatch. While interval t's curve
    is traced (:meth:`around`), :meth:`converge` re-linearises interval t's part only; the
    others keep that fixed point's linearisation (``frozen``), so each clearing of the
    curve is successive LP on one interval's losses, from a point already converged at
    the forecast, instead of on the whole horizon's from LinDistFlow.

    What that holds: interval t's import at each point of its curve is the AC power
    flow's of interval t's dispatch (its part is converged), as the curve must be. The
    other intervals' dispatch moves with t's price only through the resources that link
    them (a battery shifts energy): there the linearisation is exact at the forecast's
    point and off by the losses' curvature times the shift squared, which moves the
    value of storage by that much and a step of t's curve that a resource decides by
    as little in price (``tests/test_coupled_losses.py`` checks the curve against
    :func:`clear_runs`).
    """

    def __init__(self, runs: tuple[NetworkRun, ...], book: BidBook, iso_price, rules: MarketRules,
                 resources: tuple[Resource, ...], options: ClearingOptions,
                 loads: list[tuple[np.ndarray, np.ndarray]] | None = None):
        """As :class:`CoupledMarket` (``loads`` per run of ``runs``, not per interval)."""
        each = None if loads is None else [(p[:, [k]], q[:, [k]]) for (p, q), run in zip(loads, runs)
                                           for k in range(len(run.indices))]
        super().__init__(interval_runs(runs), book, iso_price, rules, resources, options, each)
        self._start: tuple | None = None
        self._t: int | None = None
        self._held: frozenset[int] = frozenset()
        self._whole = False

    @staticmethod
    def of(market) -> "LiveInterval":
        """The same loss-aware market (a multi-interval :class:`~engine.clearing.NodalMarket` or a
        :class:`CoupledMarket`) with an interval to a part, at its ISO prices."""
        if isinstance(market, CoupledMarket):
            return LiveInterval(market.runs, market.book, market.iso_price, market.rules, market.resources,
                                market.options, market.loads())
        run = NetworkRun(tuple(range(market.book.n_interval)), list(market.book.intervals), market.feeder, (), (), ())
        return LiveInterval((run,), market.book, market.iso_price, market.rules, market.resources, market.options,
                            [market.loads()])

    def settle(self) -> Solution:
        """Converge the whole horizon at the ISO prices set, from LinDistFlow; :meth:`around` comes back here."""
        self.frozen = frozenset()
        super().restart()
        sol = super().converge()
        self._start = None if not sol.ok else (
            [(part.model, part.point, part._point_bids) for part in self.parts], self.model, self.solver.held_basis())
        return sol

    def around(self, t: int) -> None:
        """Interval ``t`` is the part :meth:`converge` re-linearises; back to :meth:`settle`'s fixed point (its
        linearisations and basis)."""
        self._t = t
        self._held = self.frozen = frozenset(k for k, run in enumerate(self.runs) if t not in run.indices)
        if self._start is None:
            super().restart()
            return
        # The basis first: the matrix carries it to the next solve, factorised afresh there (as a branch's restore).
        self.solver.start_from(self._start[2])
        self._restore(range(len(self.parts)))

    def restart(self) -> None:
        """As :meth:`CoupledMarket.restart`, where a fresh clearing of the horizon starts (every part's first
        model, no basis), and the next :meth:`converge` runs on the whole horizon: what :func:`clear_runs` gives at
        these prices. The curve's clearings that stand for ``clear`` (:meth:`engine.losscurve._FixedPoints.fresh`)
        are these: with the other intervals held at the forecast's linearisations, one that fixed points branch
        at may settle on another branch than ``clear`` (ieee33-s908 x 3 hours with a battery: 4,064 kW at -41.55
        where ``clear`` imports 3,910, so the curve put the step 0.06 per MWh from ``clear``'s)."""
        super().restart()
        self.frozen = frozenset()
        self._whole = True

    def _restore(self, which) -> None:
        """The parts ``which`` linearised as at :meth:`settle`'s fixed point, the others as they are."""
        parts, model, _ = self._start
        before = None if len(which) == len(self.parts) else self._network(which)
        for k in which:
            self.parts[k].model, self.parts[k].point, self.parts[k]._point_bids = parts[k]
        self.model = model if before is None else \
            self.model.with_matrix((self.model.assemble()[3] - before + self._network(which)).tocsc())
        successive.restore_limits(self.solver)
        self.solver.set_matrix(self.model)

    def converge(self, compare: bool = True) -> Solution:
        """:meth:`CoupledMarket.converge` with only interval t's part re-linearised (:meth:`around`), except at
        the price floor and cap of interval t: the ends of its curve, the least and the most import an ISO
        may award, are converged on the whole horizon (as :func:`clear_runs`), so that every award between
        them is deliverable on it."""
        if self._t is None:
            return super().converge(compare)
        if self._whole:
            self._whole = False        # restart's clearing: every part live, from the first models
        elif self.iso_price[self._t] in (self.rules.price_floor, self.rules.price_cap):
            self.frozen = frozenset()
        elif self.frozen != self._held:
            self._restore(sorted(self._held))     # the last clearing was an end: hold the forecast's again
            self.frozen = self._held
        return super().converge(compare)


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
    gaps = [r.relaxation_gap for r in results if r.relaxation_gap is not None]
    return ClearingResult(
        status="optimal", formulation=results[0].formulation, intervals=list(intervals),
        welfare=float(sum(r.welfare for r in results)),
        dispatch=_sorted([r.dispatch for r in results]), prices=_sorted([r.prices for r in results]),
        lines=_sorted([r.lines for r in results]), buses=_sorted([r.buses for r in results]),
        interface=_sorted([r.interface for r in results]), solver=results[0].solver,
        build_seconds=sum(r.build_seconds for r in results), solve_seconds=sum(r.solve_seconds for r in results),
        shed=_sorted(sheds) if sheds else None, ac_check=_worst(results, intervals),
        relaxation_gap=max(gaps) if gaps else None)


def _worst(results: list[ClearingResult], intervals: list) -> dict | None:
    """The AC check of a horizon cleared run by run (``results``, each with its ``ac_check``), over its
    ``intervals``: each worst figure with the element, end and interval it belongs to (taken from the run where it is
    worst, not paired with another run's), every run's violations, ``import_kw`` per interval of the horizon in
    its order, and ``converged`` and ``ok`` only where they hold in every run; None where no run was checked."""
    checks = [r.ac_check for r in results if r.ac_check]
    if not checks:
        return None
    out = dict(checks[0])
    for key in out:
        values = [c[key] for c in checks if isinstance(c.get(key), (int, float)) and not isinstance(c[key], bool)]
        if values:
            out[key] = max(values)
    # Figures that name where they are come from the run they are worst in, with their names.
    for key, names, pick in (("min_v_pu", ("min_v_bus", "min_v_interval"), min),
                             ("max_v_pu", ("max_v_bus",), max),
                             ("max_loading_pct", ("max_loading_line", "max_loading_end"), max)):
        found = [c for c in checks if c.get(key) is not None]
        if found:
            at = pick(found, key=lambda c: c[key])
            out |= {k: at[k] for k in (key, *names) if k in at}
    by_interval = {iv: kw for r in results if r.ac_check for iv, kw in zip(r.intervals, r.ac_check["import_kw"])}
    out["import_kw"] = [by_interval.get(iv, float("nan")) for iv in intervals]
    out["violations"] = [v for c in checks for v in c.get("violations", [])]
    out["converged"] = all(c.get("converged", False) for c in checks)
    out["ok"] = all(c.get("ok", False) for c in checks)
    return out


def clear_runs(runs: tuple[NetworkRun, ...], book: BidBook, iso_price, *, rules: MarketRules,
               resources: tuple[Resource, ...] = (), options: ClearingOptions = ClearingOptions()) -> ClearingResult:
    """:func:`engine.clearing.clear` run by run (one :class:`CoupledMarket` where resources link the
    runs); ``iso_price`` per MWh, scalar or one per interval."""
    price = np.broadcast_to(np.asarray(iso_price, dtype=float), (book.n_interval,))
    if coupled_runs(runs, book, resources):
        _linear(options)
        return CoupledMarket(runs, book, price, rules, resources, options).solve()
    results = [clear(run.feeder, run_book(book, run, rules), price[list(run.indices)], rules=rules,
                     resources=resources, options=options) for run in runs]
    return combine_clearings(results, book.intervals)


def trace_runs(runs: tuple[NetworkRun, ...], book: BidBook, rules: MarketRules,
               resources: tuple[Resource, ...] = (), options: ClearingOptions = ClearingOptions(),
               forecast=None, progress: Callable[[int, int], None] | None = None,
               intervals: Sequence[int] | None = None, **socp_options) -> InterfaceCurve:
    """:func:`engine.interface.trace_curve` run by run; ``forecast`` per MWh, scalar, per interval or None.

    ``progress(done, total)`` is called after each interval, counted over all runs. Where resources
    link the runs, the curves are traced on one :class:`CoupledMarket` (:func:`trace_coupled`).
    ``intervals``: the horizon's interval indices to trace (default all), as in ``trace_curve``.
    """
    from dsomarket.engine.interface import _forecast, _intervals, join_curves, trace_curve

    if coupled_runs(runs, book, resources):
        _linear(options)
        return trace_coupled(runs, book, rules, resources, options, forecast, progress, intervals)
    fc = None if forecast is None else np.broadcast_to(np.asarray(forecast, dtype=float), (book.n_interval,))
    todo = set(_intervals(intervals, book.n_interval))
    curves = []
    done = 0
    for run in runs:
        mine = [k for k, t in enumerate(run.indices) if t in todo]
        if not mine:
            continue

        def step(k: int, _total: int, before: int = done) -> None:
            progress(before + k, len(todo))

        curves.append(trace_curve(run.feeder, run_book(book, run, rules), rules, resources, options,
                                  forecast=None if fc is None else fc[list(run.indices)],
                                  progress=None if progress is None else step,
                                  intervals=None if intervals is None else mine, **socp_options))
        done += len(mine)
    if len(runs) == 1:
        return curves[0]
    return join_curves(curves, _forecast(fc, rules, book.n_interval))


class KeptMarket:
    """A market's clearing and interface curve kept between clearings of the same inputs.

    A long-running server clears the same interface again at another ISO price (a real-time session
    of the same feeders and bids after the day-ahead one, with a new forecast). Kept in the worker
    that holds the interface, this object spares what does not depend on that price, while every
    result stays exactly what a fresh :func:`clear_runs` and :func:`trace_runs` return:

    - the clearing: one network run and no SOCP keeps its :class:`~engine.clearing.NodalMarket`
      built; a re-clear changes the ISO price in place and solves from no basis
      (:meth:`NodalMarket.restart`), so it follows a fresh clearing's path and ends where it does.
      Several runs are cleared afresh each time;
    - the curve: the curve of intervals that nothing couples does not depend on the forecast (each
      interval is traced from the price floor up on its own model), so it is traced once and kept;
      a coupled horizon's curve is conditional on the forecast and is kept for that forecast only;
    - :meth:`relabel` moves both to the same bids at other interval starts (standing bids in the next
      real-time cycle), where nothing else knows the intervals by their start;
    - with ``curves`` (kept from the interface's earlier markets: a day-ahead one, the last real-time
      one), a curve of one network's uncoupled intervals takes each interval whose single-interval model
      was traced before from there (:class:`engine.territory.IntervalCurves`), and with ``offers`` the
      ISO offer of each interval curve offered before is taken from there
      (:meth:`InterfaceCurve.iso_offer`'s ``memo``).

    Parameters
    ----------
    runs, book, rules, resources, options
        As :func:`clear_runs` and :func:`trace_runs` take them; never modified.
    curves
        Single-interval curves shared with the interface's other markets, or None.
    offers
        Interval offers shared with the interface's other markets, with ``curves`` (at most ``curves.limit``
        kept, the oldest dropped first), or None.
    validated_on
        The feeder ``book`` was validated against (:func:`engine.bids.validate_bids` with ``book.intervals``),
        or None: a run of every interval on a feeder of the same buses then takes ``book`` as it is instead of
        validating it again (:func:`run_book` would return the same book).
    """

    def __init__(self, runs: tuple[NetworkRun, ...], book: BidBook, rules: MarketRules,
                 resources: tuple[Resource, ...] = (), options: ClearingOptions = ClearingOptions(),
                 curves: IntervalCurves | None = None, offers: OrderedDict | None = None,
                 validated_on: Feeder | None = None):
        self.runs, self.book, self.rules, self.resources, self.options = runs, book, rules, resources, options
        if offers is not None and curves is None:
            raise ValueError("offers are kept with the curves they offer: pass curves too")
        self.curves, self.offers = curves, offers
        self._run_book: BidBook | None = None   # run_book of the one run, validated once for clear() and curve()
        self._validated_on = validated_on
        self._market: NodalMarket | None = None
        self._curve: InterfaceCurve | None = None
        self._curve_forecast: np.ndarray | None = None
        self._offer: tuple | None = None   # (the curve it is of, max_segments, table, area)
        self._coupled = couples_intervals(book, resources)
        self.reused = False   # the last clear() or curve() used what an earlier call kept

    def clear(self, iso_price) -> ClearingResult:
        """:func:`clear_runs` at ``iso_price`` (per MWh, scalar or one per interval)."""
        price = np.broadcast_to(np.asarray(iso_price, dtype=float), (self.book.n_interval,))
        if len(self.runs) != 1 or self.options.formulation == "socp":
            self.reused = False
            return clear_runs(self.runs, self.book, price, rules=self.rules, resources=self.resources,
                              options=self.options)
        self.reused = self._market is not None
        if self._market is None:
            run = self.runs[0]
            # What clear() builds for the one run's feeder and bids (clear_runs of one run is that clear).
            book = canonical(self._one_run_book(), run.feeder, self.rules)
            self._market = NodalMarket(run.feeder, book, price, self.rules, self.resources, self.options)
        else:
            self._market.restart()
            self._market.set_iso_price(price)
        return self._market.solve()

    def relabel(self, runs: tuple[NetworkRun, ...], book: BidBook, validated_on: Feeder | None = None) -> None:
        """The same market at other interval starts: ``book`` equals :attr:`book` but for its intervals, and
        neither the feeder (no load profile), the resources (none) nor network changes name an interval;
        ``validated_on`` as the constructor takes it."""
        old, new = self.book.intervals, book.intervals
        profile = runs[0].feeder.load_profile if len(runs) == 1 else None
        if len(old) != len(new) or len(runs) != 1 or self.resources or (profile is not None and profile.height):
            raise ValueError("only a market without resources, load profile or network changes can be relabelled")
        self.runs, self.book, self._run_book, self._validated_on = runs, book, None, validated_on
        if self._market is not None:
            self._market.relabel(canonical(self._one_run_book(), runs[0].feeder, self.rules))
        if self._curve is not None and old != new:
            def moved(df: pl.DataFrame) -> pl.DataFrame:
                return df.with_columns(pl.col("interval").replace_strict(pl.Series(old), pl.Series(new),
                                                                         return_dtype=df.schema["interval"]))

            self._curve = dataclasses.replace(self._curve, bands=moved(self._curve.bands),
                                              fixed_net_load_kw=moved(self._curve.fixed_net_load_kw))

    def curve(self, forecast, trace: Callable[..., InterfaceCurve] | None = None) -> InterfaceCurve:
        """:func:`trace_runs` with ``forecast`` (per MWh, scalar or one per interval).

        ``trace``: where the market has several intervals (whose curves the market kept does not help to
        trace), called in place of :func:`trace_runs` as ``trace(runs, book, rules, resources, options,
        forecast)``; it must return what :func:`trace_runs` would (a server fans the intervals out to its
        processes: :class:`server.runner.CurveFanOut`).
        """
        fc = np.broadcast_to(np.asarray(forecast, dtype=float), (self.book.n_interval,)).copy()
        self.reused = self._curve is not None and (not self._coupled or np.array_equal(fc, self._curve_forecast))
        if not self.reused:
            if (self.curves is not None and len(self.runs) == 1
                    and self.curves.applies(self.book, self.resources, self.options)):
                run = self.runs[0]
                # Traced on the market just cleared where it is one lossless interval (trace_curve's market).
                self._curve = self.curves.trace(run.feeder, self._one_run_book(), self.rules,
                                                self.resources, self.options, fc, self._market)
                self.reused = self.curves.reused > 0
            elif trace is not None and self.book.n_interval > 1:
                self._curve = trace(self.runs, self.book, self.rules, self.resources, self.options, fc)
            else:   # _market is None but for one run, whose trace_curve takes it
                self._curve = trace_runs(self.runs, self.book, self.rules, self.resources, self.options, forecast=fc,
                                         market=self._market)
            self._curve_forecast = fc
        return dataclasses.replace(self._curve, forecast=fc)

    def iso_offer(self, max_segments: int = 10) -> tuple[pl.DataFrame, float]:
        """The last :meth:`curve`'s :meth:`InterfaceCurve.iso_offer`, reduced once for each curve traced or
        relabelled: it reads only the bands, so a session whose curve is kept offers what the last one did."""
        if self._curve is None:
            raise ValueError("no curve yet: call curve() first")
        if self._offer is None or self._offer[0] is not self._curve or self._offer[1] != max_segments:
            self._offer = (self._curve, max_segments, *self._curve.iso_offer(max_segments, self.offers))
            while self.offers is not None and len(self.offers) > self.curves.limit:
                self.offers.popitem(last=False)
        return self._offer[2], self._offer[3]

    def _one_run_book(self) -> BidBook:
        """:func:`run_book` of the one run's bids, validated once."""
        if self._run_book is None:
            run, on = self.runs[0], self._validated_on
            same = (on is not None and len(run.indices) == self.book.n_interval and not run.de_energised
                    and (run.feeder is on or np.array_equal(run.feeder.topology.bus_ids, on.topology.bus_ids)))
            self._run_book = self.book if same else run_book(self.book, run, self.rules)
        return self._run_book


def disaggregate_runs(runs: tuple[NetworkRun, ...], book: BidBook, award: pl.DataFrame, rules: MarketRules,
                      resources: tuple[Resource, ...] = (), options: ClearingOptions = ClearingOptions(),
                      day_ahead: pl.DataFrame | None = None, day_ahead_minutes: float = 60.0) -> Disaggregation:
    """:func:`engine.disaggregation.disaggregate` run by run.

    ``award`` and ``day_ahead`` are cut to each run's intervals; a day-ahead
    position at a de-energised bus is not held (nothing can be delivered there).
    Where resources link the runs, the award is disaggregated on one
    :class:`CoupledMarket` (:func:`disaggregate_coupled`).
    """
    if coupled_runs(runs, book, resources):
        _linear(options)
        return disaggregate_coupled(runs, book, award, rules, resources, options, day_ahead, day_ahead_minutes)
    parts = []
    for run in runs:
        held = _held_here(day_ahead, run)
        sub_award = award
        if len(runs) > 1 and "interval" in award.columns:
            stamp = _utc(pl.col("interval"), award.schema["interval"])
            sub_award = award.filter(stamp.is_in(run.intervals))
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


def _linear(options: ClearingOptions) -> None:
    if options.formulation == "socp":
        raise InputError("options", "formulation", "a horizon whose network changes while storage, EV or ramp "
                         "resources link its intervals is cleared on a linear model: lossaware or lossless")


def _held_here(day_ahead: pl.DataFrame | None, run: NetworkRun) -> pl.DataFrame | None:
    """Day-ahead positions that can be held in a run: none at a de-energised bus (nothing is delivered there)."""
    if day_ahead is None or not run.de_energised:
        return day_ahead
    return day_ahead.filter(~pl.col("bus").is_in(list(run.de_energised)))


def trace_coupled(runs: tuple[NetworkRun, ...], book: BidBook, rules: MarketRules,
                  resources: tuple[Resource, ...] = (), options: ClearingOptions = ClearingOptions(),
                  forecast=None, progress: Callable[[int, int], None] | None = None,
                  intervals: Sequence[int] | None = None) -> InterfaceCurve:
    """The interface curve of every interval of a :class:`CoupledMarket`, conditional on the forecast.

    Interval t's curve is traced as :func:`engine.interface.trace_curve` traces a
    coupled book (:func:`engine.interface.trace_market_interval`: the other
    intervals' ISO prices held at ``forecast``, per MWh; default the midpoint of
    floor and cap), on the one horizon model. On the loss-aware model every point
    of it is a converged clearing of the horizon (:meth:`CoupledMarket.converge`,
    what :func:`clear_runs` does at that price), so its import is what the AC power
    flow of that dispatch draws on the interval's own feeder. ``intervals``: as in ``trace_curve``
    (each interval's curve is independent of the others traced: :func:`engine.interface.trace_intervals`).
    """
    from dsomarket.engine.interface import InterfaceCurve, _bands_table, _forecast, _intervals, trace_intervals
    from threadpoolctl import threadpool_limits

    t0 = time.perf_counter()
    T = book.n_interval
    fc = _forecast(forecast, rules, T)
    todo = _intervals(intervals, T)
    opts = ClearingOptions(formulation=options.formulation, polygon_sides=options.polygon_sides, ac_check=False,
                           time_limit=options.time_limit)
    market = CoupledMarket(runs, book, fc, rules, resources, opts)
    with threadpool_limits(1, user_api="blas"):
        rows, solves, flips, check = trace_intervals(market, todo, fc, rules, 4 * book.n + 1000, progress)
    fixed = np.zeros(T)
    for run, (load_p, _) in zip(runs, market.loads()):
        fixed[list(run.indices)] = load_p.sum(axis=0)
    return InterfaceCurve(bands=_bands_table(market.book, rows),
                          fixed_net_load_kw=pl.DataFrame({"interval": _iv_column(book.intervals, np.array(todo)),
                                                          "fixed_kw": fixed[todo]}),
                          conditional=True, forecast=fc, solves=solves, seconds=time.perf_counter() - t0,
                          bound_flips=flips, ac_check=None if check is None else dataclasses.asdict(check))


def disaggregate_coupled(runs: tuple[NetworkRun, ...], book: BidBook, award: pl.DataFrame, rules: MarketRules,
                         resources: tuple[Resource, ...] = (), options: ClearingOptions = ClearingOptions(),
                         day_ahead: pl.DataFrame | None = None, day_ahead_minutes: float = 60.0) -> Disaggregation:
    """Re-clear a :class:`CoupledMarket` at the ISO's award of every interval (as
    :func:`engine.disaggregation.disaggregate`; arguments as :func:`disaggregate_runs`).

    Notes
    -----
    Prices: with a quantity and a price, the DLMPs are those at the ISO's price
    where the fixed-import dispatch is optimal there (on the curve), else those
    of the fixed import; with a quantity alone the price is the interface's own
    DLMP. Equal-priced marginal bids at different buses are not re-shared pro
    rata here (each bus's identical bids are, as in every clearing).
    """
    step = _CoupledAward(runs, book, rules, resources, options, day_ahead, day_ahead_minutes)
    return step.award(*_award_arrays(award, step.market.book.intervals))


def disaggregate_rolling(runs: tuple[NetworkRun, ...], book: BidBook, steps: list[pl.DataFrame],
                         rules: MarketRules, resources: tuple[Resource, ...] = (),
                         options: ClearingOptions = ClearingOptions(), day_ahead: pl.DataFrame | None = None,
                         day_ahead_minutes: float = 60.0, forecast=None) -> Disaggregation:
    """Interval-by-interval ISO awards of a market whose resources link its intervals.

    Parameters
    ----------
    steps
        The ISO's awards in the order they came, each a table (``interval``,
        ``import_kw``, ``price``, as :func:`engine.disaggregation.disaggregate`
        takes) of the intervals it awards; an interval is awarded once.
    forecast
        ISO price per MWh (scalar or per interval) of the intervals not yet
        awarded; default the midpoint of the price floor and cap.
    runs, book, rules, resources, options, day_ahead, day_ahead_minutes
        As :func:`disaggregate_runs` (one run for a network that does not change).

    Returns
    -------
    Disaggregation
        The tables of the awarded intervals only, each interval as the step
        that awarded it dispatched it; a failed step ends the replay with its
        failed clearing.

    Notes
    -----
    Step k re-clears the whole horizon (one :class:`CoupledMarket`, warm from
    step to step) with every bid of the intervals awarded before held at its
    dispatch, its own intervals' import fixed at the award, and the intervals
    still open re-optimised at the forecast with their import free: the state
    of charge, EV energy and ramps carry from the dispatched past into the
    open future, and each award is met at the interface. The same steps give
    the same dispatch, so the award's settlement replays the stream.
    """
    run = _CoupledAward(runs, book, rules, resources, options, day_ahead, day_ahead_minutes)
    market = run.market
    T = market.book.n_interval
    base = (rules.price_floor + rules.price_cap) / 2.0 if forecast is None else forecast
    base = np.broadcast_to(np.asarray(base, dtype=float), (T,)).copy()
    held = np.full(market.book.n, np.nan)
    done = np.zeros(T, dtype=bool)
    pieces = []
    for k, step in enumerate(steps):
        q, p = _award_arrays(step, market.book.intervals, every=False)
        mine = np.isfinite(q) | np.isfinite(p)
        if (mine & done).any():
            raise InputError("award", "interval", f"step {k} awards {market.book.intervals[int(np.argmax(mine & done))]} "
                             "again")
        market.hold_bids(held)
        dis = run.award(q, p, base, free=~mine & ~done)
        pieces.append((mine, dis))
        if not dis.clearing.ok:
            break
        rows = np.isin(market.book.t_idx, np.nonzero(mine)[0])
        held[rows] = run.last_bid_mw[rows]
        done |= mine
    return _rolled(pieces, market.book.intervals, rules)


class _CoupledAward:
    """A :class:`CoupledMarket` set up for the ISO's awards: the held day-ahead positions in each run's
    fixed load, and what the tables of a disaggregation need (:meth:`award`)."""

    def __init__(self, runs, book, rules, resources, options, day_ahead, day_ahead_minutes):
        self.runs, self.rules = runs, rules
        loads, held, self.bases = [], [], []
        book = canonical_order(book)
        for run in runs:
            rb = run_book(book, run, rules)
            base_p, base_q = market_loads(run.feeder, rb)
            da = _held_here(day_ahead, run)
            h = _held_rows(run.feeder, rb, da, day_ahead_minutes) if da is not None else _empty_dispatch()
            loads.append(held_loads(run.feeder, rb, h, base_p, base_q))
            held.append(h)
            self.bases.append((rb, base_p, base_q))
        self.held = pl.concat(held, how="vertical_relaxed")
        mid = (rules.price_floor + rules.price_cap) / 2.0
        self.market = CoupledMarket(runs, book, mid, rules, resources, options, loads)
        self.last_bid_mw = np.zeros(self.market.book.n)

    def award(self, q: np.ndarray, p: np.ndarray, base=None, free: np.ndarray | None = None) -> Disaggregation:
        """Re-clear with the import fixed at ``q`` (kW; NaN = free) at ``p`` (per MWh; NaN = ``base``, default
        the midpoint of floor and cap); ``free`` marks intervals with no award (import free at ``base``)."""
        market, rules = self.market, self.rules
        T = market.book.n_interval
        base = (rules.price_floor + rules.price_cap) / 2.0 if base is None else base
        market.set_iso_price(np.where(np.isfinite(p), p, np.broadcast_to(np.asarray(base, dtype=float), (T,))))
        sol, q = converge_award(market, q, p, rules)
        source = np.where(np.isfinite(p), "iso", "interface_dlmp")
        if not sol.ok:
            result = market.failed(sol)
            return Disaggregation(result, _applied(result, q, p, source, [None] * T), _empty_instructions(),
                                  _fixed_loads(self.runs, self.bases, None), rules.interval_minutes)
        sol, duals, on_curve, extra = award_prices(market, sol, q, p)
        merged = Solution(status="optimal", objective=sol.objective, x=sol.x, row_value=sol.row_value,
                          row_dual=duals.row_dual, col_dual=duals.col_dual,
                          solve_seconds=sol.solve_seconds + extra, iterations=sol.iterations)
        self.last_bid_mw = market.bid_mw(sol.x)
        result = with_held(market.result(merged), self.held)
        applied = _applied(result, q, np.where(np.isfinite(p), p, market.iso_price), source, on_curve)
        if free is not None and free.any():
            applied = applied.filter(~pl.Series(free))
        return Disaggregation(clearing=result, award=applied, instructions=instructions(result),
                              fixed_load=_fixed_loads(self.runs, self.bases, result),
                              interval_minutes=rules.interval_minutes)


def _rolled(pieces: list, intervals: list, rules: MarketRules) -> Disaggregation:
    """One disaggregation of the awarded intervals from the steps that awarded them (``(mask, Disaggregation)``
    in step order); the welfare is that of the intervals' own tables."""
    last = pieces[-1][1]
    if not last.clearing.ok:
        return last
    cuts = []
    for mine, dis in pieces:
        keep = [iv for iv, m in zip(intervals, mine) if m]
        cut = {name: getattr(dis.clearing, name).filter(pl.col("interval").is_in(keep))
               for name in ("dispatch", "prices", "lines", "buses", "interface")}
        shed = None if dis.clearing.shed is None else dis.clearing.shed.filter(pl.col("interval").is_in(keep))
        cuts.append((keep, dis, cut, shed))
    clearing = dataclasses.replace(
        last.clearing, intervals=[iv for keep, *_ in cuts for iv in keep],
        **{name: _sorted([c[name] for _, _, c, _ in cuts]) for name in ("dispatch", "prices", "lines", "buses",
                                                                      "interface")},
        shed=None if all(sh is None for *_, sh in cuts) else _sorted([sh for *_, sh in cuts if sh is not None]))
    clearing = dataclasses.replace(clearing, intervals=sorted(clearing.intervals),
                                   welfare=_welfare(clearing, rules))
    return Disaggregation(
        clearing=clearing, award=_sorted([d.award.filter(pl.col("interval").is_in(k)) for k, d, _, _ in cuts]),
        instructions=_sorted([d.instructions.filter(pl.col("interval").is_in(k)) for k, d, _, _ in cuts]).sort(
            ["aggregator_id", "resource_id", "interval"], nulls_last=False),
        fixed_load=_sorted([d.fixed_load.filter(pl.col("interval").is_in(k)) for k, d, _, _ in cuts]),
        interval_minutes=rules.interval_minutes)


def _welfare(result: ClearingResult, rules: MarketRules) -> float:
    """Buyers' value minus sellers' cost minus the ISO bill (minus lost load at its value), currency, of the
    tables (kW, per MWh) of the bids that were cleared, not held."""
    d = result.dispatch.filter(~pl.col("held")) if "held" in result.dispatch.columns else result.dispatch
    sign = np.where(d["side"].to_numpy() == "buy", 1.0, -1.0)
    value = float(np.sum(sign * d["price"].to_numpy() * d["cleared_kw"].to_numpy()))
    bill = float(np.sum(result.interface["iso_price"].to_numpy() * result.interface["import_kw"].to_numpy()))
    lost = 0.0
    if result.shed is not None and result.shed.height and rules.value_of_lost_load is not None:
        lost = rules.value_of_lost_load * float(result.shed["shed_kw"].sum())
    return (value - bill - lost) / 1000.0 * rules.hours


def _fixed_loads(runs: tuple[NetworkRun, ...], bases: list, result: ClearingResult | None) -> pl.DataFrame:
    """The fixed load served per bus and interval, each run on its own feeder, in interval order."""
    frames = []
    for run, (rb, base_p, base_q) in zip(runs, bases):
        topo = run.feeder.topology
        shed = None if result is None else shed_array(result, rb, topo, base_p.shape)
        frames.append(_fixed_table(rb, topo, base_p, base_q, shed))
    return _sorted(frames)


REDISPATCH_MODES = ("redispatched", "partial", "failed")
"""How a standing award fares on a changed network: met by a least-cost re-dispatch; only its largest
deliverable part met; or not re-dispatched at all (the standing dispatch stays, reported)."""


def redispatch_award(runs: tuple[NetworkRun, ...], book: BidBook, award: pl.DataFrame, dispatched: pl.DataFrame,
                     rules: MarketRules, resources: tuple[Resource, ...] = (),
                     options: ClearingOptions = ClearingOptions(), day_ahead: pl.DataFrame | None = None,
                     day_ahead_minutes: float = 60.0, forecast=None) -> tuple[Disaggregation, pl.DataFrame]:
    """Re-dispatch the standing ISO award of some intervals on a network that changed after the award.

    Parameters
    ----------
    runs, book, rules, resources, options, day_ahead, day_ahead_minutes
        The market on its *new* network (as :func:`disaggregate_runs`).
    award
        The standing award of the intervals to re-dispatch: ``interval``, ``import_kw`` (kW,
        import positive), ``price`` (per MWh or null).
    dispatched
        The standing dispatch of every other awarded interval (``bid_id``, ``interval``,
        ``cleared_kw``), held as it is: what is dispatched stays dispatched.
    forecast
        ISO price per MWh (scalar or per interval) of the intervals not yet awarded, re-optimised
        with their import free (default the midpoint of floor and cap).

    Returns
    -------
    (Disaggregation, pl.DataFrame)
        The re-dispatch (all intervals; the caller takes the re-dispatched ones), and per
        re-dispatched interval ``interval``, ``awarded_kw``, ``import_kw`` (the import the new
        dispatch draws), ``shortfall_kw`` (awarded - delivered) and ``mode`` (one of
        :data:`REDISPATCH_MODES`).

    Notes
    -----
    One :class:`CoupledMarket` of the horizon on the new network (whether or not resources link
    its intervals: held intervals then simply stay put), with the award's imports fixed: the
    least-cost re-dispatch that meets the award on every line, voltage and interface limit in
    effect. If none exists, each re-dispatched interval's import is moved to the nearest one the
    new network can deliver, the ends of its deliverable range being the re-dispatches at the
    price cap (least import) and at the price floor (most import) with the same intervals held:
    the largest deliverable part of the award (``partial``). If even that is infeasible (storage
    linking the moved intervals), nothing is re-dispatched (``failed``).
    """
    step = _CoupledAward(runs, book, rules, resources, options, day_ahead, day_ahead_minutes)
    market = step.market
    T = market.book.n_interval
    q, p = _award_arrays(award, market.book.intervals, every=False)
    mine = np.isfinite(q) | np.isfinite(p)
    held = market.book.table.select("bid_id", "interval").with_row_index("_row").join(
        dispatched.select("bid_id", "interval", "cleared_kw"), on=["bid_id", "interval"], how="left")
    held_kw = held.sort("_row")["cleared_kw"].fill_null(np.nan).to_numpy().astype(float)
    held_kw[np.isin(market.book.t_idx, np.nonzero(mine)[0])] = np.nan   # the re-dispatched intervals move
    market.hold_bids(held_kw / S_BASE_KVA)
    base = (rules.price_floor + rules.price_cap) / 2.0 if forecast is None else forecast
    free = ~mine & ~np.isin(np.arange(T), np.unique(market.book.t_idx[np.isfinite(held_kw)]))
    # Fixing the import overrides its bounds: an award outside the interface limits now in effect
    # goes straight to its deliverable part.
    lo, hi = np.zeros(T), np.zeros(T)
    for part, run in zip(market.parts, runs):
        lo[list(run.indices)], hi[list(run.indices)] = -part.feeder.export_max_kw, part.feeder.import_max_kw
    outside = np.isfinite(q) & ((q > hi + 1e-9) | (q < lo - 1e-9))
    target = q.copy()
    dis = None if outside.any() else step.award(q, p, base, free=free)
    if dis is None or not dis.clearing.ok:
        ends = []
        for price in (rules.price_cap, rules.price_floor):
            edge = step.award(np.where(mine, np.nan, q), np.where(mine, price, p), base, free=free)
            if not edge.clearing.ok:
                dis = edge
                break
            ends.append(edge.clearing.interface["import_kw"].to_numpy())
        if len(ends) == 2:
            target = np.where(mine & np.isfinite(q), np.clip(q, ends[0], ends[1]), q)
            dis = step.award(target, p, base, free=free)
    delivered = dis.clearing.interface["import_kw"].to_numpy() if dis.clearing.ok else np.full(T, np.nan)
    mode = (np.where(np.abs(target - q) > 1e-6, "partial", "redispatched") if dis.clearing.ok
            else np.full(T, "failed"))
    idx = np.nonzero(mine)[0]
    report = pl.DataFrame({"interval": _iv_column(market.book.intervals, idx), "awarded_kw": q[idx],
                           "import_kw": delivered[idx], "shortfall_kw": (q - delivered)[idx],
                           "mode": mode[idx]})
    return dis, report
