"""No request crashes a handler: corrupt bytes, extreme values and forged page tokens on every RPC give a
status that names the field, never INTERNAL or UNKNOWN, and nothing is logged as an error."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
import re
from datetime import datetime, timezone

import grpc
import pytest
from google.protobuf import descriptor, descriptor_pool, message_factory
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from dsomarket.clients.api import FailedPrecondition, InvalidArgument
from dsomarket.server.app import SERVICE_NAMES
from dsomarket.v1 import aggregator_pb2, common_pb2, iso_pb2, market_pb2, operator_pb2
from tests.harness import running, simple_bids, small_market

CRASHES = (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)
I64, U64 = 2**63 - 1, 2**64 - 1


def methods():
    """(full method path, request class, response streaming) of every dsomarket RPC the server serves."""
    out = []
    for name in SERVICE_NAMES:
        service = descriptor_pool.Default().FindServiceByName(name)
        for m in service.methods:
            out.append((f"/{service.full_name}/{m.name}", message_factory.GetMessageClass(m.input_type),
                        m.server_streaming))
    return out


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def bad_utf8(request_cls) -> bytes | None:
    """A message whose first string field holds bytes that are not UTF-8."""
    for f in request_cls.DESCRIPTOR.fields:
        if f.type == descriptor.FieldDescriptor.TYPE_STRING:
            return _varint(f.number << 3 | 2) + b"\x02\xff\xfe"
    return None


def extreme(request_cls, variant: int, depth: int = 0):
    """A request with every field set to an extreme value (``variant`` picks which)."""
    msg = request_cls()
    strings = ("da-test", "\u0661\u0662", "x" * 200, "", "-1", "1e308", "NaN")
    numbers = {descriptor.FieldDescriptor.TYPE_DOUBLE: (float("nan"), float("inf"), -1e308, 1e308, 0.0, -0.0, 5e-324),
               descriptor.FieldDescriptor.TYPE_INT64: (I64, -I64 - 1, -1, 0, 1, I64, -1),
               descriptor.FieldDescriptor.TYPE_UINT64: (U64, I64 + 1, 0, 1, I64, U64, 2**53),
               descriptor.FieldDescriptor.TYPE_INT32: (2**31 - 1, -2**31, -1, 0, 99, 2**31 - 1, -1),
               descriptor.FieldDescriptor.TYPE_UINT32: (2**32 - 1, 0, 1, 2**31, 99, 2**32 - 1, 7),
               descriptor.FieldDescriptor.TYPE_ENUM: (99, -1, 0, 1, 2, 3, 2**31 - 1),
               descriptor.FieldDescriptor.TYPE_BOOL: (True, False) * 4}
    for f in msg.DESCRIPTOR.fields:
        repeated = f.is_repeated
        if f.type == descriptor.FieldDescriptor.TYPE_MESSAGE:
            if f.message_type.full_name == "google.protobuf.Timestamp":
                seconds = (253402300799, -62135596800, 0, 253402300799, 10**12, -10**12, 1)[variant]
                value = Timestamp(seconds=seconds, nanos=(0, 0, 999_999_999, 999_999_000, 1000, 0, 0)[variant])
            elif f.message_type.full_name == "google.protobuf.Duration":
                value = Duration(seconds=(315576000000, -315576000000, 0, 1, 86400 * 8, -1, 60)[variant])
            elif depth < 3 and f.message_type.full_name.startswith("dsomarket."):
                value = extreme(message_factory.GetMessageClass(f.message_type), variant, depth + 1)
            else:
                continue
            (getattr(msg, f.name).add() if repeated else getattr(msg, f.name)).CopyFrom(value)
            continue
        if f.containing_oneof is not None and f.containing_oneof.fields[0] is not f and variant % 2:
            continue
        if f.type == descriptor.FieldDescriptor.TYPE_STRING:
            value = strings[variant]
        elif f.type == descriptor.FieldDescriptor.TYPE_BYTES:
            value = b"\xff" * 3
        elif f.type in numbers:
            value = numbers[f.type][variant]
            if f.type == descriptor.FieldDescriptor.TYPE_ENUM:
                value = max(-2**31, min(value, 2**31 - 1))
        else:
            continue
        if repeated:
            getattr(msg, f.name).extend([value] * 3)
        else:
            setattr(msg, f.name, value)
    return msg


async def call(channel, path, payload: bytes, streaming: bool, token: str):
    """(status code, details) of one raw call."""
    metadata = (("authorization", f"Bearer {token}"),)
    try:
        if streaming:
            # A stream that accepted the request stays open until the deadline: that is not a crash,
            # and every stream waits it out for every caller, so keep it short.
            stream = channel.unary_stream(path)(payload, metadata=metadata, timeout=1.0)
            async for _ in stream:
                pass
        else:
            await channel.unary_unary(path)(payload, metadata=metadata, timeout=20.0)
    except grpc.aio.AioRpcError as err:
        return err.code(), err.details()
    return grpc.StatusCode.OK, ""


@pytest.fixture
def errors_logged(caplog):
    caplog.set_level(logging.WARNING)
    yield lambda: [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def test_corrupt_bytes_and_bad_utf8_are_invalid_argument_on_every_rpc(tmp_path, errors_logged):
    async def body():
        async with running(tmp_path) as env:
            await small_market(env)
            async with grpc.aio.insecure_channel(env.target) as channel:
                for path, request, streaming in methods():
                    payloads = [b"\x0a\x05ab", b"\xff\xff\xff\xff", b"\x08" + b"\xff" * 11]
                    if bad_utf8(request) is not None:
                        payloads.append(bad_utf8(request))
                    for payload in payloads:
                        code, details = await call(channel, path, payload, streaming, env.tokens["dso"])
                        assert code == grpc.StatusCode.INVALID_ARGUMENT, (path, payload, code, details)
                        assert details.startswith("request: the bytes are not a valid"), details
                # Health checking and reflection need no token, and parse nothing they cannot either.
                health = channel.unary_unary("/grpc.health.v1.Health/Check")
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await health(b"\x0a\x02\xff\xfe", timeout=5)
                assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                reflect = channel.stream_stream("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
                replies = reflect(iter([b"\x0a\x05ab"]), timeout=5)
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    async for _ in replies:
                        pass
                assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    asyncio.run(body())
    assert errors_logged() == []


@pytest.mark.parametrize("variant", range(7))
def test_extreme_values_on_every_rpc_never_crash_a_handler(tmp_path, errors_logged, variant):
    async def body():
        async with running(tmp_path) as env:
            market = await small_market(env)
            await env.clients["agg-a"].submit_bids(market.market_id, simple_bids(market))
            async with grpc.aio.insecure_channel(env.target) as channel:
                for path, request, streaming in methods():
                    payload = extreme(request, variant).SerializeToString()
                    for who in ("dso", "agg-a", "iso", "auditor"):
                        code, details = await call(channel, path, payload, streaming, env.tokens[who])
                        assert code not in CRASHES, (path, who, code, details)

    asyncio.run(body())
    assert errors_logged() == []


def _page_request(token: str) -> market_pb2.ListMarketsRequest:
    return market_pb2.ListMarketsRequest(pagination=common_pb2.PaginationParams(page_size=1, page_token=token))


def test_page_tokens_are_signed_so_hand_made_ones_are_refused(tmp_path, errors_logged):
    async def body():
        async with running(tmp_path) as env:
            await small_market(env, "m1")
            await small_market(env, "m2")
            op = env.clients["dso"]
            async with grpc.aio.insecure_channel(env.target) as channel:
                stub = channel.unary_unary("/dsomarket.v1.MarketService/ListMarkets",
                                           request_serializer=market_pb2.ListMarketsRequest.SerializeToString,
                                           response_deserializer=market_pb2.ListMarketsResponse.FromString)
                md = (("authorization", f"Bearer {env.tokens['dso']}"),)
                first = await stub(_page_request(""), metadata=md)
                token = first.pagination.next_page_token
                second = await stub(_page_request(token), metadata=md)
                assert [m.market_id for m in [*first.markets, *second.markets]] == ["m1", "m2"]
                head, _, mac = token.partition(".")
                nested = "[" * 100_000 + "]" * 100_000
                forged = [
                    base64.urlsafe_b64encode(json.dumps(["x", [2**70]]).encode()).decode(),  # the old format
                    base64.urlsafe_b64encode(nested.encode()).decode(),
                    base64.urlsafe_b64encode(json.dumps([-1]).encode()).decode().rstrip("=") + "." + mac,
                    head + "." + mac[:-2] + ("AA" if not mac.endswith("AA") else "BB"),
                    token + "x", "\u0661\u0662.\u0663", "." * 50, "x" * 5000,
                ]
                for bad in forged:
                    with pytest.raises(grpc.aio.AioRpcError) as err:
                        await stub(_page_request(bad), metadata=md)
                    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, bad[:40]
                    assert err.value.details().startswith("pagination.page_token:")
                # A token of one call is refused by another call and by the same call with another filter.
                other = channel.unary_unary("/dsomarket.v1.OperatorService/ListFeeders",
                                            request_serializer=operator_pb2.ListFeedersRequest.SerializeToString,
                                            response_deserializer=operator_pb2.ListFeedersResponse.FromString)
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await other(operator_pb2.ListFeedersRequest(
                        pagination=common_pb2.PaginationParams(page_token=token)), metadata=md)
                assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                filtered = _page_request(token)
                filtered.filter.feeder_id = "ieee33"
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await stub(filtered, metadata=md)
                assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert [m.market_id for m in await op.list_markets()] == ["m1", "m2"]
        # The key lives in the database: a restarted server still takes its tokens.
        async with running(tmp_path, participants={"dso2": "operator"}) as env:
            async with grpc.aio.insecure_channel(env.target) as channel:
                stub = channel.unary_unary("/dsomarket.v1.MarketService/ListMarkets",
                                           request_serializer=market_pb2.ListMarketsRequest.SerializeToString,
                                           response_deserializer=market_pb2.ListMarketsResponse.FromString)
                again = await stub(_page_request(token), metadata=(("authorization", f"Bearer {env.tokens['dso2']}"),))
                assert [m.market_id for m in again.markets] == ["m2"]

    asyncio.run(body())
    assert errors_logged() == []


def test_after_sequence_beyond_int64_is_invalid_argument(tmp_path, errors_logged):
    async def body():
        async with running(tmp_path) as env:
            async with grpc.aio.insecure_channel(env.target) as channel:
                for path, request, token in (
                        ("/dsomarket.v1.IsoService/ReceiveInterfaceCurveStream",
                         iso_pb2.ReceiveInterfaceCurveStreamRequest(after_sequence=I64 + 1), "iso"),
                        ("/dsomarket.v1.AggregatorService/ReceiveDispatchStream",
                         aggregator_pb2.ReceiveDispatchStreamRequest(after_sequence=U64), "agg-a")):
                    code, details = await call(channel, path, request.SerializeToString(), True, env.tokens[token])
                    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("after_sequence:"), details

    asyncio.run(body())
    assert errors_logged() == []


def test_markets_at_the_ends_of_the_timestamp_range(tmp_path, errors_logged):
    """Year 1 and year 9999: a delivery period past 9999-12-31 is refused at the door; one inside it and one
    in year 1 take bids and refuse late ones with messages that name the times."""
    async def body():
        async with running(tmp_path) as env:
            await small_market(env)
            op, a = env.clients["dso"], env.clients["agg-a"]
            with pytest.raises(InvalidArgument, match="delivery_start: the delivery period must end by 9999"):
                await op.create_market("late", feeder_id="ieee33", kind="day_ahead",
                                       delivery_start=datetime(9999, 12, 31, 1, tzinfo=timezone.utc))
            last = await op.create_market("last", feeder_id="ieee33", kind="day_ahead", interval_count=22,
                                          delivery_start=datetime(9999, 12, 31, 1, tzinfo=timezone.utc))
            assert (await a.submit_bids(last.market_id, simple_bids(last))).count == 2 * 22
            first = await op.create_market("first", feeder_id="ieee33", kind="day_ahead",
                                           delivery_start=datetime(1, 1, 1, tzinfo=timezone.utc))
            with pytest.raises(FailedPrecondition, match="0001-01-01T00:00:00Z"):
                await a.submit_bids(first.market_id, simple_bids(first))
            assert len(await op.list_intervals(last.market_id)) == 22

    asyncio.run(body())
    assert errors_logged() == []


def test_network_changes_at_the_end_of_time_and_out_of_range(tmp_path, errors_logged):
    """A change ending at the last microsecond a Timestamp holds is fine; values outside their range are
    refused naming the field (each used to be stored, or to crash on float seconds)."""
    from dsomarket.v1 import network_pb2

    start = Timestamp(seconds=1_800_000_000)
    kinds = network_pb2
    cases = [
        (dict(kind=kinds.NETWORK_CHANGE_KIND_RATING, element="3", s_max_kva=100.0, start=start,
              end=Timestamp(seconds=253402300799, nanos=999_999_000)), None),
        (dict(kind=kinds.NETWORK_CHANGE_KIND_RATING, element="3", s_max_kva=1e-300, start=start),
         r"changes\[0\]\.s_max_kva: must be between"),
        (dict(kind=kinds.NETWORK_CHANGE_KIND_VOLTAGE, element="5", vmax_pu=1e308, start=start),
         r"changes\[0\]\.vmax_pu: must be between"),
        (dict(kind=kinds.NETWORK_CHANGE_KIND_INTERFACE, import_max_kw=math.nan, start=start),
         r"changes\[0\]\.import_max_kw: must be a finite"),
    ]

    async def body():
        async with running(tmp_path) as env:
            await small_market(env)
            async with grpc.aio.insecure_channel(env.target) as channel:
                submit = channel.unary_unary("/dsomarket.v1.NetworkService/SubmitNetworkChanges",
                                             request_serializer=network_pb2.SubmitNetworkChangesRequest.SerializeToString,
                                             response_deserializer=network_pb2.SubmitNetworkChangesResponse.FromString)
                for k, (change, match) in enumerate(cases):
                    request = network_pb2.SubmitNetworkChangesRequest(feeder_id="ieee33", changes=[
                        network_pb2.NetworkChange(change_id=f"c{k}", reason="test", **change)])
                    try:
                        await submit(request, metadata=(("authorization", f"Bearer {env.tokens['dso']}"),))
                    except grpc.aio.AioRpcError as err:
                        assert match and err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
                        assert re.match(match, err.details()), err.details()
                    else:
                        assert match is None

    asyncio.run(body())
    assert errors_logged() == []
