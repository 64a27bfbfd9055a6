"""Linear models in named blocks, and the one place that talks to HiGHS.

Formulations declare *variable blocks* (one per physical quantity, e.g.
``line_p``) and *constraint blocks* (one per physical law, e.g.
``bus_p_balance``) as sparse matrices; :class:`LinearModel` assembles them into
one column-wise matrix and :class:`HighsSolver` keeps a persistent
``highspy.Highs`` instance so that repeated solves (price sweeps, fixed imports)
warm-start from the previous basis. Results are read back by block name.

Solver status mapping lives here and nowhere else.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import highspy
import numpy as np
import scipy.sparse as sp

INF = highspy.kHighsInf
log = logging.getLogger(__name__)


@dataclass
class _Block:
    name: str
    start: int
    size: int

    @property
    def slice(self) -> slice:
        return slice(self.start, self.start + self.size)


@dataclass
class LinearModel:
    """A linear (or mixed-integer linear) model built from named blocks.

    ``min c^T x  s.t.  row_lower <= A x <= row_upper,  col_lower <= x <= col_upper``.
    """

    _vars: dict = field(default_factory=dict)
    _cons: dict = field(default_factory=dict)
    _cost: list = field(default_factory=list)
    _lo: list = field(default_factory=list)
    _up: list = field(default_factory=list)
    _int: list = field(default_factory=list)
    _rows: list = field(default_factory=list)  # (row block, {var block: matrix})
    _rlo: list = field(default_factory=list)
    _rup: list = field(default_factory=list)
    n_col: int = 0
    n_row: int = 0
    _assembled: tuple | None = None

    def add_variables(self, name: str, size: int, lower=-INF, upper=INF, cost=0.0,
                      integer: bool = False) -> _Block:
        """Declare a block of ``size`` columns with bounds and linear cost (scalars broadcast)."""
        blk = _Block(name, self.n_col, size)
        self._vars[name] = blk
        self._cost.append(np.broadcast_to(np.asarray(cost, dtype=float), size))
        self._lo.append(np.broadcast_to(np.asarray(lower, dtype=float), size))
        self._up.append(np.broadcast_to(np.asarray(upper, dtype=float), size))
        self._int.append(np.full(size, 1 if integer else 0, dtype=np.int32))
        self.n_col += size
        self._assembled = None
        return blk

    def add_constraints(self, name: str, terms: dict, lower, upper) -> _Block:
        """Declare a block of rows ``lower <= sum_k terms[k] @ x[k] <= upper``.

        ``terms`` maps variable block names to sparse matrices with one row per
        constraint and one column per variable of that block.
        """
        size = next(iter(terms.values())).shape[0]
        blk = _Block(name, self.n_row, size)
        self._cons[name] = blk
        for var, mat in terms.items():
            if mat.shape != (size, self._vars[var].size):
                raise ValueError(f"{name}: term {var} has shape {mat.shape}, "
                                 f"expected {(size, self._vars[var].size)}")
        # Triplets are what assemble() reads: a term given as such is kept as it is (the network's terms, kept per
        # topology, are), not wrapped in a new coo_matrix whose checks cost more than reading it.
        self._rows.append((blk, {k: m if isinstance(m, sp.coo_matrix) else sp.coo_matrix(m) for k, m in terms.items()}))
        self._rlo.append(np.broadcast_to(np.asarray(lower, dtype=float), size))
        self._rup.append(np.broadcast_to(np.asarray(upper, dtype=float), size))
        self.n_row += size
        self._assembled = None
        return blk

    def var(self, name: str) -> _Block:
        return self._vars[name]

    def con(self, name: str) -> _Block:
        return self._cons[name]

    def has_con(self, name: str) -> bool:
        return name in self._cons

    def has_var(self, name: str) -> bool:
        return name in self._vars

    def blocks(self, rows: bool = False) -> list[_Block]:
        """The variable (or, with ``rows``, constraint) blocks in column (row) order."""
        return list((self._cons if rows else self._vars).values())

    def with_matrix(self, a: sp.csc_matrix) -> "LinearModel":
        """The same blocks, costs and bounds with another constraint matrix of the same shape.

        For models re-linearised many times (:mod:`engine.losses`): the blocks are
        shared, and :meth:`assemble` returns ``a`` without rebuilding anything.
        """
        if a.shape != (self.n_row, self.n_col):
            raise ValueError(f"with_matrix: shape {a.shape}, expected {(self.n_row, self.n_col)}")
        c, lo, up, _, rlo, rup, integrality = self.assemble()
        out = copy.copy(self)       # as dataclasses.replace(self), without the constructor (once a re-linearisation)
        out._assembled = (c, lo, up, a, rlo, rup, integrality)
        return out

    def assemble(self) -> tuple:
        """Arrays of the whole model: ``c, lower, upper, A (csc), row_lower, row_upper, integrality``.

        Assembled once and kept until a block is added: the solver, the curve tracer's probe and the loss-aware
        linearisation each read them (at 1,000 buses / 1,000 bids 0.8 ms an assembly, once more per curve traced
        on a clearing's model). The arrays are shared: callers read them, and copy what they change.
        """
        if self._assembled is not None:
            return self._assembled
        rows, cols, vals = [], [], []
        for blk, terms in self._rows:
            for var, m in terms.items():
                rows.append(m.row + blk.start)
                cols.append(m.col + self._vars[var].start)
                vals.append(m.data)
        if rows:
            a = sp.csc_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                              shape=(self.n_row, self.n_col))
        else:
            a = sp.csc_matrix((self.n_row, self.n_col))
        a.sum_duplicates()
        a.sort_indices()
        return self.assemble_as(a)

    def assemble_as(self, a: sp.csc_matrix) -> tuple:
        """:meth:`assemble` with ``a`` as the matrix: the caller's own assembly of the terms given, equal to the one
        :meth:`assemble` makes of them to the bit (column-wise, sorted indices, no duplicates, the same explicit
        zeros), made from parts it keeps (:func:`engine.lindistflow.build`: the network's columns, kept per
        topology, where the coo conversion costs a clearing of 1,000 buses / 10,000 bids ~0.4 ms)."""
        if a.shape != (self.n_row, self.n_col):
            raise ValueError(f"assemble_as: shape {a.shape}, expected {(self.n_row, self.n_col)}")
        self._assembled = (_cat(self._cost), _cat(self._lo), _cat(self._up), a, _cat(self._rlo), _cat(self._rup),
                           np.concatenate(self._int) if self._int else np.zeros(0, dtype=np.int32))
        return self._assembled


def with_data(matrix: sp.spmatrix, data: np.ndarray) -> sp.spmatrix:
    """A compressed sparse ``matrix`` with the values ``data`` on its pattern (its index arrays, shared, as they are
    read only): a shallow copy, where a constructor checks the index arrays again (~10 us a matrix; a re-linearised
    solve on ieee33 made three). A new instance given the old one's attributes, as ``copy.copy`` makes it but without
    its reduce protocol (1 us against 3; the loss-aware curve's probes make two per re-linearisation)."""
    out = object.__new__(type(matrix))
    out.__dict__.update(matrix.__dict__)
    out.data = data
    return out


def _array(values: list) -> np.ndarray:
    """A list of floats highspy returns (a ``HighsSolution``'s values, converted by pybind) as a numpy array:
    ``np.fromiter`` reads each element as a float, where ``np.asarray`` first discovers every element's type and
    shape (13,000 values 0.23 against 0.34 ms); the same values."""
    return np.fromiter(values, dtype=np.float64, count=len(values))


def _cat(parts: list) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0)


@dataclass(frozen=True)
class Solution:
    """Primal and dual values of one solve, by position; use :meth:`HighsSolver.block`.

    Duals follow HiGHS for a minimisation: ``row_dual = d(objective)/d(row bound)``
    of the active bound, and ``col_dual = c - A^T row_dual`` (reduced cost).
    """

    status: str            # "optimal", "infeasible", "unbounded", "time_limit", "error"
    objective: float
    x: np.ndarray
    row_value: np.ndarray
    row_dual: np.ndarray
    col_dual: np.ndarray
    solve_seconds: float
    iterations: int

    @property
    def ok(self) -> bool:
        return self.status == "optimal"


_STATUS = {
    highspy.HighsModelStatus.kOptimal: "optimal",
    highspy.HighsModelStatus.kInfeasible: "infeasible",
    highspy.HighsModelStatus.kUnboundedOrInfeasible: "infeasible",
    highspy.HighsModelStatus.kUnbounded: "unbounded",
    highspy.HighsModelStatus.kTimeLimit: "time_limit",
    highspy.HighsModelStatus.kIterationLimit: "time_limit",
}


def _pass_model(h: highspy.Highs, c, lo, up, a, rlo, rup, integrality=None) -> None:
    """Give HiGHS an LP (or MIP) from arrays and a column-wise sparse matrix.

    The array overload of ``passModel``: filling a ``HighsLp`` attribute by attribute
    converts each array element by element (~0.1 s at 70,000 non-zeros, as long as the
    warm re-solve of a re-linearised model it precedes). Arrays already of the dtype HiGHS reads are passed as they
    are (HiGHS copies them), not copied first."""
    h.passModel(len(c), len(rlo), a.nnz, int(highspy.MatrixFormat.kColwise), int(highspy.ObjSense.kMinimize),
                0.0, np.ascontiguousarray(c, dtype=float), np.ascontiguousarray(lo, dtype=float),
                np.ascontiguousarray(up, dtype=float), np.ascontiguousarray(rlo, dtype=float),
                np.ascontiguousarray(rup, dtype=float), np.ascontiguousarray(a.indptr, dtype=np.int32),
                np.ascontiguousarray(a.indices, dtype=np.int32), np.ascontiguousarray(a.data, dtype=float),
                np.zeros(len(c), dtype=np.int32) if integrality is None else np.ascontiguousarray(integrality,
                                                                                                 dtype=np.int32))


# cvxpy's status strings for the conic (SOCP) solvers; an inaccurate answer is a failure.
CONIC_STATUS = {
    "optimal": "optimal",
    "optimal_inaccurate": "inaccurate",
    "infeasible": "infeasible",
    "infeasible_inaccurate": "inaccurate",
    "unbounded": "unbounded",
    "unbounded_inaccurate": "inaccurate",
    "user_limit": "time_limit",
}


_BASIS_STATUS = np.array([highspy.HighsBasisStatus.kLower, highspy.HighsBasisStatus.kBasic,
                          highspy.HighsBasisStatus.kUpper], dtype=object)
_BASIC, _UPPER = int(highspy.HighsBasisStatus.kBasic), int(highspy.HighsBasisStatus.kUpper)


def _status_codes(statuses: list) -> np.ndarray:
    """HiGHS's basis statuses (a list of ``HighsBasisStatus``) as their integer codes: one conversion per status,
    where comparing an object array with a status calls the enum's ``__eq__`` per element and comparison (a set
    matrix's carried basis, :meth:`HighsSolver._carried`, made four: 90 us on ieee33, 2 ms at 1,000 buses)."""
    return np.fromiter(map(int, statuses), dtype=np.int8, count=len(statuses))


KEPT_PIVOTS = 8
"""Simplex pivots a re-solve makes on its own from a kept basis before it leaves the rest to a HiGHS run
(:meth:`HighsSolver._kept_optimal`): past a few a HiGHS run is cheaper."""
KEPT_RUN_ITERATIONS = 20
"""A basis carried to a re-linearised matrix (:meth:`HighsSolver.set_matrix`) from a HiGHS run of more simplex
iterations than this is not checked for optimality there (:meth:`HighsSolver._kept_optimal`) but left to HiGHS's run:
the point moved far in that run, and the new linearisation moves the optimum too. At 1,000 buses / 10,000 bids the
first LP (326 iterations) and the first re-linearisation (25) each ran HiGHS after that check failed
(``python benchmarks/profile_clearing.py --seeds 7 2``: a factorisation and two basis solves at 19,000 rows spent
first); the re-linearisations after runs of a few iterations mostly keep their bases, and are still checked
(``python benchmarks/bench_successive_ab.py --base 8b7ea38``: clearings 0.91-0.96 of the time, curves 0.93-0.95,
the same results)."""
KEPT_PRIMAL_TOL = 1e-9
"""How far (model units) a kept basis's values may break a bound or row for :meth:`HighsSolver._kept_optimal` to take
it, by default."""
OWN_FACTOR_ROWS = 500
"""Rows from which a basis carried to a new matrix is factorised by the solver (:class:`_Factor`) rather than by HiGHS
(:meth:`HighsSolver._kept_optimal`). HiGHS's factorisation and two basis solves on a matrix it has not factorised (its
LP set-up included) against the solver's, CPU, ``python benchmarks/profile_clearing.py --factor``: 130 rows
(``examples/ieee33_rated``) 0.15 against 0.26 ms; 1,294 rows (a 69-bus synthetic feeder) 1.2 against 0.3 ms; 18,983
rows (1,000 buses) 9.2 against 3.4 ms."""
HIGHS_PRIMAL_TOL = 1e-7
"""HiGHS's default ``primal_feasibility_tolerance``: a basis, dual feasible, whose values break no bound or row by
more is one a HiGHS run from it ends in at 0 iterations."""


def _highs_basis(col_status: np.ndarray, row_status: np.ndarray, square: bool) -> highspy.HighsBasis:
    """A HiGHS basis of statuses 0 (at lower bound), 1 (basic), 2 (at upper bound) per column and per row's
    logical; ``square``: as many are basic as there are rows (see :meth:`HighsSolver.set_basis`)."""
    basis = highspy.HighsBasis()
    basis.col_status = _BASIS_STATUS[col_status].tolist()
    basis.row_status = _BASIS_STATUS[row_status].tolist()
    basis.valid = True
    basis.alien = not square
    return basis


SLACK_NONBASIC = ("bid", "shed")
"""The variable blocks the network's slack basis (:func:`slack_basis`) keeps nonbasic: bids and shed load."""


def slack_basis(model: LinearModel, col_range: np.ndarray, row_range: np.ndarray) \
        -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The network's *slack basis* of a market model: ``(structural, inactive, nonbasic)`` indices.

    Every ranged column (``col_range``: lower < upper) is basic but the bids and the shed load
    (``nonbasic``, :data:`SLACK_NONBASIC`), every ranged row's logical is basic (``inactive``: the
    limit is slack) and every equality row is held. On a LinDistFlow market the basic columns are
    the network's flows, voltages and the import, one per held row, so the basis is square: the
    network carries whatever the bids do, and only the bids' bounds (and binding limits) remain to
    be found. Used by the curve tracer's first basis (:mod:`engine.tracer`) and by a market's
    cold clearing (:meth:`HighsSolver.start_from_slack`)."""
    fixed_nb = np.zeros(model.n_col, dtype=bool)
    for name in SLACK_NONBASIC:
        if model.has_var(name):
            fixed_nb[model.var(name).slice] = True
    return (np.flatnonzero(col_range & ~fixed_nb), np.flatnonzero(row_range),
            np.flatnonzero(col_range & fixed_nb))


TIE_DUAL_TOL = 1e-6
"""A nonbasic variable's reduced cost (model cost units: per MWh per MW of a bid) at most this far from zero is taken
as a tie (:meth:`HighsSolver.unique_optimum`): ten times HiGHS's dual feasibility tolerance (1e-7), so a tie that
HiGHS's tolerances (or float noise, ~1e-12 here) leave a little off zero is still seen as one."""
TIE_PRIMAL_TOL = 2e-7
"""A basic variable's value (model units: MW, Mvar, pu^2; a row's activity) at most this far from a bound is taken as
at it (:meth:`HighsSolver.unique_optimum`): twice HiGHS's primal feasibility tolerance (:data:`HIGHS_PRIMAL_TOL`), which
can leave a basic value that far outside its bound. No wider: a line near its limit is common (one polygon face binds,
the next, basic, is 5e-7 pu inside its own at 1,000 buses: 4 of bench_territory's 80 warm re-clears), and such a basis
is the only optimal one; warm and fresh clearings end in it alike."""
TIE_STREAK = 2
"""After this many re-clears of a kept market in a row ended at one of several optima, the next is cleared cold at once
(:meth:`HighsSolver.solve_kept`), its warm solve skipped: where ties are common it is wasted work (1,000 buses /
10,000 bids: 25 of 26 re-clears tie, a warm solve ~21 ms and the cold clearing after it ~28 ms); where they are rare
(1,000 bids: 5 of bench_territory's 80 re-clears, none twice in a row but one) the warm path is kept."""
DUAL_EDGE_WEIGHTS_DEVEX = 1
"""HiGHS's ``simplex_dual_edge_weight_strategy`` value for Devex (see :class:`HighsSolver`)."""
STALL_S = 1.0
STALL_S_PER_NONZERO = 1e-4
STALL_FACTOR = 20.0
"""A HiGHS run that has not ended after ``STALL_FACTOR`` times the longest run of this solver that ended in a verdict
(at least ``STALL_S``), or before there is one ``STALL_S`` plus ``STALL_S_PER_NONZERO`` seconds per nonzero of the
matrix, has stalled (:meth:`HighsSolver.run`). HiGHS 1.16's dual simplex can stop iterating on an LP whose basis puts
primal values far off their bounds and rebuild its factorisation over and over: a loss-aware fixed point's branch
held at its other side at the floor price (feeder 7 of ``dsomarket territory synth --feeders 8 --buses 1000 --bids
1000 --seed 2``, 18,983 rows, 52,937 nonzeros) stalled warm and cold with presolve, where the simplex without
presolve proves it infeasible at once (from scratch then; from the slack basis since, :meth:`HighsSolver.run`):
``python benchmarks/profile_curve.py --feeder DIR/feeder-0007`` took 539 s with this limit absent (92f1069), 10 s
with it (bc66600).
Legitimate runs stay far inside the limit: a model's first run is mostly its longest (the cold one; ``python
benchmarks/bench_clearing.py --case 10000:100000``: ~1.5 s for a lossless clearing at 10,000 buses / 100,000 bids,
far below the ~45 s limit its matrix gives), and runs from scratch after a failed warm one take a few times the
first. Every run that ends in a verdict inside the limit is the same, to the bit; a stall costs the limit (1 s at
1,000 buses) and the plain simplex's run."""
EXPLORE_STALL_S = 0.1
EXPLORE_STALL_FACTOR = 5.0
"""The budget of the first HiGHS run of an *exploratory* solve (:meth:`HighsSolver.solve` with ``explore=True``: a
start the loss-aware clearing's branch search tries, :mod:`engine.branches`): ``EXPLORE_STALL_FACTOR`` times the
longest run of this solver that ended in a verdict (its first LP, mostly), at least ``EXPLORE_STALL_S`` seconds,
counted on the CPU clock of the thread HiGHS runs in (``time.thread_time``, read at HiGHS's simplex interrupt
callback, which it calls at every iteration and every refactorisation). A run past it has stalled as under
:data:`STALL_S`, and the simplex without presolve decides, under the ordinary limits. Such a start is a fixed point's
other branch held at a negative price, often outside the feeder's limits, and where HiGHS 1.16's dual simplex stalls
(a bound-flipping ratio test over thousands of candidates each pass, a few iterations and then none) it stalls
there: at the floor price on feeders 6 and 7 of ``dsomarket territory synth --feeders 8 --buses 1000 --bids 1000
--seed 2`` and feeder 6 of ``--seed 5``, each such start took the whole second of :data:`STALL_S` (``dsomarket
clear --feeder DIR/feeder-0006 --bids DIR/feeder-0006/bids.csv --iso-price -1000 --out OUT`` said "HiGHS stalled" at
WARNING at f3fef61). Those starts were bids a limit holds part-way, no longer candidates since the comparison asks
what forcing one costs (:meth:`HighsSolver.forcing_costs`); ``tests/test_branches.py`` makes them candidates again and
has the budget end the one that stalls. A start that leads somewhere runs one to a few dozen pivots from the fixed
point's basis, a fraction of the first LP's run. A CPU clock, unlike :data:`STALL_S`'s wall clock, does not run on
while other processes hold the cores, so the machine's load does not decide which starts are cut off."""
PRIMAL_GAP = 1e-9
"""Distance (model units) from a bound beyond which a nonbasic variable counts as off it (:meth:`HighsSolver.
forcing_costs`: free to move towards it too)."""
RELAX_HARD_TOL = 1e-6
"""Largest violation (model units: MW, Mvar, pu^2) of a row or bound that a feasibility relaxation
must keep hard, above which :meth:`HighsSolver.relax_feasibility` reports that it failed."""


@dataclass(frozen=True, eq=False)
class _Factor:
    """A basis matrix ``B`` factorised by the solver itself, for the basis solves of a basis carried to a matrix
    HiGHS has not factorised it on (:meth:`HighsSolver._kept_optimal`, and the pivots and values from there).

    ``B`` is HiGHS's: the columns of ``[A, I]`` at the basic variables, a row's logical its unit column. The rows
    whose logicals are basic drop out: ``B z = r`` is the *core* system ``A[held, cols] z_cols = r[held]`` on the
    other (held) rows, then each basic logical is ``r_i - A[i, cols] z_cols``; ``B^T y = c`` sets ``y`` on the
    basic logicals' rows from their costs and solves ``A[held, cols]^T y_held = c_cols - A[rows, cols]^T y_rows``.
    The core (held rows and basic columns, both ascending) is factorised by SuperLU, so the factors and the values
    solved from them depend on the basis and the matrix alone, not on the order HiGHS lists the basic variables in.
    The curve tracer factorises the same cores faster (:meth:`engine.tracer._Probe._core`, compiled kernels), but a
    clearing does not load it: ``dsomarket clear`` imports neither the tracer nor numba (``tests/test_cli_startup.py``).

    HiGHS factorises a basis on a matrix new to it only after setting its LP up again (scaling, the row-wise copy),
    which on a large model (a re-linearisation's: 18,983 rows at 1,000 buses) costs more than factorising the core:
    :data:`OWN_FACTOR_ROWS`."""

    structural: np.ndarray      # by basis position: a column (else a row's logical)
    order: np.ndarray           # the basic columns' basis positions (among the structural ones), ascending by column
    rows: np.ndarray            # the rows whose logicals are basic, by basis position
    held: np.ndarray            # the other rows, ascending: the core's rows
    entry_row: np.ndarray       # A's entries in the basic columns (ascending), column after column: their rows,
    entry_col: np.ndarray       # their columns (0 .. number of basic columns - 1)
    entry_value: np.ndarray     # and their values
    lu: object                  # SuperLU of the core (None: no basic column)

    @staticmethod
    def of(a: sp.csc_matrix, basic: np.ndarray) -> _Factor | None:
        """The factors of the basis whose basic variables are ``basic`` (column ``j``, or row ``i``'s logical as
        ``-1 - i``, by basis position) on the matrix ``a``; None where it is not square or singular (a pivot of
        exactly zero: as the tracer's own factorisation of the same cores, :meth:`engine.tracer._Probe._core`, a
        basis that is singular in all but rounding is left to the checks its values then fail)."""
        from scipy.sparse.linalg import splu   # loaded with the first kept basis, not by every import of the engine

        m = a.shape[0]
        structural = basic >= 0
        cols = basic[structural]
        order = np.argsort(cols, kind="stable")
        rows = -1 - basic[~structural]
        pos = np.zeros(m, dtype=np.int64)           # each held row's place in the core, -1 for the others
        pos[rows] = -1
        held = np.flatnonzero(pos == 0)
        if len(held) != len(cols):
            return None
        pos[held] = np.arange(len(held))
        # A's entries in the basic columns, gathered from its column-wise arrays: one sparse constructor (the core's)
        # where scipy's fancy indexing makes four.
        sel = cols[order]
        starts, counts = a.indptr[sel], a.indptr[sel + 1] - a.indptr[sel]
        ptr = np.zeros(len(sel) + 1, dtype=np.int64)
        np.cumsum(counts, out=ptr[1:])
        at = np.arange(ptr[-1]) + np.repeat(starts - ptr[:-1], counts)
        r, v = a.indices[at], a.data[at]
        lu = None
        if len(sel):
            inside = pos[r] >= 0
            core_ptr = np.concatenate([[0], np.cumsum(inside)])[ptr]
            try:
                lu = splu(sp.csc_matrix((v[inside], pos[r[inside]], core_ptr), shape=(len(held), len(sel))),
                          permc_spec="COLAMD")
            except RuntimeError:               # exactly singular
                return None
        return _Factor(structural, order, rows, held, r, np.repeat(np.arange(len(sel)), counts), v, lu)

    def solve(self, rhs: np.ndarray) -> np.ndarray:
        """``z = B^-1 rhs``, by basis position."""
        zc = self.lu.solve(rhs[self.held]) if self.lu is not None else np.zeros(0)
        z = np.empty(len(self.structural))
        cols = np.empty(len(zc))
        cols[self.order] = zc
        z[self.structural] = cols
        # Each basic logical: its row of rhs less A's basic columns' part of that row.
        z[~self.structural] = rhs[self.rows] - np.bincount(self.entry_row, self.entry_value * zc[self.entry_col],
                                                           minlength=len(rhs))[self.rows]
        return z

    def tsolve(self, c: np.ndarray) -> np.ndarray:
        """``y = B^-T c`` (``c`` by basis position), by row."""
        y = np.zeros(len(self.held) + len(self.rows))
        y[self.rows] = c[~self.structural]
        if self.lu is not None:
            # The basic columns' costs less the basic logicals' rows' part (y is zero on the held rows yet).
            known = np.bincount(self.entry_col, self.entry_value * y[self.entry_row], minlength=len(self.order))
            y[self.held] = self.lu.solve(c[self.structural][self.order] - known, trans="T")
        return y

@dataclass(frozen=True, eq=False)
class _Statuses:
    """A HiGHS basis's statuses as arrays, as converting them one by one gives them (:meth:`HighsSolver._carried`):
    its basic variables (``basic``: the basic columns ``j`` in order, then the rows ``i`` whose logicals are basic,
    as ``-1 - i`` in order of ``i``) and which columns and rows it marks at their lower bounds (``at_lower``,
    ``held_lower``: all but those marked at their upper ones, basic and free ones included).

    Known without that conversion (~9 ms at 1,000 buses, 18,983 rows: a quarter of a territory feeder's loss-aware
    curve, ``benchmarks/profile_curve.py``) wherever the solver made the basis from arrays of its own or HiGHS's
    run ended in it (:meth:`HighsSolver._run_statuses`), and carried with it (:attr:`HighsSolver._holds`,
    :meth:`HighsSolver.held_basis`)."""

    basic: np.ndarray
    at_lower: np.ndarray
    held_lower: np.ndarray

    @staticmethod
    def of(col: np.ndarray, row: np.ndarray) -> _Statuses | None:
        """From status codes per column and row (0 lower, 1 basic, 2 upper, 3 zero: HiGHS's); None where as many
        are not basic as there are rows."""
        structural, logical = np.flatnonzero(col == _BASIC), np.flatnonzero(row == _BASIC)
        if len(structural) + len(logical) != len(row):
            return None
        # HiGHS's row statuses name the row's bound, as held_lower does.
        return _Statuses(np.concatenate([structural, -1 - logical]), col != _UPPER, row != _UPPER)

    def kept(self, basis: highspy.HighsBasis) -> _KeptBasis:
        """The kept basis of these statuses (``basis``, HiGHS's) for a new matrix: not factorised."""
        return _KeptBasis(basis, self.basic, self.basic >= 0, self.at_lower, self.held_lower, float("nan"), self)


@dataclass(frozen=True, eq=False)
class HeldBasis:
    """A basis HiGHS held (:meth:`HighsSolver.held_basis`), to start from again (:meth:`HighsSolver.start_from`):
    HiGHS's own (``basis``) and, where the solver knew them, its statuses as arrays."""

    basis: highspy.HighsBasis
    statuses: _Statuses | None


@dataclass(frozen=True)
class _KeptBasis:
    """The basis of a :meth:`HighsSolver.solve_by_basis`: HiGHS's statuses (``basis``), its basic variables in
    HiGHS's order (``basic``: column ``j`` or row ``i``'s logical as ``-1 - i``; ``structural`` marks columns),
    which nonbasic columns and held rows sit at their lower bounds (``at_lower``, ``held_lower``; the others
    at their upper ones), HiGHS's run clock when it factorised the basis (``run_time``) and what the statuses of
    ``basis`` say as arrays where known (``statuses``: ``at_lower`` moves with the reduced costs, they do not)."""

    basis: highspy.HighsBasis
    basic: np.ndarray
    structural: np.ndarray
    at_lower: np.ndarray
    held_lower: np.ndarray
    run_time: float
    statuses: _Statuses | None
    iterations: int = 0       # simplex iterations of the HiGHS run that ended in it (0: none did)
    far: bool = False         # carried to a new matrix from a run of more than KEPT_RUN_ITERATIONS: not checked there
    factor: _Factor | None = None   # the solver's own factors on the matrix it is kept on (None: HiGHS's, if any)
    cols: np.ndarray = field(init=False)    # the basic columns, by basis position
    rows: np.ndarray = field(init=False)    # the rows whose logicals are basic, by basis position

    def __post_init__(self):
        object.__setattr__(self, "cols", self.basic[self.structural])
        object.__setattr__(self, "rows", -self.basic[~self.structural] - 1)

    def moved(self, at_lower: np.ndarray) -> _KeptBasis:
        """The same basis with its nonbasic columns at the bounds ``at_lower`` says: a shallow copy, as
        ``dataclasses.replace`` without the constructor's gathers of ``cols`` and ``rows`` (~30 us at 1,000 buses,
        twice in most re-clears)."""
        out = copy.copy(self)
        object.__setattr__(out, "at_lower", at_lower)
        return out

    def basic_costs(self, cost: np.ndarray) -> np.ndarray:
        """``c_B``: the cost of the basic variable at each basis position (0 for a row's logical)."""
        return np.where(self.structural, cost[np.maximum(self.basic, 0)], 0.0)


@dataclass(frozen=True, eq=False)
class Checkpoint:
    """A :class:`HighsSolver`'s attributes as :meth:`HighsSolver.checkpoint` saved them (its HiGHS instance and
    arrays among them, which the solver no longer uses until :meth:`HighsSolver.rollback`)."""

    state: dict


class HighsSolver:
    """A persistent HiGHS model of a :class:`LinearModel`.

    Changing costs or bounds keeps the last basis, so re-solves are warm
    (12-19x faster than cold on the feeders measured in DESIGN.md section 9).
    """

    def __init__(self, model: LinearModel, time_limit: float | None = None, threads: int = 1):
        self.model = model
        c, lo, up, a, rlo, rup, integrality = model.assemble()
        self.integer = bool(integrality.any())
        h = highspy.Highs()
        h.setOptionValue("output_flag", False)
        # One thread keeps runs byte-for-byte reproducible and leaves the other
        # core to the server's event loop; parallel feeders scale by process.
        h.setOptionValue("threads", threads)
        h.setOptionValue("random_seed", 0)
        # Devex dual edge weights, not exact steepest edge: a warm re-solve from the basis HiGHS postsolved
        # after a presolved cold solve would otherwise first compute exact weights for every row of the full
        # LP, costing as much as the cold solve itself (the first real-time re-clear of a territory took
        # 58-188 % of the cold clearing, later ones 8-13 %). Measured at 1,000-5,000 buses, cold solves were
        # no slower and the first re-solve fell to 14-16 % (benchmarks/bench_territory.py, docs/territory.md).
        h.setOptionValue("simplex_dual_edge_weight_strategy", DUAL_EDGE_WEIGHTS_DEVEX)
        _pass_model(h, c, lo, up, a, rlo, rup, integrality if self.integer else None)
        self.h = h
        self.cost = c.copy()
        self.col_lower = lo.copy()
        self.col_upper = up.copy()
        self.row_lower = rlo.copy()
        self.row_upper = rup.copy()
        # The caller's limit on HiGHS's run clock (s, all runs together); each run is also held to a stall limit.
        self.time_limit = None if time_limit is None else float(time_limit)
        self._longest = 0.0         # the longest run (s) that ended in a verdict (optimal, infeasible ...)
        self._over_budget = False   # whether the last run passed the budget of an exploratory solve (run)
        self._last_run = 0.0        # the last run's seconds
        self.restarted = False      # whether the last run() had to solve again (from scratch or without presolve)
        self.tie_restarts = 0       # re-clears (solve_kept) cleared cold for a tie (after a warm solve or at once)
        self._ties = 0              # how many re-clears in a row ended at one of several optima (TIE_STREAK)
        self._kept: _KeptBasis | None = None   # the basis of the last solve_by_basis (see there)
        self._ran_at: float | None = None      # HiGHS's run clock after run(), None once a basis is set (_carried)
        self._holds: _Statuses | None = None   # the statuses of the basis HiGHS holds, where known (_Statuses)
        self._a = a                            # the model's matrix, column-wise
        self._csr: tuple | None = None         # (A, A^T), see _matrix
        self._transposed: sp.csr_matrix | None = None   # the last A^T made (kept across set_matrix), see _matrix

    def set_matrix(self, model: LinearModel) -> None:
        """Swap in a model with the same blocks and shape but new coefficients, warm.

        Costs and bounds stay as they are now (including changes made in place),
        and so does the basis: a re-linearised model (:mod:`engine.losses`) is
        re-solved from the previous optimum in a few pivots. The basis is also kept
        for :meth:`solve_by_basis` (:meth:`_carried`), to be factorised afresh on
        the new matrix and checked there: a re-linearisation that leaves it optimal
        (most of a converged clearing's, which HiGHS ends in 0 iterations) then runs
        no HiGHS.
        """
        if (model.n_row, model.n_col) != (self.model.n_row, self.model.n_col):
            raise ValueError("set_matrix: the new model must have the shape of the old one")
        _, _, _, a, _, _, _ = model.assemble()
        basis = self.h.getBasis()
        self._kept, self._a, self._csr = self._carried(basis), a, None
        _pass_model(self.h, self.cost, self.col_lower, self.col_upper, a, self.row_lower, self.row_upper)
        # The Devex pricing set at construction matters most here: a new matrix discards the edge
        # weights, and exact steepest edge would recompute them for the given basis (one BTRAN per
        # row, ~1 s at 1,000 buses / 10,000 bids for a re-solve of a few dozen pivots).
        self._set_basis(basis, None if self._kept is None else self._kept.statuses)
        self.model = model

    def _carried(self, basis: highspy.HighsBasis) -> _KeptBasis | None:
        """The basis HiGHS holds (``basis``) as the kept basis of the next :meth:`solve_by_basis` on a new matrix:
        the kept one where HiGHS holds it still (no run since: its bounds the reduced costs chose), else HiGHS's own
        statuses (:class:`_Statuses`: known, read from its last run, or converted one by one); None where it has
        none. Its run clock is NaN, so :meth:`_kept_optimal` factorises it afresh on the new matrix (by the solver's
        own factorisation, :class:`_Factor`, on a model of :data:`OWN_FACTOR_ROWS` rows or more) before it trusts a
        basis solve."""
        k = self._kept
        if k is not None and self.h.getRunTime() == k.run_time:
            return dataclasses.replace(k, run_time=float("nan"), far=k.iterations > KEPT_RUN_ITERATIONS, factor=None)
        if not basis.valid:
            return None
        statuses = self._known_statuses() or _Statuses.of(_status_codes(basis.col_status),
                                                            _status_codes(basis.row_status))
        return None if statuses is None else statuses.kept(basis)

    def _known_statuses(self) -> _Statuses | None:
        """The statuses of the basis HiGHS holds where known without converting them: made or saved with it, or read
        from the run that ended in it (:meth:`_run_statuses`)."""
        if self._holds is None and self._ran_at == self.h.getRunTime():
            return self._run_statuses()
        return self._holds

    def _run_statuses(self, basic: np.ndarray | None = None, x: np.ndarray | None = None,
                      act: np.ndarray | None = None) -> _Statuses | None:
        """The statuses of the basis HiGHS's last run ended in, where it holds that run's optimum (no basis set, no
        cost or bound changed since), from its basic variables (``basic``) and its solution (values ``x``, row
        activities ``act``), each read here where not given: ~1 ms at 1,000 buses against ~9 ms converting them,
        less where the caller has them already (:meth:`_keep`). The same as HiGHS's: a nonbasic column or ranged row
        sits exactly at the bound it is held at; HiGHS marks a nonbasic fixed column at its upper bound where its
        reduced cost is negative and an equality row at its upper bound where its dual is positive (their values
        are the same at either). None where it holds no optimum or cannot say its basic variables."""
        if self.h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
            return None
        if basic is None:
            status, basic = self.h.getBasicVariables()
            if status == highspy.HighsStatus.kError:
                return None
            basic = np.asarray(basic)
        sol = self.h.getSolution()
        x = _array(sol.col_value) if x is None else x
        act = _array(sol.row_value) if act is None else act
        lo, up, rlo, rup = self.col_lower, self.col_upper, self.row_lower, self.row_upper
        structural, logical = np.sort(basic[basic >= 0]), np.sort(-1 - basic[basic < 0])
        at_lower = np.where(lo == up, _array(sol.col_dual) >= 0.0, np.abs(x - lo) <= np.abs(x - up))
        held_lower = np.where(rlo == rup, _array(sol.row_dual) <= 0.0, np.abs(act - rlo) <= np.abs(act - rup))
        at_lower[structural], held_lower[logical] = True, True
        return _Statuses(np.concatenate([structural, -1 - logical]), at_lower, held_lower)

    def held_rows(self) -> np.ndarray | None:
        """The rows whose logicals are basic (sorted) in the basis carried to a new matrix by :meth:`set_matrix`
        (the others are held at a bound); None where none is carried."""
        return None if self._kept is None else np.sort(self._kept.rows)

    def hold_instead(self, inactive: np.ndarray) -> None:
        """Change the basis carried by :meth:`set_matrix` to have basic logicals on the rows ``inactive`` (as
        many as it had, sorted), the rows it newly holds at their upper bounds, columns as they were.

        For the loss-aware model's thermal rows (:func:`engine.losses.tangent_held`): its polygons turn with the
        point, so a re-linearisation carries a line on its rating held on a face that is no longer tight; held
        on the tangent face instead, HiGHS's warm run needs far fewer pivots (1,000 buses / 10,000 bids, the
        first re-linearisation: 25 instead of 130 at seed 7, 18 instead of 83 at seed 2)."""
        # The row statuses are made from the carried basis, not read from HiGHS's: reading them converts one enum
        # object per row (~4 ms at 1,000 buses / 10,000 bids, more than the warm run this saves pivots of).
        k, status = self._kept, self.h.getBasis()
        was, basic = np.zeros(len(self.row_lower), dtype=bool), np.zeros(len(self.row_lower), dtype=bool)
        was[k.rows], basic[inactive] = True, True
        newly = ~basic & was
        held_lower = k.held_lower & ~newly
        status.row_status = _BASIS_STATUS[np.where(basic, 1, np.where(held_lower, 0, 2))].tolist()
        order = np.concatenate([np.sort(k.cols), -1 - np.flatnonzero(basic)])
        statuses = None if self._holds is None else _Statuses(order, self._holds.at_lower, basic | held_lower)
        self._set_basis(status, statuses)
        self._kept = _KeptBasis(status, order, order >= 0, k.at_lower, held_lower, float("nan"), statuses,
                                k.iterations, k.far)

    # -- in-place changes (keep the basis) ---------------------------------
    def set_cost(self, block: str, values, index=None) -> None:
        idx = self._cols(block, index)
        vals = np.broadcast_to(np.asarray(values, dtype=float), idx.shape).copy()
        self.cost[idx] = vals
        self.h.changeColsCost(len(idx), idx.astype(np.int32), vals)

    def set_col_bounds(self, block: str, lower, upper, index=None) -> None:
        idx = self._cols(block, index)
        lo = np.broadcast_to(np.asarray(lower, dtype=float), idx.shape).copy()
        up = np.broadcast_to(np.asarray(upper, dtype=float), idx.shape).copy()
        self.col_lower[idx] = lo
        self.col_upper[idx] = up
        self.h.changeColsBounds(len(idx), idx.astype(np.int32), lo, up)

    def set_row_bounds(self, block: str, lower, upper, index=None) -> None:
        blk = self.model.con(block)
        idx = np.arange(blk.start, blk.start + blk.size) if index is None else blk.start + np.asarray(index)
        lo = np.broadcast_to(np.asarray(lower, dtype=float), idx.shape).copy()
        up = np.broadcast_to(np.asarray(upper, dtype=float), idx.shape).copy()
        self.row_lower[idx] = lo
        self.row_upper[idx] = up
        self.h.changeRowsBounds(len(idx), idx.astype(np.int32), lo, up)

    def _cols(self, block: str, index) -> np.ndarray:
        blk = self.model.var(block)
        if index is None:
            return np.arange(blk.start, blk.start + blk.size)
        return blk.start + np.atleast_1d(np.asarray(index, dtype=np.int64))

    def set_basis(self, col_status: np.ndarray, row_status: np.ndarray, square: bool = False) -> None:
        """Give HiGHS a basis to start from: statuses 0 (at lower bound), 1 (basic), 2 (at upper bound)
        per column and per row's logical.

        ``square``: the caller has checked that as many variables are basic as there are rows. HiGHS then
        takes the basis as its own (not *alien*) and factorises it once, when it runs; an alien basis is
        factorised on the spot to be checked and completed, and again by the run (~3 ms of a 30 ms solve at
        1,000 buses / 10,000 bids). A singular basis is still repaired by the run's factorisation."""
        self._set_basis(_highs_basis(col_status, row_status, square), _Statuses.of(col_status, row_status))
        self._kept = None       # a basis given to start from replaces the one kept from the last solve

    def held_basis(self) -> HeldBasis:
        """The basis HiGHS holds, to start from again (:meth:`start_from`), with its statuses where known."""
        return HeldBasis(self.h.getBasis(), self._known_statuses())

    def start_from(self, basis: highspy.HighsBasis | HeldBasis) -> None:
        """Start the next solve from ``basis``: one of HiGHS's own saved earlier (cold where it is not valid), or
        one :meth:`held_basis` saved.

        The basis kept from the last solve (:meth:`solve_by_basis`) is dropped with it: kept, it would be set and
        taken again in its place wherever it is still optimal, so a market put back where it was (after a curve
        traced on it, a fixed point's branch restored) would not start where it would have."""
        basis, statuses = (basis.basis, basis.statuses) if isinstance(basis, HeldBasis) else (basis, None)
        if basis.valid:
            self._set_basis(basis, statuses)
        else:
            self.h.clearSolver()
            self._holds = None
        self._kept = None

    def start_from_slack(self) -> bool:
        """Start the next solve from the network's slack basis (:func:`slack_basis`) instead of cold.

        The bids and shed load start at their lower bounds; HiGHS's dual simplex flips each boxed one
        to the bound its reduced cost points to (one factorisation), so the start is dual feasible and
        only binding limits cost pivots: at 1,000 buses / 1,000 bids 43 iterations instead of a cold
        solve's 911 (``benchmarks/bench_slack_start.py``). The start depends on the model and bounds
        only, so every path that clears the same market from no basis (``dsomarket clear``, a
        territory, the server, a kept market's restart) reaches the same vertex. Returns False, and
        leaves the solver as it is (a cold solve next), when that basis is not square (blocks that add
        basic columns without equality rows, or the reverse) or a nonbasic column has an infinite bound.
        """
        col_range, row_range = self.col_lower < self.col_upper, self.row_lower < self.row_upper
        structural, inactive, nonbasic = slack_basis(self.model, col_range, row_range)
        if len(structural) + len(inactive) != self.model.n_row or not (
                np.all(np.isfinite(self.col_lower[nonbasic])) and np.all(np.isfinite(self.col_upper[nonbasic]))):
            return False
        col_status = np.zeros(self.model.n_col, dtype=np.int64)
        col_status[structural] = 1
        row_status = np.zeros(self.model.n_row, dtype=np.int64)
        row_status[inactive] = 1
        self.set_basis(col_status, row_status, square=True)
        return True

    def solve_from_slack(self) -> Solution:
        """:meth:`solve_by_basis` from the network's slack basis (:meth:`start_from_slack`; :meth:`solve`, cold,
        where there is none)."""
        if not self.start_from_slack():
            return self.solve()
        return self.solve_by_basis()

    def solve_unless_warm(self) -> Solution:
        """Warm from the basis HiGHS holds (:meth:`solve_by_basis`, read through a HiGHS run's own factorisation),
        else (no basis: a new or restarted market) the cold clearing :meth:`solve_from_slack`. The loss-aware
        model's first LP (LinDistFlow's, :func:`engine.losses.lossless_point`) from the slack basis takes 278-326
        simplex iterations at 1,000 buses / 10,000 bids (bench_physics seeds 2 and 7) where HiGHS's own cold start
        takes 1,829-1,902 (33-46 ms of CPU against 65-165 ms), and the successive LP after it ends at the same fixed
        point (the same dispatch and DLMPs within its tolerances: benchmarks/README.md, 2026-12-02 slackloss).

        Warm, it is a loss-aware market's next clearing at a new ISO price (a territory's real-time re-clear,
        :class:`engine.territory.InterfaceSession`), on the matrix of the linearisation it converged at: a HiGHS
        run there sets the LP up again first (scaling, factorisation) for the few pivots the new price takes, 13.7
        of a re-clear's 33.4 ms at 1,000 buses / 1,000 bids, where the kept basis factorised afresh (by the solver
        on a large model) and its own pivots cost less (the re-clear 21.9 ms; ``python
        benchmarks/bench_territory.py --split-realtime --feeders 20 --formulation lossaware``). The successive LP
        goes on from that optimum, so which of tied vertices it starts from is no more the result than where a
        HiGHS run ends: it reaches the fixed point a cold clearing does (``benchmarks/README.md``, 2026-12-03, warm
        loss-aware re-clears)."""
        if not self.h.getBasis().valid:
            return self.solve_from_slack()
        return self.solve_by_basis(primal_tol=HIGHS_PRIMAL_TOL, fresh=False)

    def solve_kept(self, likely_tied: bool = False) -> Solution:
        """A kept market's re-clear: :meth:`solve_by_basis` from the basis HiGHS holds where the optimum it reaches
        is the LP's only optimal basis (:meth:`unique_optimum`), else the cold clearing :meth:`solve_from_slack`,
        HiGHS cleared first (as :meth:`engine.clearing.NodalMarket.restart` does): a fresh clearing's bits either way.

        Where several bases are optimal (bids tied at their DLMP: a buy and a sell at one price on one bus,
        equal-priced bids on buses of one DLMP; or a basic value exactly at a bound, where the DLMPs may not be
        unique) the warm path (kept basis, own pivots or HiGHS's warm run) and a fresh clearing from the slack
        basis can end at different ones: the same welfare, another dispatch (or other prices). Only the cold
        clearing's own path reaches its vertex, so a re-clear that ends in a tie is solved again that way; one
        that does not ends in the basis the cold clearing ends in (the only optimal one), and its fresh
        factorisation gives that clearing's bits. The check costs one pass over the variables (~0.1 ms at
        1,000 buses); the cold clearing costs what a fresh one does (counted in :attr:`tie_restarts`). After
        :data:`TIE_STREAK` tied re-clears in a row the warm solve is skipped until a cold clearing ends at the
        only optimum, and so it is where the caller expects a tie (``likely_tied``: a bid priced exactly at the ISO
        price, :meth:`engine.clearing.NodalMarket.converge`): the result is the cold clearing's either way, only
        the warm solve's cost is saved or spent. The :class:`Solution`'s seconds and iterations are both solves'."""
        t0 = time.perf_counter()
        warm = None
        if self._ties < TIE_STREAK and not likely_tied:
            warm = self.solve_by_basis()
            if not warm.ok or self.unique_optimum(warm):
                self._ties = 0
                return warm
            log.debug("warm re-clear ended at one of several optimal bases; clearing again from the slack basis")
        self.tie_restarts += 1
        self.h.clearSolver()
        self._holds = None
        self._kept = None        # no stale basis for the check below where the slack start falls back to solve()
        cold = self.solve_from_slack()
        self._ties = 0 if self.unique_optimum(cold) else self._ties + 1
        return dataclasses.replace(cold, solve_seconds=time.perf_counter() - t0,
                                   iterations=(0 if warm is None else warm.iterations) + cold.iterations)

    def unique_optimum(self, sol: Solution) -> bool:
        """Whether the basis kept by the :meth:`solve_by_basis` that returned ``sol`` (optimal) is the LP's only
        optimal basis, so that every path ends in it: no nonbasic variable that can move (a column, or a ranged
        row's logical) has a reduced cost (row dual) within :data:`TIE_DUAL_TOL` of zero (else moving it along
        its edge keeps the objective: another optimal dispatch, a *dual degenerate* optimum), and no basic one
        sits within :data:`TIE_PRIMAL_TOL` of a bound, a fixed one included (else another basis holds the same
        values, with other duals possibly: a *primal degenerate* one). Both within tolerances wider than HiGHS's,
        so that no basis HiGHS's tolerances accept as optimal can differ. False where no basis is kept."""
        k = self._kept
        if k is None or not sol.ok:
            return False
        lo, up, rlo, rup = self.col_lower, self.col_upper, self.row_lower, self.row_upper
        tie, edge = TIE_DUAL_TOL, TIE_PRIMAL_TOL
        # The basic variables' reduced costs (0 up to rounding) are set aside; of the few nonbasic ones left near
        # zero, only those that can move (not fixed, not an equality row's logical) make a tie.
        for dual, basic, low, high in ((sol.col_dual, k.cols, lo, up), (sol.row_dual, k.rows, rlo, rup)):
            near = np.abs(dual)
            near[basic] = np.inf
            near = np.flatnonzero(near <= tie)
            if np.any(low[near] < high[near]):
                return False
        x, r = sol.x[k.cols], sol.row_value[k.rows]
        return not (np.any(np.abs(x - lo[k.cols]) <= edge) or np.any(np.abs(x - up[k.cols]) <= edge)
                    or np.any(np.abs(r - rlo[k.rows]) <= edge) or np.any(np.abs(r - rup[k.rows]) <= edge))

    def solve_by_basis(self, pivots: int | None = None, primal_tol: float = KEPT_PRIMAL_TOL,
                       fresh: bool = True) -> Solution:
        """Solve from the basis HiGHS holds and read the values of the optimal basis alone.

        The values the pivots' updated factorisation leaves differ in the last digit with the path that reached
        the optimum; here the optimal basis is factorised afresh (its basic columns in column order, as
        :meth:`set_basis` hands them) and its values solved from that factorisation (:meth:`_kept_values`), so
        every path that ends in the same basis (a fresh clearing, a restarted kept market, a kept market's warm
        re-clear) gives the same bits. A basis kept from the last solve that is still optimal at the current
        costs and bounds, its nonbasic columns moved to the bounds their reduced costs point to
        (:meth:`_kept_optimal`), is taken without running HiGHS: the run would end in it after the same bound
        flips and no pivot, and costs ~5 ms at 1,000 buses even so (per-run set-up, cost perturbation). From a
        fresh factorisation (every kept basis is one) it gives a cold clearing's bits. One that a few simplex
        pivots of the solver's own make optimal (a limit starts or stops binding: :meth:`_pivots`) is factorised
        afresh there and taken the same way; a re-solve that needs more is HiGHS's warm run, whose optimum is
        factorised afresh as a cold one is: every path that ends in a cold clearing's basis gives its bits. Where
        several bases are optimal (bids tied at their DLMP: a buy and a sell at one price on one bus, equal-priced
        bids on two buses of one DLMP), a warm path can end in another than a cold clearing's: the same DLMPs and
        welfare, another dispatch; :meth:`solve_kept` (a kept market's re-clear) clears such a market cold.
        ``pivots``: how many simplex pivots of our own may make a kept basis optimal before HiGHS runs (None:
        :data:`KEPT_PIVOTS`; 0: only a kept basis optimal as it stands is taken, the one HiGHS would end in
        without a pivot); ``primal_tol``: how far (model units) a kept basis's values may break a bound or row
        and still be taken (:data:`HIGHS_PRIMAL_TOL` takes what a HiGHS run would end in at 0 iterations);
        ``fresh=False``: the optimum of a HiGHS run is read through the run's own factorisation, not one made
        afresh (~3.2 ms at 1,000 buses / 10,000 bids), for a solve whose bits no other path need give: the
        loss-aware iteration's, re-linearised next (:func:`engine.successive.converge`).
        """
        t0 = time.perf_counter()
        kept = self._kept_optimal(t0, pivots, primal_tol)
        if kept is not None:
            return kept
        status = self.run()
        iterations = int(self.h.getInfo().simplex_iteration_count)
        if status == "optimal":
            # Whatever path reached it (cold, or warm with pivots), the optimal basis is factorised afresh in
            # column order and its values solved from that: the same basis gives the same bits on every path,
            # and the basis kept for the next re-clear holds those fresh factors, not the run's updated ones
            # (kept, these gave a later re-clear that ran no simplex bits that differ from a cold clearing's).
            x = _array(self.h.getSolution().col_value)
            if fresh:
                # HiGHS's own statuses, factorised afresh in column order; its solution is still this basis's.
                self.h.setBasis(self.h.getBasis())
            sol = self._keep(x, self._matrix()[0] @ x, iterations) and self._kept_values(t0, iterations)
            if sol:
                return sol
            status = self.run()                    # HiGHS's own values after all: 0 iterations from its optimum
        self._kept = None
        return self._read(status, time.perf_counter() - t0, iterations)

    def _keep(self, x: np.ndarray, act: np.ndarray, iterations: int) -> bool:
        """Keep the basis HiGHS holds (and the factorisation it holds of it, in its order), with its nonbasic
        columns at the bounds of ``x`` (HiGHS's values of them) and its held rows at the bounds their activities
        ``act`` (``A x``) are nearest, and the ``iterations`` of the run that ended in it; False when HiGHS cannot
        factorise it."""
        status, basic = self.h.getBasicVariables()
        if status == highspy.HighsStatus.kError:
            return False
        basic = np.asarray(basic)
        self._holds = self._run_statuses(basic, x, act)
        self._kept = _KeptBasis(self.h.getBasis(), basic, basic >= 0,
                                np.abs(x - self.col_lower) <= np.abs(x - self.col_upper),
                                np.abs(act - self.row_lower) <= np.abs(act - self.row_upper), self.h.getRunTime(),
                                self._holds, iterations)
        return True

    def _kept_values(self, t0: float, iterations: int, y: np.ndarray | None = None,
                     d: np.ndarray | None = None) -> Solution | None:
        """Primal and dual values of the kept basis (factorised afresh: by the solver, :attr:`_KeptBasis.factor`, or
        held so by HiGHS) at the current costs and bounds; ``y``: its row duals, and ``d`` its reduced costs, when
        already solved for. None when the basis solves fail."""
        k, (a, at) = self._kept, self._matrix()
        if y is None:
            y = self._kept_solve(k.basic_costs(self.cost), transposed=True)
            if y is None:
                return None
        xn = np.where(k.at_lower, self.col_lower, self.col_upper)
        xn[k.cols] = 0.0
        xn[~np.isfinite(xn)] = 0.0             # a free nonbasic column sits at zero
        held = np.where(k.held_lower, self.row_lower, self.row_upper)
        held[k.rows] = 0.0
        held[~np.isfinite(held)] = 0.0         # a free row's logical, as a free column, sits at zero
        # HiGHS's basis matrix is [A, I], a row's logical minus its activity: a held row's moves to the right-hand side.
        z = self._kept_solve(held - a @ xn)
        if z is None:
            return None
        x = xn
        x[k.cols] = z[k.structural]
        # A plain sum, not a BLAS dot product: OpenBLAS's threads, woken for a long one, spin on after it and slow
        # HiGHS down (engine.tracer says the same).
        return Solution("optimal", float(np.sum(self.cost * x)), x, a @ x, y, self.cost - at @ y if d is None else d,
                        time.perf_counter() - t0, iterations)

    def _kept_optimal(self, t0: float, pivots: int | None = None,
                      primal_tol: float = KEPT_PRIMAL_TOL) -> Solution | None:
        """The kept basis's :class:`Solution` where it is optimal at the current costs and bounds, or that of the
        optimal basis a few simplex pivots of our own reach from it (:meth:`_pivots`); else None.

        Its duals at the current costs (one transposed solve) put each nonbasic column at the bound its reduced
        cost points to (one within HiGHS's dual tolerance, 1e-7, stays where it is, as HiGHS leaves it); it is
        optimal when no reduced cost points to an infinite bound, no held row's dual has the wrong sign and its
        basic values (one solve) keep every bound and row (within ``primal_tol``): primal and dual feasible, the
        check a simplex run makes before it stops (:meth:`_kept_check`). Where it is not, the pivots' basis is
        factorised afresh and checked the same way, so the values of a basis taken are always those of its fresh
        factorisation, as a cold clearing's are: its bits. A HiGHS run costs ~5 ms at 1,000 buses even for one
        pivot, a pivot of our own two basis solves (~1 ms) and the factorisation ~2 ms. Anything in doubt is left
        to HiGHS.

        A basis carried to a new matrix (a re-linearisation's, :meth:`set_matrix`; or to a new HiGHS instance,
        :meth:`checkpoint`), whose run clock is NaN, is factorised by the solver itself (:class:`_Factor`) where the
        model has :data:`OWN_FACTOR_ROWS` rows or more, and so is every basis its pivots reach there: HiGHS would
        factorise it only after setting its LP up again (1,000 buses / 10,000 bids: 9.2 ms with two basis solves,
        against 3.4 ms, :data:`OWN_FACTOR_ROWS`). HiGHS is given the basis, to run from where the check fails.
        Elsewhere (a basis kept from a run, or set, on the matrix HiGHS holds) HiGHS's factorisation is used: its
        set-up is done there."""
        k = self._kept
        if k is None or k.far or not self.h.getBasis().valid:
            return None
        if k.factor is not None or (math.isnan(k.run_time) and len(self.row_lower) >= OWN_FACTOR_ROWS):
            if self.h.getRunTime() != k.run_time:
                self._set_basis(k.basis, k.statuses)          # the basis a run starts from where the check fails
                k = self._kept = dataclasses.replace(k, run_time=self.h.getRunTime())
            if k.factor is None:
                factor = _Factor.of(self._matrix()[0], k.basic)
                if factor is None:
                    return None
                k = self._kept = dataclasses.replace(k, factor=factor)
            y = k.factor.tsolve(k.basic_costs(self.cost))
        else:
            # HiGHS still holds the kept basis's fresh factorisation unless it ran since (its run clock moved) or
            # its basis was set (then the basis solves fail): otherwise the kept basis is set and factorised again
            # (getBasicVariables factorises, the basis solves do not; the same basis gives the same order).
            y = self._kept_solve(k.basic_costs(self.cost), transposed=True) \
                if self.h.getRunTime() == k.run_time else None
            if y is None:
                if not self._factorise(k.basis, k.basic, k.at_lower, k.held_lower, k.statuses):
                    return None
                y = self._kept_solve(self._kept.basic_costs(self.cost), transposed=True)
        budget = KEPT_PIVOTS if pivots is None else pivots
        while y is not None and np.all(np.isfinite(y)):
            sol, state = self._kept_check(t0, y, primal_tol)
            if sol is not None or state is None or budget <= 0:
                return sol
            moved = self._pivots(*state, budget)
            if moved is None or moved[2] == 0 or not self._rebase(moved[0], moved[1]):
                return None
            budget -= moved[2]
            y = self._kept_solve(self._kept.basic_costs(self.cost), transposed=True)
        return None

    def _kept_solve(self, rhs: np.ndarray, transposed: bool = False) -> np.ndarray | None:
        """``B^-1 rhs`` (``transposed``: ``B^-T rhs``) of the kept basis: by its own factors where the solver made
        them (:attr:`_KeptBasis.factor`), else by the factorisation HiGHS holds; None where HiGHS's solve fails."""
        f = self._kept.factor
        if f is not None:
            return f.tsolve(rhs) if transposed else f.solve(rhs)
        return self._highs_solve(rhs, transposed)

    def _highs_solve(self, rhs: np.ndarray, transposed: bool = False) -> np.ndarray | None:
        """``B^-1 rhs`` (``transposed``: ``B^-T rhs``) by the factorisation HiGHS holds; None where that fails."""
        status, z = (self.h.getBasisTransposeSolve if transposed else self.h.getBasisSolve)(rhs)
        return None if status == highspy.HighsStatus.kError else np.asarray(z)

    def _kept_check(self, t0: float, y: np.ndarray,
                    primal_tol: float = KEPT_PRIMAL_TOL) -> tuple[Solution | None, tuple | None]:
        """The kept basis at the current costs and bounds, its row duals ``y`` given: ``(solution, None)`` where it
        is optimal (its values within ``primal_tol`` of every bound and row); else ``(None, state)``, what
        :meth:`_pivots` starts from (the basic values by basis position, their bounds and every variable's reduced
        cost, in HiGHS's variables), or ``(None, None)`` where anything is in doubt. Its nonbasic columns are moved
        to the finite bounds their reduced costs point to, in :attr:`_kept`."""
        k = self._kept
        lo, up, rlo, rup = self.col_lower, self.col_upper, self.row_lower, self.row_upper
        d = self.cost - self._matrix()[1] @ y
        nonbasic = np.ones(len(d), dtype=bool)
        nonbasic[k.cols] = False
        tol, fuzz = 1e-7, 1e-9
        to_lower, to_upper = nonbasic & (d > tol), nonbasic & (d < -tol)
        # In doubt: a reduced cost within (1e-9, 1e-7] pointing away from its column's bound (few: looked at alone).
        small = np.flatnonzero(nonbasic & (np.abs(d) > fuzz) & (np.abs(d) <= tol))
        if np.any((lo[small] < up[small]) & np.where(k.at_lower[small], d[small] < 0, d[small] > 0)):
            return None, None
        # Dual infeasible: a reduced cost pointing to an infinite bound, a held row's dual pointing away from it.
        col_bad = (to_lower & ~np.isfinite(lo)) | (to_upper & ~np.isfinite(up))
        row_bad = np.where(k.held_lower, y < -fuzz, y > fuzz) & (rlo < rup)
        row_bad[k.rows] = False
        if np.any(col_bad):
            to_lower, to_upper = to_lower & ~col_bad, to_upper & ~col_bad
        k = self._kept = k.moved((k.at_lower | to_lower) & ~to_upper)
        sol = self._kept_values(t0, 0, y, d)
        if sol is None or not np.all(np.isfinite(sol.x)):
            return None, None
        if not (np.any(col_bad) or np.any(row_bad) or np.any(sol.x < lo - primal_tol) or np.any(sol.x > up + primal_tol)
                or np.any(sol.row_value < rlo - primal_tol) or np.any(sol.row_value > rup + primal_tol)):
            return sol, None
        # In HiGHS's variables (_pivots) a row's logical is minus its activity: one gather per array from them.
        basic, (vlo, vup) = np.where(k.structural, k.basic, len(d) - 1 - k.basic), self._variable_bounds()
        return None, (np.concatenate([sol.x, -sol.row_value])[basic], vlo[basic], vup[basic], np.concatenate([d, -y]))

    def _pivots(self, z: np.ndarray, zlo: np.ndarray, zup: np.ndarray, dual: np.ndarray,
                budget: int) -> tuple[np.ndarray, np.ndarray, int] | None:
        """Simplex pivots from the kept basis (HiGHS holds it factorised) until the updated values say optimal: the
        basic variables and which nonbasic ones sit at their lower bounds then, and how many pivots it took; None
        where the basis is infeasible on both sides, no pivot is found or ``budget`` pivots do not reach it.

        Variables are HiGHS's, of its basis matrix ``[A, I]``: column ``j``, then row ``i``'s logical as ``n + i``,
        whose value is minus the row's activity (bounds ``[-row_upper, -row_lower]``, reduced cost minus the row's
        dual). ``z``, ``zlo``, ``zup``: the basic values by basis position and their bounds; ``dual``: every
        variable's reduced cost. Where only reduced costs are wrong (a binding limit whose dual turned, as the
        ISO price rises) a primal pivot: the worst enters, moving the way it improves the objective, and the first
        basic value to reach a bound leaves there (or it reaches its own other bound first: a flip); where only
        basic values are (a limit the flipped bids break, as the price falls) a dual pivot: the value furthest
        outside its bounds leaves to the bound it broke, and the nonbasic variable whose reduced cost reaches zero
        first enters (ratio ``|d_j| / |alpha_j|`` of the pivot row). Ties in both ratio tests (Harris's two passes,
        tolerance 1e-9) go to the largest pivot element. Each pivot solves for its pivot row and column (through
        the kept factorisation and the pivots' eta columns) and updates the values and reduced costs; a boxed
        column whose reduced cost turns flips to its other bound."""
        k, (a, at) = self._kept, self._matrix()
        n, m = len(self.cost), len(self.row_lower)
        lo, up = self._variable_bounds()
        at_lower = np.concatenate([k.at_lower, ~k.held_lower])
        basic = np.where(k.structural, k.basic, n - 1 - k.basic)
        boxed = np.isfinite(lo) & np.isfinite(up) & (np.arange(n + m) < n)
        etas: list[tuple[int, np.ndarray]] = []
        tol, dtol, piv = 1e-9, 1e-7, 1e-7

        def column(q: int) -> np.ndarray | None:   # B^-1 of variable q's column
            rhs = np.zeros(m)
            if q < n:
                rhs[a.indices[a.indptr[q]:a.indptr[q + 1]]] = a.data[a.indptr[q]:a.indptr[q + 1]]
            else:
                rhs[q - n] = 1.0
            return ftran(rhs)

        def ftran(rhs: np.ndarray) -> np.ndarray | None:
            v = self._kept_solve(rhs)
            if v is None or not np.all(np.isfinite(v)):   # a basis singular in all but rounding: left to HiGHS
                return None
            for p, col in etas:
                vp = v[p] / col[p]
                v -= vp * col
                v[p] = vp
            return v

        def row(p: int) -> np.ndarray | None:       # row p of B^-1 [A, I]
            e = np.zeros(m)
            e[p] = 1.0
            for q, col in reversed(etas):
                e[q] = (e[q] - (np.sum(col * e) - col[q] * e[q])) / col[q]
            rho = self._kept_solve(e, transposed=True)
            if rho is None:
                return None
            return np.concatenate([at @ rho, rho])

        # The nonbasic variables that can move (a fixed one never enters), by index: the ratio tests and the
        # reduced costs' updates run over these (~1,000 at 1,000 buses and bids), not over every variable.
        nonbasic = np.ones(n + m, dtype=bool)
        nonbasic[basic] = False
        cand = np.flatnonzero(nonbasic & (lo < up))
        free = ~np.isfinite(lo) & ~np.isfinite(up)
        for pivots in range(budget + 1):
            dc = dual[cand]
            wrong = np.where(at_lower[cand], dc < -dtol, dc > dtol)
            flip = wrong & boxed[cand]
            if np.any(flip):                        # boxed columns go to the bound their reduced costs point to
                f = cand[flip]
                step = np.zeros(n)
                step[f] = np.where(at_lower[f], up[f] - lo[f], lo[f] - up[f])
                v = ftran(a @ step)
                if v is None:
                    return None
                z = z - v
                at_lower[f] = ~at_lower[f]
                wrong &= ~flip
            below, above = zlo - z, z - zup
            p = int(np.argmax(np.maximum(below, above)))
            primal = max(below[p], above[p]) > tol
            if not np.any(wrong) and not primal:
                return basic, at_lower, pivots
            if (np.any(wrong) and primal) or pivots == budget:
                return None
            if np.any(wrong):
                q = int(cand[np.argmax(np.where(wrong, np.abs(dc), -1.0))])
                sigma = 1.0 if dual[q] < 0 else -1.0    # +1: q rises from its lower bound, -1: falls from its upper
                alpha = column(q)
                if alpha is None:
                    return None
                move = sigma * alpha                    # basic values fall by theta * move as q moves by theta
                room = np.full(m, np.inf)
                down, rise = move > piv, move < -piv
                room[down] = np.maximum(z[down] - zlo[down], 0.0)
                room[rise] = np.maximum(zup[rise] - z[rise], 0.0)
                size = np.maximum(np.abs(move), piv)
                bound = np.min((room + tol) / size)
                span = up[q] - lo[q]
                if span <= bound and np.isfinite(span):  # q reaches its own other bound first: it flips
                    z = z - span * move
                    at_lower[q] = sigma < 0
                    continue
                if not np.isfinite(bound):              # q meets no bound (an unbounded ray): HiGHS says so
                    return None
                p = int(np.argmax(np.where(room / size <= bound, np.abs(move), -1.0)))
                # A limit that stops binding as the price rises is mostly the last pivot: the basis is factorised and
                # checked afresh at once rather than its reduced costs updated first (a transposed solve).
                at_lower[basic[p]] = bool(move[p] > 0)
                basic[p] = q
                return basic, at_lower, pivots + 1
            leaves_lower = bool(below[p] > 0)           # the leaving value rises to its lower bound
            r = row(p)
            if r is None:
                return None
            rc = r[cand]
            eligible = (np.abs(rc) > piv) & (free[cand] | np.where(at_lower[cand] == leaves_lower, rc < 0, rc > 0))
            if not np.any(eligible):
                return None
            size = np.where(eligible, np.abs(rc), 1.0)
            bound = np.min(np.where(eligible, (np.abs(dc) + tol) / size, np.inf))
            j = int(np.argmax(np.where(eligible & (np.abs(dc) / size <= bound), np.abs(rc), -1.0)))
            q = int(cand[j])
            alpha = column(q)
            if alpha is None or abs(alpha[p]) <= piv:
                return None
            delta = (z[p] - (zlo[p] if leaves_lower else zup[p])) / alpha[p]
            z = z - delta * alpha
            # It enters from where it sits (_kept_values): the bound its flag names, or zero where that bound is
            # infinite (a free column, or one free when its basis was kept and bounded on one side since: the import
            # at a disaggregation's award).
            sits = lo[q] if at_lower[q] else up[q]
            z[p] = (sits if np.isfinite(sits) else 0.0) + delta
            leaving, ratio = basic[p], dual[q] / rc[j]
            dual[cand] = dc - ratio * rc
            dual[q], dual[leaving] = 0.0, -ratio      # the leaving variable's pivot row entry is 1
            at_lower[leaving] = leaves_lower
            basic[p] = q
            zlo[p], zup[p] = lo[q], up[q]
            cand = cand[cand != q] if lo[leaving] == up[leaving] else np.append(cand[cand != q], leaving)
            etas.append((p, alpha))
        return None

    def _rebase(self, basic: np.ndarray, at_lower: np.ndarray) -> bool:
        """Keep the basis of the variables ``basic`` (numbered as :meth:`_pivots` numbers them), the nonbasic ones at
        their lower bounds where ``at_lower`` says so, else at their upper ones, factorised afresh as the basis
        pivoted from was (:meth:`_factorise`); False where one sits at an infinite bound or it cannot be factorised
        as given."""
        n = len(self.cost)
        lo, up = self._variable_bounds()
        nonbasic = np.ones(len(lo), dtype=bool)
        nonbasic[basic] = False
        if not np.all(np.isfinite(np.where(at_lower, lo, up)[nonbasic])):
            return False
        status = np.where(at_lower, 0, 2)
        status[n:] = 2 - status[n:]               # HiGHS's row statuses name the row's bound, not its logical's
        status[basic] = 1
        expected = np.where(basic < n, basic, n - 1 - basic)      # as getBasicVariables: row i's logical is -1 - i
        return self._factorise(_highs_basis(status[:n], status[n:], square=True), expected, at_lower[:n],
                               ~at_lower[n:], _Statuses.of(status[:n], status[n:]), own=self._kept.factor is not None)

    def _set_basis(self, basis: highspy.HighsBasis, statuses: _Statuses | None = None) -> None:
        """Give HiGHS ``basis`` (its :class:`_Statuses` where known); its solution is then no longer that basis's."""
        self.h.setBasis(basis)
        self._ran_at, self._holds = None, statuses

    def _variable_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper bounds of HiGHS's variables (:meth:`_pivots`): the columns', then the rows' logicals'."""
        return (np.concatenate([self.col_lower, -self.row_upper]), np.concatenate([self.col_upper, -self.row_lower]))

    def _factorise(self, basis: highspy.HighsBasis, basic: np.ndarray, at_lower: np.ndarray,
                   held_lower: np.ndarray, statuses: _Statuses | None, own: bool = False) -> bool:
        """Give HiGHS ``basis`` (its :class:`_Statuses` where known) and keep it factorised afresh (its basic
        variables ``basic``, in any order), with the nonbasic columns at lower bounds where ``at_lower`` says so and
        the held rows where ``held_lower`` does; False where HiGHS cannot factorise it as given (it would swap in
        logicals for a singular one). ``own``: factorised by the solver (:class:`_Factor`, its basic variables in
        the order given), not by HiGHS; False where that is singular."""
        self._set_basis(basis, statuses)
        if own:
            factor = _Factor.of(self._matrix()[0], basic)
            if factor is None:
                return False
            self._kept = _KeptBasis(basis, basic, basic >= 0, at_lower, held_lower, self.h.getRunTime(), statuses,
                                    factor=factor)
            return True
        status, order = self.h.getBasicVariables()
        order = np.asarray(order)
        given = np.zeros(len(self.cost) + len(self.row_lower), dtype=bool)
        given[basic] = True                       # row i's logical -1 - i at the end, as numpy counts negatives
        if status == highspy.HighsStatus.kError or len(order) != len(basic) or not np.all(given[order]):
            return False
        self._kept = _KeptBasis(basis, order, order >= 0, at_lower, held_lower, self.h.getRunTime(), statuses)
        return True

    def _matrix(self) -> tuple[sp.csc_matrix, sp.csr_matrix]:
        """``A`` (column-wise) and ``A^T`` (row-wise: the same arrays) for matrix-vector products, without a
        conversion; ``A^T`` of a matrix on the last one's pattern (a re-linearisation's) without a constructor."""
        if self._csr is None:
            a, last = self._a, self._transposed
            if last is not None and last.indices is a.indices and last.indptr is a.indptr:
                self._transposed = with_data(last, a.data)
            else:
                self._transposed = sp.csr_matrix((a.data, a.indices, a.indptr), shape=a.shape[::-1])
            self._csr = (a, self._transposed)
        return self._csr

    # -- solving ------------------------------------------------------------
    def run(self, budget: float | None = None) -> str:
        """Run HiGHS from the current basis; a run that ends other than optimal is repeated.

        First cold (a warm run), then without presolve: only the plain simplex's verdict
        declares the market unsolvable.

        A warm start after many in-place changes can leave HiGHS in a numerically
        troubled basis that stops with status ``Unknown`` where a cold solve is
        optimal (seen at 10,000 buses / 100,000 bids after ~225 warm re-solves);
        only a cold solve's verdict declares the market unsolvable. A run that stalls
        (:data:`STALL_S`) goes straight to the plain simplex, and where that stalls too the
        status is ``error``. ``budget``: CPU seconds the first run may take (an exploratory
        solve's, :data:`EXPLORE_STALL_S`); past them it has stalled too. Returns the status
        string (see :class:`Solution`).
        """
        h = self.h
        warm = h.getBasis().valid
        status = self._guarded_run(budget)
        self.restarted = status not in ("optimal", "time_limit")
        # A time limit is the caller's own limit: solving again would only overrun it.
        if status == "stalled" and self._over_budget:
            # Routine where a branch's start is far outside the feeder's limits (EXPLORE_STALL_S): said at INFO.
            log.info("HiGHS passed an exploratory start's budget of %.2f s CPU (%d simplex iterations); solving "
                     "again without presolve", budget, h.getInfo().simplex_iteration_count)
        elif status == "stalled":
            log.warning("HiGHS stalled (%d simplex iterations in %.1f s); solving again without presolve",
                        h.getInfo().simplex_iteration_count, self._last_run)
        elif status not in ("optimal", "time_limit") and warm:
            # Routine where the loss-aware iteration and its branches meet infeasible linearisations: said at INFO
            # (a stall, which costs its limit, and a run with no verdict at WARNING).
            log.info("warm HiGHS re-solve ended %s; solving again from scratch",
                     h.modelStatusToString(h.getModelStatus()))
            h.clearSolver()
            status = self._guarded_run()
        if status not in ("optimal", "time_limit"):
            # HiGHS's presolve can declare a feasible LP infeasible when its only feasible points
            # sit on a degenerate face (a thermal polygon vertex held exactly by fixed positions,
            # seen in real-time re-clears); the simplex without presolve decides. It starts from the
            # network's slack basis where the model has one (start_from_slack: the same start on every
            # path), not HiGHS's crash. A loss-aware curve meets it at every branch of the floor clearing held
            # at its other side whose LP is infeasible (engine.branches._held_there): on feeders 2, 6 and 7 of
            # `dsomarket territory synth --feeders 8 --buses 1000 --bids 1000 --seed 2` the curves took 0.73-0.92
            # of the time, the same bands to the bit (`python benchmarks/bench_successive_ab.py --base cb461bf
            # --feeder DIR/feeder-000K`).
            if status != "stalled":
                log.info("HiGHS ended %s; solving again without presolve", h.modelStatusToString(h.getModelStatus()))
            h.setOptionValue("presolve", "off")
            h.clearSolver()
            if not self.integer:
                self.start_from_slack()
            status = self._guarded_run()
            h.setOptionValue("presolve", "choose")
            if status == "stalled":
                log.warning("HiGHS stalled again without presolve (%.1f s): no verdict", self._last_run)
                status = "error"
        self._ran_at, self._holds = h.getRunTime(), None
        return status

    def _guarded_run(self, budget: float | None = None) -> str:
        """One HiGHS run under the stall limit (:data:`STALL_S`; an LP's) and the caller's time limit (HiGHS counts
        both on its run clock, which goes on across runs), and ``budget`` CPU seconds where given: its status,
        ``stalled`` where the stall limit or the budget ended it."""
        h = self.h
        start = h.getRunTime()
        # A mixed-integer model (the flexibility auction's) branches for as long as its search needs: no stall limit.
        stall = math.inf if self.integer else start + (
            STALL_S + STALL_S_PER_NONZERO * self._a.nnz if self._longest == 0.0 else
            max(STALL_S, STALL_FACTOR * self._longest))
        h.setOptionValue("time_limit", stall if self.time_limit is None else min(self.time_limit, stall))
        if budget is None:
            h.run()
            self._over_budget = False
        else:
            self._over_budget = self._run_within(budget)
        status = _STATUS.get(h.getModelStatus(), "error")
        self._last_run = h.getRunTime() - start
        if self._over_budget or status == "time_limit" and (self.time_limit is None or stall < self.time_limit):
            return "stalled"
        if status != "time_limit":
            self._longest = max(self._longest, self._last_run)
        return status

    def solve(self, explore: bool = False) -> Solution:
        """Run HiGHS from the basis it holds (:meth:`run`) and read its solution. ``explore``: a start that may lead
        nowhere (a branch of the loss-aware clearing, :mod:`engine.branches`), whose first run gets a CPU budget
        (:data:`EXPLORE_STALL_S`), once this solver has a run that ended in a verdict to size it by."""
        t0 = time.perf_counter()
        budget = (max(EXPLORE_STALL_S, EXPLORE_STALL_FACTOR * self._longest)
                  if explore and not self.integer and self._longest > 0.0 else None)
        status = self.run(budget)
        return self._read(status, time.perf_counter() - t0, int(self.h.getInfo().simplex_iteration_count))

    def _run_within(self, seconds: float) -> bool:
        """Run HiGHS, interrupted once its thread has spent ``seconds`` of CPU (checked at HiGHS's simplex interrupt
        callback); True where that ended the run. A highspy without per-event callbacks runs it plainly (its stall
        limit then stands alone)."""
        event = getattr(self.h, "cbSimplexInterrupt", None)
        if event is None:
            self.h.run()
            return False
        start, over = time.thread_time(), []

        def check(e) -> None:
            # Set either way: HiGHS keeps the flag from call to call, and from run to run.
            e.interrupt(time.thread_time() - start > seconds)
            if e.data_in.user_interrupt:
                over.append(True)

        event.subscribe(check)
        try:
            self.h.run()
        finally:
            event.unsubscribe(check)
        return bool(over) and self.h.getModelStatus() == highspy.HighsModelStatus.kInterrupt

    def _read(self, status: str, elapsed: float, iterations: int) -> Solution:
        """The :class:`Solution` HiGHS holds after a run that ended ``status``."""
        info = self.h.getInfo()
        if status != "optimal":
            n, m = self.model.n_col, self.model.n_row
            nan_c, nan_r = np.full(n, np.nan), np.full(m, np.nan)
            return Solution(status, float("nan"), nan_c, nan_r, nan_r, nan_c, elapsed, iterations)
        sol = self.h.getSolution()
        return Solution(
            status=status,
            objective=float(info.objective_function_value),
            x=_array(sol.col_value),
            row_value=_array(sol.row_value),
            row_dual=_array(sol.row_dual) if sol.dual_valid else np.full(self.model.n_row, np.nan),
            col_dual=_array(sol.col_dual) if sol.dual_valid else np.full(self.model.n_col, np.nan),
            solve_seconds=elapsed,
            iterations=iterations,
        )

    def cost_ranging(self, block: str, index: int) -> tuple[float, float]:
        """Range of one column's cost over which the current basis stays optimal.

        Returns ``(cost_low, cost_high)``; valid after an optimal LP solve.
        """
        col = self.model.var(block).start + index
        status, ranging = self.h.getRanging()
        if not ranging.valid:
            raise RuntimeError("HiGHS ranging is not available for this solve")
        return float(ranging.col_cost_dn.value_[col]), float(ranging.col_cost_up.value_[col])

    def forcing_costs(self, sol: Solution, cols: np.ndarray, up: np.ndarray) -> np.ndarray:
        """The least rise of the objective per unit of forcing each column ``cols[k]``, basic in the optimal basis
        HiGHS holds (``sol``'s), up (``up[k]``) or down from its value, the other nonbasic variables at their bounds:
        the ratio test along its row of the tableau ``B^-1 [A, I]`` (the cheapest nonbasic variable that moves it
        that way, by its reduced cost over its entry), what a nonbasic column's reduced cost is for it. It holds up
        to the first change of basis, and rises from there (the LP's cost of a forced move is convex in it). inf where
        no nonbasic variable moves the column that way; NaN where HiGHS has no factored basis or the column is not
        basic in it. A row's logical is minus its activity (bounds ``[-row_upper, -row_lower]``), its reduced cost
        minus the row's dual. One transposed basis solve (:meth:`_held_basis`) and one product with ``A^T`` per
        column."""
        out = np.full(len(cols), np.nan)
        held = self._held_basis() if len(cols) else None
        if held is None:
            return out
        basic, solve = held
        at = np.full(self.model.n_col, -1)
        at[basic[basic >= 0]] = np.flatnonzero(basic >= 0)
        nonbasic = np.ones(self.model.n_col, dtype=bool)
        nonbasic[basic[basic >= 0]] = False
        logical = np.ones(self.model.n_row, dtype=bool)
        logical[-1 - basic[basic < 0]] = False
        lo, hi, rlo, rhi = self.col_lower, self.col_upper, self.row_lower, self.row_upper
        # Which way each nonbasic variable can move: up from its lower bound, down from its upper one; either way
        # where it is off both (free, or left inside its bounds: a bid the loss-aware iteration pinned there, its
        # bounds given back since); a fixed one not at all. A logical moves up as its row's activity moves down.
        x, act = sol.x, sol.row_value
        col_up = nonbasic & (lo < hi) & (x < hi - PRIMAL_GAP)
        col_down = nonbasic & (lo < hi) & (x > lo + PRIMAL_GAP)
        row_up = logical & (rlo < rhi) & (act > rlo + PRIMAL_GAP)
        row_down = logical & (rlo < rhi) & (act < rhi - PRIMAL_GAP)
        cost = np.concatenate([sol.col_dual, -sol.row_dual])
        can_up, can_down = np.concatenate([col_up, row_up]), np.concatenate([col_down, row_down])
        at_a = self._matrix()[1]
        for k, (c, rising) in enumerate(zip(cols, up)):
            if at[c] < 0:
                continue
            e = np.zeros(self.model.n_row)
            e[at[c]] = 1.0
            z = solve(e, True)
            if z is None:
                continue
            alpha = np.concatenate([at_a @ z, z])        # row at[c] of B^-1 [A, I]
            # Moving variable v by t moves the column by -alpha[v] t: up takes t of the sign opposite alpha's.
            t_up = (-alpha if rising else alpha) > 0.0
            able = (np.abs(alpha) > 1e-9) & np.where(t_up, can_up, can_down)
            rate = np.where(t_up, cost, -cost)[able] / np.abs(alpha[able])
            out[k] = float(rate.min()) if rate.size else math.inf
        return out

    def basis_directions(self, cols: np.ndarray) -> np.ndarray | None:
        """How every column moves per unit increase of each nonbasic column in ``cols``, the basis held.

        Column k is ``e_c - B^{-1} a_c`` on the structural columns (``c = cols[k]``; the basic
        variables absorb the change, other nonbasic ones stay at their bounds): the
        directions along which the reduced costs are the objective's gradient. Valid after
        an optimal solve; None when HiGHS has no factored basis. One basis solve per column: by the kept basis's
        own factors (:class:`_Factor`) where HiGHS holds that basis (no run since), else by HiGHS's factorisation.
        """
        held, a = self._held_basis(), self._matrix()[0]
        if held is None:
            return None
        basic, solve = held
        structural = basic >= 0
        out = np.zeros((self.model.n_col, len(cols)))
        for k, c in enumerate(cols):   # one basis solve per marginal bid, not per element
            rhs = np.zeros(self.model.n_row)
            rhs[a.indices[a.indptr[c]:a.indptr[c + 1]]] = a.data[a.indptr[c]:a.indptr[c + 1]]
            z = solve(rhs, False)
            if z is None:
                return None
            out[basic[structural], k] = -z[structural]
            out[c, k] = 1.0
        return out

    def _held_basis(self) -> tuple[np.ndarray, Callable[[np.ndarray, bool], np.ndarray | None]] | None:
        """The basis HiGHS holds: its basic variables by basis position (column ``j``, or row ``i``'s logical as
        ``-1 - i``) and its basis solves (``solve(rhs, transposed)``, None where one fails): by the kept basis's own
        factors (:class:`_Factor`) where HiGHS holds that basis (no run since), which spares HiGHS factorising it on a
        matrix it has not set up; else by HiGHS's factorisation. None where HiGHS has no factored basis."""
        kept = self._kept
        if kept is not None and kept.factor is not None and kept.run_time == self.h.getRunTime():
            return kept.basic, self._kept_solve
        status, basic = self.h.getBasicVariables()
        if status == highspy.HighsStatus.kError:
            return None
        return np.asarray(basic), self._highs_solve

    def block(self, values: np.ndarray, name: str, rows: bool = False) -> np.ndarray:
        """The slice of a full primal/dual vector that belongs to a named block."""
        blk = self.model.con(name) if rows else self.model.var(name)
        return values[blk.slice]

    def copy(self) -> HighsSolver:
        """A fresh HiGHS model of this one's model with the column bounds in force here (bounds changed in
        place, a fixed interface import say), for a solve that must not disturb this one."""
        probe = HighsSolver(self.model)
        probe.h.changeColsBounds(self.model.n_col, np.arange(self.model.n_col, dtype=np.int32), self.col_lower,
                                 self.col_upper)
        probe.col_lower, probe.col_upper = self.col_lower.copy(), self.col_upper.copy()
        return probe

    def checkpoint(self) -> Checkpoint:
        """Save this solver's state and go on with a copy of its HiGHS model, so that :meth:`rollback` can put back
        exactly what was saved.

        The HiGHS instance holds more than its API can set again: the factorisation of its last run and the order
        of its basic variables (which :meth:`solve_by_basis` and :meth:`basis_directions` read), its edge weights,
        its run clock (which tells a kept basis still held from one that is not). The saved instance is therefore
        not used at all after a checkpoint: solves go to a new one with the same options, model, costs, bounds and
        basis, factorised afresh when it first runs (its kept basis too: :meth:`_kept_optimal`), and the arrays
        changed in place (costs, bounds) are the copy's own."""
        saved = Checkpoint(dict(vars(self)))
        h = highspy.Highs()
        h.passOptions(self.h.getOptions())
        _pass_model(h, self.cost, self.col_lower, self.col_upper, self._a, self.row_lower, self.row_upper,
                    self.model.assemble()[6] if self.integer else None)
        h.setBasis(self.h.getBasis())
        self.h, self._ran_at = h, None
        self.cost, self.col_lower, self.col_upper = self.cost.copy(), self.col_lower.copy(), self.col_upper.copy()
        self.row_lower, self.row_upper = self.row_lower.copy(), self.row_upper.copy()
        if self._kept is not None:
            self._kept = dataclasses.replace(self._kept, run_time=float("nan"))   # not factorised in the copy
        return saved

    def rollback(self, saved: Checkpoint) -> None:
        """Back to the state :meth:`checkpoint` saved (its HiGHS instance, untouched since): every later solve is
        then the one it would have been without the solves in between, to the bit."""
        vars(self).clear()
        vars(self).update(saved.state)

    def relax_feasibility(self, row_penalty: np.ndarray, col_lower_penalty: np.ndarray,
                          col_upper_penalty: np.ndarray) -> np.ndarray | None:
        """Minimum weighted violation of the relaxable rows and bounds (HiGHS feasibilityRelaxation).

        A negative penalty marks a row or bound that must not be relaxed. Returns
        the relaxed primal solution's row values and column values stacked as
        ``(row_value, col_value)`` or None when even the relaxation fails.

        HiGHS 1.16 reports ``kOk`` with an all-zero "solution" when the relaxation
        itself is infeasible (a hard row no relaxable limit can help): the hard rows
        and bounds are checked here, so that such a point is never read as a diagnosis.
        """
        status = self.h.feasibilityRelaxation(1.0, 1.0, 1.0, col_lower_penalty, col_upper_penalty,
                                              row_penalty)
        self._ran_at, self._holds = None, None     # HiGHS holds the relaxation's solution and basis
        if status == highspy.HighsStatus.kError:
            return None
        sol = self.h.getSolution()
        rows, cols = _array(sol.row_value), _array(sol.col_value)
        tol = RELAX_HARD_TOL
        hard_row, hard_lo, hard_up = row_penalty < 0, col_lower_penalty < 0, col_upper_penalty < 0
        broken = (np.any(hard_row & ((rows < self.row_lower - tol) | (rows > self.row_upper + tol)))
                  or np.any(hard_lo & (cols < self.col_lower - tol)) or np.any(hard_up & (cols > self.col_upper + tol)))
        return None if broken else (rows, cols)
