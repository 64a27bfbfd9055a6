"""Operating envelopes: any dispatch inside everyone's envelopes is feasible (AC power flow), shared fairly."""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsomarket.engine.envelopes import operating_envelopes, water_fill
from dsomarket.engine.errors import InputError
from dsomarket.engine.feeders import synthetic
from dsomarket.engine.network import Feeder
from dsomarket.engine.operating import ac_excess
from tests.reference import water_fill_one_limit_per_round
from tests.test_registry import chain, ders


def _dispatch_excess(feeder, env, tan_phi: pl.DataFrame, forecast_p, forecast_q, choice: np.ndarray) -> float:
    """Worst AC excess over any limit (kVA, or pu of squared voltage x 1000) for one dispatch.

    ``choice`` per DER and interval in [-1, 1]: -1 = at its import maximum, +1 = at its export maximum;
    ``tan_phi`` the DERs' ``der_id, tan_phi`` (kvar per kW, same sign).
    """
    topo = feeder.topology
    rows = env.ders.join(tan_phi, on="der_id").sort("interval", "der_id", nulls_last=True)
    intervals = rows["interval"].unique(maintain_order=True).to_list()
    worst = -np.inf
    for k, iv in enumerate(intervals):
        r = rows.filter(pl.col("interval").is_null() if iv is None else pl.col("interval") == iv)
        c = choice[: r.height, k]
        kw = np.where(c > 0, c * r["export_max_kw"].to_numpy(), c * r["import_max_kw"].to_numpy())
        p, q = forecast_p[:, k].copy(), forecast_q[:, k].copy()
        at = topo.bus_index_of(r["bus"].to_numpy())
        np.add.at(p, at, -kw)
        np.add.at(q, at, -kw * r["tan_phi"].to_numpy())  # each DER's vars move with its watts
        for direction in ("export", "import"):
            ex = ac_excess(feeder, p[:, None], q[:, None], direction)
            worst = max(worst, ex[: topo.n_line].max(), 1000 * ex[topo.n_line:].max())
    return worst


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), n_der=st.integers(2, 15), data=st.data())
def test_any_dispatch_inside_the_envelopes_is_feasible_in_the_ac_power_flow(seed, n_der, data):
    feeder = synthetic(30, seed % 7)
    rng = np.random.default_rng(seed)
    topo = feeder.topology
    buses = rng.choice(topo.bus_ids[1:].astype(str), n_der)
    t = ders(der_id=[f"d{k}" for k in range(n_der)], bus=buses, feeder=[feeder.name] * n_der,
             export_kw=rng.uniform(0, 3000, n_der), import_kw=rng.uniform(0, 3000, n_der),
             tan_phi=rng.choice([-0.5, -0.2, 0.0, 0.2, 0.5], n_der))
    scale = np.array([0.3, 1.0])
    forecast = pl.DataFrame({
        "bus": np.tile(topo.bus_ids.astype(str), 2),
        "interval": np.repeat(["2026-07-01T12:00:00Z", "2026-07-01T18:00:00Z"], topo.n_bus),
        "p_kw": np.concatenate([topo.load_kw * s for s in scale]),
        "q_kvar": np.concatenate([topo.load_kvar * s for s in scale])})
    env = operating_envelopes(feeder, t, forecast)
    assert env.ac_check.passed
    assert (env.ders["export_max_kw"] >= 0).all() and (env.ders["import_max_kw"] >= 0).all()
    assert (env.ders["export_max_kw"].to_numpy() <= np.repeat(t["export_kw"].to_numpy(), 2) + 1e-6).all()
    p = np.stack([topo.load_kw * s for s in scale], axis=1)
    q = np.stack([topo.load_kvar * s for s in scale], axis=1)
    corners = [np.ones((n_der, 2)), -np.ones((n_der, 2))]
    corners += [data.draw(st.sampled_from([-1.0, 0.0, 1.0])) * np.ones((n_der, 2)) for _ in range(2)]
    corners.append(rng.choice([-1.0, 1.0], (n_der, 2)))
    corners.append(rng.uniform(-1, 1, (n_der, 2)))
    # The corners that push the voltages the linear model says the vars-absorbing DERs push the other way.
    absorbing = (t["tan_phi"].to_numpy() < 0)[:, None]
    corners += [np.where(absorbing, -1.0, 1.0) * np.ones((n_der, 2)), np.where(absorbing, 1.0, -1.0) * np.ones((n_der, 2))]
    for choice in corners:
        assert _dispatch_excess(feeder, env, t.select("der_id", "tan_phi"), p, q, choice) <= 0.011


def test_proportional_and_equal_sharing_on_one_constrained_line():
    """Two DERs below a 100 kVA line: 100 and 300 kW nameplates."""
    t = ders(der_id=["small", "big"], bus=["2", "2"], export_kw=[100.0, 300.0])
    prop = operating_envelopes(chain(), t).ders
    e = dict(zip(prop["der_id"], prop["export_max_kw"], strict=True))
    assert e["big"] == pytest.approx(3 * e["small"], rel=1e-9)          # the same fraction of nameplate
    assert 99.0 < e["big"] + e["small"] <= 100.0                         # the line, less its losses
    assert (prop["export_binding"] == "line a reverse flow").all()
    eq = operating_envelopes(chain(), t, rule="equal").ders
    e = dict(zip(eq["der_id"], eq["export_max_kw"], strict=True))
    assert e["big"] == pytest.approx(e["small"], rel=1e-9) and 49.5 < e["small"] <= 50.0


def test_water_fill_stops_only_the_ders_on_the_binding_limit():
    # Limit 0 involves DERs 0 and 1 (room 10); limit 1 all three (room 100). Weights 1.
    sens = sp.csc_matrix(np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]]))
    alloc, binding = water_fill(np.array([10.0, 100.0]), sens, np.array([50.0, 50.0, 200.0]), np.ones(3))
    assert alloc == pytest.approx([5.0, 5.0, 90.0])
    assert binding.tolist() == [0, 0, 1]
    # A limit broken before anyone moves gives its DERs nothing.
    alloc, _ = water_fill(np.array([-1.0, 100.0]), sens, np.array([50.0, 50.0, 200.0]), np.ones(3))
    assert alloc == pytest.approx([0.0, 0.0, 100.0])


def test_unknown_rule_is_refused():
    with pytest.raises(InputError) as err:
        operating_envelopes(chain(), ders(der_id=["x"], bus=["2"], export_kw=[1.0]), rule="fifo")
    assert err.value.field == "rule"


def test_a_der_absorbing_vars_is_limited_by_the_voltage_its_imports_raise():
    """A DER at the end of a reactive line with tan_phi = -1 (0.707 leading): importing, it injects vars and
    raises the voltage there; exporting it absorbs them. Its import is capped by bus 2's vmax, which a DER
    at unity power factor could never reach by importing; every corner passes the AC power flow."""
    buses = pl.DataFrame({"bus": ["0", "1", "2"], "load_kw": [0.0, 0.0, 0.0], "vmax_pu": [1.05, 1.05, 1.02]})
    lines = pl.DataFrame({"line": ["a", "b"], "from_bus": ["0", "1"], "to_bus": ["1", "2"],
                          "r_ohm": [0.05, 0.05], "x_ohm": [1.0, 1.0], "s_max_kva": [1e6, 1e6]})
    feeder = Feeder.from_tables({"name": "f", "root_bus": "0", "base_kv": 12.0}, buses, lines)
    t = ders(der_id=["lead", "unity"], bus=["2", "1"], export_kw=[2000.0, 2000.0], import_kw=[2000.0, 2000.0],
             tan_phi=[-1.0, 0.0])
    env = operating_envelopes(feeder, t)
    assert env.ac_check.passed
    lead = env.ders.filter(pl.col("der_id") == "lead").row(0, named=True)
    assert lead["import_max_kw"] < 2000.0 and lead["import_binding"] == "bus 2 voltage above vmax"
    p, q = np.zeros((3, 1)), np.zeros((3, 1))
    tan = t.select("der_id", "tan_phi")
    for a in (-1.0, 1.0):
        for b in (-1.0, 1.0):
            assert _dispatch_excess(feeder, env, tan, p, q, np.array([[a], [b]])) <= 0.011
    # 2 % more import than its envelope breaks the limit: the envelope is no looser than it need be ...
    env_more = dataclasses.replace(env, ders=env.ders.with_columns(
        pl.when(pl.col("der_id") == "lead").then(pl.col("import_max_kw") * 1.02).otherwise(pl.col("import_max_kw"))
        .alias("import_max_kw")))
    assert _dispatch_excess(feeder, env_more, tan, p, q, np.array([[-1.0], [1.0]])) > 0


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), n_c=st.integers(1, 12), n_d=st.integers(1, 12), n_t=st.integers(1, 4))
def test_water_fill_matches_the_one_limit_per_round_reference(seed, n_c, n_d, n_t):
    rng = np.random.default_rng(seed)
    sens = rng.uniform(0, 1, (n_c, n_d)) * (rng.uniform(0, 1, (n_c, n_d)) < 0.5)
    margin = rng.uniform(-5, 100, (n_c, n_t))
    cap = rng.uniform(0, 60, n_d) * (rng.uniform(0, 1, n_d) < 0.9)
    weight = np.where(rng.uniform(0, 1, n_d) < 0.5, cap, 1.0)
    alloc, _ = water_fill(margin, sp.csc_matrix(sens), cap, weight)
    for k in range(n_t):
        ref = water_fill_one_limit_per_round(margin[:, k], sens, cap, weight)
        assert alloc[:, k] == pytest.approx(ref, rel=1e-9, abs=1e-9)
