"""The rolling real-time loop over gRPC: a real-time hour awarded interval by interval."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from dsomarket.clients.api import FailedPrecondition, IntervalAward
from dsomarket.clients.demo import delivery_day
from dsomarket.server import db
from dsomarket.server.replay import replay
from tests.harness import running, simple_bids, small_market


async def cleared_real_time(env, market_id: str, kind: str = "real_time", count: int = 12):
    """A published real-time market of ``count`` intervals on ieee33 with bids of agg-a and agg-b."""
    op = env.clients["dso"]
    await small_market(env, f"da-for-{market_id}")  # the feeder and the resources (once)
    market = await op.create_market(market_id, feeder_id="ieee33", kind=kind, interval_count=count,
                                    delivery_start=delivery_day() + timedelta(hours=9))
    await env.clients["agg-a"].submit_bids(market_id, simple_bids(market, "a"))
    await env.clients["agg-b"].submit_bids(market_id, simple_bids(market, "b", load_price="60"))
    await op.close_gate(market_id)
    assert (await op.clear_market(market_id, iso_price_forecast=["50"])).status == "optimal"
    await op.publish_market(market_id)
    curves = await env.clients["iso"].list_curves(market_id=market_id)
    # The ISO's dispatch signal: the curve's import at a price that moves from interval to interval.
    prices = [30 + 7 * (k % 5) for k in range(count)]
    awards = [IntervalAward(c.interval_start, next(b.import_kw for b in c.bands if b.price_high >= p), str(p))
              for c, p in zip(curves, prices)]
    return market, awards


def key(instructions):
    return sorted((i.aggregator_id, i.resource_id, i.interval_start, round(i.kw, 6)) for i in instructions)


def test_a_real_time_hour_awarded_interval_by_interval_dispatches_each_at_once(tmp_path):
    async def body():
        async with running(tmp_path) as env:
            iso, a = env.clients["iso"], env.clients["agg-a"]
            market, awards = await cleared_real_time(env, "rt-rolling")
            assert market.interval_count == 12 and market.intervals[1] - market.intervals[0] == timedelta(minutes=5)
            got = []

            async def follow():
                async for e in a.dispatch_stream(market_id=market.market_id):
                    got.append(e)
                    return

            task = asyncio.create_task(follow())
            for k, award in enumerate(awards):
                result, remaining = await iso.submit_interval_award(market.market_id, [award])
                assert result.status == "optimal" and remaining == 11 - k
                assert result.market.state == ("awarded" if k == 11 else "published")
                if k == 0:
                    await asyncio.wait_for(task, 30)  # interval 0 dispatched before interval 1 is awarded
                    mine = await a.list_instructions(market_id=market.market_id)
                    assert {i.interval_start for i in mine} == {market.intervals[0]}
                    with pytest.raises(FailedPrecondition, match="already awarded"):
                        await iso.submit_interval_award(market.market_id, [award])
            rolling = await a.list_instructions(market_id=market.market_id)

            # Reference: the same market awarded whole at once.
            whole, _ = await cleared_real_time(env, "rt-whole")
            assert (await iso.submit_award(whole.market_id, awards)).status == "optimal"
            assert key(rolling) == key(await a.list_instructions(market_id=whole.market_id))
            report = await env.clients["dso"].settle_market(market.market_id)
            assert report.market.state == "settled"
            path = env.db_path
        conn = db.connect(path)
        checks = replay(conn, "rt-rolling")
        conn.close()
        # Awarded interval by interval, it settles interval by interval, each at the prices listed for it.
        assert [c.stage for c in checks] == ["clear"] + ["award"] * 12 + ["settle"] * 12
        assert all(c.identical for c in checks)

    asyncio.run(body())


def test_hour_ahead_markets_have_quarter_hours_and_day_ahead_markets_refuse_interval_awards(tmp_path):
    async def body():
        async with running(tmp_path) as env:
            ha, awards = await cleared_real_time(env, "ha-1", kind="hour_ahead", count=4)
            assert ha.kind == "hour_ahead" and ha.intervals[1] - ha.intervals[0] == timedelta(minutes=15)
            result, remaining = await env.clients["iso"].submit_interval_award(ha.market_id, awards[2:])
            assert result.status == "optimal" and remaining == 2
            da = await small_market(env, "da-2")
            with pytest.raises(FailedPrecondition, match="is open"):
                await env.clients["iso"].submit_interval_award(da.market_id, [IntervalAward(da.intervals[0], 1.0)])

    asyncio.run(body())
