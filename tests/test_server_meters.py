"""Meters over gRPC: validated intake, metered deviations and interface imbalance settled to the cent."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from decimal import ROUND_HALF_EVEN, Decimal

import polars as pl
import pytest

from dsomarket.clients.api import (AlreadyExists, BidSegment, FailedPrecondition, IntervalAward, InvalidArgument,
                                   MeterReading)
from dsomarket.engine.metering import baseline_10_of_10
from tests.harness import running, simple_bids, small_market

BUS = {"pv": "18", "load": "25"}


async def settled_at_50(env, market_id: str) -> list[IntervalAward]:
    """Close, clear and publish a market, award each interval the curve's import at 50 per MWh, settle it."""
    op, iso = env.clients["dso"], env.clients["iso"]
    await op.close_gate(market_id)
    await op.clear_market(market_id, iso_price_forecast=["50"])
    await op.publish_market(market_id)
    awards = [IntervalAward(c.interval_start, next(x.import_kw for x in c.bands if x.price_high >= 50), "50")
              for c in await iso.list_curves(market_id=market_id)]
    await iso.submit_award(market_id, awards)
    await op.settle_market(market_id)
    return awards


def test_metered_deviations_settle_to_the_cent_and_the_books_balance(tmp_path):
    async def body():
        async with running(tmp_path) as env:
            op, iso, a, b = (env.clients[n] for n in ("dso", "iso", "agg-a", "agg-b"))
            market = await small_market(env)
            await a.submit_bids(market.market_id, simple_bids(market, "a"))
            await b.submit_bids(market.market_id, simple_bids(market, "b", load_price="60"))
            awards = await settled_at_50(env, market.market_id)

            instructed = {}
            for name, c in (("agg-a", a), ("agg-b", b)):
                for i in await c.list_instructions(market_id=market.market_id):
                    instructed[(name, i.resource_id, i.interval_start)] = i.kw
            # Meters: PV delivers 7.3 kW less than instructed; the loads follow within 1.7 kW.
            metered = {k: kw - 7.3 if k[1] == "pv" else kw + 1.7 for k, kw in instructed.items()}
            with pytest.raises(InvalidArgument, match="only inject"):
                await a.submit_meter_readings(market.market_id, [MeterReading("pv", market.intervals[0], -3.0)])
            with pytest.raises(Exception, match="PERMISSION_DENIED"):
                await a.submit_meter_readings(market.market_id, [MeterReading("", market.intervals[0], 3.0)])
            mine = [MeterReading(r, t, kw) for (n, r, t), kw in metered.items() if n == "agg-a"]
            assert await a.submit_meter_readings(market.market_id, mine) == len(mine)
            with pytest.raises(AlreadyExists):
                await a.submit_meter_readings(market.market_id, mine[:1])
            # agg-b's meters are missing: a gap.
            with pytest.raises(FailedPrecondition, match="gap"):
                await op.settle_imbalance(market.market_id)
            theirs = [MeterReading(r, t, kw) for (n, r, t), kw in metered.items() if n == "agg-b"]
            await b.submit_meter_readings(market.market_id, theirs)
            scheduled = {x.interval_start: x.import_kw for x in awards}
            # The interface meter: the import moves by the resources' deviations plus 2.5 kW of fixed load.
            dev = {t: sum(metered[k] - instructed[k] for k in instructed if k[2] == t) for t in market.intervals}
            iface = {t: scheduled[t] - dev[t] + 2.5 for t in market.intervals}
            await op.submit_meter_readings(market.market_id, [MeterReading("", t, kw) for t, kw in iface.items()])

            totals, count, interface, dr = await op.settle_imbalance(market.market_id)
            assert dr == [] and totals["demand_response"] == 0
            assert count == len(instructed)
            assert totals["resources"] + totals["interface"] + totals["residual"] == 0
            # Independent arithmetic per line: deviation x award DLMP at the resource's bus x 1 h, to the cent.
            prices = {(p.bus, p.interval_start): p.dlmp for p in await op.list_prices(market.market_id)}
            cents = Decimal("0.01")
            total = Decimal(0)
            for name, c in (("agg-a", a), ("agg-b", b)):
                lines = [s for s in await c.list_statements(market_id=market.market_id) if s.kind == "imbalance"]
                assert len(lines) == sum(1 for k in instructed if k[0] == name)
                for s in lines:
                    want_kw = metered[(name, s.resource_id, s.interval_start)] - instructed[(name, s.resource_id,
                                                                                           s.interval_start)]
                    assert s.kw == pytest.approx(want_kw, abs=1e-9)
                    assert s.price == prices[(BUS[s.resource_id], s.interval_start)]
                    want = (Decimal(repr(want_kw)) * s.price / 1000).quantize(cents, ROUND_HALF_EVEN)
                    assert abs(s.amount - want) <= Decimal("0.01") and s.amount == s.amount.quantize(cents)
                    total += s.amount
            assert total == totals["resources"]
            for row in interface:
                assert row["imbalance_kw"] == pytest.approx(-dev[row["interval_start"]] + 2.5, abs=1e-9)
                want = (Decimal(repr(-row["imbalance_kw"])) * row["price"] / 1000).quantize(cents, ROUND_HALF_EVEN)
                assert abs(row["amount"] - want) <= Decimal("0.01")
            assert sum(r["amount"] for r in interface) == totals["interface"]
            with pytest.raises(FailedPrecondition, match="already settled"):
                await op.settle_imbalance(market.market_id)

            report = await a.performance_report(market.market_id)
            assert {r.aggregator_id for r in report} == {"agg-a"} and len(report) == 4
            for r in report:
                assert r.error_kw == pytest.approx(-7.3 + 1.7 * sum(
                    1 for k in instructed if k[0] == "agg-a" and k[1] == "load" and k[2] == r.interval_start),
                    abs=1e-9)

    asyncio.run(body())


def test_demand_response_settles_its_delivered_reduction_against_its_baseline_to_the_cent(tmp_path):
    """A flexible load that sells a reduction is measured against its 10-of-10 baseline, not against zero."""
    async def body():
        async with running(tmp_path) as env:
            op, iso, a, b = (env.clients[n] for n in ("dso", "iso", "agg-a", "agg-b"))
            market = await small_market(env)
            day = market.intervals[0]
            await a.submit_bids(market.market_id, simple_bids(market, "a"))
            # agg-b's flexible load sells 50 kW of reduction at 20 per MWh in every hour: demand response.
            await b.submit_bids(market.market_id, [BidSegment(f"dr-{k}", "load", "sell", 50.0, Decimal(20), t)
                                                   for k, t in enumerate(market.intervals)])
            # Its metered history: 12 days before, every hour; the evening before runs 15 kW above its usual.
            history = {day - timedelta(days=d) + timedelta(hours=h): 100.0 + 2 * d + h + (15.0 if d == 1 and h >= 21
                                                                                            else 0.0)
                       for d in range(1, 13) for h in range(24)}
            with pytest.raises(InvalidArgument, match="cannot inject"):
                await b.submit_resource_history([MeterReading("load", day - timedelta(days=1), 5.0)])
            with pytest.raises(InvalidArgument, match="is a pv"):
                await b.submit_resource_history([MeterReading("pv", day - timedelta(days=1), -5.0)])
            assert await b.submit_resource_history([MeterReading("load", t, -kw) for t, kw in history.items()]) \
                == len(history)
            awards = await settled_at_50(env, market.market_id)

            instructed = {(n, i.resource_id, i.interval_start): i.kw for n, c in (("agg-a", a), ("agg-b", b))
                          for i in await c.list_instructions(market_id=market.market_id)}
            reduction = {t: kw for (n, r, t), kw in instructed.items() if n == "agg-b"}
            assert reduction and all(kw > 0 for kw in reduction.values())  # the reduction was dispatched
            # The baseline the engine's 10-of-10 gives this history (tests/test_metering.py checks it by hand).
            base = baseline_10_of_10(pl.DataFrame({"interval": list(history), "kw": list(history.values())}),
                                     list(market.intervals))
            baseline = dict(zip(base["interval"].to_list(), base["baseline_kw"].to_list()))
            assert (base["adjustment_kw"] != 0).all()  # the evening before moved it
            # The load delivers 3.1 kW less reduction than instructed: it consumes baseline - reduction + 3.1.
            load = {t: baseline[t] - reduction[t] + 3.1 for t in reduction}
            await b.submit_meter_readings(market.market_id, [MeterReading("load", t, -kw) for t, kw in load.items()])
            await a.submit_meter_readings(market.market_id, [MeterReading(r, t, kw) for (n, r, t), kw
                                                             in instructed.items() if n == "agg-a"])
            await op.submit_meter_readings(market.market_id, [MeterReading("", x.interval_start, x.import_kw + 3.1)
                                                              for x in awards])
            totals, _, _, dr = await op.settle_imbalance(market.market_id)
            assert totals["resources"] + totals["interface"] + totals["residual"] == 0
            prices = {p.interval_start: p.dlmp for p in await op.list_prices(market.market_id, bus="25")}
            lines = {s.interval_start: s for s in await b.list_statements(market_id=market.market_id)
                     if s.kind == "demand_response"}
            assert sorted(lines) == sorted(reduction) == sorted(r["interval_start"] for r in dr)
            cents = Decimal("0.01")
            for r in dr:
                t = r["interval_start"]
                assert r["baseline_kw"] == pytest.approx(baseline[t]) and r["metered_kw"] == pytest.approx(load[t])
                assert r["delivered_kw"] == pytest.approx(reduction[t] - 3.1)
                assert r["instructed_kw"] == pytest.approx(reduction[t]) and r["deviation_kw"] == pytest.approx(-3.1)
                # To the cent: -3.1 kW for one hour at the DLMP of bus 25, half-even.
                want = (Decimal("-3.1") * prices[t] / 1000).quantize(cents, ROUND_HALF_EVEN)
                assert r["price"] == prices[t] and r["amount"] == want and lines[t].amount == want
                assert lines[t].kw == pytest.approx(-3.1)
            assert sum(r["amount"] for r in dr) == totals["demand_response"]
            # The performance report measures the same way: delivered reduction against instructed.
            report = await b.performance_report(market.market_id)
            assert sorted(r.interval_start for r in report) == sorted(reduction)
            assert all(r.error_kw == pytest.approx(-3.1) and r.metered_kw == pytest.approx(reduction[r.interval_start]
                                                                                           - 3.1) for r in report)
            # Measured against zero instead, the same meter would have been a deviation of about -(baseline).
            assert all(abs(-load[t] - reduction[t]) > 100 for t in reduction)

    asyncio.run(body())
