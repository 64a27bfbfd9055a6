"""The tracer's compiled LU solves (engine/tracerjit.py) against SuperLU's own and a dense solve."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import assume, given, settings, strategies as st
from scipy.sparse.linalg import splu

from dsomarket.engine import tracer, tracerjit
from dsomarket.engine.tracerjit import SparseLu


def _matrix(n: int, density: float, seed: int) -> sp.csc_matrix:
    """A random sparse nonsingular matrix with a dominant diagonal of mixed signs and some empty off-diagonal columns."""
    rng = np.random.default_rng(seed)
    m = sp.random(n, n, density=density, random_state=rng, format="lil")
    m[:, rng.integers(0, n, max(1, n // 5))] = 0.0
    diag = (rng.uniform(1.0, 3.0, n) + np.abs(m).sum(axis=1).A1) * rng.choice([-1.0, 1.0], n)
    return (m + sp.diags(diag)).tocsc()


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 40), density=st.floats(0.0, 0.3), k=st.integers(1, 5), seed=st.integers(0, 10_000),
       trans=st.sampled_from(["N", "T"]), sparse_rhs=st.booleans(), order=st.sampled_from(["MMD_ATA", "COLAMD"]))
def test_solves_agree_with_superlu_and_dense(n, density, k, seed, trans, sparse_rhs, order):
    # COLAMD: the tracer's order since b78db75.
    a = _matrix(n, density, seed)
    rng = np.random.default_rng(seed + 1)
    b = rng.normal(size=(n, k))
    if sparse_rhs:          # as a flip's column: mostly zeros, which the sweeps skip
        b[rng.random((n, k)) < 0.8] = 0.0
    lu = SparseLu(a, permc_spec=order, options={"SymmetricMode": True})
    ref = splu(a, permc_spec=order, options={"SymmetricMode": True})
    dense = a.toarray().T if trans == "T" else a.toarray()
    for rhs in (b, np.asfortranarray(b), b[:, 0]):
        x = lu.solve(rhs, trans=trans)
        assert x.shape == rhs.shape
        np.testing.assert_allclose(dense @ x, rhs, atol=1e-9 * (1 + np.abs(rhs).max()))
        np.testing.assert_allclose(x, ref.solve(np.asfortranarray(rhs), trans=trans), rtol=1e-9, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 40), density=st.floats(0.0, 0.3), seed=st.integers(0, 10_000), move=st.floats(0.0, 0.2))
def test_a_refactorisation_on_the_old_pivot_order_solves_as_a_fresh_factorisation(n, density, seed, move):
    """The loss-aware curve's re-linearised cores (:meth:`SparseLu.refactor`): the same pattern, values moved."""
    a = _matrix(n, density, seed)
    rng = np.random.default_rng(seed + 2)
    moved = sp.csc_matrix((a.data * (1.0 + move * rng.uniform(-1.0, 1.0, a.nnz)), a.indices, a.indptr), shape=a.shape)
    moved.sort_indices()
    lu = SparseLu(a, permc_spec="COLAMD", options={"SymmetricMode": True})
    again = lu.refactor(moved.indptr.astype(np.int64), moved.indices.astype(np.int64), moved.data)
    # Diagonally dominant, moved by at most a fifth: the old order stays stable (a refusal here would pass unseen,
    # the caller then factorising afresh; 600 draws were never refused).
    assert again is not None
    assert np.abs(again.factors[2]).max(initial=0.0) <= tracerjit.REFACTOR_GROWTH
    fresh = SparseLu(moved, permc_spec="COLAMD", options={"SymmetricMode": True})
    b = rng.normal(size=(n, 3))
    for trans in ("N", "T"):
        x = again.solve(b, trans=trans)
        np.testing.assert_allclose(x, fresh.solve(b, trans=trans), rtol=1e-9, atol=1e-12)
        dense = moved.toarray().T if trans == "T" else moved.toarray()
        np.testing.assert_allclose(dense @ x, b, atol=1e-9 * (1 + np.abs(b).max()))


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 40), density=st.floats(0.0, 0.3), seed=st.integers(0, 10_000), move=st.floats(0.0, 0.2))
def test_a_refactorisation_of_a_refactorisation_on_its_pattern_replays_the_same_bits(n, density, seed, move):
    """A basis met again on another linearisation (:meth:`SparseLu.refactor` on factors it made for the same pattern,
    the same index array): :func:`tracerjit.refactor_values` without the searches gives what :func:`refactor`
    gives, bit for bit, and refuses what it refuses."""
    a = _matrix(n, density, seed)
    rng = np.random.default_rng(seed + 3)
    indptr, indices = a.indptr.astype(np.int64), a.indices.astype(np.int64)
    lu = SparseLu(a, permc_spec="COLAMD", options={"SymmetricMode": True})
    first = lu.refactor(indptr, indices, a.data * (1.0 + move * rng.uniform(-1.0, 1.0, a.nnz)))
    assert first is not None
    for values in (a.data * (1.0 + move * rng.uniform(-1.0, 1.0, a.nnz)), np.where(np.arange(a.nnz) == 0, 0.0, a.data)):
        replayed = first.refactor(indptr, indices, values)
        searched = first.refactor(indptr, indices.copy(), values)    # another array: refactor's own searches
        assert (replayed is None) == (searched is None)
        if searched is not None:
            assert replayed.factors[1] is first.factors[1]      # the patterns kept: no search was made
            for x, y in zip(replayed.factors, searched.factors):
                assert np.array_equal(x, y)


def test_a_refactorisation_whose_old_pivot_vanishes_is_refused():
    a = sp.csc_matrix(np.array([[4.0, 1.0], [1.0, 3.0]]))
    lu = SparseLu(a)
    # The first pivot's entry set to zero: the old order divides by it, a fresh factorisation pivots elsewhere.
    first = np.flatnonzero(lu.factors[7] == 0)[0], np.flatnonzero(lu.factors[8] == 0)[0]
    b = a.toarray()
    b[first] = 0.0
    b = sp.csc_matrix(b)
    assert lu.refactor(b.indptr.astype(np.int64), b.indices.astype(np.int64), b.data) is None
    assert np.allclose(SparseLu(b).solve(np.ones(2)), np.linalg.solve(b.toarray(), np.ones(2)))


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 40), density=st.floats(0.0, 0.3), seed=st.integers(0, 10_000), swaps=st.integers(0, 5),
       prefer_kept=st.booleans())
def test_a_factorisation_on_a_kept_column_order_solves_the_pivoted_matrix(n, density, seed, swaps, prefer_kept):
    """The tracer's refactorisation of a basis some pivots on (:meth:`SparseLu.on_columns`): columns replaced by
    others, the old column order kept and its rows preferred as pivots (or none), partial pivoting where they fail."""
    a = _matrix(n, density, seed)
    rng = np.random.default_rng(seed + 3)
    lu = SparseLu(a, permc_spec="COLAMD", options={"SymmetricMode": True})
    b = a.toarray()
    for j in rng.integers(0, n, swaps):     # a replaced column: random entries, so pivots move off the diagonal
        b[:, j] = np.where(rng.random(n) < 0.3, rng.normal(size=n), 0.0)
        b[rng.integers(0, n), j] = rng.uniform(1.0, 2.0)
    assume(np.linalg.cond(b) < 1e8)     # a replaced column may leave it singular (structurally or nearly)
    m = sp.csc_matrix(b)
    m.sort_indices()
    col_of = lu.col_of()
    prefer = np.empty(n, dtype=np.int64)
    prefer[lu.factors[7]] = np.arange(n)            # the row the old factorisation pivoted at each step
    if not prefer_kept:
        prefer[:] = -1
    again = lu.on_columns(m.indptr.astype(np.int64), m.indices.astype(np.int64), m.data, col_of, prefer)
    assert again is not None and not again.fresh
    assert np.array_equal(again.factors[8][col_of], np.arange(n))     # the kept column order
    assert np.abs(again.factors[2]).max(initial=0.0) <= 1.0 / tracerjit.PIVOT_THRESHOLD
    rhs = rng.normal(size=(n, 2))
    for trans in ("N", "T"):
        x = again.solve(rhs, trans=trans)
        np.testing.assert_allclose(np.linalg.solve(b.T if trans == "T" else b, rhs), x, rtol=1e-7,
                                   atol=1e-9 * (1 + np.abs(x).max()))
    if not swaps and prefer_kept:                   # nothing moved: the old pivots are taken again
        assert np.array_equal(again.factors[7], lu.factors[7])


def test_a_singular_matrix_is_refused_on_a_kept_column_order():
    a = sp.csc_matrix(np.array([[4.0, 1.0], [1.0, 3.0]]))
    lu = SparseLu(a)
    b = sp.csc_matrix(np.array([[1.0, 2.0], [2.0, 4.0]]))
    assert lu.on_columns(b.indptr.astype(np.int64), b.indices.astype(np.int64), b.data, lu.col_of(),
                         np.full(2, -1, dtype=np.int64)) is None


def test_a_singular_matrix_is_refused_as_superlu_refuses_it():
    a = sp.csc_matrix(np.array([[1.0, 2.0], [2.0, 4.0]]))
    with pytest.raises(RuntimeError):
        SparseLu(a)


def _scan_reference(d, alpha, value, lower, upper, nonbasic, d_tol):
    """The ratio test written out element by element from its definition (:func:`engine.tracer._scan`)."""
    if d_tol is not None:
        for j in np.flatnonzero(nonbasic):
            at_lo, at_hi = abs(value[j] - lower[j]) <= 1e-7, abs(value[j] - upper[j]) <= 1e-7
            if abs(d[j]) > d_tol and ((d[j] < 0 and not at_hi) or (d[j] > 0 and not at_lo)):
                return None
    up, down = [], []
    for j in np.flatnonzero(nonbasic):
        if abs(alpha[j]) <= 1e-9:
            continue
        if np.isfinite(lower[j]) and value[j] - lower[j] <= upper[j] - value[j]:
            sign = 1.0                  # at its lower bound: d - delta alpha must stay >= 0
        elif np.isfinite(upper[j]):
            sign = -1.0
        else:                           # free: d - delta alpha must stay 0, either way
            up.append((abs(d[j]) / abs(alpha[j]), j))
            down.append((abs(d[j]) / abs(alpha[j]), j))
            continue
        slack = max(sign * d[j], 0.0) / abs(alpha[j])
        (up if sign * alpha[j] > 0 else down).append((slack, j))
    return up, down


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 30), seed=st.integers(0, 10_000), check=st.booleans())
def test_scan_is_the_ratio_test_of_its_definition(n, seed, check):
    rng = np.random.default_rng(seed)
    lower = np.where(rng.random(n) < 0.2, -np.inf, rng.normal(size=n).round(1))
    upper = np.where(rng.random(n) < 0.2, np.inf, lower + rng.choice([0.0, 1.0, 2.5], n))
    upper = np.where(np.isneginf(lower) & (rng.random(n) < 0.5), np.inf, upper)
    value = np.where(rng.random(n) < 0.5, lower, upper)
    value = np.where(np.isfinite(value), value, 0.0)
    d = np.where(rng.random(n) < 0.3, 0.0, rng.normal(size=n))
    alpha = np.where(rng.random(n) < 0.2, 0.0, rng.normal(size=n))
    nonbasic = rng.random(n) < 0.8
    d_tol = 1e-7 if check else None
    got = tracer._scan(d, alpha, value, lower, upper, nonbasic, d_tol)
    want = _scan_reference(d, alpha, value, lower, upper, nonbasic, d_tol)
    assert (got is None) == (want is None)
    if got is not None:
        for (delta, index), ref in zip(got, want):
            assert list(zip(delta.tolist(), index.tolist())) == [(float(s), int(j)) for s, j in ref]


@settings(max_examples=40, deadline=None)
@given(k=st.integers(1, 6), m=st.integers(1, 8), n_ina=st.integers(0, 5), seed=st.integers(0, 10_000))
def test_first_break_is_the_first_flip_whose_cumulative_path_leaves_a_bound(k, m, n_ina, seed):
    rng = np.random.default_rng(seed)
    move = rng.normal(size=(k, m)).round(2)
    moved0 = rng.normal(size=m).round(2)
    bounded = np.flatnonzero(rng.random(m) < 0.7).astype(np.int64)
    x_b = rng.normal(size=len(bounded)).round(2)
    lo_b, hi_b = x_b - rng.uniform(0.5, 3.0, len(bounded)), x_b + rng.uniform(0.5, 3.0, len(bounded))
    allow_b = np.full(len(bounded), 1e-9)
    a_is = np.where(rng.random((n_ina, m)) < 0.5, rng.normal(size=(n_ina, m)).round(2), 0.0)
    is_row, is_col = (idx.astype(np.int64) for idx in np.nonzero(a_is))
    is_val = a_is[is_row, is_col]
    r0 = rng.normal(size=n_ina).round(2)
    lo_r, hi_r = r0 - rng.uniform(0.5, 3.0, n_ina), r0 + rng.uniform(0.5, 3.0, n_ina)
    allow_r = np.full(n_ina, 1e-9)
    n_own = int(rng.integers(0, 3)) if n_ina else 0
    own_f, own_i = rng.integers(0, k, n_own).astype(np.int64), rng.integers(0, max(n_ina, 1), n_own).astype(np.int64)
    own_v = rng.normal(size=n_own).round(2)
    # Dense, flip by flip: every basic value and every row activity after each flip.
    own = np.zeros((k, n_ina))
    np.add.at(own, (own_f, own_i), own_v)
    paths = (x_b + moved0[bounded]) + np.cumsum(move[:, bounded], axis=0)
    rows = r0 + np.cumsum(move @ a_is.T + own, axis=0)
    broken = ((lo_b - paths > allow_b) | (paths - hi_b > allow_b)).any(axis=1) | \
        ((lo_r - rows > allow_r) | (rows - hi_r > allow_r)).any(axis=1)
    want = int(np.argmax(broken)) if broken.any() else k
    moved, r_cur = moved0.copy(), r0.copy()
    got = tracerjit.first_break(move, moved, bounded, x_b, lo_b, hi_b, allow_b, is_row, is_col, is_val, r_cur,
                                lo_r, hi_r, allow_r, own_f, own_i, own_v)
    assert got == want
    np.testing.assert_allclose(moved, moved0 + move[:want].sum(axis=0), atol=1e-12)
    np.testing.assert_allclose(r_cur, r0 + (move[:want] @ a_is.T + own[:want]).sum(axis=0), atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), drop=st.sampled_from(["row", "col"]), add=st.sampled_from(["row", "col"]))
def test_reindex_keeps_the_entries_of_the_rows_and_columns_that_stay(seed, drop, add):
    rng = np.random.default_rng(seed)
    rows_old = np.sort(rng.choice(30, 6, replace=False))      # inactive rows (ids), sorted
    cols_old = np.sort(rng.choice(40, 8, replace=False))      # basic columns (ids), sorted
    dense = np.where(rng.random((6, 8)) < 0.5, rng.normal(size=(6, 8)), 0.0)
    row, col = (idx.astype(np.int64) for idx in np.nonzero(dense))
    rows_new, cols_new = rows_old.copy(), cols_old.copy()
    drop_row = drop_col = add_row = add_col = -1
    if drop == "row":
        drop_row = int(rng.integers(0, 6))
        rows_new = np.delete(rows_new, drop_row)
    else:
        drop_col = int(rng.integers(0, 8))
        cols_new = np.delete(cols_new, drop_col)
    fresh_row = int(rng.choice(np.setdiff1d(np.arange(30), rows_old)))
    fresh_col = int(rng.choice(np.setdiff1d(np.arange(40), cols_old)))
    if add == "row":
        add_row = int(np.searchsorted(rows_new, fresh_row))
        rows_new = np.insert(rows_new, add_row, fresh_row)
    else:
        add_col = int(np.searchsorted(cols_new, fresh_col))
        cols_new = np.insert(cols_new, add_col, fresh_col)
    none = np.zeros(0, dtype=np.int64)
    r, c, v = tracerjit.reindex(row, col, dense[row, col], drop_row, add_row, drop_col, add_col, none, none,
                                np.zeros(0))
    # By ids: the same entries, in the same order, less those of the dropped row or column.
    keep = (row != drop_row) & (col != drop_col)
    assert rows_new[r].tolist() == rows_old[row[keep]].tolist()
    assert cols_new[c].tolist() == cols_old[col[keep]].tolist()
    assert v.tolist() == dense[row, col][keep].tolist()


@pytest.mark.parametrize("seed", [1, 2])
def test_an_updated_basis_solves_as_its_own_dense_core_does(monkeypatch, seed):
    # The bases the tracer's own pivots reach are Woodbury updates of a factorised one (tracer._Lu): their
    # solves (sparse, dense, transposed: tracerjit.sparse_solve and solve_t) must be those of the basis's
    # own core, A[active, structural], solved densely. Updates are forced on a small feeder (on real ones
    # they start at _UPDATE_MIN rows); each basis of the chain is checked, up to a fresh factorisation.
    from dsomarket.engine.bids import MarketRules, validate_bids
    from dsomarket.engine.clearing import ClearingOptions, NodalMarket
    from dsomarket.engine.feeders import synthetic
    from tests.test_interface import random_bids

    monkeypatch.setattr(tracer, "_UPDATE_MIN", 0)
    rules = MarketRules(price_floor=-200.0, price_cap=500.0)
    feeder = synthetic(40, seed)
    book = validate_bids(random_bids(feeder, 120, seed), feeder, rules)
    market = NodalMarket(feeder, book, rules.price_floor, rules, options=ClearingOptions(formulation="lossless",
                                                                                          ac_check=False))
    probe = tracer._Probe(market, 0)
    checked = []
    pivot = tracer._Probe._pivot

    def checking(self, basis, brk, rising):
        out = pivot(self, basis, brk, rising)
        if out is not None and len(out[1].lu.replaced):
            checked.append(out[1])
        return out

    monkeypatch.setattr(tracer._Probe, "_pivot", checking)
    first, basis = probe.start(rules.price_floor)
    probe.chain(first, basis, True, rules.price_cap)
    assert checked, "no updated basis reached"
    rng = np.random.default_rng(seed)
    for b in checked:
        core = probe.a[b.active][:, b.structural].toarray()
        n = len(b.structural)
        rhs = rng.normal(size=(n, 3))
        tol = 1e-8 * (1 + np.abs(np.linalg.solve(core, rhs)).max())
        np.testing.assert_allclose(core @ b.lu.solve(rhs), rhs, atol=tol)
        np.testing.assert_allclose(core.T @ b.lu.solve(rhs, trans="T"), rhs, atol=tol)
        np.testing.assert_allclose(core.T @ b.lu.solve(rhs[:, 0], trans="T"), rhs[:, 0], atol=tol)
        rows = rng.choice(n, 4, replace=False)
        sparse = np.zeros((n, 2))
        sparse[rows[:2], 0], sparse[rows[2:], 1] = 1.0, -2.0
        got = b.lu.solve_sparse(np.r_[rows[:2], rows[2:]], np.array([0, 0, 1, 1]), np.array([1.0, 1.0, -2.0, -2.0]),
                                2)
        np.testing.assert_allclose(core @ got, sparse, atol=tol)


def test_the_kernels_compile_in_memory_where_no_cache_location_is_writable(tmp_path):
    # A service whose package directory and home are read-only: numba refuses cache=True there, which must not
    # stop every curve. A plain file where each cache directory would go blocks it even for root.
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "tj.py").write_text(Path(tracerjit.__file__).read_text())
    (pkg / "__pycache__").write_text("")
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env.update(HOME=str(blocked), XDG_CACHE_HOME=str(blocked / "cache"))
    code = "import sys; sys.path.insert(0, 'pkg'); import tj; print(tj._JIT['cache'])"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=240)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


@settings(max_examples=40, deadline=None)
@given(n_s=st.integers(0, 8), n_r=st.integers(0, 6), seed=st.integers(0, 10_000))
def test_the_ratio_test_stops_at_the_first_value_to_reach_its_bound(n_s, n_r, seed):
    # Against the plain numpy ratio test it replaced: moving values only, columns before rows, the first of ties.
    rng = np.random.default_rng(seed)
    n_col, n_row = 12, 9
    structural = np.sort(rng.choice(n_col, n_s, replace=False)).astype(np.int64)
    inactive = np.sort(rng.choice(n_row, n_r, replace=False)).astype(np.int64)
    x, r = rng.normal(size=n_col).round(1), rng.normal(size=n_r).round(1)
    act = rng.normal(size=n_row).round(1)
    act[inactive] = r
    width = rng.choice([0.5, 1.0, np.inf], size=(2, n_col + n_row))
    col_lower, col_upper = x - width[0, :n_col], x + width[1, :n_col]
    row_lower, row_upper = act - width[0, n_col:], act + width[1, n_col:]
    d_s = np.where(rng.random(n_s) < 0.3, 0.0, rng.choice([-2.0, -1.0, 1.0, 2.0], n_s))
    d_r = np.where(rng.random(n_r) < 0.3, 0.0, rng.choice([-2.0, -1.0, 1.0, 2.0], n_r))
    rate = np.concatenate([d_s, d_r])
    vals = np.concatenate([x[structural], r])
    lower = np.concatenate([col_lower[structural], row_lower[inactive]])
    upper = np.concatenate([col_upper[structural], row_upper[inactive]])
    moving = np.flatnonzero(np.abs(rate) > 1e-9)
    theta = np.maximum(np.where(rate > 0, upper - vals, lower - vals)[moving] / rate[moving], 0.0)
    leave, step, bound = tracerjit.ratio_test(d_s, d_r, structural, inactive, x, r, col_lower, col_upper, row_lower,
                                              row_upper, 1e-9)
    if not len(theta) or not np.isfinite(theta.min()):
        assert leave == -1
        return
    first = moving[int(np.argmin(theta))]
    assert (leave, step) == (first, theta.min())
    assert bound == (upper[first] if rate[first] > 0 else lower[first])


def _arrays(m: sp.csc_matrix) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return m.indptr.astype(np.int64), m.indices.astype(np.int64), m.data


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 40), density=st.floats(0.0, 0.3), seed=st.integers(0, 10_000),
       trans=st.sampled_from(["N", "T"]))
def test_a_refactorisation_on_a_denser_pattern_solves_it_and_repeats_its_bits(n, density, seed, trans):
    # A denser pattern than the old factors had room for (the doubling of SparseLu.refactor's room, which the
    # same pattern's values alone rarely reach): the factors on SuperLU's old order must solve the new matrix as
    # a dense solve does, and the same inputs must give the same factors, bit for bit.
    a = _matrix(n, density, seed)
    rng = np.random.default_rng(seed + 2)
    b = _matrix(n, min(1.0, 2 * density + 0.1), seed + 3)
    b.data = b.data * rng.uniform(0.8, 1.25, len(b.data))
    b.sort_indices()
    lu = SparseLu(a, permc_spec="COLAMD", options={"SymmetricMode": True})
    again = lu.refactor(*_arrays(b))
    assert again is not None    # diagonally dominant too: the old order stays stable (600 draws: never refused)
    rhs = rng.normal(size=(n, 3))
    dense = b.toarray().T if trans == "T" else b.toarray()
    np.testing.assert_allclose(dense @ again.solve(rhs, trans=trans), rhs, atol=1e-9 * (1 + np.abs(rhs).max()))
    twice = lu.refactor(*_arrays(b))
    assert all(np.array_equal(u, v) for u, v in zip(again.factors, twice.factors))
    # Its own matrix on its own order: SuperLU's factors, up to the entries that cancelled (kept here as zeros).
    own = lu.refactor(*_arrays(a))
    np.testing.assert_allclose(own.solve(rhs, trans=trans), lu.solve(rhs, trans=trans), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(own.factors[6], lu.factors[6], rtol=1e-12)


def test_a_refactorisation_refuses_an_explicit_zero_or_small_pivot():
    # SuperLU pivots on the larger entry of each column: [[1, 2], [2, 1]]'s first pivot is the 2. With that
    # entry zero (an explicit zero, as a linearisation's coefficient can be), or small enough that L's entry
    # passes REFACTOR_GROWTH, the order no longer serves: None, a fresh factorisation. (The new matrices' A[1, 1]
    # is 3, so that each is nonsingular.)
    a = sp.csc_matrix(np.array([[1.0, 2.0], [2.0, 1.0]]))
    lu = SparseLu(a)
    for small, ok in ((0.0, False), (1e-3, False), (0.5, True)):
        b = a.copy()
        b.data = np.array([1.0, small, 2.0, 3.0])         # column-major: A[1, 0] = small
        got = lu.refactor(*_arrays(b))
        assert (got is not None) == ok, small
        if ok:
            np.testing.assert_allclose(b.toarray() @ got.solve(np.array([1.0, 2.0])), [1.0, 2.0])


@pytest.mark.parametrize("seed", [1, 2])
def test_bases_factorised_on_a_kept_column_order_solve_as_their_cores_and_trace_superlu_s_curve(monkeypatch, seed):
    # Refactorisations on the predecessor's column order (tracer._Probe._kept_order, SparseLu.on_columns): each
    # such basis must solve as its own core solved densely, and the curve must be the one traced with SuperLU's
    # factorisations only (_REFILL 0 refuses every kept order).
    from dsomarket.engine import interface
    from dsomarket.engine.bids import MarketRules, validate_bids
    from dsomarket.engine.clearing import ClearingOptions
    from dsomarket.engine.feeders import synthetic
    from tests.test_interface import random_bids

    rules = MarketRules(price_floor=-200.0, price_cap=500.0)
    feeder = synthetic(40, seed)
    book = validate_bids(random_bids(feeder, 120, seed), feeder, rules)
    options = ClearingOptions(formulation="lossless", ac_check=False)
    kept = []
    factor = tracer._Probe._factor

    def checking(self, *args, **kwargs):
        out = factor(self, *args, **kwargs)
        if out is not None and out.lu is not None and not out.lu.ref.lu.fresh:
            kept.append((self.a, out))
        return out

    monkeypatch.setattr(tracer._Probe, "_factor", checking)
    curve = interface.trace_curve(feeder, book, rules, options=options).bands
    assert kept, "no basis factorised on a kept column order"
    rng = np.random.default_rng(seed)
    for a, b in kept:
        core = a[b.active][:, b.structural].toarray()
        rhs = rng.normal(size=(len(b.structural), 2))
        tol = 1e-8 * (1 + np.abs(np.linalg.solve(core, rhs)).max())
        np.testing.assert_allclose(core @ b.lu.solve(rhs), rhs, atol=tol)
        np.testing.assert_allclose(core.T @ b.lu.solve(rhs, trans="T"), rhs, atol=tol)
    monkeypatch.setattr(tracer, "_REFILL", 0.0)
    kept.clear()
    fresh = interface.trace_curve(feeder, book, rules, options=options).bands
    assert not kept
    assert fresh.height == curve.height
    np.testing.assert_allclose(curve["import_kw"].to_numpy(), fresh["import_kw"].to_numpy(), rtol=0.0, atol=1e-3)
    np.testing.assert_allclose(curve["price_high"].to_numpy(), fresh["price_high"].to_numpy(), rtol=1e-7, atol=1e-7)


@settings(max_examples=25, deadline=None)
@given(n_row=st.integers(1, 30), n_col=st.integers(1, 30), density=st.floats(0.0, 0.5), seed=st.integers(0, 10_000))
def test_reduced_costs_are_scipy_s_products_bit_for_bit_on_the_nonbasic_columns(n_row, n_col, density, seed):
    # tracer._Probe._factor read c - A^T y and A^T z from SciPy; the compiled pass must give those bits (the
    # curve's steps are ratios of them), and zeros on the columns it skips.
    rng = np.random.default_rng(seed)
    a = sp.random(n_row, n_col, density=density, random_state=rng, format="csc")
    a.sort_indices()
    y, z, cost = rng.normal(size=n_row), rng.normal(size=n_row), rng.normal(size=n_col)
    nonbasic = rng.random(n_col) < 0.7
    at = sp.csr_matrix((a.data, a.indices, a.indptr), shape=(n_col, n_row))
    d, alpha = tracerjit.reduced_costs(a.indptr.astype(np.int64), a.indices.astype(np.int64), a.data, y, z, cost,
                                       nonbasic)
    assert np.array_equal(d[nonbasic], (cost - at @ y)[nonbasic])
    assert np.array_equal(alpha[nonbasic], (at @ z)[nonbasic])
    assert not d[~nonbasic].any() and not alpha[~nonbasic].any()


@settings(max_examples=25, deadline=None)
@given(k=st.integers(1, 4), n=st.integers(0, 12), m=st.integers(0, 400), seed=st.integers(0, 10_000))
def test_the_long_product_sums_as_the_plain_one_does(k, n, m, seed):
    # _times_t_long reorders the loops of _times_t, not the sums: the same bits, and the product itself.
    rng = np.random.default_rng(seed)
    a, bt = rng.normal(size=(n, m)), rng.normal(size=(k, m))
    out = tracerjit._times_t_long(a, bt)
    assert np.array_equal(out, tracerjit._times_t(a, bt))
    np.testing.assert_allclose(out, (a @ bt.T).T, rtol=1e-12, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(m=st.integers(2, 40), n_col=st.integers(1, 60), kr=st.integers(1, 6), seed=st.integers(0, 10_000))
def test_an_updated_basis_s_positions_are_those_numpy_gave(m, n_col, kr, seed):
    # tracer._Lu read these with argsort, unique, searchsorted and a fancy-indexed gather; the kernels must agree.
    rng = np.random.default_rng(seed)
    n_s0 = int(rng.integers(1, m))
    # A basis's heads: distinct variables, columns (< n_col) and row logicals (>= n_col).
    heads = rng.permutation(n_col + m)[:m].astype(np.int64)
    replaced = rng.choice(m, size=min(kr, m), replace=False).astype(np.int64)
    i0_pos = np.unique(rng.integers(n_s0, m, size=int(rng.integers(0, 4)))).astype(np.int64)
    sel, extra, sel_ext, p_ext, i0_ext = tracerjit.update_positions(heads, n_col, replaced, i0_pos, n_s0)
    cols = np.nonzero(heads < n_col)[0]
    want_sel = cols[np.argsort(heads[cols], kind="stable")]
    want_extra = np.unique(np.concatenate([want_sel[want_sel >= n_s0], replaced[replaced >= n_s0], i0_pos]))

    def ext(p):
        return np.where(p < n_s0, p, n_s0 + np.searchsorted(want_extra, p))
    for got, want in ((sel, want_sel), (extra, want_extra), (sel_ext, ext(want_sel)), (p_ext, ext(replaced)),
                      (i0_ext, ext(i0_pos))):
        assert np.array_equal(got, want)
    z = rng.normal(size=(m, len(replaced)))
    want_w = np.ascontiguousarray(z.T[:, want_sel])
    slot = np.full(m, -1)
    slot[replaced] = np.arange(len(replaced))
    hit = np.flatnonzero(slot[want_sel] >= 0)
    want_w[slot[want_sel[hit]], hit] -= 1.0
    assert np.array_equal(tracerjit.w_selected(np.ascontiguousarray(z.T), sel, replaced, m), want_w)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 25), m=st.integers(0, 10), seed=st.integers(0, 10_000), inside=st.sampled_from([0.0, 0.2]))
def test_price_range_is_where_every_nonbasic_reduced_cost_and_active_dual_has_its_sign(n, m, seed, inside):
    # dual_range's ratio (tracerjit.price_range) against its definition, price by price: f = d0 + lambda slope
    # of each nonbasic column (d0 = c - A^T y0, slope = -A^T z) and active row (y0, z) whose bounds differ is
    # >= -dual_tol at its lower bound, <= dual_tol at its upper, within marginal_tol of 0 inside (held).
    rng = np.random.default_rng(seed)
    tols = (1e-7, 1e-7, 1e-3, 1e-9)          # primal, dual, marginal, alpha

    def bounded(k):
        lower = rng.normal(size=k).round(1)
        upper = lower + rng.choice([0.0, 1.0, 2.0], k)
        value = np.where(rng.random(k) < 0.5, lower, upper)
        held = (upper > lower) & (rng.random(k) < inside)
        return lower, upper, np.where(held, lower + 0.3 * (upper - lower), value)

    col_lower, col_upper, x = bounded(n)
    row_lower, row_upper, r = bounded(m)
    cost, at_y0 = rng.normal(size=n), rng.normal(size=n)
    at_z = np.where(rng.random(n) < 0.2, 0.0, rng.normal(size=n))
    y0, z = rng.normal(size=m), np.where(rng.random(m) < 0.2, 0.0, rng.normal(size=m))
    basic, active = rng.random(n) < 0.3, rng.random(m) < 0.7
    low, high, held = tracerjit.price_range(cost, at_y0, at_z, y0, z, x, r, col_lower, col_upper, row_lower,
                                            row_upper, basic, active, *tols)
    entries = [(cost[j] - at_y0[j], -at_z[j], x[j], col_lower[j], col_upper[j]) for j in range(n) if not basic[j]]
    entries += [(y0[i], z[i], r[i], row_lower[i], row_upper[i]) for i in range(m) if active[i]]
    entries = [e for e in entries if e[3] < e[4]]
    inner = [e for e in entries if abs(e[2] - e[3]) > tols[0] and abs(e[2] - e[4]) > tols[0]]
    if low <= high:     # else no price holds (dual_range's None), whatever is held
        assert held.tolist() == [-d0 / slope for d0, slope, *_ in inner if abs(slope) > tols[3]]

    def holds(lam: float) -> bool:
        for d0, slope, value, lower, upper in entries:
            f = d0 + lam * slope
            if abs(value - lower) <= tols[0]:
                ok = f >= -tols[1]
            elif abs(value - upper) <= tols[0]:
                ok = f <= tols[1]
            else:
                ok = abs(f) <= tols[2]
            if not ok:
                return False
        return True

    grid = np.linspace(-40.0, 40.0, 801)
    if low <= high:
        grid = np.concatenate([grid, np.linspace(max(low, -1e3), min(high, 1e3), 21)])
    for lam in grid:
        if min(abs(lam - low), abs(lam - high)) > 1e-6:
            assert holds(float(lam)) == (low <= lam <= high), (lam, low, high)


@pytest.mark.parametrize("sides", [4, 16])
@pytest.mark.parametrize("seed", [0, 1])
def test_thermal_values_are_numpy_s_faces_bit_for_bit(sides, seed):
    """The compiled thermal rows' values (:func:`tracerjit.thermal_values`) are those of numpy's passes, to the bit,
    at an AC point of random withdrawals over three intervals with a line carrying no flow (the ``hypot == 0``
    branch), with and without the turned faces either side of the tangent one (:func:`engine.losses.refined`)."""
    from dataclasses import replace

    from dsomarket.engine import losses
    from dsomarket.engine.feeders import synthetic

    f = synthetic(60, 5)
    rng = np.random.default_rng(seed)
    n = f.topology.r_pu.shape[0] + 1
    w_p, w_q = rng.uniform(-200.0, 300.0, (n, 3)), rng.uniform(-50.0, 100.0, (n, 3))
    leaf = np.setdiff1d(np.arange(1, n), f.topology.parent[1:])[0]
    w_p[leaf], w_q[leaf] = 0.0, 0.0         # the line into a leaf with no withdrawal carries nothing
    point = losses.operating_point(f, w_p, w_q)
    for spread in (None, rng.uniform(1e-5, 0.3, (2, *point.p.shape))):
        at = replace(point, spread=spread)
        numpy_values = np.concatenate(losses._thermal_values(f, at, sides))
        (compiled,) = losses._thermal_values(f, at, sides, kernel=tracerjit.thermal_values)
        assert np.count_nonzero(np.hypot(point.p, point.q) == 0.0) > 0
        assert compiled.dtype == numpy_values.dtype and np.array_equal(compiled, numpy_values)


@given(n=st.integers(1, 300), share=st.floats(0.0, 1.0), seed=st.integers(0, 2**31))
@settings(max_examples=40, deadline=None)
def test_add_distinct_is_numpy_s_add_at_distinct_slots_bit_for_bit(n, share, seed):
    """:func:`tracerjit.add_distinct` is numpy's ``data[slots] += vals`` on a copy (the loss-aware re-linearisation's
    scatter, :meth:`engine.losses.Relinearisation.at`), to the bit, and leaves ``data`` as it was."""
    rng = np.random.default_rng(seed)
    data = rng.normal(size=n) * 10.0 ** rng.integers(-8, 8, n)
    slots = rng.permutation(n)[:int(share * n)].astype(np.int64)
    vals = rng.normal(size=len(slots)) * 10.0 ** rng.integers(-8, 8, len(slots))
    before = data.copy()
    expected = data.copy()
    expected[slots] += vals
    out = tracerjit.add_distinct(data, slots, vals)
    assert np.array_equal(out, expected) and np.array_equal(data, before)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 40), m=st.integers(1, 40), density=st.floats(0.0, 0.5), seed=st.integers(0, 10_000))
def test_the_compiled_row_products_are_scipys_to_the_bit(n, m, density, seed):
    """The loss-aware anchor's compiled products (:func:`tracerjit.times_two` for the duals' ``A^T y``,
    :func:`tracerjit.held_rhs` for settle's active rows) sum as scipy's ``A @ x`` does: the same bits, so the
    curve is the one the numpy forms drew."""
    rng = np.random.default_rng(seed)
    a = sp.random(n, m, density, format="csr", random_state=seed)
    a.data = rng.normal(size=a.nnz) * 10.0 ** rng.uniform(-6, 6, a.nnz)
    u, w = (rng.normal(size=m) * 10.0 ** rng.uniform(-3, 3, m) for _ in range(2))
    indptr, indices = a.indptr.astype(np.int64), a.indices.astype(np.int64)
    au, aw = tracerjit.times_two(indptr, indices, a.data, u, w)
    assert np.array_equal(au, a @ u) and np.array_equal(aw, a @ w)
    active = rng.random(n) < 0.7
    lower = np.where(rng.random(n) < 0.3, -np.inf, rng.normal(size=n))
    upper = np.where(rng.random(n) < 0.3, np.inf, lower + rng.uniform(0.0, 2.0, n))
    rhs, ok = tracerjit.held_rhs(indptr, indices, a.data, u, w, active, lower, upper)
    r, lo, hi = (a @ u)[active], lower[active], upper[active]
    held = np.where(np.isfinite(lo) & (~np.isfinite(hi) | (np.abs(r - lo) <= np.abs(r - hi))), lo, hi)
    assert ok == bool(np.all(np.isfinite(held)))
    if ok:
        assert np.array_equal(rhs, held - (a @ w)[active])


def test_the_compiled_reductions_are_numpys_with_nan_and_empty():
    """The anchor's stopping test and the probe's canonical check (:func:`tracerjit.max_moved`,
    :func:`tracerjit.all_nonzero`) as the numpy forms they replace, NaN and empty ranges too."""
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=50), rng.normal(size=50)
    for start, stop in ((0, 50), (10, 30), (7, 7)):
        assert tracerjit.max_moved(a, b, start, stop) == np.max(np.abs(a[start:stop] - b[start:stop]), initial=0.0)
    a[20] = np.nan
    assert np.isnan(tracerjit.max_moved(a, b, 10, 30)) and tracerjit.max_moved(a, b, 0, 20) == \
        np.max(np.abs(a[:20] - b[:20]), initial=0.0)
    for data in (a, np.where(np.arange(50) == 33, 0.0, b), np.zeros(0)):
        assert tracerjit.all_nonzero(data) == bool(np.all(data != 0.0))


def _staircase_reference(step, after, floor, cap, q0):
    """The band assembly of :func:`engine.tracer._trace_interval` as it was written in Python."""
    bands, low, q = [], floor, q0
    found = ~np.isnan(step)
    for p, qq in zip(step[found].tolist(), after[found].tolist()):
        if p > low + tracer.P_REL_TOL * max(1.0, abs(p)):
            bands.append([low, p, q])
            low = p
        q = qq
    bands.append([low, cap, q])
    return tracer._merge_equal(bands)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 60), seed=st.integers(0, 10_000), nan_share=st.floats(0.0, 1.0))
def test_the_staircase_kernel_makes_the_bands_of_the_python_loop_bit_for_bit(n, seed, nan_share):
    # Steps with near-ties (within and just past the price tolerance), NaNs (no step) and imports that repeat
    # or differ by about the import tolerance, so that both the sliver rule and the merge of equal bands are hit.
    rng = np.random.default_rng(seed)
    step = np.sort(rng.uniform(-1000.0, 3000.0, n))
    tie = rng.random(n) < 0.3
    step[1:][tie[1:]] = step[:-1][tie[1:]] * (1.0 + rng.choice([0.5e-9, 2e-9, 0.0], int(tie[1:].sum())))
    step[rng.random(n) < nan_share] = np.nan
    after = np.round(rng.uniform(-1.0, 1.0, n), 1) + rng.choice([0.0, 0.5e-6, 2e-6], n)
    lo, hi, q = tracerjit.staircase(step, after, -1000.0, 3000.0, 0.25, tracer.P_REL_TOL, tracer.Q_TOL_MW)
    ref = np.array(_staircase_reference(step, after, -1000.0, 3000.0, 0.25), dtype=float).reshape(-1, 3)
    got = np.column_stack([lo, hi, q])
    assert got.shape == ref.shape and got.tobytes() == ref.tobytes()
