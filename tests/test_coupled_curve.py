"""Coupled (storage) day-ahead curves: every band against a textbook horizon LP; the same curve with the
other hours' networks summed away (engine.horizoncurve) as on the whole horizon; and the same curve
whichever intervals are traced together, which lets ``dsomarket curve --workers N`` trace the
intervals of one horizon in separate processes."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl
import pytest

from dsomarket.engine import interface
from dsomarket.engine.bids import Battery, MarketRules, validate_bids
from dsomarket.engine.clearing import ClearingOptions, NodalMarket
from dsomarket.engine.errors import InputError
from dsomarket.engine.feeders import ieee33, synthetic
from dsomarket.engine.horizoncurve import HorizonCurves
from dsomarket.engine.interface import join_curves, trace_curve
from dsomarket.engine.network_changes import validate_changes
from dsomarket.engine.runs import runs_for, trace_runs
from tests.reference import horizon_reference
from tests.test_interface import check_bands, random_bids

LOSSLESS = ClearingOptions(formulation="lossless", ac_check=False)
RULES = MarketRules(price_floor=-200.0, price_cap=500.0)
T0 = datetime(2026, 3, 1, tzinfo=timezone.utc)
BATTERIES = (Battery("bat", 300.0, 150.0, 150.0, eta_charge=0.9, eta_discharge=0.9, soc_init_kwh=150.0,
                     soc_end_kwh=150.0),
             Battery("bat2", 200.0, 100.0, 100.0, soc_init_kwh=0.0, soc_end_kwh=0.0))
FORECAST = np.array([30.0, 90.0, 60.0])


def horizon_bids(n: int = 6, feeder=None) -> pl.DataFrame:
    """Three hours of random bids, and a charge and a discharge bid of each battery every hour."""
    rows = []
    for h in range(3):
        iv = T0 + timedelta(hours=h)
        rows.append(random_bids(feeder or ieee33(), n, 60 + h, lo=-100, hi=300).with_columns(
            bid_id=pl.col("bid_id") + f"-{h}", interval=pl.lit(iv), resource_id=pl.lit("")))
        rows.append(pl.DataFrame({
            "bid_id": [f"bat-c{h}", f"bat-d{h}", f"bat2-c{h}", f"bat2-d{h}"], "bus": ["18", "18", "30", "30"],
            "side": ["buy", "sell", "buy", "sell"], "quantity_kw": [150.0, 150.0, 100.0, 100.0],
            "price": [20.0 + 5 * h, 70.0 - 5 * h, 40.0, 55.0], "aggregator_id": ["agg-s"] * 4,
            "interval": [iv] * 4, "resource_id": ["bat", "bat", "bat2", "bat2"]}))
    return pl.concat(rows, how="diagonal_relaxed")


def test_every_band_of_a_storage_day_is_the_textbook_horizon_lp_at_a_price_inside_it():
    # A feeder whose line limits the batteries can reach: hour 2's network is summed away in the
    # other hours' curves but for the subtrees behind those lines, hours 0 and 1 keep theirs whole
    # (engine.horizoncurve).
    f = synthetic(32, 1)
    bids = horizon_bids(n=4, feeder=f)
    book = validate_bids(bids, f, RULES)
    horizon = HorizonCurves(NodalMarket(f, book, FORECAST, RULES, BATTERIES, LOSSLESS))
    assert horizon.summed == [2]
    assert 0 < len(horizon.parts[2].sums[0]) < f.topology.n_bus
    curve = trace_curve(f, book, RULES, BATTERIES, options=LOSSLESS, forecast=FORECAST)
    imports = horizon_reference(f, bids, BATTERIES)
    for t in range(3):
        lo, hi, q = check_bands(curve, RULES, t)
        assert len(q) > 3
        for k in range(len(q)):
            prices = FORECAST.copy()
            prices[t] = (lo[k] + hi[k]) / 2
            assert imports(prices)[t] == pytest.approx(q[k], abs=1e-3), (t, lo[k], hi[k])


@pytest.mark.parametrize("feeder", [ieee33(), synthetic(32, 0), synthetic(60, 1)],
                         ids=["ieee33", "synthetic32", "synthetic60"])
def test_summing_the_other_hours_networks_away_traces_the_same_curve(monkeypatch, feeder):
    book = validate_bids(horizon_bids(feeder=feeder), feeder, RULES)
    reduced = trace_curve(feeder, book, RULES, BATTERIES, options=LOSSLESS, forecast=FORECAST)

    class Whole:                    # sums nothing: every curve on the whole horizon
        def __init__(self, market):
            self.summed = []

    monkeypatch.setattr(interface, "HorizonCurves", Whole)
    whole = trace_curve(feeder, book, RULES, BATTERIES, options=LOSSLESS, forecast=FORECAST)
    assert reduced.bands.equals(whole.bands)


def test_an_intervals_curve_is_the_same_whichever_intervals_are_traced_with_it():
    f = ieee33()
    book = validate_bids(horizon_bids(), f, RULES)
    whole = trace_curve(f, book, RULES, BATTERIES, options=LOSSLESS, forecast=FORECAST)
    parts = [trace_curve(f, book, RULES, BATTERIES, options=LOSSLESS, forecast=FORECAST, intervals=k)
             for k in ([2, 0], [1])]
    assert parts[1].intervals() == [book.intervals[1]]
    joined = join_curves(parts)
    assert joined.bands.equals(whole.bands)
    assert joined.fixed_net_load_kw.equals(whole.fixed_net_load_kw)
    np.testing.assert_array_equal(joined.forecast, whole.forecast)
    assert joined.conditional and joined.solves == sum(p.solves for p in parts)
    with pytest.raises(InputError, match="intervals"):
        trace_curve(f, book, RULES, BATTERIES, options=LOSSLESS, intervals=[3])


def test_a_horizon_whose_network_changes_traces_the_same_curve_in_parts():
    f = ieee33()
    book = validate_bids(horizon_bids(), f, RULES)
    changes = validate_changes(pl.DataFrame(
        [{"change_id": "fault-17", "kind": "outage", "element": "17", "start": T0 + timedelta(hours=1), "end": None,
          "shed": True, "s_max_kva": None, "vmin_pu": None, "vmax_pu": None, "import_max_kw": None,
          "export_max_kw": None, "who": "operator", "why": "cable fault"}],
        schema_overrides={"start": pl.Datetime("us", "UTC"), "end": pl.Datetime("us", "UTC")}), f)
    runs = runs_for(f, changes, book)
    assert len(runs) == 2
    whole = trace_runs(runs, book, RULES, BATTERIES, LOSSLESS, forecast=FORECAST)
    joined = join_curves([trace_runs(runs, book, RULES, BATTERIES, LOSSLESS, forecast=FORECAST, intervals=k)
                          for k in ([1], [0, 2])])
    assert joined.bands.equals(whole.bands)
    assert joined.fixed_net_load_kw.equals(whole.fixed_net_load_kw)
