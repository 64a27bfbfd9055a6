"""Forecasts over gRPC: replaceable until the gate closes, used by the clearing, published as a schedule."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from dsomarket.clients.api import FailedPrecondition, InvalidArgument
from dsomarket.engine.feeders import ieee33
from dsomarket.server import db
from dsomarket.server.replay import replay
from tests.harness import running, simple_bids, small_market


def test_a_forecast_moves_the_fixed_load_the_schedule_and_the_curves_and_replays(tmp_path):
    async def body():
        async with running(tmp_path) as env:
            op, iso = env.clients["dso"], env.clients["iso"]
            market = await small_market(env)
            await env.clients["agg-a"].submit_bids(market.market_id, simple_bids(market, "a"))
            total = float(ieee33().buses["load_kw"].sum())
            source, sched = await iso.forecast_schedule(market.market_id)
            assert source == "feeder" and [s["fixed_kw"] for s in sched] == pytest.approx([total] * 4)
            t1 = market.intervals[1]
            # Rooftop PV makes bus 18 (90 kW of load) a 200 kW net injection in the second hour.
            assert await op.submit_forecast(market.market_id, [("18", t1, 150.0, 0.0)]) == 1
            assert await op.submit_forecast(market.market_id, [("18", t1, 200.0, 0.0)]) == 1  # replaced
            with pytest.raises(InvalidArgument, match=r"forecast.bus\[0\]"):
                await op.submit_forecast(market.market_id, [("nope", t1, 1.0, 0.0)])
            source, sched = await iso.forecast_schedule(market.market_id)
            assert source == "operator"
            assert [s["fixed_kw"] for s in sched] == pytest.approx([total, total - 290.0, total, total])
            await op.close_gate(market.market_id)
            with pytest.raises(FailedPrecondition):
                await op.submit_forecast(market.market_id, [("18", t1, 0.0, 0.0)])
            await op.clear_market(market.market_id, iso_price_forecast=["50"])
            _, sched = await iso.forecast_schedule(market.market_id)
            await op.publish_market(market.market_id)
            curves = await iso.list_curves(market_id=market.market_id)
            assert [c.fixed_net_load_kw for c in curves] == pytest.approx([s["fixed_kw"] for s in sched])
            for c, s in zip(curves, sched):  # the schedule's import is the curve's import at the forecast price
                assert s["import_kw"] == pytest.approx(next(b.import_kw for b in c.bands if b.price_high >= 50))
            path = env.db_path
        conn = db.connect(path)
        checks = replay(conn)
        conn.close()
        assert checks and all(c.identical for c in checks)

    asyncio.run(body())


def test_without_an_operator_forecast_the_builtin_forecaster_averages_metered_history(tmp_path):
    async def body():
        async with running(tmp_path) as env:
            op, iso = env.clients["dso"], env.clients["iso"]
            market = await small_market(env)
            t0, t1 = market.intervals[0], market.intervals[1]
            # Bus 18 (90 kW of load) metered on three earlier days at the same hours: -100, -120, -140 kW at t0,
            # and only eight days back at t1 (outside the seven days the forecaster reads).
            rows = [("18", t0 - timedelta(days=d), -80.0 - 20 * d, -40.0) for d in (1, 2, 3)]
            rows.append(("18", t1 - timedelta(days=8), -999.0, 0.0))
            assert await op.submit_load_history("ieee33", rows) == 4
            with pytest.raises(InvalidArgument, match=r"history.bus\[0\]"):
                await op.submit_load_history("ieee33", [("nope", t0, 1.0, 0.0)])
            source, sched = await iso.forecast_schedule(market.market_id)
            total = float(ieee33().buses["load_kw"].sum())
            assert source == "history"
            assert [s["fixed_kw"] for s in sched] == pytest.approx([total - 90.0 + 120.0, total, total, total])
            # The operator's own forecast replaces the built-in one where given.
            await op.submit_forecast(market.market_id, [("18", t0, 0.0, 0.0)])
            source, sched = await iso.forecast_schedule(market.market_id)
            assert source == "operator" and sched[0]["fixed_kw"] == pytest.approx(total - 90.0)
            await env.clients["agg-a"].submit_bids(market.market_id, simple_bids(market, "a"))
            await op.close_gate(market.market_id)
            assert (await op.clear_market(market.market_id)).status == "optimal"
            path = env.db_path
        conn = db.connect(path)
        checks = replay(conn)
        conn.close()
        assert checks and all(c.identical for c in checks)

    asyncio.run(body())
