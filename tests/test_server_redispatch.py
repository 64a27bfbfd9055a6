"""A network change after the award re-dispatches the standing award on the new network, over gRPC."""

from __future__ import annotations

import asyncio
import json

import pytest

from dsomarket.clients.api import NetworkChange
from dsomarket.server import db
from tests.harness import publish_and_award, running, simple_bids, small_market
from tests.test_server_network import outage


async def awarded_market(env, market_id: str = "da-test"):
    """The harness's day-ahead market with both aggregators' bids, awarded whole at the curves' import at 50."""
    op, a, b = (env.clients[n] for n in ("dso", "agg-a", "agg-b"))
    market = await small_market(env, market_id)
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
