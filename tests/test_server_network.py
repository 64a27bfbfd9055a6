"""Network changes over gRPC: versioned, audited, checked on the network, re-clearing what they touch."""

from __future__ import annotations

import asyncio

import pytest

from dsomarket.clients.api import AlreadyExists, InvalidArgument, IntervalAward, NetworkChange
from dsomarket.server import db
from dsomarket.server.replay import replay
from tests.harness import running, simple_bids, small_market


def outage(market, k: int, **kw) -> NetworkChange:
    """Line 17 (the only feed of bus 18, where both aggregators' PV sit) out from interval k on."""
    return NetworkChange(**({"change_id": "fault-17", "kind": "outage", "element": "17",
                             "start": market.intervals[k], "reason": "cable fault", "shed": True} | kw))


def test_an_outage_mid_day_revises_the_published_curves_from_its_interval_on_and_replays(tmp_path):
    async def body():
        async with running(tmp_path) as env:
            op, a, b, iso = (env.clients[n] for n in ("dso", "agg-a", "agg-b", "iso"))
            market = await small_market(env)
            await a.submit_bids(market.market_id, simple_bids(market, "a"))
            await b.submit_bids(market.market_id, simple_bids(market, "b", load_price="60"))
            await op.close_gate(market.market_id)
            report = await op.clear_market(market.market_id, iso_price_forecast=["50"])
            assert report.status == "optimal" and report.network_version == 0
            await op.publish_market(market.market_id)
            first = await iso.list_curves(market_id=market.market_id)
            assert [c.revision for c in first] == [0] * 4

            stream = []

            async def follow():
                async for c in iso.curve_stream(market_id=market.market_id):
                    stream.append(c)
                    if len(stream) == 8:
                        return

            task = asyncio.create_task(follow())
            version, revisions = await op.submit_network_changes("ieee33", [outage(market, 2)])
            assert version == 1
            assert [(r.market_id, r.status, r.revision, r.republished) for r in revisions] == [
                (market.market_id, "optimal", 1, True)]
            await asyncio.wait_for(task, 30)
            revised = stream[4:]
            assert [c.revision for c in revised] == [1] * 4 and {c.network_version for c in revised} == {1}
            assert min(c.sequence for c in revised) > max(c.sequence for c in first)
            # Before the outage the curves are the same; from it on the PV at bus 18 is gone and so is the
            # load of buses 18 (shed): the fixed net load drops by exactly that load.
            for old, new in zip(first, revised):
                if old.interval_start < market.intervals[2]:
                    assert (old.bands, old.fixed_net_load_kw) == (new.bands, new.fixed_net_load_kw)
                else:
                    assert new.fixed_net_load_kw == pytest.approx(old.fixed_net_load_kw - 90.0, abs=1e-6)
                    assert new.bands != old.bands
            prices = await op.list_prices(market.market_id, bus="18")
            assert sorted(p.interval_start for p in prices) == market.intervals[:2]

            awards = [IntervalAward(c.interval_start, next(x.import_kw for x in c.bands if x.price_high >= 50), "50")
                      for c in revised]
            assert (await iso.submit_award(market.market_id, awards)).status == "optimal"
            pv = [i for i in await a.list_instructions(market_id=market.market_id) if i.resource_id == "pv"]
            assert all(i.interval_start < market.intervals[2] for i in pv)
            assert (await op.settle_market(market.market_id)).market.state == "settled"

            changes = await env.clients["auditor"].list_network_changes("ieee33")
            assert [(c.change_id, c.submitted_by, c.version, c.reason, c.shed) for c in changes] == [
                ("fault-17", "dso", 1, "cable fault", True)]
            # A market opened later clears on the latest network version.
            later = await small_market(env, "da-later")
            await op.close_gate(later.market_id)
            assert (await op.clear_market(later.market_id)).network_version == 1
            path = env.db_path
        conn = db.connect(path)
        checks = replay(conn)
        conn.close()
        stages = [(c.market_id, c.stage) for c in checks]
        assert stages[:4] == [("da-test", "clear")] * 2 + [("da-test", "award"), ("da-test", "settle")]
        assert all(c.identical for c in checks)

    asyncio.run(body())


def test_bad_changes_are_refused_naming_the_field_and_nothing_is_stored(tmp_path):
    async def body():
        async with running(tmp_path) as env:
            op = env.clients["dso"]
            market = await small_market(env)
            with pytest.raises(InvalidArgument, match=r"changes\[0\]\.shed: .*'18' and its load without supply"):
                await op.submit_network_changes("ieee33", [outage(market, 1, shed=False)])
            with pytest.raises(InvalidArgument, match=r"changes\[1\]\.element: unknown line 'x'"):
                await op.submit_network_changes("ieee33", [outage(market, 1), outage(market, 1, change_id="b",
                                                                                         element="x")])
            with pytest.raises(InvalidArgument, match=r"changes\[0\]\.reason"):
                await op.submit_network_changes("ieee33", [outage(market, 1, reason=" ")])
            assert await op.list_network_changes("ieee33") == []
            assert (await op.submit_network_changes("ieee33", [outage(market, 1)]))[0] == 1
            with pytest.raises(AlreadyExists, match="fault-17"):
                await op.submit_network_changes("ieee33", [outage(market, 3)])
            with pytest.raises(Exception, match="PERMISSION_DENIED"):
                await env.clients["agg-a"].submit_network_changes("ieee33", [outage(market, 3, change_id="c")])

    asyncio.run(body())
