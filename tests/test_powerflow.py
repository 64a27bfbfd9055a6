"""AC power flow: published figures, an analytic 2-bus case, an independent nonlinear solve."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from scipy.optimize import fsolve

from dsomarket.engine.errors import InputError
from dsomarket.engine.feeders import ieee33, ieee69, synthetic
from dsomarket.engine.network import S_BASE_KVA, Feeder
from dsomarket.engine.powerflow import ac_power_flow, linear_model_error


def _two_bus(r=0.5, x=0.8, p=900.0, q=400.0) -> Feeder:
    buses = pl.DataFrame({"bus": ["a", "b"], "load_kw": [0.0, p], "load_kvar": [0.0, q]})
    lines = pl.DataFrame({"line": ["ab"], "from_bus": ["a"], "to_bus": ["b"], "r_ohm": [r], "x_ohm": [x]})
    return Feeder.from_tables({"name": "two", "root_bus": "a", "base_kv": 11.0, "v0_pu": 1.02}, buses, lines)


def test_ieee33_published_figures():
    r = ac_power_flow(ieee33())
    assert r.converged and r.iterations < 20
    assert r.losses_kw == pytest.approx(202.67, abs=0.02)
    assert r.min_v_pu == pytest.approx(0.9131, abs=5e-5)
    assert r.min_v_bus == "18"
    assert r.p0_kw == pytest.approx(3715.0 + r.losses_kw, abs=1e-6)
    assert r.q0_kvar == pytest.approx(2300.0 + r.losses_kvar, abs=1e-6)
    assert r.v_pu[0] == 1.0 and r.angle_deg[0] == 0.0


def test_ieee69_published_figures():
    r = ac_power_flow(ieee69())
    assert r.converged
    assert r.losses_kw == pytest.approx(224.95, abs=0.1)
    assert r.min_v_pu == pytest.approx(0.9092, abs=5e-5)
    assert r.min_v_bus == "65"


def test_two_bus_analytic():
    f = _two_bus()
    res = ac_power_flow(f)
    z_base = 11.0 ** 2 / (S_BASE_KVA / 1000.0)
    r, x, p, q, v0 = 0.5 / z_base, 0.8 / z_base, 0.9, 0.4, 1.02
    # |V|^4 - (V0^2 - 2(rP + xQ)) |V|^2 + |z|^2 |S|^2 = 0 (Baran & Wu 1989), high-voltage root.
    b = v0 ** 2 - 2 * (r * p + x * q)
    v2 = (b + math.sqrt(b * b - 4 * (r * r + x * x) * (p * p + q * q))) / 2
    assert res.v_pu[1] == pytest.approx(math.sqrt(v2), abs=1e-10)
    loss_kw = r * (p * p + q * q) / v2 * S_BASE_KVA
    assert res.losses_kw == pytest.approx(loss_kw, rel=1e-8)
    assert res.line_p_kw[0] == pytest.approx(900.0 + loss_kw, rel=1e-8)
    i_a = math.hypot(900.0, 400.0) / (math.sqrt(3) * 11.0 * math.sqrt(v2))
    assert res.line_current_a[0] == pytest.approx(i_a, rel=1e-8)


def _newton_reference(f: Feeder, p_kw: np.ndarray, q_kvar: np.ndarray) -> np.ndarray:
    """Complex voltages from the bus power balance ``S_j = V_j conj((Y V)_j)`` solved by fsolve."""
    topo = f.topology
    n = topo.n_bus
    y_line = 1.0 / (topo.r_pu + 1j * topo.x_pu)
    child, par = np.arange(1, n), topo.parent[1:]
    y_bus = np.zeros((n, n), dtype=complex)
    np.add.at(y_bus, (child, child), y_line)
    np.add.at(y_bus, (par, par), y_line)
    np.add.at(y_bus, (child, par), -y_line)
    np.add.at(y_bus, (par, child), -y_line)
    s_inj = -(p_kw + 1j * q_kvar)[1:] / S_BASE_KVA

    def mismatch(u):
        v = np.concatenate([[f.v0_pu], u[: n - 1] + 1j * u[n - 1:]])
        d = (v * np.conj(y_bus @ v))[1:] - s_inj
        return np.concatenate([d.real, d.imag])

    u0 = np.concatenate([np.full(n - 1, f.v0_pu), np.zeros(n - 1)])
    u, _, ok, msg = fsolve(mismatch, u0, xtol=1e-13, full_output=True)
    assert ok == 1, msg
    return np.concatenate([[f.v0_pu], u[: n - 1] + 1j * u[n - 1:]])


@pytest.mark.parametrize("make", [ieee33, lambda: synthetic(25, 3)])
def test_against_independent_nonlinear_solve(make):
    f = make()
    topo = f.topology
    rng = np.random.default_rng(0)
    # Mixed withdrawals and injections, so that some flows run towards the root.
    p = topo.load_kw * rng.uniform(-0.5, 1.5, topo.n_bus)
    q = topo.load_kvar * rng.uniform(-0.5, 1.5, topo.n_bus)
    res = ac_power_flow(f, p, q)
    v_ref = _newton_reference(f, p, q)
    assert res.converged
    np.testing.assert_allclose(res.v_pu, np.abs(v_ref), atol=1e-9)
    np.testing.assert_allclose(res.angle_deg, np.degrees(np.angle(v_ref)), atol=1e-7)
    v_par, v_child = v_ref[topo.parent[1:]], v_ref[1:]
    s_ref = v_par * np.conj((v_par - v_child) / (topo.r_pu + 1j * topo.x_pu)) * S_BASE_KVA
    np.testing.assert_allclose(res.line_p_kw, s_ref.real, atol=1e-5)
    np.testing.assert_allclose(res.line_q_kvar, s_ref.imag, atol=1e-5)
    assert res.p0_kw == pytest.approx(p.sum() + res.losses_kw, abs=1e-5)


def test_reverse_flow_raises_voltage():
    f = _two_bus(p=-1500.0, q=0.0)
    res = ac_power_flow(f)
    assert res.converged
    assert res.v_pu[1] > f.v0_pu
    assert res.line_p_kw[0] < 0 and res.p0_kw < 0
    assert res.p0_kw == pytest.approx(-1500.0 + res.losses_kw, abs=1e-8)


def test_line_direction_of_the_input_does_not_matter():
    f = ieee33()
    is_20 = pl.col("line") == "20"
    flipped = f.lines.with_columns(
        pl.when(is_20).then(pl.col("to_bus")).otherwise(pl.col("from_bus")).alias("from_bus"),
        pl.when(is_20).then(pl.col("from_bus")).otherwise(pl.col("to_bus")).alias("to_bus"))
    a, b = ac_power_flow(f), ac_power_flow(f.with_changes(lines=flipped))
    np.testing.assert_allclose(a.v_pu, b.v_pu, atol=1e-12)
    np.testing.assert_allclose(a.line_p_kw, b.line_p_kw, atol=1e-9)
    assert (b.line_p_kw > 0).all()  # engine flows stay parent -> child


def test_non_convergence_is_reported_not_raised():
    f = ieee33()
    topo = f.topology
    res = ac_power_flow(f, 8 * topo.load_kw, 8 * topo.load_kvar, max_iter=50)
    assert not res.converged
    assert res.iterations <= 50


@pytest.mark.parametrize("p, field", [(np.zeros(5), "p_withdraw_kw"), ("nan", "p_withdraw_kw")])
def test_bad_withdrawals(p, field):
    f = ieee33()
    if isinstance(p, str):
        p = f.topology.load_kw.copy()
        p[3] = np.nan
    with pytest.raises(InputError) as exc:
        ac_power_flow(f, p)
    assert (exc.value.table, exc.value.field) == ("powerflow", field)


def _lindistflow(f: Feeder, p_kw: np.ndarray, q_kvar: np.ndarray):
    topo = f.topology
    p_line = topo.downstream_sum(p_kw)
    q_line = topo.downstream_sum(q_kvar)
    v2 = f.v0_pu ** 2 - 2 * topo.path_sum(topo.r_pu * p_line + topo.x_pu * q_line) / S_BASE_KVA
    return np.sqrt(v2), p_line, q_line


def test_linear_model_error_on_ieee33():
    f = ieee33()
    topo = f.topology
    p, q = topo.load_kw, topo.load_kvar
    v_lin, p_lin, q_lin = _lindistflow(f, p, q)
    err = linear_model_error(f, p, q, v_lin, p_lin, q_lin)
    assert err["converged"]
    # Lossless LinDistFlow overestimates voltages, most at the far end of the long trunk.
    assert 0.001 < err["max_v_error_pu"] < 0.01
    assert err["max_v_error_bus"] in {"16", "17", "18"}
    # The worst flow error is the loss carried by the first line.
    assert err["max_flow_error_line"] == "1"
    assert err["max_flow_error_kw"] == pytest.approx(err["ac_losses_kw"], abs=1e-6)
    assert err["ac_min_v_bus"] == "18"


def test_linear_model_error_is_zero_for_the_ac_solution_and_finds_a_planted_error():
    f = synthetic(60, 4)
    topo = f.topology
    ac = ac_power_flow(f)
    v = ac.v_pu.copy()
    lp = ac.line_p_kw.copy()
    err = linear_model_error(f, topo.load_kw, topo.load_kvar, v, lp, ac.line_q_kvar)
    assert err["max_v_error_pu"] < 1e-9 and err["max_flow_error_kw"] < 1e-6
    v[17] += 0.05
    lp[33] -= 40.0
    err = linear_model_error(f, topo.load_kw, topo.load_kvar, v, lp, ac.line_q_kvar)
    assert err == linear_model_error(f, topo.load_kw, topo.load_kvar, v, lp, ac.line_q_kvar, ac=ac)
    assert err["max_v_error_bus"] == topo.bus_ids[17]
    assert err["max_v_error_pu"] == pytest.approx(0.05)
    assert err["max_flow_error_line"] == topo.line_ids[33]
    assert err["max_flow_error_kw"] == pytest.approx(40.0)
    with pytest.raises(InputError) as exc:
        linear_model_error(f, topo.load_kw, topo.load_kvar, v[:-1], lp, ac.line_q_kvar)
    assert exc.value.field == "v_lin_pu"


@pytest.mark.parametrize("dense, path", [(True, True), (False, True), (False, False)])
def test_every_sweep_method_and_a_warm_start_give_the_same_voltages(monkeypatch, dense, path):
    """Dense path matrix, sparse path matrix and triangular solves are one operator; a sweep started from
    another operating point's voltages converges to the same voltages as from flat, in no more sweeps."""
    from dsomarket.engine import powerflow

    feeder = ieee69()
    topo = feeder.topology
    s = (topo.load_kw + 1j * topo.load_kvar) / S_BASE_KVA
    ref = powerflow.backward_forward_sweep(topo, topo.r_pu, topo.x_pu, feeder.v0_pu, s)
    monkeypatch.setattr(powerflow, "DENSE_SWEEP_ENTRIES", 10 ** 9 if dense else 0)
    monkeypatch.setattr(powerflow, "PATH_SWEEP_NNZ", 10 ** 9 if path else 0)
    cold = powerflow.backward_forward_sweep(topo, topo.r_pu, topo.x_pu, feeder.v0_pu, s)
    assert cold.converged and np.max(np.abs(cold.v - ref.v)) < 1e-12
    nearby = powerflow.backward_forward_sweep(topo, topo.r_pu, topo.x_pu, feeder.v0_pu, 0.9 * s)
    warm = powerflow.backward_forward_sweep(topo, topo.r_pu, topo.x_pu, feeder.v0_pu, s, v_start=nearby.v)
    assert warm.converged and np.max(np.abs(warm.v - cold.v)) < 1e-9
    assert warm.iterations <= cold.iterations
