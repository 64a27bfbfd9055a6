"""A network change on an OPEN rolling market, over gRPC: what is awarded is re-dispatched, what is published
and not awarded is cleared again and re-published as a revision, what is still open clears on the new network."""

from __future__ import annotations

import asyncio
import json
import math
from datetime import timedelta
from decimal import Decimal

import pytest

from dsomarket.clients.api import IntervalAward, MeterReading, NetworkChange
from dsomarket.clients.demo import delivery_day
from dsomarket.server import audit, db
from dsomarket.server.scheduler import ManualClock, Scheduler
from tests.harness import replay_checks, running, simple_bids, small_market
from tests.test_server_network import outage

US = 1_000_000


async def rolling_market(env, market_id: str = "rt", intervals: int = 5, **options):
    """A real-time market at 09:00 on the harness's fleet (gates at each interval's start), both aggregators'
    bids in, and a scheduler on a manual clock at its first gate."""
    a, b = env.clients["agg-a"], env.clients["agg-b"]
    await small_market(env, "da-fleet", gate_closure_time=delivery_day() + timedelta(days=1))  # the fleet
    start = delivery_day() + timedelta(hours=9)
    rt = await env.clients["dso"].create_market(market_id, feeder_id="ieee33", kind="real_time",
                                                delivery_start=start, interval_count=intervals,
                                                gate_lead=timedelta(0), **options)
    await a.submit_bids(market_id, simple_bids(rt, "a"))
    await b.submit_bids(market_id, simple_bids(rt, "b", load_price="60"))
    clock = ManualClock(int(start.timestamp() * US))
    return rt, clock, Scheduler(env.server.app, clock, meter_window=0)


def award_at(curve, price: float) -> IntervalAward:
    """The ISO's award of a curve's import at ``price``."""
    return IntervalAward(curve.interval_start, next(x.import_kw for x in curve.bands if x.price_high >= price),
                         str(price))


def test_a_line_outage_mid_hour_revises_the_rolling_market_from_the_next_interval_on_and_replays(tmp_path):
    """Loss-aware (the default model). Intervals 0 and 1 are awarded and 2 is published when line 17 (the only feed
    of bus 18, where the PV sits) goes out from interval 1 on: interval 1 is re-dispatched, interval 2 cleared
    again and re-published as revision 1, interval 3 clears at its gate on the new network."""
    async def body():
        async with running(tmp_path) as env:
            op, iso, a = env.clients["dso"], env.clients["iso"], env.clients["agg-a"]
            rt, clock, _ = await rolling_market(env, intervals=4)
            # Interval 1 ends at 09:10, when the change comes: a 5-minute meter window keeps it unsettled till 09:15.
            scheduler = Scheduler(env.server.app, clock, meter_window=300)
            for k in range(3):
                await scheduler.tick()
                if k < 2:
                    (curve,) = [c for c in await iso.list_curves(market_id="rt") if c.interval_start == rt.intervals[k]]
                    assert (await iso.submit_interval_award("rt", [award_at(curve, 45)]))[0].status == "optimal"
                    clock.advance(300)
            first = {c.interval_start: c for c in await iso.list_curves(market_id="rt")}
            assert sorted(first) == rt.intervals[:3] and {c.revision for c in first.values()} == {0}
            before = {(p.bus, p.interval_start): p.dlmp for p in await op.list_prices("rt")}

            stream = []

            async def follow():
                async for c in iso.curve_stream(market_id="rt"):
                    stream.append(c)
                    if len(stream) == 4:
                        return

            task = asyncio.create_task(follow())
            version, revisions = await op.submit_network_changes("ieee33", [outage(rt, 1)])
            await asyncio.wait_for(task, 30)
            assert version == 1
            # One report for the re-dispatched award (interval 1) and one for the re-cleared interval 2.
            assert sorted((r.market_id, r.revision, r.republished) for r in revisions) == [
                ("rt", 0, False), ("rt", 1, True)]
            assert next(r for r in revisions if r.republished).status == "optimal"
            # The ISO's stream sends interval 2 again, after everything sent before, flagged as a revision on the
            # new network; intervals 0 and 1 keep their curves.
            (revised,) = stream[3:]
            assert (revised.interval_start, revised.revision, revised.network_version) == (rt.intervals[2], 1, 1)
            assert revised.sequence > max(c.sequence for c in first.values())
            assert revised.bands != first[rt.intervals[2]].bands
            assert revised.fixed_net_load_kw != pytest.approx(first[rt.intervals[2]].fixed_net_load_kw)
            latest = {c.interval_start: c for c in await iso.list_curves(market_id="rt")}
            assert [latest[t].revision for t in rt.intervals[:3]] == [0, 0, 1]
            # The awarded interval 1 is re-dispatched at its award: the PV behind the open line is instructed to 0.
            (schedule,) = await iso.list_interface_schedules(market_id="rt")
            assert (schedule.interval_start, schedule.source) == (rt.intervals[1], "network_change")
            # Prices: interval 0 as it was; from interval 1 on bus 18 is cut off (interval 1's prices are its
            # clearing's, interval 2's are revised: no price at bus 18 any more).
            after = {(p.bus, p.interval_start): p.dlmp for p in await op.list_prices("rt")}
            assert {k: v for k, v in after.items() if k[1] == rt.intervals[0]} == \
                {k: v for k, v in before.items() if k[1] == rt.intervals[0]}
            assert ("18", rt.intervals[2]) in before and ("18", rt.intervals[2]) not in after
            assert any(after[k] != before[k] for k in after if k[1] == rt.intervals[2])

            # The ISO awards the revised interval 2; 3 clears at its gate on the new network.
            assert (await iso.submit_interval_award("rt", [award_at(revised, 45)]))[0].status == "optimal"
            for k in (3,):
                clock.advance(300)
                await scheduler.tick()
                (curve,) = [c for c in await iso.list_curves(market_id="rt") if c.interval_start == rt.intervals[k]]
                assert (curve.revision, curve.network_version) == (0, 1)
                result, _ = await iso.submit_interval_award("rt", [award_at(curve, 45)])
                assert result.status == "optimal"
            # No price at bus 18 from interval 1 on (interval 1's prices are its re-dispatch's, which it settles at).
            assert not [p for p in await op.list_prices("rt", bus="18") if p.interval_start >= rt.intervals[1]]
            # Never dispatched across the open line: every instruction at bus 18 from interval 1 on is zero.
            pv = {}
            for name in ("agg-a", "agg-b"):
                for i in await env.clients[name].list_instructions(market_id="rt"):
                    if i.resource_id == "pv":
                        pv[(name, i.interval_start)] = i.kw  # the latest instruction wins
            assert all(kw == 0.0 for (_, t), kw in pv.items() if t >= rt.intervals[1])
            assert any(kw > 0.0 for (_, t), kw in pv.items() if t == rt.intervals[0])
            clock.advance(600)
            assert [(s.market_id, s.action, s.interval_idx) for s in await scheduler.tick()] == [
                ("rt", "settle", 2), ("rt", "settle", 3)]
            assert (await op.get_market("rt")).state == "settled"
            assert (await a.list_statements(market_id="rt"))
            path = env.db_path
        checks = replay_checks(path, "rt")
        assert [c.stage for c in checks].count("clear") == 5  # four gates and the revision of interval 2
        assert [c.stage for c in checks].count("redispatch") == 2  # its instructions and its prices
        assert all(c.identical for c in checks), [c for c in checks if not c.identical]

    asyncio.run(body())


def test_a_rolled_market_settles_each_interval_once_its_meter_window_passes_and_never_twice_across_a_restart(
        tmp_path):
    """Settlement per interval (meter window 10 minutes), with the server stopped and started again on its
    database in the middle: the new scheduler settles only what was left, and the operator's SettleMarket the
    rest; the lines are each interval's, once."""
    async def body():
        async with running(tmp_path) as env:
            iso = env.clients["iso"]
            rt, clock, _ = await rolling_market(env, intervals=3, formulation="lossless")
            scheduler = Scheduler(env.server.app, clock, meter_window=600)
            for k in range(3):
                await scheduler.tick()
                (curve,) = [c for c in await iso.list_curves(market_id="rt") if c.interval_start == rt.intervals[k]]
                await iso.submit_interval_award("rt", [award_at(curve, 40)])
                clock.advance(300)
            # 09:15: interval 0 ended 10 minutes ago, the others not yet.
            assert [(s.action, s.interval_idx) for s in await scheduler.tick()] == [("settle", 0)]
            assert await scheduler.tick() == []
            first = await env.clients["agg-a"].list_statements(market_id="rt")
            assert {s.interval_start for s in first} == {rt.intervals[0]}
        async with running(tmp_path) as env:
            op, a = env.clients["dso"], env.clients["agg-a"]
            scheduler = Scheduler(env.server.app, clock, meter_window=600)
            clock.advance(300)  # 09:20: interval 1's window has passed
            assert [(s.action, s.interval_idx) for s in await scheduler.tick()] == [("settle", 1)]
            assert (await op.get_market("rt")).state == "awarded"
            report = await op.settle_market("rt")  # the operator settles what is left: interval 2
            assert report.market.state == "settled"
            clock.advance(3600)
            assert await scheduler.tick() == []
            lines = await a.list_statements(market_id="rt")
            assert [s for s in lines if s.interval_start == rt.intervals[0]] == first
            assert {s.interval_start for s in lines} == set(rt.intervals)
            keys = [(s.bid_id, s.resource_id, s.interval_start, s.kind) for s in lines]
            assert len(keys) == len(set(keys))
            # The market's totals are its intervals' added up.
            assert report.totals["merchandising_surplus"] == sum(
                Decimal(t["merchandising_surplus"]) for t in interval_totals(env.db_path, "rt"))
            path = env.db_path
        checks = replay_checks(path, "rt")
        assert [c.stage for c in checks].count("settle") == 3 and all(c.identical for c in checks)

    asyncio.run(body())


def interval_totals(path, market_id: str) -> list[dict]:
    """The totals of each ``interval.settle`` audit record of a market."""
    conn = db.connect(path)
    try:
        return [p["totals"] for p in (json.loads(r["payload"]) for r in audit.records(conn, "interval.settle"))
                if p["market_id"] == market_id]
    finally:
        conn.close()


BUS = {"pv": "18", "load": "25"}
"""Bus of each resource of the harness's fleet."""


@pytest.mark.parametrize("state, intervals, awarded", [("open", 4, 2), ("published", 3, 2), ("awarded", 3, 3)])
def test_listed_prices_are_the_dispatch_in_force_after_a_network_re_dispatch_and_the_replaced_ones_stay_listed(
        tmp_path, state, intervals, awarded):
    """Loss-aware. Line 17 (the only feed of bus 18) goes out from interval 1 once intervals 0, 1 and 2 are
    published and 0 .. ``awarded`` - 1 awarded (the market OPEN while interval 3 is to come, else PUBLISHED or
    AWARDED).
    ListMarketPrices then gives each re-dispatched interval the DLMPs of its re-dispatch (revision 1, no bus 18),
    and a re-cleared one its new clearing's; with include_superseded it also gives every price it gave before,
    unchanged and flagged. Only interval 2's curve, if not awarded, is sent to the ISO again. Each interval then
    settles at exactly the prices listed for it."""
    async def body():
        async with running(tmp_path) as env:
            op, iso, a = env.clients["dso"], env.clients["iso"], env.clients["agg-a"]
            rt, clock, _ = await rolling_market(env, intervals=intervals)
            scheduler = Scheduler(env.server.app, clock, meter_window=600)  # nothing settles before the change
            awards_kw = []
            for k in range(3):
                await scheduler.tick()
                if k < awarded:
                    (curve,) = [c for c in await iso.list_curves(market_id="rt") if c.interval_start == rt.intervals[k]]
                    awards_kw.append(award_at(curve, 45).import_kw)
                    assert (await iso.submit_interval_award("rt", [award_at(curve, 45)]))[0].status == "optimal"
                if k < 2:
                    clock.advance(300)
            assert (await op.get_market("rt")).state == state
            before = await op.list_prices("rt")
            earlier = {(p.bus, p.interval_start, p.source, p.revision): p
                       for p in await op.list_prices("rt", include_superseded=True)}
            # The clearing's prices of an awarded interval are no longer in force.
            assert {k for k, p in earlier.items() if not p.superseded} == {
                (p.bus, p.interval_start, p.source, p.revision) for p in before}
            assert {(k[2], k[1]) for k, p in earlier.items() if p.superseded} == {
                ("clearing", t) for t in rt.intervals[:awarded]}
            assert {(p.source, p.revision, p.superseded) for p in before} == {("award", 0, False)} | (
                {("clearing", 0, False)} if awarded == 2 else set())
            # Interval 2 before the award, for the aggregator: it sees the published intervals only.
            assert {p.interval_start for p in await a.list_prices("rt")} == set(rt.intervals[:3])

            sent = {c.interval_start: (c.sequence, c.revision) for c in await iso.list_curves(market_id="rt")}
            _, revisions = await op.submit_network_changes("ieee33", [outage(rt, 1)])
            assert all(r.status == "optimal" for r in revisions)
            # Only the curve of the interval published and not awarded goes to the ISO again, as a revision; an
            # awarded interval's curve is history (the market PUBLISHED by its gates is revised by interval too).
            resent = {c.interval_start: (c.sequence, c.revision) for c in await iso.list_curves(market_id="rt")}
            assert {t: v for t, v in resent.items() if t != rt.intervals[2] or awarded == 3} == \
                {t: v for t, v in sent.items() if t != rt.intervals[2] or awarded == 3}
            if awarded == 2:
                assert resent[rt.intervals[2]][1] == 1 and resent[rt.intervals[2]][0] > max(s for s, _ in sent.values())
            now = {(p.bus, p.interval_start): p for p in await op.list_prices("rt")}
            old = {(p.bus, p.interval_start): p for p in before}
            redispatched = rt.intervals[1:awarded]
            # Interval 0 as it was; the re-dispatched and re-cleared intervals revised: bus 18 unpriced.
            assert {k: v for k, v in now.items() if k[1] == rt.intervals[0]} == \
                {k: v for k, v in old.items() if k[1] == rt.intervals[0]}
            for t in rt.intervals[1:3]:
                mine = {k: p for k, p in now.items() if k[1] == t}
                source = "award" if t in redispatched else "clearing"
                assert {(p.source, p.revision, p.superseded) for p in mine.values()} == {(source, 1, False)}
                assert ("18", t) not in mine and ("18", t) in old
            assert any(now[k].dlmp != old[k].dlmp for k in now if k[1] in redispatched)
            # With the history: every price given before, unchanged, the revised intervals' now flagged superseded,
            # beside those in force.
            history = {(p.bus, p.interval_start, p.source, p.revision): p
                       for p in await op.list_prices("rt", include_superseded=True)}
            assert {k: p for k, p in history.items() if not p.superseded} == {
                (p.bus, p.interval_start, p.source, p.revision): p for p in now.values()}
            for key, p in earlier.items():
                assert history[key].dlmp == p.dlmp and history[key].superseded == (
                    p.superseded or key[1] != rt.intervals[0])
            assert len(await op.list_prices("rt", bus="25", include_superseded=True)) == sum(
                k[0] == "25" for k in history)

            if awarded == 2:
                for k in range(2, intervals):
                    if k == 3:
                        clock.advance(300)
                        await scheduler.tick()
                    (curve,) = [c for c in await iso.list_curves(market_id="rt") if c.interval_start == rt.intervals[k]]
                    awards_kw.append(award_at(curve, 45).import_kw)
                    await iso.submit_interval_award("rt", [award_at(curve, 45)])
                # Awarded: the revised clearing's prices are superseded by the award's.
                prices = await op.list_prices("rt", bus="25", include_superseded=True)
                assert [(p.source, p.revision, p.superseded) for p in prices if p.interval_start == rt.intervals[2]] \
                    == [("award", 0, False), ("clearing", 0, True), ("clearing", 1, True)]
            clock.advance(1200)
            await scheduler.tick()
            assert (await op.get_market("rt")).state == "settled"
            listed = {(p.bus, p.interval_start): p.dlmp for p in await op.list_prices("rt")}
            # Meters: every resource as instructed but agg-b's load, 4 kW more withdrawal; the interface as scheduled
            # plus that. The deviations settle at the DLMP in force; the PVs cut off (told 0, metered 0) owe nothing.
            told = {}
            for name in ("agg-a", "agg-b"):
                for i in sorted(await env.clients[name].list_instructions(market_id="rt"), key=lambda i: i.sequence):
                    told[(name, i.resource_id, i.interval_start)] = i.kw
            for name in ("agg-a", "agg-b"):
                await env.clients[name].submit_meter_readings("rt", [
                    MeterReading(r, t, kw - (4.0 if (n, r) == ("agg-b", "load") else 0.0)) for (n, r, t), kw in told.items()
                    if n == name])
            scheduled = dict(zip(rt.intervals, awards_kw))
            for x in await iso.list_interface_schedules(market_id="rt"):
                scheduled[x.interval_start] = x.import_kw
            await op.submit_meter_readings("rt", [MeterReading("", t, kw + 4.0) for t, kw in scheduled.items()])
            await op.settle_imbalance("rt")
            imbalance = [s for name in ("agg-a", "agg-b")
                         for s in await env.clients[name].list_statements(market_id="rt") if s.kind == "imbalance"]
            assert sorted((s.resource_id, s.interval_start) for s in imbalance if s.amount != 0) == [
                ("load", t) for t in rt.intervals]
            assert all(s.price == listed[(BUS[s.resource_id], s.interval_start)] for s in imbalance)
            assert not [s for s in imbalance if s.resource_id == "pv" and s.interval_start >= rt.intervals[1]]
            lines = [s for name in ("agg-a", "agg-b") for s in await env.clients[name].list_statements(market_id="rt")
                     if s.kind in ("energy", "loss")]
            settled: dict = {}
            for s in lines:
                settled.setdefault((s.aggregator_id, s.resource_id, s.interval_start), Decimal(0))
                settled[(s.aggregator_id, s.resource_id, s.interval_start)] += s.price
            assert {t for _, _, t in settled} == set(rt.intervals)
            for (_, res, t), price in settled.items():   # energy + loss = the DLMP at the resource's bus
                assert abs(price - listed[(BUS[res], t)]) <= Decimal("0.000002"), (res, t, price, listed[(BUS[res], t)])
            path = env.db_path
        checks = replay_checks(path, "rt")
        assert [c.stage for c in checks].count("redispatch") == 2   # the instructions and the prices
        assert all(c.identical for c in checks), [c for c in checks if not c.identical]

    asyncio.run(body())


@pytest.mark.parametrize("mode, cut_kw", [("partial", 100.0), ("failed", None)])
def test_an_interval_whose_award_a_change_cuts_settles_the_dispatch_in_force_at_its_listed_prices(tmp_path, mode,
                                                                                                   cut_kw):
    """Lossless. The interface is capped after interval 1 is awarded: 100 kW below its award, and the re-dispatch
    delivers the rest (``partial``); or at 0, where nothing is deliverable (``failed``: the dispatch stands).
    The interval settles at its dispatch in force (before, it could not settle at all: its award was
    disaggregated on the new network), at the prices listed for it: the part delivered, on the new network, or
    the standing award on the network it was dispatched on. The ISO line is worked out by hand."""
    async def body():
        async with running(tmp_path) as env:
            op, iso = env.clients["dso"], env.clients["iso"]
            rt, clock, _ = await rolling_market(env, intervals=2, formulation="lossless")
            scheduler = Scheduler(env.server.app, clock, meter_window=600)
            awards = []
            for k in range(2):
                await scheduler.tick()
                (curve,) = [c for c in await iso.list_curves(market_id="rt") if c.interval_start == rt.intervals[k]]
                awards.append(award_at(curve, 45))
                assert (await iso.submit_interval_award("rt", [awards[-1]]))[0].status == "optimal"
                clock.advance(300)
            delivered = awards[1].import_kw - (cut_kw or 0.0)
            cap = NetworkChange("cap", "interface", "", rt.intervals[1], "ISO cap",
                                import_max_kw=0.0 if cut_kw is None else delivered)
            _, (rev,) = await op.submit_network_changes("ieee33", [cap])
            assert rev.diagnosis[0].startswith(f"interval 1: {mode}")
            (schedule,) = await iso.list_interface_schedules(market_id="rt")
            assert (schedule.mode, schedule.import_kw) == (mode, pytest.approx(delivered))
            clock.advance(600)
            assert [(s.action, s.interval_idx) for s in await scheduler.tick()] == [("settle", 0), ("settle", 1)]
            assert (await op.get_market("rt")).state == "settled"
            listed = {(p.bus, p.interval_start): p for p in await op.list_prices("rt")}
            assert {p.revision for (_, t), p in listed.items() if t == rt.intervals[1]} == {int(mode == "partial")}
            for name in ("agg-a", "agg-b"):
                for s in await env.clients[name].list_statements(market_id="rt"):
                    assert s.price == listed[(BUS[s.resource_id], s.interval_start)].dlmp
            path = env.db_path
        (_, second) = interval_totals(path, "rt")
        exact = 45 * delivered * (5 / 60) / 1000
        assert Decimal(second["iso_payment"]) == Decimal(math.floor(round(exact * 100, 6))) / 100
        checks = replay_checks(path, "rt")
        assert [c.stage for c in checks].count("settle") == 2 and all(c.identical for c in checks)

    asyncio.run(body())


def test_a_market_cleared_whole_and_awarded_by_interval_settles_at_its_listed_prices_across_a_network_change(
        tmp_path):
    """Loss-aware. A real-time market cleared and published whole, then awarded interval by interval: 0 and 1
    awarded when line 17 goes out from interval 1 on (interval 1 re-dispatched), 2 awarded after the change. Its
    settlement prices each interval at what ListMarketPrices lists for it (energy + loss = the DLMP, at bus 25
    where prices are degenerate once bus 18 is cut off), and stays revenue adequate. Only the curve of interval 2,
    published and not awarded, is sent to the ISO again."""
    async def body():
        async with running(tmp_path) as env:
            op, iso = env.clients["dso"], env.clients["iso"]
            await small_market(env, "da-fleet")
            rt = await op.create_market("rt", feeder_id="ieee33", kind="real_time", interval_count=3,
                                        delivery_start=delivery_day() + timedelta(hours=9))
            await env.clients["agg-a"].submit_bids("rt", simple_bids(rt, "a"))
            await env.clients["agg-b"].submit_bids("rt", simple_bids(rt, "b", load_price="60"))
            await op.close_gate("rt")
            assert (await op.clear_market("rt", iso_price_forecast=["50"])).status == "optimal"
            await op.publish_market("rt")
            for k in range(2):
                (curve,) = [c for c in await iso.list_curves(market_id="rt") if c.interval_start == rt.intervals[k]]
                assert (await iso.submit_interval_award("rt", [award_at(curve, 45)]))[0].status == "optimal"
            sent = {c.interval_start: (c.sequence, c.revision) for c in await iso.list_curves(market_id="rt")}
            _, revisions = await op.submit_network_changes("ieee33", [outage(rt, 1)])
            assert all(r.status == "optimal" for r in revisions)
            resent = {c.interval_start: (c.sequence, c.revision) for c in await iso.list_curves(market_id="rt")}
            assert {t: v for t, v in resent.items() if t != rt.intervals[2]} == \
                {t: v for t, v in sent.items() if t != rt.intervals[2]}
            assert resent[rt.intervals[2]][1] == 1
            (curve,) = [c for c in await iso.list_curves(market_id="rt") if c.interval_start == rt.intervals[2]]
            assert (await iso.submit_interval_award("rt", [award_at(curve, 45)]))[0].status == "optimal"
            listed = {(p.bus, p.interval_start): p.dlmp for p in await op.list_prices("rt")}
            report = await op.settle_market("rt")
            assert report.market.state == "settled"
            assert Decimal(report.totals["merchandising_surplus"]) >= 0
            settled: dict = {}
            for name in ("agg-a", "agg-b"):
                for s in await env.clients[name].list_statements(market_id="rt"):
                    if s.kind in ("energy", "loss") and s.kw != 0:
                        key = (s.aggregator_id, s.bid_id, s.interval_start)
                        settled[key] = settled.get(key, Decimal(0)) + s.price
            assert {t for _, _, t in settled} == set(rt.intervals)
            for (_, bid, t), price in settled.items():   # energy + loss = the DLMP at the bid's bus
                bus = BUS["pv" if "-pv-" in bid else "load"]
                assert abs(price - listed[(bus, t)]) <= Decimal("0.000002"), (bid, t, price, listed[(bus, t)])
            path = env.db_path
        checks = replay_checks(path, "rt")
        assert all(c.identical for c in checks), [c for c in checks if not c.identical]

    asyncio.run(body())
