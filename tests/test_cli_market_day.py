"""A whole market day through the command line alone, against a server on port 0.

Tokens, feeders, a market, resources, bids (submitted, replaced, withdrawn), the
flexibility auction, gate closure, clearing, publication, the ISO's curves and
award, awards and instructions (listed and followed), an override, settlement,
prices, the audit log: every step is a ``dsomarket`` command, and the connection
comes from a config file with one profile per participant. The outputs are
checked against each other (an award's price is the DLMP of its bus; settlement
pays the awarded energy at that price) rather than against stored numbers.
"""

from __future__ import annotations

import io
import json
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace

import polars as pl
import pytest

from dsomarket.clients.demo import delivery_day
from tests.harness import PARTICIPANTS, ThreadedServer

ROOT = Path(__file__).resolve().parents[1]
STAMP = "%Y-%m-%dT%H:%M:%SZ"


@pytest.fixture
def day(tmp_path, run):
    """Tokens made with ``token create``, a server, and a config file with a profile per participant."""
    db = tmp_path / "market.sqlite"
    tokens = {}
    for name, role in PARTICIPANTS.items():
        code, out, _ = run("token", "create", "--role", role, "--name", name, "--db", db)
        assert code == 0
        tokens[name] = out.strip()
    server = ThreadedServer(db)
    config = tmp_path / "config.toml"
    config.write_text(f'server = "{server.target}"\n'
                      + "".join(f'[profiles.{name}]\ntoken = "{t}"\n' for name, t in tokens.items()))

    def as_(profile, *argv):
        """``dsomarket ARGV --config FILE --profile PROFILE``: (status, stdout, stderr)."""
        return run(*argv, "--config", config, "--profile", profile)

    yield SimpleNamespace(server=server, tokens=tokens, config=config, as_=as_, dir=tmp_path)
    server.stop()


def csv(out: str, **text) -> pl.DataFrame:
    return pl.read_csv(io.StringIO(out), schema_overrides={k: pl.Utf8 for k in text.get("text", ())})


def ok(result) -> str:
    code, out, err = result
    assert code == 0, err
    return out


def test_a_market_day_through_the_command_line(day):
    as_, d = day.as_, day.dir
    start = delivery_day()
    t0, t1 = start.strftime(STAMP), start.replace(hour=1).strftime(STAMP)

    # The operator loads two feeders: a built-in one and an uploaded feeder directory.
    out = ok(as_("dso", "feeders", "create", "ieee33", "--builtin", "ieee33"))
    assert "ieee33" in out and "bus_count" in out.splitlines()[0]
    rated = json.loads(ok(as_("dso", "feeders", "create", "rated", "--dir", ROOT / "examples/ieee33_rated",
                              "--format", "json")))
    assert rated[0]["name"] == "ieee33-rated" and rated[0]["bus_count"] == 33 and rated[0]["line_count"] == 32
    assert sorted(csv(ok(as_("dso", "feeders", "list", "--format", "csv")))["feeder_id"]) == ["ieee33", "rated"]
    out = ok(as_("dso", "markets", "create", "da", "--feeder", "ieee33", "--start", t0, "--intervals", 2))
    assert out.startswith("market da is open")

    # Aggregators register resources and bid.
    (d / "a.csv").write_text("resource_id,feeder_id,bus,kind,capacity_kw\npv,ieee33,18,pv,300\n"
                             "load,ieee33,25,flexible_load,200\n")
    (d / "b.csv").write_text("resource_id,feeder_id,bus,kind,capacity_kw\nnear,ieee33,4,flexible_load,300\n")
    assert ok(as_("agg-a", "resources", "register", "--file", d / "a.csv")) == "2 resources registered\n"
    ok(as_("agg-b", "resources", "register", "--file", d / "b.csv"))
    mine = csv(ok(as_("agg-a", "resources", "list", "--format", "csv")), text=("bus",))
    assert sorted(mine["resource_id"]) == ["load", "pv"] and set(mine["aggregator_id"]) == {"agg-a"}
    rows = [("pv", "sell", 150, "10"), ("load", "buy", 120, "80")]
    pl.DataFrame([{"bid_id": f"{r}-{k}", "resource_id": r, "side": s, "quantity_kw": q, "price": p, "interval": t}
                  for k, t in enumerate((t0, t1)) for r, s, q, p in rows]).write_csv(d / "bids.csv")
    assert "4 of 4 segments acknowledged" in ok(as_("agg-a", "bids", "submit", "--market", "da",
                                                    "--file", d / "bids.csv"))
    pl.DataFrame({"bid_id": ["load-1"], "resource_id": ["load"], "side": ["buy"], "quantity_kw": [100.0],
                  "price": ["85.5"], "interval": [t1]}).write_csv(d / "replace.csv")
    assert ok(as_("agg-a", "bids", "replace", "--market", "da", "--file", d / "replace.csv")).startswith("1 ")
    pl.DataFrame({"bid_id": ["extra"], "resource_id": ["load"], "side": ["buy"], "quantity_kw": [10.0],
                  "price": ["1"], "interval": [t0]}).write_csv(d / "extra.csv")
    ok(as_("agg-a", "bids", "submit", "--market", "da", "--file", d / "extra.csv"))
    assert ok(as_("agg-a", "bids", "withdraw", "--market", "da", "--bid", "extra")).startswith("1 segments withdrawn")
    bids = json.loads(ok(as_("agg-a", "bids", "list", "--market", "da", "--include-withdrawn", "--format", "json")))
    status = {b["bid_id"]: (b["status"], b["price"]) for b in bids}
    assert status["extra"][0] == "withdrawn" and status["load-1"] == ("active", "85.5")

    # The flexibility auction: a need on line 5, an offer downstream of it.
    (d / "needs.csv").write_text(f"need_id,kind,element,interval,required_kw,max_price\nn1,line,5,{t0},100,200\n")
    assert ok(as_("dso", "flex", "post", "--market", "da", "--file", d / "needs.csv")).startswith("1 needs posted")
    (d / "offers.csv").write_text(f"offer_id,resource_id,direction,quantity_kw,price,interval\n"
                                  f"o1,pv,up,120,40.5,{t0}\no2,load,up,50,30,{t0}\n")
    ok(as_("agg-a", "flex", "submit", "--market", "da", "--file", d / "offers.csv"))
    assert ok(as_("agg-a", "flex", "withdraw", "--market", "da", "--offer", "o2")).startswith("1 offers withdrawn")
    offers = csv(ok(as_("agg-a", "flex", "offers", "--market", "da", "--include-withdrawn", "--format", "csv")))
    assert sorted(offers.select("offer_id", "status").iter_rows()) == [("o1", "active"), ("o2", "withdrawn")]
    seen = csv(ok(as_("agg-a", "flex", "needs", "--market", "da", "--format", "csv")), text=("max_price",))
    assert seen["need_id"].to_list() == ["n1"] and seen["max_price"].fill_null("").to_list() == [""]
    assert ok(as_("dso", "markets", "gate", "da")) == "market da is closed\n"
    assert "optimal" in ok(as_("dso", "flex", "auction", "--market", "da"))
    results = csv(ok(as_("dso", "flex", "results", "--market", "da", "--format", "csv")))
    assert results["met"].to_list() == [True]
    flex = csv(ok(as_("agg-a", "flex", "awards", "--market", "da", "--format", "csv")))
    assert flex["accepted_kw"].to_list() == [100.0] and flex["reason"].to_list() == ["accepted"]

    # Clearing, publication, and the ISO's award of the cleared import.
    code, out, err = as_("dso", "markets", "clear", "da", "--iso-price", "50", "--format", "csv")
    assert code == 0 and "is cleared: optimal" in err
    flows = csv(out, text=("iso_price",))
    assert flows.height == 2 and flows["iso_price"].to_list() == ["50", "50"]
    assert ok(as_("dso", "markets", "publish", "da")) == "market da is published\n"
    ok(as_("iso", "curves", "fetch", "--market", "da", "--out", d / "curves.csv"))
    curves = pl.read_csv(d / "curves.csv")
    assert set(curves["market_id"]) == {"da"} and "fixed_demand" in set(curves["kind"])
    followed = csv(ok(as_("iso", "curves", "follow", "--market", "da", "--count", 2, "--format", "csv")))
    assert followed.equals(curves)   # the stream's history is what the list has
    flows.select(pl.col("interval_start").alias("interval"), "import_kw", pl.col("iso_price").alias("price")) \
        .write_csv(d / "award.csv")
    assert "award optimal; market da is awarded" in ok(as_("iso", "award", "submit", "--market", "da",
                                                           "--file", d / "award.csv"))

    # What the aggregator hears: awards and instructions, listed and followed; awards at its bus's DLMP.
    awards = csv(ok(as_("agg-a", "awards", "list", "--market", "da", "--format", "csv")), text=("price",))
    prices = csv(ok(as_("agg-a", "markets", "prices", "da", "--format", "csv")), text=("bus", "dlmp"))
    assert prices.height == 2 * 33
    dlmp = {(b, t): p for b, t, p in prices.select("bus", "interval_start", "dlmp").iter_rows()}
    bus_of = {"pv": "18", "load": "25"}
    assert awards.height >= 2
    for r, t, price in awards.select("resource_id", "interval_start", "price").iter_rows():
        assert Decimal(price) == Decimal(dlmp[(bus_of[r], t)])
    followed = [json.loads(line) for line in ok(as_("agg-a", "awards", "follow", "--count", awards.height))
                .splitlines()]
    assert sorted(e["bid_id"] for e in followed) == sorted(awards["bid_id"])
    instructions = csv(ok(as_("agg-a", "instructions", "list", "--market", "da", "--format", "csv")))
    code, out, _ = as_("agg-a", "instructions", "follow", "--count", 1, "--format", "csv")
    assert code == 0 and out.splitlines()[0].startswith("sequence,market_id,aggregator_id,resource_id")
    out = ok(as_("dso", "markets", "override", "da", "--aggregator", "agg-a", "--resource", "pv",
                 "--interval", t0, "--kw", 0, "--reason", "line 5 outage", "--format", "json"))
    assert json.loads(out)[0]["source"] == "override"
    after = csv(ok(as_("agg-a", "instructions", "list", "--market", "da", "--format", "csv")))
    assert after.height == instructions.height + 1 and "override" in set(after["source"])

    # Settlement: each day-ahead line pays the awarded energy at the award's price (one-hour intervals).
    assert "market da is settled" in ok(as_("dso", "markets", "settle", "da"))
    ok(as_("agg-a", "statements", "list", "--market", "da", "--out", d / "st.parquet"))
    st = pl.read_parquet(d / "st.parquet")
    code, out, _ = as_("agg-a", "statements", "follow", "--market", "da", "--count", st.height, "--format", "csv")
    assert code == 0 and csv(out).height == st.height
    assert st.schema["interval_start"] == pl.Datetime("us", "UTC") and st.schema["amount"] == pl.Utf8
    assert set(st["kind"]) <= {"energy", "loss", "override", "curtailment"}
    paid: dict = {}  # a bid's energy line and its loss component (when the DLMP has one) add up to its DLMP
    for b, a in st.filter((pl.col("settlement") == "day_ahead") & pl.col("kind").is_in(["energy", "loss"])) \
            .select("bid_id", "amount").iter_rows():
        paid[b] = paid.get(b, Decimal(0)) + Decimal(a)
    for bid, side, kw, price in awards.select("bid_id", "side", "cleared_kw", "price").iter_rows():
        expected = Decimal(price) * Decimal(repr(kw)) / 1000 * (1 if side == "sell" else -1)
        assert abs(paid[bid] - expected) < Decimal("0.01"), bid

    # Reading the market back, and the auditor's view.
    assert "settled" in ok(as_("iso", "markets", "show", "da"))
    assert csv(ok(as_("iso", "markets", "list", "--state", "settled", "--format", "csv")))["market_id"].to_list() \
        == ["da"]
    intervals = csv(ok(as_("agg-b", "markets", "intervals", "da", "--format", "csv")))
    assert intervals["start"].to_list() == [t0, t1]
    records = json.loads(ok(as_("auditor", "audit", "records", "--format", "json")))
    assert {"market.settle", "bids.submit"} <= {r["action"] for r in records}
    assert ok(as_("auditor", "audit", "verify")).startswith(f"audit chain intact: {len(records)} records")
    assert ok(as_("agg-a", "whoami")).startswith("agg-a (aggregator)")
