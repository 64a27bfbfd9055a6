"""The loss-aware curve's per-anchor shortcuts (:meth:`engine.losscurve._FixedPoints.anchor`): its compiled AC power
flow against the numpy sweep, the re-linearisation by values alone against a fresh build, and bases first met
after a pivot, factorised on the column order of the basis walked from, drawing what ``clear`` imports."""

from __future__ import annotations

import numpy as np
import pytest

from dsomarket.engine import tracerjit
from dsomarket.engine.feeders import ieee33, synthetic
from dsomarket.engine.network import S_BASE_KVA
from dsomarket.engine.powerflow import backward_forward_sweep


@pytest.mark.parametrize("feeder", [ieee33(), synthetic(200, 3)], ids=["ieee33", "synth200"])
@pytest.mark.parametrize("k", [None, 3])
def test_the_compiled_sweep_reaches_the_numpy_sweeps_voltages_in_as_many_sweeps(feeder, k):
    t = feeder.topology
    rng = np.random.default_rng(4)
    shape = (t.n_bus,) if k is None else (t.n_bus, k)
    s = (rng.uniform(-50, 150, shape) + 1j * rng.uniform(-20, 50, shape)) / S_BASE_KVA
    for start, load in ((None, s), ("warm", s * 1.02), (None, s * 1000.0)):     # cold, warm, diverging
        v_start = None if start is None else backward_forward_sweep(t, t.r_pu, t.x_pu, feeder.v0_pu, s).v
        a = backward_forward_sweep(t, t.r_pu, t.x_pu, feeder.v0_pu, load, v_start=v_start)
        b = tracerjit.tree_sweep(t, t.r_pu, t.x_pu, feeder.v0_pu, load, v_start=v_start)
        assert a.converged == b.converged
        assert b.v.shape == a.v.shape and b.current.shape == a.current.shape and b.s_send.shape == a.s_send.shape
        if a.converged:
            assert abs(a.iterations - b.iterations) <= 1
            assert np.max(np.abs(a.v - b.v)) <= 1e-9
            assert np.max(np.abs(a.s_send - b.s_send)) <= 1e-9
            assert np.max(np.abs(a.current - b.current)) <= 1e-9
