"""Degenerate curves: many bids at equal prices (ties between flips, and between flips and pivots)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dsomarket.engine.bids import MarketRules, validate_bids
from dsomarket.engine.clearing import ClearingOptions, clear
from dsomarket.engine.feeders import synthetic
from dsomarket.engine.interface import trace_curve

NO_AC = ClearingOptions(formulation="lossless", ac_check=False)
"""The exact staircase of one LP against cold solves of that LP: the lossless model, whose curve is exact. (The
loss-aware curve is checked against AC power flows in tests/test_losses.py.)"""
RULES = MarketRules(price_floor=-200.0, price_cap=500.0)


def tied_bids(feeder, n: int, seed: int, prices: list[float]) -> pl.DataFrame:
    """Bids whose prices come from a handful of values, at distinct buses and sides: ties everywhere."""
    rng = np.random.default_rng(seed)
    buses = feeder.buses["bus"].to_numpy()[1:]
    return pl.DataFrame({"bid_id": [f"t{k:04d}" for k in range(n)], "bus": rng.choice(buses, n),
                         "side": rng.choice(["buy", "sell"], n),
                         "quantity_kw": rng.choice([50.0, 100.0, 400.0], n),
                         "price": rng.choice(prices, n),
                         "tan_phi": rng.choice([0.0, 0.3], n)})


def check_against_cold(f, book, curve, rng):
    b = curve.interval_bands(0)
    lo, hi, q = b["price_low"].to_numpy(), b["price_high"].to_numpy(), b["import_kw"].to_numpy()
    assert lo[0] == RULES.price_floor and hi[-1] == RULES.price_cap
    np.testing.assert_array_equal(lo[1:], hi[:-1])
    assert np.all(np.diff(q) < 0)
    for k in range(len(q)):
        res = clear(f, book, (lo[k] + hi[k]) / 2, rules=RULES, options=NO_AC)
        assert res.ok
        assert res.interface_import_kw[0] == pytest.approx(q[k], abs=1e-3), (lo[k], hi[k])
    for price in rng.uniform(RULES.price_floor, RULES.price_cap, 5):
        if np.min(np.abs(hi[:-1] - price), initial=np.inf) > 1e-6:
            res = clear(f, book, price, rules=RULES, options=NO_AC)
            assert res.interface_import_kw[0] == pytest.approx(curve.import_at(0, price), abs=1e-3)


@given(n_bus=st.integers(3, 40), n_bids=st.integers(2, 60), seed=st.integers(0, 10_000),
       n_prices=st.integers(1, 4))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example(n_bus=4, n_bids=2, seed=2, n_prices=3)
@example(n_bus=3, n_bids=3, seed=2242, n_prices=3)
@example(n_bus=18, n_bids=53, seed=677, n_prices=4)
def test_tied_prices_trace_the_curve_of_independent_clearings(n_bus, n_bids, seed, n_prices):
    f = synthetic(n_bus, seed)
    rng = np.random.default_rng(seed)
    prices = list(np.round(rng.uniform(-100, 300, n_prices), 0))
    book = validate_bids(tied_bids(f, n_bids, seed, prices), f, RULES)
    curve = trace_curve(f, book, RULES, options=NO_AC)
    check_against_cold(f, book, curve, rng)
    # Ties collapse: every bid at one price switches at one step, so a tied price has one step near it (a tie
    # the tracer split would leave slivers of bands there), e.g. n_bus=4, n_bids=2, seed=2,
    # n_prices=3: steps at 5, 19 and -6.82, the last where congestion parts the bus's price from the
    # interface's. Congestion adds steps of its own, as many as the flows cross facets of a line's thermal
    # polygon (seed 2242: 8 bands from 3 bids, each checked against a clearing above), so the number of
    # bands is not bounded by the bids'.
    # Two steps near one tied price are allowed only with a real band between them, one a fresh clearing at its
    # middle imports (n_bus=18, n_bids=53, seed=677, n_prices=4: bids tied at 170 and 172 on congested buses
    # switch at 169.85 and 169.91, and clear at 169.88 imports the 943.8 kW of the band between); a split tie's
    # sliver has no width.
    steps = curve.bands["price_high"].to_numpy()[:-1]
    for p in prices:
        near = np.sort(steps[np.abs(steps - p) <= 1e-3 * max(1.0, abs(p))])
        for lo, hi in zip(near[:-1], near[1:]):
            assert hi - lo > 1e-6, (p, lo, hi)
            mid = (lo + hi) / 2
            res = clear(f, book, mid, rules=RULES, options=NO_AC)
            assert res.interface_import_kw[0] == pytest.approx(curve.import_at(0, mid), abs=1e-3), (p, lo, hi)


def test_a_tight_feeder_with_every_bid_at_one_price_is_one_step_where_the_network_allows():
    # All bids at 40: every flip ties with every other, and the rated lines make the first flips
    # break bounds at the same price (a flip and a pivot tie).
    f = synthetic(60, 5)
    rated = f.with_changes(import_max_kw=800.0)
    book = validate_bids(tied_bids(rated, 80, 5, [40.0]), rated, RULES)
    curve = trace_curve(rated, book, RULES, options=NO_AC)
    check_against_cold(rated, book, curve, np.random.default_rng(5))
    steps = curve.bands["price_high"].to_numpy()[:-1]
    assert set(np.round(steps, 6)) <= {40.0}
