"""A whole market over gRPC, in process on port 0: bids, clearing, curves, award, dispatch, settlement."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from dsomarket.clients.api import Award, Instruction, IntervalAward
from dsomarket.server.app import SERVICE_NAMES
from tests.harness import running, simple_bids, small_market


def test_market_day_end_to_end(tmp_path):
    async def body():
        async with running(tmp_path) as env:
            op, a, b, iso = (env.clients[n] for n in ("dso", "agg-a", "agg-b", "iso"))
            market = await small_market(env)
            assert market.state == "open" and market.interval_count == 4
            assert (await a.submit_bids(market.market_id, simple_bids(market, "a"))).count == 8
            assert (await b.submit_bids(market.market_id, simple_bids(market, "b",
                                                                      load_price="60"))).count == 8

            events = {"agg-a": [], "agg-b": []}

            async def follow(name):
                async for e in env.clients[name].dispatch_stream(market_id=market.market_id):
                    events[name].append(e)

            async def iso_reads():
                got = []
                async for c in iso.curve_stream(market_id=market.market_id):
                    got.append(c)
                    if len(got) == market.interval_count:
                        return got

            followers = [asyncio.create_task(follow(n)) for n in events]
            curves_task = asyncio.create_task(iso_reads())

            assert (await op.close_gate(market.market_id)).state == "closed"
            report = await op.clear_market(market.market_id, iso_price_forecast=["50"])
            assert report.status == "optimal" and report.market.state == "cleared"
            assert len(report.interface) == 4 and report.curve_segments > 0
            assert (await op.publish_market(market.market_id)).state == "published"

            curves = await asyncio.wait_for(curves_task, 30)
            assert [c.interval_start for c in curves] == market.intervals
            for c in curves:
                assert c.feeder_id == "ieee33" and c.bands and c.bands[0].price_low == Decimal("-1000")
                assert all(s.quantity_kw > 0 for s in c.segments)
            # The ISO awards the curve's import at its price: the point is deliverable by construction.
            awards = [IntervalAward(c.interval_start,
                                    next(b.import_kw for b in c.bands if b.price_high >= 50), "50")
                      for c in curves]
            result = await iso.submit_award(market.market_id, awards)
            assert result.status == "optimal" and result.market.state == "awarded"

            mine = await a.list_awards(market_id=market.market_id)
            assert len(mine) == 8 and {x.aggregator_id for x in mine} == {"agg-a"}
            pv = [x for x in mine if x.bid_id.startswith("a-pv")]
            assert all(x.side == "sell" and 0 <= x.cleared_kw <= 150 for x in pv)
            instructions = await a.list_instructions(market_id=market.market_id)
            assert {i.resource_id for i in instructions} == {"pv", "load"} and len(instructions) == 8

            for _ in range(100):  # bounded wait for the streams to deliver what is stored
                if all(len(v) == 16 for v in events.values()):
                    break
                await asyncio.sleep(0.05)
            for name, got in events.items():
                assert len(got) == 16 and {e.aggregator_id for e in got} == {name}
                assert sum(isinstance(e, Award) for e in got) == 8
                assert sum(isinstance(e, Instruction) for e in got) == 8
                assert [e.sequence for e in got] == sorted(e.sequence for e in got)
            for t in followers:
                t.cancel()

            prices = await a.list_prices(market.market_id)
            assert len(prices) == 33 * 4
            settled = await op.settle_market(market.market_id)
            # The loss-aware market settles each of the 16 awards in two lines: energy, and its DLMP's loss part.
            assert settled.market.state == "settled" and settled.statement_count == 32
            statements = await b.list_statements(market_id=market.market_id)
            assert sorted(s.kind for s in statements) == ["energy"] * 8 + ["loss"] * 8
            assert all(s.currency == "EUR" for s in statements)
            assert {"iso_payment", "merchandising_surplus"} <= set(settled.totals)
            assert (await env.clients["auditor"].verify_audit_chain()).ok

    asyncio.run(body())


def test_health_and_reflection(tmp_path):
    async def body():
        async with running(tmp_path) as env:
            async with grpc.aio.insecure_channel(env.target) as channel:
                health = health_pb2_grpc.HealthStub(channel)
                for name in ("", *SERVICE_NAMES):
                    reply = await health.Check(health_pb2.HealthCheckRequest(service=name))
                    assert reply.status == health_pb2.HealthCheckResponse.SERVING
                stub = reflection_pb2_grpc.ServerReflectionStub(channel)
                ask = reflection_pb2.ServerReflectionRequest(list_services="")
                replies = stub.ServerReflectionInfo(iter([ask]))
                names = {s.name async for r in replies for s in r.list_services_response.service}
                assert set(SERVICE_NAMES) <= names

    asyncio.run(body())


def test_list_calls_page_through_everything(tmp_path):
    async def body():
        async with running(tmp_path) as env:
            market = await small_market(env, intervals=24)
            a = env.clients["agg-a"]
            await a.submit_bids(market.market_id, simple_bids(market, "a"))
            from dsomarket.v1 import aggregator_pb2 as pb
            req = pb.ListBidsRequest(filter=pb.BidFilter(market_id=market.market_id))
            req.pagination.page_size = 5
            ids = []
            while True:
                reply = await a._aggregator.ListBids(req, metadata=a._metadata)
                ids += [x.bid_id for x in reply.bids]
                assert len(reply.bids) <= 5
                if not reply.pagination.next_page_token:
                    break
                req.pagination.page_token = reply.pagination.next_page_token
            assert len(ids) == 48 == len(set(ids)) and ids == sorted(ids)
            assert len(await a.list_bids(market_id=market.market_id)) == 48

    asyncio.run(body())
