"""Each market clears on its own model: ``lossaware`` unless the operator names ``lossless`` (alias
``lindistflow``) or ``socp``. The setting is validated, stored, returned, replayed, and an award holds on
the AC feeder exactly as its model says (checked by an independent AC power flow of the dispatch)."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import polars as pl
import pytest

from dsomarket.clients.api import FailedPrecondition, IntervalAward, InvalidArgument
from dsomarket.engine.feeders import builtin
from dsomarket.engine.powerflow import ac_power_flow
from dsomarket.server import db, markets_engine
from dsomarket.server.replay import replay
from dsomarket.server.store import BID_SCHEMA, RESOURCE_SCHEMA
from tests.harness import old_database, running, simple_bids, small_market


def test_a_market_is_lossaware_unless_named_and_keeps_its_model_across_a_restart(tmp_path):
    async def body():
        async with running(tmp_path) as env:
            assert (await small_market(env, "da-default")).formulation == "lossaware"
            assert (await small_market(env, "da-old", formulation="lindistflow")).formulation == "lossless"
            assert (await small_market(env, "da-socp", formulation="socp")).formulation == "socp"
            for bad in ("dc", "LOSSAWARE", "lossaware "):
                with pytest.raises(InvalidArgument, match="INVALID_ARGUMENT: formulation: must be lossaware, lossless, lindistflow"):
                    await small_market(env, "da-bad", formulation=bad)
            tokens = env.tokens
        async with running(tmp_path, participants={}) as env:
            agg = env.client(tokens["agg-a"])
            assert {m.market_id: m.formulation for m in await agg.list_markets()} == {
                "da-default": "lossaware", "da-old": "lossless", "da-socp": "socp"}
            assert (await agg.get_market("da-old")).formulation == "lossless"
            await agg.close()

    asyncio.run(body())


def _withdrawals(feeder, instructions, resource_bus, interval):
    """Net withdrawal per bus (kW, topology order) of the feeder's load less the instructed injections."""
    p = feeder.topology.load_kw.copy()
    index = {b: k for k, b in enumerate(feeder.topology.bus_ids)}
    for i in instructions:
        if i.interval_start == interval:
            p[index[resource_bus[i.resource_id]]] -= i.kw
    return p


def test_each_market_is_awarded_on_its_own_model_as_the_ac_feeder_confirms_and_replays(tmp_path):
    feeder = builtin("ieee33")
    resource_bus = {"pv": "18", "load": "25"}   # small_market's fleet

    async def body():
        out = {}
        async with running(tmp_path) as env:
            op, agg, iso = env.clients["dso"], env.clients["agg-a"], env.clients["iso"]
            for name in ("lossaware", "lossless"):
                market = await small_market(env, f"da-{name}", intervals=2, formulation=name)
                await agg.submit_bids(market.market_id, simple_bids(market, name[:5]))
                await op.close_gate(market.market_id)
                cleared = await op.clear_market(market.market_id, iso_price_forecast=["50"])
                await op.publish_market(market.market_id)
                result = await iso.submit_award(market.market_id, [IntervalAward(f.interval_start, f.import_kw, "50")
                                                                   for f in cleared.interface])
                assert result.status == "optimal"
                out[name] = (market, cleared.interface, await agg.list_instructions(market_id=market.market_id),
                             await op.list_prices(market.market_id))
            socp = await small_market(env, "da-socp", intervals=1, formulation="socp")
            await agg.submit_bids(socp.market_id, simple_bids(socp, "socp"))
            await op.close_gate(socp.market_id)
            cleared = await op.clear_market(socp.market_id, iso_price_forecast=["50"])
            assert cleared.status == "optimal" and cleared.interface[0].import_kw > 0
            await op.publish_market(socp.market_id)
            with pytest.raises(FailedPrecondition, match="formulation: the market clears on the socp model"):
                await iso.submit_award(socp.market_id, [IntervalAward(socp.intervals[0],
                                                                      cleared.interface[0].import_kw, "50")])
            return out, env.db_path

    out, path = asyncio.run(body())
    for name, (market, interface, instructions, prices) in out.items():
        assert instructions
        for flow in interface:
            p = _withdrawals(feeder, instructions, resource_bus, flow.interval_start)
            pf = ac_power_flow(feeder, p, feeder.topology.load_kvar)
            assert pf.converged and pf.losses_kw > 50.0
            if name == "lossaware":   # the award is what the AC feeder draws, losses included
                assert pf.p0_kw == pytest.approx(flow.import_kw, rel=1e-4)
            else:                     # the lossless award is short by exactly the AC losses
                assert pf.p0_kw - flow.import_kw == pytest.approx(pf.losses_kw, abs=0.01)
        losses = [p.loss for p in prices]
        assert (max(losses) > Decimal("0.1")) if name == "lossaware" else (set(losses) == {Decimal(0)})
    conn = db.connect(path)
    try:
        checks = replay(conn)
    finally:
        conn.close()
    assert {(c.market_id, c.stage) for c in checks} >= {("da-lossaware", "award"), ("da-lossless", "award"),
                                                          ("da-socp", "clear")}
    assert all(c.identical for c in checks)


def test_markets_from_before_the_setting_read_and_replay_as_lossless(tmp_path):
    old = db.SCHEMA.replace(",\n    formulation TEXT NOT NULL DEFAULT 'lossless');", ");")
    assert old != db.SCHEMA
    path = old_database(tmp_path, "old.sqlite", old)
    conn = db.connect(path)
    try:
        assert "formulation" not in db.columns(conn, "markets")
        conn.execute("INSERT INTO feeders (feeder_id, name, root_bus, base_kv, bus_count, line_count, tables, "
                     "created_us) VALUES ('f', 'f', '0', 12.66, 1, 0, '{}', 0)")
        conn.execute("INSERT INTO markets (market_id, feeder_id, kind, state, delivery_start_us, interval_count, "
                     "interval_minutes, price_floor, price_cap, currency, created_us, updated_us) VALUES "
                     "('da-then', 'f', 'day_ahead', 'open', 0, 24, 60, '-1000', '3000', 'EUR', 0, 0)")
    finally:
        conn.close()

    async def body():
        async with running(tmp_path, db_name="old.sqlite") as env:
            assert (await env.clients["dso"].get_market("da-then")).formulation == "lossless"

    asyncio.run(body())
    # An audit record of a market created before the setting names no formulation: replayed lossless.
    market = {"price_floor": "-1000", "price_cap": "3000", "interval_minutes": 60, "delivery_start_us": 0,
              "interval_count": 1}
    inputs = markets_engine.market_inputs(builtin("ieee33"), market, pl.DataFrame(schema=BID_SCHEMA),
                                          pl.DataFrame(schema=RESOURCE_SCHEMA))
    assert inputs.formulation == "lossless" and inputs.options(None).formulation == "lossless"

