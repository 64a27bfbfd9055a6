"""Forecasts: the table, folding it into the feeder, the built-in forecaster and the interface schedule."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl
import pytest

from dsomarket.engine.bids import MarketRules, validate_bids
from dsomarket.engine.clearing import clear
from dsomarket.engine.errors import InputError
from dsomarket.engine.feeders import ieee33
from dsomarket.engine.forecast import (apply_forecast, feeder_forecast, interface_schedule, same_interval_mean,
                                       validate_forecast)

DAY = datetime(2026, 12, 8, tzinfo=timezone.utc)
IVS = [DAY + timedelta(hours=h) for h in range(3)]


def fc(rows) -> pl.DataFrame:
    return pl.DataFrame(rows, schema={"bus": pl.Utf8, "interval": pl.Datetime("us", "UTC"), "p_kw": pl.Float64,
                                      "q_kvar": pl.Float64}, orient="row")


def test_a_forecast_replaces_the_fixed_load_where_given_and_clears_like_the_hand_edited_feeder():
    f = ieee33()
    forecast = validate_forecast(fc([("18", IVS[1], 150.0, 10.0), ("5", IVS[1], -400.0, -100.0)]), f)
    g = apply_forecast(f, forecast)
    p, q = g.loads(IVS)
    topo = g.topology
    j18, j5 = topo.bus_index_of(["18", "5"])
    assert p[j18].tolist() == [90.0, -150.0, 90.0] and q[j5, 1] == 100.0 and p[j5, 1] == 400.0
    bids = pl.DataFrame({"bid_id": ["s"], "bus": ["30"], "side": ["sell"], "quantity_kw": [500.0],
                         "price": [40.0], "interval": [IVS[1]]})
    res = clear(g, validate_bids(bids, g, MarketRules(), [IVS[1]]), 50.0)
    hand = f.with_changes(buses=f.buses.with_columns(
        load_kw=pl.when(pl.col("bus") == "18").then(-150.0).when(pl.col("bus") == "5").then(400.0)
        .otherwise(pl.col("load_kw")),
        load_kvar=pl.when(pl.col("bus") == "18").then(-10.0).when(pl.col("bus") == "5").then(100.0)
        .otherwise(pl.col("load_kvar"))))
    ref = clear(hand, validate_bids(bids, hand, MarketRules(), [IVS[1]]), 50.0)
    assert res.interface["import_kw"][0] == pytest.approx(ref.interface["import_kw"][0], abs=1e-6)
    np.testing.assert_allclose(res.prices.sort("bus")["dlmp"].to_numpy(), ref.prices.sort("bus")["dlmp"].to_numpy(),
                               atol=1e-6)


def test_the_builtin_forecaster_averages_the_same_interval_of_previous_days_and_falls_back_to_the_feeder():
    f = ieee33()
    history = validate_forecast(fc([
        ("5", IVS[0] - timedelta(days=1), -100.0, -20.0),
        ("5", IVS[0] - timedelta(days=3), -140.0, -40.0),
        ("5", IVS[0] - timedelta(days=8), -999.0, 0.0),      # more than 7 days back: not used
        ("5", IVS[1] - timedelta(hours=1), -999.0, 0.0),     # another time of day: not used
    ]), f, "history")
    out = same_interval_mean(f, history, IVS)
    five = out.filter(pl.col("bus") == "5").sort("interval")
    assert five["p_kw"].to_list()[0] == pytest.approx(-120.0) and five["q_kvar"][0] == pytest.approx(-30.0)
    assert five["source"].to_list() == ["history", "feeder", "feeder"] and five["n_days"][0] == 2
    base = f.buses.filter(pl.col("bus") == "5")["load_kw"][0]
    assert five["p_kw"][1] == -base
    assert out.height == 33 * 3


def test_bad_forecasts_name_the_row():
    f = ieee33()
    with pytest.raises(InputError, match="unknown bus") as err:
        validate_forecast(fc([("5", IVS[0], 1.0, 0.0), ("99", IVS[0], 1.0, 0.0)]), f)
    assert err.value.row == 1
    with pytest.raises(InputError, match="appears twice"):
        validate_forecast(fc([("5", IVS[0], 1.0, 0.0), ("5", IVS[0], 2.0, 0.0)]), f)
    with pytest.raises(InputError) as err:
        validate_forecast(fc([("5", IVS[0], float("nan"), 0.0)]), f)
    assert err.value.field == "p_kw"


def test_the_interface_schedule_is_the_fixed_net_load_plus_the_expected_position():
    f = ieee33()
    sched = interface_schedule(feeder_forecast(f, IVS),
                               pl.DataFrame({"interval": IVS[:2], "expected_kw": [-200.0, 50.0]}))
    total = f.buses["load_kw"].sum()
    assert sched["fixed_kw"].to_list() == pytest.approx([total] * 3)
    assert sched["import_kw"].to_list() == pytest.approx([total - 200.0, total + 50.0, total])
