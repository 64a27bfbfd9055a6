"""Tokens and roles: UNAUTHENTICATED, PERMISSION_DENIED, and nothing leaking between aggregators."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from dsomarket.clients.api import (BidSegment, FailedPrecondition, IntervalAward, NotFound, PermissionDenied, Resource,
                         Unauthenticated)
from dsomarket.server import db
from dsomarket.v1 import market_pb2, market_pb2_grpc
from dsomarket.server.auth import create_tokens, token_hash
from tests.harness import old_database, running, simple_bids, small_market


def run_async(coro):
    return asyncio.run(coro)


def test_missing_malformed_and_unknown_tokens(tmp_path):
    async def body():
        async with running(tmp_path) as env:
            async with grpc.aio.insecure_channel(env.target) as channel:
                stub = market_pb2_grpc.MarketServiceStub(channel)
                for metadata in ((), (("authorization", "Basic abc"),), (("authorization", "Bearer"),),
                                 (("authorization", "Bearer dsm_" + "x" * 43),)):
                    with pytest.raises(grpc.aio.AioRpcError) as err:
                        await stub.ListMarkets(market_pb2.ListMarketsRequest(), metadata=metadata)
                    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(Unauthenticated, match="unknown token"):
                await env.client("not-a-token").identity()
            assert (await env.clients["agg-a"].identity()).role == "aggregator"

    run_async(body())


def test_roles_may_only_make_their_calls(tmp_path):
    async def body():
        async with running(tmp_path) as env:
            market = await small_market(env)
            m = market.market_id
            a, iso, aud, op = (env.clients[n] for n in ("agg-a", "iso", "auditor", "dso"))
            refused = [
                a.close_gate(m), a.create_feeder("f2", builtin="ieee33"), iso.clear_market(m),
                aud.close_gate(m), aud.submit_bids(m, simple_bids(market, "x")),
                aud.submit_award(m, [IntervalAward(t, 1.0) for t in market.intervals]),
                aud.register_resources([Resource("r", "ieee33", "5", "pv", 1.0)]),
                iso.list_bids(), iso.list_resources(), iso.list_awards(), iso.list_prices(m),
                iso.list_audit_records(), a.list_audit_records(), a.verify_audit_chain(), a.list_curves(),
                op.submit_bids(m, simple_bids(market, "x")),
                a.submit_award(m, [IntervalAward(t, 1.0) for t in market.intervals]),
            ]
            for call in refused:
                with pytest.raises(PermissionDenied, match="is not open to the"):
                    await call
            # The auditor reads everything; the operator reads any aggregator's data too.
            await a.submit_bids(m, simple_bids(market, "a"))
            assert len(await aud.list_bids()) == 8 and len(await op.list_bids(aggregator_id="agg-a")) == 8
            assert len(await aud.list_audit_records()) > 0 and (await aud.verify_audit_chain()).ok

    run_async(body())


def test_no_leaks_between_aggregators(tmp_path):
    async def body():
        async with running(tmp_path) as env:
            market = await small_market(env)
            m = market.market_id
            a, b, op, iso = (env.clients[n] for n in ("agg-a", "agg-b", "dso", "iso"))
            await a.register_resources([Resource("secret", "ieee33", "30", "pv", 50.0)])
            await a.submit_bids(m, simple_bids(market, "same") + [BidSegment("a-only", "pv", "sell", 1.0, "1",
                                                                            market.intervals[0])])
            await b.submit_bids(m, simple_bids(market, "same"))  # the same bid ids: scoped per aggregator

            for call in (b.list_bids(aggregator_id="agg-a"), b.list_resources(aggregator_id="agg-a"),
                         b.list_awards(aggregator_id="agg-a"), b.list_statements(aggregator_id="agg-a"),
                         b.list_instructions(aggregator_id="agg-a"),
                         b.list_bids(aggregator_id="no-such-aggregator")):
                with pytest.raises(PermissionDenied) as err:
                    await call
                assert "agg-a" not in err.value.details and "no-such" not in err.value.details
            assert {x.aggregator_id for x in await b.list_bids()} == {"agg-b"}
            assert {r.resource_id for r in await b.list_resources()} == {"pv", "load"}

            # Another aggregator's resource answers exactly like one that does not exist.
            errors = []
            for rid in ("secret", "never-registered"):
                with pytest.raises(NotFound) as err:
                    await b.submit_bids(m, [BidSegment("x1", rid, "sell", 1.0, "1", market.intervals[0])])
                errors.append(err.value.details.replace(rid, "?"))
            assert errors[0] == errors[1]
            # Replacing or withdrawing another's bid: not found among the caller's own, and a's bid stays.
            with pytest.raises(NotFound):
                await b.withdraw_bids(m, ["a-only"])
            with pytest.raises(NotFound):
                await b.replace_bids(m, [BidSegment("a-only", "pv", "sell", 2.0, "1", market.intervals[0])])
            assert "a-only" in {x.bid_id for x in await a.list_bids(market_id=m)}

            # Prices reach aggregators only once published; the ISO never sees them.
            await op.close_gate(m)
            await op.clear_market(m, iso_price_forecast=["50"])
            with pytest.raises(FailedPrecondition, match="not published yet"):
                await b.list_prices(m)
            assert len(await op.list_prices(m)) == 33 * 4
            await op.publish_market(m)
            curves = await iso.list_curves(market_id=m)
            awards = [IntervalAward(c.interval_start, c.bands[len(c.bands) // 2].import_kw) for c in curves]
            assert (await iso.submit_award(m, awards)).status == "optimal"

            seen_b = []

            async def follow():
                async for e in b.dispatch_stream():
                    seen_b.append(e)

            task = asyncio.create_task(follow())
            for _ in range(100):
                if len(seen_b) == 16:
                    break
                await asyncio.sleep(0.05)
            task.cancel()
            assert len(seen_b) == 16 and {e.aggregator_id for e in seen_b} == {"agg-b"}
            assert {x.aggregator_id for x in await b.list_awards()} == {"agg-b"}
            with pytest.raises(PermissionDenied):
                async for _ in b.dispatch_stream(aggregator_id="agg-a"):
                    pass
            # The operator's dispatch stream sees both.
            mixed = []
            async for e in op.dispatch_stream():
                mixed.append(e)
                if len(mixed) == 33:
                    break
            assert {e.aggregator_id for e in mixed} == {"agg-a", "agg-b"}

    run_async(body())


def test_revoked_token_is_refused_within_the_recheck_window(tmp_path, run):
    async def body():
        async with running(tmp_path, token_recheck_seconds=0.2) as env:
            a = env.clients["agg-a"]
            assert (await a.identity()).name == "agg-a"  # now cached
            code, _, err = run("token", "revoke", "--name", "agg-a", "--db", env.db_path)
            assert code == 0 and "revoked 1 token" in err
            await asyncio.sleep(0.3)
            with pytest.raises(Unauthenticated) as refused:
                await a.identity()
            assert refused.value.details == "unknown token"  # the same as a token never issued
            assert (await env.clients["agg-b"].identity()).name == "agg-b"
            records = await env.clients["auditor"].list_audit_records()
            assert [r.action for r in records].count("token.revoke") == 1
            return env.db_path, env.tokens

    path, tokens = run_async(body())
    code, out, _ = run("token", "list", "--db", path)
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[0] == "name,role,created,revoked" and len(lines) == 1 + len(tokens)
    by_name = {line.split(",")[0]: line.split(",") for line in lines[1:]}
    assert by_name["agg-a"][1] == "aggregator" and by_name["agg-a"][3].endswith("Z")
    assert all(row[3] == "" for name, row in by_name.items() if name != "agg-a")
    assert not any(t in out or token_hash(t) in out for t in tokens.values())
    code, _, err = run("token", "revoke", "--name", "agg-a", "--db", path)  # nothing left to revoke
    assert code == 0 and "revoked 0 token" in err
    code, out, err = run("token", "revoke", "--name", "nobody", "--db", path)
    assert code == 2 and out == "" and err.count("\n") == 1 and "name: no participant named 'nobody'" in err


def test_revocation_opens_a_database_made_before_it(tmp_path, run):
    old_schema = db.SCHEMA.replace("created_us INTEGER NOT NULL, revoked_us INTEGER);", "created_us INTEGER NOT NULL);")
    path = old_database(tmp_path, "old.sqlite", old_schema)
    conn = db.connect(path)
    assert "revoked_us" not in db.columns(conn, "tokens")
    conn.close()
    create_tokens(path, {"agg-x": "aggregator"})
    code, _, err = run("token", "revoke", "--name", "agg-x", "--db", path)
    assert code == 0 and "revoked 1 token" in err
