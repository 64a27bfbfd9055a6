"""What a territory worker keeps of an interface besides its market and curves: the ISO offers of its interval
curves, the engine's feeder of its stored tables, and the bids validated once (engine.runs.KeptMarket,
server.markets_engine.clear_kept). Each must leave every result exactly what a fresh clearing gives."""

from __future__ import annotations

from collections import OrderedDict
from datetime import datetime, timedelta, timezone

import polars as pl
import pytest

from dsomarket.engine import runs as runs_module
from dsomarket.engine.bids import MarketRules, validate_bids
from dsomarket.engine.clearing import ClearingOptions
from dsomarket.engine.feeders import synthetic
from dsomarket.engine.runs import KeptMarket, clear_runs, runs_for, trace_runs
from dsomarket.engine.territory import IntervalCurves, synthetic_bids
from dsomarket.server import markets_engine, store

START = datetime(2031, 1, 2, 12, tzinfo=timezone.utc)
OPTIONS = ClearingOptions(formulation="lossless")


class _Counted(OrderedDict):
    """An offer memo that counts the look-ups it answered."""

    hits = 0

    def get(self, key, default=None):
        value = super().get(key, default)
        self.hits += value is not None
        return value


def _book(bids: pl.DataFrame, starts: list, feeder, rules: MarketRules, suffix: str):
    table = pl.concat([bids.with_columns(pl.lit(iv).alias("interval"), (pl.col("bid_id") + f"{suffix}{k}").alias("bid_id"))
                       for k, iv in enumerate(starts)])
    return validate_bids(table, feeder, rules, starts)


def test_a_real_time_session_takes_its_offer_from_the_day_ahead_and_offers_what_a_fresh_curve_does():
    feeder = synthetic(30, 4)
    bids = synthetic_bids(feeder, 24, 5)
    hourly, five = MarketRules(interval_minutes=60.0), MarketRules(interval_minutes=5.0)
    day_ahead = _book(bids, [START, START + timedelta(hours=1)], feeder, hourly, "-h")
    curves, offers = IntervalCurves(), _Counted()
    da = KeptMarket(runs_for(feeder, None, day_ahead), day_ahead, hourly, (), OPTIONS, curves, offers)
    da.clear([50.0, 50.0])
    da.curve([50.0, 50.0])
    da_offer, da_area = da.iso_offer(10)
    fresh = trace_runs(runs_for(feeder, None, day_ahead), day_ahead, hourly, (), OPTIONS, forecast=[50.0, 50.0])
    # Summed over intervals and sides in the one order a single pass sums them: the same float.
    assert da_offer.equals(fresh.iso_offer(10)[0]) and da_area == fresh.iso_offer(10)[1]
    # The two hours hold the same bids on the same feeder: one curve, one offer, reduced once.
    assert offers.hits == 1 and len(offers) == 1

    real_time = _book(bids, [START + timedelta(minutes=10)], feeder, five, "-")
    runs = runs_for(feeder, None, real_time)
    rt = KeptMarket(runs, real_time, five, (), OPTIONS, curves, offers, validated_on=feeder)
    warm = rt.clear([55.0])
    rt.curve([55.0])
    offer, area = rt.iso_offer(10)
    assert offers.hits == 2 and len(offers) == 1
    cold_curve = trace_runs(runs, real_time, five, (), OPTIONS, forecast=[55.0])
    assert offer.equals(cold_curve.iso_offer(10)[0]) and area == cold_curve.iso_offer(10)[1]
    assert offer["interval"].unique().to_list() == [START + timedelta(minutes=10)]
    cold = clear_runs(runs, real_time, [55.0], rules=five, options=OPTIONS)
    for name in ("dispatch", "prices", "lines", "buses", "interface"):
        assert getattr(warm, name).equals(getattr(cold, name)), name


def test_offers_need_the_curves_they_are_kept_with():
    feeder = synthetic(30, 4)
    book = _book(synthetic_bids(feeder, 6, 5), [START], feeder, MarketRules(), "-")
    with pytest.raises(ValueError, match="offers"):
        KeptMarket(runs_for(feeder, None, book), book, MarketRules(), (), OPTIONS, None, OrderedDict())


def test_bids_validated_on_the_run_s_feeder_are_not_validated_again(monkeypatch):
    feeder = synthetic(30, 4)
    rules = MarketRules(interval_minutes=5.0)
    book = _book(synthetic_bids(feeder, 24, 5), [START], feeder, rules, "-")
    runs = runs_for(feeder, None, book)
    calls = []
    real = runs_module.run_book
    monkeypatch.setattr(runs_module, "run_book", lambda *a: calls.append(1) or real(*a))
    kept = KeptMarket(runs, book, rules, (), OPTIONS, IntervalCurves(), validated_on=feeder)
    kept.clear([40.0])
    kept.curve([40.0])
    assert calls == []
    other = KeptMarket(runs, book, rules, (), OPTIONS, IntervalCurves())   # not told: validated once
    other.clear([40.0])
    other.curve([40.0])
    assert calls == [1]
    assert kept.curve([40.0]).bands.equals(other.curve([40.0]).bands)


def _rows(feeder, bids: pl.DataFrame, start: datetime) -> tuple:
    """A one-interval market's stored rows (server.store.market_rows) of ``bids`` (engine ids agg/bid)."""
    market = {"market_id": "m", "feeder_id": "f", "price_floor": "-1000", "price_cap": "3000",
              "interval_minutes": 5, "delivery_start_us": int(start.timestamp() * 1e6), "interval_count": 1,
              "value_of_lost_load": None, "formulation": "lossless", "day_ahead_market_id": ""}
    table = bids.select(pl.col("aggregator_id"), "bid_id", pl.col("bid_id").alias("resource_id"), "bus", "side",
                        "quantity_kw", pl.col("price").cast(pl.Utf8), pl.lit(0).alias("interval_idx"),
                        pl.lit(0.0).alias("tan_phi")).cast(store.BID_SCHEMA)
    resources = pl.DataFrame(schema=store.RESOURCE_SCHEMA)   # bids of no registered resource
    return market, markets_engine.feeder_to_tables(feeder), table, resources, None, (0, []), {}


def test_a_kept_interface_reuses_the_feeder_built_from_the_same_stored_tables_and_clears_as_fresh():
    feeder = synthetic(30, 4)
    bids = synthetic_bids(feeder, 12, 5).with_columns(pl.col("price").round(2))
    first, later = _rows(feeder, bids, START), _rows(feeder, bids, START + timedelta(minutes=5))
    out, kept = markets_engine.clear_kept(None, first, ["50"])
    assert out.status == "optimal"
    again, kept_again = markets_engine.clear_kept(kept, later, ["60"])
    assert kept_again.feeder is kept.feeder and again.warm
    assert again.digest == markets_engine.clear_kept(None, later, ["60"])[0].digest
    # Other stored tables (another feeder under the same interface id): built afresh, not the kept one.
    other = synthetic(30, 7)
    moved = _rows(other, bids.with_columns(pl.lit(other.topology.bus_ids[1]).alias("bus")), START)
    _, kept_other = markets_engine.clear_kept(kept_again, moved, ["60"])
    assert kept_other.feeder is not kept.feeder
