"""Several server processes on one PostgreSQL database: the gate, the audit chain and the timeline hold
across them.

Aggregators submit through one server while the operator closes the gate
through another. Every bid the servers acknowledged is stored, every bid
stored was acknowledged, nothing is accepted after the closure, and the audit
chain written by both processes verifies link by link. Two servers running the
scheduler close, clear and publish each market exactly once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from datetime import timedelta
from types import SimpleNamespace

import grpc
import pytest

from dsomarket.clients.api import ApiError, BidSegment, Client, TerritoryInterface
from dsomarket.clients.demo import delivery_day
from dsomarket.server import audit, db
from tests import harness
from tests.harness import PARTICIPANTS, create_tokens, database, simple_bids, small_market
from tests.test_scheduler import real_time_markets, rolled, serve, steps_of  # noqa: F401 (serve: a fixture)
from tests.test_server_durability import ServerProcess, open_market_with_two_pv_aggregators


@pytest.fixture(autouse=True)
def db_backend():
    """PostgreSQL only: an SQLite file has one writer process by construction."""
    if not harness.POSTGRES_URL:
        pytest.skip("no PostgreSQL server: set DSOMARKET_TEST_POSTGRES (.ci/run starts one)")
    harness.BACKEND = "postgresql"
    yield "postgresql"
    harness.BACKEND = "sqlite"


@pytest.mark.skipif(os.name != "posix", reason="signals")
def test_a_gate_closed_through_one_server_holds_for_bids_through_another(tmp_path):
    url = database(tmp_path)
    tokens = create_tokens(url, PARTICIPANTS)
    servers = [ServerProcess(url), ServerProcess(url)]
    acked: set[str] = set()
    refused: list[ApiError] = []

    async def submitter(target, name, market, worker):
        async with Client(target, tokens[name], retries=0, timeout=10) as c:
            for k in range(10_000):
                ids = [f"w{worker}-k{k}-{j}" for j in range(20)]
                try:
                    await c.submit_bids("da", [BidSegment(b, "pv", "sell", 1.0, "1.5", market.intervals[j % 24])
                                               for j, b in enumerate(ids)])
                except ApiError as exc:
                    refused.append(exc)
                    return
                acked.update(f"{name}/{b}" for b in ids)

    async def race(market):
        # Submitters on both servers; the gate closes through the first.
        tasks = [asyncio.create_task(submitter(servers[w % 2].target, n, market, w))
                 for n in ("agg-a", "agg-b") for w in range(2)]
        while len(acked) < 400:
            await asyncio.sleep(0.01)
        async with Client(servers[0].target, tokens["dso"]) as op:
            closed = await op.close_gate("da")
        after = len(acked)
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
        return closed, after

    async def stored_bids():
        out = set()
        for name in ("agg-a", "agg-b"):
            async with Client(servers[1].target, tokens[name]) as c:
                out |= {f"{name}/{b.bid_id}" for b in await c.list_bids(market_id="da")}
        return out

    try:
        market = asyncio.run(open_market_with_two_pv_aggregators(servers[1].target, tokens))
        closed, after = asyncio.run(race(market))
        assert closed.state != "open"
        assert len(refused) == 4 and all(e.code == grpc.StatusCode.FAILED_PRECONDITION for e in refused), refused
        # At most the requests already committed when the closure was asked for land after it returns.
        assert len(acked) - after <= 4 * 20
        assert asyncio.run(stored_bids()) == acked
    finally:
        for s in servers:
            s.proc.send_signal(signal.SIGTERM)
        for s in servers:
            assert s.proc.wait(15) == 0
    conn = db.connect(url)
    try:
        report = audit.verify(conn)
        actions = [r[4] for r in audit.records(conn, "bids.")]
    finally:
        conn.close()
    assert report.ok, report
    assert len(actions) == len(acked) // 20


@pytest.mark.skipif(os.name != "posix", reason="signals")
def test_two_schedulers_take_each_step_once(tmp_path, serve):  # noqa: F811
    """Both timelines see every market (and every rolling interval) due at the same moments; the store's
    transactions (state re-read under the advisory lock) must let only one of them take each step. One market
    is infeasible: its clearing is recorded once and never retried by either scheduler."""
    url = database(tmp_path)
    tokens = create_tokens(url, PARTICIPANTS)
    day = delivery_day()
    names = [f"rt-{h}" for h in range(3)]
    # Ten simulated minutes per second on both; the first gate (day 00:00) comes 12 s after the start.
    servers = [serve(url, day - timedelta(hours=2), 600.0) for _ in range(2)]

    async def run_day():
        env = SimpleNamespace(clients={n: Client(servers[0][1], t) for n, t in tokens.items()})
        op, a = env.clients["dso"], env.clients["agg-a"]
        try:
            await small_market(env, "da")  # ieee33 and the aggregators' resources; its gate is at day 00:00 too
            for m in await real_time_markets(op, names, day):
                await a.submit_bids(m.market_id, simple_bids(m, "a"))
            # A market on ieee33 behind a 100 kW transformer: its 3.7 MW of fixed load cannot be served.
            await op.create_feeder("x33", builtin="ieee33")
            await op.create_territory("t", [TerritoryInterface("tight", ("x33",), import_max_kw=100.0)])
            await op.create_market("da-bad", feeder_id="tight", kind="day_ahead", delivery_start=day,
                                   interval_count=2)
        finally:
            for c in env.clients.values():
                await c.close()
        async with Client(servers[1][1], tokens["auditor"]) as au:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                states = {m.market_id: m.state for m in await au.list_markets()}
                if all(states[n] == "published" for n in (*names, "da")) and states.get("da-bad") == "closed":
                    await asyncio.sleep(2.0)  # both timelines tick again past every gate
                    return
                await asyncio.sleep(0.1)
            raise AssertionError(states)

    try:
        asyncio.run(run_day())
    finally:
        for proc, _ in servers:
            proc.send_signal(signal.SIGTERM)
        for proc, _ in servers:
            assert proc.wait(15) == 0
    steps = steps_of(url)
    assert all(rolled(steps[n], 12) for n in names), steps  # real-time markets roll interval by interval
    assert steps["da"] == ["close", "clear", "publish"], steps["da"]
    assert steps["da-bad"] == ["close", "clear"], steps["da-bad"]
    conn = db.connect(url)
    try:
        assert audit.verify(conn).ok
        actors = {r["actor"] for r in audit.records(conn) if r["action"].split(".")[1] in ("close", "clear",
                                                                                          "publish")}
    finally:
        conn.close()
    assert actors == {"scheduler"}
