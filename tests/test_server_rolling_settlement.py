"""A real-time market that rolls through its gates and settles interval by interval (``interval.settle``) against
its day-ahead market, checked against a settlement worked out by hand from what the API lists."""

from __future__ import annotations

import asyncio
import math
from datetime import timedelta
from decimal import Decimal

import pytest

from dsomarket.clients.api import BidSegment
from dsomarket.server.scheduler import ManualClock, Scheduler
from tests.harness import publish_and_award, running, simple_bids, small_market
from tests.test_server_rolling_network import award_at, interval_totals

US = 1_000_000
BUS = {"pv": "18", "load": "25"}
"""Bus of each resource of the harness's fleet."""
HOURS = 5 / 60


def cents_for_dso(amount: float) -> Decimal:
    """An amount (paid by the DSO when positive: to an aggregator, or to the ISO) rounded to the cent in the DSO's
    favour, as engine/settlement.py rounds every line: payments down, charges up."""
    return Decimal(math.floor(round(amount * 100.0, 6))) / 100


def latest(instructions) -> dict:
    """``(aggregator_id, resource_id, interval_start) -> kW`` of the latest instruction of each."""
    out = {}
    for i in sorted(instructions, key=lambda i: i.sequence):
        out[(i.aggregator_id, i.resource_id, i.interval_start)] = i.kw
    return out


@pytest.mark.parametrize("formulation", ["lossless", "lossaware"])
def test_a_rolled_real_time_market_settles_each_interval_as_its_deviations_from_day_ahead_worked_out_by_hand(
        tmp_path, formulation):
    """Day ahead (hourly, ISO 55): agg-a's PV sells 150 kW, agg-b's load buys 120 kW in hour 2. Real time (two
    5-minute intervals in hour 2, ISO 70, awarded on the curve interval by interval): agg-a offers its PV again,
    60 kW at 8; agg-b bids its load again, 50 kW at 75; every other resource is held at its day-ahead position.

    By hand, per interval and resource: the deviation of the real-time withdrawal (the instruction's negative)
    from the day-ahead one, settled at the real-time DLMP of its bus, ``-(dlmp x deviation) x 5/60 / 1000``, its
    loss component ``-(loss x deviation) x 5/60 / 1000`` as a line of its own; the ISO's import deviation at the
    ISO price; every line rounded in the DSO's favour. The interval's merchandising surplus is what the lines
    leave, and is not negative (revenue adequacy at a non-negative ISO price, loss residual included). On the
    lossless model nothing binds: every DLMP is the ISO's 70, and the lines are the textbook numbers."""
    async def body():
        async with running(tmp_path) as env:
            op, iso, a, b = (env.clients[n] for n in ("dso", "iso", "agg-a", "agg-b"))
            da = await small_market(env, intervals=2, formulation=formulation)
            await a.submit_bids(da.market_id, simple_bids(da, "a"))
            await b.submit_bids(da.market_id, simple_bids(da, "b", load_price="60"))
            await op.close_gate(da.market_id)
            da_awards = await publish_and_award(env, da.market_id, "55")
            await op.settle_market(da.market_id)

            hour = da.intervals[1]
            rt = await op.create_market("rt", feeder_id="ieee33", kind="real_time", delivery_start=hour,
                                        interval_count=2, gate_lead=timedelta(0), day_ahead_market_id=da.market_id,
                                        formulation=formulation)
            await a.submit_bids("rt", [BidSegment(f"a-pv-rt{k}", "pv", "sell", 60.0, "8", t)
                                       for k, t in enumerate(rt.intervals)])
            await b.submit_bids("rt", [BidSegment(f"b-load-rt{k}", "load", "buy", 50.0, "75", t)
                                       for k, t in enumerate(rt.intervals)])
            clock = ManualClock(int(hour.timestamp() * US))
            scheduler = Scheduler(env.server.app, clock, meter_window=300)
            rt_awards = {}
            for k in range(2):
                await scheduler.tick()
                (curve,) = [c for c in await iso.list_curves(market_id="rt") if c.interval_start == rt.intervals[k]]
                rt_awards[k] = award_at(curve, 70)
                assert (await iso.submit_interval_award("rt", [rt_awards[k]]))[0].status == "optimal"
                clock.advance(300)
            clock.advance(600)
            assert [(s.action, s.interval_idx) for s in await scheduler.tick()] == [("settle", 0), ("settle", 1)]
            assert (await op.get_market("rt")).state == "settled"

            prices = {(p.bus, p.interval_start): p for p in await op.list_prices("rt")}
            instructed = {**latest(await a.list_instructions(market_id="rt")),
                          **latest(await b.list_instructions(market_id="rt"))}
            day_ahead = {**latest(await a.list_instructions(market_id=da.market_id)),
                         **latest(await b.list_instructions(market_id=da.market_id))}
            lines = [s for name in ("agg-a", "agg-b") for s in await env.clients[name].list_statements(market_id="rt")]
            path = env.db_path

        # The day-ahead positions by hand: PV 150 kW sold, agg-b's load 120 kW bought (60 > 55), agg-a's 120 (80).
        assert day_ahead[("agg-a", "pv", hour)] == pytest.approx(150.0, abs=1e-6)
        assert day_ahead[("agg-b", "load", hour)] == pytest.approx(-120.0, abs=1e-6)
        totals = interval_totals(path, "rt")
        assert len(totals) == 2
        for k, t in enumerate(rt.intervals):
            deviation = {}   # withdrawal now less withdrawal day ahead, kW
            for agg, res in (("agg-a", "pv"), ("agg-a", "load"), ("agg-b", "pv"), ("agg-b", "load")):
                dev = -instructed[(agg, res, t)] + day_ahead[(agg, res, hour)]
                if abs(dev) > 1e-6:
                    deviation[(agg, res)] = dev
            # The re-bid resources moved as bid (nothing binds at 70: both clear in full), the others are held.
            assert deviation == pytest.approx({("agg-a", "pv"): 150.0 - 60.0, ("agg-b", "load"): 50.0 - 120.0},
                                              abs=1e-3)
            mine = [s for s in lines if s.interval_start == t]
            assert {(s.aggregator_id, s.resource_id) for s in mine} == set(deviation)
            for (agg, res), dev in deviation.items():
                p = prices[(BUS[res], t)]
                got = {s.kind: s for s in mine if (s.aggregator_id, s.resource_id) == (agg, res)}
                assert set(got) == ({"energy"} if p.loss == 0 else {"energy", "loss"})
                whole = cents_for_dso(-float(p.dlmp) * dev * HOURS / 1000.0)
                assert sum(s.amount for s in got.values()) == whole
                assert got["energy"].kw == pytest.approx(dev, abs=1e-3)
                assert got["energy"].price == p.dlmp - p.loss
                if p.loss != 0:
                    assert got["loss"].price == p.loss
                    assert got["loss"].amount == cents_for_dso(-float(p.loss) * dev * HOURS / 1000.0)
            # The ISO: the import's deviation from the day-ahead award at the real-time price (paid when positive).
            iso_kw = rt_awards[k].import_kw - da_awards[1].import_kw
            iso_line = cents_for_dso(70.0 * iso_kw * HOURS / 1000.0)
            assert Decimal(totals[k]["iso_payment"]) == iso_line
            paid = sum((s.amount for s in mine if s.amount > 0), Decimal(0))
            charged = -sum((s.amount for s in mine if s.amount < 0), Decimal(0))
            assert (Decimal(totals[k]["paid_to_bids"]), Decimal(totals[k]["charged_to_bids"])) == (paid, charged)
            # The fixed load is the feeder's in both markets: no deviation, no line.
            assert Decimal(totals[k]["fixed_load_charges"]) == 0
            surplus = charged - paid - iso_line
            assert Decimal(totals[k]["merchandising_surplus"]) == surplus >= 0
            # Nothing binds (every DLMP is 70 plus its loss part), so the surplus is the loss residual of
            # engine/settlement.py, pi (sum_j LF_j dev_j - dL) x hours / 1000 with pi LF_j the loss part and dL the
            # losses the deviations add (the import's deviation less theirs), plus each line's rounding (0 to 1
            # cent, in the DSO's favour). Losses are convex: the residual is not negative at pi >= 0.
            assert {prices[(BUS[r], t)].energy for _, r in deviation} == {Decimal(70)}
            added_losses = iso_kw - sum(deviation.values())
            residual = (sum(float(prices[(BUS[r], t)].loss) * dev for (_, r), dev in deviation.items())
                        - 70.0 * added_losses) * HOURS / 1000.0
            assert residual >= 0 and (added_losses > 0.1) == (formulation == "lossaware")
            assert 0 <= float(surplus) - residual <= 0.01 * len(mine) + 0.01
            if formulation == "lossless":
                # The textbook numbers: 90 kW less PV and 70 kW less load for 5 minutes at 70 per MWh.
                assert {(BUS[s.resource_id], s.price) for s in mine} == {("18", 70), ("25", 70)}
                assert sorted(s.amount for s in mine) == [Decimal("-0.53"), Decimal("0.40")]
                assert iso_line == Decimal("0.11") and surplus == Decimal("0.02")

    asyncio.run(body())
