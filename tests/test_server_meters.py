"""Meters over gRPC: validated intake, metered deviations and interface imbalance settled to the cent."""

from __future__ import annotations

import asyncio
from decimal import ROUND_HALF_EVEN, Decimal

import pytest

from dsomarket.clients.api import AlreadyExists, FailedPrecondition, IntervalAward, InvalidArgument, MeterReading
from tests.harness import running, simple_bids, small_market

BUS = {"pv": "18", "load": "25"}


def test_metered_deviations_settle_to_the_cent_and_the_books_balance(tmp_path):
    async def body():
        async with running(tmp_path) as env:
            op, iso, a, b = (env.clients[n] for n in ("dso", "iso", "agg-a", "agg-b"))
            market = await small_market(env)
            await a.submit_bids(market.market_id, simple_bids(market, "a"))
            await b.submit_bids(market.market_id, simple_bids(market, "b", load_price="60"))
            await op.close_gate(market.market_id)
            await op.clear_market(market.market_id, iso_price_forecast=["50"])
            await op.publish_market(market.market_id)
            curves = await iso.list_curves(market_id=market.market_id)
            awards = [IntervalAward(c.interval_start, next(x.import_kw for x in c.bands if x.price_high >= 50), "50")
                      for c in curves]
            await iso.submit_award(market.market_id, awards)
            await op.settle_market(market.market_id)

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

            totals, count, interface = await op.settle_imbalance(market.market_id)
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
