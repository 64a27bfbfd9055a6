"""A network change after the award re-dispatches the standing award on the new network, over gRPC."""

from __future__ import annotations

import asyncio
import json

import pytest

from dsomarket.clients.api import NetworkChange
from dsomarket.server import db
from tests.harness import publish_and_award, replay_checks, running, simple_bids, small_market
from tests.test_server_network import outage


async def awarded_market(env, market_id: str = "da-test", **options):
    """The harness's day-ahead market with both aggregators' bids, awarded whole at the curves' import at 50."""
    op, a, b = (env.clients[n] for n in ("dso", "agg-a", "agg-b"))
    market = await small_market(env, market_id, **options)
    await a.submit_bids(market.market_id, simple_bids(market, "a"))
    await b.submit_bids(market.market_id, simple_bids(market, "b", load_price="60"))
    await op.close_gate(market.market_id)
    return market, await publish_and_award(env, market.market_id)


def test_an_outage_after_the_award_re_dispatches_it_streams_the_revision_to_both_sides_and_settles(tmp_path):
    async def body():
        async with running(tmp_path) as env:
            op, a, iso = env.clients["dso"], env.clients["agg-a"], env.clients["iso"]
            market, awards = await awarded_market(env)
            before = await a.list_instructions(market_id=market.market_id)
            version, revisions = await op.submit_network_changes("ieee33", [outage(market, 2)])
            (rev,) = revisions
            assert rev.market_id == market.market_id and rev.revision == 0 and not rev.republished
            assert len(rev.diagnosis) == 2 and all(d.startswith(("interval 2", "interval 3")) for d in rev.diagnosis)
            schedules = await iso.list_interface_schedules(market_id=market.market_id)
            assert [(s.interval_start, s.source) for s in schedules] == [
                (market.intervals[2], "network_change"), (market.intervals[3], "network_change")]
            for s, award in zip(schedules, awards[2:]):
                assert s.awarded_import_kw == pytest.approx(award.import_kw)
                assert s.mode in ("redispatched", "partial") and f"network version {version}" in s.reason
                if s.mode == "redispatched":
                    assert s.import_kw == pytest.approx(award.import_kw, abs=1e-6)
                else:
                    assert s.import_kw < award.import_kw and "shortfall" in s.reason
            after = await a.list_instructions(market_id=market.market_id)
            moved = [i for i in after if i.source == "network_change"]
            # Nothing is delivered across the open line: the PV at bus 18 is instructed to zero from the outage on.
            assert {(i.resource_id, i.interval_start, i.kw) for i in moved if i.resource_id == "pv"} == {
                ("pv", iv, 0.0) for iv in market.intervals[2:]}
            assert all(i.interval_start >= market.intervals[2] for i in moved)
            assert len(after) == len(before) + len(moved)
            assert (await op.settle_market(market.market_id)).market.state == "settled"
            path = env.db_path
        conn = db.connect(path)
        (record,) = conn.execute("SELECT payload FROM audit WHERE action = 'dispatch.network'").fetchall()
        conn.close()
        payload = json.loads(record[0])
        assert payload["network_version"] == 1 and [iv["interval_idx"] for iv in payload["intervals"]] == [2, 3]

    asyncio.run(body())


def test_an_interface_limit_after_the_award_meets_the_largest_deliverable_part_and_reports_the_shortfall(tmp_path):
    async def body():
        async with running(tmp_path) as env:
            op, iso = env.clients["dso"], env.clients["iso"]
            market, awards = await awarded_market(env)
            cap = awards[1].import_kw - 100.0
            limit = NetworkChange("cap", "interface", "", market.intervals[1], "transformer alarm", end=market.intervals[2],
                                  import_max_kw=cap)
            _, (rev,) = await op.submit_network_changes("ieee33", [limit])
            assert rev.status == "infeasible" and rev.diagnosis[0].startswith("interval 1: partial")
            (s,) = await iso.list_interface_schedules(market_id=market.market_id)
            assert (s.interval_start, s.source, s.mode) == (market.intervals[1], "network_change", "partial")
            # The largest deliverable part of the award is the new limit itself, 100 kW short.
            assert s.import_kw == pytest.approx(cap, abs=1e-6) and "shortfall 100.000 kW" in s.reason

    asyncio.run(body())


def latest(instructions) -> dict:
    """The latest instruction of each resource and interval: ``(resource_id, interval_start) -> Instruction``."""
    return {(i.resource_id, i.interval_start): i for i in sorted(instructions, key=lambda i: i.sequence)}


def test_a_change_that_leaves_no_deliverable_part_fails_the_interval_and_the_dispatch_stands(tmp_path):
    """The ``failed`` mode: the interface capped at 0 kW in interval 1, where the fixed load alone needs MWs."""
    async def body():
        async with running(tmp_path) as env:
            op, a, iso = env.clients["dso"], env.clients["agg-a"], env.clients["iso"]
            market, awards = await awarded_market(env, formulation="lossless")
            before = await a.list_instructions(market_id=market.market_id)
            cap = NetworkChange("cap", "interface", "", market.intervals[1], "ISO cap", end=market.intervals[2],
                                import_max_kw=0.0)
            _, (rev,) = await op.submit_network_changes("ieee33", [cap])
            assert rev.status == "infeasible" and rev.diagnosis[0].startswith("interval 1: failed")
            (s,) = await iso.list_interface_schedules(market_id=market.market_id)
            # The ISO is told the award cannot be delivered; the standing schedule is the award itself.
            assert (s.interval_start, s.source, s.mode) == (market.intervals[1], "network_change", "failed")
            assert s.import_kw == pytest.approx(awards[1].import_kw) and "cannot be delivered" in s.reason
            assert await a.list_instructions(market_id=market.market_id) == before  # nothing moved
            path = env.db_path
        checks = replay_checks(path, market.market_id)
        assert [c.stage for c in checks] == ["clear", "award", "redispatch"] and all(c.identical for c in checks)

    asyncio.run(body())


def test_an_override_is_kept_through_a_network_re_dispatch_or_reported_when_it_no_longer_can_be(tmp_path):
    """Overrides in intervals 2 (agg-a's load at bus 25) and 3 (agg-a's PV at bus 18), then line 17 out from
    interval 2 on: the load's override is a constraint of interval 2's re-dispatch; the PV behind the open line
    cannot inject any more, and interval 3's re-dispatch says its override is dropped."""
    async def body():
        async with running(tmp_path) as env:
            op, a = env.clients["dso"], env.clients["agg-a"]
            market, _ = await awarded_market(env, formulation="lossless")
            t2, t3 = market.intervals[2], market.intervals[3]
            await op.override_dispatch(market.market_id, aggregator_id="agg-a", resource_id="load", interval_start=t2,
                                       kw=-60.0, reason="feeder 25 relief")
            await op.override_dispatch(market.market_id, aggregator_id="agg-a", resource_id="pv", interval_start=t3,
                                       kw=100.0, reason="inverter test")
            _, (rev,) = await op.submit_network_changes("ieee33", [outage(market, 2)])
            by_interval = dict(d.split(": ", 1) for d in rev.diagnosis)
            assert "the override of agg-a/load at -60.000 kW is kept" in by_interval["interval 2"]
            assert "the override of agg-a/pv at 100.000 kW can no longer be honoured" in by_interval["interval 3"]
            now = latest(await a.list_instructions(market_id=market.market_id))
            assert now[("load", t2)].kw == pytest.approx(-60.0) and now[("pv", t2)].kw == 0.0
            assert now[("pv", t3)].kw == 0.0  # never across the open line
            # A second change re-dispatches interval 2 again: the override is still kept.
            derate = NetworkChange("derate", "rating", "2", t2, "hot cable", end=t3, s_max_kva=5000.0)
            _, (again,) = await op.submit_network_changes("ieee33", [derate])
            assert any("agg-a/load at -60.000 kW is kept" in d for d in again.diagnosis)
            assert latest(await a.list_instructions(market_id=market.market_id))[("load", t2)].kw == \
                pytest.approx(-60.0)
            path = env.db_path
        checks = replay_checks(path, market.market_id)
        assert [c.stage for c in checks] == ["clear", "award", "redispatch", "redispatch"]
        assert all(c.identical for c in checks)

    asyncio.run(body())
