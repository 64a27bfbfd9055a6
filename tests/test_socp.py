"""Branch-flow SOCP clearing: DLMP sign, losses against the LP and the AC power flow, exactness, KKT."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl
import pytest

from dsomarket.engine import clearing, socp
from dsomarket.engine.bids import Battery, MarketRules, validate_bids
from dsomarket.engine.errors import InputError
from dsomarket.engine.network import S_BASE_KVA, Feeder

ISO = 40.0
SOCP = clearing.ClearingOptions(formulation="socp", ac_check=False)
LP = clearing.ClearingOptions(formulation="lindistflow", ac_check=False)


def _feeder(lines, loads=None, vmin=0.9, vmax=1.1) -> Feeder:
    """Feeder on a 1 kV base, so that ohms are per unit on the 1 MVA base.

    ``lines``: (from, to, r_ohm, x_ohm, s_max_kva); ``loads``: bus -> (kW, kvar).
    """
    loads = loads or {}
    buses = sorted({b for ln in lines for b in ln[:2]})
    return Feeder.from_tables(
        {"name": "t", "root_bus": "0", "base_kv": 1.0, "v0_pu": 1.0},
        pl.DataFrame({"bus": buses, "vmin_pu": [vmin] * len(buses), "vmax_pu": [vmax] * len(buses),
                      "load_kw": [loads.get(b, (0.0, 0.0))[0] for b in buses],
                      "load_kvar": [loads.get(b, (0.0, 0.0))[1] for b in buses]}),
        pl.DataFrame({"line": [f"{a}-{b}" for a, b, *_ in lines], "from_bus": [ln[0] for ln in lines],
                      "to_bus": [ln[1] for ln in lines], "r_ohm": [ln[2] for ln in lines],
                      "x_ohm": [ln[3] for ln in lines], "s_max_kva": [ln[4] for ln in lines]}))


def _bids(rows) -> pl.DataFrame:
    """``rows``: (bus, side, kW, price[, tan_phi])."""
    return pl.DataFrame({"bid_id": [f"b{k}" for k in range(len(rows))], "bus": [r[0] for r in rows],
                         "side": [r[1] for r in rows], "quantity_kw": [float(r[2]) for r in rows],
                         "price": [float(r[3]) for r in rows],
                         "tan_phi": [float(r[4]) if len(r) > 4 else 0.0 for r in rows]})


def _price(result, bus: str, column: str = "dlmp") -> float:
    return float(result.prices.filter(pl.col("bus") == bus)[column][0])


def _cleared(result) -> np.ndarray:
    return result.dispatch["cleared_kw"].to_numpy()


# A 5-bus feeder with a lateral, fixed load everywhere, and bids far from any DLMP,
# so that the LP and the SOCP clear the same quantities and differ by losses only.
SMALL = dict(lines=[("0", "1", 0.01, 0.01, math.inf), ("1", "2", 0.02, 0.01, math.inf),
                    ("2", "3", 0.02, 0.02, math.inf), ("1", "4", 0.03, 0.02, math.inf)],
             loads={"1": (300.0, 100.0), "2": (300.0, 100.0), "3": (300.0, 100.0), "4": (300.0, 100.0)})
SMALL_BIDS = [("3", "buy", 200, 200, 0.3), ("2", "sell", 150, 5), ("4", "sell", 100, 10)]


@pytest.mark.parametrize("side,price", [("sell", 36.0), ("buy", 44.0)])
def test_two_bus_dlmp_is_the_marginal_bid_and_loss_factor(side, price):
    # One line with r = 0.02 pu and negligible x: P0 = P and the received power is
    # w = P - r P^2 / v0, so dlmp_1 = lambda0 dP0/dw = lambda0 / (1 - 2 r P / v0).
    # A partly cleared bid at bus 1 must set dlmp_1 to its own price, which fixes P.
    r = 0.02
    feeder = _feeder([("0", "1", r, 1e-6, math.inf)])
    res = clearing.clear(feeder, _bids([("1", side, 5000, price)]), ISO, options=SOCP)
    assert res.ok and res.solver == "ecos"
    assert _price(res, "1") == pytest.approx(price, rel=1e-6)
    assert _price(res, "0") == pytest.approx(ISO, rel=1e-6)
    # The optimum is flat in the quantity (welfare is quadratic around it), so the
    # interior-point answer pins the quantity less tightly than the price.
    p_line = (1 - ISO / price) / (2 * r)
    assert _cleared(res)[0] == pytest.approx(abs(p_line - r * p_line ** 2) * S_BASE_KVA, rel=1e-4)
    assert res.interface_import_kw[0] == pytest.approx(p_line * S_BASE_KVA, rel=1e-4)
    row = res.prices.filter(pl.col("bus") == "1")
    assert row["energy"][0] == ISO
    assert row["congestion"][0] == pytest.approx(0.0, abs=1e-6)
    assert row["voltage"][0] == pytest.approx(0.0, abs=1e-6)
    assert row["loss"][0] == pytest.approx(price - ISO, rel=1e-5)


def test_socp_against_lp_differs_by_losses():
    feeder = _feeder(**SMALL)
    bids = _bids(SMALL_BIDS)
    lp = clearing.clear(feeder, bids, ISO, options=LP)
    cp_ = clearing.clear(feeder, bids, ISO, options=SOCP)
    assert lp.ok and cp_.ok
    np.testing.assert_allclose(_cleared(cp_), _cleared(lp), atol=1e-4)
    loss_kw = cp_.interface_import_kw[0] - lp.interface_import_kw[0]
    assert 0 < loss_kw < 0.05 * lp.interface_import_kw[0]
    # Withdrawals downstream of lossy lines cost more than at the interface, and more than the LP says.
    assert np.all(cp_.prices["loss"].to_numpy()[1:] > 0)
    assert np.all(cp_.prices["dlmp"].to_numpy() >= lp.prices["dlmp"].to_numpy() - 1e-6)
    # Welfare is the LP's objective: buyers' value - sellers' cost - ISO bill, per interval.
    d = cp_.dispatch
    sign = np.where(d["side"].to_numpy() == "buy", 1.0, -1.0)
    value = (sign * d["price"].to_numpy() * _cleared(cp_)).sum() / S_BASE_KVA
    assert cp_.welfare == pytest.approx(value - ISO * cp_.interface_import_kw[0] / S_BASE_KVA, rel=1e-6)


def test_losses_match_the_ac_power_flow_of_the_socp_dispatch():
    powerflow = pytest.importorskip("dsomarket.engine.powerflow")
    feeder = _feeder(**SMALL)
    book = validate_bids(_bids(SMALL_BIDS), feeder)
    res = socp.clear(feeder, book, ISO, options=clearing.ClearingOptions(formulation="socp", ac_check=True))
    assert res.ok and res.relaxation_gap < 1e-6
    w_p, w_q = clearing.net_withdrawal(feeder, book, _cleared(res) / S_BASE_KVA, feeder.loads())
    ac = powerflow.ac_power_flow(feeder, w_p[:, 0], w_q[:, 0])
    assert ac.converged
    assert res.interface_import_kw[0] == pytest.approx(ac.p0_kw, abs=1e-3)
    assert res.interface_import_kw[0] - w_p[:, 0].sum() == pytest.approx(ac.losses_kw, rel=1e-4)
    np.testing.assert_allclose(res.buses["v_pu"].to_numpy(), ac.v_pu, atol=1e-6)
    assert res.ac_check["max_v_error_pu"] < 1e-6 and res.ac_check["max_flow_error_kw"] < 1e-3


def test_relaxation_is_exact_on_ieee33():
    feeders = pytest.importorskip("dsomarket.engine.feeders")
    feeder = feeders.ieee33()
    rng = np.random.default_rng(7)
    k = 60
    bids = pl.DataFrame({"bid_id": [f"b{i}" for i in range(k)],
                         "bus": rng.choice(feeder.topology.bus_ids[1:], k).astype(str),
                         "side": rng.choice(["buy", "sell"], k), "quantity_kw": rng.uniform(20, 200, k),
                         "price": rng.uniform(10, 90, k)})
    for solver in socp.SOLVERS:
        res = socp.clear(feeder, validate_bids(bids, feeder), 50.0, options=SOCP, solver=solver)
        assert res.ok and res.solver == solver
        assert res.relaxation_gap < 1e-6
        assert not res.diagnosis
        assert res.buses["v_pu"].min() >= feeder.topology.vmin_pu.min() - 1e-6


def test_inexact_relaxation_is_flagged():
    # Exporting against a binding upper voltage limit: the relaxation may absorb
    # fictitious losses (x l) to hold voltages down, which Farivar & Low's
    # exactness conditions exclude. The gap must be reported, not hidden.
    lines = [("0", "1", 0.02, 0.02, math.inf), ("1", "2", 0.05, 0.05, math.inf)]
    bids = _bids([("2", "sell", 5000, 10), ("1", "sell", 5000, 10)])
    res = clearing.clear(_feeder(lines, vmin=0.95, vmax=1.05), bids, ISO, options=SOCP)
    assert res.ok and res.relaxation_gap > socp.EXACT_GAP
    assert res.diagnosis[0]["limit"] == "relaxation_gap" and res.diagnosis[0]["element"] == "1-2"
    loose = clearing.clear(_feeder(lines, vmin=0.95, vmax=1.3), bids, ISO, options=SOCP)
    assert loose.ok and loose.relaxation_gap < 1e-6 and not loose.diagnosis


def test_dlmp_is_the_finite_difference_of_welfare():
    # Central difference of the optimal cost in the fixed load at bus 3: an independent
    # check of the DLMP's sign and size, losses included.
    feeder = _feeder(**SMALL)
    bids = _bids(SMALL_BIDS)
    res = clearing.clear(feeder, bids, ISO, options=SOCP)
    eps_kw = 1.0

    def welfare(delta):
        buses = feeder.buses.with_columns(
            pl.when(pl.col("bus") == "3").then(pl.col("load_kw") + delta).otherwise(pl.col("load_kw"))
            .alias("load_kw"))
        return clearing.clear(feeder.with_changes(buses=buses), bids, ISO, options=SOCP).welfare

    slope = -(welfare(eps_kw) - welfare(-eps_kw)) / (2 * eps_kw / S_BASE_KVA)
    assert slope == pytest.approx(_price(res, "3"), rel=1e-4)


def _kkt_market():
    # Lateral 0-1-2 is long and weak: the buy at bus 2 runs into vmin. Line 0-3 has a
    # 500 kVA limit that the buy at bus 3 fills. Both buys stay marginal.
    feeder = _feeder([("0", "1", 0.01, 0.01, math.inf), ("1", "2", 0.05, 0.05, math.inf),
                      ("0", "3", 0.01, 0.01, 500.0)],
                     loads={"3": (100.0, 50.0)}, vmin=0.95, vmax=1.05)
    return feeder, _bids([("2", "buy", 5000, 100), ("3", "buy", 2000, 100)])


def test_kkt_cone_feasibility_and_complementary_slackness():
    feeder, bids = _kkt_market()
    book = validate_bids(bids, feeder)
    iso = np.array([ISO])
    model = socp.build(feeder, book, iso, MarketRules(), (), *feeder.loads())
    status, _ = socp.solve(model)
    assert status == "optimal"
    var, con, topo = model.variables, model.constraints, feeder.topology
    per_mwh = model.cost_scale / (model.power_base_kva / S_BASE_KVA)
    p, q, l, v = (var[k].value for k in ("line_p", "line_q", "line_l", "v"))
    v_send = v[topo.parent[1:]]
    assert np.all(l * v_send - p ** 2 - q ** 2 >= -1e-8)  # primal: inside the cone ...
    assert socp.relaxation_gap(model, feeder)[0] < 1e-6  # ... and on its surface

    lim = model.lim_lines
    mu = con["line_thermal"].dual_value * per_mwh
    slack_s = topo.s_max_kva[lim] / model.power_base_kva - np.hypot(p[lim], q[lim])
    assert np.all(mu >= -1e-8) and np.all(slack_s >= -1e-8)
    assert np.all(np.abs(mu * slack_s) < 1e-6)
    assert mu.max() > 1.0  # the limit binds, so the check above is not vacuous

    nu_lo = con["bus_v_min"].dual_value * model.cost_scale
    nu_hi = con["bus_v_max"].dual_value * model.cost_scale
    assert np.all(nu_lo >= -1e-8) and np.all(nu_hi >= -1e-8)
    assert np.all(np.abs(nu_lo * (v[1:] - topo.vmin_pu[1:] ** 2)) < 1e-6)
    assert np.all(np.abs(nu_hi * (topo.vmax_pu[1:] ** 2 - v[1:])) < 1e-6)
    assert nu_lo.max() > 1.0


def test_components_name_the_binding_limits():
    feeder, bids = _kkt_market()
    res = clearing.clear(feeder, bids, ISO, options=SOCP)
    assert res.ok
    for bus in ("2", "3"):
        assert _price(res, bus) == pytest.approx(100.0, rel=1e-5)  # marginal buys set the price
    assert _price(res, "3", "congestion") > 10.0 and _price(res, "3", "voltage") == pytest.approx(0, abs=1e-6)
    assert _price(res, "2", "voltage") > 10.0 and _price(res, "2", "congestion") == pytest.approx(0, abs=1e-6)
    assert _price(res, "1", "voltage") > 0  # a withdrawal at 1 also lowers the voltage at 2
    assert abs(_price(res, "2", "loss")) < _price(res, "2", "voltage")
    lines = res.lines.filter(pl.col("line") == "0-3")
    assert lines["loading_pct"][0] == pytest.approx(100.0, abs=1e-4)
    assert res.buses.filter(pl.col("bus") == "2")["v_pu"][0] == pytest.approx(0.95, abs=1e-6)


def test_battery_rows_are_the_lps():
    feeder = _feeder(**SMALL)
    t0 = datetime(2025, 1, 1, tzinfo=timezone.utc)
    ivs = [t0, t0 + timedelta(hours=1)]
    bids = pl.DataFrame({"bid_id": ["c", "d"], "bus": ["2", "2"], "side": ["buy", "sell"],
                         "quantity_kw": [400.0, 400.0], "price": [-50.0, -50.0], "interval": ivs,
                         "resource_id": ["bat", "bat"]})
    bat = (Battery("bat", energy_kwh=300.0, charge_kw=400.0, discharge_kw=400.0, eta_charge=0.9,
                   eta_discharge=0.9),)
    iso = [20.0, 80.0]
    lp = clearing.clear(feeder, bids, iso, resources=bat, options=LP)
    res = clearing.clear(feeder, bids, iso, resources=bat, options=SOCP)
    assert lp.ok and res.ok and res.relaxation_gap < 1e-6
    charge, discharge = _cleared(res)
    assert charge == pytest.approx(300.0 / 0.9, rel=1e-5)  # fills the battery
    assert discharge == pytest.approx(300.0 * 0.9, rel=1e-5)  # and empties it
    np.testing.assert_allclose(_cleared(res), _cleared(lp), rtol=1e-5)


def test_shedding_at_the_value_of_lost_load_and_infeasibility():
    feeder = _feeder(**SMALL).with_changes(import_max_kw=600.0)
    short = clearing.clear(feeder, _bids(SMALL_BIDS), ISO, options=SOCP)
    assert short.status == "infeasible" and short.solver == "ecos" and short.diagnosis
    rules = MarketRules(value_of_lost_load=10_000.0)
    res = clearing.clear(feeder, _bids(SMALL_BIDS), ISO, rules=rules, options=SOCP)
    assert res.ok and res.relaxation_gap < 1e-6
    assert res.interface_import_kw[0] == pytest.approx(600.0, rel=1e-6)
    assert res.shed is not None and res.shed["shed_kw"].sum() > 0
    # Bus 3 sheds part of its load: a shed kW also relieves 1/3 kvar (the load's power
    # factor), so the value of lost load prices the pair, not the kW alone.
    assert 0 < res.shed.filter(pl.col("bus") == "3")["shed_kw"][0] < 300.0
    assert _price(res, "3") + _price(res, "3", "dlmp_q") / 3 == pytest.approx(10_000.0, rel=1e-6)
    assert _price(res, "0", "congestion") > 0


def test_unknown_solver_is_an_input_error():
    feeder = _feeder(**SMALL)
    with pytest.raises(InputError, match="solver"):
        socp.clear(feeder, validate_bids(_bids(SMALL_BIDS), feeder), ISO, options=SOCP, solver="highs")
