"""Interface curves: exact against independent solves, deliverable, ISO formats, reduction, SOCP sampling."""

from __future__ import annotations

import itertools
import math
import warnings
from datetime import datetime, timedelta, timezone

import cvxpy as cp
import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsomarket.engine import tracerjit
from dsomarket.engine.bids import Battery, MarketRules, validate_bids
from dsomarket.engine.clearing import ClearingOptions, NodalMarket, clear
from dsomarket.engine.errors import InputError
from dsomarket.engine.feeders import ieee33, synthetic
from dsomarket.engine.interface import InterfaceCurve, reduce_steps, trace_curve, trace_curve_socp
from dsomarket.engine.network import Feeder

NO_AC = ClearingOptions(formulation="lossless", ac_check=False)  # hand-solved cases of the lossless LP
RULES = MarketRules(price_floor=-200.0, price_cap=500.0)
PROPERTY = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- helpers --------------------------------------------------------------------------------------

def chain(n_lines: int, r_ohm: float = 0.01, x_ohm: float = 1e-6, s_max=None, loads=None, vmin: float = 0.95,
          **header) -> Feeder:
    """A straight feeder 0-1-2-... on a 1 kV base (ohms are per unit on 1 MVA)."""
    n = n_lines + 1
    loads = loads or {}
    s_max = s_max or {}
    return Feeder.from_tables(
        {"name": "chain", "root_bus": "0", "base_kv": 1.0, "v0_pu": 1.0, **header},
        pl.DataFrame({"bus": [str(k) for k in range(n)], "vmin_pu": [vmin] * n, "vmax_pu": [1.05] * n,
                      "load_kw": [float(loads.get(k, (0, 0))[0]) for k in range(n)],
                      "load_kvar": [float(loads.get(k, (0, 0))[1]) for k in range(n)]}),
        pl.DataFrame({"line": [f"l{k}" for k in range(1, n)], "from_bus": [str(k - 1) for k in range(1, n)],
                      "to_bus": [str(k) for k in range(1, n)], "r_ohm": [r_ohm] * n_lines,
                      "x_ohm": [x_ohm] * n_lines,
                      "s_max_kva": [float(s_max.get(k, math.inf)) for k in range(1, n)]}))


def bid_table(rows) -> pl.DataFrame:
    """``rows``: (bus, side, kW, price[, tan_phi])."""
    return pl.DataFrame({"bid_id": [f"b{k}" for k in range(len(rows))], "bus": [str(r[0]) for r in rows],
                         "side": [r[1] for r in rows], "quantity_kw": [float(r[2]) for r in rows],
                         "price": [float(r[3]) for r in rows],
                         "tan_phi": [float(r[4]) if len(r) > 4 else 0.0 for r in rows]})


def random_bids(feeder: Feeder, n: int, seed: int, lo: float = -150.0, hi: float = 450.0, decimals: int = 2,
                tan_phi: bool = False) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    buses = feeder.buses["bus"].to_numpy()[1:]
    out = pl.DataFrame({"bid_id": [f"b{k:04d}" for k in range(n)], "bus": rng.choice(buses, n),
                        "side": rng.choice(["buy", "sell"], n),
                        "quantity_kw": np.round(rng.uniform(5, 400, n), 1),
                        "price": np.round(rng.uniform(lo, hi, n), decimals),
                        "aggregator_id": rng.choice(["agg-a", "agg-b", "agg-c"], n)})
    if tan_phi:
        out = out.with_columns(tan_phi=pl.Series(rng.choice([0.0, 0.2, 0.48], n)))
    return out


def arrays(curve: InterfaceCurve, t: int = 0):
    b = curve.interval_bands(t)
    return b["price_low"].to_numpy(), b["price_high"].to_numpy(), b["import_kw"].to_numpy()


def cold_import(feeder, book, price, rules=RULES, resources=(), t=0) -> float:
    """The interface import of an independent cold clearing (a fresh model) at ``price``."""
    res = clear(feeder, book, price, rules=rules, resources=resources, options=NO_AC)
    assert res.ok
    return float(res.interface_import_kw[t])


def textbook_import(feeder: Feeder, bids: pl.DataFrame, price: float, sides: int = 16) -> float:
    """Interface import of a textbook LinDistFlow market written with one cvxpy constraint per bus and line.

    Shares nothing with the engine's model: input line orientation, per-bus sums,
    the inscribed polygon written face by face; solved by HiGHS through cvxpy.
    """
    z_base = feeder.base_kv ** 2  # ohm on 1 MVA
    buses = feeder.buses.to_dicts()
    lines = [ln for ln in feeder.lines.to_dicts() if ln["in_service"]]
    rows = bids.to_dicts()
    p = cp.Variable(len(rows), nonneg=True)
    P = {ln["line"]: cp.Variable() for ln in lines}
    Q = {ln["line"]: cp.Variable() for ln in lines}
    v = {b["bus"]: cp.Variable() for b in buses}
    p0, q0 = cp.Variable(), cp.Variable()
    cons = [p <= np.array([r["quantity_kw"] for r in rows]) / 1000.0]
    for b in buses:
        j = b["bus"]
        net_p, net_q = 0, 0
        for ln in lines:
            if ln["to_bus"] == j:
                net_p, net_q = net_p + P[ln["line"]], net_q + Q[ln["line"]]
            if ln["from_bus"] == j:
                net_p, net_q = net_p - P[ln["line"]], net_q - Q[ln["line"]]
        for k, r in enumerate(rows):
            if r["bus"] == j:
                s = 1.0 if r["side"] == "buy" else -1.0
                net_p = net_p - s * p[k]
                net_q = net_q - s * (r.get("tan_phi") or 0.0) * p[k]
        if j == feeder.root_bus:
            net_p, net_q = net_p + p0, net_q + q0
            cons.append(v[j] == feeder.v0_pu ** 2)
        else:
            cons += [v[j] >= b["vmin_pu"] ** 2, v[j] <= b["vmax_pu"] ** 2]
        cons += [net_p == b["load_kw"] / 1000.0, net_q == b["load_kvar"] / 1000.0]
    for ln in lines:
        r, x = ln["r_ohm"] / z_base, ln["x_ohm"] / z_base
        cons.append(v[ln["to_bus"]] == v[ln["from_bus"]] - 2 * (r * P[ln["line"]] + x * Q[ln["line"]]))
        if math.isfinite(ln["s_max_kva"]):
            rad = ln["s_max_kva"] / 1000.0 * math.cos(math.pi / sides)
            for k in range(sides // 2):
                phi = (2 * k + 1) * math.pi / sides
                face = math.cos(phi) * P[ln["line"]] + math.sin(phi) * Q[ln["line"]]
                cons += [face <= rad, face >= -rad]
    value = sum((r["price"] * p[k] * (1 if r["side"] == "buy" else -1) for k, r in enumerate(rows)), start=0)
    prob = cp.Problem(cp.Maximize(value - price * p0), cons)
    prob.solve(solver=cp.HIGHS)
    assert prob.status == cp.OPTIMAL
    return float(p0.value) * 1000.0


def check_bands(curve: InterfaceCurve, rules: MarketRules, t: int = 0):
    lo, hi, q = arrays(curve, t)
    assert lo[0] == rules.price_floor and hi[-1] == rules.price_cap
    assert np.all(hi > lo)
    np.testing.assert_array_equal(lo[1:], hi[:-1])        # no gap, no overlap
    assert np.all(np.diff(q) < 0)                          # strictly decreasing after merging equal steps
    return lo, hi, q


# -- hand-solved ----------------------------------------------------------------------------------

def test_thermal_limit_moves_the_curve_off_the_congestion_blind_bid_sum():
    # A 100 kVA line feeds bus 2, where 300 kW would buy at 80; bus 1 buys 50 kW at 40.
    # Blind sum: 350 kW below 40, 300 kW up to 80. The feeder delivers 150 kW, then 100 kW.
    f = chain(2, s_max={2: 100.0})
    book = validate_bids(bid_table([(2, "buy", 300, 80), (1, "buy", 50, 40)]), f, RULES)
    curve = trace_curve(f, book, RULES, options=NO_AC)
    lo, hi, q = check_bands(curve, RULES)
    np.testing.assert_allclose(hi[:-1], [40.0, 80.0])
    np.testing.assert_allclose(q, [150.0, 100.0, 0.0], atol=1e-6)
    blind = [350.0, 300.0, 0.0]
    assert not np.allclose(q, blind)
    for price, expected in ((0.0, 150.0), (60.0, 100.0), (100.0, 0.0)):
        assert cold_import(f, book, price) == pytest.approx(expected, abs=1e-6)


def test_voltage_limit_puts_a_step_at_a_price_no_bid_asked():
    # Chain 0-1-2 with r = 0.01 pu per line, no reactive power, vmin = 0.95: withdrawals w1, w2 (MW) must keep
    # v2 = 1 - 0.02 w1 - 0.04 w2 >= 0.9025, i.e. w1 + 2 w2 <= 4.875 MW. Buyers: 10 MW at 60 (bus 1)
    # and 10 MW at 80 (bus 2). Per unit of voltage, bus 1 is worth (60 - l) and bus 2 (80 - l) / 2:
    # bus 1 wins below l = 40 (import 4.875 MW), bus 2 between 40 and 80 (2.4375 MW), nobody above.
    # The congestion-blind curve steps at 60 and 80 instead.
    f = chain(2, r_ohm=0.01)
    book = validate_bids(bid_table([(1, "buy", 10_000, 60), (2, "buy", 10_000, 80)]), f, RULES)
    curve = trace_curve(f, book, RULES, options=NO_AC)
    lo, hi, q = check_bands(curve, RULES)
    np.testing.assert_allclose(hi[:-1], [40.0, 80.0], atol=1e-9)
    np.testing.assert_allclose(q, [4875.0, 2437.5, 0.0], atol=1e-6)
    assert 40.0 not in set(book.price)
    # Between the two steps the re-clear's interface price is the step's price: 40, not a bid price.
    m = NodalMarket(f, book, 0.0, RULES, options=NO_AC)
    m.fix_import((4875.0 + 2437.5) / 2)
    res = m.solve()
    assert res.ok
    assert res.prices["dlmp"][0] == pytest.approx(40.0, abs=1e-7)


def test_uncongested_curve_is_the_bid_sum_with_fixed_load_and_limits():
    f = chain(3, loads={1: (100, 0), 3: (50, 0)})
    book = validate_bids(bid_table([(1, "sell", 80, 20), (2, "buy", 30, 50), (3, "sell", 40, 70)]), f, RULES)
    curve = trace_curve(f, book, RULES, options=NO_AC)
    lo, hi, q = check_bands(curve, RULES)
    np.testing.assert_allclose(hi[:-1], [20.0, 50.0, 70.0])
    np.testing.assert_allclose(q, [180.0, 100.0, 70.0, 30.0])
    assert curve.fixed_net_load_kw["fixed_kw"][0] == pytest.approx(150.0)
    assert curve.exact and curve.max_error_kw == 0.0 and not curve.conditional
    # An import limit caps the curve where the bids would take more.
    capped = trace_curve(f.with_changes(import_max_kw=120.0), book, RULES, options=NO_AC)
    _, _, qc = check_bands(capped, RULES)
    np.testing.assert_allclose(qc, [120.0, 100.0, 70.0, 30.0])


def test_infeasible_market_has_no_curve():
    f = chain(1, s_max={1: 10.0}, loads={1: (100, 0)})
    book = validate_bids(bid_table([(1, "buy", 5, 50)]), f, RULES)
    with pytest.raises(InputError, match="no interface curve"):
        trace_curve(f, book, RULES, options=NO_AC)


# -- exact against independent solves -------------------------------------------------------------

def test_ieee33_curve_matches_a_textbook_model_at_every_band_midpoint():
    f = ieee33()
    bids = random_bids(f, 20, seed=7, tan_phi=True)
    book = validate_bids(bids, f, RULES)
    curve = trace_curve(f, book, RULES, options=NO_AC)
    lo, hi, q = check_bands(curve, RULES)
    assert len(q) > 8
    for k in range(len(q)):
        mid = (lo[k] + hi[k]) / 2
        assert textbook_import(f, bids, mid) == pytest.approx(q[k], abs=1e-3), (lo[k], hi[k])


@given(n_bus=st.integers(2, 8), n_bids=st.integers(1, 8), seed=st.integers(0, 10_000), tan=st.booleans())
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_small_curves_match_the_textbook_model_at_every_band_midpoint(n_bus, n_bids, seed, tan):
    f = synthetic(n_bus, seed)
    bids = random_bids(f, n_bids, seed + 11, tan_phi=tan)
    curve = trace_curve(f, validate_bids(bids, f, RULES), RULES, options=NO_AC)
    lo, hi, q = check_bands(curve, RULES)
    for k in range(len(q)):
        assert textbook_import(f, bids, (lo[k] + hi[k]) / 2) == pytest.approx(q[k], abs=1e-3), (lo[k], hi[k])


@given(n_bus=st.integers(3, 40), n_bids=st.integers(1, 40), seed=st.integers(0, 10_000),
       tan=st.booleans(), decimals=st.sampled_from([0, 2]))
@PROPERTY
def test_curve_equals_cold_clearing_at_every_band_midpoint(n_bus, n_bids, seed, tan, decimals):
    f = synthetic(n_bus, seed)
    book = validate_bids(random_bids(f, n_bids, seed, decimals=decimals, tan_phi=tan), f, RULES)
    curve = trace_curve(f, book, RULES, options=NO_AC)
    lo, hi, q = check_bands(curve, RULES)
    mids = (lo + hi) / 2
    for k in range(len(q)):
        assert cold_import(f, book, mids[k]) == pytest.approx(q[k], abs=1e-3), (lo[k], hi[k])
    # And at random prices away from the breakpoints.
    rng = np.random.default_rng(seed)
    for price in rng.uniform(RULES.price_floor, RULES.price_cap, 5):
        if np.min(np.abs(hi[:-1] - price), initial=np.inf) > 1e-6:
            assert cold_import(f, book, price) == pytest.approx(curve.import_at(0, price), abs=1e-3)


@given(n_bus=st.integers(3, 30), n_bids=st.integers(2, 30), seed=st.integers(0, 10_000))
@PROPERTY
def test_every_quantity_on_the_curve_is_deliverable_at_the_curves_price(n_bus, n_bids, seed):
    f = synthetic(n_bus, seed)
    book = validate_bids(random_bids(f, n_bids, seed + 1, tan_phi=True), f, RULES)
    curve = trace_curve(f, book, RULES, options=NO_AC)
    lo, hi, q = check_bands(curve, RULES)
    m = NodalMarket(f, book, 0.0, RULES, options=NO_AC)
    root = f.topology.bus_ids[0]
    for k in range(len(q)):
        # The band's own import: feasible, and its interface price lies in the band.
        m.fix_import(q[k])
        res = m.solve()
        assert res.ok, res.diagnosis
        price = float(res.prices.filter(pl.col("bus") == root)["dlmp"][0])
        # (The first band's import may also be optimal below the floor, the last's above the cap.)
        assert (k == 0 or lo[k] - 1e-6 <= price) and (k == len(q) - 1 or price <= hi[k] + 1e-6)
        if k + 1 < len(q):
            # Strictly between two steps: feasible, and priced at the step between them.
            for w in (0.25, 0.5, 0.9):
                m.fix_import(w * q[k] + (1 - w) * q[k + 1])
                res = m.solve()
                assert res.ok, res.diagnosis
                assert res.prices["dlmp"][0] == pytest.approx(hi[k], abs=1e-6 * max(1.0, abs(hi[k])))


def test_traces_a_large_curve_in_about_one_solve_per_pivot():
    f = synthetic(300, 3)
    book = validate_bids(random_bids(f, 1500, 3), f, RULES)
    curve = trace_curve(f, book, RULES, options=NO_AC)
    lo, hi, q = check_bands(curve, RULES)
    assert len(q) > 150
    assert curve.solves < len(q)      # bound flips walk most steps without HiGHS
    rng = np.random.default_rng(3)
    for k in rng.choice(len(q), 25, replace=False):
        assert cold_import(f, book, (lo[k] + hi[k]) / 2) == pytest.approx(q[k], abs=1e-3)


# -- multi-interval --------------------------------------------------------------------------------

def test_storage_couples_intervals_so_each_curve_is_conditional_on_the_forecast():
    f = ieee33()
    t0 = datetime(2026, 3, 1, tzinfo=timezone.utc)
    ivs = [t0 + timedelta(hours=h) for h in range(3)]
    rows = []
    for h, iv in enumerate(ivs):
        base = random_bids(f, 12, 40 + h).with_columns(bid_id=pl.col("bid_id") + f"-{h}",
                                                       interval=pl.lit(iv), resource_id=pl.lit(""))
        rows.append(base)
        rows.append(pl.DataFrame({"bid_id": [f"bat-c{h}", f"bat-d{h}"], "bus": ["18", "18"],
                                  "side": ["buy", "sell"], "quantity_kw": [400.0, 400.0],
                                  "price": [-50.0, 0.0],
                                  "aggregator_id": ["agg-s", "agg-s"], "interval": [iv, iv],
                                  "resource_id": ["bat", "bat"]}))
    bids = pl.concat(rows, how="diagonal_relaxed")
    rules = MarketRules(price_floor=-200.0, price_cap=500.0)
    bat = (Battery("bat", 800.0, 400.0, 400.0, soc_init_kwh=400.0, soc_end_kwh=400.0),)
    book = validate_bids(bids, f, rules)
    forecast = np.array([30.0, 90.0, 60.0])
    curve = trace_curve(f, book, rules, bat, options=NO_AC, forecast=forecast)
    assert curve.conditional
    np.testing.assert_array_equal(curve.forecast, forecast)
    assert curve.summary()["conditional_on_forecast"]
    assert curve.summary()["forecast_price"] == forecast.tolist()
    for t in range(3):
        lo, hi, q = check_bands(curve, rules, t)
        for k in range(len(q)):
            prices = forecast.copy()
            prices[t] = (lo[k] + hi[k]) / 2
            assert cold_import(f, book, prices, rules, bat, t) == pytest.approx(q[k], abs=1e-3)
    # Without storage the intervals are independent and the curves are not conditional.
    plain = validate_bids(bids.filter(pl.col("resource_id") == ""), f, rules)
    assert not trace_curve(f, plain, rules, options=NO_AC).conditional


# -- ISO formats ------------------------------------------------------------------------------------

def test_iso_offer_splits_import_into_a_demand_bid_and_export_into_a_supply_offer():
    f = chain(2, loads={1: (100, 0)})
    book = validate_bids(bid_table([(1, "sell", 300, 30), (2, "buy", 50, 90), (2, "sell", 100, 120),
                                    (1, "buy", 20, -50)]), f, RULES)
    curve = trace_curve(f, book, RULES, options=NO_AC)
    lo, hi, q = check_bands(curve, RULES)
    np.testing.assert_allclose(q, [170.0, 150.0, -150.0, -200.0, -300.0])
    offer, area = curve.iso_offer(10)
    assert area == 0.0
    rows = {(r["kind"], r["segment"]): (r["price"], r["mw"]) for r in offer.iter_rows(named=True)}
    assert rows[("demand", 1)] == (30.0, pytest.approx(0.150))     # MW, per MWh: the part of the 300 kW
    assert rows[("demand", 2)] == (-50.0, pytest.approx(0.020))    # step above zero, then the cheaper bid
    assert rows[("supply", 1)] == (30.0, pytest.approx(0.150))     # ... and the part below zero
    assert rows[("supply", 2)] == (90.0, pytest.approx(0.050))
    assert rows[("supply", 3)] == (120.0, pytest.approx(0.100))
    assert ("fixed_demand", 0) not in rows and ("fixed_supply", 0) not in rows
    # Inflexible net load stated apart.
    assert curve.fixed_net_load_kw["fixed_kw"][0] == pytest.approx(100.0)


@given(n_bus=st.integers(3, 30), n_bids=st.integers(1, 60), seed=st.integers(0, 10_000), k=st.integers(1, 6))
@PROPERTY
def test_iso_offer_quantities_lie_on_the_exact_curve_and_add_up(n_bus, n_bids, seed, k):
    f = synthetic(n_bus, seed)
    book = validate_bids(random_bids(f, n_bids, seed), f, RULES)
    curve = trace_curve(f, book, RULES, options=NO_AC)
    lo, hi, q = check_bands(curve, RULES)
    offer, area = curve.iso_offer(k)
    assert area >= 0
    q_mw = q / 1000.0
    sel = lambda kind: offer.filter(pl.col("kind") == kind)  # noqa: E731
    demand, supply = sel("demand").sort("segment"), sel("supply").sort("segment")
    assert demand.height <= k and supply.height <= k
    assert np.all(np.diff(demand["price"].to_numpy()) < 0) and np.all(np.diff(supply["price"].to_numpy()) > 0)
    fixed_d = sel("fixed_demand")["mw"].sum()
    fixed_s = sel("fixed_supply")["mw"].sum()
    assert fixed_d + demand["mw"].sum() == pytest.approx(max(q_mw[0], 0.0), abs=1e-8)
    assert fixed_s + supply["mw"].sum() == pytest.approx(max(-q_mw[-1], 0.0), abs=1e-8)
    # The import after each demand segment (from the highest price down) is on the exact curve,
    # and so is the export after each supply segment (from the lowest price up).
    level = fixed_d
    for w in demand["mw"].to_list():
        level += w
        assert np.min(np.abs(np.maximum(q_mw, 0.0) - level)) < 1e-8
    level = fixed_s
    for w in supply["mw"].to_list():
        level += w
        assert np.min(np.abs(np.maximum(-q_mw, 0.0) - level)) < 1e-8


def _brute_area(prices, widths, k):
    n, best = len(prices), math.inf
    for m in range(1, min(k, n) + 1):
        for cuts in itertools.combinations(range(1, n), m - 1):
            ends = (0, *cuts, n)
            total = 0.0
            for i, j in zip(ends[:-1], ends[1:]):
                total += min(float(np.sum(widths[i:j] * np.abs(prices[i:j] - c))) for c in prices[i:j])
            best = min(best, total)
    return best


@given(data=st.data())
@settings(max_examples=60, deadline=None)
def test_reduce_steps_is_optimal_against_brute_force(data):
    n = data.draw(st.integers(1, 8))
    k = data.draw(st.integers(1, 5))
    drawn = data.draw(st.lists(st.integers(-100, 300), min_size=n, max_size=n, unique=True))
    prices = np.array(sorted(drawn), dtype=float)
    widths = np.array(data.draw(st.lists(st.floats(0.001, 5.0), min_size=n, max_size=n)))
    seg_p, seg_w, area = reduce_steps(prices, widths, k)
    assert len(seg_p) == min(n, k)
    assert area == pytest.approx(_brute_area(prices, widths, k) if n > k else 0.0, abs=1e-9)
    # Segment ends are cumulative step quantities: on the exact staircase.
    ends = np.cumsum(seg_w)
    assert all(np.any(np.isclose(e, np.cumsum(widths), rtol=0, atol=1e-12)) for e in ends)
    assert set(seg_p) <= set(prices)
    # The area the segments claim is the area they leave.
    owner = np.searchsorted(np.cumsum(seg_w), np.cumsum(widths) - 1e-9)
    assert float(np.sum(widths * np.abs(prices - seg_p[owner]))) == pytest.approx(area, abs=1e-9)


def test_reduce_steps_matches_a_plain_dynamic_programme_on_long_staircases():
    rng = np.random.default_rng(5)
    for n, k in ((60, 7), (100, 10), (40, 39)):
        prices = np.sort(rng.choice(np.arange(-500, 1500), n, replace=False)).astype(float)
        widths = rng.uniform(0.001, 1.0, n)

        def cost(i, j):
            return min(float(np.sum(widths[i:j + 1] * np.abs(prices[i:j + 1] - c))) for c in prices[i:j + 1])

        table = [[cost(i, j) if j >= i else math.inf for j in range(n)] for i in range(n)]
        best = [table[0][j] for j in range(n)]
        for _ in range(1, k):
            best = [min([best[j]] + [best[i - 1] + table[i][j] for i in range(1, j + 1)]) for j in range(n)]
        assert reduce_steps(prices, widths, k)[2] == pytest.approx(best[n - 1], rel=1e-9, abs=1e-9)


@given(data=st.data())
@settings(max_examples=60, deadline=None)
def test_the_median_search_from_any_start_finds_what_a_binary_search_finds(data):
    # reduce_steps' compiled median walks from a neighbouring range's median; wherever it starts (and with
    # repeated cumulative widths), it must land where numpy's searchsorted puts the half-width.
    widths = np.array(data.draw(st.lists(st.sampled_from([0.0, 0.5, 1.0, 2.5]), min_size=1, max_size=12)))
    wc = np.concatenate([[0.0], np.cumsum(widths)])
    n = len(widths)
    i = data.draw(st.integers(0, n - 1))
    j = data.draw(st.integers(i, n - 1))
    near = data.draw(st.integers(-1, n))
    half = wc[i] + (wc[j + 1] - wc[i]) / 2.0
    assert tracerjit._median(wc, i, j, near) == int(np.clip(np.searchsorted(wc, half, side="left") - 1, i, j))


def test_reduced_offer_of_a_long_curve_is_fast_and_on_the_curve():
    rng = np.random.default_rng(1)
    prices = np.sort(rng.uniform(-100, 300, 5000))
    widths = rng.uniform(0.001, 0.03, 5000)
    seg_p, seg_w, area = reduce_steps(prices, widths, 10)
    assert len(seg_p) == 10 and area > 0
    assert np.isin(np.round(np.cumsum(seg_w), 9), np.round(np.cumsum(widths), 9)).all()


# -- SOCP ---------------------------------------------------------------------------------------------

def test_socp_curve_is_within_its_stated_error_of_the_socp_clearing():
    f = ieee33()
    rules = MarketRules(price_floor=-100.0, price_cap=300.0)
    bids = random_bids(f, 12, 11, lo=-50, hi=250)
    book = validate_bids(bids, f, rules)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        curve = trace_curve_socp(f, book, rules, max_error_kw=2.0, price_tol=0.05)
    assert not curve.exact and curve.max_error_kw == 2.0 and curve.relaxation_gap < 1e-4
    lo, hi, q = arrays(curve)
    assert lo[0] == 1.0 and hi[-1] == rules.price_cap      # traced where losses cost money
    np.testing.assert_array_equal(lo[1:], hi[:-1])
    assert np.all(np.diff(q) <= 1e-9)
    lp = trace_curve(f, book, rules, options=NO_AC)
    rng = np.random.default_rng(0)
    socp_opts = ClearingOptions(formulation="socp", ac_check=False)
    for price in rng.uniform(1.0, 300.0, 6):
        if np.min(np.abs(np.concatenate([lo, hi]) - price)) < 0.05:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = clear(f, book, price, rules=rules, options=socp_opts)
        assert ref.ok
        assert abs(ref.interface_import_kw[0] - curve.import_at(0, price)) <= 2.0 + 0.05
        # Losses: the SOCP imports more than the lossless LP at the same price.
        assert ref.interface_import_kw[0] > lp.import_at(0, price)


def test_a_curve_runs_blas_on_one_thread_and_gives_the_threads_back():
    # The controller is found once per process (interface._one_blas_thread); each trace still limits BLAS to one
    # thread while it runs and restores the count after.
    from threadpoolctl import threadpool_info

    from dsomarket.engine import interface

    def blas_threads():
        return sorted(lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas")

    before = blas_threads()
    for _ in range(2):
        with interface._one_blas_thread():
            inside = blas_threads()
            assert inside and all(t == 1 for t in inside)
        assert blas_threads() == before
