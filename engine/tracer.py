"""The exact parametric tracer of one interval's interface curve ``Q_t(lambda)``.

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

The first basis, at the floor, is the network's slack basis (bids at the bounds their
reduced costs point to, every limit slack) where that is optimal, and otherwise HiGHS's
answer from that start (:meth:`_Probe.start`), a few dual simplex iterations instead of a
cold solve. Between two basis changes the tracer is a parametric simplex method of its own
on that basis: the basis is factorised once (sparse LU of its *core*,
the rows whose logical is nonbasic against the basic columns), the duals are
affine in the price, ``y(lambda) = y0 + lambda z``, and so is every reduced cost,
so all the prices at which a bid switches on or off in that basis come from one
vectorised ratio, sorted. A bid switching is a *bound flip*: it keeps the basis
dual feasible, and the flips' moves of the basic values are solved together and
summed cumulatively, so the first flip after which a basic value (a line, a
voltage, a partly cleared bid, a battery) would leave its bounds is found
without a per-flip solver call or Python loop (only values whose largest rise or
fall within a chunk of flips reaches a bound get their cumulative path). That
flip, or a limit whose dual reaches zero, is a real pivot: the tracer takes it
itself (ratio test, reusing the breaking flip's solved move) and keeps it only
if the new basis is optimal at that price (primal and dual feasible); otherwise
a warm HiGHS solve takes over. A pivot does not factorise the new basis: on a
core of 1,000 rows or more it is an update of the last SuperLU factorisation
(:class:`_Lu`: the basis matrix as ``B0 + U V^T``, solved by the Woodbury
identity with one solve of ``B0``'s core and products with the ``k`` replaced
columns), refactorised every ``_REFACTOR`` pivots; small cores, whose factorisation
costs less than that bookkeeping, are factorised afresh. Those refactorisations, and that of
HiGHS's basis after a solve, keep the column order of the basis they come from (a
left-looking LU with threshold partial pivoting, :meth:`engine.tracerjit.SparseLu.on_columns`:
a tenth of SuperLU's time at 1,000 buses, which orders the columns itself); SuperLU
orders afresh where that fills more than ``_REFILL`` times its own factors. On a 1,000-bus
feeder with 10,000 bids priced to the cent this traces 5,245 steps with one or
two HiGHS solves and some 200 own pivots (``benchmarks/bench_curve.py``). Each
step is located to floating-point accuracy, not to a price grid.

The factorisation is SuperLU's, but its solves, the ratio test over every nonbasic
reduced cost and the check of a chunk of flips are compiled loops
(:mod:`engine.tracerjit`): at that size each pivot was some 5 ms of numpy passes
and SuperLU calls that treat every right-hand side apart.

Every quantity on the curve is a clearing of the full network model, so it is
deliverable; quantities between two steps are deliverable too, because the
feasible interface imports of an LP form an interval, and the re-clear's price
there is the step's price.

"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from dsomarket.engine import losses, tracerjit
from dsomarket.engine.clearing import NodalMarket
from dsomarket.engine.errors import InputError
from dsomarket.engine.network import S_BASE_KVA
from dsomarket.engine.solver import slack_basis, with_data


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
_MAX_STALL = 50
"""Own pivots in a row at one price before a warm HiGHS solve takes over (a guard against cycling)."""
_REFACTOR = 10
"""Pivots taken as updates of one factorised basis (:class:`_Lu`) before the next is factorised afresh:
each adds a column to every solve (8 to 10 measured best at 1,000 buses with 32-flip chunks, 5 % less CPU than
16; 4 and 24 slower: ``benchmarks/bench_tracer_ab.py``)."""
_REFILL = 1.2
"""Most entries of the factors of a basis factorised on a pivot order kept from an earlier one
(:meth:`_Probe._kept_order`), relative to that order's SuperLU factorisation, before SuperLU orders it afresh."""
_UPDATE_MIN = 1000
"""Cores smaller than this (rows) are factorised afresh after every pivot: SuperLU's factorisation of
a small core costs less than the update's bookkeeping."""
_CHUNK = 32
"""Most flips solved together in :meth:`_Probe._flips`: every pass over the chunk's moves (``k x`` basic columns)
then stays in a core's L2 cache at 1,000 buses (32 x 3,159 x 8 bytes, 0.8 MB, against 1.6 MB for 64), and a run
that ends inside a chunk wastes fewer solved flips. 24 to 32 measured best at 1,000 buses / 10,000 bids (10 %
less CPU than 64; ``benchmarks/bench_tracer_ab.py``), 16 slower."""


class _Sample(NamedTuple):
    """A price range ``[low, high]`` on which one import is optimal, with its tangent.

    ``price`` lies in the range (a solved price, or the end of the range a bound
    flip starts at); ``q`` is the import (MW) and ``g`` the bid part of the cost
    (``f(lambda) = g + q lambda`` on the range). Immutable like a frozen dataclass, but
    one is made per bound flip: a tuple is built in C (:meth:`_Probe._flips` makes a run's
    samples with one ``map``), a frozen dataclass field by field in Python.
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
    lu: object = None                      # the core's factorisation (:class:`_Lu`)
    p0_pos: int = -1                       # P0's position among ``structural`` (-1: nonbasic)
    c0: np.ndarray | None = None           # costs of the basic columns with P0's set to 0
    bounded: np.ndarray | None = None      # which basic columns have a finite bound
    r: np.ndarray | None = None            # row activities A x
    a_inactive_structural: tuple | None = None   # A[inactive, structural] as (row, column, value) arrays
    row_pos: np.ndarray | None = None      # per row: position among active (>= 0) or -1 - among inactive


class _Reference:
    """A basis factorised with SuperLU (``B0``), against which the bases pivoted from it are updates (:class:`_Lu`).

    The full basis matrix has a column per basic variable out of ``[A, -I]`` (``-I``: the row
    logicals, ``A x - r = 0``); its *positions* are this basis's structural columns (sorted), then
    the logicals of its inactive rows (sorted). ``B0 u = b`` is one solve with the core's LU:
    ``u_S = core^-1 b_active`` and ``u_I = A[inactive, structural] u_S - b_inactive``.
    ``buffer`` holds ``B0^-1 a`` of the variables pivoted in since, shared by the chain of bases
    that appends to it (``tip`` columns written).
    """

    def __init__(self, lu, structural: np.ndarray, inactive: np.ndarray, row_pos: np.ndarray, a_is: tuple):
        self.lu = lu
        self.structural = structural
        self.inactive = inactive
        self.row_pos = row_pos          # per row: position among the core's rows (>= 0) or -1 - among inactive
        self.a_is = a_is                # A[inactive, structural] as (inactive index, structural index, value)
        self.m = len(row_pos)
        self.buffer = None              # allocated by the first update (small cores never have one)
        self.tip = 0

    def column(self, rows: np.ndarray, vals: np.ndarray) -> np.ndarray:
        """``B0^-1 a`` over the positions, for the column ``a`` of ``[A, -I]`` with nonzeros ``vals`` at ``rows``."""
        n_s = len(self.structural)
        rp = self.row_pos[rows]
        on = rp >= 0
        b = np.zeros(n_s)
        b[rp[on]] = vals[on]
        out = np.empty(self.m)
        out[:n_s] = self.lu.solve(b)
        u_i = _times(self.a_is, self.m - n_s, out[:n_s])
        u_i[-1 - rp[~on]] -= vals[~on]
        out[n_s:] = u_i
        return out


class _Lu:
    """Solves with the core of a basis reached by pivots from a factorised one, ``B = B0 + U V^T`` (Woodbury).

    ``heads`` is the basic variable at each position of the reference ``B0`` (:class:`_Reference`;
    column ``j`` is ``j``, row ``i``'s logical ``n + i``); ``replaced`` the ``k`` positions whose
    variable changed and ``z = B0^-1 [a of their new variables]`` (``m x k``). With ``W = z - E_P``
    and ``M = I + W[P] = z[P]``, ``B^-1 b = B0^-1 b - W M^-1 (B0^-1 b)[P]`` and ``B^-T c =
    B0^-T (c - E_P M^-T W^T c)``: one SuperLU solve of the reference's core and products with ``k``
    columns, instead of a new factorisation per pivot. Only the positions that now hold basic
    columns (``sel``, in column order) and the replaced ones are read, so a core-sized right-hand
    side (the current active rows, sorted) gives a core-sized answer (the current basic columns,
    sorted), as SuperLU's ``solve`` does for a factorised core.
    """

    def __init__(self, ref: _Reference, heads: np.ndarray, replaced: np.ndarray, z: np.ndarray, n_col: int,
                 active: np.ndarray):
        self.ref, self.heads, self.replaced, self.z = ref, heads, replaced, z
        self.shape = (len(active), len(active))
        if not len(replaced):           # the reference itself: its solves go straight to its factors
            return
        n_s0 = len(ref.structural)
        self.n_s0 = n_s0
        rp = ref.row_pos[active]
        self.rp = rp                                            # per active row: its row in B0's core, or not
        self.in_a0 = rp >= 0
        self.a0_idx = rp[self.in_a0]
        i0_pos = n_s0 - 1 - rp[~self.in_a0]                     # active rows that were inactive in B0
        # The positions of the basic columns (column order); those among the reference's inactive logicals that
        # are read (E, held after the first n_s0); and sel, replaced and i0_pos numbered so.
        sel, extra, self.sel_ext, self.p_ext, self.i0_ext = tracerjit.update_positions(
            heads.astype(np.int64, copy=False), n_col, replaced.astype(np.int64, copy=False), i0_pos, n_s0)
        self.extra = extra
        self.n_extra = len(extra)
        if len(extra):      # the reference's A[inactive, structural] on those rows, as (row, column, value)
            row, col, val = ref.a_is
            rank = np.full(ref.m - n_s0, -1)
            rank[extra - n_s0] = np.arange(len(extra))
            on = rank[row] >= 0
            self.g = (rank[row[on]], col[on], val[on])
        if len(replaced):
            # W[sel]^T (rows contiguous, as the compiled solve reads it): z's rows at sel, less the unit
            # entries where a selected position is a replaced one (no m x k comparison matrix).
            self.w_sel_t = tracerjit.w_selected(np.ascontiguousarray(z.T), sel, replaced.astype(np.int64, copy=False),
                                                ref.m)
            self.m_inv = np.linalg.inv(z[replaced])
        self.src = None                 # built by the first transposed solve

    def solve_sparse(self, row: np.ndarray, col: np.ndarray, val: np.ndarray, k: int) -> np.ndarray:
        """``core^-1 b`` for the ``len(active) x k`` matrix ``b`` with nonzeros ``val`` at ``(row, col)``,
        built straight in the reference's row order (a dense right-hand side would be gathered)."""
        ref = self.ref
        none, empty, no_w = np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros((0, 0))
        if not len(self.replaced):
            return tracerjit.sparse_solve(*ref.lu.factors, k, row, col, val, none, none, empty, 0, none, none, empty,
                                          none, none, no_w, no_w).T
        n_s0 = self.n_s0
        rp = self.rp[row]
        on = rp >= 0
        off = ~on
        if self.n_extra:
            g_row, g_col, g_val = self.g
            # Rows now active that were inactive in B0: their logical's position, ``-b`` there.
            ext = np.searchsorted(self.extra, n_s0 - 1 - rp[off])
            x_col, x_val = col[off], -val[off]
        else:
            g_row, g_col, g_val, ext, x_col, x_val = none, none, empty, none, none, empty
        # Transposed (k x m, a flip per row), so that the answer is in Fortran order as SuperLU's own.
        return tracerjit.sparse_solve(*ref.lu.factors, k, rp[on], col[on], val[on], g_row, g_col, g_val,
                                      self.n_extra, ext, x_col, x_val, self.sel_ext, self.p_ext, self.m_inv,
                                      self.w_sel_t).T

    def solve(self, b: np.ndarray, trans: str = "N") -> np.ndarray:
        """``core^-1 b`` (``trans="T"``: ``core^-T b``) for a vector or a matrix of right-hand sides."""
        ref = self.ref
        if not len(self.replaced):
            return ref.lu.solve(b, trans=trans)
        n_s0 = self.n_s0
        tail = b.shape[1:]
        # Fortran order throughout: the sweeps read a Fortran-ordered right-hand side without a copy.
        if trans == "N":
            b0 = np.zeros((n_s0, *tail), order="F")
            b0[self.a0_idx] = b[self.in_a0]
            z = np.empty((n_s0 + self.n_extra, *tail), order="F")
            z[:n_s0] = ref.lu.solve(b0)
            if self.n_extra:
                row, col, val = self.g
                z[n_s0:] = 0.0
                np.add.at(z[n_s0:], row, val.reshape(-1, *[1] * len(tail)) * z[col])
                z[self.i0_ext] -= b[~self.in_a0]
            out = z[self.sel_ext]
            out -= self.w_sel_t.T @ (self.m_inv @ z[self.p_ext])
            return out
        # Transposed: one compiled pass (:func:`engine.tracerjit.solve_t`), the right-hand sides as rows.
        bt = np.ascontiguousarray(b.T if b.ndim == 2 else b.reshape(1, -1), dtype=float)
        if self.n_extra:
            g_row, g_col, g_val = self.g
        else:
            g_row, g_col, g_val = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0)
        if self.src is None:        # per active row: its position in B0's core, or -1 - its extra position
            src = np.empty(self.shape[0], dtype=np.int64)
            src[self.in_a0] = self.a0_idx
            src[~self.in_a0] = -1 - (self.i0_ext - n_s0)
            self.src = src
        yt = tracerjit.solve_t(*ref.lu.factors, bt, self.sel_ext, self.p_ext, self.m_inv, self.w_sel_t,
                               g_row, g_col, g_val, self.n_extra, self.src)
        return yt.T if b.ndim == 2 else yt[0]


class _Pattern:
    """The sparsity pattern of a constraint matrix as the probe reads it: CSC (``A^T``'s CSR) and CSR arrays,
    and where each CSR entry sits in the CSC data, so that a matrix of the same pattern (another linearisation
    of the loss-aware model, :class:`engine.losses.Relinearisation`) is read by one gather."""

    def __init__(self, a_csc: sp.csc_matrix):
        self.shape = a_csc.shape
        self.indptr, self.indices = a_csc.indptr, a_csc.indices
        # The CSR form of the entries' positions: the permutation from CSC to CSR order (exact in floats).
        csr = sp.csc_matrix((np.arange(a_csc.nnz, dtype=float), a_csc.indices, a_csc.indptr),
                            shape=a_csc.shape).tocsr()
        self.csr_indptr, self.csr_indices = csr.indptr, csr.indices
        self.csr_indptr64, self.csr_indices64 = csr.indptr.astype(np.int64), csr.indices.astype(np.int64)
        self.to_csr = csr.data.astype(np.int64)
        self.indptr64 = self.indptr.astype(np.int64)
        self.indices64 = self.indices.astype(np.int64)     # for the compiled reduced costs (:meth:`_Probe._factor`)
        # A and A^T as CSR matrices of this pattern, copied with each linearisation's values (:meth:`matrices`).
        self._a = sp.csr_matrix((csr.data, self.csr_indices, self.csr_indptr), shape=self.shape)
        self._at = sp.csr_matrix((a_csc.data, self.indices, self.indptr), shape=self.shape[::-1])

    def matrices(self, data: np.ndarray) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        """``(A, A^T)`` as CSR matrices of this pattern with ``data`` (``A``'s CSC values): shallow copies of two
        made once, given their values, as SciPy's constructor checks the arrays each time (30 us a matrix; a probe
        is made per re-linearisation of the loss-aware curve, some 200 on an ieee33 curve)."""
        return with_data(self._a, data[self.to_csr]), with_data(self._at, data)

    def holds(self, a_csc: sp.csc_matrix) -> bool:
        """Whether ``a_csc`` (canonical) has this pattern."""
        if a_csc.indices is self.indices and a_csc.indptr is self.indptr:
            return True         # the pattern's own arrays (a re-linearisation's), without reading their addresses
        if all(a.dtype == b.dtype and a.shape == b.shape and a.ctypes.data == b.ctypes.data
               for a, b in ((a_csc.indices, self.indices), (a_csc.indptr, self.indptr))):
            return True         # the same memory: a re-linearisation's, which share the pattern's arrays
        return a_csc.shape == self.shape and np.array_equal(a_csc.indptr, self.indptr) and \
            np.array_equal(a_csc.indices, self.indices)


class _Cores:
    """Bases factorised on the linearisations of one loss-aware market (:mod:`engine.losscurve`), shared by
    the probes made on them, so that a basis met again on another linearisation is refactorised, not factorised.

    Neighbouring fixed points of the loss-aware curve are linearised at nearby AC points and mostly solved on
    the same basis (a walk's bound flips keep it): the core's pattern and its SuperLU pivot order are the same,
    and only the loss terms' values move. For each basis met (by its basic columns and rows) this keeps where
    its core's entries sit in the matrix (:meth:`_Probe._layout`, valid while the matrix's pattern is the same
    :class:`_Pattern`) and its last factorisation, whose pivot order :meth:`engine.tracerjit.SparseLu.refactor`
    reuses for the new values (a fresh factorisation where that order is no longer stable). The factors are a
    function of the walk's history, which the same inputs repeat: the curve stays bit-identical run to run.
    """

    SIZE = 32
    """Bases kept (the least recently used is dropped): a walk returns to a handful at a time."""

    def __init__(self):
        self.pattern: _Pattern | None = None
        self._entries: dict[bytes, list] = {}

    def find(self, structural: np.ndarray, inactive: np.ndarray) -> tuple[bytes, list | None]:
        """The key of a basis and its entry ``[pattern, layout, lu]`` (None: not met yet)."""
        key = np.asarray(structural, dtype=np.int64).tobytes() + b"|" + \
            np.asarray(inactive, dtype=np.int64).tobytes()
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._entries[key] = entry          # the most recently used last
        return key, entry

    def keep(self, key: bytes, entry: list) -> None:
        """Keep ``entry`` ``[pattern, layout, lu]`` for the basis of ``key``."""
        self._entries[key] = entry
        if len(self._entries) > self.SIZE:
            del self._entries[next(iter(self._entries))]


class _Probe:
    """The optimal import of one interval as a function of its ISO price, on a persistent HiGHS model.

    Between two HiGHS solves the optimal basis is fixed, so the duals are affine
    in the price, ``y(lambda) = y0 + lambda z`` with ``z`` one transposed solve
    with P0's unit cost, and so is every nonbasic reduced cost: all the prices
    at which a bid switches on or off in that basis follow from one vectorised
    ratio (:func:`_scan`). Switching a bid (a boxed column) to its other
    bound keeps the basis dual feasible (the parametric simplex's bound flip);
    the flips' effects on the basic values are one multi-right-hand-side solve
    with the basis's own sparse LU factorisation, summed cumulatively, so the
    first flip that would push a basic value (a line, a voltage, a partly
    cleared bid, a battery) past its bound is found without a per-flip call into
    HiGHS. That flip, or a row reaching zero reduced cost, needs a real pivot:
    it is left to a warm HiGHS solve.
    """

    def __init__(self, market: NodalMarket, t: int, model=None, cores: _Cores | None = None):
        self.market = market
        self.cores = cores
        self.solver = market.solver
        self.h = market.solver.h
        self.t = t
        self.col = market.model.var("import_p").start + t
        self.solves = 0
        self.flips = 0
        self.pivots = 0
        self.last_run = 0
        self.last_lu = None     # the factorisation of the last basis (:meth:`_factor`), whose order HiGHS's next may keep
        self.last_duals = None  # :meth:`dual_range`'s last duals (y0, z, A^T y0, A^T z), which :meth:`_factor` may reuse
        self._load(model)

    def _load(self, model=None) -> None:
        """Read the market's matrix and bounds. Again whenever the market swaps its model: the loss-aware
        market re-linearises (:meth:`NodalMarket.converge`) in place, and a basis of the new model
        factorised with the old coefficients is wrong or singular. ``model``: another linearisation of
        the market's model (same blocks, bounds and costs) to factorise bases of, without solving it."""
        self.model = self.market.model if model is None else model
        _, _, _, a, _, _, _ = self.model.assemble()
        known = self.cores.pattern if self.cores is not None else None
        # A re-linearisation shares the pattern's index arrays, sorted when the pattern was made of them: scipy's
        # check of the order (a pass over them, per copy) is then known.
        sorted_ = a.format == "csc" and (known is not None and a.indices is known.indices and
                                         a.indptr is known.indptr or a.has_sorted_indices)
        if sorted_ and (tracerjit.all_nonzero(a.data) if a.data.dtype == np.float64 and a.data.flags.c_contiguous
                        else np.all(a.data != 0.0)):
            a_csc = a               # canonical already (a re-linearisation's): read, never written
        else:
            a_csc = a.tocsc(copy=True)
            a_csc.eliminate_zeros()     # e.g. a bid's reactive coefficient when tan_phi = 0: nothing to solve for
            a_csc.sort_indices()
        # A's CSC arrays are A^T's CSR ones, and its CSR arrays a gather of them by the pattern's permutation
        # (a probe is made per re-linearisation of the loss-aware curve, :mod:`engine.losscurve`, all of one
        # pattern: the conversions were a tenth of its time, then the pattern's analysis was).
        pattern = known if known is not None and known.holds(a_csc) else _Pattern(a_csc)
        if self.cores is not None:
            self.cores.pattern = pattern
        self.pattern = pattern
        data = a_csc.data
        self.a, self.at = pattern.matrices(data)
        # Raw CSC arrays: columns are gathered with numpy (:meth:`_columns`); scipy's sparse
        # fancy indexing costs some 0.5 ms a call in checks and conversions.
        self.indptr, self.indices, self.data = pattern.indptr64, pattern.indices, data
        self.indices64 = pattern.indices64
        s = self.solver
        self.col_range = s.col_lower < s.col_upper
        self.row_range = s.row_lower < s.row_upper
        self.flippable = np.isfinite(s.col_lower) & np.isfinite(s.col_upper) & self.col_range
        self.flippable[self.col] = False
        # Per column: a finite bound (a basis's ``bounded`` is this at its basic columns, one gather per pivot).
        self.col_bounded = np.isfinite(s.col_lower) | np.isfinite(s.col_upper)

    def _a_times(self, x: np.ndarray) -> np.ndarray:
        """``A x``, the row activities (scipy's product with int32 indices: at 1,000 buses, 22 us against 41 us for
        a compiled loop over int64 ones, measured in one process)."""
        return self.a @ x

    def _at_times(self, v: np.ndarray) -> np.ndarray:
        """``A^T v`` for ``v`` of shape ``(rows, k)``, column by column (Fortran order): scipy's product of a
        matrix with a Fortran-ordered block, or a compiled loop over ``k`` values per nonzero, took 3.6x the time
        of ``k`` products with a vector at 1,000 buses (143 us against 39 us for ``k = 2``)."""
        out = np.empty((self.at.shape[0], v.shape[1]), order="F")
        for i in range(v.shape[1]):
            out[:, i] = self.at @ v[:, i]
        return out

    def _columns(self, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Nonzeros of the columns ``cols`` of A: ``(k, row, value)``, ``k`` the position in ``cols``,
        grouped by ``k`` and sorted by row within each column."""
        return tracerjit.columns_of(self.indptr, self.indices64, self.data, np.asarray(cols, dtype=np.int64))

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

    def start(self, price: float) -> tuple[_Sample, _Basis]:
        """:meth:`solve` at ``price`` (a trace's first), from a crash basis instead of cold.

        The crash basis is the network's *slack basis*: every ranged column basic but the bids and
        the shed load, every equality row held and every limit row slack. Its duals at ``price``
        (one transposed solve) put every bid at the bound its reduced cost points to, so it is dual
        feasible; one solve gives its basic values. Where they break no line, voltage or import
        limit, it is optimal and taken as it is (:meth:`_factor`'s check certifies it, primal and
        dual feasible at ``price``, as HiGHS's answer would be); otherwise HiGHS starts from it, a few
        dual simplex iterations instead of a cold solve (at 1,000 buses / 1,000 bids, 31 iterations,
        about a quarter of the cold solve's time). A model whose other blocks (batteries,
        commitments) leave that basis not square, or singular, is solved cold; one that holds a basis
        already (a clearing's, handed over by the caller, or another interval's) is solved warm from it.
        """
        if self.h.getBasis().valid:
            return self.solve(price)
        crash = self._crash(price)
        if crash is None:
            return self.solve(price)
        x, structural, inactive, core, r, optimal, upper = crash
        if optimal:
            q = float(x[self.col])
            cost = self.solver.cost.copy()
            cost[self.col] = price
            g = float(np.sum(cost * x)) - price * q
            basis = self._factor(price, x, g, structural, inactive, check=True, core=core, r=r)
            if basis is not None:
                return _Sample(price, q, g, price - _nearest(basis.down), price + _nearest(basis.up)), basis
        return self.solve_from(crash, price)

    def solve_from(self, crash: tuple, price: float) -> tuple[_Sample, _Basis]:
        """:meth:`solve` at ``price`` with HiGHS started from the slack basis of :meth:`_crash` (``crash``)."""
        _, structural, inactive, _, _, _, upper = crash
        n_row, n = self.a.shape
        status = np.zeros(n, dtype=np.int64)            # 0 lower, 1 basic, 2 upper (HighsSolver.set_basis)
        status[structural] = 1
        status[upper] = 2
        row_status = np.zeros(n_row, dtype=np.int64)
        row_status[inactive] = 1
        self.solver.set_basis(status, row_status, square=True)
        return self.solve(price)

    def _crash(self, price: float) -> tuple | None:
        """The slack basis's basic solution at ``price`` (:meth:`start`): ``(x, structural, inactive, core, r,
        optimal, upper)`` with ``r`` the row activities, ``optimal`` whether it is primal feasible with no
        reduced cost at zero (so optimal as it is) and ``upper`` the nonbasic columns at their upper bounds;
        None where a nonbasic column has an infinite bound or the basis is singular (not square)."""
        s = self.solver
        n_row, n = self.a.shape
        structural, inactive, nonbasic = slack_basis(self.model, self.col_range, self.row_range)
        lo, hi = s.col_lower[nonbasic], s.col_upper[nonbasic]
        if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
            return None
        core = self._core(structural, inactive)
        if core is None:
            return None
        active_mask, _, _, lu = core
        self.last_lu = lu       # HiGHS's basis from it, if it is not optimal, is factorised on its column order
        cost = s.cost.copy()
        cost[self.col] = price
        y = np.zeros(n_row)
        y[active_mask] = lu.solve(cost[structural], trans="T")
        d = cost[nonbasic] - (self.at @ y)[nonbasic]
        upper = d < 0.0
        x = np.zeros(n)
        fixed = ~self.col_range
        x[fixed] = s.col_lower[fixed]
        x[nonbasic] = np.where(upper, hi, lo)
        x[structural] = lu.solve(s.row_lower[active_mask] - (self.a @ x)[active_mask])
        r = self.a @ x
        optimal = not (d == 0.0).any() and _within(x, s.col_lower, s.col_upper) and \
            _within(r, s.row_lower, s.row_upper)
        return x, structural, inactive, core, r, optimal, nonbasic[upper]

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
        # int64, as the compiled kernels take indices: HiGHS's int32 was copied by an ``astype`` at every kernel
        # call of every pivot from this basis (the inactive rows alone are some 8,000 at 1,000 buses).
        basic = np.asarray(basic, dtype=np.int64)
        basis = self._factor(price, x, g, np.sort(basic[basic >= 0]), np.sort(-basic[basic < 0] - 1),
                             prior=None if self.last_lu is None else (self.last_lu, -1, -1))
        if basis is None:
            raise RuntimeError("interface curve: HiGHS's optimal basis is singular to the tracer")
        return basis

    def _layout(self, structural: np.ndarray, inactive: np.ndarray) -> tuple | None:
        """Where a basis's rows and columns sit: ``(active_mask, row_pos, a_inactive_structural, (indptr, row, at),
        active, heads)`` with the fourth the core's nonzeros (``A[active, structural]`` as CSC pointers by position
        among the basic columns and ``row`` among the active rows), each value given by ``at``, its index into the
        CSC data (so the layout is a function of the pattern, :class:`_Cores`), as is the third's; ``active`` the
        core's rows and ``heads`` its :class:`_Lu` heads; None when the core is not square."""
        n_row = self.a.shape[0]
        if n_row - len(inactive) != len(structural):
            return None
        row_pos = tracerjit.row_positions(np.asarray(inactive, dtype=np.int64), n_row)
        is_row, is_k, is_at, indptr, pos, at = tracerjit.core_layout(self.indptr, self.indices64,
                                                                     np.asarray(structural, dtype=np.int64), row_pos)
        # With the core's rows and its :class:`_Lu` heads (basic columns, then the inactive rows' logicals).
        return row_pos >= 0, row_pos, (is_row, is_k, is_at), (indptr, pos, at), np.flatnonzero(row_pos >= 0), \
            np.concatenate([structural, self.a.shape[1] + inactive])

    def _relayout(self, basis: _Basis, structural: np.ndarray, inactive: np.ndarray, entering: int,
                  leaving: int) -> tuple | None:
        """:meth:`_layout`'s first three of the basis one pivot (``entering`` for ``leaving``, numbered as in
        :meth:`_update`) from ``basis``: its ``A[inactive, structural]`` is ``basis``'s without the leaving
        column or row and with the entering one's entries, re-indexed."""
        n_row, n = self.a.shape
        n_active = n_row - len(inactive)
        if n_active != len(structural):
            return None
        if inactive is basis.inactive:          # a column for a column: the rows keep their places
            row_pos = basis.row_pos
            active_mask = row_pos >= 0
        else:
            row_pos = tracerjit.row_positions(np.asarray(inactive, dtype=np.int64), n_row)
            active_mask = row_pos >= 0
        # The kept entries re-indexed in one compiled pass: positions past a deleted column or row move down
        # one, those at or past an inserted one up one.
        drop_col = int(np.searchsorted(basis.structural, leaving)) if leaving < n else -1
        drop_row = int(np.searchsorted(basis.inactive, leaving - n)) if leaving >= n else -1
        add_col = int(np.searchsorted(structural, entering)) if entering < n else -1
        add_row = int(np.searchsorted(inactive, entering - n)) if entering >= n else -1
        if entering < n:
            _, rows, vals = self._columns(np.array([entering]))
            on = row_pos[rows] < 0
            new_r, new_c, new_v = -1 - row_pos[rows[on]], np.full(int(on.sum()), add_col), vals[on]
        else:
            span = slice(self.a.indptr[entering - n], self.a.indptr[entering - n + 1])
            cols, vals = self.a.indices[span], self.a.data[span]
            at = np.minimum(np.searchsorted(structural, cols), len(structural) - 1)
            on = structural[at] == cols
            new_r, new_c, new_v = np.full(int(on.sum()), add_row), at[on], vals[on]
        i64 = np.int64
        return active_mask, row_pos, tracerjit.reindex(*basis.a_inactive_structural, drop_row, add_row, drop_col,
                                                       add_col, new_r.astype(i64, copy=False),
                                                       new_c.astype(i64, copy=False),
                                                       np.ascontiguousarray(new_v, dtype=float))

    def _core(self, structural: np.ndarray, inactive: np.ndarray, prior: tuple | None = None) -> tuple | None:
        """The basis's core (:class:`_Basis`) factorised: ``(active_mask, row_pos, a_inactive_structural, lu)``
        with ``lu`` an :class:`_Lu` without updates; None when it is not square or singular.

        ``prior``: ``(lu, entering, leaving)`` when the basis is near the basis of the :class:`_Lu` ``lu`` (one
        pivot, ``entering`` for ``leaving``, numbered as in :meth:`_update`; or -1, -1: the one HiGHS reached
        from it): the core is then factorised on the column order of ``lu``'s reference (:meth:`_kept_order`),
        without SuperLU's column ordering, where it fills no more than ``_REFILL`` times the reference's factors."""
        if self.cores is None:
            key, entry = None, None
        else:
            key, entry = self.cores.find(structural, inactive)
        if entry is not None and entry[0] is self.pattern:
            places = entry[1]
        else:
            places = self._layout(structural, inactive)
            if places is None:
                return None
        # Rows keep their order under row_pos, so the core's columns come out sorted (canonical CSC).
        active_mask, row_pos, (is_row, is_k, is_at), (indptr, pos, at), active, heads = places
        a_inactive_structural = (is_row, is_k, self.data[is_at])
        n = len(structural)
        val = self.data[at]
        # A basis met on another linearisation: its pivot order serves these values, unless no longer stable.
        lu = entry[2].refactor(indptr, pos, val) if entry is not None else None
        if lu is None and prior is not None:
            ref_lu = prior[0].ref.lu
            lu = ref_lu.on_columns(indptr, pos, val, *self._kept_order(*prior, structural, row_pos))
            if lu is not None and lu.nnz > _REFILL * ref_lu.fresh_nnz:
                lu = None       # the order has drifted from a good one for this basis: SuperLU's afresh
        if lu is None:
            try:
                lu = tracerjit.SparseLu(sp.csc_matrix((val, pos, indptr), shape=(n, n)), permc_spec="COLAMD",
                                        options={"SymmetricMode": True})
            except RuntimeError:            # singular: a pivot the tracer should not have taken
                return None
        if key is not None:
            self.cores.keep(key, [self.pattern, places, lu])
        ref = _Reference(lu, structural, inactive, row_pos, a_inactive_structural)
        return active_mask, row_pos, a_inactive_structural, _Lu(ref, heads, np.zeros(0, dtype=np.int64),
                                                                np.zeros((ref.m, 0)), self.a.shape[1], active)

    def _kept_order(self, lu: _Lu, entering: int, leaving: int, structural: np.ndarray,
                    row_pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A column order and preferred pivot rows ``(col_of, prefer)`` (:meth:`engine.tracerjit.SparseLu.on_columns`)
        for the core of the basis ``structural`` near ``lu``'s (one pivot, ``entering`` for ``leaving``, or -1, -1),
        kept from ``lu``'s reference.

        Each step of the reference's order pairs a core row with a position of the basis (:class:`_Lu`'s
        ``heads``). A position that holds a column still basic keeps its step (an entering column takes the
        leaving one's, as in the update it replaces), preferring the step's row while that is in the core; the
        other basic columns come last. The partial pivoting pairs the rows left over."""
        ref = lu.ref
        return tracerjit.kept_order(lu.heads.astype(np.int64, copy=False), ref.lu.col_of(), ref.lu.factors[7],
                                    np.flatnonzero(ref.row_pos >= 0), np.asarray(structural, dtype=np.int64),
                                    entering, leaving, row_pos, self.a.shape[1])

    def _update(self, basis: _Basis, entering: int, leaving: int, structural: np.ndarray,
                inactive: np.ndarray) -> tuple | None:
        """The core (as :meth:`_core`) of the basis ``basis`` becomes when variable ``entering`` replaces
        ``leaving`` (column ``j`` is ``j``, row ``i``'s logical ``n + i``), as an update of ``basis``'s
        factorisation (:class:`_Lu`); None when a fresh factorisation is due or the update is ill-conditioned."""
        lu = basis.lu
        k = len(lu.replaced)
        if k >= _REFACTOR or len(structural) < _UPDATE_MIN:
            return None
        layout = self._relayout(basis, structural, inactive, entering, leaving)
        if layout is None:
            return None
        ref, n = lu.ref, self.a.shape[1]
        if entering < n:
            _, rows, vals = self._columns(np.array([entering]))
        else:
            rows, vals = np.array([entering - n]), np.array([-1.0])
        col = ref.column(rows, vals)
        p = int(np.flatnonzero(lu.heads == leaving)[0])
        heads = lu.heads.copy()
        heads[p] = entering
        hit = np.flatnonzero(lu.replaced == p)
        replaced = lu.replaced
        if len(hit):
            z = lu.z.copy()
            z[:, hit[0]] = col
        elif ref.tip == k and (k == 0 or lu.z.base is ref.buffer):   # the chain's newest basis: append in place
            if ref.buffer is None:
                ref.buffer = np.empty((ref.m, _REFACTOR), order="F")
            ref.buffer[:, k] = col
            ref.tip = k + 1
            z, replaced = ref.buffer[:, :k + 1], np.append(replaced, p)
        else:
            z, replaced = np.column_stack([lu.z, col]), np.append(replaced, p)
        active_mask, row_pos, a_inactive_structural = layout
        try:
            new = _Lu(ref, heads, replaced, z, n,
                      basis.active if inactive is basis.inactive else np.nonzero(active_mask)[0])
        except np.linalg.LinAlgError:
            return None
        if not np.abs(new.m_inv).max() <= 1e10:        # (also NaN: one pass, no isfinite mask)
            return None
        return active_mask, row_pos, a_inactive_structural, new

    def _factor(self, price: float, x: np.ndarray, g: float, structural: np.ndarray, inactive: np.ndarray,
                check: bool = False, core: tuple | None = None, r: np.ndarray | None = None,
                prior: tuple | None = None, duals: tuple | None = None) -> _Basis | None:
        """The :class:`_Basis` of basic columns ``structural`` and basic row logicals ``inactive`` at ``price``.

        With ``check`` (a basis reached by the tracer's own pivot, not by HiGHS),
        None unless it is primal feasible (``x`` within bounds, the active rows
        held) and dual feasible at ``price`` (no nonbasic reduced cost of the
        wrong sign), i.e. optimal there. ``core``: :meth:`_core` of the same basis, when
        already factorised; ``r``: the row activities ``A x``, when already known; ``prior``: :meth:`_core`'s;
        ``duals``: :meth:`dual_range`'s ``(y0, z, A^T y0, A^T z)`` of the same basis and core, when already solved
        (P0 basic): the duals at ``price`` are then ``y0 + price z``, without another solve.
        """
        s = self.solver
        n_row = self.a.shape[0]
        r = self._a_times(x) if r is None else r
        core = core or self._core(structural, inactive, prior)
        if core is None:
            return None
        active_mask, row_pos, a_inactive_structural, lu = core
        self.last_lu = lu
        active = np.nonzero(active_mask)[0]
        cost = s.cost.copy()
        cost[self.col] = price
        pos = int(np.searchsorted(structural, self.col))
        p0_basic = pos < len(structural) and structural[pos] == self.col
        # The duals y and, with P0 basic, their change z per unit of price: one solve of both.
        if duals is not None and p0_basic:
            y0, z, at_y0, at_z = duals    # dual_range's own solve at this basis: y = y0 + price z
            yz = np.column_stack([y0 + price * z, z])
        else:
            rhs = np.zeros((len(structural), 2 if p0_basic else 1), order="F")
            rhs[:, 0] = cost[structural]
            if p0_basic:
                rhs[pos, 1] = 1.0
            yz = np.zeros((n_row, rhs.shape[1]), order="F")
            yz[active] = lu.solve(rhs, trans="T")
        y = yz[:, 0]
        nb_cols = self.col_range.copy()
        nb_cols[structural] = False
        if duals is not None and p0_basic:
            d, alpha = cost - (at_y0 + price * at_z), at_z
        elif p0_basic:
            # The nonbasic columns' reduced costs ``c - A^T y`` and rates ``A^T z`` in one compiled pass (the
            # basic columns' are never read): two sparse products over every column and a subtraction before.
            d, alpha = tracerjit.reduced_costs(self.indptr, self.indices64, self.data, y, yz[:, 1], cost, nb_cols)
        else:
            d, alpha = cost - self._at_times(yz)[:, 0], None
        nb_rows = active_mask & self.row_range
        # With ``check``: optimal at ``price``, i.e. basic values within bounds and, in the scans, nonbasic
        # reduced costs of the right sign (a pivot moves nothing nonbasic off the bound it sits at).
        d_tol = _DUAL_TOL * max(1.0, abs(price)) if check else None
        i64 = np.int64
        if check and not (tracerjit.within_at(x, s.col_lower, s.col_upper, structural.astype(i64, copy=False),
                                              _PRIMAL_TOL)
                          and tracerjit.within_at(r, s.row_lower, s.row_upper, inactive.astype(i64, copy=False),
                                                  _PRIMAL_TOL)):
            return None
        cols = _scan(d, alpha, x, s.col_lower, s.col_upper, nb_cols, d_tol)
        rows = _scan(y, -yz[:, 1] if p0_basic else None, r, s.row_lower, s.row_upper, nb_rows, d_tol) \
            if cols is not None else None
        if rows is None:
            return None
        if not p0_basic:  # P0 nonbasic: at a limit, or fixed
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
        (cu, cd), (ru, rd) = cols, rows
        c0 = cost[structural].copy()
        c0[pos] = 0.0
        bounded = self.col_bounded[structural]
        return _Basis(price, x, g, _merge_events(cu, ru), _merge_events(cd, rd), structural, active, inactive,
                      lu, int(pos), c0, bounded, r, a_inactive_structural, row_pos)

    def settle(self, x: np.ndarray, structural: np.ndarray, inactive: np.ndarray,
               prior: tuple | None = None) -> tuple | None:
        """The basic solution of a basis on this probe's matrix, nonbasic columns held at their values in ``x``.

        Each row whose logical is nonbasic is held at the bound nearest its activity (an equality's
        value, a binding limit), and the basic columns solved for: ``(x, core)`` with ``core`` the
        factorised basis (:meth:`_core`, ``prior`` as there), or None when it is singular or leaves a bound
        by more than the primal tolerance; with the row activities ``A x`` of that ``x`` (for :meth:`dual_range`
        and :meth:`_factor`, which would form them again).
        """
        s = self.solver
        core = self._core(structural, inactive, prior)
        if core is None:
            return None
        active_mask, _, _, lu = core
        rest = x.copy()
        rest[structural] = 0.0
        # The active rows' bounds held and A rest there, in one compiled pass (two full products and a dozen
        # numpy passes before, the same bits).
        rhs, ok = tracerjit.held_rhs(self.pattern.csr_indptr64, self.pattern.csr_indices64, self.a.data, x, rest,
                                     active_mask, s.row_lower, s.row_upper)
        if not ok:
            return None
        out = rest
        out[structural] = lu.solve(rhs)
        r = self.a @ out
        if not (tracerjit.within(out, s.col_lower, s.col_upper, _PRIMAL_TOL) and
                tracerjit.within(r, s.row_lower, s.row_upper, _PRIMAL_TOL)):
            return None
        return out, core, r

    def dual_range(self, x: np.ndarray, structural: np.ndarray, core: tuple,
                   r: np.ndarray | None = None) -> tuple[float, float] | None:
        """The ISO prices ``[low, high]`` at which the basis ``structural`` (factorised as ``core``) with primal
        point ``x`` is optimal: every nonbasic reduced cost and active row dual of the right sign.

        Duals are affine in the price (P0 basic): ``y = y0 + lambda z``. A nonbasic column held
        off its bounds (a bid pinned inside its quantity) needs a zero reduced cost, which fixes the
        price (``low == high``, within ``losses.MARGINAL_TOL``). None when no price is left, or
        when P0 is nonbasic. ``r``: the row activities ``A x``, when already known (:meth:`settle`'s).
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
        basic = np.zeros(len(x), dtype=bool)
        basic[structural] = True
        r = self.a @ x if r is None else r
        at_y0, at_z = tracerjit.times_two(self.indptr, self.indices64, self.data, y0, z)    # A^T y0, A^T z
        self.last_duals = (y0, z, at_y0, at_z)      # the duals at any price, for :meth:`_factor` of this basis
        # f(lambda) = d0 + lambda slope: reduced costs of nonbasic columns, duals of active rows. At a lower bound
        # f >= 0 (the bid stays out), at an upper f <= 0; inside f = 0 (within losses.MARGINAL_TOL): one compiled
        # pass (the vectorised form's concatenations and masks were most of this at 33 buses).
        low, high, held = tracerjit.price_range(s.cost, at_y0, at_z, y0, z, x, r, s.col_lower, s.col_upper,
                                                s.row_lower, s.row_upper, basic, active_mask, _PRIMAL_TOL, _DUAL_TOL,
                                                losses.MARGINAL_TOL, _ALPHA_TOL)
        if low > high:
            return None
        if len(held):                   # the price at which the held bids' reduced costs vanish
            # (one held bid, mostly: a stretch's pin; numpy's median of one value is that value, at 30 us)
            price = float(held[0]) if len(held) == 1 else float(np.median(held))
            return price, price
        return float(low), float(high)

    def chain(self, start: _Sample, basis: _Basis, rising: bool, limit: float) -> list[_Sample]:
        """Samples reached from ``start`` by bound flips and the tracer's own pivots, towards ``limit`` (exclusive).

        After the flips of a basis (:meth:`_flips`), the event that ends them is
        taken as a primal simplex pivot at its price: the entering variable (the
        bid whose flip breaks a bound, or a row whose dual reaches zero) moves
        until the first basic variable reaches a bound (ratio test), which
        leaves. The new basis is factorised and kept only if it is optimal at that
        price (:meth:`_factor`'s ``check``); otherwise, or after too many pivots that make no
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
        kind, j, price, x, d_s, r_ina = brk
        s = self.solver
        st, ina = basis.structural, basis.inactive
        if kind == 0:
            lo_e, hi_e, val = s.col_lower[j], s.col_upper[j], x[j]
        else:               # an active row: the flips moved the basic columns, not its activity
            lo_e, hi_e, val = s.row_lower[j], s.row_upper[j], basis.r[j]
        sigma = 1.0 if (math.isfinite(lo_e) and abs(val - lo_e) <= abs(val - hi_e)) else -1.0
        if kind == 0:
            a_j = np.zeros(self.a.shape[0])
            _, rows, vals = self._columns(np.array([j]))
            a_j[rows] = vals
            if d_s is None:             # (a flip that breaks a bound comes with its move, solved already)
                pos = basis.row_pos[rows]
                on = pos >= 0
                d_s = basis.lu.solve_sparse(pos[on], np.zeros(int(on.sum()), dtype=np.int64), -sigma * vals[on],
                                            1)[:, 0]
            d_r = _times(basis.a_inactive_structural, len(ina), d_s) + sigma * a_j[ina]
        else:                           # the row's unit column: one compiled sparse solve
            d_s = basis.lu.solve_sparse(basis.row_pos[[j]], np.zeros(1, dtype=np.int64), np.array([sigma]), 1)[:, 0]
            d_r = _times(basis.a_inactive_structural, len(ina), d_s)
        own = hi_e - lo_e
        # Ratio test over the basic values that move (columns first, then rows, each by index): one compiled pass.
        i64 = np.int64
        leave, step, bound = tracerjit.ratio_test(d_s, d_r, st.astype(i64, copy=False), ina.astype(i64, copy=False), x,
                                                  r_ina, s.col_lower, s.col_upper, s.row_lower, s.row_upper, 1e-9)
        if leave < 0 or step >= own:
            return None
        x = x.copy()
        x[st] += step * d_s
        if kind == 0:
            x[j] += sigma * step
        structural, inactive = st, ina
        n = self.a.shape[1]
        if leave < len(st):                     # a basic column reaches a bound and leaves
            x[st[leave]] = bound
            structural = _without(st, leave)
            leaving = int(st[leave])
        else:                                   # a basic row reaches a bound: it becomes active
            inactive = _without(ina, leave - len(st))
            leaving = n + int(ina[leave - len(st)])
        if kind == 0:
            structural = _with(structural, j)
        else:
            inactive = _with(inactive, j)
        g = float(np.sum(s.cost * x)) - s.cost[self.col] * x[self.col]
        entering = j if kind == 0 else n + j
        core = self._update(basis, entering, leaving, structural, inactive)
        fresh = False
        if core is None:                        # refactorised, on the pivot order kept where it serves
            core = self._core(structural, inactive, (basis.lu, entering, leaving))
            if core is None:
                return None
            fresh = core[3].ref.lu.fresh
        r = self._a_times(x)
        nxt = self._factor(price, x, g, structural, inactive, check=True, core=core, r=r)
        if nxt is None and not fresh:           # not optimal as updated: SuperLU's factorisation decides
            nxt = self._factor(price, x, g, structural, inactive, check=True, r=r)
        if nxt is None:
            return None
        q = float(x[self.col])
        if rising:
            high = price + _nearest(nxt.up)
            return _Sample(price, q, g, price, high), nxt
        low = price - _nearest(nxt.down)
        return _Sample(price, q, g, low, price), nxt

    def _flips(self, basis: _Basis, rising: bool, limit: float,
               most: int | None = None) -> tuple[list[_Sample], tuple | None]:
        """Samples reached by bound flips alone from ``basis``, and the event that ends them.

        The flips are the basis's blocking columns in price order up to the first
        row event or non-flippable column. Their moves of the basic columns are
        solved together (``core^-1 A[active, flips]``, in chunks) and summed
        cumulatively; the run stops before the first flip after which any basic
        column or basic row activity would lie outside its bounds. Import and
        tangent of every sample are cumulative sums too. The ending event is
        ``(kind, index, price, x, direction, r)`` with ``x`` the point after the valid
        flips, ``direction`` the basic columns' move per unit of a flip that breaks
        a bound (None for other events) and ``r`` the basic rows' activities at ``x``
        (summed flip by flip, as the bounds were checked), or None at ``limit`` or when nothing blocks.
        ``most``: at most that many flips are solved, the run then ending as at ``limit`` (for a
        caller that takes only the first few: the loss-aware walk, :mod:`engine.losscurve`).
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
        capped = most is not None and n_run > most
        if capped:
            n_run = most
        x = basis.x
        cols = idx[:n_run]
        lo, hi = s.col_lower[cols], s.col_upper[cols]
        steps = np.where(x[cols] - lo <= hi - x[cols], hi - lo, lo - hi)
        st, ina = basis.structural, basis.inactive
        # The basic columns with a finite bound (not line flows) and the basic rows: values, bounds, and how far
        # outside a bound HiGHS left them (within its tolerance: they may stay there, no further).
        i64 = np.int64
        bounded, x_b, lo_b, hi_b, allow_b, r_now, lo_r, hi_r, allow_r = tracerjit.flip_bounds(
            basis.bounded, st.astype(i64, copy=False), ina.astype(i64, copy=False), x, basis.r, s.col_lower,
            s.col_upper, s.row_lower, s.row_upper)
        moved = np.zeros(len(st))                     # basic columns' change by the flips so far
        r_cur = r_now.copy()                          # basic rows' activities after the flips so far
        is_row, is_col, is_val = basis.a_inactive_structural
        valid = n_run
        d_break = None
        dq = np.zeros(n_run)
        dg = np.zeros(n_run)
        # The first chunk is sized by the previous run: flips solved past the run's end are wasted.
        begin, size = 0, max(8, min(_CHUNK, self.last_run + 4))
        while begin < n_run:
            end = min(n_run, begin + size)
            chunk, step = cols[begin:end], steps[begin:end]
            k = len(chunk)
            ent, row, val = self._columns(chunk)
            pos = basis.row_pos[row]                      # >= 0: active row; < 0: -1 - inactive row
            on = pos >= 0
            # One flip per row: the solve's columns, transposed (contiguous rows, as the kernel wants;
            # both of :meth:`_Lu.solve_sparse`'s answers are Fortran-ordered, so this copies nothing). The
            # steps scale the right-hand side's few nonzeros rather than the solved columns.
            move = np.ascontiguousarray(basis.lu.solve_sparse(pos[on], ent[on], val[on] * -step[ent[on]], k).T)
            # The flipped columns' own coefficients in basic rows (resource rows; none for a plain bid).
            off = ~on
            bad = tracerjit.first_break(move, moved, bounded, x_b, lo_b, hi_b, allow_b, is_row, is_col, is_val,
                                        r_cur, lo_r, hi_r, allow_r, ent[off], -1 - pos[off],
                                        val[off] * step[ent[off]])
            dq[begin:end] = move[:, basis.p0_pos]
            dg[begin:end] = step * s.cost[chunk] + move @ basis.c0
            if bad < k:
                valid = begin + bad
                # The breaking flip's move per unit of its column (its pivot's direction, away from its bound).
                d_break = move[bad] / (hi[valid] - lo[valid])
                break
            begin, size = end, min(size * 2, _CHUNK)
        self.flips += valid
        self.last_run = valid
        brk = None
        if valid < len(delta) and not beyond[valid] and not (capped and valid == n_run):
            # The event that ends the run: a flip that breaks a bound, a row, or a column that cannot flip.
            x_new = x.copy()
            x_new[st] += moved
            x_new[cols[:valid]] += steps[:valid]
            brk = (int(kind[valid]), int(idx[valid]), float(prices[valid]), x_new, d_break, r_cur)
        q = float(x[self.col]) + np.cumsum(dq[:valid])
        g = basis.g + np.cumsum(dg[:valid])
        at = prices[:valid]
        nxt = np.empty(valid)         # each sample's next price (inf past the last): not np.append's copy of all
        nxt[:valid - 1] = prices[1:valid]
        if valid:
            nxt[valid - 1] = prices[valid] if valid < len(prices) else sign * math.inf
        low, high = (at, nxt) if rising else (nxt, at)
        out = list(map(_Sample._make, zip(at.tolist(), q.tolist(), g.tolist(), low.tolist(), high.tolist())))
        return out, brk


def _times(coo: tuple, n_rows: int, v: np.ndarray) -> np.ndarray:
    """``M @ v`` for ``M`` given as ``(row, column, value)`` arrays with ``n_rows`` rows (no sparse matrix
    object: scipy's constructors cost more than the product on the tracer's few inactive-row entries)."""
    row, col, val = coo
    return tracerjit.coo_times(np.asarray(row, dtype=np.int64), np.asarray(col, dtype=np.int64), val, n_rows,
                               np.ascontiguousarray(v, dtype=float))


def _without(a: np.ndarray, i: int) -> np.ndarray:
    """``a`` without its entry at position ``i`` (``np.delete``'s answer; its argument handling was 15 us of a pivot)."""
    return np.concatenate((a[:i], a[i + 1:]))


def _with(a: np.ndarray, j: int) -> np.ndarray:
    """The sorted ``a`` with ``j`` inserted in order (``np.insert`` at ``np.searchsorted``; that was 40 us a pivot)."""
    i = int(np.searchsorted(a, j))
    return np.concatenate((a[:i], np.array([j], dtype=a.dtype), a[i:]))


def _within(value, lower, upper) -> bool:
    """Whether every value lies within its bounds, within the primal tolerance."""
    return not (np.any(value < lower - _PRIMAL_TOL) or np.any(value > upper + _PRIMAL_TOL))


def _scan(d, alpha, value, lower, upper, nonbasic, d_tol=None):
    """Price changes at which nonbasic reduced costs ``d - delta alpha`` turn infeasible.

    ``nonbasic`` marks the nonbasic variables with a range (``lower < upper``; a fixed one is
    feasible at any reduced cost). Returns ``(up, down)``: arrays ``(delta, index)`` for a rising
    and a falling price (empty without ``alpha``). With ``d_tol``, None unless every reduced cost
    has the right sign within it: at a lower bound ``d >= 0``, at an upper one ``d <= 0``, off
    both ``d = 0``; on both (a range narrower than the primal tolerance) any. One compiled pass
    (:func:`engine.tracerjit.scan`): in numpy it was some 25 passes over every column and row per pivot.
    """
    c = np.ascontiguousarray     # one compiled specialisation: contiguous arrays
    ok, up_delta, up_index, dn_delta, dn_index = tracerjit.scan(
        c(d), np.zeros(0) if alpha is None else c(alpha), c(value), c(lower), c(upper), c(nonbasic),
        0.0 if d_tol is None else d_tol, d_tol is not None, _ALPHA_TOL, _PRIMAL_TOL)
    return ((up_delta, up_index), (dn_delta, dn_index)) if ok else None


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
    first, basis = probe.start(floor)
    samples = [first, *probe.chain(first, basis, True, cap)]
    if samples[-1].high < cap:
        last, basis = probe.solve(cap)
        samples += [*reversed(probe.chain(last, basis, False, samples[-1].price)), last]
    # Consecutive pairs are settled left to right: a list's pairs at once (:func:`_pair_steps`) up to the
    # first that needs a solve; its split (:func:`_split`) is settled next, then the rest of the list.
    stack = [samples]
    steps, after = [], []          # per settled pair: its step (NaN: one import on the pair), the import past it
    while stack:
        seq = stack.pop()
        # Columns: price, q, g, low, high (:class:`_Sample`); read as one flat run of floats (np.array walks
        # each tuple as a sequence: 0.8 ms for 1,000 samples against 0.1 ms).
        arr = np.fromiter(itertools.chain.from_iterable(seq), dtype=float, count=5 * len(seq)).reshape(-1, 5)
        step, open_ = _pair_steps(arr[:-1], arr[1:])
        k = int(np.argmax(open_)) if open_.any() else len(step)
        steps.append(step[:k])
        after.append(arr[1:k + 1, 1])
        if k < len(step):
            stack.append(seq[k + 1:])
            stack.append(_split(probe, seq[k], seq[k + 1], max_solves))
    # Steps found through different bases may differ by rounding: closer than the price tolerance they are
    # one step, and the sliver between them is no band; equal neighbours are then joined (:func:`_merge_equal`).
    lo, hi, q = tracerjit.staircase(np.concatenate(steps), np.concatenate(after), float(floor), float(cap),
                                    float(samples[0].q), P_REL_TOL, Q_TOL_MW)
    return list(zip(lo.tolist(), hi.tolist(), (q * S_BASE_KVA).tolist()))


def _pair_steps(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The step between each pair of neighbouring samples ``a[i]``, ``b[i]`` (rows ``(price, q, g, low, high)``):
    ``(step, open)`` with the step's price, NaN where one import holds on the whole pair (Q is monotone), and
    ``open`` where neither basis's range nor the tangents settle it, so a solve must (:func:`_split`)."""
    a_price, a_q, a_g, a_high = a[:, 0], a[:, 1], a[:, 2], a[:, 4]
    b_price, b_q, b_g, b_low = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    dq = a_q - b_q
    flat = dq <= Q_TOL_MW
    with np.errstate(divide="ignore", invalid="ignore"):
        lam = (b_g - a_g) / dq
    cert = CERT_REL_TOL * np.maximum(1.0, np.maximum(np.abs(a_high), np.abs(b_low)))
    # a's basis is optimal up to a.high, b's from b.low: where the two meet, one step between them
    # (located by the ratio tests, which are more accurate than the tangents).
    met = a_high >= b_low - cert
    ranged = np.minimum(np.minimum(np.maximum(np.maximum(lam, np.minimum(a_high, b_low)), a_price),
                                   np.maximum(a_high, b_low)), b_price)
    tol = P_REL_TOL * np.maximum(1.0, np.abs(lam))
    at_a = lam <= a_price + tol         # f on b's tangent back to a: the step is at a
    at_b = lam >= b_price - tol
    step = np.where(met, ranged, np.where(at_a, a_price, np.where(at_b, b_price, np.nan)))
    step[flat] = np.nan
    return step, ~flat & ~met & ~at_a & ~at_b


def _split(probe: _Probe, a: _Sample, b: _Sample, max_solves: int) -> list[_Sample]:
    """Samples from ``a`` to ``b`` (both included) with a solve between them and the flips and pivots either side."""
    if probe.solves >= max_solves:
        raise RuntimeError(f"interface curve: more than {max_solves} solves in interval {probe.t}; "
                           "the LP is numerically troubled")
    lam = (b.g - a.g) / (a.q - b.q)
    cert = CERT_REL_TOL * max(1.0, abs(a.high), abs(b.low))
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
    return [a, *reversed(left), s, *right, b]


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
