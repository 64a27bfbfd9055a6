"""Two server processes with ``--scheduler`` on one PostgreSQL database: every market closes, clears and
publishes exactly once.

Both timelines see every market due at the same moments; the store's transactions (state re-read under the
database's advisory lock) must let only one of them take each step. One market is infeasible: its
clearing is recorded once and never retried by either scheduler.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from datetime import timedelta

import pytest

from dsomarket.clients.api import Client, Resource, TerritoryInterface
from dsomarket.clients.demo import delivery_day
from dsomarket.server import audit, db
from tests import harness
from tests.harness import PARTICIPANTS, create_tokens, database, simple_bids
from tests.test_scheduler import real_time_markets, serve, steps_of


@pytest.fixture(autouse=True)
def db_backend():
    """PostgreSQL only: an SQLite file has one writer process by construction."""
    if not harness.POSTGRES_URL:
        pytest.skip("no PostgreSQL server: set DSOMARKET_TEST_POSTGRES (.ci/run starts one)")
    harness.BACKEND = "postgresql"
    yield "postgresql"
    harness.BACKEND = "sqlite"


@pytest.mark.skipif(os.name != "posix", reason="signals")
def test_two_schedulers_take_each_step_once(tmp_path):
    url = database(tmp_path)
    tokens = create_tokens(url, PARTICIPANTS)
    day = delivery_day()
    names = [f"rt-{h}" for h in range(5)]
    # Ten simulated minutes per second on both; the first gate (day 00:00) comes 12 s after the start.
    servers = [serve(url, day - timedelta(hours=2), 600.0) for _ in range(2)]

    async def run_day():
        target = servers[0][1]
        async with Client(target, tokens["dso"]) as op, Client(target, tokens["agg-a"]) as a:
            await op.create_feeder("ieee33", builtin="ieee33")
            await a.register_resources([Resource("pv", "ieee33", "18", "pv", 300.0),
                                        Resource("load", "ieee33", "25", "flexible_load", 200.0)])
            for m in await real_time_markets(op, names, day):
                await a.submit_bids(m.market_id, simple_bids(m, "a"))
            # A market on ieee33 behind a 100 kW transformer: its 3.7 MW of fixed load cannot be served.
            await op.create_feeder("x33", builtin="ieee33")
            await op.create_territory("t", [TerritoryInterface("tight", ("x33",), import_max_kw=100.0)])
            await op.create_market("rt-bad", feeder_id="tight", kind="real_time", delivery_start=day,
                                   gate_lead=timedelta(0))
        async with Client(servers[1][1], tokens["auditor"]) as au:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                states = {m.market_id: m.state for m in await au.list_markets()}
                if all(states[n] == "published" for n in names) and states.get("rt-bad") == "closed":
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
    assert {n: steps[n] for n in names} == {n: ["close", "clear", "publish"] for n in names}, steps
    assert steps["rt-bad"] == ["close", "clear"], steps["rt-bad"]
    conn = db.connect(url)
    try:
        assert audit.verify(conn).ok
        actors = {r["actor"] for r in audit.records(conn, "market.") if r["action"] in (
            "market.close", "market.clear", "market.publish")}
    finally:
        conn.close()
    assert actors == {"scheduler"}
