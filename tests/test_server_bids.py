"""Bad input, size limits, gate closure and market-state order: the right code, and nothing half-written."""

from __future__ import annotations

import asyncio
import math
import re
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import grpc
import pytest

from dsomarket.clients.api import (AlreadyExists, BidSegment, FailedPrecondition, IntervalAward, InvalidArgument,
                         NotFound, Resource, ResourceExhausted, bid_columns)
from dsomarket.v1 import aggregator_pb2 as pb
from dsomarket.v1 import operator_pb2
from dsomarket.server.convert import MAX_BATCH
from tests.harness import running, simple_bids, small_market


def run(coro):
    return asyncio.run(coro)


async def _raw_submit(client, market_id: str, cols: pb.BidColumns):
    """A SubmitBids call with hand-made columns, bypassing the client's own checks."""
    try:
        await client._aggregator.SubmitBids(pb.SubmitBidsRequest(market_id=market_id, bids=cols),
                                            metadata=client._metadata)
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details()
    return grpc.StatusCode.OK, ""


def test_one_bad_bid_rejects_the_whole_batch(tmp_path):
    async def body():
        async with running(tmp_path) as env:
            market = await small_market(env)
            a = env.clients["agg-a"]
            bids = simple_bids(market, "a")
            bids[5] = BidSegment(bids[5].bid_id, bids[5].resource_id, bids[5].side, bids[5].quantity_kw,
                                 Decimal("5000"), bids[5].interval_start)
            with pytest.raises(InvalidArgument, match=r"bids\.price\[5\].*outside the market's floor"):
                await a.submit_bids(market.market_id, bids)
            assert await a.list_bids(market_id=market.market_id) == []
            # The server keeps serving: the corrected batch goes through whole.
            assert (await a.submit_bids(market.market_id, simple_bids(market, "a"))).count == 8
            fresh = BidSegment("fresh", "pv", "sell", 1.0, "1", market.intervals[0])
            dup = [fresh, simple_bids(market, "a")[0]]
            with pytest.raises(AlreadyExists, match=r"bids\.bid_id\[1\]: 'a-pv-0' already exists"):
                await a.submit_bids(market.market_id, dup)
            assert len(await a.list_bids(market_id=market.market_id)) == 8

    run(body())


@pytest.mark.parametrize("mutate, field", [
    (lambda c: c.price.__setitem__(1, "12.1234567"), r"bids\.price\[1\]: must be a decimal"),
    (lambda c: c.price.__setitem__(0, "1e3"), r"bids\.price\[0\]"),
    (lambda c: c.quantity_kw.__setitem__(2, math.nan), r"bids\.quantity_kw\[2\]: must be a finite number"),
    (lambda c: c.quantity_kw.__setitem__(2, 1e9), r"bids\.quantity_kw\[2\]: must be between 0.001 and 100000 kW"),
    (lambda c: c.price.__setitem__(1, "\u0661\u0662"), r"bids\.price\[1\]: must be a decimal number .*ASCII"),
    (lambda c: c.price.__setitem__(1, "\uff11\uff12"), r"bids\.price\[1\]: must be a decimal number"),
    (lambda c: c.tan_phi.extend([1e308] * len(c.bid_id)), r"bids\.tan_phi\[0\]: must be between -5 and 5"),
    (lambda c: c.quantity_kw.__setitem__(2, -1.0), r"bids\.quantity_kw\[2\]"),
    (lambda c: c.side.__setitem__(3, 0), r"bids\.side\[3\]: must be SIDE_BUY or SIDE_SELL"),
    (lambda c: c.side.__setitem__(3, 7), r"bids\.side\[3\]"),
    (lambda c: c.bid_id.__setitem__(0, "has space"), r"bids\.bid_id\[0\]: must be 1 to 64 characters"),
    (lambda c: c.bid_id.__setitem__(1, "x" * 65), r"bids\.bid_id\[1\]"),
    (lambda c: c.bid_id.__setitem__(1, c.bid_id[0]), r"bids\.bid_id\[1\]: .* repeats bids\.bid_id\[0\]"),
    (lambda c: c.resource_id.__setitem__(0, "a/b"), r"bids\.resource_id\[0\]"),
    (lambda c: c.price.pop(), r"bids\.price: has 7 entries, bid_id has 8"),
    (lambda c: c.tan_phi.append(0.1), r"bids\.tan_phi: has 1 entries"),
    (lambda c: c.interval_index.__setitem__(0, 99), r"bids\.interval_index\[0\]: 99 is not an index"),
    (lambda c: c.interval_starts[0].__setattr__("nanos", 1), r"bids\.interval_starts\[0\]: must be a whole"),
    (lambda c: c.interval_starts[0].__setattr__("seconds", 10**13),
     r"bids\.interval_starts\[0\]: is not a valid"),
    (lambda c: c.interval_starts[0].__setattr__("seconds", c.interval_starts[0].seconds + 60),
     r"bids\.interval_starts\[0\]: .* is not an interval start"),
    (lambda c: c.resource_id.__setitem__(4, "nope"), r"bids\.resource_id\[4\]: you have no resource 'nope'"),
    (lambda c: c.side.__setitem__(0, 1), r"bids\.side\[0\]: a pv resource can only sell"),
    (lambda c: c.quantity_kw.__setitem__(0, 301.0), r"bids\.quantity_kw\[0\]: 301.0 kW exceeds"),
])
def test_malformed_fields_are_named(tmp_path, mutate, field):
    async def body():
        async with running(tmp_path) as env:
            market = await small_market(env)
            a = env.clients["agg-a"]
            cols = bid_columns(simple_bids(market, "a"))
            mutate(cols)
            code, details = await _raw_submit(a, market.market_id, cols)
            assert code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND), (code, details)
            assert re.search(field, details), details
            assert await a.list_bids(market_id=market.market_id) == []

    run(body())


def test_size_limits(tmp_path):
    async def body():
        async with running(tmp_path) as env:
            market = await small_market(env)
            a = env.clients["agg-a"]
            start = market.intervals[0]
            cols = bid_columns([BidSegment(f"b{k}", "pv", "sell", 1.0, "1",
                                           start) for k in range(MAX_BATCH + 1)])
            code, details = await _raw_submit(a, market.market_id, cols)
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "at most 100000" in details
            huge = pb.BidColumns(bid_id=["x" * 1000] * 40_000)  # ~40 MB: refused by gRPC before parsing
            code, _ = await _raw_submit(a, market.market_id, huge)
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert (await a.submit_bids(market.market_id, simple_bids(market, "a"))).count == 8

    run(body())


def test_gate_closure_refuses_late_bids(tmp_path):
    async def body():
        async with running(tmp_path) as env:
            op, a = env.clients["dso"], env.clients["agg-a"]
            await small_market(env)
            now = datetime.now(timezone.utc)
            # Real-time market whose first interval began already (gate at its start), the next ones open.
            start = now.replace(second=0, microsecond=0) - timedelta(minutes=now.minute % 5)
            rt = await op.create_market("rt-now", feeder_id="ieee33", kind="real_time", delivery_start=start,
                                        interval_count=3)
            past, future = rt.intervals[0], rt.intervals[2]
            with pytest.raises(FailedPrecondition,
                               match=r"bids\.interval_starts\[0\]: the gate of the interval"):
                await a.submit_bids("rt-now", [BidSegment("late", "pv", "sell", 5.0, "1", past),
                                               BidSegment("ok", "pv", "sell", 5.0, "1", future)])
            assert await a.list_bids(market_id="rt-now") == []
            ok = BidSegment("ok", "pv", "sell", 5.0, "1", future)
            assert (await a.submit_bids("rt-now", [ok])).count == 1
            intervals = await a.list_intervals("rt-now")
            assert [i.gate_open for i in intervals] == [False, True, True]
            # A market-wide gate closure time in the past closes every interval.
            da = await small_market(env, "da-closed", gate_closure_time=now - timedelta(seconds=1))
            with pytest.raises(FailedPrecondition, match="closed at"):
                await a.submit_bids(da.market_id, simple_bids(da, "a"))
            # After CloseGate nothing changes any more: submit, replace and withdraw are refused.
            await op.close_gate("rt-now")
            with pytest.raises(FailedPrecondition, match="is closed"):
                await a.withdraw_bids("rt-now", ["ok"])

    run(body())


def test_states_only_move_forward_in_order(tmp_path):
    async def body():
        async with running(tmp_path) as env:
            op, iso = env.clients["dso"], env.clients["iso"]
            market = await small_market(env)
            m = market.market_id
            award = [IntervalAward(t, 3000.0, "50") for t in market.intervals]
            for call, state in ((op.clear_market(m), "open"), (op.publish_market(m), "open"),
                                (op.settle_market(m), "open"), (iso.submit_award(m, award), "open")):
                with pytest.raises(FailedPrecondition, match=f"is {state}"):
                    await call
            await env.clients["agg-a"].submit_bids(m, simple_bids(market, "a"))
            await op.close_gate(m)
            with pytest.raises(FailedPrecondition, match="is closed"):
                await op.close_gate(m)
            assert (await op.clear_market(m)).status == "optimal"
            with pytest.raises(FailedPrecondition, match="is cleared"):
                await op.clear_market(m)
            with pytest.raises(FailedPrecondition, match="is cleared"):
                await iso.submit_award(m, award)
            await op.publish_market(m)
            with pytest.raises(InvalidArgument, match="no award for the interval"):
                await iso.submit_award(m, award[:-1])
            with pytest.raises(InvalidArgument, match=r"awards\[1\]\.interval_start\]?: repeats"):
                await iso.submit_award(m, [award[0], award[0], *award[2:]])
            with pytest.raises(NotFound):
                await op.clear_market("no-such-market")

    run(body())


def test_replace_withdraw_and_idempotent_retries(tmp_path):
    async def body():
        async with running(tmp_path) as env:
            market = await small_market(env)
            a, b = env.clients["agg-a"], env.clients["agg-b"]
            m = market.market_id
            bids = simple_bids(market, "a")
            first = await a.submit_bids(m, bids, request_id="req-1")
            again = await a.submit_bids(m, bids, request_id="req-1")
            assert again == first and len(await a.list_bids(market_id=m)) == 8
            with pytest.raises(AlreadyExists, match="request_id: 'req-1' was already used"):
                await a.submit_bids(m, bids[:1], request_id="req-1")
            # Another aggregator may use the same request and bid ids: both are scoped per participant.
            assert (await b.submit_bids(m, bids, request_id="req-1")).count == 8

            new = BidSegment("a-pv-0", "pv", "sell", 99.0, "7.25", market.intervals[1])
            assert (await a.replace_bids(m, [new])).count == 1
            got = {x.bid_id: x for x in await a.list_bids(market_id=m)}
            assert got["a-pv-0"].quantity_kw == 99.0 and got["a-pv-0"].price == Decimal("7.25")
            assert got["a-pv-0"].interval_start == market.intervals[1]
            with pytest.raises(NotFound, match=r"bids\.bid_id\[0\]: you have no active bid 'zzz'"):
                await a.replace_bids(m, [BidSegment("zzz", "pv", "sell", 1.0, "1", market.intervals[0])])
            assert (await a.withdraw_bids(m, ["a-pv-0", "a-pv-1"])).count == 2
            with pytest.raises(NotFound, match=r"bid_ids\[0\]"):
                await a.withdraw_bids(m, ["a-pv-0"])
            assert len(await a.list_bids(market_id=m)) == 6
            assert len(await a.list_bids(market_id=m, include_withdrawn=True)) == 8
            with pytest.raises(AlreadyExists):  # withdrawn ids stay used
                await a.submit_bids(m, bids[:1])

    run(body())


def test_bad_market_and_resource_requests(tmp_path):
    async def body():
        async with running(tmp_path) as env:
            op, a = env.clients["dso"], env.clients["agg-a"]
            await small_market(env)
            day = datetime(2031, 1, 1, tzinfo=timezone.utc)
            base = dict(market_id="m1", feeder_id="ieee33", kind="day_ahead", delivery_start=day)
            cases = [
                (dict(delivery_start=day + timedelta(minutes=7)), InvalidArgument,
                 "delivery_start: must fall on a whole 60-minute"),
                (dict(interval_count=49), InvalidArgument, "interval_count"),
                (dict(price_floor="10", price_cap="5"), InvalidArgument,
                 "price_floor: must be below price_cap"),
                (dict(feeder_id="nope"), NotFound, "feeder_id"),
                (dict(market_id="da-test"), AlreadyExists, "market_id"),
                (dict(day_ahead_market_id="da-test"), InvalidArgument, "day_ahead_market_id"),
            ]
            for changes, error, match in cases:
                with pytest.raises(error, match=match):
                    await op.create_market(**(base | changes))
            with pytest.raises(AlreadyExists, match="feeder_id"):
                await op.create_feeder("ieee33", builtin="ieee69")
            with pytest.raises(ResourceExhausted, match="at most 100000 buses"):
                await op.create_feeder("huge", builtin="synth:5000000:1")
            tables = operator_pb2.FeederTables(name="two", root_bus="a", base_kv=12.0)
            tables.buses.bus.extend(["a", "b"])
            tables.buses.load_kw.extend([0.0, 50.0])
            tables.lines.line.append("l1")
            tables.lines.from_bus.append("a")
            tables.lines.to_bus.append("c")
            tables.lines.r_ohm.append(0.1)
            tables.lines.x_ohm.append(0.1)
            with pytest.raises(InvalidArgument, match="lines row 0, field to_bus: unknown bus 'c'"):
                await op.create_feeder("two", tables=tables)
            tables.lines.to_bus[0] = "b"
            assert (await op.create_feeder("two", tables=tables)).bus_count == 2
            with pytest.raises(InvalidArgument, match="unknown built-in feeder"):
                await op.create_feeder("x", builtin="ieee999")
            with pytest.raises(InvalidArgument,
                               match=r"resources\[0\]\.bus: feeder 'ieee33' has no bus '99'"):
                await a.register_resources([Resource("r9", "ieee33", "99", "pv", 10.0)])
            with pytest.raises(InvalidArgument,
                               match=r"resources\[0\]\.energy_kwh: must be positive for a battery"):
                await a.register_resources([Resource("b1", "ieee33", "5", "battery", 10.0)])
            with pytest.raises(AlreadyExists,
                               match=r"resources\[1\]\.resource_id: 'pv' is already registered"):
                await a.register_resources([Resource("new", "ieee33", "5", "pv", 10.0),
                                            Resource("pv", "ieee33", "5", "pv", 10.0)])
            assert {r.resource_id for r in await a.list_resources()} == {"pv", "load"}

    run(body())
