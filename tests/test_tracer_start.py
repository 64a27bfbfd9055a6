"""The tracer's first basis (:meth:`engine.tracer._Probe.start`): the network's slack basis, taken as it is
where it is optimal and otherwise handed to HiGHS as a start, must give what a cold solve gives."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsomarket.engine.bids import MarketRules, validate_bids
from dsomarket.engine.clearing import ClearingOptions, NodalMarket, clear
from dsomarket.engine.feeders import synthetic
from dsomarket.engine.interface import trace_curve
from dsomarket.engine.network import S_BASE_KVA
from dsomarket.engine.tracer import _Probe
from tests.test_interface import bid_table, chain, check_bands, random_bids

LOSSLESS = ClearingOptions(formulation="lossless", ac_check=False)
RULES = MarketRules(price_floor=-200.0, price_cap=500.0)


def cold_import(feeder, book, price) -> float:
    res = clear(feeder, book, price, rules=RULES, options=LOSSLESS)
    assert res.ok
    return float(res.interface_import_kw[0])


def started(feeder, book):
    market = NodalMarket(feeder, book, RULES.price_floor, RULES, options=LOSSLESS)
    probe = _Probe(market, 0)
    sample, basis = probe.start(RULES.price_floor)
    return probe, sample, basis


def test_an_uncongested_feeder_s_slack_basis_is_optimal_at_the_floor_without_a_solve():
    # No line limit, voltage limits far away: at the floor every buy clears and no sell does.
    f = chain(3, vmin=0.5, loads={1: (30, 0), 3: (20, 0)})
    book = validate_bids(bid_table([(1, "buy", 40, 80), (2, "sell", 50, 20), (3, "buy", 10, -50),
                                    (2, "sell", 25, 300)]), f, RULES)
    probe, sample, basis = started(f, book)
    assert probe.solves == 0
    assert sample.q * S_BASE_KVA == pytest.approx(30 + 20 + 40 + 10, abs=1e-6)
    assert sample.q * S_BASE_KVA == pytest.approx(cold_import(f, book, RULES.price_floor), abs=1e-6)
    # Its range ends where the first bid's reduced cost turns: the buy at -50 leaves there.
    assert sample.high == pytest.approx(-50.0)


def test_a_line_limit_broken_by_the_slack_basis_is_left_to_highs_from_that_start():
    # 100 kVA into bus 2, where 300 kW buy at 80: at the floor the limit binds and a bid clears part-way.
    f = chain(2, vmin=0.5, s_max={2: 100.0})
    book = validate_bids(bid_table([(2, "buy", 300, 80), (1, "buy", 50, 40)]), f, RULES)
    probe, sample, _ = started(f, book)
    assert probe.solves == 1
    assert sample.q * S_BASE_KVA == pytest.approx(cold_import(f, book, RULES.price_floor), abs=1e-3)


@given(n_bus=st.integers(3, 40), n_bids=st.integers(1, 40), seed=st.integers(0, 10_000), tan=st.booleans(),
       scale=st.sampled_from([1.0, 0.01]))
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_the_first_basis_gives_the_cold_import_over_its_whole_range(n_bus, n_bids, seed, tan, scale):
    # Bids a hundredth the size leave most synthetic feeders uncongested at the floor (the slack basis
    # is taken as it is); full-size ones congest most (HiGHS starts from it).
    f = synthetic(n_bus, seed)
    bids = random_bids(f, n_bids, seed, tan_phi=tan).with_columns(pl.col("quantity_kw") * scale)
    book = validate_bids(bids, f, RULES)
    _, sample, _ = started(f, book)
    assert sample.low <= RULES.price_floor <= sample.high
    high = min(sample.high, RULES.price_cap)
    for price in np.linspace(RULES.price_floor, high, 4)[:-1]:
        assert cold_import(f, book, price) == pytest.approx(sample.q * S_BASE_KVA, abs=1e-3), price


@given(n_bus=st.integers(3, 30), n_bids=st.integers(1, 30), seed=st.integers(0, 10_000))
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_a_curve_traced_from_the_slack_basis_equals_cold_clearings_at_every_band_midpoint(n_bus, n_bids, seed):
    f = synthetic(n_bus, seed)
    bids = random_bids(f, n_bids, seed, tan_phi=True).with_columns(pl.col("quantity_kw") * 0.01)
    book = validate_bids(bids, f, RULES)
    curve = trace_curve(f, book, RULES, options=LOSSLESS)
    lo, hi, q = check_bands(curve, RULES)
    for k, mid in enumerate((lo + hi) / 2):
        assert cold_import(f, book, mid) == pytest.approx(q[k], abs=1e-3), (lo[k], hi[k])
