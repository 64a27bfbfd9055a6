"""Several server processes on one PostgreSQL database: the gate and the audit chain hold across them.

Aggregators submit through one server while the operator closes the gate
through another. Every bid the servers acknowledged is stored, every bid
stored was acknowledged, nothing is accepted after the closure, and the audit
chain written by both processes verifies link by link.
"""

from __future__ import annotations

import asyncio
import os
import signal

import grpc
import pytest

from dsomarket.clients.api import ApiError, BidSegment, Client
from dsomarket.server import audit, db
from tests import harness
from tests.harness import PARTICIPANTS, create_tokens, database
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
