"""Nodal clearing: hand-solved cases, an independent formulation, optimality conditions, properties."""

from __future__ import annotations

import math
from datetime import datetime, timezone

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsomarket.engine.bids import MarketRules, parse_resources, validate_bids
from dsomarket.engine.clearing import ClearingOptions, NodalMarket, clear
from dsomarket.engine.errors import InputError
from dsomarket.engine.feeders import ieee33, synthetic
from dsomarket.engine.network import Feeder
from tests.reference import solve_reference

NO_AC = ClearingOptions(formulation="lossless", ac_check=False)  # hand-solved cases of the lossless LP


def chain(loads_kw, r_ohm=0.5, x_ohm=0.3, s_max=None, vmin=0.9, loads_kvar=None) -> Feeder:
    """A straight feeder 0-1-2-... with the given loads (kW) at buses 1.."""
    n = len(loads_kw) + 1
    s_max = [math.inf] * (n - 1) if s_max is None else s_max
    buses = pl.DataFrame({"bus": [str(k) for k in range(n)], "vmin_pu": [vmin] * n, "vmax_pu": [1.05] * n,
                          "load_kw": [0.0, *map(float, loads_kw)],
                          "load_kvar": [0.0, *map(float, loads_kvar or [0.0] * (n - 1))]})
    lines = pl.DataFrame({"line": [f"l{k}" for k in range(1, n)], "from_bus": [str(k - 1) for k in range(1, n)],
                          "to_bus": [str(k) for k in range(1, n)], "r_ohm": [r_ohm] * (n - 1),
                          "x_ohm": [x_ohm] * (n - 1), "s_max_kva": [float(s) for s in s_max]})
    return Feeder.from_tables({"name": "chain", "root_bus": "0", "base_kv": 12.66}, buses, lines)


def bid_table(rows) -> pl.DataFrame:
    return pl.DataFrame(rows, schema={"bid_id": pl.Utf8, "bus": pl.Utf8, "side": pl.Utf8,
                                      "quantity_kw": pl.Float64, "price": pl.Float64}, orient="row")


def random_bids(feeder: Feeder, n: int, seed: int, tan_phi: bool = False) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    buses = feeder.buses["bus"].to_numpy()[1:]
    out = pl.DataFrame({"bid_id": [f"b{k}" for k in range(n)], "bus": rng.choice(buses, n),
                        "side": rng.choice(["buy", "sell"], n), "quantity_kw": rng.uniform(5, 300, n),
                        "price": np.round(rng.uniform(-20, 150, n), 2)})
    if tan_phi:
        out = out.with_columns(tan_phi=pl.Series(rng.choice([0.0, 0.2, 0.48], n)))
    return out


def dlmp_of(res, bus: str) -> float:
    return float(res.prices.filter(pl.col("bus") == bus)["dlmp"][0])


# -- hand-solved ----------------------------------------------------------------------

def test_two_bus_congestion_prices_the_marginal_local_offer():
    # 100 kW load behind a 40 kVA line; the ISO sells at 20, a local offer at 30.
    # The line carries its 40 kW, the offer covers 60 kW and sets the price: 30 = 20 + 10 congestion.
    f = chain([100], s_max=[40])
    res = clear(f, bid_table([("s1", "1", "sell", 100, 30), ("b1", "1", "buy", 30, 25)]), 20.0, options=NO_AC)
    assert res.ok
    d = dict(zip(res.dispatch["bid_id"], res.dispatch["cleared_kw"]))
    assert d == {"s1": pytest.approx(60.0), "b1": pytest.approx(0.0)}
    row = res.prices.filter(pl.col("bus") == "1").row(0, named=True)
    assert row["dlmp"] == pytest.approx(30.0)
    assert row["energy"] == pytest.approx(20.0)
    assert row["congestion"] == pytest.approx(10.0)
    assert row["voltage"] == pytest.approx(0.0, abs=1e-9)
    assert res.welfare == pytest.approx(-(30 * 0.060 + 20 * 0.040))
    assert res.lines["loading_pct"][0] == pytest.approx(100.0)


def test_uncongested_feeder_prices_every_bus_at_the_iso_price():
    f = chain([100, 50, 80])
    res = clear(f, bid_table([("s", "3", "sell", 50, 10), ("b", "2", "buy", 50, 90)]), 42.0, options=NO_AC)
    assert np.allclose(res.prices["dlmp"].to_numpy(), 42.0)
    assert res.interface_import_kw[0] == pytest.approx(100 + 50 + 80 - 50 + 50)


def test_voltage_limit_prices_by_the_shared_path_resistance():
    # One line, load L at bus 1; v1 = 1 - 2 r P (pu) must stay >= vmin^2. Solve by hand:
    # P_max = (1 - vmin^2) / (2 r_pu) MW; the local offer covers the rest and sets the DLMP.
    r_ohm, vmin = 20.0, 0.95
    f = chain([2000], r_ohm=r_ohm, x_ohm=0.001, vmin=vmin)
    r_pu = r_ohm / 12.66 ** 2
    p_max_kw = (1 - vmin ** 2) / (2 * r_pu) * 1000
    res = clear(f, bid_table([("s", "1", "sell", 2000, 70)]), 30.0, options=NO_AC)
    assert res.interface_import_kw[0] == pytest.approx(p_max_kw, rel=1e-6)
    row = res.prices.filter(pl.col("bus") == "1").row(0, named=True)
    assert row["dlmp"] == pytest.approx(70.0)
    assert row["voltage"] == pytest.approx(40.0)
    assert row["congestion"] == pytest.approx(0.0, abs=1e-9)
    assert float(res.buses.filter(pl.col("bus") == "1")["v_pu"][0]) == pytest.approx(vmin, abs=1e-9)


def test_a_purely_active_flow_reaches_exactly_s_max():
    f = chain([500], s_max=[100], r_ohm=0.01, x_ohm=0.01)
    res = clear(f, bid_table([("s", "1", "sell", 1000, 1000)]), 10.0, options=NO_AC)
    assert res.interface_import_kw[0] == pytest.approx(100.0)


# -- against an independent formulation ----------------------------------------------

@pytest.mark.parametrize("feeder,n_bids,seed,price", [
    (ieee33(), 80, 1, 35.0),
    (ieee33(), 150, 2, 80.0),
    (synthetic(120, 7), 200, 3, 45.0),
])
def test_welfare_and_prices_match_an_independent_textbook_model(feeder, n_bids, seed, price):
    bids = random_bids(feeder, n_bids, seed, tan_phi=True)
    eng = clear(feeder, bids, price, options=NO_AC)
    ref = solve_reference(feeder, bids, price)
    assert eng.ok and ref.status == "optimal"
    assert eng.welfare == pytest.approx(ref.welfare, rel=1e-6, abs=1e-6)
    assert eng.interface_import_kw[0] == pytest.approx(ref.import_kw, rel=1e-5, abs=1e-3)
    ref_dlmp = np.array([ref.dlmp[b] for b in eng.prices["bus"]])
    assert np.allclose(eng.prices["dlmp"].to_numpy(), ref_dlmp, atol=1e-3 * max(1.0, abs(price)))


# -- optimality conditions -----------------------------------------------------------

def assert_kkt(market: NodalMarket, sol, tol=1e-6):
    """Primal feasibility, dual signs and complementary slackness of a HiGHS solution (minimisation)."""
    c, lo, up, a, rlo, rup, _ = market.model.assemble()
    lo, up = market.solver.col_lower, market.solver.col_upper
    x, y, d = sol.x, sol.row_dual, sol.col_dual
    ax = a @ x
    scale = 1.0 + np.abs(c).max()
    assert np.all(x >= lo - tol) and np.all(x <= up + tol), "column bounds"
    assert np.all(ax >= rlo - tol) and np.all(ax <= rup + tol), "row bounds"
    assert np.allclose(d, c - a.T @ y, atol=tol * scale), "reduced costs"
    at_lo, at_up = np.isclose(x, lo, atol=tol), np.isclose(x, up, atol=tol)
    # A column strictly between its bounds has no reduced cost; at its lower bound it is >= 0, upper <= 0.
    assert np.all(np.abs(d[~at_lo & ~at_up]) <= tol * scale), "column complementary slackness"
    assert np.all(d[at_lo & ~at_up] >= -tol * scale) and np.all(d[at_up & ~at_lo] <= tol * scale), "column duals"
    r_lo, r_up = np.isclose(ax, rlo, atol=tol), np.isclose(ax, rup, atol=tol)
    assert np.all(np.abs(y[~r_lo & ~r_up]) <= tol * scale), "row complementary slackness"
    assert np.all(y[r_lo & ~r_up] >= -tol * scale) and np.all(y[r_up & ~r_lo] <= tol * scale), "row duals"
    # Strong duality: the objective equals the dual objective of the active bounds.
    active_y = np.abs(y) > 1e-12
    active_d = np.abs(d) > 1e-12
    with np.errstate(invalid="ignore"):
        dual_obj = ((np.where(y > 0, rlo, rup) * y)[active_y].sum()
                    + (np.where(d > 0, lo, up) * d)[active_d].sum())
    assert c @ x == pytest.approx(dual_obj, rel=1e-7, abs=1e-7)


def assert_prices_consistent(res, tol=1e-5, abs_tol=0.0):
    """No accepted offer above its DLMP, no rejected one below; partial ones at it (buys mirrored): within ``tol``
    of 1 + |DLMP| plus ``abs_tol`` (per MWh; a loss-aware clearing's stationarity tolerance, where a trust region
    holds a bid)."""
    p = res.prices.select("bus", "interval", "dlmp", "dlmp_q")
    d = res.dispatch.join(p, on=["bus", "interval"], how="left", nulls_equal=True)
    tan = res.dispatch["tan_phi"] if "tan_phi" in res.dispatch.columns else 0.0
    value = d["dlmp"].to_numpy() + np.asarray(tan) * d["dlmp_q"].to_numpy()
    price, q, x = d["price"].to_numpy(), d["quantity_kw"].to_numpy(), d["cleared_kw"].to_numpy()
    sell = d["side"].to_numpy() == "sell"
    full, none = x >= q - 1e-6, x <= 1e-6
    part = ~full & ~none
    margin = tol * (1 + np.abs(value)) + abs_tol
    assert np.all(price[sell & ~none] <= value[sell & ~none] + margin[sell & ~none])
    assert np.all(price[sell & ~full] >= value[sell & ~full] - margin[sell & ~full])
    assert np.all(price[~sell & ~none] >= value[~sell & ~none] - margin[~sell & ~none])
    assert np.all(price[~sell & ~full] <= value[~sell & ~full] + margin[~sell & ~full])
    assert np.allclose(price[part], value[part], atol=max(1e-4, abs_tol))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kkt_conditions_and_price_consistency_on_a_congested_synthetic_feeder(seed):
    f = synthetic(300, seed)
    bids = random_bids(f, 600, seed)
    book = validate_bids(bids, f)
    m = NodalMarket(f, book, 40.0, options=NO_AC)
    sol = m.solve_raw()
    assert sol.ok
    assert_kkt(m, sol)
    res = m.result(sol)
    assert res.prices["congestion"].abs().max() > 1.0, "the case should exercise congestion"
    assert_prices_consistent(res)
    total = res.prices.select(pl.col("energy") + pl.col("congestion") + pl.col("voltage") + pl.col("loss"))
    assert np.allclose(total.to_series().to_numpy(), res.prices["dlmp"].to_numpy(), atol=1e-6)


def test_dlmp_is_the_marginal_cost_of_withdrawal_by_finite_difference():
    f = synthetic(60, 11)
    bids = random_bids(f, 120, 5)
    base = clear(f, bids, 40.0, options=NO_AC)
    rng = np.random.default_rng(0)
    for bus in rng.choice(f.buses["bus"].to_numpy()[1:], 5, replace=False):
        eps = 1e-3  # kW
        loads = f.buses.with_columns(pl.when(pl.col("bus") == bus).then(pl.col("load_kw") + eps)
                                     .otherwise(pl.col("load_kw")).alias("load_kw"))
        bumped = clear(f.with_changes(buses=loads), bids, 40.0, options=NO_AC)
        marginal = (base.welfare - bumped.welfare) / (eps / 1000.0)
        assert marginal == pytest.approx(dlmp_of(base, bus), rel=1e-4, abs=1e-3)


# -- AC power flow and formulations --------------------------------------------------

def test_linear_model_error_against_the_ac_power_flow_is_small_on_ieee33():
    f = ieee33()
    res = clear(f, random_bids(f, 60, 4), 50.0, options=ClearingOptions(formulation="lossless"))
    ac = res.ac_check
    assert ac["converged"]
    assert ac["max_v_error_pu"] < 0.01
    assert 50 < ac["losses_kw"] < 400
    assert ac["min_v_pu"] >= 0.90 - ac["max_v_error_pu"] - 1e-9


# -- infeasibility ---------------------------------------------------------------------

def test_infeasible_market_names_the_limit_and_the_place():
    f = ieee33()
    strict = f.with_changes(buses=f.buses.with_columns(vmin_pu=pl.lit(0.95)))
    res = clear(strict, bid_table([("b", "5", "buy", 10, 10)]), 50.0, options=NO_AC)
    assert res.status == "infeasible"
    places = {(d["limit"], d["element"]) for d in res.diagnosis}
    assert ("bus_v_min", "18") in places
    assert all(d["violation"] > 0 for d in res.diagnosis)


@pytest.mark.parametrize("formulation", ["lossless", "lossaware"])
def test_an_overloaded_line_is_diagnosed_as_its_thermal_limit_on_both_models(formulation):
    # 150 kW of fixed load at the end of two lines, the second rated 100 kVA, and no bid that can relieve it:
    # bus 2 is a leaf, so line l2 carries its 150 kW whatever else happens (at its bus-2 end exactly, more
    # at bus 1 with losses) and nothing else binds. The loss-aware model limits both ends of the line; its
    # relaxation used to fail on the hard receiving end and read an all-zero point as every voltage at 0.
    f = chain([0, 150], s_max=[math.inf, 100.0])
    res = clear(f, bid_table([("b", "1", "buy", 10, 10)]), 50.0, options=ClearingOptions(formulation=formulation))
    assert res.status == "infeasible"
    (diag,) = res.diagnosis
    assert (diag["limit"], diag["element"]) == ("line_thermal", "l2")
    # The lossless polygon is inscribed, the loss-aware one circumscribed (16 sides): the face's bend lies
    # between 150 cos(pi / 16) - 100 and 150 - 100 cos(pi / 16).
    assert 150 * math.cos(math.pi / 16) - 100 - 1e-6 <= diag["violation"] <= 150 - 100 * math.cos(math.pi / 16) + 1e-6


def test_load_shedding_at_the_value_of_lost_load_restores_feasibility():
    f = chain([300], s_max=[200])
    res = clear(f, bid_table([("b", "1", "buy", 10, 10)]), 50.0, rules=MarketRules(value_of_lost_load=5000),
                options=NO_AC)
    assert res.ok
    assert float(res.shed["shed_kw"].sum()) == pytest.approx(100.0)
    assert dlmp_of(res, "1") == pytest.approx(5000.0)
    assert clear(f, bid_table([("b", "1", "buy", 10, 10)]), 50.0, options=NO_AC).status == "infeasible"


# -- multi-interval resources ----------------------------------------------------------

T0 = datetime(2026, 11, 21, 0, tzinfo=timezone.utc)


def hours(k: int) -> datetime:
    return T0.replace(hour=k)


def test_battery_arbitrage_respects_state_of_charge_and_efficiency():
    # Cheap hour then dear hour. The battery charges 100 kW (90 kWh stored at 0.9) and can then
    # discharge at most 90 * 0.9 = 81 kW. Bids: it pays up to 15 to charge, sells at any price >= 0.
    # (At 15, charging in the dear hour to discharge more in it costs 85 per MWh for 81 of gain, so
    # the LP has no reason to charge and discharge at once.)
    f = chain([0.1], s_max=[10_000])
    bids = pl.DataFrame({
        "bid_id": ["c0", "c1", "d0", "d1"], "bus": "1", "side": ["buy", "buy", "sell", "sell"],
        "quantity_kw": 100.0, "price": [15.0, 15.0, 0.0, 0.0],
        "interval": [hours(0), hours(1), hours(0), hours(1)], "resource_id": "bat"})
    res_tab = pl.DataFrame({"resource_id": ["bat"], "kind": ["battery"], "energy_kwh": [200.0],
                            "charge_kw": [100.0], "discharge_kw": [100.0], "eta_charge": [0.9],
                            "eta_discharge": [0.9], "soc_init_kwh": [0.0], "soc_end_kwh": [0.0]})
    res = clear(f, bids, [10.0, 100.0], resources=parse_resources(res_tab), options=NO_AC)
    d = dict(zip(res.dispatch["bid_id"], res.dispatch["cleared_kw"]))
    assert d["c0"] == pytest.approx(100.0) and d["d1"] == pytest.approx(81.0)
    assert d["c1"] == pytest.approx(0.0) and d["d0"] == pytest.approx(0.0)


def test_ev_gets_its_energy_before_departure_in_the_cheapest_hours():
    f = chain([0.1], s_max=[10_000])
    bids = pl.DataFrame({"bid_id": [f"e{k}" for k in range(3)], "bus": "1", "side": "buy",
                         "quantity_kw": 50.0, "price": 1.0, "interval": [hours(k) for k in range(3)],
                         "resource_id": "ev"})
    evs = parse_resources(pl.DataFrame({"resource_id": ["ev"], "kind": ["ev"], "energy_kwh": [57.0],
                                        "charge_kw": [50.0], "departure": [hours(3)], "eta_charge": [0.95]}))
    res = clear(f, bids, [30.0, 10.0, 20.0], resources=evs, options=NO_AC)
    d = dict(zip(res.dispatch["bid_id"], res.dispatch["cleared_kw"]))
    # 57 kWh / 0.95 = 60 kWh drawn: 50 in the cheapest hour, 10 in the next cheapest.
    assert d == {"e0": pytest.approx(0.0), "e1": pytest.approx(50.0), "e2": pytest.approx(10.0)}
    with pytest.raises(InputError, match="departs"):
        late = parse_resources(pl.DataFrame({"resource_id": ["ev"], "kind": ["ev"], "energy_kwh": [10.0],
                                             "charge_kw": [50.0], "departure": [hours(1)]}))
        clear(f, bids, [30.0, 10.0, 20.0], resources=late, options=NO_AC)


def test_ramp_limit_of_a_flexible_load():
    f = chain([0.1], s_max=[10_000])
    bids = pl.DataFrame({"bid_id": ["h0", "h1"], "bus": "1", "side": "buy", "quantity_kw": 100.0,
                         "price": 50.0, "interval": [hours(0), hours(1)], "resource_id": "hp"})
    ramp = parse_resources(pl.DataFrame({"resource_id": ["hp"], "kind": ["flexible_load"], "ramp_kw": [30.0]}))
    res = clear(f, bids, [10.0, 100.0], resources=ramp, options=NO_AC)
    d = dict(zip(res.dispatch["bid_id"], res.dispatch["cleared_kw"]))
    assert d["h0"] - d["h1"] == pytest.approx(30.0)


# -- input validation ------------------------------------------------------------------

@pytest.mark.parametrize("change,field,row", [
    ({"quantity_kw": [10.0, -1.0]}, "quantity_kw", 1),
    ({"quantity_kw": [10.0, float("nan")]}, "quantity_kw", 1),
    ({"bus": ["1", "99"]}, "bus", 1),
    ({"bid_id": ["a", "a"]}, "bid_id", 1),
    ({"price": [10.0, 5000.0]}, "price", 1),
    ({"side": ["buy", "hold"]}, "side", 1),
])
def test_bad_bids_are_rejected_naming_row_and_field(change, field, row):
    base = {"bid_id": ["a", "b"], "bus": ["1", "1"], "side": ["buy", "sell"], "quantity_kw": [10.0, 10.0],
            "price": [10.0, 20.0]}
    base.update(change)
    with pytest.raises(InputError) as err:
        validate_bids(pl.DataFrame(base), chain([10]))
    assert err.value.field == field and err.value.row == row
    assert f"row {row}" in str(err.value)


# -- properties ---------------------------------------------------------------------

FEEDERS = {n: synthetic(n, n) for n in (8, 15, 30)}


@st.composite
def markets(draw):
    f = FEEDERS[draw(st.sampled_from(sorted(FEEDERS)))]
    n = draw(st.integers(1, 25))
    seed = draw(st.integers(0, 10_000))
    return f, random_bids(f, n, seed), draw(st.floats(-10, 120))


SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(markets(), st.integers(0, 10_000))
def test_more_bids_never_lower_welfare(market, seed):
    f, bids, price = market
    extra = random_bids(f, 5, seed).with_columns(pl.format("x{}", pl.col("bid_id")).alias("bid_id"))
    before = clear(f, bids, price, options=NO_AC)
    after = clear(f, pl.concat([bids, extra]), price, options=NO_AC)
    assert after.welfare >= before.welfare - 1e-9 * (1 + abs(before.welfare))


@SETTINGS
@given(markets(), st.floats(0.1, 10))
def test_scaling_every_price_scales_every_dlmp(market, alpha):
    f, bids, price = market
    rules = MarketRules(price_floor=-1e6, price_cap=1e6)
    base = clear(f, bids, price, rules=rules, options=NO_AC)
    scaled = clear(f, bids.with_columns(pl.col("price") * alpha), price * alpha, rules=rules, options=NO_AC)
    assert np.allclose(scaled.prices["dlmp"].to_numpy(), alpha * base.prices["dlmp"].to_numpy(),
                       rtol=1e-6, atol=1e-6 * (1 + abs(price) * alpha))
    assert scaled.welfare == pytest.approx(alpha * base.welfare, rel=1e-6, abs=1e-6)


@SETTINGS
@given(markets())
def test_no_limit_is_violated_and_no_bid_beyond_its_quantity_or_price(market):
    f, bids, price = market
    res = clear(f, bids, price, options=NO_AC)
    topo = f.topology
    v = res.buses["v_pu"].to_numpy()
    order = topo.bus_index_of(res.buses["bus"].to_list())
    assert np.all(v >= topo.vmin_pu[order] - 1e-7) and np.all(v <= topo.vmax_pu[order] + 1e-7)
    load = res.lines.filter(pl.col("loading_pct").is_not_null())["loading_pct"].to_numpy()
    assert np.all(load <= 100.0 + 1e-5)
    x, q = res.dispatch["cleared_kw"].to_numpy(), res.dispatch["quantity_kw"].to_numpy()
    assert np.all((x >= 0) & (x <= q))
    assert_prices_consistent(res)


@SETTINGS
@given(markets())
def test_same_inputs_give_identical_outputs_whatever_the_row_order(market):
    f, bids, price = market
    a = clear(f, bids, price, options=NO_AC)
    b = clear(f, bids.reverse(), price, options=NO_AC)
    assert a.prices.write_csv() == b.prices.write_csv()
    assert a.dispatch.sort("bid_id").write_csv() == b.dispatch.sort("bid_id").write_csv()
    again = clear(f, bids, price, options=NO_AC)
    assert a.dispatch.write_csv() == again.dispatch.write_csv()
    assert a.lines.write_csv() == again.lines.write_csv()


def test_identical_bids_share_a_marginal_quantity_pro_rata():
    f = chain([100], s_max=[40])
    bids = bid_table([("a", "1", "sell", 100, 30), ("b", "1", "sell", 300, 30)])
    res = clear(f, bids, 20.0, options=NO_AC)
    d = dict(zip(res.dispatch["bid_id"], res.dispatch["cleared_kw"]))
    assert d["a"] == pytest.approx(15.0) and d["b"] == pytest.approx(45.0)


@pytest.mark.parametrize("column,values,field", [
    ("interval", ["2026-01-01T00:00:00Z", "garbage"], "interval"),
    ("quantity_kw", ["1", "x"], "quantity_kw"),
])
def test_unreadable_values_name_their_row_and_field(column, values, field):
    base = {"bid_id": ["a", "b"], "bus": ["1", "1"], "side": ["buy", "sell"], "quantity_kw": [10.0, 10.0],
            "price": [10.0, 20.0]}
    base[column] = values
    with pytest.raises(InputError) as err:
        validate_bids(pl.DataFrame(base), chain([10]))
    assert (err.value.field, err.value.row) == (field, 1)


def test_interval_timestamps_in_any_iso_form_are_the_same_utc_instant():
    f = chain([10])
    spellings = ["2026-11-21T01:00:00Z", "2026-11-21T01:00:00+00:00", "2026-11-21T02:00:00+01:00"]
    books = [validate_bids(pl.DataFrame({"bid_id": ["a"], "bus": ["1"], "side": ["buy"], "quantity_kw": [1.0],
                                         "price": [1.0], "interval": [s]}), f) for s in spellings]
    assert {b.intervals[0] for b in books} == {hours(1)}


def test_a_commitment_caps_what_a_resource_may_still_sell_and_buy():
    # The PV sold 150 kW of flexibility already: only 50 kW of its 200 kW offer may clear in energy.
    from dsomarket.engine.bids import parse_commitments

    f = chain([100], s_max=[1000])
    bids = pl.DataFrame({"bid_id": ["pv", "load"], "bus": "1", "side": ["sell", "buy"], "quantity_kw": [200.0, 80.0],
                         "price": [10.0, 90.0], "resource_id": ["pv", "hp"]})
    caps = parse_commitments(pl.DataFrame({"resource_id": ["pv", "hp"], "interval": [None, None],
                                           "max_sell_kw": [50.0, 0.0], "max_buy_kw": [0.0, 30.0]}))
    free = clear(f, bids, 40.0, options=NO_AC).dispatch
    capped = clear(f, bids, 40.0, resources=caps, options=NO_AC).dispatch
    free, got = (dict(zip(d["bid_id"], d["cleared_kw"])) for d in (free, capped))
    assert free == {"pv": 200.0, "load": 80.0}
    assert got == {"pv": pytest.approx(50.0), "load": pytest.approx(30.0)}
    # The curve honours the commitment too: at a price below 10 the PV is out, above it only 50 kW come in.
    from dsomarket.engine.interface import trace_curve

    rules = MarketRules(price_floor=0, price_cap=100)
    bands = trace_curve(f, validate_bids(bids, f, rules), rules, caps, options=NO_AC).bands
    assert bands["import_kw"].to_list() == [130.0, 80.0, 50.0]
    with pytest.raises(InputError, match="max_sell_kw"):
        parse_commitments(pl.DataFrame({"resource_id": ["pv"], "max_sell_kw": [-1.0]}))
