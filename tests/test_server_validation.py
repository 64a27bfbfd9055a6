"""No bid can poison a market: every number is checked at the door against a documented range, and
whatever is accepted can be cleared; a market whose clearing fails says why and can be reopened."""

from __future__ import annotations

import asyncio
import itertools
import math
import re

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dsomarket.clients.api import (Client, FailedPrecondition, FlexNeed, FlexOffer, InvalidArgument, Resource,
                                   bid_columns, flex_offer_columns)
from dsomarket.clients.demo import delivery_day
from dsomarket.server import limits
from dsomarket.server.auth import create_tokens
from dsomarket.v1 import aggregator_pb2 as agg_pb
from dsomarket.v1 import flexibility_pb2 as flex_pb
from dsomarket.v1 import operator_pb2
from dsomarket.v1.common_pb2 import SIDE_BUY, SIDE_SELL
from tests.harness import PARTICIPANTS, ThreadedServer, running, simple_bids, small_market

ARABIC_12 = "\u0661\u0662"  # '١٢': \d matches it, Decimal reads it


async def _raw(call, request, client: Client):
    """(code, details) of a call with a hand-made request, bypassing the client library's own checks."""
    try:
        await call(request, metadata=client._metadata)
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details()
    return grpc.StatusCode.OK, ""


def test_poisoned_numbers_are_refused_at_the_door_naming_the_field(tmp_path):
    async def body():
        async with running(tmp_path) as env:
            market = await small_market(env)
            m = market.market_id
            op, a = env.clients["dso"], env.clients["agg-a"]
            starts = market.intervals

            def bids(**change):
                cols = bid_columns(simple_bids(market))
                for name, (k, value) in change.items():
                    if name == "tan_phi":
                        cols.tan_phi.extend([0.0] * len(cols.bid_id))
                    getattr(cols, name)[k] = value
                return agg_pb.SubmitBidsRequest(market_id=m, bids=cols)

            def offers(**change):
                cols = flex_offer_columns([FlexOffer(f"o{k}", "pv", "up", 10.0, "5", starts[0]) for k in range(2)])
                for name, (k, value) in change.items():
                    if name in ("tan_phi", "availability_price"):
                        getattr(cols, name).extend([type(value)()] * 2)
                    getattr(cols, name)[k] = value
                return flex_pb.SubmitFlexOffersRequest(market_id=m, offers=cols)

            need = FlexNeed("n1", "import", starts[0], "10", required_kw=50.0).to_pb()
            poisoned = [
                (a._aggregator.SubmitBids, bids(price=(1, ARABIC_12)), a, r"bids\.price\[1\]: must be a decimal"),
                (a._aggregator.SubmitBids, bids(price=(0, "\uff15")), a, r"bids\.price\[0\]"),
                (a._aggregator.SubmitBids, bids(price=(0, "12.5\u0660")), a, r"bids\.price\[0\]"),
                (a._aggregator.SubmitBids, bids(price=(2, "3000.000001")), a, r"bids\.price\[2\]: .* outside"),
                (a._aggregator.SubmitBids, bids(tan_phi=(3, 1e308)), a, r"bids\.tan_phi\[3\]: must be between"),
                (a._aggregator.SubmitBids, bids(tan_phi=(3, -math.inf)), a, r"bids\.tan_phi\[3\]: must be a finite"),
                (a._aggregator.SubmitBids, bids(quantity_kw=(1, 1e-300)), a, r"bids\.quantity_kw\[1\]: must be betw"),
                (a._aggregator.ReplaceBids, agg_pb.ReplaceBidsRequest(market_id=m, bids=bids(price=(1, ARABIC_12)).bids),
                 a, r"bids\.price\[1\]"),
                (a._flex.SubmitFlexOffers, offers(price=(1, ARABIC_12)), a, r"offers\.price\[1\]: must be a decimal"),
                (a._flex.SubmitFlexOffers, offers(availability_price=(0, ARABIC_12)), a,
                 r"offers\.availability_price\[0\]"),
                (a._flex.SubmitFlexOffers, offers(tan_phi=(1, 1e308)), a, r"offers\.tan_phi\[1\]: must be between"),
                (a._flex.SubmitFlexOffers, offers(quantity_kw=(0, 1e308)), a, r"offers\.quantity_kw\[0\]"),
                (op._flex.PostNeeds, flex_pb.PostNeedsRequest(market_id=m, needs=[flex_pb.FlexNeed(
                    **{**_fields(need), "max_price": ARABIC_12})]), op, r"needs\[0\]\.max_price: must be a decimal"),
                (op._flex.PostNeeds, flex_pb.PostNeedsRequest(market_id=m, needs=[flex_pb.FlexNeed(
                    **{**_fields(need), "required_kw": 1e308})]), op, r"needs\[0\]\.required_kw: must be between"),
                (op._operator.CreateMarket, operator_pb2.CreateMarketRequest(
                    market_id="m2", feeder_id="ieee33", kind=1, delivery_start=_pb_ts(delivery_day()),
                    price_cap="999999999999"), op, r"price_cap: must be between -100000 and 100000"),
                (op._operator.CreateMarket, operator_pb2.CreateMarketRequest(
                    market_id="m2", feeder_id="ieee33", kind=1, delivery_start=_pb_ts(delivery_day()),
                    price_floor=ARABIC_12), op, r"price_floor: must be a decimal"),
                (a._aggregator.RegisterResources, agg_pb.RegisterResourcesRequest(resources=[agg_pb.Resource(
                    resource_id="r", feeder_id="ieee33", bus="5", kind=1, capacity_kw=1e308)]), a,
                 r"resources\[0\]\.capacity_kw: must be between"),
                (a._aggregator.RegisterResources, agg_pb.RegisterResourcesRequest(resources=[agg_pb.Resource(
                    resource_id="r", feeder_id="ieee33", bus="5", kind=2, capacity_kw=10, energy_kwh=math.inf,
                    charge_kw=1, discharge_kw=1)]), a, r"resources\[0\]\.energy_kwh: must be a finite"),
            ]
            for call, request, client, match in poisoned:
                code, details = await _raw(call, request, client)
                assert code == grpc.StatusCode.INVALID_ARGUMENT, (match, code, details)
                assert re.match(match, details), (match, details)
            assert await a.list_bids(market_id=m) == []
            assert await a.list_flex_offers(market_id=m) == []
            await op.close_gate(m)
            for forecast, match in ((ARABIC_12, r"iso_price_forecast\[0\]: must be a decimal"),
                                    ("3000.5", r"iso_price_forecast\[0\]: 3000.5 is outside the market's floor")):
                code, details = await _raw(op._operator.ClearMarket, operator_pb2.ClearMarketRequest(
                    market_id=m, iso_price_forecast=[forecast]), op)
                assert code == grpc.StatusCode.INVALID_ARGUMENT and re.match(match, details), details

    asyncio.run(body())


def _fields(msg) -> dict:
    return {f.name: v for f, v in msg.ListFields()}


def _pb_ts(when):
    from google.protobuf.timestamp_pb2 import Timestamp
    ts = Timestamp()
    ts.FromDatetime(when)
    return ts


def _tables(**change) -> operator_pb2.FeederTables:
    t = operator_pb2.FeederTables(name="two", root_bus="0", base_kv=12.47)
    t.buses.bus.extend(["0", "1"])
    t.lines.line.append("l1")
    t.lines.from_bus.append("0")
    t.lines.to_bus.append("1")
    t.lines.r_ohm.append(0.1)
    t.lines.x_ohm.append(0.1)
    for path, value in change.items():
        *parents, name = path.split(".")
        target = t
        for p in parents:
            target = getattr(target, p)
        if isinstance(getattr(target, name), (int, float)):
            setattr(target, name, value)
        else:
            getattr(target, name).extend([value] * (2 if parents == ["buses"] else 1))
    return t


@pytest.mark.parametrize("change, match", [
    ({"base_kv": 1e308}, r"tables\.base_kv: must be between 0\.1 and 500 kV"),
    ({"base_kv": -1.0}, r"tables\.base_kv"),
    ({"v0_pu": 7.0}, r"tables\.v0_pu: must be between"),
    ({"import_max_kw": math.inf}, r"tables\.import_max_kw: must be a finite"),
    ({"buses.load_kw": 1e12}, r"tables\.buses\.load_kw\[0\]: must be between"),
    ({"buses.vmin_pu": 0.0}, r"tables\.buses\.vmin_pu\[0\]"),
    ({"lines.s_max_kva": -5.0}, r"tables\.lines\.s_max_kva\[0\]: must be between"),
    ({"lines.s_max_kva": math.nan}, r"tables\.lines\.s_max_kva\[0\]: must be a finite"),
])
def test_feeder_numbers_outside_their_range_are_refused(tmp_path, change, match):
    async def body():
        async with running(tmp_path) as env:
            op = env.clients["dso"]
            await op.create_feeder("ok", tables=_tables())  # the same tables, unchanged, are fine
            with pytest.raises(InvalidArgument, match=match):
                await op.create_feeder("bad", tables=_tables(**change))

    asyncio.run(body())


def test_huge_impedance_is_refused():
    t = _tables()
    t.lines.r_ohm[0] = 1e300
    with pytest.raises(Exception, match=r"tables\.lines\.r_ohm\[0\]: must be between 0 and 1000 ohm"):
        from dsomarket.server import convert
        convert.feeder_source(operator_pb2.CreateFeederRequest(feeder_id="x", tables=t))


def test_a_failed_clearing_says_why_and_the_market_can_be_reopened(tmp_path):
    """A clearing that cannot finish (here: a solver time limit no solve can meet) leaves the market
    CLOSED with a reason; ReopenMarket gives it back to the aggregators, who can withdraw their bids."""
    async def body():
        async with running(tmp_path, solve_time_limit=1e-9) as env:
            market = await small_market(env)
            m = market.market_id
            op, a = env.clients["dso"], env.clients["agg-a"]
            await a.submit_bids(m, simple_bids(market))
            with pytest.raises(FailedPrecondition, match="reopening needs it closed"):
                await op.reopen_market(m, "not closed yet")
            await op.close_gate(m)
            with pytest.raises(FailedPrecondition):
                await a.withdraw_bids(m, ["b-pv-0"])
            try:
                report = await op.clear_market(m)
            except Exception as exc:  # the time limit: DEADLINE_EXCEEDED, the market stays closed
                assert "time limit" in str(exc) and "stays closed" in str(exc)
            else:
                assert report.status != "optimal" and report.diagnosis
            stuck = await op.get_market(m)
            assert stuck.state == "closed"
            with pytest.raises(InvalidArgument, match="reason: is required"):
                await op.reopen_market(m, "  ")
            reopened = await op.reopen_market(m, "clearing hit the time limit")
            assert reopened.state == "open"
            assert (await a.withdraw_bids(m, ["b-pv-0", "b-load-0"])).count == 2
            records = await op.list_audit_records(action_prefix="market.reopen")
            assert len(records) == 1 and "clearing hit the time limit" in records[0].payload_json

    asyncio.run(body())


# -- property: any accepted batch leaves the market clearable --------------------------------------

_counter = itertools.count()
_PRICES = st.one_of(st.decimals(min_value=-1000, max_value=3000, places=6, allow_nan=False).map(str),
                    st.sampled_from(["-1000", "3000", "0", "2999.999999", ARABIC_12, "1e3", "3000.000001",
                                     "-1000.000001", "\u0664\u0662.5", " 42 ", "+7", "007.5"]))
_KW = st.one_of(st.floats(min_value=0.001, max_value=100_000.0),
                st.sampled_from([0.001, 100_000.0, 1e-300, 1e308, math.inf, math.nan, 0.0, -1.0, 100_000.1]))
_TAN = st.one_of(st.floats(min_value=-5.0, max_value=5.0),
                 st.sampled_from([-5.0, 5.0, 1e308, -1e308, math.nan, 5.0000001, 0.0]))
_SEGMENT = st.tuples(st.sampled_from([("big-pv", SIDE_SELL), ("big-load", SIDE_BUY), ("big-load", SIDE_SELL)]),
                     _KW, _PRICES, _TAN, st.integers(0, 1))


@pytest.fixture(scope="module")
def big_market_server(tmp_path_factory):
    """A server whose agg-a owns a 100 MW PV plant (bus 18) and a 100 MW flexible load (bus 25) on ieee33."""
    path = tmp_path_factory.mktemp("clearable") / "market.sqlite"
    tokens = create_tokens(path, PARTICIPANTS)
    server = ThreadedServer(path)

    async def setup():
        async with Client(server.target, tokens["dso"]) as op, Client(server.target, tokens["agg-a"]) as a:
            await op.create_feeder("ieee33", builtin="ieee33")
            await a.register_resources([Resource("big-pv", "ieee33", "18", "pv", 100_000.0),
                                        Resource("big-load", "ieee33", "25", "flexible_load", 100_000.0)])

    asyncio.run(setup())
    try:
        yield server, tokens
    finally:
        server.stop()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(segments=st.lists(_SEGMENT, min_size=1, max_size=6))
def test_any_accepted_bid_batch_leaves_the_market_clearable(big_market_server, segments):
    server, tokens = big_market_server

    async def body():
        async with Client(server.target, tokens["dso"]) as op, Client(server.target, tokens["agg-a"]) as a:
            market = await op.create_market(f"p{next(_counter)}", feeder_id="ieee33", kind="day_ahead",
                                            delivery_start=delivery_day(), interval_count=2)
            cols = agg_pb.BidColumns(interval_starts=[_pb_ts(t) for t in market.intervals])
            for k, ((resource, side), kw, price, tan_phi, interval) in enumerate(segments):
                cols.bid_id.append(f"s{k}")
                cols.resource_id.append(resource)
                cols.side.append(side)
                cols.quantity_kw.append(kw)
                cols.price.append(price)
                cols.interval_index.append(interval)
                cols.tan_phi.append(tan_phi)
            code, details = await _raw(a._aggregator.SubmitBids,
                                       agg_pb.SubmitBidsRequest(market_id=market.market_id, bids=cols), a)
            assert code in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT), (code, details)
            if code != grpc.StatusCode.OK:
                assert details.startswith("bids."), details
                return
            for (_, side), kw, price, tan_phi, _ in segments:  # what was accepted is within the ranges
                assert limits.RANGES["kw"][0] <= kw <= limits.RANGES["kw"][1] and abs(tan_phi) <= 5
                assert price.strip().lstrip("+-").replace(".", "").isascii()
            await op.close_gate(market.market_id)
            report = await op.clear_market(market.market_id)
            assert report.status == "optimal", report.diagnosis
            assert report.market.state == "cleared"

    asyncio.run(body())


def test_reopen_from_the_command_line(tmp_path, run):
    path = tmp_path / "market.sqlite"
    tokens = create_tokens(path, PARTICIPANTS)
    server = ThreadedServer(path)
    try:
        async def setup():
            async with Client(server.target, tokens["dso"]) as op:
                await op.create_feeder("ieee33", builtin="ieee33")
                await op.create_market("da", feeder_id="ieee33", kind="day_ahead", delivery_start=delivery_day())

        asyncio.run(setup())
        conn = ("--server", server.target, "--token", tokens["dso"])
        code, _, err = run("markets", "reopen", "da", "--reason", "too early", *conn)
        assert code == 1 and err.count("\n") == 1 and "reopening needs it closed" in err, err
        assert run("markets", "gate", "da", *conn)[0] == 0
        code, out, err = run("markets", "reopen", "da", "--reason", "a bid was wrong", *conn)
        assert code == 0 and out == "market da is open\n", err
    finally:
        server.stop()


def test_an_engine_failure_is_a_recorded_clearing_error_with_a_reason(tmp_path, monkeypatch, caplog):
    """Even a defect in the engine leaves a market that says why and can be reopened, not an INTERNAL
    error on every ClearMarket."""
    from dsomarket.server import markets_engine

    def broken(*args):
        raise ZeroDivisionError("a defect")

    monkeypatch.setattr(markets_engine, "_clear_market", broken)

    async def body():
        async with running(tmp_path) as env:
            market = await small_market(env)
            op = env.clients["dso"]
            await env.clients["agg-a"].submit_bids(market.market_id, simple_bids(market))
            await op.close_gate(market.market_id)
            report = await op.clear_market(market.market_id)
            assert report.status == "error" and report.market.state == "closed"
            assert report.diagnosis[0] == "the engine failed (ZeroDivisionError); the server log has the details"
            assert "ReopenMarket" in report.diagnosis[-1]
            stored = await op.get_market(market.market_id)
            assert stored.clearing_status == "error" and stored.diagnosis == report.diagnosis
            assert (await op.reopen_market(market.market_id, "engine defect")).state == "open"

    asyncio.run(body())
    assert any("clearing failed" in r.getMessage() for r in caplog.records)
