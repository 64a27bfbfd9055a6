"""A real-time market with a battery, a line outage inside its horizon or not, awarded interval by interval over gRPC
(engine.runs.CoupledMarket, engine.runs.disaggregate_rolling)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from decimal import Decimal

import pytest

from dsomarket.clients.api import BidSegment, FailedPrecondition, IntervalAward, NetworkChange, Resource
from dsomarket.clients.demo import delivery_day
from tests.harness import replay_checks, running, simple_bids, small_market

ENERGY_KWH, RATE_KW, ETA = 60.0, 100.0, 0.9


async def storage_market(env, market_id: str, count: int = 4, fault: bool = False):
    """A published real-time market on ieee33: agg-a's PV and load, and its battery at bus 25; with ``fault``
    line 17 (the feed of bus 18 and its PV) is out from the third interval on: the battery's horizon is
    cleared as one model across the change (engine.runs.CoupledMarket). The market is loss-aware (the
    default): each award on the curve is delivered after losses. The forecast differs per interval: with
    identical intervals at one price the battery's loss-aware optimum is spread evenly over them, which
    successive LP finds only slowly (engine.clearing.NodalMarket.converge)."""
    op, a = env.clients["dso"], env.clients["agg-a"]
    await small_market(env, f"da-for-{market_id}")
    await a.register_resources([Resource("bat", "ieee33", "25", "battery", RATE_KW, energy_kwh=ENERGY_KWH,
                                         charge_kw=RATE_KW, discharge_kw=RATE_KW, eta_charge=ETA,
                                         eta_discharge=ETA)])
    market = await op.create_market(market_id, feeder_id="ieee33", kind="real_time", interval_count=count,
                                    delivery_start=delivery_day() + timedelta(hours=9))
    bids = simple_bids(market, "a")
    for k, iv in enumerate(market.intervals):
        bids += [BidSegment(f"bat-in-{k}", "bat", "buy", RATE_KW, Decimal("45"), iv),
                 BidSegment(f"bat-out-{k}", "bat", "sell", RATE_KW, Decimal("40"), iv)]
    await a.submit_bids(market_id, bids)
    if fault:
        await op.submit_network_changes("ieee33", [NetworkChange("fault-17", "outage", "17", market.intervals[2],
                                                                 "cable fault", shed=True)])
    await op.close_gate(market_id)
    forecast = ["50", "55", "60", "65"][:count]
    assert (await op.clear_market(market_id, iso_price_forecast=forecast)).status == "optimal"
    await op.publish_market(market_id)
    curves = await env.clients["iso"].list_curves(market_id=market_id)
    # Cheap first: the battery charges then, on the curve of an interval whose future is still the forecast's;
    # the later intervals at the forecast stay deliverable whatever the battery holds.
    prices = [30, *map(int, forecast[1:])]
    return market, [IntervalAward(c.interval_start, next(b.import_kw for b in c.bands if b.price_high >= p), str(p))
                    for c, p in zip(curves, prices)]


@pytest.mark.timeout(900)   # the curves: see the client deadline below
@pytest.mark.parametrize("fault", [False, True])
def test_a_storage_market_is_awarded_interval_by_interval_in_order_settled_and_replayed(tmp_path, fault):
    async def body():
        # The loss-aware curves of this market are some 200 converged clearings of the horizon (9-15 s of CPU,
        # benchmarks/bench_coupled_curve.py): more than the default deadline on a machine shared by many.
        async with running(tmp_path, client_timeout=240.0) as env:
            iso, a = env.clients["iso"], env.clients["agg-a"]
            market, awards = await storage_market(env, "rt-bat", fault=fault)
            with pytest.raises(FailedPrecondition, match="not the next to award"):
                await iso.submit_interval_award(market.market_id, [awards[1]])
            for k, award in enumerate(awards):
                if k == 2:
                    with pytest.raises(FailedPrecondition, match="interval order"):
                        await iso.submit_interval_award(market.market_id, [awards[3]])
                result, remaining = await iso.submit_interval_award(market.market_id, [award])
                assert result.status == "optimal" and remaining == 3 - k
                mine = await a.list_instructions(market_id=market.market_id)
                # Interval k is dispatched now, and the intervals before keep their instructions.
                assert {i.interval_start for i in mine} == set(market.intervals[:k + 1])
            bat = {i.interval_start: i.kw for i in await a.list_instructions(market_id=market.market_id)
                   if i.resource_id == "bat"}
            soc = 0.0
            for iv in market.intervals:
                kw = bat.get(iv, 0.0)   # injection positive: discharge
                hours = 5 / 60
                soc += (-kw * ETA if kw < 0 else -kw / ETA) * hours
                assert -1e-6 <= soc <= ENERGY_KWH + 1e-6
                assert abs(kw) <= RATE_KW + 1e-6
            assert min(bat.values()) < -1.0   # it charged in the cheap intervals ...
            report = await env.clients["dso"].settle_market(market.market_id)
            assert report.market.state == "settled"
            path = env.db_path
        checks = replay_checks(path, "rt-bat")
        assert [c.stage for c in checks].count("award") == 4
        assert all(c.identical for c in checks)

    asyncio.run(body())
