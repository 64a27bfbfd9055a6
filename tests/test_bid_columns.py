"""Identical bid columns are merged before the LP is built and split back pro rata."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dsomarket.engine.bids import MarketRules, merge_columns, validate_bids
from dsomarket.engine.clearing import ClearingOptions, NodalMarket, clear
from dsomarket.engine.feeders import synthetic
from dsomarket.engine.interface import trace_curve
from dsomarket.engine.losses import RESIDUAL_TOL_KW

NO_AC = ClearingOptions(formulation="lossless", ac_check=False)
"""Merging is a property of the model's build: the merged and the hand-summed books are one LP (the loss-aware
model: one LP per linearisation, along the same iteration), so their optima agree to the solver's tolerance."""
RULES = MarketRules(price_floor=-200.0, price_cap=500.0)


def duplicated_bids(feeder, n_groups: int, seed: int) -> pl.DataFrame:
    """Bids drawn from few distinct (bus, side, price, tan_phi) so that many share a column."""
    rng = np.random.default_rng(seed)
    buses = feeder.buses["bus"].to_numpy()[1:]
    kinds = pl.DataFrame({"bus": rng.choice(buses, n_groups), "side": rng.choice(["buy", "sell"], n_groups),
                          "price": np.round(rng.uniform(-150, 450, n_groups), 0),
                          "tan_phi": rng.choice([0.0, 0.3], n_groups)})
    pick = rng.integers(0, n_groups, 4 * n_groups)
    return kinds[pick].with_columns(bid_id=pl.Series([f"b{k:04d}" for k in range(len(pick))]),
                                    quantity_kw=pl.Series(np.round(rng.uniform(5, 300, len(pick)), 1)))


def summed(bids: pl.DataFrame) -> pl.DataFrame:
    """One bid per distinct column, written out by hand: the independent reference."""
    return (bids.group_by(["bus", "side", "price", "tan_phi"], maintain_order=True)
            .agg(pl.col("quantity_kw").sum(), pl.col("bid_id").first()))


@pytest.mark.parametrize("formulation", ["lossless", "lossaware"])
@given(n_bus=st.integers(3, 25), n_groups=st.integers(1, 12), seed=st.integers(0, 10_000),
       price=st.floats(-150, 450))
@example(n_bus=6, n_groups=11, seed=8147, price=187.5)   # a bid held part-way by the losses, against a limit
@example(n_bus=3, n_groups=12, seed=3, price=25.0)
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_merged_clearing_equals_the_hand_summed_book_and_splits_pro_rata(formulation, n_bus, n_groups, seed, price):
    options = ClearingOptions(formulation=formulation, ac_check=False)
    f = synthetic(n_bus, seed)
    bids = duplicated_bids(f, n_groups, seed)
    book = validate_bids(bids, f, RULES)
    market = NodalMarket(f, book, price, RULES, options=options)
    assert market.model.var("bid").size == summed(bids).height < book.n
    res = market.solve()
    ref = clear(f, validate_bids(summed(bids), f, RULES), price, rules=RULES, options=options)
    assert res.ok and ref.ok
    assert res.welfare == pytest.approx(ref.welfare, rel=1e-7, abs=1e-6)
    # The lossless LPs are one LP; the loss-aware clearings converge to one fixed point, each to the tolerance
    # successive LP stops at (the merged and the hand-summed quantities differ in the last bit, so the
    # iterations do too: n_bus=3, n_groups=12, seed=3, price=25 converged 0.4 W apart).
    tol = 1e-6 if formulation == "lossless" else RESIDUAL_TOL_KW
    assert res.interface_import_kw[0] == pytest.approx(ref.interface_import_kw[0], abs=tol)
    # Every bid gets its column's share in proportion to its quantity.
    d = res.dispatch.join(bids.select("bid_id", "bus", "side", "price", "tan_phi"), on="bid_id", suffix="_in")
    groups = d.group_by(["bus", "side", "price", "tan_phi"]).agg(
        pl.col("cleared_kw").sum().alias("total"), pl.col("quantity_kw").sum().alias("q"))
    d = d.join(groups, on=["bus", "side", "price", "tan_phi"])
    expect = d["total"].to_numpy() * d["quantity_kw"].to_numpy() / d["q"].to_numpy()
    np.testing.assert_allclose(d["cleared_kw"].to_numpy(), expect, atol=1e-5)


def test_merged_curve_equals_the_hand_summed_books_curve():
    f = synthetic(30, 4)
    bids = duplicated_bids(f, 15, 4)
    curve = trace_curve(f, validate_bids(bids, f, RULES), RULES)
    ref = trace_curve(f, validate_bids(summed(bids), f, RULES), RULES)
    cols = ["price_low", "price_high", "import_kw"]
    np.testing.assert_allclose(curve.bands.select(cols).to_numpy(), ref.bands.select(cols).to_numpy(),
                               atol=1e-6)


def test_merging_keeps_resources_intervals_and_signs_apart_and_is_order_free():
    f = synthetic(5, 1)
    bus = f.buses["bus"][2]
    bids = pl.DataFrame({"bid_id": ["a", "b", "c", "d", "e", "f"], "bus": [bus] * 6,
                         "side": ["buy", "buy", "sell", "buy", "buy", "buy"],
                         "quantity_kw": [10.0, 20.0, 5.0, 7.0, 3.0, 4.0],
                         "price": [50.0, 50.0, 50.0, 50.0, 50.0, -0.0],
                         "resource_id": ["", "", "", "bat", "", ""],
                         "tan_phi": [0.0, 0.0, 0.0, 0.0, 0.1, 0.0]})
    cols = merge_columns(validate_bids(bids, f, RULES))
    assert cols.of_bid.tolist() == [0, 0, 1, 2, 3, 4]
    np.testing.assert_allclose(cols.book.quantity_kw, [30.0, 5.0, 7.0, 3.0, 4.0])
    np.testing.assert_allclose(cols.split(np.array([0.015, 0, 0, 0, 0]), validate_bids(bids, f, RULES))[:2],
                               [0.005, 0.010])
    shuffled = bids[[5, 3, 1, 0, 4, 2]]
    a = clear(f, bids, 60.0, rules=RULES, options=NO_AC).dispatch
    b = clear(f, shuffled, 60.0, rules=RULES, options=NO_AC).dispatch
    assert a.equals(b)


def test_only_resources_with_rows_of_their_own_keep_bids_apart():
    from dsomarket.engine.bids import Battery

    f = synthetic(5, 1)
    bus = f.buses["bus"][2]
    bids = pl.DataFrame({"bid_id": ["a", "b", "c", "d"], "bus": [bus] * 4, "side": ["buy"] * 4,
                         "quantity_kw": [10.0, 20.0, 30.0, 40.0], "price": [50.0] * 4,
                         "resource_id": ["pv-1", "pv-2", "bat", "bat"]})
    book = validate_bids(bids, f, RULES)
    bat = (Battery("bat", 100.0, 50.0, 50.0),)
    market = NodalMarket(f, book, 10.0, RULES, bat, options=NO_AC)
    assert market.columns.of_bid.tolist() == [0, 0, 1, 1]
    res = market.solve()
    ref = clear(f, bids.with_columns(resource_id=pl.lit("")).head(2), 10.0, rules=RULES, options=NO_AC)
    assert res.ok and ref.ok
    got = res.dispatch.sort("bid_id")["cleared_kw"].to_numpy()
    np.testing.assert_allclose(got[:2] / np.array([10.0, 20.0]), got[0] / 10.0)   # pro rata within the column
    assert got[:2].sum() == pytest.approx(ref.dispatch["cleared_kw"].sum(), abs=1e-6)


def test_bids_whose_keys_collide_in_the_hash_keep_their_own_columns():
    """merge_columns hashes each bid's keys to find candidates and groups those exactly: two bids built to share
    a hash but not their keys stay apart, while a true duplicate pair in the same book merges."""
    from dsomarket.engine.bids import KEY_MIX

    f = synthetic(30, 1)
    topo = f.topology
    mask = 2 ** 64 - 1
    k_code, k_price = KEY_MIX[0], KEY_MIX[1]
    inverse = pow(k_price, -1, 2 ** 64)
    bits_a = int(np.float64(50.0).view(np.uint64))
    found = None
    # Single interval, no resource: a bid's integer key is 2 * bus index + (1 for a buy). Bid a buys at bus i for
    # 50; bid b's price is the float whose bits make its hash equal a's (the multiplier is odd, so invertible).
    for i in range(1, topo.n_bus):
        for j in range(1, topo.n_bus):
            for buy in (0, 1):
                code_a, code_b = 2 * i + 1, 2 * j + buy
                if code_a == code_b:
                    continue
                bits_b = (((code_a * k_code) ^ (bits_a * k_price) ^ (code_b * k_code)) & mask) * inverse & mask
                assert ((code_b * k_code) ^ (bits_b * k_price)) & mask == ((code_a * k_code) ^ (bits_a * k_price)) & mask
                p2 = float(np.array([bits_b], dtype=np.uint64).view(np.float64)[0])
                if found is None and np.isfinite(p2) and RULES.price_floor <= p2 <= RULES.price_cap:
                    found = i, j, buy, p2
    i, j, buy, p2 = found
    last = str(topo.bus_ids[-1])
    bids = pl.DataFrame({"bid_id": ["a", "b", "c", "d"],
                         "bus": [str(topo.bus_ids[i]), str(topo.bus_ids[j]), last, last],
                         "side": ["buy", "buy" if buy else "sell", "sell", "sell"],
                         "quantity_kw": [1.0, 2.0, 3.0, 4.0], "price": [50.0, p2, 20.0, 20.0]})
    cols = merge_columns(validate_bids(bids, f, RULES), set())
    assert cols.of_bid.tolist() == [0, 1, 2, 2]
    assert cols.first_bid.tolist() == [0, 1, 2]
    np.testing.assert_array_equal(cols.book.quantity_kw, [1.0, 2.0, 7.0])
