"""Acknowledged means on disk: restarts and SIGKILL lose no acknowledged bid; SIGTERM shuts down cleanly."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dsomarket.clients.api import ApiError, BidSegment, Client, Resource
from dsomarket.server import audit, db
from tests.harness import (PARTICIPANTS, create_tokens, database, delivery_day, old_database, running, simple_bids,
                           small_market)

ROOT = Path(__file__).resolve().parent.parent
_SERVE = ("import sys, clients.cli as cli; cli.COMMAND_MODULES = ('service',); "
          "sys.exit(cli.main(sys.argv[1:]))")


def test_restart_resumes_open_markets(tmp_path):
    async def body():
        async with running(tmp_path) as env:
            market = await small_market(env)
            await env.clients["agg-a"].submit_bids(market.market_id, simple_bids(market, "a"))
            tokens = env.tokens
        # Same database, new server: the market is still open, the bids are there, tokens still work.
        async with running(tmp_path, participants={}) as env:
            a = env.client(tokens["agg-a"])
            assert (await a.get_market(market.market_id)).state == "open"
            assert len(await a.list_bids(market_id=market.market_id)) == 8
            more = [BidSegment("late-but-open", "pv", "sell", 1.0, "1", market.intervals[-1])]
            assert (await a.submit_bids(market.market_id, more)).count == 1
            await a.close()

    asyncio.run(body())


class ServerProcess:
    """``dsomarket serve --port 0`` in a subprocess; the port is read from its first line."""

    def __init__(self, db_path: Path):
        argv = [sys.executable, "-c", _SERVE, "serve", "--db", str(db_path), "--port", "0"]
        self.proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True)
        line = self.proc.stdout.readline()
        match = re.search(r"serving on 127\.0\.0\.1:(\d+)", line)
        if not match:
            self.proc.kill()
            raise RuntimeError(f"server did not start: {line!r}")
        self.target = f"127.0.0.1:{match.group(1)}"


async def open_market_with_two_pv_aggregators(target: str, tokens: dict):
    """A day-ahead market "da" on ieee33, with a 300 kW PV at bus 18 registered by agg-a and agg-b."""
    async with Client(target, tokens["dso"]) as op:
        await op.create_feeder("ieee33", builtin="ieee33")
        market = await op.create_market("da", feeder_id="ieee33", kind="day_ahead",
                                        delivery_start=delivery_day())
    for name in ("agg-a", "agg-b"):
        async with Client(target, tokens[name]) as c:
            await c.register_resources([Resource("pv", "ieee33", "18", "pv", 300.0)])
    return market


@pytest.mark.skipif(os.name != "posix", reason="signals")
def test_sigkill_while_aggregators_submit_loses_no_acknowledged_bid(tmp_path):
    path = database(tmp_path)
    tokens = create_tokens(path, PARTICIPANTS)
    server = ServerProcess(path)
    batches: dict[str, list[str]] = {}
    acked: set[str] = set()

    async def submitter(target, name, market, worker):
        async with Client(target, tokens[name], retries=0, timeout=5) as c:
            for k in range(10_000):
                ids = [f"{name}-w{worker}-k{k}-{j}" for j in range(50)]
                batches[f"{name}/{worker}/{k}"] = ids
                bids = [BidSegment(b, "pv", "sell", 1.0, "1.5", market.intervals[j % 24])
                        for j, b in enumerate(ids)]
                try:
                    await c.submit_bids("da", bids)
                except ApiError:
                    return
                acked.update(f"{name}/{b}" for b in ids)

    async def load(target, market):
        tasks = [asyncio.create_task(submitter(target, n, market, w)) for n in ("agg-a",
                                                                                "agg-b") for w in range(3)]
        deadline = time.monotonic() + 20
        while len(acked) < 3000 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        server.proc.send_signal(signal.SIGKILL)
        await asyncio.wait_for(asyncio.gather(*tasks), 30)

    market = asyncio.run(open_market_with_two_pv_aggregators(server.target, tokens))
    asyncio.run(load(server.target, market))
    server.proc.wait(10)
    assert len(acked) >= 3000

    restarted = ServerProcess(path)

    async def check(target):
        stored = set()
        for name in ("agg-a", "agg-b"):
            async with Client(target, tokens[name]) as c:
                stored |= {f"{name}/{b.bid_id}" for b in await c.list_bids(market_id="da")}
                assert (await c.get_market("da")).state == "open"
        return stored

    stored = asyncio.run(check(restarted.target))
    assert acked <= stored
    for key, ids in batches.items():  # every batch is there whole or not at all
        name = key.split("/")[0]
        present = sum(f"{name}/{b}" in stored for b in ids)
        assert present in (0, len(ids)), key
    restarted.proc.send_signal(signal.SIGTERM)
    assert restarted.proc.wait(15) == 0
    conn = db.connect(path)
    try:
        assert audit.verify(conn).ok
    finally:
        conn.close()


def test_statements_of_a_database_made_before_statement_kinds_get_their_kind(tmp_path):
    """Lines told apart by bid_id (override, curtailment, imbalance) before kinds existed keep their meaning."""
    old = ("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);\n"
           "CREATE TABLE statements (market_id TEXT NOT NULL, aggregator_id TEXT NOT NULL, bid_id TEXT NOT NULL, "
           "resource_id TEXT NOT NULL, interval_idx INTEGER NOT NULL, settlement TEXT NOT NULL, kw REAL NOT NULL, "
           "kvar REAL NOT NULL, price TEXT NOT NULL, price_q TEXT NOT NULL, amount TEXT NOT NULL, "
           "PRIMARY KEY (aggregator_id, market_id, bid_id, resource_id, interval_idx, settlement))")
    path = old_database(tmp_path, "old.sqlite", old)
    conn = db.connect(path)
    conn.executemany("INSERT INTO statements VALUES ('m', 'a', ?, 'pv', 0, 'day_ahead', 1, 0, '50', '0', ?)",
                     [("b1", "-0.05"), ("override", "0.10"), ("curtailment", "0.02"), ("imbalance", "-0.01")])
    conn.close()
    db.initialise(path)
    conn = db.connect(path)
    rows = sorted(tuple(r) for r in conn.execute("SELECT bid_id, kind, amount FROM statements"))
    conn.close()
    assert rows == [("", "curtailment", "0.02"), ("", "imbalance", "-0.01"), ("", "override", "0.10"),
                    ("b1", "energy", "-0.05")]
