"""The tracer's compiled LU solves (engine/tracerjit.py) against SuperLU's own and a dense solve."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings, strategies as st
from scipy.sparse.linalg import splu

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
       trans=st.sampled_from(["N", "T"]), sparse_rhs=st.booleans())
def test_solves_agree_with_superlu_and_dense(n, density, k, seed, trans, sparse_rhs):
    a = _matrix(n, density, seed)
    rng = np.random.default_rng(seed + 1)
    b = rng.normal(size=(n, k))
    if sparse_rhs:          # as a flip's column: mostly zeros, which the sweeps skip
        b[rng.random((n, k)) < 0.8] = 0.0
    lu = SparseLu(a, permc_spec="MMD_ATA", options={"SymmetricMode": True})
    ref = splu(a, permc_spec="MMD_ATA", options={"SymmetricMode": True})
    dense = a.toarray().T if trans == "T" else a.toarray()
    for rhs in (b, np.asfortranarray(b), b[:, 0]):
        x = lu.solve(rhs, trans=trans)
        assert x.shape == rhs.shape
        np.testing.assert_allclose(dense @ x, rhs, atol=1e-9 * (1 + np.abs(rhs).max()))
        np.testing.assert_allclose(x, ref.solve(np.asfortranarray(rhs), trans=trans), rtol=1e-9, atol=1e-12)


def test_a_singular_matrix_is_refused_as_superlu_refuses_it():
    a = sp.csc_matrix(np.array([[1.0, 2.0], [2.0, 4.0]]))
    with pytest.raises(RuntimeError):
        SparseLu(a)
