"""The service commands of ``dsomarket`` against a server running in a background thread."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import polars as pl
import pytest

from dsomarket.clients.api import Client
from tests.harness import PARTICIPANTS, ThreadedServer, create_tokens, database, small_market


@pytest.fixture
def served(tmp_path):
    path = database(tmp_path)
    tokens = create_tokens(path, PARTICIPANTS)
    server = ThreadedServer(path)
    yield server, tokens, path
    server.stop()


def _setup_market(target, tokens):
    async def body():
        env = SimpleNamespace(clients={n: Client(target, t) for n, t in tokens.items()})
        try:
            return await small_market(env)
        finally:
            for c in env.clients.values():
                await c.close()

    return asyncio.run(body())


def test_token_create_prints_once_and_stores_a_hash(tmp_path, run):
    path = database(tmp_path, "t.sqlite")
    code, out, err = run("token", "create", "--role", "aggregator", "--name", "agg-x", "--db", path)
    token = out.strip()
    assert code == 0 and token.startswith("dsm_") and "cannot be shown again" in err
    assert not any(token.encode() in f.read_bytes() for f in tmp_path.glob("t.sqlite*"))
    code, _, err = run("token", "create", "--role", "iso", "--name", "agg-x", "--db", path)
    assert code == 2 and "already has the role aggregator" in err
    code, _, err = run("token", "create", "--role", "iso", "--name", "bad name", "--db", path)
    assert code == 2 and "name: must be 1 to 64 characters" in err


def test_participant_commands_over_grpc(served, run, tmp_path):
    server, tokens, _ = served
    market = _setup_market(server.target, tokens)
    conn = ["--server", server.target]
    rows = [{"bid_id": f"c{k}", "resource_id": "pv", "side": "sell", "quantity_kw": 20.0, "price": "10.125",
             "interval": iv.strftime("%Y-%m-%dT%H:%M:%SZ")} for k, iv in enumerate(market.intervals)]
    rows += [{"bid_id": f"d{k}", "resource_id": "load", "side": "buy", "quantity_kw": 50.0, "price": "90",
              "interval": iv.strftime("%Y-%m-%dT%H:%M:%SZ")} for k, iv in enumerate(market.intervals)]
    bids = tmp_path / "bids.csv"
    pl.DataFrame(rows).write_csv(bids)

    code, out, _ = run("bids", "submit", *conn, "--token", tokens["agg-a"], "--market", market.market_id,
                       "--file", bids)
    assert code == 0 and "8 of 8 segments acknowledged" in out
    code, out, _ = run("bids", "list", *conn, "--token", tokens["agg-a"], "--market", market.market_id,
                       "--format", "csv")
    listed = pl.read_csv(out.encode(), schema_overrides={"price": pl.Utf8})
    assert code == 0 and listed.height == 8 and "10.125" in listed["price"].to_list()

    code, _, err = run("bids", "submit", *conn, "--token", tokens["agg-a"], "--market", market.market_id,
                       "--file", bids)
    assert code == 1 and err.startswith("dsomarket: error: ALREADY_EXISTS: bids.bid_id[0]")
    code, _, err = run("bids", "submit", *conn, "--token", tokens["iso"], "--market", market.market_id,
                       "--file", bids)
    assert code == 1 and "PERMISSION_DENIED" in err
    code, _, err = run("bids", "list", *conn, "--token", "wrong")
    assert code == 1 and "UNAUTHENTICATED" in err
    code, _, err = run("bids", "submit", *conn, "--token", tokens["agg-a"], "--market", market.market_id,
                       "--file", tmp_path / "missing.csv")
    assert code == 2 and "no such file" in err

    async def operate():
        async with Client(server.target, tokens["dso"]) as op:
            await op.close_gate(market.market_id)
            await op.clear_market(market.market_id, iso_price_forecast=["50"])
            await op.publish_market(market.market_id)

    asyncio.run(operate())
    curves_csv = tmp_path / "curves.csv"
    code, out, _ = run("curves", "fetch", *conn, "--token", tokens["iso"], "--market", market.market_id,
                       "--out", curves_csv)
    curves = pl.read_csv(curves_csv)
    assert code == 0 and set(curves["market_id"]) == {market.market_id}
    assert "fixed_demand" in set(curves["kind"])

    fixed = dict(curves.select("interval", "fixed_net_load_kw").iter_rows())
    award = tmp_path / "award.csv"
    pl.DataFrame({"interval": list(fixed), "import_kw": list(fixed.values()), "price": ["50"] * len(fixed)}) \
        .write_csv(award)
    code, out, _ = run("award", "submit", *conn, "--token", tokens["iso"], "--market", market.market_id,
                       "--file", award)
    assert code == 0 and "award optimal" in out and "is awarded" in out

    code, out, _ = run("awards", "follow", *conn, "--token", tokens["agg-a"], "--count", 12,
                       "--with-instructions")
    events = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and len(events) == 12 and {e["type"] for e in events} == {"award", "instruction"}
    assert all(e["aggregator_id"] == "agg-a" for e in events)
    last = events[-1]["sequence"]
    code, out, _ = run("awards", "follow", *conn, "--token", tokens["agg-a"], "--after", last, "--count", 4,
                       "--with-instructions")
    assert code == 0 and all(json.loads(line)["sequence"] > last for line in out.splitlines())


def test_serve_rejects_half_tls(run, tmp_path):
    code, _, err = run("serve", "--db", tmp_path / "x.sqlite", "--tls-cert", tmp_path / "c.pem")
    assert code == 2 and "--tls-cert and --tls-key go together" in err
