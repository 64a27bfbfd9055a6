"""Disaggregation of ISO awards: sums, limits, DLMP consistency, pro rata, determinism, real time."""

from __future__ import annotations

import dataclasses
import io
from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsomarket.engine.bids import Battery, MarketRules, validate_bids
from dsomarket.engine.clearing import ClearingOptions, clear
from dsomarket.engine.disaggregation import Disaggregation, disaggregate
from dsomarket.engine.errors import InputError
from dsomarket.engine.feeders import ieee33, synthetic
from dsomarket.engine.interface import trace_curve
from tests.test_interface import RULES, bid_table, chain, random_bids

NO_AC = ClearingOptions(formulation="lossless", ac_check=False)  # hand-solved cases of the lossless LP
PROPERTY = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
T0 = datetime(2026, 5, 4, tzinfo=timezone.utc)


def award(q=None, p=None, interval=None) -> pl.DataFrame:
    return pl.DataFrame({"interval": [interval], "import_kw": [q], "price": [p]},
                        schema={"interval": pl.Datetime("us", "UTC"), "import_kw": pl.Float64,
                                "price": pl.Float64})


def check(d: Disaggregation, feeder, rules=RULES, tol_price=1e-6):
    """Adds up, respects every limit, and every bid agrees with the DLMPs it is cleared at."""
    res = d.clearing
    assert res.ok, res.diagnosis
    # Dispatch plus fixed load is the award (lossless LinDistFlow).
    bal = d.balance_kw()
    assert np.all(np.abs(bal["error_kw"].to_numpy()) <= 1e-4)
    np.testing.assert_allclose(bal["import_kw"].to_numpy(), d.award["import_kw"].to_numpy())
    # Limits.
    lines = res.lines.filter(pl.col("loading_pct").is_not_null())
    assert lines.height == 0 or lines["loading_pct"].max() <= 100.0 + 1e-3   # solver tolerance
    buses = res.buses.join(feeder.buses.select("bus", "vmin_pu", "vmax_pu"), on="bus")
    assert (buses["v_pu"] >= buses["vmin_pu"] - 1e-7).all()
    assert (buses["v_pu"] <= buses["vmax_pu"] + 1e-7).all()
    imp = d.award["import_kw"].to_numpy()
    assert np.all(imp <= feeder.import_max_kw + 1e-6) and np.all(imp >= -feeder.export_max_kw - 1e-6)
    # Bids against their DLMP (reactive part included): accepted sells ask at most the DLMP,
    # rejected ones at least; partial ones exactly; buys mirrored. Resource-linked and held rows
    # answer to storage limits and the day-ahead, not to the DLMP alone.
    disp = res.dispatch.join(res.prices.select("bus", "interval", "dlmp", "dlmp_q"), on=["bus", "interval"],
                             how="left", nulls_equal=True)
    free = disp.filter((pl.col("resource_id") == "") & ~pl.col("held"))
    eff = free["dlmp"].to_numpy() + free["tan_phi"].to_numpy() * free["dlmp_q"].to_numpy()
    price = free["price"].to_numpy()
    x, qty = free["cleared_kw"].to_numpy(), free["quantity_kw"].to_numpy()
    assert np.all(x >= 0) and np.all(x <= qty + 1e-9)
    tol = tol_price * np.maximum(1.0, np.abs(price))
    sell = free["side"].to_numpy() == "sell"
    # 1e-4 kW is HiGHS's primal feasibility tolerance (1e-7 MW): a bid within it of a bound is at the bound.
    on, off = x > 1e-4, x < qty - 1e-4
    assert np.all(price[sell & on] <= eff[sell & on] + tol[sell & on])
    assert np.all(price[sell & off] >= eff[sell & off] - tol[sell & off])
    assert np.all(price[~sell & on] >= eff[~sell & on] - tol[~sell & on])
    assert np.all(price[~sell & off] <= eff[~sell & off] + tol[~sell & off])
    # Instructions: net injection per resource, adding up to the dispatch.
    ins = d.instructions
    assert ins.columns == ["aggregator_id", "resource_id", "interval", "kw"]
    net = res.dispatch.select(pl.when(pl.col("side") == "sell").then(pl.col("cleared_kw"))
                              .otherwise(-pl.col("cleared_kw"))).to_series().sum()
    assert ins["kw"].sum() == pytest.approx(net, abs=1e-4)


def root_dlmp(d: Disaggregation, t: int = 0) -> float:
    n = d.clearing.prices.height // len(d.clearing.intervals)
    return float(d.clearing.prices["dlmp"][t * n])


@pytest.fixture(scope="module")
def ieee():
    f = ieee33()
    bids = random_bids(f, 40, seed=21, tan_phi=True)
    book = validate_bids(bids, f, RULES)
    return f, bids, book, trace_curve(f, book, RULES, options=NO_AC)


# -- the three kinds of award -------------------------------------------------------------------------

def test_award_on_the_curve_dispatches_at_the_iso_price(ieee):
    f, _, book, curve = ieee
    b = curve.interval_bands(0)
    for k in range(0, b.height, 3):
        lo, hi, q = b["price_low"][k], b["price_high"][k], b["import_kw"][k]
        price = (lo + hi) / 2
        d = disaggregate(f, book, award(q, price), RULES, options=NO_AC)
        check(d, f)
        assert d.award["on_curve"][0] is True and d.award["price_source"][0] == "iso"
        assert d.award["import_kw"][0] == pytest.approx(q, abs=1e-6)
        assert root_dlmp(d) == pytest.approx(price, abs=1e-6)


def test_quantity_alone_is_priced_at_the_interface_dlmp_the_step_between_bands(ieee):
    f, _, book, curve = ieee
    b = curve.interval_bands(0)
    for k in range(0, b.height - 1, 3):
        q = 0.5 * (b["import_kw"][k] + b["import_kw"][k + 1])
        d = disaggregate(f, book, award(q), RULES, options=NO_AC)
        check(d, f)
        step = b["price_high"][k]
        assert d.award["price"][0] == pytest.approx(step, abs=1e-6)
        assert d.award["price_source"][0] == "interface_dlmp" and d.award["on_curve"][0] is None
        assert root_dlmp(d) == pytest.approx(d.award["price"][0], abs=1e-9)


def test_price_alone_clears_the_curves_import(ieee):
    f, _, book, curve = ieee
    b = curve.interval_bands(0)
    for k in range(0, b.height, 4):
        price = (b["price_low"][k] + b["price_high"][k]) / 2
        d = disaggregate(f, book, award(p=price), RULES, options=NO_AC)
        check(d, f)
        assert d.award["import_kw"][0] == pytest.approx(b["import_kw"][k], abs=1e-3)
        assert root_dlmp(d) == pytest.approx(price, abs=1e-6)


def test_an_award_off_the_curve_is_delivered_and_flagged(ieee):
    f, _, book, curve = ieee
    b = curve.interval_bands(0)
    k = b.height // 2
    q, hi = b["import_kw"][k], b["price_high"][k]
    d = disaggregate(f, book, award(q, hi + 50.0), RULES, options=NO_AC)
    check(d, f)
    assert d.award["on_curve"][0] is False
    assert d.award["price"][0] == hi + 50.0
    assert root_dlmp(d) <= hi + 1e-6         # the feeder's own marginal value of that import


def test_an_award_the_feeder_cannot_deliver_is_infeasible_with_a_diagnosis():
    f = chain(2, s_max={1: 200.0})
    book = validate_bids(bid_table([(2, "buy", 500, 80)]), f, RULES)
    d = disaggregate(f, book, award(400.0, 50.0), RULES, options=NO_AC)
    assert d.clearing.status == "infeasible"
    assert any(x["limit"] in ("line_thermal", "interface_import_fixed") for x in d.clearing.diagnosis)
    assert d.instructions.height == 0
    assert d.summary()["status"] == "infeasible"


@pytest.mark.parametrize("formulation", ["lossless", "lossaware"])
@pytest.mark.parametrize("side, q", [("import", 300.0), ("export", -120.0)])
def test_an_award_beyond_the_interface_limit_is_infeasible_and_names_it(formulation, side, q):
    # The feeder could carry either award; only the interface limits (250 kW in, 100 kW out) forbid it.
    f = dataclasses.replace(chain(2), import_max_kw=250.0, export_max_kw=100.0)
    book = validate_bids(bid_table([(2, "buy", 500, 80), (2, "sell", 500, 10)]), f, RULES)
    opts = ClearingOptions(formulation=formulation, ac_check=False)
    d = disaggregate(f, book, award(q, 50.0), RULES, options=opts)
    assert d.clearing.status == "infeasible"
    limit = 250.0 if side == "import" else 100.0
    assert d.clearing.diagnosis == ({"limit": f"interface_{side}_max", "element": f.root_bus, "interval": None,
                                     "violation": pytest.approx(abs(q) - limit), "unit": "kW"},)
    assert d.instructions.height == 0
    at_limit = disaggregate(f, book, award(np.sign(q) * limit, 50.0), RULES, options=opts)
    assert at_limit.clearing.ok
    np.testing.assert_allclose(at_limit.balance_kw()["import_kw"].to_numpy(), np.sign(q) * limit, atol=1e-3)


def test_award_table_errors_name_the_field():
    f = chain(2)
    book = validate_bids(bid_table([(2, "buy", 50, 80)]), f, RULES)
    with pytest.raises(InputError, match="import_kw, price or both"):
        disaggregate(f, book, award(), RULES)
    with pytest.raises(InputError, match="not an interval"):
        disaggregate(f, book, award(10.0, interval=T0), RULES)
    with pytest.raises(InputError, match="appears twice"):
        disaggregate(f, book, pl.concat([award(10.0), award(20.0)]), RULES)


# -- pro rata and determinism ---------------------------------------------------------------------------

def test_equal_priced_marginal_bids_share_pro_rata_across_buses():
    # Two sellers ask 30 at buses 1 and 3 (100 kW and 300 kW), an uncongested feeder with 150 kW
    # of fixed load at bus 2. Awarded 50 kW of import, the sellers cover 100 kW between them:
    # 25 and 75 kW, pro rata to their quantities, at a DLMP of 30 everywhere.
    f = chain(3, r_ohm=0.001, loads={2: (150, 0)})
    bids = pl.DataFrame({"bid_id": ["x", "y", "z"], "bus": ["1", "3", "3"], "side": ["sell", "sell", "buy"],
                         "quantity_kw": [100.0, 300.0, 10.0], "price": [30.0, 30.0, 5.0],
                         "aggregator_id": ["north", "south", "south"]})
    book = validate_bids(bids, f, RULES)
    d = disaggregate(f, book, award(50.0, 30.0), RULES, options=NO_AC)
    check(d, f)
    got = dict(zip(d.clearing.dispatch["bid_id"], d.clearing.dispatch["cleared_kw"]))
    assert got == {"x": pytest.approx(25.0), "y": pytest.approx(75.0), "z": pytest.approx(0.0)}
    assert np.allclose(d.clearing.prices["dlmp"].to_numpy(), 30.0)
    ins = {r["resource_id"]: r["kw"] for r in d.instructions.iter_rows(named=True)}
    assert ins == {"x": pytest.approx(25.0), "y": pytest.approx(75.0), "z": pytest.approx(0.0)}
    # Same result whatever the order of the bids.
    again = disaggregate(f, validate_bids(bids.reverse(), f, RULES), award(50.0, 30.0), RULES, options=NO_AC)
    assert again.clearing.dispatch.equals(d.clearing.dispatch)


def test_pro_rata_yields_where_the_network_cannot_carry_it():
    # The same two sellers, but the line into bus 3 carries 20 kW at most: the split that
    # fits is kept (seller at bus 3 limited by the line), and the dispatch stays feasible.
    f = chain(3, r_ohm=0.001, loads={2: (150, 0)}, s_max={3: 20.0})
    bids = pl.DataFrame({"bid_id": ["x", "y"], "bus": ["1", "3"], "side": ["sell", "sell"],
                         "quantity_kw": [100.0, 300.0], "price": [30.0, 30.0]})
    book = validate_bids(bids, f, RULES)
    d = disaggregate(f, book, award(50.0, 30.0), RULES, options=NO_AC)
    check(d, f)
    got = dict(zip(d.clearing.dispatch["bid_id"], d.clearing.dispatch["cleared_kw"]))
    assert got["x"] + got["y"] == pytest.approx(100.0)
    assert got["y"] <= 20.0 * np.cos(np.pi / 16) + 1e-6


def _csv(df: pl.DataFrame) -> bytes:
    buf = io.BytesIO()
    df.write_csv(buf, datetime_format="%Y-%m-%dT%H:%M:%SZ")
    return buf.getvalue()


def test_outputs_are_byte_identical_across_runs_and_input_order():
    f = synthetic(40, 8)
    bids = random_bids(f, 60, 8, decimals=0, tan_phi=True)   # whole prices: many equal-priced bids
    book = validate_bids(bids, f, RULES)
    curve = trace_curve(f, book, RULES, options=NO_AC)
    b = curve.interval_bands(0)
    k = b.height // 2
    aw = award(0.5 * (b["import_kw"][k] + b["import_kw"][k + 1]))
    outs = []
    for order in (None, None, np.random.default_rng(1).permutation(bids.height),
                  np.random.default_rng(2).permutation(bids.height)):
        table = bids if order is None else bids[order]
        d = disaggregate(f, validate_bids(table, f, RULES), aw, RULES, options=NO_AC)
        check(d, f)
        outs.append(tuple(_csv(x) for x in (d.clearing.dispatch, d.clearing.prices, d.instructions, d.award,
                                            d.fixed_load)))
    assert all(o == outs[0] for o in outs[1:])


# -- real time -----------------------------------------------------------------------------------------

def test_real_time_re_clears_from_the_day_ahead_position():
    f = ieee33()
    da_bids = random_bids(f, 30, 5).with_columns(interval=pl.lit(T0),
                                                resource_id=pl.Series([f"r{k % 20}" for k in range(30)]))
    da_rules = MarketRules(price_floor=-200.0, price_cap=500.0, interval_minutes=60)
    da_book = validate_bids(da_bids, f, da_rules)
    da = disaggregate(f, da_book, award(p=60.0, interval=T0), da_rules, options=NO_AC)
    check(da, f, da_rules)
    # Real time, three 5-minute intervals: resources r0..r4 bid again (cheaper), and r5 only in the
    # first interval; every other day-ahead position is held.
    rt_rules = MarketRules(price_floor=-200.0, price_cap=500.0, interval_minutes=5)
    ivs = [T0 + timedelta(minutes=5 * k) for k in range(3)]
    again = da_bids.filter(pl.col("resource_id").is_in([f"r{k}" for k in range(5)]))
    rt_bids = pl.concat([again.with_columns(bid_id=pl.col("bid_id") + f"-rt{k}", interval=pl.lit(iv),
                                            price=pl.col("price") - 20.0) for k, iv in enumerate(ivs)]
                        + [da_bids.filter(pl.col("resource_id") == "r5").with_columns(
                            bid_id=pl.col("bid_id") + "-rt", interval=pl.lit(ivs[0]))])
    rt_book = validate_bids(rt_bids, f, rt_rules)
    rt_award = pl.concat([award(p=70.0, interval=iv) for iv in ivs])
    rt = disaggregate(f, rt_book, rt_award, rt_rules, options=NO_AC, day_ahead=da.clearing.dispatch,
                      day_ahead_minutes=60)
    check(rt, f, rt_rules)
    held = rt.clearing.dispatch.filter(pl.col("held"))
    da_disp = da.clearing.dispatch
    rebid = {f"r{k}" for k in range(5)}
    for k, iv in enumerate(ivs):
        here = held.filter(pl.col("interval") == iv)
        expected = da_disp.filter(~pl.col("resource_id").is_in(list(rebid | ({"r5"} if k == 0 else set()))))
        assert sorted(here["bid_id"]) == sorted(expected["bid_id"])
        got = dict(zip(here["bid_id"], here["cleared_kw"]))
        assert got == dict(zip(expected["bid_id"], expected["cleared_kw"]))
    # Held positions are instructed too, at their day-ahead values, every 5 minutes.
    ins = rt.instructions.filter(pl.col("resource_id") == "r10")
    assert ins.height == 3
    da_r10 = da_disp.filter(pl.col("resource_id") == "r10")
    signs = pl.Series([1.0 if s == "sell" else -1.0 for s in da_r10["side"]])
    net = float((da_r10["cleared_kw"] * signs).sum())
    assert np.allclose(ins["kw"].to_numpy(), net)
    # The fixed load is the feeder's alone; held positions are in the dispatch.
    assert rt.fixed_load.filter(pl.col("interval") == ivs[0])["load_kw"].sum() == pytest.approx(3715.0)
    assert rt.summary()["held_positions"] == held.height


def test_untimed_real_time_holds_an_untimed_day_ahead():
    f = chain(3, loads={2: (100, 0)})
    da_bids = bid_table([(1, "sell", 60, 20), (3, "buy", 40, 90), (2, "sell", 50, 40)])
    da = disaggregate(f, validate_bids(da_bids, f, RULES), award(p=50.0), RULES, options=NO_AC)
    assert dict(zip(da.clearing.dispatch["bid_id"], da.clearing.dispatch["cleared_kw"])) == \
        {"b0": 60.0, "b1": 40.0, "b2": 50.0}
    rt_rules = MarketRules(price_floor=-200.0, price_cap=500.0, interval_minutes=5)
    rt = disaggregate(f, validate_bids(da_bids[:1].with_columns(price=pl.lit(45.0)), f, rt_rules),
                      award(p=30.0), rt_rules, options=NO_AC, day_ahead=da.clearing.dispatch)
    check(rt, f, rt_rules)
    got = {(r["bid_id"], r["held"]): r["cleared_kw"] for r in rt.clearing.dispatch.iter_rows(named=True)}
    assert got == {("b0", False): 0.0, ("b1", True): 40.0, ("b2", True): 50.0}
    assert rt.award["import_kw"][0] == pytest.approx(100.0 + 40.0 - 50.0)


# -- multi-interval and properties ---------------------------------------------------------------------

def test_multi_interval_award_with_storage_adds_up_per_interval():
    f = ieee33()
    ivs = [T0 + timedelta(hours=h) for h in range(3)]
    parts = [random_bids(f, 10, 60 + h).with_columns(bid_id=pl.col("bid_id") + f"-{h}", interval=pl.lit(iv))
             for h, iv in enumerate(ivs)]
    parts.append(pl.DataFrame({"bid_id": [f"c{h}" for h in range(3)] + [f"d{h}" for h in range(3)],
                               "bus": ["18"] * 6, "side": ["buy"] * 3 + ["sell"] * 3,
                               "quantity_kw": [300.0] * 6, "price": [-20.0] * 3 + [10.0] * 3,
                               "aggregator_id": ["store"] * 6, "interval": ivs + ivs,
                               "resource_id": ["bat"] * 6}))
    bids = pl.concat(parts, how="diagonal_relaxed")
    bat = (Battery("bat", 600.0, 300.0, 300.0, soc_init_kwh=300.0, soc_end_kwh=300.0),)
    book = validate_bids(bids, f, RULES)
    prices = np.array([20.0, 120.0, 60.0])
    ref = clear(f, book, prices, rules=RULES, resources=bat, options=NO_AC)
    aw = pl.DataFrame({"interval": ivs, "import_kw": ref.interface_import_kw, "price": prices})
    d = disaggregate(f, book, aw, RULES, bat, options=NO_AC)
    check(d, f)
    assert d.award["on_curve"].to_list() == [True, True, True]
    n = f.topology.n_bus
    np.testing.assert_allclose(d.clearing.prices["dlmp"].to_numpy()[::n], prices, atol=1e-6)


@given(n_bus=st.integers(3, 30), n_bids=st.integers(1, 30), seed=st.integers(0, 10_000),
       kind=st.sampled_from(["both", "quantity", "price", "between"]), pick=st.floats(0, 1))
@PROPERTY
def test_disaggregation_adds_up_and_agrees_with_its_dlmps(n_bus, n_bids, seed, kind, pick):
    f = synthetic(n_bus, seed)
    book = validate_bids(random_bids(f, n_bids, seed + 7, tan_phi=True, decimals=seed % 3), f, RULES)
    curve = trace_curve(f, book, RULES, options=NO_AC)
    b = curve.interval_bands(0)
    k = min(int(pick * b.height), b.height - 1)
    lo, hi, q = b["price_low"][k], b["price_high"][k], b["import_kw"][k]
    mid = (lo + hi) / 2
    if kind == "between" and k + 1 < b.height:
        aw, q_exp, p_exp = award(0.5 * (q + b["import_kw"][k + 1])), None, hi
    elif kind == "quantity":
        aw, q_exp, p_exp = award(q), q, None
    elif kind == "price":
        aw, q_exp, p_exp = award(p=mid), q, mid
    else:
        aw, q_exp, p_exp = award(q, mid), q, mid
    d = disaggregate(f, book, aw, RULES, options=NO_AC)
    check(d, f)
    if q_exp is not None:
        assert d.award["import_kw"][0] == pytest.approx(q_exp, abs=1e-3)
    if p_exp is not None:
        assert root_dlmp(d) == pytest.approx(p_exp, abs=1e-6 * max(1.0, abs(p_exp)))
    assert root_dlmp(d) == pytest.approx(d.award["price"][0], abs=1e-6 * max(1.0, abs(d.award["price"][0])))
