"""The JavaScript client (clients/js) against a real server: list markets, submit a columnar batch, follow
the dispatch stream.

The example runs in node while this test plays the operator and the ISO through the Python client: once
the example's bids are stored it closes the gate, clears, publishes and awards, so that the awards reach
the example live on its stream. What node printed is compared with what the Python client reads back.
Skipped only when node is not installed; the npm packages are installed (``npm ci``) when missing.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from dsomarket.clients.api import IntervalAward
from tests.harness import running, small_market

ROOT = Path(__file__).resolve().parents[1]
JS = ROOT / "clients" / "js"
NODE = shutil.which("node")

pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed (the JavaScript client needs Node 20)")


@pytest.fixture(scope="module")
def node_modules():
    if not (JS / "node_modules" / "@grpc" / "proto-loader").is_dir():
        npm = shutil.which("npm")
        assert npm, "node is installed but npm is not: cannot install the client's packages"
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=JS, check=True, timeout=300,
                       capture_output=True)
    return JS / "node_modules"


def test_the_js_example_lists_submits_and_follows_the_dispatch_stream(tmp_path, node_modules):
    async def body():
        async with running(tmp_path) as env:
            market = await small_market(env, "da-js", intervals=2)
            agg, op, iso = env.clients["agg-a"], env.clients["dso"], env.clients["iso"]
            node = await asyncio.create_subprocess_exec(
                NODE, str(JS / "example.js"), "--server", env.target, "--token", env.tokens["agg-a"],
                "--market", market.market_id, "--resource", "pv", "--side", "sell", "--kw", "150",
                "--price", "12.25", "--count", str(2 * market.interval_count),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            try:
                deadline = time.monotonic() + 60
                while not await agg.list_bids(market_id=market.market_id):
                    assert node.returncode is None and time.monotonic() < deadline, "the example submitted nothing"
                    await asyncio.sleep(0.1)
                await op.close_gate(market.market_id)
                cleared = await op.clear_market(market.market_id, iso_price_forecast=["50"])
                await op.publish_market(market.market_id)
                await iso.submit_award(market.market_id, [IntervalAward(f.interval_start, f.import_kw, "50")
                                                          for f in cleared.interface])
                out, err = await asyncio.wait_for(node.communicate(), 60)
            finally:
                if node.returncode is None:
                    node.kill()
                    await node.wait()
            assert node.returncode == 0, err.decode()
            return market, [json.loads(line) for line in out.decode().splitlines()], \
                await agg.list_awards(market_id=market.market_id), \
                await agg.list_instructions(market_id=market.market_id), await agg.list_bids()

    market, lines, awards, instructions, bids = asyncio.run(body())
    listed = [line for line in lines if line["type"] == "market"]
    # keepCase, enums as names, longs as strings: the fields read exactly as the .proto spells them.
    assert [m["market_id"] for m in listed] == [market.market_id]
    assert listed[0]["state"] == "MARKET_STATE_OPEN" and listed[0]["kind"] == "MARKET_KIND_DAY_AHEAD"
    assert listed[0]["interval_count"] == 2 and listed[0]["value_of_lost_load"] == ""   # defaults: true
    assert listed[0]["formulation"] == market.formulation == "lossaware"
    ack = next(line for line in lines if line["type"] == "ack")
    assert ack["accepted"] == 2
    assert sorted((b.bid_id, b.side, b.quantity_kw, str(b.price), b.interval_start) for b in bids) == \
        [(f"js-pv-{k}", "sell", 150.0, "12.25", market.intervals[k]) for k in range(2)]

    events = [line for line in lines if line["type"] in ("award", "instruction")]
    got = {e["bid_id"]: e for e in events if e["type"] == "award"}
    assert set(got) == {a.bid_id for a in awards} and len(got) == 2
    for a in awards:
        e = got[a.bid_id]
        assert (e["price"], e["cleared_kw"], e["side"], e["sequence"]) == \
            (str(a.price), a.cleared_kw, "SIDE_SELL", str(a.sequence))
        assert e["interval_start"] == a.interval_start.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert {e["sequence"] for e in events if e["type"] == "instruction"} <= {str(i.sequence) for i in instructions}
