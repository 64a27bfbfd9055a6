"""A client built from the .proto files alone (no generated stubs) speaks to the server.

This stands in for a client in another language: the descriptor set protoc
makes from ``proto/`` is all it has, messages are built dynamically, and
method paths are spelled out as any gRPC runtime would.
"""

from __future__ import annotations

import asyncio
from importlib import resources

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from grpc_tools import protoc

from dsomarket.server import gen_protos
from tests.harness import delivery_day, running


def _pool(tmp_path) -> descriptor_pool.DescriptorPool:
    out = tmp_path / "dsomarket.pb"
    well_known = resources.files("grpc_tools") / "_proto"
    args = ["protoc", f"-I{gen_protos.PROTO_ROOT}", f"-I{well_known}", f"--descriptor_set_out={out}",
            "--include_imports", *map(str, gen_protos.proto_files())]
    assert protoc.main(args) == 0
    files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for f in files.file:
        pool.Add(f)
    return pool


def test_descriptor_only_client_runs_a_submission(tmp_path):
    pool = _pool(tmp_path)

    def cls(name):
        return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"dsomarket.v1.{name}"))

    async def call(channel, token, service, method, request):
        response = cls(f"{method}Response")
        rpc = channel.unary_unary(f"/dsomarket.v1.{service}/{method}",
                                  request_serializer=lambda m: m.SerializeToString(),
                                  response_deserializer=response.FromString)
        return await rpc(request, metadata=(("authorization", f"Bearer {token}"),), timeout=30)

    async def body():
        async with running(tmp_path) as env:
            t = env.tokens
            async with grpc.aio.insecure_channel(env.target) as ch:
                me = await call(ch, t["agg-a"], "MarketService", "GetIdentity", cls("GetIdentityRequest")())
                assert me.name == "agg-a" and me.role == pool.FindEnumTypeByName(
                    "dsomarket.v1.Role").values_by_name["ROLE_AGGREGATOR"].number
                await call(ch, t["dso"], "OperatorService", "CreateFeeder",
                           cls("CreateFeederRequest")(feeder_id="f", builtin_name="ieee33"))
                req = cls("CreateMarketRequest")(market_id="m", feeder_id="f", kind=1, interval_count=2)
                req.delivery_start.seconds = int(delivery_day().timestamp())
                market = (await call(ch, t["dso"], "OperatorService", "CreateMarket", req)).market
                res = cls("RegisterResourcesRequest")()
                res.resources.add(resource_id="pv", feeder_id="f", bus="18", kind=1, capacity_kw=100)
                await call(ch, t["agg-a"], "AggregatorService", "RegisterResources", res)
                bids = cls("SubmitBidsRequest")(market_id="m")
                bids.bids.bid_id.extend(["x1", "x2"])
                bids.bids.resource_id.extend(["pv", "pv"])
                bids.bids.side.extend([2, 2])
                bids.bids.quantity_kw.extend([10.0, 20.0])
                bids.bids.price.extend(["12.5", "-3"])
                bids.bids.interval_starts.add().CopyFrom(market.delivery_start)
                bids.bids.interval_index.extend([0, 0])
                ack = await call(ch, t["agg-a"], "AggregatorService", "SubmitBids", bids)
                assert ack.accepted == 2 and ack.acknowledged_at.seconds > 0
                listed = await call(ch, t["agg-a"], "AggregatorService", "ListBids", cls("ListBidsRequest")())
                assert sorted(b.price for b in listed.bids) == ["-3", "12.5"]

    asyncio.run(body())
